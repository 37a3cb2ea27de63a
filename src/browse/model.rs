//! The browser's state, apart from drawing and from the terminal: a tree over a command's
//! suggestions, one root per unit, whose children are read only when a node is first
//! expanded (a result of 100,000 units costs 100,000 small nodes, never a walk), the rows
//! it shows (filter by verdict, `/` search), the selection, the marks and their undo, and
//! the one question waiting for y/n. Keys go in, [`Effect`]s come out: what writes is done
//! by the caller, which reports back with [`Model::marked`] or [`Model::say`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::discover::suggest::Suggestion;
use crate::knowledge::Verdict;
use crate::paths::escape;

/// One entry of a directory, as the tree lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    pub name: OsString,
    pub dir: bool,
    pub bytes: u64,
}

/// What the model reads from the tree: a directory's entries, on demand.
pub trait Lister {
    /// The entries of the directory `path` (as seen from the host's `/`), sorted; empty
    /// when it cannot be read.
    fn list(&self, path: &Path) -> Vec<Child>;
}

/// A node of the tree: a unit (a suggestion) or something inside one.
#[derive(Debug)]
pub struct Node {
    /// As seen from the host's `/`.
    pub path: PathBuf,
    /// What the row shows: a unit's path, a child's name.
    pub label: String,
    /// The unit it is in (for a unit, itself).
    pub unit: usize,
    pub parent: Option<usize>,
    pub depth: u16,
    pub dir: bool,
    /// A child's own size (a unit has its suggestion's).
    pub bytes: u64,
    /// `None` until it is first expanded.
    children: Option<Vec<usize>>,
    pub expanded: bool,
}

/// Which verdicts the tree shows; `f` steps through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Everything but `generated`, as the plain command prints.
    Findings,
    Only(Verdict),
    All,
}

impl Filter {
    fn next(self) -> Filter {
        match self {
            Filter::Findings => Filter::Only(Verdict::Persist),
            Filter::Only(Verdict::Persist) => Filter::Only(Verdict::Review),
            Filter::Only(Verdict::Review) => Filter::Only(Verdict::Ephemeral),
            Filter::Only(Verdict::Ephemeral) => Filter::Only(Verdict::Generated),
            Filter::Only(Verdict::Generated) => Filter::All,
            Filter::All => Filter::Findings,
        }
    }

    fn shows(self, v: Verdict) -> bool {
        match self {
            Filter::Findings => v != Verdict::Generated,
            Filter::Only(w) => v == w,
            Filter::All => true,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Filter::Findings => "findings",
            Filter::Only(v) => word(v),
            Filter::All => "all",
        }
    }
}

/// Where a verdict is counted in [`Model::counts`].
pub fn verdict_index(v: Verdict) -> usize {
    match v {
        Verdict::Persist => 0,
        Verdict::Review => 1,
        Verdict::Ephemeral => 2,
        Verdict::Generated => 3,
    }
}

/// A verdict's word.
pub fn word(v: Verdict) -> &'static str {
    match v {
        Verdict::Persist => "persist",
        Verdict::Review => "review",
        Verdict::Ephemeral => "ephemeral",
        Verdict::Generated => "generated",
    }
}

/// A verdict's letter: the row says it without colour.
pub fn letter(v: Verdict) -> char {
    match v {
        Verdict::Persist => 'P',
        Verdict::Review => 'R',
        Verdict::Ephemeral => 'E',
        Verdict::Generated => 'G',
    }
}

/// A key, as the model understands it (the terminal's events are mapped onto these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Left,
    Right,
    Enter,
    Esc,
    Backspace,
    Char(char),
}

/// An action that writes, waiting for its y/n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Persist,
    Ignore,
    Undo,
    Restore,
}

/// What the caller must do after a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    /// `s`: open the picker of old roots.
    Pick,
    /// Confirmed: do `action` on `node` (for Undo: the last mark).
    Do {
        action: Action,
        node: usize,
    },
}

/// What the screen is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Typing a search.
    Search(String),
    /// A question shown on the last line; `y` confirms, anything else cancels.
    Confirm {
        action: Action,
        node: usize,
        question: String,
    },
    Help,
}

/// What was written for a mark, so that `u` can take it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undo {
    /// A file rewritten: it held `before` (`None`: it did not exist) and now holds `after`.
    File {
        path: PathBuf,
        before: Option<Vec<u8>>,
        after: Vec<u8>,
    },
    /// A suggestion collected for the snippet printed on exit (index in `collected`).
    Collected,
    /// Nothing that can be taken back (a restore: the restored data stays).
    Nothing,
}

