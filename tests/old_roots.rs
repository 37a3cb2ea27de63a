//! `imperm snapshots mount` and `snapshots umount` on real btrfs (loop devices made by the
//! tests): old roots made by `imperm reset`, mounted read-only where a user can look, and
//! unmounted again, never anything else.
//!
//! Every command runs with `--root SCRATCH/tree`, so the default place is
//! `SCRATCH/tree/run/imperm/old-roots/NAME`, never the host's /run; and with `--device`, so
//! the top level is mounted in a private namespace and the old root must still land in the
//! test's own namespace.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{LoopBtrfs, btrfs};
use serde_json::Value;

const FIRST: &str = "20260114T063000Z";
const SECOND: &str = "20260115T063000Z";

/// A loop btrfs with two old roots made by `imperm reset` (the first root held
/// `etc/hostname = first`, the second `second`), and a tree for `--root`. Whatever a test
/// leaves mounted below the scratch directory is detached first when it is dropped.
struct Fixture {
    _unmount: UnmountLeftovers,
    fs: LoopBtrfs,
    tree: PathBuf,
}

struct UnmountLeftovers(PathBuf, PathBuf);

impl Drop for UnmountLeftovers {
    fn drop(&mut self) {
        for at in mounts_below(&self.0) {
            if at != self.1 {
                let _ = Command::new("umount").arg("--lazy").arg(&at).status();
            }
        }
    }
}

/// Every (mount point, line) of this process's mount table, in order. Bytes: a mount
/// point need not be UTF-8.
fn table() -> Vec<(PathBuf, String)> {
    use std::os::unix::ffi::OsStringExt;
    fs::read("/proc/self/mountinfo")
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let field = l.split(|&b| b == b' ').nth(4).unwrap();
            let mut out = Vec::new();
            let mut i = 0;
            while i < field.len() {
                if field[i] == b'\\' && i + 3 < field.len() {
                    let octal = std::str::from_utf8(&field[i + 1..i + 4]).unwrap();
                    out.push(u8::from_str_radix(octal, 8).unwrap());
                    i += 4;
                } else {
                    out.push(field[i]);
                    i += 1;
                }
            }
            (
                PathBuf::from(std::ffi::OsString::from_vec(out)),
                String::from_utf8_lossy(l).into_owned(),
            )
        })
        .collect()
}

/// Mount points below `dir` in this process's mount table, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = table()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    out.sort_by(|a, b| b.cmp(a));
    out
}

/// The mountinfo line of what is mounted on top at `at`, if anything.
fn mounted_at(at: &Path) -> Option<String> {
    table()
        .into_iter()
        .rev()
        .find(|(p, _)| p == at)
        .map(|(_, l)| l)
}

