//! What a file declares about persistence, wherever it declares it: every definition of
//! `environment.persistence…` (nix-community/impermanence), `preservation.preserveAt…`
//! (nix-community/preservation, the same shape) and `services.imperm…` (imperm's own
//! module) in every NixOS module the file holds, however it is written (nested sets, dotted
//! paths, `${…}` names bound in a `let`, under `config`, behind `lib.mkIf`/`mkMerge`, in
//! inline `imports`, in a flake-parts `flake.modules.nixos.*` or another wrapper's nested
//! module), with the literal lists that can be edited, the attribute sets a missing
//! definition can be written into, and what cannot be seen (computed values, names that
//! cannot be resolved). Also what is not the host's own: the configurations of NixOS
//! containers and specialisations (other systems), and lists under an option of the host's
//! own making whose name says persistence (a wrapper imperm cannot see through).

use std::collections::{HashMap, HashSet};

use rnix::SyntaxNode;
use rnix::ast::{self, BinOpKind, HasEntry};
use rowan::ast::AstNode;

use super::List;
use super::resolve;

/// A name in an attribute path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// What it evaluates to; `None` when that cannot be known.
    pub name: Option<String>,
    /// Computed (`${…}`, or a string with an interpolation): Nix never merges such a name
    /// with another of the same value in one attribute set.
    pub dynamic: bool,
}

impl Key {
    pub fn name(name: &str) -> Key {
        Key {
            name: Some(name.to_string()),
            dynamic: false,
        }
    }

    fn is(&self, name: &str) -> bool {
        self.name.as_deref() == Some(name)
    }
}

/// The module a definition is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// nix-community/impermanence: `environment.persistence.STORAGE…`
    Impermanence,
    /// nix-community/preservation: `preservation.preserveAt.STORAGE…`, the same shape.
    Preservation,
    /// imperm's own module: `services.imperm…`, one storage (`persistentStoragePath`).
    Imperm,
}

impl Family {
    /// The two names every definition of it starts with.
    pub fn root(self) -> [&'static str; 2] {
        match self {
            Family::Impermanence => ["environment", "persistence"],
            Family::Preservation => ["preservation", "preserveAt"],
            Family::Imperm => ["services", "imperm"],
        }
    }

    /// The family a path belongs to.
    pub fn of(path: &[Key]) -> Option<Family> {
        let (a, b) = (path.first()?, path.get(1)?);
        [Family::Impermanence, Family::Preservation, Family::Imperm]
            .into_iter()
            .find(|f| a.is(f.root()[0]) && b.is(f.root()[1]))
    }

    /// Whether its third name is a storage (impermanence, preservation).
    pub fn has_storages(self) -> bool {
        self != Family::Imperm
    }
}

/// How a definition may be used.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ctx {
    /// Seen through `//` or through a name: its text is not edited, since it may not be
    /// what Nix evaluates (or not only there).
    pub readonly: bool,
    /// How many `lib.mkIf` (or `optionalAttrs`) it is behind: new entries go where there
    /// are fewest when there is a choice, so that they hold on every host the file is for.
    pub gates: u8,
}

impl Ctx {
    fn gated(self) -> Ctx {
        Ctx {
            gates: self.gates.saturating_add(1),
            ..self
        }
    }
}

/// One entry of a list, as written (`"/var/lib/x/"` stays so).
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: String,
    /// The item, for messages.
    pub at: SyntaxNode,
    /// Declared under a condition of its own (`lib.mkIf c "/x"` in the list,
    /// `lib.optionals c [ … ]` beside it).
    pub conditional: bool,
}

/// A `directories` or `files` list definition.
#[derive(Clone, Debug)]
pub struct ListDef {
    pub path: Vec<Key>,
    /// The literal list new entries can go into (the first literal part of a `++`).
    pub target: Option<ast::List>,
    /// The entries it is known to hold.
    pub entries: Vec<Entry>,
    /// A part that is computed (a name, a function call, `inherit`).
    pub computed: Option<SyntaxNode>,
    pub ctx: Ctx,
    pub group: usize,
    pub at: SyntaxNode,
}

/// An attribute set literal that holds the definitions of `path`: where a missing one can
/// be written. `prefix` is what the written keys must start with (`config.` when the module
/// has options but its settings are written as `config.x = …`).
#[derive(Clone, Debug)]
pub struct Site {
    pub path: Vec<Key>,
    pub set: ast::AttrSet,
    pub prefix: Vec<String>,
    pub ctx: Ctx,
    pub group: usize,
}

/// A definition at `path` whose content cannot be seen.
#[derive(Clone, Debug)]
pub struct Opaque {
    pub path: Vec<Key>,
    pub group: usize,
    pub at: SyntaxNode,
}

/// A single value: a storage's `persistentStoragePath`, a user's `home`, imperm's
/// `persistentStoragePath` or `template`. `value` is `None` when it cannot be known.
#[derive(Clone, Debug)]
pub struct Scalar {
    pub path: Vec<Key>,
    pub value: Option<String>,
    pub group: usize,
    pub at: SyntaxNode,
}

/// A list under an option of the host's own making whose name says persistence
/// (`environment.global-persistence.directories`, `environment.perpetual.default.dirs`):
/// imperm cannot know what it feeds.
#[derive(Clone, Debug)]
pub struct Foreign {
    pub path: Vec<Key>,
    /// Which kind its entries are, when its name says (`directories`, `dirs`, `files`).
    pub list: Option<List>,
    pub entries: Vec<Entry>,
    pub group: usize,
    pub at: SyntaxNode,
}

/// Another system's configuration in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherKind {
    /// `containers.NAME.config` (or `microvm.vms.NAME.config`): a system of its own, with
    /// its own modules.
    Container,
    /// `specialisation.NAME.configuration`: the host's configuration with this on top,
    /// unless `inheritParentConfig = false`.
    Specialisation { inherits: bool },
}

/// A module group that is another system's configuration.
#[derive(Clone, Debug)]
pub struct Other {
    pub group: usize,
    pub kind: OtherKind,
    /// Where it is, as written for a person: `containers.wiki.config`.
    pub name: String,
    pub at: SyntaxNode,
}

