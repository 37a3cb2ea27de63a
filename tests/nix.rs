//! The Nix side, checked as far as it can be without a NixOS machine: every .nix file
//! parses (rnix, and Nix itself), and the module's pure functions (nix/lib.nix) evaluate
//! with `nix-instantiate --eval --strict` to configurations imperm reads as meant. Evaluating
//! the module itself needs nixpkgs, which this machine cannot fetch.
//!
//! Nix (Debian's nix-bin) is installed by .ci/run; without it these tests say so and skip,
//! except under CI=true, where that fails the run.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use imperm::config::{Config, LoadOptions};
use imperm::persisted::Kind;
use tempfile::TempDir;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Evaluates a Nix expression to JSON.
fn eval(expr: &str) -> serde_json::Value {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", expr])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{expr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn nix_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() && !name.starts_with('.') && name != "target" {
                stack.push(path);
            } else if name.ends_with(".nix") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_nix_file_parses() {
    let files = nix_files();
    assert!(files.len() >= 10, "{files:?}");
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let parsed = rnix::Root::parse(&text);
        assert!(
            parsed.errors().is_empty(),
            "{}: {:?}",
            file.display(),
            parsed.errors()
        );
    }
    if common::nix_available("every_nix_file_parses") {
        for file in &files {
            let out = Command::new("nix-instantiate")
                .arg("--parse")
                .arg(file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn load(toml: &str) -> (TempDir, Config) {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("config.toml");
    fs::write(&file, toml).unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let config = Config::load(&LoadOptions {
        root,
        config: Some(file),
        persistence_json: None,
    })
    .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    (dir, config)
}

#[test]
fn the_module_template_is_imperms_built_in_template() {
    if !common::nix_available("the_module_template_is_imperms_built_in_template") {
        return;
    }
    let v = eval("(import ./nix/lib.nix).serverTemplate");
    let from_nix: Vec<String> = ["directories", "files"]
        .iter()
        .flat_map(|k| {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
        })
        .collect();
    let built_in: Vec<String> = imperm::config::template_entries()
        .iter()
        .map(|e| e.path.display().to_string())
        .collect();
    assert_eq!(from_nix, built_in);
}

#[test]
fn the_rendered_configuration_reads_back_as_written() {
    if !common::nix_available("the_rendered_configuration_reads_back_as_written") {
        return;
    }
    let toml = eval(
        r#"(import ./nix/lib.nix).configToml {
          filesystem = { type = "bcachefs"; device = "/dev/sda:/dev/sdb"; rootSubvolume = "@root"; snapshotDir = "@snaps"; blankSnapshot = "@blank"; };
          storage = "/persist";
          directories = [ "/var/lib/with \"quotes\" and \\ and ü" { directory = "/var/lib/private"; mode = "0700"; hideMount = true; user = "root"; } ];
          files = [ { file = "/etc/machine-id"; parentDirectory = { mode = "0755"; }; } ];
          users."my-user" = { home = "/srv/home"; directories = [ ".ssh" ]; files = [ ".zsh_history" ]; };
          retention = { keep_last = 3; keep_daily = 0; keep_weekly = 0; keep_monthly = "all"; keep_yearly = 2; timezone = "Europe/Berlin"; };
          checkIgnore = [ "/var/lib/x/**" ];
          checkRules = [ { path = "/srv/*"; verdict = "persist"; } ];
        }"#,
    );
    let (_dir, config) = load(toml.as_str().unwrap());
    let fs = config.filesystem.as_ref().unwrap();
    assert_eq!(fs.fs_type.as_str(), "bcachefs");
    assert_eq!(fs.device.as_deref(), Some("/dev/sda:/dev/sdb"));
    assert_eq!(fs.snapshot_dir, PathBuf::from("@snaps"));
    assert_eq!(fs.blank_snapshot, Some(PathBuf::from("@blank")));
    let entries: Vec<(String, Kind, Option<String>)> = config
        .persisted
        .entries()
        .iter()
        .map(|e| {
            (
                e.path.display().to_string(),
                e.kind,
                e.mode.map(|m| m.to_string()),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (
                "/var/lib/with \"quotes\" and \\ and ü".to_string(),
                Kind::Directory,
                None
            ),
            (
                "/var/lib/private".to_string(),
                Kind::Directory,
                Some("0700".to_string())
            ),
            (
                "/etc/machine-id".to_string(),
                Kind::File,
                Some("0755".to_string())
            ),
            ("/srv/home/.ssh".to_string(), Kind::Directory, None),
            ("/srv/home/.zsh_history".to_string(), Kind::File, None),
        ]
    );
    assert_eq!(
        config.retention.to_string(),
        "last 3, monthly all, yearly 2 (Europe/Berlin)"
    );
    assert_eq!(config.check.ignore, ["/var/lib/x/**"]);
    assert_eq!(config.check.rules.len(), 1);
}

/// Each example host's settings, rendered as the module renders them, are a configuration
/// imperm loads and finds nothing wrong with.
#[test]
fn example_hosts_render_clean_configurations() {
    if !common::nix_available("example_hosts_render_clean_configurations") {
        return;
    }
    let hosts = ["h001", "h003", "juni", "l001", "o001"];
    for host in hosts {
        let toml = eval(&format!(
            "(import ./nix/lib.nix).hostToml (import ./examples/hosts/{host}.nix {{ }}).services.imperm"
        ));
        let (dir, config) = load(toml.as_str().unwrap());
        assert!(!config.persisted.is_empty(), "{host}");
        let file = dir.path().join("config.toml");
        let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--config")
            .arg(&file)
            .arg("lint")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{host}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The seed's per-host additions are there (the router's LUKS key is not persisted:
    // the initrd carries it, from /persist; tests/module.rs evaluates that).
    let h003 = eval(
        "(import ./nix/lib.nix).hostPersistence (import ./examples/hosts/h003.nix { }).services.imperm",
    );
    assert!(
        h003["directories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "/var/lib/dnsmasq")
    );
    let juni = eval(
        "(import ./nix/lib.nix).hostToml (import ./examples/hosts/juni.nix { }).services.imperm",
    );
    let (_dir, juni) = load(juni.as_str().unwrap());
    assert_eq!(juni.filesystem.unwrap().fs_type.as_str(), "bcachefs");
}

/// A retention policy that keeps nothing is refused at evaluation (the module's assertion
/// takes this message): imperm would exit 2 in status, gc and baseline on the host.
#[test]
fn a_retention_policy_that_keeps_nothing_is_named() {
    if !common::nix_available("a_retention_policy_that_keeps_nothing_is_named") {
        return;
    }
    let problem = |ret: &str| eval(&format!("(import ./nix/lib.nix).retentionProblem {ret}"));
    let zero = "{ keepLast = 0; keepDaily = 0; keepWeekly = 0; keepMonthly = 0; keepYearly = 0; }";
    let why = problem(zero);
    assert!(why.as_str().unwrap().contains("keeps nothing"), "{why}");
    for fine in [
        "{ }",
        "{ keepLast = 0; keepWeekly = 0; }",
        "{ keepLast = 0; keepDaily = 0; keepWeekly = 0; keepMonthly = 0; keepYearly = \"all\"; }",
        "{ keepLast = 1; keepDaily = 0; keepWeekly = 0; keepMonthly = 0; keepYearly = 0; }",
    ] {
        assert_eq!(problem(fine), serde_json::Value::Null, "{fine}");
    }
    // And the file the module would write for it is one imperm refuses, which is why.
    let toml = eval(&format!(
        "(import ./nix/lib.nix).hostToml {{ filesystem.type = \"btrfs\"; filesystem.device = \"/dev/vda2\"; retention = {zero}; }}"
    ));
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("config.toml");
    fs::write(&file, toml.as_str().unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
        .arg("--root")
        .arg(dir.path())
        .arg("--config")
        .arg(&file)
        .args(["snapshots", "gc", "--dry-run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("every keep_* rule is 0"), "{err}");
}

/// A `check.rules` entry without a verdict, or with a key imperm does not read, is one
/// error naming the rule and what is wrong, not a bare "attribute missing" or a key
/// dropped unseen.
#[test]
fn check_rules_without_a_verdict_or_with_unknown_keys_are_named() {
    if !common::nix_available("check_rules_without_a_verdict_or_with_unknown_keys_are_named") {
        return;
    }
    let render = |rule: &str| {
        Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "-E"])
            .arg(format!(
                "(import ./nix/lib.nix).hostToml {{ filesystem.type = \"tmpfs\"; check.rules = [ {rule} ]; }}"
            ))
            .current_dir(repo())
            .output()
            .unwrap()
    };
    for (rule, want) in [
        (
            r#"{ path = "/srv/*"; }"#,
            "the rule for /srv/* needs both path and verdict",
        ),
        (
            r#"{ path = "/srv/*"; verdict = "persist"; verdcit = "x"; }"#,
            "the rule for /srv/* has verdcit, which imperm does not read",
        ),
    ] {
        let out = render(rule);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{rule}");
        assert!(err.contains(want), "{rule}: {err}");
    }
    let out = render(r#"{ path = "/srv/*"; verdict = "persist"; }"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// impermanence removed `users.NAME.home` (it deduces the home from users.users.NAME.home
/// and refuses the key): what the module passes on leaves it out, while imperm's own
/// config.toml keeps it.
#[test]
fn users_reach_impermanence_without_home() {
    if !common::nix_available("users_reach_impermanence_without_home") {
        return;
    }
    let users = r#"{ josh = { home = "/srv/josh"; directories = [ ".ssh" ]; files = [ ".x" ]; }; root.directories = [ ".cache" ]; }"#;
    let passed = eval(&format!("(import ./nix/lib.nix).impermanenceUsers {users}"));
    assert_eq!(
        passed,
        serde_json::json!({
            "josh": { "directories": [".ssh"], "files": [".x"] },
            "root": { "directories": [".cache"] }
        })
    );
    let toml = eval(&format!(
        "(import ./nix/lib.nix).hostToml {{ filesystem.type = \"tmpfs\"; template = \"none\"; users = {users}; }}"
    ));
    let (_dir, config) = load(toml.as_str().unwrap());
    assert!(
        config
            .persisted
            .contains(std::path::Path::new("/srv/josh/.ssh")),
        "{toml}"
    );
}

/// config.toml from the final `environment.persistence` (every storage, wherever it was
/// declared), entries as impermanence hands them over: owner and mode only where they
/// differ from impermanence's defaults, a user's home only where it is not the default.
#[test]
fn every_storage_of_the_final_persistence_is_written() {
    if !common::nix_available("every_storage_of_the_final_persistence_is_written") {
        return;
    }
    let storages = r#"(import ./nix/lib.nix).fromPersistence {
      "/persist" = {
        directories = [
          { directory = "/var/lib/a"; user = "root"; group = "root"; mode = "0755"; dirPath = "/var/lib/a"; }
          { directory = "/var/lib/private"; user = "root"; group = "root"; mode = "0700"; }
        ];
        files = [
          { file = "/etc/x"; parentDirectory = { user = "root"; group = "root"; mode = "0755"; }; persistentStoragePath = "/persist"; }
          { file = "/etc/y"; parentDirectory = { user = "root"; group = "root"; mode = "0755"; }; persistentStoragePath = "/state"; }
        ];
        users.josh = {
          directories = [ { directory = ".ssh"; user = "josh"; group = "users"; mode = "0700"; } { directory = "src"; user = "josh"; group = "users"; mode = "0755"; } ];
          files = [ ];
        };
      };
      "/state".directories = [ { directory = "/var/lib/b"; user = "b"; group = "b"; mode = "0750"; } ];
      # Disabled: impermanence mounts none of it, so none of it is persisted.
      "/off" = { enable = false; directories = [ "/var/lib/off" ]; };
    } { josh = { home = "/srv/josh"; group = "users"; }; }"#;
    assert_eq!(
        eval(storages),
        serde_json::json!({
            "/persist": {
                "directories": ["/var/lib/a", {"directory": "/var/lib/private", "mode": "0700"}],
                "files": ["/etc/x", {"file": "/etc/y", "persistentStoragePath": "/state"}],
                "users": {"josh": {
                    "home": "/srv/josh",
                    "directories": [{"directory": ".ssh", "mode": "0700"}, "src"],
                    "files": []
                }}
            },
            "/state": {
                "directories": [{"directory": "/var/lib/b", "group": "b", "mode": "0750", "user": "b"}],
                "files": [],
                "users": {}
            },
            "/off": {"enable": false, "directories": [], "files": [], "users": {}}
        })
    );
    let toml = eval(&format!(
        "(import ./nix/lib.nix).configToml {{ storages = {storages}; }}"
    ));
    let (_dir, config) = load(toml.as_str().unwrap());
    for path in [
        "/var/lib/a",
        "/var/lib/private",
        "/etc/x",
        "/srv/josh/.ssh",
        "/var/lib/b",
    ] {
        assert!(config.persisted.contains(Path::new(path)), "{path}\n{toml}");
    }
    let y = config
        .persisted
        .entries()
        .iter()
        .find(|e| e.path == Path::new("/etc/y"))
        .unwrap();
    assert_eq!(y.storage, Path::new("/state"), "{toml}");
    assert!(
        !config.persisted.contains(Path::new("/var/lib/off")),
        "{toml}"
    );
}

/// The device spellings NixOS takes for `fileSystems.<n>.device`, as the paths udev makes
/// (whose units the reset waits for), or null for one imperm cannot wait for.
#[test]
fn device_spellings_become_the_paths_udev_makes() {
    if !common::nix_available("device_spellings_become_the_paths_udev_makes") {
        return;
    }
    for (fs_type, device, want) in [
        ("btrfs", "/dev/vda2", serde_json::json!(["/dev/vda2"])),
        (
            "btrfs",
            "UUID=1234-abcd",
            serde_json::json!(["/dev/disk/by-uuid/1234-abcd"]),
        ),
        (
            "btrfs",
            "LABEL=nixos",
            serde_json::json!(["/dev/disk/by-label/nixos"]),
        ),
        (
            "btrfs",
            "PARTUUID=aa-bb",
            serde_json::json!(["/dev/disk/by-partuuid/aa-bb"]),
        ),
        (
            "btrfs",
            "PARTLABEL=root",
            serde_json::json!(["/dev/disk/by-partlabel/root"]),
        ),
        (
            "bcachefs",
            "/dev/sda1:/dev/sdb1",
            serde_json::json!(["/dev/sda1", "/dev/sdb1"]),
        ),
        (
            "bcachefs",
            "/dev/disk/by-id/x",
            serde_json::json!(["/dev/disk/by-id/x"]),
        ),
        // A member list is bcachefs's spelling only; a `:` inside one name is fine.
        ("btrfs", "/dev/sda1:/dev/sdb1", serde_json::Value::Null),
        (
            "btrfs",
            "/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
            serde_json::json!(["/dev/disk/by-path/pci-0000:00:1f.2-ata-1"]),
        ),
        (
            "btrfs",
            "LABEL=a:b",
            serde_json::json!(["/dev/disk/by-label/a:b"]),
        ),
        // What udev writes as \xNN in the link's name, and paths that are not normal.
        ("btrfs", "LABEL=a b", serde_json::Value::Null),
        ("btrfs", "LABEL=my/disk", serde_json::Value::Null),
        ("btrfs", "LABEL=café", serde_json::Value::Null),
        ("btrfs", "PARTLABEL=EFI system", serde_json::Value::Null),
        ("btrfs", "/dev/", serde_json::Value::Null),
        ("btrfs", "/dev//sda", serde_json::Value::Null),
        ("btrfs", "/dev/../dev/sda", serde_json::Value::Null),
        ("btrfs", "/dev/disk/by-label/x y", serde_json::Value::Null),
        (
            "bcachefs",
            "/dev/sda1:/dev/../sdb1",
            serde_json::Value::Null,
        ),
        ("bcachefs", "sda1:sdb1", serde_json::Value::Null),
        ("btrfs", "nixos", serde_json::Value::Null),
        ("btrfs", "UUID=", serde_json::Value::Null),
    ] {
        let got = eval(&format!(
            "(import ./nix/lib.nix).devicePaths \"{fs_type}\" \"{device}\""
        ));
        assert_eq!(got, want, "{fs_type} {device}");
    }
}

/// Every persisted path, absolute: users' entries joined to their homes (users.users's, or
/// the home the storage names, or the default).
#[test]
fn persisted_paths_are_absolute_with_their_storage() {
    if !common::nix_available("persisted_paths_are_absolute_with_their_storage") {
        return;
    }
    let got = eval(
        r#"(import ./nix/lib.nix).persistedPaths {
          "/persist" = {
            directories = [ "/var/log" { directory = "/var/lib/private"; mode = "0700"; } ];
            files = [ { file = "/etc/machine-id"; parentDirectory.mode = "0700"; } ];
            users.josh = { directories = [ ".ssh" ]; files = [ ]; };
            users.root = { directories = [ ]; files = [ ".bash_history" ]; };
          };
          "/state" = { directories = [ ]; files = [ ]; users.ann = { home = "/srv/ann"; directories = [ "d" ]; }; };
        } { josh.home = "/home/j"; }"#,
    );
    let want = serde_json::json!([
        { "path": "/var/log", "storage": "/persist", "directory": true, "initrd": false },
        { "path": "/var/lib/private", "storage": "/persist", "directory": true, "initrd": false },
        { "path": "/etc/machine-id", "storage": "/persist", "directory": false, "initrd": false },
        { "path": "/home/j/.ssh", "storage": "/persist", "directory": true, "initrd": false },
        { "path": "/root/.bash_history", "storage": "/persist", "directory": false, "initrd": false },
        { "path": "/srv/ann/d", "storage": "/state", "directory": true, "initrd": false },
    ]);
    assert_eq!(got, want);
}

/// Persisted paths on a filesystem of their own (issue 10, item 9), table-driven: which
/// mount point each is found on, or none.
#[test]
fn persisted_paths_on_another_filesystem_are_found() {
    if !common::nix_available("persisted_paths_on_another_filesystem_are_found") {
        return;
    }
    let fs = r#"[
      { mountPoint = "/"; }
      { mountPoint = "/boot"; neededForBoot = false; }
      { mountPoint = "/boot/efi"; neededForBoot = true; }
      { mountPoint = "/persist"; neededForBoot = true; }
      { mountPoint = "/persist/big"; }
      { mountPoint = "/var/lib/x"; options = [ "bind" ]; }
      { mountPoint = "/srv"; }
    ]"#;
    for (path, want) in [
        ("/boot/keyfile", serde_json::json!(["/boot", false])),
        ("/boot/efi/key", serde_json::json!(["/boot/efi", true])),
        ("/boot", serde_json::json!(["/boot", false])),
        ("/srv/data", serde_json::json!(["/srv", false])),
        ("/bootx/key", serde_json::Value::Null),
        ("/var/lib/x/y", serde_json::Value::Null),
        ("/etc/machine-id", serde_json::Value::Null),
    ] {
        let got = eval(&format!(
            r#"map (o: [ o.mountPoint o.neededForBoot ]) ((import ./nix/lib.nix).offRootPaths [ {{ path = "{path}"; storage = "/persist"; directory = false; }} ] {fs})"#
        ));
        let want = if want.is_null() {
            serde_json::json!([])
        } else {
            serde_json::json!([want])
        };
        assert_eq!(got, want, "{path}");
    }
}

/// Files read before the bind mounts exist (issue 10, item 12): which reads are warned of.
#[test]
fn reads_before_the_bind_mounts_are_warned_of_when_persisted() {
    if !common::nix_available("reads_before_the_bind_mounts_are_warned_of_when_persisted") {
        return;
    }
    let persisted = r#"[
      { path = "/etc/ssh"; storage = "/persist"; directory = true; }
      { path = "/etc/machine-id"; storage = "/state"; directory = false; }
      { path = "/var/lib/k"; storage = "/persist"; directory = false; }
    ]"#;
    for (read, want) in [
        (
            r#"{ path = "/etc/ssh/ssh_host_ed25519_key"; reader = "agenix"; }"#,
            Some(
                "\"/etc/ssh/ssh_host_ed25519_key\" is read by agenix before the bind mounts from /persist exist: point it at /persist/etc/ssh/ssh_host_ed25519_key (the storage is mounted in the initrd), or keep the file with preservation's inInitrd = true",
            ),
        ),
        (
            r#"{ path = "/etc/machine-id"; reader = "r"; fix = "do this"; }"#,
            Some(
                "\"/etc/machine-id\" is read by r before the bind mounts from /state exist: do this",
            ),
        ),
        (r#"{ path = "/etc/sshd/k"; reader = "r"; }"#, None),
        (r#"{ path = "/var/lib/k/below"; reader = "r"; }"#, None),
        (r#"{ path = "/persist/etc/ssh/k"; reader = "r"; }"#, None),
    ] {
        let got = eval(&format!(
            "(import ./nix/lib.nix).earlyBootProblems {persisted} [ {read} ]"
        ));
        let want = match want {
            Some(w) => serde_json::json!([w]),
            None => serde_json::json!([]),
        };
        assert_eq!(got, want, "{read}");
    }
}

/// The reset's ExecStart as systemd.service(5) reads it (not a shell): every word
/// JSON-quoted (systemd C-unescapes inside double quotes), `%` and `$` doubled, values
/// after `=` so one starting with `-` is never an option.
#[test]
fn the_reset_command_is_quoted_for_systemd() {
    if !common::nix_available("the_reset_command_is_quoted_for_systemd") {
        return;
    }
    for (word, want) in [
        ("@root", r#""@root""#),
        ("@root%n", r#""@root%%n""#),
        ("${HOME}", r#""$${HOME}""#),
        ("it's \"x\"", r#""it's \"x\"""#),
        ("a\\x20b", r#""a\\x20b""#),
        ("new\nline", r#""new\nline""#),
        ("ü", "\"ü\""),
    ] {
        let got = eval(&format!(
            "(import ./nix/lib.nix).systemdArg {}",
            serde_json::to_string(word).unwrap().replace("${", "\\${")
        ));
        assert_eq!(got, want, "{word:?}");
    }
    let got = eval(
        r#"(import ./nix/lib.nix).resetCommand "/nix/store/x-imperm" { type = "btrfs"; device = "LABEL=nixos"; rootSubvolume = "-x"; snapshotDir = "@s"; blankSnapshot = null; }"#,
    );
    assert_eq!(
        got,
        r#""/nix/store/x-imperm/bin/imperm" "reset" "--fs=btrfs" "--device=/dev/disk/by-label/nixos" "--root-subvolume=-x" "--snapshot-dir=@s""#
    );
}

/// fileSystems."/" must be what the reset resets, and the storage a filesystem of its own
/// that the initrd mounts; the subvolume settings must fit together (issue 10's trial).
#[test]
fn the_root_and_the_storage_are_checked_against_file_systems() {
    if !common::nix_available("the_root_and_the_storage_are_checked_against_file_systems") {
        return;
    }
    let root = |fs: &str, root: &str| -> usize {
        eval(&format!(
            "builtins.length ((import ./nix/lib.nix).rootProblems {fs} {root})"
        ))
        .as_u64()
        .unwrap() as usize
    };
    let btrfs = r#"{ type = "btrfs"; rootSubvolume = "@root"; }"#;
    for (fs, declared, problems) in [
        (
            btrfs,
            r#"{ fsType = "btrfs"; options = [ "subvol=@root" ]; }"#,
            0,
        ),
        (
            btrfs,
            r#"{ fsType = "btrfs"; options = [ "compress=zstd" "subvol=/@root" ]; }"#,
            0,
        ),
        (
            btrfs,
            r#"{ fsType = "btrfs"; options = [ "subvol=@root,compress=zstd" ]; }"#,
            0,
        ),
        (
            btrfs,
            r#"{ fsType = "btrfs"; options = [ "noatime,subvol=@root/" ]; }"#,
            0,
        ),
        (
            btrfs,
            r#"{ fsType = "btrfs"; options = [ "subvol=root" ]; }"#,
            1,
        ),
        (
            btrfs,
            r#"{ fsType = "btrfs"; options = [ "defaults" ]; }"#,
            1,
        ),
        (
            btrfs,
            r#"{ fsType = "ext4"; options = [ "subvol=@root" ]; }"#,
            1,
        ),
        (btrfs, "null", 1),
        (
            r#"{ type = "bcachefs"; rootSubvolume = "@root"; }"#,
            r#"{ fsType = "bcachefs"; options = [ "X-mount.subdir=@root" ]; }"#,
            0,
        ),
        (r#"{ type = "tmpfs"; }"#, r#"{ fsType = "tmpfs"; }"#, 0),
        (r#"{ type = "tmpfs"; }"#, r#"{ fsType = "btrfs"; }"#, 1),
    ] {
        assert_eq!(root(fs, declared), problems, "{fs} {declared}");
    }
    let layout = |fs: &str| eval(&format!("(import ./nix/lib.nix).layoutProblem {fs}"));
    assert!(layout(r#"{ rootSubvolume = "/@root"; snapshotDir = "@snapshots"; }"#).is_null());
    for bad in [
        r#"{ rootSubvolume = "@root"; snapshotDir = "@root"; }"#,
        r#"{ rootSubvolume = "@root"; snapshotDir = "@root/s"; }"#,
        r#"{ rootSubvolume = "@s/r"; snapshotDir = "@s"; }"#,
        r#"{ rootSubvolume = ".."; snapshotDir = "@s"; }"#,
        r#"{ rootSubvolume = "a//b"; snapshotDir = "@s"; }"#,
        r#"{ rootSubvolume = "@root"; snapshotDir = "@s"; blankSnapshot = "@root/b"; }"#,
    ] {
        assert!(layout(bad).is_string(), "{bad}");
    }
    let storage = |st: &str| -> Vec<String> {
        serde_json::from_value(eval(&format!(
            r#"(import ./nix/lib.nix).storageProblems {{ storages = [ "{st}" ]; rootSubvolume = "@root"; filesystems = [
              {{ mountPoint = "/"; device = "/dev/a"; options = [ "subvol=@root" ]; }}
              {{ mountPoint = "/persist"; neededForBoot = true; }}
              {{ mountPoint = "/data"; }}
              {{ mountPoint = "/nix"; }}
              {{ mountPoint = "/inroot"; device = "/dev/a"; options = [ "noatime,subvol=/@root/p" ]; neededForBoot = true; }}
              {{ mountPoint = "/beside"; device = "/dev/a"; options = [ "subvol=@rootx" ]; neededForBoot = true; }}
              {{ mountPoint = "/bound"; device = "/persist/b"; options = [ "bind" ]; neededForBoot = true; }}
              {{ mountPoint = "/boundroot"; device = "/srv/b"; options = [ "bind" ]; neededForBoot = true; }}
            ]; }}"#
        )))
        .unwrap()
    };
    assert!(storage("/persist").is_empty());
    assert!(storage("/persist/").is_empty());
    assert!(storage("/persist/sub").is_empty());
    assert!(
        storage("/nix/persist").is_empty(),
        "/nix is mounted in the initrd"
    );
    assert!(storage("/state")[0].contains("lies on the root filesystem"));
    assert!(storage("/data/p")[0].contains("fileSystems.\"/data\".neededForBoot"));
    assert!(storage("persist")[0].contains("not an absolute path"));
    assert!(storage("/inroot")[0].contains("inside the root subvolume"));
    assert!(storage("/beside").is_empty(), "@rootx is beside @root");
    assert!(storage("/bound/x").is_empty(), "bound from /persist");
    assert!(storage("/boundroot")[0].contains("lies on the root filesystem"));
}

/// config.toml carries what only the evaluation knows, the storages on a filesystem the
/// initrd mounts, for `imperm status`: the storages `storageProblems` passes, and no
/// `[module]` at all when nothing says.
#[test]
fn storages_needed_for_boot_are_written_for_status() {
    if !common::nix_available("storages_needed_for_boot_are_written_for_status") {
        return;
    }
    let needed = eval(
        r#"(import ./nix/lib.nix).neededForBootStorages { storages = [ "/persist" "/state" "/data/p" "/nix/persist" "/inroot" ]; rootSubvolume = "@root"; filesystems = [
          { mountPoint = "/"; device = "/dev/a"; options = [ "subvol=@root" ]; }
          { mountPoint = "/persist"; neededForBoot = true; }
          { mountPoint = "/data"; }
          { mountPoint = "/nix"; }
          { mountPoint = "/inroot"; device = "/dev/a"; options = [ "subvol=@root/p" ]; neededForBoot = true; }
        ]; }"#,
    );
    assert_eq!(needed, serde_json::json!(["/persist", "/nix/persist"]));
    let toml = eval(
        r#"(import ./nix/lib.nix).configToml { storage = "/persist"; directories = [ "/var/lib/x" ]; neededForBoot = [ "/persist" ]; }"#,
    );
    let (_dir, config) = load(toml.as_str().unwrap());
    assert_eq!(
        config.needed_for_boot,
        Some(vec![PathBuf::from("/persist")])
    );
    let toml = eval(r#"(import ./nix/lib.nix).configToml { storage = "/persist"; }"#);
    assert!(!toml.as_str().unwrap().contains("[module]"), "{toml}");
    let (_dir, config) = load(toml.as_str().unwrap());
    assert_eq!(config.needed_for_boot, None);
}

/// preservation's preserveAt, after its own processing, as config.toml's storages.
#[test]
fn preservation_storages_become_system_entries() {
    if !common::nix_available("preservation_storages_become_system_entries") {
        return;
    }
    let got = eval(
        r#"(import ./nix/lib.nix).fromPreservation {
          "/persist" = {
            persistentStoragePath = "/persist";
            directories = [ { directory = "/var/lib/a"; user = "root"; group = "root"; mode = "0755"; how = "bindmount"; } { directory = "/var/lib/b"; user = "b"; group = "root"; mode = "0750"; } ];
            files = [ { file = "/etc/machine-id"; inInitrd = true; } ];
            users.josh = {
              directories = [
                { directory = "/home/josh/.ssh"; user = "josh"; group = "users"; mode = "0700"; }
                # What preservation adds for a user entry's parents: made, never mounted.
                { directory = "/home/josh/.local"; how = "_intermediate"; user = "josh"; group = "users"; mode = "0755"; }
              ];
              files = [ { file = "/home/josh/.x"; } ];
            };
          };
        }"#,
    );
    assert_eq!(
        got,
        serde_json::json!({ "/persist": {
            "directories": ["/var/lib/a", {"directory": "/var/lib/b", "mode": "0750", "user": "b"},
                            {"directory": "/home/josh/.ssh", "group": "users", "mode": "0700", "user": "josh"}],
            "files": [{"file": "/etc/machine-id", "inInitrd": true}, "/home/josh/.x"],
            "users": {}
        }})
    );
}
