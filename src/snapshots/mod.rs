//! Old roots: the boot-time reset that keeps the previous root as a read-only snapshot, and
//! listing and garbage-collecting those snapshots.

pub mod mount;
pub mod reset;
pub mod snapshot;
