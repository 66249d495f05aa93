//! `GET|HEAD /v2/<name>/blobs/<digest>`: layers and configs.
//!
//! How depends on the storage backend's [`Download`]:
//! - a local file: streamed by tower-http's `ServeFile` (ranges, HEAD, conditional requests);
//! - an object-store redirect: GET answers 307 with `Location` (a signed or public URL of the
//!   object); HEAD answers 200 with the blob's headers itself (a URL signed for GET would not
//!   serve a HEAD, and the answer needs no trip to the bucket);
//! - an object-store proxy: the bytes stream through this server, with a single `Range`
//!   (`bytes=a-b`, `a-`, `-n`) passed on to the store; other range forms get the whole blob.
//!
//! Every answer carries `Docker-Content-Digest`.

use super::error::{Code, RegistryError};
use super::{digest_value, etag};
use crate::AppState;
use crate::digest::Digest;
use crate::storage::{Download, ObjectKey, Storage};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::ops::Range;
use tower::ServiceExt;
use tower_http::services::ServeFile;

pub async fn get(state: &AppState, digest: &Digest, req: Request<Body>) -> Result<Response, RegistryError> {
    serve(&state.storage, digest, req).await
}

async fn serve(storage: &Storage, digest: &Digest, req: Request<Body>) -> Result<Response, RegistryError> {
    let key = ObjectKey::blob(digest);
    let download = storage.download(&key).await.map_err(|e| {
        tracing::error!(error = %e, "looking up blob");
        RegistryError::internal()
    })?;
    let Some(download) = download else { return Err(unknown(digest)) };
    match download {
        Download::File { path, .. } => {
            let resp = ServeFile::new(path).oneshot(req).await.map_err(|e| {
                tracing::error!(error = %e, "serving blob");
                RegistryError::internal()
            })?;
            let mut resp = resp.map(Body::new).into_response();
            blob_headers(resp.headers_mut(), digest);
            Ok(resp)
        }
        Download::Redirect { len, .. } if req.method() == Method::HEAD => Ok(whole(digest, len, Body::empty())),
        Download::Redirect { url, .. } => {
            let location = HeaderValue::from_str(&url).map_err(|_| {
                tracing::error!(%url, "storage gave a redirect URL that is no header value");
                RegistryError::internal()
            })?;
            let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
            resp.headers_mut().insert(header::LOCATION, location);
            resp.headers_mut().insert("Docker-Content-Digest", digest_value(digest));
            Ok(resp)
        }
        Download::Proxy { len } => {
            let wanted = requested_range(req.headers(), digest, len);
            proxy(storage, &key, digest, len, wanted, req.method() == Method::HEAD).await
        }
    }
}

/// Streams a blob from the object store (or just its headers, for HEAD).
async fn proxy(
    storage: &Storage,
    key: &ObjectKey,
    digest: &Digest,
    len: u64,
    wanted: Ranged,
    head: bool,
) -> Result<Response, RegistryError> {
    if let Ranged::Unsatisfiable = wanted {
        let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{len}")).expect("ASCII"));
        h.insert("Docker-Content-Digest", digest_value(digest));
        return Ok(resp);
    }
    let range = match &wanted {
        Ranged::Part(r) => Some(r.clone()),
        _ => None,
    };
    let body = if head {
        Body::empty()
    } else {
        let stream = storage.read(key, range.clone()).await.map_err(|e| {
            tracing::error!(error = %e, "reading blob");
            RegistryError::internal()
        })?;
        // Gone since it was looked up.
        let Some(stream) = stream else { return Err(unknown(digest)) };
        Body::from_stream(stream)
    };
    let Some(r) = range else { return Ok(whole(digest, len, body)) };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = resp.headers_mut();
    blob_headers(h, digest);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
    h.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes {}-{}/{len}", r.start, r.end - 1)).expect("ASCII"),
    );
    Ok(resp)
}

