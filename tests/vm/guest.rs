//! The helper the boot script calls inside the VM (`vm guest COMMAND …`): what busybox
//! cannot do. It shares nothing with imperm's own code paths under test: subvolumes are
//! made with the kernel's ioctls directly, trees are read with std.
//!
//!   label DEV              the filesystem label (btrfs or bcachefs), as blkid reads it
//!   subvol PATH            a new, empty subvolume (btrfs or bcachefs)
//!   manifest DIR           every entry below DIR as JSON (see [`Entry`])
//!   time FILE CMD…         runs CMD, writes its wall time in nanoseconds to FILE, exits as it did
//!   time FILE --unit ARGV [VAR=VALUE…]
//!                          the same for the NUL-separated words of file ARGV, with only
//!                          PATH and the VARs in its environment, as systemd runs a unit
//!   report DIR DEV SLOT    the files of DIR as one JSON document into slot SLOT of DEV

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Bytes of the output disk each boot's report may use.
pub const SLOT_BYTES: u64 = 8 << 20;

/// One entry of a tree. Times are left out: a snapshot keeps them, but reading a tree
/// must not make two readings differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `d`, `f`, `l` or `o` (anything else).
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Files: the size and a digest of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Symlinks: the target, escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Directories that are a subvolume of their own (statx's `stx_subvol` differs from
    /// their parent's), and whether they can be written to (a read-only one refuses a
    /// `mkdir` with EROFS).
    #[serde(default)]
    pub subvol: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writable: Option<bool>,
}

/// A tree: escaped paths relative to its top ("" is the top itself) to entries.
pub type Manifest = BTreeMap<String, Entry>;

/// FNV-1a, 64 bits: the host computes the same of what it asked the guest to write.
pub fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub fn main(args: &[String]) -> i32 {
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["label", dev] => label(dev).map(|l| println!("{l}")),
        ["subvol", path] => subvol(Path::new(path)),
        ["manifest", dir] => {
            manifest(Path::new(dir)).map(|m| println!("{}", serde_json::to_string(&m).unwrap()))
        }
        ["time", file, ref cmd @ ..] if !cmd.is_empty() => return time(file, cmd),
        ["report", dir, dev, slot] => report(Path::new(dir), dev, slot.parse().unwrap()),
        _ => Err(format!(
            "usage: vm guest label|subvol|manifest|time|report …: {args:?}"
        )),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vm guest: {e}");
            1
        }
    }
}

fn label(dev: &str) -> Result<String, String> {
    let mut file = fs::File::open(dev).map_err(|e| format!("{dev}: {e}"))?;
    let mut read = |at: u64, len: usize| {
        let mut buf = vec![0; len];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut buf))
            .map(|()| buf)
            .map_err(|e| format!("{dev}: {e}"))
    };
    let text =
        |b: &[u8]| String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap()).into_owned();
    // btrfs: the superblock at 64 KiB, magic at 0x40, label at 0x12b.
    if read(0x10040, 8)? == b"_BHRfS_M" {
        return Ok(text(&read(0x1012b, 256)?));
    }
    // bcachefs: the superblock at 4 KiB, magic (a uuid) at 24, label at 72.
    const BCACHEFS_MAGIC: [u8; 16] = [
        0xc6, 0x85, 0x73, 0xf6, 0x66, 0xce, 0x90, 0xa9, 0xd9, 0x6a, 0x60, 0xcf, 0x80, 0x3d, 0xf7,
        0xef,
    ];
    if read(4096 + 24, 16)? == BCACHEFS_MAGIC {
        return Ok(text(&read(4096 + 72, 32)?));
    }
    Err(format!("{dev}: neither btrfs nor bcachefs"))
}

/// `BTRFS_IOC_SUBVOL_CREATE`: `_IOW(0x94, 14, struct btrfs_ioctl_vol_args)` (4096 bytes).
const BTRFS_IOC_SUBVOL_CREATE: libc::c_ulong = 0x5000_940e;
/// `BCH_IOCTL_SUBVOLUME_CREATE`: `_IOW(0xbc, 16, struct bch_ioctl_subvolume)` (32 bytes).
const BCH_IOCTL_SUBVOLUME_CREATE: libc::c_ulong = 0x4020_bc10;
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
const BCACHEFS_SUPER_MAGIC: i64 = 0xca45_1a4e;

#[repr(C)]
struct BtrfsVolArgs {
    fd: i64,
    name: [u8; 4088],
}

#[repr(C)]
struct BchSubvolume {
    flags: u32,
    dirfd: u32,
    mode: u16,
    pad: [u16; 3],
    dst_ptr: u64,
    src_ptr: u64,
}

fn subvol(path: &Path) -> Result<(), String> {
    let err = |what: &str| {
        format!(
            "{what} {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )
    };
    let parent = path.parent().ok_or("no parent")?;
    let name = path.file_name().ok_or("no name")?.as_bytes();
    let dir = fs::File::open(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd, &mut st) } != 0 {
        return Err(err("statfs"));
    }
    let rc = match st.f_type as i64 {
        BTRFS_SUPER_MAGIC => {
            let mut args = BtrfsVolArgs {
                fd: 0,
                name: [0; 4088],
            };
            args.name[..name.len()].copy_from_slice(name);
            unsafe { libc::ioctl(fd, BTRFS_IOC_SUBVOL_CREATE, &args) }
        }
        BCACHEFS_SUPER_MAGIC => {
            let dst = CString::new(name).unwrap();
            let args = BchSubvolume {
                flags: 0,
                dirfd: fd as u32,
                mode: 0o755,
                pad: [0; 3],
                dst_ptr: dst.as_ptr() as u64,
                src_ptr: 0,
            };
            unsafe { libc::ioctl(fd, BCH_IOCTL_SUBVOLUME_CREATE, &args) }
        }
        other => {
            return Err(format!(
                "{}: filesystem {other:#x} has no subvolumes",
                path.display()
            ));
        }
    };
    if rc != 0 {
        return Err(err("create subvolume"));
    }
    Ok(())
}

