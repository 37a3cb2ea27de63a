//! `check`, `audit` and `baseline`: what a wipe would lose, and the state right after boot
//! that "since boot" is measured from.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::backend;
use crate::baseline::{self, Manifest};
use crate::cli::{DiscoverArgs, FsArgs, GlobalArgs};
use crate::config::Config;
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;
use crate::knowledge::{self, Verdict};
use crate::nix::{self, Style};
use crate::output::{self, Report, Styles, bytes, count};
use crate::paths::under_root;
use crate::scan::{self, Skipped};
use crate::suggest::{self, Context, Suggestion};
use crate::toplevel::TopLevel;

/// The result of check, audit and diff's suggestions.
#[derive(Debug, Serialize)]
pub struct DiscoveryReport {
    pub command: &'static str,
    pub root: PathBuf,
    /// The baseline manifest `check` compared with, if any.
    pub baseline: Option<PathBuf>,
    pub entries: u64,
    pub elapsed_ms: u64,
    pub suggestions: Vec<Suggestion>,
    pub skipped: Vec<Skipped>,
    pub errors: Vec<String>,
    #[serde(skip)]
    pub storage: PathBuf,
    #[serde(skip)]
    pub style: Style,
}

impl DiscoveryReport {
    pub fn has_persist(&self) -> bool {
        self.suggestions
            .iter()
            .any(|s| s.verdict == Verdict::Persist)
    }
}

pub fn check(global: &GlobalArgs, args: &DiscoverArgs) -> Result<ExitStatus, Error> {
    run(global, args, "check")
}

pub fn audit(global: &GlobalArgs, args: &DiscoverArgs) -> Result<ExitStatus, Error> {
    run(global, args, "audit")
}

/// The baseline manifest of this boot under the root, if one was recorded.
pub fn load_manifest(root: &Path) -> Result<Option<(PathBuf, Manifest)>, Error> {
    let file = under_root(root, Path::new(baseline::MANIFEST));
    match std::fs::read(&file) {
        Ok(data) => Manifest::parse(&data)
            .map(|m| Some((file.clone(), m)))
            .map_err(|e| Error::Usage(format!("{}: {e}", file.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("read", &file, e).into()),
    }
}

/// The suggestion context for a configuration: its rules, and the homes its users have.
pub fn context<'a>(config: &'a Config) -> Context<'a> {
    let mut homes: Vec<(String, PathBuf)> = config
        .persisted
        .entries()
        .iter()
        .filter_map(|e| Some((e.user.clone()?, e.home.clone()?)))
        .collect();
    homes.sort();
    homes.dedup();
    Context {
        knowledge: knowledge::builtin(),
        persisted: &config.persisted,
        rules: &config.check.rules,
        homes,
        complete: true,
    }
}

/// Where persist suggestions go: the first storage path of the persisted set.
pub fn storage(config: &Config) -> PathBuf {
    config
        .persisted
        .storages()
        .into_iter()
        .next()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_STORAGE))
}

fn run(
    global: &GlobalArgs,
    args: &DiscoverArgs,
    command: &'static str,
) -> Result<ExitStatus, Error> {
    let config = super::load_config(global)?;
    let since = if command == "check" {
        load_manifest(&config.root)?
    } else {
        None
    };
    let ignore = config.check.ignore_set();
    let request = scan::Request {
        root: &config.root,
        persisted: &config.persisted,
        knowledge: knowledge::builtin(),
        ignore: ignore.as_ref(),
        since: since.as_ref().map(|(_, m)| m),
        progress: true,
    };
    let found = scan::scan(&request)?;
    let report = DiscoveryReport {
        command,
        root: config.root.clone(),
        baseline: since.map(|(file, _)| file),
        entries: found.entries,
        elapsed_ms: found.elapsed.as_millis() as u64,
        suggestions: suggest::suggest(found.units, &context(&config)),
        skipped: found.skipped,
        errors: found.errors,
        storage: storage(&config),
        style: args.style,
    };
    output::emit(&report, global.format, global.color)?;
    Ok(if report.has_persist() {
        ExitStatus::Findings
    } else {
        ExitStatus::Clean
    })
}

