//! The scanning engine: a parallel, metadata-only walk of one filesystem that turns the
//! unpersisted part of a root into units of state (the directories and files a person
//! would persist), with file counts and bytes.
//!
//! It never follows a symlink, never leaves the root's filesystem (other mounts and other
//! btrfs subvolumes have another device number), never enters the paths NixOS makes anew
//! or the persistent storage, and does not walk persisted subtrees at all. Directories are
//! *split* (their children become separate units) while they are too broad to be one piece
//! of state, hold persisted entries or known paths below them (statically, or a known path
//! of another verdict that is really there), or lie in /etc; every other directory is one
//! unit whose subtree is only counted. Nothing is kept per entry, so
//! memory follows the number of units, not of files.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use globset::GlobSet;
use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::Serialize;

use crate::baseline::{Manifest, Meta, Status};
use crate::classify::{EntryKind, Facts};
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
}

/// A unit of state found by the walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// As seen from the host's `/`.
    pub path: PathBuf,
    pub facts: Facts,
    pub bytes: u64,
}

/// A directory the walk did not enter, and why.
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
    /// Entries looked at.
    pub entries: u64,
    /// Paths that could not be read (permission, vanished), with the error; at most 50.
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

const MAX_ERRORS: usize = 50;

struct Walker<'a> {
    req: &'a Request<'a>,
    root_dev: u64,
    /// Host paths never entered: `[scan] never_walk` and the storage paths.
    excluded: HashSet<PathBuf>,
    /// Files NixOS copied into /etc (from /etc/.clean).
    etc_copied: HashSet<PathBuf>,
    entries: AtomicU64,
    skipped: Mutex<Vec<Skipped>>,
    errors: Mutex<Vec<String>>,
}

/// Counts of a subtree.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    files: u64,
    bytes: u64,
    generated: u64,
    /// With a baseline: whether anything in it is new or changed.
    changed: bool,
}

impl std::ops::Add for Totals {
    type Output = Totals;
    fn add(self, o: Totals) -> Totals {
        Totals {
            files: self.files + o.files,
            bytes: self.bytes + o.bytes,
            generated: self.generated + o.generated,
            changed: self.changed || o.changed,
        }
    }
}

/// One directory entry as the walk sees it.
struct Child<'n> {
    name: &'n OsStr,
    kind: FileType,
}

/// Walks the root.
pub fn scan(req: &Request) -> Result<Scan, crate::error::FsError> {
    let started = Instant::now();
    let (walker, root_fd) = Walker::new(req)?;
    let done = AtomicBool::new(false);
    let units = std::thread::scope(|s| {
        if req.progress && std::io::stderr().is_terminal() {
            s.spawn(|| progress(&walker.entries, &done));
        }
        let units = walker.split_dir(root_fd.as_fd(), Path::new("/"));
        done.store(true, Ordering::Relaxed);
        units
    });
    Ok(walker.finish(units, started))
}

/// Every entry of the root outside persisted paths, with its metadata: a baseline
/// manifest, or one side of a diff. Excludes what `scan` excludes.
pub fn record(req: &Request) -> Result<(Vec<(PathBuf, Meta)>, Scan), crate::error::FsError> {
    let started = Instant::now();
    let (walker, root_fd) = Walker::new(req)?;
    let entries = Mutex::new(Vec::new());
    walker.record_dir(root_fd.as_fd(), Path::new("/"), &entries);
    let mut entries = entries.into_inner().unwrap_or_default();
    entries.sort_by(|a: &(PathBuf, Meta), b| a.0.cmp(&b.0));
    let scan = walker.finish(Vec::new(), started);
    Ok((entries, scan))
}

