//! What tmpfiles.d(5) says is made, emptied or removed at every boot.
//!
//! `parse` reads one file's lines as systemd-tmpfiles does (whitespace-separated fields,
//! quotes and C escapes in them, the `!-=~^+` modifiers after the type, specifiers); a
//! line it cannot read exactly (an unknown type, a bad escape, a specifier that depends on
//! the running machine) is left out with why, so that nothing is called generated on a
//! guess. `chosen` picks the files as systemd does: by name across [`SEARCH_PATH`], the
//! first directory winning, in name order. `Table` keeps, per path, the line that decides
//! it (the first, as systemd-tmpfiles ignores later conflicting lines). `read` is the I/O.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The directories of tmpfiles.d files, highest priority first.
pub const SEARCH_PATH: [&str; 4] = [
    "/etc/tmpfiles.d",
    "/run/tmpfiles.d",
    "/usr/local/lib/tmpfiles.d",
    "/usr/lib/tmpfiles.d",
];

/// One line of a tmpfiles.d file, as systemd-tmpfiles applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The type letter (`d`, `L`, `R`, …).
    pub kind: char,
    /// `+`: replace what is there (`L+`, `C+`), truncate (`f+`), append (`w+`).
    pub plus: bool,
    /// `!`: only at boot (NixOS runs systemd-tmpfiles with `--boot`).
    pub boot: bool,
    /// `~`: the argument was base64 (it is decoded here).
    pub base64: bool,
    /// `^`: the argument names a credential, whose content is not known here.
    pub credential: bool,
    /// Absolute and simplified, specifiers resolved, `/var/run/…` as `/run/…`.
    pub path: PathBuf,
    /// The argument as systemd uses it: for `C`, `L`, `f`, `F`, `w` unescaped with its
    /// specifiers resolved (for `L` and `C` without one, `/usr/share/factory/PATH`),
    /// decoded with `~`; as written for the other types.
    pub argument: Option<Vec<u8>>,
    pub age: Option<String>,
}

impl Entry {
    /// Whether the line makes its path (a file, directory, subvolume, link, node or copy).
    pub fn creates(&self) -> bool {
        matches!(
            self.kind,
            'f' | 'F' | 'd' | 'D' | 'v' | 'q' | 'Q' | 'p' | 'L' | 'c' | 'b' | 'C'
        )
    }

    /// Whether the line removes what matches it at boot (`r`, `R`: their paths are globs).
    pub fn removes(&self) -> bool {
        matches!(self.kind, 'r' | 'R')
    }

    /// The type with its modifiers, as written back in messages (`L+`, `f`).
    pub fn type_text(&self) -> String {
        let mut t = self.kind.to_string();
        if self.plus {
            t.push('+');
        }
        t
    }
}

/// Every type systemd-tmpfiles knows.
const TYPES: &str = "fFdDvqQpLcbCwetTaAhHxXrRzZm";

/// Why a line is left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// systemd-tmpfiles refuses it too (a bad escape, an unknown type): worth a note.
    Invalid(String),
    /// It names something of the running machine that the tree does not say (`%b`, the
    /// boot): systemd resolves it, imperm cannot, and leaves the line out quietly.
    Unknowable(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Invalid(why) | Skip::Unknowable(why) => f.write_str(why),
        }
    }
}

impl From<String> for Skip {
    fn from(why: String) -> Skip {
        Skip::Invalid(why)
    }
}

impl From<&str> for Skip {
    fn from(why: &str) -> Skip {
        Skip::Invalid(why.to_string())
    }
}

/// What of the machine the specifiers name that its tree says: `%m` (`/etc/machine-id`),
/// `%H` and `%l` (`/etc/hostname`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    pub machine_id: Option<String>,
    pub hostname: Option<String>,
}

