//! Filesystem backends behind one small trait: the subvolume operations a reset and the
//! snapshot commands need. btrfs and bcachefs speak their ioctls (no program is run), and
//! tmpfs has nothing to reset.
//!
//! All paths are relative to the filesystem's top level ([`TopLevel`]), which resolves them
//! without following symlinks.

mod bcachefs;
mod btrfs;
mod tmpfs;

use std::path::{Path, PathBuf};

pub use bcachefs::Bcachefs;
pub use btrfs::Btrfs;
pub use tmpfs::Tmpfs;

use crate::config::FsType;
use crate::error::FsError;
use crate::filesystem::toplevel::TopLevel;

/// What a path is, as far as subvolumes are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Missing,
    Subvolume,
    /// A plain directory.
    Directory,
    Symlink,
    /// A file, device, socket…
    Other,
}

/// What a [`Kind`] is, in a message.
pub fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Missing => "missing",
        Kind::Subvolume => "a subvolume",
        Kind::Directory => "a plain directory",
        Kind::Symlink => "a symlink",
        Kind::Other => "not a directory",
    }
}

/// Identity and lineage of a subvolume, as far as the backend can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubvolumeInfo {
    pub id: u64,
    pub uuid: Option<[u8; 16]>,
    /// For a snapshot: the uuid of its source.
    pub parent_uuid: Option<[u8; 16]>,
    /// Changes whenever the subvolume's content changes; `None` when unknown.
    pub generation: Option<u64>,
    /// The transaction the subvolume was created in; `None` when unknown.
    pub created: Option<u64>,
}

pub type Result<T> = std::result::Result<T, FsError>;

/// Subvolume operations. Each acts on one subvolume; recursion over nested subvolumes is
/// built on top (see `snapshot`).
pub trait Backend {
    fn fs_type(&self) -> FsType;

    /// Whether the root is a subvolume that a reset replaces (tmpfs: no).
    fn has_subvolumes(&self) -> bool {
        true
    }

    fn kind(&self, top: &TopLevel, rel: &Path) -> Result<Kind>;

    fn info(&self, top: &TopLevel, rel: &Path) -> Result<SubvolumeInfo>;

    /// Creates an empty subvolume.
    fn create(&self, top: &TopLevel, rel: &Path) -> Result<()>;

    /// Snapshots subvolume `src` to `dst` (which must not exist).
    fn snapshot(&self, top: &TopLevel, src: &Path, dst: &Path, readonly: bool) -> Result<()>;

    /// Deletes one subvolume that holds no other subvolume.
    fn delete(&self, top: &TopLevel, rel: &Path) -> Result<()>;

    /// The subvolumes directly nested in subvolume `rel`.
    fn nested(&self, top: &TopLevel, rel: &Path) -> Result<Vec<PathBuf>>;

    fn is_readonly(&self, top: &TopLevel, rel: &Path) -> Result<bool>;

    /// Whether an existing subvolume's read-only flag can be changed. Where it cannot,
    /// snapshots are made read-only when taken and cannot hold nested snapshots.
    fn can_set_readonly(&self) -> bool;

    fn set_readonly(&self, top: &TopLevel, rel: &Path, readonly: bool) -> Result<()>;

    /// Whether a snapshot records the subvolume it was taken of (btrfs: `parent_uuid`),
    /// so that "taken of this root" can be checked rather than guessed.
    fn has_lineage(&self) -> bool {
        false
    }

    /// Whether `top` is the filesystem's top level (where the root subvolume and the
    /// snapshot directory are named from); the error says what it is instead.
    fn check_top_level(&self, top: &TopLevel) -> std::result::Result<(), String>;
}

/// The backend for a filesystem type.
pub fn for_type(fs_type: FsType) -> Box<dyn Backend> {
    match fs_type {
        FsType::Btrfs => Box::new(Btrfs),
        FsType::Bcachefs => Box::new(Bcachefs),
        FsType::Tmpfs => Box::new(Tmpfs),
    }
}

/// The refusal of an operation that needs a subvolume.
fn not_a_subvolume(op: &str, rel: &Path, kind: Kind) -> FsError {
    FsError::new(
        op,
        rel,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a subvolume ({})", describe(kind)),
        ),
    )
}

/// Maps the top level's view of a path to a [`Kind`], leaving directories for the backend
/// to tell apart from subvolumes.
fn node_kind(top: &TopLevel, rel: &Path) -> Result<Option<Kind>> {
    use crate::filesystem::toplevel::Node;
    let node = top.node(rel).map_err(|e| FsError::new("inspect", rel, e))?;
    Ok(match node {
        Node::Missing => Some(Kind::Missing),
        Node::Symlink => Some(Kind::Symlink),
        Node::Other => Some(Kind::Other),
        Node::Directory => None,
    })
}

/// An errno refused by the kernel, with what it means for the operation that got it: the
/// message says that, and the errno stays for callers that judge it ([`errno`]).
#[derive(Debug)]
pub struct Refusal {
    pub errno: i32,
    pub why: &'static str,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match errno_name(self.errno) {
            Some(name) => write!(f, "{} ({name})", self.why),
            None => write!(f, "{} (errno {})", self.why, self.errno),
        }
    }
}

impl std::error::Error for Refusal {}

/// The errno behind `e`: the system call's own, or the one a [`Refusal`] explains.
pub fn errno(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Refusal>())
            .map(|r| r.errno)
    })
}

/// The symbolic name of the errnos a [`Refusal`] explains, as the kernel's headers spell
/// it (what one searches for).
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EEXIST => "EEXIST",
        libc::ENOENT => "ENOENT",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EINVAL => "EINVAL",
        libc::EROFS => "EROFS",
        libc::ENOTTY => "ENOTTY",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EXDEV => "EXDEV",
        _ => return None,
    })
}
