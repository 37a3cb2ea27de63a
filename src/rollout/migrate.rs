//! `migrate`: the declared state of a live root copied into its persistent storage, the
//! step of a rollout that is otherwise a hand-made `cp -a`.
//!
//! The copy is restore's ([`crate::recover::restore`]): made beside the target under a
//! temporary name, exact (owner, mode, times, xattrs and ACLs, symlinks as symlinks, hard
//! links linked, holes kept, FIFOs and device nodes made again), flushed, then renamed into
//! place, or swapped with a storage copy that differs (`--force`), which is kept aside. So
//! a run killed at any moment leaves either nothing under the final name or a complete
//! copy, and the next run clears the leftover and finishes the job. Before it is placed,
//! each copy is compared with the live path, every file's content hashed (BLAKE3) on both
//! sides; a path that changed meanwhile is copied again, up to [`TRIES`] times.
//!
//! What to do with each entry is decided by a pure function ([`decide`]) from what is on
//! each side, before anything is written: every refusal comes before the first change.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde::Serialize;

use crate::config::Config;
use crate::discover::units::UnitDir;
use crate::error::{Error, FsError};
use crate::paths::{escape, quoted};
use crate::persisted::Kind;
use crate::recover::restore::{self, Job, Prepared};
use crate::rollout::record;
use crate::rollout::survey::{self, Survey, SurveyError};
use crate::words::bytes;

/// How many times a path that changes while it is copied is copied.
pub const TRIES: u32 = 3;

/// What a run does with one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Not in the storage: copied.
    Copy,
    /// In the storage and different (`--force`): the storage's copy is kept aside, the
    /// live one copied.
    Replace,
    /// Nothing to do: in the storage already, the same, or nothing that can be copied.
    Skip,
    /// Not on the live root: nothing to copy.
    Absent,
    /// Cannot be done as asked; the whole run is refused.
    Refuse,
}

impl Action {
    pub fn word(self) -> &'static str {
        match self {
            Action::Copy => "copy",
            Action::Replace => "replace",
            Action::Skip => "skip",
            Action::Absent => "absent",
            Action::Refuse => "refuse",
        }
    }
}

/// What the live root has at an entry's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Absent,
    Present(survey::Kind),
    /// Reached through a symlink, or otherwise not to be copied: why.
    Unreachable(String),
}

/// What the storage has at the entry's place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Absent,
    /// The very inode the live path is: a bind mount of the storage's copy.
    SameInode,
    /// A bind mount of the storage's copy, over the root's own copy, which still holds
    /// files (how many, how many bytes): mounted before migrate copied them.
    Hidden(u64, u64),
    /// A copy identical to the live path.
    Same,
    /// A copy that differs: how.
    Differs(Vec<String>),
    /// A copy that differs (how), which is still the one migrate verified and recorded at
    /// that time: the live path changed since.
    Outdated(jiff::Timestamp, Vec<String>),
    /// Something in the way of a copy (a symlink where a directory must be, a leftover not
    /// imperm's): why.
    Blocked(String),
}

/// What to do with an entry declared as `declared` (`None`: a path given that no entry
/// declares), and why.
pub fn decide(
    declared: Option<Kind>,
    source: &Source,
    target: &Target,
    force: bool,
) -> (Action, String) {
    let kind = match source {
        Source::Absent => {
            return (
                Action::Absent,
                "not on the live root: nothing to copy".into(),
            );
        }
        Source::Unreachable(why) => return (Action::Refuse, why.clone()),
        Source::Present(kind) => *kind,
    };
    let mismatch = match declared {
        Some(Kind::Directory) => !matches!(kind, survey::Kind::Directory | survey::Kind::Symlink),
        Some(Kind::File) => kind == survey::Kind::Directory,
        None => false,
    };
    if let Some(declared) = declared.filter(|_| mismatch) {
        return (
            Action::Refuse,
            format!(
                "declared as a {}, but it is not one on the live root",
                declared.as_str()
            ),
        );
    }
    if let Some(why) = restore::cannot_copy(match kind {
        survey::Kind::Socket => FileType::Socket,
        survey::Kind::Unknown => FileType::Unknown,
        _ => FileType::RegularFile,
    }) {
        return (Action::Skip, why.into());
    }
    match target {
        Target::Absent => (Action::Copy, "not in the storage yet".into()),
        Target::SameInode => (
            Action::Skip,
            "the live path is the storage's copy (bind-mounted)".into(),
        ),
        Target::Same => (Action::Skip, "in the storage already, the same".into()),
        Target::Hidden(files, size) => (
            Action::Refuse,
            format!(
                "bind-mounted from the storage already, but the root's own copy under the mount still holds {} ({}), which the next boot loses: the storage's copy was mounted over it before migrate copied it (`nixos-rebuild switch`); see the README, \"Hidden under a bind mount\"",
                crate::words::count(*files as usize, "file", "files"),
                bytes(*size)
            ),
        ),
        Target::Outdated(at, how) => (
            Action::Replace,
            format!(
                "changed on the live root since migrate verified its copy at {at} ({}): copied again, the copy of then kept aside",
                how.join("; ")
            ),
        ),
        Target::Blocked(why) => (Action::Refuse, why.clone()),
        Target::Differs(how) if force => (
            Action::Replace,
            format!(
                "the storage's copy differs ({}): it is kept aside",
                how.join("; ")
            ),
        ),
        Target::Differs(how) => (
            Action::Refuse,
            format!(
                "the storage's copy differs ({}); --force keeps it aside and copies the live one",
                how.join("; ")
            ),
        ),
    }
}

