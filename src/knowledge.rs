//! What imperm knows about NixOS state paths: which paths are too broad to suggest, which
//! trees NixOS regenerates, and well-known paths with their service, verdict and pitfalls.
//! The knowledge is data (`data/knowledge.toml`, compiled in), read once.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::mode::Mode;

/// What should happen to a piece of state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Losing it at a reset loses real state.
    Persist,
    /// A person must decide.
    Review,
    /// Safe to lose: caches, temporary files, things pulled again.
    Ephemeral,
    /// NixOS writes it again at every boot.
    Generated,
}

/// An absolute path pattern; `None` components match any one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern(Vec<Option<String>>);

impl PathPattern {
    /// Parses one pattern; `~` expands to every home, so one string may give two patterns.
    fn expand(raw: &str) -> Vec<PathPattern> {
        let homes: &[&str] = &["/home/*", "/root"];
        let texts: Vec<String> = match raw.strip_prefix('~') {
            Some(rest) => homes.iter().map(|h| format!("{h}{rest}")).collect(),
            None => vec![raw.to_string()],
        };
        texts
            .iter()
            .map(|t| {
                PathPattern(
                    t.split('/')
                        .filter(|c| !c.is_empty())
                        .map(|c| (c != "*").then(|| c.to_string()))
                        .collect(),
                )
            })
            .collect()
    }

    fn depth(&self) -> usize {
        self.0.len()
    }

    /// How specific the pattern is: depth first, then how many names are literal.
    fn specificity(&self) -> (usize, usize) {
        (self.0.len(), self.0.iter().filter(|c| c.is_some()).count())
    }

    /// The name the first `*` matched in `path`, if any.
    fn wildcard_match<'a>(&self, path: &'a Path) -> Option<&'a std::ffi::OsStr> {
        let names = path.components().filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        });
        self.0
            .iter()
            .zip(names)
            .find(|(p, _)| p.is_none())
            .map(|(_, n)| n)
    }

    /// Whether `path`'s first components match the pattern's first `path` components, and
    /// how many there were: `Some(n)` with `n == depth` means `path` matches or lies below.
    fn match_prefix(&self, path: &Path) -> Option<usize> {
        let mut n = 0;
        for component in path.components() {
            let Component::Normal(name) = component else {
                continue;
            };
            match self.0.get(n) {
                None => return Some(n),
                Some(Some(literal)) if name != literal.as_str() => return None,
                Some(_) => n += 1,
            }
        }
        Some(n)
    }

    /// `path` is this pattern exactly.
    pub fn matches(&self, path: &Path) -> bool {
        self.match_prefix(path) == Some(self.depth())
            && path
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count()
                == self.depth()
    }

    /// `path` is this pattern or lies below it.
    pub fn contains(&self, path: &Path) -> bool {
        self.match_prefix(path) == Some(self.depth())
    }

    /// `path` is a proper ancestor of what this pattern names.
    pub fn is_below(&self, path: &Path) -> bool {
        matches!(self.match_prefix(path), Some(n) if n < self.depth()
            && path.components().filter(|c| matches!(c, Component::Normal(_))).count() == n)
    }
}

impl<'de> Deserialize<'de> for PathPatterns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PathPatterns, D::Error> {
        let raw = String::deserialize(d)?;
        if !(raw.starts_with('/') || raw.starts_with("~/") || raw == "~") {
            return Err(serde::de::Error::custom(format!(
                "pattern {raw:?} must start with / or ~"
            )));
        }
        Ok(PathPatterns {
            patterns: PathPattern::expand(&raw),
            text: raw,
        })
    }
}

/// One written pattern and what it expands to.
#[derive(Clone, Debug)]
pub struct PathPatterns {
    pub text: String,
    patterns: Vec<PathPattern>,
}

impl PathPatterns {
    pub fn matches(&self, path: &Path) -> bool {
        self.patterns.iter().any(|p| p.matches(path))
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.patterns.iter().any(|p| p.contains(path))
    }

    pub fn is_below(&self, path: &Path) -> bool {
        self.patterns.iter().any(|p| p.is_below(path))
    }

    /// For each expanded pattern that lies strictly below `path`: the name it has one level
    /// below `path` (`None` for `*`).
    pub fn next_below(&self, path: &Path) -> Vec<Option<&str>> {
        let depth = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count();
        self.patterns
            .iter()
            .filter(|p| p.is_below(path))
            .map(|p| p.0[depth].as_deref())
            .collect()
    }

