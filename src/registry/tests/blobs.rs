//! Blobs: digests, ranges, conditions, unknown digests.

use super::*;

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
