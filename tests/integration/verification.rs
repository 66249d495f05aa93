//! Images you can verify: every image's SPDX SBOM as an OCI referrer, and with a signing key
//! cosign's signature and attestation, checked by the ecosystem's own tools: cosign 2.5
//! (`verify`, `verify-attestation --type spdxjson`), oras 1.2 (`discover`, `pull`) and PyPI's
//! spdx-tools (`pyspdxtools -i`), as shared/CLIENTS.md runs them.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::process::{COMMAND_TIMEOUT, output_timeout};
use crate::harness::{DOCKER_MANIFEST_V2, OCI_MANIFEST_V1, PackageRepo, Server, require_tool, sha256_digest};
use flate2::read::MultiGzDecoder;
use serde_json::Value;

const SPDX: &str = "application/spdx+json";
const SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const ATTESTATION: &str = "application/vnd.dev.cosign.artifact.att.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const COSIGN_FLAGS: [&str; 3] = ["--insecure-ignore-tlog=true", "--allow-insecure-registry", "--allow-http-registry"];

/// A cosign key pair written by `cosign generate-key-pair` with password `pw`: (key, pub).
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let mut generate = Command::new("cosign");
    generate.args(["generate-key-pair", "--output-key-prefix"]).arg(&prefix).env("COSIGN_PASSWORD", "pw");
    crate::harness::run(&mut generate);
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

/// A server signing with the key `key` (password `pw`), plus `env`.
fn signing_server(key: &Path, env: &[(&str, &str)]) -> Server {
    let key = key.to_str().expect("a UTF-8 temp path");
    let mut all = vec![("NIXERY_SIGNING_KEY", key), ("NIXERY_SIGNING_KEY_PASSWORD", "pw")];
    all.extend_from_slice(env);
    Server::start_with(&all)
}

/// Runs cosign with the flags for a plain-HTTP registry without a transparency log.
fn cosign(args: &[&str], public: &Path, image: &str) -> std::process::Output {
    let mut cmd = Command::new("cosign");
    cmd.args(args).arg("--key").arg(public).args(COSIGN_FLAGS).arg(image);
    output_timeout(&mut cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("cosign: {e}"))
}

/// The digest of NAME:latest as a Docker-and-OCI client gets it.
fn digest_of(server: &Server, name: &str) -> String {
    let (r, _) = server.manifest(name, "latest");
    r.expect_header("Docker-Content-Digest").to_owned()
}

/// The referrers list of `digest` as an image of `name` (optionally filtered).
fn referrers(server: &Server, name: &str, digest: &str, query: &str) -> (crate::harness::http::Response, Value) {
    let r = server.get_ok(&format!("/v2/{name}/referrers/{digest}{query}"), &[]);
    let json = r.json();
    (r, json)
}

/// The entry of `artifact_type` in a referrers list.
fn entry<'a>(server: &Server, list: &'a Value, artifact_type: &str) -> &'a Value {
    list["manifests"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["artifactType"] == artifact_type))
        .unwrap_or_else(|| server.fail(&format!("no {artifact_type} referrer in {list:#}")))
}

/// The SBOM (SPDX JSON) of `digest` as an image of `name`, through the referrers API.
fn sbom_of(server: &Server, name: &str, digest: &str) -> (String, Value) {
    let (_, list) = referrers(server, name, digest, "");
    let artifact = entry(server, &list, SPDX)["digest"].as_str().unwrap().to_owned();
    let manifest = server.get_ok(&format!("/v2/{name}/manifests/{artifact}"), &[]).json();
    assert_eq!(manifest["subject"]["digest"], digest, "the SBOM's subject");
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    (artifact, server.get_ok(&format!("/v2/{name}/blobs/{layer}"), &[]).json())
}

/// The store paths a manifest's layers hold (`nix/store/<base>` entries of the tars).
fn store_paths_in_layers(server: &Server, name: &str, manifest: &Value) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let blob = server.get_ok(&format!("/v2/{name}/blobs/{}", layer["digest"].as_str().unwrap()), &[]);
        let mut tar_bytes = Vec::new();
        MultiGzDecoder::new(&blob.body[..]).read_to_end(&mut tar_bytes).unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        for entry in archive.entries().unwrap() {
            let path = entry.unwrap().path().unwrap().to_string_lossy().into_owned();
            let mut parts = path.trim_start_matches("./").trim_start_matches('/').splitn(4, '/');
            if let (Some("nix"), Some("store"), Some(base)) = (parts.next(), parts.next(), parts.next())
                && !base.is_empty()
            {
                paths.insert(format!("/nix/store/{base}"));
            }
        }
    }
    paths
}

