//! `diff`: raw changes outside persisted paths, since the boot baseline or against an
//! old-root snapshot, with the suggestions they make.
//!
//! On btrfs, when the other side is a snapshot of the current root (the baseline snapshot),
//! the changes come from the inodes written since it was taken: a tree search that skips
//! every unchanged tree block, so the cost follows what changed, not the size of the tree.
//! Otherwise (an old root a reset kept shares no history with the fresh root; other
//! filesystems; `--walk`) both trees are walked and compared entry by entry.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::discover::{self, write_suggestions};
use crate::backend::{self, Backend, Btrfs, Kind};
use crate::baseline::{self, Change, ChangeKind, Manifest, Meta, differences};
use crate::classify::{EntryKind, Facts};
use crate::cli::{DiffArgs, GlobalArgs};
use crate::config::{Config, FilesystemConfig, FsType};
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;
use crate::knowledge;
use crate::nix::{self, Style};
use crate::output::{self, Report, Styles, count};
use crate::paths::{escape, under_root};
use crate::scan::{self, Unit};
use crate::suggest::{self, Suggestion};
use crate::toplevel::TopLevel;

/// The method name for the generation-based btrfs diff.
const GENERATION: &str = "btrfs-generation";

#[derive(Debug, Serialize)]
struct DiffReport {
    /// The snapshot compared with, or null for the boot baseline.
    against: Option<String>,
    /// `btrfs-generation` or `walk`.
    method: &'static str,
    changes: Vec<Change>,
    suggestions: Vec<Suggestion>,
    #[serde(skip)]
    storage: PathBuf,
    #[serde(skip)]
    style: Style,
}

pub fn run(global: &GlobalArgs, args: &DiffArgs) -> Result<ExitStatus, Error> {
    let config = super::load_config(global)?;
    let fs = super::filesystem(&config, &args.fs).ok();
    let searchable = !args.walk
        && fs.as_ref().is_some_and(|f| f.fs_type == FsType::Btrfs)
        && (args.fs.mounted.is_some() || rustix::process::geteuid().is_root());
    let (method, raw) = match (&args.against, fs.as_ref()) {
        (None, _) => {
            let snapshot_diff = match (searchable, fs.as_ref()) {
                (true, Some(fs)) => generation_if_baseline_snapshot(fs, args)?,
                _ => None,
            };
            match snapshot_diff {
                Some(changes) => (GENERATION, changes),
                None => {
                    let (_, manifest) = discover::load_manifest(&config.root)?.ok_or_else(|| {
                        Error::Usage(format!(
                            "no baseline in {}: run `imperm baseline` right after boot (the NixOS module does), or pass --against SNAP",
                            escape(&under_root(&config.root, Path::new(baseline::MANIFEST)))
                        ))
                    })?;
                    ("walk", walk_diff(&config, &manifest)?)
                }
            }
        }
        (Some(_), None) => {
            return Err(super::filesystem(&config, &args.fs)
                .err()
                .unwrap_or_else(|| {
                    Error::Usage(
                        "--against needs the filesystem: add [filesystem] or pass --fs".into(),
                    )
                }));
        }
        (Some(snap), Some(fs)) => against(&config, fs, args, snap, searchable)?,
    };
    let changes = outside_persisted(raw, &config);
    let against_snapshot = args.against.is_some();
    let units = units_of(&changes, &config, against_snapshot);
    let report = DiffReport {
        against: args.against.clone(),
        method,
        suggestions: suggest::suggest(
            units,
            &suggest::Context {
                complete: false,
                ..discover::context(&config)
            },
        ),
        changes,
        storage: discover::storage(&config),
        style: args.discover.style,
    };
    output::emit(&report, global.format, global.color)?;
    Ok(ExitStatus::Clean)
}

/// A changed path relative to a subvolume, as seen from the host's `/`.
fn host(rel: &Path) -> PathBuf {
    Path::new("/").join(rel)
}

fn as_host(mut changes: Vec<Change>) -> Vec<Change> {
    for c in &mut changes {
        c.path = host(&c.path);
        c.from = c.from.as_deref().map(host);
    }
    changes
}

