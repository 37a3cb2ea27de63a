//! Values known without evaluating: string literals, names a `let` (or a `rec` set) binds
//! to them, interpolations and `+` of such. Anything else (a function argument, `with`, an
//! option's value) is unknown, and callers refuse rather than guess.

use rnix::ast::{self, BinOpKind, HasEntry, InterpolPart};
use rowan::ast::AstNode;

/// How many names may be followed to reach a value: enough for any real chain, and a
/// bound on loops (`let a = b; b = a;`) and on blow-ups (`a = b + b; b = c + c; …`).
const HOPS: usize = 64;

/// The string `expr` stands for, when it is known.
pub fn string(expr: &ast::Expr) -> Option<String> {
    let mut hops = HOPS;
    string_in(expr, &mut hops)
}

/// The string a (possibly interpolated) string literal stands for, when it is known.
pub fn str_value(s: &ast::Str) -> Option<String> {
    let mut hops = HOPS;
    str_in(s, &mut hops)
}

/// Whether a string literal has an interpolation (Nix then treats it as computed).
pub fn is_interpolated(s: &ast::Str) -> bool {
    s.normalized_parts()
        .iter()
        .any(|p| matches!(p, InterpolPart::Interpolation(_)))
}

fn string_in(expr: &ast::Expr, hops: &mut usize) -> Option<String> {
    *hops = hops.checked_sub(1)?;
    match expr {
        ast::Expr::Str(s) => str_in(s, hops),
        ast::Expr::Paren(p) => string_in(&p.expr()?, hops),
        ast::Expr::Ident(i) => string_in(&binding(i)?, hops),
        ast::Expr::BinOp(b) if b.operator() == Some(BinOpKind::Add) => {
            let mut out = string_in(&b.lhs()?, hops)?;
            out.push_str(&string_in(&b.rhs()?, hops)?);
            Some(out)
        }
        _ => None,
    }
}

fn str_in(s: &ast::Str, hops: &mut usize) -> Option<String> {
    let mut out = String::new();
    for part in s.normalized_parts() {
        match part {
            InterpolPart::Literal(t) => out.push_str(&t),
            InterpolPart::Interpolation(i) => out.push_str(&string_in(&i.expr()?, hops)?),
        }
    }
    Some(out)
}

/// The literal list `expr` is, or a name bound to one.
pub fn list(expr: &ast::Expr) -> Option<ast::List> {
    let mut hops = HOPS;
    let mut expr = expr.clone();
    loop {
        hops = hops.checked_sub(1)?;
        expr = match expr {
            ast::Expr::List(l) => return Some(l),
            ast::Expr::Paren(p) => p.expr()?,
            ast::Expr::Ident(i) => binding(&i)?,
            _ => return None,
        };
    }
}

/// The literal attribute set a name is bound to.
pub fn attr_set(ident: &ast::Ident) -> Option<ast::AttrSet> {
    let mut hops = HOPS;
    let mut expr = binding(ident)?;
    loop {
        hops = hops.checked_sub(1)?;
        expr = match expr {
            ast::Expr::AttrSet(s) => return Some(s),
            ast::Expr::Paren(p) => p.expr()?,
            ast::Expr::Ident(i) => binding(&i)?,
            _ => return None,
        };
    }
}

/// What the enclosing `let` or `rec` set binds a name to. `None` when a function argument
/// binds it (its value comes from the caller), when it is bound to something that is not a
/// plain value (`a.b = …`, `inherit (x) a`), or when nothing in the file binds it (`with`,
/// builtins).
pub fn binding(ident: &ast::Ident) -> Option<ast::Expr> {
    let token = ident.ident_token()?;
    let name = token.text();
    for node in ident.syntax().ancestors().skip(1) {
        let scope = match_scope(&node, name);
        match scope {
            Scope::Bound(expr) => return Some(expr),
            Scope::Opaque => return None,
            Scope::Outer => {}
        }
    }
    None
}

enum Scope {
    Bound(ast::Expr),
    Opaque,
    Outer,
}

