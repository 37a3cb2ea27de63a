//! `browse`: the result of check, audit, diff or journal, computed by the same code the
//! plain command runs, shown by `crate::browse`; the writes its keys ask for, done by the
//! code `persist add` uses; the terminal given back as it was on every way out.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::browse::disk::Disk;
use crate::browse::model::{self, Action, Effect, Key, Mark, Model, Targets, Undo};
use crate::browse::picker::{Entry, Pick, Picker};
use crate::browse::{ignore, view};
use crate::cli::{
    BrowseArgs, BrowseView, DiscoverArgs, FsArgs, GlobalArgs, RestoreArgs, RestoreInto,
};
use crate::config::Config;
use crate::discover::suggest::Suggestion;
use crate::error::{Error, FsError};
use crate::exit::ExitStatus;
use crate::filesystem::backend;
use crate::filesystem::toplevel::TopLevel;
use crate::knowledge::Verdict;
use crate::nixos::nix::{self, Style};
use crate::nixos::nixedit::{self, List, Outcome, Request};
use crate::output::ColorChoice;
use crate::paths::escape;
use crate::retention::Stamp;
use crate::snapshots::mount::{Mounted, OLD_ROOTS, OldRoots, mount_old_root};
use crate::snapshots::reset::Layout;
use crate::snapshots::snapshot;

pub fn run(global: &GlobalArgs, args: &BrowseArgs) -> Result<ExitStatus, Error> {
    let view = args
        .view
        .clone()
        .unwrap_or(BrowseView::Check(DiscoverArgs::default()));
    let name = match &view {
        BrowseView::Check(_) => "check",
        BrowseView::Audit(_) => "audit",
        BrowseView::Diff(_) => "diff",
        BrowseView::Journal(_) => "journal",
    };
    // Before any work: a pipe or a file gets the plain command's output, not a screen.
    if !std::io::stdout().is_terminal() {
        return Err(Error::Usage(format!(
            "browse needs a terminal on stdout; for a pipe or a file use the plain command: imperm {name}"
        )));
    }
    let config = super::load_config(global)?;
    let (suggestions, style) = result(&config, &view)?;
    // The last reset's old root, when there is one to compare with and restore from;
    // why not, otherwise (said on the last line at the start).
    let old = old_root(&config, &args.fs);
    let mut disk = Disk::open(&config.root)?;
    let (old_name, note) = match &old {
        Ok((name, top, dir)) => {
            disk = disk.with_old_root(name.clone(), &top.join(dir))?;
            (Some(name.clone()), None)
        }
        // A host with no filesystem configured has no old roots: nothing to say.
        Err(_) if config.filesystem.is_none() && args.fs.fs_type.is_none() => (None, None),
        Err(why) => (None, Some(format!("no old root: {why}"))),
    };
    let targets = Targets {
        nix_file: args.nix_file.as_deref().map(escape),
        config: escape(&config.config_file.path),
        old_root: old_name.clone(),
    };
    let mut model = Model::new(name, suggestions, targets);
    if let Some(note) = note {
        model.say(note);
    }
    let color = match global.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    let edge = Edge {
        config: &config,
        nix_file: args.nix_file.as_deref(),
        fs: &args.fs,
        old_root: old_name,
    };
    {
        let mut screen = Screen::enter()?;
        interact(&mut screen.terminal, &mut model, &disk, &edge, color)?;
    }
    summary(&model, &config, style).map_err(Error::Output)?;
    Ok(ExitStatus::Clean)
}

/// The suggestions of the view's command, as that command computes them.
fn result(config: &Config, view: &BrowseView) -> Result<(Vec<Suggestion>, Style), Error> {
    Ok(match view {
        BrowseView::Check(a) => (
            super::discover::discover(config, "check", a.style, true)?.suggestions,
            a.style,
        ),
        BrowseView::Audit(a) => (
            super::discover::discover(config, "audit", a.style, true)?.suggestions,
            a.style,
        ),
        BrowseView::Diff(a) => (
            super::diff::report(config, a)?.suggestions,
            a.discover.style,
        ),
        BrowseView::Journal(a) => (
            super::journal::report(config, a)?.suggestions,
            a.discover.style,
        ),
    })
}

