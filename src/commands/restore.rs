//! `restore`: brings files back from an old-root snapshot, into the live root or into the
//! persistent storage that declares them, and prints the persistence entries to add.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;
use serde::Serialize;

use super::discover;
use crate::cli::{GlobalArgs, RestoreArgs, RestoreInto};
use crate::config::Config;
use crate::discover::suggest::Suggestion;
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;
use crate::filesystem::backend;
use crate::filesystem::toplevel::TopLevel;
use crate::knowledge::Verdict;
use crate::mountinfo::{self, MountTable, Wiped};
use crate::nixos::nix::{self, Style};
use crate::output::{self, Report, Styles};
use crate::paths::{escape, normalize_given, quoted};
use crate::persisted::Kind;
use crate::recover::restore::{self, Job, Leftover, Prepared};
use crate::words::{bytes, count};

#[derive(Debug, Serialize)]
pub(super) struct Restored {
    #[serde(serialize_with = "crate::paths::json")]
    path: PathBuf,
    /// Where it went, as seen from the host's `/`.
    #[serde(serialize_with = "crate::paths::json")]
    pub(super) target: PathBuf,
    kind: Kind,
    /// The storage it went into (`--into persist`).
    #[serde(serialize_with = "crate::paths::json_opt")]
    storage: Option<PathBuf>,
    /// Where the entry that persists it is declared; null when none does.
    declared: Option<String>,
    files: u64,
    bytes: u64,
    /// Where an existing target was put aside (`--force`).
    #[serde(serialize_with = "crate::paths::json_opt")]
    replaced: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub(super) struct NotRestored {
    #[serde(serialize_with = "crate::paths::json")]
    path: PathBuf,
    pub(super) reason: &'static str,
}

#[derive(Debug, Serialize)]
pub(super) struct RestoreReport {
    from: String,
    into: &'static str,
    pub(super) restored: Vec<Restored>,
    /// What could not be restored, each with why (exit 1 when any).
    pub(super) not_restored: Vec<NotRestored>,
    /// The persistence entries to add, as Nix (empty when every path is declared), with a
    /// comment for each path left out.
    entries: String,
    /// Whether `entries` declares anything (or is only comments).
    #[serde(skip)]
    to_add: bool,
}

/// One path, checked.
struct Item {
    path: PathBuf,
    rel: PathBuf,
    kind: Kind,
    /// Index into the bases: the live root or one storage.
    base: usize,
    /// The storage that declares the path or, when none does, the default one.
    storage: PathBuf,
    declared: Option<String>,
    user: Option<(String, PathBuf)>,
    /// Whether the target exists (to be kept aside); known once the target is checked.
    exists: bool,
}

/// A directory restored paths go below: the live root, or a storage in it.
struct Base {
    fd: OwnedFd,
    /// As seen from the host's `/`.
    shown: PathBuf,
}

impl Base {
    fn target(&self, rel: &Path) -> PathBuf {
        self.shown.join(rel)
    }
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Paths copied before one flush to disk and their renames into place.
const BATCH: usize = 64;

fn refuse(what: String) -> Error {
    Error::Usage(format!("{what}; nothing was written"))
}

pub fn run(global: &GlobalArgs, args: &RestoreArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, RestoreReport::COMMAND)?;
    let config = super::load_config(global)?;
    let report = report(&config, args)?;
    output::emit(&report, global.format, global.color)?;
    Ok(if report.not_restored.is_empty() {
        ExitStatus::Clean
    } else {
        ExitStatus::Findings
    })
}

/// Restores, and says what it did without printing it (`browse`'s `r` does the same).
pub(super) fn report(config: &Config, args: &RestoreArgs) -> Result<RestoreReport, Error> {
    let fs = super::filesystem(config, &args.fs)?;
    let backend = backend::for_type(fs.fs_type);
    if !backend.has_subvolumes() {
        return Err(Error::Usage(
            "a tmpfs root keeps no old roots to restore from; nothing was written".into(),
        ));
    }
    let top = TopLevel::open(&fs, args.fs.mounted.as_deref())?;
    // What is mounted now decides what a write may do, whatever the tree declares (and
    // also when it declares nothing). Read after the top level is open: that may have
    // moved this process into a mount namespace of its own, whose mount ids the checks
    // below compare.
    let own = mountinfo::own()
        .map_err(|e| FsError::new("read the mount table", Path::new("/proc/self/mountinfo"), e))?;
    let live = own
        .clone()
        .seen_from(&config.root)
        .map_err(|e| FsError::new("open", &config.root, e))?;
    let (from, snap) = super::old_root(backend.as_ref(), &top, &fs, args.from.as_deref())
        .map_err(|e| Error::Usage(format!("{e}; nothing was written")))?;
    let root = rustix::fs::open(
        &config.root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::new("open", &config.root, e.into()))?;
    let default_storage = discover::storage(config);
    let cx = discover::context(config);

    // Every check before anything is written.
    let mut bases = vec![Base {
        fd: rustix::io::dup(&root).map_err(|e| FsError::new("open", &config.root, e.into()))?,
        shown: PathBuf::from("/"),
    }];
    let mut storage_base: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut items: Vec<Item> = Vec::new();
    let mut not_restored = Vec::new();
    for raw in &args.paths {
        let path =
            normalize_given(raw.as_os_str()).map_err(|p| refuse(format!("{} {p}", quoted(raw))))?;
        let rel = path.strip_prefix("/").expect("absolute").to_path_buf();
        let (kind, cannot) = source_kind(&top, &snap, &rel, &path, &from)?;
        if let Some(reason) = cannot {
            // Reported, and nothing written for it, parents included.
            not_restored.push(NotRestored { path, reason });
            continue;
        }
        let declared = config.persisted.lookup(&path);
        let storage = declared.map_or_else(|| default_storage.clone(), |e| e.storage.clone());
        let base = match args.into {
            RestoreInto::Root => 0,
            RestoreInto::Persist => match storage_base.get(&storage) {
                Some(&i) => i,
                None => {
                    bases.push(Base {
                        fd: open_storage(root.as_fd(), &storage, &live, &fs.root_subvolume)?,
                        shown: storage.clone(),
                    });
                    storage_base.insert(storage.clone(), bases.len() - 1);
                    bases.len() - 1
                }
            },
        };
        items.push(Item {
            user: cx.user_of(&path),
            path,
            rel,
            kind,
            base,
            storage,
            declared: declared.map(|e| e.origin.clone()),
            exists: false,
        });
    }
    let mut items = without_overlaps(items);
    let mut tables: Option<Tables> = None;
    for item in &mut items {
        let base = &bases[item.base];
        let target = base.target(&item.rel);
        let existing = check_target(base.fd.as_fd(), &item.rel, &target, args.force)?;
        if let Some(fd) = existing {
            let tables = tables.get_or_insert_with(|| Tables::read(own.clone(), &config.root));
            no_mount_in_the_way(&fd, &target, tables)?;
            item.exists = true;
        }
    }
    if let Some(t) = tables.as_ref().filter(|t| t.unreadable > 0) {
        eprintln!(
            "imperm restore: the mount namespaces of {} could not be read: mounts only they hold were not checked",
            count(t.unreadable, "process", "processes")
        );
    }

    top.lock()?;
    // A storage is also written by migrate and `stray --quarantine`, which take its own
    // lock (migrate takes the top level's only with a filesystem configured).
    for base in &bases[1..] {
        crate::rollout::lock_storage(&base.fd, &base.shown)?;
    }
    let stamp = super::now()?.strftime("%Y%m%dT%H%M%SZ").to_string();
    let snapshot = top
        .open_dir(&snap)
        .map_err(|e| FsError::new("open", &top.join(&snap), e))?;
    let mut restored = Vec::new();
    let mut restored_items = Vec::new();
    // Copied in batches, flushed once per batch, then renamed into place: one sync for
    // many small paths, and few descriptors held at a time.
    for batch in items.chunks(BATCH) {
        let mut copies = Vec::new();
        let mut done = Vec::new();
        for item in batch {
            let base = &bases[item.base];
            let parent = item.rel.parent().unwrap_or(Path::new(""));
            let target_dir =
                restore::create_parents(base.fd.as_fd(), snapshot.as_fd(), parent, &base.shown)?;
            let source_dir = top
                .open_dir(&snap.join(parent))
                .map_err(|e| FsError::new("open", &top.join(&snap.join(parent)), e))?;
            match restore::copy(&Job {
                source_dir: source_dir.as_fd(),
                target_dir: target_dir.as_fd(),
                name: item.rel.file_name().expect("a normal path has a name"),
                shown: &base.target(&item.rel),
                replace: item.exists,
                stamp: &stamp,
            })? {
                Prepared::Nothing(out) => done.push((item, Some(out))),
                Prepared::Copied(copy) => {
                    copies.push(copy);
                    done.push((item, None));
                }
            }
        }
        restore::sync_all(&copies)?;
        let mut copies = copies.into_iter();
        let mut placed = Vec::new();
        for (item, out) in done {
            let target = bases[item.base].target(&item.rel);
            let out = match out {
                Some(out) => {
                    // Nothing of it could be copied: it is only reported.
                    not_restored.extend(out.not_restored.into_iter().map(|(_, reason)| {
                        NotRestored {
                            path: item.path.clone(),
                            reason,
                        }
                    }));
                    continue;
                }
                None => {
                    let p = copies.next().expect("one copy per item copied").place()?;
                    let wiped = wiped_by_reset(p.dir.as_fd(), &live, &fs.root_subvolume);
                    placed.push((p.dir, target.clone()));
                    restored_items.push((item, wiped));
                    p.out
                }
            };
            eprintln!(
                "imperm restore: {} -> {}",
                escape(&item.path),
                escape(&target)
            );
            for (below, reason) in out.not_restored {
                let path = if below.as_os_str().is_empty() {
                    item.path.clone()
                } else {
                    item.path.join(below)
                };
                not_restored.push(NotRestored { path, reason });
            }
            restored.push(Restored {
                path: item.path.clone(),
                kind: item.kind,
                storage: (args.into == RestoreInto::Persist).then(|| item.storage.clone()),
                declared: item.declared.clone(),
                files: out.files,
                bytes: out.bytes,
                replaced: out.aside.map(|a| target.with_file_name(a)),
                target,
            });
        }
        restore::sync(
            placed
                .iter()
                .map(|(dir, shown)| (dir.as_fd(), shown.as_path())),
        )?;
    }
    let mut storages: Vec<&Path> = config.persisted.storages().into_iter().collect();
    storages.push(&default_storage);
    let entries = entries(&restored_items, &storages);
    let report = RestoreReport {
        from,
        into: match args.into {
            RestoreInto::Root => "root",
            RestoreInto::Persist => "persist",
        },
        restored,
        entries: entries.0,
        to_add: entries.1,
        not_restored,
    };
    Ok(report)
}

/// What `rel` is in the snapshot, reached without a symlink, and why it cannot be
/// restored if it cannot (a socket).
fn source_kind(
    top: &TopLevel,
    snap: &Path,
    rel: &Path,
    path: &Path,
    from: &str,
) -> Result<(Kind, Option<&'static str>), Error> {
    let in_snapshot = snap.join(rel);
    let fd = top
        .open_beneath(&in_snapshot, OFlags::PATH | OFlags::NOFOLLOW)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {
                refuse(format!("{} is not in snapshot {from}", quoted(path)))
            }
            Some(libc::ELOOP) | Some(libc::EXDEV) => refuse(format!(
                "{} is reached through a symlink in snapshot {from}, which could lead out of it",
                quoted(path)
            )),
            _ => refuse(format!("{}: {e}", quoted(path))),
        })?;
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| FsError::new("stat", &top.join(&in_snapshot), e.into()))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    Ok((
        if kind == FileType::Directory {
            Kind::Directory
        } else {
            Kind::File
        },
        restore::cannot_copy(kind),
    ))
}