/// Why a path cannot be an entry to copy: its place in the storage has a name imperm
/// gives its own files there (a copy in the making, a parent in the making, a copy kept
/// aside, the quarantine, the record), which a run would take for its own leftover.
pub fn reserved(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let name = path.file_name()?.as_bytes();
    let top = path.parent() == Some(Path::new("/"));
    let ours = (name.starts_with(b".")
        && (name.ends_with(b".imperm-restore") || name.ends_with(b".imperm-parent")))
        || name.windows(17).any(|w| w == b".imperm-replaced-")
        || (top
            && (name == super::stray::QUARANTINE_DIR.as_bytes()
                || super::record::is_record_name(Path::new(path.file_name()?))));
    ours.then_some("has a name imperm gives its own files in the storage (a copy in the making or kept aside, the quarantine, migrate's record): it cannot be copied there")
}

/// Why the storage lacks room, if it does.
pub fn short_of_space(storage: &Path, needed: u64, free: u64) -> Option<String> {
    (needed > free).then(|| {
        format!(
            "storage {} has {} free, and the copy needs {} ({needed} bytes, {free} free)",
            escape(storage),
            bytes(free),
            bytes(needed)
        )
    })
}

/// The units whose directories overlap `path` (hold it, or lie inside it).
pub fn owners(path: &Path, dirs: &[UnitDir]) -> Vec<String> {
    let mut out: Vec<String> = dirs
        .iter()
        .filter(|d| d.path.starts_with(path) || path.starts_with(&d.path))
        .map(|d| d.unit.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A run's result: one for every entry, and the free space of each storage.
#[derive(Debug, Serialize)]
pub struct MigrateReport {
    pub dry_run: bool,
    pub entries: Vec<EntryReport>,
    pub space: Vec<Space>,
    /// Said before the copy began (units running that own an entry).
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct EntryReport {
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    /// What the live path is (`directory`, `file`; a symlink or special file is `file`),
    /// null when absent.
    pub kind: Option<Kind>,
    #[serde(serialize_with = "crate::paths::json")]
    pub storage: PathBuf,
    /// Its place in the storage, as seen from the host's `/`.
    #[serde(serialize_with = "crate::paths::json")]
    pub target: PathBuf,
    pub action: Action,
    /// Null in a dry run; whether it was carried out.
    pub done: Option<bool>,
    pub reason: String,
    pub files: u64,
    pub bytes: u64,
    /// How many copies were made (more than one: it changed while copied).
    pub tries: u32,
    /// Where the storage's copy was kept (`replace`).
    #[serde(serialize_with = "crate::paths::json_opt")]
    pub aside: Option<PathBuf>,
    /// The units whose directories are this path or lie in it (or hold it).
    pub units: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Space {
    /// The storages on this filesystem.
    #[serde(serialize_with = "crate::paths::json_all")]
    pub storages: Vec<PathBuf>,
    pub needed: u64,
    pub free: u64,
    pub enough: bool,
}

impl MigrateReport {
    /// Whether something was refused, left out or not migrated.
    pub fn incomplete(&self) -> bool {
        self.space.iter().any(|s| !s.enough)
            || self
                .entries
                .iter()
                .any(|e| e.action == Action::Refuse || e.done == Some(false))
    }
}

/// What the command asks.
pub struct Request<'a> {
    pub config: &'a Config,
    /// The paths given; empty: every declared entry.
    pub paths: &'a [PathBuf],
    /// The storage the paths given go to, whatever declares them (`persist add --move`).
    pub storage: Option<&'a Path>,
    pub dry_run: bool,
    pub force: bool,
    /// The time stamp of names things are kept aside under.
    pub stamp: String,
    /// What the host's units declare, for naming the owner of a path.
    pub units: &'a [UnitDir],
    /// Which of those units run now (asked once, before the copy).
    pub running: &'a dyn Fn(&[String]) -> Vec<String>,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
}

/// One entry, checked.
struct Item {
    path: PathBuf,
    rel: PathBuf,
    declared: Option<Kind>,
    storage: usize,
}

/// A storage, open, and migrate's record of what it verified there.
struct Storage {
    shown: PathBuf,
    fd: OwnedFd,
    record: record::Record,
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn refuse(what: String) -> Error {
    Error::Usage(format!("{what}; nothing was done"))
}

/// Runs a migration (or, `dry_run`, only says what it would do).
pub fn migrate(req: &Request) -> Result<MigrateReport, Error> {
    let config = req.config;
    let root = rustix::fs::open(
        &config.root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::new("open", &config.root, e.into()))?;
    let default_storage = config
        .persisted
        .storages()
        .into_iter()
        .next()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_STORAGE));

    // The entries: the paths given, or every declared one.
    let mut wanted: Vec<(PathBuf, Option<Kind>, PathBuf)> = Vec::new();
    if req.paths.is_empty() {
        for e in config.persisted.entries() {
            wanted.push((e.path.clone(), Some(e.kind), e.storage.clone()));
        }
    } else {
        for raw in req.paths {
            let path = crate::paths::normalize_given(raw.as_os_str())
                .map_err(|p| refuse(format!("{} {p}", quoted(raw))))?;
            let (kind, mut storage) = match config.persisted.lookup(&path) {
                Some(e) if e.path == path => (Some(e.kind), e.storage.clone()),
                Some(e) => (None, e.storage.clone()),
                None => (None, default_storage.clone()),
            };
            if let Some(given) = req.storage {
                storage = given.to_path_buf();
            }
            wanted.push((path, kind, storage));
        }
    }
    let mut notes = Vec::new();
    let mut storages: Vec<Storage> = Vec::new();
    let mut table: Option<Option<crate::mountinfo::MountTable>> = None;
    let mut items: Vec<Item> = Vec::new();
    for (path, declared, storage) in wanted {
        if let Some(why) = reserved(&path) {
            return Err(refuse(format!("{} {why}", escape(&path))));
        }
        if path.starts_with(&storage) || storage.starts_with(&path) {
            return Err(refuse(format!(
                "{} overlaps its storage {}: it cannot be copied into it",
                escape(&path),
                escape(&storage)
            )));
        }
        let index = match storages.iter().position(|s| s.shown == storage) {
            Some(i) => i,
            None => {
                let fd = open_storage(root.as_fd(), &storage)?;
                if let Some(why) = wiped(&fd, &storage, config, &mut table) {
                    return Err(refuse(why));
                }
                let record = read_record(&fd, &storage, &mut notes)?;
                storages.push(Storage {
                    fd,
                    shown: storage,
                    record,
                });
                storages.len() - 1
            }
        };
        items.push(Item {
            rel: path.strip_prefix("/").expect("absolute").to_path_buf(),
            path,
            declared,
            storage: index,
        });
    }
    // A path inside another one of the same storage is copied with it.
    items.sort_by(|a, b| crate::paths::tree_order(&a.path, &b.path));
    let mut kept: Vec<Item> = Vec::new();
    for item in items {
        if let Some(outer) = kept
            .iter()
            .find(|k| k.storage == item.storage && item.path.starts_with(&k.path))
        {
            notes.push(format!(
                "{} is copied with {}",
                escape(&item.path),
                escape(&outer.path)
            ));
            continue;
        }
        kept.push(item);
    }
    let items = kept;

    // Exclusive use of each storage for the run (a dry run only reads).
    if !req.dry_run {
        for s in &storages {
            super::lock_storage(&s.fd, &s.shown)?;
        }
    }

    // Every check before anything is written.
    let mut entries = Vec::new();
    // Entries found the same in the storage: their verification, recorded by the run.
    let mut same: Vec<Option<record::Verified>> = Vec::new();
    let mut needed: BTreeMap<u64, (Vec<usize>, u64)> = BTreeMap::new();
    for item in &items {
        let storage = &storages[item.storage];
        let target = storage.shown.join(&item.rel);
        let (source, live) = look_at_source(root.as_fd(), &item.rel, &item.path)?;
        let mut place = Target::Absent;
        let mut verified = None;
        if let Source::Present(kind) = &source {
            if !matches!(kind, survey::Kind::Socket | survey::Kind::Unknown) {
                (place, verified) =
                    look_at_target(root.as_fd(), storage, &item.rel, &target, &item.path)?;
            }
        }
        same.push(verified);
        let (action, reason) = decide(item.declared, &source, &place, req.force);
        let (files, size, allocated) = live
            .as_ref()
            .map_or((0, 0, 0), |s| (s.files, s.bytes, s.allocated));
        if matches!(action, Action::Copy | Action::Replace) {
            let st = rustix::fs::fstat(&storage.fd)
                .map_err(|e| FsError::new("inspect", &storage.shown, e.into()))?;
            let slot = needed.entry(st.st_dev).or_default();
            if !slot.0.contains(&item.storage) {
                slot.0.push(item.storage);
            }
            slot.1 += allocated;
        }
        entries.push(EntryReport {
            kind: match &source {
                Source::Present(survey::Kind::Directory) => Some(Kind::Directory),
                Source::Present(_) => Some(Kind::File),
                _ => None,
            },
            path: item.path.clone(),
            storage: storage.shown.clone(),
            target,
            action,
            done: None,
            reason,
            files,
            bytes: size,
            tries: 0,
            aside: None,
            units: owners(&item.path, req.units),
        });
    }
    let mut space = Vec::new();
    for (storage_list, want) in needed.values() {
        let fd = &storages[storage_list[0]].fd;
        let vfs = rustix::fs::fstatvfs(fd)
            .map_err(|e| FsError::new("statvfs", &storages[storage_list[0]].shown, e.into()))?;
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        space.push(Space {
            storages: storage_list
                .iter()
                .map(|&i| storages[i].shown.clone())
                .collect(),
            needed: *want,
            free,
            enough: *want <= free,
        });
    }
    let mut report = MigrateReport {
        dry_run: req.dry_run,
        entries,
        space,
        warnings: Vec::new(),
        notes,
    };
    let running_units: Vec<String> = {
        let owning: BTreeSet<String> = report
            .entries
            .iter()
            .filter(|e| matches!(e.action, Action::Copy | Action::Replace))
            .flat_map(|e| e.units.iter().cloned())
            .collect();
        if owning.is_empty() {
            Vec::new()
        } else {
            (req.running)(&owning.into_iter().collect::<Vec<_>>())
        }
    };
    for unit in &running_units {
        let paths: Vec<String> = report
            .entries
            .iter()
            .filter(|e| matches!(e.action, Action::Copy | Action::Replace))
            .filter(|e| e.units.contains(unit))
            .map(|e| escape(&e.path))
            .collect();
        report.warnings.push(format!(
            "{unit} is running and writes {}: stop it for the copy (what changes while it is copied is copied again, up to {TRIES} times)",
            paths.join(", ")
        ));
    }
    if req.dry_run {
        return Ok(report);
    }
    let refused: Vec<&EntryReport> = report
        .entries
        .iter()
        .filter(|e| e.action == Action::Refuse)
        .collect();
    if let Some(first) = refused.first() {
        let more = match refused.len() {
            1 => String::new(),
            n => format!(" (and {} more: see --dry-run)", n - 1),
        };
        return Err(refuse(format!(
            "{}: {}{more}",
            escape(&first.path),
            first.reason
        )));
    }
    if let Some(short) = report.space.iter().find(|s| !s.enough) {
        return Err(refuse(
            short_of_space(&short.storages[0], short.needed, short.free)
                .expect("not enough")
                .to_string(),
        ));
    }
    for warning in &report.warnings {
        eprintln!("imperm migrate: warning: {warning}");
    }

    // The copies.
    let total: u64 = report
        .entries
        .iter()
        .filter(|e| matches!(e.action, Action::Copy | Action::Replace))
        .map(|e| e.bytes)
        .sum();
    let bar = req.progress.then(|| progress_bar(total));
    let count = report.entries.len();
    for (n, ((item, entry), same)) in items
        .iter()
        .zip(report.entries.iter_mut())
        .zip(same)
        .enumerate()
    {
        if let Some(bar) = &bar {
            bar.set_message(format!("{}/{count} {}", n + 1, escape(&item.path)));
        }
        let storage = &mut storages[item.storage];
        let verified = match entry.action {
            Action::Copy | Action::Replace => copy_entry(root.as_fd(), storage, item, entry, req)?,
            Action::Skip if entry.kind.is_some() => {
                // A run killed after placing its copy left its empty temporary directory.
                if let Ok(dir) =
                    open_target_dir(storage, item.rel.parent().unwrap_or(Path::new("")))
                {
                    clear(dir.as_fd(), item, entry, &req.stamp)?;
                }
                entry.done = Some(true);
                same
            }
            _ => {
                entry.done = Some(entry.action != Action::Refuse);
                None
            }
        };
        if let Some(verified) = verified {
            storage.record.set(&item.path, verified);
            record::write(&storage.fd, &storage.shown, &storage.record)?;
        }
        if let Some(bar) = &bar {
            bar.inc(entry.bytes);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {wide_msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// Clears a leftover of a killed run at the entry's temporary name.
fn clear(dir: BorrowedFd, item: &Item, entry: &EntryReport, stamp: &str) -> Result<(), Error> {
    let name = item.rel.file_name().expect("a normal path has a name");
    let job = Job {
        source_dir: dir,
        target_dir: dir,
        name,
        shown: &entry.target,
        replace: false,
        stamp,
    };
    restore::clear_leftover(&job)
}

/// Copies one entry, verified, and puts it into place; what the record keeps of it, when
/// it was placed.
fn copy_entry(
    root: BorrowedFd,
    storage: &Storage,
    item: &Item,
    entry: &mut EntryReport,
    req: &Request,
) -> Result<Option<record::Verified>, Error> {
    let name = item.rel.file_name().expect("a normal path has a name");
    let parent = item.rel.parent().unwrap_or(Path::new(""));
    let source_dir = open_live_dir(root, parent)
        .map_err(|e| FsError::new("open", &Path::new("/").join(parent), e.into()))?;
    let target_dir = create_parents(root, storage, parent)?;
    let job = Job {
        source_dir: source_dir.as_fd(),
        target_dir: target_dir.as_fd(),
        name,
        shown: &entry.target,
        replace: entry.action == Action::Replace,
        stamp: &req.stamp,
    };
    let mut last = Vec::new();
    for attempt in 1..=TRIES {
        entry.tries = attempt;
        // What vanished or was replaced between the look and the read (a service
        // renaming its files) is a change like any other: copied again.
        let copied = match restore::copy(&job) {
            Ok(Prepared::Nothing(_)) => {
                entry.done = Some(true);
                return Ok(None);
            }
            Ok(Prepared::Copied(copied)) => copied,
            Err(Error::Fs(e)) if survey::is_change(&e.source) => {
                last = vec![format!(
                    "{}: gone while it was copied",
                    shown_live(item, entry, &e.path)
                )];
                continue;
            }
            Err(e) => return Err(e),
        };
        // Whatever changes on the live side from here on has a later inode change time.
        let began = record::change_clock();
        let (live, copy) = rayon::join(
            || survey::survey(source_dir.as_fd(), name, true),
            || survey::survey(copied.dir(), name, true),
        );
        let live = match live {
            Err(e) if e.is_change() => {
                let gone = survey_error(&item.path, e);
                last = vec![format!("{gone}")];
                continue;
            }
            live => live.map_err(|e| survey_error(&item.path, e))?,
        };
        let copy = copy.map_err(|e| survey_error(&entry.target, e))?;
        last = survey::differences(&live, &copy, &item.path, 3);
        if last.is_empty() {
            keep_link_times(copied.dir(), name, &copy)
                .map_err(|e| survey_error(&entry.target, e))?;
            restore::sync_all(std::slice::from_ref(&copied))?;
            let placed = copied.place()?;
            restore::sync([(placed.dir.as_fd(), entry.target.as_path())])?;
            let verified = record::Verified {
                verified: began,
                placed: record::placed_clock(),
                digest: survey::digest(&copy),
                files: live.files,
                bytes: live.bytes,
            };
            entry.files = live.files;
            entry.bytes = live.bytes;
            entry.aside = placed.out.aside.map(|a| entry.target.with_file_name(a));
            entry.done = Some(true);
            for (below, why) in placed.out.not_restored {
                entry.reason = format!(
                    "{}; not copied: {} ({why})",
                    entry.reason,
                    escape(&item.path.join(below))
                );
            }
            return Ok(Some(verified));
        }
        // Dropped: the copy is removed, and made again.
        drop(copied);
    }
    entry.done = Some(false);
    let stop = match entry.units.as_slice() {
        [] => "stop what writes it".to_string(),
        units => format!("stop {}", units.join(", ")),
    };
    entry.reason = format!(
        "not migrated: it kept changing while it was copied ({TRIES} tries; last: {}): {stop} and run migrate again",
        last.join("; ")
    );
    Ok(None)
}

/// A storage's record; an unreadable one is said and started again (it only speeds up
/// what a run would find anyway: a copy without a record is compared in full).
fn read_record(
    fd: &OwnedFd,
    shown: &Path,
    notes: &mut Vec<String>,
) -> Result<record::Record, Error> {
    let tree = crate::beneath::Tree::from_fd(shown.to_path_buf(), fd.as_fd())?;
    Ok(match record::read(&tree, shown) {
        Ok(r) => r.unwrap_or_default(),
        Err(why) => {
            notes.push(format!("{why}: not read, written anew"));
            record::Record::default()
        }
    })
}

/// The live path of what the copy engine names by its place in the storage.
fn shown_live(item: &Item, entry: &EntryReport, target: &Path) -> String {
    escape(&match target.strip_prefix(&entry.target) {
        Ok(below) if !below.as_os_str().is_empty() => item.path.join(below),
        _ => item.path.clone(),
    })
    .to_string()
}

/// Sets the access times of the copy's symlinks back to what they were before the check
/// read them: reading a symlink sets its access time, and no flag prevents it.
fn keep_link_times(dir: BorrowedFd, name: &OsStr, copy: &Survey) -> Result<(), SurveyError> {
    let top = PathBuf::from(name);
    for node in copy
        .nodes
        .iter()
        .filter(|n| n.kind == survey::Kind::Symlink)
    {
        let rel = top.join(&node.rel);
        let err = |e: Errno| SurveyError {
            rel: node.rel.clone(),
            op: "set times of",
            source: e.into(),
        };
        let parent = crate::beneath::openat2_long(
            dir,
            rel.parent().unwrap_or(Path::new("")),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            BENEATH,
        )
        .map_err(err)?;
        let at = |(tv_sec, ns): (i64, i64)| rustix::fs::Timespec {
            tv_sec,
            tv_nsec: ns as _,
        };
        rustix::fs::utimensat(
            &parent,
            rel.file_name().unwrap_or(name),
            &rustix::fs::Timestamps {
                last_access: at(node.atime),
                last_modification: at(node.mtime),
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(err)?;
    }
    Ok(())
}

fn survey_error(shown: &Path, e: SurveyError) -> Error {
    let path = if e.rel.as_os_str().is_empty() {
        shown.to_path_buf()
    } else {
        shown.join(&e.rel)
    };
    FsError::new(e.op, &path, e.source).into()
}

/// A storage directory, opened for writing below it: it must exist, be a directory, and
/// be reached with no symlink on the way.
fn open_storage(root: BorrowedFd, storage: &Path) -> Result<OwnedFd, Error> {
    let rel = storage.strip_prefix("/").unwrap_or(storage);
    let shown = escape(storage);
    match rustix::fs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) => Err(refuse(format!(
            "storage {shown} does not exist: make it (a filesystem or subvolume of its own, mounted there) first"
        ))),
        Err(Errno::LOOP | Errno::XDEV) => Err(refuse(format!(
            "storage {shown} is reached through a symlink, and migrate never writes through one"
        ))),
        Err(Errno::NOTDIR) => {
            let link = rustix::fs::statat(root, rel, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
            Err(refuse(if link {
                format!("storage {shown} is a symlink, and migrate never writes through one")
            } else {
                format!("storage {shown} is not a directory")
            }))
        }
        Err(e) => Err(FsError::new("open the storage", storage, e.into()).into()),
    }
}

/// Why the next reset would wipe the storage open at `fd`, judged as `restore --into
/// persist` and `lint` judge it, on the mount the descriptor is on (the kernel's table, as
/// seen from the tree): on the root's own mount, or mounted from inside the root's tree.
/// A copy there would be lost with the root. `None` also when the table cannot tell.
fn wiped(
    fd: &OwnedFd,
    storage: &Path,
    config: &Config,
    table: &mut Option<Option<crate::mountinfo::MountTable>>,
) -> Option<String> {
    let live = table
        .get_or_insert_with(|| {
            crate::mountinfo::own()
                .and_then(|t| t.seen_from(&config.root))
                .ok()
        })
        .as_ref()?;
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::MNT_ID).ok()?;
    let holder = live
        .mounts
        .iter()
        .find(|m| st.stx_mask & rustix::fs::StatxFlags::MNT_ID.bits() != 0 && m.id == st.stx_mnt_id)
        .or_else(|| live.containing(storage))?;
    live.root_mount()?;
    let root_subvolume = config
        .filesystem
        .as_ref()
        .map(|f| f.root_subvolume.as_path());
    let shown = escape(storage);
    match live.wiped_by_reset(holder, root_subvolume)? {
        crate::mountinfo::Wiped::OnRoot => Some(format!(
            "storage {shown} is not a filesystem of its own: it lies on the root, which the next reset wipes (mount the persistent storage there first)"
        )),
        crate::mountinfo::Wiped::InsideRoot { tree } => Some(format!(
            "storage {shown} is not a filesystem of its own: it is mounted from {}, inside the root subvolume {}, which the next reset deletes with the old root",
            escape(&holder.root),
            escape(&tree)
        )),
    }
}

/// A directory of the live root, every component a real directory.
fn open_live_dir(root: BorrowedFd, rel: &Path) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat2(root, rel, flags | OFlags::NOATIME, Mode::empty(), BENEATH) {
        Err(Errno::PERM) => rustix::fs::openat2(root, rel, flags, Mode::empty(), BENEATH),
        other => other,
    }
}

/// What the live root has at `rel`, and its survey (sizes; no content read).
fn look_at_source(
    root: BorrowedFd,
    rel: &Path,
    path: &Path,
) -> Result<(Source, Option<Survey>), Error> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    let name = rel.file_name().expect("a normal path has a name");
    let through_link = || {
        // O_DIRECTORY on a symlink says ENOTDIR: look again without it.
        matches!(
            rustix::fs::openat2(
                root,
                parent,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                BENEATH
            ),
            Err(Errno::LOOP)
        )
    };
    let dir = match open_live_dir(root, parent) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok((Source::Absent, None)),
        Err(Errno::NOTDIR) if !through_link() => return Ok((Source::Absent, None)),
        Err(Errno::LOOP | Errno::XDEV | Errno::NOTDIR) => {
            return Ok((
                Source::Unreachable(
                    "it is reached through a symlink on the live root; copy what it leads to instead"
                        .into(),
                ),
                None,
            ));
        }
        Err(e) => return Err(FsError::new("open", &Path::new("/").join(parent), e.into()).into()),
    };
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => {}
        Err(Errno::NOENT) => return Ok((Source::Absent, None)),
        Err(e) => return Err(FsError::new("inspect", path, e.into()).into()),
    }
    let live =
        survey::survey_settled(dir.as_fd(), name, false).map_err(|e| survey_error(path, e))?;
    if let Some(mount) = live.mounts.first() {
        // Not what the root holds (a bind mount of the storage there is copied into itself).
        return Ok((
            Source::Unreachable(format!(
                "{} is a mount point: migrate copies what the root holds, not what is mounted in it; unmount it, or give the paths beside it",
                escape(&path.join(mount))
            )),
            None,
        ));
    }
    let kind = live.nodes.first().map_or(survey::Kind::Unknown, |n| n.kind);
    // The copy refuses a deeper tree when it meets it: refused here, before anything.
    let deepest = live
        .nodes
        .iter()
        .filter(|n| n.kind == survey::Kind::Directory)
        .map(|n| name.len() + 1 + n.rel.as_os_str().len())
        .max()
        .unwrap_or(0);
    if deepest > restore::DEPTH_MAX {
        return Ok((
            Source::Unreachable(format!(
                "it holds a tree deeper than imperm copies (a directory path longer than {} bytes below it)",
                restore::DEPTH_MAX
            )),
            Some(live),
        ));
    }
    Ok((Source::Present(kind), Some(live)))
}

/// The storage's directory `rel`, every component a real directory; an error when missing.
fn open_target_dir(storage: &Storage, rel: &Path) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        &storage.fd,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    )
}

