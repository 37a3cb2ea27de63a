//! Restoring files from an old-root snapshot: an exact copy (owner, mode, timestamps,
//! xattrs, symlinks as symlinks, FIFOs and device nodes, hard links linked, holes kept)
//! made beside the target in a private temporary directory and put into place.
//!
//! Nothing is ever renamed onto an existing name: a new target is renamed into place with
//! `RENAME_NOREPLACE`, and an existing one is swapped with the finished copy in one step
//! (`RENAME_EXCHANGE`), so the target's name always holds either what was there or the
//! copy; what was there, now in the temporary directory, is then renamed aside with
//! `RENAME_NOREPLACE`. Nothing is reached through a path string: every call works on
//! directory descriptors opened without following symlinks, so a symlink planted in the
//! target tree after the checks is never followed. The temporary directory
//! (`.NAME.imperm-restore`; a NAME too long for that is cut and followed by a hash of the
//! whole, so that two long siblings never share one) is owned by root with mode 0700, so
//! nobody else can reach into it, and it carries a marker that only root can set, naming
//! its target: a leftover of a killed restore of this target is recognised as ours,
//! anything else of that name (another target's, or holding anything but the target's
//! name) is left alone and refused. Once the copy
//! is complete, the directory also records which inode the copy is; so a leftover holding
//! anything else holds what a killed restore swapped out of the target, which the next run
//! keeps aside instead of removing.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags, SeekFrom, Stat, Timespec,
    Timestamps, XattrFlags,
};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use crate::error::{Error, FsError};
use crate::paths::escape;

/// What one restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Entries that are not directories (each name of a hard link counts).
    pub files: u64,
    /// Their sizes.
    pub bytes: u64,
    /// The name the existing target was kept under, beside it.
    pub aside: Option<OsString>,
    /// What could not be restored, relative to the restored path (empty: the path itself),
    /// and why.
    pub not_restored: Vec<(PathBuf, &'static str)>,
}

/// One path to restore: the same name in the snapshot's directory and in the target's.
pub struct Job<'a> {
    /// The directory in the snapshot that holds `name`.
    pub source_dir: BorrowedFd<'a>,
    /// The directory the copy goes into.
    pub target_dir: BorrowedFd<'a>,
    pub name: &'a OsStr,
    /// The target as the user knows it, for messages.
    pub shown: &'a Path,
    /// Whether the target exists (checked, with `--force`): it is swapped with the copy
    /// and kept aside.
    pub replace: bool,
    /// The time stamp of the names things are kept aside under.
    pub stamp: &'a str,
}

const SOCKET: &str =
    "a socket cannot be copied: the program that listens on it makes it again when it starts";
const UNKNOWN: &str = "a kind of file imperm does not know how to copy";

/// Why an entry of this kind cannot be restored, if it cannot.
pub fn cannot_copy(kind: FileType) -> Option<&'static str> {
    match kind {
        FileType::Socket => Some(SOCKET),
        FileType::Unknown => Some(UNKNOWN),
        _ => None,
    }
}

/// Set on the temporary directory; only root can set `trusted.` attributes, so a user
/// cannot make a directory of their own look like a leftover that imperm may remove.
const MARKER: &str = "trusted.imperm-restore";
const MARKER_VALUE: &[u8] = b"a copy in progress, removed by the next restore";
/// Set on the temporary directory before [`MARKER`]: the full name of the target it is
/// for. A cut temporary name can be any long sibling's; this tells whose it is.
const TARGET: &str = "trusted.imperm-restore-target";
/// Set on the temporary directory once the copy in it is complete: the copy's `dev:ino`.
/// Anything else found there by a later run is what a swap took out of the target.
const COPY: &str = "trusted.imperm-restore-copy";

/// Test hook: abort right after the named step, like a kill -9 there: the copy synced;
/// the copy in place (swapped with an existing target, which is then in the temporary
/// directory); what was at the target renamed aside.
const FAILPOINTS: [&str; 3] = ["restore-copied", "restore-placed", "restore-aside"];

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// The longest name a directory entry can have.
const NAME_MAX: usize = 255;
/// The longest directory path (below the temporary directory) a copy makes: within what
/// the kernel resolves in one call (4095 bytes), so that everything a copy makes can be
/// reopened, and removed, by its path there. A deeper tree is refused.
pub const DEPTH_MAX: usize = 4000;

/// The temporary name a copy is made under, beside its target.
pub fn temp_name(name: &OsStr) -> OsString {
    fitted(".", name, ".imperm-restore")
}

/// The name the existing target is kept aside under: `NAME.imperm-replaced-STAMP`, then
/// `.1`, `.2` … when taken.
pub fn aside_name(name: &OsStr, stamp: &str, n: u32) -> OsString {
    let suffix = match n {
        0 => format!(".imperm-replaced-{stamp}"),
        n => format!(".imperm-replaced-{stamp}.{n}"),
    };
    fitted("", name, &suffix)
}

/// `prefix NAME suffix`; when that is longer than a name can be, NAME is cut (at a
/// character boundary when it is text) and followed by `~` and a hash of the whole NAME,
/// so that names differing only in what is cut off still get different results.
fn fitted(prefix: &str, name: &OsStr, suffix: &str) -> OsString {
    let whole = name.as_bytes();
    let mut out = prefix.as_bytes().to_vec();
    if prefix.len() + whole.len() + suffix.len() <= NAME_MAX {
        out.extend_from_slice(whole);
    } else {
        let hash = format!("~{:016x}", fnv1a(whole));
        let room = NAME_MAX - prefix.len() - suffix.len() - hash.len();
        let mut bytes = &whole[..room];
        if let Err(e) = std::str::from_utf8(bytes) {
            if std::str::from_utf8(whole).is_ok() {
                bytes = &bytes[..e.valid_up_to()];
            }
        }
        out.extend_from_slice(bytes);
        out.extend_from_slice(hash.as_bytes());
    }
    out.extend_from_slice(suffix.as_bytes());
    OsString::from_vec(out)
}

/// FNV-1a, 64 bits: a hash that never changes between builds (a leftover must be found
/// under the same name by the next version). A collision is caught by the [`TARGET`]
/// record, so it costs a refusal, never a removal.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What stands at the temporary name of a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leftover {
    None,
    /// A copy (or part of one) a killed restore left: ours to remove; the snapshot still
    /// has it.
    Copy,
    /// What a restore killed right after the swap took out of the target: ours, and kept
    /// aside by the next restore of that target, never removed.
    Kept,
    /// Something else: never touched. Why it is not ours.
    Foreign(&'static str),
}

const NO_MARKER: &str = "it has no imperm marker";
const OTHER_TARGET: &str = "its marker names another path";
const OTHER_ENTRIES: &str = "it holds more than the path it was made for";

