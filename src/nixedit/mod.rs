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

use crate::nix::{attr_name, string};
use crate::paths::{normalize_absolute, normalize_relative};
use crate::persisted::Kind;
use model::{Found, Key, ListDef, Site};

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
    pub storage: String,
    pub user: Option<String>,
    pub list: List,
    /// Absolute paths, or for a user paths relative to the home directory, normalised.
    pub entries: Vec<String>,
}

impl Request {
    /// The snippet a person adds to a host configuration by hand: `entries` in
    /// `environment.persistence`.
    pub fn snippet(&self) -> String {
        snippet(&self.env_path(&self.storage), &self.entries)
    }

    /// `environment.persistence."<storage>"[.users.NAME].<list>`, with the storage
    /// spelled `storage`.
    fn env_path(&self, storage: &str) -> Vec<String> {
        let mut p = vec![
            "environment".to_string(),
            "persistence".to_string(),
            storage.to_string(),
        ];
        self.tail(&mut p);
        p
    }

    /// `services.imperm[.users.NAME].<list>`.
    fn imperm_path(&self) -> Vec<String> {
        let mut p = vec!["services".to_string(), "imperm".to_string()];
        self.tail(&mut p);
        p
    }

    fn tail(&self, p: &mut Vec<String>) {
        if let Some(user) = &self.user {
            p.push("users".into());
            p.push(user.clone());
        }
        p.push(self.list.name().into());
    }
}

/// `a.b."c" = [ … ];` for a person to paste.
fn snippet(path: &[String], entries: &[String]) -> String {
    let keys: Vec<String> = path.iter().map(|k| attr_name(k)).collect();
    let items: String = entries
        .iter()
        .map(|e| format!("  {}\n", string(e)))
        .collect();
    format!("{} = [\n{items}];\n", keys.join("."))
}

