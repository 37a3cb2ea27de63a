//! Proof by real boots (issue 11): imperm's reset, as the NixOS module wires it into the
//! systemd initrd, on Debian's kernel in qemu, on btrfs and on bcachefs, then the commands
//! a user runs on the booted system; and power cuts at random moments and at hanging
//! failpoints inside the reset and gc, each followed by a normal boot.
//!
//! The scenarios (scenario.rs) run as one chain of VMs per filesystem, the two at once.
//! Each VM boots several disks one after the other (one disk twice: the boot after a cut,
//! then the next cut), each as a whole boot of a host of its own (tests/vm/init).
//!
//! Needs root, qemu-system-x86_64, busybox-static, zstd, xz, mkfs.btrfs, nix-instantiate
//! and the kernel `tests/vm/fetch-kernel` puts in the cache; `.ci/run` installs them all.
//! Without them it prints SKIPPED, except under CI=true, where that fails the run.
//!
//! Knobs (environment): `IMPERM_VM_CACHE` (default /var/tmp/imperm-vm: kernel, images,
//! consoles), `IMPERM_VM_CUTS` (power cuts per filesystem, default 10), `IMPERM_VM_FS`
//! (`btrfs` or `bcachefs` for one only), `IMPERM_VM_SEED` (the random cuts), `IMPERM_VM_KEEP`
//! (keep the run's directory), `IMPERM_VM_BENCH=FILE` (write the figures bench/ reports),
//! `IMPERM_VM_BCACHEFS_IMAGE` (the blank bcachefs, default shared/fixtures/… beside the
//! clone or a folder above it, else /work/shared/fixtures),
//! `IMPERM_VM_MEASURE` (mount+umount timings per boot, against the reset's, default 1).

mod guest;
mod image;
mod nixeval;
mod qemu;
mod scenario;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scenario::{Cut, Disk, Fs, Kind, Spec};

/// The suite's name, as `cargo test` filters and lists tests.
const NAME: &str = "vm_boots";
const FIXTURE: &str = "bcachefs-blank-1g.img.zst";
/// Where the project's shared data lives on its machines, for a clone made anywhere else
/// (CI clones main into a directory of its own choosing).
const SHARED_FALLBACK: &str = "/work/shared/fixtures";

/// The blank bcachefs: `shared/fixtures` beside the clone or beside any folder above it
/// (a worktree sits one or two levels deeper than the main checkout), then the machine's
/// own copy.
fn fixture_near(repo: &Path) -> Option<PathBuf> {
    repo.ancestors()
        .map(|dir| dir.join("shared/fixtures").join(FIXTURE))
        .chain(std::iter::once(Path::new(SHARED_FALLBACK).join(FIXTURE)))
        .find(|f| f.is_file())
}
/// A VM that has not powered off by then is stuck.
const TIMEOUT: Duration = Duration::from_secs(600);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("guest") {
        std::process::exit(guest::main(&args[2..]));
    }
    if !selected(&args[1..]) {
        return;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let setup = match Setup::new(ci) {
        Ok(s) => s,
        Err(why) if ci => {
            eprintln!("{NAME}: the VM tests must run in CI, but {why}");
            std::process::exit(1);
        }
        Err(why) => {
            println!("SKIPPED {NAME}: {why}");
            return;
        }
    };
    let started = Instant::now();
    let disks = match setup.run() {
        Ok(disks) => disks,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            std::process::exit(1);
        }
    };
    let failed: Vec<&Disk> = disks.iter().filter(|d| d.failed.is_some()).collect();
    summary(&disks, started.elapsed(), &setup);
    if !failed.is_empty() {
        for d in &failed {
            eprintln!("FAILED {}: {}", d.name, d.failed.as_ref().unwrap());
        }
        eprintln!("(run directory kept: {})", setup.work.display());
        std::process::exit(1);
    }
    if std::env::var_os("IMPERM_VM_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&setup.work);
    }
}

/// Whether `cargo test`'s arguments select this suite (libtest's rules, as far as they
/// apply to one test): `--list` lists it, a filter must be part of its name.
fn selected(args: &[String]) -> bool {
    let mut filters = Vec::new();
    let (mut exact, mut list, mut ignored_only) = (false, false, false);
    let mut skips = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--list" => list = true,
            "--exact" => exact = true,
            "--ignored" => ignored_only = true,
            "--skip" => skips.extend(it.next().cloned()),
            "--test-threads" | "--format" | "--color" | "-Z" | "--logfile" | "--shuffle-seed" => {
                it.next();
            }
            a if a.starts_with('-') => {}
            a => filters.push(a.to_string()),
        }
    }
    let matches = |f: &String| {
        if exact {
            f == NAME
        } else {
            NAME.contains(f.as_str())
        }
    };
    let chosen = (filters.is_empty() || filters.iter().any(matches))
        && !skips.iter().any(|s| NAME.contains(s.as_str()))
        && !ignored_only;
    if list {
        if chosen {
            println!("{NAME}: test");
        }
        return false;
    }
    if !chosen {
        println!("running 0 tests (vm: {NAME} filtered out)");
    }
    chosen
}

