//! The mount table (`/proc/self/mountinfo`): parsing, and the questions imperm asks of it:
//! which mount holds a path, which bind mounts come from persistent storage, whether a
//! reset wipes a storage, and which mounts lie below a directory.
//!
//! Two tables, for two purposes:
//! - [`read`]: the table the tree declares (`DIR/proc/self/mountinfo`), for reports
//!   (`lint`, `status`, the persisted set from bind mounts). A plain file there is taken
//!   as it is: a fixture, or a copy from the host the tree belongs to. When `DIR/proc` is
//!   the live procfs (the installer's and chroot's `mount --bind /proc DIR/proc`), the file
//!   is this process's own table, with host paths (`DIR/persist`): it is mapped to the tree.
//! - [`live`]: the kernel's table of this process, mapped to the tree, for write safety
//!   (`restore`): what a rename really carries along is what is mounted now, whatever the
//!   tree declares, and also when it declares nothing.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::paths::under_root;

/// One line of mountinfo (proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub id: u64,
    pub parent: u64,
    /// `major:minor` of the filesystem; bind mounts share it with their source.
    pub device: (u32, u32),
    /// The path inside the filesystem that this mount shows (`/@persist/var/lib/nixos` for a
    /// bind mount out of a btrfs subvolume).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    pub options: String,
}

/// A parsed mount table and the file it was read from.
#[derive(Clone, Debug)]
pub struct MountTable {
    pub file: PathBuf,
    pub mounts: Vec<Mount>,
}

/// A line that is not mountinfo.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    pub line: usize,
    pub what: String,
}

/// The kernel's own table file.
const SELF_MOUNTINFO: &str = "/proc/self/mountinfo";

/// `f_type` of procfs (linux/magic.h).
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// Reads the mount table the tree at `root` declares: `/proc/self/mountinfo` below it,
/// resolved as the tree sees it. `Ok(None)` when there is none (a plain directory tree or
/// an unmounted snapshot has no `/proc`), so callers can tell "no mount table" from "no
/// such mount". When that file is on the live procfs it is this process's table, which
/// names mount points as this process sees them: they are mapped to the tree (see
/// [`MountTable::seen_from`]).
pub fn read(root: &Path) -> io::Result<Option<MountTable>> {
    let abs = Path::new(SELF_MOUNTINFO);
    let file = under_root(root, abs);
    // Under --root this is any file the tree holds, read as the tree sees it (a symlink in
    // it never names the host's table): a FIFO or an endless device there must not hang
    // or exhaust the run.
    let dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let fd = match rustix::fs::openat2(
        &dir,
        "proc/self/mountinfo",
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // Asked of the descriptor that is read, so nothing can be swapped in between.
    // `f_type`'s integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let live = rustix::fs::fstatfs(&fd).is_ok_and(|st| st.f_type as i64 == PROC_SUPER_MAGIC);
    let text = crate::beneath::read_regular(std::fs::File::from(fd), MAX_BYTES)?;
    let mounts = parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let table = MountTable { file, mounts };
    Ok(Some(if live { table.seen_from(root)? } else { table }))
}

/// The kernel's mount table of this process, as the tree at `root` sees it: what is
/// mounted now, for decisions about writes (a rename carries along the mounts below it).
/// Unlike [`read`], never the tree's own declaration.
pub fn live(root: &Path) -> io::Result<MountTable> {
    own()?.seen_from(root)
}

/// The kernel's mount table of the calling thread, as it is (mount points as this thread
/// sees them).
pub fn own() -> io::Result<MountTable> {
    // The calling thread's: a mount namespace is a thread's (imperm unshares one to mount
    // the top level privately), and /proc/self names the main thread's.
    let thread = Path::new("/proc/thread-self/mountinfo");
    match read_kernel_table(thread) {
        Ok(table) => Ok(table),
        Err(_) => read_kernel_table(Path::new(SELF_MOUNTINFO)),
    }
}

fn read_kernel_table(abs: &Path) -> io::Result<MountTable> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(abs)?;
    let text = crate::beneath::read_regular(file, MAX_BYTES)?;
    let mounts = parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(MountTable {
        file: abs.to_path_buf(),
        mounts,
    })
}

/// The mount tables of the other mount namespaces this process can see (one process's
/// table for each: a service's private namespace, a container, `unshare -m`), and how
/// many processes' namespaces could not be read (a process that ends meanwhile is not
/// counted). A namespace no process of this PID namespace is in is not seen.
pub fn other_namespaces() -> (Vec<(u32, MountTable)>, usize) {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let mut seen: std::collections::HashSet<PathBuf> = ns("thread-self")
        .or_else(|| ns("self"))
        .into_iter()
        .collect();
    let mut tables = Vec::new();
    let mut unreadable = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (tables, 1);
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let link = match std::fs::read_link(format!("/proc/{pid}/ns/mnt")) {
            Ok(link) => link,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            // A kernel thread has no mount namespace to show.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        if !seen.insert(link) {
            continue;
        }
        match read_kernel_table(Path::new(&format!("/proc/{pid}/mountinfo"))) {
            Ok(table) => tables.push((pid, table)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(_) => unreadable += 1,
        }
    }
    (tables, unreadable)
}

