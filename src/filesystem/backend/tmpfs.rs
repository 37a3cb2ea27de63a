//! A tmpfs root: empty at every boot by construction, so there is nothing to reset and no
//! old root to keep. Every subvolume operation is refused.

use std::io;
use std::path::{Path, PathBuf};

use super::{Backend, Kind, Result, SubvolumeInfo};
use crate::config::FsType;
use crate::error::FsError;
use crate::filesystem::toplevel::TopLevel;

#[derive(Debug, Default, Clone, Copy)]
pub struct Tmpfs;

fn unsupported<T>(rel: &Path) -> Result<T> {
    Err(FsError::new(
        "subvolume operation on",
        rel,
        io::Error::new(io::ErrorKind::Unsupported, "tmpfs has no subvolumes"),
    ))
}

impl Backend for Tmpfs {
    fn fs_type(&self) -> FsType {
        FsType::Tmpfs
    }

    fn has_subvolumes(&self) -> bool {
        false
    }

    fn kind(&self, _top: &TopLevel, rel: &Path) -> Result<Kind> {
        unsupported(rel)
    }

    fn info(&self, _top: &TopLevel, rel: &Path) -> Result<SubvolumeInfo> {
        unsupported(rel)
    }

    fn create(&self, _top: &TopLevel, rel: &Path) -> Result<()> {
        unsupported(rel)
    }

    fn snapshot(&self, _top: &TopLevel, src: &Path, _dst: &Path, _readonly: bool) -> Result<()> {
        unsupported(src)
    }

    fn delete(&self, _top: &TopLevel, rel: &Path) -> Result<()> {
        unsupported(rel)
    }

    fn nested(&self, _top: &TopLevel, rel: &Path) -> Result<Vec<PathBuf>> {
        unsupported(rel)
    }

    fn is_readonly(&self, _top: &TopLevel, rel: &Path) -> Result<bool> {
        unsupported(rel)
    }

    fn can_set_readonly(&self) -> bool {
        false
    }

    fn set_readonly(&self, _top: &TopLevel, rel: &Path, _readonly: bool) -> Result<()> {
        unsupported(rel)
    }

    fn check_top_level(&self, _top: &TopLevel) -> std::result::Result<(), String> {
        Err("a tmpfs root has no top level to use".into())
    }
}
