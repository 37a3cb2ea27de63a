//! `fleet status`, the pure part: which names may be handed to ssh as hosts, the hosts
//! file, what one host's answer to `imperm status --format json` says (or why it says
//! nothing), and the table of every host. Running ssh is the command's job.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;

use crate::output::Styles;
use crate::paths::shown;

/// What runs on every host, as ssh hands it to the remote shell.
pub const REMOTE_COMMAND: [&str; 4] = ["imperm", "status", "--format", "json"];

/// The most of a host's standard output that is read; a larger answer is not a status.
pub const ANSWER_CAP: usize = 16 << 20;

/// The most of a host's standard error that is kept (its last line names the failure).
pub const STDERR_CAP: usize = 64 << 10;

/// The longest text a table cell takes from a host; a longer one is cut (JSON keeps it).
const CELL_MAX: usize = 80;

/// The same for the reason a host is not ready (JSON has them all).
const REASON_MAX: usize = 48;

/// The same for an error, which runs to the end of its line.
const ERROR_MAX: usize = 240;

/// Why a name cannot be given to ssh as a host, or `None`.
///
/// ssh takes the same word for an alias of the user's ssh config, `user@host`, a name or
/// an address, so the characters those use are allowed and nothing else: no white space
/// or control character (a second word would be a command), no shell metacharacter, and
/// no leading `-`, which ssh would take as an option (the host is also passed after `--`).
pub fn host_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.starts_with('-') {
        return Some("starts with `-` (ssh would take it as an option)");
    }
    if name.len() > 255 {
        return Some("is longer than 255 bytes");
    }
    if name.starts_with('@') || name.ends_with('@') || name.matches('@').count() > 1 {
        return Some("is not HOST or USER@HOST");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@' | ':' | '%'))
    {
        return Some(
            "holds a character no host name or ssh alias has (letters, digits, `.-_:%` and one `@` are allowed)",
        );
    }
    None
}

/// A hosts file: one host a line, `#` starts a comment (to the end of the line), blank
/// lines are skipped. Returns the hosts, or the 1-based line and why it is refused.
pub fn parse_hosts_file(text: &str) -> Result<Vec<String>, (usize, String)> {
    let mut hosts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let host = words.next().unwrap_or("");
        if let Some(why) = host_problem(host) {
            return Err((i + 1, format!("host {} {why}", shown(host))));
        }
        if let Some(second) = words.next() {
            return Err((
                i + 1,
                format!("{} then {}: one host a line", shown(host), shown(second)),
            ));
        }
        hosts.push(host.to_string());
    }
    Ok(hosts)
}

/// The hosts of a flake: the names `nix eval --json FLAKE#nixosConfigurations --apply
/// builtins.attrNames` prints, each checked as a host.
pub fn flake_hosts(json: &[u8]) -> Result<Vec<String>, String> {
    let names: Vec<String> = serde_json::from_slice(json)
        .map_err(|e| format!("nix printed something that is not a list of names ({e})"))?;
    for name in &names {
        if let Some(why) = host_problem(name) {
            return Err(format!("nixosConfigurations.{} {why}", shown(name)));
        }
    }
    Ok(names)
}

/// Hosts in the order given, each once.
pub fn unique(hosts: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    hosts
        .into_iter()
        .filter(|h| seen.insert(h.clone()))
        .collect()
}

/// How the ssh process for one host ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Exit(i32),
    /// A signal ended it (not one of imperm's).
    Signal(i32),
    /// No answer within the timeout (seconds); imperm killed it.
    TimedOut(u64),
    /// It wrote more than [`ANSWER_CAP`]; imperm killed it.
    TooLarge,
    /// ssh could not be started at all.
    NotStarted(String),
}

/// What came back from one host.
#[derive(Clone, Debug)]
pub struct Answer {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub ended: Ended,
}

