//! `imperm reset` on real btrfs filesystems (loop devices made by the tests): the reset
//! itself, crash recovery at each step, idempotence, and every refusal leaving the
//! filesystem exactly as it was.

mod common;

use std::fs;
use std::os::fd::AsFd;
use std::process::{Command, Output};

use common::{LoopBtrfs, btrfs};

const NOW: &str = "2026-01-15T06:30:00Z";
const SNAP: &str = "@snapshots/20260115T063000Z";

fn imperm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imperm"));
    // No host configuration may leak in: an empty root, and a fixed clock.
    cmd.env(imperm::commands::NOW_ENV, NOW)
        .env_remove(imperm::reset::FAILPOINT_ENV);
    cmd
}

fn reset(fs: &LoopBtrfs, extra: &[&str]) -> Output {
    let empty = fs.scratch().join("empty-root");
    fs::create_dir_all(&empty).unwrap();
    common::run(
        imperm()
            .arg("--root")
            .arg(&empty)
            .args(["reset", "--fs", "btrfs", "--mounted"])
            .arg(fs.top())
            .args(extra),
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A root as a real host has it: files, and nested subvolumes (systemd makes
/// /var/lib/machines one).
fn populate(fs: &LoopBtrfs) -> Vec<String> {
    fs.subvolume("@root");
    fs.write("@root/etc/machine-id", "0123456789abcdef\n");
    fs.write("@root/var/log/boot.log", "booted\n");
    fs.write("@root/home/josh/.bash_history", "ls\n");
    fs::create_dir_all(fs.path("@root/var/lib")).unwrap();
    fs.subvolume("@root/var/lib/machines");
    fs.write(
        "@root/var/lib/machines/debian/etc/os-release",
        "ID=debian\n",
    );
    fs.subvolume("@root/var/lib/machines/nested");
    fs.write("@root/var/lib/machines/nested/deep", "deep\n");
    std::os::unix::fs::symlink("/nix/store/abc-etc/static", fs.path("@root/etc/static")).unwrap();
    fs.tree("@root")
}

/// The invariant of every successful reset: one root, empty; one snapshot holding the old
/// root's content, read-only, nested subvolumes included and read-only too.
fn assert_reset_once(fs: &LoopBtrfs, before: &[String]) {
    assert_eq!(
        fs.subvolume_paths(),
        [
            "@root",
            "@snapshots",
            "@snapshots/20260115T063000Z",
            "@snapshots/20260115T063000Z/var/lib/machines",
            "@snapshots/20260115T063000Z/var/lib/machines/nested",
        ]
    );
    assert_eq!(
        fs.tree("@root"),
        Vec::<String>::new(),
        "the new root is empty"
    );
    assert_eq!(
        fs.tree(SNAP),
        before,
        "the snapshot holds exactly the old root"
    );
    assert!(fs.is_readonly(SNAP));
    assert!(fs.is_readonly(&format!("{SNAP}/var/lib/machines")));
    assert!(fs.is_readonly(&format!("{SNAP}/var/lib/machines/nested")));
}

#[test]
fn reset_keeps_the_old_root_with_nested_subvolumes_and_makes_a_fresh_one() {
    let Some(fs) = btrfs("reset") else { return };
    let before = populate(&fs);
    let out = reset(&fs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_reset_once(&fs, &before);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "old root kept in @snapshots/20260115T063000Z; @root is fresh\n"
    );
    let log = stderr(&out);
    for step in [
        "imperm reset: creating snapshot directory @snapshots",
        "imperm reset: snapshotting @root to @snapshots/20260115T063000Z",
        "imperm reset: deleting the old root @root",
        "imperm reset: creating an empty @root",
    ] {
        assert!(log.contains(step), "missing {step:?} in\n{log}");
    }
}

#[test]
fn a_second_reset_of_an_untouched_root_does_nothing_and_a_used_root_is_reset_again() {
    let Some(fs) = btrfs("reset_twice") else {
        return;
    };
    let before = populate(&fs);
    assert!(reset(&fs, &[]).status.success());
    let subvolumes = fs.subvolumes();
    let again = reset(&fs, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "@root is still fresh from the last reset: nothing to do\n"
    );
    assert_eq!(fs.subvolumes(), subvolumes, "nothing changed");
    assert_reset_once(&fs, &before);

    // The system booted and wrote: the next reset (a minute later) keeps that root too.
    fs.write("@root/var/log/second-boot.log", "second\n");
    let later = reset_at(&fs, "2026-01-15T06:31:00Z");
    assert!(later.status.success(), "{}", stderr(&later));
    assert_eq!(
        fs.tree("@snapshots/20260115T063100Z"),
        ["var/", "var/log/", "var/log/second-boot.log = second\n"]
    );
}

fn reset_at(fs: &LoopBtrfs, now: &str) -> Output {
    let empty = fs.scratch().join("empty-root");
    fs::create_dir_all(&empty).unwrap();
    common::run(
        imperm()
            .env(imperm::commands::NOW_ENV, now)
            .arg("--root")
            .arg(&empty)
            .args(["reset", "--fs", "btrfs", "--mounted"])
            .arg(fs.top()),
    )
}

#[test]
fn a_fresh_root_is_a_snapshot_of_the_blank_subvolume_when_one_is_configured() {
    let Some(fs) = btrfs("reset_blank") else {
        return;
    };
    let before = populate(&fs);
    fs.subvolume("@blank");
    fs.write("@blank/etc/.keep", "");
    let out = reset(&fs, &["--blank-snapshot", "@blank"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs.tree("@root"), ["etc/", "etc/.keep = "]);
    assert_eq!(fs.tree(SNAP), before);
    assert!(!fs.is_readonly("@root"));
}

#[test]
fn no_root_yet_means_create_one() {
    let Some(fs) = btrfs("reset_first_boot") else {
        return;
    };
    let out = reset(&fs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "there was no @root: created a fresh one\n"
    );
    assert_eq!(fs.subvolume_paths(), ["@root"]);
}

/// Kill the reset after each step, then run it again: every time the end state has
/// exactly one root and the old root's content in exactly one snapshot.
#[test]
fn a_reset_killed_after_any_step_is_completed_by_the_next_run() {
    for failpoint in ["snapshot-taken", "root-deleted", "root-created"] {
        let Some(fs) = btrfs("reset_crash") else {
            return;
        };
        let before = populate(&fs);
        let killed = common::run(
            imperm()
                .env(imperm::reset::FAILPOINT_ENV, failpoint)
                .arg("--root")
                .arg(fs.scratch())
                .args(["reset", "--fs", "btrfs", "--mounted"])
                .arg(fs.top()),
        );
        assert_eq!(
            killed.status.code(),
            None,
            "{failpoint}: aborted by a signal: {}",
            stderr(&killed)
        );
        assert!(stderr(&killed).contains(&format!("failpoint {failpoint}: aborting")));

        let out = reset(&fs, &[]);
        assert!(out.status.success(), "{failpoint}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("resuming an interrupted reset"),
            "{failpoint}: {}",
            stderr(&out)
        );
        assert_reset_once(&fs, &before);

        // And the state is settled: one more run changes nothing.
        let subvolumes = fs.subvolumes();
        assert!(reset(&fs, &[]).status.success());
        assert_eq!(fs.subvolumes(), subvolumes, "{failpoint}: settled");
    }
}

/// Killed with SIGKILL at arbitrary moments (not at a chosen step): the next run still
/// ends with one root and the old root in one snapshot.
#[test]
fn a_reset_killed_at_arbitrary_moments_is_completed_by_the_next_run() {
    // A reset of this tree takes 15-30 ms here; the delays spread kills across it.
    let mut interrupted = 0;
    for delay_ms in (0u64..=33).step_by(3) {
        let Some(fs) = btrfs("reset_sigkill") else {
            return;
        };
        let before = populate(&fs);
        let mut child = imperm()
            .arg("--root")
            .arg(fs.scratch())
            .args(["reset", "--fs", "btrfs", "--mounted"])
            .arg(fs.top())
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let out = reset(&fs, &[]);
        assert!(
            out.status.success(),
            "killed after {delay_ms} ms: {}",
            stderr(&out)
        );
        interrupted += usize::from(stderr(&out).contains("resuming an interrupted reset"));
        assert_reset_once(&fs, &before);
    }
    eprintln!("{interrupted} of 12 kills landed inside a reset");
}

#[test]
fn reset_mounts_the_device_itself_privately() {
    let Some(fs) = btrfs("reset_device") else {
        return;
    };
    let before = populate(&fs);
    let empty = fs.scratch().join("empty-root");
    fs::create_dir_all(&empty).unwrap();
    let out = common::run(
        imperm()
            .arg("--root")
            .arg(&empty)
            .args(["reset", "--fs", "btrfs", "--device", &fs.device]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_reset_once(&fs, &before);
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("imperm-top-"),
        "the private mount is not visible outside"
    );
    let leftovers: Vec<_> = fs::read_dir("/run")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("imperm-top-"))
        .collect();
    assert!(leftovers.is_empty(), "the temporary mount point is removed");
}

#[test]
fn reset_reads_its_settings_from_the_configuration_file() {
    let Some(fs) = btrfs("reset_config") else {
        return;
    };
    let before = populate(&fs);
    let config = fs.scratch().join("config.toml");
    fs::write(
        &config,
        format!("[filesystem]\ntype = \"btrfs\"\ndevice = \"{}\"\nroot_subvolume = \"@root\"\nsnapshot_dir = \"@snapshots\"\n", fs.device),
    )
    .unwrap();
    let out = common::run(
        imperm()
            .arg("--root")
            .arg(fs.scratch())
            .arg("--config")
            .arg(&config)
            .arg("reset"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_reset_once(&fs, &before);
}

#[test]
fn on_a_tmpfs_root_reset_says_there_is_nothing_to_do() {
    let scratch = tempfile::TempDir::new().unwrap();
    let out = common::run(
        imperm()
            .arg("--root")
            .arg(scratch.path())
            .args(["reset", "--fs", "tmpfs"]),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tmpfs root: nothing to reset (it starts empty at every boot)\n"
    );
}

/// Every refusal: exit 2, one line naming the cause, and not a single subvolume or file
/// changed.
#[test]
fn refusals_change_nothing() {
    let Some(fs) = btrfs("reset_refusals") else {
        return;
    };
    populate(&fs);
    fs.subvolume("@snapshots");
    fs.subvolume("@snapshots/20260115T063000Z");
    fs::create_dir(fs.path("plain")).unwrap();
    fs.subvolume("@other");
    fs.write("@other/precious", "keep me\n");
    std::os::unix::fs::symlink("@other", fs.path("@link")).unwrap();
    std::os::unix::fs::symlink("@other", fs.path("@snaplink")).unwrap();

    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "reset",
                "--fs",
                "btrfs",
                "--device",
                "/dev/imperm-no-such-device",
            ],
            "device /dev/imperm-no-such-device does not exist; nothing was done",
        ),
        (
            &["reset", "--fs", "btrfs", "--root-subvolume", ""],
            "--root-subvolume: \"\" names the top level itself",
        ),
        (
            &["reset", "--fs", "btrfs", "--root-subvolume", "/"],
            "--root-subvolume: \"/\" names the top level itself",
        ),
        (
            &["reset", "--fs", "btrfs", "--root-subvolume", ".."],
            "--root-subvolume: \"..\" contains `..`",
        ),
        (
            &[
                "reset",
                "--fs",
                "btrfs",
                "--snapshot-dir",
                "@root/.snapshots",
            ],
            "is inside the root subvolume \"@root\"",
        ),
        (
            &["reset", "--fs", "btrfs", "--root-subvolume", "plain"],
            "plain is not a subvolume (a plain directory)",
        ),
        (
            &["reset", "--fs", "btrfs", "--root-subvolume", "@link"],
            "@link is not a subvolume (a symlink)",
        ),
        (
            &["reset", "--fs", "btrfs", "--snapshot-dir", "@snaplink"],
            "snapshot directory",
        ),
        (
            &["reset", "--fs", "btrfs"],
            "snapshot /", // …/@snapshots/20260115T063000Z already exists
        ),
        (
            &["reset", "--fs", "btrfs", "--blank-snapshot", "plain"],
            "blank snapshot",
        ),
    ];
    for (args, want) in cases {
        let before = (fs.subvolumes(), fs.tree(""));
        let mut cmd = imperm();
        cmd.arg("--root").arg(fs.scratch()).args(*args);
        if !args.contains(&"--device") {
            cmd.arg("--mounted").arg(fs.top());
        }
        let out = common::run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(
            err.starts_with("imperm: ") && err.contains(want),
            "{args:?}: {err}"
        );
        assert_eq!(
            (fs.subvolumes(), fs.tree("")),
            before,
            "{args:?} changed the filesystem"
        );
    }
    assert!(
        stderr(&common::run(
            imperm()
                .arg("--root")
                .arg(fs.scratch())
                .args(["reset", "--fs", "btrfs", "--mounted"])
                .arg(fs.top())
        ))
        .contains("already exists; nothing was done")
    );
}

#[test]
fn a_mounted_root_is_never_reset() {
    let Some(fs) = btrfs("reset_mounted_root") else {
        return;
    };
    populate(&fs);
    let at = fs.scratch().join("live-root");
    fs::create_dir(&at).unwrap();
    common::check(
        Command::new("mount")
            .args(["-o", "subvol=@root", &fs.device])
            .arg(&at),
    );
    let before = (fs.subvolumes(), fs.tree(""));
    let out = reset(&fs, &[]);
    common::check(Command::new("umount").arg(&at));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the root subvolume @root is mounted at "),
        "{}",
        stderr(&out)
    );
    assert_eq!((fs.subvolumes(), fs.tree("")), before);
}

#[test]
fn a_held_lock_is_a_refusal_not_a_wait() {
    let Some(fs) = btrfs("reset_lock") else {
        return;
    };
    populate(&fs);
    let before = (fs.subvolumes(), fs.tree(""));
    let top = fs::File::open(fs.top()).unwrap();
    rustix::fs::flock(
        top.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .unwrap();
    let out = reset(&fs, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("another imperm reset or gc holds the lock; nothing was done"));
    assert_eq!((fs.subvolumes(), fs.tree("")), before);
    drop(top);
    assert!(reset(&fs, &[]).status.success());
}
