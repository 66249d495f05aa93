//! Shared harness for the nixery-rs integration tests.
//!
//! Every integration test file pulls this in with `mod common;` (the module is
//! `tests/common/mod.rs`, so cargo does not build it as a test of its own).
//!
//! # What it offers
//!
//! * [`Server`]: runs the real `nixery` binary (`CARGO_BIN_EXE_nixery`) on a free
//!   127.0.0.1 port with fresh storage in a temp dir, configured only through environment
//!   variables, waits until `GET /v2/` answers 200, and stops it again on drop. It also has
//!   a tiny blocking HTTP client ([`Server::get`], [`Server::request`]) that works both in
//!   plain `#[test]`s and inside `#[tokio::test]`s, and scrapes `/metrics`
//!   ([`Server::metric`]).
//! * [`run`] / [`run_timeout`] / [`output_timeout`]: run an external command (a registry
//!   client) to completion with a time limit; on failure the panic shows the command line,
//!   exit status, stdout and stderr. [`Server::run`] does the same and adds the tail of the
//!   server log, which is what you want when a client fails against the server.
//! * [`Containerd`]: a private containerd daemon (own root, state and socket in a temp dir,
//!   CRI plugin disabled), with [`Containerd::ctr`] to talk to it.
//! * [`Podman`]: podman with its own containers.conf, vfs storage, cgroupfs, runc, file
//!   events and file locks, all inside a temp dir ([`Podman::cmd`]).
//! * [`pull_and_unpack`]: `skopeo copy` an image into an OCI layout and `umoci unpack` it;
//!   [`Unpacked`] then runs programs in it with `chroot` and resolves paths inside it.
//! * [`nonce`], [`sha256_hex`], [`require_tool`].
//!
//! # Rules the harness keeps
//!
//! * Nothing uses a fixed port or a fixed path: tests run in parallel processes under
//!   cargo-nextest.
//! * No process outlives its test: servers and containerd are stopped by PID on drop
//!   (SIGTERM, a short wait, then SIGKILL), and they get `PR_SET_PDEATHSIG` so they die
//!   even if the test process is killed. Because that signal fires when the *thread* that
//!   spawned them exits, create a [`Server`] or [`Containerd`] on the test's own thread
//!   (not inside `spawn_blocking`).
//! * Every panic says what failed; panics about the server include its log tail.
//!
//! # Example
//!
//! ```ignore
//! mod common;
//! use common::*;
//!
//! #[test]
//! fn pulls() {
//!     let server = Server::start();
//!     let resp = server.get("/v2/shell/hello/manifests/latest");
//!     assert_eq!(resp.status, 200, "{}", server.context(&resp.describe()));
//!     assert_eq!(server.metric("nixery_image_builds_total"), 1);
//! }
//! ```
#![allow(dead_code)]

pub mod emulators;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// How long [`Server::start`] waits for `GET /v2/` to answer 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time limit for external commands run by [`run`] and [`Server::run`]. Generous,
/// because the first pull of an image makes the server build it with Nix.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Default read timeout of [`Server::get`] / [`Server::request`] (a manifest request may
/// trigger a Nix build).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `NIX_TIMEOUT` (seconds) given to servers.
pub const DEFAULT_NIX_TIMEOUT: &str = "300";
/// How many lines of a log a panic message shows.
pub const LOG_TAIL_LINES: usize = 80;

/// The Accept header a Docker-schema-2-only client sends.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The OCI image manifest media type.
pub const OCI_MANIFEST_V1: &str = "application/vnd.oci.image.manifest.v1+json";

// ---------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------

/// A string unique per call, across threads and processes: `PID-NANOS-COUNTER`.
/// Usable as a container ID, a `NIXERY_TEST_NONCE` or part of a file name.
pub fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{}-{}", std::process::id(), nanos, n)
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `"sha256:" + sha256_hex(bytes)`, the OCI digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// A fresh temp dir named `nixery-test-<what>-...` (removed on drop).
pub fn temp_dir(what: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("nixery-test-{what}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir for {what}: {e}"))
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, read, released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0 to find a free port");
    l.local_addr().expect("local_addr of a bound listener").port()
}

/// Whether `name` is an executable found on `PATH` (or an existing path if it has a `/`).
pub fn have_tool(name: &str) -> bool {
    which(name).is_some()
}

