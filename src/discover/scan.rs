//! The scanning engine: a parallel, metadata-only walk of one filesystem that turns the
//! unpersisted part of a root into units of state (the directories and files a person
//! would persist), with file counts and bytes.
//!
//! It never follows a symlink, never leaves the root's mount (another mount has another
//! mount id; without mount ids, another device number), but does walk the subvolumes
//! nested in the root on the same mount (another device number, the same mount id): a
//! reset deletes them with the root. It never enters the paths NixOS makes anew or the persistent storage, and does
//! not walk persisted subtrees at all. Directories are *split* (their children become
//! separate units) while they are too broad to be one piece of state, hold persisted
//! entries or known paths below them (statically, or a known path of another verdict that
//! is really there), or lie in /etc; every other directory is one unit whose subtree is
//! only counted. Nothing is kept per entry, so memory follows the number of units, not of
//! files. Where a unit's verdict is still open (the knowledge would leave it to review),
//! what its files are is looked at on the way, within a budget (`content`).
//!
//! Each directory is a task of its own (rayon's scope), not a recursive call: a tree of
//! any depth walks in constant stack, and a directory's descriptor is closed once its
//! subdirectories have been opened, so a deep chain holds two descriptors, not one per
//! level.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use globset::GlobSet;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Statx, StatxFlags};
use serde::Serialize;

use crate::baseline::{Manifest, Meta, Status};
use crate::classify::{EntryKind, Facts};
use crate::discover::content;
use crate::knowledge::Knowledge;
use crate::persisted::PersistedSet;

/// What to walk and what to leave out.
pub struct Request<'a> {
    /// The tree on disk (`--root`); paths in results are as seen from the host's `/`.
    pub root: &'a Path,
    pub persisted: &'a PersistedSet,
    pub knowledge: &'a Knowledge,
    /// `[check] ignore`.
    pub ignore: Option<&'a GlobSet>,
    /// Count only what is new or changed since this baseline.
    pub since: Option<&'a Manifest>,
    /// Show a progress line on stderr (only when it is a terminal and the walk is long).
    pub progress: bool,
    /// What the host's units declare: a directory holding a unit's directory is split.
    pub declared: &'a crate::discover::declared::Declarations,
}

/// Which entries a record reads the extended attributes of (one more system call each).
#[derive(Clone, Copy)]
pub enum Xattrs<'a> {
    Every,
    /// Those that are not in this manifest or whose ctime moved since: every change of an
    /// extended attribute moves the ctime, so the others still have the recorded ones.
    ChangedSince(&'a Manifest),
}

/// A unit of state found by the walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// As seen from the host's `/`.
    pub path: PathBuf,
    pub facts: Facts,
    pub bytes: u64,
}

/// A directory (or a file mounted over) the walk did not enter, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    pub why: &'static str,
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Scan {
    pub units: Vec<Unit>,
    pub skipped: Vec<Skipped>,
    /// The subvolumes nested in the root that the walk entered, in tree order.
    pub subvolumes: Vec<PathBuf>,
    /// Entries looked at.
    pub entries: u64,
    /// Paths that could not be read (permission, vanished), with the error; at most 50.
    pub errors: Vec<String>,
    pub elapsed: Duration,
    /// Files looked into to tell what they are (see `content`): at most this many heads
    /// were read (a file known by its name is not read).
    pub content_reads: u64,
}

const MAX_ERRORS: usize = 50;
pub const STATX: StatxFlags = StatxFlags::BASIC_STATS
    .union(StatxFlags::BTIME)
    .union(StatxFlags::MNT_ID)
    .union(crate::baseline::STATX_SUBVOL);

/// Counts of a unit's subtree, filled in by the tasks that walk it.
#[derive(Debug, Default)]
struct Acc {
    files: AtomicU64,
    bytes: AtomicU64,
    generated: AtomicU64,
    /// With a baseline: whether anything in it is new or changed.
    changed: AtomicBool,
    /// The files with several links counted so far (device, inode): a file is counted
    /// once however many names it has in the unit, as it takes space once.
    linked: Mutex<HashSet<(u64, u64)>>,
    /// What its files are, for a unit whose verdict they may decide.
    probe: Option<content::Probe>,
}

