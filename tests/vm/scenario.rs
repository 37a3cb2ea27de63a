//! The scenarios: each is one disk booted again and again, and a model on the host of what
//! must be on it after each boot. The guest reports the whole disk as it is (a manifest of
//! every subvolume, file, link and directory, with content digests) and what each command
//! said; the host compares that with what it asked the guest to write.
//!
//! Every boot of every scenario writes the same kind of state: files in persisted places
//! (`/var/lib/app`, declared; `/var/log` and `/etc/machine-id`, the server template's),
//! files in unpersisted places (one name with a newline and a byte that is not UTF-8), two
//! nested subvolumes (`/var/lib/machines` and one inside it, as systemd-nspawn makes), and
//! two symlinks that lead out of the root to other subvolumes of the filesystem
//! (`/srv/data` to `@data`, `/var/lib/other` into `@persist`), which a reset must never
//! follow. Every file's content names the scenario and the boot, so every root differs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::guest::{Manifest, digest};
use crate::image::Cpio;
use crate::nixeval::Host;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    Btrfs,
    Bcachefs,
}

impl Fs {
    pub fn name(self) -> &'static str {
        match self {
            Fs::Btrfs => "btrfs",
            Fs::Bcachefs => "bcachefs",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Boots in a row, each checked.
    Sequence,
    /// Boots cut by a power cut, each followed by a normal boot that is checked.
    PowerCuts,
    /// A boot, then the three refusals (each stops its boot, changing nothing), then a
    /// normal boot.
    Refusals,
    /// A scenario script of tests/vm/scenarios, `FS-NAME.sh`, run once inside the guest on
    /// a blank disk: its own checks, `PASS NAME` as its last line.
    Script,
}

/// Where a power cut strikes in a boot.
#[derive(Clone, Debug)]
pub enum Cut {
    /// A failpoint of `reset` or `snapshots gc` that hangs: the power goes when it says
    /// so, or `settle` later (time for the filesystem to commit what the step did).
    Failpoint {
        command: &'static str,
        name: &'static str,
        settle: Duration,
    },
    /// At a console mark of the boot: `fsynced` is after files were written and fsynced,
    /// before anything is unmounted (an unclean shutdown: the next mount replays the
    /// journal, in the reset's private mount).
    AtMark(&'static str),
    /// A random time after a mark, within the time the step took in the last boot.
    Random { from: &'static str, fraction: f64 },
}

/// What one boot of a disk is asked to do.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub tamper: Option<&'static str>,
    pub cut: Option<Cut>,
    /// How many times to time a mount and unmount of the top level after the reset.
    pub measure: u32,
    /// The guest's clock at power-on (seconds since 1970): snapshots are named by it.
    pub clock: i64,
}

/// A boot as planned: what it writes, so that the next report can be checked.
#[derive(Clone, Debug, Default)]
struct Planned {
    boot: u32,
    spec: Spec,
    /// Unpersisted files and links, relative to the root: digest or link target.
    root: BTreeMap<String, String>,
    /// Persisted files, relative to the storage: digest.
    persist: BTreeMap<String, String>,
    /// Files that are fsynced before the `fsynced` mark (root or storage relative path).
    fsynced: Vec<(bool, String)>,
    /// Restored into the root and into the storage: path and the digest it must have.
    restored_root: Option<(String, String)>,
    restored_persist: Option<(String, String)>,
    /// The journal failure path expected to be found in the last reset's snapshot.
    journal: Option<String>,
    /// What activation writes (the module's config.toml, /etc/NIXOS): path and digest.
    activation: BTreeMap<String, String>,
    /// Persisted files (bind-mount placeholders are empty files in the root).
    persisted_files: Vec<String>,
}

impl Planned {
    /// What the boot leaves in the root: its unpersisted files, and what it restored.
    fn files(&self) -> BTreeMap<String, String> {
        let mut files = self.root.clone();
        if let Some((p, d)) = &self.restored_root {
            files.insert(p.clone(), d.clone());
        }
        files
    }
}

/// What is known to be on the disk.
#[derive(Default)]
struct Model {
    /// The root at the end of the last boot that was not cut.
    last_root: Option<Manifest>,
    snapshots: BTreeMap<String, Manifest>,
    /// Files of the storage: digest, or None when a cut left it unknown.
    persisted: BTreeMap<String, Option<String>>,
    data: Option<Manifest>,
    /// Boots cut since the last whole one.
    cut: Vec<(Planned, BTreeSet<String>)>,
    /// Old roots set aside beside the root, by name.
    dead: BTreeSet<String>,
    /// Files the last whole boot wrote in the root (the journal and restore of the next).
    last_files: Option<(u32, BTreeMap<String, String>)>,
}

/// Figures for the summary and bench/.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub boots: u32,
    pub cuts: u32,
    /// Where the cuts struck: the step the boot was in (see [`step_of`]), and how often.
    pub struck: BTreeMap<&'static str, u32>,
    /// The reset's wall time and the mount+umount times of the same boot, in seconds.
    pub timings: Vec<(f64, Vec<f64>)>,
}

pub struct Disk {
    pub name: String,
    pub fs: Fs,
    pub kind: Kind,
    pub image: PathBuf,
    pub label: String,
    /// The device as the module is given it: a label (`LABEL=` or the by-label path) or
    /// the disk's node in this VM.
    by_label: Option<String>,
    boots: u32,
    /// Boots planned and not checked yet (a VM may boot a disk twice), oldest first.
    planned: std::collections::VecDeque<Planned>,
    model: Model,
    pub stats: Stats,
    pub failed: Option<String>,
    /// How long steps took in the last whole boot (`begin`, `reset`, `gc`: to their end).
    pub steps: BTreeMap<&'static str, Duration>,
}

pub const ROOT: &str = "@root";
pub const SNAPSHOTS: &str = "@snapshots";
/// What follows the root's name in the name of an old root a reset set aside.
const DEAD_MARK: &str = imperm::snapshots::snapshot::DEAD_MARK;
const PERSISTED_DIR: &str = "/var/lib/app";
/// What the installer puts in `@data`, the subvolume the root links to.
const INSTALLED: [(&str, u32, &[u8]); 2] = [
    (
        "precious",
        0o644,
        b"another subvolume: no reset may touch it\n",
    ),
    ("deep/er", 0o600, b"deeper\n"),
];
const NESTED: [&str; 2] = ["/var/lib/machines", "/var/lib/machines/inner"];

impl Disk {
    pub fn new(fs: Fs, kind: Kind, work: &std::path::Path) -> Disk {
        let what = match kind {
            Kind::Sequence => "sequence",
            Kind::PowerCuts => "cuts",
            Kind::Refusals => "refusals",
            Kind::Script => "script",
        };
        let name = format!("{}-{what}", fs.name());
        // The bcachefs fixture is labelled `nixos`; btrfs disks get their own labels.
        let label = match fs {
            Fs::Btrfs => name.clone(),
            Fs::Bcachefs => "nixos".into(),
        };
        let by_label = match kind {
            Kind::Sequence => Some(format!("/dev/disk/by-label/{label}")),
            // Not on bcachefs: the fixture's label is every bcachefs disk's, and the
            // sequence disk of the same VM takes the link.
            Kind::PowerCuts if fs == Fs::Btrfs => Some(format!("LABEL={label}")),
            Kind::PowerCuts => None,
            Kind::Refusals | Kind::Script => None,
        };
        Disk {
            image: work.join(format!("{name}.img")),
            name,
            fs,
            kind,
            label,
            by_label,
            boots: 0,
            planned: Default::default(),
            model: Model::default(),
            stats: Stats::default(),
            failed: None,
            steps: BTreeMap::new(),
        }
    }

