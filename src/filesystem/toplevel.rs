//! Access to a filesystem's top level (where the root subvolume and the snapshot directory
//! live): mounted by imperm in a private mount namespace for the duration of one command,
//! or given with `--mounted DIR`; and the lock that serialises `reset` and `gc`.
//!
//! Every path below the top level is resolved with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)`, so no operation can follow a symlink or a mount
//! out of the tree it works on.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, ResolveFlags};

use crate::config::{FilesystemConfig, FsType};
use crate::error::{Error, FsError};
use crate::paths::escape;

/// What a path below the top level is, without following a symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Missing,
    Directory,
    Symlink,
    Other,
}

/// An open top level.
pub struct TopLevel {
    path: PathBuf,
    dir: OwnedFd,
    // Dropped after `dir`: unmounts and removes the temporary mount point.
    mount: Option<PrivateMount>,
}

impl std::fmt::Debug for TopLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopLevel")
            .field("path", &self.path)
            .finish()
    }
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

impl TopLevel {
    /// Uses `mounted` when given, else mounts the configured device privately.
    /// Every check happens before anything is mounted.
    ///
    /// `mounted` must be the filesystem's top level, where the root subvolume and the
    /// snapshot directory are named from: a subvolume mounted on its own (`subvol=@persist`)
    /// or a directory inside the top level would have a reset create a root inside it, and
    /// `ls` or `gc` answer about a snapshot directory that is not the one. Anything else is
    /// refused, before anything is done.
    pub fn open(fs: &FilesystemConfig, mounted: Option<&Path>) -> Result<TopLevel, Error> {
        match mounted {
            Some(dir) => {
                let top = TopLevel::existing(dir)?;
                crate::filesystem::backend::for_type(fs.fs_type)
                    .check_top_level(&top)
                    .map_err(|why| {
                        Error::Usage(format!(
                            "--mounted {}: {why}; nothing was done",
                            escape(dir)
                        ))
                    })?;
                Ok(top)
            }
            None => TopLevel::mount_private(fs),
        }
    }