/// Whether the directory `fd` has no entry.
fn is_empty(fd: &OwnedFd) -> io::Result<bool> {
    let mut dir = rustix::fs::Dir::read_from(fd)?;
    for entry in dir.by_ref() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What stands at the temporary name of the target `dir/name`.
pub fn leftover(dir: BorrowedFd, name: &OsStr) -> io::Result<Leftover> {
    let fd = match rustix::fs::openat(
        dir,
        temp_name(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Leftover::None),
        Err(Errno::NOTDIR | Errno::LOOP) => return Ok(Leftover::Foreign(NO_MARKER)),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    let marked = xattr(&fd, MARKER)?.is_some_and(|v| v == MARKER_VALUE);
    let ours = st.st_uid == rustix::process::geteuid().as_raw();
    // A restore killed between making its directory and marking it leaves it empty, ours
    // and 0700 (so nobody else can put anything in): nothing to lose, removed as a copy.
    if !marked && ours && st.st_mode & 0o7777 == 0o700 && is_empty(&fd)? {
        return Ok(Leftover::Copy);
    }
    if !marked || !ours {
        return Ok(Leftover::Foreign(NO_MARKER));
    }
    match xattr(&fd, TARGET)? {
        Some(target) if target != name.as_bytes() => return Ok(Leftover::Foreign(OTHER_TARGET)),
        Some(_) => {}
        // Made before targets were recorded: ours only when the name was not cut (then it
        // cannot be another target's).
        None if temp_name(name).len() != 1 + name.len() + ".imperm-restore".len() => {
            return Ok(Leftover::Foreign(OTHER_TARGET));
        }
        None => {}
    }
    // Whatever it holds besides its target's name is not a copy of ours: never removed.
    if names(&fd)?.iter().any(|n| n.as_os_str() != name) {
        return Ok(Leftover::Foreign(OTHER_ENTRIES));
    }
    let inside = match rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        // Nothing in it: a copy not begun, or what was swapped out is aside already.
        Err(Errno::NOENT) => return Ok(Leftover::Copy),
        Err(e) => return Err(e.into()),
    };
    // Before the copy was complete nothing was recorded, and nothing was swapped: the
    // swap comes only after the record is on disk.
    Ok(match xattr(&fd, COPY)? {
        Some(copy) if copy != identity(&inside).as_bytes() => Leftover::Kept,
        _ => Leftover::Copy,
    })
}

/// An extended attribute's value, `None` when it is not set (or cannot be, here).
fn xattr(fd: &OwnedFd, name: &str) -> io::Result<Option<Vec<u8>>> {
    // Room for the longest value imperm sets: a name (the [`TARGET`] record).
    let mut value = [0u8; NAME_MAX + 1];
    match rustix::fs::fgetxattr(fd, name, &mut value[..]) {
        Ok(n) => Ok(Some(value[..n].to_vec())),
        Err(Errno::NODATA | Errno::NOTSUP | Errno::RANGE) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Which inode an entry is, as recorded in [`COPY`].
fn identity(st: &Stat) -> String {
    format!("{}:{}", st.st_dev, st.st_ino)
}

/// The note for a temporary directory that holds what a killed restore swapped out of
/// `shown` (see [`Leftover::Kept`]).
pub fn kept_note(shown: &Path) -> String {
    let name = shown.file_name().unwrap_or_default();
    format!(
        "{} holds what was at {} before a restore was killed, and the next restore of it with --force keeps that aside",
        escape(&shown.with_file_name(temp_name(name)).join(name)),
        escape(shown)
    )
}

/// The refusal for a temporary name that holds something not ours, and why it is not.
pub fn foreign_leftover(shown: &Path, why: &str) -> Error {
    Error::Usage(format!(
        "{} exists and is not a copy imperm left ({why}): move it away to restore here; nothing was written",
        escape(shown)
    ))
}

/// Copies `job.name` from the snapshot beside its target and puts it into place: renamed
/// there, or swapped with the existing target (which is then kept aside) when
/// `job.replace` says so. A target that appears while this runs is left alone: the copy
/// is removed and the restore refused.
pub fn restore(job: &Job) -> Result<Restored, Error> {
    match copy(job)? {
        Prepared::Nothing(out) => Ok(out),
        Prepared::Copied(copied) => {
            sync_all(std::slice::from_ref(&copied))?;
            let placed = copied.place()?;
            sync([(placed.dir.as_fd(), job.shown)])?;
            Ok(placed.out)
        }
    }
}

/// What `copy` made.
pub enum Prepared {
    /// Nothing to copy (a socket): the target is left as it is.
    Nothing(Restored),
    Copied(Copied),
}

/// A complete copy beside its target, not yet in place. Dropped without `place`, it is
/// removed: it never reached the target, so that loses nothing.
pub struct Copied {
    /// The temporary directory and the directory it is in.
    temp_dir: OwnedFd,
    temp: OsString,
    target_dir: OwnedFd,
    name: OsString,
    shown: PathBuf,
    replace: bool,
    stamp: String,
    /// Set once the temporary directory holds what was at the target: from then on it
    /// must never be removed (Drop leaves it to the next run).
    swapped: bool,
    out: Restored,
}

/// Copies `job.name` into a temporary directory beside its target (see `Copied`).
pub fn copy(job: &Job) -> Result<Prepared, Error> {
    let source = rustix::fs::statat(job.source_dir, job.name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| FsError::new("read", job.shown, e.into()))?;
    if let Some(why) = cannot_copy(FileType::from_raw_mode(source.st_mode)) {
        return Ok(Prepared::Nothing(Restored {
            not_restored: vec![(PathBuf::new(), why)],
            ..Restored::default()
        }));
    }

    clear_leftover(job)?;
    let temp = temp_name(job.name);
    let temp_shown = job.shown.with_file_name(&temp);
    let fs_err = |op: &str, e: Errno| -> Error { FsError::new(op, &temp_shown, e.into()).into() };
    rustix::fs::mkdirat(job.target_dir, &temp, Mode::from_raw_mode(0o700))
        .map_err(|e| fs_err("create", e))?;
    let temp_dir = rustix::fs::openat(
        job.target_dir,
        &temp,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fs_err("open", e))?;
    // Whoever can write the target's directory could have swapped ours for their own
    // between the two calls; theirs cannot be owned by us.
    let st = rustix::fs::fstat(&temp_dir).map_err(|e| fs_err("inspect", e))?;
    if st.st_uid != rustix::process::geteuid().as_raw() || st.st_mode & 0o7777 != 0o700 {
        return Err(Error::Usage(format!(
            "{} was replaced while restoring; nothing was written",
            escape(&temp_shown)
        )));
    }
    let mut copied = Copied {
        target_dir: rustix::io::dup(job.target_dir).map_err(|e| fs_err("open", e))?,
        temp_dir,
        temp,
        name: job.name.to_os_string(),
        shown: job.shown.to_path_buf(),
        replace: job.replace,
        stamp: job.stamp.to_string(),
        swapped: false,
        out: Restored::default(),
    };
    // From here on, an error drops `copied`, which removes it. The target first: a marked
    // directory always names its target. Without the marker a leftover is refused, not
    // removed: still safe.
    match rustix::fs::fsetxattr(
        &copied.temp_dir,
        TARGET,
        job.name.as_bytes(),
        XattrFlags::CREATE,
    )
    .and_then(|()| {
        rustix::fs::fsetxattr(&copied.temp_dir, MARKER, MARKER_VALUE, XattrFlags::CREATE)
    }) {
        Ok(()) | Err(Errno::NOTSUP | Errno::PERM) => {}
        Err(e) => return Err(fs_err("mark", e)),
    }
    let mut walk = Walk {
        source: job.source_dir,
        target: copied.temp_dir.as_fd(),
        sources: Cursor::new(job.source_dir),
        targets: Cursor::new(copied.temp_dir.as_fd()),
        name: job.name,
        shown: job.shown,
        links: HashMap::new(),
        out: Restored::default(),
    };
    walk.run()?;
    copied.out = walk.out;
    // Which inode the finished copy is, recorded before `sync_all` makes it last and so
    // before any swap: a later run tells the copy from what a swap left (see `leftover`).
    if xattr(&copied.temp_dir, MARKER).map_err(|e| FsError::new("inspect", &temp_shown, e))?
        == Some(MARKER_VALUE.to_vec())
    {
        let st = rustix::fs::statat(&copied.temp_dir, job.name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fs_err("inspect", e))?;
        rustix::fs::fsetxattr(
            &copied.temp_dir,
            COPY,
            identity(&st).as_bytes(),
            XattrFlags::empty(),
        )
        .map_err(|e| fs_err("mark", e))?;
    }
    Ok(Prepared::Copied(copied))
}

/// Clears what a killed run left at the temporary name of `job`'s target: a copy (or part
/// of one) is removed; what a swap took out of the target is kept aside like a target
/// replaced now; anything else is refused, never touched.
pub fn clear_leftover(job: &Job) -> Result<(), Error> {
    let temp = temp_name(job.name);
    let temp_shown = job.shown.with_file_name(&temp);
    let fs_err = |op: &str, e: Errno| -> Error { FsError::new(op, &temp_shown, e.into()).into() };
    match leftover(job.target_dir, job.name).map_err(|e| FsError::new("inspect", &temp_shown, e))? {
        Leftover::None => {}
        Leftover::Copy => remove_tree(job.target_dir, &temp)
            .map_err(|e| FsError::new("remove the leftover", &temp_shown, e))?,
        Leftover::Kept => {
            // Kept aside like a target replaced now, then the rest removed as a copy.
            let temp_dir = rustix::fs::openat(
                job.target_dir,
                &temp,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| fs_err("open", e))?;
            let aside = move_aside(
                temp_dir.as_fd(),
                job.name,
                job.target_dir,
                job.name,
                job.stamp,
            )
            .map_err(|e| {
                FsError::new(
                    "keep aside what a killed restore or migrate left of",
                    job.shown,
                    e.into(),
                )
            })?;
            if let Some(aside) = aside {
                eprintln!(
                    "imperm: kept what a killed restore or migrate left of {} in {}",
                    escape(job.shown),
                    escape(&job.shown.with_file_name(aside))
                );
            }
            sync([(job.target_dir, job.shown)])?;
            remove_tree(job.target_dir, &temp)
                .map_err(|e| FsError::new("remove the leftover", &temp_shown, e))?;
        }
        Leftover::Foreign(why) => return Err(foreign_leftover(&temp_shown, why)),
    }
    Ok(())
}

/// Flushes the copies to disk, once per filesystem, before any of them is renamed into
/// place: a name must never point to data that a crash could still lose.
pub fn sync_all(copies: &[Copied]) -> Result<(), Error> {
    sync(
        copies
            .iter()
            .map(|c| (c.temp_dir.as_fd(), c.shown.as_path())),
    )?;
    failpoint(FAILPOINTS[0]);
    Ok(())
}

/// Flushes the filesystems of the directories (each once), so that renames made there
/// last.
pub fn sync<'a>(dirs: impl IntoIterator<Item = (BorrowedFd<'a>, &'a Path)>) -> Result<(), Error> {
    let mut done = Vec::new();
    for (dir, shown) in dirs {
        let st = rustix::fs::fstat(dir).map_err(|e| FsError::new("sync", shown, e.into()))?;
        if !done.contains(&st.st_dev) {
            rustix::fs::syncfs(dir).map_err(|e| FsError::new("sync", shown, e.into()))?;
            done.push(st.st_dev);
        }
    }
    Ok(())
}

/// A copy in place; `sync` its directory to make that last.
pub struct Placed {
    pub dir: OwnedFd,
    pub out: Restored,
}

impl Copied {
    /// The temporary directory, which holds the copy under the target's own name: for a
    /// check of the copy before it is placed (`migrate` verifies it against its source).
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.temp_dir.as_fd()
    }

    /// Puts the copy into place, never onto an existing name: renamed there when the
    /// target did not exist; swapped with it in one step when it did, what was there then
    /// being renamed aside. Call `sync_all` first.
    pub fn place(mut self) -> Result<Placed, Error> {
        if self.replace {
            self.swap()?;
        } else {
            self.rename_into_place()?;
            failpoint(FAILPOINTS[1]);
        }
        rustix::fs::unlinkat(&self.target_dir, &self.temp, AtFlags::REMOVEDIR).map_err(|e| {
            FsError::new("remove", &self.shown.with_file_name(&self.temp), e.into())
        })?;
        // Placed: nothing left for Drop to remove.
        self.temp.clear();
        Ok(Placed {
            dir: rustix::io::dup(&self.target_dir)
                .map_err(|e| FsError::new("open", &self.shown, e.into()))?,
            out: std::mem::take(&mut self.out),
        })
    }

    /// Swaps the copy with the existing target, then renames what was there aside. The
    /// target's name holds one or the other at every moment, also if killed in between.
    fn swap(&mut self) -> Result<(), Error> {
        match rustix::fs::renameat_with(
            &self.temp_dir,
            &self.name,
            &self.target_dir,
            &self.name,
            RenameFlags::EXCHANGE,
        ) {
            Ok(()) => {}
            // Gone meanwhile: nothing to keep aside.
            Err(Errno::NOENT) => {
                self.rename_into_place()?;
                failpoint(FAILPOINTS[1]);
                return Ok(());
            }
            // A filesystem without RENAME_EXCHANGE: the two steps it allows, with the
            // moment between them where the target's name is free.
            Err(Errno::INVAL) => {
                self.out.aside = move_aside(
                    self.target_dir.as_fd(),
                    &self.name,
                    self.target_dir.as_fd(),
                    &self.name,
                    &self.stamp,
                )
                .map_err(|e| FsError::new("move aside", &self.shown, e.into()))?;
                failpoint(FAILPOINTS[2]);
                self.rename_into_place()?;
                failpoint(FAILPOINTS[1]);
                return Ok(());
            }
            Err(e) => return Err(FsError::new("swap into place", &self.shown, e.into()).into()),
        }
        // The temporary directory now holds what was at the target.
        self.swapped = true;
        failpoint(FAILPOINTS[1]);
        self.out.aside = move_aside(
            self.temp_dir.as_fd(),
            &self.name,
            self.target_dir.as_fd(),
            &self.name,
            &self.stamp,
        )
        .map_err(|e| {
            Error::Usage(format!(
                "{} is restored, but what was there could not be renamed aside ({}): {}",
                escape(&self.shown),
                std::io::Error::from(e),
                kept_note(&self.shown)
            ))
        })?;
        failpoint(FAILPOINTS[2]);
        Ok(())
    }

    /// Renames the copy to the target's name, which must be free.
    fn rename_into_place(&self) -> Result<(), Error> {
        match rustix::fs::renameat_with(
            &self.temp_dir,
            &self.name,
            &self.target_dir,
            &self.name,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                let kept = match &self.out.aside {
                    Some(aside) => format!(
                        "; what was there before is kept in {}",
                        escape(&self.shown.with_file_name(aside))
                    ),
                    None => String::new(),
                };
                Err(Error::Usage(format!(
                    "{} appeared while restoring: it was left as it is and the copy removed{kept}",
                    escape(&self.shown)
                )))
            }
            Err(e) => Err(FsError::new("rename into place", &self.shown, e.into()).into()),
        }
    }
}

