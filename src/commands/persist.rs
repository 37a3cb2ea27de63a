//! `persist add`: writes persistence entries into a host's .nix file (see `crate::nixedit`).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::{GlobalArgs, PersistAddArgs};
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;
use crate::nixedit::{self, List, Outcome, Request};
use crate::output::{self, Report, Styles, count};
use crate::paths::{normalize_absolute, normalize_relative, quoted};

#[derive(Debug, Serialize)]
struct AddReport {
    #[serde(serialize_with = "crate::paths::json")]
    file: PathBuf,
    changed: bool,
    dry_run: bool,
    added: Vec<String>,
    /// Entries that were there already.
    present: Vec<String>,
    /// With --dry-run: the unified diff.
    diff: Option<String>,
}

pub fn add(global: &GlobalArgs, args: &PersistAddArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, AddReport::COMMAND)?;
    let file = &args.nix_file;
    let storage = normalize_absolute(&args.storage.to_string_lossy()).map_err(|p| {
        Error::Usage(format!(
            "--storage {} {p}; nothing changed",
            quoted(&args.storage)
        ))
    })?;
    let mut entries = Vec::new();
    for raw in &args.paths {
        let text = raw.to_string_lossy();
        let path = match &args.user {
            Some(_) => normalize_relative(&text),
            None => normalize_absolute(&text),
        }
        .map_err(|p| Error::Usage(format!("{} {p}; nothing changed", quoted(raw))))?;
        entries.push(path.to_string_lossy().into_owned());
    }
    if let Some(user) = &args.user {
        if user.is_empty() || user.contains('/') {
            return Err(Error::Usage(format!(
                "--user {user:?} is not a user name; nothing changed"
            )));
        }
    }
    let meta = fs::symlink_metadata(file).map_err(|e| FsError::new("read", file, e))?;
    if meta.file_type().is_symlink() {
        return Err(Error::Usage(format!(
            "{} is a symlink; edit the file it points to; nothing changed",
            file.display()
        )));
    }
    let handle = fs::File::open(file).map_err(|e| FsError::new("open", file, e))?;
    rustix::fs::flock(
        &handle,
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .map_err(|_| {
        Error::Usage(format!(
            "{}: another imperm is editing it; nothing changed",
            file.display()
        ))
    })?;
    let text = fs::read_to_string(file).map_err(|e| FsError::new("read", file, e))?;
    let request = Request {
        storage: storage.to_string_lossy().into_owned(),
        user: args.user.clone(),
        list: if args.file {
            List::Files
        } else {
            List::Directories
        },
        entries,
    };
    let outcome = nixedit::add(&text, &request)
        .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
    let report = match outcome {
        Outcome::Computed { at } => {
            print!("{}", request.snippet());
            io::stdout().flush().map_err(Error::Output)?;
            return Err(Error::Usage(format!(
                "{}: the list is computed (`{at}`); nothing changed: add the snippet above by hand",
                file.display()
            )));
        }
        Outcome::Unchanged { present } => AddReport {
            file: file.clone(),
            changed: false,
            dry_run: args.dry_run,
            added: Vec::new(),
            present,
            diff: None,
        },
        Outcome::Edited {
            text: edited,
            added,
            present,
        } => {
            let diff = args.dry_run.then(|| {
                similar::TextDiff::from_lines(&text, &edited)
                    .unified_diff()
                    .header(&file.display().to_string(), &file.display().to_string())
                    .to_string()
            });
            if !args.dry_run {
                write_atomically(file, &edited, meta.permissions().mode())?;
            }
            AddReport {
                file: file.clone(),
                changed: !args.dry_run,
                dry_run: args.dry_run,
                added,
                present,
                diff,
            }
        }
    };
    output::emit(&report, global.format, global.color)?;
    Ok(ExitStatus::Clean)
}

/// A temporary file beside the target, synced, with the target's permissions, renamed over
/// it: a crash leaves the old file or the new one.
fn write_atomically(file: &Path, text: &str, mode: u32) -> Result<(), Error> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".imperm-edit-")
        .tempfile_in(dir)
        .map_err(|e| FsError::new("create a temporary file in", dir, e))?;
    tmp.write_all(text.as_bytes())
        .map_err(|e| FsError::new("write", tmp.path(), e))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| FsError::new("chmod", tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| FsError::new("sync", tmp.path(), e))?;
    tmp.persist(file)
        .map_err(|e| FsError::new("replace", file, e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("sync", dir, e))?;
    Ok(())
}

impl Report for AddReport {
    const COMMAND: &'static str = "persist add";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        if let Some(diff) = &self.diff {
            out.write_all(diff.as_bytes())?;
            return writeln!(
                out,
                "{}dry run: {} not written{:#}",
                s.dim,
                self.file.display(),
                s.dim
            );
        }
        if !self.present.is_empty() {
            writeln!(out, "already there: {}", self.present.join(", "))?;
        }
        if self.changed {
            writeln!(
                out,
                "added {} to {}: {}",
                count(self.added.len(), "entry", "entries"),
                self.file.display(),
                self.added.join(", ")
            )
        } else {
            writeln!(out, "{} is unchanged", self.file.display())
        }
    }
}