    /// A top level that is already mounted at `dir`, taken as it is (the library's own
    /// callers and tests; commands go through [`TopLevel::open`], which checks it).
    pub fn existing(dir: &Path) -> Result<TopLevel, Error> {
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::new("open the top level", dir, e.into()))?;
        Ok(TopLevel {
            path: dir.to_path_buf(),
            dir: fd,
            mount: None,
        })
    }

    fn mount_private(fs: &FilesystemConfig) -> Result<TopLevel, Error> {
        let device = fs.device.as_deref().ok_or_else(|| {
            Error::Usage(
                "no device: set [filesystem] device, pass --device, or pass --mounted DIR".into(),
            )
        })?;
        check_devices(device)?;
        let mount = PrivateMount::new(fs.fs_type, device)?;
        let mut top = TopLevel::existing(&mount.dir)?;
        top.mount = Some(mount);
        Ok(top)
    }

    /// Where the top level is mounted, for the few callers that need a path rather than a
    /// descriptor. Messages use [`TopLevel::name`] instead: a mount point imperm made is gone
    /// when they are read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` as the user knows it: `DIR/rel` for a top level given with `--mounted DIR`,
    /// `rel on DEVICE` for one imperm mounted itself.
    pub fn name(&self, rel: &Path) -> String {
        match &self.mount {
            None => escape(&self.path.join(rel)).to_string(),
            Some(m) => on_device(rel, &m.device),
        }
    }

    /// An error with every path below the top level named as [`TopLevel::name`] does:
    /// backends report paths relative to the top level, a few callers absolute ones.
    pub fn locate(&self, e: Error) -> Error {
        match e {
            Error::Fs(mut f) => {
                let rel = if f.path.is_relative() {
                    Some(f.path.clone())
                } else {
                    f.path.strip_prefix(&self.path).ok().map(Path::to_path_buf)
                };
                if let Some(rel) = rel {
                    f.path = PathBuf::from(self.name(&rel));
                }
                Error::Fs(f)
            }
            Error::Usage(text) => match &self.mount {
                Some(m) => Error::Usage(rename_mount_point(&text, &m.dir, &m.device)),
                None => Error::Usage(text),
            },
            other => other,
        }
    }

    pub fn dir(&self) -> &OwnedFd {
        &self.dir
    }

    /// The absolute path of `rel`.
    pub fn join(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// Every mount of this filesystem in this process's mount table, as (the path inside
    /// the filesystem it shows, where it is mounted). The top level's own mount is found
    /// by its mount id, and the others by its device number, which every mount of one
    /// filesystem shares. Empty when the mount table cannot be read.
    pub fn mounts(&self) -> Vec<(PathBuf, PathBuf)> {
        let Ok(Some(table)) = crate::mountinfo::read(Path::new("/")) else {
            return Vec::new();
        };
        let Some(device) = self.device_in(&table) else {
            return Vec::new();
        };
        table
            .mounts
            .iter()
            .filter(|m| m.device == device)
            .map(|m| (m.root.clone(), m.mount_point.clone()))
            .collect()
    }

    /// The filesystem's `major:minor` as mount tables show it (every mount of it shares
    /// this, bind mounts and `subvol=` mounts included; btrfs's `stat` gives each
    /// subvolume a device of its own, so this is not `st_dev`). `None` when this
    /// process's mount table cannot be read or does not hold the top level's mount.
    pub fn device(&self) -> Option<(u32, u32)> {
        let table = crate::mountinfo::own().ok()?;
        self.device_in(&table)
    }

    /// [`TopLevel::device`] in `table`: the top level's own mount found by its mount id,
    /// else by where it is mounted.
    fn device_in(&self, table: &crate::mountinfo::MountTable) -> Option<(u32, u32)> {
        let own = rustix::fs::statx(
            &self.dir,
            "",
            AtFlags::EMPTY_PATH,
            rustix::fs::StatxFlags::MNT_ID,
        )
        .ok()
        .filter(|st| st.stx_mask & rustix::fs::StatxFlags::MNT_ID.bits() != 0)
        .and_then(|st| table.mounts.iter().find(|m| m.id == st.stx_mnt_id))
        .or_else(|| {
            let path = std::fs::canonicalize(&self.path).ok()?;
            table.mounts.iter().rev().find(|m| m.mount_point == path)
        });
        own.map(|m| m.device)
    }

    /// What of its filesystem the mount whose root is the top level's directory shows:
    /// `/` for the whole filesystem, `/@persist` for a subvolume (or a directory) mounted on
    /// its own. An error says why that cannot be told: the directory is not the root of a
    /// mount (it is a directory inside one), or the mount table cannot be read.
    pub fn mount_shows(&self) -> Result<PathBuf, String> {
        use rustix::fs::{StatxAttributes, StatxFlags};
        let st = rustix::fs::statx(&self.dir, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
            .map_err(|e| format!("statx: {e}"))?;
        if !st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
            || st.stx_mask & StatxFlags::MNT_ID.bits() == 0
        {
            return Err(
                "the kernel does not say where mounts begin (statx, Linux 5.8), so it cannot be told to be the top level".into(),
            );
        }
        if !st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT) {
            return Err("is a directory inside a mounted filesystem, not where one is mounted, so not the filesystem's top level".into());
        }
        let table = match crate::mountinfo::read(Path::new("/")) {
            Ok(Some(table)) => table,
            Ok(None) => return Err("no mount table (/proc/self/mountinfo) to tell whether it is the filesystem's top level".into()),
            Err(e) => return Err(format!("the mount table cannot be read ({e}) to tell whether it is the filesystem's top level")),
        };
        table
            .mounts
            .iter()
            .find(|m| m.id == st.stx_mnt_id)
            .map(|m| m.root.clone())
            .ok_or_else(|| {
                "is not in the mount table, so it cannot be told to be the filesystem's top level"
                    .into()
            })
    }

    /// Takes the exclusive lock `reset` and `gc` share (held until the top level is
    /// dropped). Refuses instead of waiting: at boot a stuck lock must not hang the initrd.
    pub fn lock(&self) -> Result<(), Error> {
        rustix::fs::flock(&self.dir, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
            if e == rustix::io::Errno::WOULDBLOCK {
                Error::Usage(format!(
                    "{}: another imperm (reset, gc, restore, migrate or baseline) holds the lock; nothing was done",
                    self.name(Path::new(""))
                ))
            } else {
                self.locate(FsError::new("lock", Path::new(""), e.into()).into())
            }
        })
    }

    /// Commits the filesystem (syncfs), so that what is read afterwards is on disk.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::syncfs(&self.dir).map_err(io::Error::from)
    }

    /// Opens `rel` below the top level without following symlinks or crossing mounts.
    pub fn open_beneath(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rustix::fs::openat2(
            &self.dir,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        )
        .map_err(io::Error::from)
    }

    /// A directory below the top level, for ioctls and `*at` calls.
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// What `rel` is. A symlink in a parent component is an error (ELOOP), not followed.
    pub fn node(&self, rel: &Path) -> io::Result<Node> {
        let fd = match self.open_beneath(rel, OFlags::PATH | OFlags::NOFOLLOW) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Node::Missing),
            Err(e) => return Err(e),
        };
        let stat = rustix::fs::fstat(&fd)?;
        Ok(match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => Node::Directory,
            FileType::Symlink => Node::Symlink,
            _ => Node::Other,
        })
    }

    /// Removes an empty directory (the placeholder btrfs leaves where a nested subvolume
    /// was when it takes a snapshot).
    pub fn remove_empty_dir(&self, rel: &Path) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.open_dir(parent)?;
        rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR).map_err(io::Error::from)
    }

    /// Names in directory `rel`, sorted.
    pub fn list_dir(&self, rel: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        let fd = self.open_dir(rel)?;
        let mut names = Vec::new();
        let mut dir = rustix::fs::Dir::read_from(&fd)?;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(std::os::unix::ffi::OsStringExt::from_vec(name.to_vec()));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Reads one of imperm's own small files below the top level (the reset and gc state
    /// files); `None` when it does not exist. It must be a regular file of at most `limit`
    /// bytes: what is there is looked at (without following a symlink) before it is opened,
    /// and again on the descriptor, opened with O_NONBLOCK, before a byte is read. A FIFO
    /// would block until a writer came (at boot: forever), a device such as /dev/zero never
    /// ends, and opening some devices does something; each is an error whose text says
    /// what it is (`ErrorKind::InvalidInput`, or `FileTooLarge` for the size).
    pub fn read_file(&self, rel: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let look = match self.open_beneath(rel, OFlags::PATH | OFlags::NOFOLLOW) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        regular(&rustix::fs::fstat(&look)?, limit)?;
        let fd = self.open_beneath(rel, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK)?;
        regular(&rustix::fs::fstat(&fd)?, limit)?;
        crate::beneath::read_regular(File::from(fd), limit)
            .map(Some)
            .map_err(|e| match e.kind() {
                io::ErrorKind::FileTooLarge => too_large(limit),
                _ => e,
            })
    }

    /// Replaces a file atomically and durably: a temporary file `NAME.tmp`, fsync, rename,
    /// fsync of the directory. A crash leaves either the old or the new content.
    ///
    /// The temporary file is created anew (O_EXCL), never opened as it is: a regular file
    /// of that name is what a killed run left, and is removed first; anything else there
    /// (a FIFO, which opening for writing would wait on forever, a directory, a symlink, a
    /// device) is refused, untouched.
    pub fn write_file_atomic(&self, rel: &Path, data: &[u8]) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.open_dir(parent)?;
        let mut tmp_name = name.to_os_string();
        tmp_name.push(".tmp");
        let tmp = tmp_name.as_os_str();
        match rustix::fs::statat(&dir, tmp, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                rustix::fs::unlinkat(&dir, tmp, AtFlags::empty())?;
            }
            Ok(st) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "its temporary file {} {}, not a file imperm left there; remove it to go on",
                        escape(Path::new(tmp)),
                        what_it_is(st.st_mode)
                    ),
                ));
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let fd = rustix::fs::openat(
            &dir,
            tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut file = File::from(fd);
        file.write_all(data)?;
        file.sync_all()?;
        rustix::fs::renameat(&dir, tmp, &dir, name)?;
        rustix::fs::fsync(&dir)?;
        Ok(())
    }

    /// Removes a file, durably; missing is fine.
    pub fn remove_file(&self, rel: &Path) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.open_dir(parent)?;
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        rustix::fs::fsync(&dir)?;
        Ok(())
    }
}

