//! Breadth (issue 12, section 4): what real users persist. `tests/fixtures/breadth/paths.tsv`
//! holds the paths public NixOS configurations persist and how many persist each;
//! `public.tsv` the public lists (the NixOS manual, impermanence's README and its preset pull
//! request). Each is laid out as a tree and audited with nothing declared, and the compiled-in
//! knowledge must call what real users persist `persist`: at least 90% of it, weighted by how
//! many configurations persist each path, and the rest `ephemeral` only where the knowledge
//! says it is a cache, temporary or recreated; a path ten or more configurations persist must
//! be `persist` itself.
//!
//! `cargo test --test breadth -- --nocapture` prints the figures the README quotes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

/// The file each persisted directory gets, so that no directory is empty (an empty one is
/// `generated`: units and tmpfiles make such anew) and its verdict is that of its own content.
const MARK: &str = ".imperm-breadth";

/// The home directory `~/` stands for.
const HOME: &str = "/home/alice";

/// The share of the weight that must come out `persist`.
const TARGET: f64 = 0.90;

/// A path at least this many configurations persist must come out `persist` itself (or
/// `ephemeral` by design), whatever the share: one regression there is one too many.
const COMMON: u64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Directory,
    File,
}

/// One line of a fixture: the path as the host sees it, what it is, and the rest of the line.
struct Row {
    path: String,
    kind: Kind,
    fields: Vec<String>,
}

/// Reads a fixture: `#` lines are comments; the others hold tab-separated fields, the kind
/// (`d` or `f`) in column `kind_at` and the path right after it.
fn read(name: &str, kind_at: usize) -> Vec<Row> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/breadth")
        .join(name);
    let text = fs::read_to_string(&file).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.is_empty())
        .map(|(n, line)| {
            let fields: Vec<String> = line.split('\t').map(str::to_string).collect();
            let at = |i: usize| -> &str {
                fields
                    .get(i)
                    .unwrap_or_else(|| panic!("{name}:{}: no field {i}: {line:?}", n + 1))
            };
            let kind = match at(kind_at) {
                "d" => Kind::Directory,
                "f" => Kind::File,
                other => panic!("{name}:{}: kind {other:?}", n + 1),
            };
            let raw = at(kind_at + 1);
            let path = match raw.strip_prefix("~/") {
                Some(rest) => format!("{HOME}/{rest}"),
                None => raw.to_string(),
            };
            assert!(path.starts_with('/'), "{name}:{}: {raw:?}", n + 1);
            Row { path, kind, fields }
        })
        .collect()
}

/// What imperm said of one piece of state.
#[derive(Clone, Debug)]
struct Said {
    path: String,
    verdict: String,
    reason: String,
    source: String,
}

/// A tree holding `rows`, audited with nothing declared.
struct Audited {
    /// The paths that lie below another row's path: they are directories, whatever the
    /// corpus says (a file persisted in one configuration, its directory in another).
    parents: HashSet<String>,
    suggestions: HashMap<String, Said>,
    _root: TempDir,
}

impl Audited {
    fn new(rows: &[Row]) -> Audited {
        let root = TempDir::new().unwrap();
        let parents: HashSet<String> = rows
            .iter()
            .flat_map(|r| {
                Path::new(&r.path)
                    .ancestors()
                    .skip(1)
                    .map(|a| a.display().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        // A NixOS root: the marker file, and /var/lib/nixos as activation leaves it.
        fs::create_dir_all(root.path().join("etc")).unwrap();
        fs::write(root.path().join("etc/NIXOS"), "").unwrap();
        let under = |p: &str| root.path().join(p.trim_start_matches('/'));
        let mut sorted: Vec<&Row> = rows.iter().collect();
        sorted.sort_by_key(|r| r.path.len());
        for row in sorted {
            let at = under(&row.path);
            if row.kind == Kind::File && !parents.contains(&row.path) {
                fs::create_dir_all(at.parent().unwrap()).unwrap();
                fs::write(&at, "state\n").unwrap();
            } else {
                fs::create_dir_all(&at).unwrap();
                fs::write(at.join(MARK), "state\n").unwrap();
            }
        }
        let config = root.path().with_extension("toml");
        fs::write(&config, "[persistence.\"/persist\"]\ndirectories = []\n").unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_imperm"))
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(root.path())
            .args(["audit", "--format", "json"])
            .output()
            .unwrap();
        let _ = fs::remove_file(&config);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["errors"], serde_json::json!([]), "{v}");
        let text = |s: &Value, k: &str| s[k].as_str().unwrap_or_default().to_string();
        let suggestions = v["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let said = Said {
                    path: text(s, "path"),
                    verdict: text(s, "verdict"),
                    reason: text(s, "reason"),
                    source: text(s, "source"),
                };
                (said.path.clone(), said)
            })
            .collect();
        Audited {
            parents,
            suggestions,
            _root: root,
        }
    }

