//! One tag for every architecture (`NIXERY_PLATFORMS=linux/amd64,linux/arm64`): clients
//! that accept an image index get one listing both platforms' manifests and pick theirs;
//! clients that do not get the host's (amd64) manifest. Proven with skopeo, containerd,
//! podman and docker, each pulling the way users do.
//!
//! The test package set builds every target on the host and records the target system in
//! each package's `nix-support/system`: an arm64 image's files say `aarch64-linux`. All but
//! `native`, whose derivation declares the target system as nixpkgs' do: a server whose Nix
//! cannot build for aarch64-linux must refuse its arm64 image as the image's failure.

use std::fs;
use std::io::Read;
use std::process::Command;
use std::time::Duration;

use crate::harness::process::{COMMAND_TIMEOUT, output_timeout, wait_until};
use crate::harness::{
    Containerd, DOCKER_LIST, DOCKER_MANIFEST_V2, Docker, INDEX_ACCEPT, NIX_WITHOUT_AARCH64, OCI_INDEX, OCI_MANIFEST_V1,
    Podman, Server, nonce, pull_and_unpack, require_tool, sha256_digest,
};
use flate2::read::MultiGzDecoder;
use serde_json::{Value, json};

const BOTH: &str = "linux/amd64,linux/arm64";

fn server() -> Server {
    Server::start_with(&[("NIXERY_PLATFORMS", BOTH)])
}

/// The index entry for `arch`, from an index's JSON.
fn entry<'a>(server: &Server, index: &'a Value, arch: &str) -> &'a Value {
    index["manifests"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["platform"]["architecture"] == arch))
        .unwrap_or_else(|| server.fail(&format!("the index has no {arch} entry: {index:#}")))
}

/// The config JSON a manifest (JSON) points at, fetched from the registry.
fn config_of(server: &Server, name: &str, manifest: &Value) -> Value {
    let digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_else(|| server.fail(&format!("manifest has no config: {manifest:#}")));
    server.get_ok(&format!("/v2/{name}/blobs/{digest}"), &[]).json()
}

/// skopeo inspect --raw shows the index (both platforms); the index and each platform's
/// manifest are served by digest; a client accepting no index gets exactly the amd64 entry's
/// manifest; an OCI-only client an OCI index of OCI manifests; `arm64/` names no index.
#[test]
fn the_index_lists_both_platforms_and_every_document_is_stored_by_digest() {
    require_tool(&["skopeo"]);
    let server = server();
    let image = format!("docker://{}", server.image("hello:latest"));
    let raw = server.run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &image]));
    let index: Value = serde_json::from_str(&raw)
        .unwrap_or_else(|e| server.fail(&format!("skopeo inspect --raw printed no JSON ({e}): {raw}")));
    assert_eq!(index["mediaType"], DOCKER_LIST, "{}", server.context(&raw));
    let entries = index["manifests"].as_array().unwrap_or_else(|| server.fail(&raw));
    assert_eq!(entries.len(), 2, "{}", server.context(&raw));

    // The index as served, and by its digest.
    let by_tag = server.get_ok("/v2/hello/manifests/latest", &INDEX_ACCEPT);
    assert_eq!(by_tag.json(), index, "{}", server.context("skopeo saw another index"));
    assert_eq!(by_tag.expect_header("Content-Type"), DOCKER_LIST);
    let index_digest = by_tag.expect_header("Docker-Content-Digest").to_owned();
    assert_eq!(index_digest, sha256_digest(&by_tag.body));
    let by_digest = server.get_ok(&format!("/v2/hello/manifests/{index_digest}"), &[]);
    assert_eq!(by_digest.body, by_tag.body, "{}", by_digest.describe());
    assert_eq!(by_digest.expect_header("Content-Type"), DOCKER_LIST);

    // Each platform's manifest by digest: its bytes, its type, its config's architecture.
    for (arch, system) in [("amd64", "x86_64-linux"), ("arm64", "aarch64-linux")] {
        let e = entry(&server, &index, arch);
        assert_eq!(e["platform"]["os"], "linux", "{e}");
        assert_eq!(e["mediaType"], DOCKER_MANIFEST_V2, "{e}");
        let digest = e["digest"].as_str().unwrap();
        let m = server.get_ok(&format!("/v2/hello/manifests/{digest}"), &[]);
        assert_eq!(sha256_digest(&m.body), digest, "{}", m.describe());
        assert_eq!(m.body.len() as u64, e["size"].as_u64().unwrap());
        assert_eq!(m.expect_header("Content-Type"), DOCKER_MANIFEST_V2);
        let config = config_of(&server, "hello", &m.json());
        assert_eq!(config["architecture"], arch, "{}", server.context(&format!("{system} config: {config:#}")));
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/hello"]), "{config:#}");
    }
    assert_ne!(entry(&server, &index, "amd64")["digest"], entry(&server, &index, "arm64")["digest"]);

    // No index accepted: the host's manifest, the very one the index lists for amd64.
    let (plain, _) = server.manifest("hello", "latest");
    assert_eq!(plain.expect_header("Content-Type"), DOCKER_MANIFEST_V2, "{}", plain.describe());
    assert_eq!(plain.expect_header("Docker-Content-Digest"), entry(&server, &index, "amd64")["digest"]);

    // OCI only: an OCI index of OCI manifests.
    let oci = server.get_ok("/v2/hello/manifests/latest", &[("Accept", OCI_MANIFEST_V1), ("Accept", OCI_INDEX)]);
    let oci_index = oci.json();
    assert_eq!(oci.expect_header("Content-Type"), OCI_INDEX);
    assert_eq!(oci_index["mediaType"], OCI_INDEX);
    assert_eq!(entry(&server, &oci_index, "arm64")["mediaType"], OCI_MANIFEST_V1, "{oci_index:#}");

    // A name that selects arm64 is that platform's image, never an index.
    let arm = server.get_ok("/v2/arm64/hello/manifests/latest", &INDEX_ACCEPT);
    assert_eq!(arm.expect_header("Content-Type"), DOCKER_MANIFEST_V2, "{}", arm.describe());
    assert_eq!(config_of(&server, "arm64/hello", &arm.json())["architecture"], "arm64");

    // Every answer above came from two builds, one per platform, each cached under its own
    // key; the index, asked again, is served from memory.
    assert_eq!(server.metric("nixery_image_builds_total"), 2, "{}", server.context("builds"));
    let warm = server.metric_labelled("nixery_manifest_requests_total", "cache=\"warm\"");
    let again = server.get_ok("/v2/hello/manifests/latest", &INDEX_ACCEPT);
    assert_eq!(again.body, by_tag.body);
    assert_eq!(server.metric_labelled("nixery_manifest_requests_total", "cache=\"warm\""), warm + 1);
}

