//! The root walked in tree order ([`crate::paths::tree_order`]: a directory, then what is
//! in it, its entries sorted by name), one entry at a time: what `baseline` writes as it
//! goes, and what `diff` merges against a manifest written in that same order. Memory
//! follows the width of the directories on the way down (their names) and the depth, not
//! the size of the tree.
//!
//! It walks what the parallel walk records ([`super::scan::record`]): never a symlink
//! followed, never out of the root's mount (a subvolume nested in the root is walked),
//! never into the paths NixOS makes anew, the persistent storage or a persisted path. An
//! entry that vanishes or cannot be read while it runs is left out, as there.
//!
//! One thread, in order: a task per directory cannot give a sorted stream without holding
//! what it has read. Each directory's descriptor is kept while its entries are handed out
//! (they are looked at from it), up to [`OPEN_DIRS`] of them: deeper down, the shallowest
//! are closed, and opened again by name (checked to be the same directory) when the walk
//! climbs back to them, so a chain of any depth walks with a bounded number open.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, OFlags, ResolveFlags, Statx};

use super::scan::{STATX, dev_of, fd_path, foreign, mnt_of, open_dir, xattr_digest};
use crate::baseline::Meta;
use crate::classify::EntryKind;
use crate::error::FsError;
use crate::knowledge::Knowledge;
use crate::persisted::PersistedSet;

/// Directory descriptors kept open at most (beside the root's): two walks at once (`--against`)
/// stay well within the usual limit of 1,024 descriptors.
const OPEN_DIRS: usize = 256;

/// One entry of the walk, which comes with its path (as seen from the host's `/`).
pub struct Entry {
    /// Without the link target and the extended attributes: see [`Entry::complete`].
    pub meta: Meta,
    /// The entry itself when it is a directory, else the directory it is in.
    at: Arc<OwnedFd>,
    is_dir: bool,
    /// For a symlink: the snapshot of this very tree to read its target from (see
    /// [`Ordered::links_from`]).
    links: Option<Arc<OwnedFd>>,
}

impl Entry {
    /// The metadata with what is read last, and only where needed: the link target and
    /// the digest of the extended attributes. Where `known` (a baseline's entry at the
    /// same path) is the same inode with the same ctime, they are its own: a symlink's
    /// target never changes, and every change of an attribute moves the ctime. Reading a
    /// symlink in the live tree writes its access time under `relatime` (no flag
    /// prevents it), and the generation search would then read every one read so again;
    /// a target is read from the snapshot where there is one. `None` where they cannot
    /// be read.
    pub fn complete(self, path: &Path, known: Option<&Meta>) -> Meta {
        let known = known.filter(|k| {
            matches!((&k.stamps, &self.meta.stamps),
                (Some(a), Some(b)) if a.same_inode(b) && a.ctime_ns == b.ctime_ns)
        });
        let name = path.file_name().unwrap_or_default();
        let xattrs = known.and_then(|k| k.xattrs).or_else(|| {
            let (at, follow) = if self.is_dir {
                (fd_path(self.at.as_fd(), None), true)
            } else {
                (fd_path(self.at.as_fd(), Some(name)), false)
            };
            xattr_digest(&at, follow).ok()
        });
        let target = if self.meta.kind == EntryKind::Symlink {
            known
                .and_then(|k| k.target.clone())
                .or_else(|| {
                    let snapshot = self.links.as_ref()?;
                    target_in(snapshot.as_fd(), path, &self.meta)
                })
                .or_else(|| {
                    let t = rustix::fs::readlinkat(self.at.as_fd(), name, Vec::new()).ok()?;
                    Some(PathBuf::from(OsStr::from_bytes(t.as_bytes())))
                })
        } else {
            None
        };
        Meta {
            xattrs,
            target,
            ..self.meta
        }
    }
}

/// The target of the symlink at `path` (as seen from the host's `/`) in `snapshot`, a
/// read-only snapshot of the tree (reading it there writes nothing), when it is the
/// same inode as `live` with the same ctime.
fn target_in(snapshot: BorrowedFd, path: &Path, live: &Meta) -> Option<PathBuf> {
    let rel = path.strip_prefix("/").ok()?;
    let flags = OFlags::PATH | OFlags::NOFOLLOW;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let fd = crate::beneath::openat2_long(snapshot, rel, flags, resolve).ok()?;
    let st = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, STATX).ok()?;
    let there = Meta::from_statx(&st, None);
    let (a, b) = (there.stamps?, live.stamps?);
    let same = there.kind == EntryKind::Symlink
        && (a.ino, a.btime_ns, a.ctime_ns) == (b.ino, b.btime_ns, b.ctime_ns);
    if !same {
        return None;
    }
    let t = rustix::fs::readlinkat(&fd, "", Vec::new()).ok()?;
    Some(PathBuf::from(OsStr::from_bytes(t.as_bytes())))
}

