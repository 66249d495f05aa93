//! One interface to the four registry clients, for tests that do the same thing with each
//! (a table of cases over [`Client`]): pull an image and run a program from it, or pull and
//! read what the client printed when the pull failed.
//!
//! Each pulls the way users do: skopeo copies into an OCI layout and umoci unpacks it (the
//! program runs with chroot), containerd with `ctr images pull --plain-http` (what the
//! kubelet does), podman and docker with `pull`; the latter three run the program in a
//! container.

use std::fmt;
use std::process::{Command, Output};
use std::time::Duration;

use super::process::{COMMAND_TIMEOUT, output_timeout, output_with_input, require_tool};
use super::registry::Registry;
use super::server::Server;
use super::skopeo_umoci::pull_and_unpack_with;
use super::{Containerd, Docker, Podman, nonce, temp_dir};

/// A registry client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    SkopeoUmoci,
    Containerd,
    Podman,
    Docker,
}

/// A client ready to pull: its daemon running, if it has one (stopped when dropped), and the
/// credentials it pulls with, if any ([`Session::log_in`]).
pub struct Session {
    running: Running,
    credentials: Option<String>,
}

/// The client and its daemon.
enum Running {
    SkopeoUmoci,
    Containerd(Containerd),
    Podman(Podman),
    Docker(Docker),
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Client::SkopeoUmoci => "skopeo",
            Client::Containerd => "containerd",
            Client::Podman => "podman",
            Client::Docker => "docker",
        })
    }
}

impl Client {
    /// Checks the client's tools are installed and starts its daemon, if any.
    pub fn start(self) -> Session {
        let running = match self {
            Client::SkopeoUmoci => {
                require_tool(&["skopeo", "umoci", "chroot"]);
                Running::SkopeoUmoci
            }
            Client::Containerd => Running::Containerd(Containerd::start()),
            Client::Podman => Running::Podman(Podman::new()),
            Client::Docker => Running::Docker(Docker::start()),
        };
        Session { running, credentials: None }
    }
}

impl Session {
    /// Logs in to `server` as `user` the way each client's users do: `docker login` and
    /// `podman login` (password on stdin), whose answer is returned; skopeo (`--src-creds`)
    /// and ctr (`--user`) take credentials with every pull, so they are kept for the next
    /// ones and `None` is returned.
    pub fn log_in(&mut self, server: &Server, user: &str, password: &str) -> Option<Output> {
        let addr = server.addr();
        let mut cmd = match &self.running {
            Running::SkopeoUmoci | Running::Containerd(_) => {
                self.credentials = Some(format!("{user}:{password}"));
                return None;
            }
            Running::Docker(d) => {
                let mut cmd = d.cmd();
                cmd.args(["login", "-u", user, "--password-stdin", &addr]);
                cmd
            }
            Running::Podman(p) => {
                let mut cmd = p.cmd();
                cmd.args(["login", "--tls-verify=false", "-u", user, "--password-stdin", &addr]);
                cmd
            }
        };
        Some(
            output_with_input(&mut cmd, Some(password.as_bytes()), COMMAND_TIMEOUT).unwrap_or_else(|e| server.fail(&e)),
        )
    }

    /// Pulls `name_and_tag` (e.g. `"shell/hello:latest"`) from `server` and returns the
    /// client's exit status, stdout and stderr, whether the pull worked or not: what a user
    /// sees when it fails. (skopeo copies to a throw-away OCI layout.) Panics only if the
    /// client cannot be started or hangs.
    pub fn pull_output(&self, server: &impl Registry, name_and_tag: &str) -> Output {
        let image = server.image(name_and_tag);
        let layout = temp_dir("pull");
        let mut cmd = match &self.running {
            Running::SkopeoUmoci => {
                let mut cmd = Command::new("skopeo");
                cmd.arg("copy");
                if let Some(credentials) = &self.credentials {
                    cmd.args(["--src-creds", credentials]);
                }
                cmd.args(["--src-tls-verify=false", &format!("docker://{image}")])
                    .arg(format!("oci:{}:pulled", layout.path().join("layout").display()));
                cmd
            }
            Running::Containerd(c) => {
                let mut cmd = c.ctr();
                cmd.args(["images", "pull", "--plain-http"]);
                if let Some(credentials) = &self.credentials {
                    cmd.args(["--user", credentials]);
                }
                cmd.arg(&image);
                cmd
            }
            Running::Podman(p) => {
                let mut cmd = p.cmd();
                cmd.args(["pull", "--tls-verify=false", &image]);
                cmd
            }
            Running::Docker(d) => {
                let mut cmd = d.cmd();
                cmd.args(["pull", &image]);
                cmd
            }
        };
        output_timeout(&mut cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| server.fail(&e))
    }

    /// Pulls `name_and_tag` from `server`, runs `program` (a name on the image's PATH, or
    /// a path) from the image, and returns its stdout. Panics with the client's output and
    /// the server log if either fails.
    pub fn pull_and_run(&self, server: &impl Registry, name_and_tag: &str, program: &str) -> String {
        if let Running::SkopeoUmoci = self.running {
            let creds: Vec<&str> = self.credentials.iter().flat_map(|c| ["--src-creds", c.as_str()]).collect();
            let unpacked = pull_and_unpack_with(server, name_and_tag, &[], &creds);
            let path = if program.starts_with('/') { program.to_owned() } else { format!("/bin/{program}") };
            return unpacked.chroot(server, &[&path]);
        }
        let pulled = self.pull_output(server, name_and_tag);
        if !pulled.status.success() {
            server.fail(&format!(
                "the pull of {name_and_tag} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                pulled.status,
                String::from_utf8_lossy(&pulled.stdout),
                String::from_utf8_lossy(&pulled.stderr)
            ));
        }
        let image = server.image(name_and_tag);
        match &self.running {
            Running::SkopeoUmoci => unreachable!("handled above"),
            Running::Containerd(c) => {
                let id = format!("run-{}", nonce());
                c.try_ctr(&["run", "--rm", &image, &id, program], Duration::from_secs(120))
                    .unwrap_or_else(|e| server.fail(&e))
            }
            Running::Podman(p) => server.run(p.cmd().args(["run", "--rm", &image, program])),
            Running::Docker(d) => d.run(server, &image, &[program]),
        }
    }
}

/// What a client printed: stdout, then stderr.
pub fn printed(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