/// `nix-support/system` of the package `/bin/hello` belongs to, in an unpacked image.
fn hello_system(server: &Server, img: &crate::harness::skopeo_umoci::Unpacked) -> String {
    let link = fs::read_link(img.rootfs.join("bin/hello"))
        .unwrap_or_else(|e| server.fail(&format!("/bin/hello is not a symlink ({e})\n{}", img.listing())));
    let package = link.parent().and_then(|p| p.parent()).unwrap();
    let system_path = format!("{}/nix-support/system", package.display());
    let host = img.resolve(&system_path).unwrap_or_else(|| server.fail(&format!("no {system_path}")));
    fs::read_to_string(host).unwrap().trim().to_owned()
}

/// `skopeo --override-arch arm64 copy` gets the arm64 image (config and files); a plain
/// copy the amd64 one, which runs.
#[test]
fn skopeo_override_arch_gets_arm64_and_a_plain_copy_gets_amd64() {
    require_tool(&["skopeo", "umoci", "chroot"]);
    let server = server();
    let image = format!("docker://{}", server.image("hello:latest"));
    let inspect = |args: &[&str]| -> Value {
        let out = server.run(Command::new("skopeo").args(args).args(["inspect", "--tls-verify=false", &image]));
        serde_json::from_str(&out).unwrap_or_else(|e| server.fail(&format!("no JSON ({e}): {out}")))
    };
    assert_eq!(inspect(&["--override-arch", "arm64"])["Architecture"], "arm64");
    assert_eq!(inspect(&[])["Architecture"], "amd64");

    let arm = pull_and_unpack(&server, "hello:latest", &["--override-arch", "arm64"]);
    assert_eq!(hello_system(&server, &arm), "aarch64-linux", "{}", server.context("the arm64 copy"));
    let amd = pull_and_unpack(&server, "hello:latest", &[]);
    assert_eq!(hello_system(&server, &amd), "x86_64-linux", "{}", server.context("the plain copy"));
    assert_eq!(amd.chroot(&server, &["/bin/hello"]).trim(), "Hello, world!");
}

