//! migrate's record of what it verified, kept in each storage (`STORAGE/.imperm-migrate.json`):
//! for every entry it copied or found already the same, when the live path was verified
//! against the copy, when the copy was last placed, and a digest of the copy. `status`
//! trusts a copy as verified while neither side has changed since (newest inode change
//! before those moments); `migrate` takes a copy whose digest is still the recorded one
//! as its own, which a changed live path may replace (kept aside) without `--force`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::beneath::Tree;
use crate::error::Error;
use crate::paths::{escape, unescape};

/// The record's name at the top of a storage.
pub const RECORD: &str = ".imperm-migrate.json";

/// The largest record read (a few hundred bytes an entry).
const RECORD_MAX: u64 = 64 << 20;

/// One entry's verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The moment before the verifying comparison began: a live path whose newest inode
    /// change is not before it may have changed since.
    #[serde(with = "rfc3339")]
    pub verified: Timestamp,
    /// When the copy was placed (or found the same): a copy changed after it is not the
    /// one verified.
    #[serde(with = "rfc3339")]
    pub placed: Timestamp,
    /// [`super::survey::digest`] of the copy.
    pub digest: String,
    pub files: u64,
    pub bytes: u64,
}

/// Times as RFC 3339 text, nanoseconds kept.
mod rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The whole record of a storage: entries by absolute path, escaped as imperm prints
/// paths (so a name that is not UTF-8 survives).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    #[serde(default)]
    pub entries: BTreeMap<String, Verified>,
}

impl Record {
    pub fn get(&self, path: &Path) -> Option<&Verified> {
        self.entries.get(&escape(path))
    }

    pub fn set(&mut self, path: &Path, v: Verified) {
        self.version = 1;
        self.entries.insert(escape(path), v);
    }

    /// Reads a record's text; why not, when it is not one.
    pub fn parse(text: &[u8]) -> Result<Record, String> {
        let r: Record = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        if r.version != 1 {
            return Err(format!(
                "version {} is not one this imperm reads",
                r.version
            ));
        }
        // Each key an absolute path in the one spelling a walk gives (no `//`, `.`, `..`).
        let plain = |p: &Path| {
            p.is_absolute()
                && p.components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
                && p.components().collect::<std::path::PathBuf>().as_os_str() == p.as_os_str()
        };
        if let Some(bad) = r
            .entries
            .keys()
            .find(|k| unescape(k).is_none_or(|p| !plain(&p) || escape(&p) != **k))
        {
            return Err(format!("{bad:?} is not a path as imperm writes them"));
        }
        Ok(r)
    }
}

/// Whether a copy is still the one verified: a record for it, the live path not changed
/// since the verification began and the copy not changed since it was placed (inode
/// change times, seconds and nanoseconds, as the kernel's coarse clock stamps them).
pub fn still_verified(v: &Verified, live_newest: (i64, i64), copy_newest: (i64, i64)) -> bool {
    let before =
        |t: (i64, i64), at: Timestamp| t < (at.as_second(), i64::from(at.subsec_nanosecond()));
    before(live_newest, v.verified) && before(copy_newest, v.placed)
}

/// Now, from the fine clock: later than the change time of anything changed before it,
/// whichever clock stamped that (the coarse one, or the fine one where the kernel's
/// multigrain timestamps use it). What a copy placed before it may be changed by.
pub fn placed_clock() -> Timestamp {
    Timestamp::now()
}

/// The time inode changes are stamped with (`CLOCK_REALTIME_COARSE`, which may lag the
/// fine clock by a tick): a moment taken from it is never later than the change time of
/// anything written after it.
pub fn change_clock() -> Timestamp {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut t) } != 0 {
        // Never fails on Linux for this clock; the epoch only makes copies unverified.
        return Timestamp::UNIX_EPOCH;
    }
    Timestamp::new(t.tv_sec, t.tv_nsec as i32).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Reads the record of the storage open at `tree` (`/` of the tree is the storage).
