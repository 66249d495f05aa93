//! HTTP details against the real binary (issue 11, point 5): `Range` and conditional
//! requests as RFC 9110 has them, registry JSON for every error (raw requests where a client
//! library would not send what is tested), HEAD announcing GET's length, names made of
//! endpoint words pulled by a real client, and `Accept` q-values.

use crate::harness::http::Response;
use crate::harness::{DOCKER_MANIFEST_V2, OCI_MANIFEST_V1, Server, pull_and_unpack, sha256_digest};

/// The error code of a registry JSON error, checking its `Content-Type`.
fn error_code(r: &Response) -> String {
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{}", r.describe());
    r.json()["errors"][0]["code"].as_str().unwrap_or_else(|| panic!("no error code\n{}", r.describe())).to_owned()
}

#[test]
fn blob_ranges_and_conditions_follow_rfc_9110() {
    let server = Server::start();
    let (_, manifest) = server.manifest("shell/hello", "latest");
    let layer =
        manifest["layers"].as_array().unwrap().iter().max_by_key(|l| l["size"].as_u64().unwrap()).unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned();
    let uri = format!("/v2/shell/hello/blobs/{layer}");
    let full = server.get_ok(&uri, &[]).body;
    let len = full.len();
    assert!(len > 100, "a layer of {len} bytes is too small to test ranges");
    let etag = format!("\"{layer}\"");
    let weak = format!("W/{etag}");
    let long_suffix = format!("bytes=-{}", len + 100);
    let past_end = format!("bytes={len}-");
    let whole_range = format!("bytes 0-{}/{len}", len - 1);
    let star = format!("bytes */{len}");

    // Request headers; status; the bytes of the blob served (None: no blob bytes); Content-Range.
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, Option<std::ops::Range<usize>>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        // Malformed ranges and unknown units are ignored: the whole blob.
        (vec![("Range", "bytes=a-b")], 200, Some(0..len), None),
        (vec![("Range", "bytes=5")], 200, Some(0..len), None),
        (vec![("Range", "bytes=9-1")], 200, Some(0..len), None),
        (vec![("Range", "items=0-1")], 200, Some(0..len), None),
        // Several ranges: the whole blob (not multipart).
        (vec![("Range", "bytes=0-1,4-5")], 200, Some(0..len), None),
        // A suffix longer than the blob: all of it, as a range.
        (vec![("Range", &long_suffix)], 206, Some(0..len), Some(&whole_range)),
        (vec![("Range", "Bytes=1-2")], 206, Some(1..3), Some("bytes 1-2/")),
        // If-Range: only a strong match of the ETag keeps the range.
        (vec![("Range", "bytes=0-1"), ("If-Range", "\"sha256:other\"")], 200, Some(0..len), None),
        (vec![("Range", "bytes=0-1"), ("If-Range", &weak)], 200, Some(0..len), None),
        (vec![("Range", "bytes=0-1"), ("If-Range", "Sat, 01 Jan 2000 00:00:00 GMT")], 200, Some(0..len), None),
        (vec![("Range", &past_end), ("If-Range", "\"sha256:other\"")], 200, Some(0..len), None),
        (vec![("Range", "bytes=0-1"), ("If-Range", &etag)], 206, Some(0..2), Some("bytes 0-1/")),
        // If-None-Match with the ETag (or `*`): 304, no body.
        (vec![("If-None-Match", &etag)], 304, None, None),
        (vec![("If-None-Match", &weak)], 304, None, None),
        (vec![("If-None-Match", "*")], 304, None, None),
        (vec![("If-None-Match", "\"sha256:other\"")], 200, Some(0..len), None),
        // If-Match with another validator: 412.
        (vec![("If-Match", "\"sha256:other\"")], 412, None, None),
        (vec![("If-Match", &etag), ("Range", "bytes=0-1")], 206, Some(0..2), Some("bytes 0-1/")),
        // Past the end: 416, with the length and a registry error.
        (vec![("Range", &past_end)], 416, None, Some(&star)),
        (vec![("Range", "bytes=-0")], 416, None, Some(&star)),
    ];
    for (headers, status, part, content_range) in cases {
        let r = server.request("GET", &uri, &headers);
        let context = format!("{headers:?}\n{}", r.describe());
        assert_eq!(r.status, status, "{context}");
        match &part {
            Some(part) => assert!(r.body == full[part.clone()], "{context}"),
            None if status == 304 => assert!(r.body.is_empty(), "{context}"),
            None => assert_eq!(error_code(&r), "UNSUPPORTED", "{context}"),
        }
        match content_range {
            Some(expected) => assert!(r.expect_header("Content-Range").starts_with(expected), "{context}"),
            None => assert_eq!(r.header("Content-Range"), None, "{context}"),
        }
        if status == 304 {
            assert_eq!(r.header("ETag"), Some(etag.as_str()), "{context}");
        }
    }

    // Manifests carry an ETag too, by digest and by tag.
    let (m, _) = server.manifest("shell/hello", "latest");
    let digest = m.expect_header("Docker-Content-Digest").to_owned();
    let etag = format!("\"{digest}\"");
    for reference in [digest.as_str(), "latest"] {
        let path = format!("/v2/shell/hello/manifests/{reference}");
        let accept = ("Accept", DOCKER_MANIFEST_V2);
        let r = server.request("GET", &path, &[accept, ("If-None-Match", &etag)]);
        assert_eq!((r.status, r.body.len()), (304, 0), "{}", r.describe());
        let r = server.request("GET", &path, &[accept, ("If-Match", "\"sha256:other\"")]);
        assert_eq!(r.status, 412, "{}", r.describe());
        assert_eq!(error_code(&r), "UNSUPPORTED");
    }
}