/// The last reset's old root: its name, the top level it is in (kept mounted while the
/// browser runs) and its directory there; or why there is none, in a few words.
fn old_root(config: &Config, args: &FsArgs) -> Result<(String, TopLevel, PathBuf), String> {
    let fs = super::filesystem(config, args).map_err(|e| e.to_string())?;
    let backend = backend::for_type(fs.fs_type);
    if !backend.has_subvolumes() {
        return Err("a tmpfs root keeps none".into());
    }
    if args.mounted.is_none() && !rustix::process::geteuid().is_root() {
        return Err("mounting the top level needs root (or --mounted DIR)".into());
    }
    let top = TopLevel::open(&fs, args.mounted.as_deref()).map_err(|e| e.to_string())?;
    let (name, dir) =
        super::old_root(backend.as_ref(), &top, &fs, None).map_err(|e| e.to_string())?;
    Ok((name, top, dir))
}

/// The terminal in raw mode on the alternate screen, given back when dropped (an error's
/// return included); ratatui's panic hook gives it back on a panic.
struct Screen {
    terminal: ratatui::DefaultTerminal,
}

/// Set by SIGTERM or SIGHUP (a `kill`, the terminal or the SSH connection gone): the
/// browser ends as on Ctrl-C, through the same path that gives the terminal back.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Takes SIGTERM and SIGHUP instead of dying with the terminal in raw mode.
fn catch_stop_signals() {
    let handler: extern "C" fn(libc::c_int) = on_stop;
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, handler as libc::sighandler_t);
        }
    }
}

