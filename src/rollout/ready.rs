//! Is this host ready for its first ephemeral boot? The answer is a pure function of facts
//! that `status` gathers (`commands/status.rs`): the facts in, one reason per thing
//! checked out, each `ok`, `problem` or `unknown`, and the verdict. Nothing here reads
//! the disk, so every rule is tested by a table.
//!
//! A host is ready only when every reason is `ok`: a reason that could not be checked
//! (`unknown`: as a user, or without a fact the configuration does not carry) is never
//! taken for a good one.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;

use crate::paths::escape;
use crate::persisted::Kind;
use crate::words::{bytes, count};

/// How many paths a reason names before "and N more".
pub const NAMED: usize = 3;

/// Free space below which the reset's filesystem is a problem: the smaller of 1 GiB and a
/// tenth of the filesystem. A reset takes a snapshot (new metadata: btrfs allocates
/// metadata in chunks of up to 1 GiB, and fails a snapshot with ENOSPC when it cannot),
/// and every old root keeps what the running system rewrites until `gc` deletes it. A
/// reset that fails stops the boot (the module makes it required by `sysroot.mount`).
pub fn free_space_threshold(size: u64) -> u64 {
    (1u64 << 30).min(size / 10)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    Problem,
    /// Not checked, or not checkable here: never taken for `ok`.
    Unknown,
}

/// One thing checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// What was checked (`config`, `lint`, `entries`, `storage`, `needed-for-boot`,
    /// `layout`, `free-space`, `last-reset`, `snapshots`, `gc-timer`, `baseline`, `check`).
    pub check: &'static str,
    pub state: State,
    /// What was found, as a sentence (paths in the escaped form of paths in output).
    pub detail: String,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Every reason is `ok`.
    pub ready: bool,
    /// The root is already reset at boot: the question is then whether it is still sound.
    pub ephemeral: bool,
    pub problems: usize,
    /// Reasons that could not be checked.
    pub unknown: usize,
    pub reasons: Vec<Reason>,
}

impl Readiness {
    /// One line: "ready for the first ephemeral boot", "not ready: 2 problems", …
    pub fn headline(&self) -> String {
        let unknown = count(self.unknown, "reason not checked", "reasons not checked");
        match (self.problems, self.unknown, self.ephemeral) {
            (0, 0, false) => "ready for the first ephemeral boot".into(),
            (0, 0, true) => "ready: the root is ephemeral and nothing needs action".into(),
            (0, _, _) => format!("not known to be ready: no problems, {unknown}"),
            (n, 0, _) => format!("not ready: {}", count(n, "problem", "problems")),
            (n, _, _) => format!("not ready: {}, {unknown}", count(n, "problem", "problems")),
        }
    }
}

/// Where the persisted set came from, as far as readiness cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    /// A configuration file or Nix JSON: the host's own declaration.
    Given,
    /// The live bind mounts from the storage: what is mounted now.
    MountTable,
    /// Nothing declared: the built-in template stood in.
    Template,
}

/// A lint finding, as far as readiness names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LintFact {
    pub rule: &'static str,
    pub path: PathBuf,
}

/// What a path is, as compared between the live root and the storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    Absent,
    Directory,
    File,
    Symlink,
    /// A FIFO, device or socket.
    Special,
    /// Could not be looked at: why.
    Unreadable(String),
    /// In the storage, something on the way is not what a bind mount would use: a
    /// symlink (it could lead back onto the root, which the reset wipes), or a file where
    /// a directory must be. Why.
    Blocked(String),
}

impl Presence {
    fn word(&self) -> &'static str {
        match self {
            Presence::Absent => "absent",
            Presence::Directory => "a directory",
            Presence::File => "a file",
            Presence::Symlink => "a symlink",
            Presence::Special => "a special file",
            Presence::Unreadable(_) => "unreadable",
            Presence::Blocked(_) => "blocked",
        }
    }
}

/// One declared entry: what the live root and the storage hold at its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryFact {
    pub path: PathBuf,
    pub kind: Kind,
    pub storage: PathBuf,
    pub live: Presence,
    pub stored: Presence,
    /// The live path is a bind mount of the storage's copy (the host is ephemeral already).
    pub mounted: bool,
    /// The live path is a symlink to the storage's copy (impermanence's `method =
    /// "symlink"`, preservation's `how = "symlink"`).
    pub linked: bool,
    /// What migrate's record says of the storage's copy, and whether either side changed
    /// since.
    pub record: Verification,
    /// Bind-mounted, and the root's own copy under the mount still holds files (how many,
    /// how many bytes): mounted over before migrate copied them.
    pub hidden: Option<(u64, u64)>,
}

/// An entry's copy against migrate's record of it (see [`super::record`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// No record of it: copied by hand, or by an imperm before the record existed.
    None,
    /// The record, or one side of the entry, could not be read: why.
    Unreadable(String),
    /// Verified then, and neither side has changed since.
    Verified(Timestamp),
    /// Verified then, and the live path has changed since: the storage's copy is older.
    LiveChanged(Timestamp),
    /// Verified then, and the storage's copy has changed since.
    CopyChanged(Timestamp),
}

impl Verification {
    /// When it was verified, while it still holds.
    pub fn verified(&self) -> Option<Timestamp> {
        match self {
            Verification::Verified(at) => Some(*at),
            _ => None,
        }
    }
}

