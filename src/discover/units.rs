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
    pub fn base(self) -> &'static str {
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

/// Whether `name` is a template (`foo@.service`), which is only read through instances.
pub fn is_template(name: &str) -> bool {
    name.rsplit_once('.')
        .and_then(|(stem, _)| stem.split_once('@'))
        .is_some_and(|(_, instance)| instance.is_empty())
}

/// The names of the drop-in directories that apply to `unit`, in the order systemd looks
/// at them in each unit directory (systemd.unit(5), "Description"): every service's
/// `service.d`, each dash-prefix of the name (`foo-.service.d` for `foo-bar.service`), the
/// template's (`foo@.service.d` for an instance), then the unit's own.
pub fn dropin_dirs(unit: &str) -> Vec<String> {
    let mut dirs = Vec::new();
    let Some((stem, suffix)) = unit.rsplit_once('.') else {
        return dirs;
    };
    dirs.push(format!("{suffix}.d"));
    let prefix = stem.split_once('@').map_or(stem, |(p, _)| p);
    for (i, _) in prefix.match_indices('-') {
        if i > 0 {
            dirs.push(format!("{}-.{suffix}.d", &prefix[..i]));
        }
    }
    if let Some(template) = template_of(unit) {
        dirs.push(format!("{template}.d"));
    }
    dirs.push(format!("{unit}.d"));
    dirs
}

/// Whether `name` is a valid name of a service, template or instance (systemd's
/// `unit_name_is_valid`): at most 255 bytes of letters, digits and `:-_.\\`, one `@`
/// between the prefix and the instance (which may hold `@` too). A name with a newline, a
/// slash or a byte that is not UTF-8 is none: systemd would not load it either.
pub fn is_valid_service_name(name: &str) -> bool {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\');
    let Some(stem) = name.strip_suffix(".service") else {
        return false;
    };
    if name.len() > 255 || stem.is_empty() {
        return false;
    }
    match stem.split_once('@') {
        Some((prefix, instance)) => {
            !prefix.is_empty()
                && prefix.chars().all(valid)
                && instance.chars().all(|c| valid(c) || c == '@')
        }
        None => stem.chars().all(valid),
    }
}

/// A unit file's text as systemd reads it: a line that is not UTF-8 is skipped (systemd
/// logs it and goes on), so it becomes an empty line and the others keep their numbers.
pub fn text_of(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if let Ok(line) = std::str::from_utf8(line) {
            out.push_str(line);
        }
    }
    out
}

/// The most bytes of one unit file or drop-in that are read: systemd's own limit for a
/// line is 1 MiB, and real unit files are a few KiB.
pub const FILE_MAX: u64 = 1 << 20;
/// The most entries of one unit directory looked at, and the most units read: a NixOS
/// host has about a thousand.
const ENTRIES_MAX: usize = 100_000;
const UNITS_MAX: usize = 50_000;
/// The most bytes read over all unit files.
const TOTAL_MAX: u64 = 256 << 20;

/// What the units of a tree declare.
#[derive(Debug, Default)]
pub struct Found {
    pub dirs: Vec<UnitDir>,
    /// Unit files that could not be read, with why (one line each, for a note).
    pub problems: Vec<String>,
}

/// Reads the services of the tree as its system manager would: the first unit file of a
/// name in [`SEARCH_PATH`] wins (a link to `/dev/null`, or an empty file, masks it), an
/// instance without a file of its own takes its template's, the drop-ins of
/// [`dropin_dirs`] are applied in file-name order (the first directory of the search path
/// wins for a name), and instances are those named in `*.wants`, `*.requires` and
/// `*.upholds` directories. Every path resolves as the tree sees it (NixOS links the unit
/// directories and files into `/nix/store`: an absolute link names the tree's file, never
/// the host's). Nothing here fails the command: what cannot be read is a problem to report.
pub fn read(tree: &crate::beneath::Tree) -> Found {
    let mut reader = Reader {
        tree,
        found: Found::default(),
        budget: TOTAL_MAX,
        listed: BTreeMap::new(),
    };
    reader.run();
    reader.found
}

struct Reader<'t> {
    tree: &'t crate::beneath::Tree,
    found: Found,
    budget: u64,
    /// The drop-in directories listed so far (`service.d` applies to every service: it is
    /// listed once, not once per service).
    listed: BTreeMap<PathBuf, Vec<String>>,
}

/// A file found in a unit directory: the search path's index (lower wins) and where it is.
type Located = (usize, PathBuf);