    /// Scenario script `tests/vm/scenarios/{name}.sh`, on a disk of its filesystem.
    pub fn script(fs: Fs, name: &str, work: &std::path::Path) -> Disk {
        let mut disk = Disk::new(fs, Kind::Script, work);
        disk.name = name.to_string();
        disk.image = work.join(format!("{name}.img"));
        disk
    }

    /// How many boots were planned.
    pub fn boots(&self) -> u32 {
        self.boots
    }

    /// Whether the last boot was cut by a power cut.
    pub fn was_cut(&self) -> bool {
        !self.model.cut.is_empty()
    }

    /// services.imperm's settings for this disk in a VM where it is `/dev/{node}`.
    pub fn host(&self, node: &str) -> Value {
        let device = self.by_label.clone().unwrap_or(format!("/dev/{node}"));
        json!({
            "filesystem": { "type": self.fs.name(), "device": device,
                            "rootSubvolume": ROOT, "snapshotDir": SNAPSHOTS },
            "persistentStoragePath": "/persist",
            "template": "server",
            "directories": [PERSISTED_DIR],
            // In local time: the guest has no time zone database, so no zone but its own
            // (UTC) can be named.
            "retention": { "keepLast": 3, "keepDaily": 0, "keepWeekly": 0, "keepMonthly": 2,
                           "keepYearly": 0 },
        })
    }

    /// The name of boot `k` on the console and in the plan (`btrfs-cuts.7`).
    pub fn label(&self, k: u32) -> String {
        format!("{}.{k}", self.name)
    }

