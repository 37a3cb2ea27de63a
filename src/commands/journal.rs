//! `journal`: boot failures caused by missing or unreadable paths, turned into persistence
//! fixes, with what the last reset wiped and how to bring it back.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, Write};
use std::ops::Bound;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use super::discover::{self, write_suggestions};
use crate::classify::{EntryKind, Facts};
use crate::cli::{GlobalArgs, JournalArgs};
use crate::config::Config;
use crate::discover::declared::Declarations;
use crate::discover::journal::{self, Cause, FailedUnit};
use crate::discover::scan::Unit;
use crate::discover::suggest::{self, Suggestion};
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;
use crate::filesystem::backend;
use crate::filesystem::toplevel::TopLevel;
use crate::knowledge::{self, Verdict};
use crate::nixos::nix::{self, Style};
use crate::output::{self, Report, Styles};
use crate::paths::escape;
use crate::snapshots::snapshot::{self, Existed};
use crate::words::{bytes, count};

/// One path a failure named.
#[derive(Debug, Serialize)]
struct Failure {
    #[serde(serialize_with = "crate::paths::json")]
    path: PathBuf,
    causes: BTreeSet<Cause>,
    units: BTreeSet<String>,
    count: u64,
    message: String,
    /// Too broad to persist as a whole (`/etc`, `/var`, `/var/lib`, a home directory):
    /// never suggested; what in it the unit needs is.
    too_broad: bool,
    /// What it was in the old root, when it was there.
    existed: Option<Existed>,
    /// The command that brings it back.
    restore: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct JournalReport {
    /// Where the entries came from.
    source: String,
    lines: u64,
    /// Lines skipped because they could not be read as an entry, and the first of their
    /// numbers; how many of them were skipped for their length.
    bad_lines: u64,
    bad_line_numbers: Vec<u64>,
    too_long_lines: u64,
    /// Paths that could be state but cannot be named exactly: in a message that is not
    /// UTF-8, broken off by a control character, holding `..` or a NUL, or a `file://` URL.
    unnamed_paths: u64,
    unnamed_path_units: BTreeSet<String>,
    /// The old-root snapshot paths were looked up in.
    snapshot: Option<String>,
    /// Why no snapshot was looked at.
    snapshot_note: Option<String>,
    failures: Vec<Failure>,
    failed_units: Vec<FailedUnit>,
    /// Persisted paths that failures named anyway (a bind mount problem, not a wipe).
    #[serde(serialize_with = "crate::paths::json_all")]
    persisted: Vec<PathBuf>,
    /// Paths in a persistent storage that failures named: the storage is not the root, so
    /// a reset did not wipe them (a mount or migration problem); never suggested.
    #[serde(serialize_with = "crate::paths::json_all")]
    in_storage: Vec<PathBuf>,
    /// Paths in trees the audit never walks (`[scan] never_walk`: other filesystems, the
    /// kernel's, or made anew at every boot) that failures named: no bind mount persists
    /// them, so they are never suggested.
    #[serde(serialize_with = "crate::paths::json_all")]
    never_persisted: Vec<PathBuf>,
    pub(super) suggestions: Vec<Suggestion>,
    #[serde(skip)]
    storage: PathBuf,
    #[serde(skip)]
    style: Style,
}

pub fn run(global: &GlobalArgs, args: &JournalArgs) -> Result<ExitStatus, Error> {
    if args.previous && args.file.is_some() {
        return Err(Error::Usage(
            "--previous asks journalctl for the previous boot; with --file, export that boot instead (journalctl -b -1 -o json)".into(),
        ));
    }
    let stdin = Some(Path::new("-"));
    if args.file.as_deref() == stdin {
        for (flag, given) in [
            ("--config", &global.config),
            ("--persistence-json", &global.persistence_json),
        ] {
            if given.as_deref() == stdin {
                return Err(Error::Usage(format!(
                    "--file - and {flag} - cannot both read standard input"
                )));
            }
        }
    }
    let config = super::load_config(global)?;
    let report = report(&config, args)?;
    output::emit(&report, global.format, global.color)?;
    let findings = report
        .suggestions
        .iter()
        .any(|s| matches!(s.verdict, Verdict::Persist | Verdict::Review))
        || !report.failed_units.is_empty()
        || report.unnamed_paths > 0
        || report.failures.iter().any(|f| f.too_broad)
        || !report.in_storage.is_empty();
    Ok(if findings {
        ExitStatus::Findings
    } else {
        ExitStatus::Clean
    })
}

/// What `journal` finds, without printing it (`browse journal` shows the same).
pub(super) fn report(config: &Config, args: &JournalArgs) -> Result<JournalReport, Error> {
    // The old root first: an --against that cannot be used stops the run before the
    // journal is read, like `diff` and `restore`.
    let (snapshot, snapshot_note, lookup) = match old_root(config, args) {
        Ok((name, top, dir)) => (Some(name), None, Some((top, dir))),
        Err(Lookup::Refused(e)) => return Err(e),
        Err(Lookup::Note(note)) => (None, Some(note), None),
    };
    let (source, found) = read(config, args)?;
    let mut failures = Vec::new();
    let mut persisted = Vec::new();
    let mut in_storage = Vec::new();
    let mut never_persisted = Vec::new();
    let storages = config.persisted.storages();
    let k = knowledge::builtin();
    for (path, f) in found.paths {
        if storages.iter().any(|s| path.starts_with(s)) {
            in_storage.push(path);
            continue;
        }
        if k.never_walked(&path).is_some() {
            never_persisted.push(path);
            continue;
        }
        if config.persisted.contains(&path) {
            persisted.push(path);
            continue;
        }
        let too_broad = k.too_broad(&path);
        // A too-broad path is never brought back whole either.
        let existed = lookup
            .as_ref()
            .filter(|_| !too_broad)
            .and_then(|(top, dir)| snapshot::existed(top, dir, &path));
        let restore = match (&existed, &snapshot) {
            (Some(_), Some(snap)) => Some(format!(
                "imperm restore {} --from {snap} --into persist",
                shell_word(&path.to_string_lossy())
            )),
            _ => None,
        };
        failures.push(Failure {
            path,
            causes: f.causes,
            units: f.units,
            count: f.count,
            message: f.message,
            too_broad,
            existed,
            restore,
        });
    }
    let declared = Declarations::read(&config.root);
    let suggestions = suggestions(&failures, config, snapshot.as_deref(), &declared);
    let report = JournalReport {
        source,
        lines: found.lines,
        bad_lines: found.bad_lines,
        bad_line_numbers: found.bad_line_numbers,
        too_long_lines: found.too_long_lines,
        unnamed_paths: found.unnamed_paths,
        unnamed_path_units: found.unnamed_path_units,
        snapshot,
        snapshot_note,
        failed_units: found.failed_units.into_values().collect(),
        persisted,
        in_storage,
        never_persisted,
        suggestions,
        failures,
        storage: discover::storage(config),
        style: args.discover.style,
    };
    Ok(report)
}

/// A message as the journal holds it may carry escape sequences (any local user can log
/// one); shown on a terminal they would act, so control characters are printed escaped.
fn escaped(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// "line 7", "lines 2, 3, 9", or the first five and an ellipsis when there are more.
fn line_numbers(numbers: &[u64], total: u64) -> String {
    const SHOWN: usize = 5;
    let mut text: Vec<String> = numbers.iter().take(SHOWN).map(u64::to_string).collect();
    if total as usize > text.len() {
        text.push("…".into());
    }
    format!(
        "{} {}",
        if total == 1 { "line" } else { "lines" },
        text.join(", ")
    )
}

/// Quotes a word for a shell when it needs it.
fn shell_word(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+@:=".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Reads the journal: `--file` (or `-` for stdin), else `journalctl`.
fn read(config: &Config, args: &JournalArgs) -> Result<(String, journal::Findings), Error> {
    match &args.file {
        Some(file) if file.as_os_str() == "-" => {
            let stdin = io::stdin();
            // A terminal is someone pasting an export; another device never ends.
            if let Some(why) =
                endless(stdin.as_fd()).filter(|_| !rustix::termios::isatty(stdin.as_fd()))
            {
                return Err(Error::Usage(format!("--file - (stdin): {why}")));
            }
            let found = journal::scan(stdin.lock())
                .map_err(|e| FsError::new("read", Path::new("stdin"), e))?;
            Ok(("stdin".into(), found))
        }
        Some(file) => {
            // Opening a FIFO waits for its writer, as a pipe should; nothing is read
            // before the descriptor is looked at.
            let f = std::fs::File::open(file).map_err(|e| FsError::new("read", file, e))?;
            if let Some(why) = endless(f.as_fd()) {
                return Err(Error::Usage(format!("--file {}: {why}", escape(file))));
            }
            let found =
                journal::scan(BufReader::new(f)).map_err(|e| FsError::new("read", file, e))?;
            Ok((escape(file), found))
        }
        None => {
            let mut cmd = Command::new("journalctl");
            cmd.args([
                "-b",
                if args.previous { "-1" } else { "0" },
                "-o",
                "json",
                "--no-pager",
            ]);
            if config.root != Path::new("/") {
                cmd.arg("--root").arg(&config.root);
            }
            let source = format!(
                "journalctl -b {} -o json",
                if args.previous { "-1" } else { "0" }
            );
            let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Error::Usage("journalctl is not here: pass --file FILE (journalctl -o json output), or - for stdin".into())
                } else {
                    FsError::new("run journalctl for", &config.root, e).into()
                }
            })?;
            let stdout = child.stdout.take().expect("piped");
            let found = journal::scan(BufReader::new(stdout))
                .map_err(|e| FsError::new("read journalctl output for", &config.root, e))?;
            let out = child
                .wait_with_output()
                .map_err(|e| FsError::new("run journalctl for", &config.root, e))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(Error::Usage(format!(
                    "journalctl failed: {}",
                    crate::config::one_line(&stderr)
                )));
            }
            Ok((source, found))
        }
    }
}

