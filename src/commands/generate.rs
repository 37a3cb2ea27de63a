//! `completions SHELL` and `man`: generated from the clap definitions, so they cannot drift
//! from the real command line.

use std::io::{self, Write};

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::Error;
use crate::exit::ExitStatus;

pub fn completions(shell: clap_complete::Shell) -> Result<ExitStatus, Error> {
    let mut command = Cli::command();
    let mut out = io::stdout().lock();
    clap_complete::generate(shell, &mut command, "imperm", &mut out);
    out.flush().map_err(Error::Output)?;
    Ok(ExitStatus::Clean)
}

pub fn man() -> Result<ExitStatus, Error> {
    let mut out = io::stdout().lock();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .and_then(|()| out.flush())
        .map_err(Error::Output)?;
    Ok(ExitStatus::Clean)
}
