//! The classifier: for one piece of state (a unit a person would persist or not), its
//! verdict, the reason, and the service it belongs to. A pure function of the path, a few
//! facts about what is there, the user's own rules and the compiled-in knowledge.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::knowledge::{Knowledge, PathPatterns, Verdict};

/// What a unit is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Directory,
    File,
    Symlink,
    Other,
}

/// What the scan saw of a unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub kind: Option<EntryKind>,
    /// Non-directory entries in it (1 for a file).
    pub files: u64,
    /// How many of those are links NixOS made.
    pub generated: u64,
    /// Where a symlink points.
    pub link_target: Option<PathBuf>,
    /// Listed in `/etc/.clean`: a file NixOS copied into /etc.
    pub nixos_copied: bool,
    /// What its files say it is (a key, a git repository, a database), where the walk
    /// looked (see [`content_decides`]).
    pub content: Option<Evidence>,
}

/// What a unit's files showed it to be (src/discover/content.rs reads them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub found: Found,
    /// Where, relative to the unit; empty for the unit itself.
    pub at: PathBuf,
}

/// A kind of state known by what is on the disk, each with how it was recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Key material: a key file's name, a private key's header, a LUKS header.
    Key(&'static str),
    /// A git repository or work tree.
    Git(&'static str),
    /// A database file, by its header.
    Database(&'static str),
}

impl Found {
    /// How it was recognised (`an OpenSSH private key`), as `source` names it.
    pub fn what(self) -> &'static str {
        match self {
            Found::Key(w) | Found::Git(w) | Found::Database(w) => w,
        }
    }

    /// Why it must be persisted.
    fn why(self) -> &'static str {
        match self {
            Found::Key(_) => {
                "key material cannot be made again, and what it unlocks or signs is lost with it"
            }
            Found::Git(_) => "commits not pushed and work not committed are lost with it",
            Found::Database(_) => "an application's data",
        }
    }
}

/// Whether what a unit's files are may decide its verdict: only where nothing surer does,
/// that is where the knowledge would leave it to review (or knows nothing). The knowledge's
/// other verdicts are deliberate: `~/.cache` holds git checkouts and container overlay
/// storage holds images' keys, and neither is state. The walk reads files only for these
/// units.
pub fn content_decides(path: &Path, knowledge: &Knowledge) -> bool {
    knowledge
        .lookup(path)
        .is_none_or(|m| m.known.verdict == Verdict::Review)
}

/// A place inside a unit, for a reason: escaped, and cut to its end (the name that says
/// what it is) when long.
fn place(at: &Path) -> String {
    const MAX: usize = 120;
    let text = crate::paths::escape(at);
    let chars = text.chars().count();
    if chars <= MAX {
        return text;
    }
    let tail: String = text.chars().skip(chars - MAX).collect();
    format!("…{tail}")
}

/// A rule from the configuration: `[[check.rule]]`.
#[derive(Clone, Debug)]
pub struct UserRule {
    pub path: PathPatterns,
    pub verdict: Verdict,
    pub reason: String,
}

/// Where a verdict came from, as every output names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The user's `[[check.rule]]`.
    Rule,
    /// What NixOS itself makes: links into the store, files it copies into /etc, empty
    /// directories that tmpfiles and units recreate.
    Nixos,
    /// A systemd unit's setting (`forgejo.service`, `StateDirectory`).
    Unit { unit: String, setting: String },
    /// A tmpfiles.d line (`/etc/tmpfiles.d/x.conf:3`).
    Tmpfiles { at: String },
    /// The compiled-in knowledge (`data/knowledge.toml`).
    Knowledge,
    /// What is in the files themselves (a key, a git repository, a database).
    Content { what: String },
    /// Nothing: the default verdict.
    Unknown,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Rule => f.write_str("rule"),
            Source::Nixos => f.write_str("nixos"),
            Source::Unit { unit, setting } => write!(f, "unit {unit}: {setting}"),
            Source::Tmpfiles { at } => write!(f, "tmpfiles: {at}"),
            Source::Knowledge => f.write_str("knowledge"),
            Source::Content { what } => write!(f, "content: {what}"),
            Source::Unknown => f.write_str("unknown"),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The classifier's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub verdict: Verdict,
    pub reason: String,
    pub source: Source,
    pub service: Option<String>,
    /// A file that must be in place before stage 2.
    pub in_initrd: bool,
    /// The mode the directory must have when persisted.
    pub mode: Option<crate::mode::Mode>,
}

