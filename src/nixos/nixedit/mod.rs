//! Editing a host's .nix file in place: adding entries to `environment.persistence` (or,
//! in a host that uses imperm's own module, to `services.imperm`), keeping every other byte
//! as it was. Pure: text in, text out.
//!
//! The file is bounded ([`bounds`]), parsed losslessly (rnix), and every place an entry
//! can already be declared is found ([`model`]): an entry declared anywhere (any storage,
//! a user's home, imperm's server template) is not added again, and one declared as the
//! other kind is refused. New entries go into the literal list the host already has for
//! them (through `lib.mkIf`/`mkMerge`, on the left of `++`), or into a new binding in the
//! deepest attribute set on the way to it. Whatever cannot be seen or resolved statically
//! (a computed list, an `inherit`, a `${…}` name that is not bound in a `let` to a string,
//! a flake-parts or home-manager module that does not say which NixOS module to edit) is
//! refused with the snippet to add by hand; so is a binding that Nix would reject beside
//! what is there (a second definition of a computed name).

mod bounds;
mod insert;
mod model;
mod resolve;

use rnix::SyntaxNode;
use rnix::ast::{self, HasEntry};
use rowan::ast::AstNode;

use std::path::Path;

use crate::nixos::nix::{Style, attr_name, string};
use crate::paths::{escape, normalize_absolute, normalize_relative};
use crate::persisted::Kind;
use model::{Family, Found, Key, ListDef, Other, OtherKind, Site};

pub use bounds::{MAX_BYTES, MAX_NESTING};

/// Which list entries go into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Directories,
    Files,
}

impl List {
    fn name(self) -> &'static str {
        match self {
            List::Directories => "directories",
            List::Files => "files",
        }
    }

    fn field(self) -> &'static str {
        match self {
            List::Directories => "directory",
            List::Files => "file",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            List::Directories => "a directory",
            List::Files => "a file",
        }
    }

    fn from_name(name: &str) -> List {
        if name == "files" {
            List::Files
        } else {
            List::Directories
        }
    }
}

/// What to add.
#[derive(Clone, Debug)]
pub struct Request {
    /// The storage path asked for; `None` when not given: the one storage the host
    /// declares, else [`DEFAULT_STORAGE`].
    pub storage: Option<String>,
    pub user: Option<String>,
    pub list: List,
    /// Absolute paths, or for a user paths relative to the home directory, normalised.
    pub entries: Vec<String>,
}

/// The storage used when none is given and the host declares none, or several with this
/// one among them.
pub const DEFAULT_STORAGE: &str = "/persist";

impl Request {
    /// The snippet a person adds to a host configuration by hand: `entries` in
    /// `environment.persistence`.
    pub fn snippet(&self) -> String {
        let storage = self.storage.as_deref().unwrap_or(DEFAULT_STORAGE);
        let items: Vec<String> = self.entries.iter().map(|e| string(e)).collect();
        snippet(&self.path(Family::Impermanence, storage), &items)
    }

    /// Where the list is: `environment.persistence."<storage>"[.users.NAME].<list>`,
    /// `preservation.preserveAt.…` alike, or `services.imperm[.users.NAME].<list>`.
    fn path(&self, family: Family, storage: &str) -> Vec<String> {
        let mut p: Vec<String> = family.root().iter().map(|s| s.to_string()).collect();
        if family.has_storages() {
            p.push(storage.to_string());
        }
        if let Some(user) = &self.user {
            p.push("users".into());
            p.push(user.clone());
        }
        p.push(self.list.name().into());
        p
    }
}

/// `a.b."c" = [ … ];` for a person to paste; `items` are Nix expressions.
fn snippet(path: &[String], items: &[String]) -> String {
    let keys: Vec<String> = path.iter().map(|k| attr_name(k)).collect();
    let items: String = items.iter().map(|e| format!("  {e}\n")).collect();
    format!("{} = [\n{items}];\n", keys.join("."))
}

/// An entry as a list item of `family`, spelled as `--format nix` spells it: for
/// preservation, a file that must be in place before stage 2 (`/etc/machine-id`) gets
/// `inInitrd = true` (preservation mounts it too late otherwise).
fn item(family: Family, list: List, abs: &str, entry: &str) -> String {
    let (kind, style) = (
        match list {
            List::Directories => Kind::Directory,
            List::Files => Kind::File,
        },
        match family {
            Family::Preservation => Style::Preservation,
            _ => Style::Impermanence,
        },
    );
    let in_initrd = crate::knowledge::builtin()
        .paths
        .iter()
        .any(|k| k.in_initrd && k.path.matches(Path::new(abs)));
    let attrs = crate::nixos::nix::Attrs {
        in_initrd,
        ..Default::default()
    };
    crate::nixos::nix::list_item(entry, kind, &attrs, style)
}

/// What an edit came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every entry is declared already (or inside a directory the storage persists).
    Unchanged {
        present: Vec<String>,
        /// The storage the entries were looked for in.
        storage: String,
        notes: Vec<String>,
    },
    Edited {
        text: String,
        added: Vec<String>,
        present: Vec<String>,
        /// The storage the entries were added to.
        storage: String,
        /// What the person should know (the storage chosen when none was given, a
        /// computed part of the list, which may hold an entry imperm cannot see, an entry
        /// declared conditionally or covered by a persisted directory).
        notes: Vec<String>,
    },
    /// The entries cannot be added safely; `reason` says why (one line, naming the line of
    /// the file at fault), `snippet` is what to add by hand (the missing entries only).
    Refused {
        reason: String,
        snippet: String,
        present: Vec<String>,
    },
}

/// The stack the work runs on, whatever the caller's. rnix's parser and the tree's
/// destructor recurse as deep as the file nests; [`bounds`] bounds that nesting, and at
/// its bound the deepest shapes need at most 2 MiB in a debug build (512 nested lambdas,
/// rnix's own bound; measured, see the README): sixteen times that.
const STACK: usize = 32 << 20;

