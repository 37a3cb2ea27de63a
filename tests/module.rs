//! The NixOS module evaluated for real: every example host inside a configuration made of
//! the real nixpkgs `lib`, the real nix-community/impermanence module, imperm's module and
//! the NixOS option declarations of `tests/module/nixos-options.nix` (tests/module/eval.nix).
//!
//! Those two repositories are never part of this one. These tests need them checked out
//! and named by `IMPERM_NIXPKGS_LIB` and `IMPERM_IMPERMANENCE`: `tests/module/run` runs
//! them then, and says it skips them otherwise; a plain `cargo test` lists them as ignored.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

const HOSTS: [&str; 5] = ["h001", "h003", "juni", "l001", "o001"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tree(var: &str) -> PathBuf {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{var} is not set: run these through tests/module/run"));
    assert!(dir.is_dir(), "{var}={} is not a directory", dir.display());
    dir
}

/// Nix's `eval.nix` for `host` (a Nix expression for a module) with `extra` on top; the
/// result, or Nix's error text.
fn evaluate(host: &str, extra: &str) -> Result<Value, String> {
    let expr = format!(
        "import ./tests/module/eval.nix {{ nixpkgsLib = {}; impermanence = {}; host = {host}; extra = {extra}; }}",
        tree("IMPERM_NIXPKGS_LIB").display(),
        tree("IMPERM_IMPERMANENCE").display(),
    );
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .current_dir(repo())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

fn example(host: &str) -> String {
    format!("import ./examples/hosts/{host}.nix")
}

/// imperm's verdict on a config.toml the module wrote: `lint` with it, on an empty tree.
fn lint(toml: &str) -> (Option<i32>, String) {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("config.toml");
    fs::write(&file, toml).unwrap();
    fs::create_dir(dir.path().join("root")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--config")
        .arg(&file)
        .arg("lint")
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every example host evaluates as it stands, with no failed assertion, and gives a
/// config.toml imperm loads and finds clean, the reset unit in the initrd as the seed's
/// boot needs it (before and required by sysroot.mount, after the device), the baseline
/// early in stage 2 and the gc timer; what impermanence is given is what config.toml says.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn every_example_host_evaluates_to_a_clean_configuration() {
    for host in HOSTS {
        let v = evaluate(&example(host), "{ }").unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(v["failedAssertions"], serde_json::json!([]), "{host}");
        let toml = v["configToml"].as_str().unwrap();
        let (code, text) = lint(toml);
        assert_eq!(code, Some(0), "{host}: {text}\n{toml}");
        assert_eq!(
            v["baseline"]["wantedBy"],
            serde_json::json!(["sysinit.target"]),
            "{host}"
        );
        let tmpfs = toml.contains("type = \"tmpfs\"");
        if tmpfs {
            assert_eq!(v["reset"], Value::Null, "{host}");
            continue;
        }
        let reset = &v["reset"];
        assert_eq!(
            reset["before"],
            serde_json::json!(["sysroot.mount"]),
            "{host}"
        );
        assert_eq!(
            reset["requiredBy"],
            serde_json::json!(["sysroot.mount"]),
            "{host}"
        );
        let exec = reset["serviceConfig"]["ExecStart"].as_str().unwrap();
        assert!(exec.contains("/bin/imperm reset --fs "), "{host}: {exec}");
        let device_unit = reset["requires"][0].as_str().unwrap();
        assert!(device_unit.ends_with(".device"), "{host}: {device_unit}");
        assert!(
            reset["after"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == device_unit),
            "{host}"
        );
        assert_eq!(v["gcTimer"]["OnCalendar"], "daily", "{host}");
        // Every path impermanence mounts is one config.toml declares.
        for (storage, p) in v["persistence"].as_object().unwrap() {
            for path in p["directories"]
                .as_array()
                .unwrap()
                .iter()
                .chain(p["files"].as_array().unwrap())
            {
                let path = path.as_str().unwrap();
                assert!(
                    toml.contains(&format!("\"{path}\""))
                        || toml.contains(&format!("\"{}\"", path.rsplit('/').next().unwrap())),
                    "{host}: {storage}: {path} is mounted but not in config.toml"
                );
            }
        }
    }
}

/// Issue 10, item 5: a policy that keeps nothing is an assertion at evaluation.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn a_retention_policy_that_keeps_nothing_fails_an_assertion() {
    let v = evaluate(
        &example("h001"),
        "{ services.imperm.retention = { keepLast = 0; keepWeekly = 0; keepMonthly = 0; }; }",
    )
    .unwrap();
    let failed = v["failedAssertions"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{v}");
    assert!(failed[0].as_str().unwrap().contains("keeps nothing"), "{v}");
}

/// Issue 10, item 6: a user's `home` goes to imperm's config.toml, never to impermanence,
/// which has removed the option and takes the home from users.users.NAME.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn a_users_home_is_not_passed_to_impermanence() {
    let v = evaluate(
        &example("juni"),
        "{ lib, ... }: { services.imperm.users.josh.home = \"/srv/josh\"; users.users.josh.home = lib.mkForce \"/srv/josh\"; }",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["failedAssertions"], serde_json::json!([]));
    let toml = v["configToml"].as_str().unwrap();
    assert!(toml.contains("home = \"/srv/josh\""), "{toml}");
}

/// Issue 10, item 1: config.toml holds every storage of the final
/// `environment.persistence`, also what is declared outside `services.imperm` (a list of
/// the host's own, a second storage, its users), so imperm never calls it state a wipe loses.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn persistence_declared_elsewhere_is_in_config_toml() {
    let v = evaluate(
        &example("juni"),
        r#"{
          environment.persistence."/persist".directories = [ "/var/lib/extra" { directory = "/var/lib/private"; mode = "0700"; } ];
          environment.persistence."/state" = {
            directories = [ "/var/lib/state-only" ];
            files = [ "/etc/adjtime" ];
            users.josh.files = [ ".x" ];
          };
        }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["failedAssertions"], serde_json::json!([]));
    let toml = v["configToml"].as_str().unwrap();
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("config.toml");
    fs::write(&file, toml).unwrap();
    fs::create_dir(dir.path().join("root")).unwrap();
    let config = imperm::config::Config::load(&imperm::config::LoadOptions {
        root: dir.path().join("root"),
        config: Some(file),
        persistence_json: None,
    })
    .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    for path in [
        "/var/lib/extra",
        "/var/lib/private",
        "/var/lib/state-only",
        "/etc/adjtime",
        "/home/josh/.x",
        "/home/josh/.gnupg",
        "/var/log",
    ] {
        assert!(config.persisted.contains(Path::new(path)), "{path}\n{toml}");
    }
    let storages = config.persisted.storages();
    assert!(storages.contains(&Path::new("/state")), "{storages:?}");
    assert!(toml.contains("mode = \"0700\""), "{toml}");
    let (code, text) = lint(toml);
    assert_eq!(code, Some(0), "{text}\n{toml}");
}