/// Everything found.
#[derive(Debug, Default)]
pub struct Found {
    pub lists: Vec<ListDef>,
    pub sites: Vec<Site>,
    pub opaque: Vec<Opaque>,
    pub scalars: Vec<Scalar>,
    /// A `home.…` definition among a module's settings: a home-manager module. By group.
    pub home_manager: Vec<(usize, SyntaxNode)>,
    /// Groups whose module is a function imperm cannot tell is a module (`name: value: …`).
    pub unsure: Vec<usize>,
    /// A flake or flake-parts top level (`flake.…`, `perSystem`, `nixosConfigurations`…).
    pub flake: Option<SyntaxNode>,
    /// The top level is not a module imperm can read (a function call, a number…).
    pub no_module: Option<SyntaxNode>,
    /// How many module groups: the top-level module is 0, each module nested elsewhere
    /// in the file (a flake-parts `flake.modules.nixos.*`, a wrapper's `….nixos = …`, a
    /// container's or a specialisation's configuration) another; inline `imports` belong
    /// to the group that imports them.
    pub groups: usize,
    /// The groups that are other systems' configurations.
    pub other: Vec<Other>,
    /// By group: whether it is another system's.
    pub is_other: Vec<bool>,
    /// Lists under the host's own persistence-like options.
    pub foreign: Vec<Foreign>,
    /// An item of `imports` that names impermanence or preservation (its module), by group.
    pub imported: Vec<(usize, Family, SyntaxNode)>,
    /// The first `persistentStoragePath` of each storage (group, family, name), and the
    /// first `home` of each user (family, storage, user), as indices into `scalars`: looked
    /// up for every list, so not searched for.
    storage_paths: HashMap<(usize, Family, Key), usize>,
    homes: HashMap<(Family, Key, String), usize>,
}

/// Whether a path is of a family `pick` accepts (`preservation.enable` is preservation's).
fn persistence_path(path: &[Key], pick: &dyn Fn(Family) -> bool) -> bool {
    let family = Family::of(path).or_else(|| {
        (path.len() == 2 && path[0].is("preservation") && path[1].is("enable"))
            .then_some(Family::Preservation)
    });
    family.is_some_and(pick)
}

impl Found {
    /// Whether a group defines anything in `environment.persistence`,
    /// `preservation` or `services.imperm`.
    pub fn declares(&self, group: usize) -> bool {
        self.uses(group, |_| true)
    }

    /// Whether a group defines anything of a family `pick` accepts (`preservation.enable`
    /// counts for preservation).
    pub fn uses(&self, group: usize, pick: impl Fn(Family) -> bool) -> bool {
        self.definitions(group)
            .any(|(p, _)| persistence_path(p, &pick))
    }

    /// Every path a group defines, with where: lists, the sets on the way, single
    /// values, what cannot be seen.
    pub fn definitions(&self, group: usize) -> impl Iterator<Item = (&Vec<Key>, &SyntaxNode)> {
        let lists = self.lists.iter().map(|d| (d.group, &d.path, &d.at));
        let sites = self
            .sites
            .iter()
            .map(|s| (s.group, &s.path, s.set.syntax()));
        let scalars = self.scalars.iter().map(|s| (s.group, &s.path, &s.at));
        let opaque = self.opaque.iter().map(|o| (o.group, &o.path, &o.at));
        lists
            .chain(sites)
            .chain(scalars)
            .chain(opaque)
            .filter(move |(g, ..)| *g == group)
            .map(|(_, p, at)| (p, at))
    }

    /// A storage's own `persistentStoragePath` definition.
    pub fn storage_path_of(&self, group: usize, family: Family, key: &Key) -> Option<&Scalar> {
        self.storage_paths
            .get(&(group, family, key.clone()))
            .map(|&i| &self.scalars[i])
    }

    /// A user's own `home` definition under a storage (in any group).
    pub fn home_of(&self, family: Family, storage: &Key, user: &str) -> Option<&Scalar> {
        self.homes
            .get(&(family, storage.clone(), user.to_string()))
            .map(|&i| &self.scalars[i])
    }

