//! `imperm reset` on real btrfs filesystems (loop devices made by the tests): the reset
//! itself, crash recovery at each step, idempotence, and every refusal leaving the
//! filesystem exactly as it was.

mod common;

use std::fs;
use std::process::{Command, Output};

use common::{LoopBtrfs, btrfs};

const NOW: &str = "2026-01-15T06:30:00Z";
const SNAP: &str = "@snapshots/20260115T063000Z";

fn imperm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imperm"));
    // No host configuration may leak in: an empty root, and a fixed clock.
    cmd.env(imperm::commands::NOW_ENV, NOW)
        .env_remove(imperm::snapshots::reset::FAILPOINT_ENV);
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

/// A reset killed (SIGKILL) `delay_ms` after it started, then a reset run to its end.
fn killed_then_reset(fs: &LoopBtrfs, delay_ms: u64) -> Output {
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
    reset(fs, &[])
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
    // With --mounted DIR, paths are named DIR/… (see reset_log_lines_name_paths_on_the_device).
    let top = fs.top().display();
    for step in [
        format!("imperm reset: creating snapshot directory {top}/@snapshots"),
        format!("imperm reset: snapshotting {top}/@root to {top}/@snapshots/20260115T063000Z"),
        format!("imperm reset: deleting the old root {top}/@root"),
        format!("imperm reset: creating an empty {top}/@root"),
    ] {
        assert!(log.contains(&step), "missing {step:?} in\n{log}");
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
    // nested-deleted: after the first nested subvolume of the old root was deleted (btrfs
    // deletes it at once: the next run deletes the rest, as ever).
    for failpoint in [
        "snapshot-taken",
        "nested-deleted",
        "root-deleted",
        "root-created",
    ] {
        let Some(fs) = btrfs("reset_crash") else {
            return;
        };
        let before = populate(&fs);
        let killed = common::run(
            imperm()
                .env(imperm::snapshots::reset::FAILPOINT_ENV, failpoint)
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
        let out = killed_then_reset(&fs, delay_ms);
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
    let child = imperm()
        .arg("--root")
        .arg(&empty)
        .args(["reset", "--fs", "btrfs", "--device", &fs.device])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_reset_once(&fs, &before);
    // Bytes, lossily: another test's mount point need not be UTF-8.
    let mounts = String::from_utf8_lossy(&fs::read("/proc/self/mountinfo").unwrap()).into_owned();
    assert!(
        !mounts.contains(&format!("imperm-top-{pid}-")),
        "the private mount is not visible outside"
    );
    // Other tests run imperm at the same time: only this run's directory is looked for.
    let leftovers: Vec<_> = fs::read_dir("/run")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("imperm-top-{pid}-"))
        })
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
    let top = common::HeldLock::new(fs.top());
    let out = reset(&fs, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(
        "another imperm (reset, gc, restore, migrate or baseline) holds the lock; nothing was done"
    ));
    assert_eq!((fs.subvolumes(), fs.tree("")), before);
    drop(top);
    assert!(reset(&fs, &[]).status.success());
}

/// A blank snapshot, root subvolume and snapshot directory that overlap in any way are
/// refused before anything changes: from the options, from the configuration file, and
/// from the library called without either.
#[test]
fn overlapping_layouts_are_refused_before_any_change() {
    let Some(fs) = btrfs("reset_layouts") else {
        return;
    };
    populate(&fs);
    fs.subvolume("@blank");
    fs.subvolume("@snapshots");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--blank-snapshot", "@root"],
            "--blank-snapshot: \"@root\" is the root subvolume itself",
        ),
        (
            &["--blank-snapshot", "/@root/"],
            "--blank-snapshot: \"@root\" is the root subvolume itself",
        ),
        (
            &["--blank-snapshot", "@root/var/lib/machines"],
            "--blank-snapshot: \"@root/var/lib/machines\" is inside the root subvolume \"@root\"",
        ),
        (
            &[
                "--root-subvolume",
                "@blank/root",
                "--blank-snapshot",
                "@blank",
            ],
            "--blank-snapshot: \"@blank\" holds the root subvolume \"@blank/root\"",
        ),
        (
            &["--blank-snapshot", "@snapshots"],
            "--blank-snapshot: \"@snapshots\" is the snapshot directory itself",
        ),
        (
            &[
                "--snapshot-dir",
                "@blank/snaps",
                "--blank-snapshot",
                "@blank",
            ],
            "--blank-snapshot: \"@blank\" holds the snapshot directory \"@blank/snaps\"",
        ),
        (
            &["--root-subvolume", "@snapshots/root"],
            "--root-subvolume: \"@snapshots/root\" is inside the snapshot directory \"@snapshots\"",
        ),
        (
            &["--snapshot-dir", "@root"],
            "--snapshot-dir: \"@root\" is the root subvolume itself",
        ),
    ];
    for (extra, want) in cases {
        let before = (fs.subvolumes(), fs.tree(""));
        let out = reset(&fs, extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{extra:?}: one line: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(
            err.trim_end().ends_with("nothing was done"),
            "{extra:?}: {err}"
        );
        assert_eq!(
            (fs.subvolumes(), fs.tree("")),
            before,
            "{extra:?} changed the filesystem"
        );
    }

    // The configuration file names the key at fault.
    let config = fs.scratch().join("blank.toml");
    fs::write(
        &config,
        "[filesystem]\ntype = \"btrfs\"\nblank_snapshot = \"@root\"\n",
    )
    .unwrap();
    let before = (fs.subvolumes(), fs.tree(""));
    let out = common::run(
        imperm()
            .arg("--root")
            .arg(fs.scratch())
            .arg("--config")
            .arg(&config)
            .args(["reset", "--mounted"])
            .arg(fs.top()),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "blank.toml:3:18: filesystem.blank_snapshot: \"@root\" is the root subvolume itself"
        ),
        "{err}"
    );
    assert_eq!((fs.subvolumes(), fs.tree("")), before);

    // The library checks it too, for callers that skip the configuration.
    use imperm::config::FsType;
    use imperm::filesystem::backend::for_type;
    use imperm::filesystem::toplevel::TopLevel;
    use imperm::snapshots::reset::Layout;
    let top = TopLevel::existing(fs.top()).unwrap();
    let backend = for_type(FsType::Btrfs);
    let layouts = [
        ("@root", "@snapshots", Some("@root")),
        ("@root", "@snapshots", Some("@root/var/lib/machines")),
        ("@root", "@snapshots", Some("@snapshots")),
        ("@snapshots/x", "@snapshots", None),
        ("@root", "@root/snaps", None),
    ];
    for (root, snaps, blank) in layouts {
        let layout = Layout {
            root: root.into(),
            snapshot_dir: snaps.into(),
            blank: blank.map(Into::into),
        };
        let mut log = |_: String| {};
        let got = imperm::snapshots::reset::reset(
            backend.as_ref(),
            &top,
            &layout,
            NOW.parse().unwrap(),
            &mut log,
        );
        let err = got
            .expect_err(&format!("{layout:?} is refused"))
            .to_string();
        assert!(err.ends_with("nothing was done"), "{layout:?}: {err}");
        assert_eq!((fs.subvolumes(), fs.tree("")), before, "{layout:?}");
    }
}

