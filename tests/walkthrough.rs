//! The seed's rollout step for L001, the headscale VPS ("Back up /var/lib/headscale — add
//! the impermanence module — test — migrate"), done the way README's "Rolling out a host:
//! L001, step by step" tells a user to do it, through the binary only: audit → persist add
//! → (nixos-rebuild boot) → migrate --dry-run → migrate → status says ready → (the first
//! ephemeral boot) → check.
//!
//! Real filesystems: L001's root disk and its /persist disk are two loop btrfs (the host
//! has ext4; what matters here is that /persist is a filesystem of its own, as a real
//! host's /persist disk is), and the first boot's root is a real tmpfs. Every mount the test
//! makes is undone when [`L001`] is dropped, also after a panic; the loop devices are
//! detached by their fixtures after that.

mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rustix::fs::{AtFlags, FileType, Timespec, Timestamps};
use serde_json::Value;

const HEADSCALE: &str = "/var/lib/headscale";
/// Where the rebuilt generation's configuration is before it is booted: `nixos-rebuild
/// boot` makes the new generation the system profile without activating it, so the
/// running system's /etc/imperm/config.toml is not (yet) the new one.
const NEXT_CONFIG: &str = "/nix/var/nix/profiles/system/etc/imperm/config.toml";

/// L001: its root disk (the live root, mounted at the fixture's top), its /persist disk,
/// and every mount the test made, undone first when dropped.
struct L001 {
    mounts: Vec<PathBuf>,
    root_disk: common::LoopBtrfs,
    persist_disk: common::LoopBtrfs,
}

impl Drop for L001 {
    fn drop(&mut self) {
        // Lazy and recursive: a test that failed with something still open below a mount
        // point must not leave it, nor keep the loop devices attached.
        for m in self.mounts.drain(..).rev() {
            let _ = Command::new("umount").args(["-R", "-l"]).arg(&m).status();
        }
    }
}

impl L001 {
    fn new(test: &str) -> Option<L001> {
        let root_disk = common::btrfs(test)?;
        let persist_disk = common::btrfs(test)?;
        Some(L001 {
            mounts: Vec::new(),
            root_disk,
            persist_disk,
        })
    }

    /// The live root: the root disk as the running, not yet ephemeral, host has it.
    fn live(&self) -> &Path {
        self.root_disk.top()
    }

    fn at(&self, abs: &str) -> PathBuf {
        self.live().join(abs.trim_start_matches('/'))
    }

    fn mount(&mut self, args: &[&str], what: &OsStr, at: &Path) {
        common::check(Command::new("mount").args(args).arg(what).arg(at));
        self.mounts.push(at.to_path_buf());
    }

    fn mount_proc(&mut self, root: &Path) {
        let at = root.join("proc");
        fs::create_dir_all(&at).unwrap();
        self.mount(&["-t", "proc"], OsStr::new("proc"), &at);
    }
}

fn imperm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imperm"));
    cmd.env_remove("IMPERM_FAILPOINT")
        .env_remove("IMPERM_NOW")
        .args(["--color", "never"]);
    cmd
}

