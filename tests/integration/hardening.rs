//! Hardening (issue 11): what a shared volume, a flood of slow clients, a SIGTERM, a crash
//! and an orchestrator's probes do to the real server. Each test names the defect of the
//! issue it covers; each failed against the server as it was before the fix.

use crate::harness::http;
use crate::harness::process::{processes_mentioning, require_tool, wait_until};
use crate::harness::{Launch, Server, nonce, sha256_hex, temp_dir};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn connect(server: &Server) -> TcpStream {
    let addr: SocketAddr = server.addr().parse().expect("an address");
    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| server.fail(&format!("cannot connect to the server: {e}")))
}

/// Starts `GET path` on a connection of its own and returns it (the answer is not read).
fn send_request(server: &Server, path: &str) -> TcpStream {
    let mut conn = connect(server);
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr()).expect("sending a request");
    conn
}

/// Waits until the test package set's `slow` builder of nonce `n` runs.
fn wait_for_slow_builder(server: &Server, n: &str) {
    let builder = format!("slow build {n} starting");
    if !wait_until(Duration::from_secs(60), || !processes_mentioning(&builder).is_empty()) {
        server.fail("the slow builder never started");
    }
}

/// The PID the server has inside its own PID namespace, when run by `unshare --fork`
/// (the last `NSpid` of the wrapper's child).
fn pid_in_namespace(server: &Server) -> Option<u32> {
    let wrapper = server.pid().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        (field("PPid:")? == wrapper).then(|| field("NSpid:")?.split_whitespace().last()?.parse().ok())?
    })
}

/// Files directly in `dir`, with their sizes.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| Some((e.path(), e.metadata().ok().filter(|m| m.is_file())?.len())))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Defect 1 (shared filesystem storage corrupts blobs): two servers on one `STORAGE_PATH`,
/// each PID 1 of its own PID namespace as in containers, build different large images at
/// once. Before the fix the second server's start-up deleted the first one's in-progress
/// staging file (its build failed) and staging names built from the PID were shared by two
/// PID-1 servers. Now the in-progress file survives, both builds succeed, and every blob
/// under `layers/` hashes to its name.
#[test]
fn two_servers_in_their_own_pid_namespaces_share_one_storage_directory() {
    require_tool(&["unshare"]);
    // As a container runtime does: a PID namespace with its own /proc (Nix's sandbox reads it).
    let wrapper = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"];
    let first = Server::launch_with(Launch { env: &[("NIXERY_BIG_MIB", "96")], wrapper: &wrapper, storage: None });
    assert_eq!(pid_in_namespace(&first), Some(1), "{}", first.context("the first server is not PID 1"));
    let storage = first.storage().to_owned();

    let url = first.url("/v2/big/manifests/latest");
    let first_build = std::thread::spawn(move || http::send("GET", &url, &[], http::TIMEOUT));
    // A layer of the first image being written: a staging file of more than 4 MiB.
    let mut in_progress = None;
    wait_until(Duration::from_secs(120), || {
        in_progress = files(&storage.join("staging")).into_iter().find(|(_, len)| *len > 4 << 20);
        in_progress.is_some() || first_build.is_finished()
    });
    let Some((staged, _)) = in_progress else {
        let answer = first_build.join().expect("the request thread").map(|r| r.describe());
        first.fail(&format!("no large staging file appeared; the build answered {answer:?}"))
    };
    let staged_inode = inode(&staged).expect("the staging file is there");

    let second =
        Server::launch_with(Launch { env: &[("NIXERY_BIG_MIB", "80")], wrapper: &wrapper, storage: Some(&storage) });
    assert_eq!(pid_in_namespace(&second), Some(1), "{}", second.context("the second server is not PID 1"));
    // Either still being written, or committed under layers/ (the same file, renamed).
    let layers = storage.join("layers");
    let survived = staged.exists() || files(&layers).iter().any(|(path, _)| inode(path) == Some(staged_inode));
    assert!(survived, "{}", second.context("the second server's start-up deleted the first one's staging file"));

    let url = second.url("/v2/big/manifests/latest");
    let second_build = std::thread::spawn(move || http::send("GET", &url, &[], http::TIMEOUT));
    let mut manifests = Vec::new();
    for (server, build) in [(&first, first_build), (&second, second_build)] {
        let r = build.join().expect("the request thread").unwrap_or_else(|e| server.fail(&e));
        assert_eq!(r.status, 200, "{}", server.context(&r.describe()));
        manifests.push(r.json());
    }
    let big_layer = |m: &serde_json::Value| {
        m["layers"].as_array().expect("layers").iter().max_by_key(|l| l["size"].as_u64()).expect("a layer")["digest"]
            .clone()
    };
    assert_ne!(big_layer(&manifests[0]), big_layer(&manifests[1]), "the two images should differ");

    for (path, _) in files(&layers) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).expect("reading a blob");
        assert_eq!(name, format!("sha256:{}", sha256_hex(&bytes)), "a blob does not hash to its name");
    }
    for m in &manifests {
        for layer in m["layers"].as_array().unwrap() {
            let digest = layer["digest"].as_str().unwrap();
            assert!(layers.join(digest).is_file(), "layer {digest} of a manifest is missing");
        }
    }
    assert_eq!(files(&storage.join("staging")), [], "uploads left in staging/");
}

/// The `nixery-nix-*` directories (Nix expressions of a server) in `dir`.
fn expression_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().contains("nixery-nix-")).collect())
        .unwrap_or_default();
    found.sort();
    found
}

/// Defect 3 (orphans): after `kill -9` of the server, `nix-store` and its builder kept
/// running, and every crash left a `nixery-nix-*` directory behind. Now Nix dies with the
/// server, and the next start removes what the dead one left.
#[test]
fn a_crashed_servers_nix_processes_die_and_a_restart_clears_its_leftovers() {
    let n = nonce();
    let tmp = temp_dir("tmpdir");
    let tmpdir = tmp.path().to_string_lossy().into_owned();
    let mut server = Server::start_with(&[("NIXERY_TEST_NONCE", &n), ("TMPDIR", &tmpdir)]);
    let before = expression_dirs(tmp.path());
    assert_eq!(before.len(), 1, "{}", server.context(&format!("expression directories: {before:?}")));
    let _build = send_request(&server, "/v2/slow/manifests/latest");
    wait_for_slow_builder(&server, &n);

    server.crash();
    assert!(
        wait_until(Duration::from_secs(10), || processes_mentioning(&n).is_empty()),
        "{}",
        server.context(&format!("Nix processes outlived the killed server: {:?}", processes_mentioning(&n)))
    );
    server.start_again();
    let after = expression_dirs(tmp.path());
    assert!(
        after.len() == 1 && after[0] != before[0],
        "{}",
        server.context(&format!("expression directories after a restart: {after:?} (the dead server's: {before:?})"))
    );
    assert_eq!(files(&server.storage().join("staging")), [], "uploads left in staging/");
}
