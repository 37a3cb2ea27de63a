//! `snapshots ls` and `snapshots gc`: old-root snapshots with the retention rules that keep
//! each, and deleting the ones no rule keeps.

use std::io::{self, Write};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::cli::{FsArgs, GcArgs, GlobalArgs, MountArgs, UmountArgs};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::filesystem::backend::{self, Backend, Kind};
use crate::filesystem::toplevel::TopLevel;
use crate::output::{self, Report, Styles};
use crate::paths::escape;
use crate::retention::{self, Stamp};
use crate::snapshots::mount::{self, Mounted, OLD_ROOTS, OldRoots, Unmounting};
use crate::snapshots::reset::Layout;
use crate::snapshots::snapshot::{self, NameStyle, NotDeleted};

/// One snapshot and what the policy says of it.
#[derive(Debug, Serialize)]
struct Row {
    /// In the escaped form of paths in output: `restore --from`, `diff --against` and
    /// `journal --against` take it as it is.
    name: String,
    /// UTC, RFC 3339; null for a name imperm does not recognise.
    time: Option<String>,
    /// The same moment in the time zone retention counts its days, weeks… in (the
    /// report's `timezone`).
    local_time: Option<String>,
    age_seconds: Option<i64>,
    name_style: Option<NameStyle>,
    /// Null for what has no read-only flag (a directory or symlink with a snapshot's name).
    readonly: Option<bool>,
    keep: bool,
    reasons: Vec<String>,
    /// Whether this run deleted it (gc without --dry-run).
    deleted: bool,
    /// Why this run could not delete it (gc went on with the others).
    error: Option<String>,
    /// Where it is mounted (`snapshots mount`, or anyone's mount of it or of a directory
    /// in it), as this process's mount table shows it.
    mounted: Vec<String>,
    #[serde(skip)]
    stamp: Option<Stamp>,
    /// Index into the survey's entries.
    #[serde(skip)]
    index: usize,
}

#[derive(Debug, Serialize)]
struct SnapshotsReport {
    filesystem: &'static str,
    #[serde(serialize_with = "crate::paths::json")]
    snapshot_dir: std::path::PathBuf,
    /// `null` for ls; for gc whether it was a dry run.
    dry_run: Option<bool>,
    policy: String,
    /// The zone of `local_time` and of the retention buckets.
    timezone: String,
    /// The last reset's snapshot (the one it recorded, else the newest not in the future).
    last_reset: Option<String>,
    snapshots: Vec<Row>,
}

pub fn ls(global: &GlobalArgs, args: &FsArgs) -> Result<ExitStatus, Error> {
    run(global, args, None)
}

pub fn gc(global: &GlobalArgs, args: &GcArgs) -> Result<ExitStatus, Error> {
    run(global, &args.fs, Some(args.dry_run))
}

