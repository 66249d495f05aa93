//! The registry API against the real binary, real Nix and the test package set: what a client
//! sees for good and bad requests, determinism across builds and servers, single-flight,
//! build caching, timeouts and cancellation, and the package-name rules.

use crate::harness::http::{self, Response};
use crate::harness::process::{processes_mentioning, wait_until, zombie_children};
use crate::harness::{DOCKER_MANIFEST_V2, OCI_MANIFEST_V1, Server, nonce, pull_and_unpack, sha256_digest, temp_dir};
use flate2::read::MultiGzDecoder;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const MANIFEST: &str = "/v2/shell/hello/manifests/latest";

/// The manifest of `name` (Docker format), its digest header and parsed JSON.
fn manifest(server: &Server, name: &str) -> (String, serde_json::Value, Vec<u8>) {
    let r = server.get_ok(&format!("/v2/{name}/manifests/latest"), &[]);
    let digest = r.expect_header("Docker-Content-Digest").to_owned();
    assert_eq!(digest, sha256_digest(&r.body), "{}", server.context("digest header does not match the body"));
    (digest, r.json(), r.body)
}

fn error_code(r: &Response) -> String {
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{}", r.describe());
    r.json()["errors"][0]["code"].as_str().unwrap_or_else(|| panic!("no error code\n{}", r.describe())).to_owned()
}

#[test]
fn head_then_get_by_digest_as_containerd_does() {
    let server = Server::start();
    let head = server.request("HEAD", MANIFEST, &[("Accept", DOCKER_MANIFEST_V2)]);
    assert_eq!(head.status, 200, "{}", server.context(&head.describe()));
    assert!(head.body.is_empty());
    let digest = head.expect_header("Docker-Content-Digest").to_owned();
    let length: usize = head.expect_header("Content-Length").parse().unwrap();
    assert_eq!(head.expect_header("Content-Type"), DOCKER_MANIFEST_V2);

    let by_digest = server.get_ok(&format!("/v2/shell/hello/manifests/{digest}"), &[]);
    assert_eq!(by_digest.body.len(), length, "HEAD's Content-Length differs from the body");
    assert_eq!(sha256_digest(&by_digest.body), digest);
    assert_eq!(by_digest.expect_header("Content-Type"), DOCKER_MANIFEST_V2);
    assert_eq!(by_digest.expect_header("Docker-Content-Digest"), digest);

    let head_digest = server.request("HEAD", &format!("/v2/shell/hello/manifests/{digest}"), &[]);
    assert_eq!(head_digest.status, 200);
    assert_eq!(head_digest.expect_header("Content-Length"), length.to_string());
}