    /// Adds this disk's next boot to a VM's plan archive, as `nix/plan/{order}-{label}/`;
    /// gives its number.
    pub fn plan(
        &mut self,
        cpio: &mut Cpio,
        order: usize,
        node: &str,
        host: &Host,
        spec: Spec,
    ) -> u32 {
        self.boots += 1;
        let k = self.boots;
        let label = self.label(k);
        let dir = format!("nix/plan/{order:02}-{label}");
        if self.kind == Kind::Script {
            let vars = format!(
                "NAME={label}\nFS={}\nDEV=/dev/{node}\nSLOT={order}\nSCRIPT={}\n",
                self.fs.name(),
                self.name,
            );
            cpio.file(format!("{dir}/vars").as_bytes(), 0o644, vars.as_bytes());
            self.planned.push_back(Planned {
                boot: k,
                spec,
                ..Planned::default()
            });
            return k;
        }
        let put = |cpio: &mut Cpio, rel: &str, data: &[u8]| {
            cpio.file(format!("{dir}/{rel}").as_bytes(), 0o644, data)
        };
        let (reset_fp, gc_fp) = match &spec.cut {
            Some(Cut::Failpoint {
                command: "reset",
                name,
                ..
            }) => (format!("{name}:hang"), String::new()),
            Some(Cut::Failpoint { name, .. }) => (String::new(), format!("{name}:hang")),
            _ => (String::new(), String::new()),
        };
        let vars = format!(
            "NAME={label}\nFS={}\nDEV=/dev/{node}\nSLOT={order}\nROOT={ROOT}\nINSTALL={}\nTAMPER={}\nRESET_FAILPOINT={reset_fp}\nGC_FAILPOINT={gc_fp}\nMEASURE={}\n",
            self.fs.name(),
            if k == 1 { "1" } else { "" },
            spec.tamper.unwrap_or(""),
            spec.measure,
        );
        put(cpio, "vars", vars.as_bytes());
        let argv: Vec<u8> = host
            .argv()
            .expect("checked")
            .iter()
            .flat_map(|w| w.bytes().chain([0]))
            .collect();
        put(cpio, "reset", &argv);
        put(cpio, "devices", lines(&host.devices).as_bytes());
        put(
            cpio,
            "persist-dirs",
            lines(&host.persisted.directories).as_bytes(),
        );
        put(
            cpio,
            "persist-files",
            lines(&host.persisted.files).as_bytes(),
        );
        put(cpio, "subvols", lines(&NESTED).as_bytes());
        let mut planned = Planned {
            boot: k,
            spec,
            activation: [
                (
                    "etc/imperm/config.toml".to_string(),
                    digest(host.config.as_bytes()),
                ),
                ("etc/NIXOS".to_string(), digest(b"")),
            ]
            .into(),
            persisted_files: host.persisted.files.clone(),
            ..Planned::default()
        };
        cpio.file(
            format!("{dir}/activation/etc/imperm/config.toml").as_bytes(),
            0o644,
            host.config.as_bytes(),
        );
        cpio.file(format!("{dir}/activation/etc/NIXOS").as_bytes(), 0o644, b"");
        cpio.dir(format!("{dir}/state").as_bytes(), 0o755);
        if k == 1 {
            for (path, mode, data) in INSTALLED {
                cpio.file(format!("{dir}/install/{path}").as_bytes(), mode, data);
            }
        } else {
            cpio.dir(format!("{dir}/install").as_bytes(), 0o755);
        }
        let persisted = |p: &str| {
            host.persisted
                .directories
                .iter()
                .any(|d| p.starts_with(&format!("{d}/")))
                || host.persisted.files.iter().any(|f| f == p)
        };
        let who = format!("{} boot {k}", self.name);
        let mut files: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (
                format!("{PERSISTED_DIR}/boot-{k}").into(),
                format!("app state of {who}\n").into(),
            ),
            (
                format!("/var/log/boot-{k}.log").into(),
                format!("log of {who}\n").into(),
            ),
            (
                format!("/var/lib/lost/boot-{k}").into(),
                format!("lost state of {who}\n").into(),
            ),
            (
                b"/var/lib/lost/odd\nname\xff-"
                    .iter()
                    .copied()
                    .chain(k.to_string().bytes())
                    .collect(),
                format!("odd name of {who}\n").into(),
            ),
            (b"/etc/motd".to_vec(), format!("{who}\n").into()),
            (
                format!("/root/notes-{k}").into(),
                format!("notes of {who}\n").into(),
            ),
            (
                format!("{}/m-{k}", NESTED[0]).into(),
                format!("machine state of {who}\n").into(),
            ),
            (
                format!("{}/i-{k}", NESTED[1]).into(),
                format!("inner machine state of {who}\n").into(),
            ),
        ];
        if k == 1 {
            files.push((
                b"/etc/machine-id".to_vec(),
                b"0123456789abcdef0123456789abcdef\n".to_vec(),
            ));
        }
        let links: [(&str, &str); 2] = [
            ("/srv/data", "../../@data"),
            ("/var/lib/other", "../../../@persist/var/lib/app"),
        ];
        for (path, data) in &files {
            cpio.file(
                format!("{dir}/state")
                    .as_bytes()
                    .iter()
                    .chain(path.iter())
                    .copied()
                    .collect::<Vec<_>>()
                    .as_slice(),
                0o644,
                data,
            );
            let shown = imperm::paths::escape(std::path::Path::new(std::ffi::OsStr::from_bytes(
                &path[1..],
            )));
            if persisted(&String::from_utf8_lossy(path)) {
                planned.persist.insert(shown, digest(data));
            } else {
                planned.root.insert(shown, digest(data));
            }
        }
        for (path, target) in links {
            cpio.symlink(format!("{dir}/state{path}").as_bytes(), target.as_bytes());
            planned
                .root
                .insert(path[1..].to_string(), format!("-> {target}"));
        }
        planned.fsynced = vec![
            (false, format!("var/lib/lost/boot-{k}")),
            (true, format!("{}/boot-{k}", &PERSISTED_DIR[1..])),
        ];
        put(
            cpio,
            "fsync",
            format!("/var/lib/lost/boot-{k}\n{PERSISTED_DIR}/boot-{k}\n").as_bytes(),
        );
        // The last whole boot's files, gone from this root: the journal names one as
        // missing, and restore brings it and another back. Not after a cut: which
        // snapshot is the last reset's then depends on where the cut struck. (A boot
        // planned in this VM before this one counts as whole: it is no cut.)
        let mut journal = Vec::new();
        let (mut restore_root, mut restore_persist) = (String::new(), String::new());
        let last = match self.planned.back() {
            Some(p) if p.spec.cut.is_none() => Some((p.boot, p.files())),
            Some(_) => None,
            None => self
                .model
                .cut
                .is_empty()
                .then(|| self.model.last_files.clone())
                .flatten(),
        };
        if let Some((j, last)) = &last {
            let lost = format!("var/lib/lost/boot-{j}");
            let notes = format!("root/notes-{j}");
            planned.journal = Some(format!("/{lost}"));
            planned.restored_root = Some((lost.clone(), last[&lost].clone()));
            planned.restored_persist = Some((notes.clone(), last[&notes].clone()));
            restore_root = format!("/{lost}\n");
            restore_persist = format!("/{notes}\n");
            for (unit, message) in [
                (
                    "lostd.service",
                    format!("lostd: cannot open /{lost}: No such file or directory"),
                ),
                (
                    "init.scope",
                    "lostd.service: Failed with result 'exit-code'.".to_string(),
                ),
            ] {
                let mut entry = json!({
                    "__REALTIME_TIMESTAMP": "1767249000000000", "_BOOT_ID": "0123456789abcdef0123456789abcdef",
                    "PRIORITY": "3", "_SYSTEMD_UNIT": unit, "MESSAGE": message,
                });
                if unit == "init.scope" {
                    entry["UNIT"] = json!("lostd.service");
                    entry["SYSLOG_IDENTIFIER"] = json!("systemd");
                } else {
                    entry["SYSLOG_IDENTIFIER"] = json!("lostd");
                }
                journal.push(entry.to_string());
            }
        }
        put(cpio, "journal.json", (journal.join("\n") + "\n").as_bytes());
        put(cpio, "restore-root", restore_root.as_bytes());
        put(cpio, "restore-persist", restore_persist.as_bytes());
        self.planned.push_back(planned);
        k
    }

