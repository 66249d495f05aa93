//! The container image (issue 18): the repository's Dockerfile built by the Docker engine
//! from base images made here (harness/base_images.rs, harness/nixery_image.rs), and the
//! container run the ways operators run it: as its non-root user on a read-only root with
//! an empty `/nix` volume (a Kubernetes emptyDir), on a Docker named volume, stopped with
//! `docker stop` in the middle of a build with Docker's and Kubernetes' grace periods, and
//! with a Nix whose builder was orphaned.
//!
//! These tests share one Docker data root, kept between runs (the base images and the
//! dependency layer of the build), and take turns on it: nextest runs them in a test group
//! of their own with a longer timeout (.config/nextest.toml). A cold first build takes most
//! of a quarter of an hour.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use regex::Regex;

use crate::harness::docker::Docker;
use crate::harness::nixery_container::NixeryContainer;
use crate::harness::nixery_image::ImageEngine;
use crate::harness::process::{children, command_name, parent_pid, processes_mentioning, wait_until};
use crate::harness::{Registry, nonce, pull_and_unpack, temp_dir};

/// The user the image runs as (Dockerfile `USER`), which deploy/nixery.yaml must name too.
const IMAGE_USER: u32 = 10001;
/// Docker's default grace between SIGTERM and SIGKILL for `docker stop`.
const DOCKER_STOP_GRACE: Duration = Duration::from_secs(10);

/// What deploy/nixery.yaml says about the pod's user and its shutdown.
struct Deploy {
    run_as_user: u32,
    run_as_group: u32,
    fs_group: u32,
    grace_seconds: u32,
    pre_stop_seconds: u32,
    shutdown_timeout: u32,
}