/// What a file of mode `mode` is, in a message: "is a FIFO", "is a directory"…
fn what_it_is(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => "is a regular file",
        FileType::Directory => "is a directory",
        FileType::Symlink => "is a symlink",
        FileType::Fifo => "is a FIFO",
        FileType::CharacterDevice | FileType::BlockDevice => "is a device",
        FileType::Socket => "is a socket",
        FileType::Unknown => "is not a regular file",
    }
}

/// Refuses what is not a regular file of at most `limit` bytes.
fn regular(st: &rustix::fs::Stat, limit: u64) -> io::Result<()> {
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}, not a regular file", what_it_is(st.st_mode)),
        ));
    }
    if st.st_size as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(())
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!(
            "is larger than {} KiB, more than a state file imperm writes ever is",
            limit >> 10
        ),
    )
}

/// Where `rel` (relative to the top level), or anything inside it, is mounted, among
/// `mounts` as [`TopLevel::mounts`] gives them.
pub fn mounted_at(mounts: &[(PathBuf, PathBuf)], rel: &Path) -> Option<PathBuf> {
    let inside = Path::new("/").join(rel);
    mounts
        .iter()
        .find(|(root, _)| root.starts_with(&inside))
        .map(|(_, at)| at.clone())
}

/// `rel`'s parent and final name.
pub fn split(rel: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match (rel.parent(), rel.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent directory", escape(rel)),
        )),
    }
}

