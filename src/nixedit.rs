//! Editing a host's .nix file in place: adding entries to
//! `environment.persistence."<storage>"` (its `directories`/`files`, or a user's), keeping
//! every other byte as it was. The file is parsed losslessly (rnix); the definition is
//! found however it is written (nested sets, dotted paths, in any order, in a module
//! function, behind `let`, under `config`); entries are inserted as text at the right
//! places. A list that is computed (`++`, `lib.mkIf`, `mkMerge`, a variable) is not edited.
//! Pure: text in, text out.

use rnix::ast::{self, HasEntry};
use rnix::{SyntaxNode, TextRange};
use rowan::ast::AstNode;

use crate::nix::{attr_name, string};

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
}

/// What to add.
#[derive(Clone, Debug)]
pub struct Request {
    pub storage: String,
    pub user: Option<String>,
    pub list: List,
    /// Absolute paths, or for a user paths relative to the home directory.
    pub entries: Vec<String>,
}

impl Request {
    /// The attribute path of the list.
    fn path(&self) -> Vec<String> {
        let mut p = vec![
            "environment".to_string(),
            "persistence".to_string(),
            self.storage.clone(),
        ];
        if let Some(user) = &self.user {
            p.push("users".into());
            p.push(user.clone());
        }
        p.push(self.list.name().into());
        p
    }

    /// The snippet a person adds by hand.
    pub fn snippet(&self) -> String {
        let keys: Vec<String> = self.path().iter().map(|k| attr_name(k)).collect();
        let items: String = self
            .entries
            .iter()
            .map(|e| format!("  {}\n", string(e)))
            .collect();
        format!("{} = [\n{items}];\n", keys.join("."))
    }
}

/// What an edit came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every entry is there already.
    Unchanged { present: Vec<String> },
    Edited {
        text: String,
        added: Vec<String>,
        present: Vec<String>,
    },
    /// The list (or a set on the way to it) is computed; `at` says where.
    Computed { at: String },
}

/// One place in the text where a definition on the way to the list was found.
enum Found {
    List(ast::List),
    Computed(String),
}

/// Adds the entries. `Err` when the file is not Nix or has no attribute set to edit.
pub fn add(text: &str, req: &Request) -> Result<Outcome, String> {
    let parsed = rnix::Root::parse(text);
    if let Some(e) = parsed.errors().first() {
        return Err(format!("not valid Nix: {e}"));
    }
    let root = parsed.tree();
    let body = module_body(root.expr().ok_or("the file holds no expression")?).ok_or(
        "no attribute set to edit: the file is neither a module function nor an attribute set",
    )?;
    let path = req.path();
    // A module with options writes its settings under `config`.
    let mut anchor = (body.clone(), 0usize);
    let found = search(&body, &path, 0, &mut anchor).or_else(|| {
        let mut with_config = vec!["config".to_string()];
        with_config.extend(path.iter().cloned());
        let mut config_anchor = (body.clone(), 0usize);
        let f = search(&body, &with_config, 0, &mut config_anchor)?;
        anchor = (config_anchor.0, config_anchor.1.saturating_sub(1));
        Some(f)
    });
    match found {
        Some(Found::Computed(at)) => Ok(Outcome::Computed { at }),
        Some(Found::List(list)) => {
            let existing = strings_in(&list, req.list);
            let (present, missing): (Vec<String>, Vec<String>) = req
                .entries
                .iter()
                .cloned()
                .partition(|e| existing.contains(e));
            if missing.is_empty() {
                return Ok(Outcome::Unchanged { present });
            }
            let text = insert_into_list(text, &list, &missing);
            finish(text, missing, present)
        }
        None => {
            let (set, depth) = anchor;
            let keys: Vec<String> = path[depth..].iter().map(|k| attr_name(k)).collect();
            let text = insert_binding(text, &set, &keys.join("."), &req.entries);
            finish(text, req.entries.clone(), Vec::new())
        }
    }
}

/// The result must still be Nix; anything else is a defect here, never written.
fn finish(text: String, added: Vec<String>, present: Vec<String>) -> Result<Outcome, String> {
    let parsed = rnix::Root::parse(&text);
    if let Some(e) = parsed.errors().first() {
        return Err(format!(
            "the edited file would not be valid Nix ({e}); nothing was written"
        ));
    }
    Ok(Outcome::Edited {
        text,
        added,
        present,
    })
}

/// The attribute set a module's settings are written in.
fn module_body(mut expr: ast::Expr) -> Option<ast::AttrSet> {
    loop {
        expr = match expr {
            ast::Expr::AttrSet(set) => return Some(set),
            ast::Expr::Lambda(l) => l.body()?,
            ast::Expr::LetIn(l) => l.body()?,
            ast::Expr::With(w) => w.body()?,
            ast::Expr::Paren(p) => p.expr()?,
            ast::Expr::Root(r) => r.expr()?,
            _ => return None,
        };
    }
}

/// The name of an attribute; `None` when it is computed (`${…}`).
fn attr_text(attr: ast::Attr) -> Option<String> {
    match attr {
        ast::Attr::Ident(i) => Some(i.ident_token()?.text().to_string()),
        ast::Attr::Str(s) => literal(&s),
        ast::Attr::Dynamic(_) => None,
    }
}

fn literal(s: &ast::Str) -> Option<String> {
    let mut out = String::new();
    for part in s.normalized_parts() {
        match part {
            ast::InterpolPart::Literal(t) => out.push_str(&t),
            ast::InterpolPart::Interpolation(_) => return None,
        }
    }
    Some(out)
}