impl Host {
    /// From the two files' contents: a machine id is 32 lowercase hex digits, a host name
    /// letters, digits, `-` and `.`; anything else is not known.
    pub fn from_files(machine_id: Option<&[u8]>, hostname: Option<&[u8]>) -> Host {
        let first_line = |b: &[u8]| {
            let line = b
                .split(|&c| c == b'\n')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            std::str::from_utf8(line).ok().map(str::to_string)
        };
        Host {
            machine_id: machine_id.and_then(first_line).filter(|m| {
                m.len() == 32
                    && m.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            }),
            hostname: hostname.and_then(first_line).filter(|h| {
                !h.is_empty()
                    && h.len() <= 64
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }),
        }
    }
}

/// The lines of one file: for each line that is not blank or a comment, its number
/// (from 1) and the entry, or why it is left out.
pub fn parse(text: &[u8], host: &Host) -> Vec<(usize, Result<Entry, Skip>)> {
    let mut out = Vec::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = raw.trim_ascii();
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        out.push((i + 1, parse_line(line, host)));
    }
    out
}

fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The next whitespace-separated word of `rest`, with quotes (`'…'`, `"…"`, anywhere in
/// the word) removed and C escapes resolved, as systemd's `extract_first_word` with
/// `EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE`; `rest` then starts at the next word.
fn word(rest: &mut &[u8]) -> Result<Option<Vec<u8>>, String> {
    while rest.first().is_some_and(|&b| is_separator(b)) {
        *rest = &rest[1..];
    }
    if rest.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    loop {
        let Some(&c) = rest.first() else {
            if quote.is_some() {
                return Err("a quote is not closed".into());
            }
            break;
        };
        if quote == Some(c) {
            quote = None;
            *rest = &rest[1..];
            continue;
        }
        if quote.is_none() && (c == b'\'' || c == b'"') {
            quote = Some(c);
            *rest = &rest[1..];
            continue;
        }
        if quote.is_none() && is_separator(c) {
            break;
        }
        *rest = &rest[1..];
        if c == b'\\' {
            out.extend(unescape_one(rest)?);
        } else {
            out.push(c);
        }
    }
    while rest.first().is_some_and(|&b| is_separator(b)) {
        *rest = &rest[1..];
    }
    Ok(Some(out))
}

/// One C escape after its backslash (systemd's `cunescape_one`): `\a \b \f \n \r \t \v
/// \\ \" \' \s`, `\xNN`, `\NNN` (octal), `\uNNNN`, `\UNNNNNNNN`. NUL is refused, as are
/// unknown escapes.
fn unescape_one(rest: &mut &[u8]) -> Result<Vec<u8>, String> {
    let Some(&c) = rest.first() else {
        return Err("a backslash ends the line".into());
    };
    *rest = &rest[1..];
    let simple = match c {
        b'a' => Some(7),
        b'b' => Some(8),
        b'f' => Some(12),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(11),
        b'\\' | b'"' | b'\'' => Some(c),
        b's' => Some(b' '),
        _ => None,
    };
    if let Some(b) = simple {
        return Ok(vec![b]);
    }
    let take = |rest: &mut &[u8], n: usize, radix: u32| -> Result<u32, String> {
        let digits = rest
            .get(..n)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.chars().all(|ch| ch.is_digit(radix)))
            .ok_or_else(|| format!("\\{} needs {n} digits", c as char))?;
        *rest = &rest[n..];
        Ok(u32::from_str_radix(digits, radix).expect("digits checked"))
    };
    let nul = || "an escape makes a NUL byte".to_string();
    match c {
        b'x' => match take(rest, 2, 16)? {
            0 => Err(nul()),
            v => Ok(vec![v as u8]),
        },
        b'0'..=b'7' => {
            // The first digit is the one read already.
            let tail = take(rest, 2, 8)?;
            let v = u32::from(c - b'0') * 64 + tail;
            match v {
                0 => Err(nul()),
                v if v > 255 => Err("an octal escape past \\377".into()),
                v => Ok(vec![v as u8]),
            }
        }
        b'u' | b'U' => {
            let v = take(rest, if c == b'u' { 4 } else { 8 }, 16)?;
            match char::from_u32(v) {
                Some('\0') => Err(nul()),
                Some(ch) => Ok(ch.to_string().into_bytes()),
                None => Err(format!("\\{} is not a character", c as char)),
            }
        }
        _ => Err(format!("\\{} is not an escape", c as char)),
    }
}