/// Every device of the spec (bcachefs joins several with `:`) must exist and be a block
/// device, before anything is mounted.
fn check_devices(spec: &str) -> Result<(), Error> {
    for device in spec.split(':') {
        let meta = std::fs::metadata(device).map_err(|e| {
            Error::Usage(match e.kind() {
                io::ErrorKind::NotFound => {
                    format!("device {device} does not exist; nothing was done")
                }
                _ => format!("device {device}: {e}; nothing was done"),
            })
        })?;
        if !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
            return Err(Error::Usage(format!(
                "device {device} is not a block device; nothing was done"
            )));
        }
    }
    Ok(())
}

/// `rel` on `device`, or the top level itself.
fn on_device(rel: &Path, device: &str) -> String {
    if rel.as_os_str().is_empty() {
        format!("the top level of {device}")
    } else {
        format!("{} on {device}", escape(rel))
    }
}

/// Private mount points this process made, with their devices: an error raised after
/// the top level was dropped (or by code that only had its path) is still rewritten.
static MOUNT_POINTS: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// `text` with every path below a private mount point this process made renamed as
/// [`TopLevel::name`] does; for messages built where no [`TopLevel`] is at hand.
pub fn rename_mount_points(text: &str) -> String {
    let points = MOUNT_POINTS.lock().map(|m| m.clone()).unwrap_or_default();
    points.iter().fold(text.to_string(), |t, (dir, device)| {
        rename_mount_point(&t, dir, device)
    })
}

/// [`rename_mount_points`] for an error: a file system error's path exactly, and any
/// other message's text.
pub fn rename_in_error(e: Error) -> Error {
    let points = MOUNT_POINTS.lock().map(|m| m.clone()).unwrap_or_default();
    if points.is_empty() {
        return e;
    }
    match e {
        Error::Fs(mut f) => {
            for (dir, device) in &points {
                if let Ok(rel) = f.path.strip_prefix(dir) {
                    f.path = PathBuf::from(on_device(rel, device));
                    break;
                }
            }
            Error::Fs(f)
        }
        Error::Usage(text) => Error::Usage(rename_mount_points(&text)),
        other => other,
    }
}

