//! Old roots at hand: an old-root snapshot mounted read-only where a user can look at it
//! with their own tools (`snapshots mount`), and unmounted again (`snapshots umount`).
//!
//! The snapshot's directory is cloned from the top level (mounted privately, or given with
//! `--mounted`) as a detached mount (`open_tree(OPEN_TREE_CLONE)`), made read-only,
//! nosuid, nodev and noexec before it is attached anywhere (`mount_setattr`), then attached
//! in the mount namespace imperm started in (`move_mount`), onto the directory that was
//! checked, through its descriptor. This is one way for btrfs and bcachefs alike (bcachefs
//! has no `subvol=` option); on btrfs the result is what `mount -o subvol=…` gives: the
//! mount table shows the snapshot's path as the mount's root. It is never writable, not
//! even for a moment.
//!
//! Only what is a mount of a snapshot of this filesystem (its device, and a root one name
//! below the snapshot directory) is ever unmounted.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use rustix::fs::{AtFlags, Mode, OFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;
use serde::Serialize;

use crate::config::FilesystemConfig;
use crate::error::{Error, FsError};
use crate::filesystem::backend;
use crate::filesystem::toplevel::{self, TopLevel};
use crate::mountinfo::Mount;
use crate::paths::{escape, under_root};

/// Where old roots are mounted unless a directory is given: `OLD_ROOTS/NAME`.
pub const OLD_ROOTS: &str = "/run/imperm/old-roots";
/// The directories imperm makes (0700) when they are missing, above `OLD_ROOTS/NAME`.
const OWN_DIR: &str = "/run/imperm";

/// Where the snapshots are, and how the command was asked to reach them.
#[derive(Clone, Copy, Debug)]
pub struct OldRoots<'a> {
    pub fs: &'a FilesystemConfig,
    /// `--mounted DIR`: the top level is already mounted there.
    pub mounted: Option<&'a Path>,
    /// `--root DIR`: the tree paths are seen from (`/` for the host).
    pub root: &'a Path,
    /// What "now" is, for the last reset's snapshot (newest not in the future).
    pub now: Timestamp,
}

/// An old root mounted (or found already mounted) read-only.
#[derive(Clone, Debug, Serialize)]
pub struct Mounted {
    /// The snapshot, as `snapshots ls` prints it.
    pub name: String,
    /// Where it is mounted, as seen from the tree's `/` (the host's, without `--root`).
    #[serde(serialize_with = "crate::paths::json")]
    pub mount_point: PathBuf,
    /// Where that is on this machine (`--root` joined), for the caller to look into.
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    /// It was mounted there already: nothing was done.
    pub already_mounted: bool,
    /// The mount's root, open (`O_PATH`): the way in for a process that mounted a top
    /// level privately before, whose mount namespace is a copy that never gets this mount
    /// (`path` shows it an empty directory there); `openat` below it, or the path
    /// `/proc/self/fd/N/…`, reach the old root from any namespace. While it is held the
    /// mount is in use: drop it before unmounting.
    #[serde(skip)]
    pub root: std::sync::Arc<OwnedFd>,
}

/// What `umount` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Unmounting {
    pub unmounted: Vec<Unmounted>,
    /// Old roots that are in use (a process has a file open or its working directory in
    /// one): not unmounted.
    pub busy: Vec<Unmounted>,
    /// Mounts under the old-roots directory that are not old roots of this filesystem:
    /// never unmounted.
    pub left_alone: Vec<LeftAlone>,
    /// A place given (or a name's place) where nothing is mounted: nothing to do.
    #[serde(serialize_with = "crate::paths::json_all")]
    pub not_mounted: Vec<PathBuf>,
}

/// One old root unmounted (or busy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unmounted {
    pub name: String,
    #[serde(serialize_with = "crate::paths::json")]
    pub mount_point: PathBuf,
    /// Detached while in use (`--lazy`): gone from the mount table, the filesystem stays
    /// in use until the last file in it is closed.
    pub lazy: bool,
    /// Its directory under the old-roots directory was removed (empty once unmounted).
    pub removed_dir: bool,
    /// Mounts inside it (someone's, on a directory of the old root): it is not
    /// unmounted, not even with `--lazy`, which would detach them along with it.
    #[serde(serialize_with = "crate::paths::json_all")]
    pub mounts_inside: Vec<PathBuf>,
}

/// A mount under the old-roots directory that is not imperm's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeftAlone {
    #[serde(serialize_with = "crate::paths::json")]
    pub mount_point: PathBuf,
    /// What is mounted there: type, source and the path inside it.
    pub what: String,
}

