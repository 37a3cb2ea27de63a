//! `check`, `audit` and `baseline`: what a wipe would lose, and the state right after boot
//! that "since boot" is measured from.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::baseline::{self, Manifest};
use crate::beneath;
use crate::classify::Source;
use crate::cli::{DiscoverArgs, FsArgs, GlobalArgs};
use crate::config::Config;
use crate::discover::declared::Declarations;
use crate::discover::ordered::Ordered;
use crate::discover::scan::{self, Skipped};
use crate::discover::suggest::{self, Context, Suggestion};
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;
use crate::filesystem::backend;
use crate::filesystem::toplevel::TopLevel;
use crate::knowledge::{self, Verdict};
use crate::nixos::nix::{self, Style};
use crate::output::{self, Report, Styles};
use crate::paths::escape;
use crate::words::{bytes, count};

/// The result of check, audit and diff's suggestions.
#[derive(Debug, Serialize)]
pub struct DiscoveryReport {
    pub command: &'static str,
    #[serde(serialize_with = "crate::paths::json")]
    pub root: PathBuf,
    /// The baseline manifest `check` compared with, if any.
    #[serde(serialize_with = "crate::paths::json_opt")]
    pub baseline: Option<PathBuf>,
    pub entries: u64,
    pub elapsed_ms: u64,
    /// The root has no /etc/NIXOS and its os-release does not say `ID=nixos`.
    pub not_nixos: bool,
    /// What the reader must know before the rest (human output prints them first).
    pub notes: Vec<String>,
    pub suggestions: Vec<Suggestion>,
    pub skipped: Vec<Skipped>,
    /// Subvolumes nested in the root, walked as part of it: a reset deletes them with it.
    #[serde(serialize_with = "crate::paths::json_all")]
    pub subvolumes: Vec<PathBuf>,
    pub errors: Vec<String>,
    #[serde(skip)]
    pub storage: PathBuf,
    #[serde(skip)]
    pub style: Style,
}

impl DiscoveryReport {
    pub fn has_persist(&self) -> bool {
        self.suggestions
            .iter()
            .any(|s| s.verdict == Verdict::Persist)
    }
}

pub fn check(global: &GlobalArgs, args: &DiscoverArgs) -> Result<ExitStatus, Error> {
    run(global, args, "check")
}

pub fn audit(global: &GlobalArgs, args: &DiscoverArgs) -> Result<ExitStatus, Error> {
    run(global, args, "audit")
}

/// The baseline manifest of this boot under the root, if one was recorded. It is read as
/// the tree sees it: a symlink on the way resolves inside the tree, never to the host's.
pub fn load_manifest(root: &Path) -> Result<Option<(PathBuf, Manifest)>, Error> {
    read_manifest(root, Manifest::parse)
}

/// [`load_manifest`]'s header alone (no entries): see [`Manifest::parse_header`]. Only
/// the header is read (a manifest of a million entries is over 100 MB).
pub fn load_manifest_header(root: &Path) -> Result<Option<(PathBuf, Manifest)>, Error> {
    let tree = beneath::Tree::open(root)?;
    let abs = Path::new(baseline::MANIFEST);
    let file = tree.on_disk(abs);
    let Some(input) = tree.open_regular(abs)? else {
        return Ok(None);
    };
    match Manifest::read_header(io::BufReader::new(input)) {
        Ok(m) => Ok(Some((file, m))),
        Err(baseline::ManifestError::Io(e)) => Err(FsError::new("read", &file, e).into()),
        Err(e) => Err(Error::Usage(format!("{}: {e}", escape(&file)))),
    }
}

fn read_manifest(
    root: &Path,
    parse: fn(&[u8]) -> Result<Manifest, String>,
) -> Result<Option<(PathBuf, Manifest)>, Error> {
    let tree = beneath::Tree::open(root)?;
    let abs = Path::new(baseline::MANIFEST);
    let file = tree.on_disk(abs);
    match tree.read(abs)? {
        Some(data) => parse(&data)
            .map(|m| Some((file.clone(), m)))
            .map_err(|e| Error::Usage(format!("{}: {e}", escape(&file)))),
        None => Ok(None),
    }
}

