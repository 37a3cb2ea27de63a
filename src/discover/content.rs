//! What the files say they are: key material, git repositories and databases, known by a
//! name or by their first bytes. The rules are pure functions of names and heads; the one
//! read ([`read_head`]) takes a bounded head of a regular file, never follows a symlink,
//! never opens a FIFO or a device (it looks before it opens, and opens that very inode),
//! and leaves the access time alone where the kernel lets it (O_NOATIME).
//!
//! The walk asks only where the verdict is still open (`classify::content_decides`), stops
//! asking inside a unit once something is found, and reads the heads of at most
//! [`FILES_PER_UNIT`] files and [`BYTES_PER_UNIT`] bytes per unit: names are looked at
//! all the way down, contents only so far.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{FileType, Mode, OFlags};

use crate::classify::{Evidence, Found};

/// The most of one file read: every header looked for lies in its first bytes; a PEM key
/// may follow a few lines of attributes or a certificate or two.
pub const HEAD: usize = 4096;
/// The most files whose heads one unit's walk reads.
pub const FILES_PER_UNIT: u64 = 256;
/// The most bytes one unit's walk reads.
pub const BYTES_PER_UNIT: u64 = 256 * 1024;

/// Key material by its name: `*.key`, and anything named a key file (`keyfile_nvme0n1p1`,
/// `crypto_keyfile.bin`, `luks-keyfile`), but not a program's source or a text about key
/// files (`test_keyfile.py`, `keyfile.md`). Only for regular files.
pub fn by_name(name: &[u8]) -> Option<Found> {
    const TEXT: &[&[u8]] = &[
        b"c", b"cc", b"conf", b"cpp", b"go", b"h", b"html", b"java", b"js", b"json", b"lua", b"md",
        b"nix", b"pl", b"py", b"pyc", b"rb", b"rs", b"rst", b"sh", b"toml", b"ts", b"txt", b"xml",
        b"yaml", b"yml",
    ];
    let lower = name.to_ascii_lowercase();
    let extension = lower
        .iter()
        .rposition(|&b| b == b'.')
        .filter(|&dot| dot > 0)
        .map(|dot| &lower[dot + 1..]);
    let is_key = (lower.len() > 4 && lower.ends_with(b".key"))
        || (lower.windows(7).any(|w| w == b"keyfile")
            && !extension.is_some_and(|e| TEXT.contains(&e)));
    is_key.then_some(Found::Key("a key file, by its name"))
}

