//! Old-root snapshots: their names (UTC, sortable, with a suffix when a frozen clock
//! repeats a time; and the legacy local-time names of the seed's laptop), surveying the
//! snapshot directory (what each entry is, what gc must never delete, which snapshot the
//! last reset took), and taking and deleting a snapshot together with the subvolumes
//! nested in it.
//!
//! gc records a deletion that makes a snapshot writable (to delete what is nested in it)
//! in `SNAPSHOT_DIR/.imperm-gc.json` before it changes anything, so that one killed or
//! failing half-way leaves a snapshot the next gc recognises and finishes, not a writable
//! subvolume nobody deletes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::error::{Error, FsError};
use crate::filesystem::backend::{Backend, Kind, SubvolumeInfo};
use crate::filesystem::toplevel::TopLevel;
use crate::paths::escape;
use crate::retention::{Candidate, Stamp};
use crate::snapshots::reset::{Layout, Phase, State};

/// The name format imperm gives snapshots: ISO 8601 basic, UTC (`20250307T080000Z`).
/// A second snapshot of the same second (a clock that did not move between two boots)
/// gets `-1`, the next `-2`, and so on: `20250307T080000Z-1`.
const NAME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// `bcache-impermanence`'s names, in local time (`2025-03-07_09-00-00`).
const LEGACY_FORMAT: &str = "%Y-%m-%d_%H-%M-%S";

/// The snapshot name for a moment, without a suffix.
pub fn name_for(time: Timestamp) -> String {
    name_with(Stamp::at(time))
}

/// The snapshot name for a stamp: the time, and `-SEQ` when the suffix is not 0.
pub fn name_with(stamp: Stamp) -> String {
    let base = stamp
        .time
        .to_zoned_datetime(TimeZone::UTC)
        .strftime(NAME_FORMAT)
        .to_string();
    match stamp.seq {
        0 => base,
        seq => format!("{base}-{seq}"),
    }
}

/// How a snapshot's name was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NameStyle {
    /// imperm's own UTC name.
    Utc,
    /// `YYYY-MM-DD_HH-MM-SS` in local time.
    Legacy,
}

/// The stamp a snapshot name stands for; `None` for a name imperm does not recognise
/// (such snapshots are listed but never deleted). Legacy names are read in `local`.
pub fn parse_name(name: &str, local: &TimeZone) -> Option<(Stamp, NameStyle)> {
    let strict = |format: &str, text: &str| {
        DateTime::strptime(format, text)
            .ok()
            // strptime accepts unpadded fields; only the exact rendering is ours.
            .filter(|dt| dt.strftime(format).to_string() == text)
    };
    let utc = |text: &str| {
        strict(NAME_FORMAT, text)
            .and_then(|dt| dt.to_zoned_datetime(TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    };
    if let Some(time) = utc(name) {
        return Some((Stamp { time, seq: 0 }, NameStyle::Utc));
    }
    if let Some((base, seq)) = name.rsplit_once('-') {
        // Exactly as `name_with` writes it: 1 or more, no sign, no leading zero.
        let canonical =
            !seq.is_empty() && !seq.starts_with('0') && seq.bytes().all(|b| b.is_ascii_digit());
        if let (true, Some(time)) = (canonical, utc(base)) {
            let seq: u32 = seq.parse().ok()?;
            return Some((Stamp { time, seq }, NameStyle::Utc));
        }
    }
    if let Some(dt) = strict(LEGACY_FORMAT, name) {
        return local
            .to_ambiguous_timestamp(dt)
            .compatible()
            .ok()
            .map(|t| (Stamp::at(t), NameStyle::Legacy));
    }
    None
}

/// The suffix for a new snapshot of `time` among `names` already in the directory: one
/// more than the highest suffix any name of the same second carries, so that a new
/// snapshot sorts after every earlier one of that second even when gc deleted some.
/// `None` when the suffixes are used up.
pub fn next_seq<'a>(names: impl IntoIterator<Item = &'a str>, time: Timestamp) -> Option<u32> {
    let base = parse_name(&name_for(time), &TimeZone::UTC)?.0.time;
    let mut next = Some(0);
    for name in names {
        if let Some((stamp, NameStyle::Utc)) = parse_name(name, &TimeZone::UTC) {
            if stamp.time == base {
                next = next.max(stamp.seq.checked_add(1));
                if stamp.seq == u32::MAX {
                    return None;
                }
            }
        }
    }
    next
}

/// A free name for a snapshot taken at `now` in `dir` (relative to the top level): the
/// time's name, or with the next suffix when that second already has a snapshot, or
/// anything else of that name (a file, a directory, a symlink: left alone).
pub fn free_name(top: &TopLevel, dir: &Path, now: Timestamp) -> Result<String, Error> {
    let names = match top.list_dir(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(FsError::new("list", dir, e).into()),
    };
    let names: Vec<String> = names
        .iter()
        .filter_map(|n| n.to_str().map(str::to_string))
        .collect();
    // Should the highest suffix be taken (a name planted to stop the boot), any free one
    // will do: the order within that second is then lost, the boot is not.
    let mut seq = next_seq(names.iter().map(String::as_str), now).unwrap_or(1);
    for _ in 0..=u32::MAX {
        let name = name_with(Stamp { time: now, seq });
        let rel = dir.join(&name);
        if top
            .node(&rel)
            .map_err(|e| FsError::new("inspect", &rel, e))?
            == crate::filesystem::toplevel::Node::Missing
        {
            return Ok(name);
        }
        seq = seq.checked_add(1).unwrap_or(1);
    }
    Err(Error::Usage(format!(
        "no free snapshot name for {} in {}; nothing was done",
        name_for(now),
        escape(dir)
    )))
}

/// A snapshot named on the command line (`--from`, `--against`), in the escaped form
/// `snapshots ls` prints (`\xHH` for a backslash, a control character or a byte that is
/// not UTF-8; any other name as it is): the name in the directory, exactly. It must be one
/// plain name there.
pub fn given_name(raw: &str) -> Result<OsString, String> {
    let name = crate::paths::unescape(raw)
        .ok_or_else(|| {
            format!(
                "{} holds a `\\` that is not `\\xHH` (names are given as `snapshots ls` prints them)",
                crate::paths::shown(raw)
            )
        })?
        .into_os_string();
    let bytes = name.as_encoded_bytes();
    if bytes.is_empty()
        || bytes.contains(&b'/')
        || bytes.contains(&0)
        || name == "."
        || name == ".."
    {
        return Err(format!(
            "{} is not a snapshot's name",
            crate::paths::shown(raw)
        ));
    }
    Ok(name)
}

/// An entry of the snapshot directory: every subvolume, and whatever else carries a
/// snapshot's name (so that it can be reported, never deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// For display and JSON, in the one escaped form of paths in output (exact for any
    /// name; [`given_name`] reads it back).
    pub name: String,
    /// Exactly as in the directory.
    pub os_name: OsString,
    pub kind: Kind,
    pub time: Option<(Stamp, NameStyle)>,
    /// A read-only subvolume.
    pub readonly: bool,
}

