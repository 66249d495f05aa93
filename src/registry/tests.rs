//! Router tests without sockets or Nix: everything that is answered before a build.

use super::*;
use crate::build::Builder;
use crate::config::Config;
use crate::digest::Digest;
use crate::metrics::Metrics;
use crate::storage::{Filesystem, ObjectKey, Storage};
use axum::http::StatusCode;
use std::sync::Arc;
use tower::ServiceExt;

async fn state(dir: &std::path::Path) -> AppState {
    let config = Config::parse_from(["nixery", "--pkgs-path", "/"]).unwrap();
    let storage = Arc::new(Storage::Filesystem(Filesystem::open(dir).await.unwrap()));
    let metrics = Arc::new(Metrics::default());
    let builder = Builder::new(&config.build.policy, storage.clone(), Default::default(), metrics.clone()).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    for uri in ["/v2/", "/v2"] {
        let (status, headers, _) = call(&s, "GET", uri, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[API_VERSION], "registry/2.0");
    }
}

#[tokio::test]
async fn bad_input_gets_json_errors_with_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
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

#[tokio::test]
async fn blobs_are_served_with_digest_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let data = b"0123456789abcdef".to_vec();
    let digest = Digest::of(&data);
    s.storage.put(&ObjectKey::blob(&digest), data.clone().into()).await.unwrap();
    let uri = format!("/v2/any/name/blobs/{digest}");

    let (status, headers, body) = call(&s, "GET", &uri, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, data);
    assert_eq!(headers["Docker-Content-Digest"], digest.to_string());
    assert_eq!(headers[header::CONTENT_LENGTH], "16");

    let (status, headers, body) = call(&s, "HEAD", &uri, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(headers[header::CONTENT_LENGTH], "16");
    assert_eq!(headers["Docker-Content-Digest"], digest.to_string());

    let (status, headers, body) = call(&s, "GET", &uri, &[("Range", "bytes=4-7")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, b"4567");
    assert_eq!(headers[header::CONTENT_RANGE], "bytes 4-7/16");

    let (status, _, _) = call(&s, "GET", &uri, &[("Range", "bytes=100-200")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn manifests_by_digest_keep_their_media_type() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
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
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (status, _, body) = call(&s, "GET", "/v2/shell/git/tags/list", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, serde_json::json!({"name": "shell/git", "tags": ["latest"]}));
}
