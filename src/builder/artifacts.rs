//! The artifacts of served manifests: an SBOM for every image manifest and index, and with
//! a signing key cosign's signature and SPDX attestation of each.
//!
//! - When a manifest is built, its subject record and SBOM are stored before the manifest
//!   itself ([`Inner::record_built`]): a manifest in storage has both. An index's SBOM is
//!   put together from its platforms' ([`crate::sbom::for_index`]) when the index is made.
//!   This is the cold path only; a warm pull does nothing more than before.
//! - A manifest read back by key (a restart, another replica, an older version) gets its
//!   subject record then, if it had none ([`Inner::record_read`]).
//! - Asked for the artifacts of a digest ([`Builder::referrers`], [`Builder::artifact`]),
//!   the registry finds its record (memory, then storage; none: the digest was never served,
//!   and has no artifacts), checks that the digest is an image of the name asked about, and
//!   answers from memory or storage; an SBOM that is missing is made again from the record
//!   (the image is built as for a pull, from the recorded commit, and its manifest must come
//!   out with the same digest). Signatures and attestations are made when asked (a few
//!   hundred microseconds: deterministic ECDSA), kept in memory and stored by digest.
//!
//! The signed payloads name the image as `[NIXERY_REGISTRY_NAME/]<name>`, never by the
//! `Host` of a request, so replicas and restarts produce the same manifests.

use super::fleet::Fleet;
use super::{BuildError, Builder, ImageKey, Inner, Requested};
use crate::artifact::{self, Artifact, ArtifactKind, Subject};
use crate::cache::artifacts::{ArtifactKey, SubjectRecord, sbom_bytes};
use crate::cache::{CachedManifest, DocumentKind, ManifestKey};
use crate::digest::Digest;
use crate::image::{Arch, ImageName, Tag};
use crate::manifest::{self, Document, ManifestFormat};
use crate::pkgsource::SourceError;
use crate::sbom::{self, Author, Inventory};
use crate::signing::{SigningKey, cosign};
use crate::storage::StorageError;
use futures::FutureExt;
use std::sync::Arc;

/// What artifacts are made (the configuration maps `NIXERY_SIGNING_KEY` and
/// `NIXERY_REGISTRY_NAME` into this).
#[derive(Clone, Debug, Default)]
pub struct ArtifactPolicy {
    /// Signs every image manifest and index (cosign's format), if set.
    pub signing: Option<SigningKey>,
    /// The registry's public name (`registry.example`), which signed payloads and SBOMs
    /// name images under.
    pub registry_name: Option<String>,
}

/// Why an artifact could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The source of a missing SBOM's image could not be resolved again.
    #[error(transparent)]
    Source(Arc<SourceError>),
    /// The image of a missing SBOM could not be built again.
    #[error(transparent)]
    Build(Arc<BuildError>),
}

impl Builder {
    /// The builder with `policy` for artifacts (before it is shared).
    pub fn with_artifacts(mut self, policy: ArtifactPolicy) -> Self {
        Arc::get_mut(&mut self.inner).expect("configured before the builder is shared").artifact_policy = policy;
        self
    }

    /// The signing key's public half, PEM, if the registry signs.
    pub fn public_key(&self) -> Option<&str> {
        self.inner.artifact_policy.signing.as_ref().map(SigningKey::public_pem)
    }

    /// Every artifact of the manifest `digest` as an image of `name`, or `None` if the
    /// registry never served `digest` as one.
    pub async fn referrers(
        &self,
        name: &ImageName,
        digest: &Digest,
    ) -> Result<Option<Vec<Arc<Artifact>>>, ArtifactError> {
        let Some(record) = self.inner.subject_of(name, digest).await? else { return Ok(None) };
        let mut found = Vec::new();
        let sbom = match self.inner.clone().sbom(&record).await {
            Ok(sbom) => sbom,
            Err(e) => {
                // The other artifacts are still worth listing.
                tracing::warn!(%digest, error = %e, "the SBOM of a served manifest could not be made");
                None
            }
        };
        found.extend(sbom.clone());
        if self.inner.artifact_policy.signing.is_some() {
            found.push(self.inner.signed(&record, name, ArtifactKind::Signature, None).await?);
            if let Some(sbom) = &sbom {
                found.push(self.inner.signed(&record, name, ArtifactKind::Attestation, Some(sbom)).await?);
            }
        }
        Ok(Some(found))
    }

    /// The artifact `kind` of the manifest `digest` as an image of `name`, if there is one.
    pub async fn artifact(
        &self,
        name: &ImageName,
        digest: &Digest,
        kind: ArtifactKind,
    ) -> Result<Option<Arc<Artifact>>, ArtifactError> {
        let Some(record) = self.inner.subject_of(name, digest).await? else { return Ok(None) };
        let inner = &self.inner;
        match kind {
            ArtifactKind::Sbom => inner.clone().sbom(&record).await,
            _ if inner.artifact_policy.signing.is_none() => Ok(None),
            ArtifactKind::Signature => Ok(Some(inner.signed(&record, name, kind, None).await?)),
            ArtifactKind::Attestation => match inner.clone().sbom(&record).await? {
                Some(sbom) => Ok(Some(inner.signed(&record, name, kind, Some(&sbom)).await?)),
                None => Ok(None),
            },
        }
    }
}

