//! The rollout of impermanence on a live host: its declared state copied into the
//! persistent storage (`migrate`). Uses the discovery (units), the recovery (restore's
//! exact copy) and the shared layer; nothing below it uses it.

pub mod migrate;
pub mod survey;