impl Classification {
    fn new(verdict: Verdict, source: Source, reason: impl Into<String>) -> Classification {
        Classification {
            verdict,
            reason: reason.into(),
            source,
            service: None,
            in_initrd: false,
            mode: None,
        }
    }
}

/// What the host's own declarations say about a path (a systemd unit's directory, a
/// tmpfiles.d line), found by `discover` from the tree and the scan's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declaration {
    /// The verdict it gives; `None` when it only adds to the reason (tmpfiles.d makes the
    /// path at boot, but it holds data written since).
    pub verdict: Option<Verdict>,
    pub reason: String,
    pub source: Source,
    pub service: Option<String>,
    pub mode: Option<crate::mode::Mode>,
    /// The path the declaration names (the path itself or an ancestor): a known path
    /// deeper than it is more precise and wins.
    pub at: PathBuf,
}

/// Decides `path` (as seen from the host's `/`). In order: the user's rules; what NixOS
/// itself makes (links into the store, files listed in /etc/.clean) and empty directories;
/// what its files are (key material, git repositories, databases), where the knowledge
/// would leave it to review; the knowledge's deepest matching entry; otherwise `review`.
pub fn classify(
    path: &Path,
    facts: &Facts,
    rules: &[UserRule],
    knowledge: &Knowledge,
) -> Classification {
    classify_declared(path, facts, rules, knowledge, None)
}

/// [`classify`] with what the host declares about `path`: after the user's rules, a
/// declaration with a verdict decides, unless the knowledge names a path below the one
/// declared (a unit's `StateDirectory=containers` does not make podman's overlay storage
/// state). One without a verdict adds its reason to the verdict found otherwise.
pub fn classify_declared(
    path: &Path,
    facts: &Facts,
    rules: &[UserRule],
    knowledge: &Knowledge,
    declared: Option<&Declaration>,
) -> Classification {
    if let Some(rule) = rules
        .iter()
        .filter(|r| r.path.contains(path))
        .max_by_key(|r| r.path.text.len())
    {
        return Classification::new(
            rule.verdict,
            Source::Rule,
            format!("your rule for {}: {}", rule.path.text, rule.reason),
        );
    }
    if let Some(d) = declared {
        let deeper = || {
            knowledge
                .lookup(path)
                .is_some_and(|m| !m.known.path.contains(&d.at))
        };
        if let Some(verdict) = d.verdict.filter(|_| !deeper()) {
            let mut c = Classification::new(verdict, d.source.clone(), d.reason.clone());
            c.service = d.service.clone();
            c.mode = d.mode;
            return c;
        }
    }
    let mut c = classify_known(path, facts, knowledge);
    if let Some(d) = declared.filter(|d| d.verdict.is_none()) {
        c.reason = format!("{}; {}", c.reason, d.reason);
    }
    c
}

