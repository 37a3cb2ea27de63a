//! btrfs send streams (version 1, as `BTRFS_IOC_SEND` writes them with
//! `BTRFS_SEND_FLAG_NO_FILE_DATA`): parsing the commands, and turning an incremental stream
//! into the changes between its parent and the sent snapshot. Pure: bytes in, changes out.
//!
//! New inodes arrive under temporary orphan names (`o257-12-0`) and are renamed into
//! place; deletions, renames, chmod, chown, xattrs and content updates arrive as their own
//! commands, which is what lets a diff see everything `find-new` misses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::classify::EntryKind;

const MAGIC: &[u8] = b"btrfs-stream\0";

// Commands (kernel-shared/send.h).
const C_SNAPSHOT: u16 = 2;
const C_MKFILE: u16 = 3;
const C_MKDIR: u16 = 4;
const C_MKNOD: u16 = 5;
const C_MKFIFO: u16 = 6;
const C_MKSOCK: u16 = 7;
const C_SYMLINK: u16 = 8;
const C_RENAME: u16 = 9;
const C_LINK: u16 = 10;
const C_UNLINK: u16 = 11;
const C_RMDIR: u16 = 12;
const C_SET_XATTR: u16 = 13;
const C_REMOVE_XATTR: u16 = 14;
const C_WRITE: u16 = 15;
const C_CLONE: u16 = 16;
const C_TRUNCATE: u16 = 17;
const C_CHMOD: u16 = 18;
const C_CHOWN: u16 = 19;
const C_END: u16 = 21;
const C_UPDATE_EXTENT: u16 = 22;
const C_FALLOCATE: u16 = 23;

// Attributes.
const A_PATH: u16 = 15;
const A_PATH_TO: u16 = 16;
const A_PATH_LINK: u16 = 17;

/// One command of the stream, with the attributes a diff needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub cmd: u16,
    pub path: Option<PathBuf>,
    pub path_to: Option<PathBuf>,
    pub path_link: Option<PathBuf>,
}

/// Reads every command of a stream.
pub fn parse(mut input: impl Read) -> Result<Vec<Command>, String> {
    let mut header = [0u8; 17];
    input
        .read_exact(&mut header)
        .map_err(|e| format!("send stream header: {e}"))?;
    if &header[..13] != MAGIC {
        return Err("not a btrfs send stream".into());
    }
    let version = u32::from_le_bytes(header[13..17].try_into().expect("4 bytes"));
    if version != 1 {
        return Err(format!("send stream version {version}, expected 1"));
    }
    let mut commands = Vec::new();
    loop {
        let mut head = [0u8; 10];
        match input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("send stream: {e}")),
        }
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let cmd = u16::from_le_bytes(head[4..6].try_into().expect("2 bytes"));
        let mut body = vec![0u8; len];
        input
            .read_exact(&mut body)
            .map_err(|e| format!("send stream command {cmd}: {e}"))?;
        let mut command = Command {
            cmd,
            path: None,
            path_to: None,
            path_link: None,
        };
        let mut at = 0;
        while at + 4 <= body.len() {
            let ty = u16::from_le_bytes([body[at], body[at + 1]]);
            let tlen = u16::from_le_bytes([body[at + 2], body[at + 3]]) as usize;
            let value = body
                .get(at + 4..at + 4 + tlen)
                .ok_or_else(|| format!("send stream command {cmd}: attribute {ty} overruns"))?;
            let path = || PathBuf::from(OsStr::from_bytes(value));
            match ty {
                A_PATH => command.path = Some(path()),
                A_PATH_TO => command.path_to = Some(path()),
                A_PATH_LINK => command.path_link = Some(path()),
                _ => {}
            }
            at += 4 + tlen;
        }
        if cmd == C_END {
            break;
        }
        commands.push(command);
    }
    Ok(commands)
}

/// How an entry differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
    Renamed,
}

/// One change, with paths relative to the subvolume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: PathBuf,
    pub change: ChangeKind,
    pub kind: Option<EntryKind>,
    /// For a rename: where it was.
    pub from: Option<PathBuf>,
    /// For a change: what changed (`content`, `mode`, `owner`, `xattr`).
    pub what: Vec<&'static str>,
}

