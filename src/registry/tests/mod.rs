//! Router tests without sockets, Nix or a disk (the in-memory storage backend): everything
//! that is answered before a build, and blobs. Here: the shared set-up and the rules every
//! endpoint follows; [`blobs`] and [`manifests`] have their endpoints' cases.

mod access;
mod blobs;
mod manifests;

use super::*;
use crate::config::Config;
use crate::digest::Digest;
use crate::storage::ObjectKey;
use axum::body::Body;
use axum::http::Request;
use axum::http::StatusCode;
use std::sync::Arc;
use tower::ServiceExt;

fn state() -> AppState {
    state_with(&[])
}

/// The state of a server started with `args` added to its command line.
fn state_with(args: &[&'static str]) -> AppState {
    let config = Config::parse_from(["nixery", "--pkgs-path", "/"].into_iter().chain(args.iter().copied())).unwrap();
    AppState::in_memory(&config)
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = crate::app(state.clone()).oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
    (status, headers, body)
}

fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    v["errors"][0]["code"].as_str().unwrap().to_owned()
}

/// A state holding the blob `0123456789abcdef`; its URI.
async fn with_blob() -> (AppState, Digest, String) {
    let s = state();
    let digest = Digest::of(BLOB);
    s.storage.put(&ObjectKey::blob(&digest), BLOB.into()).await.unwrap();
    let uri = format!("/v2/any/name/blobs/{digest}");
    (s, digest, uri)
}

const BLOB: &[u8] = b"0123456789abcdef";

/// The key under which a server configured as `config` (a git source at `repo`) stores the
/// Docker manifest of `name` at `commit`: what a replica, or this server before a restart,
/// would have built.
fn commit_key(config: &Config, repo: &str, commit: &str, name: &str) -> crate::cache::ManifestKey {
    use crate::cache::{DocumentKind, ManifestKey, Recipe};
    use crate::image::{ImageName, ImageSpec};
    use crate::pkgsource::{CommitHash, RemoteUrl, SourceRevision};
    let policy = &config.build.policy;
    ManifestKey {
        source: Arc::new(SourceRevision::Git { url: RemoteUrl::new(repo), commit: CommitHash::parse(commit).unwrap() }),
        image: ImageSpec::from_name(&ImageName::parse(name).unwrap()),
        format: crate::manifest::ManifestFormat::Docker,
        recipe: Recipe::new(policy.layers, config.archive.compression, &policy.nix.nixpkgs_config),
        document: DocumentKind::Manifest,
    }
}

#[tokio::test]
async fn base_endpoint_announces_the_api_version() {
    let s = state();
    for uri in ["/v2/", "/v2"] {
        let (status, headers, _) = call(&s, "GET", uri, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[API_VERSION], "registry/2.0");
    }
}