    /// Checks the boot just run against the model, from its report (None when the power
    /// was cut before it was written) and the console marks `seen` of this disk.
    pub fn check(&mut self, report: Option<&Value>, seen: BTreeSet<String>) -> Result<(), String> {
        let planned = self.planned.pop_front().expect("a boot was planned");
        let k = planned.boot;
        let Some(report) = report else {
            if planned.spec.cut.is_none() {
                return Err(format!("boot {k}: no report, and no power cut was planned"));
            }
            self.stats.cuts += 1;
            *self.stats.struck.entry(step_of(&seen)).or_default() += 1;
            self.model.cut.push((planned, seen));
            return Ok(());
        };
        // A cut that did not strike (a failpoint this boot never reached, a random moment
        // after its end) leaves a whole boot, checked as one; the chain plans it again.
        let at = |what: String| format!("boot {k}: {what}");
        if self.kind == Kind::Script {
            let out = text(report, "script.out");
            let last = out
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default();
            if text(report, "script.rc").trim() != "0" || last != format!("PASS {}", self.name) {
                let n = out.lines().count().saturating_sub(40);
                let tail: Vec<&str> = out.lines().skip(n).collect();
                return Err(at(format!(
                    "the scenario script exited {} without PASS:\n{}",
                    text(report, "script.rc").trim(),
                    tail.join("\n")
                )));
            }
            self.stats.boots += 1;
            return Ok(());
        }
        if let Some(tamper) = planned.spec.tamper {
            return self.check_refusal(report, tamper).map_err(at);
        }
        if let Some(stopped) = report.get("stopped") {
            return Err(at(format!(
                "the boot stopped: {}; reset said: {}",
                stopped.as_str().unwrap_or_default().trim(),
                text(report, "reset.err")
            )));
        }
        self.check_boot(report, &planned).map_err(at)?;
        self.stats.boots += 1;
        let ns = |name: &str| {
            text(report, name)
                .trim()
                .parse::<f64>()
                .ok()
                .map(|n| n / 1e9)
        };
        if let Some(reset) = ns("reset.ns") {
            let mounts = (0..planned.spec.measure)
                .filter_map(|i| ns(&format!("mount.{i}.ns")))
                .collect();
            self.stats.timings.push((reset, mounts));
        }
        Ok(())
    }

    fn check_refusal(&mut self, report: &Value, tamper: &str) -> Result<(), String> {
        let why = match tamper {
            "mounted" => "is mounted at",
            "directory" => "is not a subvolume (a plain directory)",
            _ => "is not a subvolume (a symlink)",
        };
        let err = text(report, "reset.err");
        let lines: Vec<&str> = err.lines().collect();
        if text(report, "reset.rc").trim() != "2"
            || lines.len() != 1
            || !lines[0].contains(why)
            || !lines[0].contains("nothing was done")
        {
            return Err(format!(
                "root {tamper}: the reset must stop with exit 2 and one line saying '{why}' and 'nothing was done'; it exited {} with: {err}",
                text(report, "reset.rc").trim()
            ));
        }
        let before = manifest(report, "top-before.json")?;
        let after = manifest(report, "top-after.json")?;
        if before != after {
            return Err(format!(
                "root {tamper}: the refused reset changed the disk: {}",
                differences(&before, &after)
            ));
        }
        if report.get("top.json").is_some() {
            return Err(format!("root {tamper}: the boot went on after the refusal"));
        }
        Ok(())
    }