/// What the storage has at the place of `rel`, and, when it is the same as the live path,
/// that verification for the record.
fn look_at_target(
    root: BorrowedFd,
    storage: &Storage,
    rel: &Path,
    target: &Path,
    path: &Path,
) -> Result<(Target, Option<record::Verified>), Error> {
    let name = rel.file_name().expect("a normal path has a name");
    let mut dir =
        rustix::io::dup(&storage.fd).map_err(|e| FsError::new("open", &storage.shown, e.into()))?;
    let mut shown = storage.shown.clone();
    for part in rel.parent().unwrap_or(Path::new("")).components() {
        let Component::Normal(part) = part else {
            continue;
        };
        shown.push(part);
        dir = match rustix::fs::openat(
            &dir,
            part,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok((Target::Absent, None)),
            Err(e @ (Errno::NOTDIR | Errno::LOOP)) => {
                let link = rustix::fs::statat(&dir, part, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                let why = if link || e == Errno::LOOP {
                    format!(
                        "a symlink stands in the way at {}; migrate never follows one",
                        escape(&shown)
                    )
                } else {
                    format!("{} is not a directory", escape(&shown))
                };
                return Ok((Target::Blocked(why), None));
            }
            Err(e) => return Err(FsError::new("open", &shown, e.into()).into()),
        };
    }
    if let restore::Leftover::Foreign(why) =
        restore::leftover(dir.as_fd(), name).map_err(|e| FsError::new("inspect", target, e))?
    {
        let temp = target.with_file_name(restore::temp_name(name));
        let why = format!(
            "{} exists and is not a copy imperm left ({why}): move it away",
            escape(&temp)
        );
        return Ok((Target::Blocked(why), None));
    }
    let there = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok((Target::Absent, None)),
        Err(e) => return Err(FsError::new("inspect", target, e.into()).into()),
    };
    let live_dir = open_live_dir(root, rel.parent().unwrap_or(Path::new("")))
        .map_err(|e| FsError::new("open", path, e.into()))?;
    let live = rustix::fs::statat(&live_dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| FsError::new("inspect", path, e.into()))?;
    if (live.st_dev, live.st_ino) == (there.st_dev, there.st_ino) {
        return match survey::hidden_under_mount(live_dir.as_fd(), name) {
            Ok(Some(under)) => Ok((Target::Hidden(under.files, under.bytes), None)),
            Ok(None) => Ok((Target::SameInode, None)),
            // Without the right to clone a mount nothing can be seen under it: as before.
            Err(e) if e.source.raw_os_error() == Some(libc::EPERM) => Ok((Target::SameInode, None)),
            Err(e) => Err(survey_error(path, e)),
        };
    }
    let began = record::change_clock();
    let (a, b) = rayon::join(
        || survey::survey_settled(live_dir.as_fd(), name, true),
        || survey::survey_settled(dir.as_fd(), name, true),
    );
    let a = a.map_err(|e| survey_error(path, e))?;
    let b = b.map_err(|e| survey_error(target, e))?;
    let how = survey::differences(&a, &b, path, 3);
    let digest = survey::digest(&b);
    if how.is_empty() {
        // Recorded already, and nothing changed since: the record stays as it is (a run
        // that finds nothing to do writes nothing).
        if storage.record.get(path).is_some_and(|v| {
            v.digest == digest
                && record::still_verified(v, survey::newest_change(&a), survey::newest_change(&b))
        }) {
            return Ok((Target::Same, None));
        }
        let verified = record::Verified {
            verified: began,
            placed: began,
            digest,
            files: a.files,
            bytes: a.bytes,
        };
        return Ok((Target::Same, Some(verified)));
    }
    Ok(match storage.record.get(path) {
        Some(v) if v.digest == digest => (Target::Outdated(v.verified, how), None),
        _ => (Target::Differs(how), None),
    })
}

