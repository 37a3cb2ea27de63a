//! `audit`, `check` and `baseline` on fixture trees built here, one per seed host: what each
//! finds, how it classifies it, and that `--format nix` is Nix that persists exactly the
//! `persist` suggestions.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rnix::ast::{self, HasEntry};
use serde_json::Value;
use tempfile::TempDir;

/// A directory tree standing for a host's root.
struct Tree {
    dir: TempDir,
    /// Configuration files live beside the tree, not in it.
    etc: TempDir,
}

impl Tree {
    fn new() -> Tree {
        let tree = Tree {
            dir: TempDir::new().unwrap(),
            etc: TempDir::new().unwrap(),
        };
        // What every NixOS root has: the store (never walked), /etc links and copies.
        tree.file("nix/store/abc-etc/etc/ssh/sshd_config", "Port 22\n");
        tree.link("etc/static", "/nix/store/abc-etc/etc");
        tree.link("etc/ssh/sshd_config", "/etc/static/ssh/sshd_config");
        tree.link("etc/pam.d/sshd", "/etc/static/pam.d/sshd");
        tree.link("etc/resolv.conf", "/run/systemd/resolve/stub-resolv.conf");
        tree.file(
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\njosh:x:1000:100::/home/josh:/bin/sh\n",
        );
        tree.file("etc/group", "root:x:0:\nusers:x:100:\n");
        tree.file("etc/sudoers", "root ALL=(ALL) ALL\n");
        tree.file("etc/.clean", "sudoers\n");
        tree.file("etc/NIXOS", "");
        tree.dir("var/empty");
        tree.dir("var/lib/private");
        tree.dir("var/lib/nixos");
        tree.file("proc/cpuinfo", "processor: 0\n");
        tree
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a configuration file outside the tree and returns its path.
    fn config(&self, name: &str, text: &str) -> String {
        let path = self.etc.path().join(name);
        fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn file(&self, rel: &str, content: &str) {
        self.bytes(rel, content.as_bytes());
    }

    /// Directories and files are made as a host has them, whatever the umask: 0755 and
    /// 0644, and what is in josh's home is his (uid 1000, group users), so that only the
    /// owners and modes a test sets apart differ from what impermanence makes.
    fn bytes(&self, rel: &str, content: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.root().join(rel);
        self.mkdirs(Path::new(rel).parent().unwrap());
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        self.own_if_home(rel);
    }

    fn dir(&self, rel: &str) {
        self.mkdirs(Path::new(rel));
    }

    fn link(&self, rel: &str, target: &str) {
        let path = self.root().join(rel);
        self.mkdirs(Path::new(rel).parent().unwrap());
        symlink(target, path).unwrap();
        self.own_if_home(rel);
    }

    /// Each missing directory of `rel`, mode 0755.
    fn mkdirs(&self, rel: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let mut at = self.root().to_path_buf();
        let mut done = PathBuf::new();
        for part in rel.components() {
            at.push(part);
            done.push(part);
            if fs::symlink_metadata(&at).is_err() {
                fs::create_dir(&at).unwrap();
                fs::set_permissions(&at, fs::Permissions::from_mode(0o755)).unwrap();
                self.own_if_home(done.to_str().unwrap());
            }
        }
    }

    /// Gives `rel` to josh when it is in his home (as root; otherwise it stays the
    /// runner's, and tests that compare owners need root).
    fn own_if_home(&self, rel: &str) {
        if rel.starts_with("home/josh") && rustix::process::geteuid().is_root() {
            self.chown(rel, 1000, 100);
        }
    }

    /// Sets the owner of `rel` (not following a symlink).
    fn chown(&self, rel: &str, uid: u32, gid: u32) {
        std::os::unix::fs::lchown(self.root().join(rel), Some(uid), Some(gid)).unwrap();
    }

    fn chmod(&self, rel: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(self.root().join(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    fn imperm(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let out = self.imperm(args);
        let code = out.status.code().unwrap();
        assert!(
            code <= 1,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (code, serde_json::from_slice(&out.stdout).unwrap())
    }
}

/// `(path, verdict, user)` of every suggestion that is not `generated`.
fn verdicts(v: &Value) -> Vec<(String, String, Option<String>)> {
    v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] != "generated")
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["verdict"].as_str().unwrap().to_string(),
                s["user"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn own(list: &[(&str, &str, Option<&str>)]) -> Vec<(String, String, Option<String>)> {
    list.iter()
        .map(|(p, v, u)| (p.to_string(), v.to_string(), u.map(str::to_string)))
        .collect()
}

/// H001, the service host (with the built-in server template as its persisted set).
#[test]
fn service_host_audit_classifies_each_service() {
    let t = Tree::new();
    t.file("var/lib/forgejo/data/forgejo.db", "sqlite");
    t.file("var/lib/forgejo/repos/josh/dotfiles.git/HEAD", "ref: main");
    t.file("var/lib/postgresql/16/PG_VERSION", "16");
    t.file("var/lib/zitadel/key", "k");
    t.file("var/lib/openbao/core/seal", "s");
    t.file("bao-keys/unseal-1", "u");
    t.file("var/cache/nginx/proxy/a", "cached page");
    t.file("var/lib/containers/storage/volumes/n8n/_data/db", "n8n");
    t.file(
        "var/lib/containers/storage/overlay/l/ABC/diff/bin/sh",
        "elf",
    );
    t.file(
        "var/lib/containers/storage/overlay-images/images.json",
        "[]",
    );
    t.file("var/lib/containers/storage/libpod/bolt_state.db", "bolt");
    t.file("home/josh/.config/nvim/init.lua", "vim.o.number = true");
    t.file("home/josh/.cache/pip/x", "wheel");
    t.file("etc/wireguard/wg0.key", "private");
    t.file("etc/custom.conf", "written at runtime");
    t.file("var/lib/systemd/timers/stamp-fstrim.timer", "");
    t.file("var/lib/systemd/random-seed", "seed");
    t.file("var/tmp/build.log", "log");
    let (code, v) = t.json(&["audit", "--format", "json"]);
    assert_eq!(code, 1, "persist suggestions make exit 1");
    assert_eq!(
        verdicts(&v),
        own(&[
            ("/bao-keys", "persist", None),
            // A private key in it (by its name), issue 12.
            ("/etc/wireguard", "persist", None),
            ("/home/josh/.config", "persist", Some("josh")),
            ("/var/lib/containers/storage/libpod", "persist", None),
            ("/var/lib/containers/storage/volumes", "persist", None),
            ("/var/lib/forgejo", "persist", None),
            ("/var/lib/openbao", "persist", None),
            ("/var/lib/postgresql", "persist", None),
            ("/var/lib/systemd/random-seed", "persist", None),
            ("/var/lib/systemd/timers", "persist", None),
            ("/var/lib/zitadel", "persist", None),
            ("/etc/custom.conf", "review", None),
            ("/home/josh/.cache", "ephemeral", Some("josh")),
            ("/var/cache/nginx", "ephemeral", None),
            ("/var/lib/containers/storage/overlay", "ephemeral", None),
            (
                "/var/lib/containers/storage/overlay-images",
                "ephemeral",
                None
            ),
            ("/var/tmp", "ephemeral", None),
        ])
    );
    let forgejo = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/var/lib/forgejo")
        .unwrap();
    assert_eq!(forgejo["files"], 2);
    assert_eq!(forgejo["bytes"], 15);
    assert_eq!(forgejo["kind"], "directory");
    assert_eq!(forgejo["service"], "Forgejo");
    let config = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/home/josh/.config")
        .unwrap();
    assert_eq!(config["relative"], ".config");
    // What NixOS makes is generated, never a suggestion to act on.
    let generated: Vec<&str> = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] == "generated")
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    for path in [
        "/etc/ssh/sshd_config",
        "/etc/static",
        "/etc/passwd",
        "/etc/sudoers",
        "/etc/resolv.conf",
        "/etc/pam.d/sshd",
    ] {
        assert!(
            generated.contains(&path),
            "{path} is generated: {generated:?}"
        );
    }
    // Never broader than needed.
    for s in v["suggestions"].as_array().unwrap() {
        let p = s["path"].as_str().unwrap();
        assert!(
            !["/", "/var", "/var/lib", "/etc", "/home/josh", "/home"].contains(&p),
            "{p}"
        );
    }
}

/// O001, the gateway: DynamicUser state and a link systemd makes.
#[test]
fn gateway_audit() {
    let t = Tree::new();
    t.file("var/lib/vaultwarden/db.sqlite3", "vault");
    t.file("var/lib/postgresql/16/base/1", "x");
    t.file("var/lib/fail2ban/fail2ban.sqlite3", "bans");
    t.file("var/lib/private/AdGuardHome/data/sessions.db", "s");
    t.link("var/lib/AdGuardHome", "private/AdGuardHome");
    t.dir("var/lib/empty-service");
    let (_, v) = t.json(&["audit", "--format", "json"]);
    assert_eq!(
        verdicts(&v),
        own(&[
            ("/var/lib/fail2ban", "persist", None),
            ("/var/lib/postgresql", "persist", None),
            ("/var/lib/private", "persist", None),
            ("/var/lib/vaultwarden", "persist", None),
        ])
    );
    // DynamicUser= state must be persisted with mode 0700.
    let private = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/var/lib/private")
        .unwrap();
    assert_eq!(private["mode"], "0700");
    let text = String::from_utf8(t.imperm(&["audit", "--format", "nix"]).stdout).unwrap();
    assert!(
        text.contains("{ directory = \"/var/lib/private\"; mode = \"0700\"; }"),
        "{text}"
    );
}

/// L001 and H003 with their own persisted sets (from Nix JSON and from a config file):
/// what is persisted is not walked and not suggested.
#[test]
fn persisted_paths_are_left_out() {
    let t = Tree::new();
    t.file("var/lib/headscale/db.sqlite", "nodes");
    t.file("var/lib/dnsmasq/dnsmasq.leases", "lease");
    t.file("var/lib/tailscale/tailscaled.state", "state");
    let json = t.config(
        "persistence.json",
        r#"{"/persist": {"directories": ["/var/lib/headscale", "/var/lib/tailscale"]}}"#,
    );
    let (code, v) = t.json(&["--persistence-json", &json, "audit", "--format", "json"]);
    assert_eq!(code, 1);
    assert_eq!(verdicts(&v), own(&[("/var/lib/dnsmasq", "persist", None)]));

    let config = t.config(
        "imperm.toml",
        "[persistence.\"/persist\"]\ndirectories = [\"/var/lib/headscale\", \"/var/lib/tailscale\", \"/var/lib/dnsmasq\"]\n",
    );
    let (code, v) = t.json(&["--config", &config, "audit", "--format", "json"]);
    assert_eq!(code, 0, "nothing left to persist: exit 0");
    assert_eq!(verdicts(&v), own(&[]));
}

/// Juni, the laptop: home paths become `users.josh` entries relative to the home.
#[test]
fn laptop_home_paths_become_user_entries() {
    let t = Tree::new();
    t.file("home/josh/.ssh/id_ed25519", "key");
    t.file("home/josh/.mozilla/firefox/profiles.ini", "[Profile0]");
    t.file("home/josh/.local/share/fish/fish_history", "ls");
    t.file("home/josh/.local/state/wireplumber/x", "y");
    t.file("home/josh/Downloads/iso", "big");
    t.file("home/josh/.zsh_history", "ls");
    t.link(
        "home/josh/.nix-profile",
        "/nix/var/nix/profiles/per-user/josh/profile",
    );
    t.file("root/.bash_history", "reboot");
    let config = t.config(
        "imperm.toml",
        "[persistence.\"/persist\"]\nusers.josh.directories = [\".ssh\"]\n",
    );
    let (_, v) = t.json(&["--config", &config, "audit", "--format", "json"]);
    assert_eq!(
        verdicts(&v),
        own(&[
            ("/home/josh/.local/share", "persist", Some("josh")),
            ("/home/josh/.local/state", "persist", Some("josh")),
            ("/home/josh/.mozilla", "persist", Some("josh")),
            ("/home/josh/.zsh_history", "persist", Some("josh")),
            ("/home/josh/Downloads", "persist", Some("josh")),
            ("/root/.bash_history", "persist", Some("root")),
        ])
    );
    let out = t.imperm(&["--config", &config, "audit", "--format", "nix"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("  users.josh = {\n    directories = [\n      \".local/share\"\n      \".local/state\"\n      \".mozilla\"\n      \"Downloads\"\n    ];\n    files = [\n      \".zsh_history\"\n    ];\n  };\n"), "{text}");
}

/// Deterministic bytes that look random, as a LUKS key file's do.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// The suggestion for `path`.
fn suggestion<'v>(v: &'v Value, path: &str) -> &'v Value {
    v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == path)
        .unwrap_or_else(|| panic!("no suggestion for {path}: {v}"))
}

const OPENSSH_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n";

/// H003, the router, with /boot on the root filesystem (issue 12): /boot is walked like
/// any directory of the root, so the seed's LUKS key there is found; other key files are
/// known by what they are (a name, a detached LUKS header, a private key's header), and say
/// so (`source: content: …`). The bootloader's own files are left to review.
#[test]
fn router_keys_under_boot_on_the_root_are_persist() {
    let t = Tree::new();
    t.bytes("boot/keyfile_nvme0n1p1", &noise(4096, 1));
    t.bytes("boot/crypto_keyfile.bin", &noise(512, 2));
    let mut header = b"LUKS\xba\xbe\x00\x02".to_vec();
    header.resize(16384, 0);
    t.bytes("boot/nvme1n1.hdr", &header);
    t.file("boot/grub/grub.cfg", "menuentry NixOS {}");
    t.file("boot/kernels/abc-linux-6.12-bzImage", "kernel");
    t.file("var/lib/AdGuardHome/AdGuardHome.yaml", "dns: {}");
    t.file("var/lib/dnsmasq/dnsmasq.leases", "lease");
    // Keys in /etc: one beside what NixOS generates, one in a directory of its own.
    t.link("etc/nix/nix.conf", "/etc/static/nix/nix.conf");
    t.file("etc/nix/id_rsa", OPENSSH_KEY);
    t.file(
        "etc/age/keys.txt",
        "# created: 2026-01-01T00:00:00Z\n# public key: age1qqq\nAGE-SECRET-KEY-1QQQQ\n",
    );
    t.file("etc/motd.local", "welcome");
    let (code, v) = t.json(&["audit", "--format", "json"]);
    assert_eq!(code, 1);
    assert_eq!(
        verdicts(&v),
        own(&[
            ("/boot/crypto_keyfile.bin", "persist", None),
            ("/boot/keyfile_nvme0n1p1", "persist", None),
            ("/boot/nvme1n1.hdr", "persist", None),
            ("/etc/age", "persist", None),
            ("/etc/nix/id_rsa", "persist", None),
            ("/var/lib/AdGuardHome", "persist", None),
            ("/var/lib/dnsmasq", "persist", None),
            ("/boot/grub", "review", None),
            ("/boot/kernels", "review", None),
            ("/etc/motd.local", "review", None),
        ])
    );
    let source = |p: &str| suggestion(&v, p)["source"].as_str().unwrap().to_string();
    assert_eq!(source("/boot/keyfile_nvme0n1p1"), "knowledge");
    for (path, what) in [
        (
            "/boot/crypto_keyfile.bin",
            "content: a key file, by its name",
        ),
        ("/boot/nvme1n1.hdr", "content: a LUKS header"),
        // The knowledge knows keys put next to nix.conf; content finds the rest.
        ("/etc/nix/id_rsa", "knowledge"),
        ("/etc/age", "content: an age secret key"),
    ] {
        assert_eq!(source(path), what, "{path}");
    }
    // The reason says what was found where.
    let reason = suggestion(&v, "/etc/age")["reason"].as_str().unwrap();
    assert!(reason.contains("keys.txt"), "{reason}");
    let nix = String::from_utf8(t.imperm(&["audit", "--format", "nix"]).stdout).unwrap();
    for path in [
        "/boot/keyfile_nvme0n1p1",
        "/boot/crypto_keyfile.bin",
        "/boot/nvme1n1.hdr",
        "/etc/nix/id_rsa",
        "/etc/age",
    ] {
        assert!(nix.contains(&format!("\"{path}\"")), "{path}: {nix}");
    }
}

/// /boot on a filesystem of its own (the EFI system partition) is not the root's: the walk
/// does not enter it, keys or not, and says so. The mount lives in a private mount
/// namespace that ends with the command.
#[test]
fn boot_on_its_own_filesystem_is_not_walked() {
    if !as_root("boot_on_its_own_filesystem_is_not_walked") {
        return;
    }
    let t = Tree::new();
    t.dir("boot");
    let script = r#"set -e
mount -t tmpfs -o size=1m none "$1/boot"
printf key > "$1/boot/keyfile_nvme0n1p1"
exec "$2" --root "$1" audit --format json"#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(t.root())
        .arg(env!("CARGO_BIN_EXE_imperm"))
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdicts(&v), own(&[]));
    assert_eq!(
        v["skipped"],
        serde_json::json!([{"path": "/boot", "why": "another filesystem or subvolume"}])
    );
}

/// Juni, the laptop (issue 12): in a home directory, a directory holding git repositories
/// or a database (known by its header, however deep) is persisted, and so is Flatpak's
/// per-user data (`~/.var/app`); `.config` and `.local/share` stay whole units; the rest of
/// the home stays to review.
#[test]
fn laptop_repositories_databases_and_flatpak_data_are_persist() {
    let t = Tree::new();
    t.file(
        "home/josh/projects/imperm/.git/HEAD",
        "ref: refs/heads/main\n",
    );
    t.file("home/josh/projects/imperm/src/main.rs", "fn main() {}\n");
    t.file("home/josh/projects/dotfiles/.git/config", "[core]\n");
    t.file("home/josh/projects/README", "my projects");
    t.file(
        "home/josh/.var/app/org.mozilla.firefox/.mozilla/firefox/profiles.ini",
        "[Profile0]",
    );
    t.file("home/josh/.var/app/com.spotify.Client/config/x", "y");
    let mut db = b"SQLite format 3\0".to_vec();
    db.resize(4096, 0);
    t.bytes("home/josh/recipes/2026/recipes.db", &db);
    t.file("home/josh/recipes/index.txt", "soup");
    t.file("home/josh/scratch/todo.txt", "buy milk");
    t.file("home/josh/.config/nvim/init.lua", "vim.o.number = true");
    t.file("home/josh/.local/share/fish/fish_history", "ls");
    t.file("home/josh/.local/share/keyrings/login.keyring", "k");
    let config = t.config(
        "imperm.toml",
        "[persistence.\"/persist\"]\nusers.josh.directories = [\".ssh\"]\n",
    );
    let (_, v) = t.json(&["--config", &config, "audit", "--format", "json"]);
    assert_eq!(
        verdicts(&v),
        own(&[
            ("/home/josh/.config", "persist", Some("josh")),
            ("/home/josh/.local/share", "persist", Some("josh")),
            ("/home/josh/.var/app", "persist", Some("josh")),
            ("/home/josh/projects", "persist", Some("josh")),
            ("/home/josh/recipes", "persist", Some("josh")),
            ("/home/josh/scratch", "review", Some("josh")),
        ])
    );
    let projects = suggestion(&v, "/home/josh/projects");
    assert_eq!(projects["source"], "content: a git repository");
    assert!(
        projects["reason"].as_str().unwrap().contains("/.git"),
        "{projects}"
    );
    let recipes = suggestion(&v, "/home/josh/recipes");
    assert_eq!(recipes["source"], "content: a SQLite database");
    assert!(
        recipes["reason"]
            .as_str()
            .unwrap()
            .contains("2026/recipes.db"),
        "{recipes}"
    );
    assert_eq!(suggestion(&v, "/home/josh/.var/app")["source"], "knowledge");
    let out = t.imperm(&["--config", &config, "audit", "--format", "nix"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("  users.josh = {\n    directories = [\n      \".config\"\n      \".local/share\"\n      \".var/app\"\n      \"projects\"\n      \"recipes\"\n    ];\n  };\n"),
        "{text}"
    );
}

/// Issue 12: an entry whose owner, group or mode differ from what impermanence and
/// preservation make (root:root 0755; a user's own entries user:group 0755; preservation's
/// files 0644) carries them, in JSON and in both Nix forms, with names from the tree's own
/// /etc/passwd and /etc/group (numbers when a name is unknown), so that persisting it does
/// not hand a service's directory to root. impermanence sets no owner on a file (it links
/// the one there): it gets its parent directory's.
#[test]
fn owners_and_modes_that_differ_are_in_json_and_nix() {
    if !as_root("owners_and_modes_that_differ_are_in_json_and_nix") {
        return;
    }
    let t = Tree::new();
    t.file(
        "etc/passwd",
        "root:x:0:0::/root:/bin/sh\njosh:x:1000:100::/home/josh:/bin/sh\nforgejo:x:991:988::/var/lib/forgejo:/bin/sh\n",
    );
    t.file("etc/group", "root:x:0:\nusers:x:100:\nforgejo:x:988:\n");
    t.file("var/lib/forgejo/data/forgejo.db", "x");
    t.chown("var/lib/forgejo", 991, 988);
    t.chmod("var/lib/forgejo", 0o750);
    t.file("var/lib/orphan/x", "x");
    t.chown("var/lib/orphan", 4242, 4343);
    t.file("var/lib/plain/x", "x");
    t.file("home/josh/.ssh/id_ed25519", OPENSSH_KEY);
    t.chmod("home/josh/.ssh", 0o700);
    t.file("home/josh/.config/git/config", "[user]");
    t.file("home/josh/.local/share/x", "x");
    t.chown("home/josh/.local/share", 0, 0);
    t.link("etc/secret/app.conf", "/etc/static/secret/app.conf");
    t.file("etc/secret/token.key", "token");
    t.chown("etc/secret/token.key", 991, 988);
    t.chmod("etc/secret/token.key", 0o640);
    t.chown("etc/secret", 991, 988);
    t.chmod("etc/secret", 0o700);
    t.link("etc/nix/nix.conf", "/etc/static/nix/nix.conf");
    t.file("etc/nix/id_rsa", OPENSSH_KEY);
    t.chmod("etc/nix/id_rsa", 0o600);
    let (_, v) = t.json(&["audit", "--format", "json"]);
    let perms = |p: &str| {
        let s = suggestion(&v, p);
        [
            s["owner"].clone(),
            s["group"].clone(),
            s["mode"].clone(),
            s["parent"].clone(),
        ]
    };
    use serde_json::json;
    let none = Value::Null;
    let cases = [
        (
            "/var/lib/forgejo",
            [
                json!("forgejo"),
                json!("forgejo"),
                json!("0750"),
                none.clone(),
            ],
        ),
        (
            "/var/lib/orphan",
            [json!("4242"), json!("4343"), none.clone(), none.clone()],
        ),
        (
            "/var/lib/plain",
            [none.clone(), none.clone(), none.clone(), none.clone()],
        ),
        (
            "/home/josh/.ssh",
            [none.clone(), none.clone(), json!("0700"), none.clone()],
        ),
        (
            "/home/josh/.config",
            [none.clone(), none.clone(), none.clone(), none.clone()],
        ),
        (
            "/home/josh/.local/share",
            [json!("root"), json!("root"), none.clone(), none.clone()],
        ),
        (
            "/etc/secret/token.key",
            [
                json!("forgejo"),
                json!("forgejo"),
                json!("0640"),
                json!({"owner": "forgejo", "group": "forgejo", "mode": "0700"}),
            ],
        ),
        (
            "/etc/nix/id_rsa",
            [none.clone(), none.clone(), json!("0600"), none.clone()],
        ),
    ];
    for (path, want) in cases {
        assert_eq!(perms(path), want, "{path}");
    }
    let nix = |style: &str| {
        String::from_utf8(
            t.imperm(&["audit", "--format", "nix", "--style", style])
                .stdout,
        )
        .unwrap()
    };
    let text = nix("impermanence");
    for line in [
        r#"{ directory = "/var/lib/forgejo"; user = "forgejo"; group = "forgejo"; mode = "0750"; }"#,
        r#"{ directory = "/var/lib/orphan"; user = "4242"; group = "4343"; }"#,
        r#"    "/var/lib/plain""#,
        r#"{ file = "/etc/secret/token.key"; parentDirectory = { user = "forgejo"; group = "forgejo"; mode = "0700"; }; }"#,
        r#"    "/etc/nix/id_rsa""#,
        r#"{ directory = ".ssh"; mode = "0700"; }"#,
        r#"{ directory = ".local/share"; user = "root"; group = "root"; }"#,
        r#"      ".config""#,
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    let text = nix("preservation");
    for line in [
        r#"{ directory = "/var/lib/forgejo"; user = "forgejo"; group = "forgejo"; mode = "0750"; }"#,
        r#"{ file = "/etc/secret/token.key"; user = "forgejo"; group = "forgejo"; mode = "0640"; configureParent = true; parent = { user = "forgejo"; group = "forgejo"; mode = "0700"; }; }"#,
        r#"{ file = "/etc/nix/id_rsa"; mode = "0600"; }"#,
        r#"{ directory = ".ssh"; mode = "0700"; }"#,
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

/// Issue 12, attacked: telling what a file is never follows a symlink (to /dev/zero, to a
/// key outside the tree), never opens a FIFO or a device (a FIFO would hang the audit),
/// reads only a bounded head of a huge file, takes names that are not UTF-8, keeps access
/// times, and finds a key at the bottom of a deep tree; a `.git` that is a file naming its
/// repository (a worktree) marks a work tree, one that is a symlink or holds anything else
/// does not.
#[test]
fn what_tells_content_apart_is_read_safely() {
    if !as_root("what_tells_content_apart_is_read_safely") {
        return;
    }
    let t = Tree::new();
    let outside = TempDir::new().unwrap();
    fs::write(outside.path().join("id"), OPENSSH_KEY).unwrap();
    t.link("opt/links/zero.key", "/dev/zero");
    t.link("opt/links/id", outside.path().join("id").to_str().unwrap());
    t.link("opt/links/keyfile", "/etc/shadow");
    t.dir("opt/special");
    let fifo = t.root().join("opt/special/keyfile");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let dev = t.root().join("opt/special/luks.key");
    assert!(
        Command::new("mknod")
            .arg(&dev)
            .args(["c", "1", "5"])
            .status()
            .unwrap()
            .success()
    );
    // 1 TiB, sparse: only its head is read.
    let mut db = b"SQLite format 3\0".to_vec();
    db.resize(4096, 0);
    t.bytes("opt/huge/blob", &db);
    fs::OpenOptions::new()
        .write(true)
        .open(t.root().join("opt/huge/blob"))
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    t.dir("opt/odd");
    fs::write(t.root().join("opt/odd").join(raw(b"\xff\xfe")), OPENSSH_KEY).unwrap();
    t.dir("opt/deep");
    deep_chain(&t.root().join("opt/deep"), 3000, "luks.key");
    t.file(
        "home/josh/work/feature/.git",
        "gitdir: /home/josh/projects/imperm/.git/worktrees/feature\n",
    );
    t.file("home/josh/work/feature/src.rs", "x");
    t.file(
        "home/josh/projects/imperm/.git/HEAD",
        "ref: refs/heads/main\n",
    );
    t.link("home/josh/linked/.git", "/home/josh/projects/imperm/.git");
    t.file("home/josh/junk/.git", "not a pointer");
    // Read once long ago, written since: a read under relatime would set the access time.
    t.file("opt/plain/notes.txt", "nothing secret");
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let probed = t.root().join("opt/plain/notes.txt");
    fs::File::options()
        .write(true)
        .open(&probed)
        .unwrap()
        .set_times(fs::FileTimes::new().set_accessed(old))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imperm"))
        .arg("--root")
        .arg(t.root())
        .args(["audit", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the audit hangs (a FIFO opened, or a huge file read whole)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert_eq!(
        verdicts(&v),
        own(&[
            ("/home/josh/projects", "persist", Some("josh")),
            ("/home/josh/work", "persist", Some("josh")),
            ("/opt/deep", "persist", None),
            ("/opt/huge", "persist", None),
            ("/opt/odd", "persist", None),
            ("/home/josh/junk", "review", Some("josh")),
            ("/home/josh/linked", "review", Some("josh")),
            ("/opt/links", "review", None),
            ("/opt/plain", "review", None),
            ("/opt/special", "review", None),
        ])
    );
    let source = |p: &str| suggestion(&v, p)["source"].as_str().unwrap().to_string();
    assert_eq!(source("/home/josh/work"), "content: a git work tree");
    assert_eq!(source("/opt/huge"), "content: a SQLite database");
    assert_eq!(source("/opt/odd"), "content: an OpenSSH private key");
    assert_eq!(source("/opt/deep"), "content: a key file, by its name");
    let deep = suggestion(&v, "/opt/deep")["reason"].as_str().unwrap();
    assert!(deep.contains("d/luks.key") && deep.len() < 400, "{deep}");
    let odd = suggestion(&v, "/opt/odd")["reason"].as_str().unwrap();
    assert!(odd.contains("\\xff\\xfe"), "{odd}");
    for p in [
        "/opt/links",
        "/opt/special",
        "/home/josh/linked",
        "/home/josh/junk",
    ] {
        assert!(!source(p).starts_with("content"), "{p}: {}", source(p));
    }
    assert_eq!(
        fs::metadata(&probed).unwrap().accessed().unwrap(),
        old,
        "the audit set the access time of a file it read"
    );
    // The FIFO and the device are still what they were (nothing replaced them).
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(
        fs::symlink_metadata(&dev)
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

/// Run as a user who cannot read a file: it is not a key as far as imperm can tell, which
/// is no error (its name and size are read); one that says so by its name still is.
#[test]
fn a_file_that_cannot_be_read_is_told_by_its_name_only() {
    if !as_root("a_file_that_cannot_be_read_is_told_by_its_name_only") {
        return;
    }
    let t = Tree::new();
    t.file("opt/vault/blob", OPENSSH_KEY);
    t.chmod("opt/vault/blob", 0o600);
    t.file("opt/keys/backup.key", "k");
    t.chmod("opt/keys/backup.key", 0o600);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_imperm"))
        .arg("--root")
        .arg(t.root())
        .args(["audit", "--format", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert_eq!(
        verdicts(&v),
        own(&[
            ("/opt/keys", "persist", None),
            ("/opt/vault", "review", None),
        ])
    );
}

/// Every string of a list in the snippet, with the attribute path leading to it.
fn nix_entries(text: &str) -> Vec<(String, String)> {
    fn attr(a: ast::Attr) -> String {
        match a {
            ast::Attr::Ident(i) => i.ident_token().unwrap().text().to_string(),
            ast::Attr::Str(s) => string(&s),
            ast::Attr::Dynamic(_) => panic!("dynamic attribute"),
        }
    }
    fn string(s: &ast::Str) -> String {
        s.normalized_parts()
            .into_iter()
            .map(|p| match p {
                ast::InterpolPart::Literal(t) => t,
                ast::InterpolPart::Interpolation(_) => panic!("interpolation"),
            })
            .collect()
    }
    fn walk(expr: ast::Expr, path: &[String], out: &mut Vec<(String, String)>) {
        match expr {
            ast::Expr::AttrSet(set) => {
                for apv in set.attrpath_values() {
                    let mut p = path.to_vec();
                    p.extend(apv.attrpath().unwrap().attrs().map(attr));
                    walk(apv.value().unwrap(), &p, out);
                }
            }
            ast::Expr::List(list) => {
                for item in list.items() {
                    match item {
                        ast::Expr::Str(s) => out.push((path.join("."), string(&s))),
                        ast::Expr::AttrSet(set) => {
                            for apv in set.attrpath_values() {
                                let key: Vec<String> =
                                    apv.attrpath().unwrap().attrs().map(attr).collect();
                                if key == ["directory"] || key == ["file"] {
                                    if let ast::Expr::Str(s) = apv.value().unwrap() {
                                        out.push((path.join("."), string(&s)));
                                    }
                                }
                            }
                        }
                        other => panic!("unexpected list item {other}"),
                    }
                }
            }
            _ => {}
        }
    }
    let parsed = rnix::Root::parse(&format!("{{\n{text}}}"));
    assert!(
        parsed.errors().is_empty(),
        "not Nix: {:?}\n{text}",
        parsed.errors()
    );
    let mut out = Vec::new();
    walk(parsed.tree().expr().unwrap(), &[], &mut out);
    out.sort();
    out
}

#[test]
fn check_format_nix_is_nix_that_persists_exactly_the_persist_suggestions() {
    let t = Tree::new();
    t.file("var/lib/forgejo/data/db", "x");
    t.file("var/lib/containers/storage/volumes/v/_data/x", "x");
    t.file("var/lib/containers/storage/overlay/l/x", "x");
    t.file("home/josh/.config/git/config", "[user]");
    t.file("home/josh/.gnupg/pubring.kbx", "k");
    t.file("etc/adjtime", "0.0 0 0.0");
    t.file("weird \"dir\"/${x}", "x");
    for style in ["impermanence", "preservation"] {
        let out = t.imperm(&["check", "--format", "nix", "--style", style]);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8(out.stdout).unwrap();
        let head = if style == "impermanence" {
            "environment.persistence./persist"
        } else {
            "preservation.preserveAt./persist"
        };
        let (_, v) = t.json(&["check", "--format", "json"]);
        let mut want: Vec<(String, String)> = v["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["verdict"] == "persist")
            .map(|s| {
                let list = if s["kind"] == "directory" {
                    "directories"
                } else {
                    "files"
                };
                match s["user"].as_str() {
                    Some(u) => (
                        format!("{head}.users.{u}.{list}"),
                        s["relative"].as_str().unwrap().to_string(),
                    ),
                    None => (
                        format!("{head}.{list}"),
                        s["path"].as_str().unwrap().to_string(),
                    ),
                }
            })
            .collect();
        want.sort();
        assert!(!want.is_empty());
        assert_eq!(nix_entries(&text), want, "{style}:\n{text}");
    }
}

#[test]
fn check_since_a_baseline_reports_only_what_changed() {
    let t = Tree::new();
    t.file("var/lib/activation/state", "written by activation");
    t.file("etc/activation.conf", "written by activation");
    let out = t.imperm(&["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("baseline: "), "{text}");
    assert!(t.root().join("run/imperm/baseline").exists());

    let (code, v) = t.json(&["check", "--format", "json"]);
    assert_eq!(code, 0, "nothing changed since the baseline: {v}");
    assert_eq!(verdicts(&v), own(&[]));
    assert!(
        v["baseline"]
            .as_str()
            .unwrap()
            .ends_with("run/imperm/baseline")
    );

    t.file("var/lib/newservice/db", "new since boot");
    t.file("var/lib/activation/more", "new file in an old directory");
    fs::write(t.root().join("etc/activation.conf"), "changed at runtime").unwrap();
    let (code, v) = t.json(&["check", "--format", "json"]);
    assert_eq!(code, 1);
    assert_eq!(
        verdicts(&v),
        own(&[
            ("/var/lib/activation", "persist", None),
            ("/var/lib/newservice", "persist", None),
            ("/etc/activation.conf", "review", None),
        ])
    );
    let activation = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/var/lib/activation")
        .unwrap();
    assert_eq!(activation["files"], 1, "only the new file counts");
    // audit ignores the baseline.
    let (_, v) = t.json(&["audit", "--format", "json"]);
    let audit = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/var/lib/activation")
        .unwrap();
    assert_eq!(audit["files"], 2);
}

#[test]
fn ignore_globs_and_user_rules_from_the_configuration() {
    let t = Tree::new();
    t.file("var/lib/scratch/x", "x");
    t.file("var/lib/keep/x", "x");
    t.file("var/lib/keep/tmp/y.tmp", "y");
    t.file("srv/media/film", "x");
    let config = t.config(
        "imperm.toml",
        r#"[check]
ignore = ["/var/lib/scratch", "/var/lib/scratch/**", "**/*.tmp"]
[[check.rule]]
path = "/srv/*"
verdict = "persist"
reason = "the NAS's shares"
"#,
    );
    let (_, v) = t.json(&["--config", &config, "audit", "--format", "json"]);
    assert_eq!(
        verdicts(&v),
        own(&[
            ("/srv/media", "persist", None),
            ("/var/lib/keep", "persist", None)
        ])
    );
    let media = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/srv/media")
        .unwrap();
    assert_eq!(media["reason"], "your rule for /srv/*: the NAS's shares");
    let keep = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/var/lib/keep")
        .unwrap();
    assert_eq!(keep["files"], 1, "the .tmp file is ignored");
}

#[test]
fn symlinks_are_never_followed_out_of_the_tree() {
    let t = Tree::new();
    let outside = TempDir::new().unwrap();
    fs::write(outside.path().join("secret"), "outside").unwrap();
    t.link("var/lib/sneaky", outside.path().to_str().unwrap());
    t.file("var/lib/real/x", "x");
    let (_, v) = t.json(&["audit", "--format", "json"]);
    let sneaky = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/var/lib/sneaky")
        .unwrap();
    assert_eq!(sneaky["kind"], "file", "a link is reported as itself");
    assert_eq!(sneaky["files"], 1);
    assert!(
        !v.to_string().contains("/var/lib/sneaky/secret"),
        "nothing behind the link was walked"
    );
}

#[test]
fn human_output_groups_by_verdict_with_sizes() {
    let t = Tree::new();
    t.file("var/lib/forgejo/db", &"x".repeat(2048));
    t.file("var/cache/nginx/c", "c");
    let out = t.imperm(&["audit", "--color", "never"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "persist: a reset loses this (1)");
    assert!(
        lines[1].starts_with("  /var/lib/forgejo ")
            && lines[1].contains("1 file")
            && lines[1].contains("2.0 KiB"),
        "{text}"
    );
    assert!(
        text.contains("ephemeral: safe to lose (1)\n  /var/cache/nginx"),
        "{text}"
    );
    assert!(text.contains("generated: "), "{text}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("1 to persist, 0 to review, 1 ephemeral · "),
        "{text}"
    );
}

/// A name from raw bytes.
fn raw(bytes: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(bytes)
}

/// The `directories` a snippet persists, as Nix evaluates them (exact bytes).
fn nix_directories(snippet: &str) -> Vec<String> {
    let expr =
        format!("let m = {{\n{snippet}}}; in m.environment.persistence.\"/persist\".directories");
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{expr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Names that are not UTF-8, hold a newline or a backslash: JSON stays one whole document
/// with every path escaped losslessly, human output keeps one line per entry, and the Nix
/// snippet names each path exactly or leaves it out with a warning, never another path.
#[test]
fn odd_names_are_exact_in_json_human_and_nix() {
    let t = Tree::new();
    let names: [&[u8]; 3] = [b"a\xff\xfeb", b"back\\slash", b"new\nline"];
    for name in names {
        let dir = t.root().join("var/lib").join(raw(name));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("state"), "x").unwrap();
    }
    let escaped = [
        "/var/lib/a\\xff\\xfeb",
        "/var/lib/back\\x5cslash",
        "/var/lib/new\\x0aline",
    ];
    for command in ["audit", "check"] {
        let out = t.imperm(&[command, "--format", "json"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{command}: not one JSON document ({e})"));
        let persist: Vec<&str> = v["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["verdict"] == "persist")
            .map(|s| s["path"].as_str().unwrap())
            .collect();
        assert_eq!(persist, escaped, "{command}");
        for (shown, name) in escaped.iter().zip(names) {
            let back = imperm::paths::unescape(shown).unwrap();
            assert_eq!(back, Path::new("/var/lib").join(raw(name)), "lossless");
            assert!(t.root().join(back.strip_prefix("/").unwrap()).is_dir());
        }

        let out = t.imperm(&[command, "--color", "never"]);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8(out.stdout).expect("human output is text");
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("persist: a reset loses this (3)"))
            .unwrap_or_else(|| panic!("{text}"));
        for (line, shown) in lines[at + 1..at + 4].iter().zip(escaped) {
            assert!(
                line.starts_with(&format!("  {shown} ")),
                "{line:?} in\n{text}"
            );
        }

        let out = t.imperm(&[command, "--format", "nix"]);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8(out.stdout).expect("the snippet is text");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains('\u{fffd}'), "{text}");
        assert!(
            stderr.contains("warning") && stderr.contains("/var/lib/a\\xff\\xfeb"),
            "{stderr}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("# ")
                && l.contains("/var/lib/a\\xff\\xfeb")
                && l.contains("UTF-8")),
            "{text}"
        );
        // A control character is left out too: imperm's configuration refuses it.
        assert!(
            text.lines().any(|l| l.starts_with("# ")
                && l.contains("/var/lib/new\\x0aline")
                && l.contains("control character")),
            "{text}"
        );
        if common::nix_available("odd_names_are_exact_in_json_human_and_nix") {
            assert_eq!(nix_directories(&text), ["/var/lib/back\\slash"], "{text}");
        }
    }
}

/// On a machine that is not NixOS the audit says so before anything else.
#[test]
fn a_root_that_does_not_look_like_nixos_says_so_first() {
    let dir = TempDir::new().unwrap();
    for (rel, content) in [
        ("usr/lib/libc.so.6", "elf"),
        ("var/lib/dpkg/status", "Package: bash"),
        ("opt/thing/bin", "elf"),
        ("etc/debian_version", "12.8"),
    ] {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["audit", "--color", "never"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("note: ")
            && first.contains("does not look like NixOS")
            && first.contains("/etc/NIXOS")
            && first.contains("ID=nixos"),
        "{text}"
    );
    let v: Value = serde_json::from_slice(&run(&["audit", "--format", "json"]).stdout).unwrap();
    assert_eq!(v["not_nixos"], true);
    assert!(
        v["notes"][0]
            .as_str()
            .unwrap()
            .contains("does not look like NixOS"),
        "{v}"
    );
    // A NixOS tree carries no such note.
    let t = Tree::new();
    t.file("var/lib/forgejo/db", "x");
    let (_, v) = t.json(&["audit", "--format", "json"]);
    assert_eq!(v["not_nixos"], false);
    assert_eq!(v["notes"], serde_json::json!([]));
    let text = String::from_utf8(t.imperm(&["audit"]).stdout).unwrap();
    assert!(!text.contains("NixOS ("), "{text}");
    assert!(text.starts_with("persist: "), "{text}");
}

/// Debian with Nix installed has a /nix/store: that does not make it NixOS. What decides is
/// `/etc/NIXOS`, or `ID=nixos` in os-release (read as the tree sees it: on NixOS it is a
/// link into /etc/static and the store).
#[test]
fn nix_on_another_distribution_is_not_nixos_and_os_release_can_say_it_is() {
    let dir = TempDir::new().unwrap();
    let write = |rel: &str, content: &str| {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    };
    write("nix/store/abc-hello/bin/hello", "elf");
    write("var/lib/dpkg/status", "Package: nix-bin");
    write(
        "etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nID_LIKE=\"nixos\"\n",
    );
    let audit = || -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(dir.path())
            .args(["audit", "--format", "json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = audit();
    assert_eq!(v["not_nixos"], true, "a store alone is not NixOS: {v}");
    // NixOS's os-release, reached through links as on a real host (no /etc/NIXOS).
    fs::remove_file(dir.path().join("etc/os-release")).unwrap();
    write(
        "nix/store/xyz-etc-os-release",
        "NAME=NixOS\nID=\"nixos\"\nVERSION_ID=\"26.05\"\n",
    );
    symlink(
        "/nix/store/xyz-etc-os-release",
        dir.path().join("etc/static-os-release"),
    )
    .unwrap();
    symlink("/etc/static-os-release", dir.path().join("etc/os-release")).unwrap();
    let v = audit();
    assert_eq!(v["not_nixos"], false, "{v}");
    assert_eq!(v["notes"], serde_json::json!([]));
    // Without /etc/os-release, /usr/lib/os-release is read (os-release(5)).
    fs::remove_file(dir.path().join("etc/os-release")).unwrap();
    write("usr/lib/os-release", "ID=nixos\n");
    assert_eq!(audit()["not_nixos"], false);
    write("usr/lib/os-release", "ID=debian\n");
    assert_eq!(audit()["not_nixos"], true);
}

/// Whether root-only tests can run; under CI they must.
fn as_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: must run as root in CI");
    }
    eprintln!("SKIPPED {test}: not running as root");
    false
}

/// A bind mount of a directory of the tree onto another inside it shares the device
/// number; the walk must still stop at it, and say so. The mounts live in a private
/// mount namespace that ends with the command.
#[test]
fn bind_mounts_inside_the_tree_are_not_walked_twice() {
    if !as_root("bind_mounts_inside_the_tree_are_not_walked_twice") {
        return;
    }
    let t = Tree::new();
    t.file("var/lib/svc/db", "data");
    t.dir("srv/mirror");
    t.file("etc/bound.conf", "");
    let script = r#"set -e
mount --bind "$1/var/lib/svc" "$1/srv/mirror"
mount --bind "$1/var/lib/svc/db" "$1/etc/bound.conf"
exec "$2" --root "$1" audit --format json"#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(t.root())
        .arg(env!("CARGO_BIN_EXE_imperm"))
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("/srv") || *p == "/etc/bound.conf"),
        "the bind mounts are not state of this root: {paths:?}"
    );
    let svc = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/var/lib/svc")
        .unwrap();
    assert_eq!(svc["files"], 1);
    let skipped: Vec<(&str, &str)> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["path"].as_str().unwrap(), s["why"].as_str().unwrap()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("/etc/bound.conf", "another mount"),
            ("/srv/mirror", "another mount")
        ]
    );
    // Nothing leaked out of the namespace.
    assert_eq!(
        fs::read_dir(t.root().join("srv/mirror")).unwrap().count(),
        0
    );
}

/// Creates a chain of `depth` directories named `d` below `base`, with `leaf` written at
/// the bottom; fd-relative, since the path is far longer than PATH_MAX.
fn deep_chain(base: &Path, depth: usize, leaf: &str) {
    use rustix::fs::{Mode, OFlags};
    let mut fd = rustix::fs::open(base, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for _ in 0..depth {
        match rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => panic!("{e}"),
        }
        fd = rustix::fs::openat(&fd, "d", OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .unwrap();
    }
    let file = rustix::fs::openat(
        &fd,
        leaf,
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&file, b"deep").unwrap();
}

/// A chain 10,000 directories deep: the walk must neither overflow its stack nor run out
/// of file descriptors, and must count what is at the bottom, in audit, baseline, check
/// and the walk-based diff.
#[test]
fn a_tree_ten_thousand_deep_is_walked_whole() {
    let t = Tree::new();
    let base = t.root().join("var/lib/deep");
    fs::create_dir_all(&base).unwrap();
    deep_chain(&base, 10_000, "bottom");
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            // std's remove_dir_all on a chain this deep is not to be relied on.
            let _ = Command::new("rm").arg("-rf").arg(self.0).status();
        }
    }
    let _cleanup = Cleanup(&base);
    let (code, v) = t.json(&["audit", "--format", "json"]);
    assert_eq!(code, 1, "{v}");
    let deep = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/var/lib/deep")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(deep["files"], 1);
    assert_eq!(deep["bytes"], 4);
    assert_eq!(v["errors"], serde_json::json!([]));

    let out = t.imperm(&["baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    deep_chain(&base, 10_000, "new");
    let (code, v) = t.json(&["check", "--format", "json"]);
    assert_eq!(code, 1);
    let deep = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/var/lib/deep")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(deep["files"], 1, "only the new file counts");
    let (_, v) = t.json(&["diff", "--format", "json"]);
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{v}");
    assert_eq!(changes[0]["change"], "added");
    assert!(changes[0]["path"].as_str().unwrap().ends_with("/d/d/new"));
}

/// `baseline` writes only beneath --root and never through a symlink in the tree; reads
/// under --root (the manifest, /etc/.clean) never follow one out of it.
#[test]
fn baseline_and_check_never_follow_a_symlink_out_of_the_tree() {
    let outside = TempDir::new().unwrap();
    // `run` itself a symlink, then `run/imperm`.
    for planted in ["run", "run/imperm"] {
        let t = Tree::new();
        t.link(planted, outside.path().to_str().unwrap());
        let out = t.imperm(&["baseline"]);
        assert_eq!(out.status.code(), Some(2), "{planted}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("symlink"), "{stderr}");
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            0,
            "{planted}: nothing written outside the tree"
        );
    }
    // The manifest itself a symlink: it is replaced, not written through.
    let t = Tree::new();
    let victim = outside.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    t.link("run/imperm/baseline", victim.to_str().unwrap());
    assert!(t.imperm(&["baseline"]).status.success());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!t.root().join("run/imperm/baseline").is_symlink());
    fs::remove_file(&victim).unwrap();

    // A manifest reached through an absolute symlink is the host's, not the tree's.
    let t = Tree::new();
    t.file("var/lib/svc/db", "x");
    let host = TempDir::new().unwrap();
    let other = Tree::new();
    other.file("var/lib/svc/db", "x");
    assert!(other.imperm(&["baseline"]).status.success());
    fs::create_dir_all(host.path().join("imperm")).unwrap();
    fs::copy(
        other.root().join("run/imperm/baseline"),
        host.path().join("imperm/baseline"),
    )
    .unwrap();
    t.link("run", host.path().to_str().unwrap());
    let (code, v) = t.json(&["check", "--format", "json"]);
    assert_eq!(v["baseline"], Value::Null, "{v}");
    assert_eq!(code, 1);

    // /etc/.clean through an absolute symlink is not the tree's list either.
    let t = Tree::new();
    fs::remove_file(t.root().join("etc/.clean")).unwrap();
    let list = host.path().join("clean");
    fs::write(&list, "custom.conf\n").unwrap();
    t.link("etc/.clean", list.to_str().unwrap());
    t.file("etc/custom.conf", "mine");
    let (_, v) = t.json(&["audit", "--format", "json"]);
    assert!(
        verdicts(&v).contains(&("/etc/custom.conf".into(), "review".into(), None)),
        "{v}"
    );
}

/// Run as a user who cannot read part of the tree: what cannot be read is named (JSON and
/// human), the rest is walked, and the exit code says the answer is not complete.
#[test]
fn what_cannot_be_read_is_named_and_the_rest_walked() {
    use std::os::unix::fs::PermissionsExt;
    if !as_root("what_cannot_be_read_is_named_and_the_rest_walked") {
        return;
    }
    let t = Tree::new();
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o755)).unwrap();
    t.file("var/lib/secret/key", "k");
    fs::set_permissions(
        t.root().join("var/lib/secret"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    t.file("var/cache/open/x", "x");
    let run = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(t.root())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["audit", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an incomplete answer is not a clean one: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["errors"],
        serde_json::json!(["/var/lib/secret: Permission denied"])
    );
    assert_eq!(verdicts(&v), own(&[("/var/cache/open", "ephemeral", None)]));
    let text = String::from_utf8(run(&["audit", "--color", "never"]).stdout).unwrap();
    assert!(
        text.contains("could not read 1 path:\n  /var/lib/secret: Permission denied\n"),
        "{text}"
    );
}

/// Directories made and removed while the walk runs: every run ends with one whole
/// answer, and what vanished is not an error (nothing of it is left to lose).
#[test]
fn a_tree_changing_under_the_walk_is_walked_without_failing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = Tree::new();
    t.file("var/lib/steady/x", "x");
    let churn = t.root().join("var/lib/churn");
    fs::create_dir_all(&churn).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let dir = churn.join(format!("d{}", i % 50));
                let _ = fs::create_dir_all(dir.join("a/b/c"));
                let _ = fs::write(dir.join("a/b/c/f"), "f");
                let _ = fs::remove_dir_all(churn.join(format!("d{}", (i + 25) % 50)));
                i += 1;
            }
        });
        // Stops the churn also when an assertion below fails (else the scope waits forever).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        for _ in 0..15 {
            for command in ["audit", "baseline", "check"] {
                let out = t.imperm(&[command, "--format", "json"]);
                let code = out.status.code();
                assert!(
                    matches!(code, Some(0 | 1)),
                    "{command}: {code:?} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let v: Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("{command}: not one JSON document ({e})"));
                if command != "baseline" {
                    assert_eq!(v["errors"], serde_json::json!([]), "{command}");
                }
            }
        }
    });
}

/// Every command that can run on a plain tree prints one whole JSON document when the
/// paths it reports (here the root itself) are not UTF-8.
#[test]
fn every_json_document_is_whole_with_a_root_that_is_not_utf8() {
    let base = TempDir::new().unwrap();
    let root = base.path().join(raw(b"host\xff\nroot"));
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/NIXOS"), "").unwrap();
    fs::create_dir_all(root.join("var/lib/svc")).unwrap();
    fs::write(root.join("var/lib/svc/db"), "x").unwrap();
    for args in [
        &["status"][..],
        &["lint"],
        &["audit"],
        &["check"],
        &["baseline"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .args(["--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e})"));
        let text = v.to_string();
        if args != ["lint"] {
            assert!(text.contains("host\\\\xff\\\\x0aroot"), "{args:?}: {text}");
        }
        assert!(!text.contains('\u{fffd}'), "{args:?}: {text}");
    }
}

/// NixOS makes `/etc/NIXOS` a regular (empty) file: only that counts. A directory, a FIFO
/// (never opened: no hang), a dangling symlink or one that leaves the tree for the host's
/// file does not; a symlink to a regular file of the tree does, as the tree sees it.
#[test]
fn etc_nixos_counts_only_as_a_regular_file_of_the_tree() {
    let dir = TempDir::new().unwrap();
    fs::create_dir_all(dir.path().join("etc")).unwrap();
    fs::write(dir.path().join("etc/os-release"), "ID=debian\n").unwrap();
    let nixos = dir.path().join("etc/NIXOS");
    let not_nixos = || -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--root")
            .arg(dir.path())
            .args(["audit", "--format", "json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        v["not_nixos"].clone()
    };
    let clear = || {
        let _ = fs::remove_dir(&nixos);
        let _ = fs::remove_file(&nixos);
    };
    fs::create_dir(&nixos).unwrap();
    assert_eq!(not_nixos(), true, "a directory");
    clear();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &nixos,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    assert_eq!(not_nixos(), true, "a FIFO");
    clear();
    symlink("/etc/nowhere", &nixos).unwrap();
    assert_eq!(not_nixos(), true, "a dangling symlink");
    clear();
    // The host's /etc/hostname (or whatever is there) must not be reached through it.
    let outside = TempDir::new().unwrap();
    fs::write(outside.path().join("NIXOS"), "").unwrap();
    symlink(outside.path().join("NIXOS"), &nixos).unwrap();
    assert_eq!(not_nixos(), true, "a symlink out of the tree");
    clear();
    symlink("../../../../../../../../etc/hostname-of-nobody", &nixos).unwrap();
    assert_eq!(not_nixos(), true, "a relative symlink climbing out");
    clear();
    fs::write(dir.path().join("etc/marker"), "").unwrap();
    symlink("/etc/marker", &nixos).unwrap();
    assert_eq!(
        not_nixos(),
        false,
        "a symlink to a regular file of the tree"
    );
    clear();
    fs::write(&nixos, "").unwrap();
    assert_eq!(not_nixos(), false, "the regular file NixOS makes");
}

/// The `files` and `bytes` of one suggestion (`audit`, `check` with or without a baseline).
fn counts(v: &Value, path: &str) -> (Value, Value) {
    let s = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == path)
        .unwrap_or_else(|| panic!("no {path} in {v}"));
    (s["files"].clone(), s["bytes"].clone())
}

/// A file with several names (hard links) in one unit is one file of its size, as on the
/// disk: trial 3 found 3 names of a 14 B file counted as "3 files 42 B".
#[test]
fn hard_links_in_a_unit_count_once() {
    let t = Tree::new();
    t.file("srv/hd/a", "fourteen bytes");
    t.file("srv/hd/sub/other", "1234");
    fs::hard_link(t.root().join("srv/hd/a"), t.root().join("srv/hd/b")).unwrap();
    fs::hard_link(t.root().join("srv/hd/a"), t.root().join("srv/hd/sub/c")).unwrap();
    for command in ["audit", "check"] {
        let (_, v) = t.json(&[command, "--format", "json"]);
        assert_eq!(counts(&v, "/srv/hd"), (2.into(), 18.into()), "{command}");
    }
    let out = t.imperm(&["baseline"]);
    assert!(out.status.success());
    // Since the baseline: new names of a new file, and a new name of an old one.
    t.file("srv/new/x", "seven b");
    fs::hard_link(t.root().join("srv/new/x"), t.root().join("srv/new/y")).unwrap();
    fs::hard_link(t.root().join("srv/hd/a"), t.root().join("srv/hd/d")).unwrap();
    let (_, v) = t.json(&["check", "--format", "json"]);
    assert_eq!(counts(&v, "/srv/new"), (1.into(), 7.into()), "{v}");
    // The link count moved: every name of the inode changed, one file.
    assert_eq!(counts(&v, "/srv/hd"), (1.into(), 14.into()), "{v}");
}