    fn check_boot(&mut self, report: &Value, planned: &Planned) -> Result<(), String> {
        let top = manifest(report, "top.json")?;
        let mut names = children(&top, "");
        if self.fs == Fs::Bcachefs {
            names.remove("lost+found");
        }
        // Old roots a reset could not delete (ENOTEMPTY that persists: bcachefs, after a
        // cut in the middle of the deletion of a nested subvolume) and set aside.
        let dead: BTreeSet<String> = names
            .iter()
            .filter(|n| n.starts_with(&format!("{ROOT}{DEAD_MARK}")))
            .cloned()
            .collect();
        names.retain(|n| !dead.contains(n));
        let want: BTreeSet<String> = [ROOT, SNAPSHOTS, "@persist", "@data"]
            .map(String::from)
            .into();
        if names != want {
            return Err(format!(
                "the top level holds {names:?}, not {want:?}: one root, the snapshots, the storage and @data"
            ));
        }
        let root = subtree(&top, ROOT);
        if !(root[""].subvol && root[""].writable == Some(true)) {
            return Err(format!(
                "{ROOT} is not a writable subvolume: {:?}",
                root[""]
            ));
        }
        // The snapshot directory: snapshots, the baseline, imperm's own state files.
        let mut snapshots = BTreeMap::new();
        for name in children(&top, SNAPSHOTS) {
            let tree = subtree(&top, &format!("{SNAPSHOTS}/{name}"));
            if [".imperm-reset.json", ".imperm-gc.json"].contains(&name.as_str())
                && tree[""].kind == "f"
            {
                continue;
            }
            if name == ".baseline" {
                read_only(&tree, &name)?;
                continue;
            }
            if parse_name(&name).is_none() {
                return Err(format!(
                    "{SNAPSHOTS}/{name} is left over: no snapshot, baseline or state file of imperm's"
                ));
            }
            if !tree[""].subvol {
                return Err(format!("{SNAPSHOTS}/{name} is not a subvolume"));
            }
            read_only(&tree, &name)?;
            snapshots.insert(name, tree);
        }
        // The previous root, in exactly one snapshot, exactly as it was.
        let new: BTreeSet<String> = snapshots
            .keys()
            .filter(|n| !self.model.snapshots.contains_key(*n))
            .cloned()
            .collect();
        let cut = std::mem::take(&mut self.model.cut);
        let mut holder = None;
        if let Some(prev) = &self.model.last_root {
            let want = self.snapshot_of(prev);
            let holders: Vec<&String> = snapshots
                .iter()
                .filter(|(_, m)| same_content(m, &want))
                .map(|(n, _)| n)
                .collect();
            if holders.len() != 1 {
                let closest = new
                    .iter()
                    .next()
                    .map(|n| differences(&want, &snapshots[n]))
                    .unwrap_or_default();
                return Err(format!(
                    "the previous root is in {} snapshots ({holders:?}), not exactly one; new snapshots {new:?}; {closest}",
                    holders.len()
                ));
            }
            holder = Some(holders[0].clone());
            if !new.contains(holders[0]) {
                return Err(format!(
                    "the previous root is in {}, which is not a new snapshot",
                    holders[0]
                ));
            }
        } else if !snapshots.is_empty() {
            return Err(format!(
                "the first boot made snapshots: {:?}",
                snapshots.keys()
            ));
        }
        self.dead_ok(report, &top, &dead, holder.as_deref(), !cut.is_empty())?;
        // The other new snapshots hold what a cut boot wrote in its fresh root.
        for name in new.iter().filter(|n| Some(*n) != holder.as_ref()) {
            let Some((written, seen)) = cut.last() else {
                return Err(format!(
                    "{name} is a new snapshot, but no boot was cut: one reset, one snapshot"
                ));
            };
            self.cut_root_ok(&snapshots[name], written, seen)
                .map_err(|e| format!("{name}, the root of cut boot {}: {e}", written.boot))?;
        }
        // Named by the clock of the reset that took them: this boot's, or a cut one's.
        let since = cut
            .iter()
            .map(|(c, _)| c.spec.clock)
            .chain([planned.spec.clock])
            .min()
            .unwrap();
        for name in &new {
            let (t, _) = parse_name(name).unwrap();
            if t < since || t > planned.spec.clock + 1800 {
                return Err(format!(
                    "new snapshot {name} is not named by the time of its reset (clock {since}..{})",
                    planned.spec.clock
                ));
            }
        }
        if new.len() > 1 + usize::from(!cut.is_empty()) {
            return Err(format!(
                "{} new snapshots ({new:?}) after {} cut boot(s)",
                new.len(),
                cut.len()
            ));
        }
        // What gc kept: the old snapshots as they were, exactly what the policy keeps.
        for (name, old) in &self.model.snapshots {
            if let Some(now) = snapshots.get(name) {
                if now != old {
                    return Err(format!(
                        "snapshot {name} changed: {}",
                        differences(old, now)
                    ));
                }
            }
        }
        let all: BTreeSet<String> = self
            .model
            .snapshots
            .keys()
            .chain(new.iter())
            .cloned()
            .collect();
        let kept: BTreeSet<String> = snapshots.keys().cloned().collect();
        if kept != keep(&all) {
            return Err(format!(
                "gc kept {kept:?}; the policy (last 3, monthly 2) keeps {:?} of {all:?}",
                keep(&all)
            ));
        }
        // The storage: every persisted file byte for byte, nothing else.
        let persist = subtree(&top, "@persist");
        let mut expected = self.model.persisted.clone();
        for (written, seen) in &cut {
            for (path, d) in &written.persist {
                let sure = seen.contains("written")
                    || (seen.contains("fsynced")
                        && written.fsynced.contains(&(true, path.clone())));
                expected.insert(path.clone(), sure.then(|| d.clone()));
            }
            // What its restore put there, if it got so far.
            if let Some((path, _)) = &written.restored_persist {
                expected.insert(path.clone(), None);
            }
        }
        for (path, d) in &planned.persist {
            expected.insert(path.clone(), Some(d.clone()));
        }
        if let Some((path, d)) = &planned.restored_persist {
            expected.insert(path.clone(), Some(d.clone()));
        }
        for file in &planned.persisted_files {
            expected
                .entry(file[1..].to_string())
                .or_insert(Some(digest(b"")));
        }
        for (path, entry) in &persist {
            if entry.kind == "d" {
                continue;
            }
            match expected.get(path) {
                None => return Err(format!("@persist/{path} is there, but no boot wrote it")),
                Some(Some(d)) if entry.digest.as_ref() != Some(d) => {
                    return Err(format!(
                        "@persist/{path} does not hold what was written: {entry:?}"
                    ));
                }
                _ => {}
            }
        }
        for (path, d) in &expected {
            if d.is_some() && !persist.contains_key(path) {
                return Err(format!("@persist/{path} is lost"));
            }
        }
        // The root: only this boot's unpersisted state (and what it restored).
        self.root_ok(&root, planned, true, true)?;
        // The other subvolume the root links to.
        let data = subtree(&top, "@data");
        match &self.model.data {
            Some(old) if *old != data => {
                return Err(format!("@data changed: {}", differences(old, &data)));
            }
            None => {
                let files: BTreeMap<&str, (u32, String)> = data
                    .iter()
                    .filter(|(_, e)| e.kind != "d")
                    .map(|(p, e)| (p.as_str(), (e.mode, e.digest.clone().unwrap_or_default())))
                    .collect();
                let want: BTreeMap<&str, (u32, String)> = INSTALLED
                    .iter()
                    .map(|(p, m, d)| (*p, (*m, digest(d))))
                    .collect();
                if files != want {
                    return Err(format!("@data holds {files:?}, not what was installed"));
                }
            }
            _ => {}
        }
        self.commands(report, planned, holder.as_deref())?;
        // The model moves on.
        self.model.data = Some(data);
        self.model.persisted = persist
            .iter()
            .filter(|(_, e)| e.kind != "d")
            .map(|(p, e)| (p.clone(), e.digest.clone()))
            .collect();
        self.model.snapshots = snapshots;
        self.model.dead = dead;
        self.model.last_files = Some((planned.boot, planned.files()));
        self.model.last_root = Some(root);
        Ok(())
    }

