//! `imperm migrate` on real loop btrfs: a live root (`root/`) with a service-like tree of
//! every kind of file, and its storage (`root/persist`, a subvolume). The copy is compared
//! with the source in full (content, owner, mode, times in ns, xattrs and ACLs, links,
//! sparseness); runs killed at any moment are finished by the next; every refusal leaves
//! both sides as they were, to the ctime.

mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{LoopBtrfs, btrfs};
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags};
use serde_json::Value;

const NOW: &str = "2026-01-15T06:30:00Z";
const STAMP: &str = "20260115T063000Z";
const SVC: &str = "var/lib/svc";

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
    /// A live root `root` (a subvolume) with the storage `/persist` in it (a subvolume of
    /// its own), and a configuration that declares `directories` and `files`.
    fn new(test: &str, directories: &[&str], files: &[&str]) -> Option<Host> {
        let fs = btrfs(test)?;
        fs.subvolume("root");
        fs.subvolume("persist");
        fs::create_dir(fs.path("root/persist")).unwrap();
        // The storage a subvolume of its own, mounted in the root as at boot.
        common::check(
            Command::new("mount")
                .args(["-o", "subvol=persist,noatime", &fs.device])
                .arg(fs.path("root/persist")),
        );
        let list = |l: &[&str]| {
            l.iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let config = fs.scratch().join("imperm.toml");
        fs::write(
            &config,
            format!(
                "[persistence.\"/persist\"]\ndirectories = [{}]\nfiles = [{}]\n",
                list(directories),
                list(files)
            ),
        )
        .unwrap();
        // imperm sees the root through a mount that records every access time
        // (strictatime), while the test reads it through the noatime top level: a read
        // without O_NOATIME would show as a change of the live root.
        let view = fs.scratch().join("view");
        fs::create_dir(&view).unwrap();
        let storage = fs.path("root/persist");
        common::check(
            Command::new("mount")
                .arg("--rbind")
                .arg(fs.path("root"))
                .arg(&view),
        );
        let host = Host {
            fs,
            config,
            mounts: vec![view.clone(), storage],
        };
        common::check(
            Command::new("mount")
                .args(["-o", "remount,bind,strictatime"])
                .arg(&view),
        );
        Some(host)
    }

    fn view(&self) -> &Path {
        &self.mounts[0]
    }

    /// Unmounts the storage, in both views: `/persist` is a plain directory of the root.
    fn unmount_storage(&mut self) {
        common::check(Command::new("umount").arg(self.view().join("persist")));
        common::check(Command::new("umount").arg(self.live("persist")));
        self.mounts.truncate(1);
    }

    /// Mounts the storage again (seen by imperm only).
    fn mount_storage(&self) {
        common::check(
            Command::new("mount")
                .args(["-o", "subvol=persist", &self.fs.device])
                .arg(self.view().join("persist")),
        );
    }

    fn live(&self, rel: &str) -> PathBuf {
        self.fs.path("root").join(rel.trim_start_matches('/'))
    }

    fn stored(&self, rel: &str) -> PathBuf {
        self.live("persist").join(rel.trim_start_matches('/'))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imperm"));
        cmd.env(imperm::commands::NOW_ENV, NOW)
            .env_remove("IMPERM_FAILPOINT")
            .arg("--root")
            .arg(self.view())
            .arg("--config")
            .arg(&self.config);
        cmd
    }

    fn imperm(&self, args: &[&str]) -> Output {
        common::run(self.command().args(args))
    }

    /// Both sides, every entry with everything about it, ctimes included: what no
    /// command that changes nothing can change.
    fn state(&self) -> State {
        let mut live = describe_with(&self.live("/"), true, false);
        live.retain(|k, _| !k.starts_with(b"persist"));
        (live, describe_with(&self.live("persist"), true, false))
    }
}

type State = (BTreeMap<Vec<u8>, String>, BTreeMap<Vec<u8>, String>);

/// Asserts two descriptions are the same, naming the first entry that differs.
fn assert_same(a: &BTreeMap<Vec<u8>, String>, b: &BTreeMap<Vec<u8>, String>, what: &str) {
    let keys: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    for k in keys {
        assert_eq!(
            a.get(k),
            b.get(k),
            "{what}: {} differs",
            String::from_utf8_lossy(k)
        );
    }
}

