//! What the host's systemd units say about where their services keep things:
//! `StateDirectory=`, `CacheDirectory=`, `LogsDirectory=`, `RuntimeDirectory=`,
//! `ConfigurationDirectory=`, with `DynamicUser=` and the `*DirectoryMode=` settings.
//!
//! The parsing and the meaning are pure (`parse`, `Settings::apply`, `directories`); the
//! reading of unit files from the tree (`read`) follows systemd's own rules: the first unit
//! file of a name in the search path wins, every drop-in (`NAME.d/*.conf`, the template's
//! for an instance) is applied after it in file-name order, an empty assignment empties a
//! list, and instances of templates are the ones the tree enables (`*.wants/foo@x.service`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::mode::Mode;

/// The kinds of directory a unit can have systemd make for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirKind {
    State,
    Cache,
    Logs,
    Runtime,
    Configuration,
}

impl DirKind {
    pub const ALL: [DirKind; 5] = [
        DirKind::State,
        DirKind::Cache,
        DirKind::Logs,
        DirKind::Runtime,
        DirKind::Configuration,
    ];

    /// The setting's name (`StateDirectory`).
    pub fn setting(self) -> &'static str {
        match self {
            DirKind::State => "StateDirectory",
            DirKind::Cache => "CacheDirectory",
            DirKind::Logs => "LogsDirectory",
            DirKind::Runtime => "RuntimeDirectory",
            DirKind::Configuration => "ConfigurationDirectory",
        }
    }

    fn mode_setting(self) -> &'static str {
        match self {
            DirKind::State => "StateDirectoryMode",
            DirKind::Cache => "CacheDirectoryMode",
            DirKind::Logs => "LogsDirectoryMode",
            DirKind::Runtime => "RuntimeDirectoryMode",
            DirKind::Configuration => "ConfigurationDirectoryMode",
        }
    }

    /// Where the system manager puts it (systemd.exec(5), "Paths").
    fn base(self) -> &'static str {
        match self {
            DirKind::State => "/var/lib",
            DirKind::Cache => "/var/cache",
            DirKind::Logs => "/var/log",
            DirKind::Runtime => "/run",
            DirKind::Configuration => "/etc",
        }
    }

    /// With `DynamicUser=`, state, cache and logs live under `private/` (the plain name is
    /// a symlink to it), so that a recycled UID cannot reach them.
    fn private_with_dynamic_user(self) -> bool {
        matches!(self, DirKind::State | DirKind::Cache | DirKind::Logs)
    }
}

/// One `Key=Value` of a unit file, in order, with the section it is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub section: String,
    pub key: String,
    pub value: String,
}

/// The assignments of a unit file's text, as systemd.syntax(7) reads them: comments (`#`,
/// `;`) and blank lines skipped, a trailing backslash joining the next line with a space
/// (comment lines inside a continuation are dropped), whitespace around key and value
/// trimmed. Lines that are none of these are ignored, as systemd ignores them (with a
/// warning), rather than failing the whole file.
pub fn parse(text: &str) -> Vec<Assignment> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim_start();
        if pending.is_some() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        let joined = match pending.take() {
            Some(mut head) => {
                head.push(' ');
                head.push_str(line);
                head
            }
            None => {
                if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                line.to_string()
            }
        };
        if let Some(head) = joined.strip_suffix('\\') {
            pending = Some(head.to_string());
            continue;
        }
        let joined = joined.trim_end();
        if let Some(name) = joined
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            section = name.to_string();
            continue;
        }
        if let Some((key, value)) = joined.split_once('=') {
            out.push(Assignment {
                section: section.clone(),
                key: key.trim().to_string(),
                value: value.trim().to_string(),
            });
        }
    }
    if let Some(last) = pending {
        // A continuation at the end of the file ends there.
        if let Some((key, value)) = last.trim_end().split_once('=') {
            out.push(Assignment {
                section,
                key: key.trim().to_string(),
                value: value.trim().to_string(),
            });
        }
    }
    out
}

/// The settings of one unit this module cares about, after every file is applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub dirs: BTreeMap<DirKind, Vec<String>>,
    pub modes: BTreeMap<DirKind, Mode>,
    pub dynamic_user: bool,
}