/// Why an input cannot be read as a stream to its end, if it cannot: a directory has no
/// lines, a device may never end (`/dev/zero`), and a file of a kernel filesystem may block
/// or never end (`/proc/kmsg` waits for the next kernel message). A FIFO is a pipe by
/// design, read until its writer closes it.
fn endless(fd: BorrowedFd<'_>) -> Option<String> {
    let st = rustix::fs::fstat(fd).ok()?;
    match rustix::fs::FileType::from_raw_mode(st.st_mode) {
        rustix::fs::FileType::Directory => {
            return Some("is a directory, not a journal export".into());
        }
        rustix::fs::FileType::CharacterDevice | rustix::fs::FileType::BlockDevice => {
            return Some(
                "is a device, not a journal export (give a file, a FIFO, or a pipe to stdin)"
                    .into(),
            );
        }
        _ => {}
    }
    // `f_type`'s integer type differs between architectures.
    let magic = rustix::fs::fstatfs(fd).ok()?.f_type as i64;
    let (_, name) = KERNEL_FILESYSTEMS.iter().find(|(m, _)| *m == magic)?;
    Some(format!(
        "is a file of {name}, a kernel filesystem whose files may block or never end, not a journal export"
    ))
}

/// The kernel's own filesystems (linux/magic.h): their files are made up on reading.
// libc's type for them differs between architectures (i64 on x86_64).
#[allow(clippy::unnecessary_cast)]
const KERNEL_FILESYSTEMS: &[(i64, &str)] = &[
    (libc::PROC_SUPER_MAGIC as i64, "procfs"),
    (libc::SYSFS_MAGIC as i64, "sysfs"),
    (libc::DEBUGFS_MAGIC as i64, "debugfs"),
    (libc::TRACEFS_MAGIC as i64, "tracefs"),
    (libc::SECURITYFS_MAGIC as i64, "securityfs"),
    (libc::SELINUX_MAGIC as i64, "selinuxfs"),
    (libc::SMACK_MAGIC as i64, "smackfs"),
    (libc::CGROUP_SUPER_MAGIC as i64, "cgroup"),
    (libc::CGROUP2_SUPER_MAGIC as i64, "cgroup2"),
    (libc::BPF_FS_MAGIC as i64, "bpf"),
    (libc::DEVPTS_SUPER_MAGIC as i64, "devpts"),
    (libc::NSFS_MAGIC as i64, "nsfs"),
    (libc::RDTGROUP_SUPER_MAGIC as i64, "resctrl"),
    (libc::OPENPROM_SUPER_MAGIC as i64, "openpromfs"),
    (libc::USBDEVICE_SUPER_MAGIC as i64, "usbfs"),
    (libc::XENFS_SUPER_MAGIC as i64, "xenfs"),
    (libc::BINDERFS_SUPER_MAGIC as i64, "binderfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x6265_6570, "configfs"),
    (0x6573_5543, "fusectl"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6165_676c, "pstore"),
    (0x1980_0202, "mqueue"),
];

/// Why no old root is looked at.
enum Lookup {
    /// `--against` named a snapshot that cannot be used: the run stops.
    Refused(Error),
    /// The default lookup could not be made: said in the report, the run goes on.
    Note(String),
}

/// The old root to look paths up in: `--against`, else the newest snapshot. Only the
/// default may fall back to a note; a snapshot the user named must be there.
fn old_root(config: &Config, args: &JournalArgs) -> Result<(String, TopLevel, PathBuf), Lookup> {
    // A refusal names the snapshot it is about (the lookup's own "no snapshot …" below
    // already does, so that one is passed on as it is).
    let fail = |e: Error| match &args.against {
        Some(name) => Lookup::Refused(Error::Usage(format!(
            "--against {}: {e}",
            crate::paths::shown(name)
        ))),
        None => Lookup::Note(format!("not looked up: {e}")),
    };
    if let Some(name) = &args.against {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Lookup::Refused(Error::Usage(format!(
                "--against: {} is not a snapshot's name (see `imperm snapshots ls`)",
                crate::paths::shown(name)
            ))));
        }
    }
    let fs = super::filesystem(config, &args.fs).map_err(fail)?;
    let backend = backend::for_type(fs.fs_type);
    if !backend.has_subvolumes() {
        return Err(fail(Error::Usage("a tmpfs root keeps no old roots".into())));
    }
    if args.fs.mounted.is_none() && !rustix::process::geteuid().is_root() {
        return Err(fail(Error::Usage(
            "mounting the top level needs root (or pass --mounted DIR)".into(),
        )));
    }
    // A --mounted that is not the top level is a mistake to refuse, not a lookup to skip.
    let top =
        TopLevel::open(&fs, args.fs.mounted.as_deref()).map_err(|e| match &args.fs.mounted {
            Some(_) => Lookup::Refused(e),
            None => fail(e),
        })?;
    let (name, dir) = super::old_root(backend.as_ref(), &top, &fs, args.against.as_deref())
        .map_err(|e| match &args.against {
            Some(_) => Lookup::Refused(e),
            None => Lookup::Note(format!("not looked up: {e}")),
        })?;
    Ok((name, top, dir))
}