/// imperm on `root` with `args`; asserts the exit code; prints the transcript (the
/// README's outputs are these).
#[track_caller]
fn run(root: &Path, config: Option<&Path>, args: &[&str], code: i32) -> Output {
    let mut cmd = imperm();
    cmd.arg("--root").arg(root);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = common::run(cmd.args(args));
    eprintln!(
        "$ imperm {}\n{}{}(exit {:?})\n",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[track_caller]
fn json(root: &Path, config: Option<&Path>, args: &[&str], code: i32) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend(args);
    let out = run(root, config, &all, code);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(root: &Path, rel: &str, content: &[u8], mode: u32) {
    let path = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

fn link(root: &Path, rel: &str, target: &str) {
    let path = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    symlink(target, path).unwrap();
}

fn set_times(path: &Path, sec: i64, nsec: u32) {
    let t = |s: i64| Timespec {
        tv_sec: s,
        tv_nsec: nsec as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: t(sec - 3600),
            last_modification: t(sec),
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// The part of a NixOS root that every host has: /etc through /etc/static into the
/// store (the generation that runs now), users, the host's identity and logs.
fn nixos_root(root: &Path) {
    let etc = "/nix/store/aaaa-etc/etc";
    write(root, &format!("{etc}/ssh/sshd_config"), b"Port 22\n", 0o644);
    write(root, &format!("{etc}/os-release"), b"ID=nixos\n", 0o644);
    write(
        root,
        &format!("{etc}/systemd/system/headscale.service"),
        b"[Service]\nExecStart=/nix/store/bbbb-headscale/bin/headscale serve\n\
          User=headscale\nGroup=headscale\nStateDirectory=headscale\nStateDirectoryMode=0750\n",
        0o444,
    );
    link(root, "/etc/static", etc);
    link(root, "/etc/ssh/sshd_config", "/etc/static/ssh/sshd_config");
    link(root, "/etc/os-release", "/etc/static/os-release");
    link(root, "/etc/systemd/system", "/etc/static/systemd/system");
    write(root, "/etc/NIXOS", b"", 0o644);
    write(
        root,
        "/etc/passwd",
        b"root:x:0:0::/root:/bin/sh\nheadscale:x:990:990::/var/lib/headscale:/sbin/nologin\n",
        0o644,
    );
    write(root, "/etc/group", b"root:x:0:\nheadscale:x:990:\n", 0o644);
    write(
        root,
        "/etc/machine-id",
        b"5d2f1c0a9e8b4c7d8e9f0a1b2c3d4e5f\n",
        0o444,
    );
    for key in ["ed25519", "rsa"] {
        write(
            root,
            &format!("/etc/ssh/ssh_host_{key}_key"),
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n",
            0o600,
        );
        write(
            root,
            &format!("/etc/ssh/ssh_host_{key}_key.pub"),
            format!("ssh-{key} AAAAC3Nza root@l001\n").as_bytes(),
            0o644,
        );
    }
    write(
        root,
        "/var/log/journal/5d2f/system.journal",
        b"LPKSHHRH",
        0o640,
    );
    write(
        root,
        "/var/lib/nixos/uid-map",
        b"{\"headscale\":990}\n",
        0o644,
    );
    fs::create_dir_all(root.join("var/empty")).unwrap();
}

/// A non-UTF-8 name (headscale would never write one; a user's tool might).
fn odd() -> &'static OsStr {
    OsStr::from_bytes(b"backup-\xff.json")
}

/// headscale's state as a running instance has it: the SQLite database (with an xattr),
/// the noise private key (0600), a unix socket and a FIFO, a symlink, odd names; all
/// headscale's, the directory 0750 (StateDirectoryMode).
fn headscale(root: &Path) {
    let dir = root.join("var/lib/headscale");
    let mut db = b"SQLite format 3\0".to_vec();
    db.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    write(root, "/var/lib/headscale/db.sqlite", &db, 0o640);
    write(
        root,
        "/var/lib/headscale/noise_private.key",
        b"privkey:4f1b2c3d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081\n",
        0o600,
    );
    write(
        root,
        "/var/lib/headscale/derp.yaml",
        b"regions: {}\n",
        0o644,
    );
    fs::write(dir.join(odd()), b"{}\n").unwrap();
    write(root, "/var/lib/headscale/with\nnewline", b"x", 0o644);
    symlink("db.sqlite", dir.join("current.db")).unwrap();
    common::check(Command::new("mkfifo").arg(dir.join("ctl.fifo")));
    std::os::unix::net::UnixListener::bind(dir.join("headscale.sock")).unwrap();
    rustix::fs::setxattr(
        dir.join("db.sqlite"),
        "user.headscale.note",
        b"migrated by imperm",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    set_times(&dir.join("db.sqlite"), 1_760_000_000, 123_456_789);
    let mut names: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.push(dir.clone());
    for n in names {
        std::os::unix::fs::lchown(&n, Some(990), Some(990)).unwrap();
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
}

/// Every entry below `base` (relative name → what it is), never following a symlink:
/// kind, mode, owner, size, mtime (and, but for symlinks, atime) in ns, content hash, link
/// target, xattrs. Sockets are left out: migrate does not copy them (the program that
/// listens makes its socket again), the test checks that apart.
fn describe(base: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = base.join(&rel);
        let m = fs::symlink_metadata(&path).unwrap();
        let ft = FileType::from_raw_mode(m.mode());
        if ft == FileType::Socket {
            continue;
        }
        let atime = if ft == FileType::Symlink {
            "-".to_string()
        } else {
            format!("{}.{:09}", m.atime(), m.atime_nsec())
        };
        let mut line = format!(
            "{ft:?} {:o} {}:{} atime={atime} mtime={}.{:09}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec()
        );
        match ft {
            FileType::RegularFile => {
                let data = fs::read(&path).unwrap();
                line += &format!(" size={} blake3={}", data.len(), blake3::hash(&data));
            }
            FileType::Symlink => line += &format!(" -> {:?}", fs::read_link(&path).unwrap()),
            FileType::Directory => {
                let mut names: Vec<OsString> = fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                names.sort();
                stack.extend(names.into_iter().map(|n| rel.join(n)));
            }
            _ => {}
        }
        line += &format!(" xattrs={:?}", xattrs(&path));
        out.insert(rel.as_os_str().as_bytes().to_vec(), line);
    }
    out
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut buf = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(path, &mut buf[..]) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = buf[..n]
        .split(|&b| b == 0)
        .filter(|k| !k.is_empty())
        .map(|key| {
            let mut value = vec![0u8; 65536];
            let len = rustix::fs::lgetxattr(path, OsStr::from_bytes(key), &mut value[..]).unwrap();
            value.truncate(len);
            (String::from_utf8_lossy(key).into_owned(), value)
        })
        .collect();
    out.sort();
    out
}

#[track_caller]
fn assert_same_tree(a: &Path, b: &Path) {
    let (da, db) = (describe(a), describe(b));
    for k in da.keys().chain(db.keys()) {
        assert_eq!(
            da.get(k),
            db.get(k),
            "{} and {} differ at {}",
            a.display(),
            b.display(),
            String::from_utf8_lossy(k)
        );
    }
    // Not an empty comparison: the database, the key, the odd names are all there.
    assert!(da.len() >= 8, "{da:?}");
}

/// One reason of a status document.
fn reason<'a>(v: &'a Value, check: &str) -> &'a Value {
    v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == check)
        .unwrap_or_else(|| panic!("no reason {check} in {v:#}"))
}

fn entry<'a>(v: &'a Value, path: &str) -> &'a Value {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("no entry {path} in {v:#}"))
}