/// Opens a persistent storage for writing below it, refusing one that the next reset
/// would wipe (see [`MountTable::wiped_by_reset`]) and one reached through a symlink.
fn open_storage(
    root: BorrowedFd,
    storage: &Path,
    live: &MountTable,
    root_subvolume: &Path,
) -> Result<OwnedFd, Error> {
    let rel = storage.strip_prefix("/").unwrap_or(storage);
    let shown = escape(storage);
    let fd = match rustix::fs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            return Err(refuse(format!(
                "storage {shown} does not exist: restore does not make it, since a directory on the root would be wiped by the next reset"
            )));
        }
        Err(Errno::LOOP | Errno::XDEV) => {
            return Err(refuse(format!(
                "storage {shown} is reached through a symlink, and restore never writes through one"
            )));
        }
        Err(Errno::NOTDIR) => {
            // O_DIRECTORY reports a final symlink as "not a directory".
            let link = rustix::fs::statat(root, rel, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
            return Err(refuse(if link {
                format!(
                    "storage {shown} is reached through a symlink, and restore never writes through one"
                )
            } else {
                format!("storage {shown} is not a directory")
            }));
        }
        Err(e) => return Err(FsError::new("open the storage", storage, e.into()).into()),
    };
    // The mount the descriptor is on (by its id, so it is the mount written to, whatever
    // the path names by now), judged by the table's one rule.
    let holder = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
        .ok()
        .filter(|st| st.stx_mask & StatxFlags::MNT_ID.bits() != 0)
        .and_then(|st| live.mounts.iter().find(|m| m.id == st.stx_mnt_id))
        .or_else(|| live.containing(storage))
        .ok_or_else(|| {
            refuse(format!(
                "storage {shown} is on no mount in /proc/self/mountinfo, so whether the next reset wipes it cannot be told"
            ))
        })?;
    match live.wiped_by_reset(holder, Some(root_subvolume)) {
        None => Ok(fd),
        Some(Wiped::OnRoot) => Err(refuse(format!(
            "storage {shown} is not a filesystem of its own: it lies on the root, which the next reset wipes (mount the persistent storage there first)"
        ))),
        Some(Wiped::InsideRoot { tree }) => Err(refuse(format!(
            "storage {shown} is not a filesystem of its own: it is mounted from {}, inside the root subvolume {}, which the next reset deletes with the old root (make the storage a subvolume or filesystem outside the root)",
            escape(&holder.root),
            escape(&tree)
        ))),
    }
}