impl Found {
    /// A read-only subvolume: what imperm's resets make and gc may delete.
    pub fn is_snapshot(&self) -> bool {
        self.kind == Kind::Subvolume && self.readonly
    }
}

/// The entries of `dir` (relative to the top level): every subvolume, and entries of
/// other kinds whose names are snapshot names (a stray directory or symlink of another
/// name is not listed). Dot-names are skipped: imperm's own state file, baseline and
/// temporary diff snapshots.
pub fn list(
    backend: &dyn Backend,
    top: &TopLevel,
    dir: &Path,
    local: &TimeZone,
) -> Result<Vec<Found>, Error> {
    let names = match top.list_dir(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FsError::new("list", dir, e).into()),
    };
    let mut found = Vec::new();
    for os_name in names {
        if os_name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let rel = dir.join(&os_name);
        let kind = backend.kind(top, &rel)?;
        let name = escape(Path::new(&os_name));
        let time = os_name.to_str().and_then(|n| parse_name(n, local));
        if kind != Kind::Subvolume && time.is_none() {
            continue;
        }
        let readonly = kind == Kind::Subvolume && backend.is_readonly(top, &rel)?;
        found.push(Found {
            name,
            os_name,
            kind,
            time,
            readonly,
        });
    }
    Ok(found)
}

/// The snapshot directory as every command sees it.
#[derive(Clone, Debug)]
pub struct Survey {
    pub found: Vec<Found>,
    /// For each entry, why gc must not treat it as an old root at all, and why it must
    /// keep it although it is one (see [`Candidate`]).
    pub candidates: Vec<Candidate>,
    /// Index into `found` of the last reset's snapshot.
    pub last_reset: Option<usize>,
    /// Whether the last reset recorded it (else it is the newest not in the future).
    pub recorded: bool,
    /// A state file (the reset's or gc's) could not be read: nothing is known of a
    /// pending reset, or of a deletion gc left half done.
    pub state_problem: Option<String>,
    /// gc's record of deletions under way, as read (empty when there is none).
    pub gc_record: GcState,
    /// Indexes into `found` of the snapshots the record names that an earlier gc made
    /// writable to delete, and left there (killed, or a deletion failed): still the same
    /// subvolume (id and uuid), still writable.
    pub half_deleted: Vec<usize>,
}

impl Survey {
    pub fn last_reset_name(&self) -> Option<&str> {
        self.last_reset.map(|i| self.found[i].name.as_str())
    }
}

/// Why a snapshot is neither an old root nor anything else gc must keep: gc began to
/// delete it, and finishes that.
pub const HALF_DELETED: &str = "partly deleted by an earlier gc";

/// What is in the snapshot directory: each entry, what gc must never delete and why, and
/// the last reset's snapshot. `local` reads legacy names; `now` tells the future apart.
pub fn survey(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    local: &TimeZone,
    now: Timestamp,
) -> Result<Survey, Error> {
    let found = list(backend, top, &layout.snapshot_dir, local)?;
    let mut state_problem = None;
    let state = match crate::snapshots::reset::read_state(top, layout) {
        Ok(state) => state,
        Err(e) => {
            state_problem = Some(top.locate(e).to_string());
            None
        }
    };
    let gc_record = match read_gc_state(top, layout) {
        Ok(record) => record.unwrap_or_default(),
        Err(e) => {
            state_problem.get_or_insert(top.locate(e).to_string());
            GcState::default()
        }
    };
    let mounts = if found.is_empty() {
        Vec::new()
    } else {
        top.mounts()
    };
    let mut candidates = Vec::with_capacity(found.len());
    for f in &found {
        let rel = layout.snapshot_dir.join(&f.os_name);
        let mut held = held(f, &rel, layout, state.as_ref());
        // Only an old root is looked into: what is held already is kept whatever it holds.
        if held.is_empty() {
            if let Some(why) = foreign_nested(backend, top, &rel, &[])? {
                held.push(why);
            }
        }
        candidates.push(Candidate {
            stamp: f.time.map(|(s, _)| s),
            held,
            protected: crate::filesystem::toplevel::mounted_at(&mounts, &rel)
                .map(|at| format!("mounted at {}", escape(&at)))
                .into_iter()
                .collect(),
            finish: None,
        });
    }
    let mut half_deleted = Vec::new();
    for d in &gc_record.deleting {
        let Some(i) = found.iter().position(|f| f.name == d.name) else {
            continue;
        };
        let rel = layout.snapshot_dir.join(&found[i].os_name);
        if found[i].kind != Kind::Subvolume || found[i].readonly || found[i].time.is_none() {
            continue;
        }
        let info = backend.info(top, &rel)?;
        // Gone, replaced, made writable by nothing of gc's, or (where snapshots record
        // lineage) not a snapshot at all: not this deletion.
        if !d.is(&info) || (backend.has_lineage() && info.parent_uuid.is_none()) {
            continue;
        }
        half_deleted.push(i);
        // Still only what a reset put there, read-only: gc may finish it.
        if candidates[i].held == ["read-write"] {
            match foreign_nested(backend, top, &rel, &d.opened)? {
                Some(why) => candidates[i].held.push(why),
                None => {
                    candidates[i].held.clear();
                    candidates[i].finish = Some(HALF_DELETED.into());
                }
            }
        }
    }
    let recorded_name = state.as_ref().and_then(recorded);
    let (last_reset, recorded) = last_reset(&found, &candidates, recorded_name, now);
    if let Some(i) = last_reset {
        candidates[i].protected.push("last reset".into());
    }
    Ok(Survey {
        found,
        candidates,
        last_reset,
        recorded,
        state_problem,
        gc_record,
        half_deleted,
    })
}

/// Why old-root snapshot `rel` holds something a reset did not put there, which deleting
/// it would lose along with it: a reset's snapshot holds only read-only snapshots of the
/// root's nested subvolumes, so a read-write subvolume, or (where snapshots record
/// lineage) one that is no snapshot, is someone's own. `None` when it holds nothing else.
/// Where the read-only flag is set only when a snapshot is taken (bcachefs), a read-only
/// snapshot cannot hold another subvolume at all: nothing to look for. `opened` are the
/// nested subvolumes a gc recorded before it made them writable (its own doing, not
/// someone's): those may be writable.
pub fn foreign_nested(
    backend: &dyn Backend,
    top: &TopLevel,
    rel: &Path,
    opened: &[Opened],
) -> Result<Option<String>, Error> {
    if !backend.can_set_readonly() {
        return Ok(None);
    }
    let mut stack = backend.nested(top, rel)?;
    while let Some(child) = stack.pop() {
        let inside = escape(child.strip_prefix(rel).unwrap_or(&child));
        let info = || backend.info(top, &child);
        if !backend.is_readonly(top, &child)?
            && (opened.is_empty() || !opened.contains(&Opened::of(&info()?)))
        {
            return Ok(Some(format!("holds read-write subvolume {inside}")));
        }
        if backend.has_lineage() && info()?.parent_uuid.is_none() {
            return Ok(Some(format!(
                "holds subvolume {inside}, which is not a snapshot"
            )));
        }
        stack.extend(backend.nested(top, &child)?);
    }
    Ok(None)
}

