//! The server under test: the real `nixery` binary (`CARGO_BIN_EXE_nixery`) on a free
//! 127.0.0.1 port with fresh storage in a temp dir, configured only through environment
//! variables, and ready once `GET /v2/` answers 200 from its own PID.
//!
//! Its methods add the server log's tail to every failure: [`Server::context`] for the
//! message of an assertion about the server, [`Server::fail`] to panic with it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::http::{self, Response};
use super::process::{COMMAND_TIMEOUT, Daemon, NotReady, owns_listening_port, read_log, run_checked, tail};
use super::{TEST_PKGS, free_port, sha256_digest, temp_dir};

/// How long [`Server::start`] waits for `GET /v2/` to answer 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// `NIX_TIMEOUT` (seconds) given to servers unless a test sets its own.
const DEFAULT_NIX_TIMEOUT: &str = "300";
/// How many lines of the server log a failure shows.
const LOG_TAIL_LINES: usize = 80;
/// How often a start is retried when another process took the free port first.
const START_ATTEMPTS: u32 = 4;

/// The Accept header a Docker-schema-2-only client sends.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The OCI image manifest media type.
pub const OCI_MANIFEST_V1: &str = "application/vnd.oci.image.manifest.v1+json";
/// The Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// What docker, podman, skopeo and containerd send for a tag: both manifest types and both
/// index types.
pub const INDEX_ACCEPT: [(&str, &str); 4] =
    [("Accept", DOCKER_MANIFEST_V2), ("Accept", DOCKER_LIST), ("Accept", OCI_MANIFEST_V1), ("Accept", OCI_INDEX)];
/// `NIX_CONFIG` of a server whose Nix cannot build for aarch64-linux whatever the machine's
/// nix.conf says: no binary cache, no remote builder, no extra platform (binfmt).
pub const NIX_WITHOUT_AARCH64: &str = "substituters =\nbuilders =\nextra-platforms =";

/// The `nixery` binary under test, stopped (SIGTERM, then SIGKILL) when dropped.
/// [`Server::launch_with`] runs it under a wrapper command or on another server's storage.
///
/// Environment given to it (later entries win):
/// 1. the test process's environment, minus `PORT`, `STORAGE_PATH`, `NIX_TIMEOUT`,
///    `NIX_POPULARITY_URL` and every `NIXERY_*` variable;
/// 2. defaults: `PORT` (a free port), `NIXERY_HOST=127.0.0.1`,
///    `NIXERY_PKGS_PATH=<crate>/tests/pkgs/default.nix`, `STORAGE_PATH=<tempdir>/storage`,
///    `NIX_TIMEOUT=300`, `NIX_CONFIG="substituters ="`, `RUST_LOG` (the test's own, or
///    `info`);
/// 3. the `env` given to [`Server::start_with`].
///
/// stdout and stderr go to `<tempdir>/server.log` (appended across restarts).
pub struct Server {
    // Declared first, so it is stopped before its directory is removed.
    daemon: Option<Daemon>,
    port: u16,
    dir: TempDir,
    log_path: PathBuf,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    storage: PathBuf,
    starts: u32,
}

/// How [`Server::launch_with`] starts a server, beyond [`Server::start_with`]'s environment.
#[derive(Default)]
pub struct Launch<'a> {
    /// Environment overrides, as for [`Server::start_with`].
    pub env: &'a [(&'a str, &'a str)],
    /// A command the server runs under, e.g. `["unshare", "--pid", "--fork"]` or
    /// `["prlimit", "--nofile=256:1024"]`. Signals go to the whole process group then,
    /// since a wrapper may not pass them on.
    pub wrapper: &'a [&'a str],
    /// The storage directory, to share another server's ([`Server::storage`]); a fresh
    /// one by default.
    pub storage: Option<&'a Path>,
}

/// Why one start failed, and whether another port may help.
struct StartFailure {
    message: String,
    port_clash: bool,
}

