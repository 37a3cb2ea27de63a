//! The rollout: what moves state into the persistent storage and keeps it tidy there —
//! the live root's declared state copied into the storage (`migrate`, on restore's exact
//! copy), what the storage holds that nothing declares (`stray`), and whether a host may
//! take its first ephemeral boot (`ready`, the pure decision behind `status`), and the
//! fleet's view of many hosts (`fleet`). Uses the
//! shared layer, discovery (units, owners), recovery (restore's copy) and the snapshots'
//! names; nothing below imports it.

pub mod fleet;
pub mod migrate;
pub mod ready;
pub mod record;
pub mod stray;
pub mod survey;

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Error, FsError};

/// Takes a storage's own lock (held while `fd` is open), shared by every command that
/// changes what a storage holds: two of them never interleave there. Refuses instead of
/// waiting.
pub fn lock_storage(fd: &OwnedFd, shown: &Path) -> Result<(), Error> {
    rustix::fs::flock(fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        if e == rustix::io::Errno::WOULDBLOCK {
            Error::Usage(format!(
                "storage {}: another imperm (migrate, stray or restore) holds its lock; nothing was done",
                crate::paths::escape(shown)
            ))
        } else {
            FsError::new("lock", shown, e.into()).into()
        }
    })
}
