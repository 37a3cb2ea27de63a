//! Entries as a source wrote them, before validation; and the one validation every source
//! (TOML file, Nix JSON, built-in template) goes through to become persisted entries.

use std::path::{Path, PathBuf};

use super::error::{ConfigError, Location};
use crate::mode::Mode;
use crate::paths::{check_text, normalize_absolute, normalize_relative, quoted, shown};
use crate::persisted::{Entry, Kind};

/// A `users.<name>` block's identity.
#[derive(Debug, Clone)]
pub struct UserBlock {
    pub name: String,
    /// The home directory as written (`home = …`), or `None` for the default.
    pub home: Option<String>,
    pub at: Location,
}

/// A directory or file as written in a source.
#[derive(Debug, Clone)]
pub struct DeclaredEntry {
    pub path: String,
    pub kind: Kind,
    /// The persistent storage path, as written (the attribute name or an entry override).
    pub storage: String,
    pub user: Option<UserBlock>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<String>,
    pub at: Location,
}

/// The home directory of a user when no `home` is given. impermanence defaults to
/// `/home/<name>` for everyone; root's home is `/root` on NixOS, so that is used for root.
pub fn default_home(user: &str) -> String {
    if user == "root" {
        "/root".to_string()
    } else {
        format!("/home/{user}")
    }
}

/// A persistent storage path as written (an attribute name or `persistentStoragePath`),
/// normalised (`/persist/` is `/persist`), or the error naming it at `at`. Every storage a
/// source declares goes through this, whether or not it has entries.
pub fn storage_path(file: &Path, raw: &str, at: &Location) -> Result<PathBuf, ConfigError> {
    normalize_absolute(raw).map_err(|p| {
        ConfigError::new(file, format!("persistent storage path {} {p}", shown(raw))).at(at)
    })
}

/// Validates and resolves declared entries into absolute persisted entries. The first
/// problem found is returned; nothing partial is.
pub fn resolve(file: &Path, declared: Vec<DeclaredEntry>) -> Result<Vec<Entry>, ConfigError> {
    declared.into_iter().map(|d| resolve_one(file, d)).collect()
}

fn resolve_one(file: &Path, d: DeclaredEntry) -> Result<Entry, ConfigError> {
    let fail = |at: &Location, what: String| ConfigError::new(file, what).at(at);
    let storage = normalize_absolute(&d.storage).map_err(|p| {
        fail(
            &d.at,
            format!("persistent storage path {} {p}", shown(&d.storage)),
        )
    })?;
    let (path, user, home) = match &d.user {
        None => {
            let path = normalize_absolute(&d.path)
                .map_err(|p| fail(&d.at, format!("{} {p}", shown(&d.path))))?;
            (path, None, None)
        }
        Some(block) => {
            if !crate::paths::is_user_name(&block.name) {
                return Err(fail(
                    &block.at,
                    format!("{} is not a user name", shown(&block.name)),
                ));
            }
            let home_raw = block
                .home
                .clone()
                .unwrap_or_else(|| default_home(&block.name));
            let home = normalize_absolute(&home_raw)
                .map_err(|p| fail(&block.at, format!("home {} {p}", shown(&home_raw))))?;
            let rel = normalize_relative(&d.path)
                .map_err(|p| fail(&d.at, format!("{} {p}", shown(&d.path))))?;
            let path = home.join(rel);
            // Each half can be short enough and the whole not.
            check_text(&path.to_string_lossy())
                .map_err(|p| fail(&d.at, format!("{} {p}", shown(&path.to_string_lossy()))))?;
            (path, Some(block.name.clone()), Some(home))
        }
    };
    let mode = d
        .mode
        .as_deref()
        .map(|m| m.parse::<Mode>())
        .transpose()
        .map_err(|e| fail(&d.at, format!("mode {e}")))?;
    if path.starts_with(&storage) {
        return Err(fail(
            &d.at,
            format!(
                "{} lies inside its own persistent storage {}",
                quoted(&path),
                quoted(&storage)
            ),
        ));
    }
    Ok(Entry {
        path,
        kind: d.kind,
        storage,
        user,
        home,
        owner: d.owner,
        group: d.group,
        mode,
        origin: d.at.origin(file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(path: &str, user: Option<&str>) -> DeclaredEntry {
        DeclaredEntry {
            path: path.into(),
            kind: Kind::Directory,
            storage: "/persist".into(),
            user: user.map(|name| UserBlock {
                name: name.into(),
                home: None,
                at: Location::key(format!("users.{name}")),
            }),
            owner: None,
            group: None,
            mode: None,
            at: Location::key("directories[0]"),
        }
    }

    #[test]
    fn resolves_system_and_user_entries() {
        let file = Path::new("c.toml");
        let cases: &[(&str, Option<&str>, Result<&str, &str>)] = &[
            ("/var/lib/nixos", None, Ok("/var/lib/nixos")),
            (".ssh", Some("josh"), Ok("/home/josh/.ssh")),
            (".ssh", Some("root"), Ok("/root/.ssh")),
            (
                "var/lib",
                None,
                Err("c.toml: directories[0]: \"var/lib\" is not an absolute path"),
            ),
            (
                "/var/../etc",
                None,
                Err("c.toml: directories[0]: \"/var/../etc\" contains `..`"),
            ),
            (
                "/home/josh/.ssh",
                Some("josh"),
                Err(
                    "c.toml: directories[0]: \"/home/josh/.ssh\" is absolute, but user entries are relative to the home directory",
                ),
            ),
            (
                "../etc",
                Some("josh"),
                Err("c.toml: directories[0]: \"../etc\" contains `..`"),
            ),
            (
                "/persist/x",
                None,
                Err(
                    "c.toml: directories[0]: \"/persist/x\" lies inside its own persistent storage \"/persist\"",
                ),
            ),
        ];
        for (path, user, want) in cases {
            let got = resolve_one(file, declared(path, *user))
                .map(|e| e.path.to_string_lossy().into_owned())
                .map_err(|e| e.to_string());
            assert_eq!(
                got,
                want.map(str::to_string).map_err(str::to_string),
                "{path}"
            );
        }
    }

    #[test]
    fn a_bad_mode_names_the_entry() {
        let mut d = declared("/var/lib/private", None);
        d.mode = Some("rwx".into());
        let err = resolve_one(Path::new("c.toml"), d).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("c.toml: directories[0]: mode \"rwx\" is not a mode")
        );
    }
}
