//! `persist add`: writes persistence entries into a host's .nix file (see `crate::nixos::nixedit`).
//!
//! The file is opened without following a symlink and without blocking (a FIFO is refused
//! before anything waits on it), locked, read from the locked descriptor, edited in
//! memory, and replaced atomically by a temporary file with the same owner, group, mode
//! and extended attributes (ACLs). A file its owner cannot write, or one with other hard
//! links, is refused unless `--force`; with `--force`, a hard-linked file is written in
//! place so that every name keeps seeing the same text.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::{GlobalArgs, PersistAddArgs};
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;
use crate::nixos::nixedit::{self, List, Outcome, Request};
use crate::output::{self, Format, Report, Styles};
use crate::paths::escape;
use crate::paths::{normalize_absolute, normalize_relative, quoted};
use crate::words::count;

#[derive(Debug, Serialize)]
struct AddReport {
    #[serde(serialize_with = "crate::paths::json")]
    file: PathBuf,
    changed: bool,
    dry_run: bool,
    /// The storage the entries were added to (or found in); given, or the file's own.
    storage: Option<String>,
    added: Vec<String>,
    /// Entries that were there already.
    present: Vec<String>,
    /// With --dry-run: the unified diff.
    diff: Option<String>,
    /// Why nothing was changed, when the entries could not be added safely.
    refused: Option<String>,
    /// What to add by hand, when refused.
    snippet: Option<String>,
    /// Things said about how the file was written (hard links).
    notes: Vec<String>,
    /// With --move: the migration of the paths, made before the entries were written.
    #[serde(skip_serializing_if = "Option::is_none")]
    migrate: Option<crate::rollout::migrate::MigrateReport>,
}

/// The file as opened and checked, before it is read.
struct Target {
    handle: fs::File,
    meta: fs::Metadata,
}

pub fn add(global: &GlobalArgs, args: &PersistAddArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, AddReport::COMMAND)?;
    let file = &args.nix_file;
    let request = request(args)?;
    // A dry run writes nothing: a read-only or hard-linked file is no reason to refuse it.
    let target = open(file, args.force || args.dry_run)?;
    let text = read(file, &target)?;
    let outcome = nixedit::add(&text, &request)
        .map_err(|e| Error::Usage(format!("{}: {e}", escape(file))))?;
    let mut report = AddReport {
        file: file.clone(),
        changed: false,
        dry_run: args.dry_run,
        storage: None,
        added: Vec::new(),
        present: Vec::new(),
        diff: None,
        refused: None,
        snippet: None,
        notes: Vec::new(),
        migrate: None,
    };
    if args.move_paths && args.user.is_some() {
        return Err(Error::Usage(
            "--move takes absolute paths: give them without --user; nothing changed".into(),
        ));
    }
    match outcome {
        Outcome::Refused {
            reason,
            snippet,
            present,
        } => {
            report.present = present;
            report.refused = Some(reason.clone());
            match global.format {
                // The snippet alone on stdout: it pastes as is.
                Format::Human => {
                    let mut out = io::stdout().lock();
                    out.write_all(snippet.as_bytes())
                        .and_then(|()| out.flush())
                        .map_err(Error::Output)?;
                }
                _ => {
                    report.snippet = Some(snippet);
                    output::emit(&report, global.format, global.color)?;
                }
            }
            return Err(Error::Usage(format!(
                "{}: {reason}; nothing changed: add the snippet on stdout by hand",
                escape(file)
            )));
        }
        Outcome::Unchanged {
            present,
            storage,
            notes,
        } => {
            if args.move_paths && !moved(global, args, &storage, &mut report)? {
                report.present = present;
                output::emit(&report, global.format, global.color)?;
                return Ok(ExitStatus::Findings);
            }
            report.present = present;
            report.storage = Some(storage);
            report.notes = notes;
        }
        Outcome::Edited {
            text: edited,
            added,
            present,
            storage,
            notes,
        } => {
            // The data first, then the entry that bind-mounts it: an entry written for
            // a path not migrated would hide the live data under an empty mount.
            if args.move_paths && !moved(global, args, &storage, &mut report)? {
                report.present = present;
                output::emit(&report, global.format, global.color)?;
                return Ok(ExitStatus::Findings);
            }
            report.added = added;
            report.present = present;
            report.storage = Some(storage);
            report.notes = notes;
            if args.dry_run {
                report.diff = Some(
                    similar::TextDiff::from_lines(&text, &edited)
                        .unified_diff()
                        .header(&escape(file), &escape(file))
                        .to_string(),
                );
            } else {
                let links = target.meta.nlink();
                if links > 1 {
                    write_in_place(file, &target, &edited)?;
                    report.notes.push(format!(
                        "written in place: the {} to it see the change",
                        count(links as usize - 1, "other hard link", "other hard links")
                    ));
                } else {
                    write_atomically(file, &target, &edited)?;
                }
                report.changed = true;
            }
        }
    }
    output::emit(&report, global.format, global.color)?;
    Ok(ExitStatus::Clean)
}