impl Drop for Copied {
    fn drop(&mut self) {
        if self.temp.is_empty() || self.swapped {
            return;
        }
        // Best effort: what remains is a marked leftover the next restore removes.
        let _ = empty_dir(&self.temp_dir).and_then(|()| {
            rustix::fs::unlinkat(&self.target_dir, &self.temp, AtFlags::REMOVEDIR)
                .map_err(Into::into)
        });
    }
}

/// Renames `from_dir/from` to the first free aside name of `name` in `to_dir`; `None`
/// when `from` is gone.
fn move_aside(
    from_dir: BorrowedFd,
    from: &OsStr,
    to_dir: BorrowedFd,
    name: &OsStr,
    stamp: &str,
) -> Result<Option<OsString>, Errno> {
    for n in 0..10_000 {
        let aside = aside_name(name, stamp, n);
        match rustix::fs::renameat_with(from_dir, from, to_dir, &aside, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(Some(aside)),
            Err(Errno::EXIST) => continue,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EXIST)
}
pub(crate) fn failpoint(name: &str) {
    if std::env::var(crate::snapshots::reset::FAILPOINT_ENV).is_ok_and(|v| v == name) {
        eprintln!("imperm: failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Opens `base/rel` as a directory, creating the missing ones with the owner and mode of
/// the same directory below `model` (the snapshot; for migrate, the live root). Each step
/// is one name opened without following a symlink, so nothing planted on the way is
/// followed; each directory made is complete before it has its name ([`make_dir_like`]).
pub fn create_parents(
    base: BorrowedFd,
    model: BorrowedFd,
    rel: &Path,
    shown_base: &Path,
) -> Result<OwnedFd, Error> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::openat(base, ".", dir_flags, Mode::empty())
        .map_err(|e| FsError::new("open", shown_base, e.into()))?;
    let mut like = rustix::fs::openat(model, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| FsError::new("open", shown_base, e.into()))?;
    let mut shown = shown_base.to_path_buf();
    for part in rel.components() {
        let Component::Normal(part) = part else {
            continue;
        };
        shown.push(part);
        like = rustix::fs::openat(
            &like,
            part,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::new("read the original of", &shown, e.into()))?;
        dir = match rustix::fs::openat(&dir, part, dir_flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                let m = rustix::fs::fstat(&like)
                    .map_err(|e| FsError::new("read the original of", &shown, e.into()))?;
                make_dir_like(&dir, part, &m, &shown)?
            }
            Err(e) => return Err(not_a_directory(&dir, part, &shown, e)),
        };
    }
    Ok(dir)
}

/// The temporary name a missing parent directory is made under before it is renamed
/// into place.
pub fn parent_temp(name: &OsStr) -> std::ffi::OsString {
    let mut out = std::ffi::OsString::from(".");
    out.push(name);
    out.push(".imperm-parent");
    out
}

/// Makes `dir/name` with the owner and mode of `like`, complete under a temporary name
/// and then renamed into place: a run killed in between never leaves a directory with
/// the wrong owner or mode (root's, 0700) under its name, and the next run removes the
/// empty leftover. One made meanwhile by someone else is used as it is.
fn make_dir_like(dir: &OwnedFd, name: &OsStr, like: &Stat, shown: &Path) -> Result<OwnedFd, Error> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let temp = parent_temp(name);
    let temp_shown = shown.with_file_name(&temp);
    let err = |op: &str, e: Errno| -> Error { FsError::new(op, &temp_shown, e.into()).into() };
    match rustix::fs::unlinkat(dir, &temp, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(err("remove the leftover", e)),
    }
    rustix::fs::mkdirat(dir, &temp, Mode::from_raw_mode(0o700)).map_err(|e| err("create", e))?;
    let fd = rustix::fs::openat(dir, &temp, flags, Mode::empty()).map_err(|e| err("open", e))?;
    rustix::fs::fchown(&fd, Some(uid(like)), Some(gid(like))).map_err(|e| err("chown", e))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(like.st_mode & 0o7777))
        .map_err(|e| err("chmod", e))?;
    match rustix::fs::renameat_with(dir, &temp, dir, name, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(fd),
        Err(Errno::EXIST) => {
            let _ = rustix::fs::unlinkat(dir, &temp, AtFlags::REMOVEDIR);
            rustix::fs::openat(dir, name, flags, Mode::empty())
                .map_err(|e| not_a_directory(dir, name, shown, e))
        }
        Err(e) => Err(err("rename into place", e)),
    }
}

