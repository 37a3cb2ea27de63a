//! What lies in a persistent storage that no declared entry covers any more: state of a
//! service removed from the configuration, a path renamed, a copy shadowed by another
//! storage's mount. The judge is pure; the walk reads the storage without following a
//! symlink or leaving its mount; a quarantine only renames (same filesystem) and records
//! what it moved first, so that nothing is ever deleted and a killed run loses nothing.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags, Statx, StatxFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::discover::owners::Accounts;
use crate::error::{Error, FsError};
use crate::paths::escape;
use crate::persisted::PersistedSet;
use crate::recover::restore::names;

/// The directory at the top of a storage that quarantines go into, one per run.
pub const QUARANTINE_DIR: &str = ".imperm-stray";
/// The record each quarantine writes before it moves anything.
pub const MANIFEST: &str = "manifest.json";
/// A manifest lists paths; a few hundred MiB is no manifest imperm wrote.
const MANIFEST_MAX: u64 = 256 << 20;

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Why something in a storage is stray.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "why", content = "mounted_from", rename_all = "kebab-case")]
pub enum Why {
    /// No entry names it or a directory above it.
    Undeclared,
    /// An entry names it, but another storage's copy is the one mounted there: this one is
    /// hidden under that mount (impermanence #315).
    Shadowed(#[serde(serialize_with = "crate::paths::json")] PathBuf),
}

/// What the walk does with one name in a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Something below it is declared: look inside.
    Descend,
    /// Declared from this storage (or another storage itself): in use.
    Covered,
    Stray(Why),
}

/// The verdict on `path` (as the host sees it once mounted: `/var/lib/foo`) found in
/// `storage`, with the host's persisted set and all its storages.
pub fn judge(
    set: &PersistedSet,
    storage: &Path,
    storages: &BTreeSet<&Path>,
    path: &Path,
    is_dir: bool,
) -> Verdict {
    let on_disk = storage.join(path.strip_prefix("/").unwrap_or(path));
    // Another storage inside this one is walked on its own.
    if storages.iter().any(|s| *s != storage && *s == on_disk) {
        return Verdict::Covered;
    }
    if is_dir
        && (set.has_below(path)
            || storages
                .iter()
                .any(|s| *s != storage && s.starts_with(&on_disk)))
    {
        return Verdict::Descend;
    }
    // This storage inside another (`/persist/var` in `/persist`): the same place on disk
    // may be what an entry of the outer one declares.
    for outer in storages.iter().filter(|s| **s != storage) {
        let Ok(below) = on_disk.strip_prefix(outer) else {
            continue;
        };
        let there = Path::new("/").join(below);
        if is_dir && set.has_below(&there) {
            return Verdict::Descend;
        }
        if set.lookup(&there).is_some_and(|e| e.storage == *outer) {
            return Verdict::Covered;
        }
    }
    match set.lookup(path) {
        Some(entry) if entry.storage == storage => Verdict::Covered,
        Some(entry) => Verdict::Stray(Why::Shadowed(entry.storage.clone())),
        None => Verdict::Stray(Why::Undeclared),
    }
}

/// One stray thing.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// Where the host would see it, were it declared.
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    /// Where it is: in the storage.
    #[serde(serialize_with = "crate::paths::json")]
    pub on_disk: PathBuf,
    #[serde(flatten)]
    pub why: Why,
    pub kind: &'static str,
    /// Files and other non-directories in it (itself, when it is not a directory).
    pub files: u64,
    pub bytes: u64,
    pub owner: String,
    pub group: String,
    /// The newest modification time in it (RFC 3339).
    pub changed: String,
    /// A mount point: another filesystem, not measured and never moved.
    pub mount_point: bool,
    #[serde(skip)]
    pub identity: (u64, u64),
    #[serde(skip)]
    pub rel: PathBuf,
}

/// Names a storage keeps for imperm's own use, at its top: the quarantine, and migrate's
/// record of what it verified.
fn ours(rel: &Path) -> bool {
    rel == Path::new(QUARANTINE_DIR) || super::record::is_record_name(rel)
}

