//! Router tests without sockets, Nix or a disk (the in-memory storage backend): everything
//! that is answered before a build, and blobs.

use super::*;
use crate::archive::Archiver;
use crate::build::Builder;
use crate::config::Config;
use crate::digest::Digest;
use crate::metrics::Metrics;
use crate::storage::{Memory, ObjectKey, Storage};
use axum::http::StatusCode;
use std::sync::Arc;
use tower::ServiceExt;

fn state() -> AppState {
    state_with(&[])
}

/// The state of a server started with `args` added to its command line.
fn state_with(args: &[&'static str]) -> AppState {
    let config = Config::parse_from(["nixery", "--pkgs-path", "/"].into_iter().chain(args.iter().copied())).unwrap();
    let storage = Arc::new(Storage::Memory(Memory::new()));
    let metrics = Arc::new(Metrics::default());
    let archiver = Archiver::new(config.archive).unwrap();
    let builder =
        Builder::new(&config.build.policy, archiver, storage.clone(), Default::default(), metrics.clone()).unwrap();
    AppState { builder, storage, metrics }
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
        ("GET", "/v2/hello/manifests/.bad".to_string(), StatusCode::BAD_REQUEST, "TAG_INVALID"),
        ("GET", "/v2/hello/manifests/sha256:abc".to_string(), StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        ("GET", "/v2/hello/blobs/sha256:abc".to_string(), StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        ("GET", format!("/v2/hello/blobs/{zero}"), StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        ("GET", format!("/v2/hello/manifests/{zero}"), StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        ("PUT", "/v2/hello/manifests/latest".to_string(), StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        ("DELETE", format!("/v2/hello/blobs/{zero}"), StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        ("POST", "/v2/hello/blobs/uploads/".to_string(), StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        ("PATCH", "/v2/hello/blobs/uploads/1234".to_string(), StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
    ];
    for (method, uri, status, code) in cases {
        let (got, headers, body) = call(&s, method, &uri, &[]).await;
        assert_eq!(got, status, "{method} {uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{method} {uri}");
        assert_eq!(error_code(&body), code, "{method} {uri}");
    }
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

#[tokio::test]
async fn blobs_are_served_with_digest_and_ranges() {
    let (s, digest, uri) = with_blob().await;

    let (status, headers, body) = call(&s, "GET", &uri, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, BLOB);
    assert_eq!(headers["Docker-Content-Digest"], digest.to_string());
    assert_eq!(headers[header::CONTENT_LENGTH], "16");
    assert_eq!(headers[header::CONTENT_TYPE], "application/octet-stream");
    assert_eq!(headers[header::ETAG], format!("\"{digest}\""));
    assert_eq!(headers[header::ACCEPT_RANGES], "bytes");

    let (status, head_headers, body) = call(&s, "HEAD", &uri, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(head_headers[header::CONTENT_LENGTH], "16");
    assert_eq!(head_headers["Docker-Content-Digest"], digest.to_string());
    for name in [header::CONTENT_TYPE, header::ETAG, header::ACCEPT_RANGES] {
        assert_eq!(head_headers[&name], headers[&name], "HEAD and GET differ in {name}");
    }

    let (status, headers, body) = call(&s, "GET", &uri, &[("Range", "bytes=4-7")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, b"4567");
    assert_eq!(headers[header::CONTENT_RANGE], "bytes 4-7/16");
    assert_eq!(headers[header::CONTENT_LENGTH], "4");
    assert_eq!(headers["Docker-Content-Digest"], digest.to_string());

    let (status, headers, _) = call(&s, "GET", &uri, &[("Range", "bytes=100-200")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers[header::CONTENT_RANGE], "bytes */16");
    assert_eq!(headers["Docker-Content-Digest"], digest.to_string());
}

#[tokio::test]
async fn every_range_form_and_head_of_a_range() {
    let (s, _, uri) = with_blob().await;
    let whole = std::str::from_utf8(BLOB).unwrap();
    // Method, Range, status, body, Content-Range.
    let cases = [
        ("GET", "bytes=-3", StatusCode::PARTIAL_CONTENT, "def", "bytes 13-15/16"),
        ("GET", "bytes=10-", StatusCode::PARTIAL_CONTENT, "abcdef", "bytes 10-15/16"),
        ("GET", "bytes=14-99", StatusCode::PARTIAL_CONTENT, "ef", "bytes 14-15/16"),
        ("GET", "bytes=16-", StatusCode::RANGE_NOT_SATISFIABLE, "", "bytes */16"),
        ("HEAD", "bytes=2-5", StatusCode::PARTIAL_CONTENT, "", "bytes 2-5/16"),
        // Several ranges, other units, malformed: the whole blob.
        ("GET", "bytes=0-1,4-5", StatusCode::OK, whole, ""),
        ("GET", "items=0-1", StatusCode::OK, whole, ""),
        ("GET", "bytes=9-1", StatusCode::OK, whole, ""),
    ];
    for (method, range, status, body, content_range) in cases {
        let (got, headers, got_body) = call(&s, method, &uri, &[("Range", range)]).await;
        assert_eq!(got, status, "{method} {range}");
        assert_eq!(got_body, body.as_bytes(), "{method} {range}");
        let got_range = headers.get(header::CONTENT_RANGE).map(|v| v.to_str().unwrap()).unwrap_or_default();
        assert_eq!(got_range, content_range, "{method} {range}");
    }
    // HEAD of a range announces the length GET would send.
    let (_, headers, _) = call(&s, "HEAD", &uri, &[("Range", "bytes=2-5")]).await;
    assert_eq!(headers[header::CONTENT_LENGTH], "4");
    // A range under an If-Range naming another version: the whole blob.
    let (status, _, body) = call(&s, "GET", &uri, &[("Range", "bytes=0-0"), ("If-Range", "\"other\"")]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, BLOB));
}

#[tokio::test]
async fn unknown_blobs_are_blob_unknown_for_get_and_head() {
    let (s, _, _) = with_blob().await;
    let uri = format!("/v2/any/name/blobs/{}", Digest::of(b"not stored"));
    let (status, headers, body) = call(&s, "GET", &uri, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(error_code(&body), "BLOB_UNKNOWN");
    let (status, _, body) = call(&s, "HEAD", &uri, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.is_empty());
}

#[tokio::test]
async fn manifests_by_digest_keep_their_media_type() {
    let s = state();
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#.to_vec();
    let digest = Digest::of(&manifest);
    s.storage.put(&ObjectKey::manifest(&digest), manifest.clone().into()).await.unwrap();
    for method in ["GET", "HEAD"] {
        let (status, headers, body) = call(&s, method, &format!("/v2/hello/manifests/{digest}"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(headers[header::CONTENT_LENGTH], manifest.len().to_string());
        assert_eq!(headers["Docker-Content-Digest"], digest.to_string());
        assert_eq!(body.is_empty(), method == "HEAD");
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
async fn zstd_layers_refuse_clients_without_oci_before_building() {
    let s = state_with(&["--layer-compression", "zstd"]);
    let docker_only = [
        ("Accept", "application/vnd.docker.distribution.manifest.v2+json"),
        ("Accept", "application/vnd.docker.distribution.manifest.list.v2+json"),
    ];
    // Docker 20.10 accepts OCI manifests, but not zstd layers.
    let docker_20 = [
        ("Accept", "application/vnd.oci.image.manifest.v1+json"),
        ("Accept", "application/vnd.docker.distribution.manifest.v2+json"),
        ("User-Agent", "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 os/linux arch/amd64"),
    ];
    for (headers, says) in [(&docker_only[..], "OCI image manifests"), (&docker_20[..], "this is Docker 20")] {
        for method in ["GET", "HEAD"] {
            let (status, answer, body) = call(&s, method, "/v2/shell/hello/manifests/latest", headers).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{says}: {method}");
            assert_eq!(answer[header::CONTENT_TYPE], "application/json", "{says}: {method}");
            if method == "GET" {
                assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let message = v["errors"][0]["message"].as_str().unwrap();
                assert!(message.contains("zstd") && message.contains(says), "{message}");
            }
        }
    }
    // Nothing was built: the answer came before Nix (whose package set here is `/`).
    assert_eq!(s.metrics.image_builds.get(), 0);
    assert_eq!(s.metrics.nix_invocations.get(), 0);
}
