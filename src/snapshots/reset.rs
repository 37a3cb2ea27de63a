//! The boot-time root reset: snapshot the root subvolume (with everything nested in it)
//! read-only into the snapshot directory, verify the snapshot, delete the old root, and
//! create a fresh one (empty, or a snapshot of the blank subvolume).
//!
//! Crash safety comes from a small state file in the snapshot directory, written durably
//! (temporary file, fsync, rename) *before* each phase:
//!
//! | state on disk            | meaning                                  | a re-run…                                   |
//! |--------------------------|------------------------------------------|---------------------------------------------|
//! | none, or `done`          | no reset in progress                     | starts a new reset                          |
//! | `snapshot`, name N       | N may exist and be incomplete            | deletes N if it is evidently ours, and takes it again; else leaves it and takes a free name |
//! | `replace`, N, old root id| N is complete and verified               | deletes the old root if still there (N checked again: taken of it), creates the new one |
//!
//! So at every instant the old root's content is in the root, in the snapshot, or in both,
//! and a re-run always ends with exactly one root and one snapshot of the old root. An old
//! root the filesystem will not delete (ENOTEMPTY that persists: bcachefs after a cut in a
//! nested subvolume's destroy) is renamed aside in the `replace` phase instead (see
//! [`delete_old_root`]), which a re-run sees as a deleted root.
//!
//! The state file is believed only as far as the filesystem confirms it: a resumed reset
//! deletes nothing a stale or forged state names unless it is evidently the reset's own
//! (see [`own_partial`] and [`snapshot::taken_of`]).

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, FsError};
use crate::filesystem::backend::{Backend, Kind, describe};
use crate::filesystem::toplevel::TopLevel;
use crate::paths::escape;
use crate::snapshots::snapshot::{self, Log};

/// The state file's name in the snapshot directory (a dot-file: never a snapshot name).
pub const STATE_FILE: &str = ".imperm-reset.json";

/// Environment variable naming a point at which `reset` aborts, for the crash tests.
pub const FAILPOINT_ENV: &str = "IMPERM_FAILPOINT";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Snapshot,
    Replace,
    Done,
}

/// What the state file records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub phase: Phase,
    pub snapshot: String,
    /// The id of the root that is being replaced (`replace`).
    #[serde(default)]
    pub old_root: Option<u64>,
    /// The id of the snapshot verified to hold it (`replace`): the same subvolume is
    /// looked for on resume, not only the same name.
    #[serde(default)]
    pub snapshot_id: Option<u64>,
    /// The fresh root's id and generation (`done`), to recognise an untouched root.
    #[serde(default)]
    pub new_root: Option<u64>,
    #[serde(default)]
    pub generation: Option<u64>,
}

/// Where things are, relative to the top level.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
    pub snapshot_dir: PathBuf,
    pub blank: Option<PathBuf>,
}

impl Layout {
    fn state_file(&self) -> PathBuf {
        self.snapshot_dir.join(STATE_FILE)
    }
}

/// What a reset did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The old root went into a snapshot and a fresh root replaced it.
    Reset,
    /// There was no root: a fresh one was created.
    CreatedRoot,
    /// The root is still the fresh one a previous reset made: nothing to do.
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub action: Action,
    /// The snapshot holding the old root, when one was taken.
    pub snapshot: Option<String>,
    /// Whether an interrupted reset was completed.
    pub resumed: bool,
}

/// The most imperm reads of a state file it keeps in the snapshot directory: it writes a
/// few hundred bytes.
pub const MAX_STATE_BYTES: u64 = 64 << 10;

/// Reads the state file, if any.
pub fn read_state(top: &TopLevel, layout: &Layout) -> Result<Option<State>, Error> {
    read_json(top, &layout.state_file(), "reset state", State::check)
}

