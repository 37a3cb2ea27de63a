//! Suggestions: units of state turned into what a person would write. Classifies each unit,
//! merges the files of /etc directories that NixOS does not generate into one directory,
//! and expresses home paths as `users.<name>` entries. Pure: units in, suggestions out.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::classify::{self, Classification, EntryKind, Evidence, Facts, UserRule};
use crate::discover::declared::Declarations;
use crate::discover::scan::Unit;
use crate::knowledge::{Knowledge, Verdict};
use crate::persisted::{Kind, PersistedSet};

/// One suggestion (the JSON contract's `suggestions[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    /// Absolute, as seen from the host's `/`.
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    pub kind: Kind,
    pub verdict: Verdict,
    pub reason: String,
    /// Where the verdict came from (`knowledge`, `unit forgejo.service: StateDirectory`).
    pub source: crate::classify::Source,
    pub service: Option<String>,
    pub files: u64,
    pub bytes: u64,
    /// The user, for a path in a home directory.
    pub user: Option<String>,
    /// For a user's path: relative to the home directory, as `users.<name>` entries take it.
    #[serde(serialize_with = "crate::paths::json_opt")]
    pub relative: Option<PathBuf>,
    /// A file that must be in place before stage 2 (preservation's `inInitrd`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_initrd: bool,
    /// The mode to persist it with: the one the knowledge asks for, else its own where it
    /// differs from what impermanence and preservation make (0755; preservation's files
    /// 0644; see `owners`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::mode::Mode>,
    /// Its owner's name (a number when unknown), where it differs from what the modules
    /// make (root, or the user whose home holds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its group, likewise (root, or the user's group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// For a file: what differs of its directory, which the modules make for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<crate::discover::owners::Perms>,
}

/// What suggestions are made with.
pub struct Context<'a> {
    pub knowledge: &'a Knowledge,
    pub persisted: &'a PersistedSet,
    pub rules: &'a [UserRule],
    /// Home directories with their users, beyond `/home/<user>` and `/root`.
    pub homes: Vec<(String, PathBuf)>,
    /// Whether the units are everything there is (a scan), so that a directory in /etc with
    /// nothing generated among them really has nothing generated. Units from a diff or from
    /// the journal are a few paths; their /etc files stay files.
    pub complete: bool,
    /// What the host's units and tmpfiles.d declare (read once per command).
    pub declared: &'a Declarations,
}

impl Context<'_> {
    /// The classification of a piece of state, with what the host declares about it.
    fn classify(&self, path: &Path, facts: &Facts, bytes: u64) -> Classification {
        let declared = self.declared.about(path, facts, bytes, self.persisted);
        classify::classify_declared(path, facts, self.rules, self.knowledge, declared.as_ref())
    }

    /// The user a path belongs to, and the path relative to the home directory. A name
    /// under /home that is not UTF-8 is no user name (`users.<name>` could not name it):
    /// such a path stays absolute.
    pub fn user_of(&self, path: &Path) -> Option<(String, PathBuf)> {
        for (user, home) in &self.homes {
            if let Ok(rel) = path.strip_prefix(home) {
                if !rel.as_os_str().is_empty() {
                    return Some((user.clone(), rel.to_path_buf()));
                }
            }
        }
        if let Ok(rel) = path.strip_prefix("/root") {
            if !rel.as_os_str().is_empty() {
                return Some(("root".into(), rel.to_path_buf()));
            }
        }
        let rel = path.strip_prefix("/home").ok()?;
        let mut parts = rel.components();
        let user = parts.next()?.as_os_str().to_str()?.to_string();
        let rest = parts.as_path();
        (!rest.as_os_str().is_empty()).then(|| (user, rest.to_path_buf()))
    }
}

