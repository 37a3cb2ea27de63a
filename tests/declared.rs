//! What the host's own systemd units and tmpfiles.d files declare, read from fixture trees
//! laid out as NixOS lays them out (`/etc/systemd/system` a chain of links into the store,
//! drop-ins, template instances enabled by links, `DynamicUser=`), for services the
//! built-in knowledge does not know; and what a hostile tree does to the reading (loops,
//! FIFOs, huge files, bytes that are not UTF-8, newlines in names, absolute and `..`
//! values, links out of the tree).

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// A host's root, with the store and /etc links NixOS makes.
struct Tree {
    dir: TempDir,
}

/// Where the tree's units are: `/etc/systemd/system` → `/etc/static/systemd/system` →
/// this store path, as on NixOS.
const UNITS: &str = "nix/store/1111-system-units";
/// Where its tmpfiles.d files are, behind `/etc/tmpfiles.d` → `/etc/static/tmpfiles.d`.
const TMPFILES: &str = "nix/store/2222-tmpfiles.d";

impl Tree {
    fn new() -> Tree {
        let t = Tree {
            dir: TempDir::new().unwrap(),
        };
        t.file("etc/NIXOS", "");
        t.link("etc/static", "/nix/store/0000-etc/etc");
        t.link(
            "nix/store/0000-etc/etc/systemd/system",
            &format!("/{UNITS}"),
        );
        t.link("etc/systemd/system", "/etc/static/systemd/system");
        t.link("nix/store/0000-etc/etc/tmpfiles.d", &format!("/{TMPFILES}"));
        t.link("etc/tmpfiles.d", "/etc/static/tmpfiles.d");
        t.dir("var/lib/private");
        t.dir(UNITS);
        t.dir(TMPFILES);
        t
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, rel: &str, content: &str) {
        self.bytes(rel, content.as_bytes());
    }

    fn bytes(&self, rel: &str, content: &[u8]) {
        let path = self.root().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn dir(&self, rel: &str) {
        fs::create_dir_all(self.root().join(rel)).unwrap();
    }

    fn link(&self, rel: &str, target: &str) {
        let path = self.root().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, path).unwrap();
    }

    /// A unit as NixOS installs it: its file in a store path of its own, linked by name
    /// from the units' store path.
    fn unit(&self, name: &str, text: &str) {
        let store = format!("nix/store/9999-unit-{name}");
        self.file(&format!("{store}/{name}"), text);
        self.link(&format!("{UNITS}/{name}"), &format!("/{store}/{name}"));
    }

    /// A drop-in of `unit`, linked from its `.d` directory.
    fn dropin(&self, unit: &str, name: &str, text: &str) {
        let store = format!("nix/store/8888-{unit}-{name}");
        self.file(&format!("{store}/{name}"), text);
        self.link(
            &format!("{UNITS}/{unit}.d/{name}"),
            &format!("/{store}/{name}"),
        );
    }

    fn tmpfiles(&self, name: &str, text: &str) {
        self.file(&format!("{TMPFILES}/{name}"), text);
    }

    /// Runs imperm on the tree with nothing persisted but /persist itself, killing it if
    /// it takes more than a minute (a FIFO read or a loop followed would hang it).
    fn imperm(&self, args: &[&str]) -> Output {
        self.run("[persistence.\"/persist\"]\ndirectories = []\n", args)
    }