/// Reads one of imperm's JSON state files below the top level, if it exists: a regular
/// file (never waited on: see [`TopLevel::read_file`]) that parses and passes `check`.
/// Anything else stops the caller with one line naming the file.
pub fn read_json<T: serde::de::DeserializeOwned>(
    top: &TopLevel,
    path: &Path,
    what: &str,
    check: fn(&T) -> Result<(), String>,
) -> Result<Option<T>, Error> {
    let unusable = |why: String| {
        Error::Usage(format!(
            "{}: unreadable {what} ({why}); inspect the snapshot directory and remove the file to go on",
            top.name(path)
        ))
    };
    let bytes = match top.read_file(path, MAX_STATE_BYTES) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::FileTooLarge
            ) =>
        {
            return Err(unusable(e.to_string()));
        }
        Err(e) => return Err(FsError::new("read", path, e).into()),
    };
    let value: T = serde_json::from_slice(&bytes).map_err(|e| unusable(e.to_string()))?;
    check(&value).map_err(unusable)?;
    Ok(Some(value))
}

impl State {
    /// The snapshot must be a name a reset gives (a resumed reset may delete it: `..`, a
    /// path or an empty name would make that another subvolume, or the whole directory);
    /// only a finished reset may name none.
    fn check(&self) -> Result<(), String> {
        let name = &self.snapshot;
        if name.is_empty() {
            return match self.phase {
                Phase::Done => Ok(()),
                _ => Err("an unfinished reset names no snapshot".into()),
            };
        }
        match snapshot::parse_name(name, &jiff::tz::TimeZone::UTC) {
            Some((_, snapshot::NameStyle::Utc)) => Ok(()),
            _ => Err(format!(
                "{} is not a snapshot name a reset gives",
                crate::paths::shown(name)
            )),
        }
    }
}

fn write_state(top: &TopLevel, layout: &Layout, state: &State) -> Result<(), Error> {
    let path = layout.state_file();
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    top.write_file_atomic(&path, &json)
        .map_err(|e| FsError::new("write", &path, e).into())
}

/// Aborts (as kill -9 would end it) when the failpoint `name` is set, for the crash tests;
/// with `name:hang`, stops there for good instead, for the VM tests' power cuts: an abort
/// ends the process's private mount namespace, and that unmount writes out what a power
/// cut would lose.
pub(crate) fn failpoint(name: &str, log: Log) {
    let Ok(set) = std::env::var(FAILPOINT_ENV) else {
        return;
    };
    if set == name {
        log(format!("failpoint {name}: aborting"));
        std::process::abort();
    }
    if set.strip_suffix(":hang") == Some(name) {
        log(format!("failpoint {name}: hanging"));
        loop {
            std::thread::park();
        }
    }
}

/// Every check that can refuse, done before anything changes.
fn preconditions(backend: &dyn Backend, top: &TopLevel, layout: &Layout) -> Result<(), Error> {
    let refuse = |what: String| Err(Error::Usage(format!("{what}; nothing was done")));
    // Again here, for callers of the library that did not go through the configuration.
    if let Err(e) =
        crate::config::check_layout(&layout.root, &layout.snapshot_dir, layout.blank.as_deref())
    {
        return refuse(format!("{} {}", e.keys[0].noun(), e.what));
    }
    if let Some(at) = crate::filesystem::toplevel::mounted_at(&top.mounts(), &layout.root) {
        return refuse(format!(
            "the root subvolume {} is mounted at {}: a reset replaces it before it is mounted (in the initrd)",
            escape(&layout.root),
            escape(&at)
        ));
    }
    match backend.kind(top, &layout.root)? {
        Kind::Missing | Kind::Subvolume => {}
        other => {
            return refuse(format!(
                "{} is not a subvolume ({}); imperm only replaces a root subvolume",
                top.name(&layout.root),
                describe(other)
            ));
        }
    }
    match backend.kind(top, &layout.snapshot_dir)? {
        Kind::Missing | Kind::Subvolume | Kind::Directory => {}
        other => {
            return refuse(format!(
                "snapshot directory {} is {}",
                top.name(&layout.snapshot_dir),
                describe(other)
            ));
        }
    }
    if let Some(blank) = &layout.blank {
        let kind = backend.kind(top, blank)?;
        if kind != Kind::Subvolume {
            return refuse(format!(
                "blank snapshot {} is not a subvolume ({})",
                top.name(blank),
                describe(kind)
            ));
        }
    }
    Ok(())
}

