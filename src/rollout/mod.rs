//! The rollout: what moves state into the persistent storage and keeps it tidy there —
//! the live root's declared state copied into the storage (`migrate`, on restore's exact
//! copy), what the storage holds that nothing declares (`stray`), and whether a host may
//! take its first ephemeral boot (`ready`, the pure decision behind `status`). Uses the
//! shared layer, discovery (units, owners), recovery (restore's copy) and the snapshots'
//! names; nothing below imports it.

pub mod migrate;
pub mod ready;
pub mod stray;
pub mod survey;
