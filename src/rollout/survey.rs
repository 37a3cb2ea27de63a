//! What a tree is, entry by entry, for comparing two of them: the live path and its copy in
//! the storage. Reading never changes the tree (`O_NOATIME` where the kernel allows it, no
//! symlink followed, a FIFO or device never opened), and the comparison is pure.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, OFlags, ResolveFlags, SeekFrom, Stat, StatxFlags};
use rustix::io::Errno;

use crate::beneath::openat2_long;
use crate::paths::escape;
use crate::recover::restore::{names, open_noatime};

/// One entry of a tree, as compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Relative to the surveyed path; empty for the path itself.
    pub rel: PathBuf,
    pub kind: Kind,
    /// Permission bits, set-id and sticky bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only (a directory's size says nothing).
    pub size: u64,
    /// Seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// As it was before this survey read the entry (not compared: see [`differences`]).
    pub atime: (i64, i64),
    /// The last change of the inode (not compared: a copy's is its own); what tells that
    /// a tree changed after a moment (see [`newest_change`]).
    pub ctime: (i64, i64),
    /// Device nodes only.
    pub rdev: u64,
    /// A symlink's target.
    pub target: Option<Vec<u8>>,
    /// A regular file's content (BLAKE3), when hashed.
    pub hash: Option<[u8; 32]>,
    /// Extended attributes (ACLs included), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For an entry with other names in the tree: the first of them (hard links).
    pub link: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Unknown,
}

impl Kind {
    pub fn of(mode: u32) -> Kind {
        match FileType::from_raw_mode(mode) {
            FileType::Directory => Kind::Directory,
            FileType::RegularFile => Kind::File,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::CharacterDevice => Kind::CharDevice,
            FileType::BlockDevice => Kind::BlockDevice,
            FileType::Socket => Kind::Socket,
            FileType::Unknown => Kind::Unknown,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Kind::Directory => "a directory",
            Kind::File => "a file",
            Kind::Symlink => "a symlink",
            Kind::Fifo => "a FIFO",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Socket => "a socket",
            Kind::Unknown => "an unknown kind of file",
        }
    }
}

/// A tree, in name order (byte order of the relative paths).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Survey {
    pub nodes: Vec<Node>,
    /// Entries that are not directories, each name counted.
    pub files: u64,
    /// Their sizes (apparent).
    pub bytes: u64,
    /// What it takes on disk: allocated blocks, each inode once, and a block for each
    /// directory and special file.
    pub allocated: u64,
    /// Directories below the top that are mount points (another filesystem, a bind
    /// mount): listed, not walked.
    pub mounts: Vec<PathBuf>,
}

/// What reading a tree ran into, with the path below it.
#[derive(Debug)]
pub struct SurveyError {
    pub rel: PathBuf,
    pub op: &'static str,
    pub source: io::Error,
}

/// Why a file's content was not read: its name named another inode by then.
const REPLACED: &str = "replaced while it was read";

impl SurveyError {
    /// Whether the tree changed under the survey (a name gone, or replaced by a rename
    /// between the look and the read): what a service writing does, not a fault.
    pub fn is_change(&self) -> bool {
        is_change(&self.source)
    }
}

/// Whether an error reading a tree is the tree changing meanwhile (see
/// [`SurveyError::is_change`]).
pub fn is_change(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.to_string() == REPLACED
}

/// The unit a file's content is hashed in (see [`hash_file`]).
const CHUNK: u64 = 1 << 20;

/// A block for what takes no data blocks of its own (a directory, a symlink, a device).
const META_BLOCK: u64 = 4096;

/// [`survey`], looked at again when the tree changed under it (a name gone or replaced
/// between the listing and the look: a service writing), up to 3 times.
pub fn survey_settled(dir: BorrowedFd, name: &OsStr, read: bool) -> Result<Survey, SurveyError> {
    let mut tries = 1;
    loop {
        match survey(dir, name, read) {
            Err(e) if e.is_change() && tries < 3 => tries += 1,
            other => return other,
        }
    }
}

