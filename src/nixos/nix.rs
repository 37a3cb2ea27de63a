//! The Nix renderer: `persist` suggestions as a snippet that pastes into a host
//! configuration as is, in nix-community/impermanence's `environment.persistence` form or
//! nix-community/preservation's `preservation.preserveAt` form. Pure: suggestions in, text
//! out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use clap::ValueEnum;

use crate::discover::owners::Perms;
use crate::discover::suggest::Suggestion;
use crate::knowledge::Verdict;
use crate::persisted::Kind;

/// Which module the snippet is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Style {
    /// nix-community/impermanence: `environment.persistence."/persist"`
    #[default]
    Impermanence,
    /// nix-community/preservation: `preservation.preserveAt."/persist"`
    Preservation,
}

/// A Nix string literal.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An attribute name: bare when Nix allows it, quoted otherwise.
pub fn attr_name(s: &str) -> String {
    let mut chars = s.chars();
    let bare = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '\'' | '-'))
        && !matches!(
            s,
            "if" | "then" | "else" | "assert" | "with" | "let" | "in" | "rec" | "inherit" | "or"
        );
    if bare { s.to_string() } else { string(s) }
}

/// The comment that names a path left out of a snippet; `left_out` finds it again.
const LEFT_OUT: &str = "# imperm: left out ";

/// The paths a snippet had to leave out, with why: for a warning on stderr.
pub fn left_out(snippet: &str) -> impl Iterator<Item = &str> {
    snippet
        .lines()
        .filter_map(|l| l.strip_prefix("# imperm: "))
        .filter(|l| l.starts_with("left out "))
}

/// One list element, or why it cannot be written: a path that is not UTF-8 (Nix strings
/// have no escape for such bytes, and a replacement character would name a different
/// path), or one with a control character (a Nix string can hold it, but imperm's own
/// configuration refuses it, so the host's config.toml would no longer load).
fn element(s: &Suggestion, path: &Path, style: Style) -> Result<String, &'static str> {
    let text = path
        .to_str()
        .ok_or("its name is not UTF-8, which no Nix string can hold")?;
    if text.chars().any(char::is_control) {
        return Err("its name holds a control character, which imperm's configuration refuses");
    }
    let attrs = Attrs {
        mode: s.mode,
        owner: s.owner.as_deref(),
        group: s.group.as_deref(),
        parent: s.parent.as_ref(),
        in_initrd: s.in_initrd,
    };
    Ok(list_item(text, s.kind, &attrs, style))
}

/// What an entry is written with besides its path.
#[derive(Clone, Copy, Debug, Default)]
pub struct Attrs<'a> {
    pub mode: Option<crate::mode::Mode>,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    /// For a file: what differs of the directory the modules make for it.
    pub parent: Option<&'a Perms>,
    /// A file that must be in place before stage 2 (preservation's `inInitrd`).
    pub in_initrd: bool,
}

/// `user = …; group = …; mode = …;`, each where it is given.
fn owned(owner: Option<&str>, group: Option<&str>, mode: Option<crate::mode::Mode>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(owner) = owner {
        out.push(format!("user = {};", string(owner)));
    }
    if let Some(group) = group {
        out.push(format!("group = {};", string(group)));
    }
    if let Some(mode) = mode {
        out.push(format!("mode = \"{mode}\";"));
    }
    out
}

/// One list element, as every Nix imperm writes spells it (`--format nix` and `persist
/// add`): the path alone, or a set when it must be made with an owner, group or mode other
/// than the module's (a directory's own; for a file, impermanence's `parentDirectory`,
/// since it makes no file, and preservation's file and, with `configureParent`, its
/// `parent`), or, for preservation, a file that must be in place before stage 2
/// (`/etc/machine-id`) with `inInitrd = true`.
pub fn list_item(path: &str, kind: Kind, attrs: &Attrs, style: Style) -> String {
    let text = string(path);
    let parent = attrs
        .parent
        .map(|p| owned(p.owner.as_deref(), p.group.as_deref(), p.mode))
        .filter(|p| !p.is_empty());
    let (head, fields) = match (kind, style) {
        (Kind::Directory, _) => ("directory", owned(attrs.owner, attrs.group, attrs.mode)),
        (Kind::File, Style::Impermanence) => (
            "file",
            parent
                .map(|p| vec![format!("parentDirectory = {{ {} }};", p.join(" "))])
                .unwrap_or_default(),
        ),
        (Kind::File, Style::Preservation) => {
            let mut fields = owned(attrs.owner, attrs.group, attrs.mode);
            if attrs.in_initrd {
                fields.push("inInitrd = true;".into());
            }
            if let Some(p) = parent {
                fields.push("configureParent = true;".into());
                fields.push(format!("parent = {{ {} }};", p.join(" ")));
            }
            ("file", fields)
        }
    };
    if fields.is_empty() {
        text
    } else {
        format!("{{ {head} = {text}; {} }}", fields.join(" "))
    }
}