/// Where an entry stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryState {
    /// In the storage, the same as on the root when migrate verified it, and neither side
    /// changed since.
    InStorage,
    /// In the storage, of the same kind, but not verified by migrate: what it holds is not
    /// known to be what the root has.
    Unverified,
    /// Verified by migrate once, and one side changed since.
    Changed,
    /// Bind-mounted from the storage over files of the root's own that were never copied.
    Hidden,
    /// The live path is the storage's copy, bind-mounted or linked.
    Mounted,
    /// On the root, not in the storage: the first reset loses it.
    Missing,
    /// In the storage as another kind of file than on the root.
    KindDiffers,
    /// Something in the storage is in the way of its copy (see [`Presence::Blocked`]).
    Blocked,
    /// Not on the root: nothing to keep (impermanence makes it empty).
    NotOnRoot,
    /// One side could not be looked at.
    Unknown,
}

/// The verdict on one entry, and why.
pub fn entry_state(e: &EntryFact) -> (EntryState, String) {
    if let (true, Some((files, size))) = (e.mounted, e.hidden) {
        return (
            EntryState::Hidden,
            format!(
                "bind-mounted from the storage over the root's own copy, which still holds {} ({}) that the next boot loses",
                crate::words::count(files as usize, "file", "files"),
                crate::words::bytes(size)
            ),
        );
    }
    if e.mounted {
        return (EntryState::Mounted, "bind-mounted from the storage".into());
    }
    if e.linked {
        return (
            EntryState::Mounted,
            "a symlink to the storage's copy".into(),
        );
    }
    let on_disk = in_storage(&e.storage, &e.path);
    match (&e.live, &e.stored) {
        (Presence::Unreadable(why), _) => (EntryState::Unknown, format!("on the root: {why}")),
        (Presence::Absent, _) => (EntryState::NotOnRoot, "not on the root".into()),
        (_, Presence::Unreadable(why)) => {
            (EntryState::Unknown, format!("{}: {why}", escape(&on_disk)))
        }
        (_, Presence::Blocked(why)) => {
            (EntryState::Blocked, format!("{}: {why}", escape(&on_disk)))
        }
        (Presence::Blocked(why), _) => (EntryState::Unknown, format!("on the root: {why}")),
        (_, Presence::Absent) => (
            EntryState::Missing,
            format!("not in the storage ({} is absent)", escape(&on_disk)),
        ),
        (live, stored) if live != stored => (
            EntryState::KindDiffers,
            format!(
                "{} on the root, {} in the storage",
                live.word(),
                stored.word()
            ),
        ),
        _ => match &e.record {
            Verification::Verified(at) => (EntryState::InStorage, format!("verified {at}")),
            Verification::None => (
                EntryState::Unverified,
                "in the storage, not verified by migrate".into(),
            ),
            Verification::Unreadable(why) => (
                EntryState::Unverified,
                format!("in the storage; not verified: {why}"),
            ),
            Verification::LiveChanged(at) => (
                EntryState::Changed,
                format!("changed on the root since migrate verified its copy at {at}"),
            ),
            Verification::CopyChanged(at) => (
                EntryState::Changed,
                format!(
                    "the storage's copy changed since migrate verified it at {at} ({} holds it)",
                    escape(&on_disk)
                ),
            ),
        },
    }
}

/// One persistent storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageFact {
    pub path: PathBuf,
    /// A mount of its own that the reset does not wipe: `Some(true)`; on the root, or
    /// inside the root's tree: `Some(false)`; no mount table: `None`.
    pub survives_reset: Option<bool>,
    /// Why it does not, as status's storage row says it.
    pub where_: String,
    /// What the NixOS module found at evaluation (config.toml's `[module]`): `None` when
    /// the configuration does not say (not written by the module).
    pub needed_for_boot: Option<bool>,
}

/// What a subvolume or directory of the reset's layout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Missing,
    Subvolume,
    Directory,
    /// A symlink, file or anything else.
    Other,
}

/// The reset's layout on the filesystem's top level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutFact {
    /// No `[filesystem]` in the configuration.
    NotConfigured,
    /// A tmpfs root: nothing to reset, no layout.
    Tmpfs,
    /// Not looked at: why ("needs root", a device that is missing, …).
    NotChecked(String),
    Checked(Layout),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// As configured, relative to the top level.
    pub root_name: PathBuf,
    pub root: Node,
    pub snapshot_dir_name: PathBuf,
    pub snapshot_dir: Node,
    /// The blank snapshot, when one is configured.
    pub blank: Option<(PathBuf, Node)>,
    /// What the running root's mount shows (btrfs: `/@root`), when the mount table says.
    pub running_root: Option<PathBuf>,
    /// Free and total bytes of the filesystem (statvfs, for an unprivileged writer).
    pub free: u64,
    pub size: u64,
}

/// The last reset, as its state file records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LastReset {
    NotChecked(String),
    /// No state file: no reset has run (or one older than the state file).
    None,
    Recorded {
        /// `done`, or the phase an interrupted reset stopped in.
        phase: &'static str,
        /// The snapshot that holds the old root ("" when the reset only created a root).
        snapshot: String,
        /// When: the snapshot's name.
        time: Option<Timestamp>,
    },
}

/// One snapshot, for newest and oldest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFact {
    pub name: String,
    pub time: Option<Timestamp>,
}

/// The snapshot directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotsFact {
    NotChecked(String),
    Surveyed {
        count: usize,
        newest: Option<SnapshotFact>,
        oldest: Option<SnapshotFact>,
        /// A state file that cannot be read, snapshots gc left half deleted.
        problem: Option<String>,
    },
}

