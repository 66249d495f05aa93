//! `GET|HEAD /v2/<name>/referrers/<digest>[?artifactType=<type>]` (distribution-spec v1.1.1,
//! "Listing Referrers", end-12a and end-12b), and the artifacts' answers shared with the
//! reserved tags of [`super::manifests`].
//!
//! The referrers of an image manifest or index this registry served, as an image of
//! `<name>`, are its SBOM (`application/spdx+json`) and, when the registry signs, cosign's
//! signature and SPDX attestation ([`crate::builder`] makes them; [`crate::artifact`] has the
//! manifests). They are listed in an OCI image index (`application/vnd.oci.image.index.v1+json`),
//! each entry with its `artifactType` and annotations.
//!
//! Any other valid request (a digest never served, or served as another name's image, or an
//! artifact's own digest) gets the spec's answer for "no referrers": 200 with an empty
//! index. That also tells clients the API is supported, so they do not fall back to the
//! referrers tag schema (the spec: a registry that supports the API "MUST NOT return a 404");
//! an invalid digest is 400 ([`super::path`]).
//!
//! An `artifactType` filter is applied and said so with `OCI-Filters-Applied: artifactType`.

use super::error::{Code, RegistryError};
use crate::AppState;
use crate::artifact::{self, Artifact, ArtifactKind, ReservedTag};
use crate::builder::{ArtifactError, ManifestError};
use crate::cache::CachedManifest;
use crate::digest::Digest;
use crate::image::ImageName;
use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The referrers list of `digest` as an image of `name`; the URI's query may filter it.
pub async fn list(state: &AppState, name: &ImageName, digest: &Digest, uri: &Uri) -> Result<Response, RegistryError> {
    let params = Query::<Vec<(String, String)>>::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let filter = params.iter().find(|(k, _)| k == "artifactType").map(|(_, v)| v.as_str());
    let found = state.builder.referrers(name, digest).await.map_err(|e| answer(&e))?.unwrap_or_default();
    link(state, name, &found).await;
    let index = index(&found, filter);
    let content_type = HeaderValue::from_static(artifact::INDEX_MEDIA_TYPE);
    let mut resp = ([(header::CONTENT_TYPE, content_type)], index.bytes).into_response();
    if filter.is_some() {
        resp.headers_mut().insert("OCI-Filters-Applied", HeaderValue::from_static("artifactType"));
    }
    Ok(resp)
}

/// With authentication on, links the artifacts found for an image of `name` to `name`, so
/// that a client that may pull it can fetch them by digest ([`crate::auth::links`]).
async fn link(state: &AppState, name: &ImageName, found: &[Arc<Artifact>]) {
    let Some(links) = state.guard.links() else { return };
    let digests: Vec<Digest> =
        found.iter().flat_map(|a| crate::auth::links::with_references(&a.manifest.digest, &a.manifest.bytes)).collect();
    if let Err(e) = links.link(name, &digests).await {
        tracing::error!(error = %e, image = %name, "linking the artifacts to their image's name");
    }
}

/// The referrers index of `found`, filtered to `artifact_type` if given.
pub fn index(found: &[Arc<Artifact>], artifact_type: Option<&str>) -> crate::manifest::Document {
    let all: Vec<&Artifact> = found.iter().map(Arc::as_ref).collect();
    artifact::referrers(&all, artifact_type)
}

/// An artifact manifest (or a referrers index) as a manifest answer.
pub fn manifest(doc: crate::manifest::Document, media_type: &'static str) -> CachedManifest {
    CachedManifest::new(doc, media_type)
}

/// The answer to an artifact that could not be made: a storage fault is the server's (500,
/// logged); a source or build failure of the image it needed is the image's, as for a pull.
pub fn answer(e: &ArtifactError) -> RegistryError {
    match e {
        ArtifactError::Storage(e) => RegistryError::storage_fault("reading or writing an artifact", e),
        ArtifactError::Source(e) => RegistryError::from(&ManifestError::Source(e.clone())),
        ArtifactError::Build(e) => RegistryError::from(&ManifestError::Build(e.clone())),
    }
}

/// What a reserved tag names ([`ReservedTag`]): the referrers index of a manifest (the
/// referrers tag schema, unfiltered) or cosign's `.sig` / `.att` manifest. A digest this
/// registry never served as an image of `name`, or an artifact it does not have (no signing
/// key), is 404 `MANIFEST_UNKNOWN`, on every package source: these tags are never a branch
/// or a revision.
pub async fn tagged(state: &AppState, name: &ImageName, tag: &ReservedTag) -> Result<CachedManifest, RegistryError> {
    let unknown = |what: String| RegistryError::new(StatusCode::NOT_FOUND, Code::ManifestUnknown, what);
    let digest = tag.digest();
    let builder = &state.builder;
    match tag {
        ReservedTag::Referrers(_) => match builder.referrers(name, digest).await.map_err(|e| answer(&e))? {
            Some(found) => Ok(manifest(index(&found, None), artifact::INDEX_MEDIA_TYPE)),
            None => Err(unknown(not_served(name, digest))),
        },
        ReservedTag::Artifact(_, kind) => match builder.artifact(name, digest, *kind).await.map_err(|e| answer(&e))? {
            Some(found) => Ok(manifest(found.manifest.clone(), artifact::MANIFEST_MEDIA_TYPE)),
            None if builder.public_key().is_none()
                && builder.referrers(name, digest).await.ok().flatten().is_some() =>
            {
                Err(unknown(format!(
                    "this registry signs nothing (no NIXERY_SIGNING_KEY), so {digest} has no {}",
                    what(*kind)
                )))
            }
            None => Err(unknown(not_served(name, digest))),
        },
    }
}

fn not_served(name: &ImageName, digest: &Digest) -> String {
    format!("this registry served no manifest {digest} as an image of {name}, so it has no artifacts")
}

fn what(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Sbom => "SBOM",
        ArtifactKind::Signature => "signature",
        ArtifactKind::Attestation => "attestation",
    }
}