/// Hardware without a real-time clock boots with the same time again: every reset still
/// works, each snapshot gets its own name (`-1`, `-2` after the time), and they sort in
/// the order they were taken.
#[test]
fn a_frozen_clock_gives_each_reset_its_own_name_in_order() {
    let Some(fs) = btrfs("reset_frozen_clock") else {
        return;
    };
    populate(&fs);
    for boot in 1..=3 {
        let out = reset(&fs, &[]);
        assert!(out.status.success(), "reset {boot}: {}", stderr(&out));
        fs.write("@root/etc/boot", &format!("{boot}\n"));
    }
    let names: Vec<String> = fs
        .subvolume_paths()
        .into_iter()
        .filter_map(|p| p.strip_prefix("@snapshots/").map(str::to_string))
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(
        names,
        [
            "20260115T063000Z",
            "20260115T063000Z-1",
            "20260115T063000Z-2"
        ]
    );
    assert_eq!(fs.read("@snapshots/20260115T063000Z-1/etc/boot"), "1\n");
    assert_eq!(fs.read("@snapshots/20260115T063000Z-2/etc/boot"), "2\n");
    for name in &names {
        assert!(fs.is_readonly(&format!("@snapshots/{name}")), "{name}");
    }
}

/// A name already taken by something that is not imperm's snapshot (a file, a directory,
/// a symlink) is left alone: the reset takes the next name.
#[test]
fn a_name_taken_by_something_else_is_left_alone() {
    let Some(fs) = btrfs("reset_name_taken") else {
        return;
    };
    let before = populate(&fs);
    fs::create_dir(fs.path("@snapshots")).unwrap();
    fs.write("@snapshots/20260115T063000Z", "a note\n");
    fs::create_dir(fs.path("@snapshots/20260115T063000Z-1")).unwrap();
    fs.subvolume("@other");
    std::os::unix::fs::symlink("../@other", fs.path("@snapshots/20260115T063000Z-2")).unwrap();
    // Another second's names do not count.
    fs.write("@snapshots/20260115T063001Z-7", "");
    let out = reset(&fs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "old root kept in @snapshots/20260115T063000Z-3; @root is fresh\n"
    );
    assert_eq!(fs.tree("@snapshots/20260115T063000Z-3"), before);
    assert_eq!(fs.read("@snapshots/20260115T063000Z"), "a note\n");
    assert!(fs.path("@snapshots/20260115T063000Z-1").is_dir());
    assert_eq!(
        fs::read_link(fs.path("@snapshots/20260115T063000Z-2")).unwrap(),
        std::path::Path::new("../@other")
    );
    assert_eq!(fs.tree("@other"), Vec::<String>::new());

    // The last suffix there is, planted: any free one still lets the boot go on.
    fs.write("@root/etc/boot", "2\n");
    fs.write("@snapshots/20260115T063000Z-4294967295", "");
    let out = reset(&fs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "old root kept in @snapshots/20260115T063000Z-4; @root is fresh\n"
    );
}

/// With a frozen clock, a reset killed at any moment is completed by the next run under
/// the name it chose, and no snapshot is taken twice.
#[test]
fn a_reset_killed_at_arbitrary_moments_with_a_frozen_clock_is_completed() {
    // A whole reset, process start included, takes about 100 ms here (syncfs twice).
    let mut interrupted = 0;
    for delay_ms in (0u64..=120).step_by(10) {
        let Some(fs) = btrfs("reset_sigkill_frozen") else {
            return;
        };
        populate(&fs);
        assert!(reset(&fs, &[]).status.success());
        fs.write("@root/etc/second", "boot 2\n");
        let out = killed_then_reset(&fs, delay_ms);
        assert!(
            out.status.success(),
            "killed after {delay_ms} ms: {}",
            stderr(&out)
        );
        interrupted += usize::from(stderr(&out).contains("resuming an interrupted reset"));
        let snapshots: Vec<String> = fs
            .subvolume_paths()
            .into_iter()
            .filter(|p| p.starts_with("@snapshots/") && !p.contains("/var/"))
            .collect();
        assert_eq!(
            snapshots,
            [
                "@snapshots/20260115T063000Z",
                "@snapshots/20260115T063000Z-1"
            ],
            "killed after {delay_ms} ms"
        );
        assert_eq!(
            fs.tree("@snapshots/20260115T063000Z-1"),
            ["etc/", "etc/second = boot 2\n"],
            "killed after {delay_ms} ms"
        );
        assert_eq!(fs.tree("@root"), Vec::<String>::new());
        // Settled: once more changes nothing.
        let subvolumes = fs.subvolumes();
        assert!(reset(&fs, &[]).status.success());
        assert_eq!(fs.subvolumes(), subvolumes, "killed after {delay_ms} ms");
    }
    eprintln!("{interrupted} of 13 kills landed inside a reset");
}

