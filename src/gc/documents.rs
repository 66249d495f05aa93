//! What a stored document refers to, whatever kind of document it is.
//!
//! Garbage collection keeps what retained documents reference, and it must do so for
//! documents it was not written for: SBOMs and signatures stored as manifests
//! (`application/vnd.oci.image.manifest.v1+json` with an `artifactType` and a `subject`), the
//! older OCI artifact manifest (`blobs`), indexes of any kind. So a document is read for the
//! descriptors the OCI image spec (1.1) defines, not by its media type:
//!
//! ```json
//! { "config":    { "digest": "sha256:…" },        blob (image manifest, artifact manifest)
//!   "layers":    [ { "digest": "sha256:…" } ],    blobs
//!   "blobs":     [ { "digest": "sha256:…" } ],    blobs (application/vnd.oci.artifact.manifest.v1+json)
//!   "manifests": [ { "digest": "sha256:…" } ],    documents (image index, Docker manifest list)
//!   "subject":   { "digest": "sha256:…" } }       the document this one is about
//! ```
//!
//! The first four are edges from the document: what it needs. `subject` is an edge the
//! other way: an artifact is kept as long as what it is about is kept. A descriptor whose
//! digest is not SHA-256 names nothing this registry stores and is skipped; a document that
//! is not JSON has no edges.

use crate::digest::Digest;
use serde::Deserialize;

/// What one document refers to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Edges {
    /// Blobs it needs (config, layers, artifact blobs).
    pub blobs: Vec<Digest>,
    /// Documents it needs (an index's manifests).
    pub documents: Vec<Digest>,
    /// The document it is about (an artifact's subject).
    pub subject: Option<Digest>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

#[derive(Deserialize)]
struct Document {
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    blobs: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    subject: Option<Descriptor>,
}

fn digests<'a>(descriptors: impl IntoIterator<Item = &'a Descriptor>) -> Vec<Digest> {
    descriptors.into_iter().filter_map(|d| d.digest.parse().ok()).collect()
}

/// The edges of the document `bytes`.
pub fn edges(bytes: &[u8]) -> Edges {
    let Ok(doc) = serde_json::from_slice::<Document>(bytes) else { return Edges::default() };
    Edges {
        blobs: digests(doc.config.iter().chain(&doc.layers).chain(&doc.blobs)),
        documents: digests(&doc.manifests),
        subject: doc.subject.and_then(|s| s.digest.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    #[test]
    fn every_kind_of_document_gives_its_edges() {
        let (config, l1, l2, m1, sbom) = (d("config"), d("l1"), d("l2"), d("m1"), d("sbom"));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"digest":"{config}","size":1}},"layers":[{{"digest":"{l1}"}},{{"digest":"{l2}"}}]}}"#
        );
        assert_eq!(
            edges(manifest.as_bytes()),
            Edges { blobs: vec![config.clone(), l1.clone(), l2], ..Edges::default() }
        );
        let index = format!(
            r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"digest":"{m1}","platform":{{}}}}]}}"#
        );
        assert_eq!(edges(index.as_bytes()), Edges { documents: vec![m1.clone()], ..Edges::default() });
        // An SBOM as an image manifest with an artifactType and a subject (OCI 1.1).
        let artifact = format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":{{"digest":"{config}"}},"layers":[{{"digest":"{sbom}"}}],"subject":{{"digest":"{m1}"}}}}"#
        );
        let e = edges(artifact.as_bytes());
        assert_eq!((e.blobs, e.subject), (vec![config, sbom.clone()], Some(m1.clone())));
        // The artifact manifest of OCI 1.1's drafts: blobs instead of layers.
        let old = format!(
            r#"{{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[{{"digest":"{sbom}"}}],"subject":{{"digest":"{m1}"}}}}"#
        );
        assert_eq!(edges(old.as_bytes()), Edges { blobs: vec![sbom], documents: vec![], subject: Some(m1) });
    }

    #[test]
    fn what_names_nothing_stored_here_is_skipped() {
        let odd = r#"{"layers":[{"digest":"sha512:abcd"},{"digest":"nonsense"}],"manifests":"not a list"}"#;
        assert_eq!(edges(odd.as_bytes()), Edges::default(), "a malformed document has no edges");
        let other = r#"{"layers":[{"digest":"sha512:abcd"}]}"#;
        assert_eq!(edges(other.as_bytes()), Edges::default());
        assert_eq!(edges(b"\x00binary"), Edges::default());
    }
}
