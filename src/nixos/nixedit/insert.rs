//! Inserting text: new items into a literal list, or a new binding into an attribute set,
//! laid out like what is around them, with the file's own line endings.

use rnix::TextRange;
use rnix::ast;

fn offset(range: TextRange) -> (usize, usize) {
    (
        u32::from(range.start()) as usize,
        u32::from(range.end()) as usize,
    )
}

/// The line ending a file uses: CRLF when most of its lines end so.
pub fn eol(text: &str) -> &'static str {
    let crlf = text.matches("\r\n").count();
    let lf = text.matches('\n').count() - crlf;
    if crlf > lf { "\r\n" } else { "\n" }
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

/// Whether only `;`, white space and a comment follow `at` on its line.
fn ends_binding_line(text: &str, at: usize) -> bool {
    let rest = &text[at + 1..];
    let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
    let line = line.trim_start().trim_start_matches(';').trim();
    line.is_empty() || line.starts_with('#')
}

/// `items` (Nix expressions) added at the end of `list`.
pub fn into_list(text: &str, list: &ast::List, items: &[String], eol: &str) -> String {
    let open = list
        .l_brack_token()
        .map(|t| offset(t.text_range()).0)
        .unwrap_or(0);
    let close = list
        .r_brack_token()
        .map(|t| offset(t.text_range()).0)
        .unwrap_or(text.len());
    let mut out = String::with_capacity(text.len() + 64);
    if starts_line(text, close) && !text[open + 1..close].trim().is_empty() {
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
        for item in items {
            out.push_str(&format!("{indent}{item}{eol}"));
        }
        out.push_str(&text[at..]);
    } else if text[open + 1..close].trim().is_empty() && ends_binding_line(text, close) {
        // `[ ]` ending its line: made into a list of one item a line.
        let indent = indent_at(text, open).to_string();
        out.push_str(&text[..open]);
        out.push('[');
        out.push_str(eol);
        for item in items {
            out.push_str(&format!("{indent}  {item}{eol}"));
        }
        out.push_str(&format!("{indent}]"));
        out.push_str(&text[close + 1..]);
    } else {
        // A list on one line (or closed on the line of its last item): the items join it,
        // spaced as it is (`[ "a" "b" ]` or `["a" "b"]`).
        let before = text[..close].trim_end();
        let spaced = before.len() < close;
        out.push_str(before);
        for item in items {
            out.push(' ');
            out.push_str(item);
        }
        if spaced {
            out.push(' ');
        }
        out.push_str(&text[close..]);
    }
    out
}

/// A binding `key = [ items ];` added at the end of `set`.
pub fn binding(text: &str, set: &ast::AttrSet, key: &str, items: &[String], eol: &str) -> String {
    let close = set
        .r_curly_token()
        .map(|t| offset(t.text_range()).0)
        .unwrap_or(text.len());
    let open = set
        .l_curly_token()
        .map(|t| offset(t.text_range()).0)
        .unwrap_or(0);
    let mut out = String::with_capacity(text.len() + 128);
    if starts_line(text, close) && text[open..close].contains('\n') {
        // Indented like the last binding that starts a line.
        let last = rowan::ast::AstNode::syntax(set)
            .children()
            .filter(|n| {
                matches!(
                    n.kind(),
                    rnix::SyntaxKind::NODE_ATTRPATH_VALUE | rnix::SyntaxKind::NODE_INHERIT
                )
            })
            .map(|n| offset(n.text_range()).0)
            .filter(|&at| starts_line(text, at))
            .last();
        let indent = match last {
            Some(at) => indent_at(text, at).to_string(),
            None => format!("{}  ", indent_at(text, close)),
        };
        let at = line_start(text, close);
        out.push_str(&text[..at]);
        out.push_str(&format!("{indent}{key} = [{eol}"));
        for item in items {
            out.push_str(&format!("{indent}  {item}{eol}"));
        }
        out.push_str(&format!("{indent}];{eol}"));
        out.push_str(&text[at..]);
    } else {
        out.push_str(text[..close].trim_end());
        out.push_str(&format!(" {key} = [ {} ]; ", items.join(" ")));
        out.push_str(&text[close..]);
    }
    out
}
