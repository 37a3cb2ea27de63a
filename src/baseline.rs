//! The baseline: what the root held right after boot, so that "since boot" can leave out
//! what NixOS activation itself wrote. A manifest file (path, type, mode, owner, size,
//! mtime, link target per entry) works on every backend; where the backend has snapshots,
//! `imperm baseline` takes a read-only one as well, for the cheap btrfs diff.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::classify::EntryKind;
use crate::paths::{escape, unescape};

/// Where the manifest lives, as seen from the host's `/`: /run is per boot, like the
/// baseline, and is never walked.
pub const MANIFEST: &str = "/run/imperm/baseline";
/// The read-only snapshot's name in the snapshot directory (a dot-name: never listed as
/// an old root, never deleted by gc).
pub const SNAPSHOT: &str = ".baseline";
const HEADER: &str = "imperm-baseline 1";

/// The metadata a baseline keeps of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub target: Option<PathBuf>,
}

impl Meta {
    pub fn from_stat(st: &rustix::fs::Stat, target: Option<PathBuf>) -> Meta {
        let mtime_ns = i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec);
        Meta::from_parts(
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_size as u64,
            mtime_ns,
            target,
        )
    }

    /// From a raw mode (with the file type bits) and the other fields.
    pub fn from_parts(
        mode: u32,
        uid: u32,
        gid: u32,
        size: u64,
        mtime_ns: i128,
        target: Option<PathBuf>,
    ) -> Meta {
        let kind = match rustix::fs::FileType::from_raw_mode(mode) {
            rustix::fs::FileType::Directory => EntryKind::Directory,
            rustix::fs::FileType::RegularFile => EntryKind::File,
            rustix::fs::FileType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        Meta {
            kind,
            mode: mode & 0o7777,
            uid,
            gid,
            size: if kind == EntryKind::Directory {
                0
            } else {
                size
            },
            mtime_ns,
            target,
        }
    }
}

/// How an entry compares with the baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Unchanged,
    Added,
    /// What differs: `type`, `mode`, `owner`, `content`, `target`.
    Changed(Vec<&'static str>),
}

/// How an entry differs between two states of a root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
    Renamed,
}

/// One change (`diff`'s `changes[]`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    pub change: ChangeKind,
    pub kind: Option<EntryKind>,
    /// For a rename: where it was.
    #[serde(serialize_with = "crate::paths::json_opt")]
    pub from: Option<PathBuf>,
    /// For a change: what changed (`type`, `mode`, `owner`, `content`, `target`).
    pub what: Vec<&'static str>,
}

/// What differs between two states of one entry. A directory's size and mtime change
/// whenever an entry in it does, so only its mode and owner count.
pub fn differences(old: &Meta, new: &Meta) -> Vec<&'static str> {
    let mut what = Vec::new();
    if old.kind != new.kind {
        what.push("type");
        return what;
    }
    if old.mode != new.mode {
        what.push("mode");
    }
    if (old.uid, old.gid) != (new.uid, new.gid) {
        what.push("owner");
    }
    match new.kind {
        EntryKind::Directory => {}
        EntryKind::Symlink => {
            if old.target != new.target {
                what.push("target");
            }
        }
        _ => {
            if old.size != new.size || old.mtime_ns != new.mtime_ns {
                what.push("content");
            }
        }
    }
    what
}

/// A baseline manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: HashMap<PathBuf, Meta>,
}