    /// The old roots set aside beside the root: one appears only in the boot after a cut,
    /// set aside by its reset (which says so) and named by the snapshot that holds the
    /// previous root; each is a subvolume; gc deletes each or says it still cannot.
    fn dead_ok(
        &self,
        report: &Value,
        top: &Manifest,
        dead: &BTreeSet<String>,
        holder: Option<&str>,
        after_cut: bool,
    ) -> Result<(), String> {
        let (reset, gc) = (text(report, "reset.err"), text(report, "gc.err"));
        for name in dead {
            if !top.get(name).is_some_and(|e| e.subvol) {
                return Err(format!("{name} is not a subvolume"));
            }
            if self.model.dead.contains(name) {
                continue;
            }
            let snapshot = &name[ROOT.len() + DEAD_MARK.len()..];
            if !after_cut
                || Some(snapshot) != holder
                || !reset.contains(&format!("set aside as {name}"))
            {
                return Err(format!(
                    "{name} appeared (after a cut: {after_cut}; the previous root is in {holder:?}), but the reset did not say it set it aside: {reset}"
                ));
            }
        }
        for name in dead.union(&self.model.dead) {
            let said = if dead.contains(name) {
                format!("still cannot delete {name}")
            } else {
                format!("deleted {name}")
            };
            if !gc.contains(&said) {
                return Err(format!("gc did not say '{said}': {gc}"));
            }
        }
        Ok(())
    }

    /// What a snapshot of `root` holds: on bcachefs, nothing of the nested subvolumes (a
    /// snapshot leaves no entry for them; the reset deletes them with the old root).
    fn snapshot_of(&self, root: &Manifest) -> Manifest {
        if self.fs == Fs::Btrfs {
            return root.clone();
        }
        let nested: Vec<String> = root
            .iter()
            .filter(|(p, e)| e.subvol && !p.is_empty())
            .map(|(p, _)| p.clone())
            .collect();
        root.iter()
            .filter(|(p, _)| {
                !nested
                    .iter()
                    .any(|n| *p == n || p.starts_with(&format!("{n}/")))
            })
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect()
    }