impl Acc {
    /// Whether this name is the first of its file met in the unit.
    fn first_name(&self, st: &Statx) -> bool {
        linked_key(st).is_none_or(|key| {
            self.linked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key)
        })
    }
}

/// What a task does with its directory.
enum Job {
    /// Its children are decided one by one.
    Split,
    /// A child of a split directory: split too, or one unit.
    Decide,
    /// Part of a unit: only counted.
    Count(Arc<Acc>),
    /// Every entry recorded.
    Record,
}

/// A directory entry as read.
struct Child {
    name: Vec<u8>,
    kind: FileType,
}

impl Child {
    fn name(&self) -> &OsStr {
        OsStr::from_bytes(&self.name)
    }
}

struct Walker<'a> {
    req: &'a Request<'a>,
    root_dev: u64,
    root_mnt: Option<u64>,
    /// Host paths never entered: `[scan] never_walk` and the storage paths.
    excluded: HashSet<PathBuf>,
    /// Files NixOS copied into /etc (from /etc/.clean).
    etc_copied: HashSet<PathBuf>,
    /// Whether to read extended attributes, when recording.
    xattrs: Option<Xattrs<'a>>,
    entries: AtomicU64,
    skipped: Mutex<Vec<Skipped>>,
    subvolumes: Mutex<Vec<PathBuf>>,
    errors: Mutex<Vec<String>>,
    units: Mutex<Vec<Unit>>,
    /// Directory units: path, counts, whether the directory itself changed.
    dir_units: Mutex<Vec<(PathBuf, Arc<Acc>, bool)>>,
    records: Mutex<Vec<(PathBuf, Meta)>>,
    /// Heads of file units read to tell what they are.
    content_reads: AtomicU64,
}

/// Walks the root.
pub fn scan(req: &Request) -> Result<Scan, crate::error::FsError> {
    let started = Instant::now();
    let (walker, root_fd) = Walker::new(req, None)?;
    walker.walk(root_fd, Job::Split);
    Ok(walker.finish(started).0)
}

/// Every entry of the root outside persisted paths, with its metadata: a baseline
/// manifest, or one side of a diff. Excludes what `scan` excludes.
pub fn record(
    req: &Request,
    xattrs: Xattrs,
) -> Result<(Vec<(PathBuf, Meta)>, Scan), crate::error::FsError> {
    let started = Instant::now();
    let (walker, root_fd) = Walker::new(req, Some(xattrs))?;
    walker.walk(root_fd, Job::Record);
    let (scan, entries) = walker.finish(started);
    Ok((entries, scan))
}

/// A spinner after one second of walking, updated ten times a second.
pub(crate) fn progress(entries: &AtomicU64, done: &AtomicBool) {
    let started = Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let bar = bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} scanning: {msg}")
                    .expect("valid template"),
            );
            b
        });
        bar.set_message(format!("{} entries", entries.load(Ordering::Relaxed)));
        bar.tick();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// `/etc/.clean` lists, relative to /etc, the files NixOS copied there. Read as the tree
/// sees it (a symlink resolves inside the tree, never to the host's list); one path a line.
fn read_etc_clean(root: &Path) -> HashSet<PathBuf> {
    let data = crate::beneath::Tree::open(root)
        .and_then(|t| t.read(Path::new("/etc/.clean")))
        .ok()
        .flatten()
        .unwrap_or_default();
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let l = OsStr::from_bytes(l);
            let rel = Path::new(l).strip_prefix("/").unwrap_or(Path::new(l));
            Path::new("/etc").join(rel)
        })
        .collect()
}

/// A deep tree held open in a wide walk can need more descriptors than the default soft
/// limit of 1024; the hard limit is ours to take. Returns the soft limit then in force
/// (`None`: unlimited).
pub(crate) fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum || (limit.current.is_some() && limit.maximum.is_none()) {
        let wanted = limit.maximum;
        limit.current = wanted;
        if setrlimit(Resource::Nofile, limit).is_err() {
            return getrlimit(Resource::Nofile).current;
        }
    }
    limit.current
}

pub(crate) fn dev_of(st: &Statx) -> u64 {
    rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor)
}

pub(crate) fn mnt_of(st: &Statx) -> Option<u64> {
    (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id)
}

