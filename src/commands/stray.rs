//! `stray`: what lies in the persistent storages that no declared entry covers; moves it
//! into a quarantine and back.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::beneath::Tree;
use crate::cli::{GlobalArgs, StrayArgs};
use crate::config::PersistenceSource;
use crate::discover::owners::Accounts;
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;
use crate::output::{self, Report, Styles};
use crate::paths::escape;
use crate::rollout::stray::{self, Item, Moved, Why};
use crate::words::{bytes, count};

#[derive(Debug, Serialize)]
pub struct StrayReport {
    storages: Vec<StorageStray>,
    /// What `--quarantine` moved, per storage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    quarantined: Vec<Moved>,
    /// What `--restore` put back, per storage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    restored: Vec<Moved>,
}

#[derive(Debug, Serialize)]
struct StorageStray {
    #[serde(serialize_with = "crate::paths::json")]
    storage: PathBuf,
    exists: bool,
    items: Vec<Item>,
}

impl Report for StrayReport {
    const COMMAND: &'static str = "stray";

    fn human(&self, out: &mut dyn Write, styles: &Styles) -> io::Result<()> {
        for moved in &self.restored {
            writeln!(
                out,
                "{}: {} put back",
                paint(styles.path, escape(&moved.dir)),
                count(moved.moved.len(), "entry", "entries")
            )?;
            for p in &moved.moved {
                writeln!(out, "  {}", escape(p))?;
            }
            not_moved(out, styles, moved)?;
            if moved.not_moved.is_empty() {
                writeln!(out, "  (the quarantine is empty and was removed)")?;
            }
        }
        if !self.restored.is_empty() {
            return Ok(());
        }
        for s in &self.storages {
            if !s.exists {
                writeln!(
                    out,
                    "{}: does not exist",
                    paint(styles.path, escape(&s.storage))
                )?;
                continue;
            }
            let total: u64 = s.items.iter().map(|i| i.bytes).sum();
            if s.items.is_empty() {
                writeln!(
                    out,
                    "{}: {}",
                    paint(styles.path, escape(&s.storage)),
                    paint(styles.good, "nothing stray")
                )?;
                continue;
            }
            writeln!(
                out,
                "{}: {} stray, {}",
                paint(styles.heading, escape(&s.storage)),
                count(s.items.len(), "entry", "entries"),
                bytes(total)
            )?;
            for i in &s.items {
                let why = match &i.why {
                    Why::Undeclared => "not declared".to_string(),
                    Why::Shadowed(by) => {
                        format!("hidden: {} is mounted from {}", escape(&i.path), escape(by))
                    }
                };
                let size = if i.mount_point {
                    "a mount point".to_string()
                } else if i.kind == "directory" {
                    format!(
                        "{}, {}",
                        count(i.files as usize, "file", "files"),
                        bytes(i.bytes)
                    )
                } else {
                    bytes(i.bytes)
                };
                writeln!(
                    out,
                    "  {} {}  {}  {}:{}  changed {}  {}",
                    paint(styles.problem, escape(&i.on_disk)),
                    i.kind,
                    size,
                    i.owner,
                    i.group,
                    &i.changed[..i.changed.len().min(10)],
                    paint(styles.dim, format!("· {why}"))
                )?;
            }
        }
        for moved in &self.quarantined {
            if moved.moved.is_empty() {
                writeln!(out, "nothing was moved")?;
                not_moved(out, styles, moved)?;
                continue;
            }
            writeln!(
                out,
                "moved {} to {} (manifest.json); put back with: imperm stray --restore {}",
                count(moved.moved.len(), "entry", "entries"),
                paint(styles.path, escape(&moved.dir)),
                moved.name
            )?;
            not_moved(out, styles, moved)?;
        }
        Ok(())
    }
}

fn paint(style: anstyle::Style, text: impl std::fmt::Display) -> String {
    format!("{style}{text}{style:#}")
}

fn not_moved(out: &mut dyn Write, styles: &Styles, moved: &Moved) -> io::Result<()> {
    for n in &moved.not_moved {
        writeln!(
            out,
            "  {} not moved: {}",
            paint(styles.problem, escape(&n.path)),
            n.why
        )?;
    }
    Ok(())
}

pub fn run(global: &GlobalArgs, args: &StrayArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, StrayReport::COMMAND)?;
    let restore = args
        .restore
        .as_deref()
        .map(|raw| stray::given_name(raw).map_err(Error::Usage))
        .transpose()?;
    let config = super::load_config(global)?;
    if config.persistence_source == PersistenceSource::Template {
        return Err(Error::Usage(format!(
            "no persistence is declared ({} has none, and no --persistence-json was given): stray compares the storage with the host's own entries, not imperm's template",
            escape(&config.config_file.path)
        )));
    }
    let root = &config.root;
    let root_fd = rustix::fs::open(
        root,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| FsError::new("open", root, e.into()))?;
    let storages: Vec<&Path> = config
        .persisted
        .storages()
        .into_iter()
        .filter(|s| *s != Path::new("/"))
        .collect();
    // Every storage opened (and locked, for a change) before anything moves: a refusal
    // anywhere leaves every storage as it was.
    let mut opened = Vec::new();
    for storage in &storages {
        let shown = storage.to_path_buf();
        let fd = stray::open_storage(root_fd.as_fd(), storage, &shown)?;
        if let (Some(fd), true) = (&fd, args.quarantine || restore.is_some()) {
            crate::rollout::lock_storage(fd, &shown)?;
        }
        opened.push((*storage, shown, fd));
    }
    let mut report = StrayReport {
        storages: Vec::new(),
        quarantined: Vec::new(),
        restored: Vec::new(),
    };
    if let Some(name) = restore {
        for (_, shown, fd) in &opened {
            if let Some(fd) = fd {
                if let Some(moved) = stray::put_back(fd, shown, name)? {
                    report.restored.push(moved);
                }
            }
        }
        if report.restored.is_empty() {
            return Err(Error::Usage(format!(
                "--restore {name}: no quarantine of that name in {}",
                opened
                    .iter()
                    .map(|(_, shown, _)| escape(&shown.join(stray::QUARANTINE_DIR)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        output::emit(&report, global.format, global.color)?;
        let all_back = report.restored.iter().all(|m| m.not_moved.is_empty());
        return Ok(if all_back {
            ExitStatus::Clean
        } else {
            ExitStatus::Findings
        });
    }
    let accounts = Tree::open(root)
        .map(|t| Accounts::read(&t))
        .unwrap_or_default();
    let now = super::now()?;
    for (storage, shown, fd) in &opened {
        let Some(fd) = fd else {
            report.storages.push(StorageStray {
                storage: shown.clone(),
                exists: false,
                items: Vec::new(),
            });
            continue;
        };
        let items = stray::find(fd, storage, shown, &config.persisted, &accounts)?;
        if args.quarantine && !items.is_empty() {
            report
                .quarantined
                .push(stray::quarantine(fd, storage, shown, &items, now)?);
        }
        report.storages.push(StorageStray {
            storage: shown.clone(),
            exists: true,
            items,
        });
    }
    output::emit(&report, global.format, global.color)?;
    let left = if args.quarantine {
        report.quarantined.iter().any(|m| !m.not_moved.is_empty())
    } else {
        report.storages.iter().any(|s| !s.items.is_empty())
    };
    Ok(if left {
        ExitStatus::Findings
    } else {
        ExitStatus::Clean
    })
}
