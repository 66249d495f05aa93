//! Layers as the operator sets them (`NIXERY_LAYER_COMPRESSION`), against real clients and
//! real decompressors: gzip layers of several members pulled and run by the Docker engine and
//! containerd reading them with Go's `compress/gzip`; zstd images pulled and run by
//! containerd and podman; every blob of
//! an image matching its digest, and its tar, decompressed by a real tool, its diff_id; the
//! same bytes for any number of compression workers; gzip and zstd layers holding the same
//! tars; and a server switched between the two on the same storage serving the kind it is
//! set to, from records and a manifest cache keyed on the compression.

use std::time::Duration;

use crate::harness::decompressors::{DOCKER_GZIP_LAYER, OCI_GZIP_LAYER, OCI_ZSTD_LAYER, gzip_members, tar_digest};
use crate::harness::{
    Containerd, DOCKER_MANIFEST_V2, Docker, OCI_MANIFEST_V1, Podman, Server, nonce, require_tool, sha256_digest,
};

const ZSTD: (&str, &str) = ("NIXERY_LAYER_COMPRESSION", "zstd");
/// What a client accepting both manifest formats sends (skopeo, podman: one line each).
const BOTH: [(&str, &str); 2] = [("Accept", OCI_MANIFEST_V1), ("Accept", DOCKER_MANIFEST_V2)];
/// What containerd sends: one line (shared/CLIENTS.md).
const CONTAINERD_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, */*";

/// An image as a client gets it.
struct Image {
    /// The manifest's digest and media type.
    digest: String,
    media_type: String,
    /// Each layer's media type and digest, and the config's diff_ids, in order.
    layer_types: Vec<String>,
    layers: Vec<String>,
    diff_ids: Vec<String>,
}

/// Fetches `name:tag` sending `accept`, and checks every blob: it hashes to its digest, has
/// its size, and a layer's tar, decompressed by a real tool for its media type, hashes to
/// the config's diff_id for it.
fn fetch(server: &Server, name: &str, tag: &str, accept: &[(&str, &str)]) -> Image {
    let r = server.get_ok(&format!("/v2/{name}/manifests/{tag}"), accept);
    let digest = r.expect_header("Docker-Content-Digest").to_owned();
    assert_eq!(sha256_digest(&r.body), digest, "{}", server.context("the manifest does not hash to its digest"));
    let media_type = r.expect_header("Content-Type").to_owned();
    let m = r.json();
    assert_eq!(m["mediaType"], media_type.as_str(), "{}", server.context(&format!("manifest: {m:#}")));
    let strings = |v: &serde_json::Value| -> Vec<String> {
        let list = v.as_array().unwrap_or_else(|| server.fail(&format!("not a list: {v}")));
        list.iter()
            .map(|s| s.as_str().unwrap_or_else(|| server.fail(&format!("not a string: {s}"))).to_owned())
            .collect()
    };
    let config_digest = m["config"]["digest"].as_str().unwrap_or_else(|| server.fail(&format!("no config: {m:#}")));
    let config = server.get_ok(&format!("/v2/{name}/blobs/{config_digest}"), &[]);
    assert_eq!(
        sha256_digest(&config.body),
        config_digest,
        "{}",
        server.context("the config does not hash to its digest")
    );
    let diff_ids = strings(&config.json()["rootfs"]["diff_ids"]);
    let layers = m["layers"].as_array().unwrap_or_else(|| server.fail(&format!("no layers: {m:#}")));
    assert_eq!(layers.len(), diff_ids.len(), "{}", server.context(&format!("layers and diff_ids differ: {m:#}")));
    let mut image = Image { digest, media_type, layer_types: Vec::new(), layers: Vec::new(), diff_ids };
    for (layer, diff_id) in layers.iter().zip(&image.diff_ids) {
        let (Some(digest), Some(media), Some(size)) =
            (layer["digest"].as_str(), layer["mediaType"].as_str(), layer["size"].as_u64())
        else {
            server.fail(&format!("a layer without digest, media type or size: {layer}"))
        };
        let blob = server.get_ok(&format!("/v2/{name}/blobs/{digest}"), &[]);
        assert_eq!(sha256_digest(&blob.body), digest, "{}", server.context("a layer does not hash to its digest"));
        assert_eq!(blob.body.len() as u64, size, "{}", server.context(&format!("size of {digest}")));
        let tar = tar_digest(server, media, &blob.body);
        assert_eq!(&tar, diff_id, "{}", server.context(&format!("the tar of {media} layer {digest}")));
        image.layer_types.push(media.to_owned());
        image.layers.push(digest.to_owned());
    }
    image
}

/// Fails unless every layer of `image` has the media type `want`.
fn assert_layers_are(server: &Server, image: &Image, want: &str) {
    let other: Vec<&String> = image.layer_types.iter().filter(|t| *t != want).collect();
    assert!(
        other.is_empty() && !image.layer_types.is_empty(),
        "{}",
        server.context(&format!("layers are not all {want}: {:?}", image.layer_types))
    );
}

/// A server and an image of it whose gzip layers have several members each (one per MiB):
/// busybox's, deflated, and the 3 MiB of noise of `big`, stored. Checks that they do.
fn multi_member_image() -> (Server, String) {
    let server = Server::start_with(&[("NIXERY_BIG_MIB", "3")]);
    let name = "shell/hello-lib/big";
    let served = fetch(&server, name, "latest", &BOTH);
    assert_layers_are(&server, &served, DOCKER_GZIP_LAYER);
    let members: Vec<usize> = served
        .layers
        .iter()
        .map(|digest| gzip_members(&server, &server.get_ok(&format!("/v2/{name}/blobs/{digest}"), &[]).body))
        .collect();
    let several = members.iter().filter(|&&m| m >= 2).count();
    assert!(several >= 2, "{}", server.context(&format!("members per layer: {members:?}")));
    let image = server.image(&format!("{name}:latest"));
    (server, image)
}

/// The Docker engine pulls gzip layers of several members reading them with Go's
/// `compress/gzip` (clients.rs pulls through unpigz, which it prefers when installed),
/// checks them against the config's diff_ids, and runs a program from busybox's layer.
#[test]
fn docker_reads_gzip_members_with_go_gzip() {
    require_tool(&["dockerd", "docker", "runc", "python3"]);
    let (server, image) = multi_member_image();
    let docker = Docker::start_without_pigz();
    docker.pull(&server, &image);
    let out = docker.run(&server, &image, &["hello-lib"]);
    assert_eq!(out.trim(), "greetings from the nix store", "{}", server.context("`hello-lib` under docker"));
    let log = docker.log();
    assert!(
        log.contains("Use of pigz is disabled due to MOBY_DISABLE_PIGZ"),
        "{}",
        server.context("dockerd ran unpigz")
    );
}

/// containerd pulls `image` and runs `hello-lib` from it, in a container named after `prefix`.
fn containerd_runs_hello_lib(server: &Server, containerd: &Containerd, image: &str, prefix: &str) {
    containerd.ctr_ok(server, &["images", "pull", "--plain-http", image]);
    let id = format!("{prefix}-{}", nonce());
    let out = containerd
        .try_ctr(&["run", "--rm", image, &id, "hello-lib"], Duration::from_secs(120))
        .unwrap_or_else(|e| server.fail(&e));
    assert_eq!(out.trim(), "greetings from the nix store", "{}", server.context("`hello-lib` under containerd"));
}

/// containerd does the same through its own unpacker with Go's `compress/gzip`.
#[test]
fn containerd_reads_gzip_members_with_go_gzip() {
    require_tool(&["containerd", "ctr", "runc", "python3"]);
    let (server, image) = multi_member_image();
    let containerd = Containerd::start_without_pigz();
    containerd_runs_hello_lib(&server, &containerd, &image, "members");
    // At debug level containerd says "using pigz for decompression" when it runs unpigz,
    // and nothing when it does not; "diff applied" shows that it logged its unpacking.
    let log = containerd.log();
    assert!(log.contains("diff applied"), "{}", server.context("containerd logged no unpacking at debug level"));
    assert!(!log.contains("using pigz"), "{}", server.context("containerd ran unpigz"));
}

/// containerd (the kubelet's path) pulls an image of zstd layers, unpacks it and runs a
/// program from it that reads a file of another layer.
#[test]
fn containerd_pulls_and_runs_an_image_of_zstd_layers() {
    require_tool(&["containerd", "ctr", "runc", "zstd"]);
    let server = Server::start_with(&[ZSTD]);
    let containerd = Containerd::start();
    let image = server.image("shell/hello-lib:latest");
    containerd_runs_hello_lib(&server, &containerd, &image, "zstd");

    // What containerd was given: an OCI manifest of zstd layers, every blob sound.
    let served = fetch(&server, "shell/hello-lib", "latest", &[("Accept", CONTAINERD_ACCEPT)]);
    assert_eq!(served.media_type, OCI_MANIFEST_V1, "{}", server.context("containerd's manifest"));
    assert_layers_are(&server, &served, OCI_ZSTD_LAYER);
    let listed = containerd.ctr_ok(&server, &["images", "ls"]);
    assert!(listed.contains(&served.digest), "{}", server.context(&format!("ctr images ls: {listed}")));
}

/// podman pulls an image of zstd layers, checks them against the config's diff_ids as it
/// stores them, and runs a program from it.
#[test]
fn podman_pulls_and_runs_an_image_of_zstd_layers() {
    require_tool(&["podman", "runc", "zstd"]);
    let server = Server::start_with(&[ZSTD]);
    let podman = Podman::new();
    let image = server.image("shell/hello:latest");
    server.run(podman.cmd().args(["pull", "--tls-verify=false", &image]));
    let out = server.run(podman.cmd().args(["run", "--rm", &image, "hello"]));
    assert_eq!(out.trim(), "Hello, world!", "{}", server.context("`hello` under podman"));

    let served = fetch(&server, "shell/hello", "latest", &BOTH);
    assert_eq!(served.media_type, OCI_MANIFEST_V1, "{}", server.context("podman's manifest"));
    assert_layers_are(&server, &served, OCI_ZSTD_LAYER);
    let rootfs = server.run(podman.cmd().args(["image", "inspect", "--format", "{{json .RootFS.Layers}}", &image]));
    let stored: Vec<String> = serde_json::from_str(rootfs.trim())
        .unwrap_or_else(|e| server.fail(&format!("podman's RootFS.Layers is not a JSON list ({e}): {rootfs}")));
    assert_eq!(stored, served.diff_ids, "{}", server.context("the layers podman stored"));
}

/// The same image from servers with 1 and 8 compression workers has the same manifest
/// digest, for each compression; gzip and zstd layers hold the same tars under other
/// digests; and a client that accepts no OCI manifest is told why zstd layers are not for it.
#[test]
fn layers_are_the_same_for_any_worker_count_and_differ_only_in_compression() {
    require_tool(&["zstd", "python3"]);
    // busybox (2 MB of machine code: 2 gzip members) and 5 MiB of noise (3 zstd jobs).
    let big = ("NIXERY_BIG_MIB", "5");
    let mut images = Vec::new();
    for compression in ["gzip", "zstd"] {
        let mut built = Vec::new();
        for workers in ["1", "8"] {
            let server = Server::start_with(&[
                big,
                ("NIXERY_LAYER_COMPRESSION", compression),
                ("NIXERY_COMPRESSION_WORKERS", workers),
            ]);
            built.push((fetch(&server, "shell/big", "latest", &BOTH), server));
        }
        let ((one, _), (eight, server)) = (&built[0], &built[1]);
        assert_eq!(eight.digest, one.digest, "{}", server.context(&format!("{compression}: 8 workers, then 1")));
        assert_eq!(eight.layers, one.layers);
        images.extend(built.pop());
    }
    let [(gzip, gzip_server), (zstd, zstd_server)] = &images[..] else { unreachable!("two compressions") };
    assert_eq!(gzip.media_type, DOCKER_MANIFEST_V2, "gzip layers keep Docker schema 2");
    assert_layers_are(gzip_server, gzip, DOCKER_GZIP_LAYER);
    assert_eq!(zstd.media_type, OCI_MANIFEST_V1);
    assert_layers_are(zstd_server, zstd, OCI_ZSTD_LAYER);
    assert_eq!(gzip.diff_ids, zstd.diff_ids, "the same tars");
    for (g, z) in gzip.layers.iter().zip(&zstd.layers) {
        assert_ne!(g, z, "a gzip and a zstd layer with one digest");
    }

    let docker_only = [("Accept", DOCKER_MANIFEST_V2)];
    let r = zstd_server.request("GET", "/v2/shell/big/manifests/latest", &docker_only);
    assert_eq!(r.status, 404, "{}", zstd_server.context(&r.describe()));
    let error = &r.json()["errors"][0];
    assert_eq!(error["code"], "MANIFEST_UNKNOWN", "{}", r.describe());
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("zstd") && message.contains("Docker 23"), "{}", r.describe());
}

/// A server switched from gzip to zstd on the same storage serves zstd layers: layer records
/// and the manifest cache of a pinned commit are keyed on the compression, so nothing of the
/// gzip build is served for it; switched back, it finds the gzip build again. The client
/// accepts only OCI manifests, so the manifests of both settings have the same format and
/// only the compression tells their cache keys apart.
#[test]
fn a_server_switched_between_compressions_serves_the_kind_it_is_set_to() {
    require_tool(&["git", "zstd", "python3"]);
    let repo = crate::harness::package_repo::PackageRepo::new();
    let (commit, url) = (repo.first.clone(), repo.url());
    let oci = [("Accept", OCI_MANIFEST_V1)];
    let mut server = Server::start_with(&[("NIXERY_PKGS_REPO", &url), ("NIXERY_PKGS_PATH", "")]);
    let gzip = fetch(&server, "shell/hello", &commit, &oci);
    assert_eq!(gzip.media_type, OCI_MANIFEST_V1);
    assert_layers_are(&server, &gzip, OCI_GZIP_LAYER);

    server.restart_with(&[ZSTD]);
    let zstd = fetch(&server, "shell/hello", &commit, &oci);
    assert_layers_are(&server, &zstd, OCI_ZSTD_LAYER);
    assert_eq!(zstd.diff_ids, gzip.diff_ids);
    assert_eq!(server.metric("nixery_manifest_cache_hits_total"), 0);
    assert_eq!(
        server.metric("nixery_layers_built_total"),
        zstd.layers.len() as u64,
        "{}",
        server.context("not every zstd layer was built: a gzip record was taken")
    );
    // The zstd manifest is cached for the commit in turn.
    assert_eq!(fetch(&server, "shell/hello", &commit, &oci).digest, zstd.digest);
    assert_eq!(server.metric("nixery_manifest_cache_hits_total"), 1);

    server.restart_with(&[("NIXERY_LAYER_COMPRESSION", "gzip")]);
    let again = fetch(&server, "shell/hello", &commit, &oci);
    assert_eq!(again.digest, gzip.digest, "{}", server.context("switched back to gzip"));
    assert_eq!(server.metric("nixery_manifest_cache_hits_total"), 1);
    assert_eq!(server.metric("nixery_layers_built_total"), 0);
    // Without the manifest cache (another image of the same layers), the gzip records.
    let hello_lib = fetch(&server, "shell/hello-lib", &commit, &BOTH);
    assert_layers_are(&server, &hello_lib, DOCKER_GZIP_LAYER);
    let shared = hello_lib.layers.iter().filter(|l| gzip.layers.contains(l)).count();
    assert!(shared >= 2, "{}", server.context("hello-lib shares few gzip layers with hello"));
    assert!(server.metric("nixery_layer_cache_hits_total") >= shared as u64, "{}", server.context("gzip records"));
}
