//! The JSON that `nix eval --json .#nixosConfigurations.HOST.config.environment.persistence`
//! prints: storage paths mapping to `directories`, `files` and `users.<name>`, entries as
//! strings or attribute sets.
//!
//! The evaluated module adds internal attributes (`dirPath`, `defaultPerms`, …) and copies
//! every user entry into the top-level lists with `home` set; both are understood. Keys this
//! reader does not know are reported as warnings rather than errors, because they come from
//! a module version, not from a person's typo.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::declared::{self, DeclaredEntry, UserBlock};
use super::error::{ConfigError, Location};
use super::file::toml_key;
use crate::paths::escape;
use crate::persisted::{Entry, Kind};

const STORAGE_KEYS: &[&str] = &[
    "enable",
    "persistentStoragePath",
    "hideMounts",
    "enableDebugging",
    "enableWarnings",
    "assertions",
    "directories",
    "files",
    "users",
];
const USER_KEYS: &[&str] = &["home", "directories", "files", "name"];
const ENTRY_KEYS: &[&str] = &[
    "directory",
    "file",
    "user",
    "group",
    "mode",
    "home",
    "dirPath",
    "filePath",
    "parentDirectory",
    "defaultPerms",
    "hideMount",
    "persistentStoragePath",
    "enableDebugging",
    "method",
    "assertions",
];

/// Parses persistence JSON. Returns the entries and any warnings about unknown keys.
pub fn parse(file: &Path, text: &str) -> Result<(Vec<Entry>, Vec<String>), ConfigError> {
    // Editors on some systems start a file with a byte-order mark; TOML allows one, and
    // serde_json would call it "expected value" at 1:1, which says nothing.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value = serde_json::from_str::<Unique>(text)
        .map(|u| u.0)
        .map_err(|e| {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let what = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
            ConfigError::new(file, what).with_line_col(Some((e.line(), e.column())))
        })?;
    let mut reader = Reader {
        file,
        warnings: Vec::new(),
        unlisted: 0,
        declared: Vec::new(),
    };
    reader.top(&value)?;
    let entries = declared::resolve(file, reader.declared)?;
    let mut warnings = reader.warnings;
    if reader.unlisted > 0 {
        warnings.push(format!(
            "{}: {} more unknown attributes ignored",
            escape(file),
            reader.unlisted
        ));
    }
    Ok((entries, warnings))
}

/// A JSON value read like `serde_json::Value`, except that an object with a key twice is an
/// error: serde_json keeps the last one without a word, so a storage or a list written
/// twice would silently lose the first. `nix eval` never prints one (attribute names are
/// unique), so a duplicate means the file was edited or put together by hand.
/// serde_json's nesting limit still applies: it counts in its own `deserialize_any`.
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate attribute {}",
                    crate::paths::shown(&key)
                )));
            }
            let Unique(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// How many unknown attributes are named one by one; the rest are counted.
const WARNINGS_LISTED: usize = 20;

struct Reader<'a> {
    file: &'a Path,
    warnings: Vec<String>,
    /// Unknown attributes past the first [`WARNINGS_LISTED`].
    unlisted: usize,
    declared: Vec<DeclaredEntry>,
}