/// Why the tree at `root` does not look like NixOS, or `None` when it does. What decides
/// is `/etc/NIXOS` (a regular file), or `ID=nixos` in os-release (`/etc/os-release`, else
/// `/usr/lib/os-release`, as os-release(5) says), each read as the tree sees it: on NixOS
/// os-release is a link into /etc/static and the store, which must resolve in the tree.
/// A `/nix/store` decides nothing: Nix installs one on any distribution.
fn not_nixos(root: &Path) -> Result<Option<String>, Error> {
    let tree = beneath::Tree::open(root)?;
    // NixOS makes it a regular (empty) file; a directory, a FIFO or a dangling link is not
    // that marker. A loop of links counts as absent, like an unreadable os-release.
    let marker = tree.kind_resolved(Path::new("/etc/NIXOS")).ok().flatten();
    if marker == Some(rustix::fs::FileType::RegularFile) {
        return Ok(None);
    }
    for file in ["/etc/os-release", "/usr/lib/os-release"] {
        // Unreadable (a directory, a device, a loop of links) counts as absent: the note
        // is a hint, not a refusal.
        if let Ok(Some(data)) = tree.read_bounded(Path::new(file), OS_RELEASE_MAX) {
            if os_release_id(&data).as_deref() == Some("nixos") {
                return Ok(None);
            }
            break;
        }
    }
    Ok(Some(
        "this root does not look like NixOS (no /etc/NIXOS, no ID=nixos in os-release): what \
         follows is everything a wipe would lose here, including what its distribution \
         installed (/usr, /opt, /var/lib/dpkg, …), which NixOS would make anew from its \
         configuration; the verdicts are written for NixOS"
            .into(),
    ))
}

/// os-release is a few hundred bytes; more is not one.
const OS_RELEASE_MAX: u64 = 64 << 10;

/// The `ID=` of an os-release file (os-release(5): shell-style assignments, the value
/// optionally in single or double quotes), `None` when there is none. `ID_LIKE` is not
/// `ID`: a distribution like NixOS is not NixOS.
fn os_release_id(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let mut id = None;
    for line in text.lines() {
        let Some(value) = line.trim().strip_prefix("ID=") else {
            continue;
        };
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        // The last assignment wins, as in a shell.
        id = Some(unquoted.to_string());
    }
    id
}

/// The suggestion context for a configuration: its rules, and the homes its users have.
pub fn context<'a>(config: &'a Config) -> Context<'a> {
    let mut homes: Vec<(String, PathBuf)> = config
        .persisted
        .entries()
        .iter()
        .filter_map(|e| Some((e.user.clone()?, e.home.clone()?)))
        .collect();
    homes.sort();
    homes.dedup();
    Context {
        knowledge: knowledge::builtin(),
        persisted: &config.persisted,
        rules: &config.check.rules,
        homes,
        complete: true,
        declared: Declarations::none(),
    }
}

/// Where persist suggestions go: the first storage path of the persisted set.
pub fn storage(config: &Config) -> PathBuf {
    config
        .persisted
        .storages()
        .into_iter()
        .next()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_STORAGE))
}

fn run(
    global: &GlobalArgs,
    args: &DiscoverArgs,
    command: &'static str,
) -> Result<ExitStatus, Error> {
    let config = super::load_config(global)?;
    let report = discover(&config, command, args.style, true)?;
    output::emit(&report, global.format, global.color)?;
    // What could not be read may hold state: the answer is not a clean one.
    Ok(if report.has_persist() || !report.errors.is_empty() {
        ExitStatus::Findings
    } else {
        ExitStatus::Clean
    })
}

/// What `check` (or `audit`) finds on the host `config` describes, without printing it:
/// the one code path both commands and `status` take. `progress` shows a progress line on
/// a terminal.
pub fn discover(
    config: &Config,
    command: &'static str,
    style: Style,
    progress: bool,
) -> Result<DiscoveryReport, Error> {
    let since = if command == "check" {
        load_manifest(&config.root)?
    } else {
        None
    };
    let ignore = config.check.ignore_set();
    // What the host declares, read once: it splits the walk and decides the units.
    let declared = Declarations::read(&config.root);
    let request = scan::Request {
        root: &config.root,
        persisted: &config.persisted,
        knowledge: knowledge::builtin(),
        ignore: ignore.as_ref(),
        since: since.as_ref().map(|(_, m)| m),
        progress,
        declared: &declared,
    };
    let found = scan::scan(&request)?;
    let not_nixos = not_nixos(&config.root)?;
    let mut notes: Vec<String> = not_nixos.iter().cloned().collect();
    notes.extend(declared.notes());
    let mut suggestions = suggest::suggest(
        found.units,
        &Context {
            declared: &declared,
            ..context(config)
        },
    );
    crate::discover::owners::fill(&config.root, &mut suggestions);
    Ok(DiscoveryReport {
        command,
        root: config.root.clone(),
        baseline: since.map(|(file, _)| file),
        not_nixos: not_nixos.is_some(),
        notes,
        entries: found.entries,
        elapsed_ms: found.elapsed.as_millis() as u64,
        suggestions,
        skipped: found.skipped,
        subvolumes: found.subvolumes,
        errors: found.errors,
        storage: storage(config),
        style,
    })
}

