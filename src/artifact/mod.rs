//! OCI 1.1 artifacts: the manifests that attach an SBOM, a signature or an attestation to an
//! image manifest (their `subject`), the reserved tags that name them, and the referrers
//! index that lists them.
//!
//! Every artifact is an OCI image manifest (`application/vnd.oci.image.manifest.v1+json`)
//! with a `subject` descriptor of the image manifest or index it is about, so the referrers
//! API (distribution-spec v1.1 "Listing Referrers") finds it. Its artifact type is what the
//! referrers index reports and what `?artifactType=` filters on:
//!
//! | artifact | artifact type | config | layer |
//! |---|---|---|---|
//! | SBOM | `application/spdx+json` (the manifest's `artifactType`) | the empty descriptor (`application/vnd.oci.empty.v1+json`, `{}`) | the SPDX JSON, titled `sbom.spdx.json` for `oras pull` |
//! | signature | `application/vnd.dev.cosign.artifact.sig.v1+json` (config media type) | cosign's config | the simple-signing payload, signature in `dev.cosignproject.cosign/signature` |
//! | attestation | `application/vnd.dev.cosign.artifact.att.v1+json` (config media type) | cosign's config | the DSSE envelope, `predicateType` annotation |
//!
//! The signature and attestation are exactly cosign's `.sig` and `.att` manifests (layer
//! media types and annotations as `cosign sign` / `cosign attest` write them, a config as
//! go-containerregistry's empty image gets) plus a `subject`; the config media type is
//! cosign's own OCI 1.1 artifact type (`ArtifactType("sig")` in cosign's experimental OCI
//! 1.1 mode), which `cosign verify` over the `.sig` tag does not read. So one manifest serves
//! both ways of finding it.
//!
//! Reserved tags ([`ReservedTag`]) are the distribution spec's referrers tag schema
//! (`sha256-<hex>`: an index of the referrers, for clients without the API) and cosign's
//! (`sha256-<hex>.sig`, `sha256-<hex>.att`).

mod tag;

pub use tag::ReservedTag;

use crate::digest::Digest;
use crate::manifest::Document;
use crate::sbom;
use crate::signing::cosign;
use serde_json::{Value, json};

/// The media type of every artifact manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of a referrers list.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI 1.1 empty descriptor's media type and content.
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";
/// cosign's artifact types (`ArtifactType("sig")`, `("att")`).
pub const SIGNATURE_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const ATTESTATION_TYPE: &str = "application/vnd.dev.cosign.artifact.att.v1+json";

/// Which artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactKind {
    Sbom,
    Signature,
    Attestation,
}

impl ArtifactKind {
    pub fn artifact_type(self) -> &'static str {
        match self {
            ArtifactKind::Sbom => sbom::MEDIA_TYPE,
            ArtifactKind::Signature => SIGNATURE_TYPE,
            ArtifactKind::Attestation => ATTESTATION_TYPE,
        }
    }
}

/// The manifest an artifact is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

impl Subject {
    fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.size })
    }
}

/// An artifact's manifest and the blobs it names (which must be stored for it to be pulled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub kind: ArtifactKind,
    pub manifest: Document,
    pub blobs: Vec<Document>,
}

fn descriptor(media_type: &str, blob: &Document) -> Value {
    json!({ "mediaType": media_type, "digest": blob.digest.to_string(), "size": blob.bytes.len() })
}

fn artifact(kind: ArtifactKind, manifest: Value, blobs: Vec<Document>) -> Artifact {
    Artifact { kind, manifest: Document::new(serde_json::to_vec(&manifest).expect("JSON serialises")), blobs }
}

/// The SBOM artifact of `subject`: `sbom` (SPDX JSON) as its one layer.
pub fn sbom(subject: &Subject, sbom: Document, created: &str) -> Artifact {
    let empty = Document::new(EMPTY.to_vec());
    let mut layer = descriptor(sbom::MEDIA_TYPE, &sbom);
    layer["annotations"] = json!({ "org.opencontainers.image.title": "sbom.spdx.json" });
    let mut config = descriptor(EMPTY_MEDIA_TYPE, &empty);
    config["data"] = json!("e30=");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": sbom::MEDIA_TYPE,
        "config": config,
        "layers": [layer],
        "subject": subject.descriptor(),
        "annotations": { "org.opencontainers.image.created": created },
    });
    artifact(ArtifactKind::Sbom, manifest, vec![empty, sbom])
}

/// cosign's signature of `subject`: the simple-signing `payload` and its base64 signature.
pub fn signature(subject: &Subject, payload: Vec<u8>, signature: String) -> Artifact {
    let annotations = json!({ "dev.cosignproject.cosign/signature": signature });
    cosign_artifact(ArtifactKind::Signature, subject, cosign::SIMPLE_SIGNING_MEDIA_TYPE, payload, annotations)
}

/// cosign's SPDX attestation of `subject`: the signed DSSE `envelope`.
pub fn attestation(subject: &Subject, envelope: Vec<u8>) -> Artifact {
    let annotations = json!({ "dev.cosignproject.cosign/signature": "", "predicateType": cosign::SPDX_PREDICATE_TYPE });
    cosign_artifact(ArtifactKind::Attestation, subject, cosign::DSSE_MEDIA_TYPE, envelope, annotations)
}

/// A manifest as `cosign sign`/`attest` write one (one layer, go-containerregistry's config
/// of an image with that layer), plus the subject.
fn cosign_artifact(
    kind: ArtifactKind,
    subject: &Subject,
    layer_type: &str,
    payload: Vec<u8>,
    annotations: Value,
) -> Artifact {
    let payload = Document::new(payload);
    let config = json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": [payload.digest.to_string()] },
    });
    let config = Document::new(serde_json::to_vec(&config).expect("JSON serialises"));
    let mut layer = descriptor(layer_type, &payload);
    layer["annotations"] = annotations;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(kind.artifact_type(), &config),
        "layers": [layer],
        "subject": subject.descriptor(),
    });
    artifact(kind, manifest, vec![config, payload])
}

/// The referrers index of `artifacts` (those of `artifact_type` if a filter is given), as
/// the referrers API and the referrers tag schema serve it.
pub fn referrers(artifacts: &[&Artifact], artifact_type: Option<&str>) -> Document {
    let manifests: Vec<Value> = artifacts
        .iter()
        .filter(|a| artifact_type.is_none_or(|t| a.kind.artifact_type() == t))
        .map(|a| {
            let mut entry = descriptor(MANIFEST_MEDIA_TYPE, &a.manifest);
            entry["artifactType"] = json!(a.kind.artifact_type());
            let manifest: Value = serde_json::from_slice(&a.manifest.bytes).expect("our own JSON");
            if let Some(annotations) = manifest.get("annotations") {
                entry["annotations"] = annotations.clone();
            }
            entry
        })
        .collect();
    let index = json!({ "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests });
    Document::new(serde_json::to_vec(&index).expect("JSON serialises"))
}

#[cfg(test)]
mod tests;
