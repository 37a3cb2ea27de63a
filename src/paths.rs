//! Path hygiene shared by every input: what counts as a valid persisted path, how it is
//! normalised, and how a host path is found under `--root`.
//!
//! Everything here is pure string/path manipulation; nothing touches the filesystem.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Why a path written in a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathProblem {
    Empty,
    NotAbsolute,
    NotRelative,
    ParentComponent,
    IsRoot,
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
        })
    }
}

/// Normalises an absolute path: collapses `//` and `.`, drops a trailing `/`.
/// `..` is refused rather than resolved, because resolving it lexically can silently
/// name a different directory than the one a symlink-following kernel would.
pub fn normalize_absolute(raw: &str) -> Result<PathBuf, PathProblem> {
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
        ];
        for (raw, want) in cases {
            let got = normalize_relative(raw);
            assert_eq!(got, want.map(PathBuf::from), "input {raw:?}");
        }
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
