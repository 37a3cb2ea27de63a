//! bcachefs, through its two subvolume ioctls (`fs/bcachefs/bcachefs_ioctl.h`; the v1 ones,
//! which Linux 6.12 has): `BCH_IOCTL_SUBVOLUME_CREATE` makes a subvolume, or with
//! `BCH_SUBVOL_SNAPSHOT_CREATE` a snapshot, and `BCH_IOCTL_SUBVOLUME_DESTROY` removes one.
//! No program is run.
//!
//! Both take names, which the kernel resolves relative to `dirfd`. Every name handed over
//! is a single component relative to a directory imperm opened itself with `openat2`
//! (no symlink followed, no mount crossed): the kernel would follow a symlink in a parent
//! component, and it follows the snapshot source even when it is the last one. So:
//! - the destination (create, snapshot) and the victim (destroy) are one name in their
//!   parent directory's descriptor; the kernel does not follow a last component there
//!   (destroy of a symlink is ENOENT, create onto one EEXIST);
//! - the snapshot source is named `/proc/self/fd/N` for a descriptor of it opened the same
//!   way: the kernel follows that link to exactly the directory imperm opened.
//!
//! Facts this relies on (DESIGN.md, checked on a real bcachefs): subvolumes are told apart
//! by statx's `stx_subvol`, not by stat; a read-only snapshot shows nothing in its mode
//! bits, only writes fail with EROFS; the read-only flag is set only when a snapshot is
//! taken; a subvolume still holding another cannot be destroyed (ENOTEMPTY), and one
//! destroyed inside it counts until its inodes have left the kernel's caches: for some
//! milliseconds after a sync when it had dirty data or was just walked (a reset right after
//! the root was written fails there without a retry), for as long as a file in it is open
//! (checked on 6.12.95 and 6.12.115, tests/vm/scenarios/bcachefs-ioctls.sh).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use rustix::ioctl::{Setter, ioctl, opcode};

use super::{Backend, Kind, Refusal, Result, SubvolumeInfo, node_kind, not_a_subvolume};
use crate::config::FsType;
use crate::error::FsError;
use crate::filesystem::toplevel::{TopLevel, split, statx};
use crate::paths::escape;

/// `STATX_SUBVOL` (Linux 6.10): ask for `stx_subvol`.
const STATX_SUBVOL: StatxFlags = StatxFlags::from_bits_retain(0x8000);

/// What statfs reports for bcachefs (`BCACHEFS_STATFS_MAGIC`, `linux/magic.h`).
const STATFS_MAGIC: i64 = 0xca45_1a4e;

/// `struct bch_ioctl_subvolume`: 32 bytes, the layout of `bcachefs_ioctl.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SubvolArgs {
    flags: u32,
    /// The directory `dst_ptr` and `src_ptr` are resolved from.
    dirfd: u32,
    /// The new subvolume's mode (the umask applies); ignored for a snapshot.
    mode: u16,
    pad: [u16; 3],
    /// A NUL-terminated name: where the subvolume or snapshot goes; what is destroyed.
    dst_ptr: u64,
    /// A NUL-terminated name: the snapshot's source; 0 for a plain subvolume.
    src_ptr: u64,
}

const MAGIC: u8 = 0xbc;
/// `_IOW(0xbc, 16, struct bch_ioctl_subvolume)` = 0x4020bc10.
const SUBVOLUME_CREATE: u32 = opcode::write::<SubvolArgs>(MAGIC, 16);
/// `_IOW(0xbc, 17, struct bch_ioctl_subvolume)` = 0x4020bc11.
const SUBVOLUME_DESTROY: u32 = opcode::write::<SubvolArgs>(MAGIC, 17);
const SNAPSHOT_CREATE: u32 = 1;
const SNAPSHOT_RO: u32 = 2;
/// What a new subvolume's root directory gets before the umask, as `mkdir` and the
/// `bcachefs` program give.
const NEW_MODE: u16 = 0o777;

/// One of the three requests, for building its arguments and explaining its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Create,
    Snapshot { readonly: bool },
    Destroy,
}

impl Request {
    /// The ioctl's argument: `dst` (and `src`) resolved from `dirfd`. The pointers are
    /// into `dst` and `src`, which must outlive the call.
    fn args(self, dirfd: BorrowedFd, dst: &CStr, src: Option<&CStr>) -> SubvolArgs {
        let ptr = |s: &CStr| s.as_ptr() as usize as u64;
        let (flags, mode) = match self {
            Request::Create => (0, NEW_MODE),
            Request::Snapshot { readonly } => {
                (SNAPSHOT_CREATE | if readonly { SNAPSHOT_RO } else { 0 }, 0)
            }
            Request::Destroy => (0, 0),
        };
        SubvolArgs {
            flags,
            dirfd: dirfd.as_raw_fd() as u32,
            mode,
            pad: [0; 3],
            dst_ptr: ptr(dst),
            src_ptr: src.map_or(0, ptr),
        }
    }

