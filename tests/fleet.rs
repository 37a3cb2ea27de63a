//! `imperm fleet status` against a real OpenSSH server, started by the test.
//!
//! How one sshd serves several hosts: it listens on one free high port on 127.0.0.1,
//! 127.0.0.2, … (all loopback), one address a fixture host, and a `Match LocalAddress`
//! block per address gives that host's sessions their own `PATH` (the host's `bin/`, where
//! its `imperm` is, or is not) and `HOME` (so the machine's own root dotfiles do not run).
//! A good host's `imperm` is a two-line script that runs the freshly built binary with
//! `--root` at the host's tree (its configuration and mount table) and records the
//! arguments it got; two print a fixed status of a ready ephemeral host (what a fleet that
//! needs nothing answers, whatever this version's status says of a fixture tree); the
//! others print junk, a document that is not a status, 17 MiB, or sleep past the timeout;
//! one has no `imperm` at all, so its shell answers "command not found" (exit 127) for
//! real. The keys (host and user) are made by the test in its
//! temporary directory; sshd runs as root in the foreground with `UsePAM no` and
//! `StrictModes no`, and is killed when the fixture is dropped. The ssh config names one
//! alias per host (HostName its address), and one more to a closed port. imperm runs the
//! `ssh` it finds first on PATH, as it would the user's: here a script that adds `-F` with
//! that config to /usr/bin/ssh.
//!
//! Without root or sshd these tests print SKIPPED, except under CI=true, where that fails.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

const SSHD: &str = "/usr/sbin/sshd";
const TIMEOUT_SECS: u64 = 8;

fn imperm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imperm"))
}

/// Why sshd tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root (sshd must be)".into());
    }
    if !Path::new(SSHD).exists() {
        return Some(format!("{SSHD} is not installed (Debian: openssh-server)"));
    }
    for tool in ["ssh", "ssh-keygen"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed (Debian: openssh-client)"));
        }
    }
    None
}

