//! `status`: what configuration was loaded from where, the filesystem, the persisted set and
//! its storage, for one host; and whether it is ready for its first ephemeral boot. The
//! facts are gathered here (reading only: the live root, the storage, the top level
//! mounted privately as root, `check`'s own walk); the decision is
//! [`crate::rollout::ready::decide`].

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use rustix::fs::{FileType, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde::Serialize;

use crate::beneath::Tree;
use crate::cli::{GlobalArgs, StatusArgs};
use crate::config::{Config, ConfigFileState, PersistenceSource};
use crate::discover::lint::lint;
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::filesystem::backend;
use crate::filesystem::toplevel::TopLevel;
use crate::knowledge::{self, Verdict};
use crate::mountinfo::Wiped;
use crate::nixos::nix::Style;
use crate::output::{self, Report, Styles};
use crate::paths::escape;
use crate::persisted::Kind;
use crate::retention::Policy;
use crate::rollout::ready::{
    self, CheckFact, Declared, EntryFact, EntryState, EphemeralFacts, Facts, LastReset, LayoutFact,
    LintFact, Node, Presence, Readiness, SnapshotFact, SnapshotsFact, State, StorageFact,
    Verification,
};
use crate::rollout::{record, survey};
use crate::snapshots::reset::{self, Layout};
use crate::snapshots::snapshot;
use crate::words::count;

/// Exit 0 whatever the answer (DESIGN.md: 1 is for `check`, `audit`, `lint`, `journal`):
/// readiness is in the output, `ready` in JSON.
pub fn run(global: &GlobalArgs, args: &StatusArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, StatusReport::COMMAND)?;
    let config = super::load_config(global)?;
    output::emit(&build(&config, args), global.format, global.color)?;
    Ok(ExitStatus::Clean)
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    #[serde(serialize_with = "crate::paths::json")]
    root: PathBuf,
    config: ConfigFileState,
    persistence: PersistenceSource,
    filesystem: FilesystemStatus,
    persisted: PersistedSummary,
    storage: Vec<StorageStatus>,
    retention: Policy,
    snapshots: SnapshotsStatus,
    /// `ready`, `ephemeral`, `problems`, `unknown`, `reasons`.
    #[serde(flatten)]
    readiness: Readiness,
    lint: LintSummary,
    /// Every declared entry: where it stands between the live root and its storage.
    entries: Vec<EntryStatus>,
    layout: LayoutStatus,
    /// The last reset as its state file records it; null where not looked at.
    reset: Option<ResetStatus>,
    /// Only on an ephemeral host with subvolumes: whether `imperm-gc.timer` is enabled.
    gc_timer: Option<GcTimerStatus>,
    /// Only on an ephemeral host: the baseline manifest of this boot.
    baseline: Option<BaselineStatus>,
    /// Only on an ephemeral host: what `check` finds, by verdict.
    check: Option<CheckStatus>,
}

#[derive(Debug, Serialize)]
struct LintSummary {
    problems: usize,
    /// The first few findings.
    first: Vec<LintItem>,
}

#[derive(Debug, Serialize)]
struct LintItem {
    rule: &'static str,
    #[serde(serialize_with = "crate::paths::json")]
    path: PathBuf,
}

#[derive(Debug, Serialize)]
struct EntryStatus {
    #[serde(serialize_with = "crate::paths::json")]
    path: PathBuf,
    kind: Kind,
    #[serde(serialize_with = "crate::paths::json")]
    storage: PathBuf,
    state: EntryState,
    detail: String,
    /// When migrate last verified it (RFC 3339); null: no record.
    verified: Option<String>,
}

