//! What the browser reads from the tree: a directory's entries when a node is expanded,
//! and the head of the selected file. Read as the tree is, beneath `--root`: never through
//! a symlink, never opening anything but a regular file (a FIFO would block), without
//! touching access times where the kernel lets us.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType};

use super::model::{Child, Lister};
use crate::beneath::Tree;
use crate::paths::escape;
use crate::words::bytes;

/// How much of a file the preview reads.
const HEAD: usize = 4096;

/// A directory listing has at most this many entries shown: a directory of a million
/// files must not stall a key.
const MAX_CHILDREN: usize = 10_000;

/// What the comparison with an old root reads of a file: enough for a preview.
const COMPARED: u64 = 64 << 10;

pub struct Disk {
    tree: Tree,
    /// The last reset's old root (its name, and the tree), when there is one.
    old: Option<(String, Tree)>,
}

impl Disk {
    pub fn open(root: &Path) -> Result<Disk, crate::error::FsError> {
        Ok(Disk {
            tree: Tree::open(root)?,
            old: None,
        })
    }

    /// The tree beneath the directory `dir` is open as (an old root's mount, reached
    /// through its descriptor: this process's mount namespace may not see it at `root`).
    pub fn from_fd(
        root: &Path,
        dir: std::os::fd::BorrowedFd,
    ) -> Result<Disk, crate::error::FsError> {
        Ok(Disk {
            tree: Tree::from_fd(root.to_path_buf(), dir)?,
            old: None,
        })
    }

    /// Compares each previewed path with the same path in the old root `name`, whose
    /// tree is at `dir`.
    pub fn with_old_root(
        mut self,
        name: String,
        dir: &Path,
    ) -> Result<Disk, crate::error::FsError> {
        self.old = Some((name, Tree::open(dir)?));
        Ok(self)
    }

    /// What the preview says about `path` against the old root: "new since the last
    /// reset" when it was not there, else whether it changed, with the diff of a text.
    fn against_old(&self, path: &Path, kind: FileType) -> Vec<String> {
        let Some((name, old)) = &self.old else {
            return Vec::new();
        };
        let mut out = vec![format!("─ against {name} ─")];
        let Some(was) = old.stat_nofollow(path) else {
            out.push("new since the last reset".into());
            return out;
        };
        let was_kind = FileType::from_raw_mode(was.st_mode);
        if was_kind != kind {
            out.push(format!(
                "was a {} before the last reset",
                crate::words::file_kind(was_kind)
            ));
            return out;
        }
        if kind != FileType::RegularFile {
            out.push(format!(
                "there before the last reset ({})",
                crate::words::file_kind(kind)
            ));
            return out;
        }
        let read = |tree: &Tree| -> Option<Vec<u8>> {
            let file = tree.open_file(path).ok()??;
            let mut data = Vec::new();
            file.take(COMPARED).read_to_end(&mut data).ok()?;
            Some(data)
        };
        let (Some(before), Some(now)) = (read(old), read(&self.tree)) else {
            out.push("(cannot be read)".into());
            return out;
        };
        if before == now {
            out.push("unchanged since the last reset".into());
            return out;
        }
        match (std::str::from_utf8(&before), std::str::from_utf8(&now)) {
            (Ok(a), Ok(b)) if !a.contains('\0') && !b.contains('\0') => {
                let diff = similar::TextDiff::from_lines(a, b);
                for change in diff.iter_all_changes() {
                    let sign = match change.tag() {
                        similar::ChangeTag::Delete => '-',
                        similar::ChangeTag::Insert => '+',
                        similar::ChangeTag::Equal => ' ',
                    };
                    let line = change.value().trim_end_matches('\n');
                    out.push(format!("{sign}{}", printable(line)));
                }
            }
            _ => out.push("changed since the last reset (binary)".into()),
        }
        out
    }

    /// The preview's lines for `path`: what it is, its size, mode and owner, and for a
    /// regular file its head (text) or that it is binary.
    pub fn preview(&self, path: &Path) -> Vec<String> {
        let Some(st) = self.tree.stat_nofollow(path) else {
            return vec!["not on disk (gone, or reached through a symlink)".into()];
        };
        let kind = FileType::from_raw_mode(st.st_mode);
        // A directory's own size says how its filesystem stores names, nothing more.
        let size = match kind {
            FileType::Directory => String::new(),
            _ => format!(" · {}", bytes(st.st_size as u64)),
        };
        let mut out = vec![format!(
            "{}{size} · mode {:04o} · owner {}:{}",
            crate::words::file_kind(kind),
            st.st_mode & 0o7777,
            st.st_uid,
            st.st_gid
        )];
        match kind {
            FileType::Symlink => {
                if let Ok(Some(target)) = self.tree.read_link(path) {
                    out.push(format!("→ {}", escape(&target)));
                }
            }
            FileType::RegularFile => out.extend(self.head(path)),
            _ => {}
        }
        out.extend(self.against_old(path, kind));
        out
    }

    fn head(&self, path: &Path) -> Vec<String> {
        let Ok(Some(file)) = self.tree.open_file(path) else {
            return vec!["(cannot be read)".into()];
        };
        let mut data = Vec::with_capacity(HEAD);
        if file.take(HEAD as u64).read_to_end(&mut data).is_err() {
            return vec!["(cannot be read)".into()];
        }
        if data.is_empty() {
            return vec!["(empty)".into()];
        }
        // Text is what decodes as UTF-8 (allowing a character cut at the end) and holds
        // no NUL; control characters are shown escaped, never sent to the terminal.
        let valid = match std::str::from_utf8(&data) {
            Ok(t) => Some(t),
            Err(e) if e.error_len().is_none() => std::str::from_utf8(&data[..e.valid_up_to()]).ok(),
            Err(_) => None,
        };
        match valid.filter(|t| !t.contains('\0')) {
            Some(text) => {
                let mut lines = vec!["─ head ─".to_string()];
                lines.extend(text.lines().map(printable));
                lines
            }
            None => vec![format!("binary ({})", binary_type(&data))],
        }
    }
}

