//! The OCI distribution-spec conformance suite (v1.1.1, `conformance/`), as HTTP tests
//! against the real binary: the suite is Go and cannot be fetched here, so its cases that a
//! registry without push can run are written out, each under the suite's own name, with the
//! suite's expectations.
//!
//! The suite runs its pull workflow in two modes; with `OCI_TAG_NAME`, `OCI_MANIFEST_DIGEST`
//! and `OCI_BLOB_DIGEST` set it pushes nothing and pulls what is named, which is how a
//! registry that builds images is tested: the tag is `latest` of an image built here, the
//! manifest digest that of its OCI manifest (the suite asks with `Accept` OCI), the blob its
//! config. Covered, from `01_pull_test.go` (all 14 specs that mode runs; the setup specs
//! that push and the teardown are skipped there, the teardown's DELETEs are checked
//! anyway, 405 being an answer it accepts):
//! - Setup: "Get tag name from environment" (and the spec's "Determining Support", `GET /v2/`);
//! - Pull blobs: HEAD/GET of a nonexistent blob → 404, HEAD/GET of an existing one → 200
//!   (`Docker-Content-Digest`, when sent, the blob's);
//! - Pull manifests: HEAD/GET of `.INVALID_MANIFEST_NAME` → 404 (the two the issue found
//!   failing: the reference is no valid tag, and this registry answered 400), HEAD/GET of
//!   manifest[0] and manifest[1] by digest and of the tag → 200;
//! - Error codes: GET `manifests/sha256:totallywrong` (with a body) → 400 or 404, and a
//!   400's first error code one of the spec's.
//!
//! From `03_discovery_test.go` (content discovery), the specs that need no pushed content:
//! the tag list (200), `n` limiting it, referrers of a nonexistent manifest (200, empty
//! index, `Content-Type` of an image index). Not covered: "GET start of tag is set by `last`"
//! indexes `tagList[n/2 - 1]`, which panics on a one-tag repository in the suite itself
//! (`last` is tested by the spec's text instead), and the referrers specs that need pushed
//! referrers. The push and content-management workflows do not apply (no push).

use crate::harness::http::Response;
use crate::harness::{OCI_MANIFEST_V1, Server, sha256_digest};

/// The suite's `errorCodes`: the codes the spec lists.
const SPEC_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
];

/// The suite's `nonexistentManifest`.
const NONEXISTENT_MANIFEST: &str = ".INVALID_MANIFEST_NAME";

/// The suite's `dummyDigest`: the digest of "hello world".
fn dummy_digest() -> String {
    sha256_digest(b"hello world")
}

/// What the suite is given: the namespace (`OCI_NAMESPACE`), `OCI_TAG_NAME`,
/// `OCI_MANIFEST_DIGEST` and `OCI_BLOB_DIGEST`.
struct Target {
    name: &'static str,
    tag: &'static str,
    manifest: String,
    blob: String,
}

impl Target {
    fn of(server: &Server) -> Target {
        let (name, tag) = ("shell/hello", "latest");
        let r = server.get_ok(&format!("/v2/{name}/manifests/{tag}"), &[("Accept", OCI_MANIFEST_V1)]);
        let manifest = sha256_digest(&r.body);
        let blob = r.json()["config"]["digest"].as_str().expect("a config digest").to_owned();
        Target { name, tag, manifest, blob }
    }

    fn path(&self, endpoint: &str) -> String {
        format!("/v2/{}/{endpoint}", self.name)
    }
}

/// A case of the suite: its name and its check.
type Case<'a> = (&'static str, Box<dyn Fn() -> Result<(), String> + 'a>);

/// Runs every case and fails with the list of those that failed (the suite's report).
fn run_cases(server: &Server, cases: Vec<Case>) {
    let total = cases.len();
    let failed: Vec<String> =
        cases.into_iter().filter_map(|(name, case)| case().err().map(|why| format!("{name}: {why}"))).collect();
    assert!(
        failed.is_empty(),
        "{}",
        server.context(&format!("{} passed, {} failed:\n{}", total - failed.len(), failed.len(), failed.join("\n\n")))
    );
}