/// "nixos-rebuild boot": the host's configuration evaluated and /etc/imperm/config.toml
/// rendered from it exactly as the module renders it (`nix/lib.nix`'s `hostToml`, with
/// `[module] needed_for_boot` from `neededForBootStorages` over the host's fileSystems,
/// plus the tmpfs `/` that `tmpfsRoot` adds), into the new generation's etc, which is not
/// active before the reboot. This stands for the module's rebuild; tests/vm builds real
/// systems.
fn rebuild(host_file: &Path, generation_etc: &Path) {
    let expr = format!(
        r#"let
          imperm = import {lib};
          host = import {host} {{ }};
          cfg = host.services.imperm;
          fsys = host.fileSystems // {{ "/" = {{ device = "none"; fsType = "tmpfs"; }}; }};
        in imperm.hostToml (cfg // {{
          neededForBoot = imperm.neededForBootStorages {{
            storages = [ (cfg.persistentStoragePath or "/persist") ];
            filesystems = map (n: fsys.${{n}} // {{ mountPoint = n; }}) (builtins.attrNames fsys);
          }};
        }})"#,
        lib = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("nix/lib.nix")
            .display(),
        host = host_file.display(),
    );
    let out = common::check(
        Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "-E"])
            .arg(&expr)
            .stderr(std::process::Stdio::null()),
    );
    let toml: String = serde_json::from_str(&out).unwrap();
    write(generation_etc, "imperm/config.toml", toml.as_bytes(), 0o444);
}

