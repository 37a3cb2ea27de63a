//! The baseline: what the root held right after boot, so that "since boot" can leave out
//! what NixOS activation itself wrote. A manifest file (per entry: path, type, mode, owner,
//! size, mtime, link target, and what a person cannot set: ctime, inode number, birth
//! time, link count, a digest of the extended attributes) works on every backend; where
//! the backend has snapshots, `imperm baseline` takes a read-only one as well, for the
//! cheap btrfs diff.
//!
//! The comparison of two states lives here too, pure: both ways to diff (the walk and the
//! btrfs generation search) hand it the same facts and get the same changes back.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::classify::EntryKind;
use crate::paths::{escape, unescape};

/// Where the manifest lives, as seen from the host's `/`: /run is per boot, like the
/// baseline, and is never walked.
pub const MANIFEST: &str = "/run/imperm/baseline";
/// The read-only snapshot's name in the snapshot directory (a dot-name: never listed as
/// an old root, never deleted by gc).
pub const SNAPSHOT: &str = ".baseline";
const HEADER: &str = "imperm-baseline 4";
/// The third, without the snapshot it belongs to and the mounts; still read.
const HEADER_3: &str = "imperm-baseline 3";
/// The first format, without stamps or extended attributes; still read.
const HEADER_1: &str = "imperm-baseline 1";
/// The second, without the subvolume; still read.
const HEADER_2: &str = "imperm-baseline 2";

/// The metadata a baseline keeps of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub target: Option<PathBuf>,
    /// What the owner of a file cannot set; `None` where unknown (a format-1 manifest).
    pub stamps: Option<Stamps>,
    /// A digest of the extended attributes (names and values; 0 for none); `None` where
    /// unknown.
    pub xattrs: Option<u64>,
}

/// The parts of an inode that say whether it is the same one, and whether it changed in a
/// way its times do not show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamps {
    pub ino: u64,
    /// Birth time, where the filesystem keeps one: tells a reused inode number apart.
    pub btime_ns: Option<i128>,
    /// Moves on every change of content or metadata, and cannot be set by a user (unlike
    /// mtime: `touch -r`).
    pub ctime_ns: i128,
    pub nlink: u64,
    /// Which subvolume the inode is in (statx's subvolume id, else the device number):
    /// inode numbers repeat across subvolumes, and a snapshot of a subvolume (a cloned
    /// container) has the very same inode numbers and birth times. `None` where unknown.
    pub subvol: Option<u64>,
    /// The access time, as a live look shows it (never kept in a manifest: only the
    /// state now is asked for it).
    pub atime_ns: Option<i128>,
}

impl Stamps {
    /// Whether two stamps are of the same inode.
    pub fn same_inode(&self, other: &Stamps) -> bool {
        self.ino == other.ino
            && self.btime_ns == other.btime_ns
            && match (self.subvol, other.subvol) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// statx's `STATX_SUBVOL` (Linux 6.10), which rustix does not name; older kernels ignore
/// the bit and leave `stx_subvol` unset.
pub const STATX_SUBVOL: rustix::fs::StatxFlags = rustix::fs::StatxFlags::from_bits_retain(0x8000);

fn ns(sec: i64, nsec: u32) -> i128 {
    i128::from(sec) * 1_000_000_000 + i128::from(nsec)
}

/// The entry kind of a raw mode.
pub fn kind_of(mode: u32) -> EntryKind {
    match rustix::fs::FileType::from_raw_mode(mode) {
        rustix::fs::FileType::Directory => EntryKind::Directory,
        rustix::fs::FileType::RegularFile => EntryKind::File,
        rustix::fs::FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

impl Meta {
    /// From `stat` (no stamps: callers that need them use `from_statx`).
    pub fn from_stat(st: &rustix::fs::Stat, target: Option<PathBuf>) -> Meta {
        Meta::from_parts(
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_size as u64,
            ns(st.st_mtime, st.st_mtime_nsec as u32),
            target,
        )
    }

    /// From `statx`, with the stamps (asked for with `BASIC_STATS | BTIME`).
    pub fn from_statx(st: &rustix::fs::Statx, target: Option<PathBuf>) -> Meta {
        let time = |t: &rustix::fs::StatxTimestamp| ns(t.tv_sec, t.tv_nsec);
        let mut meta = Meta::from_parts(
            u32::from(st.stx_mode),
            st.stx_uid,
            st.stx_gid,
            st.stx_size,
            time(&st.stx_mtime),
            target,
        );
        meta.stamps = Some(Stamps {
            ino: st.stx_ino,
            btime_ns: (st.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0)
                .then(|| time(&st.stx_btime)),
            ctime_ns: time(&st.stx_ctime),
            nlink: u64::from(st.stx_nlink),
            subvol: Some(if st.stx_mask & STATX_SUBVOL.bits() != 0 {
                st.stx_subvol
            } else {
                rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor)
            }),
            atime_ns: (st.stx_mask & rustix::fs::StatxFlags::ATIME.bits() != 0)
                .then(|| time(&st.stx_atime)),
        });
        meta
    }

    /// From a raw mode (with the file type bits) and the other fields.
    pub fn from_parts(
        mode: u32,
        uid: u32,
        gid: u32,
        size: u64,
        mtime_ns: i128,
        target: Option<PathBuf>,
    ) -> Meta {
        let kind = kind_of(mode);
        Meta {
            kind,
            mode: mode & 0o7777,
            uid,
            gid,
            size: if kind == EntryKind::Directory {
                0
            } else {
                size
            },
            mtime_ns,
            target,
            stamps: None,
            xattrs: None,
        }
    }

    /// Whether `self` and `other` are known to be different inodes.
    pub fn other_inode(&self, other: &Meta) -> bool {
        matches!((&self.stamps, &other.stamps), (Some(a), Some(b)) if !a.same_inode(b))
    }
}

/// How an entry compares with the baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Unchanged,
    Added,
    /// What differs: `type`, `mode`, `owner`, `xattr`, `content`, `target`.
    Changed(Vec<&'static str>),
}

/// How an entry differs between two states of a root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
    Renamed,
}

/// One change (`diff`'s `changes[]`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    pub change: ChangeKind,
    pub kind: Option<EntryKind>,
    /// For a rename: where it was.
    #[serde(serialize_with = "crate::paths::json_opt")]
    pub from: Option<PathBuf>,
    /// For a change: what changed (`type`, `mode`, `owner`, `xattr`, `content`, `target`).
    pub what: Vec<&'static str>,
    /// Its size before (removed, changed, renamed) and after (added, changed, renamed).
    #[serde(skip)]
    pub bytes_then: u64,
    #[serde(skip)]
    pub bytes_now: u64,
    /// Its link count after (before, for a removal), 0 when unknown: a file with several
    /// names is counted once in a suggestion.
    #[serde(skip)]
    pub links: u64,
}

/// What differs between two states of one entry. A directory's size and mtime change
/// whenever an entry in it does, so only its mode, owner and extended attributes count.
///
/// With `by_ctime` (the same inode, not moved, in the same history), a file whose size
/// and mtime are as they were has still changed content when its ctime moved and nothing
/// else explains that (mode, owner, extended attributes, link count, an access time set
/// at that very moment as `touch -a` sets it): mtime can be put back (`touch -r`), ctime
/// cannot.
pub fn differences(old: &Meta, new: &Meta, by_ctime: bool) -> Vec<&'static str> {
    let mut what = Vec::new();
    if old.kind != new.kind {
        what.push("type");
        return what;
    }
    if old.mode != new.mode {
        what.push("mode");
    }
    if (old.uid, old.gid) != (new.uid, new.gid) {
        what.push("owner");
    }
    if matches!((old.xattrs, new.xattrs), (Some(a), Some(b)) if a != b) {
        what.push("xattr");
    }
    match new.kind {
        EntryKind::Directory | EntryKind::Other => {}
        EntryKind::Symlink => {
            if old.target != new.target {
                what.push("target");
            }
        }
        EntryKind::File => {
            let unexplained_ctime = match (&old.stamps, &new.stamps) {
                (Some(a), Some(b)) => {
                    a.ctime_ns != b.ctime_ns
                        && a.nlink == b.nlink
                        && what.is_empty()
                        && b.atime_ns != Some(b.ctime_ns)
                }
                _ => false,
            };
            if old.size != new.size
                || old.mtime_ns != new.mtime_ns
                || (by_ctime && unexplained_ctime)
            {
                what.push("content");
            }
        }
    }
    what
}

/// What differs when another inode took an entry's place: what the metadata shows, and
/// for a file always its content (a new file was written there).
pub fn replaced(old: &Meta, new: &Meta) -> Vec<&'static str> {
    let mut what = differences(old, new, false);
    if old.kind == EntryKind::File && new.kind == EntryKind::File && !what.contains(&"content") {
        what.push("content");
    }
    what
}

/// One state of a root, looked up by path (as seen from the host's `/`). `None` for a
/// path that is not there, or not in the part of the tree that is compared.
pub trait Side {
    fn get(&self, path: &Path) -> Option<Cow<'_, Meta>>;
}

/// The paths one entry (one inode) has in each of two states.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    pub old: Vec<PathBuf>,
    pub new: Vec<PathBuf>,
}

