//! `reset`: the boot-time root reset (see `crate::snapshots::reset`).

use std::io::{self, Write};

use serde::Serialize;

use crate::cli::{FsArgs, GlobalArgs};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::filesystem::backend;
use crate::filesystem::toplevel::TopLevel;
use crate::output::{self, Report, Styles};
use crate::paths::escape;
use crate::snapshots::reset::{self, Action, Layout};

#[derive(Debug, Serialize)]
struct ResetReport {
    filesystem: &'static str,
    /// `null` on a tmpfs root, where there is nothing to reset.
    #[serde(flatten)]
    outcome: Option<reset::Outcome>,
    #[serde(serialize_with = "crate::paths::json")]
    root_subvolume: std::path::PathBuf,
    #[serde(serialize_with = "crate::paths::json")]
    snapshot_dir: std::path::PathBuf,
}

pub fn run(global: &GlobalArgs, args: &FsArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, ResetReport::COMMAND)?;
    let config = super::load_config(global)?;
    let fs = super::filesystem(&config, args)?;
    let backend = backend::for_type(fs.fs_type);
    let mut report = ResetReport {
        filesystem: fs.fs_type.as_str(),
        outcome: None,
        root_subvolume: fs.root_subvolume.clone(),
        snapshot_dir: fs.snapshot_dir.clone(),
    };
    if backend.has_subvolumes() {
        let now = super::now()?;
        let top = TopLevel::open(&fs, args.mounted.as_deref())?;
        let layout = Layout {
            root: fs.root_subvolume.clone(),
            snapshot_dir: fs.snapshot_dir.clone(),
            blank: fs.blank_snapshot.clone(),
        };
        let mut log = |line: String| eprintln!("imperm reset: {line}");
        report.outcome = Some(
            reset::reset(backend.as_ref(), &top, &layout, now, &mut log)
                .map_err(|e| top.locate(e))?,
        );
    }
    output::emit(&report, global.format, global.color)?;
    Ok(ExitStatus::Clean)
}

impl Report for ResetReport {
    const COMMAND: &'static str = "reset";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        let root = escape(&self.root_subvolume);
        let Some(outcome) = &self.outcome else {
            return writeln!(
                out,
                "tmpfs root: nothing to reset (it starts empty at every boot)"
            );
        };
        let resumed = if outcome.resumed {
            " (an interrupted reset was completed)"
        } else {
            ""
        };
        match (&outcome.action, &outcome.snapshot) {
            (Action::Reset, Some(name)) => writeln!(
                out,
                "old root kept in {}{}/{name}{:#}; {root} is fresh{resumed}",
                s.path,
                escape(&self.snapshot_dir),
                s.path
            ),
            (Action::CreatedRoot, _) => {
                writeln!(out, "there was no {root}: created a fresh one{resumed}")
            }
            (Action::Unchanged, _) => writeln!(
                out,
                "{root} is still fresh from the last reset: nothing to do"
            ),
            (Action::Reset, None) => writeln!(out, "{root} is fresh{resumed}"),
        }
    }
}
