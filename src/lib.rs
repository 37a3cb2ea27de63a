//! imperm: make NixOS impermanence safe to roll out and easy to live with.
//!
//! The library is organised by concern. Pure logic (path rules, the persisted set, lint,
//! retention, knowledge) never touches the filesystem; configuration loading, the mount
//! table and the commands are the edges where I/O happens.

pub mod baseline;
pub mod beneath;
pub mod browse;
pub mod classify;
pub mod cli;
pub mod commands;
pub mod config;
pub mod discover;
pub mod error;
pub mod exit;
pub mod filesystem;
pub mod knowledge;
pub mod mode;
pub mod mountinfo;
#[cfg(test)]
pub(crate) mod mutate;
pub mod nixos;
pub mod output;
pub mod paths;
pub mod persisted;
pub mod recover;
pub mod retention;
pub mod rollout;
pub mod snapshots;
pub mod words;