/// Why an entry (by its statx) is not the root's to walk, given the root's device and
/// mount id: see `Walker::foreign`.
pub(crate) fn foreign(root_dev: u64, root_mnt: Option<u64>, st: &Statx) -> Option<&'static str> {
    let other_dev = dev_of(st) != root_dev;
    match (root_mnt, mnt_of(st)) {
        (Some(root), Some(mine)) if root == mine => None,
        (Some(_), Some(_)) if !other_dev => Some("another mount"),
        _ if other_dev => Some("another filesystem or subvolume"),
        _ => None,
    }
}

/// FNV-1a, 64 bits: a digest that stays the same across builds and versions.
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *hash ^= u64::from(b);
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// A digest of the extended attributes (names and values) of `path`, following it or not;
/// 0 when there are none, or the filesystem has none. `path` is usually a
/// `/proc/self/fd/N[/NAME]` path, so that the entry is reached from a descriptor.
pub fn xattr_digest(path: &CString, follow: bool) -> io::Result<u64> {
    let list = |buf: &mut [u8]| {
        if follow {
            rustix::fs::listxattr(path.as_c_str(), buf)
        } else {
            rustix::fs::llistxattr(path.as_c_str(), buf)
        }
    };
    let get = |name: &[u8], buf: &mut [u8]| {
        if follow {
            rustix::fs::getxattr(path.as_c_str(), name, buf)
        } else {
            rustix::fs::lgetxattr(path.as_c_str(), name, buf)
        }
    };
    // Grows the buffer until the answer fits (it may grow between two calls).
    let fill = |call: &dyn Fn(&mut [u8]) -> rustix::io::Result<usize>| -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        loop {
            match call(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 24 => {
                    let want = call(&mut []).unwrap_or(0).max(buf.len() * 2);
                    buf.resize(want, 0);
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let names = match fill(&list) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut names: Vec<&[u8]> = names.split(|&b| b == 0).filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        return Ok(0);
    }
    names.sort_unstable();
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for name in names {
        let value = match fill(&|buf: &mut [u8]| get(name, buf)) {
            Ok(v) => v,
            // Removed since it was listed.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(e),
        };
        fnv(&mut hash, name);
        fnv(&mut hash, &[0]);
        fnv(&mut hash, &(value.len() as u64).to_le_bytes());
        fnv(&mut hash, &value);
    }
    Ok(hash)
}

/// `/proc/self/fd/N`, and `/NAME` below it: a path that reaches an open directory (or what
/// is in it) without resolving anything else.
pub fn fd_path(fd: BorrowedFd, name: Option<&OsStr>) -> CString {
    let mut bytes = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if let Some(name) = name {
        bytes.push(b'/');
        bytes.extend_from_slice(name.as_bytes());
    }
    CString::new(bytes).unwrap_or_default()
}

impl<'a> Walker<'a> {
    fn new(
        req: &'a Request<'a>,
        xattrs: Option<Xattrs<'a>>,
    ) -> Result<(Walker<'a>, OwnedFd), crate::error::FsError> {
        let mut excluded: HashSet<PathBuf> =
            req.knowledge.scan.never_walk.iter().cloned().collect();
        excluded.extend(req.persisted.storages().into_iter().map(Path::to_path_buf));
        let root_fd = open_dir(rustix::fs::CWD, req.root.as_os_str(), OFlags::empty())
            .map_err(|e| crate::error::FsError::new("open", req.root, e.into()))?;
        let root_stat = rustix::fs::statx(&root_fd, "", AtFlags::EMPTY_PATH, STATX)
            .map_err(|e| crate::error::FsError::new("stat", req.root, e.into()))?;
        raise_fd_limit();
        let walker = Walker {
            req,
            root_dev: dev_of(&root_stat),
            root_mnt: mnt_of(&root_stat),
            excluded,
            etc_copied: read_etc_clean(req.root),
            xattrs,
            entries: AtomicU64::new(0),
            skipped: Mutex::new(Vec::new()),
            subvolumes: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            units: Mutex::new(Vec::new()),
            dir_units: Mutex::new(Vec::new()),
            records: Mutex::new(Vec::new()),
            content_reads: AtomicU64::new(0),
        };
        Ok((walker, root_fd))
    }

    /// Walks from the root, with a progress line when that takes long.
    fn walk(&self, root_fd: OwnedFd, job: Job) {
        let done = AtomicBool::new(false);
        std::thread::scope(|threads| {
            if self.req.progress && std::io::stderr().is_terminal() {
                threads.spawn(|| progress(&self.entries, &done));
            }
            rayon::scope(|s| {
                let children = self.read(root_fd.as_fd(), Path::new("/"));
                let dev = self.root_dev;
                self.children(s, Arc::new(root_fd), dev, Path::new("/"), children, &job);
            });
            done.store(true, Ordering::Relaxed);
        });
    }

    fn finish(self, started: Instant) -> (Scan, Vec<(PathBuf, Meta)>) {
        let mut skipped = self.skipped.into_inner().unwrap_or_default();
        skipped.sort_by(|a, b| crate::paths::tree_order(&a.path, &b.path));
        let mut subvolumes = self.subvolumes.into_inner().unwrap_or_default();
        subvolumes.sort_by(|a, b| crate::paths::tree_order(a, b));
        let mut units = self.units.into_inner().unwrap_or_default();
        let since = self.req.since.is_some();
        let mut content_reads = self.content_reads.into_inner();
        for (path, acc, own_changed) in self.dir_units.into_inner().unwrap_or_default() {
            if let Some(probe) = &acc.probe {
                content_reads += probe.reads.load(Ordering::Relaxed);
            }
            if since && !own_changed && !acc.changed.load(Ordering::Relaxed) {
                continue;
            }
            units.push(Unit {
                facts: Facts {
                    kind: Some(EntryKind::Directory),
                    files: acc.files.load(Ordering::Relaxed),
                    generated: acc.generated.load(Ordering::Relaxed),
                    content: acc.probe.as_ref().and_then(content::Probe::evidence),
                    ..Facts::default()
                },
                bytes: acc.bytes.load(Ordering::Relaxed),
                path,
            });
        }
        units.sort_by(|a, b| crate::paths::tree_order(&a.path, &b.path));
        let scan = Scan {
            units,
            skipped,
            subvolumes,
            entries: self.entries.into_inner(),
            errors: self.errors.into_inner().unwrap_or_default(),
            elapsed: started.elapsed(),
            content_reads,
        };
        (scan, self.records.into_inner().unwrap_or_default())
    }

    /// A failed call on an entry: an error to report, unless the entry is simply gone (it
    /// vanished between the directory listing and the call: nothing of it is left to lose).
    fn failed(&self, path: &Path, e: rustix::io::Errno) {
        if e != rustix::io::Errno::NOENT {
            self.error(path, crate::error::describe(&e.into()));
        }
    }

    fn error(&self, path: &Path, e: impl std::fmt::Display) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < MAX_ERRORS {
            errors.push(format!("{}: {e}", crate::paths::escape(path)));
        }
    }

    fn skip(&self, path: &Path, why: &'static str) {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Skipped {
                path: path.to_path_buf(),
                why,
            });
    }

    /// Why an entry (by its statx) is not the root's to walk: it is (or is below) another
    /// mount. A subvolume nested in the root has a device number of its own but the
    /// root's mount: a reset deletes it with the root, so it is walked. Without mount ids
    /// (Linux before 5.8) another device number is all there is to go by.
    fn foreign(&self, st: &Statx) -> Option<&'static str> {
        foreign(self.root_dev, self.root_mnt, st)
    }

    /// Whether `dir` is not one unit but holds several.
    fn splits(&self, dir: &Path) -> bool {
        let k = self.req.knowledge;
        dir.parent().is_none()
            || k.too_broad(dir)
            || k.in_generated_tree(dir)
            || self.req.persisted.has_below(dir)
            || self.req.declared.splits(dir)
            || self.excluded.iter().any(|e| e != dir && e.starts_with(dir))
    }

    fn ignored(&self, path: &Path) -> bool {
        self.req.ignore.is_some_and(|g| g.is_match(path))
    }

    /// Reads a directory's entries (not `.`/`..`).
    fn read(&self, fd: BorrowedFd, path: &Path) -> Vec<Child> {
        let mut out = Vec::new();
        let mut dir = match rustix::fs::Dir::read_from(fd) {
            Ok(dir) => dir,
            Err(e) => {
                self.failed(path, e);
                return out;
            }
        };
        while let Some(entry) = dir.read() {
            match entry {
                Ok(entry) => {
                    let name = entry.file_name().to_bytes();
                    if name != b"." && name != b".." {
                        out.push(Child {
                            name: name.to_vec(),
                            kind: entry.file_type(),
                        });
                    }
                }
                Err(e) => {
                    self.failed(path, e);
                    break;
                }
            }
        }
        self.entries.fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// Opens a subdirectory, refusing to follow a symlink or leave the root's mount.
    fn open_subdir(
        &self,
        parent: BorrowedFd,
        parent_dev: u64,
        name: &OsStr,
        path: &Path,
    ) -> Option<(OwnedFd, Statx)> {
        let fd = match open_dir(parent, name, OFlags::NOFOLLOW) {
            Ok(fd) => fd,
            Err(e) => {
                self.failed(path, e);
                return None;
            }
        };
        let stat = match rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, STATX) {
            Ok(stat) => stat,
            Err(e) => {
                self.failed(path, e);
                return None;
            }
        };
        if let Some(why) = self.foreign(&stat) {
            self.skip(path, why);
            return None;
        }
        if dev_of(&stat) != parent_dev {
            self.subvolumes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(path.to_path_buf());
        }
        Some((fd, stat))
    }

    /// With a baseline, whether this entry is new or changed since. Every change of an
    /// extended attribute moves the ctime, which the baseline compares: no need to read
    /// them here.
    fn changed(&self, path: &Path, meta: &Meta) -> bool {
        match self.req.since {
            None => true,
            Some(manifest) => manifest.compare(path, meta) != Status::Unchanged,
        }
    }

    /// Queues a subdirectory as a task of its own.
    fn spawn<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        parent: Arc<OwnedFd>,
        parent_dev: u64,
        child: Child,
        path: PathBuf,
        job: Job,
    ) {
        s.spawn(move |s| {
            let Some((fd, stat)) =
                self.open_subdir(parent.as_fd(), parent_dev, child.name(), &path)
            else {
                return;
            };
            // The parent may close once its last subdirectory is open.
            drop(parent);
            self.dir(s, fd, stat, &path, job);
        });
    }

    /// One directory, opened.
    fn dir<'s>(&'s self, s: &rayon::Scope<'s>, fd: OwnedFd, stat: Statx, path: &Path, job: Job) {
        let dev = dev_of(&stat);
        match job {
            Job::Split => {
                let children = self.read(fd.as_fd(), path);
                self.children(s, Arc::new(fd), dev, path, children, &Job::Split);
            }
            Job::Decide => {
                if self.splits(path) {
                    return self.dir(s, fd, stat, path, Job::Split);
                }
                let children = self.read(fd.as_fd(), path);
                let names = children.iter().map(Child::name);
                if self.req.knowledge.differs_below(path, names) {
                    return self.children(s, Arc::new(fd), dev, path, children, &Job::Split);
                }
                let own_changed = self.changed(path, &Meta::from_statx(&stat, None));
                // Its files are read only where they may decide its verdict.
                let probe = crate::classify::content_decides(path, self.req.knowledge)
                    .then(|| content::Probe::new(path));
                if let Some(probe) = &probe {
                    probe.listing(path, children.iter().map(|c| c.name.as_slice()));
                }
                let acc = Arc::new(Acc {
                    probe,
                    ..Acc::default()
                });
                self.dir_units
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((path.to_path_buf(), acc.clone(), own_changed));
                self.children(s, Arc::new(fd), dev, path, children, &Job::Count(acc));
            }
            Job::Count(acc) => {
                if self.req.since.is_some() && self.changed(path, &Meta::from_statx(&stat, None)) {
                    acc.changed.store(true, Ordering::Relaxed);
                }
                let children = self.read(fd.as_fd(), path);
                if let Some(probe) = &acc.probe {
                    probe.listing(path, children.iter().map(|c| c.name.as_slice()));
                }
                self.children(s, Arc::new(fd), dev, path, children, &Job::Count(acc));
            }
            Job::Record => {
                let mut meta = Meta::from_statx(&stat, None);
                meta.xattrs = self.xattrs_of(path, &meta, || fd_path(fd.as_fd(), None), true);
                self.records
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((path.to_path_buf(), meta));
                let children = self.read(fd.as_fd(), path);
                self.children(s, Arc::new(fd), dev, path, children, &Job::Record);
            }
        }
    }

    /// The extended attributes' digest to record for an entry, when recording.
    fn xattrs_of(
        &self,
        path: &Path,
        meta: &Meta,
        at: impl FnOnce() -> CString,
        follow: bool,
    ) -> Option<u64> {
        if let Some(Xattrs::ChangedSince(manifest)) = self.xattrs {
            if let Some(old) = manifest.get(path) {
                let unchanged = matches!((&old.stamps, &meta.stamps),
                    (Some(a), Some(b)) if a.same_inode(b) && a.ctime_ns == b.ctime_ns);
                if unchanged && old.xattrs.is_some() {
                    return old.xattrs;
                }
            }
        }
        self.xattrs?;
        match xattr_digest(&at(), follow) {
            Ok(digest) => Some(digest),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => {
                self.error(
                    path,
                    format!("extended attributes: {}", crate::error::describe(&e)),
                );
                None
            }
        }
    }

    /// The children of a directory, by what the directory's job is.
    fn children<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        fd: Arc<OwnedFd>,
        dev: u64,
        path: &Path,
        children: Vec<Child>,
        job: &Job,
    ) {
        // Only a directory above a path never walked can hold one (they are few and
        // shallow: no per-entry lookup in a deep tree).
        let near_excluded =
            !matches!(job, Job::Count(_)) && self.excluded.iter().any(|e| e.starts_with(path));
        for child in children {
            let child_path = path.join(child.name());
            match job {
                Job::Split | Job::Decide | Job::Record => {
                    if (near_excluded && self.excluded.contains(&child_path))
                        || self.req.persisted.contains(&child_path)
                    {
                        continue;
                    }
                }
                Job::Count(_) => {}
            }
            if !matches!(job, Job::Record) && self.ignored(&child_path) {
                continue;
            }
            // What was mounted here at the baseline was not the root's then: what comes to
            // light now is not new (`diff` leaves it out alike).
            if self
                .req
                .since
                .is_some_and(|m| !m.mounts.is_empty() && m.mounts.contains(&child_path))
            {
                self.skip(&child_path, "mounted when the baseline was recorded");
                continue;
            }
            let Some((kind, stat)) = self.kind(fd.as_fd(), &child, &child_path) else {
                continue;
            };
            if let Job::Count(acc) = job {
                if let Some(probe) = acc.probe.as_ref().filter(|p| !p.settled()) {
                    probe.entry(fd.as_fd(), child.name(), kind, &child_path);
                }
            }
            if kind == FileType::Directory {
                let next = match job {
                    Job::Split | Job::Decide => Job::Decide,
                    Job::Count(acc) => Job::Count(acc.clone()),
                    Job::Record => Job::Record,
                };
                self.spawn(s, fd.clone(), dev, child, child_path, next);
                continue;
            }
            self.leaf(fd.as_fd(), &child, child_path, kind, stat, job);
        }
    }

    /// The kind of a child, asking the filesystem when the directory entry does not say;
    /// the statx is kept when it had to be made.
    fn kind(
        &self,
        dir: BorrowedFd,
        child: &Child,
        path: &Path,
    ) -> Option<(FileType, Option<Statx>)> {
        if child.kind != FileType::Unknown {
            return Some((child.kind, None));
        }
        match rustix::fs::statx(dir, child.name(), AtFlags::SYMLINK_NOFOLLOW, STATX) {
            Ok(st) => Some((FileType::from_raw_mode(u32::from(st.stx_mode)), Some(st))),
            Err(e) => {
                self.failed(path, e);
                None
            }
        }
    }

    /// A file, symlink or special file.
    fn leaf(
        &self,
        dir: BorrowedFd,
        child: &Child,
        path: PathBuf,
        kind: FileType,
        stat: Option<Statx>,
        job: &Job,
    ) {
        let stat = match stat {
            Some(st) => st,
            None => match rustix::fs::statx(dir, child.name(), AtFlags::SYMLINK_NOFOLLOW, STATX) {
                Ok(st) => st,
                Err(e) => return self.failed(&path, e),
            },
        };
        if let Some(why) = self.foreign(&stat) {
            // A file mounted over this one.
            return self.skip(&path, why);
        }
        if let Job::Count(acc) = job {
            if self.req.since.is_none() && kind != FileType::Symlink {
                // The common case, kept free of allocation.
                if !acc.first_name(&stat) {
                    return;
                }
                acc.files.fetch_add(1, Ordering::Relaxed);
                acc.bytes.fetch_add(stat.stx_size, Ordering::Relaxed);
                return;
            }
        }
        let target = if kind == FileType::Symlink {
            match rustix::fs::readlinkat(dir, child.name(), Vec::new()) {
                Ok(t) => Some(PathBuf::from(OsStr::from_bytes(t.as_bytes()))),
                Err(e) => {
                    self.failed(&path, e);
                    None
                }
            }
        } else {
            None
        };
        let mut meta = Meta::from_statx(&stat, target);
        if let Job::Record = job {
            meta.xattrs = self.xattrs_of(&path, &meta, || fd_path(dir, Some(child.name())), false);
            self.records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((path, meta));
            return;
        }
        if !self.changed(&path, &meta) {
            return;
        }
        let generated = meta.target.as_ref().is_some_and(|t| {
            self.req
                .knowledge
                .is_generated_link(&crate::classify::resolve_link(&path, t))
        });
        let nixos_copied = self.etc_copied.contains(&path);
        match job {
            Job::Count(acc) => {
                acc.changed.store(true, Ordering::Relaxed);
                if !acc.first_name(&stat) {
                    return;
                }
                acc.files.fetch_add(1, Ordering::Relaxed);
                acc.bytes.fetch_add(meta.size, Ordering::Relaxed);
                acc.generated
                    .fetch_add(u64::from(generated), Ordering::Relaxed);
            }
            _ => {
                // A file of its own: what it is decides where nothing surer does.
                let content = (kind == FileType::RegularFile
                    && !nixos_copied
                    && crate::classify::content_decides(&path, self.req.knowledge))
                .then(|| {
                    self.content_reads.fetch_add(1, Ordering::Relaxed);
                    content::of_file(dir, child.name(), &path)
                })
                .flatten();
                self.units
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Unit {
                        facts: Facts {
                            kind: Some(meta.kind),
                            files: 1,
                            generated: u64::from(generated),
                            nixos_copied,
                            link_target: meta.target.clone(),
                            content,
                        },
                        bytes: meta.size,
                        path,
                    })
            }
        }
    }
}

