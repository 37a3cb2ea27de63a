//! `diff`: raw changes outside persisted paths, since the boot baseline or against an
//! old-root snapshot, with the suggestions they make.
//!
//! On btrfs, when the other side is a snapshot of the current root (the baseline snapshot),
//! the changes come from the inodes written since it was taken: a tree search that skips
//! every unchanged tree block, so the cost follows what changed, not the size of the tree.
//! Otherwise (an old root a reset kept shares no history with the fresh root; other
//! filesystems; `--walk`) both trees are walked and compared entry by entry.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use rustix::fs::{AtFlags, OFlags, ResolveFlags};

use serde::Serialize;

use super::discover::{self, write_suggestions};
use crate::baseline::{
    self, Change, ChangeKind, Compare, Group, Manifest, ManifestError, Merge, Meta, Reader, Side,
};
use crate::beneath;
use crate::classify::{EntryKind, Facts};
use crate::cli::{DiffArgs, GlobalArgs};
use crate::config::{Config, FilesystemConfig, FsType};
use crate::discover::declared::Declarations;
use crate::discover::ordered::Ordered;
use crate::discover::scan::{self, Unit};
use crate::discover::suggest::{self, Suggestion};
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;
use crate::filesystem::backend::{self, Backend, Btrfs, Kind};
use crate::filesystem::toplevel::TopLevel;
use crate::knowledge;
use crate::nixos::nix::{self, Style};
use crate::output::{self, Report, Styles};
use crate::paths::{escape, under_root};
use crate::words::count;

/// The method name for the generation-based btrfs diff.
const GENERATION: &str = "btrfs-generation";

#[derive(Debug, Serialize)]
pub(super) struct DiffReport {
    /// The snapshot compared with, or null for the boot baseline.
    against: Option<String>,
    /// `btrfs-generation` or `walk`.
    method: &'static str,
    /// What the reader must know: why the walk was used where the search could not be,
    /// and what was not compared.
    notes: Vec<String>,
    changes: Vec<Change>,
    pub(super) suggestions: Vec<Suggestion>,
    #[serde(skip)]
    storage: PathBuf,
    #[serde(skip)]
    style: Style,
}

pub fn run(global: &GlobalArgs, args: &DiffArgs) -> Result<ExitStatus, Error> {
    let config = super::load_config(global)?;
    let report = report(&config, args)?;
    output::emit(&report, global.format, global.color)?;
    Ok(ExitStatus::Clean)
}

/// What `diff` finds, without printing it (`browse diff` shows the same).
pub(super) fn report(config: &Config, args: &DiffArgs) -> Result<DiffReport, Error> {
    let fs = super::filesystem(config, &args.fs).ok();
    let searchable = !args.walk
        && fs.as_ref().is_some_and(|f| f.fs_type == FsType::Btrfs)
        && (args.fs.mounted.is_some() || rustix::process::geteuid().is_root());
    let mut notes = Vec::new();
    let (method, raw) = match (&args.against, fs.as_ref()) {
        (None, _) => {
            // The header first: the search needs only it, and parsing a manifest of a
            // million entries costs seconds.
            let header = discover::load_manifest_header(&config.root)?.map(|(_, m)| m);
            // The filesystem options first: a wrong --mounted is the error to name.
            let search = match (searchable, fs.as_ref()) {
                (true, Some(fs)) => {
                    generation_if_baseline_snapshot(config, fs, args, header.as_ref())?
                }
                _ => Err(None),
            };
            // The walk reads the entries as it goes, merged with the walk in tree order.
            let manifest = header.ok_or_else(|| no_baseline(config))?;
            let (method, raw) = match search {
                Ok(changes) => (GENERATION, changes),
                Err(why) => {
                    notes.extend(why);
                    ("walk", walk_diff(config)?)
                }
            };
            (
                method,
                not_mounted(raw, config, &manifest.mounts, &mut notes),
            )
        }
        (Some(_), None) => {
            return Err(super::filesystem(config, &args.fs)
                .err()
                .unwrap_or_else(|| {
                    Error::Usage(
                        "--against needs the filesystem: add [filesystem] or pass --fs".into(),
                    )
                }));
        }
        (Some(snap), Some(fs)) => against(config, fs, args, snap, searchable, &mut notes)?,
    };
    let changes = outside_persisted(raw, config);
    let against_snapshot = args.against.is_some();
    // What the host declares, read once: it splits and decides the changed units.
    let declared = Declarations::read(&config.root);
    notes.extend(declared.notes());
    let units = units_of(&changes, config, against_snapshot, &declared);
    let report = DiffReport {
        against: args.against.clone(),
        method,
        notes,
        suggestions: suggest::suggest(
            units,
            &suggest::Context {
                complete: false,
                declared: &declared,
                ..discover::context(config)
            },
        ),
        changes,
        storage: discover::storage(config),
        style: args.discover.style,
    };
    Ok(report)
}

/// A path relative to a subvolume, as seen from the host's `/`.
fn host(rel: &Path) -> PathBuf {
    Path::new("/").join(rel)
}

/// Whether a path is in the part of the root the walk compares: not `/` itself, not
/// persisted, not in a storage path or a path never walked. The generation search keeps
/// to the same part, so that both methods pair the same entries.
fn walked<'a>(config: &'a Config) -> impl Fn(&Path) -> bool + 'a {
    let k = knowledge::builtin();
    move |p: &Path| {
        p != Path::new("/")
            && !config.persisted.contains(p)
            && !config.persisted.storages().iter().any(|s| p.starts_with(s))
            && k.never_walked(p).is_none()
    }
}

