//! The TOML configuration file (`/etc/imperm/config.toml`): its exact schema (unknown keys
//! are errors), and its translation into validated settings. The built-in template is
//! written in the same format and read by the same code.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::declared::{self, DeclaredEntry, UserBlock};
use super::error::{ConfigError, LineIndex, Location};
use super::{
    CheckConfig, DEFAULT_ROOT_SUBVOLUME, DEFAULT_SNAPSHOT_DIR, EarlyRead, FilesystemConfig, FsType,
    LayoutKey, check_layout,
};
use crate::paths::{check_text, normalize_absolute, normalize_relative, shown};
use crate::persisted::{Entry, Kind};
use crate::retention::{Keep, Policy};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    filesystem: Option<Spanned<RawFilesystem>>,
    #[serde(default)]
    persistence: BTreeMap<String, Spanned<RawStorage>>,
    retention: Option<Spanned<RawRetention>>,
    check: Option<RawCheck>,
    #[serde(default)]
    early_read: Vec<RawEarlyRead>,
    module: Option<RawModule>,
}

/// `[module]`: what the NixOS module established at evaluation and a running host cannot
/// see (which filesystems the initrd mounts).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    #[serde(default)]
    needed_for_boot: Vec<Spanned<String>>,
}

/// `[[early_read]]`: a path something reads before stage 2's bind mounts exist.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEarlyRead {
    path: Spanned<String>,
    reader: String,
    fix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesystem {
    #[serde(rename = "type")]
    fs_type: FsType,
    device: Option<Spanned<String>>,
    root_subvolume: Option<Spanned<String>>,
    snapshot_dir: Option<Spanned<String>>,
    blank_snapshot: Option<Spanned<String>>,
}

/// `[persistence."<path>"]`, spelled as nix-community/impermanence spells its options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawStorage {
    enable: Option<bool>,
    persistent_storage_path: Option<Spanned<String>>,
    #[allow(dead_code)] // accepted for parity with impermanence; bind mounts are not ours
    hide_mounts: Option<bool>,
    #[allow(dead_code)]
    enable_warnings: Option<bool>,
    #[serde(default)]
    directories: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    files: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    users: BTreeMap<String, Spanned<RawUser>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    home: Option<String>,
    #[serde(default)]
    directories: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    files: Vec<Spanned<RawEntry>>,
}