/// Surveys `dir/name` and everything below it, never following a symlink; with `read`,
/// every regular file's content is hashed and every symlink's target read (which sets the
/// symlink's access time: without it, nothing of the tree changes).
pub fn survey(dir: BorrowedFd, name: &OsStr, read: bool) -> Result<Survey, SurveyError> {
    let top = PathBuf::from(name);
    let err = |rel: &Path, op, e: io::Error| SurveyError {
        rel: rel.to_path_buf(),
        op,
        source: e,
    };
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| err(Path::new(""), "inspect", e.into()))?;
    let mut out = Survey::default();
    let mut seen: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // (directory relative to `dir`, node) pairs still to look into.
    let mut stack: Vec<PathBuf> = Vec::new();
    out.add(dir, name, PathBuf::new(), &st, read, &mut seen)
        .map_err(|(op, e)| err(Path::new(""), op, e))?;
    if Kind::of(st.st_mode) == Kind::Directory {
        stack.push(PathBuf::new());
    }
    while let Some(rel) = stack.pop() {
        let fd = open_dir(dir, &top.join(&rel)).map_err(|e| err(&rel, "open", e))?;
        let mut subdirs = Vec::new();
        for child in names(&fd).map_err(|e| err(&rel, "list", e))? {
            let child_rel = rel.join(&child);
            let st = match rustix::fs::statat(&fd, &child, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Gone since it was listed: a live tree moves.
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(err(&child_rel, "inspect", e.into())),
            };
            out.add(fd.as_fd(), &child, child_rel.clone(), &st, read, &mut seen)
                .map_err(|(op, e)| err(&child_rel, op, e))?;
            if Kind::of(st.st_mode) == Kind::Directory {
                if is_mount_point(fd.as_fd(), &child) {
                    out.mounts.push(child_rel);
                } else {
                    subdirs.push(child_rel);
                }
            }
        }
        // Last pushed is walked first: keep name order.
        stack.extend(subdirs.into_iter().rev());
    }
    out.nodes
        .sort_by(|a, b| a.rel.as_os_str().cmp(b.rel.as_os_str()));
    Ok(out)
}

/// Whether `dir/name` is the root of a mount (statx's STATX_ATTR_MOUNT_ROOT; a kernel
/// that does not say is taken at its word: no). A nested btrfs subvolume is not one.
fn is_mount_point(dir: BorrowedFd, name: &OsStr) -> bool {
    use rustix::fs::StatxAttributes;
    rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::empty()).is_ok_and(|st| {
        st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
            && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
    })
}

impl Survey {
    fn add(
        &mut self,
        dir: BorrowedFd,
        name: &OsStr,
        rel: PathBuf,
        st: &Stat,
        read: bool,
        seen: &mut HashMap<(u64, u64), PathBuf>,
    ) -> Result<(), (&'static str, io::Error)> {
        let kind = Kind::of(st.st_mode);
        let mut link = None;
        if kind != Kind::Directory && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            match seen.get(&key) {
                Some(first) => link = Some(first.clone()),
                None => {
                    seen.insert(key, rel.clone());
                }
            }
        }
        let target = match kind {
            Kind::Symlink if read => Some(
                rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| ("read the link", e.into()))?
                    .into_bytes(),
            ),
            _ => None,
        };
        // A file hashed is open: its attributes are read through that descriptor.
        let (content, attrs) = match kind {
            Kind::File if read && link.is_none() => {
                let (hash, attrs) = hash_file(dir, name, st)?;
                (Some(hash), Some(attrs))
            }
            _ => (None, None),
        };
        if kind != Kind::Directory {
            self.files += 1;
            if kind == Kind::File {
                self.bytes += st.st_size as u64;
            }
        }
        if link.is_none() {
            self.allocated += match kind {
                Kind::File => st.st_blocks as u64 * 512,
                _ => META_BLOCK,
            };
        }
        self.nodes.push(Node {
            rel,
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: if kind == Kind::File {
                st.st_size as u64
            } else {
                0
            },
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            atime: (st.st_atime, st.st_atime_nsec as i64),
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
            rdev: match kind {
                Kind::CharDevice | Kind::BlockDevice => st.st_rdev,
                _ => 0,
            },
            target,
            hash: content,
            // Only a survey that reads compares them (a survey that does not counts and
            // dates: sizes, the newest change).
            xattrs: match attrs {
                Some(attrs) => attrs,
                None if read => {
                    xattrs(dir, name).map_err(|e| ("read the extended attributes of", e))?
                }
                None => Vec::new(),
            },
            link,
        });
        Ok(())
    }
}