/// With a `.baseline` snapshot of the current root that belongs to `manifest`: the changes
/// since, by generation. Otherwise why not (`None`: nothing the reader needs to hear, as
/// when no snapshot was taken).
fn generation_if_baseline_snapshot(
    config: &Config,
    fs: &FilesystemConfig,
    args: &DiffArgs,
    manifest: Option<&Manifest>,
) -> Result<Result<Vec<Change>, Option<String>>, Error> {
    let top = TopLevel::open(fs, args.fs.mounted.as_deref())?;
    let Some(manifest) = manifest else {
        return Ok(Err(None));
    };
    let parent = fs.snapshot_dir.join(baseline::SNAPSHOT);
    let walked_because = |why: String| Ok(Err(Some(format!("{why}: walked the root instead"))));
    let Some(recorded) = manifest.snapshot.as_ref() else {
        return walked_because(
            "the baseline manifest does not name its snapshot (an older imperm wrote it, or it was edited)".into(),
        );
    };
    if recorded.is_empty() {
        return Ok(Err(None));
    }
    if !is_root_subvolume(&top, fs, &config.root)? {
        return walked_because(not_the_root(&top, fs, &config.root));
    }
    // Read-only only once complete (the nested subvolumes are snapshotted into it first).
    if Btrfs.kind(&top, &parent)? != Kind::Subvolume
        || !Btrfs.is_readonly(&top, &parent)?
        || !taken_of_root(&top, fs, &parent)?
    {
        return walked_because(format!(
            "{} is not a complete read-only snapshot of {}",
            top.name(&parent),
            top.name(&fs.root_subvolume)
        ));
    }
    let mut found = snapshot_parts(&Btrfs, &top, &parent)?;
    let mut want = recorded.clone();
    found.sort();
    want.sort();
    // Another baseline run's snapshot (one cut short, or refused the lock), or a nested
    // snapshot taken again since: not of the moment the manifest describes.
    if found != want {
        return walked_because(format!(
            "{} is not the snapshot the baseline manifest names",
            top.name(&parent)
        ));
    }
    Ok(match generation_diff(config, &top, fs, &parent)? {
        Some(changes) => Ok(changes),
        None => Err(Some(format!(
            "{} lacks a subvolume nested in the root: walked the root instead",
            top.name(&parent)
        ))),
    })
}

/// Each subvolume of `rel` (it first, then those nested in it, at any depth) as a
/// manifest records it: where it is, as seen from the host's `/`, its id and uuid.
pub(crate) fn snapshot_parts(
    backend: &dyn Backend,
    top: &TopLevel,
    rel: &Path,
) -> Result<Vec<baseline::SnapshotPart>, Error> {
    let part = |sub: &Path| -> Result<baseline::SnapshotPart, Error> {
        let info = backend.info(top, sub)?;
        let inside = sub.strip_prefix(rel).unwrap_or(sub);
        Ok(baseline::SnapshotPart {
            at: host(inside),
            id: info.id,
            uuid: info.uuid,
        })
    };
    let mut out = vec![part(rel)?];
    let mut queue = vec![rel.to_path_buf()];
    while let Some(dir) = queue.pop() {
        for child in backend.nested(top, &dir)? {
            out.push(part(&child)?);
            queue.push(child);
        }
    }
    Ok(out)
}

/// Whether the tree at `root` (`--root`) is the configured root subvolume itself (its root
/// directory, on the same filesystem), and not a mounted snapshot, another subvolume or a
/// plain directory: only then do the root subvolume's snapshot and its history describe it.
pub(crate) fn is_root_subvolume(
    top: &TopLevel,
    fs: &FilesystemConfig,
    root: &Path,
) -> Result<bool, Error> {
    let mask = rustix::fs::StatxFlags::BASIC_STATS | baseline::STATX_SUBVOL;
    let want = crate::filesystem::toplevel::statx(top, &fs.root_subvolume, mask)
        .map_err(|e| FsError::new("inspect", &top.join(&fs.root_subvolume), e))?;
    let have = rustix::fs::statx(rustix::fs::CWD, root, AtFlags::empty(), mask)
        .map_err(|e| FsError::new("inspect", root, e.into()))?;
    let subvol = |st: &rustix::fs::Statx| {
        (st.stx_mask & baseline::STATX_SUBVOL.bits() != 0).then_some(st.stx_subvol)
    };
    Ok((want.stx_dev_major, want.stx_dev_minor, want.stx_ino)
        == (have.stx_dev_major, have.stx_dev_minor, have.stx_ino)
        && match (subvol(&want), subvol(&have)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        })
}

/// "--root DIR is not @root on /dev/sda2".
pub(crate) fn not_the_root(top: &TopLevel, fs: &FilesystemConfig, root: &Path) -> String {
    format!(
        "--root {} is not {}",
        escape(root),
        top.name(&fs.root_subvolume)
    )
}

/// The mount points below the root now (as seen from the host's `/`), in the part the walk
/// compares: what is mounted there is not the root's.
pub(crate) fn mounts_below(config: &Config) -> Vec<PathBuf> {
    let walked = walked(config);
    let mut out: Vec<PathBuf> = crate::mountinfo::live(&config.root)
        .map(|t| t.mounts)
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| walked(p))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Leaves out what lies at or below a mount point, now or when the baseline was recorded
/// (`then`): it is not the root's (the walk does not enter it, and what a mount hides in
/// the root is not there to see), so it is neither added nor removed. A mount made or
/// gone since is said once.
fn not_mounted(
    changes: Vec<Change>,
    config: &Config,
    then: &[PathBuf],
    notes: &mut Vec<String>,
) -> Vec<Change> {
    let now = mounts_below(config);
    let walked = walked(config);
    let mut since: Vec<(&str, &PathBuf)> = now
        .iter()
        .filter(|m| !then.contains(m))
        .map(|m| ("mounted", m))
        .chain(
            then.iter()
                .filter(|m| walked(m) && !now.contains(m))
                .map(|m| ("unmounted", m)),
        )
        .collect();
    since.sort_by(|a, b| crate::paths::tree_order(a.1, b.1));
    for (what, m) in since {
        notes.push(format!(
            "{} {what} since the baseline: not compared",
            escape(m)
        ));
    }
    changes
        .into_iter()
        .filter(|c| !now.iter().chain(then).any(|m| c.path.starts_with(m)))
        .collect()
}