#[test]
fn every_error_is_registry_json() {
    let server = Server::start();
    let raw = |target: &[u8], extra: &str| {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: {}\r\n{extra}Connection: close\r\n\r\n", server.addr()).as_bytes(),
        );
        server.raw(&request)
    };
    // Sent byte for byte: a client library would encode these, or refuse to.
    for (target, status, code) in [
        (&b"/v2/hello%FF/manifests/latest"[..], 400, "NAME_INVALID"),
        (b"/v2/hello/manifests/%C3%28", 404, "MANIFEST_UNKNOWN"),
        (b"/v2/hello/blobs/sha256:%FF", 400, "DIGEST_INVALID"),
        (b"/v2/h\xc3\xa9llo/manifests/latest", 400, "NAME_INVALID"),
        (b"/v2/hello/manifests/lat\xc3\xa9st", 404, "MANIFEST_UNKNOWN"),
        (b"/nothing%FF", 404, "UNSUPPORTED"),
    ] {
        let r = raw(target, "");
        assert_eq!(r.status, status, "{}", server.context(&r.describe()));
        assert_eq!(error_code(&r), code, "{}", r.describe());
    }
    // Bytes that are not UTF-8 in the request line never reach the router: hyper refuses
    // the request itself (400, no body), which is the one error that is not registry JSON.
    assert_eq!(raw(b"/v2/hello\xff/manifests/latest", "").status, 400);
    assert_eq!(server.get("/v2/").status, 200, "the server survived it");

    for (method, path, status, code) in [
        ("GET", "/favicon.ico", 404, "UNSUPPORTED"),
        ("GET", "/v3/hello/manifests/latest", 404, "UNSUPPORTED"),
        ("GET", "/v2/_catalog", 404, "UNSUPPORTED"),
        ("GET", "/v2/hello/whatever", 404, "UNSUPPORTED"),
        ("GET", "/v2/hello/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/hello/blobs/uploads/5f0e", 404, "BLOB_UPLOAD_UNKNOWN"),
        ("GET", "/v2/hello/tags/list?n=-1", 400, "UNSUPPORTED"),
        ("POST", "/metrics", 405, "UNSUPPORTED"),
        ("DELETE", "/metrics", 405, "UNSUPPORTED"),
        ("OPTIONS", "/v2/hello/manifests/latest", 405, "UNSUPPORTED"),
    ] {
        let r = server.request(method, path, &[]);
        assert_eq!(r.status, status, "{method} {path}\n{}", r.describe());
        assert_eq!(error_code(&r), code, "{method} {path}");
        if status == 405 {
            assert_eq!(r.header("Allow"), Some("GET, HEAD"), "{method} {path}");
        }
    }

    // A push with a body it never sends: answered at once (bodies are never read).
    let r = server.raw(
        format!(
            "PUT /v2/hello/blobs/uploads/5f0e?digest=sha256:x HTTP/1.1\r\nHost: {}\r\nContent-Length: 1073741824\r\n\
             Content-Type: application/octet-stream\r\nConnection: close\r\n\r\npartial",
            server.addr()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 405, "{}", r.describe());
    assert_eq!(error_code(&r), "UNSUPPORTED");
}