/// The directory `rel` below `dir`, with no symlink on the way.
fn open_dir(dir: BorrowedFd, rel: &Path) -> io::Result<OwnedFd> {
    let resolve = ResolveFlags::BENEATH
        .union(ResolveFlags::NO_SYMLINKS)
        .union(ResolveFlags::NO_MAGICLINKS);
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
    match openat2_long(dir, rel, flags | OFlags::NOATIME, resolve) {
        Err(Errno::PERM) => openat2_long(dir, rel, flags, resolve),
        other => other,
    }
    .map_err(Into::into)
}

/// The BLAKE3 of a regular file's content. Opened without following a symlink and
/// without blocking; what is opened must still be the inode looked at.
///
/// Only what SEEK_DATA finds is read, so that a sparse file of a huge apparent size (a VM
/// image, a 4 TiB `truncate`) costs its data, not its length. The hash does not depend on
/// where the holes are: it covers the size and each aligned chunk that is not all zeros,
/// with its offset, and a hole reads as zeros; the same content with holes elsewhere (a
/// copy made without keeping them) hashes the same.
#[allow(clippy::type_complexity)]
fn hash_file(
    dir: BorrowedFd,
    name: &OsStr,
    st: &Stat,
) -> Result<([u8; 32], Vec<(Vec<u8>, Vec<u8>)>), (&'static str, io::Error)> {
    let fd = open_noatime(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
    )
    .map_err(|e| ("read", e.into()))?;
    let now = rustix::fs::fstat(&fd).map_err(|e| ("read", e.into()))?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Err(("read", io::Error::other(REPLACED)));
    }
    let size = u64::try_from(now.st_size).unwrap_or(0);
    // One buffer a thread for every file: a fresh 1 MiB for each of 100,000 small files
    // cost more than hashing them.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let hash = BUF.with_borrow_mut(|buf| {
        if buf.len() < CHUNK as usize {
            buf.resize(CHUNK as usize, 0);
        }
        hash_chunks(&fd, size, buf)
    })?;
    let attrs = xattrs_of(&fd).map_err(|e| ("read the extended attributes of", e))?;
    Ok((hash, attrs))
}

