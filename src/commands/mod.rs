//! Commands: each takes the parsed command line, does its work through the library's
//! modules, and hands one result to `output`. This is where I/O meets the pure core.

mod browse;
mod diff;
mod discover;
mod fleet;
mod generate;
mod journal;
mod lint;
mod migrate;
mod persist;
mod reset;
mod restore;
mod snapshots;
mod status;
mod stray;

use std::path::Path;

use jiff::Timestamp;

use crate::cli::{
    Cli, Command, FleetCommand, FsArgs, GlobalArgs, PersistCommand, SnapshotsCommand,
};
use crate::config::{
    Config, DEFAULT_ROOT_SUBVOLUME, DEFAULT_SNAPSHOT_DIR, FilesystemConfig, LayoutKey, LoadOptions,
    check_layout, subvolume_name,
};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::paths::escape;

/// Runs the command the user asked for.
pub fn run(cli: Cli) -> Result<ExitStatus, Error> {
    // A path below a top level imperm mounted names a directory that is gone by the time
    // the message is read: name it on its device instead.
    dispatch(cli).map_err(crate::filesystem::toplevel::rename_in_error)
}

fn dispatch(cli: Cli) -> Result<ExitStatus, Error> {
    let global = &cli.global;
    match &cli.command {
        Command::Status(args) => status::run(global, args),
        Command::Lint => lint::run(global),
        Command::Check(args) => discover::check(global, args),
        Command::Audit(args) => discover::audit(global, args),
        Command::Baseline(fs) => discover::baseline(global, fs),
        Command::Diff(args) => diff::run(global, args),
        Command::Journal(args) => journal::run(global, args),
        Command::Restore(args) => restore::run(global, args),
        Command::Stray(args) => stray::run(global, args),
        Command::Fleet(FleetCommand::Status(args)) => fleet::status(global, args),
        Command::Browse(args) => browse::run(global, args),
        Command::Persist(PersistCommand::Add(args)) => persist::add(global, args),
        Command::Reset(fs) => reset::run(global, fs),
        Command::Snapshots(SnapshotsCommand::Ls(fs)) | Command::Ls(fs) => snapshots::ls(global, fs),
        Command::Snapshots(SnapshotsCommand::Gc(args)) | Command::Gc(args) => {
            snapshots::gc(global, args)
        }
        Command::Snapshots(SnapshotsCommand::Mount(args)) => snapshots::mount(global, args),
        Command::Snapshots(SnapshotsCommand::Umount(args)) => snapshots::umount(global, args),
        Command::Completions { shell } => generate::completions(*shell),
        Command::Man { dir } => generate::man(dir.as_deref()),
        Command::Migrate(args) => migrate::run(global, args),
    }
}

/// Loads the configuration the global options name, printing its warnings to stderr.
fn load_config(global: &GlobalArgs) -> Result<Config, Error> {
    let config = Config::load(&LoadOptions {
        root: global.root.clone(),
        config: global.config.clone(),
        persistence_json: global.persistence_json.clone(),
    })?;
    for warning in &config.warnings {
        eprintln!("imperm: warning: {warning}");
    }
    Ok(config)
}

/// The filesystem settings: `[filesystem]` with each option given on the command line in
/// its place, validated like the configuration file.
fn filesystem(config: &Config, args: &FsArgs) -> Result<FilesystemConfig, Error> {
    let base = config.filesystem.as_ref();
    let fs_type = args.fs_type.or(base.map(|f| f.fs_type)).ok_or_else(|| {
        Error::Usage(format!(
            "no filesystem configured: add [filesystem] to {} or pass --fs",
            crate::paths::escape(&config.config_file.path)
        ))
    })?;
    let name = |flag: &str, given: &Option<String>, configured: Option<&Path>, default: &str| {
        match given {
            Some(raw) => subvolume_name(raw).map_err(|e| Error::Usage(format!("--{flag}: {e}"))),
            None => Ok(configured.unwrap_or(Path::new(default)).to_path_buf()),
        }
    };
    let root_subvolume = name(
        "root-subvolume",
        &args.root_subvolume,
        base.map(|f| f.root_subvolume.as_path()),
        DEFAULT_ROOT_SUBVOLUME,
    )?;
    let snapshot_dir = name(
        "snapshot-dir",
        &args.snapshot_dir,
        base.map(|f| f.snapshot_dir.as_path()),
        DEFAULT_SNAPSHOT_DIR,
    )?;
    let blank_snapshot = match (
        &args.blank_snapshot,
        base.and_then(|f| f.blank_snapshot.as_ref()),
    ) {
        (Some(raw), _) => {
            Some(subvolume_name(raw).map_err(|e| Error::Usage(format!("--blank-snapshot: {e}")))?)
        }
        (None, configured) => configured.cloned(),
    };
    if let Err(e) = check_layout(&root_subvolume, &snapshot_dir, blank_snapshot.as_deref()) {
        // Name the option the user gave; a conflict with only configured values was
        // already refused when the file was read.
        let given = |key: LayoutKey| match key {
            LayoutKey::RootSubvolume => args.root_subvolume.is_some(),
            LayoutKey::SnapshotDir => args.snapshot_dir.is_some(),
            LayoutKey::BlankSnapshot => args.blank_snapshot.is_some(),
        };
        let key = e.keys.into_iter().find(|&k| given(k)).unwrap_or(e.keys[0]);
        let source = if given(key) {
            key.flag().to_string()
        } else {
            format!(
                "filesystem.{} in {}",
                key.config_key(),
                escape(&config.config_file.path)
            )
        };
        return Err(Error::Usage(format!(
            "{source}: {}; nothing was done",
            e.what
        )));
    }
    Ok(FilesystemConfig {
        fs_type,
        device: args
            .device
            .clone()
            .or_else(|| base.and_then(|f| f.device.clone())),
        root_subvolume,
        snapshot_dir,
        blank_snapshot,
    })
}

/// Environment variable that fixes "now" (RFC 3339), so snapshot names and retention can be
/// reproduced in tests and when replaying a decision.
pub const NOW_ENV: &str = "IMPERM_NOW";

fn now() -> Result<Timestamp, Error> {
    match std::env::var(NOW_ENV) {
        Ok(raw) => raw
            .parse()
            .map_err(|e| Error::Usage(format!("{NOW_ENV}={raw:?} is not an RFC 3339 time: {e}"))),
        Err(_) => Ok(Timestamp::now()),
    }
}

/// The old-root snapshot a command works with: see
/// [`crate::snapshots::snapshot::old_root`].
fn old_root(
    backend: &dyn crate::filesystem::backend::Backend,
    top: &crate::filesystem::toplevel::TopLevel,
    fs: &FilesystemConfig,
    name: Option<&str>,
) -> Result<(String, std::path::PathBuf), Error> {
    crate::snapshots::snapshot::old_root(backend, top, fs, name, now()?)
}
