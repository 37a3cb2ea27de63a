//! Problems in a persistence configuration, found without touching the filesystem: the
//! checks are pure functions of the persisted set, the compiled-in knowledge and (when the
//! host has one) the mount table.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::EarlyRead;
use crate::knowledge::Knowledge;
use crate::mode::Mode;
use crate::mountinfo::{MountTable, Wiped};
use crate::paths::{escape, quoted};
use crate::persisted::{Entry, Kind, PersistedSet};

/// Above this many bind mounts boot slows down noticeably (seed, "Slow Boot").
pub const MAX_BIND_MOUNTS: usize = 30;

/// impermanence's mode for directories that do not say one.
const DEFAULT_MODE: Mode = Mode::from_bits(0o755);

/// Which check found a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    StorageOnRoot,
    StorageOverlap,
    Duplicate,
    Nested,
    FileInDirectory,
    Mode,
    NeverPersist,
    EarlyBoot,
    TooManyMounts,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::StorageOnRoot => "storage-on-root",
            Rule::StorageOverlap => "storage-overlap",
            Rule::Duplicate => "duplicate",
            Rule::Nested => "nested",
            Rule::FileInDirectory => "file-in-directory",
            Rule::Mode => "mode",
            Rule::NeverPersist => "never-persist",
            Rule::EarlyBoot => "early-boot",
            Rule::TooManyMounts => "too-many-mounts",
        }
    }
}

/// A parent directory that would replace several bind mounts with one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Merge {
    #[serde(serialize_with = "crate::paths::json")]
    pub parent: PathBuf,
    #[serde(serialize_with = "crate::paths::json")]
    pub storage: PathBuf,
    /// The entries it would cover.
    #[serde(serialize_with = "crate::paths::json_all")]
    pub covers: Vec<PathBuf>,
}

/// One problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    /// The path at fault (an entry, or a storage path).
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    /// What is wrong and what to do, as a sentence.
    pub message: String,
    /// Where the entries involved were declared.
    pub declared_at: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merges: Vec<Merge>,
}

/// Everything `lint` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LintReport {
    pub entries: usize,
    pub bind_mounts: usize,
    /// Whether a mount table with `/` in it was available for the storage check.
    pub mount_table: bool,
    pub findings: Vec<Finding>,
}

/// Runs every check. `root_subvolume` is `[filesystem]`'s, when the root is a subvolume:
/// a storage mounted from inside it is wiped by a reset too. `early` is `[[early_read]]`.
pub fn lint(
    set: &PersistedSet,
    mounts: Option<&MountTable>,
    root_subvolume: Option<&Path>,
    early: &[EarlyRead],
    knowledge: &Knowledge,
) -> LintReport {
    let entries = set.entries();
    let mut findings = Vec::new();
    if let Some(table) = mounts {
        findings.extend(storage_on_root(set, table, root_subvolume));
    }
    findings.extend(storage_overlap(set));
    findings.extend(duplicates(entries));
    findings.extend(nesting(set));
    findings.extend(modes(entries, knowledge));
    findings.extend(never_persist(entries, knowledge));
    findings.extend(early_boot(entries, early));
    let bind_mounts = distinct_paths(entries).len();
    if bind_mounts > MAX_BIND_MOUNTS {
        let merges = merge_suggestions(&distinct_paths(entries), knowledge, MAX_BIND_MOUNTS);
        let after = bind_mounts - merges.iter().map(|m| m.covers.len() - 1).sum::<usize>();
        let message = if merges.is_empty() {
            format!(
                "{bind_mounts} bind mounts (more than {MAX_BIND_MOUNTS} slow the boot); no parent directory narrower than /var/lib or a home directory would merge them"
            )
        } else {
            format!(
                "{bind_mounts} bind mounts (more than {MAX_BIND_MOUNTS} slow the boot); persisting {} instead would leave {after} (each also persists whatever else is in it)",
                match merges.len() {
                    1 => "this parent directory".to_string(),
                    n => format!("these {n} parent directories"),
                }
            )
        };
        findings.push(Finding {
            rule: Rule::TooManyMounts,
            path: PathBuf::from("/"),
            message,
            declared_at: Vec::new(),
            merges,
        });
    }
    LintReport {
        entries: entries.len(),
        bind_mounts,
        // A table without `/` cannot say what a reset wipes: as good as none.
        mount_table: mounts.is_some_and(|t| t.root_mount().is_some()),
        findings,
    }
}

