//! Old-root snapshots: their names (UTC, sortable; and the legacy local-time names of the
//! seed's laptop), finding them in the snapshot directory, and taking and deleting a
//! snapshot together with the subvolumes nested in it.

use std::path::Path;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::backend::{Backend, Kind};
use crate::error::{Error, FsError};
use crate::toplevel::TopLevel;

/// The name format imperm gives snapshots: ISO 8601 basic, UTC (`20250307T080000Z`).
const NAME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// `bcache-impermanence`'s names, in local time (`2025-03-07_09-00-00`).
const LEGACY_FORMAT: &str = "%Y-%m-%d_%H-%M-%S";

/// The snapshot name for a moment.
pub fn name_for(time: Timestamp) -> String {
    time.to_zoned_datetime(TimeZone::UTC)
        .strftime(NAME_FORMAT)
        .to_string()
}

/// How a snapshot's name was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NameStyle {
    /// imperm's own UTC name.
    Utc,
    /// `YYYY-MM-DD_HH-MM-SS` in local time.
    Legacy,
}

/// The time a snapshot name stands for; `None` for a name imperm does not recognise (such
/// snapshots are listed but never deleted). Legacy names are read in `local`.
pub fn parse_name(name: &str, local: &TimeZone) -> Option<(Timestamp, NameStyle)> {
    let strict = |format: &str| {
        DateTime::strptime(format, name)
            .ok()
            // strptime accepts unpadded fields; only the exact rendering is ours.
            .filter(|dt| dt.strftime(format).to_string() == name)
    };
    if let Some(dt) = strict(NAME_FORMAT) {
        return dt
            .to_zoned_datetime(TimeZone::UTC)
            .ok()
            .map(|z| (z.timestamp(), NameStyle::Utc));
    }
    if let Some(dt) = strict(LEGACY_FORMAT) {
        return local
            .to_ambiguous_timestamp(dt)
            .compatible()
            .ok()
            .map(|t| (t, NameStyle::Legacy));
    }
    None
}

/// A subvolume found in the snapshot directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub time: Option<(Timestamp, NameStyle)>,
    pub readonly: bool,
}

/// The subvolumes in `dir` (relative to the top level). Anything that is not a subvolume
/// (a stray directory, a symlink) is not a snapshot and is skipped, and so are dot-names:
/// imperm's own state file, baseline and temporary diff snapshots.
pub fn list(
    backend: &dyn Backend,
    top: &TopLevel,
    dir: &Path,
    local: &TimeZone,
) -> Result<Vec<Found>, Error> {
    let names = match top.list_dir(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FsError::new("list", dir, e).into()),
    };
    let mut found = Vec::new();
    for name in names {
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let rel = dir.join(&name);
        if backend.kind(top, &rel)? != Kind::Subvolume {
            continue;
        }
        let name = name.to_string_lossy().into_owned();
        found.push(Found {
            time: parse_name(&name, local),
            readonly: backend.is_readonly(top, &rel)?,
            name,
        });
    }
    Ok(found)
}

/// The newest snapshot in `dir` whose name imperm recognises.
pub fn newest(
    backend: &dyn Backend,
    top: &TopLevel,
    dir: &Path,
    local: &TimeZone,
) -> Result<Option<String>, Error> {
    Ok(list(backend, top, dir, local)?
        .into_iter()
        .filter_map(|f| f.time.map(|(t, _)| (t, f.name)))
        .max()
        .map(|(_, name)| name))
}

/// What a path was in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Existed {
    pub kind: crate::classify::EntryKind,
    /// For a directory, the bytes of every file below it.
    pub bytes: u64,
    pub files: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: crate::mode::Mode,
}

/// `path` (as seen from the host's `/`) in snapshot `snap` (relative to the top level),
/// reached without following any symlink; `None` when it was not there.
pub fn existed(top: &TopLevel, snap: &Path, path: &Path) -> Option<Existed> {
    use rustix::fs::OFlags;
    let rel = snap.join(path.strip_prefix("/").ok()?);
    let fd = top
        .open_beneath(&rel, OFlags::PATH | OFlags::NOFOLLOW)
        .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    let meta = crate::baseline::Meta::from_stat(&st, None);
    let (files, bytes) = if meta.kind == crate::classify::EntryKind::Directory {
        crate::scan::count_tree(&top.join(&rel))
    } else {
        (1, meta.size)
    };
    Some(Existed {
        kind: meta.kind,
        bytes,
        files,
        uid: st.st_uid,
        gid: st.st_gid,
        mode: crate::mode::Mode::from_bits(st.st_mode),
    })
}

/// A line of progress for stderr.
pub type Log<'a> = &'a mut dyn FnMut(String);