/// The error for `dir/name` that could not be opened as a directory.
fn not_a_directory(dir: &OwnedFd, name: &OsStr, shown: &Path, e: Errno) -> Error {
    let kind = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileType::from_raw_mode(st.st_mode));
    match (e, kind) {
        (Errno::LOOP | Errno::NOTDIR, Ok(FileType::Symlink)) => Error::Usage(format!(
            "a symlink stands in the way at {}; it was not followed",
            escape(shown)
        )),
        (Errno::NOTDIR, Ok(_)) => Error::Usage(format!(
            "{} is not a directory, so nothing can be placed below it",
            escape(shown)
        )),
        _ => FsError::new("open", shown, e.into()).into(),
    }
}

/// Removes `dir/name` and everything below it, never following a symlink.
pub fn remove_tree(dir: BorrowedFd, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let top = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    empty_dir(&top)?;
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Removes everything in `top`, deepest first, with an explicit stack. Directories are
/// reopened by their path below `top`; a copy never makes one too deep for that.
fn empty_dir(top: &OwnedFd) -> io::Result<()> {
    let mut cursor = Cursor::new(top.as_fd());
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.last().cloned() {
        let dir = cursor.dir(&rel)?;
        let mut subdirs = Vec::new();
        for name in names(&dir)? {
            match rustix::fs::unlinkat(&dir, &name, AtFlags::empty()) {
                Ok(()) => {}
                Err(Errno::ISDIR) => subdirs.push(rel.join(&name)),
                Err(e) => return Err(e.into()),
            }
        }
        if subdirs.is_empty() {
            stack.pop();
            if let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) {
                let parent = cursor.dir(parent)?;
                rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR)?;
            }
        } else {
            stack.extend(subdirs);
        }
    }
    Ok(())
}