#[test]
fn every_blob_matches_its_digest_and_diff_id() {
    let server = Server::start();
    let (_, m, _) = manifest(&server, "shell/hello");
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let config = server.get_ok(&format!("/v2/shell/hello/blobs/{config_digest}"), &[]);
    assert_eq!(sha256_digest(&config.body), config_digest);
    let config = config.json();
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["bash"]), "shell images run bash");
    let env = config["config"]["Env"].to_string();
    assert!(env.contains("\"SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt\""), "{env}");
    assert!(env.contains("\"PATH="), "containerd needs a PATH in Env: {env}");

    let layers = m["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    assert!(layers.len() >= 3, "expected several layers: {m}");
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let digest = layer["digest"].as_str().unwrap();
        let blob = server.get_ok(&format!("/v2/shell/hello/blobs/{digest}"), &[]);
        assert_eq!(sha256_digest(&blob.body), digest);
        assert_eq!(blob.body.len() as u64, layer["size"].as_u64().unwrap());
        assert_eq!(blob.expect_header("Docker-Content-Digest"), digest);
        let head = server.request("HEAD", &format!("/v2/shell/hello/blobs/{digest}"), &[]);
        assert_eq!(head.expect_header("Content-Length"), blob.body.len().to_string());
        let mut tar = Vec::new();
        MultiGzDecoder::new(&blob.body[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(sha256_digest(&tar), diff_id.as_str().unwrap(), "diff_id of {digest}");
    }

    // A ranged read of the biggest layer.
    let biggest = layers.iter().max_by_key(|l| l["size"].as_u64().unwrap()).unwrap();
    let digest = biggest["digest"].as_str().unwrap();
    let full = server.get_ok(&format!("/v2/x/blobs/{digest}"), &[]).body;
    let part = server.request("GET", &format!("/v2/x/blobs/{digest}"), &[("Range", "bytes=100-199")]);
    assert_eq!(part.status, 206, "{}", part.describe());
    assert_eq!(part.body, full[100..200]);

    // Without bash or a meta.mainProgram there is no Cmd, but still a config object.
    let (_, m, _) = manifest(&server, "foobar");
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let config = server.get_ok(&format!("/v2/foobar/blobs/{config_digest}"), &[]).json();
    assert!(config["config"].is_object());
    assert!(config["config"].get("Cmd").is_none(), "{config}");
    assert!(config["config"].get("User").is_none(), "{config}");
    // hello declares meta.mainProgram: its program is the command, by its path in the forest.
    let (_, m, _) = manifest(&server, "hello");
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let config = server.get_ok(&format!("/v2/hello/blobs/{config_digest}"), &[]).json();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/hello"]), "{config}");
}

#[test]
fn bad_requests_get_registry_errors() {
    let server = Server::start();

    // Failures of the requested image are 422 (not 404, whose reason containerd drops).
    let r = server.get("/v2/hello/nosuchthing/alsomissing/manifests/latest");
    assert_eq!(r.status, 422, "{}", r.describe());
    assert_eq!(error_code(&r), "MANIFEST_UNKNOWN");
    let message = r.json()["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("nosuchthing") && message.contains("alsomissing"), "{message}");
    assert!(!message.contains("hello"), "found packages are not missing: {message}");

    let r = server.get("/v2/hello/lib/manifests/latest");
    assert_eq!(r.status, 422);
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("lib"));

    let r = server.get("/v2/broken/manifests/latest");
    assert_eq!(r.status, 422, "{}", r.describe());
    assert_eq!(error_code(&r), "MANIFEST_UNKNOWN");
    let log = r.json()["errors"][0]["detail"]["log"].to_string();
    assert!(log.contains("this package is broken on purpose"), "the Nix log tail is missing: {log}");

    let zero = format!("sha256:{}", "0".repeat(64));
    for (method, path, status, code) in [
        ("GET", "/v2/bad..name/manifests/latest".to_string(), 400, "NAME_INVALID"),
        ("GET", "/v2/hello%24%7Bx%7D/manifests/latest".to_string(), 400, "NAME_INVALID"),
        // Neither tag nor digest: no manifest (404, the spec's end-3), not a bad request.
        ("GET", "/v2/hello/manifests/-x".to_string(), 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/hello/manifests/sha256:1234".to_string(), 400, "DIGEST_INVALID"),
        ("GET", "/v2/hello/blobs/sha256:zz".to_string(), 400, "DIGEST_INVALID"),
        ("GET", format!("/v2/hello/blobs/{zero}"), 404, "BLOB_UNKNOWN"),
        ("HEAD", format!("/v2/hello/blobs/{zero}"), 404, "BLOB_UNKNOWN"),
        ("GET", format!("/v2/hello/manifests/{zero}"), 404, "MANIFEST_UNKNOWN"),
        ("PUT", "/v2/hello/manifests/latest".to_string(), 405, "UNSUPPORTED"),
        ("DELETE", "/v2/hello/manifests/latest".to_string(), 405, "UNSUPPORTED"),
        ("POST", "/v2/hello/blobs/uploads/".to_string(), 405, "UNSUPPORTED"),
    ] {
        let r = server.request(method, &path, &[]);
        assert_eq!(r.status, status, "{method} {path}\n{}", r.describe());
        if method == "HEAD" {
            assert_eq!(r.header("Content-Type"), Some("application/json"));
        } else {
            assert_eq!(error_code(&r), code, "{method} {path}");
        }
    }
    assert_eq!(server.metric("nixery_image_builds_total"), 3, "only the three package requests reach Nix");
}

#[test]
fn names_are_canonical_and_reach_every_kind_of_attribute() {
    let server = Server::start();
    let (a, _, _) = manifest(&server, "shell/hello");
    let (b, _, _) = manifest(&server, "hello/shell");
    let (c, _, _) = manifest(&server, "hello/shell/hello");
    assert_eq!(a, b);
    assert_eq!(a, c);

    // Nested, camelCase (case-insensitive) and digit-leading names, and the forest links them.
    let unpacked = pull_and_unpack(&server, "haskellpackages.pandoc/foobar/1password/bashinteractive:latest", &[]);
    let out = unpacked.sh(&server, "pandoc x; foo-bar; op; bash -c 'echo from bash'");
    assert_eq!(out, "pandoc (test stub) x\nfoo bar\n1password (test stub)\nfrom bash\n");
}

#[test]
fn arm64_images_are_built_for_arm64() {
    let server = Server::start();
    let (_, m, _) = manifest(&server, "arm64/hello");
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let config = server.get_ok(&format!("/v2/arm64/hello/blobs/{config_digest}"), &[]).json();
    assert_eq!(config["architecture"], "arm64");
    let (amd, _, _) = manifest(&server, "hello");
    let (arm, _, _) = manifest(&server, "arm64/hello");
    assert_ne!(amd, arm);
}

#[test]
fn oci_only_clients_get_oci_and_repeated_accept_headers_are_merged() {
    let server = Server::start();
    let oci = server.get_ok(MANIFEST, &[("Accept", OCI_MANIFEST_V1)]);
    assert_eq!(oci.expect_header("Content-Type"), OCI_MANIFEST_V1);
    let m = oci.json();
    assert_eq!(m["mediaType"], OCI_MANIFEST_V1);
    assert_eq!(m["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(m["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    let digest = oci.expect_header("Docker-Content-Digest");
    let again = server.get_ok(&format!("/v2/shell/hello/manifests/{digest}"), &[]);
    assert_eq!(again.expect_header("Content-Type"), OCI_MANIFEST_V1);

    // skopeo's six Accept lines: OCI first, Docker second -> Docker.
    let skopeo = [
        ("Accept", OCI_MANIFEST_V1),
        ("Accept", DOCKER_MANIFEST_V2),
        ("Accept", "application/vnd.docker.distribution.manifest.v1+prettyjws"),
        ("Accept", "application/vnd.docker.distribution.manifest.v1+json"),
        ("Accept", "application/vnd.docker.distribution.manifest.list.v2+json"),
        ("Accept", "application/vnd.oci.image.index.v1+json"),
    ];
    let docker = server.get_ok(MANIFEST, &skopeo);
    assert_eq!(docker.expect_header("Content-Type"), DOCKER_MANIFEST_V2);
}

#[test]
fn the_same_image_has_the_same_digest_everywhere_and_is_never_rebuilt() {
    let mut first = Server::start();
    let (digest1, _, body1) = manifest(&first, "shell/hello-lib");
    let built = first.metric("nixery_layers_built_total");
    assert!(built > 0);
    let (digest2, _, _) = manifest(&first, "shell/hello-lib");
    assert_eq!(digest1, digest2);
    assert_eq!(first.metric("nixery_layers_built_total"), built, "the second pull rebuilt layers");

    // A second server with fresh storage builds byte-identical layers.
    let second = Server::start();
    let (digest3, _, body3) = manifest(&second, "shell/hello-lib");
    assert_eq!(
        digest1,
        digest3,
        "manifests differ:\n{}\n{}",
        String::from_utf8_lossy(&body1),
        String::from_utf8_lossy(&body3)
    );

    // After a restart on the same storage, every layer comes from the build cache.
    first.restart();
    let (digest4, _, _) = manifest(&first, "shell/hello-lib");
    assert_eq!(digest1, digest4);
    assert_eq!(first.metric("nixery_layers_built_total"), 0, "a layer was rebuilt after a restart");
    assert_eq!(first.metric("nixery_layer_cache_hits_total"), built);
}

#[test]
fn concurrent_pulls_of_a_new_image_run_nix_once() {
    let server = Server::start_with(&[("NIXERY_TEST_NONCE", &nonce())]);
    let url = server.url("/v2/fresh/hello/manifests/latest");
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || http::send("GET", &url, &[], Duration::from_secs(120)))
        })
        .collect();
    let digests: Vec<String> = threads
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap().unwrap_or_else(|e| server.fail(&e));
            assert_eq!(r.status, 200, "{}", server.context(&r.describe()));
            r.expect_header("Docker-Content-Digest").to_owned()
        })
        .collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    assert_eq!(server.metric("nixery_image_builds_total"), 1, "{}", server.metrics());
    // evaluate + realise + query graph: three Nix commands for the whole image.
    assert_eq!(server.metric("nixery_nix_invocations_total"), 3, "{}", server.metrics());
}