/// The entries to write for the failures, each failure counted in the unit it belongs to.
/// A path the last reset wiped is high-confidence state: `persist` unless the knowledge
/// says it is a cache or NixOS makes it.
fn suggestions(
    failures: &[Failure],
    config: &Config,
    snapshot: Option<&str>,
    declared: &Declarations,
) -> Vec<Suggestion> {
    let k = knowledge::builtin();
    // Every path a failure named, sorted: what lies below a path follows it at once.
    let named: BTreeSet<&Path> = failures.iter().map(|f| f.path.as_path()).collect();
    let named_below = |p: &Path| {
        named
            .range::<Path, _>((Bound::Excluded(p), Bound::Unbounded))
            .next()
            .is_some_and(|q| q.starts_with(p))
    };
    let tree = crate::beneath::Tree::open(&config.root).ok();
    let mut units: BTreeMap<PathBuf, (Unit, Option<&Existed>)> = BTreeMap::new();
    // Units whose kind nothing told: a lone missing path, taken for a file.
    let mut guessed: BTreeSet<PathBuf> = BTreeSet::new();
    for f in failures.iter().filter(|f| !f.too_broad) {
        let unit = suggest::unit_of(&f.path, k, &config.persisted, declared);
        if !units.contains_key(&unit) {
            // Something named below it proves a directory, whatever the old root or the
            // tree holds there now.
            let kind = if unit != f.path || named_below(&unit) {
                EntryKind::Directory
            } else if let Some(e) = &f.existed {
                e.kind
            } else {
                // As the tree sees it: a symlink on the way must not name a host file.
                match tree.as_ref().and_then(|t| t.kind(&unit).ok().flatten()) {
                    Some(rustix::fs::FileType::Directory) => EntryKind::Directory,
                    Some(_) => EntryKind::File,
                    None => {
                        guessed.insert(unit.clone());
                        EntryKind::File
                    }
                }
            };
            let u = Unit {
                path: unit.clone(),
                facts: Facts {
                    kind: Some(kind),
                    ..Facts::default()
                },
                bytes: 0,
            };
            units.insert(unit.clone(), (u, None));
        }
        let entry = units.get_mut(&unit).expect("inserted above");
        entry.0.facts.files += f.existed.as_ref().map_or(1, |e| e.files.max(1));
        entry.0.bytes += f.existed.as_ref().map_or(0, |e| e.bytes);
        if entry.1.is_none() {
            entry.1 = f.existed.as_ref();
        }
    }
    let wiped: BTreeMap<PathBuf, &Existed> = units
        .iter()
        .filter_map(|(p, (_, e))| e.map(|e| (p.clone(), e)))
        .collect();
    let cx = suggest::Context {
        complete: false,
        declared,
        ..discover::context(config)
    };
    let mut out = suggest::suggest(units.into_values().map(|(u, _)| u).collect(), &cx);
    for s in &mut out {
        if guessed.contains(&s.path) {
            s.reason = format!(
                "{}; a file is guessed: the journal does not say whether it is a file or a directory, and it is not in {}: check before pasting",
                s.reason,
                if snapshot.is_some() {
                    "the tree nor the old root"
                } else {
                    "the tree"
                }
            );
        }
        let Some(e) = wiped.get(&s.path) else {
            continue;
        };
        if matches!(s.verdict, Verdict::Persist | Verdict::Review) {
            s.verdict = Verdict::Persist;
            s.reason = format!(
                "existed before the last reset in {} ({}, owner {}:{}, mode {}) and the reset wiped it; {}",
                snapshot.unwrap_or("the old root"),
                bytes(e.bytes),
                e.uid,
                e.gid,
                e.mode,
                s.reason
            );
        }
    }
    let mut out = covered(out);
    out.sort_by(|a, b| {
        suggest::rank(a.verdict)
            .cmp(&suggest::rank(b.verdict))
            .then(a.path.cmp(&b.path))
    });
    out
}