/// Every field of the status document that the fleet reads, as JSON pointers, in one
/// place. Where a field has had more than one name (readiness and the check's counts are
/// newer than the rest) the first present wins. A field that is missing or of another type
/// is shown as unknown, never an error: hosts run other versions of imperm.
mod field {
    pub const FS_TYPE: &[&str] = &["/filesystem/type"];
    pub const READY: &[&str] = &["/ready/ready", "/ready"];
    /// Every reason checked, `ok` ones too (`check`, `state`, `detail`).
    pub const READY_REASONS: &[&str] = &["/reasons", "/ready/reasons"];
    /// In a reason: its state, and the state of one that needs nothing.
    pub const REASON_STATE: &str = "state";
    pub const REASON_OK: &str = "ok";
    pub const REASON_PROBLEM: &str = "problem";
    pub const EPHEMERAL: &[&str] = &["/ephemeral", "/ready/ephemeral"];
    pub const DIRECTORIES: &[&str] = &["/persisted/directories"];
    pub const FILES: &[&str] = &["/persisted/files"];
    pub const TO_PERSIST: &[&str] = &[
        "/ready/check/persist",
        "/check/persist",
        "/ready/found/persist",
        "/found/persist",
    ];
    pub const SNAPSHOTS: &[&str] = &["/snapshots/count"];
    pub const LAST_RESET: &[&str] = &["/snapshots/last_reset"];
    pub const STORAGE: &[&str] = &["/storage"];
    pub const CONFIG_LOADED: &[&str] = &["/config/loaded"];
    pub const PERSISTENCE_KIND: &[&str] = &["/persistence/kind"];
    pub const PROBLEMS: &[&str] = &["/problems"];
    /// Of each `storage` item.
    pub const STORAGE_PATH: &str = "/path";
    pub const STORAGE_WIPED: &str = "/wiped_by_reset";
    pub const STORAGE_SEPARATE: &str = "/separate";
    /// Top-level keys of which a status document has at least one.
    pub const STATUS_KEYS: &[&str] = &["filesystem", "persisted", "snapshots", "storage"];
}

fn first<'a>(doc: &'a Value, pointers: &[&str]) -> Option<&'a Value> {
    pointers
        .iter()
        .find_map(|p| doc.pointer(p).filter(|v| !v.is_null()))
}

fn bool_at(doc: &Value, pointers: &[&str]) -> Option<bool> {
    first(doc, pointers).and_then(Value::as_bool)
}

fn count_at(doc: &Value, pointers: &[&str]) -> Option<u64> {
    first(doc, pointers).and_then(Value::as_u64)
}

fn text_at(doc: &Value, pointers: &[&str]) -> Option<String> {
    first(doc, pointers)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A reason or problem as the host wrote it: a string, or an object with its sentence
/// (`detail`, after what was checked when it says so: `entries: /var/lib/x is not in
/// /persist`).
fn sentence(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let text = ["detail", "reason", "message", "text", "why"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str));
            match (o.get("check").and_then(Value::as_str), text) {
                (Some(check), Some(text)) => format!("{check}: {text}"),
                (None, Some(text)) => text.to_string(),
                (_, None) => v.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// The sentences of a list, leaving out the items whose state is `ok`, problems first
/// (before what could not be checked).
fn sentences(doc: &Value, pointers: &[&str]) -> Vec<String> {
    let state = |r: &Value| {
        r.get(field::REASON_STATE)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut items: Vec<&Value> = first(doc, pointers)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|r| state(r).as_deref() != Some(field::REASON_OK))
                .collect()
        })
        .unwrap_or_default();
    items.sort_by_key(|r| state(r).as_deref() != Some(field::REASON_PROBLEM));
    items.into_iter().map(sentence).collect()
}

/// One host's line of the table: what its status says, or why there is none.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub host: String,
    #[serde(flatten)]
    pub result: HostResult,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum HostResult {
    Status(Box<Summary>),
    Error { error: String },
}