impl Server {
    /// Starts a server with fresh storage and the default environment.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts a server with extra environment variables that override the defaults, e.g.
    /// `&[("NIXERY_TEST_NONCE", &nonce()), ("NIX_TIMEOUT", "5")]`.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        Self::launch_with(Launch { env, ..Launch::default() })
    }

    /// Starts a server as `launch` says.
    pub fn launch_with(launch: Launch) -> Server {
        let dir = temp_dir("server");
        let storage = launch.storage.map_or_else(|| dir.path().join("storage"), Path::to_owned);
        fs::create_dir_all(&storage).expect("create storage dir");
        let mut server = Server {
            daemon: None,
            port: 0,
            log_path: dir.path().join("server.log"),
            dir,
            env: launch.env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            wrapper: launch.wrapper.iter().map(|w| w.to_string()).collect(),
            storage,
            starts: 0,
        };
        server.launch();
        server
    }

    /// [`Server::start_with`] for an environment made at run time, such as a fixture's
    /// `server_env()`.
    pub fn start_with_env(env: &[(&str, String)]) -> Server {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Self::start_with(&env)
    }

    /// Its storage directory (`STORAGE_PATH`).
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// Its own temp dir (the log, the storage unless shared), for files a test gives it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of the process the harness started: the server, or its wrapper.
    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().unwrap_or_else(|| self.fail("the server is not running")).pid()
    }

    /// SIGKILL: the server crashes, leaving whatever it leaves. [`Server::start_again`]
    /// starts it again.
    pub fn crash(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.kill();
        }
        self.note("server killed (SIGKILL)");
    }

    /// Starts it again after [`Server::crash`] or [`Server::terminate`], on the same storage
    /// and environment, on another port.
    pub fn start_again(&mut self) {
        self.launch();
    }

    /// SIGTERM, then waits at most `limit` for it to exit: its exit status if it did (it is
    /// killed if it did not).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut daemon = self.daemon.take().unwrap_or_else(|| self.fail("the server is not running"));
        daemon.signal(libc::SIGTERM, !self.wrapper.is_empty());
        let status = daemon.wait_exit(limit);
        if status.is_none() {
            daemon.kill();
        }
        self.note(&format!("server terminated (SIGTERM): {status:?}"));
        status
    }

    /// Appends a harness line to the server log.
    fn note(&self, what: &str) {
        let _ = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .and_then(|mut f| writeln!(f, "=== harness: {what} ==="));
    }

    fn launch(&mut self) {
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            self.port = free_port();
            match self.spawn_and_wait() {
                Ok(daemon) => {
                    self.daemon = Some(daemon);
                    return;
                }
                Err(StartFailure { message, port_clash }) => {
                    last_failure = message;
                    if !port_clash {
                        break;
                    }
                    eprintln!("harness: port {} was taken (attempt {attempt}), retrying", self.port);
                }
            }
        }
        panic!(
            "nixery server did not start: {last_failure}\n--- server log ({}) ---\n{}",
            self.log_path.display(),
            tail(&self.log(), LOG_TAIL_LINES * 2)
        );
    }

    fn command(&self) -> Command {
        let mut cmd = nixery_command(&self.wrapper);
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env("PORT", self.port.to_string())
            .env("NIXERY_HOST", "127.0.0.1")
            .env("NIXERY_PKGS_PATH", TEST_PKGS)
            .env("STORAGE_PATH", &self.storage)
            .env("NIX_TIMEOUT", DEFAULT_NIX_TIMEOUT)
            .env("NIX_CONFIG", "substituters =")
            .env("RUST_LOG", rust_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path());
        cmd
    }

    fn spawn_and_wait(&mut self) -> Result<Daemon, StartFailure> {
        self.starts += 1;
        let log_len_before = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
        let _ = OpenOptions::new().create(true).append(true).open(&self.log_path).and_then(|mut log| {
            writeln!(
                log,
                "=== harness: starting nixery (start #{}) on 127.0.0.1:{} with storage {} ===",
                self.starts,
                self.port,
                self.storage.display()
            )
        });
        let mut daemon = Daemon::spawn(&mut self.command(), &self.log_path)
            .map_err(|message| StartFailure { message, port_clash: false })?;
        let (pid, port, url) = (daemon.pid(), self.port, self.url("/v2/"));
        // 401: a server with authentication challenges clients without credentials.
        let ready = daemon.wait_ready(READY_TIMEOUT, || match http::send("GET", &url, &[], Duration::from_secs(2)) {
            Ok(r) if matches!(r.status, 200 | 401) && owns_listening_port(pid, port) => Ok(()),
            Ok(r) if matches!(r.status, 200 | 401) => {
                Err(format!("GET /v2/ answered {}, but not from pid {pid}", r.status))
            }
            Ok(r) => Err(format!("GET /v2/ answered {}", r.status)),
            Err(e) => Err(e),
        });
        match ready {
            Ok(()) => Ok(daemon),
            Err(e @ NotReady::Exited(_)) => {
                let new_log = fs::read(&self.log_path)
                    .map(|b| String::from_utf8_lossy(&b[log_len_before as usize..]).into_owned())
                    .unwrap_or_default();
                let port_clash = new_log.contains("Address already in use") || new_log.contains("AddrInUse");
                Err(StartFailure { message: format!("the server (pid {pid}) {e}"), port_clash })
            }
            Err(e @ NotReady::TimedOut { .. }) => {
                daemon.kill();
                Err(StartFailure { message: format!("the server (pid {pid}) {e}; it was killed"), port_clash: false })
            }
        }
    }

    /// `127.0.0.1:PORT`: what image references start with.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// `127.0.0.1:PORT/` + `name_and_tag`, e.g. `image("shell/hello:latest")`.
    pub fn image(&self, name_and_tag: &str) -> String {
        format!("{}/{}", self.addr(), name_and_tag)
    }

    /// The whole server log so far (stdout and stderr, all starts).
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    /// `msg` followed by the server log tail: use it as the message of assertions about
    /// the server, e.g. `assert_eq!(r.status, 200, "{}", server.context(&r.describe()))`.
    pub fn context(&self, msg: &str) -> String {
        format!("{msg}\n--- server log tail ({}) ---\n{}", self.log_path.display(), self.log_tail(LOG_TAIL_LINES))
    }

    /// Panics with `msg` and the server log tail.
    #[track_caller]
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{}", self.context(msg))
    }

    /// Sends a request (at most [`http::TIMEOUT`]); panics (with the server log) if no HTTP
    /// response comes back.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        http::send(method, &self.url(path), headers, http::TIMEOUT)
            .unwrap_or_else(|e| self.fail(&format!("HTTP request to the server failed: {e}")))
    }

    /// Sends the bytes of a whole request as they are ([`http::raw`]); panics (with the
    /// server log) if no HTTP response comes back.
    pub fn raw(&self, request: &[u8]) -> Response {
        http::raw(&self.addr(), request).unwrap_or_else(|e| self.fail(&format!("raw request failed: {e}")))
    }

    /// `GET path` without extra headers.
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[])
    }

    /// `GET path`, and a panic (with the response and the server log) unless it is 200.
    pub fn get_ok(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let r = self.request("GET", path, headers);
        if r.status != 200 {
            self.fail(&format!("expected 200\n{}", r.describe()));
        }
        r
    }

    /// `Docker-Content-Digest` of `GET /v2/<name>/manifests/<tag>` (panics unless 200).
    pub fn manifest_digest(&self, name: &str, tag: &str) -> String {
        self.get_ok(&format!("/v2/{name}/manifests/{tag}"), &[]).expect_header("Docker-Content-Digest").to_owned()
    }

    /// The message of the 422 `MANIFEST_UNKNOWN` answer to `GET /v2/<name>/manifests/<tag>`
    /// (panics if it is another).
    pub fn refusal(&self, name: &str, tag: &str) -> String {
        let r = self.get(&format!("/v2/{name}/manifests/{tag}"));
        assert_eq!(r.status, 422, "{}", self.context(&r.describe()));
        let error = &r.json()["errors"][0];
        assert_eq!(error["code"], "MANIFEST_UNKNOWN", "{}", r.describe());
        error["message"].as_str().unwrap_or_default().to_owned()
    }

    /// `GET /v2/NAME/manifests/REFERENCE` as a client accepting Docker schema 2 and OCI
    /// (two `Accept` lines, like skopeo); the response and the manifest JSON.
    pub fn manifest(&self, name: &str, reference: &str) -> (Response, serde_json::Value) {
        let r = self.get_ok(
            &format!("/v2/{name}/manifests/{reference}"),
            &[("Accept", DOCKER_MANIFEST_V2), ("Accept", OCI_MANIFEST_V1)],
        );
        let json = r.json();
        (r, json)
    }

    /// The image config JSON of NAME:REFERENCE (manifest, then its config blob, whose
    /// digest is checked).
    pub fn image_config(&self, name: &str, reference: &str) -> serde_json::Value {
        let (_, manifest) = self.manifest(name, reference);
        let digest = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_else(|| self.fail(&format!("manifest has no config digest: {manifest:#}")))
            .to_string();
        let blob = self.get_ok(&format!("/v2/{name}/blobs/{digest}"), &[]);
        if sha256_digest(&blob.body) != digest {
            self.fail(&format!("config blob {digest} does not hash to its digest\n{}", blob.describe()));
        }
        blob.json()
    }

    /// The text of `GET /metrics` (panics unless 200).
    pub fn metrics(&self) -> String {
        self.get_ok("/metrics", &[]).text()
    }

    /// The value of metric `name` (e.g. `nixery_image_builds_total`), summed over label
    /// sets; panics with the metrics text and the server log if it is missing.
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.metrics();
        parse_metric(&text, name).unwrap_or_else(|| self.fail(&format!("metric {name} not found in /metrics:\n{text}")))
    }

    /// The value of the sample of metric `name` with exactly the labels `labels` (as written
    /// between the braces, e.g. `cache="warm"`); panics if there is none.
    pub fn metric_labelled(&self, name: &str, labels: &str) -> u64 {
        let text = self.metrics();
        let prefix = format!("{name}{{{labels}}} ");
        let value = text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse::<f64>().ok());
        value
            .map(|v| v as u64)
            .unwrap_or_else(|| self.fail(&format!("no sample {name}{{{labels}}} in /metrics:\n{text}")))
    }

    /// Runs a client command (at most [`COMMAND_TIMEOUT`]) and returns its stdout; on
    /// failure panics with the command, its output and the server log tail.
    pub fn run(&self, cmd: &mut Command) -> String {
        run_checked(cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| self.fail(&e))
    }

    /// Stops the server and starts it again on the same storage and environment, on
    /// another port.
    pub fn restart(&mut self) {
        let status = self.daemon.take().and_then(Daemon::stop);
        self.note(&format!("server stopped: {status:?}"));
        self.launch();
    }

    /// [`Server::restart`] with `env` added to its environment (overriding what it set), e.g.
    /// to change a setting on the same storage.
    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        self.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.restart();
    }
}