fn open_dir_beneath(dir: BorrowedFd, rel: &Path) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        dir,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    )
    .map_err(Into::into)
}

/// Opens directories below `base` by relative path, keeping descriptors of the last path
/// opened (at most `KEEP` levels, so a deep tree cannot fill the descriptor table): a walk
/// that moves one level at a time opens one name at a time instead of a whole path.
struct Cursor<'a> {
    base: BorrowedFd<'a>,
    open: Vec<(OsString, OwnedFd)>,
}

impl<'a> Cursor<'a> {
    const KEEP: usize = 128;

    fn new(base: BorrowedFd<'a>) -> Cursor<'a> {
        Cursor {
            base,
            open: Vec::new(),
        }
    }

    /// `base/rel` as a directory, reached without following a symlink.
    fn dir(&mut self, rel: &Path) -> io::Result<OwnedFd> {
        let parts: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p),
                _ => None,
            })
            .collect();
        let same = self
            .open
            .iter()
            .zip(&parts)
            .take_while(|((have, _), want)| have.as_os_str() == **want)
            .count();
        self.open.truncate(same);
        let mut at = same;
        while at < parts.len() && self.open.len() < Self::KEEP {
            let parent = self.open.last().map_or(self.base, |(_, fd)| fd.as_fd());
            let fd = open_noatime(
                parent,
                parts[at],
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            )?;
            self.open.push((parts[at].to_os_string(), fd));
            at += 1;
        }
        let last = self.open.last().map_or(self.base, |(_, fd)| fd.as_fd());
        if at < parts.len() {
            let rest: PathBuf = parts[at..].iter().collect();
            return open_dir_beneath(last, &rest);
        }
        Ok(rustix::io::dup(last)?)
    }
}

/// `openat` with `O_NOATIME` where the kernel allows it (the file's owner, or root):
/// reading a live tree (`migrate`) must not change it, access times included.
pub fn open_noatime(dir: BorrowedFd, name: &OsStr, flags: OFlags) -> Result<OwnedFd, Errno> {
    match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        other => other,
    }
}

/// The names in a directory, sorted, without `.` and `..`.
pub fn names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = entries.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            out.push(OsString::from_vec(name));
        }
    }
    out.sort();
    Ok(out)
}

/// One copy: from `source/name` to `target/name`, walked with an explicit stack (a deep
/// tree cannot exhaust the call stack or the descriptor table). Paths are relative to the
/// two directories and start with `name`.
struct Walk<'a> {
    source: BorrowedFd<'a>,
    target: BorrowedFd<'a>,
    sources: Cursor<'a>,
    targets: Cursor<'a>,
    name: &'a OsStr,
    shown: &'a Path,
    /// Sources with other names still to come: (device, inode) -> the first copy, and how
    /// many names are left.
    links: HashMap<(u64, u64), (PathBuf, u64)>,
    out: Restored,
}

enum Step {
    Enter(PathBuf),
    /// A directory's own metadata, set once everything in it is done, so that writing its
    /// entries does not move its times and it stays private until then.
    Leave(PathBuf, Box<Stat>),
}