/// The path of executable `name` on the test process's `PATH` (also `/usr/sbin` and
/// `/sbin`, where root's tools live); `name` itself if it contains a `/` and exists.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).exists().then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Panics with a clear message unless every tool in `names` is on `PATH`.
/// The tools are installed by `scripts/setup`.
pub fn require_tool(names: &[&str]) {
    let missing: Vec<&str> = names.iter().copied().filter(|n| !have_tool(n)).collect();
    if !missing.is_empty() {
        panic!(
            "required tool(s) not installed: {}; run scripts/setup (it apt-get installs the \
             registry clients)",
            missing.join(", ")
        );
    }
}

/// The last `n` lines of `text`.
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
pub fn describe(cmd: &Command) -> String {
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
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start command: {}\nerror: {e}", describe(cmd)))?;
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
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
    let join = |t: std::thread::JoinHandle<Vec<u8>>| {
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

/// Like [`run`] with a time limit of its own.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> String {
    match output_timeout(cmd, timeout) {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => panic!("command failed\n{}", format_output(cmd, &out.status.to_string(), &out.stdout, &out.stderr)),
        Err(msg) => panic!("command failed\n{msg}"),
    }
}

/// Runs `cmd` to completion (at most [`COMMAND_TIMEOUT`]) and returns its stdout.
/// Panics with the command line, exit status, stdout and stderr if it fails or hangs.
pub fn run(cmd: &mut Command) -> String {
    run_timeout(cmd, COMMAND_TIMEOUT)
}

fn pid_t(pid: u32) -> libc::pid_t {
    pid as libc::pid_t
}

/// Makes a spawned daemon die with the spawning thread (so it cannot outlive a test
/// process that is killed) and puts it in its own process group (so its children can be
/// ended with it).
fn daemon_pre_exec(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (prctl, setpgid) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            libc::setpgid(0, 0);
            Ok(())
        });
    }
}

/// Stops a child we spawned: SIGTERM to its PID, up to `grace` to exit, then SIGKILL; then
/// SIGKILL to whatever is left of its process group (the PGID is its PID, see
/// [`daemon_pre_exec`]). Returns its exit status if it could be waited for.
fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let pid = child.id();
    let mut status = child.try_wait().ok().flatten();
    if status.is_none() {
        // SAFETY: plain kill(2) on the PID of our own, not yet reaped child.
        unsafe { libc::kill(pid_t(pid), libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while status.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            status = child.try_wait().ok().flatten();
        }
        if status.is_none() {
            let _ = child.kill();
            status = child.wait().ok();
        }
    }
    // Leftover children of the daemon (e.g. nix-build) are in its process group.
    // SAFETY: kill(2) of the process group whose id is our child's PID.
    unsafe { libc::kill(-pid_t(pid), libc::SIGKILL) };
    status
}

// ---------------------------------------------------------------------------------------
// Blocking HTTP
// ---------------------------------------------------------------------------------------

/// A response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The request line that was sent, e.g. `GET /v2/`, for messages.
    pub request: String,
    pub status: u16,
    /// Header names as sent by the server, in order; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Header `name`, or a panic that shows the whole response.
    pub fn expect_header(&self, name: &str) -> &str {
        self.header(name).unwrap_or_else(|| panic!("response has no {name} header\n{}", self.describe()))
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON, or a panic that shows the response.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e})\n{}", self.describe()))
    }

    /// Request line, status, headers and (the start of) the body, for messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{} -> {}\n", self.request, self.status);
        for (k, v) in &self.headers {
            let _ = writeln!(s, "{k}: {v}");
        }
        let body = self.text();
        let shown: String = body.chars().take(2000).collect();
        let _ = write!(s, "\n{shown}");
        if body.len() > shown.len() {
            let _ = write!(s, "\n[... {} bytes in all]", self.body.len());
        }
        s
    }
}

