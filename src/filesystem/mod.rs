//! Filesystem access that more than one job needs: the subvolume backends behind one
//! small trait, and the filesystem's top level mounted privately, reached without following
//! symlinks.

pub mod backend;
pub mod toplevel;
