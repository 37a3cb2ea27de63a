//! `imperm snapshots ls` and `snapshots gc` on real btrfs snapshots (loop devices made by
//! the tests).

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::{LoopBtrfs, btrfs};
use serde_json::Value;

/// The issue's example: these snapshots, UTC, keep_last=5, keep_weekly=4,
/// keep_monthly="all": exactly 01-06, 01-20 and 02-03 go.
const EXAMPLE: [&str; 13] = [
    "20250106T080000Z",
    "20250120T090000Z",
    "20250131T180000Z",
    "20250203T080000Z",
    "20250204T080000Z",
    "20250214T120000Z",
    "20250228T220000Z",
    "20250301T090000Z",
    "20250303T080000Z",
    "20250303T200000Z",
    "20250305T080000Z",
    "20250306T080000Z",
    "20250307T080000Z",
];
const DELETED: [&str; 3] = ["20250106T080000Z", "20250120T090000Z", "20250203T080000Z"];

fn config(fs: &LoopBtrfs) -> PathBuf {
    let path = fs.scratch().join("config.toml");
    fs::write(
        &path,
        "[filesystem]\ntype = \"btrfs\"\n\n[retention]\nkeep_last = 5\nkeep_weekly = 4\nkeep_monthly = \"all\"\ntimezone = \"UTC\"\n",
    )
    .unwrap();
    path
}

fn imperm(fs: &LoopBtrfs, args: &[&str]) -> Output {
    common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env(imperm::commands::NOW_ENV, "2025-03-08T00:00:00Z")
            .env("TZ", "Europe/Berlin")
            .arg("--root")
            .arg(fs.scratch())
            .arg("--config")
            .arg(config(fs))
            .args(args)
            .arg("--mounted")
            .arg(fs.top()),
    )
}

