//! Findings of the hostile trial of issue 13's rollout commands (TRIAL-REPORT-13.md), each
//! a test that failed before its fix: on real loop btrfs, through the binary.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{LoopBtrfs, btrfs};
use serde_json::Value;

const NOW: &str = "2026-01-15T06:30:00Z";

/// A live root `root` (a subvolume) with the storage `/persist` mounted in it (a subvolume
/// of its own), as at boot, and a configuration of the test's own.
struct Host {
    fs: LoopBtrfs,
    config: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Drop for Host {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").args(["-R", "-l"]).arg(m).status();
        }
    }
}

impl Host {
    fn new(test: &str, config: &str) -> Option<Host> {
        let fs = btrfs(test)?;
        fs.subvolume("root");
        fs.subvolume("persist");
        fs::create_dir(fs.path("root/persist")).unwrap();
        let storage = fs.path("root/persist");
        common::check(
            Command::new("mount")
                .args(["-o", "subvol=persist,noatime", &fs.device])
                .arg(&storage),
        );
        let path = fs.scratch().join("imperm.toml");
        fs::write(&path, config).unwrap();
        Some(Host {
            fs,
            config: path,
            mounts: vec![storage],
        })
    }

    fn live(&self, rel: &str) -> PathBuf {
        self.fs.path("root").join(rel.trim_start_matches('/'))
    }

    fn stored(&self, rel: &str) -> PathBuf {
        self.live("persist").join(rel.trim_start_matches('/'))
    }

