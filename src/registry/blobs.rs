//! `GET|HEAD /v2/<name>/blobs/<digest>`: layers and configs.
//!
//! Preconditions (`If-Match`, `If-None-Match`) are evaluated first, for every backend, in
//! [`super::conditional`]: the ETag is the digest, whatever stores the bytes. Then the
//! storage backend's [`Download`] says how:
//! - a redirect (object stores): GET answers 307 with `Location` (a signed or public URL of
//!   the object); HEAD answers 200 with the blob's headers itself (a URL signed for GET would
//!   not serve a HEAD, and the answer needs no trip to the bucket);
//! - a stream (the filesystem, memory, object stores in proxy mode): answered here, the same
//!   way for every backend, in [`stream`], which is the one place `Range` is read.
//!
//! `Range` (RFC 9110 §14, which the distribution spec's "Pulling blobs" points to):
//! - one byte range (`bytes=a-b`, `a-`, `-n`; the unit is case-insensitive) gets 206 with
//!   `Content-Range`, and only those bytes are read from storage; a last position past the
//!   end, or a suffix longer than the blob, is cut to the blob (`bytes=-500` of 16 bytes is
//!   `bytes 0-15/16`, §14.1.1);
//! - a range starting at or beyond the end, or the suffix `-0`, is unsatisfiable: 416 with
//!   `Content-Range: bytes */len` and a registry error body (§15.5.17);
//! - anything else is ignored and the whole blob served with 200, as §14.2 allows a server
//!   to: other units, malformed or reversed ranges (invalid, §14.1.1), and several ranges
//!   (served whole rather than as `multipart/byteranges`: registry clients ask for one range
//!   to resume a download, and a whole answer is always correct);
//! - under an `If-Range` that does not strongly match the ETag (another tag, a weak one, a
//!   date), the range is ignored and the whole blob served (§13.1.5).
//!
//! HEAD gets the status and headers GET would, and reads nothing. Every answer carries
//! `Docker-Content-Digest`; blob bodies also `Content-Type`, `Content-Length`, `ETag` (the
//! quoted digest) and `Accept-Ranges`.

use super::conditional::{self, Precondition};
use super::error::{Code, RegistryError};
use crate::digest::Digest;
use crate::storage::{Download, ErrorKind, ObjectKey, Storage, Stream};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::ops::Range;

/// Answers a request for the blob `digest`.
pub async fn get(
    storage: &Storage,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let download = storage
        .download(&ObjectKey::blob(digest))
        .await
        .map_err(|e| RegistryError::storage_fault("looking up blob", &e))?;
    let Some(download) = download else { return Err(unknown(digest)) };
    let len = match &download {
        Download::Redirect { len, .. } => *len,
        Download::Stream(bytes) => bytes.len(),
    };
    match conditional::evaluate(headers, digest) {
        Precondition::Proceed => {}
        Precondition::NotModified => return Ok(conditional::not_modified(digest, len)),
        Precondition::Failed => return Err(conditional::failed("blob", digest)),
    }
    match download {
        Download::Redirect { len, .. } if head => Ok(respond(digest, len, None, Body::empty())),
        Download::Redirect { url, .. } => redirect(digest, &url),
        Download::Stream(bytes) => stream(digest, bytes, head, headers).await,
    }
}

/// 307 to where the store serves the blob.
fn redirect(digest: &Digest, url: &str) -> Result<Response, RegistryError> {
    let location = HeaderValue::from_str(url).map_err(|_| {
        tracing::error!(%url, "storage gave a redirect URL that is no header value");
        RegistryError::internal()
    })?;
    let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().insert("Docker-Content-Digest", digest.header_value());
    Ok(resp)
}

/// Serves a blob's bytes (or, for HEAD, just its headers), honouring `Range`.
async fn stream(digest: &Digest, bytes: Stream, head: bool, headers: &HeaderMap) -> Result<Response, RegistryError> {
    let len = bytes.len();
    let range = match requested_range(headers, digest, len) {
        Ranged::Whole => None,
        Ranged::Part(r) => Some(r),
        Ranged::Unsatisfiable => return Ok(unsatisfiable(digest, len)),
    };
    let body = if head {
        Body::empty()
    } else {
        let read = bytes.bytes(range.clone()).await.map_err(|e| match e.kind() {
            // Gone since it was looked up.
            ErrorKind::NotFound => unknown(digest),
            _ => RegistryError::storage_fault("reading blob", &e),
        })?;
        Body::from_stream(read)
    };
    Ok(respond(digest, len, range, body))
}

/// A blob answer: 200 for the whole blob of `len` bytes, 206 for the `part` of it.
fn respond(digest: &Digest, len: u64, part: Option<Range<u64>>, body: Body) -> Response {
    let mut resp = Response::new(body);
    if part.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert("Docker-Content-Digest", digest.header_value());
    h.insert(header::ETAG, digest.etag());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let length = match &part {
        Some(r) => {
            let range = format!("bytes {}-{}/{len}", r.start, r.end - 1);
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&range).expect("ASCII"));
            r.end - r.start
        }
        None => len,
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    resp
}

