//! containerd, the path Kubernetes' kubelet pulls through: a private daemon per test and
//! `ctr` to talk to it (see shared/CLIENTS.md for the sequence it sends).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::process::{
    COMMAND_TIMEOUT, Daemon, output_timeout, read_log, require_tool, run_checked, run_checked_with_log, tail,
    unmount_under,
};
use super::server::Server;
use super::temp_dir;

/// A private containerd daemon: root, state, socket and log in its own temp dir, CRI plugin
/// disabled. When dropped, its remaining tasks and containers are killed and deleted, the
/// daemon is stopped and leftover mounts under its dir are detached.
pub struct Containerd {
    daemon: Option<Daemon>,
    dir: TempDir,
    socket: PathBuf,
    log_path: PathBuf,
}

/// The containerd config for a daemon living in `dir`, logging at `level`.
fn config(dir: &Path, level: &str) -> String {
    format!(
        "version = 2\n\
         root = \"{d}/root\"\n\
         state = \"{d}/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{d}/containerd.sock\"\n\
         [debug]\n  level = \"{level}\"\n",
        d = dir.display()
    )
}

impl Containerd {
    /// Starts the daemon and waits (up to 30 s) until `ctr version` answers.
    pub fn start() -> Containerd {
        Self::start_with("info", |_| {})
    }

    /// A daemon that decompresses layers with Go's `compress/gzip` rather than unpigz, which
    /// it runs whenever unpigz is installed (as here): `CONTAINERD_DISABLE_PIGZ`. It logs at
    /// debug level, where it says "using pigz for decompression" when it does run unpigz.
    pub fn start_without_pigz() -> Containerd {
        Self::start_with("debug", |cmd| {
            cmd.env("CONTAINERD_DISABLE_PIGZ", "1");
        })
    }

    fn start_with(log_level: &str, configure: impl FnOnce(&mut Command)) -> Containerd {
        require_tool(&["containerd", "ctr", "runc"]);
        let dir = temp_dir("containerd");
        let config_path = dir.path().join("config.toml");
        fs::write(&config_path, config(dir.path(), log_level)).expect("write containerd config");
        let mut c = Containerd {
            daemon: None,
            socket: dir.path().join("containerd.sock"),
            log_path: dir.path().join("containerd.log"),
            dir,
        };
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config_path);
        configure(&mut cmd);
        let mut daemon = Daemon::spawn(&mut cmd, &c.log_path).unwrap_or_else(|e| panic!("{e}"));
        let ready = daemon.wait_ready(Duration::from_secs(30), || {
            let answers = c.socket.exists()
                && output_timeout(c.ctr().arg("version"), Duration::from_secs(10))
                    .is_ok_and(|out| out.status.success());
            if answers { Ok(()) } else { Err("`ctr version` does not answer".into()) }
        });
        if let Err(e) = ready {
            panic!("containerd {e}\n--- containerd log ---\n{}", tail(&c.log(), 80));
        }
        c.daemon = Some(daemon);
        c
    }

    /// `ctr --address SOCKET`, ready for more args.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket);
        cmd
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// Runs `ctr --address SOCKET ARGS...` for at most `timeout`; its stdout, or `Err` with
    /// the command, its output and the containerd log tail (add the server log with
    /// [`Server::fail`]).
    pub fn try_ctr(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        run_checked_with_log(self.ctr().args(args), timeout, "ctr", &self.log_path)
    }

    /// Like [`Containerd::try_ctr`] with [`COMMAND_TIMEOUT`], panicking with the server log
    /// too on failure.
    pub fn ctr_ok(&self, server: &Server, args: &[&str]) -> String {
        self.try_ctr(args, COMMAND_TIMEOUT).unwrap_or_else(|e| server.fail(&e))
    }

    /// Kills and deletes every task and container in every namespace (best effort).
    fn clean_up_containers(&self) {
        let quick = Duration::from_secs(20);
        let lines = |cmd: &mut Command| -> Vec<String> {
            run_checked(cmd, quick)
                .map(|out| out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        for ns in lines(self.ctr().args(["namespaces", "ls", "-q"])) {
            for task in lines(self.ctr().args(["-n", &ns, "tasks", "ls", "-q"])) {
                let _ = output_timeout(self.ctr().args(["-n", &ns, "tasks", "kill", "-s", "SIGKILL", &task]), quick);
                let _ = output_timeout(self.ctr().args(["-n", &ns, "tasks", "delete", "-f", &task]), quick);
            }
            for container in lines(self.ctr().args(["-n", &ns, "containers", "ls", "-q"])) {
                let _ = output_timeout(self.ctr().args(["-n", &ns, "containers", "delete", &container]), quick);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            if daemon.exited().is_none() {
                self.clean_up_containers();
            }
            daemon.stop();
        }
        unmount_under(self.dir.path());
    }
}
