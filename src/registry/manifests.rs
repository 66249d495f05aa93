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
//! Reserved tags (`sha256-<hex>`, `.sig`, `.att`) name artifacts of a served manifest, on
//! every package source, before any tag selects a revision ([`super::referrers::tagged`]).
//!
//! A client that refuses both manifest formats (`q=0` on each, e.g. `*/*;q=0`) gets 406
//! before anything is built: a refused type is never chosen (RFC 9110 §12.4.2).
//!
//! Access ([`super::guard`]): every request needs the right to pull the name. By tag, a
//! client that may not build (anonymous under `NIXERY_ANONYMOUS=pull`) or whose builds are
//! rate-limited gets what exists for the tag's current revision from the caches first, and
//! only a request that would build is checked for that (401, 429). With authentication on,
//! each manifest served by tag is linked to the name (an index with its platforms'
//! manifests), and a manifest by digest is served only under a name it is linked to
//! ([`crate::auth::links`]): a client that may pull one name cannot read another's image by
//! its digest.

use super::Asked;
use super::collected;
use super::conditional::{self, Precondition};
use super::error::{Code, RegistryError};
use crate::AppState;
use crate::artifact::ReservedTag;
use crate::auth::{Action, Identity};
use crate::builder::{ByDigest, ManifestError};
use crate::cache::CachedManifest;
use crate::digest::Digest;
use crate::image::{ImageName, ImageSpec, Reference, Tag};
use crate::manifest::ManifestFormat;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub async fn get(
    state: &AppState,
    name: &ImageName,
    reference: &Reference,
    identity: &Identity,
    asked: &Asked<'_>,
) -> Result<Response, RegistryError> {
    state.guard.check(identity, name.as_str(), Action::Pull)?;
    let manifest = match reference {
        Reference::Tag(tag) => by_tag(state, name, tag, identity, asked).await?,
        Reference::Digest(digest) => by_digest(state, name, digest, identity, asked).await?,
    };
    respond_cached(&manifest, asked.headers)
}

/// The manifest (or index) of `name` at `tag`: what exists, or built if `identity` may.
async fn by_tag(
    state: &AppState,
    name: &ImageName,
    tag: &Tag,
    identity: &Identity,
    asked: &Asked<'_>,
) -> Result<Arc<CachedManifest>, RegistryError> {
    if let Some(reserved) = ReservedTag::parse(tag.as_str()) {
        let artifact = Arc::new(super::referrers::tagged(state, name, &reserved).await?);
        link(state, name, &artifact).await;
        return Ok(artifact);
    }
    let (guard, builder, headers) = (&state.guard, &state.builder, asked.headers);
    let accept: Vec<&str> = accepted(headers).collect();
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let format = ManifestFormat::negotiate_for(accept.iter().copied(), user_agent, builder.compression())?;
    let platforms = builder.platforms();
    let spec = ImageSpec::for_platform(name, platforms.default_arch());
    let index =
        platforms.several() && ImageSpec::arch_in_name(name).is_none() && format.index_accepted(accept.iter().copied());
    // A failure of the image (a package refusal among them) as its answer, counted.
    let answer = |e: ManifestError| {
        let answer = RegistryError::from(&e);
        guard.count_build_answer(&answer);
        answer
    };
    let existing = match guard.must_look_first(identity) {
        true => builder.existing(spec.clone(), tag, format, index).await.map_err(answer)?,
        false => None,
    };
    let manifest = match existing {
        Some(manifest) => manifest,
        None => {
            if guard.must_look_first(identity) {
                guard.admit_build(identity, name.as_str(), asked.peer, headers)?;
            }
            let built = match index {
                true => builder.index(name, spec, tag, format).await,
                false => builder.manifest(name, spec, tag, format).await,
            };
            built.map_err(answer)?
        }
    };
    link(state, name, &manifest).await;
    Ok(manifest)
}

/// With authentication on, links `manifest` and what it references (an index's manifests, a
/// manifest's config and layers) to `name`, so that they can be asked for by digest under
/// that name. A manifest this process knows linked is not read again (its references were
/// linked before it).
pub(super) async fn link(state: &AppState, name: &ImageName, manifest: &CachedManifest) {
    let Some(links) = state.guard.links() else { return };
    if links.is_known(name, &manifest.digest) {
        return;
    }
    let digests = crate::auth::links::with_references(&manifest.digest, &manifest.bytes);
    if let Err(e) = links.link(name, &digests).await {
        // The answer stands; a later request by digest under this name may miss.
        tracing::error!(error = %e, image = %name, "linking the manifest to its name");
    }
}

/// The manifest with `digest`, as first served, or made again from its recipe if garbage
/// collection took it ([`collected`]); with authentication only under a name it was served
/// for by tag ([`crate::auth::links`]), else the answer is the same as for a digest never
/// seen. Making it again is a build: a client that may not cause one is asked for that
/// ([`super::guard`]) as by tag.
async fn by_digest(
    state: &AppState,
    name: &ImageName,
    digest: &Digest,
    identity: &Identity,
    asked: &Asked<'_>,
) -> Result<Arc<CachedManifest>, RegistryError> {
    let (guard, builder) = (&state.guard, &state.builder);
    let unknown = || {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            Code::ManifestUnknown,
            format!("manifest {digest} is not known to this registry"),
        )
    };
    let storage_fault = |e: crate::storage::StorageError| RegistryError::storage_fault("reading manifest", &e);
    if let Some(links) = guard.links()
        && !links.is_linked(name, digest).await.map_err(storage_fault)?
    {
        return Err(unknown());
    }
    if let Some(known) = builder.known_manifest(digest).await.map_err(storage_fault)? {
        link(state, name, &known).await;
        return Ok(known);
    }
    if guard.must_look_first(identity) && builder.would_remake(digest).await.map_err(storage_fault)? {
        guard.admit_build(identity, name.as_str(), asked.peer, asked.headers)?;
    }
    let failed = collected::failed(Code::ManifestUnknown, "manifest", digest);
    match builder.manifest_by_digest(digest).await.map_err(failed)? {
        ByDigest::Found(manifest) => {
            link(state, name, &manifest).await;
            Ok(manifest)
        }
        ByDigest::Unknown => Err(unknown()),
        ByDigest::Collected(why) => Err(collected::collected(Code::ManifestUnknown, "manifest", digest, &why)),
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
