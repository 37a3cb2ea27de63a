//! What a VM boots: Debian's kernel from the cache `tests/vm/fetch-kernel` fills, and an
//! initramfs built for this run from busybox-static, the freshly built imperm, this very
//! test binary (the guest helper), the libraries `ldd` lists for them, the kernel modules
//! the disks need, and `tests/vm/init`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where everything the guest runs lives, in the initramfs and (bind-mounted) in the
/// booted root, as a store path would on NixOS.
pub const TOOLS: &str = "/nix/tools";

/// The modules to load, besides what they depend on: the crypto algorithms bcachefs asks
/// for by name when it mounts (no `depends=` lists them; DESIGN.md, "Facts"), the disks'
/// driver and the two filesystems.
const ROOTS: [&str; 7] = [
    "crc32c_generic",
    "xxhash_generic",
    "chacha_generic",
    "poly1305_generic",
    "virtio_blk",
    "btrfs",
    "bcachefs",
];

pub struct Kernel {
    pub version: String,
    pub vmlinuz: PathBuf,
    modules: PathBuf,
}

impl Kernel {
    /// The newest kernel in the cache, or why there is none.
    pub fn find(cache: &Path) -> Result<Kernel, String> {
        let dir = cache.join("kernel");
        let mut versions: Vec<String> = fs::read_dir(&dir)
            .map_err(|e| format!("no kernel in {} ({e})", dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|v| dir.join(v).join("vmlinuz").is_file())
            .collect();
        versions.sort_by_key(|v| version_key(v));
        let version = versions
            .pop()
            .ok_or_else(|| format!("no kernel in {}", dir.display()))?;
        Ok(Kernel {
            vmlinuz: dir.join(&version).join("vmlinuz"),
            modules: dir.join(&version).join("modules"),
            version,
        })
    }

    /// The modules to load, in order (each after what it depends on), decompressed.
    fn modules(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut files = BTreeMap::new();
        index(&self.modules, &mut files)?;
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for root in ROOTS {
            visit(root, &files, &mut seen, &mut order)?;
        }
        Ok(order)
    }
}

/// "6.12.117+deb12-amd64" sorts by its numbers.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn index(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<(), String> {
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            index(&path, out)?;
        } else if let Some(name) = path.file_name().unwrap().to_str() {
            if let Some(stem) = name.strip_suffix(".ko.xz") {
                out.insert(stem.replace('-', "_"), path.clone());
            }
        }
    }
    Ok(())
}

fn visit(
    name: &str,
    files: &BTreeMap<String, PathBuf>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), String> {
    let name = name.replace('-', "_");
    if !seen.insert(name.clone()) {
        return Ok(());
    }
    let path = files
        .get(&name)
        .ok_or_else(|| format!("module {name} is not in the kernel package"))?;
    let out = Command::new("xz")
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|e| format!("xz: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "xz -dc {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let ko = out.stdout;
    for dep in modinfo(&ko, "depends") {
        visit(&dep, files, seen, order)?;
    }
    order.push((name, ko));
    Ok(())
}

/// The comma-separated values of a `.modinfo` key (`depends=a,b`).
fn modinfo(ko: &[u8], key: &str) -> Vec<String> {
    let needle = format!("\0{key}=");
    let Some(at) = ko
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
    else {
        return Vec::new();
    };
    let value = &ko[at + needle.len()..];
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A cpio archive in the kernel's `newc` format: entries in order, parents made first.
pub struct Cpio {
    buf: Vec<u8>,
    dirs: BTreeSet<Vec<u8>>,
    ino: u32,
    mtime: u32,
}

impl Cpio {
    pub fn new() -> Cpio {
        Cpio {
            buf: Vec::new(),
            dirs: BTreeSet::new(),
            ino: 1,
            mtime: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32),
        }
    }

    fn entry(&mut self, name: &[u8], mode: u32, data: &[u8]) {
        let name = name.strip_prefix(b"/").unwrap_or(name);
        if let Some(slash) = name.iter().rposition(|b| *b == b'/') {
            self.dir(&name[..slash], 0o755);
        }
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            self.mtime,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name);
        self.buf.push(0);
        self.pad(4);
        self.buf.extend_from_slice(data);
        self.pad(4);
    }

    fn pad(&mut self, to: usize) {
        while !self.buf.len().is_multiple_of(to) {
            self.buf.push(0);
        }
    }

    /// A directory (and its parents), once.
    pub fn dir(&mut self, name: &[u8], mode: u32) {
        let name = name.strip_prefix(b"/").unwrap_or(name).to_vec();
        if name.is_empty() || self.dirs.contains(&name) {
            return;
        }
        self.dirs.insert(name.clone());
        self.entry(&name, 0o040000 | mode, &[]);
    }

    pub fn file(&mut self, name: &[u8], mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, data);
    }

    pub fn symlink(&mut self, name: &[u8], target: &[u8]) {
        self.entry(name, 0o120777, target);
    }

    /// The archive, ended and padded so that another can follow it.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry(b"TRAILER!!!", 0, &[]);
        self.pad(512);
        self.buf
    }
}