/// None: there is none.
pub fn read(tree: &Tree, shown: &Path) -> Result<Option<Record>, String> {
    let at = Path::new("/").join(RECORD);
    let file = match tree.open_regular(&at) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let text = crate::beneath::read_regular(file, RECORD_MAX)
        .map_err(|e| format!("{}: {e}", escape(&shown.join(RECORD))))?;
    Record::parse(&text)
        .map(Some)
        .map_err(|why| format!("{}: {why}", escape(&shown.join(RECORD))))
}

/// Writes the record into the storage open at `fd`, atomically and durably (root only).
pub fn write(fd: &OwnedFd, shown: &Path, record: &Record) -> Result<(), Error> {
    let tree = Tree::from_fd(shown.to_path_buf(), fd.as_fd())?;
    let text = serde_json::to_vec_pretty(record).expect("a record serialises");
    tree.write_atomic_with(&Path::new("/").join(RECORD), 0o600, |f| {
        f.write_all(&text)?;
        f.write_all(b"\n")
    })?;
    Ok(())
}

/// The record's own name and the temporary names a write killed half-way leaves, at the
/// top of a storage: not state of the host (stray skips them).
pub fn is_record_name(rel: &Path) -> bool {
    let Some(name) = rel.to_str() else {
        return false;
    };
    name == RECORD
        || (name.starts_with(&format!(".{RECORD}."))
            && name.ends_with(".tmp")
            && !name.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn v() -> Verified {
        Verified {
            verified: at("2026-11-26T12:00:00Z"),
            placed: at("2026-11-26T12:00:05Z"),
            digest: "ab".into(),
            files: 2,
            bytes: 10,
        }
    }

    #[test]
    fn a_copy_stays_verified_only_while_neither_side_changed() {
        let t = |s: &str| {
            let ts = at(s);
            (ts.as_second(), i64::from(ts.subsec_nanosecond()))
        };
        let cases = [
            ("2026-11-26T11:59:59Z", "2026-11-26T12:00:04Z", true),
            // The live path changed at the very moment or after: not verified.
            ("2026-11-26T12:00:00Z", "2026-11-26T12:00:04Z", false),
            (
                "2026-11-26T12:00:00.000000001Z",
                "2026-11-26T12:00:04Z",
                false,
            ),
            // The copy was changed after it was placed.
            ("2026-11-26T11:59:59Z", "2026-11-26T12:00:05Z", false),
            ("2026-11-26T11:59:59Z", "2026-11-27T00:00:00Z", false),
        ];
        for (live, copy, want) in cases {
            assert_eq!(
                still_verified(&v(), t(live), t(copy)),
                want,
                "{live} {copy}"
            );
        }
    }

    #[test]
    fn a_record_reads_back_and_odd_records_are_refused() {
        let mut r = Record::default();
        r.set(Path::new("/var/lib/a"), v());
        r.set(
            Path::new(std::ffi::OsStr::from_bytes(b"/var/lib/\xff\nb")),
            v(),
        );
        let text = serde_json::to_vec(&r).unwrap();
        let back = Record::parse(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.get(Path::new("/var/lib/a")), Some(&v()));
        assert_eq!(back.get(Path::new("/var/lib/c")), None);
        for bad in [
            r#"{"version":2,"entries":{}}"#,
            r#"{"version":1,"entries":{"relative":{"verified":"2026-11-26T12:00:00Z","placed":"2026-11-26T12:00:00Z","digest":"","files":0,"bytes":0}}}"#,
            r#"{"version":1,"entries":{"/a//b":{"verified":"2026-11-26T12:00:00Z","placed":"2026-11-26T12:00:00Z","digest":"","files":0,"bytes":0}}}"#,
            r#"{"version":1,"entries":{"/a/../b":{"verified":"2026-11-26T12:00:00Z","placed":"2026-11-26T12:00:00Z","digest":"","files":0,"bytes":0}}}"#,
            r#"{"version":1"#,
            "",
        ] {
            assert!(Record::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_record_and_its_temporary_names_are_imperms() {
        assert!(is_record_name(Path::new(".imperm-migrate.json")));
        assert!(is_record_name(Path::new(
            "..imperm-migrate.json.12.345.tmp"
        )));
        assert!(!is_record_name(Path::new("var/.imperm-migrate.json")));
        assert!(!is_record_name(Path::new("..imperm-migrate.json.12.345")));
        assert!(!is_record_name(Path::new("var")));
    }
}