/// What an edit came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every entry is declared already.
    Unchanged { present: Vec<String> },
    Edited {
        text: String,
        added: Vec<String>,
        present: Vec<String>,
        /// What the person should know (a computed part of the list, which may hold an
        /// entry imperm cannot see).
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

/// Adds the entries. `Err` (one line) when the file is not Nix, is beyond the bounds, or
/// an entry is declared already as the other kind.
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
        Plan::Unchanged { present } => Outcome::Unchanged { present },
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
            added,
            present,
            notes,
        } => {
            let eol = insert::eol(text);
            let items: Vec<String> = added.iter().map(|e| string(e)).collect();
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

enum Edit {
    List(ast::List),
    Binding { set: ast::AttrSet, key: String },
}

enum Plan {
    Unchanged {
        present: Vec<String>,
    },
    Edit {
        edit: Edit,
        added: Vec<String>,
        present: Vec<String>,
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
    /// `None`: `services.imperm`; else the storage's name as written.
    storage: Option<Key>,
    user: Option<Key>,
    list: List,
}

fn place_of(path: &[Key]) -> Option<Place> {
    let name = |i: usize| path.get(i).and_then(|k| k.name.as_deref());
    let (storage, rest) = match (name(0), name(1)) {
        (Some("environment"), Some("persistence")) => (Some(path.get(2)?.clone()), &path[3..]),
        (Some("services"), Some("imperm")) => (None, &path[2..]),
        _ => return None,
    };
    let (user, list) = match rest {
        [list] => (None, list),
        [users, user, list] if users.name.as_deref() == Some("users") => (Some(user.clone()), list),
        _ => return None,
    };
    Some(Place {
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
    /// Where, for messages.
    at: String,
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

/// A storage's path: its `persistentStoragePath` when it has one, else its name.
/// `None` when that cannot be known.
fn storage_path(found: &Found, group: usize, key: &Key) -> Option<String> {
    let own = found.scalars.iter().find(|s| {
        s.group == group
            && s.path.len() == 4
            && s.path[0].name.as_deref() == Some("environment")
            && s.path[2] == *key
    });
    match own {
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
fn home_of(found: &Found, storage: Option<&Key>, user: &str) -> Option<String> {
    let own = found.scalars.iter().find(|s| {
        s.path.len() == 6 && Some(&s.path[2]) == storage && s.path[4].name.as_deref() == Some(user)
    });
    match own {
        Some(s) => s.value.clone(),
        None if user == "root" => Some("/root".to_string()),
        None => Some(format!("/home/{user}")),
    }
}

fn uses_imperm(found: &Found, group: usize) -> bool {
    let imperm = |p: &[Key]| {
        p.len() >= 2
            && p[0].name.as_deref() == Some("services")
            && p[1].name.as_deref() == Some("imperm")
    };
    found
        .lists
        .iter()
        .any(|d| d.group == group && imperm(&d.path))
        || found
            .scalars
            .iter()
            .any(|s| s.group == group && imperm(&s.path))
        || found
            .sites
            .iter()
            .any(|s| s.group == group && imperm(&s.path))
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
        None => Some("/persist".to_string()),
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

/// Every entry the file declares, in any group, storage or user, and imperm's template.
fn known_entries(text: &str, found: &Found, group: usize) -> Vec<Known> {
    let mut out = Vec::new();
    for def in &found.lists {
        let Some(place) = place_of(&def.path) else {
            continue;
        };
        let home = match &place.user {
            None => None,
            Some(user) => match user.name.as_deref() {
                Some(name) => home_of(found, place.storage.as_ref(), name),
                None => continue,
            },
        };
        for entry in &def.entries {
            let path = match &home {
                None => normal_abs(entry),
                Some(home) => normal_rel(entry).map(|rel| format!("{home}/{rel}")),
            };
            if let Some(path) = path.and_then(|p| normal_abs(&p)) {
                out.push(Known {
                    path,
                    list: place.list,
                    at: format!("line {}", line_of(text, &def.at)),
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
                at: "imperm's server template".to_string(),
            });
        }
    }
    out
}

/// Which module group of the file to edit: the top-level module when it declares
/// persistence; else the one module nested in the file that does (a flake-parts
/// `flake.modules.nixos.*`, a wrapper's `….nixos = { … }`), or the one of those that
/// declares this storage; else the top-level module, unless it is not a NixOS module.
fn group_to_edit(text: &str, found: &Found, req: &Request) -> Result<usize, String> {
    if let Some(at) = &found.no_module {
        return Err(format!(
            "no attribute set to edit: the file's value is not a module ({})",
            place(text, at)
        ));
    }
    let home_manager = |g: usize| found.home_manager.iter().find(|(h, _)| *h == g);
    let chosen = if found.declares(0) {
        0
    } else {
        let candidates: Vec<usize> = (1..found.groups)
            .filter(|&g| found.declares(g) && home_manager(g).is_none())
            .collect();
        let matching: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&g| {
                found.lists.iter().any(|d| {
                    d.group == g
                        && place_of(&d.path).is_some_and(|p| match &p.storage {
                            Some(k) => storage_path(found, g, k).as_deref() == Some(&req.storage),
                            None => imperm_storage(found, g).as_deref() == Some(&req.storage),
                        })
                })
            })
            .collect();
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
    Ok(chosen)
}

fn plan(text: &str, found: &Found, req: &Request) -> Result<Plan, String> {
    let mut wanted: Vec<String> = Vec::new();
    for e in &req.entries {
        if !wanted.contains(e) {
            wanted.push(e.clone());
        }
    }
    let refuse = |reason: String, snippet: String, present: Vec<String>| Plan::Refuse {
        reason,
        snippet,
        present,
    };
    let group = match group_to_edit(text, found, req) {
        Ok(g) => g,
        Err(reason) => {
            return Ok(refuse(
                reason,
                snippet(&req.env_path(&req.storage), &wanted),
                vec![],
            ));
        }
    };

    // Entries declared anywhere already, or declared as the other kind.
    let known = known_entries(text, found, group);
    let home = match &req.user {
        Some(user) => {
            let storage = found
                .lists
                .iter()
                .filter_map(|d| place_of(&d.path))
                .find_map(|p| {
                    p.storage
                        .filter(|k| storage_path(found, group, k).as_deref() == Some(&req.storage))
                });
            home_of(found, storage.as_ref(), user).unwrap_or_default()
        }
        None => String::new(),
    };
    let (mut present, mut missing) = (Vec::new(), Vec::new());
    for e in wanted {
        let abs = normal_abs(&absolute(req, &home, &e)).unwrap_or_default();
        match known.iter().find(|k| k.path == abs) {
            Some(k) if k.list == req.list => present.push(e),
            Some(k) => {
                return Err(format!(
                    "{abs} is declared already as {} ({}), not added as {}; nothing changed",
                    k.list.noun(),
                    k.at,
                    req.list.noun()
                ));
            }
            None => missing.push(e),
        }
    }
    if missing.is_empty() {
        return Ok(Plan::Unchanged { present });
    }

    let target = target(text, found, group, req);
    match target {
        Target::List(list, computed) => {
            let notes = computed
                .map(|at| {
                    format!(
                        "the list also has a computed part ({}) that imperm cannot see into: make sure it does not hold {} too",
                        place(text, &at),
                        missing.join(", ")
                    )
                })
                .into_iter()
                .collect();
            Ok(Plan::Edit {
                edit: Edit::List(list),
                added: missing,
                present,
                notes,
            })
        }
        Target::Create { site, keys } => {
            let key = keys
                .iter()
                .map(|k| attr_name(k))
                .collect::<Vec<_>>()
                .join(".");
            Ok(Plan::Edit {
                edit: Edit::Binding { set: site.set, key },
                added: missing,
                present,
                notes: Vec::new(),
            })
        }
        Target::Refuse { reason, path } => Ok(refuse(reason, snippet(&path, &missing), present)),
    }
}

enum Target {
    /// A literal list, and the computed part of its definition if it has one.
    List(ast::List, Option<SyntaxNode>),
    Create {
        site: Site,
        keys: Vec<String>,
    },
    Refuse {
        reason: String,
        path: Vec<String>,
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
fn target(text: &str, found: &Found, group: usize, req: &Request) -> Target {
    let imperm = uses_imperm(found, group);
    let imperm_store = imperm_storage(found, group);
    // The storages of this file that are the requested one (however spelled).
    let mut storages: Vec<Key> = Vec::new();
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
        if path.len() < 3
            || path[0].name.as_deref() != Some("environment")
            || path[1].name.as_deref() != Some("persistence")
        {
            continue;
        }
        match storage_path(found, group, &path[2]) {
            Some(p) if p == req.storage => {
                if !storages.contains(&path[2]) {
                    storages.push(path[2].clone());
                }
            }
            Some(_) => {}
            None => {
                unknown.get_or_insert(at.clone());
            }
        }
    }
    let keyed = |names: &[String]| -> Vec<Key> { names.iter().map(|n| Key::name(n)).collect() };
    let imperm_path = req.imperm_path();
    let to_imperm = imperm && imperm_store.as_deref() == Some(req.storage.as_str());
    let env_storage = storages
        .iter()
        .find(|k| !k.dynamic)
        .or(storages.first())
        .and_then(|k| k.name.clone())
        .unwrap_or(req.storage.clone());
    let env_path = req.env_path(&env_storage);
    // The snippet: where this host declares its own.
    let snippet_path = if to_imperm {
        imperm_path.clone()
    } else {
        env_path.clone()
    };
    let refuse = |reason: String| Target::Refuse {
        reason,
        path: snippet_path.clone(),
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

    // Candidate list paths, in order of preference.
    let mut wanted: Vec<Vec<Key>> = Vec::new();
    if to_imperm {
        wanted.push(keyed(&imperm_path));
    }
    for k in &storages {
        let mut p = vec![
            Key::name("environment"),
            Key::name("persistence"),
            k.clone(),
        ];
        p.extend(keyed(&env_path[3..]));
        wanted.push(p);
    }
    let defs = |want: &[Key]| -> Vec<&ListDef> {
        found
            .lists
            .iter()
            .filter(|d| d.group == group && same_path(&d.path, want))
            .collect()
    };
    // 1. A literal list that is there already (the host's own first).
    for want in &wanted {
        if let Some(def) = defs(want).into_iter().find(|d| d.target.is_some()) {
            return Target::List(def.target.clone().expect("checked"), def.computed.clone());
        }
    }
    // 2. Only computed definitions of the list, or ones seen through a name or `//`:
    //    not edited.
    for want in &wanted {
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
    let create: Vec<Key> = match (to_imperm, storages.first()) {
        (true, _) => keyed(&imperm_path),
        (false, Some(k)) => {
            let mut p = vec![
                Key::name("environment"),
                Key::name("persistence"),
                k.clone(),
            ];
            p.extend(keyed(&env_path[3..]));
            p
        }
        (false, None) => {
            if let Some(at) = &unknown {
                return refuse(format!(
                    "a storage is named by something imperm cannot resolve without evaluating ({}); it may be {}",
                    place(text, at),
                    req.storage
                ));
            }
            keyed(&env_path)
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
                s.ctx.gated,
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
            storage: "/persist".into(),
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