/// Whether `snap` was taken of the current root subvolume. Only then do the two share the
/// inode numbers and history the generation search relies on; an old root a reset kept
/// does not (the root was created anew), and neither does a baseline snapshot of an earlier
/// boot.
fn taken_of_root(top: &TopLevel, fs: &FilesystemConfig, snap: &Path) -> Result<bool, Error> {
    let root = Btrfs.info(top, &fs.root_subvolume)?;
    let snap = Btrfs.info(top, snap)?;
    Ok(root.uuid.is_some() && snap.parent_uuid == root.uuid)
}

/// Resolution below the top level: no symlink, no other mount.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// One subvolume (the baseline snapshot, or the root now) as a side of the comparison:
/// each path looked up in it when asked, without following any symlink.
struct Subvolume<'a> {
    top: &'a TopLevel,
    /// Relative to the top level.
    rel: PathBuf,
    walked: &'a dyn Fn(&Path) -> bool,
    cache: Mutex<HashMap<PathBuf, Option<Meta>>>,
    /// The first lookup that failed otherwise than by a missing path.
    failed: Mutex<Option<FsError>>,
}

impl<'a> Subvolume<'a> {
    fn new(top: &'a TopLevel, rel: &Path, walked: &'a dyn Fn(&Path) -> bool) -> Subvolume<'a> {
        Subvolume {
            top,
            rel: rel.to_path_buf(),
            walked,
            cache: Mutex::new(HashMap::new()),
            failed: Mutex::new(None),
        }
    }

    /// Where `path` is, for messages.
    fn shown(&self, path: &Path) -> PathBuf {
        self.top.join(&self.on_disk(path))
    }

    fn on_disk(&self, path: &Path) -> PathBuf {
        self.rel.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn open(&self, path: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        beneath::openat2_long(self.top.dir().as_fd(), &self.on_disk(path), flags, BENEATH)
    }

    fn lookup(&self, path: &Path) -> Result<Option<Meta>, FsError> {
        let err = |e: rustix::io::Errno| FsError::new("inspect", &self.shown(path), e.into());
        let fd = match self.open(path, OFlags::PATH | OFlags::NOFOLLOW) {
            Ok(fd) => fd,
            // Not there; or reached through a symlink, which the walk never follows: not
            // an entry of this tree either.
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
                return Ok(None);
            }
            Err(e) => return Err(err(e)),
        };
        let st = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, scan::STATX).map_err(err)?;
        let kind = baseline::kind_of(u32::from(st.stx_mode));
        let target = if kind == EntryKind::Symlink {
            let t = rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(err)?;
            Some(PathBuf::from(std::ffi::OsStr::from_bytes(t.as_bytes())))
        } else {
            None
        };
        let mut meta = Meta::from_statx(&st, target);
        // The two sides are different subvolumes (a snapshot and its source) with the
        // same inodes; which inode is which, the search says.
        if let Some(stamps) = meta.stamps.as_mut() {
            stamps.subvol = None;
        }
        meta.xattrs = Some(
            scan::xattr_digest(&scan::fd_path(fd.as_fd(), None), true)
                .map_err(|e| FsError::new("read extended attributes of", &self.shown(path), e))?,
        );
        Ok(Some(meta))
    }

    /// Names and inode numbers in directory `path`.
    fn list(&self, path: &Path) -> Result<Vec<(std::ffi::OsString, u64)>, FsError> {
        // Without touching its access time (see `scan::open_dir`): the next search would
        // find the directory changed.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        let opened = match self.open(path, flags | OFlags::NOATIME) {
            Err(rustix::io::Errno::PERM) => self.open(path, flags),
            other => other,
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
                return Ok(Vec::new());
            }
            Err(e) => {
                return Err(FsError::new("list", &self.shown(path), e.into()));
            }
        };
        let mut out = Vec::new();
        let mut dir = rustix::fs::Dir::read_from(&fd)
            .map_err(|e| FsError::new("list", &self.shown(path), e.into()))?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| FsError::new("list", &self.shown(path), e.into()))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push((
                    std::ffi::OsStr::from_bytes(name).to_os_string(),
                    entry.ino(),
                ));
            }
        }
        Ok(out)
    }

    fn check(&self) -> Result<(), Error> {
        match self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Side for Subvolume<'_> {
    fn get(&self, path: &Path) -> Option<Cow<'_, Meta>> {
        if !(self.walked)(path) {
            return None;
        }
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return hit.clone().map(Cow::Owned);
        }
        let meta = match self.lookup(path) {
            Ok(meta) => meta,
            Err(e) => {
                self.failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
                None
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf(), meta.clone());
        meta.map(Cow::Owned)
    }
}

/// Paths of inodes in one subvolume, from their inode references; directories' paths are
/// remembered (a directory has one name).
struct Namer<'a> {
    top: &'a TopLevel,
    tree: u64,
    /// Where the subvolume's root is, as seen from the host's `/`.
    at: PathBuf,
    dirs: HashMap<u64, Option<PathBuf>>,
}

/// The inode number of every subvolume's root directory.
const SUBVOLUME_ROOT: u64 = 256;