/// 416 with the blob's length in `Content-Range` (§15.5.17) and a registry error body. The
/// spec's error codes have none for ranges; `UNSUPPORTED` is the nearest, the status says
/// what happened.
fn unsatisfiable(digest: &Digest, len: u64) -> Response {
    let message = format!("the requested range starts beyond the end of blob {digest} ({len} bytes)");
    let mut resp = RegistryError::new(StatusCode::RANGE_NOT_SATISFIABLE, Code::Unsupported, message).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{len}")).expect("ASCII"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert("Docker-Content-Digest", digest.header_value());
    resp
}

pub(super) fn unknown(digest: &Digest) -> RegistryError {
    RegistryError::new(StatusCode::NOT_FOUND, Code::BlobUnknown, format!("blob {digest} is not known to this registry"))
}

/// What part of a blob of `len` bytes a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ranged {
    Whole,
    /// A half-open, non-empty range within the blob.
    Part(Range<u64>),
    Unsatisfiable,
}

/// The request's `Range`, honoured when it is a single valid byte range and any `If-Range`
/// holds; see the module docs.
fn requested_range(headers: &HeaderMap, digest: &Digest, len: u64) -> Ranged {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ranged::Whole };
    if !conditional::if_range_holds(headers, digest) {
        return Ranged::Whole;
    }
    parse_range(value, len)
}

fn parse_range(value: &str, len: u64) -> Ranged {
    let Some((unit, set)) = value.split_once('=') else { return Ranged::Whole };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = set.split_once('-') else { return Ranged::Whole };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // The last `n` bytes, or all of them if there are fewer.
        let Some(n) = position(last) else { return Ranged::Whole };
        return match (n, len) {
            (0, _) => Ranged::Unsatisfiable,
            // No range can describe part of nothing: the whole (empty) blob.
            (_, 0) => Ranged::Whole,
            _ => Ranged::Part(len.saturating_sub(n)..len),
        };
    }
    let Some(start) = position(first) else { return Ranged::Whole };
    let end = if last.is_empty() {
        len
    } else {
        match position(last) {
            Some(l) if l >= start => l.saturating_add(1).min(len),
            _ => return Ranged::Whole,
        }
    };
    if start >= len { Ranged::Unsatisfiable } else { Ranged::Part(start..end) }
}

/// A byte position: decimal digits only (no sign, no space); past `u64::MAX` it is
/// `u64::MAX`, which is past the end of any blob.
fn position(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(resp: &'a Response, name: &str) -> &'a str {
        resp.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or_default()
    }

    #[test]
    fn redirects_carry_the_digest_and_heads_the_blob_headers() {
        let digest = Digest::of(b"0123456789");
        let url = format!("https://bucket.example/layers/sha256%3A{}?X-Goog-Signature=ab", digest.hex());
        let resp = redirect(&digest, &url).unwrap();
        assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(h(&resp, "location"), url);
        assert_eq!(h(&resp, "docker-content-digest"), digest.to_string());
        assert_eq!(redirect(&digest, "https://x/\u{0}").unwrap_err().status, StatusCode::INTERNAL_SERVER_ERROR);
        let head = respond(&digest, 10, None, Body::empty());
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(h(&head, "content-length"), "10");
        assert_eq!(h(&head, "content-type"), "application/octet-stream");
        assert_eq!(h(&head, "docker-content-digest"), digest.to_string());
        assert_eq!(h(&head, "etag"), format!("\"{digest}\""));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ranged::Part(0..10));
        assert_eq!(parse_range("bytes=90-", 100), Ranged::Part(90..100));
        assert_eq!(parse_range("bytes=90-500", 100), Ranged::Part(90..100));
        assert_eq!(parse_range("bytes=-10", 100), Ranged::Part(90..100));
        // A suffix longer than the blob is the whole blob, as a range (RFC 9110 §14.1.1).
        assert_eq!(parse_range("bytes=-500", 100), Ranged::Part(0..100));
        assert_eq!(parse_range("Bytes=0-0", 100), Ranged::Part(0..1), "units are case-insensitive");
        assert_eq!(parse_range("bytes=0-99999999999999999999999", 100), Ranged::Part(0..100));
        assert_eq!(parse_range("bytes=100-", 100), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=99999999999999999999999-", 100), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), Ranged::Whole);
        // Malformed, reversed, other units, several ranges: the whole blob.
        for ignored in [
            "bytes=9-1",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1",
            "bytes=-",
            "bytes=--1",
            "bytes=0-1-2",
            "bytes=",
            "bytes",
            "",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=200-300,400-",
        ] {
            assert_eq!(parse_range(ignored, 100), Ranged::Whole, "{ignored:?}");
        }
    }

    #[test]
    fn if_range_must_name_the_blob() {
        let d = Digest::of(b"x");
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-0"));
        assert_eq!(requested_range(&h, &d, 10), Ranged::Part(0..1));
        h.insert(header::IF_RANGE, d.etag());
        assert_eq!(requested_range(&h, &d, 10), Ranged::Part(0..1));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"other\""));
        assert_eq!(requested_range(&h, &d, 10), Ranged::Whole);
        // Not evaluated against the range: an unsatisfiable range under a false If-Range is
        // the whole blob, not 416.
        h.insert(header::RANGE, HeaderValue::from_static("bytes=50-"));
        assert_eq!(requested_range(&h, &d, 10), Ranged::Whole);
    }
}