    fn index(&mut self) {
        for (i, s) in self.scalars.iter().enumerate() {
            let Some(family) = Family::of(&s.path).filter(|f| f.has_storages()) else {
                continue;
            };
            match s.path.len() {
                4 => {
                    self.storage_paths
                        .entry((s.group, family, s.path[2].clone()))
                        .or_insert(i);
                }
                6 => {
                    if let Some(user) = &s.path[4].name {
                        self.homes
                            .entry((family, s.path[2].clone(), user.clone()))
                            .or_insert(i);
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether a group is another system's configuration.
    pub fn is_other(&self, group: usize) -> bool {
        self.is_other.get(group).copied().unwrap_or(false)
    }

    /// The groups that define anything in `environment.persistence`, `preservation` or
    /// `services.imperm`, by group: [`Found::declares`] for all of them in one pass.
    pub fn declaring(&self) -> Vec<bool> {
        let mut out = vec![false; self.groups];
        let all = self
            .lists
            .iter()
            .map(|d| (d.group, &d.path))
            .chain(self.sites.iter().map(|s| (s.group, &s.path)))
            .chain(self.scalars.iter().map(|s| (s.group, &s.path)))
            .chain(self.opaque.iter().map(|o| (o.group, &o.path)));
        for (group, path) in all {
            if group < out.len() && persistence_path(path, &|_| true) {
                out[group] = true;
            }
        }
        out
    }
}

/// What a path is to this search.
enum Interest {
    /// A set on the way to a list: look inside.
    Walk,
    List,
    Scalar,
    /// Not about persistence.
    Ignore,
}

fn interest(path: &[Key]) -> Interest {
    use Interest::*;
    if path.is_empty() {
        return Walk;
    }
    let name = |i: usize| path.get(i).and_then(|k| k.name.as_deref());
    // Fixed names must be known; the names of storages and users may not be.
    match (name(0), name(1)) {
        (Some("environment" | "preservation"), _) if path.len() == 1 => Walk,
        (Some("preservation"), Some("enable")) if path.len() == 2 => Scalar,
        (Some("environment"), Some("persistence")) | (Some("preservation"), Some("preserveAt")) => {
            match path.len() {
                2 | 3 => Walk,
                4 => match name(3) {
                    Some("directories" | "files") => List,
                    Some("persistentStoragePath") => Scalar,
                    Some("users") => Walk,
                    _ => Ignore,
                },
                5 if name(3) == Some("users") => Walk,
                6 if name(3) == Some("users") => match name(5) {
                    Some("directories" | "files") => List,
                    Some("home") => Scalar,
                    _ => Ignore,
                },
                _ => Ignore,
            }
        }
        (Some("services"), _) if path.len() == 1 => Walk,
        (Some("services"), Some("imperm")) => match path.len() {
            2 => Walk,
            3 => match name(2) {
                Some("directories" | "files") => List,
                Some("persistentStoragePath" | "template") => Scalar,
                Some("users") => Walk,
                _ => Ignore,
            },
            4 if name(2) == Some("users") => Walk,
            5 if name(2) == Some("users") => match name(4) {
                Some("directories" | "files") => List,
                _ => Ignore,
            },
            _ => Ignore,
        },
        _ => Ignore,
    }
}

/// Whether an unknown name at the end of `path` may stand for anything that matters: a
/// storage or a user name may be unknown and still be looked into, but an unknown name
/// where `persistence`, `users` or `directories` would be hides what it defines.
fn unknown_hides(path: &[Key]) -> bool {
    let storage_or_user = |i: usize| {
        i == 2 && (path[1].is("persistence") || path[1].is("preserveAt"))
            || i == 4 && path[3].is("users")
            || i == 3 && path[1].is("imperm") && path[2].is("users")
    };
    path.first()
        .is_some_and(|k| k.is("environment") || k.is("preservation"))
        && !storage_or_user(path.len() - 1)
        || path.len() > 2 && path[1].is("imperm") && !storage_or_user(path.len() - 1)
}

/// Top-level names that make a file a flake or a flake-parts module, not a NixOS module.
const FLAKE_KEYS: &[&str] = &[
    "flake",
    "perSystem",
    "systems",
    "outputs",
    "inputs",
    "nixosConfigurations",
    "nixosModules",
    "homeConfigurations",
    "darwinConfigurations",
];

/// Where a flake(-parts) file holds NixOS modules: `flake.modules.nixos.NAME`,
/// `flake.nixosModules.NAME`, `nixosModules.NAME`, `flake.nixosModule`, `nixosModule`.
fn nixos_module_at(path: &[Key]) -> Option<bool> {
    let names: Option<Vec<&str>> = path.iter().map(|k| k.name.as_deref()).collect();
    let names = names?;
    let rest: &[&str] = match names.first() {
        Some(&"flake") => &names[1..],
        _ => &names[..],
    };
    // Some(true): a module is here; Some(false): one may be further in; None: none is.
    match rest {
        [] => Some(false),
        ["modules"] | ["modules", "nixos"] | ["nixosModules"] => Some(false),
        ["modules", "nixos", _] | ["nixosModules", _] | ["nixosModule"] => Some(true),
        _ => None,
    }
}

pub fn find(root: &ast::Root) -> Found {
    let mut walker = Walker {
        found: Found::default(),
        group: 0,
        visited: HashSet::new(),
    };
    walker.found.groups = 1;
    if let Some(expr) = root.expr() {
        walker.module(expr, Ctx::default(), true);
    }
    walker.other_systems(root);
    if !walker.found.declares(0) {
        walker.nested_modules(root);
    }
    walker.found.index();
    walker.found
}

/// The names of the bindings a binding is written in, outermost first, and its own: where
/// it is in the file's sets (through functions, `let`, `lib.mkIf`…, which do not name).
/// At least the last `want` of them when there are that many (`usize::MAX`: all): a
/// check of a path's end does not walk up a deep file.
fn names_to(apv: &ast::AttrpathValue, want: usize) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = Vec::new();
    for a in apv
        .syntax()
        .ancestors()
        .filter_map(ast::AttrpathValue::cast)
    {
        let keys: Vec<Option<String>> = a
            .attrpath()
            .map(|p| p.attrs().map(|k| key(k).name).collect())
            .unwrap_or_default();
        out.splice(0..0, keys);
        if out.len() >= want {
            break;
        }
    }
    out
}

/// Whether names end with another system's configuration: `containers.NAME.config`,
/// `microvm.vms.NAME.config`, `specialisation.NAME.configuration`.
fn other_system_at(names: &[Option<String>]) -> Option<OtherKind> {
    let is = |i: usize, want: &str| {
        names
            .len()
            .checked_sub(i)
            .and_then(|at| names[at].as_deref())
            == Some(want)
    };
    if is(1, "config") && (is(3, "containers") || is(3, "vms") && is(4, "microvm")) {
        Some(OtherKind::Container)
    } else if is(1, "configuration") && is(3, "specialisation") {
        Some(OtherKind::Specialisation { inherits: true })
    } else {
        None
    }
}

struct Walker {
    found: Found,
    group: usize,
    /// The bindings looked at, so that those the walk did not reach can be found.
    visited: HashSet<SyntaxNode>,
}

/// Whether a binding defines `environment.persistence…` or `services.imperm…`, by its
/// own names or those of the set it gives a value.
fn defines_persistence(apv: &ast::AttrpathValue) -> bool {
    let Some(keys) = apv
        .attrpath()
        .map(|p| p.attrs().map(key).collect::<Vec<_>>())
    else {
        return false;
    };
    let pair = |a: &str, b: &str| match keys.as_slice() {
        [first, second, ..] => first.is(a) && second.is(b),
        [first] => {
            first.is(a)
                && matches!(apv.value(), Some(ast::Expr::AttrSet(set)) if set.attrpath_values().any(|inner| {
                    inner.attrpath().and_then(|p| p.attrs().next()).map(key).is_some_and(|k| k.is(b))
                }))
        }
        [] => false,
    };
    pair("environment", "persistence")
        || pair("preservation", "preserveAt")
        || pair("services", "imperm")
}

/// `expr` with what stands between a module and its attribute set taken away: the module
/// function, `let`, `with`, parentheses, `assert`.
fn module_body(mut expr: ast::Expr) -> Option<ast::Expr> {
    loop {
        expr = match expr {
            ast::Expr::Lambda(l) => l.body()?,
            ast::Expr::LetIn(l) => l.body()?,
            ast::Expr::With(w) => w.body()?,
            ast::Expr::Paren(p) => p.expr()?,
            ast::Expr::Assert(a) => a.body()?,
            ast::Expr::Root(r) => r.expr()?,
            other => return Some(other),
        };
    }
}

/// The first name of each binding of a set.
fn first_names(set: &ast::AttrSet) -> Vec<(String, SyntaxNode)> {
    let mut out = Vec::new();
    for entry in set.entries() {
        match entry {
            ast::Entry::AttrpathValue(apv) => {
                if let Some(Key {
                    name: Some(name), ..
                }) = apv.attrpath().and_then(|p| p.attrs().next()).map(key)
                {
                    out.push((name, apv.syntax().clone()));
                }
            }
            ast::Entry::Inherit(inherit) => {
                for attr in inherit.attrs() {
                    if let Some(name) = key(attr).name {
                        out.push((name, inherit.syntax().clone()));
                    }
                }
            }
        }
    }
    out
}

/// A name as written in an attribute path.
pub fn key(attr: ast::Attr) -> Key {
    match attr {
        ast::Attr::Ident(i) => Key {
            name: i.ident_token().map(|t| t.text().to_string()),
            dynamic: false,
        },
        ast::Attr::Str(s) => Key {
            name: resolve::str_value(&s),
            dynamic: resolve::is_interpolated(&s),
        },
        ast::Attr::Dynamic(d) => Key {
            name: d.expr().and_then(|e| resolve::string(&e)),
            dynamic: true,
        },
    }
}

/// The module-system functions whose value is (part of) their last argument.
enum Wrapper {
    /// `mkIf cond x`
    If(ast::Expr),
    /// `mkMerge [ … ]`
    Merge(ast::Expr),
    /// `mkDefault x`, `mkForce x`, `mkOverride n x`, `mkBefore x`, `mkAfter x`, `mkOrder n x`
    Priority(ast::Expr),
}

/// `lib.mkIf c x`, `mkIf c x`, `lib.modules.mkIf c x`, … as a [`Wrapper`].
fn wrapper(apply: &ast::Apply) -> Option<Wrapper> {
    let mut args = Vec::new();
    let mut f = ast::Expr::Apply(apply.clone());
    while let ast::Expr::Apply(a) = f {
        args.push(a.argument()?);
        f = a.lambda()?;
    }
    args.reverse();
    let name = match f {
        ast::Expr::Ident(i) => i.ident_token()?.text().to_string(),
        ast::Expr::Select(s) if s.default_expr().is_none() => {
            key(s.attrpath()?.attrs().last()?).name?
        }
        _ => return None,
    };
    let last = args.last()?.clone();
    match (name.as_str(), args.len()) {
        ("mkIf" | "optionalAttrs", 2) => Some(Wrapper::If(last)),
        ("mkMerge", 1) => Some(Wrapper::Merge(last)),
        (
            "mkDefault" | "mkForce" | "mkBefore" | "mkAfter" | "mkVMOverride" | "mkOptionDefault",
            1,
        )
        | ("mkOverride" | "mkOrder", 2) => Some(Wrapper::Priority(last)),
        _ => None,
    }
}

/// The items of `mkMerge`'s argument: a literal list, or literal lists joined with `++`
/// to computed parts (each of those a `None`).
fn merged_items(arg: ast::Expr, ctx: Ctx) -> Vec<(Option<ast::Expr>, Ctx)> {
    let mut out = Vec::new();
    let mut parts = vec![arg];
    while let Some(part) = parts.pop() {
        match part {
            ast::Expr::List(list) => out.extend(list.items().map(|i| (Some(i), ctx))),
            ast::Expr::Paren(p) => parts.extend(p.expr()),
            ast::Expr::BinOp(op) if op.operator() == Some(BinOpKind::Concat) => {
                parts.extend(op.rhs());
                parts.extend(op.lhs());
            }
            _ => out.push((None, ctx)),
        }
    }
    out
}

impl Walker {
    /// Other systems' configurations anywhere in the file (the outermost of nested ones),
    /// each a group of its own: what they declare is theirs, not the host's.
    fn other_systems(&mut self, root: &ast::Root) {
        let mut found: Vec<(SyntaxNode, OtherKind, ast::Expr, Vec<Option<String>>)> = Vec::new();
        let mut no_inherit: Vec<Vec<Option<String>>> = Vec::new();
        for node in root.syntax().descendants() {
            let Some(apv) = ast::AttrpathValue::cast(node) else {
                continue;
            };
            // Only the bindings that can be one (the full path is built only for them).
            let last = apv
                .attrpath()
                .and_then(|p| p.attrs().last())
                .and_then(|a| key(a).name);
            if !matches!(
                last.as_deref(),
                Some("config" | "configuration" | "inheritParentConfig")
            ) {
                continue;
            }
            let names = names_to(&apv, 4);
            if names.len() >= 3
                && names[names.len() - 3].as_deref() == Some("specialisation")
                && names[names.len() - 1].as_deref() == Some("inheritParentConfig")
                && apv
                    .value()
                    .is_some_and(|v| v.syntax().text().to_string().trim() == "false")
            {
                let mut names = names_to(&apv, usize::MAX);
                names.pop();
                no_inherit.push(names);
            }
            let Some(kind) = other_system_at(&names) else {
                continue;
            };
            // Met in the order of the text, the outermost first: one inside another is
            // inside the last one found.
            if found
                .last()
                .is_some_and(|(n, ..)| n.text_range().contains_range(apv.syntax().text_range()))
            {
                continue;
            }
            let Some(value) = apv.value() else { continue };
            found.push((
                apv.syntax().clone(),
                kind,
                value,
                names_to(&apv, usize::MAX),
            ));
        }
        for (at, kind, value, names) in found {
            let kind = match kind {
                OtherKind::Specialisation { .. } => OtherKind::Specialisation {
                    inherits: !no_inherit.iter().any(|p| names.starts_with(p)),
                },
                other => other,
            };
            self.found.groups += 1;
            let outer = std::mem::replace(&mut self.group, self.found.groups - 1);
            let name = names
                .iter()
                .map(|n| {
                    n.as_deref()
                        .map_or("?".to_string(), crate::nixos::nix::attr_name)
                })
                .collect::<Vec<_>>()
                .join(".");
            self.found.is_other.resize(self.found.groups, false);
            self.found.is_other[self.group] = true;
            self.found.other.push(Other {
                group: self.group,
                kind,
                name,
                at: at.clone(),
            });
            self.visited.insert(at);
            self.module(value, Ctx::default(), false);
            self.group = outer;
        }
    }

    /// Modules the walk from the top did not reach: the nearest module function (or,
    /// failing one, the nearest attribute set given as a value) around each definition of
    /// persistence that was not seen. Each is a group of its own.
    fn nested_modules(&mut self, root: &ast::Root) {
        let top_lambda = root.expr().and_then(|e| match e {
            ast::Expr::Lambda(l) => Some(l.syntax().clone()),
            _ => None,
        });
        let others: HashSet<SyntaxNode> = self.found.other.iter().map(|o| o.at.clone()).collect();
        let mut modules: Vec<(SyntaxNode, bool)> = Vec::new();
        for node in root.syntax().descendants() {
            let Some(apv) = ast::AttrpathValue::cast(node) else {
                continue;
            };
            if self.visited.contains(apv.syntax()) || !defines_persistence(&apv) {
                continue;
            }
            if apv.syntax().ancestors().any(|a| others.contains(&a)) {
                continue;
            }
            let lambda = apv
                .syntax()
                .ancestors()
                .filter_map(ast::Lambda::cast)
                .find(|l| Some(l.syntax()) != top_lambda.as_ref());
            let module = match lambda {
                // The outermost of a chain of lambdas (`a: b: { … }`).
                Some(l) => {
                    let mut outer = l;
                    while let Some(p) = outer.syntax().parent().and_then(ast::Lambda::cast) {
                        outer = p;
                    }
                    let sure = matches!(outer.param(), Some(ast::Param::Pattern(_)))
                        && module_body(ast::Expr::Lambda(outer.clone())).is_some_and(|b| match b {
                            ast::Expr::AttrSet(_) => true,
                            ast::Expr::Apply(a) => wrapper(&a).is_some(),
                            _ => false,
                        });
                    (outer.syntax().clone(), sure)
                }
                None => {
                    let set = apv
                        .syntax()
                        .ancestors()
                        .skip(1)
                        .filter_map(ast::AttrSet::cast)
                        .find(|s| {
                            s.syntax()
                                .parent()
                                .is_some_and(|p| p.kind() != rnix::SyntaxKind::NODE_ROOT)
                        });
                    match set {
                        Some(set) => (set.syntax().clone(), true),
                        None => continue,
                    }
                }
            };
            modules.push(module);
        }
        // A module inside another one is that one's: outermost first (a node's range holds
        // those of the nodes inside it), then each one inside the last kept is dropped.
        modules.sort_by_key(|(m, _)| {
            let r = m.text_range();
            (r.start(), std::cmp::Reverse(r.end()))
        });
        let mut kept: Vec<(SyntaxNode, bool)> = Vec::new();
        for module in modules {
            let inside = kept
                .last()
                .is_some_and(|(k, _)| k.text_range().contains_range(module.0.text_range()));
            if !inside {
                kept.push(module);
            }
        }
        for (node, sure) in kept {
            let Some(expr) = ast::Expr::cast(node) else {
                continue;
            };
            self.found.groups += 1;
            let outer = std::mem::replace(&mut self.group, self.found.groups - 1);
            if !sure {
                self.found.unsure.push(self.group);
            }
            self.module(expr, Ctx::default(), false);
            self.group = outer;
        }
    }

    /// A module: a function or an attribute set of settings.
    fn module(&mut self, expr: ast::Expr, ctx: Ctx, top: bool) {
        let at = expr.syntax().clone();
        match module_body(expr) {
            Some(ast::Expr::AttrSet(set)) => self.module_set(set, ctx, top),
            Some(ast::Expr::BinOp(op)) if op.operator() == Some(BinOpKind::Update) => {
                // `(lib.something …) // { config = …; }`: what the left side adds, or
                // takes away from the right, cannot be seen.
                let readonly = Ctx {
                    readonly: true,
                    ..ctx
                };
                for side in [op.lhs(), op.rhs()].into_iter().flatten() {
                    self.module(side, readonly, false);
                }
                self.found.opaque.push(Opaque {
                    path: Vec::new(),
                    group: self.group,
                    at: op.syntax().clone(),
                });
            }
            // `{ config, lib, ... }: lib.mkIf cond { … }`: the module system takes a
            // module's settings through mkIf, mkMerge and priorities too.
            Some(ast::Expr::Apply(apply)) if wrapper(&apply).is_some() => {
                match wrapper(&apply).expect("checked") {
                    Wrapper::If(inner) => self.module(inner, ctx.gated(), top),
                    Wrapper::Priority(inner) => self.module(inner, ctx, top),
                    Wrapper::Merge(items) => {
                        for (item, ctx) in merged_items(items, ctx) {
                            match item {
                                Some(item) => self.module(item, ctx, false),
                                None => self.found.opaque.push(Opaque {
                                    path: Vec::new(),
                                    group: self.group,
                                    at: apply.syntax().clone(),
                                }),
                            }
                        }
                    }
                }
            }
            _ => {
                if top {
                    self.found.no_module.get_or_insert(at);
                }
            }
        }
    }

    fn module_set(&mut self, set: ast::AttrSet, ctx: Ctx, top: bool) {
        let names = first_names(&set);
        if top && let Some((_, at)) = names.iter().find(|(n, _)| FLAKE_KEYS.contains(&n.as_str())) {
            self.found.flake.get_or_insert(at.clone());
            self.flake_modules(&set, Vec::new(), ctx);
            return;
        }
        if let Some((_, at)) = names.iter().find(|(n, _)| n == "home") {
            self.found.home_manager.push((self.group, at.clone()));
            return;
        }
        let full = names.iter().any(|(n, _)| n == "config" || n == "options");
        for entry in set.entries() {
            let ast::Entry::AttrpathValue(apv) = entry else {
                continue;
            };
            let Some(keys) = apv
                .attrpath()
                .map(|p| p.attrs().map(key).collect::<Vec<_>>())
            else {
                continue;
            };
            let Some(value) = apv.value() else { continue };
            match keys.first().and_then(|k| k.name.as_deref()) {
                Some("imports") if keys.len() == 1 => self.imports(value, ctx),
                Some("config") if full => {
                    self.binding(keys[1..].to_vec(), 1, value, ctx, apv.syntax());
                }
                _ if full => {}
                _ => self.binding(keys, 1, value, ctx, apv.syntax()),
            }
        }
        if full {
            // Settings written `config.x = …` beside `options`: a new one is written so.
            self.found.sites.push(Site {
                path: Vec::new(),
                set: set.clone(),
                prefix: vec!["config".to_string()],
                ctx,
                group: self.group,
            });
            for inherit in set.inherits() {
                if inherit.attrs().any(|a| key(a).is("config")) {
                    self.opaque(Vec::new(), inherit.syntax());
                }
            }
        } else {
            self.found.sites.push(Site {
                path: Vec::new(),
                set: set.clone(),
                prefix: Vec::new(),
                ctx,
                group: self.group,
            });
            self.inherits(&set, &[]);
        }
    }

    /// Inline modules in `imports = [ … ]`, and the items that name impermanence's or
    /// preservation's module (`inputs.preservation.nixosModules.default`).
    fn imports(&mut self, value: ast::Expr, ctx: Ctx) {
        if let Some(list) = resolve::list(&value) {
            for item in list.items() {
                let text = item.syntax().text().to_string().to_ascii_lowercase();
                for (word, family) in [
                    ("impermanence", Family::Impermanence),
                    ("preservation", Family::Preservation),
                ] {
                    if text.contains(word) {
                        self.found
                            .imported
                            .push((self.group, family, item.syntax().clone()));
                    }
                }
                if matches!(
                    module_body(item.clone()),
                    Some(ast::Expr::AttrSet(_) | ast::Expr::BinOp(_))
                ) && !matches!(item, ast::Expr::Ident(_))
                {
                    self.module(item, ctx, false);
                }
            }
        }
    }

    /// Looks for NixOS modules in a flake(-parts) set.
    fn flake_modules(&mut self, set: &ast::AttrSet, path: Vec<Key>, ctx: Ctx) {
        for apv in set.attrpath_values() {
            let Some(keys) = apv
                .attrpath()
                .map(|p| p.attrs().map(key).collect::<Vec<_>>())
            else {
                continue;
            };
            let Some(value) = apv.value() else { continue };
            let mut full = path.clone();
            full.extend(keys);
            match nixos_module_at(&full) {
                Some(true) => {
                    self.found.groups += 1;
                    let outer = std::mem::replace(&mut self.group, self.found.groups - 1);
                    self.module(value, ctx, false);
                    self.group = outer;
                }
                Some(false) => {
                    if let Some(ast::Expr::AttrSet(inner)) = module_body(value) {
                        self.flake_modules(&inner, full, ctx);
                    }
                }
                None => {}
            }
        }
    }

    fn value(&mut self, path: Vec<Key>, value: ast::Expr, ctx: Ctx, at: &SyntaxNode) {
        if path.last().is_some_and(|k| k.name.is_none()) && unknown_hides(&path) {
            self.opaque(path[..path.len() - 1].to_vec(), at);
            return;
        }
        match interest(&path) {
            Interest::Ignore => self.foreign(path, value, ctx, at),
            Interest::Scalar => {
                let value = resolve::string(&value);
                self.found.scalars.push(Scalar {
                    path,
                    value,
                    group: self.group,
                    at: at.clone(),
                });
            }
            Interest::List => {
                let def = self.list(path, value, ctx, at);
                self.found.lists.push(def);
            }
            Interest::Walk => self.walk(path, value, ctx),
        }
    }

    /// A value that should be an attribute set on the way to a list.
    fn walk(&mut self, path: Vec<Key>, value: ast::Expr, ctx: Ctx) {
        match value {
            ast::Expr::AttrSet(set) => {
                self.found.sites.push(Site {
                    path: path.clone(),
                    set: set.clone(),
                    prefix: Vec::new(),
                    ctx,
                    group: self.group,
                });
                for apv in set.attrpath_values() {
                    let Some(keys) = apv
                        .attrpath()
                        .map(|p| p.attrs().map(key).collect::<Vec<_>>())
                    else {
                        continue;
                    };
                    let Some(value) = apv.value() else { continue };
                    let mut full = path.clone();
                    full.extend(keys);
                    let start = path.len() + 1;
                    self.binding(full, start, value, ctx, apv.syntax());
                }
                self.inherits(&set, &path);
            }
            ast::Expr::Paren(p) => {
                if let Some(inner) = p.expr() {
                    self.walk(path, inner, ctx);
                }
            }
            ast::Expr::LetIn(l) => {
                if let Some(inner) = l.body() {
                    self.walk(path, inner, ctx);
                }
            }
            ast::Expr::With(w) => {
                if let Some(inner) = w.body() {
                    self.walk(path, inner, ctx);
                }
            }
            ast::Expr::Apply(apply) => match wrapper(&apply) {
                Some(Wrapper::If(inner)) => self.walk(path, inner, ctx.gated()),
                Some(Wrapper::Priority(inner)) => self.walk(path, inner, ctx),
                Some(Wrapper::Merge(items)) => {
                    for (item, ctx) in merged_items(items, ctx) {
                        match item {
                            Some(item) => self.walk(path.clone(), item, ctx),
                            None => self.opaque(path.clone(), apply.syntax()),
                        }
                    }
                }
                None => self.opaque(path, apply.syntax()),
            },
            ast::Expr::BinOp(op) if op.operator() == Some(BinOpKind::Update) => {
                let readonly = Ctx {
                    readonly: true,
                    ..ctx
                };
                for side in [op.lhs(), op.rhs()].into_iter().flatten() {
                    self.walk(path.clone(), side, readonly);
                }
                self.opaque(path, op.syntax());
            }
            ast::Expr::Ident(ident) => {
                // A name bound to a set: what it holds is known, but it is not edited here.
                if let Some(set) = resolve::attr_set(&ident) {
                    let readonly = Ctx {
                        readonly: true,
                        ..ctx
                    };
                    self.walk(path.clone(), ast::Expr::AttrSet(set), readonly);
                }
                self.opaque(path, ident.syntax());
            }
            other => self.opaque(path, other.syntax()),
        }
    }

    /// A binding `keys = value`; the first `start - 1` keys are the path of the set it is
    /// written in (already looked at). Each longer prefix of a dotted path must be on the
    /// way to something that matters.
    fn binding(
        &mut self,
        keys: Vec<Key>,
        start: usize,
        value: ast::Expr,
        ctx: Ctx,
        at: &SyntaxNode,
    ) {
        self.visited.insert(at.clone());
        // `home.…` among a module's settings: a home-manager module.
        if start == 1 && keys.first().is_some_and(|k| k.is("home")) {
            self.found.home_manager.push((self.group, at.clone()));
            return;
        }
        for i in start..keys.len() {
            let prefix = &keys[..i];
            if prefix.last().is_some_and(|k| k.name.is_none()) && unknown_hides(prefix) {
                return self.opaque(prefix[..i - 1].to_vec(), at);
            }
            match interest(prefix) {
                Interest::Walk => {}
                Interest::Ignore => return self.foreign(keys, value, ctx, at),
                Interest::List | Interest::Scalar => return self.opaque(prefix.to_vec(), at),
            }
        }
        self.value(keys, value, ctx, at);
    }

    /// `inherit x;` and `inherit (e) x;` in a set at `path`: each defines `path.x` with a
    /// value that is not seen here.
    fn inherits(&mut self, set: &ast::AttrSet, path: &[Key]) {
        for inherit in set.inherits() {
            for attr in inherit.attrs() {
                let mut full = path.to_vec();
                full.push(key(attr));
                match interest(&full) {
                    Interest::Ignore => {}
                    Interest::List => {
                        let def = ListDef {
                            path: full,
                            target: None,
                            entries: Vec::new(),
                            computed: Some(inherit.syntax().clone()),
                            ctx: Ctx::default(),
                            group: self.group,
                            at: inherit.syntax().clone(),
                        };
                        self.found.lists.push(def);
                    }
                    Interest::Scalar => self.found.scalars.push(Scalar {
                        path: full,
                        value: None,
                        group: self.group,
                        at: inherit.syntax().clone(),
                    }),
                    Interest::Walk => self.opaque(full, inherit.syntax()),
                }
            }
        }
    }

    fn opaque(&mut self, path: Vec<Key>, at: &SyntaxNode) {
        self.found.opaque.push(Opaque {
            path,
            group: self.group,
            at: at.clone(),
        });
    }

    /// A list definition: its literal parts (the first one editable), and what is
    /// computed.
    fn list(&mut self, path: Vec<Key>, value: ast::Expr, ctx: Ctx, at: &SyntaxNode) -> ListDef {
        let mut def = ListDef {
            path,
            target: None,
            entries: Vec::new(),
            computed: None,
            ctx,
            group: self.group,
            at: at.clone(),
        };
        let field = match def.path.last().and_then(|k| k.name.as_deref()) {
            Some("files") => List::Files.field(),
            _ => List::Directories.field(),
        };
        // The parts of `a ++ b ++ …` (right-nested), through wrappers; a stack, not
        // recursion, since a chain may be long. New entries go into the first literal
        // list behind the fewest conditions.
        let mut parts = vec![(value, ctx)];
        while let Some((part, ctx)) = parts.pop() {
            match part {
                ast::Expr::List(list) => {
                    for item in list.items() {
                        match entry(&item, field) {
                            Some(e) => def.entries.push(e),
                            None => {
                                def.computed.get_or_insert(item.syntax().clone());
                            }
                        }
                    }
                    let fewer = def.target.is_none() || ctx.gates < def.ctx.gates;
                    if fewer && !ctx.readonly {
                        def.target = Some(list);
                        def.ctx = ctx;
                    }
                }
                ast::Expr::Paren(p) => parts.extend(p.expr().map(|e| (e, ctx))),
                ast::Expr::BinOp(op) if op.operator() == Some(BinOpKind::Concat) => {
                    // Popped last first: right side pushed first.
                    parts.extend(op.rhs().map(|e| (e, ctx)));
                    parts.extend(op.lhs().map(|e| (e, ctx)));
                }
                ast::Expr::Apply(apply) => match wrapper(&apply) {
                    Some(Wrapper::If(inner)) => parts.push((inner, ctx.gated())),
                    Some(Wrapper::Priority(inner)) => parts.push((inner, ctx)),
                    Some(Wrapper::Merge(ast::Expr::List(items))) => {
                        let items: Vec<_> = items.items().collect();
                        parts.extend(items.into_iter().rev().map(|e| (e, ctx)));
                    }
                    _ => {
                        // `lib.optionals cond [ … ]`, `lib.optional cond "/x"`: its
                        // entries count as there (conditionally), but the list is computed.
                        match apply.argument() {
                            Some(ast::Expr::List(list)) => def
                                .entries
                                .extend(list.items().filter_map(|i| conditional(&i, field))),
                            Some(item) => def.entries.extend(conditional(&item, field)),
                            None => {}
                        }
                        def.computed.get_or_insert(apply.syntax().clone());
                    }
                },
                other => {
                    if let Some(list) = resolve::list(&other) {
                        def.entries
                            .extend(list.items().filter_map(|i| entry(&i, field)));
                    }
                    def.computed.get_or_insert(other.syntax().clone());
                }
            }
        }
        def
    }

    /// Lists under an option of the host's own whose name says persistence, in a binding
    /// `path = value` that is not about imperm's known options: a wrapper around them
    /// (`environment.global-persistence.directories`), or the host's own storage scheme.
    /// Other systems' configurations and home-manager's are not the host's.
    fn foreign(&mut self, path: Vec<Key>, value: ast::Expr, ctx: Ctx, at: &SyntaxNode) {
        if Family::of(&path).is_some()
            || path.first().is_some_and(|k| k.is("imports"))
            || path.iter().any(elsewhere)
        {
            return;
        }
        let n = path.len();
        let under = n > 1 && path[..n - 1].iter().any(persistence_like);
        let all = under || path.last().is_some_and(persistence_like);
        let mut path = path;
        self.foreign_at(&mut path, under, all, value, ctx, at);
    }

    /// [`Walker::foreign`] at `path`; `under`: a name before its last one says persistence,
    /// `all`: one of its names does. The path grows and shrinks in place: a deep set is
    /// walked in time linear in its size.
    fn foreign_at(
        &mut self,
        path: &mut Vec<Key>,
        under: bool,
        all: bool,
        value: ast::Expr,
        ctx: Ctx,
        at: &SyntaxNode,
    ) {
        let last = path.last().and_then(|k| k.name.as_deref());
        let list = match last {
            Some("directories" | "dirs") => Some(Some(List::Directories)),
            Some("files") => Some(Some(List::Files)),
            // A list of user names (`….user.users = [ "root" ]`); a set of users is
            // looked into.
            Some("users") if resolve::list(&value).is_some() => Some(None),
            _ => None,
        };
        if let (true, Some(list)) = (under, list) {
            let def = self.list(path.clone(), value, ctx, at);
            let entries = def.entries.into_iter().filter(|_| list.is_some()).collect();
            self.found.foreign.push(Foreign {
                path: path.clone(),
                list,
                entries,
                group: self.group,
                at: at.clone(),
            });
            return;
        }
        match value {
            ast::Expr::AttrSet(set) => {
                for apv in set.attrpath_values() {
                    let Some(keys) = apv
                        .attrpath()
                        .map(|p| p.attrs().map(key).collect::<Vec<_>>())
                    else {
                        continue;
                    };
                    let Some(value) = apv.value() else { continue };
                    if keys.is_empty() || keys.iter().any(elsewhere) {
                        continue;
                    }
                    let under = all || keys[..keys.len() - 1].iter().any(persistence_like);
                    let all = under || keys.last().is_some_and(persistence_like);
                    let len = path.len();
                    path.extend(keys);
                    self.foreign_at(path, under, all, value, ctx, apv.syntax());
                    path.truncate(len);
                }
            }
            ast::Expr::Paren(p) => {
                if let Some(inner) = p.expr() {
                    self.foreign_at(path, under, all, inner, ctx, at);
                }
            }
            ast::Expr::LetIn(l) => {
                if let Some(inner) = l.body() {
                    self.foreign_at(path, under, all, inner, ctx, at);
                }
            }
            ast::Expr::With(w) => {
                if let Some(inner) = w.body() {
                    self.foreign_at(path, under, all, inner, ctx, at);
                }
            }
            ast::Expr::Apply(apply) => match wrapper(&apply) {
                Some(Wrapper::If(inner) | Wrapper::Priority(inner)) => {
                    self.foreign_at(path, under, all, inner, ctx, at)
                }
                Some(Wrapper::Merge(items)) => {
                    for (item, ctx) in merged_items(items, ctx).into_iter() {
                        if let Some(item) = item {
                            self.foreign_at(path, under, all, item, ctx, at);
                        }
                    }
                }
                None => {}
            },
            _ => {}
        }
    }
}

/// Names under which a configuration is not the host's: home-manager's, other systems'.
fn elsewhere(key: &Key) -> bool {
    matches!(
        key.name.as_deref(),
        Some("home-manager" | "containers" | "specialisation" | "microvm")
    )
}

/// A name that says persistence: `global-persistence`, `perpetual`, `preserve`,
/// `impermanence`. A storage's name (`"/persist"`, `fileSystems."/persist"`) is a path,
/// not an option's name.
fn persistence_like(key: &Key) -> bool {
    key.name.as_deref().is_some_and(|n| {
        let n = n.to_ascii_lowercase();
        !n.starts_with('/')
            && ["persist", "perpetual", "preserv", "impermanen"]
                .iter()
                .any(|w| n.contains(w))
    })
}

/// The path of one list item: `"/x"` or `{ directory = "/x"; … }` (`file` for files), also
/// under `lib.mkIf cond …` (conditionally) or a priority.
fn entry(item: &ast::Expr, field: &str) -> Option<Entry> {
    let plain = |path: String| Entry {
        path,
        at: item.syntax().clone(),
        conditional: false,
    };
    match item {
        ast::Expr::Str(s) => resolve::str_value(s).map(plain),
        ast::Expr::Paren(p) => entry(&p.expr()?, field),
        ast::Expr::AttrSet(set) => set
            .attrpath_values()
            .find_map(|apv| {
                let mut attrs = apv.attrpath()?.attrs();
                let first = key(attrs.next()?);
                if attrs.next().is_some() || !first.is(field) {
                    return None;
                }
                resolve::string(&apv.value()?)
            })
            .map(plain),
        ast::Expr::Ident(_) => resolve::string(item).map(plain),
        ast::Expr::Apply(apply) => match wrapper(apply)? {
            Wrapper::If(inner) => conditional(&inner, field),
            Wrapper::Priority(inner) => entry(&inner, field),
            Wrapper::Merge(_) => None,
        },
        _ => None,
    }
}

fn conditional(item: &ast::Expr, field: &str) -> Option<Entry> {
    entry(item, field).map(|e| Entry {
        conditional: true,
        at: item.syntax().clone(),
        ..e
    })
}

/// The first line of a node's text, shortened, for a one-line message.
pub fn excerpt(node: &SyntaxNode) -> String {
    let text = node.text().to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    let mut out: String = first.chars().take(60).collect();
    if out.len() < first.len() || text.trim_end().contains('\n') {
        out.push('…');
    }
    out
}