/// A mark: something `p`, `i` or `r` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub action: Action,
    pub path: PathBuf,
    /// What it wrote, for the summary: `persist /var/lib/x into hosts/a.nix`.
    pub summary: String,
    pub undo: Undo,
}

/// Where the writing actions write, for their questions.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    /// `--nix-file`, as given; without it `p` collects the snippet printed on exit.
    pub nix_file: Option<String>,
    /// The configuration file `i` adds its glob to.
    pub config: String,
    /// The old root `r` restores from, when there is one.
    pub old_root: Option<String>,
}

pub struct Model {
    /// What is browsed: `check`, `audit`, `diff`, `journal`.
    pub command: &'static str,
    pub units: Vec<Suggestion>,
    pub nodes: Vec<Node>,
    /// The nodes shown, in order.
    pub rows: Vec<usize>,
    /// Index into `rows`.
    pub selected: usize,
    /// The first row on screen.
    pub offset: usize,
    /// Rows the tree has on screen (set by the view).
    pub height: usize,
    pub filter: Filter,
    /// The search in force (case-insensitive, on a unit's path).
    pub search: String,
    pub mode: Mode,
    pub marks: Vec<Mark>,
    /// Suggestions `p` collected without a --nix-file, for the snippet on exit.
    pub collected: Vec<Suggestion>,
    /// What the last line says when no question is asked.
    pub message: String,
    pub targets: Targets,
    /// Everything written, and taken back, in order: what `q` prints.
    pub log: Vec<String>,
    /// How many units have each verdict (persist, review, ephemeral, generated): the
    /// header shows them at every key, and the units never change.
    pub counts: [usize; 4],
    /// The units' labels in lower case, made at the first search.
    lower: Vec<String>,
    /// For the view of an old root (a tree from its `/`, nothing to act on): what the
    /// header says, which old root it is and where it is mounted.
    pub old_root_view: Option<String>,
    /// Old roots the picker mounted, `(name, mount point)`: they stay mounted after the
    /// browser ends, and the summary says how to unmount them.
    pub mounted: Vec<(String, String)>,
}

impl Model {
    pub fn new(command: &'static str, units: Vec<Suggestion>, targets: Targets) -> Model {
        let nodes = units
            .iter()
            .enumerate()
            .map(|(i, s)| Node {
                path: s.path.clone(),
                label: shown(s),
                unit: i,
                parent: None,
                depth: 0,
                dir: s.kind == crate::persisted::Kind::Directory,
                bytes: s.bytes,
                children: None,
                expanded: false,
            })
            .collect();
        let mut counts = [0; 4];
        for s in &units {
            counts[verdict_index(s.verdict)] += 1;
        }
        let mut m = Model {
            counts,
            lower: Vec::new(),
            command,
            units,
            nodes,
            rows: Vec::new(),
            selected: 0,
            offset: 0,
            height: 20,
            filter: Filter::Findings,
            search: String::new(),
            mode: Mode::Normal,
            marks: Vec::new(),
            collected: Vec::new(),
            message: String::new(),
            targets,
            log: Vec::new(),
            old_root_view: None,
            mounted: Vec::new(),
        };
        m.rebuild();
        m
    }

    /// The view of an old root's tree: one node, its `/`, expanded through `lister` (which
    /// reads the old root). `header` says which old root and where it is mounted.
    pub fn old_root(header: String, lister: &dyn Lister) -> Model {
        let root = Suggestion {
            path: PathBuf::from("/"),
            kind: crate::persisted::Kind::Directory,
            verdict: Verdict::Review,
            reason: String::new(),
            source: crate::classify::Source::Unknown,
            service: None,
            files: 0,
            bytes: 0,
            user: None,
            relative: None,
            in_initrd: false,
            mode: None,
            owner: None,
            group: None,
            parent: None,
        };
        let mut m = Model::new("old root", vec![root], Targets::default());
        m.old_root_view = Some(header);
        m.toggle(0, lister);
        m
    }

    /// The node under the cursor.
    pub fn current(&self) -> Option<usize> {
        self.rows.get(self.selected).copied()
    }

    /// The unit a node is in.
    pub fn unit_of(&self, node: usize) -> &Suggestion {
        &self.units[self.nodes[node].unit]
    }