/// Turns units into suggestions, sorted by verdict (persist first), then path.
pub fn suggest(units: Vec<Unit>, cx: &Context) -> Vec<Suggestion> {
    let classified: Vec<(Unit, Classification)> = units
        .into_iter()
        .map(|u| {
            let c = cx.classify(&u.path, &u.facts, u.bytes);
            (u, c)
        })
        .collect();
    let merged = if cx.complete {
        merge_generated_trees(classified, cx)
    } else {
        classified
    };
    let mut out: Vec<Suggestion> = merged
        .into_iter()
        .map(|(unit, c)| {
            let user = cx.user_of(&unit.path);
            Suggestion {
                kind: match unit.facts.kind {
                    Some(EntryKind::Directory) => Kind::Directory,
                    _ => Kind::File,
                },
                verdict: c.verdict,
                reason: c.reason,
                source: c.source,
                service: c.service,
                files: unit.facts.files,
                bytes: unit.bytes,
                relative: user.as_ref().map(|(_, r)| r.clone()),
                user: user.map(|(u, _)| u),
                in_initrd: c.in_initrd,
                mode: c.mode,
                owner: None,
                group: None,
                parent: None,
                path: unit.path,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        rank(a.verdict)
            .cmp(&rank(b.verdict))
            .then(a.path.cmp(&b.path))
    });
    out
}

/// The unit a single path belongs to (a changed entry, a path a failure named): its topmost
/// ancestor that is one piece of state. Without a directory listing only the static reasons
/// to split apply, and the directories the host's units declare.
pub fn unit_of(
    path: &Path,
    k: &Knowledge,
    persisted: &PersistedSet,
    declared: &Declarations,
) -> PathBuf {
    let mut prefix = PathBuf::from("/");
    for component in path.components() {
        if let Component::Normal(name) = component {
            prefix.push(name);
            let splits = k.too_broad(&prefix)
                || k.in_generated_tree(&prefix)
                || k.has_known_below(&prefix)
                || persisted.has_below(&prefix)
                || declared.splits(&prefix);
            if !splits || prefix == path {
                return prefix;
            }
        }
    }
    prefix
}

pub fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Persist => 0,
        Verdict::Review => 1,
        Verdict::Ephemeral => 2,
        Verdict::Generated => 3,
    }
}