impl Settings {
    /// Applies one file's assignments on top of what is there (the unit file first, then
    /// each drop-in): lists grow, an empty value empties them, the last scalar wins.
    pub fn apply(&mut self, assignments: &[Assignment]) {
        for a in assignments.iter().filter(|a| a.section == "Service") {
            if a.key == "DynamicUser" {
                if let Some(b) = parse_bool(&a.value) {
                    self.dynamic_user = b;
                }
                continue;
            }
            for kind in DirKind::ALL {
                if a.key == kind.setting() {
                    let list = self.dirs.entry(kind).or_default();
                    if a.value.is_empty() {
                        list.clear();
                    } else {
                        list.extend(a.value.split_whitespace().map(String::from));
                    }
                } else if a.key == kind.mode_setting() {
                    if let Some(mode) = parse_octal(&a.value) {
                        self.modes.insert(kind, mode);
                    }
                }
            }
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

fn parse_octal(v: &str) -> Option<Mode> {
    if v.is_empty() || v.len() > 4 || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(v, 8).ok().map(Mode::from_bits)
}

/// A directory a unit has systemd make, where it really is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnitDir {
    /// The unit (`forgejo.service`, `getty@tty1.service`).
    pub unit: String,
    pub kind: DirKind,
    /// Absolute: `/var/lib/forgejo`, or `/var/lib/private/forgejo` with `DynamicUser=`.
    #[serde(serialize_with = "crate::paths::json")]
    pub path: PathBuf,
    /// The mode systemd gives it (`StateDirectoryMode=`, 0755 when unset).
    pub mode: Mode,
    pub dynamic_user: bool,
}

/// The directories `settings` make for `unit`. A value's specifiers are expanded for the
/// unit's name (`%i`, `%I`, `%p`, `%P`, `%n`, `%N`, `%%`); one with another specifier, or
/// that is not a plain relative path (absolute, `..`, empty component), is left out, as
/// systemd refuses such a unit. `a:b` (systemd 257: also make symlink `b` to `a`) is `a`.
pub fn directories(unit: &str, settings: &Settings) -> Vec<UnitDir> {
    let mut out = Vec::new();
    for (kind, values) in &settings.dirs {
        let mode = settings
            .modes
            .get(kind)
            .copied()
            .unwrap_or(Mode::from_bits(0o755));
        for value in values {
            let name = value.split(':').next().unwrap_or_default();
            let Some(name) = expand_specifiers(name, unit) else {
                continue;
            };
            if !is_plain_relative(&name) {
                continue;
            }
            let private = settings.dynamic_user && kind.private_with_dynamic_user();
            let mut path = PathBuf::from(kind.base());
            if private {
                path.push("private");
            }
            path.push(&name);
            out.push(UnitDir {
                unit: unit.to_string(),
                kind: *kind,
                path,
                mode,
                dynamic_user: settings.dynamic_user,
            });
        }
    }
    out
}

fn is_plain_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && !name.chars().any(char::is_control)
}

/// `%i`-style specifiers of systemd.unit(5) that depend on the unit's name; `None` for a
/// value with any other (it depends on the machine at run time) or an instance specifier
/// in a unit that is not an instance.
fn expand_specifiers(value: &str, unit: &str) -> Option<String> {
    let stem = unit.rsplit_once('.').map_or(unit, |(stem, _)| stem);
    let (prefix, instance) = match stem.split_once('@') {
        Some((p, i)) => (p, Some(i)),
        None => (stem, None),
    };
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '%' => out.push('%'),
            'n' => out.push_str(unit),
            'N' => out.push_str(stem),
            'p' => out.push_str(&unescape(prefix)?),
            'P' => out.push_str(&unescape(prefix)?),
            'i' => out.push_str(instance.filter(|i| !i.is_empty())?),
            'I' => out.push_str(&unescape(instance.filter(|i| !i.is_empty())?)?),
            _ => return None,
        }
    }
    Some(out)
}