    fn shows_unit(&self, unit: usize, needle: &str) -> bool {
        let s = &self.units[unit];
        self.filter.shows(s.verdict) && (needle.is_empty() || self.lower[unit].contains(needle))
    }

    /// Recomputes the rows, keeping the selected node where it is still shown.
    fn rebuild(&mut self) {
        let keep = self.current();
        let needle = self.search.to_lowercase();
        if !needle.is_empty() && self.lower.is_empty() {
            self.lower = (0..self.units.len())
                .map(|u| self.nodes[u].label.to_lowercase())
                .collect();
        }
        let mut rows = Vec::with_capacity(self.rows.len().max(64));
        for unit in 0..self.units.len() {
            if self.shows_unit(unit, &needle) {
                self.push_shown(unit, &mut rows);
            }
        }
        self.rows = rows;
        self.selected = keep
            .and_then(|k| self.rows.iter().position(|&r| r == k))
            .unwrap_or(0);
        self.scroll();
    }

    fn push_shown(&self, node: usize, rows: &mut Vec<usize>) {
        rows.push(node);
        let n = &self.nodes[node];
        if n.expanded {
            for &c in n.children.as_deref().unwrap_or(&[]) {
                self.push_shown(c, rows);
            }
        }
    }

    /// Keeps the selection on screen.
    pub fn scroll(&mut self) {
        let h = self.height.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + h {
            self.offset = self.selected + 1 - h;
        }
        let last = self.rows.len().saturating_sub(h);
        self.offset = self.offset.min(last);
    }

    fn select(&mut self, row: usize) {
        self.selected = row.min(self.rows.len().saturating_sub(1));
        self.scroll();
    }

    /// Expands (reading its children the first time) or collapses the node.
    fn toggle(&mut self, node: usize, lister: &dyn Lister) {
        if !self.nodes[node].dir {
            return;
        }
        if self.nodes[node].children.is_none() {
            let path = self.nodes[node].path.clone();
            let depth = self.nodes[node].depth + 1;
            let unit = self.nodes[node].unit;
            let mut ids = Vec::new();
            for child in lister.list(&path) {
                ids.push(self.nodes.len());
                self.nodes.push(Node {
                    path: path.join(&child.name),
                    label: escape(Path::new(&child.name)),
                    unit,
                    parent: Some(node),
                    depth,
                    dir: child.dir,
                    bytes: child.bytes,
                    children: None,
                    expanded: false,
                });
            }
            self.nodes[node].children = Some(ids);
        }
        self.nodes[node].expanded = !self.nodes[node].expanded;
        self.rebuild();
    }

