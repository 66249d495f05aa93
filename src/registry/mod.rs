//! The HTTP face of the registry: the distribution spec's pull API under `/v2/`.
//!
//! Handlers are thin: they parse the path into an [`Endpoint`] of checked types (see
//! [`path`] for how endpoints are found in names that may contain any word), call the
//! builder or storage, and shape the answer.
//!
//! Rules that hold for every answer:
//! - Only GET and HEAD are served. Any other method on any `/v2/` path, or on `/metrics`,
//!   is 405 `UNSUPPORTED` with `Allow: GET, HEAD`, before the path is looked at: this
//!   registry takes no pushes or deletes anywhere. Request bodies are never read, so no
//!   body can be too large.
//! - HEAD answers carry the status and headers GET would, `Content-Length` included, and no
//!   body. Blob and manifest handlers set `Content-Length` themselves (a HEAD of a blob
//!   reads nothing); for every other answer (JSON documents, errors) axum computes it from
//!   the body before dropping it, so handlers must not empty HEAD bodies themselves.
//! - Every error is the registry's JSON ([`RegistryError`]) with `Content-Type:
//!   application/json`: bad paths (including percent-encoded bytes that are not UTF-8; no
//!   axum extractor with a plain-text rejection runs), paths that name no endpoint, in or
//!   outside `/v2/` (404 `UNSUPPORTED`, the [`router`]'s fallback), 405s, 412 and 416. The
//!   one exception is outside the router's reach: hyper itself refuses a request line that
//!   is not valid HTTP (raw bytes that are not UTF-8 in the target, for instance) with a
//!   bare 400.

mod blobs;
mod collected;
mod conditional;
mod error;
mod manifests;
mod path;
mod reason;
mod referrers;
mod tags;

pub use error::{Code, RegistryError};

use crate::AppState;
use crate::image::ImageName;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use path::Endpoint;
use serde_json::json;

/// The image a request was about, put into its answer's extensions for the request log
/// ([`crate::ops`], which wraps the registry and so may depend on it; the registry never
/// depends on `ops`).
#[derive(Clone, Debug)]
pub struct RequestedImage(pub ImageName);

/// Header that tells clients this is a v2 registry.
const API_VERSION: &str = "Docker-Distribution-API-Version";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .route("/v2/{*path}", any(dispatch))
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .fallback(no_endpoint)
}

fn serves(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

async fn base(method: Method) -> Response {
    if !serves(&method) {
        return method_not_allowed(method).await;
    }
    let mut resp = axum::Json(json!({})).into_response();
    resp.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

async fn dispatch(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let (result, image) = if serves(&method) {
        answer(&state, method == Method::HEAD, &uri, &headers).await
    } else {
        (Err(RegistryError::unsupported(method.as_str())), None)
    };
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(image) = image {
        resp.extensions_mut().insert(RequestedImage(image));
    }
    resp.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// The answer to a GET or HEAD under `/v2/`, and the image it was about (for the request
/// log, [`RequestedImage`]).
async fn answer(
    state: &AppState,
    head: bool,
    uri: &Uri,
    headers: &HeaderMap,
) -> (Result<Response, RegistryError>, Option<ImageName>) {
    let raw = uri.path().strip_prefix("/v2/").unwrap_or_default();
    let endpoint = match path::parse(raw) {
        Ok(endpoint) => endpoint,
        Err(e) => return (Err(e), None),
    };
    match endpoint {
        Endpoint::Manifest { name, reference } => (manifests::get(state, &name, reference, headers).await, Some(name)),
        Endpoint::Blob { digest } => (collected::blob(state, &digest, head, headers).await, None),
        Endpoint::Tags { name } => (tags::list(&name, uri), Some(name)),
        Endpoint::Referrers => (Ok(referrers::list(uri)), None),
        Endpoint::Upload => (
            Err(RegistryError::new(
                StatusCode::NOT_FOUND,
                Code::BlobUploadUnknown,
                "this registry takes no uploads, so it has none",
            )),
            None,
        ),
    }
}

async fn method_not_allowed(method: Method) -> Response {
    RegistryError::unsupported(method.as_str()).into_response()
}

/// 404 for any path no route takes.
async fn no_endpoint(uri: Uri) -> Response {
    path::no_endpoint(uri.path()).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

#[cfg(test)]
mod tests;