/// Whether a file that looks unchanged holds the same bytes in both states; `None` when
/// that cannot be read.
pub type SameContent<'a> = &'a dyn Fn(&Path) -> Option<bool>;

/// How two states are compared.
pub struct Compare<'a> {
    pub old: &'a dyn Side,
    pub new: &'a dyn Side,
    /// Whether both states share inode numbers and times (a baseline of this root), so
    /// that renames are told from removals and ctime counts. Not so against an old root
    /// a reset kept: the fresh root's files were all made anew.
    pub same_history: bool,
    /// Without a shared history: reads a file whose metadata is as it was in both states.
    pub same_content: Option<SameContent<'a>>,
}

/// Old and new paths paired (`true`: only carried along), the old ones left, the new
/// ones left.
type Paired<'p> = (
    Vec<(&'p PathBuf, &'p PathBuf, bool)>,
    Vec<&'p PathBuf>,
    Vec<&'p PathBuf>,
);

impl Compare<'_> {
    fn meta(&self, side: &dyn Side, path: &Path) -> Option<Meta> {
        side.get(path).map(Cow::into_owned)
    }

    /// Whether an entry that went from `q` to `p` was only carried along by its parent
    /// directory's rename: the same name in the same directory (by inode).
    fn carried(&self, q: &Path, p: &Path) -> bool {
        if q.file_name() != p.file_name() {
            return false;
        }
        let (Some(qp), Some(pp)) = (q.parent(), p.parent()) else {
            return false;
        };
        match (self.meta(self.old, qp), self.meta(self.new, pp)) {
            (Some(a), Some(b)) => {
                matches!((a.stamps, b.stamps), (Some(x), Some(y)) if x.same_inode(&y))
            }
            _ => false,
        }
    }

    fn content_differs(&self, path: &Path, then: &Meta, now: &Meta) -> bool {
        then.kind == EntryKind::File
            && now.kind == EntryKind::File
            && now.size > 0
            && self
                .same_content
                .and_then(|same| same(path))
                .is_some_and(|same| !same)
    }

    /// Pairs the paths an entry lost (`old`) with those it gained (`new`): each name
    /// carried along by its directory's rename with itself first (flagged `true`), then
    /// what is left in order. Also returns the old paths and the new ones left unpaired.
    /// Pairing by order alone would swap the names of an inode with several links.
    fn pair<'p>(&self, old: &'p [PathBuf], new: &[&'p PathBuf]) -> Paired<'p> {
        let mut taken = vec![false; new.len()];
        let mut pairs = Vec::new();
        let mut left = Vec::new();
        // Only the same name in a directory of the same inode number can be carried: look
        // among those alone (many names of one inode may share a file name).
        type Place<'n> = (Option<&'n OsStr>, Option<(u64, Option<i128>)>);
        fn parent<'n>(side: &dyn Side, path: &'n Path) -> Place<'n> {
            let stamps = path.parent().and_then(|d| side.get(d)?.stamps);
            (path.file_name(), stamps.map(|s| (s.ino, s.btime_ns)))
        }
        let mut by_name: HashMap<_, Vec<usize>> = HashMap::new();
        for (j, p) in new.iter().enumerate() {
            by_name.entry(parent(self.new, p)).or_default().push(j);
        }
        for q in old {
            let found = by_name.get(&parent(self.old, q)).and_then(|js| {
                js.iter()
                    .copied()
                    .find(|&j| !taken[j] && self.carried(q, new[j]))
            });
            match found {
                Some(j) => {
                    taken[j] = true;
                    pairs.push((q, new[j], true));
                }
                None => left.push(q),
            }
        }
        let mut made: Vec<&PathBuf> = (0..new.len())
            .filter(|&j| !taken[j])
            .map(|j| new[j])
            .collect();
        let n = left.len().min(made.len());
        // None of these is carried: a directory has one path, so no other old name
        // could have been carried to the new name a carried one took.
        pairs.extend(
            left.drain(..n)
                .zip(made.drain(..n))
                .map(|(q, p)| (q, p, false)),
        );
        (pairs, left, made)
    }

    /// The changes of one entry.
    fn group(&self, mut g: Group, out: &mut Vec<Change>) {
        g.old.sort();
        g.old.dedup();
        g.new.sort();
        g.new.dedup();
        let (common, rest_old): (Vec<PathBuf>, Vec<PathBuf>) = g
            .old
            .into_iter()
            .partition(|q| g.new.binary_search(q).is_ok());
        let rest_new: Vec<&PathBuf> = g
            .new
            .iter()
            .filter(|p| common.binary_search(p).is_err())
            .collect();
        let (pairs, gone, made) = self.pair(&rest_old, &rest_new);
        // A link added, removed or renamed moves the inode's ctime: that explains it. A
        // name carried along by its directory's rename does not.
        let links_moved = !gone.is_empty() || !made.is_empty() || pairs.iter().any(|&(_, _, c)| !c);
        for p in &common {
            let (Some(then), Some(now)) = (self.meta(self.old, p), self.meta(self.new, p)) else {
                continue;
            };
            let mut what = differences(&then, &now, self.same_history && !links_moved);
            if what.is_empty() && !self.same_history && self.content_differs(p, &then, &now) {
                what.push("content");
            }
            if !what.is_empty() {
                out.push(change(
                    p,
                    ChangeKind::Changed,
                    None,
                    what,
                    Some(&then),
                    Some(&now),
                ));
            }
        }
        for (q, p, carried) in pairs {
            let (Some(then), Some(now)) = (self.meta(self.old, q), self.meta(self.new, p)) else {
                continue;
            };
            // A rename moves the entry's own ctime; being carried along does not.
            let what = differences(&then, &now, carried && !links_moved);
            if !carried {
                out.push(change(
                    p,
                    ChangeKind::Renamed,
                    Some(q),
                    what,
                    Some(&then),
                    Some(&now),
                ));
            } else if !what.is_empty() {
                out.push(change(
                    p,
                    ChangeKind::Changed,
                    None,
                    what,
                    Some(&then),
                    Some(&now),
                ));
            }
        }
        for p in made {
            let Some(now) = self.meta(self.new, p) else {
                continue;
            };
            match self.meta(self.old, p) {
                // Another inode took the place of what was there: a change of this path.
                Some(then) => {
                    let what = replaced(&then, &now);
                    if !what.is_empty() {
                        out.push(change(
                            p,
                            ChangeKind::Changed,
                            None,
                            what,
                            Some(&then),
                            Some(&now),
                        ));
                    }
                }
                None => out.push(change(
                    p,
                    ChangeKind::Added,
                    None,
                    Vec::new(),
                    None,
                    Some(&now),
                )),
            }
        }
        for q in gone {
            // A path that is still there holds another inode now: reported from there.
            if self.meta(self.new, q).is_some() {
                continue;
            }
            if let Some(then) = self.meta(self.old, q) {
                out.push(change(
                    q,
                    ChangeKind::Removed,
                    None,
                    Vec::new(),
                    Some(&then),
                    None,
                ));
            }
        }
    }

    /// The changes between the two states, given every entry that may differ as a group
    /// of the paths it has in each; sorted by path.
    pub fn changes(&self, groups: impl IntoIterator<Item = Group>) -> Vec<Change> {
        let mut out = Vec::new();
        for g in groups {
            self.group(g, &mut out);
        }
        out.sort_by(|a, b| {
            crate::paths::tree_order(&a.path, &b.path).then(a.change.cmp(&b.change))
        });
        out
    }
}

fn change(
    path: &Path,
    change: ChangeKind,
    from: Option<&PathBuf>,
    what: Vec<&'static str>,
    then: Option<&Meta>,
    now: Option<&Meta>,
) -> Change {
    Change {
        path: path.to_path_buf(),
        change,
        kind: now.or(then).map(|m| m.kind),
        from: from.cloned(),
        what,
        bytes_then: then.map_or(0, |m| m.size),
        bytes_now: now.map_or(0, |m| m.size),
        links: now.or(then).and_then(|m| m.stamps).map_or(0, |s| s.nlink),
    }
}

impl Compare<'_> {
    /// The changes between two whole states (see [`Merge`]).
    pub fn between(&self, old: &Manifest, new: &Manifest) -> Vec<Change> {
        let sorted = |m: &Manifest| {
            let mut entries: Vec<(PathBuf, Meta)> = m
                .iter()
                .map(|(p, m)| (p.to_path_buf(), m.clone()))
                .collect();
            entries.sort_unstable_by(|a, b| crate::paths::tree_order(&a.0, &b.0));
            entries
        };
        let merge = Merge {
            same_history: self.same_history,
            same_content: self.same_content,
            compared: &|_| true,
        };
        let ok = |(p, m)| Ok::<_, std::convert::Infallible>((p, m));
        match merge.run(
            sorted(old).into_iter().map(ok),
            sorted(new).into_iter().map(ok),
            |_, m, _| m,
        ) {
            Ok(changes) => changes,
        }
    }
}

