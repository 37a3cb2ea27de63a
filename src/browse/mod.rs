//! `imperm browse`: a terminal interface over the result `check`, `audit`, `diff` or
//! `journal` computes (the same suggestions, never a second discovery). The state is
//! [`model`] (pure, tested apart from drawing), drawn by [`view`] with ratatui; [`disk`]
//! reads the tree on demand, [`ignore`] edits `[check] ignore`. What writes (`p`, `i`,
//! `u`) is done by `commands::browse`, through the code the plain commands use.

pub mod disk;
pub mod ignore;
pub mod model;
pub mod picker;
pub mod view;
