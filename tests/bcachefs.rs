//! The bcachefs backend. bcachefs is not in this kernel (out of mainline since 6.18), so
//! these tests are the one place imperm uses a stand-in: `tests/fake-bcachefs/bcachefs`
//! carries out `bcachefs subvolume create|snapshot|delete` on a real btrfs, with the
//! bcachefs behaviours DESIGN.md records (delete follows symlinks and refuses a subvolume
//! holding another, a trailing slash fails). Subvolumes are still told apart the bcachefs
//! way, by statx's `stx_subvol`, which btrfs reports too on this kernel. What is checked is
//! imperm's side: which commands it runs, in which order, on which paths.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{LoopBtrfs, btrfs};

struct Fake {
    log: PathBuf,
}

impl Fake {
    fn new(fs: &LoopBtrfs) -> Fake {
        let log = fs.scratch().join("bcachefs.log");
        fs::write(&log, "").unwrap();
        Fake { log }
    }

    fn run(&self, fs: &LoopBtrfs, args: &[&str]) -> Output {
        self.run_at(fs, fs.top(), args)
    }

    /// The same with `--mounted DIR`.
    fn run_at(&self, fs: &LoopBtrfs, mounted: &Path, args: &[&str]) -> Output {
        let fake_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-bcachefs");
        let path = format!(
            "{}:{}",
            fake_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        common::run(
            Command::new(env!("CARGO_BIN_EXE_imperm"))
                .env("PATH", path)
                .env("FAKE_BCACHEFS_LOG", &self.log)
                .env(imperm::commands::NOW_ENV, "2026-01-15T06:30:00Z")
                .arg("--root")
                .arg(fs.scratch())
                .args(args)
                .args(["--fs", "bcachefs", "--mounted"])
                .arg(mounted),
        )
    }

    /// The calls, with the mount point replaced by `TOP`.
    fn calls(&self, fs: &LoopBtrfs) -> Vec<String> {
        let top = fs.top().display().to_string();
        fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| l.replace(&top, "TOP"))
            .collect()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn reset_runs_the_bcachefs_commands_nested_first_and_never_with_a_trailing_slash() {
    let Some(fs) = btrfs("bcachefs_reset") else {
        return;
    };
    let fake = Fake::new(&fs);
    fs.subvolume("@root");
    fs.write("@root/etc/machine-id", "abc\n");
    fs::create_dir_all(fs.path("@root/var/lib")).unwrap();
    fs.subvolume("@root/var/lib/machines");
    fs.subvolume("@root/var/lib/machines/inner");
    fs.write("@root/var/lib/machines/inner/f", "x\n");
    let out = fake.run(&fs, &["reset"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fake.calls(&fs),
        [
            "subvolume create TOP/@snapshots",
            "subvolume snapshot -r TOP/@root TOP/@snapshots/20260115T063000Z",
            "subvolume delete TOP/@root/var/lib/machines/inner",
            "subvolume delete TOP/@root/var/lib/machines",
            "subvolume delete TOP/@root",
            "subvolume create TOP/@root",
        ]
    );
    // bcachefs cannot add nested subvolumes to a read-only snapshot: said, not hidden.
    let top = fs.top().display();
    assert!(stderr(&out).contains(&format!(
        "nested subvolume {top}/@root/var/lib/machines is not in snapshot {top}/@snapshots/20260115T063000Z (bcachefs cannot add it to a read-only snapshot)"
    )));
    assert_eq!(
        fs.read("@snapshots/20260115T063000Z/etc/machine-id"),
        "abc\n"
    );
    assert!(fs.is_readonly("@snapshots/20260115T063000Z"));
    assert_eq!(fs.tree("@root"), Vec::<String>::new());
}

#[test]
fn a_symlinked_root_is_never_handed_to_bcachefs_delete() {
    let Some(fs) = btrfs("bcachefs_symlink") else {
        return;
    };
    let fake = Fake::new(&fs);
    fs.subvolume("@precious");
    fs.write("@precious/data", "keep\n");
    std::os::unix::fs::symlink("@precious", fs.path("@root")).unwrap();
    let before = fs.subvolumes();
    let out = fake.run(&fs, &["reset"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("@root is not a subvolume (a symlink)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fake.calls(&fs),
        Vec::<String>::new(),
        "bcachefs was not run at all"
    );
    assert_eq!(fs.subvolumes(), before);
    assert_eq!(fs.read("@precious/data"), "keep\n");
}

#[test]
fn gc_deletes_through_bcachefs_and_a_second_reset_of_an_empty_root_does_nothing() {
    let Some(fs) = btrfs("bcachefs_gc") else {
        return;
    };
    let fake = Fake::new(&fs);
    fs.subvolume("@root");
    fs.subvolume("@snapshots");
    for name in ["20250101T000000Z", "20250102T000000Z"] {
        fs.snapshot("@root", &format!("@snapshots/{name}"), true);
    }
    let config = fs.scratch().join("config.toml");
    fs::write(&config, "[retention]\nkeep_last = 1\n").unwrap();
    let out = fake.run(&fs, &["--config", config.to_str().unwrap(), "gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fake.calls(&fs),
        ["subvolume delete TOP/@snapshots/20250101T000000Z"]
    );
    assert_eq!(
        fs.subvolume_paths(),
        ["@root", "@snapshots", "@snapshots/20250102T000000Z"]
    );

    // bcachefs has no generation to compare: an empty root is known untouched.
    let out = fake.run(&fs, &["reset"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));
    assert_eq!(fake.calls(&fs).len(), 1, "no further bcachefs command");
}

fn state(fs: &LoopBtrfs, json: &str) {
    fs.write(&format!("@snapshots/{}", imperm::reset::STATE_FILE), json);
}

/// bcachefs records no snapshot lineage, so nothing of the recorded name can be told to be
/// a resumed reset's own; and it takes a snapshot read-only in one step, so there is never
/// a partial one to delete. A resumed `snapshot` phase leaves an existing subvolume of that
/// name alone and takes the snapshot under a free name.
#[test]
fn a_resumed_reset_on_bcachefs_never_deletes_an_existing_snapshot() {
    let Some(fs) = btrfs("bcachefs_resume") else {
        return;
    };
    let fake = Fake::new(&fs);
    fs.subvolume("@root");
    fs.write("@root/etc/machine-id", "abc\n");
    fs.subvolume("@snapshots");
    fs.snapshot("@root", "@snapshots/20260115T062900Z", true);
    fs.write("@root/etc/later", "after the snapshot\n");
    state(
        &fs,
        r#"{"phase": "snapshot", "snapshot": "20260115T062900Z"}"#,
    );
    let out = fake.run(&fs, &["reset"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fake.calls(&fs),
        [
            "subvolume snapshot -r TOP/@root TOP/@snapshots/20260115T063000Z",
            "subvolume delete TOP/@root",
            "subvolume create TOP/@root",
        ]
    );
    assert_eq!(
        fs.tree("@snapshots/20260115T062900Z"),
        ["etc/", "etc/machine-id = abc\n"]
    );
    assert_eq!(
        fs.read("@snapshots/20260115T063000Z/etc/later"),
        "after the snapshot\n"
    );
}

/// A resumed `replace` phase deletes the root only when the recorded snapshot has the
/// root's top-level entries (bcachefs has no lineage to compare): a state naming another
/// subvolume's snapshot with the root's id is refused, and bcachefs is not run at all.
#[test]
fn a_resumed_replace_on_bcachefs_checks_the_snapshot_against_the_root() {
    let Some(fs) = btrfs("bcachefs_resume_replace") else {
        return;
    };
    let fake = Fake::new(&fs);
    fs.subvolume("@root");
    fs.write("@root/etc/machine-id", "abc\n");
    fs.write("@root/important", "keep\n");
    fs.subvolume("@snapshots");
    fs.subvolume("@other");
    fs.write("@other/precious", "keep me\n");
    fs.snapshot("@other", "@snapshots/20200105T000000Z-6", true);
    let id = common::check(
        Command::new("btrfs")
            .args(["inspect-internal", "rootid"])
            .arg(fs.path("@root")),
    );
    state(
        &fs,
        &format!(
            r#"{{"phase": "replace", "snapshot": "20200105T000000Z-6", "old_root": {}}}"#,
            id.trim()
        ),
    );
    let before = fs.subvolumes();
    let out = fake.run(&fs, &["reset"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("top-level entries") && err.contains("nothing was done"),
        "{err}"
    );
    assert_eq!(fake.calls(&fs), Vec::<String>::new());
    assert_eq!(fs.subvolumes(), before);
    assert_eq!(fs.read("@root/important"), "keep\n");
}

/// `--mounted DIR` must be a mount of the whole filesystem: a subvolume mounted on its own
/// (what `X-mount.subdir=` or a bind mount gives) or a directory inside the top level is
/// refused before bcachefs is run.
#[test]
fn mounted_on_bcachefs_must_be_a_mount_of_the_whole_filesystem() {
    let Some(fs) = btrfs("bcachefs_mounted") else {
        return;
    };
    let fake = Fake::new(&fs);
    fs.subvolume("@persist");
    fs::create_dir(fs.path("plain")).unwrap();
    let px = fs.scratch().join("px");
    fs::create_dir(&px).unwrap();
    common::check(
        Command::new("mount")
            .args(["-o", "subvol=@persist", &fs.device])
            .arg(&px),
    );
    let plain = fs.path("plain");
    let mut results = Vec::new();
    for (dir, want) in [
        (
            px.as_path(),
            "is a mount of /@persist of its filesystem, not of the top level",
        ),
        (
            plain.as_path(),
            "is a directory inside a mounted filesystem",
        ),
    ] {
        for args in [&["reset"][..], &["ls"], &["gc"]] {
            let out = fake.run_at(&fs, dir, args);
            results.push((
                dir.to_path_buf(),
                args,
                want,
                out.status.code(),
                stderr(&out),
            ));
        }
    }
    common::check(Command::new("umount").arg(&px));
    for (dir, args, want, code, err) in results {
        assert_eq!(code, Some(2), "{args:?} {}: {err}", dir.display());
        assert!(
            err.contains(&format!("--mounted {}: {want}", dir.display())),
            "{args:?}: {err}"
        );
    }
    assert_eq!(fake.calls(&fs), Vec::<String>::new());
    assert_eq!(fs.subvolume_paths(), ["@persist"]);
}