/// [`hash_file`]'s reading: the size, then each chunk of `CHUNK` bytes that holds data
/// and is not all zeros, with its offset, so that where the holes lie does not count.
fn hash_chunks(
    fd: &OwnedFd,
    size: u64,
    buf: &mut [u8],
) -> Result<[u8; 32], (&'static str, io::Error)> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&size.to_le_bytes());
    // The next chunk not hashed yet; always a multiple of CHUNK.
    let mut pos = 0;
    while pos < size {
        // A file of one chunk is read whole: its holes read as zeros, which the rule
        // below leaves out as it would the holes (two seeks a file cost more).
        let (data, hole) = if size <= CHUNK {
            (0, size)
        } else {
            let data = match rustix::fs::seek(fd, SeekFrom::Data(pos)) {
                Ok(data) => data,
                Err(Errno::NXIO) => break,
                // No hole support: all of it is data.
                Err(Errno::INVAL | Errno::NOTSUP) => pos,
                Err(e) => return Err(("read", e.into())),
            };
            let hole = match rustix::fs::seek(fd, SeekFrom::Hole(data)) {
                Ok(hole) => hole.min(size),
                Err(Errno::INVAL | Errno::NOTSUP) => size,
                Err(e) => return Err(("read", e.into())),
            };
            (data, hole)
        };
        pos = pos.max(data / CHUNK * CHUNK);
        while pos < hole {
            let want = usize::try_from((size - pos).min(CHUNK)).unwrap_or(buf.len());
            let mut got = 0;
            while got < want {
                match rustix::io::pread(fd, &mut buf[got..want], pos + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(Errno::INTR) => {}
                    Err(e) => return Err(("read", e.into())),
                }
            }
            if buf[..got].iter().any(|&b| b != 0) {
                hasher.update(&pos.to_le_bytes());
                hasher.update(&buf[..got]);
            }
            if got < want {
                // Shorter than it was: the survey's sizes will differ.
                return Ok(*hasher.finalize().as_bytes());
            }
            pos += CHUNK;
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

/// The extended attributes of `dir/name` (the name itself, never what it links to),
/// sorted by name; none where the filesystem keeps none.
fn xattrs(dir: BorrowedFd, name: &OsStr) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let path = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    read_xattrs(
        || rustix::fs::llistxattr_query(&path),
        |buf| rustix::fs::llistxattr(&path, buf),
        |key| rustix::fs::lgetxattr_query(&path, key),
        |key, buf| rustix::fs::lgetxattr(&path, key, buf),
    )
}

/// The extended attributes of an open file: what [`xattrs`] reads, without resolving a
/// path through /proc for each call (most of the cost on a tree of small files).
fn xattrs_of(fd: &OwnedFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    read_xattrs(
        || rustix::fs::flistxattr_query(fd),
        |buf| rustix::fs::flistxattr(fd, buf),
        |key| rustix::fs::fgetxattr_query(fd, key),
        |key, buf| rustix::fs::fgetxattr(fd, key, buf),
    )
}

fn read_xattrs(
    list_size: impl Fn() -> rustix::io::Result<usize>,
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    value_size: impl Fn(&OsStr) -> rustix::io::Result<usize>,
    value: impl Fn(&OsStr, &mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = loop {
        let size = match list_size() {
            Ok(size) => size,
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match list(&mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                break buf;
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for key in names.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let key_os = OsStr::from_bytes(key);
        let got = loop {
            let size = match value_size(key_os) {
                Ok(size) => size,
                // Removed since it was listed.
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            };
            let mut buf = vec![0u8; size];
            match value(key_os, &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    break Some(buf);
                }
                Err(Errno::RANGE) => continue,
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(got) = got {
            out.push((key.to_vec(), got));
        }
    }
    out.sort();
    Ok(out)
}

/// How two trees differ, as sentences naming the path below `shown` (at most `limit` of
/// them; the rest are counted in a last one). Empty when they are the same: names, kinds,
/// contents (when both were hashed), symlink targets, owners, modes, modification times,
/// device numbers, extended attributes and which names are links of one file. Access
/// times are not compared (reading moves them where `O_NOATIME` is not allowed), nor
/// sockets (never copied).
pub fn differences(a: &Survey, b: &Survey, shown: &Path, limit: usize) -> Vec<String> {
    let (a, b) = (compared(a), compared(b));
    let path = |rel: &Path| {
        if rel.as_os_str().is_empty() {
            escape(shown)
        } else {
            escape(&shown.join(rel))
        }
    };
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let order = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.rel.as_os_str().cmp(y.rel.as_os_str()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                out.push(format!("{}: only on the live side", path(&a[i].rel)));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(format!("{}: only in the storage", path(&b[j].rel)));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                if let Some(what) = node_difference(a[i], b[j]) {
                    out.push(format!("{}: {what}", path(&a[i].rel)));
                }
                i += 1;
                j += 1;
            }
        }
    }
    if out.len() > limit {
        let more = out.len() - limit;
        out.truncate(limit);
        out.push(format!("and {more} more"));
    }
    out
}

/// What lies under a mount at `dir/name`, on `dir`'s own filesystem: the tree a bind
/// mount hides. `nixos-rebuild switch` with an entry newly declared mounts the storage's
/// (empty) copy over the live path before `migrate` copied it, and the live data goes on
/// lying underneath, unseen, until the next boot drops it. Seen through a clone of
/// `dir`'s mount alone (`open_tree` without `AT_RECURSIVE`: no mount below it comes
/// along); `None` when nothing but an empty directory or an empty file is there (what
/// impermanence makes to mount on). Needs `CAP_SYS_ADMIN` (`EPERM` otherwise).
pub fn hidden_under_mount(dir: BorrowedFd, name: &OsStr) -> Result<Option<Survey>, SurveyError> {
    use rustix::mount::OpenTreeFlags;
    let alone = rustix::mount::open_tree(
        dir,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| SurveyError {
        rel: PathBuf::new(),
        op: "look under the mount at",
        source: e.into(),
    })?;
    let under = match survey(alone.as_fd(), name, false) {
        Ok(s) => s,
        Err(e) if e.rel.as_os_str().is_empty() && e.source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok((under.nodes.len() > 1 || under.bytes > 0).then_some(under))
}

/// A fingerprint of everything [`differences`] compares, so that two surveys made at
/// different times (a copy when it was verified, the same copy later) can be told equal
/// without keeping the first: equal digests, no difference. BLAKE3, in hex.
pub fn digest(s: &Survey) -> String {
    let mut h = blake3::Hasher::new();
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for n in compared(s) {
        field(n.rel.as_os_str().as_bytes());
        field(n.kind.word().as_bytes());
        field(&n.mode.to_le_bytes());
        field(&n.uid.to_le_bytes());
        field(&n.gid.to_le_bytes());
        field(&n.size.to_le_bytes());
        field(&n.mtime.0.to_le_bytes());
        field(&n.mtime.1.to_le_bytes());
        field(&n.rdev.to_le_bytes());
        field(n.target.as_deref().unwrap_or(b"\0none"));
        field(n.hash.as_ref().map_or(&b"\0none"[..], |h| &h[..]));
        field(&(n.xattrs.len() as u64).to_le_bytes());
        for (name, value) in &n.xattrs {
            field(name);
            field(value);
        }
        field(
            n.link
                .as_ref()
                .map_or(&b"\0none"[..], |l| l.as_os_str().as_bytes()),
        );
    }
    h.finalize().to_hex().to_string()
}

/// The newest inode change in a tree (seconds, nanoseconds): anything written, moved,
/// chmod-ed or given an attribute since a moment has a later one.
pub fn newest_change(s: &Survey) -> (i64, i64) {
    s.nodes.iter().map(|n| n.ctime).max().unwrap_or((0, 0))
}

/// The nodes compared: all but sockets and unknown kinds, which are never copied.
fn compared(s: &Survey) -> Vec<&Node> {
    s.nodes
        .iter()
        .filter(|n| !matches!(n.kind, Kind::Socket | Kind::Unknown))
        .collect()
}

/// What differs between two entries of one name, in a few words.
fn node_difference(a: &Node, b: &Node) -> Option<String> {
    if a.kind != b.kind {
        return Some(format!("{} here, {} there", a.kind.word(), b.kind.word()));
    }
    let mut what = Vec::new();
    if a.size != b.size || (a.hash.is_some() && b.hash.is_some() && a.hash != b.hash) {
        what.push("content".to_string());
    }
    if a.target.is_some() && b.target.is_some() && a.target != b.target {
        what.push("link target".into());
    }
    if a.rdev != b.rdev {
        what.push("device number".into());
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        what.push(format!("owner {}:{} vs {}:{}", a.uid, a.gid, b.uid, b.gid));
    }
    if a.mode != b.mode {
        what.push(format!("mode {:04o} vs {:04o}", a.mode, b.mode));
    }
    if a.mtime != b.mtime {
        what.push("modification time".into());
    }
    if a.xattrs != b.xattrs {
        what.push("extended attributes".into());
    }
    if a.link != b.link {
        what.push("hard links".into());
    }
    (!what.is_empty()).then(|| what.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(rel: &str, kind: Kind) -> Node {
        Node {
            rel: PathBuf::from(rel),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: (1, 2),
            atime: (0, 0),
            ctime: (0, 0),
            rdev: 0,
            target: None,
            hash: None,
            xattrs: Vec::new(),
            link: None,
        }
    }

    fn tree(nodes: Vec<Node>) -> Survey {
        Survey {
            nodes,
            ..Survey::default()
        }
    }

    #[test]
    fn every_compared_property_is_a_difference() {
        let base = || {
            let mut f = node("f", Kind::File);
            f.hash = Some([1; 32]);
            f.size = 3;
            vec![node("", Kind::Directory), f]
        };
        type Edit = fn(&mut Node);
        let cases: &[(Edit, &str)] = &[
            (|n| n.hash = Some([2; 32]), "content"),
            (|n| n.size = 4, "content"),
            (|n| n.uid = 7, "owner 7:0 vs 0:0"),
            (|n| n.mode = 0o600, "mode 0600 vs 0644"),
            (|n| n.mtime = (1, 3), "modification time"),
            (
                |n| n.xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())],
                "extended attributes",
            ),
            (|n| n.link = Some(PathBuf::from("g")), "hard links"),
            (|n| n.kind = Kind::Fifo, "a FIFO here, a file there"),
        ];
        for (edit, want) in cases {
            let mut a = base();
            edit(&mut a[1]);
            let got = differences(&tree(a), &tree(base()), Path::new("/x"), 10);
            assert_eq!(got, vec![format!("/x/f: {want}")]);
        }
        assert!(differences(&tree(base()), &tree(base()), Path::new("/x"), 10).is_empty());
    }

    #[test]
    fn the_digest_changes_with_every_compared_property_and_nothing_else() {
        let base = || {
            let mut f = node("f", Kind::File);
            f.hash = Some([1; 32]);
            f.size = 3;
            let mut l = node("l", Kind::Symlink);
            l.target = Some(b"f".to_vec());
            vec![node("", Kind::Directory), f, l]
        };
        let want = digest(&tree(base()));
        type Edit = fn(&mut Vec<Node>);
        let changes: &[Edit] = &[
            |t| t[1].hash = Some([2; 32]),
            |t| t[1].size = 4,
            |t| t[1].uid = 7,
            |t| t[1].gid = 7,
            |t| t[1].mode = 0o600,
            |t| t[1].mtime = (1, 3),
            |t| t[1].xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())],
            |t| t[1].link = Some(PathBuf::from("g")),
            |t| t[1].kind = Kind::Fifo,
            |t| t[1].rel = PathBuf::from("g"),
            |t| t[2].target = Some(b"g".to_vec()),
            |t| t.push(node("z", Kind::File)),
        ];
        for (i, edit) in changes.iter().enumerate() {
            let mut t = base();
            edit(&mut t);
            assert_ne!(digest(&tree(t)), want, "change {i}");
        }
        // What is not compared does not count: access and change times, sockets.
        let mut t = base();
        t[1].atime = (9, 9);
        t[1].ctime = (9, 9);
        t.push(node("s", Kind::Socket));
        assert_eq!(digest(&tree(t)), want);
        // Length-prefixed fields: moving bytes from one field to the next is a change.
        let mut a = base();
        a[2].target = Some(b"ab".to_vec());
        a[2].rel = PathBuf::from("l");
        let mut b = base();
        b[2].target = Some(b"b".to_vec());
        b[2].rel = PathBuf::from("la");
        assert_ne!(digest(&tree(a)), digest(&tree(b)));
    }

    #[test]
    fn the_newest_change_is_the_latest_ctime() {
        let mut t = vec![node("", Kind::Directory), node("a", Kind::File)];
        t[0].ctime = (5, 1);
        t[1].ctime = (5, 2);
        assert_eq!(newest_change(&tree(t)), (5, 2));
        assert_eq!(newest_change(&Survey::default()), (0, 0));
    }

    #[test]
    fn names_on_one_side_only_are_named_and_sockets_ignored() {
        let a = tree(vec![node("", Kind::Directory), node("a", Kind::File)]);
        let b = tree(vec![
            node("", Kind::Directory),
            node("b", Kind::File),
            node("s", Kind::Socket),
        ]);
        assert_eq!(
            differences(&a, &b, Path::new("/x"), 10),
            vec!["/x/a: only on the live side", "/x/b: only in the storage"]
        );
        assert_eq!(
            differences(&a, &b, Path::new("/x"), 1),
            vec!["/x/a: only on the live side", "and 1 more"]
        );
    }

    #[test]
    fn access_times_are_not_compared_and_unhashed_contents_count_by_size() {
        let mut a = node("", Kind::File);
        a.hash = Some([1; 32]);
        let b = node("", Kind::File);
        assert!(differences(&tree(vec![a]), &tree(vec![b]), Path::new("/f"), 10).is_empty());
    }
}
