//! `imperm stray` on a real loop btrfs: what no entry declares is found, quarantined by
//! renames and put back exactly; refusals and kills lose nothing.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NOW: &str = "2026-11-26T10:00:00Z";
const CONFIG: &str = "[persistence.\"/persist\"]\n\
    directories = [\"/var/lib/nixos\", \"/var/lib/svc\", \"/home/alice/.ssh\"]\n\
    files = [\"/etc/machine-id\"]\n\n\
    [persistence.\"/big\"]\ndirectories = [\"/var/lib/svc/blobs\"]\n";

struct Host {
    fs: common::LoopBtrfs,
    config: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Drop for Host {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
    }
}

impl Host {
    fn new(test: &str) -> Option<Host> {
        let fs = common::btrfs(test)?;
        fs.subvolume("root");
        fs.subvolume("root/persist");
        fs::create_dir_all(fs.path("root/big")).unwrap();
        let config = fs.scratch().join("config.toml");
        fs::write(&config, CONFIG).unwrap();
        let host = Host {
            fs,
            config,
            mounts: Vec::new(),
        };
        for (rel, data) in [
            ("persist/var/lib/nixos/uid-map", "declared"),
            ("persist/var/lib/svc/state.db", "declared"),
            ("persist/etc/machine-id", "0123"),
            ("persist/home/alice/.ssh/id_ed25519", "key"),
            ("big/var/lib/svc/blobs/a", "declared elsewhere"),
            // Stray: a service dropped from the configuration, a file beside a declared
            // one, a user's whole directory, a copy /big's mount hides.
            ("persist/var/lib/old-svc/db/data", "0123456789"),
            ("persist/var/lib/old-svc/conf", "x"),
            ("persist/etc/ssh/ssh_host_key", "secret"),
            ("persist/home/bob/notes", "bob"),
            ("persist/var/lib/svc/blobs/old", "hidden"),
        ] {
            host.write(rel, data);
        }
        Some(host)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.fs.path("root").join(rel)
    }

    fn write(&self, rel: &str, data: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    fn imperm(&self, args: &[&str]) -> Output {
        self.imperm_env(args, &[])
    }

    fn imperm_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imperm"));
        cmd.env(imperm::commands::NOW_ENV, NOW)
            .envs(env.iter().copied())
            .arg("--root")
            .arg(self.fs.path("root"))
            .arg("--config")
            .arg(&self.config)
            .args(args);
        common::run(&mut cmd)
    }

    fn json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let out = self.imperm(&all);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap(), v)
    }
}

/// The stray items of the storage whose path ends with `name`.
fn items<'a>(v: &'a serde_json::Value, name: &str) -> &'a Vec<serde_json::Value> {
    v["storages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["storage"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no storage {name}: {v:#}"))["items"]
        .as_array()
        .unwrap()
}

fn stray_paths(v: &serde_json::Value) -> Vec<String> {
    v["storages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["items"].as_array().unwrap().iter())
        .map(|i| i["on_disk"].as_str().unwrap().to_string())
        .collect()
}

/// Everything about every entry below `dir`: kind, mode, owner, size, mtime, inode,
/// content or link target. A quarantine and its putting back are renames: all of it,
/// the inode numbers included, must come back the same.
fn state(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            // A directory's mtime moves when an entry is renamed out of it and back, as
            // with mv: the directories moved keep theirs (checked on their own).
            let mtime = if m.is_dir() {
                String::new()
            } else {
                format!("{}.{}", m.mtime(), m.mtime_nsec())
            };
            let what = if m.is_dir() {
                stack.push(p.clone());
                String::new()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else if m.is_file() {
                String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
            } else {
                "special".into()
            };
            out.insert(
                p.strip_prefix(dir).unwrap().to_path_buf(),
                format!(
                    "{:o} {}:{} {} {mtime} ino {} {what}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.size(),
                    m.ino()
                ),
            );
        }
    }
    out
}

fn storage_state(host: &Host) -> BTreeMap<PathBuf, String> {
    let mut s = state(&host.path("persist"));
    s.extend(
        state(&host.path("big"))
            .into_iter()
            .map(|(k, v)| (Path::new("../big").join(k), v)),
    );
    s
}