impl Reader<'_> {
    fn fail(&self, key: &str, what: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, what).at(&Location::key(key))
    }

    fn object<'v>(
        &self,
        key: &str,
        value: &'v Value,
    ) -> Result<&'v Map<String, Value>, ConfigError> {
        value.as_object().ok_or_else(|| {
            self.fail(
                key,
                format!("expected an attribute set, found {}", kind_of(value)),
            )
        })
    }

    fn string<'v>(&self, key: &str, value: &'v Value) -> Result<&'v str, ConfigError> {
        value
            .as_str()
            .ok_or_else(|| self.fail(key, format!("expected a string, found {}", kind_of(value))))
    }

    fn optional_string(
        &self,
        key: &str,
        obj: &Map<String, Value>,
        field: &str,
    ) -> Result<Option<String>, ConfigError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(self.string(&format!("{key}.{field}"), v)?.to_string())),
        }
    }

    fn warn_unknown(&mut self, key: &str, obj: &Map<String, Value>, known: &[&str]) {
        for name in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            if self.warnings.len() == WARNINGS_LISTED {
                self.unlisted += 1;
                continue;
            }
            // Quoted and cut like a key: a name may hold a newline or be megabytes long.
            self.warnings.push(format!(
                "{}: {key}: unknown attribute {} ignored",
                escape(self.file),
                toml_key(name)
            ));
        }
    }

    fn top(&mut self, value: &Value) -> Result<(), ConfigError> {
        let top = self.object("(top level)", value)?;
        if top.contains_key("directories") || top.contains_key("files") {
            return Err(self.fail(
                "(top level)",
                "this is one storage location; evaluate `config.environment.persistence` (the attribute set of all of them)",
            ));
        }
        for (name, storage) in top {
            self.storage(name, storage)?;
        }
        Ok(())
    }

    fn storage(&mut self, name: &str, value: &Value) -> Result<(), ConfigError> {
        let base = toml_key(name);
        let obj = self.object(&base, value)?;
        self.warn_unknown(&base, obj, STORAGE_KEYS);
        if obj.get("enable") == Some(&Value::Bool(false)) {
            return Ok(());
        }
        // Checked here, not only with each entry: a storage without entries is still
        // declared, and what it names must be a storage path.
        let storage = match self.optional_string(&base, obj, "persistentStoragePath")? {
            Some(path) => {
                let at = Location::key(format!("{base}.persistentStoragePath"));
                declared::storage_path(self.file, &path, &at)?;
                path
            }
            None => {
                declared::storage_path(self.file, name, &Location::key(base.clone()))?;
                name.to_string()
            }
        };

        // User blocks first, so the copies the module puts into the top-level lists are
        // recognised as already declared.
        let mut from_users: HashSet<(Kind, PathBuf)> = HashSet::new();
        if let Some(users) = obj.get("users") {
            let users_key = format!("{base}.users");
            let users = self.object(&users_key, users)?;
            for (user, block) in users {
                let user_key = format!("{users_key}.{}", toml_key(user));
                let block_obj = self.object(&user_key, block)?;
                self.warn_unknown(&user_key, block_obj, USER_KEYS);
                let identity = UserBlock {
                    name: user.clone(),
                    home: self.optional_string(&user_key, block_obj, "home")?,
                    at: Location::key(user_key.clone()),
                };
                let home = identity
                    .home
                    .clone()
                    .unwrap_or_else(|| declared::default_home(user));
                for kind in [Kind::Directory, Kind::File] {
                    for d in self.list(&user_key, block_obj, kind, &storage, Some(&identity))? {
                        from_users.insert((kind, Path::new(&home).join(&d.path)));
                        self.declared.push(d);
                    }
                }
            }
        }
        for kind in [Kind::Directory, Kind::File] {
            for d in self.list(&base, obj, kind, &storage, None)? {
                let duplicate_of_user = d.user.as_ref().is_some_and(|u| {
                    let home = u
                        .home
                        .clone()
                        .unwrap_or_else(|| declared::default_home(&u.name));
                    from_users.contains(&(kind, Path::new(&home).join(&d.path)))
                });
                if !duplicate_of_user {
                    self.declared.push(d);
                }
            }
        }
        Ok(())
    }

    fn list(
        &mut self,
        base: &str,
        obj: &Map<String, Value>,
        kind: Kind,
        storage: &str,
        user: Option<&UserBlock>,
    ) -> Result<Vec<DeclaredEntry>, ConfigError> {
        let (list_name, field) = match kind {
            Kind::Directory => ("directories", "directory"),
            Kind::File => ("files", "file"),
        };
        let Some(items) = obj.get(list_name) else {
            return Ok(Vec::new());
        };
        let list_key = format!("{base}.{list_name}");
        let items = items.as_array().ok_or_else(|| {
            self.fail(
                &list_key,
                format!("expected a list, found {}", kind_of(items)),
            )
        })?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let key = format!("{list_key}[{i}]");
            let mut entry = DeclaredEntry {
                path: String::new(),
                kind,
                storage: storage.to_string(),
                user: user.cloned(),
                owner: user.map(|u| u.name.clone()),
                group: None,
                mode: None,
                at: Location::key(key.clone()),
            };
            match item {
                Value::String(path) => entry.path = path.clone(),
                Value::Object(attrs) => {
                    self.warn_unknown(&key, attrs, ENTRY_KEYS);
                    let path = attrs
                        .get(field)
                        .ok_or_else(|| self.fail(&key, format!("missing `{field}`")))?;
                    entry.path = self.string(&format!("{key}.{field}"), path)?.to_string();
                    if let Some(p) = self.optional_string(&key, attrs, "persistentStoragePath")? {
                        entry.storage = p;
                    }
                    // An evaluated top-level entry that belongs to a user carries its home.
                    if user.is_none() {
                        if let Some(home) = self.optional_string(&key, attrs, "home")? {
                            let name = self
                                .optional_string(&key, attrs, "user")?
                                .ok_or_else(|| self.fail(&key, "has `home` but no `user`"))?;
                            entry.user = Some(UserBlock {
                                name,
                                home: Some(home),
                                at: Location::key(key.clone()),
                            });
                        }
                    }
                    let perms = match kind {
                        Kind::Directory => Some(attrs),
                        Kind::File => match attrs.get("parentDirectory") {
                            None | Some(Value::Null) => None,
                            Some(p) => Some(self.object(&format!("{key}.parentDirectory"), p)?),
                        },
                    };
                    if let Some(perms) = perms {
                        if let Some(owner) = self.optional_string(&key, perms, "user")? {
                            entry.owner = Some(owner);
                        }
                        entry.group = self.optional_string(&key, perms, "group")?;
                        entry.mode = self.optional_string(&key, perms, "mode")?;
                    }
                }
                other => {
                    return Err(self.fail(
                        &key,
                        format!(
                            "expected a path string or an attribute set, found {}",
                            kind_of(other)
                        ),
                    ));
                }
            }
            out.push(entry);
        }
        Ok(out)
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an attribute set",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e.kind.as_str(),
                    escape(&e.path),
                    e.user.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }

    #[test]
    fn plain_strings_and_user_blocks() {
        let json = r#"{"/persist": {
            "directories": ["/var/log", {"directory": "/var/lib/private", "mode": "0700"}],
            "files": ["/etc/machine-id"],
            "users": {"josh": {"directories": [".ssh"], "files": [".zsh_history"]}}
        }}"#;
        let (entries, warnings) = parse(Path::new("p.json"), json).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            paths(&entries),
            [
                "directory /home/josh/.ssh josh",
                "file /home/josh/.zsh_history josh",
                "directory /var/log -",
                "directory /var/lib/private -",
                "file /etc/machine-id -",
            ]
        );
        assert_eq!(entries[3].mode.unwrap().to_string(), "0700");
    }

    /// What `nix eval --json` prints for an evaluated impermanence module: normalised
    /// attribute sets, internal attributes, and user entries repeated at the top level.
    #[test]
    fn evaluated_module_output() {
        let json = r#"{"/persist": {
            "enable": true, "enableDebugging": false, "enableWarnings": true,
            "hideMounts": true, "persistentStoragePath": "/persist",
            "directories": [
              {"directory": "/var/lib/nixos", "dirPath": "/var/lib/nixos", "home": null,
               "user": "root", "group": "root", "mode": "0755", "hideMount": true,
               "persistentStoragePath": "/persist", "enableDebugging": false,
               "defaultPerms": {"user": "root", "group": "root", "mode": "0755"}},
              {"directory": ".ssh", "dirPath": "/home/josh/.ssh", "home": "/home/josh",
               "user": "josh", "group": "users", "mode": "0700", "hideMount": true,
               "persistentStoragePath": "/persist", "enableDebugging": false,
               "defaultPerms": {"user": "josh", "group": "users", "mode": "0755"}}
            ],
            "files": [
              {"file": "/etc/machine-id", "filePath": "/etc/machine-id", "home": null,
               "persistentStoragePath": "/persist", "enableDebugging": false,
               "parentDirectory": {"directory": "/etc", "dirPath": "/etc", "user": "root",
                 "group": "root", "mode": "0755", "home": null,
                 "persistentStoragePath": "/persist"}}
            ],
            "users": {"josh": {"home": "/home/josh", "files": [],
              "directories": [
              {"directory": ".ssh", "dirPath": "/home/josh/.ssh", "home": "/home/josh",
               "user": "josh", "group": "users", "mode": "0700", "hideMount": true,
               "persistentStoragePath": "/persist", "enableDebugging": false}]}}
          },
          "/old": {"enable": false, "directories": ["/nope"]}}"#;
        let (entries, warnings) = parse(Path::new("p.json"), json).unwrap();
        assert_eq!(warnings, Vec::<String>::new());
        assert_eq!(
            paths(&entries),
            [
                "directory /home/josh/.ssh josh",
                "directory /var/lib/nixos -",
                "file /etc/machine-id -",
            ]
        );
        assert_eq!(entries[0].group.as_deref(), Some("users"));
    }

    #[test]
    fn unknown_attributes_warn_but_load() {
        let json = r#"{"/persist": {"newOption": 1, "directories": [{"directory": "/x", "shiny": true}]}}"#;
        let (entries, warnings) = parse(Path::new("p.json"), json).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            warnings,
            [
                "p.json: \"/persist\": unknown attribute newOption ignored",
                "p.json: \"/persist\".directories[0]: unknown attribute shiny ignored",
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_is_allowed_as_in_toml() {
        let (entries, _) = parse(
            Path::new("p.json"),
            "\u{feff}{\"/persist\": {\"directories\": [\"/var/lib/x\"]}}",
        )
        .unwrap();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn unknown_attributes_are_named_on_one_line_and_capped() {
        let attrs: Vec<String> = (0..100).map(|i| format!("\"odd\\nname{i}\": 1")).collect();
        let json = format!(
            r#"{{"/persist": {{{}, "directories": ["/x"]}}}}"#,
            attrs.join(", ")
        );
        let (_, warnings) = parse(Path::new("p.json"), &json).unwrap();
        assert_eq!(warnings.len(), 21);
        assert_eq!(
            warnings[0],
            "p.json: \"/persist\": unknown attribute \"odd\\x0aname0\" ignored"
        );
        assert_eq!(warnings[20], "p.json: 80 more unknown attributes ignored");
        assert!(warnings.iter().all(|w| !w.contains('\n')));
    }

    #[test]
    fn bad_input_names_the_key() {
        let cases: &[(&str, &str)] = &[
            ("{", "p.json:1:1: EOF while parsing an object"),
            (
                "[1]",
                "p.json: (top level): expected an attribute set, found a list",
            ),
            (
                r#"{"/persist": {"directories": ["var/lib"]}}"#,
                "p.json: \"/persist\".directories[0]: \"var/lib\" is not an absolute path",
            ),
            (
                r#"{"/persist": {"users": {"josh": {"directories": ["/home/josh/x"]}}}}"#,
                "p.json: \"/persist\".users.josh.directories[0]: \"/home/josh/x\" is absolute",
            ),
            (
                r#"{"/persist": {"files": [{"file": "/a/../b"}]}}"#,
                "p.json: \"/persist\".files[0]: \"/a/../b\" contains `..`",
            ),
            (
                r#"{"/persist": {"directories": "/var/log"}}"#,
                "p.json: \"/persist\".directories: expected a list, found a string",
            ),
            (
                r#"{"/persist": {"directories": [{"mode": "0700"}]}}"#,
                "p.json: \"/persist\".directories[0]: missing `directory`",
            ),
            (
                r#"{"/persist": {"directories": [{"directory": 3}]}}"#,
                "p.json: \"/persist\".directories[0].directory: expected a string, found a number",
            ),
            (
                r#"{"directories": ["/var/log"]}"#,
                "p.json: (top level): this is one storage location",
            ),
        ];
        for (json, want) in cases {
            let got = parse(Path::new("p.json"), json).unwrap_err().to_string();
            assert!(!got.contains('\n'));
            assert!(
                got.starts_with(want),
                "for {json}\n  got: {got}\n want: {want}"
            );
        }
    }

    /// An evaluated module's output with users, modes and unknown attributes.
    const VALID: &str = r#"{"/persist": {"enable": true, "hideMounts": true, "newOption": 1,
        "directories": ["/var/log", {"directory": "/var/lib/private", "mode": "0700", "user": "root"}],
        "files": ["/etc/machine-id", {"file": "/etc/nix/id", "parentDirectory": {"mode": "0700"}}],
        "users": {"josh": {"home": "/home/josh", "directories": [".ssh"], "files": [".x"]}}},
      "/state": {"persistentStoragePath": "/state", "directories": ["/srv"]}}"#;

    fn parses_or_names_the_place(text: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        match parse(Path::new("p.json"), text) {
            Ok((entries, warnings)) => {
                for e in entries {
                    let raw = e.path.to_str().expect("configured paths are UTF-8");
                    proptest::prop_assert_eq!(
                        crate::paths::normalize_absolute(raw),
                        Ok(e.path.clone())
                    );
                }
                for w in warnings {
                    proptest::prop_assert!(!w.contains('\n') && w.starts_with("p.json"), "{}", w);
                }
            }
            Err(e) => crate::config::refusal::one_line_naming_the_place(&e, "p.json")?,
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
            parses_or_names_the_place(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn mutations_of_valid_json_parse_or_name_the_place(edits in crate::mutate::edits()) {
            let text = crate::mutate::apply(VALID.as_bytes(), &edits);
            parses_or_names_the_place(&String::from_utf8_lossy(&text))?;
        }
    }
}
