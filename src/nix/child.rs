//! Nix child processes that cannot outlive their use: not the request, not the server.
//!
//! A Nix command runs in a process group of its own, so that it can be stopped as a whole.
//! It stops in one of three ways, and leaves nothing behind in any of them:
//!
//! - **Its work is abandoned** (timeout, every client gone): dropping [`Running`] sends the
//!   group SIGTERM, which Nix handles by killing its builders (they run in sessions and PID
//!   namespaces of their own, which a signal to Nix's group would not reach), and SIGKILL
//!   after [`TERM_GRACE`]. A task then waits for the child, so it is reaped as soon as it
//!   exits: tokio reaps a dropped `Child` only at some later SIGCHLD, which left a
//!   `<defunct>` Nix until the next request.
//! - **The server shuts down**: [`stop_all`] stops every group still running, within a
//!   bound, before the process exits.
//! - **The server dies** (`kill -9`, the OOM killer, a crash): each child asks the kernel
//!   for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`, set between fork and exec).
//!   The kernel sends it when the *thread* that forked the child exits, not the process
//!   (prctl(2)), and tokio forks from whichever thread polls the request: a worker thread,
//!   or a blocking-pool thread that exits after ten idle seconds (and a worker becomes one
//!   in `block_in_place`). So every child is forked by one spawner thread that is started
//!   once and never returns: it ends only with the process.

use std::collections::BTreeSet;
use std::io;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// How long Nix gets to stop its builders after SIGTERM before its group gets SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// Process groups of children that have been started and not yet reaped.
static LIVE: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A request to the spawner thread.
struct Spawn {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The spawner thread's queue; the thread is started with the first child.
fn spawner() -> &'static Mutex<mpsc::Sender<Spawn>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Spawn>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Spawn>();
        std::thread::Builder::new()
            .name("nixery-nix-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop never ends.
                for Spawn { mut command, runtime, reply } in rx {
                    // The child registers with the runtime of the request that wants it.
                    let _entered = runtime.enter();
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the Nix spawner thread");
        Mutex::new(tx)
    })
}

/// A running Nix command. Dropped before [`Running::reaped`], it stops the process group
/// and reaps the child in the background.
pub struct Running {
    child: Option<Child>,
    pgid: i32,
}

/// Starts `command` in a process group of its own that dies with this process.
pub async fn spawn(mut command: Command) -> io::Result<Running> {
    let server = std::process::id() as libc::pid_t;
    command.process_group(0);
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid), and no
    // allocation (the errors are raw OS errors).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The server died between fork and prctl: no signal would come.
            if libc::getppid() != server {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply, answer) = oneshot::channel();
    let request = Spawn { command, runtime: tokio::runtime::Handle::current(), reply };
    let gone = || io::Error::other("the Nix spawner thread is gone");
    spawner().lock().unwrap_or_else(|p| p.into_inner()).send(request).map_err(|_| gone())?;
    let child = answer.await.map_err(|_| gone())??;
    let pgid = child.id().expect("a child that was just spawned has a PID") as i32;
    live().insert(pgid);
    Ok(Running { child: Some(child), pgid })
}

impl Running {
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("a running child")
    }

    /// The child was waited for: nothing is left to stop.
    pub fn reaped(mut self) {
        self.child = None;
        live().remove(&self.pgid);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else { return };
        let pgid = self.pgid;
        tracing::info!(pgid, "stopping abandoned nix process group");
        signal_group(pgid, libc::SIGTERM);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(reap(child, pgid))),
            // No runtime to wait on (it is shutting down): the process ends, and the death
            // signal and init take care of the rest.
            Err(_) => signal_group(pgid, libc::SIGKILL),
        }
    }
}