/// An entry is a path string or a table, as in impermanence.
enum RawEntry {
    Path(String),
    Table(RawEntryTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEntryTable {
    directory: Option<String>,
    file: Option<String>,
    user: Option<String>,
    group: Option<String>,
    mode: Option<String>,
    #[allow(dead_code)]
    hide_mount: Option<bool>,
    parent_directory: Option<RawPerms>,
    persistent_storage_path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerms {
    user: Option<String>,
    group: Option<String>,
    mode: Option<String>,
}

impl<'de> Deserialize<'de> for RawEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawEntry, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path string or a table with `directory` or `file`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawEntry, E> {
                Ok(RawEntry::Path(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawEntry, A::Error> {
                RawEntryTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawEntry::Table)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_last: Option<Keep>,
    keep_daily: Option<Keep>,
    keep_weekly: Option<Keep>,
    keep_monthly: Option<Keep>,
    keep_yearly: Option<Keep>,
    timezone: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(default)]
    ignore: Vec<Spanned<String>>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// `[[check.rule]]`: a path pattern, a verdict and why.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: crate::knowledge::PathPatterns,
    verdict: crate::knowledge::Verdict,
    reason: Option<String>,
}

/// What a configuration file declares, validated.
#[derive(Debug, Default)]
pub struct FileConfig {
    pub filesystem: Option<FilesystemConfig>,
    /// `Some` when the file has any `[persistence]` table (even an empty one).
    pub persistence: Option<Vec<Entry>>,
    pub retention: Option<Policy>,
    pub check: CheckConfig,
    pub early_reads: Vec<EarlyRead>,
    /// `[module] needed_for_boot`: the storages the module found on a filesystem mounted
    /// in the initrd; `None` without a `[module]` table (a file the module did not write).
    pub needed_for_boot: Option<Vec<PathBuf>>,
}

/// Parses and validates a configuration file's text. `file` names it in errors.
pub fn parse(file: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let cx = Cx {
        file,
        lines: LineIndex::new(text),
    };
    let raw: RawConfig = cx.deserialize(text)?;
    let filesystem = raw.filesystem.map(|fs| cx.filesystem(fs)).transpose()?;
    let persistence = if raw.persistence.is_empty() {
        None
    } else {
        Some(cx.persistence(raw.persistence)?)
    };
    let retention = raw.retention.map(|r| cx.retention(r)).transpose()?;
    let check = raw
        .check
        .map(|c| cx.check(c))
        .transpose()?
        .unwrap_or_default();
    let early_reads = raw
        .early_read
        .into_iter()
        .enumerate()
        .map(|(i, r)| cx.early_read(i, r))
        .collect::<Result<_, _>>()?;
    let needed_for_boot = raw
        .module
        .map(|m| {
            m.needed_for_boot
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    normalize_absolute(raw.as_ref()).map_err(|p| {
                        cx.error(
                            format!("module.needed_for_boot[{i}]"),
                            raw,
                            format!("{} {p}", shown(raw.as_ref())),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(FileConfig {
        filesystem,
        persistence,
        retention,
        check,
        early_reads,
        needed_for_boot,
    })
}

/// The file being read, for locating errors.
struct Cx<'a> {
    file: &'a Path,
    /// Built once per file: every located value costs a binary search, not a rescan.
    lines: LineIndex<'a>,
}

impl Cx<'_> {
    /// TOML into the raw schema. A type error names the key it is at
    /// (`filesystem.type: invalid type: integer `3`, …`), not only the line.
    fn deserialize(&self, text: &str) -> Result<RawConfig, ConfigError> {
        let locate = |e: &toml::de::Error| e.span().map(|span| self.lines.line_col(span.start));
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new(self.file, e.message()).with_line_col(locate(&e)))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().clone();
            let mut segments: Vec<_> = path.iter().collect();
            let inner = e.into_inner();
            // The path of an unknown field ends in that field, which the message names:
            // the key to show is the table it is in.
            if inner.message().starts_with("unknown field") {
                segments.pop();
            }
            let key = key_path(&segments);
            // toml's words for a derived enum given a number or a list say too little.
            let what = match inner.message() {
                "wanted string or table" => "invalid type: expected a string",
                other => other,
            };
            let mut err = ConfigError::new(self.file, what).with_line_col(locate(&inner));
            if !key.is_empty() {
                err.key = Some(key);
            }
            err
        })
    }

    fn loc<T>(&self, key: impl Into<String>, spanned: &Spanned<T>) -> Location {
        Location {
            key: key.into(),
            line_col: Some(self.lines.line_col(spanned.span().start)),
        }
    }

    fn error<T>(&self, key: impl Into<String>, at: &Spanned<T>, what: String) -> ConfigError {
        ConfigError::new(self.file, what).at(&self.loc(key, at))
    }

    fn filesystem(&self, raw: Spanned<RawFilesystem>) -> Result<FilesystemConfig, ConfigError> {
        let raw = raw.into_inner();
        let subvolume = |key: &str, value: Option<Spanned<String>>, default: &str| match value {
            None => Ok(PathBuf::from(default)),
            Some(v) => subvolume_name(v.as_ref())
                .map_err(|what| self.error(format!("filesystem.{key}"), &v, what)),
        };
        let root_subvolume = subvolume(
            "root_subvolume",
            raw.root_subvolume.clone(),
            DEFAULT_ROOT_SUBVOLUME,
        )?;
        let snapshot_dir = subvolume(
            "snapshot_dir",
            raw.snapshot_dir.clone(),
            DEFAULT_SNAPSHOT_DIR,
        )?;
        let blank_snapshot = match raw.blank_snapshot.clone() {
            None => None,
            Some(v) => Some(subvolume("blank_snapshot", Some(v), "")?),
        };
        if let Err(e) = check_layout(&root_subvolume, &snapshot_dir, blank_snapshot.as_deref()) {
            // Point at the setting at fault, or at the other one when it is the default.
            let written = |key: LayoutKey| match key {
                LayoutKey::RootSubvolume => raw.root_subvolume.as_ref(),
                LayoutKey::SnapshotDir => raw.snapshot_dir.as_ref(),
                LayoutKey::BlankSnapshot => raw.blank_snapshot.as_ref(),
            };
            let at = e.keys.iter().find_map(|&k| written(k).map(|v| (k, v)));
            return Err(match at {
                Some((key, v)) => self.error(format!("filesystem.{}", key.config_key()), v, e.what),
                None => ConfigError::new(self.file, e.what),
            });
        }
        let device = match raw.device {
            None => None,
            Some(d) if d.as_ref().trim().is_empty() => {
                return Err(self.error("filesystem.device", &d, "is empty".into()));
            }
            Some(d) if check_text(d.as_ref()).is_err() => {
                let problem = check_text(d.as_ref()).unwrap_err();
                let what = format!("{} {problem}", shown(d.as_ref()));
                return Err(self.error("filesystem.device", &d, what));
            }
            Some(d) => Some(d.into_inner()),
        };
        Ok(FilesystemConfig {
            fs_type: raw.fs_type,
            device,
            root_subvolume,
            snapshot_dir,
            blank_snapshot,
        })
    }

    fn persistence(
        &self,
        raw: BTreeMap<String, Spanned<RawStorage>>,
    ) -> Result<Vec<Entry>, ConfigError> {
        let mut declared = Vec::new();
        for (name, storage) in raw {
            let base = format!("persistence.{}", toml_key(&name));
            let table_at = self.loc(base.clone(), &storage);
            let storage = storage.into_inner();
            if storage.enable == Some(false) {
                continue;
            }
            // Checked here, not only with each entry: a storage without entries is still
            // declared, and what it names must be a storage path.
            let storage_path = match storage.persistent_storage_path {
                Some(p) => {
                    let at = self.loc(format!("{base}.persistentStoragePath"), &p);
                    declared::storage_path(self.file, p.as_ref(), &at)?;
                    p.into_inner()
                }
                None => {
                    declared::storage_path(self.file, &name, &table_at)?;
                    name
                }
            };
            let lists = [
                (Kind::Directory, "directories", storage.directories),
                (Kind::File, "files", storage.files),
            ];
            for (kind, list, items) in lists {
                for (i, item) in items.into_iter().enumerate() {
                    let key = format!("{base}.{list}[{i}]");
                    declared.push(self.entry(key, kind, &storage_path, None, item)?);
                }
            }
            for (user, block) in storage.users {
                let user_key = format!("{base}.users.{}", toml_key(&user));
                let at = self.loc(user_key.clone(), &block);
                let block = block.into_inner();
                let identity = UserBlock {
                    name: user,
                    home: block.home.clone(),
                    at,
                };
                let lists = [
                    (Kind::Directory, "directories", block.directories),
                    (Kind::File, "files", block.files),
                ];
                for (kind, list, items) in lists {
                    for (i, item) in items.into_iter().enumerate() {
                        let key = format!("{user_key}.{list}[{i}]");
                        let owner = Some(identity.clone());
                        declared.push(self.entry(key, kind, &storage_path, owner, item)?);
                    }
                }
            }
        }
        declared::resolve(self.file, declared)
    }

    fn entry(
        &self,
        key: String,
        kind: Kind,
        storage: &str,
        user: Option<UserBlock>,
        item: Spanned<RawEntry>,
    ) -> Result<DeclaredEntry, ConfigError> {
        let at = self.loc(key, &item);
        let fail = |what: &str| ConfigError::new(self.file, what).at(&at);
        let default_owner = user.as_ref().map(|u| u.name.clone());
        let mut entry = DeclaredEntry {
            path: String::new(),
            kind,
            storage: storage.to_string(),
            owner: default_owner.clone(),
            group: None,
            mode: None,
            user,
            at: at.clone(),
        };
        match item.into_inner() {
            RawEntry::Path(path) => entry.path = path,
            RawEntry::Table(t) => {
                let (wanted, other) = match kind {
                    Kind::Directory => (t.directory, t.file),
                    Kind::File => (t.file, t.directory),
                };
                let field = kind_field(kind);
                if other.is_some() {
                    let other_field = kind_field(match kind {
                        Kind::Directory => Kind::File,
                        Kind::File => Kind::Directory,
                    });
                    return Err(fail(&format!(
                        "`{other_field}` in a {} list; use `{field}`",
                        list_name(kind)
                    )));
                }
                entry.path = wanted.ok_or_else(|| fail(&format!("missing `{field}`")))?;
                if let Some(p) = t.persistent_storage_path {
                    entry.storage = p;
                }
                match kind {
                    Kind::Directory => {
                        if t.parent_directory.is_some() {
                            return Err(fail("`parentDirectory` applies to files only"));
                        }
                        entry.owner = t.user.or(default_owner);
                        entry.group = t.group;
                        entry.mode = t.mode;
                    }
                    Kind::File => {
                        if t.user.is_some() || t.group.is_some() || t.mode.is_some() {
                            return Err(fail(
                                "files take ownership and mode under `parentDirectory`",
                            ));
                        }
                        if let Some(parent) = t.parent_directory {
                            entry.owner = parent.user.or(default_owner);
                            entry.group = parent.group;
                            entry.mode = parent.mode;
                        }
                    }
                }
            }
        }
        Ok(entry)
    }

    fn retention(&self, raw: Spanned<RawRetention>) -> Result<Policy, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let timezone = match raw.timezone {
            Some(tz) if tz.as_ref() != "local" => {
                jiff::tz::TimeZone::get(tz.as_ref()).map_err(|e| {
                    self.error(
                        "retention.timezone",
                        &tz,
                        format!("{}: {e}", shown(tz.as_ref())),
                    )
                })?;
                Some(tz.into_inner())
            }
            _ => None,
        };
        let policy = Policy {
            keep_last: raw.keep_last.unwrap_or_default(),
            keep_daily: raw.keep_daily.unwrap_or_default(),
            keep_weekly: raw.keep_weekly.unwrap_or_default(),
            keep_monthly: raw.keep_monthly.unwrap_or_default(),
            keep_yearly: raw.keep_yearly.unwrap_or_default(),
            timezone,
        };
        if policy.keeps_nothing() {
            return Err(ConfigError::new(
                self.file,
                "every keep_* rule is 0 or missing; such a policy would delete every old root but the newest",
            )
            .at(&Location {
                key: "retention".into(),
                line_col: Some(self.lines.line_col(span.start)),
            }));
        }
        Ok(policy)
    }

    fn check(&self, raw: RawCheck) -> Result<CheckConfig, ConfigError> {
        let mut ignore = Vec::with_capacity(raw.ignore.len());
        for (i, glob) in raw.ignore.into_iter().enumerate() {
            let key = format!("check.ignore[{i}]");
            let text = glob.as_ref();
            if !(text.starts_with('/') || text.starts_with("**")) {
                return Err(self.error(
                    key,
                    &glob,
                    format!(
                        "{} must start with `/` or `**`: globs match absolute paths",
                        shown(text)
                    ),
                ));
            }
            globset::GlobBuilder::new(text)
                .literal_separator(true)
                .build()
                .map_err(|e| self.error(key, &glob, format!("{}: {}", shown(text), e.kind())))?;
            ignore.push(glob.into_inner());
        }
        let rules = raw
            .rule
            .into_iter()
            .map(|r| crate::classify::UserRule {
                path: r.path,
                verdict: r.verdict,
                reason: r
                    .reason
                    .unwrap_or_else(|| "set in the configuration".into()),
            })
            .collect();
        Ok(CheckConfig { ignore, rules })
    }

    fn early_read(&self, i: usize, raw: RawEarlyRead) -> Result<EarlyRead, ConfigError> {
        let path = normalize_absolute(raw.path.as_ref()).map_err(|p| {
            self.error(
                format!("early_read[{i}].path"),
                &raw.path,
                format!("{} {p}", shown(raw.path.as_ref())),
            )
        })?;
        Ok(EarlyRead {
            path,
            reader: raw.reader,
            fix: raw.fix,
        })
    }
}

fn kind_field(kind: Kind) -> &'static str {
    match kind {
        Kind::Directory => "directory",
        Kind::File => "file",
    }
}

fn list_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Directory => "directories",
        Kind::File => "files",
    }
}