    /// Runs imperm with this configuration.
    fn run(&self, config_text: &str, args: &[&str]) -> Output {
        let config = tempfile::NamedTempFile::new().unwrap();
        fs::write(config.path(), config_text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(self.root())
            .arg("--config")
            .arg(config.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("imperm {args:?} hung");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = child.wait().unwrap();
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_end(&mut stderr)
            .unwrap();
        Output {
            status,
            stdout,
            stderr,
        }
    }

    fn audit(&self) -> Value {
        let out = self.imperm(&["audit", "--format", "json"]);
        assert!(
            out.status.code().unwrap() <= 1,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// `(path, verdict, source)` of every suggestion, generated ones too.
fn all(v: &Value) -> Vec<(String, String, String)> {
    v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["verdict"].as_str().unwrap().to_string(),
                s["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn of(v: &Value, path: &str) -> Value {
    v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == path)
        .unwrap_or_else(|| panic!("no suggestion for {path}: {:#?}", all(v)))
        .clone()
}

fn own(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(p, v, s)| (p.to_string(), v.to_string(), s.to_string()))
        .collect()
}

/// Services that `data/knowledge.toml` does not know (quillstore, lanternd, a relay
/// template): the audit finds exactly their state directories and names the unit, also
/// for the `DynamicUser=` one in /var/lib/private and the instance enabled by a link;
/// their caches are ephemeral; what tmpfiles.d makes is generated.
#[test]
fn units_and_tmpfiles_decide_services_the_knowledge_does_not_know() {
    let t = Tree::new();
    t.unit(
        "quillstore.service",
        "[Unit]\nDescription=Quill store\n[Service]\nExecStart=/nix/store/x/bin/quill\nStateDirectory=quillstore\nStateDirectoryMode=0750\nCacheDirectory=quillstore\nRuntimeDirectory=quillstore\n",
    );
    // DynamicUser= and the state come from a drop-in, as `systemd.services.X.serviceConfig`
    // overrides of an upstream unit are written.
    t.unit(
        "lanternd.service",
        "[Service]\nExecStart=/nix/store/y/bin/lanternd\nStateDirectory=wrong-name\n",
    );
    t.dropin(
        "lanternd.service",
        "overrides.conf",
        "[Service]\nDynamicUser=yes\nStateDirectory=\nStateDirectory=lanternd\n",
    );
    // A template, its instance enabled by a relative link in a .wants directory.
    t.unit("relay@.service", "[Service]\nStateDirectory=relay/%i\n");
    t.link(
        &format!("{UNITS}/multi-user.target.wants/relay@eu.service"),
        "../relay@.service",
    );
    t.tmpfiles(
        "00-nixos.conf",
        "# made at every boot\nd /var/lib/beacon 0755 root root -\nL+ /var/lib/beacon-current - - - - /nix/store/3333-beacon/share\nf /etc/beacon.conf 0644 - - - mode=fast\nd /var/lib/ledger 0700\n",
    );
    t.file("var/lib/quillstore/db/index", "quill data");
    t.file("var/cache/quillstore/thumbs/a", "thumb");
    t.file("var/lib/private/lanternd/state.json", "{}");
    t.link("var/lib/lanternd", "private/lanternd");
    t.file("var/lib/relay/eu/peers", "peer list");
    t.dir("var/lib/beacon");
    t.link("var/lib/beacon-current", "/nix/store/3333-beacon/share");
    t.file("etc/beacon.conf", "mode=fast");
    // Made by tmpfiles.d, but holding data written since: not generated.
    t.file("var/lib/ledger/entries", "2026-01-01 +5");
    let v = t.audit();
    assert_eq!(
        all(&v),
        own(&[
            ("/var/lib/ledger", "persist", "knowledge",),
            (
                "/var/lib/private/lanternd",
                "persist",
                "unit lanternd.service: StateDirectory",
            ),
            (
                "/var/lib/quillstore",
                "persist",
                "unit quillstore.service: StateDirectory",
            ),
            (
                "/var/lib/relay/eu",
                "persist",
                "unit relay@eu.service: StateDirectory",
            ),
            (
                "/var/cache/quillstore",
                "ephemeral",
                "unit quillstore.service: CacheDirectory",
            ),
            ("/etc/NIXOS", "generated", "knowledge"),
            (
                "/etc/beacon.conf",
                "generated",
                "tmpfiles: /etc/tmpfiles.d/00-nixos.conf:4"
            ),
            ("/etc/static", "generated", "nixos"),
            ("/etc/systemd/system", "generated", "nixos"),
            ("/etc/tmpfiles.d", "generated", "nixos"),
            (
                "/var/lib/beacon",
                "generated",
                "tmpfiles: /etc/tmpfiles.d/00-nixos.conf:2"
            ),
            (
                "/var/lib/beacon-current",
                "generated",
                "tmpfiles: /etc/tmpfiles.d/00-nixos.conf:3",
            ),
            (
                "/var/lib/lanternd",
                "generated",
                "unit lanternd.service: StateDirectory",
            ),
        ])
    );
    let quill = of(&v, "/var/lib/quillstore");
    assert_eq!(quill["service"], "quillstore.service");
    assert_eq!(quill["files"], 1);
    assert_eq!(
        quill["reason"],
        "state of quillstore.service (StateDirectory=quillstore)"
    );
    let lantern = of(&v, "/var/lib/private/lanternd");
    let reason = lantern["reason"].as_str().unwrap();
    assert!(
        reason.contains("DynamicUser=yes")
            && reason.contains("persist /var/lib/private with mode 0700"),
        "{reason}"
    );
    let ledger = of(&v, "/var/lib/ledger");
    assert!(
        ledger["reason"]
            .as_str()
            .unwrap()
            .ends_with("tmpfiles.d makes it at boot (/etc/tmpfiles.d/00-nixos.conf:5), but it holds 1 file written since"),
        "{}",
        ledger["reason"]
    );
    assert!(v["notes"].as_array().unwrap().is_empty(), "{}", v["notes"]);

    // Human output names the source of each verdict.
    let human = t.imperm(&["audit", "--color", "never"]);
    let text = String::from_utf8(human.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("/var/lib/quillstore"))
        .unwrap();
    assert!(
        line.ends_with(
            "state of quillstore.service (StateDirectory=quillstore) · unit quillstore.service: StateDirectory"
        ),
        "{line}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("/var/lib/ledger") && l.ends_with(" · knowledge")),
        "{text}"
    );

    // The snippet persists /var/lib/private whole, with its mode: the DynamicUser= state
    // in it would otherwise get a 0755 parent.
    let nix = t.imperm(&["audit", "--format", "nix"]);
    let nix = String::from_utf8(nix.stdout).unwrap();
    assert_eq!(
        nix,
        "# imperm: 4 paths to persist; paste into the host's configuration\n\
         environment.persistence.\"/persist\" = {\n  directories = [\n    \
         \"/var/lib/ledger\"\n    { directory = \"/var/lib/private\"; mode = \"0700\"; }\n    \
         \"/var/lib/quillstore\"\n    \"/var/lib/relay/eu\"\n  ];\n};\n"
    );
}

/// The unit search path as systemd reads it, on a tree that is not laid out as NixOS's
/// (under --root, a Debian-like tree): the first file of a name wins, a link to
/// /dev/null or an empty file masks, drop-ins apply in file-name order with the first
/// directory winning a name, the template's drop-ins apply to its instances, and an alias
/// is its unit.
#[test]
fn the_search_path_precedence_masks_and_dropins() {
    let t = Tree::new();
    let lib = "usr/lib/systemd/system";
    let etc_units = "etc/systemd/system";
    // Not the NixOS layout here: /etc/systemd/system a plain directory.
    fs::remove_file(t.root().join(etc_units)).unwrap();
    t.file(
        &format!("{lib}/upper.service"),
        "[Service]\nStateDirectory=from-lib\n",
    );
    t.file(
        &format!("{etc_units}/upper.service"),
        "[Service]\nStateDirectory=from-etc\n",
    );
    t.file(
        &format!("{lib}/masked.service"),
        "[Service]\nStateDirectory=masked-by-link\n",
    );
    t.link(&format!("{etc_units}/masked.service"), "/dev/null");
    t.file(
        &format!("{lib}/emptied.service"),
        "[Service]\nStateDirectory=masked-by-empty\n",
    );
    t.file(&format!("{etc_units}/emptied.service"), "");
    t.file(
        &format!("{lib}/drop.service"),
        "[Service]\nStateDirectory=base\n",
    );
    t.file(
        &format!("{lib}/drop.service.d/10-add.conf"),
        "[Service]\nStateDirectory=from-lib-10\n",
    );
    t.file(
        &format!("{lib}/drop.service.d/20-add.conf"),
        "[Service]\nStateDirectory=hidden-by-etc-20\n",
    );
    t.file(
        &format!("{etc_units}/drop.service.d/20-add.conf"),
        "[Service]\nStateDirectory=from-etc-20\n",
    );
    t.link(
        &format!("{etc_units}/drop.service.d/30-masked.conf"),
        "/dev/null",
    );
    t.file(
        &format!("{lib}/drop.service.d/30-masked.conf"),
        "[Service]\nStateDirectory=masked-dropin\n",
    );
    // Every service's drop-in, and a dash prefix's.
    t.file(
        &format!("{lib}/service.d/50-all.conf"),
        "[Service]\nCacheDirectory=%N\n",
    );
    t.file(
        &format!("{lib}/web-.service.d/10-web.conf"),
        "[Service]\nStateDirectory=web-shared\n",
    );
    t.file(&format!("{lib}/web-front.service"), "[Service]\n");
    t.file(
        &format!("{lib}/tpl@.service"),
        "[Service]\nStateDirectory=tpl/%i\n",
    );
    t.file(
        &format!("{lib}/tpl@.service.d/x.conf"),
        "[Service]\nLogsDirectory=tpl-%i\n",
    );
    t.link(
        &format!("{etc_units}/multi-user.target.wants/tpl@a.service"),
        "/usr/lib/systemd/system/tpl@.service",
    );
    // An alias: the same unit under another name, read once under its own.
    t.link(
        &format!("{etc_units}/alias-of-upper.service"),
        "upper.service",
    );
    t.dir("var/lib/from-etc/x");
    t.file("var/lib/from-etc/x/f", "x");
    let v = t.audit();
    let declared: Vec<(String, String)> = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source"].as_str().unwrap().starts_with("unit "))
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        declared,
        vec![(
            "/var/lib/from-etc".to_string(),
            "unit upper.service: StateDirectory".to_string()
        )]
    );
    // What each unit declares, through `journal`, which classifies the paths it is given
    // whether they exist or not.
    let paths = [
        "/var/lib/from-lib",
        "/var/lib/masked-by-link",
        "/var/lib/masked-by-empty",
        "/var/lib/base",
        "/var/lib/from-lib-10",
        "/var/lib/hidden-by-etc-20",
        "/var/lib/from-etc-20",
        "/var/lib/masked-dropin",
        "/var/cache/drop",
        "/var/cache/tpl@a",
        "/var/lib/web-shared",
        "/var/lib/tpl/a",
    ];
    let sources = journal_sources(&t, &paths);
    assert_eq!(
        sources,
        vec![
            ("/var/lib/from-lib", "knowledge"),
            ("/var/lib/masked-by-link", "knowledge"),
            ("/var/lib/masked-by-empty", "knowledge"),
            ("/var/lib/base", "unit drop.service: StateDirectory"),
            ("/var/lib/from-lib-10", "unit drop.service: StateDirectory"),
            ("/var/lib/hidden-by-etc-20", "knowledge"),
            ("/var/lib/from-etc-20", "unit drop.service: StateDirectory"),
            ("/var/lib/masked-dropin", "knowledge"),
            ("/var/cache/drop", "unit drop.service: CacheDirectory"),
            ("/var/cache/tpl@a", "unit tpl@a.service: CacheDirectory"),
            (
                "/var/lib/web-shared",
                "unit web-front.service: StateDirectory"
            ),
            ("/var/lib/tpl/a", "unit tpl@a.service: StateDirectory"),
        ]
        .into_iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect::<Vec<_>>()
    );
}

/// The source `journal` gives each path, when a service says it is missing.
fn journal_sources(t: &Tree, paths: &[&str]) -> Vec<(String, String)> {
    let input: String = paths
        .iter()
        .map(|p| {
            serde_json::json!({
                "MESSAGE": format!("open {p}/x: No such file or directory"),
                "_SYSTEMD_UNIT": "x.service",
            })
            .to_string()
                + "\n"
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), input).unwrap();
    let out = t.imperm(&[
        "journal",
        "--file",
        file.path().to_str().unwrap(),
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    paths
        .iter()
        .map(|p| {
            let s = v["suggestions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["path"] == *p)
                .unwrap_or_else(|| panic!("no suggestion for {p}: {:#}", v["suggestions"]));
            (p.to_string(), s["source"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Under --root, an absolute link names the tree's file, never the host's: the tree's
/// /etc/systemd/system points at a path that exists on the host too, with another unit
/// in it; the tree's unit is read, the host's never.
#[test]
fn links_resolve_inside_the_tree_never_on_the_host() {
    let host_side = TempDir::new().unwrap();
    let at = host_side.path().join("units");
    fs::create_dir(&at).unwrap();
    fs::write(
        at.join("host-only.service"),
        "[Service]\nStateDirectory=from-the-host\n",
    )
    .unwrap();
    let t = Tree::new();
    let at_text = at.to_str().unwrap();
    t.file(
        &format!("{}/tree-only.service", at_text.trim_start_matches('/')),
        "[Service]\nStateDirectory=from-the-tree\n",
    );
    fs::remove_dir_all(t.root().join(UNITS)).unwrap();
    t.link(UNITS, at_text);
    t.file("var/lib/from-the-tree/x", "x");
    t.file("var/lib/from-the-host/x", "x");
    let v = t.audit();
    assert_eq!(
        of(&v, "/var/lib/from-the-tree")["source"],
        "unit tree-only.service: StateDirectory"
    );
    assert_eq!(of(&v, "/var/lib/from-the-host")["source"], "knowledge");
}

/// A hostile tree: loops of links among units, drop-in directories and .wants
/// directories; a unit file that is a FIFO, one that is huge, a tmpfiles.d file that is a
/// FIFO; bytes that are not UTF-8 in a unit file; a unit name with a newline; values that
/// are absolute or climb with `..`. Nothing hangs or fails the audit, what can be read is,
/// and what cannot is named in a note.
#[test]
fn hostile_units_and_tmpfiles() {
    let t = Tree::new();
    t.link(&format!("{UNITS}/loop-a.service"), "loop-b.service");
    t.link(&format!("{UNITS}/loop-b.service"), "loop-a.service");
    t.link(&format!("{UNITS}/self.service.d"), "self.service.d");
    t.file(
        &format!("{UNITS}/self.service"),
        "[Service]\nStateDirectory=self\n",
    );
    t.link(
        &format!("{UNITS}/spin.target.wants"),
        "/etc/systemd/system/spin.target.wants",
    );
    let fifo = t.root().join(UNITS).join("fifo.service");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let huge = fs::File::create(t.root().join(UNITS).join("huge.service")).unwrap();
    huge.set_len(64 << 20).unwrap();
    let tmp_fifo = t.root().join(TMPFILES).join("fifo.conf");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &tmp_fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let mut bytes = b"[Unit]\nDescription=caf\xe9 \xff\xfe\n[Service]\nStateDirectory=bad\xffname\nStateDirectory=clean\n"
        .to_vec();
    bytes.extend_from_slice(b"StateDirectory=/etc/shadow ../../escape a/../b ok/./x\n");
    t.bytes(&format!("{UNITS}/bytes.service"), &bytes);
    t.file(
        &format!("{UNITS}/evil\n.service"),
        "[Service]\nStateDirectory=newline-unit\n",
    );
    fs::write(
        t.root()
            .join(UNITS)
            .join(std::ffi::OsStr::from_bytes(b"not-utf8-\xff.service")),
        "[Service]\nStateDirectory=not-utf8-name\n",
    )
    .unwrap();
    t.tmpfiles(
        "10-odd.conf",
        "d /var/lib/with\\x0anewline\nd /var/lib/../../etc/x\nd relative\nL /var/lib/%b-link\nd /var/lib/ok-made\nq /var/lib/\\xff\n",
    );
    for dir in ["self", "clean", "newline-unit", "not-utf8-name", "ok-made"] {
        t.file(&format!("var/lib/{dir}/data"), "d");
    }
    t.dir("var/lib/with\nnewline");
    t.file("etc/shadow", "root:!:1::::::\n");
    let started = Instant::now();
    let v = t.audit();
    assert!(started.elapsed() < Duration::from_secs(30));
    let source = |p: &str| of(&v, p)["source"].as_str().unwrap().to_string();
    assert_eq!(source("/var/lib/self"), "unit self.service: StateDirectory");
    assert_eq!(
        source("/var/lib/clean"),
        "unit bytes.service: StateDirectory"
    );
    // Not valid unit names: systemd does not load them, nor does imperm.
    assert_eq!(source("/var/lib/newline-unit"), "knowledge");
    assert_eq!(source("/var/lib/not-utf8-name"), "knowledge");
    assert_eq!(
        source("/var/lib/with\\x0anewline"),
        "tmpfiles: /etc/tmpfiles.d/10-odd.conf:1"
    );
    // The tmpfiles.d line with `..` is left out: /etc/x stays what the knowledge says.
    assert!(
        v["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["source"].as_str().unwrap().contains("10-odd.conf:2")),
    );
    // Values that are absolute or climb out decide nothing: /etc/shadow is not state.
    assert_ne!(source("/etc/shadow"), "unit bytes.service: StateDirectory");
    let notes: Vec<String> = v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let noted = |what: &str| notes.iter().any(|n| n.contains(what));
    for what in [
        "/etc/systemd/system/fifo.service: is a FIFO",
        "/etc/systemd/system/huge.service: is larger than 1 MiB",
        "/etc/systemd/system/loop-a.service:",
        "/etc/tmpfiles.d/fifo.conf: is a FIFO",
    ] {
        assert!(noted(what), "no note for {what}: {notes:#?}");
    }
    // Each problem once, capped.
    assert!(notes.len() <= 11, "{notes:#?}");
    // The audit itself is whole: exit 1 for the state to persist, not 2.
    let out = t.imperm(&["audit"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `LogsDirectory=`: /var/log stays one piece to persist (the template persists it
/// whole), and names no unit; when only part of it is persisted, a unit's logs are
/// their own piece, to review, saying /var/log is not persisted.
#[test]
fn logs_say_whether_var_log_is_persisted() {
    let t = Tree::new();
    t.unit(
        "inkwell.service",
        "[Service]\nLogsDirectory=inkwell\nStateDirectory=inkwell\n",
    );
    t.file("var/log/inkwell/access.log", "GET /\n");
    t.file("var/log/journal/x/system.journal", "j");
    t.file("var/lib/inkwell/db", "d");
    let v = t.audit();
    assert_eq!(of(&v, "/var/log")["verdict"], "persist");
    assert_eq!(of(&v, "/var/log")["source"], "knowledge");
    let out = t.run(
        "[persistence.\"/persist\"]\ndirectories = [\"/var/log/journal\"]\n",
        &["audit", "--format", "json"],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let logs = of(&v, "/var/log/inkwell");
    assert_eq!(logs["verdict"], "review");
    assert_eq!(logs["source"], "unit inkwell.service: LogsDirectory");
    assert_eq!(
        logs["reason"],
        "logs of inkwell.service (LogsDirectory=inkwell); /var/log is not persisted, so every reset loses them: persist /var/log (or this) to keep them"
    );
}

/// `diff` reads the declarations too: changes since the baseline in a `DynamicUser=`
/// service's state and in a unit's cache are that unit's, each its own piece, in JSON
/// and in human output.
#[test]
fn diff_names_the_units_of_what_changed() {
    let t = Tree::new();
    t.unit(
        "lanternd.service",
        "[Service]\nDynamicUser=yes\nStateDirectory=lanternd\nCacheDirectory=lanternd\n",
    );
    t.unit(
        "quillstore.service",
        "[Service]\nStateDirectory=quillstore\n",
    );
    t.file("var/lib/private/lanternd/state.json", "{}");
    t.file("var/lib/private/other/state", "x");
    t.link("var/lib/lanternd", "private/lanternd");
    t.file("var/lib/quillstore/db", "d");
    let out = t.imperm(&["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.file("var/lib/private/lanternd/new.json", "{\"a\":1}");
    t.file("var/cache/private/lanternd/blob", "cached");
    t.file("var/lib/quillstore/db2", "more");
    let out = t.imperm(&["diff", "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let found: Vec<_> = all(&v)
        .into_iter()
        .filter(|(_, verdict, _)| verdict != "generated")
        .collect();
    assert_eq!(
        found,
        own(&[
            (
                "/var/lib/private/lanternd",
                "persist",
                "unit lanternd.service: StateDirectory"
            ),
            (
                "/var/lib/quillstore",
                "persist",
                "unit quillstore.service: StateDirectory"
            ),
            (
                "/var/cache/private/lanternd",
                "ephemeral",
                "unit lanternd.service: CacheDirectory"
            ),
        ])
    );
    let human = t.imperm(&["diff", "--color", "never"]);
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("/var/cache/private/lanternd")
                && l.ends_with("· unit lanternd.service: CacheDirectory")),
        "{text}"
    );
}
