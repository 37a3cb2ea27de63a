//! Configuration: loading, validating and merging every source imperm reads.
//!
//! - the TOML file (`--config`, default `/etc/imperm/config.toml` under `--root`) gives
//!   `[filesystem]`, `[persistence]`, `[retention]` and `[check]`;
//! - `--persistence-json` (the output of `nix eval --json …environment.persistence`) gives
//!   the persisted set and then takes the place of the file's `[persistence]`;
//! - with neither declaring persistence, the live mount table's bind mounts out of
//!   `/persist` are the persisted set;
//! - with none of these, the built-in server template (the seed's minimal server set) is.
//!
//! Loading is all or nothing: the first problem is returned as one [`ConfigError`] and no
//! partial configuration exists.

mod declared;
mod error;
mod file;
mod nix_json;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{ConfigError, Location, one_line};
pub use file::{FileConfig, subvolume_name};

use crate::mountinfo::{self, MountTable};
use crate::paths::under_root;
use crate::persisted::{Entry, Kind, PersistedSet};
use crate::retention::Policy;

/// The configuration file read when `--config` is not given (under `--root`).
pub const DEFAULT_CONFIG: &str = "/etc/imperm/config.toml";
/// The storage path whose bind mounts are read when nothing declares persistence.
pub const DEFAULT_STORAGE: &str = "/persist";
/// The seed's "Minimal Server Persistence", in the configuration file's own format.
pub const SERVER_TEMPLATE: &str = include_str!("../../data/server-template.toml");
const TEMPLATE_LABEL: &str = "built-in server template";

/// The filesystem the root lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Bcachefs,
    Btrfs,
    Tmpfs,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Bcachefs => "bcachefs",
            FsType::Btrfs => "btrfs",
            FsType::Tmpfs => "tmpfs",
        }
    }
}

/// `[filesystem]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FilesystemConfig {
    #[serde(rename = "type")]
    pub fs_type: FsType,
    pub device: Option<String>,
    /// Relative to the filesystem's top level.
    #[serde(serialize_with = "crate::paths::json")]
    pub root_subvolume: PathBuf,
    #[serde(serialize_with = "crate::paths::json")]
    pub snapshot_dir: PathBuf,
    #[serde(serialize_with = "crate::paths::json_opt")]
    pub blank_snapshot: Option<PathBuf>,
}

/// The root subvolume when none is named (the seed's layout).
pub const DEFAULT_ROOT_SUBVOLUME: &str = "@root";
/// The snapshot directory when none is named.
pub const DEFAULT_SNAPSHOT_DIR: &str = "@snapshots";

/// The snapshot directory must not be inside the root subvolume, which every reset
/// replaces (and would take the snapshots with it).
pub fn check_layout(root_subvolume: &Path, snapshot_dir: &Path) -> Result<(), String> {
    if snapshot_dir.starts_with(root_subvolume) {
        return Err(format!(
            "{:?} is inside the root subvolume {:?}, which every reset replaces",
            snapshot_dir, root_subvolume
        ));
    }
    Ok(())
}

/// `[check]`.
#[derive(Clone, Debug, Default)]
pub struct CheckConfig {
    /// Globs over absolute paths that the user accepted as ephemeral.
    pub ignore: Vec<String>,
    /// `[[check.rule]]`: the user's own classification, before the built-in knowledge.
    pub rules: Vec<crate::classify::UserRule>,
}

impl CheckConfig {
    /// The ignore globs, compiled (they were validated when loaded).
    pub fn ignore_set(&self) -> Option<globset::GlobSet> {
        if self.ignore.is_empty() {
            return None;
        }
        let mut builder = globset::GlobSetBuilder::new();
        for glob in &self.ignore {
            if let Ok(g) = globset::GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
            {
                builder.add(g);
            }
        }
        builder.build().ok()
    }
}

/// Where the persisted set came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "file", rename_all = "kebab-case")]
pub enum PersistenceSource {
    ConfigFile(#[serde(serialize_with = "crate::paths::json")] PathBuf),
    NixJson(#[serde(serialize_with = "crate::paths::json")] PathBuf),
    MountTable(#[serde(serialize_with = "crate::paths::json")] PathBuf),
    Template,
}

impl std::fmt::Display for PersistenceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PersistenceSource::ConfigFile(p) => write!(f, "{}", p.display()),
            PersistenceSource::NixJson(p) => write!(f, "{} (Nix JSON)", p.display()),
            PersistenceSource::MountTable(p) => {
                write!(f, "bind mounts from {DEFAULT_STORAGE} in {}", p.display())
            }
            PersistenceSource::Template => f.write_str(TEMPLATE_LABEL),
        }
    }
}

/// What the configuration file source was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigFileState {
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    pub loaded: bool,
}

/// Where to load from; the CLI's global options.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub root: PathBuf,
    pub config: Option<PathBuf>,
    pub persistence_json: Option<PathBuf>,
}