#[derive(Default)]
struct Lists {
    directories: Vec<String>,
    files: Vec<String>,
}

impl Lists {
    /// Adds the entry, or says why it cannot be written.
    fn push(&mut self, s: &Suggestion, path: &Path, style: Style) -> Result<(), &'static str> {
        let list = match s.kind {
            Kind::Directory => &mut self.directories,
            Kind::File => &mut self.files,
        };
        element(s, path, style).map(|e| list.push(e))
    }

    fn write(&self, out: &mut String, indent: &str) {
        for (name, items) in [("directories", &self.directories), ("files", &self.files)] {
            if items.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{indent}{name} = [");
            for item in items {
                let _ = writeln!(out, "{indent}  {item}");
            }
            let _ = writeln!(out, "{indent}];");
        }
    }
}

/// The persist suggestions as they are written: one below a known directory that must
/// have a mode (`/var/lib/private`: 0700) becomes that directory with its mode, once, as
/// `restore` writes it. Persisted alone, the inner path would get a parent made with
/// impermanence's default 0755 (what `lint` reports), and systemd then refuses to start
/// the `DynamicUser=` services whose state is in it.
fn under_required_modes(persist: Vec<&Suggestion>) -> Vec<Suggestion> {
    let knowledge = crate::knowledge::builtin();
    let mut out: Vec<Suggestion> = Vec::with_capacity(persist.len());
    for s in persist {
        let mut s = s.clone();
        let outer = knowledge.paths.iter().find_map(|k| {
            let mode = k.mode?;
            let dir = s.path.ancestors().skip(1).find(|a| k.path.matches(a))?;
            Some((dir.to_path_buf(), mode))
        });
        if let Some((dir, mode)) = outer {
            let up = s.path.components().count() - dir.components().count();
            s.relative = s.relative.map(|r| {
                let mut r = r.as_path();
                for _ in 0..up {
                    r = r.parent().unwrap_or(r);
                }
                r.to_path_buf()
            });
            s.path = dir;
            s.kind = Kind::Directory;
            s.mode = Some(mode);
        }
        match out.iter_mut().find(|o| o.path == s.path) {
            Some(o) => o.mode = o.mode.or(s.mode),
            None => out.push(s),
        }
    }
    out
}

