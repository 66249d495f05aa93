//! The server on shared object storage (fake-gcs-server for GCS, moto for S3): real pulls
//! through redirects to the bucket, two replicas sharing one bucket, concurrent builds of the
//! same layers by both, and an upload cut off by the store dying mid-stream.

use crate::harness::emulators::{BUCKET, Emulator, Kind};
use crate::harness::{Containerd, Server, http, nonce, pull_and_unpack, sha256_digest};
use rstest::rstest;
use std::time::Duration;

fn server_on(emu: &Emulator, extra: &[(&str, &str)]) -> Server {
    let env = emu.server_env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    Server::start_with(&all)
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Skopeo + umoci + chroot and containerd pull and run, with blobs redirected to the bucket.
#[rstest]
#[case::gcs(Kind::Gcs)]
#[case::s3(Kind::S3)]
fn pulls_through_redirects(#[case] kind: Kind) {
    let emu = Emulator::start(kind);
    let server = server_on(&emu, &[]);
    let (resp, manifest) = server.manifest("shell/hello-lib", "latest");
    assert_eq!(resp.status, 200, "{}", server.context(&resp.describe()));

    // Every blob answer is a redirect into the bucket, and the bucket has the right bytes.
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        let r = server.request("GET", &format!("/v2/shell/hello-lib/blobs/{digest}"), &[]);
        assert_eq!(r.status, 307, "{}", r.describe());
        let location = r.expect_header("Location").to_owned();
        assert!(location.starts_with(&emu.base()), "{location} is not in the emulator at {}", emu.base());
        let object = http::get(&location);
        assert_eq!(object.status, 200);
        assert_eq!(sha256_digest(&object.body), digest, "the bucket holds other bytes under {digest}");
    }
    let missing = format!("/v2/x/blobs/sha256:{}", "0".repeat(64));
    assert_eq!(server.request("GET", &missing, &[]).status, 404, "a redirect for a missing blob");

    let unpacked = pull_and_unpack(&server, "shell/hello-lib:latest", &[]);
    assert_eq!(unpacked.sh(&server, "hello-lib"), "greetings from the nix store\n");

    let containerd = Containerd::start();
    let image = server.image("shell/hello-lib:latest");
    containerd.ctr_ok(&server, &["images", "pull", "--plain-http", &image]);
    let out = containerd.ctr_ok(&server, &["run", "--rm", &image, &format!("c-{}", nonce()), "hello-lib"]);
    assert_eq!(out.trim(), "greetings from the nix store");
}

#[test]
fn proxy_mode_streams_blobs_through_the_server() {
    let emu = Emulator::start(Kind::Gcs);
    let server = server_on(&emu, &[("NIXERY_PROXY_BLOBS", "true")]);
    let (_, manifest) = server.manifest("hello", "latest");
    let digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let r = server.get_ok(&format!("/v2/hello/blobs/{digest}"), &[]);
    assert_eq!(sha256_digest(&r.body), digest);
    assert_eq!(r.expect_header("Docker-Content-Digest"), digest);
    let unpacked = pull_and_unpack(&server, "shell/hello:latest", &[]);
    assert_eq!(unpacked.sh(&server, "hello"), "Hello, world!\n");
}

/// Replica 2, with its own local state, serves what replica 1 built without archiving any
/// layer, and both give the same manifest digest.
#[rstest]
#[case::gcs(Kind::Gcs)]
#[case::s3(Kind::S3)]
fn replicas_share_the_bucket(#[case] kind: Kind) {
    let emu = Emulator::start(kind);
    let one = server_on(&emu, &[]);
    let two = server_on(&emu, &[]);
    let (r1, m1) = one.manifest("shell/hello-lib", "latest");
    assert!(one.metric("nixery_layers_built_total") > 0);
    let (r2, m2) = two.manifest("shell/hello-lib", "latest");
    assert_eq!(r1.expect_header("Docker-Content-Digest"), r2.expect_header("Docker-Content-Digest"));
    assert_eq!(m1, m2);
    assert_eq!(two.metric("nixery_layers_built_total"), 0, "{}", two.context("replica 2 rebuilt a layer"));
    assert_eq!(two.metric("nixery_layer_cache_hits_total"), m2["layers"].as_array().unwrap().len() as u64);
    // Replica 2 serves the manifest by digest too (it is in the bucket).
    let digest = r1.expect_header("Docker-Content-Digest");
    two.get_ok(&format!("/v2/shell/hello-lib/manifests/{digest}"), &[]);
}