/// The first entry for each path: what actually gets mounted.
fn distinct_paths(entries: &[Entry]) -> Vec<&Entry> {
    let mut seen = std::collections::HashSet::new();
    entries.iter().filter(|e| seen.insert(&e.path)).collect()
}

fn storage_on_root(
    set: &PersistedSet,
    table: &MountTable,
    root_subvolume: Option<&Path>,
) -> Vec<Finding> {
    set.storages()
        .into_iter()
        .filter_map(|storage| {
            let place = table.storage(storage, root_subvolume)?;
            let holder = place.holder;
            let message = match place.wiped? {
                Wiped::OnRoot => format!(
                    "persistent storage {} is not a separate filesystem: it lies on the root filesystem ({} {}), which the reset wipes; mount a subvolume or filesystem there with neededForBoot = true",
                    quoted(storage),
                    holder.fs_type,
                    holder.source
                ),
                Wiped::InsideRoot { tree } => format!(
                    "persistent storage {} is mounted from {}, inside the root subvolume {} ({} {}), which the reset deletes with the old root; make the storage a subvolume or filesystem outside the root and mount it there with neededForBoot = true",
                    quoted(storage),
                    escape(&holder.root),
                    escape(&tree),
                    holder.fs_type,
                    holder.source
                ),
            };
            Some(Finding {
                rule: Rule::StorageOnRoot,
                path: storage.to_path_buf(),
                message,
                declared_at: Vec::new(),
                merges: Vec::new(),
            })
        })
        .collect()
}

/// A storage inside a persisted directory: the directory's bind mount and the storage's
/// own mount cover each other, so one of them shows the wrong files. And an entry inside
/// another storage: it would be bind mounted over part of that storage. (An entry inside
/// its own storage is refused when the configuration is loaded.)
fn storage_overlap(set: &PersistedSet) -> Vec<Finding> {
    let storages = set.storages();
    let mut findings = Vec::new();
    for storage in &storages {
        let Some(outer) = set.lookup(storage).filter(|e| e.kind == Kind::Directory) else {
            continue;
        };
        findings.push(Finding {
            rule: Rule::StorageOverlap,
            path: storage.to_path_buf(),
            message: format!(
                "persistent storage {} lies inside the persisted directory {}: that directory's bind mount and the storage's mount cover each other, so one of them shows the wrong files; move the storage out of every persisted directory",
                quoted(storage),
                quoted(&outer.path)
            ),
            declared_at: vec![outer.origin.clone()],
            merges: Vec::new(),
        });
    }
    for entry in distinct_paths(set.entries()) {
        // An entry at a storage's own path is the case above.
        let Some(storage) = storages
            .iter()
            .find(|s| entry.path.starts_with(s) && **s != entry.storage && **s != entry.path)
        else {
            continue;
        };
        findings.push(Finding {
            rule: Rule::StorageOverlap,
            path: entry.path.clone(),
            message: format!(
                "{} lies inside the persistent storage {} and is persisted from {}: it would be bind mounted over part of that storage; remove the entry (what is in a storage persists already)",
                quoted(&entry.path),
                quoted(storage),
                quoted(&entry.storage)
            ),
            declared_at: vec![entry.origin.clone()],
            merges: Vec::new(),
        });
    }
    findings
}

fn duplicates(entries: &[Entry]) -> Vec<Finding> {
    let mut by_path: BTreeMap<&Path, Vec<&Entry>> = BTreeMap::new();
    for entry in entries {
        by_path.entry(&entry.path).or_default().push(entry);
    }
    by_path
        .into_iter()
        .filter(|(_, group)| group.len() > 1)
        .map(|(path, group)| {
            let kinds_differ = group.iter().any(|e| e.kind != group[0].kind);
            let message = if kinds_differ {
                format!(
                    "{} is declared both as a directory and as a file; keep one",
                    quoted(path)
                )
            } else {
                format!(
                    "{} is declared {} times; impermanence refuses duplicate {}",
                    quoted(path),
                    group.len(),
                    if group[0].kind == Kind::File {
                        "files"
                    } else {
                        "directories"
                    }
                )
            };
            Finding {
                rule: Rule::Duplicate,
                path: path.to_path_buf(),
                message,
                declared_at: group.iter().map(|e| e.origin.clone()).collect(),
                merges: Vec::new(),
            }
        })
        .collect()
}