/// The `nixery` binary without the test process's settings: `PORT`, `STORAGE_PATH`,
/// `NIX_TIMEOUT`, `NIX_POPULARITY_URL` and every `NIXERY_*` variable removed.
fn nixery_command(wrapper: &[String]) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(env!("CARGO_BIN_EXE_nixery"));
            cmd
        }
        None => Command::new(env!("CARGO_BIN_EXE_nixery")),
    };
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("NIXERY_")
            || ["PORT", "STORAGE_PATH", "NIX_TIMEOUT", "NIX_POPULARITY_URL"].contains(&k.as_ref())
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}

/// `nixery` as a command-line tool (`popcount`, `layers`): without the test process's
/// settings (see [`nixery_command`]), with `NIX_CONFIG="substituters ="` and
/// `RUST_LOG=warn`, for the test to add arguments and environment to.
pub fn nixery_cli() -> Command {
    let mut cmd = nixery_command(&[]);
    cmd.env("NIX_CONFIG", "substituters =").env("RUST_LOG", "warn");
    cmd
}

impl Drop for Server {
    fn drop(&mut self) {
        // A wrapper such as `unshare --fork` ignores SIGTERM: the server gets it directly.
        if let Some(daemon) = self.daemon.as_ref().filter(|_| !self.wrapper.is_empty()) {
            daemon.signal(libc::SIGTERM, true);
        }
    }
}

/// Sums the samples of metric `name` (with or without labels) in Prometheus text.
fn parse_metric(text: &str, name: &str) -> Option<u64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = match line.find('}') {
            Some(close) if line.contains('{') => (&line[..line.find('{').unwrap()], line[close + 1..].trim()),
            _ => match line.split_once(char::is_whitespace) {
                Some((k, v)) => (k, v.trim()),
                None => continue,
            },
        };
        if key != name {
            continue;
        }
        let Some(v) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        *found.get_or_insert(0u64) += v as u64;
    }
    found
}