fn status(r: &Response, expected: &[u16]) -> Result<(), String> {
    if expected.contains(&r.status) { Ok(()) } else { Err(format!("expected {expected:?}\n{}", r.describe())) }
}

/// `Docker-Content-Digest`, when sent, must be `digest` (the suite's `if h != ""`).
fn digest_header(r: &Response, digest: &str) -> Result<(), String> {
    match r.header("Docker-Content-Digest") {
        Some(h) if h != digest => Err(format!("Docker-Content-Digest {h}, expected {digest}\n{}", r.describe())),
        _ => Ok(()),
    }
}

#[test]
fn pull_workflow_of_the_conformance_suite() {
    let server = Server::start();
    let t = Target::of(&server);
    let oci = [("Accept", OCI_MANIFEST_V1)];
    let req =
        |method: &str, endpoint: &str, headers: &[(&str, &str)]| server.request(method, &t.path(endpoint), headers);
    let cases: Vec<Case> = vec![
        // The spec's "Determining Support" (end-1).
        ("GET /v2/ should yield 200", Box::new(|| status(&server.get("/v2/"), &[200]))),
        ("Get tag name from environment", Box::new(|| if t.tag.is_empty() { Err("no tag".into()) } else { Ok(()) })),
        (
            "HEAD request to nonexistent blob should result in 404 response",
            Box::new(|| status(&req("HEAD", &format!("blobs/{}", dummy_digest()), &[]), &[404])),
        ),
        (
            "HEAD request to existing blob should yield 200",
            Box::new(|| {
                let r = req("HEAD", &format!("blobs/{}", t.blob), &[]);
                status(&r, &[200]).and(digest_header(&r, &t.blob))
            }),
        ),
        (
            "GET nonexistent blob should result in 404 response",
            Box::new(|| status(&req("GET", &format!("blobs/{}", dummy_digest()), &[]), &[404])),
        ),
        (
            "GET request to existing blob URL should yield 200",
            Box::new(|| status(&req("GET", &format!("blobs/{}", t.blob), &[]), &[200])),
        ),
        (
            "HEAD request to nonexistent manifest should return 404",
            Box::new(|| status(&req("HEAD", &format!("manifests/{NONEXISTENT_MANIFEST}"), &[]), &[404])),
        ),
        (
            "HEAD request to manifest[0] path (digest) should yield 200 response",
            Box::new(|| {
                let r = req("HEAD", &format!("manifests/{}", t.manifest), &oci);
                status(&r, &[200]).and(digest_header(&r, &t.manifest))
            }),
        ),
        (
            "HEAD request to manifest[1] path (digest) should yield 200 response",
            Box::new(|| {
                let r = req("HEAD", &format!("manifests/{}", t.manifest), &oci);
                status(&r, &[200]).and(digest_header(&r, &t.manifest))
            }),
        ),
        (
            "HEAD request to manifest path (tag) should yield 200 response",
            Box::new(|| {
                let r = req("HEAD", &format!("manifests/{}", t.tag), &oci);
                status(&r, &[200]).and(digest_header(&r, &t.manifest))
            }),
        ),
        (
            "GET nonexistent manifest should return 404",
            Box::new(|| status(&req("GET", &format!("manifests/{NONEXISTENT_MANIFEST}"), &[]), &[404])),
        ),
        (
            "GET request to manifest[0] path (digest) should yield 200 response",
            Box::new(|| status(&req("GET", &format!("manifests/{}", t.manifest), &oci), &[200])),
        ),
        (
            "GET request to manifest[1] path (digest) should yield 200 response",
            Box::new(|| status(&req("GET", &format!("manifests/{}", t.manifest), &oci), &[200])),
        ),
        (
            "GET request to manifest path (tag) should yield 200 response",
            Box::new(|| status(&req("GET", &format!("manifests/{}", t.tag), &oci), &[200])),
        ),
        (
            "400 response body should contain OCI-conforming JSON message",
            Box::new(|| {
                // A GET with a Content-Type and a body, as the suite sends it.
                let body = "blablabla";
                let request = format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {OCI_MANIFEST_V1}\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    t.path("manifests/sha256:totallywrong"),
                    server.addr(),
                    body.len()
                );
                let r = server.raw(request.as_bytes());
                status(&r, &[400, 404])?;
                if r.status == 400 {
                    let code = r.json()["errors"][0]["code"].as_str().unwrap_or_default().to_owned();
                    if !SPEC_CODES.contains(&code.as_str()) {
                        return Err(format!("code {code:?} is not one of the spec's\n{}", r.describe()));
                    }
                }
                Ok(())
            }),
        ),
        // The teardown's DELETEs (run by the suite only after its own setup): 2xx or 405.
        (
            "Delete manifest[0] created in setup",
            Box::new(|| status(&req("DELETE", &format!("manifests/{}", t.manifest), &[]), &[200, 202, 204, 405])),
        ),
        (
            "Delete config[0] blob created in setup",
            Box::new(|| status(&req("DELETE", &format!("blobs/{}", t.blob), &[]), &[200, 202, 204, 404, 405])),
        ),
    ];
    run_cases(&server, cases);
}