/// `text` with `dir/REST` written `REST on DEVICE` and `dir` alone as the top level of
/// the device. REST ends where a path in a message ends (white space, a quote, `:`, `;`,
/// `,` or `)`): a path with a space in it keeps its tail after `on DEVICE`, which still
/// names it.
fn rename_mount_point(text: &str, dir: &Path, device: &str) -> String {
    let needle = dir.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(needle.as_ref()) {
        out.push_str(&rest[..at]);
        let after = &rest[at + needle.len()..];
        let end = after
            .find(|c: char| c.is_whitespace() || "\"':;,)".contains(c))
            .unwrap_or(after.len());
        let tail = &after[..end];
        match tail.strip_prefix('/') {
            Some(rel) => out.push_str(&on_device(Path::new(rel.trim_end_matches('/')), device)),
            None if tail.is_empty() => out.push_str(&on_device(Path::new(""), device)),
            // Another name that only starts the same (`imperm-top-1-abcX`): not ours.
            None => {
                out.push_str(&needle);
                out.push_str(tail);
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The top level mounted at a temporary directory in a mount namespace of this process
/// alone: nobody else sees it, and if the process is killed the kernel drops the mount
/// with the namespace.
///
/// The directory is named `imperm-top-PID-XXXXXX` and is held with `flock` for the life
/// of the mount, through a descriptor that child processes (`journalctl`, which `journal`
/// runs while it has a snapshot open) inherit. A kill -9 leaves the empty directory behind; the next run removes such
/// leftovers, but only when their process is gone and nobody holds the lock: in a live
/// namespace the directory is a mount point, and removing it from here would detach that
/// mount.
struct PrivateMount {
    dir: PathBuf,
    device: String,
    // Holds the lock on the mount point (the directory under the mount).
    _lock: OwnedFd,
}

/// The prefix of the temporary mount points.
const MOUNT_PREFIX: &str = "imperm-top-";

impl PrivateMount {
    fn new(fs_type: FsType, device: &str) -> Result<PrivateMount, Error> {
        use rustix::mount::{MountFlags, MountPropagationFlags};
        let (kind, data) = match fs_type {
            FsType::Btrfs => ("btrfs", Some(c"subvolid=5")),
            FsType::Bcachefs => ("bcachefs", None),
            FsType::Tmpfs => {
                return Err(Error::Usage(
                    "a tmpfs root has no top level to mount".into(),
                ));
            }
        };
        // Kept before the first unshare: what imperm mounts for others to see
        // (`snapshots mount`) goes there, not into this namespace, which ends with the
        // process.
        HOST_NAMESPACE.get_or_init(|| {
            rustix::fs::open(
                "/proc/thread-self/ns/mnt",
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
        });
        // SAFETY: only the mount namespace is unshared; file descriptor tables, which the
        // safety contract is about, stay shared.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.map_err(|e| {
            Error::Usage(format!(
                "cannot make a private mount namespace ({e}): mounting the top level needs root; or pass --mounted DIR"
            ))
        })?;
        rustix::mount::mount_change(
            "/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )
        .map_err(|e| FsError::new("make mounts private", Path::new("/"), e.into()))?;
        let base = ["/run", "/tmp"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        remove_leftovers(&base);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{MOUNT_PREFIX}{}-", std::process::id()))
            .tempdir_in(&base)
            .map_err(|e| FsError::new("create a mount point in", &base, e))?
            // Removed by hand, never recursively: see Drop.
            .keep();
        let lock = match hold(&dir) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(FsError::new("lock the mount point", &dir, e).into());
            }
        };
        if let Err(e) = rustix::mount::mount(device, &dir, kind, MountFlags::NOATIME, data) {
            let _ = std::fs::remove_dir(&dir);
            // Not named by the mount point: it is removed before anyone reads this.
            return Err(FsError::new(&format!("mount {kind}"), Path::new(device), e.into()).into());
        }
        if let Ok(mut points) = MOUNT_POINTS.lock() {
            points.push((dir.clone(), device.to_string()));
        }
        Ok(PrivateMount {
            dir,
            device: device.to_string(),
            _lock: lock,
        })
    }
}

/// The mount namespace this process was in before it first made a private one to mount
/// a top level in (unset while it has made none).
static HOST_NAMESPACE: std::sync::OnceLock<io::Result<OwnedFd>> = std::sync::OnceLock::new();

/// Runs `f` in the mount namespace this process started in, where a mount is seen by
/// everyone (the private one a top level is mounted in ends with the process). Where no
/// private namespace was made, `f` runs on the calling thread. Else on a thread of its
/// own that joins the first namespace: a mount namespace is a thread's, so the caller's
/// stays as it is, and so do its working directory and root, which joining one resets.
pub fn in_host_namespace<T: Send>(f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let Some(host) = HOST_NAMESPACE.get() else {
        return Ok(f());
    };
    let host = host.as_ref().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("the mount namespace imperm started in could not be kept: {e}"),
        )
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unsharing the filesystem information (root, working directory,
                // umask) of this thread alone touches no memory; joining a mount namespace
                // needs it unshared.
                unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
                rustix::thread::move_into_link_name_space(
                    host.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Mount),
                )?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Opens `dir` and locks it, with a descriptor children inherit (no close-on-exec), so
/// that a child still running in the namespace after this process died keeps it held.
fn hold(dir: &Path) -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)?;
    Ok(fd)
}

/// The pid in a mount point's name, `imperm-top-PID-XXXXXX`; `None` for other names
/// (and for those of versions that did not put it there: they cannot be told in use).
fn leftover_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(MOUNT_PREFIX)?;
    let (pid, suffix) = rest.split_once('-')?;
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    if !digits || suffix.is_empty() {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// Removes the empty mount points that killed runs left in `base`: only when their
/// process is gone and the lock on them is free; never anything that is not empty.
/// Best effort: a failure here must not stop a reset.
fn remove_leftovers(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(leftover_pid) else {
            continue;
        };
        let gone = rustix::process::Pid::from_raw(pid)
            .is_some_and(|p| rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH));
        if !gone {
            continue;
        }
        let path = entry.path();
        // Held: a child of the dead run is still working in its namespace.
        let Ok(_held) = hold(&path) else {
            continue;
        };
        // rmdir: fails on anything not empty, and on a symlink.
        let _ = std::fs::remove_dir(&path);
    }
}

