//! `restore`: brings files back from an old-root snapshot, into the live root or into
//! persistent storage, and prints the persistence entry to add.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde::Serialize;

use super::discover;
use crate::backend;
use crate::cli::{GlobalArgs, RestoreArgs, RestoreInto};
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;
use crate::knowledge::Verdict;
use crate::nix::{self, Style};
use crate::output::{self, Report, Styles, bytes, count};
use crate::paths::{normalize_absolute, quoted, under_root};
use crate::persisted::Kind;
use crate::restore;
use crate::suggest::Suggestion;
use crate::toplevel::TopLevel;

#[derive(Debug, Serialize)]
struct Restored {
    #[serde(serialize_with = "crate::paths::json")]
    path: PathBuf,
    #[serde(serialize_with = "crate::paths::json")]
    target: PathBuf,
    kind: Kind,
    files: u64,
    bytes: u64,
    /// Where an existing target was put aside (`--force`).
    #[serde(serialize_with = "crate::paths::json_opt")]
    replaced: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct RestoreReport {
    from: String,
    into: &'static str,
    restored: Vec<Restored>,
    /// The persistence entries to add, as Nix.
    entries: String,
}

/// One path, checked.
struct Item {
    path: PathBuf,
    source: PathBuf,
    target: PathBuf,
    kind: Kind,
    user: Option<(String, PathBuf)>,
    exists: bool,
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

pub fn run(global: &GlobalArgs, args: &RestoreArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, RestoreReport::COMMAND)?;
    let config = super::load_config(global)?;
    let fs = super::filesystem(&config, &args.fs)?;
    let backend = backend::for_type(fs.fs_type);
    if !backend.has_subvolumes() {
        return Err(Error::Usage(
            "a tmpfs root keeps no old roots to restore from; nothing was written".into(),
        ));
    }
    let top = TopLevel::open(&fs, args.fs.mounted.as_deref())?;
    let (from, snap) = super::old_root(backend.as_ref(), &top, &fs, args.from.as_deref())
        .map_err(|e| Error::Usage(format!("{e}; nothing was written")))?;
    let storage = discover::storage(&config);
    let base = match args.into {
        RestoreInto::Root => config.root.clone(),
        RestoreInto::Persist => under_root(&config.root, &storage),
    };
    let cx = discover::context(&config);

    // Every check before anything is written.
    let mut items = Vec::new();
    for raw in &args.paths {
        let path = normalize_absolute(&raw.to_string_lossy())
            .map_err(|p| Error::Usage(format!("{} {p}; nothing was written", quoted(raw))))?;
        let rel = path.strip_prefix("/").expect("absolute");
        let in_snapshot = snap.join(rel);
        let fd = top.open_beneath(&in_snapshot, OFlags::PATH | OFlags::NOFOLLOW).map_err(|e| {
            Error::Usage(match e.raw_os_error() {
                Some(libc::ENOENT) => format!("{} is not in snapshot {from}; nothing was written", quoted(&path)),
                Some(libc::ELOOP) | Some(libc::EXDEV) => format!(
                    "{} is reached through a symlink in snapshot {from}, which could lead out of it; nothing was written",
                    quoted(&path)
                ),
                _ => format!("{}: {e}; nothing was written", quoted(&path)),
            })
        })?;
        let st =
            rustix::fs::fstat(&fd).map_err(|e| FsError::new("stat", &in_snapshot, e.into()))?;
        let kind =
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                Kind::Directory
            } else {
                Kind::File
            };
        let target = under_root(&base, &path);
        let exists = check_target(&base, rel, &path)?;
        if exists && !args.force {
            return Err(Error::Usage(format!(
                "{} exists; pass --force to keep it aside and restore anyway; nothing was written",
                target.display()
            )));
        }
        items.push(Item {
            user: cx.user_of(&path),
            path,
            source: top.join(&in_snapshot),
            target,
            kind,
            exists,
        });
    }

