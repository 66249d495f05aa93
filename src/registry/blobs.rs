//! `GET|HEAD /v2/<name>/blobs/<digest>`: layers and configs, served from storage with Range
//! support (tower-http's `ServeFile` does ranges, HEAD and conditional requests).

use super::error::{Code, RegistryError};
use crate::AppState;
use crate::digest::Digest;
use crate::storage::{Download, ObjectKey};
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

pub async fn get(
    state: &AppState,
    digest: &Digest,
    req: Request<Body>,
) -> Result<Response, RegistryError> {
    let download = state
        .storage
        .download(&ObjectKey::blob(digest))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "looking up blob");
            RegistryError::internal()
        })?;
    let Some(download) = download else {
        return Err(RegistryError::new(
            StatusCode::NOT_FOUND,
            Code::BlobUnknown,
            format!("blob {digest} is not known to this registry"),
        ));
    };
    match download {
        Download::File { path, .. } => {
            let resp = ServeFile::new(path).oneshot(req).await.map_err(|e| {
                tracing::error!(error = %e, "serving blob");
                RegistryError::internal()
            })?;
            let mut resp = resp.map(Body::new).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(
                "Docker-Content-Digest",
                HeaderValue::from_str(&digest.to_string()).expect("digests are ASCII"),
            );
            h.insert(
                header::ETAG,
                HeaderValue::from_str(&format!("\"{digest}\"")).expect("digests are ASCII"),
            );
            Ok(resp)
        }
    }
}