struct Setup {
    work: PathBuf,
    kernel: image::Kernel,
    base: Vec<u8>,
    fixture: Option<PathBuf>,
    filesystems: Vec<Fs>,
    cuts: u32,
    seed: u64,
    /// How many mount+umount of the top level each whole boot times after the reset.
    measure: u32,
}

impl Setup {
    /// Everything a run needs, or why it cannot run.
    fn new(ci: bool) -> Result<Setup, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not running as root".into());
        }
        for (tool, package) in [
            (
                "qemu-system-x86_64",
                "qemu-system-x86 (from bookworm-backports)",
            ),
            ("busybox", "busybox-static"),
            ("zstd", "zstd"),
            ("xz", "xz-utils"),
            ("mkfs.btrfs", "btrfs-progs"),
            ("nix-instantiate", "nix-bin"),
        ] {
            image::which(tool)
                .map_err(|_| format!("{tool} is not installed (Debian: {package})"))?;
        }
        let cache =
            std::env::var_os("IMPERM_VM_CACHE").map_or("/var/tmp/imperm-vm".into(), PathBuf::from);
        let kernel =
            image::Kernel::find(&cache).map_err(|e| format!("{e}: run tests/vm/fetch-kernel"))?;
        let mut filesystems = match std::env::var("IMPERM_VM_FS").ok().as_deref() {
            Some("btrfs") => vec![Fs::Btrfs],
            Some("bcachefs") => vec![Fs::Bcachefs],
            _ => vec![Fs::Btrfs, Fs::Bcachefs],
        };
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let fixture = std::env::var_os("IMPERM_VM_BCACHEFS_IMAGE")
            .map(PathBuf::from)
            .or_else(|| fixture_near(repo));
        if filesystems.contains(&Fs::Bcachefs) && fixture.is_none() {
            let why = format!(
                "no shared/fixtures/{FIXTURE} beside {} or any folder above it, nor in {SHARED_FALLBACK} (set IMPERM_VM_BCACHEFS_IMAGE)",
                repo.display()
            );
            if ci {
                return Err(why);
            }
            println!("SKIPPED {NAME} on bcachefs: {why}");
            filesystems.retain(|f| *f != Fs::Bcachefs);
        }
        let work = cache.join(format!("run-{}", std::process::id()));
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let base = image::base(&kernel, Path::new(env!("CARGO_BIN_EXE_imperm")), &work)?;
        let cuts = std::env::var("IMPERM_VM_CUTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(10);
        let seed = std::env::var("IMPERM_VM_SEED")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        let measure = std::env::var("IMPERM_VM_MEASURE")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        Ok(Setup {
            measure,
            work,
            kernel,
            base,
            fixture,
            filesystems,
            cuts,
            seed,
        })
    }

    fn machine(&self) -> qemu::Machine<'_> {
        qemu::Machine {
            vmlinuz: &self.kernel.vmlinuz,
            base: &self.base,
            work: &self.work,
        }
    }

    /// Makes the disks and runs one chain of VMs per filesystem, at once.
    fn run(&self) -> Result<Vec<Disk>, String> {
        println!(
            "{NAME}: kernel {}, {} power cuts per filesystem, seed {} (IMPERM_VM_SEED), run directory {}",
            self.kernel.version,
            self.cuts,
            self.seed,
            self.work.display()
        );
        let mut chains = Vec::new();
        let scripts = image::scripts()?;
        for &fs in &self.filesystems {
            let mut disks = Vec::new();
            for kind in [Kind::Sequence, Kind::Refusals, Kind::PowerCuts] {
                disks.push(Disk::new(fs, kind, &self.work));
            }
            for name in scripts
                .iter()
                .filter(|n| n.starts_with(&format!("{}-", fs.name())))
            {
                disks.push(Disk::script(fs, name, &self.work));
            }
            for disk in &disks {
                self.format(disk)?;
            }
            chains.push(disks);
        }
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = chains
                .iter_mut()
                .map(|disks| s.spawn(|| self.chain(disks)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for result in results {
            result?;
        }
        Ok(chains.into_iter().flatten().collect())
    }

    fn format(&self, disk: &Disk) -> Result<(), String> {
        let _ = std::fs::remove_file(&disk.image);
        let mut cmd = match disk.fs {
            Fs::Btrfs => {
                std::fs::File::create(&disk.image)
                    .and_then(|f| f.set_len(512 << 20))
                    .map_err(|e| e.to_string())?;
                let mut c = Command::new("mkfs.btrfs");
                c.args(["-q", "-f", "-L", &disk.label]).arg(&disk.image);
                c
            }
            Fs::Bcachefs => {
                let mut c = Command::new("zstd");
                c.args(["-q", "-d", "-f", "--sparse", "-o"])
                    .arg(&disk.image)
                    .arg(self.fixture.as_ref().unwrap());
                c
            }
        };
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }

    /// The VMs of one filesystem, each booting, in this order: the next of the ten boots in a
    /// row; in the first five, the refusal disk (a boot, the root mounted, a plain
    /// directory, a symlink, a boot); in the first, the scenario scripts; then the cut
    /// disk: twice normally in the first two, then its boot after the last cut (checked)
    /// and a boot that is cut, until the cuts are done. First the fixed cuts (failpoints,
    /// the unclean shutdown), then random moments of the reset or of the whole boot.
    fn chain(&self, disks: &mut [Disk]) -> Result<(), String> {
        let find = |kind| disks.iter().position(|d| d.kind == kind).unwrap();
        let (sequence, refusals, cuts) = (
            find(Kind::Sequence),
            find(Kind::Refusals),
            find(Kind::PowerCuts),
        );
        let fs = disks[cuts].fs;
        let tampers = [
            None,
            Some("mounted"),
            Some("directory"),
            Some("symlink"),
            None,
        ];
        let mut rng = Rng(self.seed ^ fs.name().len() as u64 | 1);
        // Each fixed cut with the boots it was tried in: a failpoint gc reaches only when
        // it deletes a snapshot holding nested ones, which a cut boot's root may not.
        let mut fixed: Vec<(Cut, u32)> = fixed_cuts(fs).into_iter().map(|c| (c, 0)).collect();
        for vm in 0..4 * self.cuts + 20 {
            let mut boots: Vec<(usize, Spec)> = Vec::new();
            if disks[sequence].boots() < 10 {
                boots.push((sequence, Spec::default()));
            }
            if let Some(&tamper) = tampers.get(disks[refusals].boots() as usize) {
                boots.push((
                    refusals,
                    Spec {
                        tamper,
                        ..Spec::default()
                    },
                ));
            }
            if vm == 0 {
                boots.extend(
                    (0..disks.len())
                        .filter(|&i| disks[i].kind == Kind::Script)
                        .map(|i| (i, Spec::default())),
                );
            }
            let c = &disks[cuts];
            let cutting = c.failed.is_none() && vm >= 2 && c.stats.cuts < self.cuts;
            if c.failed.is_none() && (vm < 2 || c.was_cut()) {
                boots.push((cuts, Spec::default()));
            }
            let mut this = None;
            if cutting {
                let (cut, tries) = if fixed.is_empty() {
                    let fraction = rng.next();
                    let from = if rng.next() < 0.5 { "reset" } else { "begin" };
                    (Cut::Random { from, fraction }, None)
                } else {
                    let (cut, tries) = fixed.remove(0);
                    (cut, Some(tries))
                };
                boots.push((
                    cuts,
                    Spec {
                        cut: Some(cut.clone()),
                        ..Spec::default()
                    },
                ));
                this = Some((
                    cut,
                    tries,
                    (c.stats.cuts, c.stats.struck.get("gc").copied()),
                ));
            }
            boots.retain(|(i, _)| disks[*i].failed.is_none());
            if boots.is_empty() {
                break;
            }
            self.boot(&format!("{}-{vm}", fs.name()), date(13 * vm), disks, boots)?;
            // A fixed cut must strike, and one meant for gc inside gc; it is tried again.
            if let Some((cut, Some(tries), was)) = this {
                let c = &mut disks[cuts];
                let missed = match cut {
                    Cut::Random { from: "gc", .. } => c.stats.struck.get("gc").copied() == was.1,
                    _ => c.stats.cuts == was.0,
                };
                if missed && c.failed.is_none() {
                    if tries < 2 {
                        fixed.insert(0, (cut, tries + 1));
                    } else {
                        c.failed = Some(format!("{cut:?} did not strike in 3 boots"));
                    }
                }
            }
        }
        let c = &mut disks[cuts];
        if c.failed.is_none() && c.stats.cuts < self.cuts {
            c.failed = Some(format!(
                "only {} of {} power cuts struck a boot",
                c.stats.cuts, self.cuts
            ));
        }
        Ok(())
    }

    /// One VM: the boots (a disk and what to do), in order, at `rtc`; then each checked.
    fn boot(
        &self,
        name: &str,
        rtc: String,
        disks: &mut [Disk],
        boots: Vec<(usize, Spec)>,
    ) -> Result<(), String> {
        // One drive per disk, also for a disk booted twice.
        let mut attached: Vec<usize> = Vec::new();
        for (d, _) in &boots {
            if !attached.contains(d) {
                attached.push(*d);
            }
        }
        let node = |d: usize| {
            let i = attached.iter().position(|a| *a == d).unwrap();
            format!("vd{}", (b'b' + i as u8) as char)
        };
        let nodes: Vec<String> = boots.iter().map(|(d, _)| node(*d)).collect();
        let hosts: Vec<serde_json::Value> = boots
            .iter()
            .zip(&nodes)
            .map(|((d, _), n)| disks[*d].host(n))
            .collect();
        let hosts = nixeval::evaluate(&hosts, &self.work.join(format!("{name}.hosts.json")))?;
        if hosts.len() != boots.len() {
            return Err(format!(
                "{name}: Nix evaluated {} hosts of {}",
                hosts.len(),
                boots.len()
            ));
        }
        let clock = jiff::civil::DateTime::strptime("%Y-%m-%dT%H:%M:%S", &rtc)
            .and_then(|t| jiff::tz::TimeZone::UTC.to_timestamp(t))
            .map_err(|e| format!("{rtc}: {e}"))?
            .as_second();
        let mut cpio = image::Cpio::new();
        let mut cut = None;
        let mut labels = Vec::new();
        for (slot, ((d, mut spec), host)) in boots.into_iter().zip(&hosts).enumerate() {
            let disk = &mut disks[d];
            spec.clock = clock;
            if spec.tamper.is_none() && spec.cut.is_none() {
                spec.measure = self.measure;
            }
            let k = disk.plan(&mut cpio, slot, &nodes[slot], host, spec.clone());
            if let Some(c) = spec.cut {
                let from = match c {
                    Cut::Random { from, .. } => from,
                    _ => "begin",
                };
                let step = disk
                    .steps
                    .get(from)
                    .copied()
                    .unwrap_or(Duration::from_secs(5));
                cut = Some((disk.label(k), c, step));
            }
            labels.push((d, disk.label(k)));
        }
        let images: Vec<PathBuf> = attached.iter().map(|d| disks[*d].image.clone()).collect();
        let mut watch = |at: Instant, line: &str| {
            let Some((label, cut, step)) = &cut else {
                return qemu::Act::Nothing;
            };
            let mark = line.strip_prefix(&format!("@@ {label} "));
            match cut {
                Cut::Failpoint { name, settle, .. }
                    if line.contains(&format!("failpoint {name}: hanging")) =>
                {
                    qemu::Act::CutAt(at + *settle)
                }
                Cut::AtMark(m) if mark == Some(m) => qemu::Act::CutNow,
                Cut::Random { from, fraction } if mark == Some(from) => {
                    qemu::Act::CutAt(at + step.mul_f64(*fraction))
                }
                _ => qemu::Act::Nothing,
            }
        };
        let run = self
            .machine()
            .boot(name, &cpio.finish(), &images, &rtc, TIMEOUT, &mut watch)?;
        for (slot, (d, label)) in labels.iter().enumerate() {
            let disk = &mut disks[*d];
            if disk.failed.is_some() {
                continue;
            }
            let report = guest::read_report(&run.out, slot as u64);
            let marks: Vec<(Instant, &str)> = run.marks(label).collect();
            let seen: BTreeSet<String> = marks.iter().map(|(_, m)| m.to_string()).collect();
            if let Err(e) = disk.check(report.as_ref(), seen.clone()) {
                disk.failed = Some(format!(
                    "{name}: {e}\n  console: {}\n{}",
                    run.log.display(),
                    run.tail()
                ));
                continue;
            }
            if seen.contains("end") && report.as_ref().is_some_and(|r| r.get("stopped").is_none()) {
                let when = |m: &str| marks.iter().find(|(_, x)| *x == m).map(|(t, _)| *t);
                for (from, to) in [("begin", "end"), ("reset", "reset done"), ("gc", "gc done")] {
                    if let (Some(a), Some(b)) = (when(from), when(to)) {
                        disk.steps.insert(from, b - a);
                    }
                }
            }
        }
        if std::env::var_os("IMPERM_VM_KEEP").is_none() {
            let _ = std::fs::remove_file(&run.out);
        }
        println!(
            "{NAME}: {name} ({}) {:.1}s{}",
            labels
                .iter()
                .map(|(_, l)| l.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            (Instant::now() - run.started).as_secs_f64(),
            if run.cut { ", power cut" } else { "" }
        );
        Ok(())
    }
}

/// The cuts each filesystem gets first: hanging failpoints after the steps of the reset
/// (after the snapshot twice: at once, and once the filesystem had time to commit it), an
/// unclean shutdown (files fsynced, nothing unmounted), and two inside gc (btrfs:
/// failpoints after it made a snapshot, then one nested in it, writable; bcachefs cannot
/// make a snapshot writable, so random moments of its gc).
fn fixed_cuts(fs: Fs) -> Vec<Cut> {
    let at = |command, name, settle| Cut::Failpoint {
        command,
        name,
        settle: Duration::from_secs(settle),
    };
    let mut cuts = vec![
        at("reset", "snapshot-taken", 0),
        at("reset", "snapshot-taken", 5),
        at("reset", "root-deleted", 5),
        at("reset", "root-created", 0),
        Cut::AtMark("fsynced"),
    ];
    match fs {
        Fs::Btrfs => cuts.extend([
            at("gc", "gc-flag-cleared", 0),
            at("gc", "nested-flag-cleared", 5),
        ]),
        // Right after the first nested subvolume of the root was destroyed: bcachefs
        // finishes that destroy in the background, and a cut before it did leaves the
        // parent counting the child (ENOTEMPTY at every later boot, until a fsck). At
        // once, and once the journal had time to commit the destroy.
        Fs::Bcachefs => cuts.extend([
            at("reset", "nested-deleted", 0),
            at("reset", "nested-deleted", 3),
            Cut::Random {
                from: "gc",
                fraction: 0.3,
            },
            Cut::Random {
                from: "gc",
                fraction: 0.7,
            },
        ]),
    }
    cuts
}

/// The guest's clock for a VM: 06:30 UTC, `days` after 2026-01-01.
fn date(days: u32) -> String {
    let d = jiff::civil::date(2026, 1, 1) + jiff::Span::new().days(i64::from(days));
    format!("{d}T06:30:00")
}

/// xorshift64*: the random moments of the cuts, repeatable with IMPERM_VM_SEED.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Boots, cuts, and the reset's time against a mount+umount of the same filesystem in the
/// same boot; written to IMPERM_VM_BENCH as JSON when set.
fn summary(disks: &[Disk], elapsed: Duration, setup: &Setup) {
    let mut bench = serde_json::Map::new();
    for &fs in &setup.filesystems {
        let of = disks.iter().filter(|d| d.fs == fs);
        let boots: u32 = of.clone().map(|d| d.stats.boots).sum();
        let cuts: u32 = of.clone().map(|d| d.stats.cuts).sum();
        let mut ratios: Vec<f64> = of
            .clone()
            .flat_map(|d| d.stats.timings.iter())
            .filter(|(_, m)| !m.is_empty())
            .map(|(r, m)| r / (m.iter().sum::<f64>() / m.len() as f64))
            .collect();
        let mut resets: Vec<f64> = of
            .flat_map(|d| d.stats.timings.iter().map(|(r, _)| *r))
            .collect();
        let mut struck = std::collections::BTreeMap::new();
        for d in disks.iter().filter(|d| d.fs == fs) {
            for (step, n) in &d.stats.struck {
                *struck.entry(*step).or_insert(0) += n;
            }
        }
        ratios.sort_by(f64::total_cmp);
        resets.sort_by(f64::total_cmp);
        let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "{NAME}: {}: {boots} boots checked, {cuts} power cuts survived ({struck:?}); reset {:.2}s, {:.1}× a mount+umount (medians of {})",
            fs.name(),
            median(&resets),
            median(&ratios),
            ratios.len()
        );
        bench.insert(
            fs.name().into(),
            serde_json::json!({ "boots": boots, "cuts": cuts, "struck": struck, "reset_seconds": resets, "ratios": ratios }),
        );
    }
    println!("{NAME}: {:.0}s in all", elapsed.as_secs_f64());
    if let Some(file) = std::env::var_os("IMPERM_VM_BENCH") {
        bench.insert("seconds".into(), elapsed.as_secs_f64().into());
        let _ = std::fs::write(file, serde_json::Value::Object(bench).to_string());
    }
}
