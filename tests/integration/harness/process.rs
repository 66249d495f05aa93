//! Processes the tests start: commands run to completion under a time limit, and daemons
//! (the server, containerd, the emulators, a file server) that must not outlive their test.
//!
//! A failed command is described in full: command line with its environment overrides,
//! exit status (or that it timed out and was killed), stdout and stderr.
//!
//! A [`Daemon`] gets `PR_SET_PDEATHSIG`, so it dies even when the test process is killed,
//! and a process group of its own, so stopping it also ends what it started (Nix builders,
//! containerd shims). It is stopped by its PID, never by name: other tests and other
//! people's servers run on the same machine. The death signal fires when the *thread* that
//! spawned the daemon exits, so start daemons on the test's own thread (not inside
//! `spawn_blocking`).

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write as _};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default time limit of [`run`] and `Server::run`. Generous, because the first pull of an
/// image makes the server build it with Nix.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long [`Daemon::stop`] lets a daemon shut down after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often [`Daemon::wait_ready`] asks whether a daemon is ready.
const POLL: Duration = Duration::from_millis(50);

/// The path of executable `name` on the test process's `PATH` (also `/usr/sbin` and
/// `/sbin`, where root's tools live).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Panics with a clear message unless every tool in `names` is installed.
pub fn require_tool(names: &[&str]) {
    let missing: Vec<&str> = names.iter().copied().filter(|n| which(n).is_none()).collect();
    if !missing.is_empty() {
        panic!(
            "required tool(s) not installed: {}; run scripts/setup (it apt-get installs the \
             registry clients)",
            missing.join(", ")
        );
    }
}

/// The last `n` lines of `text`, saying how many were left out.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = String::new();
    if start > 0 {
        let _ = writeln!(out, "[... {start} earlier lines omitted ...]");
    }
    out.push_str(&lines[start..].join("\n"));
    out
}

/// A file's contents as (lossy) UTF-8; empty if it cannot be read (a log not written yet).
pub fn read_log(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// PIDs of the processes whose command line mentions `needle` (a nonce of a test's Nix
/// build: `nix-store`'s arguments name the derivation, the builder's its script).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// The fields of `/proc/PID/stat` after the command name: state, parent, process group, ….
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The children of `parent` that have exited and not been reaped (`<defunct>`).
pub fn zombie_children(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some(fields) = stat_fields(pid) else { continue };
        if fields.first().map(String::as_str) == Some("Z") && fields.get(1) == Some(&parent.to_string()) {
            pids.push(pid);
        }
    }
    pids
}

/// The processes in process group `pgid`.
pub fn process_group_members(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if stat_fields(pid).and_then(|f| f.get(2).cloned()) == Some(pgid.to_string()) {
            pids.push(pid);
        }
    }
    pids
}

/// The parent of process `pid`, from `/proc/PID/stat`.
pub fn parent_pid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The children of process `pid` (those of all its threads), from `/proc`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let list = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    pids
}

/// The command name of process `pid` (`/proc/PID/comm`), if it exists.
pub fn command_name(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim().to_owned())
}

/// Asks `done` every 100 ms for at most `limit`; whether it said yes.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command line of `cmd` as a shell would show it, with its environment overrides and
/// working directory.
fn describe(cmd: &Command) -> String {
    let mut out = String::new();
    if let Some(dir) = cmd.get_current_dir() {
        let _ = write!(out, "(cd {} && ", shell_quote(dir.as_os_str()));
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => {
                let _ = write!(out, "{}={} ", k.to_string_lossy(), shell_quote(v));
            }
            None => {
                let _ = write!(out, "-u {} ", k.to_string_lossy());
            }
        }
    }
    out.push_str(&shell_quote(cmd.get_program()));
    for a in cmd.get_args() {
        out.push(' ');
        out.push_str(&shell_quote(a));
    }
    if cmd.get_current_dir().is_some() {
        out.push(')');
    }
    out
}

fn format_output(cmd: &Command, status: &str, stdout: &[u8], stderr: &[u8]) -> String {
    format!(
        "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        describe(cmd),
        status,
        tail(&String::from_utf8_lossy(stdout), 200),
        tail(&String::from_utf8_lossy(stderr), 200),
    )
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) for at most `timeout`.
/// Returns its [`Output`] whatever the exit status; `Err` with a full description (command
/// line, partial output) if it could not be started or ran out of time (it is then killed).
pub fn output_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    output_with_input(cmd, None, timeout)
}

/// [`output_timeout`] with `input` written to the command's stdin (then closed), as a
/// password for `docker login --password-stdin`.
pub fn output_with_input(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Result<Output, String> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start command: {}\nerror: {e}", describe(cmd)))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(input);
    }
    let out_t = read_in_background(child.stdout.take().expect("piped stdout"));
    let err_t = read_in_background(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {} failed: {e}", describe(cmd))),
        }
    };
    // A grandchild that keeps the pipes open (a daemonising client) must not hang us.
    let join = |t: JoinHandle<Vec<u8>>| {
        let until = Instant::now() + Duration::from_secs(10);
        while !t.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() { t.join().unwrap_or_default() } else { b"[output pipe still open]".to_vec() }
    };
    let stdout = join(out_t);
    let stderr = join(err_t);
    match status {
        Some(status) => Ok(Output { status, stdout, stderr }),
        None => Err(format_output(cmd, &format!("TIMED OUT after {timeout:?} and was killed"), &stdout, &stderr)),
    }
}

