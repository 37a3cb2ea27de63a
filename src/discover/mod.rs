//! Finding what a wipe would lose: the walk of the root, the host's own declarations
//! (systemd units, tmpfiles.d), the suggestions made of them, the journal's evidence, and
//! the checks of a persistence configuration.

pub mod content;
pub mod declared;
pub mod journal;
pub mod lint;
pub mod ordered;
pub mod owners;
pub mod scan;
pub mod suggest;
pub mod tmpfiles;
pub mod units;