/// What `check` found, by verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckFact {
    /// `--no-check`.
    Skipped,
    Failed(String),
    Found {
        persist: usize,
        review: usize,
        ephemeral: usize,
        generated: usize,
        /// Paths that could not be read.
        errors: usize,
        /// The first paths to persist.
        first: Vec<PathBuf>,
        baseline: bool,
    },
}

/// What only an ephemeral host has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EphemeralFacts {
    pub last_reset: LastReset,
    pub snapshots: SnapshotsFact,
    /// Whether the root has subvolumes: a tmpfs root has no reset, snapshots or gc.
    pub subvolumes: bool,
    /// `Some(path)` of the timer's link in `timers.target.wants`; `None` when absent.
    pub gc_timer: Option<PathBuf>,
    /// The baseline manifest and when it was written; `Err(why)` when absent or unreadable.
    pub baseline: Result<(PathBuf, Option<Timestamp>), String>,
    pub check: CheckFact,
}

/// Everything readiness is decided from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub declared: Declared,
    /// Where the configuration came from, for the detail.
    pub config: String,
    pub lint: Vec<LintFact>,
    /// Whether lint had a mount table (its storage check ran).
    pub lint_mount_table: bool,
    pub entries: Vec<EntryFact>,
    pub storages: Vec<StorageFact>,
    pub layout: LayoutFact,
    /// `Some` on an ephemeral host.
    pub ephemeral: Option<EphemeralFacts>,
}

/// "a, b, c and 4 more".
fn named<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let mut out: Vec<String> = items.iter().take(NAMED).map(show).collect();
    if items.len() > NAMED {
        out.push(format!("{} more", items.len() - NAMED));
    }
    match out.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

fn reason(check: &'static str, state: State, detail: impl Into<String>) -> Reason {
    Reason {
        check,
        state,
        detail: detail.into(),
    }
}

/// The decision: every reason, in the order a person fixes them, and the verdict.
pub fn decide(f: &Facts) -> Readiness {
    let mut reasons = vec![config_reason(f), lint_reason(f), entries_reason(&f.entries)];
    for s in &f.storages {
        reasons.extend(storage_reasons(s));
    }
    reasons.extend(layout_reasons(&f.layout));
    if let Some(e) = &f.ephemeral {
        reasons.extend(ephemeral_reasons(e));
    }
    let problems = reasons.iter().filter(|r| r.state == State::Problem).count();
    let unknown = reasons.iter().filter(|r| r.state == State::Unknown).count();
    Readiness {
        ready: problems == 0 && unknown == 0,
        ephemeral: f.ephemeral.is_some(),
        problems,
        unknown,
        reasons,
    }
}

fn config_reason(f: &Facts) -> Reason {
    match f.declared {
        Declared::Given => reason("config", State::Ok, format!("loaded from {}", f.config)),
        Declared::MountTable => reason(
            "config",
            State::Ok,
            format!("no configuration file: the persisted set is {}", f.config),
        ),
        Declared::Template => reason(
            "config",
            State::Problem,
            "no persistence declared (no configuration file, no bind mounts from a storage): \
             the built-in template stood in; give the host's own with --config or \
             --persistence-json (the NixOS module writes /etc/imperm/config.toml; after \
             `nixos-rebuild boot`, before the reboot, it is \
             /nix/var/nix/profiles/system/etc/imperm/config.toml)",
        ),
    }
}

fn lint_reason(f: &Facts) -> Reason {
    let table = if f.lint_mount_table {
        ""
    } else {
        " (no mount table: the storage was not checked)"
    };
    if f.lint.is_empty() {
        return reason("lint", State::Ok, format!("no problems{table}"));
    }
    reason(
        "lint",
        State::Problem,
        format!(
            "{}: {} (see `imperm lint`){table}",
            count(f.lint.len(), "problem", "problems"),
            named(&f.lint, |l| format!("{} {}", l.rule, escape(&l.path)))
        ),
    )
}

