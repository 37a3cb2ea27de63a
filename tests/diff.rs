//! `imperm diff` on real btrfs (loop devices made by the tests): one set of edits with every
//! kind of change, through the generation search and through the walk, which must agree;
//! odd names; and `--against` an old root a reset kept.

mod common;

use std::fs;
use std::path::Path;
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
    for (rel, content) in [
        ("etc/keep.conf", "keep"),
        ("etc/gone.conf", "gone"),
        ("etc/moveme.conf", "move"),
        ("etc/chmodme.conf", "chmod"),
        ("etc/chownme.conf", "chown"),
        ("etc/xattrme.conf", "xattr"),
        ("etc/editme.conf", "v1"),
        ("var/lib/gonedir/a", "a"),
        ("var/lib/gonedir/sub/b", "b"),
        ("var/lib/renamedir/x", "x"),
        ("var/lib/samesize/db", "aaaa"),
        ("var/lib/typechange", "file"),
        ("var/lib/linked/orig", "one inode"),
        ("var/lib/swapdir/f", "f"),
        ("var/lib/swapdir/g", "g"),
        ("var/log/persisted.log", "log"),
    ] {
        fs.write(&format!("@root/{rel}"), content);
    }
    std::os::unix::fs::symlink("a", fs.path("@root/etc/link")).unwrap();
}

fn sh(cmd: &str, args: &[&std::path::Path]) {
    common::check(Command::new(cmd).args(args));
}

