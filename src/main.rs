use std::process::ExitCode;

use clap::Parser;
use imperm::{cli::Cli, commands, exit::ExitStatus};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(status) => status.into(),
        Err(e) if e.is_broken_pipe() => ExitStatus::Clean.into(),
        Err(e) => {
            eprintln!("imperm: {e}");
            ExitStatus::Error.into()
        }
    }
}