fn line_of(node: &SyntaxNode) -> String {
    node.text()
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Looks for the definition of `path` in `set`. `depth` is how much of the full path was
/// consumed to reach `set`; the deepest set reached is kept in `anchor`, where a missing
/// definition is created.
fn search(
    set: &ast::AttrSet,
    path: &[String],
    depth: usize,
    anchor: &mut (ast::AttrSet, usize),
) -> Option<Found> {
    if depth > anchor.1 || depth == 0 {
        *anchor = (set.clone(), depth);
    }
    for apv in set.attrpath_values() {
        let Some(keys) = apv
            .attrpath()
            .and_then(|p| p.attrs().map(attr_text).collect::<Option<Vec<String>>>())
        else {
            continue;
        };
        let n = keys.iter().zip(path).take_while(|(a, b)| a == b).count();
        if n != keys.len() {
            continue;
        }
        let value = apv.value()?;
        if n == path.len() {
            return Some(match value {
                ast::Expr::List(list) => Found::List(list),
                other => Found::Computed(
                    line_of(apv.syntax()).replace(&other.syntax().text().to_string(), "…"),
                ),
            });
        }
        match value {
            ast::Expr::AttrSet(sub) => {
                if let Some(found) = search(&sub, &path[n..], depth + n, anchor) {
                    return Some(found);
                }
            }
            _ => return Some(Found::Computed(line_of(apv.syntax()))),
        }
    }
    None
}

/// The paths a list already has, as strings or as `{ directory = …; }` sets.
fn strings_in(list: &ast::List, kind: List) -> Vec<String> {
    list.items()
        .filter_map(|item| match item {
            ast::Expr::Str(s) => literal(&s),
            ast::Expr::AttrSet(set) => set.attrpath_values().find_map(|apv| {
                let keys: Vec<String> = apv.attrpath()?.attrs().filter_map(attr_text).collect();
                match (keys.as_slice(), apv.value()?) {
                    ([k], ast::Expr::Str(s)) if k == kind.field() => literal(&s),
                    _ => None,
                }
            }),
            _ => None,
        })
        .collect()
}

fn offset(range: TextRange) -> (usize, usize) {
    (
        u32::from(range.start()) as usize,
        u32::from(range.end()) as usize,
    )
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// The white space a line starts with.
fn indent_at(text: &str, at: usize) -> &str {
    let start = line_start(text, at);
    let line = &text[start..];
    &line[..line.len() - line.trim_start_matches([' ', '\t']).len()]
}

/// Whether only white space stands between the start of the line and `at`.
fn starts_line(text: &str, at: usize) -> bool {
    text[line_start(text, at)..at].trim().is_empty()
}

fn insert_into_list(text: &str, list: &ast::List, entries: &[String]) -> String {
    let open = list
        .l_brack_token()
        .map(|t| offset(t.text_range()).0)
        .unwrap_or(0);
    let close = list
        .r_brack_token()
        .map(|t| offset(t.text_range()).0)
        .unwrap_or(text.len());
    let items: Vec<String> = entries.iter().map(|e| string(e)).collect();
    let mut out = String::with_capacity(text.len() + 64);
    if starts_line(text, close) && !text[open..close].trim_start_matches('[').trim().is_empty() {
        // A list written one item a line: new items go on lines of their own, indented like
        // the first thing in it.
        let inner = &text[open + 1..close];
        let first = open + 1 + (inner.len() - inner.trim_start().len());
        let indent = if text[open..first].contains('\n') {
            indent_at(text, first).to_string()
        } else {
            format!("{}  ", indent_at(text, close))
        };
        let at = line_start(text, close);
        out.push_str(&text[..at]);
        for item in &items {
            out.push_str(&format!("{indent}{item}\n"));
        }
        out.push_str(&text[at..]);
    } else if text[open + 1..close].trim().is_empty() {
        // `[ ]`: made into a list of one item a line.
        let indent = indent_at(text, open).to_string();
        out.push_str(&text[..open]);
        out.push_str("[\n");
        for item in &items {
            out.push_str(&format!("{indent}  {item}\n"));
        }
        out.push_str(&format!("{indent}]"));
        out.push_str(&text[close + 1..]);
    } else {
        // A list on one line: the items join it.
        let before = text[..close].trim_end();
        out.push_str(before);
        for item in &items {
            out.push(' ');
            out.push_str(item);
        }
        out.push(' ');
        out.push_str(&text[close..]);
    }
    out
}

fn insert_binding(text: &str, set: &ast::AttrSet, key: &str, entries: &[String]) -> String {
    let close = set
        .r_curly_token()
        .map(|t| offset(t.text_range()).0)
        .unwrap_or(text.len());
    let items: Vec<String> = entries.iter().map(|e| string(e)).collect();
    let mut out = String::with_capacity(text.len() + 128);
    if starts_line(text, close) {
        let indent = match set.attrpath_values().next() {
            Some(first) => indent_at(text, offset(first.syntax().text_range()).0).to_string(),
            None => format!("{}  ", indent_at(text, close)),
        };
        let at = line_start(text, close);
        out.push_str(&text[..at]);
        out.push_str(&format!("{indent}{key} = [\n"));
        for item in &items {
            out.push_str(&format!("{indent}  {item}\n"));
        }
        out.push_str(&format!("{indent}];\n"));
        out.push_str(&text[at..]);
    } else {
        out.push_str(text[..close].trim_end());
        out.push_str(&format!(" {key} = [ {} ]; ", items.join(" ")));
        out.push_str(&text[close..]);
    }
    out
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
        assert!(add("42", &req(List::Directories, None, &["/x"])).is_err());
    }
}