/// Mounts old-root snapshot `name` (as `snapshots ls` prints it; default: the last
/// reset's) read-only, nosuid, nodev, noexec at `dir` (as seen from the tree's `/`;
/// default: `/run/imperm/old-roots/NAME`), in the mount namespace this process started
/// in, so that every process sees it. Already mounted there: `already_mounted`, nothing
/// done. Refused (an error, nothing done): a tmpfs root, a name that is not a snapshot,
/// a `dir` that is a symlink (or has one on its way), is not empty, or has something
/// else mounted on it. A missing `dir` is made (0700), with its parents below
/// `/run/imperm`.
///
/// Needs root. A process that mounted a top level privately before (whose namespace is a
/// copy that never gets this mount) looks at the old root through `Mounted::root`.
pub fn mount_old_root(
    at: &OldRoots,
    name: Option<&str>,
    dir: Option<&Path>,
) -> Result<Mounted, Error> {
    let backend = backend::for_type(at.fs.fs_type);
    if !backend.has_subvolumes() {
        return Err(no_snapshots(at.fs));
    }
    // What can be refused without the filesystem is, before it is mounted.
    if let Some(name) = name {
        crate::snapshots::snapshot::given_name(name)
            .map_err(|why| Error::Usage(format!("{why} in {}", escape(&at.fs.snapshot_dir))))?;
    }
    let given = dir.map(given_dir).transpose()?;
    let top = TopLevel::open(at.fs, at.mounted)?;
    let (name, rel) =
        crate::snapshots::snapshot::old_root(backend.as_ref(), &top, at.fs, name, at.now)?;
    let os_name = crate::snapshots::snapshot::given_name(&name).map_err(Error::Usage)?;
    let mount_point = given.unwrap_or_else(|| Path::new(OLD_ROOTS).join(&os_name));
    let path = under_root(at.root, &mount_point);
    let device = device(&top)?;
    let inside = Path::new("/").join(&rel);
    let tree = clone_readonly(&top, &rel)?;
    // The private top level is not needed any more: the clone holds the filesystem.
    drop(top);
    let own = under_root(at.root, Path::new(OWN_DIR));
    let (already, root) =
        toplevel::in_host_namespace(|| attach(tree, &path, &own, device, &inside))
            .map_err(|e| FsError::new("enter the first mount namespace for", &path, e))??;
    Ok(Mounted {
        name,
        mount_point,
        path,
        already_mounted: already,
        root: std::sync::Arc::new(root),
    })
}

/// Unmounts old roots: `target` a directory (with a `/` in it) where one is mounted, or a
/// snapshot's name, for its place under `/run/imperm/old-roots`; `None` for every old root
/// mounted there. Only a mount of a snapshot of this filesystem is unmounted; at a place
/// given, anything else mounted there is an error (nothing done); found under the
/// old-roots directory, it is left alone and reported. A busy old root is reported, not
/// unmounted, unless `lazy` (detached: gone from the mount table at once, the filesystem
/// freed when the last file in it is closed). Directories under the old-roots directory
/// are removed once empty.
pub fn umount_old_roots(
    at: &OldRoots,
    target: Option<&OsStr>,
    lazy: bool,
) -> Result<Unmounting, Error> {
    let backend = backend::for_type(at.fs.fs_type);
    if !backend.has_subvolumes() {
        return Err(no_snapshots(at.fs));
    }
    let place = match target {
        None => None,
        Some(raw) if raw.as_bytes().contains(&b'/') => Some(given_dir(Path::new(raw))?),
        Some(raw) => {
            let text = raw.to_str().ok_or_else(|| {
                Error::Usage(format!(
                    "{}: a snapshot's name is given as `snapshots ls` prints it; a directory with a `/` in it",
                    escape(Path::new(raw))
                ))
            })?;
            let name = crate::snapshots::snapshot::given_name(text).map_err(Error::Usage)?;
            Some(Path::new(OLD_ROOTS).join(name))
        }
    };
    let top = TopLevel::open(at.fs, at.mounted)?;
    let device = device(&top)?;
    drop(top);
    let snapshot_dir = Path::new("/").join(&at.fs.snapshot_dir);
    let old_roots = under_root(at.root, Path::new(OLD_ROOTS));
    let job = Unmount {
        device,
        snapshot_dir: &snapshot_dir,
        old_roots: &old_roots,
        root: at.root,
        lazy,
    };
    toplevel::in_host_namespace(|| job.run(place.as_deref()))
        .map_err(|e| FsError::new("enter the first mount namespace for", &old_roots, e))?
}