impl Deploy {
    fn read() -> Deploy {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nixery.yaml");
        let yaml = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let number = |pattern: &str| -> u32 {
            let re = Regex::new(pattern).expect("a valid pattern");
            let captures = re.captures(&yaml).unwrap_or_else(|| panic!("{path} has no match for {pattern}"));
            captures[1].parse().expect("digits")
        };
        Deploy {
            run_as_user: number(r"(?m)^\s+runAsUser: (\d+)"),
            run_as_group: number(r"(?m)^\s+runAsGroup: (\d+)"),
            fs_group: number(r"(?m)^\s+fsGroup: (\d+)"),
            grace_seconds: number(r"(?m)^\s+terminationGracePeriodSeconds: (\d+)"),
            pre_stop_seconds: number(r"preStop:\s+sleep:\s+seconds: (\d+)"),
            shutdown_timeout: number(r#"name: NIXERY_SHUTDOWN_TIMEOUT\s+value: "(\d+)""#),
        }
    }
}

/// A directory as Kubernetes makes an emptyDir: empty, mode 0777.
fn empty_dir(what: &str) -> tempfile::TempDir {
    let dir = temp_dir(what);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    dir
}

/// `--volume HOST:CONTAINER`'s argument.
fn bind(host: &Path, container: &str) -> String {
    format!("{}:{container}", host.display())
}

/// Starts `GET path` on a connection of its own and returns it (the answer is not read).
fn send_request(registry: &impl Registry, path: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut conn = std::net::TcpStream::connect(registry.addr())
        .unwrap_or_else(|e| registry.fail(&format!("cannot connect to the registry: {e}")));
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", registry.addr()).expect("sending a request");
    conn
}

/// The PID of the test package set's `slow` builder of nonce `n`, once it runs.
fn slow_builder(registry: &impl Registry, n: &str) -> u32 {
    let script = format!("slow build {n} starting");
    let mut found = Vec::new();
    if !wait_until(Duration::from_secs(120), || {
        found = processes_mentioning(&script);
        !found.is_empty()
    }) {
        registry.fail("the slow builder never started");
    }
    found[0]
}

/// The real uid and gid of process `pid`.
fn ids(pid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let first = |field: &str| -> u32 {
        let line = status.lines().find_map(|l| l.strip_prefix(field)).expect("the field");
        line.split_whitespace().next().and_then(|v| v.parse().ok()).expect("a number")
    };
    (first("Uid:"), first("Gid:"))
}

/// The server image as it runs on Kubernetes with deploy/nixery.yaml: its own user, a
/// read-only root, and empty, writable directories for `/nix` (an emptyDir: no store, no
/// database; Nix must make them itself and not fall back to a chroot store under `$HOME`),
/// `$HOME` and the registry's storage, and a tmpfs for `/tmp`. docker pulls and runs an image from it, and
/// skopeo copies one that umoci unpacks.
#[test]
fn serves_pulls_as_its_user_on_a_read_only_root_with_an_empty_nix_volume() {
    let engine = ImageEngine::start();
    let image = engine.build();
    eprintln!("image {}: {} bytes ({:.1} MB)", image.tag, image.size, image.size as f64 / 1e6);
    let docker = engine.docker();
    let nix = empty_dir("nix-volume");
    let home = empty_dir("home-volume");
    let storage = empty_dir("storage-volume");
    let container = NixeryContainer::start(
        docker,
        image.tag,
        &[
            "--read-only",
            "--tmpfs",
            "/tmp:exec",
            "--volume",
            &bind(home.path(), "/home/nixery"),
            "--volume",
            &bind(nix.path(), "/nix"),
            "--volume",
            &bind(storage.path(), "/var/lib/nixery"),
        ],
        &[],
    );
    let init = container.init_pid();
    assert_eq!(command_name(init).as_deref(), Some("tini"), "{}", container.context("PID 1 is not tini"));
    let server = container.server_pid().unwrap_or_else(|| container.fail("no nixery process in the container"));
    assert_eq!(ids(server), (IMAGE_USER, IMAGE_USER), "{}", container.context("the server's uid and gid"));

    let hello = container.image("shell/hello:latest");
    docker.pull(&container, &hello);
    let said = docker.run(&container, &hello, &["hello"]);
    assert_eq!(said.trim(), "Hello, world!", "{}", container.context("docker run of shell/hello"));
    let unpacked = pull_and_unpack(&container, "hello-lib:latest", &[]);
    let said = unpacked.chroot(&container, &["/bin/hello-lib"]);
    assert_eq!(said.trim(), "greetings from the nix store", "{}", container.context("hello-lib unpacked by umoci"));

    // Nix made its store and database in the empty volume, as the image's user.
    let db = nix.path().join("var/nix/db/db.sqlite");
    let owner = std::fs::metadata(&db).map(|m| (m.uid(), m.gid()));
    assert_eq!(owner.ok(), Some((IMAGE_USER, IMAGE_USER)), "{}", container.context("the Nix database in the volume"));
    let store: Vec<String> = std::fs::read_dir(nix.path().join("store"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(
        store.iter().any(|p| p.ends_with("-hello-lib")) && store.iter().any(|p| p.ends_with("-hello")),
        "{}",
        container.context(&format!("the volume's store holds {store:?}"))
    );
    assert!(
        std::fs::read_dir(storage.path().join("layers")).is_ok_and(|mut d| d.next().is_some()),
        "{}",
        container.context("no layer in the storage volume")
    );
}

/// `docker stop` in the middle of a build of `slow` (a build of two minutes) in
/// `container`, whose server was started with `NIXERY_TEST_NONCE=n`: SIGTERM, at most
/// `seconds` (Docker's default 10 without) before SIGKILL. The container must exit by
/// itself within that grace with status 0 (137 is SIGKILL), having stopped its Nix
/// processes, and none of them may outlive it.
fn stop_during_a_build(docker: &Docker, container: &NixeryContainer, n: &str, seconds: Option<u32>) {
    let grace = seconds.map_or(DOCKER_STOP_GRACE, |s| Duration::from_secs(s.into()));
    let _request = send_request(container, "/v2/slow/manifests/latest");
    slow_builder(container, n);
    let dockerd_log = docker.log().len();

    let took = container.stop(seconds);
    let state = container.state();
    let logs = container.logs();
    let forced = docker.log().get(dockerd_log..).unwrap_or_default().contains("using the force");
    eprintln!(
        "docker stop{} took {took:.2?}: exit code {}",
        seconds.map_or(String::new(), |s| format!(" -t {s}")),
        state.exit_code
    );
    let context = |what: &str| container.context(&format!("{what} (docker stop took {took:?}, state {state:?})"));
    assert!(!state.running, "{}", context("the container still runs"));
    assert!(!forced, "{}", context("dockerd had to SIGKILL the container"));
    assert_eq!((state.exit_code, state.oom_killed), (0, false), "{}", context("the container's exit"));
    assert!(took < grace, "{}", context(&format!("stopping took longer than the grace of {grace:?}")));
    assert!(
        logs.contains("stopping abandoned nix process group") || logs.contains("stopping nix processes"),
        "{}",
        context("the server did not stop the build")
    );
    assert!(
        logs.contains(": stopped") && !logs.contains("not reaped"),
        "{}",
        context("the server did not stop cleanly")
    );
    assert!(
        wait_until(Duration::from_secs(2), || processes_mentioning(n).is_empty()),
        "{}",
        context(&format!("processes of the build outlived the container: {:?}", processes_mentioning(n)))
    );
}

/// `docker stop` during a build, twice on one Docker named volume at `/nix` (a copy of the
/// image's `/nix`, ownership included): with the image's defaults and Docker's 10 s, then
/// with deploy/nixery.yaml's `NIXERY_SHUTDOWN_TIMEOUT` and the grace its pod gets after
/// the preStop pause. The second container first builds an image on the store the first
/// one was stopped in. deploy/nixery.yaml must agree with the image: its user, and a
/// shutdown timeout that fits in its grace period.
#[test]
fn docker_stop_during_a_build_exits_cleanly_within_dockers_and_kubernetes_grace() {
    let deploy = Deploy::read();
    let engine = ImageEngine::start();
    let image = engine.build();
    let docker = engine.docker();
    let user = docker
        .try_docker(&["image", "inspect", "--format", "{{.Config.User}}", image.tag], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(user.trim(), format!("{IMAGE_USER}:{IMAGE_USER}"), "the image's USER");
    assert_eq!(
        (deploy.run_as_user, deploy.run_as_group, deploy.fs_group),
        (IMAGE_USER, IMAGE_USER, IMAGE_USER),
        "deploy/nixery.yaml's runAsUser, runAsGroup and fsGroup must be the image's user"
    );
    assert!(
        deploy.pre_stop_seconds + deploy.shutdown_timeout < deploy.grace_seconds,
        "deploy/nixery.yaml: preStop ({} s) + NIXERY_SHUTDOWN_TIMEOUT ({} s) must fit in \
         terminationGracePeriodSeconds ({} s)",
        deploy.pre_stop_seconds,
        deploy.shutdown_timeout,
        deploy.grace_seconds
    );

    let volume = Volume { docker, name: format!("nixery-test-nix-{}", nonce()) };
    let mount = format!("{}:/nix", volume.name);
    let n = nonce();
    let container = NixeryContainer::start(docker, image.tag, &["--volume", &mount], &[("NIXERY_TEST_NONCE", &n)]);
    stop_during_a_build(docker, &container, &n, None);
    drop(container);

    let n = nonce();
    let timeout = deploy.shutdown_timeout.to_string();
    let container = NixeryContainer::start(
        docker,
        image.tag,
        &["--volume", &mount],
        &[("NIXERY_TEST_NONCE", &n), ("NIXERY_SHUTDOWN_TIMEOUT", &timeout)],
    );
    let hello = container.image("hello:latest");
    docker.pull(&container, &hello);
    stop_during_a_build(docker, &container, &n, Some(deploy.grace_seconds - deploy.pre_stop_seconds));
    drop(container);
}

/// A named volume of the test, removed when the test ends however it ends: the engine's data
/// root is kept between runs, and each left-over volume would keep a copy of a `/nix`.
struct Volume<'a> {
    docker: &'a Docker,
    name: String,
}

impl Drop for Volume<'_> {
    fn drop(&mut self) {
        // Not `output`, which panics on failure: a panic while a failed test unwinds aborts.
        let _ = self.docker.try_docker(&["volume", "rm", "-f", &self.name], Duration::from_secs(60));
    }
}

/// A Nix killed with SIGKILL (as the server does when Nix ignores SIGTERM) orphans its
/// builder's processes: they run in a session of their own and are re-parented to the
/// container's PID 1. The image's PID 1 (tini) reaps them when they end; under the server
/// as PID 1 they would stay zombies.
#[test]
fn orphaned_builder_processes_are_reaped_by_pid_1() {
    let engine = ImageEngine::start();
    let image = engine.build();
    let n = nonce();
    let container = NixeryContainer::start(engine.docker(), image.tag, &[], &[("NIXERY_TEST_NONCE", &n)]);
    let init = container.init_pid();
    let _request = send_request(&container, "/v2/slow/manifests/latest");
    let builder = slow_builder(&container, &n);
    let nix = parent_pid(builder).unwrap_or_else(|| container.fail("the builder has no parent"));
    assert_eq!(command_name(nix).as_deref(), Some("nix-store"), "{}", container.context("the builder's parent"));
    let orphans: Vec<u32> = std::iter::once(builder).chain(children(builder)).collect();

    // SAFETY: kill(2) of a process of this test's container.
    unsafe { libc::kill(nix as libc::pid_t, libc::SIGKILL) };
    let parents = || orphans.iter().map(|&p| parent_pid(p)).collect::<Vec<_>>();
    assert!(
        wait_until(Duration::from_secs(10), || parents().iter().all(|p| p.is_none() || *p == Some(init))),
        "{}",
        container
            .context(&format!("the builder's processes {orphans:?} have parents {:?}, not PID 1 ({init})", parents()))
    );
    for &pid in &orphans {
        // SAFETY: as above.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    // A zombie keeps its /proc entry until its parent waits for it.
    let left = || orphans.iter().copied().filter(|p| Path::new(&format!("/proc/{p}")).exists()).collect::<Vec<_>>();
    assert!(
        wait_until(Duration::from_secs(5), || left().is_empty()),
        "{}",
        container.context(&format!("processes left unreaped under PID 1: {:?}", left()))
    );
    assert!(container.state().running, "{}", container.context("the container stopped"));
}
