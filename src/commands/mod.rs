//! Commands: each takes the parsed command line, does its work through the library's
//! modules, and hands one result to `output`. This is where I/O meets the pure core.

mod generate;
mod lint;
mod status;

use crate::cli::{Cli, Command, GlobalArgs, PersistCommand, SnapshotsCommand};
use crate::config::{Config, LoadOptions};
use crate::error::Error;
use crate::exit::ExitStatus;

/// Runs the command the user asked for.
pub fn run(cli: Cli) -> Result<ExitStatus, Error> {
    let global = &cli.global;
    match &cli.command {
        Command::Status => status::run(global),
        Command::Lint => lint::run(global),
        Command::Completions { shell } => generate::completions(*shell),
        Command::Man => generate::man(),
        other => Err(not_built(other)),
    }
}

/// Commands later issues fill in say so and change nothing.
fn not_built(command: &Command) -> Error {
    let (command, plan) = match command {
        Command::Check => ("check", "planned in issue #4"),
        Command::Diff { .. } => ("diff", "planned in issue #4"),
        Command::Audit => ("audit", "planned in issue #4"),
        Command::Journal { .. } => ("journal", "planned in issue #5"),
        Command::Snapshots(SnapshotsCommand::Ls) | Command::Ls => {
            ("snapshots ls", "planned in issue #3")
        }
        Command::Snapshots(SnapshotsCommand::Gc(_)) | Command::Gc(_) => {
            ("snapshots gc", "planned in issue #3")
        }
        Command::Reset { .. } => ("reset", "planned in issue #3"),
        Command::Restore { .. } => ("restore", "planned in issue #5"),
        Command::Migrate { .. } => ("migrate", "not yet planned in an issue"),
        Command::Persist(PersistCommand::Add { .. }) => ("persist add", "planned in issue #6"),
        Command::Status | Command::Lint | Command::Completions { .. } | Command::Man => {
            unreachable!("built commands are dispatched in run")
        }
    };
    Error::NotBuilt { command, plan }
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
