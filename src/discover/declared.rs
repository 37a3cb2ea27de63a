//! The host's own declarations, read once per command: the directories its systemd units
//! have systemd make (`units`), and what tmpfiles.d makes, empties and removes at every
//! boot (`tmpfiles`); and what they say about one piece of state, given what the scan saw
//! there. Pure apart from [`Declarations::read`].

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::classify::{Declaration, EntryKind, Facts, Source};
use crate::discover::tmpfiles::{self, Made, Table};
use crate::discover::units::{self, DirKind, UnitDir};
use crate::knowledge::Verdict;
use crate::paths::escape;
use crate::persisted::PersistedSet;

/// What the host declares.
#[derive(Debug, Default)]
pub struct Declarations {
    /// The directories units have systemd make, by path; the units of one path by name.
    units: BTreeMap<PathBuf, Vec<UnitDir>>,
    /// With `DynamicUser=`, the link systemd makes at the plain name
    /// (`/var/lib/foo` → `private/foo`), by the link's path.
    links: BTreeMap<PathBuf, UnitDir>,
    tmpfiles: Table,
    /// The globs of `tmpfiles.removed`, index for index (a pattern that is not UTF-8 or
    /// not a glob matches nothing).
    removed: GlobSet,
    removed_index: Vec<usize>,
    /// What could not be read, one line each.
    pub problems: Vec<String>,
}

/// The most problems spelled out in notes; the rest are counted.
const NOTES_MAX: usize = 10;

