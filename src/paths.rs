//! Path hygiene shared by every input: what counts as a valid persisted path, how it is
//! normalised, and how a host path is found under `--root`.
//!
//! Everything here is pure string/path manipulation; nothing touches the filesystem.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The longest path the kernel takes in a system call: PATH_MAX (4096) counts the
/// terminating NUL. A longer path can never be opened or bind-mounted by name.
pub const MAX_PATH_BYTES: usize = 4095;

/// Why a path written in a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathProblem {
    Empty,
    NotAbsolute,
    NotRelative,
    ParentComponent,
    IsRoot,
    /// A NUL, a newline or another control character: NUL cannot be in a path at all, and
    /// the others make every line-based output (messages, mount tables, generated units)
    /// ambiguous; no real persisted path holds one.
    ControlCharacter(char),
    /// Longer than [`MAX_PATH_BYTES`]; the length in bytes.
    TooLong(usize),
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::Empty => "is empty",
            PathProblem::NotAbsolute => "is not an absolute path",
            PathProblem::NotRelative => {
                "is absolute, but user entries are relative to the home directory"
            }
            PathProblem::ParentComponent => "contains `..`",
            PathProblem::IsRoot => "is the root directory itself, which cannot be persisted",
            PathProblem::ControlCharacter('\0') => "contains a NUL byte, which no path can hold",
            PathProblem::ControlCharacter('\n') => {
                "contains a newline; control characters are not accepted in paths"
            }
            PathProblem::ControlCharacter(c) => {
                return write!(
                    f,
                    "contains the control character U+{:04X}; control characters are not accepted in paths",
                    u32::from(*c)
                );
            }
            PathProblem::TooLong(len) => {
                return write!(
                    f,
                    "is {len} bytes long; Linux paths are at most {MAX_PATH_BYTES} bytes (PATH_MAX)"
                );
            }
        })
    }
}

/// Refuses what no normalisation can make a usable path: control characters and more
/// than [`MAX_PATH_BYTES`]. Every normaliser calls it first, so a caller cannot skip it;
/// a path built by joining (a home directory and a user entry) is checked again with it.
pub fn check_text(raw: &str) -> Result<(), PathProblem> {
    if let Some(c) = raw.chars().find(|c| c.is_control()) {
        return Err(PathProblem::ControlCharacter(c));
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathProblem::TooLong(raw.len()));
    }
    Ok(())
}

/// Normalises an absolute path: collapses `//` and `.`, drops a trailing `/`.
/// `..` is refused rather than resolved, because resolving it lexically can silently
/// name a different directory than the one a symlink-following kernel would.
pub fn normalize_absolute(raw: &str) -> Result<PathBuf, PathProblem> {
    check_text(raw)?;
    if raw.is_empty() {
        return Err(PathProblem::Empty);
    }
    if !raw.starts_with('/') {
        return Err(PathProblem::NotAbsolute);
    }
    let mut out = PathBuf::from("/");
    push_components(&mut out, raw)?;
    if out.as_os_str() == "/" {
        return Err(PathProblem::IsRoot);
    }
    Ok(out)
}

/// Normalises a path relative to a home directory (impermanence's `users.<name>` entries).
pub fn normalize_relative(raw: &str) -> Result<PathBuf, PathProblem> {
    check_text(raw)?;
    if raw.is_empty() {
        return Err(PathProblem::Empty);
    }
    if raw.starts_with('/') {
        return Err(PathProblem::NotRelative);
    }
    let mut out = PathBuf::new();
    push_components(&mut out, raw)?;
    if out.as_os_str().is_empty() {
        return Err(PathProblem::Empty);
    }
    Ok(out)
}

fn push_components(out: &mut PathBuf, raw: &str) -> Result<(), PathProblem> {
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => return Err(PathProblem::ParentComponent),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(())
}

/// Where the host path `abs` (as seen from the host's `/`) lives when the tree is
/// mounted at `root`.
pub fn under_root(root: &Path, abs: &Path) -> PathBuf {
    match abs.strip_prefix("/") {
        Ok(rel) if rel.as_os_str().is_empty() => root.to_path_buf(),
        Ok(rel) => root.join(rel),
        Err(_) => root.join(abs),
    }
}