/// An interrupted reset's recorded name now belongs to something else (not a subvolume):
/// it is left alone and the reset goes on under a free name.
#[test]
fn an_interrupted_reset_whose_name_was_taken_meanwhile_takes_another() {
    let Some(fs) = btrfs("reset_resume_taken") else {
        return;
    };
    let before = populate(&fs);
    fs::create_dir(fs.path("@snapshots")).unwrap();
    fs.write(
        &format!("@snapshots/{}", imperm::snapshots::reset::STATE_FILE),
        r#"{"phase": "snapshot", "snapshot": "20250101T000000Z"}"#,
    );
    fs.write("@snapshots/20250101T000000Z", "not ours\n");
    let out = reset(&fs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs.read("@snapshots/20250101T000000Z"), "not ours\n");
    assert_eq!(fs.tree(SNAP), before);
}

/// A state file that is not JSON stops the reset before any change, naming the file.
#[test]
fn a_corrupt_state_file_is_a_refusal() {
    let Some(fs) = btrfs("reset_corrupt_state") else {
        return;
    };
    populate(&fs);
    fs::create_dir(fs.path("@snapshots")).unwrap();
    fs.write(
        &format!("@snapshots/{}", imperm::snapshots::reset::STATE_FILE),
        "{\"phase\": \"snap",
    );
    let before = (fs.subvolumes(), fs.tree(""));
    let out = reset(&fs, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("@snapshots/.imperm-reset.json: unreadable reset state"),
        "{err}"
    );
    assert_eq!((fs.subvolumes(), fs.tree("")), before);
}

/// Two resets started at once: one does the work, the other is refused by the lock or
/// finds nothing left to do; either way one snapshot of the old root.
#[test]
fn two_resets_at_once_make_one_snapshot() {
    for round in 0..4 {
        let Some(fs) = btrfs("reset_concurrent") else {
            return;
        };
        let before = populate(&fs);
        let spawn = || {
            imperm()
                .arg("--root")
                .arg(fs.scratch())
                .args(["reset", "--fs", "btrfs", "--mounted"])
                .arg(fs.top())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
            let err = stderr(&out);
            assert!(
                out.status.success() || err.contains("holds the lock; nothing was done"),
                "round {round}: {err}"
            );
        }
        assert_reset_once(&fs, &before);
    }
}

/// A clock before 1970 or far in the future still names, orders and resets.
#[test]
fn clocks_before_1970_and_far_ahead_still_reset() {
    let Some(fs) = btrfs("reset_odd_clocks") else {
        return;
    };
    populate(&fs);
    for (now, name) in [
        ("9999-12-30T12:00:00Z", "99991230T120000Z"),
        ("1969-07-20T20:17:40Z", "19690720T201740Z"),
        ("1970-01-01T00:00:00Z", "19700101T000000Z"),
        ("1970-01-01T00:00:00Z", "19700101T000000Z-1"),
    ] {
        let out = reset_at(&fs, now);
        assert!(out.status.success(), "{now}: {}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("old root kept in @snapshots/{name}; @root is fresh\n"),
            "{now}"
        );
        fs.write("@root/etc/boot", now);
    }
}

/// When imperm mounts the top level itself, messages name paths as the user knows them
/// (`@root on /dev/loopN`), never the temporary mount point that is gone when they read it.
#[test]
fn errors_name_paths_on_the_device_not_the_temporary_mount_point() {
    let Some(fs) = btrfs("reset_error_paths") else {
        return;
    };
    populate(&fs);
    fs::create_dir(fs.path("plain")).unwrap();
    let empty = fs.scratch().join("empty-root");
    fs::create_dir_all(&empty).unwrap();
    let device = &fs.device;
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["reset", "--fs", "btrfs", "--root-subvolume", "plain"],
            format!("imperm: plain on {device} is not a subvolume (a plain directory)"),
        ),
        (
            vec!["reset", "--fs", "btrfs", "--blank-snapshot", "nothing-here"],
            format!("imperm: blank snapshot nothing-here on {device} is not a subvolume (missing)"),
        ),
        (
            vec![
                "restore",
                "/etc/machine-id",
                "--fs",
                "btrfs",
                "--from",
                "nosuch",
            ],
            format!("no snapshot \"nosuch\" in @snapshots on {device}"),
        ),
    ];
    for (args, want) in cases {
        let out = common::run(
            imperm()
                .arg("--root")
                .arg(&empty)
                .args(&args)
                .args(["--device", device]),
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
        assert!(!err.contains("imperm-top-"), "{args:?}: {err}");
    }
}

/// kill -9 leaves the temporary mount point behind; the next run removes the ones whose
/// process is gone, and never one a running imperm may be using (in its own mount
/// namespace it is a mount point; removing it from here would detach that mount).
#[test]
fn mount_points_left_by_dead_runs_are_removed_and_live_ones_kept() {
    let Some(fs) = btrfs("reset_leftovers") else {
        return;
    };
    populate(&fs);
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let mut live = Command::new("sleep").arg("60").spawn().unwrap();
    let live_pid = live.id();
    let run = std::path::Path::new("/run");
    let dead_empty = run.join(format!("imperm-top-{dead_pid}-test01"));
    let dead_full = run.join(format!("imperm-top-{dead_pid}-test02"));
    let live_empty = run.join(format!("imperm-top-{live_pid}-test03"));
    for dir in [&dead_empty, &dead_full, &live_empty] {
        fs::create_dir(dir).unwrap();
    }
    fs::write(dead_full.join("something"), "not imperm's\n").unwrap();
    let empty = fs.scratch().join("empty-root");
    fs::create_dir_all(&empty).unwrap();
    let out = common::run(imperm().arg("--root").arg(&empty).args([
        "snapshots",
        "ls",
        "--fs",
        "btrfs",
        "--device",
        &fs.device,
    ]));
    let (dead_gone, full_kept, live_kept) = (
        !dead_empty.exists(),
        dead_full.exists(),
        live_empty.exists(),
    );
    let _ = live.kill();
    let _ = live.wait();
    let _ = fs::remove_file(dead_full.join("something"));
    for dir in [&dead_empty, &dead_full, &live_empty] {
        let _ = fs::remove_dir(dir);
    }
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dead_gone, "the empty leftover of a dead run is removed");
    assert!(
        full_kept,
        "a directory with something in it is never removed"
    );
    assert!(live_kept, "a running imperm's mount point is kept");
}

