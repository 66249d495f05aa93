//! nginx (Debian's), the real web server the tests put in front of files: a Nix binary cache
//! ([`super::binary_cache`]) and popularity data.
//!
//! Each [`Nginx`] is a private instance: its own configuration, access log, error log, pid
//! file and temp directories in a temp dir of its own, nothing under /etc/nginx or /var/log
//! touched, listening on a free 127.0.0.1 port. It runs in the foreground as one process
//! (`daemon off`, `master_process off`), so it is a [`Daemon`] like the others: stopped by its
//! PID, dead with the thread that started it, and running as the test's user (a master
//! started as root would hand requests to `nobody`, who cannot read a private temp dir).
//!
//! The access log has one line per request, `METHOD REQUEST-URI STATUS BYTES`, which
//! [`Nginx::requests`] parses: what the tests assert on (which narinfo files and NARs a
//! server's Nix fetched).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::process::{Daemon, NotReady, owns_listening_port, read_log, require_tool, tail, which};
use super::{free_port, temp_dir};

/// How long [`Nginx::serve`] waits for nginx to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a start is retried when another process took the free port first.
const START_ATTEMPTS: u32 = 4;

/// A private nginx serving one directory; stopped (by PID) when dropped.
pub struct Nginx {
    // Declared first, so it is stopped before its directory is removed.
    daemon: Option<Daemon>,
    port: u16,
    dir: TempDir,
}

/// One request, from the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path as the client sent it (with its query string, if any).
    pub path: String,
    pub status: u16,
}

/// nginx's configuration for an instance living in `dir`, serving `root` on `port`, with
/// `locations` (nginx `location` blocks) in its `server` block.
fn config(dir: &Path, root: &Path, port: u16, locations: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
pid "{d}/nginx.pid";
error_log "{d}/error.log" notice;
events {{ worker_connections 256; }}
http {{
  log_format tests '$request_method $request_uri $status $body_bytes_sent';
  access_log "{d}/access.log" tests;
  client_body_temp_path "{d}/tmp/body";
  proxy_temp_path "{d}/tmp/proxy";
  fastcgi_temp_path "{d}/tmp/fastcgi";
  uwsgi_temp_path "{d}/tmp/uwsgi";
  scgi_temp_path "{d}/tmp/scgi";
  default_type application/octet-stream;
  types {{
    application/json json;
    text/x-nix-narinfo narinfo;
  }}
  server {{
    listen 127.0.0.1:{port};
    root "{root}";
    autoindex off;
    {locations}
  }}
}}
"#,
        root = root.display()
    )
}

impl Nginx {
    /// Serves the files under `root` at `http://127.0.0.1:PORT/` (symlinks are followed).
    /// `root` must outlive the server. Panics with the error log if nginx does not start.
    pub fn serve(root: &Path) -> Nginx {
        Self::serve_with(root, "")
    }

    /// [`Nginx::serve`] with nginx `location` blocks of the test's own, e.g.
    /// `location /down/ { return 503; }` for a server that fails.
    pub fn serve_with(root: &Path, locations: &str) -> Nginx {
        require_tool(&["nginx"]);
        let dir = temp_dir("nginx");
        fs::create_dir_all(dir.path().join("tmp")).expect("create nginx temp dir");
        let mut nginx = Nginx { daemon: None, port: 0, dir };
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            nginx.port = free_port();
            match nginx.spawn(root, locations) {
                Ok(daemon) => {
                    nginx.daemon = Some(daemon);
                    return nginx;
                }
                Err((message, port_clash)) => {
                    last = message;
                    if !port_clash {
                        break;
                    }
                    eprintln!("harness: port {} was taken (attempt {attempt}), retrying nginx", nginx.port);
                }
            }
        }
        panic!("nginx did not start: {last}\n--- nginx error log ---\n{}", tail(&nginx.error_log(), 40));
    }

    /// Starts nginx on `self.port`; `Err((why, whether another port may help))`.
    fn spawn(&self, root: &Path, locations: &str) -> Result<Daemon, (String, bool)> {
        let conf = self.dir.path().join("nginx.conf");
        fs::write(&conf, config(self.dir.path(), root, self.port, locations)).expect("write nginx.conf");
        // `which`, because nginx lives in /usr/sbin, which is not on every PATH.
        let mut cmd = Command::new(which("nginx").expect("require_tool found nginx"));
        // -e: the log for errors before the configuration is read (default /var/log/nginx).
        cmd.arg("-p").arg(self.dir.path()).arg("-c").arg(&conf).arg("-e").arg(self.dir.path().join("error.log"));
        let mut daemon =
            Daemon::spawn(&mut cmd, &self.dir.path().join("nginx.out")).map_err(|message| (message, false))?;
        let (pid, port) = (daemon.pid(), self.port);
        let ready = daemon.wait_ready(READY_TIMEOUT, || {
            if owns_listening_port(pid, port) { Ok(()) } else { Err(format!("not listening on port {port} yet")) }
        });
        match ready {
            Ok(()) => Ok(daemon),
            Err(e @ NotReady::Exited(_)) => {
                let clash = self.error_log().contains("Address already in use");
                Err((format!("nginx (pid {pid}) {e}"), clash))
            }
            Err(e @ NotReady::TimedOut { .. }) => {
                daemon.kill();
                Err((format!("nginx (pid {pid}) {e}; it was killed"), false))
            }
        }
    }

    /// `http://127.0.0.1:PORT` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far, in the order nginx finished them.
    pub fn requests(&self) -> Vec<Request> {
        self.access_log()
            .lines()
            .filter_map(|line| {
                let mut f = line.split(' ');
                let (method, path, status) = (f.next()?, f.next()?, f.next()?.parse().ok()?);
                Some(Request { method: method.to_owned(), path: path.to_owned(), status })
            })
            .collect()
    }

    /// The access log (`METHOD REQUEST-URI STATUS BYTES` per line), for messages.
    pub fn access_log(&self) -> String {
        read_log(&self.dir.path().join("access.log"))
    }

    /// The error log (a 404 is logged there too, as a failed `open()`).
    pub fn error_log(&self) -> String {
        read_log(&self.dir.path().join("error.log"))
    }
}