/// A directory on the way down.
struct Level {
    /// `None` while closed to keep within [`OPEN_DIRS`].
    fd: Option<Arc<OwnedFd>>,
    /// Device and inode: a directory opened again by name must be this one.
    ident: (u64, u64),
    /// The length of its path in [`Ordered::path`] (0 for the root).
    len: usize,
    /// Its entries' names, one after another, and where each is, with its type.
    names: Vec<u8>,
    index: Vec<(usize, u8, FileType)>,
    next: usize,
    /// Whether a path never walked may be among its entries.
    near_excluded: bool,
}

/// The walk: an iterator of entries with their paths, in tree order.
pub struct Ordered<'a> {
    persisted: &'a PersistedSet,
    /// Host paths never entered: `[scan] never_walk` and the storage paths.
    excluded: HashSet<PathBuf>,
    root_dev: u64,
    root_mnt: Option<u64>,
    levels: Vec<Level>,
    /// The deepest level's path (the root's is empty: its entries are `/NAME`).
    path: Vec<u8>,
    /// Levels with a descriptor, and the shallowest that may have one (past the root).
    open: usize,
    lowest_open: usize,
    buf: Vec<u8>,
    /// See [`Ordered::links_from`].
    links: Option<Arc<OwnedFd>>,
    /// Entries read so far, for a progress line.
    pub read: Arc<AtomicU64>,
}