/// The part of the initramfs every VM of a run shares.
pub fn base(kernel: &Kernel, imperm: &Path, work: &Path) -> Result<Vec<u8>, String> {
    let mut cpio = Cpio::new();
    for dir in [
        "dev", "proc", "sys", "run", "tmp", "top", "sysroot", "report", "mnt",
    ] {
        cpio.dir(dir.as_bytes(), 0o755);
    }
    cpio.file(b"init", 0o755, include_bytes!("init"));
    let bin = format!("{TOOLS}/bin");
    let busybox = which("busybox")?;
    let ldd = run("ldd", &[&busybox])?;
    if !ldd.contains("not a dynamic executable") && !ldd.contains("statically linked") {
        return Err(format!("{busybox} is not static (Debian: busybox-static)"));
    }
    cpio.file(
        format!("{bin}/busybox").as_bytes(),
        0o755,
        &read(Path::new(&busybox))?,
    );
    for applet in run(&busybox, &["--list"])?.lines() {
        if applet != "busybox" {
            cpio.symlink(format!("{bin}/{applet}").as_bytes(), b"busybox");
        }
    }
    // Both programs run through the dynamic loader in the tools' lib directory, the way a
    // store path's binary finds its own glibc: the booted root has no /lib64.
    let helper = std::env::current_exe().map_err(|e| e.to_string())?;
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/scenarios");
    // The scenario scripts' own maker of subvolumes, built as they say (plain rustc).
    let bchsubvol = work.join("bchsubvol.unstripped");
    let out = Command::new("rustc")
        .args(["-O", "--edition", "2024", "-o"])
        .arg(&bchsubvol)
        .arg(scenarios.join("bchsubvol.rs"))
        .output()
        .map_err(|e| format!("rustc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rustc bchsubvol.rs: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    for script in scripts()? {
        let file = scenarios.join(format!("{script}.sh"));
        cpio.file(
            format!("{TOOLS}/scenarios/{script}.sh").as_bytes(),
            0o755,
            &read(&file)?,
        );
    }
    let mut libs = BTreeMap::new();
    for (name, path) in [
        ("imperm", imperm),
        ("vm", helper.as_path()),
        ("bchsubvol", bchsubvol.as_path()),
    ] {
        let stripped = work.join(name);
        let ok = Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        let data = read(if ok { &stripped } else { path })?;
        cpio.file(format!("{TOOLS}/libexec/{name}").as_bytes(), 0o755, &data);
        let wrapper = format!(
            "#!{bin}/sh\nexec {TOOLS}/lib/ld-linux-x86-64.so.2 --library-path {TOOLS}/lib {TOOLS}/libexec/{name} \"$@\"\n"
        );
        cpio.file(
            format!("{bin}/{name}").as_bytes(),
            0o755,
            wrapper.as_bytes(),
        );
        for line in run("ldd", &[path.to_str().unwrap()])?.lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)"
            let lib = line.split("=>").last().unwrap().trim();
            if let Some(lib) = lib.split(' ').next().filter(|l| l.starts_with('/')) {
                libs.insert(
                    Path::new(lib).file_name().unwrap().to_owned(),
                    PathBuf::from(lib),
                );
            }
        }
    }
    if !libs.contains_key(std::ffi::OsStr::new("ld-linux-x86-64.so.2")) {
        return Err(format!("ldd names no ld-linux-x86-64.so.2: {libs:?}"));
    }
    for (name, path) in libs {
        let file = format!("{TOOLS}/lib/{}", name.to_string_lossy());
        cpio.file(file.as_bytes(), 0o755, &read(&path)?);
    }
    let mut order = String::new();
    for (i, (name, ko)) in kernel.modules()?.into_iter().enumerate() {
        let file = format!("{i:02}-{name}.ko");
        cpio.file(format!("{TOOLS}/modules/{file}").as_bytes(), 0o644, &ko);
        order.push_str(&file);
        order.push('\n');
    }
    cpio.file(
        format!("{TOOLS}/modules/order").as_bytes(),
        0o644,
        order.as_bytes(),
    );
    Ok(cpio.finish())
}

/// The scenario scripts of tests/vm/scenarios, by name (`bcachefs-ioctls`).
pub fn scripts() -> Result<Vec<String>, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/scenarios");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .into_string()
                .ok()?
                .strip_suffix(".sh")
                .map(String::from)
        })
        .collect();
    names.sort();
    Ok(names)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn which(program: &str) -> Result<String, String> {
    let out = run("sh", &["-c", &format!("command -v {program}")])
        .map_err(|_| format!("{program} is not installed"))?;
    Ok(out.trim().to_string())
}

pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    // ldd of a static binary exits 1 and says so.
    if !out.status.success() && program != "ldd" {
        return Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}