/// C escapes resolved in a whole argument (systemd's `cunescape`: no quotes).
fn unescape_all(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(&c) = rest.first() {
        rest = &rest[1..];
        if c == b'\\' {
            out.extend(unescape_one(&mut rest)?);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// tmpfiles.d's specifiers for the system instance. Those that depend on the running
/// system (`%b`, `%v`, …), and `%m`, `%H`, `%l` when the tree does not say them, cannot
/// be known: such a line is left out, as systemd-tmpfiles leaves out a line whose
/// specifier it cannot resolve.
fn specifiers(text: &[u8], host: &Host) -> Result<Vec<u8>, Skip> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.iter();
    while let Some(&c) = bytes.next() {
        if c != b'%' {
            out.push(c);
            continue;
        }
        let Some(&s) = bytes.next() else {
            return Err("a % ends the field".into());
        };
        let value: &[u8] = match s {
            b'%' => b"%",
            b'C' => b"/var/cache",
            b'L' => b"/var/log",
            b'S' => b"/var/lib",
            b't' => b"/run",
            b'T' => b"/tmp",
            b'V' => b"/var/tmp",
            b'h' => b"/root",
            b'u' | b'g' => b"root",
            b'U' | b'G' => b"0",
            b'm' if host.machine_id.is_some() => {
                host.machine_id.as_deref().unwrap_or_default().as_bytes()
            }
            b'H' if host.hostname.is_some() => {
                host.hostname.as_deref().unwrap_or_default().as_bytes()
            }
            b'l' if host.hostname.is_some() => host
                .hostname
                .as_deref()
                .and_then(|h| h.split('.').next())
                .unwrap_or_default()
                .as_bytes(),
            b'a' | b'b' | b'B' | b'H' | b'l' | b'm' | b'o' | b'v' | b'w' | b'W' => {
                return Err(Skip::Unknowable(format!(
                    "%{} depends on the running machine",
                    char::from(s).escape_default()
                )));
            }
            _ => {
                return Err(Skip::Invalid(format!(
                    "%{} is not a specifier",
                    char::from(s).escape_default()
                )));
            }
        };
        out.extend_from_slice(value);
    }
    Ok(out)
}

/// A path as systemd-tmpfiles takes it: absolute, `/var/run/…` as `/run/…`, without empty
/// or `.` components. One with `..` is left out: only the tree's links could say where
/// it is.
fn simplify(raw: &[u8]) -> Result<PathBuf, String> {
    if raw.first() != Some(&b'/') {
        return Err("the path is not absolute".into());
    }
    let mut parts: Vec<&[u8]> = raw
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if parts.contains(&b"..".as_slice()) {
        return Err("the path holds `..`".into());
    }
    if parts.len() > 2 && parts[0] == b"var" && parts[1] == b"run" {
        parts.splice(0..2, [b"run".as_slice()]);
    }
    let mut path = PathBuf::from("/");
    for p in parts {
        path.push(std::ffi::OsStr::from_bytes(p));
    }
    Ok(path)
}

/// Base64 as systemd decodes it (whitespace ignored, padding optional).
fn unbase64(text: &[u8]) -> Result<Vec<u8>, String> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let digits = digits
        .strip_suffix(b"==")
        .or_else(|| digits.strip_suffix(b"="))
        .unwrap_or(&digits);
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in digits {
        let v = value(c).ok_or("the argument is not base64")?;
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits >= 6 {
        return Err("the argument is not base64".into());
    }
    Ok(out)
}

fn empty_or_dash(field: &Option<Vec<u8>>) -> bool {
    field.as_ref().is_none_or(|f| f.is_empty() || f == b"-")
}

/// One line that is not blank or a comment.
fn parse_line(line: &[u8], host: &Host) -> Result<Entry, Skip> {
    let mut rest = line;
    let mut fields: Vec<Option<Vec<u8>>> = Vec::with_capacity(6);
    for _ in 0..6 {
        fields.push(word(&mut rest)?);
    }
    let argument = (!rest.is_empty() && rest != b"-").then(|| rest.to_vec());
    let (Some(action), Some(raw_path)) = (fields[0].clone(), fields[1].clone()) else {
        return Err("a line needs a type and a path".into());
    };
    let action = String::from_utf8(action).map_err(|_| "the type is not UTF-8".to_string())?;
    let mut chars = action.chars();
    let kind = chars.next().ok_or("the type is empty")?;
    if !TYPES.contains(kind) {
        return Err(format!("{} is not a type", kind.escape_default()).into());
    }
    let mut entry = Entry {
        kind,
        plus: false,
        boot: false,
        base64: false,
        credential: false,
        path: PathBuf::new(),
        argument: None,
        age: None,
    };
    let mut seen = String::new();
    for m in chars {
        if seen.contains(m) || !"!+-=~^".contains(m) {
            return Err(format!("{} has an unknown modifier", action.escape_default()).into());
        }
        seen.push(m);
        match m {
            '!' => entry.boot = true,
            '+' => entry.plus = true,
            '~' => entry.base64 = true,
            '^' => entry.credential = true,
            // `-` (errors ignored) and `=` (replace a mismatched type) change nothing here.
            _ => {}
        }
    }
    entry.path = simplify(&specifiers(&raw_path, host)?)?;
    if !empty_or_dash(&fields[5]) {
        entry.age = fields[5]
            .as_ref()
            .map(|a| String::from_utf8_lossy(a).into_owned());
    }
    let needs_argument = matches!(kind, 'w' | 'c' | 'b' | 't' | 'T' | 'a' | 'A' | 'h' | 'H');
    if needs_argument && argument.is_none() {
        return Err(format!("a {kind} line needs an argument").into());
    }
    if entry.base64 && !matches!(kind, 'f' | 'F' | 'w') {
        return Err(format!("a {kind} line takes no base64 argument").into());
    }
    entry.argument = match kind {
        'C' | 'L' | 'f' | 'F' | 'w' if entry.credential => None,
        'C' | 'L' | 'f' | 'F' | 'w' => match &argument {
            Some(a) if entry.base64 => Some(unbase64(a)?),
            Some(a) => Some(specifiers(&unescape_all(a)?, host)?),
            None => None,
        },
        _ => argument,
    };
    if matches!(kind, 'L' | 'C') {
        let arg = entry.argument.get_or_insert_with(|| {
            let mut factory = b"/usr/share/factory".to_vec();
            factory.extend_from_slice(entry.path.as_os_str().as_bytes());
            factory
        });
        if kind == 'C' && arg.first() != Some(&b'/') {
            return Err("a C line's source is not absolute".into());
        }
    }
    Ok(entry)
}

/// A line where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Made {
    pub entry: Entry,
    /// The file, as seen from the tree's `/` (`/etc/tmpfiles.d/foo.conf`).
    pub file: PathBuf,
    /// From 1.
    pub line: usize,
}

impl Made {
    /// `FILE:LINE`, as a `source` names it.
    pub fn at(&self) -> String {
        format!("{}:{}", crate::paths::escape(&self.file), self.line)
    }
}

/// The lines that decide paths, across every file read in order.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// The line that makes each path: the first (systemd-tmpfiles ignores a later line of
    /// another kind for the same path as a duplicate).
    pub made: BTreeMap<PathBuf, Made>,
    /// `r` and `R` lines, in order; their paths are globs.
    pub removed: Vec<Made>,
}

