//! Path hygiene shared by every input: what counts as a valid persisted path, how it is
//! normalised, and how a host path is found under `--root`.
//!
//! Everything here is pure string/path manipulation; nothing touches the filesystem.
//!
//! It also holds the one escaped form every output uses for a path (JSON fields, human
//! lines, the baseline manifest, messages): any path can be named, on one line, exactly.

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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
    normalize_given(OsStr::new(raw))
}

/// [`normalize_absolute`] for a path that names a file as it is on disk (`restore`'s
/// arguments): any bytes but `/` and NUL can be in a name there, so nothing is refused
/// but what cannot be a normalised absolute path.
pub fn normalize_given(raw: &OsStr) -> Result<PathBuf, PathProblem> {
    if raw.is_empty() {
        return Err(PathProblem::Empty);
    }
    if !raw.as_bytes().starts_with(b"/") {
        return Err(PathProblem::NotAbsolute);
    }
    let mut out = PathBuf::from("/");
    push_components(&mut out, Path::new(raw))?;
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
    push_components(&mut out, Path::new(raw))?;
    if out.as_os_str().is_empty() {
        return Err(PathProblem::Empty);
    }
    Ok(out)
}

fn push_components(out: &mut PathBuf, raw: &Path) -> Result<(), PathProblem> {
    for component in raw.components() {
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

/// Whether a name can be a user's: one path component (so its home is `/home/NAME`
/// itself, never `/home` or its parent), no control characters.
pub fn is_user_name(name: &str) -> bool {
    !matches!(name, "" | "." | "..") && !name.contains('/') && !name.chars().any(char::is_control)
}

/// Renders a refused value for a one-line message, quoted, in the one escaped form of
/// [`escape`] (so a refused path reads as every other path imperm prints), and cut after
/// 100 characters: a 600 kB path is named by its start and its length, not echoed whole.
pub fn shown(raw: &str) -> String {
    const MAX: usize = 100;
    match raw.char_indices().nth(MAX) {
        None => quoted(Path::new(raw)),
        Some((cut, _)) => format!("{}… ({} bytes)", quoted(Path::new(&raw[..cut])), raw.len()),
    }
}

/// A path as text, exactly and on one line: a backslash, a control character and a byte
/// that is not UTF-8 become `\xHH` (a multi-byte control character, byte by byte), every
/// other character stays as it is. So a `\` always starts an escape, ordinary names are
/// unchanged, and [`unescape`] gives back the same bytes.
pub fn escape(path: &Path) -> String {
    let bytes = path.as_os_str().as_bytes();
    // Nearly every name is printable ASCII: copied whole.
    if bytes
        .iter()
        .all(|&b| (b.is_ascii_graphic() || b == b' ') && b != b'\\')
    {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' || c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The path [`escape`] made `text` from; `None` when `text` holds a `\` that is not
/// followed by `x` and two hex digits.
pub fn unescape(text: &str) -> Option<PathBuf> {
    let bytes = text.as_bytes();
    if !bytes.contains(&b'\\') {
        return Some(PathBuf::from(text));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) != Some(&b'x') {
                return None;
            }
            let hex = bytes.get(i + 2..i + 4)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

/// The order of a tree listing: by component, a directory right before what is in it
/// (`/a`, `/a/b`, `/a.conf`), as `Path`'s own order, but comparing bytes in bulk rather
/// than component by component (paths of a deep tree share prefixes of many kilobytes).
/// For paths without `//`, `.` or a trailing `/`, which are all a walk makes.
pub fn tree_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    let (a, b) = (a.as_os_str().as_bytes(), b.as_os_str().as_bytes());
    if a == b {
        return std::cmp::Ordering::Equal;
    }
    // The length of the common prefix, found with whole-slice comparisons.
    let (mut lo, mut hi) = (0, a.len().min(b.len()));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if a[..mid] == b[..mid] {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    // A separator sorts before every other byte: a name ends there.
    let rank = |x: Option<&u8>| x.map(|&c| if c == b'/' { 0 } else { u16::from(c) + 1 });
    rank(a.get(lo)).cmp(&rank(b.get(lo)))
}

/// `#[serde(serialize_with = "crate::paths::json")]`: a path field in its [`escape`]d
/// form, so that JSON output is whole and exact for any name.
pub fn json<P: AsRef<Path>, S: serde::Serializer>(path: &P, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&escape(path.as_ref()))
}

/// [`json`] for an optional path.
pub fn json_opt<P: AsRef<Path>, S: serde::Serializer>(
    path: &Option<P>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => json(p, s),
        None => s.serialize_none(),
    }
}

/// [`json`] for a list of paths.
pub fn json_all<P: AsRef<Path>, S: serde::Serializer>(
    paths: &[P],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|p| escape(p.as_ref())))
}

/// Renders a path for a one-line message, quoted so that spaces and empty strings show,
/// and [`escape`]d so that any name is exact and on one line.
pub fn quoted(path: &Path) -> String {
    format!("\"{}\"", escape(path))
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
    fn paths_given_are_normalised_byte_for_byte() {
        type Case<'a> = (&'a [u8], Result<&'a [u8], PathProblem>);
        let cases: &[Case] = &[
            (b"/var/lib/", Ok(b"/var/lib")),
            (b"//srv/./caf\xe9", Ok(b"/srv/caf\xe9")),
            (b"/srv/new\nline", Ok(b"/srv/new\nline")),
            (b"", Err(PathProblem::Empty)),
            (b"srv", Err(PathProblem::NotAbsolute)),
            (b"/srv/../etc", Err(PathProblem::ParentComponent)),
            (b"/.", Err(PathProblem::IsRoot)),
        ];
        for (raw, want) in cases {
            let got = normalize_given(OsStr::from_bytes(raw));
            let want = want.map(|w| PathBuf::from(OsStr::from_bytes(w)));
            assert_eq!(got, want, "{raw:?}");
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
        assert_eq!(shown("a\nb"), "\"a\\x0ab\"");
        assert_eq!(shown("a\\b\u{1b}"), "\"a\\x5cb\\x1b\"");
        let long = "é".repeat(150);
        assert_eq!(shown(&long), format!("{:?}… (300 bytes)", "é".repeat(100)));
    }

    #[test]
    fn escaped_paths_are_exact_and_one_line() {
        let cases: &[(&[u8], &str)] = &[
            (b"/var/lib/forgejo", "/var/lib/forgejo"),
            (
                b"/with space/\xc3\xa9t\xc3\xa9",
                "/with space/\u{e9}t\u{e9}",
            ),
            (b"/a\xff\xfeb", "/a\\xff\\xfeb"),
            (b"/new\nline\ttab", "/new\\x0aline\\x09tab"),
            (b"/back\\slash", "/back\\x5cslash"),
            (b"/nel\xc2\x85", "/nel\\xc2\\x85"),
            (b"/del\x7f", "/del\\x7f"),
        ];
        for (raw, want) in cases {
            let path = Path::new(std::ffi::OsStr::from_bytes(raw));
            let shown = escape(path);
            assert_eq!(shown, *want);
            assert!(!shown.contains('\n'));
            assert_eq!(unescape(&shown).as_deref(), Some(path));
        }
        for bad in ["\\", "a\\x", "a\\x4", "a\\xzz", "\\n"] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn escaping_is_exact_and_one_line(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let path = Path::new(std::ffi::OsStr::from_bytes(&bytes));
            let shown = escape(path);
            proptest::prop_assert!(!shown.chars().any(char::is_control));
            let back = unescape(&shown);
            proptest::prop_assert_eq!(back.as_deref(), Some(path));
        }
    }

    #[test]
    fn tree_order_is_the_order_of_components() {
        let mut paths: Vec<PathBuf> = [
            "/a.conf",
            "/a/b",
            "/a",
            "/a b",
            "/ab",
            "/a/b/c",
            "/",
            "/a/b.x",
            "/a/b/d",
            "/b",
            "/a-",
            "/a/\u{e9}",
            "/a/z",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let mut by_components = paths.clone();
        by_components.sort();
        paths.sort_by(|a, b| tree_order(a, b));
        assert_eq!(paths, by_components);
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