impl<'a> Namer<'a> {
    fn new(top: &'a TopLevel, part: &Part) -> Namer<'a> {
        Namer {
            top,
            tree: part.info.id,
            at: part.at.clone(),
            dirs: HashMap::new(),
        }
    }

    /// Directory `ino` as seen from the host's `/`.
    fn dir_path(&mut self, ino: u64) -> Result<Option<PathBuf>, Error> {
        Ok(self.dir(ino)?.map(|rel| under(&self.at, &rel)))
    }

    /// The path of directory `ino` relative to the subvolume, `None` when it is not there.
    fn dir(&mut self, ino: u64) -> Result<Option<PathBuf>, Error> {
        // Up the chain of parents to one already known (iteratively: any depth).
        let mut chain = Vec::new();
        let mut at = ino;
        let base = loop {
            if at == SUBVOLUME_ROOT {
                break Some(PathBuf::new());
            }
            if let Some(known) = self.dirs.get(&at) {
                break known.clone();
            }
            let Some((parent, name)) = Btrfs
                .inode_names(self.top, self.tree, at)?
                .into_iter()
                .next()
            else {
                break None;
            };
            if chain.len() > 1 << 20 {
                break None; // not a tree: a damaged filesystem
            }
            chain.push((at, name));
            at = parent;
        };
        let mut path = base;
        for (dir, name) in chain.into_iter().rev() {
            path = path.map(|p| p.join(name));
            self.dirs.insert(dir, path.clone());
        }
        Ok(path)
    }

    /// Every path (hard link) of inode `ino`, as seen from the host's `/`.
    fn paths(&mut self, ino: u64) -> Result<Vec<PathBuf>, Error> {
        let mut out = Vec::new();
        for (parent, name) in Btrfs.inode_names(self.top, self.tree, ino)? {
            if let Some(dir) = self.dir_path(parent)? {
                out.push(dir.join(name));
            }
        }
        Ok(out)
    }
}

/// `rel` (relative to a subvolume) below `at`, without a trailing `/` for an empty `rel`.
fn under(at: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        at.to_path_buf()
    } else {
        at.join(rel)
    }
}

/// One subvolume of a tree the search compares: its root, or one nested in it.
struct Part {
    /// Relative to the top level.
    rel: PathBuf,
    /// Where its root directory is, as seen from the host's `/`.
    at: PathBuf,
    info: backend::SubvolumeInfo,
}

/// Subvolume `rel` and every subvolume nested in it (any depth), each with its place.
fn parts(top: &TopLevel, rel: &Path) -> Result<Vec<Part>, Error> {
    let mut out = vec![Part {
        rel: rel.to_path_buf(),
        at: PathBuf::from("/"),
        info: Btrfs.info(top, rel)?,
    }];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].rel.clone();
        for child in Btrfs.nested(top, &parent)? {
            let Ok(inside) = child.strip_prefix(rel) else {
                continue;
            };
            out.push(Part {
                at: host(inside),
                info: Btrfs.info(top, &child)?,
                rel: child,
            });
        }
        i += 1;
    }
    Ok(out)
}

/// Whether `at` (as seen from the host's `/`) is reached from the root tree only across
/// another mount: a nested subvolume mounted apart, which the walk does not enter either.
fn mounted_apart(root: &Path, at: &Path) -> bool {
    let Ok(dir) = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return false;
    };
    let rel = at.strip_prefix("/").unwrap_or(at);
    matches!(
        beneath::openat2_long(dir.as_fd(), rel, OFlags::PATH | OFlags::DIRECTORY, BENEATH),
        Err(rustix::io::Errno::XDEV)
    )
}

/// Whether an entry is the root of a subvolume: its own inode 256, or the empty stand-in
/// btrfs shows in a snapshot where a nested subvolume was not snapshotted in.
fn subvolume_root(meta: &Meta) -> bool {
    /// BTRFS_EMPTY_SUBVOL_DIR_OBJECTID.
    const EMPTY_SUBVOLUME: u64 = 2;
    meta.kind == EntryKind::Directory
        && meta
            .stamps
            .is_some_and(|s| s.ino == SUBVOLUME_ROOT || s.ino == EMPTY_SUBVOLUME)
}