/// What the table shows of one host's status; `None` is unknown (null in JSON, `?` in
/// the table).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub filesystem: Option<String>,
    pub ephemeral: Option<bool>,
    pub ready: Option<bool>,
    /// Why not ready, as the host says.
    pub reasons: Vec<String>,
    /// Declared directories and files.
    pub persisted: Option<u64>,
    /// What the host's check finds that needs persisting.
    pub to_persist: Option<u64>,
    pub snapshots: Option<u64>,
    pub last_reset: Option<String>,
    pub problems: Vec<String>,
    /// The host's whole answer, as it sent it.
    pub status: Value,
}

impl Row {
    /// Whether this host needs nothing: it answered, says it is ready (a readiness it
    /// does not give, or gives as something else than true or false, is not taken for
    /// good), and has no problem.
    pub fn fine(&self) -> bool {
        match &self.result {
            HostResult::Status(s) => s.ready == Some(true) && s.problems.is_empty(),
            HostResult::Error { .. } => false,
        }
    }
}

/// The last line of a program's stderr that says why it failed: not a warning (ssh's
/// "Warning: Permanently added …", nix's "warning: …") unless there is nothing else;
/// printable.
pub fn last_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let said = || text.lines().map(str::trim).filter(|l| !l.is_empty());
    said()
        .rfind(|l| !l.to_ascii_lowercase().starts_with("warning:"))
        .or_else(|| said().next_back())
        .map(printable)
}

/// Reads one host's answer.
pub fn row(host: &str, answer: &Answer) -> Row {
    let result = match judge(answer) {
        Ok(doc) => HostResult::Status(Box::new(summarize(doc))),
        Err(error) => HostResult::Error { error },
    };
    Row {
        host: host.to_string(),
        result,
    }
}

fn judge(answer: &Answer) -> Result<Value, String> {
    let said = last_line(&answer.stderr);
    let said_or = |default: &str| said.clone().unwrap_or_else(|| default.to_string());
    match &answer.ended {
        Ended::NotStarted(why) => return Err(format!("ssh could not be started: {why}")),
        Ended::TimedOut(secs) => {
            return Err(format!("no answer within {secs} s (ssh was stopped)"));
        }
        Ended::TooLarge => {
            return Err(format!(
                "answered more than {} MiB: not an imperm status (ssh was stopped)",
                ANSWER_CAP >> 20
            ));
        }
        Ended::Signal(n) => return Err(format!("ssh was ended by signal {n}")),
        Ended::Exit(255) => {
            // ssh's own last line says which: refused, no route, key not accepted.
            return Err(format!(
                "ssh failed: {}",
                said_or("exit 255 without a message")
            ));
        }
        Ended::Exit(code) => {
            let not_found = *code == 127
                || said
                    .as_deref()
                    .is_some_and(|l| l.contains("command not found") || l.ends_with("not found"));
            if not_found && answer.stdout.is_empty() {
                return Err(format!(
                    "imperm not found on the host: {}",
                    said_or("exit 127")
                ));
            }
            if answer.stdout.iter().all(u8::is_ascii_whitespace) {
                return Err(match (code, said) {
                    (0, None) => "answered nothing".to_string(),
                    (_, said) => format!(
                        "imperm status failed (exit {code}): {}",
                        said.unwrap_or_else(|| "no message".into())
                    ),
                });
            }
        }
    }
    let doc: Value = serde_json::from_slice(&answer.stdout).map_err(|e| {
        let start = String::from_utf8_lossy(&answer.stdout[..answer.stdout.len().min(60)])
            .trim()
            .to_string();
        format!(
            "answered something that is not JSON ({e}), beginning {}",
            shown(&start)
        )
    })?;
    let is_status = doc
        .as_object()
        .is_some_and(|o| field::STATUS_KEYS.iter().any(|k| o.contains_key(*k)));
    if !is_status {
        return Err(format!(
            "answered JSON that is not an imperm status (no {} at the top)",
            field::STATUS_KEYS.join(", ")
        ));
    }
    Ok(doc)
}

