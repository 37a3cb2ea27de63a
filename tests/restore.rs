//! `imperm restore` on real loop btrfs: a live root `@root` whose old state a reset kept as
//! snapshot 20260115T063000Z, with persistent storages mounted in it as at boot. Every
//! refusal leaves the trees as they were; nothing is ever renamed onto an existing name;
//! special files come back or are reported; a restore killed at any step is finished or
//! refused cleanly by the next run.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{LoopBtrfs, btrfs};
use serde_json::Value;

const SNAP: &str = "20260115T063000Z";
const NOW: &str = "2026-01-15T06:30:00Z";

/// A live root with its storages mounted; unmounts them before the filesystem goes.
struct Host {
    mounts: Vec<PathBuf>,
    fs: LoopBtrfs,
    config: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        // Whatever a failed test moved elsewhere: everything below this test's top level.
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.fs.top())
            .status();
    }
}

impl Host {
    /// `@root` as `populate` leaves it, reset (so its content is in snapshot SNAP and the
    /// live root is empty), then each storage (`/persist`) a subvolume (`@persist`)
    /// mounted at its place in the live root, as the boot does it.
    fn new(
        test: &str,
        config: &str,
        storages: &[&str],
        populate: impl FnOnce(&Path),
    ) -> Option<Host> {
        let fs = btrfs(test)?;
        fs.subvolume("@root");
        populate(&fs.path("@root"));
        let path = fs.scratch().join("imperm.toml");
        fs::write(&path, config).unwrap();
        let mut host = Host {
            mounts: Vec::new(),
            fs,
            config: path,
        };
        let out = host.imperm(&["reset"]);
        assert!(out.status.success(), "{}", stderr(&out));
        for storage in storages {
            let subvolume = format!("@{}", storage.trim_start_matches('/'));
            host.fs.subvolume(&subvolume);
            host.mount_subvolume(&subvolume, storage);
        }
        Some(host)
    }

    fn live(&self, rel: &str) -> PathBuf {
        self.fs.path("@root").join(rel.trim_start_matches('/'))
    }

    fn mount_subvolume(&mut self, subvolume: &str, at: &str) {
        let dir = self.live(at);
        fs::create_dir_all(&dir).unwrap();
        common::check(
            Command::new("mount")
                .args([
                    "-o",
                    &format!("subvol={subvolume},noatime"),
                    &self.fs.device,
                ])
                .arg(&dir),
        );
        self.mounts.push(dir);
    }

    fn mount_tmpfs(&mut self, at: &str) {
        let dir = self.live(at);
        fs::create_dir_all(&dir).unwrap();
        common::check(
            Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(&dir),
        );
        self.mounts.push(dir);
    }

    fn bind(&mut self, from: &Path, at: &Path) {
        common::check(Command::new("mount").arg("--bind").arg(from).arg(at));
        self.mounts.push(at.to_path_buf());
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imperm"));
        cmd.env(imperm::commands::NOW_ENV, NOW)
            .arg("--root")
            .arg(self.fs.path("@root"))
            .arg("--config")
            .arg(&self.config);
        cmd
    }

    fn imperm(&self, args: &[&str]) -> Output {
        self.imperm_os(&args.iter().map(OsStr::new).collect::<Vec<_>>())
    }

    fn imperm_os(&self, args: &[&OsStr]) -> Output {
        common::run(
            self.command()
                .args(args)
                .args(["--fs", "btrfs", "--mounted"])
                .arg(self.fs.top()),
        )
    }

    /// Everything a command could have changed: subvolumes, the live tree (mounted
    /// storages included) and every storage subvolume.
    fn state(&self) -> (String, Vec<String>, Vec<String>) {
        let mut storages = Vec::new();
        for name in fs::read_dir(self.fs.top()).unwrap() {
            let name = name.unwrap().file_name().to_string_lossy().into_owned();
            if name != "@root" && name != "@snapshots" {
                storages.extend(
                    self.fs
                        .tree(&name)
                        .into_iter()
                        .map(|l| format!("{name}: {l}")),
                );
            }
        }
        (self.fs.subvolumes(), self.fs.tree("@root"), storages)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(out), stderr(out)))
}

