//! What the registry keeps about the manifests it served, so that any replica, after any
//! restart, can answer for their artifacts (SBOMs, signatures, attestations).
//!
//! - **Subject records**, `subjects/<hex of the digest>`: for every image manifest and index
//!   the registry served, what it is (descriptor: digest, media type, size) and how it was
//!   made (the spec: architecture, packages, user; the manifest format; the source commit,
//!   none for a local path; an index's platforms and their manifests). Written before the
//!   manifest is stored by digest, so a manifest in storage that this version wrote always
//!   has one; a manifest read back by its key (from before this version, or another
//!   replica's) gets one then. The record answers "did this registry serve this digest as an
//!   image of this name?" (a reserved tag for any other digest is 404) and is the recipe to
//!   build a missing SBOM again.
//! - **SBOM pointers**, `sboms/<hex of the digest>`: the SBOM artifact manifest of the
//!   manifest (first writer wins: the SBOM of one manifest is the same on every replica). The
//!   artifact manifest is also stored by its own digest (`manifests/sha256:…`) and its blobs
//!   as blobs, like every manifest, so clients fetch them as usual.
//!
//! Signatures and attestations are not recorded: they are a function of the key, the name
//! and the subject (deterministic signatures), made again when asked; their manifests and
//! blobs are stored by digest when first made, for fetches by digest on any replica.
//!
//! In memory: bounded maps of records and artifacts (the same size bound as the manifest
//! cache), so repeated requests for an image's artifacts do no I/O.

use crate::artifact::{Artifact, ArtifactKind, Subject};
use crate::digest::Digest;
use crate::image::{Arch, ImageSpec, ImageUser, PackageName};
use crate::manifest::{Document, ManifestFormat};
use crate::pkgsource::CommitHash;
use crate::storage::{ObjectKey, Storage, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// What a served manifest is and how it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectRecord {
    pub subject: Subject,
    /// The image's spec; for an index, with the default platform's architecture.
    pub spec: ImageSpec,
    pub format: ManifestFormat,
    /// The source commit; `None` for a local path's reading.
    pub commit: Option<CommitHash>,
    /// An index's platforms and their manifests' digests; `None` for a manifest.
    pub platforms: Option<Vec<(Arch, Digest)>>,
}

impl SubjectRecord {
    /// Whether `name`'s spec is this record's: the manifest is an image of `name` (an index:
    /// the same packages; a platform's manifest: also its architecture, when the name selects
    /// one).
    pub fn is_image_of(&self, components: &[PackageName]) -> bool {
        ImageSpec::from_packages(components, self.spec.arch) == self.spec
    }
}

/// A record as stored (versioned JSON).
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    digest: Digest,
    media_type: String,
    size: u64,
    arch: String,
    packages: BTreeSet<PackageName>,
    user: String,
    format: String,
    commit: Option<String>,
    platforms: Option<Vec<(String, Digest)>>,
}

const RECORD_VERSION: u32 = 1;

/// The architecture of an OCI name (`amd64`, `arm64`).
pub(crate) fn arch(name: &str) -> Option<Arch> {
    [Arch::Amd64, Arch::Arm64].into_iter().find(|a| a.oci_name() == name)
}

impl SubjectRecord {
    fn to_json(&self) -> Vec<u8> {
        let stored = Stored {
            version: RECORD_VERSION,
            digest: self.subject.digest.clone(),
            media_type: self.subject.media_type.clone(),
            size: self.subject.size,
            arch: self.spec.arch.oci_name().to_owned(),
            packages: self.spec.packages.clone(),
            user: self.spec.user.key_name().to_owned(),
            format: self.format.media_type().to_owned(),
            commit: self.commit.as_ref().map(|c| c.to_string()),
            platforms: self
                .platforms
                .as_ref()
                .map(|p| p.iter().map(|(a, d)| (a.oci_name().to_owned(), d.clone())).collect()),
        };
        serde_json::to_vec(&stored).expect("a record serialises")
    }

    /// A stored record, if it is one this version reads.
    fn from_json(bytes: &[u8]) -> Option<Self> {
        let s: Stored = serde_json::from_slice(bytes).ok()?;
        if s.version != RECORD_VERSION {
            return None;
        }
        let user = match s.user.as_str() {
            "root" => ImageUser::Root,
            "nonroot" => ImageUser::NonRoot,
            _ => return None,
        };
        let format = [ManifestFormat::Docker, ManifestFormat::Oci].into_iter().find(|f| f.media_type() == s.format)?;
        let platforms = match s.platforms {
            Some(p) => Some(p.into_iter().map(|(a, d)| Some((arch(&a)?, d))).collect::<Option<Vec<_>>>()?),
            None => None,
        };
        let commit = match s.commit {
            Some(c) => Some(CommitHash::parse(&c)?),
            None => None,
        };
        Some(SubjectRecord {
            subject: Subject { digest: s.digest, media_type: s.media_type, size: s.size },
            spec: ImageSpec { arch: arch(&s.arch)?, packages: s.packages, user },
            format,
            commit,
            platforms,
        })
    }
}