impl Report for DiscoveryReport {
    const COMMAND: &'static str = "check";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        write_suggestions(out, s, &self.suggestions)?;
        for skip in &self.skipped {
            writeln!(
                out,
                "{}skipped {}: {}{:#}",
                s.dim,
                skip.path.display(),
                skip.why,
                s.dim
            )?;
        }
        if !self.errors.is_empty() {
            writeln!(
                out,
                "{}could not read {}:{:#}",
                s.problem,
                count(self.errors.len(), "path", "paths"),
                s.problem
            )?;
            for e in &self.errors {
                writeln!(out, "  {e}")?;
            }
        }
        let since = match (&self.baseline, self.command) {
            (Some(file), _) => format!("since the baseline {}", file.display()),
            (None, "check") => "no baseline: everything not persisted and not made by NixOS".into(),
            (None, _) => "everything not persisted and not made by NixOS".into(),
        };
        writeln!(
            out,
            "{} · {} in {:.1} s · {since}",
            summary(&self.suggestions),
            count(self.entries as usize, "entry", "entries"),
            self.elapsed_ms as f64 / 1000.0
        )
    }

    fn nix(&self) -> Option<String> {
        Some(nix::render(&self.suggestions, &self.storage, self.style))
    }
}

/// "2 to persist, 1 to review, 3 ephemeral".
pub fn summary(suggestions: &[Suggestion]) -> String {
    let n = |v: Verdict| suggestions.iter().filter(|s| s.verdict == v).count();
    format!(
        "{} to persist, {} to review, {} ephemeral",
        n(Verdict::Persist),
        n(Verdict::Review),
        n(Verdict::Ephemeral)
    )
}

/// Suggestions grouped by verdict, with sizes; what NixOS makes is only counted.
pub fn write_suggestions(
    out: &mut dyn Write,
    s: &Styles,
    suggestions: &[Suggestion],
) -> io::Result<()> {
    let groups = [
        (Verdict::Persist, "persist: a reset loses this", s.problem),
        (Verdict::Review, "review: decide", s.heading),
        (Verdict::Ephemeral, "ephemeral: safe to lose", s.good),
    ];
    let shown = |s: &Suggestion| match (&s.user, &s.relative) {
        (Some(u), Some(r)) => format!("users.{u}: {}", r.display()),
        _ => s.path.display().to_string(),
    };
    let width = suggestions
        .iter()
        .filter(|x| x.verdict != Verdict::Generated)
        .map(|x| shown(x).chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    for (verdict, title, style) in groups {
        let items: Vec<&Suggestion> = suggestions
            .iter()
            .filter(|x| x.verdict == verdict)
            .collect();
        if items.is_empty() {
            continue;
        }
        writeln!(out, "{style}{title} ({}){style:#}", items.len())?;
        for item in items {
            let service = item
                .service
                .as_deref()
                .map(|x| format!("{x}: "))
                .unwrap_or_default();
            writeln!(
                out,
                "  {}{:<width$}{:#} {:>12} {:>10}  {}{service}{}{:#}",
                s.path,
                shown(item),
                s.path,
                count(item.files as usize, "file", "files"),
                bytes(item.bytes),
                s.dim,
                item.reason,
                s.dim
            )?;
        }
    }
    let generated = suggestions
        .iter()
        .filter(|x| x.verdict == Verdict::Generated)
        .count();
    if generated > 0 {
        writeln!(
            out,
            "{}generated: {} NixOS or systemd make again (not shown; --format json lists them){:#}",
            s.dim,
            count(generated, "path", "paths"),
            s.dim
        )?;
    }
    Ok(())
}

/// What `baseline` recorded.
#[derive(Debug, Serialize)]
struct BaselineReport {
    manifest: PathBuf,
    entries: usize,
    /// The read-only snapshot, where one was taken.
    snapshot: Option<PathBuf>,
    /// Why no snapshot was taken.
    snapshot_note: Option<String>,
}

pub fn baseline(global: &GlobalArgs, args: &FsArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, BaselineReport::COMMAND)?;
    let config = super::load_config(global)?;
    let manifest = record(&config, &config.root)?;
    let file = under_root(&config.root, Path::new(baseline::MANIFEST));
    write_manifest(&file, &manifest)?;
    let (snapshot, snapshot_note) = match baseline_snapshot(&config, args) {
        Ok(path) => (Some(path), None),
        Err(note) => (None, Some(note)),
    };
    let report = BaselineReport {
        manifest: file,
        entries: manifest.len(),
        snapshot,
        snapshot_note,
    };
    output::emit(&report, global.format, global.color)?;
    Ok(ExitStatus::Clean)
}