impl<'a> Ordered<'a> {
    /// Opens the tree at `root` (`--root`; paths are as seen from the host's `/`).
    pub fn new(
        root: &Path,
        persisted: &'a PersistedSet,
        knowledge: &Knowledge,
    ) -> Result<Ordered<'a>, FsError> {
        let mut excluded: HashSet<PathBuf> = knowledge.scan.never_walk.iter().cloned().collect();
        excluded.extend(persisted.storages().into_iter().map(Path::to_path_buf));
        let fd = open_dir(rustix::fs::CWD, root.as_os_str(), OFlags::empty())
            .map_err(|e| FsError::new("open", root, e.into()))?;
        let st = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, STATX)
            .map_err(|e| FsError::new("stat", root, e.into()))?;
        let mut walk = Ordered {
            persisted,
            excluded,
            root_dev: dev_of(&st),
            root_mnt: mnt_of(&st),
            levels: Vec::new(),
            path: Vec::new(),
            open: 0,
            lowest_open: 1,
            buf: Vec::with_capacity(64 << 10),
            links: None,
            read: Arc::new(AtomicU64::new(0)),
        };
        walk.push(Arc::new(fd), &st, 0);
        Ok(walk)
    }

    /// Symlink targets are read from `snapshot` (its root directory), a read-only
    /// snapshot of this very tree taken just before, wherever the link there is the same
    /// inode: see [`Entry::complete`].
    pub fn links_from(mut self, snapshot: OwnedFd) -> Self {
        self.links = Some(Arc::new(snapshot));
        self
    }

    /// Whether an entry is not the root's to walk: another mount or filesystem.
    fn foreign(&self, st: &Statx) -> bool {
        foreign(self.root_dev, self.root_mnt, st).is_some()
    }

    /// Enters a directory: its path is `self.path[..len]`; its entries are read now,
    /// sorted by name.
    fn push(&mut self, fd: Arc<OwnedFd>, st: &Statx, len: usize) {
        let mut names = Vec::new();
        let mut index = Vec::new();
        let mut dir = rustix::fs::RawDir::new(fd.as_fd(), self.buf.spare_capacity_mut());
        // An error part-way (the directory removed under the walk) ends the listing:
        // what was read is walked, as the parallel walk does.
        while let Some(Ok(entry)) = dir.next() {
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            index.push((names.len(), name.len() as u8, entry.file_type()));
            names.extend_from_slice(name);
        }
        // Byte order of names is tree order of paths: a name that is a prefix of another
        // comes first, and its entries (`NAME/…`) before the longer name.
        index.sort_unstable_by(|a, b| {
            let name = |&(at, n, _): &(usize, u8, FileType)| &names[at..at + usize::from(n)];
            name(a).cmp(name(b))
        });
        self.read.fetch_add(index.len() as u64, Ordering::Relaxed);
        let dir_path = Path::new(OsStr::from_bytes(&self.path[..len]));
        let near_excluded = if len == 0 {
            !self.excluded.is_empty()
        } else {
            self.excluded.iter().any(|e| e.starts_with(dir_path))
        };
        self.levels.push(Level {
            fd: Some(fd),
            ident: (dev_of(st), st.stx_ino),
            len,
            names,
            index,
            next: 0,
            near_excluded,
        });
        self.open += 1;
        self.close_shallowest();
    }

    /// Leaves the deepest directory.
    fn pop(&mut self) {
        if let Some(level) = self.levels.pop() {
            if level.fd.is_some() {
                self.open -= 1;
            }
        }
        self.lowest_open = self.lowest_open.min(self.levels.len()).max(1);
        if let Some(level) = self.levels.last() {
            self.path.truncate(level.len);
        }
    }

    /// Closes the shallowest descriptors (never the root's, never the deepest level's)
    /// while more than [`OPEN_DIRS`] are open.
    fn close_shallowest(&mut self) {
        let deepest = self.levels.len().saturating_sub(1);
        while self.open > OPEN_DIRS + 1 && self.lowest_open < deepest {
            let level = &mut self.levels[self.lowest_open];
            if level.fd.take().is_some() {
                self.open -= 1;
            }
            self.lowest_open += 1;
        }
    }

    /// The descriptor of level `i`, opened again from the nearest open level above when
    /// it was closed; `None` (and the levels from there down given up: what they still
    /// held is left out, as vanished) when a directory on the way is gone or is another
    /// one now.
    fn fd(&mut self, i: usize) -> Option<Arc<OwnedFd>> {
        if let Some(fd) = &self.levels[i].fd {
            return Some(fd.clone());
        }
        let above = (0..i).rev().find(|&j| self.levels[j].fd.is_some())?;
        for j in above + 1..=i {
            let parent = self.levels[j - 1].fd.clone()?;
            let name = &self.path[self.levels[j - 1].len + 1..self.levels[j].len];
            let same = open_dir(parent.as_fd(), OsStr::from_bytes(name), OFlags::NOFOLLOW)
                .ok()
                .and_then(|fd| {
                    let st = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, STATX).ok()?;
                    ((dev_of(&st), st.stx_ino) == self.levels[j].ident).then_some(fd)
                });
            match same {
                Some(fd) => {
                    self.levels[j].fd = Some(Arc::new(fd));
                    self.open += 1;
                }
                None => {
                    for level in &mut self.levels[j..=i] {
                        level.next = level.index.len();
                    }
                    return None;
                }
            }
        }
        self.lowest_open = self.lowest_open.min(above + 1).max(1);
        let fd = self.levels[i].fd.clone();
        self.close_shallowest();
        fd
    }

    /// The next entry of level `i` that is walked, as (name, type, its path), or `None`
    /// when the level is done.
    fn next_name(&mut self, i: usize) -> Option<(Vec<u8>, FileType, PathBuf)> {
        loop {
            let level = &mut self.levels[i];
            let &(at, n, kind) = level.index.get(level.next)?;
            level.next += 1;
            let name = level.names[at..at + usize::from(n)].to_vec();
            let near_excluded = level.near_excluded;
            let mut path = Vec::with_capacity(level.len + 1 + name.len());
            path.extend_from_slice(&self.path[..level.len]);
            path.push(b'/');
            path.extend_from_slice(&name);
            let path = PathBuf::from(OsStr::from_bytes(&path));
            if (near_excluded && self.excluded.contains(&path)) || self.persisted.contains(&path) {
                continue;
            }
            return Some((name, kind, path));
        }
    }

    /// The entry `name` of the directory `dir`, of type `kind` as its listing says.
    fn entry(
        &mut self,
        dir: Arc<OwnedFd>,
        name: &[u8],
        kind: FileType,
        path: PathBuf,
    ) -> Option<(PathBuf, Entry)> {
        let name = OsStr::from_bytes(name);
        let stat =
            |dir: BorrowedFd| rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, STATX).ok();
        let (kind, st) = match kind {
            FileType::Unknown => {
                let st = stat(dir.as_fd())?;
                (FileType::from_raw_mode(u32::from(st.stx_mode)), Some(st))
            }
            kind => (kind, None),
        };
        if kind == FileType::Directory {
            let fd = open_dir(dir.as_fd(), name, OFlags::NOFOLLOW).ok()?;
            let st = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, STATX).ok()?;
            if self.foreign(&st) {
                return None;
            }
            let fd = Arc::new(fd);
            let len = path.as_os_str().len();
            self.path.clear();
            self.path.extend_from_slice(path.as_os_str().as_bytes());
            self.push(fd.clone(), &st, len);
            let entry = Entry {
                meta: Meta::from_statx(&st, None),
                at: fd,
                is_dir: true,
                links: None,
            };
            return Some((path, entry));
        }
        let st = match st {
            Some(st) => st,
            None => stat(dir.as_fd())?,
        };
        if self.foreign(&st) {
            // A file mounted over this one.
            return None;
        }
        let entry = Entry {
            meta: Meta::from_statx(&st, None),
            at: dir,
            is_dir: false,
            links: (kind == FileType::Symlink)
                .then(|| self.links.clone())
                .flatten(),
        };
        Some((path, entry))
    }
}