/// `dry_run`: `None` lists, `Some(true)` plans, `Some(false)` deletes.
fn run(global: &GlobalArgs, args: &FsArgs, dry_run: Option<bool>) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, SnapshotsReport::COMMAND)?;
    let config = super::load_config(global)?;
    let fs = super::filesystem(&config, args)?;
    let now = super::now()?;
    let policy = &config.retention;
    let (zone, zone_name) = match &policy.timezone {
        Some(name) => (
            TimeZone::get(name)
                .map_err(|e| Error::Usage(format!("retention timezone {name:?}: {e}")))?,
            name.clone(),
        ),
        None => {
            let zone = TimeZone::system();
            let name = zone.iana_name().unwrap_or("local time").to_string();
            (zone, name)
        }
    };
    let mut report = SnapshotsReport {
        filesystem: fs.fs_type.as_str(),
        snapshot_dir: fs.snapshot_dir.clone(),
        dry_run,
        policy: policy.to_string(),
        timezone: zone_name,
        last_reset: None,
        snapshots: Vec::new(),
    };
    let backend = backend::for_type(fs.fs_type);
    if !backend.has_subvolumes() {
        output::emit(&report, global.format, global.color)?;
        return Ok(ExitStatus::Clean);
    }
    let top = TopLevel::open(&fs, args.mounted.as_deref())?;
    let result = (|| {
        if dry_run == Some(false) {
            top.lock()?;
        }
        let layout = Layout {
            root: fs.root_subvolume.clone(),
            snapshot_dir: fs.snapshot_dir.clone(),
            blank: fs.blank_snapshot.clone(),
        };
        let survey = snapshot::survey(backend.as_ref(), &top, &layout, &TimeZone::system(), now)?;
        if let Some(problem) = &survey.state_problem {
            // Whether a reset is half done is unknown: its snapshot could be deleted.
            if dry_run.is_some() {
                return Err(Error::Usage(format!("{problem}; nothing was deleted")));
            }
            eprintln!("imperm: warning: {problem}");
        }
        report.last_reset = survey.last_reset_name().map(str::to_string);
        report.snapshots = rows(&survey, policy, &zone, now);
        let mounts = top.mounts();
        for row in &mut report.snapshots {
            let rel = layout.snapshot_dir.join(&survey.found[row.index].os_name);
            let inside = std::path::Path::new("/").join(rel);
            row.mounted = mounts
                .iter()
                .filter(|(root, _)| root.starts_with(&inside))
                .map(|(_, at)| escape(at))
                .collect();
        }
        if let Some(dry) = dry_run {
            snapshot::delete_dead_roots(
                backend.as_ref(),
                &top,
                &layout,
                dry,
                &mut |line| eprintln!("imperm gc: {line}"),
            )?;
        } else {
            for rel in snapshot::dead_roots(backend.as_ref(), &top, &layout.root)? {
                eprintln!(
                    "imperm: note: {} is an old root a reset could not delete and set aside; `imperm snapshots gc` deletes it",
                    top.name(&rel)
                );
            }
        }
        match dry_run {
            Some(false) => delete_unkept(
                backend.as_ref(),
                &top,
                &layout,
                &survey,
                &mut report.snapshots,
            ),
            _ => Ok(()),
        }
    })()
    .map_err(|e| top.locate(e));
    // What was deleted is reported even when a later deletion failed.
    if !report.snapshots.is_empty() || result.is_ok() {
        output::emit(&report, global.format, global.color)?;
    }
    result.map(|()| ExitStatus::Clean)
}