/// `dir` as given, absolute (a relative one from the working directory) and normalised;
/// `..` is refused (it names a different directory than a symlink-following kernel would).
fn given_dir(dir: &Path) -> Result<PathBuf, Error> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| FsError::new("read the working directory for", dir, e))?
            .join(dir)
    };
    crate::paths::normalize_given(abs.as_os_str())
        .map_err(|why| Error::Usage(format!("{}: {why}; nothing was done", escape(dir))))
}

fn no_snapshots(fs: &FilesystemConfig) -> Error {
    Error::Usage(format!(
        "a {} root has no old-root snapshots (nothing is kept across boots); nothing was done",
        fs.fs_type.as_str()
    ))
}

fn device(top: &TopLevel) -> Result<(u32, u32), Error> {
    top.device().ok_or_else(|| {
        Error::Usage(format!(
            "{}: not found in the mount table, so its mounts cannot be told apart; nothing was done",
            top.name(Path::new(""))
        ))
    })
}

/// `struct mount_attr` (linux/mount.h), for `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// The snapshot at `rel` as a detached mount, read-only, nosuid, nodev and noexec.
fn clone_readonly(top: &TopLevel, rel: &Path) -> Result<OwnedFd, Error> {
    use rustix::mount::OpenTreeFlags;
    let fail = |op: &str, e: io::Error| top.locate(FsError::new(op, rel, e).into());
    let dir = top
        .open_dir(rel)
        .map_err(|e| fail("open the snapshot", e))?;
    let tree = rustix::mount::open_tree(
        &dir,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| fail("clone a mount of", e.into()))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the arguments are a descriptor we own, an empty C string, and a pointer to
    // a `struct mount_attr` with its size, which the kernel only reads.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(fail(
            "make read-only a mount of",
            io::Error::last_os_error(),
        ));
    }
    Ok(tree)
}

/// Attaches `tree` (a mount of `inside` of filesystem `device`) at `path`, in this
/// thread's mount namespace; `true` when that is mounted there already; and the mount's
/// root, open. Everything is
/// checked before anything is made; a directory made here is removed again when the
/// mount fails.
fn attach(
    tree: OwnedFd,
    path: &Path,
    own: &Path,
    device: (u32, u32),
    inside: &Path,
) -> Result<(bool, OwnedFd), Error> {
    let Target {
        dir,
        made,
        _lock: _held,
    } = open_target(path, own)?;
    let undo = |e: Error| {
        for (parent, name) in made.iter().rev() {
            let _ = rustix::fs::unlinkat(parent, name.as_os_str(), AtFlags::REMOVEDIR);
        }
        e
    };
    let fs_err = |op: &str, e: io::Error| Error::from(FsError::new(op, path, e));
    let st = rustix::fs::statx(&dir, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
        .map_err(|e| undo(fs_err("inspect", e.into())))?;
    if !st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        || st.stx_mask & StatxFlags::MNT_ID.bits() == 0
    {
        return Err(undo(Error::Usage(format!(
            "{}: the kernel does not say where mounts begin (statx, Linux 5.8); nothing was done",
            escape(path)
        ))));
    }
    if st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT) {
        let table = crate::mountinfo::own().map_err(|e| fs_err("read the mount table for", e))?;
        let there = table.mounts.iter().find(|m| m.id == st.stx_mnt_id);
        if let Some(m) = there {
            if m.device == device && m.root == inside {
                return Ok((true, dir));
            }
        }
        return Err(Error::Usage(format!(
            "{}: {} is mounted there; nothing was done",
            escape(path),
            there.map_or_else(|| "something".to_string(), describe)
        )));
    }
    if !is_empty(&dir).map_err(|e| undo(fs_err("list", e)))? {
        return Err(Error::Usage(format!(
            "{}: is not empty (an old root is mounted on an empty directory); nothing was done",
            escape(path)
        )));
    }
    crate::snapshots::reset::failpoint("mount-checked", &mut |line| eprintln!("imperm: {line}"));
    use rustix::mount::MoveMountFlags;
    rustix::mount::move_mount(
        &tree,
        "",
        &dir,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| undo(fs_err("mount the old root at", e.into())))?;
    // Attached, the clone's descriptor is the mount's root.
    Ok((false, tree))
}

/// What a mount is, for a message: `tmpfs "none" (/)`.
fn describe(m: &Mount) -> String {
    format!(
        "{} {} ({})",
        m.fs_type,
        crate::paths::quoted(Path::new(&m.source)),
        escape(&m.root)
    )
}