/// A resumed reset deletes the snapshot its state names: a state that names anything but
/// a plain name in the snapshot directory (`..`, a path, nothing) is refused before any
/// change, by reset and by gc.
#[test]
fn a_state_naming_anything_but_a_snapshot_is_refused() {
    let Some(fs) = btrfs("reset_state_names") else {
        return;
    };
    populate(&fs);
    fs.subvolume("@snapshots");
    fs.subvolume("@persist");
    fs.write("@persist/precious", "keep me\n");
    for state in [
        r#"{"phase": "snapshot", "snapshot": ""}"#,
        r#"{"phase": "snapshot", "snapshot": "../@persist"}"#,
        r#"{"phase": "snapshot", "snapshot": "."}"#,
        r#"{"phase": "replace", "snapshot": "../@persist", "old_root": 1}"#,
    ] {
        fs.write(
            &format!("@snapshots/{}", imperm::snapshots::reset::STATE_FILE),
            state,
        );
        let before = (fs.subvolumes(), fs.tree(""));
        let out = reset(&fs, &[]);
        assert_eq!(out.status.code(), Some(2), "{state}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("unreadable reset state"),
            "{state}: {}",
            stderr(&out)
        );
        let gc = common::run(
            imperm()
                .arg("--root")
                .arg(fs.scratch())
                .args(["gc", "--fs", "btrfs", "--mounted"])
                .arg(fs.top()),
        );
        assert_eq!(gc.status.code(), Some(2), "{state}: {}", stderr(&gc));
        assert_eq!((fs.subvolumes(), fs.tree("")), before, "{state}");
    }
}

/// A run that dies with the top level mounted (abort, as kill -9 would) leaves its empty
/// mount point; the next run removes it.
#[test]
fn a_crashed_runs_mount_point_is_removed_by_the_next_run() {
    let Some(fs) = btrfs("reset_crash_leftover") else {
        return;
    };
    let before = populate(&fs);
    let empty = fs.scratch().join("empty-root");
    fs::create_dir_all(&empty).unwrap();
    let device_reset = || {
        let mut cmd = imperm();
        cmd.arg("--root")
            .arg(&empty)
            .args(["reset", "--fs", "btrfs", "--device", &fs.device]);
        cmd
    };
    let child = device_reset()
        .env(imperm::snapshots::reset::FAILPOINT_ENV, "snapshot-taken")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "aborted");
    let leftovers = || -> Vec<String> {
        fs::read_dir("/run")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("imperm-top-{pid}-")))
            .collect()
    };
    assert_eq!(leftovers().len(), 1, "the crash left its mount point");
    let out = common::run(&mut device_reset());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_reset_once(&fs, &before);
    assert_eq!(leftovers(), Vec::<String>::new(), "the next run removed it");
}

/// With a frozen clock, a reset aborted after each step is completed under the suffixed
/// name it chose: the first boot's snapshot is untouched and the second is taken once.
#[test]
fn a_reset_killed_after_any_step_with_a_frozen_clock_is_completed() {
    for failpoint in ["snapshot-taken", "root-deleted", "root-created"] {
        let Some(fs) = btrfs("reset_crash_frozen") else {
            return;
        };
        let first = populate(&fs);
        assert!(reset(&fs, &[]).status.success());
        fs.write("@root/etc/second", "boot 2\n");
        let killed = common::run(
            imperm()
                .env(imperm::snapshots::reset::FAILPOINT_ENV, failpoint)
                .arg("--root")
                .arg(fs.scratch())
                .args(["reset", "--fs", "btrfs", "--mounted"])
                .arg(fs.top()),
        );
        assert_eq!(
            killed.status.code(),
            None,
            "{failpoint}: {}",
            stderr(&killed)
        );
        let out = reset(&fs, &[]);
        assert!(out.status.success(), "{failpoint}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("resuming an interrupted reset"),
            "{failpoint}: {}",
            stderr(&out)
        );
        assert_eq!(
            fs.tree(SNAP),
            first,
            "{failpoint}: the first snapshot is untouched"
        );
        assert_eq!(
            fs.tree("@snapshots/20260115T063000Z-1"),
            ["etc/", "etc/second = boot 2\n"],
            "{failpoint}"
        );
        assert!(fs.is_readonly("@snapshots/20260115T063000Z-1"));
        assert_eq!(fs.tree("@root"), Vec::<String>::new(), "{failpoint}");
        let snapshots = fs
            .subvolume_paths()
            .into_iter()
            .filter(|p| p.starts_with("@snapshots/") && !p.contains("/var/"))
            .count();
        assert_eq!(snapshots, 2, "{failpoint}");
    }
}

/// Runs `cmd` and fails the test if it has not ended within 20 s: a FIFO where a file is
/// expected must be refused at once, never waited on.
fn run_bounded(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!("{cmd:?} hung (killed after 20 s): {}", stderr(&out));
}

/// A subvolume's uuid and parent uuid: it is the same subvolume (its tree tells whether
/// its content changed; taking a snapshot of it moves its generation).
fn identity(fs: &LoopBtrfs, rel: &str) -> String {
    common::check(
        Command::new("btrfs")
            .args(["subvolume", "show"])
            .arg(fs.path(rel)),
    )
    .lines()
    .filter(|l| l.contains("UUID:"))
    .collect::<Vec<_>>()
    .join("\n")
}

fn write_state(fs: &LoopBtrfs, json: &str) {
    fs.write(
        &format!("@snapshots/{}", imperm::snapshots::reset::STATE_FILE),
        json,
    );
}