    /// The most specific of the expanded patterns that contains `path`.
    fn best_containing(&self, path: &Path) -> Option<&PathPattern> {
        self.patterns
            .iter()
            .filter(|p| p.contains(path))
            .max_by_key(|p| p.specificity())
    }

    /// Whether the pattern has no wildcard (names one place, or one place per home).
    pub fn is_literal(&self) -> bool {
        !self.text.split('/').any(|c| c == "*")
    }
}

/// A well-known state path.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownPath {
    pub path: PathPatterns,
    pub service: String,
    pub verdict: Verdict,
    pub reason: String,
    /// The mode the directory must have when persisted.
    #[serde(default, deserialize_with = "mode_opt")]
    pub mode: Option<Mode>,
    /// Persisting it, or a directory from `service_dir` down to it, is a mistake `lint`
    /// reports.
    #[serde(default)]
    pub never_persist: bool,
    /// The service's own directory that holds `path`.
    pub service_dir: Option<PathPatterns>,
    /// A file that must be in place before stage 2 (preservation's `inInitrd`).
    #[serde(default)]
    pub in_initrd: bool,
}

/// A knowledge entry matched to a path.
#[derive(Clone, Debug)]
pub struct Match<'k> {
    pub known: &'k KnownPath,
    /// The service, with `*` replaced by the name it matched.
    pub service: String,
}

impl Match<'_> {
    /// The mode the knowledge asks `path` to be persisted with: only for the place the
    /// entry names itself. What lies below keeps its own (`/var/lib/private` must be 0700;
    /// a service's directory in it is whatever the service made it).
    pub fn mode_at(&self, path: &Path) -> Option<Mode> {
        self.known.mode.filter(|_| self.known.path.matches(path))
    }
}

fn mode_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Mode>, D::Error> {
    let raw = String::deserialize(d)?;
    raw.parse().map(Some).map_err(serde::de::Error::custom)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRules {
    /// Host paths never walked.
    pub never_walk: Vec<std::path::PathBuf>,
    /// Host paths usually on a filesystem of their own: walked when on the root's mount,
    /// taken as never persisted by commands that do not walk.
    pub usually_separate: Vec<std::path::PathBuf>,
    /// A symlink into one of these was made by NixOS.
    pub generated_link_targets: Vec<std::path::PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuggestRules {
    pub too_broad: Vec<PathPatterns>,
    pub generated_trees: Vec<PathPatterns>,
}

/// All compiled-in knowledge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knowledge {
    pub scan: ScanRules,
    pub suggest: SuggestRules,
    #[serde(rename = "path")]
    pub paths: Vec<KnownPath>,
}

impl Knowledge {
    /// Whether `path` is too broad to be suggested as an entry or a merging parent.
    pub fn too_broad(&self, path: &Path) -> bool {
        self.suggest.too_broad.iter().any(|p| p.matches(path))
    }

    /// The tree of `[scan] never_walk` or `usually_separate` that holds `path`, if any:
    /// another filesystem (as far as a command that does not walk can tell), the kernel's,
    /// or one made anew at every boot, which no bind mount persists.
    pub fn never_walked(&self, path: &Path) -> Option<&Path> {
        self.scan
            .never_walk
            .iter()
            .chain(&self.scan.usually_separate)
            .map(PathBuf::as_path)
            .find(|t| path.starts_with(t))
    }

    /// Whether `path` lies in a tree NixOS regenerates.
    pub fn in_generated_tree(&self, path: &Path) -> bool {
        self.suggest
            .generated_trees
            .iter()
            .any(|p| p.contains(path))
    }

    /// Whether some known path (or pattern) lies strictly below `path`: then `path` is not
    /// one piece of state but holds several that are decided apart.
    pub fn has_known_below(&self, path: &Path) -> bool {
        self.paths.iter().any(|k| k.path.is_below(path))
    }

    /// Whether `dir` must be decided child by child because a known path of another verdict
    /// lies below it in one of `children` (`/var/lib/containers` holds ephemeral overlay
    /// storage; `~/.local/share` only when it holds a `containers` directory).
    pub fn differs_below<'n>(
        &self,
        dir: &Path,
        mut children: impl Iterator<Item = &'n OsStr>,
    ) -> bool {
        let own = self.lookup(dir).map(|m| m.known.verdict);
        let mut wanted: Vec<Option<&str>> = Vec::new();
        for k in self.paths.iter().filter(|k| Some(k.verdict) != own) {
            wanted.extend(k.path.next_below(dir));
        }
        if wanted.is_empty() {
            return false;
        }
        children.any(|name| {
            wanted
                .iter()
                .any(|w| w.is_none_or(|w| w.as_bytes() == name.as_encoded_bytes()))
        })
    }

    /// The entry that decides `path`: the deepest pattern holding it, a literal name
    /// winning over `*` at equal depth.
    pub fn lookup(&self, path: &Path) -> Option<Match<'_>> {
        let (known, pattern) = self
            .paths
            .iter()
            .filter_map(|k| k.path.best_containing(path).map(|p| (k, p)))
            .max_by_key(|(_, p)| p.specificity())?;
        let service = match pattern.wildcard_match(path) {
            Some(name) if known.service.contains('*') => known
                .service
                .replace('*', &crate::paths::escape(Path::new(name))),
            _ => known.service.clone(),
        };
        Some(Match { known, service })
    }

    /// Whether a symlink to `target` was made by NixOS activation.
    pub fn is_generated_link(&self, target: &Path) -> bool {
        self.scan
            .generated_link_targets
            .iter()
            .any(|t| target.starts_with(t))
    }
}