/// Issue 10, item 10: a `check.rules` entry without a verdict, or with a key imperm does
/// not read, is an error naming the option.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn check_rules_are_checked_by_the_option_type() {
    for (rule, want) in [
        (
            "{ path = \"/srv/*\"; }",
            "services.imperm.check.rules.\"[definition 1-entry 1]\".verdict",
        ),
        (
            "{ path = \"/srv/*\"; verdict = \"persist\"; verdcit = 1; }",
            "verdcit",
        ),
        ("{ path = \"/srv/*\"; verdict = \"keep\"; }", "keep"),
    ] {
        let err = evaluate(
            &example("h001"),
            &format!("{{ services.imperm.check.rules = [ {rule} ]; }}"),
        )
        .expect_err(rule);
        assert!(err.contains(want), "{rule}: {err}");
    }
}

/// The tests above are only as good as the declarations they run against: an option
/// NixOS does not have is an error there, as on a host.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn an_option_nixos_does_not_have_is_an_error() {
    let err = evaluate(&example("h001"), "{ boot.initrd.nonsense = true; }").unwrap_err();
    assert!(
        err.contains("The option `boot.initrd.nonsense' does not exist"),
        "{err}"
    );
    // And the real impermanence is what runs: its removed options fail an assertion.
    let v = evaluate(
        &example("h001"),
        "{ environment.persistence.\"/persist\".users.josh.home = \"/home/josh\"; users.users.josh.isNormalUser = true; }",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let failed = v["failedAssertions"].to_string();
    assert!(
        failed.contains("`home'") && failed.contains("no longer has any effect"),
        "{failed}"
    );
}