fn write(root: &Path, rel: &str, content: &str) {
    // Never an absolute `rel`: joining it would leave the tree.
    let path = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

const ONE_STORAGE: &str = "[persistence.\"/persist\"]\ndirectories = [\"/var/log\"]\n";

/// Asserts a refusal: exit 2, one line on stderr holding `want`, nothing changed.
fn assert_refused(host: &Host, args: &[&str], want: &str) {
    let before = host.state();
    let out = host.imperm(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: wanted {want:?} in {err}");
    assert_eq!(host.state(), before, "{args:?} wrote something");
}

// Item 1: a kept-aside name is never reused, nothing is renamed onto an existing name.

#[test]
fn two_forced_restores_in_one_second_keep_both_earlier_copies() {
    let Some(host) = Host::new("restore_twice", ONE_STORAGE, &[], |root| {
        write(root, "etc/app.conf", "old");
        write(root, "var/lib/app/data", "old");
    }) else {
        return;
    };
    for (path, file) in [("/etc/app.conf", ""), ("/var/lib/app", "/data")] {
        let target = host.live(path);
        let read = |p: &Path| fs::read_to_string(format!("{}{file}", p.display())).unwrap();
        let put = |content: &str| {
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            if file.is_empty() {
                fs::write(&target, content).unwrap();
            } else {
                fs::create_dir_all(&target).unwrap();
                fs::write(target.join("data"), content).unwrap();
            }
        };
        put("first");
        let mut asides = Vec::new();
        for (round, live) in ["first", "second", "third"].iter().enumerate() {
            if round > 0 {
                put(live);
            }
            let out = host.imperm(&["restore", path, "--force", "--format", "json"]);
            assert!(
                out.status.success(),
                "{path} round {round}: {}",
                stderr(&out)
            );
            let v = json(&out);
            let aside = host.live(v["restored"][0]["replaced"].as_str().unwrap());
            assert!(!asides.contains(&aside), "{path}: {aside:?} reused");
            assert_eq!(
                read(&aside),
                *live,
                "{path}: the copy kept aside in round {round}"
            );
            assert_eq!(read(&target), "old", "{path}: restored");
            asides.push(aside);
        }
        // Every kept copy is still there, each with what it held.
        for (aside, live) in asides.iter().zip(["first", "second", "third"]) {
            assert_eq!(read(aside), live, "{path}: {aside:?}");
        }
        let want: Vec<String> = ["", ".1", ".2"]
            .iter()
            .map(|n| format!("{}.imperm-replaced-{SNAP}{n}", target.display()))
            .collect();
        assert!(want[0].starts_with(&host.live(path).display().to_string()));
        let got: Vec<String> = asides.iter().map(|a| a.display().to_string()).collect();
        assert_eq!(got, want, "{path}");
    }
}

/// A symlink at the target is moved aside as a symlink: what it points to is not touched.
#[test]
fn a_symlink_at_the_target_is_kept_aside_not_followed() {
    let Some(host) = Host::new("restore_symlink_target", ONE_STORAGE, &[], |root| {
        write(root, "etc/app.conf", "old");
        write(root, "var/lib/app/data", "old");
    }) else {
        return;
    };
    let victim = host.fs.scratch().join("victim");
    write(&victim, "file", "precious");
    fs::create_dir_all(host.live("/etc")).unwrap();
    fs::create_dir_all(host.live("/var/lib")).unwrap();
    std::os::unix::fs::symlink(victim.join("file"), host.live("/etc/app.conf")).unwrap();
    std::os::unix::fs::symlink(&victim, host.live("/var/lib/app")).unwrap();
    for path in ["/etc/app.conf", "/var/lib/app"] {
        let out = host.imperm(&["restore", path, "--force", "--format", "json"]);
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        let aside = host.live(json(&out)["restored"][0]["replaced"].as_str().unwrap());
        assert!(
            fs::symlink_metadata(&aside)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            !fs::symlink_metadata(host.live(path))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
    assert_eq!(host.fs.read("@root/etc/app.conf"), "old");
    assert_eq!(host.fs.read("@root/var/lib/app/data"), "old");
    let victim_tree: Vec<_> = fs::read_dir(&victim)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(victim_tree, ["file"]);
    assert_eq!(fs::read_to_string(victim.join("file")).unwrap(), "precious");
}

#[test]
fn a_user_file_with_the_temporary_name_is_never_removed() {
    let Some(host) = Host::new("restore_temp_name", ONE_STORAGE, &[], |root| {
        write(root, "etc/app.conf", "old");
        write(root, "etc/dir/conf", "old");
    }) else {
        return;
    };
    // A file and a directory of the user's own that carry the temporary names.
    write(&host.live("/"), "etc/.app.conf.imperm-restore", "mine");
    write(&host.live("/"), "etc/.dir.imperm-restore/keep", "mine too");
    assert_refused(
        &host,
        &["restore", "/etc/app.conf"],
        ".app.conf.imperm-restore exists and is not a copy imperm left",
    );
    assert_refused(
        &host,
        &["restore", "/etc/dir"],
        ".dir.imperm-restore exists and is not a copy imperm left",
    );
    assert_eq!(host.fs.read("@root/etc/.app.conf.imperm-restore"), "mine");
    assert_eq!(
        host.fs.read("@root/etc/.dir.imperm-restore/keep"),
        "mine too"
    );
}

/// Killed right after each step (the failpoints abort like kill -9): the next run finishes
/// or refuses cleanly, and neither the kept-aside copy nor the target is ever lost.
#[test]
fn a_restore_killed_after_any_step_loses_nothing() {
    for failpoint in ["restore-copied", "restore-aside", "restore-placed"] {
        for path in ["/etc/app.conf", "/var/lib/app"] {
            let Some(host) = Host::new("restore_failpoint", ONE_STORAGE, &[], |root| {
                write(root, "etc/app.conf", "old");
                write(root, "var/lib/app/data", "old");
                write(root, "var/lib/app/sub/more", "old more");
            }) else {
                return;
            };
            let file = if path == "/etc/app.conf" { "" } else { "/data" };
            let target = host.live(path);
            if file.is_empty() {
                write(&host.live("/"), path, "live");
            } else {
                write(&target, "data", "live");
            }
            let killed = common::run(
                host.command()
                    .env(imperm::snapshots::reset::FAILPOINT_ENV, failpoint)
                    .args(["restore", path, "--force", "--fs", "btrfs", "--mounted"])
                    .arg(host.fs.top()),
            );
            assert_eq!(
                killed.status.code(),
                None,
                "{failpoint} {path}: {}",
                stderr(&killed)
            );
            assert!(stderr(&killed).contains(&format!("failpoint {failpoint}: aborting")));
            // Killed at any step, the target is there: as it was, or restored. (It used to be
            // missing between moving it aside and placing the copy.)
            let now = fs::read_to_string(format!("{}{file}", target.display()));
            assert!(
                matches!(now.as_deref(), Ok("live") | Ok("old")),
                "{failpoint} {path}: the target is {now:?}"
            );

            let out = host.imperm(&["restore", path, "--force"]);
            assert!(out.status.success(), "{failpoint} {path}: {}", stderr(&out));
            let contents = |p: &Path| fs::read_to_string(format!("{}{file}", p.display())).ok();
            assert_eq!(
                contents(&target).as_deref(),
                Some("old"),
                "{failpoint} {path}"
            );
            if !file.is_empty() {
                assert_eq!(host.fs.read("@root/var/lib/app/sub/more"), "old more");
            }
            // "live" survives in some kept-aside copy; the temporary copy is gone.
            let parent = target.parent().unwrap();
            let name = target.file_name().unwrap().to_string_lossy().into_owned();
            let mut kept = Vec::new();
            for entry in fs::read_dir(parent).unwrap() {
                let entry = entry.unwrap().path();
                let n = entry.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    !n.contains("imperm-restore"),
                    "{failpoint} {path}: {n} left"
                );
                if n.starts_with(&format!("{name}.imperm-replaced-")) {
                    kept.extend(contents(&entry));
                }
            }
            assert!(
                kept.contains(&"live".to_string()),
                "{failpoint} {path}: {kept:?}"
            );
        }
    }
}

/// Killed with SIGKILL at arbitrary moments of a larger copy: the next run restores the
/// whole tree, and what was there before is in a kept-aside copy.
#[test]
fn a_restore_killed_at_arbitrary_moments_loses_nothing() {
    let mut interrupted = 0;
    for delay_ms in (0u64..=60).step_by(6) {
        let Some(host) = Host::new("restore_sigkill", ONE_STORAGE, &[], |root| {
            for i in 0..400 {
                write(root, &format!("srv/tree/d{}/f{i}", i % 20), &format!("{i}"));
            }
        }) else {
            return;
        };
        write(&host.live("/"), "srv/tree/live", "live");
        let mut child = host
            .command()
            .args([
                "restore",
                "/srv/tree",
                "--force",
                "--fs",
                "btrfs",
                "--mounted",
            ])
            .arg(host.fs.top())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        interrupted += usize::from(status.code().is_none());
        let out = host.imperm(&["restore", "/srv/tree", "--force"]);
        assert!(
            out.status.success(),
            "after {delay_ms} ms: {}",
            stderr(&out)
        );
        let tree = host.fs.tree("@root/srv/tree");
        assert_eq!(tree.len(), 420, "after {delay_ms} ms: the whole tree");
        let srv: Vec<String> = fs::read_dir(host.live("/srv"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(srv.iter().all(|n| !n.contains("imperm-restore")), "{srv:?}");
        let kept = srv
            .iter()
            .filter(|n| n.starts_with("tree.imperm-replaced-"))
            .filter(|n| host.live(&format!("/srv/{n}/live")).exists())
            .count();
        assert!(
            kept >= 1,
            "after {delay_ms} ms: the live tree was lost: {srv:?}"
        );
    }
    eprintln!("{interrupted} of 11 kills landed inside a restore");
}

// Item 2: --into persist writes only into a storage of its own, the one that declares the
// path, never through a symlink.

const TWO_STORAGES: &str = "[persistence.\"/persist\"]\ndirectories = [\"/var/log\"]\n\n\
                            [persistence.\"/state\"]\ndirectories = [\"/var/lib/app\"]\n";

#[test]
fn into_persist_uses_the_storage_that_declares_the_path() {
    let Some(host) = Host::new(
        "restore_storage",
        TWO_STORAGES,
        &["/persist", "/state"],
        |root| {
            write(root, "var/lib/app/data", "app");
            write(root, "var/lib/other/data", "other");
        },
    ) else {
        return;
    };
    let out = host.imperm(&[
        "restore",
        "/var/lib/app",
        "--into",
        "persist",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.fs.read("@state/var/lib/app/data"), "app");
    assert!(
        !host.fs.path("@persist/var/lib/app").exists(),
        "not in /persist"
    );
    let v = json(&out);
    assert_eq!(v["restored"][0]["storage"], "/state");
    assert!(
        v["restored"][0]["declared"]
            .as_str()
            .unwrap()
            .contains("imperm.toml"),
        "{v}"
    );
    // Declared already: no entry to add.
    assert!(
        !v["entries"].as_str().unwrap().contains("/var/lib/app"),
        "{v}"
    );

    let out = host.imperm(&[
        "restore",
        "/var/lib/other",
        "--into",
        "persist",
        "--color",
        "never",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.fs.read("@persist/var/lib/other/data"), "other");
    let text = stdout(&out);
    assert!(
        text.contains("into /persist, the default storage: no entry declares /var/lib/other"),
        "{text}"
    );
    assert!(
        text.contains(
            "environment.persistence.\"/persist\" = {\n  directories = [\n    \"/var/lib/other\""
        ),
        "{text}"
    );
}

#[test]
fn into_persist_refuses_a_storage_on_the_root() {
    let Some(mut host) = Host::new("restore_storage_on_root", ONE_STORAGE, &[], |root| {
        write(root, "var/lib/app/data", "app");
    }) else {
        return;
    };
    let args = ["restore", "/var/lib/app", "--into", "persist"];
    assert_refused(&host, &args, "storage /persist does not exist");
    // A plain directory in the live root: the next reset wipes it.
    fs::create_dir(host.live("/persist")).unwrap();
    assert_refused(
        &host,
        &args,
        "storage /persist is not a filesystem of its own: it lies on the root, which the next reset wipes",
    );
    // A bind mount of a directory of the root is still the root.
    fs::create_dir(host.live("/data")).unwrap();
    let (from, at) = (host.live("/data"), host.live("/persist"));
    host.bind(&from, &at);
    assert_refused(
        &host,
        &args,
        "storage /persist is not a filesystem of its own",
    );
    assert!(fs::read_dir(host.live("/data")).unwrap().next().is_none());
}

#[test]
fn into_persist_refuses_a_symlinked_storage() {
    let Some(mut host) = Host::new("restore_storage_symlink", ONE_STORAGE, &[], |root| {
        write(root, "var/lib/app/data", "app");
    }) else {
        return;
    };
    // A real storage elsewhere, and /persist a symlink to it.
    host.fs.subvolume("@persist");
    host.mount_subvolume("@persist", "/elsewhere");
    std::os::unix::fs::symlink(host.live("/elsewhere"), host.live("/persist")).unwrap();
    let args = ["restore", "/var/lib/app", "--into", "persist"];
    assert_refused(
        &host,
        &args,
        "storage /persist is reached through a symlink",
    );
    // Relative, and one level up.
    fs::remove_file(host.live("/persist")).unwrap();
    std::os::unix::fs::symlink("elsewhere", host.live("/persist")).unwrap();
    assert_refused(
        &host,
        &args,
        "storage /persist is reached through a symlink",
    );
    assert!(host.fs.tree("@persist").is_empty());
}

// Item 3: special files come back, hard links stay linked, sockets are reported.

#[test]
fn special_files_come_back_and_sockets_are_reported() {
    let Some(host) = Host::new("restore_special", ONE_STORAGE, &[], |root| {
        let dir = root.join("var/lib/special");
        fs::create_dir_all(&dir).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o640),
            0,
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("loop"),
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o660),
            rustix::fs::makedev(7, 200),
        )
        .unwrap();
        drop(std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap());
        fs::write(dir.join("a"), "linked").unwrap();
        fs::hard_link(dir.join("a"), dir.join("b")).unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        fs::hard_link(dir.join("a"), dir.join("sub/c")).unwrap();
        for (name, uid, gid, mode) in [
            ("fifo", 1000, 100, 0o640),
            ("null", 0, 5, 0o620),
            ("loop", 0, 6, 0o660),
            ("a", 70, 70, 0o600),
        ] {
            std::os::unix::fs::chown(dir.join(name), Some(uid), Some(gid)).unwrap();
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(mode)).unwrap();
        }
    }) else {
        return;
    };
    let snap_dir = host.fs.path(&format!("@snapshots/{SNAP}/var/lib/special"));
    let out = host.imperm(&["restore", "/var/lib/special", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a socket is a finding: {}",
        stderr(&out)
    );
    let v = json(&out);
    assert_eq!(v["not_restored"][0]["path"], "/var/lib/special/sock", "{v}");
    assert!(
        v["not_restored"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("socket")
    );
    assert_eq!(v["not_restored"].as_array().unwrap().len(), 1);
    // fifo, null, loop, a, b, sub/c: what really came back.
    assert_eq!(v["restored"][0]["files"], 6, "{v}");

    let dir = host.live("/var/lib/special");
    for name in ["fifo", "null", "loop", "a", "b", "sub/c"] {
        let (got, want) = (
            fs::symlink_metadata(dir.join(name)).unwrap(),
            fs::symlink_metadata(snap_dir.join(name)).unwrap(),
        );
        assert_eq!(
            (
                got.mode(),
                got.uid(),
                got.gid(),
                got.rdev(),
                got.mtime(),
                got.mtime_nsec()
            ),
            (
                want.mode(),
                want.uid(),
                want.gid(),
                want.rdev(),
                want.mtime(),
                want.mtime_nsec()
            ),
            "{name}"
        );
    }
    assert!(
        fs::symlink_metadata(dir.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        fs::symlink_metadata(dir.join("null"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        fs::symlink_metadata(dir.join("loop"))
            .unwrap()
            .file_type()
            .is_block_device()
    );
    assert_eq!(
        fs::symlink_metadata(dir.join("null")).unwrap().rdev(),
        rustix::fs::makedev(1, 3)
    );
    let a = fs::metadata(dir.join("a")).unwrap();
    assert_eq!(a.nlink(), 3, "one inode, three names");
    assert_eq!(fs::metadata(dir.join("b")).unwrap().ino(), a.ino());
    assert_eq!(fs::metadata(dir.join("sub/c")).unwrap().ino(), a.ino());
    assert!(!dir.join("sock").exists());

    // The human form says it too.
    fs::remove_dir_all(&dir).unwrap();
    let out = host.imperm(&["restore", "/var/lib/special", "--color", "never"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("(6 files, "), "{text}");
    assert!(
        text.contains("not restored: /var/lib/special/sock: a socket"),
        "{text}"
    );

    // A socket given by itself: reported, not "restored", no entry, nothing written.
    fs::remove_dir_all(&dir).unwrap();
    let before = host.state();
    let out = host.imperm(&["restore", "/var/lib/special/sock", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["restored"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["not_restored"][0]["path"], "/var/lib/special/sock");
    assert_eq!(v["entries"], "");
    assert_eq!(host.state(), before);
}

// Neighbours.

/// File capabilities survive (chown drops them, so it must come before the xattrs), and so
/// do set-id bits; a default ACL on the target's directory adds no ACL the snapshot lacks.
#[test]
fn capabilities_and_set_id_bits_are_kept_and_no_acl_is_inherited() {
    let Some(host) = Host::new("restore_caps", ONE_STORAGE, &[], |root| {
        write(root, "usr/local/bin/ping", "binary");
        let ping = root.join("usr/local/bin/ping");
        common::check(Command::new("setcap").arg("cap_net_raw+ep").arg(&ping));
        write(root, "usr/local/bin/su", "binary");
        fs::set_permissions(
            root.join("usr/local/bin/su"),
            fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
    }) else {
        return;
    };
    // user::rwx user:1000:rwx group::r-x mask::rwx other::r-x, as the kernel stores it.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 7u16, u32::MAX),
        (2, 7, 1000),
        (4, 5, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 5, u32::MAX),
    ] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    fs::create_dir_all(host.live("/usr/local")).unwrap();
    rustix::fs::setxattr(
        host.live("/usr/local"),
        "system.posix_acl_default",
        &acl,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let out = host.imperm(&["restore", "/usr/local/bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for path in ["/usr/local/bin", "/usr/local/bin/su"] {
        let mut names = [0u8; 256];
        let n = rustix::fs::listxattr(host.live(path), &mut names[..]).unwrap();
        let names = String::from_utf8_lossy(&names[..n]);
        assert!(!names.contains("posix_acl"), "{path}: {names:?}");
    }
    let caps = common::check(Command::new("getcap").arg(host.live("/usr/local/bin/ping")));
    assert!(caps.contains("cap_net_raw=ep"), "{caps:?}");
    let su = fs::metadata(host.live("/usr/local/bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
}

/// Into a storage on another filesystem, where no extent can be shared with the snapshot.
#[test]
fn sparse_files_stay_sparse() {
    let Some(mut host) = Host::new("restore_sparse", ONE_STORAGE, &[], |root| {
        fs::create_dir_all(root.join("var/lib/vm")).unwrap();
        let f = fs::File::create(root.join("var/lib/vm/disk.img")).unwrap();
        f.set_len(256 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"boot sector", 128 << 20).unwrap();
    }) else {
        return;
    };
    host.mount_tmpfs("/persist");
    let out = host.imperm(&["restore", "/var/lib/vm", "--into", "persist"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = host.live("/persist/var/lib/vm/disk.img");
    let m = fs::metadata(&img).unwrap();
    assert_eq!(m.len(), 256 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{} bytes allocated",
        m.blocks() * 512
    );
    let mut buf = [0u8; 11];
    std::os::unix::fs::FileExt::read_exact_at(&fs::File::open(&img).unwrap(), &mut buf, 128 << 20)
        .unwrap();
    assert_eq!(&buf, b"boot sector");
}

#[test]
fn odd_names_are_restored_exactly_and_reported_losslessly() {
    let latin1 = OsStr::from_bytes(b"caf\xe9");
    let Some(host) = Host::new("restore_odd_names", ONE_STORAGE, &[], |root| {
        let dir = root.join("srv/odd");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(latin1), "latin1").unwrap();
        fs::write(dir.join("new\nline"), "newline").unwrap();
    }) else {
        return;
    };
    let mut path = b"/srv/odd/".to_vec();
    path.extend_from_slice(latin1.as_bytes());
    let path = OsStr::from_bytes(&path);
    let out = host.imperm_os(&[
        OsStr::new("restore"),
        path,
        OsStr::new("/srv/odd/new\nline"),
        OsStr::new("--format"),
        OsStr::new("json"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    // Paths are in the one escaped form of every command's JSON (README, "Paths in
    // output"): the byte that is not UTF-8 and the newline as \xHH, exactly.
    assert_eq!(v["restored"][0]["path"], "/srv/odd/caf\\xe9", "{v}");
    assert_eq!(v["restored"][1]["path"], "/srv/odd/new\\x0aline", "{v}");
    assert_eq!(
        fs::read_to_string(host.live("/srv/odd").join(latin1)).unwrap(),
        "latin1"
    );
    assert_eq!(
        fs::read_to_string(host.live("/srv/odd/new\nline")).unwrap(),
        "newline"
    );
    // Neither can be a Nix entry imperm's configuration takes: the one not UTF-8 cannot be
    // a Nix string, the newline would make config.toml unloadable. Each says so.
    let entries = v["entries"].as_str().unwrap();
    assert!(
        entries.contains("/srv/odd/new\\x0aline: its name holds a control character"),
        "{entries}"
    );
    assert!(!entries.contains('\u{fffd}'), "{entries}");
    assert!(
        entries.contains("/srv/odd/caf\\xe9 is not UTF-8"),
        "{entries}"
    );

    // Human output: one line per restored path, the odd bytes escaped.
    fs::remove_dir_all(host.live("/srv/odd")).unwrap();
    let out = host.imperm(&["restore", "/srv/odd", "--color", "never"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(host.live("/srv/odd").join(latin1)).unwrap(),
        "latin1"
    );
    assert_eq!(
        fs::read_to_string(host.live("/srv/odd/new\nline")).unwrap(),
        "newline"
    );
}

#[test]
fn the_same_path_twice_or_inside_another_is_restored_once() {
    let Some(host) = Host::new("restore_overlap", ONE_STORAGE, &[], |root| {
        write(root, "srv/data/x/file", "x");
        write(root, "srv/data/y", "y");
        write(root, "etc/app.conf", "old");
    }) else {
        return;
    };
    let out = host.imperm(&[
        "restore",
        "/srv/data/x",
        "/srv/data",
        "/etc/app.conf",
        "/etc//app.conf/",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let paths: Vec<&str> = v["restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/srv/data", "/etc/app.conf"]);
    assert!(
        stderr(&out).contains("/srv/data/x is restored with /srv/data"),
        "{}",
        stderr(&out)
    );
    assert_eq!(host.fs.read("@root/srv/data/x/file"), "x");
    assert_eq!(host.fs.read("@root/etc/app.conf"), "old");
}

/// More paths than one batch (copied, flushed, then renamed): every one restored, none
/// left half-done.
#[test]
fn many_paths_in_one_run_are_all_restored() {
    let Some(host) = Host::new("restore_many", ONE_STORAGE, &[], |root| {
        for i in 0..150 {
            write(root, &format!("srv/many/f{i}"), &format!("{i}"));
        }
    }) else {
        return;
    };
    fs::create_dir_all(host.live("/srv/many")).unwrap();
    write(&host.live("/"), "srv/many/f7", "live");
    let paths: Vec<String> = (0..150).map(|i| format!("/srv/many/f{i}")).collect();
    let mut args = vec!["restore", "--force", "--format", "json"];
    args.extend(paths.iter().map(String::as_str));
    let out = host.imperm(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["restored"].as_array().unwrap().len(), 150);
    for i in 0..150 {
        assert_eq!(host.fs.read(&format!("@root/srv/many/f{i}")), i.to_string());
    }
    assert_eq!(
        host.fs
            .read(&format!("@root/srv/many/f7.imperm-replaced-{SNAP}")),
        "live"
    );
    assert_eq!(fs::read_dir(host.live("/srv/many")).unwrap().count(), 151);
}

#[test]
fn restore_refusals_write_nothing() {
    let Some(mut host) = Host::new("restore_refusals", ONE_STORAGE, &["/persist"], |root| {
        write(root, "etc/ok.conf", "ok");
        write(root, "var/lib/app/data", "data");
        write(root, "etc/app/conf", "conf");
        write(root, "srv/mnt/data", "data");
        std::os::unix::fs::symlink("/", root.join("var/lib/escape")).unwrap();
    }) else {
        return;
    };
    write(&host.live("/"), "etc/ok.conf", "already here");
    write(
        &host.live("/"),
        "etc/app",
        "a file where the snapshot has a directory",
    );
    std::os::unix::fs::symlink("/tmp", host.fs.path("@persist/var")).unwrap();
    fs::create_dir_all(host.live("/srv/mnt")).unwrap();
    fs::create_dir_all(host.live("/srv/other")).unwrap();
    let (from, at) = (host.live("/srv/other"), host.live("/srv/mnt"));
    host.bind(&from, &at);
    // The live root's mount table, as /proc/self/mountinfo shows it on the host.
    write(
        &host.live("/"),
        "proc/self/mountinfo",
        "1 0 0:30 / / rw,noatime shared:1 - btrfs /dev/vda rw\n\
         2 1 0:30 /srv/other /srv/mnt rw,noatime shared:1 - btrfs /dev/vda rw\n",
    );

    let cases: &[(&[&str], &str)] = &[
        (&["restore", "/etc/../etc/ok.conf"], "contains `..`"),
        (&["restore", "etc/ok.conf"], "is not an absolute path"),
        (&["restore", "/"], "is the root directory itself"),
        (
            &["restore", "/var/lib/escape/etc/passwd"],
            "is reached through a symlink in snapshot",
        ),
        (&["restore", "/etc/ok.conf"], "exists; pass --force"),
        (
            &["restore", "/etc/nope"],
            "is not in snapshot 20260115T063000Z",
        ),
        (
            &["restore", "/etc/ok.conf", "--from", "20990101T000000Z"],
            "no snapshot \"20990101T000000Z\"",
        ),
        (
            &["restore", "/var/lib/app", "--into", "persist"],
            "a symlink stands in the way",
        ),
        (
            &["restore", "/etc/app/conf"],
            "/etc/app is not a directory, so /etc/app/conf cannot be restored below it",
        ),
        (
            &["restore", "/etc/app/conf", "--force"],
            "/etc/app is not a directory, so /etc/app/conf cannot be restored below it",
        ),
        (
            &["restore", "/srv/mnt", "--force"],
            "/srv/mnt is a mount point",
        ),
        (
            &["restore", "/srv", "--force"],
            "/srv holds mount points (/srv/mnt), which moving it aside would carry along",
        ),
        // One bad path among good ones: nothing of the good ones is written either.
        (
            &["restore", "/var/lib/app", "/etc/ok.conf"],
            "exists; pass --force",
        ),
    ];
    for (args, want) in cases {
        assert_refused(&host, args, want);
        let err = stderr(&host.imperm(args));
        assert!(err.contains("nothing was written"), "{args:?}: {err}");
    }
}

/// After a kill between the swap and the move aside, what was at the target waits in the
/// temporary directory: a restore without --force (refused, since the target exists) says
/// where, and the next --force run keeps it aside; it is never removed as a stale copy.
#[test]
fn what_a_killed_swap_left_in_the_temporary_directory_is_kept() {
    let Some(host) = Host::new("restore_killed_swap", ONE_STORAGE, &[], |root| {
        write(root, "var/lib/app/data", "old");
    }) else {
        return;
    };
    write(&host.live("/"), "var/lib/app/data", "live");
    let killed = common::run(
        host.command()
            .env(imperm::snapshots::reset::FAILPOINT_ENV, "restore-placed")
            .args([
                "restore",
                "/var/lib/app",
                "--force",
                "--fs",
                "btrfs",
                "--mounted",
            ])
            .arg(host.fs.top()),
    );
    assert_eq!(killed.status.code(), None, "{}", stderr(&killed));
    assert_eq!(host.fs.read("@root/var/lib/app/data"), "old");
    assert_eq!(
        host.fs.read("@root/var/lib/.app.imperm-restore/app/data"),
        "live"
    );
    let out = host.imperm(&["restore", "/var/lib/app"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "/var/lib/.app.imperm-restore/app holds what was at /var/lib/app before a restore was killed"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        host.fs.read("@root/var/lib/.app.imperm-restore/app/data"),
        "live"
    );
    let out = host.imperm(&["restore", "/var/lib/app", "--force", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "kept what a killed restore or migrate left of /var/lib/app in /var/lib/app.imperm-replaced-{SNAP}"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        host.fs
            .read(&format!("@root/var/lib/app.imperm-replaced-{SNAP}/data")),
        "live"
    );
    // The restored copy placed before the kill is kept aside too, under the next name.
    assert_eq!(
        host.fs
            .read(&format!("@root/var/lib/app.imperm-replaced-{SNAP}.1/data")),
        "old"
    );
    assert_eq!(host.fs.read("@root/var/lib/app/data"), "old");
    assert!(!host.live("/var/lib/.app.imperm-restore").exists());
}

/// Item 5's neighbour: moving aside a directory that has mount points below it carries
/// them along. What counts is the kernel's live table, not the tree's declared one (here
/// the tree has none at all).
#[test]
fn a_directory_with_live_mounts_below_is_never_moved_aside() {
    let Some(mut host) = Host::new("restore_live_mounts", ONE_STORAGE, &["/persist"], |root| {
        write(root, "var/lib/declared/state", "old");
        write(root, "var/lib/other/data", "old");
    }) else {
        return;
    };
    write(
        &host.fs.path("@persist"),
        "var/lib/declared/state",
        "persisted",
    );
    fs::create_dir_all(host.live("/var/lib/declared")).unwrap();
    let (from, at) = (
        host.fs.path("@persist/var/lib/declared"),
        host.live("/var/lib/declared"),
    );
    host.bind(&from, &at);
    assert!(
        !host.live("/proc").exists(),
        "the tree declares no mount table"
    );
    for path in ["/var/lib", "/var"] {
        assert_refused(
            &host,
            &["restore", path, "--force"],
            &format!(
                "{path} holds mount points (/var/lib/declared), which moving it aside would carry along"
            ),
        );
    }
    // What is not above a mount is restored as ever.
    let out = host.imperm(&["restore", "/var/lib/other"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.fs.read("@root/var/lib/declared/state"), "persisted");
}

/// Item 2's neighbour: `btrfs subvolume create /persist` on a btrfs root makes the storage
/// a subvolume nested in the root; mounted apart at /persist it has a mount of its own,
/// but the next reset deletes it with the old root.
#[test]
fn into_persist_refuses_a_storage_nested_in_the_root_subvolume() {
    let Some(mut host) = Host::new("restore_nested_storage", ONE_STORAGE, &[], |root| {
        write(root, "var/lib/app/data", "app");
    }) else {
        return;
    };
    host.fs.subvolume("@root/nestedpersist");
    host.mount_subvolume("@root/nestedpersist", "/persist");
    assert_refused(
        &host,
        &["restore", "/var/lib/app", "--into", "persist"],
        "storage /persist is not a filesystem of its own: it is mounted from /@root/nestedpersist, inside the root subvolume /@root, which the next reset deletes",
    );
    // A storage beside the root is fine.
    common::check(Command::new("umount").arg(host.live("/persist")));
    host.fs.subvolume("@persist");
    host.mount_subvolume("@persist", "/persist");
    let out = host.imperm(&["restore", "/var/lib/app", "--into", "persist"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.fs.read("@persist/var/lib/app/data"), "app");
}

/// The entries restore prints follow the rule every other command keeps: never `/var`,
/// `/var/lib`, `/etc` or a home directory as a whole. Such a path gets no entry, and the
/// output says what to do instead.
#[test]
fn restore_never_suggests_a_directory_too_broad_to_persist() {
    let Some(host) = Host::new("restore_too_broad", ONE_STORAGE, &[], |root| {
        write(root, "var/lib/app/data", "app");
        write(root, "etc/app.conf", "conf");
        write(root, "home/josh/notes", "notes");
        write(root, "srv/share/f", "f");
    }) else {
        return;
    };
    let out = host.imperm(&[
        "restore",
        "/var",
        "/etc",
        "/home/josh",
        "/srv/share",
        "--color",
        "never",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("\"/var\""), "{text}");
    assert!(!text.contains("\"/etc\""), "{text}");
    assert!(!text.contains("\"/home/josh\""), "{text}");
    assert!(text.contains("\"/srv/share\""), "{text}");
    for path in ["/var", "/etc", "/home/josh"] {
        assert!(
            text.contains(&format!(
                "# imperm: {path} is too broad to persist whole: run `imperm check` to see what in it holds state, and persist those directories"
            )),
            "{path}: {text}"
        );
    }
    // Only too-broad paths: no entry at all, and no promise of a bind mount.
    let out = host.imperm(&["restore", "/var/lib", "--force", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let entries = v["entries"].as_str().unwrap();
    assert!(!entries.contains("environment.persistence"), "{entries}");
    assert!(
        entries.contains("# imperm: /var/lib is too broad"),
        "{entries}"
    );
}

/// Trial 2, finding 1: two names that only differ past what a temporary name can hold
/// once cut to 255 bytes. A restore of one never touches what a killed restore of the
/// other left beside it; both run together restore both.
#[test]
fn long_sibling_names_never_share_a_temporary_directory() {
    let common = "p".repeat(250);
    let (a, b) = (format!("{common}aaaaa"), format!("{common}bbbbb"));
    let (ra, rb) = (format!("srv/long/{a}"), format!("srv/long/{b}"));
    let Some(host) = Host::new("restore_long_siblings", ONE_STORAGE, &[], |root| {
        write(root, &format!("{ra}/f"), "AAA");
        write(root, &format!("{rb}/f"), "BBB");
    }) else {
        return;
    };
    write(&host.live("/"), &format!("{ra}/o"), "origA");
    write(&host.live("/"), &format!("{rb}/o"), "origB");
    let (pa, pb) = (format!("/{ra}"), format!("/{rb}"));
    let killed = common::run(
        host.command()
            .env(imperm::snapshots::reset::FAILPOINT_ENV, "restore-placed")
            .args(["restore", &pa, "--force", "--fs", "btrfs", "--mounted"])
            .arg(host.fs.top()),
    );
    assert_eq!(killed.status.code(), None, "{}", stderr(&killed));
    let out = host.imperm(&["restore", &pb, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.fs.read(&format!("@root/{rb}/f")), "BBB");
    // A's original, swapped out by the killed run, is still in A's temporary directory;
    // the next restore of A keeps it aside.
    let out = host.imperm(&["restore", &pa, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.fs.read(&format!("@root/{ra}/f")), "AAA");
    let names: Vec<String> = fs::read_dir(host.live("/srv/long"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let kept: Vec<String> = names
        .iter()
        .filter(|n| n.contains(".imperm-replaced-"))
        .map(|n| fs::read_to_string(host.live("/srv/long").join(n).join("o")).unwrap_or_default())
        .collect();
    assert!(kept.contains(&"origA".to_string()), "{names:?} {kept:?}");
    assert!(kept.contains(&"origB".to_string()), "{names:?} {kept:?}");
    assert!(
        !names.iter().any(|n| n.ends_with(".imperm-restore")),
        "{names:?}"
    );

    // Both in one run.
    let out = host.imperm(&["restore", &pa, &pb, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Trial 2, finding 2: what a rename carries along is judged on the filesystem, not by
/// the paths the mount table names. (a) The tree reached through the top level while the
/// same root is mounted elsewhere with a bind mount below the target; (b) the target
/// reached through a bind mount of its parent; (c) a mount only another mount namespace
/// has. Each refused, nothing written, the mounts where they were.
#[test]
fn mounts_below_the_target_are_found_by_filesystem_not_by_name() {
    let Some(mut host) = Host::new("restore_mount_alias", ONE_STORAGE, &["/persist"], |root| {
        write(root, "var/lib/big/sub/f", "old");
        write(root, "srv2/data/f", "old");
        write(root, "var/lib/ns/sub/f", "old");
    }) else {
        return;
    };
    for dir in ["var/lib/big/sub", "m", "ns"] {
        fs::create_dir_all(host.fs.path("@persist").join(dir)).unwrap();
    }
    for dir in [
        "/var/lib/big/sub",
        "/srv/data/m",
        "/srv2",
        "/var/lib/ns/sub",
    ] {
        fs::create_dir_all(host.live(dir)).unwrap();
    }
    // (a) `@root` mounted a second time, as the running system has it, with a bind mount
    // at its /var/lib/big/sub: this tree (through the top level) does not name it.
    let live = host.fs.scratch().join("live");
    fs::create_dir_all(&live).unwrap();
    common::check(
        Command::new("mount")
            .args(["-o", "subvol=@root", &host.fs.device])
            .arg(&live),
    );
    host.mounts.push(live.clone());
    host.bind(
        &host.fs.path("@persist/var/lib/big/sub"),
        &live.join("var/lib/big/sub"),
    );
    assert_refused(
        &host,
        &["restore", "/var/lib/big", "--force"],
        "/var/lib/big holds mount points (/var/lib/big/sub), which moving it aside would carry along",
    );
    // (b) /srv2 is /srv; the mount at /srv/data/m is below /srv2/data.
    host.bind(&host.live("/srv"), &host.live("/srv2"));
    host.bind(&host.fs.path("@persist/m"), &host.live("/srv/data/m"));
    assert_refused(
        &host,
        &["restore", "/srv2/data", "--force"],
        "/srv2/data holds mount points (/srv2/data/m), which moving it aside would carry along",
    );
    // (c) A bind mount only a private mount namespace has.
    let (from, at) = (host.fs.path("@persist/ns"), host.live("/var/lib/ns/sub"));
    let mut other = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{}' '{}' && exec sleep 60",
            from.display(),
            at.display()
        ))
        .spawn()
        .unwrap();
    let mounted = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Bytes, lossily: another test's mount point need not be UTF-8.
        fs::read(format!("/proc/{}/mountinfo", other.id()))
            .is_ok_and(|t| String::from_utf8_lossy(&t).contains("/var/lib/ns/sub"))
    });
    let out = host.imperm(&["restore", "/var/lib/ns", "--force"]);
    let _ = other.kill();
    let _ = other.wait();
    assert!(mounted, "the other namespace never mounted");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "/var/lib/ns holds mount points (/var/lib/ns/sub, in the mount namespace of process {})",
            other.id()
        )),
        "{err}"
    );
    let names: Vec<_> = fs::read_dir(host.live("/var/lib"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !names.iter().any(|n| n.to_string_lossy().contains("imperm")),
        "{names:?}"
    );
    // Once nothing is mounted below it, it is restored.
    let out = host.imperm(&["restore", "/var/lib/ns", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Trial 2, finding 3: a directory in the storage that a live bind mount shows elsewhere
/// is not swapped out from under it (the mount would go on showing the kept-aside copy,
/// and new writes would land there); what is inside it is restored, and shows at once.
#[test]
fn a_storage_directory_shown_by_a_live_mount_is_not_swapped_out() {
    let config =
        "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/x\"]\nfiles = [\"/etc/id\"]\n";
    let Some(mut host) = Host::new("restore_shown_elsewhere", config, &["/persist"], |root| {
        write(root, "var/lib/x/xf", "snapshot");
        write(root, "etc/id", "snapshot");
    }) else {
        return;
    };
    write(&host.fs.path("@persist"), "var/lib/x/xf", "persist-current");
    write(&host.fs.path("@persist"), "etc/id", "persist-current");
    write(&host.live("/"), "var/lib/x/.keep", "");
    write(&host.live("/"), "etc/id", "");
    host.bind(
        &host.fs.path("@persist/var/lib/x"),
        &host.live("/var/lib/x"),
    );
    host.bind(&host.fs.path("@persist/etc/id"), &host.live("/etc/id"));
    assert_refused(
        &host,
        &["restore", "/var/lib/x", "--into", "persist", "--force"],
        "/persist/var/lib/x is mounted at /var/lib/x now, which would go on showing what was there, and what is written there would land in the kept-aside copy: restore the paths inside it instead",
    );
    assert_refused(
        &host,
        &["restore", "/etc/id", "--into", "persist", "--force"],
        "/persist/etc/id is mounted at /etc/id now",
    );
    let out = host.imperm(&["restore", "/var/lib/x/xf", "--into", "persist", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(host.live("/var/lib/x/xf")).unwrap(),
        "snapshot"
    );
}

/// Trial 2, finding 4: a declared path restored into the root while its bind mount is not
/// active lands in the root, which the next reset wipes: the output says so, and points to
/// `--into persist`; with the bind mount active it is declared and persisted.
#[test]
fn a_declared_path_restored_without_its_bind_mount_says_where_it_went() {
    let config = "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/x\"]\n";
    let Some(mut host) = Host::new(
        "restore_declared_unmounted",
        config,
        &["/persist"],
        |root| {
            write(root, "var/lib/x/xf", "snapshot");
            write(root, "var/lib/x/yf", "snapshot");
        },
    ) else {
        return;
    };
    let out = host.imperm(&["restore", "/var/lib/x/xf", "--color", "never"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("declared already"), "{text}");
    assert!(
        text.contains(
            "# imperm: /var/lib/x/xf is declared (/persist: /var/lib/x) but not bind-mounted here: the restored copy is in the root, which the next reset wipes; restore it with --into persist"
        ) || text.contains("is declared (") && text.contains("but not bind-mounted here"),
        "{text}"
    );
    assert!(text.contains("--into persist"), "{text}");
    let v = json(&host.imperm(&["restore", "/var/lib/x/xf", "--force", "--format", "json"]));
    assert!(
        v["entries"]
            .as_str()
            .unwrap()
            .contains("but not bind-mounted here"),
        "{v}"
    );
    // Mounted as at boot: declared, and persisted.
    fs::create_dir_all(host.fs.path("@persist/var/lib/x")).unwrap();
    host.bind(
        &host.fs.path("@persist/var/lib/x"),
        &host.live("/var/lib/x"),
    );
    let out = host.imperm(&["restore", "/var/lib/x/yf", "--color", "never"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("each path is declared already: nothing to add"),
        "{}",
        stdout(&out)
    );
    assert_eq!(host.fs.read("@persist/var/lib/x/yf"), "snapshot");
}

/// Trial 2, finding 5: the snippet restore prints loads and passes `lint`: the mode
/// `/var/lib/private` needs, no entry for a path inside a storage or in a tree NixOS does
/// not persist by bind mount (/nix, /boot, /tmp, /run …), none for a too-broad path.
#[test]
fn the_restore_snippet_loads_and_lints_clean() {
    let Some(host) = Host::new(
        "restore_snippet_lints",
        ONE_STORAGE,
        &["/persist"],
        |root| {
            for dir in [
                "var/lib/private/svc",
                "var/lib/private/other",
                "nix/var/nix/profiles",
                "boot/efi",
                "tmp/t",
                "run/r",
                "opt/tool",
                "srv/app",
                "persist/foo",
            ] {
                write(root, &format!("{dir}/f"), "x");
            }
        },
    ) else {
        return;
    };
    let out = host.imperm(&[
        "restore",
        "/var/lib/private/svc",
        "/var/lib/private/other",
        "/persist/foo",
        "/nix/var/nix/profiles",
        "/boot/efi",
        "/tmp/t",
        "/run/r",
        "/opt",
        "/srv/app",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = json(&out)["entries"].as_str().unwrap().to_string();
    for (path, why) in [
        ("/persist/foo", "inside the persistent storage /persist"),
        ("/nix/var/nix/profiles", "never persisted by a bind mount"),
        ("/boot/efi", "never persisted by a bind mount"),
        ("/tmp/t", "never persisted by a bind mount"),
        ("/run/r", "never persisted by a bind mount"),
        ("/opt", "too broad"),
    ] {
        assert!(
            entries.contains(&format!("# imperm: {path} ")) && entries.contains(why),
            "{path}: {entries}"
        );
        assert!(
            !entries.contains(&format!("\"{path}\"")),
            "{path}: {entries}"
        );
    }
    assert!(
        entries.contains(r#"{ directory = "/var/lib/private"; mode = "0700"; }"#),
        "{entries}"
    );
    assert_eq!(
        entries.matches("\"/var/lib/private\"").count(),
        1,
        "{entries}"
    );
    assert!(!entries.contains("\"/var/lib/private/svc\""), "{entries}");
    assert!(entries.contains("\"/srv/app\""), "{entries}");
    // Into persist, the same rules.
    let out = host.imperm(&[
        "restore",
        "/var/lib/private",
        "--into",
        "persist",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let persist_entries = json(&out)["entries"].as_str().unwrap().to_string();
    assert!(
        persist_entries.contains(r#"{ directory = "/var/lib/private"; mode = "0700"; }"#),
        "{persist_entries}"
    );

    // What Nix makes of it loads as a configuration, and lint finds nothing wrong.
    if !common::nix_available("the_restore_snippet_loads_and_lints_clean") {
        return;
    }
    let expr = format!("builtins.toJSON (let m = {{\n{entries}}}; in m.environment.persistence)");
    let nix = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .output()
        .unwrap();
    assert!(nix.status.success(), "{expr}: {}", stderr(&nix));
    let text: String = serde_json::from_slice(&nix.stdout).unwrap();
    let file = host.fs.scratch().join("snippet.json");
    fs::write(&file, &text).unwrap();
    let lint = common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(host.fs.path("@root"))
            .arg("--config")
            .arg(&host.config)
            .arg("--persistence-json")
            .arg(&file)
            .args(["lint", "--color", "never"]),
    );
    assert_eq!(
        lint.status.code(),
        Some(0),
        "{text}\n{}{}",
        stdout(&lint),
        stderr(&lint)
    );
}
