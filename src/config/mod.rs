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
pub(crate) mod file;
mod nix_json;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{ConfigError, Location, one_line};
pub use file::{FileConfig, subvolume_name};

use crate::beneath;
use crate::mountinfo::{self, MountTable};
use crate::paths::under_root;
use crate::paths::{escape, quoted};
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Bcachefs,
    Btrfs,
    Tmpfs,
}

impl FsType {
    const NAMES: &'static [&'static str] = &["bcachefs", "btrfs", "tmpfs"];

    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Bcachefs => "bcachefs",
            FsType::Btrfs => "btrfs",
            FsType::Tmpfs => "tmpfs",
        }
    }
}

/// By hand rather than derived: a derived enum given a number gets toml's "wanted string
/// or table", which says neither what was found nor what is allowed.
impl<'de> Deserialize<'de> for FsType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FsType, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FsType;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("one of `bcachefs`, `btrfs`, `tmpfs`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FsType, E> {
                match v {
                    "bcachefs" => Ok(FsType::Bcachefs),
                    "btrfs" => Ok(FsType::Btrfs),
                    "tmpfs" => Ok(FsType::Tmpfs),
                    _ => Err(E::unknown_variant(v, FsType::NAMES)),
                }
            }
        }
        d.deserialize_str(Visitor)
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

/// One of the three places a layout names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutKey {
    RootSubvolume,
    SnapshotDir,
    BlankSnapshot,
}

impl LayoutKey {
    /// The key in `[filesystem]`.
    pub fn config_key(self) -> &'static str {
        match self {
            LayoutKey::RootSubvolume => "root_subvolume",
            LayoutKey::SnapshotDir => "snapshot_dir",
            LayoutKey::BlankSnapshot => "blank_snapshot",
        }
    }

    /// The command-line option.
    pub fn flag(self) -> &'static str {
        match self {
            LayoutKey::RootSubvolume => "--root-subvolume",
            LayoutKey::SnapshotDir => "--snapshot-dir",
            LayoutKey::BlankSnapshot => "--blank-snapshot",
        }
    }

    /// What it is, in a sentence.
    pub fn noun(self) -> &'static str {
        match self {
            LayoutKey::RootSubvolume => "root subvolume",
            LayoutKey::SnapshotDir => "snapshot directory",
            LayoutKey::BlankSnapshot => "blank snapshot",
        }
    }
}

/// A layout that cannot work. `keys` are the settings involved, the one at fault first;
/// `what` is the sentence to write after the setting's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutError {
    pub keys: [LayoutKey; 2],
    pub what: String,
}

/// The rules a layout (relative to the top level) must follow, checked before anything
/// is changed, wherever it comes from (the configuration file, options, the library):
///
/// - each is a plain relative path below the top level;
/// - the snapshot directory is neither the root subvolume nor inside it (every reset
///   replaces the root and would take the snapshots with it), and the root is not inside
///   the snapshot directory (gc would take it for an old root);
/// - the blank snapshot is neither the root nor inside it (the reset deletes the root
///   before it snapshots the blank), does not hold the root, is not the snapshot
///   directory and does not hold it.
///
/// A blank snapshot *inside* the snapshot directory (`@snapshots/20200101T000000Z`) is
/// legal: gc knows never to delete it.
pub fn check_layout(
    root: &Path,
    snapshot_dir: &Path,
    blank: Option<&Path>,
) -> Result<(), LayoutError> {
    use LayoutKey::{BlankSnapshot, RootSubvolume, SnapshotDir};
    let fail = |keys: [LayoutKey; 2], what: String| Err(LayoutError { keys, what });
    let named = [
        (RootSubvolume, Some(root)),
        (SnapshotDir, Some(snapshot_dir)),
        (BlankSnapshot, blank),
    ];
    for (key, path) in named {
        let Some(path) = path else { continue };
        let plain = path.as_os_str().is_empty()
            || !path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if plain {
            let other = if key == RootSubvolume {
                SnapshotDir
            } else {
                RootSubvolume
            };
            return fail(
                [key, other],
                format!(
                    "{} is not a plain path below the top level (no `/` first, no `.` or `..`)",
                    quoted(path)
                ),
            );
        }
    }
    if snapshot_dir == root {
        return fail(
            [SnapshotDir, RootSubvolume],
            format!("{} is the root subvolume itself", quoted(snapshot_dir)),
        );
    }
    if snapshot_dir.starts_with(root) {
        return fail(
            [SnapshotDir, RootSubvolume],
            format!(
                "{} is inside the root subvolume {}, which every reset replaces",
                quoted(snapshot_dir),
                quoted(root)
            ),
        );
    }
    if root.starts_with(snapshot_dir) {
        return fail(
            [RootSubvolume, SnapshotDir],
            format!(
                "{} is inside the snapshot directory {}, where gc would take it for an old root",
                quoted(root),
                quoted(snapshot_dir)
            ),
        );
    }
    let Some(blank) = blank else { return Ok(()) };
    let (keys, what) = if blank == root {
        (
            [BlankSnapshot, RootSubvolume],
            format!("{} is the root subvolume itself", quoted(blank)),
        )
    } else if blank.starts_with(root) {
        (
            [BlankSnapshot, RootSubvolume],
            format!(
                "{} is inside the root subvolume {}, which a reset deletes before it snapshots the blank",
                quoted(blank),
                quoted(root)
            ),
        )
    } else if root.starts_with(blank) {
        (
            [BlankSnapshot, RootSubvolume],
            format!(
                "{} holds the root subvolume {}",
                quoted(blank),
                quoted(root)
            ),
        )
    } else if blank == snapshot_dir {
        (
            [BlankSnapshot, SnapshotDir],
            format!("{} is the snapshot directory itself", quoted(blank)),
        )
    } else if snapshot_dir.starts_with(blank) {
        (
            [BlankSnapshot, SnapshotDir],
            format!(
                "{} holds the snapshot directory {}",
                quoted(blank),
                quoted(snapshot_dir)
            ),
        )
    } else {
        return Ok(());
    };
    fail(keys, what)
}