/// A 200 answer for the whole blob.
fn whole(digest: &Digest, len: u64, body: Body) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    blob_headers(h, digest);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn blob_headers(h: &mut HeaderMap, digest: &Digest) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert("Docker-Content-Digest", digest_value(digest));
    h.insert(header::ETAG, etag(digest));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
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
    use crate::storage::{Gcs, GcsConfig};

    /// Just enough of the Cloud Storage JSON API to look up and read one object.
    async fn stub_bucket(name: &'static str, bytes: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(move |req: Request<Body>| async move {
            let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string();
            if req.uri().path() != format!("/storage/v1/b/bucket/o/{encoded}") {
                return StatusCode::NOT_FOUND.into_response();
            }
            if req.uri().query() != Some("alt=media") {
                return format!(r#"{{"size":"{}"}}"#, bytes.len()).into_response();
            }
            match req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()) {
                None => bytes.into_response(),
                Some(r) => {
                    let (a, b) = r.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
                    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                    (StatusCode::PARTIAL_CONTENT, &bytes[a..=b]).into_response()
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    async fn bucket_storage(proxy: bool, digest: &Digest, bytes: &'static [u8]) -> Storage {
        let name: &'static str = Box::leak(ObjectKey::blob(digest).to_string().into_boxed_str());
        let mut config = GcsConfig::new("bucket");
        config.emulator_host = Some(stub_bucket(name, bytes).await);
        config.proxy_blobs = proxy;
        Storage::Gcs(Gcs::new(config).await.unwrap())
    }

    fn request(method: Method, range: Option<&str>) -> Request<Body> {
        let mut req = Request::builder().method(method).uri("/v2/x/blobs/d");
        if let Some(r) = range {
            req = req.header(header::RANGE, r);
        }
        req.body(Body::empty()).unwrap()
    }

    async fn body(resp: Response) -> Vec<u8> {
        axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()
    }

    fn h<'a>(resp: &'a Response, name: &str) -> &'a str {
        resp.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or_default()
    }

    const BLOB: &[u8] = b"0123456789";

    #[tokio::test]
    async fn redirects_get_and_answers_head_itself() {
        let digest = Digest::of(BLOB);
        let storage = bucket_storage(false, &digest, BLOB).await;
        let resp = serve(&storage, &digest, request(Method::GET, None)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
        assert!(
            h(&resp, "location").ends_with(&format!("/bucket/layers/sha256%3A{}", digest.hex())),
            "{}",
            h(&resp, "location")
        );
        assert_eq!(h(&resp, "docker-content-digest"), digest.to_string());
        let head = serve(&storage, &digest, request(Method::HEAD, None)).await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(h(&head, "content-length"), "10");
        assert_eq!(h(&head, "content-type"), "application/octet-stream");
        assert_eq!(h(&head, "docker-content-digest"), digest.to_string());
        let missing = Digest::of(b"missing");
        let err = serve(&storage, &missing, request(Method::GET, None)).await.unwrap_err().into_response();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        assert!(String::from_utf8(body(err).await).unwrap().contains("BLOB_UNKNOWN"));
    }

    #[tokio::test]
    async fn proxies_whole_blobs_and_ranges() {
        let digest = Digest::of(BLOB);
        let storage = bucket_storage(true, &digest, BLOB).await;
        let resp = serve(&storage, &digest, request(Method::GET, None)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            (h(&resp, "content-length"), h(&resp, "content-type"), h(&resp, "docker-content-digest")),
            ("10", "application/octet-stream", digest.to_string().as_str())
        );
        assert_eq!(body(resp).await, BLOB);
        let part = serve(&storage, &digest, request(Method::GET, Some("bytes=2-4"))).await.unwrap();
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!((h(&part, "content-range"), h(&part, "content-length")), ("bytes 2-4/10", "3"));
        assert_eq!(body(part).await, b"234");
        let tail = serve(&storage, &digest, request(Method::GET, Some("bytes=-3"))).await.unwrap();
        assert_eq!(body(tail).await, b"789");
        let beyond = serve(&storage, &digest, request(Method::GET, Some("bytes=10-"))).await.unwrap();
        assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(h(&beyond, "content-range"), "bytes */10");
        let head = serve(&storage, &digest, request(Method::HEAD, None)).await.unwrap();
        assert_eq!((head.status(), h(&head, "content-length")), (StatusCode::OK, "10"));
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
