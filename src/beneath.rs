//! Files of the tree a command works on (`--root DIR`, `/` by default), reached without
//! leaving it.
//!
//! Two rules, one for each direction:
//! - **Writes** resolve every component beneath the tree with no symlink at all
//!   (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, then `*at` calls on the directory
//!   found), and replace the file atomically (a temporary file, fsync, rename). A symlink
//!   planted anywhere on the way (`run -> /elsewhere`) is refused, never written through.
//! - **Reads** of the tree's own files (its baseline manifest, `/etc/.clean`) resolve as a
//!   process chrooted into the tree would (`RESOLVE_IN_ROOT`): an absolute symlink names a
//!   file of the tree, never the host's file of the same name.
//!
//! Mounts inside the tree are crossed (on a live host `/run` is a tmpfs of its own).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

use crate::error::FsError;
use crate::paths::under_root;

/// An open tree.
#[derive(Debug)]
pub struct Tree {
    root: PathBuf,
    fd: OwnedFd,
}

const NO_SYMLINKS: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);
const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// `abs` (as seen from the tree's `/`) relative to the tree, `.` for the tree itself.
fn relative(abs: &Path) -> PathBuf {
    let rel: PathBuf = abs
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// Reads a whole input that must be a regular file of at most `limit` bytes, from a file
/// opened with O_NONBLOCK. A FIFO would block until some writer came (forever, for a stray
/// `mkfifo`), and a device such as `/dev/zero` never ends: both are refused before a byte
/// is read, on the open descriptor, so nothing can be swapped in between the check and the
/// read. procfs files (the mount table) are regular files of size 0, so the limit is also
/// enforced while reading.
pub fn read_regular(file: File, limit: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileTypeExt;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        None
    } else if ft.is_dir() {
        Some("is a directory, not a file")
    } else if ft.is_fifo() {
        Some(
            "is a FIFO, not a regular file (to read a pipe, give `-` and pipe it to standard input)",
        )
    } else if ft.is_char_device() || ft.is_block_device() {
        Some("is a device, not a regular file")
    } else {
        Some("is not a regular file")
    };
    if let Some(kind) = kind {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, kind));
    }
    let too_large = || {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "is larger than {} MiB, the most imperm reads of it",
                limit >> 20
            ),
        )
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

impl Tree {
    /// The tree at a directory already open (`root` is how it is shown).
    pub fn from_fd(root: PathBuf, dir: BorrowedFd) -> Result<Tree, FsError> {
        let fd = rustix::io::fcntl_dupfd_cloexec(dir, 0)
            .map_err(|e| FsError::new("open", &root, e.into()))?;
        Ok(Tree { root, fd })
    }