impl Inner {
    fn author(&self) -> Author {
        Author { registry: self.artifact_policy.registry_name.clone() }
    }

    /// The record of `digest` if it is an image of `name` this registry served. Asking for an
    /// image's artifacts counts as serving the image: its served record keeps it and them
    /// from garbage collection ([`crate::retention`]); if a collection took it, what memory
    /// holds of its artifacts may name deleted blobs and is dropped (they are made again).
    /// A digest this registry never served has no record, and costs no look at memory's
    /// artifacts (dropping them is a scan of the cache).
    async fn subject_of(&self, name: &ImageName, digest: &Digest) -> Result<Option<Arc<SubjectRecord>>, StorageError> {
        let record = self.artifacts.subject(digest).await?;
        let Some(record) = record.filter(|r| r.is_image_of(name.components())) else { return Ok(None) };
        if self.known_manifest(digest).await?.is_none() {
            self.artifacts.forget(digest);
        }
        Ok(Some(record))
    }

    /// The record of the manifest `doc` of `key`.
    fn record_of(key: &ManifestKey, doc: &Document, platforms: Option<Vec<(Arch, Digest)>>) -> SubjectRecord {
        SubjectRecord {
            subject: Subject {
                digest: doc.digest.clone(),
                media_type: key.media_type().to_owned(),
                size: doc.bytes.len() as u64,
            },
            spec: key.image.clone(),
            format: key.format,
            commit: key.source.commit().cloned(),
            platforms,
        }
    }

