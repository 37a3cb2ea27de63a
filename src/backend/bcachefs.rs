//! bcachefs, through the `bcachefs subvolume create|delete|snapshot` program (there are no
//! stable ioctls to call from here). Facts this relies on (DESIGN.md, checked on a real
//! bcachefs): `delete` follows symlinks, so every path handed to it has been resolved
//! beneath the top level without any; a destination with a trailing slash fails; subvolumes
//! are told apart by statx's `stx_subvol`, not by stat; a read-only snapshot shows nothing in
//! its mode bits, only writes fail with EROFS; and the read-only flag is set only when a
//! snapshot is taken.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{Mode, StatxFlags};

use super::{Backend, Kind, Result, SubvolumeInfo, node_kind, not_a_subvolume};
use crate::config::FsType;
use crate::error::FsError;
use crate::paths::escape;
use crate::toplevel::{TopLevel, statx};

/// `STATX_SUBVOL` (Linux 6.10): ask for `stx_subvol`.
const STATX_SUBVOL: StatxFlags = StatxFlags::from_bits_retain(0x8000);

/// bcachefs through its command-line tool.
#[derive(Debug, Clone)]
pub struct Bcachefs {
    program: OsString,
}

impl Default for Bcachefs {
    fn default() -> Bcachefs {
        Bcachefs {
            program: OsString::from("bcachefs"),
        }
    }
}

impl Bcachefs {
    fn subvol_id(&self, top: &TopLevel, rel: &Path) -> Result<u64> {
        let st = statx(top, rel, STATX_SUBVOL).map_err(|e| FsError::new("statx", rel, e))?;
        if st.stx_mask & STATX_SUBVOL.bits() == 0 {
            return Err(FsError::new(
                "statx",
                rel,
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel does not report subvolume ids (statx STATX_SUBVOL, Linux 6.10)",
                ),
            ));
        }
        Ok(st.stx_subvol)
    }

    /// Runs `bcachefs subvolume ARGS…`; its `Error: … Caused by: …` becomes one line.
    fn run(&self, op: &str, rel: &Path, args: &[&std::ffi::OsStr]) -> Result<()> {
        let output = Command::new(&self.program)
            .arg("subvolume")
            .args(args)
            .output()
            .map_err(|e| {
                FsError::new(
                    &format!("run {} for", self.program.to_string_lossy()),
                    rel,
                    e,
                )
            })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = crate::config::one_line(&stderr);
        Err(FsError::new(
            op,
            rel,
            io::Error::other(if message.is_empty() {
                format!("bcachefs exited with {}", output.status)
            } else {
                message
            }),
        ))
    }

    /// The absolute path of `rel` after checking it resolves beneath the top level with no
    /// symlink anywhere (the program would follow one).
    fn checked_path(&self, top: &TopLevel, rel: &Path) -> Result<PathBuf> {
        top.node(rel).map_err(|e| FsError::new("resolve", rel, e))?;
        if let Some(parent) = rel.parent() {
            top.open_dir(parent)
                .map_err(|e| FsError::new("resolve", parent, e))?;
        }
        let path = top.join(rel);
        // A trailing slash makes the program fail with ENOENT; `join` never adds one, but
        // a name ending in `/` cannot come from a component either.
        debug_assert!(!path.as_os_str().as_bytes().ends_with(b"/"));
        Ok(path)
    }
}

impl Backend for Bcachefs {
    fn fs_type(&self) -> FsType {
        FsType::Bcachefs
    }

    fn kind(&self, top: &TopLevel, rel: &Path) -> Result<Kind> {
        if let Some(kind) = node_kind(top, rel)? {
            return Ok(kind);
        }
        let Some(parent) = rel.parent() else {
            return Ok(Kind::Subvolume);
        };
        let own = self.subvol_id(top, rel)?;
        let parents = self.subvol_id(top, parent)?;
        Ok(if own != parents {
            Kind::Subvolume
        } else {
            Kind::Directory
        })
    }

    fn info(&self, top: &TopLevel, rel: &Path) -> Result<SubvolumeInfo> {
        Ok(SubvolumeInfo {
            id: self.subvol_id(top, rel)?,
            ..SubvolumeInfo::default()
        })
    }

    fn create(&self, top: &TopLevel, rel: &Path) -> Result<()> {
        let path = self.checked_path(top, rel)?;
        self.run(
            "create subvolume",
            rel,
            &["create".as_ref(), path.as_os_str()],
        )
    }