/// The mount tables a target to move aside is checked against: this thread's, and those
/// of the other mount namespaces.
struct Tables {
    own: MountTable,
    others: Vec<(u32, MountTable)>,
    unreadable: usize,
    /// The tree's root as this thread names it, to show this thread's mount points as
    /// tree paths.
    root: PathBuf,
}

impl Tables {
    fn read(own: MountTable, root: &Path) -> Tables {
        let (others, unreadable) = mountinfo::other_namespaces();
        Tables {
            own,
            others,
            unreadable,
            root: std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
        }
    }

    /// Every table, with the process whose namespace it is (`None`: this thread's).
    fn all(&self) -> impl Iterator<Item = (Option<u32>, &MountTable)> {
        std::iter::once((None, &self.own)).chain(self.others.iter().map(|(p, t)| (Some(*p), t)))
    }

    /// A mount point as the user knows it: a tree path for one of this thread's inside
    /// the tree, else as the namespace names it, saying which.
    fn shown(&self, pid: Option<u32>, point: &Path) -> String {
        match pid {
            None => match point.strip_prefix(&self.root) {
                Ok(inside) if self.root != Path::new("/") => escape(&Path::new("/").join(inside)),
                _ => escape(point),
            },
            Some(pid) => format!("{}, in the mount namespace of process {pid}", escape(point)),
        }
    }
}