const STATX: StatxFlags = StatxFlags::TYPE
    .union(StatxFlags::MODE)
    .union(StatxFlags::UID)
    .union(StatxFlags::GID)
    .union(StatxFlags::INO)
    .union(StatxFlags::SIZE)
    .union(StatxFlags::MTIME)
    .union(StatxFlags::MNT_ID);

fn statx_at(dir: BorrowedFd, name: &OsStr) -> io::Result<Statx> {
    rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, STATX).map_err(Into::into)
}

fn mount_of(st: &Statx) -> (bool, u64, u32, u32) {
    (
        st.stx_mask & StatxFlags::MNT_ID.bits() != 0,
        st.stx_mnt_id,
        st.stx_dev_major,
        st.stx_dev_minor,
    )
}

/// Whether `st` is on the mount `top` is on: the mount id where the kernel gives it, else
/// the device (a btrfs subvolume has a device of its own, so without mount ids a nested
/// subvolume counts as another mount: not walked, reported whole).
fn same_mount(top: &Statx, st: &Statx) -> bool {
    let (a, b) = (mount_of(top), mount_of(st));
    if a.0 && b.0 {
        a.1 == b.1
    } else {
        (a.2, a.3) == (b.2, b.3)
    }
}

/// A directory opened to be read, without moving its access time where that is allowed.
fn open_dir_at(parent: BorrowedFd, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    crate::recover::restore::open_noatime(parent, name, flags).map_err(Into::into)
}

/// Opens a storage below `root` for reading and renaming in it: no symlink followed on the
/// way (a storage reached through one is refused: a quarantine never moves through one);
/// `None` when it does not exist.
pub fn open_storage(
    root: BorrowedFd,
    storage: &Path,
    shown: &Path,
) -> Result<Option<OwnedFd>, Error> {
    let rel = storage.strip_prefix("/").unwrap_or(storage);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    match rustix::fs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::LOOP | Errno::XDEV) => Err(Error::Usage(format!(
            "storage {} is reached through a symlink; stray never reads or moves through one",
            escape(shown)
        ))),
        Err(Errno::NOTDIR) => Err(Error::Usage(format!(
            "storage {} is not a directory",
            escape(shown)
        ))),
        Err(e) => Err(FsError::new("open the storage", shown, e.into()).into()),
    }
}