/// The package of the SBOM whose store path ends in `-name`.
fn package<'a>(sbom: &'a Value, name: &str) -> &'a Value {
    sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["packageFileName"].as_str().is_some_and(|f| f.ends_with(&format!("-{name}"))))
        .unwrap_or_else(|| panic!("no package {name} in {sbom:#}"))
}

fn pyspdxtools(server: &Server, file: &Path) {
    let out = output_timeout(Command::new("pyspdxtools").arg("-i").arg(file), COMMAND_TIMEOUT).unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || said.to_lowercase().contains("invalid") {
        server.fail(&format!("pyspdxtools refused {}: {said}", file.display()));
    }
}

/// cosign verifies the signature and the SPDX attestation of an image by tag, with the key
/// the registry publishes at /cosign.pub; a different key fails both.
#[test]
fn cosign_verifies_signatures_and_attestations_and_another_key_fails() {
    require_tool(&["cosign"]);
    let dir = crate::harness::temp_dir("cosign");
    let (key, _) = key_pair(dir.path(), "registry");
    let (_, other) = key_pair(dir.path(), "other");
    let server = signing_server(&key, &[]);
    let public = dir.path().join("published.pub");
    std::fs::write(&public, server.get_ok("/cosign.pub", &[]).body).unwrap();
    let image = server.image("hello-lib:latest");
    let digest = digest_of(&server, "hello-lib");

    let verified = cosign(&["verify"], &public, &image);
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{}", server.context(&format!("cosign verify failed: {verified:?}")));
    let claims: Value = serde_json::from_str(stdout.trim()).expect("cosign prints the verified payloads");
    assert_eq!(claims[0]["critical"]["image"]["docker-manifest-digest"], digest.as_str());
    assert_eq!(claims[0]["critical"]["identity"]["docker-reference"], "hello-lib", "the repository, not the Host");

    let attested = cosign(&["verify-attestation", "--type", "spdxjson"], &public, &image);
    assert!(attested.status.success(), "{}", server.context(&format!("verify-attestation failed: {attested:?}")));
    let envelope: Value = serde_json::from_str(String::from_utf8_lossy(&attested.stdout).trim()).unwrap();
    use base64::Engine as _;
    let statement = base64::engine::general_purpose::STANDARD.decode(envelope["payload"].as_str().unwrap()).unwrap();
    let statement: Value = serde_json::from_slice(&statement).unwrap();
    assert_eq!(statement["predicateType"], "https://spdx.dev/Document");
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.trim_start_matches("sha256:"));
    assert_eq!(statement["predicate"]["spdxVersion"], "SPDX-2.3");

    for args in [&["verify"][..], &["verify-attestation", "--type", "spdxjson"][..]] {
        let refused = cosign(args, &other, &image);
        assert!(!refused.status.success(), "{args:?} with another key succeeded");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("no matching"), "{args:?}: {said}");
    }
    // The start page shows the key.
    let page = server.get_ok("/", &[]).text();
    let pem = std::fs::read_to_string(&public).unwrap();
    assert!(page.contains(pem.lines().nth(1).unwrap()), "the start page shows the public key");
}