fn is_empty(dir: &OwnedFd) -> io::Result<bool> {
    let mut entries = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Opens directory `path` one name at a time from `/`, never following a symlink (one on
/// the way, or `path` itself, is an error naming it). Missing directories are made, 0700:
/// `path` itself, and `own` (`/run/imperm` on this machine) and any below it. The parent
/// of `path` stays locked while the result is held.
fn open_target(path: &Path, own: &Path) -> Result<Target, Error> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open("/", dir_flags, Mode::empty())
        .map_err(|e| FsError::new("open", Path::new("/"), e.into()))?;
    let mut made = Vec::new();
    let mut lock = None;
    let mut at = PathBuf::from("/");
    let names: Vec<&OsStr> = path.strip_prefix("/").unwrap_or(path).iter().collect();
    for (i, name) in names.iter().enumerate() {
        at.push(name);
        let last = i + 1 == names.len();
        if last {
            lock = Some(lock_dir(&dir, &at, path)?);
        }
        let next = match rustix::fs::openat(&dir, *name, dir_flags, Mode::empty()) {
            Err(Errno::NOENT) if last || at.starts_with(own) => {
                match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => made.push((dup(&dir, &at)?, name.to_os_string())),
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(FsError::new("create", &at, e.into()).into()),
                }
                rustix::fs::openat(&dir, *name, dir_flags, Mode::empty())
            }
            other => other,
        };
        dir = next.map_err(|e| not_a_directory(&at, path, e))?;
    }
    Ok(Target {
        dir,
        made,
        _lock: lock,
    })
}

/// A directory to mount on, opened by [`open_target`].
struct Target {
    dir: OwnedFd,
    /// What was made on the way to it, each as its parent and name, in order.
    made: Vec<(OwnedFd, OsString)>,
    /// Its parent, locked until the mount is made.
    _lock: Option<OwnedFd>,
}

/// Locks directory `dir` (the parent of `path`), so that two imperm mounting at `path`
/// at once do not both find it empty and mount twice, one on the other: the second one
/// opens `path` after the first has mounted on it, and finds that mounted. Waits a few
/// seconds at most: a lock held longer is not an imperm mounting.
fn lock_dir(dir: &OwnedFd, at: &Path, path: &Path) -> Result<OwnedFd, Error> {
    use rustix::fs::FlockOperation;
    let held = dup(dir, at)?;
    for _ in 0..100 {
        match rustix::fs::flock(&held, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(held),
            Err(Errno::WOULDBLOCK) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(e) => return Err(FsError::new("lock", at, e.into()).into()),
        }
    }
    Err(Error::Usage(format!(
        "{}: another process holds the lock on {} (another imperm mounting there?); nothing was done",
        escape(path),
        escape(at.parent().unwrap_or(at))
    )))
}

fn dup(dir: &OwnedFd, at: &Path) -> Result<OwnedFd, Error> {
    rustix::io::fcntl_dupfd_cloexec(dir, 0)
        .map_err(|e| FsError::new("hold the parent of", at, e.into()).into())
}

/// Why `at` (on the way to `path`) could not be opened as a directory.
fn not_a_directory(at: &Path, path: &Path, e: Errno) -> Error {
    let what = match rustix::fs::lstat(at) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink =>
        {
            "is a symlink, which is never followed".to_string()
        }
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                != rustix::fs::FileType::Directory =>
        {
            "is not a directory".to_string()
        }
        _ => return FsError::new("open", at, e.into()).into(),
    };
    if at == path {
        Error::Usage(format!("{}: {what}; nothing was done", escape(at)))
    } else {
        Error::Usage(format!(
            "{}: {} on the way {what}; nothing was done",
            escape(path),
            escape(at)
        ))
    }
}

/// `umount`'s work, in the namespace the old roots are mounted in.
struct Unmount<'a> {
    device: (u32, u32),
    /// `/` and the snapshot directory: an old root's mount shows `SNAPSHOT_DIR/NAME`.
    snapshot_dir: &'a Path,
    /// The old-roots directory on this machine (`--root` joined).
    old_roots: &'a Path,
    root: &'a Path,
    lazy: bool,
}