fn assert_same_state(a: &State, b: &State, what: &str) {
    assert_same(&a.0, &b.0, &format!("{what} (live root)"));
    assert_same(&a.1, &b.1, &format!("{what} (storage)"));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

fn entry<'a>(report: &'a Value, path: &str) -> &'a Value {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("no entry {path} in {report:#}"))
}

/// Every entry below `base` (relative path bytes → what it is), never following a
/// symlink: kind, mode, owner, size, atime and mtime in ns, (with `ctime`) ctime, content
/// hash, link target, device number, xattrs, and for hard links the first name of the
/// inode in the tree and the link count.
fn describe(base: &Path, ctime: bool) -> BTreeMap<Vec<u8>, String> {
    describe_with(base, ctime, true)
}

/// [`describe`], with or without the access times of symlinks (reading a symlink sets
/// its access time and nothing prevents it: the live side's move when imperm reads them).
fn describe_with(base: &Path, ctime: bool, link_atime: bool) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut first: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = if rel.as_os_str().is_empty() {
            base.to_path_buf()
        } else {
            base.join(&rel)
        };
        let m = fs::symlink_metadata(&path).unwrap();
        let ft = FileType::from_raw_mode(m.mode());
        let atime = if ft == FileType::Symlink && !link_atime {
            "-".to_string()
        } else {
            format!("{}.{:09}", m.atime(), m.atime_nsec())
        };
        let mut line = format!(
            "{ft:?} {:o} {}:{} atime={atime} mtime={}.{:09}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec()
        );
        if ctime {
            line += &format!(" ctime={}.{:09}", m.ctime(), m.ctime_nsec());
        }
        match ft {
            FileType::RegularFile => {
                let data = fs::read(&path).unwrap();
                line += &format!(
                    " size={} blake3={}",
                    data.len(),
                    blake3::hash(&data).to_hex()
                );
                if m.nlink() > 1 {
                    let key = (m.dev(), m.ino());
                    let name = first
                        .entry(key)
                        .or_insert_with(|| rel.as_os_str().as_bytes().to_vec());
                    line += &format!(
                        " nlink={} first={}",
                        m.nlink(),
                        String::from_utf8_lossy(name)
                    );
                }
            }
            FileType::Symlink => {
                line += &format!(" -> {:?}", fs::read_link(&path).unwrap());
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                line += &format!(" rdev={}", m.rdev());
            }
            FileType::Directory => {
                let mut names: Vec<OsString> = fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                names.sort();
                for n in names.into_iter().rev() {
                    stack.push(rel.join(n));
                }
            }
            _ => {}
        }
        line += &format!(" xattrs={:?}", xattrs(&path));
        out.insert(rel.as_os_str().as_bytes().to_vec(), line);
    }
    // Hard links are described in walk order: name the group by its smallest name.
    out
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut buf = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(path, &mut buf[..]) {
        Ok(n) => n,
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    for key in buf[..n].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, OsStr::from_bytes(key), &mut value[..]).unwrap();
        value.truncate(len);
        out.push((String::from_utf8_lossy(key).into_owned(), value));
    }
    out.sort();
    out
}