    top.lock()?;
    let stamp = super::now()?.strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut restored = Vec::new();
    for item in &items {
        restore::create_parents(&base, &item.target, &top.join(&snap))?;
        let aside = item.exists.then(|| {
            let mut name = item.target.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".imperm-replaced-{stamp}"));
            item.target.with_file_name(name)
        });
        let copied = restore::restore(&item.source, &item.target, aside.as_deref())?;
        eprintln!(
            "imperm restore: {} -> {}",
            item.path.display(),
            item.target.display()
        );
        restored.push(Restored {
            path: item.path.clone(),
            target: item.target.clone(),
            kind: item.kind,
            files: copied.files,
            bytes: copied.bytes,
            replaced: aside,
        });
    }
    let entries = entries(&items, &storage);
    let report = RestoreReport {
        from,
        into: match args.into {
            RestoreInto::Root => "root",
            RestoreInto::Persist => "persist",
        },
        restored,
        entries,
    };
    output::emit(&report, global.format, global.color)?;
    Ok(ExitStatus::Clean)
}

/// Whether the target exists, after checking that no symlink stands between `base` and it
/// (a write must not follow one out of the tree).
fn check_target(base: &Path, rel: &Path, path: &Path) -> Result<bool, Error> {
    let base_fd = match rustix::fs::open(
        base,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(FsError::new("open", base, e.into()).into()),
    };
    match rustix::fs::openat2(
        &base_fd,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    ) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::NOENT) => {
            // The target is missing; its existing parents must not be symlinks either.
            let mut parent = rel.parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                match rustix::fs::openat2(
                    &base_fd,
                    p,
                    OFlags::PATH | OFlags::CLOEXEC,
                    Mode::empty(),
                    BENEATH,
                ) {
                    Ok(_) => return Ok(false),
                    Err(rustix::io::Errno::NOENT) => parent = p.parent(),
                    Err(e) => return Err(symlink_in_way(base, path, e)),
                }
            }
            Ok(false)
        }
        Err(e) => Err(symlink_in_way(base, path, e)),
    }
}

fn symlink_in_way(base: &Path, path: &Path, e: rustix::io::Errno) -> Error {
    match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => Error::Usage(format!(
            "a symlink stands in the way of {} under {}; nothing was written",
            quoted(path),
            base.display()
        )),
        e => FsError::new(
            "inspect",
            &base.join(path.strip_prefix("/").unwrap_or(path)),
            e.into(),
        )
        .into(),
    }
}

/// The persistence entries for what was restored.
fn entries(items: &[Item], storage: &Path) -> String {
    let suggestions: Vec<Suggestion> = items
        .iter()
        .map(|i| Suggestion {
            path: i.path.clone(),
            kind: i.kind,
            verdict: Verdict::Persist,
            reason: String::new(),
            service: None,
            files: 0,
            bytes: 0,
            user: i.user.as_ref().map(|(u, _)| u.clone()),
            relative: i.user.as_ref().map(|(_, r)| r.clone()),
            in_initrd: false,
            mode: None,
        })
        .collect();
    nix::render(&suggestions, storage, Style::Impermanence)
}

impl Report for RestoreReport {
    const COMMAND: &'static str = "restore";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        for r in &self.restored {
            writeln!(
                out,
                "restored {}{}{:#} from {} to {} ({}, {})",
                s.path,
                r.path.display(),
                s.path,
                self.from,
                r.target.display(),
                count(r.files as usize, "file", "files"),
                bytes(r.bytes)
            )?;
            if let Some(aside) = &r.replaced {
                writeln!(out, "  what was there is kept in {}", aside.display())?;
            }
        }
        let note = match self.into {
            "persist" => "add the entry so that it is bind mounted at the next boot:",
            _ => "it is in the live root, which the next reset wipes again; persist it:",
        };
        writeln!(out, "{note}")?;
        out.write_all(self.entries.as_bytes())
    }
}
