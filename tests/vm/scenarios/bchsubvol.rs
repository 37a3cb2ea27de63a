//! A test helper for the bcachefs scenarios, run inside the guest: makes, snapshots and
//! destroys bcachefs subvolumes and prints subvolume ids, straight through the kernel's
//! ioctls and statx, independently of imperm (whose backend is what the scenarios test).
//! There is no `bcachefs` program in the guest, and no registry packages one.
//!
//! Built with plain `rustc -O bchsubvol.rs` (no crates); the guest needs glibc.
//!
//!   bchsubvol create PATH            a new subvolume
//!   bchsubvol snapshot [-r] SRC DST  a snapshot of subvolume SRC (read-only with -r)
//!   bchsubvol destroy PATH           destroy subvolume PATH
//!   bchsubvol id PATH                print PATH's subvolume id (statx STATX_SUBVOL)
//!
//! The ioctl goes to PATH's (DST's) parent directory, which is also its `dirfd`, with the
//! last name relative to it, as imperm issues it; SRC is resolved by the kernel, symlinks
//! followed (relative SRC: from DST's parent). Exit 1 with the errno on failure.

use std::ffi::{CString, c_char, c_int, c_ulong};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

unsafe extern "C" {
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: u32, buf: *mut u8) -> c_int;
}

const O_RDONLY: c_int = 0;
const O_DIRECTORY: c_int = 0o200000;
const AT_FDCWD: c_int = -100;
const AT_SYMLINK_NOFOLLOW: c_int = 0x100;
const STATX_SUBVOL: u32 = 0x8000;
const CREATE: c_ulong = 0x4020_bc10;
const DESTROY: c_ulong = 0x4020_bc11;

#[repr(C)]
struct Args {
    flags: u32,
    dirfd: u32,
    mode: u16,
    pad: [u16; 3],
    dst: u64,
    src: u64,
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a path")
}

fn fail(what: &str, path: &Path) -> ! {
    let e = std::io::Error::last_os_error();
    eprintln!("bchsubvol: {what} {}: {e}", path.display());
    std::process::exit(1)
}

/// An fd of `path`'s parent directory, for the ioctl.
fn parent_fd(path: &Path) -> c_int {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fd = unsafe { open(c(parent).as_ptr(), O_RDONLY | O_DIRECTORY) };
    if fd < 0 {
        fail("open", parent);
    }
    fd
}

fn call(request: c_ulong, flags: u32, dst: &Path, src: Option<&Path>) {
    let fd = parent_fd(dst);
    let name = dst.file_name().map_or(dst, Path::new);
    let (d, s) = (c(name), src.map(c));
    let args = Args {
        flags,
        dirfd: fd as u32,
        mode: 0o755,
        pad: [0; 3],
        dst: d.as_ptr() as u64,
        src: s.as_ref().map_or(0, |s| s.as_ptr() as u64),
    };
    if unsafe { ioctl(fd, request, &args as *const Args) } < 0 {
        fail(if request == CREATE { "create" } else { "destroy" }, dst);
    }
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let words: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let p = |i: usize| Path::new(&args[i]);
    match words.as_slice() {
        [b"create", _] => call(CREATE, 0, p(1), None),
        [b"snapshot", b"-r", _, _] => call(CREATE, 1 | 2, p(3), Some(p(2))),
        [b"snapshot", _, _] => call(CREATE, 1, p(2), Some(p(1))),
        [b"destroy", _] => call(DESTROY, 0, p(1), None),
        [b"id", _] => {
            let mut buf = [0u8; 256];
            let rc = unsafe {
                statx(AT_FDCWD, c(p(1)).as_ptr(), AT_SYMLINK_NOFOLLOW, STATX_SUBVOL, buf.as_mut_ptr())
            };
            if rc < 0 {
                fail("statx", p(1));
            }
            if u32::from_ne_bytes(buf[0..4].try_into().unwrap()) & STATX_SUBVOL == 0 {
                eprintln!("bchsubvol: {}: no subvolume id (not bcachefs or btrfs, or Linux < 6.10)", p(1).display());
                std::process::exit(1)
            }
            println!("{}", u64::from_ne_bytes(buf[160..168].try_into().unwrap()));
        }
        _ => {
            eprintln!("usage: bchsubvol create PATH | snapshot [-r] SRC DST | destroy PATH | id PATH");
            std::process::exit(2)
        }
    }
}