    /// The root of a boot: its unpersisted writes (exactly, when `whole`), the files it
    /// restored, the empty files persisted files are bind-mounted on, config.toml;
    /// directories; the nested subvolumes it made (writable in a `live` root); and nothing
    /// else.
    fn root_ok(
        &self,
        root: &Manifest,
        planned: &Planned,
        whole: bool,
        live: bool,
    ) -> Result<(), String> {
        for (path, entry) in root {
            let want = planned.root.get(path);
            let ok = match entry.kind.as_str() {
                "d" => true,
                "l" => {
                    want == Some(&format!(
                        "-> {}",
                        entry.target.as_deref().unwrap_or_default()
                    ))
                }
                "f" => {
                    let d = entry.digest.as_deref().unwrap_or_default();
                    let restored = [&planned.restored_root]
                        .into_iter()
                        .flatten()
                        .any(|(p, rd)| p == path && rd == d);
                    let placeholder = planned.persisted_files.iter().any(|f| f[1..] == *path)
                        && entry.size == Some(0);
                    let activation = planned.activation.get(path).is_some_and(|a| a == d);
                    want.is_some_and(|w| w == d || !whole) || restored || placeholder || activation
                }
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "{ROOT}/{path} is not this boot's: {entry:?} (expected {want:?})"
                ));
            }
        }
        // A bcachefs snapshot of the root has no entry for its nested subvolumes.
        let nested_kept = live || self.fs == Fs::Btrfs;
        let in_nested = |p: &str| {
            NESTED
                .iter()
                .any(|n| p == &n[1..] || p.starts_with(&format!("{}/", &n[1..])))
        };
        if whole {
            for path in planned.root.keys().filter(|p| nested_kept || !in_nested(p)) {
                if !root.contains_key(path) {
                    return Err(format!("{ROOT}/{path}, written this boot, is missing"));
                }
            }
            let nested: BTreeSet<&str> = root
                .iter()
                .filter(|(p, e)| e.subvol && !p.is_empty())
                .map(|(p, _)| p.as_str())
                .collect();
            let want: BTreeSet<&str> = NESTED
                .iter()
                .filter(|_| nested_kept)
                .map(|n| &n[1..])
                .collect();
            if nested != want
                || (live
                    && root
                        .iter()
                        .any(|(_, e)| e.subvol && e.writable != Some(true)))
            {
                return Err(format!(
                    "{ROOT}'s nested subvolumes are {nested:?}, not the writable {want:?}"
                ));
            }
        }
        Ok(())
    }

    /// A cut boot's root, as the next reset kept it: what that boot wrote (each file whole
    /// once its `written` mark was seen, the fsynced ones once `fsynced` was), nothing else.
    fn cut_root_ok(
        &self,
        snap: &Manifest,
        written: &Planned,
        seen: &BTreeSet<String>,
    ) -> Result<(), String> {
        let whole = seen.contains("written");
        self.root_ok(snap, written, whole, false)?;
        if seen.contains("fsynced") {
            for (in_storage, path) in &written.fsynced {
                if !in_storage
                    && snap.get(path).and_then(|e| e.digest.as_ref()) != written.root.get(path)
                {
                    return Err(format!(
                        "{path} was fsynced before the power cut, but is not in the snapshot as written"
                    ));
                }
            }
        }
        Ok(())
    }

    fn commands(
        &self,
        report: &Value,
        planned: &Planned,
        holder: Option<&str>,
    ) -> Result<(), String> {
        let rc = |name: &str| text(report, &format!("{name}.rc")).trim().to_string();
        let want_rc = |name: &str, want: &[&str]| {
            if want.contains(&rc(name).as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "imperm {name} exited {} (wanted {want:?}): {}",
                    rc(name),
                    text(report, &format!("{name}.err"))
                ))
            }
        };
        want_rc("baseline", &["0"])?;
        let lost = format!("/var/lib/lost/boot-{}", planned.boot);
        // check: exit 1, and /var/lib/lost (or a parent a user would write) to persist;
        // nothing persisted.
        want_rc("check", &["1"])?;
        let suggested: Vec<String> = paths(&report["check.out"]["suggestions"]);
        if !suggested
            .iter()
            .any(|p| lost.starts_with(p.as_str()) && p.starts_with("/var/lib/lost"))
        {
            return Err(format!("check does not suggest {lost}: {suggested:?}"));
        }
        if let Some(p) = suggested
            .iter()
            .find(|p| p.starts_with(PERSISTED_DIR) || p.starts_with("/var/log"))
        {
            return Err(format!("check suggests {p}, which is persisted"));
        }
        // diff: every unpersisted file this boot wrote, the odd name escaped.
        let changed: Vec<String> = paths(&report["diff.out"]["changes"]);
        for path in planned
            .root
            .keys()
            .filter(|p| p.starts_with("var/lib/lost/"))
        {
            if !changed.contains(&format!("/{path}")) {
                return Err(format!("diff does not list /{path}: {changed:?}"));
            }
        }
        if let Some(p) = changed.iter().find(|p| p.starts_with(PERSISTED_DIR)) {
            return Err(format!("diff lists {p}, which is persisted"));
        }
        // journal: the missing path existed in the last reset's snapshot.
        if let Some(path) = &planned.journal {
            want_rc("journal", &["1"])?;
            let j = &report["journal.out"];
            if j["snapshot"].as_str() != holder {
                return Err(format!(
                    "journal looked in {:?}, not the last reset's {holder:?}",
                    j["snapshot"]
                ));
            }
            let found = j["failures"].as_array().into_iter().flatten().any(|f| {
                f["path"].as_str() == Some(path)
                    && !f["existed"].is_null()
                    && f["restore"]
                        .as_str()
                        .is_some_and(|r| r.contains(path.as_str()))
            });
            if !found {
                return Err(format!(
                    "journal does not say {path} existed before the reset: {j}"
                ));
            }
            want_rc("restore-root", &["0"])?;
            want_rc("restore-persist", &["0"])?;
        }
        want_rc("gc", &["0"])?;
        Ok(())
    }
}

