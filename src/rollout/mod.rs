//! The rollout: what moves state into the persistent storage and keeps it tidy there.
//! Uses the shared layer, discovery (owners) and the snapshots' names; nothing below
//! imports it.

pub mod stray;