/// Sends one HTTP/1.1 request (with `Connection: close`) to `addr` and reads the whole
/// response. `headers` may repeat a name (e.g. several `Accept` lines, as skopeo sends).
/// Bodies of HEAD requests are not read. Handles chunked and close-delimited bodies.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let request = format!("{method} {path}");
    let sock: SocketAddr = addr.parse().map_err(|e| format!("bad address {addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .map_err(|e| format!("{request}: cannot connect to {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(Duration::from_secs(30))).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).map_err(|e| format!("{request}: cannot send to {addr}: {e}"))?;

    let mut raw = Vec::new();
    // Read the head first.
    let head_end = loop {
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            break i;
        }
        let mut buf = [0u8; 8192];
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "{request}: connection closed before a full response head ({} bytes: {:?})",
                    raw.len(),
                    String::from_utf8_lossy(&raw)
                ));
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("{request}: reading the response head failed: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut rest = raw[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{request}: bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut resp = HttpResponse { request: request.clone(), status, headers, body: Vec::new() };
    if method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 || status / 100 == 1 {
        return Ok(resp);
    }
    stream
        .read_to_end(&mut rest)
        .map_err(|e| format!("{request}: reading the body failed after {} bytes: {e}", rest.len()))?;
    let chunked = resp.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    resp.body = if chunked {
        dechunk(&rest).map_err(|e| format!("{request}: bad chunked body: {e}"))?
    } else if let Some(len) = resp.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < len {
            return Err(format!("{request}: body shorter than Content-Length ({} < {len})", rest.len()));
        }
        rest.truncate(len);
        rest
    } else {
        rest
    };
    Ok(resp)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = find(data, b"\r\n").ok_or("missing chunk size line")?;
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size_str = size_str.split(';').next().unwrap_or("").trim().to_string();
        let size = usize::from_str_radix(&size_str, 16).map_err(|e| format!("bad chunk size {size_str:?}: {e}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// The `nixery` binary under test, running on 127.0.0.1 with its own temp dir.
///
/// Environment given to it (later entries win):
/// 1. the test process's environment, minus `PORT`, `STORAGE_PATH`, `NIX_TIMEOUT`,
///    `NIX_POPULARITY_URL` and every `NIXERY_*` variable;
/// 2. defaults: `PORT` (a free port), `NIXERY_HOST=127.0.0.1`,
///    `NIXERY_PKGS_PATH=<crate>/tests/pkgs/default.nix`, `STORAGE_PATH=<tempdir>/storage`,
///    `NIX_TIMEOUT=300`, `NIX_CONFIG="substituters ="`, `RUST_LOG` (the test's own, or
///    `info`);
/// 3. the `env` given to [`Server::start_with`] (a given `STORAGE_PATH` is used as the
///    storage; a given `PORT` is used as is, without retrying on a clash).
///
/// stdout and stderr go to `<tempdir>/server.log` (appended across restarts).
pub struct Server {
    child: Option<Child>,
    port: u16,
    fixed_port: bool,
    dir: TempDir,
    storage: PathBuf,
    log_path: PathBuf,
    env: Vec<(String, String)>,
    starts: u32,
}

impl Server {
    /// Starts a server with fresh storage and the default environment.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts a server with extra environment variables that override the defaults, e.g.
    /// `&[("NIXERY_TEST_NONCE", &nonce()), ("NIX_TIMEOUT", "5")]`. Pass `STORAGE_PATH` to
    /// run on existing storage (e.g. another server's [`Server::storage_path`], after
    /// stopping that one, or a `TempDir` the test owns).
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let dir = temp_dir("server");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let storage = match env.iter().rev().find(|(k, _)| k == "STORAGE_PATH") {
            Some((_, v)) => PathBuf::from(v),
            None => {
                let s = dir.path().join("storage");
                fs::create_dir_all(&s).expect("create storage dir");
                s
            }
        };
        let fixed_port = env.iter().rev().find(|(k, _)| k == "PORT").and_then(|(_, v)| v.parse().ok());
        let log_path = dir.path().join("server.log");
        let mut server = Server {
            child: None,
            port: fixed_port.unwrap_or(0),
            fixed_port: fixed_port.is_some(),
            dir,
            storage,
            log_path,
            env,
            starts: 0,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        const ATTEMPTS: u32 = 4;
        let mut last_failure = String::new();
        for attempt in 1..=ATTEMPTS {
            if !self.fixed_port {
                self.port = free_port();
            }
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err((msg, port_clash)) => {
                    last_failure = msg;
                    if !port_clash || self.fixed_port {
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

    /// Err((message, whether the failure looks like a port clash)).
    fn spawn_and_wait(&mut self) -> Result<(), (String, bool)> {
        self.starts += 1;
        let log_len_before = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log_path).expect("open server log");
        let _ = writeln!(
            log,
            "=== harness: starting nixery (start #{}) on 127.0.0.1:{} with storage {} ===",
            self.starts,
            self.port,
            self.storage.display()
        );
        let err_log = log.try_clone().expect("clone log file handle");

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nixery"));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("NIXERY_")
                || ["PORT", "STORAGE_PATH", "NIX_TIMEOUT", "NIX_POPULARITY_URL"].contains(&k.as_ref())
            {
                cmd.env_remove(k.as_ref());
            }
        }
        let pkgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pkgs/default.nix");
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env("PORT", self.port.to_string())
            .env("NIXERY_HOST", "127.0.0.1")
            .env("NIXERY_PKGS_PATH", &pkgs)
            .env("STORAGE_PATH", &self.storage)
            .env("NIX_TIMEOUT", DEFAULT_NIX_TIMEOUT)
            .env("NIX_CONFIG", "substituters =")
            .env("RUST_LOG", rust_log);
        for (k, v) in &self.env {
            if k == "PORT" || k == "STORAGE_PATH" {
                continue; // already applied through self.port / self.storage
            }
            cmd.env(k, v);
        }
        cmd.current_dir(self.dir.path()).stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(err_log));
        daemon_pre_exec(&mut cmd);
        let child = cmd.spawn().map_err(|e| (format!("cannot spawn {}: {e}", describe(&cmd)), false))?;
        let pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let new_log = fs::read(&self.log_path)
                    .map(|b| String::from_utf8_lossy(&b[log_len_before as usize..]).into_owned())
                    .unwrap_or_default();
                let clash = new_log.contains("Address already in use") || new_log.contains("AddrInUse");
                return Err((format!("the server (pid {pid}) exited with {status} before it was ready"), clash));
            }
            match http_request(&self.addr(), "GET", "/v2/", &[], Duration::from_secs(2)) {
                Ok(r) if r.status == 200 && owns_listening_port(pid, self.port) => return Ok(()),
                Ok(r) if r.status == 200 => {
                    last = format!("GET /v2/ answered 200, but not from pid {pid}");
                }
                Ok(r) => last = format!("GET /v2/ answered {}", r.status),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                if let Some(mut c) = self.child.take() {
                    stop_child(&mut c, Duration::from_secs(2));
                }
                return Err((format!("not ready after {READY_TIMEOUT:?} (last: {last}); it was killed"), false));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`: what image references start with.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` + `path` (a `/` is put in front of `path` if missing).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("http://{}{}", self.addr(), path)
        } else {
            format!("http://{}/{}", self.addr(), path)
        }
    }

    /// `127.0.0.1:PORT/` + `name_and_tag`, e.g. `image("shell/hello:latest")`.
    pub fn image(&self, name_and_tag: &str) -> String {
        format!("{}/{}", self.addr(), name_and_tag)
    }

    /// The storage dir (`STORAGE_PATH`) of this server.
    pub fn storage_path(&self) -> &Path {
        &self.storage
    }

    /// The server's own temp dir (holds `server.log`, and `storage/` unless overridden).
    /// Removed when the `Server` is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole server log so far (stdout and stderr, all starts).
    pub fn log(&self) -> String {
        fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
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

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends a request; panics (with the server log) if no HTTP response comes back.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.request_timeout(method, path, headers, HTTP_TIMEOUT)
    }

    /// Like [`Server::request`] with its own read timeout.
    pub fn request_timeout(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> HttpResponse {
        http_request(&self.addr(), method, path, headers, timeout)
            .unwrap_or_else(|e| self.fail(&format!("HTTP request to the server failed: {e}")))
    }

    /// Like [`Server::request`], but returns the error instead of panicking.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<HttpResponse, String> {
        http_request(&self.addr(), method, path, headers, timeout)
    }

    /// `GET path` without extra headers.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[])
    }

    /// `GET path`, and a panic (with the response and the server log) unless it is 200.
    pub fn get_ok(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let r = self.request("GET", path, headers);
        if r.status != 200 {
            self.fail(&format!("expected 200\n{}", r.describe()));
        }
        r
    }

    /// `GET /v2/NAME/manifests/REFERENCE` as a client accepting Docker schema 2 and OCI
    /// (two `Accept` lines, like skopeo); the response and the manifest JSON.
    pub fn manifest(&self, name: &str, reference: &str) -> (HttpResponse, serde_json::Value) {
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

    /// The value of metric `name` in `/metrics`, summed over label sets; `None` if absent.
    pub fn try_metric(&self, name: &str) -> Option<u64> {
        parse_metric(&self.metrics(), name)
    }

    /// The value of metric `name` (e.g. `nixery_image_builds_total`); panics with the
    /// metrics text and the server log if it is missing.
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.metrics();
        parse_metric(&text, name).unwrap_or_else(|| self.fail(&format!("metric {name} not found in /metrics:\n{text}")))
    }

    /// Runs a client command (at most [`COMMAND_TIMEOUT`]) and returns its stdout; on
    /// failure panics with the command, its output and the server log tail.
    pub fn run(&self, cmd: &mut Command) -> String {
        self.run_timeout(cmd, COMMAND_TIMEOUT)
    }

    /// Like [`Server::run`] with its own time limit.
    pub fn run_timeout(&self, cmd: &mut Command, timeout: Duration) -> String {
        match output_timeout(cmd, timeout) {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            Ok(out) => self.fail(&format!(
                "command failed\n{}",
                format_output(cmd, &out.status.to_string(), &out.stdout, &out.stderr)
            )),
            Err(msg) => self.fail(&format!("command failed\n{msg}")),
        }
    }

    /// Stops the server (SIGTERM, up to 10 s, then SIGKILL) and returns its exit status.
    /// The temp dir, log and storage stay until the `Server` is dropped.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let status = stop_child(&mut child, Duration::from_secs(10));
        let _ = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .and_then(|mut f| writeln!(f, "=== harness: server stopped: {status:?} ==="));
        status
    }

    /// Stops the server and starts it again on the same storage and environment. The port
    /// changes unless `PORT` was given.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sums the samples of metric `name` (with or without labels) in Prometheus text.
pub fn parse_metric(text: &str, name: &str) -> Option<u64> {
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

/// Whether process `pid` holds the LISTEN socket on 127.0.0.1:`port` (so a 200 on that
/// port really comes from our server and not from another test's).
fn owns_listening_port(pid: u32, port: u16) -> bool {
    let Ok(tcp) = fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let want = format!(":{port:04X}");
    let inodes: HashSet<String> = tcp
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
}

// ---------------------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------------------

/// A private containerd daemon: root, state, socket and log in its own temp dir, CRI plugin
/// disabled (see shared/CLIENTS.md). Stopped on drop, after its remaining tasks and
/// containers are killed and deleted and leftover mounts under its dir are detached.
pub struct Containerd {
    child: Option<Child>,
    dir: TempDir,
    socket: PathBuf,
    log_path: PathBuf,
}

/// The containerd config for a daemon living in `dir`.
pub fn containerd_config(dir: &Path) -> String {
    format!(
        "version = 2\n\
         root = \"{d}/root\"\n\
         state = \"{d}/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{d}/containerd.sock\"\n",
        d = dir.display()
    )
}

impl Containerd {
    /// Starts the daemon and waits (up to 30 s) until `ctr version` answers.
    pub fn start() -> Containerd {
        require_tool(&["containerd", "ctr", "runc"]);
        let dir = temp_dir("containerd");
        let config = dir.path().join("config.toml");
        fs::write(&config, containerd_config(dir.path())).expect("write containerd config");
        let socket = dir.path().join("containerd.sock");
        let log_path = dir.path().join("containerd.log");
        let log = File::create(&log_path).expect("create containerd log");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log));
        daemon_pre_exec(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(&cmd)));
        let mut c = Containerd { child: Some(child), dir, socket, log_path };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten()) {
                c.child = None;
                panic!(
                    "containerd exited with {status} while starting\n--- containerd log ---\n{}",
                    tail(&c.log(), LOG_TAIL_LINES)
                );
            }
            let answers = c.socket.exists()
                && output_timeout(c.ctr().arg("version"), Duration::from_secs(10))
                    .is_ok_and(|out| out.status.success());
            if answers {
                return c;
            }
            if Instant::now() >= deadline {
                panic!("containerd not ready after 30 s\n--- containerd log ---\n{}", tail(&c.log(), LOG_TAIL_LINES));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The socket path to give to `ctr --address`.
    pub fn address(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ctr --address SOCKET`, ready for more args.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket);
        cmd
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Runs `ctr --address SOCKET ARGS...` for at most `timeout`; its stdout, or `Err` with
    /// the command, its output and the containerd log tail (add the server log with
    /// [`Server::fail`]).
    pub fn try_ctr(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut cmd = self.ctr();
        cmd.args(args);
        let detail = match output_timeout(&mut cmd, timeout) {
            Ok(out) if out.status.success() => {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            Ok(out) => format_output(&cmd, &out.status.to_string(), &out.stdout, &out.stderr),
            Err(msg) => msg,
        };
        Err(format!(
            "ctr failed\n{detail}\n--- containerd log tail ({}) ---\n{}",
            self.log_path.display(),
            tail(&self.log(), 30)
        ))
    }

    /// Like [`Containerd::try_ctr`] with [`COMMAND_TIMEOUT`], panicking with the server log
    /// too on failure.
    pub fn ctr_ok(&self, server: &Server, args: &[&str]) -> String {
        self.try_ctr(args, COMMAND_TIMEOUT).unwrap_or_else(|e| server.fail(&e))
    }

    /// Kills and deletes every task and container in every namespace (best effort).
    pub fn clean_up_containers(&self) {
        let quick = Duration::from_secs(20);
        let lines = |cmd: &mut Command| -> Vec<String> {
            output_timeout(cmd, quick)
                .ok()
                .filter(|o| o.status.success())
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect()
                })
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

    /// Cleans up containers, stops the daemon and detaches mounts left under its dir.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                self.clean_up_containers();
            }
            stop_child(&mut child, Duration::from_secs(10));
        }
        unmount_under(self.dir.path());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lazily unmounts every mount point at or below `dir` (deepest first), so the temp dir can
/// be removed even if a container was left behind.
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

// ---------------------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------------------

/// containers.conf for podman on these machines (shared/CLIENTS.md): host network,
/// ulimits root can set here, cgroupfs, file events, runc, and file locks plus a private
/// tmp dir under `tmp_dir` so parallel podmans never share state.
pub fn podman_containers_conf(tmp_dir: &Path) -> String {
    format!(
        "[containers]\n\
         netns = \"host\"\n\
         default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         [engine]\n\
         cgroup_manager = \"cgroupfs\"\n\
         events_logger = \"file\"\n\
         runtime = \"runc\"\n\
         lock_type = \"file\"\n\
         tmp_dir = \"{}\"\n",
        tmp_dir.display()
    )
}

/// podman with private storage (vfs) and config in a temp dir.
pub struct Podman {
    dir: TempDir,
}

impl Podman {
    /// Writes the private containers.conf; nothing runs yet.
    pub fn new() -> Podman {
        require_tool(&["podman", "runc"]);
        let dir = temp_dir("podman");
        fs::write(dir.path().join("containers.conf"), podman_containers_conf(&dir.path().join("tmp")))
            .expect("write containers.conf");
        Podman { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The containers.conf to give as `CONTAINERS_CONF`.
    pub fn conf_path(&self) -> PathBuf {
        self.dir.path().join("containers.conf")
    }

    /// The global args: `--root DIR/root --runroot DIR/runroot --storage-driver vfs`.
    pub fn args(&self) -> Vec<String> {
        let d = self.dir.path();
        vec![
            "--root".into(),
            d.join("root").display().to_string(),
            "--runroot".into(),
            d.join("runroot").display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
        ]
    }

    /// `CONTAINERS_CONF=... podman <args()>`, ready for a subcommand.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.conf_path()).args(self.args());
        cmd
    }
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers left by a failed test (best effort; podman run --rm leaves none).
        let _ = output_timeout(self.cmd().args(["rm", "--all", "--force"]), Duration::from_secs(30));
        unmount_under(self.dir.path());
    }
}

// ---------------------------------------------------------------------------------------
// skopeo + umoci
// ---------------------------------------------------------------------------------------

/// An image copied with skopeo into an OCI layout and unpacked with umoci.
pub struct Unpacked {
    dir: TempDir,
    /// The OCI layout (`skopeo copy ... oci:LAYOUT:TAG`).
    pub layout: PathBuf,
    /// The umoci bundle; the image's filesystem is `bundle/rootfs`.
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
}

/// `skopeo copy --src-tls-verify=false [skopeo_args] docker://ADDR/NAME:TAG oci:LAYOUT:TAG`
/// then `umoci unpack --image LAYOUT:TAG BUNDLE`. `name_and_tag` is e.g.
/// `"shell/hello:latest"`; `skopeo_args` go before `copy`'s own, e.g.
/// `&["--override-arch", "arm64"]`. Failures panic with the server log.
pub fn pull_and_unpack(server: &Server, name_and_tag: &str, skopeo_args: &[&str]) -> Unpacked {
    require_tool(&["skopeo", "umoci"]);
    let tag = name_and_tag.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let dir = temp_dir("unpack");
    let layout = dir.path().join("layout");
    let bundle = dir.path().join("bundle");
    server.run(
        Command::new("skopeo")
            .args(skopeo_args)
            .arg("copy")
            .arg("--src-tls-verify=false")
            .arg(format!("docker://{}", server.image(name_and_tag)))
            .arg(format!("oci:{}:{tag}", layout.display())),
    );
    server.run(
        Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:{tag}", layout.display())).arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    if !rootfs.is_dir() {
        server.fail(&format!("umoci unpack produced no {}", rootfs.display()));
    }
    Unpacked { dir, layout, bundle, rootfs }
}

impl Unpacked {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `chroot ROOTFS /bin/sh -c SCRIPT` (at most 60 s); stdout, or a panic with the
    /// command's output, the top of the rootfs and the server log.
    pub fn sh(&self, server: &Server, script: &str) -> String {
        self.chroot(server, &["/bin/sh", "-c", script])
    }

    /// `chroot ROOTFS ARGS...` (at most 60 s); stdout, or a panic as for [`Unpacked::sh`].
    pub fn chroot(&self, server: &Server, args: &[&str]) -> String {
        // The host's chroot, resolved here: the child's PATH is the image's.
        let chroot = which("chroot").unwrap_or_else(|| PathBuf::from("/usr/sbin/chroot"));
        let mut cmd = Command::new(chroot);
        cmd.arg(&self.rootfs).args(args).env_clear().env("PATH", "/bin:/usr/bin");
        match output_timeout(&mut cmd, Duration::from_secs(60)) {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            Ok(out) => server.fail(&format!(
                "command in the unpacked image failed\n{}\n--- rootfs top level ---\n{}",
                format_output(&cmd, &out.status.to_string(), &out.stdout, &out.stderr),
                self.listing()
            )),
            Err(msg) => server.fail(&format!("command in the unpacked image failed\n{msg}")),
        }
    }

    /// `ls -l`-like listing of the rootfs top level and /bin, for messages.
    pub fn listing(&self) -> String {
        let mut s = String::new();
        for sub in ["", "bin"] {
            let d = self.rootfs.join(sub);
            let Ok(rd) = fs::read_dir(&d) else {
                let _ = writeln!(s, "{}: (cannot read)", d.display());
                continue;
            };
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| {
                    let p = e.path();
                    match fs::read_link(&p) {
                        Ok(t) => format!("{} -> {}", e.file_name().to_string_lossy(), t.display()),
                        Err(_) => e.file_name().to_string_lossy().into_owned(),
                    }
                })
                .collect();
            names.sort();
            let _ = writeln!(s, "/{sub}: {}", names.join(", "));
        }
        s
    }

    /// Resolves `path` (absolute, as seen inside the image) to a host path under the rootfs,
    /// following symlinks the way the image would (absolute targets are taken relative to
    /// the rootfs). `None` if something on the way does not exist.
    pub fn resolve(&self, path: &str) -> Option<PathBuf> {
        resolve_in(&self.rootfs, path)
    }
}

/// Resolves `path` as seen inside a root filesystem at `root` to a host path, following
/// symlinks relative to `root` (absolute targets included). `None` if a component on the
/// way does not exist.
pub fn resolve_in(root: &Path, path: &str) -> Option<PathBuf> {
    resolve_in_root(root, Path::new(path), 0)
}

fn resolve_in_root(root: &Path, path: &Path, depth: u32) -> Option<PathBuf> {
    if depth > 40 {
        return None;
    }
    let mut cur = PathBuf::from("/"); // path inside the image
    let mut comps: Vec<Component> = path.components().collect();
    comps.reverse();
    while let Some(c) = comps.pop() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(n) => {
                let next = cur.join(n);
                let host = root.join(next.strip_prefix("/").unwrap());
                let meta = fs::symlink_metadata(&host).ok()?;
                if meta.file_type().is_symlink() {
                    let target = fs::read_link(&host).ok()?;
                    let target_in_image = if target.is_absolute() { target } else { cur.join(target) };
                    let resolved = resolve_in_root(root, &target_in_image, depth + 1)?;
                    cur = PathBuf::from("/").join(resolved.strip_prefix(root).ok()?);
                } else {
                    cur = next;
                }
            }
        }
    }
    Some(root.join(cur.strip_prefix("/").unwrap()))
}