/// Issue 11, item 1: imperm issues bcachefs's subvolume ioctls itself, so no unit of its
/// has the bcachefs tool in its PATH, and the initrd gets the tool from nixpkgs' bcachefs
/// module alone (for its own unlock), never a second definition from imperm's (issue 10,
/// item 3: that conflicted with a host's boot.bcachefs.package).
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn on_bcachefs_imperm_puts_no_tool_in_its_units_or_the_initrd() {
    let custom = r#"{ boot.bcachefs.package = { type = "derivation"; name = "bcachefs-custom"; outPath = "/nix/store/00000000000000000000000000000000-bcachefs-custom"; }; }"#;
    let v = evaluate(&example("juni"), custom).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        v["initrdExtraBin"]["bcachefs"],
        "/nix/store/00000000000000000000000000000000-bcachefs-custom/bin/bcachefs"
    );
    assert!(v["initrdExtraBin"]["imperm"].is_string(), "{v}");
    for unit in ["baseline", "gc"] {
        assert_eq!(v[unit]["path"], serde_json::json!([]), "{unit}");
    }
    assert!(
        v["reset"]["serviceConfig"]["ExecStart"]
            .as_str()
            .is_some_and(|s| s.contains(" reset --fs bcachefs ")),
        "{v}"
    );
    let v = evaluate(&example("h001"), "{ }").unwrap();
    assert_eq!(v["gc"]["path"], serde_json::json!([]));
    assert!(v["initrdExtraBin"].get("bcachefs").is_none(), "{v}");
}

/// Issue 10, item 4: the reset waits for the unit systemd really creates for the device
/// (and mounts a path the kernel takes); a spelling it cannot map is an assertion.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn the_reset_waits_for_the_device_units_systemd_creates() {
    for (host, device, units, path) in [
        (
            "h001",
            "UUID=1234-abcd",
            serde_json::json!(["dev-disk-by\\x2duuid-1234\\x2dabcd.device"]),
            "/dev/disk/by-uuid/1234-abcd",
        ),
        (
            "h001",
            "LABEL=nixos",
            serde_json::json!(["dev-disk-by\\x2dlabel-nixos.device"]),
            "/dev/disk/by-label/nixos",
        ),
        (
            "juni",
            "/dev/sda1:/dev/sdb1",
            serde_json::json!(["dev-sda1.device", "dev-sdb1.device"]),
            "/dev/sda1:/dev/sdb1",
        ),
    ] {
        let v = evaluate(
            &example(host),
            &format!("{{ lib, ... }}: {{ services.imperm.filesystem.device = lib.mkForce \"{device}\"; }}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["failedAssertions"], serde_json::json!([]), "{device}");
        assert_eq!(v["reset"]["requires"], units, "{device}");
        let exec = v["reset"]["serviceConfig"]["ExecStart"].as_str().unwrap();
        assert!(
            exec.contains(&format!("--device {path} ")),
            "{device}: {exec}"
        );
        let toml = v["configToml"].as_str().unwrap();
        assert!(
            toml.contains(&format!("device = \"{path}\"")),
            "{device}: {toml}"
        );
    }
    let v = evaluate(
        &example("h001"),
        "{ lib, ... }: { services.imperm.filesystem.device = lib.mkForce \"nixos\"; }",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        v["failedAssertions"]
            .to_string()
            .contains("imperm waits for the device's unit"),
        "{v}"
    );
}

/// Issue 10, item 11: the reset runs only once a resume from hibernation was tried, never
/// before it (impermanence #250: resetting first corrupted resumed systems).
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn the_reset_comes_after_the_resume_attempt() {
    for host in ["h001", "h003", "juni", "o001"] {
        let v = evaluate(&example(host), "{ }").unwrap();
        let after = v["reset"]["after"].as_array().unwrap();
        assert!(
            after
                .iter()
                .any(|u| u == "systemd-hibernate-resume.service"),
            "{host}: {after:?}"
        );
        assert_eq!(v["reset"]["before"], serde_json::json!(["sysroot.mount"]));
    }
}

/// Issue 10, item 10: `tmpfsRoot.enable` on a host whose root is not a tmpfs is the
/// module's own assertion, not a clash of `fileSystems."/".fsType` definitions.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn a_tmpfs_root_on_a_btrfs_host_is_the_modules_assertion() {
    let v = evaluate(
        &example("h001"),
        "{ services.imperm.tmpfsRoot.enable = true; }",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        v["failedAssertions"]
            .to_string()
            .contains("tmpfsRoot needs services.imperm.filesystem.type"),
        "{v}"
    );
}