/// Everything stray in one storage, in tree order. `shown` is the storage as the user
/// names it on disk (below `--root`), for messages and `on_disk`.
pub fn find(
    storage_fd: &OwnedFd,
    storage: &Path,
    shown: &Path,
    set: &PersistedSet,
    names_of: &Accounts,
) -> Result<Vec<Item>, Error> {
    let storages = set.storages();
    let top = rustix::fs::statx(storage_fd, "", AtFlags::EMPTY_PATH, STATX)
        .map_err(|e| FsError::new("inspect", shown, e.into()))?;
    let mut items = Vec::new();
    // Directories still to read: the descriptor of each and its path in the storage.
    let mut stack: Vec<(Arc<OwnedFd>, PathBuf)> = Vec::new();
    let storage_fd =
        Arc::new(rustix::io::dup(storage_fd).map_err(|e| FsError::new("open", shown, e.into()))?);
    stack.push((storage_fd, PathBuf::new()));
    while let Some((dir, rel_dir)) = stack.pop() {
        let list = names(&dir).map_err(|e| FsError::new("list", &shown.join(&rel_dir), e))?;
        for name in list.into_iter().rev() {
            let rel = rel_dir.join(&name);
            if ours(&rel) {
                continue;
            }
            let st = match statx_at(dir.as_fd(), &name) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc_enoent()) => continue,
                Err(e) => return Err(FsError::new("inspect", &shown.join(&rel), e).into()),
            };
            let kind = FileType::from_raw_mode(u32::from(st.stx_mode));
            let is_dir = kind == FileType::Directory;
            if rel == Path::new("lost+found") && is_dir && empty_dir(dir.as_fd(), &name) {
                // What mkfs makes at the top of a filesystem of its own.
                continue;
            }
            let host = Path::new("/").join(&rel);
            let mounted = !same_mount(&top, &st);
            match judge(set, storage, &storages, &host, is_dir) {
                Verdict::Covered => {}
                Verdict::Descend if mounted => {}
                Verdict::Descend => match open_dir_at(dir.as_fd(), &name) {
                    Ok(fd) => stack.push((Arc::new(fd), rel)),
                    Err(e) if e.raw_os_error() == Some(libc_enoent()) => {}
                    Err(e) => return Err(FsError::new("open", &shown.join(&rel), e).into()),
                },
                Verdict::Stray(why) => {
                    let mut m = Measure::of(&st);
                    if is_dir && !mounted {
                        if let Ok(fd) = open_dir_at(dir.as_fd(), &name) {
                            m.walk(fd, &top);
                        }
                    }
                    items.push(Item {
                        path: host,
                        on_disk: shown.join(&rel),
                        why,
                        kind: crate::words::file_kind(kind),
                        files: m.files,
                        bytes: m.bytes,
                        owner: names_of.user(st.stx_uid),
                        group: names_of.group(st.stx_gid),
                        changed: m.changed().to_string(),
                        mount_point: mounted,
                        identity: (st.stx_ino, st.stx_mnt_id),
                        rel,
                    });
                }
            }
        }
    }
    items.sort_by(|a, b| crate::paths::tree_order(&a.rel, &b.rel));
    Ok(items)
}

fn libc_enoent() -> i32 {
    Errno::NOENT.raw_os_error()
}

fn empty_dir(parent: BorrowedFd, name: &OsStr) -> bool {
    open_dir_at(parent, name)
        .and_then(|fd| names(&fd))
        .is_ok_and(|n| n.is_empty())
}

/// Size, file count and newest modification of a tree.
struct Measure {
    files: u64,
    bytes: u64,
    newest: (i64, u32),
}

impl Measure {
    fn of(st: &Statx) -> Measure {
        let dir = FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::Directory;
        Measure {
            files: u64::from(!dir),
            bytes: if dir { 0 } else { st.stx_size },
            newest: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
        }
    }

    /// Adds what is below `top` on the same mount; iterative, so any depth will do, and a
    /// directory is opened only when its turn comes (each pending one holds its parent,
    /// not itself, open: a directory of 100,000 directories costs one descriptor).
    fn walk(&mut self, top: OwnedFd, mount: &Statx) {
        let mut stack: Vec<(Arc<OwnedFd>, OsString)> = Vec::new();
        let mut current = Some(top);
        loop {
            let fd = match current.take() {
                Some(fd) => fd,
                None => match stack.pop() {
                    Some((parent, name)) => match open_dir_at(parent.as_fd(), &name) {
                        Ok(fd) => fd,
                        Err(_) => continue,
                    },
                    None => break,
                },
            };
            let Ok(list) = names(&fd) else { continue };
            let fd = Arc::new(fd);
            for name in list {
                let Ok(st) = statx_at(fd.as_fd(), &name) else {
                    continue;
                };
                let child = Measure::of(&st);
                self.newest = self.newest.max(child.newest);
                if !same_mount(mount, &st) {
                    continue;
                }
                self.files += child.files;
                self.bytes += child.bytes;
                if child.files == 0 {
                    stack.push((fd.clone(), name));
                }
            }
        }
    }