/// Adds the entries. `Err` (one line) when the file is not Nix, is beyond the bounds, an
/// entry is declared already as the other kind, or no storage was given and the host
/// declares several.
pub fn add(text: &str, req: &Request) -> Result<Outcome, String> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("nixedit".into())
            .stack_size(STACK)
            .spawn_scoped(scope, || add_here(text, req))
            .map_err(|e| format!("cannot start the editor's thread: {e}"))?;
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn add_here(text: &str, req: &Request) -> Result<Outcome, String> {
    bounds::check(text)?;
    let parsed = rnix::Root::parse(text);
    if let Some(e) = parsed.errors().first() {
        return Err(format!("not valid Nix: {}", parse_error(text, e)));
    }
    let root = parsed.tree();
    let found = model::find(&root);
    let plan = plan(text, &found, req)?;
    Ok(match plan {
        Plan::Unchanged {
            present,
            storage,
            notes,
        } => Outcome::Unchanged {
            present,
            storage,
            notes,
        },
        Plan::Refuse {
            reason,
            snippet,
            present,
        } => Outcome::Refused {
            reason,
            snippet,
            present,
        },
        Plan::Edit {
            edit,
            items,
            added,
            present,
            storage,
            notes,
        } => {
            let eol = insert::eol(text);
            let edited = match edit {
                Edit::List(list) => insert::into_list(text, &list, &items, eol),
                Edit::Binding { set, key } => insert::binding(text, &set, &key, &items, eol),
            };
            // The result must still be Nix; anything else is a defect here, never written.
            let reparsed = rnix::Root::parse(&edited);
            if let Some(e) = reparsed.errors().first() {
                return Err(format!(
                    "the edited file would not be valid Nix ({}); nothing was written",
                    parse_error(&edited, e)
                ));
            }
            Outcome::Edited {
                text: edited,
                added,
                present,
                storage,
                notes,
            }
        }
    })
}

