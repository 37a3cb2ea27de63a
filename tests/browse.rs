//! `imperm browse`, driven as a person drives it: in a detached tmux session of 80×24
//! (its own server socket, killed when the test ends, a panic included), keys sent with
//! `send-keys`, the screen read with `capture-pane`, over fixture trees built here. The
//! main views' screens are compared with the captures in tests/fixtures/browse/
//! (`IMPERM_BLESS=1` writes them anew).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A host's root with a little of everything `check` sorts, and a configuration beside it.
struct Host {
    dir: TempDir,
}

impl Host {
    fn new() -> Host {
        let host = Host {
            dir: TempDir::new().unwrap(),
        };
        host.file("root/etc/NIXOS", "");
        host.file("root/etc/passwd", "root:x:0:0::/root:/bin/sh\n");
        host.file("root/etc/group", "root:x:0:\n");
        host.file("root/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
        host.file(
            "root/var/lib/forgejo/app.ini",
            "[server]\nHTTP_PORT = 3000\n",
        );
        host.file(
            "root/var/lib/forgejo/data/forgejo.db",
            "SQLite format 3\0xx",
        );
        host.file("root/var/cache/thumbs/a.png", "thumb\n");
        host.file("root/var/lib/mystery/notes.txt", "hello\n");
        host.file(
            "config.toml",
            "# the host's own\n[persistence.\"/persist\"]\ndirectories = [\"/var/log\"]\n",
        );
        host.file(
            "host.nix",
            "{ ... }:\n{\n  environment.persistence.\"/persist\" = {\n    directories = [\n      \"/var/log\"\n    ];\n  };\n}\n",
        );
        host
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn root(&self) -> PathBuf {
        self.path("root")
    }

    /// A file, and each missing directory on its way, with the modes a host has.
    fn file(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        let mut at = self.dir.path().to_path_buf();
        for part in Path::new(rel).parent().unwrap().components() {
            at.push(part);
            if !at.exists() {
                fs::create_dir(&at).unwrap();
                fs::set_permissions(&at, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap()
    }

    /// The command line that browses this host.
    fn browse(&self, args: &str) -> String {
        format!(
            "{} --root {} --config {} browse {args}",
            env!("CARGO_BIN_EXE_imperm"),
            self.root().display(),
            self.path("config.toml").display(),
        )
    }
}

/// One tmux server (its own socket) running one command in an 80×24 window; the whole
/// server is killed when dropped.
struct Tmux {
    socket: String,
    /// The server's socket file: tmux leaves it behind when the server is killed.
    path: Option<PathBuf>,
}

static SESSIONS: AtomicUsize = AtomicUsize::new(0);

impl Tmux {
    /// Starts `command` (a shell command line); when it ends, the shell prints its exit
    /// status and waits, so that what it printed last stays on screen.
    fn start(command: &str) -> Tmux {
        let socket = format!(
            "imperm-browse-{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::SeqCst)
        );
        let mut tmux = Tmux { socket, path: None };
        let line = format!(
            "env NO_COLOR=1 RUST_BACKTRACE=0 IMPERM_NOW=2026-11-26T12:00:00Z {command}; echo \"[exit $?]\"; sleep 600"
        );
        let out = Command::new("tmux")
            .args(["-f", "/dev/null", "-L", &tmux.socket])
            .args([
                "new-session",
                "-d",
                "-x",
                "80",
                "-y",
                "24",
                "sh",
                "-c",
                &line,
            ])
            .output()
            .expect("tmux (the browse tests need it: .ci/run installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = tmux.tmux(&["display", "-p", "#{socket_path}"]);
        tmux.path = Some(PathBuf::from(path.trim()));
        tmux
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Sends keys as tmux names them (`Enter`, `Down`, `j`, …), one at a time.
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.tmux(&["send-keys", "-t", "0", k]);
        }
    }

    /// Types text literally.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "0", "-l", text]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "0"])
    }

    /// Waits until the screen shows `text`, and gives the screen.
    fn wait_for(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                // A screen drawn in parts: one more look once it is there.
                std::thread::sleep(Duration::from_millis(50));
                return self.screen();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "waited 30 s for {text:?}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends keys, then waits until the screen shows `text`.
    fn press(&self, keys: &[&str], text: &str) -> String {
        self.keys(keys);
        self.wait_for(text)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
        if let Some(path) = &self.path {
            let _ = fs::remove_file(path);
        }
    }
}

/// Compares a screen with its committed capture (`IMPERM_BLESS=1` writes it).
fn matches_capture(name: &str, screen: &str, host: &Host) {
    // The host's temporary paths differ at every run.
    let screen = screen.replace(&host.dir.path().display().to_string(), "$HOST");
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/browse")
        .join(format!("{name}.txt"));
    if std::env::var_os("IMPERM_BLESS").is_some() {
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, &screen).unwrap();
        return;
    }
    let want = fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (IMPERM_BLESS=1 writes it)", file.display()));
    assert_eq!(
        screen,
        want,
        "the screen differs from {} (IMPERM_BLESS=1 writes it anew)",
        file.display()
    );
}

/// The screen's words, one space apart: a line the screen wrapped reads whole.
fn words(screen: &str) -> String {
    screen.split_whitespace().collect::<Vec<_>>().join(" ")
}

const HEADER: &str = "imperm browse check";

#[test]
fn a_non_terminal_stdout_is_refused_naming_the_plain_command() {
    let host = Host::new();
    for (view, plain) in [("", "imperm check"), ("audit", "imperm audit")] {
        let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(host.root())
            .args(["browse", view].iter().filter(|a| !a.is_empty()))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(plain), "{err}");
    }
}

#[test]
fn the_check_view_matches_its_capture() {
    let host = Host::new();
    let tmux = Tmux::start(&host.browse(""));
    let screen = tmux.wait_for(HEADER);
    matches_capture("check", &screen, &host);
    // Units are collapsed, each with its letter, files and size; the preview names the
    // reason and where the verdict came from.
    assert!(screen.contains(">▸P /etc/machine-id") || screen.contains("> P /etc/machine-id"));
    assert!(screen.contains("source: knowledge"), "{screen}");
    let help = tmux.press(&["?"], " keys ");
    matches_capture("help", &help, &host);
    tmux.press(&["x"], HEADER);
    let out = tmux.press(&["q"], "[exit 0]");
    assert!(out.contains("browse: nothing written"), "{out}");
}

#[test]
fn navigation_expands_a_unit_lazily_and_previews_a_file() {
    let host = Host::new();
    let tmux = Tmux::start(&host.browse("check"));
    tmux.wait_for(HEADER);
    // The second unit is /var/lib/forgejo: expand it, go to its file.
    let screen = tmux.press(&["j", "Enter"], "data");
    assert!(screen.contains(">▾P /var/lib/forgejo"), "{screen}");
    assert!(screen.contains("▸· data"), "{screen}");
    let screen = tmux.press(&["j", "j"], "HTTP_PORT = 3000");
    assert!(
        screen.contains("> ") && screen.contains("app.ini"),
        "{screen}"
    );
    assert!(screen.contains("file · 26 B · mode 0644"), "{screen}");
    // Into data/, to the database: binary, said by type.
    let screen = tmux.press(&["k", "Right", "j"], "binary (SQLite database)");
    assert!(screen.contains("forgejo.db"), "{screen}");
    matches_capture("check-expanded", &screen, &host);
    // Left goes to the parent, then collapses it.
    let screen = tmux.press(&["Left", "Left", "Left", "Left"], "▸P /var/lib/forgejo");
    assert!(!screen.contains("app.ini"), "{screen}");
    tmux.press(&["q"], "[exit 0]");
}

#[test]
fn the_filter_and_the_search_narrow_the_tree() {
    let host = Host::new();
    let tmux = Tmux::start(&host.browse(""));
    tmux.wait_for(HEADER);
    let screen = tmux.press(&["f"], "filter persist");
    assert!(!screen.contains("/var/cache/thumbs"), "{screen}");
    assert!(screen.contains("1/3"), "{screen}");
    let screen = tmux.press(&["f", "f", "f"], "filter generated");
    assert!(screen.contains("G /etc/group"), "{screen}");
    assert!(!screen.contains("/var/lib/forgejo"), "{screen}");
    // Back to the findings, then search.
    tmux.press(&["f", "f"], "filter findings");
    tmux.keys(&["/"]);
    tmux.type_text("MYST");
    let screen = tmux.wait_for("1/1");
    assert!(screen.contains(">▸P /var/lib/mystery"), "{screen}");
    assert!(!screen.contains("/var/lib/forgejo"), "{screen}");
    tmux.press(&["Enter"], "search: MYST");
    let screen = tmux.press(&["Escape"], "3/4");
    assert!(screen.contains("/var/lib/forgejo"), "{screen}");
    assert!(
        screen.contains(">▸P /var/lib/mystery"),
        "the cursor stays on the unit: {screen}"
    );
    tmux.press(&["q"], "[exit 0]");
}

#[test]
fn p_asks_then_writes_a_valid_entry_into_the_nix_file_and_u_takes_it_back() {
    let host = Host::new();
    let before = host.read("host.nix");
    let nix = host.path("host.nix");
    let tmux = Tmux::start(&host.browse(&format!("--nix-file {}", nix.display())));
    tmux.wait_for(HEADER);
    let screen = tmux.press(&["j", "p"], "y/n");
    assert!(
        words(&screen).contains(&format!(
            "p: persist /var/lib/forgejo into {}? y/n",
            nix.display()
        )),
        "{screen}"
    );
    assert_eq!(host.read("host.nix"), before, "nothing before the y");
    // Anything but y cancels.
    tmux.press(&["n"], "cancelled: nothing written");
    assert_eq!(host.read("host.nix"), before);
    tmux.press(&["p"], "y/n");
    tmux.press(&["y"], "done: persisted /var/lib/forgejo");
    let written = host.read("host.nix");
    assert!(written.contains("\"/var/lib/forgejo\""), "{written}");
    assert!(written.contains("\"/var/log\""), "{written}");
    if nix_parses(&nix) == Some(false) {
        panic!("not Nix any more:\n{written}");
    }
    // The same again: declared already, nothing written.
    tmux.press(&["p"], "y/n");
    tmux.press(&["y"], "declared in");
    assert_eq!(host.read("host.nix"), written);
    // u asks, then puts the file back as it was.
    let screen = tmux.press(&["u"], "y/n");
    assert!(
        words(&screen).contains("u: undo \"persisted /var/lib/forgejo into"),
        "{screen}"
    );
    tmux.press(&["y"], "undone: persisted");
    assert_eq!(host.read("host.nix"), before);
    let out = tmux.press(&["q"], "[exit 0]");
    assert!(
        out.contains("browse: persisted /var/lib/forgejo into")
            && out.contains("browse: undone: persisted /var/lib/forgejo into"),
        "{out}"
    );
}

/// Whether `nix-instantiate --parse` reads the file; `None` without Nix (outside CI).
fn nix_parses(file: &Path) -> Option<bool> {
    match Command::new("nix-instantiate")
        .arg("--parse")
        .arg(file)
        .output()
    {
        Ok(out) => Some(out.status.success()),
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED the Nix parse: no nix-instantiate");
            None
        }
        Err(e) => panic!("nix-instantiate: {e} (.ci/run installs nix-bin)"),
    }
}

#[test]
fn p_without_a_nix_file_prints_the_snippet_on_exit() {
    let host = Host::new();
    let tmux = Tmux::start(&host.browse(""));
    tmux.wait_for(HEADER);
    tmux.press(
        &["j", "j", "p"],
        "p: add /var/lib/mystery to the snippet printed on exit? y/n",
    );
    tmux.press(&["y"], "done: collected /var/lib/mystery");
    // The ephemeral cache too: the person chose.
    tmux.press(&["j", "p"], "y/n");
    tmux.press(&["y"], "done: collected /var/cache/thumbs");
    tmux.press(&["u"], "y/n");
    tmux.press(&["y"], "undone: collected /var/cache/thumbs");
    let out = tmux.press(&["q"], "[exit 0]");
    assert!(
        out.contains("browse: collected /var/lib/mystery for the snippet"),
        "{out}"
    );
    assert!(out.contains("environment.persistence"), "{out}");
    assert!(out.contains("\"/var/lib/mystery\""), "{out}");
    assert!(!out.contains("\"/var/cache/thumbs\""), "{out}");
}

#[test]
fn i_adds_a_glob_the_configuration_loads_and_u_takes_it_back() {
    let host = Host::new();
    let before = host.read("config.toml");
    let tmux = Tmux::start(&host.browse(""));
    tmux.wait_for(HEADER);
    let screen = tmux.press(&["j", "j", "i"], "y/n");
    assert!(
        words(&screen).contains(&format!(
            "i: ignore /var/lib/{{mystery,mystery/**}} in {}? y/n",
            host.path("config.toml").display()
        )),
        "{screen}"
    );
    tmux.press(&["y"], "done: ignored");
    let written = host.read("config.toml");
    assert!(written.starts_with(&before), "the rest is kept: {written}");
    assert!(
        written.contains("ignore = [\"/var/lib/{mystery,mystery/**}\"]"),
        "{written}"
    );
    // The configuration loads, and check leaves the path out.
    let check = Command::new(env!("CARGO_BIN_EXE_imperm"))
        .arg("--root")
        .arg(host.root())
        .arg("--config")
        .arg(host.path("config.toml"))
        .args(["check", "--format", "json"])
        .output()
        .unwrap();
    assert!(check.status.code().unwrap() <= 1, "{check:?}");
    let found = String::from_utf8(check.stdout).unwrap();
    assert!(found.contains("/var/lib/forgejo"), "{found}");
    assert!(!found.contains("/var/lib/mystery"), "{found}");
    tmux.press(&["u"], "y/n");
    tmux.press(&["y"], "undone: ignored");
    assert_eq!(host.read("config.toml"), before);
    let out = tmux.press(&["q"], "[exit 0]");
    assert!(
        out.contains("browse: ignored /var/lib/{mystery,mystery/**}"),
        "{out}"
    );
    assert!(out.contains("browse: undone: ignored"), "{out}");
}

#[test]
fn i_makes_the_configuration_file_when_there_is_none_and_u_removes_it() {
    let host = Host::new();
    // No --config: the tree's own /etc/imperm/config.toml, which does not exist.
    let tmux = Tmux::start(&format!(
        "{} --root {} browse",
        env!("CARGO_BIN_EXE_imperm"),
        host.root().display()
    ));
    tmux.wait_for(HEADER);
    let screen = tmux.press(&["i"], "y/n");
    assert!(
        words(&screen).contains(&format!(
            "i: ignore /var/lib/{{forgejo,forgejo/**}} in {}? y/n",
            host.path("root/etc/imperm/config.toml").display()
        )),
        "{screen}"
    );
    tmux.press(&["y"], "done: ignored");
    assert_eq!(
        host.read("root/etc/imperm/config.toml"),
        "[check]\nignore = [\"/var/lib/{forgejo,forgejo/**}\"]\n"
    );
    tmux.press(&["u"], "y/n");
    tmux.press(&["y"], "undone: ignored");
    assert!(!host.path("root/etc/imperm/config.toml").exists());
    tmux.press(&["q"], "[exit 0]");
}

#[test]
fn the_audit_view_matches_its_capture() {
    let host = Host::new();
    host.file("root/srv/www/index.html", "<p>hi</p>\n");
    let tmux = Tmux::start(&host.browse("audit"));
    let screen = tmux.wait_for("imperm browse audit");
    matches_capture("audit", &screen, &host);
    tmux.press(&["q"], "[exit 0]");
}

#[test]
fn the_journal_view_matches_its_capture() {
    let host = Host::new();
    host.file(
        "journal.json",
        concat!(
            r#"{"MESSAGE":"Failed to open /var/lib/mystery/notes.txt: No such file or directory","_SYSTEMD_UNIT":"mystery.service","PRIORITY":"3"}"#,
            "\n"
        ),
    );
    let tmux = Tmux::start(&host.browse(&format!(
        "journal --file {}",
        host.path("journal.json").display()
    )));
    let screen = tmux.wait_for("imperm browse journal");
    matches_capture("journal", &screen, &host);
    tmux.press(&["q"], "[exit 0]");
}

#[test]
fn the_diff_view_shows_what_changed_since_the_baseline() {
    let host = Host::new();
    let baseline = Command::new(env!("CARGO_BIN_EXE_imperm"))
        .arg("--root")
        .arg(host.root())
        .arg("--config")
        .arg(host.path("config.toml"))
        .arg("baseline")
        .output()
        .unwrap();
    assert!(baseline.status.success(), "{baseline:?}");
    host.file("root/var/lib/newsvc/state.json", "{}\n");
    let tmux = Tmux::start(&host.browse("diff --walk"));
    let screen = tmux.wait_for("imperm browse diff");
    matches_capture("diff", &screen, &host);
    assert!(screen.contains("/var/lib/newsvc"), "{screen}");
    assert!(!screen.contains("/var/lib/forgejo"), "{screen}");
    tmux.press(&["q"], "[exit 0]");
}

#[test]
fn a_panic_gives_the_terminal_back() {
    let host = Host::new();
    let tmux = Tmux::start(&format!(
        "env IMPERM_FAILPOINT=browse-key {}",
        host.browse("")
    ));
    tmux.wait_for(HEADER);
    assert_eq!(tmux.tmux(&["display", "-p", "#{alternate_on}"]).trim(), "1");
    let screen = tmux.press(&["j"], "[exit 101]");
    assert!(screen.contains("browse-key"), "{screen}");
    assert_terminal_given_back(&tmux, &screen);
}

/// The alternate screen left, and raw mode off again: the terminal echoes and turns a
/// newline into CR LF.
fn assert_terminal_given_back(tmux: &Tmux, screen: &str) {
    assert!(
        !screen.contains(HEADER),
        "the alternate screen is left: {screen}"
    );
    assert_eq!(
        tmux.tmux(&["display", "-p", "#{alternate_on}"]).trim(),
        "0",
        "the alternate screen is left"
    );
    let stty = tmux.tmux(&["display", "-p", "#{pane_tty}"]);
    let out = Command::new("stty")
        .args(["-a", "-F", stty.trim()])
        .output()
        .unwrap();
    let modes = String::from_utf8_lossy(&out.stdout);
    assert!(
        modes.contains(" icanon") && modes.contains(" echo "),
        "{modes}"
    );
}

/// A `kill` (SIGTERM) or a lost terminal (SIGHUP) ends the browser the way `q` does:
/// the alternate screen left, raw mode off, the summary printed.
#[test]
fn sigterm_gives_the_terminal_back() {
    let host = Host::new();
    let tmux = Tmux::start(&host.browse(""));
    tmux.wait_for(HEADER);
    assert_eq!(tmux.tmux(&["display", "-p", "#{alternate_on}"]).trim(), "1");
    let pid = tmux.tmux(&["display", "-p", "#{pane_pid}"]);
    let pid = pid.trim();
    // The pane runs a shell that runs imperm: signal imperm, the shell's child.
    let out = Command::new("pkill")
        .args(["-TERM", "-P", pid, "-x", "imperm"])
        .output()
        .unwrap();
    assert!(out.status.success(), "no imperm below pane process {pid}");
    let screen = tmux.wait_for("[exit ");
    assert_terminal_given_back(&tmux, &screen);
}

/// A live root `@root` on loop btrfs whose state the last reset kept as an old root:
/// `populate` writes the state, a reset snapshots it and empties the root.
struct Reset {
    fs: common::LoopBtrfs,
    config: PathBuf,
}

impl Reset {
    fn new(test: &str, populate: impl FnOnce(&Path)) -> Option<Reset> {
        let fs = common::btrfs(test)?;
        fs.subvolume("@root");
        populate(&fs.path("@root"));
        let config = fs.scratch().join("imperm.toml");
        fs::write(
            &config,
            "[persistence.\"/persist\"]\ndirectories = [\"/var/log\"]\n",
        )
        .unwrap();
        let reset = Reset { fs, config };
        let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env("IMPERM_NOW", "2026-11-26T06:30:00Z")
            .arg("--root")
            .arg(reset.fs.path("@root"))
            .arg("--config")
            .arg(&reset.config)
            .args(["reset", "--fs", "btrfs", "--mounted"])
            .arg(reset.fs.top())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        Some(reset)
    }

    fn live(&self, rel: &str) -> PathBuf {
        self.fs.path("@root").join(rel)
    }

    fn browse(&self, view: &str) -> String {
        format!(
            "{} --root {} --config {} browse --fs btrfs --mounted {} {view}",
            env!("CARGO_BIN_EXE_imperm"),
            self.fs.path("@root").display(),
            self.config.display(),
            self.fs.top().display()
        )
    }
}

fn put(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

const SNAP: &str = "20261126T063000Z";

#[test]
fn the_preview_compares_with_the_last_reset_old_root() {
    let Some(reset) = Reset::new("browse_preview_old_root", |root| {
        put(root, "etc/NIXOS", "");
        put(
            root,
            "var/lib/forgejo/app.ini",
            "[server]\nHTTP_PORT = 3000\n",
        );
    }) else {
        return;
    };
    // After the reset, the service writes its state again, changed, and something new.
    put(&reset.live(""), "etc/NIXOS", "");
    put(
        &reset.live(""),
        "var/lib/forgejo/app.ini",
        "[server]\nHTTP_PORT = 3001\n",
    );
    put(&reset.live(""), "var/lib/newsvc/state", "{}\n");
    let tmux = Tmux::start(&reset.browse(""));
    tmux.wait_for(HEADER);
    let screen = tmux.press(&["Enter", "j"], &format!("─ against {SNAP} ─"));
    assert!(screen.contains("-HTTP_PORT = 3000"), "{screen}");
    assert!(screen.contains("+HTTP_PORT = 3001"), "{screen}");
    assert!(screen.contains(" [server]"), "{screen}");
    let screen = tmux.press(&["j", "Enter", "j"], "new since the last reset");
    assert!(screen.contains("state"), "{screen}");
    tmux.press(&["q"], "[exit 0]");
}

#[test]
fn r_asks_then_restores_a_lost_path_from_the_old_root() {
    let Some(reset) = Reset::new("browse_restore", |root| {
        put(root, "etc/NIXOS", "");
        put(root, "var/lib/mystery/notes.txt", "remember\n");
    }) else {
        return;
    };
    put(&reset.live(""), "etc/NIXOS", "");
    // The unit failed at boot: its state was wiped.
    let journal = reset.fs.scratch().join("journal.json");
    fs::write(
        &journal,
        concat!(
            r#"{"MESSAGE":"Failed to open /var/lib/mystery/notes.txt: No such file or directory","_SYSTEMD_UNIT":"mystery.service","PRIORITY":"3"}"#,
            "\n"
        ),
    )
    .unwrap();
    let tmux = Tmux::start(&reset.browse(&format!(
        "journal --file {} --fs btrfs --mounted {}",
        journal.display(),
        reset.fs.top().display()
    )));
    let screen = tmux.wait_for("imperm browse journal");
    assert!(screen.contains("/var/lib/mystery"), "{screen}");
    let screen = tmux.press(&["r"], "y/n");
    assert!(
        words(&screen).contains(&format!("r: restore /var/lib/mystery from {SNAP}? y/n")),
        "{screen}"
    );
    assert!(
        !reset.live("var/lib/mystery").exists(),
        "nothing before the y"
    );
    tmux.press(&["y"], "done: restored");
    assert_eq!(
        fs::read_to_string(reset.live("var/lib/mystery/notes.txt")).unwrap(),
        "remember\n"
    );
    // Again: it is there now, and restore refuses to overwrite it.
    tmux.press(&["r"], "y/n");
    let screen = tmux.press(&["y"], "r: ");
    assert!(words(&screen).contains("nothing"), "{screen}");
    let out = tmux.press(&["q"], "[exit 0]");
    assert!(
        out.contains(&format!("browse: restored /var/lib/mystery from {SNAP}")),
        "{out}"
    );
}

#[test]
fn odd_names_fifos_and_symlinks_are_shown_never_followed_or_opened() {
    use std::os::unix::ffi::OsStrExt;
    let host = Host::new();
    let odd = host.root().join("var/lib/mystery");
    fs::write(odd.join("new\nline"), "x\n").unwrap();
    fs::write(odd.join(std::ffi::OsStr::from_bytes(b"bad\xffbyte")), "y\n").unwrap();
    let fifo = odd.join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("/etc", odd.join("link")).unwrap();
    // The configuration file replaced by a symlink: `i` refuses to write through it.
    let real = host.path("real.toml");
    fs::rename(host.path("config.toml"), &real).unwrap();
    std::os::unix::fs::symlink(&real, host.path("config.toml")).unwrap();
    let tmux = Tmux::start(&host.browse(""));
    tmux.wait_for(HEADER);
    let screen = tmux.press(&["j", "j", "Enter"], "new\\x0aline");
    assert!(screen.contains("bad\\xffbyte"), "{screen}");
    // Names sort bytewise: bad…, link, new…, notes.txt, pipe.
    let screen = tmux.press(&["j"], "─ head ─");
    assert!(screen.contains(">   · bad\\xffbyte"), "{screen}");
    let screen = tmux.press(&["j"], "symlink");
    assert!(screen.contains("→ /etc"), "{screen}");
    // Right on a symlink to a directory lists nothing: it is not followed.
    let screen = tmux.press(&["Right"], "symlink");
    assert!(!screen.contains("passwd"), "{screen}");
    let screen = tmux.press(&["j", "j", "j"], "fifo");
    assert!(screen.contains("pipe"), "{screen}");
    // The non-UTF-8 name cannot be a glob.
    tmux.press(&["k", "k", "k", "k"], "bad");
    tmux.press(&["i"], "no glob can name it");
    // The config is a symlink: nothing is written through it.
    tmux.press(&["k", "i"], "y/n");
    let screen = tmux.press(&["y"], "i: ");
    assert!(words(&screen).contains("a symlink"), "{screen}");
    assert_eq!(
        fs::read_to_string(&real).unwrap(),
        "# the host's own\n[persistence.\"/persist\"]\ndirectories = [\"/var/log\"]\n"
    );
    tmux.press(&["q"], "[exit 0]");
}

/// Unmounts a place when dropped (a panic included): the old root the picker mounted.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mount_point(&self.0) {
            let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
        }
    }
}

