//! `snapshots ls` and `snapshots gc`: old-root snapshots with the retention rules that keep
//! each, and deleting the ones no rule keeps.

use std::io::{self, Write};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::backend::{self, Backend};
use crate::cli::{FsArgs, GcArgs, GlobalArgs};
use crate::config::FilesystemConfig;
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::output::{self, Report, Styles};
use crate::reset::{self, Layout, Phase};
use crate::retention;
use crate::snapshot::{self, NameStyle};
use crate::toplevel::TopLevel;

/// One snapshot and what the policy says of it.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    /// UTC, RFC 3339; null for a name imperm does not recognise.
    time: Option<String>,
    /// The same moment in the system's time zone.
    local_time: Option<String>,
    age_seconds: Option<i64>,
    name_style: Option<NameStyle>,
    readonly: bool,
    keep: bool,
    reasons: Vec<String>,
    /// Whether this run deleted it (gc without --dry-run).
    deleted: bool,
}

#[derive(Debug, Serialize)]
struct SnapshotsReport {
    filesystem: &'static str,
    #[serde(serialize_with = "crate::paths::json")]
    snapshot_dir: std::path::PathBuf,
    /// `null` for ls; for gc whether it was a dry run.
    dry_run: Option<bool>,
    policy: String,
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
    let zone = match &policy.timezone {
        Some(name) => TimeZone::get(name)
            .map_err(|e| Error::Usage(format!("retention timezone {name:?}: {e}")))?,
        None => TimeZone::system(),
    };
    let mut report = SnapshotsReport {
        filesystem: fs.fs_type.as_str(),
        snapshot_dir: fs.snapshot_dir.clone(),
        dry_run,
        policy: policy.to_string(),
        snapshots: Vec::new(),
    };
    let backend = backend::for_type(fs.fs_type);
    if !backend.has_subvolumes() {
        output::emit(&report, global.format, global.color)?;
        return Ok(ExitStatus::Clean);
    }
    let top = TopLevel::open(&fs, args.mounted.as_deref())?;
    if dry_run == Some(false) {
        top.lock()?;
    }
    report.snapshots = plan(backend.as_ref(), &top, &fs, policy, &zone, now)?;
    let result = match dry_run {
        Some(false) => delete_unkept(backend.as_ref(), &top, &fs, &mut report.snapshots),
        _ => Ok(()),
    };
    // What was deleted is reported even when a later deletion failed.
    output::emit(&report, global.format, global.color)?;
    result.map(|()| ExitStatus::Clean)
}

fn plan(
    backend: &dyn Backend,
    top: &TopLevel,
    fs: &FilesystemConfig,
    policy: &retention::Policy,
    zone: &TimeZone,
    now: Timestamp,
) -> Result<Vec<Row>, Error> {
    let local = TimeZone::system();
    let found = snapshot::list(backend, top, &fs.snapshot_dir, &local)?;
    let layout = Layout {
        root: fs.root_subvolume.clone(),
        snapshot_dir: fs.snapshot_dir.clone(),
        blank: fs.blank_snapshot.clone(),
    };
    // A reset that was interrupted owns its snapshot until it is run again.
    let pending = reset::read_state(top, &layout)?
        .filter(|s| s.phase != Phase::Done)
        .map(|s| s.snapshot);
    let times: Vec<Option<Timestamp>> = found.iter().map(|f| f.time.map(|(t, _)| t)).collect();
    let decisions = retention::plan(&times, policy, zone, now);
    let mut rows: Vec<Row> = found
        .into_iter()
        .zip(decisions)
        .map(|(f, mut d)| {
            if pending.as_deref() == Some(f.name.as_str()) {
                d.reasons.push("pending reset".into());
                d.keep = true;
            }
            let time = f.time.map(|(t, _)| t);
            Row {
                time: time.map(|t| t.to_string()),
                local_time: time.map(|t| {
                    t.to_zoned_datetime(local.clone())
                        .strftime("%Y-%m-%dT%H:%M:%S%:z")
                        .to_string()
                }),
                age_seconds: time.map(|t| now.duration_since(t).as_secs()),
                name_style: f.time.map(|(_, s)| s),
                readonly: f.readonly,
                keep: d.keep,
                reasons: d.reasons,
                deleted: false,
                name: f.name,
            }
        })
        .collect();
    // Newest first; names imperm does not recognise last, by name.
    rows.sort_by(|a, b| match (&a.age_seconds, &b.age_seconds) {
        (Some(x), Some(y)) => x.cmp(y).then(a.name.cmp(&b.name)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
    Ok(rows)
}

/// Deletes what the plan does not keep, oldest first, one at a time; stops at the first
/// error so that nothing after a surprise is touched.
fn delete_unkept(
    backend: &dyn Backend,
    top: &TopLevel,
    fs: &FilesystemConfig,
    rows: &mut [Row],
) -> Result<(), Error> {
    for row in rows.iter_mut().rev().filter(|r| !r.keep) {
        let path = fs.snapshot_dir.join(&row.name);
        snapshot::delete_tree(backend, top, &path)?;
        eprintln!("imperm gc: deleted {}", path.display());
        row.deleted = true;
    }
    Ok(())
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
            return writeln!(out, "no snapshots in {}", self.snapshot_dir.display());
        }
        let action = |r: &Row| match (self.dry_run, r.keep, r.deleted) {
            (None, _, _) => None,
            (_, true, _) => Some("keep"),
            (_, false, true) => Some("deleted"),
            (_, false, false) => Some("delete"),
        };
        let width = self
            .snapshots
            .iter()
            .map(|r| r.name.len())
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
            s.heading, "NAME", "LOCAL TIME", "UTC", "AGE", "RO", s.heading
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
                if r.readonly { "ro" } else { "rw" },
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
