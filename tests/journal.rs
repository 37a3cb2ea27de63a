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
        // A run that refuses before reading closes its end: that is not the test's failure.
        match input.write_all(data) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
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
            // n8n's message is bytes that are not UTF-8: its path cannot be named exactly,
            // so it is counted, not listed under a name that does not exist.
            vec![
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
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let unnamed = if name == "field-shapes.json" { 1 } else { 0 };
        assert_eq!(v["unnamed_paths"], unnamed, "{name}");
        if unnamed > 0 {
            assert_eq!(v["unnamed_path_units"], serde_json::json!(["n8n.service"]));
        }
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

/// A journal line as `journalctl -o json` writes it.
fn entry(unit: &str, message: &str) -> String {
    serde_json::json!({"MESSAGE": message, "_SYSTEMD_UNIT": unit, "SYSLOG_IDENTIFIER": "x"})
        .to_string()
}

/// A line that is not UTF-8, one that is cut short, one that is not JSON at all, one that
/// is JSON but not an entry, and one nested past any sane depth: each is skipped, counted
/// and named by its number, and every other line is still read.
#[test]
fn unreadable_lines_are_skipped_counted_and_numbered() {
    let mut input = Vec::new();
    let mut line = |bytes: &[u8]| {
        input.extend_from_slice(bytes);
        input.push(b'\n');
    };
    line(
        entry(
            "a.service",
            "open /var/lib/a/state: No such file or directory",
        )
        .as_bytes(),
    );
    line(b"{\"MESSAGE\":\"open /var/lib/\xff: No such file or directory\"}");
    line(b"not json");
    line(b"");
    line(
        entry(
            "b.service",
            "open /var/lib/b/state: No such file or directory",
        )
        .as_bytes(),
    );
    line(b"{\"MESSAGE\": {\"not\": \"a field\"}}");
    let deep = format!(
        "{{\"MESSAGE\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    line(deep.as_bytes());
    line(
        entry(
            "c.service",
            "open /var/lib/c/state: No such file or directory",
        )
        .as_bytes(),
    );
    // The last line is cut short (no newline, no closing brace).
    input.extend_from_slice(br#"{"MESSAGE":"open /var/lib/d/state: No such"#);

    let out = journal(&["--file", "-", "--format", "json"], Some(&input));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (paths, _) = summary(&out);
    assert_eq!(
        paths.keys().collect::<Vec<_>>(),
        ["/var/lib/a/state", "/var/lib/b/state", "/var/lib/c/state"]
    );
    assert_eq!(v["lines"], 9);
    assert_eq!(v["bad_lines"], 5);
    assert_eq!(v["bad_line_numbers"], serde_json::json!([2, 3, 6, 7, 9]));

    let out = journal(&["--file", "-", "--color", "never"], Some(&input));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "5 lines could not be read as journal entries and were skipped (lines 2, 3, 6, 7, 9)"
        ),
        "{text}"
    );
}

#[test]
fn the_list_of_bad_line_numbers_is_capped() {
    let input = "garbage\n".repeat(1000);
    let out = journal(&["--file", "-", "--format", "json"], Some(input.as_bytes()));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bad_lines"], 1000);
    let numbers: Vec<u64> = serde_json::from_value(v["bad_line_numbers"].clone()).unwrap();
    assert_eq!(numbers, (1..=20).collect::<Vec<u64>>());
    let out = journal(&["--file", "-", "--color", "never"], Some(input.as_bytes()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "1000 lines could not be read as journal entries and were skipped (lines 1, 2, 3, 4, 5, …)"
        ),
        "{text}"
    );
}

/// A 50 MB message is not echoed whole (human or JSON); a line longer than the most imperm
/// parses is skipped, counted, and does not stop the lines after it.
#[test]
fn huge_messages_are_cut_and_huge_lines_skipped() {
    let big = format!(
        "open /var/lib/big/state: No such file or directory {}",
        "é".repeat(4 << 20)
    );
    let too_long = format!(
        "open /var/lib/huge/state: No such file or directory {}",
        "x".repeat(17 << 20)
    );
    let input = format!(
        "{}\n{}\n{}\n",
        entry("big.service", &big),
        entry("huge.service", &too_long),
        entry(
            "after.service",
            "open /var/lib/after: No such file or directory"
        )
    );
    let out = journal(&["--file", "-", "--format", "json"], Some(input.as_bytes()));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (paths, _) = summary(&out);
    assert_eq!(
        paths.keys().collect::<Vec<_>>(),
        ["/var/lib/after", "/var/lib/big/state"]
    );
    assert_eq!(v["bad_lines"], 1);
    assert_eq!(v["bad_line_numbers"], serde_json::json!([2]));
    assert_eq!(v["too_long_lines"], 1);
    let message = v["failures"][1]["message"].as_str().unwrap();
    assert_eq!(
        message.chars().count(),
        501,
        "500 characters and an ellipsis"
    );
    assert!(message.ends_with("éé…"), "cut on a character boundary");
    assert!(
        out.stdout.len() < 10_000,
        "{} bytes of JSON",
        out.stdout.len()
    );

    let out = journal(&["--file", "-", "--color", "never"], Some(input.as_bytes()));
    assert!(
        out.stdout.len() < 10_000,
        "{} bytes of text",
        out.stdout.len()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "1 line could not be read as a journal entry and was skipped (line 2; 1 longer than 16 MiB)"
        ),
        "{text}"
    );
}