    fn changed(&self) -> Timestamp {
        Timestamp::new(self.newest.0, self.newest.1 as i32).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// The record of one quarantine, written before anything moves.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The storage as the host names it.
    pub storage: String,
    pub created: String,
    pub items: Vec<ManifestItem>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestItem {
    /// Relative to the storage, escaped as imperm prints paths.
    pub path: String,
    pub kind: String,
    pub bytes: u64,
}

/// What a quarantine or a putting back did in one storage.
#[derive(Debug, Default, Serialize)]
pub struct Moved {
    /// The quarantine's name (`stray --restore NAME`).
    pub name: String,
    #[serde(serialize_with = "crate::paths::json")]
    pub dir: PathBuf,
    #[serde(serialize_with = "crate::paths::json_all")]
    pub moved: Vec<PathBuf>,
    pub not_moved: Vec<NotMoved>,
}

#[derive(Debug, Serialize)]
pub struct NotMoved {
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    pub why: String,
}

/// Opens (making it, root only, 0700) the storage's quarantine directory; one planted as
/// a symlink or owned by someone else is refused.
fn quarantine_root(
    storage_fd: &OwnedFd,
    shown: &Path,
    create: bool,
) -> Result<Option<OwnedFd>, Error> {
    let at = shown.join(QUARANTINE_DIR);
    if create {
        match rustix::fs::mkdirat(storage_fd, QUARANTINE_DIR, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(FsError::new("make", &at, e.into()).into()),
        }
    }
    let fd = match rustix::fs::openat2(
        storage_fd,
        QUARANTINE_DIR,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) if !create => return Ok(None),
        Err(Errno::LOOP | Errno::NOTDIR | Errno::XDEV) => {
            return Err(Error::Usage(format!(
                "{} is not a directory of imperm's (a symlink or another kind of file); nothing was done",
                escape(&at)
            )));
        }
        Err(e) => return Err(FsError::new("open", &at, e.into()).into()),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| FsError::new("inspect", &at, e.into()))?;
    if st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(Error::Usage(format!(
            "{} is owned by uid {}, not by the user imperm runs as; nothing was done",
            escape(&at),
            st.st_uid
        )));
    }
    Ok(Some(fd))
}

/// Opens `base/rel` as a directory, one name at a time, never following a symlink; with
/// `create`, the missing ones are made (0700: only the quarantine's own directories).
fn open_path(base: BorrowedFd, rel: &Path, create: bool) -> io::Result<OwnedFd> {
    let mut fd = rustix::io::dup(base)?;
    for part in rel.components() {
        let Component::Normal(name) = part else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a plain relative path",
            ));
        };
        if create {
            match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        fd = rustix::fs::openat2(
            &fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH | ResolveFlags::NO_XDEV,
        )?;
    }
    Ok(fd)
}

/// Moves `items` of one storage into a new quarantine named after `now`. The manifest is
/// written (and synced) before the first rename, so a run killed anywhere leaves every
/// item either in place or in the quarantine the manifest describes.
pub fn quarantine(
    storage_fd: &OwnedFd,
    storage: &Path,
    shown: &Path,
    items: &[Item],
    now: Timestamp,
) -> Result<Moved, Error> {
    let root = quarantine_root(storage_fd, shown, true)?.expect("made above");
    let qdir = shown.join(QUARANTINE_DIR);
    let base = crate::snapshots::snapshot::name_for(now);
    let mut name = base.clone();
    for seq in 1u32.. {
        match rustix::fs::mkdirat(&root, name.as_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) => break,
            Err(Errno::EXIST) => name = format!("{base}-{seq}"),
            Err(e) => return Err(FsError::new("make", &qdir.join(&name), e.into()).into()),
        }
    }
    let dir_shown = qdir.join(&name);
    let dir = open_path(root.as_fd(), Path::new(&name), false)
        .map_err(|e| FsError::new("open", &dir_shown, e))?;
    let movable: Vec<&Item> = items.iter().filter(|i| !i.mount_point).collect();
    let manifest = Manifest {
        version: 1,
        storage: escape(storage),
        created: now.to_string(),
        items: movable
            .iter()
            .map(|i| ManifestItem {
                path: escape(&i.rel),
                kind: i.kind.to_string(),
                bytes: i.bytes,
            })
            .collect(),
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Output(e.into()))?;
    write_synced(&dir, MANIFEST, &text)
        .map_err(|e| FsError::new("write", &dir_shown.join(MANIFEST), e))?;
    let mut out = Moved {
        name,
        dir: dir_shown.clone(),
        ..Moved::default()
    };
    for item in items {
        if item.mount_point {
            out.not_moved.push(NotMoved {
                path: item.on_disk.clone(),
                why: "a mount point: unmount it first".into(),
            });
            continue;
        }
        match move_one(
            storage_fd.as_fd(),
            dir.as_fd(),
            &item.rel,
            Some(item.identity),
        ) {
            Ok(()) => {
                out.moved.push(item.on_disk.clone());
                crate::recover::restore::failpoint("stray-moved");
            }
            Err(why) => out.not_moved.push(NotMoved {
                path: item.on_disk.clone(),
                why,
            }),
        }
    }
    if out.moved.is_empty() {
        // Nothing went in: the quarantine is only what this run made; take it away.
        let _ = rustix::fs::unlinkat(&dir, MANIFEST, AtFlags::empty());
        let _ = rustix::fs::unlinkat(&root, out.name.as_str(), AtFlags::REMOVEDIR);
        let _ = rustix::fs::unlinkat(storage_fd, QUARANTINE_DIR, AtFlags::REMOVEDIR);
    }
    rustix::fs::syncfs(storage_fd).map_err(|e| FsError::new("sync", shown, e.into()))?;
    Ok(out)
}

