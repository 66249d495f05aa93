//! Router tests without sockets, Nix or a disk (the in-memory storage backend): everything
//! that is answered before a build, and blobs.

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
async fn conditional_requests_on_blobs() {
    let (s, digest, uri) = with_blob().await;
    let etag = format!("\"{digest}\"");
    let weak = format!("W/{etag}");
    let whole = std::str::from_utf8(BLOB).unwrap();
    // Request headers, status, body.
    type Case<'a> = (&'a [(&'a str, &'a str)], StatusCode, &'a str);
    let cases: &[Case] = &[
        (&[("If-None-Match", &etag)], StatusCode::NOT_MODIFIED, ""),
        (&[("If-None-Match", &weak)], StatusCode::NOT_MODIFIED, ""),
        (&[("If-None-Match", "*")], StatusCode::NOT_MODIFIED, ""),
        (&[("If-None-Match", "\"a\", \"b\"")], StatusCode::OK, whole),
        (&[("If-None-Match", &etag), ("Range", "bytes=0-1")], StatusCode::NOT_MODIFIED, ""),
        (&[("If-Match", &etag)], StatusCode::OK, whole),
        (&[("If-Match", "*"), ("Range", "bytes=0-1")], StatusCode::PARTIAL_CONTENT, "01"),
        (&[("If-Match", &weak)], StatusCode::PRECONDITION_FAILED, ""),
        (&[("If-Match", "\"other\"")], StatusCode::PRECONDITION_FAILED, ""),
        (&[("If-Match", "\"other\""), ("Range", "bytes=0-1")], StatusCode::PRECONDITION_FAILED, ""),
        // If-Range that does not name this blob strongly: the whole blob, whatever the range.
        (&[("If-Range", "\"other\""), ("Range", "bytes=0-1")], StatusCode::OK, whole),
        (&[("If-Range", &weak), ("Range", "bytes=0-1")], StatusCode::OK, whole),
        (&[("If-Range", "Sat, 01 Jan 2000 00:00:00 GMT"), ("Range", "bytes=0-1")], StatusCode::OK, whole),
        (&[("If-Range", "\"other\""), ("Range", "bytes=100-")], StatusCode::OK, whole),
        (&[("If-Range", &etag), ("Range", "bytes=0-1")], StatusCode::PARTIAL_CONTENT, "01"),
        // No Last-Modified: date preconditions are ignored.
        (&[("If-Modified-Since", "Sat, 01 Jan 2050 00:00:00 GMT")], StatusCode::OK, whole),
        (&[("If-Unmodified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")], StatusCode::OK, whole),
    ];
    for (headers, status, body) in cases {
        let (got, got_headers, got_body) = call(&s, "GET", &uri, headers).await;
        assert_eq!(got, *status, "{headers:?}");
        match got {
            StatusCode::PRECONDITION_FAILED => {
                assert_eq!(got_headers[header::CONTENT_TYPE], "application/json");
                assert_eq!(error_code(&got_body), "UNSUPPORTED");
            }
            StatusCode::NOT_MODIFIED => {
                assert!(got_body.is_empty());
                assert_eq!(got_headers[header::ETAG], etag.as_str());
                assert_eq!(got_headers["Docker-Content-Digest"], digest.to_string());
                assert!(got_headers.get(header::CONTENT_TYPE).is_none(), "{headers:?}");
            }
            _ => assert_eq!(got_body, body.as_bytes(), "{headers:?}"),
        }
    }
}

#[tokio::test]
async fn conditional_requests_on_manifests() {
    let s = state();
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let digest = Digest::of(manifest);
    s.storage.put(&ObjectKey::manifest(&digest), manifest.to_vec().into()).await.unwrap();
    let uri = format!("/v2/hello/manifests/{digest}");
    let etag = format!("\"{digest}\"");
    let (status, headers, body) = call(&s, "GET", &uri, &[("If-None-Match", &etag)]).await;
    assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(headers[header::ETAG], etag.as_str());
    let (status, _, body) = call(&s, "GET", &uri, &[("If-Match", "\"other\"")]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(error_code(&body), "UNSUPPORTED");
    let (status, _, body) = call(&s, "GET", &uri, &[("If-Match", &etag), ("If-None-Match", "\"other\"")]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, manifest.as_slice()));
}

