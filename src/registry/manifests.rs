//! `GET|HEAD /v2/<name>/manifests/<tag|digest>`.
//!
//! By tag: the manifest comes from the caches (see [`crate::cache`]: a warm answer is shared
//! bytes and headers rendered once) or the image is built, in the format the client accepts
//! (zstd layers: OCI only, and not to Docker before 23; else `MANIFEST_UNKNOWN` saying why,
//! before any build). By digest: the manifest is returned as it was first served, so containerd
//! can HEAD the tag and then GET the digest, from memory once this process knows it (the
//! manifest cache keeps manifests by digest too), else from storage, else (collected) made
//! again from its recipe ([`super::collected`]). Every answer carries `Content-Type`,
//! `Content-Length`, `Docker-Content-Digest` and `ETag` (the quoted digest), and
//! `If-Match` / `If-None-Match` are evaluated against it as for blobs
//! ([`super::conditional`]; by tag, after the image is built). `Range` is not supported on
//! manifests (no `Accept-Ranges`): it is ignored, as RFC 9110 §14.2 allows.
//!
//! With several platforms configured (`NIXERY_PLATFORMS`), a request by tag from a client
//! that accepts an image index gets one ([`crate::index`] has the rule), unless the name
//! selects an architecture (`arm64`); everyone else gets the default platform's manifest.
//!
//! A client that refuses both manifest formats (`q=0` on each, e.g. `*/*;q=0`) gets 406
//! before anything is built: a refused type is never chosen (RFC 9110 §12.4.2).

use super::collected;
use super::conditional::{self, Precondition};
use super::error::{Code, RegistryError};
use crate::AppState;
use crate::builder::ByDigest;
use crate::cache::CachedManifest;
use crate::digest::Digest;
use crate::image::{ImageName, ImageSpec, Reference};
use crate::manifest::ManifestFormat;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub async fn get(
    state: &AppState,
    name: &ImageName,
    reference: Reference,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    match reference {
        Reference::Tag(tag) => {
            let accept: Vec<&str> = accepted(headers).collect();
            let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
            let format =
                ManifestFormat::negotiate_for(accept.iter().copied(), user_agent, state.builder.compression())?;
            let platforms = state.builder.platforms();
            let spec = ImageSpec::for_platform(name, platforms.default_arch());
            let index = platforms.several()
                && ImageSpec::arch_in_name(name).is_none()
                && format.index_accepted(accept.iter().copied());
            let manifest = if index {
                state.builder.index(name, spec, &tag, format).await
            } else {
                state.builder.manifest(name, spec, &tag, format).await
            };
            let manifest = manifest.map_err(|e| RegistryError::from(&e))?;
            respond_cached(&manifest, headers)
        }
        Reference::Digest(digest) => {
            match state.builder.manifest_by_digest(&digest).await.map_err(collected::failed)? {
                ByDigest::Found(manifest) => respond_cached(&manifest, headers),
                ByDigest::Unknown => Err(RegistryError::new(
                    StatusCode::NOT_FOUND,
                    Code::ManifestUnknown,
                    format!("manifest {digest} is not known to this registry"),
                )),
                ByDigest::Collected(why) => Err(collected::collected(Code::ManifestUnknown, "manifest", &digest, &why)),
            }
        }
    }
}

/// All `Accept` values of all `Accept` lines (skopeo sends six lines).
fn accepted(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// `If-Match` / `If-None-Match` against the manifest's digest: `None` means serve it.
fn precondition(headers: &HeaderMap, digest: &Digest, len: usize) -> Option<Result<Response, RegistryError>> {
    match conditional::evaluate(headers, digest) {
        Precondition::Proceed => None,
        Precondition::NotModified => Some(Ok(conditional::not_modified(digest, len as u64))),
        Precondition::Failed => Some(Err(conditional::failed("manifest", digest))),
    }
}

/// A cached manifest's answer: nothing is rendered, every part is shared.
fn respond_cached(manifest: &CachedManifest, headers: &HeaderMap) -> Result<Response, RegistryError> {
    if let Some(answer) = precondition(headers, &manifest.digest, manifest.bytes.len()) {
        return answer;
    }
    let mut resp = Body::from(manifest.bytes.clone()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, manifest.content_type.clone());
    h.insert(header::CONTENT_LENGTH, manifest.content_length.clone());
    h.insert("Docker-Content-Digest", manifest.digest_header.clone());
    h.insert(header::ETAG, manifest.etag.clone());
    Ok(resp)
}
