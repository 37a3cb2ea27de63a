//! The one error every configuration source reports: which file, where in it, and what is
//! wrong, on one line.

use std::fmt;
use std::path::{Path, PathBuf};

/// A refused configuration input. Displays as `FILE[:LINE:COL]: [KEY: ]WHAT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line_col: Option<(usize, usize)>,
    pub key: Option<String>,
    pub what: String,
}

impl ConfigError {
    pub fn new(file: &Path, what: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line_col: None,
            key: None,
            what: one_line(&what.into()),
        }
    }

    pub fn at(mut self, at: &Location) -> ConfigError {
        self.key = Some(at.key.clone());
        self.line_col = at.line_col;
        self
    }

    pub fn with_line_col(mut self, line_col: Option<(usize, usize)>) -> ConfigError {
        self.line_col = line_col;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line_col {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// Where a value sits in its source: a key path (`persistence."/persist".directories[2]`)
/// and, for TOML, the line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub key: String,
    pub line_col: Option<(usize, usize)>,
}

impl Location {
    pub fn key(key: impl Into<String>) -> Location {
        Location {
            key: key.into(),
            line_col: None,
        }
    }

    /// Renders the location for an entry's `origin`: `FILE:LINE` or `FILE: KEY`.
    pub fn origin(&self, file: &Path) -> String {
        match self.line_col {
            Some((line, _)) => format!("{}:{line}", file.display()),
            None => format!("{}: {}", file.display(), self.key),
        }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Messages from parsers sometimes span lines; a one-line cause is part of the contract.
pub fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nb = 2\n  c";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 14), (3, 3));
        assert_eq!(line_col(text, 999), (3, 4));
    }

    #[test]
    fn errors_render_on_one_line() {
        let e = ConfigError::new(Path::new("/etc/x.toml"), "bad\nthing\n").at(&Location {
            key: "check.ignore[0]".into(),
            line_col: Some((3, 5)),
        });
        assert_eq!(
            e.to_string(),
            "/etc/x.toml:3:5: check.ignore[0]: bad; thing"
        );
    }
}