impl Drop for PrivateMount {
    fn drop(&mut self) {
        // Lazy: a failure here must not hide the command's own result. Only an empty
        // directory is removed: should the unmount have failed, the filesystem is still
        // there below it, and a recursive removal would empty it.
        if rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH).is_ok() {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Statx of `rel` (not following a final symlink), for backends.
pub fn statx(
    top: &TopLevel,
    rel: &Path,
    mask: rustix::fs::StatxFlags,
) -> io::Result<rustix::fs::Statx> {
    let fd = top.open_beneath(rel, OFlags::PATH | OFlags::NOFOLLOW)?;
    rustix::fs::statx(fd.as_fd(), "", AtFlags::EMPTY_PATH, mask).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_a_private_mount_point_are_named_on_the_device() {
        let dir = Path::new("/run/imperm-top-42-AbCdEf");
        let rename = |t: &str| rename_mount_point(t, dir, "/dev/sda2");
        assert_eq!(
            rename("delete /run/imperm-top-42-AbCdEf/@snapshots/X: busy"),
            "delete @snapshots/X on /dev/sda2: busy"
        );
        assert_eq!(
            rename("\"/run/imperm-top-42-AbCdEf/@root/etc\" is not in it"),
            "\"@root/etc on /dev/sda2\" is not in it"
        );
        assert_eq!(
            rename("lock /run/imperm-top-42-AbCdEf; then /run/imperm-top-42-AbCdEf/a/"),
            "lock the top level of /dev/sda2; then a on /dev/sda2"
        );
        // Another directory that only starts the same is not ours.
        assert_eq!(
            rename("/run/imperm-top-42-AbCdEfG/x"),
            "/run/imperm-top-42-AbCdEfG/x"
        );
        assert_eq!(rename("nothing to rename"), "nothing to rename");
    }

    #[test]
    fn only_names_with_a_pid_are_leftovers_that_can_be_judged() {
        assert_eq!(leftover_pid("imperm-top-1234-AbC123"), Some(1234));
        assert_eq!(leftover_pid("imperm-top-1234-a-b"), Some(1234));
        for name in [
            "imperm-top-AbC123",
            "imperm-top-1234-",
            "imperm-top--AbC",
            "imperm-top-0-AbC",
            "imperm-top-+12-AbC",
            "imperm-top-99999999999-AbC",
            "other-1234-AbC",
        ] {
            assert_eq!(leftover_pid(name), None, "{name}");
        }
    }
}