/// A resumed `snapshot` phase deletes the subvolume of the recorded name only when it is
/// evidently what a snapshot of this root left (its parent uuid is the root's, it is not
/// the blank snapshot, nothing of it is mounted). Anything else of that name is left
/// alone, exactly as it was, and the old root goes into a snapshot of a free name.
#[test]
fn a_resumed_reset_deletes_only_its_own_partial_snapshot() {
    struct Case {
        what: &'static str,
        name: &'static str,
        setup: fn(&LoopBtrfs),
        blank: Option<&'static str>,
    }
    let cases = [
        Case {
            what: "a read-write subvolume someone made",
            name: "20200102T000000Z",
            setup: |fs| {
                fs.subvolume("@snapshots/20200102T000000Z");
                fs.write("@snapshots/20200102T000000Z/marker", "mine\n");
            },
            blank: None,
        },
        Case {
            what: "the configured blank snapshot",
            name: "20200105T000000Z",
            setup: |fs| {
                fs.subvolume("@blank-src");
                fs.write("@blank-src/etc/.keep", "");
                fs.snapshot("@blank-src", "@snapshots/20200105T000000Z", true);
            },
            blank: Some("@snapshots/20200105T000000Z"),
        },
        Case {
            what: "a read-only snapshot of another subvolume",
            name: "20200103T000000Z",
            setup: |fs| {
                fs.subvolume("@other");
                fs.write("@other/precious", "keep me\n");
                fs.snapshot("@other", "@snapshots/20200103T000000Z", true);
            },
            blank: None,
        },
        Case {
            what: "a read-write snapshot of another subvolume",
            name: "20200104T000000Z",
            setup: |fs| {
                fs.subvolume("@other");
                fs.write("@other/precious", "keep me\n");
                fs.snapshot("@other", "@snapshots/20200104T000000Z", false);
            },
            blank: None,
        },
    ];
    for case in cases {
        let Some(fs) = btrfs("reset_resume_own") else {
            return;
        };
        let before = populate(&fs);
        fs.subvolume("@snapshots");
        (case.setup)(&fs);
        let rel = format!("@snapshots/{}", case.name);
        let (kept, kept_tree) = (identity(&fs, &rel), fs.tree(&rel));
        write_state(
            &fs,
            &format!(r#"{{"phase": "snapshot", "snapshot": "{}"}}"#, case.name),
        );
        let out = match case.blank {
            Some(blank) => reset(&fs, &["--blank-snapshot", blank]),
            None => reset(&fs, &[]),
        };
        assert!(out.status.success(), "{}: {}", case.what, stderr(&out));
        assert_eq!(
            identity(&fs, &rel),
            kept,
            "{}: left exactly as it was",
            case.what
        );
        assert_eq!(fs.tree(&rel), kept_tree, "{}", case.what);
        assert_eq!(fs.tree(SNAP), before, "{}: the old root is kept", case.what);
        assert!(fs.is_readonly(SNAP), "{}", case.what);
        let fresh = match case.blank {
            Some(_) => vec!["etc/".to_string(), "etc/.keep = ".to_string()],
            None => vec![],
        };
        assert_eq!(fs.tree("@root"), fresh, "{}: a fresh root", case.what);
    }
}

/// The same for a partial snapshot of this very root that is mounted (someone is looking
/// at it): never deleted. And one that is not mounted is deleted and taken again, whole.
#[test]
fn a_resumed_reset_retakes_its_own_partial_snapshot_unless_it_is_mounted() {
    let Some(fs) = btrfs("reset_resume_mounted") else {
        return;
    };
    let before = populate(&fs);
    fs.subvolume("@snapshots");
    // A partial snapshot as a killed reset leaves it: read-write, nested ones missing.
    fs.snapshot("@root", "@snapshots/20260115T062900Z", false);
    let look = fs.scratch().join("look");
    fs::create_dir(&look).unwrap();
    common::check(
        Command::new("mount")
            .args(["-o", "ro,subvol=@snapshots/20260115T062900Z", &fs.device])
            .arg(&look),
    );
    let kept = identity(&fs, "@snapshots/20260115T062900Z");
    write_state(
        &fs,
        r#"{"phase": "snapshot", "snapshot": "20260115T062900Z"}"#,
    );
    let out = reset(&fs, &[]);
    common::check(Command::new("umount").arg(&look));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        identity(&fs, "@snapshots/20260115T062900Z"),
        kept,
        "mounted: kept"
    );
    assert_eq!(fs.tree(SNAP), before);

    // Not mounted: it is this reset's own, deleted and taken again under its name.
    let Some(fs) = btrfs("reset_resume_retake") else {
        return;
    };
    let before = populate(&fs);
    fs.subvolume("@snapshots");
    fs.snapshot("@root", "@snapshots/20260115T062900Z", false);
    write_state(
        &fs,
        r#"{"phase": "snapshot", "snapshot": "20260115T062900Z"}"#,
    );
    let out = reset(&fs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs.tree("@snapshots/20260115T062900Z"), before);
    assert!(fs.is_readonly("@snapshots/20260115T062900Z"));
    assert!(fs.is_readonly("@snapshots/20260115T062900Z/var/lib/machines"));
    assert!(!fs.path(SNAP).exists(), "no second snapshot");
}