impl Table {
    pub fn add(&mut self, file: &Path, line: usize, entry: Entry) {
        let made = Made {
            file: file.to_path_buf(),
            line,
            entry,
        };
        if made.entry.creates() {
            self.made.entry(made.entry.path.clone()).or_insert(made);
        } else if made.entry.removes() {
            self.removed.push(made);
        }
    }
}

/// The files to read, in the order they apply: by name, the file of the first directory
/// that has that name. `found` lists, directory by directory in priority order, the
/// names each holds; only `*.conf` names that are not hidden count.
pub fn chosen(found: &[(PathBuf, Vec<OsString>)]) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<&[u8], PathBuf> = BTreeMap::new();
    for (dir, names) in found {
        for name in names {
            let bytes = name.as_bytes();
            if bytes.ends_with(b".conf") && !bytes.starts_with(b".") {
                by_name.entry(bytes).or_insert_with(|| dir.join(name));
            }
        }
    }
    by_name.into_values().collect()
}

/// The most bytes read of one tmpfiles.d file, and of all of them.
const FILE_MAX: u64 = 4 << 20;
const TOTAL_MAX: u64 = 64 << 20;
/// The most names of one directory looked at.
const ENTRIES_MAX: usize = 100_000;

/// What the tree's tmpfiles.d files say.
#[derive(Debug, Default)]
pub struct Found {
    pub table: Table,
    /// Files that could not be read and lines left out, with why (one line each).
    pub problems: Vec<String>,
}

