//! `imperm journal` on journal exports (tests/fixtures/journal: real message formats of the
//! seed's services, in every field shape `journalctl -o json` writes, among a lot of
//! unrelated noise), and `journal` + `restore` after a real reset on loop btrfs (the rest of
//! `restore` is in tests/restore.rs).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{LoopBtrfs, btrfs};
use serde_json::Value;
use tempfile::TempDir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/journal")
        .join(name)
}

/// An empty root whose configuration persists only /var/log, so that the built-in template
/// does not hide the fixtures' paths.
fn host() -> (TempDir, PathBuf) {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("imperm.toml");
    fs::write(
        &config,
        "[persistence.\"/persist\"]\ndirectories = [\"/var/log\"]\n",
    )
    .unwrap();
    (dir, config)
}

fn journal(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let (dir, config) = host();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imperm"))
        .arg("--root")
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("journal")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// `path -> units` and the failed units.
fn summary(out: &Output) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let paths = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let units = f["units"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().to_string())
                .collect();
            (f["path"].as_str().unwrap().to_string(), units)
        })
        .collect();
    let failed = v["failed_units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["unit"].as_str().unwrap().to_string())
        .collect();
    (paths, failed)
}

fn map(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(p, us)| (p.to_string(), us.iter().map(|u| u.to_string()).collect()))
        .collect()
}