/// When a service wrote after the copy (headscale not stopped before migrate): status
/// sees that the live path changed since migrate verified its copy (its record), so the
/// host is not ready; migrate takes the copy it recorded for outdated and copies again,
/// without `--force`, keeping the copy of then aside. Its JSON report.
fn a_write_after_migrate(live: &Path, config: &Path) -> Value {
    let v = json(live, Some(config), &["status", "--no-check"], 0);
    assert_eq!(v["ready"], false, "{:#}", v["reasons"]);
    assert_eq!(entry(&v, HEADSCALE)["state"], "changed");
    assert_eq!(entry(&v, HEADSCALE)["verified"], Value::Null);
    let entries = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == "entries")
        .unwrap();
    assert!(
        entries["detail"].as_str().unwrap().starts_with(
            "7 of 8 declared entries on the root in the storage (7 verified by migrate); \
             changed since migrate verified them: /var/lib/headscale (changed on the root \
             since migrate verified its copy at "
        ),
        "{entries}"
    );
    let v = json(live, Some(config), &["migrate", HEADSCALE], 0);
    let hs = entry(&v, HEADSCALE);
    assert_eq!(
        (&hs["action"], &hs["done"]),
        (&"replace".into(), &true.into())
    );
    assert!(
        hs["reason"]
            .as_str()
            .unwrap()
            .starts_with("changed on the live root since migrate verified its copy at "),
        "{hs}"
    );
    let v2 = json(live, Some(config), &["status", "--no-check"], 0);
    assert_eq!(v2["ready"], true, "{:#}", v2["reasons"]);
    assert!(entry(&v2, HEADSCALE)["verified"].is_string());
    v
}