/// Opens the storage's directory `rel`, making each missing one with the owner and mode of
/// the same directory on the live root (restore's way: each made complete under a
/// temporary name, then renamed into place; never following a symlink on either side).
fn create_parents(root: BorrowedFd, storage: &Storage, rel: &Path) -> Result<OwnedFd, Error> {
    restore::create_parents(storage.fd.as_fd(), root, rel, &storage.shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: survey::Kind = survey::Kind::Directory;
    const FILE: survey::Kind = survey::Kind::File;

    #[test]
    fn each_case_has_one_action() {
        let differs = Target::Differs(vec!["/x/a: content".into()]);
        let blocked = Target::Blocked("a symlink stands in the way".into());
        let gone = Source::Unreachable("reached through a symlink".into());
        type Case = (Option<Kind>, Source, Target, bool, Action, &'static str);
        let cases: Vec<Case> = vec![
            (
                Some(Kind::Directory),
                Source::Absent,
                Target::Absent,
                false,
                Action::Absent,
                "not on the live root",
            ),
            (
                Some(Kind::Directory),
                gone.clone(),
                Target::Absent,
                true,
                Action::Refuse,
                "symlink",
            ),
            (
                Some(Kind::Directory),
                Source::Present(DIR),
                Target::Absent,
                false,
                Action::Copy,
                "not in the storage",
            ),
            (
                Some(Kind::Directory),
                Source::Present(DIR),
                Target::Same,
                false,
                Action::Skip,
                "the same",
            ),
            (
                Some(Kind::Directory),
                Source::Present(DIR),
                Target::SameInode,
                true,
                Action::Skip,
                "bind-mounted",
            ),
            (
                Some(Kind::Directory),
                Source::Present(DIR),
                differs.clone(),
                false,
                Action::Refuse,
                "--force keeps it aside",
            ),
            (
                Some(Kind::Directory),
                Source::Present(DIR),
                differs.clone(),
                true,
                Action::Replace,
                "kept aside",
            ),
            (
                Some(Kind::Directory),
                Source::Present(DIR),
                blocked.clone(),
                true,
                Action::Refuse,
                "stands in the way",
            ),
            (
                Some(Kind::Directory),
                Source::Present(FILE),
                Target::Absent,
                false,
                Action::Refuse,
                "declared as a directory",
            ),
            (
                Some(Kind::File),
                Source::Present(DIR),
                Target::Absent,
                false,
                Action::Refuse,
                "declared as a file",
            ),
            (
                Some(Kind::File),
                Source::Present(survey::Kind::Symlink),
                Target::Absent,
                false,
                Action::Copy,
                "not in the storage",
            ),
            (
                Some(Kind::Directory),
                Source::Present(survey::Kind::Symlink),
                Target::Absent,
                false,
                Action::Copy,
                "not in the storage",
            ),
            (
                Some(Kind::File),
                Source::Present(survey::Kind::Fifo),
                Target::Absent,
                false,
                Action::Copy,
                "not in the storage",
            ),
            (
                None,
                Source::Present(survey::Kind::Socket),
                Target::Absent,
                false,
                Action::Skip,
                "socket",
            ),
            (
                None,
                Source::Present(DIR),
                Target::Absent,
                false,
                Action::Copy,
                "not in the storage",
            ),
            (
                None,
                Source::Present(FILE),
                differs.clone(),
                false,
                Action::Refuse,
                "differs",
            ),
            (
                Some(Kind::Directory),
                Source::Present(DIR),
                Target::Hidden(3, 10),
                true,
                Action::Refuse,
                "still holds 3 files (10 B), which the next boot loses",
            ),
            (
                Some(Kind::Directory),
                Source::Present(DIR),
                Target::Outdated(
                    "2026-11-26T12:00:00Z".parse().unwrap(),
                    vec!["/x/a: content".into()],
                ),
                false,
                Action::Replace,
                "since migrate verified its copy at 2026-11-26T12:00:00Z (/x/a: content): copied again, the copy of then kept aside",
            ),
        ];
        for (declared, source, target, force, want, words) in cases {
            let (action, reason) = decide(declared, &source, &target, force);
            assert_eq!(
                action, want,
                "{declared:?} {source:?} {target:?} force={force}"
            );
            assert!(reason.contains(words), "{reason:?} lacks {words:?}");
        }
    }

    #[test]
    fn imperms_own_names_are_not_entries() {
        for (path, refused) in [
            ("/var/lib/.app.imperm-restore", true),
            ("/var/lib/.app.imperm-parent", true),
            ("/var/lib/app.imperm-replaced-20260115T063000Z", true),
            ("/.imperm-stray", true),
            ("/.imperm-migrate.json", true),
            ("/var/.imperm-stray", false),
            ("/var/lib/app", false),
            ("/var/lib/app.imperm-restore", false),
        ] {
            assert_eq!(reserved(Path::new(path)).is_some(), refused, "{path}");
        }
    }

    #[test]
    fn space_is_short_only_when_more_is_needed_than_free() {
        assert_eq!(short_of_space(Path::new("/persist"), 10, 10), None);
        let short = short_of_space(Path::new("/persist"), 2 << 20, 1 << 20).unwrap();
        assert!(
            short.contains("/persist has 1.0 MiB free, and the copy needs 2.0 MiB"),
            "{short}"
        );
    }

    #[test]
    fn owners_are_the_units_whose_directories_overlap() {
        let dir = |unit: &str, path: &str| UnitDir {
            unit: unit.into(),
            kind: crate::discover::units::DirKind::State,
            path: path.into(),
            mode: crate::mode::Mode::from_bits(0o755),
            dynamic_user: false,
        };
        let dirs = [
            dir("a.service", "/var/lib/a"),
            dir("b.service", "/var/lib/private/b"),
            dir("c.service", "/var/lib/c"),
        ];
        assert_eq!(owners(Path::new("/var/lib/a"), &dirs), ["a.service"]);
        assert_eq!(owners(Path::new("/var/lib/a/db"), &dirs), ["a.service"]);
        assert_eq!(owners(Path::new("/var/lib/private"), &dirs), ["b.service"]);
        assert_eq!(owners(Path::new("/var/lib"), &dirs).len(), 3);
        assert!(owners(Path::new("/var/lib/ab"), &dirs).is_empty());
    }
}