/// `browse`'s writes (`p` into the .nix file, `i` into the configuration, `u` taking
/// either back): `file` opened, locked and replaced as `persist add` does it, with what
/// `change` makes of its text (`None`: nothing to write). Gives the text before and after.
pub(super) fn rewrite(
    file: &Path,
    change: impl FnOnce(&str) -> Result<Option<String>, Error>,
) -> Result<Option<(String, String)>, Error> {
    let target = open(file, false)?;
    let text = read(file, &target)?;
    let Some(edited) = change(&text)? else {
        return Ok(None);
    };
    write_atomically(file, &target, &edited)?;
    Ok(Some((text, edited)))
}

/// The request, from the command line, or a one-line refusal.
/// `--move`: migrates the paths into `storage` (a dry run with `--dry-run`); whether every
/// one is there now (or, in a dry run, would be).
fn moved(
    global: &GlobalArgs,
    args: &PersistAddArgs,
    storage: &str,
    report: &mut AddReport,
) -> Result<bool, Error> {
    let migrated =
        super::migrate::move_paths(global, &args.paths, Path::new(storage), args.dry_run)?;
    let complete = !migrated.incomplete();
    report.migrate = Some(migrated);
    Ok(complete)
}

fn request(args: &PersistAddArgs) -> Result<Request, Error> {
    let storage = match &args.storage {
        Some(given) => Some(
            normalize_absolute(&given.to_string_lossy())
                .map_err(|p| {
                    Error::Usage(format!("--storage {} {p}; nothing changed", quoted(given)))
                })?
                .to_string_lossy()
                .into_owned(),
        ),
        None => None,
    };
    if let Some(user) = &args.user {
        if !crate::paths::is_user_name(user) {
            return Err(Error::Usage(format!(
                "--user {} is not a user name; nothing changed",
                crate::paths::shown(user)
            )));
        }
    }
    let mut entries = Vec::new();
    for raw in &args.paths {
        let text = raw.to_str().ok_or_else(|| {
            Error::Usage(format!(
                "{} is not UTF-8, which a Nix string cannot hold as is; nothing changed",
                quoted(raw)
            ))
        })?;
        let path = match &args.user {
            Some(_) => normalize_relative(text),
            None => normalize_absolute(text),
        }
        .map_err(|p| Error::Usage(format!("{} {p}; nothing changed", quoted(raw))))?;
        entries.push(path.to_string_lossy().into_owned());
    }
    Ok(Request {
        storage,
        user: args.user.clone(),
        list: if args.file {
            List::Files
        } else {
            List::Directories
        },
        entries,
    })
}

/// Opens and locks the file, after checking what it is without opening it: never a
/// symlink, never anything but a regular file (opening a FIFO would wait for a writer).
fn open(file: &Path, force: bool) -> Result<Target, Error> {
    // An edit that finished between our open and our lock replaced the file: open the
    // new one (a few times at most; then something keeps replacing it).
    for _ in 0..5 {
        let target = open_once(file, force)?;
        let now = fs::symlink_metadata(file).map_err(|e| FsError::new("read", file, e))?;
        if now.dev() == target.meta.dev() && now.ino() == target.meta.ino() {
            leftovers(file)?;
            return Ok(target);
        }
    }
    Err(Error::Usage(format!(
        "{}: replaced again and again while imperm tried to lock it; nothing changed",
        escape(file)
    )))
}

fn open_once(file: &Path, force: bool) -> Result<Target, Error> {
    let refuse = |what: &str| Error::Usage(format!("{}: {what}; nothing changed", escape(file)));
    let meta = fs::symlink_metadata(file).map_err(|e| FsError::new("read", file, e))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(refuse("a symlink; edit the file it points to"));
    }
    if !kind.is_file() {
        return Err(refuse(&format!(
            "not a regular file ({})",
            file_kind(&meta)
        )));
    }
    // O_NONBLOCK: should the name be swapped for a FIFO after the check, the open does
    // not wait; O_NOFOLLOW: nor for a symlink. Then the descriptor itself is checked.
    let handle = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)
        .map_err(|e| FsError::new("open", file, e))?;
    let meta = handle
        .metadata()
        .map_err(|e| FsError::new("read", file, e))?;
    if !meta.file_type().is_file() {
        return Err(refuse(&format!(
            "not a regular file ({})",
            file_kind(&meta)
        )));
    }
    if meta.len() > nixedit::MAX_BYTES as u64 {
        return Err(refuse(&format!(
            "{} bytes, more than the {} a host configuration can sensibly have",
            meta.len(),
            nixedit::MAX_BYTES
        )));
    }
    if meta.mode() & 0o200 == 0 && !force {
        return Err(refuse(&format!(
            "its owner may not write it (mode {:04o}); --force edits it anyway, keeping the mode",
            meta.mode() & 0o7777
        )));
    }
    if meta.nlink() > 1 && !force {
        return Err(refuse(&format!(
            "it has {}, and replacing it would part them; --force writes it in place",
            count(
                meta.nlink() as usize - 1,
                "other hard link",
                "other hard links"
            )
        )));
    }
    rustix::fs::flock(
        &handle,
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .map_err(|_| refuse("another imperm is editing it"))?;
    Ok(Target { handle, meta })
}

