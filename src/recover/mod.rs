//! Bringing state back from an old root.

pub mod restore;