/// A mount table larger than this is not one (10,000 mounts take about 2 MB).
const MAX_BYTES: u64 = 64 << 20;

/// Parses mountinfo. It is bytes, not text: the kernel escapes only space, tab, newline
/// and backslash, so a mount point with a non-UTF-8 name appears as its raw bytes, and
/// must be kept exactly (it is compared with paths on disk).
pub fn parse(text: impl AsRef<[u8]>) -> Result<Vec<Mount>, ParseError> {
    text.as_ref()
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .map(|(i, line)| {
            parse_line(line).ok_or_else(|| ParseError {
                line: i + 1,
                what: format!(
                    "not a mountinfo line: {:?}",
                    truncate(&String::from_utf8_lossy(line), 80)
                ),
            })
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn parse_line(line: &[u8]) -> Option<Mount> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    // Every field is escaped (a space in a path is `\040`), so the first " - " is the
    // separator even when a path contains " - ".
    let sep = line.windows(3).position(|w| w == b" - ")?;
    let (before, after) = (&line[..sep], &line[sep + 3..]);
    let mut fields = before.split(|&b| b == b' ');
    let number = |field: &[u8]| std::str::from_utf8(field).ok()?.parse().ok();
    let id = number(fields.next()?)?;
    let parent = number(fields.next()?)?;
    let device = std::str::from_utf8(fields.next()?).ok()?;
    let (major, minor) = device.split_once(':')?;
    let device = (major.parse().ok()?, minor.parse().ok()?);
    let root = PathBuf::from(OsString::from_vec(unescape(fields.next()?)));
    let mount_point = PathBuf::from(OsString::from_vec(unescape(fields.next()?)));
    if !mount_point.is_absolute() {
        return None;
    }
    let options = String::from_utf8_lossy(fields.next()?).into_owned();
    let mut tail = after.split(|&b| b == b' ');
    let fs_type = String::from_utf8_lossy(&unescape(tail.next()?)).into_owned();
    let source = String::from_utf8_lossy(&unescape(tail.next()?)).into_owned();
    Some(Mount {
        id,
        parent,
        device,
        root,
        mount_point,
        fs_type,
        source,
        options,
    })
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash (`\040`). A
/// backslash not followed by three octal digits is kept as it is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|d| {
            field[i] == b'\\' && d[0] <= b'3' && d.iter().all(|b| (b'0'..=b'7').contains(b))
        });
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |acc, b| acc * 8 + (b - b'0')));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// A bind mount whose source is inside persistent storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    /// Where it is mounted (`/var/lib/nixos`).
    pub target: PathBuf,
    /// Where its data lives (`/persist/var/lib/nixos`).
    pub source: PathBuf,
}