/// Whether the host's root is already ephemeral. The host's own word when its status has
/// one; else what shows it: a reset's snapshot, a tmpfs root, the persisted set read from
/// the live bind mounts (yes); no old root at all, or no configuration and only imperm's
/// template (no).
fn ephemeral(doc: &Value) -> Option<bool> {
    if let Some(said) = bool_at(doc, field::EPHEMERAL) {
        return Some(said);
    }
    let fs = text_at(doc, field::FS_TYPE);
    let kind = text_at(doc, field::PERSISTENCE_KIND);
    if text_at(doc, field::LAST_RESET).is_some()
        || fs.as_deref() == Some("tmpfs")
        || kind.as_deref() == Some("mount-table")
    {
        return Some(true);
    }
    if count_at(doc, field::SNAPSHOTS) == Some(0)
        || (bool_at(doc, field::CONFIG_LOADED) == Some(false)
            && kind.as_deref() == Some("template"))
    {
        return Some(false);
    }
    None
}

fn summarize(doc: Value) -> Summary {
    let persisted = match (
        count_at(&doc, field::DIRECTORIES),
        count_at(&doc, field::FILES),
    ) {
        (Some(d), Some(f)) => Some(d + f),
        _ => None,
    };
    let to_persist = count_at(&doc, field::TO_PERSIST);
    let mut problems = Vec::new();
    for storage in first(&doc, field::STORAGE)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = storage
            .pointer(field::STORAGE_PATH)
            .and_then(Value::as_str)
            .unwrap_or("?");
        let wiped = storage
            .pointer(field::STORAGE_WIPED)
            .and_then(Value::as_bool);
        let separate = storage
            .pointer(field::STORAGE_SEPARATE)
            .and_then(Value::as_bool);
        if wiped == Some(true) || (wiped.is_none() && separate == Some(false)) {
            problems.push(format!("{path}: the reset would wipe this storage"));
        }
    }
    if let Some(n) = to_persist.filter(|n| *n > 0) {
        problems.push(crate::words::count(
            n as usize,
            "path to persist",
            "paths to persist",
        ));
    }
    problems.extend(sentences(&doc, field::PROBLEMS));
    let ready = bool_at(&doc, field::READY);
    Summary {
        filesystem: text_at(&doc, field::FS_TYPE),
        ephemeral: ephemeral(&doc),
        ready,
        reasons: sentences(&doc, field::READY_REASONS),
        persisted,
        to_persist,
        snapshots: count_at(&doc, field::SNAPSHOTS),
        last_reset: text_at(&doc, field::LAST_RESET),
        problems,
        status: doc,
    }
}

/// A host's text for a table cell: escaped (a host cannot move the cursor or colour the
/// terminal) and cut.
fn cell(text: &str) -> String {
    cut(text, CELL_MAX)
}

fn cut(text: &str, max: usize) -> String {
    let shown = printable(text);
    match shown.char_indices().nth(max) {
        None => shown,
        Some((cut, _)) => format!("{}…", &shown[..cut]),
    }
}

/// A host's text with every control character as `\xHH` (each byte of it), so that it
/// can neither move the cursor nor colour the terminal. Unlike [`crate::paths::escape`], a backslash
/// stays: paths in a status are already in that escaped form, and stay as the host wrote
/// them.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn known<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "?".to_string(), T::to_string)
}

fn yes_no(v: Option<bool>) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "?".into(),
    }
}

const HEADINGS: [&str; 9] = [
    "HOST",
    "FILESYSTEM",
    "EPHEMERAL",
    "READY",
    "PERSISTED",
    "TO PERSIST",
    "SNAPSHOTS",
    "LAST RESET",
    "PROBLEMS",
];