/// After the baseline: one edit of every kind there is.
fn change_everything(fs: &LoopBtrfs) {
    use std::os::unix::fs::PermissionsExt;
    let p = |rel: &str| fs.path(&format!("@root/{rel}"));
    // Additions: a file, a directory with a file, an empty file, an empty directory, a
    // symlink, a hard link.
    fs.write("@root/var/lib/newsvc/state.db", "new state");
    fs.write("@root/etc/empty.conf", "");
    fs::create_dir(p("var/lib/emptydir")).unwrap();
    std::os::unix::fs::symlink("/nix/store/abc-x/x", p("etc/newlink")).unwrap();
    fs::hard_link(p("var/lib/linked/orig"), p("var/lib/linked/second")).unwrap();
    // Removals: a file, a directory tree.
    fs::remove_file(p("etc/gone.conf")).unwrap();
    fs::remove_dir_all(p("var/lib/gonedir")).unwrap();
    // Renames: a file, a directory.
    fs::rename(p("etc/moveme.conf"), p("etc/moved.conf")).unwrap();
    fs::rename(p("var/lib/renamedir"), p("var/lib/renamed")).unwrap();
    // Metadata: chmod, chown, an extended attribute.
    fs::set_permissions(p("etc/chmodme.conf"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(p("etc/chownme.conf"), Some(1000), Some(100)).unwrap();
    sh(
        "setfattr",
        &[
            "-n".as_ref(),
            "user.imperm".as_ref(),
            "-v".as_ref(),
            "1".as_ref(),
            &p("etc/xattrme.conf"),
        ],
    );
    // Content with the same size and the old mtime put back (`touch -r`).
    let db = p("var/lib/samesize/db");
    let mtime = fs::metadata(&db).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&db, "bbbb").unwrap();
    fs::File::options()
        .write(true)
        .open(&db)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // A symlink retargeted (`ln -sfn` replaces it by a new one).
    sh("ln", &["-sfn".as_ref(), "b".as_ref(), &p("etc/link")]);
    // Replaced by rename-over, as editors save.
    fs.write("@root/etc/.editme.conf.tmp", "v2");
    fs::rename(p("etc/.editme.conf.tmp"), p("etc/editme.conf")).unwrap();
    // A file that became a directory.
    fs::remove_file(p("var/lib/typechange")).unwrap();
    fs::create_dir(p("var/lib/typechange")).unwrap();
    // A directory moved away, a file in it removed and one changed, and a symlink out of
    // the tree put in its place (which neither method may follow).
    fs::rename(p("var/lib/swapdir"), p("var/lib/swapped")).unwrap();
    fs::remove_file(p("var/lib/swapped/g")).unwrap();
    fs.write("@root/var/lib/swapped/f", "f, changed");
    std::os::unix::fs::symlink("/etc", p("var/lib/swapdir")).unwrap();
    // A nested subvolume (systemd makes /var/lib/machines one): a reset deletes it with
    // the root, so it is reported like a directory made since.
    subvolume(fs, "@root/var/lib/machines");
    fs.write("@root/var/lib/machines/inside", "x");
    // Persisted: never reported.
    fs.write("@root/var/log/persisted.log", "log, then more");
}

/// Every kind of change, as both methods must report it.
const EVERY_CHANGE: &[&str] = &[
    "changed /etc/chmodme.conf [mode]",
    "changed /etc/chownme.conf [owner]",
    "changed /etc/editme.conf [content]",
    "added /etc/empty.conf",
    "removed /etc/gone.conf",
    "changed /etc/link [target]",
    "renamed /etc/moved.conf from /etc/moveme.conf",
    "added /etc/newlink",
    "changed /etc/xattrme.conf [xattr]",
    "added /var/lib/emptydir",
    "removed /var/lib/gonedir",
    "removed /var/lib/gonedir/a",
    "removed /var/lib/gonedir/sub",
    "removed /var/lib/gonedir/sub/b",
    "added /var/lib/linked/second",
    "added /var/lib/machines",
    "added /var/lib/machines/inside",
    "added /var/lib/newsvc",
    "added /var/lib/newsvc/state.db",
    "renamed /var/lib/renamed from /var/lib/renamedir",
    "changed /var/lib/samesize/db [content]",
    "changed /var/lib/swapdir [type]",
    "removed /var/lib/swapdir/g",
    "renamed /var/lib/swapped from /var/lib/swapdir",
    "changed /var/lib/swapped/f [content]",
    "changed /var/lib/typechange [type]",
];

/// One set of edits covering every kind of change, through the generation search and
/// through the walk: both report exactly the same changes and suggestions.
#[test]
fn both_methods_report_every_kind_of_change_alike() {
    let Some(fs) = btrfs("diff_every_change") else {
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
    let search = json(&imperm(&fs, &["diff", "--format", "json"]));
    assert_eq!(search["method"], "btrfs-generation");
    let walk = json(&imperm(&fs, &["diff", "--walk", "--format", "json"]));
    assert_eq!(walk["method"], "walk");
    assert_eq!(changes(&search), EVERY_CHANGE, "generation search");
    assert_eq!(changes(&walk), EVERY_CHANGE, "walk");
    assert_eq!(search["changes"], walk["changes"]);
    assert_eq!(search["suggestions"], walk["suggestions"]);
    let persist: Vec<&str> = search["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] == "persist")
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    // A renamed service directory is state at a path that is not persisted either.
    assert_eq!(
        persist,
        [
            "/var/lib/linked",
            "/var/lib/newsvc",
            "/var/lib/renamed",
            "/var/lib/samesize",
            "/var/lib/swapdir",
            "/var/lib/swapped"
        ]
    );
    let leftovers: Vec<String> = fs::read_dir(fs.path("@snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, [".baseline"], "no temporary snapshot is left");
}

/// Names that are not UTF-8 or hold a newline, through both methods and every format.
#[test]
fn odd_names_through_both_methods_and_every_format() {
    use std::os::unix::ffi::OsStrExt;
    let Some(fs) = btrfs("diff_odd_names") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/etc/keep.conf", "keep");
    fs::create_dir_all(fs.path("@root/var/lib")).unwrap();
    assert!(imperm(&fs, &["baseline"]).status.success());
    for name in [&b"a\xff\xfeb"[..], b"new\nline"] {
        let dir = fs
            .path("@root/var/lib")
            .join(std::ffi::OsStr::from_bytes(name));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("db"), "x").unwrap();
    }
    let want = [
        "added /var/lib/a\\xff\\xfeb",
        "added /var/lib/a\\xff\\xfeb/db",
        "added /var/lib/new\\x0aline",
        "added /var/lib/new\\x0aline/db",
    ];
    for method in [&[][..], &["--walk"][..]] {
        let mut args = vec!["diff", "--format", "json"];
        args.extend(method);
        let v = json(&imperm(&fs, &args));
        assert_eq!(changes(&v), want, "{method:?}");

        let mut args = vec!["diff", "--color", "never"];
        args.extend(method);
        let out = imperm(&fs, &args);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().take(4).collect();
        assert_eq!(
            lines,
            [
                "+ /var/lib/a\\xff\\xfeb",
                "+ /var/lib/a\\xff\\xfeb/db",
                "+ /var/lib/new\\x0aline",
                "+ /var/lib/new\\x0aline/db",
            ],
            "{text}"
        );

        let mut args = vec!["diff", "--format", "nix"];
        args.extend(method);
        let out = imperm(&fs, &args);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        // A control character is left out, as a name that is not UTF-8 is: imperm's own
        // configuration refuses it, so the host's config.toml would stop loading.
        assert!(
            text.lines().any(|l| l.starts_with("# ")
                && l.contains("/var/lib/new\\x0aline")
                && l.contains("control character")),
            "{text}"
        );
        assert!(!text.contains('\u{fffd}'), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("# ") && l.contains("/var/lib/a\\xff\\xfeb")),
            "{text}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("/var/lib/a\\xff\\xfeb"),
            "a warning on stderr"
        );
    }
}

/// Paths far longer than PATH_MAX (a chain of long names added after the baseline, and one
/// changed at the bottom of an old chain): both methods name them whole and agree.
#[test]
fn deep_paths_through_both_methods() {
    use rustix::fs::{Mode, OFlags};
    let Some(fs) = btrfs("diff_deep") else {
        return;
    };
    fs.subvolume("@root");
    let name = "d".repeat(200);
    let chain = |base: &str, depth: usize, leaf: &str, content: &[u8]| {
        let path = fs.path(base);
        fs::create_dir_all(&path).unwrap();
        let mut fd =
            rustix::fs::open(&path, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
        for _ in 0..depth {
            match rustix::fs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => panic!("{e}"),
            }
            fd = rustix::fs::openat(
                &fd,
                name.as_str(),
                OFlags::DIRECTORY | OFlags::RDONLY,
                Mode::empty(),
            )
            .unwrap();
        }
        let file = rustix::fs::openat(
            &fd,
            leaf,
            OFlags::CREATE | OFlags::WRONLY | OFlags::TRUNC,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        rustix::io::write(&file, content).unwrap();
    };
    chain("@root/var/lib/old", 40, "db", b"one");
    assert!(imperm(&fs, &["baseline"]).status.success());
    chain("@root/var/lib/old", 40, "db", b"two!");
    chain("@root/var/lib/new", 30, "db", b"new");
    let search = json(&imperm(&fs, &["diff", "--format", "json"]));
    assert_eq!(search["method"], "btrfs-generation");
    let walk = json(&imperm(&fs, &["diff", "--walk", "--format", "json"]));
    assert_eq!(search["changes"], walk["changes"]);
    let lines = changes(&search);
    assert_eq!(lines.len(), 1 + 1 + 30 + 1, "{lines:?}");
    let deep = format!("/{name}").repeat(40);
    assert_eq!(lines[0], "added /var/lib/new");
    assert!(lines.contains(&format!("changed /var/lib/old{deep}/db [content]")));
    assert!(lines.iter().all(|l| l.len() < 12_000));
    assert!(lines.iter().any(|l| l.len() > 8_000), "past PATH_MAX");
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
    fs.write("@root/etc/sudoers", "old!");
    fs.write("@root/etc/same.conf", "same");
    let out = imperm(&fs, &["reset"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs.write("@root/var/lib/fresh/x", "new this boot");
    // Made anew with the old size and mtime: one differs in content, one does not. (Inode
    // numbers and ctimes of a fresh root say nothing about the old one.)
    for (rel, content) in [("etc/sudoers", "new!"), ("etc/same.conf", "same")] {
        fs.write(&format!("@root/{rel}"), content);
        let old = fs::metadata(fs.path(&format!("@snapshots/20260115T063000Z/{rel}")))
            .unwrap()
            .modified()
            .unwrap();
        fs::File::options()
            .write(true)
            .open(fs.path(&format!("@root/{rel}")))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
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
            "changed /etc/sudoers [content]",
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
        assert!(
            !lines.iter().any(|l| l.contains("same.conf")),
            "the same content: {lines:?}"
        );
        let forgejo = v["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["path"] == "/var/lib/forgejo")
            .unwrap();
        assert_eq!(
            (&forgejo["files"], &forgejo["bytes"]),
            (&1.into(), &5.into()),
            "counted in the old root, where the files are"
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

/// Both methods' changes, which must be the same, as sorted lines.
fn both_methods(fs: &LoopBtrfs) -> (Value, Value, Vec<String>) {
    both_methods_at(fs, &fs.path("@root"))
}

/// The same, with `--root ROOT`.
fn both_methods_at(fs: &LoopBtrfs, root: &std::path::Path) -> (Value, Value, Vec<String>) {
    let search = json(&imperm_at(fs, root, &["diff", "--format", "json"]));
    assert_eq!(search["method"], "btrfs-generation", "{search}");
    let walk = json(&imperm_at(
        fs,
        root,
        &["diff", "--walk", "--format", "json"],
    ));
    assert_eq!(walk["method"], "walk");
    let mut lines = changes(&search);
    let mut walked = changes(&walk);
    lines.sort();
    walked.sort();
    assert_eq!(lines, walked, "the generation search and the walk disagree");
    assert_eq!(search["suggestions"], walk["suggestions"]);
    (search, walk, lines)
}

/// A subvolume at `rel`, its parent directories made first.
fn subvolume(fs: &LoopBtrfs, rel: &str) {
    fs::create_dir_all(fs.path(rel).parent().unwrap()).unwrap();
    fs.subvolume(rel);
}

fn sorted(lines: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.sort();
    out
}

/// A subvolume nested in the root is wiped by a reset like the rest of the root: changes
/// in one that existed at the baseline (also nested twice), in one made after it, one
/// deleted and one renamed are reported by both methods alike, and `check`/`audit` walk
/// them instead of skipping them.
#[test]
fn nested_subvolumes_are_part_of_the_root_in_both_methods() {
    let Some(fs) = btrfs("diff_nested_subvolumes") else {
        return;
    };
    fs.subvolume("@root");
    fs::create_dir_all(fs.path("@root/srv/sub")).unwrap();
    subvolume(&fs, "@root/var/lib/machines");
    fs.write("@root/var/lib/machines/box/var/db", "aaaa");
    fs.write("@root/var/lib/machines/box/etc/hostname", "box");
    fs.write("@root/var/lib/machines/gone", "gone");
    subvolume(&fs, "@root/var/lib/machines/inner");
    fs.write("@root/var/lib/machines/inner/f", "one");
    subvolume(&fs, "@root/var/lib/portables");
    fs.write("@root/var/lib/portables/p.raw", "image");
    subvolume(&fs, "@root/var/lib/tomove");
    fs.write("@root/var/lib/tomove/keep", "keep");
    let out = imperm(&fs, &["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = |rel: &str| fs.path(&format!("@root/{rel}"));
    fs.write("@root/var/lib/machines/box/var/db", "bbbbbb");
    fs.write("@root/var/lib/machines/box/new", "new");
    fs::remove_file(p("var/lib/machines/gone")).unwrap();
    fs::rename(
        p("var/lib/machines/box/etc/hostname"),
        p("var/lib/machines/box/etc/hostname2"),
    )
    .unwrap();
    fs.write("@root/var/lib/machines/inner/f", "two!");
    common::check(
        Command::new("btrfs")
            .args(["-q", "subvolume", "delete"])
            .arg(p("var/lib/portables")),
    );
    subvolume(&fs, "@root/srv/sub/newsub");
    fs.write("@root/srv/sub/newsub/f", "x");
    fs::rename(p("var/lib/tomove"), p("var/lib/moved")).unwrap();
    let (search, _, lines) = both_methods(&fs);
    assert_eq!(
        lines,
        sorted(&[
            "added /srv/sub/newsub",
            "added /srv/sub/newsub/f",
            "added /var/lib/machines/box/new",
            "changed /var/lib/machines/box/var/db [content]",
            "renamed /var/lib/machines/box/etc/hostname2 from /var/lib/machines/box/etc/hostname",
            "removed /var/lib/machines/gone",
            "changed /var/lib/machines/inner/f [content]",
            "renamed /var/lib/moved from /var/lib/tomove",
            "removed /var/lib/portables",
            "removed /var/lib/portables/p.raw",
        ]),
        "{search}"
    );
    let units: Vec<(String, String)> = common::path_verdicts(&search);
    assert!(
        units.iter().any(|(p, _)| p == "/srv/sub"),
        "the new subvolume's state is suggested: {units:?}"
    );
    assert!(
        units.iter().any(|(p, _)| p == "/var/lib/machines"),
        "{units:?}"
    );
    // `check` walks nested subvolumes (a reset deletes them with the root) and names them.
    let out = common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(fs.path("@root"))
            .args(["check", "--format", "json"]),
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let skipped = v["skipped"].as_array().unwrap();
    assert!(skipped.is_empty(), "{v}");
    let sub = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/srv/sub")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!((&sub["files"], &sub["bytes"]), (&1.into(), &1.into()));
    assert_eq!(
        v["subvolumes"],
        serde_json::json!([
            "/srv/sub/newsub",
            "/var/lib/machines",
            "/var/lib/machines/inner",
            "/var/lib/moved"
        ]),
        "{v}"
    );
}

/// `diff --against` an old root whose nested subvolumes the reset snapshotted in place
/// (read-only): what they held is part of what the reset wiped.
#[test]
fn diff_against_an_old_root_includes_its_nested_subvolumes() {
    let Some(fs) = btrfs("diff_against_nested") else {
        return;
    };
    fs.subvolume("@root");
    subvolume(&fs, "@root/var/lib/machines");
    fs.write("@root/var/lib/machines/box/os", "os");
    subvolume(&fs, "@root/var/lib/machines/inner");
    fs.write("@root/var/lib/machines/inner/f", "f!");
    fs.write("@root/var/lib/plain/x", "x");
    let out = imperm(&fs, &["reset"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs.is_readonly("@snapshots/20260115T063000Z/var/lib/machines/inner"));
    for extra in [&[][..], &["--walk"][..]] {
        let mut args = vec!["diff", "--against", "20260115T063000Z", "--format", "json"];
        args.extend(extra);
        let v = json(&imperm(&fs, &args));
        let lines = changes(&v);
        for want in [
            "removed /var/lib/machines",
            "removed /var/lib/machines/box/os",
            "removed /var/lib/machines/inner",
            "removed /var/lib/machines/inner/f",
            "removed /var/lib/plain/x",
        ] {
            assert!(
                lines.contains(&want.to_string()),
                "{extra:?}: {want} in {lines:?}"
            );
        }
        let machines = v["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["path"] == "/var/lib/machines")
            .unwrap_or_else(|| panic!("{v}"));
        assert_eq!(
            (&machines["files"], &machines["bytes"]),
            (&2.into(), &4.into())
        );
    }
}

/// Counts and kinds of change where the trial found them wrong: a directory renamed with a
/// file changed in it counts that file once; hard links relinked to the same count, and an
/// access time set alone, are no content change; content rewritten behind a put-back
/// mtime still is.
#[test]
fn no_double_counts_and_no_content_change_where_none_was_made() {
    let Some(fs) = btrfs("diff_counts_and_ctime") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/srv/dirmv/inner/z", "zzz");
    fs.write("@root/srv2/h2/a", "linked");
    fs::hard_link(fs.path("@root/srv2/h2/a"), fs.path("@root/srv2/h2/b")).unwrap();
    fs.write("@root/srv2/atime", "read me");
    fs.write("@root/srv2/rewritten", "aaaa");
    assert!(imperm(&fs, &["baseline"]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let p = |rel: &str| fs.path(&format!("@root/{rel}"));
    fs::rename(p("srv/dirmv"), p("srv/dirmv2")).unwrap();
    fs.write("@root/srv/dirmv2/inner/z", "changed\n");
    fs::hard_link(p("srv2/h2/a"), p("srv2/h2/c")).unwrap();
    fs::remove_file(p("srv2/h2/b")).unwrap();
    common::check(Command::new("touch").arg("-a").arg(p("srv2/atime")));
    let db = p("srv2/rewritten");
    let mtime = fs::metadata(&db).unwrap().modified().unwrap();
    fs::write(&db, "bbbb").unwrap();
    fs::File::options()
        .write(true)
        .open(&db)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (search, _, lines) = both_methods(&fs);
    assert_eq!(
        lines,
        sorted(&[
            "renamed /srv/dirmv2 from /srv/dirmv",
            "changed /srv/dirmv2/inner/z [content]",
            "renamed /srv2/h2/c from /srv2/h2/b",
            "changed /srv2/rewritten [content]",
        ]),
        "{search}"
    );
    let dirmv = search["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/srv/dirmv2")
        .unwrap_or_else(|| panic!("{search}"));
    assert_eq!(
        (&dirmv["files"], &dirmv["bytes"]),
        (&1.into(), &8.into()),
        "{dirmv}"
    );
}

/// `imperm --root ROOT ARGS --fs btrfs --mounted TOP`.
fn imperm_at(fs: &LoopBtrfs, root: &std::path::Path, args: &[&str]) -> Output {
    common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env(imperm::commands::NOW_ENV, "2026-01-15T06:30:00Z")
            .arg("--root")
            .arg(root)
            .args(args)
            .args(["--fs", "btrfs", "--mounted"])
            .arg(fs.top()),
    )
}

/// The uuid of a subvolume (btrfs-progs), to tell one `.baseline` from another.
fn uuid_of(fs: &LoopBtrfs, rel: &str) -> String {
    let out = common::check(
        Command::new("btrfs")
            .args(["subvolume", "show"])
            .arg(fs.path(rel)),
    );
    out.lines()
        .find_map(|l| l.trim().strip_prefix("UUID:"))
        .unwrap_or_else(|| panic!("{out}"))
        .trim()
        .to_string()
}

fn notes(v: &Value) -> Vec<String> {
    v["notes"]
        .as_array()
        .unwrap_or_else(|| panic!("no notes: {v}"))
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// `--root DIR` where DIR is not the root subvolume (here a writable snapshot of it, as
/// `snapshots mount` would show one): `baseline` takes no snapshot of the root subvolume
/// and leaves the running system's `.baseline` alone, and `diff` walks DIR instead of
/// searching the root subvolume's history, saying so.
#[test]
fn a_root_that_is_not_the_root_subvolume_gets_no_snapshot_and_is_walked() {
    let Some(fs) = btrfs("diff_root_elsewhere") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/srv/other/o", "o");
    let out = imperm(&fs, &["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = uuid_of(&fs, "@snapshots/.baseline");
    fs.snapshot("@root", "@mnt", false);
    let other = fs.path("@mnt");
    let out = imperm_at(&fs, &other, &["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("no snapshot: --root ")
            && said.contains(" is not ")
            && said.contains("@root"),
        "{said}"
    );
    assert_eq!(
        uuid_of(&fs, "@snapshots/.baseline"),
        live,
        "the live .baseline was replaced"
    );
    fs.write("@mnt/srv/other/newz", "z");
    fs.write("@root/srv/wrongtree", "w");
    for walk in [false, true] {
        let mut args = vec!["diff", "--format", "json"];
        if walk {
            args.push("--walk");
        }
        let v = json(&imperm_at(&fs, &other, &args));
        assert_eq!(changes(&v), ["added /srv/other/newz"], "{v}");
        assert_eq!(v["method"], "walk");
    }
    // The live root still pairs with its own, untouched baseline.
    let (_, _, lines) = both_methods(&fs);
    assert_eq!(lines, ["added /srv/wrongtree"]);
    // A manifest the live root got from elsewhere (copied from the other tree, which
    // named no snapshot) is walked too.
    fs::copy(
        fs.path("@mnt/run/imperm/baseline"),
        fs.path("@root/run/imperm/baseline"),
    )
    .unwrap();
    let v = json(&imperm(&fs, &["diff", "--format", "json"]));
    assert_eq!(v["method"], "walk", "{v}");
}

/// The manifest and `.baseline` are of one `baseline` run, or not paired: with the lock
/// held by another imperm (no new snapshot) and with a run killed right after its
/// snapshot (no new manifest), `diff` walks with the manifest there is, says so, and
/// both methods agree.
#[test]
fn a_manifest_and_a_baseline_snapshot_of_different_runs_are_not_paired() {
    let Some(fs) = btrfs("diff_baseline_pair") else {
        return;
    };
    fs.subvolume("@root");
    for i in 0..5 {
        fs.write(&format!("@root/srv/chg{i}"), "c");
    }
    let out = imperm(&fs, &["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..5 {
        fs::remove_file(fs.path(&format!("@root/srv/chg{i}"))).unwrap();
    }
    fs.write("@root/srv/afterA", "new");
    // Another imperm holds the lock: the manifest is new, `.baseline` the old one.
    let lock = common::HeldLock::new(fs.top());
    let out = imperm(&fs, &["baseline"]);
    drop(lock);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no snapshot: "));
    let search = json(&imperm(&fs, &["diff", "--format", "json"]));
    assert_eq!(search["method"], "walk", "{search}");
    assert!(changes(&search).is_empty(), "{search}");
    // A complete run pairs them again.
    let out = imperm(&fs, &["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("read-only snapshot: "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    fs.write("@root/srv/afterB", "new");
    let (_, _, lines) = both_methods(&fs);
    assert_eq!(lines, ["added /srv/afterB"]);
    // Killed after its snapshot, before its manifest: the new `.baseline` is not used with
    // the old manifest.
    let killed = common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .env("IMPERM_FAILPOINT", "baseline-snapshot-taken")
            .arg("--root")
            .arg(fs.path("@root"))
            .args(["baseline", "--fs", "btrfs", "--mounted"])
            .arg(fs.top()),
    );
    assert!(!killed.status.success());
    assert!(fs.is_readonly("@snapshots/.baseline"));
    let search = json(&imperm(&fs, &["diff", "--format", "json"]));
    assert_eq!(search["method"], "walk", "{search}");
    assert!(
        notes(&search)
            .iter()
            .any(|n| n.contains("is not the snapshot the baseline manifest names")),
        "{search}"
    );
    let walk = json(&imperm(&fs, &["diff", "--walk", "--format", "json"]));
    assert_eq!(changes(&search), changes(&walk));
    assert_eq!(changes(&search), ["added /srv/afterB"]);
}

/// A nested snapshot in `.baseline` taken again after the baseline (a tampered
/// `.baseline`) is not part of it: `diff` walks, and sees what changed in it.
#[test]
fn a_baseline_whose_nested_snapshot_was_taken_again_is_not_used() {
    let Some(fs) = btrfs("diff_nested_retaken") else {
        return;
    };
    fs.subvolume("@root");
    subvolume(&fs, "@root/srv/bigsub");
    fs.write("@root/srv/bigsub/a", "a");
    let out = imperm(&fs, &["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs.write("@root/srv/bigsub/t2", "t2");
    let prop = |v: &str| {
        common::check(
            Command::new("btrfs")
                .args(["property", "set"])
                .arg(fs.path("@snapshots/.baseline"))
                .args(["ro", v]),
        );
    };
    prop("false");
    common::check(
        Command::new("btrfs")
            .args(["-q", "subvolume", "delete"])
            .arg(fs.path("@snapshots/.baseline/srv/bigsub")),
    );
    fs.snapshot("@root/srv/bigsub", "@snapshots/.baseline/srv/bigsub", true);
    prop("true");
    let search = json(&imperm(&fs, &["diff", "--format", "json"]));
    assert_eq!(search["method"], "walk", "{search}");
    assert_eq!(changes(&search), ["added /srv/bigsub/t2"], "{search}");
}

/// A nested subvolume moved into a persisted path is gone from the wiped part, and one
/// moved out of a persisted path is new in it (a reset deletes it): both methods say so
/// alike, as they do for a directory moved the same way.
#[test]
fn a_subvolume_moved_across_a_persisted_path_is_reported_by_both_methods() {
    let Some(fs) = btrfs("diff_subvolume_across_persisted") else {
        return;
    };
    fs.subvolume("@root");
    subvolume(&fs, "@root/srv/m1");
    fs.write("@root/srv/m1/a", "m1");
    subvolume(&fs, "@root/var/log/m2");
    fs.write("@root/var/log/m2/b", "m2");
    let out = imperm(&fs, &["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::rename(fs.path("@root/srv/m1"), fs.path("@root/var/log/m1")).unwrap();
    fs::rename(fs.path("@root/var/log/m2"), fs.path("@root/srv/m2")).unwrap();
    let (search, _, lines) = both_methods(&fs);
    assert_eq!(
        lines,
        sorted(&[
            "added /srv/m2",
            "added /srv/m2/b",
            "removed /srv/m1",
            "removed /srv/m1/a",
        ]),
        "{search}"
    );
    assert!(
        common::path_verdicts(&search)
            .iter()
            .any(|(p, _)| p == "/srv/m2"),
        "{search}"
    );
}

/// tmpfs mounts on paths of a test's root, unmounted (lazily) when dropped, even on panic.
struct Mounts(Vec<std::path::PathBuf>);

impl Mounts {
    fn mount(&mut self, at: std::path::PathBuf) {
        common::check(Command::new("mount").args(["-t", "tmpfs", "none"]).arg(&at));
        self.0.push(at);
    }

    /// The root subvolume mounted on its own (as the running system has it), so that what
    /// is mounted on its paths is not seen through the top level.
    fn live(&mut self, fs: &LoopBtrfs) -> std::path::PathBuf {
        let at = fs.scratch().join("live");
        fs::create_dir_all(&at).unwrap();
        common::check(
            Command::new("mount")
                .args(["-o", "subvol=@root"])
                .arg(&fs.device)
                .arg(&at),
        );
        self.0.push(at.clone());
        at
    }

    fn unmount(&mut self, at: &std::path::Path) {
        common::check(Command::new("umount").arg(at));
        self.0.retain(|m| m != at);
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for at in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(at).status();
        }
    }
}

/// What lies under a mount that is not the root's own is not the root's: mounted after
/// the baseline (over a directory, a nested subvolume, a directory made since), neither
/// method reports what the mount hides as removed nor what was written under it before as
/// added; each such mount is named once, and the rest is still compared.
#[test]
fn what_is_mounted_since_the_baseline_is_not_compared() {
    let Some(fs) = btrfs("diff_mounted_since") else {
        return;
    };
    fs.subvolume("@root");
    fs::create_dir_all(fs.path("@root/srv/mproot")).unwrap();
    fs::create_dir_all(fs.path("@root/srv/s1/mpsub")).unwrap();
    subvolume(&fs, "@root/srv/snapcopy");
    for f in ["a", "b", "c"] {
        fs.write(&format!("@root/srv/snapcopy/{f}"), f);
    }
    let out = imperm(&fs, &["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs.write("@root/srv/mproot/hidden", "h");
    fs.write("@root/srv/s1/mpsub/hidden", "h");
    fs::create_dir(fs.path("@root/srv/mnt2")).unwrap();
    fs.write("@root/srv/real", "r");
    let mut mounts = Mounts(Vec::new());
    let live = mounts.live(&fs);
    for at in ["srv/mproot", "srv/s1/mpsub", "srv/snapcopy", "srv/mnt2"] {
        mounts.mount(live.join(at));
    }
    let (search, walk, lines) = both_methods_at(&fs, &live);
    assert_eq!(lines, ["added /srv/real"], "{search}\n{walk}");
    let want = [
        "/srv/mnt2 mounted since the baseline: not compared",
        "/srv/mproot mounted since the baseline: not compared",
        "/srv/s1/mpsub mounted since the baseline: not compared",
        "/srv/snapcopy mounted since the baseline: not compared",
    ];
    assert_eq!(notes(&search), want);
    assert_eq!(notes(&walk), want);
    drop(mounts);
}

/// The other way: a baseline taken while something was mounted on the root's paths, then
/// unmounted: what comes to light under them is not added.
#[test]
fn what_was_mounted_at_the_baseline_is_not_compared() {
    let Some(fs) = btrfs("diff_unmounted_since") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/srv/mproot/hidden", "h");
    subvolume(&fs, "@root/srv/snapcopy");
    for f in ["a", "b", "c"] {
        fs.write(&format!("@root/srv/snapcopy/{f}"), f);
    }
    let mut mounts = Mounts(Vec::new());
    let live = mounts.live(&fs);
    mounts.mount(live.join("srv/mproot"));
    mounts.mount(live.join("srv/snapcopy"));
    let out = imperm_at(&fs, &live, &["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("read-only snapshot: "));
    fs::write(live.join("srv/mproot/on-tmpfs"), "gone with the mount").unwrap();
    mounts.unmount(&live.join("srv/mproot"));
    mounts.unmount(&live.join("srv/snapcopy"));
    fs.write("@root/srv/real", "r");
    let (search, walk, lines) = both_methods_at(&fs, &live);
    assert_eq!(lines, ["added /srv/real"], "{search}\n{walk}");
    let want = [
        "/srv/mproot unmounted since the baseline: not compared",
        "/srv/snapcopy unmounted since the baseline: not compared",
    ];
    assert_eq!(notes(&search), want);
    assert_eq!(notes(&walk), want);
    // `check` since the same baseline agrees: only /srv/real is new.
    let out = common::run(
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(&live)
            .args(["check", "--format", "json"]),
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let paths: Vec<String> = common::path_verdicts(&v)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(paths, ["/srv/real"], "{v}");
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["/srv/mproot", "/srv/snapcopy"], "{v}");
}

/// A baseline killed while writing its manifest leaves `.baseline.PID.NANOS.tmp`: the
/// next run removes it when that process is gone, and leaves a live one's, and what is
/// not such a file, alone.
#[test]
fn a_killed_baselines_temporary_manifest_is_removed_by_the_next_run() {
    let Some(fs) = btrfs("diff_baseline_leftover") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/run/imperm/.baseline.999999999.1.tmp", "dead");
    let mine = format!("@root/run/imperm/.baseline.{}.2.tmp", std::process::id());
    fs.write(&mine, "alive");
    fs.write("@root/run/imperm/.baseline.999999999.x.tmp", "not ours");
    fs::create_dir_all(fs.path("@root/run/imperm/.baseline.999999998.3.tmp")).unwrap();
    let out = imperm(&fs, &["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !fs.path("@root/run/imperm/.baseline.999999999.1.tmp")
            .exists()
    );
    assert!(fs.path(&mine).exists());
    assert!(
        fs.path("@root/run/imperm/.baseline.999999999.x.tmp")
            .exists()
    );
    assert!(
        fs.path("@root/run/imperm/.baseline.999999998.3.tmp")
            .is_dir()
    );
}

/// Walks leave access times alone. On a host's `relatime` mount (the fixture's top level is
/// mounted noatime), listing a directory wrote its inode, and `baseline` walks right after
/// taking its snapshot: the generation search then found every directory of the root
/// changed since (the 1,000,000-file benchmark went from a quarter of a second to 46 s).
#[test]
fn walks_leave_access_times_alone() {
    let Some(fs) = btrfs("diff_walk_atime") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/srv/a/b/f", "x");
    let mut mounts = Mounts(Vec::new());
    let live = mounts.live(&fs);
    let dirs = [live.join("srv"), live.join("srv/a"), live.join("srv/a/b")];
    // Older than the modification time: relatime writes it at the next read.
    for d in &dirs {
        common::check(
            Command::new("touch")
                .args(["-a", "-d", "2020-01-01"])
                .arg(d),
        );
    }
    let atimes = || -> Vec<std::time::SystemTime> {
        dirs.iter()
            .map(|d| fs::metadata(d).unwrap().accessed().unwrap())
            .collect()
    };
    let mut before = atimes();
    for args in [
        &["baseline"][..],
        &["audit"],
        &["check"],
        &["diff"],
        &["diff", "--walk"],
        &["--", "a change"],
        &["diff"],
        &["diff"],
        &["diff", "--walk"],
    ] {
        if args[0] == "--" {
            // A change the search lists the directory of (and a walk reads) again.
            fs::write(live.join("srv/a/b/g"), "y").unwrap();
            for d in &dirs {
                common::check(
                    Command::new("touch")
                        .args(["-a", "-d", "2020-01-01"])
                        .arg(d),
                );
            }
            before = atimes();
            continue;
        }
        let out = if matches!(args[0], "audit" | "check") {
            common::run(
                Command::new(env!("CARGO_BIN_EXE_imperm"))
                    .arg("--root")
                    .arg(&live)
                    .args(args),
            )
        } else {
            imperm_at(&fs, &live, args)
        };
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(atimes(), before, "{args:?} changed access times");
    }
}

/// Hard links meeting renames (trial 3, finding 8): a name still there under its renamed
/// directory was carried along, and is not reported; only the names that went, came or
/// moved are. By both methods alike, in the root and across a nested subvolume moved.
#[test]
fn linked_names_carried_by_a_renamed_directory_are_not_renamed() {
    let Some(fs) = btrfs("diff_links_carried") else {
        return;
    };
    fs.subvolume("@root");
    let p = |rel: &str| fs.path(&format!("@root/{rel}"));
    let link = |from: &str, to: &str| fs::hard_link(p(from), p(to)).unwrap();
    fs.write("@root/srv/hd/in/f", "A\n");
    link("srv/hd/in/f", "srv/hd/in/hl");
    fs.write("@root/srv/cnt/a/b/f", "three names\n");
    link("srv/cnt/a/b/f", "srv/cnt/a/b/f2");
    link("srv/cnt/a/b/f", "srv/cnt/a/f3");
    fs.write("@root/srv/mv/in/f", "B\n");
    link("srv/mv/in/f", "srv/mv/in/hl");
    subvolume(&fs, "@root/srv/s1");
    subvolume(&fs, "@root/srv/s1/s2");
    subvolume(&fs, "@root/srv/s1/s2/s3");
    fs.write("@root/srv/s1/s2/s3/f", "C\n");
    link("srv/s1/s2/s3/f", "srv/s1/s2/s3/hl");
    assert!(imperm(&fs, &["baseline"]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mv = |from: &str, to: &str| fs::rename(p(from), p(to)).unwrap();
    // One name removed, then its directory renamed.
    fs::remove_file(p("srv/hd/in/f")).unwrap();
    mv("srv/hd/in", "srv/hd/in2");
    // Three names, two directories renamed, the inode written through one of them.
    mv("srv/cnt/a", "srv/cnt/a2");
    fs.write("@root/srv/cnt/a2/b/f", "three names, more\n");
    mv("srv/cnt/a2/b", "srv/cnt/b_out");
    // One name renamed in a directory renamed: the other name's ctime moved with it.
    mv("srv/mv/in", "srv/mv/in2");
    mv("srv/mv/in2/f", "srv/mv/in2/g");
    // One name moved out of a nested subvolume (a copy and a removal, as `mv` does
    // across subvolumes), then the subvolume moved.
    fs::copy(p("srv/s1/s2/s3/f"), p("srv/s1/s2/f_out")).unwrap();
    fs::remove_file(p("srv/s1/s2/s3/f")).unwrap();
    mv("srv/s1/s2/s3", "srv/s1/s3moved");
    let (search, _, lines) = both_methods(&fs);
    assert_eq!(
        lines,
        sorted(&[
            "removed /srv/hd/in/f",
            "renamed /srv/hd/in2 from /srv/hd/in",
            "renamed /srv/cnt/a2 from /srv/cnt/a",
            "renamed /srv/cnt/b_out from /srv/cnt/a/b",
            "changed /srv/cnt/a2/f3 [content]",
            "changed /srv/cnt/b_out/f [content]",
            "changed /srv/cnt/b_out/f2 [content]",
            "renamed /srv/mv/in2 from /srv/mv/in",
            "renamed /srv/mv/in2/g from /srv/mv/in/f",
            "added /srv/s1/s2/f_out",
            "removed /srv/s1/s2/s3/f",
            "renamed /srv/s1/s3moved from /srv/s1/s2/s3",
        ]),
        "{search}"
    );
}

/// A file with several names in one suggestion is one file of its size, as on the disk,
/// by both methods: names added, a directory of them renamed, and two renamed directories
/// holding names of one file in the same unit.
#[test]
fn hard_links_in_a_unit_count_once_in_both_methods() {
    let Some(fs) = btrfs("diff_links_count") else {
        return;
    };
    fs.subvolume("@root");
    let p = |rel: &str| fs.path(&format!("@root/{rel}"));
    let link = |from: &str, to: &str| fs::hard_link(p(from), p(to)).unwrap();
    fs.write("@root/srv/cnt/a/b/f", "fourteen bytes");
    link("srv/cnt/a/b/f", "srv/cnt/a/b/f2");
    link("srv/cnt/a/b/f", "srv/cnt/a/f3");
    assert!(imperm(&fs, &["baseline"]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs.write("@root/srv/new/x", "seven b");
    link("srv/new/x", "srv/new/y");
    link("srv/new/x", "srv/new/z");
    fs.write("@root/srv/new/other", "12");
    fs::rename(p("srv/cnt/a"), p("srv/cnt/a2")).unwrap();
    fs::rename(p("srv/cnt/a2/b"), p("srv/cnt/b_out")).unwrap();
    let (search, _, _) = both_methods(&fs);
    let counts = |path: &str| {
        let s = search["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["path"] == path)
            .unwrap_or_else(|| panic!("no {path} in {search}"));
        (s["files"].clone(), s["bytes"].clone())
    };
    assert_eq!(counts("/srv/new"), (2.into(), 9.into()));
    assert_eq!(counts("/srv/cnt"), (1.into(), 14.into()));
}

/// Many names of one inode, all with the same file name, in directories all renamed: each
/// pairs with itself (and quickly: candidates are looked up by name and directory).
#[test]
fn a_thousand_names_of_one_inode_carried_by_their_directories() {
    let Some(fs) = btrfs("diff_links_many") else {
        return;
    };
    fs.subvolume("@root");
    let p = |rel: &str| fs.path(&format!("@root/{rel}"));
    fs.write("@root/srv/many/d0/f", "one inode\n");
    for i in 1..1000 {
        fs::create_dir(p(&format!("srv/many/d{i}"))).unwrap();
        fs::hard_link(p("srv/many/d0/f"), p(&format!("srv/many/d{i}/f"))).unwrap();
    }
    assert!(imperm(&fs, &["baseline"]).status.success());
    fs::remove_file(p("srv/many/d500/f")).unwrap();
    let mut want = vec!["removed /srv/many/d500/f".to_string()];
    for i in 0..1000 {
        fs::rename(p(&format!("srv/many/d{i}")), p(&format!("srv/many/e{i}"))).unwrap();
        want.push(format!("renamed /srv/many/e{i} from /srv/many/d{i}"));
    }
    want.sort();
    let started = std::time::Instant::now();
    let (search, _, lines) = both_methods(&fs);
    assert_eq!(lines, want);
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    let many = &search["suggestions"][0];
    assert_eq!(
        (&many["path"], &many["files"]),
        (&"/srv/many".into(), &1.into())
    );
}

/// How many tree searches and inode lookups `diff` (by generation) asks of the kernel,
/// counted under strace.
fn searches(fs: &LoopBtrfs, root: &Path) -> usize {
    let trace = fs.scratch().join("diff.strace");
    let out = common::run(
        Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=ioctl", "-o"])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(root)
            .args(["diff", "--format", "json", "--fs", "btrfs", "--mounted"])
            .arg(fs.top()),
    );
    let v = json(&out);
    assert_eq!(v["method"], "btrfs-generation", "{v}");
    fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("BTRFS_IOC_TREE_SEARCH") || l.contains("BTRFS_IOC_INO_LOOKUP"))
        .count()
}

/// The search starts after the baseline snapshot's transaction, which the snapshot holds
/// whole: a tree written in that very transaction (a first boot after an install or a
/// migration, when one commit interval holds all of it) is not read, and the cost follows
/// the changes made since, not the tree. Shown by what `diff` asks of the kernel: a
/// search from the snapshot's transaction itself names every inode of the tree (two tree
/// searches each, over 4,000 here), this one only the changed ones. And nothing is
/// missed: changes made right after the baseline, in the same second, are all found, by
/// both methods alike.
#[test]
fn a_tree_written_in_the_baselines_transaction_is_not_searched() {
    use imperm::filesystem::backend::{Backend, Btrfs};
    use imperm::filesystem::toplevel::TopLevel;
    use std::path::Path;
    const FILES: usize = 2000;
    let Some(first) = btrfs("diff_same_transaction") else {
        return;
    };
    if !common::strace_available("diff_same_transaction") {
        return;
    }
    // The tree written in the snapshot's transaction is this test's premise, not what it
    // proves, and the test cannot hold it: a `sync` from anywhere on the machine (another
    // test, another build) commits every filesystem, this one too, part-way through the
    // writing (seen under load: 1,580 of 2,042 inodes in the snapshot's transaction). So it
    // is checked: a quarter of the files there is enough (a search from that transaction
    // would make over 1,000 tree searches, ten times the bound below), and less is written
    // again on a new filesystem.
    let mut attempt = 0;
    let mut first = Some(first);
    let (fs, same) = loop {
        attempt += 1;
        let fs = first
            .take()
            .unwrap_or_else(|| btrfs("diff_same_transaction").unwrap());
        // No commit for an hour but the one the snapshot makes: the tree and the snapshot
        // share a transaction.
        common::check(
            Command::new("mount")
                .args(["-o", "remount,commit=3600"])
                .arg(fs.top()),
        );
        fs.subvolume("@root");
        let p = |rel: &str| fs.path(&format!("@root/{rel}"));
        for i in 0..FILES {
            fs.write(&format!("@root/srv/t/d{}/f{i}", i % 20), "x");
        }
        for i in 0..20 {
            std::os::unix::fs::symlink("f0", p(&format!("srv/t/d{i}/link"))).unwrap();
            fs::hard_link(p(&format!("srv/t/d{i}/f{i}")), p(&format!("srv/t/d{i}/hl"))).unwrap();
        }
        let out = imperm(&fs, &["baseline"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("read-only snapshot: "),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A search from the snapshot's transaction itself would take every one of these
        // inodes for changed.
        let top = TopLevel::existing(fs.top()).unwrap();
        let taken = Btrfs
            .info(&top, Path::new("@snapshots/.baseline"))
            .unwrap()
            .created
            .unwrap();
        let same = Btrfs
            .changed_inodes(&top, Path::new("@root"), taken)
            .unwrap()
            .iter()
            .filter(|i| i.created == taken)
            .count();
        if same > FILES / 4 {
            break (fs, same);
        }
        assert!(
            attempt < 3,
            "only {same} inodes were made in the snapshot's transaction {taken}, {attempt} times: \
             something commits this filesystem while the tree is written"
        );
        eprintln!(
            "diff_same_transaction: a commit came while the tree was written ({same} inodes \
             in the snapshot's transaction {taken}); again on a new filesystem"
        );
    };
    let p = |rel: &str| fs.path(&format!("@root/{rel}"));
    let (_, _, lines) = both_methods(&fs);
    assert!(lines.is_empty(), "nothing changed since: {lines:?}");
    // Right after, in the same second: a change of every kind.
    fs.write("@root/srv/t/d1/f1", "changed");
    fs.write("@root/srv/t/d2/new", "new");
    fs::remove_file(p("srv/t/d3/f3")).unwrap();
    fs::rename(p("srv/t/d4/f4"), p("srv/t/d5/moved")).unwrap();
    fs::rename(p("srv/t/d6"), p("srv/t/d6moved")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p("srv/t/d7/f7"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(p("srv/t/d8/link")).unwrap();
    std::os::unix::fs::symlink("f1", p("srv/t/d8/link")).unwrap();
    fs::hard_link(p("srv/t/d9/f9"), p("srv/t/d9/hl2")).unwrap();
    let searches = searches(&fs, &fs.path("@root"));
    assert!(
        searches < 100,
        "{searches} tree searches for 10 changes in a tree of {same} inodes"
    );
    let (_, _, lines) = both_methods(&fs);
    assert_eq!(
        lines,
        sorted(&[
            "changed /srv/t/d1/f1 [content]",
            "changed /srv/t/d1/hl [content]",
            "added /srv/t/d2/new",
            "removed /srv/t/d3/f3",
            "renamed /srv/t/d5/moved from /srv/t/d4/f4",
            "renamed /srv/t/d6moved from /srv/t/d6",
            "changed /srv/t/d7/f7 [mode]",
            "changed /srv/t/d7/hl [mode]",
            "changed /srv/t/d8/link [target]",
            "added /srv/t/d9/hl2",
        ]),
    );
}

/// Runs imperm with `args` (after `--root ROOT`), and gives its output with its peak
/// resident memory in KiB, from the kernel's accounting of that one process (`wait4`).
// Reaped by wait4, not by Child::wait, which cannot give its resource usage.
#[allow(clippy::zombie_processes)]
fn imperm_peak(root: &std::path::Path, args: &[&str]) -> (Output, u64) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_imperm"))
        .env(imperm::commands::NOW_ENV, "2026-01-15T06:30:00Z")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).unwrap();
        v
    });
    let mut stderr = Vec::new();
    err.read_to_end(&mut stderr).unwrap();
    let stdout = reader.join().unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it for this child alone (Child::wait
    // is never called, so the pid is reaped once).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    use std::os::unix::process::ExitStatusExt;
    let out = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout,
        stderr,
    };
    (out, usage.ru_maxrss as u64)
}

/// The walk diff holds neither manifest: the manifest is read as the root is walked, both
/// in tree order, so its peak memory does not grow with the tree (it used to hold both
/// whole: 616 MB at 1,000,000 entries). `baseline` writes the manifest as it walks too.
/// Measured on a tree of 20,000 entries, then of 100,000: the same, within a few MiB.
#[test]
fn the_walk_diff_and_the_baseline_do_not_grow_with_the_tree() {
    let Some(fs) = btrfs("diff_memory") else {
        return;
    };
    fs.subvolume("@root");
    let root = fs.path("@root");
    let grow = |from: usize, to: usize| {
        for d in from / 100..to / 100 {
            let dir = root.join(format!("srv/data/d{:03}/e{d}", d % 97));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..99 {
                fs::write(dir.join(format!("f{f}")), "").unwrap();
            }
        }
    };
    let peaks = || {
        let (out, baseline) = imperm_peak(&root, &["baseline"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs.write("@root/srv/data/new", "new");
        let (out, diff) = imperm_peak(&root, &["diff", "--walk", "--format", "json"]);
        let v = json(&out);
        assert_eq!(v["method"], "walk");
        assert_eq!(changes(&v), ["added /srv/data/new"]);
        fs::remove_file(fs.path("@root/srv/data/new")).unwrap();
        (baseline, diff)
    };
    grow(0, 20_000);
    let small = peaks();
    grow(20_000, 100_000);
    let large = peaks();
    // At 100,000 entries both manifests in memory took over 50 MiB more.
    assert!(
        large.0 < small.0 + (4 << 10) && large.1 < small.1 + (4 << 10),
        "peak KiB (baseline, diff --walk): {small:?} at 20,000 entries, {large:?} at 100,000"
    );
}

/// A manifest the walk reads as it goes, damaged or edited: out of tree order (written by
/// hand) it is read whole and gives what the sorted one gives; a path twice (next to each
/// other or far apart), a line cut short, garbage mid-stream, a header line among the
/// entries or a line of 17 MiB is exit 2 with one line naming the file and the line, and
/// nothing on stdout. (A manifest cut at a line's end cannot be told from a shorter one:
/// what it lost shows as added.)
#[test]
fn damaged_or_unsorted_manifests_through_the_streaming_walk() {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path();
    for i in 0..50 {
        let path = root.join(format!("srv/d{}/f{i}", i % 5));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "x").unwrap();
    }
    let run = |args: &[&str]| {
        common::run(
            Command::new(env!("CARGO_BIN_EXE_imperm"))
                .arg("--root")
                .arg(root)
                .args(args),
        )
    };
    assert!(run(&["baseline"]).status.success());
    fs::write(root.join("srv/d1/new"), "new").unwrap();
    fs::remove_file(root.join("srv/d2/f7")).unwrap();
    let manifest = root.join("run/imperm/baseline");
    let good = fs::read(&manifest).unwrap();
    let want = changes(&json(&run(&["diff", "--format", "json"])));
    assert_eq!(want, ["added /srv/d1/new", "removed /srv/d2/f7"]);
    let text = String::from_utf8(good.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let head = 1 + lines[1..].iter().take_while(|l| l.starts_with('#')).count();
    let (header, entries) = lines.split_at(head);
    let with = |entries: &[&str]| format!("{}\n{}\n", header.join("\n"), entries.join("\n"));
    // Reversed: out of order, read whole, the same changes.
    let mut reversed = entries.to_vec();
    reversed.reverse();
    fs::write(&manifest, with(&reversed)).unwrap();
    assert_eq!(changes(&json(&run(&["diff", "--format", "json"]))), want);
    let refused = |content: Vec<u8>, want: &str| {
        fs::write(&manifest, content).unwrap();
        let out = run(&["diff", "--format", "json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(out.stdout.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("run/imperm/baseline: line ") && err.contains(want),
            "{err}"
        );
    };
    let twice = |at: usize| {
        let mut e = entries.to_vec();
        e.insert(at, entries[20]);
        with(&e).into_bytes()
    };
    let dup = format!(
        "{} is listed twice",
        entries[20].split('\t').nth(12).unwrap()
    );
    refused(twice(20), &dup);
    // Far apart, in a manifest out of order: found when it is read whole.
    let mut e = reversed.clone();
    e.insert(3, entries[20]);
    refused(with(&e).into_bytes(), &dup);
    refused(good[..good.len() / 2].to_vec(), "cut short");
    let mut e = entries.to_vec();
    e.insert(25, "f\t644\tgarbage");
    let line = |n: usize| format!("line {}: ", head + n + 1);
    refused(
        with(&e).into_bytes(),
        &format!("{}not a manifest entry (3 fields, not 14)", line(25)),
    );
    let mut e = entries.to_vec();
    e.insert(25, "#mount\t/x");
    refused(
        with(&e).into_bytes(),
        &format!("{}a header line after the entries", line(25)),
    );
    let mut long = with(&entries[..10]).into_bytes();
    long.extend(std::iter::repeat_n(b'x', 17 << 20));
    refused(long, &format!("{}longer than 16 MiB", line(10)));
    // Cut at a line's end: what is gone from it shows as added, nothing worse.
    fs::write(&manifest, with(&entries[..entries.len() - 5])).unwrap();
    let v = json(&run(&["diff", "--format", "json"]));
    assert!(changes(&v).len() > 2, "{v}");
    fs::write(&manifest, &good).unwrap();
    assert_eq!(changes(&json(&run(&["diff", "--format", "json"]))), want);
}

/// A manifest cut inside its last line, where what is left still reads as an entry: in a
/// symlink's target (the walk would keep that target, the link's inode and ctime being
/// the same), or right after a file's path (its empty target field looks complete).
/// imperm ends every line with a newline, so a last line without one is cut short: exit 2
/// naming the file and the line, nothing on stdout, for the walk and for the search
/// (which reads the header alone) when the header itself is cut.
#[test]
fn a_manifest_cut_inside_its_last_line_is_refused() {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("srv/d")).unwrap();
    fs::write(root.join("srv/d/f"), "x").unwrap();
    std::os::unix::fs::symlink("/nix/store/abcdefghijklmnop-target", root.join("srv/zlink"))
        .unwrap();
    let run = |args: &[&str]| {
        common::run(
            Command::new(env!("CARGO_BIN_EXE_imperm"))
                .arg("--root")
                .arg(root)
                .args(args),
        )
    };
    assert!(run(&["baseline"]).status.success());
    let manifest = root.join("run/imperm/baseline");
    let good = fs::read(&manifest).unwrap();
    assert!(good.ends_with(b"\t/nix/store/abcdefghijklmnop-target\n"));
    let lines = good.iter().filter(|&&b| b == b'\n').count();
    let refused = |content: &[u8], line: usize| {
        fs::write(&manifest, content).unwrap();
        let out = run(&["diff", "--format", "json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(out.stdout.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("run/imperm/baseline: line {line}: cut short")),
            "{err}"
        );
    };
    // In the target.
    refused(&good[..good.len() - 8], lines);
    // Right after the tab that ends the path: the line before the link's is a file's.
    let file_line_end = good[..good.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap();
    assert!(good[..file_line_end].ends_with(b"/srv/d/f\t"));
    refused(&good[..file_line_end], lines - 1);
    // Only the header, cut.
    refused(b"imperm-baseline 4\n#no-snap", 2);
    fs::write(&manifest, &good).unwrap();
    assert!(changes(&json(&run(&["diff", "--format", "json"]))).is_empty());
}

/// A manifest path no walk makes (edited by hand): `..`, `.`, an empty component or a
/// trailing `/`. The walk would otherwise pair it with the real path by inode and report
/// a rename from `/srv/x/../d/f2`. Exit 2 naming the file, the line and the path.
#[test]
fn a_manifest_path_that_is_not_canonical_is_refused() {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path();
    for i in 1..=3 {
        fs::create_dir_all(root.join("srv/d")).unwrap();
        fs::write(root.join(format!("srv/d/f{i}")), "x").unwrap();
    }
    let run = |args: &[&str]| {
        common::run(
            Command::new(env!("CARGO_BIN_EXE_imperm"))
                .arg("--root")
                .arg(root)
                .args(args),
        )
    };
    assert!(run(&["baseline"]).status.success());
    let manifest = root.join("run/imperm/baseline");
    let good = fs::read_to_string(&manifest).unwrap();
    let line = 1 + good
        .lines()
        .position(|l| l.contains("\t/srv/d/f2\t"))
        .unwrap();
    for bad in ["/srv/x/../d/f2", "/srv/d/./f2", "/srv/d//f2", "/srv/d/f2/"] {
        fs::write(
            &manifest,
            good.replace("\t/srv/d/f2\t", &format!("\t{bad}\t")),
        )
        .unwrap();
        let out = run(&["diff", "--format", "json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(out.stdout.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("run/imperm/baseline: line {line}: "))
                && err.contains(&format!("the path \"{bad}\" is not canonical")),
            "{err}"
        );
    }
    fs::write(&manifest, &good).unwrap();
    assert!(changes(&json(&run(&["diff", "--format", "json"]))).is_empty());
}

/// The disk full while `baseline` writes its manifest (here a tmpfs of 64 KiB at /run):
/// exit 2 naming the manifest, the last manifest left as it was, no temporary file, and
/// `diff` still compares with the last one.
#[test]
fn a_full_disk_while_writing_the_manifest_leaves_the_last_one() {
    let Some(fs) = btrfs("diff_full_run") else {
        return;
    };
    fs.subvolume("@root");
    fs.write("@root/srv/a", "a");
    fs::create_dir_all(fs.path("@root/run")).unwrap();
    common::check(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(fs.path("@root/run")),
    );
    assert!(imperm(&fs, &["baseline"]).status.success());
    let manifest = fs.path("@root/run/imperm/baseline");
    let before = fs::read(&manifest).unwrap();
    for i in 0..2000 {
        fs.write(&format!("@root/srv/many/f{i}"), "");
    }
    let out = imperm(&fs, &["baseline"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("run/imperm/baseline") && err.contains("No space left on device"),
        "{err}"
    );
    assert_eq!(fs::read(&manifest).unwrap(), before);
    let left: Vec<_> = fs::read_dir(fs.path("@root/run/imperm"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["baseline"]);
    let v = json(&imperm(&fs, &["diff", "--walk", "--format", "json"]));
    assert_eq!(changes(&v).len(), 2001, "{v}");
}

/// What the streaming walk must keep in step with the manifest, through both methods: a
/// directory replaced by a file (its entries gone with it), a file replaced by a
/// directory, names whose escaped form sorts otherwise than their bytes (a newline, a
/// backslash, bytes that are not UTF-8, a name that is a prefix of another), and a comb
/// deeper than the directories the walk keeps open (a subdirectory and a file at each
/// level), changed at the bottom and in the middle.
#[test]
fn a_tree_that_tests_the_walks_order_through_both_methods() {
    use std::os::unix::ffi::OsStrExt;
    let Some(fs) = btrfs("diff_walk_order") else {
        return;
    };
    fs.subvolume("@root");
    let p = |rel: &str| fs.path(&format!("@root/{rel}"));
    fs.write("@root/srv/x/a", "a");
    fs.write("@root/srv/x/b/c", "c");
    fs.write("@root/srv/y", "y");
    let odd = [
        &b"n"[..],
        b"n\n",
        b"n\\",
        b"n\xff",
        b"n-",
        b"n.d",
        b"n0",
        b"n~",
        b"\xc3\xa9",
    ];
    for name in odd {
        let dir = p("srv/odd").join(std::ffi::OsStr::from_bytes(name));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("f"), "x").unwrap();
    }
    let mut comb = String::from("srv/comb");
    for _ in 0..300 {
        comb.push_str("/d");
        fs::create_dir_all(p(&comb)).unwrap();
        fs::write(p(&format!("{comb}/../e")), "e").unwrap();
    }
    assert!(imperm(&fs, &["baseline"]).status.success());
    fs::remove_dir_all(p("srv/x")).unwrap();
    fs.write("@root/srv/x", "now a file");
    fs::remove_file(p("srv/y")).unwrap();
    fs.write("@root/srv/y/inside", "now a directory");
    for name in odd {
        let dir = p("srv/odd").join(std::ffi::OsStr::from_bytes(name));
        fs::write(dir.join("f"), "changed").unwrap();
    }
    fs.write(&format!("@root/{comb}/bottom"), "new");
    let middle: String = "/d".repeat(150);
    fs.write(&format!("@root/srv/comb{middle}/e"), "changed");
    let (_, _, lines) = both_methods(&fs);
    let mut want = vec![
        "changed /srv/x [type]".to_string(),
        "removed /srv/x/a".to_string(),
        "removed /srv/x/b".to_string(),
        "removed /srv/x/b/c".to_string(),
        "changed /srv/y [type]".to_string(),
        "added /srv/y/inside".to_string(),
        format!("added /{comb}/bottom"),
        format!("changed /srv/comb{middle}/e [content]"),
    ];
    for name in odd {
        let path = Path::new("/srv/odd")
            .join(std::ffi::OsStr::from_bytes(name))
            .join("f");
        want.push(format!(
            "changed {} [content]",
            imperm::paths::escape(&path)
        ));
    }
    want.sort();
    assert_eq!(lines, want);
}

/// A comb 600 directories deep with names of 100 bytes (paths up to 60 KB; a subdirectory
/// and then a file at each level, so the walk climbs back to directories it closed):
/// `baseline` and the walk diff stay within a bounded memory (entries are handed between
/// threads in batches bounded by their paths' bytes, not only their number), and the
/// walk and the search agree on a change at the bottom and one in the middle.
#[test]
fn a_deep_comb_of_long_names_in_bounded_memory() {
    use rustix::fs::{Mode, OFlags};
    let Some(fs) = btrfs("diff_deep_comb") else {
        return;
    };
    fs.subvolume("@root");
    let name = "d".repeat(100);
    let base = fs.path("@root/srv/comb");
    fs::create_dir_all(&base).unwrap();
    let open = |fd: &std::os::fd::OwnedFd, name: &str| {
        rustix::fs::openat(fd, name, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap()
    };
    let write = |fd: &std::os::fd::OwnedFd, leaf: &str, content: &[u8]| {
        let file = rustix::fs::openat(
            fd,
            leaf,
            OFlags::CREATE | OFlags::WRONLY | OFlags::TRUNC,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        rustix::io::write(&file, content).unwrap();
    };
    let top =
        || rustix::fs::open(&base, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    let mut fd = top();
    for _ in 0..600 {
        rustix::fs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        write(&fd, "e", b"e");
        fd = open(&fd, &name);
    }
    let root = fs.path("@root");
    let mut args = vec!["baseline", "--fs", "btrfs", "--mounted"];
    let top_level = fs.top().to_str().unwrap().to_string();
    args.push(&top_level);
    let (out, baseline) = imperm_peak(&root, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(&fd, "bottom", b"new");
    let mut fd = top();
    for _ in 0..300 {
        fd = open(&fd, &name);
    }
    write(&fd, "e", b"changed");
    let (out, walk) = imperm_peak(
        &root,
        &[
            "diff",
            "--walk",
            "--format",
            "json",
            "--fs",
            "btrfs",
            "--mounted",
            &top_level,
        ],
    );
    let v = json(&out);
    let lines = changes(&v);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("added /srv/comb/") && lines[0].ends_with("/bottom"));
    assert!(lines[1].starts_with("changed /srv/comb/") && lines[1].ends_with("/e [content]"));
    let (_, _, both) = both_methods(&fs);
    assert_eq!(both.len(), 2);
    // The manifest alone is 36 MB; both of it in memory, or batches of a thousand such
    // paths, would be several times this.
    assert!(
        baseline < 40 << 10 && walk < 40 << 10,
        "peak KiB: baseline {baseline}, diff --walk {walk}"
    );
}

/// Reading a symlink writes its access time under `relatime` (a host's default; no flag
/// prevents it), so `baseline`'s walk, right after the snapshot, rewrote every fresh link
/// and the search read them all again (100,000 links: 9.5 s). `baseline` reads targets
/// from its snapshot, and the walk diff keeps the manifest's where the link is the same
/// inode: on a root mounted relatime, 2,000 fresh links cost the search nothing, after
/// `baseline` and after `diff --walk`, and both methods agree.
#[test]
fn fresh_symlinks_on_a_relatime_root_are_not_read_again_by_the_search() {
    let Some(fs) = btrfs("diff_relatime_links") else {
        return;
    };
    if !common::strace_available("diff_relatime_links") {
        return;
    }
    fs.subvolume("@root");
    let mut mounts = Mounts(Vec::new());
    let live = mounts.live(&fs);
    fs::create_dir_all(live.join("etc/links")).unwrap();
    for i in 0..2000 {
        std::os::unix::fs::symlink(
            format!("/etc/static/x{i}"),
            live.join(format!("etc/links/l{i}")),
        )
        .unwrap();
    }
    let out = imperm_at(&fs, &live, &["baseline"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("read-only snapshot: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(live.join("etc/new"), "new").unwrap();
    std::os::unix::fs::symlink("/etc/static/y", live.join("etc/links/new")).unwrap();
    let after_baseline = searches(&fs, &live);
    let walk = json(&imperm_at(
        &fs,
        &live,
        &["diff", "--walk", "--format", "json"],
    ));
    assert_eq!(changes(&walk), ["added /etc/links/new", "added /etc/new"]);
    let after_walk = searches(&fs, &live);
    assert!(
        after_baseline < 100 && after_walk < 100,
        "tree searches for 2 changes among 2,000 fresh links: {after_baseline} after the \
         baseline, {after_walk} after a walk"
    );
    let (_, _, lines) = both_methods_at(&fs, &live);
    assert_eq!(lines, ["added /etc/links/new", "added /etc/new"]);
}