/// Opens a directory to read, with `extra` flags, leaving its access time alone where the
/// kernel lets us (O_NOATIME: the owner, or root): reading a directory under `relatime`
/// writes its inode, so a walk would change every directory it lists. `baseline` walks
/// right after taking its snapshot, and the generation search would then find every
/// directory of the root changed since (1,000,000 files: 46 s instead of a quarter
/// second); and an audit should not change what it looks at.
pub(crate) fn open_dir(
    parent: impl rustix::fd::AsFd,
    name: &OsStr,
    extra: OFlags,
) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | extra;
    match rustix::fs::openat(&parent, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::openat(&parent, name, flags, Mode::empty()),
        other => other,
    }
}

/// Files and bytes below a directory, without following links or leaving its mount (the
/// subvolumes nested in it on the same mount are counted, as the walk counts them);
/// iterative, so any depth is fine.
pub fn count_tree(dir: &Path) -> (u64, u64) {
    open_dir(rustix::fs::CWD, dir.as_os_str(), OFlags::NOFOLLOW).map_or((0, 0), count_tree_fd)
}

/// What a file with several names (hard links) is known by, to count it once: its device
/// (one per subvolume) and inode. `None` for a file with one name.
pub fn linked_key(st: &Statx) -> Option<(u64, u64)> {
    (st.stx_nlink > 1).then(|| (dev_of(st), st.stx_ino))
}