/// Everything a command needs to know about the host, validated.
#[derive(Debug)]
pub struct Config {
    /// The tree the host's `/` is mounted at (`--root`).
    pub root: PathBuf,
    pub config_file: ConfigFileState,
    pub filesystem: Option<FilesystemConfig>,
    pub persistence_source: PersistenceSource,
    pub persisted: PersistedSet,
    pub retention: Policy,
    pub check: CheckConfig,
    /// The live mount table, when the tree has one.
    pub mount_table: Option<MountTable>,
    /// Non-fatal remarks for stderr (unknown attributes in Nix JSON).
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads and merges every source. See the module documentation for the precedence.
    pub fn load(opts: &LoadOptions) -> Result<Config, ConfigError> {
        let root = &opts.root;
        if !root.is_dir() {
            return Err(ConfigError::new(root, "--root is not a directory"));
        }
        let (config_file, file_config) = match &opts.config {
            Some(path) => {
                let text = read_text(path)?;
                (path.clone(), Some(file::parse(path, &text)?))
            }
            None => {
                let path = under_root(root, Path::new(DEFAULT_CONFIG));
                match fs::read_to_string(&path) {
                    Ok(text) => (path.clone(), Some(file::parse(&path, &text)?)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => (path, None),
                    Err(e) => return Err(io_error(&path, &e)),
                }
            }
        };
        let config_state = ConfigFileState {
            path: config_file,
            loaded: file_config.is_some(),
        };
        let file_config = file_config.unwrap_or_default();

        let mount_table = mountinfo::read(root)
            .map_err(|e| io_error(&under_root(root, Path::new("/proc/self/mountinfo")), &e))?;

        let mut warnings = Vec::new();
        let (entries, persistence_source) = if let Some(json) = &opts.persistence_json {
            let text = read_text(json)?;
            let (entries, w) = nix_json::parse(json, &text)?;
            warnings.extend(w);
            (entries, PersistenceSource::NixJson(json.clone()))
        } else if let Some(entries) = file_config.persistence {
            (
                entries,
                PersistenceSource::ConfigFile(config_state.path.clone()),
            )
        } else if let Some(entries) = mount_table
            .as_ref()
            .map(|t| entries_from_mounts(root, t))
            .filter(|e| !e.is_empty())
        {
            let file = mount_table
                .as_ref()
                .map(|t| t.file.clone())
                .unwrap_or_default();
            (entries, PersistenceSource::MountTable(file))
        } else {
            (template_entries(), PersistenceSource::Template)
        };

        Ok(Config {
            root: root.clone(),
            config_file: config_state,
            filesystem: file_config.filesystem,
            persistence_source,
            persisted: PersistedSet::new(entries),
            retention: file_config.retention.unwrap_or_default(),
            check: file_config.check,
            mount_table,
            warnings,
        })
    }
}

/// The built-in template's entries. It is compiled in and covered by a test, so a parse
/// failure here is a build defect, not a user error.
pub fn template_entries() -> Vec<Entry> {
    file::parse(Path::new(TEMPLATE_LABEL), SERVER_TEMPLATE)
        .expect("the built-in template parses")
        .persistence
        .expect("the built-in template declares persistence")
}

/// Persisted entries recovered from bind mounts out of [`DEFAULT_STORAGE`]. A bind mount
/// does not say whether it is of a file or a directory, so the mounted path (or, when that
/// is not there, its source in storage) is looked at; directories are the default.
fn entries_from_mounts(root: &Path, table: &MountTable) -> Vec<Entry> {
    table
        .bind_mounts_from(Path::new(DEFAULT_STORAGE))
        .into_iter()
        .map(|bind| {
            let is_file = [&bind.target, &bind.source]
                .iter()
                .find_map(|p| fs::symlink_metadata(under_root(root, p)).ok())
                .is_some_and(|m| m.is_file());
            let kind = if is_file { Kind::File } else { Kind::Directory };
            let mut entry = Entry::new(bind.target, kind, DEFAULT_STORAGE);
            entry.origin = format!(
                "{}: bind mount of {}",
                table.file.display(),
                bind.source.display()
            );
            entry
        })
        .collect()
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|e| io_error(path, &e))
}

fn io_error(path: &Path, e: &io::Error) -> ConfigError {
    let what = match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::IsADirectory => "is a directory, not a file".to_string(),
        io::ErrorKind::InvalidData => e.to_string(),
        _ => e.to_string(),
    };
    ConfigError::new(path, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_the_seeds_minimal_server_set() {
        let entries = template_entries();
        let dirs: Vec<_> = entries
            .iter()
            .filter(|e| e.kind == Kind::Directory)
            .map(|e| e.path.to_str().unwrap())
            .collect();
        let files: Vec<_> = entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.path.to_str().unwrap())
            .collect();
        assert_eq!(
            dirs,
            [
                "/var/lib/nixos",
                "/var/lib/systemd/coredump",
                "/var/log",
                "/var/lib/tailscale",
                "/etc/NetworkManager/system-connections",
                "/var/lib/acme",
            ]
        );
        assert_eq!(
            files,
            [
                "/etc/machine-id",
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_ed25519_key.pub",
                "/etc/ssh/ssh_host_rsa_key",
                "/etc/ssh/ssh_host_rsa_key.pub",
            ]
        );
        assert!(entries.iter().all(|e| e.storage == Path::new("/persist")));
    }
}
