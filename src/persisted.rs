//! The persisted set: every declared directory and file, resolved to an absolute host path,
//! and the one question every command asks of it: "is this path persisted, and by which
//! entry?". Lookups walk a component trie, so they cost the depth of the path, not the
//! number of entries.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::mode::Mode;

/// Whether an entry persists a whole directory tree or a single file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Directory,
    File,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Directory => "directory",
            Kind::File => "file",
        }
    }
}

/// One declared persistence entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Absolute, normalised, as seen from the host's `/` (user entries already joined to
    /// their home directory).
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    pub kind: Kind,
    /// The persistent storage path that holds it (`/persist`).
    #[serde(serialize_with = "crate::paths::json")]
    pub storage: PathBuf,
    /// The `users.<name>` block it came from, if any, and that user's home directory.
    pub user: Option<String>,
    #[serde(serialize_with = "crate::paths::json_opt")]
    pub home: Option<PathBuf>,
    /// Owner, group and mode requested for the directory (or, for a file, its parent).
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
    /// Where it was declared, for messages: `file:line`, a JSON key path, the mount table.
    pub origin: String,
}

impl Entry {
    /// A plain entry with no ownership or mode, as written `"/var/lib/nixos"`.
    pub fn new(path: impl Into<PathBuf>, kind: Kind, storage: impl Into<PathBuf>) -> Entry {
        Entry {
            path: path.into(),
            kind,
            storage: storage.into(),
            user: None,
            home: None,
            owner: None,
            group: None,
            mode: None,
            origin: String::new(),
        }
    }
}

/// A trie node. Children are indices into [`PersistedSet::nodes`] rather than owned
/// nodes, so nothing about the trie recurses: neither building, nor lookups, nor dropping
/// (an owned tree is dropped recursively, and a path of 300,000 components overflowed the
/// stack).
#[derive(Default, Debug)]
struct Node {
    children: HashMap<OsString, usize>,
    directory: Option<usize>,
    file: Option<usize>,
}

/// The set of persisted entries, indexed for lookups by path.
#[derive(Debug)]
pub struct PersistedSet {
    entries: Vec<Entry>,
    /// The trie; `nodes[0]` is `/`.
    nodes: Vec<Node>,
}

impl Default for PersistedSet {
    fn default() -> PersistedSet {
        PersistedSet::new(Vec::new())
    }
}