/// Waits for a stopped child (SIGKILL after [`TERM_GRACE`]), then makes sure nothing of its
/// group is left.
async fn reap(mut child: Child, pgid: i32) {
    if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_err() {
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
    // Helpers Nix started in its group (a `git` of fetchGit). While a member is left the
    // group ID cannot be reused, so this cannot reach another process.
    // SAFETY: kill(2) with signal 0 only checks.
    if unsafe { libc::killpg(pgid, 0) } == 0 {
        signal_group(pgid, libc::SIGKILL);
    }
    live().remove(&pgid);
}

fn signal_group(pgid: i32, signal: libc::c_int) {
    // SAFETY: plain syscall on a process group this process created.
    unsafe { libc::killpg(pgid, signal) };
}

/// Stops every Nix process group still running (SIGTERM, SIGKILL after `grace`) and waits,
/// at most `grace` plus a second, until they are reaped. For shutdown, after the requests
/// that ran them have been dropped.
pub async fn stop_all(grace: Duration) {
    let started = tokio::time::Instant::now();
    let groups: Vec<i32> = live().iter().copied().collect();
    if groups.is_empty() {
        return;
    }
    tracing::info!(groups = groups.len(), "stopping nix processes");
    for &pgid in &groups {
        signal_group(pgid, libc::SIGTERM);
    }
    let mut killed = false;
    while !live().is_empty() {
        let waited = started.elapsed();
        if waited >= grace + Duration::from_secs(1) {
            tracing::warn!(left = live().len(), "nix processes not reaped at shutdown");
            return;
        }
        if waited >= grace && !killed {
            live().iter().for_each(|&pgid| signal_group(pgid, libc::SIGKILL));
            killed = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a Nix process group is still running (for tests).
#[cfg(test)]
pub fn is_live(pgid: i32) -> bool {
    live().contains(&pgid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    /// The state letter of process `pid` (`Z` for a zombie), if it exists.
    fn state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..].trim_start().chars().next()
    }

    /// The death signal fires when the thread that forked the child exits: a child asked for
    /// by a thread that then ends must live on (the spawner thread forked it).
    #[test]
    fn children_outlive_the_thread_that_asked_for_them() {
        let pid = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut running = spawn(sh("exec sleep 30")).await.unwrap();
                let pid = running.child().id().unwrap() as i32;
                std::mem::forget(running);
                pid
            })
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let alive = state(pid);
        signal_group(pid, libc::SIGKILL);
        live().remove(&pid);
        assert_eq!(alive, Some('S'), "the child died with the thread that asked for it");
    }

    #[tokio::test]
    async fn a_dropped_child_is_stopped_and_reaped() {
        let mut running = spawn(sh("trap 'exit 0' TERM; sleep 30 & wait")).await.unwrap();
        let pid = running.child().id().unwrap() as i32;
        assert!(is_live(pid));
        drop(running);
        let mut left = state(pid);
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            left = state(pid);
            if left.is_none() {
                break;
            }
        }
        assert_eq!(left, None, "the child is left behind (Z: not reaped)");
        assert!(!is_live(pid));
    }

    /// [`stop_all`] stops every child of the process, so it runs in a process of its own
    /// (under `cargo test`, other tests' children share this one).
    #[test]
    fn shutdown_kills_a_child_that_ignores_sigterm_within_the_bound() {
        const CHILD: &str = "NIXERY_STOP_ALL_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let name = "nix::child::tests::shutdown_kills_a_child_that_ignores_sigterm_within_the_bound";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--nocapture"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && log.contains("1 passed"), "{log}");
            return;
        }
        tokio::runtime::Runtime::new().unwrap().block_on(stop_all_kills_a_child_that_ignores_sigterm());
    }

    async fn stop_all_kills_a_child_that_ignores_sigterm() {
        let mut running = spawn(sh("trap '' TERM; while :; do sleep 0.1; done")).await.unwrap();
        let pid = running.child().id().unwrap() as i32;
        drop(running);
        let started = std::time::Instant::now();
        stop_all(Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());
        assert_eq!(state(pid), None, "not killed and reaped");
        assert!(!is_live(pid));
    }
}
