//! Real btrfs filesystems for tests: a sparse image in a temporary directory, attached to a
//! loop device the test created itself, formatted and mounted; all of it detached and
//! removed when the fixture is dropped, also when the test fails.
//!
//! Outside CI a machine without root, loop devices or btrfs-progs skips these tests with a
//! printed reason. With `CI=true` that is a failure instead: CI must run them for real.

#![allow(dead_code)] // each test binary uses a different part

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// Why btrfs tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control".into());
    }
    for tool in ["mkfs.btrfs", "btrfs", "losetup", "mount", "umount"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "{tool} is not installed (Debian: btrfs-progs, util-linux)"
            ));
        }
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.lines().any(|l| l.trim_end().ends_with("btrfs")) {
        // The module may just not be loaded yet; mounting loads it.
        let _ = Command::new("modprobe").arg("btrfs").status();
    }
    None
}

/// `Some(fixture)`, or `None` after printing why the test is skipped. Panics under CI.
pub fn btrfs(test: &str) -> Option<LoopBtrfs> {
    if let Some(why) = missing_prerequisite() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: btrfs tests must run in CI, but {why}");
        }
        eprintln!("SKIPPED {test}: {why}");
        return None;
    }
    Some(LoopBtrfs::new())
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

pub fn check(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A btrfs on a loop device, its top level mounted at `top`.
pub struct LoopBtrfs {
    pub device: String,
    dir: TempDir,
    top: PathBuf,
    mounted: bool,
}

impl LoopBtrfs {
    fn new() -> LoopBtrfs {
        let dir = TempDir::new().unwrap();
        let image = dir.path().join("fs.img");
        fs::File::create(&image)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        let device = check(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&image),
        )
        .trim()
        .to_string();
        let mut fixture = LoopBtrfs {
            device,
            top: dir.path().join("top"),
            dir,
            mounted: false,
        };
        check(Command::new("mkfs.btrfs").args(["-q", "-f", &fixture.device]));
        fs::create_dir(&fixture.top).unwrap();
        // noatime: reading a tree to compare it must not itself change a generation.
        check(
            Command::new("mount")
                .args(["-o", "subvolid=5,noatime", &fixture.device])
                .arg(&fixture.top),
        );
        fixture.mounted = true;
        fixture
    }

    /// Where the top level is mounted.
    pub fn top(&self) -> &Path {
        &self.top
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.top.join(rel)
    }

    /// A scratch directory next to the image (not on the filesystem).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    pub fn subvolume(&self, rel: &str) {
        check(
            Command::new("btrfs")
                .args(["-q", "subvolume", "create"])
                .arg(self.path(rel)),
        );
    }

    pub fn snapshot(&self, src: &str, dst: &str, readonly: bool) {
        let mut cmd = Command::new("btrfs");
        cmd.args(["-q", "subvolume", "snapshot"]);
        if readonly {
            cmd.arg("-r");
        }
        check(cmd.arg(self.path(src)).arg(self.path(dst)));
    }

    pub fn write(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn is_readonly(&self, rel: &str) -> bool {
        check(
            Command::new("btrfs")
                .args(["property", "get", "-ts"])
                .arg(self.path(rel))
                .arg("ro"),
        )
        .trim()
            == "ro=true"
    }

    /// Every subvolume with its path, uuid, parent uuid and generation: any change to
    /// any subvolume shows here.
    pub fn subvolumes(&self) -> String {
        check(
            Command::new("btrfs")
                .arg("filesystem")
                .arg("sync")
                .arg(&self.top),
        );
        check(
            Command::new("btrfs")
                .args(["subvolume", "list", "-a", "-g", "-u", "-q"])
                .arg(&self.top),
        )
    }

    /// Subvolume paths only, sorted.
    pub fn subvolume_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = check(
            Command::new("btrfs")
                .args(["subvolume", "list", "-a"])
                .arg(&self.top),
        )
        .lines()
        .filter_map(|l| l.split(" path ").nth(1))
        .map(|p| p.trim_start_matches("<FS_TREE>/").to_string())
        .collect();
        paths.sort();
        paths
    }

    /// Every file below `rel` with its content (directories as names), sorted: the
    /// content of a tree, for before/after comparisons.
    pub fn tree(&self, rel: &str) -> Vec<String> {
        let base = self.path(rel);
        let mut out = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                let name = path.strip_prefix(&base).unwrap().display().to_string();
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    out.push(format!("{name}/"));
                    stack.push(path);
                } else if meta.file_type().is_symlink() {
                    out.push(format!(
                        "{name} -> {}",
                        fs::read_link(&path).unwrap().display()
                    ));
                } else {
                    out.push(format!(
                        "{name} = {}",
                        fs::read_to_string(&path).unwrap_or_default()
                    ));
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        if self.mounted {
            // Recursive and lazy: a test that mounted something below the top level and
            // failed before unmounting it must not leave the loop device attached.
            let _ = Command::new("umount")
                .args(["--recursive", "--lazy"])
                .arg(&self.top)
                .status();
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Whether `nix-instantiate` is here, for tests that evaluate Nix. Outside CI a machine
/// without it skips them with a printed reason; under `CI=true` that is a failure.
pub fn nix_available(test: &str) -> bool {
    let found = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: nix-instantiate is needed in CI (Debian: nix-bin)");
        }
        eprintln!("SKIPPED {test}: nix-instantiate is not installed (Debian: nix-bin)");
    }
    found
}

/// `(path, verdict)` of every suggestion in a command's JSON output.
pub fn path_verdicts(v: &serde_json::Value) -> Vec<(String, String)> {
    v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// An exclusive `flock` on `path`, held by a process of its own (util-linux's `flock`)
/// until dropped. Not held by the test process: a lock belongs to the open file, and a
/// child that another test's thread is spawning at that moment (forked, not yet exec'd)
/// holds a copy of every descriptor, so a lock the test took and dropped could still be
/// held when the next command runs (a `baseline` then got no snapshot and `diff` walked,
/// seen once under heavy load).
pub struct HeldLock(std::process::Child);

impl HeldLock {
    pub fn new(path: &Path) -> HeldLock {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = Command::new("flock")
            // --close: the command does not inherit the lock; flock alone holds it, and
            // it is gone once flock is (it waits for its command, which reads stdin).
            .args(["--exclusive", "--nonblock", "--close"])
            .arg(path)
            .args(["sh", "-c", "echo held; exec cat >/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock (util-linux)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "held\n", "flock could not lock {}", path.display());
        HeldLock(child)
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // End of input ends `cat`, then flock exits; once it is reaped, its descriptors,
        // and the lock with them, are gone.
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Whether `strace` is here, for tests that count what a command asks of the kernel.
/// Outside CI a machine without it skips them with a printed reason; under `CI=true` that
/// is a failure.
pub fn strace_available(test: &str) -> bool {
    let found = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: strace is needed in CI (Debian: strace)");
        }
        eprintln!("SKIPPED {test}: strace is not installed (Debian: strace)");
    }
    found
}
