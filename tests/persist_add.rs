//! Golden tests of `imperm persist add`: each directory of tests/fixtures/persist-add holds
//! an `input.nix`, the `args`, and either the `expected.nix` the edit must produce byte for
//! byte, or (for a computed list) the `expected.out` snippet printed instead of editing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/persist-add");
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    cases
}

fn run(case: &Path, file: &Path, extra: &[&str]) -> Output {
    let args = fs::read_to_string(case.join("args")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_imperm"))
        .args(["persist", "add"])
        .args(args.split_whitespace())
        .arg("--nix-file")
        .arg(file)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn every_golden_case() {
    let cases = cases();
    assert!(
        cases.len() >= 10,
        "at least ten differently written configurations"
    );
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let input = fs::read_to_string(case.join("input.nix")).unwrap();
        let dir = TempDir::new().unwrap();
        let file = dir.path().join("host.nix");
        fs::write(&file, &input).unwrap();
        let out = run(&case, &file, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Ok(expected) = fs::read_to_string(case.join("expected.nix")) {
            assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
            assert_eq!(fs::read_to_string(&file).unwrap(), expected, "{name}");
            // Once is enough: running again changes nothing.
            let again = run(&case, &file, &[]);
            assert_eq!(again.status.code(), Some(0), "{name}");
            assert_eq!(
                fs::read_to_string(&file).unwrap(),
                expected,
                "{name}: idempotent"
            );
            assert!(
                String::from_utf8_lossy(&again.stdout).contains("is unchanged"),
                "{name}"
            );
        } else {
            let expected = fs::read_to_string(case.join("expected.out")).unwrap();
            assert_eq!(out.status.code(), Some(2), "{name}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                expected,
                "{name}: the snippet to add by hand"
            );
            assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
            assert!(stderr.contains("the list is computed"), "{name}: {stderr}");
            assert_eq!(
                fs::read_to_string(&file).unwrap(),
                input,
                "{name}: nothing changed"
            );
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "{name}: no temporary file left");
    }
}

#[test]
fn dry_run_prints_a_unified_diff_and_writes_nothing() {
    let case = cases()
        .into_iter()
        .find(|c| c.ends_with("01-dotted-list"))
        .unwrap();
    let input = fs::read_to_string(case.join("input.nix")).unwrap();
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("host.nix");
    fs::write(&file, &input).unwrap();
    let out = run(&case, &file, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("@@ -5,6 +5,8 @@"), "{text}");
    assert!(
        text.contains("+    \"/var/lib/forgejo\"\n+    \"/var/lib/postgresql\"\n"),
        "{text}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), input);
}

#[test]
fn bad_input_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("host.nix");
    let good = "{ ... }: { environment.persistence.\"/persist\".directories = [ ]; }\n";
    fs::write(&file, good).unwrap();
    let link = dir.path().join("link.nix");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let broken = dir.path().join("broken.nix");
    fs::write(&broken, "{ a = ; }").unwrap();
    let cases: Vec<(Vec<&str>, &Path, &str)> = vec![
        (
            vec!["var/lib/x"],
            &file,
            "\"var/lib/x\" is not an absolute path",
        ),
        (vec!["/var/../etc"], &file, "contains `..`"),
        (
            vec!["--user", "josh", "/home/josh/.ssh"],
            &file,
            "user entries are relative",
        ),
        (vec!["/var/lib/x"], &link, "is a symlink"),
        (vec!["/var/lib/x"], &broken, "not valid Nix"),
        (
            vec!["/var/lib/x"],
            Path::new("/definitely/not/here.nix"),
            "No such file",
        ),
    ];
    for (args, target, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .args(["persist", "add"])
            .args(&args)
            .arg("--nix-file")
            .arg(target)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1);
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), good);
    assert_eq!(fs::read_to_string(&broken).unwrap(), "{ a = ; }");
}