#[tokio::test]
async fn bad_input_gets_json_errors_with_the_right_status() {
    let s = state();
    let zero = format!("sha256:{}", "0".repeat(64));
    let cases = [
        ("GET", "/v2/bad..name/manifests/latest".to_string(), StatusCode::BAD_REQUEST, "NAME_INVALID"),
        // A reference that is neither tag nor digest names no manifest (the spec's end-3).
        ("GET", "/v2/hello/manifests/.bad".to_string(), StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        ("HEAD", "/v2/hello/manifests/.INVALID_MANIFEST_NAME".to_string(), StatusCode::NOT_FOUND, ""),
        ("GET", "/v2/hello/manifests/sha256:abc".to_string(), StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        ("GET", "/v2/hello/blobs/sha256:abc".to_string(), StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        ("GET", format!("/v2/hello/blobs/{zero}"), StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        ("GET", format!("/v2/hello/manifests/{zero}"), StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        ("PUT", "/v2/hello/manifests/latest".to_string(), StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        ("DELETE", format!("/v2/hello/blobs/{zero}"), StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        ("POST", "/v2/hello/blobs/uploads/".to_string(), StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        ("PATCH", "/v2/hello/blobs/uploads/1234".to_string(), StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        ("PUT", "/v2/bad..name/manifests/latest".to_string(), StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        ("GET", "/v2/hello/blobs/uploads/1234".to_string(), StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
        ("GET", "/v2/hello/referrers/sha256:abc".to_string(), StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        ("GET", format!("/v2/bad..name/referrers/{zero}"), StatusCode::BAD_REQUEST, "NAME_INVALID"),
        ("GET", "/v2/hello/tags/list?n=-1".to_string(), StatusCode::BAD_REQUEST, "UNSUPPORTED"),
        // Percent-encoded bytes that are not UTF-8: the part they are in is invalid.
        ("GET", "/v2/hello%FF/manifests/latest".to_string(), StatusCode::BAD_REQUEST, "NAME_INVALID"),
        ("GET", "/v2/hello/blobs/sha256:%FF".to_string(), StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        // No endpoint, in /v2/ and outside.
        ("GET", "/v2/hello/whatever".to_string(), StatusCode::NOT_FOUND, "UNSUPPORTED"),
        ("GET", "/v2/_catalog".to_string(), StatusCode::NOT_FOUND, "UNSUPPORTED"),
        ("GET", "/favicon.ico".to_string(), StatusCode::NOT_FOUND, "UNSUPPORTED"),
        ("GET", "/v3/hello/manifests/latest".to_string(), StatusCode::NOT_FOUND, "UNSUPPORTED"),
        ("POST", "/nothing%FF".to_string(), StatusCode::NOT_FOUND, "UNSUPPORTED"),
        ("POST", "/metrics".to_string(), StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        ("DELETE", "/v2/".to_string(), StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
    ];
    for (method, uri, status, code) in cases {
        let (got, headers, body) = call(&s, method, &uri, &[]).await;
        assert_eq!(got, status, "{method} {uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{method} {uri}");
        if method == "HEAD" {
            assert!(body.is_empty());
        } else {
            assert_eq!(error_code(&body), code, "{method} {uri}");
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(headers[header::ALLOW], "GET, HEAD", "{method} {uri}");
        }
    }
}

/// GET, then HEAD of the same request: same status and headers, the same `Content-Length`
/// (the length of GET's body), and no body.
async fn head_matches_get(s: &AppState, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, Vec<u8>) {
    let (status, get_headers, body) = call(s, "GET", uri, headers).await;
    let (head_status, head_headers, head_body) = call(s, "HEAD", uri, headers).await;
    assert_eq!(head_status, status, "{uri} {headers:?}");
    assert!(head_body.is_empty(), "HEAD {uri} has a body");
    assert_eq!(get_headers[header::CONTENT_LENGTH], body.len().to_string(), "GET {uri} {headers:?}");
    assert_eq!(head_headers[header::CONTENT_LENGTH], body.len().to_string(), "HEAD {uri} {headers:?}");
    for name in [header::CONTENT_TYPE, header::CONTENT_RANGE, header::ETAG, header::LINK, header::ALLOW] {
        assert_eq!(head_headers.get(&name), get_headers.get(&name), "{name} of {uri} {headers:?}");
    }
    (status, body)
}

#[tokio::test]
async fn head_announces_the_length_get_sends() {
    let (s, digest, blob) = with_blob().await;
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let manifest_digest = Digest::of(manifest);
    s.storage.put(&ObjectKey::manifest(&manifest_digest), manifest.to_vec().into()).await.unwrap();
    let zero = format!("sha256:{}", "0".repeat(64));
    let no_headers: &[(&str, &str)] = &[];
    let uris = [
        "/v2/".to_string(),
        "/v2".to_string(),
        "/v2/hello/tags/list".to_string(),
        "/v2/hello/tags/list?n=0".to_string(),
        "/v2/hello/tags/list?n=x".to_string(),
        format!("/v2/hello/referrers/{digest}"),
        format!("/v2/hello/referrers/{digest}?artifactType=application/x"),
        format!("/v2/hello/manifests/{manifest_digest}"),
        format!("/v2/hello/manifests/{zero}"),
        "/v2/hello/manifests/.bad".to_string(),
        format!("/v2/hello/blobs/{zero}"),
        "/v2/hello/blobs/sha256:1".to_string(),
        "/v2/hello/blobs/uploads/1".to_string(),
        "/v2/hello%FF/manifests/latest".to_string(),
        "/v2/no/endpoint".to_string(),
        "/nothing".to_string(),
        "/metrics".to_string(),
        blob.clone(),
    ];
    for uri in &uris {
        head_matches_get(&s, uri, no_headers).await;
    }
    let etag = format!("\"{digest}\"");
    for headers in [
        [("Range", "bytes=2-5")],
        [("Range", "bytes=100-")],
        [("If-Match", "\"other\"")],
        [("If-None-Match", "\"other\"")],
        [("Range", "bytes=-100")],
    ] {
        head_matches_get(&s, &blob, &headers).await;
    }
    // 304: no body on either; its Content-Length is the one a 200 would have (RFC 9110 §8.6).
    for method in ["GET", "HEAD"] {
        let (status, headers, body) = call(&s, method, &blob, &[("If-None-Match", &etag)]).await;
        assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0), "{method}");
        assert_eq!(headers[header::CONTENT_LENGTH], BLOB.len().to_string(), "{method}");
    }
}

#[tokio::test]
async fn tags_list_is_paginated() {
    let s = state();
    let tags = |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).unwrap()["tags"].clone();
    for (query, expected) in [
        ("", serde_json::json!(["latest"])),
        ("?n=0", serde_json::json!([])),
        ("?n=1", serde_json::json!(["latest"])),
        ("?n=1000000000000000000000000", serde_json::json!(["latest"])),
        ("?n=", serde_json::json!(["latest"])),
        ("?last=latest", serde_json::json!([])),
        ("?n=5&last=latest", serde_json::json!([])),
        ("?last=a", serde_json::json!(["latest"])),
        ("?last=m", serde_json::json!([])),
        ("?n=0&last=a", serde_json::json!([])),
    ] {
        let uri = format!("/v2/shell/git/tags/list{query}");
        let (status, headers, body) = call(&s, "GET", &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(tags(&body), expected, "{uri}");
        // One tag: never a next page.
        assert!(headers.get(header::LINK).is_none(), "{uri}");
    }
    for bad in ["?n=-1", "?n=abc", "?n=1.5", "?n=%2B1", "?n=1&n=2"] {
        let (status, headers, body) = call(&s, "GET", &format!("/v2/shell/git/tags/list{bad}"), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{bad}");
        assert_eq!(error_code(&body), "UNSUPPORTED", "{bad}");
    }
}

#[tokio::test]
async fn referrers_are_an_empty_index() {
    let s = state();
    let digest = Digest::of(b"hello world");
    for (query, filtered) in [("", false), ("?artifactType=application/vnd.example.sbom.v1", true), ("?other=1", false)]
    {
        let uri = format!("/v2/shell/git/referrers/{digest}{query}");
        let (status, headers, body) = call(&s, "GET", &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/vnd.oci.image.index.v1+json");
        let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            index,
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": []
            })
        );
        assert_eq!(headers.get("OCI-Filters-Applied").is_some(), filtered, "{uri}");
        if filtered {
            assert_eq!(headers["OCI-Filters-Applied"], "artifactType");
        }
    }
}

#[tokio::test]
async fn names_made_of_endpoint_words_are_pulled() {
    let (s, digest, _) = with_blob().await;
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let manifest_digest = Digest::of(manifest);
    s.storage.put(&ObjectKey::manifest(&manifest_digest), manifest.to_vec().into()).await.unwrap();
    for name in ["blobs/uploads", "x/blobs/uploads/y", "x/blobs/uploads", "manifests/tags/list"] {
        let (status, _, body) = call(&s, "GET", &format!("/v2/{name}/manifests/{manifest_digest}"), &[]).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, manifest.as_slice()), "{name}");
        let (status, _, body) = call(&s, "GET", &format!("/v2/{name}/blobs/{digest}"), &[]).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, BLOB), "{name}");
        let (status, _, _) = call(&s, "GET", &format!("/v2/{name}/tags/list"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{name}");
    }
    // The upload endpoints of such names are still uploads.
    for uri in ["/v2/x/blobs/uploads/blobs/uploads/", "/v2/blobs/uploads/blobs/uploads/5f0e"] {
        let (status, _, body) = call(&s, "POST", uri, &[]).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"), "{uri}");
    }
}

#[tokio::test]
async fn tags_list_names_latest() {
    let s = state();
    let (status, _, body) = call(&s, "GET", "/v2/shell/git/tags/list", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, serde_json::json!({"name": "shell/git", "tags": ["latest"]}));
}

#[tokio::test]
async fn a_path_source_refuses_tags_other_than_latest() {
    let s = state();
    let (status, headers, body) = call(&s, "GET", "/v2/hello/manifests/v1", &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");
    assert!(String::from_utf8_lossy(&body).contains("'latest'"));
    assert_eq!(s.metrics.nix_invocations.get(), 0);
}