impl Unmount<'_> {
    /// The snapshot's name when `m` is an old root: a mount of this filesystem showing one
    /// name below the snapshot directory.
    fn old_root(&self, m: &Mount) -> Option<String> {
        (m.device == self.device && m.root.parent() == Some(self.snapshot_dir))
            .then(|| m.root.file_name().map(|n| escape(Path::new(n))))
            .flatten()
    }

    /// The path as seen from the tree's `/`.
    fn seen(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(self.root) {
            Ok(rel) if self.root != Path::new("/") => Path::new("/").join(rel),
            _ => path.to_path_buf(),
        }
    }

    fn run(&self, place: Option<&Path>) -> Result<Unmounting, Error> {
        let table = crate::mountinfo::own()
            .map_err(|e| FsError::new("read the mount table for", self.old_roots, e))?;
        let mut out = Unmounting::default();
        // The mount last in the table at a mount point is the one on top there.
        let top_at = |point: &Path| table.mounts.iter().rev().find(|m| m.mount_point == point);
        let places: Vec<PathBuf> = match place {
            Some(p) => {
                let path = under_root(self.root, p);
                match top_at(&path) {
                    None => {
                        out.not_mounted.push(p.to_path_buf());
                        return Ok(out);
                    }
                    Some(m) if self.old_root(m).is_none() => {
                        return Err(Error::Usage(format!(
                            "{}: {} is mounted there, not an old root of this filesystem; nothing was done",
                            escape(p),
                            describe(m)
                        )));
                    }
                    Some(_) => vec![path],
                }
            }
            None => {
                let mut points: Vec<PathBuf> = table
                    .mounts
                    .iter()
                    .filter(|m| {
                        m.mount_point.starts_with(self.old_roots) && m.mount_point != self.old_roots
                    })
                    .map(|m| m.mount_point.clone())
                    .collect();
                // Deepest first: what is mounted inside an old root goes (or stays) first.
                points.sort_by(|a, b| b.cmp(a));
                points.dedup();
                points
            }
        };
        for path in places {
            let Some(m) = top_at(&path) else { continue };
            let seen = self.seen(&path);
            let Some(name) = self.old_root(m) else {
                out.left_alone.push(LeftAlone {
                    mount_point: seen,
                    what: describe(m),
                });
                continue;
            };
            let mut row = Unmounted {
                name,
                mount_point: seen,
                lazy: self.lazy,
                removed_dir: false,
                mounts_inside: table
                    .mounts
                    .iter()
                    .filter(|inner| inner.parent == m.id)
                    .map(|inner| self.seen(&inner.mount_point))
                    .collect(),
            };
            if !row.mounts_inside.is_empty() {
                row.lazy = false;
                out.busy.push(row);
                continue;
            }
            // The one on top now must still be the one judged: a mount made meanwhile
            // on top of it is someone else's.
            let now_on_top = rustix::fs::statx(
                rustix::fs::CWD,
                &path,
                AtFlags::SYMLINK_NOFOLLOW,
                StatxFlags::MNT_ID,
            )
            .map(|st| st.stx_mnt_id);
            if now_on_top != Ok(m.id) {
                out.left_alone.push(LeftAlone {
                    mount_point: row.mount_point,
                    what: "a mount made while imperm looked".into(),
                });
                continue;
            }
            let mut flags = rustix::mount::UnmountFlags::NOFOLLOW;
            if self.lazy {
                flags |= rustix::mount::UnmountFlags::DETACH;
            }
            match rustix::mount::unmount(&path, flags) {
                Ok(()) => {}
                Err(Errno::BUSY) => {
                    out.busy.push(row);
                    continue;
                }
                Err(e) => return Err(FsError::new("unmount", &path, e.into()).into()),
            }
            if path.starts_with(self.old_roots) && path != self.old_roots {
                // rmdir: only an empty directory, never a symlink; a failure leaves it.
                row.removed_dir = std::fs::remove_dir(&path).is_ok();
            }
            out.unmounted.push(row);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(device: (u32, u32), root: &str, at: &str) -> Mount {
        Mount {
            id: 1,
            parent: 0,
            device,
            root: root.into(),
            mount_point: at.into(),
            fs_type: "btrfs".into(),
            source: "/dev/sda2".into(),
            options: "ro".into(),
        }
    }

    #[test]
    fn only_a_snapshot_of_this_filesystem_is_an_old_root() {
        let job = Unmount {
            device: (0, 42),
            snapshot_dir: Path::new("/@snapshots"),
            old_roots: Path::new("/run/imperm/old-roots"),
            root: Path::new("/"),
            lazy: false,
        };
        let at = "/run/imperm/old-roots/x";
        assert_eq!(
            job.old_root(&mount((0, 42), "/@snapshots/20260115T063000Z", at)),
            Some("20260115T063000Z".into())
        );
        assert_eq!(
            job.old_root(&mount((0, 42), "/@snapshots/odd\nname", at)),
            Some("odd\\x0aname".into())
        );
        for (device, root) in [
            ((0, 43), "/@snapshots/20260115T063000Z"),
            ((0, 42), "/@snapshots"),
            ((0, 42), "/@snapshots/20260115T063000Z/etc"),
            ((0, 42), "/@root"),
            ((0, 42), "/"),
        ] {
            assert_eq!(job.old_root(&mount(device, root, at)), None, "{root}");
        }
    }
}