/// A spinner after one second of walking, updated ten times a second.
fn progress(entries: &AtomicU64, done: &AtomicBool) {
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

impl<'a> Walker<'a> {
    fn new(req: &'a Request<'a>) -> Result<(Walker<'a>, OwnedFd), crate::error::FsError> {
        let mut excluded: HashSet<PathBuf> =
            req.knowledge.scan.never_walk.iter().cloned().collect();
        excluded.extend(req.persisted.storages().into_iter().map(Path::to_path_buf));
        let root_fd = rustix::fs::open(
            req.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| crate::error::FsError::new("open", req.root, e.into()))?;
        let root_stat = rustix::fs::fstat(&root_fd)
            .map_err(|e| crate::error::FsError::new("stat", req.root, e.into()))?;
        let walker = Walker {
            req,
            root_dev: root_stat.st_dev,
            excluded,
            etc_copied: read_etc_clean(req.root),
            entries: AtomicU64::new(0),
            skipped: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
        };
        Ok((walker, root_fd))
    }

    fn finish(self, mut units: Vec<Unit>, started: Instant) -> Scan {
        let mut skipped = self.skipped.into_inner().unwrap_or_default();
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        units.sort_by(|a, b| a.path.cmp(&b.path));
        Scan {
            units,
            skipped,
            entries: self.entries.into_inner(),
            errors: self.errors.into_inner().unwrap_or_default(),
            elapsed: started.elapsed(),
        }
    }

    /// Records every entry below a directory.
    fn record_dir(&self, fd: BorrowedFd, path: &Path, out: &Mutex<Vec<(PathBuf, Meta)>>) {
        let children = self.read(fd, path);
        let mut mine = Vec::with_capacity(children.len());
        let mut subdirs = Vec::new();
        for (name, kind) in &children {
            let name = OsStr::from_bytes(name);
            let child = path.join(name);
            if self.excluded.contains(&child) || self.req.persisted.contains(&child) {
                continue;
            }
            let kind = match kind {
                FileType::Unknown => {
                    match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => FileType::from_raw_mode(st.st_mode),
                        Err(e) => {
                            self.error(&child, e);
                            continue;
                        }
                    }
                }
                k => *k,
            };
            if kind == FileType::Directory {
                subdirs.push(child);
                continue;
            }
            if let Some((meta, _)) = self.leaf(fd, name, &child, kind) {
                mine.push((child, meta));
            }
        }
        let dirs: Vec<(PathBuf, Meta)> = subdirs
            .par_iter()
            .filter_map(|child| {
                let name = child.file_name()?;
                let (sub, stat) = self.open_subdir(fd, name, child)?;
                self.record_dir(sub.as_fd(), child, out);
                Some((child.clone(), Meta::from_stat(&stat, None)))
            })
            .collect();
        let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(mine);
        out.extend(dirs);
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

    /// Whether `dir` is not one unit but holds several.
    fn splits(&self, dir: &Path) -> bool {
        let k = self.req.knowledge;
        dir.parent().is_none()
            || k.too_broad(dir)
            || k.in_generated_tree(dir)
            || self.req.persisted.has_below(dir)
            || self.excluded.iter().any(|e| e != dir && e.starts_with(dir))
    }

    fn ignored(&self, path: &Path) -> bool {
        self.req.ignore.is_some_and(|g| g.is_match(path))
    }

    /// Reads a directory's entries (not `.`/`..`).
    fn read(&self, fd: BorrowedFd, path: &Path) -> Vec<(Vec<u8>, FileType)> {
        let mut out = Vec::new();
        let mut dir = match rustix::fs::Dir::read_from(fd) {
            Ok(dir) => dir,
            Err(e) => {
                self.error(path, e);
                return out;
            }
        };
        while let Some(entry) = dir.read() {
            match entry {
                Ok(entry) => {
                    let name = entry.file_name().to_bytes();
                    if name != b"." && name != b".." {
                        out.push((name.to_vec(), entry.file_type()));
                    }
                }
                Err(e) => {
                    self.error(path, e);
                    break;
                }
            }
        }
        self.entries.fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// Opens a subdirectory, refusing to follow a symlink or leave the filesystem.
    fn open_subdir(
        &self,
        parent: BorrowedFd,
        name: &OsStr,
        path: &Path,
    ) -> Option<(OwnedFd, rustix::fs::Stat)> {
        let fd = match rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                self.error(path, e);
                return None;
            }
        };
        let stat = match rustix::fs::fstat(&fd) {
            Ok(stat) => stat,
            Err(e) => {
                self.error(path, e);
                return None;
            }
        };
        if stat.st_dev != self.root_dev {
            self.skip(path, "another filesystem or subvolume");
            return None;
        }
        Some((fd, stat))
    }

    /// With a baseline, whether this entry is new or changed since.
    fn changed(&self, path: &Path, meta: &Meta) -> bool {
        match self.req.since {
            None => true,
            Some(manifest) => manifest.compare(path, meta) != Status::Unchanged,
        }
    }

    /// A directory whose children are decided one by one.
    fn split_dir(&self, fd: BorrowedFd, path: &Path) -> Vec<Unit> {
        let children = self.read(fd, path);
        self.split_children(fd, path, children)
    }

    fn split_children(
        &self,
        fd: BorrowedFd,
        path: &Path,
        children: Vec<(Vec<u8>, FileType)>,
    ) -> Vec<Unit> {
        children
            .par_iter()
            .flat_map_iter(|(name, kind)| {
                let child = Child {
                    name: OsStr::from_bytes(name),
                    kind: *kind,
                };
                self.child_units(fd, path, &child)
            })
            .collect()
    }

    fn child_units(&self, parent: BorrowedFd, parent_path: &Path, child: &Child) -> Vec<Unit> {
        let path = parent_path.join(child.name);
        if self.excluded.contains(&path) {
            return Vec::new();
        }
        if self.req.persisted.contains(&path) || self.ignored(&path) {
            return Vec::new();
        }
        let kind = match child.kind {
            FileType::Unknown => {
                match rustix::fs::statat(parent, child.name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(e) => {
                        self.error(&path, e);
                        return Vec::new();
                    }
                }
            }
            kind => kind,
        };
        if kind == FileType::Directory {
            let Some((fd, stat)) = self.open_subdir(parent, child.name, &path) else {
                return Vec::new();
            };
            if self.splits(&path) {
                return self.split_dir(fd.as_fd(), &path);
            }
            let children = self.read(fd.as_fd(), &path);
            let names = children.iter().map(|(n, _)| OsStr::from_bytes(n));
            if self.req.knowledge.differs_below(&path, names) {
                return self.split_children(fd.as_fd(), &path, children);
            }
            let own = Meta::from_stat(&stat, None);
            let own_changed = self.changed(&path, &own);
            let totals = self.count_children(fd.as_fd(), &path, children);
            if self.req.since.is_some() && !own_changed && !totals.changed {
                return Vec::new();
            }
            return vec![Unit {
                facts: Facts {
                    kind: Some(EntryKind::Directory),
                    files: totals.files,
                    generated: totals.generated,
                    link_target: None,
                    nixos_copied: false,
                },
                bytes: totals.bytes,
                path,
            }];
        }
        let Some((meta, target)) = self.leaf(parent, child.name, &path, kind) else {
            return Vec::new();
        };
        if !self.changed(&path, &meta) {
            return Vec::new();
        }
        let generated = u64::from(target.as_ref().is_some_and(|t| {
            self.req
                .knowledge
                .is_generated_link(&crate::classify::resolve_link(&path, t))
        }));
        vec![Unit {
            facts: Facts {
                kind: Some(meta.kind),
                files: 1,
                generated,
                nixos_copied: self.etc_copied.contains(&path),
                link_target: target,
            },
            bytes: meta.size,
            path,
        }]
    }

    /// Stats a non-directory (and reads a symlink's target).
    fn leaf(
        &self,
        dir: BorrowedFd,
        name: &OsStr,
        path: &Path,
        kind: FileType,
    ) -> Option<(Meta, Option<PathBuf>)> {
        let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(e) => {
                self.error(path, e);
                return None;
            }
        };
        let target = if kind == FileType::Symlink {
            match rustix::fs::readlinkat(dir, name, Vec::new()) {
                Ok(t) => Some(PathBuf::from(OsStr::from_bytes(t.as_bytes()))),
                Err(e) => {
                    self.error(path, e);
                    None
                }
            }
        } else {
            None
        };
        let meta = Meta::from_stat(&stat, target.clone());
        Some((meta, target))
    }

    /// Counts a unit's subtree.
    fn count(&self, fd: BorrowedFd, path: &Path) -> Totals {
        let children = self.read(fd, path);
        self.count_children(fd, path, children)
    }

    fn count_children(
        &self,
        fd: BorrowedFd,
        path: &Path,
        children: Vec<(Vec<u8>, FileType)>,
    ) -> Totals {
        let needs_paths = self.req.since.is_some() || self.req.ignore.is_some();
        let mut totals = Totals::default();
        let mut subdirs = Vec::new();
        for (name, kind) in &children {
            let name = OsStr::from_bytes(name);
            let kind = match kind {
                FileType::Unknown => {
                    match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => FileType::from_raw_mode(st.st_mode),
                        Err(e) => {
                            self.error(&path.join(name), e);
                            continue;
                        }
                    }
                }
                k => *k,
            };
            if kind == FileType::Directory {
                subdirs.push(name);
                continue;
            }
            if !needs_paths && kind != FileType::Symlink {
                // The common case, kept free of allocation: one statat per file.
                match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => {
                        totals.files += 1;
                        totals.bytes += st.st_size as u64;
                    }
                    Err(e) => self.error(&path.join(name), e),
                }
                continue;
            }
            let child = path.join(name);
            if self.ignored(&child) {
                continue;
            }
            let Some((meta, target)) = self.leaf(fd, name, &child, kind) else {
                continue;
            };
            if !self.changed(&child, &meta) {
                continue;
            }
            totals.changed = true;
            totals.files += 1;
            totals.bytes += meta.size;
            if let Some(t) = target {
                if self
                    .req
                    .knowledge
                    .is_generated_link(&crate::classify::resolve_link(&child, &t))
                {
                    totals.generated += 1;
                }
            }
        }
        if self.req.since.is_none() && totals.files > 0 {
            totals.changed = true;
        }
        let below = subdirs
            .par_iter()
            .map(|name| {
                let child = path.join(name);
                if self.ignored(&child) {
                    return Totals::default();
                }
                let Some((sub, stat)) = self.open_subdir(fd, name, &child) else {
                    return Totals::default();
                };
                let mut t = self.count(sub.as_fd(), &child);
                if !t.changed
                    && self.changed(&child, &Meta::from_stat(&stat, None))
                    && self.req.since.is_some()
                {
                    t.changed = true;
                }
                t
            })
            .reduce(Totals::default, |a, b| a + b);
        totals + below
    }
}

/// Files and bytes below a directory, without following links.
pub fn count_tree(dir: &Path) -> (u64, u64) {
    let mut totals = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => {
                    totals.0 += 1;
                    totals.1 += m.len();
                }
                Err(_) => {}
            }
        }
    }
    totals
}