/// Both replicas build the same new image at once: both answer, and the bucket ends with one
/// correct object per blob and nothing left in staging.
#[rstest]
#[case::gcs(Kind::Gcs)]
#[case::s3(Kind::S3)]
fn concurrent_builds_by_two_replicas(#[case] kind: Kind) {
    let emu = Emulator::start(kind);
    let n = nonce();
    let one = server_on(&emu, &[("NIXERY_TEST_NONCE", &n)]);
    let two = server_on(&emu, &[("NIXERY_TEST_NONCE", &n)]);
    let path = "/v2/fresh/hello-lib/manifests/latest";
    let requests: Vec<_> = [one.url(path), two.url(path), one.url(path), two.url(path)]
        .into_iter()
        .map(|url| std::thread::spawn(move || http::send("GET", &url, &[], Duration::from_secs(120))))
        .collect();
    let digests: Vec<String> = requests
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap().unwrap_or_else(|e| one.fail(&e));
            assert_eq!(r.status, 200, "{}\n{}", r.describe(), two.log_tail(40));
            r.expect_header("Docker-Content-Digest").to_owned()
        })
        .collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");

    let (_, manifest) = one.manifest("fresh/hello-lib", "latest");
    let (layers, staging) = block_on(async { (emu.list("layers/").await, emu.list("staging/").await) });
    assert!(staging.is_empty(), "staging leftovers: {staging:?}");
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        assert_eq!(layers.iter().filter(|k| k.ends_with(digest)).count(), 1, "{digest} in {layers:?}");
        let r = two.request("GET", &format!("/v2/x/blobs/{digest}"), &[]);
        assert_eq!(sha256_digest(&http::get(r.expect_header("Location")).body), digest);
    }
}

/// The store dies while a 128 MiB layer streams into it: the request fails, nothing is
/// visible under a digest that does not match its bytes, and after the store is back the
/// next request succeeds.
#[test]
fn an_upload_cut_off_mid_stream_leaves_nothing_under_a_digest() {
    let mut emu = Emulator::start(Kind::GcsOnDisk);
    let server = server_on(&emu, &[("NIXERY_BIG_MIB", "128")]);
    let url = server.url("/v2/big/manifests/latest");
    let request = std::thread::spawn(move || http::send("GET", &url, &[], Duration::from_secs(300)));
    // Wait until the layers are being written (Nix is done), then cut the store off.
    let mut waited = 0;
    while !server.log().contains("querying the runtime graph") {
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
        assert!(waited < 2400, "{}", server.context("Nix never finished"));
    }
    std::thread::sleep(Duration::from_millis(500));
    emu.kill();
    let r = request.join().unwrap().unwrap_or_else(|e| server.fail(&e));
    assert_eq!(r.status, 500, "{}", server.context("the build should have failed with the store gone"));
    assert_eq!(r.json()["errors"][0]["code"], "UNKNOWN");

    emu.restart();
    let check_layers = |emu: &Emulator| {
        for key in block_on(emu.list("layers/")) {
            let digest = key.trim_start_matches("layers/");
            let url = format!("{}/storage/v1/b/{BUCKET}/o/{}?alt=media", emu.base(), key.replace('/', "%2F"));
            assert_eq!(sha256_digest(&http::get(&url).body), digest, "a partial object is visible under {key}");
        }
    };
    check_layers(&emu);

    let (resp, manifest) = server.manifest("big", "latest");
    assert_eq!(resp.status, 200, "{}", server.context("the build after the store came back"));
    check_layers(&emu);
    let biggest = manifest["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).max().unwrap();
    assert!(biggest > 100 * 1024 * 1024, "the big layer is {biggest} bytes");
}
