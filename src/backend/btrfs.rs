//! btrfs, through the ioctls of `linux/btrfs.h`. Read-only is read and set with
//! `SUBVOL_GETFLAGS`/`SUBVOL_SETFLAGS` (the `flags` of `GET_SUBVOL_INFO` use a different bit);
//! nested subvolumes are listed with `GET_SUBVOL_ROOTREF` and named with `INO_LOOKUP_USER`.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::ioctl::{Getter, Setter, Updater, ioctl, opcode};

use super::{Backend, Kind, Result, SubvolumeInfo, node_kind};
use crate::config::FsType;
use crate::error::FsError;
use crate::toplevel::{TopLevel, split};

/// The inode number of every subvolume's root directory.
const FIRST_FREE_OBJECTID: u64 = 256;
const SUBVOL_RDONLY: u64 = 1 << 1;
const MAGIC: u8 = 0x94;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

#[repr(C)]
struct Timespec {
    sec: u64,
    nsec: u32,
}

#[repr(C)]
struct SubvolInfoArgs {
    treeid: u64,
    name: [u8; 256],
    parent_id: u64,
    dirid: u64,
    generation: u64,
    flags: u64,
    uuid: [u8; 16],
    parent_uuid: [u8; 16],
    received_uuid: [u8; 16],
    ctransid: u64,
    otransid: u64,
    stransid: u64,
    rtransid: u64,
    ctime: Timespec,
    otime: Timespec,
    stime: Timespec,
    rtime: Timespec,
    reserved: [u64; 8],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RootRef {
    treeid: u64,
    dirid: u64,
}

#[repr(C)]
struct RootRefArgs {
    min_treeid: u64,
    rootref: [RootRef; 255],
    num_items: u8,
    align: [u8; 7],
}

#[repr(C)]
struct InoLookupUserArgs {
    dirid: u64,
    treeid: u64,
    name: [u8; 256],
    path: [u8; 3824],
}

#[repr(C)]
struct SendArgs {
    send_fd: i64,
    clone_sources_count: u64,
    clone_sources: *const u64,
    parent_root: u64,
    flags: u64,
    version: u32,
    reserved: [u8; 28],
}

/// `BTRFS_SEND_FLAG_NO_FILE_DATA`: metadata only, with `UPDATE_EXTENT` for changed ranges.
const SEND_NO_FILE_DATA: u64 = 0x1;

const SEND: u32 = opcode::write::<SendArgs>(MAGIC, 38);
const SUBVOL_CREATE: u32 = opcode::write::<VolArgs>(MAGIC, 14);
const SNAP_DESTROY: u32 = opcode::write::<VolArgs>(MAGIC, 15);
const SNAP_CREATE_V2: u32 = opcode::write::<VolArgsV2>(MAGIC, 23);
const SUBVOL_GETFLAGS: u32 = opcode::read::<u64>(MAGIC, 25);
const SUBVOL_SETFLAGS: u32 = opcode::write::<u64>(MAGIC, 26);
const GET_SUBVOL_INFO: u32 = opcode::read::<SubvolInfoArgs>(MAGIC, 60);
const GET_SUBVOL_ROOTREF: u32 = opcode::read_write::<RootRefArgs>(MAGIC, 61);
const INO_LOOKUP_USER: u32 = opcode::read_write::<InoLookupUserArgs>(MAGIC, 62);

/// A zeroed ioctl argument. Every struct above is plain integers and byte arrays, for
/// which all-zero is a valid value (and what the kernel expects in unused fields).
fn zeroed<T>() -> Box<T> {
    // SAFETY: only instantiated with the plain-data structs of this module.
    unsafe { Box::new(std::mem::zeroed()) }
}

fn put_name(dst: &mut [u8], name: &OsStr, rel: &Path) -> Result<()> {
    let bytes = name.as_bytes();
    if bytes.len() >= dst.len() || bytes.contains(&0) {
        return Err(FsError::new(
            "name",
            rel,
            io::Error::new(io::ErrorKind::InvalidInput, "name too long or contains NUL"),
        ));
    }
    dst[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

fn c_bytes(buf: &[u8]) -> &[u8] {
    CStr::from_bytes_until_nul(buf).map_or(buf, CStr::to_bytes)
}

/// btrfs through ioctls.
#[derive(Debug, Default, Clone, Copy)]
pub struct Btrfs;

impl Btrfs {
    fn open(&self, top: &TopLevel, op: &str, rel: &Path) -> Result<std::os::fd::OwnedFd> {
        top.open_dir(rel).map_err(|e| FsError::new(op, rel, e))
    }
}

impl Backend for Btrfs {
    fn fs_type(&self) -> FsType {
        FsType::Btrfs
    }

    fn kind(&self, top: &TopLevel, rel: &Path) -> Result<Kind> {
        if let Some(kind) = node_kind(top, rel)? {
            return Ok(kind);
        }
        let fd = self.open(top, "inspect", rel)?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| FsError::new("stat", rel, e.into()))?;
        let statfs = rustix::fs::fstatfs(&fd).map_err(|e| FsError::new("statfs", rel, e.into()))?;
        let on_btrfs = statfs.f_type as i64 == libc::BTRFS_SUPER_MAGIC;
        Ok(if on_btrfs && stat.st_ino == FIRST_FREE_OBJECTID {
            Kind::Subvolume
        } else {
            Kind::Directory
        })
    }

    fn info(&self, top: &TopLevel, rel: &Path) -> Result<SubvolumeInfo> {
        let fd = self.open(top, "inspect subvolume", rel)?;
        // SAFETY: GET_SUBVOL_INFO writes a btrfs_ioctl_get_subvol_info_args (504 bytes,
        // checked in the tests below).
        let args: SubvolInfoArgs =
            unsafe { ioctl(&fd, Getter::<GET_SUBVOL_INFO, SubvolInfoArgs>::new()) }
                .map_err(|e| FsError::new("inspect subvolume", rel, e.into()))?;
        let uuid = |u: [u8; 16]| (u != [0; 16]).then_some(u);
        Ok(SubvolumeInfo {
            id: args.treeid,
            uuid: uuid(args.uuid),
            parent_uuid: uuid(args.parent_uuid),
            generation: Some(args.generation),
        })
    }

    fn create(&self, top: &TopLevel, rel: &Path) -> Result<()> {
        let (parent, name) = split(rel).map_err(|e| FsError::new("create subvolume", rel, e))?;
        let dir = self.open(top, "create subvolume in", parent)?;
        let mut args = zeroed::<VolArgs>();
        put_name(&mut args.name, name, rel)?;
        // SAFETY: SUBVOL_CREATE reads a btrfs_ioctl_vol_args.
        unsafe { ioctl(&dir, Setter::<SUBVOL_CREATE, VolArgs>::new(*args)) }
            .map_err(|e| FsError::new("create subvolume", rel, e.into()))
    }

    fn snapshot(&self, top: &TopLevel, src: &Path, dst: &Path, readonly: bool) -> Result<()> {
        let source = self.open(top, "snapshot", src)?;
        let (parent, name) = split(dst).map_err(|e| FsError::new("snapshot to", dst, e))?;
        let dir = self.open(top, "snapshot into", parent)?;
        let mut args = zeroed::<VolArgsV2>();
        args.fd = i64::from(source.as_fd().as_raw_fd());
        args.flags = if readonly { SUBVOL_RDONLY } else { 0 };
        put_name(&mut args.name, name, dst)?;
        // SAFETY: SNAP_CREATE_V2 reads a btrfs_ioctl_vol_args_v2; `source` outlives the call.
        unsafe { ioctl(&dir, Setter::<SNAP_CREATE_V2, VolArgsV2>::new(*args)) }
            .map_err(|e| FsError::new(&format!("snapshot {} to", src.display()), dst, e.into()))
    }

    fn delete(&self, top: &TopLevel, rel: &Path) -> Result<()> {
        // The ioctl looks the name up in the parent without following a symlink, and
        // refuses anything that is not a subvolume; the kind check makes the message clear.
        match self.kind(top, rel)? {
            Kind::Subvolume => {}
            other => {
                return Err(FsError::new(
                    "delete subvolume",
                    rel,
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("not a subvolume ({other:?})"),
                    ),
                ));
            }
        }
        let (parent, name) = split(rel).map_err(|e| FsError::new("delete subvolume", rel, e))?;
        let dir = self.open(top, "delete subvolume in", parent)?;
        let mut args = zeroed::<VolArgs>();
        put_name(&mut args.name, name, rel)?;
        // SAFETY: SNAP_DESTROY reads a btrfs_ioctl_vol_args.
        unsafe { ioctl(&dir, Setter::<SNAP_DESTROY, VolArgs>::new(*args)) }
            .map_err(|e| FsError::new("delete subvolume", rel, e.into()))
    }

    fn nested(&self, top: &TopLevel, rel: &Path) -> Result<Vec<PathBuf>> {
        let fd = self.open(top, "list subvolumes in", rel)?;
        let mut refs = Vec::new();
        let mut args = zeroed::<RootRefArgs>();
        loop {
            // SAFETY: GET_SUBVOL_ROOTREF reads and writes a btrfs_ioctl_get_subvol_rootref_args.
            let result = unsafe {
                ioctl(
                    &fd,
                    Updater::<GET_SUBVOL_ROOTREF, RootRefArgs>::new(&mut args),
                )
            };
            // EOVERFLOW: the buffer is full and `min_treeid` was advanced; ask again.
            let more = match result {
                Ok(()) => false,
                Err(rustix::io::Errno::OVERFLOW) => true,
                Err(e) => return Err(FsError::new("list subvolumes in", rel, e.into())),
            };
            refs.extend_from_slice(&args.rootref[..usize::from(args.num_items)]);
            if !more {
                break;
            }
        }
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            let mut lookup = zeroed::<InoLookupUserArgs>();
            lookup.dirid = r.dirid;
            lookup.treeid = r.treeid;
            // SAFETY: INO_LOOKUP_USER reads and writes a btrfs_ioctl_ino_lookup_user_args.
            unsafe {
                ioctl(
                    &fd,
                    Updater::<INO_LOOKUP_USER, InoLookupUserArgs>::new(&mut lookup),
                )
            }
            .map_err(|e| FsError::new("name a subvolume in", rel, e.into()))?;
            let dir = OsStr::from_bytes(c_bytes(&lookup.path));
            let name = OsStr::from_bytes(c_bytes(&lookup.name));
            out.push(rel.join(dir).join(name));
        }
        out.sort();
        Ok(out)
    }