fn fixture(test: &str) -> Option<Fixture> {
    let fs = btrfs(test)?;
    fs.subvolume("@root");
    let tree = fs.scratch().join("tree");
    fs::create_dir_all(tree.join("run")).unwrap();
    for (now, host) in [
        ("2026-01-14T06:30:00Z", "first"),
        ("2026-01-15T06:30:00Z", "second"),
    ] {
        fs.write("@root/etc/hostname", host);
        let out = common::run(
            imperm_at(&fs, &tree, now)
                .args(["reset", "--fs", "btrfs", "--mounted"])
                .arg(fs.top()),
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    Some(Fixture {
        _unmount: UnmountLeftovers(fs.scratch().to_path_buf(), fs.top().to_path_buf()),
        tree,
        fs,
    })
}

fn imperm_at(fs: &LoopBtrfs, tree: &Path, now: &str) -> Command {
    let config = fs.scratch().join("config.toml");
    if !config.exists() {
        fs::write(
            &config,
            "[filesystem]\ntype = \"btrfs\"\n\n[retention]\nkeep_last = 1\nkeep_weekly = 0\nkeep_monthly = 0\ntimezone = \"UTC\"\n",
        )
        .unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imperm"));
    cmd.env(imperm::commands::NOW_ENV, now)
        .env_remove(imperm::snapshots::reset::FAILPOINT_ENV)
        .arg("--root")
        .arg(tree)
        .arg("--config")
        .arg(config);
    cmd
}

impl Fixture {
    /// `imperm ARGS --device DEV`: the top level mounted privately.
    fn imperm(&self, args: &[&str]) -> Output {
        common::run(
            imperm_at(&self.fs, &self.tree, "2026-01-16T00:00:00Z")
                .args(args)
                .args(["--device", &self.fs.device]),
        )
    }

    fn place(&self, name: &str) -> PathBuf {
        self.tree.join("run/imperm/old-roots").join(name)
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

/// A refusal: exit 2, one line on stderr that names `what`.
fn refused(out: &Output, what: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(what), "{what} not in {err}");
}

/// The default is the last reset's snapshot at its place under the old-roots directory
/// (made 0700), mounted read-only, nosuid, nodev, noexec, holding the old root's files;
/// a name and a directory can be given; mounting again says so and changes nothing.
#[test]
fn mounts_the_last_reset_or_a_named_old_root_read_only() {
    let Some(fx) = fixture("mount_default") else {
        return;
    };
    let out = fx.imperm(&["snapshots", "mount", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    let place = fx.place(SECOND);
    assert_eq!(v["name"], SECOND);
    assert_eq!(
        v["mount_point"],
        format!("/run/imperm/old-roots/{SECOND}").as_str()
    );
    assert_eq!(v["path"], place.to_str().unwrap());
    assert_eq!(v["already_mounted"], false);
    assert_eq!(
        fs::read_to_string(place.join("etc/hostname")).unwrap(),
        "second"
    );
    let line = mounted_at(&place).expect("mounted");
    assert!(line.contains(&format!(" /@snapshots/{SECOND} ")), "{line}");
    let options = line.split(' ').nth(5).unwrap();
    for want in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(options.split(',').any(|o| o == want), "{want}: {line}");
    }
    let write = fs::write(place.join("etc/hostname"), "changed");
    assert_eq!(
        write.unwrap_err().raw_os_error(),
        Some(libc::EROFS),
        "an old root is never writable"
    );
    for dir in ["run/imperm", "run/imperm/old-roots"] {
        let mode = fs::metadata(fx.tree.join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{dir}");
    }
    // No private top level is left behind, here or in /run.
    assert!(mounts_below(Path::new("/run")).iter().all(|p| {
        !p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("imperm-top-")
    }));

    // Again: said so, exit 0, still one mount there.
    let again = fx.imperm(&["snapshots", "mount"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        format!(
            "{SECOND} is mounted at /run/imperm/old-roots/{SECOND} ({} on this machine) already; nothing was done\n",
            place.display()
        )
    );
    let count = |at: &Path| table().iter().filter(|(p, _)| p == at).count();
    assert_eq!(count(&place), 1);

    // A name and a directory (relative to the tree, as every path given is).
    fs::create_dir_all(fx.tree.join("mnt/look")).unwrap();
    let out = fx.imperm(&["snapshots", "mount", FIRST, "/mnt/look", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["name"], FIRST);
    assert_eq!(
        fs::read_to_string(fx.tree.join("mnt/look/etc/hostname")).unwrap(),
        "first"
    );

    // ls says where each is mounted.
    let ls = fx.imperm(&["snapshots", "ls", "--format", "json"]);
    assert_eq!(ls.status.code(), Some(0), "{}", stderr(&ls));
    let v = json(&ls);
    let mounted = |name: &str| {
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["mounted"]
            .clone()
    };
    assert_eq!(mounted(SECOND), serde_json::json!([place]));
    assert_eq!(
        mounted(FIRST),
        serde_json::json!([fx.tree.join("mnt/look")])
    );

    // umount with no argument: every old root under the old-roots directory, and only
    // there (the one at /mnt/look stays until it is named).
    let out = fx.imperm(&["snapshots", "umount", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["unmounted"][0]["name"], SECOND);
    assert_eq!(v["unmounted"][0]["removed_dir"], true);
    assert_eq!(v["unmounted"].as_array().unwrap().len(), 1);
    assert!(mounted_at(&place).is_none());
    assert!(!place.exists());
    assert!(mounted_at(&fx.tree.join("mnt/look")).is_some());
    let out = fx.imperm(&["snapshots", "umount", "/mnt/look"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(mounted_at(&fx.tree.join("mnt/look")).is_none());
    // Not under the old-roots directory: not imperm's to remove.
    assert!(fx.tree.join("mnt/look").is_dir());
    // Twice: nothing to do.
    let out = fx.imperm(&["snapshots", "umount", "/mnt/look"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "nothing is mounted at /mnt/look; nothing to do\n"
    );
}

/// What cannot be mounted on, or is not an old root, is refused with exit 2 and one line
/// naming it, and nothing is mounted.
#[test]
fn refuses_bad_places_and_names_and_mounts_nothing() {
    let Some(fx) = fixture("mount_refusals") else {
        return;
    };
    let t = &fx.tree;
    fs::create_dir_all(t.join("full")).unwrap();
    fs::write(t.join("full/mine"), "mine").unwrap();
    fs::create_dir_all(t.join("empty")).unwrap();
    std::os::unix::fs::symlink(t.join("empty"), t.join("link")).unwrap();
    std::os::unix::fs::symlink(t.join("empty"), t.join("hop")).unwrap();
    fs::create_dir_all(t.join("busy")).unwrap();
    common::check(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "foreign"])
            .arg(t.join("busy")),
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &["snapshots", "mount", SECOND, "/full"],
            "/full: is not empty",
        ),
        (
            &["snapshots", "mount", SECOND, "/full/mine"],
            "/full/mine: is not a directory",
        ),
        (
            &["snapshots", "mount", SECOND, "/link"],
            "/link: is a symlink",
        ),
        (
            &["snapshots", "mount", SECOND, "/hop/sub"],
            "/hop on the way is a symlink",
        ),
        (
            &["snapshots", "mount", SECOND, "/busy"],
            "/busy: tmpfs \"foreign\" (/) is mounted there",
        ),
        (
            &["snapshots", "mount", "20990101T000000Z"],
            "no snapshot \"20990101T000000Z\"",
        ),
        (
            &["snapshots", "mount", "../x"],
            "\"../x\" is not a snapshot's name",
        ),
        (&["snapshots", "mount", "@root"], "no snapshot \"@root\""),
        (&["snapshots", "mount", SECOND, "/a/../b"], "/a/../b"),
    ];
    // Other tests mount and unmount meanwhile: only this test's places are compared.
    let before = mounts_below(fx.fs.scratch());
    for (args, what) in cases {
        let out = fx.imperm(args);
        eprint!("{args:?}: {}", stderr(&out));
        refused(&out, what);
        assert_eq!(
            mounts_below(fx.fs.scratch()),
            before,
            "{args:?} mounted something"
        );
    }
    // Nothing made either: no directory below the symlink's target, no old-roots place.
    assert_eq!(fs::read_dir(t.join("empty")).unwrap().count(), 0);
    assert!(!fx.place("20990101T000000Z").exists());
    assert_eq!(fs::read_to_string(t.join("full/mine")).unwrap(), "mine");
    common::check(Command::new("umount").arg(t.join("busy")));

    // A symlink planted where imperm makes its own directory.
    std::os::unix::fs::symlink(t.join("empty"), t.join("run/imperm")).unwrap();
    let out = fx.imperm(&["snapshots", "mount"]);
    refused(&out, "run/imperm on the way is a symlink");
    assert_eq!(fs::read_dir(t.join("empty")).unwrap().count(), 0);
    fs::remove_file(t.join("run/imperm")).unwrap();

    // A tmpfs root keeps no old roots.
    let out = common::run(imperm_at(&fx.fs, &fx.tree, "2026-01-16T00:00:00Z").args([
        "snapshots",
        "mount",
        "--fs",
        "tmpfs",
    ]));
    refused(&out, "a tmpfs root has no old-root snapshots");
    let out = common::run(imperm_at(&fx.fs, &fx.tree, "2026-01-16T00:00:00Z").args([
        "snapshots",
        "umount",
        "--fs",
        "tmpfs",
    ]));
    refused(&out, "a tmpfs root has no old-root snapshots");
}

/// umount touches only old roots of this filesystem: a tmpfs mounted under the old-roots
/// directory is left alone (and refused when named); one in use is reported with exit 1
/// and the way out, and detached with --lazy.
#[test]
fn umount_unmounts_only_old_roots_and_not_one_in_use() {
    let Some(fx) = fixture("umount_only_ours") else {
        return;
    };
    let out = fx.imperm(&["snapshots", "mount", FIRST]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let foreign = fx.place("foreign");
    fs::create_dir_all(&foreign).unwrap();
    common::check(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "keepme"])
            .arg(&foreign),
    );
    fs::write(foreign.join("data"), "mine").unwrap();

    // Named, the foreign mount is refused.
    let out = fx.imperm(&["snapshots", "umount", "foreign"]);
    refused(
        &out,
        "tmpfs \"keepme\" (/) is mounted there, not an old root",
    );
    let out = fx.imperm(&["snapshots", "umount", "/run/imperm/old-roots/foreign"]);
    refused(&out, "not an old root of this filesystem");
    assert!(mounted_at(&foreign).is_some());

    // In use: exit 1, named, with the way out; nothing unmounted.
    let held = fs::File::open(fx.place(FIRST).join("etc/hostname")).unwrap();
    let out = fx.imperm(&["snapshots", "umount", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["busy"][0]["name"], FIRST);
    assert_eq!(v["unmounted"], serde_json::json!([]));
    assert_eq!(
        v["left_alone"][0]["mount_point"],
        "/run/imperm/old-roots/foreign"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("/run/imperm/old-roots/{FIRST} is in use")) && err.contains("--lazy"),
        "{err}"
    );
    assert!(mounted_at(&fx.place(FIRST)).is_some());

    // A mount inside it: not even --lazy (which would detach that one along with it).
    let inner = fx.place(FIRST).join("etc");
    common::check(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "inner"])
            .arg(&inner),
    );
    let out = fx.imperm(&["snapshots", "umount", "--lazy", FIRST, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        v["busy"][0]["mounts_inside"],
        serde_json::json!([format!("/run/imperm/old-roots/{FIRST}/etc")])
    );
    assert!(stderr(&out).contains("is mounted inside it; unmount that first"));
    assert!(mounted_at(&inner).is_some());
    common::check(Command::new("umount").arg(&inner));

    // --lazy detaches it although it is in use.
    let out = fx.imperm(&["snapshots", "umount", "--lazy", FIRST, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["unmounted"][0]["lazy"], true);
    assert!(mounted_at(&fx.place(FIRST)).is_none());
    drop(held);

    // Without argument again: only the foreign mount is there, left alone.
    let out = fx.imperm(&["snapshots", "umount"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("left alone"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(fs::read_to_string(foreign.join("data")).unwrap(), "mine");
    common::check(Command::new("umount").arg(&foreign));
}

/// A snapshot gc would delete but that is mounted is kept, with the reason, and the
/// others are still deleted (exit 0); once it is unmounted, gc deletes it.
#[test]
fn gc_keeps_a_mounted_old_root_and_deletes_the_others() {
    let Some(fx) = fixture("gc_mounted") else {
        return;
    };
    // A third, older old root (keep_last = 1: both older ones go).
    fx.fs.write("@root/etc/hostname", "zeroth");
    fx.fs.snapshot("@root", "@snapshots/20260113T063000Z", true);
    let out = fx.imperm(&["snapshots", "mount", FIRST]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = fx.imperm(&["snapshots", "gc", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    let row = |name: &str| {
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(row(FIRST)["keep"], true);
    assert_eq!(
        row(FIRST)["reasons"],
        serde_json::json!([format!("mounted at {}", fx.place(FIRST).display())])
    );
    assert_eq!(row("20260113T063000Z")["deleted"], true);
    assert_eq!(
        fs::read_to_string(fx.place(FIRST).join("etc/hostname")).unwrap(),
        "first"
    );
    let out = fx.imperm(&["snapshots", "umount", FIRST]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = fx.imperm(&["snapshots", "gc", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fx.fs.subvolume_paths(),
        ["@root", "@snapshots", &format!("@snapshots/{SECOND}")]
    );
}

/// Names a user could not type: a newline and a byte that is not UTF-8, given as `ls`
/// prints them; the place is made with the real name and unmounted by it.
#[test]
fn odd_names_are_mounted_and_unmounted_exactly() {
    let Some(fx) = fixture("mount_odd_names") else {
        return;
    };
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::OsStr::from_bytes(b"odd\nna\xffme");
    fx.fs.write("@root/etc/hostname", "odd");
    let src = fx.fs.path("@root");
    let dst = fx.fs.path("@snapshots").join(name);
    common::check(
        Command::new("btrfs")
            .args(["-q", "subvolume", "snapshot", "-r"])
            .arg(&src)
            .arg(&dst),
    );
    let printed = "odd\\x0ana\\xffme";
    // Through a top level mounted already (--mounted): no private namespace this time.
    let out = common::run(
        imperm_at(&fx.fs, &fx.tree, "2026-01-16T00:00:00Z")
            .args([
                "snapshots",
                "mount",
                printed,
                "--format",
                "json",
                "--mounted",
            ])
            .arg(fx.fs.top()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["name"], printed);
    let place = fx.tree.join("run/imperm/old-roots").join(name);
    assert_eq!(
        fs::read_to_string(place.join("etc/hostname")).unwrap(),
        "odd"
    );
    let out = fx.imperm(&["snapshots", "umount", printed, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["unmounted"][0]["name"], printed);
    assert!(!place.exists());
}

/// A mount stopped after its checks, just before it mounts (a failpoint), holds the
/// place: a second one at the same moment waits, then refuses, rather than finding the
/// directory empty too and mounting on it. Killed there (kill -9), the first leaves
/// nothing mounted, only the empty directory it made, which the next mount uses.
#[test]
fn a_mount_killed_half_way_holds_others_off_and_leaves_nothing_mounted() {
    use std::io::BufRead;
    let Some(fx) = fixture("mount_killed") else {
        return;
    };
    let place = fx.place(SECOND);
    let mut first = imperm_at(&fx.fs, &fx.tree, "2026-01-16T00:00:00Z")
        .env(
            imperm::snapshots::reset::FAILPOINT_ENV,
            "mount-checked:hang",
        )
        .args(["snapshots", "mount", "--device", &fx.fs.device])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(first.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "imperm: failpoint mount-checked: hanging\n");
    let second = fx.imperm(&["snapshots", "mount"]);
    refused(&second, "another process holds the lock");
    assert!(mounted_at(&place).is_none());
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(mounted_at(&place).is_none());
    assert_eq!(fs::read_dir(&place).unwrap().count(), 0);
    let out = fx.imperm(&["snapshots", "mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(table().iter().filter(|(p, _)| *p == place).count(), 1);
    assert_eq!(
        fs::read_to_string(place.join("etc/hostname")).unwrap(),
        "second"
    );
}

/// The library as browse's snapshot picker calls it, from a thread that already mounted a
/// top level privately (its mount namespace is a copy that never sees the new mount): the
/// old root lands where every other process sees it, and `Mounted::root` reaches it from
/// the caller's namespace, where `path` is an empty directory.
#[test]
fn the_library_mounts_for_everyone_and_gives_a_way_in_from_a_private_namespace() {
    use imperm::config::{FilesystemConfig, FsType};
    use imperm::snapshots::mount::{OldRoots, mount_old_root, umount_old_roots};
    let Some(fx) = fixture("mount_library") else {
        return;
    };
    let fs_config = FilesystemConfig {
        fs_type: FsType::Btrfs,
        device: Some(fx.fs.device.clone()),
        root_subvolume: "@root".into(),
        snapshot_dir: "@snapshots".into(),
        blank_snapshot: None,
    };
    let tree = fx.tree.clone();
    let place = fx.place(FIRST);
    let seen_by_all = place.clone();
    // A thread of its own: unsharing a mount namespace is a thread's, and must not change
    // the test harness's threads.
    let (seen_there, seen_through_root, unmounted) = std::thread::spawn(move || {
        let _top = imperm::filesystem::toplevel::TopLevel::open(&fs_config, None).unwrap();
        let at = OldRoots {
            fs: &fs_config,
            mounted: None,
            root: &tree,
            now: "2026-01-16T00:00:00Z".parse().unwrap(),
        };
        let m = mount_old_root(&at, Some(FIRST), None).unwrap();
        assert_eq!(m.name, FIRST);
        assert!(!m.already_mounted);
        let there = fs::read_dir(&m.path).unwrap().count();
        // /proc/self is the main thread's: the host's namespace.
        assert!(
            mounted_at(&seen_by_all).is_some(),
            "not in the host's namespace"
        );
        let through = fs::read_to_string(format!(
            "/proc/self/fd/{}/etc/hostname",
            std::os::fd::AsRawFd::as_raw_fd(&*m.root)
        ))
        .unwrap();
        // The same again: found mounted, in the namespace where it is.
        let again = mount_old_root(&at, Some(FIRST), None).unwrap();
        assert!(again.already_mounted);
        drop((m, again));
        let done = umount_old_roots(&at, None, false).unwrap();
        (there, through, done.unmounted.len())
    })
    .join()
    .unwrap();
    assert_eq!(
        seen_there, 0,
        "the private namespace does not see the mount"
    );
    assert_eq!(seen_through_root, "first");
    assert_eq!(unmounted, 1);
    assert!(mounted_at(&place).is_none());
    assert!(!place.exists());
}