/// `ctr --address A content get DIGEST`: the bytes containerd stored.
fn content(server: &Server, containerd: &Containerd, digest: &str) -> Vec<u8> {
    let out = output_timeout(containerd.ctr().args(["content", "get", digest]), COMMAND_TIMEOUT)
        .unwrap_or_else(|e| server.fail(&e));
    if !out.status.success() {
        server.fail(&format!("ctr content get {digest}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    out.stdout
}

/// The contents of the files named `nix-support/system` in the gzipped layer `blob`.
fn systems_in_layer(blob: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut archive = tar::Archive::new(MultiGzDecoder::new(blob));
    for e in archive.entries().expect("a tar layer") {
        let mut e = e.expect("a tar entry");
        if e.path().expect("a path").ends_with("nix-support/system") {
            let mut text = String::new();
            e.read_to_string(&mut text).expect("a text file");
            found.push(text.trim().to_owned());
        }
    }
    found
}

/// containerd (the kubelet's path): `--platform linux/arm64` fetches the arm64 manifest,
/// config and layers only, and their files say aarch64-linux; a plain pull gets amd64, whose
/// default command (hello's meta.mainProgram) runs with no command given.
#[test]
fn containerd_pulls_the_platform_it_is_told_and_the_host_s_by_default() {
    require_tool(&["containerd", "ctr", "runc"]);
    let server = server();
    let containerd = Containerd::start();
    let image = server.image("hello:latest");
    let index = server.get_ok("/v2/hello/manifests/latest", &INDEX_ACCEPT).json();
    let manifest_of = |arch: &str| {
        let digest = entry(&server, &index, arch)["digest"].as_str().unwrap().to_owned();
        server.get_ok(&format!("/v2/hello/manifests/{digest}"), &[]).json()
    };
    let (arm, amd) = (manifest_of("arm64"), manifest_of("amd64"));

    containerd.ctr_ok(&server, &["images", "pull", "--plain-http", "--platform", "linux/arm64", &image]);
    let config: Value =
        serde_json::from_slice(&content(&server, &containerd, arm["config"]["digest"].as_str().unwrap()))
            .unwrap_or_else(|e| server.fail(&format!("the arm64 config containerd stored is no JSON: {e}")));
    assert_eq!(config["architecture"], "arm64", "{config:#}");
    let mut systems = Vec::new();
    for layer in arm["layers"].as_array().unwrap() {
        systems.extend(systems_in_layer(&content(&server, &containerd, layer["digest"].as_str().unwrap())));
    }
    assert!(
        !systems.is_empty() && systems.iter().all(|s| s == "aarch64-linux"),
        "{}",
        server.context(&format!("{systems:?}"))
    );
    let stored = containerd.ctr_ok(&server, &["content", "ls", "-q"]);
    let amd_config = amd["config"]["digest"].as_str().unwrap();
    assert!(!stored.contains(amd_config), "{}", server.context("containerd fetched the amd64 config too"));

    containerd.ctr_ok(&server, &["images", "pull", "--plain-http", &image]);
    let stored = containerd.ctr_ok(&server, &["content", "ls", "-q"]);
    assert!(stored.contains(amd_config), "{}", server.context("a plain pull did not fetch amd64"));
    let id = format!("hello-{}", nonce());
    let out =
        containerd.try_ctr(&["run", "--rm", &image, &id], Duration::from_secs(120)).unwrap_or_else(|e| server.fail(&e));
    assert_eq!(out.trim(), "Hello, world!", "{}", server.context("the default command under containerd"));
}

/// podman and docker pull the index as users type it: they get amd64, and its default
/// command runs with no command given.
#[test]
fn podman_and_docker_pull_amd64_from_the_index_and_run_its_default_command() {
    require_tool(&["podman", "runc", "dockerd", "docker"]);
    let server = server();
    let image = server.image("hello:latest");

    let podman = Podman::new();
    server.run(podman.cmd().args(["pull", "--tls-verify=false", &image]));
    let arch = server.run(podman.cmd().args(["image", "inspect", "--format", "{{.Architecture}}", &image]));
    assert_eq!(arch.trim(), "amd64", "{}", server.context("podman's architecture"));
    let out = server.run(podman.cmd().args(["run", "--rm", &image]));
    assert_eq!(out.trim(), "Hello, world!", "{}", server.context("podman ran no default command"));

    let docker = Docker::start();
    docker.pull(&server, &image);
    let arch = docker.docker_ok(&server, &["image", "inspect", "--format", "{{.Architecture}}", &image]);
    assert_eq!(arch.trim(), "amd64", "{}", server.context("docker's architecture"));
    let out = docker.run(&server, &image, &[]);
    assert_eq!(out.trim(), "Hello, world!", "{}", server.context("docker ran no default command"));
}

/// A package that fails on one platform fails the index, naming the platform and the
/// cause; a client accepting no index still gets the platform that builds.
#[test]
fn a_failing_platform_fails_the_index_and_is_named() {
    let server = server();
    let r = server.request("GET", "/v2/x86only/manifests/latest", &INDEX_ACCEPT);
    assert_eq!(r.status, 422, "{}", server.context(&r.describe()));
    let message = r.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.starts_with("linux/arm64: "), "{}", server.context(&message));
    assert!(message.contains("x86only has no aarch64 port"), "{}", server.context(&message));
    assert_eq!(r.json()["errors"][0]["detail"]["platform"], "linux/arm64", "{}", r.describe());

    let (plain, manifest) = server.manifest("x86only", "latest");
    assert_eq!(plain.expect_header("Content-Type"), DOCKER_MANIFEST_V2);
    assert_eq!(config_of(&server, "x86only", &manifest)["architecture"], "amd64");
}

/// A commit tag's index is stored like its manifests: after a restart the same index (and
/// each platform's manifest by digest) is served from storage, with no Nix and no build.
#[test]
fn a_pinned_index_survives_a_restart_without_building() {
    let repo = crate::harness::PackageRepo::new();
    let mut server =
        Server::start_with(&[("NIXERY_PKGS_REPO", &repo.url()), ("NIXERY_PKGS_PATH", ""), ("NIXERY_PLATFORMS", BOTH)]);
    let path = format!("/v2/hello/manifests/{}", repo.first);
    let first = server.get_ok(&path, &INDEX_ACCEPT);
    assert_eq!(first.expect_header("Content-Type"), DOCKER_LIST, "{}", first.describe());
    assert_eq!(server.metric("nixery_image_builds_total"), 2);

    server.restart();
    let again = server.get_ok(&path, &INDEX_ACCEPT);
    assert_eq!(again.body, first.body, "{}", server.context("another index after a restart"));
    assert_eq!(server.metric("nixery_image_builds_total"), 0, "{}", server.metrics());
    assert_eq!(server.metric("nixery_nix_invocations_total"), 0, "{}", server.metrics());
    assert_eq!(server.metric_labelled("nixery_manifest_requests_total", "cache=\"stored\""), 1);
    for arch in ["amd64", "arm64"] {
        let digest = entry(&server, &again.json(), arch)["digest"].as_str().unwrap().to_owned();
        server.get_ok(&format!("/v2/hello/manifests/{digest}"), &[]);
    }
}

/// Issue 17: an index whose arm64 image needs a build for aarch64-linux, on a server whose
/// Nix cannot build for it, is the image's failure: 422 naming the platform, the system,
/// the derivation and the package, with the data in `detail`; logged at WARN as every
/// failure of an image, not at ERROR as a fault of the server. `arm64/native` says the same
/// without an index; the amd64 image builds. (Every client's output: client_errors.rs.)
#[test]
fn a_platform_nix_cannot_build_for_is_the_images_failure() {
    let server = Server::start_with(&[("NIXERY_PLATFORMS", BOTH), ("NIX_CONFIG", NIX_WITHOUT_AARCH64)]);
    let r = server.request("GET", "/v2/native/manifests/latest", &INDEX_ACCEPT);
    assert_eq!(r.status, 422, "{}", server.context(&r.describe()));
    let error = &r.json()["errors"][0];
    assert_eq!(error["code"], "MANIFEST_UNKNOWN", "{}", r.describe());
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("linux/arm64: cannot build /nix/store/"), "{message}");
    assert!(message.contains("-native-1.0.drv for aarch64-linux (needed by native)"), "{message}");
    assert!(message.contains("builds for x86_64-linux only"), "{message}");
    let detail = &error["detail"];
    assert_eq!(detail["platform"], "linux/arm64", "{detail}");
    assert_eq!(detail["needs"], "machine", "{detail}");
    assert_eq!((&detail["system"], &detail["foreign_system"]), (&json!("aarch64-linux"), &json!(true)), "{detail}");
    assert_eq!(detail["host_system"], "x86_64-linux", "{detail}");
    assert!(detail["derivation"].as_str().unwrap_or_default().ends_with("-native-1.0.drv"), "{detail}");
    assert_eq!(detail["packages"], json!(["native"]), "{detail}");
    let warned = |line: &str| line.contains("WARN") && line.contains("native:latest") && line.contains("aarch64-linux");
    assert!(wait_until(Duration::from_secs(10), || server.log().lines().any(warned)), "{}", server.context("no WARN"));
    // The request's own line is the last the answer writes: an ERROR would be before it.
    let answered = || server.log().contains("path=/v2/native/manifests/latest status=422");
    assert!(wait_until(Duration::from_secs(10), answered), "{}", server.context("no request line"));
    assert!(!server.log().contains("ERROR"), "{}", server.context("logged as a server fault"));

    let r = server.get("/v2/arm64/native/manifests/latest");
    assert_eq!(r.status, 422, "{}", server.context(&r.describe()));
    let message = r.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.starts_with("cannot build /nix/store/") && message.contains("for aarch64-linux"), "{message}");
    let (plain, manifest) = server.manifest("native", "latest");
    assert_eq!(plain.expect_header("Content-Type"), DOCKER_MANIFEST_V2);
    assert_eq!(config_of(&server, "native", &manifest)["architecture"], "amd64");
}