    fn is_readonly(&self, top: &TopLevel, rel: &Path) -> Result<bool> {
        let fd = self.open(top, "read flags of", rel)?;
        // SAFETY: SUBVOL_GETFLAGS writes a u64.
        let flags = unsafe { ioctl(&fd, Getter::<SUBVOL_GETFLAGS, u64>::new()) }
            .map_err(|e| FsError::new("read flags of", rel, e.into()))?;
        Ok(flags & SUBVOL_RDONLY != 0)
    }

    fn can_set_readonly(&self) -> bool {
        true
    }

    fn set_readonly(&self, top: &TopLevel, rel: &Path, readonly: bool) -> Result<()> {
        let fd = self.open(top, "set flags of", rel)?;
        // SAFETY: as in is_readonly.
        let flags = unsafe { ioctl(&fd, Getter::<SUBVOL_GETFLAGS, u64>::new()) }
            .map_err(|e| FsError::new("read flags of", rel, e.into()))?;
        let flags = if readonly {
            flags | SUBVOL_RDONLY
        } else {
            flags & !SUBVOL_RDONLY
        };
        // SAFETY: SUBVOL_SETFLAGS reads a u64.
        unsafe { ioctl(&fd, Setter::<SUBVOL_SETFLAGS, u64>::new(flags)) }
            .map_err(|e| FsError::new("set flags of", rel, e.into()))
    }
}