/// The changes from `base` (a snapshot taken of the root, with the subvolumes nested in it
/// snapshotted in place) to the root now, from the inodes written since `base` was taken:
/// per subvolume (the root and each nested one, paired with its snapshot in `base` by
/// lineage), a tree search that skips unchanged tree blocks, then the names of each
/// changed inode in both trees (all of its hard links), and, for each changed directory,
/// the entries gone from it. A nested subvolume made since is added whole, one gone is
/// removed whole, one moved is renamed. The comparison itself is the walk's
/// (`baseline::Compare`), so both methods report alike. `None` when `base` cannot answer:
/// a subvolume that was there when it was taken is not in it.
fn generation_diff(
    config: &Config,
    top: &TopLevel,
    fs: &FilesystemConfig,
    base: &Path,
) -> Result<Option<Vec<Change>>, Error> {
    // Inode items reach the tree when delayed items are flushed; commit so that the
    // search sees every change made so far.
    top.sync()
        .map_err(|e| FsError::new("sync", top.path(), e))?;
    let now_parts = parts(top, &fs.root_subvolume)?;
    let then_parts = parts(top, base)?;
    // Everything the root wrote from the transaction the snapshot was taken in on. (The
    // snapshot's own generation moves on after it is taken.)
    let since_root = then_parts[0].info.created.unwrap_or(0);
    let mut pairs: Vec<(Option<&Part>, Option<&Part>)> =
        vec![(Some(&then_parts[0]), Some(&now_parts[0]))];
    let mut paired = HashSet::new();
    for n in &now_parts[1..] {
        let snapshot = then_parts[1..]
            .iter()
            .position(|b| b.info.parent_uuid.is_some() && b.info.parent_uuid == n.info.uuid);
        match snapshot {
            Some(i) => {
                paired.insert(i);
                pairs.push((Some(&then_parts[1 + i]), Some(n)));
            }
            None if n.info.created.is_none_or(|c| c <= since_root) => return Ok(None),
            None => pairs.push((None, Some(n))),
        }
    }
    for (i, b) in then_parts[1..].iter().enumerate() {
        if !paired.contains(&i) {
            pairs.push((Some(b), None));
        }
    }
    let walked = walked(config);
    let then = Subvolume::new(top, base, &walked);
    let now = Subvolume::new(top, &fs.root_subvolume, &walked);
    let mut groups: Vec<Group> = Vec::new();
    for (b, n) in pairs {
        let nested = b.or(n).is_some_and(|p| p.at != Path::new("/"));
        let (b, n) = if nested {
            // Mounted over now: not the root's to compare (see `not_mounted`).
            if n.is_some_and(|n| mounted_apart(&config.root, &n.at)) {
                continue;
            }
            // A side in a persisted (or never walked) path is not compared: a subvolume
            // moved into one is gone whole, one moved out of one is new whole, as the
            // walk sees them.
            let b = b.filter(|b| walked(&b.at));
            let n = n.filter(|n| walked(&n.at));
            if b.is_none() && n.is_none() {
                continue;
            }
            // The subvolume's own root: where it is in each state.
            groups.push(Group {
                old: b.map(|b| vec![b.at.clone()]).unwrap_or_default(),
                new: n.map(|n| vec![n.at.clone()]).unwrap_or_default(),
            });
            (b, n)
        } else {
            (b, n)
        };
        let found = match (b, n) {
            (Some(b), Some(n)) => changed_since(top, &then, &now, b, n, &walked)?,
            (None, Some(n)) => whole(top, n, &walked)?
                .into_iter()
                .map(|new| Group {
                    old: Vec::new(),
                    new,
                })
                .collect(),
            (Some(b), None) => whole(top, b, &walked)?
                .into_iter()
                .map(|old| Group {
                    old,
                    new: Vec::new(),
                })
                .collect(),
            (None, None) => Vec::new(),
        };
        groups.extend(found);
    }
    let compare = Compare {
        old: &then,
        new: &now,
        same_history: true,
        same_content: None,
    };
    let out = compare.changes(groups);
    then.check()?;
    now.check()?;
    Ok(Some(out))
}

/// The paths of every inode of subvolume `part` but its root: a subvolume made or gone
/// whole.
fn whole(
    top: &TopLevel,
    part: &Part,
    walked: &dyn Fn(&Path) -> bool,
) -> Result<Vec<Vec<PathBuf>>, Error> {
    let mut names = Namer::new(top, part);
    let mut out = Vec::new();
    for inode in Btrfs.changed_inodes(top, &part.rel, 0)? {
        if inode.ino == SUBVOLUME_ROOT {
            continue;
        }
        let paths: Vec<PathBuf> = names
            .paths(inode.ino)?
            .into_iter()
            .filter(|p| walked(p))
            .collect();
        if !paths.is_empty() {
            out.push(paths);
        }
    }
    Ok(out)
}

/// The entries of subvolume `n` that differ from its snapshot `b`, each as the group of
/// its paths in both.
fn changed_since(
    top: &TopLevel,
    then: &Subvolume,
    now: &Subvolume,
    b: &Part,
    n: &Part,
    walked: &dyn Fn(&Path) -> bool,
) -> Result<Vec<Group>, Error> {
    let since = b.info.created.unwrap_or(0);
    let mut names_then = Namer::new(top, b);
    let mut names_now = Namer::new(top, n);
    // The snapshot is made while transaction `since` commits, after every writer of that
    // transaction is done (the commit waits for them, and new writers go to the next
    // one), so it holds all of `since`'s writes: whatever changed after it is of a later
    // transaction. Searching from `since` itself would take every inode written in the
    // snapshot's transaction for changed: a tree written just before the baseline (a
    // first boot, a benchmark) would be read whole, slower than the walk.
    let changed = Btrfs.changed_inodes(top, &n.rel, since + 1)?;
    let is_changed: HashSet<u64> = changed.iter().map(|i| i.ino).collect();
    let mut groups: HashMap<u64, Group> = HashMap::new();
    for inode in &changed {
        // The snapshot is taken when transaction `since` commits, so an inode made after
        // it belongs to a later one; an inode of `since` itself may be in the snapshot.
        let existed = inode.created <= since;
        // The root's place is the pair's to report.
        if inode.ino != SUBVOLUME_ROOT {
            let new: Vec<PathBuf> = names_now
                .paths(inode.ino)?
                .into_iter()
                .filter(|p| walked(p))
                .collect();
            let old: Vec<PathBuf> = if existed {
                names_then
                    .paths(inode.ino)?
                    .into_iter()
                    .filter(|p| walked(p))
                    .collect()
            } else {
                Vec::new()
            };
            if !old.is_empty() || !new.is_empty() {
                groups.insert(inode.ino, Group { old, new });
            }
        }
        if inode.meta.kind != EntryKind::Directory || !existed {
            continue;
        }
        // Entries gone from a directory that was there: an inode that is not changed
        // itself is gone with them (a rename or a new link would have changed it).
        let Some(dir_then) = names_then.dir_path(inode.ino)? else {
            continue;
        };
        let present: HashMap<std::ffi::OsString, u64> = match names_now.dir_path(inode.ino)? {
            Some(dir_now) => now.list(&dir_now)?.into_iter().collect(),
            None => HashMap::new(),
        };
        let mut stack: Vec<(PathBuf, u64)> = then
            .list(&dir_then)?
            .into_iter()
            .filter(|(name, ino)| present.get(name) != Some(ino))
            .map(|(name, ino)| (dir_then.join(name), ino))
            .collect();
        while let Some((path, ino)) = stack.pop() {
            // A changed inode has its own group; a nested subvolume is a pair of its own.
            if is_changed.contains(&ino) || !walked(&path) {
                continue;
            }
            let Some(meta) = then.get(&path) else {
                continue;
            };
            if subvolume_root(&meta) {
                continue;
            }
            groups.entry(ino).or_default().old.push(path.clone());
            if meta.kind == EntryKind::Directory {
                for (name, child) in then.list(&path)? {
                    stack.push((path.join(name), child));
                }
            }
        }
    }
    Ok(groups.into_values().collect())
}