    /// What `errno` means for this request, where the errno's own words would leave the
    /// reader guessing; `None` for the others (their own words are enough).
    fn explain(self, errno: Errno) -> Option<&'static str> {
        Some(match (self, errno) {
            (_, Errno::NOTTY | Errno::OPNOTSUPP) => {
                "not a bcachefs filesystem, or a kernel without bcachefs's subvolume ioctls"
            }
            (_, Errno::ROFS) => {
                "read-only: inside a read-only snapshot, or the filesystem is mounted read-only"
            }
            (Request::Create | Request::Snapshot { .. }, Errno::EXIST) => {
                "something of that name is already there"
            }
            (Request::Create, Errno::NOENT) => "its directory was removed meanwhile",
            (Request::Snapshot { .. }, Errno::NOENT) => {
                "the source or the destination's directory was removed meanwhile"
            }
            (Request::Snapshot { .. }, Errno::INVAL) => {
                "the source is not a subvolume (bcachefs snapshots only a subvolume's root)"
            }
            (Request::Snapshot { .. }, Errno::XDEV) => {
                "the source is on another filesystem than the destination"
            }
            (Request::Destroy, Errno::NOENT) => {
                "not a subvolume, or gone (bcachefs destroys only a subvolume, never a plain directory or a symlink)"
            }
            (Request::Destroy, Errno::NOTEMPTY) => {
                "it still holds another subvolume, or one destroyed in it is still in use by an open file or a working directory"
            }
            (Request::Destroy, Errno::XDEV) => "on another filesystem",
            _ => return None,
        })
    }

    /// The error for `errno`, with the errno kept (see [`super::errno`]).
    fn error(self, errno: Errno) -> io::Error {
        match self.explain(errno) {
            Some(why) => io::Error::new(
                io::Error::from_raw_os_error(errno.raw_os_error()).kind(),
                Refusal {
                    errno: errno.raw_os_error(),
                    why,
                },
            ),
            None => errno.into(),
        }
    }

    /// Issues the request on `dir` (any directory of the filesystem; also the `dirfd`).
    fn issue(self, dir: &OwnedFd, dst: &CStr, src: Option<&CStr>) -> io::Result<()> {
        let args = self.args(dir.as_fd(), dst, src);
        // SAFETY: both ioctls read a `struct bch_ioctl_subvolume` (32 bytes, checked in the
        // tests below) and the NUL-terminated names it points at, which `dst` and `src`
        // keep alive until the call returns.
        let result = unsafe {
            match self {
                Request::Create | Request::Snapshot { .. } => {
                    ioctl(dir, Setter::<SUBVOLUME_CREATE, SubvolArgs>::new(args))
                }
                Request::Destroy => ioctl(dir, Setter::<SUBVOLUME_DESTROY, SubvolArgs>::new(args)),
            }
        };
        result.map_err(|e| self.error(e))
    }
}

/// `name` as the kernel takes it: one component, which the kernel cannot read as a path
/// into somewhere else.
fn c_name(name: &OsStr) -> io::Result<CString> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a single name in its directory",
        ));
    }
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "holds a NUL"))
}

/// bcachefs through its ioctls.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bcachefs;

impl Bcachefs {
    fn subvol_id(&self, top: &TopLevel, rel: &Path) -> Result<u64> {
        let st = statx(top, rel, STATX_SUBVOL).map_err(|e| FsError::new("statx", rel, e))?;
        if st.stx_mask & STATX_SUBVOL.bits() == 0 {
            return Err(FsError::new(
                "statx",
                rel,
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel does not report subvolume ids (statx STATX_SUBVOL, Linux 6.10)",
                ),
            ));
        }
        Ok(st.stx_subvol)
    }

    /// `rel`'s parent directory, opened below the top level with no symlink followed and
    /// no mount crossed, and `rel`'s last name: what the ioctls are given.
    fn parent_and_name(&self, top: &TopLevel, op: &str, rel: &Path) -> Result<(OwnedFd, CString)> {
        let (parent, name) = split(rel).map_err(|e| FsError::new(op, rel, e))?;
        let dir = top.open_dir(parent).map_err(|e| FsError::new(op, rel, e))?;
        let name = c_name(name).map_err(|e| FsError::new(op, rel, e))?;
        Ok((dir, name))
    }

    /// Refuses a destination that is already there, saying what it is (the kernel would
    /// answer EEXIST, without following it).
    fn free(&self, top: &TopLevel, op: &str, rel: &Path) -> Result<()> {
        match self.kind(top, rel)? {
            Kind::Missing => Ok(()),
            kind => Err(FsError::new(
                op,
                rel,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "already exists ({})",
                        crate::filesystem::backend::describe(kind)
                    ),
                ),
            )),
        }
    }
}