#[derive(Debug, Serialize)]
struct LayoutStatus {
    /// `subvolume`, `directory`, `missing`, `other`; null when not looked at.
    root_subvolume: Option<&'static str>,
    snapshot_dir: Option<&'static str>,
    blank_snapshot: Option<&'static str>,
    free_bytes: Option<u64>,
    size_bytes: Option<u64>,
    /// Below this, `free-space` is a problem.
    threshold_bytes: Option<u64>,
    /// Why it was not looked at.
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct ResetStatus {
    /// `done`, or the phase an interrupted reset stopped in (`snapshot`, `replace`); null
    /// when no reset is recorded.
    phase: Option<&'static str>,
    /// The snapshot holding the old root ("" when the reset only created a root).
    snapshot: Option<String>,
    /// When (from the snapshot's name), RFC 3339.
    time: Option<String>,
}

#[derive(Debug, Serialize)]
struct GcTimerStatus {
    enabled: bool,
    /// The link that enables it.
    #[serde(serialize_with = "crate::paths::json")]
    link: PathBuf,
}

#[derive(Debug, Serialize)]
struct BaselineStatus {
    present: bool,
    #[serde(serialize_with = "crate::paths::json")]
    path: PathBuf,
    /// When it was written (the file's modification time), RFC 3339.
    time: Option<String>,
    /// Why it is absent or unreadable.
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct CheckStatus {
    /// `--no-check`.
    skipped: bool,
    persist: Option<usize>,
    review: Option<usize>,
    ephemeral: Option<usize>,
    generated: Option<usize>,
    /// Paths that could not be read.
    errors: Option<usize>,
    /// Whether it compared with this boot's baseline.
    since_baseline: Option<bool>,
    elapsed_ms: Option<u64>,
    /// Why it could not run.
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct FilesystemStatus {
    #[serde(rename = "type")]
    fs_type: Option<String>,
    /// "config" or "mount table"; null when neither says.
    from: Option<&'static str>,
    device: Option<String>,
    #[serde(serialize_with = "crate::paths::json_opt")]
    root_subvolume: Option<PathBuf>,
    #[serde(serialize_with = "crate::paths::json_opt")]
    snapshot_dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct PersistedSummary {
    directories: usize,
    files: usize,
    users: Vec<String>,
}

#[derive(Debug, Serialize)]
struct StorageStatus {
    #[serde(serialize_with = "crate::paths::json")]
    path: PathBuf,
    /// Whether it has a mount of its own (not the root's); null without a mount table.
    separate: Option<bool>,
    /// Whether a reset of the root wipes it: it lies on the root's mount, or is mounted
    /// from inside the root's tree (a subvolume nested in the root); null without a mount
    /// table.
    wiped_by_reset: Option<bool>,
    /// The mount that holds it.
    #[serde(serialize_with = "crate::paths::json_opt")]
    mount_point: Option<PathBuf>,
    /// The path inside its filesystem that mount shows (`/@persist`).
    #[serde(serialize_with = "crate::paths::json_opt")]
    mount_root: Option<PathBuf>,
    /// The root's tree it lies inside, when it is mounted apart from there (`/@root`).
    #[serde(serialize_with = "crate::paths::json_opt")]
    inside: Option<PathBuf>,
    fs_type: Option<String>,
    /// On a filesystem the initrd mounts, as the NixOS module found it at evaluation
    /// (config.toml's `[module]`); null when the configuration does not say.
    needed_for_boot: Option<bool>,
}

/// Old-root snapshots, when they could be looked at.
#[derive(Clone, Debug, Serialize)]
struct SnapshotsStatus {
    /// Subvolumes in the snapshot directory.
    count: Option<usize>,
    /// The last reset's snapshot: the one it recorded, else the newest not in the future
    /// (what `snapshots ls` labels, and `restore`, `journal` use by default).
    last_reset: Option<String>,
    /// The newest and oldest snapshots by the time in their names.
    newest: Option<String>,
    oldest: Option<String>,
    /// Always null: what a snapshot holds of its own is not cheap to know (btrfs says it
    /// only with quotas on), so it is not measured.
    space_bytes: Option<u64>,
    /// Why they were not looked at, or that there are none by design.
    note: Option<String>,
}

impl SnapshotsStatus {
    fn note(note: impl Into<String>) -> SnapshotsStatus {
        SnapshotsStatus {
            count: None,
            last_reset: None,
            newest: None,
            oldest: None,
            space_bytes: None,
            note: Some(note.into()),
        }
    }
}

/// The top level, mounted privately, when status may look at it: a configured filesystem
/// with subvolumes and a device, and root. Status is informational, so every obstacle is
/// a note, never an error.
fn open_top(config: &Config) -> Result<(TopLevel, Layout), String> {
    let Some(fs) = &config.filesystem else {
        return Err("no [filesystem] configured".into());
    };
    if !backend::for_type(fs.fs_type).has_subvolumes() {
        return Err("a tmpfs root has no subvolumes".into());
    }
    if fs.device.is_none() {
        return Err("no [filesystem] device".into());
    }
    if !rustix::process::geteuid().is_root() {
        return Err("mounting the top level needs root (see `imperm snapshots ls`)".into());
    }
    let layout = Layout {
        root: fs.root_subvolume.clone(),
        snapshot_dir: fs.snapshot_dir.clone(),
        blank: fs.blank_snapshot.clone(),
    };
    // The opener's refusals end with what they mean for a command that changes things;
    // status only looks.
    TopLevel::open(fs, None)
        .map(|top| (top, layout))
        .map_err(|e| {
            e.to_string()
                .trim_end_matches("; nothing was done")
                .to_string()
        })
}

/// What status learns from the top level.
struct TopFacts {
    snapshots: SnapshotsStatus,
    last_reset: LastReset,
    snapshots_fact: SnapshotsFact,
    /// Snapshots exist, or a reset is recorded: the root is being reset.
    reset_seen: bool,
}

/// Counts the snapshots and reads the last reset's record.
fn survey_top(
    backend: &dyn backend::Backend,
    top: &TopLevel,
    layout: &Layout,
) -> Result<TopFacts, String> {
    let now = super::now().map_err(|e| e.to_string())?;
    let survey = snapshot::survey(backend, top, layout, &jiff::tz::TimeZone::system(), now)
        .map_err(|e| top.locate(e).to_string())?;
    let subvolumes: Vec<&snapshot::Found> = survey
        .found
        .iter()
        .filter(|f| f.kind == backend::Kind::Subvolume)
        .collect();
    let mut dated: Vec<&snapshot::Found> = subvolumes
        .iter()
        .copied()
        .filter(|f| f.time.is_some())
        .collect();
    dated.sort_by_key(|f| f.time.map(|(s, _)| (s.time, s.seq)));
    let fact = |f: Option<&&snapshot::Found>| {
        f.map(|f| SnapshotFact {
            name: f.name.clone(),
            time: f.time.map(|(s, _)| s.time),
        })
    };
    let (newest, oldest) = (fact(dated.last()), fact(dated.first()));
    let state = reset::read_state(top, layout);
    let recorded = matches!(state, Ok(Some(_)));
    let last_reset = match state {
        Err(e) => LastReset::NotChecked(top.locate(e).to_string()),
        Ok(None) => LastReset::None,
        Ok(Some(state)) => LastReset::Recorded {
            phase: match state.phase {
                reset::Phase::Done => "done",
                reset::Phase::Snapshot => "snapshot",
                reset::Phase::Replace => "replace",
            },
            snapshot: state.snapshot.clone(),
            time: survey
                .found
                .iter()
                .find(|f| f.name == state.snapshot)
                .and_then(|f| f.time.map(|(s, _)| s.time)),
        },
    };
    let mut problem = survey.state_problem.clone();
    if !survey.half_deleted.is_empty() {
        let names: Vec<&str> = survey
            .half_deleted
            .iter()
            .map(|&i| survey.found[i].name.as_str())
            .collect();
        problem.get_or_insert(format!(
            "{} partly deleted by an earlier gc: {} (the next `imperm snapshots gc` finishes it)",
            count(names.len(), "snapshot", "snapshots"),
            names.join(", ")
        ));
    }
    Ok(TopFacts {
        reset_seen: !subvolumes.is_empty() || recorded,
        snapshots: SnapshotsStatus {
            count: Some(subvolumes.len()),
            last_reset: survey.last_reset_name().map(str::to_string),
            newest: newest.as_ref().map(|s| s.name.clone()),
            oldest: oldest.as_ref().map(|s| s.name.clone()),
            space_bytes: None,
            note: survey.state_problem.clone(),
        },
        last_reset,
        snapshots_fact: SnapshotsFact::Surveyed {
            count: subvolumes.len(),
            newest,
            oldest,
            problem,
        },
    })
}

fn node(kind: backend::Kind) -> Node {
    match kind {
        backend::Kind::Missing => Node::Missing,
        backend::Kind::Subvolume => Node::Subvolume,
        backend::Kind::Directory => Node::Directory,
        backend::Kind::Symlink | backend::Kind::Other => Node::Other,
    }
}

fn node_word(node: Node) -> &'static str {
    match node {
        Node::Missing => "missing",
        Node::Subvolume => "subvolume",
        Node::Directory => "directory",
        Node::Other => "other",
    }
}

/// The reset's layout on the open top level, and the filesystem's free space.
fn layout_on(
    backend: &dyn backend::Backend,
    top: &TopLevel,
    layout: &Layout,
    config: &Config,
) -> Result<ready::Layout, String> {
    let kind = |rel: &Path| {
        backend
            .kind(top, rel)
            .map(node)
            .map_err(|e| top.locate(e.into()).to_string())
    };
    let vfs = rustix::fs::fstatvfs(top.dir())
        .map_err(|e| format!("{}: statvfs: {e}", top.name(Path::new(""))))?;
    // btrfs's own mount shows the subvolume it mounts; other filesystems say nothing
    // that could be compared.
    let running_root = match config.filesystem.as_ref().map(|f| f.fs_type) {
        Some(crate::config::FsType::Btrfs) => config
            .mount_table
            .as_ref()
            .and_then(|t| t.containing(Path::new("/")))
            .map(|m| m.root.clone()),
        _ => None,
    };
    Ok(ready::Layout {
        root_name: layout.root.clone(),
        root: kind(&layout.root)?,
        snapshot_dir_name: layout.snapshot_dir.clone(),
        snapshot_dir: kind(&layout.snapshot_dir)?,
        blank: match &layout.blank {
            Some(b) => Some((b.clone(), kind(b)?)),
            None => None,
        },
        running_root,
        free: vfs.f_bavail.saturating_mul(vfs.f_frsize),
        size: vfs.f_blocks.saturating_mul(vfs.f_frsize),
    })
}

/// What the tree has at `abs`, without following a final symlink.
fn presence(tree: &Tree, abs: &Path) -> Presence {
    match tree.kind(abs) {
        Ok(None) => Presence::Absent,
        Ok(Some(FileType::Directory)) => Presence::Directory,
        Ok(Some(FileType::RegularFile)) => Presence::File,
        Ok(Some(FileType::Symlink)) => Presence::Symlink,
        Ok(Some(_)) => Presence::Special,
        Err(e) => Presence::Unreadable(e.source.to_string()),
    }
}

/// What the storage has at `path`'s place. The storage itself is found as the tree sees
/// it; below it no symlink is followed: impermanence's bind mount would follow one, and a
/// link back onto the root (`/persist/var -> /var`) makes a copy that is not one, which
/// the first reset wipes.
fn stored(tree: &Tree, storage: &Path, path: &Path) -> Presence {
    // What migrate refuses to write into is no place for the copy either.
    match tree.kind(storage) {
        Ok(Some(FileType::Symlink)) => {
            return Presence::Blocked(format!(
                "the storage {} is a symlink, and migrate never writes through one",
                escape(storage)
            ));
        }
        Ok(Some(kind)) if kind != FileType::Directory => {
            return Presence::Blocked(format!(
                "the storage {} is not a directory",
                escape(storage)
            ));
        }
        _ => {}
    }
    let dir = match tree.open_dir_resolved(storage) {
        Ok(Some(fd)) => fd,
        Ok(None) => return Presence::Absent,
        Err(e) => return Presence::Unreadable(e.to_string()),
    };
    let rel = path.strip_prefix("/").unwrap_or(path);
    let resolve = ResolveFlags::BENEATH
        .union(ResolveFlags::NO_SYMLINKS)
        .union(ResolveFlags::NO_MAGICLINKS);
    let fd = match crate::beneath::openat2_long(
        dir.as_fd(),
        rel,
        OFlags::PATH | OFlags::NOFOLLOW,
        resolve,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Presence::Absent,
        Err(Errno::LOOP) => {
            return Presence::Blocked(
                "a symlink on the way, which the bind mount would follow".into(),
            );
        }
        Err(Errno::NOTDIR) => {
            return Presence::Blocked("something on the way is not a directory".into());
        }
        Err(e) => return Presence::Unreadable(std::io::Error::from(e).to_string()),
    };
    match rustix::fs::fstat(&fd) {
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Presence::Directory,
            FileType::RegularFile => Presence::File,
            FileType::Symlink => Presence::Symlink,
            _ => Presence::Special,
        },
        Err(e) => Presence::Unreadable(std::io::Error::from(e).to_string()),
    }
}

/// The record migrate keeps in `storage`, as found from the tree's root.
fn read_record(tree: &Tree, storage: &Path) -> Result<Option<record::Record>, String> {
    let fd = match tree.open_dir_resolved(storage) {
        Ok(Some(fd)) => fd,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", escape(storage))),
    };
    let at = Tree::from_fd(storage.to_path_buf(), fd.as_fd()).map_err(|e| e.to_string())?;
    record::read(&at, storage)
}

/// Whether `a` and `b` (below the tree at `root`) are one inode: a bind mount of one on
/// the other.
fn same_inode(root: &Path, a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let meta = |p: &Path| std::fs::symlink_metadata(crate::paths::under_root(root, p));
    match (meta(a), meta(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// What the root's own copy of a bind-mounted entry still holds under the mount (see
/// [`survey::hidden_under_mount`]); nothing said where it cannot be looked at (as a user).
fn hidden(tree: &Tree, path: &Path) -> Option<(u64, u64)> {
    let dir = tree
        .open_dir_resolved(path.parent().unwrap_or(Path::new("/")))
        .ok()??;
    let under = survey::hidden_under_mount(dir.as_fd(), path.file_name()?).ok()??;
    Some((under.files, under.bytes))
}

/// Whether a recorded copy still holds: neither the live path nor the storage's copy
/// changed since migrate verified it (their newest inode change times; nothing is read
/// but metadata).
fn verification(tree: &Tree, storage: &Path, path: &Path, v: &record::Verified) -> Verification {
    let newest = |abs: &Path| -> Result<(i64, i64), String> {
        let parent = abs.parent().unwrap_or(Path::new("/"));
        let name = abs.file_name().unwrap_or_default();
        let dir = tree
            .open_dir_resolved(parent)
            .map_err(|e| format!("{}: {e}", escape(parent)))?
            .ok_or_else(|| format!("{} is gone", escape(parent)))?;
        let s = survey::survey(dir.as_fd(), name, false)
            .map_err(|e| format!("{}: {} {}", escape(&abs.join(&e.rel)), e.op, e.source))?;
        Ok(survey::newest_change(&s))
    };
    let live = newest(path);
    let copy = newest(&ready::in_storage(storage, path));
    match (live, copy) {
        (Err(why), _) | (_, Err(why)) => Verification::Unreadable(why),
        (Ok(live), Ok(copy)) => {
            if record::still_verified(v, live, (i64::MIN, 0)) {
                if record::still_verified(v, live, copy) {
                    Verification::Verified(v.verified)
                } else {
                    Verification::CopyChanged(v.verified)
                }
            } else {
                Verification::LiveChanged(v.verified)
            }
        }
    }
}

/// The systemd unit the NixOS module enables for `snapshots gc` (nix/module.nix,
/// `systemd.timers.imperm-gc`, wanted by timers.target).
const GC_TIMER: &str = "/etc/systemd/system/timers.target.wants/imperm-gc.timer";

fn build(config: &Config, args: &StatusArgs) -> StatusReport {
    let table = config.mount_table.as_ref();
    let filesystem = match (
        &config.filesystem,
        table.and_then(|t| t.containing(Path::new("/"))),
    ) {
        (Some(fs), _) => FilesystemStatus {
            fs_type: Some(fs.fs_type.as_str().to_string()),
            from: Some("config"),
            device: fs.device.clone(),
            root_subvolume: Some(fs.root_subvolume.clone()),
            snapshot_dir: Some(fs.snapshot_dir.clone()),
        },
        (None, Some(root_mount)) => FilesystemStatus {
            fs_type: Some(root_mount.fs_type.clone()),
            from: Some("mount table"),
            device: Some(root_mount.source.clone()),
            root_subvolume: None,
            snapshot_dir: None,
        },
        (None, None) => FilesystemStatus {
            fs_type: None,
            from: None,
            device: None,
            root_subvolume: None,
            snapshot_dir: None,
        },
    };
    let set = &config.persisted;
    let mut users: Vec<String> = set
        .entries()
        .iter()
        .filter_map(|e| e.user.clone())
        .collect();
    users.sort();
    users.dedup();
    let needed = |path: &Path| {
        config
            .needed_for_boot
            .as_ref()
            .map(|list| list.iter().any(|p| p == path))
    };
    let storage: Vec<StorageStatus> = set
        .storages()
        .into_iter()
        .map(|path| {
            let place = table.and_then(|t| t.storage(path, config.root_subvolume()));
            let holder = place.as_ref().map(|p| p.holder);
            StorageStatus {
                path: path.to_path_buf(),
                separate: holder.map(|m| m.mount_point != Path::new("/")),
                wiped_by_reset: place.as_ref().map(|p| p.wiped.is_some()),
                mount_point: holder.map(|m| m.mount_point.clone()),
                mount_root: holder.map(|m| m.root.clone()),
                inside: place.and_then(|p| match p.wiped {
                    Some(Wiped::InsideRoot { tree }) => Some(tree),
                    _ => None,
                }),
                fs_type: holder.map(|m| m.fs_type.clone()),
                needed_for_boot: needed(path),
            }
        })
        .collect();

    // The configuration, as `lint` judges it.
    let lint = lint(
        set,
        table,
        config.root_subvolume(),
        &config.early_reads,
        knowledge::builtin(),
    );

    // Every entry, between the live root and its storage.
    let mounted: HashSet<PathBuf> = table
        .map(|t| {
            set.storages()
                .into_iter()
                .flat_map(|s| t.bind_mounts_from(s))
                .map(|b| b.target)
                .collect()
        })
        .unwrap_or_default();
    let tree = Tree::open(&config.root).ok();
    let look = |abs: &Path| match &tree {
        Some(tree) => presence(tree, abs),
        None => Presence::Unreadable(format!("cannot open {}", escape(&config.root))),
    };
    let entry_facts: Vec<EntryFact> = set
        .entries()
        .iter()
        .map(|e| {
            let copy = ready::in_storage(&e.storage, &e.path);
            EntryFact {
                path: e.path.clone(),
                kind: e.kind,
                storage: e.storage.clone(),
                live: look(&e.path),
                stored: match &tree {
                    Some(tree) => stored(tree, &e.storage, &e.path),
                    None => look(&copy),
                },
                // The mount table says so; where none is readable (a tree without /proc),
                // the live path being the copy's very inode does.
                mounted: mounted.contains(&e.path) || same_inode(&config.root, &e.path, &copy),
                linked: tree
                    .as_ref()
                    .and_then(|t| t.read_link(&e.path).ok().flatten())
                    .is_some_and(|target| target == copy),
                record: Verification::None,
                hidden: None,
            }
        })
        .collect();
    // migrate's records, one read per storage, for the copies that are there to be kept.
    let mut records: HashMap<PathBuf, Result<Option<record::Record>, String>> = HashMap::new();
    let mut entry_facts = entry_facts;
    for fact in &mut entry_facts {
        if fact.mounted {
            if let Some(tree) = &tree {
                fact.hidden = hidden(tree, &fact.path);
            }
            continue;
        }
        if fact.linked || fact.live == Presence::Absent || fact.live != fact.stored {
            continue;
        }
        let Some(tree) = &tree else { continue };
        let got = records
            .entry(fact.storage.clone())
            .or_insert_with(|| read_record(tree, &fact.storage));
        fact.record = match got {
            Err(why) => Verification::Unreadable(why.clone()),
            Ok(None) => Verification::None,
            Ok(Some(r)) => match r.get(&fact.path) {
                None => Verification::None,
                Some(v) => verification(tree, &fact.storage, &fact.path, v),
            },
        };
    }

    // The top level: the reset's layout, its record, the snapshots.
    let backend = config
        .filesystem
        .as_ref()
        .map(|fs| backend::for_type(fs.fs_type));
    let opened = open_top(config);
    let (layout_fact, top_facts) = match (&config.filesystem, &opened, &backend) {
        (None, _, _) => (LayoutFact::NotConfigured, None),
        (Some(fs), _, _) if fs.fs_type == crate::config::FsType::Tmpfs => (LayoutFact::Tmpfs, None),
        (Some(_), Err(_), _) | (Some(_), _, None) => (
            LayoutFact::NotChecked(why_text(&opened)),
            Some(Err(why_text(&opened))),
        ),
        (Some(_), Ok((top, layout)), Some(backend)) => (
            match layout_on(backend.as_ref(), top, layout, config) {
                Ok(l) => LayoutFact::Checked(l),
                Err(why) => LayoutFact::NotChecked(why),
            },
            Some(survey_top(backend.as_ref(), top, layout)),
        ),
    };
    // Unmount before the walk below: nothing else needs it.
    drop(opened);

    let tmpfs_root = config
        .filesystem
        .as_ref()
        .is_some_and(|f| f.fs_type == crate::config::FsType::Tmpfs)
        && table
            .and_then(|t| t.containing(Path::new("/")))
            .is_some_and(|m| m.fs_type == "tmpfs");
    let surveyed = top_facts.as_ref().and_then(|t| t.as_ref().ok());
    // Ephemeral: the root is a tmpfs, or a reset is recorded or has left snapshots; where
    // the top level could not be looked at (as a user), impermanence's bind mounts from
    // the storage (or links to it) say so.
    let ephemeral = tmpfs_root
        || surveyed.is_some_and(|t| t.reset_seen)
        || (surveyed.is_none() && entry_facts.iter().any(|e| e.mounted || e.linked));
    let not_checked = |why: &str| format!("not checked: {why}");
    let mut check_status = None;
    let mut baseline_status = None;
    let mut gc_status = None;
    let ephemeral_facts = ephemeral.then(|| {
        let subvolumes = !tmpfs_root
            && config
                .filesystem
                .as_ref()
                .is_some_and(|f| backend::for_type(f.fs_type).has_subvolumes());
        let (last_reset, snapshots_fact) = match &top_facts {
            Some(Ok(t)) => (t.last_reset.clone(), t.snapshots_fact.clone()),
            Some(Err(why)) => (
                LastReset::NotChecked(why.clone()),
                SnapshotsFact::NotChecked(why.clone()),
            ),
            None => (
                LastReset::NotChecked("no [filesystem] with subvolumes".into()),
                SnapshotsFact::NotChecked("no [filesystem] with subvolumes".into()),
            ),
        };
        let gc_timer = tree.as_ref().and_then(|t| {
            (t.kind_resolved(Path::new(GC_TIMER)).ok().flatten() == Some(FileType::RegularFile))
                .then(|| PathBuf::from(GC_TIMER))
        });
        if subvolumes {
            gc_status = Some(GcTimerStatus {
                enabled: gc_timer.is_some(),
                link: PathBuf::from(GC_TIMER),
            });
        }
        let baseline = match super::discover::load_manifest_header(&config.root) {
            Ok(Some(_)) => {
                // Looked at as the tree sees it, as it was read: never the host's file.
                let time = tree
                    .as_ref()
                    .and_then(|t| t.stat_resolved(Path::new(crate::baseline::MANIFEST)).ok())
                    .flatten()
                    .and_then(|st| Timestamp::new(st.st_mtime, 0).ok());
                Ok((PathBuf::from(crate::baseline::MANIFEST), time))
            }
            Ok(None) => Err(format!("no baseline at {}", crate::baseline::MANIFEST)),
            Err(e) => Err(e.to_string()),
        };
        baseline_status = Some(match &baseline {
            Ok((path, time)) => BaselineStatus {
                present: true,
                path: path.clone(),
                time: time.map(|t| t.to_string()),
                note: None,
            },
            Err(why) => BaselineStatus {
                present: false,
                path: PathBuf::from(crate::baseline::MANIFEST),
                time: None,
                note: Some(why.clone()),
            },
        });
        let (check, status) = run_check(config, args);
        check_status = Some(status);
        EphemeralFacts {
            last_reset,
            snapshots: snapshots_fact,
            subvolumes,
            gc_timer,
            baseline,
            check,
        }
    });

    let declared = match config.persistence_source {
        PersistenceSource::ConfigFile(_) | PersistenceSource::NixJson(_) => Declared::Given,
        PersistenceSource::MountTable(_) => Declared::MountTable,
        PersistenceSource::Template => Declared::Template,
    };
    let facts = Facts {
        declared,
        config: config.persistence_source.to_string(),
        lint: lint
            .findings
            .iter()
            .map(|f| LintFact {
                rule: f.rule.as_str(),
                path: f.path.clone(),
            })
            .collect(),
        lint_mount_table: lint.mount_table,
        entries: entry_facts,
        storages: storage
            .iter()
            .map(|s| StorageFact {
                path: s.path.clone(),
                survives_reset: s.separate.map(|sep| sep && s.wiped_by_reset == Some(false)),
                where_: storage_text(s, &PLAIN),
                needed_for_boot: s.needed_for_boot,
            })
            .collect(),
        layout: layout_fact,
        ephemeral: ephemeral_facts,
    };
    let readiness = ready::decide(&facts);

    let layout = match &facts.layout {
        LayoutFact::Checked(l) => LayoutStatus {
            root_subvolume: Some(node_word(l.root)),
            snapshot_dir: Some(node_word(l.snapshot_dir)),
            blank_snapshot: l.blank.as_ref().map(|(_, n)| node_word(*n)),
            free_bytes: Some(l.free),
            size_bytes: Some(l.size),
            threshold_bytes: Some(ready::free_space_threshold(l.size)),
            note: None,
        },
        other => LayoutStatus {
            root_subvolume: None,
            snapshot_dir: None,
            blank_snapshot: None,
            free_bytes: None,
            size_bytes: None,
            threshold_bytes: None,
            note: Some(match other {
                LayoutFact::NotConfigured => "not looked at: no [filesystem] configured".into(),
                LayoutFact::Tmpfs => "none: a tmpfs root".into(),
                LayoutFact::NotChecked(why) => not_checked(why),
                LayoutFact::Checked(_) => unreachable!("matched above"),
            }),
        },
    };
    let snapshots = match &top_facts {
        Some(Ok(t)) => t.snapshots.clone(),
        Some(Err(why)) => SnapshotsStatus::note(format!("not looked at: {why}")),
        None => match &config.filesystem {
            None => SnapshotsStatus::note("not looked at: no [filesystem] configured"),
            Some(_) => SnapshotsStatus::note("none: a tmpfs root keeps nothing across boots"),
        },
    };
    let reset = match &top_facts {
        Some(Ok(t)) => Some(match &t.last_reset {
            LastReset::Recorded {
                phase,
                snapshot,
                time,
            } => ResetStatus {
                phase: Some(phase),
                snapshot: Some(snapshot.clone()),
                time: time.map(|t| t.to_string()),
            },
            _ => ResetStatus {
                phase: None,
                snapshot: None,
                time: None,
            },
        }),
        _ => None,
    };
    let entries = facts
        .entries
        .iter()
        .map(|e| {
            let (state, detail) = ready::entry_state(e);
            EntryStatus {
                path: e.path.clone(),
                kind: e.kind,
                storage: e.storage.clone(),
                state,
                detail,
                verified: e.record.verified().map(|t| t.to_string()),
            }
        })
        .collect();
    StatusReport {
        root: config.root.clone(),
        config: config.config_file.clone(),
        persistence: config.persistence_source.clone(),
        filesystem,
        persisted: PersistedSummary {
            directories: set.count(Kind::Directory),
            files: set.count(Kind::File),
            users,
        },
        storage,
        retention: config.retention.clone(),
        snapshots,
        readiness,
        lint: LintSummary {
            problems: lint.findings.len(),
            first: lint
                .findings
                .iter()
                .take(ready::NAMED)
                .map(|f| LintItem {
                    rule: f.rule.as_str(),
                    path: f.path.clone(),
                })
                .collect(),
        },
        entries,
        layout,
        reset,
        gc_timer: gc_status,
        baseline: baseline_status,
        check: check_status,
    }
}

fn why_text(opened: &Result<(TopLevel, Layout), String>) -> String {
    match opened {
        Err(why) => why.clone(),
        Ok(_) => "no backend".into(),
    }
}

/// `check`, through the command's own code path, unless `--no-check`.
fn run_check(config: &Config, args: &StatusArgs) -> (CheckFact, CheckStatus) {
    let none = CheckStatus {
        skipped: false,
        persist: None,
        review: None,
        ephemeral: None,
        generated: None,
        errors: None,
        since_baseline: None,
        elapsed_ms: None,
        note: None,
    };
    if args.no_check {
        return (
            CheckFact::Skipped,
            CheckStatus {
                skipped: true,
                ..none
            },
        );
    }
    match super::discover::discover(config, "check", Style::default(), false) {
        Err(e) => (
            CheckFact::Failed(e.to_string()),
            CheckStatus {
                note: Some(e.to_string()),
                ..none
            },
        ),
        Ok(report) => {
            let n = |v: Verdict| report.suggestions.iter().filter(|s| s.verdict == v).count();
            let first = report
                .suggestions
                .iter()
                .filter(|s| s.verdict == Verdict::Persist)
                .map(|s| s.path.clone())
                .collect();
            let fact = CheckFact::Found {
                persist: n(Verdict::Persist),
                review: n(Verdict::Review),
                ephemeral: n(Verdict::Ephemeral),
                generated: n(Verdict::Generated),
                errors: report.errors.len(),
                first,
                baseline: report.baseline.is_some(),
            };
            let status = CheckStatus {
                skipped: false,
                persist: Some(n(Verdict::Persist)),
                review: Some(n(Verdict::Review)),
                ephemeral: Some(n(Verdict::Ephemeral)),
                generated: Some(n(Verdict::Generated)),
                errors: Some(report.errors.len()),
                since_baseline: Some(report.baseline.is_some()),
                elapsed_ms: Some(report.elapsed_ms),
                note: None,
            };
            (fact, status)
        }
    }
}

/// For text that goes into JSON as well as human output.
const PLAIN: Styles = Styles {
    heading: anstyle::Style::new(),
    path: anstyle::Style::new(),
    problem: anstyle::Style::new(),
    good: anstyle::Style::new(),
    dim: anstyle::Style::new(),
};

/// A storage row: where it is and whether the reset wipes it.
fn storage_text(storage: &StorageStatus, s: &Styles) -> String {
    match (storage.separate, &storage.mount_point, &storage.fs_type) {
        (Some(true), Some(mp), Some(t)) if storage.wiped_by_reset == Some(true) => {
            format!(
                "{} mount at {} of {}, {}inside the root subvolume {}: the reset would wipe it{:#}",
                t,
                escape(mp),
                escape(storage.mount_root.as_deref().unwrap_or(Path::new("?"))),
                s.problem,
                escape(storage.inside.as_deref().unwrap_or(Path::new("?"))),
                s.problem
            )
        }
        (Some(true), Some(mp), Some(t)) => format!("{} mount at {}", t, escape(mp)),
        (Some(false), _, Some(t)) => format!(
            "{}not a separate filesystem{:#} (on the root, {t}); the reset would wipe it",
            s.problem, s.problem
        ),
        _ => "not checked (no mount table, or none with a mount at /)".into(),
    }
}

impl Report for StatusReport {
    const COMMAND: &'static str = "status";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        let h = s.heading;
        let row = |out: &mut dyn Write, name: &str, value: String| {
            writeln!(out, "{h}{name:<12}{h:#} {value}")
        };
        row(out, "root", escape(&self.root))?;
        let config = if self.config.loaded {
            escape(&self.config.path)
        } else {
            format!("{} (not found: defaults)", escape(&self.config.path))
        };
        row(out, "config", config)?;
        row(out, "persistence", self.persistence.to_string())?;
        let fs = &self.filesystem;
        let filesystem = match (&fs.fs_type, fs.from) {
            (Some(t), Some(from)) => {
                let mut text = t.clone();
                if let Some(device) = &fs.device {
                    text += &format!(" on {device}");
                }
                // A tmpfs root has no subvolumes: config.toml names the defaults anyway.
                if let (Some(root), Some(snaps), false) =
                    (&fs.root_subvolume, &fs.snapshot_dir, t == "tmpfs")
                {
                    text += &format!(", root {}, snapshots in {}", escape(root), escape(snaps));
                }
                format!("{text} (from the {from})")
            }
            _ => "unknown (no [filesystem] in the configuration and no mount table)".into(),
        };
        row(out, "filesystem", filesystem)?;
        for storage in &self.storage {
            let text = format!(
                "{}{}{:#}: {}",
                s.path,
                escape(&storage.path),
                s.path,
                storage_text(storage, s)
            );
            row(out, "storage", text)?;
        }
        let p = &self.persisted;
        let users = if p.users.is_empty() {
            String::new()
        } else {
            format!("; users: {}", p.users.join(", "))
        };
        row(
            out,
            "persisted",
            format!(
                "{}, {}{users}",
                count(p.directories, "directory", "directories"),
                count(p.files, "file", "files")
            ),
        )?;
        row(out, "retention", self.retention.to_string())?;
        let snaps = &self.snapshots;
        let text = match (snaps.count, &snaps.last_reset, &snaps.note) {
            (Some(n), Some(last), _) => format!(
                "{}, last reset {}{last}{:#}",
                count(n, "snapshot", "snapshots"),
                s.path,
                s.path
            ),
            (Some(n), None, _) => count(n, "snapshot", "snapshots"),
            (None, _, Some(note)) => format!("{}{note}{:#}", s.dim, s.dim),
            (None, _, None) => String::new(),
        };
        row(out, "snapshots", text)?;
        let r = &self.readiness;
        let style = if r.ready { s.good } else { s.problem };
        writeln!(out, "{style}{}{style:#}", r.headline())?;
        for reason in &r.reasons {
            let (word, style) = match reason.state {
                State::Ok => ("ok", s.good),
                State::Problem => ("problem", s.problem),
                State::Unknown => ("unknown", s.dim),
            };
            writeln!(
                out,
                "  {style}{word:<8}{style:#} {:<16} {}",
                reason.check, reason.detail
            )?;
        }
        Ok(())
    }
}
