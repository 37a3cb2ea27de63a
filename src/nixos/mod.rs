//! Writing Nix: the persistence snippets every discovery command prints, and the edits
//! `persist add` makes to a host's .nix file.

pub mod nix;
pub mod nixedit;
