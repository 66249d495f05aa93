//! The repository's container image, built from its Dockerfile by a Docker engine whose data
//! root outlives the test, so that a second run reuses what the first one made.
//!
//! Building the image from nothing takes most of a quarter of an hour on two cores: the base
//! images (debootstrap, then the Rust toolchain copied in: super::base_images) and the
//! release build of every dependency. So the engine ([`ImageEngine`]) keeps its data root in
//! a cache directory outside the checkout, [`cache_dir`] (`/var/cache/nixery-tests` unless
//! `NIXERY_TEST_CACHE_DIR` says otherwise): CI runs on the same machine from fresh clones and
//! finds there the base images and Docker's build cache, whose dependency layer (the
//! Dockerfile builds Cargo.toml and Cargo.lock with stub sources first) is reused as long as
//! they do not change. A source change then costs the crate's own release build.
//!
//! One engine at a time may use the data root: [`ImageEngine::start`] takes an exclusive
//! lock (`flock`) on the cache directory first, waiting for another test run that holds it.
//! Containers, volumes and pulled images an earlier run left are removed at start, and after
//! each build the images that no tag names any more (the previous build's), so the cache
//! holds one build.
//!
//! The build uses Docker's classic builder (`DOCKER_BUILDKIT=0`: Debian's docker.io has no
//! buildx) with `--network host`, the only network an engine without a bridge offers, for
//! apt and crates.io.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::base_images;
use super::docker::Docker;

/// The tag the test builds the image under.
pub const IMAGE: &str = "nixery-rs:test";
/// The tag of the Dockerfile's `build` stage, so that removing untagged images keeps the
/// build cache (the classic builder's cache is the chain of the stage's images).
const BUILD_STAGE_IMAGE: &str = "nixery-rs:test-build-stage";
/// The Dockerfile's build stage.
const BUILD_STAGE: &str = "build";
/// Longest a `docker build` may take. Cold, every dependency is compiled in release mode:
/// 37 minutes on two cores at load 14 (other work compiling alongside). A build cut short
/// keeps nothing of its step (the classic builder commits a layer only when its step
/// ends), so the limit is generous rather than tight: the next run would start over.
const BUILD_TIMEOUT: Duration = Duration::from_secs(55 * 60);

/// The directory this machine keeps test caches in: `NIXERY_TEST_CACHE_DIR`, else
/// `/var/cache/nixery-tests`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("NIXERY_TEST_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/var/cache/nixery-tests"), PathBuf::from)
}

/// An exclusive `flock` on a file, released when dropped (the file is closed).
struct Lock {
    _file: File,
}

impl Lock {
    /// Waits for the lock on `path` (created if need be), saying so when another holds it.
    fn acquire(path: &Path) -> Lock {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open the lock file {}: {e}", path.display()));
        let fd = file.as_raw_fd();
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!("waiting for {}: another test run is using the image cache", path.display());
            // SAFETY: as above; blocks until the other holder closes its file.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                panic!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error());
            }
        }
        Lock { _file: file }
    }
}

/// A Docker engine on the cached data root, the only one while it lives.
pub struct ImageEngine {
    // Declared first: the engine stops before the lock is released.
    docker: Docker,
    dir: PathBuf,
    _lock: Lock,
}

/// What [`ImageEngine::build`] made.
pub struct BuiltImage {
    /// Its tag ([`IMAGE`]).
    pub tag: &'static str,
    /// Its size as `docker image inspect` reports it (the layers, uncompressed).
    pub size: u64,
}

impl ImageEngine {
    /// Locks the cache, starts the engine on its data root and removes what an earlier run
    /// left running.
    pub fn start() -> ImageEngine {
        let dir = cache_dir().join("docker-image");
        fs::create_dir_all(&dir).unwrap_or_else(|e| {
            panic!("cannot create the test cache {} (set NIXERY_TEST_CACHE_DIR): {e}", dir.display())
        });
        let lock = Lock::acquire(&dir.join("lock"));
        let docker = Docker::start_with_data_root(&dir.join("docker"));
        let leftovers = docker.output(&["ps", "--all", "--quiet"]);
        let ids: Vec<String> =
            String::from_utf8_lossy(&leftovers.stdout).split_whitespace().map(str::to_owned).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker.output(&args);
        }
        let _ = docker.output(&["volume", "prune", "--force"]);
        // Images pulled from the registries of earlier runs (`127.0.0.1:PORT/NAME`).
        let listed = docker.output(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
        let pulled: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|r| r.starts_with("127.0.0.1:"))
            .map(str::to_owned)
            .collect();
        if !pulled.is_empty() {
            let mut args = vec!["image", "rm", "--force"];
            args.extend(pulled.iter().map(String::as_str));
            let _ = docker.output(&args);
        }
        ImageEngine { docker, dir, _lock: lock }
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Builds the repository's Dockerfile (making its base images first if need be) as
    /// [`IMAGE`], then removes the images no tag names any more. Panics with the build's
    /// output if it fails.
    pub fn build(&self) -> BuiltImage {
        let context = Path::new(env!("CARGO_MANIFEST_DIR"));
        let scratch = self.dir.join("scratch");
        base_images::ensure(&self.docker, &context.join("Dockerfile"), &scratch);
        let started = Instant::now();
        for (tag, target) in [(BUILD_STAGE_IMAGE, Some(BUILD_STAGE)), (IMAGE, None)] {
            let mut args = vec!["build", "--network", "host", "--tag", tag];
            if let Some(target) = target {
                args.extend(["--target", target]);
            }
            let context = context.to_string_lossy();
            args.push(&context);
            let mut cmd = self.docker.cmd();
            cmd.env("DOCKER_BUILDKIT", "0").args(&args);
            if let Err(e) = super::process::run_checked(&mut cmd, BUILD_TIMEOUT) {
                panic!(
                    "docker build failed\n{e}\n--- dockerd log ---\n{}",
                    super::process::tail(&self.docker.log(), 30)
                );
            }
        }
        eprintln!("docker build of {IMAGE} took {:.1?}", started.elapsed());
        let _ = self.docker.output(&["image", "prune", "--force"]);
        let size = self
            .docker
            .try_docker(&["image", "inspect", "--format", "{{.Size}}", IMAGE], Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("docker image inspect printed no size: {e}"));
        BuiltImage { tag: IMAGE, size }
    }
}
