//! `lint`: problems in the persistence configuration; exit 1 when there are any.

use std::io::{self, Write};

use crate::cli::GlobalArgs;
use crate::discover::lint::{LintReport, lint};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::knowledge;
use crate::output::{self, Report, Styles};
use crate::paths::escape;
use crate::words::count;

pub fn run(global: &GlobalArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, LintReport::COMMAND)?;
    let config = super::load_config(global)?;
    let report = lint(
        &config.persisted,
        config.mount_table.as_ref(),
        config.root_subvolume(),
        &config.early_reads,
        knowledge::builtin(),
    );
    output::emit(&report, global.format, global.color)?;
    Ok(if report.findings.is_empty() {
        ExitStatus::Clean
    } else {
        ExitStatus::Findings
    })
}

impl Report for LintReport {
    const COMMAND: &'static str = "lint";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        for finding in &self.findings {
            let rule = finding.rule.as_str();
            writeln!(
                out,
                "{}{rule}{:#}: {}",
                s.problem, s.problem, finding.message
            )?;
            if !finding.declared_at.is_empty() {
                writeln!(
                    out,
                    "  {}declared at {}{:#}",
                    s.dim,
                    finding.declared_at.join(", "),
                    s.dim
                )?;
            }
            for merge in &finding.merges {
                writeln!(
                    out,
                    "  {}{}{:#} covers {}",
                    s.path,
                    escape(&merge.parent),
                    s.path,
                    merge
                        .covers
                        .iter()
                        .map(|p| escape(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
            }
        }
        let problems = match self.findings.len() {
            0 => format!("{}no problems{:#}", s.good, s.good),
            1 => "1 problem".to_string(),
            n => format!("{n} problems"),
        };
        let table = if self.mount_table {
            ""
        } else {
            " (no mount table with `/`: storage not checked)"
        };
        writeln!(
            out,
            "{problems} in {}, {}{table}",
            count(self.entries, "entry", "entries"),
            count(self.bind_mounts, "bind mount", "bind mounts")
        )
    }
}
