//! The caches from outside: after the first pull, pulls of the same tag within the TTL run no
//! Nix and no git; commit tags are served for good, also after a restart (from storage);
//! moving tags are resolved again after a restart; concurrent builds of different images
//! share the archive jobs of their common layers.

use crate::harness::http;
use crate::harness::{DOCKER_MANIFEST_V2, PackageRepo, Server, nonce, pull_and_unpack};
use std::collections::BTreeSet;
use std::time::Duration;

const WARM: &str = r#"cache="warm""#;
const STORED: &str = r#"cache="stored""#;
const COLD: &str = r#"cache="cold""#;

/// What ran so far: Nix commands, source resolutions, image builds.
fn work(server: &Server) -> (u64, u64, u64) {
    (
        server.metric("nixery_nix_invocations_total"),
        server.metric("nixery_source_resolutions_total"),
        server.metric("nixery_image_builds_total"),
    )
}

fn digest(server: &Server, name: &str, tag: &str) -> String {
    server.get_ok(&format!("/v2/{name}/manifests/{tag}"), &[]).expect_header("Docker-Content-Digest").to_owned()
}

#[test]
fn pulls_of_a_tag_within_the_ttl_run_no_nix_and_no_git() {
    let repo = PackageRepo::new();
    // A TTL no slow machine outlasts: "within the TTL" must hold for the whole test.
    let server = Server::start_with(&[
        ("NIXERY_PKGS_REPO", &repo.url()),
        ("NIXERY_PKGS_PATH", ""),
        ("NIXERY_SOURCE_TTL", "600"),
    ]);
    pull_and_unpack(&server, "shell/hello:latest", &[]);
    let (nix, resolutions, builds) = work(&server);
    assert_eq!((resolutions, builds), (1, 1), "{}", server.metrics());
    assert!(nix >= 3);

    // The same tag again, by a client, by GET and by HEAD, in both formats.
    pull_and_unpack(&server, "shell/hello:latest", &[]);
    let path = "/v2/shell/hello/manifests/latest";
    let first = server.get_ok(path, &[("Accept", DOCKER_MANIFEST_V2)]);
    for _ in 0..20 {
        let again = server.get_ok(path, &[("Accept", DOCKER_MANIFEST_V2)]);
        assert_eq!(again.body, first.body);
        assert_eq!(again.expect_header("Docker-Content-Digest"), first.expect_header("Docker-Content-Digest"));
        let head = server.request("HEAD", path, &[("Accept", DOCKER_MANIFEST_V2)]);
        assert_eq!(head.status, 200);
        assert_eq!(head.expect_header("Content-Length"), first.body.len().to_string());
        assert_eq!(head.expect_header("Docker-Content-Digest"), first.expect_header("Docker-Content-Digest"));
    }
    assert_eq!(work(&server), (nix, resolutions, builds), "{}", server.context("a warm pull ran Nix or git"));
    assert!(server.metric_labelled("nixery_manifest_requests_total", WARM) >= 42, "{}", server.metrics());

    // An OCI-only client: the other format was rendered with the first build, so it is
    // warm too.
    let oci = server.get_ok(path, &[("Accept", "application/vnd.oci.image.manifest.v1+json")]);
    assert_eq!(oci.expect_header("Content-Type"), "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(work(&server), (nix, resolutions, builds), "{}", server.metrics());
}

#[test]
fn commit_tags_are_served_for_good_and_moving_tags_are_resolved_again_after_a_restart() {
    let repo = PackageRepo::new();
    let mut server = Server::start_with(&[
        ("NIXERY_PKGS_REPO", &repo.url()),
        ("NIXERY_PKGS_PATH", ""),
        ("NIXERY_SOURCE_TTL", "600"),
    ]);
    let pinned = digest(&server, "shell/hello", &repo.first);
    let latest = digest(&server, "shell/hello", "latest");
    let (_, resolutions, _) = work(&server);
    assert_eq!(resolutions, 1, "a commit tag needs no resolution: {}", server.metrics());

    server.restart();
    // The commit's manifest comes from storage: no resolution, no Nix; then from memory.
    assert_eq!(digest(&server, "shell/hello", &repo.first), pinned);
    assert_eq!(work(&server), (0, 0, 0), "{}", server.metrics());
    assert_eq!(server.metric_labelled("nixery_manifest_requests_total", STORED), 1);
    assert_eq!(digest(&server, "shell/hello", &repo.first), pinned);
    assert_eq!(server.metric_labelled("nixery_manifest_requests_total", WARM), 1);

    // `latest` is resolved again (git, not Nix): the branch has not moved, so storage has it.
    assert_eq!(digest(&server, "shell/hello", "latest"), latest);
    assert_eq!(work(&server), (0, 1, 0), "{}", server.metrics());

    // The branch moves; a restart forgets the resolution, so the new commit is built.
    repo.commit("main", "Hello, v3!");
    server.restart();
    let moved = digest(&server, "shell/hello", "latest");
    assert_ne!(moved, latest);
    let (nix, resolutions, builds) = work(&server);
    assert!(nix > 0 && resolutions == 1 && builds == 1, "{}", server.metrics());
    assert_eq!(server.metric_labelled("nixery_manifest_requests_total", COLD), 1);
    let unpacked = pull_and_unpack(&server, "shell/hello:latest", &[]);
    assert_eq!(unpacked.sh(&server, "hello"), "Hello, v3!\n");
}

#[test]
fn concurrent_builds_of_different_images_archive_a_shared_layer_once() {
    let server = Server::start_with(&[("NIXERY_TEST_NONCE", &nonce())]);
    let images = ["shell/big/hello", "shell/big/fresh", "shell/big/hello-lib"];
    let threads: Vec<_> = images
        .iter()
        .map(|name| {
            let url = server.url(&format!("/v2/{name}/manifests/latest"));
            std::thread::spawn(move || http::send("GET", &url, &[], Duration::from_secs(300)))
        })
        .collect();
    let manifests: Vec<serde_json::Value> = threads
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap().unwrap_or_else(|e| server.fail(&e));
            assert_eq!(r.status, 200, "{}", server.context(&r.describe()));
            r.json()
        })
        .collect();
    let layers = |m: &serde_json::Value| -> BTreeSet<String> {
        m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()).collect()
    };
    let shared: BTreeSet<String> = layers(&manifests[0]).intersection(&layers(&manifests[1])).cloned().collect();
    let shared: BTreeSet<String> = shared.intersection(&layers(&manifests[2])).cloned().collect();
    let biggest = |m: &serde_json::Value| {
        let all = m["layers"].as_array().unwrap();
        all.iter().max_by_key(|l| l["size"].as_u64().unwrap()).unwrap()["digest"].as_str().unwrap().to_owned()
    };
    assert!(shared.contains(&biggest(&manifests[0])), "the big layer is not shared: {manifests:#?}");
    assert!(manifests.iter().all(|m| biggest(m) == biggest(&manifests[0])));
    // Every distinct layer was archived exactly once, shared ones included.
    let distinct: BTreeSet<String> = manifests.iter().flat_map(layers).collect();
    assert_eq!(server.metric("nixery_image_builds_total"), 3);
    assert_eq!(
        server.metric("nixery_layers_built_total"),
        distinct.len() as u64,
        "{}",
        server.context(&format!("{} distinct layers, {} shared by all three", distinct.len(), shared.len()))
    );
}