/// Issue 10, item 7: the README's `nix eval --json … --apply` recipe, taken from the
/// README itself, evaluates against the real impermanence and gives JSON imperm loads to
/// the same persisted set as the module's config.toml.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn the_readmes_persistence_json_recipe_works() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("config.environment.persistence --apply '")
        .expect("the recipe is in the README")
        + "config.environment.persistence --apply '".len();
    let apply = &readme[start..start + readme[start..].find("' | imperm").unwrap()];
    let expr = format!(
        "import ./tests/module/eval.nix {{ nixpkgsLib = {}; impermanence = {}; host = {}; extra = {}; apply = ({apply}); }}",
        tree("IMPERM_NIXPKGS_LIB").display(),
        tree("IMPERM_IMPERMANENCE").display(),
        example("juni"),
        r#"{ environment.persistence."/state".files = [ "/etc/adjtime" ]; }"#,
    );
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = TempDir::new().unwrap();
    let json = dir.path().join("persistence.json");
    fs::write(&json, v["applied"].to_string()).unwrap();
    let toml = dir.path().join("config.toml");
    fs::write(&toml, v["configToml"].as_str().unwrap()).unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let load = |persistence_json: Option<PathBuf>, config: Option<PathBuf>| {
        let c = imperm::config::Config::load(&imperm::config::LoadOptions {
            root: root.clone(),
            config,
            persistence_json,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let mut paths: Vec<PathBuf> = c
            .persisted
            .entries()
            .iter()
            .map(|e| e.path.clone())
            .collect();
        paths.sort();
        paths
    };
    let from_json = load(Some(json), None);
    assert!(
        from_json.contains(&PathBuf::from("/home/josh/.gnupg")),
        "{from_json:?}"
    );
    assert!(
        from_json.contains(&PathBuf::from("/etc/adjtime")),
        "{from_json:?}"
    );
    assert_eq!(from_json, load(None, Some(toml)));
}

/// Issue 10, item 10: the package's source leaves out cargo's target/ (hundreds of MB)
/// and keeps what the build needs (bench/ too: Cargo.toml names an example there).
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn the_package_source_leaves_out_target() {
    let v = evaluate(&example("h001"), "{ }").unwrap();
    assert_eq!(
        v["sourceKeeps"],
        serde_json::json!({
            "target": false, ".git": false,
            "src": true, "nix": true, "bench": true, "tests/fixtures": true
        })
    );
}