/// In /etc every file is its own unit, because most of /etc is NixOS's. A directory in it
/// with nothing generated, no known path and nothing persisted below becomes one unit (a
/// person persists `/etc/wireguard`, not each key in it); the topmost such directory is
/// taken.
fn merge_generated_trees(
    classified: Vec<(Unit, Classification)>,
    cx: &Context,
) -> Vec<(Unit, Classification)> {
    let k = cx.knowledge;
    let in_tree = |p: &Path| k.in_generated_tree(p);
    // Directories (inside a generated tree, but not its top) that hold something generated.
    let mut tainted: HashSet<PathBuf> = HashSet::new();
    for (unit, c) in &classified {
        if in_tree(&unit.path) && c.verdict == Verdict::Generated {
            for a in unit.path.ancestors().skip(1) {
                tainted.insert(a.to_path_buf());
            }
        }
    }
    let mergeable = |d: &Path| {
        in_tree(d)
            && !k.too_broad(d)
            && !tainted.contains(d)
            && !k.has_known_below(d)
            && !cx.persisted.has_below(d)
            && !cx.persisted.contains(d)
    };
    // Files, bytes, and the first thing found in the files (a key among them).
    let mut groups: BTreeMap<PathBuf, (u64, u64, Option<Evidence>)> = BTreeMap::new();
    let mut out = Vec::new();
    for (unit, c) in classified {
        let target = if in_tree(&unit.path) && c.verdict != Verdict::Generated {
            // Topmost mergeable proper ancestor.
            let ancestors: Vec<&Path> = unit.path.ancestors().skip(1).collect();
            ancestors
                .into_iter()
                .rev()
                .find(|a| mergeable(a))
                .map(Path::to_path_buf)
        } else {
            None
        };
        match target {
            Some(dir) => {
                let inside = unit
                    .path
                    .strip_prefix(&dir)
                    .unwrap_or(&unit.path)
                    .to_path_buf();
                let g = groups.entry(dir).or_default();
                g.0 += unit.facts.files;
                g.1 += unit.bytes;
                if g.2.is_none() {
                    g.2 = unit.facts.content.map(|e| Evidence {
                        at: if e.at.as_os_str().is_empty() {
                            inside
                        } else {
                            inside.join(&e.at)
                        },
                        ..e
                    });
                }
            }
            None => out.push((unit, c)),
        }
    }
    for (dir, (files, bytes, content)) in groups {
        let facts = Facts {
            kind: Some(EntryKind::Directory),
            files,
            content,
            ..Facts::default()
        };
        let c = cx.classify(&dir, &facts, bytes);
        out.push((
            Unit {
                path: dir,
                facts,
                bytes,
            },
            c,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge;

    fn unit(path: &str, kind: EntryKind, files: u64) -> Unit {
        Unit {
            path: path.into(),
            facts: Facts {
                kind: Some(kind),
                files,
                ..Facts::default()
            },
            bytes: files * 100,
        }
    }

    fn link(path: &str, target: &str) -> Unit {
        Unit {
            path: path.into(),
            facts: Facts {
                kind: Some(EntryKind::Symlink),
                files: 1,
                generated: 1,
                link_target: Some(target.into()),
                ..Facts::default()
            },
            bytes: 10,
        }
    }

    fn run(units: Vec<Unit>) -> Vec<(String, Verdict, Option<String>)> {
        let persisted = PersistedSet::default();
        let cx = Context {
            knowledge: knowledge::builtin(),
            persisted: &persisted,
            rules: &[],
            homes: Vec::new(),
            complete: true,
            declared: Declarations::none(),
        };
        suggest(units, &cx)
            .into_iter()
            .map(|s| {
                (
                    s.path.display().to_string(),
                    s.verdict,
                    s.user
                        .map(|u| format!("{u}:{}", s.relative.unwrap().display())),
                )
            })
            .collect()
    }

    #[test]
    fn etc_files_merge_into_directories_nixos_does_not_generate() {
        use EntryKind::*;
        let got = run(vec![
            unit("/etc/wireguard/wg0.key", File, 1),
            unit("/etc/wireguard/wg0.pub", File, 1),
            unit("/etc/wireguard/peers/a", File, 1),
            link("/etc/ssh/sshd_config", "/etc/static/ssh/sshd_config"),
            unit("/etc/ssh/ssh_host_ed25519_key", File, 1),
            unit("/etc/ssh/extra.conf", File, 1),
            unit(
                "/etc/NetworkManager/system-connections/home.nmconnection",
                File,
                1,
            ),
            unit("/etc/foo.conf", File, 1),
        ]);
        use Verdict::*;
        assert_eq!(
            got,
            vec![
                (
                    "/etc/NetworkManager/system-connections".into(),
                    Persist,
                    None
                ),
                ("/etc/ssh/extra.conf".into(), Persist, None),
                ("/etc/ssh/ssh_host_ed25519_key".into(), Persist, None),
                ("/etc/wireguard".into(), Persist, None),
                ("/etc/foo.conf".into(), Review, None),
                ("/etc/ssh/sshd_config".into(), Generated, None),
            ]
        );
    }

    /// A key among the files of an /etc directory makes the directory they merge into one
    /// to persist, and the reason names the file.
    #[test]
    fn what_merged_files_are_carries_to_their_directory() {
        let mut key = unit("/etc/age/keys.txt", EntryKind::File, 1);
        key.facts.content = Some(Evidence {
            found: classify::Found::Key("an age secret key"),
            at: PathBuf::new(),
        });
        let persisted = PersistedSet::default();
        let cx = Context {
            knowledge: knowledge::builtin(),
            persisted: &persisted,
            rules: &[],
            homes: Vec::new(),
            complete: true,
            declared: Declarations::none(),
        };
        let got = suggest(vec![key, unit("/etc/age/readme", EntryKind::File, 1)], &cx);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].path.as_path(), got[0].verdict, got[0].files),
            (Path::new("/etc/age"), Verdict::Persist, 2)
        );
        assert!(got[0].reason.contains("(keys.txt)"), "{}", got[0].reason);
    }

    #[test]
    fn home_paths_become_user_entries() {
        use EntryKind::*;
        let got = run(vec![
            unit("/home/josh/.config", Directory, 4),
            unit("/home/josh/.cache", Directory, 40),
            unit("/root/.bash_history", File, 1),
        ]);
        assert_eq!(
            got,
            vec![
                (
                    "/home/josh/.config".into(),
                    Verdict::Persist,
                    Some("josh:.config".into())
                ),
                (
                    "/root/.bash_history".into(),
                    Verdict::Persist,
                    Some("root:.bash_history".into())
                ),
                (
                    "/home/josh/.cache".into(),
                    Verdict::Ephemeral,
                    Some("josh:.cache".into())
                ),
            ]
        );
    }
}
