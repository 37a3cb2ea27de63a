//! `fleet status`: `imperm status --format json` on many hosts at once over the user's own
//! OpenSSH (their `ssh`, config, agent and jump hosts), each within a timeout; one table,
//! or one JSON array, of what each answered or why it did not.

use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::{FleetStatusArgs, GlobalArgs};
use crate::error::{Error, FsError, describe};
use crate::exit::ExitStatus;
use crate::output::{self, Report, Styles};
use crate::paths::{escape, shown};
use crate::rollout::fleet::{self, ANSWER_CAP, Answer, Ended, REMOTE_COMMAND, Row, STDERR_CAP};

/// The rows, in the order the hosts were given; JSON is the bare array.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct FleetReport {
    rows: Vec<Row>,
}

impl Report for FleetReport {
    const COMMAND: &'static str = "fleet status";

    fn human(&self, out: &mut dyn Write, styles: &Styles) -> io::Result<()> {
        fleet::render(&self.rows, out, styles)
    }
}

pub fn status(global: &GlobalArgs, args: &FleetStatusArgs) -> Result<ExitStatus, Error> {
    output::require_not_nix(global.format, FleetReport::COMMAND)?;
    let mut hosts = match &args.hosts_file {
        Some(file) => hosts_file(file)?,
        None => Vec::new(),
    };
    if let Some(flake) = &args.flake {
        hosts.extend(flake_hosts(flake)?);
    }
    for host in &args.hosts {
        if let Some(why) = fleet::host_problem(host) {
            return Err(Error::Usage(format!("host {} {why}", shown(host))));
        }
        hosts.push(host.clone());
    }
    let hosts = fleet::unique(hosts);
    if hosts.is_empty() {
        return Err(Error::Usage(
            "no hosts: name them (HOST…), or give --hosts-file FILE or --flake FLAKE".into(),
        ));
    }
    let control = control_dir()?;
    let rows = ask_all(
        &hosts,
        Duration::from_secs(args.timeout),
        args.jobs as usize,
        control.path(),
    );
    let report = FleetReport { rows };
    let emitted = output::emit(&report, global.format, global.color);
    // The hosts' answers are worth more than the cleanup: a directory that cannot be
    // removed is said, not an error.
    let control_path = control.path().to_path_buf();
    if let Err(e) = control.close() {
        eprintln!(
            "imperm: warning: {}",
            FsError::new("remove", &control_path, e)
        );
    }
    emitted?;
    Ok(if report.rows.iter().all(Row::fine) {
        ExitStatus::Clean
    } else {
        ExitStatus::Findings
    })
}

/// The hosts a hosts file names (`-`: standard input). A file larger than any list of
/// hosts (`/dev/zero`) is refused, not read to the end.
fn hosts_file(file: &Path) -> Result<Vec<String>, Error> {
    const MAX: u64 = 1 << 20;
    let mut raw = Vec::new();
    let read = if file == Path::new("-") {
        io::stdin().lock().take(MAX + 1).read_to_end(&mut raw)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX + 1).read_to_end(&mut raw))
    };
    read.map_err(|e| FsError::new("read hosts file", file, e))?;
    let at = escape(file);
    if raw.len() as u64 > MAX {
        return Err(Error::Usage(format!(
            "{at}: larger than {} MiB: not a hosts file",
            MAX >> 20
        )));
    }
    let text = String::from_utf8(raw)
        .map_err(|_| Error::Usage(format!("{at}: not UTF-8 text: not a hosts file")))?;
    fleet::parse_hosts_file(&text)
        .map_err(|(line, why)| Error::Usage(format!("{at}:{line}: {why}")))
}

/// The names of a flake's nixosConfigurations, which `nix eval` lists without evaluating
/// any of them.
fn flake_hosts(flake: &str) -> Result<Vec<String>, Error> {
    let at = format!("--flake {}", shown(flake));
    if flake.contains('#') || flake.is_empty() || flake.starts_with('-') {
        return Err(Error::Usage(format!(
            "{at}: give the flake alone (its nixosConfigurations are read)"
        )));
    }
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--json",
            "--apply",
            "builtins.attrNames",
        ])
        .arg(format!("{flake}#nixosConfigurations"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Usage(format!("{at}: running nix: {}", describe(&e))))?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "{at}: nix eval failed: {}",
            fleet::last_line(&out.stderr).unwrap_or_else(|| "no message".into())
        )));
    }
    fleet::flake_hosts(&out.stdout).map_err(|why| Error::Usage(format!("{at}: {why}")))
}

/// The directory of this run's ssh control sockets, 0700. In `$TMPDIR` when the socket
/// names fit there (a Unix socket's path is at most 107 bytes: this directory, ssh's `%C`
/// of 40 characters and the 17 it adds while creating one), else in /tmp.
fn control_dir() -> Result<tempfile::TempDir, Error> {
    let mut base = std::env::temp_dir();
    if base.as_os_str().len() > 28 {
        base = PathBuf::from("/tmp");
    }
    tempfile::Builder::new()
        .prefix("imperm-fleet-")
        .rand_bytes(6)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&base)
        .map_err(|e| FsError::new("create a directory in", &base, e).into())
}