/// Read-only snapshots named as in the example; the one for 02-03 holds a nested
/// read-only snapshot, as imperm's own resets make them.
fn example(fs: &LoopBtrfs) {
    fs.subvolume("@root");
    fs.subvolume("@snapshots");
    fs.subvolume("@machines");
    for name in EXAMPLE {
        fs.write("@root/etc/hostname", name);
        if name == "20250203T080000Z" {
            fs.snapshot("@root", &format!("@snapshots/{name}"), false);
            fs::create_dir_all(fs.path(&format!("@snapshots/{name}/var/lib"))).unwrap();
            fs.snapshot(
                "@machines",
                &format!("@snapshots/{name}/var/lib/machines"),
                false,
            );
            for rel in [
                format!("@snapshots/{name}/var/lib/machines"),
                format!("@snapshots/{name}"),
            ] {
                common::check(
                    Command::new("btrfs")
                        .args(["property", "set", "-ts"])
                        .arg(fs.path(&rel))
                        .args(["ro", "true"]),
                );
            }
        } else {
            fs.snapshot("@root", &format!("@snapshots/{name}"), true);
        }
    }
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.code().is_some_and(|c| c <= 2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn names_where(v: &Value, pred: impl Fn(&Value) -> bool) -> Vec<String> {
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| pred(s))
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn snapshots_on_disk(fs: &LoopBtrfs) -> Vec<String> {
    fs.subvolume_paths()
        .into_iter()
        .filter_map(|p| p.strip_prefix("@snapshots/").map(str::to_string))
        .collect()
}

#[test]
fn gc_dry_run_plans_the_example_and_deletes_nothing() {
    let Some(fs) = btrfs("gc_dry_run") else {
        return;
    };
    example(&fs);
    let before = fs.subvolumes();
    let out = imperm(&fs, &["snapshots", "gc", "--dry-run", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["dry_run"], true);
    let mut unkept = names_where(&v, |s| s["keep"] == false);
    unkept.sort();
    assert_eq!(unkept, DELETED);
    assert!(names_where(&v, |s| s["deleted"] == true).is_empty());
    assert_eq!(fs.subvolumes(), before, "a dry run deletes nothing");
    let newest = &v["snapshots"][0];
    assert_eq!(newest["name"], "20250307T080000Z");
    assert_eq!(newest["time"], "2025-03-07T08:00:00Z");
    // In the zone the buckets use (the configuration's UTC), not the system's (TZ).
    assert_eq!(newest["local_time"], "2025-03-07T08:00:00+00:00");
    assert_eq!(v["timezone"], "UTC");
    assert_eq!(newest["readonly"], true);
    assert_eq!(
        newest["reasons"],
        serde_json::json!([
            "newest",
            "last",
            "weekly 2025-W10",
            "monthly 2025-03",
            "last reset"
        ])
    );
    assert_eq!(v["last_reset"], "20250307T080000Z");

    let human = imperm(&fs, &["gc", "--dry-run", "--color", "never"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("delete  20250203T080000Z"), "{text}");
    assert!(text.contains("keep    20250204T080000Z"), "{text}");
    assert!(
        text.ends_with("dry run: 3 would be deleted, nothing was\n"),
        "{text}"
    );
}

#[test]
fn gc_deletes_exactly_what_the_policy_does_not_keep_oldest_first() {
    let Some(fs) = btrfs("gc") else { return };
    example(&fs);
    let out = imperm(&fs, &["snapshots", "gc", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    let mut deleted = names_where(&v, |s| s["deleted"] == true);
    deleted.sort();
    assert_eq!(deleted, DELETED);
    let kept: Vec<&str> = EXAMPLE
        .iter()
        .copied()
        .filter(|n| !DELETED.contains(n))
        .collect();
    assert_eq!(
        snapshots_on_disk(&fs),
        kept,
        "the nested snapshot went with its parent"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("imperm gc: deleted {}/@snapshots/", fs.top().display());
    let order: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect();
    assert_eq!(order, DELETED, "oldest first");

    // Planning again on what is left deletes nothing.
    let again = imperm(&fs, &["gc", "--format", "json"]);
    assert!(names_where(&json(&again), |s| s["deleted"] == true).is_empty());
    assert_eq!(snapshots_on_disk(&fs), kept);
}

/// A snapshot whose deletion the kernel refuses (here the default subvolume) is skipped,
/// not a stop: every other snapshot due is still deleted, and the run ends with exit 2 and
/// one line naming the one left, as the user knows it (on the device, when imperm
/// mounted the top level itself: the temporary mount point is gone when it is read).
#[test]
fn gc_skips_a_snapshot_it_cannot_delete_and_deletes_the_others() {
    let Some(fs) = btrfs("gc_error") else { return };
    example(&fs);
    // btrfs refuses to delete the default subvolume: the oldest deletion fails.
    let id = common::check(
        Command::new("btrfs")
            .args(["inspect-internal", "rootid"])
            .arg(fs.path("@snapshots/20250106T080000Z")),
    );
    common::check(
        Command::new("btrfs")
            .args(["subvolume", "set-default", id.trim()])
            .arg(fs.top()),
    );
    let out = imperm(&fs, &["gc", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("imperm: ")).collect();
    assert_eq!(
        errors,
        [format!(
            "imperm: 1 snapshot was not deleted (the others were): delete subvolume {}/@snapshots/20250106T080000Z: Operation not permitted",
            fs.top().display()
        )],
        "{err}"
    );
    let v = json(&out);
    let mut deleted = names_where(&v, |s| s["deleted"] == true);
    deleted.sort();
    assert_eq!(deleted, ["20250120T090000Z", "20250203T080000Z"]);
    assert!(
        row(&v, "20250106T080000Z")["error"]
            .as_str()
            .unwrap()
            .ends_with("Operation not permitted")
    );
    assert!(
        fs.is_readonly("@snapshots/20250106T080000Z"),
        "left as it was"
    );

    let out = common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env(imperm::commands::NOW_ENV, "2025-03-08T00:00:00Z")
            .arg("--root")
            .arg(fs.scratch())
            .arg("--config")
            .arg(config(&fs))
            .args(["gc", "--color", "never", "--device", &fs.device]),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.ends_with(&format!(
            "imperm: 1 snapshot was not deleted (the others were): delete subvolume @snapshots/20250106T080000Z on {}: Operation not permitted\n",
            fs.device
        )),
        "{err}"
    );
    assert!(!err.contains("imperm-top-"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("failed  20250106T080000Z"), "{text}");
    assert_eq!(
        snapshots_on_disk(&fs),
        EXAMPLE
            .iter()
            .filter(|n| !DELETED.contains(n) || **n == "20250106T080000Z")
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
    );
}

#[test]
fn ls_lists_newest_first_with_legacy_unrecognised_and_future_names() {
    let Some(fs) = btrfs("ls") else { return };
    fs.subvolume("@root");
    fs.subvolume("@snapshots");
    for name in [
        "2025-03-01_10-00-00",
        "20250305T080000Z",
        "20300101T000000Z",
        "manual-backup",
    ] {
        fs.snapshot(
            "@root",
            &format!("@snapshots/{name}"),
            name != "manual-backup",
        );
    }
    fs::create_dir(fs.path("@snapshots/notes")).unwrap();
    fs.write("@snapshots/README", "not a snapshot");
    let out = imperm(&fs, &["ls", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    let rows = v["snapshots"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "20300101T000000Z",
            "20250305T080000Z",
            "2025-03-01_10-00-00",
            "manual-backup"
        ]
    );
    // The legacy name is local time (TZ=Europe/Berlin): 10:00 CET is 09:00 UTC.
    assert_eq!(rows[2]["time"], "2025-03-01T09:00:00Z");
    assert_eq!(rows[2]["name_style"], "legacy");
    assert_eq!(rows[1]["name_style"], "utc");
    assert_eq!(rows[0]["reasons"], serde_json::json!(["future"]));
    assert_eq!(rows[1]["reasons"][0], "newest");
    // Not a snapshot imperm took: writable (only read-only snapshots are gc candidates).
    assert_eq!(rows[3]["reasons"], serde_json::json!(["read-write"]));
    assert_eq!(rows[3]["readonly"], false);
    assert_eq!(rows[3]["time"], Value::Null);
    assert!(rows.iter().all(|r| r["keep"] == true));

    let text =
        String::from_utf8_lossy(&imperm(&fs, &["snapshots", "ls", "--color", "never"]).stdout)
            .into_owned();
    let first: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        first[..5],
        [
            "NAME",
            "20300101T000000Z",
            "20250305T080000Z",
            "2025-03-01_10-00-00",
            "manual-backup"
        ]
    );
    assert!(
        text.contains("2025-03-01T09:00:00+00:00  2025-03-01 09:00:00Z"),
        "{text}"
    );
}

#[test]
fn gc_leaves_the_snapshot_of_an_interrupted_reset_alone() {
    let Some(fs) = btrfs("gc_pending") else {
        return;
    };
    example(&fs);
    fs.write(
        &format!("@snapshots/{}", imperm::snapshots::reset::STATE_FILE),
        r#"{"phase": "snapshot", "snapshot": "20250120T090000Z"}"#,
    );
    let v = json(&imperm(&fs, &["gc", "--format", "json"]));
    let mut deleted = names_where(&v, |s| s["deleted"] == true);
    deleted.sort();
    assert_eq!(deleted, ["20250106T080000Z", "20250203T080000Z"]);
    assert!(snapshots_on_disk(&fs).contains(&"20250120T090000Z".to_string()));
    let pending = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "20250120T090000Z")
        .unwrap()
        .clone();
    assert_eq!(pending["reasons"], serde_json::json!(["pending reset"]));
}

#[test]
fn snapshots_on_a_tmpfs_root() {
    let scratch = tempfile::TempDir::new().unwrap();
    let out = common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(scratch.path())
            .args(["snapshots", "ls", "--fs", "tmpfs"]),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tmpfs root: no old-root snapshots (nothing is kept across boots)\n"
    );
}

#[test]
fn without_a_configured_filesystem_snapshots_says_what_to_do() {
    let scratch = tempfile::TempDir::new().unwrap();
    let out = common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(scratch.path())
            .args(["snapshots", "ls"]),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("imperm: no filesystem configured: add [filesystem] to "),
        "{err}"
    );
    assert!(err.trim_end().ends_with("or pass --fs"), "{err}");
}

/// Runs imperm with a configuration of `[filesystem]` plus `extra`, at `now`, on the
/// top level mounted by the test.
fn imperm_with(fs: &LoopBtrfs, extra: &str, now: &str, args: &[&str]) -> Output {
    let path = fs.scratch().join("config-with.toml");
    fs::write(&path, format!("[filesystem]\ntype = \"btrfs\"\n{extra}")).unwrap();
    common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env(imperm::commands::NOW_ENV, now)
            .env("TZ", "UTC")
            .arg("--root")
            .arg(fs.scratch())
            .arg("--config")
            .arg(&path)
            .args(args)
            .arg("--mounted")
            .arg(fs.top()),
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn row<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no row {name} in {v}"))
}

fn reasons(v: &Value, name: &str) -> Vec<String> {
    row(v, name)["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// A blank snapshot kept in the snapshot directory under a timestamp name is never a gc
/// candidate, and the next reset still makes its fresh root from it.
#[test]
fn gc_never_deletes_the_blank_snapshot_and_the_next_reset_still_works() {
    let Some(fs) = btrfs("gc_blank") else { return };
    example(&fs);
    fs.subvolume("@blank-src");
    fs.write("@blank-src/etc/.keep", "");
    fs.snapshot("@blank-src", "@snapshots/20200101T000000Z", true);
    let config = "blank_snapshot = \"@snapshots/20200101T000000Z\"\n[retention]\nkeep_last = 1\n";
    let v = json(&imperm_with(
        &fs,
        config,
        "2025-03-08T00:00:00Z",
        &["gc", "--dry-run", "--format", "json"],
    ));
    assert_eq!(row(&v, "20200101T000000Z")["keep"], true);
    assert_eq!(reasons(&v, "20200101T000000Z"), ["blank snapshot"]);
    let out = imperm_with(
        &fs,
        config,
        "2025-03-08T00:00:00Z",
        &["gc", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        snapshots_on_disk(&fs),
        ["20200101T000000Z", "20250307T080000Z"],
        "keep_last 1 and the blank snapshot"
    );
    let out = imperm_with(&fs, config, "2025-03-08T00:00:00Z", &["reset"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs.tree("@root"), ["etc/", "etc/.keep = "]);
}

/// Only read-only snapshots are gc candidates: a mounted snapshot, a read-write
/// subvolume, a directory and a symlink that carry snapshot names are all kept, with the
/// reason, and the symlink is never followed.
#[test]
fn gc_keeps_what_is_mounted_writable_or_not_a_subvolume() {
    let Some(fs) = btrfs("gc_not_candidates") else {
        return;
    };
    example(&fs);
    fs.subvolume("@snapshots/20250107T080000Z");
    fs.write("@snapshots/20250107T080000Z/work", "in progress\n");
    fs::create_dir(fs.path("@snapshots/20250108T080000Z")).unwrap();
    fs.write("@snapshots/20250108T080000Z/notes", "mine\n");
    fs.subvolume("@other");
    fs.write("@other/precious", "keep me\n");
    std::os::unix::fs::symlink("../@other", fs.path("@snapshots/20250109T080000Z")).unwrap();
    let look = fs.scratch().join("look");
    fs::create_dir(&look).unwrap();
    common::check(
        Command::new("mount")
            .args(["-o", "ro,subvol=@snapshots/20250106T080000Z", &fs.device])
            .arg(&look),
    );
    let out = imperm(&fs, &["gc", "--format", "json"]);
    let unmounted = common::run(Command::new("umount").arg(&look));
    assert!(unmounted.status.success());
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        reasons(&v, "20250106T080000Z"),
        [format!("mounted at {}", look.display())]
    );
    assert_eq!(reasons(&v, "20250107T080000Z"), ["read-write"]);
    assert_eq!(
        reasons(&v, "20250108T080000Z"),
        ["not a subvolume (a plain directory)"]
    );
    assert_eq!(
        reasons(&v, "20250109T080000Z"),
        ["not a subvolume (a symlink)"]
    );
    let mut deleted = names_where(&v, |s| s["deleted"] == true);
    deleted.sort();
    assert_eq!(deleted, ["20250120T090000Z", "20250203T080000Z"]);
    let on_disk = snapshots_on_disk(&fs);
    for kept in ["20250106T080000Z", "20250107T080000Z"] {
        assert!(on_disk.contains(&kept.to_string()), "{kept}: {on_disk:?}");
    }
    assert_eq!(fs.read("@snapshots/20250107T080000Z/work"), "in progress\n");
    assert_eq!(fs.read("@snapshots/20250108T080000Z/notes"), "mine\n");
    assert_eq!(fs.read("@other/precious"), "keep me\n");
    assert!(
        fs::symlink_metadata(fs.path("@snapshots/20250109T080000Z"))
            .unwrap()
            .is_symlink()
    );
}

/// Resets by a frozen clock: the names sort by time, then by suffix, everywhere.
#[test]
fn snapshots_of_a_frozen_clock_sort_by_suffix_in_ls_and_gc() {
    let Some(fs) = btrfs("gc_frozen") else { return };
    fs.subvolume("@root");
    let now = "2026-01-15T06:30:00Z";
    for boot in 1..=3 {
        fs.write("@root/etc/boot", &format!("{boot}\n"));
        let out = imperm_with(&fs, "", now, &["reset"]);
        assert_eq!(out.status.code(), Some(0), "reset {boot}: {}", stderr(&out));
    }
    let v = json(&imperm_with(&fs, "", now, &["ls", "--format", "json"]));
    assert_eq!(
        names_where(&v, |_| true),
        [
            "20260115T063000Z-2",
            "20260115T063000Z-1",
            "20260115T063000Z"
        ]
    );
    assert_eq!(v["last_reset"], "20260115T063000Z-2");
    let config = "[retention]\nkeep_last = 2\n";
    let v = json(&imperm_with(&fs, config, now, &["gc", "--format", "json"]));
    assert_eq!(
        names_where(&v, |s| s["deleted"] == true),
        ["20260115T063000Z"]
    );
    assert_eq!(
        reasons(&v, "20260115T063000Z-2"),
        ["newest", "last", "last reset"]
    );
    assert_eq!(
        snapshots_on_disk(&fs),
        ["20260115T063000Z-1", "20260115T063000Z-2"]
    );
    assert_eq!(fs.read("@snapshots/20260115T063000Z-2/etc/boot"), "3\n");
}

/// A clock that went backwards: the last reset's snapshot has an older name than another;
/// gc keeps it all the same, and ls says which one it is.
#[test]
fn the_last_resets_snapshot_is_kept_when_the_clock_went_backwards() {
    let Some(fs) = btrfs("gc_backwards") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/etc/boot", "1\n");
    assert!(
        imperm_with(&fs, "", "2026-01-15T06:31:00Z", &["reset"])
            .status
            .success()
    );
    fs.write("@root/etc/boot", "2\n");
    assert!(
        imperm_with(&fs, "", "2026-01-15T06:30:00Z", &["reset"])
            .status
            .success()
    );
    let config = "[retention]\nkeep_last = 1\n";
    let v = json(&imperm_with(
        &fs,
        config,
        "2026-01-15T07:00:00Z",
        &["gc", "--format", "json"],
    ));
    assert_eq!(v["last_reset"], "20260115T063000Z");
    assert_eq!(reasons(&v, "20260115T063000Z"), ["last reset"]);
    assert_eq!(reasons(&v, "20260115T063100Z"), ["newest", "last"]);
    assert!(names_where(&v, |s| s["deleted"] == true).is_empty());
    let human = imperm_with(
        &fs,
        config,
        "2026-01-15T07:00:00Z",
        &["ls", "--color", "never"],
    );
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("20260115T063000Z") && l.ends_with("last reset")),
        "{text}"
    );
}

/// One answer to "the last reset's snapshot" in ls, status, restore and journal: the one
/// the last reset recorded; without a record, the newest that is not in the future.
#[test]
fn every_command_agrees_on_the_last_resets_snapshot() {
    let Some(fs) = btrfs("last_reset") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/etc/marker", "A\n");
    let now = "2026-01-15T08:00:00Z";
    assert!(
        imperm_with(&fs, "", "2026-01-15T06:30:00Z", &["reset"])
            .status
            .success()
    );
    for (marker, name) in [("B", "20260115T070000Z"), ("C", "20300101T000000Z")] {
        fs.write("@root/etc/marker", &format!("{marker}\n"));
        fs.snapshot("@root", &format!("@snapshots/{name}"), true);
    }
    fs::remove_file(fs.path("@root/etc/marker")).unwrap();
    let export = fs.scratch().join("boot.json");
    fs::write(
        &export,
        "{\"MESSAGE\":\"cannot open /etc/marker: No such file or directory\",\"_SYSTEMD_UNIT\":\"marker.service\"}\n",
    )
    .unwrap();
    let config = format!(
        "device = \"{}\"\n[persistence.\"/persist\"]\ndirectories = [\"/var/log\"]\n",
        fs.device
    );
    let agree = |want: &str, marker: &str| {
        let ls = json(&imperm_with(&fs, &config, now, &["ls", "--format", "json"]));
        assert_eq!(ls["last_reset"], want);
        assert!(
            reasons(&ls, want).contains(&"last reset".to_string()),
            "{ls}"
        );

        // status mounts the top level itself (root, with the device from [filesystem]).
        let path = fs.scratch().join("config-with.toml");
        let status = common::run(
            Command::new(env!("CARGO_BIN_EXE_imperm"))
                .env(imperm::commands::NOW_ENV, now)
                .arg("--root")
                .arg(fs.scratch())
                .arg("--config")
                .arg(&path)
                .args(["status", "--format", "json"]),
        );
        assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
        let status: Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(status["snapshots"]["last_reset"], want, "{status}");

        let journal = imperm_with(
            &fs,
            &config,
            now,
            &[
                "journal",
                "--file",
                export.to_str().unwrap(),
                "--format",
                "json",
            ],
        );
        let journal: Value = serde_json::from_slice(&journal.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", stderr(&journal)));
        assert_eq!(journal["snapshot"], want, "{journal}");

        let live = fs.path("@root");
        let restore = common::run(
            Command::new(env!("CARGO_BIN_EXE_imperm"))
                .env(imperm::commands::NOW_ENV, now)
                .arg("--root")
                .arg(&live)
                .arg("--config")
                .arg(&path)
                .args(["restore", "/etc/marker", "--into", "root", "--mounted"])
                .arg(fs.top()),
        );
        assert_eq!(restore.status.code(), Some(0), "{}", stderr(&restore));
        assert_eq!(fs.read("@root/etc/marker"), format!("{marker}\n"));
        fs::remove_file(fs.path("@root/etc/marker")).unwrap();
    };
    agree("20260115T063000Z", "A");
    // Without the reset's record, the newest snapshot that is not in the future.
    fs::remove_file(fs.path(&format!(
        "@snapshots/{}",
        imperm::snapshots::reset::STATE_FILE
    )))
    .unwrap();
    agree("20260115T070000Z", "B");
    // A record that names a snapshot that is gone counts as none.
    fs.write(
        &format!("@snapshots/{}", imperm::snapshots::reset::STATE_FILE),
        r#"{"phase": "done", "snapshot": "20250101T000000Z"}"#,
    );
    agree("20260115T070000Z", "B");
}

/// `snapshots ls` shows times in the zone the retention buckets use, and names it.
#[test]
fn ls_shows_times_in_the_retention_time_zone() {
    let Some(fs) = btrfs("ls_zone") else { return };
    fs.subvolume("@root");
    fs.subvolume("@snapshots");
    fs.snapshot("@root", "@snapshots/20250307T233000Z", true);
    let config = "[retention]\nkeep_daily = 7\ntimezone = \"Europe/Berlin\"\n";
    let v = json(&imperm_with(
        &fs,
        config,
        "2025-03-09T00:00:00Z",
        &["ls", "--format", "json"],
    ));
    assert_eq!(v["timezone"], "Europe/Berlin");
    let r = row(&v, "20250307T233000Z");
    assert_eq!(r["local_time"], "2025-03-08T00:30:00+01:00");
    assert_eq!(
        r["reasons"],
        serde_json::json!(["newest", "daily 2025-03-08", "last reset"])
    );
    let human = imperm_with(
        &fs,
        config,
        "2025-03-09T00:00:00Z",
        &["ls", "--color", "never"],
    );
    let text = String::from_utf8_lossy(&human.stdout);
    let header = text.lines().next().unwrap();
    assert!(header.contains("Europe/Berlin"), "{text}");
    assert!(text.contains("2025-03-08T00:30:00+01:00"), "{text}");
}

fn set_ro(fs: &LoopBtrfs, rel: &str, ro: bool) {
    common::check(
        Command::new("btrfs")
            .args(["property", "set", "-ts"])
            .arg(fs.path(rel))
            .args(["ro", if ro { "true" } else { "false" }]),
    );
}

/// A gc killed right after it made a snapshot writable (to delete the subvolumes nested in
/// it) leaves a record: `ls` names the snapshot as partly deleted, and the next gc
/// finishes it, instead of taking it for someone's writable subvolume and keeping it for
/// good.
#[test]
fn a_gc_killed_after_making_a_snapshot_writable_is_finished_by_the_next() {
    let Some(fs) = btrfs("gc_killed_flag") else {
        return;
    };
    example(&fs);
    let out = common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env(imperm::commands::NOW_ENV, "2025-03-08T00:00:00Z")
            .env(imperm::snapshots::reset::FAILPOINT_ENV, "gc-flag-cleared")
            .arg("--root")
            .arg(fs.scratch())
            .arg("--config")
            .arg(config(&fs))
            .arg("gc")
            .arg("--mounted")
            .arg(fs.top()),
    );
    assert_eq!(out.status.code(), None, "aborted: {}", stderr(&out));
    let half = "20250203T080000Z";
    assert!(
        !fs.is_readonly(&format!("@snapshots/{half}")),
        "made writable"
    );
    let v = json(&imperm(&fs, &["ls", "--format", "json"]));
    assert_eq!(reasons(&v, half), ["partly deleted by an earlier gc"]);
    assert_eq!(row(&v, half)["keep"], false);
    assert_eq!(row(&v, half)["readonly"], false);
    let plan = json(&imperm(&fs, &["gc", "--dry-run", "--format", "json"]));
    assert_eq!(row(&plan, half)["keep"], false);

    let out = imperm(&fs, &["gc", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(names_where(&json(&out), |s| s["deleted"] == true), [half]);
    let kept: Vec<&str> = EXAMPLE
        .iter()
        .copied()
        .filter(|n| !DELETED.contains(n))
        .collect();
    assert_eq!(snapshots_on_disk(&fs), kept);
    assert!(
        !fs.path(&format!(
            "@snapshots/{}",
            imperm::snapshots::snapshot::GC_STATE_FILE
        ))
        .exists(),
        "the record is gone with the deletion"
    );
}

/// The same one level down: to delete a nested snapshot that holds another, gc makes it
/// writable too. Killed right after that, the snapshot holds a writable subvolume; it is
/// still the deletion gc recorded (ls names it partly deleted), and the next gc finishes
/// the whole tree instead of keeping it as someone's writable subvolume for good.
#[test]
fn a_gc_killed_after_making_a_nested_snapshot_writable_is_finished_by_the_next() {
    let Some(fs) = btrfs("gc_killed_nested_flag") else {
        return;
    };
    fs.subvolume("@root");
    fs.subvolume("@snapshots");
    fs.subvolume("@m");
    fs.subvolume("@inner");
    let half = "20250203T080000Z";
    for name in [half, "20250204T080000Z"] {
        let snap = format!("@snapshots/{name}");
        fs.snapshot("@root", &snap, false);
        fs.snapshot("@m", &format!("{snap}/m"), false);
        fs.snapshot("@inner", &format!("{snap}/m/inner"), true);
        set_ro(&fs, &format!("{snap}/m"), true);
        set_ro(&fs, &snap, true);
    }
    let config = "[retention]\nkeep_last = 1\n";
    let path = fs.scratch().join("config-with.toml");
    fs::write(&path, format!("[filesystem]\ntype = \"btrfs\"\n{config}")).unwrap();
    let out = common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env(imperm::commands::NOW_ENV, "2025-03-08T00:00:00Z")
            .env(
                imperm::snapshots::reset::FAILPOINT_ENV,
                "nested-flag-cleared",
            )
            .arg("--root")
            .arg(fs.scratch())
            .arg("--config")
            .arg(&path)
            .arg("gc")
            .arg("--mounted")
            .arg(fs.top()),
    );
    assert_eq!(out.status.code(), None, "aborted: {}", stderr(&out));
    let nested = format!("@snapshots/{half}/m");
    assert!(!fs.is_readonly(&nested), "made writable");
    assert!(fs.path(&format!("{nested}/inner")).exists());
    let ls = |args: &[&str]| json(&imperm_with(&fs, config, "2025-03-08T00:00:00Z", args));
    let v = ls(&["ls", "--format", "json"]);
    assert_eq!(reasons(&v, half), ["partly deleted by an earlier gc"]);
    assert_eq!(row(&v, half)["keep"], false);

    let out = imperm_with(
        &fs,
        config,
        "2025-03-08T00:00:00Z",
        &["gc", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(names_where(&json(&out), |s| s["deleted"] == true), [half]);
    assert_eq!(
        snapshots_on_disk(&fs),
        [
            "20250204T080000Z",
            "20250204T080000Z/m",
            "20250204T080000Z/m/inner"
        ]
    );
    assert!(
        !fs.path(&format!(
            "@snapshots/{}",
            imperm::snapshots::snapshot::GC_STATE_FILE
        ))
        .exists()
    );
}

/// kill -9 at arbitrary moments of gc runs over snapshots that each hold nested ones: in
/// the end every snapshot the policy does not keep is gone, and none is left writable.
#[test]
fn gc_killed_at_arbitrary_moments_leaks_no_writable_snapshot() {
    let Some(fs) = btrfs("gc_sigkill") else {
        return;
    };
    fs.subvolume("@root");
    fs.subvolume("@snapshots");
    fs.subvolume("@src");
    let names: Vec<String> = (1..=40)
        .map(|day| format!("202501{:02}T080000Z", day % 28 + 1) + &format!("-{day}"))
        .collect();
    for name in &names {
        let snap = format!("@snapshots/{name}");
        fs.snapshot("@root", &snap, false);
        for nested in ["a", "b"] {
            fs.snapshot("@src", &format!("{snap}/{nested}"), true);
        }
        // One level deeper: `a` holds one too, so gc must make `a` writable as well.
        set_ro(&fs, &format!("{snap}/a"), false);
        fs.snapshot("@src", &format!("{snap}/a/inner"), true);
        set_ro(&fs, &format!("{snap}/a"), true);
        set_ro(&fs, &snap, true);
    }
    let config = "[retention]\nkeep_last = 1\n";
    let path = fs.scratch().join("config-with.toml");
    fs::write(&path, format!("[filesystem]\ntype = \"btrfs\"\n{config}")).unwrap();
    for delay_ms in [3u64, 9, 15, 22, 30, 41, 55, 70, 90, 120] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env(imperm::commands::NOW_ENV, "2025-03-08T00:00:00Z")
            .arg("--root")
            .arg(fs.scratch())
            .arg("--config")
            .arg(&path)
            .arg("gc")
            .arg("--mounted")
            .arg(fs.top())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = imperm_with(
        &fs,
        config,
        "2025-03-08T00:00:00Z",
        &["gc", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let left: Vec<String> = snapshots_on_disk(&fs)
        .into_iter()
        .filter(|n| !n.contains('/'))
        .collect();
    let newest = names.iter().max_by_key(|n| {
        imperm::snapshots::snapshot::parse_name(n, &jiff::tz::TimeZone::UTC)
            .unwrap()
            .0
    });
    assert_eq!(left, [newest.unwrap().clone()]);
}

/// A deletion that fails half-way (a nested subvolume is immutable) is not a stop: gc goes
/// on with the others, says which one failed (exit 2), and the snapshot it made writable
/// is recorded, named partly deleted, and finished by a later gc once it can be.
#[test]
fn a_gc_that_fails_half_way_goes_on_and_a_later_gc_finishes() {
    let Some(fs) = btrfs("gc_fail_half") else {
        return;
    };
    example(&fs);
    let nested = "@snapshots/20250203T080000Z/var/lib/machines";
    set_ro(&fs, "@snapshots/20250203T080000Z", false);
    set_ro(&fs, nested, false);
    common::check(Command::new("chattr").arg("+i").arg(fs.path(nested)));
    set_ro(&fs, nested, true);
    set_ro(&fs, "@snapshots/20250203T080000Z", true);
    // The failing one is not the last: 20250120 comes after it once 0203 is the oldest.
    fs.snapshot("@root", "@snapshots/20250204T070000Z", true);
    let out = imperm(&fs, &["gc", "--format", "json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("imperm: 1 snapshot was not deleted (the others were): ")
            && last.contains(&format!(
                "{}/{nested}: Operation not permitted",
                fs.top().display()
            )),
        "{err}"
    );
    let v = json(&out);
    let mut deleted = names_where(&v, |s| s["deleted"] == true);
    deleted.sort();
    assert_eq!(
        deleted,
        ["20250106T080000Z", "20250120T090000Z", "20250204T070000Z"]
    );
    assert!(row(&v, "20250203T080000Z")["error"].is_string(), "{v}");
    let v = json(&imperm(&fs, &["ls", "--format", "json"]));
    assert_eq!(
        reasons(&v, "20250203T080000Z"),
        ["partly deleted by an earlier gc"]
    );
    // Fixed by hand: the next gc finishes it.
    set_ro(&fs, nested, false);
    common::check(Command::new("chattr").arg("-i").arg(fs.path(nested)));
    set_ro(&fs, nested, true);
    let out = imperm(&fs, &["gc", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        names_where(&json(&out), |s| s["deleted"] == true),
        ["20250203T080000Z"]
    );
    assert!(!fs.path("@snapshots/20250203T080000Z").exists());
}

/// A read-only snapshot holding a writable subvolume, or one that is no snapshot, holds
/// what a reset never put there: not a gc candidate, kept with the reason.
#[test]
fn gc_keeps_a_snapshot_holding_what_a_reset_never_put_there() {
    let Some(fs) = btrfs("gc_foreign_nested") else {
        return;
    };
    fs.subvolume("@root");
    fs.subvolume("@snapshots");
    fs.subvolume("@snapshots/20200101T000000Z");
    fs.subvolume("@snapshots/20200101T000000Z/keep");
    fs.write("@snapshots/20200101T000000Z/keep/f", "precious\n");
    set_ro(&fs, "@snapshots/20200101T000000Z", true);
    fs.snapshot("@root", "@snapshots/20200102T000000Z", false);
    fs.subvolume("@snapshots/20200102T000000Z/mine");
    fs.write("@snapshots/20200102T000000Z/mine/f", "mine\n");
    set_ro(&fs, "@snapshots/20200102T000000Z/mine", true);
    set_ro(&fs, "@snapshots/20200102T000000Z", true);
    fs.snapshot("@root", "@snapshots/20200103T000000Z", true);
    let config = "[retention]\nkeep_last = 1\n";
    let out = imperm_with(
        &fs,
        config,
        "2025-01-01T00:00:00Z",
        &["gc", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        reasons(&v, "20200101T000000Z"),
        ["holds read-write subvolume keep"]
    );
    assert_eq!(
        reasons(&v, "20200102T000000Z"),
        ["holds subvolume mine, which is not a snapshot"]
    );
    assert!(names_where(&v, |s| s["deleted"] == true).is_empty());
    assert_eq!(fs.read("@snapshots/20200101T000000Z/keep/f"), "precious\n");
    assert_eq!(fs.read("@snapshots/20200102T000000Z/mine/f"), "mine\n");
}

/// gc's own record of a deletion under way is written before anything changes: when it
/// cannot be (here its temporary name is taken by a directory), that is a surprise that
/// stops gc before the snapshot is touched, with what was deleted before it reported.
#[test]
fn gc_stops_before_touching_a_snapshot_when_its_record_cannot_be_written() {
    let Some(fs) = btrfs("gc_record_stop") else {
        return;
    };
    example(&fs);
    fs::create_dir(fs.path(&format!(
        "@snapshots/{}.tmp",
        imperm::snapshots::snapshot::GC_STATE_FILE
    )))
    .unwrap();
    let out = imperm(&fs, &["gc", "--format", "json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.contains(".imperm-gc.json.tmp is a directory")
            && last.ends_with("gc stopped, nothing after it was deleted"),
        "{err}"
    );
    let mut deleted = names_where(&json(&out), |s| s["deleted"] == true);
    deleted.sort();
    assert_eq!(deleted, ["20250106T080000Z", "20250120T090000Z"]);
    assert!(fs.is_readonly("@snapshots/20250203T080000Z"));
    assert!(fs.is_readonly("@snapshots/20250203T080000Z/var/lib/machines"));
}

/// Snapshot names in `ls` and `gc` are in the one escaped form of paths in output, in
/// human and JSON output alike (never lossy), and `restore --from`, `diff --against` and
/// `journal --against` take that form back. What has no read-only flag shows `-`.
#[test]
fn snapshot_names_are_escaped_and_can_be_given_back() {
    use std::os::unix::ffi::OsStrExt;
    let Some(fs) = btrfs("ls_odd_names") else {
        return;
    };
    fs.subvolume("@root");
    fs.subvolume("@snapshots");
    let odd: [&[u8]; 5] = [
        b"odd\nname",
        b"bad\xffname",
        b"esc\x1b[31mred",
        b"back\\slash",
        b"tab\there",
    ];
    for name in odd {
        fs.write("@root/etc/which", &String::from_utf8_lossy(name));
        let dst = fs
            .path("@snapshots")
            .join(std::ffi::OsStr::from_bytes(name));
        common::check(
            Command::new("btrfs")
                .args(["-q", "subvolume", "snapshot", "-r"])
                .arg(fs.path("@root"))
                .arg(dst),
        );
    }
    fs::remove_file(fs.path("@root/etc/which")).unwrap();
    fs::create_dir(fs.path("@snapshots/20200101T000000Z")).unwrap();
    std::os::unix::fs::symlink("../@root", fs.path("@snapshots/20200102T000000Z")).unwrap();
    let v = json(&imperm(&fs, &["ls", "--format", "json"]));
    assert_eq!(
        names_where(&v, |_| true),
        [
            "20200102T000000Z",
            "20200101T000000Z",
            "back\\x5cslash",
            "bad\\xffname",
            "esc\\x1b[31mred",
            "odd\\x0aname",
            "tab\\x09here",
        ]
    );
    assert_eq!(row(&v, "20200101T000000Z")["readonly"], Value::Null);
    assert_eq!(row(&v, "20200102T000000Z")["readonly"], Value::Null);
    assert_eq!(row(&v, "bad\\xffname")["readonly"], true);
    let text =
        String::from_utf8_lossy(&imperm(&fs, &["ls", "--color", "never"]).stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "{text}");
    for name in [
        "back\\x5cslash",
        "bad\\xffname",
        "esc\\x1b[31mred",
        "odd\\x0aname",
        "tab\\x09here",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{name} "))),
            "{name}: {text}"
        );
    }
    // NAME, TIME, UTC (a date and a time), AGE, RO.
    let ro_column = |name: &str| {
        let line = lines.iter().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(5).unwrap().to_string()
    };
    assert_eq!(ro_column("20200101T000000Z"), "-");
    assert_eq!(ro_column("20200102T000000Z"), "-");

    // Back through restore, diff and journal, as ls printed it.
    let given = row(&v, "bad\\xffname")["name"]
        .as_str()
        .unwrap()
        .to_string();
    let live = fs.path("@root");
    let with = |args: &[&str]| {
        common::run(
            Command::new(env!("CARGO_BIN_EXE_imperm"))
                .env(imperm::commands::NOW_ENV, "2025-03-08T00:00:00Z")
                .arg("--root")
                .arg(&live)
                .arg("--config")
                .arg(config(&fs))
                .args(args)
                .arg("--mounted")
                .arg(fs.top()),
        )
    };
    let out = with(&["restore", "/etc/which", "--from", &given, "--into", "root"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read(fs.path("@root/etc/which")).unwrap(),
        String::from_utf8_lossy(b"bad\xffname").as_bytes()
    );
    let out = with(&["diff", "--against", &given, "--format", "json"]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    let diff: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(diff["against"], "bad\\xffname");
    let export = fs.scratch().join("boot.json");
    fs::write(&export, "").unwrap();
    let out = with(&[
        "journal",
        "--file",
        export.to_str().unwrap(),
        "--against",
        &given,
        "--format",
        "json",
    ]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(journal["snapshot"], "bad\\xffname");
    // A backslash that starts no escape is refused, naming what was given.
    let out = with(&["restore", "/etc/which", "--from", "bad\\name"]);
    assert_eq!(out.status.code(), Some(2));
    // In the one escaped form every path and name is printed in: the backslash is `\x5c`.
    assert!(
        stderr(&out).contains("\"bad\\x5cname\""),
        "{}",
        stderr(&out)
    );
}

/// The uuid of a subvolume, as gc records it (hex, no dashes).
fn uuid_hex(fs: &LoopBtrfs, rel: &str) -> String {
    common::check(
        Command::new("btrfs")
            .args(["subvolume", "show"])
            .arg(fs.path(rel)),
    )
    .lines()
    .find_map(|l| l.trim().strip_prefix("UUID:"))
    .unwrap()
    .trim()
    .replace('-', "")
}

fn subvolume_id(fs: &LoopBtrfs, rel: &str) -> String {
    common::check(
        Command::new("btrfs")
            .args(["inspect-internal", "rootid"])
            .arg(fs.path(rel)),
    )
    .trim()
    .to_string()
}

/// gc's record is believed only as far as the filesystem confirms it: a record naming a
/// writable subvolume that is no snapshot (someone's own), or naming a subvolume by the
/// wrong id or uuid (stale: another one took the name), finishes nothing; gc drops the
/// spent entries and keeps what they name.
#[test]
fn a_stale_or_foreign_gc_record_deletes_nothing() {
    let Some(fs) = btrfs("gc_record_foreign") else {
        return;
    };
    fs.subvolume("@root");
    fs.subvolume("@snapshots");
    fs.subvolume("@snapshots/20200101T000000Z");
    fs.write("@snapshots/20200101T000000Z/f", "mine\n");
    fs.snapshot("@root", "@snapshots/20200102T000000Z", false);
    fs.write("@snapshots/20200102T000000Z/g", "mine too\n");
    fs.snapshot("@root", "@snapshots/20200103T000000Z", true);
    let record = format!(
        r#"{{"deleting": [
            {{"name": "20200101T000000Z", "id": {}, "uuid": "{}"}},
            {{"name": "20200102T000000Z", "id": {}, "uuid": "00000000000000000000000000000000"}}
        ]}}"#,
        subvolume_id(&fs, "@snapshots/20200101T000000Z"),
        uuid_hex(&fs, "@snapshots/20200101T000000Z"),
        subvolume_id(&fs, "@snapshots/20200102T000000Z"),
    );
    let record_path = format!("@snapshots/{}", imperm::snapshots::snapshot::GC_STATE_FILE);
    fs.write(&record_path, &record);
    let config = "[retention]\nkeep_last = 1\n";
    let out = imperm_with(
        &fs,
        config,
        "2025-01-01T00:00:00Z",
        &["gc", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(reasons(&v, "20200101T000000Z"), ["read-write"]);
    assert_eq!(reasons(&v, "20200102T000000Z"), ["read-write"]);
    assert!(names_where(&v, |s| s["deleted"] == true).is_empty());
    assert_eq!(fs.read("@snapshots/20200101T000000Z/f"), "mine\n");
    assert_eq!(fs.read("@snapshots/20200102T000000Z/g"), "mine too\n");
    assert!(!fs.path(&record_path).exists(), "spent entries are dropped");
}

/// An old root a reset could not delete (bcachefs: ENOTEMPTY after a power cut in the
/// middle of a nested subvolume's destroy) is set aside beside the root as
/// `@root.imperm-dead-SNAPSHOT`: `ls` names it, `gc --dry-run` says it would delete it,
/// `gc` deletes it with what is nested in it, and says when it still cannot (exit 0: its
/// content is in its snapshot). Nothing else of a like name is touched, nor followed.
#[test]
fn gc_deletes_old_roots_a_reset_set_aside_and_nothing_else() {
    let Some(fs) = btrfs("gc_dead") else { return };
    example(&fs);
    fs.subvolume("@data");
    fs.write("@data/precious", "kept\n");
    let dead = "@root.imperm-dead-20250307T080000Z";
    fs.subvolume(dead);
    fs.write(&format!("{dead}/etc/hostname"), "old\n");
    fs::create_dir_all(fs.path(&format!("{dead}/var/lib"))).unwrap();
    fs.subvolume(&format!("{dead}/var/lib/machines"));
    fs.subvolume(&format!("{dead}/var/lib/machines/inner"));
    let stuck = "@root.imperm-dead-20250306T080000Z.2";
    fs.subvolume(stuck);
    // Like names that are not a reset's: kept. A symlink of such a name is not followed.
    for other in [
        "@root.imperm-dead-manual",
        "@other.imperm-dead-20250307T080000Z",
    ] {
        fs.subvolume(other);
    }
    std::os::unix::fs::symlink("@data", fs.path("@root.imperm-dead-20250305T080000Z")).unwrap();
    fs::create_dir(fs.path("@root.imperm-dead-20250304T080000Z")).unwrap();
    let all = fs.subvolume_paths();

    let out = imperm(&fs, &["ls", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    for name in [dead, stuck] {
        assert!(
            err.contains(&format!("{name} is an old root a reset could not delete")),
            "{err}"
        );
    }
    assert_eq!(err.lines().count(), 2, "{err}");
    let out = imperm(&fs, &["gc", "--dry-run", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("would delete {}/{dead}", fs.top().display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs.subvolume_paths(), all, "a dry run deletes nothing");

    // btrfs refuses to delete the default subvolume: one still cannot be deleted.
    let id = common::check(
        Command::new("btrfs")
            .args(["inspect-internal", "rootid"])
            .arg(fs.path(stuck)),
    );
    common::check(
        Command::new("btrfs")
            .args(["subvolume", "set-default", id.trim()])
            .arg(fs.top()),
    );
    let out = imperm(&fs, &["gc", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "imperm gc: deleted {}/{dead}, an old root a reset set aside",
            fs.top().display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "imperm gc: still cannot delete {}/{stuck}, an old root a reset set aside: delete subvolume {}/{stuck}: Operation not permitted; kept for the next gc",
            fs.top().display(),
            fs.top().display()
        )),
        "{err}"
    );
    let mut left = fs.subvolume_paths();
    left.retain(|p| !p.starts_with("@snapshots/"));
    assert_eq!(
        left,
        [
            "@data",
            "@machines",
            "@other.imperm-dead-20250307T080000Z",
            "@root",
            "@root.imperm-dead-20250306T080000Z.2",
            "@root.imperm-dead-manual",
            "@snapshots",
        ]
    );
    assert_eq!(
        fs::read_to_string(fs.path("@data/precious")).unwrap(),
        "kept\n"
    );
    assert!(fs.path("@root.imperm-dead-20250305T080000Z").is_symlink());
    assert!(fs.path("@root.imperm-dead-20250304T080000Z").is_dir());
    // The policy's own deletions went on as ever.
    let mut on_disk = snapshots_on_disk(&fs);
    on_disk.retain(|n| !n.contains('/'));
    assert_eq!(
        on_disk,
        EXAMPLE
            .iter()
            .filter(|n| !DELETED.contains(n))
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
    );
}