impl Reader<'_> {
    fn problem(&mut self, path: &std::path::Path, why: impl std::fmt::Display) {
        self.found
            .problems
            .push(format!("{}: {why}", crate::paths::escape(path)));
    }

    /// The names in the tree's directory `dir` that are UTF-8 and hold no control
    /// character (`None` when there is no such directory).
    fn list(&mut self, dir: &std::path::Path) -> Option<Vec<String>> {
        let fd = match self.tree.open_dir_resolved(dir) {
            Ok(Some(fd)) => fd,
            Ok(None) => return None,
            Err(e) => {
                self.problem(dir, cause(&e));
                return None;
            }
        };
        let mut names = Vec::new();
        let entries = match rustix::fs::Dir::read_from(&fd) {
            Ok(entries) => entries,
            Err(e) => {
                self.problem(dir, cause(&e.into()));
                return None;
            }
        };
        let mut seen = 0usize;
        for entry in entries {
            let Ok(entry) = entry else { break };
            seen += 1;
            if seen > ENTRIES_MAX {
                self.problem(
                    dir,
                    format!("more than {ENTRIES_MAX} entries; the rest are not read"),
                );
                break;
            }
            let Ok(name) = std::str::from_utf8(entry.file_name().to_bytes()) else {
                continue;
            };
            if name == "." || name == ".." || name.chars().any(char::is_control) {
                continue;
            }
            names.push(name.to_string());
        }
        names.sort();
        Some(names)
    }

    fn run(&mut self) {
        let mut files: BTreeMap<String, Located> = BTreeMap::new();
        let mut dropins: BTreeMap<String, Vec<Located>> = BTreeMap::new();
        let mut instances: std::collections::BTreeSet<String> = Default::default();
        for (priority, dir) in SEARCH_PATH.iter().enumerate() {
            let dir = std::path::Path::new(dir);
            let Some(names) = self.list(dir) else {
                continue;
            };
            for name in names {
                if is_valid_service_name(&name) {
                    let at = dir.join(&name);
                    files.entry(name).or_insert((priority, at));
                } else if name.ends_with(".d") {
                    let at = dir.join(&name);
                    dropins.entry(name).or_default().push((priority, at));
                } else if [".wants", ".requires", ".upholds"]
                    .iter()
                    .any(|s| name.ends_with(s))
                {
                    for linked in self.list(&dir.join(&name)).unwrap_or_default() {
                        if is_valid_service_name(&linked) && template_of(&linked).is_some() {
                            instances.insert(linked);
                        }
                    }
                }
            }
        }
        let mut units: Vec<String> = files.keys().filter(|n| !is_template(n)).cloned().collect();
        units.extend(instances.into_iter().filter(|i| !files.contains_key(i)));
        units.sort();
        units.dedup();
        if units.len() > UNITS_MAX {
            let first = std::path::Path::new(SEARCH_PATH[0]);
            self.problem(
                first,
                format!("more than {UNITS_MAX} services; the rest are not read"),
            );
            units.truncate(UNITS_MAX);
        }
        let names: std::collections::BTreeSet<&str> = units.iter().map(String::as_str).collect();
        let mut dirs = Vec::new();
        for unit in &units {
            let fragment = files
                .get(unit)
                .or_else(|| template_of(unit).and_then(|t| files.get(&t)));
            let Some((_, fragment)) = fragment else {
                continue;
            };
            let Some(bytes) = self.unit_file(fragment, unit, &names) else {
                continue;
            };
            let mut settings = Settings::default();
            settings.apply(&parse(&text_of(&bytes)));
            for dropin in self.dropins(unit, &dropins) {
                if let Some((bytes, _)) = self.conf(&dropin) {
                    settings.apply(&parse(&text_of(&bytes)));
                }
            }
            dirs.extend(directories(unit, &settings));
        }
        self.found.dirs = dirs;
    }

    /// A unit's file, read; `None` when it is masked, an alias of another unit read under
    /// its own name, or cannot be read (a problem then).
    fn unit_file(
        &mut self,
        path: &std::path::Path,
        unit: &str,
        units: &std::collections::BTreeSet<&str>,
    ) -> Option<Vec<u8>> {
        let own_name = path.file_name().and_then(|n| n.to_str()).unwrap_or(unit);
        let (bytes, real) = self.conf(path)?;
        // A link to a unit file of another name makes this name an alias of it
        // (systemd.unit(5), "Alias="): the directories are that unit's, found under its
        // own name.
        let real = real.to_str().unwrap_or_default();
        if real != own_name && is_valid_service_name(real) && units.contains(real) {
            return None;
        }
        Some(bytes)
    }

    /// A unit file or drop-in read whole, with the name of the file its links lead to (see
    /// [`read_conf`]); a problem when it cannot be read.
    fn conf(&mut self, path: &std::path::Path) -> Option<(Vec<u8>, std::ffi::OsString)> {
        match read_conf(self.tree, path, FILE_MAX.min(self.budget)) {
            Ok(found) => {
                let (bytes, name) = found?;
                self.budget = self.budget.saturating_sub(bytes.len() as u64);
                Some((bytes, name))
            }
            Err(why) => {
                self.problem(path, why);
                None
            }
        }
    }

    /// The drop-ins of `unit`, in the order they apply: by file name, the first directory
    /// of the search path (then of [`dropin_dirs`]) winning for a name.
    fn dropins(&mut self, unit: &str, dirs: &BTreeMap<String, Vec<Located>>) -> Vec<PathBuf> {
        let mut candidates: Vec<(usize, usize, &PathBuf)> = Vec::new();
        for (order, name) in dropin_dirs(unit).iter().enumerate() {
            for (priority, at) in dirs.get(name).into_iter().flatten() {
                candidates.push((*priority, order, at));
            }
        }
        candidates.sort();
        let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (_, _, dir) in candidates {
            if !self.listed.contains_key(dir) {
                let names = self.list(dir).unwrap_or_default();
                self.listed.insert(dir.clone(), names);
            }
            for name in &self.listed[dir] {
                if name.ends_with(".conf") && !name.starts_with('.') {
                    by_name
                        .entry(name.clone())
                        .or_insert_with(|| dir.join(name));
                }
            }
        }
        by_name.into_values().collect()
    }
}

