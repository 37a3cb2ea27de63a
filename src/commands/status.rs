//! `status`: what configuration was loaded from where, the filesystem, the persisted set and
//! its storage, for one host.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::config::{Config, ConfigFileState, PersistenceSource};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::filesystem::backend;
use crate::filesystem::toplevel::TopLevel;
use crate::mountinfo::Wiped;
use crate::output::{self, Report, Styles};
use crate::paths::escape;
use crate::persisted::Kind;
use crate::retention::Policy;
use crate::snapshots::reset::Layout;
use crate::snapshots::snapshot;
use crate::words::count;

pub fn run(global: &GlobalArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, StatusReport::COMMAND)?;
    let config = super::load_config(global)?;
    output::emit(&build(&config), global.format, global.color)?;
    Ok(ExitStatus::Clean)
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    #[serde(serialize_with = "crate::paths::json")]
    root: PathBuf,
    config: ConfigFileState,
    persistence: PersistenceSource,
    filesystem: FilesystemStatus,
    persisted: PersistedSummary,
    storage: Vec<StorageStatus>,
    retention: Policy,
    snapshots: SnapshotsStatus,
}

#[derive(Debug, Serialize)]
struct FilesystemStatus {
    #[serde(rename = "type")]
    fs_type: Option<String>,
    /// "config" or "mount table"; null when neither says.
    from: Option<&'static str>,
    device: Option<String>,
    #[serde(serialize_with = "crate::paths::json_opt")]
    root_subvolume: Option<PathBuf>,
    #[serde(serialize_with = "crate::paths::json_opt")]
    snapshot_dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct PersistedSummary {
    directories: usize,
    files: usize,
    users: Vec<String>,
}

#[derive(Debug, Serialize)]
struct StorageStatus {
    #[serde(serialize_with = "crate::paths::json")]
    path: PathBuf,
    /// Whether it has a mount of its own (not the root's); null without a mount table.
    separate: Option<bool>,
    /// Whether a reset of the root wipes it: it lies on the root's mount, or is mounted
    /// from inside the root's tree (a subvolume nested in the root); null without a mount
    /// table.
    wiped_by_reset: Option<bool>,
    /// The mount that holds it.
    #[serde(serialize_with = "crate::paths::json_opt")]
    mount_point: Option<PathBuf>,
    /// The path inside its filesystem that mount shows (`/@persist`).
    #[serde(serialize_with = "crate::paths::json_opt")]
    mount_root: Option<PathBuf>,
    /// The root's tree it lies inside, when it is mounted apart from there (`/@root`).
    #[serde(serialize_with = "crate::paths::json_opt")]
    inside: Option<PathBuf>,
    fs_type: Option<String>,
}

/// Old-root snapshots, when they could be looked at.
#[derive(Debug, Serialize)]
struct SnapshotsStatus {
    /// Subvolumes in the snapshot directory.
    count: Option<usize>,
    /// The last reset's snapshot: the one it recorded, else the newest not in the future
    /// (what `snapshots ls` labels, and `restore`, `journal` use by default).
    last_reset: Option<String>,
    /// Why they were not looked at, or that there are none by design.
    note: Option<String>,
}

impl SnapshotsStatus {
    fn note(note: impl Into<String>) -> SnapshotsStatus {
        SnapshotsStatus {
            count: None,
            last_reset: None,
            note: Some(note.into()),
        }
    }
}

/// Counts the snapshots when that is possible without asking for anything: a configured
/// device and root to mount it privately. Status is informational, so every obstacle is a
/// note, never an error.
fn snapshots(config: &Config) -> SnapshotsStatus {
    let Some(fs) = &config.filesystem else {
        return SnapshotsStatus::note("not looked at: no [filesystem] configured");
    };
    let backend = backend::for_type(fs.fs_type);
    if !backend.has_subvolumes() {
        return SnapshotsStatus::note("none: a tmpfs root keeps nothing across boots");
    }
    if fs.device.is_none() {
        return SnapshotsStatus::note("not looked at: no [filesystem] device");
    }
    if !rustix::process::geteuid().is_root() {
        return SnapshotsStatus::note(
            "not looked at: mounting the top level needs root (see `imperm snapshots ls`)",
        );
    }
    let now = match super::now() {
        Ok(now) => now,
        Err(e) => return SnapshotsStatus::note(format!("not looked at: {e}")),
    };
    let layout = Layout {
        root: fs.root_subvolume.clone(),
        snapshot_dir: fs.snapshot_dir.clone(),
        blank: fs.blank_snapshot.clone(),
    };
    let surveyed = TopLevel::open(fs, None).and_then(|top| {
        snapshot::survey(
            backend.as_ref(),
            &top,
            &layout,
            &jiff::tz::TimeZone::system(),
            now,
        )
        .map_err(|e| top.locate(e))
    });
    match surveyed {
        Ok(survey) => SnapshotsStatus {
            count: Some(
                survey
                    .found
                    .iter()
                    .filter(|f| f.kind == backend::Kind::Subvolume)
                    .count(),
            ),
            last_reset: survey.last_reset_name().map(str::to_string),
            note: survey.state_problem,
        },
        Err(e) => SnapshotsStatus::note(format!("not looked at: {e}")),
    }
}

fn build(config: &Config) -> StatusReport {
    let table = config.mount_table.as_ref();
    let filesystem = match (
        &config.filesystem,
        table.and_then(|t| t.containing(Path::new("/"))),
    ) {
        (Some(fs), _) => FilesystemStatus {
            fs_type: Some(fs.fs_type.as_str().to_string()),
            from: Some("config"),
            device: fs.device.clone(),
            root_subvolume: Some(fs.root_subvolume.clone()),
            snapshot_dir: Some(fs.snapshot_dir.clone()),
        },
        (None, Some(root_mount)) => FilesystemStatus {
            fs_type: Some(root_mount.fs_type.clone()),
            from: Some("mount table"),
            device: Some(root_mount.source.clone()),
            root_subvolume: None,
            snapshot_dir: None,
        },
        (None, None) => FilesystemStatus {
            fs_type: None,
            from: None,
            device: None,
            root_subvolume: None,
            snapshot_dir: None,
        },
    };
    let set = &config.persisted;
    let mut users: Vec<String> = set
        .entries()
        .iter()
        .filter_map(|e| e.user.clone())
        .collect();
    users.sort();
    users.dedup();
    let storage = set
        .storages()
        .into_iter()
        .map(|path| {
            let place = table.and_then(|t| t.storage(path, config.root_subvolume()));
            let holder = place.as_ref().map(|p| p.holder);
            StorageStatus {
                path: path.to_path_buf(),
                separate: holder.map(|m| m.mount_point != Path::new("/")),
                wiped_by_reset: place.as_ref().map(|p| p.wiped.is_some()),
                mount_point: holder.map(|m| m.mount_point.clone()),
                mount_root: holder.map(|m| m.root.clone()),
                inside: place.and_then(|p| match p.wiped {
                    Some(Wiped::InsideRoot { tree }) => Some(tree),
                    _ => None,
                }),
                fs_type: holder.map(|m| m.fs_type.clone()),
            }
        })
        .collect();
    StatusReport {
        root: config.root.clone(),
        config: config.config_file.clone(),
        persistence: config.persistence_source.clone(),
        filesystem,
        persisted: PersistedSummary {
            directories: set.count(Kind::Directory),
            files: set.count(Kind::File),
            users,
        },
        storage,
        retention: config.retention.clone(),
        snapshots: snapshots(config),
    }
}

impl Report for StatusReport {
    const COMMAND: &'static str = "status";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        let h = s.heading;
        let row = |out: &mut dyn Write, name: &str, value: String| {
            writeln!(out, "{h}{name:<12}{h:#} {value}")
        };
        row(out, "root", escape(&self.root))?;
        let config = if self.config.loaded {
            escape(&self.config.path)
        } else {
            format!("{} (not found: defaults)", escape(&self.config.path))
        };
        row(out, "config", config)?;
        row(out, "persistence", self.persistence.to_string())?;
        let fs = &self.filesystem;
        let filesystem = match (&fs.fs_type, fs.from) {
            (Some(t), Some(from)) => {
                let mut text = t.clone();
                if let Some(device) = &fs.device {
                    text += &format!(" on {device}");
                }
                if let (Some(root), Some(snaps)) = (&fs.root_subvolume, &fs.snapshot_dir) {
                    text += &format!(", root {}, snapshots in {}", escape(root), escape(snaps));
                }
                format!("{text} (from the {from})")
            }
            _ => "unknown (no [filesystem] in the configuration and no mount table)".into(),
        };
        row(out, "filesystem", filesystem)?;
        for storage in &self.storage {
            let text = match (storage.separate, &storage.mount_point, &storage.fs_type) {
                (Some(true), Some(mp), Some(t)) if storage.wiped_by_reset == Some(true) => {
                    format!(
                        "{}{}{:#}: {t} mount at {} of {}, {}inside the root subvolume {}: the reset would wipe it{:#}",
                        s.path,
                        escape(&storage.path),
                        s.path,
                        escape(mp),
                        escape(storage.mount_root.as_deref().unwrap_or(Path::new("?"))),
                        s.problem,
                        escape(storage.inside.as_deref().unwrap_or(Path::new("?"))),
                        s.problem
                    )
                }
                (Some(true), Some(mp), Some(t)) => {
                    format!(
                        "{}{}{:#}: {} mount at {}",
                        s.path,
                        escape(&storage.path),
                        s.path,
                        t,
                        escape(mp)
                    )
                }
                (Some(false), _, Some(t)) => format!(
                    "{}{}{:#}: {}not a separate filesystem{:#} (on the root, {t}); the reset would wipe it",
                    s.path,
                    escape(&storage.path),
                    s.path,
                    s.problem,
                    s.problem
                ),
                _ => format!(
                    "{}{}{:#}: not checked (no mount table, or none with a mount at /)",
                    s.path,
                    escape(&storage.path),
                    s.path
                ),
            };
            row(out, "storage", text)?;
        }
        let p = &self.persisted;
        let users = if p.users.is_empty() {
            String::new()
        } else {
            format!("; users: {}", p.users.join(", "))
        };
        row(
            out,
            "persisted",
            format!(
                "{}, {}{users}",
                count(p.directories, "directory", "directories"),
                count(p.files, "file", "files")
            ),
        )?;
        row(out, "retention", self.retention.to_string())?;
        let snaps = &self.snapshots;
        let text = match (snaps.count, &snaps.last_reset, &snaps.note) {
            (Some(n), Some(last), _) => format!(
                "{}, last reset {}{last}{:#}",
                count(n, "snapshot", "snapshots"),
                s.path,
                s.path
            ),
            (Some(n), None, _) => count(n, "snapshot", "snapshots"),
            (None, _, Some(note)) => format!("{}{note}{:#}", s.dim, s.dim),
            (None, _, None) => String::new(),
        };
        row(out, "snapshots", text)
    }
}
