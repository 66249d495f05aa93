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
//! - Access ([`guard`]): with authentication configured, `/v2/` challenges every client
//!   without credentials (as `docker login` expects), and every endpoint identifies the
//!   client (401 for credentials that do not hold) and checks its right to the name in the
//!   URL before it answers; only a manifest by tag can cause a build, and only it asks
//!   whether the client may build (`NIXERY_ANONYMOUS`, `NIXERY_BUILD_RATE`).

mod blobs;
mod collected;
mod conditional;
mod error;
pub mod guard;
mod manifests;
mod path;
mod reason;
mod referrers;
mod tags;

pub use error::{Code, RegistryError};
pub use guard::{AccessPolicy, Guard, Scheme};

use crate::AppState;
use crate::auth::Action;
use crate::image::ImageName;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use path::Endpoint;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};

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

/// `/v2/`: 200 `{}`, or with authentication configured the challenge to clients without
/// credentials ([`Guard::base`]).
async fn base(State(state): State<AppState>, method: Method, headers: HeaderMap) -> Response {
    if !serves(&method) {
        return method_not_allowed(method).await;
    }
    let mut resp = match state.guard.base(&headers).await {
        Ok(()) => axum::Json(json!({})).into_response(),
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// What a handler knows of the request besides its path.
pub(crate) struct Asked<'a> {
    pub head: bool,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The TCP peer (absent in router tests without sockets).
    pub peer: Option<IpAddr>,
}

async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let (result, image) = if serves(&method) {
        let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
        let asked = Asked { head: method == Method::HEAD, uri: &uri, headers: &headers, peer };
        answer(&state, &asked).await
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
async fn answer(state: &AppState, asked: &Asked<'_>) -> (Result<Response, RegistryError>, Option<ImageName>) {
    let raw = asked.uri.path().strip_prefix("/v2/").unwrap_or_default();
    let endpoint = match path::parse(raw) {
        Ok(endpoint) => endpoint,
        Err(e) => return (Err(e), None),
    };
    let result = async {
        let name = endpoint.name();
        let identity = state.guard.identify(asked.headers, Some(name.as_str())).await?;
        if !matches!(endpoint, Endpoint::Manifest { .. }) {
            // Building is a manifest's doing (or a collected blob's, admitted there):
            // everything else reads what exists.
            state.guard.check(&identity, name.as_str(), Action::Pull)?;
        }
        match &endpoint {
            Endpoint::Manifest { name, reference } => manifests::get(state, name, reference, &identity, asked).await,
            Endpoint::Blob { name, digest } => collected::blob(state, name, digest, &identity, asked).await,
            Endpoint::Tags { name } => tags::list(name, asked.uri),
            Endpoint::Referrers { name, digest } => referrers::list(state, name, digest, asked.uri).await,
            Endpoint::Upload { .. } => Err(RegistryError::new(
                StatusCode::NOT_FOUND,
                Code::BlobUploadUnknown,
                "this registry takes no uploads, so it has none",
            )),
        }
    }
    .await;
    let image = match endpoint {
        Endpoint::Manifest { name, .. } | Endpoint::Tags { name } | Endpoint::Referrers { name, .. } => Some(name),
        _ => None,
    };
    (result, image)
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