/// Renames `rel` from below `from` to the same place below `to`, making `to`'s missing
/// directories. With `identity`, only if it is still that inode on that mount.
fn move_one(
    from: BorrowedFd,
    to: BorrowedFd,
    rel: &Path,
    identity: Option<(u64, u64)>,
) -> Result<(), String> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err("not a plain relative path".into());
    };
    let words = |e: io::Error| crate::error::describe(&e);
    let src = open_path(from, parent, false).map_err(|e| match e.raw_os_error() {
        Some(n) if n == Errno::NOENT.raw_os_error() => "its directory is gone".to_string(),
        Some(n) if n == Errno::LOOP.raw_os_error() || n == Errno::XDEV.raw_os_error() => {
            "its directory is now a symlink or a mount; not followed".to_string()
        }
        _ => words(e),
    })?;
    if let Some(identity) = identity {
        match statx_at(src.as_fd(), name) {
            Ok(st) if (st.stx_ino, st.stx_mnt_id) == identity => {}
            Ok(_) => return Err("it was replaced since it was looked at; left alone".into()),
            Err(e) => return Err(words(e)),
        }
    }
    let dst = open_path(to, parent, true).map_err(words)?;
    rustix::fs::renameat_with(&src, name, &dst, name, RenameFlags::NOREPLACE).map_err(|e| {
        // The directories just made for it are left empty: take them away again (what
        // is not empty, another item's, stays).
        let mut dir = Some(parent);
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            let (up, leaf) = (d.parent().unwrap_or(Path::new("")), d.file_name());
            let removed = leaf.is_some_and(|leaf| {
                open_path(to, up, false)
                    .is_ok_and(|p| rustix::fs::unlinkat(&p, leaf, AtFlags::REMOVEDIR).is_ok())
            });
            if !removed {
                break;
            }
            dir = Some(up);
        }
        match e {
            Errno::EXIST => "something of that name is already there; left alone".to_string(),
            Errno::XDEV => "it is inside a subvolume or filesystem of its own below the storage, which a rename cannot leave; move it yourself".to_string(),
            Errno::BUSY => "it is in use as a mount point".to_string(),
            e => words(e.into()),
        }
    })
}

fn write_synced(dir: &OwnedFd, name: &str, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = format!(".{name}.tmp");
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    file.sync_all()?;
    rustix::fs::renameat(dir, tmp.as_str(), dir, name)?;
    rustix::fs::fsync(dir)?;
    Ok(())
}

