//! What the integration tests share, one module per thing it drives:
//!
//! * [`process`]: commands run to completion under a time limit ([`run`]), failing with the
//!   command line, exit status, stdout and stderr; daemons that cannot outlive their test
//!   ([`process::Daemon`]).
//! * [`http`]: a small blocking client ([`http::send`]) whose [`Response`] keeps status,
//!   headers and body, for plain `#[test]`s and `#[tokio::test]`s alike.
//! * [`server`]: the real `nixery` binary on a free port with fresh storage ([`Server`]),
//!   whose every failure shows the server log's tail.
//! * [`containerd`], [`podman`], [`skopeo_umoci`], [`docker`]: the registry clients, each set
//!   up the way it works on these machines (shared/CLIENTS.md); [`docker`] runs a private
//!   Docker engine. [`client`] drives any of the four through one interface, for tables of
//!   cases (log in, pull and run; pull and read what the client printed). They pull from any
//!   [`registry::Registry`]: the [`Server`], or the container image's registry.
//! * [`nixery_image`]: the repository's Dockerfile built by a Docker engine whose data root
//!   is kept between runs (under [`nixery_image::cache_dir`]), from base images
//!   [`base_images`] makes with debootstrap; [`nixery_container`] runs that image.
//! * [`decompressors`]: layer blobs read back by Python's gzip and the `zstd` command.
//! * [`emulators`]: fake-gcs-server and moto's S3 server.
//! * [`credentials`]: htpasswd files written by `htpasswd -B`, `Authorization` values;
//!   [`token_service`]: a Docker token service (Python, PyJWT) standing in for an external one.
//! * [`shared_storage`]: one store (a directory or an emulator's bucket) several servers
//!   and `nixery gc` share, listed by its own means; a pull that checks every digest.
//! * [`package_repo`]: a git repository of the test package set with branches that differ,
//!   for channel and git sources.
//! * [`flake_repo`]: flakes in git repositories: a nixpkgs-like one wrapping the test package
//!   set, and a team's flake with it as its locked input and a package of its own.
//! * [`nginx`]: a real web server for files (popularity data, a binary cache).
//! * [`chromium`]: headless Chromium for the web pages: their DOM, and screenshots kept
//!   under `target/ui-screenshots/`.
//! * [`binary_cache`]: a signed Nix binary cache of salted test packages, served by nginx,
//!   whose paths are not in the local store until a server's Nix substitutes them.
//!
//! Rules every part keeps: nothing uses a fixed port or path (cargo-nextest runs every test
//! in a process of its own, in parallel); no process outlives its test; every panic says
//! what failed, and a panic about the server includes its log tail.
//!
//! ```ignore
//! #[test]
//! fn pulls() {
//!     let server = Server::start();
//!     let resp = server.get("/v2/shell/hello/manifests/latest");
//!     assert_eq!(resp.status, 200, "{}", server.context(&resp.describe()));
//!     assert_eq!(server.metric("nixery_image_builds_total"), 1);
//! }
//! ```

pub mod base_images;
pub mod binary_cache;
pub mod chromium;
pub mod client;
pub mod containerd;
pub mod credentials;
pub mod decompressors;
pub mod docker;
pub mod emulators;
pub mod flake_repo;
pub mod http;
pub mod nginx;
pub mod nixery_container;
pub mod nixery_image;
pub mod package_repo;
pub mod podman;
pub mod process;
pub mod registry;
pub mod server;
pub mod shared_storage;
pub mod skopeo_umoci;
pub mod token_service;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub use binary_cache::{BinaryCache, Trust};
pub use client::Client;
pub use containerd::Containerd;
pub use docker::Docker;
pub use flake_repo::TeamFlake;
pub use package_repo::PackageRepo;
pub use podman::Podman;
pub use process::{require_tool, run};
pub use registry::Registry;
pub use server::{
    DOCKER_LIST, DOCKER_MANIFEST_V2, INDEX_ACCEPT, Launch, NIX_WITHOUT_AARCH64, OCI_INDEX, OCI_MANIFEST_V1, Server,
    nixery_cli,
};
pub use skopeo_umoci::pull_and_unpack;

/// The test package set (tests/pkgs/default.nix), as servers and Nix commands are given it.
pub const TEST_PKGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pkgs/default.nix");

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