    /// Handles one key.
    pub fn key(&mut self, key: Key, lister: &dyn Lister) -> Effect {
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Help => Effect::None,
            Mode::Confirm {
                action,
                node,
                question,
            } => {
                if matches!(key, Key::Char('y') | Key::Char('Y')) {
                    Effect::Do { action, node }
                } else {
                    let _ = question;
                    self.message = "cancelled: nothing written".into();
                    Effect::None
                }
            }
            Mode::Search(mut text) => {
                match key {
                    Key::Enter => {
                        self.message = if self.rows.is_empty() {
                            format!("no unit matches {text:?}")
                        } else {
                            format!("search: {text}")
                        };
                    }
                    Key::Esc => {
                        self.search.clear();
                        self.rebuild();
                    }
                    Key::Backspace => {
                        text.pop();
                        self.search = text.clone();
                        self.rebuild();
                        self.mode = Mode::Search(text);
                    }
                    Key::Char(c) => {
                        text.push(c);
                        self.search = text.clone();
                        self.rebuild();
                        self.mode = Mode::Search(text);
                    }
                    _ => self.mode = Mode::Search(text),
                }
                Effect::None
            }
            Mode::Normal => self.normal(key, lister),
        }
    }

    fn normal(&mut self, key: Key, lister: &dyn Lister) -> Effect {
        self.message.clear();
        if self.old_root_view.is_some() {
            match key {
                Key::Char('p' | 'i' | 'r' | 'u' | 's') => {
                    self.message =
                        "an old root is read-only: nothing to act on here (q: back)".into();
                    return Effect::None;
                }
                Key::Esc if self.search.is_empty() => return Effect::Quit,
                _ => {}
            }
        }
        let page = self.height.max(1);
        match key {
            Key::Up | Key::Char('k') => self.select(self.selected.saturating_sub(1)),
            Key::Down | Key::Char('j') => self.select(self.selected + 1),
            Key::PageUp => self.select(self.selected.saturating_sub(page)),
            Key::PageDown => self.select(self.selected + page),
            Key::Home | Key::Char('g') => self.select(0),
            Key::End | Key::Char('G') => self.select(usize::MAX),
            Key::Enter | Key::Char(' ') | Key::Right | Key::Char('l') => {
                if let Some(n) = self.current() {
                    let collapse_only = matches!(key, Key::Right | Key::Char('l'));
                    if !(collapse_only && self.nodes[n].expanded) {
                        self.toggle(n, lister);
                    }
                }
            }
            Key::Left | Key::Char('h') => {
                if let Some(n) = self.current() {
                    if self.nodes[n].expanded {
                        self.toggle(n, lister);
                    } else if let Some(p) = self.nodes[n].parent {
                        if let Some(row) = self.rows.iter().position(|&r| r == p) {
                            self.select(row);
                        }
                    }
                }
            }
            Key::Char('/') => {
                self.mode = Mode::Search(self.search.clone());
            }
            Key::Esc if !self.search.is_empty() => {
                self.search.clear();
                self.rebuild();
            }
            Key::Char('f') => {
                self.filter = self.filter.next();
                self.rebuild();
                self.message = format!("showing {}", self.filter.label());
            }
            Key::Char('?') => self.mode = Mode::Help,
            Key::Char('q') => return Effect::Quit,
            Key::Char('p') => self.ask(Action::Persist),
            Key::Char('i') => self.ask(Action::Ignore),
            Key::Char('r') => self.ask(Action::Restore),
            Key::Char('u') => self.ask(Action::Undo),
            Key::Char('s') => return Effect::Pick,
            _ => {}
        }
        Effect::None
    }

    /// Asks before `action` writes anything.
    fn ask(&mut self, action: Action) {
        let Some(node) = self.current() else {
            self.message = "nothing selected".into();
            return;
        };
        let path = escape(&self.nodes[node].path);
        let question = match action {
            Action::Persist => match &self.targets.nix_file {
                Some(file) => format!("p: persist {path} into {file}? y/n"),
                None => format!("p: add {path} to the snippet printed on exit? y/n"),
            },
            Action::Ignore => match ignore_glob(&self.nodes[node].path, self.nodes[node].dir) {
                Some(glob) => format!("i: ignore {glob} in {}? y/n", self.targets.config),
                None => {
                    self.message = format!("i: {path} is not UTF-8: no glob can name it");
                    return;
                }
            },
            Action::Restore => match &self.targets.old_root {
                Some(snap) => format!("r: restore {path} from {snap}? y/n"),
                None => {
                    self.message = "r: no old root to restore from".into();
                    return;
                }
            },
            Action::Undo => match self.marks.last() {
                Some(m) if m.undo == Undo::Nothing => {
                    self.message = format!("u: cannot undo: {}", m.summary);
                    return;
                }
                Some(m) => format!("u: undo \"{}\"? y/n", m.summary),
                None => {
                    self.message = "u: nothing to undo".into();
                    return;
                }
            },
        };
        self.mode = Mode::Confirm {
            action,
            node,
            question,
        };
    }

    /// The caller did what a confirmed action asked: records it.
    pub fn marked(&mut self, mark: Mark) {
        self.message = format!("done: {}", mark.summary);
        self.log.push(mark.summary.clone());
        self.marks.push(mark);
    }

    /// The caller took back the last mark.
    pub fn undone(&mut self) -> Option<Mark> {
        let mark = self.marks.pop()?;
        if mark.undo == Undo::Collected {
            self.collected.pop();
        }
        self.message = format!("undone: {}", mark.summary);
        self.log.push(format!("undone: {}", mark.summary));
        Some(mark)
    }

    /// Shows a message (an error from a write) on the last line.
    pub fn say(&mut self, text: String) {
        self.message = text;
    }

    /// The suggestion a node stands for: its unit, or for a node inside one, the same
    /// verdict and reason for that path (what `p` collects).
    pub fn suggestion_for(&self, node: usize) -> Suggestion {
        let n = &self.nodes[node];
        let unit = &self.units[n.unit];
        if n.parent.is_none() {
            return unit.clone();
        }
        let mut s = unit.clone();
        s.path = n.path.clone();
        s.kind = if n.dir {
            crate::persisted::Kind::Directory
        } else {
            crate::persisted::Kind::File
        };
        s.bytes = n.bytes;
        s.files = if n.dir { 0 } else { 1 };
        s.relative = match (&unit.relative, n.path.strip_prefix(&unit.path)) {
            (Some(rel), Ok(rest)) => Some(rel.join(rest)),
            _ => None,
        };
        s.parent = None;
        s
    }
}

