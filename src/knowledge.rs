//! What imperm knows about NixOS state paths: which paths are too broad to suggest, which
//! trees NixOS regenerates, and well-known paths with their service, verdict and pitfalls.
//! The knowledge is data (`data/knowledge.toml`, compiled in), read once.

use std::path::{Component, Path};
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
}

fn mode_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Mode>, D::Error> {
    let raw = String::deserialize(d)?;
    raw.parse().map(Some).map_err(serde::de::Error::custom)
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
    pub suggest: SuggestRules,
    #[serde(rename = "path")]
    pub paths: Vec<KnownPath>,
}

impl Knowledge {
    /// Whether `path` is too broad to be suggested as an entry or a merging parent.
    pub fn too_broad(&self, path: &Path) -> bool {
        self.suggest.too_broad.iter().any(|p| p.matches(path))
    }

    /// Whether `path` lies in a tree NixOS regenerates.
    pub fn in_generated_tree(&self, path: &Path) -> bool {
        self.suggest
            .generated_trees
            .iter()
            .any(|p| p.contains(path))
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