/// The comparison of two whole states given as streams of entries in tree order (a
/// manifest as written, a walk in that order), merged like sorted lists. An entry at the
/// same path with the same inode on both sides (nearly all of them) is compared there and
/// then and forgotten; the rest are grouped by inode (number and birth time) where both
/// states share a history and have stamps, else by path, and paired as
/// [`Compare::changes`] does. What is kept follows the changes (the entries that differ,
/// and their parent directories, which the pairing of renames asks about) and the depth
/// of the tree (the directories above the current entry), never the number of entries.
pub struct Merge<'a> {
    /// As [`Compare::same_history`].
    pub same_history: bool,
    /// As [`Compare::same_content`].
    pub same_content: Option<SameContent<'a>>,
    /// The part of the tree compared: old entries elsewhere (a manifest recorded under
    /// another configuration) are left out, as the generation search leaves them out.
    /// New entries are taken to be in it: they come from a walk of that part alone (and
    /// asking of each of a million entries would cost a second).
    pub compared: &'a dyn Fn(&Path) -> bool,
}

/// What a merge keeps of one side: the entries that differ and their parents, by path.
/// A path it does not hold is not there (see [`Merge::run`]).
#[derive(Default)]
struct Kept(HashMap<OsString, Meta>);

impl Side for Kept {
    fn get(&self, path: &Path) -> Option<Cow<'_, Meta>> {
        self.0.get(path.as_os_str()).map(Cow::Borrowed)
    }
}

/// The directories above the current entry of one side, each as the length of its path
/// (a prefix of the deepest one's) and its metadata: what the parent of an entry is, in
/// memory that follows the depth of the tree.
#[derive(Default)]
struct Above {
    deepest: Vec<u8>,
    dirs: Vec<(usize, Meta)>,
}

impl Above {
    /// Moves to `path` (which comes after every entry given before, in tree order) and
    /// gives its parent directory's metadata, when the parent is an entry of this side.
    fn enter(&mut self, path: &Path, meta: &Meta) -> Option<Meta> {
        let bytes = path.as_os_str().as_bytes();
        while let Some(&(len, _)) = self.dirs.last() {
            if bytes.len() > len && bytes[len] == b'/' && bytes[..len] == self.deepest[..len] {
                break;
            }
            self.dirs.pop();
        }
        let parent_len = path.parent().map_or(0, |p| p.as_os_str().len());
        let parent = self
            .dirs
            .last()
            .filter(|(len, _)| *len == parent_len)
            .map(|(_, m)| m.clone());
        if meta.kind == EntryKind::Directory {
            self.deepest.clear();
            self.deepest.extend_from_slice(bytes);
            self.dirs.push((bytes.len(), meta.clone()));
        }
        parent
    }
}

/// What groups the entries that differ: the inode, where the states share a history.
#[derive(Hash, PartialEq, Eq)]
enum Key {
    Inode(Option<u64>, u64, Option<i128>),
    Path(OsString),
}

/// The state of a merge in progress.
#[derive(Default)]
struct Merged {
    old: Kept,
    new: Kept,
    above_old: Above,
    above_new: Above,
    rest: HashMap<Key, Group>,
    out: Vec<Change>,
}

impl Merge<'_> {
    fn linked(&self, m: &Meta) -> bool {
        self.same_history && m.stamps.is_some_and(|s| s.nlink > 1)
    }

    fn key(&self, path: &Path, meta: &Meta) -> Key {
        match (&meta.stamps, self.same_history) {
            (Some(s), true) => Key::Inode(s.subvol, s.ino, s.btime_ns),
            _ => Key::Path(path.as_os_str().to_os_string()),
        }
    }

    /// Keeps an entry of one side (`new`: the new one) that differs, to be paired.
    fn keep(&self, m: &mut Merged, new: bool, path: &Path, meta: Meta, parent: Option<Meta>) {
        let group = m.rest.entry(self.key(path, &meta)).or_default();
        let (kept, paths) = if new {
            (&mut m.new, &mut group.new)
        } else {
            (&mut m.old, &mut group.old)
        };
        paths.push(path.to_path_buf());
        if let (Some(dir), Some(parent)) = (path.parent(), parent) {
            kept.0.insert(dir.as_os_str().to_os_string(), parent);
        }
        kept.0.insert(path.as_os_str().to_os_string(), meta);
    }

    /// One path of the merged order, with what each side has there.
    fn step(&self, m: &mut Merged, path: &Path, then: Option<Meta>, now: Option<Meta>) {
        let parent_then = then.as_ref().and_then(|t| m.above_old.enter(path, t));
        let parent_now = now.as_ref().and_then(|n| m.above_new.enter(path, n));
        if now.is_none() && !(self.compared)(path) {
            return;
        }
        // An inode with several links is compared with all of its paths (see `group`): a
        // link moved explains its ctime.
        if let (Some(then), Some(now)) = (&then, &now) {
            let same_entry = (!self.same_history || !then.other_inode(now))
                && !self.linked(then)
                && !self.linked(now);
            if same_entry {
                let mut what = differences(then, now, self.same_history);
                if what.is_empty() && !self.same_history && self.content_differs(path, then, now) {
                    what.push("content");
                }
                if !what.is_empty() {
                    m.out.push(change(
                        path,
                        ChangeKind::Changed,
                        None,
                        what,
                        Some(then),
                        Some(now),
                    ));
                }
                return;
            }
        }
        if let Some(then) = then {
            self.keep(m, false, path, then, parent_then);
        }
        if let Some(now) = now {
            self.keep(m, true, path, now, parent_now);
        }
    }

    fn content_differs(&self, path: &Path, then: &Meta, now: &Meta) -> bool {
        let compare = Compare {
            old: &Kept::default(),
            new: &Kept::default(),
            same_history: self.same_history,
            same_content: self.same_content,
        };
        compare.content_differs(path, then, now)
    }

    /// Merges the old state's entries with the new state's, both in tree order, and gives
    /// the changes, sorted by path. A new entry comes as a `T` that `complete` turns into
    /// its metadata, given the old entry at the same path, if any (a walk reads the
    /// extended attributes only of what is new or whose ctime moved).
    ///
    /// Every question the pairing asks of a side is about an entry kept (one that differs
    /// or whose path holds another inode on the other side, both kept then) or its parent
    /// (kept with it): what a side does not hold is not there.
    pub fn run<E, T>(
        &self,
        mut old: impl Iterator<Item = Result<(PathBuf, Meta), E>>,
        mut new: impl Iterator<Item = Result<(PathBuf, T), E>>,
        mut complete: impl FnMut(&Path, T, Option<&Meta>) -> Meta,
    ) -> Result<Vec<Change>, E> {
        let mut m = Merged::default();
        let mut o = old.next().transpose()?;
        let mut n = new.next().transpose()?;
        loop {
            let order = match (&o, &n) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((p, _)), Some((q, _))) => crate::paths::tree_order(p, q),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let (path, then) = o.take().expect("an old entry");
                    self.step(&mut m, &path, Some(then), None);
                    o = old.next().transpose()?;
                }
                std::cmp::Ordering::Greater => {
                    let (path, item) = n.take().expect("a new entry");
                    let now = complete(&path, item, None);
                    self.step(&mut m, &path, None, Some(now));
                    n = new.next().transpose()?;
                }
                std::cmp::Ordering::Equal => {
                    let (path, then) = o.take().expect("an old entry");
                    let (_, item) = n.take().expect("a new entry");
                    let now = complete(&path, item, Some(&then));
                    self.step(&mut m, &path, Some(then), Some(now));
                    o = old.next().transpose()?;
                    n = new.next().transpose()?;
                }
            }
        }
        let Merged {
            old: kept_old,
            new: kept_new,
            rest,
            mut out,
            ..
        } = m;
        let compare = Compare {
            old: &kept_old,
            new: &kept_new,
            same_history: self.same_history,
            same_content: self.same_content,
        };
        for g in rest.into_values() {
            compare.group(g, &mut out);
        }
        out.sort_by(|a, b| {
            crate::paths::tree_order(&a.path, &b.path).then(a.change.cmp(&b.change))
        });
        Ok(out)
    }
}

/// A baseline manifest. Keyed by the path's bytes: a deep tree's paths are long, and
/// hashing them byte-wise costs a fraction of `Path`'s component-wise hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: HashMap<OsString, Meta>,
    /// The `.baseline` snapshot this manifest belongs to: each subvolume in it (its root
    /// first), so that `diff` pairs the two only when they are of one `baseline` run.
    /// `Some(empty)`: none belongs to it; `None`: not recorded (format 3 and older).
    pub snapshot: Option<Vec<SnapshotPart>>,
    /// What was mounted below the root when it was recorded (as seen from the host's
    /// `/`): the walk did not enter it, and it is not the root's.
    pub mounts: Vec<PathBuf>,
}

/// One subvolume of a `.baseline` snapshot, as a manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotPart {
    /// Where it is, as seen from the host's `/` (`/` for the snapshot of the root).
    pub at: PathBuf,
    pub id: u64,
    pub uuid: Option<[u8; 16]>,
}

impl Side for Manifest {
    fn get(&self, path: &Path) -> Option<Cow<'_, Meta>> {
        self.entries.get(path.as_os_str()).map(Cow::Borrowed)
    }
}

