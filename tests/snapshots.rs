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
    for name in EXAMPLE {
        fs.write("@root/etc/hostname", name);
        if name == "20250203T080000Z" {
            fs.snapshot("@root", &format!("@snapshots/{name}"), false);
            fs::create_dir_all(fs.path(&format!("@snapshots/{name}/var/lib"))).unwrap();
            fs.subvolume(&format!("@snapshots/{name}/var/lib/machines"));
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
    assert_eq!(newest["local_time"], "2025-03-07T09:00:00+01:00");
    assert_eq!(newest["readonly"], true);
    assert_eq!(
        newest["reasons"],
        serde_json::json!(["newest", "last", "weekly 2025-W10", "monthly 2025-03"])
    );

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
    let order: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("imperm gc: deleted @snapshots/"))
        .collect();
    assert_eq!(order, DELETED, "oldest first");

    // Planning again on what is left deletes nothing.
    let again = imperm(&fs, &["gc", "--format", "json"]);
    assert!(names_where(&json(&again), |s| s["deleted"] == true).is_empty());
    assert_eq!(snapshots_on_disk(&fs), kept);
}

#[test]
fn gc_stops_at_the_first_error_and_touches_nothing_after_it() {
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
    let before = snapshots_on_disk(&fs);
    let out = imperm(&fs, &["gc"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("imperm: delete subvolume @snapshots/20250106T080000Z"),
        "{err}"
    );
    assert_eq!(
        snapshots_on_disk(&fs),
        before,
        "nothing after the failure was deleted"
    );
    assert_eq!(
        before.len(),
        EXAMPLE.len() + 1,
        "13 snapshots and the nested one"
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
    assert_eq!(rows[3]["reasons"], serde_json::json!(["unrecognised name"]));
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
        text.contains("2025-03-01T10:00:00+01:00  2025-03-01 09:00:00Z"),
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
        &format!("@snapshots/{}", imperm::reset::STATE_FILE),
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