/// Every entry with what the policy says of it, newest first (by time, then suffix);
/// names imperm does not recognise last, by name.
fn rows(
    survey: &snapshot::Survey,
    policy: &retention::Policy,
    zone: &TimeZone,
    now: Timestamp,
) -> Vec<Row> {
    let decisions = retention::plan_entries(&survey.candidates, policy, zone, now);
    let mut rows: Vec<Row> = survey
        .found
        .iter()
        .zip(decisions)
        .enumerate()
        .map(|(index, (f, d))| {
            let time = f.time.map(|(s, _)| s.time);
            Row {
                time: time.map(|t| t.to_string()),
                local_time: time.map(|t| {
                    t.to_zoned_datetime(zone.clone())
                        .strftime("%Y-%m-%dT%H:%M:%S%:z")
                        .to_string()
                }),
                age_seconds: time.map(|t| now.duration_since(t).as_secs()),
                name_style: f.time.map(|(_, s)| s),
                readonly: (f.kind == Kind::Subvolume).then_some(f.readonly),
                keep: d.keep,
                reasons: d.reasons,
                deleted: false,
                error: None,
                mounted: Vec::new(),
                stamp: f.time.map(|(s, _)| s),
                name: f.name.clone(),
                index,
            }
        })
        .collect();
    rows.sort_by(|a, b| match (&a.stamp, &b.stamp) {
        (Some(x), Some(y)) => y.cmp(x).then(a.name.cmp(&b.name)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
    rows
}

/// Deletes what the plan does not keep, oldest first, one at a time. A snapshot whose
/// deletion is refused (immutable, busy, holding what must be kept…) is skipped and
/// reported, and the others are still deleted: one stuck snapshot must not let the disk
/// fill. Anything unexpected (the directory changed under gc, its record cannot be
/// written, the filesystem fails) stops it: nothing after a surprise is touched. Either
/// way the run ends with exit 2 and one line naming every snapshot not deleted.
fn delete_unkept(
    backend: &dyn Backend,
    top: &TopLevel,
    layout: &Layout,
    survey: &snapshot::Survey,
    rows: &mut [Row],
) -> Result<(), Error> {
    let mut record = snapshot::settle_gc_record(top, layout, survey)?;
    let mut log = |line: String| eprintln!("imperm gc: {line}");
    let mut skipped = Vec::new();
    for row in rows.iter_mut().rev().filter(|r| !r.keep) {
        let found = &survey.found[row.index];
        let path = layout.snapshot_dir.join(&found.os_name);
        match snapshot::delete_old_root(backend, top, layout, found, &mut record, &mut log) {
            Ok(()) => {
                log(format!("deleted {}", top.name(&path)));
                row.deleted = true;
            }
            Err(NotDeleted::Skipped(e)) => {
                let e = top.locate(e).to_string();
                log(format!("not deleted, going on: {e}"));
                row.error = Some(e.clone());
                skipped.push(e);
            }
            Err(NotDeleted::Stopped(e)) => {
                let e = top.locate(e);
                row.error = Some(e.to_string());
                return Err(match skipped.len() {
                    0 => Error::Usage(format!("{e}; gc stopped, nothing after it was deleted")),
                    n => Error::Usage(format!(
                        "{e}; gc stopped, nothing after it was deleted (and {n} not deleted before: {})",
                        skipped.join("; ")
                    )),
                });
            }
        }
    }
    match skipped.len() {
        0 => Ok(()),
        n => Err(Error::Usage(format!(
            "{n} {} not deleted (the others were): {}",
            if n == 1 {
                "snapshot was"
            } else {
                "snapshots were"
            },
            skipped.join("; ")
        ))),
    }
}

/// `snapshots mount`.
pub fn mount(global: &GlobalArgs, args: &MountArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, MountReport::COMMAND)?;
    let config = super::load_config(global)?;
    let fs = super::filesystem(&config, &args.fs)?;
    let at = OldRoots {
        fs: &fs,
        mounted: args.fs.mounted.as_deref(),
        root: &global.root,
        now: super::now()?,
    };
    let mounted = mount::mount_old_root(&at, args.name.as_deref(), args.dir.as_deref())?;
    output::emit(&MountReport(mounted), global.format, global.color)?;
    Ok(ExitStatus::Clean)
}

/// `snapshots umount`: exit 1 when an old root is in use (not unmounted without --lazy).
pub fn umount(global: &GlobalArgs, args: &UmountArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, UmountReport::COMMAND)?;
    let config = super::load_config(global)?;
    let fs = super::filesystem(&config, &args.fs)?;
    let at = OldRoots {
        fs: &fs,
        mounted: args.fs.mounted.as_deref(),
        root: &global.root,
        now: super::now()?,
    };
    let done = mount::umount_old_roots(&at, args.target.as_deref(), args.lazy)?;
    output::emit(&UmountReport(&done), global.format, global.color)?;
    for busy in &done.busy {
        let at = escape(&busy.mount_point);
        if let Some(inner) = busy.mounts_inside.first() {
            eprintln!(
                "imperm: {at} is not unmounted: {} is mounted inside it; unmount that first",
                escape(inner)
            );
            continue;
        }
        eprintln!(
            "imperm: {at} is in use, not unmounted: close what uses it (`fuser -vm {at}` lists it) and run this again, or detach it now with `imperm snapshots umount --lazy {at}`"
        );
    }
    Ok(if done.busy.is_empty() {
        ExitStatus::Clean
    } else {
        ExitStatus::Findings
    })
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
struct MountReport(Mounted);

impl Report for MountReport {
    const COMMAND: &'static str = "snapshots mount";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        let m = &self.0;
        let here = if m.path != m.mount_point {
            format!(" ({} on this machine)", escape(&m.path))
        } else {
            String::new()
        };
        if m.already_mounted {
            writeln!(
                out,
                "{}{}{:#} is mounted at {}{}{:#}{here} already; nothing was done",
                s.path,
                m.name,
                s.path,
                s.path,
                escape(&m.mount_point),
                s.path
            )
        } else {
            writeln!(
                out,
                "mounted {}{}{:#} read-only at {}{}{:#}{here}; `imperm snapshots umount {}` unmounts it",
                s.path,
                m.name,
                s.path,
                s.path,
                escape(&m.mount_point),
                s.path,
                escape(&m.mount_point)
            )
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
struct UmountReport<'a>(&'a Unmounting);

impl Report for UmountReport<'_> {
    const COMMAND: &'static str = "snapshots umount";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        let u = self.0;
        for r in &u.unmounted {
            writeln!(
                out,
                "unmounted {}{}{:#} from {}{}",
                s.path,
                r.name,
                s.path,
                escape(&r.mount_point),
                match (r.lazy, r.removed_dir) {
                    (true, _) => " (detached: freed when the last file in it is closed)",
                    (false, true) => " and removed the directory",
                    (false, false) => "",
                }
            )?;
        }
        for r in &u.busy {
            let why = match r.mounts_inside.first() {
                Some(inner) => format!("{} is mounted inside it", escape(inner)),
                None => "in use".into(),
            };
            writeln!(
                out,
                "{}not unmounted{:#}: {} at {}: {why}",
                s.problem,
                s.problem,
                r.name,
                escape(&r.mount_point)
            )?;
        }
        for l in &u.left_alone {
            writeln!(
                out,
                "left alone: {} ({}): not an old root of this filesystem",
                escape(&l.mount_point),
                l.what
            )?;
        }
        for p in &u.not_mounted {
            writeln!(out, "nothing is mounted at {}; nothing to do", escape(p))?;
        }
        if u.unmounted.is_empty()
            && u.busy.is_empty()
            && u.left_alone.is_empty()
            && u.not_mounted.is_empty()
        {
            writeln!(
                out,
                "no old roots are mounted under {OLD_ROOTS}; nothing to do"
            )?;
        }
        Ok(())
    }
}

fn age(seconds: i64) -> String {
    let (future, s) = (seconds < 0, seconds.unsigned_abs());
    let text = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    };
    if future { format!("in {text}") } else { text }
}