#[test]
fn content_discovery_without_pushed_content() {
    let server = Server::start();
    let t = Target::of(&server);
    let tags = |query: &str| -> Result<Vec<String>, String> {
        let r = server.get(&format!("{}{query}", t.path("tags/list")));
        status(&r, &[200])?;
        serde_json::from_value(r.json()["tags"].clone()).map_err(|e| format!("{e}\n{}", r.describe()))
    };
    let cases: Vec<Case> = vec![
        (
            "GET request to list tags should yield 200 response",
            Box::new(|| {
                let list = tags("")?;
                if list.contains(&t.tag.to_owned()) { Ok(()) } else { Err(format!("{list:?} lacks {}", t.tag)) }
            }),
        ),
        (
            "GET number of tags should be limitable by `n` query parameter",
            Box::new(|| {
                let n = tags("")?.len() / 2;
                let limited = tags(&format!("?n={n}"))?;
                if limited.len() == n { Ok(()) } else { Err(format!("n={n} gave {limited:?}")) }
            }),
        ),
        (
            "GET request to nonexistent blob should result in empty 200 response",
            Box::new(|| {
                let r = server.get(&t.path(&format!("referrers/{}", dummy_digest())));
                status(&r, &[200])?;
                if r.header("Content-Type") != Some("application/vnd.oci.image.index.v1+json") {
                    return Err(format!("not an image index\n{}", r.describe()));
                }
                match r.json()["manifests"].as_array() {
                    Some(m) if m.is_empty() => Ok(()),
                    _ => Err(format!("manifests is not an empty list\n{}", r.describe())),
                }
            }),
        ),
    ];
    run_cases(&server, cases);

    // The spec's text ("Listing Tags"): `n=0` is an empty list and never a `Link`; `last`
    // starts after the tag it names; a bad `n` is a 400 with a registry error.
    let r = server.get(&t.path("tags/list?n=0"));
    assert_eq!((r.status, r.json()["tags"].clone()), (200, serde_json::json!([])), "{}", r.describe());
    assert_eq!(r.header("Link"), None);
    assert_eq!(tags(&format!("?last={}", t.tag)).unwrap(), Vec::<String>::new());
    assert_eq!(tags("?n=5&last=a").unwrap(), ["latest"]);
    let r = server.get(&t.path("tags/list?n=many"));
    assert_eq!(r.status, 400, "{}", r.describe());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    // Referrers of a real manifest: its SBOM; filtered by another type, an empty index, the
    // filter said applied; a bad digest is 400.
    let r = server.get(&t.path(&format!("referrers/{}", t.manifest)));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["manifests"][0]["artifactType"], "application/spdx+json", "{}", r.describe());
    let r = server.get(&t.path(&format!("referrers/{}?artifactType=application/vnd.example.sbom.v1", t.manifest)));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    assert_eq!(r.header("OCI-Filters-Applied"), Some("artifactType"));
    let r = server.get(&t.path("referrers/sha256:totallywrong"));
    assert_eq!(r.status, 400, "{}", r.describe());
    assert_eq!(r.json()["errors"][0]["code"], "DIGEST_INVALID");
}