    fn snapshot(&self, top: &TopLevel, src: &Path, dst: &Path, readonly: bool) -> Result<()> {
        match self.kind(top, src)? {
            Kind::Subvolume => {}
            other => return Err(not_a_subvolume("snapshot", src, other)),
        }
        let source = self.checked_path(top, src)?;
        let dest = self.checked_path(top, dst)?;
        let mut args: Vec<&std::ffi::OsStr> = vec!["snapshot".as_ref()];
        if readonly {
            args.push("-r".as_ref());
        }
        args.push(source.as_os_str());
        args.push(dest.as_os_str());
        self.run(&format!("snapshot {} to", escape(src)), dst, &args)
    }

    fn delete(&self, top: &TopLevel, rel: &Path) -> Result<()> {
        // `bcachefs subvolume delete` follows symlinks: only a path that is itself a
        // subvolume, reached without a symlink, is ever handed to it.
        match self.kind(top, rel)? {
            Kind::Subvolume if rel.parent().is_some() => {}
            other => return Err(not_a_subvolume("delete subvolume", rel, other)),
        }
        let path = self.checked_path(top, rel)?;
        self.run(
            "delete subvolume",
            rel,
            &["delete".as_ref(), path.as_os_str()],
        )
    }

    fn nested(&self, top: &TopLevel, rel: &Path) -> Result<Vec<PathBuf>> {
        // Without `subvolume list` (tools 1.37), nested subvolumes are found by walking the
        // directories and comparing subvolume ids; a nested one is not descended into.
        let own = self.subvol_id(top, rel)?;
        let mut found = Vec::new();
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let fd = top
                .open_dir(&dir)
                .map_err(|e| FsError::new("list", &dir, e))?;
            let mut entries = rustix::fs::Dir::read_from(&fd)
                .map_err(|e| FsError::new("list", &dir, e.into()))?;
            while let Some(entry) = entries.read() {
                let entry = entry.map_err(|e| FsError::new("list", &dir, e.into()))?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let is_dir = match entry.file_type() {
                    rustix::fs::FileType::Directory => true,
                    rustix::fs::FileType::Unknown => {
                        let child = dir.join(std::ffi::OsStr::from_bytes(name));
                        top.node(&child)
                            .map_err(|e| FsError::new("inspect", &child, e))?
                            == crate::toplevel::Node::Directory
                    }
                    _ => false,
                };
                if !is_dir {
                    continue;
                }
                let child = dir.join(std::ffi::OsStr::from_bytes(name));
                if self.subvol_id(top, &child)? != own {
                    found.push(child);
                } else {
                    stack.push(child);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    fn is_readonly(&self, top: &TopLevel, rel: &Path) -> Result<bool> {
        // Nothing in the mode bits says so: try to create a directory and see EROFS.
        let dir = top
            .open_dir(rel)
            .map_err(|e| FsError::new("open", rel, e))?;
        // A name no other probe has: one a killed run left (same pid, later) would answer
        // EEXIST, which the kernel gives before it looks whether the subvolume is writable.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..8u32 {
            let probe = format!(
                ".imperm-rw-probe-{}-{nanos:x}-{attempt}",
                std::process::id()
            );
            match rustix::fs::mkdirat(&dir, probe.as_str(), Mode::from_raw_mode(0o700)) {
                Err(rustix::io::Errno::ROFS) => return Ok(true),
                Err(rustix::io::Errno::EXIST) => continue,
                Ok(()) => {
                    rustix::fs::unlinkat(&dir, probe.as_str(), rustix::fs::AtFlags::REMOVEDIR)
                        .map_err(|e| FsError::new("remove probe in", rel, e.into()))?;
                    return Ok(false);
                }
                Err(e) => return Err(FsError::new("probe read-only", rel, e.into())),
            }
        }
        Err(FsError::new(
            "probe read-only",
            rel,
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    fn can_set_readonly(&self) -> bool {
        false
    }

    /// bcachefs mounts only whole filesystems: its top level is a mount that shows the
    /// filesystem's root `/`. A subvolume reached through `X-mount.subdir=` or a bind
    /// mount shows its own path there (`/@root`), and a directory inside a mount is no
    /// mount's root at all.
    fn check_top_level(&self, top: &TopLevel) -> std::result::Result<(), String> {
        let shows = top.mount_shows()?;
        if shows != Path::new("/") {
            return Err(format!(
                "is a mount of {} of its filesystem, not of the top level (mount the device itself)",
                escape(&shows)
            ));
        }
        Ok(())
    }

    fn set_readonly(&self, _top: &TopLevel, rel: &Path, _readonly: bool) -> Result<()> {
        Err(FsError::new(
            "set read-only",
            rel,
            io::Error::new(
                io::ErrorKind::Unsupported,
                "bcachefs sets read-only only when a snapshot is taken",
            ),
        ))
    }
}