/// Resets the root. `now` names the snapshot.
pub fn reset(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    now: Timestamp,
    log: Log,
) -> Result<Outcome, Error> {
    preconditions(backend, top, layout)?;
    top.lock()?;
    // Commit whatever is pending, so generations compare what is really on disk.
    top.sync()
        .map_err(|e| FsError::new("sync", top.path(), e))?;
    let state = read_state(top, layout)?;
    let root_exists = backend.kind(top, &layout.root)? == Kind::Subvolume;
    match state {
        Some(State {
            phase: Phase::Snapshot,
            snapshot: name,
            ..
        }) => {
            log(format!(
                "resuming an interrupted reset: snapshot {name} was being taken"
            ));
            let snap = layout.snapshot_dir.join(&name);
            // The old root is still whole in this phase, so the snapshot can be taken
            // under any name: its own if it is free or evidently ours (a partial snapshot
            // of this root), else the next free one, leaving whatever has the name alone.
            let name = match backend.kind(top, &snap)? {
                Kind::Missing => name,
                kind => match own_partial(backend, top, layout, &snap, kind, root_exists) {
                    Ok(()) => {
                        log(format!("deleting {} to take it again", top.name(&snap)));
                        snapshot::delete_tree(backend, top, &snap)?;
                        name
                    }
                    Err(why)
                        if root_exists && kind == Kind::Subvolume && !backend.has_lineage() =>
                    {
                        // Taken read-only in one step, it is whole or absent; whole and
                        // holding what the root holds, it is this reset's, finished before
                        // the power went: the old root is in it, and another snapshot of
                        // it would be one too many.
                        if complete_copy(backend, top, layout, &snap).is_ok() {
                            log(format!(
                                "{} holds the root as it is: the snapshot was taken; going on from there",
                                top.name(&snap)
                            ));
                            return replace_with(backend, top, layout, &name, true, log);
                        }
                        let free = snapshot::free_name(top, &layout.snapshot_dir, now)?;
                        log(format!(
                            "{} {why}, and does not hold the root as it is: not this reset's, left alone; taking {free} instead",
                            top.name(&snap)
                        ));
                        free
                    }
                    Err(why) => {
                        let free = snapshot::free_name(top, &layout.snapshot_dir, now)?;
                        log(format!(
                            "{} {why}: not this reset's, left alone; taking {free} instead",
                            top.name(&snap)
                        ));
                        free
                    }
                },
            };
            if !root_exists {
                return finish_new_root(
                    backend,
                    top,
                    layout,
                    &name,
                    true,
                    Action::CreatedRoot,
                    log,
                );
            }
            replace(backend, top, layout, &name, true, log)
        }
        Some(State {
            phase: Phase::Replace,
            snapshot: name,
            old_root,
            snapshot_id,
            ..
        }) => {
            log(format!(
                "resuming an interrupted reset: root was being replaced, old root in {name}"
            ));
            let snap = layout.snapshot_dir.join(&name);
            let refuse = |why: String| {
                Err(Error::Usage(format!(
                    "the reset state says {name} holds the old root, but {why}; nothing was done"
                )))
            };
            // It was verified against the old root before this phase was recorded. The
            // root may since be half deleted or already the new one, so what is checked
            // again is what still holds: the snapshot is the read-only subvolume recorded,
            // and, before the root is deleted, that it was taken of this root.
            if let Err(why) = complete_alone(backend, top, &snap) {
                return refuse(why);
            }
            if let Some(id) = snapshot_id {
                let now_id = backend.info(top, &snap)?.id;
                if now_id != id {
                    return refuse(format!(
                        "{} is not the snapshot the reset recorded (subvolume {id}; it is {now_id} now)",
                        top.name(&snap)
                    ));
                }
            }
            if root_exists && Some(backend.info(top, &layout.root)?.id) == old_root {
                if let Err(why) = snapshot::taken_of(backend, top, &layout.root, &snap) {
                    return refuse(why);
                }
                log(format!("deleting the old root {}", top.name(&layout.root)));
                delete_old_root(backend, top, layout, &name, log)?;
                failpoint("root-deleted", log);
            }
            finish_new_root(backend, top, layout, &name, true, Action::Reset, log)
        }
        done => {
            if !root_exists {
                log(format!(
                    "no root subvolume {}: creating it",
                    top.name(&layout.root)
                ));
                return finish_new_root(backend, top, layout, "", false, Action::CreatedRoot, log);
            }
            if untouched(backend, top, layout, done.as_ref())? {
                log(format!(
                    "{} is still the fresh root of the last reset: nothing to do",
                    top.name(&layout.root)
                ));
                return Ok(Outcome {
                    action: Action::Unchanged,
                    snapshot: None,
                    resumed: false,
                });
            }
            // A clock that did not move since the last boot (no real-time clock) gives a
            // name that is taken: a suffix makes it unique, and sorts it after.
            let name = snapshot::free_name(top, &layout.snapshot_dir, now)?;
            if backend.kind(top, &layout.snapshot_dir)? == Kind::Missing {
                log(format!(
                    "creating snapshot directory {}",
                    top.name(&layout.snapshot_dir)
                ));
                backend.create(top, &layout.snapshot_dir)?;
            }
            replace(backend, top, layout, &name, false, log)
        }
    }
}