/// The table's cells of one row, each with whether it is bad news.
fn cells(row: &Row) -> Vec<(String, bool)> {
    let host = (row.host.clone(), false);
    let s = match &row.result {
        HostResult::Error { error } => {
            return vec![host, (format!("error: {}", cut(error, ERROR_MAX)), true)];
        }
        HostResult::Status(s) => s,
    };
    let ready = match (s.ready, s.reasons.as_slice()) {
        (Some(true), _) => ("ready".to_string(), false),
        (Some(false), []) => ("not ready".to_string(), true),
        (Some(false), [one]) => (format!("no: {}", cut(one, REASON_MAX)), true),
        (Some(false), [one, rest @ ..]) => (
            format!("no: {} (+{} more)", cut(one, REASON_MAX), rest.len()),
            true,
        ),
        (None, _) => ("?".to_string(), false),
    };
    vec![
        host,
        (known(&s.filesystem.as_deref().map(cell)), false),
        (yes_no(s.ephemeral), false),
        ready,
        (known(&s.persisted), false),
        (known(&s.to_persist), s.to_persist.is_some_and(|n| n > 0)),
        (known(&s.snapshots), false),
        (known(&s.last_reset.as_deref().map(cell)), false),
        (
            if s.problems.is_empty() {
                "-".to_string()
            } else {
                s.problems
                    .iter()
                    .map(|p| cell(p))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
            !s.problems.is_empty(),
        ),
    ]
}

/// The table of every host, in the order given, and a last line that counts them.
pub fn render(rows: &[Row], out: &mut dyn Write, styles: &Styles) -> io::Result<()> {
    let table: Vec<Vec<(String, bool)>> = rows.iter().map(cells).collect();
    let mut widths: Vec<usize> = HEADINGS.iter().map(|h| h.chars().count()).collect();
    for r in &table {
        // An error row's message runs to the end of the line: it sets no width.
        if r.len() == HEADINGS.len() {
            for (w, (text, _)) in widths.iter_mut().zip(r) {
                *w = (*w).max(text.chars().count());
            }
        } else {
            widths[0] = widths[0].max(r[0].0.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[(String, bool)], style: Option<anstyle::Style>| {
        let last = cells.len() - 1;
        for (i, (text, bad)) in cells.iter().enumerate() {
            let style = style.unwrap_or(if *bad {
                styles.problem
            } else {
                anstyle::Style::new()
            });
            let pad = if i == last {
                0
            } else {
                widths[i].saturating_sub(text.chars().count()) + 2
            };
            write!(out, "{style}{text}{style:#}{:pad$}", "")?;
        }
        writeln!(out)
    };
    let headings: Vec<(String, bool)> = HEADINGS.iter().map(|h| (h.to_string(), false)).collect();
    line(out, &headings, Some(styles.heading))?;
    for r in &table {
        line(out, r, None)?;
    }
    let errors = rows
        .iter()
        .filter(|r| matches!(r.result, HostResult::Error { .. }))
        .count();
    let fine = rows.iter().filter(|r| r.fine()).count();
    let need = rows.len() - errors - fine;
    let mut parts = vec![format!("{fine} fine")];
    if need > 0 {
        parts.push(format!(
            "{need} not ready, not known to be, or with problems"
        ));
    }
    if errors > 0 {
        parts.push(format!("{errors} without an answer"));
    }
    writeln!(
        out,
        "{}: {}",
        crate::words::count(rows.len(), "host", "hosts"),
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(stdout: &str, stderr: &str, ended: Ended) -> Answer {
        Answer {
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            ended,
        }
    }

    /// Today's `status --format json` (before readiness), as a host without a reset has it.
    fn status_today() -> Value {
        json!({
            "root": "/",
            "config": {"path": "/etc/imperm/config.toml", "loaded": true},
            "persistence": {"kind": "config-file", "file": "/etc/imperm/config.toml"},
            "filesystem": {"type": "btrfs", "from": "config", "device": "/dev/vda2",
                           "root_subvolume": "@root", "snapshot_dir": "@snapshots"},
            "persisted": {"directories": 11, "files": 5, "users": ["josh"]},
            "storage": [{"path": "/persist", "separate": true, "wiped_by_reset": false,
                         "mount_point": "/persist", "mount_root": "/@persist", "inside": null,
                         "fs_type": "btrfs"}],
            "retention": {"keep_last": 5},
            "snapshots": {"count": 0, "last_reset": null, "note": null}
        })
    }

    fn summary_of(doc: &Value) -> Summary {
        match row("h", &answer(&doc.to_string(), "", Ended::Exit(0))).result {
            HostResult::Status(s) => *s,
            HostResult::Error { error } => panic!("{doc}: {error}"),
        }
    }

    #[test]
    fn host_names_that_ssh_could_misread_are_refused() {
        for (name, ok) in [
            ("l001", true),
            ("root@h001.example.org", true),
            ("192.0.2.7", true),
            ("fe80::1%eth0", true),
            ("my_alias-2", true),
            ("", false),
            ("-oProxyCommand=sh", false),
            ("-", false),
            ("a b", false),
            ("a\nb", false),
            ("a;b", false),
            ("$(reboot)", false),
            ("@host", false),
            ("user@", false),
            ("a@b@c", false),
            ("h\u{e9}", false),
        ] {
            assert_eq!(host_problem(name).is_none(), ok, "{name:?}");
        }
        assert!(host_problem(&"a".repeat(256)).is_some());
    }

    #[test]
    fn hosts_files_take_one_host_a_line_with_comments() {
        let text = "# the fleet\nl001\n\n  h001   # services\nroot@o001\n\tjuni\n";
        assert_eq!(
            parse_hosts_file(text).unwrap(),
            ["l001", "h001", "root@o001", "juni"]
        );
        assert_eq!(parse_hosts_file("").unwrap(), Vec::<String>::new());
        for (text, line, why) in [
            ("l001\nh001 h002\n", 2, "one host a line"),
            ("# x\n\n-oProxyCommand=x\n", 3, "starts with `-`"),
            ("a;b\n", 1, "holds a character"),
        ] {
            let (at, message) = parse_hosts_file(text).unwrap_err();
            assert_eq!(at, line, "{text:?}");
            assert!(message.contains(why), "{text:?}: {message}");
        }
        assert_eq!(
            flake_hosts(br#"["juni","l001"]"#).unwrap(),
            ["juni", "l001"]
        );
        assert!(
            flake_hosts(br#"["-oProxyCommand=x"]"#)
                .unwrap_err()
                .starts_with("nixosConfigurations.\"-oProxyCommand=x\" starts with `-`")
        );
        assert!(flake_hosts(b"{}").is_err());
        assert_eq!(unique(vec!["a".into(), "b".into(), "a".into()]), ["a", "b"]);
    }

    #[test]
    fn every_way_of_not_answering_is_an_error_row() {
        let status = status_today().to_string();
        let cases: Vec<(Answer, &str)> = vec![
            (
                answer(
                    "",
                    "ssh: connect to host 127.0.0.1 port 1: Connection refused\n",
                    Ended::Exit(255),
                ),
                "ssh failed: ssh: connect to host 127.0.0.1 port 1: Connection refused",
            ),
            (
                answer(
                    "",
                    "Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts.\r\nPermission denied (publickey).\r\n",
                    Ended::Exit(255),
                ),
                "ssh failed: Permission denied (publickey).",
            ),
            (
                answer("", "Warning: only this\n", Ended::Exit(255)),
                "ssh failed: Warning: only this",
            ),
            (
                answer("", "", Ended::Exit(255)),
                "ssh failed: exit 255 without a message",
            ),
            (
                answer(
                    "",
                    "bash: line 1: imperm: command not found\n",
                    Ended::Exit(127),
                ),
                "imperm not found on the host: bash: line 1: imperm: command not found",
            ),
            (
                answer("", "sh: 1: imperm: not found\n", Ended::Exit(127)),
                "imperm not found on the host: sh: 1: imperm: not found",
            ),
            (
                answer(
                    "",
                    "imperm: --root is not a directory: /x\n",
                    Ended::Exit(2),
                ),
                "imperm status failed (exit 2): imperm: --root is not a directory: /x",
            ),
            (
                answer("<html>login</html>\n", "", Ended::Exit(0)),
                "answered something that is not JSON (expected value at line 1 column 1), beginning \"<html>login</html>\"",
            ),
            (
                answer(&format!("{status}junk"), "", Ended::Exit(0)),
                "answered something that is not JSON (trailing characters at line 1 column",
            ),
            (
                answer("[1, 2]", "", Ended::Exit(0)),
                "answered JSON that is not an imperm status (no filesystem, persisted, snapshots, storage at the top)",
            ),
            (
                answer("{\"suggestions\": []}", "", Ended::Exit(1)),
                "answered JSON that is not an imperm status",
            ),
            (
                answer(&"[".repeat(100_000), "", Ended::Exit(0)),
                "answered something that is not JSON (recursion limit exceeded",
            ),
            (
                answer("\u{1b}[2J\u{1b}]0;pwned\u{7}", "", Ended::Exit(0)),
                "beginning \"\\x1b[2J\\x1b]0;pwned\\x07\"",
            ),
            (
                answer("", "", Ended::TimedOut(3)),
                "no answer within 3 s (ssh was stopped)",
            ),
            (answer("\n", "", Ended::Exit(0)), "answered nothing"),
            (
                answer(&status, "", Ended::TooLarge),
                "answered more than 16 MiB: not an imperm status (ssh was stopped)",
            ),
            (
                answer(&status, "", Ended::Signal(9)),
                "ssh was ended by signal 9",
            ),
            (
                answer(
                    "",
                    "",
                    Ended::NotStarted("No such file or directory".into()),
                ),
                "ssh could not be started: No such file or directory",
            ),
        ];
        for (a, want) in cases {
            let r = row("h", &a);
            let HostResult::Error { error } = &r.result else {
                panic!("{want}: no error in {r:?}");
            };
            assert!(error.contains(want), "want {want:?}, got {error:?}");
            assert!(!error.chars().any(char::is_control), "{error:?}");
            assert!(!r.fine());
        }
    }

    #[test]
    fn a_status_reads_into_the_columns_and_missing_fields_are_unknown() {
        let today = summary_of(&status_today());
        assert_eq!(today.filesystem.as_deref(), Some("btrfs"));
        assert_eq!(today.ephemeral, Some(false), "no snapshot: never reset");
        assert_eq!(today.ready, None, "today's status has no readiness");
        assert_eq!(today.persisted, Some(16));
        assert_eq!(today.to_persist, None);
        assert_eq!(today.snapshots, Some(0));
        assert!(today.problems.is_empty());

        let mut ready = status_today();
        ready["ready"] = json!({"ready": false, "reasons": ["/var/lib/headscale is not in /persist", {"reason": "no gc timer"}]});
        ready["check"] = json!({"persist": 2, "review": 1});
        ready["snapshots"] = json!({"count": 3, "last_reset": "2026-11-20T06:30:00Z"});
        ready["storage"][0]["wiped_by_reset"] = json!(true);
        let s = summary_of(&ready);
        assert_eq!(s.ready, Some(false));
        assert_eq!(
            s.reasons,
            ["/var/lib/headscale is not in /persist", "no gc timer"]
        );
        assert_eq!(s.to_persist, Some(2));
        assert_eq!(s.ephemeral, Some(true));
        assert_eq!(s.last_reset.as_deref(), Some("2026-11-20T06:30:00Z"));
        assert_eq!(
            s.problems,
            [
                "/persist: the reset would wipe this storage",
                "2 paths to persist"
            ]
        );

        // Readiness as `status` reports it (issue 13): flattened at the top, every reason
        // checked with its state; the check's counts on an ephemeral host.
        let mut flat = status_today();
        let o = flat.as_object_mut().unwrap();
        o.insert("ready".into(), json!(false));
        o.insert("ephemeral".into(), json!(true));
        o.insert("problems".into(), json!(1));
        o.insert("unknown".into(), json!(1));
        o.insert(
            "reasons".into(),
            json!([
                {"check": "config", "state": "ok", "detail": "loaded from /etc/imperm/config.toml"},
                {"check": "gc-timer", "state": "unknown", "detail": "not checked"},
                {"check": "entries", "state": "problem", "detail": "/var/lib/headscale is not in /persist"}
            ]),
        );
        o.insert(
            "check".into(),
            json!({"skipped": false, "persist": 0, "review": 3}),
        );
        let s = summary_of(&flat);
        assert_eq!(
            (s.ready, s.ephemeral, s.to_persist),
            (Some(false), Some(true), Some(0))
        );
        assert_eq!(
            s.reasons,
            [
                "entries: /var/lib/headscale is not in /persist",
                "gc-timer: not checked"
            ]
        );
        assert!(s.problems.is_empty(), "{:?}", s.problems);

        // Fields of the wrong type or missing: unknown, never an error.
        let odd = json!({"filesystem": {"type": 7}, "persisted": {"directories": "many"},
                         "snapshots": {"count": -1}, "storage": {"path": "/p"}, "ready": "yes"});
        let s = summary_of(&odd);
        assert_eq!(
            (s.filesystem, s.ephemeral, s.ready, s.persisted, s.snapshots),
            (None, None, None, None, None)
        );
        assert!(s.problems.is_empty());

        let mut unconfigured = status_today();
        unconfigured["config"]["loaded"] = json!(false);
        unconfigured["persistence"] = json!({"kind": "template"});
        unconfigured["snapshots"] =
            json!({"count": null, "last_reset": null, "note": "not looked at"});
        assert_eq!(summary_of(&unconfigured).ephemeral, Some(false));
        unconfigured["persistence"] =
            json!({"kind": "mount-table", "file": "/proc/self/mountinfo"});
        assert_eq!(summary_of(&unconfigured).ephemeral, Some(true));
        unconfigured["ready"] = json!({"ready": true, "ephemeral": false});
        let s = summary_of(&unconfigured);
        assert_eq!((s.ephemeral, s.ready), (Some(false), Some(true)));
    }

    #[test]
    fn the_table_lines_up_and_escapes_what_hosts_send() {
        let mut ready = status_today();
        ready["ready"] = json!({"ready": false, "reasons": ["a\u{1b}[31mred", "b"]});
        ready["snapshots"] = json!({"count": 2, "last_reset": "2026-11-20T06:30:00Z"});
        let rows = vec![
            row(
                "l001",
                &answer(&status_today().to_string(), "", Ended::Exit(0)),
            ),
            row("o001", &answer(&ready.to_string(), "", Ended::Exit(0))),
            row("h002", &answer("", "", Ended::TimedOut(5))),
        ];
        let mut out = Vec::new();
        let plain = anstyle::Style::new();
        let styles = Styles {
            heading: plain,
            path: plain,
            problem: plain,
            good: plain,
            dim: plain,
        };
        render(&rows, &mut out, &styles).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "\
HOST  FILESYSTEM  EPHEMERAL  READY                       PERSISTED  TO PERSIST  SNAPSHOTS  LAST RESET            PROBLEMS
l001  btrfs       no         ?                           16         ?           0          ?                     -
o001  btrfs       yes        no: a\\x1b[31mred (+1 more)  16         ?           2          2026-11-20T06:30:00Z  -
h002  error: no answer within 5 s (ssh was stopped)
3 hosts: 0 fine, 2 not ready, not known to be, or with problems, 1 without an answer
"
        );
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(
            json[2],
            json!({"host": "h002", "error": "no answer within 5 s (ssh was stopped)"})
        );
        assert_eq!(json[1]["ready"], json!(false));
        assert_eq!(json[1]["status"]["snapshots"]["count"], json!(2));
        assert_eq!(json[0]["to_persist"], Value::Null);
    }
}