/// `/proc/self/fd/N` for `fd`, checked to lead back to it: the kernel follows this link to
/// exactly the directory `fd` is, whatever has happened to its name since it was opened.
fn proc_path(fd: &OwnedFd) -> io::Result<CString> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let unusable = |why: String| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{path} {why}: imperm names a snapshot's source through /proc, so that no symlink is followed (mount /proc)"
            ),
        )
    };
    let own = rustix::fs::fstat(fd)?;
    let via = rustix::fs::stat(path.as_str()).map_err(|e| unusable(format!("fails ({e})")))?;
    if (via.st_dev, via.st_ino) != (own.st_dev, own.st_ino) {
        return Err(unusable("leads elsewhere".into()));
    }
    Ok(CString::new(path).expect("no NUL in a number"))
}

impl Backend for Bcachefs {
    fn fs_type(&self) -> FsType {
        FsType::Bcachefs
    }

    fn kind(&self, top: &TopLevel, rel: &Path) -> Result<Kind> {
        if let Some(kind) = node_kind(top, rel)? {
            return Ok(kind);
        }
        let Some(parent) = rel.parent() else {
            return Ok(Kind::Subvolume);
        };
        let own = self.subvol_id(top, rel)?;
        let parents = self.subvol_id(top, parent)?;
        Ok(if own != parents {
            Kind::Subvolume
        } else {
            Kind::Directory
        })
    }

    fn info(&self, top: &TopLevel, rel: &Path) -> Result<SubvolumeInfo> {
        Ok(SubvolumeInfo {
            id: self.subvol_id(top, rel)?,
            ..SubvolumeInfo::default()
        })
    }

    fn create(&self, top: &TopLevel, rel: &Path) -> Result<()> {
        let op = "create subvolume";
        let (dir, name) = self.parent_and_name(top, op, rel)?;
        self.free(top, op, rel)?;
        Request::Create
            .issue(&dir, &name, None)
            .map_err(|e| FsError::new(op, rel, e))
    }

    fn snapshot(&self, top: &TopLevel, src: &Path, dst: &Path, readonly: bool) -> Result<()> {
        let op = format!("snapshot {} to", escape(src));
        match self.kind(top, src)? {
            Kind::Subvolume => {}
            other => return Err(not_a_subvolume("snapshot", src, other)),
        }
        let source = top
            .open_beneath(src, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| FsError::new("snapshot", src, e))?;
        let source = proc_path(&source)
            .map_err(|e| FsError::new("snapshot", src, e))
            .map(|path| (source, path))?;
        let (dir, name) = self.parent_and_name(top, &op, dst)?;
        self.free(top, &op, dst)?;
        Request::Snapshot { readonly }
            .issue(&dir, &name, Some(&source.1))
            .map_err(|e| FsError::new(&op, dst, e))
    }

    fn delete(&self, top: &TopLevel, rel: &Path) -> Result<()> {
        let op = "delete subvolume";
        // The kernel refuses a plain directory or a symlink itself (ENOENT); the check says
        // which it is. The top level has no parent to name it in: `split` refuses it.
        match self.kind(top, rel)? {
            Kind::Subvolume => {}
            other => return Err(not_a_subvolume(op, rel, other)),
        }
        let (dir, name) = self.parent_and_name(top, op, rel)?;
        let mut result = Request::Destroy.issue(&dir, &name, None);
        // A subvolume nested in this one was just destroyed (nested ones go first), and
        // bcachefs counts it until its inodes have left the cache: once what it had dirty
        // is written back (syncfs), some milliseconds later. An open file keeps it there
        // for good: that one is ENOTEMPTY still, after about 2.5 s of retries.
        let mut delay = std::time::Duration::from_millis(10);
        let mut synced = false;
        while result
            .as_ref()
            .is_err_and(|e| super::errno(e) == Some(libc::ENOTEMPTY))
            && delay < std::time::Duration::from_secs(2)
        {
            if !synced {
                rustix::fs::syncfs(&dir).map_err(|e| FsError::new("sync", rel, e.into()))?;
                synced = true;
            } else {
                std::thread::sleep(delay);
                delay *= 2;
            }
            result = Request::Destroy.issue(&dir, &name, None);
        }
        result.map_err(|e| FsError::new(op, rel, e))
    }