/// oras discovers the SBOM by the referrers API and pulls it; spdx-tools accepts it; it lists
/// every store path of the image's layers with its NAR hash, the requested package marked and
/// described, licenses as nixpkgs' meta gives them. The filter, the tag schema and the 404s.
#[test]
fn oras_finds_and_pulls_an_sbom_spdx_tools_accept_that_lists_every_store_path() {
    require_tool(&["oras", "pyspdxtools"]);
    let server = Server::start();
    let (r, manifest) = server.manifest("shell/hello-lib", "latest");
    let digest = r.expect_header("Docker-Content-Digest").to_owned();
    let reference = format!("{}@{digest}", server.image("shell/hello-lib"));

    let discovered =
        server.run(Command::new("oras").args(["discover", "--plain-http", "--format", "json", &reference]));
    let discovered: Value = serde_json::from_str(&discovered).unwrap();
    let sbom_entry = entry(&server, &discovered, SPDX);
    let artifact = sbom_entry["digest"].as_str().unwrap();
    assert!(
        discovered["manifests"].as_array().unwrap().iter().all(|e| e["artifactType"] == SPDX),
        "no key: no signatures"
    );

    let out = crate::harness::temp_dir("oras-pull");
    let pull = format!("{}@{artifact}", server.image("shell/hello-lib"));
    server.run(Command::new("oras").args(["pull", "--plain-http", &pull]).current_dir(out.path()));
    let file = out.path().join("sbom.spdx.json");
    pyspdxtools(&server, &file);
    let sbom: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();

    let listed: BTreeSet<String> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["packageFileName"].as_str().map(str::to_owned))
        .collect();
    let in_layers = store_paths_in_layers(&server, "shell/hello-lib", &manifest);
    assert!(in_layers.len() >= 8, "the image's store paths: {in_layers:?}");
    let missing: Vec<_> = in_layers.difference(&listed).collect();
    assert!(missing.is_empty(), "store paths of the layers missing from the SBOM: {missing:?}");
    for path in &in_layers {
        let hash = crate::harness::run(Command::new("nix-store").args(["--query", "--hash", path]));
        let hex = crate::harness::run(Command::new("nix").args([
            "--extra-experimental-features",
            "nix-command",
            "hash",
            "convert",
            "--hash-algo",
            "sha256",
            "--to",
            "base16",
            hash.trim(),
        ]));
        let p = sbom["packages"].as_array().unwrap().iter().find(|p| p["packageFileName"] == path.as_str()).unwrap();
        assert_eq!(p["checksums"][0]["checksumValue"], hex.trim(), "{path}: the NAR hash");
    }

    let hello_lib = package(&sbom, "hello-lib");
    assert_eq!(hello_lib["licenseDeclared"], "MIT AND Apache-2.0", "a list of lib.licenses");
    assert!(hello_lib["comment"].as_str().unwrap().contains("attribute hello-lib"), "marked as requested");
    let busybox = package(&sbom, "busybox-1.35.0");
    assert_eq!((busybox["name"].as_str(), busybox["versionInfo"].as_str()), (Some("busybox"), Some("1.35.0")));
    assert_eq!(busybox["licenseDeclared"], "GPL-2.0-only", "meta of a dependency, reached through buildInputs");
    assert_eq!(busybox["homepage"], "https://busybox.net");
    assert_eq!(package(&sbom, "greeting-1.0")["licenseDeclared"], "NOASSERTION", "a bare string");
    let relation = |from: &Value, kind: &str, to: &Value| {
        sbom["relationships"].as_array().unwrap().iter().any(|r| {
            r["spdxElementId"] == from["SPDXID"]
                && r["relationshipType"] == kind
                && r["relatedSpdxElement"] == to["SPDXID"]
        })
    };
    let image = sbom["packages"].as_array().unwrap().iter().find(|p| p["SPDXID"] == "SPDXRef-Image").unwrap();
    assert_eq!(image["versionInfo"], digest.as_str());
    assert!(relation(image, "DESCRIBES", hello_lib) && !relation(image, "DESCRIBES", busybox));
    assert!(relation(image, "CONTAINS", busybox));
    assert!(relation(hello_lib, "DEPENDS_ON", package(&sbom, "greeting-1.0")), "from the runtime graph");
    assert!(sbom["documentNamespace"].as_str().unwrap().ends_with(digest.trim_start_matches("sha256:")));
    assert!(!serde_json::to_string(&sbom).unwrap().contains(env!("CARGO_MANIFEST_DIR")), "no server path");

    // The OCI manifest of the same image has an SBOM of its own.
    let oci = server.get_ok("/v2/shell/hello-lib/manifests/latest", &[("Accept", OCI_MANIFEST_V1)]);
    let oci_digest = oci.expect_header("Docker-Content-Digest");
    assert_ne!(oci_digest, digest);
    let (_, oci_sbom) = sbom_of(&server, "shell/hello-lib", oci_digest);
    assert_eq!(oci_sbom["packages"].as_array().unwrap().len(), sbom["packages"].as_array().unwrap().len());

    // The filter, announced; the referrers tag schema; names and digests that are not it.
    let (r, filtered) = referrers(&server, "shell/hello-lib", &digest, &format!("?artifactType={SIGNATURE}"));
    assert_eq!(r.header("OCI-Filters-Applied"), Some("artifactType"));
    assert_eq!(filtered["manifests"], serde_json::json!([]));
    let hex = digest.trim_start_matches("sha256:");
    let tagged = server.get_ok(&format!("/v2/shell/hello-lib/manifests/sha256-{hex}"), &[]);
    assert_eq!(tagged.header("Content-Type"), Some(OCI_INDEX));
    assert_eq!(tagged.json()["manifests"][0]["digest"], artifact);
    let (_, other_name) = referrers(&server, "hello-lib", &digest, "");
    assert_eq!(other_name["manifests"], serde_json::json!([]), "not an image of hello-lib");
    for (name, tag) in [
        ("hello-lib", format!("sha256-{hex}")),
        ("shell/hello-lib", format!("sha256-{hex}.sig")),
        ("shell/hello-lib", format!("sha256-{}", "0".repeat(64))),
    ] {
        let r = server.request("GET", &format!("/v2/{name}/manifests/{tag}"), &[]);
        assert_eq!(r.status, 404, "{name}:{tag}: {}", r.describe());
        assert_eq!(r.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");
    }
}

