//! The bcachefs backend, as far as this host can show it: bcachefs cannot be mounted on its
//! kernel (it left mainline in 6.18), and imperm needs no `bcachefs` program to stand in
//! for. What runs here is what needs no bcachefs: a top level that is not bcachefs is
//! refused before anything is done, and the subvolume ioctls' own answer on another
//! filesystem (ENOTTY) comes back as one line naming the path. The backend on a real
//! bcachefs is proven in a VM (`tests/vm/scenarios/bcachefs-ioctls.sh`).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use imperm::filesystem::backend::{Backend, Bcachefs, Kind};
use imperm::filesystem::toplevel::TopLevel;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn imperm(root: &Path, mounted: &Path, args: &[&str]) -> Output {
    common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env(imperm::commands::NOW_ENV, "2026-01-15T06:30:00Z")
            .arg("--root")
            .arg(root)
            .args(args)
            .args(["--fs", "bcachefs", "--mounted"])
            .arg(mounted),
    )
}

/// `--fs bcachefs --mounted DIR` on a filesystem that is not bcachefs (here a btrfs, with
/// subvolumes a careless run could touch) is refused by every command that touches
/// subvolumes, before anything is written: before this check, `reset` wrote its state
/// file into the snapshot directory and only then failed on the first subvolume call.
#[test]
fn a_top_level_that_is_not_bcachefs_is_refused_before_anything_is_done() {
    let Some(fs) = common::btrfs("bcachefs_not_bcachefs") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/etc/machine-id", "abc\n");
    fs.subvolume("@snapshots");
    fs.snapshot("@root", "@snapshots/20250101T000000Z", true);
    fs::create_dir(fs.path("plain")).unwrap();
    let before = (fs.subvolumes(), fs.tree(""));
    let top = fs.top().display().to_string();
    for args in [
        &["reset"][..],
        &["ls"],
        &["gc"],
        &["gc", "--dry-run"],
        &["diff", "--walk", "--against", "20250101T000000Z"],
        &["restore", "/etc/machine-id"],
    ] {
        let out = imperm(fs.scratch(), fs.top(), args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("--mounted {top}: is not on bcachefs")),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    assert_eq!((fs.subvolumes(), fs.tree("")), before);
}

/// The same for a directory inside a mounted filesystem that is no filesystem's top level
/// at all, on the host's own filesystem (no loop device needed).
#[test]
fn a_plain_directory_as_the_bcachefs_top_level_is_refused() {
    let dir = tempfile::TempDir::new().unwrap();
    let top = dir.path().join("top");
    fs::create_dir(&top).unwrap();
    let out = imperm(dir.path(), &top, &["reset"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("--mounted {}: is not on bcachefs", top.display())),
        "{err}"
    );
    assert_eq!(fs::read_dir(&top).unwrap().count(), 0, "nothing created");
}

/// What the kernel answers to bcachefs's subvolume ioctls on another filesystem: ENOTTY
/// (checked here on ext4 or tmpfs and on btrfs, whatever holds the temporary directory),
/// given back with the path and what it means, the errno kept for callers that judge it.
#[test]
fn the_subvolume_ioctls_on_another_filesystem_say_enotty_with_the_path() {
    let dir = tempfile::TempDir::new().unwrap();
    let top = TopLevel::existing(dir.path()).unwrap();
    let bcachefs = Bcachefs;
    let e = bcachefs.create(&top, Path::new("new")).unwrap_err();
    assert_eq!(
        imperm::filesystem::backend::errno(&e.source),
        Some(libc::ENOTTY)
    );
    assert_eq!(
        e.to_string(),
        "create subvolume new: not a bcachefs filesystem, or a kernel without bcachefs's subvolume ioctls (ENOTTY)"
    );
    assert!(!dir.path().join("new").exists());

    let Some(fs) = common::btrfs("bcachefs_enotty") else {
        return;
    };
    // btrfs reports statx's subvolume ids too, so its subvolumes get as far as the ioctls.
    fs.subvolume("@root");
    fs.subvolume("@snapshots");
    let top = TopLevel::existing(fs.top()).unwrap();
    assert_eq!(
        bcachefs.kind(&top, Path::new("@root")).unwrap(),
        Kind::Subvolume
    );
    let before = fs.subvolumes();
    let e = bcachefs
        .snapshot(
            &top,
            Path::new("@root"),
            Path::new("@snapshots/20260115T063000Z"),
            true,
        )
        .unwrap_err();
    assert_eq!(
        imperm::filesystem::backend::errno(&e.source),
        Some(libc::ENOTTY)
    );
    assert_eq!(
        e.to_string(),
        "snapshot @root to @snapshots/20260115T063000Z: not a bcachefs filesystem, or a kernel without bcachefs's subvolume ioctls (ENOTTY)"
    );
    let e = bcachefs.delete(&top, Path::new("@root")).unwrap_err();
    assert_eq!(
        imperm::filesystem::backend::errno(&e.source),
        Some(libc::ENOTTY)
    );
    assert!(e.to_string().starts_with("delete subvolume @root: "), "{e}");
    assert_eq!(fs.subvolumes(), before);
}

/// A symlink anywhere on the way, at the name or in a parent, is never handed to an
/// ioctl: it is refused as a symlink before the kernel is asked (which would give ENOTTY
/// here, and on bcachefs follow it for a snapshot's source or a parent directory).
#[test]
fn symlinks_at_every_name_the_backend_touches_are_refused_before_any_ioctl() {
    let Some(fs) = common::btrfs("bcachefs_symlinks") else {
        return;
    };
    fs.subvolume("@precious");
    fs.write("@precious/data", "keep\n");
    fs::create_dir(fs.path("snaps")).unwrap();
    std::os::unix::fs::symlink("@precious", fs.path("@root")).unwrap();
    std::os::unix::fs::symlink("@precious", fs.path("link")).unwrap();
    std::os::unix::fs::symlink("snaps", fs.path("snaplink")).unwrap();
    let top = TopLevel::existing(fs.top()).unwrap();
    let b = Bcachefs;
    let before = fs.subvolumes();
    let p = Path::new;
    for (what, e) in [
        ("delete", b.delete(&top, p("@root")).unwrap_err()),
        ("delete in", b.delete(&top, p("link/x")).unwrap_err()),
        (
            "snapshot from",
            b.snapshot(&top, p("@root"), p("snaps/a"), true)
                .unwrap_err(),
        ),
        (
            "snapshot into",
            b.snapshot(&top, p("@precious"), p("snaplink/a"), true)
                .unwrap_err(),
        ),
        ("create in", b.create(&top, p("link/new")).unwrap_err()),
        ("create at", b.create(&top, p("link")).unwrap_err()),
    ] {
        let text = e.to_string();
        assert_ne!(
            imperm::filesystem::backend::errno(&e.source),
            Some(libc::ENOTTY),
            "{what}: reached the ioctl: {text}"
        );
        assert!(text.contains("symlink"), "{what}: {text}");
    }
    assert_eq!(fs.subvolumes(), before);
    assert_eq!(fs.read("@precious/data"), "keep\n");
}