/// Refuses a target that moving aside would harm, judged on its filesystem (not by the
/// paths the mount tables name) in every mount namespace: a mount on it or below it goes
/// along with the rename (bind mounts out of the storage, say), and what is written there
/// from then on lands in the new, unmounted directory; a mount that shows it, or something
/// in it, elsewhere (its bind mount from the storage) goes on showing what was there, so
/// what a service writes lands in the kept-aside copy.
fn no_mount_in_the_way(fd: &OwnedFd, target: &Path, tables: &Tables) -> Result<(), Error> {
    use std::os::fd::AsRawFd;
    let cannot = |why: String| {
        refuse(format!(
            "{} cannot be moved aside safely: which mounts lie below it cannot be told ({why})",
            escape(target)
        ))
    };
    let named = std::fs::read_link(format!("/proc/thread-self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| cannot(e.to_string()))?;
    let holder = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
        .ok()
        .filter(|st| st.stx_mask & StatxFlags::MNT_ID.bits() != 0)
        .map(|st| st.stx_mnt_id)
        .or_else(|| tables.own.containing(&named).map(|m| m.id))
        .ok_or_else(|| cannot("it is on no mount of /proc/self/mountinfo".into()))?;
    let dir = tables
        .own
        .in_filesystem(holder, &named)
        .ok_or_else(|| cannot(format!("its mount does not hold {}", escape(&named))))?;
    for (pid, table) in tables.all() {
        let mut below = table.mounted_at_or_below(&dir);
        if let Some((m, rel)) = below.next() {
            let more = if below.next().is_some() { ", …" } else { "" };
            return Err(refuse(if rel.as_os_str().is_empty() {
                format!(
                    "{} is a mount point ({}{more}), which cannot be moved aside: restore what is below it, or into the storage it comes from",
                    escape(target),
                    tables.shown(pid, &m.mount_point)
                )
            } else {
                format!(
                    "{} holds mount points ({}{}{more}), which moving it aside would carry along: restore what is below them instead",
                    escape(target),
                    escape(&target.join(&rel)),
                    pid.map_or(String::new(), |pid| format!(
                        ", in the mount namespace of process {pid}"
                    ))
                )
            }));
        }
    }
    let is_dir = rustix::fs::fstat(fd)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
    for (pid, table) in tables.all() {
        if let Some((m, rel)) = table.showing(&dir).next() {
            let what = if rel.as_os_str().is_empty() {
                escape(target)
            } else {
                format!("{} (in {})", escape(&target.join(&rel)), escape(target))
            };
            return Err(refuse(format!(
                "{what} is mounted at {} now, which would go on showing what was there, and what is written there would land in the kept-aside copy: {}",
                tables.shown(pid, &m.mount_point),
                if is_dir {
                    "restore the paths inside it instead, or stop what uses that mount and unmount it first"
                } else {
                    "stop what uses that mount and unmount it first"
                }
            )));
        }
    }
    Ok(())
}

/// The target, opened as a path, when it exists, after checking that nothing stands in
/// the way: no symlink between the base and it (a write must not follow one out of the
/// tree), no file where a directory must be, no mount point to move aside, no foreign
/// temporary name.
fn check_target(
    base: BorrowedFd,
    rel: &Path,
    target: &Path,
    force: bool,
) -> Result<Option<OwnedFd>, Error> {
    let symlink = || {
        refuse(format!(
            "a symlink stands in the way of {}, and restore never writes through one",
            escape(target)
        ))
    };
    let exists = match rustix::fs::openat2(
        base,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    ) {
        Ok(fd) => {
            if !force {
                // Refused after the temporary name is looked at (below), which may hold
                // what a killed restore took out of this target.
                return Err(refuse_existing(base, rel, target));
            }
            let st = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::empty())
                .map_err(|e| FsError::new("inspect", target, e.into()))?;
            if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
                && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
            {
                return Err(refuse(format!(
                    "{} is a mount point, which cannot be moved aside: restore what is below it, or into the storage it comes from",
                    escape(target)
                )));
            }
            Some(fd)
        }
        Err(Errno::NOENT | Errno::NOTDIR) => None,
        Err(Errno::LOOP | Errno::XDEV) => return Err(symlink()),
        Err(e) => return Err(FsError::new("inspect", target, e.into()).into()),
    };
    // The nearest existing directory above it: a symlink or a file there is in the way.
    let parent = rel.parent().unwrap_or(Path::new(""));
    let mut above = target.parent();
    for ancestor in parent.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        match rustix::fs::openat2(
            base,
            ancestor,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        ) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd)
                    .map_err(|e| FsError::new("inspect", above.unwrap_or(target), e.into()))?;
                match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => break,
                    FileType::Symlink => return Err(symlink()),
                    _ => {
                        return Err(refuse(format!(
                            "{} is not a directory, so {} cannot be restored below it",
                            escape(above.unwrap_or(target)),
                            escape(target)
                        )));
                    }
                }
            }
            Err(Errno::NOENT | Errno::NOTDIR) => above = above.and_then(Path::parent),
            Err(Errno::LOOP | Errno::XDEV) => return Err(symlink()),
            Err(e) => return Err(FsError::new("inspect", target, e.into()).into()),
        }
    }
    // A temporary name holding something that is not ours is never removed.
    if let Leftover::Foreign(why) = leftover(base, rel, target)? {
        let name = rel.file_name().expect("a normal path has a name");
        return Err(restore::foreign_leftover(
            &target.with_file_name(restore::temp_name(name)),
            why,
        ));
    }
    Ok(exists)
}

