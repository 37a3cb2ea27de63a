//! `imperm status`'s readiness for the first ephemeral boot, on a real loop btrfs: a host
//! that is not ready (its root on the top level, its entries nowhere but there, the
//! storage a plain directory of the root) made ready step by step as a user would, each
//! reason flipping as its step is done; then its first reset and "boot", after which the
//! ephemeral host's own reasons (last reset, snapshots, gc timer, baseline, check) flip.
//! The root a command sees is a real mount with procfs in it, so the mount table status
//! reads is the kernel's own.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const NOW: &str = "2026-11-26T10:00:00Z";

fn imperm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imperm"));
    cmd.env(imperm::commands::NOW_ENV, NOW)
        .env_remove(imperm::snapshots::reset::FAILPOINT_ENV);
    cmd
}

/// A host: the loop btrfs, the tree its root is mounted at, what the test mounted there.
struct Host {
    fs: common::LoopBtrfs,
    root: PathBuf,
    config: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.unmount_all();
    }
}

impl Host {
    fn new(test: &str) -> Option<Host> {
        let fs = common::btrfs(test)?;
        let root = fs.scratch().join("root");
        fs::create_dir(&root).unwrap();
        let config = fs.scratch().join("config.toml");
        let host = Host {
            fs,
            root,
            config,
            mounts: Vec::new(),
        };
        host.write_config("");
        Some(host)
    }

    fn write_config(&self, extra: &str) {
        fs::write(
            &self.config,
            format!(
                "[filesystem]\ntype = \"btrfs\"\ndevice = \"{}\"\nroot_subvolume = \"@root\"\n\
                 snapshot_dir = \"@snapshots\"\n\n\
                 [persistence.\"/persist\"]\n\
                 directories = [\"/var/lib/svc\", \"/var/lib/not-here\"]\n\
                 files = [\"/etc/machine-id\"]\n{extra}",
                self.fs.device
            ),
        )
        .unwrap();
    }

    fn mount(&mut self, args: &[&str], at: &Path) {
        fs::create_dir_all(at).unwrap();
        common::check(
            Command::new("mount")
                .args(args)
                .arg(&self.fs.device)
                .arg(at),
        );
        self.mounts.push(at.to_path_buf());
    }

    fn mount_other(&mut self, args: &[&str], what: &Path, at: &Path) {
        common::check(Command::new("mount").args(args).arg(what).arg(at));
        self.mounts.push(at.to_path_buf());
    }

    /// procfs in the tree: the mount table status reads is then the kernel's.
    fn mount_proc(&mut self) {
        let at = self.root.join("proc");
        fs::create_dir_all(&at).unwrap();
        common::check(Command::new("mount").args(["-t", "proc", "proc"]).arg(&at));
        self.mounts.push(at);
    }

    fn unmount_all(&mut self) {
        for m in self.mounts.drain(..).rev() {
            let _ = Command::new("umount").arg(&m).status();
        }
    }

    fn at(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// imperm with this host's configuration on the tree `root`, which must exit 0;
    /// its stdout. `env` is set for it.
    fn imperm_ok(&self, root: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
        let out = common::run(
            imperm()
                .arg("--root")
                .arg(root)
                .arg("--config")
                .arg(&self.config)
                .args(args)
                .envs(env.iter().copied()),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `status --format json`, which exits 0 whatever the answer.
    fn status(&self, extra: &[&str]) -> Value {
        let args: Vec<&str> = ["--format", "json", "status"]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        serde_json::from_slice(&self.imperm_ok(&self.root, &args, &[])).unwrap()
    }

    fn human(&self) -> String {
        let out = self.imperm_ok(&self.root, &["--color", "never", "status"], &[]);
        String::from_utf8(out).unwrap()
    }
}

/// Each reason's state, by check (a storage's reasons are one per storage: one here).
fn states(v: &Value) -> BTreeMap<String, String> {
    v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["check"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn detail<'a>(v: &'a Value, check: &str) -> &'a str {
    v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == check)
        .unwrap_or_else(|| panic!("no {check} reason in {v}"))["detail"]
        .as_str()
        .unwrap()
}

fn entry<'a>(v: &'a Value, path: &str) -> &'a Value {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("no entry {path} in {v}"))
}