/// What the head of a regular file says it is.
pub fn by_head(head: &[u8]) -> Option<Found> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let u32_at = |offset: usize| -> Option<(u32, u32)> {
        let b: [u8; 4] = head.get(offset..offset + 4)?.try_into().ok()?;
        Some((u32::from_le_bytes(b), u32::from_be_bytes(b)))
    };
    let either = |offset: usize, magic: u32| {
        u32_at(offset).is_some_and(|(le, be)| le == magic || be == magic)
    };
    // Binary signatures at fixed offsets.
    if at(0, b"LUKS\xba\xbe") {
        return Some(Found::Key("a LUKS header"));
    }
    if at(0, b"openssh-key-v1\0") {
        return Some(Found::Key("an OpenSSH private key"));
    }
    if at(0, b"SQLite format 3\0") {
        return Some(Found::Database("a SQLite database"));
    }
    if at(0, b"REDIS") && head.len() >= 9 && head[5..9].iter().all(u8::is_ascii_digit) {
        return Some(Found::Database("a Redis dump"));
    }
    if at(8, b"DUCK") {
        return Some(Found::Database("a DuckDB database"));
    }
    // The meta page of LMDB (0xBEEFC0DE) and of bbolt (0xED0CDAED), after the 16-byte page
    // header; Berkeley DB's metadata page has its magic at 12 (hash, btree, queue, heap),
    // in the byte order of the machine that wrote it.
    if u32_at(16).is_some_and(|(le, _)| le == 0xBEEF_C0DE) {
        return Some(Found::Database("an LMDB database"));
    }
    if u32_at(16).is_some_and(|(le, _)| le == 0xED0C_DAED) {
        return Some(Found::Database("a bbolt database"));
    }
    if [0x0006_1561, 0x0005_3162, 0x0004_2253, 0x0007_4582]
        .into_iter()
        .any(|magic| either(12, magic))
    {
        return Some(Found::Database("a Berkeley DB database"));
    }
    if at(0, b"== ed25519v1-secret: type0 ==") {
        return Some(Found::Key("a Tor onion service key"));
    }
    // Text: a line of its own, anywhere in the head.
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"-----BEGIN ") && line.ends_with(b"-----") {
            let label = &line[11..line.len() - 5];
            if label == b"OPENSSH PRIVATE KEY" {
                return Some(Found::Key("an OpenSSH private key"));
            }
            if label == b"PGP PRIVATE KEY BLOCK" {
                return Some(Found::Key("a PGP private key"));
            }
            if label.ends_with(b"PRIVATE KEY") {
                return Some(Found::Key("a PEM private key"));
            }
        }
        if line.starts_with(b"AGE-SECRET-KEY-1") || line.starts_with(b"AGE-PLUGIN-") {
            return Some(Found::Key("an age secret key"));
        }
        if line.starts_with(b"untrusted comment: ") && contains(line, b"secret key") {
            return Some(Found::Key("a minisign or signify secret key"));
        }
    }
    None
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A directory entry named `.git`: a directory is a repository; a regular file is a work
/// tree whose repository is elsewhere (a worktree or a submodule) when it says so
/// (`gitdir: …`), read from its `head`. A symlink is neither: it is not looked through.
pub fn git_entry(kind: FileType, head: Option<&[u8]>) -> Option<Found> {
    match kind {
        FileType::Directory => Some(Found::Git("a git repository")),
        FileType::RegularFile if head.is_some_and(|h| h.starts_with(b"gitdir: ")) => {
            Some(Found::Git("a git work tree"))
        }
        _ => None,
    }
}

/// A directory that is a bare repository, by what is in it: `HEAD`, `objects` and `refs`.
pub fn bare_repository<'n>(mut names: impl Iterator<Item = &'n [u8]>) -> Option<Found> {
    let mut seen = [false; 3];
    let all = names.any(|n| {
        for (i, want) in [&b"HEAD"[..], b"objects", b"refs"].into_iter().enumerate() {
            if n == want {
                seen[i] = true;
            }
        }
        seen.iter().all(|&s| s)
    });
    all.then_some(Found::Git("a bare git repository"))
}

/// Up to `limit` bytes from the start of `name` in `dir`, if it is a regular file that can
/// be read; `None` for anything else (a symlink, a FIFO, a device, a socket, a directory,
/// an empty or unreadable file, one gone since). The entry is opened as a path (O_PATH,
/// which opens nothing) without following a symlink, looked at, and only then, if it is a
/// regular file, opened for reading through that descriptor: the very inode looked at,
/// whatever was put at its name meanwhile.
pub fn read_head(dir: BorrowedFd, name: &OsStr, limit: usize) -> Option<Vec<u8>> {
    let at = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&at).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_size <= 0 {
        return None;
    }
    let proc = super::scan::fd_path(at.as_fd(), None);
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::open(proc.as_c_str(), flags | OFlags::NOATIME, Mode::empty()) {
        // O_NOATIME is only for the owner (or root).
        Err(rustix::io::Errno::PERM) => rustix::fs::open(proc.as_c_str(), flags, Mode::empty()),
        other => other,
    }
    .ok()?;
    let want = limit.min(usize::try_from(st.st_size).unwrap_or(usize::MAX));
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match rustix::io::pread(&fd, &mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
    buf.truncate(got);
    Some(buf)
}

/// What one unit's walk has found of its content so far, and what it may still read.
#[derive(Debug)]
pub struct Probe {
    /// The unit, to place what is found relative to it.
    unit: std::path::PathBuf,
    found: Mutex<Option<Evidence>>,
    settled: AtomicBool,
    files: AtomicU64,
    bytes: AtomicU64,
    /// Heads read (for the measure of the work in tests).
    pub reads: AtomicU64,
}

impl Probe {
    pub fn new(unit: &std::path::Path) -> Probe {
        Probe {
            unit: unit.to_path_buf(),
            found: Mutex::new(None),
            settled: AtomicBool::new(false),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    /// Whether something was found: nothing more needs looking at.
    pub fn settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed)
    }