#[test]
fn what_no_entry_declares_is_listed_with_size_and_owner() {
    let Some(host) = Host::new("what_no_entry_declares_is_listed_with_size_and_owner") else {
        return;
    };
    std::os::unix::fs::chown(host.path("persist/home/bob"), Some(1234), Some(5678)).unwrap();
    let (code, v) = host.json(&["stray"]);
    assert_eq!(code, 1, "{v}");
    // As the tree sees them (`--root` is not part of a path shown).
    let want = [
        "/persist/etc/ssh",
        "/persist/home/bob",
        "/persist/var/lib/old-svc",
        "/persist/var/lib/svc/blobs",
    ];
    assert_eq!(stray_paths(&v), want, "{v:#}");
    let listed = items(&v, "/persist");
    let old = &listed[2];
    assert_eq!(old["path"], "/var/lib/old-svc");
    assert_eq!(old["why"], "undeclared");
    assert_eq!(
        (old["files"].as_u64(), old["bytes"].as_u64()),
        (Some(2), Some(11))
    );
    assert_eq!(
        (listed[1]["owner"].as_str(), listed[1]["group"].as_str()),
        (Some("1234"), Some("5678"))
    );
    assert_eq!(listed[3]["why"], "shadowed");
    assert_eq!(listed[3]["mounted_from"], "/big");
    // /big holds only what it declares.
    assert_eq!(items(&v, "/big").len(), 0, "{v:#}");

    // Once nothing is stray: exit 0.
    let clean = "[persistence.\"/persist\"]\ndirectories = [\"/var\", \"/etc\", \"/home\"]\n";
    fs::write(&host.config, clean).unwrap();
    let (code, v) = host.json(&["stray"]);
    assert_eq!((code, stray_paths(&v)), (0, vec![]), "{v:#}");
}