#[test]
fn l001_is_rolled_out_with_imperm_alone() {
    let test = "l001_is_rolled_out_with_imperm_alone";
    if !common::nix_available(test) {
        return;
    }
    let Some(mut host) = L001::new(test) else {
        return;
    };
    let live = host.live().to_path_buf();
    nixos_root(&live);
    headscale(&live);
    // The /persist disk, mounted where the host mounts it (fileSystems."/persist");
    // noatime, like the root disk's fixture, so that the test's own reads of the copy
    // do not change the access times it compares.
    let persist = host.at("/persist");
    fs::create_dir(&persist).unwrap();
    let device = host.persist_disk.device.clone();
    host.mount(&["-o", "noatime"], OsStr::new(&device), &persist);
    host.mount_proc(&live);

    // 1. What would a wipe lose? (No configuration yet: the built-in template stands for
    // the persisted set, the seed's server template.)
    let audit = json(&live, None, &["audit"], 1);
    let hs = audit["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == HEADSCALE)
        .unwrap_or_else(|| panic!("{audit:#}"));
    assert_eq!(hs["verdict"], "persist");
    assert_eq!(hs["source"], "unit headscale.service: StateDirectory");
    assert_eq!(hs["owner"], "headscale");
    assert_eq!(hs["mode"], "0750");
    let to_persist: Vec<&Value> = audit["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] == "persist")
        .map(|s| &s["path"])
        .collect();
    assert_eq!(to_persist, [HEADSCALE], "{audit:#}");
    let human = run(&live, None, &["audit"], 1);
    assert!(
        text(&human).starts_with("persist: a reset loses this (1)\n  /var/lib/headscale "),
        "{}",
        text(&human)
    );

    // 2. The entry, written into the host's configuration (L001's file as it was before
    // headscale was declared).
    let host_file = host.root_disk.scratch().join("l001.nix");
    let example =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hosts/l001.nix"))
            .unwrap();
    let before: String = example
        .lines()
        .filter(|l| !l.contains(HEADSCALE))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(before, example);
    fs::write(&host_file, &before).unwrap();
    let file_arg = host_file.to_str().unwrap();
    let out = run(
        &live,
        None,
        &["persist", "add", HEADSCALE, "--nix-file", file_arg],
        0,
    );
    assert_eq!(
        text(&out),
        format!("added 1 entry to {file_arg}: /var/lib/headscale\n")
    );
    let after = fs::read_to_string(&host_file).unwrap();
    assert!(
        after.contains("    tmpfsRoot = {\n      enable = true;\n      size = \"1G\";\n    };\n    directories = [\n      \"/var/lib/headscale\"\n    ];\n  };\n}\n"),
        "{after}"
    );
    common::check(
        Command::new("nix-instantiate")
            .arg("--parse")
            .arg(&host_file),
    );
    // Twice is once.
    run(
        &live,
        None,
        &["persist", "add", HEADSCALE, "--nix-file", file_arg],
        0,
    );
    assert_eq!(fs::read_to_string(&host_file).unwrap(), after);

    // 3. Before the rebuild, the running system has no configuration: migrate refuses
    // rather than copy imperm's template in place of the host's entries, and status says
    // why it is not ready.
    let out = run(&live, None, &["migrate"], 2);
    assert!(
        stderr(&out).contains("no persistence is declared") && stderr(&out).contains(NEXT_CONFIG),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(describe(&persist).len() == 1, "nothing written");
    let v = json(&live, None, &["status", "--no-check"], 0);
    assert_eq!(v["ready"], false);
    assert_eq!(reason(&v, "config")["state"], "problem");
    assert!(
        reason(&v, "config")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "after `nixos-rebuild boot`, before the reboot, it is {NEXT_CONFIG}"
            )),
        "{:#}",
        v["reasons"]
    );

    // 4. nixos-rebuild boot: the new generation, not active before the reboot.
    let generation_etc = host.at("/nix/var/nix/profiles/system/etc");
    rebuild(&host_file, &generation_etc);
    let config = host.at(NEXT_CONFIG);
    let toml = fs::read_to_string(&config).unwrap();
    assert!(
        toml.contains("\"/var/lib/headscale\"]")
            && toml.contains("needed_for_boot = [\"/persist\"]"),
        "{toml}"
    );

    // 5. Not ready yet: nothing is in the storage.
    let v = json(&live, Some(&config), &["status", "--no-check"], 0);
    assert_eq!(v["ready"], false, "{:#}", v["reasons"]);
    assert_eq!(v["ephemeral"], false);
    assert_eq!(reason(&v, "entries")["state"], "problem");
    assert_eq!(entry(&v, HEADSCALE)["state"], "missing");
    for check in ["config", "lint", "storage", "needed-for-boot", "layout"] {
        assert_eq!(
            reason(&v, check)["state"],
            "ok",
            "{check}: {:#}",
            v["reasons"]
        );
    }
    let human = text(&run(&live, Some(&config), &["status"], 0));
    assert!(human.contains("\nnot ready: 1 problem\n"), "{human}");
    // A tmpfs root has no subvolumes to name.
    assert!(
        human.contains("\nfilesystem   tmpfs (from the config)\n"),
        "{human}"
    );

    // 6. The dry run: what would be copied, with sizes; nothing written.
    let storage_before = describe(&persist);
    let plan = json(&live, Some(&config), &["migrate", "--dry-run"], 0);
    let hs = entry(&plan, HEADSCALE);
    assert_eq!(hs["action"], "copy");
    assert_eq!(hs["done"], Value::Null);
    assert_eq!(hs["files"], 8, "{hs}");
    assert!(hs["bytes"].as_u64().unwrap() > 200_000, "{hs}");
    assert_eq!(plan["space"][0]["enough"], true);
    let human = text(&run(&live, Some(&config), &["migrate", "--dry-run"], 0));
    assert!(
        human.lines().any(|l| l.starts_with("copy ")
            && l.contains(" /var/lib/headscale ")
            && l.contains("8 files")
            && l.ends_with("not in the storage yet")),
        "{human}"
    );
    assert!(
        human.ends_with(
            "dry run, nothing changed: 8 to copy, 0 to replace, 0 skipped, 4 absent, 0 refused\n"
        ),
        "{human}"
    );
    // One table: the sizes and reasons line up whatever the length of the path.
    let columns: Vec<Option<usize>> = human
        .lines()
        .filter(|l| l.starts_with("copy ") || l.starts_with("absent "))
        .map(|l| l.find("  not "))
        .collect();
    assert_eq!(columns.len(), 12, "{human}");
    assert!(columns.iter().all(|c| *c == columns[0]), "{human}");
    assert_eq!(describe(&persist), storage_before, "a dry run wrote");

    // 7. The copy, exact: the storage's copy is the live tree, but for the socket.
    let out = run(&live, Some(&config), &["migrate"], 0);
    let copied = text(&out);
    let hs = copied
        .lines()
        .find(|l| l.starts_with("copied ") && l.contains(" /var/lib/headscale "))
        .unwrap_or_else(|| panic!("{copied}"));
    assert!(
        hs.ends_with(
            "not in the storage yet; not copied: /var/lib/headscale/headscale.sock (a socket \
             cannot be copied: the program that listens on it makes it again when it starts)"
        ),
        "{hs}"
    );
    assert!(
        copied.ends_with("migrate: 8 copied, 0 replaced, 0 skipped, 4 absent, 0 refused\n"),
        "{copied}"
    );
    let stored = host.at("/persist/var/lib/headscale");
    assert_same_tree(&host.at(HEADSCALE), &stored);
    assert!(!stored.join("headscale.sock").exists());
    assert_eq!(
        fs::read(stored.join(odd())).unwrap(),
        b"{}\n",
        "the non-UTF-8 name"
    );
    for file in ["/etc/machine-id", "/etc/ssh/ssh_host_ed25519_key"] {
        assert_eq!(
            fs::read(host.at(&format!("/persist{file}"))).unwrap(),
            fs::read(host.at(file)).unwrap()
        );
    }
    // A second run finds it all there: nothing to do.
    let again = text(&run(&live, Some(&config), &["migrate"], 0));
    assert!(
        again.ends_with("migrate: 0 copied, 0 replaced, 8 skipped, 4 absent, 0 refused\n"),
        "{again}"
    );

    // 8. Ready for the first ephemeral boot.
    let v = json(&live, Some(&config), &["status"], 0);
    assert_eq!(v["ready"], true, "{:#}", v["reasons"]);
    assert_eq!(entry(&v, HEADSCALE)["state"], "in-storage");
    assert!(entry(&v, HEADSCALE)["verified"].is_string(), "{v:#}");
    let human = text(&run(&live, Some(&config), &["status"], 0));
    assert!(
        human.contains("\nready for the first ephemeral boot\n"),
        "{human}"
    );

    // A service that writes after the copy (headscale not stopped before migrate).
    fs::OpenOptions::new()
        .append(true)
        .open(host.at("/var/lib/headscale/db.sqlite"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"a new node"))
        .unwrap();
    let v = a_write_after_migrate(&live, &config);
    let hs = entry(&v, HEADSCALE);
    let aside = hs["aside"].as_str().unwrap();
    assert!(
        aside.starts_with("/persist/var/lib/headscale.imperm-replaced-"),
        "{aside}"
    );
    assert_same_tree(&host.at(HEADSCALE), &stored);
    // The kept copy is what `stray` lists: no entry declares it.
    let out = run(&live, Some(&config), &["stray"], 1);
    assert!(text(&out).contains(aside), "{}", text(&out));

    // 9. The first ephemeral boot, simulated (tests/vm does real boots): a fresh, empty
    // tmpfs root; /nix (its own disk on L001) and /persist mounted; activation's /etc
    // links to the new generation; impermanence's bind mounts of each declared entry that
    // is in the storage. The old root disk is only kept to compare with.
    let boot = host.root_disk.scratch().join("boot");
    fs::create_dir(&boot).unwrap();
    host.mount(
        &["-t", "tmpfs", "-o", "mode=755"],
        OsStr::new("none"),
        &boot,
    );
    for dir in ["nix", "persist", "etc/imperm", "run"] {
        fs::create_dir_all(boot.join(dir)).unwrap();
    }
    host.mount(&["--bind"], host.at("/nix").as_os_str(), &boot.join("nix"));
    host.mount(
        &["-o", "noatime"],
        OsStr::new(&device),
        &boot.join("persist"),
    );
    link(&boot, "/etc/static", "/nix/var/nix/profiles/system/etc");
    link(
        &boot,
        "/etc/imperm/config.toml",
        "/etc/static/imperm/config.toml",
    );
    write(&boot, "/etc/NIXOS", b"", 0o644);
    for f in ["/etc/passwd", "/etc/group"] {
        fs::copy(host.at(f), boot.join(&f[1..])).unwrap();
    }
    let generation_unit = generation_etc.join("systemd/system/headscale.service");
    fs::create_dir_all(generation_unit.parent().unwrap()).unwrap();
    fs::copy(
        host.at("/nix/store/aaaa-etc/etc/systemd/system/headscale.service"),
        &generation_unit,
    )
    .unwrap();
    link(&boot, "/etc/systemd/system", "/etc/static/systemd/system");
    let done = json(&live, Some(&config), &["migrate", "--dry-run"], 0);
    for e in done["entries"].as_array().unwrap() {
        if e["action"] == "absent" {
            continue;
        }
        let path = e["path"].as_str().unwrap();
        let at = boot.join(&path[1..]);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        if e["kind"] == "directory" {
            fs::create_dir(&at).unwrap();
        } else {
            fs::write(&at, b"").unwrap();
        }
        let from = boot.join("persist").join(&path[1..]);
        host.mount(&["--bind"], from.as_os_str(), &at);
    }
    host.mount_proc(&boot);

    // 10. After the boot: check (before the baseline, it compares with everything on the
    // root) finds nothing to persist, headscale's data is the same bytes, and, once
    // imperm-baseline.service has run, status says the host is ephemeral and ready.
    let check = json(&boot, None, &["check"], 0);
    let left: Vec<&Value> = check["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] != "generated")
        .map(|s| &s["path"])
        .collect();
    assert!(left.is_empty(), "{check:#}");
    assert_eq!(check["baseline"], Value::Null);
    run(&boot, None, &["baseline"], 0);
    run(&boot, None, &["check"], 0);
    assert_same_tree(&host.at(HEADSCALE), &boot.join("var/lib/headscale"));
    let v = json(&boot, None, &["status"], 0);
    assert_eq!(v["ephemeral"], true, "{:#}", v["reasons"]);
    assert_eq!(v["ready"], true, "{:#}", v["reasons"]);
    assert_eq!(entry(&v, HEADSCALE)["state"], "mounted");
    assert_eq!(reason(&v, "check")["state"], "ok");
    let human = text(&run(&boot, None, &["status"], 0));
    assert!(
        human.contains("\nready: the root is ephemeral and nothing needs action\n"),
        "{human}"
    );

    // What the new boot writes that nothing persists is what check is for.
    write(&boot, "/var/lib/derp-cache/state.json", b"{}", 0o644);
    let check = json(&boot, None, &["check"], 1);
    assert!(
        check["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["path"] == "/var/lib/derp-cache" && s["verdict"] == "persist"),
        "{check:#}"
    );
}