impl Walk<'_> {
    fn run(&mut self) -> Result<(), Error> {
        let root = PathBuf::from(self.name);
        let st = rustix::fs::statat(self.source, self.name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.err("read", &root, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return self.copy_entry(self.source, self.target, self.name, &root, &st);
        }
        rustix::fs::mkdirat(self.target, self.name, Mode::from_raw_mode(0o700))
            .map_err(|e| self.err("create", &root, e))?;
        let mut stack = vec![Step::Leave(root.clone(), Box::new(st)), Step::Enter(root)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Enter(rel) => {
                    let from = self.open_source(&rel)?;
                    let to = self.open_target(&rel)?;
                    let mut subdirs = Vec::new();
                    for name in names(&from).map_err(|e| self.io_err("list", &rel, e))? {
                        let child = rel.join(&name);
                        let st = rustix::fs::statat(&from, &name, AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| self.err("read", &child, e))?;
                        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                            if child.as_os_str().len() > DEPTH_MAX {
                                return Err(Error::Usage(format!(
                                    "{} holds a tree deeper than imperm copies (a directory path longer than {DEPTH_MAX} bytes below it); nothing was restored",
                                    escape(self.shown)
                                )));
                            }
                            rustix::fs::mkdirat(&to, &name, Mode::from_raw_mode(0o700))
                                .map_err(|e| self.err("create", &child, e))?;
                            subdirs.push((child, st));
                        } else {
                            self.copy_entry(from.as_fd(), to.as_fd(), &name, &child, &st)?;
                        }
                    }
                    for (child, st) in subdirs.into_iter().rev() {
                        stack.push(Step::Leave(child.clone(), Box::new(st)));
                        stack.push(Step::Enter(child));
                    }
                }
                Step::Leave(rel, st) => {
                    let from = self.open_source(&rel)?;
                    let to = self.open_target(&rel)?;
                    rustix::fs::fchown(&to, Some(uid(&st)), Some(gid(&st)))
                        .map_err(|e| self.err("chown", &rel, e))?;
                    rustix::fs::fchmod(&to, Mode::from_raw_mode(st.st_mode & 0o7777))
                        .map_err(|e| self.err("chmod", &rel, e))?;
                    copy_xattrs(Node::Fd(from.as_fd()), Node::Fd(to.as_fd()))
                        .map_err(|(op, e)| self.err(&op, &rel, e))?;
                    rustix::fs::futimens(&to, &times(&st))
                        .map_err(|e| self.err("set times of", &rel, e))?;
                }
            }
        }
        Ok(())
    }

    /// Copies one entry that is not a directory, metadata included. Owner first (chown
    /// clears set-id bits and file capabilities), then mode, xattrs, and times last.
    fn copy_entry(
        &mut self,
        from: BorrowedFd,
        to: BorrowedFd,
        name: &OsStr,
        rel: &Path,
        st: &Stat,
    ) -> Result<(), Error> {
        let kind = FileType::from_raw_mode(st.st_mode);
        if let Some(why) = cannot_copy(kind) {
            let below = rel.strip_prefix(self.name).unwrap_or(rel).to_path_buf();
            self.out.not_restored.push((below, why));
            return Ok(());
        }
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some((first, left)) = self.links.get_mut(&key) {
                let first = first.clone();
                *left -= 1;
                if *left == 0 {
                    self.links.remove(&key);
                }
                let (parent, first_name) = (
                    first.parent().unwrap_or(Path::new("")),
                    first.file_name().unwrap_or_default(),
                );
                let dir = self.open_target(parent)?;
                rustix::fs::linkat(&dir, first_name, to, name, AtFlags::empty())
                    .map_err(|e| self.err("link", rel, e))?;
                self.out.files += 1;
                return Ok(());
            }
        }
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        match kind {
            FileType::RegularFile => {
                let src = open_noatime(
                    from,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                )
                .map_err(|e| self.err("read", rel, e))?;
                let dst = rustix::fs::openat(
                    to,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.err("create", rel, e))?;
                let size = u64::try_from(st.st_size).unwrap_or(0);
                copy_data(&src, &dst, size).map_err(|e| self.io_err("copy to", rel, e))?;
                rustix::fs::fchown(&dst, Some(uid(st)), Some(gid(st)))
                    .map_err(|e| self.err("chown", rel, e))?;
                rustix::fs::fchmod(&dst, mode).map_err(|e| self.err("chmod", rel, e))?;
                copy_xattrs(Node::Fd(src.as_fd()), Node::Fd(dst.as_fd()))
                    .map_err(|(op, e)| self.err(&op, rel, e))?;
                rustix::fs::futimens(&dst, &times(st))
                    .map_err(|e| self.err("set times of", rel, e))?;
                self.out.bytes += size;
            }
            FileType::Symlink => {
                let link = rustix::fs::readlinkat(from, name, Vec::new())
                    .map_err(|e| self.err("read link", rel, e))?;
                rustix::fs::symlinkat(link.as_c_str(), to, name)
                    .map_err(|e| self.err("create link", rel, e))?;
                self.set_at(from, to, name, rel, st, None)?;
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                // Never opened: opening a FIFO blocks and a device may act on open.
                rustix::fs::mknodat(to, name, kind, Mode::from_raw_mode(0o600), st.st_rdev)
                    .map_err(|e| self.err("create", rel, e))?;
                self.set_at(from, to, name, rel, st, Some(mode))?;
            }
            FileType::Directory | FileType::Socket | FileType::Unknown => {
                unreachable!("handled by the caller")
            }
        }
        self.out.files += 1;
        if st.st_nlink > 1 {
            // `st_nlink` is a u32 on some targets.
            #[allow(clippy::useless_conversion)]
            let others = u64::from(st.st_nlink) - 1;
            self.links.insert(key, (rel.to_path_buf(), others));
        }
        Ok(())
    }

    /// Metadata of an entry that cannot be opened for it (a symlink, FIFO or device),
    /// by name in its directory. Safe by name: the directory is ours alone (mode 0700).
    fn set_at(
        &self,
        from: BorrowedFd,
        to: BorrowedFd,
        name: &OsStr,
        rel: &Path,
        st: &Stat,
        mode: Option<Mode>,
    ) -> Result<(), Error> {
        rustix::fs::chownat(
            to,
            name,
            Some(uid(st)),
            Some(gid(st)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.err("chown", rel, e))?;
        if let Some(mode) = mode {
            rustix::fs::chmodat(to, name, mode, AtFlags::empty())
                .map_err(|e| self.err("chmod", rel, e))?;
        }
        copy_xattrs(Node::At(from, name), Node::At(to, name)).map_err(|(op, e)| match e {
            // The entry is there (it was just made): /proc is what is missing.
            Errno::NOENT => self.err(
                "copy xattrs (through /proc/self/fd, not mounted) of",
                rel,
                e,
            ),
            e => self.err(&op, rel, e),
        })?;
        rustix::fs::utimensat(to, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.err("set times of", rel, e))
    }

    fn open_source(&mut self, rel: &Path) -> Result<OwnedFd, Error> {
        let fd = self.sources.dir(rel);
        fd.map_err(|e| self.io_err("open the snapshot's", rel, e))
    }

    fn open_target(&mut self, rel: &Path) -> Result<OwnedFd, Error> {
        let fd = self.targets.dir(rel);
        fd.map_err(|e| self.io_err("open", rel, e))
    }

    /// The target path of `rel`, as the user knows it.
    fn shown(&self, rel: &Path) -> PathBuf {
        match rel.strip_prefix(self.name) {
            Ok(below) if !below.as_os_str().is_empty() => self.shown.join(below),
            _ => self.shown.to_path_buf(),
        }
    }

    fn err(&self, op: &str, rel: &Path, e: Errno) -> Error {
        self.io_err(op, rel, e.into())
    }

    fn io_err(&self, op: &str, rel: &Path, e: io::Error) -> Error {
        FsError::new(op, &self.shown(rel), e).into()
    }
}

/// Copies `size` bytes of data, keeping holes: only the ranges SEEK_DATA finds are
/// copied (by `copy_file_range`, which shares extents where the filesystem can).
fn copy_data(src: &OwnedFd, dst: &OwnedFd, size: u64) -> io::Result<()> {
    let mut pos = 0;
    while pos < size {
        let start = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(start) => start,
            Err(Errno::NXIO) => break,
            // No hole support: all of it is data.
            Err(Errno::INVAL | Errno::NOTSUP) => pos,
            Err(e) => return Err(e.into()),
        };
        let end = match rustix::fs::seek(src, SeekFrom::Hole(start)) {
            Ok(end) => end.min(size),
            Err(Errno::INVAL | Errno::NOTSUP) => size,
            Err(e) => return Err(e.into()),
        };
        copy_range(src, dst, start, end)?;
        pos = end;
    }
    rustix::fs::ftruncate(dst, size)?;
    Ok(())
}

fn copy_range(src: &OwnedFd, dst: &OwnedFd, start: u64, end: u64) -> io::Result<()> {
    let (mut from, mut to) = (start, start);
    while from < end {
        let len = usize::try_from(end - from)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(src, Some(&mut from), dst, Some(&mut to), len) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::NOTSUP) => {
                return copy_range_by_reading(src, dst, from, end);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_range_by_reading(src: &OwnedFd, dst: &OwnedFd, mut pos: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 17];
    while pos < end {
        let want = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = rustix::io::pread(src, &mut buf[..want], pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut done = 0;
        while done < n {
            done += rustix::io::pwrite(dst, &buf[done..n], pos + done as u64)?;
        }
        pos += n as u64;
    }
    Ok(())
}

/// Where extended attributes are read or written: an open file or directory, or a name in
/// a directory for what cannot be opened (reached through /proc/self/fd, without following
/// the name itself).
#[derive(Clone, Copy)]
enum Node<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a OsStr),
}