/// Renders a refused value for a one-line message, quoted like `{:?}`, and cut after 100
/// characters: a 600 kB path is named by its start and its length, not echoed whole.
pub fn shown(raw: &str) -> String {
    const MAX: usize = 100;
    match raw.char_indices().nth(MAX) {
        None => format!("{raw:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &raw[..cut], raw.len()),
    }
}

/// Renders a path for a one-line message, quoted so that spaces and empty strings show.
pub fn quoted(path: &Path) -> String {
    format!("{:?}", path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_are_normalised_or_refused() {
        let cases: &[(&str, Result<&str, PathProblem>)] = &[
            ("/var/lib", Ok("/var/lib")),
            ("/var/lib/", Ok("/var/lib")),
            ("//var//lib", Ok("/var/lib")),
            ("/var/./lib", Ok("/var/lib")),
            ("/etc/machine-id", Ok("/etc/machine-id")),
            ("/with space/x", Ok("/with space/x")),
            ("", Err(PathProblem::Empty)),
            ("var/lib", Err(PathProblem::NotAbsolute)),
            ("./var", Err(PathProblem::NotAbsolute)),
            ("/var/../etc", Err(PathProblem::ParentComponent)),
            ("/..", Err(PathProblem::ParentComponent)),
            ("/", Err(PathProblem::IsRoot)),
            ("/./", Err(PathProblem::IsRoot)),
            ("/var/a\0b", Err(PathProblem::ControlCharacter('\0'))),
            ("/var/a\nb", Err(PathProblem::ControlCharacter('\n'))),
            ("/var/a\rb", Err(PathProblem::ControlCharacter('\r'))),
            ("/var/a\tb", Err(PathProblem::ControlCharacter('\t'))),
            ("/var/a\u{7f}", Err(PathProblem::ControlCharacter('\u{7f}'))),
            ("/var/a\u{85}", Err(PathProblem::ControlCharacter('\u{85}'))),
            ("/var/caf\u{e9}", Ok("/var/caf\u{e9}")),
        ];
        for (raw, want) in cases {
            let got = normalize_absolute(raw);
            assert_eq!(got, want.map(PathBuf::from), "input {raw:?}");
        }
    }

    #[test]
    fn relative_paths_are_normalised_or_refused() {
        let cases: &[(&str, Result<&str, PathProblem>)] = &[
            (".ssh", Ok(".ssh")),
            (".local/share/", Ok(".local/share")),
            ("./projects", Ok("projects")),
            ("/home/josh/.ssh", Err(PathProblem::NotRelative)),
            ("../other", Err(PathProblem::ParentComponent)),
            ("a/../../b", Err(PathProblem::ParentComponent)),
            ("", Err(PathProblem::Empty)),
            (".", Err(PathProblem::Empty)),
            (".ssh\n", Err(PathProblem::ControlCharacter('\n'))),
            ("a\0", Err(PathProblem::ControlCharacter('\0'))),
        ];
        for (raw, want) in cases {
            let got = normalize_relative(raw);
            assert_eq!(got, want.map(PathBuf::from), "input {raw:?}");
        }
    }

    #[test]
    fn paths_longer_than_path_max_are_refused() {
        let at_limit = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
        assert_eq!(normalize_absolute(&at_limit), Ok(PathBuf::from(&at_limit)));
        let deep = "/a".repeat(300_000);
        assert_eq!(
            normalize_absolute(&deep),
            Err(PathProblem::TooLong(600_000))
        );
        assert_eq!(
            normalize_relative(&"a/".repeat(3000)),
            Err(PathProblem::TooLong(6000))
        );
        assert_eq!(
            PathProblem::TooLong(600_000).to_string(),
            "is 600000 bytes long; Linux paths are at most 4095 bytes (PATH_MAX)"
        );
    }

    #[test]
    fn long_values_are_shown_cut() {
        assert_eq!(shown("/var/lib"), "\"/var/lib\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = "é".repeat(150);
        assert_eq!(shown(&long), format!("{:?}… (300 bytes)", "é".repeat(100)));
    }

    #[test]
    fn host_paths_map_under_a_root() {
        let root = Path::new("/mnt/snap");
        assert_eq!(under_root(root, Path::new("/")), PathBuf::from("/mnt/snap"));
        assert_eq!(
            under_root(root, Path::new("/var/lib/nixos")),
            PathBuf::from("/mnt/snap/var/lib/nixos")
        );
        assert_eq!(
            under_root(Path::new("/"), Path::new("/etc")),
            PathBuf::from("/etc")
        );
    }
}