/// Reads the tree's tmpfiles.d files (each path resolved as the tree sees it: NixOS links
/// `/etc/tmpfiles.d` and its files into the store). A file that is a link to `/dev/null`
/// or empty masks the files of its name below it. Nothing here fails the command.
pub fn read(tree: &crate::beneath::Tree) -> Found {
    let mut found = Found::default();
    let mut listed = Vec::new();
    for dir in SEARCH_PATH {
        let dir = Path::new(dir);
        let fd = match tree.open_dir_resolved(dir) {
            Ok(Some(fd)) => fd,
            Ok(None) => continue,
            Err(e) => {
                found.problems.push(format!(
                    "{}: {}",
                    crate::paths::escape(dir),
                    crate::discover::units::cause(&e)
                ));
                continue;
            }
        };
        let mut names = Vec::new();
        if let Ok(mut entries) = rustix::fs::Dir::read_from(&fd) {
            while let Some(Ok(entry)) = entries.next() {
                if names.len() >= ENTRIES_MAX {
                    found.problems.push(format!(
                        "{}: more than {ENTRIES_MAX} entries; the rest are not read",
                        crate::paths::escape(dir)
                    ));
                    break;
                }
                names.push(OsString::from_vec(entry.file_name().to_bytes().to_vec()));
            }
        }
        listed.push((dir.to_path_buf(), names));
    }
    let small = |abs: &str| tree.read_bounded(Path::new(abs), 4096).ok().flatten();
    let host = Host::from_files(
        small("/etc/machine-id").as_deref(),
        small("/etc/hostname").as_deref(),
    );
    let mut budget = TOTAL_MAX;
    for file in chosen(&listed) {
        let bytes = match crate::discover::units::read_conf(tree, &file, FILE_MAX.min(budget)) {
            Ok(Some((bytes, _))) => bytes,
            Ok(None) => continue,
            Err(why) => {
                found
                    .problems
                    .push(format!("{}: {why}", crate::paths::escape(&file)));
                continue;
            }
        };
        budget = budget.saturating_sub(bytes.len() as u64);
        for (line, parsed) in parse(&bytes, &host) {
            match parsed {
                Ok(entry) => found.table.add(&file, line, entry),
                Err(Skip::Unknowable(_)) => {}
                Err(Skip::Invalid(why)) => found.problems.push(format!(
                    "{}:{line}: left out: {why}",
                    crate::paths::escape(&file)
                )),
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(type, path, argument)` of a line, or the start of why it is left out.
    fn one(line: &str) -> Result<(String, String, Option<String>), String> {
        let host = Host::from_files(
            Some(b"0123456789abcdef0123456789abcdef\n"),
            Some(b"router.lan\n"),
        );
        let mut got = parse(line.as_bytes(), &host);
        assert_eq!(got.len(), 1, "{line:?}");
        got.remove(0).1.map_err(|e| e.to_string()).map(|e| {
            (
                {
                    let mut t = e.type_text();
                    if e.boot {
                        t.push('!');
                    }
                    if e.base64 {
                        t.push('~');
                    }
                    if e.credential {
                        t.push('^');
                    }
                    t
                },
                crate::paths::escape(&e.path),
                e.argument.map(|a| String::from_utf8_lossy(&a).into_owned()),
            )
        })
    }

    #[test]
    fn lines_as_systemd_tmpfiles_reads_them() {
        type Want = Result<(&'static str, &'static str, Option<&'static str>), &'static str>;
        let cases: &[(&str, Want)] = &[
            (
                "d /var/lib/foo 0750 foo foo -",
                Ok(("d", "/var/lib/foo", None)),
            ),
            ("d /var/lib/foo", Ok(("d", "/var/lib/foo", None))),
            (
                "D /var/lib/foo/tmp 0700 - - 1d",
                Ok(("D", "/var/lib/foo/tmp", None)),
            ),
            (
                "v /var/lib/machines 0700",
                Ok(("v", "/var/lib/machines", None)),
            ),
            ("q /var/lib/q", Ok(("q", "/var/lib/q", None))),
            ("Q /var/lib/q", Ok(("Q", "/var/lib/q", None))),
            ("e /var/cache/x - - - 10d", Ok(("e", "/var/cache/x", None))),
            ("x /tmp/keep*", Ok(("x", "/tmp/keep*", None))),
            ("z /var/lib/x 0700", Ok(("z", "/var/lib/x", None))),
            ("Z /var/lib/x 0700 a a", Ok(("Z", "/var/lib/x", None))),
            ("r /var/lib/x/lock", Ok(("r", "/var/lib/x/lock", None))),
            ("R /var/lib/x/*.tmp", Ok(("R", "/var/lib/x/*.tmp", None))),
            (
                "w /proc/sys/x - - - - 1",
                Ok(("w", "/proc/sys/x", Some("1"))),
            ),
            // The argument is the rest of the line, spaces and all.
            (
                "f /etc/motd 0644 - - - hello  world",
                Ok(("f", "/etc/motd", Some("hello  world"))),
            ),
            ("f /etc/empty", Ok(("f", "/etc/empty", None))),
            ("f /etc/dash - - - - -", Ok(("f", "/etc/dash", None))),
            ("F /etc/t - - - - x", Ok(("F", "/etc/t", Some("x")))),
            ("f+ /etc/t - - - - x", Ok(("f+", "/etc/t", Some("x")))),
            // C escapes and specifiers in an argument are resolved for f, L, C, w.
            (
                r"f /etc/e - - - - a\tb\x41%%",
                Ok(("f", "/etc/e", Some("a\tbA%"))),
            ),
            (
                "L /etc/l - - - - /nix/store/abc-x",
                Ok(("L", "/etc/l", Some("/nix/store/abc-x"))),
            ),
            (
                "L+ /etc/l - - - - %S/x",
                Ok(("L+", "/etc/l", Some("/var/lib/x"))),
            ),
            // Without one, L and C take the factory's file.
            (
                "L /etc/nsswitch.conf",
                Ok((
                    "L",
                    "/etc/nsswitch.conf",
                    Some("/usr/share/factory/etc/nsswitch.conf"),
                )),
            ),
            (
                "C /var/lib/x - - - - /nix/store/abc-init",
                Ok(("C", "/var/lib/x", Some("/nix/store/abc-init"))),
            ),
            ("C /var/lib/x - - - - relative", Err("a C line's source")),
            ("p /run/fifo 0600", Ok(("p", "/run/fifo", None))),
            ("c /dev/x 0600 - - - 1:3", Ok(("c", "/dev/x", Some("1:3")))),
            ("b /dev/x", Err("a b line needs an argument")),
            ("w /x", Err("a w line needs an argument")),
            // Modifiers, each once, in any order.
            ("d! /run/x", Ok(("d!", "/run/x", None))),
            ("L+!- /etc/x - - - - /y", Ok(("L+!", "/etc/x", Some("/y")))),
            ("d-= /run/x", Ok(("d", "/run/x", None))),
            (
                "f~ /etc/b64 - - - - aGVsbG8=",
                Ok(("f~", "/etc/b64", Some("hello"))),
            ),
            (
                "f~ /etc/b64 - - - - aGVsbG8",
                Ok(("f~", "/etc/b64", Some("hello"))),
            ),
            ("f~ /etc/b64 - - - - a*b", Err("the argument is not base64")),
            ("L~ /etc/x - - - - eA==", Err("a L line takes no base64")),
            ("f^ /etc/cred - - - - mycred", Ok(("f^", "/etc/cred", None))),
            ("d!! /x", Err("d!! has an unknown modifier")),
            ("d* /x", Err("d* has an unknown modifier")),
            ("j /x", Err("j is not a type")),
            ("d", Err("a line needs a type and a path")),
            // Quoting and C escapes in the path; specifiers after them.
            (
                r#"d "/var/lib/with space" 0755"#,
                Ok(("d", "/var/lib/with space", None)),
            ),
            (r"d /var/lib/a\x20b", Ok(("d", "/var/lib/a b", None))),
            (r"d '/var/lib/q'uoted", Ok(("d", "/var/lib/quoted", None))),
            (r"d /var/lib/nl\n", Ok(("d", r"/var/lib/nl\x0a", None))),
            (r"d /var/lib/\xff", Ok(("d", r"/var/lib/\xff", None))),
            (r"d /var/lib/\101\u00e9", Ok(("d", "/var/lib/Aé", None))),
            (r"d /var/lib/\x00", Err("an escape makes a NUL byte")),
            (r"d /var/lib/\q", Err(r"\q is not an escape")),
            (r"d /var/lib/x\", Err("a backslash ends the line")),
            (r"d /var/lib/\x4", Err(r"\x needs 2 digits")),
            (r#"d "/var/lib/open"#, Err("a quote is not closed")),
            ("d %S/foo", Ok(("d", "/var/lib/foo", None))),
            ("d %C/foo", Ok(("d", "/var/cache/foo", None))),
            ("d %L/foo %t", Ok(("d", "/var/log/foo", None))),
            ("d %t/foo%%", Ok(("d", "/run/foo%", None))),
            ("d %h/.x", Ok(("d", "/root/.x", None))),
            // The machine id and host name come from the tree; the boot is unknown.
            (
                "d /var/log/journal/%m",
                Ok((
                    "d",
                    "/var/log/journal/0123456789abcdef0123456789abcdef",
                    None,
                )),
            ),
            ("d /srv/%H/%l", Ok(("d", "/srv/router.lan/router", None))),
            (
                "d /tmp/systemd-private-%b-*",
                Err("%b depends on the running machine"),
            ),
            ("d /var/lib/%v", Err("%v depends on the running machine")),
            ("d /var/lib/%Y", Err("%Y is not a specifier")),
            ("d /var/lib/x%", Err("a % ends the field")),
            // Paths: absolute, simplified, /var/run is /run, `..` left out.
            ("d relative/x", Err("the path is not absolute")),
            ("d //var///lib/./x/", Ok(("d", "/var/lib/x", None))),
            ("d /var/run/foo", Ok(("d", "/run/foo", None))),
            ("d /var/run", Ok(("d", "/var/run", None))),
            ("d /var/lib/../etc", Err("the path holds `..`")),
        ];
        for (line, want) in cases {
            let got = one(line);
            match (want, &got) {
                (Ok((t, p, a)), Ok((gt, gp, ga))) => {
                    assert_eq!(
                        (t.to_string(), p.to_string(), a.map(str::to_string)),
                        (gt.clone(), gp.clone(), ga.clone()),
                        "{line:?}"
                    );
                }
                (Err(w), Err(g)) => assert!(g.starts_with(w), "{line:?}: {g}"),
                _ => panic!("{line:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn comments_blank_lines_and_numbers() {
        let text =
            b"# a comment\n\n   \n  # indented comment\nd /a\n\xff\xfe /b\nL /c - - - - /d\n";
        let got: Vec<(usize, bool)> = parse(text, &Host::default())
            .into_iter()
            .map(|(n, e)| (n, e.is_ok()))
            .collect();
        assert_eq!(got, vec![(5, true), (6, false), (7, true)]);
    }

    #[test]
    fn the_first_line_for_a_path_decides_it() {
        let mut table = Table::default();
        let file = Path::new("/etc/tmpfiles.d/a.conf");
        for (n, (_, e)) in parse(
            b"d /x\nL /x - - - - /y\nR /x/*\nr /z\nz /x 0700\n",
            &Host::default(),
        )
        .into_iter()
        .enumerate()
        {
            table.add(file, n + 1, e.unwrap());
        }
        assert_eq!(table.made.len(), 1);
        assert_eq!(table.made[Path::new("/x")].entry.kind, 'd');
        assert_eq!(table.made[Path::new("/x")].at(), "/etc/tmpfiles.d/a.conf:1");
        let removed: Vec<char> = table.removed.iter().map(|m| m.entry.kind).collect();
        assert_eq!(removed, vec!['R', 'r']);
    }

    /// Real lines of every shape, to mutate.
    const SAMPLE: &str = "# x\nd /var/lib/a 0755 a a 10d\nD! /run/b\nL+ /etc/c - - - - %S/x\nf~ /etc/d - - - - aGk=\nC /var/lib/e - - - - /nix/store/f\nR /var/tmp/g-*\nd \"/q u\"/\\x41 -\nw /proc/x - - - - \\n1\n";

    /// Whatever the bytes, every line is a usable entry (absolute, simplified, no `..`)
    /// or a reason, numbered in order; never a panic.
    fn every_line_is_read(text: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        let host = Host::default();
        let lines = parse(text, &host);
        proptest::prop_assert!(lines.windows(2).all(|w| w[0].0 < w[1].0));
        for (_, line) in lines {
            if let Ok(e) = line {
                proptest::prop_assert!(e.path.is_absolute());
                proptest::prop_assert!(e.path.components().all(|c| matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_stop_the_parser(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
            every_line_is_read(&bytes)?;
        }

        #[test]
        fn mutations_of_real_lines_never_stop_the_parser(edits in crate::mutate::edits()) {
            every_line_is_read(&crate::mutate::apply(SAMPLE.as_bytes(), &edits))?;
        }
    }

    #[test]
    fn files_by_name_across_directories() {
        let os = |names: &[&str]| names.iter().map(OsString::from).collect::<Vec<_>>();
        let found = vec![
            (
                PathBuf::from("/etc/tmpfiles.d"),
                os(&["b.conf", "z.conf", ".hidden.conf", "notes.txt"]),
            ),
            (PathBuf::from("/run/tmpfiles.d"), os(&["a.conf", "b.conf"])),
            (
                PathBuf::from("/usr/lib/tmpfiles.d"),
                os(&["a.conf", "c.conf", "z.conf"]),
            ),
        ];
        let got: Vec<String> = chosen(&found)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            got,
            vec![
                "/run/tmpfiles.d/a.conf",
                "/etc/tmpfiles.d/b.conf",
                "/usr/lib/tmpfiles.d/c.conf",
                "/etc/tmpfiles.d/z.conf",
            ]
        );
    }
}