/// Whether `snap` (of `kind`), found under the name a reset in its `snapshot` phase
/// recorded, is evidently that reset's own partial snapshot, which it may delete and take
/// again; the error says why not. It must be a subvolume taken of this root (with each
/// nested one taken of the root's subvolume at its place), not the blank snapshot, nothing
/// of it mounted. Where snapshots record no lineage (bcachefs) nothing is evidently the
/// reset's own: such a snapshot is taken read-only in one step, so a resumed reset never
/// needs to delete one, and it takes a free name instead.
fn own_partial(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    snap: &Path,
    kind: Kind,
    root_exists: bool,
) -> Result<(), String> {
    if kind != Kind::Subvolume {
        return Err(format!("is {}", describe(kind)));
    }
    match &layout.blank {
        Some(blank) if blank == snap => return Err("is the blank snapshot".into()),
        Some(blank) if blank.starts_with(snap) => {
            return Err("holds the blank snapshot".into());
        }
        _ => {}
    }
    if let Some(at) = crate::filesystem::toplevel::mounted_at(&top.mounts(), snap) {
        return Err(format!("is mounted at {}", escape(&at)));
    }
    if !backend.has_lineage() {
        return Err(format!(
            "cannot be told to be a snapshot of the root ({} records no lineage)",
            backend.fs_type().as_str()
        ));
    }
    if !root_exists {
        return Err("cannot be told to be a snapshot of the root: there is no root".into());
    }
    snapshot::partial_of(backend, top, &layout.root, snap)
}

/// Where snapshots record no lineage: whether `snap`, found under the name a reset in its
/// `snapshot` phase recorded, is that reset's whole snapshot of the root: a read-only
/// subvolume, not the blank snapshot (nor holding it), nothing of it mounted, with every
/// entry of the root as it is now (nothing writes the root between a failed reset and the
/// next one).
fn complete_copy(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    snap: &Path,
) -> Result<(), String> {
    if let Some(blank) = &layout.blank {
        if blank == snap || blank.starts_with(snap) {
            return Err("is or holds the blank snapshot".into());
        }
    }
    if let Some(at) = crate::filesystem::toplevel::mounted_at(&top.mounts(), snap) {
        return Err(format!("is mounted at {}", escape(&at)));
    }
    complete_alone(backend, top, snap)?;
    snapshot::same_tree(backend, top, &layout.root, snap)
}

