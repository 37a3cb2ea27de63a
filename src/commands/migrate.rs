//! `migrate`: the declared state of the live root copied into the persistent storage (see
//! [`crate::rollout::migrate`]); this reads the command line, takes restore's lock when a
//! filesystem is configured, asks systemd which units run, and prints the result.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::cli::{GlobalArgs, MigrateArgs};
use crate::config::PersistenceSource;
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::filesystem::backend;
use crate::filesystem::toplevel::TopLevel;
use crate::output::{self, Report, Styles};
use crate::paths::escape;
use crate::rollout::migrate::{Action, MigrateReport, Request, migrate};
use crate::words::{bytes, count};

/// Where `nixos-rebuild boot` leaves the configuration the next boot activates.
const NEXT_CONFIG: &str = "/nix/var/nix/profiles/system/etc/imperm/config.toml";

/// Owners are set on every copy: as anyone else, the first chown would fail midway.
fn require_root(dry_run: bool) -> Result<(), Error> {
    if !dry_run && !rustix::process::geteuid().is_root() {
        return Err(Error::Usage(
            "migrate sets the owners of what it copies: run it as root (or use --dry-run); nothing was done"
                .into(),
        ));
    }
    Ok(())
}

pub fn run(global: &GlobalArgs, args: &MigrateArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, MigrateReport::COMMAND)?;
    require_root(args.dry_run)?;
    let config = super::load_config(global)?;
    // Without the host's own entries, "every declared entry" would be imperm's template:
    // a run that copies the template, misses the host's services and exits 0 is worse
    // than none. On a host being rolled out, the usual cause is `nixos-rebuild boot`,
    // which does not activate the new generation's /etc.
    if args.paths.is_empty() && config.persistence_source == PersistenceSource::Template {
        return Err(Error::Usage(format!(
            "no persistence is declared ({} has none, and no --persistence-json was given): \
             migrate copies the host's own entries, not imperm's template; after \
             `nixos-rebuild boot`, the new generation's is --config {NEXT_CONFIG} \
             (or name the paths to copy); nothing was done",
            escape(&config.config_file.path)
        )));
    }
    // The lock `restore` and `reset` take, when there is a filesystem to take it on.
    let configured = config.filesystem.is_some() || args.fs.fs_type.is_some();
    let _top = if configured && !args.dry_run {
        let fs = super::filesystem(&config, &args.fs)?;
        if backend::for_type(fs.fs_type).has_subvolumes() {
            let top = TopLevel::open(&fs, args.fs.mounted.as_deref())?;
            top.lock()?;
            Some(top)
        } else {
            None
        }
    } else {
        None
    };
    let report = run_migrate(global, &config, &args.paths, None, args.dry_run, args.force)?;
    output::emit(&report, global.format, global.color)?;
    Ok(if report.incomplete() {
        ExitStatus::Findings
    } else {
        ExitStatus::Clean
    })
}

/// `persist add --move`: the paths migrated into `storage`, before their entries are
/// written (the storage's own lock is taken; no filesystem lock).
pub(super) fn move_paths(
    global: &GlobalArgs,
    paths: &[PathBuf],
    storage: &Path,
    dry_run: bool,
) -> Result<MigrateReport, Error> {
    require_root(dry_run)?;
    let config = super::load_config(global)?;
    run_migrate(global, &config, paths, Some(storage), dry_run, false)
}

fn run_migrate(
    global: &GlobalArgs,
    config: &crate::config::Config,
    paths: &[PathBuf],
    storage: Option<&Path>,
    dry_run: bool,
    force: bool,
) -> Result<MigrateReport, Error> {
    let units = crate::beneath::Tree::open(&config.root)
        .map(|tree| crate::discover::units::read(&tree).dirs)
        .unwrap_or_default();
    // systemd answers for the running system only: under --root another tree's units are
    // not this system's.
    let live = config.root == Path::new("/");
    let running = |names: &[String]| if live { running(names) } else { Vec::new() };
    migrate(&Request {
        config,
        paths,
        storage,
        dry_run,
        force,
        stamp: super::now()?.strftime("%Y%m%dT%H%M%SZ").to_string(),
        units: &units,
        running: &running,
        progress: global.format == output::Format::Human && io::stderr().is_terminal(),
    })
}

