//! One VM run: qemu-system-x86_64 under TCG (KVM fails on this machine), the cached
//! kernel, the run's initramfs with this VM's plan appended, an output disk first and the
//! scenario disks after it. The serial console is read line by line as it comes, so the
//! caller can cut the power (SIGKILL to qemu: the guest's page cache is lost, what it
//! wrote to its disks stays) at a line or at a time.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::guest::SLOT_BYTES;

/// How long the guest may take to reach its init (`@@ ready`): about 15 s normally.
const READY: Duration = Duration::from_secs(180);
const NAME_HINT: &str = "vm_boots: ";

/// Boots one VM may report (the output disk is sparse).
pub const SLOTS: u64 = 32;

/// What the caller wants after a console line.
pub enum Act {
    Nothing,
    CutNow,
    CutAt(Instant),
}

pub struct Run {
    /// Every console line, with when it came.
    pub console: Vec<(Instant, String)>,
    pub started: Instant,
    /// Whether the power was cut (qemu killed).
    pub cut: bool,
    pub out: PathBuf,
    pub log: PathBuf,
}

pub struct Machine<'a> {
    pub vmlinuz: &'a Path,
    pub base: &'a [u8],
    pub work: &'a Path,
}

impl Machine<'_> {
    /// Boots `plan` (a cpio archive appended to the base initramfs) with `disks` at
    /// `rtc` (the guest's clock), until the guest powers off, `watch` asks for a cut, or
    /// `timeout` passes (an error, after killing qemu).
    pub fn boot(
        &self,
        name: &str,
        plan: &[u8],
        disks: &[PathBuf],
        rtc: &str,
        timeout: Duration,
        watch: &mut dyn FnMut(Instant, &str) -> Act,
    ) -> Result<Run, String> {
        let initrd = self.work.join(format!("{name}.initrd"));
        let out = self.work.join(format!("{name}.out"));
        let log = self.work.join(format!("{name}.console"));
        let mut bytes = self.base.to_vec();
        bytes.extend_from_slice(plan);
        fs::write(&initrd, bytes).map_err(|e| format!("{}: {e}", initrd.display()))?;
        // A guest that stalls in the kernel's own boot under TCG (an RCU stall on the second
        // vCPU when the host is loaded: seen once in a few hundred boots) never reaches its
        // init; nothing has touched the disks then, so it is booted again.
        let mut attempt = 0;
        let (mut child, started, console, cut, timed_out) = loop {
            attempt += 1;
            let _ = fs::remove_file(&out);
            fs::File::create(&out)
                .and_then(|f| f.set_len(SLOT_BYTES * SLOTS))
                .map_err(|e| format!("{}: {e}", out.display()))?;
            let mut cmd = Command::new("qemu-system-x86_64");
            cmd.args([
                "-accel",
                "tcg",
                "-m",
                "2048",
                "-smp",
                "2",
                "-nographic",
                "-no-reboot",
                "-nic",
                "none",
            ])
            .arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-initrd")
            .arg(&initrd)
            .args([
                "-append",
                "console=ttyS0 quiet panic=-1 no_timer_check",
                "-rtc",
            ])
            .arg(format!("base={rtc}"));
            // cache=unsafe: a killed qemu loses nothing the guest wrote to its disks (the
            // host's page cache keeps it), exactly as without it, and runs are faster.
            for disk in std::iter::once(&out).chain(disks) {
                cmd.arg("-drive").arg(format!(
                    "file={},format=raw,if=virtio,cache=unsafe",
                    disk.display()
                ));
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
            let started = Instant::now();
            let (tx, rx) = mpsc::channel();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).split(b'\n') {
                    let Ok(line) = line else { break };
                    let line = String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_string();
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
            let mut console = Vec::new();
            let mut cut_at: Option<Instant> = None;
            let deadline = started + timeout;
            let mut cut = false;
            let mut timed_out = false;
            let (mut ready, mut stuck) = (false, false);
            loop {
                let mut until = cut_at.map_or(deadline, |c| c.min(deadline));
                if !ready {
                    until = until.min(started + READY);
                }
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok((at, line)) => {
                        ready |= line.contains("@@ ready");
                        match watch(at, &line) {
                            Act::Nothing => {}
                            Act::CutNow => cut_at = Some(Instant::now()),
                            Act::CutAt(t) => cut_at = Some(cut_at.map_or(t, |c| c.min(t))),
                        }
                        console.push((at, line));
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
                let now = Instant::now();
                if !ready && now >= started + READY {
                    let _ = child.kill();
                    stuck = true;
                    break;
                }
                if now >= deadline {
                    timed_out = true;
                }
                if timed_out || cut_at.is_some_and(|c| now >= c) {
                    let _ = child.kill();
                    cut = true;
                    break;
                }
            }
            if stuck && attempt < 3 {
                let _ = child.wait();
                eprintln!(
                    "{NAME_HINT}{name}: the guest did not reach its init in {}s: booting it again",
                    READY.as_secs()
                );
                continue;
            }
            break (child, started, console, cut, timed_out || stuck);
        };
        let status = child.wait().map_err(|e| e.to_string())?;
        let mut file = fs::File::create(&log).map_err(|e| e.to_string())?;
        for (at, line) in &console {
            let _ = writeln!(file, "{:8.3} {line}", (*at - started).as_secs_f64());
        }
        let _ = fs::remove_file(&initrd);
        if timed_out {
            return Err(format!(
                "{name}: no power-off after {}s, or no init in {}s three times (console: {})",
                timeout.as_secs(),
                READY.as_secs(),
                log.display()
            ));
        }
        if !cut && !status.success() {
            return Err(format!(
                "{name}: qemu failed: {status} (console: {})",
                log.display()
            ));
        }
        Ok(Run {
            console,
            started,
            cut,
            out,
            log,
        })
    }
}

impl Run {
    /// The `@@ NAME …` lines of one disk, with when they came.
    pub fn marks<'a>(&'a self, disk: &'a str) -> impl Iterator<Item = (Instant, &'a str)> + 'a {
        let prefix = format!("@@ {disk} ");
        self.console
            .iter()
            .filter_map(move |(at, l)| Some((*at, l.strip_prefix(&prefix)?)))
    }

    /// The last lines of the console, for a failure message.
    pub fn tail(&self) -> String {
        let n = self.console.len().saturating_sub(30);
        self.console[n..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