/// Entries inside another persisted directory of the same storage: the same data is bind
/// mounted twice. (Across storage paths nesting is how a subtree is put on other storage,
/// so it is left alone.)
fn nesting(set: &PersistedSet) -> Vec<Finding> {
    let mut findings = Vec::new();
    for entry in distinct_paths(set.entries()) {
        let Some(parent) = entry.path.parent() else {
            continue;
        };
        let Some(outer) = set.lookup(parent) else {
            continue;
        };
        if outer.kind != Kind::Directory || outer.storage != entry.storage {
            continue;
        }
        let (rule, what) = match entry.kind {
            Kind::Directory => (Rule::Nested, "directory"),
            Kind::File => (Rule::FileInDirectory, "file"),
        };
        findings.push(Finding {
            rule,
            path: entry.path.clone(),
            message: format!(
                "the {what} {} is inside the persisted directory {}, which already keeps it; remove the inner entry",
                quoted(&entry.path),
                quoted(&outer.path)
            ),
            declared_at: vec![entry.origin.clone(), outer.origin.clone()],
            merges: Vec::new(),
        });
    }
    findings
}

/// Known directories that must have a mode (`/var/lib/private`: 0700).
fn modes(entries: &[Entry], knowledge: &Knowledge) -> Vec<Finding> {
    let mut findings = Vec::new();
    for known in &knowledge.paths {
        let Some(required) = known.mode else {
            continue;
        };
        let exact: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.kind == Kind::Directory && known.path.matches(&e.path))
            .collect();
        for entry in &exact {
            let mode = entry.mode.unwrap_or(DEFAULT_MODE);
            if mode != required {
                findings.push(Finding {
                    rule: Rule::Mode,
                    path: entry.path.clone(),
                    message: format!(
                        "{} is persisted with mode {mode}{} but must be {required}: {}",
                        quoted(&entry.path),
                        if entry.mode.is_none() {
                            " (the default)"
                        } else {
                            ""
                        },
                        known.reason
                    ),
                    declared_at: vec![entry.origin.clone()],
                    merges: Vec::new(),
                });
            }
        }
        if !exact.is_empty() {
            continue;
        }
        // Entries below it make impermanence create it with its default mode.
        let mut below: BTreeMap<PathBuf, Vec<&Entry>> = BTreeMap::new();
        for entry in entries {
            if known.path.contains(&entry.path) && !known.path.matches(&entry.path) {
                if let Some(at) = ancestor_matching(&entry.path, |p| known.path.matches(p)) {
                    below.entry(at).or_default().push(entry);
                }
            }
        }
        for (dir, inside) in below {
            findings.push(Finding {
                rule: Rule::Mode,
                path: dir.clone(),
                message: format!(
                    "{} is persisted below {}, which then gets mode {DEFAULT_MODE} but must be {required}: {}; add {{ directory = {}; mode = \"{required}\"; }}",
                    inside.iter().map(|e| quoted(&e.path)).collect::<Vec<_>>().join(", "),
                    quoted(&dir),
                    known.reason,
                    quoted(&dir)
                ),
                declared_at: inside.iter().map(|e| e.origin.clone()).collect(),
                merges: Vec::new(),
            });
        }
    }
    findings
}

fn ancestor_matching(path: &Path, pred: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    path.ancestors().find(|a| pred(a)).map(Path::to_path_buf)
}

/// Paths that must not be persisted (container overlay storage), persisted directly or with
/// the service directory that holds them. A broader parent (`~/.local/share`) is a choice
/// about much more than one service, so it is not blamed.
fn never_persist(entries: &[Entry], knowledge: &Knowledge) -> Vec<Finding> {
    let mut findings = Vec::new();
    for known in knowledge.paths.iter().filter(|k| k.never_persist) {
        for entry in distinct_paths(entries) {
            let message = if known.path.contains(&entry.path) {
                format!(
                    "{} should not be persisted ({}): {}",
                    quoted(&entry.path),
                    known.service,
                    known.reason
                )
            } else if known.path.is_below(&entry.path)
                && known
                    .service_dir
                    .as_ref()
                    .is_some_and(|d| d.contains(&entry.path))
            {
                format!(
                    "{} persists {} with it ({}): {}",
                    quoted(&entry.path),
                    known.path.text,
                    known.service,
                    known.reason
                )
            } else {
                continue;
            };
            findings.push(Finding {
                rule: Rule::NeverPersist,
                path: entry.path.clone(),
                message,
                declared_at: vec![entry.origin.clone()],
                merges: Vec::new(),
            });
        }
    }
    findings
}

