//! `completions SHELL` and `man`: generated from the clap definitions, so they cannot drift
//! from the real command line.

use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;

pub fn completions(shell: clap_complete::Shell) -> Result<ExitStatus, Error> {
    let mut command = Cli::command();
    let mut out = io::stdout().lock();
    clap_complete::generate(shell, &mut command, "imperm", &mut out);
    out.flush().map_err(Error::Output)?;
    Ok(ExitStatus::Clean)
}

/// imperm(1) on stdout; or, with `dir`, imperm(1) and the page of every subcommand it
/// refers to (`imperm-snapshots-gc.1`, …), so that no reference points at a missing page.
pub fn man(dir: Option<&Path>) -> Result<ExitStatus, Error> {
    let Some(dir) = dir else {
        let mut out = io::stdout().lock();
        clap_mangen::Man::new(Cli::command())
            .render(&mut out)
            .and_then(|()| out.flush())
            .map_err(Error::Output)?;
        return Ok(ExitStatus::Clean);
    };
    std::fs::create_dir_all(dir).map_err(|e| FsError::new("create", dir, e))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .map_err(|e| FsError::new("write manual pages into", dir, e))?;
    Ok(ExitStatus::Clean)
}