impl Node<'_> {
    fn path(dir: BorrowedFd, name: &OsStr) -> PathBuf {
        Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
    }

    fn list(self) -> Result<Vec<u8>, Errno> {
        let query = || match self {
            Node::Fd(fd) => rustix::fs::flistxattr_query(fd),
            Node::At(dir, name) => rustix::fs::llistxattr_query(Self::path(dir, name)),
        };
        loop {
            let size = query()?;
            let mut buf = vec![0u8; size];
            let got = match self {
                Node::Fd(fd) => rustix::fs::flistxattr(fd, &mut buf[..]),
                Node::At(dir, name) => rustix::fs::llistxattr(Self::path(dir, name), &mut buf[..]),
            };
            match got {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn get(self, key: &OsStr) -> Result<Vec<u8>, Errno> {
        loop {
            let size = match self {
                Node::Fd(fd) => rustix::fs::fgetxattr_query(fd, key),
                Node::At(dir, name) => rustix::fs::lgetxattr_query(Self::path(dir, name), key),
            }?;
            let mut buf = vec![0u8; size];
            let got = match self {
                Node::Fd(fd) => rustix::fs::fgetxattr(fd, key, &mut buf[..]),
                Node::At(dir, name) => {
                    rustix::fs::lgetxattr(Self::path(dir, name), key, &mut buf[..])
                }
            };
            match got {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn set(self, key: &OsStr, value: &[u8]) -> Result<(), Errno> {
        match self {
            Node::Fd(fd) => rustix::fs::fsetxattr(fd, key, value, XattrFlags::empty()),
            Node::At(dir, name) => {
                rustix::fs::lsetxattr(Self::path(dir, name), key, value, XattrFlags::empty())
            }
        }
    }

    fn remove(self, key: &OsStr) -> Result<(), Errno> {
        match self {
            Node::Fd(fd) => rustix::fs::fremovexattr(fd, key),
            Node::At(dir, name) => rustix::fs::lremovexattr(Self::path(dir, name), key),
        }
    }
}

/// Makes the target's extended attributes the source's: each one copied, and the ACLs a
/// new entry inherited from a default ACL where the source had none removed.
fn copy_xattrs(from: Node, to: Node) -> Result<(), (String, Errno)> {
    let split = |list: &[u8]| -> Vec<OsString> {
        list.split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| OsStr::from_bytes(n).to_os_string())
            .collect()
    };
    let wanted = match from.list() {
        Ok(list) => split(&list),
        Err(Errno::NOTSUP) => Vec::new(),
        Err(e) => return Err(("list xattrs of".into(), e)),
    };
    for key in &wanted {
        let value = from
            .get(key)
            .map_err(|e| (format!("read xattr {} of", key.to_string_lossy()), e))?;
        to.set(key, &value)
            .map_err(|e| (format!("set xattr {} on", key.to_string_lossy()), e))?;
    }
    let have = match to.list() {
        Ok(list) => split(&list),
        Err(Errno::NOTSUP) => Vec::new(),
        Err(e) => return Err(("list xattrs of".into(), e)),
    };
    for key in have {
        if key.as_bytes().starts_with(b"system.posix_acl_") && !wanted.contains(&key) {
            to.remove(&key)
                .map_err(|e| (format!("remove xattr {} of", key.to_string_lossy()), e))?;
        }
    }
    Ok(())
}

fn uid(st: &Stat) -> Uid {
    Uid::from_raw(st.st_uid)
}

fn gid(st: &Stat) -> Gid {
    Gid::from_raw(st.st_gid)
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_aside_names_always_fit() {
        assert_eq!(
            temp_name(OsStr::new("app.conf")),
            ".app.conf.imperm-restore"
        );
        assert_eq!(
            aside_name(OsStr::new("app"), "20260115T063000Z", 0),
            "app.imperm-replaced-20260115T063000Z"
        );
        assert_eq!(
            aside_name(OsStr::new("app"), "20260115T063000Z", 2),
            "app.imperm-replaced-20260115T063000Z.2"
        );
        let long = "é".repeat(127); // 254 bytes
        for name in [
            temp_name(OsStr::new(&long)),
            aside_name(OsStr::new(&long), "20260115T063000Z", 9999),
        ] {
            assert!(name.len() <= NAME_MAX, "{}", name.len());
            assert!(name.to_str().is_some(), "cut at a character boundary");
        }
        let bytes = OsStr::from_bytes(&[0xff; 255]);
        assert_eq!(temp_name(bytes).len(), NAME_MAX);
    }

    /// Trial 2, finding 1: names that differ only past the cut get different temporary
    /// and aside names, which still fit; a name that fits is kept whole.
    #[test]
    fn long_siblings_get_their_own_temporary_names() {
        let common = "p".repeat(250);
        let (a, b) = (format!("{common}aaaaa"), format!("{common}bbbbb"));
        let (a, b) = (OsStr::new(&a), OsStr::new(&b));
        assert_ne!(temp_name(a), temp_name(b));
        assert_ne!(
            aside_name(a, "20260115T063000Z", 0),
            aside_name(b, "20260115T063000Z", 0)
        );
        for name in [temp_name(a), aside_name(b, "20260115T063000Z", 12)] {
            assert!(name.len() <= NAME_MAX, "{}", name.len());
        }
        assert!(temp_name(a).to_str().unwrap().ends_with(".imperm-restore"));
        // The longest name that fits whole is not hashed.
        let fits = "f".repeat(NAME_MAX - 16);
        assert_eq!(
            temp_name(OsStr::new(&fits)),
            OsString::from(format!(".{fits}.imperm-restore"))
        );
    }

    fn set(dir: &Path, key: &str, value: &[u8]) {
        let fd = self::dir(dir);
        rustix::fs::fsetxattr(&fd, key, value, XattrFlags::empty()).unwrap();
    }

    /// A restore killed between making its temporary directory and marking it leaves an
    /// empty 0700 directory of ours: the next restore removes it (nothing to lose); with
    /// anything in it, or another mode, it is not ours to touch.
    #[test]
    fn an_unmarked_empty_temporary_directory_of_ours_is_a_copy() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let name = OsStr::new("tree");
        let temp = tmp.path().join(temp_name(name));
        std::fs::create_dir(&temp).unwrap();
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o700)).unwrap();
        let parent = dir(tmp.path());
        assert_eq!(leftover(parent.as_fd(), name).unwrap(), Leftover::Copy);
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            leftover(parent.as_fd(), name).unwrap(),
            Leftover::Foreign(NO_MARKER)
        );
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(temp.join("x"), "someone's").unwrap();
        assert_eq!(
            leftover(parent.as_fd(), name).unwrap(),
            Leftover::Foreign(NO_MARKER)
        );
    }

    /// A marked temporary directory is ours to remove only when it names this target and
    /// holds nothing but that name.
    #[test]
    fn another_targets_temporary_directory_is_foreign() {
        let tmp = tempfile::tempdir().unwrap();
        let name = OsStr::new("app");
        let temp = tmp.path().join(temp_name(name));
        std::fs::create_dir(&temp).unwrap();
        set(&temp, MARKER, MARKER_VALUE);
        let parent = dir(tmp.path());
        let Ok(Leftover::Copy) = leftover(parent.as_fd(), name) else {
            // trusted.* xattrs need root and a filesystem that keeps them.
            return;
        };
        set(&temp, TARGET, b"other");
        assert_eq!(
            leftover(parent.as_fd(), name).unwrap(),
            Leftover::Foreign(OTHER_TARGET)
        );
        set(&temp, TARGET, b"app");
        assert_eq!(leftover(parent.as_fd(), name).unwrap(), Leftover::Copy);
        std::fs::write(temp.join("else"), "someone's").unwrap();
        assert_eq!(
            leftover(parent.as_fd(), name).unwrap(),
            Leftover::Foreign(OTHER_ENTRIES)
        );
        // A cut name without a record of its target may be any long sibling's.
        let long = OsString::from("l".repeat(250));
        let temp = tmp.path().join(temp_name(&long));
        std::fs::create_dir(&temp).unwrap();
        set(&temp, MARKER, MARKER_VALUE);
        assert_eq!(
            leftover(parent.as_fd(), &long).unwrap(),
            Leftover::Foreign(OTHER_TARGET)
        );
    }

    fn dir(path: &Path) -> OwnedFd {
        std::fs::File::open(path).unwrap().into()
    }

    fn job<'a>(
        source: &'a OwnedFd,
        target: &'a OwnedFd,
        name: &'a str,
        shown: &'a Path,
    ) -> Job<'a> {
        Job {
            source_dir: source.as_fd(),
            target_dir: target.as_fd(),
            name: OsStr::new(name),
            shown,
            replace: false,
            stamp: "20260115T063000Z",
        }
    }

    /// The final rename never replaces: a target that appeared after the checks stays, and
    /// the copy is removed.
    #[test]
    fn a_target_that_appears_meanwhile_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        std::fs::create_dir_all(from.join("tree/sub")).unwrap();
        std::fs::write(from.join("tree/sub/file"), "snapshot").unwrap();
        std::fs::write(from.join("file"), "snapshot").unwrap();
        std::fs::create_dir_all(to.join("tree")).unwrap();
        std::fs::write(to.join("file"), "appeared").unwrap();
        let (source, target) = (dir(&from), dir(&to));
        for name in ["file", "tree"] {
            let shown = Path::new("/srv").join(name);
            let err = restore(&job(&source, &target, name, &shown)).unwrap_err();
            assert!(err.to_string().contains("/srv/"), "{err}");
            assert!(
                err.to_string().contains("appeared while restoring"),
                "{err}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(to.join("file")).unwrap(),
            "appeared"
        );
        let left: Vec<_> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "no copy left behind: {left:?}");
        assert_eq!(std::fs::read_dir(to.join("tree")).unwrap().count(), 0);
    }

    /// Parents are created one name at a time on descriptors: a symlink on the way (planted
    /// after the checks) is refused, never followed.
    #[test]
    fn parents_are_made_whole_under_a_temporary_name_and_a_leftover_is_cleared() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let (base, model) = (tmp.path().join("base"), tmp.path().join("model"));
        std::fs::create_dir_all(model.join("a/b")).unwrap();
        std::fs::create_dir_all(&base).unwrap();
        for (dir, mode, owner) in [("a", 0o751, 42), ("a/b", 0o2710, 43)] {
            let at = model.join(dir);
            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(&at, Some(owner), Some(owner + 1)).unwrap();
        }
        // What a run killed after its mkdir left: root's, 0700, under the temporary name.
        std::fs::create_dir(base.join(".a.imperm-parent")).unwrap();
        create_parents(
            dir(&base).as_fd(),
            dir(&model).as_fd(),
            Path::new("a/b"),
            Path::new("/persist"),
        )
        .unwrap();
        for (d, mode, owner) in [("a", 0o751, 42), ("a/b", 0o2710, 43)] {
            let m = std::fs::metadata(base.join(d)).unwrap();
            assert_eq!(
                (m.mode() & 0o7777, m.uid(), m.gid()),
                (mode, owner, owner + 1),
                "{d}"
            );
        }
        let names: Vec<_> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a"]);
        // A leftover that is not empty is not imperm's to remove: said, nothing made.
        std::fs::create_dir_all(model.join("c")).unwrap();
        std::fs::create_dir_all(base.join(".c.imperm-parent/x")).unwrap();
        let err = create_parents(
            dir(&base).as_fd(),
            dir(&model).as_fd(),
            Path::new("c"),
            Path::new("/persist"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/persist/.c.imperm-parent"),
            "{err}"
        );
        assert!(!base.join("c").exists());
    }

    #[test]
    fn create_parents_never_follows_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let (base, model, outside) = (
            tmp.path().join("base"),
            tmp.path().join("model"),
            tmp.path().join("outside"),
        );
        std::fs::create_dir_all(model.join("a/b/c")).unwrap();
        std::fs::create_dir_all(base.join("a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, base.join("a/b")).unwrap();
        let err = create_parents(
            dir(&base).as_fd(),
            dir(&model).as_fd(),
            Path::new("a/b/c"),
            Path::new("/persist"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("a symlink stands in the way at /persist/a/b"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

        // A file on the way is named as such.
        std::fs::remove_file(base.join("a/b")).unwrap();
        std::fs::write(base.join("a/b"), "").unwrap();
        let err = create_parents(
            dir(&base).as_fd(),
            dir(&model).as_fd(),
            Path::new("a/b/c"),
            Path::new("/persist"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/persist/a/b is not a directory"),
            "{err}"
        );

        // And what is missing is made like the model.
        std::fs::remove_file(base.join("a/b")).unwrap();
        std::fs::set_permissions(
            model.join("a/b"),
            std::os::unix::fs::PermissionsExt::from_mode(0o751),
        )
        .unwrap();
        std::os::unix::fs::chown(model.join("a/b"), Some(70), Some(71)).unwrap();
        create_parents(
            dir(&base).as_fd(),
            dir(&model).as_fd(),
            Path::new("a/b/c"),
            Path::new("/persist"),
        )
        .unwrap();
        let m = std::fs::metadata(base.join("a/b")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o751, 70, 71));
        assert!(base.join("a/b/c").is_dir());
    }

    /// A tree too deep for one path is refused with a clear error, not a crash, and leaves
    /// nothing; a deep one that fits is copied with a bounded number of descriptors.
    #[test]
    fn deep_trees_are_copied_or_refused_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        std::fs::create_dir_all(&to).unwrap();
        // Long names reach the limit in few levels; 200 short ones go past what the walk
        // keeps open.
        let long = "d".repeat(250);
        for (name, part, depth) in [
            ("fits", "a", 200),
            ("fits", long.as_str(), 14),
            ("deep", long.as_str(), 17),
        ] {
            let mut d = dir(tmp.path());
            for part in ["from", name]
                .into_iter()
                .chain(std::iter::repeat_n(part, depth))
            {
                let _ = rustix::fs::mkdirat(&d, part, Mode::from_raw_mode(0o755));
                d = rustix::fs::openat(&d, part, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                    .unwrap();
            }
            rustix::fs::openat(
                &d,
                "leaf",
                OFlags::WRONLY | OFlags::CREATE,
                Mode::from_raw_mode(0o644),
            )
            .unwrap();
        }
        let (source, target) = (dir(&from), dir(&to));
        let shown = Path::new("/srv/fits");
        let done = restore(&job(&source, &target, "fits", shown)).unwrap();
        assert_eq!(done.files, 2);
        let shown = Path::new("/srv/deep");
        let err = restore(&job(&source, &target, "deep", shown)).unwrap_err();
        assert!(
            err.to_string()
                .contains("/srv/deep holds a tree deeper than imperm copies"),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["fits"]);
        remove_tree(dir(tmp.path()).as_fd(), OsStr::new("to")).unwrap();
        assert!(!to.exists());
    }
}