/// Which artifact of which subject: an SBOM is the same for every name, a signature names
/// its repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArtifactKey {
    pub subject: Digest,
    pub kind: ArtifactKind,
    /// The signed reference (signatures and attestations).
    pub reference: Option<String>,
}

#[derive(Clone, Copy)]
struct Weight;

impl quick_cache::Weighter<Digest, Arc<SubjectRecord>> for Weight {
    fn weight(&self, _: &Digest, _: &Arc<SubjectRecord>) -> u64 {
        1024
    }
}

impl quick_cache::Weighter<ArtifactKey, Arc<Artifact>> for Weight {
    fn weight(&self, _: &ArtifactKey, a: &Arc<Artifact>) -> u64 {
        (a.manifest.bytes.len() + a.blobs.iter().map(|b| b.bytes.len()).sum::<usize>()) as u64 + 1024
    }
}

/// Subject records and artifacts, in memory and storage.
pub struct ArtifactStore {
    storage: Arc<Storage>,
    subjects: quick_cache::sync::Cache<Digest, Arc<SubjectRecord>, Weight>,
    artifacts: quick_cache::sync::Cache<ArtifactKey, Arc<Artifact>, Weight>,
}

impl ArtifactStore {
    pub fn new(storage: Arc<Storage>, memory_bytes: u64) -> Self {
        let estimated = (memory_bytes / 8192).clamp(16, 1 << 20) as usize;
        ArtifactStore {
            storage,
            subjects: quick_cache::sync::Cache::with_weighter(estimated, memory_bytes, Weight),
            artifacts: quick_cache::sync::Cache::with_weighter(estimated, memory_bytes, Weight),
        }
    }

    /// The record of the manifest `digest`, if the registry served it.
    pub async fn subject(&self, digest: &Digest) -> Result<Option<Arc<SubjectRecord>>, StorageError> {
        if let Some(hit) = self.subjects.get(digest) {
            return Ok(Some(hit));
        }
        let Some(bytes) = self.storage.get(&ObjectKey::subject(digest)).await? else { return Ok(None) };
        let Some(record) = SubjectRecord::from_json(&bytes).filter(|r| r.subject.digest == *digest) else {
            tracing::warn!(%digest, "a subject record this version cannot read: its artifacts are not served");
            return Ok(None);
        };
        let record = Arc::new(record);
        self.subjects.insert(digest.clone(), record.clone());
        Ok(Some(record))
    }

    /// Records `record` (storage first, unless it is there already).
    pub async fn record(&self, record: SubjectRecord) -> Result<(), StorageError> {
        let digest = record.subject.digest.clone();
        if self.subjects.get(&digest).is_some() {
            return Ok(());
        }
        let key = ObjectKey::subject(&digest);
        if self.storage.size(&key).await?.is_none() {
            self.storage.put(&key, record.to_json().into()).await?;
        }
        self.subjects.insert(digest, Arc::new(record));
        Ok(())
    }

    /// Drops what memory holds of `subject`'s artifacts (garbage collection took the
    /// subject, and with it their blobs): they are read or made again when asked for.
    pub fn forget(&self, subject: &Digest) {
        self.artifacts.retain(|key, _| key.subject != *subject);
    }

    /// An artifact made (or read) earlier in this process.
    pub fn in_memory(&self, key: &ArtifactKey) -> Option<Arc<Artifact>> {
        self.artifacts.get(key)
    }

    /// The stored SBOM artifact of `subject`, if one was made.
    pub async fn stored_sbom(&self, subject: &Digest) -> Result<Option<Arc<Artifact>>, StorageError> {
        let key = ArtifactKey { subject: subject.clone(), kind: ArtifactKind::Sbom, reference: None };
        if let Some(hit) = self.artifacts.get(&key) {
            return Ok(Some(hit));
        }
        let Some(manifest) = self.storage.get(&ObjectKey::sbom(subject)).await? else { return Ok(None) };
        let Some(layer) = layer_digest(&manifest) else { return Ok(None) };
        let Some(sbom) = self.storage.get(&ObjectKey::blob(&layer)).await? else { return Ok(None) };
        let artifact = Arc::new(Artifact {
            kind: ArtifactKind::Sbom,
            manifest: Document::new(manifest.to_vec()),
            blobs: vec![Document::new(sbom.to_vec())],
        });
        self.artifacts.insert(key, artifact.clone());
        Ok(Some(artifact))
    }