impl Iterator for Ordered<'_> {
    type Item = (PathBuf, Entry);

    fn next(&mut self) -> Option<(PathBuf, Entry)> {
        loop {
            let i = self.levels.len().checked_sub(1)?;
            let Some((name, kind, path)) = self.next_name(i) else {
                self.pop();
                continue;
            };
            let Some(dir) = self.fd(i) else {
                continue;
            };
            if let Some(entry) = self.entry(dir, &name, kind, path) {
                return Some(entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn names(root: &Path) -> Vec<PathBuf> {
        let persisted = PersistedSet::default();
        let knowledge = crate::knowledge::builtin();
        Ordered::new(root, &persisted, knowledge)
            .unwrap()
            .map(|(path, _)| path)
            .collect()
    }

    /// Entries come in strict tree order, whatever their names' bytes (not UTF-8, a
    /// newline, a backslash, names that are prefixes of others, names that sort before
    /// and after `/`), and a chain deeper than the descriptors kept open, with entries
    /// after each subdirectory, is walked whole: what was closed is opened again.
    #[test]
    fn entries_come_in_tree_order_at_any_depth() {
        let dir = tempfile::TempDir::new().unwrap();
        let root = dir.path();
        let odd: Vec<std::ffi::OsString> = [
            &b"a"[..],
            b"a b",
            b"a-",
            b"a.c",
            b"a0",
            b"a\xff",
            b"a\n",
            b"a\\",
            b"a~",
            b"\xc3\xa9",
            b"A",
            b"\x01",
        ]
        .iter()
        .map(|n| std::ffi::OsString::from_vec(n.to_vec()))
        .collect();
        for (i, name) in odd.iter().enumerate() {
            let path = root.join("srv").join(name);
            if i % 2 == 0 {
                std::fs::create_dir_all(path.join("in")).unwrap();
                std::fs::write(path.join("in").join(name), "x").unwrap();
            } else {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, "x").unwrap();
            }
        }
        let depth = OPEN_DIRS * 3;
        let mut deep = root.join("srv/deep");
        for _ in 0..depth {
            deep.push("d");
            std::fs::create_dir_all(&deep).unwrap();
            std::fs::write(deep.with_file_name("e"), "after d").unwrap();
        }
        let got = names(root);
        for pair in got.windows(2) {
            assert_eq!(
                crate::paths::tree_order(&pair[0], &pair[1]),
                std::cmp::Ordering::Less,
                "{:?} then {:?}",
                pair[0],
                pair[1]
            );
        }
        // Every entry, once: the odd names (half with a directory and a file in it), the
        // chain's directories and the files beside them, /srv and /srv/deep.
        assert_eq!(got.len(), odd.len() / 2 * 3 + odd.len() / 2 + depth * 2 + 2);
        let host = |path: &Path| Path::new("/").join(path.strip_prefix(root).unwrap());
        assert!(got.contains(&host(&deep)));
        assert!(got.contains(&host(&deep.with_file_name("e"))));
    }
}