/// rnix's error, with the line of the offset it names.
fn parse_error(text: &str, e: &rnix::ParseError) -> String {
    use rnix::ParseError::*;
    let at = match e {
        Unexpected(r)
        | UnexpectedExtra(r)
        | UnexpectedWanted(_, r, _)
        | UnexpectedDoubleBind(r)
        | DuplicatedArgs(r, _) => Some(usize::from(r.start())),
        _ => None,
    };
    match at {
        Some(at) => format!("line {}: {e}", line_at(text, at)),
        None => e.to_string(),
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn line_of(text: &str, node: &SyntaxNode) -> usize {
    line_at(text, usize::from(node.text_range().start()))
}

/// The binding a set is the value of (or the set itself), for messages.
fn binding_of(set: &SyntaxNode) -> SyntaxNode {
    set.ancestors()
        .find(|n| n.kind() == rnix::SyntaxKind::NODE_ATTRPATH_VALUE)
        .unwrap_or_else(|| set.clone())
}

/// "line 7: `environment.persistence.… = dirs;`"
fn place(text: &str, node: &SyntaxNode) -> String {
    format!("line {}: `{}`", line_of(text, node), model::excerpt(node))
}

/// A path found in the file as written for a person: `a.b.c`, `?` for a name that cannot
/// be known.
fn dotted(path: &[Key]) -> String {
    path.iter()
        .map(|k| k.name.as_deref().map_or("?".to_string(), attr_name))
        .collect::<Vec<_>>()
        .join(".")
}

/// A path from the file in a message: the one escaped form.
fn shown(path: &str) -> String {
    escape(Path::new(path))
}

enum Edit {
    List(ast::List),
    Binding { set: ast::AttrSet, key: String },
}

enum Plan {
    Unchanged {
        present: Vec<String>,
        storage: String,
        notes: Vec<String>,
    },
    Edit {
        edit: Edit,
        /// The entries added, as list items.
        items: Vec<String>,
        added: Vec<String>,
        present: Vec<String>,
        storage: String,
        notes: Vec<String>,
    },
    Refuse {
        reason: String,
        snippet: String,
        present: Vec<String>,
    },
}

/// Where a list definition is: whose, which user's, which list.
#[derive(Clone, Debug)]
struct Place {
    family: Family,
    /// The storage's name as written; `None` for `services.imperm`.
    storage: Option<Key>,
    user: Option<Key>,
    list: List,
}

fn place_of(path: &[Key]) -> Option<Place> {
    let family = Family::of(path)?;
    let (storage, rest) = if family.has_storages() {
        (Some(path.get(2)?.clone()), &path[3..])
    } else {
        (None, &path[2..])
    };
    let (user, list) = match rest {
        [list] => (None, list),
        [users, user, list] if users.name.as_deref() == Some("users") => (Some(user.clone()), list),
        _ => return None,
    };
    Some(Place {
        family,
        storage,
        user,
        list: List::from_name(list.name.as_deref()?),
    })
}

/// An entry already declared somewhere.
struct Known {
    /// Absolute (user entries joined to the home directory), normalised.
    path: String,
    list: List,
    /// The storage's path, when it is known.
    storage: Option<String>,
    /// Under a condition of its own.
    conditional: bool,
    /// Declared through an option of the host's own (its path), not a known one.
    through: Option<String>,
    /// Where, for messages: the item, or `None` for imperm's server template. Its line is
    /// counted only when a message names it (counting for every entry would take time
    /// quadratic in the file's size).
    at: Option<SyntaxNode>,
}

impl Known {
    /// "line 7", "imperm's server template".
    fn at(&self, text: &str) -> String {
        match &self.at {
            Some(node) => format!("line {}", line_of(text, node)),
            None => "imperm's server template".to_string(),
        }
    }
}

/// A requested entry as an absolute path (a user's joined to the home directory).
fn absolute(req: &Request, home: &str, entry: &str) -> String {
    match &req.user {
        Some(_) => format!("{}/{entry}", home.trim_end_matches('/')),
        None => entry.to_string(),
    }
}

fn normal_abs(s: &str) -> Option<String> {
    normalize_absolute(s)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn normal_rel(s: &str) -> Option<String> {
    normalize_relative(s)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Whether `path` is below the directory `dir` (both normalised).
fn inside(path: &str, dir: &str) -> bool {
    dir == "/" && path != "/"
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A storage's path: its `persistentStoragePath` when it has one, else its name.
/// `None` when that cannot be known.
fn storage_path(found: &Found, group: usize, family: Family, key: &Key) -> Option<String> {
    match found.storage_path_of(group, family, key) {
        Some(s) => s
            .value
            .as_deref()
            .map(|v| normal_abs(v).unwrap_or(v.to_string())),
        None => {
            let name = key.name.as_deref()?;
            Some(normal_abs(name).unwrap_or(name.to_string()))
        }
    }
}

/// The home directory of a user of a storage: its `home`, else NixOS's default (`/root`
/// for root, `/home/NAME` for others).
fn home_of(found: &Found, storage: Option<(Family, &Key)>, user: &str) -> Option<String> {
    match storage.and_then(|(f, k)| found.home_of(f, k, user)) {
        Some(s) => s.value.clone(),
        None if user == "root" => Some("/root".to_string()),
        None => Some(format!("/home/{user}")),
    }
}

fn uses_imperm(found: &Found, group: usize) -> bool {
    found.uses(group, |f| f == Family::Imperm)
}

/// imperm's `persistentStoragePath` (default `/persist`), or `None` when it cannot be known.
fn imperm_storage(found: &Found, group: usize) -> Option<String> {
    let own = found.scalars.iter().find(|s| {
        s.group == group
            && s.path.len() == 3
            && s.path[1].name.as_deref() == Some("imperm")
            && s.path[2].name.as_deref() == Some("persistentStoragePath")
    });
    match own {
        Some(s) => s
            .value
            .as_deref()
            .map(|v| normal_abs(v).unwrap_or(v.to_string())),
        None => Some(DEFAULT_STORAGE.to_string()),
    }
}

/// Whether imperm's server template is in use (it is unless `template = "none"`).
fn imperm_template(found: &Found, group: usize) -> bool {
    !found.scalars.iter().any(|s| {
        s.group == group
            && s.path.len() == 3
            && s.path[1].name.as_deref() == Some("imperm")
            && s.path[2].name.as_deref() == Some("template")
            && s.value.as_deref() == Some("none")
    })
}

/// The entries of one list definition, as [`Known`]s.
fn entries_of(found: &Found, def: &ListDef, out: &mut Vec<Known>) {
    let Some(place) = place_of(&def.path) else {
        return;
    };
    let storage = match &place.storage {
        Some(k) => storage_path(found, def.group, place.family, k),
        None => imperm_storage(found, def.group),
    };
    let home = match &place.user {
        None => None,
        Some(user) => match user.name.as_deref() {
            Some(name) => home_of(
                found,
                place.storage.as_ref().map(|k| (place.family, k)),
                name,
            ),
            None => return,
        },
    };
    for entry in &def.entries {
        let path = match &home {
            None => normal_abs(&entry.path),
            // `"."` (or `"./"`) is the home directory itself.
            Some(home) if entry.path.split('/').all(|c| c.is_empty() || c == ".") => {
                Some(home.clone())
            }
            Some(home) => normal_rel(&entry.path).map(|rel| format!("{home}/{rel}")),
        };
        if let Some(path) = path.and_then(|p| normal_abs(&p)) {
            out.push(Known {
                path,
                list: place.list,
                storage: storage.clone(),
                conditional: entry.conditional,
                through: None,
                at: Some(entry.at.clone()),
            });
        }
    }
}

/// Every entry the host declares, in any of the file's modules (not other systems'), in
/// any storage or user, in imperm's template, and in lists of the host's own options.
fn known_entries(found: &Found, group: usize) -> Vec<Known> {
    let mut out = Vec::new();
    for def in found.lists.iter().filter(|d| !found.is_other(d.group)) {
        entries_of(found, def, &mut out);
    }
    for f in found.foreign.iter().filter(|f| !found.is_other(f.group)) {
        let Some(list) = f.list else { continue };
        for entry in &f.entries {
            if let Some(path) = normal_abs(&entry.path) {
                out.push(Known {
                    path,
                    list,
                    storage: None,
                    conditional: entry.conditional,
                    through: Some(dotted(&f.path)),
                    at: Some(entry.at.clone()),
                });
            }
        }
    }
    if uses_imperm(found, group) && imperm_template(found, group) {
        for entry in crate::config::template_entries() {
            out.push(Known {
                path: entry.path.to_string_lossy().into_owned(),
                list: match entry.kind {
                    Kind::Directory => List::Directories,
                    Kind::File => List::Files,
                },
                storage: imperm_storage(found, group),
                conditional: false,
                through: None,
                at: None,
            });
        }
    }
    out
}

/// Specialisations built on the host's configuration that declare persistence.
fn inheriting_specialisations(found: &Found) -> Vec<&Other> {
    let specs = found
        .other
        .iter()
        .filter(|o| o.kind == OtherKind::Specialisation { inherits: true });
    if specs.clone().next().is_none() {
        return Vec::new();
    }
    let declaring = found.declaring();
    specs.filter(|o| declaring[o.group]).collect()
}

/// Which module group of the file to edit: the top-level module when it declares
/// persistence; else the one module nested in the file that does (a flake-parts
/// `flake.modules.nixos.*`, a wrapper's `….nixos = { … }`), or the one of those that
/// declares this storage; else the top-level module, unless it is not a NixOS module.
/// Other systems' configurations (containers, specialisations) are never the host's.
fn group_to_edit(text: &str, found: &Found, storage: &str) -> Result<usize, String> {
    if let Some(at) = &found.no_module {
        return Err(format!(
            "no attribute set to edit: the file's value is not a module ({})",
            place(text, at)
        ));
    }
    let home_manager = |g: usize| found.home_manager.iter().find(|(h, _)| *h == g);
    let declaring = found.declaring();
    let chosen = if declaring[0] {
        0
    } else {
        let candidates: Vec<usize> = (1..found.groups)
            .filter(|&g| declaring[g] && !found.is_other(g) && home_manager(g).is_none())
            .collect();
        // Candidates with a list of this storage, in one pass over the lists.
        let mut is_candidate = vec![false; found.groups];
        for &g in &candidates {
            is_candidate[g] = true;
        }
        let mut matches = vec![false; found.groups];
        for d in &found.lists {
            let g = d.group;
            if g >= found.groups || !is_candidate[g] || matches[g] {
                continue;
            }
            matches[g] = place_of(&d.path).is_some_and(|p| match &p.storage {
                Some(k) => storage_path(found, g, p.family, k).as_deref() == Some(storage),
                None => imperm_storage(found, g).as_deref() == Some(storage),
            });
        }
        let matching: Vec<usize> = candidates.iter().copied().filter(|&g| matches[g]).collect();
        let wrapper = found
            .flake
            .as_ref()
            .map(|at| format!("a flake or flake-parts file ({})", place(text, at)))
            .unwrap_or_else(|| "a file".to_string());
        match (candidates.as_slice(), matching.as_slice()) {
            (_, [one]) | ([one], []) => *one,
            ([], _) if found.flake.is_some() => {
                return Err(format!(
                    "{wrapper} with no NixOS module in it that declares persistence, so which one is the host's is not clear"
                ));
            }
            ([], _) => 0,
            _ => {
                return Err(format!(
                    "{wrapper} with several modules in it that declare persistence, so which one to edit is not clear"
                ));
            }
        }
    };
    if let Some((_, at)) = home_manager(chosen) {
        return Err(format!(
            "a home-manager module ({}), not a NixOS one; the snippet is for the host's NixOS configuration",
            place(text, at)
        ));
    }
    if found.unsure.contains(&chosen) {
        let at = found
            .lists
            .iter()
            .find(|d| d.group == chosen)
            .map(|d| place(text, &d.at))
            .unwrap_or_default();
        return Err(format!(
            "persistence is declared inside a function that may not be a module ({at})"
        ));
    }
    // What is not the host's own: a container's configuration is another system, with
    // modules of its own (the host may not have impermanence at all), so its persistence
    // says nothing about the host's; a specialisation's is built on the host's.
    if !declaring[chosen] && inheriting_specialisations(found).is_empty() {
        if let Some(other) = found.other.iter().find(|o| declaring[o.group]) {
            let what = match other.kind {
                OtherKind::Container => "a NixOS container's own configuration",
                OtherKind::Specialisation { .. } => {
                    "a specialisation with `inheritParentConfig = false`, a configuration of its own"
                }
            };
            return Err(format!(
                "the only persistence in the file is in `{}` (line {}), {what}: nothing is written there, and the host's own is not in this file",
                other.name,
                line_of(text, &other.at)
            ));
        }
    }
    Ok(chosen)
}

/// The module a host's new definitions are for: the one the group defines, or failing
/// that imports (`inputs.preservation.nixosModules.default`); impermanence when neither
/// says. Both: not clear.
fn new_family(text: &str, found: &Found, group: usize) -> Result<Family, String> {
    let first = |family: Family| -> Option<SyntaxNode> {
        found
            .definitions(group)
            .find(|(p, _)| {
                Family::of(p) == Some(family)
                    || family == Family::Preservation
                        && p.len() == 2
                        && p[0].name.as_deref() == Some("preservation")
            })
            .map(|(_, at)| binding_of(at))
    };
    let imported = |family: Family| {
        found
            .imported
            .iter()
            .find(|(g, f, _)| *g == group && *f == family)
            .map(|(_, _, at)| at.clone())
    };
    let (imp, pres) = match (first(Family::Impermanence), first(Family::Preservation)) {
        (None, None) => (
            imported(Family::Impermanence),
            imported(Family::Preservation),
        ),
        both => both,
    };
    match (imp, pres) {
        (Some(a), Some(b)) => Err(format!(
            "the module persists with both impermanence ({}) and preservation ({}), and neither has this storage, so which one to add it to is not clear",
            place(text, &a),
            place(text, &b)
        )),
        (None, Some(_)) => Ok(Family::Preservation),
        _ => Ok(Family::Impermanence),
    }
}

/// The storages the groups `pick` accepts declare (their paths, each with the first group
/// that declares it), and whether one cannot be known. One pass over what was found.
fn declared_storages(found: &Found, pick: impl Fn(usize) -> bool) -> (Vec<(String, usize)>, bool) {
    let mut out: Vec<(String, usize)> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut unknown = false;
    let mut add = |p: String, g: usize| {
        if seen.insert(p.clone()) {
            out.push((p, g));
        }
    };
    let paths = found
        .lists
        .iter()
        .map(|d| (d.group, &d.path, false))
        .chain(found.sites.iter().map(|s| (s.group, &s.path, false)))
        .chain(found.scalars.iter().map(|s| (s.group, &s.path, false)))
        .chain(found.opaque.iter().map(|o| (o.group, &o.path, true)));
    let mut imperm_groups: Vec<usize> = Vec::new();
    for (group, path, computed) in paths {
        if !pick(group) {
            continue;
        }
        let Some(family) = Family::of(path) else {
            continue;
        };
        if !family.has_storages() {
            if !imperm_groups.contains(&group) {
                imperm_groups.push(group);
            }
            continue;
        }
        match path.get(2) {
            // `environment.persistence = something computed`: its storages are hidden.
            None => unknown |= computed,
            Some(key) => match storage_path(found, group, family, key) {
                Some(p) => add(p, group),
                None => unknown = true,
            },
        }
    }
    for group in imperm_groups {
        match imperm_storage(found, group) {
            Some(p) => add(p, group),
            None => unknown = true,
        }
    }
    (out, unknown)
}

/// The storage to write to: the one asked for; else the host's own when it declares
/// exactly one (or, declaring none, when the specialisations built on it declare exactly
/// one), with a note saying so; else /persist, unless the host declares several and not
/// that one.
fn storage_for(
    text: &str,
    found: &Found,
    group: usize,
    req: &Request,
) -> Result<(String, Option<String>), String> {
    if let Some(s) = &req.storage {
        return Ok((s.clone(), None));
    }
    let (declared, unknown) = declared_storages(found, |g| g == group);
    if unknown {
        // What a computed name stands for is not known: /persist, and the edit refuses
        // to add it beside a name that may be the same.
        return Ok((DEFAULT_STORAGE.to_string(), None));
    }
    let chosen = |s: &str, whose: String| {
        let note = (s != DEFAULT_STORAGE).then(|| {
            format!(
                "storage {} (--storage was not given): the only one the file declares{whose}",
                shown(s)
            )
        });
        Ok((s.to_string(), note))
    };
    let declared: Vec<String> = declared.into_iter().map(|(s, _)| s).collect();
    match declared.as_slice() {
        [] => {
            let specs = inheriting_specialisations(found);
            let mut spec_of: Vec<Option<&Other>> = vec![None; found.groups];
            for spec in &specs {
                spec_of[spec.group] = Some(spec);
            }
            let (theirs, unknown) =
                declared_storages(found, |g| spec_of.get(g).is_some_and(|s| s.is_some()));
            match (theirs.as_slice(), unknown) {
                ([(one, g)], false) => {
                    let spec = spec_of[*g].expect("picked");
                    chosen(
                        one,
                        format!(", in `{}` (line {})", spec.name, line_of(text, &spec.at)),
                    )
                }
                _ => Ok((DEFAULT_STORAGE.to_string(), None)),
            }
        }
        [one] => chosen(one, String::new()),
        many if many.iter().any(|s| s == DEFAULT_STORAGE) => {
            Ok((DEFAULT_STORAGE.to_string(), None))
        }
        many => {
            // Named in one line: the first few, and how many more.
            const SHOWN: usize = 5;
            let mut named: Vec<String> = many.iter().take(SHOWN).map(|s| shown(s)).collect();
            if many.len() > SHOWN {
                named.push(format!("and {} more", many.len() - SHOWN));
            }
            Err(format!(
                "the file declares several storages ({}), none of them {DEFAULT_STORAGE}, and --storage was not given: name the one to add to; nothing changed",
                named.join(", ")
            ))
        }
    }
}

/// Which family a refusal's snippet is for: the one the group persists with, else
/// impermanence.
fn snippet_family(text: &str, found: &Found, group: usize, storage: &str) -> Family {
    if uses_imperm(found, group) && imperm_storage(found, group).as_deref() == Some(storage) {
        return Family::Imperm;
    }
    new_family(text, found, group).unwrap_or(Family::Impermanence)
}

fn plan(text: &str, found: &Found, req: &Request) -> Result<Plan, String> {
    let mut wanted: Vec<String> = Vec::new();
    for e in &req.entries {
        if !wanted.contains(e) {
            wanted.push(e.clone());
        }
    }
    let refuse =
        |reason: String, family: Family, storage: &str, entries: &[String], present: &[String]| {
            let items: Vec<String> = entries
                .iter()
                .map(|e| item(family, req.list, e, e))
                .collect();
            Plan::Refuse {
                reason,
                snippet: snippet(&req.path(family, storage), &items),
                present: present.to_vec(),
            }
        };
    let asked = req.storage.as_deref().unwrap_or(DEFAULT_STORAGE);
    let group = match group_to_edit(text, found, asked) {
        Ok(g) => g,
        Err(reason) => {
            let declaring = found.declaring();
            let family = (0..found.groups)
                .find(|&g| declaring[g] && !found.is_other(g))
                .map_or(Family::Impermanence, |g| {
                    snippet_family(text, found, g, asked)
                });
            return Ok(refuse(reason, family, asked, &wanted, &[]));
        }
    };
    let mut notes: Vec<String> = Vec::new();
    if !found.declares(group) {
        if let Some(spec) = inheriting_specialisations(found).first() {
            notes.push(format!(
                "written at the host's level, not in `{}` (line {}): that is the specialisation's own configuration, built on this one",
                spec.name,
                line_of(text, &spec.at)
            ));
        }
    }
    let (storage, said) = storage_for(text, found, group, req)?;
    notes.extend(said);

    // Entries declared anywhere already, or declared as the other kind.
    let known = known_entries(found, group);
    let mut in_specialisations: Vec<(&Other, Known)> = Vec::new();
    let specs = inheriting_specialisations(found);
    if !specs.is_empty() {
        let mut spec_of: Vec<Option<&Other>> = vec![None; found.groups];
        for spec in specs {
            spec_of[spec.group] = Some(spec);
        }
        for def in &found.lists {
            if let Some(spec) = spec_of.get(def.group).copied().flatten() {
                let mut theirs = Vec::new();
                entries_of(found, def, &mut theirs);
                in_specialisations.extend(theirs.into_iter().map(|k| (spec, k)));
            }
        }
    }
    let home = match &req.user {
        Some(user) => {
            let storage_key = found
                .lists
                .iter()
                .filter(|d| !found.is_other(d.group))
                .filter_map(|d| place_of(&d.path).map(|p| (d.group, p)))
                .find_map(|(g, p)| {
                    p.storage
                        .filter(|k| {
                            storage_path(found, g, p.family, k).as_deref() == Some(&storage)
                        })
                        .map(|k| (p.family, k))
                });
            home_of(found, storage_key.as_ref().map(|(f, k)| (*f, k)), user).unwrap_or_default()
        }
        None => String::new(),
    };
    let (mut present, mut missing) = (Vec::new(), Vec::new());
    let mut conflict: Option<String> = None;
    for e in wanted {
        let abs = normal_abs(&absolute(req, &home, &e)).unwrap_or_default();
        if let Some(k) = known.iter().find(|k| k.path == abs) {
            if k.list != req.list {
                return Err(format!(
                    "{abs} is declared already as {} ({}), not added as {}; nothing changed",
                    k.list.noun(),
                    k.at(text),
                    req.list.noun()
                ));
            }
            if let Some(through) = &k.through {
                notes.push(format!(
                    "{abs} is declared already through `{through}` ({}), an option of the host's own",
                    k.at(text)
                ));
            } else if k.conditional {
                notes.push(format!(
                    "{abs} is declared already, under a condition ({}): not added again",
                    k.at(text)
                ));
            }
            present.push(e);
            continue;
        }
        // Inside a directory this storage persists: a second bind mount inside the first
        // (what `lint` reports as nested).
        if let Some(k) = known.iter().find(|k| {
            k.list == List::Directories
                && k.storage.as_deref() == Some(storage.as_str())
                && inside(&abs, &k.path)
        }) {
            notes.push(format!(
                "{abs} is inside {}, which {} persists already ({}{}): not added as a bind mount inside that one",
                k.path,
                shown(&storage),
                k.at(text),
                if k.conditional { ", under a condition" } else { "" }
            ));
            present.push(e);
            continue;
        }
        // What a specialisation built on this configuration declares: the same entry
        // here would be declared twice there, one inside a directory it persists nested.
        let theirs = in_specialisations.iter().find_map(|(spec, k)| {
            let (what, result) = if k.path == abs {
                (format!("is declared in `{}`", spec.name), "declare it twice")
            } else if k.list == List::Directories
                && k.storage.as_deref() == Some(storage.as_str())
                && inside(&abs, &k.path)
            {
                (
                    format!("is inside {}, which `{}` persists", k.path, spec.name),
                    "nest a bind mount inside that one",
                )
            } else {
                return None;
            };
            Some(format!(
                "{abs} {what} ({}), a specialisation built on this configuration: adding it here would {result} there; add it to the specialisation by hand if it is for it",
                k.at(text)
            ))
        });
        if let Some(theirs) = theirs {
            conflict.get_or_insert(theirs);
        }
        missing.push(e);
    }
    if missing.is_empty() {
        return Ok(Plan::Unchanged {
            present,
            storage,
            notes,
        });
    }
    if let Some(reason) = conflict {
        let family = snippet_family(text, found, group, &storage);
        return Ok(refuse(reason, family, &storage, &missing, &present));
    }

    // Lists under an option of the host's own: where its entries go, unseen.
    let own_lists = found
        .lists
        .iter()
        .any(|d| d.group == group && place_of(&d.path).is_some());
    if let Some(f) = found.foreign.iter().find(|f| f.group == group) {
        if !own_lists {
            let family = snippet_family(text, found, group, &storage);
            return Ok(refuse(
                format!(
                    "the host declares its entries through `{}` ({}), an option of its own that imperm does not know: add them there by hand",
                    dotted(&f.path),
                    place(text, &f.at)
                ),
                family,
                &storage,
                &missing,
                &present,
            ));
        }
        notes.push(format!(
            "the host also declares entries through `{}` ({}), an option of its own that imperm cannot see into: make sure it does not hold {} too",
            dotted(&f.path),
            place(text, &f.at),
            missing.join(", ")
        ));
    }

    let home_abs = |e: &String| normal_abs(&absolute(req, &home, e)).unwrap_or_default();
    match target(text, found, group, req, &storage) {
        Target::List {
            list,
            computed,
            family,
        } => {
            notes.extend(computed.map(|at| {
                format!(
                    "the list also has a computed part ({}) that imperm cannot see into: make sure it does not hold {} too",
                    place(text, &at),
                    missing.join(", ")
                )
            }));
            let items = missing
                .iter()
                .map(|e| item(family, req.list, &home_abs(e), e))
                .collect();
            Ok(Plan::Edit {
                edit: Edit::List(list),
                items,
                added: missing,
                present,
                storage,
                notes,
            })
        }
        Target::Create { site, keys, family } => {
            let key = keys
                .iter()
                .map(|k| attr_name(k))
                .collect::<Vec<_>>()
                .join(".");
            let items = missing
                .iter()
                .map(|e| item(family, req.list, &home_abs(e), e))
                .collect();
            Ok(Plan::Edit {
                edit: Edit::Binding { set: site.set, key },
                items,
                added: missing,
                present,
                storage,
                notes,
            })
        }
        Target::Refuse {
            reason,
            path,
            family,
        } => {
            let items: Vec<String> = missing
                .iter()
                .map(|e| item(family, req.list, &home_abs(e), e))
                .collect();
            Ok(Plan::Refuse {
                reason,
                snippet: snippet(&path, &items),
                present,
            })
        }
    }
}

enum Target {
    /// A literal list, the computed part of its definition if it has one, and whose.
    List {
        list: ast::List,
        computed: Option<SyntaxNode>,
        family: Family,
    },
    Create {
        site: Site,
        keys: Vec<String>,
        family: Family,
    },
    Refuse {
        reason: String,
        path: Vec<String>,
        family: Family,
    },
}

/// Whether `path` (found in the file) names `want` (names), key by key.
fn same_path(path: &[Key], want: &[Key]) -> bool {
    path.len() == want.len()
        && path
            .iter()
            .zip(want)
            .all(|(a, b)| a.name.is_some() && a.name == b.name)
}

fn is_prefix(prefix: &[Key], of: &[Key]) -> bool {
    prefix.len() <= of.len() && same_path(prefix, &of[..prefix.len()])
}

/// A list to edit, or the set to write a new one into, for the request in `group`.
fn target(text: &str, found: &Found, group: usize, req: &Request, storage: &str) -> Target {
    let imperm = uses_imperm(found, group);
    let imperm_store = imperm_storage(found, group);
    // The storages of this group that are the requested one (however spelled), in
    // impermanence or preservation.
    let mut storages: Vec<(Family, Key)> = Vec::new();
    let mut unknown: Option<SyntaxNode> = None;
    let site_places: Vec<(&Vec<Key>, SyntaxNode)> = found
        .sites
        .iter()
        .filter(|s| s.group == group)
        .map(|s| (&s.path, binding_of(s.set.syntax())))
        .collect();
    let storage_keys = site_places
        .iter()
        .map(|(p, at)| (*p, at))
        .chain(
            found
                .lists
                .iter()
                .filter(|d| d.group == group)
                .map(|d| (&d.path, &d.at)),
        )
        .chain(
            found
                .opaque
                .iter()
                .filter(|o| o.group == group)
                .map(|o| (&o.path, &o.at)),
        )
        .chain(
            found
                .scalars
                .iter()
                .filter(|s| s.group == group)
                .map(|s| (&s.path, &s.at)),
        );
    for (path, at) in storage_keys {
        let Some(family) = Family::of(path).filter(|f| f.has_storages()) else {
            continue;
        };
        if path.len() < 3 {
            continue;
        }
        match storage_path(found, group, family, &path[2]) {
            Some(p) if p == storage => {
                let this = (family, path[2].clone());
                if !storages.contains(&this) {
                    storages.push(this);
                }
            }
            Some(_) => {}
            None => {
                unknown.get_or_insert(at.clone());
            }
        }
    }
    let keyed = |names: &[String]| -> Vec<Key> { names.iter().map(|n| Key::name(n)).collect() };
    let imperm_path = req.path(Family::Imperm, storage);
    let to_imperm = imperm && imperm_store.as_deref() == Some(storage);
    // A storage declared already: its family, and its name as written (a literal one
    // rather than a `${…}` one).
    let declared = storages
        .iter()
        .find(|(_, k)| !k.dynamic)
        .or(storages.first())
        .map(|(f, k)| (*f, k.name.clone().unwrap_or(storage.to_string())));
    let fresh = new_family(text, found, group);
    let (family, name) = declared.clone().unwrap_or((
        fresh.clone().unwrap_or(Family::Impermanence),
        storage.to_string(),
    ));
    let list_path = req.path(family, &name);
    // The snippet: where this host declares its own.
    let (snippet_path, snippet_family) = if to_imperm {
        (imperm_path.clone(), Family::Imperm)
    } else {
        (list_path.clone(), family)
    };
    let refuse = |reason: String| Target::Refuse {
        reason,
        path: snippet_path.clone(),
        family: snippet_family,
    };
    if imperm && imperm_store.is_none() {
        let at = found
            .scalars
            .iter()
            .find(|s| {
                s.group == group && s.path.len() == 3 && s.path[1].name.as_deref() == Some("imperm")
            })
            .map(|s| place(text, &s.at))
            .unwrap_or_default();
        return refuse(format!(
            "services.imperm.persistentStoragePath cannot be resolved without evaluating ({at})"
        ));
    }

    // Candidate list paths, in order of preference, with their family.
    let mut wanted: Vec<(Vec<Key>, Family)> = Vec::new();
    if to_imperm {
        wanted.push((keyed(&imperm_path), Family::Imperm));
    }
    for (f, k) in &storages {
        let mut p: Vec<Key> = f.root().iter().map(|n| Key::name(n)).collect();
        p.push(k.clone());
        p.extend(keyed(&list_path[3..]));
        wanted.push((p, *f));
    }
    let defs = |want: &[Key]| -> Vec<&ListDef> {
        found
            .lists
            .iter()
            .filter(|d| d.group == group && same_path(&d.path, want))
            .collect()
    };
    // 1. A literal list that is there already: the host's own first, then the one behind
    //    the fewest conditions (an entry there holds on every host the file is for).
    let literal = wanted
        .iter()
        .enumerate()
        .flat_map(|(i, (want, f))| {
            defs(want)
                .into_iter()
                .filter(|d| d.target.is_some())
                .map(move |d| (i, d, *f))
        })
        .min_by_key(|(i, d, _)| (d.ctx.gates, *i));
    if let Some((_, def, family)) = literal {
        return Target::List {
            list: def.target.clone().expect("checked"),
            computed: def.computed.clone(),
            family,
        };
    }
    // 2. Only computed definitions of the list, or ones seen through a name or `//`:
    //    not edited.
    for (want, _) in &wanted {
        if let Some(def) = defs(want).first() {
            if let Some(at) = &def.computed {
                return refuse(format!("the list is computed ({})", place(text, at)));
            }
            let holder = found
                .opaque
                .iter()
                .filter(|o| o.group == group && is_prefix(&o.path, want))
                .max_by_key(|o| o.path.len())
                .map_or(&def.at, |o| &o.at);
            return refuse(format!(
                "what holds the list is computed ({}), so an edit may not be what Nix evaluates",
                place(text, holder)
            ));
        }
    }
    // 3. A new definition: unless something on the way is computed or unknown.
    let (create, family): (Vec<Key>, Family) = match (to_imperm, storages.first()) {
        (true, _) => (keyed(&imperm_path), Family::Imperm),
        (false, Some((f, k))) => {
            let mut p: Vec<Key> = f.root().iter().map(|n| Key::name(n)).collect();
            p.push(k.clone());
            p.extend(keyed(&list_path[3..]));
            (p, *f)
        }
        (false, None) => {
            if let Some(at) = &unknown {
                return refuse(format!(
                    "a storage is named by something imperm cannot resolve without evaluating ({}); it may be {}",
                    place(text, at),
                    shown(storage)
                ));
            }
            match fresh {
                Ok(f) => (keyed(&req.path(f, storage)), f),
                Err(reason) => return refuse(reason),
            }
        }
    };
    if let Some(o) = found
        .opaque
        .iter()
        .filter(|o| o.group == group && is_prefix(&o.path, &create))
        .min_by_key(|o| o.path.len())
    {
        let what = if o.path.is_empty() {
            "the module is computed"
        } else {
            "what would hold the list is computed"
        };
        return refuse(format!("{what} ({})", place(text, &o.at)));
    }
    // An unknown user name where this user would be.
    if req.user.is_some() {
        let users = &create[..create.len() - 2];
        let unknown_user = found
            .lists
            .iter()
            .filter(|d| d.group == group)
            .map(|d| (&d.path, &d.at))
            .chain(
                found
                    .sites
                    .iter()
                    .filter(|s| s.group == group)
                    .map(|s| (&s.path, s.set.syntax())),
            )
            .find(|(p, _)| {
                p.len() > users.len() && is_prefix(users, p) && p[users.len()].name.is_none()
            });
        if let Some((_, at)) = unknown_user {
            return refuse(format!(
                "a user is named by something imperm cannot resolve without evaluating ({})",
                place(text, at)
            ));
        }
    }
    let site = found
        .sites
        .iter()
        .filter(|s| s.group == group && !s.ctx.readonly && is_prefix(&s.path, &create))
        .min_by_key(|s| {
            (
                std::cmp::Reverse(s.path.len()),
                // `config = lib.mkIf … { … }` before a new `config.…` beside it.
                !s.prefix.is_empty(),
                s.ctx.gates,
                s.set.syntax().text_range().start(),
            )
        });
    let Some(site) = site else {
        let why = found
            .opaque
            .iter()
            .find(|o| o.group == group && o.path.is_empty())
            .map(|o| format!(" ({})", place(text, &o.at)))
            .unwrap_or_default();
        return refuse(format!("no attribute set to edit{why}"));
    };
    let mut keys: Vec<String> = site.prefix.clone();
    keys.extend(
        create[site.path.len()..]
            .iter()
            .map(|k| k.name.clone().expect("known")),
    );
    if let Some(clash) = clash(&site.set, &keys) {
        let written: Vec<String> = keys.iter().map(|k| attr_name(k)).collect();
        return refuse(format!(
            "a new `{}` would clash with {}, which Nix does not merge with it",
            written.join("."),
            place(text, &clash)
        ));
    }
    Target::Create {
        site: site.clone(),
        keys,
        family,
    }
}

/// A binding in `set` that Nix would not merge with a new `keys = …`: one that reaches
/// the same names through a computed name, one that gives a prefix of `keys` a value that
/// is not a literal set, one that defines something below the new list, an `inherit` of
/// the first name.
fn clash(set: &ast::AttrSet, keys: &[String]) -> Option<SyntaxNode> {
    for inherit in set.inherits() {
        if inherit
            .attrs()
            .any(|a| model::key(a).name.as_deref() == Some(&keys[0]))
        {
            return Some(inherit.syntax().clone());
        }
    }
    for apv in set.attrpath_values() {
        let Some(attrs) = apv
            .attrpath()
            .map(|p| p.attrs().map(model::key).collect::<Vec<_>>())
        else {
            continue;
        };
        for (i, key) in attrs.iter().enumerate() {
            if i == keys.len() {
                // Something below the new list.
                return Some(apv.syntax().clone());
            }
            if key.dynamic {
                if key.name.is_none() || key.name.as_deref() == Some(&keys[i]) {
                    return Some(apv.syntax().clone());
                }
                break;
            }
            if key.name.as_deref() != Some(&keys[i]) {
                break;
            }
            if i == attrs.len() - 1 {
                // All of this binding is a prefix of the new one: Nix merges a literal set.
                let merges = i < keys.len() - 1
                    && matches!(apv.value(), Some(ast::Expr::AttrSet(s)) if s.rec_token().is_none());
                if !merges {
                    return Some(apv.syntax().clone());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(list: List, user: Option<&str>, entries: &[&str]) -> Request {
        Request {
            storage: Some("/persist".into()),
            user: user.map(str::to_string),
            list,
            entries: entries.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn snippets_are_nix() {
        let r = req(List::Directories, Some("josh"), &[".ssh"]);
        assert_eq!(
            r.snippet(),
            "environment.persistence.\"/persist\".users.josh.directories = [\n  \".ssh\"\n];\n"
        );
    }

    #[test]
    fn not_nix_is_an_error() {
        assert!(add("{ a = ; }", &req(List::Directories, None, &["/x"])).is_err());
    }

    #[test]
    fn not_a_module_is_refused_with_a_snippet() {
        let out = add("42", &req(List::Directories, None, &["/x"])).unwrap();
        assert!(
            matches!(&out, Outcome::Refused { snippet, .. } if snippet.contains("\"/x\"")),
            "{out:?}"
        );
    }
}