fn entries_reason(entries: &[EntryFact]) -> Reason {
    let judged: Vec<(&EntryFact, EntryState, String)> = entries
        .iter()
        .map(|e| {
            let (s, why) = entry_state(e);
            (e, s, why)
        })
        .collect();
    let of = |state: EntryState| -> Vec<&(&EntryFact, EntryState, String)> {
        judged.iter().filter(|j| j.1 == state).collect()
    };
    let on_root = judged
        .iter()
        .filter(|j| j.1 != EntryState::NotOnRoot)
        .count();
    let kept = of(EntryState::InStorage).len() + of(EntryState::Mounted).len();
    let verified = of(EntryState::InStorage).len();
    let unverified = of(EntryState::Unverified);
    let changed = of(EntryState::Changed);
    let hidden = of(EntryState::Hidden);
    let missing = of(EntryState::Missing);
    let differs = of(EntryState::KindDiffers);
    let blocked = of(EntryState::Blocked);
    let unknown = of(EntryState::Unknown);
    let mut parts = vec![format!(
        "{kept} of {} on the root in the storage",
        count(on_root, "declared entry", "declared entries")
    )];
    if kept > 0 {
        let mounted = of(EntryState::Mounted).len();
        let bound = of(EntryState::Mounted)
            .iter()
            .filter(|j| j.0.mounted)
            .count();
        let mut how = Vec::new();
        if bound > 0 {
            how.push(format!("{bound} bind-mounted"));
        }
        if mounted > bound {
            how.push(format!("{} linked", mounted - bound));
        }
        if verified > 0 {
            how.push(format!("{verified} verified by migrate"));
        }
        parts[0] += &format!(" ({})", how.join(", "));
    }
    let path = |j: &&(&EntryFact, EntryState, String)| escape(&j.0.path);
    if !hidden.is_empty() {
        parts.push(format!(
            "hidden under a bind mount from the storage, never copied: {} (see the README, \"Hidden under a bind mount\")",
            named(&hidden, |j| format!("{} ({})", escape(&j.0.path), j.2))
        ));
    }
    if !changed.is_empty() {
        parts.push(format!(
            "changed since migrate verified them: {} (stop what writes them, then `imperm migrate` copies them again)",
            named(&changed, |j| format!("{} ({})", escape(&j.0.path), j.2))
        ));
    }
    if !unverified.is_empty() {
        parts.push(format!(
            "in the storage, not verified: {} (`imperm migrate` compares and records them)",
            named(&unverified, path)
        ));
    }
    if !missing.is_empty() {
        parts.push(format!(
            "not in the storage: {} (`imperm migrate` copies them)",
            named(&missing, path)
        ));
    }
    if !differs.is_empty() {
        parts.push(format!(
            "another kind in the storage: {}",
            named(&differs, |j| format!("{} ({})", escape(&j.0.path), j.2))
        ));
    }
    if !blocked.is_empty() {
        parts.push(format!(
            "in the way in the storage: {}",
            named(&blocked, |j| j.2.clone())
        ));
    }
    if !unknown.is_empty() {
        parts.push(format!(
            "not looked at: {}",
            named(&unknown, |j| format!("{} ({})", escape(&j.0.path), j.2))
        ));
    }
    let absent = of(EntryState::NotOnRoot).len();
    if absent > 0 {
        parts.push(format!("{absent} not on the root (nothing to keep)"));
    }
    let state = if !missing.is_empty()
        || !differs.is_empty()
        || !blocked.is_empty()
        || !changed.is_empty()
        || !hidden.is_empty()
    {
        State::Problem
    } else if !unknown.is_empty() || !unverified.is_empty() {
        State::Unknown
    } else {
        State::Ok
    };
    reason("entries", state, parts.join("; "))
}

fn storage_reasons(s: &StorageFact) -> Vec<Reason> {
    let p = escape(&s.path);
    let place = match s.survives_reset {
        Some(true) => reason("storage", State::Ok, format!("{p}: {}", s.where_)),
        Some(false) => reason("storage", State::Problem, format!("{p}: {}", s.where_)),
        None => reason("storage", State::Unknown, format!("{p}: {}", s.where_)),
    };
    let boot = match s.needed_for_boot {
        Some(true) => reason(
            "needed-for-boot",
            State::Ok,
            format!(
                "{p}: on a filesystem mounted in the initrd (neededForBoot), as the NixOS module found it at evaluation"
            ),
        ),
        Some(false) => reason(
            "needed-for-boot",
            State::Problem,
            format!(
                "{p}: the NixOS module found it on no filesystem mounted in the initrd: set neededForBoot = true on the fileSystems entry that holds it"
            ),
        ),
        None => reason(
            "needed-for-boot",
            State::Unknown,
            format!(
                "{p}: not checkable here (a running host's mount table does not say what the initrd mounts); the NixOS module asserts it at evaluation and writes it to config.toml's [module], which this configuration does not have"
            ),
        ),
    };
    vec![place, boot]
}

fn node_word(n: Node) -> &'static str {
    match n {
        Node::Missing => "missing",
        Node::Subvolume => "a subvolume",
        Node::Directory => "a plain directory",
        Node::Other => "not a directory",
    }
}

fn layout_reasons(l: &LayoutFact) -> Vec<Reason> {
    let l = match l {
        LayoutFact::NotConfigured => {
            return vec![reason(
                "layout",
                State::Problem,
                "no [filesystem] in the configuration: nothing says what the reset resets (the NixOS module writes it)",
            )];
        }
        LayoutFact::Tmpfs => {
            return vec![reason(
                "layout",
                State::Ok,
                "a tmpfs root: nothing to reset, no layout needed",
            )];
        }
        LayoutFact::NotChecked(why) => {
            return vec![
                reason("layout", State::Unknown, format!("not checked: {why}")),
                reason("free-space", State::Unknown, format!("not checked: {why}")),
            ];
        }
        LayoutFact::Checked(l) => l,
    };
    let mut problems = Vec::new();
    let root = escape(&l.root_name);
    if l.root != Node::Subvolume {
        problems.push(format!(
            "the root subvolume {root} is {}: the reset replaces a subvolume, and the first boot must find the system in it",
            node_word(l.root)
        ));
    }
    if let Some(running) = &l.running_root {
        let shown = running.strip_prefix("/").unwrap_or(running);
        if l.root == Node::Subvolume && shown != l.root_name {
            problems.push(format!(
                "the running root is mounted from {}, not from {root}: the reset would replace {root}, not this root",
                escape(running)
            ));
        }
    }
    let snaps = escape(&l.snapshot_dir_name);
    let snapshot_dir = match l.snapshot_dir {
        Node::Subvolume | Node::Directory => format!("snapshot directory {snaps}"),
        Node::Missing => format!("snapshot directory {snaps} missing (the first reset creates it)"),
        Node::Other => {
            problems.push(format!(
                "the snapshot directory {snaps} is not a directory: the reset refuses it"
            ));
            String::new()
        }
    };
    if let Some((name, node)) = &l.blank {
        if *node != Node::Subvolume {
            problems.push(format!(
                "the blank snapshot {} is {}: the reset refuses it",
                escape(name),
                node_word(*node)
            ));
        }
    }
    let layout = if problems.is_empty() {
        reason(
            "layout",
            State::Ok,
            format!("root subvolume {root}, {snapshot_dir}"),
        )
    } else {
        reason("layout", State::Problem, problems.join("; "))
    };
    let threshold = free_space_threshold(l.size);
    let detail = format!(
        "{} free of {} (needs {}: the smaller of 1 GiB and a tenth)",
        bytes(l.free),
        bytes(l.size),
        bytes(threshold)
    );
    let space = if l.free >= threshold {
        reason("free-space", State::Ok, detail)
    } else {
        reason(
            "free-space",
            State::Problem,
            format!("{detail}: a reset that runs out of space stops the boot"),
        )
    };
    vec![layout, space]
}

