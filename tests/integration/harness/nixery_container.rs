//! The registry as its container image runs: `docker run` of the image built by
//! super::nixery_image, on a free port of 127.0.0.1, serving the tests' package set.
//!
//! The engine has no bridge, so the container shares the host's network (`--network
//! host`) and listens on 127.0.0.1 only. The package set (tests/pkgs) is mounted read-only
//! at `/pkgs`, with what it reads from the host: its derivations copy the host's static
//! `/bin/busybox` into the store, so that file is mounted read-only at the same path. Nix
//! gets no substituter (there is no binary cache here).
//!
//! The container's processes are this machine's processes in another PID namespace: the
//! tests see them in `/proc` ([`NixeryContainer::init_pid`] is PID 1 of the container).

use std::process::Output;
use std::time::{Duration, Instant};

use super::docker::Docker;
use super::http;
use super::process::{children, command_name, owns_listening_port, tail};
use super::registry::Registry;
use super::{free_port, nonce};

/// How long [`NixeryContainer::start`] waits for `GET /v2/` to answer 200.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a start is retried when another process took the free port first.
const START_ATTEMPTS: u32 = 3;
/// How many lines of the container's log a failure shows.
const LOG_TAIL_LINES: usize = 80;

/// A running container of the nixery image; removed (with its anonymous volumes) when
/// dropped.
pub struct NixeryContainer<'d> {
    docker: &'d Docker,
    name: String,
    port: u16,
}

/// How a container ended ([`NixeryContainer::state`]).
#[derive(Debug)]
pub struct State {
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
}

impl<'d> NixeryContainer<'d> {
    /// `docker run --detach` of `image` with the test settings (above) and `env`, and
    /// `args` before the image (volumes, `--read-only`, …); waits until the server answers.
    pub fn start(docker: &'d Docker, image: &str, args: &[&str], env: &[(&str, &str)]) -> NixeryContainer<'d> {
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let container = NixeryContainer { docker, name: format!("nixery-{}", nonce()), port: free_port() };
            match container.run(image, args, env) {
                Ok(()) => return container,
                Err(e) => {
                    let clash = e.contains("Address already in use");
                    last = e;
                    if !clash {
                        break;
                    }
                    eprintln!("harness: port {} was taken (attempt {attempt}), retrying", container.port);
                }
            }
        }
        panic!("the nixery container did not start: {last}");
    }

    fn run(&self, image: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
        let pkgs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pkgs");
        let port = self.port.to_string();
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        let mut settings = vec![
            ("PORT", port.as_str()),
            ("NIXERY_HOST", "127.0.0.1"),
            ("NIXERY_PKGS_PATH", "/pkgs/default.nix"),
            ("NIX_CONFIG", "substituters ="),
            ("NIX_TIMEOUT", "300"),
            ("RUST_LOG", rust_log.as_str()),
        ];
        settings.extend_from_slice(env);
        let mut cmd: Vec<String> =
            ["run", "--detach", "--name", &self.name, "--network", "host"].into_iter().map(str::to_owned).collect();
        cmd.extend(["--volume".into(), format!("{pkgs}:/pkgs:ro")]);
        cmd.extend(["--volume".into(), "/bin/busybox:/bin/busybox:ro".into()]);
        for (k, v) in settings {
            cmd.extend(["--env".into(), format!("{k}={v}")]);
        }
        cmd.extend(args.iter().map(|a| a.to_string()));
        cmd.push(image.to_owned());
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.docker.try_docker(&cmd, Duration::from_secs(120))?;
        let url = format!("http://{}/v2/", self.addr());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let state = self.state();
            if !state.running {
                return Err(self.context(&format!("the container exited ({state:?}) before it answered")));
            }
            let answer = http::send("GET", &url, &[], Duration::from_secs(2));
            match answer {
                Ok(r)
                    if r.status == 200 && self.server_pid().is_some_and(|pid| owns_listening_port(pid, self.port)) =>
                {
                    return Ok(());
                }
                _ if Instant::now() >= deadline => {
                    return Err(self.context(&format!("GET /v2/ did not answer 200 within {READY_TIMEOUT:?}")));
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `docker inspect --format TEMPLATE` of the container.
    pub fn inspect(&self, template: &str) -> String {
        self.docker
            .try_docker(&["container", "inspect", "--format", template, &self.name], Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_owned()
    }

    /// Whether it runs, and how it exited.
    pub fn state(&self) -> State {
        let s = self.inspect("{{.State.Running}} {{.State.ExitCode}} {{.State.OOMKilled}}");
        let f: Vec<&str> = s.split_whitespace().collect();
        State {
            running: f.first() == Some(&"true"),
            exit_code: f.get(1).and_then(|c| c.parse().ok()).unwrap_or(-1),
            oom_killed: f.get(2) == Some(&"true"),
        }
    }

    /// The host PID of the container's PID 1 (0 once it has stopped).
    pub fn init_pid(&self) -> u32 {
        self.inspect("{{.State.Pid}}").parse().unwrap_or(0)
    }

    /// The host PID of the server: PID 1 itself if it is `nixery`, else PID 1's child that
    /// is.
    pub fn server_pid(&self) -> Option<u32> {
        let init = self.init_pid();
        if init == 0 {
            return None;
        }
        std::iter::once(init).chain(children(init)).find(|&pid| command_name(pid).as_deref() == Some("nixery"))
    }

    /// What the container printed (the server logs to stderr), both streams.
    pub fn logs(&self) -> String {
        let Output { stdout, stderr, .. } = self.docker.output(&["logs", &self.name]);
        String::from_utf8_lossy(&stdout).into_owned() + &String::from_utf8_lossy(&stderr)
    }

    /// `docker stop` (with `-t SECONDS` if given) and how long it took.
    pub fn stop(&self, seconds: Option<u32>) -> Duration {
        let seconds = seconds.map(|s| s.to_string());
        let mut args = vec!["stop"];
        if let Some(s) = &seconds {
            args.extend(["-t", s]);
        }
        args.push(&self.name);
        let started = Instant::now();
        self.docker.try_docker(&args, Duration::from_secs(120)).unwrap_or_else(|e| self.fail(&e));
        started.elapsed()
    }
}

impl Registry for NixeryContainer<'_> {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn context(&self, msg: &str) -> String {
        format!("{msg}\n--- container log tail ({}) ---\n{}", self.name, tail(&self.logs(), LOG_TAIL_LINES))
    }
}

impl Drop for NixeryContainer<'_> {
    fn drop(&mut self) {
        let _ = self.docker.output(&["rm", "--force", "--volumes", &self.name]);
    }
}
