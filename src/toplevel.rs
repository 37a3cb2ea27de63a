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
    _mount: Option<PrivateMount>,
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
    pub fn open(fs: &FilesystemConfig, mounted: Option<&Path>) -> Result<TopLevel, Error> {
        match mounted {
            Some(dir) => TopLevel::existing(dir),
            None => TopLevel::mount_private(fs),
        }
    }

    /// A top level that is already mounted at `dir`.
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
            _mount: None,
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
        let mut top = TopLevel::existing(mount.dir.path())?;
        top._mount = Some(mount);
        Ok(top)
    }

    /// Where the top level is mounted, for messages and for programs that take paths.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &OwnedFd {
        &self.dir
    }

    /// The absolute path of `rel`.
    pub fn join(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// Takes the exclusive lock `reset` and `gc` share (held until the top level is
    /// dropped). Refuses instead of waiting: at boot a stuck lock must not hang the initrd.
    pub fn lock(&self) -> Result<(), Error> {
        rustix::fs::flock(&self.dir, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
            if e == rustix::io::Errno::WOULDBLOCK {
                Error::Usage(format!(
                    "{}: another imperm reset or gc holds the lock; nothing was done",
                    self.path.display()
                ))
            } else {
                FsError::new("lock", &self.path, e.into()).into()
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

    /// Reads a small file below the top level; `None` when it does not exist.
    pub fn read_file(&self, rel: &Path) -> io::Result<Option<Vec<u8>>> {
        match self.open_beneath(rel, OFlags::RDONLY | OFlags::NOFOLLOW) {
            Ok(fd) => {
                let mut data = Vec::new();
                io::Read::read_to_end(&mut File::from(fd), &mut data)?;
                Ok(Some(data))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces a file atomically and durably: a temporary file, fsync, rename, fsync of
    /// the directory. A crash leaves either the old or the new content.
    pub fn write_file_atomic(&self, rel: &Path, data: &[u8]) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.open_dir(parent)?;
        let mut tmp_name = name.to_os_string();
        tmp_name.push(".tmp");
        let fd = rustix::fs::openat(
            &dir,
            tmp_name.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut file = File::from(fd);
        file.write_all(data)?;
        file.sync_all()?;
        rustix::fs::renameat(&dir, tmp_name.as_os_str(), &dir, name)?;
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

/// `rel`'s parent and final name.
pub fn split(rel: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match (rel.parent(), rel.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent directory", rel.display()),
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

/// The top level mounted at a temporary directory in a mount namespace of this process
/// alone: nobody else sees it, and if the process is killed the kernel drops the mount
/// with the namespace.
struct PrivateMount {
    dir: tempfile::TempDir,
}

impl PrivateMount {
    fn new(fs_type: FsType, device: &str) -> Result<PrivateMount, Error> {
        use rustix::mount::{MountFlags, MountPropagationFlags};
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
        let dir = tempfile::Builder::new()
            .prefix("imperm-top-")
            .tempdir_in(&base)
            .map_err(|e| FsError::new("create a mount point in", &base, e))?;
        let (kind, data) = match fs_type {
            FsType::Btrfs => ("btrfs", Some(c"subvolid=5")),
            FsType::Bcachefs => ("bcachefs", None),
            FsType::Tmpfs => {
                return Err(Error::Usage(
                    "a tmpfs root has no top level to mount".into(),
                ));
            }
        };
        rustix::mount::mount(device, dir.path(), kind, MountFlags::NOATIME, data).map_err(|e| {
            FsError::new(&format!("mount {device} ({kind}) at"), dir.path(), e.into())
        })?;
        Ok(PrivateMount { dir })
    }
}

impl Drop for PrivateMount {
    fn drop(&mut self) {
        // Lazy: a failure here must not hide the command's own result.
        let _ = rustix::mount::unmount(self.dir.path(), rustix::mount::UnmountFlags::DETACH);
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
