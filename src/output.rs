//! Output: every command builds one result value and this module renders it as human text
//! (with colour when wanted), JSON (one document on stdout) or Nix. Nothing is computed
//! twice for two formats.

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use clap::ValueEnum;
use serde::Serialize;

use crate::error::Error;

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Nix,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Human => "human",
            Format::Json => "json",
            Format::Nix => "nix",
        }
    }
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// The styles human output uses; plain when colour is off.
pub struct Styles {
    pub heading: Style,
    pub path: Style,
    pub problem: Style,
    pub good: Style,
    pub dim: Style,
}

impl Styles {
    const COLORED: Styles = Styles {
        heading: Style::new().bold(),
        path: Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Cyan))),
        problem: Style::new()
            .bold()
            .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Yellow))),
        good: Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Green))),
        dim: Style::new().dimmed(),
    };
}

/// A command's result, renderable in every format it supports.
pub trait Report: Serialize {
    /// The command's name, for messages.
    const COMMAND: &'static str;

    fn human(&self, out: &mut dyn Write, styles: &Styles) -> io::Result<()>;

    /// The Nix snippet, for commands whose result is persistence entries.
    fn nix(&self) -> Option<String> {
        None
    }
}

/// Writes `report` to stdout in `format`.
pub fn emit<R: Report>(report: &R, format: Format, color: ColorChoice) -> Result<(), Error> {
    let unsupported = || Error::FormatUnsupported {
        format: format.as_str(),
        command: R::COMMAND,
    };
    match format {
        Format::Json => {
            // Rendered whole before a byte is written: a failure leaves stdout empty, never
            // half a document.
            let mut text =
                serde_json::to_vec_pretty(report).map_err(|e| Error::Output(e.into()))?;
            text.push(b'\n');
            let mut out = io::stdout().lock();
            out.write_all(&text)
                .and_then(|()| out.flush())
                .map_err(Error::Output)
        }
        Format::Nix => {
            let text = report.nix().ok_or_else(unsupported)?;
            for note in crate::nixos::nix::left_out(&text) {
                eprintln!("imperm: warning: {note}");
            }
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(Error::Output)
        }
        Format::Human => {
            let choice = match color {
                ColorChoice::Auto => anstream::ColorChoice::Auto,
                ColorChoice::Always => anstream::ColorChoice::Always,
                ColorChoice::Never => anstream::ColorChoice::Never,
            };
            let mut out = anstream::AutoStream::new(io::stdout().lock(), choice);
            report
                .human(&mut out, &Styles::COLORED)
                .and_then(|()| out.flush())
                .map_err(Error::Output)
        }
    }
}

/// Refuses `--format nix` before any work is done, for commands that have no Nix form.
pub fn require_not_nix(format: Format, command: &'static str) -> Result<(), Error> {
    match format {
        Format::Nix => Err(Error::FormatUnsupported {
            format: format.as_str(),
            command,
        }),
        _ => Ok(()),
    }
}