fn match_scope(node: &rnix::SyntaxNode, name: &str) -> Scope {
    if let Some(l) = ast::LetIn::cast(node.clone()) {
        return in_bindings(&l, name);
    }
    if let Some(s) = ast::AttrSet::cast(node.clone()) {
        if s.rec_token().is_some() {
            return in_bindings(&s, name);
        }
        return Scope::Outer;
    }
    if let Some(l) = ast::Lambda::cast(node.clone()) {
        let binds = match l.param() {
            Some(ast::Param::IdentParam(p)) => ident_is(p.ident(), name),
            Some(ast::Param::Pattern(p)) => {
                p.pat_entries().any(|e| ident_is(e.ident(), name))
                    || p.pat_bind().is_some_and(|b| ident_is(b.ident(), name))
            }
            None => false,
        };
        return if binds { Scope::Opaque } else { Scope::Outer };
    }
    Scope::Outer
}

fn ident_is(ident: Option<ast::Ident>, name: &str) -> bool {
    ident
        .and_then(|i| i.ident_token())
        .is_some_and(|t| t.text() == name)
}

fn in_bindings(scope: &impl HasEntry, name: &str) -> Scope {
    for apv in scope.attrpath_values() {
        let Some(path) = apv.attrpath() else {
            continue;
        };
        let mut attrs = path.attrs();
        let first = attrs.next();
        let first_is = match &first {
            Some(ast::Attr::Ident(i)) => ident_is(Some(i.clone()), name),
            Some(ast::Attr::Str(s)) => !is_interpolated(s) && str_value(s).as_deref() == Some(name),
            _ => false,
        };
        if first_is {
            return match (attrs.next(), apv.value()) {
                (None, Some(value)) => Scope::Bound(value),
                _ => Scope::Opaque,
            };
        }
    }
    for inherit in scope.inherits() {
        let names = inherit.attrs().any(|a| match a {
            ast::Attr::Ident(i) => ident_is(Some(i), name),
            _ => false,
        });
        if names {
            // `inherit a;` is the `a` of the scope around; `inherit (x) a;` is `x.a`.
            return if inherit.from().is_some() {
                Scope::Opaque
            } else {
                Scope::Outer
            };
        }
    }
    Scope::Outer
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first `${…}` or string key in `text`.
    fn key_of(text: &str) -> Option<String> {
        let root = rnix::Root::parse(text).tree();
        let attr = root
            .syntax()
            .descendants()
            .find_map(ast::Dynamic::cast)
            .expect("a dynamic key");
        string(&attr.expr()?)
    }

    #[test]
    fn let_bound_strings_resolve() {
        let cases = [
            (r#"let s = "/persist"; in { ${s} = 1; }"#, Some("/persist")),
            (r#"let a = "/p"; b = a; in { ${b} = 1; }"#, Some("/p")),
            (
                r#"let a = "/p"; in { ${"${a}ersist"} = 1; }"#,
                Some("/persist"),
            ),
            (
                r#"let a = "/p"; in { ${a + "ersist"} = 1; }"#,
                Some("/persist"),
            ),
            (r#"rec { s = "/x"; y.${s} = 1; }"#, Some("/x")),
            (r#"{ s ? "/persist", ... }: { ${s} = 1; }"#, None),
            (r#"let s = "/a"; in s: { ${s} = 1; }"#, None),
            (r#"let a = b; b = a; in { ${a} = 1; }"#, None),
            (r#"with { s = "/x"; }; { ${s} = 1; }"#, None),
            (r#"let s = x.y; in { ${s} = 1; }"#, None),
            (r#"let inherit (x) s; in { ${s} = 1; }"#, None),
            (
                r#"let s = "/o"; in let inherit s; in { ${s} = 1; }"#,
                Some("/o"),
            ),
            (r#"{ s = "/x"; y.${s} = 1; }"#, None),
        ];
        for (text, want) in cases {
            assert_eq!(key_of(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn a_chain_of_names_is_bounded() {
        let mut text = String::from("let a0 = \"/x\"; ");
        for i in 1..200 {
            text.push_str(&format!("a{i} = a{} + a{}; ", i - 1, i - 1));
        }
        text.push_str("in { ${a199} = 1; }");
        assert_eq!(key_of(&text), None);
    }
}