    /// Records what `path` (in the unit) was found to be; the first find stands.
    pub fn found(&self, path: &std::path::Path, found: Found) {
        let mut slot = self.found.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let at = path.strip_prefix(&self.unit).unwrap_or(path).to_path_buf();
            *slot = Some(Evidence { found, at });
            self.settled.store(true, Ordering::Relaxed);
        }
    }

    /// A directory entry of the unit met by the walk (`kind` as the listing or a stat
    /// says): its name, and its head while the budget lasts.
    pub fn entry(&self, dir: BorrowedFd, name: &OsStr, kind: FileType, path: &std::path::Path) {
        if self.settled() {
            return;
        }
        let bytes = name.as_bytes();
        if bytes == b".git" {
            let head = (kind == FileType::RegularFile)
                .then(|| self.head(dir, name))
                .flatten();
            if let Some(found) = git_entry(kind, head.as_deref()) {
                self.found(path, found);
            }
            return;
        }
        if kind != FileType::RegularFile {
            return;
        }
        if let Some(found) = by_name(bytes) {
            return self.found(path, found);
        }
        if let Some(found) = self.head(dir, name).as_deref().and_then(by_head) {
            self.found(path, found);
        }
    }

    /// A directory of the unit, listed: a bare repository?
    pub fn listing<'n>(&self, path: &std::path::Path, names: impl Iterator<Item = &'n [u8]>) {
        if self.settled() {
            return;
        }
        if let Some(found) = bare_repository(names) {
            self.found(path, found);
        }
    }

    /// The head of a file, while the unit's budget lasts.
    fn head(&self, dir: BorrowedFd, name: &OsStr) -> Option<Vec<u8>> {
        if self.files.fetch_add(1, Ordering::Relaxed) >= FILES_PER_UNIT
            || self.bytes.load(Ordering::Relaxed) >= BYTES_PER_UNIT
        {
            return None;
        }
        let head = read_head(dir, name, HEAD)?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(head.len() as u64, Ordering::Relaxed);
        Some(head)
    }

    /// What was found.
    pub fn evidence(&self) -> Option<Evidence> {
        self.found.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What a single file is (a unit of its own): a file of a git repository (in /etc, where
/// every file is a unit, the files of a checkout such as `/etc/nixos`), or what its name
/// or its head say.
pub fn of_file(dir: BorrowedFd, name: &OsStr, path: &std::path::Path) -> Option<Evidence> {
    let in_git = path
        .ancestors()
        .skip(1)
        .any(|a| a.file_name() == Some(OsStr::new(".git")));
    let found = if in_git {
        Found::Git("a git repository")
    } else {
        match by_name(name.as_bytes()) {
            Some(found) => found,
            None => read_head(dir, name, HEAD).as_deref().and_then(by_head)?,
        }
    };
    Some(Evidence {
        found,
        at: std::path::PathBuf::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_key_files() {
        for name in [
            &b"keyfile_nvme0n1p1"[..],
            b"crypto_keyfile.bin",
            b"luks-KEYFILE",
            b"wg0.key",
            b"server.KEY",
            b"\xff\xfe.key",
        ] {
            assert!(by_name(name).is_some(), "{}", String::from_utf8_lossy(name));
        }
        for name in [
            &b".key"[..],
            b"key",
            b"keys.txt",
            b"monkey",
            b"id_rsa.pub",
            b"keyfil",
            b"test_keyfile.py",
            b"keyfile.md",
            b"KeyFile.Java",
        ] {
            assert!(by_name(name).is_none(), "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn headers_of_keys_and_databases() {
        let with = |offset: usize, magic: &[u8]| {
            let mut v = vec![0u8; offset];
            v.extend_from_slice(magic);
            v.resize(64, 0);
            v
        };
        let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
            (with(0, b"LUKS\xba\xbe\x00\x02"), Some("a LUKS header")),
            (with(0, b"openssh-key-v1\0"), Some("an OpenSSH private key")),
            (
                b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n".to_vec(),
                Some("an OpenSSH private key"),
            ),
            (
                b"Bag Attributes\r\n    localKeyID: 01\r\n-----BEGIN ENCRYPTED PRIVATE KEY-----\r\n".to_vec(),
                Some("a PEM private key"),
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN RSA PRIVATE KEY-----\n".to_vec(),
                Some("a PEM private key"),
            ),
            (
                b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n".to_vec(),
                Some("a PGP private key"),
            ),
            (
                b"# created: 2026\n# public key: age1x\nAGE-SECRET-KEY-1ABC\n".to_vec(),
                Some("an age secret key"),
            ),
            (
                b"untrusted comment: minisign encrypted secret key\nRWRT\n".to_vec(),
                Some("a minisign or signify secret key"),
            ),
            (
                b"== ed25519v1-secret: type0 ==\0\0\0".to_vec(),
                Some("a Tor onion service key"),
            ),
            (with(0, b"SQLite format 3\0"), Some("a SQLite database")),
            (b"REDIS0011\xfa".to_vec(), Some("a Redis dump")),
            (with(8, b"DUCK"), Some("a DuckDB database")),
            (with(16, &0xBEEF_C0DE_u32.to_le_bytes()), Some("an LMDB database")),
            (with(16, &0xED0C_DAED_u32.to_le_bytes()), Some("a bbolt database")),
            (with(12, &0x0005_3162_u32.to_le_bytes()), Some("a Berkeley DB database")),
            (with(12, &0x0006_1561_u32.to_be_bytes()), Some("a Berkeley DB database")),
            // Public halves, certificates, look-alikes and fragments are not keys.
            (b"-----BEGIN CERTIFICATE-----\nMIIB\n".to_vec(), None),
            (b"-----BEGIN PUBLIC KEY-----\n".to_vec(), None),
            (b"ssh-ed25519 AAAAC3Nz josh@juni\n".to_vec(), None),
            (b"age1qqqq\n".to_vec(), None),
            (b"untrusted comment: minisign public key\n".to_vec(), None),
            (b"see -----BEGIN RSA PRIVATE KEY----- in the docs\n".to_vec(), None),
            (b"LUKS".to_vec(), None),
            (b"SQLite format 3".to_vec(), None),
            (b"REDIS".to_vec(), None),
            (Vec::new(), None),
            (vec![0u8; 4096], None),
        ];
        for (head, want) in cases {
            assert_eq!(
                by_head(&head).map(Found::what),
                want,
                "{}",
                String::from_utf8_lossy(&head)
            );
        }
    }

    #[test]
    fn git_entries_and_bare_repositories() {
        assert!(git_entry(FileType::Directory, None).is_some());
        assert_eq!(
            git_entry(
                FileType::RegularFile,
                Some(b"gitdir: ../.git/worktrees/x\n")
            )
            .map(Found::what),
            Some("a git work tree")
        );
        assert!(git_entry(FileType::RegularFile, Some(b"hello")).is_none());
        assert!(git_entry(FileType::RegularFile, None).is_none());
        assert!(git_entry(FileType::Symlink, None).is_none());
        let names = |list: &[&'static [u8]]| bare_repository(list.iter().copied());
        assert!(names(&[b"HEAD", b"config", b"objects", b"refs"]).is_some());
        assert!(names(&[b"HEAD", b"objects"]).is_none());
    }

    /// The head of what is not a regular file is never read: a FIFO (opening it to read
    /// would block), a symlink (to /dev/zero or to a key), a directory; a regular file's
    /// head is bounded.
    #[test]
    fn only_regular_files_are_read_and_only_their_head() {
        let dir = tempfile::TempDir::new().unwrap();
        let p = dir.path();
        std::fs::write(p.join("big"), vec![b'x'; 100_000]).unwrap();
        std::fs::write(p.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("/dev/zero", p.join("zero")).unwrap();
        std::os::unix::fs::symlink(p.join("big"), p.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
        let fd = rustix::fs::open(p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let head = |name: &str| read_head(fd.as_fd(), OsStr::new(name), HEAD);
        assert_eq!(head("big").map(|h| h.len()), Some(HEAD));
        for name in ["empty", "zero", "link", "fifo", "sub", "missing"] {
            assert_eq!(head(name), None, "{name}");
        }
    }
}
