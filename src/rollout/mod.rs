//! The rollout: what moves state into the persistent storage and keeps it tidy there, and
//! the fleet's view of many hosts. Uses the shared layer, discovery (owners) and the
//! snapshots' names; nothing below imports it.

pub mod fleet;
pub mod stray;