/// A path that something on the host reads before stage 2's bind mounts exist
/// (`[[early_read]]`, which the NixOS module writes from what the configuration enables):
/// persisted by a bind mount, it is not there yet when it is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarlyRead {
    pub path: PathBuf,
    /// Who reads it, as a sentence fragment (`sops-nix (secrets neededForUsers)`).
    pub reader: String,
    /// What to do instead, when the general advice does not fit.
    pub fix: Option<String>,
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
            PersistenceSource::ConfigFile(p) => write!(f, "{}", escape(p)),
            PersistenceSource::NixJson(p) => write!(f, "{} (Nix JSON)", escape(p)),
            PersistenceSource::MountTable(p) => {
                write!(f, "bind mounts from {DEFAULT_STORAGE} in {}", escape(p))
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
    /// `[[early_read]]`.
    pub early_reads: Vec<EarlyRead>,
    /// `[module] needed_for_boot`: the storages the NixOS module found on a filesystem
    /// mounted in the initrd, when the file says (see `status`).
    pub needed_for_boot: Option<Vec<PathBuf>>,
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
        if opts.config.as_deref() == Some(Path::new(STDIN))
            && opts.persistence_json.as_deref() == Some(Path::new(STDIN))
        {
            return Err(ConfigError::new(
                Path::new(STDIN),
                "--config and --persistence-json cannot both read standard input",
            ));
        }
        let (config_file, file_config) = match &opts.config {
            Some(path) => {
                let text = read_text(path)?;
                (path.clone(), Some(file::parse(path, &text)?))
            }
            None => {
                // The tree's own file, as the tree sees it: on NixOS it is a symlink into
                // /etc/static, which under --root must not name the host's file.
                let path = under_root(root, Path::new(DEFAULT_CONFIG));
                let tree = beneath::Tree::open(root).map_err(|e| io_error(root, &e.source))?;
                match tree.read_bounded(Path::new(DEFAULT_CONFIG), MAX_INPUT_BYTES) {
                    Ok(Some(bytes)) => {
                        let text = utf8(&path, bytes)?;
                        (path.clone(), Some(file::parse(&path, &text)?))
                    }
                    Ok(None) => (path, None),
                    Err(e) => return Err(io_error(&path, &as_config_input(e))),
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
            early_reads: file_config.early_reads,
            needed_for_boot: file_config.needed_for_boot,
            mount_table,
            warnings,
        })
    }
}

impl Config {
    /// The root subvolume a reset replaces (relative to the top level), when
    /// `[filesystem]` names a filesystem with subvolumes.
    pub fn root_subvolume(&self) -> Option<&Path> {
        self.filesystem
            .as_ref()
            .filter(|fs| fs.fs_type != FsType::Tmpfs)
            .map(|fs| fs.root_subvolume.as_path())
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
    let tree = beneath::Tree::open(root).ok();
    table
        .bind_mounts_from(Path::new(DEFAULT_STORAGE))
        .into_iter()
        .map(|bind| {
            // As the tree sees it: a symlink on the way must not name a host file.
            let is_file = [&bind.target, &bind.source]
                .iter()
                .find_map(|p| tree.as_ref()?.kind(p).ok().flatten())
                == Some(rustix::fs::FileType::RegularFile);
            let kind = if is_file { Kind::File } else { Kind::Directory };
            let mut entry = Entry::new(bind.target, kind, DEFAULT_STORAGE);
            entry.origin = format!(
                "{}: bind mount of {}",
                escape(&table.file),
                escape(&bind.source)
            );
            entry
        })
        .collect()
}

/// The name that reads standard input (`--persistence-json -`, `--config -`).
pub const STDIN: &str = "-";

/// The most any configuration input may hold. A configuration of 100,000 entries is a few
/// MB of TOML (and `nix eval`'s JSON of it, with its internal attributes, tens of MB);
/// anything larger is not a configuration, and parsing it would take memory for nothing.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = if path == Path::new(STDIN) {
        let mut bytes = Vec::new();
        io::Read::read_to_end(
            &mut io::Read::take(io::stdin().lock(), MAX_INPUT_BYTES + 1),
            &mut bytes,
        )
        .map_err(|e| io_error(path, &e))?;
        if bytes.len() as u64 > MAX_INPUT_BYTES {
            return Err(io_error(path, &too_large()));
        }
        bytes
    } else {
        read_input(path, MAX_INPUT_BYTES).map_err(|e| io_error(path, &e))?
    };
    utf8(path, bytes)
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&e.as_bytes()[..at]);
        let line_col = error::LineIndex::new(&text).line_col(at);
        ConfigError::new(path, "is not UTF-8 text").with_line_col(Some(line_col))
    })
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!(
            "is larger than {} MiB, the most a configuration input may be",
            MAX_INPUT_BYTES >> 20
        ),
    )
}