/// Persisted paths read before they are there: bind mounts (and impermanence's links) are
/// made in stage 2, after activation, and some readers run before that (sops-nix's secrets
/// for users, agenix, both during activation; systemd-machine-id-commit).
fn early_boot(entries: &[Entry], early: &[EarlyRead]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for read in early {
        let Some(entry) = distinct_paths(entries).into_iter().find(|e| {
            e.path == read.path || (e.kind == Kind::Directory && read.path.starts_with(&e.path))
        }) else {
            continue;
        };
        findings.push(Finding {
            rule: Rule::EarlyBoot,
            path: read.path.clone(),
            message: early_boot_message(read, &entry.storage),
            declared_at: vec![entry.origin.clone()],
            merges: Vec::new(),
        });
    }
    findings
}

/// The NixOS module's evaluation warning says the same (`nix/lib.nix`, earlyBootProblems).
fn early_boot_message(read: &EarlyRead, storage: &Path) -> String {
    let kept = storage.join(read.path.strip_prefix("/").unwrap_or(&read.path));
    let fix = read.fix.clone().unwrap_or_else(|| {
        format!(
            "point it at {} (the storage is mounted in the initrd), or keep the file with preservation's inInitrd = true",
            escape(&kept)
        )
    });
    format!(
        "{} is read by {} before the bind mounts from {} exist: {fix}",
        quoted(&read.path),
        read.reader,
        escape(storage)
    )
}