#[test]
fn head_announces_the_length_get_sends() {
    let server = Server::start();
    let (m, manifest) = server.manifest("hello", "latest");
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let zero = format!("sha256:{}", "0".repeat(64));
    for path in [
        "/v2/".to_string(),
        "/v2/hello/tags/list".to_string(),
        "/v2/hello/tags/list?n=0".to_string(),
        format!("/v2/hello/referrers/{config}"),
        "/v2/hello/manifests/latest".to_string(),
        format!("/v2/hello/manifests/{}", m.expect_header("Docker-Content-Digest")),
        format!("/v2/hello/blobs/{config}"),
        format!("/v2/hello/manifests/{zero}"),
        format!("/v2/hello/blobs/{zero}"),
        "/v2/hello/manifests/.x".to_string(),
        "/v2/bad..name/manifests/latest".to_string(),
        "/v2/hello/tags/list?n=x".to_string(),
        "/v2/no/endpoint".to_string(),
        "/nothing".to_string(),
    ] {
        let get = server.request("GET", &path, &[]);
        let head = server.request("HEAD", &path, &[]);
        assert_eq!(head.status, get.status, "{path}");
        assert_eq!(get.expect_header("Content-Length"), get.body.len().to_string(), "{}", get.describe());
        assert_eq!(head.header("Content-Length"), get.header("Content-Length"), "HEAD {path}\n{}", head.describe());
        assert_eq!(head.header("Content-Type"), get.header("Content-Type"), "HEAD {path}");
    }
}

#[test]
fn names_made_of_endpoint_words_are_pulled() {
    let server = Server::start();
    // `blobs` and `uploads` are packages of the test set: `/v2/shell/blobs/uploads/...` is
    // the image of those two and a shell, not a blob upload.
    let unpacked = pull_and_unpack(&server, "shell/blobs/uploads:latest", &[]);
    assert_eq!(unpacked.sh(&server, "blobs; uploads"), "blobs (test stub)\nuploads (test stub)\n");
    let (r, _) = server.manifest("blobs/uploads/shell", "latest");
    let (same, _) = server.manifest("shell/blobs/uploads", "latest");
    assert_eq!(r.header("Docker-Content-Digest"), same.header("Docker-Content-Digest"), "one image, any order");
    // Its upload endpoints are still uploads.
    let r = server.request("POST", "/v2/shell/blobs/uploads/blobs/uploads/", &[]);
    assert_eq!((r.status, error_code(&r).as_str()), (405, "UNSUPPORTED"), "{}", r.describe());
}

#[test]
fn accept_q_values_choose_the_manifest_format() {
    let server = Server::start();
    let refused_docker = format!("{DOCKER_MANIFEST_V2};q=0");
    let one_line = format!("{DOCKER_MANIFEST_V2};q=0, {OCI_MANIFEST_V1};q=0.5");
    let prefer_docker = [format!("{OCI_MANIFEST_V1};q=0.5"), format!("{DOCKER_MANIFEST_V2};q=0.9")];
    let prefer_oci = format!("{DOCKER_MANIFEST_V2};q=0.1, {OCI_MANIFEST_V1}");
    // Accept lines; the media type served (None: 406).
    let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec![&refused_docker, OCI_MANIFEST_V1], Some(OCI_MANIFEST_V1)),
        (vec![&one_line], Some(OCI_MANIFEST_V1)),
        (vec![&prefer_docker[0], &prefer_docker[1]], Some(DOCKER_MANIFEST_V2)),
        (vec![&prefer_oci], Some(OCI_MANIFEST_V1)),
        // Malformed values are ignored, the rest still counts.
        (vec!["garbage;;q=what", "*/json", OCI_MANIFEST_V1], Some(OCI_MANIFEST_V1)),
        (vec![OCI_MANIFEST_V1, DOCKER_MANIFEST_V2], Some(DOCKER_MANIFEST_V2)),
        (vec!["*/*;q=0"], None),
    ];
    for (lines, served) in cases {
        let headers: Vec<(&str, &str)> = lines.iter().map(|l| ("Accept", *l)).collect();
        let r = server.request("GET", "/v2/hello/manifests/latest", &headers);
        match served {
            Some(media) => {
                assert_eq!(r.status, 200, "{lines:?}\n{}", server.context(&r.describe()));
                assert_eq!(r.header("Content-Type"), Some(media), "{lines:?}");
                assert_eq!(r.json()["mediaType"], media, "{lines:?}");
                assert_eq!(r.header("Docker-Content-Digest"), Some(sha256_digest(&r.body).as_str()));
            }
            None => {
                assert_eq!(r.status, 406, "{lines:?}\n{}", r.describe());
                assert_eq!(error_code(&r), "UNSUPPORTED");
            }
        }
    }
}