impl Manifest {
    pub fn new(entries: impl IntoIterator<Item = (PathBuf, Meta)>) -> Manifest {
        Manifest {
            entries: entries.into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, path: &Path) -> Option<&Meta> {
        self.entries.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PathBuf, &Meta)> {
        self.entries.iter()
    }

    pub fn compare(&self, path: &Path, meta: &Meta) -> Status {
        match self.entries.get(path) {
            None => Status::Added,
            Some(old) => {
                let what = differences(old, meta);
                if what.is_empty() {
                    Status::Unchanged
                } else {
                    Status::Changed(what)
                }
            }
        }
    }

    /// The file format: a header line, then one tab-separated line per entry
    /// (`kind mode uid gid size mtime_ns path target`), paths escaped so that any byte
    /// survives.
    pub fn render(&self) -> Vec<u8> {
        let mut lines: Vec<(&PathBuf, &Meta)> = self.entries.iter().collect();
        lines.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = String::with_capacity(lines.len() * 80);
        out.push_str(HEADER);
        out.push('\n');
        for (path, m) in lines {
            let kind = match m.kind {
                EntryKind::Directory => 'd',
                EntryKind::File => 'f',
                EntryKind::Symlink => 'l',
                EntryKind::Other => 'o',
            };
            let target = m.target.as_deref().map(escape).unwrap_or_default();
            let _ = writeln!(
                out,
                "{kind}\t{:o}\t{}\t{}\t{}\t{}\t{}\t{target}",
                m.mode,
                m.uid,
                m.gid,
                m.size,
                m.mtime_ns,
                escape(path)
            );
        }
        out.into_bytes()
    }

    /// Parses a manifest; the error names the line.
    pub fn parse(data: &[u8]) -> Result<Manifest, String> {
        let text = std::str::from_utf8(data).map_err(|e| format!("not text: {e}"))?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("line 1: expected {HEADER:?}"));
        }
        let mut entries = HashMap::new();
        for (i, line) in lines.enumerate() {
            let bad = || format!("line {}: not a manifest entry", i + 2);
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 8 {
                return Err(bad());
            }
            let kind = match f[0] {
                "d" => EntryKind::Directory,
                "f" => EntryKind::File,
                "l" => EntryKind::Symlink,
                "o" => EntryKind::Other,
                _ => return Err(bad()),
            };
            let meta = Meta {
                kind,
                mode: u32::from_str_radix(f[1], 8).map_err(|_| bad())?,
                uid: f[2].parse().map_err(|_| bad())?,
                gid: f[3].parse().map_err(|_| bad())?,
                size: f[4].parse().map_err(|_| bad())?,
                mtime_ns: f[5].parse().map_err(|_| bad())?,
                target: if kind == EntryKind::Symlink {
                    Some(unescape(f[7]).ok_or_else(bad)?)
                } else {
                    None
                },
            };
            entries.insert(unescape(f[6]).ok_or_else(bad)?, meta);
        }
        Ok(Manifest { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn meta(kind: EntryKind, size: u64, mtime_ns: i128) -> Meta {
        Meta {
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime_ns,
            target: None,
        }
    }

    #[test]
    fn manifests_round_trip_any_path() {
        let odd = PathBuf::from(std::ffi::OsString::from_vec(
            b"/etc/we\tird\\na\xffme\n".to_vec(),
        ));
        let mut link = meta(EntryKind::Symlink, 0, 5);
        link.target = Some(PathBuf::from("/etc/static/x y"));
        let m = Manifest::new([
            (PathBuf::from("/etc"), meta(EntryKind::Directory, 0, 1)),
            (
                odd.clone(),
                meta(EntryKind::File, 12, 1_700_000_000_123_456_789),
            ),
            (PathBuf::from("/etc/localtime"), link),
        ]);
        let text = m.render();
        assert_eq!(
            text.iter().filter(|&&b| b == b'\n').count(),
            4,
            "one line each"
        );
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert!(m.get(&odd).is_some());
    }

    #[test]
    fn bad_manifests_name_the_line() {
        assert_eq!(
            Manifest::parse(b"nope\n").unwrap_err(),
            "line 1: expected \"imperm-baseline 1\""
        );
        let err = Manifest::parse(b"imperm-baseline 1\nf\t644\t0\t0\n").unwrap_err();
        assert_eq!(err, "line 2: not a manifest entry");
    }

    #[test]
    fn what_counts_as_a_change() {
        let base = meta(EntryKind::File, 10, 100);
        let cases: Vec<(Meta, Vec<&str>)> = vec![
            (base.clone(), vec![]),
            (meta(EntryKind::File, 11, 100), vec!["content"]),
            (meta(EntryKind::File, 10, 101), vec!["content"]),
            (
                Meta {
                    mode: 0o600,
                    ..base.clone()
                },
                vec!["mode"],
            ),
            (
                Meta {
                    uid: 1000,
                    ..base.clone()
                },
                vec!["owner"],
            ),
            (meta(EntryKind::Directory, 0, 100), vec!["type"]),
        ];
        for (new, want) in cases {
            assert_eq!(differences(&base, &new), want, "{new:?}");
        }
        // A directory's mtime moves with its entries; that alone is no change.
        let dir = meta(EntryKind::Directory, 0, 1);
        assert!(differences(&dir, &meta(EntryKind::Directory, 0, 2)).is_empty());
    }
}
