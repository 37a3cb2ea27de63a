//! The one error every configuration source reports: which file, where in it, and what is
//! wrong, on one line.

use crate::paths::escape;
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
            what: shortened(&one_line(&what.into())),
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
        write!(f, "{}", escape(&self.file))?;
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
            Some((line, _)) => format!("{}:{line}", escape(file)),
            None => format!("{}: {}", escape(file), self.key),
        }
    }
}

/// The start of every line of a text, so that each lookup of a line and column is a binary
/// search rather than a rescan of the text (a file with N entries used to cost N times its
/// length to load).
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> LineIndex<'a> {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    /// 1-based line and column (in characters) of a byte offset; past the end is the end.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let before = &self.text[self.starts[line - 1]..offset];
        // Columns count characters; an ASCII prefix (nearly every line of a configuration)
        // needs no counting, so even one long line of entries stays linear.
        let col = if before.is_ascii() {
            before.len()
        } else {
            before.chars().count()
        };
        (line, col + 1)
    }
}

/// A parser's message echoes what it refused (an unknown key, a bad value), however long
/// that is; the middle of a long message goes, keeping what was wrong and what was
/// expected.
fn shortened(what: &str) -> String {
    const KEEP: usize = 200;
    let chars = what.chars().count();
    if chars <= 2 * KEEP + 20 {
        return what.to_string();
    }
    let head: String = what.chars().take(KEEP).collect();
    let tail: String = what.chars().skip(chars - KEEP).collect();
    format!("{head} … {tail}")
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

    fn line_col(text: &str, offset: usize) -> (usize, usize) {
        LineIndex::new(text).line_col(offset)
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nb = 2\n  c";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 14), (3, 3));
        assert_eq!(line_col(text, 999), (3, 4));
        let text = "é = 1\n x";
        assert_eq!(line_col(text, 2), (1, 2));
        assert_eq!(line_col(text, 1), (1, 1), "inside a character: its start");
        assert_eq!(line_col(text, 8), (2, 2));
    }

    proptest::proptest! {
        #[test]
        fn the_index_agrees_with_counting(text in "[a\n\u{e9}\u{1F600}]{0,40}", offset in 0usize..200) {
            let mut at = offset.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let before = &text[..at];
            let line = before.matches('\n').count() + 1;
            let col = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
            proptest::prop_assert_eq!(LineIndex::new(&text).line_col(offset), (line, col));
        }
    }

    #[test]
    fn long_messages_lose_their_middle() {
        let what = format!(
            "unknown field `{}`, expected one of `type`",
            "0".repeat(5000)
        );
        let e = ConfigError::new(Path::new("c.toml"), what);
        assert_eq!(e.what.chars().count(), 403);
        assert!(e.what.starts_with("unknown field `000"));
        assert!(e.what.ends_with("000`, expected one of `type`"));
        assert!(e.what.contains(" … "));
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
