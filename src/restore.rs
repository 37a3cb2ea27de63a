//! Restoring files from an old-root snapshot: an exact copy (owner, mode, timestamps,
//! xattrs, symlinks as symlinks) made beside the target under a temporary name and renamed
//! into place, so that a restore killed at any point leaves either nothing or the whole
//! copy, and an existing target is never overwritten (it is kept aside under `--force`).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps, XattrFlags};

use crate::error::FsError;

/// Files and bytes a copy wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
}

/// The temporary name a copy is made under, beside its target.
pub fn temp_name(target: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(target.file_name().unwrap_or_default());
    name.push(".imperm-restore");
    target.with_file_name(name)
}

/// Copies `source` (a file, symlink or directory tree, never followed) to `target`, which
/// must not exist; then moves any existing `target` aside when `replace` names where.
pub fn restore(source: &Path, target: &Path, replace: Option<&Path>) -> Result<Copied, FsError> {
    let temp = temp_name(target);
    // Left by a restore that was killed: ours by name.
    match fs::symlink_metadata(&temp) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(&temp).map_err(|e| FsError::new("remove", &temp, e))?
        }
        Ok(_) => fs::remove_file(&temp).map_err(|e| FsError::new("remove", &temp, e))?,
        Err(_) => {}
    }
    let mut copied = Copied::default();
    copy_tree(source, &temp, &mut copied)?;
    if let Some(aside) = replace {
        fs::rename(target, aside).map_err(|e| FsError::new("move aside", target, e))?;
    }
    fs::rename(&temp, target).map_err(|e| FsError::new("rename into place", target, e))?;
    let parent = target.parent().unwrap_or(Path::new("/"));
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("sync", parent, e))?;
    Ok(copied)
}

/// Creates the missing directories above `target` below `base`, each with the owner and
/// mode of the same directory in `like` (the snapshot) when it has one.
pub fn create_parents(base: &Path, target: &Path, like: &Path) -> Result<(), FsError> {
    let Ok(rel) = target.strip_prefix(base) else {
        return Ok(());
    };
    let mut dir = base.to_path_buf();
    let mut model = like.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for component in parents {
        dir.push(component);
        model.push(component);
        if fs::symlink_metadata(&dir).is_ok() {
            continue;
        }
        fs::create_dir(&dir).map_err(|e| FsError::new("create", &dir, e))?;
        if let Ok(m) = fs::symlink_metadata(&model) {
            if m.is_dir() {
                std::os::unix::fs::lchown(&dir, Some(m.uid()), Some(m.gid()))
                    .map_err(|e| FsError::new("chown", &dir, e))?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(m.mode() & 0o7777))
                    .map_err(|e| FsError::new("chmod", &dir, e))?;
            }
        }
    }
    Ok(())
}

fn copy_tree(source: &Path, target: &Path, copied: &mut Copied) -> Result<(), FsError> {
    let meta = fs::symlink_metadata(source).map_err(|e| FsError::new("read", source, e))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let to = fs::read_link(source).map_err(|e| FsError::new("read link", source, e))?;
        std::os::unix::fs::symlink(&to, target)
            .map_err(|e| FsError::new("create link", target, e))?;
        copied.files += 1;
    } else if kind.is_dir() {
        fs::create_dir(target).map_err(|e| FsError::new("create", target, e))?;
        let mut names: Vec<OsString> = fs::read_dir(source)
            .map_err(|e| FsError::new("list", source, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| FsError::new("list", source, e))?;
        names.sort();
        for name in names {
            copy_tree(&source.join(&name), &target.join(&name), copied)?;
        }
    } else if kind.is_file() {
        let mut from = fs::File::open(source).map_err(|e| FsError::new("read", source, e))?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)
            .map_err(|e| FsError::new("create", target, e))?;
        let n = io::copy(&mut from, &mut to).map_err(|e| FsError::new("copy to", target, e))?;
        to.sync_all().map_err(|e| FsError::new("sync", target, e))?;
        copied.files += 1;
        copied.bytes += n;
    } else {
        // Devices, sockets and FIFOs are made anew by whatever uses them.
        return Ok(());
    }
    copy_xattrs(source, target)?;
    std::os::unix::fs::lchown(target, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| FsError::new("chown", target, e))?;
    if !kind.is_symlink() {
        // After chown, which clears set-id bits.
        fs::set_permissions(target, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| FsError::new("chmod", target, e))?;
    }
    // Last, so that writing children does not move a directory's mtime again.
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(rustix::fs::CWD, target, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| FsError::new("set times of", target, e.into()))?;
    Ok(())
}

fn copy_xattrs(source: &Path, target: &Path) -> Result<(), FsError> {
    let size = match rustix::fs::llistxattr_query(source) {
        Ok(n) => n,
        Err(rustix::io::Errno::OPNOTSUPP) => return Ok(()),
        Err(e) => return Err(FsError::new("list xattrs of", source, e.into())),
    };
    if size == 0 {
        return Ok(());
    }
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(source, &mut names[..])
        .map_err(|e| FsError::new("list xattrs of", source, e.into()))?;
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::OsStr::from_bytes(name);
        let len = rustix::fs::lgetxattr_query(source, name)
            .map_err(|e| FsError::new("read xattr of", source, e.into()))?;
        let mut value = vec![0u8; len];
        let len = rustix::fs::lgetxattr(source, name, &mut value[..])
            .map_err(|e| FsError::new("read xattr of", source, e.into()))?;
        rustix::fs::lsetxattr(target, name, &value[..len], XattrFlags::empty()).map_err(|e| {
            FsError::new(
                &format!("set xattr {} on", name.to_string_lossy()),
                target,
                e.into(),
            )
        })?;
    }
    Ok(())
}