    fn write(&self, rel: &str, data: &str) {
        let p = self.live(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imperm"));
        cmd.env(imperm::commands::NOW_ENV, NOW)
            .env_remove("IMPERM_FAILPOINT")
            .arg("--root")
            .arg(self.fs.path("root"))
            .arg("--config")
            .arg(&self.config);
        cmd
    }

    fn imperm(&self, args: &[&str]) -> Output {
        common::run(self.command().args(args))
    }

    /// Runs imperm, killed after `limit`: `None` when it had to be killed.
    fn imperm_within(&self, args: &[&str], limit: Duration) -> Option<Output> {
        let mut child = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < limit {
            if child.try_wait().unwrap().is_some() {
                return Some(child.wait_with_output().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

/// A file of a huge apparent size is mostly holes: the verification reads its data, not
/// its holes (reading 4 TiB of zeros takes hours, holding the storage's lock).
#[test]
fn a_sparse_file_of_huge_apparent_size_is_verified_without_reading_its_holes() {
    let Some(host) = Host::new(
        "trial13_sparse",
        "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/svc\"]\n",
    ) else {
        return;
    };
    host.write("var/lib/svc/small", "small");
    let huge = fs::File::create(host.live("var/lib/svc/huge.img")).unwrap();
    huge.set_len(4 << 40).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&huge, b"data far out", 3 << 40).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&huge, b"and at the start", 0).unwrap();
    drop(huge);
    let out = host
        .imperm_within(&["migrate"], Duration::from_secs(120))
        .expect("migrate of a 4 TiB sparse file still runs after 120 s");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let copy = host.stored("var/lib/svc/huge.img");
    let meta = fs::metadata(&copy).unwrap();
    assert_eq!(meta.len(), 4 << 40);
    assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
    let mut buf = [0u8; 12];
    std::os::unix::fs::FileExt::read_exact_at(&fs::File::open(&copy).unwrap(), &mut buf, 3 << 40)
        .unwrap();
    assert_eq!(&buf, b"data far out");
    // Both sides are hashed again, and found the same, whatever the holes: a storage
    // copy with its zeros written out (as `cp --sparse=never` makes it) is the same.
    let dense = host.stored("var/lib/svc/dense");
    let small = fs::File::create(host.live("var/lib/svc/dense")).unwrap();
    small.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&small, b"x", 4 << 20).unwrap();
    drop(small);
    common::check(
        Command::new("cp")
            .args(["-a", "--reflink=never", "--sparse=never"])
            .arg(host.live("var/lib/svc/dense"))
            .arg(&dense),
    );
    assert!(fs::metadata(&dense).unwrap().blocks() * 512 >= 8 << 20);
    common::check(
        Command::new("touch")
            .arg("-r")
            .arg(host.live("var/lib/svc"))
            .arg(host.stored("var/lib/svc")),
    );
    let second = host
        .imperm_within(&["--format", "json", "migrate"], Duration::from_secs(120))
        .expect("a second migrate still runs after 120 s");
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(json(&second)["entries"][0]["action"], "skip");
}

/// A storage nested in another (`/persist/var` in `/persist`): what an entry of one
/// declares is not stray from the other's point of view, and a quarantine leaves it.
#[test]
fn an_entry_of_a_storage_nested_in_another_is_not_stray() {
    let Some(host) = Host::new(
        "trial13_nested_storages",
        "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/svc\"]\n\n\
         [persistence.\"/persist/var\"]\ndirectories = [\"/lib/x\"]\n\n\
         [persistence.\"/persist/var/lib\"]\ndirectories = [\"/y\"]\n",
    ) else {
        return;
    };
    host.write("persist/var/lib/x/important", "declared by /persist/var");
    host.write("persist/var/lib/svc/state", "declared by /persist");
    host.write("persist/var/lib/y/state", "declared by /persist/var/lib");
    host.write("persist/var/lib/old/junk", "stray");
    let out = host.imperm(&["--format", "json", "stray"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    let stray: Vec<&str> = report["storages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["items"].as_array().unwrap())
        .map(|i| i["on_disk"].as_str().unwrap())
        .collect();
    assert_eq!(stray.len(), 1, "{stray:?}");
    assert!(stray[0].ends_with("persist/var/lib/old"), "{stray:?}");
    let out = host.imperm(&["stray", "--quarantine"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for declared in [
        "var/lib/x/important",
        "var/lib/svc/state",
        "var/lib/y/state",
    ] {
        assert!(host.stored(declared).exists(), "{declared} was moved");
    }
    assert!(!host.stored("var/lib/old").exists());
}

/// A service that replaces its files by renames (write a temporary, rename it over) and
/// makes and removes directories while migrate copies: what vanished or was replaced
/// between the listing and the read is a change, copied again (exit 0, or 1 naming what
/// kept changing), never an error (exit 2) that blames "the snapshot's" copy.
#[test]
fn files_replaced_or_removed_while_they_are_copied_are_a_change_not_an_error() {
    let Some(host) = Host::new(
        "trial13_churn",
        "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/svc\"]\n",
    ) else {
        return;
    };
    for i in 0..300 {
        host.write(&format!("var/lib/svc/calm/f{i}"), "calm");
    }
    host.write("var/lib/svc/busy/state", "0");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = host.live("var/lib/svc/busy");
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let tmp = busy.join(format!("state.{}", n % 7));
                let _ = fs::write(&tmp, n.to_string());
                let _ = fs::rename(&tmp, busy.join("state"));
                let dir = busy.join(format!("d{}", n % 5));
                let _ = fs::create_dir(&dir);
                let _ = fs::write(dir.join("x"), "x");
                let _ = fs::remove_file(dir.join("x"));
                let _ = fs::remove_dir(&dir);
            }
        })
    };
    let mut codes = Vec::new();
    for _ in 0..12 {
        let out = host.imperm(&["migrate"]);
        codes.push((out.status.code(), stderr(&out)));
        let _ = fs::remove_dir_all(host.stored("var"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    for (code, err) in &codes {
        assert!(matches!(code, Some(0 | 1)), "{code:?}: {err}");
        assert!(!err.contains("snapshot"), "{err}");
    }
}

/// A quarantine killed before its manifest took its name (`kill -9` in the first
/// milliseconds) leaves its directory with only `.manifest.json.tmp`: nothing was moved
/// (the manifest is in place before the first rename), so `--restore` clears it instead
/// of failing on a missing manifest, and the next quarantine is not disturbed by it.
#[test]
fn a_quarantine_killed_before_its_manifest_is_cleared_by_restore() {
    let Some(host) = Host::new(
        "trial13_no_manifest",
        "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/keep\"]\n",
    ) else {
        return;
    };
    host.write("persist/var/lib/keep/k", "declared");
    host.write("persist/var/lib/old/junk", "stray");
    let quarantine = host.stored(".imperm-stray/20260101T000000Z");
    fs::create_dir_all(&quarantine).unwrap();
    for dir in [host.stored(".imperm-stray"), quarantine.clone()] {
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
    fs::write(
        quarantine.join(".manifest.json.tmp"),
        "{\"version\": 1, \"sto",
    )
    .unwrap();
    let out = host.imperm(&["stray", "--restore", "20260101T000000Z"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !quarantine.exists(),
        "the unfinished quarantine is still there"
    );
    assert_eq!(
        fs::read_to_string(host.stored("var/lib/old/junk")).unwrap(),
        "stray"
    );
    // What holds more than an unfinished manifest is not imperm's to clear.
    fs::create_dir_all(&quarantine).unwrap();
    fs::set_permissions(
        &quarantine,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    fs::write(quarantine.join("something"), "else").unwrap();
    let out = host.imperm(&["stray", "--restore", "20260101T000000Z"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("manifest.json"), "{}", stderr(&out));
    assert!(quarantine.join("something").exists());
}

/// `restore --into persist` writes into a storage as migrate and `stray --quarantine`
/// do, so it takes the storage's lock too: with a configuration that has no
/// `[filesystem]` (a host before its rollout), migrate takes no top-level lock, and the
/// two copied into the same `.NAME.imperm-restore`, or a quarantine moved restore's copy
/// away mid-way.
#[test]
fn restore_into_the_storage_takes_the_storage_lock() {
    let Some(fs) = btrfs("trial13_restore_lock") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/var/lib/x/f", "from the old root");
    let config = fs.scratch().join("imperm.toml");
    fs::write(
        &config,
        "[persistence.\"/persist\"]\ndirectories = [\"/var/log\"]\n",
    )
    .unwrap();
    let imperm = |args: &[&str]| {
        common::run(
            Command::new(env!("CARGO_BIN_EXE_imperm"))
                .env(imperm::commands::NOW_ENV, NOW)
                .arg("--root")
                .arg(fs.path("@root"))
                .arg("--config")
                .arg(&config)
                .args(args)
                .args(["--fs", "btrfs", "--mounted"])
                .arg(fs.top()),
        )
    };
    let out = imperm(&["reset"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    fs.subvolume("@persist");
    let storage = fs.path("@root/persist");
    fs::create_dir_all(&storage).unwrap();
    common::check(
        Command::new("mount")
            .args(["-o", "subvol=@persist,noatime", &fs.device])
            .arg(&storage),
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _mounted = Unmount(storage.clone());
    {
        let _held = common::HeldLock::new(&storage);
        let out = imperm(&["restore", "/var/lib/x", "--into", "persist"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("holds its lock"), "{}", stderr(&out));
        assert!(!storage.join("var").exists(), "written under the lock");
    }
    let out = imperm(&["restore", "/var/lib/x", "--into", "persist"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(storage.join("var/lib/x/f")).unwrap(),
        "from the old root"
    );
}

/// `fleet status --jobs 256` (the documented maximum) under the usual soft limit of 1024
/// descriptors, with no higher hard limit: every host still answers (the jobs wait for
/// descriptors instead of failing with "Too many open files"). An `ssh` on PATH that
/// answers like a host stands in for OpenSSH: what is tested is imperm's side.
#[test]
fn fleet_status_with_256_jobs_fits_the_descriptor_limit() {
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("ssh");
    fs::write(
        &ssh,
        "#!/bin/sh\nsleep 0.2\necho '{\"filesystem\": {\"type\": \"btrfs\"}, \"ready\": {\"ready\": true}}'\n",
    )
    .unwrap();
    fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let hosts = dir.path().join("hosts");
    let names: Vec<String> = (1..=300).map(|i| format!("h{i}")).collect();
    fs::write(&hosts, names.join("\n")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = common::run(
        Command::new("sh")
            .args(["-c", "ulimit -n 1024 && exec \"$@\"", "sh"])
            .arg(env!("CARGO_BIN_EXE_imperm"))
            .args([
                "--format",
                "json",
                "fleet",
                "status",
                "--jobs",
                "256",
                "--timeout",
                "60",
            ])
            .arg("--hosts-file")
            .arg(&hosts)
            .env("PATH", path),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 300);
    for row in rows {
        assert!(row.get("error").is_none(), "{row}");
    }
}

/// A storage that is a file, or a symlink (which migrate never writes through): status
/// must not call the entries merely missing with "`imperm migrate` copies them", since
/// migrate refuses; the entry is blocked, naming the storage.
#[test]
fn status_blames_a_storage_that_migrate_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("etc/imperm")).unwrap();
    fs::create_dir_all(root.join("var/lib/a")).unwrap();
    fs::create_dir_all(root.join("mnt/data")).unwrap();
    fs::write(
        root.join("etc/imperm/config.toml"),
        "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/a\"]\n",
    )
    .unwrap();
    let status = || {
        let out = common::run(
            Command::new(env!("CARGO_BIN_EXE_imperm"))
                .env(imperm::commands::NOW_ENV, NOW)
                .arg("--root")
                .arg(root)
                .args(["--format", "json", "status"]),
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        json(&out)["entries"][0].clone()
    };
    fs::write(root.join("persist"), "a file").unwrap();
    let entry = status();
    assert_eq!(entry["state"], "blocked", "{entry}");
    assert!(
        entry["detail"].as_str().unwrap().contains("/persist"),
        "{entry}"
    );
    fs::remove_file(root.join("persist")).unwrap();
    std::os::unix::fs::symlink("/mnt/data", root.join("persist")).unwrap();
    let entry = status();
    assert_eq!(entry["state"], "blocked", "{entry}");
    assert!(
        entry["detail"].as_str().unwrap().contains("symlink"),
        "{entry}"
    );
}

/// A mount inside an entry on the live root: another filesystem (a tmpfs), or the
/// storage itself bind-mounted there, which the copy then copied into itself until the
/// depth limit ("holds a tree deeper than imperm copies … nothing was restored").
/// Refused before anything is written, naming the mount point.
#[test]
fn a_mount_inside_an_entry_is_refused_before_the_copy() {
    let Some(mut host) = Host::new(
        "trial13_mount_in_entry",
        "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/svc\"]\n",
    ) else {
        return;
    };
    host.write("var/lib/svc/a", "a");
    let (tmp, loopback) = (host.live("var/lib/svc/t"), host.live("var/lib/svc/p"));
    fs::create_dir_all(&tmp).unwrap();
    fs::create_dir_all(&loopback).unwrap();
    common::check(
        Command::new("mount")
            .args(["-t", "tmpfs", "none"])
            .arg(&tmp),
    );
    host.mounts.push(tmp.clone());
    fs::write(tmp.join("t"), "on a tmpfs").unwrap();
    for (mount, shown) in [
        (None, "/var/lib/svc/t"),
        (Some(&loopback), "/var/lib/svc/p"),
    ] {
        if let Some(at) = mount {
            common::check(Command::new("umount").arg(&tmp));
            host.mounts.pop();
            common::check(
                Command::new("mount")
                    .arg("--bind")
                    .arg(host.live("persist"))
                    .arg(at),
            );
            host.mounts.push(at.clone());
        }
        let out = host
            .imperm_within(&["migrate"], Duration::from_secs(60))
            .expect("migrate still runs after 60 s");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(shown), "{}", stderr(&out));
        assert!(stderr(&out).contains("mount"), "{}", stderr(&out));
        assert_eq!(fs::read_dir(host.stored("")).unwrap().count(), 0);
    }
}