/// With no root left to compare it with, nothing can be told to be the reset's own: a
/// snapshot of the recorded name is kept (it may be the only copy), and a root is made.
#[test]
fn a_resumed_snapshot_phase_without_a_root_deletes_nothing() {
    let Some(fs) = btrfs("reset_resume_no_root") else {
        return;
    };
    let before = populate(&fs);
    fs.subvolume("@snapshots");
    fs.snapshot("@root", "@snapshots/20260115T062900Z", true);
    for nested in [
        "@root/var/lib/machines/nested",
        "@root/var/lib/machines",
        "@root",
    ] {
        common::check(
            Command::new("btrfs")
                .args(["-q", "subvolume", "delete"])
                .arg(fs.path(nested)),
        );
    }
    let kept = identity(&fs, "@snapshots/20260115T062900Z");
    write_state(
        &fs,
        r#"{"phase": "snapshot", "snapshot": "20260115T062900Z"}"#,
    );
    let out = reset(&fs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(identity(&fs, "@snapshots/20260115T062900Z"), kept);
    assert_eq!(
        fs.tree("@snapshots/20260115T062900Z"),
        before
            .iter()
            .filter(|e| !e.starts_with("var/lib/machines/") || *e == "var/lib/machines/")
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(fs.tree("@root"), Vec::<String>::new());
}

/// A resumed `replace` phase deletes the root only when the recorded snapshot is a
/// read-only snapshot taken of this root: a state naming another subvolume's snapshot,
/// with the root's id, is refused (exit 2, one line) and changes nothing.
#[test]
fn a_resumed_replace_never_deletes_a_root_its_snapshot_was_not_taken_of() {
    let Some(fs) = btrfs("reset_resume_replace") else {
        return;
    };
    populate(&fs);
    fs.subvolume("@snapshots");
    fs.subvolume("@other");
    fs.write("@other/precious", "keep me\n");
    fs.snapshot("@other", "@snapshots/20200105T000000Z-6", true);
    let root_id = common::check(
        Command::new("btrfs")
            .args(["inspect-internal", "rootid"])
            .arg(fs.path("@root")),
    );
    let root_id = root_id.trim();
    for (state, want) in [
        (
            format!(
                r#"{{"phase": "replace", "snapshot": "20200105T000000Z-6", "old_root": {root_id}}}"#
            ),
            "was not taken of",
        ),
        // A snapshot of this root, but not the one the state recorded.
        (
            format!(
                r#"{{"phase": "replace", "snapshot": "20260115T062900Z", "old_root": {root_id}, "snapshot_id": 4}}"#
            ),
            "is not the snapshot the reset recorded",
        ),
    ] {
        if !fs.path("@snapshots/20260115T062900Z").exists() {
            fs.snapshot("@root", "@snapshots/20260115T062900Z", true);
        }
        write_state(&fs, &state);
        let before = (fs.subvolumes(), fs.tree(""));
        let out = reset(&fs, &[]);
        assert_eq!(out.status.code(), Some(2), "{state}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(want), "{state}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("imperm: ")).count(),
            1,
            "{state}: {err}"
        );
        assert!(
            err.trim_end().ends_with("nothing was done"),
            "{state}: {err}"
        );
        assert_eq!((fs.subvolumes(), fs.tree("")), before, "{state}");
    }
}

/// The reset's state file is read with O_NONBLOCK and must be a small regular file: a
/// FIFO, a device or a huge file there is refused at once (exit 2, one line naming it),
/// never waited on at boot; the same by gc; ls and status warn and go on.
#[test]
fn a_state_file_that_is_a_fifo_a_device_or_huge_is_refused_at_once() {
    let Some(fs) = btrfs("reset_state_fifo") else {
        return;
    };
    populate(&fs);
    fs.subvolume("@snapshots");
    let state = fs.path(&format!(
        "@snapshots/{}",
        imperm::snapshots::reset::STATE_FILE
    ));
    let fifo = |p: &std::path::Path| {
        common::check(Command::new("mkfifo").arg(p));
    };
    for want in ["is a FIFO", "is a device", "is larger than 64 KiB"] {
        let _ = fs::remove_file(&state);
        match want {
            "is a FIFO" => fifo(&state),
            "is a device" => {
                common::check(Command::new("mknod").arg(&state).args(["c", "1", "5"]));
            }
            _ => fs::write(&state, vec![b' '; 100 << 10]).unwrap(),
        }
        let before = (fs.subvolumes(), fs.tree("@root"));
        for args in [&["reset"][..], &["gc"], &["gc", "--dry-run"]] {
            let out = run_bounded(
                imperm()
                    .arg("--root")
                    .arg(fs.scratch())
                    .args(args)
                    .args(["--fs", "btrfs", "--mounted"])
                    .arg(fs.top()),
            );
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{want} {args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{want} {args:?}: {err}");
            assert!(
                err.contains(".imperm-reset.json") && err.contains(want),
                "{want} {args:?}: {err}"
            );
        }
        let out = run_bounded(
            imperm()
                .arg("--root")
                .arg(fs.scratch())
                .args(["ls", "--fs", "btrfs", "--mounted"])
                .arg(fs.top()),
        );
        assert_eq!(out.status.code(), Some(0), "{want} ls: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{want} ls: {}", stderr(&out));
        assert_eq!((fs.subvolumes(), fs.tree("@root")), before, "{want}");
    }
    // gc's own record is read the same way (reset does not read it).
    let _ = fs::remove_file(&state);
    let gc_state = fs.path(&format!(
        "@snapshots/{}",
        imperm::snapshots::snapshot::GC_STATE_FILE
    ));
    fifo(&gc_state);
    for args in [&["gc"][..], &["gc", "--dry-run"], &["ls"]] {
        let out = run_bounded(
            imperm()
                .arg("--root")
                .arg(fs.scratch())
                .args(args)
                .args(["--fs", "btrfs", "--mounted"])
                .arg(fs.top()),
        );
        let err = stderr(&out);
        let code = if args == ["ls"] { 0 } else { 2 };
        assert_eq!(out.status.code(), Some(code), "gc state {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "gc state {args:?}: {err}");
        assert!(
            err.contains(".imperm-gc.json") && err.contains("is a FIFO"),
            "gc state {args:?}: {err}"
        );
    }
    fs::remove_file(&gc_state).unwrap();
    // status mounts the top level itself.
    fifo(&state);
    let config = fs.scratch().join("status.toml");
    fs::write(
        &config,
        format!(
            "[filesystem]\ntype = \"btrfs\"\ndevice = \"{}\"\n",
            fs.device
        ),
    )
    .unwrap();
    let out = run_bounded(
        imperm()
            .arg("--root")
            .arg(fs.scratch())
            .arg("--config")
            .arg(&config)
            .args(["status", "--format", "json"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["snapshots"]["note"]
            .as_str()
            .unwrap_or("")
            .contains("is a FIFO"),
        "{v}"
    );
}

/// The state file is replaced through `NAME.tmp`, created with O_EXCL: a leftover regular
/// file there is removed first; a FIFO (or anything else) there is refused, never opened
/// for writing (which would wait for a reader forever).
#[test]
fn the_state_files_temporary_name_is_never_a_fifo_opened_for_writing() {
    let Some(fs) = btrfs("reset_state_tmp") else {
        return;
    };
    let before = populate(&fs);
    fs.subvolume("@snapshots");
    let tmp = fs.path(&format!(
        "@snapshots/{}.tmp",
        imperm::snapshots::reset::STATE_FILE
    ));
    common::check(Command::new("mkfifo").arg(&tmp));
    let subvolumes = fs.subvolumes();
    let out = run_bounded(
        imperm()
            .arg("--root")
            .arg(fs.scratch())
            .args(["reset", "--fs", "btrfs", "--mounted"])
            .arg(fs.top()),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(".imperm-reset.json.tmp") && err.contains("FIFO"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("imperm: ")).count(),
        1,
        "{err}"
    );
    assert_eq!(fs.subvolumes(), subvolumes, "nothing was done");

    // A leftover regular file (a run killed while writing it) is replaced.
    fs::remove_file(&tmp).unwrap();
    fs::write(&tmp, "{\"phase\": \"sna").unwrap();
    let out = reset(&fs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_reset_once(&fs, &before);
    assert!(!tmp.exists());
}

/// A state file, or its temporary name, planted as a symlink to a file elsewhere is never
/// followed, read or written through: reset and gc refuse (exit 2, one line naming it),
/// the file it points to is untouched, and nothing is deleted or made writable.
#[test]
fn state_files_planted_as_symlinks_are_never_followed() {
    let Some(fs) = btrfs("reset_state_symlink") else {
        return;
    };
    populate(&fs);
    assert!(reset(&fs, &[]).status.success());
    fs.write("@root/etc/dirty", "used\n");
    let out = reset_at(&fs, "2026-01-16T06:30:00Z");
    assert!(out.status.success(), "{}", stderr(&out));
    fs.write("@root/etc/dirty", "used again\n");
    let config = fs.scratch().join("gc.toml");
    fs::write(
        &config,
        "[filesystem]\ntype = \"btrfs\"\n[retention]\nkeep_last = 1\n",
    )
    .unwrap();
    // A well-formed state elsewhere: following the link would believe it.
    let victim = fs.scratch().join("victim.json");
    let planted = r#"{"phase": "snapshot", "snapshot": "20260115T063000Z"}"#;
    let run = |args: &[&str]| {
        run_bounded(
            imperm()
                .env(imperm::commands::NOW_ENV, "2026-01-17T06:30:00Z")
                .arg("--root")
                .arg(fs.scratch().join("empty-root"))
                .arg("--config")
                .arg(&config)
                .args(args)
                .arg("--mounted")
                .arg(fs.top()),
        )
    };
    let state = imperm::snapshots::reset::STATE_FILE;
    let gc_state = imperm::snapshots::snapshot::GC_STATE_FILE;
    let cases: [(String, &[&str], &str); 6] = [
        (state.into(), &["reset"], "is a symlink"),
        (state.into(), &["gc"], "is a symlink"),
        (gc_state.into(), &["gc"], "is a symlink"),
        (gc_state.into(), &["gc", "--dry-run"], "is a symlink"),
        (format!("{state}.tmp"), &["reset"], "is a symlink"),
        // The old root 20260115T063000Z holds nested snapshots: gc records before it
        // makes it writable, and that write is refused.
        (format!("{gc_state}.tmp"), &["gc"], "is a symlink"),
    ];
    for (name, args, want) in cases {
        fs::write(&victim, planted).unwrap();
        let link = fs.path(&format!("@snapshots/{name}"));
        let aside = fs.path("@snapshots/aside"); // the same subvolume: rename works
        let moved = fs::rename(&link, &aside).is_ok();
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let before = (fs.subvolumes(), fs.tree(""));
        let out = run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("imperm: ")).collect();
        assert_eq!(errors.len(), 1, "{name} {args:?}: {err}");
        assert!(
            errors[0].contains(&name) && errors[0].contains(want),
            "{name} {args:?}: {err}"
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), planted, "{name}");
        assert_eq!((fs.subvolumes(), fs.tree("")), before, "{name} {args:?}");
        assert!(fs.is_readonly(SNAP), "{name} {args:?}");
        fs::remove_file(&link).unwrap();
        if moved {
            fs::rename(&aside, &link).unwrap();
        }
    }
    // With the links gone, both go on.
    let out = run(&["reset"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!fs.path(SNAP).exists());
}

/// Log lines name paths as the user knows them, like errors do: `@root on DEVICE` when
/// imperm mounted the top level itself, `DIR/@root` with `--mounted DIR`.
#[test]
fn reset_log_lines_name_paths_on_the_device() {
    let Some(fs) = btrfs("reset_log_names") else {
        return;
    };
    populate(&fs);
    let empty = fs.scratch().join("empty-root");
    fs::create_dir_all(&empty).unwrap();
    let out = common::run(
        imperm()
            .arg("--root")
            .arg(&empty)
            .args(["reset", "--fs", "btrfs", "--device", &fs.device]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let device = &fs.device;
    let log = stderr(&out);
    for step in [
        format!("imperm reset: creating snapshot directory @snapshots on {device}\n"),
        format!(
            "imperm reset: snapshotting @root on {device} to @snapshots/20260115T063000Z on {device}\n"
        ),
        format!("imperm reset: deleting the old root @root on {device}\n"),
        format!("imperm reset: creating an empty @root on {device}\n"),
    ] {
        assert!(log.contains(&step), "missing {step:?} in\n{log}");
    }
    fs.write("@root/etc/boot", "2\n");
    let out = reset_at(&fs, "2026-01-15T06:31:00Z");
    let top = fs.top().display().to_string();
    let log = stderr(&out);
    assert!(
        log.contains(&format!(
            "imperm reset: snapshotting {top}/@root to {top}/@snapshots/20260115T063100Z\n"
        )),
        "{log}"
    );
}

/// `--mounted DIR` must be the filesystem's top level (btrfs: the root of subvolume 5).
/// Another subvolume's mount, or a directory inside the top level, is refused by every
/// command that takes it (exit 2, one line naming DIR), and nothing is created or deleted.
#[test]
fn mounted_must_be_the_top_level_for_every_command() {
    let Some(fs) = btrfs("mounted_top_level") else {
        return;
    };
    populate(&fs);
    fs.subvolume("@snapshots");
    fs.subvolume("@persist");
    fs.snapshot("@root", "@snapshots/20260101T000000Z", true);
    fs::create_dir(fs.path("plain")).unwrap();
    let px = fs.scratch().join("px");
    fs::create_dir(&px).unwrap();
    common::check(
        Command::new("mount")
            .args(["-o", "subvol=@persist", &fs.device])
            .arg(&px),
    );
    let live = fs.scratch().join("live");
    fs::create_dir(&live).unwrap();
    // diff and journal without --against look at the newest snapshot only when they can;
    // a wrong --mounted is still a mistake to refuse, not a lookup to skip.
    let commands: [&[&str]; 9] = [
        &["reset"],
        &["snapshots", "ls"],
        &["gc"],
        &["gc", "--dry-run"],
        &["restore", "/etc/machine-id", "--from", "20260101T000000Z"],
        &["diff", "--against", "20260101T000000Z"],
        &["diff"],
        &["journal", "--file", "/dev/null"],
        &[
            "journal",
            "--file",
            "/dev/null",
            "--against",
            "20260101T000000Z",
        ],
    ];
    let plain = fs.path("plain");
    let mut failures = Vec::new();
    for dir in [px.as_path(), plain.as_path()] {
        for args in commands {
            let before = fs.subvolumes();
            let out = common::run(
                imperm()
                    .arg("--root")
                    .arg(&live)
                    .args(args)
                    .args(["--fs", "btrfs", "--mounted"])
                    .arg(dir),
            );
            let err = stderr(&out);
            let want = format!("--mounted {}: ", dir.display());
            let ok = out.status.code() == Some(2)
                && err.lines().filter(|l| l.starts_with("imperm: ")).count() == 1
                && err.contains(&want)
                && err.contains("not the top level")
                && fs.subvolumes() == before;
            if !ok {
                failures.push(format!(
                    "{} {args:?}: {:?} {err}",
                    dir.display(),
                    out.status.code()
                ));
            }
        }
    }
    // baseline takes its snapshot only when it can: the manifest alone is a baseline.
    for dir in [px.as_path(), plain.as_path()] {
        let before = fs.subvolumes();
        let out = common::run(
            imperm()
                .arg("--root")
                .arg(&live)
                .args(["baseline", "--fs", "btrfs", "--mounted"])
                .arg(dir),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.code() != Some(0)
            || !text.contains(&format!("no snapshot: --mounted {}: ", dir.display()))
            || fs.subvolumes() != before
        {
            failures.push(format!(
                "{} baseline: {text}{}",
                dir.display(),
                stderr(&out)
            ));
        }
    }
    common::check(Command::new("umount").arg(&px));
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(!fs.path("@persist/@root").exists());
    assert!(!fs.path("@persist/@snapshots").exists());
}

/// A power cut right after a reset set the old root aside (it could not delete it:
/// ENOTEMPTY that persists, bcachefs after an interrupted destroy of a nested subvolume)
/// leaves what a cut right after the deletion leaves, and the remains beside the root:
/// the next run creates the fresh root and leaves the remains to gc, which deletes them.
#[test]
fn a_reset_cut_after_setting_the_old_root_aside_creates_the_root() {
    let Some(fs) = btrfs("reset_aside") else {
        return;
    };
    let before = populate(&fs);
    let killed = common::run(
        imperm()
            .env(imperm::snapshots::reset::FAILPOINT_ENV, "root-deleted")
            .arg("--root")
            .arg(fs.scratch())
            .args(["reset", "--fs", "btrfs", "--mounted"])
            .arg(fs.top()),
    );
    assert_eq!(killed.status.code(), None, "{}", stderr(&killed));
    // What the rename would have left: the old root's remains under the name it gives.
    let dead = "@root.imperm-dead-20260115T063000Z";
    fs.subvolume(dead);
    fs.write(&format!("{dead}/var/lib/machines-left"), "left\n");
    let out = reset(&fs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming an interrupted reset: root was being replaced"));
    let mut subvolumes = fs.subvolume_paths();
    subvolumes.retain(|p| p != dead);
    assert_eq!(
        subvolumes,
        [
            "@root",
            "@snapshots",
            "@snapshots/20260115T063000Z",
            "@snapshots/20260115T063000Z/var/lib/machines",
            "@snapshots/20260115T063000Z/var/lib/machines/nested",
        ]
    );
    assert_eq!(fs.tree("@root"), Vec::<String>::new(), "a fresh root");
    assert_eq!(fs.tree(SNAP), before, "the old root is in its snapshot");
    assert_eq!(
        fs.tree(dead),
        ["var/", "var/lib/", "var/lib/machines-left = left\n"]
    );
    let gc = common::run(
        imperm()
            .arg("--root")
            .arg(fs.scratch())
            .args(["snapshots", "gc", "--fs", "btrfs", "--mounted"])
            .arg(fs.top()),
    );
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(stderr(&gc).contains("deleted"), "{}", stderr(&gc));
    assert!(!fs.subvolume_paths().iter().any(|p| p == dead));
    assert!(fs.subvolume_paths().iter().any(|p| p == SNAP));
}
