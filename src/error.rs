//! Errors a command can end with. Each displays as one line that names the file, key or
//! path at fault; all of them exit 2.

use std::io;
use std::path::PathBuf;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("`{command}` is not built yet ({plan}); nothing was done")]
    NotBuilt {
        command: &'static str,
        plan: &'static str,
    },

    #[error("--format {format} is not available for `{command}` (use human or json)")]
    FormatUnsupported {
        format: &'static str,
        command: &'static str,
    },

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },

    #[error("writing output: {0}")]
    Output(#[source] io::Error),
}

impl Error {
    /// A closed pipe on stdout (`imperm … | head`) is the reader's choice, not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}