impl Declarations {
    /// Nothing declared: for commands that do not read the tree's declarations.
    pub fn none() -> &'static Declarations {
        static NONE: OnceLock<Declarations> = OnceLock::new();
        NONE.get_or_init(Declarations::default)
    }

    pub fn new(dirs: Vec<UnitDir>, tmpfiles: Table, problems: Vec<String>) -> Declarations {
        let mut units: BTreeMap<PathBuf, Vec<UnitDir>> = BTreeMap::new();
        let mut links = BTreeMap::new();
        for dir in dirs {
            if let Ok(rel) = dir.path.strip_prefix(base_of(&dir)) {
                if dir.dynamic_user && base_of(&dir).ends_with("private") {
                    let plain = Path::new(dir.kind.base()).join(rel);
                    links.entry(plain).or_insert_with(|| dir.clone());
                }
            }
            units.entry(dir.path.clone()).or_default().push(dir);
        }
        for list in units.values_mut() {
            list.sort_by(|a, b| a.unit.cmp(&b.unit));
        }
        let mut builder = GlobSetBuilder::new();
        let mut removed_index = Vec::new();
        for (i, m) in tmpfiles.removed.iter().enumerate() {
            let Some(text) = m.entry.path.to_str() else {
                continue;
            };
            if let Ok(glob) = GlobBuilder::new(text)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
            {
                builder.add(glob);
                removed_index.push(i);
            }
        }
        Declarations {
            units,
            links,
            tmpfiles,
            removed: builder.build().unwrap_or_else(|_| GlobSet::empty()),
            removed_index,
            problems,
        }
    }

    /// Reads the units and tmpfiles.d files of the tree at `root`, as the tree sees them.
    /// Never fails: what cannot be read is in `problems`.
    pub fn read(root: &Path) -> Declarations {
        let tree = match crate::beneath::Tree::open(root) {
            Ok(tree) => tree,
            Err(e) => return Declarations::new(Vec::new(), Table::default(), vec![e.to_string()]),
        };
        let units = units::read(&tree);
        let tmpfiles = tmpfiles::read(&tree);
        let mut problems = units.problems;
        problems.extend(tmpfiles.problems);
        Declarations::new(units.dirs, tmpfiles.table, problems)
    }

    /// The problems, as notes for a report: a few spelled out, the rest counted.
    pub fn notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self
            .problems
            .iter()
            .take(NOTES_MAX)
            .map(|p| format!("not read from the host's units and tmpfiles.d: {p}"))
            .collect();
        if self.problems.len() > NOTES_MAX {
            notes.push(format!(
                "and {} more unit or tmpfiles.d files or lines not read",
                self.problems.len() - NOTES_MAX
            ));
        }
        notes
    }

    /// Whether `dir` must be split so that the directories units declare below it are
    /// each a piece of state of their own (`/var/lib/private`, which holds the state of
    /// every `DynamicUser=` service), unless a unit declares `dir` itself or a directory
    /// holding it. Logs are not split out (`/var/log` stays one piece: see [`about`]), nor
    /// configuration directories, which decide nothing here.
    ///
    /// [`about`]: Declarations::about
    pub fn splits(&self, dir: &Path) -> bool {
        let splitting =
            |d: &UnitDir| matches!(d.kind, DirKind::State | DirKind::Cache | DirKind::Runtime);
        let below = self
            .units
            .range::<Path, _>((std::ops::Bound::Excluded(dir), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(dir))
            .any(|(_, list)| list.iter().any(splitting));
        below
            && !dir
                .ancestors()
                .any(|a| self.units.get(a).is_some_and(|l| l.iter().any(splitting)))
    }

    /// What the declarations say about the piece of state at `path`, given what is there
    /// (`facts`, and its size in `bytes`): a tmpfiles.d line that makes, empties or
    /// removes it, or the unit whose directory holds it. `persisted` tells whether
    /// `/var/log` is kept, for logs.
    pub fn about(
        &self,
        path: &Path,
        facts: &Facts,
        bytes: u64,
        persisted: &PersistedSet,
    ) -> Option<Declaration> {
        let mut note = None;
        if let Some(d) = self.tmpfiles_about(path, facts, bytes) {
            if d.verdict.is_some() {
                return Some(d);
            }
            note = Some(d);
        }
        let unit = self.unit_about(path, facts, persisted);
        match (unit, note) {
            (Some(mut u), Some(n)) => {
                u.reason = format!("{}; {}", u.reason, n.reason);
                Some(u)
            }
            (u, n) => u.or(n),
        }
    }

    fn tmpfiles_about(&self, path: &Path, facts: &Facts, bytes: u64) -> Option<Declaration> {
        let at = |m: &Made| Source::Tmpfiles { at: m.at() };
        let decide = |m: &Made, verdict: Option<Verdict>, reason: String| Declaration {
            verdict,
            reason,
            source: at(m),
            service: None,
            mode: None,
            at: path.to_path_buf(),
        };
        let is_dir = facts.kind == Some(EntryKind::Directory);
        let empty_dir = is_dir && facts.files == 0;
        // Removed at every boot: by `r` (a file or an empty directory) or `R` (a tree),
        // matching the path or, for `R`, a directory holding it.
        for a in path.ancestors() {
            let mut hits = self.removed.matches(a);
            hits.sort_unstable();
            for hit in hits {
                let m = &self.tmpfiles.removed[self.removed_index[hit]];
                if !dots_match(&m.entry.path, a) {
                    continue;
                }
                let applies = match m.entry.kind {
                    'R' => true,
                    _ => a == path && (!is_dir || empty_dir),
                };
                if applies {
                    return Some(decide(
                        m,
                        Some(Verdict::Ephemeral),
                        format!(
                            "tmpfiles.d removes it at every boot ({} {})",
                            m.entry.type_text(),
                            escape(&m.entry.path)
                        ),
                    ));
                }
            }
        }
        // Inside a `D` directory, emptied at every boot.
        for a in path.ancestors().skip(1) {
            if let Some(m) = self.tmpfiles.made.get(a).filter(|m| m.entry.kind == 'D') {
                return Some(decide(
                    m,
                    Some(Verdict::Ephemeral),
                    format!("tmpfiles.d empties {} at every boot (D)", escape(a)),
                ));
            }
        }
        let m = self.tmpfiles.made.get(path)?;
        let e = &m.entry;
        let arg = e.argument.as_deref();
        let shown = |b: &[u8]| escape(Path::new(std::ffi::OsStr::from_bytes(b)));
        let generated = |reason: String| Some(decide(m, Some(Verdict::Generated), reason));
        let written_since = |what: String| {
            Some(decide(
                m,
                None,
                format!("tmpfiles.d makes it at boot ({}), but {what}", m.at()),
            ))
        };
        match (e.kind, facts.kind) {
            ('d' | 'v' | 'q' | 'Q', Some(EntryKind::Directory)) if facts.files == 0 => {
                generated("an empty directory tmpfiles.d makes at every boot".into())
            }
            ('d' | 'v' | 'q' | 'Q', Some(EntryKind::Directory)) => written_since(format!(
                "it holds {} written since",
                crate::words::count(facts.files as usize, "file", "files")
            )),
            ('D', Some(EntryKind::Directory)) if facts.files == 0 => {
                generated("an empty directory tmpfiles.d makes at every boot".into())
            }
            ('D', Some(EntryKind::Directory)) => Some(decide(
                m,
                Some(Verdict::Ephemeral),
                "tmpfiles.d empties it at every boot (D)".into(),
            )),
            ('F', Some(EntryKind::File)) | ('f', Some(EntryKind::File))
                if e.plus || e.kind == 'F' =>
            {
                generated(format!(
                    "tmpfiles.d writes it anew at every boot ({})",
                    e.type_text()
                ))
            }
            ('f', Some(EntryKind::File))
                if !e.credential && bytes == arg.map_or(0, |a| a.len() as u64) =>
            {
                generated(
                    "a file tmpfiles.d writes at boot when it is missing, as written then".into(),
                )
            }
            ('f', Some(EntryKind::File)) if e.credential => {
                written_since("from a credential, which cannot be compared here".into())
            }
            ('f', Some(EntryKind::File)) => written_since("it was written since".into()),
            ('L', Some(EntryKind::Symlink)) if e.plus => generated(format!(
                "a link tmpfiles.d makes anew at every boot (L+, to {})",
                arg.map(shown).unwrap_or_default()
            )),
            ('L', Some(EntryKind::Symlink))
                if facts
                    .link_target
                    .as_deref()
                    .map(|t| t.as_os_str().as_encoded_bytes())
                    == arg =>
            {
                generated(format!(
                    "a link tmpfiles.d makes at boot (to {})",
                    arg.map(shown).unwrap_or_default()
                ))
            }
            ('L', Some(_)) if e.plus => generated(format!(
                "tmpfiles.d replaces it with a link to {} at every boot (L+)",
                arg.map(shown).unwrap_or_default()
            )),
            ('L', Some(_)) => written_since(format!(
                "what is there is not its link to {}",
                arg.map(shown).unwrap_or_default()
            )),
            ('C', Some(EntryKind::Directory)) if facts.files == 0 => {
                generated("an empty directory tmpfiles.d copies at boot".into())
            }
            ('C', Some(_)) if e.plus => generated(format!(
                "tmpfiles.d copies it anew from {} at every boot (C+)",
                arg.map(shown).unwrap_or_default()
            )),
            ('C', Some(_)) => written_since(format!(
                "only when it is missing (copied from {}): it may hold changes made since",
                arg.map(shown).unwrap_or_default()
            )),
            ('p' | 'c' | 'b', Some(EntryKind::Other)) => {
                generated("a special file tmpfiles.d makes at every boot".into())
            }
            (_, None) => None,
            (_, Some(_)) => written_since("something else is there now".into()),
        }
    }

    /// The unit whose directory is `path` or holds it (the deepest), and what that says.
    fn unit_about(
        &self,
        path: &Path,
        facts: &Facts,
        persisted: &PersistedSet,
    ) -> Option<Declaration> {
        if facts.kind == Some(EntryKind::Symlink) {
            let d = self.links.get(path)?;
            return Some(Declaration {
                verdict: Some(Verdict::Generated),
                reason: format!(
                    "the link systemd makes to {} for {} (DynamicUser=yes)",
                    escape(&d.path),
                    d.unit
                ),
                source: unit_source(d),
                service: Some(d.unit.clone()),
                mode: None,
                at: path.to_path_buf(),
            });
        }
        let (at, list) = path
            .ancestors()
            .find_map(|a| self.units.get(a).map(|l| (a, l)))?;
        let d = list.iter().find(|d| d.kind != DirKind::Configuration)?;
        let also = match list.len() {
            1 => String::new(),
            _ => format!(
                "; also {}",
                list[1..]
                    .iter()
                    .map(|d| d.unit.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let setting = format!(
            "{}={}",
            d.kind.setting(),
            escape(at.strip_prefix(base_of(d)).unwrap_or(at))
        );
        let empty = at == path && facts.kind == Some(EntryKind::Directory) && facts.files == 0;
        let (verdict, reason) = match d.kind {
            _ if empty => (
                Verdict::Generated,
                format!(
                    "an empty directory systemd makes when {} starts ({setting}{also})",
                    d.unit
                ),
            ),
            DirKind::State if d.dynamic_user => (
                Verdict::Persist,
                format!(
                    "state of {} ({setting}{also}, DynamicUser=yes: systemd keeps it in {}, behind a link at its plain name); /var/lib/private must stay 0700, or systemd refuses to start the service, and impermanence makes missing parents 0755: persist /var/lib/private with mode 0700",
                    d.unit,
                    escape(at)
                ),
            ),
            DirKind::State => (
                Verdict::Persist,
                format!("state of {} ({setting}{also})", d.unit),
            ),
            DirKind::Cache => (
                Verdict::Ephemeral,
                format!(
                    "cache of {} ({setting}{also}): the service fills it again",
                    d.unit
                ),
            ),
            DirKind::Logs => {
                let kept = persisted.lookup(Path::new("/var/log")).is_some();
                (
                    Verdict::Review,
                    if kept {
                        format!(
                            "logs of {} ({setting}{also}), kept with /var/log, which is persisted",
                            d.unit
                        )
                    } else {
                        format!(
                            "logs of {} ({setting}{also}); /var/log is not persisted, so every reset loses them: persist /var/log (or this) to keep them",
                            d.unit
                        )
                    },
                )
            }
            DirKind::Runtime => (
                Verdict::Generated,
                format!("made in /run when {} starts ({setting}{also})", d.unit),
            ),
            DirKind::Configuration => return None,
        };
        Some(Declaration {
            verdict: Some(verdict),
            reason,
            source: unit_source(d),
            service: Some(d.unit.clone()),
            mode: None,
            at: at.to_path_buf(),
        })
    }
}

/// Whether a glob match of `pattern` on `path` is one glob(3) makes too: a wildcard does
/// not match a name's leading dot (systemd-tmpfiles expands `r` and `R` paths with
/// glob(3), whose `*` skips hidden names; globset's does not).
fn dots_match(pattern: &Path, path: &Path) -> bool {
    let names = |p: &Path| -> Vec<Vec<u8>> {
        p.as_os_str()
            .as_bytes()
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    let (pattern, path) = (names(pattern), names(path));
    pattern.len() == path.len()
        && pattern
            .iter()
            .zip(&path)
            .all(|(p, n)| !n.starts_with(b".") || p.starts_with(b"."))
}

fn unit_source(d: &UnitDir) -> Source {
    Source::Unit {
        unit: d.unit.clone(),
        setting: d.kind.setting().to_string(),
    }
}

/// The directory a unit's setting is relative to (`/var/lib`, `/var/lib/private`).
fn base_of(d: &UnitDir) -> PathBuf {
    let base = PathBuf::from(d.kind.base());
    if d.dynamic_user && d.path.starts_with(base.join("private")) {
        base.join("private")
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::units::{Settings, directories, parse};
    use crate::persisted::{Entry, Kind};

    fn declarations() -> Declarations {
        let mut dirs = Vec::new();
        for (unit, text) in [
            (
                "quill.service",
                "[Service]\nStateDirectory=quill quill/sub\nCacheDirectory=quill\nLogsDirectory=quill\nRuntimeDirectory=quill\nConfigurationDirectory=quill\n",
            ),
            (
                "lantern.service",
                "[Service]\nDynamicUser=yes\nStateDirectory=lantern\n",
            ),
            ("shared-a.service", "[Service]\nStateDirectory=shared\n"),
            ("shared-b.service", "[Service]\nStateDirectory=shared\n"),
            ("pods.service", "[Service]\nStateDirectory=containers\n"),
        ] {
            let mut s = Settings::default();
            s.apply(&parse(text));
            dirs.extend(directories(unit, &s));
        }
        let mut table = Table::default();
        let text = b"d /var/lib/made\nD /var/lib/quill/tmp\nf /etc/greeting - - - - hello\nF /etc/fresh\nL /etc/link - - - - /srv/target\nL+ /etc/forced - - - - /srv/target\nC /var/lib/seeded - - - - /nix/store/abc-seed\nr /var/lib/stale.lock\nr /var/lib/stale-dir\nR /var/lib/junk-*\np /var/lib/pipe\nR /var/lib/dots/*\n";
        for (line, entry) in tmpfiles::parse(text, &tmpfiles::Host::default()) {
            table.add(Path::new("/etc/tmpfiles.d/t.conf"), line, entry.unwrap());
        }
        Declarations::new(dirs, table, Vec::new())
    }

    fn facts(kind: EntryKind, files: u64) -> Facts {
        Facts {
            kind: Some(kind),
            files,
            ..Facts::default()
        }
    }

    fn link(target: &str) -> Facts {
        Facts {
            link_target: Some(target.into()),
            ..facts(EntryKind::Symlink, 1)
        }
    }

    #[test]
    fn what_the_declarations_say_about_each_piece_of_state() {
        use EntryKind::*;
        let d = declarations();
        let none = PersistedSet::default();
        // (path, facts, bytes, verdict or none for a note, source, a part of the reason)
        type Case = (
            &'static str,
            Facts,
            u64,
            Option<Verdict>,
            &'static str,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "/var/lib/quill",
                facts(Directory, 3),
                9,
                Some(Verdict::Persist),
                "unit quill.service: StateDirectory",
                "state of quill.service (StateDirectory=quill)",
            ),
            // Below a declared directory: the unit's too.
            (
                "/var/lib/quill/db/x",
                facts(File, 1),
                1,
                Some(Verdict::Persist),
                "unit quill.service: StateDirectory",
                "StateDirectory=quill",
            ),
            (
                "/var/lib/quill/sub",
                facts(Directory, 1),
                1,
                Some(Verdict::Persist),
                "unit quill.service: StateDirectory",
                "StateDirectory=quill/sub",
            ),
            // Empty: systemd makes it again.
            (
                "/var/lib/quill",
                facts(Directory, 0),
                0,
                Some(Verdict::Generated),
                "unit quill.service: StateDirectory",
                "an empty directory systemd makes when quill.service starts",
            ),
            (
                "/var/cache/quill",
                facts(Directory, 5),
                50,
                Some(Verdict::Ephemeral),
                "unit quill.service: CacheDirectory",
                "cache of quill.service",
            ),
            (
                "/var/log/quill",
                facts(Directory, 2),
                20,
                Some(Verdict::Review),
                "unit quill.service: LogsDirectory",
                "/var/log is not persisted",
            ),
            (
                "/run/quill",
                facts(Directory, 1),
                1,
                Some(Verdict::Generated),
                "unit quill.service: RuntimeDirectory",
                "made in /run when quill.service starts",
            ),
            // Configuration directories decide nothing.
            ("/etc/quill", facts(Directory, 1), 1, None, "", ""),
            // DynamicUser=: the state under private/, the plain name a link systemd makes.
            (
                "/var/lib/private/lantern",
                facts(Directory, 2),
                2,
                Some(Verdict::Persist),
                "unit lantern.service: StateDirectory",
                "/var/lib/private must stay 0700",
            ),
            (
                "/var/lib/lantern",
                link("private/lantern"),
                15,
                Some(Verdict::Generated),
                "unit lantern.service: StateDirectory",
                "the link systemd makes to /var/lib/private/lantern",
            ),
            (
                "/var/lib/other-link",
                link("private/lantern"),
                15,
                None,
                "",
                "",
            ),
            // One directory, two units.
            (
                "/var/lib/shared",
                facts(Directory, 1),
                1,
                Some(Verdict::Persist),
                "unit shared-a.service: StateDirectory",
                "also shared-b.service",
            ),
            // tmpfiles.d: what is there is what it makes.
            (
                "/var/lib/made",
                facts(Directory, 0),
                0,
                Some(Verdict::Generated),
                "tmpfiles: /etc/tmpfiles.d/t.conf:1",
                "an empty directory tmpfiles.d makes",
            ),
            (
                "/var/lib/made",
                facts(Directory, 4),
                4,
                None,
                "tmpfiles: /etc/tmpfiles.d/t.conf:1",
                "it holds 4 files written since",
            ),
            (
                "/var/lib/quill/tmp",
                facts(Directory, 3),
                3,
                Some(Verdict::Ephemeral),
                "tmpfiles: /etc/tmpfiles.d/t.conf:2",
                "empties it at every boot",
            ),
            (
                "/var/lib/quill/tmp/a/b",
                facts(File, 1),
                3,
                Some(Verdict::Ephemeral),
                "tmpfiles: /etc/tmpfiles.d/t.conf:2",
                "empties /var/lib/quill/tmp at every boot",
            ),
            (
                "/etc/greeting",
                facts(File, 1),
                5,
                Some(Verdict::Generated),
                "tmpfiles: /etc/tmpfiles.d/t.conf:3",
                "as written then",
            ),
            (
                "/etc/greeting",
                facts(File, 1),
                6,
                None,
                "tmpfiles: /etc/tmpfiles.d/t.conf:3",
                "it was written since",
            ),
            (
                "/etc/fresh",
                facts(File, 1),
                900,
                Some(Verdict::Generated),
                "tmpfiles: /etc/tmpfiles.d/t.conf:4",
                "writes it anew at every boot",
            ),
            (
                "/etc/link",
                link("/srv/target"),
                11,
                Some(Verdict::Generated),
                "tmpfiles: /etc/tmpfiles.d/t.conf:5",
                "a link tmpfiles.d makes at boot",
            ),
            (
                "/etc/link",
                link("/srv/elsewhere"),
                11,
                None,
                "tmpfiles: /etc/tmpfiles.d/t.conf:5",
                "is not its link to /srv/target",
            ),
            (
                "/etc/link",
                facts(File, 1),
                11,
                None,
                "tmpfiles: /etc/tmpfiles.d/t.conf:5",
                "is not its link",
            ),
            (
                "/etc/forced",
                facts(File, 1),
                11,
                Some(Verdict::Generated),
                "tmpfiles: /etc/tmpfiles.d/t.conf:6",
                "replaces it with a link",
            ),
            (
                "/var/lib/seeded",
                facts(Directory, 7),
                7,
                None,
                "tmpfiles: /etc/tmpfiles.d/t.conf:7",
                "it may hold changes made since",
            ),
            (
                "/var/lib/stale.lock",
                facts(File, 1),
                0,
                Some(Verdict::Ephemeral),
                "tmpfiles: /etc/tmpfiles.d/t.conf:8",
                "removes it at every boot (r /var/lib/stale.lock)",
            ),
            // `r` does not remove a directory that is not empty.
            ("/var/lib/stale-dir", facts(Directory, 1), 1, None, "", ""),
            (
                "/var/lib/stale-dir",
                facts(Directory, 0),
                0,
                Some(Verdict::Ephemeral),
                "tmpfiles: /etc/tmpfiles.d/t.conf:9",
                "removes it",
            ),
            (
                "/var/lib/junk-1/deep",
                facts(Directory, 9),
                9,
                Some(Verdict::Ephemeral),
                "tmpfiles: /etc/tmpfiles.d/t.conf:10",
                "R /var/lib/junk-*",
            ),
            // glob(3)'s `*` does not match a leading dot.
            (
                "/var/lib/junk-1/.hidden",
                facts(File, 1),
                1,
                Some(Verdict::Ephemeral),
                "tmpfiles: /etc/tmpfiles.d/t.conf:10",
                "R /var/lib/junk-*",
            ),
            ("/var/lib/dots/.x", facts(File, 1), 1, None, "", ""),
            (
                "/var/lib/dots/x",
                facts(File, 1),
                1,
                Some(Verdict::Ephemeral),
                "tmpfiles: /etc/tmpfiles.d/t.conf:12",
                "R /var/lib/dots/*",
            ),
            ("/var/lib/junkyard", facts(Directory, 9), 9, None, "", ""),
            (
                "/var/lib/pipe",
                facts(Other, 1),
                0,
                Some(Verdict::Generated),
                "tmpfiles: /etc/tmpfiles.d/t.conf:11",
                "a special file",
            ),
            // A tmpfiles.d note joins the unit's verdict.
            ("/var/lib/unrelated", facts(Directory, 1), 1, None, "", ""),
        ];
        for (path, facts, bytes, verdict, source, reason) in cases {
            let got = d.about(Path::new(path), &facts, bytes, &none);
            match got {
                None => assert!(source.is_empty(), "{path}: nothing said"),
                Some(got) => {
                    assert_eq!(got.verdict, verdict, "{path}: {}", got.reason);
                    assert_eq!(got.source.to_string(), source, "{path}");
                    assert!(got.reason.contains(reason), "{path}: {}", got.reason);
                }
            }
        }
        // With /var/log persisted, logs are said to be kept.
        let persisted =
            PersistedSet::new(vec![Entry::new("/var/log", Kind::Directory, "/persist")]);
        let logs = d
            .about(
                Path::new("/var/log/quill"),
                &facts(Directory, 1),
                1,
                &persisted,
            )
            .unwrap();
        assert!(
            logs.reason
                .contains("kept with /var/log, which is persisted"),
            "{}",
            logs.reason
        );
    }

    #[test]
    fn a_unit_directory_made_by_tmpfiles_too_keeps_both_reasons() {
        let mut s = Settings::default();
        s.apply(&parse("[Service]\nStateDirectory=both\n"));
        let mut table = Table::default();
        for (line, entry) in tmpfiles::parse(b"d /var/lib/both 0750", &tmpfiles::Host::default()) {
            table.add(Path::new("/etc/tmpfiles.d/b.conf"), line, entry.unwrap());
        }
        let d = Declarations::new(directories("both.service", &s), table, Vec::new());
        let got = d
            .about(
                Path::new("/var/lib/both"),
                &facts(EntryKind::Directory, 2),
                2,
                &PersistedSet::default(),
            )
            .unwrap();
        assert_eq!(got.verdict, Some(Verdict::Persist));
        assert_eq!(got.source.to_string(), "unit both.service: StateDirectory");
        assert!(got.reason.contains("tmpfiles.d makes it at boot (/etc/tmpfiles.d/b.conf:1), but it holds 2 files written since"), "{}", got.reason);
    }

    #[test]
    fn directories_holding_declared_ones_split() {
        let d = declarations();
        for (dir, splits) in [
            // private/ holds every DynamicUser= service's state.
            ("/var/lib/private", true),
            ("/var/lib", true),
            // A declared directory is one piece, also when a unit declares one below it.
            ("/var/lib/quill", false),
            ("/var/lib/quill/sub", false),
            ("/var/lib/lantern", false),
            // Logs do not split /var/log; configuration directories split nothing.
            ("/var/log", false),
            ("/etc", false),
            ("/var/cache", true),
            ("/var/lib/forgejo", false),
        ] {
            assert_eq!(d.splits(Path::new(dir)), splits, "{dir}");
        }
    }

    /// A unit that declares a directory holding podman's overlay storage does not make the
    /// overlay state: the knowledge names a deeper path and wins there, and the unit wins
    /// for the rest.
    #[test]
    fn a_deeper_known_path_wins_over_a_unit() {
        let d = declarations();
        let k = crate::knowledge::builtin();
        let none = PersistedSet::default();
        let classify = |p: &str| {
            let facts = facts(EntryKind::Directory, 3);
            let declared = d.about(Path::new(p), &facts, 3, &none);
            crate::classify::classify_declared(Path::new(p), &facts, &[], k, declared.as_ref())
        };
        let overlay = classify("/var/lib/containers/storage/overlay");
        assert_eq!(overlay.verdict, Verdict::Ephemeral);
        assert_eq!(overlay.source, Source::Knowledge);
        let libpod = classify("/var/lib/containers/storage/libpod");
        assert_eq!(
            libpod.source.to_string(),
            "unit pods.service: StateDirectory"
        );
        // A note alone keeps the knowledge's verdict and adds to its reason.
        let made = classify("/var/lib/made");
        assert_eq!(made.verdict, Verdict::Persist);
        assert_eq!(made.source, Source::Knowledge);
        assert!(
            made.reason.ends_with("but it holds 3 files written since"),
            "{}",
            made.reason
        );
    }
}
