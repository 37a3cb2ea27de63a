//! The journal: reading `journalctl -o json` output as a stream, and finding the failures
//! caused by missing or unreadable paths, attributed to their units. Pure apart from the
//! reader it is given; memory follows the number of distinct paths, not the journal's
//! length.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::BufRead;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A journal field as `journalctl -o json` writes it: a string; an array of bytes when the
/// value is not UTF-8; null when it was too large to print; an array of such values when
/// the field occurs more than once in the entry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Field(pub Vec<String>);

impl Field {
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an array of bytes, null, or an array of those")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field(vec![v.to_string()]))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Field, E> {
                Ok(Field::default())
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Field, E> {
                Ok(Field::default())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Field, E> {
                Ok(Field(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Field, A::Error> {
                // Either the bytes of one value, or several values (each a string, bytes
                // or null). The first element tells which.
                let mut bytes = Vec::new();
                let mut values = Vec::new();
                while let Some(item) = seq.next_element::<Item>()? {
                    match item {
                        Item::Byte(b) => bytes.push(b),
                        Item::Value(Field(v)) => values.extend(v),
                    }
                }
                if !bytes.is_empty() {
                    values.insert(0, String::from_utf8_lossy(&bytes).into_owned());
                }
                Ok(Field(values))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One element of an array field.
enum Item {
    Byte(u8),
    Value(Field),
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Item, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Item;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte or a field value")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Item, E> {
                u8::try_from(v)
                    .map(Item::Byte)
                    .map_err(|_| E::custom("byte out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Item, E> {
                Ok(Item::Value(Field(vec![v.to_string()])))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Item, E> {
                Ok(Item::Value(Field::default()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Item, A::Error> {
                Field::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(Item::Value)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The fields of an entry that matter here; every other field is skipped unparsed.
#[derive(Debug, Default, Deserialize)]
pub struct Entry {
    #[serde(rename = "MESSAGE", default)]
    pub message: Field,
    #[serde(rename = "_SYSTEMD_UNIT", default)]
    pub systemd_unit: Field,
    #[serde(rename = "UNIT", default)]
    pub unit: Field,
    #[serde(rename = "SYSLOG_IDENTIFIER", default)]
    pub identifier: Field,
    #[serde(rename = "ERRNO", default)]
    pub errno: Field,
    #[serde(rename = "__REALTIME_TIMESTAMP", default)]
    pub timestamp: Field,
}

impl Entry {
    /// The unit the entry is about: a message systemd writes about a unit names it in
    /// `UNIT`; a service's own output has `_SYSTEMD_UNIT`; else the syslog identifier.
    pub fn unit(&self) -> Option<&str> {
        let own = self.systemd_unit.first().filter(|u| *u != "init.scope");
        self.unit.first().or(own).or(self.identifier.first())
    }
}

/// Why a message counts as a failure.
const FAILURE_WORDS: &[&str] = &[
    "no such file or directory",
    "permission denied",
    "failed to",
    "failed at step",
    "could not",
    "cannot",
    "can't",
    "unable to",
    "does not exist",
    "not found",
    "missing",
    "enoent",
    "eacces",
];

/// Where systemd mounts a unit's root while it sets up its namespace.
const UNIT_ROOT: &str = "/run/systemd/unit-root";

/// What a failure message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    Missing,
    PermissionDenied,
    Failed,
}

/// Whether a message reports a failure, and of which kind.
pub fn cause(message: &str, errno: Option<&str>) -> Option<Cause> {
    // Searched in place rather than in a lowercased copy: a message can be megabytes.
    let has = |word: &str| contains_ignore_case(message, word);
    if errno == Some("2") || has("no such file") || has("does not exist") || has("enoent") {
        return Some(Cause::Missing);
    }
    if errno == Some("13") || has("permission denied") || has("eacces") {
        return Some(Cause::PermissionDenied);
    }
    FAILURE_WORDS
        .iter()
        .any(|w| has(w))
        .then_some(Cause::Failed)
}

/// Whether `haystack` contains the lowercase ASCII `needle`, ignoring ASCII case.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    let Some(&first) = n.first() else {
        return true;
    };
    h.len() >= n.len()
        && (0..=h.len() - n.len()).any(|i| {
            h[i].to_ascii_lowercase() == first && h[i..i + n.len()].eq_ignore_ascii_case(n)
        })
}

/// What a message names: the paths it names exactly, and how many it names that cannot
/// be named exactly (a bare path broken off by a control character: where it really ends
/// is unknown, and cutting it there would name another path, often a parent like `/etc`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Named {
    pub paths: Vec<PathBuf>,
    pub unnamed: u64,
}

/// The absolute paths a message names. A path in double quotes (systemd's `"…"`, Go's
/// `%q`, whose escapes are undone: `\"`, `\\`, `\n`, `\t`, `\xHH`, `\uHHHH`, …) or single
/// quotes (`'…'`, `` `…' ``) runs to its closing quote, spaces and all; a bare path ends at
/// white space, a quote, a comma, a colon followed by a space, or a bracket, and trailing
/// dots and colons are not part of it. A bare path that a control character breaks off
/// (other than a terminal colour sequence right before its end) cannot be named. `//` is
/// one `/`, but `scheme://` is a URL, not a path.
pub fn paths_in(message: &str) -> Named {
    let bytes = message.as_bytes();
    let mut out = Named::default();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if matches!(b, b'"' | b'\'' | b'`') && bytes.get(i + 1) == Some(&b'/') {
            let close = if b == b'`' { b'\'' } else { b };
            if let Some((raw, end)) = quoted(bytes, i + 1, close) {
                out.add(&raw, lossy(&bytes[i + 1..end]));
                i = end + 1;
                continue;
            }
        }
        let after = |c: u8| i > 0 && bytes[i - 1] == c;
        let starts = b == b'/'
            && (i == 0
                || matches!(
                    bytes[i - 1],
                    b' ' | b'"' | b'\'' | b'`' | b'(' | b'[' | b'=' | b':' | b'<' | b'\t'
                ));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        if after(b':') && bytes.get(i + 1) == Some(&b'/') {
            // `https://host/x`: not a path at all. A `file://` URL names one, but in
            // percent-encoding, perhaps on another host: it is counted, not named.
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if let Some(path) = file_url_path(&bytes[..start - 1], &bytes[start..i]) {
                out.add(path, true);
            }
            continue;
        }
        let mut broken = false;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_control() && !b.is_ascii_whitespace() {
                broken = !colour_then_end(bytes, i);
                break;
            }
            let ends = b.is_ascii_whitespace()
                || matches!(b, b'"' | b'\'' | b'`' | b',' | b')' | b']' | b'>' | b';')
                || (b == b':' && bytes.get(i + 1).is_none_or(|n| *n == b' '));
            if ends {
                break;
            }
            i += 1;
        }
        let raw = message[start..i].trim_end_matches(['.', ':']);
        if broken {
            // The rest of the name is skipped; only what could be state is counted.
            if raw.trim_end_matches('/').is_empty() {
                out.unnamed += 1;
            } else {
                out.add(raw.as_bytes(), true);
            }
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            continue;
        }
        out.add(raw.as_bytes(), lossy(raw.as_bytes()));
    }
    out.paths.sort();
    out.paths.dedup();
    out
}

impl Named {
    /// A path as the message wrote it (quotes undone), or, when `unnamed`, one whose name
    /// is not known exactly. A name that cannot be a path (a NUL in it, longer than
    /// PATH_MAX) or that only resolving it would tell (`..`: a symlink on the way decides
    /// where it leads) is not named either. An unnamed path is counted when it could be
    /// state.
    fn add(&mut self, raw: &[u8], unnamed: bool) {
        // systemd names paths in a unit's mount namespace under its staging root.
        let raw = raw
            .strip_prefix(UNIT_ROOT.as_bytes())
            .filter(|r| r.starts_with(b"/"))
            .unwrap_or(raw);
        if raw.is_empty() {
            return;
        }
        if !unnamed && raw.len() <= crate::paths::MAX_PATH_BYTES && !raw.contains(&0) {
            // `//` and `.` collapse, a trailing `/` goes; `/` itself is no answer.
            match crate::paths::normalize_given(std::ffi::OsStr::from_bytes(raw)) {
                Ok(path) => return self.paths.push(path),
                Err(crate::paths::PathProblem::ParentComponent) => {}
                Err(_) => return,
            }
        }
        if could_be_state(raw) {
            self.unnamed += 1;
        }
    }
}

/// Whether a path that cannot be named could still be state: unless both what it names
/// before its first `..` (or NUL) and where it leads read lexically lie in a tree the
/// audit never walks (`/sys/devices/x/../..` is the kernel's, whatever the links).
fn could_be_state(raw: &[u8]) -> bool {
    let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
    let mut before = PathBuf::from("/");
    let mut lexical = PathBuf::from("/");
    let mut climbed = false;
    for c in Path::new(std::ffi::OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(name) => {
                if !climbed {
                    before.push(name);
                }
                lexical.push(name);
            }
            Component::ParentDir => {
                climbed = true;
                lexical.pop();
            }
            _ => {}
        }
    }
    let k = crate::knowledge::builtin();
    k.never_walked(&before).is_none() || k.never_walked(&lexical).is_none()
}

/// The path of a `file://` URL, given the text before its `:` and what follows it; `None`
/// for another scheme. Its host, when there is one, is dropped.
fn file_url_path<'a>(before: &[u8], rest: &'a [u8]) -> Option<&'a [u8]> {
    let scheme_at = before.len().checked_sub(4)?;
    let scheme = &before[scheme_at..];
    let alone = scheme_at == 0 || !before[scheme_at - 1].is_ascii_alphanumeric();
    if !scheme.eq_ignore_ascii_case(b"file") || !alone {
        return None;
    }
    let after_host = rest.strip_prefix(b"//")?;
    let path = &after_host[after_host.iter().position(|&b| b == b'/')?..];
    let end = path
        .iter()
        .position(|b| matches!(b, b'"' | b'\'' | b'`' | b',' | b')' | b']' | b'>' | b';'))
        .unwrap_or(path.len());
    Some(&path[..end])
}

/// Whether the text of a path holds U+FFFD: a message that was not UTF-8 was read lossily
/// (journalctl's byte arrays), and the lossy name is one that does not exist.
fn lossy(text: &[u8]) -> bool {
    text.windows(3).any(|w| w == "\u{fffd}".as_bytes())
}

/// Whether the control character at `at` starts a terminal colour sequence (`ESC [ … m`
/// and the like) after which the bare path plainly ends: a name coloured in a log line.
fn colour_then_end(bytes: &[u8], at: usize) -> bool {
    if bytes.get(at) != Some(&0x1b) || bytes.get(at + 1) != Some(&b'[') {
        return false;
    }
    let mut i = at + 2;
    while bytes.get(i).is_some_and(|b| (0x20..=0x3f).contains(b)) {
        i += 1;
    }
    if !bytes.get(i).is_some_and(|b| (0x40..=0x7e).contains(b)) {
        return false;
    }
    match bytes.get(i + 1) {
        None => true,
        Some(&b) => {
            b.is_ascii_whitespace()
                || b == 0x1b
                || matches!(b, b'"' | b'\'' | b'`' | b',' | b')' | b']' | b'>' | b';')
                || (b == b':' && bytes.get(i + 2).is_none_or(|n| *n == b' '))
        }
    }
}

/// The quoted bytes from `start` to the closing `close`, with Go's `%q` escapes undone
/// inside double quotes, and the closing quote's index. `None` when the quote is not
/// closed on this line (then the path is read as a bare one). An escape Go never writes
/// is kept as it is.
fn quoted(bytes: &[u8], start: usize, close: u8) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if close == b'"' => match go_escape(&bytes[i + 1..]) {
                Some((decoded, used)) => {
                    out.extend_from_slice(&decoded);
                    i += 1 + used;
                }
                None => {
                    out.push(b'\\');
                    i += 1;
                }
            },
            b if b == close => return Some((out, i)),
            b if b.is_ascii_control() => return None,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

/// One escape of Go's `strconv.Quote` (what `%q` writes), after its backslash: the bytes
/// it stands for and how many bytes it took; `None` when it is not one.
fn go_escape(rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    let hex = |n: usize| -> Option<u32> {
        let digits = rest.get(1..1 + n)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let simple = |b: u8| Some((vec![b], 1));
    match *rest.first()? {
        b'"' => simple(b'"'),
        b'\\' => simple(b'\\'),
        b'\'' => simple(b'\''),
        b'a' => simple(0x07),
        b'b' => simple(0x08),
        b'f' => simple(0x0c),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(0x0b),
        // A byte, which need not be UTF-8 on its own (how Go writes invalid UTF-8).
        b'x' => Some((vec![hex(2)? as u8], 3)),
        b'u' | b'U' => {
            let n = if rest[0] == b'u' { 4 } else { 8 };
            let c = char::from_u32(hex(n)?)?;
            Some((c.to_string().into_bytes(), 1 + n))
        }
        _ => None,
    }
}

/// How much of a message is kept to show: enough to recognise it, not a 50 MB blob.
pub const MESSAGE_CHARS: usize = 500;

/// `text` cut to `max` characters (on a character boundary) with an ellipsis.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

/// The longest line parsed. Longer lines are skipped and counted, so that one runaway
/// line costs a bounded amount of memory. journald itself keeps fields far smaller (its
/// default `--output-fields` limit prints longer ones as null).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// How many bad line numbers are kept to report.
pub const BAD_LINES_LISTED: usize = 20;

/// One path that failures named.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    pub causes: BTreeSet<Cause>,
    pub units: BTreeSet<String>,
    /// How many entries named it.
    pub count: u64,
    /// The first message that named it, cut to [`MESSAGE_CHARS`].
    pub message: String,
}

/// A unit that failed (`Failed with result …`, `status=…`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FailedUnit {
    pub unit: String,
    pub message: String,
    pub count: u64,
}

/// Everything the journal showed.
#[derive(Debug, Default)]
pub struct Findings {
    pub paths: BTreeMap<PathBuf, Finding>,
    pub failed_units: BTreeMap<String, FailedUnit>,
    pub lines: u64,
    /// Lines that could not be read as an entry: not JSON, not UTF-8 (JSON is UTF-8;
    /// journalctl writes other bytes as arrays), cut short, not an entry, too deep, or
    /// longer than [`MAX_LINE_BYTES`].
    pub bad_lines: u64,
    /// The first [`BAD_LINES_LISTED`] of them, by line number.
    pub bad_line_numbers: Vec<u64>,
    /// How many of the bad lines were skipped for their length alone.
    pub too_long_lines: u64,
    /// Paths named in messages that are not UTF-8 (journalctl's byte arrays, read
    /// lossily): they cannot be named exactly, and a lossy name is a path that does not
    /// exist, so they are counted instead of listed.
    pub unnamed_paths: u64,
    /// The units whose messages named them.
    pub unnamed_path_units: BTreeSet<String>,
}

/// Whether a message says its unit failed as a whole.
fn unit_failed(message: &str) -> bool {
    message.contains("Failed with result")
        || (message.contains("Main process exited") && message.contains("status="))
}

/// Reads a journal export to the end. Lines are read as bytes, so one line that is not
/// UTF-8 (or not JSON, or cut short) is counted and skipped instead of ending the run;
/// only a read error of the input itself is an error.
pub fn scan(mut input: impl BufRead) -> std::io::Result<Findings> {
    let mut found = Findings::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let Some(too_long) = read_line(&mut input, &mut line, MAX_LINE_BYTES)? else {
            break;
        };
        found.lines += 1;
        if too_long {
            found.too_long_lines += 1;
            found.bad(found.lines);
            continue;
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice::<Entry>(&line) {
            Ok(entry) => found.add(&entry),
            Err(_) => found.bad(found.lines),
        }
    }
    Ok(found)
}

/// Reads one line (without its newline) into `line`, keeping at most `max` bytes. Returns
/// `None` at the end of the input, else whether the line was longer than `max` (the rest
/// of it is read and dropped, so memory stays bounded).
fn read_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    let mut seen_any = false;
    let mut too_long = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(seen_any.then_some(too_long));
        }
        seen_any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buf.len());
        input.consume(used);
        if done.is_some() {
            return Ok(Some(too_long));
        }
    }
}