/// Folds every suggestion below one to persist or review into it: persisting the parent
/// keeps the child, and two entries for the same tree would bind-mount one over the
/// other. The audit's units never overlap; failures can name a parent (a known path
/// holding others, like `/var/lib/private`) and its child. The parent takes the child's
/// counts, and becomes one to persist when the child was.
fn covered(mut out: Vec<Suggestion>) -> Vec<Suggestion> {
    out.sort_by(|a, b| a.path.cmp(&b.path));
    let mut kept: Vec<Suggestion> = Vec::with_capacity(out.len());
    // The index in `kept` of the suggestion that covers what follows it, if any.
    let mut cover: Option<usize> = None;
    for s in out {
        if let Some(i) = cover.filter(|&i| s.path.starts_with(&kept[i].path)) {
            let parent = &mut kept[i];
            parent.files += s.files;
            parent.bytes += s.bytes;
            parent.kind = crate::persisted::Kind::Directory;
            parent.in_initrd |= s.in_initrd;
            if s.verdict == Verdict::Persist && parent.verdict != Verdict::Persist {
                parent.verdict = Verdict::Persist;
                parent.reason = format!(
                    "{}; it holds {}, to persist: {}",
                    parent.reason,
                    escape(&s.path),
                    s.reason
                );
            }
            continue;
        }
        if matches!(s.verdict, Verdict::Persist | Verdict::Review) {
            cover = Some(kept.len());
        }
        kept.push(s);
    }
    kept
}