impl Manifest {
    pub fn new(entries: impl IntoIterator<Item = (PathBuf, Meta)>) -> Manifest {
        Manifest {
            entries: entries
                .into_iter()
                .map(|(p, m)| (p.into_os_string(), m))
                .collect(),
            snapshot: None,
            mounts: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, path: &Path) -> Option<&Meta> {
        self.entries.get(path.as_os_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Path, &Meta)> {
        self.entries.iter().map(|(p, m)| (Path::new(p), m))
    }

    /// Whether every entry carries stamps (a manifest of format 2), so that renames and
    /// ctime can be compared.
    pub fn has_stamps(&self) -> bool {
        self.entries.values().all(|m| m.stamps.is_some())
    }

    /// How an entry now compares with its baseline.
    pub fn compare(&self, path: &Path, meta: &Meta) -> Status {
        match self.entries.get(path.as_os_str()) {
            None => Status::Added,
            Some(old) => {
                let what = if old.other_inode(meta) {
                    replaced(old, meta)
                } else {
                    differences(old, meta, true)
                };
                if what.is_empty() {
                    Status::Unchanged
                } else {
                    Status::Changed(what)
                }
            }
        }
    }

    /// The file format: a header line, then one tab-separated line per entry
    /// (`kind mode uid gid size mtime_ns ctime_ns ino btime_ns nlink xattrs subvol path
    /// target`; `-` for what is unknown; the extended attributes' digest in lowercase hex,
    /// `0` for none), paths escaped
    /// so that any byte survives and each entry is one line. Entries are in tree order
    /// (see [`crate::paths::tree_order`]): `diff` merges a walk in that order against it.
    pub fn render(&self) -> Vec<u8> {
        let mut lines: Vec<(&Path, &Meta)> = self.iter().collect();
        lines.sort_unstable_by(|a, b| crate::paths::tree_order(a.0, b.0));
        let mut out = String::with_capacity(lines.len() * 100);
        render_header(&mut out, self.snapshot.as_deref(), &self.mounts);
        for (path, m) in lines {
            render_entry(&mut out, path, m);
        }
        out.into_bytes()
    }

    /// Parses a manifest of format 4 down to 1; an error names the line.
    pub fn parse(data: &[u8]) -> Result<Manifest, String> {
        Manifest::parse_up_to(data, false)
    }

    /// The header of a manifest alone (its format, the snapshot it belongs to, the mounts
    /// of its moment), with no entries: what the generation search needs, which must not
    /// pay for parsing a million entries it never reads.
    pub fn parse_header(data: &[u8]) -> Result<Manifest, String> {
        Manifest::parse_up_to(data, true)
    }

    /// [`Manifest::parse_header`] of a file, read no further than its header.
    pub fn read_header(input: impl std::io::BufRead) -> Result<Manifest, ManifestError> {
        let reader = Reader::new(input)?;
        Ok(Manifest {
            entries: HashMap::new(),
            snapshot: reader.snapshot,
            mounts: reader.mounts,
        })
    }

    fn parse_up_to(data: &[u8], header_only: bool) -> Result<Manifest, String> {
        let mut reader = Reader::new(data).map_err(|e| e.to_string())?;
        let mut entries = HashMap::new();
        if !header_only {
            while let Some(entry) = reader.next_entry() {
                let (path, meta) = entry.map_err(|e| e.to_string())?;
                match entries.entry(path.into_os_string()) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        return Err(format!(
                            "line {}: {} is listed twice",
                            reader.line(),
                            escape(Path::new(e.key()))
                        ));
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(meta);
                    }
                }
            }
        }
        Ok(Manifest {
            entries,
            snapshot: reader.snapshot,
            mounts: reader.mounts,
        })
    }
}

/// The header line and the lines starting with `#` (format 4).
fn render_header(out: &mut String, snapshot: Option<&[SnapshotPart]>, mounts: &[PathBuf]) {
    out.push_str(HEADER);
    out.push('\n');
    match snapshot {
        None => {}
        Some([]) => out.push_str("#no-snapshot\n"),
        Some(parts) => {
            for part in parts {
                let uuid = part.uuid.map_or_else(
                    || "-".to_string(),
                    |u| u.iter().map(|b| format!("{b:02x}")).collect(),
                );
                let _ = writeln!(out, "#snapshot\t{}\t{uuid}\t{}", part.id, escape(&part.at));
            }
        }
    }
    for mount in mounts {
        let _ = writeln!(out, "#mount\t{}", escape(mount));
    }
}

/// One entry's line.
fn render_entry(out: &mut String, path: &Path, m: &Meta) {
    let kind = match m.kind {
        EntryKind::Directory => 'd',
        EntryKind::File => 'f',
        EntryKind::Symlink => 'l',
        EntryKind::Other => 'o',
    };
    let _ = write!(
        out,
        "{kind}\t{:o}\t{}\t{}\t{}\t{}\t",
        m.mode, m.uid, m.gid, m.size, m.mtime_ns
    );
    match &m.stamps {
        Some(s) => {
            let _ = write!(out, "{}\t{}\t", s.ctime_ns, s.ino);
            match s.btime_ns {
                Some(b) => {
                    let _ = write!(out, "{b}\t");
                }
                None => out.push_str("-\t"),
            }
            let _ = write!(out, "{}\t", s.nlink);
        }
        None => out.push_str("-\t-\t-\t-\t"),
    }
    match m.xattrs {
        Some(x) => {
            let _ = write!(out, "{x:x}\t");
        }
        None => out.push_str("-\t"),
    }
    match m.stamps.and_then(|s| s.subvol) {
        Some(v) => {
            let _ = write!(out, "{v}\t");
        }
        None => out.push_str("-\t"),
    }
    out.push_str(&escape(path));
    out.push('\t');
    if let Some(target) = &m.target {
        out.push_str(&escape(target));
    }
    out.push('\n');
}

/// A manifest written one entry at a time, in the order given (tree order, for `diff` to
/// merge against), with memory that does not grow with the number of entries.
pub struct Writer<W: std::io::Write> {
    out: W,
    line: String,
}

impl<W: std::io::Write> Writer<W> {
    /// Writes the header: the snapshot the manifest belongs to (`Some(empty)`: none) and
    /// the mounts below the root.
    pub fn new(
        mut out: W,
        snapshot: &[SnapshotPart],
        mounts: &[PathBuf],
    ) -> std::io::Result<Writer<W>> {
        let mut line = String::new();
        render_header(&mut line, Some(snapshot), mounts);
        out.write_all(line.as_bytes())?;
        Ok(Writer { out, line })
    }

    pub fn entry(&mut self, path: &Path, meta: &Meta) -> std::io::Result<()> {
        self.line.clear();
        render_entry(&mut self.line, path, meta);
        self.out.write_all(self.line.as_bytes())
    }

    /// The output, to be flushed and synced.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Why a manifest could not be read.
#[derive(Debug)]
pub enum ManifestError {
    /// It is not a manifest: `line N: why`.
    Invalid(String),
    Io(std::io::Error),
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestError::Invalid(why) => f.write_str(why),
            ManifestError::Io(e) => write!(f, "{}", crate::error::describe(e)),
        }
    }
}

/// The longest line read (a path of a tree tens of thousands of directories deep, every
/// byte escaped, fits many times): a longer one is damage, not an entry, and is not held
/// in memory.
const MAX_LINE: usize = 16 << 20;

/// A manifest read one line at a time: the header when opened, then each entry in the
/// order of the file. Memory holds one line, whatever the number of entries.
pub struct Reader<R> {
    input: R,
    version: u32,
    /// As [`Manifest::snapshot`].
    pub snapshot: Option<Vec<SnapshotPart>>,
    /// As [`Manifest::mounts`].
    pub mounts: Vec<PathBuf>,
    /// The number of the last line read.
    line: usize,
    buf: Vec<u8>,
    /// `buf` holds an entry line, read while looking for the end of the header.
    pending: bool,
}

impl<R: std::io::BufRead> Reader<R> {
    /// Reads the header (the format line and the `#` lines of format 4).
    pub fn new(input: R) -> Result<Reader<R>, ManifestError> {
        let mut reader = Reader {
            input,
            version: 0,
            snapshot: None,
            mounts: Vec::new(),
            line: 0,
            buf: Vec::new(),
            pending: false,
        };
        let first = reader.read_line()?;
        reader.version = match first {
            Some(h) if h == HEADER.as_bytes() => 4,
            Some(h) if h == HEADER_3.as_bytes() => 3,
            Some(h) if h == HEADER_2.as_bytes() => 2,
            Some(h) if h == HEADER_1.as_bytes() => 1,
            _ => {
                return Err(ManifestError::Invalid(format!(
                    "line 1: expected {HEADER:?} (or {HEADER_3:?}, {HEADER_2:?}, {HEADER_1:?})"
                )));
            }
        };
        while reader.read_line()?.is_some() {
            if reader.version < 4 || reader.buf.first() != Some(&b'#') {
                reader.pending = true;
                break;
            }
            reader.header_line()?;
        }
        Ok(reader)
    }

    /// The format's number (1 to 4).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The number of the line the last entry (or error) came from.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The next line, without its newline; `None` at the end. Every line ends with a
    /// newline (imperm writes them so): a last line without one was cut short, and what
    /// is left of it may still read as an entry (a symlink's target cut, or a file's line
    /// cut right after its path), so it is refused.
    fn read_line(&mut self) -> Result<Option<&[u8]>, ManifestError> {
        use std::io::{BufRead, Read};
        self.buf.clear();
        let n = (&mut self.input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.buf)
            .map_err(ManifestError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        } else if self.buf.len() > MAX_LINE {
            return Err(ManifestError::Invalid(format!(
                "line {}: longer than {} MiB",
                self.line,
                MAX_LINE >> 20
            )));
        } else {
            return Err(ManifestError::Invalid(format!(
                "line {}: cut short (no newline at its end)",
                self.line
            )));
        }
        Ok(Some(&self.buf))
    }