#[test]
fn each_fixture_reports_exactly_its_paths_and_units() {
    type Case = (
        &'static str,
        Vec<(&'static str, &'static [&'static str])>,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "sshd.json",
            vec![
                ("/etc/ssh/ssh_host_ed25519_key", &["sshd.service"]),
                ("/etc/ssh/ssh_host_rsa_key", &["sshd.service"]),
            ],
            vec!["sshd.service"],
        ),
        (
            "tailscaled.json",
            vec![
                (
                    "/var/lib/tailscale/tailscaled.log.conf",
                    &["tailscaled.service"],
                ),
                (
                    "/var/lib/tailscale/tailscaled.state",
                    &["tailscaled.service"],
                ),
            ],
            vec![],
        ),
        (
            "postgresql.json",
            vec![("/var/lib/postgresql/16", &["postgresql.service"])],
            vec!["postgresql.service"],
        ),
        (
            "missing-etc.json",
            vec![("/etc/nginx/htpasswd", &["nginx.service"])],
            vec!["nginx.service"],
        ),
        (
            "acme.json",
            vec![
                ("/var/lib/acme/.lego", &["acme-example.org.service"]),
                (
                    "/var/lib/acme/example.org/fullchain.pem",
                    &["acme-example.org.service"],
                ),
            ],
            vec![],
        ),
        (
            "field-shapes.json",
            vec![
                ("/var/lib/n8n/caf\u{fffd}", &["n8n.service"]),
                ("/var/lib/opengist/opengist.db", &["opengist.service"]),
                ("/var/lib/trilium/document.db", &["trilium.service"]),
            ],
            vec![],
        ),
        ("noise.json", vec![], vec![]),
    ];
    for (name, paths, failed) in cases {
        let out = journal(
            &[
                "--file",
                fixture(name).to_str().unwrap(),
                "--format",
                "json",
            ],
            None,
        );
        let (got_paths, got_failed) = summary(&out);
        assert_eq!(got_paths, map(&paths), "{name}");
        assert_eq!(got_failed, failed, "{name}");
        let want_code = if paths.is_empty() && failed.is_empty() {
            0
        } else {
            1
        };
        assert_eq!(out.status.code(), Some(want_code), "{name}");
    }
}

#[test]
fn suggestions_say_what_to_persist_for_the_failures() {
    let all: Vec<u8> = [
        "sshd.json",
        "postgresql.json",
        "missing-etc.json",
        "tailscaled.json",
        "noise.json",
    ]
    .iter()
    .flat_map(|n| fs::read(fixture(n)).unwrap())
    .collect();
    let out = journal(&["--file", "-", "--format", "json"], Some(&all));
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = common::path_verdicts(&v);
    let want: Vec<(String, String)> = [
        ("/etc/ssh/ssh_host_ed25519_key", "persist"),
        ("/etc/ssh/ssh_host_rsa_key", "persist"),
        ("/var/lib/postgresql", "persist"),
        ("/var/lib/tailscale", "persist"),
        ("/etc/nginx/htpasswd", "review"),
    ]
    .iter()
    .map(|(p, v)| (p.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(v["lines"], 3215);
    assert_eq!(
        v["snapshot"],
        Value::Null,
        "no filesystem configured: nothing looked up"
    );
    let nix = journal(&["--file", "-", "--format", "nix"], Some(&all));
    let text = String::from_utf8(nix.stdout).unwrap();
    assert!(text.contains("    \"/var/lib/postgresql\"\n"), "{text}");
    assert!(
        text.contains("    \"/etc/ssh/ssh_host_ed25519_key\"\n"),
        "{text}"
    );
}

#[test]
fn lines_that_are_not_journal_json_are_counted_not_fatal() {
    let out = journal(&["--file", "-", "--format", "json"], Some(b"not json\n{\"MESSAGE\":\"open /var/lib/x/y: No such file or directory\",\"_SYSTEMD_UNIT\":\"x.service\"}\n"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bad_lines"], 1);
    assert_eq!(v["failures"][0]["path"], "/var/lib/x/y");
}

#[test]
fn without_journalctl_it_asks_for_a_file() {
    let (dir, config) = host();
    let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
        .env("PATH", dir.path())
        .arg("--root")
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("journal")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("journalctl is not here: pass --file FILE")
    );
}

/// A mount made by the test, undone when it ends (before the filesystem is).
struct Mount(PathBuf);

impl Mount {
    fn subvolume(fs: &LoopBtrfs, subvolume: &str, at: &Path) -> Mount {
        fs::create_dir_all(at).unwrap();
        common::check(
            Command::new("mount")
                .args(["-o", &format!("subvol={subvolume},noatime"), &fs.device])
                .arg(at),
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn imperm(fs: &LoopBtrfs, config: &Path, args: &[&str]) -> Output {
    common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env(imperm::commands::NOW_ENV, "2026-01-15T06:30:00Z")
            .arg("--root")
            .arg(fs.path("@root"))
            .arg("--config")
            .arg(config)
            .args(args)
            .args(["--fs", "btrfs", "--mounted"])
            .arg(fs.top()),
    )
}

/// Every file below `dir`: relative path, content, owner, mode, mtime, xattr `user.imperm`.
fn inventory(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = fs::symlink_metadata(&d).unwrap();
        let rel = d.strip_prefix(dir).unwrap().display().to_string();
        let content = if m.is_file() {
            fs::read_to_string(&d).unwrap()
        } else {
            String::new()
        };
        let xattr = Command::new("getfattr")
            .args(["--only-values", "-n", "user.imperm"])
            .arg(&d)
            .output()
            .expect("getfattr (Debian: attr)");
        let xattr = if xattr.status.success() {
            String::from_utf8_lossy(&xattr.stdout).into_owned()
        } else {
            String::new()
        };
        out.push(format!(
            "{rel} {}:{} {:o} {} {content:?} {xattr:?}",
            m.uid(),
            m.gid(),
            m.mode() & 0o7777,
            m.mtime()
        ));
        if m.is_dir() {
            for e in fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// The whole story: state in a root, a reset wipes it, the journal names it as wiped, and
/// restore puts it into persistent storage intact.
#[test]
fn after_a_reset_journal_finds_the_wiped_state_and_restore_brings_it_back() {
    let Some(fs) = btrfs("journal_restore") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/var/lib/postgresql/16/PG_VERSION", "16\n");
    fs.write("@root/var/lib/postgresql/16/base/1/1259", "catalog");
    let pg = fs.path("@root/var/lib/postgresql");
    for p in [
        "",
        "16",
        "16/base",
        "16/base/1",
        "16/PG_VERSION",
        "16/base/1/1259",
    ] {
        std::os::unix::fs::chown(pg.join(p), Some(70), Some(70)).unwrap();
    }
    fs::set_permissions(pg.join("16"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(pg.join("16/PG_VERSION"), fs::Permissions::from_mode(0o600)).unwrap();
    let xattr = common::run(
        Command::new("setfattr")
            .args(["-n", "user.imperm", "-v", "kept"])
            .arg(pg.join("16/PG_VERSION")),
    );
    assert!(xattr.status.success(), "setfattr (Debian: attr) is needed");
    std::os::unix::fs::symlink("16/PG_VERSION", pg.join("current")).unwrap();
    let before = inventory(&pg);

    let config = fs.scratch().join("imperm.toml");
    fs::write(
        &config,
        "[persistence.\"/persist\"]\ndirectories = [\"/var/log\"]\n",
    )
    .unwrap();
    let out = imperm(&fs, &config, &["reset"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!pg.exists(), "the reset wiped it");
    // The storage is a filesystem of its own, mounted in the live root as at boot.
    fs.subvolume("@persist");
    let _persist = Mount::subvolume(&fs, "@persist", &fs.path("@root/persist"));

    let out = imperm(
        &fs,
        &config,
        &[
            "journal",
            "--file",
            fixture("postgresql.json").to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["snapshot"], "20260115T063000Z");
    let failure = &v["failures"][0];
    assert_eq!(failure["path"], "/var/lib/postgresql/16");
    assert_eq!(failure["existed"]["uid"], 70);
    assert_eq!(failure["existed"]["mode"], "0700");
    assert_eq!(
        failure["restore"],
        "imperm restore /var/lib/postgresql/16 --from 20260115T063000Z --into persist"
    );
    let suggestion = &v["suggestions"][0];
    assert_eq!(suggestion["path"], "/var/lib/postgresql");
    assert_eq!(suggestion["verdict"], "persist");
    assert!(
        suggestion["reason"]
            .as_str()
            .unwrap()
            .starts_with("existed before the last reset in 20260115T063000Z")
    );
    let human = imperm(
        &fs,
        &config,
        &[
            "journal",
            "--file",
            fixture("postgresql.json").to_str().unwrap(),
            "--color",
            "never",
        ],
    );
    assert!(String::from_utf8_lossy(&human.stdout).contains("existed before the last reset"));

    let out = imperm(
        &fs,
        &config,
        &["restore", "/var/lib/postgresql", "--into", "persist"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("environment.persistence.\"/persist\" = {\n  directories = [\n    \"/var/lib/postgresql\"\n  ];"), "{text}");
    let restored = fs.path("@root/persist/var/lib/postgresql");
    assert!(
        before.iter().any(|l| l.contains("\"kept\"")),
        "the xattr is in the inventory: {before:?}"
    );
    assert_eq!(
        inventory(&restored),
        before,
        "owner, mode, times, xattrs, content and the link kept"
    );
    assert_eq!(
        fs::read_link(restored.join("current")).unwrap(),
        PathBuf::from("16/PG_VERSION")
    );

    // Again: the target exists now; without --force nothing is written, with it the old
    // one is kept aside.
    fs::write(restored.join("16/PG_VERSION"), "newer").unwrap();
    let out = imperm(
        &fs,
        &config,
        &["restore", "/var/lib/postgresql", "--into", "persist"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        fs::read_to_string(restored.join("16/PG_VERSION")).unwrap(),
        "newer"
    );
    let out = imperm(
        &fs,
        &config,
        &[
            "restore",
            "/var/lib/postgresql",
            "--into",
            "persist",
            "--force",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(restored.join("16/PG_VERSION")).unwrap(),
        "16\n"
    );
    let aside =
        fs.path("@root/persist/var/lib/postgresql.imperm-replaced-20260115T063000Z/16/PG_VERSION");
    assert_eq!(fs::read_to_string(aside).unwrap(), "newer", "nothing lost");
}