impl Report for JournalReport {
    const COMMAND: &'static str = "journal";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        for f in &self.failures {
            let units: Vec<&str> = f.units.iter().map(String::as_str).collect();
            let causes: Vec<&str> = f
                .causes
                .iter()
                .map(|c| match c {
                    Cause::Missing => "missing",
                    Cause::PermissionDenied => "permission denied",
                    Cause::Failed => "failed",
                })
                .collect();
            writeln!(
                out,
                "{}{}{:#}  {} ({}, {})",
                s.path,
                escape(&f.path),
                s.path,
                escaped(&units.join(", ")),
                causes.join(", "),
                count(f.count as usize, "time", "times")
            )?;
            writeln!(out, "  {}{}{:#}", s.dim, escaped(&f.message), s.dim)?;
            if f.too_broad {
                writeln!(
                    out,
                    "  {}too broad to persist as a whole{:#}: persist what in it {} needs",
                    s.problem,
                    s.problem,
                    if f.units.len() == 1 {
                        "the unit"
                    } else {
                        "the units"
                    }
                )?;
            }
            if let (Some(e), Some(restore)) = (&f.existed, &f.restore) {
                writeln!(
                    out,
                    "  {}existed before the last reset{:#} ({}, owner {}:{}, mode {}): {restore}",
                    s.problem,
                    s.problem,
                    bytes(e.bytes),
                    e.uid,
                    e.gid,
                    e.mode
                )?;
            }
        }
        for u in &self.failed_units {
            writeln!(
                out,
                "{}failed unit{:#} {}: {}",
                s.problem,
                s.problem,
                escaped(&u.unit),
                escaped(&u.message)
            )?;
        }
        for p in &self.persisted {
            writeln!(
                out,
                "{}persisted, yet a failure named it (check its bind mount): {}{:#}",
                s.dim,
                escape(p),
                s.dim
            )?;
        }
        for p in &self.in_storage {
            writeln!(
                out,
                "{}in the persistent storage, yet a failure named it (a mount or migration problem, not a wipe): {}{:#}",
                s.problem,
                escape(p),
                s.problem
            )?;
        }
        if !self.never_persisted.is_empty() {
            let k = knowledge::builtin();
            let trees: BTreeSet<String> = self
                .never_persisted
                .iter()
                .filter_map(|p| k.never_walked(p))
                .map(escape)
                .collect();
            writeln!(
                out,
                "{}{} in trees never persisted ({}: other filesystems, or made anew at every boot), not state (--format json lists them){:#}",
                s.dim,
                count(self.never_persisted.len(), "path", "paths"),
                trees.into_iter().collect::<Vec<_>>().join(", "),
                s.dim
            )?;
        }
        if !self.suggestions.is_empty() {
            writeln!(out)?;
            write_suggestions(out, s, &self.suggestions)?;
        }
        if self.bad_lines > 0 {
            let long = match self.too_long_lines {
                0 => String::new(),
                n => format!("; {n} longer than {} MiB", journal::MAX_LINE_BYTES >> 20),
            };
            writeln!(
                out,
                "{}{} and {} skipped ({}{long}){:#}",
                s.problem,
                if self.bad_lines == 1 {
                    "1 line could not be read as a journal entry".to_string()
                } else {
                    format!(
                        "{} lines could not be read as journal entries",
                        self.bad_lines
                    )
                },
                if self.bad_lines == 1 { "was" } else { "were" },
                line_numbers(&self.bad_line_numbers, self.bad_lines),
                s.problem
            )?;
        }
        if self.unnamed_paths > 0 {
            writeln!(
                out,
                "{}{} in messages of {} cannot be named exactly (not UTF-8, broken off by a control character, with `..` or a NUL, or a file:// URL) and {} not listed (see `journalctl -u UNIT`){:#}",
                s.problem,
                count(self.unnamed_paths as usize, "path", "paths"),
                escaped(
                    &self
                        .unnamed_path_units
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                if self.unnamed_paths == 1 { "is" } else { "are" },
                s.problem
            )?;
        }
        let looked = match (&self.snapshot, &self.snapshot_note) {
            (Some(snap), _) => format!("paths looked up in {snap}"),
            (None, Some(note)) => format!("old root {note}"),
            (None, None) => String::new(),
        };
        writeln!(
            out,
            "{} from {} ({}): {}, {}; {looked}",
            count(self.failures.len(), "path", "paths"),
            self.source,
            count(self.lines as usize, "line", "lines"),
            discover::summary(&self.suggestions),
            count(self.failed_units.len(), "failed unit", "failed units")
        )
    }

    fn nix(&self) -> Option<String> {
        Some(nix::render(&self.suggestions, &self.storage, self.style))
    }
}