/// What a message says is shown, not obeyed: escape sequences in a message are printed
/// escaped, so a journal line cannot drive the reader's terminal.
#[test]
fn control_characters_in_messages_are_shown_escaped() {
    let input = entry(
        "evil.service",
        "open /var/lib/evil: No such file or directory \u{1b}[2J\u{1b}]0;owned\u{7}",
    );
    let out = journal(&["--file", "-", "--color", "never"], Some(input.as_bytes()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("\\u{1b}[2J"), "{text}");
}

/// The journal's suggestions keep to the audit's rules: never `/`, `/var`, `/var/lib`,
/// `/etc`, a home directory; a path in a persistent storage is listed apart (the storage is
/// not the root: a mount or migration problem, not a wipe); a bare path broken by a
/// control character is not cut short into another path.
#[test]
fn journal_suggestions_keep_to_the_audit_rules() {
    let input = [
        entry(
            "u.service",
            "Failed to open /etc/: No such file or directory",
        ),
        entry("u.service", "could not open /var: Permission denied"),
        entry(
            "u.service",
            "cannot stat /var/lib/: No such file or directory",
        ),
        entry(
            "u.service",
            "Failed to read /home/josh: No such file or directory",
        ),
        entry("u.service", "Failed to read /: No such file or directory"),
        entry(
            "u.service",
            "open \"/persist/var/lib/foo\" failed: No such file or directory",
        ),
        entry("u.service", "open /persist: No such file or directory"),
        entry(
            "u.service",
            "cannot open /etc/\u{1b}[31mred: No such file or directory",
        ),
        entry(
            "v.service",
            "open /var/lib/real/db: No such file or directory",
        ),
    ]
    .join("\n");
    let out = journal(&["--file", "-", "--format", "json"], Some(input.as_bytes()));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let suggested: Vec<&str> = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(suggested, ["/var/lib/real"], "{v}");
    assert_eq!(
        v["in_storage"],
        serde_json::json!(["/persist", "/persist/var/lib/foo"]),
        "{v}"
    );
    let failures: Vec<(&str, bool)> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["too_broad"] == true))
        .collect();
    assert_eq!(
        failures,
        [
            ("/etc", true),
            ("/home/josh", true),
            ("/var", true),
            ("/var/lib", true),
            ("/var/lib/real/db", false)
        ],
        "{v}"
    );
    // The ESC-broken name is counted as one that cannot be named, never shortened to /etc.
    assert_eq!(v["unnamed_paths"], 1, "{v}");
    let out = journal(&["--file", "-", "--color", "never"], Some(input.as_bytes()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("in the persistent storage") && text.contains("/persist/var/lib/foo"),
        "{text}"
    );
    assert!(text.contains("too broad"), "{text}");
    let nix = journal(&["--file", "-", "--format", "nix"], Some(input.as_bytes()));
    let nix = String::from_utf8_lossy(&nix.stdout);
    assert!(nix.contains("\"/var/lib/real\""), "{nix}");
    // (`"/persist"` itself is the snippet's storage, `environment.persistence."/persist"`.)
    for broad in [
        "\"/etc\"",
        "\"/var\"",
        "\"/var/lib\"",
        "\"/persist/",
        "\"/persist\"\n",
        "josh",
    ] {
        assert!(!nix.contains(broad), "{broad} in {nix}");
    }
}