/// What NixOS makes, then the knowledge.
fn classify_known(path: &Path, facts: &Facts, knowledge: &Knowledge) -> Classification {
    if let Some(target) = &facts.link_target {
        let resolved = resolve_link(path, target);
        if knowledge.is_generated_link(&resolved) {
            return Classification::new(
                Verdict::Generated,
                Source::Nixos,
                format!(
                    "a link to {} made by NixOS or systemd",
                    crate::paths::escape(target)
                ),
            );
        }
    }
    if facts.nixos_copied {
        return Classification::new(
            Verdict::Generated,
            Source::Nixos,
            "copied into /etc by NixOS activation (listed in /etc/.clean)",
        );
    }
    if facts.kind == Some(EntryKind::Directory) && facts.files > 0 && facts.generated == facts.files
    {
        return Classification::new(
            Verdict::Generated,
            Source::Nixos,
            "holds only links made by NixOS",
        );
    }
    if facts.kind == Some(EntryKind::Directory) && facts.files == 0 {
        // Nothing in it to lose; StateDirectory= and systemd-tmpfiles make such anew.
        return Classification::new(
            Verdict::Generated,
            Source::Nixos,
            "an empty directory: systemd-tmpfiles and service units recreate these",
        );
    }
    if let Some(e) = &facts.content {
        if content_decides(path, knowledge) {
            let what = e.found.what();
            let reason = if e.at.as_os_str().is_empty() {
                format!("{what}: {}", e.found.why())
            } else {
                format!("holds {what} ({}): {}", place(&e.at), e.found.why())
            };
            let known = knowledge.lookup(path);
            return Classification {
                verdict: Verdict::Persist,
                reason,
                source: Source::Content { what: what.into() },
                service: known.as_ref().map(|m| m.service.clone()),
                in_initrd: known.as_ref().is_some_and(|m| m.known.in_initrd),
                mode: known.and_then(|m| m.mode_at(path)),
            };
        }
    }
    match knowledge.lookup(path) {
        Some(m) => Classification {
            mode: m.mode_at(path),
            verdict: m.known.verdict,
            reason: m.known.reason.clone(),
            source: Source::Knowledge,
            service: Some(m.service),
            in_initrd: m.known.in_initrd,
        },
        None => Classification::new(
            Verdict::Review,
            Source::Unknown,
            "nothing is known about this path",
        ),
    }
}