/// The orphan names btrfs gives new inodes before renaming them into place: `o<ino>-<gen>-<n>`.
fn is_orphan(path: &Path) -> bool {
    let Some(first) = path.components().next() else {
        return false;
    };
    let name = first.as_os_str().as_bytes();
    name.first() == Some(&b'o')
        && name[1..].split(|&b| b == b'-').count() == 3
        && name[1..].iter().all(|&b| b.is_ascii_digit() || b == b'-')
}

/// Moves every key under `from` to the same place under `to`.
fn move_prefix<V>(map: &mut BTreeMap<PathBuf, V>, from: &Path, to: &Path) {
    let keys: Vec<PathBuf> = map
        .keys()
        .filter(|k| k.starts_with(from))
        .cloned()
        .collect();
    for key in keys {
        if let Some(v) = map.remove(&key) {
            let rest = key.strip_prefix(from).expect("filtered by prefix");
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            map.insert(new, v);
        }
    }
}

/// The changes an incremental stream makes to its parent.
pub fn changes(commands: &[Command]) -> Vec<Change> {
    // Entries that did not exist in the parent, by their current path.
    let mut created: BTreeMap<PathBuf, EntryKind> = BTreeMap::new();
    // Entries of the parent, by their current path: where they were and what changed.
    let mut touched: BTreeMap<PathBuf, (PathBuf, BTreeSet<&'static str>)> = BTreeMap::new();
    let mut removed: Vec<(PathBuf, EntryKind)> = Vec::new();
    // Entries of the parent that were renamed: current path -> original path.
    let mut renamed: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut kinds: HashMap<PathBuf, EntryKind> = HashMap::new();
    // New names for inodes of the parent (LINK): new path -> the path it links. Followed by
    // an UNLINK of that path, it is how send expresses the rename of a file.
    let mut linked: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();

    fn mark(
        touched: &mut BTreeMap<PathBuf, (PathBuf, BTreeSet<&'static str>)>,
        renamed: &BTreeMap<PathBuf, PathBuf>,
        path: &Path,
        what: &'static str,
    ) {
        let original = renamed
            .get(path)
            .cloned()
            .unwrap_or_else(|| path.to_path_buf());
        touched
            .entry(path.to_path_buf())
            .or_insert_with(|| (original, BTreeSet::new()))
            .1
            .insert(what);
    }

    for c in commands {
        let Some(path) = c.path.clone() else { continue };
        match c.cmd {
            C_SNAPSHOT => {}
            C_LINK => {
                let origin = c.path_link.clone().unwrap_or_default();
                if created.contains_key(&origin) {
                    created.insert(path, EntryKind::File);
                } else {
                    linked.insert(path, origin);
                }
            }
            C_MKFILE | C_MKNOD | C_MKFIFO | C_MKSOCK | C_SYMLINK | C_MKDIR => {
                let kind = match c.cmd {
                    C_MKDIR => EntryKind::Directory,
                    C_MKFILE => EntryKind::File,
                    C_SYMLINK => EntryKind::Symlink,
                    _ => EntryKind::Other,
                };
                kinds.insert(path.clone(), kind);
                created.insert(path, kind);
            }
            C_RENAME => {
                let Some(to) = c.path_to.clone() else {
                    continue;
                };
                if created.contains_key(&path) || created.keys().any(|k| path.starts_with(k)) {
                    move_prefix(&mut created, &path, &to);
                } else if is_orphan(&path) {
                    // An orphan that is not ours is an inode of the parent being moved
                    // through a temporary name.
                    move_prefix(&mut renamed, &path, &to);
                    move_prefix(&mut touched, &path, &to);
                } else {
                    let original = renamed.remove(&path).unwrap_or_else(|| path.clone());
                    move_prefix(&mut renamed, &path, &to);
                    move_prefix(&mut touched, &path, &to);
                    move_prefix(&mut created, &path, &to);
                    renamed.insert(to, original);
                }
            }
            C_UNLINK | C_RMDIR => {
                let kind = if c.cmd == C_RMDIR {
                    EntryKind::Directory
                } else {
                    EntryKind::File
                };
                if created.remove(&path).is_some() {
                    continue;
                }
                let original = renamed.remove(&path).unwrap_or_else(|| path.clone());
                let pending = touched.remove(&path);
                if let Some(new) = linked
                    .iter()
                    .find(|(_, o)| **o == path)
                    .map(|(n, _)| n.clone())
                {
                    // link + unlink: the file moved to `new`.
                    linked.remove(&new);
                    if let Some((_, what)) = pending {
                        touched.insert(new.clone(), (original.clone(), what));
                    }
                    renamed.insert(new, original);
                    continue;
                }
                if !is_orphan(&original) {
                    removed.push((original, kinds.get(&path).copied().unwrap_or(kind)));
                }
            }
            C_WRITE | C_CLONE | C_TRUNCATE | C_UPDATE_EXTENT | C_FALLOCATE
                if !created.contains_key(&path) =>
            {
                mark(&mut touched, &renamed, &path, "content")
            }
            C_CHMOD if !created.contains_key(&path) => mark(&mut touched, &renamed, &path, "mode"),
            C_CHOWN if !created.contains_key(&path) => mark(&mut touched, &renamed, &path, "owner"),
            C_SET_XATTR | C_REMOVE_XATTR if !created.contains_key(&path) => {
                mark(&mut touched, &renamed, &path, "xattr")
            }
            _ => {}
        }
    }

    let mut out = Vec::new();
    for path in linked.into_keys() {
        created.insert(path, EntryKind::File);
    }
    for (path, kind) in created {
        out.push(Change {
            path,
            change: ChangeKind::Added,
            kind: Some(kind),
            from: None,
            what: Vec::new(),
        });
    }
    for (path, kind) in removed {
        out.push(Change {
            path,
            change: ChangeKind::Removed,
            kind: Some(kind),
            from: None,
            what: Vec::new(),
        });
    }
    for (path, from) in &renamed {
        if path != from {
            out.push(Change {
                path: path.clone(),
                change: ChangeKind::Renamed,
                kind: kinds.get(path).copied(),
                from: Some(from.clone()),
                what: touched
                    .get(path)
                    .map(|t| t.1.iter().copied().collect())
                    .unwrap_or_default(),
            });
        }
    }
    for (path, (_, what)) in touched {
        if renamed.contains_key(&path) {
            continue;
        }
        out.push(Change {
            path,
            change: ChangeKind::Changed,
            kind: None,
            from: None,
            what: what.into_iter().collect(),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.change.cmp(&b.change)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a stream the way the kernel lays it out.
    fn stream(commands: &[(u16, &[(u16, &str)])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(1u32.to_le_bytes());
        for (cmd, attrs) in commands.iter().copied().chain([(C_END, &[][..])]) {
            let mut body = Vec::new();
            for (ty, value) in attrs {
                body.extend(ty.to_le_bytes());
                body.extend((value.len() as u16).to_le_bytes());
                body.extend(value.as_bytes());
            }
            out.extend((body.len() as u32).to_le_bytes());
            out.extend(cmd.to_le_bytes());
            out.extend(0u32.to_le_bytes());
            out.extend(body);
        }
        out
    }

    fn summary(commands: &[(u16, &[(u16, &str)])]) -> Vec<String> {
        let parsed = parse(&stream(commands)[..]).unwrap();
        changes(&parsed)
            .into_iter()
            .map(|c| {
                let from = c
                    .from
                    .map(|f| format!(" from {}", f.display()))
                    .unwrap_or_default();
                let what = if c.what.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", c.what.join(","))
                };
                format!("{:?} {}{from}{what}", c.change, c.path.display())
            })
            .collect()
    }

    #[test]
    fn table_of_streams_and_changes() {
        let p = |s| (A_PATH, s);
        let to = |s| (A_PATH_TO, s);
        type Case = (
            &'static str,
            Vec<(u16, Vec<(u16, &'static str)>)>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "a new file is made as an orphan and renamed into place",
                vec![
                    (C_SNAPSHOT, vec![p("snap")]),
                    (C_MKFILE, vec![p("o258-7-0")]),
                    (C_RENAME, vec![p("o258-7-0"), to("etc/new.conf")]),
                    (C_UPDATE_EXTENT, vec![p("etc/new.conf")]),
                    (C_CHMOD, vec![p("etc/new.conf")]),
                ],
                vec!["Added etc/new.conf"],
            ),
            (
                "a new directory with a file created under its final name",
                vec![
                    (C_MKDIR, vec![p("o259-7-0")]),
                    (C_RENAME, vec![p("o259-7-0"), to("var/lib/svc")]),
                    (C_MKFILE, vec![p("o260-7-0")]),
                    (C_RENAME, vec![p("o260-7-0"), to("var/lib/svc/db")]),
                ],
                vec!["Added var/lib/svc", "Added var/lib/svc/db"],
            ),
            (
                "children made inside an orphan directory follow it",
                vec![
                    (C_MKDIR, vec![p("o261-7-0")]),
                    (C_MKFILE, vec![p("o261-7-0/inner")]),
                    (C_RENAME, vec![p("o261-7-0"), to("srv/x")]),
                ],
                vec!["Added srv/x", "Added srv/x/inner"],
            ),
            (
                "an empty file",
                vec![
                    (C_MKFILE, vec![p("o262-7-0")]),
                    (C_RENAME, vec![p("o262-7-0"), to("empty")]),
                ],
                vec!["Added empty"],
            ),
            (
                "deletions",
                vec![
                    (C_UNLINK, vec![p("etc/old")]),
                    (C_RMDIR, vec![p("var/lib/gone")]),
                ],
                vec!["Removed etc/old", "Removed var/lib/gone"],
            ),
            (
                "a rename, then a write to it",
                vec![
                    (C_RENAME, vec![p("a"), to("b")]),
                    (C_UPDATE_EXTENT, vec![p("b")]),
                ],
                vec!["Renamed b from a (content)"],
            ),
            (
                "a file renamed the way the kernel sends it: link, then unlink",
                vec![
                    (C_LINK, vec![p("etc/moved2"), (A_PATH_LINK, "etc/moved")]),
                    (C_UNLINK, vec![p("etc/moved")]),
                    (20, vec![p("etc/moved2")]),
                ],
                vec!["Renamed etc/moved2 from etc/moved"],
            ),
            (
                "a new hard link to an old file",
                vec![(C_LINK, vec![p("etc/alias"), (A_PATH_LINK, "etc/orig")])],
                vec!["Added etc/alias"],
            ),
            (
                "a rename through an orphan name",
                vec![
                    (C_RENAME, vec![p("x"), to("o300-1-0")]),
                    (C_RENAME, vec![p("o300-1-0"), to("y")]),
                ],
                vec!["Renamed y from x"],
            ),
            (
                "chmod, chown and an xattr on an old file; times alone are no change",
                vec![
                    (C_CHMOD, vec![p("etc/f")]),
                    (C_CHOWN, vec![p("etc/f")]),
                    (C_SET_XATTR, vec![p("etc/g")]),
                    (20, vec![p("etc")]),
                ],
                vec!["Changed etc/f (mode,owner)", "Changed etc/g (xattr)"],
            ),
            (
                "made and removed in between: nothing",
                vec![
                    (C_MKFILE, vec![p("o263-7-0")]),
                    (C_UNLINK, vec![p("o263-7-0")]),
                ],
                vec![],
            ),
        ];
        for (name, commands, want) in cases {
            let commands: Vec<(u16, &[(u16, &str)])> =
                commands.iter().map(|(c, a)| (*c, &a[..])).collect();
            assert_eq!(summary(&commands), want, "{name}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(
            parse(&b"not a stream at all"[..]).unwrap_err(),
            "not a btrfs send stream"
        );
        let mut s = MAGIC.to_vec();
        s.extend(2u32.to_le_bytes());
        assert_eq!(
            parse(&s[..]).unwrap_err(),
            "send stream version 2, expected 1"
        );
    }
}