const KNOWLEDGE: &str = include_str!("../data/knowledge.toml");

/// The compiled-in knowledge. Its parse is covered by a test, so failing here is a build
/// defect, not a runtime condition.
pub fn builtin() -> &'static Knowledge {
    static CELL: OnceLock<Knowledge> = OnceLock::new();
    CELL.get_or_init(|| toml::from_str(KNOWLEDGE).expect("data/knowledge.toml is valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_knowledge_parses() {
        let k: Knowledge = toml::from_str(KNOWLEDGE).unwrap();
        assert!(k.paths.iter().any(|p| p.mode.is_some()));
        assert!(k.paths.iter().any(|p| p.never_persist));
    }

    #[test]
    fn patterns_match_exactly_contain_and_sit_below() {
        let p = PathPattern::expand("~/.local/share/containers/storage/overlay");
        assert_eq!(p.len(), 2);
        let any = |f: &dyn Fn(&PathPattern) -> bool| p.iter().any(f);
        let at = Path::new("/home/josh/.local/share/containers/storage/overlay");
        assert!(any(&|x| x.matches(at)));
        assert!(any(&|x| x.contains(&at.join("l/abc"))));
        assert!(!any(&|x| x.matches(&at.join("l"))));
        assert!(any(
            &|x| x.is_below(Path::new("/home/josh/.local/share/containers"))
        ));
        assert!(any(&|x| x.is_below(Path::new("/root/.local"))));
        assert!(!any(&|x| x.is_below(at)));
        assert!(!any(&|x| x.is_below(Path::new("/home/josh/.config"))));
        assert!(!any(&|x| x.contains(Path::new(
            "/home/josh/.local/share/containers/storage/overlay2"
        ))));
    }

    #[test]
    fn lookup_takes_the_deepest_pattern_and_prefers_literal_names() {
        let k = builtin();
        type Case = (&'static str, Option<(&'static str, Verdict, &'static str)>);
        let cases: &[Case] = &[
            (
                "/var/lib/forgejo",
                Some(("/var/lib/forgejo", Verdict::Persist, "Forgejo")),
            ),
            (
                "/var/lib/forgejo/data/x",
                Some(("/var/lib/forgejo", Verdict::Persist, "Forgejo")),
            ),
            (
                "/var/lib/unknownd",
                Some(("/var/lib/*", Verdict::Persist, "unknownd")),
            ),
            (
                "/var/lib/unknownd/db",
                Some(("/var/lib/*", Verdict::Persist, "unknownd")),
            ),
            (
                "/var/cache/nginx",
                Some(("/var/cache", Verdict::Ephemeral, "cache")),
            ),
            (
                "/var/lib/containers/storage/overlay/l/abc",
                Some((
                    "/var/lib/containers/storage/overlay",
                    Verdict::Ephemeral,
                    "podman",
                )),
            ),
            (
                "/var/lib/containers/storage/volumes",
                Some((
                    "/var/lib/containers/storage/volumes",
                    Verdict::Persist,
                    "podman",
                )),
            ),
            (
                "/var/lib/containers/storage/libpod",
                Some(("/var/lib/containers", Verdict::Persist, "podman")),
            ),
            (
                "/etc/someservice",
                Some(("/etc/*", Verdict::Review, "someservice")),
            ),
            (
                "/etc/wireguard",
                Some(("/etc/wireguard", Verdict::Persist, "WireGuard")),
            ),
            (
                "/etc/nix/id_rsa",
                Some(("/etc/nix/*", Verdict::Persist, "Nix")),
            ),
            (
                "/home/josh/Documents/cv.odt",
                Some(("~/Documents", Verdict::Persist, "user")),
            ),
            (
                "/etc/machine-id",
                Some(("/etc/machine-id", Verdict::Persist, "systemd")),
            ),
            (
                "/home/josh/.config/foo",
                Some(("~/.config", Verdict::Persist, "user")),
            ),
            (
                "/root/.cache",
                Some(("~/.cache", Verdict::Ephemeral, "user")),
            ),
            (
                "/home/josh/projects",
                Some(("~/*", Verdict::Review, "user")),
            ),
            (
                "/bao-keys",
                Some(("/bao-keys", Verdict::Persist, "OpenBao")),
            ),
            ("/weird", Some(("/*", Verdict::Review, "weird"))),
            ("/", None),
        ];
        for (path, want) in cases {
            let got = k
                .lookup(Path::new(path))
                .map(|m| (m.known.path.text.as_str(), m.known.verdict, m.service));
            let want = want.map(|(p, v, s)| (p, v, s.to_string()));
            assert_eq!(got, want, "{path}");
        }
    }

    #[test]
    fn the_knowledge_covers_every_path_the_seed_names() {
        let k = builtin();
        let literal: Vec<&str> = k
            .paths
            .iter()
            .filter(|p| p.path.is_literal())
            .map(|p| p.path.text.as_str())
            .collect();
        assert!(literal.len() >= 60, "{} literal entries", literal.len());
        for seed_path in [
            "/var/lib/nixos",
            "/var/lib/systemd/coredump",
            "/var/log",
            "/var/lib/tailscale",
            "/etc/NetworkManager/system-connections",
            "/var/lib/acme",
            "/etc/machine-id",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssh/ssh_host_ed25519_key.pub",
            "/etc/ssh/ssh_host_rsa_key",
            "/etc/ssh/ssh_host_rsa_key.pub",
            "/var/lib/systemd",
            "/var/lib/flatpak",
            "/var/lib/forgejo",
            "/var/lib/zitadel",
            "/var/lib/openbao",
            "/bao-keys",
            "/var/lib/trilium",
            "/var/lib/opengist",
            "/var/lib/open-webui",
            "/var/lib/n8n",
            "/var/lib/nixarr",
            "/var/lib/containers",
            "/var/lib/containers/storage/volumes",
            "/var/lib/containers/storage/overlay",
            "/var/lib/vaultwarden",
            "/var/lib/postgresql",
            "/var/lib/fail2ban",
            "/var/lib/headscale",
            "/var/lib/AdGuardHome",
            "/var/lib/dnsmasq",
            "/boot/keyfile_nvme0n1p1",
            "/var/lib/nixos-containers",
            "/var/lib/bluetooth",
            "/var/lib/iwd",
            "/var/lib/private",
            "~/.ssh",
            "~/.gnupg",
            "~/.config",
            "~/.local/share",
        ] {
            assert!(literal.contains(&seed_path), "{seed_path} is not known");
        }
    }

    #[test]
    fn too_broad_paths() {
        let k = builtin();
        for p in [
            "/",
            "/var",
            "/var/lib",
            "/etc",
            "/home/josh",
            "/root",
            "/home/josh/.local",
            "/srv",
            "/opt",
        ] {
            assert!(k.too_broad(Path::new(p)), "{p}");
        }
        for p in [
            "/var/lib/forgejo",
            "/home/josh/.config",
            "/home/josh/.local/share",
            "/var/log",
        ] {
            assert!(!k.too_broad(Path::new(p)), "{p}");
        }
    }
}