impl Btrfs {
    /// The metadata-only send stream of read-only subvolume `snap` relative to read-only
    /// `parent`, parsed. Its cost follows what differs between the two, when they share
    /// history (a snapshot and a later snapshot of the same subvolume).
    pub fn send_metadata(
        &self,
        top: &TopLevel,
        parent: &Path,
        snap: &Path,
    ) -> Result<Vec<crate::sendstream::Command>> {
        let parent_id = self.info(top, parent)?.id;
        let source = self.open(top, "send", snap)?;
        let (reader, writer) = std::io::pipe().map_err(|e| FsError::new("send", snap, e))?;
        // The kernel writes the stream into the pipe while the ioctl runs; read it as it comes.
        let parser =
            std::thread::spawn(move || crate::sendstream::parse(std::io::BufReader::new(reader)));
        let clone_sources = [parent_id];
        let args = SendArgs {
            send_fd: i64::from(std::os::fd::AsRawFd::as_raw_fd(&writer)),
            clone_sources_count: 1,
            clone_sources: clone_sources.as_ptr(),
            parent_root: parent_id,
            flags: SEND_NO_FILE_DATA,
            version: 0,
            reserved: [0; 28],
        };
        // SAFETY: SEND reads a btrfs_ioctl_send_args (72 bytes, checked below); the pipe and
        // `clone_sources` outlive the call.
        let sent = unsafe { ioctl(&source, Setter::<SEND, SendArgs>::new(args)) };
        drop(writer);
        let parsed = parser.join().map_err(|_| {
            FsError::new("send", snap, io::Error::other("the stream reader panicked"))
        })?;
        sent.map_err(|e| {
            FsError::new(
                &format!("send (parent {})", parent.display()),
                snap,
                e.into(),
            )
        })?;
        parsed.map_err(|e| FsError::new("read the send stream of", snap, io::Error::other(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes and request numbers as linux/btrfs.h defines them (checked with gcc against
    /// the kernel headers); a wrong size would make the kernel read or write past the
    /// struct.
    #[test]
    fn layouts_and_request_numbers_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::offset_of!(VolArgsV2, name), 56);
        assert_eq!(std::mem::size_of::<SubvolInfoArgs>(), 504);
        assert_eq!(std::mem::offset_of!(SubvolInfoArgs, generation), 280);
        assert_eq!(std::mem::offset_of!(SubvolInfoArgs, uuid), 296);
        assert_eq!(std::mem::offset_of!(SubvolInfoArgs, ctransid), 344);
        assert_eq!(std::mem::offset_of!(SubvolInfoArgs, reserved), 440);
        assert_eq!(std::mem::size_of::<RootRefArgs>(), 4096);
        assert_eq!(std::mem::size_of::<InoLookupUserArgs>(), 4096);
        assert_eq!(SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(SNAP_DESTROY, 0x5000_940f);
        assert_eq!(SUBVOL_GETFLAGS, 0x8008_9419);
        assert_eq!(SUBVOL_SETFLAGS, 0x4008_941a);
        assert_eq!(GET_SUBVOL_INFO, 0x81f8_943c);
        assert_eq!(GET_SUBVOL_ROOTREF, 0xd000_943d);
        assert_eq!(INO_LOOKUP_USER, 0xd000_943e);
        assert_eq!(std::mem::size_of::<SendArgs>(), 72);
        assert_eq!(SEND, 0x4048_9426);
    }
}