#[test]
fn nix_timeouts_answer_422_and_stop_the_build() {
    let n = nonce();
    let server = Server::start_with(&[("NIXERY_TEST_NONCE", &n), ("NIX_TIMEOUT", "3")]);
    let started = Instant::now();
    let r = server.get("/v2/slow/manifests/latest");
    // The image's failure (it cannot be had in time), not the server's: 422 with the cause.
    assert_eq!(r.status, 422, "{}", server.context(&r.describe()));
    assert_eq!(error_code(&r), "MANIFEST_UNKNOWN");
    assert!(started.elapsed() < Duration::from_secs(30));
    let message = r.json()["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("timed out"), "{message}");
    assert!(
        wait_until(Duration::from_secs(15), || processes_mentioning(&n).is_empty()),
        "the slow builder survived the timeout: {:?}",
        processes_mentioning(&n)
    );
}

/// Also defect 3 of issue 11: the stopped `nix-store` stayed `<defunct>` until the next
/// request; now it is reaped when it exits.
#[test]
fn an_abandoned_request_stops_nix() {
    let n = nonce();
    let server = Server::start_with(&[("NIXERY_TEST_NONCE", &n)]);
    let mut conn = TcpStream::connect(server.addr()).unwrap();
    write!(conn, "GET /v2/slow/manifests/latest HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr()).unwrap();
    // The builder's own command line (not just nix-store's) names the nonce.
    let builder = format!("slow build {n} starting");
    assert!(
        wait_until(Duration::from_secs(30), || !processes_mentioning(&builder).is_empty()),
        "{}",
        server.context("the slow builder never started")
    );
    drop(conn);
    assert!(
        wait_until(Duration::from_secs(15), || processes_mentioning(&n).is_empty()),
        "{}",
        server.context(&format!("the builder outlived its request: {:?}", processes_mentioning(&n)))
    );
    assert!(
        wait_until(Duration::from_secs(10), || zombie_children(server.pid()).is_empty()),
        "{}",
        server.context(&format!("unreaped children: {:?}", zombie_children(server.pid())))
    );
}

/// Start-up with a bad configuration: exits non-zero and names the variable.
fn start_fails(env: &[(&str, &str)], needle: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_nixery"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with {env:?}");
    assert!(stderr.contains(needle), "{env:?}: message does not name {needle}: {stderr}");
}

#[test]
fn bad_configuration_stops_start_up_naming_the_variable() {
    let storage = temp_dir("bad-config");
    let storage = storage.path().to_str().unwrap();
    let pkgs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pkgs/default.nix");
    start_fails(&[("PORT", "eighty"), ("STORAGE_PATH", storage)], "PORT");
    start_fails(&[("NIX_TIMEOUT", "-1"), ("STORAGE_PATH", storage)], "NIX_TIMEOUT");
    start_fails(&[("NIXERY_LAYER_BUDGET", "500"), ("STORAGE_PATH", storage)], "NIXERY_LAYER_BUDGET");
    start_fails(&[("NIXERY_STORAGE_BACKEND", "floppy"), ("STORAGE_PATH", storage)], "NIXERY_STORAGE_BACKEND");
    start_fails(&[("NIXERY_LOCAL_BUILDS", "maybe"), ("STORAGE_PATH", storage)], "NIXERY_LOCAL_BUILDS");
    start_fails(&[("NIXERY_MAX_NIX_JOBS", "0"), ("STORAGE_PATH", storage)], "NIXERY_MAX_NIX_JOBS");
    start_fails(
        &[("NIXERY_NIXPKGS_CONFIG", "{allowUnfree = true;}"), ("STORAGE_PATH", storage)],
        "NIXERY_NIXPKGS_CONFIG",
    );
    start_fails(&[("NIXERY_PKGS_PATH", "/no/such/pkgs"), ("STORAGE_PATH", storage)], "NIXERY_PKGS_PATH");
    start_fails(
        &[("NIXERY_PKGS_PATH", pkgs), ("NIXERY_CHANNEL", "nixos-unstable"), ("STORAGE_PATH", storage)],
        "NIXERY_CHANNEL and NIXERY_PKGS_PATH",
    );
    start_fails(
        &[("NIXERY_PKGS_PATH", pkgs), ("NIX_POPULARITY_URL", "/no/such/popularity.json"), ("STORAGE_PATH", storage)],
        "NIX_POPULARITY_URL",
    );
    let bad = temp_dir("bad-popularity");
    let file = bad.path().join("pop.json");
    std::fs::write(&file, "[1, 2, 3]").unwrap();
    start_fails(
        &[("NIXERY_PKGS_PATH", pkgs), ("NIX_POPULARITY_URL", file.to_str().unwrap()), ("STORAGE_PATH", storage)],
        "NIX_POPULARITY_URL",
    );
}

#[test]
fn help_lists_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_nixery")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "PORT",
        "NIXERY_CHANNEL",
        "NIXERY_CHANNEL_REPO",
        "NIXERY_PKGS_REPO",
        "NIXERY_PKGS_PATH",
        "NIXERY_STORAGE_BACKEND",
        "STORAGE_PATH",
        "NIX_TIMEOUT",
        "NIX_POPULARITY_URL",
        "NIXERY_LAYER_BUDGET",
        "NIXERY_LAYER_GROUPING",
        "NIXERY_SOURCE_TTL",
        "NIXERY_MANIFEST_CACHE_MIB",
        "NIXERY_LOCAL_BUILDS",
        "NIXERY_MAX_NIX_JOBS",
        "NIXERY_NIXPKGS_CONFIG",
    ] {
        assert!(help.contains(&format!("[env: {var}=")), "--help does not list {var}:\n{help}");
    }
}

#[test]
fn nixerys_grouping_is_selectable() {
    let stable = Server::start();
    let nixery = Server::start_with(&[("NIXERY_LAYER_GROUPING", "nixery")]);
    let (_, s, _) = manifest(&stable, "shell/hello-lib");
    let (_, n, _) = manifest(&nixery, "shell/hello-lib");
    let (s, n) = (s["layers"].as_array().unwrap().len(), n["layers"].as_array().unwrap().len());
    // Nixery's dominator tree keeps greeting (reached only through hello-lib here) in
    // hello-lib's layer; without popularity data the default keeps every path apart.
    assert_eq!(n + 1, s, "stable {s} layers, nixery {n}");
    let unpacked = pull_and_unpack(&nixery, "shell/hello-lib:latest", &[]);
    assert_eq!(unpacked.sh(&nixery, "hello-lib"), "greetings from the nix store\n");
}