/// Proposes parent directories that would cover several entries each, greedily taking the
/// one that saves the most mounts (the narrowest on a tie, then the alphabetically first),
/// until at most `limit` remain. Parents that are too broad or inside a tree NixOS
/// regenerates are never proposed.
///
/// Each parent's count of mounts below it is kept up to date as merges happen, rather than
/// recounted every round (which cost rounds × entries: 115 s for 8,000 entries in pairs).
/// A merge at P of k mounts lowers every candidate above P by k - 1 and empties every
/// candidate below it; counts only fall, so a max-heap with stale entries skipped always
/// yields the candidate the recount would.
pub fn merge_suggestions(entries: &[&Entry], knowledge: &Knowledge, limit: usize) -> Vec<Merge> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    type Key = (PathBuf, PathBuf);
    struct Candidate {
        count: usize,
        /// Mounts ever placed below it; those merged away since are skipped.
        members: Vec<usize>,
    }
    let eligible = |p: &Path| !(knowledge.too_broad(p) || knowledge.in_generated_tree(p));
    let rank = |key: &Key, count: usize| {
        (
            count,
            key.0.components().count(),
            Reverse(key.0.clone()),
            Reverse(key.1.clone()),
        )
    };

    // Each mount: (path, storage, the original entries it covers), and whether it is
    // still one (not merged into a parent).
    let mut mounts: Vec<(PathBuf, PathBuf, Vec<PathBuf>)> = entries
        .iter()
        .map(|e| (e.path.clone(), e.storage.clone(), vec![e.path.clone()]))
        .collect();
    let mut alive = vec![true; mounts.len()];
    let mut remaining = mounts.len();
    let mut candidates: HashMap<Key, Candidate> = HashMap::new();
    for (i, (path, storage, _)) in mounts.iter().enumerate() {
        for ancestor in path.ancestors().skip(1).filter(|a| eligible(a)) {
            let c = candidates
                .entry((ancestor.to_path_buf(), storage.clone()))
                .or_insert(Candidate {
                    count: 0,
                    members: Vec::new(),
                });
            c.count += 1;
            c.members.push(i);
        }
    }
    let mut heap: BinaryHeap<_> = candidates
        .iter()
        .filter(|(_, c)| c.count >= 2)
        .map(|(key, c)| rank(key, c.count))
        .collect();

    while remaining > limit {
        let Some((count, _, Reverse(parent), Reverse(storage))) = heap.pop() else {
            break;
        };
        let key = (parent, storage);
        if candidates.get(&key).is_none_or(|c| c.count != count) {
            continue; // stale: its count has fallen since
        }
        let members: Vec<usize> = std::mem::take(&mut candidates.get_mut(&key).unwrap().members)
            .into_iter()
            .filter(|&i| alive[i])
            .collect();
        debug_assert_eq!(members.len(), count);
        let mut covers = Vec::new();
        for &i in &members {
            alive[i] = false;
            covers.append(&mut mounts[i].2);
            // Every candidate between the merged mount and the parent is now empty.
            for below in mounts[i].0.ancestors().skip(1) {
                if below == key.0 {
                    break;
                }
                if let Some(c) = candidates.get_mut(&(below.to_path_buf(), key.1.clone())) {
                    c.count = 0;
                    c.members = Vec::new();
                }
            }
        }
        covers.sort();
        candidates.get_mut(&key).unwrap().count = 0;
        let merged = mounts.len();
        for above in key.0.ancestors().skip(1).filter(|a| eligible(a)) {
            let above = (above.to_path_buf(), key.1.clone());
            if let Some(c) = candidates.get_mut(&above) {
                c.count -= count - 1;
                c.members.push(merged);
                if c.count >= 2 {
                    heap.push(rank(&above, c.count));
                }
            }
        }
        remaining -= count - 1;
        mounts.push((key.0, key.1, covers));
        alive.push(true);
    }
    let mut merges: Vec<Merge> = mounts
        .into_iter()
        .zip(alive)
        .filter(|((_, _, covers), alive)| *alive && covers.len() > 1)
        .map(|((parent, storage, covers), _)| Merge {
            parent,
            storage,
            covers,
        })
        .collect();
    merges.sort_by(|a, b| (&a.parent, &a.storage).cmp(&(&b.parent, &b.storage)));
    merges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge;
    use crate::mountinfo::parse;

    fn entry(path: &str, kind: Kind) -> Entry {
        let mut e = Entry::new(path, kind, "/persist");
        e.origin = format!("t:{path}");
        e
    }

    fn dir(path: &str) -> Entry {
        entry(path, Kind::Directory)
    }

    fn file(path: &str) -> Entry {
        entry(path, Kind::File)
    }

    fn rules(entries: Vec<Entry>) -> Vec<(Rule, String)> {
        let set = PersistedSet::new(entries);
        lint(&set, None, None, &[], knowledge::builtin())
            .findings
            .into_iter()
            .map(|f| (f.rule, f.path.to_string_lossy().into_owned()))
            .collect()
    }

    #[test]
    fn table_of_configurations_and_their_findings() {
        let mut private_0700 = dir("/var/lib/private");
        private_0700.mode = Some(Mode::from_bits(0o700));
        let mut private_0750 = dir("/var/lib/private");
        private_0750.mode = Some(Mode::from_bits(0o750));
        let mut other_storage = dir("/srv/media/big");
        other_storage.storage = PathBuf::from("/data");
        let mut josh_overlay = dir("/home/josh/.local/share/containers/storage/overlay");
        josh_overlay.user = Some("josh".into());

        type Case = (&'static str, Vec<Entry>, Vec<(Rule, &'static str)>);
        let cases: Vec<Case> = vec![
            (
                "clean",
                vec![dir("/var/log"), file("/etc/machine-id")],
                vec![],
            ),
            (
                "duplicate directory",
                vec![dir("/var/log"), dir("/var/log")],
                vec![(Rule::Duplicate, "/var/log")],
            ),
            (
                "same path as file and directory",
                vec![dir("/etc/x"), file("/etc/x")],
                vec![(Rule::Duplicate, "/etc/x")],
            ),
            (
                "nested directory",
                vec![dir("/var/lib"), dir("/var/lib/nixos")],
                vec![(Rule::Nested, "/var/lib/nixos")],
            ),
            (
                "nested two levels down",
                vec![dir("/var/lib/forgejo"), dir("/var/lib/forgejo/data/repos")],
                vec![(Rule::Nested, "/var/lib/forgejo/data/repos")],
            ),
            (
                "siblings are not nested",
                vec![dir("/var/lib"), dir("/var/lib2")],
                vec![],
            ),
            (
                "nesting across storage paths is deliberate",
                vec![dir("/srv/media"), other_storage],
                vec![],
            ),
            (
                "file inside directory",
                vec![dir("/etc/ssh"), file("/etc/ssh/ssh_host_ed25519_key")],
                vec![(Rule::FileInDirectory, "/etc/ssh/ssh_host_ed25519_key")],
            ),
            (
                "private without a mode",
                vec![dir("/var/lib/private")],
                vec![(Rule::Mode, "/var/lib/private")],
            ),
            ("private 0700", vec![private_0700.clone()], vec![]),
            (
                "private 0750",
                vec![private_0750],
                vec![(Rule::Mode, "/var/lib/private")],
            ),
            (
                "entries below private without it",
                vec![
                    dir("/var/lib/private/headscale"),
                    dir("/var/lib/private/n8n"),
                ],
                vec![(Rule::Mode, "/var/lib/private")],
            ),
            (
                "entries below private with it",
                vec![private_0700, dir("/var/lib/private/n8n")],
                vec![(Rule::Nested, "/var/lib/private/n8n")],
            ),
            (
                "overlay persisted",
                vec![dir("/var/lib/containers/storage/overlay")],
                vec![(Rule::NeverPersist, "/var/lib/containers/storage/overlay")],
            ),
            (
                "overlay persisted with its service directory",
                vec![dir("/var/lib/containers")],
                vec![(Rule::NeverPersist, "/var/lib/containers")],
            ),
            (
                "volumes are fine",
                vec![dir("/var/lib/containers/storage/volumes")],
                vec![],
            ),
            (
                "rootless overlay",
                vec![josh_overlay],
                vec![(
                    Rule::NeverPersist,
                    "/home/josh/.local/share/containers/storage/overlay",
                )],
            ),
            (
                "a broad parent is not blamed for overlay",
                vec![dir("/home/josh/.local/share")],
                vec![],
            ),
        ];
        for (name, entries, want) in cases {
            let want: Vec<(Rule, String)> =
                want.into_iter().map(|(r, p)| (r, p.to_string())).collect();
            assert_eq!(rules(entries), want, "case: {name}");
        }
    }

    #[test]
    fn duplicates_name_every_declaration() {
        let set = PersistedSet::new(vec![dir("/var/log"), dir("/var/lib/x"), dir("/var/log")]);
        let report = lint(&set, None, None, &[], knowledge::builtin());
        assert_eq!(report.findings[0].declared_at, ["t:/var/log", "t:/var/log"]);
        assert_eq!(report.bind_mounts, 2);
    }

    #[test]
    fn files_read_before_the_bind_mounts_exist() {
        let read = |path: &str, fix: Option<&str>| EarlyRead {
            path: PathBuf::from(path),
            reader: "sops-nix (secrets neededForUsers)".into(),
            fix: fix.map(Into::into),
        };
        let key = "/etc/ssh/ssh_host_ed25519_key";
        // (persisted entries, what is read early, the paths lint reports)
        let cases: Vec<(Vec<Entry>, Vec<EarlyRead>, Vec<&str>)> = vec![
            (vec![file(key)], vec![read(key, None)], vec![key]),
            // Under a persisted directory: the directory's bind mount is as late.
            (vec![dir("/etc/ssh")], vec![read(key, None)], vec![key]),
            // The reader already points into the storage, or at something not persisted.
            (
                vec![file(key)],
                vec![read("/persist/etc/ssh/ssh_host_ed25519_key", None)],
                vec![],
            ),
            (vec![file("/etc/machine-id")], vec![read(key, None)], vec![]),
            // A file entry does not cover what is below its name.
            (vec![file("/etc/ssh")], vec![read(key, None)], vec![]),
            (
                vec![dir("/etc/ssh2")],
                vec![read("/etc/ssh2x/k", None)],
                vec![],
            ),
            (vec![file(key)], vec![], vec![]),
        ];
        for (entries, early, want) in cases {
            let set = PersistedSet::new(entries.clone());
            let got: Vec<String> = lint(&set, None, None, &early, knowledge::builtin())
                .findings
                .into_iter()
                .filter(|f| f.rule == Rule::EarlyBoot)
                .map(|f| f.path.to_string_lossy().into_owned())
                .collect();
            assert_eq!(got, want, "{entries:?} {early:?}");
        }
        let set = PersistedSet::new(vec![file(key)]);
        let finding = &lint(&set, None, None, &[read(key, None)], knowledge::builtin()).findings[0];
        assert_eq!(
            finding.message,
            "\"/etc/ssh/ssh_host_ed25519_key\" is read by sops-nix (secrets neededForUsers) before the bind mounts from /persist exist: point it at /persist/etc/ssh/ssh_host_ed25519_key (the storage is mounted in the initrd), or keep the file with preservation's inInitrd = true"
        );
        assert_eq!(finding.declared_at, vec![format!("t:{key}")]);
        let fixed = lint(
            &set,
            None,
            None,
            &[read(key, Some("do this"))],
            knowledge::builtin(),
        );
        assert!(fixed.findings[0].message.ends_with("exist: do this"));
    }

    #[test]
    fn storage_on_the_root_filesystem_is_found_only_with_a_mount_table() {
        let on_root = MountTable {
            file: PathBuf::from("mountinfo"),
            mounts: parse("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n").unwrap(),
        };
        let separate = MountTable {
            file: PathBuf::from("mountinfo"),
            mounts: parse(
                "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:2 / /persist rw - ext4 /dev/sda2 rw\n",
            )
            .unwrap(),
        };
        let set = PersistedSet::new(vec![dir("/var/log")]);
        let k = knowledge::builtin();
        let found = lint(&set, Some(&on_root), None, &[], k).findings;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rule, Rule::StorageOnRoot);
        assert_eq!(found[0].path, PathBuf::from("/persist"));
        assert!(
            lint(&set, Some(&separate), None, &[], k)
                .findings
                .is_empty()
        );
        assert!(lint(&set, None, None, &[], k).findings.is_empty());
        // A table without `/` cannot tell what the root is: said as "not checked", never
        // as a storage that is fine.
        let rootless = MountTable {
            file: PathBuf::from("mountinfo"),
            mounts: parse("2 1 0:30 /@persist /persist rw - btrfs /dev/vda2 rw\n").unwrap(),
        };
        let report = lint(&set, Some(&rootless), None, &[], k);
        assert!(report.findings.is_empty());
        assert!(!report.mount_table);
        assert!(lint(&set, Some(&separate), None, &[], k).mount_table);
    }

    /// Each overlap of a storage and an entry is one finding, whichever way round.
    #[test]
    fn storages_and_entries_that_overlap() {
        let in_storage = |path: &str, storage: &str| {
            let mut e = dir(path);
            e.storage = PathBuf::from(storage);
            e
        };
        type Case = (&'static str, Vec<Entry>, Vec<(Rule, &'static str)>);
        let cases: Vec<Case> = vec![
            (
                "a storage inside a persisted directory",
                vec![dir("/var/lib/x"), in_storage("/srv", "/var/lib/x/store")],
                vec![(Rule::StorageOverlap, "/var/lib/x/store")],
            ),
            (
                "a storage persisted as a directory of another",
                vec![
                    in_storage("/state", "/persist"),
                    in_storage("/srv", "/state"),
                ],
                vec![(Rule::StorageOverlap, "/state")],
            ),
            (
                "an entry inside another storage",
                vec![dir("/state/sub"), in_storage("/srv", "/state")],
                vec![(Rule::StorageOverlap, "/state/sub")],
            ),
            (
                "storages side by side",
                vec![dir("/var/lib/x"), in_storage("/srv", "/state")],
                vec![],
            ),
            (
                "a name that only begins like the storage",
                vec![dir("/stateful"), in_storage("/srv", "/state")],
                vec![],
            ),
        ];
        for (what, entries, want) in cases {
            let got = rules(entries);
            let want: Vec<(Rule, String)> =
                want.into_iter().map(|(r, p)| (r, p.to_string())).collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn too_many_mounts_come_with_merging_parents() {
        let mut entries: Vec<Entry> = (0..20).map(|i| dir(&format!("/var/lib/svc{i}"))).collect();
        entries.extend((0..6).map(|i| dir(&format!("/var/lib/nixarr/app{i}"))));
        entries.extend((0..4).map(|i| dir(&format!("/srv/media/lib{i}"))));
        entries.extend((0..5).map(|i| file(&format!("/etc/ssh/key{i}"))));
        let set = PersistedSet::new(entries);
        let report = lint(&set, None, None, &[], knowledge::builtin());
        assert_eq!(report.bind_mounts, 35);
        let finding = report
            .findings
            .iter()
            .find(|f| f.rule == Rule::TooManyMounts)
            .expect("too many mounts reported");
        let parents: Vec<_> = finding
            .merges
            .iter()
            .map(|m| m.parent.to_str().unwrap())
            .collect();
        // nixarr saves 5 and is enough to get to 30; /etc/ssh is never proposed.
        assert_eq!(parents, ["/var/lib/nixarr"]);
        assert_eq!(finding.merges[0].covers.len(), 6);
        assert!(
            finding
                .message
                .contains("persisting this parent directory instead would leave 30"),
            "{}",
            finding.message
        );
    }

    #[test]
    fn merging_keeps_going_until_under_the_limit_and_prefers_narrow_parents() {
        let paths = [
            "/srv/a/x/1",
            "/srv/a/x/2",
            "/srv/a/x/3",
            "/srv/a/y/1",
            "/srv/a/y/2",
            "/srv/b/1",
            "/srv/b/2",
        ];
        let entries: Vec<Entry> = paths.iter().map(|p| dir(p)).collect();
        let refs: Vec<&Entry> = entries.iter().collect();
        let merges = merge_suggestions(&refs, knowledge::builtin(), 2);
        let parents: Vec<_> = merges.iter().map(|m| m.parent.to_str().unwrap()).collect();
        assert_eq!(parents, ["/srv/a", "/srv/b"]);
        assert_eq!(merges[0].covers.len(), 5);
        let none = merge_suggestions(&refs, knowledge::builtin(), 7);
        assert!(none.is_empty());
    }

    /// The greedy merge as first written: every round recounts every candidate parent of
    /// every mount. Obviously right, and quadratic; the reference for the real one.
    fn merge_by_recounting(entries: &[&Entry], knowledge: &Knowledge, limit: usize) -> Vec<Merge> {
        let mut mounts: Vec<(PathBuf, PathBuf, Vec<PathBuf>)> = entries
            .iter()
            .map(|e| (e.path.clone(), e.storage.clone(), vec![e.path.clone()]))
            .collect();
        while mounts.len() > limit {
            let mut candidates: HashMap<(&Path, &Path), Vec<usize>> = HashMap::new();
            for (i, (path, storage, _)) in mounts.iter().enumerate() {
                for ancestor in path.ancestors().skip(1) {
                    if knowledge.too_broad(ancestor) || knowledge.in_generated_tree(ancestor) {
                        continue;
                    }
                    candidates.entry((ancestor, storage)).or_default().push(i);
                }
            }
            let best = candidates
                .into_iter()
                .filter(|(_, members)| members.len() >= 2)
                .max_by(|(a, am), (b, bm)| {
                    am.len()
                        .cmp(&bm.len())
                        .then(a.0.components().count().cmp(&b.0.components().count()))
                        .then(b.0.cmp(a.0))
                        .then(b.1.cmp(a.1))
                });
            let Some(((parent, storage), mut members)) = best else {
                break;
            };
            let (parent, storage) = (parent.to_path_buf(), storage.to_path_buf());
            members.sort_unstable();
            let mut covers = Vec::new();
            for &i in members.iter().rev() {
                covers.extend(mounts.swap_remove(i).2);
            }
            covers.sort();
            mounts.push((parent, storage, covers));
        }
        let mut merges: Vec<Merge> = mounts
            .into_iter()
            .filter(|(_, _, covers)| covers.len() > 1)
            .map(|(parent, storage, covers)| Merge {
                parent,
                storage,
                covers,
            })
            .collect();
        merges.sort_by(|a, b| (&a.parent, &a.storage).cmp(&(&b.parent, &b.storage)));
        merges
    }

    proptest::proptest! {
        #[test]
        fn merging_agrees_with_recounting(
            paths in proptest::collection::vec(
                (proptest::collection::vec(proptest::sample::select(vec!["srv", "a", "b", "c", "var", "lib", "d"]), 1..6), proptest::prelude::any::<bool>()),
                0..60,
            ),
            limit in 0usize..40,
        ) {
            let entries: Vec<Entry> = paths
                .iter()
                .map(|(parts, other)| {
                    let storage = if *other { "/state" } else { "/persist" };
                    Entry::new(format!("/{}", parts.join("/")), Kind::Directory, storage)
                })
                .collect();
            let refs = distinct_paths(&entries);
            let k = knowledge::builtin();
            proptest::prop_assert_eq!(
                merge_suggestions(&refs, k, limit),
                merge_by_recounting(&refs, k, limit)
            );
        }
    }

    /// Pairs of directories under /var/lib (too broad to propose) merge two at a time: one
    /// round per pair. Recounting every mount each round took 115 s for 8,000 entries.
    #[test]
    fn merging_many_pairs_is_not_quadratic() {
        let entries: Vec<Entry> = (0..10_000)
            .map(|i| dir(&format!("/var/lib/g{}/{}", i / 2, i % 2)))
            .collect();
        let refs: Vec<&Entry> = entries.iter().collect();
        let started = std::time::Instant::now();
        let merges = merge_suggestions(&refs, knowledge::builtin(), MAX_BIND_MOUNTS);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            merges.len(),
            5_000,
            "every pair, and still more than the limit"
        );
        assert_eq!(merges[0].parent, Path::new("/var/lib/g0"));
    }
}