impl Report for DiscoveryReport {
    const COMMAND: &'static str = "check";

    fn human(&self, out: &mut dyn Write, s: &Styles) -> io::Result<()> {
        for note in &self.notes {
            writeln!(out, "{}note: {note}{:#}", s.problem, s.problem)?;
        }
        write_suggestions(out, s, &self.suggestions)?;
        for skip in &self.skipped {
            writeln!(
                out,
                "{}skipped {}: {}{:#}",
                s.dim,
                escape(&skip.path),
                skip.why,
                s.dim
            )?;
        }
        if !self.subvolumes.is_empty() {
            let names: Vec<String> = self.subvolumes.iter().map(|p| escape(p)).collect();
            writeln!(
                out,
                "{}walked {} nested in the root (a reset deletes them with it): {}{:#}",
                s.dim,
                count(names.len(), "subvolume", "subvolumes"),
                names.join(", "),
                s.dim
            )?;
        }
        if !self.errors.is_empty() {
            writeln!(
                out,
                "{}could not read {}:{:#}",
                s.problem,
                count(self.errors.len(), "path", "paths"),
                s.problem
            )?;
            for e in &self.errors {
                writeln!(out, "  {e}")?;
            }
        }
        let since = match (&self.baseline, self.command) {
            (Some(file), _) => format!("since the baseline {}", escape(file)),
            (None, "check") => "no baseline: everything not persisted and not made by NixOS".into(),
            (None, _) => "everything not persisted and not made by NixOS".into(),
        };
        writeln!(
            out,
            "{} · {} in {:.1} s · {since}",
            summary(&self.suggestions),
            count(self.entries as usize, "entry", "entries"),
            self.elapsed_ms as f64 / 1000.0
        )
    }

    fn nix(&self) -> Option<String> {
        Some(nix::render(&self.suggestions, &self.storage, self.style))
    }
}

/// "2 to persist, 1 to review, 3 ephemeral".
pub fn summary(suggestions: &[Suggestion]) -> String {
    let n = |v: Verdict| suggestions.iter().filter(|s| s.verdict == v).count();
    format!(
        "{} to persist, {} to review, {} ephemeral",
        n(Verdict::Persist),
        n(Verdict::Review),
        n(Verdict::Ephemeral)
    )
}

/// Suggestions grouped by verdict, with sizes; what NixOS makes is only counted.
pub fn write_suggestions(
    out: &mut dyn Write,
    s: &Styles,
    suggestions: &[Suggestion],
) -> io::Result<()> {
    let groups = [
        (Verdict::Persist, "persist: a reset loses this", s.problem),
        (Verdict::Review, "review: decide", s.heading),
        (Verdict::Ephemeral, "ephemeral: safe to lose", s.good),
    ];
    let shown = |s: &Suggestion| match (&s.user, &s.relative) {
        (Some(u), Some(r)) => format!("users.{}: {}", escape(Path::new(u)), escape(r)),
        _ => escape(&s.path),
    };
    let width = suggestions
        .iter()
        .filter(|x| x.verdict != Verdict::Generated)
        .map(|x| shown(x).chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    for (verdict, title, style) in groups {
        let items: Vec<&Suggestion> = suggestions
            .iter()
            .filter(|x| x.verdict == verdict)
            .collect();
        if items.is_empty() {
            continue;
        }
        writeln!(out, "{style}{title} ({}){style:#}", items.len())?;
        for item in items {
            // A unit's name is in its source already.
            let service = item
                .service
                .as_deref()
                .filter(|_| !matches!(item.source, Source::Unit { .. }))
                .map(|x| format!("{x}: "))
                .unwrap_or_default();
            writeln!(
                out,
                "  {}{:<width$}{:#} {:>12} {:>10}  {}{service}{} · {}{:#}",
                s.path,
                shown(item),
                s.path,
                count(item.files as usize, "file", "files"),
                bytes(item.bytes),
                s.dim,
                item.reason,
                item.source,
                s.dim
            )?;
        }
    }
    let generated = suggestions
        .iter()
        .filter(|x| x.verdict == Verdict::Generated)
        .count();
    if generated > 0 {
        writeln!(
            out,
            "{}generated: {} NixOS or systemd make again (not shown; --format json lists them){:#}",
            s.dim,
            count(generated, "path", "paths"),
            s.dim
        )?;
    }
    Ok(())
}

/// What `baseline` recorded.
#[derive(Debug, Serialize)]
struct BaselineReport {
    #[serde(serialize_with = "crate::paths::json")]
    manifest: PathBuf,
    entries: usize,
    /// The read-only snapshot, where one was taken.
    #[serde(serialize_with = "crate::paths::json_opt")]
    snapshot: Option<PathBuf>,
    /// Why no snapshot was taken.
    snapshot_note: Option<String>,
}

pub fn baseline(global: &GlobalArgs, args: &FsArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, BaselineReport::COMMAND)?;
    let config = super::load_config(global)?;
    let mounts = super::diff::mounts_below(&config);
    // The snapshot first, then the manifest that names it (its subvolumes' ids and uuids):
    // `diff` pairs the two only when they match, so a run cut short at any point, or one
    // refused the snapshot, leaves an old `.baseline` that is not used with a new
    // manifest, nor a new one with the old manifest.
    let (snapshot, snapshot_note, parts, links) = match baseline_snapshot(&config, args) {
        Ok((path, parts, root)) => (Some(path), None, parts, root),
        Err(note) => (None, Some(note), Vec::new(), None),
    };
    crate::snapshots::reset::failpoint("baseline-snapshot-taken", &mut |line| eprintln!("{line}"));
    let (file, entries) = write_manifest(&config, &parts, &mounts, links)?;
    let report = BaselineReport {
        manifest: file,
        entries,
        snapshot,
        snapshot_note,
    };
    output::emit(&report, global.format, global.color)?;
    Ok(ExitStatus::Clean)
}