    /// The suggestion that holds `row`'s own content: the row itself or the nearest
    /// suggested directory above it. None when nothing above it was walked.
    fn verdict(&self, row: &Row) -> Option<&Said> {
        let probe = if row.kind == Kind::File && !self.parents.contains(&row.path) {
            row.path.clone()
        } else {
            format!("{}/{MARK}", row.path)
        };
        Path::new(&probe)
            .ancestors()
            .find_map(|a| self.suggestions.get(a.to_str().unwrap()))
    }
}

/// The share of each verdict, raw and weighted, as a table.
fn figures(rows: &[(u64, &str)]) -> (BTreeMap<String, (u64, u64)>, String) {
    let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (count, verdict) in rows {
        let e = by.entry(verdict.to_string()).or_default();
        e.0 += 1;
        e.1 += count;
    }
    let (n, w) = (
        rows.len() as f64,
        rows.iter().map(|r| r.0).sum::<u64>() as f64,
    );
    let mut table = String::from("| verdict | paths | share | weighted | share |\n");
    table.push_str("| --- | --- | --- | --- | --- |\n");
    for (verdict, (paths, weight)) in &by {
        table.push_str(&format!(
            "| {verdict} | {paths} | {:.1}% | {weight} | {:.1}% |\n",
            100.0 * *paths as f64 / n,
            100.0 * *weight as f64 / w
        ));
    }
    (by, table)
}

/// Why a path persisted by real users may come out `ephemeral`: the knowledge must say it
/// is a cache, temporary, or recreated on its own.
fn ephemeral_by_design(said: &Said) -> bool {
    said.source == "knowledge"
        && ["cache", "temporary", "recreated"]
            .iter()
            .any(|w| said.reason.contains(w))
}

#[test]
fn what_public_configurations_persist_comes_out_persist() {
    let rows = read("paths.tsv", 1);
    assert!(rows.len() >= 100, "{} paths", rows.len());
    let audited = Audited::new(&rows);
    let knowledge = imperm::knowledge::builtin();
    let mut tally: Vec<(u64, &str)> = Vec::new();
    let mut wrong = Vec::new();
    for row in &rows {
        let count: u64 = row.fields[0].parse().unwrap();
        match audited.verdict(row) {
            Some(said) => {
                if said.verdict == "ephemeral" && !ephemeral_by_design(said) {
                    wrong.push(format!(
                        "{} (persisted by {count}) is ephemeral through {}: {} ({})",
                        row.path, said.path, said.reason, said.source
                    ));
                }
                if count >= COMMON && said.verdict == "review" {
                    wrong.push(format!(
                        "{} (persisted by {count}) is review through {}: {}",
                        row.path, said.path, said.reason
                    ));
                }
                if said.verdict == "generated" {
                    wrong.push(format!(
                        "{} (persisted by {count}) is generated through {}: {}",
                        row.path, said.path, said.reason
                    ));
                }
                tally.push((count, said.verdict.as_str()));
            }
            None => {
                // Only what imperm never walks (other filesystems, /tmp) is left unsaid.
                assert!(
                    knowledge.never_walked(Path::new(&row.path)).is_some(),
                    "{} is not in the audit",
                    row.path
                );
                tally.push((count, "not walked"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let (by, table) = figures(&tally);
    let weight: u64 = tally.iter().map(|t| t.0).sum();
    let persist = by.get("persist").map_or(0, |p| p.1) as f64 / weight as f64;
    println!(
        "{} paths, persisted {weight} times in all:\n{table}",
        rows.len()
    );
    let mut misses: Vec<(u64, &str, &str)> = rows
        .iter()
        .zip(&tally)
        .filter(|(_, t)| t.1 != "persist")
        .map(|(r, t)| (t.0, r.path.as_str(), t.1))
        .collect();
    misses.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    assert!(
        persist >= TARGET,
        "weighted persist share {:.3} < {TARGET}; not persist, most persisted first:\n{misses:#?}",
        persist
    );
}

#[test]
fn the_public_lists_get_the_verdicts_they_ask_for() {
    let rows = read("public.tsv", 1);
    let audited = Audited::new(&rows);
    let mut wrong = Vec::new();
    for row in &rows {
        let (source, expect) = (&row.fields[0], &row.fields[3]);
        match audited.verdict(row) {
            Some(said) if &said.verdict == expect => {}
            Some(said) => wrong.push(format!(
                "{} ({source}): {} through {}, not {expect}: {}",
                row.path, said.verdict, said.path, said.reason
            )),
            None => wrong.push(format!("{} ({source}): not in the audit", row.path)),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The manual's condition on the users' files is in what imperm says of them.
    let shadow = &audited.suggestions["/etc/shadow"];
    assert!(shadow.reason.contains("mutableUsers"), "{}", shadow.reason);
}