/// A fixture host: what its `imperm` is.
enum Kind {
    /// The real imperm, `--root` at a tree holding these files.
    Imperm(&'static [(&'static str, &'static str)]),
    /// No imperm on its PATH.
    Missing,
    /// A script of its own.
    Script(&'static str),
}

const L001: &[(&str, &str)] = &[
    (
        "etc/imperm/config.toml",
        include_str!("../examples/lint/clean.toml"),
    ),
    (
        "proc/self/mountinfo",
        include_str!("../examples/lint/host/proc/self/mountinfo"),
    ),
];

const JUNI: &[(&str, &str)] = &[
    (
        "etc/imperm/config.toml",
        "[filesystem]\ntype = \"tmpfs\"\n\n[persistence.\"/persist\"]\n\
         directories = [\"/var/log\", \"/var/lib/nixos\", \"/var/lib/tailscale\"]\n\
         files = [\"/etc/machine-id\"]\n",
    ),
    (
        "proc/self/mountinfo",
        "22 1 0:30 / / rw,relatime shared:1 - tmpfs none rw,mode=755\n\
         24 22 0:31 /@persist /persist rw,relatime shared:3 - btrfs /dev/vda2 rw,subvol=/@persist\n\
         25 22 0:31 /@nix /nix rw,relatime shared:4 - btrfs /dev/vda2 rw,subvol=/@nix\n",
    ),
];

/// No configuration (imperm's template) and /persist on the root's own filesystem.
const O001: &[(&str, &str)] = &[(
    "proc/self/mountinfo",
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
)];

/// Each host: its alias, what it runs.
const HOSTS: &[(&str, Kind)] = &[
    // First: it takes the whole timeout, and the others must not wait for it.
    ("hang", Kind::Script("exec sleep 15")),
    ("l001", Kind::Imperm(L001)),
    ("juni", Kind::Imperm(JUNI)),
    ("o001", Kind::Imperm(O001)),
    ("bare", Kind::Missing),
    ("junk", Kind::Script("echo '<html>Welcome to nginx</html>'")),
    (
        "other",
        Kind::Script("echo '{\"suggestions\": []}'; exit 1"),
    ),
    ("huge", Kind::Script("head -c 17000000 /dev/zero")),
    // A status as an ephemeral host that is ready prints it (the fields readiness adds
    // included), word for word: what a fleet that needs nothing looks like.
    ("ok1", Kind::Script(READY_STATUS)),
    ("ok2", Kind::Script(READY_STATUS)),
];

const READY_STATUS: &str = r#"cat <<'EOF'
{"root": "/", "config": {"path": "/etc/imperm/config.toml", "loaded": true},
 "persistence": {"kind": "config-file", "file": "/etc/imperm/config.toml"},
 "filesystem": {"type": "bcachefs", "from": "config", "device": "/dev/nvme0n1p2",
                "root_subvolume": "@root", "snapshot_dir": "@snapshots"},
 "persisted": {"directories": 11, "files": 5, "users": ["josh"]},
 "storage": [{"path": "/persist", "separate": true, "wiped_by_reset": false}],
 "snapshots": {"count": 23, "last_reset": "2026-11-26T06:12:03Z", "note": null},
 "ready": true, "ephemeral": true, "problems": 0, "unknown": 0,
 "reasons": [{"check": "config", "state": "ok", "detail": "loaded"}],
 "check": {"skipped": false, "persist": 0, "review": 2}}
EOF"#;

struct Fleet {
    dir: TempDir,
    sshd: Child,
    ssh_config: PathBuf,
    port: u16,
}

/// Where nothing listens: this fixture's port on an address no fixture listens on.
const DOWN_ADDRESS: &str = "127.0.0.254";

/// Held while a fixture picks its port and starts sshd: two tests of this binary must not
/// pick the same free port (the second sshd would fail to bind, and the second test find
/// the first's sshd listening there).
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

fn write_script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

impl Fleet {
    fn start(test: &str) -> Option<Fleet> {
        if let Some(why) = missing_prerequisite() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: the fleet tests must run in CI, but {why}");
            }
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
        let dir = TempDir::new().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        let mut sshd_hosts = String::new();
        let mut ssh_hosts = String::new();
        for (i, (alias, kind)) in HOSTS.iter().enumerate() {
            let address = format!("127.0.0.{}", i + 1);
            let host = d.join("hosts").join(alias);
            let bin = host.join("bin");
            fs::create_dir_all(&bin).unwrap();
            fs::create_dir_all(host.join("home")).unwrap();
            match kind {
                Kind::Imperm(files) => {
                    let root = host.join("root");
                    for (rel, text) in *files {
                        let path = root.join(rel);
                        fs::create_dir_all(path.parent().unwrap()).unwrap();
                        fs::write(path, text).unwrap();
                    }
                    write_script(
                        &bin.join("imperm"),
                        &format!(
                            "echo \"$@\" > {}\nexec {} --root {} \"$@\"",
                            host.join("asked").display(),
                            imperm_bin().display(),
                            root.display()
                        ),
                    );
                }
                Kind::Missing => {}
                Kind::Script(body) => write_script(&bin.join("imperm"), body),
            }
            sshd_hosts += &format!(
                "ListenAddress {address}\n\
                 Match LocalAddress {address}\n  SetEnv PATH={}:/usr/bin:/bin HOME={}\n",
                bin.display(),
                host.join("home").display()
            );
            ssh_hosts += &format!("Host {alias}\n  HostName {address}\n");
        }
        let key = d.join("user_key");
        let known = d.join("known_hosts");
        let ssh_config = d.join("ssh_config");
        let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        // Several tries: the free port may be taken between the look and sshd's bind.
        for _ in 0..5 {
            let port = free_port();
            let (listen, matches): (Vec<&str>, Vec<&str>) = sshd_hosts
                .lines()
                .partition(|l| l.starts_with("ListenAddress"));
            fs::write(
                d.join("sshd_config"),
                format!(
                    "Port {port}\n{}\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\n\
                     UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nPidFile none\nLogLevel ERROR\nMaxStartups 100\n{}\n",
                    listen.join("\n"),
                    d.join("host_key").display(),
                    d.join("authorized_keys").display(),
                    matches.join("\n"),
                ),
            )
            .unwrap();
            fs::write(
                &ssh_config,
                format!(
                    "Host down\n  HostName {DOWN_ADDRESS}\n{ssh_hosts}\
                     Host *\n  Port {port}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n\
                     UserKnownHostsFile {}\n  StrictHostKeyChecking accept-new\n",
                    key.display(),
                    known.display()
                ),
            )
            .unwrap();
            // sshd's privilege separation directory; systemd makes it at boot.
            fs::create_dir_all("/run/sshd").unwrap();
            let mut sshd = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let started = Instant::now();
            let up = loop {
                if let Ok(Some(_)) = sshd.try_wait() {
                    break false;
                }
                let all = (1..=HOSTS.len())
                    .all(|i| TcpStream::connect(format!("127.0.0.{i}:{port}")).is_ok());
                if all {
                    break true;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "sshd did not listen within 20 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            if up {
                let bin = d.join("client");
                fs::create_dir_all(&bin).unwrap();
                write_script(
                    &bin.join("ssh"),
                    &format!("exec /usr/bin/ssh -F {} \"$@\"", ssh_config.display()),
                );
                return Some(Fleet {
                    dir,
                    sshd,
                    ssh_config,
                    port,
                });
            }
        }
        panic!("sshd did not start (5 tries)");
    }

    /// `imperm fleet status ARGS`, with this fleet's ssh first on PATH and `TMPDIR` a
    /// directory of its own (where the control sockets go). Returns the output and the
    /// time it took.
    fn run(&self, args: &[&str]) -> (Output, Duration) {
        let tmp = self.dir.path().join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        let path = format!(
            "{}:{}",
            self.dir.path().join("client").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let started = Instant::now();
        let out = Command::new(imperm_bin())
            .args(["fleet", "status", "--color", "never"])
            .args(args)
            .env("PATH", path)
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let took = started.elapsed();
        let left: Vec<_> = fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
        (out, took)
    }

    fn asked(&self, alias: &str) -> String {
        fs::read_to_string(self.dir.path().join("hosts").join(alias).join("asked")).unwrap()
    }

    /// Whether an ssh this fleet's config started is still running.
    fn ssh_running(&self) -> bool {
        let needle = self.ssh_config.to_string_lossy().into_owned();
        fs::read_dir("/proc").unwrap().flatten().any(|e| {
            fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ALL: &[&str] = &[
    "hang", "l001", "juni", "o001", "down", "bare", "junk", "other",
];

const NOT_FOUND: &str = "imperm not found on the host: bash: line 1: imperm: command not found";
const TIMED_OUT: &str = "no answer within 8 s (ssh was stopped)";
const JUNK: &str = "answered something that is not JSON (expected value at line 1 column 1), beginning \"<html>Welcome to nginx</html>\"";
const OTHER: &str = "answered JSON that is not an imperm status (no filesystem, persisted, snapshots, storage at the top)";
const HUGE: &str = "answered more than 16 MiB: not an imperm status (ssh was stopped)";

#[test]
fn every_host_is_a_row_and_a_dead_one_costs_one_timeout() {
    let Some(fleet) = Fleet::start("every_host_is_a_row_and_a_dead_one_costs_one_timeout") else {
        return;
    };
    let timeout = TIMEOUT_SECS.to_string();
    // Every host at once: on a loaded machine a queued host could miss the timeout.
    let mut args = vec!["--timeout", timeout.as_str(), "--jobs", "16"];
    args.extend(ALL);
    let (out, took) = fleet.run(&args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let refused = format!(
        "ssh failed: ssh: connect to host {DOWN_ADDRESS} port {}: Connection refused",
        fleet.port
    );
    let want = format!(
        "\
HOST   FILESYSTEM  EPHEMERAL  READY                                                            PERSISTED  TO PERSIST  SNAPSHOTS  LAST RESET  PROBLEMS
hang   error: {TIMED_OUT}
l001   btrfs       yes        no: gc-timer: imperm-gc.timer is not enabled (no lin… (+6 more)  16         0           ?          ?           -
juni   tmpfs       yes        no: baseline: no baseline at /run/imperm/baseline: `… (+1 more)  4          0           ?          ?           -
o001   ext4        no         no: config: no persistence declared (no configuratio… (+4 more)  11         ?           ?          ?           /persist: the reset would wipe this storage
down   error: {refused}
bare   error: {NOT_FOUND}
junk   error: {JUNK}
other  error: {OTHER}
8 hosts: 0 fine, 3 not ready, not known to be, or with problems, 5 without an answer
"
    );
    assert_eq!(stdout, want, "stderr: {stderr}");
    assert_eq!(stderr, "");
    assert_eq!(fleet.asked("l001"), "status --format json\n");
    // The hung host was waited for once, with the others at the same time, and killed.
    assert!(
        took >= Duration::from_secs(TIMEOUT_SECS),
        "took {took:?}: the hung host was not waited for"
    );
    assert!(
        took < Duration::from_secs(TIMEOUT_SECS + 20),
        "took {took:?} with a {TIMEOUT_SECS} s timeout"
    );
    assert!(!fleet.ssh_running(), "an ssh outlived the run");
}

/// imperm killed (Ctrl-C reaches only it: each ssh has a process group of its own) takes
/// its ssh processes with it, also the one waiting on a hung host.
#[test]
fn a_killed_run_leaves_no_ssh_behind() {
    let Some(fleet) = Fleet::start("a_killed_run_leaves_no_ssh_behind") else {
        return;
    };
    let mut run = Command::new(imperm_bin())
        .args(["fleet", "status", "hang", "l001"])
        // A killed run leaves its control directory: here, not in /tmp.
        .env("TMPDIR", fleet.dir.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                fleet.dir.path().join("client").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !fleet.ssh_running() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no ssh started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    run.kill().unwrap();
    run.wait().unwrap();
    let killed = Instant::now();
    while fleet.ssh_running() {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "an ssh outlived the imperm that started it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn json_is_one_array_of_rows_each_with_its_status_or_its_error() {
    let Some(fleet) = Fleet::start("json_is_one_array_of_rows_each_with_its_status_or_its_error")
    else {
        return;
    };
    let (out, _) = fleet.run(&[
        "--format", "json", "l001", "juni", "bare", "junk", "l001", "down", "huge",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    let rows = rows.as_array().unwrap();
    // l001 named twice is asked once, where it was first named.
    let hosts: Vec<&str> = rows.iter().map(|r| r["host"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["l001", "juni", "bare", "junk", "down", "huge"]);
    let status = |i: usize| {
        let mut row = rows[i].clone();
        let status = row.as_object_mut().unwrap().remove("status").unwrap();
        (row, status)
    };
    let (mut l001, l001_status) = status(0);
    // Its reasons are status's own words (tests/ready.rs holds them): here, that they are
    // carried whole, in status's order, ok ones left out.
    let reasons = l001.as_object_mut().unwrap().remove("reasons").unwrap();
    let checks: Vec<&str> = reasons
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().split(':').next().unwrap())
        .collect();
    assert_eq!(
        checks,
        [
            "gc-timer",
            "baseline",
            "needed-for-boot",
            "layout",
            "free-space",
            "last-reset",
            "snapshots"
        ]
    );
    assert_eq!(
        l001,
        json!({"host": "l001", "filesystem": "btrfs", "ephemeral": true, "ready": false,
               "persisted": 16, "to_persist": 0, "snapshots": null,
               "last_reset": null, "problems": []})
    );
    // The host's own answer, whole: what its `imperm status --format json` printed.
    let direct = Command::new(imperm_bin())
        .arg("--root")
        .arg(fleet.dir.path().join("hosts/l001/root"))
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    // How long status's check took is the one field two runs do not share.
    let untimed = |mut v: Value| {
        v["check"].as_object_mut().map(|c| c.remove("elapsed_ms"));
        v
    };
    assert_eq!(
        untimed(l001_status),
        untimed(serde_json::from_slice::<Value>(&direct.stdout).unwrap())
    );
    let (mut juni, _) = status(1);
    let reasons = juni.as_object_mut().unwrap().remove("reasons").unwrap();
    let checks: Vec<&str> = reasons
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().split(':').next().unwrap())
        .collect();
    assert_eq!(checks, ["baseline", "needed-for-boot"]);
    assert_eq!(
        juni,
        json!({"host": "juni", "filesystem": "tmpfs", "ephemeral": true, "ready": false,
               "persisted": 4, "to_persist": 0, "snapshots": null,
               "last_reset": null, "problems": []})
    );
    assert_eq!(rows[2], json!({"host": "bare", "error": NOT_FOUND}));
    assert_eq!(rows[3], json!({"host": "junk", "error": JUNK}));
    assert_eq!(
        rows[4],
        json!({"host": "down", "error": format!(
            "ssh failed: ssh: connect to host {DOWN_ADDRESS} port {}: Connection refused",
            fleet.port
        )})
    );
    // Its 17 MiB are not read past 16 (the default timeout: moving 16 MiB through ssh on
    // a loaded machine takes seconds).
    assert_eq!(rows[5], json!({"host": "huge", "error": HUGE}));
    assert_eq!(rows.len(), 6);
    assert_eq!(stderr, "");
}

#[test]
fn hosts_that_answer_and_are_fine_exit_0_and_a_hosts_file_names_them() {
    let Some(fleet) =
        Fleet::start("hosts_that_answer_and_are_fine_exit_0_and_a_hosts_file_names_them")
    else {
        return;
    };
    let file = fleet.dir.path().join("hosts.txt");
    fs::write(&file, "# the fleet\nok1   # juni\n\nok2\n").unwrap();
    let (out, _) = fleet.run(&["--hosts-file", file.to_str().unwrap(), "--jobs", "1"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "\
HOST  FILESYSTEM  EPHEMERAL  READY  PERSISTED  TO PERSIST  SNAPSHOTS  LAST RESET            PROBLEMS
ok1   bcachefs    yes        ready  16         0           23         2026-11-26T06:12:03Z  -
ok2   bcachefs    yes        ready  16         0           23         2026-11-26T06:12:03Z  -
2 hosts: 2 fine
"
    );
}

/// `--flake`: the names of a flake's nixosConfigurations, read without evaluating any
/// of them (here each throws), are hosts like the others.
#[test]
fn a_flake_names_its_nixos_configurations_as_hosts() {
    let Some(fleet) = Fleet::start("a_flake_names_its_nixos_configurations_as_hosts") else {
        return;
    };
    let flake = fleet.dir.path().join("flake");
    fs::create_dir_all(&flake).unwrap();
    fs::write(
        flake.join("flake.nix"),
        "{ outputs = { self }: { nixosConfigurations = {\n\
         ok1 = throw \"not evaluated\"; bare = throw \"not evaluated\"; }; }; }\n",
    )
    .unwrap();
    let (out, _) = fleet.run(&["--flake", flake.to_str().unwrap(), "ok2"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!(
            "\
HOST  FILESYSTEM  EPHEMERAL  READY  PERSISTED  TO PERSIST  SNAPSHOTS  LAST RESET            PROBLEMS
bare  error: {NOT_FOUND}
ok1   bcachefs    yes        ready  16         0           23         2026-11-26T06:12:03Z  -
ok2   bcachefs    yes        ready  16         0           23         2026-11-26T06:12:03Z  -
3 hosts: 2 fine, 1 without an answer
"
        )
    );
    fs::write(
        flake.join("flake.nix"),
        "{ outputs = { self }: { nixosConfigurations = { \"-oProxyCommand=x\" = 1; }; }; }\n",
    )
    .unwrap();
    let (out, _) = fleet.run(&["--flake", flake.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "imperm: --flake \"{}\": nixosConfigurations.\"-oProxyCommand=x\" starts with `-` (ssh would take it as an option)",
            flake.display()
        )
    );
}

/// Bad input is refused before any ssh runs: exit 2, one line naming what is wrong.
#[test]
fn bad_hosts_and_hosts_files_exit_2_naming_them() {
    let dir = TempDir::new().unwrap();
    let file = |name: &str, text: &[u8]| {
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let two = file("two", b"l001\nh001 h002\n");
    let dash = file("dash", b"# x\n-oProxyCommand=touch /tmp/pwned\n");
    let binary = file("binary", b"l001\n\xff\xfe\n");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--".into(), "-oProxyCommand=sh".into()],
            "imperm: host \"-oProxyCommand=sh\" starts with `-` (ssh would take it as an option)"
                .into(),
        ),
        (
            vec!["l001".into(), "a;reboot".into()],
            "imperm: host \"a;reboot\" holds a character no host name or ssh alias has (letters, digits, `.-_:%` and one `@` are allowed)".into(),
        ),
        (
            vec![],
            "imperm: no hosts: name them (HOST…), or give --hosts-file FILE or --flake FLAKE"
                .into(),
        ),
        (
            vec!["--hosts-file".into(), two.clone()],
            format!("imperm: {two}:2: \"h001\" then \"h002\": one host a line"),
        ),
        (
            vec!["--hosts-file".into(), dash.clone()],
            format!(
                "imperm: {dash}:2: host \"-oProxyCommand=touch\" starts with `-` (ssh would take it as an option)"
            ),
        ),
        (
            vec!["--hosts-file".into(), binary.clone()],
            format!("imperm: {binary}: not UTF-8 text: not a hosts file"),
        ),
        (
            vec!["--hosts-file".into(), "/dev/zero".into()],
            "imperm: /dev/zero: larger than 1 MiB: not a hosts file".into(),
        ),
        (
            vec!["--hosts-file".into(), dir.path().join("none").to_str().unwrap().into()],
            format!(
                "imperm: read hosts file {}: No such file or directory",
                dir.path().join("none").display()
            ),
        ),
        (
            vec!["--format".into(), "nix".into(), "l001".into()],
            "imperm: --format nix is not available for `fleet status` (use human or json)".into(),
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(imperm_bin())
            .args(["fleet", "status"])
            .args(&args)
            // No ssh at all: nothing may get as far as running it.
            .env("PATH", dir.path())
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert_eq!(stderr.trim_end(), want, "{args:?}");
        assert_eq!(stdout, "", "{args:?}");
    }
    for flag in [["--timeout", "0"], ["--jobs", "0"]] {
        let out = Command::new(imperm_bin())
            .args(["fleet", "status", "l001"])
            .args(flag)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag:?}");
    }
}

/// Without ssh on PATH every host is a row saying so, and the run still ends.
#[test]
fn no_ssh_is_an_error_row_for_each_host() {
    let dir = TempDir::new().unwrap();
    let out = Command::new(imperm_bin())
        .args(["fleet", "status", "--format", "json", "a", "b"])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rows,
        json!([
            {"host": "a", "error": "ssh could not be started: No such file or directory"},
            {"host": "b", "error": "ssh could not be started: No such file or directory"}
        ])
    );
}
