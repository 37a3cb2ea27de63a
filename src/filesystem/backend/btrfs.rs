//! btrfs, through the ioctls of `linux/btrfs.h`. Read-only is read and set with
//! `SUBVOL_GETFLAGS`/`SUBVOL_SETFLAGS` (the `flags` of `GET_SUBVOL_INFO` use a different bit);
//! nested subvolumes are listed with `GET_SUBVOL_ROOTREF` and named with `INO_LOOKUP_USER`;
//! inodes written since a transaction are found with `TREE_SEARCH_V2` and named with
//! `INO_LOOKUP`.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::ioctl::{Getter, Setter, Updater, ioctl, opcode};

use super::{Backend, Kind, Result, SubvolumeInfo, node_kind, not_a_subvolume};
use crate::config::FsType;
use crate::error::FsError;
use crate::filesystem::toplevel::{TopLevel, split};
use crate::paths::escape;

/// The inode number of every subvolume's root directory.
const FIRST_FREE_OBJECTID: u64 = 256;
/// The id of the top-level subvolume (`BTRFS_FS_TREE_OBJECTID`).
const FS_TREE_OBJECTID: u64 = 5;
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
#[derive(Clone, Copy, Default)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: [u64; 4],
}

#[repr(C)]
struct SearchArgsV2Head {
    key: SearchKey,
    buf_size: u64,
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

const TREE_SEARCH_V2: u32 = opcode::read_write::<SearchArgsV2Head>(MAGIC, 17);
const INO_LOOKUP: u32 = opcode::read_write::<InoLookupArgs>(MAGIC, 18);
const INODE_ITEM_KEY: u32 = 1;
const INODE_REF_KEY: u32 = 12;
const INODE_EXTREF_KEY: u32 = 13;
/// `sizeof(struct btrfs_inode_item)`.
const INODE_ITEM_SIZE: usize = 160;
/// Bytes of results asked for per TREE_SEARCH_V2 call.
const SEARCH_BUFFER: usize = 1 << 20;
/// For the names of one inode: a few items, seldom more than one.
const NAMES_BUFFER: usize = 1 << 17;
/// No item is larger than a tree block (64 KiB at most), plus its search header.
const MAX_ITEM: usize = (64 << 10) + 32;

/// An inode whose item was written since some transaction, with its metadata.
#[derive(Clone, Debug)]
pub struct ChangedInode {
    pub ino: u64,
    /// The transid the inode was created in.
    pub created: u64,
    pub meta: crate::baseline::Meta,
}

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
            created: Some(args.otransid),
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
            .map_err(|e| FsError::new(&format!("snapshot {} to", escape(src)), dst, e.into()))
    }

    fn delete(&self, top: &TopLevel, rel: &Path) -> Result<()> {
        // The ioctl looks the name up in the parent without following a symlink, and
        // refuses anything that is not a subvolume; the kind check makes the message clear.
        match self.kind(top, rel)? {
            Kind::Subvolume => {}
            other => return Err(not_a_subvolume("delete subvolume", rel, other)),
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

    fn has_lineage(&self) -> bool {
        true
    }

    /// The top level is the root directory (inode 256) of subvolume 5, whatever mounted it
    /// (`subvolid=5`, `subvol=/`, or no option on a filesystem whose default is 5).
    fn check_top_level(&self, top: &TopLevel) -> std::result::Result<(), String> {
        let here = Path::new("");
        let fd = top.open_dir(here).map_err(|e| e.to_string())?;
        let statfs = rustix::fs::fstatfs(&fd).map_err(|e| e.to_string())?;
        if statfs.f_type as i64 != libc::BTRFS_SUPER_MAGIC {
            return Err("is not on btrfs, so not the top level of a btrfs filesystem".into());
        }
        let stat = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
        let id = self.info(top, here).map_err(|e| e.to_string())?.id;
        if stat.st_ino != FIRST_FREE_OBJECTID {
            return Err(format!(
                "is a directory inside subvolume {id}, not the top level of the filesystem (mount it with -o subvolid={FS_TREE_OBJECTID})"
            ));
        }
        if id != FS_TREE_OBJECTID {
            return Err(format!(
                "is subvolume {id}, not the top level of the filesystem (subvolume {FS_TREE_OBJECTID}: mount it with -o subvolid={FS_TREE_OBJECTID})"
            ));
        }
        Ok(())
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
    /// Runs a `TREE_SEARCH_V2` for `key` on the filesystem of `fd` and hands every item
    /// found to `visit` (objectid, type, offset, data), in key order.
    fn search(
        &self,
        fd: BorrowedFd,
        what: &Path,
        mut key: SearchKey,
        size: usize,
        mut visit: impl FnMut(u64, u32, u64, &[u8]),
    ) -> Result<()> {
        let head = std::mem::size_of::<SearchArgsV2Head>();
        let mut buf = vec![0u64; (head + size).div_ceil(8)];
        loop {
            key.nr_items = u32::MAX;
            let args = SearchArgsV2Head {
                key,
                buf_size: size as u64,
            };
            // SAFETY: `buf` is 8-byte aligned and holds the head plus `size` bytes, which is
            // what the head's buf_size tells the kernel it may write.
            unsafe {
                std::ptr::write(buf.as_mut_ptr().cast::<SearchArgsV2Head>(), args);
                let rc = libc::ioctl(
                    fd.as_raw_fd(),
                    TREE_SEARCH_V2 as libc::c_ulong,
                    buf.as_mut_ptr(),
                );
                if rc < 0 {
                    return Err(FsError::new("search", what, io::Error::last_os_error()));
                }
                key = std::ptr::read(buf.as_ptr().cast::<SearchArgsV2Head>()).key;
            }
            if key.nr_items == 0 {
                break;
            }
            let bytes: &[u8] = unsafe {
                // SAFETY: a view of the same allocation as bytes.
                std::slice::from_raw_parts(buf.as_ptr().cast::<u8>().add(head), size)
            };
            let mut at = 0;
            let mut last = (0u64, 0u32, 0u64);
            for _ in 0..key.nr_items {
                let header = bytes.get(at..at + 32).ok_or_else(|| short(what))?;
                let (objectid, offset, ty, len) = (
                    le64(header, 8),
                    le64(header, 16),
                    le32(header, 24),
                    le32(header, 28) as usize,
                );
                last = (objectid, ty, offset);
                let item = bytes
                    .get(at + 32..at + 32 + len)
                    .ok_or_else(|| short(what))?;
                at += 32 + len;
                visit(objectid, ty, offset, item);
            }
            // Continue right after the last key returned.
            let (objectid, ty, offset) = last;
            match offset.checked_add(1) {
                Some(o) => {
                    key.min_objectid = objectid;
                    key.min_type = ty;
                    key.min_offset = o;
                }
                None => match ty.checked_add(1) {
                    Some(t) => {
                        key.min_objectid = objectid;
                        key.min_type = t;
                        key.min_offset = 0;
                    }
                    None if objectid == u64::MAX => break,
                    None => {
                        key.min_objectid = objectid + 1;
                        key.min_type = 0;
                        key.min_offset = 0;
                    }
                },
            }
            // The kernel fills the buffer while items fit; with room left for the largest
            // item there is (one tree block), the range is done: no second call to learn so.
            if size - at >= MAX_ITEM
                || (key.min_objectid, key.min_type, key.min_offset)
                    > (key.max_objectid, key.max_type, key.max_offset)
            {
                break;
            }
        }
        Ok(())
    }

    /// Inodes of subvolume `rel` whose item was written in transaction `since` or later.
    ///
    /// A tree search with a minimum transid skips every tree block older than that, so the
    /// cost follows the blocks written since, not the size of the tree. Any change to an
    /// inode (content, mode, owner, extended attributes, a rename, a link added or
    /// removed, an entry added to or removed from a directory) rewrites its inode item
    /// with the new transid.
    pub fn changed_inodes(
        &self,
        top: &TopLevel,
        rel: &Path,
        since: u64,
    ) -> Result<Vec<ChangedInode>> {
        let fd = self.open(top, "search", rel)?;
        let key = SearchKey {
            tree_id: 0,
            min_objectid: FIRST_FREE_OBJECTID,
            max_objectid: u64::MAX,
            max_offset: u64::MAX,
            min_transid: since,
            max_transid: u64::MAX,
            max_type: u32::MAX,
            ..SearchKey::default()
        };
        let mut out = Vec::new();
        self.search(
            fd.as_fd(),
            rel,
            key,
            SEARCH_BUFFER,
            |objectid, ty, _, item| {
                if ty != INODE_ITEM_KEY || item.len() < INODE_ITEM_SIZE {
                    return;
                }
                // struct btrfs_inode_item (little endian): generation 0, transid 8, size 16,
                // nlink 40, uid 44, gid 48, mode 52, ctime 124, mtime 136, otime 148 (each a
                // u64 of seconds and a u32 of nanoseconds).
                if le64(item, 8) < since {
                    return;
                }
                let time = |o: usize| {
                    i128::from(le64(item, o) as i64) * 1_000_000_000 + i128::from(le32(item, o + 8))
                };
                let mut meta = crate::baseline::Meta::from_parts(
                    le32(item, 52),
                    le32(item, 44),
                    le32(item, 48),
                    le64(item, 16),
                    time(136),
                    None,
                );
                meta.stamps = Some(crate::baseline::Stamps {
                    ino: objectid,
                    btime_ns: Some(time(148)),
                    ctime_ns: time(124),
                    nlink: u64::from(le32(item, 40)),
                    subvol: None,
                    atime_ns: None,
                });
                out.push(ChangedInode {
                    ino: objectid,
                    created: le64(item, 0),
                    meta,
                });
            },
        )?;
        Ok(out)
    }

    /// The names of inode `ino` in subvolume `tree`: each as (parent directory's inode,
    /// name), from its `INODE_REF` and `INODE_EXTREF` items. Every hard link has one; a
    /// directory has exactly one. Empty when the inode is not in the subvolume.
    pub fn inode_names(
        &self,
        top: &TopLevel,
        tree: u64,
        ino: u64,
    ) -> Result<Vec<(u64, std::ffi::OsString)>> {
        use std::os::unix::ffi::OsStringExt;
        let key = SearchKey {
            tree_id: tree,
            min_objectid: ino,
            max_objectid: ino,
            min_type: INODE_REF_KEY,
            max_type: INODE_EXTREF_KEY,
            min_offset: 0,
            max_offset: u64::MAX,
            min_transid: 0,
            max_transid: u64::MAX,
            ..SearchKey::default()
        };
        let mut out = Vec::new();
        self.search(
            top.dir().as_fd(),
            top.path(),
            key,
            NAMES_BUFFER,
            |_, ty, offset, item| {
                // INODE_REF (key offset: the parent): { u64 index; u16 name_len; name }*.
                // INODE_EXTREF: { u64 parent; u64 index; u16 name_len; name }*.
                let (fixed, parent_at) = if ty == INODE_REF_KEY {
                    (10, None)
                } else if ty == INODE_EXTREF_KEY {
                    (18, Some(0))
                } else {
                    return;
                };
                let mut at = 0;
                while at + fixed <= item.len() {
                    let len = usize::from(u16::from_le_bytes([
                        item[at + fixed - 2],
                        item[at + fixed - 1],
                    ]));
                    let Some(name) = item.get(at + fixed..at + fixed + len) else {
                        break;
                    };
                    let parent = match parent_at {
                        Some(p) => le64(item, at + p),
                        None => offset,
                    };
                    out.push((parent, std::ffi::OsString::from_vec(name.to_vec())));
                    at += fixed + len;
                }
            },
        )?;
        Ok(out)
    }

    /// The path of inode `ino` in subvolume `tree` (relative to the subvolume), or `None`
    /// when the subvolume has no such inode.
    pub fn inode_path(&self, top: &TopLevel, tree: u64, ino: u64) -> Result<Option<PathBuf>> {
        let mut args = zeroed::<InoLookupArgs>();
        args.treeid = tree;
        args.objectid = ino;
        // SAFETY: INO_LOOKUP reads and writes a btrfs_ioctl_ino_lookup_args.
        match unsafe {
            ioctl(
                top.dir(),
                Updater::<INO_LOOKUP, InoLookupArgs>::new(&mut args),
            )
        } {
            Ok(()) => {
                let path = c_bytes(&args.name);
                let path = path.strip_suffix(b"/").unwrap_or(path);
                Ok(Some(PathBuf::from(OsStr::from_bytes(path))))
            }
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(FsError::new(
                &format!("find inode {ino} in subvolume {tree} of"),
                top.path(),
                e.into(),
            )),
        }
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn short(what: &Path) -> FsError {
    FsError::new(
        "search",
        what,
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a search result that ends early",
        ),
    )
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
        assert_eq!(std::mem::size_of::<SearchArgsV2Head>(), 112);
        assert_eq!(std::mem::size_of::<InoLookupArgs>(), 4096);
        assert_eq!(TREE_SEARCH_V2, 0xc070_9411);
        assert_eq!(INO_LOOKUP, 0xd000_9412);
    }
}