    /// Before a built manifest is stored: its record and SBOM.
    pub(super) async fn record_built(
        &self,
        key: &ManifestKey,
        doc: &Document,
        inventory: &Inventory,
    ) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let record = Self::record_of(key, doc, None);
        let spdx = sbom::for_manifest(&doc.digest, inventory, &self.author());
        let kept = self.keep_sbom(&record, &spdx).await?;
        self.artifacts.record(record).await?;
        let bytes = kept.manifest.bytes.len() + sbom_bytes(&kept).len();
        let seconds = started.elapsed().as_secs_f64();
        tracing::debug!(digest = %doc.digest, paths = inventory.paths.len(), bytes, seconds, "stored the SBOM");
        Ok(())
    }

    /// Before an index is stored: its record, and its SBOM from its platforms' (a platform
    /// whose SBOM cannot be had leaves the index without one, for now: it is made again when
    /// asked for).
    pub(super) async fn record_index(
        self: &Arc<Self>,
        key: &ManifestKey,
        doc: &Document,
        platforms: &[(Arch, &CachedManifest)],
    ) -> Result<(), StorageError> {
        let platforms = platforms.iter().map(|(arch, m)| (*arch, m.digest.clone())).collect();
        let record = Self::record_of(key, doc, Some(platforms));
        self.artifacts.record(record.clone()).await?;
        if let Err(e) = self.clone().sbom(&record).await {
            tracing::warn!(digest = %doc.digest, error = %e, "the index's SBOM could not be made now");
        }
        Ok(())
    }

    /// A manifest read back by its key gets a record if it has none (one made by an older
    /// version, or lost). An index's platforms are its entries.
    pub(super) async fn record_read(&self, key: &ManifestKey, manifest: &CachedManifest) -> Result<(), StorageError> {
        let doc = Document { bytes: manifest.bytes.clone(), digest: manifest.digest.clone() };
        let platforms = match &key.document {
            DocumentKind::Manifest => None,
            DocumentKind::Index(_) => Some(index_entries(&manifest.bytes)),
        };
        self.artifacts.record(Self::record_of(key, &doc, platforms)).await
    }

    async fn keep_sbom(
        &self,
        record: &SubjectRecord,
        spdx: &sbom::spdx::Document,
    ) -> Result<Arc<Artifact>, StorageError> {
        let created = spdx.creation_info.created.clone();
        let artifact = artifact::sbom(&record.subject, Document::new(sbom::render(spdx)), &created);
        let key = ArtifactKey { subject: record.subject.digest.clone(), kind: ArtifactKind::Sbom, reference: None };
        self.artifacts.keep(key, artifact).await
    }

    /// The SBOM of `record`'s manifest: stored, else made again (boxed: an index's asks for
    /// its platforms').
    fn sbom(
        self: Arc<Self>,
        record: &SubjectRecord,
    ) -> futures::future::BoxFuture<'static, Result<Option<Arc<Artifact>>, ArtifactError>> {
        let record = record.clone();
        async move {
            if let Some(stored) = self.artifacts.stored_sbom(&record.subject.digest).await? {
                return Ok(Some(stored));
            }
            let spdx = match &record.platforms {
                None => self.rebuilt_sbom(&record).await?,
                Some(platforms) => self.index_sbom(&record, platforms).await?,
            };
            match spdx {
                Some(spdx) => Ok(Some(self.keep_sbom(&record, &spdx).await?)),
                None => Ok(None),
            }
        }
        .boxed()
    }

    /// An index's SBOM from its platforms' (`None` if one of them has none).
    async fn index_sbom(
        self: &Arc<Self>,
        record: &SubjectRecord,
        platforms: &[(Arch, Digest)],
    ) -> Result<Option<sbom::spdx::Document>, ArtifactError> {
        let mut parts = Vec::new();
        for (arch, digest) in platforms {
            let Some(platform) = self.artifacts.subject(digest).await? else { return Ok(None) };
            let Some(sbom) = self.clone().sbom(&platform).await? else { return Ok(None) };
            let Ok(doc) = serde_json::from_slice(sbom_bytes(&sbom)) else { return Ok(None) };
            parts.push((*arch, digest.clone(), doc));
        }
        let name = record.spec.canonical_name();
        Ok(Some(sbom::for_index(&record.subject.digest, &name, &parts, &self.author())))
    }

    /// A manifest's SBOM made again: the image built as for a pull from the recorded revision
    /// (cheap when its layers have records and its paths are in the store), `None` if it no
    /// longer comes out as this manifest.
    async fn rebuilt_sbom(
        self: &Arc<Self>,
        record: &SubjectRecord,
    ) -> Result<Option<sbom::spdx::Document>, ArtifactError> {
        let (source, tag) = match &record.commit {
            Some(commit) => match self.sources.source().at_commit(commit.clone()) {
                Some(source) => (Arc::new(source), Tag::parse(commit.as_str()).expect("a commit is a tag")),
                None => return Ok(None),
            },
            None => {
                let latest = Tag::latest();
                let (source, _) = self.sources.resolve(&latest).await.map_err(ArtifactError::Source)?;
                (source, latest)
            }
        };
        let image_key = ImageKey { source, spec: record.spec.clone() };
        let log_name = format!("{}@{}", record.spec.canonical_name(), record.subject.digest);
        tracing::info!(image = log_name, "building an image again for its SBOM");
        let start = {
            let (inner, image_key) = (self.clone(), image_key.clone());
            let requested = Requested { log_name: log_name.clone(), tag: tag.clone() };
            move || {
                async move {
                    let built = inner.build_recorded(image_key, requested.tag, &requested.log_name).await?;
                    Ok(Fleet::Built(built, None))
                }
                .boxed()
            }
        };
        let built = match self.images.run(image_key.clone(), start).await.map_err(ArtifactError::Build)? {
            Fleet::Built(built, _) => built,
            // A pull's flight was running and another replica built the image: build it here
            // too for its inventory (its layers have records by now).
            Fleet::Elsewhere => self.build_recorded(image_key, tag, &log_name).await.map_err(ArtifactError::Build)?,
        };
        let compression = self.recipe.compression;
        let found = ManifestFormat::for_compression(compression)
            .iter()
            .map(|format| manifest::manifest(*format, compression, &built.config, &built.layers))
            .find(|doc| doc.digest == record.subject.digest);
        Ok(found.map(|doc| sbom::for_manifest(&doc.digest, &built.inventory, &self.author())))
    }

    /// cosign's signature (or attestation, with `sbom`) of `record`'s manifest as an image of
    /// `name`.
    async fn signed(
        &self,
        record: &SubjectRecord,
        name: &ImageName,
        kind: ArtifactKind,
        sbom: Option<&Artifact>,
    ) -> Result<Arc<Artifact>, StorageError> {
        let key_pair = self.artifact_policy.signing.as_ref().expect("only asked for with a key");
        let reference = match &self.artifact_policy.registry_name {
            Some(registry) => format!("{registry}/{name}"),
            None => name.to_string(),
        };
        let key = ArtifactKey { subject: record.subject.digest.clone(), kind, reference: Some(reference.clone()) };
        if let Some(hit) = self.artifacts.in_memory(&key) {
            return Ok(hit);
        }
        let digest = &record.subject.digest;
        let artifact = match (kind, sbom) {
            (ArtifactKind::Attestation, Some(sbom)) => {
                let statement = cosign::spdx_statement(&reference, digest, sbom_bytes(sbom));
                let envelope = cosign::dsse_envelope(key_pair, cosign::IN_TOTO_PAYLOAD_TYPE, &statement);
                artifact::attestation(&record.subject, envelope)
            }
            _ => {
                let payload = cosign::simple_signing_payload(&reference, digest);
                let signature = cosign::sign_payload(key_pair, &payload);
                artifact::signature(&record.subject, payload, signature)
            }
        };
        self.artifacts.keep(key, artifact).await
    }
}

/// The platforms and manifest digests an index lists.
fn index_entries(index: &[u8]) -> Vec<(Arch, Digest)> {
    let v: serde_json::Value = serde_json::from_slice(index).unwrap_or_default();
    let entries = v["manifests"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .filter_map(|e| {
            let arch =
                [Arch::Amd64, Arch::Arm64].into_iter().find(|a| e["platform"]["architecture"] == a.oci_name())?;
            Some((arch, e["digest"].as_str()?.parse().ok()?))
        })
        .collect()
}