    fn nested(&self, top: &TopLevel, rel: &Path) -> Result<Vec<PathBuf>> {
        // 6.12 has no ioctl that lists subvolumes: nested subvolumes are found by walking
        // the directories and comparing subvolume ids; a nested one is not descended into.
        let own = self.subvol_id(top, rel)?;
        let mut found = Vec::new();
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let fd = top
                .open_dir(&dir)
                .map_err(|e| FsError::new("list", &dir, e))?;
            let mut entries = rustix::fs::Dir::read_from(&fd)
                .map_err(|e| FsError::new("list", &dir, e.into()))?;
            while let Some(entry) = entries.read() {
                let entry = entry.map_err(|e| FsError::new("list", &dir, e.into()))?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let is_dir = match entry.file_type() {
                    rustix::fs::FileType::Directory => true,
                    rustix::fs::FileType::Unknown => {
                        let child = dir.join(OsStr::from_bytes(name));
                        top.node(&child)
                            .map_err(|e| FsError::new("inspect", &child, e))?
                            == crate::filesystem::toplevel::Node::Directory
                    }
                    _ => false,
                };
                if !is_dir {
                    continue;
                }
                let child = dir.join(OsStr::from_bytes(name));
                if self.subvol_id(top, &child)? != own {
                    found.push(child);
                } else {
                    stack.push(child);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    fn is_readonly(&self, top: &TopLevel, rel: &Path) -> Result<bool> {
        // Nothing in the mode bits says so: try to create a directory and see EROFS.
        let dir = top
            .open_dir(rel)
            .map_err(|e| FsError::new("open", rel, e))?;
        // A name no other probe has: one a killed run left (same pid, later) would answer
        // EEXIST, which the kernel gives before it looks whether the subvolume is writable.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..8u32 {
            let probe = format!(
                ".imperm-rw-probe-{}-{nanos:x}-{attempt}",
                std::process::id()
            );
            match rustix::fs::mkdirat(&dir, probe.as_str(), Mode::from_raw_mode(0o700)) {
                Err(Errno::ROFS) => return Ok(true),
                Err(Errno::EXIST) => continue,
                Ok(()) => {
                    rustix::fs::unlinkat(&dir, probe.as_str(), rustix::fs::AtFlags::REMOVEDIR)
                        .map_err(|e| FsError::new("remove probe in", rel, e.into()))?;
                    return Ok(false);
                }
                Err(e) => return Err(FsError::new("probe read-only", rel, e.into())),
            }
        }
        Err(FsError::new(
            "probe read-only",
            rel,
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    fn can_set_readonly(&self) -> bool {
        false
    }

    /// bcachefs mounts only whole filesystems: its top level is a mount of bcachefs that
    /// shows the filesystem's root `/`. A subvolume reached through `X-mount.subdir=` or a
    /// bind mount shows its own path there (`/@root`), and a directory inside a mount is no
    /// mount's root at all. Another filesystem would answer every ioctl with ENOTTY, after
    /// a reset had already written its state file.
    fn check_top_level(&self, top: &TopLevel) -> std::result::Result<(), String> {
        let statfs = rustix::fs::fstatfs(top.dir()).map_err(|e| format!("statfs: {e}"))?;
        if statfs.f_type as i64 != STATFS_MAGIC {
            return Err("is not on bcachefs, so not the top level of a bcachefs filesystem".into());
        }
        let shows = top.mount_shows()?;
        if shows != Path::new("/") {
            return Err(format!(
                "is a mount of {} of its filesystem, not of the top level (mount the device itself)",
                escape(&shows)
            ));
        }
        Ok(())
    }

    fn set_readonly(&self, _top: &TopLevel, rel: &Path, _readonly: bool) -> Result<()> {
        Err(FsError::new(
            "set read-only",
            rel,
            io::Error::new(
                io::ErrorKind::Unsupported,
                "bcachefs sets read-only only when a snapshot is taken",
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers of `bcachefs_ioctl.h` (DESIGN.md): a wrong struct size would give
    /// another opcode, which the kernel answers with ENOTTY.
    #[test]
    fn the_ioctls_have_bcachefs_numbers_and_layout() {
        assert_eq!(std::mem::size_of::<SubvolArgs>(), 32);
        assert_eq!(std::mem::offset_of!(SubvolArgs, mode), 8);
        assert_eq!(std::mem::offset_of!(SubvolArgs, dst_ptr), 16);
        assert_eq!(std::mem::offset_of!(SubvolArgs, src_ptr), 24);
        assert_eq!(SUBVOLUME_CREATE, 0x4020_bc10);
        assert_eq!(SUBVOLUME_DESTROY, 0x4020_bc11);
    }

    #[test]
    fn each_request_builds_its_arguments() {
        let dir = rustix::fs::open("/", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let fd = dir.as_raw_fd() as u32;
        let dst = c"@snapshots-new";
        let src = c"/proc/self/fd/7";
        let at = |s: &CStr| s.as_ptr() as u64;

        let a = Request::Create.args(dir.as_fd(), dst, None);
        assert_eq!(
            a,
            SubvolArgs {
                flags: 0,
                dirfd: fd,
                mode: 0o777,
                pad: [0; 3],
                dst_ptr: at(dst),
                src_ptr: 0,
            }
        );
        let a = Request::Snapshot { readonly: true }.args(dir.as_fd(), dst, Some(src));
        assert_eq!((a.flags, a.mode, a.dirfd), (3, 0, fd));
        assert_eq!((a.dst_ptr, a.src_ptr), (at(dst), at(src)));
        let a = Request::Snapshot { readonly: false }.args(dir.as_fd(), dst, Some(src));
        assert_eq!(a.flags, SNAPSHOT_CREATE);
        // DESTROY refuses any flag (EINVAL) and reads no source.
        let a = Request::Destroy.args(dir.as_fd(), dst, None);
        assert_eq!((a.flags, a.mode, a.src_ptr), (0, 0, 0));
        assert_eq!((a.dirfd, a.dst_ptr), (fd, at(dst)));
        // The pointers are the names' own bytes, NUL-terminated.
        // SAFETY: `dst_ptr` was taken from `dst`, which is alive.
        let back = unsafe { CStr::from_ptr(a.dst_ptr as usize as *const libc::c_char) };
        assert_eq!(back, dst);
    }

    #[test]
    fn only_a_single_name_is_handed_to_the_kernel() {
        for bad in ["", ".", "..", "a/b", "/", "x/", "a\0b"] {
            assert!(c_name(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        for good in ["@root", "20260115T063000Z-1", "new\nline", "...", ".hidden"] {
            assert_eq!(
                c_name(OsStr::new(good)).unwrap().as_bytes(),
                good.as_bytes()
            );
        }
        let odd = OsStr::from_bytes(b"\xff\xfe name");
        assert_eq!(c_name(odd).unwrap().as_bytes(), odd.as_bytes());
    }

    /// Each errno the brief of issue 11 names reads as what it means for the request, and
    /// keeps the errno; one with nothing to add is the errno itself.
    #[test]
    fn errors_say_what_they_mean_and_keep_the_errno() {
        let snapshot = Request::Snapshot { readonly: true };
        for (request, errno, words) in [
            (Request::Create, Errno::EXIST, "already there"),
            (snapshot, Errno::EXIST, "already there"),
            (Request::Create, Errno::NOENT, "directory was removed"),
            (
                snapshot,
                Errno::NOENT,
                "source or the destination's directory",
            ),
            (Request::Destroy, Errno::NOENT, "not a subvolume, or gone"),
            (
                Request::Destroy,
                Errno::NOTEMPTY,
                "still holds another subvolume",
            ),
            (snapshot, Errno::INVAL, "the source is not a subvolume"),
            (Request::Create, Errno::ROFS, "read-only"),
            (snapshot, Errno::ROFS, "read-only"),
            (Request::Destroy, Errno::ROFS, "read-only"),
            (Request::Create, Errno::NOTTY, "not a bcachefs filesystem"),
            (
                Request::Destroy,
                Errno::OPNOTSUPP,
                "not a bcachefs filesystem",
            ),
            (snapshot, Errno::XDEV, "another filesystem"),
        ] {
            let e = request.error(errno);
            let text = crate::error::describe(&e);
            assert!(text.contains(words), "{request:?} {errno:?}: {text}");
            assert!(
                text.ends_with(&format!(
                    "({})",
                    super::super::errno_name(errno.raw_os_error()).unwrap()
                )),
                "{text}"
            );
            assert_eq!(super::super::errno(&e), Some(errno.raw_os_error()));
            assert_eq!(
                e.kind(),
                io::Error::from_raw_os_error(errno.raw_os_error()).kind()
            );
        }
        let plain = Request::Destroy.error(Errno::BUSY);
        assert_eq!(plain.raw_os_error(), Some(libc::EBUSY));
        assert_eq!(crate::error::describe(&plain), "Device or resource busy");
    }
}
