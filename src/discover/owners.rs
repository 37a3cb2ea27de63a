//! Who owns what is suggested, and its mode, where they differ from what
//! nix-community/impermanence and preservation make for an entry: root:root 0755 for a
//! system path, the user and the user's group 0755 for a user's, and preservation's files
//! 0644. impermanence makes a directory so only when the storage lacks it; preservation
//! applies owner and mode to the storage's copy at every boot (tmpfiles `d` and `f` lines),
//! so that a 0600 key would become 0644 and a service's 0750 directory root's. Read from the
//! tree without following a symlink; names from the tree's own /etc/passwd and /etc/group
//! (a number where the name is unknown).

use std::collections::HashMap;
use std::path::Path;

use rustix::fs::FileType;
use serde::Serialize;

use crate::beneath::Tree;
use crate::discover::suggest::Suggestion;
use crate::knowledge::Verdict;
use crate::mode::Mode;
use crate::persisted::Kind;

/// An owner, a group and a mode, each only where it differs from what the modules make.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Perms {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

impl Perms {
    pub fn is_empty(&self) -> bool {
        self.owner.is_none() && self.group.is_none() && self.mode.is_none()
    }
}

/// The users and groups of a tree.
#[derive(Debug, Default)]
pub struct Accounts {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
    /// Each user's primary group, by the user's name.
    primary: HashMap<String, u32>,
}

/// /etc/passwd and /etc/group are a few kilobytes; more is not one.
const ACCOUNTS_MAX: u64 = 16 << 20;

impl Accounts {
    /// From the text of /etc/passwd (`name:x:uid:gid:…`) and /etc/group (`name:x:gid:…`).
    /// The first name of an id wins, as getpwuid(3) finds it; a name that is not UTF-8 or
    /// holds a control character is no name a Nix string should carry: its id stays a
    /// number. Lines that do not parse are skipped.
    pub fn parse(passwd: &[u8], group: &[u8]) -> Accounts {
        fn lines(data: &[u8]) -> impl Iterator<Item = Vec<&[u8]>> {
            data.split(|&b| b == b'\n')
                .map(|l| l.split(|&b| b == b':').collect::<Vec<_>>())
        }
        fn name(raw: &[u8]) -> Option<String> {
            let s = std::str::from_utf8(raw).ok()?;
            crate::paths::is_user_name(s).then(|| s.to_string())
        }
        fn id(raw: Option<&&[u8]>) -> Option<u32> {
            std::str::from_utf8(raw?).ok()?.parse().ok()
        }
        let mut out = Accounts::default();
        for f in lines(passwd) {
            let (Some(n), Some(uid), Some(gid)) =
                (f.first().and_then(|n| name(n)), id(f.get(2)), id(f.get(3)))
            else {
                continue;
            };
            out.users.entry(uid).or_insert_with(|| n.clone());
            out.primary.entry(n).or_insert(gid);
        }
        for f in lines(group) {
            let (Some(n), Some(gid)) = (f.first().and_then(|n| name(n)), id(f.get(2))) else {
                continue;
            };
            out.groups.entry(gid).or_insert(n);
        }
        out
    }

