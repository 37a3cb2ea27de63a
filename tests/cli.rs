//! The command line as a user meets it: exit codes, one-line errors, and what status, lint,
//! completions and man print. Every run points `--root` at a tree the test controls, so no
//! test depends on this machine's own /etc or mounts unless it says so.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

fn imperm() -> Command {
    let mut cmd = Command::cargo_bin("imperm").unwrap();
    cmd.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
    cmd
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// A host tree with the example btrfs mount table (so the storage check can pass).
fn host() -> PathBuf {
    examples().join("lint/host")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs `imperm --root EMPTY status --config FILE` on `text` and returns the error line.
fn config_error(name: &str, text: &str) -> (String, PathBuf, TempDir) {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join(name);
    fs::write(&file, text).unwrap();
    let r = run(imperm()
        .arg("--root")
        .arg(dir.path())
        .arg("--config")
        .arg(&file)
        .arg("status"));
    assert_eq!(r.code, 2, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "", "nothing half-loaded is printed");
    assert_eq!(r.stderr.lines().count(), 1, "one line: {:?}", r.stderr);
    (r.stderr.trim_end().to_string(), file, dir)
}

#[test]
fn each_bad_configuration_is_exit_2_with_one_line_naming_file_place_and_cause() {
    let cases: &[(&str, &str, &str)] = &[
        ("syntax error", "[filesystem\n", ":1:12: "),
        (
            "unknown key",
            "[filesystem]\ntype = \"btrfs\"\nsnapshot_directory = \"@s\"\n",
            ":3:1: filesystem: unknown field `snapshot_directory`",
        ),
        (
            "relative path",
            "[persistence.\"/persist\"]\ndirectories = [\"/var/log\", \"var/lib/nixos\"]\n",
            ":2:28: persistence.\"/persist\".directories[1]: \"var/lib/nixos\" is not an absolute path",
        ),
        (
            "path with ..",
            "[persistence.\"/persist\"]\nfiles = [\"/etc/ssh/../shadow\"]\n",
            ":2:10: persistence.\"/persist\".files[0]: \"/etc/ssh/../shadow\" contains `..`",
        ),
        (
            "absolute user entry",
            "[persistence.\"/persist\".users.josh]\ndirectories = [\"/home/josh/.ssh\"]\n",
            ":2:16: persistence.\"/persist\".users.josh.directories[0]: \"/home/josh/.ssh\" is absolute, but user entries are relative to the home directory",
        ),
        (
            "unknown filesystem type",
            "[filesystem]\ntype = \"zfs\"\n",
            ":2:8: filesystem.type: unknown variant `zfs`, expected one of `bcachefs`, `btrfs`, `tmpfs`",
        ),
        (
            "filesystem type of the wrong type",
            "[filesystem]\ntype = 3\n",
            ":2:8: filesystem.type: invalid type: integer `3`, expected one of `bcachefs`, `btrfs`, `tmpfs`",
        ),
        (
            "NUL in a path",
            "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/a\\u0000b\"]\n",
            ":2:16: persistence.\"/persist\".directories[0]: \"/var/lib/a\\x00b\" contains a NUL byte, which no path can hold",
        ),
        (
            "newline in a path",
            "[persistence.\"/persist\"]\nfiles = [\"/etc/a\\nb\"]\n",
            ":2:10: persistence.\"/persist\".files[0]: \"/etc/a\\x0ab\" contains a newline",
        ),
        (
            "newline in a user entry",
            "[persistence.\"/persist\".users.josh]\ndirectories = [\".ssh\\n\"]\n",
            ":2:16: persistence.\"/persist\".users.josh.directories[0]: \".ssh\\x0a\" contains a newline",
        ),
        (
            "newline in a storage path",
            "[persistence.\"/per\\nsist\"]\ndirectories = [\"/var/log\"]\n",
            ":1:1: persistence.\"/per\\x0asist\": persistent storage path \"/per\\x0asist\" contains a newline",
        ),
        (
            "newline in a subvolume",
            "[filesystem]\ntype = \"btrfs\"\nroot_subvolume = \"@root\\n\"\n",
            ":3:18: filesystem.root_subvolume: \"@root\\x0a\" contains a newline",
        ),
        (
            "tab in the device",
            "[filesystem]\ntype = \"btrfs\"\ndevice = \"/dev/sda\\t\"\n",
            ":3:10: filesystem.device: \"/dev/sda\\x09\" contains the control character U+0009",
        ),
    ];
    for (what, text, want) in cases {
        let (line, file, _dir) = config_error("config.toml", text);
        let prefix = format!("imperm: {}", file.display());
        assert!(line.starts_with(&prefix), "{what}: {line}");
        assert!(
            line[prefix.len()..].starts_with(want),
            "{what}\n  got: {line}\n want: {prefix}{want}"
        );
    }
}

/// A file whose name holds a newline is named on the one line, escaped (README, "Paths
/// in output"), in an error and in `status`.
#[test]
fn odd_file_names_stay_on_one_line_in_messages_and_status() {
    let (line, _file, dir) = config_error("odd\nname.toml", "[filesystem]\ntype = 3\n");
    assert!(line.contains("odd\\x0aname.toml"), "{line}");
    let good = dir.path().join("ok\nconfig.toml");
    fs::write(&good, "").unwrap();
    let r = run(imperm()
        .arg("--root")
        .arg(dir.path())
        .arg("--config")
        .arg(&good)
        .arg("status"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let config_row: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("config"))
        .collect();
    assert_eq!(config_row.len(), 1, "{}", r.stdout);
    assert!(
        config_row[0].ends_with("ok\\x0aconfig.toml"),
        "{}",
        r.stdout
    );
}

/// Under --root, the tree's files are read as the tree sees them: on NixOS
/// /etc/imperm/config.toml is a symlink into /etc/static, and an absolute link must name
/// the tree's file, never the host's (which may not exist, or be another host's).
#[test]
fn absolute_symlinks_in_the_tree_name_the_trees_own_files() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    let only_in_tree = "/imperm-test-static-e7f1";
    assert!(!Path::new(only_in_tree).exists());
    fs::create_dir_all(root.join(&only_in_tree[1..]).join("imperm")).unwrap();
    fs::write(
        root.join(&only_in_tree[1..]).join("imperm/config.toml"),
        "[retention]\nkeep_last = 7\n",
    )
    .unwrap();
    fs::create_dir_all(root.join("etc/imperm")).unwrap();
    std::os::unix::fs::symlink(
        format!("{only_in_tree}/imperm/config.toml"),
        root.join("etc/imperm/config.toml"),
    )
    .unwrap();
    // The mount table behind an absolute link too: /proc -> /imperm-test-static-e7f1/proc.
    fs::create_dir_all(root.join(&only_in_tree[1..]).join("proc/self")).unwrap();
    fs::copy(
        host().join("proc/self/mountinfo"),
        root.join(&only_in_tree[1..]).join("proc/self/mountinfo"),
    )
    .unwrap();
    std::os::unix::fs::symlink(format!("{only_in_tree}/proc"), root.join("proc")).unwrap();
    let r = run(imperm()
        .arg("--root")
        .arg(root)
        .args(["--format", "json", "status"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["config"]["loaded"], true, "{v}");
    assert_eq!(v["retention"]["keep_last"], 7, "{v}");
    assert_eq!(v["filesystem"]["from"], "mount table", "{v}");
    assert_eq!(v["filesystem"]["device"], "/dev/vda2", "{v}");
}

#[test]
fn a_missing_configuration_file_is_exit_2_naming_it() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope.toml");
    let r = run(imperm()
        .arg("--root")
        .arg(dir.path())
        .arg("--config")
        .arg(&missing)
        .arg("lint"));
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr,
        format!("imperm: {}: no such file\n", missing.display())
    );
    assert_eq!(r.stdout, "");
}

#[test]
fn bad_persistence_json_is_exit_2_naming_the_key() {
    let dir = TempDir::new().unwrap();
    let cases: &[(&str, &str)] = &[
        ("{\"/persist\": {", ":1:14: EOF while parsing an object"),
        (
            r#"{"/persist": {"users": {"josh": {"files": ["/home/josh/.zsh_history"]}}}}"#,
            ": \"/persist\".users.josh.files[0]: \"/home/josh/.zsh_history\" is absolute",
        ),
        (
            r#"{"/persist": {"directories": [{"directory": "/var/../etc"}]}}"#,
            ": \"/persist\".directories[0]: \"/var/../etc\" contains `..`",
        ),
        (
            r#"{"/persist": {"directories": ["/var/lib/a\u0000b"]}}"#,
            ": \"/persist\".directories[0]: \"/var/lib/a\\x00b\" contains a NUL byte, which no path can hold",
        ),
        (
            r#"{"/persist": {"files": [{"file": "/etc/a\nb"}]}}"#,
            ": \"/persist\".files[0]: \"/etc/a\\x0ab\" contains a newline",
        ),
        (
            r#"{"/persist": {"users": {"jo\nsh": {"files": [".x"]}}}}"#,
            ": \"/persist\".users.\"jo\\x0ash\": \"jo\\x0ash\" is not a user name",
        ),
        (
            r#"{"/persist": {"users": {".": {"files": [".x"]}}}}"#,
            ": \"/persist\".users.\".\": \".\" is not a user name",
        ),
        (
            r#"{"/persist": {"users": {"..": {"files": [".x"]}}}}"#,
            ": \"/persist\".users.\"..\": \"..\" is not a user name",
        ),
    ];
    for (json, want) in cases {
        let file = dir.path().join("persistence.json");
        fs::write(&file, json).unwrap();
        let r = run(imperm()
            .arg("--root")
            .arg(dir.path())
            .arg("--persistence-json")
            .arg(&file)
            .arg("status"));
        assert_eq!(r.code, 2);
        assert_eq!(r.stderr.lines().count(), 1);
        let want = format!("imperm: {}{want}", file.display());
        assert!(r.stderr.starts_with(&want), "got: {}want: {want}", r.stderr);
    }
}

#[test]
fn a_root_that_is_not_a_directory_is_exit_2() {
    let r = run(imperm().args(["--root", "/definitely/not/here", "status"]));
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr,
        "imperm: /definitely/not/here: --root is not a directory\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(imperm().arg("frobnicate")).code, 2);
    assert_eq!(run(imperm().args(["--format", "yaml", "status"])).code, 2);
    assert_eq!(run(imperm().arg("restore")).code, 2);
}

#[test]
fn status_reports_sources_filesystem_storage_and_set() {
    // clean.toml names /dev/disk/by-label/nixos; a test must never mount a real disk, so
    // the copy used here names a device that does not exist.
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("clean.toml");
    let text = fs::read_to_string(examples().join("lint/clean.toml")).unwrap();
    fs::write(
        &config,
        text.replace("/dev/disk/by-label/nixos", "/dev/imperm-test-absent"),
    )
    .unwrap();
    let status = |args: &[&str]| {
        run(imperm()
            .arg("--root")
            .arg(host())
            .arg("--config")
            .arg(&config)
            .arg("status")
            .args(args))
    };
    let r = status(&["--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["config"]["loaded"], true);
    assert_eq!(v["persistence"]["kind"], "config-file");
    assert_eq!(v["filesystem"]["type"], "btrfs");
    assert_eq!(v["filesystem"]["from"], "config");
    assert_eq!(v["filesystem"]["root_subvolume"], "@root");
    assert_eq!(v["persisted"]["directories"], 11);
    assert_eq!(v["persisted"]["files"], 5);
    assert_eq!(v["persisted"]["users"], serde_json::json!(["josh"]));
    assert_eq!(v["storage"][0]["path"], "/persist");
    assert_eq!(v["storage"][0]["separate"], true);
    assert_eq!(v["retention"]["keep_monthly"], "all");
    assert_eq!(v["snapshots"]["count"], Value::Null);
    let note = v["snapshots"]["note"].as_str().unwrap();
    assert!(
        note == "not looked at: device /dev/imperm-test-absent does not exist"
            || note.starts_with("not looked at: mounting the top level needs root"),
        "{note}"
    );

    let r = status(&["--color", "never"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout
            .contains("persisted    11 directories, 5 files; users: josh\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("snapshots    not looked at: "),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains('\x1b'), "no colour when asked for none");
}

#[test]
fn status_colours_only_when_asked() {
    let base = || {
        let mut c = imperm();
        c.arg("--root").arg(host()).arg("status");
        c
    };
    assert!(
        run(base().args(["--color", "always"]))
            .stdout
            .contains('\x1b')
    );
    // Not a terminal: auto means plain.
    assert!(!run(&mut base()).stdout.contains('\x1b'));
}

#[test]
fn without_declarations_the_live_bind_mounts_are_the_persisted_set() {
    let r = run(imperm()
        .arg("--root")
        .arg(host())
        .args(["status", "--format", "json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["persistence"]["kind"], "mount-table");
    // /var/lib/nixos and /var/log are directories; /etc/machine-id is a file in the tree.
    assert_eq!(v["persisted"]["directories"], 2);
    assert_eq!(v["persisted"]["files"], 1);
}

#[test]
fn without_anything_the_built_in_template_is_the_persisted_set() {
    let empty = TempDir::new().unwrap();
    let r = run(imperm()
        .arg("--root")
        .arg(empty.path())
        .args(["status", "--format", "json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["persistence"]["kind"], "template");
    assert_eq!(v["config"]["loaded"], false);
    assert_eq!(v["persisted"]["directories"], 6);
    assert_eq!(v["persisted"]["files"], 5);
    // No /proc under the root: no mount table, so neither storage nor filesystem is known.
    assert_eq!(v["storage"][0]["separate"], Value::Null);
    assert_eq!(v["filesystem"]["type"], Value::Null);
}

#[test]
fn the_default_configuration_file_is_read_under_the_root() {
    let root = TempDir::new().unwrap();
    fs::create_dir_all(root.path().join("etc/imperm")).unwrap();
    fs::write(
        root.path().join("etc/imperm/config.toml"),
        "[filesystem]\ntype = \"tmpfs\"\n[persistence.\"/persist\"]\ndirectories = [\"/var/lib/headscale\"]\n",
    )
    .unwrap();
    let r = run(imperm()
        .arg("--root")
        .arg(root.path())
        .args(["status", "--format", "json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["config"]["loaded"], true);
    assert_eq!(v["filesystem"]["type"], "tmpfs");
    assert_eq!(v["persisted"]["directories"], 1);
}

#[test]
fn persistence_json_replaces_the_files_persistence() {
    let r = run(imperm()
        .arg("--root")
        .arg(host())
        .arg("--config")
        .arg(examples().join("lint/clean.toml"))
        .arg("--persistence-json")
        .arg(examples().join("persistence.json"))
        .args(["status", "--format", "json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stderr, "",
        "the evaluated module's attributes are all known"
    );
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["persistence"]["kind"], "nix-json");
    // From the JSON: /var/lib/nixos, /var/log, users.josh .ssh (once), /etc/machine-id.
    assert_eq!(v["persisted"]["directories"], 3);
    assert_eq!(v["persisted"]["files"], 1);
    // The file's [filesystem] still applies.
    assert_eq!(v["filesystem"]["type"], "btrfs");
}

#[test]
fn status_has_no_nix_form() {
    let r = run(imperm()
        .arg("--root")
        .arg(host())
        .args(["--format", "nix", "status"]));
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr,
        "imperm: --format nix is not available for `status` (use human or json)\n"
    );
}

#[test]
fn lint_reports_each_problem_of_the_problem_sample() {
    let r = run(imperm()
        .arg("--root")
        .arg(host())
        .arg("--config")
        .arg(examples().join("lint/problems.toml"))
        .args(["lint", "--format", "json"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let found: Vec<(String, String)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("storage-on-root", "/state"),
        ("duplicate", "/var/log"),
        ("nested", "/var/lib/forgejo/data"),
        ("file-in-directory", "/etc/ssh/ssh_host_ed25519_key"),
        ("mode", "/var/lib/private"),
        ("never-persist", "/var/lib/containers/storage/overlay"),
        ("too-many-mounts", "/"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(found, want);
    let merges = &v["findings"][6]["merges"];
    assert_eq!(merges[0]["parent"], "/var/lib/nixarr");
    assert_eq!(merges[0]["covers"].as_array().unwrap().len(), 8);
    let duplicate = &v["findings"][1]["declared_at"];
    let sample = examples().join("lint/problems.toml");
    assert_eq!(
        duplicate,
        &serde_json::json!([
            format!("{}:11", sample.display()),
            format!("{}:12", sample.display())
        ])
    );

    let human = run(imperm()
        .arg("--root")
        .arg(host())
        .arg("--config")
        .arg(examples().join("lint/problems.toml"))
        .arg("lint"));
    assert_eq!(human.code, 1);
    assert!(
        human
            .stdout
            .ends_with("7 problems in 34 entries, 33 bind mounts\n"),
        "{}",
        human.stdout
    );
    assert!(
        human
            .stdout
            .contains("  /var/lib/nixarr covers /var/lib/nixarr/bazarr, ")
    );
}

#[test]
fn lint_finds_nothing_in_the_clean_sample() {
    let r = run(imperm()
        .arg("--root")
        .arg(host())
        .arg("--config")
        .arg(examples().join("lint/clean.toml"))
        .arg("lint"));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "no problems in 16 entries, 16 bind mounts\n");
}

#[test]
fn lint_reads_nix_json_too() {
    let dir = TempDir::new().unwrap();
    let json = dir.path().join("p.json");
    fs::write(
        &json,
        r#"{"/persist": {"directories": ["/var/lib", "/var/lib/nixos"]}}"#,
    )
    .unwrap();
    let r = run(imperm()
        .arg("--root")
        .arg(dir.path())
        .arg("--persistence-json")
        .arg(&json)
        .args(["lint", "--format", "json"]));
    assert_eq!(r.code, 1);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["findings"][0]["rule"], "nested");
    assert_eq!(
        v["findings"][0]["declared_at"][0],
        format!("{}: \"/persist\".directories[1]", json.display())
    );
    assert_eq!(v["mount_table"], false);
}

#[test]
fn completions_and_man_are_generated_from_the_real_command_line() {
    for (shell, marker) in [
        ("bash", "_imperm()"),
        ("zsh", "#compdef imperm"),
        ("fish", "complete -c imperm"),
    ] {
        let r = run(imperm().args(["completions", shell]));
        assert_eq!(r.code, 0);
        assert!(r.stdout.contains(marker), "{shell}");
        assert!(
            r.stdout.contains("persistence-json"),
            "{shell} knows the global options"
        );
        assert!(r.stdout.contains("snapshots"), "{shell} knows the commands");
    }
    let r = run(imperm().arg("man"));
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("\n.TH imperm 1 "), "roff title line");
    assert!(
        r.stdout.contains("imperm\\-lint(1)"),
        "lists the lint command"
    );

    // Every page a page refers to is written by `man --dir`.
    let dir = TempDir::new().unwrap();
    let pages = dir.path().join("man1");
    let r = run(imperm().arg("man").arg("--dir").arg(&pages));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut referenced = std::collections::BTreeSet::new();
    let mut written = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&pages).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            text.contains(&format!(".TH {name} 1")),
            "{name}: its own title"
        );
        written.insert(name);
        // References look like `imperm\-snapshots\-gc(1)`.
        for (at, _) in text.match_indices("imperm\\-") {
            let tail = &text[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '\\' || c == '-'))
                .unwrap_or(tail.len());
            if tail[len..].starts_with("(1)") {
                referenced.insert(tail[..len].replace("\\-", "-"));
            }
        }
    }
    assert!(written.contains("imperm") && written.contains("imperm-snapshots-gc"));
    assert!(
        referenced.len() > 15,
        "found the references: {referenced:?}"
    );
    let missing: Vec<_> = referenced.difference(&written).collect();
    assert!(
        missing.is_empty(),
        "referenced but not written: {missing:?}"
    );
    let audit = std::fs::read_to_string(pages.join("imperm-audit.1")).unwrap();
    assert!(audit.contains("Walks the whole root"), "long description");
}

/// Inputs built to break the loader: each is exit 2 with one short line naming the file
/// (and the key where there is one), never a crash (a stack overflow is exit 134).
#[test]
fn hostile_configurations_are_one_line_refusals() {
    let deep_path = format!(
        "[persistence.\"/persist\"]\ndirectories = [\"{}\"]\n",
        "/a".repeat(300_000)
    );
    let deep_user = format!(
        "[persistence.\"/persist\".users.josh]\ndirectories = [\"{}\"]\n",
        "a/".repeat(2043)
    );
    let nested_toml = format!("a = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a path of 300,000 components",
            deep_path,
            ":2:16: persistence.\"/persist\".directories[0]: \"/a/a/a",
        ),
        (
            "a user entry that is too long only once joined to its home",
            deep_user,
            "directories[0]: \"/home/josh/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a\"… (4096 bytes) is 4096 bytes long",
        ),
        ("lists nested 100,000 deep", nested_toml, ":1:"),
    ];
    for (what, text, want) in cases {
        let (line, file, _dir) = config_error("config.toml", &text);
        let prefix = format!("imperm: {}", file.display());
        assert!(
            line.starts_with(&prefix) && line.contains(want),
            "{what}: {line}"
        );
        assert!(line.len() < 400, "{what}: the value is not echoed whole");
    }
    let (line, ..) = config_error(
        "config.toml",
        &format!(
            "[persistence.\"/persist\"]\ndirectories = [\"{}\"]\n",
            "/a".repeat(300_000)
        ),
    );
    assert!(
        line.ends_with(
            "… (600000 bytes) is 600000 bytes long; Linux paths are at most 4095 bytes (PATH_MAX)"
        ),
        "{line}"
    );
}

#[test]
fn nix_json_nested_too_deep_is_one_line_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("p.json");
    fs::write(
        &file,
        format!(
            "{{\"/persist\": {{\"directories\": {}{}}}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    )
    .unwrap();
    let r = run(imperm()
        .arg("--root")
        .arg(dir.path())
        .arg("--persistence-json")
        .arg(&file)
        .arg("status"));
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr,
        format!(
            "imperm: {}:1:155: recursion limit exceeded\n",
            file.display()
        )
    );
}

/// A FIFO would block forever and /dev/zero never ends; a directory or a file larger than
/// any configuration is refused before it is read. None of them hangs.
#[test]
fn configuration_inputs_that_are_not_regular_files_are_refused() {
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("fifo.toml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let huge = dir.path().join("huge.toml");
    fs::File::create(&huge).unwrap().set_len(1 << 30).unwrap();
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        ("FIFO", fifo, "is a FIFO, not a regular file"),
        (
            "directory",
            dir.path().to_path_buf(),
            "is a directory, not a file",
        ),
        (
            "device",
            PathBuf::from("/dev/zero"),
            "is a device, not a regular file",
        ),
        (
            "1 GiB",
            huge,
            "is larger than 64 MiB, the most a configuration input may be",
        ),
    ];
    for flag in ["--config", "--persistence-json"] {
        for (what, path, want) in &cases {
            let r = run(imperm()
                .timeout(std::time::Duration::from_secs(20))
                .arg("--root")
                .arg(dir.path())
                .arg(flag)
                .arg(path)
                .arg("status"));
            assert_eq!(r.code, 2, "{flag} {what}: {}", r.stderr);
            assert_eq!(r.stderr.lines().count(), 1, "{flag} {what}: {}", r.stderr);
            assert!(
                r.stderr
                    .starts_with(&format!("imperm: {}: {want}", path.display())),
                "{flag} {what}: {}",
                r.stderr
            );
        }
    }
}

#[test]
fn persistence_json_can_be_read_from_standard_input() {
    let dir = TempDir::new().unwrap();
    let r = run(imperm()
        .arg("--root")
        .arg(dir.path())
        .args(["--persistence-json", "-", "--format", "json", "status"])
        .write_stdin(r#"{"/persist": {"directories": ["/var/lib/a", "/var/lib/b"]}}"#));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["persisted"]["directories"], 2, "{v}");

    let r = run(imperm()
        .arg("--root")
        .arg(dir.path())
        .args(["--persistence-json", "-", "--config", "-", "status"])
        .write_stdin("{}"));
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr,
        "imperm: -: --config and --persistence-json cannot both read standard input\n"
    );
}

#[test]
fn a_configuration_that_is_not_utf8_names_where() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("config.toml");
    fs::write(&file, b"[check]\nignore = [\"/caf\xe9\"]\n").unwrap();
    let r = run(imperm()
        .arg("--root")
        .arg(dir.path())
        .arg("--config")
        .arg(&file)
        .arg("status"));
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr,
        format!("imperm: {}:2:16: is not UTF-8 text\n", file.display())
    );
}

/// The kernel prints a non-UTF-8 mount point as raw bytes: such a mount table must load
/// (it used to fail every command), and a bind mount named so is persisted by its exact
/// name.
#[test]
fn a_mount_table_with_a_non_utf8_mount_point_loads() {
    let dir = TempDir::new().unwrap();
    let proc = dir.path().join("proc/self");
    fs::create_dir_all(&proc).unwrap();
    let mut table = b"1 0 0:30 /@root / rw - btrfs /dev/vda2 rw\n\
2 1 0:30 /@persist /persist rw - btrfs /dev/vda2 rw\n"
        .to_vec();
    table.extend_from_slice(
        b"3 1 0:30 /@persist/srv/caf\xe9 /srv/caf\xe9 rw - btrfs /dev/vda2 rw\n",
    );
    table.extend_from_slice(
        b"4 1 0:30 /@persist/srv/a\\012b /srv/a\\012b rw - btrfs /dev/vda2 rw\n",
    );
    fs::write(proc.join("mountinfo"), table).unwrap();
    let r = imperm()
        .arg("--root")
        .arg(dir.path())
        .args(["--format", "json", "status"])
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["persisted"]["directories"], 2, "{v}");
}

/// Loading used to rescan the file for the line of every entry: 20,000 entries took 31 s
/// here (debug), 50,000 would take minutes. Linear, it is a few seconds even in debug.
#[test]
fn a_configuration_of_50000_entries_loads_in_seconds() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("config.toml");
    let mut text = String::from("[persistence.\"/persist\"]\ndirectories = [\n");
    for i in 0..50_000 {
        text.push_str(&format!("  \"/var/lib/svc{i}/data\",\n"));
    }
    text.push_str("]\n");
    fs::write(&file, text).unwrap();
    let started = std::time::Instant::now();
    let r = run(imperm()
        .arg("--root")
        .arg(dir.path())
        .arg("--config")
        .arg(&file)
        .args(["--format", "json", "status"]));
    let took = started.elapsed();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["persisted"]["directories"], 50_000);
    assert!(took < std::time::Duration::from_secs(40), "{took:?}");
}

// Configuration neighbours of issue 9's items 10 and 18.

/// A duplicate key in the Nix JSON: serde_json keeps the last value without a word, so
/// half of a storage (or a whole one) would vanish. Refused, naming the key and where.
#[test]
fn persistence_json_with_a_duplicate_key_is_refused() {
    let dir = TempDir::new().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            r#"{"/persist": {"directories": ["/a"]}, "/persist": {"directories": ["/b"]}}"#,
            ":1:48: duplicate attribute \"/persist\"",
        ),
        (
            "{\"/persist\": {\"directories\": [\"/a\"],\n \"files\": [], \"directories\": [\"/b\"]}}",
            ":2:27: duplicate attribute \"directories\"",
        ),
        (
            r#"{"/persist": {"directories": [{"directory": "/a", "mode": "0700", "mode": "0755"}]}}"#,
            ":1:72: duplicate attribute \"mode\"",
        ),
    ];
    for (json, want) in cases {
        let file = dir.path().join("persistence.json");
        fs::write(&file, json).unwrap();
        let r = run(imperm()
            .arg("--root")
            .arg(dir.path())
            .arg("--persistence-json")
            .arg(&file)
            .arg("lint"));
        assert_eq!(r.code, 2, "{json}: {}{}", r.stdout, r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        let want = format!("imperm: {}{want}", file.display());
        assert!(r.stderr.starts_with(&want), "got: {}want: {want}", r.stderr);
    }
}

/// The storage path is checked whether or not the storage declares any entries: a
/// relative one used to pass unseen until an entry was added.
#[test]
fn a_bad_storage_path_is_refused_even_without_entries() {
    for (text, want) in [
        (
            "[persistence.\"persist\"]\ndirectories = []\n",
            ":1:1: persistence.persist: persistent storage path \"persist\" is not an absolute path",
        ),
        (
            "[persistence.\"/persist\"]\npersistentStoragePath = \"state\"\n",
            ":2:25: persistence.\"/persist\".persistentStoragePath: persistent storage path \"state\" is not an absolute path",
        ),
        (
            "[persistence.\"/per\\nsist\"]\n",
            ":1:1: persistence.\"/per\\x0asist\": persistent storage path \"/per\\x0asist\" contains a newline; control characters are not accepted in paths",
        ),
    ] {
        let (err, file, _dir) = config_error("c.toml", text);
        let want = format!("imperm: {}{want}", file.display());
        assert_eq!(err, want);
    }
    // JSON likewise.
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("p.json");
    fs::write(&file, r#"{"persist": {"directories": []}}"#).unwrap();
    let r = run(imperm()
        .arg("--root")
        .arg(dir.path())
        .arg("--persistence-json")
        .arg(&file)
        .arg("status"));
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(
        r.stderr,
        format!(
            "imperm: {}: persist: persistent storage path \"persist\" is not an absolute path\n",
            file.display()
        )
    );
}

fn lint_json(root: &Path, config: &str) -> Value {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("c.toml");
    fs::write(&file, config).unwrap();
    let r = run(imperm()
        .arg("--root")
        .arg(root)
        .arg("--config")
        .arg(&file)
        .args(["lint", "--format", "json"]));
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

fn rules(v: &Value) -> Vec<(String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// "/persist" and "/persist/" are one storage: entries across the two spellings are
/// duplicates and nest like entries of one storage, and status lists it once.
#[test]
fn storage_names_are_compared_normalised() {
    let dir = TempDir::new().unwrap();
    let v = lint_json(
        dir.path(),
        "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/x\"]\n\
         [persistence.\"/persist/\"]\ndirectories = [\"/var/lib/x\", \"/var/lib/x/sub\"]\n\
         [persistence.\"//persist/.\"]\nfiles = [\"/var/lib/x/f\"]\n",
    );
    assert_eq!(
        rules(&v),
        [
            ("duplicate".to_string(), "/var/lib/x".to_string()),
            // In declaration order: "//persist/." sorts first.
            ("file-in-directory".to_string(), "/var/lib/x/f".to_string()),
            ("nested".to_string(), "/var/lib/x/sub".to_string()),
        ]
    );
    let r = run(imperm()
        .arg("--root")
        .arg(dir.path())
        .arg("--persistence-json")
        .arg({
            let f = dir.path().join("p.json");
            fs::write(
                &f,
                r#"{"/persist": {"directories": ["/a"]}, "/persist/": {"directories": ["/a"]}, "x": {"persistentStoragePath": "/persist//", "files": ["/b"]}}"#,
            )
            .unwrap();
            f
        })
        .args(["--format", "json", "status"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["storage"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["storage"][0]["path"], "/persist");
}

/// A storage inside a persisted directory is hidden by that directory's bind mount (or
/// hides it), and an entry inside another storage bind mounts the storage onto itself.
#[test]
fn a_storage_and_a_persisted_directory_that_overlap_are_found() {
    let dir = TempDir::new().unwrap();
    let v = lint_json(
        dir.path(),
        "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/x\", \"/state/sub\"]\n\
         [persistence.\"/var/lib/x/store\"]\ndirectories = [\"/srv/y\"]\n\
         [persistence.\"/state\"]\nfiles = [\"/etc/z\"]\n",
    );
    assert_eq!(
        rules(&v),
        [
            (
                "storage-overlap".to_string(),
                "/var/lib/x/store".to_string()
            ),
            ("storage-overlap".to_string(), "/state/sub".to_string()),
        ],
        "{v}"
    );
    let messages: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert!(
        messages[0].contains(
            "persistent storage \"/var/lib/x/store\" lies inside the persisted directory \"/var/lib/x\""
        ),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("\"/state/sub\" lies inside the persistent storage \"/state\""),
        "{messages:?}"
    );
}

/// A live root mounted from a loop btrfs at a directory outside it, as an installer or a
/// chroot has it (`/mnt`), with whatever the test mounts below; unmounted in reverse.
struct Chroot {
    mounts: Vec<PathBuf>,
    live: PathBuf,
    fs: common::LoopBtrfs,
}

impl Chroot {
    /// `@root` (the root subvolume) mounted at a directory next to the image.
    fn new(test: &str) -> Option<Chroot> {
        let fs = common::btrfs(test)?;
        fs.subvolume("@root");
        let live = fs.scratch().join("live");
        fs::create_dir(&live).unwrap();
        let mut chroot = Chroot {
            mounts: Vec::new(),
            live,
            fs,
        };
        chroot.mount(&["-o", "subvol=@root"], None, "/");
        Some(chroot)
    }

    /// `mount ARGS [DEVICE] LIVE/AT`, the device being the loop device unless given.
    fn mount(&mut self, args: &[&str], device: Option<&Path>, at: &str) {
        let dir = self.live.join(at.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        let device = device.map_or_else(|| PathBuf::from(&self.fs.device), Path::to_path_buf);
        common::check(
            std::process::Command::new("mount")
                .args(args)
                .arg(device)
                .arg(&dir),
        );
        self.mounts.push(dir);
    }

    fn imperm(&self, config: &str, args: &[&str]) -> Run {
        let file = self.fs.scratch().join("c.toml");
        fs::write(&file, config).unwrap();
        run(imperm()
            .arg("--root")
            .arg(&self.live)
            .arg("--config")
            .arg(&file)
            .args(args))
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(m)
                .status();
        }
    }
}

const NESTED_CONFIG: &str = "[filesystem]\ntype = \"btrfs\"\nroot_subvolume = \"@root\"\n\
                             [persistence.\"/persist\"]\ndirectories = [\"/var/lib/x\"]\n";

/// `btrfs subvolume create /persist` on a btrfs root makes the storage a subvolume inside
/// the root subvolume; mounted apart at /persist it looks like a storage of its own, but a
/// reset deletes it with the old root. lint and status must say so, from the mount table
/// the tree declares (here a copy, as the booted host shows it).
#[test]
fn a_storage_nested_in_the_root_subvolume_is_wiped_by_a_reset() {
    let Some(mut chroot) = Chroot::new("cli_nested_storage") else {
        return;
    };
    chroot.fs.subvolume("@root/nestedpersist");
    chroot.mount(&["-o", "subvol=@root/nestedpersist"], None, "/persist");
    // The tree's own table: what the booted host would show.
    fs::create_dir_all(chroot.live.join("proc/self")).unwrap();
    fs::write(
        chroot.live.join("proc/self/mountinfo"),
        "49 27 0:212 /@root / rw,relatime - btrfs /dev/loop3 rw,subvol=/@root\n\
         48 49 0:212 /@root/nestedpersist /persist rw,relatime - btrfs /dev/loop3 rw,subvol=/@root/nestedpersist\n",
    )
    .unwrap();
    let r = chroot.imperm(NESTED_CONFIG, &["lint", "--format", "json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        rules(&v),
        [("storage-on-root".to_string(), "/persist".to_string())]
    );
    let message = v["findings"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("is mounted from /@root/nestedpersist, inside the root subvolume /@root"),
        "{message}"
    );
    let r = chroot.imperm(NESTED_CONFIG, &["status", "--color", "never"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "storage      /persist: btrfs mount at /persist of /@root/nestedpersist, inside the root subvolume /@root: the reset would wipe it"
        ),
        "{}",
        r.stdout
    );
    let r = chroot.imperm(NESTED_CONFIG, &["status", "--format", "json"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["storage"][0]["wiped_by_reset"], true, "{v}");
    assert_eq!(v["storage"][0]["separate"], true, "{v}");

    // Without [filesystem], the root mount's own subvolume tells the same.
    let bare = "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/x\"]\n";
    let r = chroot.imperm(bare, &["lint"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.starts_with("storage-on-root: "), "{}", r.stdout);
}

/// The installer's layout: the new root at DIR, its /persist mounted, and the host's /proc
/// bound at DIR/proc. DIR/proc/self/mountinfo is then imperm's own table, with host
/// paths (DIR/persist): read as it is, /persist looked like a directory of the host's
/// root. It is mapped to the tree; a storage nested in the root is still found.
#[test]
fn the_live_proc_under_root_is_read_as_the_trees_mount_table() {
    let Some(mut chroot) = Chroot::new("cli_bound_proc") else {
        return;
    };
    chroot.fs.subvolume("@persist");
    chroot.fs.subvolume("@root/nestedstate");
    chroot.mount(&["-o", "subvol=@persist"], None, "/persist");
    chroot.mount(&["-o", "subvol=@root/nestedstate"], None, "/state");
    chroot.mount(&["--bind"], Some(Path::new("/proc")), "/proc");
    let config = "[filesystem]\ntype = \"btrfs\"\nroot_subvolume = \"@root\"\n\
                  [persistence.\"/persist\"]\ndirectories = [\"/var/lib/x\"]\n\
                  [persistence.\"/state\"]\ndirectories = [\"/var/lib/y\"]\n\
                  [persistence.\"/plain\"]\ndirectories = [\"/var/lib/z\"]\n";
    let r = chroot.imperm(config, &["lint", "--format", "json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        rules(&v),
        [
            ("storage-on-root".to_string(), "/plain".to_string()),
            ("storage-on-root".to_string(), "/state".to_string()),
        ],
        "{v}"
    );
    assert_eq!(v["mount_table"], true);
    let r = chroot.imperm(config, &["status", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let storage = |i: usize, key: &str| v["storage"][i][key].clone();
    assert_eq!(storage(0, "path"), "/persist");
    assert_eq!(storage(0, "mount_point"), "/persist", "{v}");
    assert_eq!(storage(0, "fs_type"), "btrfs");
    assert_eq!(storage(0, "wiped_by_reset"), false);
    assert_eq!(storage(1, "path"), "/plain");
    assert_eq!(storage(1, "mount_point"), "/", "{v}");
    assert_eq!(storage(1, "wiped_by_reset"), true);
    assert_eq!(storage(2, "path"), "/state");
    assert_eq!(storage(2, "wiped_by_reset"), true);
    // The root's own filesystem, as the tree has it.
    let r = chroot.imperm(
        "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/x\"]\n",
        &["status", "--format", "json"],
    );
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["filesystem"]["type"], "btrfs", "{v}");
    assert_eq!(v["filesystem"]["from"], "mount table");
}