/// With a `.baseline` snapshot of the current root: the changes since, by generation.
fn generation_if_baseline_snapshot(
    fs: &FilesystemConfig,
    args: &DiffArgs,
) -> Result<Option<Vec<Change>>, Error> {
    let top = TopLevel::open(fs, args.fs.mounted.as_deref())?;
    let parent = fs.snapshot_dir.join(baseline::SNAPSHOT);
    if Btrfs.kind(&top, &parent)? != Kind::Subvolume || !taken_of_root(&top, fs, &parent)? {
        return Ok(None);
    }
    Ok(Some(generation_diff(&top, fs, &parent)?))
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

/// The changes from `base` (a snapshot taken of the root) to the root now, from the inodes
/// written since `base` was taken: a tree search that skips unchanged tree blocks, then a
/// path lookup for each changed inode in both trees. Entries removed from a changed
/// directory are found by comparing its names in both trees.
fn generation_diff(
    top: &TopLevel,
    fs: &FilesystemConfig,
    base: &Path,
) -> Result<Vec<Change>, Error> {
    // Inode items reach the tree when delayed items are flushed; commit so that the
    // search sees every change made so far.
    top.sync()
        .map_err(|e| FsError::new("sync", top.path(), e))?;
    let root = Btrfs.info(top, &fs.root_subvolume)?;
    let before = Btrfs.info(top, base)?;
    // Everything the root wrote from the transaction the snapshot was taken in on. (The
    // snapshot's own generation moves on after it is taken.)
    let since = before.created.unwrap_or(0);
    let base_dir = top.join(base);
    let now_dir = top.join(&fs.root_subvolume);
    let mut out = Vec::new();
    for inode in Btrfs.changed_inodes(top, &fs.root_subvolume, since)? {
        let Some(now) = Btrfs.inode_path(top, root.id, inode.ino)? else {
            continue;
        };
        // The snapshot is taken when transaction `since` commits, so an inode made after it
        // belongs to a later one; an inode of `since` itself may be in the snapshot.
        let old = if inode.created > since {
            None
        } else {
            Btrfs.inode_path(top, before.id, inode.ino)?
        };
        let kind = Some(inode.meta.kind);
        let Some(old) = old else {
            out.push(Change {
                path: now,
                change: ChangeKind::Added,
                kind,
                from: None,
                what: Vec::new(),
            });
            continue;
        };
        let what = match std::fs::symlink_metadata(base_dir.join(&old)) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                let then = Meta::from_parts(
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.size(),
                    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                    None,
                );
                differences(&then, &inode.meta)
            }
            Err(e) => return Err(FsError::new("inspect", &base_dir.join(&old), e).into()),
        };
        if moved(&base_dir, &old, &now_dir, &now) {
            out.push(Change {
                path: now.clone(),
                change: ChangeKind::Renamed,
                kind,
                from: Some(old.clone()),
                what,
            });
        } else if !what.is_empty() {
            out.push(Change {
                path: now.clone(),
                change: ChangeKind::Changed,
                kind,
                from: None,
                what,
            });
        }
        if inode.meta.kind == EntryKind::Directory {
            removed_from(top, root.id, &base_dir, &old, &now_dir.join(&now), &mut out)?;
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.change.cmp(&b.change)));
    Ok(as_host(out))
}

/// Whether an entry itself was renamed or moved, not merely carried along by a renamed
/// directory above it: its name or its parent directory (by inode) differs.
fn moved(base_dir: &Path, old: &Path, now_dir: &Path, now: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if old.file_name() != now.file_name() {
        return true;
    }
    let parent_ino = |dir: &Path, rel: &Path| {
        std::fs::symlink_metadata(dir.join(rel.parent().unwrap_or(Path::new(""))))
            .map(|m| m.ino())
            .ok()
    };
    parent_ino(base_dir, old) != parent_ino(now_dir, now)
}