/// What stands at the temporary name of the target `base/rel`.
fn leftover(base: BorrowedFd, rel: &Path, target: &Path) -> Result<Leftover, Error> {
    let name = rel.file_name().expect("a normal path has a name");
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = if parent.as_os_str().is_empty() {
        rustix::io::dup(base).map(Some)
    } else {
        match rustix::fs::openat2(
            base,
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
            Err(e) => Err(e),
        }
    }
    .map_err(|e| FsError::new("open", target.parent().unwrap_or(target), e.into()))?;
    let Some(dir) = dir else {
        return Ok(Leftover::None);
    };
    restore::leftover(dir.as_fd(), name).map_err(|e| {
        FsError::new(
            "inspect",
            &target.with_file_name(restore::temp_name(name)),
            e,
        )
        .into()
    })
}

/// The refusal of an existing target without `--force`, saying where a killed restore
/// left what it took out of it, if it did.
fn refuse_existing(base: BorrowedFd, rel: &Path, target: &Path) -> Error {
    let kept = match leftover(base, rel, target) {
        Ok(Leftover::Kept) => format!("; {}", restore::kept_note(target)),
        _ => String::new(),
    };
    refuse(format!(
        "{} exists; pass --force to keep it aside and restore anyway{kept}",
        escape(target)
    ))
}