/// The snapshot the last reset recorded: only a finished reset that took one (a reset
/// that only created a missing root records none).
pub fn recorded(state: &State) -> Option<&str> {
    (state.phase == Phase::Done && !state.snapshot.is_empty()).then_some(state.snapshot.as_str())
}

/// Why entry `f` (at `rel`) is not an old-root snapshot gc may delete; empty when it is.
pub fn held(f: &Found, rel: &Path, layout: &Layout, state: Option<&State>) -> Vec<String> {
    let mut why = Vec::new();
    if f.kind != Kind::Subvolume {
        why.push(format!(
            "not a subvolume ({})",
            crate::filesystem::backend::describe(f.kind)
        ));
    }
    if rel == layout.root {
        why.push("root".into());
    } else if layout.root.starts_with(rel) {
        why.push("holds the root".into());
    }
    match &layout.blank {
        Some(blank) if blank == rel => why.push("blank snapshot".into()),
        Some(blank) if blank.starts_with(rel) => why.push("holds the blank snapshot".into()),
        _ => {}
    }
    if state.is_some_and(|s| s.phase != Phase::Done && s.snapshot == f.name) {
        why.push("pending reset".into());
    }
    if f.kind == Kind::Subvolume && !f.readonly {
        why.push("read-write".into());
    }
    why
}

/// "The last reset's snapshot", the one definition every command uses: the snapshot the
/// last reset recorded, if it is still an old-root snapshot; else the newest one whose
/// time is not after `now` (a snapshot dated in the future says nothing about the last
/// reset). Returns its index and whether it was recorded.
pub fn last_reset(
    found: &[Found],
    candidates: &[Candidate],
    recorded: Option<&str>,
    now: Timestamp,
) -> (Option<usize>, bool) {
    let eligible = |i: &usize| found[*i].is_snapshot() && candidates[*i].held.is_empty();
    if let Some(name) = recorded {
        if let Some(i) = (0..found.len())
            .filter(eligible)
            .find(|&i| found[i].name == name)
        {
            return (Some(i), true);
        }
    }
    let newest = (0..found.len())
        .filter(eligible)
        .filter_map(|i| found[i].time.map(|(s, _)| (s, i)))
        .filter(|(s, _)| s.time <= now)
        .max()
        .map(|(_, i)| i);
    (newest, false)
}

/// The old-root snapshot a command works with: `name`, or the last reset's snapshot
/// (the one the last reset recorded, else the newest not in the future: the definition
/// `snapshots ls` and `status` show). A name is given as `snapshots ls` prints it (the
/// escaped form of paths in output, so that any name can be given), and must be a plain
/// name in the snapshot directory, and a subvolume there. Returns the name in that form
/// and the snapshot's path relative to the top level.
pub fn old_root(
    backend: &dyn Backend,
    top: &TopLevel,
    fs: &crate::config::FilesystemConfig,
    name: Option<&str>,
    now: Timestamp,
) -> Result<(String, PathBuf), Error> {
    let name = match name {
        Some(name) => name.to_string(),
        None => last_reset_of(backend, top, fs, now)?.ok_or_else(|| {
            Error::Usage(format!("no snapshots in {}", top.name(&fs.snapshot_dir)))
        })?,
    };
    let os_name = given_name(&name)
        .map_err(|why| Error::Usage(format!("{why} in {}", escape(&fs.snapshot_dir))))?;
    let rel = fs.snapshot_dir.join(&os_name);
    if backend.kind(top, &rel).map_err(|e| top.locate(e.into()))? != Kind::Subvolume {
        return Err(Error::Usage(format!(
            "no snapshot {} in {} (see `imperm snapshots ls`)",
            crate::paths::quoted(Path::new(&os_name)),
            top.name(&fs.snapshot_dir)
        )));
    }
    Ok((escape(Path::new(&os_name)), rel))
}

/// The last reset's snapshot, as [`survey`] defines it.
fn last_reset_of(
    backend: &dyn Backend,
    top: &TopLevel,
    fs: &crate::config::FilesystemConfig,
    now: Timestamp,
) -> Result<Option<String>, Error> {
    let layout = Layout {
        root: fs.root_subvolume.clone(),
        snapshot_dir: fs.snapshot_dir.clone(),
        blank: fs.blank_snapshot.clone(),
    };
    let survey =
        survey(backend, top, &layout, &TimeZone::system(), now).map_err(|e| top.locate(e))?;
    if let Some(problem) = &survey.state_problem {
        eprintln!("imperm: warning: {problem}; using the newest snapshot");
    }
    Ok(survey.last_reset_name().map(str::to_string))
}

/// What a path was in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Existed {
    pub kind: crate::classify::EntryKind,
    /// For a directory, the bytes of every file below it.
    pub bytes: u64,
    pub files: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: crate::mode::Mode,
}

/// `path` (as seen from the host's `/`) in snapshot `snap` (relative to the top level),
/// reached without following any symlink; `None` when it was not there.
pub fn existed(top: &TopLevel, snap: &Path, path: &Path) -> Option<Existed> {
    use rustix::fs::OFlags;
    let rel = snap.join(path.strip_prefix("/").ok()?);
    let fd = top
        .open_beneath(&rel, OFlags::PATH | OFlags::NOFOLLOW)
        .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    let meta = crate::baseline::Meta::from_stat(&st, None);
    let (files, bytes) = if meta.kind == crate::classify::EntryKind::Directory {
        crate::discover::scan::count_tree(&top.join(&rel))
    } else {
        (1, meta.size)
    };
    Some(Existed {
        kind: meta.kind,
        bytes,
        files,
        uid: st.st_uid,
        gid: st.st_gid,
        mode: crate::mode::Mode::from_bits(st.st_mode),
    })
}

/// A line of progress for stderr.
pub type Log<'a> = &'a mut dyn FnMut(String);

/// Snapshots `src` with every subvolume nested in it to `dst`, read-only.
///
/// Where the backend can flip the read-only flag (btrfs), the snapshot is taken writable,
/// the nested subvolumes are snapshotted into the places btrfs leaves empty for them, and
/// the read-only flag is set last, innermost first: a snapshot that is read-only is
/// complete. Where it cannot (bcachefs), the snapshot is taken read-only and nested
/// subvolumes are not in it; each is named in the log.
pub fn snapshot_tree(
    backend: &dyn Backend,
    top: &TopLevel,
    src: &Path,
    dst: &Path,
    log: Log,
) -> Result<(), Error> {
    let nested = backend.nested(top, src)?;
    if !backend.can_set_readonly() {
        backend.snapshot(top, src, dst, true)?;
        for child in nested {
            log(format!(
                "nested subvolume {} is not in snapshot {} ({} cannot add it to a read-only snapshot)",
                top.name(&child),
                top.name(dst),
                backend.fs_type().as_str()
            ));
        }
        return Ok(());
    }
    backend.snapshot(top, src, dst, false)?;
    for child in nested {
        let inside = child.strip_prefix(src).map_err(|_| {
            Error::Usage(format!(
                "nested subvolume {} is outside {}",
                escape(&child),
                escape(src)
            ))
        })?;
        let target = dst.join(inside);
        if top
            .node(&target)
            .map_err(|e| FsError::new("inspect", &target, e))?
            == crate::filesystem::toplevel::Node::Directory
        {
            top.remove_empty_dir(&target)
                .map_err(|e| FsError::new("remove the placeholder", &target, e))?;
        }
        snapshot_tree(backend, top, &child, &target, log)?;
    }
    backend.set_readonly(top, dst, true)?;
    Ok(())
}