/// [`count_tree`] of an open directory.
pub fn count_tree_fd(top: OwnedFd) -> (u64, u64) {
    count_tree_once(top, &mut HashSet::new())
}

/// [`count_tree_fd`], counting a file with several names once: `seen` holds the
/// [`linked_key`]s of those counted already (in this tree or elsewhere in its unit).
pub fn count_tree_once(top: OwnedFd, seen: &mut HashSet<(u64, u64)>) -> (u64, u64) {
    let Ok(top_st) = rustix::fs::statx(&top, "", AtFlags::EMPTY_PATH, STATX) else {
        return (0, 0);
    };
    let same_mount = |st: &Statx| match (mnt_of(&top_st), mnt_of(st)) {
        (Some(a), Some(b)) => a == b,
        _ => dev_of(st) == dev_of(&top_st),
    };
    let open = |parent: BorrowedFd, name: &OsStr| open_dir(parent, name, OFlags::NOFOLLOW).ok();
    let mut totals = (0, 0);
    // Directories still to read, each with the parent it is opened from.
    let mut stack: Vec<(Arc<OwnedFd>, Vec<u8>)> = Vec::new();
    let mut current = Some(top);
    loop {
        let fd = match current.take() {
            Some(fd) => fd,
            None => match stack.pop() {
                Some((parent, name)) => match open(parent.as_fd(), OsStr::from_bytes(&name)) {
                    Some(fd) => fd,
                    None => continue,
                },
                None => break,
            },
        };
        let Ok(mut entries) = rustix::fs::Dir::read_from(&fd) else {
            continue;
        };
        let fd = Arc::new(fd);
        while let Some(Ok(entry)) = entries.read() {
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(st) = rustix::fs::statx(
                &*fd,
                OsStr::from_bytes(name),
                AtFlags::SYMLINK_NOFOLLOW,
                STATX,
            ) else {
                continue;
            };
            if !same_mount(&st) {
                continue;
            }
            if FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::Directory {
                stack.push((fd.clone(), name.to_vec()));
            } else if linked_key(&st).is_none_or(|key| seen.insert(key)) {
                totals.0 += 1;
                totals.1 += st.stx_size;
            }
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounded work: inside a unit whose verdict its files may decide, the heads of at most
    /// `FILES_PER_UNIT` files are read, and none once something is found; a unit the
    /// knowledge decides is not read at all. Counting goes on regardless.
    #[test]
    fn content_reads_stop_once_settled_and_are_capped() {
        let dir = tempfile::TempDir::new().unwrap();
        let root = dir.path();
        let put = |rel: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"plain").unwrap();
        };
        // Known by its name at the unit's top: its subdirectory's files are not read.
        put("home/josh/keys/k.key");
        for i in 0..300 {
            put(&format!("home/josh/keys/sub/{i}"));
        }
        // Nothing to find: the budget ends the reading.
        for i in 0..1000 {
            put(&format!("home/josh/blobs/{i}"));
        }
        // Decided by the knowledge: never read.
        for i in 0..100 {
            put(&format!("var/lib/svc/{i}"));
        }
        let persisted = PersistedSet::default();
        let req = Request {
            root,
            persisted: &persisted,
            knowledge: crate::knowledge::builtin(),
            ignore: None,
            since: None,
            progress: false,
            declared: crate::discover::declared::Declarations::none(),
        };
        // One thread: a unit's own entries are met before its subdirectories are entered.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let found = pool.install(|| scan(&req)).unwrap();
        let unit = |p: &str| {
            found
                .units
                .iter()
                .find(|u| u.path == Path::new(p))
                .unwrap_or_else(|| panic!("{p}: {:?}", found.units))
        };
        let keys = unit("/home/josh/keys");
        assert_eq!(
            keys.facts.content.as_ref().map(|e| e.at.clone()),
            Some(PathBuf::from("k.key"))
        );
        assert_eq!(keys.facts.files, 301);
        let blobs = unit("/home/josh/blobs");
        assert_eq!(blobs.facts.content, None);
        assert_eq!(blobs.facts.files, 1000);
        assert_eq!(unit("/var/lib/svc").facts.files, 100);
        assert_eq!(found.content_reads, content::FILES_PER_UNIT);
    }
}