/// Asserts the states of the given checks, the others as they were.
#[track_caller]
fn expect(v: &Value, want: &[(&str, &str)]) {
    let got = states(v);
    for (check, state) in want {
        assert_eq!(
            got.get(*check).map(String::as_str),
            Some(*state),
            "{check}: {:#}",
            v["reasons"]
        );
    }
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn a_host_is_made_ready_step_by_step_and_each_reason_flips() {
    let Some(mut host) = Host::new("a_host_is_made_ready_step_by_step_and_each_reason_flips")
    else {
        return;
    };
    // A traditional host: its root is the filesystem's top level, with its state in it.
    let root = host.root.clone();
    host.mount(&["-o", "subvolid=5"], &root);
    fs::create_dir_all(host.at("/var/lib/svc/db")).unwrap();
    fs::write(host.at("/var/lib/svc/db/data"), "state").unwrap();
    fs::create_dir_all(host.at("/etc")).unwrap();
    fs::write(host.at("/etc/machine-id"), "0123456789abcdef\n").unwrap();
    host.mount_proc();

    let v = host.status(&[]);
    assert_eq!(v["ready"], false);
    assert_eq!(v["ephemeral"], false);
    expect(
        &v,
        &[
            ("config", "ok"),
            ("lint", "problem"),
            ("entries", "problem"),
            ("storage", "problem"),
            ("needed-for-boot", "unknown"),
            ("layout", "problem"),
            ("free-space", "ok"),
        ],
    );
    assert!(
        detail(&v, "lint").contains("storage-on-root /persist"),
        "{v}"
    );
    assert_eq!(
        detail(&v, "entries"),
        "0 of 2 declared entries on the root in the storage; not in the storage: \
         /var/lib/svc and /etc/machine-id (`imperm migrate` copies them); \
         1 not on the root (nothing to keep)"
    );
    assert_eq!(entry(&v, "/var/lib/svc")["state"], "missing");
    assert_eq!(entry(&v, "/var/lib/not-here")["state"], "not-on-root");
    assert_eq!(v["layout"]["root_subvolume"], "missing");
    assert!(v["layout"]["free_bytes"].as_u64().unwrap() > 0);
    // No ephemeral reasons on a host that was never reset.
    for check in ["last-reset", "snapshots", "gc-timer", "baseline", "check"] {
        assert!(!states(&v).contains_key(check), "{check}: {v}");
    }
    assert_eq!(v["check"], Value::Null);

    // The root moved into @root (a snapshot of the top level), but the running root is
    // still the top level: the reset would replace @root, not this root.
    common::check(
        Command::new("btrfs")
            .args(["-q", "subvolume", "snapshot"])
            .arg(host.fs.top())
            .arg(host.fs.path("@root")),
    );
    let v = host.status(&[]);
    expect(&v, &[("layout", "problem")]);
    assert!(
        detail(&v, "layout").contains("the running root is mounted from /, not from @root"),
        "{v}"
    );
    assert_eq!(v["layout"]["root_subvolume"], "subvolume");

    // "Rebooted" into @root: the layout is right.
    host.unmount_all();
    host.mount(&["-o", "subvol=@root"], &root);
    host.mount_proc();
    let v = host.status(&[]);
    expect(
        &v,
        &[
            ("layout", "ok"),
            ("storage", "problem"),
            ("entries", "problem"),
        ],
    );
    assert_eq!(
        detail(&v, "layout"),
        "root subvolume @root, snapshot directory @snapshots missing (the first reset creates it)"
    );

    // A storage of its own: a subvolume beside the root, mounted at /persist.
    host.fs.subvolume("@persist");
    let persist = host.at("/persist");
    host.mount(&["-o", "subvol=@persist"], &persist);
    let v = host.status(&[]);
    expect(
        &v,
        &[("storage", "ok"), ("lint", "ok"), ("entries", "problem")],
    );
    assert_eq!(v["storage"][0]["mount_root"], "/@persist");

    // A copy of the wrong kind is not a copy.
    fs::create_dir_all(host.at("/persist/var/lib")).unwrap();
    fs::write(host.at("/persist/var/lib/svc"), "not a directory").unwrap();
    let v = host.status(&[]);
    expect(&v, &[("entries", "problem")]);
    assert_eq!(entry(&v, "/var/lib/svc")["state"], "kind-differs");
    fs::remove_file(host.at("/persist/var/lib/svc")).unwrap();

    // The entries copied (what migrate does; cp -a here).
    for (from, to) in [
        ("/var/lib/svc", "/persist/var/lib/"),
        ("/etc/machine-id", "/persist/etc/"),
    ] {
        fs::create_dir_all(host.at(to)).unwrap();
        common::check(
            Command::new("cp")
                .arg("-a")
                .arg(host.at(from))
                .arg(host.at(to)),
        );
    }
    // Copied by hand: there, but nothing says it is what the root has.
    let v = host.status(&[]);
    expect(
        &v,
        &[("entries", "unknown"), ("needed-for-boot", "unknown")],
    );
    assert_eq!(entry(&v, "/var/lib/svc")["state"], "unverified");
    assert_eq!(entry(&v, "/var/lib/svc")["verified"], Value::Null);
    assert!(
        detail(&v, "entries").contains(
            "in the storage, not verified: /var/lib/svc and /etc/machine-id \
             (`imperm migrate` compares and records them)"
        ),
        "{v}"
    );
    // migrate finds both the same, copies nothing, and records them as verified.
    let out: Value =
        serde_json::from_slice(&host.imperm_ok(&root, &["--format", "json", "migrate"], &[]))
            .unwrap();
    let actions: Vec<&Value> = out["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["action"])
        .collect();
    assert_eq!(actions, ["skip", "absent", "skip"], "{out}");
    let v = host.status(&[]);
    expect(&v, &[("entries", "ok"), ("needed-for-boot", "unknown")]);
    assert_eq!(entry(&v, "/var/lib/svc")["state"], "in-storage");
    assert!(entry(&v, "/var/lib/svc")["verified"].is_string(), "{v}");
    assert_eq!(v["ready"], false, "needed-for-boot is not known");
    assert_eq!(v["problems"], 0);
    assert_eq!(v["unknown"], 1);

    // The service writes after the copy: the storage's copy is older than the root.
    fs::write(host.at("/var/lib/svc/late"), "written after migrate").unwrap();
    let v = host.status(&[]);
    expect(&v, &[("entries", "problem")]);
    assert_eq!(entry(&v, "/var/lib/svc")["state"], "changed");
    assert!(
        detail(&v, "entries").contains("changed since migrate verified them: /var/lib/svc"),
        "{v}"
    );
    // migrate takes its own recorded copy for replaceable (kept aside), no --force.
    let out: Value =
        serde_json::from_slice(&host.imperm_ok(&root, &["--format", "json", "migrate"], &[]))
            .unwrap();
    assert_eq!(entry(&out, "/var/lib/svc")["action"], "replace", "{out}");
    assert_eq!(
        fs::read(host.at("/persist/var/lib/svc/late")).unwrap(),
        b"written after migrate"
    );
    let aside = entry(&out, "/var/lib/svc")["aside"].as_str().unwrap();
    assert!(host.at(aside).join("db/data").exists(), "{out}");
    assert!(!host.at(aside).join("late").exists(), "{out}");
    // A copy someone changed in the storage is no longer the one verified.
    fs::write(
        host.at("/persist/var/lib/svc/db/data"),
        "edited in the storage",
    )
    .unwrap();
    let v = host.status(&[]);
    assert_eq!(entry(&v, "/var/lib/svc")["state"], "changed");
    assert!(
        entry(&v, "/var/lib/svc")["detail"]
            .as_str()
            .unwrap()
            .starts_with("the storage's copy changed since migrate verified it"),
        "{v}"
    );
    // And migrate refuses to replace it without --force: it is not its own copy any more.
    let out = common::run(
        imperm()
            .arg("--root")
            .arg(&root)
            .arg("--config")
            .arg(&host.config)
            .args(["migrate"]),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force keeps it aside"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.imperm_ok(&root, &["migrate", "--force"], &[]);

    // What the NixOS module writes: the storage is on a filesystem the initrd mounts.
    host.write_config("\n[module]\nneeded_for_boot = [\"/persist\"]\n");
    let v = host.status(&[]);
    assert_eq!(v["ready"], true, "{:#}", v["reasons"]);
    assert!(states(&v).values().all(|s| s == "ok"), "{v}");
    assert_eq!(v["storage"][0]["needed_for_boot"], true);

    // Human output: the answer, then one line per reason.
    let text = host.human();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "ready for the first ephemeral boot")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        lines.len() - at - 1,
        v["reasons"].as_array().unwrap().len(),
        "{text}"
    );
    assert!(lines[at + 1].starts_with("  ok       config "), "{text}");

    // The JSON fields are part of the contract (`fleet status` reads them).
    assert_eq!(
        keys(&v),
        [
            "baseline",
            "check",
            "config",
            "entries",
            "ephemeral",
            "filesystem",
            "gc_timer",
            "layout",
            "lint",
            "persisted",
            "persistence",
            "problems",
            "ready",
            "reasons",
            "reset",
            "retention",
            "root",
            "snapshots",
            "storage",
            "unknown",
        ]
    );
    assert_eq!(keys(&v["reasons"][0]), ["check", "detail", "state"]);
    assert_eq!(
        keys(entry(&v, "/var/lib/svc")),
        ["detail", "kind", "path", "state", "storage", "verified"]
    );
    assert_eq!(
        keys(&v["layout"]),
        [
            "blank_snapshot",
            "free_bytes",
            "note",
            "root_subvolume",
            "size_bytes",
            "snapshot_dir",
            "threshold_bytes"
        ]
    );
    assert_eq!(keys(&v["lint"]), ["first", "problems"]);
    assert_eq!(
        keys(&v["snapshots"]),
        [
            "count",
            "last_reset",
            "newest",
            "note",
            "oldest",
            "space_bytes"
        ]
    );
    assert_eq!(
        keys(&v["storage"][0]),
        [
            "fs_type",
            "inside",
            "mount_point",
            "mount_root",
            "needed_for_boot",
            "path",
            "separate",
            "wiped_by_reset"
        ]
    );
    assert_eq!(keys(&v["reset"]), ["phase", "snapshot", "time"]);
}

#[test]
fn after_the_first_reset_the_ephemeral_hosts_own_reasons_flip() {
    let Some(mut host) = Host::new("after_the_first_reset_the_ephemeral_hosts_own_reasons_flip")
    else {
        return;
    };
    host.write_config("\n[module]\nneeded_for_boot = [\"/persist\"]\n");
    host.fs.subvolume("@root");
    host.fs.subvolume("@persist");
    host.fs.write("@root/var/lib/svc/data", "state");
    host.fs.write("@persist/var/lib/svc/data", "state");
    host.fs.write("@root/etc/machine-id", "0123\n");
    host.fs.write("@persist/etc/machine-id", "0123\n");

    // The first ephemeral boot: the reset (before the root is mounted), then the root,
    // the storage and impermanence's bind mounts.
    host.imperm_ok(host.fs.scratch(), &["reset"], &[]);
    let root = host.root.clone();
    host.mount(&["-o", "subvol=@root"], &root);
    let persist = host.at("/persist");
    host.mount(&["-o", "subvol=@persist"], &persist);
    fs::create_dir_all(host.at("/var/lib/svc")).unwrap();
    let (svc, svc_at) = (host.at("/persist/var/lib/svc"), host.at("/var/lib/svc"));
    host.mount_other(&["--bind"], &svc, &svc_at);
    fs::create_dir_all(host.at("/etc")).unwrap();
    fs::write(host.at("/etc/machine-id"), "").unwrap();
    let (id, id_at) = (
        host.at("/persist/etc/machine-id"),
        host.at("/etc/machine-id"),
    );
    host.mount_other(&["--bind"], &id, &id_at);
    host.mount_proc();

    let v = host.status(&[]);
    assert_eq!(v["ephemeral"], true, "{v}");
    let snapshot = "20261126T100000Z";
    expect(
        &v,
        &[
            ("entries", "ok"),
            ("storage", "ok"),
            ("layout", "ok"),
            ("last-reset", "ok"),
            ("snapshots", "ok"),
            ("gc-timer", "problem"),
            ("baseline", "problem"),
        ],
    );
    assert_eq!(entry(&v, "/var/lib/svc")["state"], "mounted");
    assert_eq!(
        detail(&v, "last-reset"),
        format!("done, old root in {snapshot} at 2026-11-26T10:00:00Z")
    );
    assert_eq!(v["reset"]["phase"], "done");
    assert_eq!(v["reset"]["time"], "2026-11-26T10:00:00Z");
    assert_eq!(v["snapshots"]["count"], 1);
    assert_eq!(v["snapshots"]["newest"], snapshot);
    assert_eq!(v["snapshots"]["oldest"], snapshot);
    assert_eq!(v["snapshots"]["space_bytes"], Value::Null);
    assert!(detail(&v, "snapshots").contains("space not measured"));
    assert_eq!(v["gc_timer"]["enabled"], false);
    assert_eq!(v["baseline"]["present"], false);

    // The module's timer, linked as NixOS links it (through /etc/static, absolute).
    fs::create_dir_all(host.at("/etc/static/systemd/system/timers.target.wants")).unwrap();
    fs::write(
        host.at("/etc/static/systemd/system/imperm-gc.timer"),
        "[Timer]\nOnCalendar=daily\n",
    )
    .unwrap();
    symlink(
        "/etc/static/systemd/system/imperm-gc.timer",
        host.at("/etc/static/systemd/system/timers.target.wants/imperm-gc.timer"),
    )
    .unwrap();
    symlink("/etc/static/systemd", host.at("/etc/systemd")).unwrap();
    // The baseline of this boot.
    host.imperm_ok(&host.root, &["baseline"], &[]);
    let v = host.status(&[]);
    expect(
        &v,
        &[("gc-timer", "ok"), ("baseline", "ok"), ("check", "ok")],
    );
    assert_eq!(v["gc_timer"]["enabled"], true);
    let written: jiff::Timestamp = v["baseline"]["time"].as_str().unwrap().parse().unwrap();
    assert!(
        (jiff::Timestamp::now().as_second() - written.as_second()).abs() < 600,
        "{written}"
    );
    assert_eq!(v["check"]["persist"], 0, "{}", v["check"]);
    assert_eq!(v["check"]["since_baseline"], true);
    assert_eq!(v["ready"], true, "{:#}", v["reasons"]);
    assert_eq!(
        host.human().lines().find(|l| l.starts_with("ready")),
        Some("ready: the root is ephemeral and nothing needs action")
    );

    // A service writes state nothing persists: check says so, through status.
    fs::create_dir_all(host.at("/var/lib/newsvc")).unwrap();
    fs::write(host.at("/var/lib/newsvc/db.sqlite"), "state").unwrap();
    let v = host.status(&[]);
    expect(&v, &[("check", "problem")]);
    assert_eq!(v["check"]["persist"], 1, "{}", v["check"]);
    assert!(
        detail(&v, "check").contains("to persist: /var/lib/newsvc"),
        "{v}"
    );
    assert_eq!(v["ready"], false);

    // --no-check skips the walk and says so.
    let v = host.status(&["--no-check"]);
    expect(&v, &[("check", "unknown")]);
    assert_eq!(v["check"]["skipped"], true);
    assert_eq!(v["check"]["persist"], Value::Null);
    assert_eq!(detail(&v, "check"), "not run (--no-check)");
}

/// As a user, the top level is never mounted: what needs it is "not checked", never ok.
#[test]
fn as_a_user_what_needs_root_is_not_checked() {
    let Some(mut host) = Host::new("as_a_user_what_needs_root_is_not_checked") else {
        return;
    };
    host.fs.subvolume("@root");
    // impermanence's symlink method: the live file is a link to the storage's copy.
    host.fs.write("@root/persist/etc/machine-id", "0123\n");
    fs::create_dir_all(host.fs.path("@root/etc")).unwrap();
    symlink(
        "/persist/etc/machine-id",
        host.fs.path("@root/etc/machine-id"),
    )
    .unwrap();
    let root = host.root.clone();
    host.mount(&["-o", "subvol=@root"], &root);
    host.mount_proc();
    // The scratch directory is private to root: let the user in, read only.
    for dir in [host.fs.scratch(), host.root.as_path()] {
        common::check(Command::new("chmod").arg("755").arg(dir));
    }
    common::check(Command::new("chmod").arg("644").arg(&host.config));
    let out = common::run(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(&host.root)
            .arg("--config")
            .arg(&host.config)
            .args(["--format", "json", "status"]),
    );
    if out.status.code() == Some(126) || out.status.code() == Some(127) {
        // The test binary's directory is not open to other users here.
        eprintln!(
            "SKIPPED as a user: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    expect(&v, &[("layout", "unknown"), ("free-space", "unknown")]);
    assert!(
        detail(&v, "layout").starts_with("not checked: mounting the top level needs root"),
        "{v}"
    );
    assert_eq!(v["ready"], false);
    // The link says the root is ephemeral; what only the top level tells is not checked.
    assert_eq!(entry(&v, "/etc/machine-id")["state"], "mounted", "{v}");
    assert!(detail(&v, "entries").contains("(1 linked)"), "{v}");
    assert_eq!(v["ephemeral"], true, "{v}");
    expect(
        &v,
        &[
            ("last-reset", "unknown"),
            ("snapshots", "unknown"),
            ("gc-timer", "problem"),
            ("baseline", "problem"),
        ],
    );
    assert_eq!(v["reset"], Value::Null);
}

/// What a hostile or odd storage holds is never taken for a copy: a symlink on the way
/// back onto the root (a bind mount would follow it, and the first reset wipes what it
/// leads to); a FIFO is looked at, never opened; a live symlink to the storage's copy
/// (impermanence's symlink method) is the storage's copy.
#[test]
fn symlinks_and_special_files_in_the_storage_are_judged_without_following_or_opening() {
    let Some(mut host) = Host::new(
        "symlinks_and_special_files_in_the_storage_are_judged_without_following_or_opening",
    ) else {
        return;
    };
    host.fs.subvolume("@root");
    host.fs.subvolume("@persist");
    let root = host.root.clone();
    host.mount(&["-o", "subvol=@root"], &root);
    let persist = host.at("/persist");
    host.mount(&["-o", "subvol=@persist"], &persist);
    host.mount_proc();
    fs::create_dir_all(host.at("/var/lib/svc")).unwrap();
    fs::write(host.at("/var/lib/svc/data"), "state").unwrap();
    // /persist/var leads back to the root's /var: /persist/var/lib/svc "exists".
    symlink("/var", host.at("/persist/var")).unwrap();
    // A FIFO on both sides: opening either would block status for good.
    fs::create_dir_all(host.at("/persist/etc")).unwrap();
    fs::create_dir_all(host.at("/etc")).unwrap();
    for fifo in ["/etc/machine-id", "/persist/etc/machine-id"] {
        common::check(Command::new("mkfifo").arg(host.at(fifo)));
    }
    let v = host.status(&["--no-check"]);
    assert_eq!(entry(&v, "/var/lib/svc")["state"], "blocked", "{v}");
    assert_eq!(
        entry(&v, "/var/lib/svc")["detail"],
        "/persist/var/lib/svc: a symlink on the way, which the bind mount would follow"
    );
    // Present and of one kind, but not verified: nothing reads a FIFO to compare.
    assert_eq!(entry(&v, "/etc/machine-id")["state"], "unverified");
    expect(&v, &[("entries", "problem")]);
    assert!(
        detail(&v, "entries").contains("in the way in the storage: /persist/var/lib/svc"),
        "{v}"
    );

    // The real copy, and the live file a symlink to the storage's.
    fs::remove_file(host.at("/persist/var")).unwrap();
    fs::create_dir_all(host.at("/persist/var/lib")).unwrap();
    common::check(
        Command::new("cp")
            .arg("-a")
            .arg(host.at("/var/lib/svc"))
            .arg(host.at("/persist/var/lib/")),
    );
    fs::remove_file(host.at("/etc/machine-id")).unwrap();
    fs::remove_file(host.at("/persist/etc/machine-id")).unwrap();
    fs::write(host.at("/persist/etc/machine-id"), "0123\n").unwrap();
    symlink("/persist/etc/machine-id", host.at("/etc/machine-id")).unwrap();
    let v = host.status(&["--no-check"]);
    assert_eq!(entry(&v, "/var/lib/svc")["state"], "unverified", "{v}");
    assert_eq!(entry(&v, "/etc/machine-id")["state"], "mounted", "{v}");
    assert_eq!(
        entry(&v, "/etc/machine-id")["detail"],
        "a symlink to the storage's copy"
    );
    expect(&v, &[("entries", "unknown")]);
}

/// A reset cut short (the power lost right after its snapshot) is what status reports,
/// with the phase it stopped in; the next reset completes it and status says done.
#[test]
fn an_interrupted_reset_is_a_problem_until_a_reset_completes_it() {
    let Some(host) = Host::new("an_interrupted_reset_is_a_problem_until_a_reset_completes_it")
    else {
        return;
    };
    host.fs.subvolume("@root");
    host.fs.write("@root/etc/machine-id", "0123\n");
    let failed = common::run(
        imperm()
            .arg("--root")
            .arg(host.fs.scratch())
            .arg("--config")
            .arg(&host.config)
            .arg("reset")
            .env(imperm::snapshots::reset::FAILPOINT_ENV, "snapshot-taken"),
    );
    assert!(!failed.status.success());
    // The tree is the new root's place, unmounted: no mount table, nothing else known.
    let v = host.status(&["--no-check"]);
    assert_eq!(v["ephemeral"], true, "{v}");
    expect(&v, &[("last-reset", "problem")]);
    assert_eq!(v["reset"]["phase"], "snapshot");
    assert_eq!(
        detail(&v, "last-reset"),
        "interrupted while in phase snapshot (snapshot 20261126T100000Z): the next `imperm reset` completes it"
    );
    host.imperm_ok(host.fs.scratch(), &["reset"], &[]);
    let v = host.status(&["--no-check"]);
    expect(&v, &[("last-reset", "ok")]);
    assert_eq!(v["reset"]["phase"], "done");
}