/// Two servers with the same key and name, separate storage, and a git source: the same
/// SBOM, signature and attestation manifests, byte for byte, and the SBOM created at the
/// commit's time. After the SBOMs and records are deleted (storage of an older version), a
/// restarted server makes them again, the same.
#[test]
fn replicas_and_restarts_serve_the_same_artifacts() {
    require_tool(&["cosign", "git"]);
    let dir = crate::harness::temp_dir("replicas");
    let (key, _) = key_pair(dir.path(), "registry");
    let repo = PackageRepo::new();
    let url = repo.url();
    let env =
        [("NIXERY_PKGS_REPO", url.as_str()), ("NIXERY_PKGS_PATH", ""), ("NIXERY_REGISTRY_NAME", "registry.example")];
    let mut a = signing_server(&key, &env);
    let b = signing_server(&key, &env);
    let artifacts = |server: &Server| {
        let digest = digest_of(server, "hello");
        let hex = digest.trim_start_matches("sha256:").to_owned();
        let sig = server.get_ok(&format!("/v2/hello/manifests/sha256-{hex}.sig"), &[]);
        let att = server.get_ok(&format!("/v2/hello/manifests/sha256-{hex}.att"), &[]);
        let (sbom, spdx) = sbom_of(server, "hello", &digest);
        (digest, sha256_digest(&sig.body), sha256_digest(&att.body), sbom, spdx)
    };
    let from_a = artifacts(&a);
    let from_b = artifacts(&b);
    assert_eq!(from_a, from_b, "two replicas");
    let (digest, sig, _, sbom, spdx) = &from_a;
    let seconds: u64 = repo.git(&["log", "-1", "--format=%ct", "main"]).parse().unwrap();
    let committed =
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds)).to_string();
    assert_eq!(spdx["creationInfo"]["created"], committed.as_str(), "the commit's time");
    assert!(spdx["creationInfo"]["comment"].as_str().unwrap().contains(&repo.git(&["rev-parse", "main"])));
    let payload_ref = {
        let hex = digest.trim_start_matches("sha256:");
        let m = a.get_ok(&format!("/v2/hello/manifests/sha256-{hex}.sig"), &[]).json();
        let layer = m["layers"][0]["digest"].as_str().unwrap().to_owned();
        a.get_ok(&format!("/v2/hello/blobs/{layer}"), &[]).json()
    };
    assert_eq!(payload_ref["critical"]["identity"]["docker-reference"], "registry.example/hello");
    // The signature and SBOM manifests are served by digest too.
    for d in [sig, sbom] {
        assert_eq!(sha256_digest(&a.get_ok(&format!("/v2/hello/manifests/{d}"), &[]).body), *d);
    }

    for prefix in ["sboms", "subjects"] {
        std::fs::remove_dir_all(a.storage().join(prefix)).unwrap();
        std::fs::create_dir(a.storage().join(prefix)).unwrap();
    }
    a.restart();
    let again = artifacts(&a);
    assert_eq!(again, from_a, "made again after a restart from storage without them");
    assert!(a.log().contains("building an image again for its SBOM"), "{}", a.context("the SBOM was rebuilt"));
}

