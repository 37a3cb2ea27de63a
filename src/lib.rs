//! imperm: make NixOS impermanence safe to roll out and easy to live with.
//!
//! The library is organised by concern. Pure logic (path rules, the persisted set, lint,
//! retention, knowledge) never touches the filesystem; configuration loading, the mount
//! table and the commands are the edges where I/O happens.

pub mod backend;
pub mod baseline;
pub mod beneath;
pub mod classify;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod exit;
pub mod journal;
pub mod knowledge;
pub mod lint;
pub mod mode;
pub mod mountinfo;
pub mod nix;
pub mod nixedit;
pub mod output;
pub mod paths;
pub mod persisted;
pub mod reset;
pub mod restore;
pub mod retention;
pub mod scan;
pub mod snapshot;
pub mod suggest;
pub mod toplevel;
pub mod units;