/// Every entry of the tree at `root` outside persisted paths, as a manifest.
pub fn record(config: &Config, root: &Path) -> Result<Manifest, Error> {
    let request = scan::Request {
        root,
        persisted: &config.persisted,
        knowledge: knowledge::builtin(),
        ignore: None,
        since: None,
        progress: true,
    };
    let (entries, _) = scan::record(&request)?;
    Ok(Manifest::new(entries))
}

fn write_manifest(file: &Path, manifest: &Manifest) -> Result<(), Error> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| FsError::new("create", dir, e))?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, manifest.render()).map_err(|e| FsError::new("write", &tmp, e))?;
    std::fs::rename(&tmp, file).map_err(|e| FsError::new("write", file, e))?;
    Ok(())
}

/// Takes the read-only `.baseline` snapshot of the root subvolume, replacing the last one.
/// Every obstacle is a note, not an error: the manifest alone is a complete baseline.
fn baseline_snapshot(config: &Config, args: &FsArgs) -> Result<PathBuf, String> {
    let fs = super::filesystem(config, args).map_err(|e| e.to_string())?;
    let backend = backend::for_type(fs.fs_type);
    if !backend.has_subvolumes() {
        return Err("a tmpfs root has no snapshots".into());
    }
    if args.mounted.is_none() && !rustix::process::geteuid().is_root() {
        return Err("taking a snapshot needs root".into());
    }
    let top = TopLevel::open(&fs, args.mounted.as_deref()).map_err(|e| e.to_string())?;
    top.lock().map_err(|e| e.to_string())?;
    if backend
        .kind(&top, &fs.snapshot_dir)
        .map_err(|e| e.to_string())?
        == backend::Kind::Missing
    {
        backend
            .create(&top, &fs.snapshot_dir)
            .map_err(|e| e.to_string())?;
    }
    let snap = fs.snapshot_dir.join(baseline::SNAPSHOT);
    let kind = backend.kind(&top, &snap).map_err(|e| e.to_string())?;
    if kind == backend::Kind::Subvolume {
        crate::snapshot::delete_tree(backend.as_ref(), &top, &snap).map_err(|e| e.to_string())?;
    } else if kind != backend::Kind::Missing {
        return Err(format!(
            "{} is in the way and is not a subvolume",
            snap.display()
        ));
    }
    backend
        .snapshot(&top, &fs.root_subvolume, &snap, true)
        .map_err(|e| e.to_string())?;
    Ok(snap)
}

impl Report for BaselineReport {
    const COMMAND: &'static str = "baseline";

    fn human(&self, out: &mut dyn Write, _s: &Styles) -> io::Result<()> {
        writeln!(
            out,
            "baseline: {} in {}",
            count(self.entries, "entry", "entries"),
            self.manifest.display()
        )?;
        match (&self.snapshot, &self.snapshot_note) {
            (Some(snap), _) => writeln!(out, "read-only snapshot: {}", snap.display()),
            (None, Some(note)) => writeln!(out, "no snapshot: {note}"),
            (None, None) => Ok(()),
        }
    }
}