fn ephemeral_reasons(e: &EphemeralFacts) -> Vec<Reason> {
    let mut out = Vec::new();
    if e.subvolumes {
        out.push(match &e.last_reset {
            LastReset::NotChecked(why) => {
                reason("last-reset", State::Unknown, format!("not checked: {why}"))
            }
            LastReset::None => reason(
                "last-reset",
                State::Problem,
                "no reset recorded (no state file in the snapshot directory): the root is not being reset",
            ),
            LastReset::Recorded {
                phase: "done",
                snapshot,
                time,
            } => {
                let when = time.map(|t| format!(" at {t}")).unwrap_or_default();
                let what = if snapshot.is_empty() {
                    "created a fresh root (there was none to keep)".to_string()
                } else {
                    format!("done, old root in {snapshot}")
                };
                reason("last-reset", State::Ok, format!("{what}{when}"))
            }
            LastReset::Recorded {
                phase, snapshot, ..
            } => reason(
                "last-reset",
                State::Problem,
                format!(
                    "interrupted while in phase {phase} (snapshot {snapshot}): the next `imperm reset` completes it"
                ),
            ),
        });
        out.push(match &e.snapshots {
            SnapshotsFact::NotChecked(why) => {
                reason("snapshots", State::Unknown, format!("not checked: {why}"))
            }
            SnapshotsFact::Surveyed {
                count: n,
                newest,
                oldest,
                problem,
            } => {
                let show = |s: &Option<SnapshotFact>| {
                    s.as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_else(|| "none".into())
                };
                let detail = format!(
                    "{}, newest {}, oldest {}; space not measured (btrfs tells a snapshot's own space only with quotas on)",
                    count(*n, "snapshot", "snapshots"),
                    show(newest),
                    show(oldest)
                );
                match problem {
                    Some(p) => reason("snapshots", State::Problem, format!("{detail}; {p}")),
                    None => reason("snapshots", State::Ok, detail),
                }
            }
        });
        out.push(match &e.gc_timer {
            Some(link) => reason(
                "gc-timer",
                State::Ok,
                format!("imperm-gc.timer enabled ({})", escape(link)),
            ),
            None => reason(
                "gc-timer",
                State::Problem,
                "imperm-gc.timer is not enabled (no link in /etc/systemd/system/timers.target.wants): old roots are never deleted and fill the filesystem (services.imperm.gc.dates)",
            ),
        });
    }
    out.push(match &e.baseline {
        Ok((file, time)) => reason(
            "baseline",
            State::Ok,
            match time {
                Some(t) => format!("{} written {t}", escape(file)),
                None => escape(file),
            },
        ),
        Err(why) => reason(
            "baseline",
            State::Problem,
            format!("{why}: `check` compares with everything on the root (imperm-baseline.service records it at boot)"),
        ),
    });
    out.push(match &e.check {
        CheckFact::Skipped => reason("check", State::Unknown, "not run (--no-check)"),
        CheckFact::Failed(why) => reason("check", State::Unknown, format!("could not run: {why}")),
        CheckFact::Found {
            persist,
            review,
            ephemeral,
            generated,
            errors,
            first,
            baseline,
        } => {
            let since = if *baseline {
                "since the baseline"
            } else {
                "without a baseline"
            };
            let mut detail = format!(
                "{persist} to persist, {review} to review, {ephemeral} ephemeral, {generated} generated ({since})"
            );
            if !first.is_empty() {
                detail += &format!("; to persist: {}", named(first, |p| escape(p)));
            }
            if *errors > 0 {
                detail += &format!("; {} could not be read", count(*errors, "path", "paths"));
            }
            let state = if *persist > 0 || *errors > 0 {
                State::Problem
            } else {
                State::Ok
            };
            let mut r = reason("check", state, detail);
            if *persist > 0 {
                r.detail += " (see `imperm check`)";
            }
            r
        }
    });
    out
}