/// A snapshot on its own can still be checked to be a read-only subvolume.
fn complete_alone(backend: &dyn Backend, top: &TopLevel, snap: &Path) -> Result<(), String> {
    match backend.kind(top, snap).map_err(|e| e.to_string())? {
        Kind::Subvolume => {}
        kind => return Err(format!("{} is {}", top.name(snap), describe(kind))),
    }
    match backend.is_readonly(top, snap).map_err(|e| e.to_string())? {
        true => Ok(()),
        false => Err(format!("{} is not read-only", top.name(snap))),
    }
}

/// Whether the root is exactly the fresh root the last reset created, so resetting it
/// again would only add a snapshot of nothing.
fn untouched(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    state: Option<&State>,
) -> Result<bool, Error> {
    let info = backend.info(top, &layout.root)?;
    if let Some(State {
        phase: Phase::Done,
        new_root: Some(id),
        generation: Some(generation),
        ..
    }) = state
    {
        if info.id == *id && info.generation == Some(*generation) {
            return Ok(true);
        }
    }
    // Without a generation to compare (bcachefs), only an empty root is known untouched.
    if layout.blank.is_none() && info.generation.is_none() {
        let entries = top
            .list_dir(&layout.root)
            .map_err(|e| FsError::new("list", &layout.root, e))?;
        return Ok(entries.is_empty());
    }
    Ok(false)
}

/// Snapshot, verify, delete the old root, create the new one.
fn replace(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    name: &str,
    resumed: bool,
    log: Log,
) -> Result<Outcome, Error> {
    let snap = layout.snapshot_dir.join(name);
    write_state(
        top,
        layout,
        &State {
            phase: Phase::Snapshot,
            snapshot: name.to_string(),
            old_root: None,
            snapshot_id: None,
            new_root: None,
            generation: None,
        },
    )?;
    log(format!(
        "snapshotting {} to {}",
        top.name(&layout.root),
        top.name(&snap)
    ));
    snapshot::snapshot_tree(backend, top, &layout.root, &snap, log)?;
    failpoint("snapshot-taken", log);
    replace_with(backend, top, layout, name, resumed, log)
}

/// With snapshot `name` taken: verify it, delete the old root, create the new one.
fn replace_with(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    name: &str,
    resumed: bool,
    log: Log,
) -> Result<Outcome, Error> {
    let snap = layout.snapshot_dir.join(name);
    snapshot::verify(backend, top, &layout.root, &snap).map_err(|why| {
        Error::Usage(format!(
            "{why}; the old root was left in place (a re-run takes the snapshot again)"
        ))
    })?;
    let old_root = backend.info(top, &layout.root)?.id;
    let snapshot_id = backend.info(top, &snap)?.id;
    write_state(
        top,
        layout,
        &State {
            phase: Phase::Replace,
            snapshot: name.to_string(),
            old_root: Some(old_root),
            snapshot_id: Some(snapshot_id),
            new_root: None,
            generation: None,
        },
    )?;
    log(format!("deleting the old root {}", top.name(&layout.root)));
    delete_old_root(backend, top, layout, name, log)?;
    failpoint("root-deleted", log);
    finish_new_root(backend, top, layout, name, resumed, Action::Reset, log)
}

/// Deletes the old root, kept in snapshot `name`. Should the filesystem still refuse with
/// ENOTEMPTY after the backend's retries (bcachefs: a nested subvolume whose destroy a
/// power cut interrupted is unlinked, but still counted in its parent until a fsck or a
/// background pass finishes it; every later boot would fail here), what is left is set
/// aside beside the root under a name gc deletes ([`snapshot::dead_name`]) and the fresh
/// root is created all the same: a host must boot. Only when the state file on disk says
/// this reset's old root is in `name` (phase `replace`, verified before it was written).
/// A power cut after the rename resumes as one after the deletion: no root, create it.
fn delete_old_root(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    name: &str,
    log: Log,
) -> Result<(), Error> {
    let e = match snapshot::delete_tree(backend, top, &layout.root) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let stuck = matches!(&e, Error::Fs(f)
        if crate::filesystem::backend::errno(&f.source) == Some(libc::ENOTEMPTY));
    let recorded = matches!(
        read_state(top, layout),
        Ok(Some(State { phase: Phase::Replace, snapshot, .. })) if snapshot == name
    );
    let kept = recorded && complete_alone(backend, top, &layout.snapshot_dir.join(name)).is_ok();
    if !stuck || !kept || backend.kind(top, &layout.root)? != Kind::Subvolume {
        return Err(e);
    }
    let aside = snapshot::set_aside(top, &layout.root, name)?;
    log(format!(
        "cannot delete the old root {} ({}); its content is in snapshot {name}: set aside as {}, for gc to delete",
        top.name(&layout.root),
        top.locate(e),
        top.name(&aside)
    ));
    failpoint("root-set-aside", log);
    Ok(())
}

