//! The HTTP face of the registry: the distribution spec's pull API under `/v2/`.
//!
//! Handlers are thin: they parse the path into an [`Endpoint`] of checked types, call the
//! builder or storage, and shape the answer. GET and HEAD are served by the same code (HEAD
//! answers carry the same headers as GET, with no body); push and delete methods get 405
//! `UNSUPPORTED`.

mod blobs;
mod error;
mod manifests;
mod path;

pub use error::{Code, RegistryError};

use crate::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use path::Endpoint;
use serde_json::json;

/// Header that tells clients this is a v2 registry.
const API_VERSION: &str = "Docker-Distribution-API-Version";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .route("/v2/{*path}", any(dispatch))
        .route("/metrics", get(metrics))
}

/// The `Docker-Content-Digest` value of a blob or manifest.
fn digest_value(digest: &crate::digest::Digest) -> HeaderValue {
    HeaderValue::from_str(&digest.to_string()).expect("digests are ASCII")
}

/// A strong ETag: the digest, quoted.
fn etag(digest: &crate::digest::Digest) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{digest}\"")).expect("digests are ASCII")
}

async fn base(method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return RegistryError::unsupported(method.as_str()).into_response();
    }
    let mut resp = axum::Json(json!({})).into_response();
    resp.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

async fn dispatch(State(state): State<AppState>, Path(path): Path<String>, req: Request<Body>) -> Response {
    let method = req.method().clone();
    let endpoint = match path::parse(&path) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    if method != Method::GET && method != Method::HEAD {
        return RegistryError::unsupported(method.as_str()).into_response();
    }
    let (result, image) = match endpoint {
        Endpoint::Manifest { name, reference } => {
            (manifests::get(&state, &name, reference, req.headers()).await, Some(name))
        }
        Endpoint::Blob { digest } => (blobs::get(&state.storage, &digest, &method, req.headers()).await, None),
        Endpoint::Tags { name } => (Ok(tags(&name)), Some(name)),
        Endpoint::Upload => (Err(RegistryError::unsupported(method.as_str())), None),
    };
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(image) = image {
        resp.extensions_mut().insert(crate::ops::RequestedImage(image));
    }
    resp.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    if method == Method::HEAD {
        // Same status and headers (Content-Length included) as GET, no body.
        let (parts, _) = resp.into_parts();
        resp = Response::from_parts(parts, Body::empty());
    }
    resp
}

/// Every name has one tag clients can rely on: `latest` (others select source revisions).
fn tags(name: &crate::image::ImageName) -> Response {
    let body = json!({ "name": name.as_str(), "tags": ["latest"] }).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

#[cfg(test)]
mod tests;