/// A quarantine's name as `stray --restore` takes it: one plain name.
pub fn given_name(raw: &str) -> Result<&str, String> {
    let plain =
        !raw.is_empty() && raw != "." && raw != ".." && !raw.contains('/') && !raw.contains('\0');
    if plain {
        Ok(raw)
    } else {
        Err(format!(
            "--restore {raw:?}: not a quarantine's name (a plain name in {QUARANTINE_DIR})"
        ))
    }
}

/// Puts back what the quarantine `name` of one storage holds; `None` when that storage has
/// no quarantine of that name. What cannot go back (its place taken, its directory gone)
/// stays in the quarantine, and so does the manifest then; once all is back, the
/// quarantine's own directories and manifest are removed.
pub fn put_back(storage_fd: &OwnedFd, shown: &Path, name: &str) -> Result<Option<Moved>, Error> {
    let Some(root) = quarantine_root(storage_fd, shown, false)? else {
        return Ok(None);
    };
    let dir_shown = shown.join(QUARANTINE_DIR).join(name);
    let dir = match open_path(root.as_fd(), Path::new(name), false) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => return Ok(None),
        Err(e) => return Err(FsError::new("open", &dir_shown, e).into()),
    };
    let manifest_shown = dir_shown.join(MANIFEST);
    let text = match rustix::fs::openat(
        &dir,
        MANIFEST,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => crate::beneath::read_regular(std::fs::File::from(fd), MANIFEST_MAX)
            .map_err(|e| FsError::new("read", &manifest_shown, e))?,
        // The manifest takes its name before the first rename: without it, a run killed
        // that early moved nothing, and left at most the manifest it was writing.
        Err(Errno::NOENT)
            if names(&dir).is_ok_and(|n| n.iter().all(|n| *n == *format!(".{MANIFEST}.tmp"))) =>
        {
            let _ = rustix::fs::unlinkat(&dir, format!(".{MANIFEST}.tmp"), AtFlags::empty());
            let _ = rustix::fs::unlinkat(&root, name, AtFlags::REMOVEDIR);
            let _ = rustix::fs::unlinkat(storage_fd, QUARANTINE_DIR, AtFlags::REMOVEDIR);
            return Ok(Some(Moved {
                name: name.to_string(),
                dir: dir_shown,
                ..Moved::default()
            }));
        }
        Err(e) => return Err(FsError::new("read", &manifest_shown, e.into()).into()),
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        Error::Usage(format!(
            "{}: not a manifest imperm wrote: {e}",
            escape(&manifest_shown)
        ))
    })?;
    let mut rels = Vec::new();
    for item in &manifest.items {
        let rel = crate::paths::unescape(&item.path)
            .filter(|p| {
                !p.as_os_str().is_empty()
                    && p.components().all(|c| matches!(c, Component::Normal(_)))
            })
            .ok_or_else(|| {
                Error::Usage(format!(
                    "{}: {:?} is not a path inside the storage",
                    escape(&manifest_shown),
                    item.path
                ))
            })?;
        rels.push(rel);
    }
    let mut out = Moved {
        name: name.to_string(),
        dir: dir_shown.clone(),
        ..Moved::default()
    };
    for rel in &rels {
        let (parent, file) = (
            rel.parent().unwrap_or(Path::new("")),
            rel.file_name().expect("checked"),
        );
        let in_quarantine = open_path(dir.as_fd(), parent, false)
            .ok()
            .is_some_and(|p| statx_at(p.as_fd(), file).is_ok());
        if !in_quarantine {
            // Never moved (a run killed before it got there), or put back already.
            continue;
        }
        match move_one(dir.as_fd(), storage_fd.as_fd(), rel, None) {
            Ok(()) => out.moved.push(shown.join(rel)),
            Err(why) => out.not_moved.push(NotMoved {
                path: shown.join(rel),
                why,
            }),
        }
    }
    rustix::fs::syncfs(storage_fd).map_err(|e| FsError::new("sync", shown, e.into()))?;
    if out.not_moved.is_empty() {
        // Only what the quarantine made: its empty directories, deepest first, and the
        // manifest. Anything else found there stays, and so does its directory.
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        for rel in &rels {
            let mut p = rel.parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(d.to_path_buf());
                p = d.parent();
            }
        }
        for d in dirs.iter().rev() {
            if let (Some(parent), Some(leaf)) = (d.parent(), d.file_name()) {
                if let Ok(p) = open_path(dir.as_fd(), parent, false) {
                    let _ = rustix::fs::unlinkat(&p, leaf, AtFlags::REMOVEDIR);
                }
            }
        }
        let _ = rustix::fs::unlinkat(&dir, MANIFEST, AtFlags::empty());
        let _ = rustix::fs::unlinkat(&root, name, AtFlags::REMOVEDIR);
        let _ = rustix::fs::unlinkat(storage_fd, QUARANTINE_DIR, AtFlags::REMOVEDIR);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persisted::{Entry, Kind};

    fn set(entries: &[(&str, Kind, &str)]) -> PersistedSet {
        PersistedSet::new(
            entries
                .iter()
                .map(|(p, k, s)| Entry::new(*p, *k, *s))
                .collect(),
        )
    }

    #[test]
    fn verdicts() {
        use Kind::{Directory as D, File as F};
        let s = set(&[
            ("/var/lib/nixos", D, "/persist"),
            ("/var/lib", D, "/big"),
            ("/var/lib/big/db", D, "/persist"),
            ("/etc/machine-id", F, "/persist"),
            ("/home/alice/.ssh", D, "/persist"),
            ("/srv", D, "/persist/nested"),
        ]);
        let p = Path::new("/persist");
        let big = Path::new("/big");
        let stray = |w| Verdict::Stray(w);
        let shadowed = |s: &str| stray(Why::Shadowed(PathBuf::from(s)));
        let cases: &[(&Path, &str, bool, Verdict)] = &[
            (p, "/var", true, Verdict::Descend),
            (p, "/var/lib", true, Verdict::Descend),
            (p, "/var/lib/nixos", true, Verdict::Covered),
            (p, "/var/lib/nixos/uid-map", false, Verdict::Covered),
            // Declared, but from /big: this copy is hidden by /big's mount of /var/lib.
            (p, "/var/lib/headscale", true, shadowed("/big")),
            (p, "/var/lib/old.db", false, shadowed("/big")),
            (p, "/var/log", true, stray(Why::Undeclared)),
            (p, "/etc", true, Verdict::Descend),
            (p, "/etc/machine-id", false, Verdict::Covered),
            (p, "/etc/ssh", true, stray(Why::Undeclared)),
            // A file where a directory is declared below it is no parent: stray.
            (p, "/home", false, stray(Why::Undeclared)),
            (p, "/home", true, Verdict::Descend),
            (p, "/home/bob", true, stray(Why::Undeclared)),
            // Another storage inside this one is its own.
            (p, "/nested", true, Verdict::Covered),
            (big, "/var/lib", true, Verdict::Descend),
            (big, "/var/lib/headscale", true, Verdict::Covered),
            (big, "/var/lib/nixos", true, shadowed("/persist")),
            (big, "/var/lib/big", true, Verdict::Descend),
            (big, "/var/lib/big/db", true, shadowed("/persist")),
            (big, "/var/lib/big/other", true, Verdict::Covered),
            // `/var/lib` declared does not cover `/var/lib2`.
            (big, "/var/lib2", true, stray(Why::Undeclared)),
        ];
        let storages = s.storages();
        for (storage, path, dir, want) in cases {
            assert_eq!(
                &judge(&s, storage, &storages, Path::new(path), *dir),
                want,
                "{} in {}",
                path,
                storage.display()
            );
        }
    }

    #[test]
    fn quarantine_names_are_plain() {
        assert!(given_name("20261126T093000Z").is_ok());
        assert!(given_name("20261126T093000Z-1").is_ok());
        for bad in ["", ".", "..", "../x", "a/b", "a\0b"] {
            assert!(given_name(bad).is_err(), "{bad:?}");
        }
    }
}