/// Creates the fresh root (unless a crash left it created) and records `done`, with the
/// snapshot `name` that holds the old root ("" when none was taken: `CreatedRoot`).
fn finish_new_root(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    name: &str,
    resumed: bool,
    action: Action,
    log: Log,
) -> Result<Outcome, Error> {
    if backend.kind(top, &layout.root)? == Kind::Missing {
        match &layout.blank {
            Some(blank) => {
                log(format!(
                    "creating {} from {}",
                    top.name(&layout.root),
                    top.name(blank)
                ));
                backend.snapshot(top, blank, &layout.root, false)?;
            }
            None => {
                log(format!("creating an empty {}", top.name(&layout.root)));
                backend.create(top, &layout.root)?;
            }
        }
        failpoint("root-created", log);
    }
    // Commit, so that the generation recorded below is the creation's own transaction and
    // any later write to the root shows as a newer one.
    top.sync()
        .map_err(|e| FsError::new("sync", top.path(), e))?;
    let info = backend.info(top, &layout.root)?;
    if backend.kind(top, &layout.snapshot_dir)? != Kind::Missing {
        write_state(
            top,
            layout,
            &State {
                phase: Phase::Done,
                snapshot: match action {
                    Action::Reset => name.to_string(),
                    Action::CreatedRoot | Action::Unchanged => String::new(),
                },
                old_root: None,
                snapshot_id: None,
                new_root: Some(info.id),
                generation: info.generation,
            },
        )?;
    }
    Ok(Outcome {
        snapshot: (action == Action::Reset).then(|| name.to_string()),
        action,
        resumed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_refuses_unknown_fields() {
        let state = State {
            phase: Phase::Replace,
            snapshot: "20250307T080000Z".into(),
            old_root: Some(256),
            snapshot_id: Some(262),
            new_root: None,
            generation: None,
        };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), state);
        assert!(
            serde_json::from_str::<State>(r#"{"phase":"done","snapshot":"x","extra":1}"#).is_err()
        );
    }

    /// A resumed reset deletes the snapshot its state names: only a plain name of the
    /// snapshot directory may be there.
    #[test]
    fn a_state_must_name_a_plain_snapshot() {
        let state = |phase, snapshot: &str| State {
            phase,
            snapshot: snapshot.into(),
            old_root: None,
            snapshot_id: None,
            new_root: None,
            generation: None,
        };
        for phase in [Phase::Snapshot, Phase::Replace, Phase::Done] {
            for bad in [
                "..",
                ".",
                "../@persist",
                "a/b",
                "/",
                ".hidden",
                "x\0y",
                // Plain names, but none a reset gives: a resumed reset must not delete them.
                "@persist",
                "manual-backup",
                "2025-03-07_09-00-00",
                "20250307T080000Z-0",
            ] {
                assert!(state(phase, bad).check().is_err(), "{phase:?} {bad:?}");
            }
            assert!(state(phase, "20260115T063000Z-1").check().is_ok());
        }
        assert!(state(Phase::Done, "").check().is_ok());
        assert!(state(Phase::Snapshot, "").check().is_err());
        assert!(state(Phase::Replace, "").check().is_err());
    }
}
