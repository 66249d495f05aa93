//! `GET|HEAD /v2/<name>/blobs/<digest>`: layers and configs.
//!
//! The storage backend's [`Download`] says how:
//! - a redirect (object stores): GET answers 307 with `Location` (a signed or public URL of
//!   the object); HEAD answers 200 with the blob's headers itself (a URL signed for GET would
//!   not serve a HEAD, and the answer needs no trip to the bucket);
//! - a stream (the filesystem, memory, object stores in proxy mode): answered here, the same
//!   way for every backend, in [`stream`]. A single byte range (`bytes=a-b`, `a-`, `-n`),
//!   honoured when any `If-Range` names this blob, gets 206 with `Content-Range` and only those
//!   bytes are read from storage; a range starting at or beyond the end gets 416 with
//!   `Content-Range: bytes */len`; anything else (other units, several ranges, malformed) gets
//!   the whole blob, as RFC 9110 allows. HEAD gets the status and headers GET would, and reads
//!   nothing. Conditional requests (`If-None-Match`, ...) are not evaluated; [`stream`] is
//!   where they would go.
//!
//! Every answer carries `Docker-Content-Digest`; blob bodies also `Content-Type`,
//! `Content-Length`, `ETag` (the quoted digest) and `Accept-Ranges`.

use super::error::{Code, RegistryError};
use super::{digest_value, etag};
use crate::digest::Digest;
use crate::storage::{Download, ErrorKind, ObjectKey, Storage, StorageError, Stream};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::ops::Range;

/// Answers a request for the blob `digest`.
pub async fn get(
    storage: &Storage,
    digest: &Digest,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let download = storage.download(&ObjectKey::blob(digest)).await.map_err(|e| internal("looking up blob", e))?;
    let Some(download) = download else { return Err(unknown(digest)) };
    let head = method == Method::HEAD;
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
    resp.headers_mut().insert("Docker-Content-Digest", digest_value(digest));
    Ok(resp)
}

/// Serves a blob's bytes (or, for HEAD, just its headers), honouring `Range`.
async fn stream(digest: &Digest, bytes: Stream, head: bool, headers: &HeaderMap) -> Result<Response, RegistryError> {
    let len = bytes.len();
    let range = match requested_range(headers, digest, len) {
        Ranged::Whole => None,
        Ranged::Part(r) => Some(r),
        Ranged::Unsatisfiable => {
            let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{len}")).expect("ASCII"));
            h.insert("Docker-Content-Digest", digest_value(digest));
            return Ok(resp);
        }
    };
    let body = if head {
        Body::empty()
    } else {
        let read = bytes.bytes(range.clone()).await.map_err(|e| match e.kind() {
            // Gone since it was looked up.
            ErrorKind::NotFound => unknown(digest),
            _ => internal("reading blob", e),
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
    h.insert("Docker-Content-Digest", digest_value(digest));
    h.insert(header::ETAG, etag(digest));
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

fn internal(doing: &str, e: StorageError) -> RegistryError {
    tracing::error!(error = %e, "{doing}");
    RegistryError::internal()
}

fn unknown(digest: &Digest) -> RegistryError {
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

/// The request's `Range`, honoured when it is a single well-formed byte range and any
/// `If-Range` names this blob; anything else gets the whole blob (as RFC 9110 allows).
fn requested_range(headers: &HeaderMap, digest: &Digest, len: u64) -> Ranged {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ranged::Whole };
    if let Some(if_range) = headers.get(header::IF_RANGE)
        && if_range != etag(digest)
    {
        return Ranged::Whole;
    }
    parse_range(value, len)
}

fn parse_range(value: &str, len: u64) -> Ranged {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ranged::Whole };
    let Some((first, last)) = spec.split_once('-') else { return Ranged::Whole };
    let (first, last) = (first.trim(), last.trim());
    if spec.contains(',') {
        return Ranged::Whole;
    }
    if first.is_empty() {
        // The last `n` bytes.
        let Ok(n) = last.parse::<u64>() else { return Ranged::Whole };
        if n == 0 || len == 0 {
            return Ranged::Unsatisfiable;
        }
        return Ranged::Part(len.saturating_sub(n)..len);
    }
    let Ok(start) = first.parse::<u64>() else { return Ranged::Whole };
    let end = if last.is_empty() {
        len
    } else {
        match last.parse::<u64>() {
            Ok(l) if l >= start => l.saturating_add(1).min(len),
            _ => return Ranged::Whole,
        }
    };
    if start >= len { Ranged::Unsatisfiable } else { Ranged::Part(start..end) }
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
        assert_eq!(parse_range("bytes=-500", 100), Ranged::Part(0..100));
        assert_eq!(parse_range("bytes=100-", 100), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Ranged::Unsatisfiable);
        // Malformed, reversed, other units, several ranges: the whole blob.
        assert_eq!(parse_range("bytes=9-1", 100), Ranged::Whole);
        assert_eq!(parse_range("bytes=a-b", 100), Ranged::Whole);
        assert_eq!(parse_range("items=0-1", 100), Ranged::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ranged::Whole);
    }

    #[test]
    fn if_range_must_name_the_blob() {
        let d = Digest::of(b"x");
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-0"));
        assert_eq!(requested_range(&h, &d, 10), Ranged::Part(0..1));
        h.insert(header::IF_RANGE, etag(&d));
        assert_eq!(requested_range(&h, &d, 10), Ranged::Part(0..1));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"other\""));
        assert_eq!(requested_range(&h, &d, 10), Ranged::Whole);
    }
}