/// A link's target as an absolute path: relative targets are taken from the link's
/// directory (lexically; nothing is followed).
pub fn resolve_link(link: &Path, target: &Path) -> PathBuf {
    if target.is_absolute() {
        return target.to_path_buf();
    }
    let mut out = link.parent().unwrap_or(Path::new("/")).to_path_buf();
    for component in target.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge;

    fn dir(files: u64) -> Facts {
        Facts {
            kind: Some(EntryKind::Directory),
            files,
            ..Facts::default()
        }
    }

    fn file() -> Facts {
        Facts {
            kind: Some(EntryKind::File),
            files: 1,
            ..Facts::default()
        }
    }

    fn link(target: &str) -> Facts {
        Facts {
            kind: Some(EntryKind::Symlink),
            files: 1,
            link_target: Some(PathBuf::from(target)),
            ..Facts::default()
        }
    }

    /// Every verdict says where it came from.
    #[test]
    fn verdicts_name_their_source() {
        let k = knowledge::builtin();
        let rule = UserRule {
            path: toml::Value::String("/srv/*".into()).try_into().unwrap(),
            verdict: Verdict::Persist,
            reason: "shares".into(),
        };
        let cases = [
            ("/srv/media", dir(3), "rule"),
            (
                "/etc/ssh/sshd_config",
                link("/etc/static/ssh/sshd_config"),
                "nixos",
            ),
            ("/var/lib/forgejo", dir(2), "knowledge"),
            // Anything else falls to the knowledge's catch-all (`/*`: review).
            ("/weird-top-level/thing", dir(2), "knowledge"),
        ];
        for (path, facts, want) in cases {
            let c = classify(Path::new(path), &facts, std::slice::from_ref(&rule), k);
            assert_eq!(c.source.to_string(), want, "{path}");
        }
        let unit = Source::Unit {
            unit: "forgejo.service".into(),
            setting: "StateDirectory".into(),
        };
        assert_eq!(unit.to_string(), "unit forgejo.service: StateDirectory");
        assert_eq!(
            serde_json::to_string(&Source::Tmpfiles {
                at: "/etc/tmpfiles.d/x.conf:3".into()
            })
            .unwrap(),
            "\"tmpfiles: /etc/tmpfiles.d/x.conf:3\""
        );
    }

    /// A mode the knowledge asks for is the named place's, not what lies below it.
    #[test]
    fn a_known_mode_is_for_the_named_path_only() {
        let k = knowledge::builtin();
        let mode = |path: &str| classify(Path::new(path), &dir(2), &[], k).mode;
        assert_eq!(mode("/var/lib/private"), Some("0700".parse().unwrap()));
        assert_eq!(mode("/var/lib/private/AdGuardHome"), None);
        assert_eq!(mode("/home/alice/.gnupg"), Some("0700".parse().unwrap()));
        assert_eq!(mode("/home/alice/.gnupg/private-keys-v1.d"), None);
    }

    #[test]
    fn table_of_paths_and_verdicts() {
        use Verdict::*;
        let mut all_links = dir(3);
        all_links.generated = 3;
        let copied = Facts {
            nixos_copied: true,
            ..file()
        };
        let cases: Vec<(&str, Facts, Verdict, Option<&str>)> = vec![
            ("/var/lib/forgejo", dir(10), Persist, Some("Forgejo")),
            ("/var/lib/postgresql", dir(100), Persist, Some("PostgreSQL")),
            ("/var/lib/newservice", dir(3), Persist, Some("newservice")),
            ("/var/lib/newservice", dir(0), Generated, None),
            ("/var/lib/tailscale", dir(0), Generated, None),
            ("/var/cache/nginx", dir(5), Ephemeral, Some("cache")),
            ("/var/tmp/x", file(), Ephemeral, Some("tmp")),
            (
                "/var/lib/containers/storage/overlay",
                dir(9),
                Ephemeral,
                Some("podman"),
            ),
            (
                "/var/lib/containers/storage/volumes",
                dir(2),
                Persist,
                Some("podman"),
            ),
            ("/etc/machine-id", file(), Persist, Some("systemd")),
            ("/etc/wireguard", dir(2), Persist, Some("WireGuard")),
            ("/etc/someservice", dir(2), Review, Some("someservice")),
            ("/etc/foo.conf", file(), Review, Some("foo.conf")),
            ("/etc/passwd", file(), Generated, Some("NixOS activation")),
            ("/etc/sudoers", copied, Generated, None),
            (
                "/etc/ssh/sshd_config",
                link("/etc/static/ssh/sshd_config"),
                Generated,
                None,
            ),
            (
                "/etc/localtime",
                link("/nix/store/abc-tzdata/share/zoneinfo/UTC"),
                Generated,
                None,
            ),
            ("/etc/pam.d", all_links, Generated, None),
            (
                "/var/lib/AdGuardHome",
                link("private/AdGuardHome"),
                Generated,
                None,
            ),
            (
                "/etc/custom-link",
                link("/srv/elsewhere"),
                Review,
                Some("custom-link"),
            ),
            ("/home/josh/.config", dir(40), Persist, Some("user")),
            ("/home/josh/.cache", dir(400), Ephemeral, Some("user")),
            ("/home/josh/projects", dir(40), Review, Some("user")),
            ("/root/.bash_history", file(), Persist, Some("user")),
            ("/bao-keys", dir(3), Persist, Some("OpenBao")),
            ("/srv/media", dir(3), Persist, Some("media")),
        ];
        for (path, facts, verdict, service) in cases {
            let got = classify(Path::new(path), &facts, &[], knowledge::builtin());
            assert_eq!(got.verdict, verdict, "{path}: {}", got.reason);
            if let Some(service) = service {
                assert_eq!(got.service.as_deref(), Some(service), "{path}");
            }
        }
    }

    /// What the files are decides only where the knowledge would leave the path to review:
    /// a git checkout in `~/.cache` stays a cache, an image's key in overlay storage stays
    /// ephemeral; a user's rule and what NixOS makes still come first.
    #[test]
    fn content_decides_only_what_would_be_reviewed() {
        let k = knowledge::builtin();
        let with = |mut facts: Facts, found: Found, at: &str| {
            facts.content = Some(Evidence {
                found,
                at: PathBuf::from(at),
            });
            facts
        };
        let git = Found::Git("a git repository");
        let key = Found::Key("a key file, by its name");
        let cases: Vec<(&str, Facts, Verdict, &str)> = vec![
            (
                "/home/josh/projects",
                with(dir(3), git, "imperm/.git"),
                Verdict::Persist,
                "content: a git repository",
            ),
            (
                "/opt/certs",
                with(dir(1), key, "host.key"),
                Verdict::Persist,
                "content: a key file, by its name",
            ),
            (
                "/data_keyfile.bin",
                with(file(), key, ""),
                Verdict::Persist,
                "content: a key file, by its name",
            ),
            // What the knowledge persists already keeps its own reason.
            (
                "/crypto_keyfile.bin",
                with(file(), key, ""),
                Verdict::Persist,
                "knowledge",
            ),
            (
                "/home/josh/.cache",
                with(dir(9), git, "nix/gitv3/x/.git"),
                Verdict::Ephemeral,
                "knowledge",
            ),
            (
                "/var/lib/containers/storage/overlay",
                with(dir(9), key, "l/x/etc/ssl/private/snakeoil.key"),
                Verdict::Ephemeral,
                "knowledge",
            ),
            (
                "/var/lib/forgejo",
                with(dir(2), key, "ssh/key"),
                Verdict::Persist,
                "knowledge",
            ),
            ("/home/josh/scratch", dir(2), Verdict::Review, "knowledge"),
            (
                "/srv/empty",
                with(dir(0), key, "x.key"),
                Verdict::Generated,
                "nixos",
            ),
        ];
        for (path, facts, verdict, source) in cases {
            let c = classify(Path::new(path), &facts, &[], k);
            assert_eq!(
                (c.verdict, c.source.to_string()),
                (verdict, source.to_string()),
                "{path}: {}",
                c.reason
            );
        }
        let c = classify(
            Path::new("/home/josh/projects"),
            &with(dir(3), git, "imperm/.git"),
            &[],
            k,
        );
        assert_eq!(c.service.as_deref(), Some("user"));
        assert_eq!(
            c.reason,
            "holds a git repository (imperm/.git): commits not pushed and work not committed are lost with it"
        );
        let rule = UserRule {
            path: toml::Value::String("/srv/*".into()).try_into().unwrap(),
            verdict: Verdict::Ephemeral,
            reason: "scratch".into(),
        };
        let c = classify(
            Path::new("/srv/certs"),
            &with(dir(1), key, "host.key"),
            &[rule],
            k,
        );
        assert_eq!(c.verdict, Verdict::Ephemeral);
        // A place deep down is named by its end.
        let deep = "d/".repeat(500) + "luks.key";
        let c = classify(Path::new("/opt/deep"), &with(dir(1), key, &deep), &[], k);
        assert!(c.reason.len() < 300, "{}", c.reason);
        assert!(
            c.reason.starts_with("holds a key file, by its name (…d/d/")
                && c.reason.contains("d/d/luks.key): "),
            "{}",
            c.reason
        );
    }

    #[test]
    fn user_rules_come_first_and_the_deepest_wins() {
        let rules: Vec<UserRule> = [
            ("/var/lib/*", Verdict::Review),
            ("/var/lib/scratch", Verdict::Ephemeral),
        ]
        .into_iter()
        .map(|(p, v)| UserRule {
            path: toml::from_str::<std::collections::HashMap<String, PathPatterns>>(&format!(
                "p = {p:?}"
            ))
            .unwrap()
            .remove("p")
            .unwrap(),
            verdict: v,
            reason: "mine".into(),
        })
        .collect();
        let k = knowledge::builtin();
        let c = classify(Path::new("/var/lib/scratch/x"), &dir(1), &rules, k);
        assert_eq!(c.verdict, Verdict::Ephemeral);
        assert_eq!(c.reason, "your rule for /var/lib/scratch: mine");
        assert_eq!(
            classify(Path::new("/var/lib/forgejo"), &dir(1), &rules, k).verdict,
            Verdict::Review
        );
    }

    #[test]
    fn machine_id_must_be_there_before_stage_two() {
        let c = classify(
            Path::new("/etc/machine-id"),
            &file(),
            &[],
            knowledge::builtin(),
        );
        assert!(c.in_initrd);
    }

    #[test]
    fn relative_links_resolve_from_their_directory() {
        assert_eq!(
            resolve_link(
                Path::new("/var/lib/AdGuardHome"),
                Path::new("private/AdGuardHome")
            ),
            PathBuf::from("/var/lib/private/AdGuardHome")
        );
        assert_eq!(
            resolve_link(Path::new("/etc/x"), Path::new("../run/y")),
            PathBuf::from("/run/y")
        );
    }
}