impl Screen {
    fn enter() -> Result<Screen, Error> {
        catch_stop_signals();
        match ratatui::try_init() {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                // Raw mode may be on already when the alternate screen failed.
                ratatui::restore();
                Err(Error::Output(e))
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs a view until `q` (or Esc in an old root's view); `true` when the person pressed
/// Ctrl-C, which ends the browser from any view.
fn interact(
    terminal: &mut ratatui::DefaultTerminal,
    model: &mut Model,
    disk: &Disk,
    edge: &Edge,
    color: bool,
) -> Result<bool, Error> {
    // The preview of the node under the cursor, read again only when it changes.
    let mut preview: Option<(usize, Vec<String>)> = None;
    loop {
        let current = model.current();
        if preview.as_ref().map(|p| p.0) != current {
            preview = current.map(|n| (n, disk.preview(&model.nodes[n].path)));
        }
        let lines = preview.as_ref().map(|p| p.1.as_slice()).unwrap_or(&[]);
        terminal
            .draw(|f| view::draw(f, model, lines, color))
            .map_err(Error::Output)?;
        let Some(key) = next_key()? else {
            return Ok(true);
        };
        match model.key(key, disk) {
            Effect::None => {}
            Effect::Quit => return Ok(false),
            Effect::Pick => {
                if edge.pick(terminal, model, color)? {
                    return Ok(true);
                }
                terminal.clear().map_err(Error::Output)?;
                preview = None;
            }
            Effect::Do { action, node } => {
                if let Err(e) = edge.perform(model, action, node) {
                    model.say(format!("{}: {e}", letter(action)));
                }
                // What the write printed on stderr (restore names what it copied) is
                // drawn over: the whole screen again.
                terminal.clear().map_err(Error::Output)?;
                // What was written changes what the preview shows.
                preview = None;
            }
        }
    }
}

/// The next key pressed, as the model understands it; `None` for Ctrl-C (or SIGTERM,
/// SIGHUP: see [`STOP`]).
fn next_key() -> Result<Option<Key>, Error> {
    loop {
        if STOP.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(None);
        }
        // Woken now and then to see whether a signal asked to stop.
        if !event::poll(std::time::Duration::from_millis(200)).map_err(Error::Output)? {
            continue;
        }
        let Event::Key(k) = event::read().map_err(Error::Output)? else {
            continue;
        };
        if k.kind != KeyEventKind::Press {
            continue;
        }
        // A test hook: a bug at a key press, to see the terminal given back.
        if std::env::var(crate::snapshots::reset::FAILPOINT_ENV).is_ok_and(|v| v == "browse-key") {
            panic!("failpoint browse-key");
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Ok(None);
        }
        let key = match k.code {
            KeyCode::Up => Key::Up,
            KeyCode::Down => Key::Down,
            KeyCode::PageUp => Key::PageUp,
            KeyCode::PageDown => Key::PageDown,
            KeyCode::Home => Key::Home,
            KeyCode::End => Key::End,
            KeyCode::Left => Key::Left,
            KeyCode::Right => Key::Right,
            KeyCode::Enter => Key::Enter,
            KeyCode::Esc => Key::Esc,
            KeyCode::Backspace => Key::Backspace,
            KeyCode::Char(c) => Key::Char(c),
            _ => continue,
        };
        return Ok(Some(key));
    }
}

fn letter(action: Action) -> char {
    match action {
        Action::Persist => 'p',
        Action::Ignore => 'i',
        Action::Undo => 'u',
        Action::Restore => 'r',
    }
}

/// An old root's tree, read through the descriptor of its mount (this process mounted a
/// top level privately, so its own namespace does not see the new mount at its path),
/// until `q` or Esc. `true` on Ctrl-C.
fn browse_old_root(
    terminal: &mut ratatui::DefaultTerminal,
    mounted: &Mounted,
    color: bool,
    edge: &Edge,
) -> Result<bool, Error> {
    let disk = Disk::from_fd(&mounted.path, mounted.root.as_fd())?;
    let mut model = Model::old_root(
        format!(
            "imperm browse · old root {} · mounted read-only at {}",
            mounted.name,
            escape(&mounted.mount_point)
        ),
        &disk,
    );
    terminal.clear().map_err(Error::Output)?;
    interact(terminal, &mut model, &disk, edge, color)
}

/// Where the writes go.
struct Edge<'a> {
    config: &'a Config,
    nix_file: Option<&'a Path>,
    fs: &'a FsArgs,
    old_root: Option<String>,
}

impl Edge<'_> {
    /// `s`: the picker of old roots; the one chosen (after its y) mounted read-only
    /// where `snapshots mount` mounts it, and browsed as a tree. It stays mounted, for
    /// the person's own tools: the summary says how to unmount it. `true` on Ctrl-C.
    fn pick(
        &self,
        terminal: &mut ratatui::DefaultTerminal,
        model: &mut Model,
        color: bool,
    ) -> Result<bool, Error> {
        let entries = match self.old_roots() {
            Ok(entries) => entries,
            Err(e) => {
                model.say(format!("s: {e}"));
                return Ok(false);
            }
        };
        let mut picker = Picker::new(entries, escape(Path::new(OLD_ROOTS)));
        loop {
            terminal
                .draw(|f| view::draw_picker(f, &mut picker))
                .map_err(Error::Output)?;
            let Some(key) = next_key()? else {
                return Ok(true);
            };
            let i = match picker.key(key) {
                Pick::None => continue,
                Pick::Back => return Ok(false),
                Pick::Mount(i) => i,
            };
            let name = picker.entries[i].name.clone();
            let mounted = match self.mount(&name) {
                Ok(m) => m,
                Err(e) => {
                    picker.message = format!("s: {e}");
                    terminal.clear().map_err(Error::Output)?;
                    continue;
                }
            };
            let at = escape(&mounted.mount_point);
            if !model.mounted.iter().any(|(n, _)| *n == mounted.name) {
                model.mounted.push((mounted.name.clone(), at.clone()));
            }
            picker.message = match browse_old_root(terminal, &mounted, color, self) {
                Ok(true) => return Ok(true),
                Ok(false) => format!(
                    "{name} stays mounted at {at}: `imperm snapshots umount {at}` unmounts it"
                ),
                // Mounted, but not to be read (its `/` cannot be opened): said here, and
                // the summary still names it.
                Err(e) => format!("s: {e}; {name} stays mounted at {at}"),
            };
            terminal.clear().map_err(Error::Output)?;
        }
    }

    /// The old roots, as `snapshots ls` finds them: newest first, the last reset's marked.
    fn old_roots(&self) -> Result<Vec<Entry>, Error> {
        let fs = super::filesystem(self.config, self.fs)?;
        let backend = backend::for_type(fs.fs_type);
        if !backend.has_subvolumes() {
            return Err(Error::Usage("a tmpfs root keeps no old roots".into()));
        }
        let top = TopLevel::open(&fs, self.fs.mounted.as_deref())?;
        let layout = Layout {
            root: fs.root_subvolume.clone(),
            snapshot_dir: fs.snapshot_dir.clone(),
            blank: fs.blank_snapshot.clone(),
        };
        let survey = snapshot::survey(
            backend.as_ref(),
            &top,
            &layout,
            &TimeZone::system(),
            super::now()?,
        )
        .map_err(|e| top.locate(e))?;
        let mut old: Vec<(Stamp, Entry)> = survey
            .found
            .iter()
            .zip(&survey.candidates)
            .enumerate()
            .filter_map(|(i, (f, c))| {
                // An old root whole: not the blank, not writable, not half deleted.
                let stamp = c
                    .stamp
                    .filter(|_| c.held.is_empty() && c.finish.is_none())?;
                Some((
                    stamp,
                    Entry {
                        name: f.name.clone(),
                        time: stamp.time.to_string(),
                        last: survey.last_reset == Some(i),
                    },
                ))
            })
            .collect();
        old.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
        Ok(old.into_iter().map(|(_, e)| e).collect())
    }

    /// Mounts old root `name` as `imperm snapshots mount NAME` does.
    fn mount(&self, name: &str) -> Result<Mounted, Error> {
        let fs = super::filesystem(self.config, self.fs)?;
        let at = OldRoots {
            fs: &fs,
            mounted: self.fs.mounted.as_deref(),
            root: &self.config.root,
            now: super::now()?,
        };
        mount_old_root(&at, Some(name), None)
    }

    fn perform(&self, model: &mut Model, action: Action, node: usize) -> Result<(), Error> {
        match action {
            Action::Persist => self.persist(model, node),
            Action::Ignore => self.ignore(model, node),
            Action::Undo => self.undo(model),
            Action::Restore => self.restore(model, node),
        }
    }

    /// `r`: the path back from the last reset's old root into the live root, as
    /// `imperm restore PATH --from SNAP` does it (an existing path is refused: restore's
    /// --force, which keeps it aside, is for the plain command).
    fn restore(&self, model: &mut Model, node: usize) -> Result<(), Error> {
        let Some(from) = &self.old_root else {
            return Err(Error::Usage("no old root to restore from".into()));
        };
        let path = model.nodes[node].path.clone();
        let args = RestoreArgs {
            paths: vec![path.clone()],
            from: Some(from.clone()),
            into: RestoreInto::Root,
            force: false,
            fs: self.fs.clone(),
        };
        let report = super::restore::report(self.config, &args)?;
        if let Some(not) = report.not_restored.first() {
            return Err(Error::Usage(format!(
                "{}: {}; nothing written",
                escape(&path),
                not.reason
            )));
        }
        let target = report
            .restored
            .first()
            .map(|r| escape(&r.target))
            .unwrap_or_else(|| escape(&path));
        model.marked(Mark {
            action: Action::Restore,
            path,
            summary: format!("restored {target} from {from}"),
            undo: Undo::Nothing,
        });
        Ok(())
    }

    fn persist(&self, model: &mut Model, node: usize) -> Result<(), Error> {
        let mut s = model.suggestion_for(node);
        let shown = escape(&s.path);
        let Some(file) = self.nix_file else {
            // Collected for the snippet on exit, whatever its verdict: the person chose.
            s.verdict = Verdict::Persist;
            model.collected.push(s);
            model.marked(Mark {
                action: Action::Persist,
                path: model.nodes[node].path.clone(),
                summary: format!("collected {shown} for the snippet"),
                undo: Undo::Collected,
            });
            return Ok(());
        };
        let (user, entry) = match (&s.user, &s.relative) {
            (Some(u), Some(r)) => (Some(u.clone()), r),
            _ => (None, &s.path),
        };
        let entry = entry.to_str().ok_or_else(|| {
            Error::Usage(format!(
                "{shown} is not UTF-8, which a Nix string cannot hold; nothing written"
            ))
        })?;
        let request = Request {
            storage: None,
            user,
            list: match s.kind {
                crate::persisted::Kind::Directory => List::Directories,
                crate::persisted::Kind::File => List::Files,
            },
            entries: vec![entry.to_string()],
        };
        let mut refused = None;
        let written = super::persist::rewrite(file, |text| {
            match nixedit::add(text, &request)
                .map_err(|e| Error::Usage(format!("{}: {e}", escape(file))))?
            {
                Outcome::Edited { text, .. } => Ok(Some(text)),
                Outcome::Unchanged { .. } => Ok(None),
                Outcome::Refused { reason, .. } => {
                    refused = Some(reason);
                    Ok(None)
                }
            }
        })?;
        if let Some(reason) = refused {
            return Err(Error::Usage(format!(
                "{}: {reason}; nothing written",
                escape(file)
            )));
        }
        let Some((before, after)) = written else {
            model.say(format!(
                "p: {shown} is declared in {} already",
                escape(file)
            ));
            return Ok(());
        };
        model.marked(Mark {
            action: Action::Persist,
            path: s.path.clone(),
            summary: format!("persisted {shown} into {}", escape(file)),
            undo: Undo::File {
                path: file.to_path_buf(),
                before: Some(before.into_bytes()),
                after: after.into_bytes(),
            },
        });
        Ok(())
    }

    fn ignore(&self, model: &mut Model, node: usize) -> Result<(), Error> {
        let n = &model.nodes[node];
        let glob = model::ignore_glob(&n.path, n.dir).ok_or_else(|| {
            Error::Usage(format!(
                "{} is not UTF-8: no glob can name it",
                escape(&n.path)
            ))
        })?;
        let file = self.config.config_file.path.clone();
        let exists = std::fs::symlink_metadata(&file).is_ok();
        let (before, after) = if exists {
            let written = super::persist::rewrite(&file, |text| {
                ignore::with_ignore(&file, text, &glob).map_err(Error::Usage)
            })?;
            match written {
                Some((b, a)) => (Some(b.into_bytes()), a.into_bytes()),
                None => {
                    model.say(format!("i: {glob} is in {} already", escape(&file)));
                    return Ok(());
                }
            }
        } else {
            let text = ignore::with_ignore(&file, "", &glob)
                .map_err(Error::Usage)?
                .unwrap_or_default();
            create(&file, text.as_bytes())?;
            (None, text.into_bytes())
        };
        model.marked(Mark {
            action: Action::Ignore,
            path: model.nodes[node].path.clone(),
            summary: format!("ignored {glob} in {}", escape(&file)),
            undo: Undo::File {
                path: file,
                before,
                after,
            },
        });
        Ok(())
    }

    /// Takes back the last mark: the file it wrote gets its text back, if it still holds
    /// what was written (else someone changed it since, and it is left alone).
    fn undo(&self, model: &mut Model) -> Result<(), Error> {
        let Some(mark) = model.marks.last() else {
            return Ok(());
        };
        if let Undo::File {
            path,
            before,
            after,
        } = &mark.undo
        {
            let changed = || {
                Error::Usage(format!(
                    "{} changed since it was written; left as it is",
                    escape(path)
                ))
            };
            match before {
                Some(before) => {
                    let before = String::from_utf8_lossy(before).into_owned();
                    super::persist::rewrite(path, |now| {
                        if now.as_bytes() == after.as_slice() {
                            Ok(Some(before))
                        } else {
                            Err(changed())
                        }
                    })?;
                }
                None => {
                    // It did not exist: removed, if it still holds what was written.
                    let now = std::fs::read(path).map_err(|e| FsError::new("read", path, e))?;
                    if now != *after {
                        return Err(changed());
                    }
                    std::fs::remove_file(path).map_err(|e| FsError::new("remove", path, e))?;
                }
            }
        }
        model.undone();
        Ok(())
    }
}

/// A file that did not exist, made with `data` (never over one that appeared since).
fn create(file: &Path, data: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| FsError::new("create", dir, e))?;
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)
        .map_err(|e| FsError::new("create", file, e))?;
    out.write_all(data)
        .and_then(|()| out.sync_all())
        .map_err(|e| FsError::new("write", file, e).into())
}

/// What `q` prints: every write and undo, and the collected snippet.
fn summary(model: &Model, config: &Config, style: Style) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if model.log.is_empty() {
        writeln!(out, "browse: nothing written")?;
    }
    for line in &model.log {
        writeln!(out, "browse: {line}")?;
    }
    for (name, at) in &model.mounted {
        writeln!(
            out,
            "browse: old root {name} is still mounted read-only at {at}; `imperm snapshots umount {at}` unmounts it"
        )?;
    }
    if !model.collected.is_empty() {
        let storage: PathBuf = super::discover::storage(config);
        out.write_all(nix::render(&model.collected, &storage, style).as_bytes())?;
    }
    out.flush()
}