impl Lister for Disk {
    fn list(&self, path: &Path) -> Vec<Child> {
        let Some(dir) = self.tree.open_dir(path) else {
            return Vec::new();
        };
        let Ok(names) = crate::recover::restore::names(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<Child> = names
            .into_iter()
            .take(MAX_CHILDREN)
            .map(|name: OsString| {
                let st = rustix::fs::statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW);
                let (dir, size) = match st {
                    Ok(st) => (
                        FileType::from_raw_mode(st.st_mode) == FileType::Directory,
                        st.st_size as u64,
                    ),
                    Err(_) => (false, 0),
                };
                Child {
                    name,
                    dir,
                    bytes: size,
                }
            })
            .collect();
        // Directories first, then by name, as file browsers list.
        out.sort_by(|a, b| {
            b.dir
                .cmp(&a.dir)
                .then_with(|| a.name.as_bytes().cmp(b.name.as_bytes()))
        });
        out
    }
}

/// A line of a file as the screen may show it: control characters escaped, never sent
/// to the terminal.
fn printable(line: &str) -> String {
    line.chars()
        .map(|c| match c {
            '\t' => "    ".to_string(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// What a binary file is, from its first bytes: the few kinds state holds.
fn binary_type(data: &[u8]) -> &'static str {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"SQLite format 3\0", "SQLite database"),
        (b"\x7fELF", "ELF executable"),
        (b"\x1f\x8b", "gzip"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"PK\x03\x04", "zip"),
        (b"\x89PNG", "PNG image"),
        (b"\xff\xd8\xff", "JPEG image"),
        (b"%PDF", "PDF"),
        (b"\xfd7zXZ\0", "xz"),
        (b"BZh", "bzip2"),
    ];
    MAGIC
        .iter()
        .find(|(m, _)| data.starts_with(m))
        .map(|(_, what)| *what)
        .unwrap_or("data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn preview_says_text_binary_and_symlink_without_following() {
        let dir = tempfile::TempDir::new().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("var/lib/x/sub")).unwrap();
        std::fs::write(root.join("var/lib/x/a.conf"), "key = 1\n\tesc\x1b[31m\n").unwrap();
        std::fs::write(root.join("var/lib/x/db"), b"SQLite format 3\0\x01\x02").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", root.join("var/lib/x/link")).unwrap();
        let disk = Disk::open(root).unwrap();
        let head = disk.preview(Path::new("/var/lib/x/a.conf"));
        assert!(head[0].starts_with("file · 18 B · mode"), "{head:?}");
        assert_eq!(head[1..], ["─ head ─", "key = 1", "    esc\\u{1b}[31m"]);
        let db = disk.preview(Path::new("/var/lib/x/db"));
        assert_eq!(db[1], "binary (SQLite database)");
        let link = disk.preview(Path::new("/var/lib/x/link"));
        assert!(link[0].starts_with("symlink"), "{link:?}");
        assert_eq!(link[1], "→ /etc/shadow");
        let names: Vec<(String, bool)> = disk
            .list(Path::new("/var/lib/x"))
            .into_iter()
            .map(|c| (c.name.to_string_lossy().into_owned(), c.dir))
            .collect();
        assert_eq!(
            names,
            [
                ("sub".into(), true),
                ("a.conf".into(), false),
                ("db".into(), false),
                ("link".into(), false)
            ]
        );
        // A path through a symlink is not read.
        assert_eq!(disk.list(Path::new("/var/lib/x/link")), Vec::new());
    }

    #[test]
    fn an_old_root_is_read_through_an_o_path_descriptor_never_out_through_a_symlink() {
        let dir = tempfile::TempDir::new().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("var/lib/gone")).unwrap();
        std::fs::write(root.join("var/lib/gone/only-old.txt"), "kept\n").unwrap();
        std::os::unix::fs::symlink("/", root.join("var/lib/gone/out")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("var/lib/gone/up")).unwrap();
        // As `Mounted::root` is: O_PATH, the path it was opened by not used again.
        let fd = rustix::fs::open(
            root,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let disk = Disk::from_fd(Path::new("/run/imperm/old-roots/X"), fd.as_fd()).unwrap();
        let names: Vec<String> = disk
            .list(Path::new("/var/lib/gone"))
            .into_iter()
            .map(|c| c.name.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["only-old.txt", "out", "up"]);
        let head = disk.preview(Path::new("/var/lib/gone/only-old.txt"));
        assert_eq!(head[1..], ["─ head ─", "kept"]);
        for link in ["/var/lib/gone/out", "/var/lib/gone/up"] {
            assert_eq!(disk.list(Path::new(link)), Vec::new(), "{link}");
            assert!(disk.preview(Path::new(link))[0].starts_with("symlink"));
        }
        assert_eq!(disk.list(Path::new("/var/lib/gone/out/etc")), Vec::new());
        assert!(
            disk.preview(Path::new("/var/lib/gone/up/etc/passwd"))[0].starts_with("not on disk")
        );
    }
}