/// Deletes subvolume `rel` and every subvolume nested in it, innermost first. A read-only
/// subvolume that holds others is made writable first (its entries cannot be removed
/// otherwise).
pub fn delete_tree(backend: &dyn Backend, top: &TopLevel, rel: &Path) -> Result<(), Error> {
    let nested = backend.nested(top, rel)?;
    if !nested.is_empty() && backend.can_set_readonly() && backend.is_readonly(top, rel)? {
        backend.set_readonly(top, rel, false)?;
        crate::snapshots::reset::failpoint("nested-flag-cleared", &mut |line| eprintln!("{line}"));
    }
    for child in nested {
        delete_tree(backend, top, &child)?;
        crate::snapshots::reset::failpoint("nested-deleted", &mut |line| eprintln!("{line}"));
    }
    backend.delete(top, rel)?;
    Ok(())
}

/// What ends the name of an old root a reset could not delete and set aside beside the
/// root instead (`@root.imperm-dead-20260428T063100Z`): gc deletes what carries it.
pub const DEAD_MARK: &str = ".imperm-dead-";

/// The name old root `root` is set aside under when the reset that kept it in snapshot
/// `snapshot` cannot delete it: `ROOT.imperm-dead-SNAPSHOT`, and `.N` after it for the
/// `seq`th try when that is taken.
pub fn dead_name(root: &Path, snapshot: &str, seq: u32) -> Option<OsString> {
    let mut name = root.file_name()?.to_os_string();
    name.push(DEAD_MARK);
    name.push(snapshot);
    if seq > 0 {
        name.push(format!(".{seq}"));
    }
    Some(name)
}

/// Whether `name`, beside root `root`, is one [`dead_name`] gives: exactly, so that gc
/// deletes nothing else there (a name with the mark but not a reset's snapshot after it
/// is someone's).
pub fn is_dead_name(root: &Path, name: &std::ffi::OsStr) -> bool {
    let (Some(root), Some(name)) = (root.file_name().and_then(|n| n.to_str()), name.to_str())
    else {
        return false;
    };
    let Some(rest) = name
        .strip_prefix(root)
        .and_then(|r| r.strip_prefix(DEAD_MARK))
    else {
        return false;
    };
    let snapshot = match rest.rsplit_once('.') {
        Some((snapshot, seq))
            if !seq.is_empty()
                && !seq.starts_with('0')
                && seq.bytes().all(|b| b.is_ascii_digit())
                && seq.parse::<u32>().is_ok() =>
        {
            snapshot
        }
        _ => rest,
    };
    matches!(
        parse_name(snapshot, &TimeZone::UTC),
        Some((_, NameStyle::Utc))
    )
}