fn manifest(top: &Path) -> Result<Manifest, String> {
    let mut out = Manifest::new();
    walk(top, Path::new(""), None, &mut out)?;
    Ok(out)
}

fn walk(
    top: &Path,
    rel: &Path,
    parent_subvol: Option<u64>,
    out: &mut Manifest,
) -> Result<(), String> {
    let path = top.join(rel);
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let meta = fs::symlink_metadata(&path).map_err(fail)?;
    let kind = meta.file_type();
    let mut entry = Entry {
        kind: "o".into(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: None,
        digest: None,
        target: None,
        subvol: false,
        writable: None,
    };
    let key = imperm::paths::escape(rel);
    if kind.is_file() {
        let bytes = fs::read(&path).map_err(fail)?;
        entry.kind = "f".into();
        entry.size = Some(bytes.len() as u64);
        entry.digest = Some(digest(&bytes));
    } else if kind.is_symlink() {
        entry.kind = "l".into();
        entry.target = Some(imperm::paths::escape(&fs::read_link(&path).map_err(fail)?));
    } else if kind.is_dir() {
        entry.kind = "d".into();
        let id = subvol_id(&path)?;
        if parent_subvol.is_some_and(|p| p != id) {
            entry.subvol = true;
            entry.writable = Some(writable(&path)?);
        }
        let mut names: Vec<_> = fs::read_dir(&path)
            .map_err(fail)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(fail)?;
        names.sort();
        out.insert(key, entry);
        for name in names {
            walk(top, &rel.join(name), Some(id), out)?;
        }
        return Ok(());
    }
    out.insert(key, entry);
    Ok(())
}

fn subvol_id(path: &Path) -> Result<u64, String> {
    const STATX_SUBVOL: u32 = 0x8000;
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::from_bits_retain(STATX_SUBVOL),
    )
    .map_err(|e| format!("statx {}: {e}", path.display()))?;
    if st.stx_mask & STATX_SUBVOL == 0 {
        return Err(format!(
            "{}: no subvolume id (Linux 6.10 needed)",
            path.display()
        ));
    }
    Ok(st.stx_subvol)
}

/// Whether a directory can be written to: a `mkdir` (undone at once) succeeds or fails
/// with EROFS.
fn writable(dir: &Path) -> Result<bool, String> {
    let probe = dir.join(".vm-write-probe");
    match fs::create_dir(&probe) {
        Ok(()) => {
            fs::remove_dir(&probe).map_err(|e| format!("{}: {e}", probe.display()))?;
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(false),
        Err(e) => Err(format!("{}: {e}", probe.display())),
    }
}

fn time(file: &str, cmd: &[&str]) -> i32 {
    let mut command = match cmd {
        ["--unit", argv, vars @ ..] => {
            let words = match fs::read(argv) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("vm guest time: {argv}: {e}");
                    return 127;
                }
            };
            let mut words = words
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| std::ffi::OsStr::from_bytes(w).to_owned());
            let mut c = std::process::Command::new(words.next().unwrap_or_default());
            c.args(words).env_clear().env("PATH", "/nix/tools/bin");
            for var in vars {
                let (k, v) = var.split_once('=').unwrap_or((var, ""));
                c.env(k, v);
            }
            c
        }
        _ => {
            let mut c = std::process::Command::new(cmd[0]);
            c.args(&cmd[1..]);
            c
        }
    };
    let start = Instant::now();
    let status = command.status();
    let nanos = start.elapsed().as_nanos();
    let _ = fs::write(file, format!("{nanos}\n"));
    match status {
        Ok(s) => s
            .code()
            .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
        Err(e) => {
            eprintln!("vm guest time: {}: {e}", cmd[0]);
            127
        }
    }
}

/// Each file of `dir` becomes a member: `*.json` and `*.out` (imperm's `--format json`)
/// parsed as JSON when they are, the others as text.
fn report(dir: &Path, dev: &str, slot: u64) -> Result<(), String> {
    let mut doc = serde_json::Map::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let json = name.ends_with(".json") || name.ends_with(".out");
        let value = json
            .then(|| serde_json::from_slice(&bytes).ok())
            .flatten()
            .unwrap_or_else(|| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            });
        doc.insert(name, value);
    }
    let json = serde_json::to_vec(&doc).unwrap();
    let mut data = (json.len() as u64).to_le_bytes().to_vec();
    data.extend_from_slice(&json);
    if data.len() as u64 > SLOT_BYTES {
        return Err(format!(
            "report of {} bytes does not fit a slot",
            data.len()
        ));
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(|e| format!("{dev}: {e}"))?;
    file.write_all_at(&data, slot * SLOT_BYTES)
        .and_then(|()| file.flush())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{dev}: {e}"))
}

/// The report in `slot` of an output disk image, if the guest wrote one.
pub fn read_report(image: &Path, slot: u64) -> Option<serde_json::Value> {
    let file = fs::File::open(image).ok()?;
    let mut len = [0; 8];
    file.read_exact_at(&mut len, slot * SLOT_BYTES).ok()?;
    let len = u64::from_le_bytes(len);
    if len == 0 || len > SLOT_BYTES {
        return None;
    }
    let mut json = vec![0; len as usize];
    file.read_exact_at(&mut json, slot * SLOT_BYTES + 8).ok()?;
    serde_json::from_slice(&json).ok()
}