impl MountTable {
    /// The mount that holds `path`: the last-mounted one with the longest mount point that
    /// is a component-wise prefix of `path`.
    pub fn containing(&self, path: &Path) -> Option<&Mount> {
        self.mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| path.starts_with(&m.mount_point))
            .max_by_key(|(i, m)| (m.mount_point.components().count(), *i))
            .map(|(_, m)| m)
    }

    /// Bind mounts of paths out of `storage` (for example `/persist`), in mount order.
    ///
    /// A bind mount shows the same device as its source with a `root` inside the source's
    /// filesystem; so the source directory's filesystem-relative path is worked out from the
    /// mount that holds `storage`, and every other mount whose `root` lies below it is a
    /// bind mount from storage.
    pub fn bind_mounts_from(&self, storage: &Path) -> Vec<BindMount> {
        let Some(holder) = self.containing(storage) else {
            return Vec::new();
        };
        let Ok(inside) = storage.strip_prefix(&holder.mount_point) else {
            return Vec::new();
        };
        let storage_in_fs = holder.root.join(inside);
        let mut found: Vec<BindMount> = Vec::new();
        // Targets already found: a set, so that thousands of bind mounts stay linear.
        let mut targets = std::collections::HashSet::new();
        for mount in &self.mounts {
            if mount.device != holder.device
                || std::ptr::eq(mount, holder)
                || mount.mount_point.starts_with(storage)
            {
                continue;
            }
            let Ok(rel) = mount.root.strip_prefix(&storage_in_fs) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                // The whole storage mounted elsewhere is a second view of it, not an entry.
                continue;
            }
            if !targets.insert(&mount.mount_point) {
                continue;
            }
            found.push(BindMount {
                target: mount.mount_point.clone(),
                source: storage.join(rel),
            });
        }
        found
    }

    /// This table as the tree at `root` sees it, when the table names mount points as this
    /// process sees them (its own table): mounts at or below `root` become tree paths
    /// (`DIR/persist` is `/persist`), the others are dropped. When nothing is mounted at
    /// `root` itself (a directory of a larger mount, such as a subvolume reached through the
    /// top level), the mount that holds it becomes the tree's `/`, showing the directory's
    /// path inside its filesystem: that is the filesystem the tree's files are on.
    pub fn seen_from(self, root: &Path) -> io::Result<MountTable> {
        let root = std::fs::canonicalize(root)?;
        if root == Path::new("/") {
            return Ok(self);
        }
        let holder = self.containing(&root).cloned();
        let mut mounts: Vec<Mount> = self
            .mounts
            .into_iter()
            .filter_map(|mut m| {
                let inside = m.mount_point.strip_prefix(&root).ok()?;
                m.mount_point = Path::new("/").join(inside);
                Some(m)
            })
            .collect();
        if !mounts.iter().any(|m| m.mount_point == Path::new("/")) {
            if let Some(mut holder) = holder {
                let inside = root.strip_prefix(&holder.mount_point).unwrap_or(&root);
                holder.root = holder.root.join(inside);
                holder.mount_point = PathBuf::from("/");
                mounts.insert(0, holder);
            }
        }
        Ok(MountTable {
            file: self.file,
            mounts,
        })
    }

    /// Where `path`, reached through the mount `mount_id` at the path `path` as this table
    /// names it, lies in its filesystem; `None` when no such mount holds it.
    pub fn in_filesystem(&self, mount_id: u64, path: &Path) -> Option<FsPath> {
        let m = self.mounts.iter().find(|m| m.id == mount_id)?;
        let rest = path.strip_prefix(&m.mount_point).ok()?;
        Some(FsPath {
            device: m.device,
            path: join_inside(&m.root, rest),
        })
    }

    /// Mounts whose mount point is `dir` or lies below it, judged by the filesystem, not
    /// by the names this table gives: a rename of `dir` moves its dentry, and every mount
    /// on a dentry inside it goes along, whatever path reaches it (another mount of the
    /// same filesystem, a bind mount of a parent, the top level). A mount point's dentry
    /// is on its parent mount's filesystem, at the parent's `root` joined with the rest of
    /// the path. Each with where it lies relative to `dir` (empty: on `dir` itself).
    pub fn mounted_at_or_below<'a>(
        &'a self,
        dir: &'a FsPath,
    ) -> impl Iterator<Item = (&'a Mount, PathBuf)> + 'a {
        let by_id: std::collections::HashMap<u64, &Mount> =
            self.mounts.iter().map(|m| (m.id, m)).collect();
        self.mounts.iter().filter_map(move |m| {
            let parent = by_id.get(&m.parent).filter(|p| p.id != m.id)?;
            if parent.device != dir.device {
                return None;
            }
            let rest = m.mount_point.strip_prefix(&parent.mount_point).ok()?;
            let at = join_inside(&parent.root, rest);
            let below = at.strip_prefix(&dir.path).ok()?.to_path_buf();
            Some((m, below))
        })
    }

    /// Mounts that show `dir`, or something inside it, elsewhere: their `root` is `dir`
    /// or below it on its filesystem (a bind mount out of it). Moving `dir` aside leaves
    /// them showing what was there. Each with where its root lies relative to `dir`.
    pub fn showing<'a>(
        &'a self,
        dir: &'a FsPath,
    ) -> impl Iterator<Item = (&'a Mount, PathBuf)> + 'a {
        self.mounts.iter().filter_map(move |m| {
            if m.device != dir.device {
                return None;
            }
            let below = m.root.strip_prefix(&dir.path).ok()?.to_path_buf();
            Some((m, below))
        })
    }

    /// The mount the tree's `/` is on.
    pub fn root_mount(&self) -> Option<&Mount> {
        self.containing(Path::new("/"))
    }

    /// Where the persistent storage `storage` lies, and whether a reset wipes it; `None`
    /// when the table cannot tell: it has no mount at `/` (so nothing says what the root
    /// is, and "not wiped" would be a guess). See [`MountTable::wiped_by_reset`].
    pub fn storage(&self, storage: &Path, root_subvolume: Option<&Path>) -> Option<Storage<'_>> {
        self.root_mount()?;
        let holder = self.containing(storage)?;
        Some(Storage {
            holder,
            wiped: self.wiped_by_reset(holder, root_subvolume),
        })
    }

    /// Whether a reset of the root wipes what is on `holder` (the mount a storage lies on),
    /// and why. The one answer `lint`, `status` and `restore` give:
    ///
    /// - the root's own mount (a plain directory of the root, or a subvolume nested in it
    ///   without a mount of its own) is wiped;
    /// - so is another mount of the same filesystem that shows a path inside the root's
    ///   tree: a bind mount of a directory of the root, a second mount of the root
    ///   subvolume, or a subvolume nested in the root and mounted apart
    ///   (`/@root/nestedpersist` inside `/@root`), which a reset deletes with the old root.
    ///   The root's tree is the path the root mount shows, and `root_subvolume` (from
    ///   `[filesystem]`) when given. A btrfs or bcachefs root mount that shows the top
    ///   level (`/`) is not reset, so there only its own mount counts;
    /// - anything on another filesystem is not.
    pub fn wiped_by_reset(&self, holder: &Mount, root_subvolume: Option<&Path>) -> Option<Wiped> {
        let root_mount = self.root_mount()?;
        if holder.mount_point == Path::new("/") {
            return Some(Wiped::OnRoot);
        }
        if holder.device != root_mount.device {
            return None;
        }
        let top_level = matches!(root_mount.fs_type.as_str(), "btrfs" | "bcachefs")
            && root_mount.root == Path::new("/");
        let own = (!top_level).then(|| root_mount.root.clone());
        let configured = root_subvolume
            .filter(|s| !s.as_os_str().is_empty())
            .map(|s| Path::new("/").join(s));
        own.into_iter()
            .chain(configured)
            .find(|tree| holder.root.starts_with(tree))
            .map(|tree| Wiped::InsideRoot { tree })
    }
}

