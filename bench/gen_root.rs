//! Builds a synthetic root that looks like a service host, for the benchmarks:
//! `gen-root DIR [ENTRIES] [--changes N]`.
//!
//! Without `--changes`, fills DIR (which must be empty or missing) with about ENTRIES
//! entries (default 1,000,000): many /var/lib/SERVICE trees, caches, logs, a home, and a
//! NixOS-style /etc of symlinks into /etc/static. The layout is a pure function of ENTRIES.
//!
//! With `--changes N`, makes N changes to a tree made earlier: new files and directories,
//! appends, deletions, renames and chmods, spread over the services.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: gen-root DIR [ENTRIES] [--changes N]";
    let dir = PathBuf::from(args.get(1).expect(usage));
    if let Some(i) = args.iter().position(|a| a == "--changes") {
        let n: usize = args.get(i + 1).and_then(|v| v.parse().ok()).expect(usage);
        change(&dir, n);
        return;
    }
    let entries: u64 = args
        .get(2)
        .map(|v| v.parse().expect(usage))
        .unwrap_or(1_000_000);
    let made = generate(&dir, entries);
    println!("{made} entries in {}", dir.display());
}

/// A small deterministic generator, so every run builds the same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Gen {
    rng: Rng,
    made: u64,
    buf: Vec<u8>,
}

impl Gen {
    fn dir(&mut self, path: &Path) {
        fs::create_dir_all(path).expect("create directory");
        self.made += 1;
    }

    fn file(&mut self, path: &Path) {
        // Mostly tiny, as state files are; a few larger ones.
        let size = match self.rng.below(100) {
            0..40 => 0,
            40..85 => 1 + self.rng.below(200),
            85..98 => 200 + self.rng.below(3800),
            _ => 4096 + self.rng.below(28_000),
        } as usize;
        if self.buf.len() < size {
            self.buf.resize(size, b'x');
        }
        let mut f = fs::File::create(path).expect("create file");
        f.write_all(&self.buf[..size]).expect("write file");
        self.made += 1;
    }

    fn link(&mut self, target: &str, path: &Path) {
        symlink(target, path).expect("create symlink");
        self.made += 1;
    }

    /// A tree of about `files` files under `base`, `fanout` entries per directory.
    fn tree(&mut self, base: &Path, files: u64, fanout: u64) {
        self.dir(base);
        let dirs = files.div_ceil(fanout).max(1);
        let mut left = files;
        for d in 0..dirs {
            let sub = base.join(format!("d{:02}", d % 64)).join(format!("e{d}"));
            self.dir(&sub);
            let n = left.min(fanout);
            for f in 0..n {
                self.file(&sub.join(format!("f{f}.dat")));
            }
            left -= n;
        }
    }
}

fn generate(root: &Path, entries: u64) -> u64 {
    if root.exists() && fs::read_dir(root).expect("read DIR").next().is_some() {
        panic!("{} is not empty", root.display());
    }
    let mut g = Gen {
        rng: Rng(0x9E37_79B9_7F4A_7C15),
        made: 0,
        buf: Vec::new(),
    };
    let share = |fraction: f64| (entries as f64 * fraction) as u64;

    // /etc: NixOS links everything into /etc/static; a few real files are written at runtime.
    let etc = root.join("etc");
    g.dir(&etc);
    g.link(
        "/nix/store/0000000000000000000000000000000-etc/etc",
        &etc.join("static"),
    );
    for i in 0..share(0.0015).max(50) {
        let sub = etc.join(format!("conf{}", i % 40));
        if !sub.exists() {
            g.dir(&sub);
        }
        g.link(
            &format!("/etc/static/conf{}/file{i}", i % 40),
            &sub.join(format!("file{i}")),
        );
    }
    for name in ["machine-id", "adjtime", "passwd", "group", "shadow"] {
        g.file(&etc.join(name));
    }
    g.dir(&etc.join("ssh"));
    g.link("/etc/static/ssh/sshd_config", &etc.join("ssh/sshd_config"));
    g.file(&etc.join("ssh/ssh_host_ed25519_key"));

    // Services: most of the host.
    let services = (entries / 5000).clamp(10, 200);
    let per_service = share(0.70) / services;
    for s in 0..services {
        let fanout = 10 + g.rng.below(90);
        g.tree(
            &root.join(format!("var/lib/service{s:03}")),
            per_service,
            fanout,
        );
    }
    g.tree(&root.join("var/lib/postgresql/16/base"), share(0.02), 100);
    g.tree(
        &root.join("var/lib/containers/storage/overlay"),
        share(0.03),
        50,
    );
    g.tree(
        &root.join("var/lib/containers/storage/volumes"),
        share(0.005),
        20,
    );
    for c in 0..20 {
        g.tree(
            &root.join(format!("var/cache/cache{c:02}")),
            share(0.09) / 20,
            200,
        );
    }
    g.tree(&root.join("var/log/journal"), share(0.04), 100);
    g.tree(&root.join("home/josh/.config"), share(0.02), 30);
    g.tree(&root.join("home/josh/.cache"), share(0.04), 100);
    g.tree(&root.join("home/josh/projects"), share(0.04), 40);
    g.tree(&root.join("root"), share(0.001).max(1), 10);
    g.made
}

/// Makes `n` changes: per ten, 4 new files, 2 appends, 2 deletions, 1 rename, 1 chmod.
fn change(root: &Path, n: usize) {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut made = 0;
    let services: Vec<PathBuf> = fs::read_dir(root.join("var/lib"))
        .expect("a generated tree")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("service"))
        })
        .collect();
    let pick_file = |rng: &mut Rng| -> Option<PathBuf> {
        let svc = &services[rng.below(services.len() as u64) as usize];
        let d = fs::read_dir(svc.join(format!("d{:02}", rng.below(64)))).ok()?;
        let e = d.filter_map(|e| e.ok()).next()?.path();
        fs::read_dir(&e)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.is_file())
    };
    while made < n {
        let step = made % 10;
        let ok = match step {
            0..=3 => {
                let svc = &services[rng.below(services.len() as u64) as usize];
                let dir = svc.join(format!("new{}", made / 40));
                fs::create_dir_all(&dir).is_ok()
                    && fs::write(dir.join(format!("n{made}")), b"new").is_ok()
            }
            4 | 5 => pick_file(&mut rng).is_some_and(|f| {
                fs::OpenOptions::new()
                    .append(true)
                    .open(f)
                    .and_then(|mut f| f.write_all(b"more"))
                    .is_ok()
            }),
            6 | 7 => pick_file(&mut rng).is_some_and(|f| fs::remove_file(f).is_ok()),
            8 => pick_file(&mut rng)
                .is_some_and(|f| fs::rename(&f, f.with_extension(format!("moved{made}"))).is_ok()),
            _ => pick_file(&mut rng)
                .is_some_and(|f| fs::set_permissions(f, fs::Permissions::from_mode(0o600)).is_ok()),
        };
        if ok {
            made += 1;
        }
    }
    println!("{made} changes in {}", root.display());
}