    /// The tree's own, read as the tree sees them; none when they cannot be read.
    pub fn read(tree: &Tree) -> Accounts {
        let read = |file: &str| {
            tree.read_bounded(Path::new(file), ACCOUNTS_MAX)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        Accounts::parse(&read("/etc/passwd"), &read("/etc/group"))
    }

    /// A user's name; 0 is root even in a tree without /etc/passwd (what the modules make
    /// is `root`, by name).
    pub fn user(&self, uid: u32) -> String {
        match self.users.get(&uid) {
            Some(name) => name.clone(),
            None if uid == 0 => "root".into(),
            None => uid.to_string(),
        }
    }

    pub fn group(&self, gid: u32) -> String {
        match self.groups.get(&gid) {
            Some(name) => name.clone(),
            None if gid == 0 => "root".into(),
            None => gid.to_string(),
        }
    }

    /// What the modules make an entry of `home_user`'s (or a system entry) owned by.
    fn default_owner(&self, home_user: Option<&str>) -> (String, String) {
        match home_user {
            // users.users.<name>.group; NixOS's own default for a normal user is `users`.
            Some(user) => (
                user.to_string(),
                self.primary
                    .get(user)
                    .map_or_else(|| "users".to_string(), |&gid| self.group(gid)),
            ),
            None => ("root".into(), "root".into()),
        }
    }

    /// What of `uid`, `gid` and `mode` differs from what the modules make: a directory
    /// (or a file, `file`) of `home_user`'s home, or of the system.
    pub fn differing(
        &self,
        uid: u32,
        gid: u32,
        mode: u32,
        file: bool,
        home_user: Option<&str>,
    ) -> Perms {
        let (want_owner, want_group) = self.default_owner(home_user);
        let (owner, group) = (self.user(uid), self.group(gid));
        let want_mode = if file { 0o644 } else { 0o755 };
        Perms {
            owner: (owner != want_owner).then_some(owner),
            group: (group != want_group).then_some(group),
            mode: (mode & 0o7777 != want_mode).then(|| Mode::from_bits(mode)),
        }
    }
}

/// Fills in, for each suggestion NixOS does not make, the owner, group and mode it has on
/// the disk where they differ from what the modules make (the mode the knowledge asks for
/// stays: `/var/lib/private` must be 0700 whatever it is now), and for a file, its
/// directory's (the one impermanence makes for it), unless that is `/` or the home
/// itself, which the modules make as they must. What is not there as the suggestion says
/// (gone, or another kind now) is left as it is.
pub fn fill(root: &Path, suggestions: &mut [Suggestion]) {
    let Ok(tree) = Tree::open(root) else {
        return;
    };
    let accounts = Accounts::read(&tree);
    for s in suggestions
        .iter_mut()
        .filter(|s| s.verdict != Verdict::Generated)
    {
        let Some(st) = tree.stat_nofollow(&s.path) else {
            continue;
        };
        let file = match (s.kind, FileType::from_raw_mode(st.st_mode)) {
            (Kind::Directory, FileType::Directory) => false,
            (Kind::File, FileType::RegularFile) => true,
            _ => continue,
        };
        let home = s.relative.as_ref().and(s.user.as_deref());
        let own = accounts.differing(st.st_uid, st.st_gid, st.st_mode, file, home);
        s.owner = own.owner;
        s.group = own.group;
        s.mode = s.mode.or(own.mode);
        if !file {
            continue;
        }
        let top = match &s.relative {
            Some(rel) => rel.parent().is_none_or(|p| p.as_os_str().is_empty()),
            None => s.path.parent().is_none_or(|p| p == Path::new("/")),
        };
        let Some(parent) = s.path.parent().filter(|_| !top) else {
            continue;
        };
        if let Some(pst) = tree.stat_nofollow(parent) {
            if FileType::from_raw_mode(pst.st_mode) == FileType::Directory {
                let p = accounts.differing(pst.st_uid, pst.st_gid, pst.st_mode, false, home);
                s.parent = (!p.is_empty()).then_some(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Accounts {
        Accounts::parse(
            b"root:x:0:0::/root:/bin/sh\njosh:x:1000:100::/home/josh:/bin/sh\nforgejo:x:991:988::/var/lib/forgejo:/bin/sh\ntoor:x:0:0::/:/bin/sh\nbad\n\xff:x:5:5::/:\nnl\x1b:x:6:6::/:\n",
            b"root:x:0:\nusers:x:100:\nforgejo:x:988:\nwheel:x:1:josh\n",
        )
    }

    #[test]
    fn names_come_from_the_trees_accounts_and_numbers_stand_in() {
        let a = accounts();
        assert_eq!(a.user(0), "root", "the first name of an id wins");
        assert_eq!(a.user(991), "forgejo");
        assert_eq!(a.user(5), "5", "a name that is not UTF-8");
        assert_eq!(a.user(6), "6", "a name with a control character");
        assert_eq!(a.user(4242), "4242");
        assert_eq!(a.group(988), "forgejo");
        assert_eq!(a.group(4343), "4343");
        let none = Accounts::parse(b"", b"");
        assert_eq!(
            (none.user(0), none.group(0)),
            ("root".into(), "root".into())
        );
        assert_eq!(none.differing(0, 0, 0o40755, false, None), Perms::default());
    }

    #[test]
    fn what_differs_from_what_the_modules_make() {
        let a = accounts();
        let p = |owner: Option<&str>, group: Option<&str>, mode: Option<u32>| Perms {
            owner: owner.map(String::from),
            group: group.map(String::from),
            mode: mode.map(Mode::from_bits),
        };
        let dir = 0o40000;
        let reg = 0o100000;
        let cases = [
            ((0, 0, dir | 0o755, false, None), p(None, None, None)),
            (
                (991, 988, dir | 0o750, false, None),
                p(Some("forgejo"), Some("forgejo"), Some(0o750)),
            ),
            (
                (0, 0, dir | 0o1777, false, None),
                p(None, None, Some(0o1777)),
            ),
            (
                (1000, 100, dir | 0o755, false, Some("josh")),
                p(None, None, None),
            ),
            (
                (1000, 100, dir | 0o700, false, Some("josh")),
                p(None, None, Some(0o700)),
            ),
            (
                (0, 0, dir | 0o755, false, Some("josh")),
                p(Some("root"), Some("root"), None),
            ),
            // A user /etc/passwd does not know: NixOS's group for normal users.
            (
                (0, 100, dir | 0o755, false, Some("ghost")),
                p(Some("root"), None, None),
            ),
            ((0, 0, reg | 0o644, true, None), p(None, None, None)),
            ((0, 0, reg | 0o600, true, None), p(None, None, Some(0o600))),
            ((0, 0, reg | 0o755, true, None), p(None, None, Some(0o755))),
        ];
        for ((uid, gid, mode, file, home), want) in cases {
            assert_eq!(
                a.differing(uid, gid, mode, file, home),
                want,
                "{uid}:{gid} {mode:o} {home:?}"
            );
        }
    }
}
