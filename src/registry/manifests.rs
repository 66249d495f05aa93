//! `GET|HEAD /v2/<name>/manifests/<tag|digest>`.
//!
//! By tag: the image is built (or found) and its manifest returned in the format the client
//! accepts (zstd layers: OCI only, and not to Docker before 23; else `MANIFEST_UNKNOWN`
//! saying why, before any build). By digest: the stored manifest is returned as it was first served, so containerd
//! can HEAD the tag and then GET the digest. Every answer carries `Content-Type`,
//! `Content-Length` and `Docker-Content-Digest`.

use super::error::{Code, RegistryError};
use super::{digest_value, etag};
use crate::AppState;
use crate::digest::Digest;
use crate::image::{ImageName, ImageSpec, Reference};
use crate::manifest::{self, ManifestFormat};
use crate::storage::ObjectKey;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

pub async fn get(
    state: &AppState,
    name: &ImageName,
    reference: Reference,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    match reference {
        Reference::Tag(tag) => {
            let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
            let format = ManifestFormat::negotiate(accepted(headers), user_agent, state.builder.compression())?;
            let spec = ImageSpec::from_name(name);
            let doc = state.builder.manifest(&spec, &tag, format).await.map_err(|e| RegistryError::from(e.as_ref()))?;
            Ok(respond(doc.bytes, &doc.digest, format.media_type()))
        }
        Reference::Digest(digest) => {
            let stored = state.storage.get(&ObjectKey::manifest(&digest)).await.map_err(|e| {
                tracing::error!(error = %e, "reading manifest");
                RegistryError::internal()
            })?;
            let Some(bytes) = stored else {
                return Err(RegistryError::new(
                    StatusCode::NOT_FOUND,
                    Code::ManifestUnknown,
                    format!("manifest {digest} is not known to this registry"),
                ));
            };
            let media =
                manifest::media_type_of(&bytes).unwrap_or_else(|| ManifestFormat::Docker.media_type().to_owned());
            Ok(respond(bytes, &digest, &media))
        }
    }
}

/// All `Accept` values of all `Accept` lines (skopeo sends six lines).
fn accepted(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

fn respond(bytes: Bytes, digest: &Digest, media_type: &str) -> Response {
    let len = bytes.len();
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(media_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert("Docker-Content-Digest", digest_value(digest));
    h.insert(header::ETAG, etag(digest));
    resp
}