/// How a unit's path is shown: `users.NAME: REL` for a home path, as the plain command.
pub fn shown(s: &Suggestion) -> String {
    match (&s.user, &s.relative) {
        (Some(u), Some(r)) => format!("users.{}: {}", escape(Path::new(u)), escape(r)),
        _ => escape(&s.path),
    }
}

/// The `[check] ignore` glob for a path: the path itself, and for a directory what is in
/// it too, with glob syntax in names escaped (a name may hold `*`, `[` or `,`). `None` for
/// a name that is not UTF-8: the configuration's globs are strings.
pub fn ignore_glob(path: &Path, dir: bool) -> Option<String> {
    let escaped = |text: &str| {
        let mut out = String::new();
        for c in text.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | '!' | ',') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    let text = path.to_str()?;
    Some(match (dir, text.rsplit_once('/')) {
        // The directory and everything in it, in one glob (`diff` matches every changed
        // path against the globs, not only the top of a tree); the alternation on the
        // last name, since imperm's globs start with `/`.
        (true, Some((parent, name))) if !name.is_empty() => {
            let name = escaped(name);
            format!("{}/{{{name},{name}/**}}", escaped(parent))
        }
        _ => escaped(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Source;
    use crate::persisted::Kind;
    use std::cell::Cell;
    use std::collections::BTreeMap;

    fn unit(path: &str, verdict: Verdict, kind: Kind) -> Suggestion {
        Suggestion {
            path: PathBuf::from(path),
            kind,
            verdict,
            reason: "because".into(),
            source: Source::Knowledge,
            service: None,
            files: 1,
            bytes: 10,
            user: None,
            relative: None,
            in_initrd: false,
            mode: None,
            owner: None,
            group: None,
            parent: None,
        }
    }

    /// A fake tree that counts what it was asked to list.
    #[derive(Default)]
    struct Fake {
        dirs: BTreeMap<PathBuf, Vec<Child>>,
        listed: Cell<usize>,
    }

    impl Lister for Fake {
        fn list(&self, path: &Path) -> Vec<Child> {
            self.listed.set(self.listed.get() + 1);
            self.dirs.get(path).cloned().unwrap_or_default()
        }
    }

    fn child(name: &str, dir: bool) -> Child {
        Child {
            name: name.into(),
            dir,
            bytes: 3,
        }
    }

    fn model() -> (Model, Fake) {
        let units = vec![
            unit("/var/lib/forgejo", Verdict::Persist, Kind::Directory),
            unit("/etc/machine-id", Verdict::Persist, Kind::File),
            unit("/var/lib/maybe", Verdict::Review, Kind::Directory),
            unit("/var/cache/x", Verdict::Ephemeral, Kind::Directory),
            unit("/etc/static-made", Verdict::Generated, Kind::File),
        ];
        let mut fake = Fake::default();
        fake.dirs.insert(
            "/var/lib/forgejo".into(),
            vec![child("data", true), child("app.ini", false)],
        );
        fake.dirs
            .insert("/var/lib/forgejo/data".into(), vec![child("x.db", false)]);
        (Model::new("check", units, Targets::default()), fake)
    }

    fn labels(m: &Model) -> Vec<String> {
        m.rows
            .iter()
            .map(|&r| {
                format!(
                    "{}{}",
                    "  ".repeat(m.nodes[r].depth as usize),
                    m.nodes[r].label
                )
            })
            .collect()
    }

    #[test]
    fn units_start_collapsed_and_generated_is_left_out() {
        let (m, fake) = model();
        assert_eq!(
            labels(&m),
            [
                "/var/lib/forgejo",
                "/etc/machine-id",
                "/var/lib/maybe",
                "/var/cache/x"
            ]
        );
        assert_eq!(
            fake.listed.get(),
            0,
            "nothing is read before a node is expanded"
        );
    }

    #[test]
    fn expanding_reads_children_once_and_collapsing_hides_them() {
        let (mut m, fake) = model();
        assert_eq!(m.key(Key::Enter, &fake), Effect::None);
        assert_eq!(fake.listed.get(), 1);
        assert_eq!(labels(&m)[..3], ["/var/lib/forgejo", "  data", "  app.ini"]);
        m.key(Key::Down, &fake);
        m.key(Key::Enter, &fake);
        assert_eq!(labels(&m)[2], "    x.db");
        assert_eq!(
            m.nodes[m.current().unwrap()].path,
            Path::new("/var/lib/forgejo/data")
        );
        // Left on an expanded node collapses it; again goes to the parent.
        m.key(Key::Left, &fake);
        assert_eq!(labels(&m)[2], "  app.ini");
        m.key(Key::Left, &fake);
        assert_eq!(m.selected, 0);
        m.key(Key::Enter, &fake);
        assert_eq!(labels(&m).len(), 4);
        m.key(Key::Enter, &fake);
        assert_eq!(fake.listed.get(), 2, "expanding again reads nothing");
        // A file does not expand.
        m.key(Key::Down, &fake);
        m.key(Key::Down, &fake);
        m.key(Key::Down, &fake);
        m.key(Key::Enter, &fake);
        assert_eq!(fake.listed.get(), 2);
    }

    #[test]
    fn the_filter_steps_through_the_verdicts() {
        let (mut m, fake) = model();
        m.key(Key::Char('f'), &fake);
        assert_eq!(labels(&m), ["/var/lib/forgejo", "/etc/machine-id"]);
        m.key(Key::Char('f'), &fake);
        assert_eq!(labels(&m), ["/var/lib/maybe"]);
        m.key(Key::Char('f'), &fake);
        assert_eq!(labels(&m), ["/var/cache/x"]);
        m.key(Key::Char('f'), &fake);
        assert_eq!(labels(&m), ["/etc/static-made"]);
        m.key(Key::Char('f'), &fake);
        assert_eq!(labels(&m).len(), 5);
        m.key(Key::Char('f'), &fake);
        assert_eq!(labels(&m).len(), 4);
    }

    #[test]
    fn search_narrows_as_it_is_typed_and_esc_clears_it() {
        let (mut m, fake) = model();
        m.key(Key::Down, &fake);
        m.key(Key::Char('/'), &fake);
        for c in "ETC".chars() {
            m.key(Key::Char(c), &fake);
        }
        assert_eq!(labels(&m), ["/etc/machine-id"]);
        m.key(Key::Enter, &fake);
        assert_eq!(m.mode, Mode::Normal);
        // j and k move again once the search is entered.
        m.key(Key::Char('j'), &fake);
        assert_eq!(labels(&m), ["/etc/machine-id"]);
        m.key(Key::Esc, &fake);
        assert_eq!(labels(&m).len(), 4);
        assert_eq!(m.selected, 1, "the selection stays on the same unit");
    }

    #[test]
    fn writing_asks_first_and_anything_but_y_cancels() {
        let (mut m, fake) = model();
        m.targets.nix_file = Some("hosts/a.nix".into());
        m.key(Key::Char('p'), &fake);
        assert_eq!(
            m.mode,
            Mode::Confirm {
                action: Action::Persist,
                node: 0,
                question: "p: persist /var/lib/forgejo into hosts/a.nix? y/n".into()
            }
        );
        assert_eq!(m.key(Key::Char('n'), &fake), Effect::None);
        assert_eq!(m.message, "cancelled: nothing written");
        m.key(Key::Char('p'), &fake);
        assert_eq!(
            m.key(Key::Char('y'), &fake),
            Effect::Do {
                action: Action::Persist,
                node: 0
            }
        );
    }

    #[test]
    fn undo_takes_back_the_last_mark_only_after_asking() {
        let (mut m, fake) = model();
        m.key(Key::Char('u'), &fake);
        assert_eq!(m.message, "u: nothing to undo");
        m.collected.push(m.suggestion_for(0));
        m.marked(Mark {
            action: Action::Persist,
            path: "/var/lib/forgejo".into(),
            summary: "collected /var/lib/forgejo".into(),
            undo: Undo::Collected,
        });
        m.key(Key::Char('u'), &fake);
        assert!(matches!(
            m.mode,
            Mode::Confirm {
                action: Action::Undo,
                ..
            }
        ));
        assert_eq!(
            m.key(Key::Char('y'), &fake),
            Effect::Do {
                action: Action::Undo,
                node: 0
            }
        );
        let mark = m.undone().unwrap();
        assert_eq!(mark.path, Path::new("/var/lib/forgejo"));
        assert!(m.collected.is_empty());
        assert_eq!(
            m.log,
            [
                "collected /var/lib/forgejo",
                "undone: collected /var/lib/forgejo"
            ]
        );
    }

    #[test]
    fn a_node_inside_a_home_unit_keeps_its_user() {
        let mut s = unit("/home/josh/.ssh", Verdict::Persist, Kind::Directory);
        s.user = Some("josh".into());
        s.relative = Some(".ssh".into());
        let mut fake = Fake::default();
        fake.dirs
            .insert("/home/josh/.ssh".into(), vec![child("id_ed25519", false)]);
        let mut m = Model::new("check", vec![s], Targets::default());
        assert_eq!(labels(&m), ["users.josh: .ssh"]);
        m.key(Key::Enter, &fake);
        let inner = m.suggestion_for(1);
        assert_eq!(
            inner.relative.as_deref(),
            Some(Path::new(".ssh/id_ed25519"))
        );
        assert_eq!(inner.kind, Kind::File);
    }

    #[test]
    fn ignore_globs_escape_glob_syntax_and_cover_a_directory() {
        assert_eq!(
            ignore_glob(Path::new("/var/a*b"), false).unwrap(),
            "/var/a\\*b"
        );
        assert_eq!(
            ignore_glob(Path::new("/var/c"), true).unwrap(),
            "/var/{c,c/**}"
        );
        assert_eq!(ignore_glob(Path::new("/c"), true).unwrap(), "/{c,c/**}");
        use std::os::unix::ffi::OsStrExt;
        let odd = std::ffi::OsStr::from_bytes(b"/var/\xff");
        assert_eq!(ignore_glob(Path::new(odd), true), None);
        let glob = globset::GlobBuilder::new(&ignore_glob(Path::new("/v/[x],y"), true).unwrap())
            .literal_separator(true)
            .build()
            .unwrap()
            .compile_matcher();
        assert!(glob.is_match("/v/[x],y"));
        assert!(glob.is_match("/v/[x],y/deep/file"));
        assert!(!glob.is_match("/v/x,y"));
        assert!(!glob.is_match("/v/[x]"));
    }

    #[test]
    fn a_hundred_thousand_units_scroll_without_reading_anything() {
        let units: Vec<Suggestion> = (0..100_000)
            .map(|i| {
                unit(
                    &format!("/var/lib/s{i:06}"),
                    Verdict::Review,
                    Kind::Directory,
                )
            })
            .collect();
        let fake = Fake::default();
        let mut m = Model::new("audit", units, Targets::default());
        m.height = 20;
        m.key(Key::End, &fake);
        assert_eq!(m.selected, 99_999);
        assert_eq!(m.offset, 99_980);
        m.key(Key::PageUp, &fake);
        assert_eq!(m.selected, 99_979);
        assert_eq!(fake.listed.get(), 0);
    }

    #[test]
    fn s_asks_for_the_picker_and_an_old_roots_tree_acts_on_nothing() {
        let (mut m, fake) = model();
        assert_eq!(m.key(Key::Char('s'), &fake), Effect::Pick);
        let mut fake = Fake::default();
        fake.dirs
            .insert("/".into(), vec![child("etc", true), child("notes", false)]);
        let mut old = Model::old_root("old root X".into(), &fake);
        // Its `/` is open: its entries are the rows.
        let rows: Vec<String> = old
            .rows
            .iter()
            .map(|&r| old.nodes[r].label.clone())
            .collect();
        assert_eq!(rows, ["/", "etc", "notes"]);
        for k in ['p', 'i', 'r', 'u', 's'] {
            assert_eq!(old.key(Key::Char(k), &fake), Effect::None);
            assert_eq!(old.mode, Mode::Normal, "{k} asks nothing");
            assert!(old.message.contains("read-only"), "{k}: {}", old.message);
        }
        // Esc clears a search first, then goes back.
        old.key(Key::Char('/'), &fake);
        old.key(Key::Char('n'), &fake);
        old.key(Key::Enter, &fake);
        assert_eq!(old.key(Key::Esc, &fake), Effect::None);
        assert_eq!(old.key(Key::Esc, &fake), Effect::Quit);
        assert_eq!(old.key(Key::Char('q'), &fake), Effect::Quit);
    }
}
