//! `imperm diff` on real btrfs (loop devices made by the tests): additions, deletions,
//! renames, chmod, new empty files and new directories, through the send stream and
//! through the walk; and `--against` an old root a reset kept.

mod common;

use std::fs;
use std::process::{Command, Output};

use common::{LoopBtrfs, btrfs};
use serde_json::Value;

fn imperm(fs: &LoopBtrfs, args: &[&str]) -> Output {
    common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env(imperm::commands::NOW_ENV, "2026-01-15T06:30:00Z")
            .arg("--root")
            .arg(fs.path("@root"))
            .args(args)
            .args(["--fs", "btrfs", "--mounted"])
            .arg(fs.top()),
    )
}

fn json(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `change path [from] [what]` lines.
fn changes(v: &Value) -> Vec<String> {
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut line = format!(
                "{} {}",
                c["change"].as_str().unwrap(),
                c["path"].as_str().unwrap()
            );
            if let Some(from) = c["from"].as_str() {
                line += &format!(" from {from}");
            }
            let what: Vec<&str> = c["what"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect();
            if !what.is_empty() {
                line += &format!(" [{}]", what.join(","));
            }
            line
        })
        .collect()
}

fn populate(fs: &LoopBtrfs) {
    fs.subvolume("@root");
    fs.write("@root/etc/keep.conf", "keep");
    fs.write("@root/etc/gone.conf", "gone");
    fs.write("@root/etc/moveme.conf", "move");
    fs.write("@root/etc/chmodme.conf", "chmod");
    fs.write("@root/var/lib/olddir/db", "old");
    fs.write("@root/var/lib/renamedir/x", "x");
    fs.write("@root/var/log/persisted.log", "log");
}

/// After the baseline: one change of each kind.
fn change_everything(fs: &LoopBtrfs) {
    fs::remove_file(fs.path("@root/etc/gone.conf")).unwrap();
    fs::rename(
        fs.path("@root/etc/moveme.conf"),
        fs.path("@root/etc/moved.conf"),
    )
    .unwrap();
    fs::set_permissions(
        fs.path("@root/etc/chmodme.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    fs.write("@root/etc/empty.conf", "");
    fs::create_dir_all(fs.path("@root/var/lib/newdir/sub")).unwrap();
    fs.write("@root/var/lib/newsvc/state.db", "new state");
    fs.write("@root/var/lib/olddir/db", "old, then more");
    fs::rename(
        fs.path("@root/var/lib/renamedir"),
        fs.path("@root/var/lib/renamed"),
    )
    .unwrap();
    fs.write("@root/var/log/persisted.log", "log, then more");
}

#[test]
fn the_generation_diff_sees_every_kind_of_change() {
    let Some(fs) = btrfs("diff_generation") else {
        return;
    };
    populate(&fs);
    let out = imperm(&fs, &["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("read-only snapshot: @snapshots/.baseline")
    );
    change_everything(&fs);
    let v = json(&imperm(&fs, &["diff", "--format", "json"]));
    assert_eq!(v["method"], "btrfs-generation");
    assert_eq!(
        changes(&v),
        [
            "changed /etc/chmodme.conf [mode]",
            "added /etc/empty.conf",
            "removed /etc/gone.conf",
            "renamed /etc/moved.conf from /etc/moveme.conf",
            "added /var/lib/newdir",
            "added /var/lib/newdir/sub",
            "added /var/lib/newsvc",
            "added /var/lib/newsvc/state.db",
            "changed /var/lib/olddir/db [content]",
            "renamed /var/lib/renamed from /var/lib/renamedir",
        ],
        "/var/log is persisted by the built-in template and left out"
    );
    let persist: Vec<&str> = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] == "persist")
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    // A renamed service directory is state at a path that is not persisted either.
    assert_eq!(
        persist,
        ["/var/lib/newsvc", "/var/lib/olddir", "/var/lib/renamed"]
    );
    let leftovers: Vec<String> = fs::read_dir(fs.path("@snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, [".baseline"], "the temporary snapshot is gone");
}

#[test]
fn the_walk_diff_sees_the_same_changes_with_renames_as_remove_and_add() {
    let Some(fs) = btrfs("diff_walk") else { return };
    populate(&fs);
    assert!(imperm(&fs, &["baseline"]).status.success());
    change_everything(&fs);
    let v = json(&imperm(&fs, &["diff", "--walk", "--format", "json"]));
    assert_eq!(v["method"], "walk");
    assert_eq!(
        changes(&v),
        [
            "changed /etc/chmodme.conf [mode]",
            "added /etc/empty.conf",
            "removed /etc/gone.conf",
            "added /etc/moved.conf",
            "removed /etc/moveme.conf",
            "added /var/lib/newdir",
            "added /var/lib/newdir/sub",
            "added /var/lib/newsvc",
            "added /var/lib/newsvc/state.db",
            "changed /var/lib/olddir/db [content]",
            "added /var/lib/renamed",
            "added /var/lib/renamed/x",
            "removed /var/lib/renamedir",
            "removed /var/lib/renamedir/x",
        ]
    );
}

/// "What did the last reset wipe?": the old root's state, gone from the fresh root.
#[test]
fn diff_against_the_snapshot_a_reset_kept_shows_what_it_wiped() {
    let Some(fs) = btrfs("diff_against") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/var/lib/forgejo/data/forgejo.db", "repos");
    fs.write("@root/var/cache/nginx/page", "cached");
    fs.write("@root/etc/machine-id", "persisted by the template");
    let out = imperm(&fs, &["reset"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs.write("@root/var/lib/fresh/x", "new this boot");
    for extra in [&[][..], &["--walk"][..]] {
        let mut args = vec!["diff", "--against", "20260115T063000Z", "--format", "json"];
        args.extend(extra);
        let v = json(&imperm(&fs, &args));
        // The fresh root shares no history with the old one: the trees are walked.
        assert_eq!(v["method"], "walk");
        let lines = changes(&v);
        for want in [
            "removed /var/lib/forgejo/data/forgejo.db",
            "removed /var/cache/nginx/page",
            "added /var/lib/fresh/x",
        ] {
            assert!(
                lines.contains(&want.to_string()),
                "{extra:?}: {want} in {lines:?}"
            );
        }
        assert!(
            !lines.iter().any(|l| l.contains("machine-id")),
            "persisted: {lines:?}"
        );
        let verdicts = common::path_verdicts(&v);
        assert!(
            verdicts.contains(&("/var/lib/forgejo".into(), "persist".into())),
            "{verdicts:?}"
        );
        assert!(
            verdicts.contains(&("/var/cache/nginx".into(), "ephemeral".into())),
            "{verdicts:?}"
        );
        assert!(
            !verdicts.iter().any(|(p, _)| p == "/var/lib/fresh"),
            "state new this boot was not wiped: {verdicts:?}"
        );
    }
}

#[test]
fn diff_refuses_what_it_cannot_compare() {
    let Some(fs) = btrfs("diff_refusals") else {
        return;
    };
    fs.subvolume("@root");
    let out = imperm(&fs, &["diff"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no baseline in "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for snap in ["nope", "../@root", ""] {
        let out = imperm(&fs, &["diff", "--against", snap]);
        assert_eq!(out.status.code(), Some(2), "{snap}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    }
}