/// Renames old root `root` (a subvolume: the caller checked) beside itself to the first
/// free [`dead_name`], in its parent directory's descriptor (nothing followed: the last
/// name of a rename is never followed, and the parent is opened beneath the top level),
/// never over anything (RENAME_NOREPLACE), durably. Returns where it went.
pub fn set_aside(top: &TopLevel, root: &Path, snapshot: &str) -> Result<PathBuf, Error> {
    use rustix::fs::RenameFlags;
    let op = "set aside";
    let (parent, name) =
        crate::filesystem::toplevel::split(root).map_err(|e| FsError::new(op, root, e))?;
    let dir = top
        .open_dir(parent)
        .map_err(|e| FsError::new(op, root, e))?;
    for seq in 0..1000 {
        let Some(dead) = dead_name(root, snapshot, seq) else {
            break;
        };
        match rustix::fs::renameat_with(&dir, name, &dir, dead.as_os_str(), RenameFlags::NOREPLACE)
        {
            Ok(()) => {
                rustix::fs::fsync(&dir).map_err(|e| FsError::new("sync", parent, e.into()))?;
                return Ok(parent.join(dead));
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(FsError::new(op, root, e.into()).into()),
        }
    }
    Err(Error::Usage(format!(
        "no free name to set {} aside under",
        top.name(root)
    )))
}

/// The old roots resets set aside beside root `root`: subvolumes whose names
/// [`is_dead_name`] (anything else of such a name is left alone), sorted.
pub fn dead_roots(
    backend: &dyn Backend,
    top: &TopLevel,
    root: &Path,
) -> Result<Vec<PathBuf>, Error> {
    let parent = root.parent().unwrap_or(Path::new(""));
    let names = top
        .list_dir(parent)
        .map_err(|e| FsError::new("list", parent, e))?;
    let mut found = Vec::new();
    for name in names {
        if !is_dead_name(root, &name) {
            continue;
        }
        let rel = parent.join(&name);
        if backend.kind(top, &rel)? == Kind::Subvolume {
            found.push(rel);
        }
    }
    Ok(found)
}

/// gc's pass over the old roots resets set aside ([`set_aside`]): each is deleted with
/// what is nested in it, unless something of it is mounted; one that still cannot be
/// deleted (bcachefs: until a fsck finishes the interrupted destroy) is said and kept for
/// the next run. Its content is in the snapshot its name gives, so this never fails gc.
/// With `dry_run`, only says what it would do.
pub fn delete_dead_roots(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    dry_run: bool,
    log: Log,
) -> Result<(), Error> {
    for rel in dead_roots(backend, top, &layout.root)? {
        let what = format!("{}, an old root a reset set aside", top.name(&rel));
        if let Some(at) = crate::filesystem::toplevel::mounted_at(&top.mounts(), &rel) {
            log(format!("{what}, is mounted at {}: kept", escape(&at)));
            continue;
        }
        if dry_run {
            log(format!("would delete {what}"));
            continue;
        }
        match delete_tree(backend, top, &rel) {
            Ok(()) => log(format!("deleted {what}")),
            Err(e) => log(format!(
                "still cannot delete {what}: {}; kept for the next gc (a fsck of the filesystem finishes an interrupted deletion)",
                top.locate(e)
            )),
        }
    }
    Ok(())
}

/// Checks that `snap` is a complete read-only snapshot of `src`: a read-only subvolume,
/// taken of `src` where the backend records lineage, with the same top-level entries, and
/// (where nested snapshots are kept) a read-only snapshot at every nested place.
pub fn verify(
    backend: &dyn Backend,
    top: &TopLevel,
    src: &Path,
    snap: &Path,
) -> Result<(), String> {
    let fail = |what: String| format!("snapshot {} of {} {what}", escape(snap), escape(src));
    match backend.kind(top, snap) {
        Ok(Kind::Subvolume) => {}
        Ok(other) => {
            return Err(fail(format!(
                "is not a subvolume ({})",
                crate::filesystem::backend::describe(other)
            )));
        }
        Err(e) => return Err(fail(e.to_string())),
    }
    if !backend
        .is_readonly(top, snap)
        .map_err(|e| fail(e.to_string()))?
    {
        return Err(fail("is not read-only".into()));
    }
    let (a, b) = (
        backend.info(top, src).map_err(|e| fail(e.to_string()))?,
        backend.info(top, snap).map_err(|e| fail(e.to_string()))?,
    );
    if let (Some(uuid), Some(parent)) = (a.uuid, b.parent_uuid) {
        if uuid != parent {
            return Err(fail("was taken of another subvolume".into()));
        }
    }
    same_entries(backend, top, src, snap).map_err(fail)?;
    if backend.can_set_readonly() {
        let nested = backend.nested(top, src).map_err(|e| fail(e.to_string()))?;
        for child in nested {
            let Ok(inside) = child.strip_prefix(src) else {
                continue;
            };
            verify(backend, top, &child, &snap.join(inside))?;
        }
    }
    Ok(())
}

/// Whether `snap` has the same top-level entries as `src` (leaving out, where a snapshot
/// cannot hold nested subvolumes, those directly in `src`, which vanish from it).
fn same_entries(
    backend: &dyn Backend,
    top: &TopLevel,
    src: &Path,
    snap: &Path,
) -> Result<(), String> {
    let names = |rel: &Path| top.list_dir(rel).map_err(|e| e.to_string());
    let mut expected = names(src)?;
    let actual = names(snap)?;
    if !backend.can_set_readonly() {
        let nested = backend.nested(top, src).map_err(|e| e.to_string())?;
        expected.retain(|n| {
            !nested
                .iter()
                .any(|c| c.parent() == Some(src) && c.file_name() == Some(n))
        });
    }
    if expected != actual {
        return Err(format!(
            "has {} top-level entries where the source has {}",
            actual.len(),
            expected.len()
        ));
    }
    Ok(())
}

/// Whether `snap` is (what is left of) a snapshot of `src` as [`snapshot_tree`] takes it,
/// where snapshots record lineage: taken of `src` (its parent uuid is `src`'s uuid), and
/// each subvolume nested in it taken of the subvolume of `src` at the same place. A reset
/// killed while taking its snapshot leaves such a one; the error says why `snap` is not.
pub fn partial_of(
    backend: &dyn Backend,
    top: &TopLevel,
    src: &Path,
    snap: &Path,
) -> Result<(), String> {
    let io = |e: crate::error::FsError| top.locate(e.into()).to_string();
    let (a, b) = (
        backend.info(top, src).map_err(io)?,
        backend.info(top, snap).map_err(io)?,
    );
    match (a.uuid, b.parent_uuid) {
        (Some(uuid), Some(parent)) if uuid == parent => {}
        _ => return Err(format!("was not taken of {}", top.name(src))),
    }
    for child in backend.nested(top, snap).map_err(io)? {
        let inside = child.strip_prefix(snap).unwrap_or(&child);
        let from = src.join(inside);
        let which = |why: String| format!("holds {}, which {why}", top.name(&child));
        if backend.kind(top, &from).map_err(io)? != Kind::Subvolume {
            return Err(which(format!(
                "has no subvolume at its place in {}",
                top.name(src)
            )));
        }
        partial_of(backend, top, &from, &child).map_err(which)?;
    }
    Ok(())
}

/// Whether read-only snapshot `snap` was taken of `src`, the root a resumed reset is about
/// to delete: where snapshots record lineage, `src`'s uuid is `snap`'s parent uuid (an id
/// given again after a remount, or an older snapshot of something else, fails this);
/// elsewhere (bcachefs, whose subvolume ids are never given again) the two have the same
/// top-level entries, which deleting nested subvolumes first leaves true.
pub fn taken_of(
    backend: &dyn Backend,
    top: &TopLevel,
    src: &Path,
    snap: &Path,
) -> Result<(), String> {
    let io = |e: crate::error::FsError| top.locate(e.into()).to_string();
    if backend.has_lineage() {
        let (a, b) = (
            backend.info(top, src).map_err(io)?,
            backend.info(top, snap).map_err(io)?,
        );
        return match (a.uuid, b.parent_uuid) {
            (Some(uuid), Some(parent)) if uuid == parent => Ok(()),
            _ => Err(format!(
                "{} was not taken of {}",
                top.name(snap),
                top.name(src)
            )),
        };
    }
    same_entries(backend, top, src, snap)
        .map_err(|why| format!("{} {why} ({})", top.name(snap), top.name(src)))
}

/// Whether `snap` holds what `src` holds: every entry below them by name, type, mode,
/// owner, modification time, and for files and symlinks size and target (contents are not
/// read), the subvolumes nested in `src` left out (a snapshot that cannot hold them has no
/// entry for them). Where snapshots record no lineage, this is how a resumed reset knows
/// that the snapshot it was taking, read-only in one step, is whole and of this root,
/// which nothing has written to since (a failed reset stops the boot).
pub fn same_tree(
    backend: &dyn Backend,
    top: &TopLevel,
    src: &Path,
    snap: &Path,
) -> Result<(), String> {
    let nested = backend.nested(top, src).map_err(|e| e.to_string())?;
    same_dirs(top, src, snap, &nested)
}

fn same_dirs(top: &TopLevel, a: &Path, b: &Path, skip: &[PathBuf]) -> Result<(), String> {
    use rustix::fs::{FileType, StatxFlags};
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", top.name(p));
    let mut names = top.list_dir(a).map_err(|e| io(a, e))?;
    names.retain(|n| !skip.contains(&a.join(n)));
    if names != top.list_dir(b).map_err(|e| io(b, e))? {
        return Err(format!(
            "{} does not hold the names {} holds",
            top.name(b),
            top.name(a)
        ));
    }
    let mask = StatxFlags::TYPE
        | StatxFlags::MODE
        | StatxFlags::UID
        | StatxFlags::GID
        | StatxFlags::SIZE
        | StatxFlags::MTIME;
    for name in names {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let sa = crate::filesystem::toplevel::statx(top, &pa, mask).map_err(|e| io(&pa, e))?;
        let sb = crate::filesystem::toplevel::statx(top, &pb, mask).map_err(|e| io(&pb, e))?;
        let kind = FileType::from_raw_mode(u32::from(sa.stx_mode));
        let sized = kind != FileType::Directory;
        let same = sa.stx_mode == sb.stx_mode
            && (sa.stx_uid, sa.stx_gid) == (sb.stx_uid, sb.stx_gid)
            && (sa.stx_mtime.tv_sec, sa.stx_mtime.tv_nsec)
                == (sb.stx_mtime.tv_sec, sb.stx_mtime.tv_nsec)
            && (!sized || sa.stx_size == sb.stx_size);
        if !same {
            return Err(format!(
                "{} is not {} as it is",
                top.name(&pb),
                top.name(&pa)
            ));
        }
        match kind {
            FileType::Directory => same_dirs(top, &pa, &pb, skip)?,
            FileType::Symlink if read_link(top, &pa)? != read_link(top, &pb)? => {
                return Err(format!(
                    "{} leads elsewhere than {}",
                    top.name(&pb),
                    top.name(&pa)
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn read_link(top: &TopLevel, rel: &Path) -> Result<std::ffi::CString, String> {
    let (parent, name) = crate::filesystem::toplevel::split(rel).map_err(|e| e.to_string())?;
    let dir = top
        .open_dir(parent)
        .map_err(|e| format!("{}: {e}", top.name(parent)))?;
    rustix::fs::readlinkat(&dir, name, Vec::new()).map_err(|e| format!("{}: {e}", top.name(rel)))
}

/// gc's record of deletions under way: `SNAPSHOT_DIR/.imperm-gc.json`.
pub const GC_STATE_FILE: &str = ".imperm-gc.json";

/// What gc records before it makes a snapshot writable to delete it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcState {
    pub deleting: Vec<Deleting>,
}

/// One snapshot gc is deleting, and how to know it is still the same subvolume (a frozen
/// clock can give a later snapshot the same name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deleting {
    /// Its name, in the escaped form of output ([`Found::name`]).
    pub name: String,
    pub id: u64,
    /// Its uuid in hex, where the filesystem has one.
    #[serde(default)]
    pub uuid: Option<String>,
    /// The subvolumes nested in it that gc makes writable too, to delete what is nested in
    /// them: a kill leaves them writable, and they are still part of this deletion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opened: Vec<Opened>,
}

/// A nested subvolume gc may make writable while it deletes a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opened {
    pub id: u64,
    #[serde(default)]
    pub uuid: Option<String>,
}

impl Deleting {
    fn of(name: &str, info: &SubvolumeInfo, opened: Vec<Opened>) -> Deleting {
        Deleting {
            name: name.to_string(),
            id: info.id,
            uuid: info.uuid.map(hex),
            opened,
        }
    }

    /// Whether `info` is this subvolume.
    fn is(&self, info: &SubvolumeInfo) -> bool {
        self.id == info.id && self.uuid == info.uuid.map(hex)
    }
}

impl Opened {
    fn of(info: &SubvolumeInfo) -> Opened {
        Opened {
            id: info.id,
            uuid: info.uuid.map(hex),
        }
    }
}

/// The subvolumes nested (at any depth) in `rel` that hold others: the ones
/// [`delete_tree`] makes writable.
fn to_open(backend: &dyn Backend, top: &TopLevel, rel: &Path) -> Result<Vec<Opened>, Error> {
    let mut opened = Vec::new();
    let mut stack = backend.nested(top, rel)?;
    while let Some(child) = stack.pop() {
        let inner = backend.nested(top, &child)?;
        if !inner.is_empty() {
            opened.push(Opened::of(&backend.info(top, &child)?));
        }
        stack.extend(inner);
    }
    Ok(opened)
}

fn hex(uuid: [u8; 16]) -> String {
    uuid.iter().map(|b| format!("{b:02x}")).collect()
}

impl GcState {
    fn check(&self) -> Result<(), String> {
        for d in &self.deleting {
            given_name(&d.name)?;
        }
        Ok(())
    }
}

fn gc_state_file(layout: &Layout) -> PathBuf {
    layout.snapshot_dir.join(GC_STATE_FILE)
}

/// Reads gc's record, if any; one that cannot be read stops gc (exit 2, naming it).
pub fn read_gc_state(top: &TopLevel, layout: &Layout) -> Result<Option<GcState>, Error> {
    crate::snapshots::reset::read_json(top, &gc_state_file(layout), "gc state", GcState::check)
}

/// Writes gc's record durably (removes it when nothing is under way).
pub fn write_gc_state(top: &TopLevel, layout: &Layout, record: &GcState) -> Result<(), Error> {
    let path = gc_state_file(layout);
    let result = if record.deleting.is_empty() {
        top.remove_file(&path)
    } else {
        top.write_file_atomic(
            &path,
            &serde_json::to_vec_pretty(record).expect("gc state serialises"),
        )
    };
    result.map_err(|e| FsError::new("write", &path, e).into())
}

/// Keeps in gc's record only the deletions the survey found half done (a record of one
/// that finished, of a subvolume that is gone, or of one that was never made writable, is
/// spent), and writes it back when that changed. Returns the record to go on with.
pub fn settle_gc_record(
    top: &TopLevel,
    layout: &Layout,
    survey: &Survey,
) -> Result<GcState, Error> {
    let mut record = survey.gc_record.clone();
    record.deleting.retain(|d| {
        survey
            .half_deleted
            .iter()
            .any(|&i| survey.found[i].name == d.name)
    });
    if record != survey.gc_record {
        write_gc_state(top, layout, &record)?;
    }
    Ok(record)
}

/// Why gc did not delete a snapshot.
#[derive(Debug)]
pub enum NotDeleted {
    /// A failure of this snapshot alone (its deletion was refused: immutable, busy, a
    /// default subvolume, not permitted…; or it holds what gc must keep): gc goes on with
    /// the others and reports it.
    Skipped(Error),
    /// Something gc did not expect (the entry is no longer what it planned on, its own
    /// record cannot be written, the filesystem fails): nothing after it is touched.
    Stopped(Error),
}

/// Whether a failed deletion concerns only the snapshot it was about: the kernel refused
/// that operation. Anything else (an I/O error, a read-only or full filesystem, an entry
/// that vanished, an error with no errno) is a surprise.
fn only_this_one(e: &Error) -> bool {
    let Error::Fs(f) = e else {
        return false;
    };
    crate::filesystem::backend::errno(&f.source).is_some_and(|errno| {
        [
            libc::EPERM,
            libc::EACCES,
            libc::EBUSY,
            libc::ENOTEMPTY,
            libc::EAGAIN,
            libc::ETXTBSY,
        ]
        .contains(&errno)
    })
}

/// Deletes old-root snapshot `found` (with every subvolume nested in it), for gc. What the
/// survey found is checked again first (still a subvolume, nothing of it mounted, nothing
/// nested that a reset did not put there). When it must be made writable to delete what is
/// nested in it, that is recorded first in `record` (written to disk), and the record is
/// cleared once it is gone.
pub fn delete_old_root(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    found: &Found,
    record: &mut GcState,
    log: Log,
) -> Result<(), NotDeleted> {
    use NotDeleted::{Skipped, Stopped};
    let rel = layout.snapshot_dir.join(&found.os_name);
    let classify = |e: Error| {
        if only_this_one(&e) {
            Skipped(e)
        } else {
            Stopped(e)
        }
    };
    match backend.kind(top, &rel) {
        Ok(Kind::Subvolume) => {}
        Ok(kind) => {
            return Err(Stopped(Error::Usage(format!(
                "{} is {} now, not the subvolume gc planned to delete",
                top.name(&rel),
                crate::filesystem::backend::describe(kind)
            ))));
        }
        Err(e) => return Err(Stopped(e.into())),
    }
    if let Some(at) = crate::filesystem::toplevel::mounted_at(&top.mounts(), &rel) {
        return Err(Skipped(Error::Usage(format!(
            "{} is mounted at {} now: kept",
            top.name(&rel),
            escape(&at)
        ))));
    }
    let opened = record
        .deleting
        .iter()
        .find(|d| d.name == found.name)
        .map_or(&[][..], |d| &d.opened[..]);
    match foreign_nested(backend, top, &rel, opened) {
        Ok(None) => {}
        Ok(Some(why)) => {
            return Err(Skipped(Error::Usage(format!(
                "{} {why}: kept",
                top.name(&rel)
            ))));
        }
        Err(e) => return Err(Stopped(e)),
    }
    let nested = backend.nested(top, &rel).map_err(|e| Stopped(e.into()))?;
    let recorded = record.deleting.iter().any(|d| d.name == found.name);
    let flips = !nested.is_empty() && backend.can_set_readonly();
    if flips {
        if !recorded {
            let info = backend.info(top, &rel).map_err(|e| Stopped(e.into()))?;
            let opened = to_open(backend, top, &rel).map_err(Stopped)?;
            record
                .deleting
                .push(Deleting::of(&found.name, &info, opened));
            write_gc_state(top, layout, record).map_err(Stopped)?;
        }
        if backend
            .is_readonly(top, &rel)
            .map_err(|e| Stopped(e.into()))?
        {
            backend
                .set_readonly(top, &rel, false)
                .map_err(|e| classify(e.into()))?;
            crate::snapshots::reset::failpoint("gc-flag-cleared", log);
        }
    }
    delete_tree(backend, top, &rel).map_err(classify)?;
    if flips || recorded {
        record.deleting.retain(|d| d.name != found.name);
        write_gc_state(top, layout, record).map_err(Stopped)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn names_round_trip_and_sort_by_time() {
        let t: Timestamp = "2025-03-07T08:00:00Z".parse().unwrap();
        assert_eq!(name_for(t), "20250307T080000Z");
        let earlier: Timestamp = "2025-03-06T23:59:59Z".parse().unwrap();
        assert!(name_for(earlier) < name_for(t));
        assert_eq!(
            parse_name("20250307T080000Z", &TimeZone::UTC),
            Some((Stamp::at(t), NameStyle::Utc))
        );
    }

    /// Every name imperm writes reads back as the same stamp, suffix included, from the
    /// first year jiff knows to the last, and before 1970.
    #[test]
    fn names_with_suffixes_round_trip_at_every_era() {
        for time in [
            "1969-07-20T20:17:40Z",
            "1970-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "2026-01-15T06:30:00Z",
            "9999-12-30T12:00:00Z",
        ] {
            let time: Timestamp = time.parse().unwrap();
            for seq in [0, 1, 9, 10, 4_294_967_295] {
                let stamp = Stamp { time, seq };
                let name = name_with(stamp);
                assert_eq!(
                    parse_name(&name, &TimeZone::UTC),
                    Some((stamp, NameStyle::Utc)),
                    "{name}"
                );
            }
        }
        // Sub-second parts are not in the name.
        let precise: Timestamp = "2026-01-15T06:30:00.75Z".parse().unwrap();
        assert_eq!(name_for(precise), "20260115T063000Z");
    }

    #[test]
    fn suffixes_order_after_the_time() {
        let parse = |n: &str| parse_name(n, &TimeZone::UTC).unwrap().0;
        let mut names = vec![
            "20260115T063000Z-10",
            "20260115T063001Z",
            "20260115T063000Z-2",
            "20260115T063000Z",
            "20260115T062959Z-3",
        ];
        names.sort_by_key(|n| parse(n));
        assert_eq!(
            names,
            [
                "20260115T062959Z-3",
                "20260115T063000Z",
                "20260115T063000Z-2",
                "20260115T063000Z-10",
                "20260115T063001Z",
            ]
        );
    }

    #[test]
    fn the_next_suffix_follows_the_highest_of_the_same_second() {
        let t: Timestamp = "2026-01-15T06:30:00Z".parse().unwrap();
        let next = |names: &[&str]| next_seq(names.iter().copied(), t);
        assert_eq!(next(&[]), Some(0));
        assert_eq!(next(&["20260115T063100Z", "20260115T062959Z-4"]), Some(0));
        assert_eq!(next(&["20260115T063000Z"]), Some(1));
        assert_eq!(next(&["20260115T063000Z", "20260115T063000Z-1"]), Some(2));
        // gc deleted the first two: the next one still sorts last.
        assert_eq!(next(&["20260115T063000Z-2"]), Some(3));
        assert_eq!(next(&["20260115T063000Z-4294967295"]), None);
        let precise: Timestamp = "2026-01-15T06:30:00.5Z".parse().unwrap();
        assert_eq!(next_seq(["20260115T063000Z"], precise), Some(1));
    }

    #[test]
    fn legacy_names_are_local_time() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let (t, style) = parse_name("2025-03-07_09-00-00", &berlin).unwrap();
        assert_eq!(style, NameStyle::Legacy);
        assert_eq!(
            t,
            Stamp::at("2025-03-07T08:00:00Z".parse::<Timestamp>().unwrap())
        );
        // Summer time: UTC+2.
        let (t, _) = parse_name("2025-07-01_12-00-00", &berlin).unwrap();
        assert_eq!(t.time, "2025-07-01T10:00:00Z".parse::<Timestamp>().unwrap());
    }

    #[test]
    fn other_names_are_not_recognised() {
        for name in [
            "root",
            "2025-03-07",
            "20250307T080000",
            "20250307T080000Z.old",
            "2025-3-7_9-0-0",
            "20251307T080000Z",
            "2025-03-07T08:00:00Z",
            ".imperm-reset.json",
            "20250307T080000Z-",
            "20250307T080000Z-0",
            "20250307T080000Z-01",
            "20250307T080000Z-+1",
            "20250307T080000Z--1",
            "20250307T080000Z-1-1",
            "20250307T080000Z-4294967296",
            "20250307T080000Z-x",
            "2025-03-07_09-00-00-1",
        ] {
            assert_eq!(parse_name(name, &TimeZone::UTC), None, "{name}");
        }
    }

    fn found(name: &str, kind: Kind, readonly: bool) -> Found {
        Found {
            name: name.into(),
            os_name: name.into(),
            kind,
            time: parse_name(name, &TimeZone::UTC),
            readonly,
        }
    }

    fn layout(blank: Option<&str>) -> Layout {
        Layout {
            root: "@root".into(),
            snapshot_dir: "@snapshots".into(),
            blank: blank.map(PathBuf::from),
        }
    }

    #[test]
    fn what_gc_must_never_delete() {
        let l = layout(Some("@snapshots/20200101T000000Z"));
        let pending = State {
            phase: Phase::Snapshot,
            snapshot: "20250101T000000Z".into(),
            old_root: None,
            snapshot_id: None,
            new_root: None,
            generation: None,
        };
        let cases: &[(Found, &[&str])] = &[
            (found("20250102T000000Z", Kind::Subvolume, true), &[]),
            (found("manual", Kind::Subvolume, true), &[]),
            (
                found("20200101T000000Z", Kind::Subvolume, true),
                &["blank snapshot"],
            ),
            (
                found("20250101T000000Z", Kind::Subvolume, false),
                &["pending reset", "read-write"],
            ),
            (
                found("20250103T000000Z", Kind::Subvolume, false),
                &["read-write"],
            ),
            (
                found("20250104T000000Z", Kind::Symlink, false),
                &["not a subvolume (a symlink)"],
            ),
            (
                found("20250105T000000Z", Kind::Directory, false),
                &["not a subvolume (a plain directory)"],
            ),
        ];
        for (f, want) in cases {
            let rel = l.snapshot_dir.join(&f.name);
            assert_eq!(held(f, &rel, &l, Some(&pending)), *want, "{}", f.name);
        }
        let nested = layout(Some("@snapshots/20200101T000000Z/blank"));
        let f = found("20200101T000000Z", Kind::Subvolume, true);
        assert_eq!(
            held(&f, Path::new("@snapshots/20200101T000000Z"), &nested, None),
            ["holds the blank snapshot"]
        );
        let root_inside = Layout {
            root: "@snapshots/20250102T000000Z".into(),
            ..layout(None)
        };
        let f = found("20250102T000000Z", Kind::Subvolume, false);
        assert_eq!(
            held(
                &f,
                Path::new("@snapshots/20250102T000000Z"),
                &root_inside,
                None
            ),
            ["root", "read-write"]
        );
    }

    #[test]
    fn the_last_reset_is_the_recorded_one_else_the_newest_not_in_the_future() {
        let now: Timestamp = "2026-01-15T08:00:00Z".parse().unwrap();
        let found = vec![
            found("20260115T063000Z", Kind::Subvolume, true),
            found("20260115T070000Z", Kind::Subvolume, true),
            found("20300101T000000Z", Kind::Subvolume, true),
            found("20260115T075000Z", Kind::Subvolume, false),
            found("20260115T075500Z", Kind::Symlink, false),
            found("20260115T074000Z", Kind::Subvolume, true),
        ];
        let mut candidates: Vec<Candidate> = found
            .iter()
            .map(|f| Candidate {
                stamp: f.time.map(|(s, _)| s),
                held: held(
                    f,
                    &Path::new("@snapshots").join(&f.name),
                    &layout(None),
                    None,
                ),
                protected: vec![],
                finish: None,
            })
            .collect();
        // The last one is the blank snapshot.
        candidates[5].held.push("blank snapshot".into());
        let pick = |recorded: Option<&str>| {
            let (i, rec) = last_reset(&found, &candidates, recorded, now);
            (i.map(|i| found[i].name.clone()), rec)
        };
        assert_eq!(
            pick(Some("20260115T063000Z")),
            (Some("20260115T063000Z".into()), true)
        );
        // Recorded even when in the future: the clock was wrong at that reset.
        assert_eq!(
            pick(Some("20300101T000000Z")),
            (Some("20300101T000000Z".into()), true)
        );
        assert_eq!(pick(None), (Some("20260115T070000Z".into()), false));
        // Gone, read-write, not a subvolume, or the blank: fall back.
        for gone in [
            "20250101T000000Z",
            "20260115T075000Z",
            "20260115T075500Z",
            "20260115T074000Z",
        ] {
            assert_eq!(
                pick(Some(gone)),
                (Some("20260115T070000Z".into()), false),
                "{gone}"
            );
        }
        assert_eq!(last_reset(&[], &[], None, now), (None, false));
    }

    /// Every name `ls` prints is given back exactly; what is not one plain name is not.
    #[test]
    fn names_are_given_back_as_ls_prints_them() {
        use std::os::unix::ffi::OsStrExt;
        for name in [
            &b"20260115T063000Z-1"[..],
            b"odd\nname",
            b"bad\xffname",
            b"esc\x1b[31mred",
            b"back\\slash",
            b"caf\xc3\xa9",
            b"..x",
        ] {
            let name = OsStr::from_bytes(name);
            let printed = escape(Path::new(name));
            assert_eq!(given_name(&printed).as_deref(), Ok(name), "{printed}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\x2fb",
            "\\x2e\\x2e",
            "x\\x00y",
            "back\\slash",
            "a\\xZZ",
        ] {
            assert!(given_name(bad).is_err(), "{bad:?}");
        }
    }

    /// gc deletes exactly the names a reset sets an old root aside under, beside that root.
    #[test]
    fn set_aside_names_are_recognised_exactly() {
        use std::os::unix::ffi::OsStrExt;
        let root = Path::new("@root");
        for seq in [0, 1, 2, 10, 999] {
            let name = dead_name(root, "20260428T063100Z-2", seq).unwrap();
            assert!(is_dead_name(root, &name), "{name:?}");
            assert!(!is_dead_name(Path::new("@other"), &name), "{name:?}");
        }
        assert_eq!(
            dead_name(root, "20260428T063100Z", 0).unwrap(),
            "@root.imperm-dead-20260428T063100Z"
        );
        assert_eq!(
            dead_name(Path::new("subvols/@root"), "20260428T063100Z", 3).unwrap(),
            "@root.imperm-dead-20260428T063100Z.3"
        );
        let nested = Path::new("subvols/@root");
        assert!(is_dead_name(
            nested,
            OsStr::new("@root.imperm-dead-20260428T063100Z")
        ));
        for bad in [
            &b"@root"[..],
            b"@root.imperm-dead-",
            b"@root.imperm-dead-manual",
            b"@root.imperm-dead-20260428T063100Z.",
            b"@root.imperm-dead-20260428T063100Z.0",
            b"@root.imperm-dead-20260428T063100Z.01",
            b"@root.imperm-dead-20260428T063100Z.x",
            b"@root.imperm-dead-20260428T063100Z.4294967296",
            b"@root.imperm-dead-2026-04-28_06-31-00",
            b"@root.imperm-dead-20260428T063100Z/x",
            b"@rootx.imperm-dead-20260428T063100Z",
            b"x@root.imperm-dead-20260428T063100Z",
            b"@root.imperm-dead-20260428T063100Z\xff",
            b"@root.imperm-dead-20260428T063100Z\n",
            b"@root.imperm-dead-\xff20260428T063100Z",
        ] {
            assert!(!is_dead_name(root, OsStr::from_bytes(bad)), "{bad:?}");
        }
        assert_eq!(dead_name(Path::new(""), "20260428T063100Z", 0), None);
    }

    #[test]
    fn only_a_finished_reset_that_took_a_snapshot_records_one() {
        let state = |phase, snapshot: &str| State {
            phase,
            snapshot: snapshot.into(),
            old_root: None,
            snapshot_id: None,
            new_root: None,
            generation: None,
        };
        assert_eq!(recorded(&state(Phase::Done, "x")), Some("x"));
        assert_eq!(recorded(&state(Phase::Done, "")), None);
        assert_eq!(recorded(&state(Phase::Snapshot, "x")), None);
        assert_eq!(recorded(&state(Phase::Replace, "x")), None);
    }
}