#[test]
fn a_quarantine_and_its_putting_back_are_renames_and_lose_nothing() {
    let Some(host) = Host::new("a_quarantine_and_its_putting_back_are_renames_and_lose_nothing")
    else {
        return;
    };
    // Odd names, a symlink pointing out of the storage, a FIFO, modes.
    let odd = host
        .path("persist/var/lib")
        .join(OsStr::from_bytes(b"new\nline\xff"));
    fs::write(&odd, "odd").unwrap();
    let outside = host.fs.scratch().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), "keep").unwrap();
    symlink(&outside, host.path("persist/var/lib/old-svc/out")).unwrap();
    common::check(Command::new("mkfifo").arg(host.path("persist/etc/ssh/fifo")));
    fs::set_permissions(
        host.path("persist/etc/ssh"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let before = storage_state(&host);
    let outside_before = state(&outside);
    let old_svc_mtime = fs::metadata(host.path("persist/var/lib/old-svc"))
        .unwrap()
        .modified()
        .unwrap();

    let (code, v) = host.json(&["stray", "--quarantine"]);
    assert_eq!(code, 0, "{v:#}");
    let q = &v["quarantined"][0];
    assert_eq!(q["name"], "20261126T100000Z");
    assert_eq!(q["moved"].as_array().unwrap().len(), 5, "{v:#}");
    let qdir = host.path("persist/.imperm-stray/20261126T100000Z");
    assert!(qdir.join("manifest.json").is_file());
    assert!(qdir.join("var/lib/old-svc/db/data").is_file());
    assert!(!host.path("persist/var/lib/old-svc").exists());
    assert!(
        host.path("persist/var/lib/svc/state.db").exists(),
        "declared state stays"
    );
    assert_eq!(
        state(&outside),
        outside_before,
        "a symlink is moved, never followed"
    );
    // The quarantine is not itself stray.
    let (code, v) = host.json(&["stray"]);
    assert_eq!((code, stray_paths(&v)), (0, vec![]), "{v:#}");

    let (code, v) = host.json(&["stray", "--restore", "20261126T100000Z"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        storage_state(&host),
        before,
        "everything back, the same inodes"
    );
    assert_eq!(
        fs::metadata(host.path("persist/var/lib/old-svc"))
            .unwrap()
            .modified()
            .unwrap(),
        old_svc_mtime
    );
    assert!(!host.path("persist/.imperm-stray").exists());
    let out = host.imperm(&["stray", "--restore", "20261126T100000Z"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no quarantine of that name"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_quarantine_killed_after_its_first_move_is_put_back_whole() {
    let Some(host) = Host::new("a_quarantine_killed_after_its_first_move_is_put_back_whole") else {
        return;
    };
    let before = storage_state(&host);
    let out = host.imperm_env(
        &["stray", "--quarantine"],
        &[("IMPERM_FAILPOINT", "stray-moved")],
    );
    assert!(!out.status.success());
    // One moved, the rest still in place and still stray.
    let (code, v) = host.json(&["stray"]);
    assert_eq!((code, stray_paths(&v).len()), (1, 3), "{v:#}");
    // A second quarantine in the same second takes the next name.
    let (code, v) = host.json(&["stray", "--quarantine"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["quarantined"][0]["name"], "20261126T100000Z-1");
    for name in ["20261126T100000Z", "20261126T100000Z-1"] {
        let (code, v) = host.json(&["stray", "--restore", name]);
        assert_eq!(code, 0, "{name}: {v:#}");
    }
    assert_eq!(storage_state(&host), before);
}

#[test]
fn putting_back_never_replaces_what_took_the_place() {
    let Some(host) = Host::new("putting_back_never_replaces_what_took_the_place") else {
        return;
    };
    let (code, _) = host.json(&["stray", "--quarantine"]);
    assert_eq!(code, 0);
    host.write("persist/home/bob", "a new file of that name");
    let (code, v) = host.json(&["stray", "--restore", "20261126T100000Z"]);
    assert_eq!(code, 1, "{v:#}");
    let not = v["restored"][0]["not_moved"].as_array().unwrap();
    assert_eq!(not.len(), 1, "{v:#}");
    assert!(
        not[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("persist/home/bob")
    );
    assert_eq!(
        fs::read_to_string(host.path("persist/home/bob")).unwrap(),
        "a new file of that name"
    );
    let q = host.path("persist/.imperm-stray/20261126T100000Z");
    assert_eq!(fs::read_to_string(q.join("home/bob/notes")).unwrap(), "bob");
    assert!(
        q.join("manifest.json").is_file(),
        "kept while anything is left"
    );
    assert!(
        host.path("persist/var/lib/old-svc/db/data").is_file(),
        "the rest went back"
    );
}

#[test]
fn symlinks_planted_for_the_storage_or_the_quarantine_are_refused() {
    let Some(host) = Host::new("symlinks_planted_for_the_storage_or_the_quarantine_are_refused")
    else {
        return;
    };
    let before = storage_state(&host);
    let outside = host.fs.scratch().join("elsewhere");
    fs::create_dir(&outside).unwrap();
    symlink(&outside, host.path("persist/.imperm-stray")).unwrap();
    let out = host.imperm(&["stray", "--quarantine"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(".imperm-stray"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through it"
    );
    fs::remove_file(host.path("persist/.imperm-stray")).unwrap();
    assert_eq!(storage_state(&host), before);

    // The storage itself a symlink (to a tree that has stray things): refused.
    fs::rename(host.path("big"), host.path("real-big")).unwrap();
    symlink("real-big", host.path("big")).unwrap();
    let out = host.imperm(&["stray", "--quarantine"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("storage") && err.contains("symlink"), "{err}");
    assert!(
        !host.path("persist/.imperm-stray").exists(),
        "nothing moved anywhere"
    );
}

#[test]
fn a_mount_inside_the_storage_is_reported_not_walked_or_moved() {
    let Some(mut host) = Host::new("a_mount_inside_the_storage_is_reported_not_walked_or_moved")
    else {
        return;
    };
    let at = host.path("persist/srv");
    fs::create_dir_all(&at).unwrap();
    common::check(
        Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&at),
    );
    host.mounts.push(at.clone());
    fs::write(at.join("big"), vec![0u8; 4096]).unwrap();
    let (code, v) = host.json(&["stray", "--quarantine"]);
    assert_eq!(code, 1, "{v:#}");
    let listed = items(&v, "/persist");
    let srv = listed.iter().find(|i| i["path"] == "/srv").expect("listed");
    assert_eq!(
        (srv["mount_point"].as_bool(), srv["bytes"].as_u64()),
        (Some(true), Some(0))
    );
    let not = v["quarantined"][0]["not_moved"].as_array().unwrap();
    assert_eq!(not.len(), 1, "{v:#}");
    assert!(at.join("big").is_file(), "the mount is left alone");
}

#[test]
fn without_declared_persistence_stray_refuses() {
    let Some(host) = Host::new("without_declared_persistence_stray_refuses") else {
        return;
    };
    fs::write(&host.config, "").unwrap();
    let out = host.imperm(&["stray", "--quarantine"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no persistence is declared"), "{err}");
    assert!(!host.path("persist/.imperm-stray").exists());
}

#[test]
fn what_lies_inside_a_nested_subvolume_is_reported_not_half_moved() {
    let Some(host) = Host::new("what_lies_inside_a_nested_subvolume_is_reported_not_half_moved")
    else {
        return;
    };
    host.fs.subvolume("root/persist/srv");
    host.write("persist/srv/keep/a", "declared");
    host.write("persist/srv/junk/b", "stray, inside the subvolume");
    let config = CONFIG.replace(
        "\"/home/alice/.ssh\"]",
        "\"/home/alice/.ssh\", \"/srv/keep\"]",
    );
    assert_ne!(config, CONFIG);
    fs::write(&host.config, config).unwrap();
    let (code, v) = host.json(&["stray", "--quarantine"]);
    assert_eq!(code, 1, "{v:#}");
    let not = v["quarantined"][0]["not_moved"].as_array().unwrap();
    assert_eq!(not.len(), 1, "{v:#}");
    assert!(
        not[0]["why"].as_str().unwrap().contains("subvolume"),
        "{v:#}"
    );
    assert!(host.path("persist/srv/junk/b").is_file());
    // The others went; nothing was made in the quarantine for the one that did not.
    let q = host.path("persist/.imperm-stray/20261126T100000Z");
    assert!(q.join("var/lib/old-svc").is_dir());
    assert!(!q.join("srv").exists());
}