/// systemd-escape's inverse for a unit-name part: `-` is `/`, `\xNN` a byte.
fn unescape(part: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let raw = part.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'-' => {
                bytes.push(b'/');
                i += 1;
            }
            b'\\' if raw.get(i + 1) == Some(&b'x') => {
                let hex = std::str::from_utf8(raw.get(i + 2..i + 4)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            b => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

/// The unit directories of the system manager, highest priority first (systemd.unit(5),
/// "System Unit Search Path", without the ones only `systemctl` writes at run time).
pub const SEARCH_PATH: [&str; 7] = [
    "/etc/systemd/system",
    "/run/systemd/transient",
    "/run/systemd/system",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The template a unit instance comes from (`foo@x.service` → `foo@.service`).
pub fn template_of(unit: &str) -> Option<String> {
    let (stem, suffix) = unit.rsplit_once('.')?;
    let (prefix, instance) = stem.split_once('@')?;
    (!instance.is_empty()).then(|| format!("{prefix}@.{suffix}"))
}

/// Whether `name` is a unit this module reads (a service; templates are read through their
/// instances).
pub fn is_service(name: &str) -> bool {
    name.ends_with(".service") && !name.starts_with('.')
}

/// Where a name's files are, relative to the search path, for `read`: the unit file's
/// directory entries and the drop-in directory names to look in, in priority order.
pub fn dropin_dirs(unit: &str) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(template) = template_of(unit) {
        dirs.push(format!("{template}.d"));
    }
    dirs.push(format!("{unit}.d"));
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(texts: &[&str]) -> Settings {
        let mut s = Settings::default();
        for t in texts {
            s.apply(&parse(t));
        }
        s
    }

    /// A directory as the tables spell it: kind, path, mode.
    type Row = (DirKind, String, String);

    fn paths(unit: &str, texts: &[&str]) -> Vec<Row> {
        directories(unit, &settings(texts))
            .into_iter()
            .map(|d| (d.kind, d.path.display().to_string(), d.mode.to_string()))
            .collect()
    }

    #[test]
    fn unit_file_syntax() {
        let text = "# comment\n; also\n[Unit]\nDescription = x\n\n[Service]\nStateDirectory=a \\\n  # dropped inside a continuation\n  b\nExecStart=/bin/x --flag=1\nnot an assignment\n[Install]\nWantedBy=multi-user.target\n";
        let got: Vec<(String, String, String)> = parse(text)
            .into_iter()
            .map(|a| (a.section, a.key, a.value))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Unit".into(), "Description".into(), "x".into()),
                ("Service".into(), "StateDirectory".into(), "a  b".into()),
                (
                    "Service".into(),
                    "ExecStart".into(),
                    "/bin/x --flag=1".into()
                ),
                (
                    "Install".into(),
                    "WantedBy".into(),
                    "multi-user.target".into()
                ),
            ]
        );
        // A continuation running off the end of the file still counts.
        assert_eq!(parse("[Service]\nStateDirectory=x \\")[0].value, "x");
    }

    #[test]
    fn what_units_declare_and_where_it_is() {
        use DirKind::*;
        let s = |k: DirKind, p: &str, m: &str| (k, p.to_string(), m.to_string());
        let cases: Vec<(&str, Vec<&str>, Vec<Row>)> = vec![
            (
                "forgejo.service",
                vec![
                    "[Service]\nStateDirectory=forgejo\nStateDirectoryMode=0750\nCacheDirectory=forgejo\n",
                ],
                vec![
                    s(State, "/var/lib/forgejo", "0750"),
                    s(Cache, "/var/cache/forgejo", "0755"),
                ],
            ),
            // DynamicUser=: state, cache and logs under private/, runtime not.
            (
                "adguardhome.service",
                vec![
                    "[Service]\nDynamicUser=yes\nStateDirectory=AdGuardHome\nRuntimeDirectory=agh\nLogsDirectory=agh\n",
                ],
                vec![
                    s(State, "/var/lib/private/AdGuardHome", "0755"),
                    s(Logs, "/var/log/private/agh", "0755"),
                    s(Runtime, "/run/agh", "0755"),
                ],
            ),
            // A drop-in adds to a list, an empty assignment empties it, the last
            // DynamicUser= wins; settings outside [Service] are not these settings.
            (
                "x.service",
                vec![
                    "[Service]\nStateDirectory=a b\n[Unit]\nStateDirectory=nope\n",
                    "[Service]\nStateDirectory=\nStateDirectory=c\nDynamicUser=true\n",
                    "[Service]\nDynamicUser=no\n",
                ],
                vec![s(State, "/var/lib/c", "0755")],
            ),
            // Specifiers of the unit's name; anything else, or a path that is not plain,
            // is left out; `a:b` makes `a`.
            (
                "getty@tty1.service",
                vec![
                    "[Service]\nStateDirectory=%p-%i %n %H ../up /abs a//b ok:alias\nConfigurationDirectory=%N\n",
                ],
                vec![
                    s(State, "/var/lib/getty-tty1", "0755"),
                    s(State, "/var/lib/getty@tty1.service", "0755"),
                    s(State, "/var/lib/ok", "0755"),
                    s(Configuration, "/etc/getty@tty1", "0755"),
                ],
            ),
            (
                "t@.service",
                vec!["[Service]\nStateDirectory=t-%i\n"],
                vec![],
            ),
            (
                "m.service",
                vec!["[Service]\nStateDirectory=m\nStateDirectoryMode=999\n"],
                vec![s(State, "/var/lib/m", "0755")],
            ),
            (
                "esc@a-b.service",
                vec!["[Service]\nStateDirectory=s/%I\n"],
                vec![s(State, "/var/lib/s/a/b", "0755")],
            ),
        ];
        for (unit, texts, want) in cases {
            assert_eq!(paths(unit, &texts), want, "{unit}");
        }
    }

    #[test]
    fn templates_and_dropins() {
        assert_eq!(
            template_of("foo@bar.service").as_deref(),
            Some("foo@.service")
        );
        assert_eq!(template_of("foo@.service"), None);
        assert_eq!(template_of("foo.service"), None);
        assert_eq!(
            dropin_dirs("foo@bar.service"),
            vec!["foo@.service.d", "foo@bar.service.d"]
        );
    }
}