    /// One `#` line of the header, in `buf`.
    fn header_line(&mut self) -> Result<(), ManifestError> {
        let n = self.line;
        let why = |w: &str| ManifestError::Invalid(format!("line {n}: {w}"));
        let line = std::str::from_utf8(&self.buf).map_err(|_| why("not UTF-8"))?;
        let f: Vec<&str> = line.split('\t').collect();
        match f[..] {
            ["#no-snapshot"] if self.snapshot.is_none() => self.snapshot = Some(Vec::new()),
            ["#snapshot", id, uuid, at] => {
                let parts: &mut Vec<SnapshotPart> = self.snapshot.get_or_insert_with(Vec::new);
                let id = Some(id)
                    .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| why("bad subvolume id"))?;
                let uuid = match uuid {
                    "-" => None,
                    hex => Some(parse_uuid(hex).ok_or_else(|| why("bad uuid"))?),
                };
                let at = unescape(at)
                    .filter(|p| p.is_absolute())
                    .ok_or_else(|| why("bad snapshot path"))?;
                parts.push(SnapshotPart { at, id, uuid });
            }
            ["#mount", at] => self.mounts.push(
                unescape(at)
                    .filter(|p| p.is_absolute())
                    .ok_or_else(|| why("bad mount path"))?,
            ),
            _ => return Err(why("not a manifest header line")),
        }
        Ok(())
    }

    /// The next entry; `None` at the end of the file.
    pub fn next_entry(&mut self) -> Option<Result<(PathBuf, Meta), ManifestError>> {
        if !std::mem::take(&mut self.pending) {
            match self.read_line() {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        let n = self.line;
        // The header comes first (see `render`), and the search reads no further: a
        // header line among the entries would be read by the walk alone.
        if self.version >= 4 && self.buf.first() == Some(&b'#') {
            return Some(Err(ManifestError::Invalid(format!(
                "line {n}: a header line after the entries"
            ))));
        }
        Some(
            entry(&self.buf, self.version)
                .map_err(|why| ManifestError::Invalid(format!("line {n}: {why}"))),
        )
    }
}

/// 32 lowercase hex digits.
fn parse_uuid(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// One line of a manifest.
fn entry(line: &[u8], version: u32) -> Result<(PathBuf, Meta), String> {
    const BAD: &str = "not a manifest entry";
    let line = std::str::from_utf8(line).map_err(|_| format!("{BAD} (not UTF-8)"))?;
    let f: Vec<&str> = line.split('\t').collect();
    let want = match version {
        1 => 8,
        2 => 13,
        _ => 14,
    };
    if f.len() != want {
        return Err(format!("{BAD} ({} fields, not {want})", f.len()));
    }
    // Decimal, as rendered: digits with an optional leading minus, nothing else.
    let num = |i: usize, what: &str| -> Result<i128, String> {
        let text = f[i];
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{BAD} (bad {what} {text:?})"));
        }
        text.parse()
            .map_err(|_| format!("{BAD} ({what} out of range)"))
    };
    let unsigned = |i: usize, max: u64, what: &str| -> Result<u64, String> {
        u64::try_from(num(i, what)?)
            .ok()
            .filter(|&v| v <= max)
            .ok_or_else(|| format!("{BAD} ({what} out of range)"))
    };
    let kind = match f[0] {
        "d" => EntryKind::Directory,
        "f" => EntryKind::File,
        "l" => EntryKind::Symlink,
        "o" => EntryKind::Other,
        other => return Err(format!("{BAD} (unknown kind {other:?})")),
    };
    let mode = Some(f[1])
        .filter(|m| !m.is_empty() && m.len() <= 4 && m.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .ok_or_else(|| format!("{BAD} (bad mode {:?})", f[1]))?;
    let uid = unsigned(2, u32::MAX.into(), "uid")? as u32;
    let gid = unsigned(3, u32::MAX.into(), "gid")? as u32;
    let size = unsigned(4, u64::MAX, "size")?;
    let mtime_ns = num(5, "mtime")?;
    let (stamps, xattrs, rest) = if version == 1 {
        (None, None, 6)
    } else {
        let unknown = |i: usize| f[i] == "-";
        let subvol = if version < 3 || unknown(11) {
            None
        } else {
            Some(unsigned(11, u64::MAX, "subvolume")?)
        };
        let stamps = if unknown(6) && unknown(7) && unknown(8) && unknown(9) {
            None
        } else {
            Some(Stamps {
                ctime_ns: num(6, "ctime")?,
                ino: unsigned(7, u64::MAX, "inode")?,
                btime_ns: if unknown(8) {
                    None
                } else {
                    Some(num(8, "birth time")?)
                },
                nlink: unsigned(9, u64::MAX, "link count")?,
                subvol,
                atime_ns: None,
            })
        };
        let xattrs = if unknown(10) {
            None
        } else if (1..=16).contains(&f[10].len())
            && f[10]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            u64::from_str_radix(f[10], 16).ok()
        } else {
            return Err(format!("{BAD} (bad xattrs {:?})", f[10]));
        };
        (stamps, xattrs, if version == 2 { 11 } else { 12 })
    };
    let path = unescape(f[rest]).ok_or_else(|| format!("{BAD} (bad escape in the path)"))?;
    if !path.is_absolute() {
        return Err(format!(
            "{BAD} (the path {} is not absolute)",
            crate::paths::quoted(&path)
        ));
    }
    // As a walk makes them: the merge in tree order compares bytes, and a `..` would be
    // paired with the real path by inode and reported as a rename.
    if !crate::paths::normalize_given(path.as_os_str())
        .is_ok_and(|n| n.as_os_str() == path.as_os_str())
    {
        return Err(format!(
            "{BAD} (the path {} is not canonical)",
            crate::paths::quoted(&path)
        ));
    }
    let target = match kind {
        EntryKind::Symlink => {
            Some(unescape(f[rest + 1]).ok_or_else(|| format!("{BAD} (bad escape in the target)"))?)
        }
        _ if f[rest + 1].is_empty() => None,
        _ => return Err(format!("{BAD} (a link target on what is not a symlink)")),
    };
    let meta = Meta {
        kind,
        mode,
        uid,
        gid,
        size: if kind == EntryKind::Directory {
            0
        } else {
            size
        },
        mtime_ns,
        target,
        stamps,
        xattrs,
    };
    Ok((path, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::ffi::OsStringExt;

    fn meta(kind: EntryKind, size: u64, mtime_ns: i128) -> Meta {
        Meta {
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime_ns,
            target: None,
            stamps: None,
            xattrs: None,
        }
    }

    fn stamped(kind: EntryKind, ino: u64, ctime: i128) -> Meta {
        Meta {
            stamps: Some(Stamps {
                ino,
                btime_ns: Some(7),
                ctime_ns: ctime,
                nlink: 1,
                subvol: Some(5),
                atime_ns: None,
            }),
            xattrs: Some(0),
            ..meta(kind, if kind == EntryKind::Directory { 0 } else { 10 }, 100)
        }
    }

    #[test]
    fn manifests_round_trip_any_path() {
        let odd = PathBuf::from(std::ffi::OsString::from_vec(
            b"/etc/we\tird\\na\xffme\n".to_vec(),
        ));
        let mut link = meta(EntryKind::Symlink, 0, 5);
        link.target = Some(PathBuf::from("/etc/static/x y"));
        let mut file = stamped(EntryKind::File, 300, 5);
        file.xattrs = Some(u64::MAX);
        let m = Manifest::new([
            (PathBuf::from("/etc"), meta(EntryKind::Directory, 0, 1)),
            (
                odd.clone(),
                meta(EntryKind::File, 12, 1_700_000_000_123_456_789),
            ),
            (PathBuf::from("/etc/localtime"), link),
            (PathBuf::from("/etc/f"), file),
        ]);
        let text = m.render();
        assert_eq!(
            text.iter().filter(|&&b| b == b'\n').count(),
            5,
            "one line each"
        );
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert!(m.get(&odd).is_some());
    }

    #[test]
    fn format_one_manifests_are_still_read() {
        let m = Manifest::parse(
            b"imperm-baseline 1\nf\t644\t0\t0\t3\t5\t/etc/a\t\nl\t777\t0\t0\t1\t5\t/etc/l\tx\n",
        )
        .unwrap();
        assert_eq!(
            m.get(Path::new("/etc/a")),
            Some(&meta(EntryKind::File, 3, 5))
        );
        assert_eq!(
            m.get(Path::new("/etc/l")).unwrap().target.as_deref(),
            Some(Path::new("x"))
        );
        assert!(!m.has_stamps(), "renames and ctime are not compared then");
    }

    #[test]
    fn bad_manifests_name_the_line() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"nope\n",
                "line 1: expected \"imperm-baseline 4\" (or \"imperm-baseline 3\", \"imperm-baseline 2\", \"imperm-baseline 1\")",
            ),
            (b"", "line 1: expected"),
            (
                b"imperm-baseline 1\nf\t644\t0\t0\n",
                "line 2: not a manifest entry (4 fields, not 8)",
            ),
            (
                b"imperm-baseline 2\n\n",
                "line 2: not a manifest entry (1 fields, not 13)",
            ),
            (
                b"imperm-baseline 1\nd\t755\t0\t0\t0\t1\t/a\t\nf\t644\t0\t0\t+3\t5\t/etc/a\t\n",
                "line 3: not a manifest entry (bad size \"+3\")",
            ),
            (
                b"imperm-baseline 1\nf\t644\t0\t0\t3\t5\tetc/a\t\n",
                "line 2: not a manifest entry (the path \"etc/a\" is not absolute)",
            ),
            (
                b"imperm-baseline 1\nf\t644\t0\t0\t3\t5\t/a\\q\t\n",
                "line 2: not a manifest entry (bad escape in the path)",
            ),
            (
                b"imperm-baseline 1\nf\t644\t0\t0\t3\t5\t/a\t\nd\t755\t0\t0\t0\t5\t/a\t\n",
                "line 3: /a is listed twice",
            ),
            (
                b"imperm-baseline 1\nf\t99644\t0\t0\t3\t5\t/a\t\n",
                "line 2: not a manifest entry (bad mode \"99644\")",
            ),
            (
                b"imperm-baseline 1\nf\t644\t4294967296\t0\t3\t5\t/a\t\n",
                "line 2: not a manifest entry (uid out of range)",
            ),
            (
                b"imperm-baseline 1\nf\t644\t0\t0\t3\t5\t/a\tx\n",
                "line 2: not a manifest entry (a link target on what is not a symlink)",
            ),
            (
                b"imperm-baseline 1\nf\t644\t0\t0\t3\t5\t/\xff\t\n",
                "line 2: not a manifest entry (not UTF-8)",
            ),
        ];
        for (text, want) in cases {
            let err = Manifest::parse(text).unwrap_err();
            assert!(
                err.starts_with(want),
                "{err:?} for {:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    /// The snapshot a manifest belongs to and the mounts below the root survive a round
    /// trip; "none" and "not recorded" stay apart; a bad header line names its line.
    #[test]
    fn the_snapshot_and_the_mounts_round_trip() {
        let mut m = Manifest::new([("/a".into(), meta(EntryKind::File, 1, 2))]);
        assert_eq!(Manifest::parse(&m.render()).unwrap().snapshot, None);
        m.snapshot = Some(Vec::new());
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
        m.snapshot = Some(vec![
            SnapshotPart {
                at: "/".into(),
                id: 256,
                uuid: Some([0xab; 16]),
            },
            SnapshotPart {
                at: PathBuf::from(OsString::from_vec(b"/srv/\xff\n".to_vec())),
                id: 300,
                uuid: None,
            },
        ]);
        m.mounts = vec![
            "/srv/mnt".into(),
            PathBuf::from(OsString::from_vec(b"/t\tab".to_vec())),
        ];
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
        // The header alone: the snapshot and the mounts, no entries, and a body that
        // would not parse is never read.
        let mut text = m.render();
        let header = Manifest::parse_header(&text).unwrap();
        assert_eq!(
            (header.snapshot.as_ref(), &header.mounts, header.len()),
            (m.snapshot.as_ref(), &m.mounts, 0)
        );
        // A header line among the entries, which the search would not read, is refused.
        let mut late = m.render();
        late.extend_from_slice(b"#mount\t/elsewhere\n");
        let err = Manifest::parse(&late).unwrap_err();
        assert!(err.ends_with("a header line after the entries"), "{err}");
        text.extend_from_slice(b"not an entry\n");
        assert!(Manifest::parse(&text).is_err());
        assert_eq!(Manifest::parse_header(&text).unwrap(), header);
        for (text, want) in [
            (
                &b"imperm-baseline 4\n#snapshot\t1\tzz\t/\n"[..],
                "line 2: bad uuid",
            ),
            (
                b"imperm-baseline 4\n#mount\trel\n",
                "line 2: bad mount path",
            ),
            (
                b"imperm-baseline 4\n#what\n",
                "line 2: not a manifest header line",
            ),
            (
                b"imperm-baseline 3\n#mount\t/a\n",
                "line 2: not a manifest entry",
            ),
        ] {
            let err = Manifest::parse(text).unwrap_err();
            assert!(err.starts_with(want), "{err:?}");
        }
    }

    #[test]
    fn what_counts_as_a_change() {
        let base = meta(EntryKind::File, 10, 100);
        let cases: Vec<(Meta, Vec<&str>)> = vec![
            (base.clone(), vec![]),
            (meta(EntryKind::File, 11, 100), vec!["content"]),
            (meta(EntryKind::File, 10, 101), vec!["content"]),
            (
                Meta {
                    mode: 0o600,
                    ..base.clone()
                },
                vec!["mode"],
            ),
            (
                Meta {
                    uid: 1000,
                    ..base.clone()
                },
                vec!["owner"],
            ),
            (meta(EntryKind::Directory, 0, 100), vec!["type"]),
        ];
        for (new, want) in cases {
            assert_eq!(differences(&base, &new, true), want, "{new:?}");
        }
        // A directory's mtime moves with its entries; that alone is no change.
        let dir = meta(EntryKind::Directory, 0, 1);
        assert!(differences(&dir, &meta(EntryKind::Directory, 0, 2), true).is_empty());
    }

    /// ctime moves on every change; it means content only when nothing else explains it.
    #[test]
    fn a_moved_ctime_is_content_only_when_nothing_else_explains_it() {
        let old = stamped(EntryKind::File, 300, 1);
        let touched = stamped(EntryKind::File, 300, 2);
        assert_eq!(differences(&old, &touched, true), ["content"], "touch -r");
        assert!(
            differences(&old, &touched, false).is_empty(),
            "not by ctime"
        );
        let chmod = Meta {
            mode: 0o600,
            ..touched.clone()
        };
        assert_eq!(differences(&old, &chmod, true), ["mode"]);
        let xattr = Meta {
            xattrs: Some(42),
            ..touched.clone()
        };
        assert_eq!(differences(&old, &xattr, true), ["xattr"]);
        let mut linked = touched.clone();
        linked.stamps.as_mut().unwrap().nlink = 2;
        assert!(differences(&old, &linked, true).is_empty(), "a link added");
        let dir = stamped(EntryKind::Directory, 300, 1);
        assert!(differences(&dir, &stamped(EntryKind::Directory, 300, 9), true).is_empty());
        // Another inode in its place: its content is new.
        let other = stamped(EntryKind::File, 301, 1);
        assert_eq!(replaced(&old, &other), ["content"]);
        let mut link = stamped(EntryKind::Symlink, 300, 1);
        link.target = Some("a".into());
        let mut relinked = stamped(EntryKind::Symlink, 301, 3);
        relinked.target = Some("b".into());
        assert_eq!(replaced(&link, &relinked), ["target"]);
    }

    /// What else explains a moved ctime, in a table: an access time set at that moment,
    /// and (through `Compare`) a link of the inode added, removed or moved.
    #[test]
    fn what_explains_a_moved_ctime() {
        let old = stamped(EntryKind::File, 300, 1);
        let with = |atime: Option<i128>, ctime: i128| {
            let mut m = stamped(EntryKind::File, 300, ctime);
            m.stamps.as_mut().unwrap().atime_ns = atime;
            m
        };
        let cases: &[(Meta, &[&str], &str)] = &[
            (with(Some(9), 9), &[], "touch -a: atime set with the ctime"),
            (with(Some(1), 9), &["content"], "rewritten, mtime put back"),
            (with(None, 9), &["content"], "atime unknown"),
            (with(Some(9), 1), &[], "nothing moved"),
        ];
        for (new, want, why) in cases {
            assert_eq!(differences(&old, new, true), *want, "{why}");
        }
        // Two links, one moved: the ctime moved with it, the content did not.
        let linked = |ctime: i128| {
            let mut m = stamped(EntryKind::File, 300, ctime);
            m.stamps.as_mut().unwrap().nlink = 2;
            m
        };
        let before = Manifest::new([("/a".into(), linked(1)), ("/b".into(), linked(1))]);
        let after = Manifest::new([("/a".into(), linked(2)), ("/c".into(), linked(2))]);
        let compare = Compare {
            old: &before,
            new: &after,
            same_history: true,
            same_content: None,
        };
        assert_eq!(
            lines(&compare.between(&before, &after)),
            ["Renamed /c from /b"]
        );
        // The same links, the ctime moved: content.
        let after = Manifest::new([("/a".into(), linked(2)), ("/b".into(), linked(2))]);
        let compare = Compare {
            new: &after,
            ..compare
        };
        assert_eq!(
            lines(&compare.between(&before, &after)),
            ["Changed /a [\"content\"]", "Changed /b [\"content\"]"]
        );
    }

    /// Inode numbers and birth times repeat across subvolumes (a snapshot of a subvolume
    /// has the very same): the subvolume tells them apart.
    #[test]
    fn the_same_inode_in_another_subvolume_is_another_inode() {
        let a = stamped(EntryKind::File, 257, 1);
        let mut b = a.clone();
        b.stamps.as_mut().unwrap().subvol = Some(6);
        assert!(a.other_inode(&b));
        b.stamps.as_mut().unwrap().subvol = None;
        assert!(!a.other_inode(&b), "unknown: by number and birth time");
        // A subvolume cloned since: its files are added, not renamed from the original's.
        let before = Manifest::new([("/m/box/f".into(), a.clone())]);
        let mut clone = a.clone();
        clone.stamps.as_mut().unwrap().subvol = Some(6);
        let after = Manifest::new([("/m/box/f".into(), a), ("/m/clone/f".into(), clone)]);
        let compare = Compare {
            old: &before,
            new: &after,
            same_history: true,
            same_content: None,
        };
        assert_eq!(
            lines(&compare.between(&before, &after)),
            ["Added /m/clone/f"]
        );
    }

    impl Compare<'_> {
        /// The comparison as it was before the merge, holding both states in memory: the
        /// oracle the merge must agree with.
        /// The changes between two whole states. An entry at the same path with the same inode
        /// on both sides (nearly all of them) is compared there and then; the rest are grouped
        /// by inode (number and birth time) where both states share a history and have
        /// stamps, else by path, and paired as [`Compare::changes`] does.
        fn between_in_memory<'a>(&self, old: &'a Manifest, new: &'a Manifest) -> Vec<Change> {
            #[derive(Hash, PartialEq, Eq)]
            enum Key<'a> {
                Inode(Option<u64>, u64, Option<i128>),
                Path(&'a OsStr),
            }
            let key = |path: &'a Path, meta: &Meta| match (&meta.stamps, self.same_history) {
                (Some(s), true) => Key::Inode(s.subvol, s.ino, s.btime_ns),
                _ => Key::Path(path.as_os_str()),
            };
            // An inode with several links is compared with all of its paths (see `group`): a
            // link moved explains its ctime.
            let linked = |m: &Meta| self.same_history && m.stamps.is_some_and(|s| s.nlink > 1);
            let same_entry = |then: &Meta, now: &Meta| {
                (!self.same_history || !then.other_inode(now)) && !linked(then) && !linked(now)
            };
            let mut out = Vec::new();
            let mut rest: HashMap<Key, Group> = HashMap::new();
            for (path, now) in new.iter() {
                match old.get(path) {
                    Some(then) if same_entry(then, now) => {
                        let mut what = differences(then, now, self.same_history);
                        if what.is_empty()
                            && !self.same_history
                            && self.content_differs(path, then, now)
                        {
                            what.push("content");
                        }
                        if !what.is_empty() {
                            out.push(change(
                                path,
                                ChangeKind::Changed,
                                None,
                                what,
                                Some(then),
                                Some(now),
                            ));
                        }
                    }
                    _ => {
                        rest.entry(key(path, now))
                            .or_default()
                            .new
                            .push(path.to_path_buf());
                    }
                }
            }
            for (path, then) in old.iter() {
                match new.get(path) {
                    Some(now) if same_entry(then, now) => {}
                    _ => {
                        rest.entry(key(path, then))
                            .or_default()
                            .old
                            .push(path.to_path_buf());
                    }
                }
            }
            for g in rest.into_values() {
                self.group(g, &mut out);
            }
            out.sort_by(|a, b| {
                crate::paths::tree_order(&a.path, &b.path).then(a.change.cmp(&b.change))
            });
            out
        }
    }

    fn lines(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let mut line = format!("{:?} {}", c.change, escape(&c.path));
                if let Some(from) = &c.from {
                    line += &format!(" from {}", escape(from));
                }
                if !c.what.is_empty() {
                    line += &format!(" {:?}", c.what);
                }
                line
            })
            .collect()
    }

    /// The pairing of inodes and paths, on two small states.
    #[test]
    fn renames_links_and_replacements_are_told_apart() {
        use EntryKind::{Directory as D, File as F};
        let old = Manifest::new([
            ("/d".into(), stamped(D, 1, 1)),
            ("/d/x".into(), stamped(F, 2, 1)),
            ("/a".into(), stamped(F, 3, 1)),
            ("/b".into(), stamped(F, 4, 1)),
            ("/c".into(), stamped(F, 5, 1)),
            ("/gone".into(), stamped(F, 6, 1)),
            ("/over".into(), stamped(F, 7, 1)),
            ("/src".into(), stamped(F, 8, 1)),
        ]);
        let mut x_chmod = stamped(F, 2, 2);
        x_chmod.mode = 0o600;
        let mut linked = stamped(F, 4, 2);
        linked.stamps.as_mut().unwrap().nlink = 2;
        let new = Manifest::new([
            // /d renamed to /e, /d/x carried along and chmodded
            ("/e".into(), stamped(D, 1, 2)),
            ("/e/x".into(), x_chmod),
            // /a renamed
            ("/a2".into(), stamped(F, 3, 2)),
            // /b hard-linked as /b2
            ("/b".into(), linked.clone()),
            ("/b2".into(), linked),
            // /c replaced by a new file (rename-over from a temporary name)
            ("/c".into(), stamped(F, 50, 2)),
            // /src moved over /over
            ("/over".into(), stamped(F, 8, 2)),
            ("/new".into(), stamped(F, 51, 2)),
        ]);
        let compare = Compare {
            old: &old,
            new: &new,
            same_history: true,
            same_content: None,
        };
        assert_eq!(
            lines(&compare.between(&old, &new)),
            [
                "Renamed /a2 from /a",
                "Added /b2",
                "Changed /c [\"content\"]",
                "Renamed /e from /d",
                "Changed /e/x [\"mode\"]",
                "Removed /gone",
                "Added /new",
                "Renamed /over from /src",
            ]
        );
        // Without a shared history (an old root a reset kept): by path, no renames.
        let compare = Compare {
            same_history: false,
            ..compare
        };
        let got = lines(&compare.between(&old, &new));
        assert!(got.contains(&"Removed /a".to_string()), "{got:?}");
        assert!(got.contains(&"Added /a2".to_string()), "{got:?}");
        assert!(!got.iter().any(|l| l.starts_with("Renamed")), "{got:?}");
        assert!(
            !got.iter().any(|l| l.contains("/b ")),
            "ctime is not compared: {got:?}"
        );
    }

    /// The names of one inode with several links, when directories are renamed: a name
    /// still there under its renamed parent pairs with itself (it was only carried
    /// along), and only the names left over are removed, added or renamed. Each case:
    /// the entries before and after (path, inode, ctime, link count), the changes.
    #[test]
    fn linked_names_carried_by_a_renamed_directory_pair_with_themselves() {
        use EntryKind::{Directory as D, File as F};
        type Entry = (&'static str, EntryKind, u64, i128, u64);
        type Case<'a> = (&'a str, &'a [Entry], &'a [Entry], &'a [&'a str]);
        let state = |entries: &[Entry]| {
            Manifest::new(entries.iter().map(|&(path, kind, ino, ctime, nlink)| {
                let mut m = stamped(kind, ino, ctime);
                m.stamps.as_mut().unwrap().nlink = nlink;
                (PathBuf::from(path), m)
            }))
        };
        let cases: &[Case] = &[
            (
                "rm in/f; mv in in2",
                &[
                    ("/in", D, 1, 1, 1),
                    ("/in/f", F, 2, 1, 2),
                    ("/in/hl", F, 2, 1, 2),
                ],
                &[("/in2", D, 1, 2, 1), ("/in2/hl", F, 2, 2, 1)],
                &["Removed /in/f", "Renamed /in2 from /in"],
            ),
            (
                "mv in in2; mv in2/f in2/g: hl's ctime moved with g's rename",
                &[
                    ("/in", D, 1, 1, 1),
                    ("/in/f", F, 2, 1, 2),
                    ("/in/hl", F, 2, 1, 2),
                ],
                &[
                    ("/in2", D, 1, 2, 1),
                    ("/in2/g", F, 2, 2, 2),
                    ("/in2/hl", F, 2, 2, 2),
                ],
                &["Renamed /in2 from /in", "Renamed /in2/g from /in/f"],
            ),
            (
                "mv in in2; rm in2/f; ln in2/hl in2/x",
                &[
                    ("/in", D, 1, 1, 1),
                    ("/in/f", F, 2, 1, 2),
                    ("/in/hl", F, 2, 1, 2),
                ],
                &[
                    ("/in2", D, 1, 2, 1),
                    ("/in2/hl", F, 2, 2, 2),
                    ("/in2/x", F, 2, 2, 2),
                ],
                &["Renamed /in2 from /in", "Renamed /in2/x from /in/f"],
            ),
            (
                "three names, two directories renamed, nothing else",
                &[
                    ("/a", D, 1, 1, 1),
                    ("/a/b", D, 2, 1, 1),
                    ("/a/b/f", F, 3, 1, 3),
                    ("/a/b/f2", F, 3, 1, 3),
                    ("/a/f3", F, 3, 1, 3),
                ],
                &[
                    ("/a2", D, 1, 2, 1),
                    ("/a2/f3", F, 3, 1, 3),
                    ("/b_out", D, 2, 2, 1),
                    ("/b_out/f", F, 3, 1, 3),
                    ("/b_out/f2", F, 3, 1, 3),
                ],
                &["Renamed /a2 from /a", "Renamed /b_out from /a/b"],
            ),
            (
                "three names, two directories renamed, the inode written",
                &[
                    ("/a", D, 1, 1, 1),
                    ("/a/b", D, 2, 1, 1),
                    ("/a/b/f", F, 3, 1, 3),
                    ("/a/b/f2", F, 3, 1, 3),
                    ("/a/f3", F, 3, 1, 3),
                ],
                &[
                    ("/a2", D, 1, 2, 1),
                    ("/a2/f3", F, 3, 2, 3),
                    ("/b_out", D, 2, 2, 1),
                    ("/b_out/f", F, 3, 2, 3),
                    ("/b_out/f2", F, 3, 2, 3),
                ],
                &[
                    "Renamed /a2 from /a",
                    "Changed /a2/f3 [\"content\"]",
                    "Renamed /b_out from /a/b",
                    "Changed /b_out/f [\"content\"]",
                    "Changed /b_out/f2 [\"content\"]",
                ],
            ),
            (
                "a name carried, another moved out of the directory",
                &[
                    ("/in", D, 1, 1, 1),
                    ("/in/f", F, 2, 1, 2),
                    ("/in/hl", F, 2, 1, 2),
                ],
                &[
                    ("/in2", D, 1, 2, 1),
                    ("/in2/hl", F, 2, 2, 2),
                    ("/out", F, 2, 2, 2),
                ],
                &["Renamed /in2 from /in", "Renamed /out from /in/f"],
            ),
            (
                "the same name, but in another directory: not carried",
                &[
                    ("/d", D, 1, 1, 1),
                    ("/d/f", F, 2, 1, 2),
                    ("/d/g", F, 2, 1, 2),
                ],
                &[
                    ("/d", D, 1, 2, 1),
                    ("/e", D, 4, 2, 1),
                    ("/e/f", F, 2, 2, 2),
                    ("/d/g", F, 2, 2, 2),
                ],
                &["Added /e", "Renamed /e/f from /d/f"],
            ),
        ];
        for (what, before, after, want) in cases {
            let (old, new) = (state(before), state(after));
            let compare = Compare {
                old: &old,
                new: &new,
                same_history: true,
                same_content: None,
            };
            assert_eq!(lines(&compare.between(&old, &new)), *want, "{what}");
        }
    }

    fn arbitrary_meta() -> impl Strategy<Value = Meta> {
        let kind = prop::sample::select(vec![
            EntryKind::Directory,
            EntryKind::File,
            EntryKind::Symlink,
            EntryKind::Other,
        ]);
        let stamps = prop::option::of(
            (
                any::<u64>(),
                prop::option::of(any::<i64>()),
                any::<i64>(),
                any::<u64>(),
                prop::option::of(any::<u64>()),
            )
                .prop_map(|(ino, btime, ctime, nlink, subvol)| Stamps {
                    ino,
                    btime_ns: btime.map(i128::from),
                    ctime_ns: i128::from(ctime),
                    nlink,
                    subvol,
                    atime_ns: None,
                }),
        );
        (
            kind,
            0u32..0o10000,
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<i64>(),
            prop::collection::vec(any::<u8>(), 0..12),
            stamps,
            prop::option::of(any::<u64>()),
        )
            .prop_map(
                |(kind, mode, uid, gid, size, mtime, target, stamps, xattrs)| Meta {
                    kind,
                    mode,
                    uid,
                    gid,
                    size: if kind == EntryKind::Directory {
                        0
                    } else {
                        size
                    },
                    mtime_ns: i128::from(mtime) * 1000,
                    target: (kind == EntryKind::Symlink)
                        .then(|| PathBuf::from(std::ffi::OsString::from_vec(target))),
                    stamps,
                    xattrs,
                },
            )
    }

    fn arbitrary_path() -> impl Strategy<Value = PathBuf> {
        prop::collection::vec(any::<u8>(), 0..16)
            .prop_map(|mut bytes| {
                bytes.insert(0, b'/');
                PathBuf::from(std::ffi::OsString::from_vec(bytes))
            })
            // As a walk makes them (a manifest refuses others).
            .prop_filter("a canonical path", |p| {
                crate::paths::normalize_given(p.as_os_str())
                    .is_ok_and(|n| n.as_os_str() == p.as_os_str())
            })
    }

    /// Two small states that share paths, inodes and links often: paths of one to three
    /// components from a few names, a few inode numbers, files and directories.
    fn arbitrary_state() -> impl Strategy<Value = Manifest> {
        let name = prop::sample::select(vec!["a", "b", "a b", "a.c", "\u{e9}", "\\"]);
        let path = prop::collection::vec(name, 1..4).prop_map(|names| {
            let mut p = PathBuf::from("/");
            for n in names {
                p.push(n);
            }
            p
        });
        let meta = (
            prop::sample::select(vec![EntryKind::Directory, EntryKind::File]),
            1u64..7,
            1i128..3,
            1u64..3,
            prop::option::of(1u64..3),
            0u32..2,
        )
            .prop_map(|(kind, ino, ctime, nlink, subvol, mode)| {
                let mut m = stamped(kind, ino, ctime);
                m.mode = 0o644 + mode;
                let s = m.stamps.as_mut().unwrap();
                s.nlink = nlink;
                s.subvol = subvol;
                m
            });
        prop::collection::vec((path, meta), 0..14).prop_map(Manifest::new)
    }

    /// A state and what it became: a directory renamed (every path below it carried
    /// along), entries removed or changed, new ones added.
    fn arbitrary_change() -> impl Strategy<Value = (Manifest, Manifest)> {
        (
            arbitrary_state(),
            arbitrary_state(),
            prop::sample::select(vec!["a", "b", "a b", "z"]),
            prop::sample::select(vec!["a", "b", "z", "a.c"]),
            prop::collection::vec(0u8..6, 14),
        )
            .prop_map(|(old, extra, from, to, ops)| {
                let mut new = Vec::new();
                let mut entries: Vec<(&Path, &Meta)> = old.iter().collect();
                entries.sort_by(|a, b| crate::paths::tree_order(a.0, b.0));
                for ((path, meta), op) in entries.into_iter().zip(ops.iter().cycle()) {
                    let mut meta = meta.clone();
                    let rel = path.strip_prefix("/").unwrap();
                    let mut comps = rel.components();
                    let first = comps.next().unwrap().as_os_str();
                    let path = if first == from {
                        Path::new("/").join(to).join(comps.as_path())
                    } else {
                        path.to_path_buf()
                    };
                    match op {
                        0 => continue,
                        1 => meta.mode ^= 0o100,
                        2 => meta.stamps.as_mut().unwrap().ctime_ns += 1,
                        _ => {}
                    }
                    new.push((path, meta));
                }
                new.extend(
                    extra
                        .iter()
                        .take(3)
                        .map(|(p, m)| (p.to_path_buf(), m.clone())),
                );
                let mut seen = std::collections::HashSet::new();
                new.retain(|(p, _)| seen.insert(p.clone()));
                (old, Manifest::new(new))
            })
    }

    proptest! {
        /// The merge of two sorted streams reports exactly what the comparison of two
        /// whole states in memory reported.
        #[test]
        fn the_merge_agrees_with_the_comparison_in_memory(
            (old, new) in prop_oneof![
                (arbitrary_state(), arbitrary_state()),
                arbitrary_change(),
            ],
            same_history in any::<bool>(),
        ) {
            let same = |p: &Path| Some(p.as_os_str().len().is_multiple_of(2));
            let compare = Compare {
                old: &old,
                new: &new,
                same_history,
                same_content: Some(&same),
            };
            let mut merged = lines(&compare.between(&old, &new));
            let mut in_memory = lines(&compare.between_in_memory(&old, &new));
            merged.sort();
            in_memory.sort();
            prop_assert_eq!(merged, in_memory);
        }
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_naming_the_line(data in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Err(e) = Manifest::parse(&data) {
                prop_assert!(e.starts_with("line "), "{}", e);
            }
        }

        #[test]
        fn any_lines_after_a_header_parse_or_fail_naming_the_line(
            header in prop::sample::select(vec![HEADER, HEADER_1]),
            lines in prop::collection::vec(
                prop::collection::vec(
                    prop::sample::select(vec![
                        &b"\t"[..], b"f", b"d", b"l", b"o", b"644", b"-", b"0", b"12", b"/a",
                        b"/a\\x0a", b"\\", b"-1", b"00000000000000ff", b"\xff", b"99999999999999999999999",
                    ]),
                    0..16,
                ),
                0..6,
            ),
        ) {
            let mut text = header.as_bytes().to_vec();
            for line in &lines {
                text.push(b'\n');
                text.extend(line.concat());
            }
            text.push(b'\n');
            match Manifest::parse(&text) {
                Ok(m) => prop_assert!(m.len() <= lines.len()),
                Err(e) => {
                    let n: usize = e
                        .strip_prefix("line ")
                        .and_then(|r| r.split(':').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    prop_assert!((2..=lines.len() + 1).contains(&n), "{}", e);
                }
            }
        }

        #[test]
        fn render_then_parse_is_the_same_manifest(
            entries in prop::collection::vec((arbitrary_path(), arbitrary_meta()), 0..20),
        ) {
            let m = Manifest::new(entries);
            let text = m.render();
            prop_assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), m.len() + 1);
            prop_assert_eq!(Manifest::parse(&text).unwrap(), m);
        }
    }
}