fn set_times(path: &Path, sec: i64, nsec: i64) {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: Timespec {
                tv_sec: sec - 1000,
                tv_nsec: (nsec / 2) as _,
            },
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// A POSIX ACL as the kernel stores it in `system.posix_acl_access`: user::rw-,
/// user:1000:r--, group::r--, mask::r--, other::---.
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

/// A service's state, with every kind of file there is, below `dir`.
fn service_tree(dir: &Path) {
    fs::create_dir_all(dir.join("data/deep/er")).unwrap();
    fs::write(dir.join("data/db"), b"rows and rows\n".repeat(1000)).unwrap();
    fs::write(dir.join("data/empty"), b"").unwrap();
    // Sparse: 64 MiB with 4 KiB of data in the middle.
    let sparse = fs::File::create(dir.join("data/sparse.img")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 32 << 20).unwrap();
    drop(sparse);
    fs::write(dir.join("data/deep/er/leaf"), "leaf").unwrap();
    fs::hard_link(dir.join("data/db"), dir.join("data/deep/db-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("data/db", dir.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("../nowhere/at/all", dir.join("dangling")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    fs::write(dir.join("setuid"), "#!/bin/sh\n").unwrap();
    fs::write(dir.join("with-acl"), "acl").unwrap();
    rustix::fs::setxattr(
        dir.join("with-acl"),
        "system.posix_acl_access",
        &acl(),
        XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        dir.join("data/db"),
        "user.imperm-test",
        b"value\0with nul",
        XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(dir.join("data"), "user.dir", b"d", XattrFlags::empty()).unwrap();
    for odd in [
        &b"new\nline"[..],
        b"not-utf8-\xff\xfe",
        b"back\\slash",
        b" leading space",
    ] {
        fs::write(dir.join(OsStr::from_bytes(odd)), odd).unwrap();
    }
    // A socket: never copied (its program makes it again), said so.
    drop(std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap());
    fs::create_dir(dir.join("private")).unwrap();
    fs::write(dir.join("private/key"), "secret").unwrap();
    // Owners, modes, then times last (each change moves the parent's mtime).
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            all.push(p);
        }
    }
    all.push(dir.to_path_buf());
    for p in &all {
        chown(p, 1234, 5678);
    }
    fs::set_permissions(dir.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(dir.join("private/key"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(dir.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o750)).unwrap();
    // Deepest first, so that no later change moves a time already set.
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_times(p, 1_600_000_000 + i as i64, 123_456_789 + i as i64);
    }
}

/// The live tree with odd parents: `/var` 0751 owned 42:43 (made as is in the storage).
fn live_tree(host: &Host) {
    let var = host.live("var");
    fs::create_dir_all(var.join("lib")).unwrap();
    chown(&var, 42, 43);
    fs::set_permissions(&var, fs::Permissions::from_mode(0o751)).unwrap();
    service_tree(&host.live(SVC));
    fs::create_dir_all(host.live("etc")).unwrap();
    fs::write(host.live("etc/machine-id"), "0123456789abcdef\n").unwrap();
}

/// The live entry and its copy, described the same way (no ctime: a copy has its own).
fn assert_copied_exactly(host: &Host, rel: &str) {
    let mut live = describe_with(&host.live(rel), false, false);
    live.retain(|_, v| !v.starts_with("Socket"));
    let copy = describe_with(&host.stored(rel), false, false);
    assert_eq!(live.len(), copy.len(), "{rel}: entries differ in number");
    for (k, v) in &live {
        assert_eq!(
            Some(v),
            copy.get(k),
            "{rel}/{}: the copy differs",
            String::from_utf8_lossy(k)
        );
    }
}

fn no_temporaries(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            let b = name.as_bytes();
            assert!(
                !(b.ends_with(b".imperm-restore") || b.ends_with(b".imperm-parent")),
                "left over: {:?}",
                e.path()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

#[test]
fn every_kind_of_file_is_copied_exactly_and_the_live_root_is_untouched() {
    let Some(host) = Host::new(
        "migrate_exact",
        &["/var/lib/svc", "/var/lib/gone"],
        &["/etc/machine-id"],
    ) else {
        return;
    };
    live_tree(&host);
    let before = host.state().0;
    let links_before = describe(&host.live(SVC), false);
    let out = host.imperm(&["--format", "json", "migrate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(entry(&report, "/var/lib/svc")["action"], "copy");
    assert_eq!(entry(&report, "/var/lib/svc")["done"], true);
    let reason = entry(&report, "/var/lib/svc")["reason"].as_str().unwrap();
    assert!(
        reason.contains("not copied: /var/lib/svc/sock (a socket"),
        "{reason}"
    );
    assert!(!host.stored("var/lib/svc/sock").exists());
    assert_eq!(entry(&report, "/var/lib/gone")["action"], "absent");
    assert_eq!(entry(&report, "/etc/machine-id")["action"], "copy");
    assert_copied_exactly(&host, SVC);
    assert_copied_exactly(&host, "etc/machine-id");
    // Sparse stays sparse; hard links stay linked; parents as on the live root.
    let sparse = fs::metadata(host.stored("var/lib/svc/data/sparse.img")).unwrap();
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "{} blocks",
        sparse.blocks()
    );
    let a = fs::metadata(host.stored("var/lib/svc/data/db")).unwrap();
    let b = fs::metadata(host.stored("var/lib/svc/data/deep/db-link")).unwrap();
    assert_eq!(a.ino(), b.ino());
    let var = fs::metadata(host.stored("var")).unwrap();
    assert_eq!((var.uid(), var.gid(), var.mode() & 0o7777), (42, 43, 0o751));
    assert_same(&host.state().0, &before, "the live root");
    no_temporaries(&host.stored("/"));
    // Symlinks keep the access time they had before anything read them.
    let copy = describe(&host.stored(SVC), false);
    for name in ["abs-link", "rel-link", "dangling"] {
        assert_eq!(
            copy[name.as_bytes()],
            links_before[name.as_bytes()],
            "{name}"
        );
    }
}

#[test]
fn a_second_run_skips_what_is_the_same_and_changes_nothing() {
    let Some(host) = Host::new("migrate_twice", &["/var/lib/svc"], &["/etc/machine-id"]) else {
        return;
    };
    live_tree(&host);
    assert_eq!(host.imperm(&["migrate"]).status.code(), Some(0));
    let before = host.state();
    let out = host.imperm(&["--format", "json", "migrate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(entry(&report, "/var/lib/svc")["action"], "skip");
    assert_eq!(entry(&report, "/etc/machine-id")["action"], "skip");
    assert_same_state(&host.state(), &before, "a run that changes nothing");
}

#[test]
fn a_dry_run_says_what_it_would_do_and_changes_nothing() {
    let Some(host) = Host::new(
        "migrate_dry",
        &["/var/lib/svc", "/var/lib/gone"],
        &["/etc/machine-id"],
    ) else {
        return;
    };
    live_tree(&host);
    fs::create_dir_all(host.stored("etc")).unwrap();
    fs::write(host.stored("etc/machine-id"), "0123456789abcdef\n").unwrap();
    set_times(&host.stored("etc/machine-id"), 5, 5);
    let before = host.state();
    let out = host.imperm(&["--format", "json", "migrate", "--dry-run"]);
    // The machine-id differs (its time): a run would refuse, so the dry run says exit 1.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["dry_run"], true);
    let svc = entry(&report, "/var/lib/svc");
    assert_eq!(svc["action"], "copy");
    assert_eq!(svc["done"], Value::Null);
    assert!(svc["bytes"].as_u64().unwrap() > 64 << 20, "{svc}");
    assert_eq!(entry(&report, "/var/lib/gone")["action"], "absent");
    let id = entry(&report, "/etc/machine-id");
    assert_eq!(id["action"], "refuse");
    assert!(
        id["reason"].as_str().unwrap().contains("modification time"),
        "{id}"
    );
    let space = &report["space"][0];
    assert_eq!(space["storages"][0], "/persist");
    assert!(
        space["free"].as_u64().unwrap() > 0 && space["enough"] == true,
        "{space}"
    );
    assert_same_state(&host.state(), &before, "a run that changes nothing");
    // Human output: one line per entry, with the action.
    let out = host.imperm(&["migrate", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("copy") && l.contains("/var/lib/svc")),
        "{text}"
    );
    assert!(text.contains("space"), "{text}");
}

/// Asserts a refusal: exit 2, one line on stderr holding `want`, nothing changed.
fn assert_refused(host: &Host, args: &[&str], want: &str) {
    let before = host.state();
    let out = host.imperm(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: wanted {want:?} in {err}");
    assert_same_state(&host.state(), &before, &format!("{args:?}"));
}

#[test]
fn a_storage_copy_that_differs_is_refused_and_kept_aside_with_force() {
    let Some(host) = Host::new("migrate_differs", &["/var/lib/svc", "/var/lib/other"], &[]) else {
        return;
    };
    live_tree(&host);
    fs::create_dir_all(host.live("var/lib/other")).unwrap();
    fs::write(host.live("var/lib/other/f"), "new").unwrap();
    fs::create_dir_all(host.stored("var/lib/svc/data")).unwrap();
    fs::write(host.stored("var/lib/svc/data/db"), "older data").unwrap();
    assert_refused(
        &host,
        &["migrate"],
        "/var/lib/svc: the storage's copy differs (",
    );
    let old = describe(&host.stored(SVC), false);
    let out = host.imperm(&["--format", "json", "migrate", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    let svc = entry(&report, "/var/lib/svc");
    assert_eq!(svc["action"], "replace");
    let aside = format!("var/lib/svc.imperm-replaced-{STAMP}");
    assert_eq!(svc["aside"], format!("/persist/{aside}"));
    assert_eq!(
        describe(&host.stored(&aside), false),
        old,
        "the old copy is kept as it was"
    );
    assert_copied_exactly(&host, SVC);
    assert_copied_exactly(&host, "var/lib/other");
}

#[test]
fn storage_refusals_write_nothing() {
    let Some(mut host) = Host::new("migrate_storage", &["/var/lib/svc"], &[]) else {
        return;
    };
    live_tree(&host);
    // A symlink where a parent should be, leading out of the storage.
    let outside = host.fs.path("outside");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, host.stored("var")).unwrap();
    assert_refused(
        &host,
        &["migrate"],
        "a symlink stands in the way at /persist/var",
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    fs::remove_file(host.stored("var")).unwrap();
    // The storage a plain directory of the root: the reset would wipe the copy.
    host.unmount_storage();
    assert_refused(
        &host,
        &["migrate"],
        "storage /persist is not a filesystem of its own: it lies on the root",
    );
    // The storage itself a symlink.
    fs::remove_dir(host.live("persist")).unwrap();
    std::os::unix::fs::symlink(&outside, host.live("persist")).unwrap();
    let out = host.imperm(&["migrate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("storage /persist is a symlink"), "{err}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    // Missing.
    fs::remove_file(host.live("persist")).unwrap();
    let out = host.imperm(&["migrate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("storage /persist does not exist"),
        "{}",
        stderr(&out)
    );
    // Bad paths.
    fs::create_dir(host.live("persist")).unwrap();
    host.mount_storage();
    assert_refused(&host, &["migrate", "var/lib/svc"], "\"var/lib/svc\"");
    std::os::unix::fs::symlink(host.live("var/lib"), host.live("var/link")).unwrap();
    assert_refused(
        &host,
        &["migrate", "/var/link/svc"],
        "/var/link/svc: it is reached through a symlink on the live root",
    );
    assert_refused(
        &host,
        &["migrate", "/persist/x"],
        "/persist/x overlaps its storage",
    );
}

#[test]
fn a_storage_without_room_is_refused_before_anything_is_written() {
    let Some(mut host) = Host::new("migrate_space", &["/var/lib/big", "/var/lib/small"], &[])
    else {
        return;
    };
    fs::create_dir_all(host.live("var/lib/big")).unwrap();
    fs::create_dir_all(host.live("var/lib/small")).unwrap();
    fs::write(host.live("var/lib/small/f"), "small").unwrap();
    fs::write(host.live("var/lib/big/f"), vec![7u8; 4 << 20]).unwrap();
    common::check(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(host.live("persist")),
    );
    host.mounts.push(host.live("persist"));
    let seen = host.view().join("persist");
    common::check(
        Command::new("mount")
            .arg("--bind")
            .arg(host.live("persist"))
            .arg(&seen),
    );
    host.mounts.push(seen);
    assert_refused(&host, &["migrate"], "storage /persist has ");
    let out = host.imperm(&["migrate"]);
    assert!(
        stderr(&out).contains("the copy needs 4.0 MiB"),
        "{}",
        stderr(&out)
    );
    let out = host.imperm(&["--format", "json", "migrate", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["space"][0]["enough"], false);
    let out = host.imperm(&["migrate", "--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT ENOUGH"));
    // One path that fits is copied.
    let out = host.imperm(&["migrate", "/var/lib/small"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(host.stored("var/lib/small/f")).unwrap(), b"small");
}

/// Spawns a migrate, kills it with SIGKILL after `delay`; whether it was still running.
fn kill_after(host: &Host, args: &[&str], delay: Duration) -> bool {
    let mut child = host
        .command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().unwrap().code().is_none()
}

#[test]
fn a_migrate_killed_at_random_moments_is_finished_by_the_next_run() {
    let Some(host) = Host::new(
        "migrate_sigkill",
        &["/var/lib/svc", "/var/lib/many"],
        &["/etc/machine-id"],
    ) else {
        return;
    };
    live_tree(&host);
    for i in 0..1500 {
        let d = host.live(&format!("var/lib/many/d{}", i % 30));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), format!("{i}").repeat(i % 300)).unwrap();
    }
    let before = host.state().0;
    // Pseudo-random moments, the same in every run of the test.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut killed = 0;
    for _ in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let ms = seed % 400;
        killed += usize::from(kill_after(&host, &["migrate"], Duration::from_millis(ms)));
    }
    let out = host.imperm(&["migrate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_copied_exactly(&host, SVC);
    assert_copied_exactly(&host, "var/lib/many");
    assert_copied_exactly(&host, "etc/machine-id");
    no_temporaries(&host.stored("/"));
    assert_same(&host.state().0, &before, "the live root");
    eprintln!("{killed} of 8 kills landed inside a migrate");
}

#[test]
fn a_migrate_killed_after_each_step_is_finished_by_the_next_run() {
    for failpoint in ["restore-copied", "restore-placed", "restore-aside"] {
        let Some(host) = Host::new("migrate_failpoint", &["/var/lib/svc"], &[]) else {
            return;
        };
        live_tree(&host);
        // An older copy, so that the run replaces it (and passes every failpoint).
        fs::create_dir_all(host.stored(SVC)).unwrap();
        fs::write(host.stored("var/lib/svc/old"), "old").unwrap();
        let out = common::run(
            host.command()
                .env("IMPERM_FAILPOINT", failpoint)
                .args(["migrate", "--force"]),
        );
        assert_eq!(out.status.code(), None, "{failpoint}: {}", stderr(&out));
        let out = host.imperm(&["migrate", "--force"]);
        assert_eq!(out.status.code(), Some(0), "{failpoint}: {}", stderr(&out));
        assert_copied_exactly(&host, SVC);
        no_temporaries(&host.stored("/"));
        let kept: Vec<_> = fs::read_dir(host.stored("var/lib"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.as_bytes().starts_with(b"svc.imperm-replaced-"))
            .collect();
        assert_eq!(kept.len(), 1, "{failpoint}: {kept:?}");
        let old = host.stored("var/lib").join(&kept[0]).join("old");
        assert_eq!(fs::read(old).unwrap(), b"old", "{failpoint}");
    }
}

/// `busy.service`, whose state directory is `/var/lib/busy`, and `/var/lib/calm`.
fn busy_and_calm(host: &Host) {
    fs::create_dir_all(host.live("etc/systemd/system")).unwrap();
    fs::write(
        host.live("etc/systemd/system/busy.service"),
        "[Service]\nExecStart=/bin/busy\nStateDirectory=busy\n",
    )
    .unwrap();
    fs::create_dir_all(host.live("var/lib/busy")).unwrap();
    fs::create_dir_all(host.live("var/lib/calm")).unwrap();
}

#[test]
fn a_path_that_keeps_changing_is_not_migrated_and_its_unit_named() {
    let Some(host) = Host::new("migrate_changing", &["/var/lib/busy", "/var/lib/calm"], &[]) else {
        return;
    };
    busy_and_calm(&host);
    fs::write(host.live("var/lib/calm/f"), "calm").unwrap();
    for i in 0..200 {
        fs::write(host.live(&format!("var/lib/busy/f{i}")), "x".repeat(4096)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let log = host.live("var/lib/busy/log");
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                fs::write(&log, n.to_string()).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let out = host.imperm(&["--format", "json", "migrate"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    let busy = entry(&report, "/var/lib/busy");
    assert_eq!(busy["done"], false, "{busy}");
    assert_eq!(busy["tries"], 3);
    assert_eq!(busy["units"][0], "busy.service");
    let reason = busy["reason"].as_str().unwrap();
    assert!(reason.contains("stop busy.service"), "{reason}");
    assert!(
        !host.stored("var/lib/busy").exists(),
        "a copy that was not verified took its name"
    );
    assert_eq!(entry(&report, "/var/lib/calm")["done"], true);
    no_temporaries(&host.stored("/"));
}

#[test]
fn the_lock_restore_takes_and_the_storage_lock_are_taken() {
    let Some(host) = Host::new("migrate_lock", &["/var/lib/svc"], &[]) else {
        return;
    };
    live_tree(&host);
    // Locks held by a process of their own (see common::HeldLock).
    let top = common::HeldLock::new(host.fs.top());
    let mounted = host.fs.top().to_str().unwrap().to_string();
    assert_refused(
        &host,
        &["migrate", "--fs", "btrfs", "--mounted", &mounted],
        "holds the lock",
    );
    drop(top);
    let storage = common::HeldLock::new(&host.live("persist"));
    assert_refused(
        &host,
        &["migrate"],
        "another imperm (migrate, stray or restore) holds its lock",
    );
    drop(storage);
    let out = host.imperm(&["migrate", "--fs", "btrfs", "--mounted", &mounted]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_copied_exactly(&host, SVC);
}

#[test]
fn parents_left_by_a_killed_run_are_never_half_made() {
    let Some(host) = Host::new("migrate_parents", &["/var/lib/svc"], &[]) else {
        return;
    };
    live_tree(&host);
    // What a run killed between making a parent and renaming it leaves.
    fs::create_dir_all(host.stored("")).unwrap();
    fs::create_dir(host.stored(".var.imperm-parent")).unwrap();
    let out = host.imperm(&["migrate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!host.stored(".var.imperm-parent").exists());
    let var = fs::metadata(host.stored("var")).unwrap();
    assert_eq!((var.uid(), var.gid(), var.mode() & 0o7777), (42, 43, 0o751));
    assert_copied_exactly(&host, SVC);
}

// `persist add --move`: the path migrated first, then its entry written.

const NIX: &str = "{ ... }:\n{\n  environment.persistence.\"/persist\" = {\n    directories = [ \"/var/lib/nixos\" ];\n  };\n}\n";

#[test]
fn persist_add_move_migrates_then_writes_the_entry() {
    let Some(host) = Host::new("migrate_persist_move", &[], &[]) else {
        return;
    };
    live_tree(&host);
    let nix = host.fs.scratch().join("host.nix");
    fs::write(&nix, NIX).unwrap();
    let nix_arg = nix.to_str().unwrap();
    let out = host.imperm(&[
        "persist",
        "add",
        "/var/lib/svc",
        "--nix-file",
        nix_arg,
        "--move",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_copied_exactly(&host, SVC);
    let text = fs::read_to_string(&nix).unwrap();
    assert!(text.contains("\"/var/lib/svc\""), "{text}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("copied") && shown.contains("added 1 entry"),
        "{shown}"
    );
}

#[test]
fn persist_add_move_writes_nothing_when_the_path_cannot_be_migrated() {
    let Some(host) = Host::new("migrate_persist_move_refused", &[], &[]) else {
        return;
    };
    live_tree(&host);
    fs::create_dir_all(host.stored(SVC)).unwrap();
    fs::write(host.stored("var/lib/svc/other"), "other").unwrap();
    let nix = host.fs.scratch().join("host.nix");
    fs::write(&nix, NIX).unwrap();
    let nix_arg = nix.to_str().unwrap();
    let before = host.state();
    let out = host.imperm(&[
        "persist",
        "add",
        "/var/lib/svc",
        "--nix-file",
        nix_arg,
        "--move",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the storage's copy differs"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read_to_string(&nix).unwrap(),
        NIX,
        "the entry was written"
    );
    assert_same_state(&host.state(), &before, "persist add --move refused");
    // A dry run says what the move would do, and writes nothing either.
    let out = host.imperm(&[
        "--format",
        "json",
        "persist",
        "add",
        "/var/lib/svc",
        "--nix-file",
        nix_arg,
        "--move",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json(&out)["migrate"]["entries"][0]["action"], "refuse");
    assert_eq!(fs::read_to_string(&nix).unwrap(), NIX);
}

/// A dry run through the library, with `running` answering for systemd.
fn plan(
    config: &imperm::config::Config,
    units: &[imperm::discover::units::UnitDir],
    running: &dyn Fn(&[String]) -> Vec<String>,
) -> imperm::rollout::migrate::MigrateReport {
    imperm::rollout::migrate::migrate(&imperm::rollout::migrate::Request {
        config,
        paths: &[],
        storage: None,
        dry_run: true,
        force: false,
        stamp: STAMP.into(),
        units,
        running,
        progress: false,
    })
    .unwrap()
}

#[test]
fn a_running_unit_that_owns_an_entry_is_warned_about_before_the_copy() {
    let Some(host) = Host::new("migrate_running", &["/var/lib/busy", "/var/lib/calm"], &[]) else {
        return;
    };
    busy_and_calm(&host);
    let config = imperm::config::Config::load(&imperm::config::LoadOptions {
        root: host.view().to_path_buf(),
        config: Some(host.config.clone()),
        persistence_json: None,
    })
    .unwrap();
    let tree = imperm::beneath::Tree::open(host.view()).unwrap();
    let units = imperm::discover::units::read(&tree).dirs;
    let asked = std::cell::RefCell::new(Vec::new());
    // systemd, as `systemctl is-active` would answer: every unit asked about runs.
    let running = |names: &[String]| {
        asked.borrow_mut().extend(names.iter().cloned());
        names.to_vec()
    };
    let report = plan(&config, &units, &running);
    assert_eq!(
        *asked.borrow(),
        ["busy.service"],
        "only owners of entries to copy"
    );
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].starts_with("busy.service is running and writes /var/lib/busy"),
        "{:?}",
        report.warnings
    );
    // What is not copied needs no warning: nothing is asked.
    asked.borrow_mut().clear();
    fs::create_dir_all(host.stored("var/lib")).unwrap();
    let out = host.imperm(&["migrate", "/var/lib/busy"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = plan(&config, &units, &running);
    assert!(asked.borrow().is_empty(), "{:?}", asked.borrow());
    assert!(report.warnings.is_empty());
}

/// migrate's record of what it verified is imperm's own file in the storage: `stray`
/// never reports it (nor the temporary name a write killed half-way leaves), and it
/// names every entry migrate verified, with the copy's digest.
#[test]
fn the_record_of_verified_copies_is_kept_and_is_not_stray() {
    let Some(host) = Host::new("migrate_record", &["/var/lib/svc"], &["/etc/machine-id"]) else {
        return;
    };
    live_tree(&host);
    assert_eq!(host.imperm(&["migrate"]).status.code(), Some(0));
    let record: Value =
        serde_json::from_slice(&fs::read(host.stored(".imperm-migrate.json")).unwrap()).unwrap();
    assert_eq!(record["version"], 1);
    let entries = record["entries"].as_object().unwrap();
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        ["/etc/machine-id", "/var/lib/svc"]
    );
    let svc = &entries["/var/lib/svc"];
    assert_eq!(svc["digest"].as_str().unwrap().len(), 64, "{svc}");
    assert!(svc["files"].as_u64().unwrap() > 0);
    let mode = fs::metadata(host.stored(".imperm-migrate.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A write of the record killed before its rename leaves this.
    fs::write(
        host.stored("..imperm-migrate.json.4242.1764158400000000000.tmp"),
        "{",
    )
    .unwrap();
    let out = host.imperm(&["--format", "json", "stray"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A record that is not one is said and written anew; nothing is refused for it.
    fs::write(host.stored(".imperm-migrate.json"), "not json").unwrap();
    let out = host.imperm(&["--format", "json", "migrate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let notes = json(&out)["notes"].to_string();
    assert!(
        notes.contains(".imperm-migrate.json") && notes.contains("written anew"),
        "{notes}"
    );
    let record: Value =
        serde_json::from_slice(&fs::read(host.stored(".imperm-migrate.json")).unwrap()).unwrap();
    assert_eq!(record["entries"].as_object().unwrap().len(), 2);
}

/// `nixos-rebuild switch` with an entry newly declared mounts the storage's empty copy
/// over the live path before migrate copied it: the live data lies hidden under the
/// mount, and the next boot loses it. migrate must not take the mount for a finished
/// copy ("skip: bind-mounted"), and status must not call the entry kept.
#[test]
fn live_state_hidden_under_a_bind_mount_of_the_storage_is_refused_and_reported() {
    let Some(mut host) = Host::new("migrate_hidden", &["/var/lib/svc"], &[]) else {
        return;
    };
    live_tree(&host);
    fs::create_dir_all(host.stored(SVC)).unwrap();
    let over = host.view().join(SVC);
    common::check(
        Command::new("mount")
            .arg("--bind")
            .arg(host.view().join("persist").join(SVC))
            .arg(&over),
    );
    host.mounts.push(over.clone());
    let before = host.state();
    let out = host.imperm(&["migrate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("/var/lib/svc: bind-mounted from the storage already, but the root's own copy under the mount still holds ")
            && err.contains("which the next boot loses"),
        "{err}"
    );
    assert_same_state(&host.state(), &before, "a refused run");
    let out = host.imperm(&["--format", "json", "status", "--no-check"]);
    let v = json(&out);
    let svc = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/var/lib/svc")
        .unwrap();
    assert_eq!(svc["state"], "hidden", "{svc}");
    assert_eq!(v["ready"], false);
    // Unmounted, the same tree is a plain copy to make.
    common::check(Command::new("umount").arg(&over));
    host.mounts.pop();
    let out = host.imperm(&["--format", "json", "migrate", "--dry-run"]);
    assert_eq!(entry(&json(&out), "/var/lib/svc")["action"], "refuse");
    // (the empty directory the mount stood on differs from the live tree: --force)
    let out = host.imperm(&["migrate", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// An entry named like imperm's own temporary name of another entry's copy would be
/// taken for a leftover half-way through a run: refused before anything is written.
#[test]
fn an_entry_named_like_imperms_own_files_is_refused_before_any_copy() {
    let Some(host) = Host::new(
        "migrate_reserved",
        &["/var/lib/svc", "/var/lib/.svc.imperm-restore"],
        &[],
    ) else {
        return;
    };
    live_tree(&host);
    fs::create_dir_all(host.live("var/lib/.svc.imperm-restore")).unwrap();
    let before = host.state();
    let out = host.imperm(&["migrate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/var/lib/.svc.imperm-restore has a name imperm gives its own files"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1);
    assert_same_state(&host.state(), &before, "a refused run");
}