/// Reads a whole input file the user named (following symlinks, as any program does with
/// a path it is given): a regular file of at most `limit` bytes, see
/// [`beneath::read_regular`].
pub fn read_input(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    beneath::read_regular(file, limit).map_err(as_config_input)
}

/// A too-large input is named as a configuration input, whichever reader found it.
fn as_config_input(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::FileTooLarge => too_large(),
        _ => e,
    }
}

fn io_error(path: &Path, e: &io::Error) -> ConfigError {
    let what = match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::IsADirectory => "is a directory, not a file".to_string(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    };
    ConfigError::new(path, what)
}

/// Test support for the configuration parsers' property tests.
#[cfg(test)]
pub(crate) mod refusal {
    use proptest::prelude::*;

    /// What a refusal must be, whatever the input: one line that names `file` and a place in
    /// it (a key or a line and column), short enough to read.
    pub fn one_line_naming_the_place(
        e: &super::ConfigError,
        file: &str,
    ) -> Result<(), TestCaseError> {
        let line = e.to_string();
        prop_assert!(!line.contains('\n'), "{}", line);
        prop_assert!(line.starts_with(file), "{}", line);
        prop_assert!(line.len() < 1500, "{}", line);
        prop_assert!(
            e.key.is_some() || e.line_col.is_some(),
            "no place: {}",
            line
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way two of root, snapshot directory and blank can overlap (equal, one inside
    /// the other either way), plus near misses that only share a prefix of characters.
    #[test]
    fn layout_rules_cover_every_overlap() {
        use LayoutKey::{BlankSnapshot as B, RootSubvolume as R, SnapshotDir as S};
        type Case = (
            &'static str,
            &'static str,
            Option<&'static str>,
            Option<[LayoutKey; 2]>,
        );
        let cases: &[Case] = &[
            // Legal layouts.
            ("@root", "@snapshots", None, None),
            ("@root", "@snapshots", Some("@blank"), None),
            (
                "@root",
                "@snapshots",
                Some("@snapshots/20200101T000000Z"),
                None,
            ),
            ("@root", "@snapshots", Some("@snapshots/deep/blank"), None),
            ("@root", "@rootsnaps", None, None),
            ("@root", "@snapshots", Some("@root-blank"), None),
            ("@root", "@snapshots", Some("@snapshotsblank"), None),
            ("sys/@root", "sys/@snapshots", Some("sys/@blank"), None),
            // Root and snapshot directory.
            ("@root", "@root", None, Some([S, R])),
            ("@root", "@root/.snapshots", None, Some([S, R])),
            ("@snapshots/@root", "@snapshots", None, Some([R, S])),
            ("@snapshots/a/@root", "@snapshots", None, Some([R, S])),
            // Blank and root.
            ("@root", "@snapshots", Some("@root"), Some([B, R])),
            ("@root", "@snapshots", Some("@root/blank"), Some([B, R])),
            (
                "@root",
                "@snapshots",
                Some("@root/var/lib/machines"),
                Some([B, R]),
            ),
            ("@blank/@root", "@snapshots", Some("@blank"), Some([B, R])),
            // Blank and snapshot directory.
            ("@root", "@snapshots", Some("@snapshots"), Some([B, S])),
            ("@root", "@blank/@snapshots", Some("@blank"), Some([B, S])),
            // Not plain paths (the library can be called with anything).
            ("", "@snapshots", None, Some([R, S])),
            ("/@root", "@snapshots", None, Some([R, S])),
            ("@root", "../@snapshots", None, Some([S, R])),
            ("@root", "@snapshots", Some("./@blank"), Some([B, R])),
            ("@root", "@snapshots", Some(""), Some([B, R])),
        ];
        for (root, snaps, blank, want) in cases {
            let got = check_layout(Path::new(root), Path::new(snaps), blank.map(Path::new));
            assert_eq!(
                got.as_ref().err().map(|e| e.keys),
                *want,
                "root {root:?}, snapshots {snaps:?}, blank {blank:?}: {got:?}"
            );
            if let Err(e) = got {
                assert!(!e.what.contains('\n'));
            }
        }
    }

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