    /// Stores `artifact` (its blobs, then its manifest by digest, then for an SBOM the
    /// subject's pointer to it) and keeps it in memory; an SBOM stored first by someone else
    /// wins.
    pub async fn keep(&self, key: ArtifactKey, artifact: Artifact) -> Result<Arc<Artifact>, StorageError> {
        for blob in &artifact.blobs {
            self.put_new(&ObjectKey::blob(&blob.digest), blob).await?;
        }
        self.put_new(&ObjectKey::manifest(&artifact.manifest.digest), &artifact.manifest).await?;
        if artifact.kind == ArtifactKind::Sbom {
            let pointer = ObjectKey::sbom(&key.subject);
            if self.storage.size(&pointer).await?.is_some()
                && let Some(stored) = self.stored_sbom(&key.subject).await?
            {
                return Ok(stored);
            }
            self.storage.put(&pointer, artifact.manifest.bytes.clone()).await?;
        }
        let artifact = Arc::new(artifact);
        self.artifacts.insert(key, artifact.clone());
        Ok(artifact)
    }

    async fn put_new(&self, key: &ObjectKey, doc: &Document) -> Result<(), StorageError> {
        if self.storage.size(key).await?.is_none() {
            self.storage.put(key, doc.bytes.clone()).await?;
        }
        Ok(())
    }
}

/// The digest of an artifact manifest's (only) layer.
fn layer_digest(manifest: &[u8]) -> Option<Digest> {
    let v: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    v["layers"][0]["digest"].as_str()?.parse().ok()
}

/// The SBOM document of an SBOM artifact: its last blob (the empty config comes first when
/// it was made here; only the SBOM when it was read back).
pub fn sbom_bytes(artifact: &Artifact) -> &[u8] {
    artifact.blobs.last().map_or(&[][..], |b| &b.bytes[..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageName;
    use crate::storage::Memory;

    fn record(name: &str, commit: Option<&str>, platforms: Option<Vec<(Arch, Digest)>>) -> SubjectRecord {
        SubjectRecord {
            subject: Subject { digest: Digest::of(name.as_bytes()), media_type: "m/t".into(), size: 3 },
            spec: ImageSpec::from_name(&ImageName::parse(name).unwrap()),
            format: ManifestFormat::Oci,
            commit: commit.map(|c| CommitHash::parse(c).unwrap()),
            platforms,
        }
    }

    #[tokio::test]
    async fn records_survive_a_restart_and_tell_names_apart() {
        let storage = Arc::new(Storage::Memory(Memory::new()));
        let commit = "c".repeat(40);
        let index = record("nonroot/shell/hello", Some(&commit), Some(vec![(Arch::Arm64, Digest::of(b"arm"))]));
        let path = record("arm64/hello", None, None);
        let store = ArtifactStore::new(storage.clone(), 1 << 20);
        store.record(index.clone()).await.unwrap();
        store.record(path.clone()).await.unwrap();
        let restarted = ArtifactStore::new(storage, 1 << 20);
        assert_eq!(*restarted.subject(&index.subject.digest).await.unwrap().unwrap(), index);
        assert_eq!(*restarted.subject(&path.subject.digest).await.unwrap().unwrap(), path);
        assert!(restarted.subject(&Digest::of(b"never")).await.unwrap().is_none());
        let components = |n: &str| ImageName::parse(n).unwrap().components().to_vec();
        assert!(index.is_image_of(&components("shell/nonroot/hello")));
        assert!(!index.is_image_of(&components("shell/hello")), "not nonroot");
        assert!(!index.is_image_of(&components("hello")));
        assert!(path.is_image_of(&components("hello/arm64")));
        assert!(path.is_image_of(&components("hello")), "the arm64 platform's manifest of hello's index");
        assert!(!path.is_image_of(&components("hello/greeting")));
    }

    #[tokio::test]
    async fn an_sbom_stored_first_wins_and_reads_back() {
        let storage = Arc::new(Storage::Memory(Memory::new()));
        let subject = Subject { digest: Digest::of(b"image"), media_type: "m/t".into(), size: 5 };
        let key = ArtifactKey { subject: subject.digest.clone(), kind: ArtifactKind::Sbom, reference: None };
        let first = crate::artifact::sbom(&subject, Document::new(b"{\"a\":1}".to_vec()), "x");
        let second = crate::artifact::sbom(&subject, Document::new(b"{\"a\":2}".to_vec()), "x");
        let kept = ArtifactStore::new(storage.clone(), 1 << 20).keep(key.clone(), first.clone()).await.unwrap();
        let other = ArtifactStore::new(storage.clone(), 1 << 20);
        let again = other.keep(key.clone(), second).await.unwrap();
        assert_eq!(again.manifest, kept.manifest, "the first writer's SBOM");
        assert_eq!(sbom_bytes(&again), b"{\"a\":1}");
        for blob in &first.blobs {
            assert!(storage.get(&ObjectKey::blob(&blob.digest)).await.unwrap().is_some());
        }
        assert!(storage.get(&ObjectKey::manifest(&first.manifest.digest)).await.unwrap().is_some());
    }
}