/// Descriptors one ask holds at its peak: ssh's two pipes (both ends while it starts),
/// its standard input, and the pipe `spawn` reports an exec failure through.
const FDS_PER_JOB: u64 = 8;
/// What imperm itself keeps open besides.
const FDS_SPARE: u64 = 64;

/// Asks every host, `jobs` at a time (fewer when the descriptor limit, raised to its
/// hard maximum first, cannot hold that many: 256 jobs need about 2000, and the usual
/// soft limit is 1024); the rows come back in the hosts' order.
fn ask_all(hosts: &[String], timeout: Duration, jobs: usize, control: &Path) -> Vec<Row> {
    let jobs = match crate::discover::scan::raise_fd_limit() {
        Some(limit) => {
            let room = limit.saturating_sub(FDS_SPARE) / FDS_PER_JOB;
            jobs.min(usize::try_from(room).unwrap_or(usize::MAX).max(1))
        }
        None => jobs,
    };
    let next = AtomicUsize::new(0);
    let rows: Vec<Mutex<Option<Row>>> = hosts.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, hosts.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(host) = hosts.get(i) else { break };
                    let answer = ask(host, timeout, control);
                    *rows[i].lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(fleet::row(host, &answer));
                }
            });
        }
    });
    // A worker that panicked has already ended the scope with its panic.
    rows.into_iter()
        .map(|row| {
            row.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every host was asked")
        })
        .collect()
}

/// The ssh command line for one host: the user's `ssh` from PATH, so their config, agent
/// and jump hosts apply; never a prompt (BatchMode); this run's own control sockets, so
/// two names for one host share a connection and nothing outlives the run (no
/// ControlPersist: a master ends with its last session, and it is in the process group
/// a timeout kills); `--` before the host.
fn ssh(host: &str, timeout: Duration, control: &Path) -> Command {
    let mut cmd = Command::new("ssh");
    let mut control_path = std::ffi::OsString::from("ControlPath=");
    control_path.push(control.join("%C"));
    cmd.args(["-o", "BatchMode=yes", "-o"])
        .arg(format!("ConnectTimeout={}", timeout.as_secs().max(1)))
        .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=no", "-o"])
        .arg(control_path)
        .args(["-T", "--", host])
        .args(REMOTE_COMMAND)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills ssh with its master and ProxyCommand.
        .process_group(0);
    // Out of the terminal's process group, Ctrl-C no longer reaches ssh: it dies with the
    // thread that started it (which waits for it), so a killed imperm leaves no ssh
    // waiting on a hung host.
    // SAFETY: the closure makes one system call, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(io::Error::from)
        });
    }
    cmd
}

enum Stream {
    /// Standard output, and whether it went past [`ANSWER_CAP`].
    Out(Vec<u8>, bool),
    Err(Vec<u8>),
}

/// Runs ssh for one host and collects its answer, killing it at the deadline or once it
/// has written more than any status.
fn ask(host: &str, timeout: Duration, control: &Path) -> Answer {
    let deadline = Instant::now() + timeout;
    let mut child = match ssh(host, timeout, control).spawn() {
        Ok(child) => child,
        Err(e) => {
            return Answer {
                stdout: Vec::new(),
                stderr: Vec::new(),
                ended: Ended::NotStarted(describe(&e)),
            };
        }
    };
    // Readers of their own, not scoped: a pipe some stray process keeps open after the
    // kill must not hold the run; such a thread ends with imperm.
    let (tx, rx) = mpsc::channel();
    if let Some(mut out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let over = (&mut out)
                .take(ANSWER_CAP as u64 + 1)
                .read_to_end(&mut buf)
                .is_ok()
                && buf.len() > ANSWER_CAP;
            let _ = tx.send(Stream::Out(buf, over));
        });
    }
    if let Some(mut err) = child.stderr.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            // Read to the end (ssh must never block on it) keeping the last part: the
            // last line says why.
            let mut kept = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * STDERR_CAP {
                    kept.drain(..kept.len() - STDERR_CAP);
                }
            }
            let _ = tx.send(Stream::Err(kept));
        });
    }
    drop(tx);
    let (mut stdout, mut stderr) = (None, None);
    while stdout.is_none() || stderr.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Stream::Out(buf, over)) => {
                if over {
                    return stopped(&mut child, Ended::TooLarge);
                }
                stdout = Some(buf);
            }
            Ok(Stream::Err(buf)) => stderr = Some(buf),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return stopped(&mut child, Ended::TimedOut(timeout.as_secs()));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Both pipes are closed; ssh ends at once, unless the remote side keeps the session
    // open without writing: the deadline holds for that too.
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                break match (status.code(), status.signal()) {
                    (Some(code), _) => Ended::Exit(code),
                    (None, Some(signal)) => Ended::Signal(signal),
                    (None, None) => Ended::Signal(0),
                };
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => return stopped(&mut child, Ended::TimedOut(timeout.as_secs())),
        }
    };
    Answer {
        stdout: stdout.unwrap_or_default(),
        stderr: stderr.unwrap_or_default(),
        ended,
    }
}

/// Kills ssh's whole process group and reaps ssh.
fn stopped(child: &mut Child, why: Ended) -> Answer {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    let _ = child.wait();
    Answer {
        stdout: Vec::new(),
        stderr: Vec::new(),
        ended: why,
    }
}