/// The step of a boot the power was cut in, from the console marks it showed.
pub fn step_of(seen: &BTreeSet<String>) -> &'static str {
    let steps = [
        ("gc done", "after gc"),
        ("gc", "gc"),
        ("written", "the user's commands"),
        ("fsynced", "stage 2, files fsynced"),
        ("reset done", "stage 2"),
        ("reset", "reset"),
        ("begin", "before the reset"),
    ];
    steps
        .iter()
        .find(|(mark, _)| seen.contains(*mark))
        .map_or("the kernel's boot", |(_, step)| step)
}

fn lines<S: AsRef<str>>(items: &[S]) -> String {
    items.iter().map(|s| format!("{}\n", s.as_ref())).collect()
}

pub fn text<'a>(report: &'a Value, name: &str) -> &'a str {
    report[name].as_str().unwrap_or_default()
}

fn paths(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["path"].as_str().map(String::from))
        .collect()
}

fn manifest(report: &Value, name: &str) -> Result<Manifest, String> {
    serde_json::from_value(report[name].clone())
        .map_err(|e| format!("{name} in the report: {e}: {}", text(report, name)))
}

/// The entries of `m` below `prefix`, with paths relative to it.
fn subtree(m: &Manifest, prefix: &str) -> Manifest {
    if prefix.is_empty() {
        return m.clone();
    }
    let dir = format!("{prefix}/");
    m.iter()
        .filter_map(|(p, e)| {
            if p == prefix {
                Some((String::new(), e.clone()))
            } else {
                p.strip_prefix(&dir)
                    .map(|rest| (rest.to_string(), e.clone()))
            }
        })
        .collect()
}

/// The names directly in directory `prefix` ("" for the top).
fn children(m: &Manifest, prefix: &str) -> BTreeSet<String> {
    subtree(m, prefix)
        .keys()
        .filter(|p| !p.is_empty() && !p.contains('/'))
        .cloned()
        .collect()
}

/// Equal but for whether subvolumes can be written (a snapshot of a writable root).
fn same_content(a: &Manifest, b: &Manifest) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((pa, ea), (pb, eb))| {
            let mut ea = ea.clone();
            ea.writable = eb.writable;
            pa == pb && ea == *eb
        })
}

fn read_only(tree: &Manifest, name: &str) -> Result<(), String> {
    match tree
        .iter()
        .find(|(_, e)| e.subvol && e.writable != Some(false))
    {
        Some((path, _)) => Err(format!(
            "{SNAPSHOTS}/{name}/{path} is a writable subvolume: a snapshot must be read-only"
        )),
        None => Ok(()),
    }
}

/// The first few differences of two trees, for a failure message.
fn differences(a: &Manifest, b: &Manifest) -> String {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .take(8)
        .map(|k| format!("{k}: {:?} / {:?}", a.get(k), b.get(k)))
        .collect();
    format!("differences: [{}]", diffs.join("; "))
}

/// A snapshot name a reset gives: its time (seconds since 1970, UTC) and suffix.
pub fn parse_name(name: &str) -> Option<(i64, u32)> {
    let (stamp, suffix) = match name.split_once('-') {
        Some((s, n)) if !n.starts_with('0') => (s, n.parse().ok()?),
        Some(_) => return None,
        None => (name, 0),
    };
    let civil = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp).ok()?;
    Some((
        jiff::tz::TimeZone::UTC
            .to_timestamp(civil)
            .ok()?
            .as_second(),
        suffix,
    ))
}

/// What the scenarios' policy keeps (keep_last 3, keep_monthly 2, in UTC), computed here
/// on its own: the newest three, and the newest of each of the two newest months that
/// have a snapshot. The newest (which is the last reset's here) is among them.
pub fn keep(names: &BTreeSet<String>) -> BTreeSet<String> {
    let mut all: Vec<(i64, u32, &String)> = names
        .iter()
        .filter_map(|n| parse_name(n).map(|(t, s)| (t, s, n)))
        .collect();
    all.sort_by_key(|a| std::cmp::Reverse((a.0, a.1)));
    let mut kept: BTreeSet<String> = all.iter().take(3).map(|s| s.2.clone()).collect();
    let mut months = Vec::new();
    for (_, _, name) in &all {
        let month = &name[..6];
        if !months.contains(&month) && months.len() < 2 {
            months.push(month);
            kept.insert((*name).clone());
        }
    }
    kept
}

use std::os::unix::ffi::OsStrExt;
