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
use crate::paths::escape;
use crate::reset::Layout;
use crate::retention::{self, Stamp};
use crate::snapshot::{self, NameStyle};
use crate::toplevel::TopLevel;

/// One snapshot and what the policy says of it.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    /// UTC, RFC 3339; null for a name imperm does not recognise.
    time: Option<String>,
    /// The same moment in the time zone retention counts its days, weeks… in (the
    /// report's `timezone`).
    local_time: Option<String>,
    age_seconds: Option<i64>,
    name_style: Option<NameStyle>,
    readonly: bool,
    keep: bool,
    reasons: Vec<String>,
    /// Whether this run deleted it (gc without --dry-run).
    deleted: bool,
    #[serde(skip)]
    stamp: Option<Stamp>,
    #[serde(skip)]
    os_name: std::ffi::OsString,
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
        match dry_run {
            Some(false) => delete_unkept(backend.as_ref(), &top, &fs, &mut report.snapshots),
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
        .map(|(f, d)| {
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
                readonly: f.readonly,
                keep: d.keep,
                reasons: d.reasons,
                deleted: false,
                stamp: f.time.map(|(s, _)| s),
                name: f.name.clone(),
                os_name: f.os_name.clone(),
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

/// Deletes what the plan does not keep, oldest first, one at a time; stops at the first
/// error so that nothing after a surprise is touched.
fn delete_unkept(
    backend: &dyn Backend,
    top: &TopLevel,
    fs: &FilesystemConfig,
    rows: &mut [Row],
) -> Result<(), Error> {
    for row in rows.iter_mut().rev().filter(|r| !r.keep) {
        let path = fs.snapshot_dir.join(&row.os_name);
        snapshot::delete_tree(backend, top, &path)?;
        eprintln!("imperm gc: deleted {}", escape(&path));
        row.deleted = true;
    }
    Ok(())
}

/// A name as it can be shown on one line of a table: control characters (a newline
/// would forge a row) and bytes that are not UTF-8 are escaped.
fn shown(name: &std::ffi::OsStr) -> String {
    let mut out = String::new();
    for chunk in name.as_encoded_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
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
            (_, false, false) => Some("delete"),
        };
        let width = self
            .snapshots
            .iter()
            .map(|r| shown(&r.os_name).chars().count())
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
                shown(&r.os_name),
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
    fn names_are_shown_on_one_line() {
        use std::os::unix::ffi::OsStrExt;
        let shown = |b: &[u8]| super::shown(std::ffi::OsStr::from_bytes(b));
        assert_eq!(shown(b"20260115T063000Z-1"), "20260115T063000Z-1");
        assert_eq!(shown(b"evil\nNAME"), "evil\\nNAME");
        assert_eq!(shown(b"bad\xff"), "bad\\xff");
        assert_eq!(shown(b"a\\b"), "a\\\\b");
        assert_eq!(shown("caf\u{e9}".as_bytes()), "caf\u{e9}");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(3 * 86_400 + 5), "3d");
        assert_eq!(age(-86_400), "in 1d");
    }
}