/// `.NAME.imperm-edit-…` and `.NAME.imperm-orig-…` beside `file`: what an edit of it
/// writes before it is done.
fn scratch_prefix(file: &Path, what: &str) -> String {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.imperm-{what}-")
}

/// What an edit killed half-way left beside the file (the lock is held, so no edit of it
/// is under way): a temporary file never renamed is removed; the copy of the old text an
/// in-place write keeps means that write may have been cut, and is the person's to check.
fn leftovers(file: &Path) -> Result<(), Error> {
    let dir = parent_dir(file);
    let (edit, orig) = (scratch_prefix(file, "edit"), scratch_prefix(file, "orig"));
    let entries = fs::read_dir(dir).map_err(|e| FsError::new("read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FsError::new("read", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&orig) {
            return Err(Error::Usage(format!(
                "{}: an edit of it in place was interrupted and left its old text in {}; compare the two, keep the right one and remove {}; nothing changed",
                escape(file),
                escape(&entry.path()),
                name
            )));
        }
        if name.starts_with(&edit) {
            fs::remove_file(entry.path()).map_err(|e| FsError::new("remove", &entry.path(), e))?;
        }
    }
    Ok(())
}

/// A test hook: dies where a kill -9 could strike (`IMPERM_FAILPOINT=name`).
fn failpoint(name: &str) {
    if std::env::var(crate::snapshots::reset::FAILPOINT_ENV).is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

fn file_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Refuses when `file` no longer names the inode `meta` describes.
fn same_file(file: &Path, meta: &fs::Metadata) -> Result<(), Error> {
    let now = fs::symlink_metadata(file).map_err(|e| FsError::new("read", file, e))?;
    if now.dev() != meta.dev() || now.ino() != meta.ino() {
        return Err(Error::Usage(format!(
            "{}: replaced by another program while imperm was editing it; nothing changed",
            escape(file)
        )));
    }
    Ok(())
}

fn read(file: &Path, target: &Target) -> Result<String, Error> {
    let mut bytes = Vec::new();
    (&target.handle)
        .take(nixedit::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FsError::new("read", file, e))?;
    if bytes.len() > nixedit::MAX_BYTES {
        return Err(Error::Usage(format!(
            "{}: grew past {} bytes while being read; nothing changed",
            escape(file),
            nixedit::MAX_BYTES
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::Usage(format!(
            "{}: not UTF-8 (at byte {}), so not a Nix file; nothing changed",
            escape(file),
            e.utf8_error().valid_up_to()
        ))
    })
}

fn parent_dir(file: &Path) -> &Path {
    file.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary file beside the target, with its owner, group, mode and extended
/// attributes, synced, renamed over it: a crash leaves the old file or the new one.
fn write_atomically(file: &Path, target: &Target, text: &str) -> Result<(), Error> {
    let dir = parent_dir(file);
    let mut tmp = tempfile::Builder::new()
        .prefix(&scratch_prefix(file, "edit"))
        .tempfile_in(dir)
        .map_err(|e| FsError::new("create a temporary file in", dir, e))?;
    let path = tmp.path().to_path_buf();
    tmp.write_all(text.as_bytes())
        .map_err(|e| FsError::new("write", &path, e))?;
    let meta = &target.meta;
    let fd = tmp.as_file().as_fd();
    // The owner first: a chown clears set-id bits, the chmod after it sets them again.
    if meta.uid() != rustix::process::geteuid().as_raw()
        || meta.gid() != rustix::process::getegid().as_raw()
    {
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(meta.uid())),
            Some(rustix::fs::Gid::from_raw(meta.gid())),
        )
        .map_err(|e| {
            Error::Usage(format!(
                "{}: cannot keep its owner {}:{} ({}); nothing changed",
                escape(file),
                meta.uid(),
                meta.gid(),
                io::Error::from(e)
            ))
        })?;
    }
    rustix::fs::fchmod(fd, rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777))
        .map_err(|e| FsError::new("chmod", &path, e.into()))?;
    copy_xattrs(&target.handle, tmp.as_file(), file)?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| FsError::new("sync", &path, e))?;
    failpoint("persist-before-rename");
    // The lock is held, but a program that takes none may have replaced the file.
    same_file(file, meta)?;
    tmp.persist(file)
        .map_err(|e| FsError::new("replace", file, e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("sync", dir, e))?;
    Ok(())
}

/// Extended attributes (POSIX ACLs, SELinux labels, user attributes) from one open file
/// to another.
fn copy_xattrs(from: &fs::File, to: &fs::File, file: &Path) -> Result<(), Error> {
    let size = match rustix::fs::flistxattr_query(from) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(FsError::new("list xattrs of", file, e.into()).into()),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::flistxattr(from, &mut names[..])
        .map_err(|e| FsError::new("list xattrs of", file, e.into()))?;
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::CStr::from_bytes_with_nul(&[name, b"\0"].concat())
            .map(|c| c.to_owned())
            .map_err(|_| Error::Usage(format!("{}: a malformed xattr name", escape(file))))?;
        let len = rustix::fs::fgetxattr_query(from, &name)
            .map_err(|e| FsError::new("read xattr of", file, e.into()))?;
        let mut value = vec![0u8; len];
        let len = rustix::fs::fgetxattr(from, &name, &mut value[..])
            .map_err(|e| FsError::new("read xattr of", file, e.into()))?;
        rustix::fs::fsetxattr(to, &name, &value[..len], rustix::fs::XattrFlags::empty()).map_err(
            |e| {
                Error::Usage(format!(
                    "{}: cannot keep its extended attribute {} ({}); nothing changed",
                    escape(file),
                    name.to_string_lossy(),
                    io::Error::from(e)
                ))
            },
        )?;
    }
    Ok(())
}

