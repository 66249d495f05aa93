//! One store that several servers share (replicas) and `nixery gc` runs against: a
//! directory, fake-gcs-server or moto ([`super::emulators`]); what it holds is listed by the
//! store's own means, not through nixery. And a pull that checks what it gets.

use super::emulators::{Emulator, Kind};
use super::process::output_timeout;
use super::server::{DOCKER_MANIFEST_V2, OCI_MANIFEST_V1};
use super::{Server, http, nixery_cli, sha256_digest, temp_dir};
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

/// Which store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Filesystem,
    Gcs,
    S3,
}

/// A store shared by servers.
pub struct SharedStore {
    dir: TempDir,
    emulator: Option<Emulator>,
}

/// What `nixery gc` printed.
pub struct GcRun {
    /// One line per object deleted (or, in a dry run, that would be): key and size.
    pub listed: Vec<String>,
    /// The summary.
    pub summary: String,
}

impl SharedStore {
    pub fn start(kind: StoreKind) -> SharedStore {
        let emulator = match kind {
            StoreKind::Filesystem => None,
            StoreKind::Gcs => Some(Emulator::start(Kind::Gcs)),
            StoreKind::S3 => Some(Emulator::start(Kind::S3)),
        };
        SharedStore { dir: temp_dir("shared-storage"), emulator }
    }

    /// The filesystem store's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The environment that points a server or `nixery gc` at this store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match &self.emulator {
            Some(emulator) => emulator.server_env(),
            None => vec![("STORAGE_PATH", self.dir.path().display().to_string())],
        }
    }

    /// A server on this store, with `extra` environment.
    pub fn server(&self, extra: &[(&str, &str)]) -> Server {
        let env = self.env();
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        Server::start_with(&all)
    }

    /// The keys under `prefix` (e.g. `layers/`), sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = match &self.emulator {
            Some(emulator) => {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(emulator.list(prefix))
            }
            None => {
                let mut keys = Vec::new();
                for dir in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
                    for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
                        let key =
                            format!("{}/{}", dir.file_name().to_string_lossy(), file.file_name().to_string_lossy());
                        keys.extend(key.starts_with(prefix).then_some(key));
                    }
                }
                keys
            }
        };
        keys.sort();
        keys
    }

    /// Whether the store holds `key`.
    pub fn has(&self, key: &str) -> bool {
        self.keys(key).iter().any(|k| k == key)
    }

    /// Runs `nixery gc` (with `--dry-run` if asked) against this store with `extra`
    /// environment; panics unless it succeeds.
    pub fn gc(&self, extra: &[(&str, &str)], dry_run: bool) -> GcRun {
        let mut cmd = nixery_cli();
        cmd.arg("gc").envs(self.env()).envs(extra.iter().copied());
        if dry_run {
            cmd.arg("--dry-run");
        }
        let out = output_timeout(&mut cmd, Duration::from_secs(300)).unwrap_or_else(|e| panic!("nixery gc: {e}"));
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "nixery gc failed ({}):\n{stdout}\n{stderr}", out.status);
        GcRun { listed: stdout.lines().map(str::to_owned).collect(), summary: stderr.trim().to_owned() }
    }
}

/// Pulls NAME:REFERENCE as a client does: the manifest, then its config and every layer
/// (following a redirect into the store), each checked against its digest. The
/// manifest's digest, or what went wrong.
pub fn pull_checked(server: &Server, name: &str, reference: &str) -> Result<String, String> {
    let path = format!("/v2/{name}/manifests/{reference}");
    let accept = [("Accept", DOCKER_MANIFEST_V2), ("Accept", OCI_MANIFEST_V1)];
    let r = http::send("GET", &server.url(&path), &accept, http::TIMEOUT)?;
    if r.status != 200 {
        return Err(format!("GET {path}: {}", r.describe()));
    }
    let digest = r.header("Docker-Content-Digest").ok_or("no Docker-Content-Digest")?.to_owned();
    if sha256_digest(&r.body) != digest {
        return Err(format!("the manifest of {name}:{reference} is not {digest}"));
    }
    let manifest = r.json();
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let blobs = std::iter::once(&manifest["config"]).chain(&layers);
    for blob in blobs {
        let d = blob["digest"].as_str().ok_or("a descriptor without a digest")?;
        let path = format!("/v2/{name}/blobs/{d}");
        let mut r = http::send("GET", &server.url(&path), &[], http::TIMEOUT)?;
        if r.status == 307 {
            r = http::send("GET", r.header("Location").ok_or("a redirect without Location")?, &[], http::TIMEOUT)?;
        }
        if r.status != 200 {
            return Err(format!("GET {path}: {}", r.describe()));
        }
        if sha256_digest(&r.body) != d {
            return Err(format!("blob {d} of {name}:{reference} has other bytes"));
        }
    }
    Ok(digest)
}
