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
    nix_eval(&format!(
        "import ./tests/module/eval.nix {{ nixpkgsLib = {}; impermanence = {}; host = {host}; extra = {extra}; }}",
        tree("IMPERM_NIXPKGS_LIB").display(),
        tree("IMPERM_IMPERMANENCE").display(),
    ))
}

/// A Nix expression evaluated in the repository, as JSON, or Nix's error text.
fn nix_eval(expr: &str) -> Result<Value, String> {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", expr])
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

/// A config.toml the module wrote, as imperm loads it.
fn load_toml(toml: &str) -> imperm::config::Config {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("config.toml");
    fs::write(&file, toml).unwrap();
    fs::create_dir(dir.path().join("root")).unwrap();
    imperm::config::Config::load(&imperm::config::LoadOptions {
        root: dir.path().join("root"),
        config: Some(file),
        persistence_json: None,
    })
    .unwrap_or_else(|e| panic!("{e}\n{toml}"))
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
        assert_complete(host, &v);
    }
}

/// One host per item of issue 10 that needed a special case, evaluated to the whole of
/// what a system build would use, as the example hosts are.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn every_special_case_host_evaluates_to_a_clean_configuration() {
    let secrets = "imports = [ ./tests/module/secrets-options.nix ];";
    for (item, host, extra) in [
        (
            "1: persistence declared outside services.imperm, a second storage",
            "juni",
            r#"{ environment.persistence."/persist".directories = [ "/var/lib/extra" ]; environment.persistence."/state" = { directories = [ "/var/lib/s" ]; users.josh.files = [ ".x" ]; }; fileSystems."/state".neededForBoot = true; }"#.to_string(),
        ),
        (
            "2, 3: bcachefs with its own package",
            "juni",
            r#"{ boot.bcachefs.package = { type = "derivation"; name = "bcachefs-custom"; outPath = "/nix/store/00000000000000000000000000000000-bcachefs-custom"; }; }"#.to_string(),
        ),
        ("4: a UUID= device", "h001", r#"{ lib, ... }: { services.imperm.filesystem.device = lib.mkForce "UUID=1234-abcd"; fileSystems."/".device = lib.mkForce "/dev/disk/by-uuid/1234-abcd"; }"#.to_string()),
        ("4: a bcachefs multi-device", "juni", r#"{ lib, ... }: { services.imperm.filesystem.device = lib.mkForce "/dev/sda1:/dev/sdb1"; fileSystems."/".device = lib.mkForce "/dev/sda1:/dev/sdb1"; }"#.to_string()),
        ("5: a policy that keeps only the last", "h001", "{ services.imperm.retention = { keepLast = 1; keepWeekly = 0; keepMonthly = 0; }; }".to_string()),
        ("6: a user's home", "juni", r#"{ lib, ... }: { services.imperm.users.josh.home = "/srv/josh"; users.users.josh.home = lib.mkForce "/srv/josh"; }"#.to_string()),
        ("10: check rules", "h001", r#"{ services.imperm.check.rules = [ { path = "/srv/*"; verdict = "persist"; } ]; }"#.to_string()),
        (
            "12: sops-nix pointed at the storage",
            "l001",
            format!(r#"{{ {secrets} config = {{ sops.secrets.pw.neededForUsers = true; sops.gnupg.sshKeyPaths = [ ]; sops.age.sshKeyPaths = [ "/persist/etc/ssh/ssh_host_ed25519_key" ]; }}; }}"#),
        ),
    ] {
        let v = evaluate(&example(host), &extra).unwrap_or_else(|e| panic!("{item}: {e}"));
        assert_complete(item, &v);
    }
    // preservation mounts too: what it mounts is in config.toml as well.
    match std::env::var_os("IMPERM_PRESERVATION") {
        Some(p) => {
            let extra = format!(
                r#"{{ imports = [ {}/module.nix ]; preservation.enable = true; preservation.preserveAt."/persist".directories = [ "/var/lib/pres" {{ directory = "/var/lib/pres2"; mode = "0700"; }} ]; }}"#,
                Path::new(&p).display()
            );
            let v = evaluate(&example("juni"), &extra).unwrap_or_else(|e| panic!("{e}"));
            assert_complete("preservation beside impermanence", &v);
        }
        None => {
            eprintln!("IMPERM_PRESERVATION is not set: preservation's mounts were not evaluated")
        }
    }
}

/// What every configuration that should build must evaluate to: no failed assertion and no
/// warning; a config.toml imperm loads and finds clean; the reset unit in the initrd as
/// the seed's boot needs it (before and required by sysroot.mount, after the device); the
/// baseline early in stage 2 and the gc timer; and every path impermanence is given is one
/// config.toml declares.
fn assert_complete(label: &str, v: &Value) {
    assert_eq!(v["failedAssertions"], serde_json::json!([]), "{label}");
    assert_eq!(v["warnings"], serde_json::json!([]), "{label}");
    let toml = v["configToml"].as_str().unwrap();
    let (code, text) = lint(toml);
    assert_eq!(code, Some(0), "{label}: {text}\n{toml}");
    assert_eq!(
        v["baseline"]["wantedBy"],
        serde_json::json!(["sysinit.target"]),
        "{label}"
    );
    // What impermanence really mounts (its mount units and files) is exactly what
    // config.toml declares persisted, each from the same storage: a path mounted but not
    // declared would be called state a wipe loses; one declared but not mounted would be
    // called kept while every reset wipes it.
    let config = load_toml(toml);
    // The module evaluated, so every storage passed its assertions: `imperm status` is
    // told each is on a filesystem the initrd mounts.
    let storages: Vec<PathBuf> = config
        .persisted
        .storages()
        .into_iter()
        .map(Path::to_path_buf)
        .collect();
    let mut needed = config.needed_for_boot.clone().unwrap_or_default();
    needed.sort();
    assert_eq!(
        needed, storages,
        "{label}: [module] needed_for_boot\n{toml}"
    );
    let mut mounted: Vec<(String, String)> = v["mounted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let path = m["path"].as_str().unwrap();
            let what = m["what"].as_str().unwrap();
            let storage = what
                .strip_suffix(path)
                .unwrap_or_else(|| panic!("{label}: {m}"));
            (path.to_string(), storage.to_string())
        })
        .collect();
    mounted.sort();
    mounted.dedup();
    let mut declared: Vec<(String, String)> = config
        .persisted
        .entries()
        .iter()
        .map(|e| {
            (
                e.path.to_str().unwrap().to_string(),
                e.storage.to_str().unwrap().to_string(),
            )
        })
        .collect();
    declared.sort();
    declared.dedup();
    assert_eq!(mounted, declared, "{label}: mounted vs config.toml\n{toml}");
    if toml.contains("type = \"tmpfs\"") {
        assert_eq!(v["reset"], Value::Null, "{label}");
        return;
    }
    let reset = &v["reset"];
    assert_eq!(
        reset["before"],
        serde_json::json!(["sysroot.mount"]),
        "{label}"
    );
    assert_eq!(
        reset["requiredBy"],
        serde_json::json!(["sysroot.mount"]),
        "{label}"
    );
    let exec = reset["serviceConfig"]["ExecStart"].as_str().unwrap();
    assert!(
        exec.contains("/bin/imperm\" \"reset\" \"--fs="),
        "{label}: {exec}"
    );
    let after = reset["after"].as_array().unwrap();
    let requires = reset["requires"].as_array().unwrap();
    assert!(!requires.is_empty(), "{label}");
    for unit in requires {
        assert!(
            unit.as_str().unwrap().ends_with(".device"),
            "{label}: {unit}"
        );
        assert!(after.contains(unit), "{label}: {unit}");
    }
    assert!(
        after
            .iter()
            .any(|a| a == "systemd-hibernate-resume.service"),
        "{label}"
    );
    assert_eq!(v["gcTimer"]["OnCalendar"], "daily", "{label}");
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
          fileSystems."/state" = { device = "/dev/disk/by-label/state"; fsType = "ext4"; neededForBoot = true; };
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
    let config = load_toml(toml);
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
            .is_some_and(|s| s.contains("\" \"reset\" \"--fs=bcachefs\" ")),
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
            exec.contains(&format!("\"--device={path}\" ")),
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
    let v = nix_eval(&expr).unwrap_or_else(|e| panic!("{e}"));
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

/// Issue 10, item 9: the seed's router persisted its LUKS key at /boot/keyfile_nvme0n1p1,
/// with /boot a separate vfat partition. The module says why that is wrong and what to do
/// (impermanence alone fails with a bare neededForBoot assertion); the example keeps the
/// key in /persist and lets the initrd carry it.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn a_key_on_a_separate_boot_is_not_persisted_but_kept_in_the_storage() {
    let h003 = evaluate(&example("h003"), "{ }").unwrap();
    assert_eq!(h003["fileSystems"]["/boot"]["fsType"], "vfat");
    let source = h003["initrdSecrets"]["/keyfile_nvme0n1p1"]
        .as_str()
        .unwrap();
    assert!(source.starts_with("/persist/"), "{source}");
    assert!(!h003["configToml"].as_str().unwrap().contains("keyfile"));

    let seeds = r#"{ services.imperm.files = [ "/boot/keyfile_nvme0n1p1" ]; }"#;
    let v = evaluate(&example("h003"), seeds).unwrap();
    let failed = v["failedAssertions"].as_array().unwrap();
    let ours = failed
        .iter()
        .filter_map(|m| m.as_str())
        .find(|m| {
            m.starts_with("\"/boot/keyfile_nvme0n1p1\" is persisted in /persist but lives on /boot")
        })
        .unwrap_or_else(|| panic!("{failed:?}"));
    assert!(ours.contains("the reset never wipes it"), "{ours}");
    assert!(ours.contains("can live in /persist instead"), "{ours}");

    // With /boot in the initrd, impermanence is satisfied: a warning remains.
    let needed = r#"{ services.imperm.files = [ "/boot/keyfile_nvme0n1p1" ]; fileSystems."/boot".neededForBoot = true; }"#;
    let v = evaluate(&example("h003"), needed).unwrap();
    assert_eq!(v["failedAssertions"], serde_json::json!([]));
    assert_eq!(
        v["warnings"].as_array().unwrap().len(),
        1,
        "{}",
        v["warnings"]
    );
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("lives on /boot")
    );
}

/// Issue 10, item 12: a persisted file read before the bind mounts exist is warned of at
/// evaluation, written to config.toml, and `imperm lint` says the same on the host.
/// sops-nix and agenix are stand-in option declarations (tests/module/secrets-options.nix).
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn files_read_before_the_bind_mounts_exist_are_warned_of_and_linted() {
    let with = |config: &str| {
        format!("{{ imports = [ ./tests/module/secrets-options.nix ]; config = {config}; }}")
    };
    let key = "/etc/ssh/ssh_host_ed25519_key";
    let cases = [
        // (configuration, the warning's start or none, its advice)
        // sops-nix's defaults read both host keys (age: ed25519, gnupg: RSA).
        (
            format!(r#"{{ sops.secrets.rootpw.neededForUsers = true; sops.gnupg.sshKeyPaths = [ ]; sops.age.sshKeyPaths = [ "{key}" ]; }}"#),
            Some(format!("\"{key}\" is read by sops-nix (secrets neededForUsers")),
            "point sops.age.sshKeyPaths and sops.gnupg.sshKeyPaths".to_string(),
        ),
        (
            r#"{ sops.secrets.rootpw.neededForUsers = true; sops.age.sshKeyPaths = [ ]; sops.gnupg.sshKeyPaths = [ ]; sops.age.keyFile = "/var/lib/sops-nix/key.txt"; services.imperm.directories = [ "/var/lib/sops-nix" ]; }"#.to_string(),
            Some("\"/var/lib/sops-nix/key.txt\" is read by sops-nix (sops.age.keyFile".to_string()),
            "point sops.age.keyFile at the storage's copy".to_string(),
        ),
        (
            r#"{ age.secrets.pw.file = "/dev/null"; age.identityPaths = [ "/etc/ssh/ssh_host_rsa_key" ]; }"#.to_string(),
            Some("\"/etc/ssh/ssh_host_rsa_key\" is read by agenix".to_string()),
            "point it at /persist/etc/ssh/ssh_host_rsa_key".to_string(),
        ),
        (
            r#"{ systemd.services.systemd-machine-id-commit.unitConfig.ConditionFirstBoot = lib.mkForce false; }"#.to_string(),
            Some("\"/etc/machine-id\" is read by systemd-machine-id-commit.service".to_string()),
            "ConditionFirstBoot = true".to_string(),
        ),
        // Secrets not needed for users are decrypted after the bind mounts; agenix with no
        // secret reads nothing; a reader pointed into the storage reads what is there.
        (
            format!(r#"{{ sops.secrets.api = {{ }}; sops.age.sshKeyPaths = [ "{key}" ]; }}"#),
            None,
            String::new(),
        ),
        (r#"{ age.identityPaths = [ "/etc/ssh/ssh_host_rsa_key" ]; }"#.to_string(), None, String::new()),
        (
            format!(r#"{{ sops.secrets.rootpw.neededForUsers = true; sops.gnupg.sshKeyPaths = [ ]; sops.age.sshKeyPaths = [ "/persist{key}" ]; }}"#),
            None,
            String::new(),
        ),
    ];
    for (config, warning, advice) in cases {
        let extra = format!("({{ lib, ... }}: {})", with(&config));
        let v = evaluate(&example("l001"), &extra).unwrap_or_else(|e| panic!("{config}: {e}"));
        assert_eq!(v["failedAssertions"], serde_json::json!([]), "{config}");
        let warnings: Vec<&str> = v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        let toml = v["configToml"].as_str().unwrap();
        let (code, text) = lint(toml);
        match warning {
            Some(start) => {
                assert_eq!(warnings.len(), 1, "{config}: {warnings:?}");
                assert!(warnings[0].starts_with(&start), "{config}: {warnings:?}");
                assert!(warnings[0].contains(&advice), "{config}: {warnings:?}");
                assert!(toml.contains("[[early_read]]"), "{toml}");
                assert_eq!(code, Some(1), "{config}: {text}");
                assert!(
                    text.contains(&format!("early-boot: {}", warnings[0])),
                    "lint says what the evaluation said: {text}\n{}",
                    warnings[0]
                );
            }
            None => {
                assert_eq!(warnings, Vec::<&str>::new(), "{config}");
                assert_eq!(code, Some(0), "{config}: {text}");
            }
        }
    }
}

/// `imperm … --format nix` evaluated for real: the snippet, pasted into a configuration with
/// the real impermanence module (and the real preservation module when
/// `IMPERM_PRESERVATION` names a checkout), makes that module persist exactly the `persist`
/// suggestions of the same command's JSON, with their modes, users' entries under their
/// homes, and (preservation) the machine id in the initrd; and (issue 12) creates each one
/// with the owner, group and mode it has on the host: a service's directory owned by its
/// user with mode 0750, one owned by ids no name is known for, a key file of mode 0600, a
/// file whose directory is a service's own (impermanence: the parent directory;
/// preservation: the file itself and its parent).
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn format_nix_snippets_evaluate_against_impermanence_and_preservation() {
    use std::os::unix::fs::{PermissionsExt, lchown, symlink};
    let root = TempDir::new().unwrap();
    // Directories 0755 and files 0644 whatever the umask; josh's home is his.
    let mkdirs = |rel: &Path| {
        let mut at = root.path().to_path_buf();
        for part in rel.components() {
            at.push(part);
            if fs::symlink_metadata(&at).is_err() {
                fs::create_dir(&at).unwrap();
                fs::set_permissions(&at, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    };
    let put = |rel: &str, content: &str| {
        let path = root.path().join(rel);
        mkdirs(Path::new(rel).parent().unwrap());
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    };
    let set = |rel: &str, uid: u32, gid: u32, mode: u32| {
        let path = root.path().join(rel);
        lchown(&path, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    put(
        "etc/passwd",
        "root:x:0:0::/root:/bin/sh\njosh:x:1000:100::/home/josh:/bin/sh\nforgejo:x:991:988::/var/lib/forgejo:/bin/sh\n",
    );
    put("etc/group", "root:x:0:\nusers:x:100:\nforgejo:x:988:\n");
    put("var/lib/forgejo/data/db", "x");
    set("var/lib/forgejo", 991, 988, 0o750);
    put("var/lib/orphan/x", "x");
    set("var/lib/orphan", 4242, 4343, 0o700);
    put("var/lib/private/adguard/conf", "x");
    put("home/josh/.gnupg/pubring.kbx", "k");
    put("home/josh/.config/git/config", "[user]");
    put("home/josh/.local/share/x", "x");
    for rel in [
        "home/josh",
        "home/josh/.gnupg",
        "home/josh/.gnupg/pubring.kbx",
        "home/josh/.config",
        "home/josh/.config/git",
        "home/josh/.config/git/config",
    ] {
        lchown(root.path().join(rel), Some(1000), Some(100)).unwrap();
    }
    put("etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    put("etc/nix/id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
    set("etc/nix/id_rsa", 0, 0, 0o600);
    symlink(
        "/etc/static/nix/nix.conf",
        root.path().join("etc/nix/nix.conf"),
    )
    .unwrap();
    put("etc/secret/token.key", "token");
    set("etc/secret/token.key", 991, 988, 0o640);
    set("etc/secret", 991, 988, 0o700);
    symlink("/etc/static/secret/a", root.path().join("etc/secret/a")).unwrap();
    put("var/lib/we\"ird ${x}'s ''/state", "x");
    let etc = TempDir::new().unwrap();
    let config = etc.path().join("config.toml");
    fs::write(&config, "[persistence.\"/persist\"]\ndirectories = []\n").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(root.path())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let json: Value = serde_json::from_slice(&run(&["audit", "--format", "json"])).unwrap();
    let persist: Vec<&Value> = json["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] == "persist")
        .collect();
    assert!(persist.len() >= 10, "{persist:?}");
    assert!(
        persist
            .iter()
            .any(|s| s["path"].as_str().unwrap().contains("${x}")),
        "{persist:?}"
    );
    for (path, field) in [
        ("/var/lib/forgejo", "owner"),
        ("/var/lib/orphan", "owner"),
        ("/etc/nix/id_rsa", "mode"),
        ("/etc/secret/token.key", "parent"),
        ("/home/josh/.local/share", "owner"),
    ] {
        let s = persist.iter().find(|s| s["path"] == path).unwrap();
        assert!(!s[field].is_null(), "{path} has no {field}: {s}");
    }
    // What each module must create an entry with: (path, mode, user, group, in the initrd,
    // the parent directory's (mode, user, group) where preservation is told it).
    type Want = (
        String,
        String,
        String,
        String,
        bool,
        Option<(String, String, String)>,
    );
    let want = |style: &str| -> Vec<Want> {
        let mut out: Vec<Want> = persist
            .iter()
            .map(|s| {
                let home = s["user"].as_str();
                let (user, group) = match home {
                    Some(u) => (u, "users"),
                    None => ("root", "root"),
                };
                let text = |v: &Value, default: &str| v.as_str().unwrap_or(default).to_string();
                let own = |p: &Value, mode: &str| {
                    (
                        text(&p["mode"], mode),
                        text(&p["owner"], user),
                        text(&p["group"], group),
                    )
                };
                let file = s["kind"] == "file";
                // impermanence makes no file: what it makes is the file's directory.
                let (mode, owner, grp) = match (file, style) {
                    (true, "impermanence") => own(&s["parent"], "0755"),
                    (true, _) => own(s, "0644"),
                    (false, _) => own(s, "0755"),
                };
                let parent = (file && style == "preservation" && !s["parent"].is_null())
                    .then(|| own(&s["parent"], "0755"));
                let initrd = s["in_initrd"] == true && style == "preservation";
                (
                    s["path"].as_str().unwrap().to_string(),
                    mode,
                    owner,
                    grp,
                    initrd,
                    parent,
                )
            })
            .collect();
        out.sort();
        out
    };

    let mut styles = vec![("impermanence", tree("IMPERM_IMPERMANENCE"))];
    match std::env::var_os("IMPERM_PRESERVATION") {
        Some(p) => styles.push(("preservation", PathBuf::from(p))),
        None => {
            eprintln!("IMPERM_PRESERVATION is not set: the preservation snippet was not evaluated")
        }
    }
    for (style, module) in styles {
        let snippet =
            String::from_utf8(run(&["audit", "--format", "nix", "--style", style])).unwrap();
        let file = config.with_file_name(format!("{style}.nix"));
        fs::write(&file, format!("{{ ... }}: {{\n{snippet}}}\n")).unwrap();
        let expr = format!(
            "import ./tests/module/snippet.nix {{ nixpkgsLib = {}; {style} = {}; snippet = {}; users = [ \"josh\" ]; }}",
            tree("IMPERM_NIXPKGS_LIB").display(),
            module.display(),
            file.display()
        );
        let v = nix_eval(&expr).unwrap_or_else(|e| panic!("{style}: {e}\n{snippet}"));
        assert_eq!(v["failedAssertions"], serde_json::json!([]), "{style}");
        let text = |v: &Value| v.as_str().unwrap_or("(none)").to_string();
        let mut got: Vec<Want> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let parent = (!e["parent"].is_null()).then(|| {
                    let p = &e["parent"];
                    (text(&p["mode"]), text(&p["user"]), text(&p["group"]))
                });
                (
                    text(&e["path"]),
                    text(&e["mode"]),
                    text(&e["user"]),
                    text(&e["group"]),
                    e["initrd"] == true,
                    parent,
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, want(style), "{style}:\n{snippet}");
        let josh = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == "/home/josh/.gnupg")
            .unwrap();
        assert_eq!(
            (josh["user"].as_str(), josh["mode"].as_str()),
            (Some("josh"), Some("0700")),
            "{style}"
        );
    }
}

/// Issue 11: tests/vm boots the reset's arguments as `nix/lib.nix` writes them, so the unit
/// must hold exactly lib.nix's line; and the line must reach imperm as those arguments,
/// which systemd's own parser checks (`systemd --test`, in tests/nix.rs).
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn the_reset_unit_runs_the_command_line_lib_nix_writes() {
    for extra in [
        "{ }",
        r#"{ lib, ... }: { services.imperm.filesystem = { device = lib.mkForce "LABEL=nixos"; blankSnapshot = "@blank"; }; }"#,
    ] {
        let v = evaluate(&example("h001"), extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
        let exec = v["reset"]["serviceConfig"]["ExecStart"].as_str().unwrap();
        assert_eq!(exec, v["resetCommand"].as_str().unwrap(), "{extra}");
        let argv: Vec<&str> = v["resetArgv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(argv[..2], ["reset", "--fs=btrfs"], "{extra}");
        if extra.contains("LABEL") {
            assert_eq!(
                argv[2..],
                [
                    "--device=/dev/disk/by-label/nixos",
                    "--root-subvolume=@root",
                    "--snapshot-dir=@snapshots",
                    "--blank-snapshot=@blank"
                ]
            );
        }
    }
}

/// The hostile trial of the module (issue 10): each configuration below evaluated to a
/// host where imperm and impermanence disagree, the reset does not reset the root, or
/// imperm refuses its own config.toml. Each is now the module's assertion, naming what
/// to change (the text given), or the host evaluates to a complete configuration.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn what_the_trial_broke_is_an_assertion_or_agrees() {
    let bare_btrfs = r#"{ ... }: { boot.initrd.systemd.enable = true;
      fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "btrfs"; options = [ "subvol=@root" ]; };
      services.imperm = { enable = true; filesystem = { type = "btrfs"; device = "/dev/disk/by-label/nixos"; }; }; }"#;
    let refused: Vec<(&str, String, &str, &str)> = vec![
        // (class, host, extra, what the failed assertion says)
        (
            "storage on the root",
            bare_btrfs.into(),
            "{ }",
            "\"/persist\" lies on the root filesystem",
        ),
        (
            "storage spelled with a slash",
            example("o001"),
            r#"{ lib, ... }: { services.imperm.persistentStoragePath = "/persist/"; fileSystems."/persist".neededForBoot = lib.mkForce false; }"#,
            "fileSystems.\"/persist\".neededForBoot must be true",
        ),
        (
            "root subvolume",
            example("o001"),
            r#"{ services.imperm.filesystem.rootSubvolume = "root"; }"#,
            "\"subvol=root\"",
        ),
        (
            "root type",
            example("o001"),
            r#"{ lib, ... }: { services.imperm.filesystem.type = lib.mkForce "bcachefs"; }"#,
            "fileSystems.\"/\" is of type \"btrfs\"",
        ),
        (
            "tmpfs on a btrfs root",
            example("o001"),
            r#"{ lib, ... }: { services.imperm.filesystem.type = lib.mkForce "tmpfs"; }"#,
            "take the host's own fileSystems.\"/\" out",
        ),
        (
            "tmpfsRoot over the host's root",
            example("o001"),
            r#"{ lib, ... }: { services.imperm.filesystem.type = lib.mkForce "tmpfs"; services.imperm.tmpfsRoot.enable = true; }"#,
            "take the host's own fileSystems.\"/\" out",
        ),
        (
            "a label udev encodes",
            example("o001"),
            r#"{ lib, ... }: { services.imperm.filesystem.device = lib.mkForce "LABEL=a b"; }"#,
            "UUID= for such a label",
        ),
        (
            "a btrfs member list",
            example("o001"),
            r#"{ lib, ... }: { services.imperm.filesystem.device = lib.mkForce "/dev/sda1:/dev/sdb1"; }"#,
            "imperm waits for the device's unit",
        ),
        (
            "a relative entry",
            example("o001"),
            r#"{ services.imperm.directories = [ "var/lib/rel" ]; }"#,
            "\"var/lib/rel\" is not an absolute path",
        ),
        (
            "`..`",
            example("o001"),
            r#"{ services.imperm.directories = [ "/var/lib/../lib/z" ]; }"#,
            "is not an absolute path (without `..`",
        ),
        (
            "inside the storage",
            example("o001"),
            r#"{ services.imperm.directories = [ "/persist/x" ]; }"#,
            "lies inside its own persistent storage",
        ),
        (
            "a control character",
            example("o001"),
            "{ services.imperm.directories = [ \"/srv/a\\tb\" ]; }",
            "control characters",
        ),
        (
            "an absolute user entry",
            example("juni"),
            r#"{ services.imperm.users.josh.directories = [ "/abs" ]; }"#,
            "must be relative to the home directory",
        ),
        (
            "a home at /",
            example("juni"),
            r#"{ lib, ... }: { users.users.josh.home = lib.mkForce "/"; }"#,
            "cannot hold persisted entries",
        ),
        (
            "a user with no account",
            example("juni"),
            r#"{ services.imperm.users.ghost.directories = [ "x" ]; }"#,
            "there is no users.users.ghost",
        ),
        (
            "a home set here",
            example("juni"),
            r#"{ services.imperm.users.josh.home = "/srv/josh"; }"#,
            "set that instead",
        ),
        (
            "snapshots in the root",
            example("o001"),
            r#"{ services.imperm.filesystem.snapshotDir = "@root/s"; }"#,
            "inside the root subvolume",
        ),
        (
            "a blank root",
            example("o001"),
            r#"{ services.imperm.filesystem.blankSnapshot = "@root"; }"#,
            "blankSnapshot \"@root\" is the root subvolume",
        ),
    ];
    for (class, host, extra, want) in &refused {
        let v = evaluate(host, extra).unwrap_or_else(|e| panic!("{class}: {e}"));
        let failed: Vec<&str> = v["failedAssertions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert!(
            failed.iter().any(|m| m.contains(want)),
            "{class}: wanted {want:?} in {failed:#?}"
        );
    }
    // Refused by the option types, naming the option.
    for (class, extra, want) in [
        (
            "a count over 32 bits",
            "{ services.imperm.retention.keepLast = 4294967296; }",
            "services.imperm.retention.keepLast",
        ),
        (
            "an empty time zone",
            r#"{ services.imperm.retention.timezone = ""; }"#,
            "services.imperm.retention.timezone",
        ),
        (
            "a relative glob",
            r#"{ services.imperm.check.ignore = [ "relative/**" ]; }"#,
            "services.imperm.check.ignore",
        ),
        (
            "an empty calendar",
            r#"{ services.imperm.gc.dates = ""; }"#,
            "services.imperm.gc.dates",
        ),
        (
            "a calendar with a newline",
            "{ services.imperm.gc.dates = \"daily\\nPersistent=false\"; }",
            "services.imperm.gc.dates",
        ),
    ] {
        let err = evaluate(&example("o001"), extra).expect_err(class);
        assert!(err.contains(want), "{class}: {err}");
    }
    // Evaluates to a complete configuration, where imperm and impermanence agree.
    let secrets = "imports = [ ./tests/module/secrets-options.nix ];";
    for (class, host, extra) in [
        ("every storage disabled", "o001", r#"{ environment.persistence."/persist".enable = false; }"#.to_string()),
        (
            "a storage named apart from its path",
            "o001",
            r#"{ environment.persistence.main = { persistentStoragePath = "/persist"; directories = [ "/var/lib/main" ]; }; }"#.to_string(),
        ),
        ("a mode with a leading zero", "o001", r#"{ services.imperm.directories = [ { directory = "/var/lib/m"; mode = "01777"; } ]; }"#.to_string()),
        (
            "a user's lists from two modules",
            "juni",
            r#"{ imports = [ { services.imperm.users.josh.directories = [ "more" ]; } ]; services.imperm.users.josh.files = [ ".x" ]; }"#.to_string(),
        ),
        (
            "a Nix path as an identity, not persisted",
            "o001",
            format!("{{ {secrets} config.age = {{ secrets.x.file = /dev/null; identityPaths = [ /nonexistent/imperm-test-key ]; }}; }}"),
        ),
    ] {
        let v = evaluate(&example(host), &extra).unwrap_or_else(|e| panic!("{class}: {e}"));
        assert_complete(class, &v);
    }
    // An early reader is found however its path is spelled.
    for spelled in [
        "/etc//ssh/ssh_host_ed25519_key",
        "/etc/ssh/./ssh_host_ed25519_key",
    ] {
        let v = evaluate(
            &example("o001"),
            &format!("{{ {secrets} config.age = {{ secrets.x.file = \"/dev/null\"; identityPaths = [ \"{spelled}\" ]; }}; }}"),
        )
        .unwrap();
        let warnings = v["warnings"].to_string();
        assert!(
            warnings.contains("\\\"/etc/ssh/ssh_host_ed25519_key\\\" is read by agenix"),
            "{spelled}: {warnings}"
        );
    }
}

/// The second hostile trial of the module (issue 10) looked for valid configurations it
/// refused or misread. Each below evaluates to a complete configuration (both directions
/// of mounts and config.toml agree, lint clean), or gets the one message it should.
#[test]
#[ignore = "needs IMPERM_NIXPKGS_LIB and IMPERM_IMPERMANENCE: run tests/module/run"]
fn valid_configurations_the_second_trial_found_refused_now_agree() {
    let hm_entry = r#"{ directory = "Documents"; dirPath = "/home/josh/Documents"; persistentStoragePath = "/persist"; home = "/home/josh"; user = "josh"; group = "users"; mode = "0755"; hideMount = false; allowTrash = false; enableDebugging = false; defaultPerms = { user = "josh"; group = "users"; mode = "0755"; }; assertions = [ ]; }"#;
    let tmpfs_nix_persist = r#"{ ... }: {
      boot.initrd.systemd.enable = true;
      fileSystems."/nix" = { device = "/dev/disk/by-label/nix"; fsType = "ext4"; neededForBoot = true; };
      environment.persistence."/nix/persist".directories = [ "/var/lib/nixos" "/var/log" ];
      services.imperm = { enable = true; filesystem.type = "tmpfs"; tmpfsRoot.enable = true; template = "none"; }; }"#;
    let complete: Vec<(&str, String, String)> = vec![
        (
            "home-manager's home.persistence",
            example("juni"),
            format!(
                r#"{{ imports = [ ./tests/module/home-manager-options.nix ]; home-manager.users.josh.home.persistence."/persist" = {{ enable = true; enableWarnings = true; assertions = [ ]; persistentStoragePath = "/persist"; hideMounts = false; files = [ ]; directories = [ {hm_entry} ]; }}; }}"#
            ),
        ),
        ("an unused /persist on a tmpfs host", tmpfs_nix_persist.to_string(), "{ }".into()),
        (
            "template paths also in services.imperm",
            example("o001"),
            r#"{ services.imperm.directories = [ "/var/log" "/etc/ssh" "/var/lib/systemd" ]; services.imperm.files = [ "/etc/machine-id" ]; }"#.into(),
        ),
        (
            "a tmpfs home",
            example("o001"),
            r#"{ users.users.r = { isNormalUser = true; }; fileSystems."/home/r" = { device = "tmpfs"; fsType = "tmpfs"; neededForBoot = true; }; environment.persistence."/persist".users.r.directories = [ "git" ]; }"#.into(),
        ),
        (
            "/var/log on its own subvolume",
            example("o001"),
            r#"{ fileSystems."/var/log" = { device = "/dev/disk/by-label/nixos"; fsType = "btrfs"; options = [ "subvol=@log" ]; neededForBoot = true; }; }"#.into(),
        ),
        (
            "a root subvolume with a trailing slash",
            example("o001"),
            r#"{ lib, ... }: { services.imperm.filesystem.rootSubvolume = "@root/"; fileSystems."/".options = lib.mkForce [ "subvol=@root/" ]; }"#.into(),
        ),
    ];
    for (class, host, extra) in &complete {
        let v = evaluate(host, extra).unwrap_or_else(|e| panic!("{class}: {e}"));
        assert_complete(class, &v);
    }
    let failed = |host: &str, extra: &str| -> Vec<String> {
        let v = evaluate(host, extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
        serde_json::from_value(v["failedAssertions"].clone()).unwrap()
    };
    // Declared twice: the message names the template and what to do.
    let twice = failed(
        &example("o001"),
        r#"{ environment.persistence."/persist".directories = [ "/var/log" ]; }"#,
    );
    assert!(
        twice
            .iter()
            .any(|m| m.starts_with("\"/var/log\" is in imperm's server template")),
        "{twice:?}"
    );
    // Storages a reset would take away after all.
    for (extra, want) in [
        (
            r#"{ lib, ... }: { fileSystems."/persist".options = lib.mkForce [ "subvol=@root/persist" ]; }"#,
            "inside the root subvolume",
        ),
        (
            r#"{ lib, ... }: { fileSystems."/persist" = lib.mkForce { device = "/persist-data"; options = [ "bind" ]; neededForBoot = true; }; }"#,
            "lies on the root filesystem",
        ),
    ] {
        let got = failed(&example("o001"), extra);
        assert!(got.iter().any(|m| m.contains(want)), "{extra}: {got:?}");
    }
    // The device the reset is given and the root's are compared.
    let v = evaluate(
        &example("o001"),
        r#"{ lib, ... }: { services.imperm.filesystem.device = lib.mkForce "/dev/sdz9"; }"#,
    )
    .unwrap();
    assert!(
        v["warnings"]
            .to_string()
            .contains("the reset acts on another filesystem"),
        "{}",
        v["warnings"]
    );
    // Left unset, the device is the root's.
    let no_device = r#"{ ... }: { boot.initrd.systemd.enable = true;
      fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "btrfs"; options = [ "subvol=@root" ]; };
      fileSystems."/persist" = { device = "/dev/disk/by-label/nixos"; fsType = "btrfs"; options = [ "subvol=@persist" ]; neededForBoot = true; };
      services.imperm = { enable = true; filesystem.type = "btrfs"; }; }"#;
    let v = evaluate(no_device, "{ }").unwrap();
    assert_complete("the root's device by default", &v);
    assert_eq!(v["resetArgv"][2], "--device=/dev/disk/by-label/nixos");
    // The build-time check of config.toml has a time zone database.
    let check = &v["checks"][0];
    assert_eq!(check["name"], "imperm-config-check");
    assert!(
        check["env"]["TZDIR"]
            .as_str()
            .is_some_and(|d| d.ends_with("-tzdata/share/zoneinfo")),
        "{check}"
    );
    // preservation: parents of a user's entries are only made, never persisted; a file in
    // the initrd is read early without a word, but the machine-id commit still fails.
    let Some(p) = std::env::var_os("IMPERM_PRESERVATION") else {
        eprintln!("IMPERM_PRESERVATION is not set: preservation's cases were not evaluated");
        return;
    };
    let p = Path::new(&p).display();
    let secrets = "./tests/module/secrets-options.nix";
    let v = evaluate(
        &example("juni"),
        &format!(
            r#"{{ imports = [ {p}/module.nix {secrets} ]; preservation.enable = true;
              users.users.alice.isNormalUser = true;
              preservation.preserveAt."/persist".users.alice = {{ files = [ ".config/monitors.xml" ]; directories = [ ".local/share/direnv" ]; }};
              preservation.preserveAt."/persist".files = [ {{ file = "/etc/ssh/ssh_host_ed25519_key.bak"; inInitrd = true; }} ];
              age.secrets.x.file = "/dev/null"; age.identityPaths = [ "/etc/ssh/ssh_host_ed25519_key.bak" ]; }}"#
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_complete("preservation's users and an initrd file", &v);
    let v = evaluate(
        &example("juni"),
        &format!(
            r#"{{ lib, ... }}: {{ imports = [ {p}/module.nix ]; preservation.enable = true; services.imperm.template = "none";
              preservation.preserveAt."/persist".files = [ {{ file = "/etc/machine-id"; inInitrd = true; }} ];
              systemd.services.systemd-machine-id-commit.unitConfig.ConditionFirstBoot = lib.mkForce false; }}"#
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        v["warnings"]
            .to_string()
            .contains("systemd.suppressedSystemUnits"),
        "{}",
        v["warnings"]
    );
}