/// Writes the manifest beneath the root as the root is walked, in tree order (what `diff`
/// merges against), so that memory does not grow with the tree: with no symlink on the way
/// (a `run` planted as a symlink is refused, not written through), atomically (the disk
/// full half-way leaves the last manifest as it was, and no temporary file). Readable by
/// root only: it names every file, also those in directories other users cannot list.
/// Symlink targets are read from the snapshot just taken (`links`, its root), where there
/// is one: reading them in the live tree would write their access times under `relatime`,
/// after the snapshot, and the generation search would read every fresh link again.
/// Gives the manifest's path and its number of entries.
fn write_manifest(
    config: &Config,
    snapshot: &[baseline::SnapshotPart],
    mounts: &[PathBuf],
    links: Option<std::os::fd::OwnedFd>,
) -> Result<(PathBuf, usize), Error> {
    let tree = beneath::Tree::open(&config.root)?;
    let abs = Path::new(baseline::MANIFEST);
    remove_dead_temporaries(&tree, abs);
    let mut walk = Ordered::new(&config.root, &config.persisted, knowledge::builtin())?;
    if let Some(snapshot) = links {
        walk = walk.links_from(snapshot);
    }
    let _progress = super::diff::Progress::start(vec![walk.read.clone()]);
    let mut entries = 0;
    tree.write_atomic_with(abs, 0o600, |file| {
        let out = io::BufWriter::with_capacity(1 << 20, file);
        let mut out = baseline::Writer::new(out, snapshot, mounts)?;
        for (path, entry) in walk {
            out.entry(&path, &entry.complete(&path, None))?;
            entries += 1;
        }
        out.into_inner().flush()
    })?;
    Ok((tree.on_disk(abs), entries))
}

/// Removes the temporary files (`.NAME.PID.NANOS.tmp`) that runs killed while writing
/// `abs` left beside it: only regular files, only when their process is gone. Best effort:
/// a leftover must not stop a baseline.
fn remove_dead_temporaries(tree: &beneath::Tree, abs: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return;
    };
    let Some(dir) = tree.open_dir(parent) else {
        return;
    };
    let Ok(mut entries) = rustix::fs::Dir::read_from(&dir) else {
        return;
    };
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(name.as_bytes());
    prefix.push(b'.');
    while let Some(Ok(entry)) = entries.next() {
        let file = entry.file_name().to_bytes();
        let Some(rest) = file
            .strip_prefix(prefix.as_slice())
            .and_then(|r| r.strip_suffix(b".tmp"))
        else {
            continue;
        };
        let Some((pid, nanos)) = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split_once('.'))
        else {
            continue;
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let Some(pid) = (digits(pid) && digits(nanos))
            .then(|| pid.parse().ok())
            .flatten()
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        if rustix::process::test_kill_process(pid) != Err(rustix::io::Errno::SRCH) {
            continue;
        }
        let regular = rustix::fs::statat(
            &dir,
            entry.file_name(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
        });
        if regular {
            let _ = rustix::fs::unlinkat(&dir, entry.file_name(), rustix::fs::AtFlags::empty());
        }
    }
}