/// The items to restore, each once: a path given twice, or below another given path that
/// goes to the same place, is restored with it. Sorted by place, a path's descendants
/// follow it directly, so one pass finds them.
fn without_overlaps(items: Vec<Item>) -> Vec<Item> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Stable: of equal paths the first given stays.
    order.sort_by(|&a, &b| (items[a].base, &items[a].rel).cmp(&(items[b].base, &items[b].rel)));
    let mut keep = vec![true; items.len()];
    let mut covering: Option<usize> = None;
    for i in order {
        if let Some(c) = covering
            .filter(|&c| items[c].base == items[i].base && items[i].rel.starts_with(&items[c].rel))
        {
            keep[i] = false;
            if items[c].rel == items[i].rel {
                eprintln!(
                    "imperm restore: {} is given twice; restored once",
                    escape(&items[i].path)
                );
            } else {
                eprintln!(
                    "imperm restore: {} is restored with {}",
                    escape(&items[i].path),
                    escape(&items[c].path)
                );
            }
        } else {
            covering = Some(i);
        }
    }
    items
        .into_iter()
        .zip(keep)
        .filter_map(|(item, keep)| keep.then_some(item))
        .collect()
}

/// Whether the next reset wipes what is in `dir`, judged like a storage on the mount the
/// descriptor is on (see [`MountTable::wiped_by_reset`]); `None` when that cannot be told.
fn wiped_by_reset(dir: BorrowedFd, live: &MountTable, root_subvolume: &Path) -> Option<bool> {
    let st = rustix::fs::statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).ok()?;
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return None;
    }
    let holder = live.mounts.iter().find(|m| m.id == st.stx_mnt_id)?;
    live.root_mount()?;
    Some(live.wiped_by_reset(holder, Some(root_subvolume)).is_some())
}