/// Go's `%q` escapes inside double quotes are undone, so a name with a newline, a tab or a
/// byte that is not UTF-8 comes back exact; doubled slashes are normalised, not dropped.
#[test]
fn go_quoted_paths_come_back_exact() {
    let input = [
        entry(
            "g.service",
            r#"open "/var/lib/nl\nname": no such file or directory"#,
        ),
        entry(
            "g.service",
            r#"open "/var/lib/tab\there\x41\u00e9\xff": no such file or directory"#,
        ),
        entry(
            "g.service",
            r#"open "//var//lib//dbl": no such file or directory"#,
        ),
        entry("g.service", "stat //srv//bare/: no such file or directory"),
    ]
    .join("\n");
    let out = journal(&["--file", "-", "--format", "json"], Some(input.as_bytes()));
    let (paths, _) = summary(&out);
    let paths: Vec<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "/srv/bare",
            "/var/lib/dbl",
            "/var/lib/nl\\x0aname",
            "/var/lib/tab\\x09hereA\u{e9}\\xff",
        ]
    );
}

/// `--file` is read as a stream, so a device that never ends (or a directory) is refused at
/// once; a FIFO is a pipe by design and is read until its writer closes it.
#[test]
fn journal_files_that_never_end_are_refused_and_fifos_read() {
    let started = std::time::Instant::now();
    for (file, why) in [("/dev/zero", "device"), ("/", "directory")] {
        let out = journal(&["--file", file], None);
        assert_eq!(out.status.code(), Some(2), "{file}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(file) && err.contains(why), "{err}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("journal.fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let line = entry("w.service", "open /var/lib/w/x: No such file or directory");
            fs::write(&fifo, format!("{line}\n")).unwrap();
        })
    };
    let out = journal(
        &["--file", fifo.to_str().unwrap(), "--format", "json"],
        None,
    );
    writer.join().unwrap();
    let (paths, _) = summary(&out);
    assert!(paths.contains_key("/var/lib/w/x"), "{paths:?}");
}