fn is_mount_point(path: &Path) -> bool {
    Command::new("mountpoint")
        .arg("-q")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn s_picks_an_old_root_mounts_it_on_y_and_browses_its_tree() {
    let Some(reset) = Reset::new("browse_picker", |root| {
        put(root, "etc/NIXOS", "");
        put(root, "var/lib/gone/only-old.txt", "kept in the old root\n");
    }) else {
        return;
    };
    // A second boot, a second reset: two old roots, the newer one the last reset's.
    put(&reset.live(""), "etc/NIXOS", "");
    put(&reset.live(""), "var/lib/second/state", "second\n");
    let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
        .env("IMPERM_NOW", "2026-11-26T09:00:00Z")
        .arg("--root")
        .arg(reset.live(""))
        .arg("--config")
        .arg(&reset.config)
        .args(["reset", "--fs", "btrfs", "--mounted"])
        .arg(reset.fs.top())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    put(&reset.live(""), "etc/NIXOS", "");
    // A host has its /run (the mount makes what is below it).
    fs::create_dir(reset.live("run")).unwrap();
    let place = reset.live(&format!("run/imperm/old-roots/{SNAP}"));
    let _unmount = Unmount(place.clone());

    let tmux = Tmux::start(&reset.browse(""));
    tmux.wait_for(HEADER);
    let screen = tmux.press(&["s"], "old roots ·");
    assert!(
        screen.contains("> 2026-11-26T09:00:00Z  20261126T090000Z  (last reset's)"),
        "{screen}"
    );
    assert!(
        screen.contains("  2026-11-26T06:30:00Z  20261126T063000Z\n")
            || screen.contains("  2026-11-26T06:30:00Z  20261126T063000Z "),
        "{screen}"
    );
    // Newest first.
    assert!(screen.find("090000Z").unwrap() < screen.find("063000Z").unwrap());
    matches_capture("picker", &screen, &Host::new());

    // Enter asks; anything but y mounts nothing.
    let screen = tmux.press(&["j", "Enter"], "y/n");
    assert!(
        words(&screen).contains(&format!(
            "s: mount {SNAP} read-only at /run/imperm/old-roots/{SNAP}? y/n"
        )),
        "{screen}"
    );
    tmux.press(&["n"], "cancelled: nothing mounted");
    assert!(!is_mount_point(&place), "nothing mounted before the y");

    tmux.press(&["Enter"], "y/n");
    let screen = tmux.press(&["y"], &format!("old root {SNAP}"));
    assert!(
        words(&screen).contains(&format!(
            "imperm browse · old root {SNAP} · mounted read-only at /run/imperm/old-roots/{SNAP}"
        )),
        "{screen}"
    );
    assert!(is_mount_point(&place), "mounted on the y");
    // Everyone sees it, read-only, at its place.
    assert_eq!(
        fs::read_to_string(place.join("var/lib/gone/only-old.txt")).unwrap(),
        "kept in the old root\n"
    );
    assert!(fs::write(place.join("x"), "").is_err());
    // The tree is the old root's: its `/` open, directories first.
    assert!(screen.contains("▸· etc"), "{screen}");
    assert!(!screen.contains("second"), "{screen}");
    // var, lib, gone, only-old.txt: a file only the old root has, its head in the preview.
    tmux.press(&["j", "j", "Enter", "j", "Enter"], "gone");
    let screen = tmux.press(&["j", "Enter", "j"], "─ head ─");
    assert!(screen.contains("only-old.txt"), "{screen}");
    assert!(screen.contains("kept in the old root"), "{screen}");
    // Nothing to act on in an old root.
    tmux.press(&["p"], "read-only");
    // q: back to the picker, which says it stays mounted; Esc: back to the check view.
    let screen = tmux.press(&["q"], "stays mounted");
    assert!(screen.contains("old roots ·"), "{screen}");
    // The same one again: found mounted, shown again, mounted once.
    tmux.press(&["Enter"], "y/n");
    let screen = tmux.press(&["y"], &format!("old root {SNAP}"));
    assert!(screen.contains("▸· var"), "{screen}");
    tmux.press(&["Escape"], "stays mounted");
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let shown = place.display().to_string();
    assert_eq!(
        table
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(&*shown))
            .count(),
        1,
        "{table}"
    );
    tmux.press(&["Escape"], HEADER);
    let out = tmux.press(&["q"], "[exit 0]");
    // The shell's lines wrap at 80 columns, mid-word.
    assert!(
        out.replace('\n', "").contains(&format!(
            "browse: old root {SNAP} is still mounted read-only at /run/imperm/old-roots/{SNAP}; `imperm snapshots umount /run/imperm/old-roots/{SNAP}` unmounts it"
        )),
        "{out}"
    );
    assert_eq!(
        out.replace('\n', "").matches("is still mounted").count(),
        1,
        "{out}"
    );
    assert!(
        is_mount_point(&place),
        "left mounted for the user's own tools"
    );

    // What the summary says unmounts it.
    let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
        .arg("--root")
        .arg(reset.live(""))
        .arg("--config")
        .arg(&reset.config)
        .args(["snapshots", "umount", "--fs", "btrfs", "--mounted"])
        .arg(reset.fs.top())
        .arg(format!("/run/imperm/old-roots/{SNAP}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!is_mount_point(&place));
}
