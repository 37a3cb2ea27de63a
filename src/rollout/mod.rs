//! The rollout: what moves state into the persistent storage and keeps it tidy there.
//! Uses the shared layer, discovery (owners) and the snapshots' names; nothing below
//! imports it. `ready` is the pure decision behind `status`'s readiness.

pub mod ready;
pub mod stray;
