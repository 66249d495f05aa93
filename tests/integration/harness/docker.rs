//! The Docker engine, for `docker pull` as users type it: a private `dockerd` per test
//! (shared/CLIENTS.md) and the `docker` client talking to it.
//!
//! The daemon gets its own data root (or one the caller keeps between runs:
//! [`Docker::start_with_data_root`]), exec root, socket and pid file in a temp dir, no
//! iptables rules and no bridge (these machines have neither; containers run with
//! `--network none`), and starts its own containerd under its exec root. It is a [`Daemon`]:
//! stopped by its PID (SIGTERM makes dockerd stop its containers and its containerd), dead
//! with the thread that started it. The client gets a private `DOCKER_CONFIG`, so no user
//! configuration or credential helper takes part.
//!
//! Loopback registries are plain HTTP to Docker by default, so `docker pull
//! 127.0.0.1:PORT/NAME` needs no flag. [`Docker::output`] returns what a command printed
//! whether it failed or not, for tests that assert on the error a user sees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use super::process::{
    COMMAND_TIMEOUT, Daemon, output_timeout, read_log, require_tool, run_checked, run_checked_with_log, tail,
    unmount_under,
};
use super::registry::Registry;
use super::temp_dir;

/// How long [`Docker::start`] waits for `docker version` to reach the daemon.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A private Docker engine; its containers are removed and it is stopped when dropped.
pub struct Docker {
    daemon: Option<Daemon>,
    dir: TempDir,
    data_root: PathBuf,
    socket: PathBuf,
    log_path: PathBuf,
}

impl Docker {
    /// Starts dockerd on a fresh data root and waits until `docker version` answers from it.
    pub fn start() -> Docker {
        Self::start_on(None, |_| {})
    }

    /// A daemon that decompresses layers with Go's `compress/gzip` rather than unpigz, which
    /// it runs whenever unpigz is installed (as here): `MOBY_DISABLE_PIGZ`. It logs at debug
    /// level, where it says so ("Use of pigz is disabled").
    pub fn start_without_pigz() -> Docker {
        Self::start_on(None, |cmd| {
            cmd.env("MOBY_DISABLE_PIGZ", "true").arg("--debug");
        })
    }

    /// Starts dockerd on `data_root`, which outlives it: images and the build cache are
    /// kept there from one run to the next. One engine at a time may use a data root: the
    /// caller holds a lock on it.
    pub fn start_with_data_root(data_root: &Path) -> Docker {
        Self::start_on(Some(data_root), |_| {})
    }

    fn start_on(data_root: Option<&Path>, configure: impl FnOnce(&mut Command)) -> Docker {
        require_tool(&["dockerd", "docker", "runc"]);
        let dir = temp_dir("docker");
        let d = dir.path().to_owned();
        let data_root = data_root.map_or_else(|| d.join("root"), Path::to_owned);
        let mut docker =
            Docker { daemon: None, socket: d.join("docker.sock"), log_path: d.join("dockerd.log"), data_root, dir };
        let mut cmd = Command::new("dockerd");
        cmd.args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .arg("--data-root")
            .arg(&docker.data_root)
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", docker.socket.display()))
            .arg("--pidfile")
            .arg(d.join("docker.pid"));
        configure(&mut cmd);
        let mut daemon = Daemon::spawn(&mut cmd, &docker.log_path).unwrap_or_else(|e| panic!("{e}"));
        let ready = daemon.wait_ready(READY_TIMEOUT, || {
            let answers = docker.socket.exists()
                && output_timeout(
                    docker.cmd().args(["version", "--format", "{{.Server.Version}}"]),
                    Duration::from_secs(10),
                )
                .is_ok_and(|out| out.status.success());
            if answers { Ok(()) } else { Err("`docker version` does not reach the daemon".into()) }
        });
        if let Err(e) = ready {
            panic!("dockerd {e}\n--- dockerd log ---\n{}", tail(&docker.log(), 60));
        }
        docker.daemon = Some(daemon);
        docker
    }

    /// `docker` with `DOCKER_HOST` (this daemon) and a private `DOCKER_CONFIG`, ready for a
    /// subcommand.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env_remove("DOCKER_CONTEXT");
        cmd
    }

    /// The daemon's log (stdout and stderr).
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// Runs `docker ARGS...` (at most [`COMMAND_TIMEOUT`]) and returns its exit status,
    /// stdout and stderr whatever they are: a failed `docker pull` prints what the user sees
    /// on stderr. Panics only if docker cannot be started or hangs.
    pub fn output(&self, args: &[&str]) -> Output {
        output_timeout(self.cmd().args(args), COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `docker ARGS...`; its stdout, or `Err` with the command, its output and the
    /// dockerd log tail (add the server log with [`Registry::fail`]).
    pub fn try_docker(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        run_checked_with_log(self.cmd().args(args), timeout, "docker", &self.log_path)
    }

    /// Like [`Docker::try_docker`] with [`COMMAND_TIMEOUT`], panicking with the server log
    /// too on failure.
    pub fn docker_ok(&self, server: &impl Registry, args: &[&str]) -> String {
        self.try_docker(args, COMMAND_TIMEOUT).unwrap_or_else(|e| server.fail(&e))
    }

    /// `docker pull IMAGE`, panicking (with the server log) if it fails.
    pub fn pull(&self, server: &impl Registry, image: &str) -> String {
        self.docker_ok(server, &["pull", image])
    }

    /// `docker run --rm --network none IMAGE COMMAND...` and its stdout, panicking (with the
    /// server log) if it fails.
    pub fn run(&self, server: &impl Registry, image: &str, command: &[&str]) -> String {
        let mut args = vec!["run", "--rm", "--network", "none", image];
        args.extend_from_slice(command);
        self.docker_ok(server, &args)
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            if daemon.exited().is_none() {
                // Containers a failed test left (`run --rm` leaves none); best effort.
                let quick = Duration::from_secs(30);
                if let Ok(ids) = run_checked(self.cmd().args(["ps", "--all", "--quiet"]), quick) {
                    let ids: Vec<&str> = ids.split_whitespace().collect();
                    if !ids.is_empty() {
                        let _ = output_timeout(self.cmd().args(["rm", "--force"]).args(&ids), quick);
                    }
                }
            }
            daemon.stop();
        }
        unmount_under(self.dir.path());
        unmount_under(&self.data_root);
    }
}
