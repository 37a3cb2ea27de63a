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

    #[error(transparent)]
    Fs(#[from] FsError),

    /// A refusal or bad request, with its one-line cause.
    #[error("{0}")]
    Usage(String),

    #[error("writing output: {0}")]
    Output(#[source] io::Error),
}

impl Error {
    /// A closed pipe on stdout (`imperm … | head`) is the reader's choice, not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// A filesystem operation that failed: what was being done, to which path, and why.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {}", crate::paths::escape(path), describe(source))]
pub struct FsError {
    pub op: String,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FsError {
    pub fn new(op: &str, path: &std::path::Path, source: io::Error) -> FsError {
        FsError {
            op: op.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }
}

/// io::Error's Display adds "(os error N)"; the errno's own words are enough, except for
/// the ones whose meaning here needs saying.
pub fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => "a symlink is in the way (imperm never follows one)".to_string(),
        Some(libc::EXDEV) => "crosses into another mount".to_string(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}