#[tokio::test]
async fn refusing_every_manifest_format_is_406_before_any_build() {
    let s = state();
    for accept in [
        "*/*;q=0",
        "application/vnd.docker.distribution.manifest.v2+json;q=0, application/vnd.oci.image.manifest.v1+json;q=0",
    ] {
        let (status, headers, body) = call(&s, "GET", "/v2/hello/manifests/latest", &[("Accept", accept)]).await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{accept}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(error_code(&body), "UNSUPPORTED");
    }
    assert!(s.metrics.render().contains("nixery_image_builds_total 0"), "{}", s.metrics.render());
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

    let (status, headers, body) = call(&s, "GET", &uri, &[("Range", "bytes=100-200")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers[header::CONTENT_RANGE], "bytes */16");
    assert_eq!(headers["Docker-Content-Digest"], digest.to_string());
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(error_code(&body), "UNSUPPORTED");
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
        ("GET", "bytes=-100", StatusCode::PARTIAL_CONTENT, whole, "bytes 0-15/16"),
        ("GET", "Bytes=1-2", StatusCode::PARTIAL_CONTENT, "12", "bytes 1-2/16"),
        ("HEAD", "bytes=16-", StatusCode::RANGE_NOT_SATISFIABLE, "", "bytes */16"),
        ("HEAD", "bytes=-0", StatusCode::RANGE_NOT_SATISFIABLE, "", "bytes */16"),
        ("HEAD", "bytes=2-5", StatusCode::PARTIAL_CONTENT, "", "bytes 2-5/16"),
        // Several ranges, other units, malformed: the whole blob.
        ("GET", "bytes=0-1,4-5", StatusCode::OK, whole, ""),
        ("GET", "items=0-1", StatusCode::OK, whole, ""),
        ("GET", "bytes=9-1", StatusCode::OK, whole, ""),
        ("GET", "bytes=x-", StatusCode::OK, whole, ""),
        ("GET", "bytes=1", StatusCode::OK, whole, ""),
        ("GET", "bytes=100-200,300-", StatusCode::OK, whole, ""),
        ("GET", "bytes 0-1", StatusCode::OK, whole, ""),
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
async fn a_path_source_refuses_tags_other_than_latest() {
    let s = state();
    let (status, headers, body) = call(&s, "GET", "/v2/hello/manifests/v1", &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");
    assert!(String::from_utf8_lossy(&body).contains("'latest'"));
    assert_eq!(s.metrics.nix_invocations.get(), 0);
}

/// A manifest of a commit, stored by a replica (or before a restart), is served by its
/// commit tag without Nix or git: first from storage, then from memory, GET and HEAD alike.
#[tokio::test]
async fn a_stored_commit_manifest_is_served_from_storage_then_memory() {
    use crate::cache::{ManifestKey, Outcome, Recipe};
    use crate::image::{ImageName, ImageSpec};
    use crate::manifest::ManifestFormat;
    use crate::pkgsource::{CommitHash, RemoteUrl, SourceRevision};

    let config = Config::parse_from(["nixery", "--pkgs-repo", "https://git.invalid/pkgs"]).unwrap();
    let s = AppState::in_memory(&config);

    let commit = "c".repeat(40);
    let key = ManifestKey {
        source: Arc::new(SourceRevision::Git {
            url: RemoteUrl::new("https://git.invalid/pkgs"),
            commit: CommitHash::parse(&commit).unwrap(),
        }),
        image: ImageSpec::from_name(&ImageName::parse("shell/hello").unwrap()),
        format: ManifestFormat::Docker,
        recipe: Recipe::new(
            config.build.policy.layers,
            config.archive.compression,
            &config.build.policy.nix.nixpkgs_config,
        ),
        document: crate::cache::DocumentKind::Manifest,
    };
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
    s.storage.put(&key.storage_key().unwrap(), manifest.to_vec().into()).await.unwrap();

    let uri = format!("/v2/hello/shell/manifests/{commit}");
    for (method, outcome) in [("GET", Outcome::Stored), ("GET", Outcome::Warm), ("HEAD", Outcome::Warm)] {
        let before = s.metrics.manifest_requests(outcome);
        let (status, headers, body) = call(&s, method, &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{method}: {}", String::from_utf8_lossy(&body));
        assert_eq!(body.is_empty(), method == "HEAD");
        assert_eq!(headers[header::CONTENT_TYPE], ManifestFormat::Docker.media_type());
        assert_eq!(headers[header::CONTENT_LENGTH], manifest.len().to_string());
        assert_eq!(headers["Docker-Content-Digest"], Digest::of(manifest).to_string());
        assert_eq!(headers[header::ETAG], format!("\"{}\"", Digest::of(manifest)));
        assert_eq!(s.metrics.manifest_requests(outcome), before + 1, "{method} was not {outcome:?}");
    }
    assert_eq!((s.metrics.nix_invocations.get(), s.metrics.source_resolutions.get()), (0, 0));
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
