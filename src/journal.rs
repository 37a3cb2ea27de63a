//! The journal: reading `journalctl -o json` output as a stream, and finding the failures
//! caused by missing or unreadable paths, attributed to their units. Pure apart from the
//! reader it is given; memory follows the number of distinct paths, not the journal's
//! length.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::BufRead;
use std::path::PathBuf;

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

/// Paths that are never state to persist: the store and the kernel's filesystems.
const NOT_STATE: &[&str] = &["/nix/store", "/proc", "/sys", "/dev"];

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
    let lower = message.to_ascii_lowercase();
    if errno == Some("2")
        || lower.contains("no such file")
        || lower.contains("does not exist")
        || lower.contains("enoent")
    {
        return Some(Cause::Missing);
    }
    if errno == Some("13") || lower.contains("permission denied") || lower.contains("eacces") {
        return Some(Cause::PermissionDenied);
    }
    FAILURE_WORDS
        .iter()
        .any(|w| lower.contains(w))
        .then_some(Cause::Failed)
}

/// The absolute paths a message names. Paths may be quoted (`"…"`, `'…'`, `` `…' ``) or bare,
/// and end at white space, a quote, a comma, a colon followed by a space, or a bracket;
/// trailing dots and colons are not part of them.
pub fn paths_in(message: &str) -> Vec<PathBuf> {
    let bytes = message.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = bytes[i] == b'/'
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
        while i < bytes.len() {
            let b = bytes[i];
            let ends = matches!(
                b,
                b' ' | b'\t' | b'"' | b'\'' | b'`' | b',' | b')' | b']' | b'>' | b';'
            ) || (b == b':' && bytes.get(i + 1).is_none_or(|n| *n == b' '));
            if ends {
                break;
            }
            i += 1;
        }
        let raw = message[start..i].trim_end_matches(['.', ':']);
        // systemd names paths in a unit's mount namespace under its staging root.
        let raw = raw
            .strip_prefix(UNIT_ROOT)
            .filter(|r| r.starts_with('/'))
            .unwrap_or(raw);
        if raw.len() > 1 && !raw.contains("//") {
            if let Ok(path) = crate::paths::normalize_absolute(raw) {
                if !NOT_STATE.iter().any(|n| path.starts_with(n)) {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One path that failures named.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    pub causes: BTreeSet<Cause>,
    pub units: BTreeSet<String>,
    /// How many entries named it.
    pub count: u64,
    /// The first message that named it.
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
    /// Lines that were not journal JSON, with the first one's number.
    pub bad_lines: u64,
    pub first_bad_line: Option<u64>,
}

/// Whether a message says its unit failed as a whole.
fn unit_failed(message: &str) -> bool {
    message.contains("Failed with result")
        || (message.contains("Main process exited") && message.contains("status="))
}

/// Reads a journal export to the end.
pub fn scan(input: impl BufRead) -> std::io::Result<Findings> {
    let mut found = Findings::default();
    for line in input.lines() {
        let line = line?;
        found.lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = match serde_json::from_str(&line) {
            Ok(entry) => entry,
            Err(_) => {
                found.bad_lines += 1;
                found.first_bad_line.get_or_insert(found.lines);
                continue;
            }
        };
        found.add(&entry);
    }
    Ok(found)
}

impl Findings {
    pub fn add(&mut self, entry: &Entry) {
        let unit = entry.unit().unwrap_or("(unknown)");
        for message in &entry.message.0 {
            if unit_failed(message) {
                let f = self
                    .failed_units
                    .entry(unit.to_string())
                    .or_insert_with(|| FailedUnit {
                        unit: unit.to_string(),
                        message: message.clone(),
                        count: 0,
                    });
                f.count += 1;
                continue;
            }
            let Some(cause) = cause(message, entry.errno.first()) else {
                continue;
            };
            for path in paths_in(message) {
                let f = self.paths.entry(path.clone()).or_insert_with(|| Finding {
                    path,
                    message: message.clone(),
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
            (
                "see https://example.com/x and /nix/store/abc-foo/bin/foo",
                &[],
            ),
            ("loaded 3 rules from ./relative/path", &[]),
            ("/var/lib/a/../b is odd", &[]),
        ];
        for (message, want) in cases {
            let got: Vec<String> = paths_in(message)
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            assert_eq!(got, *want, "{message}");
        }
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
}