/// The snippet for the `persist` suggestions, persisted at `storage`.
pub fn render(suggestions: &[Suggestion], storage: &Path, style: Style) -> String {
    let persist: Vec<&Suggestion> = suggestions
        .iter()
        .filter(|s| s.verdict == Verdict::Persist)
        .collect();
    if persist.is_empty() {
        return "# imperm: nothing to persist\n".to_string();
    }
    let persist = under_required_modes(persist);
    let persist: Vec<&Suggestion> = persist.iter().collect();
    let mut system = Lists::default();
    let mut users: BTreeMap<&str, Lists> = BTreeMap::new();
    let mut left_out = Vec::new();
    for s in &persist {
        let written = match (&s.user, &s.relative) {
            (Some(user), Some(rel)) => users.entry(user).or_default().push(s, rel, style),
            _ => system.push(s, &s.path, style),
        };
        if let Err(why) = written {
            left_out.push((&s.path, why));
        }
    }
    let head = match style {
        Style::Impermanence => "environment.persistence",
        Style::Preservation => "preservation.preserveAt",
    };
    let mut out = String::new();
    let written = persist.len() - left_out.len();
    let _ = writeln!(
        out,
        "# imperm: {} to persist; paste into the host's configuration",
        crate::words::count(written, "path", "paths")
    );
    for (path, why) in &left_out {
        let _ = writeln!(
            out,
            "{LEFT_OUT}{}: {why} (rename it to persist it)",
            crate::paths::escape(path)
        );
    }
    if written == 0 {
        return out;
    }
    let _ = writeln!(out, "{head}.{} = {{", string(&storage.to_string_lossy()));
    system.write(&mut out, "  ");
    for (user, lists) in users
        .iter()
        .filter(|(_, l)| !l.directories.is_empty() || !l.files.is_empty())
    {
        let _ = writeln!(out, "  users.{} = {{", attr_name(user));
        lists.write(&mut out, "    ");
        let _ = writeln!(out, "  }};");
    }
    out.push_str("};\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn suggestion(
        path: &str,
        kind: Kind,
        verdict: Verdict,
        user: Option<(&str, &str)>,
    ) -> Suggestion {
        Suggestion {
            path: path.into(),
            kind,
            verdict,
            reason: String::new(),
            source: crate::classify::Source::Knowledge,
            service: None,
            files: 1,
            bytes: 1,
            user: user.map(|(u, _)| u.to_string()),
            relative: user.map(|(_, r)| PathBuf::from(r)),
            in_initrd: false,
            mode: None,
            owner: None,
            group: None,
            parent: None,
        }
    }

    #[test]
    fn strings_and_names_are_escaped() {
        assert_eq!(string(r#"/a "b" \c ${d} $e"#), r#""/a \"b\" \\c \${d} $e""#);
        assert_eq!(attr_name("josh"), "josh");
        assert_eq!(attr_name("my-user"), "my-user");
        assert_eq!(attr_name("1user"), "\"1user\"");
        assert_eq!(attr_name("with"), "\"with\"");
    }

    #[test]
    fn impermanence_and_preservation_snippets() {
        let mut machine_id = suggestion("/etc/machine-id", Kind::File, Verdict::Persist, None);
        machine_id.in_initrd = true;
        let mut gnupg = suggestion(
            "/home/josh/.gnupg",
            Kind::Directory,
            Verdict::Persist,
            Some(("josh", ".gnupg")),
        );
        gnupg.mode = Some(crate::mode::Mode::from_bits(0o700));
        let all = vec![
            suggestion("/var/lib/forgejo", Kind::Directory, Verdict::Persist, None),
            machine_id,
            gnupg,
            suggestion(
                "/home/josh/.config",
                Kind::Directory,
                Verdict::Persist,
                Some(("josh", ".config")),
            ),
            suggestion(
                "/var/cache/nginx",
                Kind::Directory,
                Verdict::Ephemeral,
                None,
            ),
            suggestion("/etc/foo", Kind::File, Verdict::Review, None),
        ];
        assert_eq!(
            render(&all, Path::new("/persist"), Style::Impermanence),
            r#"# imperm: 4 paths to persist; paste into the host's configuration
environment.persistence."/persist" = {
  directories = [
    "/var/lib/forgejo"
  ];
  files = [
    "/etc/machine-id"
  ];
  users.josh = {
    directories = [
      { directory = ".gnupg"; mode = "0700"; }
      ".config"
    ];
  };
};
"#
        );
        let preservation = render(&all, Path::new("/persist"), Style::Preservation);
        assert!(preservation.contains("preservation.preserveAt.\"/persist\" = {"));
        assert!(preservation.contains("{ file = \"/etc/machine-id\"; inInitrd = true; }"));
        assert_eq!(
            render(&all[4..], Path::new("/persist"), Style::Impermanence),
            "# imperm: nothing to persist\n"
        );
    }

    /// An entry whose owner, group or mode differ from what the module makes carries them:
    /// a directory its own; a file, for impermanence (which makes no file), its directory's
    /// as `parentDirectory`, for preservation its own and, with `configureParent`, its
    /// directory's. Names are Nix strings.
    #[test]
    fn owners_groups_and_modes_are_written_where_they_differ() {
        let parent = Perms {
            owner: Some("forgejo".into()),
            group: None,
            mode: Some(crate::mode::Mode::from_bits(0o700)),
        };
        let mode = |m| Some(crate::mode::Mode::from_bits(m));
        let cases = [
            (
                Kind::Directory,
                Attrs {
                    owner: Some("forgejo"),
                    group: Some("forgejo"),
                    mode: mode(0o750),
                    ..Attrs::default()
                },
                Style::Impermanence,
                r#"{ directory = "/x"; user = "forgejo"; group = "forgejo"; mode = "0750"; }"#,
            ),
            (
                Kind::Directory,
                Attrs {
                    group: Some("a\"b${c}"),
                    ..Attrs::default()
                },
                Style::Preservation,
                r#"{ directory = "/x"; group = "a\"b\${c}"; }"#,
            ),
            (
                Kind::File,
                Attrs {
                    owner: Some("forgejo"),
                    mode: mode(0o600),
                    parent: Some(&parent),
                    ..Attrs::default()
                },
                Style::Impermanence,
                r#"{ file = "/x"; parentDirectory = { user = "forgejo"; mode = "0700"; }; }"#,
            ),
            (
                Kind::File,
                Attrs {
                    mode: mode(0o600),
                    ..Attrs::default()
                },
                Style::Impermanence,
                r#""/x""#,
            ),
            (
                Kind::File,
                Attrs {
                    owner: Some("forgejo"),
                    mode: mode(0o600),
                    in_initrd: true,
                    parent: Some(&parent),
                    ..Attrs::default()
                },
                Style::Preservation,
                r#"{ file = "/x"; user = "forgejo"; mode = "0600"; inInitrd = true; configureParent = true; parent = { user = "forgejo"; mode = "0700"; }; }"#,
            ),
            (
                Kind::File,
                Attrs {
                    parent: Some(&Perms::default()),
                    ..Attrs::default()
                },
                Style::Preservation,
                r#""/x""#,
            ),
        ];
        for (kind, attrs, style, want) in cases {
            let got = list_item("/x", kind, &attrs, style);
            assert_eq!(got, want, "{kind:?} {style:?}");
            let parsed = rnix::Root::parse(&format!("[ {got} ]"));
            assert!(parsed.errors().is_empty(), "{got}: {:?}", parsed.errors());
        }
    }

    /// A path below a directory that must have a mode is written as that directory with
    /// its mode, once: the state of two `DynamicUser=` services is persisted as
    /// `/var/lib/private` at 0700, a user's `.gnupg/…` as `.gnupg` at 0700.
    #[test]
    fn paths_below_a_directory_that_needs_a_mode_become_it() {
        let all = vec![
            suggestion(
                "/var/lib/private/a",
                Kind::Directory,
                Verdict::Persist,
                None,
            ),
            suggestion("/var/lib/private/b", Kind::File, Verdict::Persist, None),
            suggestion(
                "/var/lib/privateer",
                Kind::Directory,
                Verdict::Persist,
                None,
            ),
            suggestion(
                "/home/josh/.gnupg/private-keys-v1.d",
                Kind::Directory,
                Verdict::Persist,
                Some(("josh", ".gnupg/private-keys-v1.d")),
            ),
        ];
        assert_eq!(
            render(&all, Path::new("/persist"), Style::Impermanence),
            r#"# imperm: 3 paths to persist; paste into the host's configuration
environment.persistence."/persist" = {
  directories = [
    { directory = "/var/lib/private"; mode = "0700"; }
    "/var/lib/privateer"
  ];
  users.josh = {
    directories = [
      { directory = ".gnupg"; mode = "0700"; }
    ];
  };
};
"#
        );
    }

    /// What a Nix string cannot hold, or imperm's configuration would refuse once pasted
    /// in, is left out with a comment saying why; the rest is written.
    #[test]
    fn names_that_cannot_be_persisted_are_left_out_with_why() {
        use std::os::unix::ffi::OsStrExt;
        let mut bad_bytes = suggestion("/x", Kind::Directory, Verdict::Persist, None);
        bad_bytes.path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/var/lib/a\xff"));
        let all = vec![
            bad_bytes,
            suggestion("/var/lib/tab\tin", Kind::Directory, Verdict::Persist, None),
            suggestion(
                "/home/j/new\nline",
                Kind::File,
                Verdict::Persist,
                Some(("j", "new\nline")),
            ),
            suggestion("/var/lib/ok", Kind::Directory, Verdict::Persist, None),
        ];
        let text = render(&all, Path::new("/persist"), Style::Impermanence);
        let notes: Vec<&str> = left_out(&text).collect();
        assert_eq!(notes.len(), 3, "{text}");
        assert!(notes[0].contains("not UTF-8"), "{text}");
        assert!(notes[1].contains("control character"), "{text}");
        assert!(notes[2].contains("control character"), "{text}");
        assert!(text.contains("\"/var/lib/ok\""), "{text}");
        assert!(!text.contains("tab\tin") && !text.contains("\\t"), "{text}");
        assert!(text.starts_with("# imperm: 1 path to persist"), "{text}");
    }

    #[test]
    fn snippets_parse_as_nix() {
        let all = vec![
            suggestion(
                "/var/lib/we\"ird ${x}",
                Kind::Directory,
                Verdict::Persist,
                None,
            ),
            suggestion(
                "/home/a-b/.ssh",
                Kind::Directory,
                Verdict::Persist,
                Some(("a-b", ".ssh")),
            ),
        ];
        for style in [Style::Impermanence, Style::Preservation] {
            let text = render(&all, Path::new("/persist"), style);
            // A binding is not an expression: wrap it in an attribute set, as a module has.
            let parsed = rnix::Root::parse(&format!("{{\n{text}}}"));
            assert!(
                parsed.errors().is_empty(),
                "{style:?}: {:?}\n{text}",
                parsed.errors()
            );
        }
    }
}