/// The persistence entries to add for what was restored (each with whether its target is
/// on a mount the next reset wipes), by the rules every suggestion keeps, so that the
/// snippet loads and passes `lint`: per storage, a directory that must have a mode with it
/// (`/var/lib/private`: 0700; a path below it is persisted with it). No entry but a
/// comment saying why for a declared path (a comment only when it went into the root and
/// its bind mount is not there), a path inside a storage, in a tree NixOS does not persist
/// by bind mount (`/nix`, `/boot`, `/tmp`, `/run` …: what the audit never walks), on a
/// mount the reset does not wipe, too broad to persist whole (`/var`, `/etc`, a home
/// directory), or that Nix cannot name exactly (not UTF-8). Also whether any entry is
/// left.
fn entries(items: &[(&Item, Option<bool>)], storages: &[&Path]) -> (String, bool) {
    let knowledge = crate::knowledge::builtin();
    let mut by_storage: BTreeMap<&Path, Vec<Suggestion>> = BTreeMap::new();
    let mut unnamed = String::new();
    let mut note = |text: String| unnamed.push_str(&format!("# imperm: {text}\n"));
    for &(item, wiped) in items {
        let shown = escape(&item.path);
        if let Some(origin) = &item.declared {
            if item.base == 0 && wiped == Some(true) {
                note(format!(
                    "{shown} is declared ({origin}) but not bind-mounted here: the restored copy is in the root, which the next reset wipes; restore it with --into persist"
                ));
            }
            continue;
        }
        if let Some(storage) = storages.iter().find(|s| item.path.starts_with(s)) {
            note(format!(
                "{shown} is inside the persistent storage {}, which the reset does not wipe: nothing to declare",
                escape(storage)
            ));
            continue;
        }
        if let Some(tree) = knowledge.never_walked(&item.path) {
            note(format!(
                "{shown} is in {}, which is never persisted by a bind mount (another filesystem, or made anew at every boot): nothing to declare",
                escape(tree)
            ));
            continue;
        }
        if knowledge.too_broad(&item.path) {
            note(format!(
                "{shown} is too broad to persist whole: run `imperm check` to see what in it holds state, and persist those directories"
            ));
            continue;
        }
        if item.base == 0 && wiped == Some(false) {
            note(format!(
                "{shown} is on a mount the reset does not wipe: nothing to declare"
            ));
            continue;
        }
        if item.path.to_str().is_none() {
            note(format!(
                "{shown} is not UTF-8, which a Nix string cannot hold: declare it by hand"
            ));
            continue;
        }
        // A directory that must have a mode is declared with it; a path below it with it,
        // since impermanence would make it with its default mode (what `lint` reports).
        let (mut path, mut kind, mut mode) = (item.path.clone(), item.kind, None);
        for known in knowledge.paths.iter().filter(|k| k.mode.is_some()) {
            if let Some(dir) = item.path.ancestors().find(|a| known.path.matches(a)) {
                if dir != item.path {
                    note(format!(
                        "{shown} is persisted with {}, which must have mode {}: {}",
                        escape(dir),
                        known.mode.expect("filtered"),
                        known.reason
                    ));
                }
                (path, kind, mode) = (dir.to_path_buf(), Kind::Directory, known.mode);
                break;
            }
        }
        let list = by_storage.entry(&item.storage).or_default();
        if list.iter().any(|s| s.path == path) {
            continue;
        }
        let user = (path == item.path).then(|| item.user.clone()).flatten();
        list.push(Suggestion {
            path,
            kind,
            verdict: Verdict::Persist,
            reason: String::new(),
            // Never shown: these only become Nix entries.
            source: crate::classify::Source::Unknown,
            service: None,
            files: 0,
            bytes: 0,
            user: user.as_ref().map(|(u, _)| u.clone()),
            relative: user.as_ref().map(|(_, r)| r.clone()),
            in_initrd: false,
            mode,
            owner: None,
            group: None,
            parent: None,
        });
    }
    let mut out = String::new();
    let any = !by_storage.is_empty();
    for (storage, suggestions) in by_storage {
        out.push_str(&nix::render(&suggestions, storage, Style::Impermanence));
    }
    out.push_str(&unnamed);
    (out, any)
}

impl Report for RestoreReport {
    const COMMAND: &'static str = "restore";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        for r in &self.restored {
            writeln!(
                out,
                "restored {}{}{:#} from {} to {} ({}, {})",
                s.path,
                escape(&r.path),
                s.path,
                self.from,
                escape(&r.target),
                count(r.files as usize, "file", "files"),
                bytes(r.bytes)
            )?;
            match (&r.storage, &r.declared) {
                (Some(storage), Some(origin)) => writeln!(
                    out,
                    "  into {}, the storage that declares it ({origin})",
                    escape(storage)
                )?,
                (Some(storage), None) => writeln!(
                    out,
                    "  into {}, the default storage: no entry declares {}",
                    escape(storage),
                    escape(&r.path)
                )?,
                (None, _) => {}
            }
            if let Some(aside) = &r.replaced {
                writeln!(out, "  what was there is kept in {}", escape(aside))?;
            }
        }
        for n in &self.not_restored {
            writeln!(
                out,
                "{}not restored{:#}: {}: {}",
                s.problem,
                s.problem,
                escape(&n.path),
                n.reason
            )?;
        }
        if self.restored.is_empty() {
            return Ok(());
        }
        if self.entries.is_empty() {
            return writeln!(out, "each path is declared already: nothing to add");
        }
        if !self.to_add {
            return out.write_all(self.entries.as_bytes());
        }
        let note = match self.into {
            "persist" => "add the entry so that it is bind mounted at the next boot:",
            _ => "it is in the live root, which the next reset wipes again; persist it:",
        };
        writeln!(out, "{note}")?;
        out.write_all(self.entries.as_bytes())
    }
}
