//! The JSON API client against a scripted in-process server (exact requests, error answers
//! the emulator never gives: [`client`]), and the V4 signer against known answers
//! ([`signed_urls`]). The same client runs against fake-gcs-server in
//! tests/integration/storage_backends.rs. This module is the scripted server.

mod client;
mod signed_urls;

use super::*;
use crate::storage::{Download, ErrorKind};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

const KEY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/storage/gcs/testdata/service-account.json");
const BUCKET: &str = "nixery-test";

/// What the scripted server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: String,
    content_range: Option<String>,
    authorization: Option<String>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Vec<u8>>,
    /// Upload sessions: object name and bytes held.
    sessions: HashMap<String, (String, Vec<u8>)>,
    next_session: u64,
    seen: Vec<Seen>,
    /// Keep 256 KiB less than sent of this many chunks.
    keep_short: usize,
    /// Answer `done: false` to this many rewrite calls.
    unfinished_rewrites: usize,
    /// Answer every rewrite with this status.
    rewrite_status: Option<u16>,
    /// Answer 503 to this many metadata requests.
    busy_stats: usize,
}

struct Mock {
    base: String,
    state: Arc<Mutex<State>>,
}

impl Mock {
    async fn start() -> Mock {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (st, b) = (state.clone(), base.clone());
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let (st, b) = (st.clone(), b.clone());
            async move { answer(&st, &b, req).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Mock { base, state }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.with(|s| s.objects.clone())
    }

    /// A client of this server as an emulator (no credentials).
    async fn client(&self, chunk: usize) -> Gcs {
        let mut config = GcsConfig::new(BUCKET);
        config.emulator_host = Some(self.base.clone());
        config.chunk_size = chunk;
        Gcs::new(config).await.unwrap()
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8().unwrap().into_owned()
}

fn status(code: u16, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap();
    resp
}

fn size_json(n: usize) -> String {
    format!(r#"{{"kind":"storage#object","size":"{n}"}}"#)
}

async fn answer(state: &Mutex<State>, base: &str, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let header = |h: &HeaderMap, name: &str| h.get(name).map(|v| v.to_str().unwrap().to_owned());
    let uri = parts.uri.to_string();
    let mut st = state.lock().unwrap();
    st.seen.push(Seen {
        method: parts.method.clone(),
        uri: uri.clone(),
        content_range: header(&parts.headers, "content-range"),
        authorization: header(&parts.headers, "authorization"),
    });
    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    let upload_prefix = format!("/upload/storage/v1/b/{BUCKET}/o");
    let object_prefix = format!("/storage/v1/b/{BUCKET}/o/");

    if parts.method == Method::POST && path == upload_prefix {
        assert_eq!(query.get("uploadType").map(String::as_str), Some("resumable"));
        st.next_session += 1;
        let id = st.next_session.to_string();
        st.sessions.insert(id.clone(), (query["name"].clone(), Vec::new()));
        let mut resp = status(200, "{}");
        resp.headers_mut().insert("location", format!("{base}/session/{id}").parse().unwrap());
        return resp;
    }
    if let Some(id) = path.strip_prefix("/session/") {
        if parts.method == Method::DELETE {
            st.sessions.remove(id);
            return status(499, "");
        }
        let keep_short = st.keep_short > 0;
        let Some((_, held)) = st.sessions.get_mut(id) else { return status(404, "no session") };
        let range = header(&parts.headers, "content-range").unwrap();
        let spec = range.strip_prefix("bytes ").unwrap();
        let (span, total) = spec.split_once('/').unwrap();
        if span != "*" {
            let (a, b) = span.split_once('-').unwrap();
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(a, held.len(), "chunk does not start where the held bytes end");
            assert_eq!(b - a + 1, body.len(), "Content-Range does not match the body");
            if total == "*" {
                assert_eq!(body.len() % QUANTUM, 0, "a chunk that is not a multiple of 256 KiB");
            }
            held.extend_from_slice(&body);
        }
        if total == "*" {
            if keep_short {
                held.truncate(held.len() - QUANTUM);
            }
            let n = held.len();
            st.keep_short = st.keep_short.saturating_sub(1);
            let mut resp = status(308, "");
            if n > 0 {
                resp.headers_mut().insert("range", format!("bytes=0-{}", n - 1).parse().unwrap());
            }
            return resp;
        }
        let total: usize = total.parse().unwrap();
        assert_eq!(held.len(), total, "the total does not match the bytes sent");
        let (name, held) = st.sessions.remove(id).unwrap();
        st.objects.insert(name, held);
        return status(200, size_json(total));
    }
    let Some(rest) = path.strip_prefix(&object_prefix) else { return status(400, "unknown path") };
    if let Some((src, dst)) = rest.split_once(&format!("/rewriteTo/b/{BUCKET}/o/")) {
        assert_eq!(parts.method, Method::POST);
        assert!(body.is_empty(), "a rewrite body would replace the metadata");
        let (src, dst) = (decode(src), decode(dst));
        if let Some(code) = st.rewrite_status {
            return status(code, "scripted failure");
        }
        if query.get("ifGenerationMatch").map(String::as_str) == Some("0") && st.objects.contains_key(&dst) {
            return status(412, "exists");
        }
        let Some(bytes) = st.objects.get(&src).cloned() else { return status(404, "no source") };
        if st.unfinished_rewrites > 0 {
            st.unfinished_rewrites -= 1;
            let token = format!("tok/{}", st.unfinished_rewrites);
            return status(200, format!(r#"{{"done":false,"rewriteToken":"{token}","totalBytesRewritten":"1"}}"#));
        }
        st.objects.insert(dst, bytes);
        return status(200, r#"{"kind":"storage#rewriteResponse","done":true}"#);
    }
    let name = decode(rest);
    match parts.method {
        Method::DELETE => match st.objects.remove(&name) {
            Some(_) => status(204, ""),
            None => status(404, "no object"),
        },
        Method::GET if query.get("alt").map(String::as_str) == Some("media") => {
            let Some(bytes) = st.objects.get(&name) else { return status(404, "no object") };
            match header(&parts.headers, "range") {
                None => status(200, bytes.clone()),
                Some(r) => {
                    let (a, b) = r.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
                    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                    status(206, bytes[a..=b].to_vec())
                }
            }
        }
        Method::GET => {
            if st.busy_stats > 0 {
                st.busy_stats -= 1;
                return status(503, "busy");
            }
            match st.objects.get(&name) {
                Some(bytes) => status(200, size_json(bytes.len())),
                None => status(404, "no object"),
            }
        }
        _ => status(405, "").into_response(),
    }
}

/// `total` bytes of a pattern in pieces of `piece` bytes.
fn body_of(total: usize, piece: usize) -> (Vec<u8>, ByteStream) {
    let data: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
    let pieces: Vec<std::io::Result<Bytes>> = data.chunks(piece).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    (data, Box::pin(futures::stream::iter(pieces)))
}

fn blob_key(data: &[u8]) -> ObjectKey {
    ObjectKey::blob(&crate::digest::Digest::of(data))
}

/// The client's own error behind a storage error.
fn gcs_error(err: &StorageError) -> &GcsError {
    std::error::Error::source(err).and_then(|e| e.downcast_ref()).expect("a GcsError as the source")
}

fn ranges(seen: &[Seen]) -> Vec<String> {
    seen.iter().filter_map(|s| s.content_range.clone()).collect()
}

impl Gcs {
    async fn put_for_test(&self, key: &ObjectKey, bytes: &'static str) {
        let staged = self.stage(Box::pin(futures::stream::iter([Ok(Bytes::from(bytes))]))).await.unwrap();
        self.commit(staged, key).await.unwrap();
    }
}