/// For a file with other hard links (with --force): the old text is kept in a synced copy
/// beside it, the new text written over the file itself and synced, then the copy removed.
/// Killed half-way, the copy is there to put back; the error names it.
fn write_in_place(file: &Path, target: &Target, text: &str) -> Result<(), Error> {
    let dir = parent_dir(file);
    let mut old = String::new();
    (&target.handle)
        .rewind()
        .and_then(|()| (&target.handle).read_to_string(&mut old))
        .map_err(|e| FsError::new("read", file, e))?;
    let mut backup = tempfile::Builder::new()
        .prefix(&scratch_prefix(file, "orig"))
        .tempfile_in(dir)
        .map_err(|e| FsError::new("create a temporary file in", dir, e))?;
    let backup_path = backup.path().to_path_buf();
    backup
        .write_all(old.as_bytes())
        .and_then(|()| backup.as_file().sync_all())
        .map_err(|e| FsError::new("write", &backup_path, e))?;
    same_file(file, &target.meta)?;
    let writer = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)
        .map_err(|e| FsError::new("open for writing", file, e))?;
    let half = text.len() / 2;
    let written = writer
        .write_all_at(&text.as_bytes()[..half], 0)
        .and_then(|()| {
            failpoint("persist-in-place");
            writer.write_all_at(&text.as_bytes()[half..], half as u64)
        })
        .and_then(|()| writer.set_len(text.len() as u64))
        .and_then(|()| writer.sync_all());
    if let Err(e) = written {
        // The file may be half-written: the copy stays.
        let kept = backup.keep().map(|(_, path)| path).unwrap_or(backup_path);
        return Err(Error::Usage(format!(
            "{}: writing it in place failed ({e}); its old text is in {}",
            escape(file),
            escape(&kept)
        )));
    }
    drop(backup);
    Ok(())
}

impl Report for AddReport {
    const COMMAND: &'static str = "persist add";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        if let Some(migrated) = &self.migrate {
            migrated.human(out, s)?;
            if migrated.incomplete() {
                return writeln!(
                    out,
                    "{}not migrated: {} is unchanged{:#}",
                    s.problem,
                    escape(&self.file),
                    s.problem
                );
            }
        }
        if let Some(diff) = &self.diff {
            out.write_all(diff.as_bytes())?;
            return writeln!(
                out,
                "{}dry run: {} not written{:#}",
                s.dim,
                escape(&self.file),
                s.dim
            );
        }
        if !self.present.is_empty() {
            writeln!(out, "already there: {}", self.present.join(", "))?;
        }
        for note in &self.notes {
            writeln!(out, "{note}")?;
        }
        if self.changed {
            writeln!(
                out,
                "added {} to {}: {}",
                count(self.added.len(), "entry", "entries"),
                escape(&self.file),
                self.added.join(", ")
            )
        } else {
            writeln!(out, "{} is unchanged", escape(&self.file))
        }
    }
}