/// A configuration file of the tree (a unit file, a drop-in, a tmpfiles.d file) read whole,
/// resolved as the tree sees it, with the name of the file its links lead to: `Ok(None)`
/// when it is masked (a link to `/dev/null`: a character device, or a dangling link in a
/// tree without `/dev`; an empty file) or gone; why it cannot be read when it is a link
/// that leads nowhere, not a regular file (a FIFO is never opened), larger than `limit`,
/// or unreadable.
pub(crate) fn read_conf(
    tree: &crate::beneath::Tree,
    path: &std::path::Path,
    limit: u64,
) -> Result<Option<(Vec<u8>, std::ffi::OsString)>, String> {
    use rustix::fs::FileType;
    let found = match tree.resolve(path) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return match tree.read_link(path) {
                Ok(Some(t)) if t != std::path::Path::new("/dev/null") => {
                    Err("a link that leads nowhere in the tree".to_string())
                }
                _ => Ok(None),
            };
        }
        Err(e) => return Err(cause(&e)),
    };
    match found.kind {
        FileType::RegularFile => {}
        FileType::CharacterDevice => return Ok(None),
        kind => return Err(not_regular(kind).to_string()),
    }
    match found.read(limit) {
        Ok(bytes) if bytes.is_empty() => Ok(None),
        Ok(bytes) => Ok(Some((bytes, found.name))),
        Err(e) => Err(cause(&e)),
    }
}

/// Why reading a file of the tree failed. The files are reached through the tree's
/// symlinks, so ELOOP is a loop of them (or a chain longer than the kernel follows).
pub(crate) fn cause(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::ELOOP) {
        "symlinks that loop (or a chain of more than 40)".to_string()
    } else {
        crate::error::describe(e)
    }
}

/// Why a unit file of this kind is not read.
fn not_regular(kind: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType;
    match kind {
        FileType::Directory => "is a directory, not a file",
        FileType::Fifo => "is a FIFO, not a regular file",
        FileType::BlockDevice | FileType::CharacterDevice => "is a device, not a regular file",
        _ => "is not a regular file",
    }
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

    proptest::proptest! {
        /// Whatever a unit file holds (bytes that are not UTF-8 included), reading it and
        /// the directories it declares never panic, and every directory is a plain path
        /// below its base.
        #[test]
        fn arbitrary_unit_files_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000), name in "[a-z@.%-]{1,12}") {
            let mut s = Settings::default();
            s.apply(&parse(&text_of(&bytes)));
            let unit = format!("{name}.service");
            for d in directories(&unit, &s) {
                proptest::prop_assert!(d.path.starts_with(d.kind.base()));
                proptest::prop_assert!(d.path.components().all(|c| matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )));
            }
        }
    }

    #[test]
    fn lines_that_are_not_utf8_are_skipped_and_keep_the_numbering() {
        assert_eq!(
            text_of(b"[Service]\nStateDirectory=a\xff\nStateDirectory=b\n"),
            "[Service]\n\nStateDirectory=b\n"
        );
        assert!(is_valid_service_name("a-b_c:d\\x2d.service"));
        assert!(is_valid_service_name("getty@tty1.service"));
        assert!(is_valid_service_name("t@.service"));
        for bad in [
            "evil\n.service",
            "a/b.service",
            "@x.service",
            ".service",
            "x.socket",
            "caf\u{e9}.service",
            "sp ace.service",
        ] {
            assert!(!is_valid_service_name(bad), "{bad:?}");
        }
        assert!(!is_valid_service_name(&format!(
            "{}.service",
            "a".repeat(250)
        )));
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
            vec!["service.d", "foo@.service.d", "foo@bar.service.d"]
        );
        assert_eq!(
            dropin_dirs("a-b-c.service"),
            vec![
                "service.d",
                "a-.service.d",
                "a-b-.service.d",
                "a-b-c.service.d"
            ]
        );
    }
}