/// Takes the read-only `.baseline` snapshot of the root subvolume, replacing the last one,
/// and says what it holds (see [`Manifest::snapshot`]). Every obstacle is a note, not an
/// error: the manifest alone is a complete baseline. A `--root` that is not the root
/// subvolume (a mounted snapshot, another subvolume) gets no snapshot, and the running
/// system's `.baseline` is left as it was: a snapshot of the root subvolume would not be
/// of that tree.
/// Gives its path, its parts and its root directory, opened (where it can be).
fn baseline_snapshot(
    config: &Config,
    args: &FsArgs,
) -> Result<
    (
        PathBuf,
        Vec<baseline::SnapshotPart>,
        Option<std::os::fd::OwnedFd>,
    ),
    String,
> {
    let fs = super::filesystem(config, args).map_err(|e| e.to_string())?;
    let backend = backend::for_type(fs.fs_type);
    if !backend.has_subvolumes() {
        return Err("a tmpfs root has no snapshots".into());
    }
    if args.mounted.is_none() && !rustix::process::geteuid().is_root() {
        return Err("taking a snapshot needs root".into());
    }
    let top = TopLevel::open(&fs, args.mounted.as_deref()).map_err(|e| e.to_string())?;
    if !super::diff::is_root_subvolume(&top, &fs, &config.root).map_err(|e| e.to_string())? {
        return Err(format!(
            "{}; {} was left as it was",
            super::diff::not_the_root(&top, &fs, &config.root),
            top.name(&fs.snapshot_dir.join(baseline::SNAPSHOT))
        ));
    }
    top.lock().map_err(|e| e.to_string())?;
    if backend
        .kind(&top, &fs.snapshot_dir)
        .map_err(|e| e.to_string())?
        == backend::Kind::Missing
    {
        backend
            .create(&top, &fs.snapshot_dir)
            .map_err(|e| e.to_string())?;
    }
    let snap = fs.snapshot_dir.join(baseline::SNAPSHOT);
    let kind = backend.kind(&top, &snap).map_err(|e| e.to_string())?;
    if kind == backend::Kind::Subvolume {
        crate::snapshots::snapshot::delete_tree(backend.as_ref(), &top, &snap)
            .map_err(|e| e.to_string())?;
    } else if kind != backend::Kind::Missing {
        return Err(format!(
            "{} is in the way and is not a subvolume",
            escape(&snap)
        ));
    }
    // With the subvolumes nested in the root snapshotted in place: their state at boot is
    // part of the baseline the generation search compares with.
    crate::snapshots::snapshot::snapshot_tree(
        backend.as_ref(),
        &top,
        &fs.root_subvolume,
        &snap,
        &mut |_| {},
    )
    .map_err(|e| e.to_string())?;
    let parts =
        super::diff::snapshot_parts(backend.as_ref(), &top, &snap).map_err(|e| e.to_string())?;
    let root = top.open_dir(&snap).ok();
    Ok((snap, parts, root))
}

impl Report for BaselineReport {
    const COMMAND: &'static str = "baseline";

    fn human(&self, out: &mut dyn Write, _s: &Styles) -> io::Result<()> {
        writeln!(
            out,
            "baseline: {} in {}",
            count(self.entries, "entry", "entries"),
            escape(&self.manifest)
        )?;
        match (&self.snapshot, &self.snapshot_note) {
            (Some(snap), _) => writeln!(out, "read-only snapshot: {}", escape(snap)),
            (None, Some(note)) => writeln!(out, "no snapshot: {note}"),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::os_release_id;

    #[test]
    fn the_id_of_an_os_release() {
        let cases: &[(&str, Option<&str>)] = &[
            ("NAME=NixOS\nID=nixos\n", Some("nixos")),
            ("ID=\"nixos\"\n", Some("nixos")),
            ("ID='nixos'\n", Some("nixos")),
            ("  ID=nixos  \n", Some("nixos")),
            ("ID=debian\nID_LIKE=\"nixos\"\n", Some("debian")),
            ("ID_LIKE=nixos\n", None),
            ("# ID=nixos\n", None),
            ("VARIANT_ID=nixos\n", None),
            ("ID=debian\nID=nixos\n", Some("nixos")),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(os_release_id(text.as_bytes()).as_deref(), *want, "{text:?}");
        }
    }
}