/// `--against SNAP`.
fn against(
    config: &Config,
    fs: &FilesystemConfig,
    args: &DiffArgs,
    snap: &str,
    searchable: bool,
    notes: &mut Vec<String>,
) -> Result<(&'static str, Vec<Change>), Error> {
    let backend = backend::for_type(fs.fs_type);
    if !backend.has_subvolumes() {
        return Err(Error::Usage(
            "a tmpfs root has no snapshots to compare with".into(),
        ));
    }
    let top = TopLevel::open(fs, args.fs.mounted.as_deref())?;
    let (_, rel) = super::old_root(backend.as_ref(), &top, fs, Some(snap))?;
    if searchable && taken_of_root(&top, fs, &rel)? {
        if !is_root_subvolume(&top, fs, &config.root)? {
            notes.push(format!(
                "{}: walked the root instead",
                not_the_root(&top, fs, &config.root)
            ));
        } else if let Some(changes) = generation_diff(config, &top, fs, &rel)? {
            return Ok((GENERATION, changes));
        }
    }
    // A fresh root shares no history with the old one: its inode numbers and ctimes say
    // nothing about it. A file with the old size and mtime is compared byte for byte
    // (NixOS copies files out of the store with their mtime of 1, and a restore keeps
    // times): the cost is bounded by what the fresh root holds with the old size and
    // mtime, which a boot makes little of.
    // Both trees are walked in tree order, the old one in a thread of its own, and merged.
    let old_dir = top.join(&rel);
    let old_walk = Ordered::new(&old_dir, &config.persisted, knowledge::builtin())?;
    let now_walk = Ordered::new(&config.root, &config.persisted, knowledge::builtin())?;
    let old_tree = beneath::Tree::open(&old_dir)?;
    let now_tree = beneath::Tree::open(&config.root)?;
    let same = |path: &Path| same_content(&old_tree, &now_tree, path);
    let compared = walked(config);
    let merge = Merge {
        same_history: false,
        same_content: Some(&same),
        compared: &compared,
    };
    let changes = std::thread::scope(|s| {
        let _progress = Progress::start(vec![old_walk.read.clone(), now_walk.read.clone()]);
        let old = batched(
            s,
            old_walk.map(|(path, e)| {
                let meta = e.complete(&path, None);
                Ok::<_, std::convert::Infallible>((path, meta))
            }),
        );
        merge.run(old, now_walk.map(Ok), |path, e, _| e.complete(path, None))
    });
    let Ok(changes) = changes;
    Ok(("walk", changes))
}