/// Reads `pipe` to its end on a thread of its own, so that neither pipe of a child can fill
/// up and block it while we wait.
fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = pipe.read_to_end(&mut v);
        v
    })
}

/// Runs `cmd` for at most `timeout` and returns its stdout if it succeeds; otherwise `Err`
/// with the command line, exit status (or timeout), stdout and stderr, for callers to add
/// their own context (a server log, a daemon log, a listing) before they panic.
pub fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    match output_timeout(cmd, timeout) {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => {
            Err(format!("command failed\n{}", format_output(cmd, &out.status.to_string(), &out.stdout, &out.stderr)))
        }
        Err(msg) => Err(format!("command failed\n{msg}")),
    }
}

/// [`run_checked`] for a daemon's client (`ctr`, `docker`): on failure, the message names
/// `what` and ends with the tail of the daemon's log at `log`.
pub fn run_checked_with_log(cmd: &mut Command, timeout: Duration, what: &str, log: &Path) -> Result<String, String> {
    run_checked(cmd, timeout).map_err(|detail| {
        format!("{what} failed\n{detail}\n--- log tail ({}) ---\n{}", log.display(), tail(&read_log(log), 30))
    })
}

/// Runs `cmd` to completion (at most [`COMMAND_TIMEOUT`]) and returns its stdout.
/// Panics with the command line, exit status, stdout and stderr if it fails or hangs.
pub fn run(cmd: &mut Command) -> String {
    run_checked(cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// Lazily unmounts every mount point at or below `dir` (deepest first), so a temp dir can
/// be removed even if a container was left behind in it.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2 with a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Whether process `pid` holds the LISTEN socket on 127.0.0.1:`port`, so that an answer on
/// that port really comes from this test's daemon and not from another test's that took the
/// port first.
pub fn owns_listening_port(pid: u32, port: u16) -> bool {
    let Ok(tcp) = fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let want = format!(":{port:04X}");
    let inodes: std::collections::HashSet<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A").then(|| f[9].to_string())
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    // The daemon itself, or (under a wrapper such as `unshare`) a process of its group.
    let holds = |pid: u32| {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .ok()
                .and_then(|t| t.to_str().map(str::to_owned))
                .and_then(|t| t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).map(str::to_owned))
                .is_some_and(|inode| inodes.contains(&inode))
        })
    };
    holds(pid) || process_group_members(pid).into_iter().any(holds)
}

/// A long-running process of a test, stopped (see [`Daemon::stop`]) when dropped.
pub struct Daemon {
    child: Child,
    ended: bool,
}

/// Why [`Daemon::wait_ready`] gave up.
pub enum NotReady {
    Exited(ExitStatus),
    TimedOut { after: Duration, last: String },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::Exited(status) => write!(f, "exited with {status} before it was ready"),
            NotReady::TimedOut { after, last } => write!(f, "was not ready after {after:?} (last: {last})"),
        }
    }
}

impl Daemon {
    /// Starts `cmd` with stdin closed and stdout and stderr appended to `log`, in a process
    /// group of its own and with `PR_SET_PDEATHSIG`. `Err` names the command line.
    pub fn spawn(cmd: &mut Command, log: &Path) -> Result<Daemon, String> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("cannot clone the handle of {}: {e}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: only async-signal-safe calls (prctl, setpgid) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", describe(cmd)))?;
        Ok(Daemon { child, ended: false })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks `ready` every 50 ms, for at most `limit`, until it returns `Ok`. Gives up when
    /// the daemon exits, or when time runs out (with the last answer of `ready`).
    pub fn wait_ready(
        &mut self,
        limit: Duration,
        mut ready: impl FnMut() -> Result<(), String>,
    ) -> Result<(), NotReady> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Err(NotReady::Exited(status));
            }
            match ready() {
                Ok(()) => return Ok(()),
                Err(last) if Instant::now() >= deadline => return Err(NotReady::TimedOut { after: limit, last }),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// Sends `signal` to its PID, or with `group` to its whole process group (a wrapper such
    /// as `unshare --fork` does not pass SIGTERM on to the process it runs).
    pub fn signal(&self, signal: libc::c_int, group: bool) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) of our own, not yet reaped child, or of the process group it leads.
        unsafe { libc::kill(if group { -pid } else { pid }, signal) };
    }

    /// Waits at most `limit` for it to exit; its exit status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to its PID, up to 10 s to exit, then SIGKILL; then SIGKILL to whatever is
    /// left of its process group. Returns its exit status if it could be waited for.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.end(STOP_GRACE)
    }

    /// SIGKILL at once: the daemon crashes, as tests of a store dying mid-upload need.
    pub fn kill(mut self) {
        self.end(Duration::ZERO);
    }

    fn end(&mut self, grace: Duration) -> Option<ExitStatus> {
        if std::mem::replace(&mut self.ended, true) {
            return None;
        }
        let pid = self.child.id() as libc::pid_t;
        let mut status = self.exited();
        if status.is_none() && !grace.is_zero() {
            // SAFETY: plain kill(2) on the PID of our own, not yet reaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + grace;
            while status.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                status = self.exited();
            }
        }
        if status.is_none() {
            let _ = self.child.kill();
            status = self.child.wait().ok();
        }
        // Leftover children (e.g. Nix builders) are in its process group, whose id is its PID.
        // SAFETY: kill(2) of the process group our child led.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.end(STOP_GRACE);
    }
}