/// Snapshots `src` with every subvolume nested in it to `dst`, read-only.
///
/// Where the backend can flip the read-only flag (btrfs), the snapshot is taken writable,
/// the nested subvolumes are snapshotted into the places btrfs leaves empty for them, and
/// the read-only flag is set last, innermost first: a snapshot that is read-only is
/// complete. Where it cannot (bcachefs), the snapshot is taken read-only and nested
/// subvolumes are not in it; each is named in the log.
pub fn snapshot_tree(
    backend: &dyn Backend,
    top: &TopLevel,
    src: &Path,
    dst: &Path,
    log: Log,
) -> Result<(), Error> {
    let nested = backend.nested(top, src)?;
    if !backend.can_set_readonly() {
        backend.snapshot(top, src, dst, true)?;
        for child in nested {
            log(format!(
                "nested subvolume {} is not in snapshot {} ({} cannot add it to a read-only snapshot)",
                child.display(),
                dst.display(),
                backend.fs_type().as_str()
            ));
        }
        return Ok(());
    }
    backend.snapshot(top, src, dst, false)?;
    for child in nested {
        let inside = child.strip_prefix(src).map_err(|_| {
            Error::Usage(format!(
                "nested subvolume {} is outside {}",
                child.display(),
                src.display()
            ))
        })?;
        let target = dst.join(inside);
        if top
            .node(&target)
            .map_err(|e| FsError::new("inspect", &target, e))?
            == crate::toplevel::Node::Directory
        {
            top.remove_empty_dir(&target)
                .map_err(|e| FsError::new("remove the placeholder", &target, e))?;
        }
        snapshot_tree(backend, top, &child, &target, log)?;
    }
    backend.set_readonly(top, dst, true)?;
    Ok(())
}

/// Deletes subvolume `rel` and every subvolume nested in it, innermost first. A read-only
/// subvolume that holds others is made writable first (its entries cannot be removed
/// otherwise).
pub fn delete_tree(backend: &dyn Backend, top: &TopLevel, rel: &Path) -> Result<(), Error> {
    let nested = backend.nested(top, rel)?;
    if !nested.is_empty() && backend.can_set_readonly() && backend.is_readonly(top, rel)? {
        backend.set_readonly(top, rel, false)?;
    }
    for child in nested {
        delete_tree(backend, top, &child)?;
    }
    backend.delete(top, rel)?;
    Ok(())
}

/// Checks that `snap` is a complete read-only snapshot of `src`: a read-only subvolume,
/// taken of `src` where the backend records lineage, with the same top-level entries, and
/// (where nested snapshots are kept) a read-only snapshot at every nested place.
pub fn verify(
    backend: &dyn Backend,
    top: &TopLevel,
    src: &Path,
    snap: &Path,
) -> Result<(), String> {
    let fail = |what: String| format!("snapshot {} of {} {what}", snap.display(), src.display());
    match backend.kind(top, snap) {
        Ok(Kind::Subvolume) => {}
        Ok(other) => return Err(fail(format!("is not a subvolume ({other:?})"))),
        Err(e) => return Err(fail(e.to_string())),
    }
    if !backend
        .is_readonly(top, snap)
        .map_err(|e| fail(e.to_string()))?
    {
        return Err(fail("is not read-only".into()));
    }
    let (a, b) = (
        backend.info(top, src).map_err(|e| fail(e.to_string()))?,
        backend.info(top, snap).map_err(|e| fail(e.to_string()))?,
    );
    if let (Some(uuid), Some(parent)) = (a.uuid, b.parent_uuid) {
        if uuid != parent {
            return Err(fail("was taken of another subvolume".into()));
        }
    }
    let nested = backend.nested(top, src).map_err(|e| fail(e.to_string()))?;
    let names = |rel: &Path| top.list_dir(rel).map_err(|e| fail(e.to_string()));
    let mut expected = names(src)?;
    let actual = names(snap)?;
    if !backend.can_set_readonly() {
        // Nested subvolumes directly in the root vanish from a bcachefs snapshot.
        expected.retain(|n| {
            !nested
                .iter()
                .any(|c| c.parent() == Some(src) && c.file_name() == Some(n))
        });
    }
    if expected != actual {
        return Err(fail(format!(
            "has {} top-level entries where the source has {}",
            actual.len(),
            expected.len()
        )));
    }
    if backend.can_set_readonly() {
        for child in nested {
            let Ok(inside) = child.strip_prefix(src) else {
                continue;
            };
            verify(backend, top, &child, &snap.join(inside))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_time() {
        let t: Timestamp = "2025-03-07T08:00:00Z".parse().unwrap();
        assert_eq!(name_for(t), "20250307T080000Z");
        let earlier: Timestamp = "2025-03-06T23:59:59Z".parse().unwrap();
        assert!(name_for(earlier) < name_for(t));
        assert_eq!(
            parse_name("20250307T080000Z", &TimeZone::UTC),
            Some((t, NameStyle::Utc))
        );
    }

    #[test]
    fn legacy_names_are_local_time() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let (t, style) = parse_name("2025-03-07_09-00-00", &berlin).unwrap();
        assert_eq!(style, NameStyle::Legacy);
        assert_eq!(t, "2025-03-07T08:00:00Z".parse::<Timestamp>().unwrap());
        // Summer time: UTC+2.
        let (t, _) = parse_name("2025-07-01_12-00-00", &berlin).unwrap();
        assert_eq!(t, "2025-07-01T10:00:00Z".parse::<Timestamp>().unwrap());
    }

    #[test]
    fn other_names_are_not_recognised() {
        for name in [
            "root",
            "2025-03-07",
            "20250307T080000",
            "20250307T080000Z.old",
            "2025-3-7_9-0-0",
            "20251307T080000Z",
            "2025-03-07T08:00:00Z",
            ".imperm-reset.json",
        ] {
            assert_eq!(parse_name(name, &TimeZone::UTC), None, "{name}");
        }
    }
}