/// Whether a file holds the same bytes in two trees; `None` when either cannot be read.
fn same_content(a: &beneath::Tree, b: &beneath::Tree, path: &Path) -> Option<bool> {
    let mut a = a.open_file(path).ok()??;
    let mut b = b.open_file(path).ok()??;
    let mut x = vec![0u8; 1 << 16];
    let mut y = vec![0u8; 1 << 16];
    loop {
        let n = read_full(&mut a, &mut x).ok()?;
        let m = read_full(&mut b, &mut y).ok()?;
        if x[..n] != y[..m] {
            return Some(false);
        }
        if n == 0 {
            return Some(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match io::Read::read(file, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn no_baseline(config: &Config) -> Error {
    Error::Usage(format!(
        "no baseline in {}: run `imperm baseline` right after boot (the NixOS module does), or pass --against SNAP",
        escape(&under_root(&config.root, Path::new(baseline::MANIFEST)))
    ))
}

/// Why a merge with the manifest stopped before its end.
enum Stop {
    /// The manifest is damaged (or could not be read).
    Manifest(ManifestError),
    /// An entry comes before the one above it in the file: not in tree order (a manifest
    /// written by hand), so not mergeable as it is read.
    OutOfOrder,
    /// An entry without inode number or times, in a manifest taken to have them all.
    NoStamps,
}

/// The manifest's entries as read, checked to be in strict tree order (and, with
/// `stamps`, to have inode numbers and times).
struct Checked<R> {
    reader: Reader<R>,
    stamps: bool,
    previous: Vec<u8>,
    first: bool,
}

impl<R: std::io::BufRead> Iterator for Checked<R> {
    type Item = Result<(PathBuf, Meta), Stop>;

    fn next(&mut self) -> Option<Self::Item> {
        let (path, meta) = match self.reader.next_entry()? {
            Ok(entry) => entry,
            Err(e) => return Some(Err(Stop::Manifest(e))),
        };
        if !std::mem::take(&mut self.first) {
            let previous = Path::new(std::ffi::OsStr::from_bytes(&self.previous));
            match crate::paths::tree_order(previous, &path) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Some(Err(Stop::Manifest(ManifestError::Invalid(format!(
                        "line {}: {} is listed twice",
                        self.reader.line(),
                        escape(&path)
                    )))));
                }
                std::cmp::Ordering::Greater => return Some(Err(Stop::OutOfOrder)),
            }
        }
        if self.stamps && meta.stamps.is_none() {
            return Some(Err(Stop::NoStamps));
        }
        self.previous.clear();
        self.previous.extend_from_slice(path.as_os_str().as_bytes());
        Some(Ok((path, meta)))
    }
}

/// Entries made by `items` in a thread of `scope`, handed over in batches through a
/// bounded channel: both sides of a merge are read at once, in bounded memory. A batch is
/// at most 1,024 entries or 256 KiB of paths (a tree thousands of directories deep has
/// paths of tens of kilobytes).
fn batched<'s, E: Send + 's>(
    scope: &'s std::thread::Scope<'s, '_>,
    items: impl Iterator<Item = Result<(PathBuf, Meta), E>> + Send + 's,
) -> Batches<E> {
    const BATCH: usize = 1024;
    const BATCH_BYTES: usize = 256 << 10;
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    scope.spawn(move || {
        let mut batch = Vec::with_capacity(BATCH);
        let mut bytes = 0;
        for item in items {
            match item {
                Ok(entry) => {
                    bytes += entry.0.as_os_str().len();
                    batch.push(entry);
                    if batch.len() == BATCH || bytes >= BATCH_BYTES {
                        bytes = 0;
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        // The other end stopped (an error, or done): so does this one.
                        if tx.send(Ok(full)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Ok(batch));
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        let _ = tx.send(Ok(batch));
    });
    Batches {
        rx,
        current: Vec::new().into_iter(),
    }
}

/// The receiving end of [`batched`].
struct Batches<E> {
    rx: std::sync::mpsc::Receiver<Result<Vec<(PathBuf, Meta)>, E>>,
    current: std::vec::IntoIter<(PathBuf, Meta)>,
}

impl<E> Iterator for Batches<E> {
    type Item = Result<(PathBuf, Meta), E>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.current.next() {
                return Some(Ok(entry));
            }
            match self.rx.recv() {
                Ok(Ok(batch)) => self.current = batch.into_iter(),
                Ok(Err(e)) => return Some(Err(e)),
                Err(_) => return None,
            }
        }
    }
}

/// A progress line on a terminal while walks run (see `scan::progress`: after a second,
/// the entries read so far), ended when dropped.
pub(crate) struct Progress {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn start(counters: Vec<std::sync::Arc<std::sync::atomic::AtomicU64>>) -> Progress {
        use std::io::IsTerminal;
        use std::sync::atomic::{AtomicBool, AtomicU64};
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let thread = io::stderr().is_terminal().then(|| {
            let done = done.clone();
            std::thread::spawn(move || {
                let total = AtomicU64::new(0);
                std::thread::scope(|s| {
                    s.spawn(|| scan::progress(&total, &done));
                    while !done.load(Ordering::Relaxed) {
                        let sum = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                        total.store(sum, Ordering::Relaxed);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                });
            })
        });
        Progress { done, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Compares the root now with the baseline manifest: the manifest is read as the walk
/// goes, in a thread of its own, both in tree order, and merged (see [`Merge`]), so that
/// neither is held in memory. Renames are paired and ctime counts when the manifest has
/// inode numbers and times (format 2). A manifest not in tree order (imperm writes them
/// so; one edited by hand may not be) is read whole and sorted in memory instead.
fn walk_diff(config: &Config) -> Result<Vec<Change>, Error> {
    let tree = beneath::Tree::open(&config.root)?;
    let abs = Path::new(baseline::MANIFEST);
    let file = tree.on_disk(abs);
    let bad = |e: ManifestError| match e {
        ManifestError::Io(e) => Error::from(FsError::new("read", &file, e)),
        e => Error::Usage(format!("{}: {e}", escape(&file))),
    };
    let compared = walked(config);
    let mut same_history = None;
    loop {
        let input = tree.open_regular(abs)?.ok_or_else(|| no_baseline(config))?;
        let reader = Reader::new(io::BufReader::with_capacity(1 << 20, input)).map_err(bad)?;
        let stamps = *same_history.get_or_insert(reader.version() >= 2);
        let walk = Ordered::new(&config.root, &config.persisted, knowledge::builtin())?;
        let old = Checked {
            reader,
            stamps,
            previous: Vec::new(),
            first: true,
        };
        let merge = Merge {
            same_history: stamps,
            same_content: None,
            compared: &compared,
        };
        let merged = std::thread::scope(|s| {
            let _progress = Progress::start(vec![walk.read.clone()]);
            // Link targets and extended attributes are the manifest's where its entry is
            // the same inode with the same ctime.
            merge.run(batched(s, old), walk.map(Ok), |p, e, old| {
                e.complete(p, old)
            })
        });
        match merged {
            Ok(changes) => return Ok(changes),
            Err(Stop::Manifest(e)) => return Err(bad(e)),
            Err(Stop::NoStamps) => same_history = Some(false),
            Err(Stop::OutOfOrder) => break,
        }
    }
    let (_, old) = discover::load_manifest(&config.root)?.ok_or_else(|| no_baseline(config))?;
    let same_history = old.has_stamps();
    let mut entries: Vec<(PathBuf, Meta)> = old
        .iter()
        .map(|(p, m)| (p.to_path_buf(), m.clone()))
        .collect();
    drop(old);
    entries.sort_unstable_by(|a, b| crate::paths::tree_order(&a.0, &b.0));
    let walk = Ordered::new(&config.root, &config.persisted, knowledge::builtin())?;
    let merge = Merge {
        same_history,
        same_content: None,
        compared: &compared,
    };
    let ok = |entry| Ok::<_, std::convert::Infallible>(entry);
    let Ok(changes) = merge.run(entries.into_iter().map(ok), walk.map(Ok), |p, e, old| {
        e.complete(p, old)
    });
    Ok(changes)
}

/// Drops changes in persisted paths, in the paths never walked, and in the ignore globs.
fn outside_persisted(changes: Vec<Change>, config: &Config) -> Vec<Change> {
    let walked = walked(config);
    let ignore = config.check.ignore_set();
    changes
        .into_iter()
        .filter(|c| walked(&c.path) && !ignore.as_ref().is_some_and(|g| g.is_match(&c.path)))
        .collect()
}

/// Units of state from the changes: what was added or changed since the baseline, or,
/// against an old root, what it had that is gone or different now (what the reset wiped).
fn units_of(
    changes: &[Change],
    config: &Config,
    against_snapshot: bool,
    declared: &Declarations,
) -> Vec<Unit> {
    let k = knowledge::builtin();
    let tree = beneath::Tree::open(&config.root).ok();
    let mut units: BTreeMap<PathBuf, Unit> = BTreeMap::new();
    // Per unit, the files with several names counted so far (`scan::linked_key`).
    let mut seen: HashMap<PathBuf, HashSet<(u64, u64)>> = HashMap::new();
    // Directories moved whole are counted whole, with every file in them now: a change
    // below one is in that count already.
    let moved: Vec<&Path> = changes
        .iter()
        .filter(|c| {
            !against_snapshot
                && c.change == ChangeKind::Renamed
                && c.kind == Some(EntryKind::Directory)
        })
        .map(|c| c.path.as_path())
        .collect();
    for c in changes {
        let counts = match c.change {
            ChangeKind::Added | ChangeKind::Renamed => !against_snapshot,
            ChangeKind::Removed => against_snapshot,
            ChangeKind::Changed => true,
        };
        if !counts {
            continue;
        }
        if c.change != ChangeKind::Removed
            && moved.iter().any(|m| c.path != *m && c.path.starts_with(m))
        {
            continue;
        }
        let unit = suggest::unit_of(&c.path, k, &config.persisted, declared);
        let is_dir = c.kind == Some(EntryKind::Directory);
        // A directory moved whole carries its files, which are listed nowhere else.
        let seen = seen.entry(unit.clone()).or_default();
        let (files, size) = match (is_dir, c.change) {
            (true, ChangeKind::Renamed) => tree
                .as_ref()
                .and_then(|t| t.open_dir(&c.path))
                .map_or((0, 0), |fd| scan::count_tree_once(fd, seen)),
            (true, _) => (0, 0),
            // Another name of a file counted already. (What an old root had is not looked
            // up: it is not in this tree.)
            (false, _)
                if !against_snapshot
                    && c.links != 1
                    && tree
                        .as_ref()
                        .and_then(|t| linked_key(t, &c.path))
                        .is_some_and(|key| !seen.insert(key)) =>
            {
                (0, 0)
            }
            // What the old root had is what a reset wiped; since the baseline, what is
            // there now is the state.
            (false, _) if against_snapshot => (1, c.bytes_then),
            (false, _) => (1, c.bytes_now),
        };
        let entry = units.entry(unit.clone()).or_insert_with(|| Unit {
            facts: Facts {
                kind: Some(if unit == c.path {
                    c.kind.unwrap_or(EntryKind::File)
                } else {
                    EntryKind::Directory
                }),
                ..Facts::default()
            },
            bytes: 0,
            path: unit.clone(),
        });
        entry.facts.files += files;
        entry.bytes += size;
    }
    units.into_values().collect()
}

/// [`scan::linked_key`] of the tree's `path`, not following a final symlink; `None` when
/// it has one name or is gone.
fn linked_key(tree: &beneath::Tree, path: &Path) -> Option<(u64, u64)> {
    let dir = tree.open_dir(path.parent()?)?;
    let st = rustix::fs::statx(
        &dir,
        path.file_name()?,
        AtFlags::SYMLINK_NOFOLLOW,
        scan::STATX,
    )
    .ok()?;
    scan::linked_key(&st)
}

impl Report for DiffReport {
    const COMMAND: &'static str = "diff";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        for note in &self.notes {
            writeln!(out, "{}note: {note}{:#}", s.dim, s.dim)?;
        }
        for c in &self.changes {
            let (mark, style) = match c.change {
                ChangeKind::Added => ("+", s.good),
                ChangeKind::Removed => ("-", s.problem),
                ChangeKind::Changed => ("~", s.heading),
                ChangeKind::Renamed => (">", s.heading),
            };
            let from = c
                .from
                .as_ref()
                .map(|f| format!(" (from {})", escape(f)))
                .unwrap_or_default();
            let what = if c.what.is_empty() {
                String::new()
            } else {
                format!(" [{}]", c.what.join(", "))
            };
            writeln!(
                out,
                "{style}{mark}{style:#} {}{from}{what}",
                escape(&c.path)
            )?;
        }
        if !self.suggestions.is_empty() {
            writeln!(out)?;
            write_suggestions(out, s, &self.suggestions)?;
        }
        let against = match &self.against {
            Some(snap) => format!("against {snap}"),
            None => "since the baseline".into(),
        };
        writeln!(
            out,
            "{} {against} ({}); {}",
            count(self.changes.len(), "change", "changes"),
            self.method,
            discover::summary(&self.suggestions)
        )
    }

    fn nix(&self) -> Option<String> {
        Some(nix::render(&self.suggestions, &self.storage, self.style))
    }
}