/// Where the storage keeps `path` (as seen from the host's `/`).
pub fn in_storage(storage: &Path, path: &Path) -> PathBuf {
    storage.join(path.strip_prefix("/").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, live: Presence, stored: Presence) -> EntryFact {
        EntryFact {
            path: PathBuf::from(path),
            kind: Kind::Directory,
            storage: PathBuf::from("/persist"),
            live,
            stored,
            mounted: false,
            linked: false,
            record: Verification::Verified("2026-01-15T06:30:00Z".parse().unwrap()),
            hidden: None,
        }
    }

    fn checked(root: Node, snaps: Node, free: u64, size: u64) -> LayoutFact {
        LayoutFact::Checked(Layout {
            root_name: "@root".into(),
            root,
            snapshot_dir_name: "@snapshots".into(),
            snapshot_dir: snaps,
            blank: None,
            running_root: Some("/@root".into()),
            free,
            size,
        })
    }

    fn ready_facts() -> Facts {
        Facts {
            declared: Declared::Given,
            config: "/etc/imperm/config.toml".into(),
            lint: vec![],
            lint_mount_table: true,
            entries: vec![entry(
                "/var/lib/a",
                Presence::Directory,
                Presence::Directory,
            )],
            storages: vec![StorageFact {
                path: "/persist".into(),
                survives_reset: Some(true),
                where_: "btrfs mount at /persist".into(),
                needed_for_boot: Some(true),
            }],
            layout: checked(Node::Subvolume, Node::Directory, 10 << 30, 100 << 30),
            ephemeral: None,
        }
    }

    fn state_of(r: &Readiness, check: &str) -> Vec<State> {
        r.reasons
            .iter()
            .filter(|x| x.check == check)
            .map(|x| x.state)
            .collect()
    }

    #[test]
    fn entries_are_judged_by_presence_kind_and_mount() {
        use EntryState::*;
        use Presence::*;
        let cases: Vec<(EntryFact, EntryState)> = vec![
            (entry("/a", Directory, Directory), InStorage),
            (entry("/a", File, File), InStorage),
            (entry("/a", Symlink, Symlink), InStorage),
            (entry("/a", Directory, Absent), Missing),
            (entry("/a", File, Directory), KindDiffers),
            (entry("/a", Directory, Symlink), KindDiffers),
            (entry("/a", Absent, Absent), NotOnRoot),
            (entry("/a", Absent, Directory), NotOnRoot),
            (entry("/a", Unreadable("EACCES".into()), Absent), Unknown),
            (entry("/a", Directory, Unreadable("EACCES".into())), Unknown),
            (
                entry(
                    "/a",
                    Directory,
                    Presence::Blocked("a symlink on the way".into()),
                ),
                EntryState::Blocked,
            ),
            (
                EntryFact {
                    mounted: true,
                    ..entry("/a", Directory, Absent)
                },
                Mounted,
            ),
            (
                EntryFact {
                    linked: true,
                    ..entry("/a", Symlink, File)
                },
                Mounted,
            ),
            (
                EntryFact {
                    mounted: true,
                    hidden: Some((2, 10)),
                    ..entry("/a", Directory, Directory)
                },
                EntryState::Hidden,
            ),
        ];
        for (fact, want) in cases {
            assert_eq!(entry_state(&fact).0, want, "{fact:?}");
        }
        let missing = entry_state(&entry("/var/lib/a", Directory, Absent)).1;
        assert_eq!(missing, "not in the storage (/persist/var/lib/a is absent)");
        let verified = entry("/a", File, File);
        assert_eq!(entry_state(&verified).1, "verified 2026-01-15T06:30:00Z");
        let at: Timestamp = "2026-01-15T06:30:00Z".parse().unwrap();
        let records = [
            (Verification::None, Unverified, "not verified by migrate"),
            (
                Verification::Unreadable("EACCES".into()),
                Unverified,
                "not verified: EACCES",
            ),
            (
                Verification::LiveChanged(at),
                Changed,
                "changed on the root since migrate verified its copy at 2026-01-15T06:30:00Z",
            ),
            (
                Verification::CopyChanged(at),
                Changed,
                "the storage's copy changed since migrate verified it at 2026-01-15T06:30:00Z (/persist/a holds it)",
            ),
        ];
        for (record, state, words) in records {
            let fact = EntryFact {
                record,
                ..entry("/a", File, File)
            };
            let (got, why) = entry_state(&fact);
            assert_eq!(got, state, "{fact:?}");
            assert!(why.contains(words), "{why:?} lacks {words:?}");
        }
    }

    #[test]
    fn only_verified_copies_make_the_entries_ready() {
        let at: Timestamp = "2026-01-15T06:30:00Z".parse().unwrap();
        let cases = [
            (
                Verification::Verified(at),
                State::Ok,
                "1 verified by migrate",
            ),
            (
                Verification::None,
                State::Unknown,
                "in the storage, not verified: /var/lib/a (`imperm migrate` compares and records them)",
            ),
            (
                Verification::LiveChanged(at),
                State::Problem,
                "changed since migrate verified them: /var/lib/a (changed on the root since",
            ),
            (
                Verification::CopyChanged(at),
                State::Problem,
                "changed since migrate verified them",
            ),
        ];
        for (record, state, words) in cases {
            let mut f = ready_facts();
            f.entries[0].record = record;
            let r = decide(&f);
            let entries = r.reasons.iter().find(|x| x.check == "entries").unwrap();
            assert_eq!(entries.state, state, "{}", entries.detail);
            assert!(
                entries.detail.contains(words),
                "{:?} lacks {words:?}",
                entries.detail
            );
            assert_eq!(r.ready, state == State::Ok);
        }
    }

    #[test]
    fn every_fact_flips_its_own_reason_and_the_verdict() {
        let base = decide(&ready_facts());
        assert!(base.ready, "{base:#?}");
        assert_eq!(base.headline(), "ready for the first ephemeral boot");
        type Change = fn(&mut Facts);
        let cases: Vec<(&str, Change, &str, State)> = vec![
            (
                "template",
                |f| f.declared = Declared::Template,
                "config",
                State::Problem,
            ),
            (
                "lint finding",
                |f| {
                    f.lint.push(LintFact {
                        rule: "duplicate",
                        path: "/var/log".into(),
                    })
                },
                "lint",
                State::Problem,
            ),
            (
                "missing entry",
                |f| f.entries[0].stored = Presence::Absent,
                "entries",
                State::Problem,
            ),
            (
                "entry of another kind",
                |f| f.entries[0].stored = Presence::File,
                "entries",
                State::Problem,
            ),
            (
                "a symlink on the way in the storage",
                |f| f.entries[0].stored = Presence::Blocked("a symlink on the way".into()),
                "entries",
                State::Problem,
            ),
            (
                "unreadable entry",
                |f| f.entries[0].live = Presence::Unreadable("EACCES".into()),
                "entries",
                State::Unknown,
            ),
            (
                "storage on the root",
                |f| f.storages[0].survives_reset = Some(false),
                "storage",
                State::Problem,
            ),
            (
                "no mount table",
                |f| f.storages[0].survives_reset = None,
                "storage",
                State::Unknown,
            ),
            (
                "needed for boot unknown",
                |f| f.storages[0].needed_for_boot = None,
                "needed-for-boot",
                State::Unknown,
            ),
            (
                "not needed for boot",
                |f| f.storages[0].needed_for_boot = Some(false),
                "needed-for-boot",
                State::Problem,
            ),
            (
                "no [filesystem]",
                |f| f.layout = LayoutFact::NotConfigured,
                "layout",
                State::Problem,
            ),
            (
                "no root subvolume",
                |f| f.layout = checked(Node::Missing, Node::Directory, 10 << 30, 100 << 30),
                "layout",
                State::Problem,
            ),
            (
                "root a plain directory",
                |f| f.layout = checked(Node::Directory, Node::Directory, 10 << 30, 100 << 30),
                "layout",
                State::Problem,
            ),
            (
                "snapshot dir a file",
                |f| f.layout = checked(Node::Subvolume, Node::Other, 10 << 30, 100 << 30),
                "layout",
                State::Problem,
            ),
            (
                "running root elsewhere",
                |f| {
                    if let LayoutFact::Checked(l) = &mut f.layout {
                        l.running_root = Some("/".into());
                    }
                },
                "layout",
                State::Problem,
            ),
            (
                "little space",
                |f| f.layout = checked(Node::Subvolume, Node::Directory, 900 << 20, 100 << 30),
                "free-space",
                State::Problem,
            ),
        ];
        for (label, change, check, want) in cases {
            let mut facts = ready_facts();
            change(&mut facts);
            let r = decide(&facts);
            assert!(state_of(&r, check).contains(&want), "{label}: {r:#?}");
            assert!(!r.ready, "{label}");
            let others_ok = r
                .reasons
                .iter()
                .filter(|x| x.check != check)
                .all(|x| x.state == State::Ok);
            assert!(others_ok, "{label}: only {check} changes: {r:#?}");
        }
        // As a user the top level is not looked at: neither its layout nor its space.
        let mut facts = ready_facts();
        facts.layout = LayoutFact::NotChecked("needs root".into());
        let r = decide(&facts);
        assert_eq!(state_of(&r, "layout"), vec![State::Unknown]);
        assert_eq!(state_of(&r, "free-space"), vec![State::Unknown]);
        assert_eq!((r.ready, r.problems, r.unknown), (false, 0, 2));
    }

    #[test]
    fn a_missing_snapshot_directory_is_made_by_the_first_reset() {
        let mut f = ready_facts();
        f.layout = checked(Node::Subvolume, Node::Missing, 10 << 30, 100 << 30);
        let r = decide(&f);
        assert!(r.ready, "{r:#?}");
        assert!(
            r.reasons[r.reasons.len() - 2]
                .detail
                .contains("the first reset creates it")
        );
    }

    #[test]
    fn the_free_space_threshold_is_the_smaller_of_a_gib_and_a_tenth() {
        for (size, want) in [
            (100 << 30, 1 << 30),
            (5 << 30, (5u64 << 30) / 10),
            (256 << 20, (256u64 << 20) / 10),
            (0, 0),
        ] {
            assert_eq!(free_space_threshold(size), want, "{size}");
        }
        let at = |free| {
            let mut f = ready_facts();
            f.layout = checked(Node::Subvolume, Node::Directory, free, 100 << 30);
            decide(&f).ready
        };
        assert!(at(1 << 30));
        assert!(!at((1 << 30) - 1));
    }

    fn ephemeral() -> EphemeralFacts {
        EphemeralFacts {
            last_reset: LastReset::Recorded {
                phase: "done",
                snapshot: "20260115T063000Z".into(),
                time: Some("2026-01-15T06:30:00Z".parse().unwrap()),
            },
            snapshots: SnapshotsFact::Surveyed {
                count: 2,
                newest: Some(SnapshotFact {
                    name: "20260115T063000Z".into(),
                    time: None,
                }),
                oldest: Some(SnapshotFact {
                    name: "20260114T063000Z".into(),
                    time: None,
                }),
                problem: None,
            },
            subvolumes: true,
            gc_timer: Some("/etc/systemd/system/timers.target.wants/imperm-gc.timer".into()),
            baseline: Ok(("/run/imperm/baseline".into(), None)),
            check: CheckFact::Found {
                persist: 0,
                review: 1,
                ephemeral: 3,
                generated: 9,
                errors: 0,
                first: vec![],
                baseline: true,
            },
        }
    }

    #[test]
    fn an_ephemeral_host_adds_its_own_reasons() {
        let mut f = ready_facts();
        f.ephemeral = Some(ephemeral());
        let r = decide(&f);
        assert!(r.ready, "{r:#?}");
        assert!(r.ephemeral);
        assert_eq!(
            r.headline(),
            "ready: the root is ephemeral and nothing needs action"
        );
        let checks: Vec<&str> = r.reasons.iter().map(|x| x.check).collect();
        for c in ["last-reset", "snapshots", "gc-timer", "baseline", "check"] {
            assert!(checks.contains(&c), "{c}: {checks:?}");
        }
        type Change = fn(&mut EphemeralFacts);
        let cases: Vec<(&str, Change, &str, State)> = vec![
            (
                "no reset",
                |e| e.last_reset = LastReset::None,
                "last-reset",
                State::Problem,
            ),
            (
                "interrupted",
                |e| {
                    e.last_reset = LastReset::Recorded {
                        phase: "replace",
                        snapshot: "x".into(),
                        time: None,
                    }
                },
                "last-reset",
                State::Problem,
            ),
            (
                "as a user",
                |e| e.last_reset = LastReset::NotChecked("needs root".into()),
                "last-reset",
                State::Unknown,
            ),
            (
                "gc problem",
                |e| {
                    e.snapshots = SnapshotsFact::Surveyed {
                        count: 1,
                        newest: None,
                        oldest: None,
                        problem: Some("partly deleted".into()),
                    }
                },
                "snapshots",
                State::Problem,
            ),
            (
                "no timer",
                |e| e.gc_timer = None,
                "gc-timer",
                State::Problem,
            ),
            (
                "no baseline",
                |e| e.baseline = Err("no /run/imperm/baseline".into()),
                "baseline",
                State::Problem,
            ),
            (
                "--no-check",
                |e| e.check = CheckFact::Skipped,
                "check",
                State::Unknown,
            ),
            (
                "to persist",
                |e| {
                    e.check = CheckFact::Found {
                        persist: 2,
                        review: 0,
                        ephemeral: 0,
                        generated: 0,
                        errors: 0,
                        first: vec!["/var/lib/x".into()],
                        baseline: true,
                    }
                },
                "check",
                State::Problem,
            ),
            (
                "unreadable",
                |e| {
                    e.check = CheckFact::Found {
                        persist: 0,
                        review: 0,
                        ephemeral: 0,
                        generated: 0,
                        errors: 1,
                        first: vec![],
                        baseline: true,
                    }
                },
                "check",
                State::Problem,
            ),
        ];
        for (label, change, check, want) in cases {
            let mut e = ephemeral();
            change(&mut e);
            let mut facts = ready_facts();
            facts.ephemeral = Some(e);
            let r = decide(&facts);
            assert_eq!(state_of(&r, check), vec![want], "{label}: {r:#?}");
            assert!(!r.ready, "{label}");
        }
        // A tmpfs root has no reset, snapshots or gc.
        let mut e = ephemeral();
        e.subvolumes = false;
        e.last_reset = LastReset::None;
        e.gc_timer = None;
        let mut facts = ready_facts();
        facts.layout = LayoutFact::Tmpfs;
        facts.ephemeral = Some(e);
        let r = decide(&facts);
        assert!(r.ready, "{r:#?}");
        assert!(r.reasons.iter().all(|x| x.check != "gc-timer"));
    }

    #[test]
    fn the_headline_counts_problems_and_what_was_not_checked() {
        let mut f = ready_facts();
        f.storages[0].needed_for_boot = None;
        assert_eq!(
            decide(&f).headline(),
            "not known to be ready: no problems, 1 reason not checked"
        );
        f.entries[0].stored = Presence::Absent;
        assert_eq!(
            decide(&f).headline(),
            "not ready: 1 problem, 1 reason not checked"
        );
        f.storages[0].needed_for_boot = Some(true);
        f.declared = Declared::Template;
        assert_eq!(decide(&f).headline(), "not ready: 2 problems");
    }

    #[test]
    fn entries_kept_by_a_mount_or_a_link_are_counted_apart() {
        let mut f = ready_facts();
        f.entries = vec![
            EntryFact {
                mounted: true,
                ..entry("/a", Presence::Directory, Presence::Directory)
            },
            EntryFact {
                linked: true,
                ..entry("/b", Presence::Symlink, Presence::File)
            },
            entry("/c", Presence::File, Presence::File),
        ];
        let r = decide(&f);
        assert_eq!(
            r.reasons[2].detail,
            "3 of 3 declared entries on the root in the storage (1 bind-mounted, 1 linked, 1 verified by migrate)"
        );
    }

    #[test]
    fn reasons_name_the_first_few_paths() {
        let mut f = ready_facts();
        f.entries = (0..5)
            .map(|i| {
                entry(
                    &format!("/var/lib/s{i}"),
                    Presence::Directory,
                    Presence::Absent,
                )
            })
            .chain([entry("/var/lib/gone", Presence::Absent, Presence::Absent)])
            .collect();
        let r = decide(&f);
        let entries = r.reasons.iter().find(|x| x.check == "entries").unwrap();
        assert_eq!(
            entries.detail,
            "0 of 5 declared entries on the root in the storage; not in the storage: /var/lib/s0, /var/lib/s1, /var/lib/s2 and 2 more (`imperm migrate` copies them); 1 not on the root (nothing to keep)"
        );
    }
}