    pub fn open(root: &Path) -> Result<Tree, FsError> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::new("open", root, e.into()))?;
        Ok(Tree {
            root: root.to_path_buf(),
            fd,
        })
    }

    /// Where `abs` is on disk, for messages.
    pub fn on_disk(&self, abs: &Path) -> PathBuf {
        under_root(&self.root, abs)
    }

    fn err(&self, op: &str, abs: &Path, e: impl Into<io::Error>) -> FsError {
        FsError::new(op, &self.on_disk(abs), e.into())
    }

    /// The tree's file `abs`, read as the tree sees it; `None` when it does not exist.
    pub fn read(&self, abs: &Path) -> Result<Option<Vec<u8>>, FsError> {
        let Some(mut file) = self.open_regular(abs)? else {
            return Ok(None);
        };
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|e| self.err("read", abs, e))?;
        Ok(Some(data))
    }

    /// The tree's regular file `abs`, opened to be read as the tree sees it (see
    /// [`Tree::read`]); `None` when it does not exist.
    pub fn open_regular(&self, abs: &Path) -> Result<Option<File>, FsError> {
        let fd = match rustix::fs::openat2(
            &self.fd,
            relative(abs),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
            IN_ROOT,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.err("read", abs, e)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| self.err("read", abs, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(self.err(
                "read",
                abs,
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        Ok(Some(File::from(fd)))
    }

    /// The tree's file `abs` as [`read_regular`] reads it, resolved as the tree sees it (an
    /// absolute symlink in the tree names the tree's file, never the host's); `None` when
    /// it does not exist.
    pub fn read_bounded(&self, abs: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
        match rustix::fs::openat2(
            &self.fd,
            relative(abs),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
            IN_ROOT,
        ) {
            Ok(fd) => read_regular(File::from(fd), limit).map(Some),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The tree's directory `abs` opened to be listed, resolved as the tree sees it
    /// (symlinks followed inside the tree: NixOS links `/etc/systemd/system` into the
    /// store); `None` when it is missing, dangling, or not a directory.
    pub fn open_dir_resolved(&self, abs: &Path) -> io::Result<Option<OwnedFd>> {
        match rustix::fs::openat2(
            &self.fd,
            relative(abs),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            IN_ROOT,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Where the tree's symlink `abs` points (its parent resolved as the tree sees it, the
    /// link itself not followed); `None` when it is missing or not a symlink.
    pub fn read_link(&self, abs: &Path) -> io::Result<Option<PathBuf>> {
        let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
            return Ok(None);
        };
        let dir = match rustix::fs::openat2(
            &self.fd,
            relative(parent),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            IN_ROOT,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match rustix::fs::readlinkat(&dir, name, Vec::new()) {
            Ok(target) => Ok(Some(PathBuf::from(std::ffi::OsString::from_vec(
                target.into_bytes(),
            )))),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What the tree's `abs` resolves to as the tree sees it (symlinks followed inside the
    /// tree): its kind and the name of the file at the end of its symlinks (`foo.service`
    /// for a link to `/nix/store/…-unit-foo.service/foo.service`); `None` when missing or
    /// dangling. Opened with O_PATH: a FIFO or a device is looked at, never opened; a
    /// regular file is then read from that descriptor ([`Resolved::read`]), so what is
    /// read is what was looked at.
    pub fn resolve(&self, abs: &Path) -> io::Result<Option<Resolved>> {
        let fd = match rustix::fs::openat2(
            &self.fd,
            relative(abs),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            IN_ROOT,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let stat = rustix::fs::fstat(&fd)?;
        // The name, through the descriptor's /proc link; empty without /proc.
        let name = rustix::fs::readlink(proc_fd(&fd), Vec::new())
            .ok()
            .map(|real| PathBuf::from(std::ffi::OsString::from_vec(real.into_bytes())))
            .and_then(|real| real.file_name().map(|n| n.to_os_string()))
            .unwrap_or_default();
        Ok(Some(Resolved {
            kind: FileType::from_raw_mode(stat.st_mode),
            name,
            fd,
        }))
    }

    /// The tree's `abs` looked at as the tree sees it (symlinks followed inside the tree;
    /// a FIFO or device is never opened), `None` when missing or dangling.
    pub fn stat_resolved(&self, abs: &Path) -> io::Result<Option<rustix::fs::Stat>> {
        Ok(match self.resolve(abs)? {
            Some(found) => Some(rustix::fs::fstat(&found.fd)?),
            None => None,
        })
    }

    /// What the tree's `abs` is (a final symlink is not followed), `None` when missing.
    pub fn kind(&self, abs: &Path) -> Result<Option<FileType>, FsError> {
        match rustix::fs::openat2(
            &self.fd,
            relative(abs),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            IN_ROOT,
        ) {
            Ok(fd) => {
                let stat = rustix::fs::fstat(&fd).map_err(|e| self.err("inspect", abs, e))?;
                Ok(Some(FileType::from_raw_mode(stat.st_mode)))
            }
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
            Err(e) => Err(self.err("inspect", abs, e)),
        }
    }

    /// What the tree's `abs` resolves to as the tree sees it (symlinks followed inside the
    /// tree, an absolute one naming the tree's file), `None` when missing or dangling. Opened
    /// with O_PATH: a FIFO or a device is looked at, never opened.
    pub fn kind_resolved(&self, abs: &Path) -> Result<Option<FileType>, FsError> {
        match rustix::fs::openat2(
            &self.fd,
            relative(abs),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            IN_ROOT,
        ) {
            Ok(fd) => {
                let stat = rustix::fs::fstat(&fd).map_err(|e| self.err("inspect", abs, e))?;
                Ok(Some(FileType::from_raw_mode(stat.st_mode)))
            }
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
            Err(e) => Err(self.err("inspect", abs, e)),
        }
    }

    /// The directory `abs`, every component a real directory beneath the tree (created
    /// with `mode` when missing); a symlink anywhere on the way is an error (ELOOP).
    fn dir_for_writing(&self, abs: &Path, mode: u32) -> Result<OwnedFd, FsError> {
        let mut dir = rustix::fs::openat2(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            NO_SYMLINKS,
        )
        .map_err(|e| self.err("open", Path::new("/"), e))?;
        let mut so_far = PathBuf::from("/");
        for name in relative(abs).components() {
            let Component::Normal(name) = name else {
                continue;
            };
            so_far.push(name);
            let open = |parent: &OwnedFd| {
                rustix::fs::openat2(
                    parent,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    NO_SYMLINKS,
                )
            };
            dir = match open(&dir) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(self.err("create", &so_far, e)),
                    }
                    open(&dir).map_err(|e| self.err("open", &so_far, e))?
                }
                // O_DIRECTORY | O_NOFOLLOW on a symlink fails with ENOTDIR: say which it is.
                Err(rustix::io::Errno::NOTDIR)
                    if rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(
                        |st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink,
                    ) =>
                {
                    return Err(self.err("open", &so_far, rustix::io::Errno::LOOP));
                }
                Err(e) => return Err(self.err("open", &so_far, e)),
            };
        }
        Ok(dir)
    }

    /// Replaces the tree's file `abs` with `data`, atomically and durably, with `mode`.
    /// Missing directories are made with mode 0755. A symlink at `abs` itself is replaced,
    /// not followed.
    pub fn write_atomic(&self, abs: &Path, data: &[u8], mode: u32) -> Result<(), FsError> {
        self.write_atomic_with(abs, mode, |file| file.write_all(data))
    }

    /// [`Tree::write_atomic`] of what `write` writes, as it goes: a file of any size in
    /// little memory. A failure (the disk full) leaves the file as it was and no
    /// temporary file.
    pub fn write_atomic_with(
        &self,
        abs: &Path,
        mode: u32,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<(), FsError> {
        let parent = abs.parent().unwrap_or(Path::new("/"));
        let name = abs.file_name().ok_or_else(|| {
            self.err(
                "write",
                abs,
                io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
            )
        })?;
        let dir = self.dir_for_writing(parent, 0o755)?;
        let tmp = temporary_name(name);
        let fd = rustix::fs::openat(
            &dir,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| self.err("write", &parent.join(&tmp), e))?;
        let written = (|| -> io::Result<()> {
            let mut file = File::from(fd);
            write(&mut file)?;
            // The mode asked for, whatever the umask.
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))?;
            file.sync_all()?;
            rustix::fs::renameat(&dir, &tmp, &dir, name)?;
            rustix::fs::fsync(&dir)?;
            Ok(())
        })();
        written.map_err(|e| {
            let _ = rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty());
            self.err("write", abs, e)
        })
    }
}

/// A file of the tree, resolved and looked at (see [`Tree::resolve`]).
#[derive(Debug)]
pub struct Resolved {
    pub kind: FileType,
    /// The name of the file at the end of the symlinks (empty when /proc cannot say).
    pub name: std::ffi::OsString,
    /// Opened with O_PATH.
    fd: OwnedFd,
}

impl Resolved {
    /// The file's content, as [`read_regular`] reads it (a regular file of at most
    /// `limit` bytes), reopened from the descriptor through its /proc entry: the same
    /// inode, whatever the path holds by now.
    pub fn read(&self, limit: u64) -> io::Result<Vec<u8>> {
        let file = rustix::fs::open(
            proc_fd(&self.fd),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        read_regular(File::from(file), limit)
    }
}

/// `/proc/self/fd/N` of a descriptor.
fn proc_fd(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd))
}

/// A name beside `name` that no other writer uses: `.NAME.PID.NANOS.tmp`.
fn temporary_name(name: &OsStr) -> std::ffi::OsString {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.{nanos}.tmp", std::process::id()));
    tmp
}

/// `openat2` of a path of any length: one call per stretch of at most 2048 bytes, each
/// resolved with `resolve` from the directory the one before found. (A single call fails
/// with ENAMETOOLONG past PATH_MAX, and a deep tree's paths go far past it.)
pub fn openat2_long(
    dir: BorrowedFd,
    rel: &Path,
    flags: OFlags,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    const STRETCH: usize = 2048;
    let parts: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        return rustix::fs::openat2(dir, ".", flags | OFlags::CLOEXEC, Mode::empty(), resolve);
    }
    let mut current: Option<OwnedFd> = None;
    let mut stretch = PathBuf::new();
    for (i, part) in parts.iter().enumerate() {
        stretch.push(part);
        let last = i + 1 == parts.len();
        if !last && stretch.as_os_str().len() < STRETCH {
            continue;
        }
        let from = current.as_ref().map_or(dir, |fd| fd.as_fd());
        let how = if last {
            flags | OFlags::CLOEXEC
        } else {
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC
        };
        current = Some(rustix::fs::openat2(
            from,
            &stretch,
            how,
            Mode::empty(),
            resolve,
        )?);
        stretch = PathBuf::new();
    }
    current.ok_or(rustix::io::Errno::NOENT)
}

impl Tree {
    /// The tree's directory `abs`, every component a real directory beneath the tree;
    /// `None` when it is not there as such.
    /// It is opened to be read without touching its access time where the kernel lets us
    /// (see `scan::open_dir`: a read would otherwise write the directory's inode).
    pub fn open_dir(&self, abs: &Path) -> Option<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        let open = |flags| openat2_long(self.fd.as_fd(), &relative(abs), flags, NO_SYMLINKS);
        match open(flags | OFlags::NOATIME) {
            Err(rustix::io::Errno::PERM) => open(flags),
            other => other,
        }
        .ok()
    }

    /// What the tree's `abs` is, as it is (a final symlink is not followed), every component
    /// a real directory beneath the tree; `None` when it is missing or reached through a
    /// symlink. Opened with O_PATH: nothing is opened for reading.
    pub fn stat_nofollow(&self, abs: &Path) -> Option<rustix::fs::Stat> {
        let fd = openat2_long(
            self.fd.as_fd(),
            &relative(abs),
            OFlags::PATH | OFlags::NOFOLLOW,
            NO_SYMLINKS,
        )
        .ok()?;
        rustix::fs::fstat(&fd).ok()
    }

    /// The tree's regular file `abs` for reading, every component a real directory beneath
    /// the tree and no symlink anywhere; `None` when it is missing, reached through a
    /// symlink, or not a regular file. It is looked at before it is opened: a device or a
    /// FIFO put in its place is never opened.
    pub fn open_file(&self, abs: &Path) -> Result<Option<File>, FsError> {
        let fd = match openat2_long(
            self.fd.as_fd(),
            &relative(abs),
            OFlags::PATH | OFlags::NOFOLLOW,
            NO_SYMLINKS,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                return Ok(None);
            }
            Err(e) => return Err(self.err("read", abs, e)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| self.err("read", abs, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Ok(None);
        }
        // Reopened from the descriptor (open takes no empty path: through its /proc
        // entry): the same inode, whatever the path holds by now.
        let file = rustix::fs::open(
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| self.err("read", abs, e))?;
        Ok(Some(File::from(file)))
    }
}