#[test]
fn two_inputs_on_standard_input_are_refused() {
    let (dir, _) = host();
    for flag in ["--config", "--persistence-json"] {
        let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(dir.path())
            .args([flag, "-", "journal", "--file", "-"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("imperm: --file - and {flag} - cannot both read standard input\n")
        );
    }
}

#[test]
fn previous_and_file_together_are_refused() {
    let out = journal(
        &[
            "--previous",
            "--file",
            fixture("sshd.json").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--previous"), "{err}");
}

/// `--against` names one snapshot: when it cannot be used, the run stops (like `diff` and
/// `restore`), before any journal is read. Only the default lookup may fall back to a note.
#[test]
fn against_that_cannot_be_used_is_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["--against", "20260115T063000Z"], "--against"),
        (&["--against", ""], "\"\" is not a snapshot's name"),
        (
            &["--against", "../@root"],
            "\"../@root\" is not a snapshot's name",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["--file", "-"];
        all.extend_from_slice(args);
        let out = journal(&all, Some(b"not even read\n"));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Without --against, an old root that cannot be looked up is a note.
    let out = journal(
        &[
            "--file",
            fixture("sshd.json").to_str().unwrap(),
            "--color",
            "never",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("old root not looked up"));
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
    // A snapshot name with a typo stops the run, as `diff` and `restore` do.
    let typo = imperm(
        &fs,
        &config,
        &[
            "journal",
            "--file",
            fixture("postgresql.json").to_str().unwrap(),
            "--against",
            "20260115T063000",
        ],
    );
    assert_eq!(typo.status.code(), Some(2));
    let err = String::from_utf8_lossy(&typo.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no snapshot \"20260115T063000\""), "{err}");
    assert!(typo.stdout.is_empty());
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

/// The JSON of a journal run over `lines`, with its exit code.
fn run_json(lines: &[String]) -> (Option<i32>, Value) {
    let input = lines.join("\n");
    let out = journal(&["--file", "-", "--format", "json"], Some(input.as_bytes()));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v)
}

/// A failure in a tree the audit never walks (`[scan] never_walk`: /run and /tmp are made
/// anew at every boot, /nix, /boot, /mnt, /media are other filesystems, /proc, /sys, /dev
/// the kernel's) is no state to persist: never suggested, not a failure to act on, listed
/// apart in `never_persisted`, and no reason for exit 1.
#[test]
fn failures_in_trees_never_walked_are_never_suggested() {
    let messages = [
        "Failed to connect to /run/dbus/system_bus_socket: No such file or directory",
        "Failed to connect to /run/user/1000/bus: No such file or directory",
        "Failed to open /nix/var/nix/profiles/system: No such file or directory",
        "Failed to open /mnt/data/x: No such file or directory",
        "Failed to open /media/usb/x: No such file or directory",
        "Failed to open /boot/loader/entries/x.conf: No such file or directory",
        "Failed to open /run/systemd/unit-root: No such file or directory",
        "Failed to open /tmp/foo: No such file or directory",
        "Failed to open /dev/tpmrm0: No such file or directory",
        "Failed to open /nix/store/abc-x/bin/x: No such file or directory",
    ];
    for m in messages {
        let (code, v) = run_json(&[entry("u.service", m)]);
        assert_eq!(code, Some(0), "{m}: {v}");
        assert_eq!(v["suggestions"], serde_json::json!([]), "{m}: {v}");
        assert_eq!(v["failures"], serde_json::json!([]), "{m}: {v}");
        assert_eq!(
            v["never_persisted"].as_array().unwrap().len(),
            1,
            "{m}: {v}"
        );
    }
    let lines: Vec<String> = messages
        .iter()
        .map(|m| entry("u.service", m))
        .chain([entry(
            "v.service",
            "open /var/lib/real/db: No such file or directory",
        )])
        .collect();
    let (code, v) = run_json(&lines);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(
        common::path_verdicts(&v),
        [("/var/lib/real".to_string(), "persist".to_string())]
    );
    assert_eq!(
        v["never_persisted"],
        serde_json::json!([
            "/boot/loader/entries/x.conf",
            "/dev/tpmrm0",
            "/media/usb/x",
            "/mnt/data/x",
            "/nix/store/abc-x/bin/x",
            "/nix/var/nix/profiles/system",
            "/run/dbus/system_bus_socket",
            "/run/systemd/unit-root",
            "/run/user/1000/bus",
            "/tmp/foo",
        ]),
        "{v}"
    );
    let input = lines.join("\n");
    let out = journal(&["--file", "-", "--color", "never"], Some(input.as_bytes()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10 paths in trees never persisted"), "{text}");
    assert!(!text.contains("/run/dbus"), "listed in JSON only: {text}");
    let nix = journal(&["--file", "-", "--format", "nix"], Some(input.as_bytes()));
    let nix = String::from_utf8_lossy(&nix.stdout);
    for tree in [
        "\"/run", "\"/tmp", "\"/nix", "\"/boot", "\"/mnt", "\"/media", "\"/dev",
    ] {
        assert!(!nix.contains(tree), "{tree} in {nix}");
    }
}

/// The trial's paths that were dropped unsaid (`..`, a NUL, a `file://` URL) are counted
/// as paths that cannot be named, with their units, and make exit 1; the human summary
/// says why they are not listed.
#[test]
fn paths_that_cannot_be_named_are_counted_never_dropped() {
    let messages = [
        "Failed to open /var/lib/foo/../../../etc/shadow: No such file or directory",
        "Failed to open /home/josh/../bob/.config: No such file or directory",
        "Failed to open /var/lib/x/../../../persist/z: No such file or directory",
        r#"open "/var/lib/nul\x00x": no such file or directory"#,
        r#"open "/var/lib/\x2e\x2e": no such file or directory"#,
        r#"open "/var/lib/sl\x2f..\x2f..\x2fetc": no such file or directory"#,
        "Failed to load file:///var/lib/fileurl: No such file or directory",
    ];
    for m in messages {
        let (code, v) = run_json(&[entry("u.service", m)]);
        assert_eq!(
            (code, &v["unnamed_paths"]),
            (Some(1), &Value::from(1)),
            "{m}: {v}"
        );
        assert_eq!(
            v["unnamed_path_units"],
            serde_json::json!(["u.service"]),
            "{m}"
        );
        assert_eq!(v["failures"], serde_json::json!([]), "{m}: {v}");
    }
    // The kernel's trees are never state, with `..` or without.
    let (code, v) = run_json(&[entry(
        "u.service",
        "Failed to open /sys/devices/x/../../y: No such file or directory",
    )]);
    assert_eq!(
        (code, &v["unnamed_paths"]),
        (Some(0), &Value::from(0)),
        "{v}"
    );
    let input = messages.map(|m| entry("u.service", m)).join("\n");
    let out = journal(&["--file", "-", "--color", "never"], Some(input.as_bytes()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("7 paths in messages of u.service cannot be named exactly")
            && text.contains("`..`"),
        "{text}"
    );
}

/// `path -> (kind, files)` of the suggestions.
fn kinds(v: &Value) -> BTreeMap<String, (String, u64)> {
    v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                (
                    s["kind"].as_str().unwrap().to_string(),
                    s["files"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// A path with another failure below it is a directory, whichever failure comes first,
/// for system and home paths, in JSON and in the Nix snippet (a file bind-mounted there
/// would break every program writing below it).
#[test]
fn a_path_with_failures_below_it_is_a_directory() {
    let lines = [
        "Failed to open /var/lib/foo: No such file or directory",
        "Failed to open /var/lib/foo/bar/baz: No such file or directory",
        "Failed to open /home/josh/.config/app/x: No such file or directory",
        "Failed to open /home/josh/.config: No such file or directory",
        "Failed to open /var/lib/lone: No such file or directory",
    ]
    .map(|m| entry("u.service", m));
    for order in [lines.to_vec(), lines.iter().rev().cloned().collect()] {
        let (_, v) = run_json(&order);
        let got = kinds(&v);
        let dir = |files: u64| ("directory".to_string(), files);
        assert_eq!(got["/var/lib/foo"], dir(2), "{v}");
        assert_eq!(got["/home/josh/.config"], dir(2), "{v}");
        // A lone missing path: nothing says what it was; the guess is said.
        assert_eq!(got["/var/lib/lone"], ("file".to_string(), 1), "{v}");
        let reason = |p: &str| {
            v["suggestions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["path"] == p)
                .unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert!(reason("/var/lib/lone").contains("guessed"), "{v}");
        assert!(!reason("/var/lib/foo").contains("guessed"), "{v}");
        let input = order.join("\n");
        let nix = journal(&["--file", "-", "--format", "nix"], Some(input.as_bytes()));
        let nix = String::from_utf8_lossy(&nix.stdout).into_owned();
        let list = |name: &str, after: &str| -> String {
            let from = nix.find(after).unwrap() + after.len();
            let rest = &nix[from..];
            let start = rest.find(&format!("{name} = [")).unwrap();
            let end = rest[start..].find(']').unwrap();
            rest[start..start + end].to_string()
        };
        let system_files = list("files", "\"/persist\"");
        assert!(!system_files.contains("/var/lib/foo"), "{nix}");
        assert!(
            list("directories", "\"/persist\"").contains("\"/var/lib/foo\""),
            "{nix}"
        );
        assert!(system_files.contains("\"/var/lib/lone\""), "{nix}");
        let user_dirs = list("directories", "users.josh");
        assert!(user_dirs.contains("\".config\""), "{nix}");
        assert!(
            !nix.contains("files = [ \".config\"")
                && !nix.contains("    \".config\"\n    ];\n      files"),
            "{nix}"
        );
        let out = journal(&["--file", "-", "--color", "never"], Some(input.as_bytes()));
        let text = String::from_utf8_lossy(&out.stdout);
        let lone = text
            .lines()
            .find(|l| l.starts_with("  /var/lib/lone "))
            .unwrap();
        assert!(lone.contains("guessed"), "{text}");
    }
}

/// A parent and its child are never both suggested: the parent covers the child (its
/// counts added, a directory), as the audit's units never overlap; a child that must be
/// persisted makes a parent to review one to persist.
#[test]
fn a_parent_and_its_child_are_never_both_suggested() {
    let lines = [
        "Failed to open /var/lib/private: No such file or directory",
        "Failed to open /var/lib/private/x: No such file or directory",
        "Failed to open /var/lib/private/AdGuardHome/conf: No such file or directory",
        "Failed to open /home/josh/.local/share: No such file or directory",
        "Failed to open /home/josh/.local/share/containers/storage/volumes/v: No such file or directory",
        "Failed to open /home/josh/.local/share/flatpak: No such file or directory",
    ]
    .map(|m| entry("u.service", m));
    let (code, v) = run_json(&lines);
    assert_eq!(code, Some(1));
    let got = kinds(&v);
    let want: BTreeMap<String, (String, u64)> =
        [("/home/josh/.local/share", 3), ("/var/lib/private", 3)]
            .iter()
            .map(|(p, n)| (p.to_string(), ("directory".to_string(), *n)))
            .collect();
    assert_eq!(got, want, "{v}");
    let private = &v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/var/lib/private")
        .unwrap();
    assert_eq!(private["verdict"], "persist", "{v}");
    assert_eq!(private["mode"], "0700", "the parent's own mode: {v}");
}

/// A file of a kernel filesystem may block or never end (`/proc/kmsg` waits for the next
/// kernel message): any file on procfs, sysfs and their kin is refused at once, exit 2,
/// one line naming it, before a byte is read; on standard input too, with a device that
/// is not a terminal (`< /dev/zero`). A FIFO and a pipe stay accepted.
#[test]
fn files_of_kernel_filesystems_are_refused_before_reading() {
    let run = |args: &[&str], stdin: Option<&str>| -> Output {
        let (dir, config) = host();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imperm"));
        cmd.arg("--root")
            .arg(dir.path())
            .arg("--config")
            .arg(&config)
            .arg("journal")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(file) = stdin {
            cmd.stdin(fs::File::open(file).unwrap());
        }
        let mut child = cmd.spawn().unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(10) {
                child.kill().unwrap();
                panic!("{args:?} < {stdin:?} did not end");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    };
    let mut files = vec![
        "/proc/self/status",
        "/sys/kernel/mm/transparent_hugepage/enabled",
    ];
    if rustix::process::geteuid().is_root() {
        files.push("/proc/kmsg");
    }
    for file in files.iter().filter(|f| Path::new(f).exists()) {
        let out = run(&["--file", file], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(file) && err.contains("kernel"), "{err}");
        let out = run(&["--file", "-"], Some(file));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "< {file}: {err}");
        assert!(err.contains("stdin") && err.contains("kernel"), "{err}");
    }
    let out = run(&["--file", "-"], Some("/dev/zero"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "< /dev/zero: {err}");
    assert!(err.contains("stdin") && err.contains("device"), "{err}");
    // A regular file on standard input is read as before.
    let dir = TempDir::new().unwrap();
    let export = dir.path().join("boot.json");
    fs::write(
        &export,
        entry("w.service", "open /var/lib/w/x: No such file or directory"),
    )
    .unwrap();
    let out = run(
        &["--file", "-", "--format", "json"],
        Some(export.to_str().unwrap()),
    );
    let (paths, _) = summary(&out);
    assert!(paths.contains_key("/var/lib/w/x"), "{paths:?}");
}