impl PersistedSet {
    pub fn new(entries: Vec<Entry>) -> PersistedSet {
        let mut nodes = vec![Node::default()];
        for (index, entry) in entries.iter().enumerate() {
            let mut node = 0;
            for part in normal_components(&entry.path) {
                let next = nodes.len();
                node = *nodes[node]
                    .children
                    .entry(part.to_os_string())
                    .or_insert(next);
                if node == next {
                    nodes.push(Node::default());
                }
            }
            // Keep the first declaration: later duplicates are lint findings, not overrides.
            let slot = match entry.kind {
                Kind::Directory => &mut nodes[node].directory,
                Kind::File => &mut nodes[node].file,
            };
            slot.get_or_insert(index);
        }
        PersistedSet { entries, nodes }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry that persists `path`: an exact file entry, else the deepest directory entry
    /// at or above it (the innermost bind mount is the one whose storage holds the data).
    /// `path` must be absolute; `/var/lib` persisted does not make `/var/lib2` persisted.
    pub fn lookup(&self, path: &Path) -> Option<&Entry> {
        if !path.is_absolute() {
            return None;
        }
        let mut node = &self.nodes[0];
        let mut best = node.directory;
        let mut parts = normal_components(path).peekable();
        while let Some(part) = parts.next() {
            match node.children.get(part) {
                Some(&child) => node = &self.nodes[child],
                None => return best.map(|i| &self.entries[i]),
            }
            if parts.peek().is_none() {
                if let Some(file) = node.file {
                    return Some(&self.entries[file]);
                }
            }
            best = node.directory.or(best);
        }
        best.map(|i| &self.entries[i])
    }

    /// Whether some entry lies strictly below `path` (which is then not one unit of state:
    /// part of it is already persisted).
    pub fn has_below(&self, path: &Path) -> bool {
        let mut node = &self.nodes[0];
        for part in normal_components(path) {
            match node.children.get(part) {
                Some(&child) => node = &self.nodes[child],
                None => return false,
            }
        }
        !node.children.is_empty()
    }

    /// Whether `path` is persisted.
    pub fn contains(&self, path: &Path) -> bool {
        self.lookup(path).is_some()
    }

    /// The distinct persistent storage paths, sorted.
    pub fn storages(&self) -> BTreeSet<&Path> {
        self.entries.iter().map(|e| e.storage.as_path()).collect()
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.entries.iter().filter(|e| e.kind == kind).count()
    }
}

fn normal_components(path: &Path) -> impl Iterator<Item = &std::ffi::OsStr> {
    path.components().filter_map(|c| match c {
        Component::Normal(part) => Some(part),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(entries: &[(&str, Kind)]) -> PersistedSet {
        PersistedSet::new(
            entries
                .iter()
                .map(|(p, k)| Entry::new(*p, *k, "/persist"))
                .collect(),
        )
    }

    #[test]
    fn lookups_follow_component_boundaries() {
        use Kind::*;
        let s = set(&[
            ("/var/lib", Directory),
            ("/var/lib/postgresql", Directory),
            ("/etc/machine-id", File),
            ("/home/josh/.ssh", Directory),
        ]);
        let cases: &[(&str, Option<&str>)] = &[
            ("/var/lib", Some("/var/lib")),
            ("/var/lib/nixos/uid-map", Some("/var/lib")),
            ("/var/lib2", None),
            ("/var/li", None),
            ("/var", None),
            ("/", None),
            ("/var/lib/postgresql", Some("/var/lib/postgresql")),
            ("/var/lib/postgresql/16/base", Some("/var/lib/postgresql")),
            ("/var/lib/postgresql-old", Some("/var/lib")),
            ("/etc/machine-id", Some("/etc/machine-id")),
            ("/etc/machine-id2", None),
            ("/etc/machine-id/x", None),
            ("/etc", None),
            ("/home/josh/.ssh/id_ed25519", Some("/home/josh/.ssh")),
            ("/home/josh/.sshx", None),
            ("var/lib", None),
        ];
        for (query, want) in cases {
            let got = s.lookup(Path::new(query)).map(|e| e.path.to_str().unwrap());
            assert_eq!(got, *want, "lookup {query}");
        }
    }

    #[test]
    fn entries_below_a_path_are_seen() {
        let s = set(&[
            ("/var/lib/systemd/coredump", Kind::Directory),
            ("/etc/machine-id", Kind::File),
        ]);
        for (path, want) in [
            ("/", true),
            ("/var", true),
            ("/var/lib/systemd", true),
            ("/var/lib/systemd/coredump", false),
            ("/var/lib/systemd2", false),
            ("/etc", true),
            ("/etc/machine-id", false),
            ("/home", false),
        ] {
            assert_eq!(s.has_below(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn a_file_entry_wins_over_its_directory_for_the_exact_path() {
        let s = set(&[("/etc/ssh", Kind::Directory), ("/etc/ssh/key", Kind::File)]);
        assert_eq!(
            s.lookup(Path::new("/etc/ssh/key")).unwrap().kind,
            Kind::File
        );
        assert_eq!(
            s.lookup(Path::new("/etc/ssh/other")).unwrap().kind,
            Kind::Directory
        );
    }

    /// The trie must not recurse: a path of 300,000 components (the mount table or a
    /// caller that skips the normalisers can hand one over) used to overflow the stack
    /// when the set was dropped.
    #[test]
    fn a_very_deep_entry_is_built_looked_up_and_dropped() {
        let deep = "/a".repeat(300_000);
        let s = set(&[(deep.as_str(), Kind::Directory), ("/a/b", Kind::File)]);
        let below = format!("{deep}/x");
        assert_eq!(s.lookup(Path::new(&below)).unwrap().path, Path::new(&deep));
        assert!(s.has_below(Path::new("/a/a")));
        drop(s);
    }

    /// The obviously correct answer: scan every entry.
    fn naive_lookup<'a>(entries: &'a [Entry], path: &Path) -> Option<&'a Entry> {
        if let Some(file) = entries
            .iter()
            .find(|e| e.kind == Kind::File && e.path == path)
        {
            return Some(file);
        }
        entries
            .iter()
            .filter(|e| e.kind == Kind::Directory && path.starts_with(&e.path))
            .max_by_key(|e| e.path.components().count())
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        // A tiny alphabet makes prefixes, shared parents and near-misses (`a` vs `ab`) common.
        prop::collection::vec(prop::sample::select(vec!["a", "ab", "b", "a.b", "c"]), 1..5)
            .prop_map(|parts| format!("/{}", parts.join("/")))
    }

    proptest! {
        #[test]
        fn lookup_agrees_with_a_linear_scan(
            declared in prop::collection::vec((path_strategy(), any::<bool>()), 0..12),
            queries in prop::collection::vec(path_strategy(), 1..20),
        ) {
            // Duplicates resolve to the first declaration in both implementations.
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<Entry> = declared
                .into_iter()
                .map(|(p, is_dir)| {
                    Entry::new(p, if is_dir { Kind::Directory } else { Kind::File }, "/persist")
                })
                .filter(|e| seen.insert((e.path.clone(), e.kind)))
                .collect();
            let s = PersistedSet::new(entries.clone());
            for q in &queries {
                let got = s.lookup(Path::new(q)).map(|e| (&e.path, e.kind));
                let want = naive_lookup(&entries, Path::new(q)).map(|e| (&e.path, e.kind));
                prop_assert_eq!(got, want, "query {}", q);
            }
        }
    }
}