/// Which of the units are active, by `systemctl is-active`; none when it cannot say.
fn running(units: &[String]) -> Vec<String> {
    let Ok(out) = std::process::Command::new("systemctl")
        .arg("is-active")
        .arg("--")
        .args(units)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .zip(units)
        .filter(|(state, _)| matches!(*state, "active" | "activating" | "reloading"))
        .map(|(_, unit)| unit.clone())
        .collect()
}

impl Report for MigrateReport {
    const COMMAND: &'static str = "migrate";

    fn human(&self, out: &mut dyn Write, styles: &Styles) -> io::Result<()> {
        let width = self
            .entries
            .iter()
            .map(|e| escape(&e.path).chars().count())
            .max()
            .unwrap_or(0);
        for e in &self.entries {
            let (word, style) = match (e.action, e.done) {
                (_, Some(false)) => ("not migrated", styles.problem),
                (Action::Refuse, _) => ("refuse", styles.problem),
                (Action::Copy, Some(true)) => ("copied", styles.good),
                (Action::Replace, Some(true)) => ("replaced", styles.good),
                (Action::Skip, Some(true)) => ("skipped", styles.dim),
                (action, _) => (action.word(), styles.dim),
            };
            let size = match e.kind {
                Some(_) => format!(
                    "{:>12} {:>10}",
                    count(e.files as usize, "file", "files"),
                    bytes(e.bytes)
                ),
                None => format!("{:>23}", ""),
            };
            let mut reason = e.reason.clone();
            if let Some(aside) = &e.aside {
                reason = format!("the storage's copy kept in {}", escape(aside));
            }
            if e.tries > 1 && e.done == Some(true) {
                reason = format!("{reason} (changed while copied: {} tries)", e.tries);
            }
            // The padding after the styled path, not a width for it: a path is as long
            // as it is, and the columns after it start where the longest one ends.
            writeln!(
                out,
                "{style}{word:<12}{style:#} {}{}{:#}{:pad$} {size}  {}",
                styles.path,
                escape(&e.path),
                styles.path,
                "",
                reason,
                pad = width - escape(&e.path).chars().count(),
            )?;
        }
        for s in &self.space {
            let names: Vec<String> = s.storages.iter().map(|p| escape(p)).collect();
            let style = if s.enough { styles.dim } else { styles.problem };
            writeln!(
                out,
                "{style}space{style:#}        {}: {} needed, {} free{}",
                names.join(", "),
                bytes(s.needed),
                bytes(s.free),
                if s.enough { "" } else { ": NOT ENOUGH" }
            )?;
        }
        for w in &self.warnings {
            writeln!(out, "{}warning{:#}: {w}", styles.problem, styles.problem)?;
        }
        for n in &self.notes {
            writeln!(out, "{}note{:#}: {n}", styles.dim, styles.dim)?;
        }
        // Done or to do: a path not migrated is counted apart.
        let tally = |a: Action| {
            self.entries
                .iter()
                .filter(|e| e.action == a && e.done != Some(false))
                .count()
        };
        let failed = self
            .entries
            .iter()
            .filter(|e| e.done == Some(false))
            .count();
        let (copy, replace) = if self.dry_run {
            ("to copy", "to replace")
        } else {
            ("copied", "replaced")
        };
        writeln!(
            out,
            "{}{}: {} {copy}, {} {replace}, {} skipped, {} absent, {} refused{}{:#}",
            styles.heading,
            if self.dry_run {
                "dry run, nothing changed"
            } else {
                "migrate"
            },
            tally(Action::Copy),
            tally(Action::Replace),
            tally(Action::Skip),
            tally(Action::Absent),
            tally(Action::Refuse),
            if failed > 0 {
                format!(", {failed} not migrated")
            } else {
                String::new()
            },
            styles.heading
        )
    }
}