impl Report for SnapshotsReport {
    const COMMAND: &'static str = "snapshots";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        if self.filesystem == "tmpfs" {
            return writeln!(
                out,
                "tmpfs root: no old-root snapshots (nothing is kept across boots)"
            );
        }
        if self.snapshots.is_empty() {
            return writeln!(out, "no snapshots in {}", escape(&self.snapshot_dir));
        }
        let action = |r: &Row| match (self.dry_run, r.keep, r.deleted) {
            (None, _, _) => None,
            (_, true, _) => Some("keep"),
            (_, false, true) => Some("deleted"),
            (_, false, false) if r.error.is_some() => Some("failed"),
            (_, false, false) => Some("delete"),
        };
        let width = self
            .snapshots
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        let action_col = if self.dry_run.is_some() {
            format!("{:<8}", "ACTION")
        } else {
            String::new()
        };
        writeln!(
            out,
            "{}{action_col}{:<width$}  {:<25}  {:<20}  {:>6}  {:<2}  KEPT BY{:#}",
            s.heading,
            "NAME",
            format!("TIME ({})", self.timezone),
            "UTC",
            "AGE",
            "RO",
            s.heading
        )?;
        for r in &self.snapshots {
            let act = match action(r) {
                Some(a) => {
                    let style = if r.keep { s.good } else { s.problem };
                    format!("{style}{a:<8}{style:#}")
                }
                None => String::new(),
            };
            let utc = r
                .time
                .as_deref()
                .map(|t| t.trim_end_matches('Z').replace('T', " ") + "Z");
            writeln!(
                out,
                "{act}{}{:<width$}{:#}  {:<25}  {:<20}  {:>6}  {:<2}  {}",
                s.path,
                r.name,
                s.path,
                r.local_time.as_deref().unwrap_or("-"),
                utc.as_deref().unwrap_or("-"),
                r.age_seconds.map(age).unwrap_or_else(|| "-".into()),
                match r.readonly {
                    Some(true) => "ro",
                    Some(false) => "rw",
                    None => "-",
                },
                r.reasons.join(", ")
            )?;
        }
        let deleted = self.snapshots.iter().filter(|r| r.deleted).count();
        let unkept = self.snapshots.iter().filter(|r| !r.keep).count();
        match self.dry_run {
            Some(true) => writeln!(
                out,
                "policy: {}; dry run: {unkept} would be deleted, nothing was",
                self.policy
            ),
            Some(false) => writeln!(out, "policy: {}; deleted {deleted}", self.policy),
            None => writeln!(out, "policy: {}", self.policy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_are_short() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(3 * 86_400 + 5), "3d");
        assert_eq!(age(-86_400), "in 1d");
    }
}