/// With two platforms, the index and each platform's manifest carry their own SBOM and
/// signature; the index's SBOM holds both images; cosign verifies the tag (the index).
#[test]
fn an_index_and_each_of_its_platforms_carry_their_own() {
    require_tool(&["cosign"]);
    let dir = crate::harness::temp_dir("index-artifacts");
    let (key, public) = key_pair(dir.path(), "registry");
    let server = signing_server(&key, &[("NIXERY_PLATFORMS", "linux/amd64,linux/arm64")]);
    let accept =
        [("Accept", DOCKER_MANIFEST_V2), ("Accept", DOCKER_LIST), ("Accept", OCI_MANIFEST_V1), ("Accept", OCI_INDEX)];
    let r = server.get_ok("/v2/hello/manifests/latest", &accept);
    let index_digest = r.expect_header("Docker-Content-Digest").to_owned();
    let index = r.json();
    let mut sboms = BTreeSet::new();
    for platform in index["manifests"].as_array().unwrap() {
        let digest = platform["digest"].as_str().unwrap();
        let (_, list) = referrers(&server, "hello", digest, "");
        for kind in [SPDX, SIGNATURE, ATTESTATION] {
            let e = entry(&server, &list, kind);
            let m = server.get_ok(&format!("/v2/hello/manifests/{}", e["digest"].as_str().unwrap()), &[]).json();
            assert_eq!(m["subject"]["digest"], digest, "{kind} of {platform}");
        }
        let (artifact, spdx) = sbom_of(&server, "hello", digest);
        assert!(sboms.insert(artifact), "each platform's SBOM is its own");
        let arch = platform["platform"]["architecture"].as_str().unwrap();
        assert!(spdx["name"].as_str().unwrap().contains(&format!("linux/{arch}")), "{}", spdx["name"]);
    }
    assert_eq!(sboms.len(), 2, "both platforms were looked at: {index}");
    let (_, index_sbom) = sbom_of(&server, "hello", &index_digest);
    let images = index_sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-Image-"))
        .count();
    assert_eq!(images, 2, "the index's SBOM holds both platforms' images");
    let verified = cosign(&["verify"], &public, &server.image("hello:latest"));
    assert!(verified.status.success(), "{}", server.context(&format!("cosign verify of the index: {verified:?}")));
    assert!(String::from_utf8_lossy(&verified.stdout).contains(&index_digest), "cosign verified the index");
}

/// Behind authentication (htpasswd, nothing anonymous), what cosign and oras fetch by digest is linked to the
/// image's name when they find it: oras discovers and pulls the SBOM, cosign verifies the
/// signature and the attestation, each with the user's credentials; under another name the
/// same SBOM digest is unknown, and without credentials the referrers list is challenged.
#[test]
fn signatures_and_sboms_verify_behind_authentication() {
    require_tool(&["cosign", "oras"]);
    let dir = crate::harness::temp_dir("cosign-auth");
    let (key, _) = key_pair(dir.path(), "registry");
    let file = crate::harness::credentials::htpasswd(dir.path(), &[("alice", "alice-pw")]);
    let server =
        signing_server(&key, &[("NIXERY_AUTH_HTPASSWD", file.to_str().unwrap()), ("NIXERY_ANONYMOUS", "none")]);
    let basic = crate::harness::credentials::basic("alice", "alice-pw");
    let auth = [("Authorization", basic.as_str())];
    let public = dir.path().join("published.pub");
    std::fs::write(&public, server.get_ok("/cosign.pub", &auth).body).unwrap();
    let digest = server
        .get_ok("/v2/hello-lib/manifests/latest", &[auth[0], ("Accept", OCI_MANIFEST_V1)])
        .expect_header("Docker-Content-Digest")
        .to_owned();
    let reference = format!("{}@{digest}", server.image("hello-lib"));

    let unauthenticated = server.get(&format!("/v2/hello-lib/referrers/{digest}"));
    assert_eq!(unauthenticated.status, 401, "{}", unauthenticated.describe());

    let oras_creds = ["--plain-http", "-u", "alice", "-p", "alice-pw"];
    let discovered =
        server.run(Command::new("oras").args(["discover", "--format", "json"]).args(oras_creds).arg(&reference));
    let discovered: Value = serde_json::from_str(&discovered).unwrap();
    let artifact = entry(&server, &discovered, SPDX)["digest"].as_str().unwrap().to_owned();
    let out = crate::harness::temp_dir("oras-auth-pull");
    let pull = format!("{}@{artifact}", server.image("hello-lib"));
    server.run(Command::new("oras").arg("pull").args(oras_creds).arg(&pull).current_dir(out.path()));
    let sbom: Value = serde_json::from_slice(&std::fs::read(out.path().join("sbom.spdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");

    let image = server.image("hello-lib:latest");
    let creds = ["--registry-username", "alice", "--registry-password", "alice-pw"];
    for args in [&["verify"][..], &["verify-attestation", "--type", "spdxjson"][..]] {
        let all: Vec<&str> = args.iter().chain(&creds).copied().collect();
        let verified = cosign(&all, &public, &image);
        assert!(verified.status.success(), "{}", server.context(&format!("cosign {args:?}: {verified:?}")));
    }

    let elsewhere =
        server.request("GET", &format!("/v2/hello/manifests/{artifact}"), &[auth[0], ("Accept", OCI_MANIFEST_V1)]);
    assert_eq!(elsewhere.status, 404, "an artifact of hello-lib read as hello's: {}", elsewhere.describe());
}