/// Entries of directory `old` (in the base snapshot) that are no longer in `now` and whose
/// inode is nowhere in the root now: removed, with everything below them.
fn removed_from(
    top: &TopLevel,
    root_id: u64,
    base_dir: &Path,
    old: &Path,
    now: &Path,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let names = |dir: &Path| -> Result<std::collections::BTreeSet<std::ffi::OsString>, Error> {
        match std::fs::read_dir(dir) {
            Ok(entries) => Ok(entries
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(FsError::new("list", dir, e).into()),
        }
    };
    let present = names(now)?;
    for name in names(&base_dir.join(old))? {
        if present.contains(&name) {
            continue;
        }
        let rel = old.join(&name);
        let meta = std::fs::symlink_metadata(base_dir.join(&rel))
            .map_err(|e| FsError::new("inspect", &base_dir.join(&rel), e))?;
        if Btrfs.inode_path(top, root_id, meta.ino())?.is_some() {
            continue; // moved elsewhere: reported where it is now
        }
        let mut stack = vec![(rel, meta.is_dir())];
        while let Some((rel, is_dir)) = stack.pop() {
            if is_dir {
                for child in names(&base_dir.join(&rel))? {
                    let path = rel.join(&child);
                    let dir =
                        std::fs::symlink_metadata(base_dir.join(&path)).is_ok_and(|m| m.is_dir());
                    stack.push((path, dir));
                }
            }
            let kind = Some(if is_dir {
                EntryKind::Directory
            } else {
                EntryKind::File
            });
            out.push(Change {
                path: rel,
                change: ChangeKind::Removed,
                kind,
                from: None,
                what: Vec::new(),
            });
        }
    }
    Ok(())
}

/// `--against SNAP`.
fn against(
    config: &Config,
    fs: &FilesystemConfig,
    args: &DiffArgs,
    snap: &str,
    searchable: bool,
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
        return Ok((GENERATION, generation_diff(&top, fs, &rel)?));
    }
    let old = discover::record(config, &top.join(&rel))?;
    Ok(("walk", walk_diff(config, &old)?))
}

/// Compares the root now with `old`, entry by entry.
fn walk_diff(config: &Config, old: &Manifest) -> Result<Vec<Change>, Error> {
    let now = discover::record(config, &config.root)?;
    let mut out = Vec::new();
    for (path, meta) in now.iter() {
        match old.get(path) {
            None => out.push(change(path, ChangeKind::Added, meta, Vec::new())),
            Some(before) => {
                let what = differences(before, meta);
                if !what.is_empty() {
                    out.push(change(path, ChangeKind::Changed, meta, what));
                }
            }
        }
    }
    for (path, meta) in old.iter() {
        if now.get(path).is_none() {
            out.push(change(path, ChangeKind::Removed, meta, Vec::new()));
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.change.cmp(&b.change)));
    Ok(out)
}

fn change(path: &Path, change: ChangeKind, meta: &Meta, what: Vec<&'static str>) -> Change {
    Change {
        path: path.to_path_buf(),
        change,
        kind: Some(meta.kind),
        from: None,
        what,
    }
}

/// Drops changes in persisted paths, in the paths never walked, and in the ignore globs.
fn outside_persisted(changes: Vec<Change>, config: &Config) -> Vec<Change> {
    let k = knowledge::builtin();
    let ignore = config.check.ignore_set();
    changes
        .into_iter()
        .filter(|c| {
            let p = &c.path;
            p != Path::new("/")
                && !config.persisted.contains(p)
                && !config.persisted.storages().iter().any(|s| p.starts_with(s))
                && !k.scan.never_walk.iter().any(|n| p.starts_with(n))
                && !ignore.as_ref().is_some_and(|g| g.is_match(p))
        })
        .collect()
}

/// Units of state from the changes: what was added or changed since the baseline, or,
/// against an old root, what it had that is gone or different now (what the reset wiped).
fn units_of(changes: &[Change], config: &Config, against_snapshot: bool) -> Vec<Unit> {
    let k = knowledge::builtin();
    let mut units: BTreeMap<PathBuf, Unit> = BTreeMap::new();
    for c in changes {
        let counts = match c.change {
            ChangeKind::Added | ChangeKind::Renamed => !against_snapshot,
            ChangeKind::Removed => against_snapshot,
            ChangeKind::Changed => true,
        };
        if !counts {
            continue;
        }
        let unit = suggest::unit_of(&c.path, k, &config.persisted);
        let is_dir = c.kind == Some(EntryKind::Directory);
        let on_disk = under_root(&config.root, &c.path);
        // A directory moved whole carries its files, which are listed nowhere else.
        let (files, size) = match (is_dir, c.change) {
            (true, ChangeKind::Renamed) => scan::count_tree(&on_disk),
            (true, _) => (0, 0),
            (false, _) => (
                1,
                std::fs::symlink_metadata(&on_disk)
                    .map(|m| m.len())
                    .unwrap_or(0),
            ),
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

impl Report for DiffReport {
    const COMMAND: &'static str = "diff";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
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