/// A path inside a filesystem: its device, as mountinfo names it (`major:minor`, shared
/// by every mount of the filesystem, bind mounts and subvolumes alike), and the path from
/// the filesystem's root (`/@root/var/lib`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsPath {
    pub device: (u32, u32),
    pub path: PathBuf,
}

/// `root` joined with `rest`, never replacing it (`rest` is relative; `/` joins nothing).
fn join_inside(root: &Path, rest: &Path) -> PathBuf {
    let rest = rest.strip_prefix("/").unwrap_or(rest);
    if rest.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rest)
    }
}

/// Where a persistent storage lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage<'a> {
    /// The mount that holds it.
    pub holder: &'a Mount,
    /// Whether a reset wipes it, and why; `None` when it does not.
    pub wiped: Option<Wiped>,
}

/// Why a reset wipes a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wiped {
    /// It lies on the root's own mount.
    OnRoot,
    /// It is mounted apart, from inside the root's tree (`tree`, such as `/@root`).
    InsideRoot { tree: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A btrfs host with `@root`, `@nix`, `@persist` and impermanence bind mounts, as the
    /// kernel prints it (one mount point with a space, escaped).
    const BTRFS_HOST: &str = "\
22 1 0:30 /@root / rw,relatime shared:1 - btrfs /dev/vda2 rw,space_cache=v2,subvolid=256,subvol=/@root
23 22 0:30 /@nix /nix rw,relatime shared:2 - btrfs /dev/vda2 rw,subvolid=257,subvol=/@nix
24 22 0:30 /@persist /persist rw,relatime shared:3 - btrfs /dev/vda2 rw,subvolid=258,subvol=/@persist
25 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:4 - proc proc rw
26 22 0:30 /@persist/var/lib/nixos /var/lib/nixos rw,relatime shared:3 - btrfs /dev/vda2 rw,subvolid=258,subvol=/@persist
27 22 0:30 /@persist/var/log /var/log rw,relatime shared:3 - btrfs /dev/vda2 rw,subvolid=258,subvol=/@persist
28 22 0:30 /@persist/etc/machine-id /etc/machine-id rw,relatime shared:3 - btrfs /dev/vda2 rw,subvolid=258,subvol=/@persist
29 22 0:30 /@persist/home/josh/My\\040Files /home/josh/My\\040Files rw,relatime shared:3 - btrfs /dev/vda2 rw,subvolid=258,subvol=/@persist
30 22 0:30 /@nix/store /nix/store ro,relatime shared:5 - btrfs /dev/vda2 rw,subvolid=257,subvol=/@nix
31 22 0:40 / /boot rw,relatime shared:6 - vfat /dev/vda1 rw
";

    #[test]
    fn parses_fields_and_unescapes_octal() {
        let mounts = parse(BTRFS_HOST).unwrap();
        assert_eq!(mounts.len(), 10);
        let m = &mounts[7];
        assert_eq!(m.id, 29);
        assert_eq!(m.parent, 22);
        assert_eq!(m.device, (0, 30));
        assert_eq!(m.root, PathBuf::from("/@persist/home/josh/My Files"));
        assert_eq!(m.mount_point, PathBuf::from("/home/josh/My Files"));
        assert_eq!(m.fs_type, "btrfs");
        assert_eq!(m.source, "/dev/vda2");
    }

    #[test]
    fn optional_fields_before_the_separator_are_skipped() {
        let line = "40 22 0:50 / /mnt rw shared:7 master:2 propagate_from:1 - tmpfs none rw\n";
        let mounts = parse(line).unwrap();
        assert_eq!(mounts[0].fs_type, "tmpfs");
        assert_eq!(mounts[0].mount_point, PathBuf::from("/mnt"));
    }

    /// What the kernel prints for odd names: `\134` for a backslash, `\012` for a newline,
    /// `\011` for a tab, raw bytes for a non-UTF-8 name, and a name holding " - " (its
    /// spaces escaped, so the separator is still the first " - ").
    #[test]
    fn odd_names_come_back_exactly() {
        use std::os::unix::ffi::OsStrExt;
        let mut text = b"\
22 1 0:30 /@root / rw - btrfs /dev/vda2 rw
26 22 0:30 /@persist/a\\134b /a\\134b rw - btrfs /dev/vda2 rw
27 22 0:30 /@persist/line\\012two /line\\012two rw - btrfs /dev/vda2 rw
28 22 0:30 /@persist/x\\040-\\040y /x\\040-\\040y rw shared:3 - btrfs /dev/vda2 rw
29 22 0:30 /@persist/t\\011ab /t\\011ab rw - btrfs /dev/vda2 rw
30 22 0:30 /@persist/not\\999octal /not\\9 rw - btrfs /dev/vda2 rw
"
        .to_vec();
        text.extend_from_slice(b"31 22 0:30 /@persist/caf\xe9 /caf\xe9 rw - btrfs /dev/vda2 rw\n");
        let mounts = parse(&text).unwrap();
        let points: Vec<&[u8]> = mounts
            .iter()
            .map(|m| m.mount_point.as_os_str().as_bytes())
            .collect();
        assert_eq!(
            points,
            [
                &b"/"[..],
                b"/a\\b",
                b"/line\ntwo",
                b"/x - y",
                b"/t\tab",
                b"/not\\9",
                b"/caf\xe9",
            ]
        );
        assert_eq!(mounts[3].options, "rw");
        assert_eq!(mounts[3].fs_type, "btrfs");
        assert_eq!(
            mounts[5].root.as_os_str().as_bytes(),
            b"/@persist/not\\999octal"
        );
        let table = MountTable {
            file: PathBuf::new(),
            mounts,
        };
        // Mounted at the top level (subvolid 5), so /persist shows the subvolume's path.
        let mut table = table;
        table.mounts.insert(
            1,
            parse("24 22 0:30 /@persist /persist rw - btrfs /dev/vda2 rw\n").unwrap()[0].clone(),
        );
        let sources: Vec<Vec<u8>> = table
            .bind_mounts_from(Path::new("/persist"))
            .into_iter()
            .map(|b| b.source.as_os_str().as_bytes().to_vec())
            .collect();
        assert!(
            sources.contains(&b"/persist/caf\xe9".to_vec()),
            "{sources:?}"
        );
        assert!(
            sources.contains(&b"/persist/line\ntwo".to_vec()),
            "{sources:?}"
        );
    }

    #[test]
    fn a_fifo_or_a_device_as_the_mount_table_is_refused_without_reading() {
        let dir = tempfile::TempDir::new().unwrap();
        let proc = dir.path().join("proc/self");
        std::fs::create_dir_all(&proc).unwrap();
        let fifo = proc.join("mountinfo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is a FIFO"), "{err}");
        std::fs::remove_file(&fifo).unwrap();
        // A link to /dev/zero names the tree's /dev/zero, which is not there.
        std::os::unix::fs::symlink("/dev/zero", &fifo).unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        // The tree's own /dev/zero (making a device node needs root, as the tests do).
        std::fs::create_dir(dir.path().join("dev")).unwrap();
        let zero =
            std::ffi::CString::new(dir.path().join("dev/zero").as_os_str().as_encoded_bytes())
                .unwrap();
        let made =
            unsafe { libc::mknod(zero.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 5)) };
        assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
        let err = read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is a device"), "{err}");
    }

    #[test]
    fn many_bind_mounts_are_found_in_linear_time() {
        let mut text = String::from(
            "1 0 0:30 /@root / rw - btrfs /dev/vda2 rw\n2 1 0:30 /@persist /persist rw - btrfs /dev/vda2 rw\n",
        );
        for i in 0..20_000 {
            text.push_str(&format!(
                "{} 1 0:30 /@persist/srv/d{i} /srv/d{i} rw - btrfs /dev/vda2 rw\n",
                i + 3
            ));
        }
        let table = MountTable {
            file: PathBuf::new(),
            mounts: parse(&text).unwrap(),
        };
        let started = std::time::Instant::now();
        assert_eq!(table.bind_mounts_from(Path::new("/persist")).len(), 20_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    fn table(text: &str) -> MountTable {
        MountTable {
            file: PathBuf::new(),
            mounts: parse(text).unwrap(),
        }
    }

    /// Every layout of a storage against the root, and what a reset does to it.
    #[test]
    fn whether_a_reset_wipes_a_storage() {
        let inside = |tree: &str| {
            Some(Wiped::InsideRoot {
                tree: PathBuf::from(tree),
            })
        };
        type Case = (
            &'static str,
            &'static str,
            Option<&'static str>,
            Option<Wiped>,
        );
        let btrfs = "1 0 0:30 /@root / rw - btrfs /dev/vda2 rw\n";
        let cases: Vec<Case> = vec![
            (
                "a plain directory of the root",
                "",
                None,
                Some(Wiped::OnRoot),
            ),
            (
                "a subvolume beside the root",
                "2 1 0:30 /@persist /persist rw - btrfs /dev/vda2 rw\n",
                None,
                None,
            ),
            (
                "a subvolume nested in the root, mounted apart",
                "2 1 0:30 /@root/nestedpersist /persist rw - btrfs /dev/vda2 rw\n",
                None,
                inside("/@root"),
            ),
            (
                "a bind mount of a directory of the root",
                "2 1 0:30 /@root/data /persist rw - btrfs /dev/vda2 rw\n",
                None,
                inside("/@root"),
            ),
            (
                "a second mount of the root subvolume",
                "2 1 0:30 /@root /persist rw - btrfs /dev/vda2 rw\n",
                None,
                inside("/@root"),
            ),
            (
                "a name that only begins like the root",
                "2 1 0:30 /@rootkeep /persist rw - btrfs /dev/vda2 rw\n",
                Some("@root"),
                None,
            ),
            (
                "another filesystem",
                "2 1 8:3 / /persist rw - ext4 /dev/vda3 rw\n",
                None,
                None,
            ),
            (
                "the whole top level mounted at the storage",
                "2 1 0:30 / /persist rw - btrfs /dev/vda2 rw\n",
                Some("@root"),
                None,
            ),
        ];
        for (what, storage, sub, want) in cases {
            let t = table(&format!("{btrfs}{storage}"));
            let got = t
                .storage(Path::new("/persist"), sub.map(Path::new))
                .unwrap();
            assert_eq!(got.wiped, want, "{what}");
        }

        // The root mount shows the top level: not a root a reset replaces, so only its own
        // mount counts, and the configured root subvolume.
        let top = "1 0 0:30 / / rw - btrfs /dev/vda2 rw\n\
                   2 1 0:30 /@persist /persist rw - btrfs /dev/vda2 rw\n\
                   3 1 0:30 /@root/state /state rw - btrfs /dev/vda2 rw\n";
        let t = table(top);
        assert_eq!(t.storage(Path::new("/persist"), None).unwrap().wiped, None);
        assert_eq!(t.storage(Path::new("/state"), None).unwrap().wiped, None);
        assert_eq!(
            t.storage(Path::new("/state"), Some(Path::new("@root")))
                .unwrap()
                .wiped,
            inside("/@root")
        );
        assert_eq!(
            t.storage(Path::new("/plain"), None).unwrap().wiped,
            Some(Wiped::OnRoot)
        );

        // ext4 or tmpfs roots: a bind mount of one of their directories is the root.
        for root in [
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:1 /data /persist rw - ext4 /dev/sda1 rw\n",
            "1 0 0:20 / / rw - tmpfs none rw\n2 1 0:20 /data /persist rw - tmpfs none rw\n",
        ] {
            let t = table(root);
            assert_eq!(
                t.storage(Path::new("/persist"), None).unwrap().wiped,
                inside("/"),
                "{root}"
            );
        }
        // No root in the table: nothing to say, not even about a storage it does hold
        // (what the root is, and so what a reset wipes, is unknown).
        let t = table("2 1 0:30 /@persist /persist rw - btrfs /dev/vda2 rw\n");
        assert!(t.storage(Path::new("/elsewhere"), None).is_none());
        assert!(t.storage(Path::new("/persist"), None).is_none());
    }

    /// This process's own table names mount points as it sees them: seen from a tree at
    /// DIR, mounts below DIR become tree paths and the rest go; a DIR that is not a mount
    /// point itself gets the mount holding it as its `/`.
    #[test]
    fn a_table_seen_from_a_tree() {
        let dir = tempfile::TempDir::new().unwrap();
        let live = dir.path().join("live");
        std::fs::create_dir(&live).unwrap();
        let d = std::fs::canonicalize(&live).unwrap();
        let d = d.to_str().unwrap();
        let t = table(&format!(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             2 1 0:30 /@root {d} rw - btrfs /dev/vda2 rw\n\
             3 2 0:30 /@root/nested {d}/persist rw - btrfs /dev/vda2 rw\n\
             4 1 0:30 /@persist {d}2 rw - btrfs /dev/vda2 rw\n\
             5 1 0:22 / /proc rw - proc proc rw\n\
             6 2 0:22 / {d}/proc rw - proc proc rw\n"
        ));
        let seen = t.clone().seen_from(&live).unwrap();
        let points: Vec<(u64, &Path)> = seen
            .mounts
            .iter()
            .map(|m| (m.id, m.mount_point.as_path()))
            .collect();
        assert_eq!(
            points,
            [
                (2, Path::new("/")),
                (3, Path::new("/persist")),
                (6, Path::new("/proc")),
            ]
        );
        assert_eq!(
            seen.storage(Path::new("/persist"), None).unwrap().wiped,
            Some(Wiped::InsideRoot {
                tree: PathBuf::from("/@root")
            })
        );
        // Through a symlink to it, the same tree.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&live, &link).unwrap();
        assert_eq!(t.clone().seen_from(&link).unwrap().mounts, seen.mounts);
        // `/` is the table as it is.
        assert_eq!(
            t.clone().seen_from(Path::new("/")).unwrap().mounts,
            t.mounts
        );

        // A directory inside a mount: that mount, showing the directory, is the tree's `/`.
        let sub = live.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let seen = t.seen_from(&sub).unwrap();
        assert_eq!(seen.mounts.len(), 1);
        assert_eq!(seen.mounts[0].mount_point, Path::new("/"));
        assert_eq!(seen.mounts[0].root, Path::new("/@root/sub"));
    }

    /// The live procfs under a tree is this process's table: mapped; a file is as it is.
    #[test]
    fn the_trees_table_is_mapped_only_when_it_is_the_live_procfs() {
        let dir = tempfile::TempDir::new().unwrap();
        let proc = dir.path().join("proc/self");
        std::fs::create_dir_all(&proc).unwrap();
        std::fs::write(
            proc.join("mountinfo"),
            "1 0 0:30 /@root / rw - btrfs /dev/vda2 rw\n",
        )
        .unwrap();
        let fixture = read(dir.path()).unwrap().unwrap();
        assert_eq!(fixture.mounts[0].mount_point, Path::new("/"));
        assert_eq!(fixture.mounts[0].root, Path::new("/@root"));
        // This machine's / through its own /proc: the live table, as it is at `/`.
        let own = read(Path::new("/")).unwrap().unwrap();
        assert!(own.mounts.iter().any(|m| m.fs_type == "proc"));
        let live = live(Path::new("/")).unwrap();
        assert!(live.root_mount().is_some());
    }

    /// Trial 2, finding 2: what moving a directory carries along is judged on its
    /// filesystem. Each case: the table, the mount and path the directory is reached
    /// through, and the ids of the mounts at or below it.
    #[test]
    fn mounts_at_or_below_a_directory_by_filesystem() {
        let host = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    2 1 0:30 /@root /live rw - btrfs /dev/vda2 rw\n\
                    3 2 0:30 /@persist /live/persist rw - btrfs /dev/vda2 rw\n";
        type Case = (&'static str, String, u64, &'static str, Vec<u64>);
        let cases: Vec<Case> = vec![
            (
                "named below it",
                format!(
                    "{host}4 2 0:30 /@persist/big/sub /live/var/lib/big/sub rw - btrfs /dev/vda2 rw\n"
                ),
                2,
                "/live/var/lib/big",
                vec![4],
            ),
            (
                "a name that only begins like it",
                format!(
                    "{host}4 2 0:30 /@persist/b /live/var/lib/bigger/sub rw - btrfs /dev/vda2 rw\n"
                ),
                2,
                "/live/var/lib/big",
                vec![],
            ),
            (
                "reached through the top level",
                format!(
                    "{host}4 2 0:30 /@persist/big/sub /live/var/lib/big/sub rw - btrfs /dev/vda2 rw\n\
                     5 1 0:30 / /top rw - btrfs /dev/vda2 rw\n"
                ),
                5,
                "/top/@root/var/lib/big",
                vec![4],
            ),
            (
                "reached through a bind mount of a parent",
                format!(
                    "{host}4 2 0:30 /@root/srv /live/srv2 rw - btrfs /dev/vda2 rw\n\
                     5 2 0:30 /@persist/m /live/srv/data/m rw - btrfs /dev/vda2 rw\n"
                ),
                4,
                "/live/srv2/data",
                vec![5],
            ),
            (
                "mounted on it (in another namespace)",
                format!("{host}4 2 0:30 /@persist/big /live/var/lib/big rw - btrfs /dev/vda2 rw\n"),
                2,
                "/live/var/lib/big",
                vec![4],
            ),
            (
                "below it, on top of a mount below it",
                format!(
                    "{host}4 2 8:1 /x /live/var/lib/big/a rw - ext4 /dev/sda1 rw\n\
                     5 4 0:40 / /live/var/lib/big/a/b rw - tmpfs none rw\n"
                ),
                2,
                "/live/var/lib/big",
                vec![4],
            ),
            (
                "another filesystem's same path",
                format!("{host}4 1 8:1 /@root/var/lib/big/x /mnt rw - ext4 /dev/sda1 rw\n"),
                2,
                "/live/var/lib/big",
                vec![],
            ),
            (
                "in the storage",
                format!(
                    "{host}4 3 0:30 /@persist/var/lib/x/s /live/persist/var/lib/x/s rw - btrfs /dev/vda2 rw\n"
                ),
                3,
                "/live/persist/var/lib/x",
                vec![4],
            ),
        ];
        for (what, text, via, path, want) in cases {
            let t = table(&text);
            let dir = t.in_filesystem(via, Path::new(path)).unwrap();
            let got: Vec<u64> = t.mounted_at_or_below(&dir).map(|(m, _)| m.id).collect();
            assert_eq!(got, want, "{what}");
        }
        // Where it lies relative to the directory.
        let t = table(&format!(
            "{host}4 2 0:30 /@persist/x /live/var/lib/big/a/b rw - btrfs /dev/vda2 rw\n"
        ));
        let dir = t.in_filesystem(2, Path::new("/live/var/lib/big")).unwrap();
        assert_eq!(dir.path, Path::new("/@root/var/lib/big"));
        let below: Vec<PathBuf> = t.mounted_at_or_below(&dir).map(|(_, b)| b).collect();
        assert_eq!(below, [PathBuf::from("a/b")]);
        // Not held by the mount named: no answer.
        assert!(t.in_filesystem(3, Path::new("/live/var")).is_none());
        assert!(t.in_filesystem(99, Path::new("/live")).is_none());
    }

    /// Trial 2, finding 3: a mount whose root is the directory, or inside it, shows it
    /// elsewhere, and would keep showing what is moved aside.
    #[test]
    fn mounts_showing_a_directory_elsewhere() {
        let t = table(
            "1 0 0:30 /@root / rw - btrfs /dev/vda2 rw\n\
             2 1 0:30 /@persist /persist rw - btrfs /dev/vda2 rw\n\
             3 1 0:30 /@persist/var/lib/x /var/lib/x rw - btrfs /dev/vda2 rw\n\
             4 1 0:30 /@persist/var/lib/xy /var/lib/xy rw - btrfs /dev/vda2 rw\n\
             5 1 0:30 /@persist/var/lib/x/sub /srv/sub rw - btrfs /dev/vda2 rw\n\
             6 1 8:1 /@persist/var/lib/x /mnt rw - ext4 /dev/sda1 rw\n",
        );
        let dir = t.in_filesystem(2, Path::new("/persist/var/lib/x")).unwrap();
        let got: Vec<(u64, PathBuf)> = t.showing(&dir).map(|(m, b)| (m.id, b)).collect();
        assert_eq!(got, [(3, PathBuf::new()), (5, PathBuf::from("sub"))]);
        let file = t
            .in_filesystem(2, Path::new("/persist/var/lib/xy"))
            .unwrap();
        assert_eq!(t.showing(&file).map(|(m, _)| m.id).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn garbage_names_its_line() {
        let err = parse("22 1 0:30 / / rw - ext4 /dev/x rw\nnot mountinfo\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn finds_bind_mounts_out_of_a_subvolume_storage() {
        let table = MountTable {
            file: PathBuf::new(),
            mounts: parse(BTRFS_HOST).unwrap(),
        };
        let targets: Vec<_> = table
            .bind_mounts_from(Path::new("/persist"))
            .into_iter()
            .map(|b| (b.target, b.source))
            .collect();
        let want: Vec<(PathBuf, PathBuf)> = [
            ("/var/lib/nixos", "/persist/var/lib/nixos"),
            ("/var/log", "/persist/var/log"),
            ("/etc/machine-id", "/persist/etc/machine-id"),
            ("/home/josh/My Files", "/persist/home/josh/My Files"),
        ]
        .iter()
        .map(|(t, s)| (PathBuf::from(t), PathBuf::from(s)))
        .collect();
        assert_eq!(targets, want);
    }

    #[test]
    fn finds_bind_mounts_out_of_a_directory_on_another_filesystem() {
        // tmpfs root, storage at /nix/persist on the /nix filesystem.
        let text = "\
1 0 0:20 / / rw - tmpfs none rw,mode=755
2 1 8:2 / /nix rw - ext4 /dev/sda2 rw
3 1 8:2 /persist/var/lib/nixos /var/lib/nixos rw - ext4 /dev/sda2 rw
4 1 8:2 /store /nix/store ro - ext4 /dev/sda2 rw
";
        let table = MountTable {
            file: PathBuf::new(),
            mounts: parse(text).unwrap(),
        };
        let binds = table.bind_mounts_from(Path::new("/nix/persist"));
        assert_eq!(
            binds,
            vec![BindMount {
                target: "/var/lib/nixos".into(),
                source: "/nix/persist/var/lib/nixos".into()
            }]
        );
        assert_eq!(
            table
                .containing(Path::new("/nix/persist"))
                .unwrap()
                .mount_point,
            PathBuf::from("/nix")
        );
        assert_eq!(
            table.containing(Path::new("/nixos")).unwrap().mount_point,
            PathBuf::from("/")
        );
    }

    #[test]
    fn this_machines_own_mount_table_parses() {
        // Bytes: a mount point need not be UTF-8 (another test may have one mounted now).
        let text = std::fs::read("/proc/self/mountinfo").unwrap();
        let mounts = parse(&text).unwrap();
        assert!(mounts.iter().any(|m| m.mount_point == Path::new("/")));
        assert!(mounts.iter().any(|m| m.fs_type == "proc"));
    }

    /// The kernel's escaping (`show_mountinfo`'s `mangle`): space, tab, newline and
    /// backslash as three octal digits.
    fn mangle(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in bytes {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\\') {
                out.extend_from_slice(format!("\\{b:03o}").as_bytes());
            } else {
                out.push(b);
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
            if let Ok(mounts) = parse(&bytes) {
                for m in mounts {
                    proptest::prop_assert!(m.mount_point.is_absolute());
                }
            }
        }

        #[test]
        fn mutations_of_a_real_table_never_panic(edits in crate::mutate::edits()) {
            let text = crate::mutate::apply(BTRFS_HOST.as_bytes(), &edits);
            match parse(&text) {
                Ok(mounts) => {
                    let table = MountTable { file: PathBuf::new(), mounts };
                    table.bind_mounts_from(Path::new("/persist"));
                }
                Err(e) => proptest::prop_assert!(!e.to_string().contains('\n')),
            }
        }

        /// Any name the kernel can print comes back byte for byte.
        #[test]
        fn any_mount_point_round_trips(
            names in proptest::collection::vec(
                proptest::collection::vec(1u8..=255, 1..20),
                1..4,
            )
        ) {
            use std::os::unix::ffi::OsStrExt;
            let mut point = Vec::new();
            for name in &names {
                point.push(b'/');
                // No NUL can be in a name (the range excludes it), and no `/` either.
                point.extend(name.iter().map(|&b| if b == b'/' { b'_' } else { b }));
            }
            let mut line = b"40 22 0:30 /@persist".to_vec();
            line.extend_from_slice(&mangle(&point));
            line.push(b' ');
            line.extend_from_slice(&mangle(&point));
            line.extend_from_slice(b" rw,relatime shared:3 - btrfs /dev/vda2 rw\n");
            let mounts = parse(&line).unwrap();
            proptest::prop_assert_eq!(mounts[0].mount_point.as_os_str().as_bytes(), &point[..]);
            let mut root = b"/@persist".to_vec();
            root.extend_from_slice(&point);
            proptest::prop_assert_eq!(mounts[0].root.as_os_str().as_bytes(), &root[..]);
        }
    }
}