impl Findings {
    fn bad(&mut self, line: u64) {
        self.bad_lines += 1;
        if self.bad_line_numbers.len() < BAD_LINES_LISTED {
            self.bad_line_numbers.push(line);
        }
    }

    pub fn add(&mut self, entry: &Entry) {
        // systemd's unit names are at most 255 characters; anything longer is not one.
        let unit = cut(entry.unit().unwrap_or("(unknown)"), 256);
        let unit = unit.as_str();
        for message in &entry.message.0 {
            if unit_failed(message) {
                let f = self
                    .failed_units
                    .entry(unit.to_string())
                    .or_insert_with(|| FailedUnit {
                        unit: unit.to_string(),
                        message: cut(message, MESSAGE_CHARS),
                        count: 0,
                    });
                f.count += 1;
                continue;
            }
            let Some(cause) = cause(message, entry.errno.first()) else {
                continue;
            };
            let named = paths_in(message);
            if named.unnamed > 0 {
                self.unnamed_paths += named.unnamed;
                self.unnamed_path_units.insert(unit.to_string());
            }
            for path in named.paths {
                let f = self.paths.entry(path.clone()).or_insert_with(|| Finding {
                    path,
                    message: cut(message, MESSAGE_CHARS),
                    ..Finding::default()
                });
                f.causes.insert(cause);
                f.units.insert(unit.to_string());
                f.count += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn field(json: &str) -> Field {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn every_shape_of_field() {
        assert_eq!(field(r#""text""#), Field(vec!["text".into()]));
        assert_eq!(field("null"), Field(vec![]));
        assert_eq!(field("[104,105]"), Field(vec!["hi".into()]));
        assert_eq!(field("[104,255]"), Field(vec!["h\u{fffd}".into()]));
        assert_eq!(field(r#"["a","b"]"#), Field(vec!["a".into(), "b".into()]));
        assert_eq!(
            field(r#"["a",[98,99],null]"#),
            Field(vec!["a".into(), "bc".into()])
        );
    }

    #[test]
    fn paths_are_taken_from_real_message_shapes() {
        let cases: &[(&str, &[&str])] = &[
            (
                "Unable to load host key: /etc/ssh/ssh_host_ed25519_key",
                &["/etc/ssh/ssh_host_ed25519_key"],
            ),
            (
                "could not open file \"/var/lib/postgresql/16/PG_VERSION\": No such file or directory",
                &["/var/lib/postgresql/16/PG_VERSION"],
            ),
            (
                "nginx: [emerg] open() \"/etc/nginx/htpasswd\" failed (2: No such file or directory)",
                &["/etc/nginx/htpasswd"],
            ),
            (
                "store.New: open /var/lib/tailscale/tailscaled.state: no such file or directory",
                &["/var/lib/tailscale/tailscaled.state"],
            ),
            (
                "cp: cannot stat '/var/lib/acme/a.org/cert.pem': No such file or directory",
                &["/var/lib/acme/a.org/cert.pem"],
            ),
            (
                "foo.service: Failed to set up mount namespacing: /run/systemd/unit-root/var/lib/foo: No such file or directory",
                &["/var/lib/foo"],
            ),
            ("Failed to read /etc/a, /etc/b.", &["/etc/a", "/etc/b"]),
            // What is state is decided later: the store is named like any path.
            (
                "see https://example.com/x and /nix/store/abc-foo/bin/foo",
                &["/nix/store/abc-foo/bin/foo"],
            ),
            ("loaded 3 rules from ./relative/path", &[]),
            // Go's %q escapes quotes and backslashes inside the quotes.
            (
                r#"open "/var/lib/app/my \"quoted\" dir/state": no such file or directory"#,
                &[r#"/var/lib/app/my "quoted" dir/state"#],
            ),
            (
                r#"stat "/srv/back\\slash": no such file or directory"#,
                &[r"/srv/back\slash"],
            ),
            // Quotes hold spaces: systemd's "…", coreutils' '…'.
            (
                "Failed to open \"/etc/my app/conf\": No such file or directory",
                &["/etc/my app/conf"],
            ),
            (
                "cp: cannot stat '/var/lib/My Files/x': No such file or directory",
                &["/var/lib/My Files/x"],
            ),
            (
                "install: cannot create `/var/lib/old style': Permission denied",
                &["/var/lib/old style"],
            ),
            // An unclosed quote: read as a bare path.
            (
                "open \"/var/lib/x: no such file or directory",
                &["/var/lib/x"],
            ),
            // Control characters end a path and never become part of one.
            (
                "open /var/lib/x\u{1b}[0m: No such file or directory",
                &["/var/lib/x"],
            ),
            ("Failed to open /var/lib/a\nsecond line", &["/var/lib/a"]),
            ("Failed to open \"/var/lib/a\nb\"", &["/var/lib/a"]),
            // Doubled slashes collapse; a URL is not a path.
            ("stat //srv//bare/: no such file", &["/srv/bare"]),
            ("open \"//var//lib//dbl\": no such file", &["/var/lib/dbl"]),
            // Go's other escapes, inside double quotes only.
            (
                r#"open "/var/lib/a\tb\x41\u00e9\U0001F600": x"#,
                &["/var/lib/a\tbA\u{e9}\u{1f600}"],
            ),
            (r#"open "/var/lib/a\qb": x"#, &[r"/var/lib/a\qb"]),
            (r#"open '/var/lib/a\tb': x"#, &[r"/var/lib/a\tb"]),
        ];
        for (message, want) in cases {
            let named = paths_in(message);
            let got: Vec<String> = named
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            assert_eq!(got, *want, "{message}");
            assert_eq!(named.unnamed, 0, "{message}");
        }
    }

    /// A path that cannot be named exactly (a bare one a control character breaks off, one
    /// with `..` or a NUL, a `file://` URL) is counted when it could be state, never cut
    /// into another or dropped unsaid.
    #[test]
    fn broken_paths_are_counted_not_cut() {
        let cases: &[(&str, &[&str], u64)] = &[
            ("cannot open /etc/\u{1b}[31mred: No such file", &[], 1),
            ("cannot open /var/lib/a\u{7}b: No such file", &[], 1),
            ("cannot open /\u{1b}x: No such file", &[], 1),
            // A colour sequence that ends the name is no break.
            ("open /var/lib/x\u{1b}[0m: No such file", &["/var/lib/x"], 0),
            ("open /var/lib/x\u{1b}[0m", &["/var/lib/x"], 0),
            // What could never be state is not counted either.
            ("open /proc/\u{1b}[31mx: No such file", &[], 0),
            // `..` is only known by resolving it (a symlink decides): counted, unless both
            // where it starts and where it leads lexically are never walked.
            ("/var/lib/a/../b is odd", &[], 1),
            ("Failed to open /var/lib/foo/../../../etc/shadow: x", &[], 1),
            ("open /home/josh/../bob/.config: x", &[], 1),
            (r#"open "/var/lib/\x2e\x2e": x"#, &[], 1),
            (r#"open "/var/lib/sl\x2f..\x2f..\x2fetc": x"#, &[], 1),
            ("open /run/../var/lib/x: x", &[], 1),
            ("open /sys/devices/x/../..: x", &[], 0),
            ("open /nix/store/a/../b: x", &[], 0),
            // A NUL is in no path.
            (r#"open "/var/lib/nul\x00x": x"#, &[], 1),
            (r#"open "/proc/nul\x00x": x"#, &[], 0),
            // A file URL names a path in percent-encoding: counted, never named.
            ("Failed to load file:///var/lib/fileurl", &[], 1),
            (
                "Failed to load FILE://localhost/var/lib/x%20y, then /var/lib/z",
                &["/var/lib/z"],
                1,
            ),
            ("Failed to load \"file:///etc/x\": gone", &[], 1),
            ("Failed to load file:///proc/x", &[], 0),
            (
                "see https://example.com/var/lib/x and profile:///var/lib/y",
                &[],
                0,
            ),
            // `/` itself is no answer, and longer than PATH_MAX is no path.
            ("open /: x", &[], 0),
            (
                "open /var/lib/a\u{1b}[1mb and /var/lib/c",
                &["/var/lib/c"],
                1,
            ),
        ];
        for (message, want, unnamed) in cases {
            let named = paths_in(message);
            let got: Vec<String> = named
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            assert_eq!(
                (got, named.unnamed),
                (want.iter().map(|s| s.to_string()).collect(), *unnamed),
                "{message:?}"
            );
        }
    }

    #[test]
    fn a_name_longer_than_path_max_is_counted() {
        let long = format!("open \"/var/lib/{}\": x", "a".repeat(5000));
        assert_eq!(
            paths_in(&long),
            Named {
                paths: vec![],
                unnamed: 1
            }
        );
        let long = format!("open \"/proc/{}\": x", "a".repeat(5000));
        assert_eq!(
            paths_in(&long),
            Named {
                paths: vec![],
                unnamed: 0
            }
        );
    }

    #[test]
    fn go_escapes_make_any_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let named = paths_in(r#"open "/var/lib/nl\nname\xff": x"#);
        assert_eq!(
            named.paths[0].as_os_str().as_bytes(),
            b"/var/lib/nl\nname\xff"
        );
    }

    fn lines(input: &[u8], max: usize) -> Vec<(String, bool)> {
        let mut reader = std::io::BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        let mut line = Vec::new();
        while let Some(too_long) = read_line(&mut reader, &mut line, max).unwrap() {
            out.push((String::from_utf8_lossy(&line).into_owned(), too_long));
            line.clear();
        }
        out
    }

    #[test]
    fn lines_are_read_with_a_bound() {
        let l = |s: &str, long: bool| (s.to_string(), long);
        assert_eq!(lines(b"", 8), []);
        assert_eq!(lines(b"\n", 8), [l("", false)]);
        assert_eq!(lines(b"ab\ncd", 8), [l("ab", false), l("cd", false)]);
        assert_eq!(
            lines(b"12345678\n123456789\nx\n", 8),
            [l("12345678", false), l("", true), l("x", false)]
        );
        assert_eq!(lines(b"123456789", 8), [l("", true)]);
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc…");
        assert_eq!(cut("ééé", 2), "éé…");
    }

    #[test]
    fn causes() {
        assert_eq!(
            cause("open x: No such file or directory", None),
            Some(Cause::Missing)
        );
        assert_eq!(cause("x", Some("2")), Some(Cause::Missing));
        assert_eq!(
            cause("open /x: Permission denied", None),
            Some(Cause::PermissionDenied)
        );
        assert_eq!(
            cause("Failed to start foo.service", None),
            Some(Cause::Failed)
        );
        assert_eq!(cause("Started foo.service", None), None);
    }

    #[test]
    fn units_are_attributed_from_unit_then_own_unit_then_identifier() {
        let e: Entry = serde_json::from_str(
            r#"{"UNIT":"a.service","_SYSTEMD_UNIT":"init.scope","SYSLOG_IDENTIFIER":"systemd"}"#,
        )
        .unwrap();
        assert_eq!(e.unit(), Some("a.service"));
        let e: Entry =
            serde_json::from_str(r#"{"_SYSTEMD_UNIT":"sshd.service","SYSLOG_IDENTIFIER":"sshd"}"#)
                .unwrap();
        assert_eq!(e.unit(), Some("sshd.service"));
        let e: Entry =
            serde_json::from_str(r#"{"_SYSTEMD_UNIT":"init.scope","SYSLOG_IDENTIFIER":"kernel"}"#)
                .unwrap();
        assert_eq!(e.unit(), Some("kernel"));
    }

    const FIXTURE: &str = concat!(
        include_str!("../../tests/fixtures/journal/field-shapes.json"),
        include_str!("../../tests/fixtures/journal/postgresql.json"),
    );

    /// Whatever the bytes: every line is counted, none ends the run, and what is kept to
    /// show is bounded.
    fn reads_every_line(input: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        let found = scan(std::io::Cursor::new(input)).unwrap();
        let newlines = input.iter().filter(|&&b| b == b'\n').count() as u64;
        let unterminated = u64::from(!input.is_empty() && !input.ends_with(b"\n"));
        proptest::prop_assert_eq!(found.lines, newlines + unterminated);
        proptest::prop_assert!(found.bad_lines <= found.lines);
        proptest::prop_assert!(found.bad_line_numbers.len() <= BAD_LINES_LISTED);
        proptest::prop_assert!(found.bad_line_numbers.windows(2).all(|w| w[0] < w[1]));
        for f in found.paths.values() {
            proptest::prop_assert!(f.message.chars().count() <= MESSAGE_CHARS + 1);
            proptest::prop_assert!(f.path.is_absolute());
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_stop_the_scan(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            reads_every_line(&bytes)?;
        }

        #[test]
        fn mutations_of_real_lines_never_stop_the_scan(edits in crate::mutate::edits()) {
            reads_every_line(&crate::mutate::apply(FIXTURE.as_bytes(), &edits))?;
        }

        /// A path named in a failure is found whatever surrounds it, quoted or bare, and
        /// whatever lines (garbage included) come before it.
        #[test]
        fn a_named_path_is_found(
            dir in "[a-z]{1,8}( [a-z]{1,8})?",
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            quote in proptest::sample::select(vec!["\"", "'", ""]),
        ) {
            let path = format!("/var/lib/{dir}");
            let quote = if dir.contains(' ') && quote.is_empty() { "\"" } else { quote };
            let message = format!("open {quote}{path}{quote}: No such file or directory");
            let line = serde_json::json!({"MESSAGE": message, "_SYSTEMD_UNIT": "x.service"});
            let mut input: Vec<u8> = garbage.iter().map(|&b| if b == b'\n' { b' ' } else { b }).collect();
            input.push(b'\n');
            input.extend_from_slice(line.to_string().as_bytes());
            let found = scan(std::io::Cursor::new(input)).unwrap();
            proptest::prop_assert!(found.paths.contains_key(Path::new(&path)), "{:?}", found.paths.keys());
        }
    }
}