/// A subvolume name relative to the filesystem's top level; a leading `/` (as in
/// `subvol=/@root`) is accepted and dropped.
pub fn subvolume_name(raw: &str) -> Result<PathBuf, String> {
    let trimmed = raw.trim_start_matches('/');
    if trimmed.is_empty() {
        return Err(format!(
            "{} names the top level itself, not a subvolume",
            shown(raw)
        ));
    }
    normalize_relative(trimmed).map_err(|p| format!("{} {p}", shown(raw)))
}

/// A key path as a person writes it in TOML: `persistence."/persist".directories[2]`.
/// toml's `Spanned` wrappers show up as a private field name in the path; they are not keys.
fn key_path(segments: &[&serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.starts_with("$__serde_spanned_private") {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&toml_key(key));
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// A TOML key as it would be written: bare when it can be, quoted otherwise.
pub fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare && key.len() <= 100 {
        key.to_string()
    } else {
        // Quoted, and cut when long: a key path is for finding the place, not echoing it.
        shown(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{TestCaseError, prop_assert, prop_assert_eq};

    fn parse_ok(text: &str) -> FileConfig {
        parse(Path::new("c.toml"), text).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(Path::new("c.toml"), text).unwrap_err().to_string()
    }

    /// Every section and every way of writing an entry.
    const FULL: &str = r#"
[filesystem]
type = "btrfs"
device = "/dev/disk/by-label/nixos"
root_subvolume = "/@root"
snapshot_dir = "@snapshots"

[persistence."/persist"]
hideMounts = true
directories = [
  "/var/log",
  { directory = "/var/lib/private", mode = "0700" },
  { directory = "/var/lib/colord", user = "colord", group = "colord", mode = "u=rwx,g=rx,o=" },
]
files = [
  "/etc/machine-id",
  { file = "/etc/nix/id_rsa", parentDirectory = { mode = "u=rwx,g=,o=" } },
]
users.josh.directories = [".ssh", { directory = ".gnupg", mode = "0700" }]
users.root = { home = "/root", files = [".bash_history"] }

[retention]
keep_last = 3
keep_monthly = "all"
timezone = "Europe/Berlin"

[check]
ignore = ["/var/lib/foo/**", "**/*.tmp"]
"#;

    #[test]
    fn the_modules_needed_for_boot_loads_and_a_bad_one_names_its_key() {
        let cfg = parse(
            Path::new("c.toml"),
            "[module]\nneeded_for_boot = [\"/persist/\", \"/nix/persist\"]\n",
        )
        .unwrap();
        assert_eq!(
            cfg.needed_for_boot,
            Some(vec![
                PathBuf::from("/persist"),
                PathBuf::from("/nix/persist")
            ])
        );
        assert_eq!(
            parse(Path::new("c.toml"), "").unwrap().needed_for_boot,
            None
        );
        let err = parse_err("[module]\nneeded_for_boot = [\"persist\"]\n");
        assert!(err.contains("module.needed_for_boot[0]"), "{err}");
        let err = parse_err("[module]\nneeded = []\n");
        assert!(err.contains("unknown field `needed`"), "{err}");
    }

    #[test]
    fn early_reads_load_and_a_bad_one_names_its_key() {
        let cfg = parse_ok(
            r#"
[[early_read]]
path = "/etc/ssh//ssh_host_ed25519_key"
reader = "agenix (age.identityPaths)"

[[early_read]]
path = "/etc/machine-id"
reader = "systemd-machine-id-commit.service"
fix = "run it only on the first boot"
"#,
        );
        assert_eq!(
            cfg.early_reads,
            vec![
                EarlyRead {
                    path: PathBuf::from("/etc/ssh/ssh_host_ed25519_key"),
                    reader: "agenix (age.identityPaths)".into(),
                    fix: None,
                },
                EarlyRead {
                    path: PathBuf::from("/etc/machine-id"),
                    reader: "systemd-machine-id-commit.service".into(),
                    fix: Some("run it only on the first boot".into()),
                },
            ]
        );
        let err = parse_err("[[early_read]]\npath = \"etc/x\"\nreader = \"r\"\n");
        assert!(err.contains("early_read[0].path"), "{err}");
        assert!(err.contains("not an absolute path"), "{err}");
        let err = parse_err("[[early_read]]\npath = \"/x\"\nreader = \"r\"\nwhen = 1\n");
        assert!(err.contains("unknown field `when`"), "{err}");
        let err = parse_err("[[early_read]]\npath = \"/x\"\n");
        assert!(err.contains("reader"), "{err}");
    }

    #[test]
    fn a_full_configuration_loads() {
        let cfg = parse_ok(FULL);
        let fs = cfg.filesystem.unwrap();
        assert_eq!(fs.fs_type, FsType::Btrfs);
        assert_eq!(fs.root_subvolume, PathBuf::from("@root"));
        let entries = cfg.persistence.unwrap();
        let rendered: Vec<String> = entries
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {}",
                    e.kind.as_str(),
                    e.path.display(),
                    e.user.as_deref().unwrap_or("-"),
                    e.mode.map(|m| m.to_string()).unwrap_or_else(|| "-".into())
                )
            })
            .collect();
        assert_eq!(
            rendered,
            [
                "directory /var/log - -",
                "directory /var/lib/private - 0700",
                "directory /var/lib/colord - 0750",
                "file /etc/machine-id - -",
                "file /etc/nix/id_rsa - 0700",
                "directory /home/josh/.ssh josh -",
                "directory /home/josh/.gnupg josh 0700",
                "file /root/.bash_history root -",
            ]
        );
        assert_eq!(entries[1].origin, "c.toml:12");
        let retention = cfg.retention.unwrap();
        assert_eq!(retention.keep_last, Keep::Count(3));
        assert_eq!(retention.keep_weekly, Keep::None);
        assert_eq!(retention.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(cfg.check.ignore.len(), 2);
    }

    #[test]
    fn an_empty_file_declares_nothing() {
        let cfg = parse_ok("");
        assert!(cfg.filesystem.is_none());
        assert!(cfg.persistence.is_none());
        assert!(cfg.retention.is_none());
    }

    /// Each bad input names the file, the line and column, the key where there is one, and
    /// what is wrong.
    #[test]
    fn bad_input_is_one_line_naming_where_and_what() {
        let cases: &[(&str, &str)] = &[
            ("[filesystem\ntype = 1", "c.toml:1:12: "),
            ("colour = true", "c.toml:1:1: unknown field `colour`"),
            (
                "[filesystem]\ntype = \"btrfs\"\ncolour = true",
                "c.toml:3:1: filesystem: unknown field `colour`",
            ),
            (
                "[filesystem]\ntype = \"zfs\"",
                "c.toml:2:8: filesystem.type: unknown variant `zfs`, expected one of `bcachefs`, `btrfs`, `tmpfs`",
            ),
            (
                "[filesystem]\ndevice = \"/dev/sda\"",
                "missing field `type`",
            ),
            (
                "[persistence.\"/persist\"]\ndirectories = [\"var/lib\"]",
                "c.toml:2:16: persistence.\"/persist\".directories[0]: \"var/lib\" is not an absolute path",
            ),
            (
                "[persistence.\"/persist\"]\nfiles = [\"/etc/../shadow\"]",
                "c.toml:2:10: persistence.\"/persist\".files[0]: \"/etc/../shadow\" contains `..`",
            ),
            (
                "[persistence.\"/persist\"]\nusers.josh.directories = [\"/home/josh/.ssh\"]",
                "c.toml:2:27: persistence.\"/persist\".users.josh.directories[0]: \"/home/josh/.ssh\" is absolute, but user entries are relative to the home directory",
            ),
            (
                "[persistence.persist]\ndirectories = [\"/var/log\"]",
                "persistent storage path \"persist\" is not an absolute path",
            ),
            (
                "[persistence.\"/persist\"]\ndirectories = [{ directory = \"/x\", mod = \"0700\" }]",
                "unknown field `mod`",
            ),
            (
                "[persistence.\"/persist\"]\ndirectories = [{ file = \"/x\" }]",
                "c.toml:2:16: persistence.\"/persist\".directories[0]: `file` in a directories list; use `directory`",
            ),
            (
                "[persistence.\"/persist\"]\ndirectories = [{ mode = \"0700\" }]",
                "directories[0]: missing `directory`",
            ),
            (
                "[persistence.\"/persist\"]\ndirectories = [42]",
                "c.toml:2:16: persistence.\"/persist\".directories[0]: invalid type: integer `42`, expected a path string or a table",
            ),
            (
                "[retention]\nkeep_last = 0",
                "c.toml:1:1: retention: every keep_* rule is 0 or missing",
            ),
            (
                "[retention]\nkeep_last = \"many\"",
                "c.toml:2:13: retention.keep_last: invalid value: string \"many\", expected a count (0 or more) or \"all\"",
            ),
            (
                "[retention]\nkeep_last = 1\ntimezone = \"Mars/Olympus\"",
                "c.toml:3:12: retention.timezone: \"Mars/Olympus\"",
            ),
            (
                "[check]\nignore = [\"var/**\"]",
                "c.toml:2:11: check.ignore[0]: \"var/**\" must start with `/` or `**`",
            ),
            (
                "[check]\nignore = [\"/var/[a\"]",
                "c.toml:2:11: check.ignore[0]: \"/var/[a\": unclosed character class",
            ),
            (
                "[filesystem]\ntype = \"btrfs\"\nroot_subvolume = \"/\"",
                "c.toml:3:18: filesystem.root_subvolume: \"/\" names the top level itself",
            ),
            (
                "[filesystem]\ntype = \"btrfs\"\nroot_subvolume = \"..\"",
                "filesystem.root_subvolume: \"..\" contains `..`",
            ),
            (
                "[filesystem]\ntype = \"btrfs\"\nroot_subvolume = \"@root\"\nsnapshot_dir = \"@root/snaps\"",
                "c.toml:4:16: filesystem.snapshot_dir: \"@root/snaps\" is inside the root subvolume",
            ),
        ];
        for (text, want) in cases {
            let got = parse_err(text);
            assert!(!got.contains('\n'), "multi-line error for {text:?}: {got}");
            assert!(
                got.starts_with("c.toml"),
                "no file in error for {text:?}: {got}"
            );
            assert!(
                got.contains(want),
                "for {text:?}\n  got: {got}\n want: {want}"
            );
        }
    }

    /// Every key of the schema given a value of the wrong type: the one-line message names
    /// that key, not only a line and column.
    #[test]
    fn every_key_given_the_wrong_type_is_named() {
        let fs = "[filesystem]\ntype = \"btrfs\"\n";
        let p = "[persistence.\"/persist\"]\n";
        let r = "[retention]\nkeep_last = 1\n";
        let cases: Vec<(String, &str)> = vec![
            ("filesystem = 3".into(), "filesystem"),
            ("[filesystem]\ntype = 3".into(), "filesystem.type"),
            ("[filesystem]\ntype = [\"btrfs\"]".into(), "filesystem.type"),
            (format!("{fs}device = 3"), "filesystem.device"),
            (
                format!("{fs}root_subvolume = 3"),
                "filesystem.root_subvolume",
            ),
            (
                format!("{fs}snapshot_dir = true"),
                "filesystem.snapshot_dir",
            ),
            (
                format!("{fs}blank_snapshot = []"),
                "filesystem.blank_snapshot",
            ),
            ("persistence = 3".into(), "persistence"),
            (
                "persistence.\"/persist\" = 3".into(),
                "persistence.\"/persist\"",
            ),
            (format!("{p}enable = 3"), "persistence.\"/persist\".enable"),
            (
                format!("{p}persistentStoragePath = 3"),
                "persistence.\"/persist\".persistentStoragePath",
            ),
            (
                format!("{p}hideMounts = \"yes\""),
                "persistence.\"/persist\".hideMounts",
            ),
            (
                format!("{p}enableWarnings = 1"),
                "persistence.\"/persist\".enableWarnings",
            ),
            (
                format!("{p}directories = 3"),
                "persistence.\"/persist\".directories",
            ),
            (format!("{p}files = {{}}"), "persistence.\"/persist\".files"),
            (format!("{p}users = 3"), "persistence.\"/persist\".users"),
            (
                format!("{p}directories = [3]"),
                "persistence.\"/persist\".directories[0]",
            ),
            (
                format!("{p}directories = [\"/a\", {{ directory = 3 }}]"),
                "persistence.\"/persist\".directories[1].directory",
            ),
            (
                format!("{p}directories = [{{ directory = \"/a\", user = 3 }}]"),
                "persistence.\"/persist\".directories[0].user",
            ),
            (
                format!("{p}directories = [{{ directory = \"/a\", group = 3 }}]"),
                "persistence.\"/persist\".directories[0].group",
            ),
            (
                format!("{p}directories = [{{ directory = \"/a\", mode = 700 }}]"),
                "persistence.\"/persist\".directories[0].mode",
            ),
            (
                format!("{p}directories = [{{ directory = \"/a\", hideMount = 1 }}]"),
                "persistence.\"/persist\".directories[0].hideMount",
            ),
            (
                format!("{p}directories = [{{ directory = \"/a\", persistentStoragePath = 1 }}]"),
                "persistence.\"/persist\".directories[0].persistentStoragePath",
            ),
            (
                format!("{p}files = [{{ file = 3 }}]"),
                "persistence.\"/persist\".files[0].file",
            ),
            (
                format!("{p}files = [{{ file = \"/a\", parentDirectory = 3 }}]"),
                "persistence.\"/persist\".files[0].parentDirectory",
            ),
            (
                format!("{p}files = [{{ file = \"/a\", parentDirectory = {{ user = 3 }} }}]"),
                "persistence.\"/persist\".files[0].parentDirectory.user",
            ),
            (
                format!("{p}files = [{{ file = \"/a\", parentDirectory = {{ group = 3 }} }}]"),
                "persistence.\"/persist\".files[0].parentDirectory.group",
            ),
            (
                format!("{p}files = [{{ file = \"/a\", parentDirectory = {{ mode = 3 }} }}]"),
                "persistence.\"/persist\".files[0].parentDirectory.mode",
            ),
            (
                format!("{p}users.josh = 3"),
                "persistence.\"/persist\".users.josh",
            ),
            (
                format!("{p}users.josh.home = 3"),
                "persistence.\"/persist\".users.josh.home",
            ),
            (
                format!("{p}users.josh.directories = 3"),
                "persistence.\"/persist\".users.josh.directories",
            ),
            (
                format!("{p}users.josh.files = [3]"),
                "persistence.\"/persist\".users.josh.files[0]",
            ),
            (
                format!("{p}users.josh.directories = [{{ directory = 3 }}]"),
                "persistence.\"/persist\".users.josh.directories[0].directory",
            ),
            ("retention = 3".into(), "retention"),
            (
                "[retention]\nkeep_last = true".into(),
                "retention.keep_last",
            ),
            (format!("{r}keep_daily = 1.5"), "retention.keep_daily"),
            (format!("{r}keep_weekly = []"), "retention.keep_weekly"),
            (
                format!("{r}keep_monthly = \"some\""),
                "retention.keep_monthly",
            ),
            (format!("{r}keep_yearly = -2"), "retention.keep_yearly"),
            (format!("{r}timezone = 3"), "retention.timezone"),
            ("check = 3".into(), "check"),
            ("[check]\nignore = 3".into(), "check.ignore"),
            ("[check]\nignore = [\"/a\", 3]".into(), "check.ignore[1]"),
            ("[check]\nrule = 3".into(), "check.rule"),
            ("[check]\nrule = [3]".into(), "check.rule[0]"),
            (
                "[[check.rule]]\npath = 3\nverdict = \"persist\"".into(),
                "check.rule[0].path",
            ),
            (
                "[[check.rule]]\npath = \"/srv\"\nverdict = 3".into(),
                "check.rule[0].verdict",
            ),
            (
                "[[check.rule]]\npath = \"/srv\"\nverdict = \"persist\"\nreason = 3".into(),
                "check.rule[0].reason",
            ),
        ];
        for (text, key) in cases {
            let got = parse_err(&text);
            assert!(!got.contains('\n'), "multi-line error for {text:?}: {got}");
            assert!(
                got.starts_with("c.toml:") && got.contains(&format!(": {key}: ")),
                "for {text:?}\n  got: {got}\n want the key {key}"
            );
            assert!(
                !got.contains("wanted string or table"),
                "toml's words for an enum say too little: {got}"
            );
        }
    }

    #[test]
    fn disabled_storage_is_ignored() {
        let cfg = parse_ok("[persistence.\"/persist\"]\nenable = false\ndirectories = [\"/x\"]");
        assert_eq!(cfg.persistence.unwrap().len(), 0);
    }

    #[test]
    fn toml_keys_are_quoted_only_when_needed() {
        assert_eq!(toml_key("josh"), "josh");
        assert_eq!(toml_key("/persist"), "\"/persist\"");
        assert_eq!(toml_key("a.b"), "\"a.b\"");
    }

    /// What any input must come to: a configuration whose paths are all usable, or one
    /// line that names the file and a place in it.
    fn parses_or_names_the_place(text: &str) -> Result<(), TestCaseError> {
        match parse(Path::new("c.toml"), text) {
            Ok(cfg) => {
                for e in cfg.persistence.unwrap_or_default() {
                    let raw = e.path.to_str().expect("configured paths are UTF-8");
                    prop_assert_eq!(crate::paths::normalize_absolute(raw), Ok(e.path.clone()));
                    prop_assert!(raw.len() <= crate::paths::MAX_PATH_BYTES);
                }
            }
            Err(e) => crate::config::refusal::one_line_naming_the_place(&e, "c.toml")?,
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
            parses_or_names_the_place(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn mutations_of_a_valid_file_parse_or_name_the_place(edits in crate::mutate::edits()) {
            let text = crate::mutate::apply(FULL.as_bytes(), &edits);
            parses_or_names_the_place(&String::from_utf8_lossy(&text))?;
        }
    }
}
