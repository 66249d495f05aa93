//! The manifest cache: manifests by [`ManifestKey`] and by digest, in memory and in storage.
//!
//! Memory is two bounded maps ([`quick_cache`]: sharded, S3-FIFO eviction, weighted by the
//! manifest's size) of [`CachedManifest`]s, one by key (what a request by tag looks up) and
//! one by digest (what containerd asks for right after its HEAD of the tag, and what every
//! client pinned to a digest asks for): the bytes and every header of the answer rendered
//! once, shared by every response and by both maps (cloning one is a reference count), so a
//! warm request by digest, like one by tag, does no I/O. Each map is bounded by the
//! configured size; a manifest in both takes its memory once. Storage holds the manifests of
//! commits under [`ManifestKey::storage_key`], so a restarted server or another replica finds
//! them without building; every manifest is also stored by digest, which is how clients
//! fetch it again and how a manifest by digest reaches this process's memory the first time.
//!
//! Every manifest stored also gets its recipe ([`super::recipes`]), written before the
//! manifest, so whatever garbage collection removes can be made again. Each cached manifest
//! carries when this process last recorded it as served ([`crate::retention`]), which
//! decides when it must be looked up in storage again before it is served from memory; one
//! that was collected meanwhile is [`forget`](ManifestCache::forget)-ten.

use super::ManifestKey;
use super::recipes::{self, RecipeRecord};
use crate::digest::Digest;
use crate::manifest::{self, Document, ManifestFormat};
use crate::storage::{ObjectKey, Storage, StorageError};
use axum::http::HeaderValue;
use bytes::Bytes;
use std::sync::Arc;

/// A manifest ready to be served: body and headers, rendered once.
#[derive(Debug)]
pub struct CachedManifest {
    pub bytes: Bytes,
    pub digest: Digest,
    pub content_type: HeaderValue,
    pub content_length: HeaderValue,
    pub digest_header: HeaderValue,
    pub etag: HeaderValue,
    /// When this process last recorded it as served.
    pub served: crate::retention::Stamp,
}

impl CachedManifest {
    pub fn new(doc: Document, media_type: &'static str) -> Self {
        Self::with_content_type(doc, HeaderValue::from_static(media_type))
    }

    /// A stored manifest read by its digest: its media type is what its `mediaType` says
    /// (every manifest and index this registry renders has one), Docker's when it has none.
    fn read_back(doc: Document) -> Self {
        let media_type = manifest::media_type_of(&doc.bytes).and_then(|m| HeaderValue::from_str(&m).ok());
        let media_type = media_type.unwrap_or(HeaderValue::from_static(ManifestFormat::Docker.media_type()));
        Self::with_content_type(doc, media_type)
    }

    fn with_content_type(doc: Document, content_type: HeaderValue) -> Self {
        CachedManifest {
            content_type,
            content_length: HeaderValue::from(doc.bytes.len()),
            digest_header: doc.digest.header_value(),
            etag: doc.digest.etag(),
            bytes: doc.bytes,
            digest: doc.digest,
            served: Default::default(),
        }
    }
}

/// A map entry's weight: the body and roughly what the headers and key take.
#[derive(Clone, Copy)]
struct Size;

impl<K> quick_cache::Weighter<K, Arc<CachedManifest>> for Size {
    fn weight(&self, _: &K, value: &Arc<CachedManifest>) -> u64 {
        value.bytes.len() as u64 + 1024
    }
}

type Map<K> = quick_cache::sync::Cache<K, Arc<CachedManifest>, Size>;

/// Manifests by what they were built from, and by digest.
pub struct ManifestCache {
    memory: Map<ManifestKey>,
    by_digest: Map<Digest>,
    storage: Arc<Storage>,
}

impl ManifestCache {
    /// A cache keeping up to `memory_bytes` of manifests in memory.
    pub fn new(storage: Arc<Storage>, memory_bytes: u64) -> Self {
        // quick_cache sizes its tables from an estimate of the entry count (~8 KiB each).
        let estimated = (memory_bytes / 8192).clamp(16, 1 << 20) as usize;
        ManifestCache {
            memory: Map::with_weighter(estimated, memory_bytes, Size),
            by_digest: Map::with_weighter(estimated, memory_bytes, Size),
            storage,
        }
    }

    /// The manifest (or index) with `digest`, as it was first served: from memory, else read
    /// from storage (built before a restart or by another replica) and kept in memory.
    pub async fn by_digest(&self, digest: &Digest) -> Result<Option<Arc<CachedManifest>>, StorageError> {
        if let Some(hit) = self.by_digest.get(digest) {
            return Ok(Some(hit));
        }
        let Some(bytes) = self.storage.get(&ObjectKey::manifest(digest)).await? else {
            return Ok(None);
        };
        let cached = Arc::new(CachedManifest::read_back(Document { bytes, digest: digest.clone() }));
        self.by_digest.insert(digest.clone(), cached.clone());
        Ok(Some(cached))
    }

    /// Keeps `cached` in memory under `key` and its digest.
    fn remember(&self, key: ManifestKey, cached: &Arc<CachedManifest>) {
        self.by_digest.insert(cached.digest.clone(), cached.clone());
        self.memory.insert(key, cached.clone());
    }

    /// Drops a manifest from memory (it was collected): under `key`, if given, and by
    /// `digest`.
    pub fn forget(&self, key: Option<&ManifestKey>, digest: &Digest) {
        if let Some(key) = key {
            self.memory.remove(key);
        }
        self.by_digest.remove(digest);
    }

    /// The manifest of `key` if it is in memory: no I/O.
    pub fn in_memory(&self, key: &ManifestKey) -> Option<Arc<CachedManifest>> {
        self.memory.get(key)
    }

    /// The manifest of `key` from storage (a commit's, built before a restart or by a
    /// replica), kept in memory from then on.
    pub async fn stored(&self, key: &ManifestKey) -> Result<Option<Arc<CachedManifest>>, StorageError> {
        let Some(object) = key.storage_key() else {
            return Ok(None);
        };
        let Some(bytes) = self.storage.get(&object).await? else {
            return Ok(None);
        };
        let digest = Digest::of(&bytes);
        let cached = Arc::new(CachedManifest::new(Document { bytes, digest }, key.media_type()));
        self.remember(key.clone(), &cached);
        Ok(Some(cached))
    }

    /// Keeps a newly built manifest: by digest in storage (for clients), by key in storage
    /// (for a commit) and in memory.
    pub async fn insert(&self, key: ManifestKey, doc: Document) -> Result<Arc<CachedManifest>, StorageError> {
        recipes::keep(&self.storage, &doc.digest, &RecipeRecord::Document { key: key.identity() }).await?;
        let by_digest = ObjectKey::manifest(&doc.digest);
        if self.storage.size(&by_digest).await?.is_none() {
            self.storage.put(&by_digest, doc.bytes.clone()).await?;
        }
        if let Some(object) = key.storage_key() {
            self.storage.put(&object, doc.bytes.clone()).await?;
        }
        let cached = Arc::new(CachedManifest::new(doc, key.media_type()));
        self.remember(key, &cached);
        Ok(cached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Recipe;
    use crate::image::{ImageName, ImageSpec};
    use crate::layers::LayerPolicy;
    use crate::manifest::ManifestFormat;
    use crate::pkgsource::{CommitHash, RemoteUrl, SourceRevision};
    use crate::storage::Memory;

    fn key(source: SourceRevision, name: &str) -> ManifestKey {
        ManifestKey {
            source: Arc::new(source),
            image: ImageSpec::from_name(&ImageName::parse(name).unwrap()),
            format: ManifestFormat::Docker,
            recipe: Recipe::new(
                LayerPolicy { grouping: Default::default(), budget: 94 },
                Default::default(),
                &Default::default(),
            ),
            document: crate::cache::DocumentKind::Manifest,
        }
    }

    fn commit() -> SourceRevision {
        SourceRevision::Git { url: RemoteUrl::new("https://x"), commit: CommitHash::parse(&"c".repeat(40)).unwrap() }
    }

    fn doc(text: &str) -> Document {
        Document { bytes: Bytes::from(text.to_owned()), digest: Digest::of(text.as_bytes()) }
    }

    #[tokio::test]
    async fn commits_survive_in_storage_paths_only_in_memory() {
        let memory = Memory::new();
        let storage = Arc::new(Storage::Memory(memory.clone()));
        let cache = ManifestCache::new(storage.clone(), 1 << 20);
        let pinned = key(commit(), "hello");
        let served = cache.insert(pinned.clone(), doc("{\"m\":1}")).await.unwrap();
        assert_eq!(served.content_type, "application/vnd.docker.distribution.manifest.v2+json");
        assert_eq!(served.content_length, "7");
        assert_eq!(served.digest_header, served.digest.to_string().as_str());
        assert!(Arc::ptr_eq(&cache.in_memory(&pinned).unwrap(), &served));
        assert!(memory.keys("").contains(&ObjectKey::manifest(&served.digest).as_str().to_owned()));

        let path = key(SourceRevision::Path { path: "/p".into(), generation: 1 }, "hello");
        cache.insert(path.clone(), doc("{\"m\":2}")).await.unwrap();
        assert_eq!(memory.keys("manifests/").len(), 3, "two by digest, one by key: {:?}", memory.keys(""));
        assert_eq!(memory.keys("recipes/").len(), 2, "a recipe for each digest: {:?}", memory.keys(""));

        // A new process on the same storage: the commit's manifest is there, the path's not.
        let restarted = ManifestCache::new(storage, 1 << 20);
        assert!(restarted.in_memory(&pinned).is_none());
        let stored = restarted.stored(&pinned).await.unwrap().expect("stored by key");
        assert_eq!((stored.bytes.clone(), stored.digest.clone()), (served.bytes.clone(), served.digest.clone()));
        assert!(restarted.in_memory(&pinned).is_some(), "read once, then kept in memory");
        assert!(restarted.stored(&path).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn manifests_by_digest_come_from_memory_once_known() {
        let memory = Memory::new();
        let storage = Arc::new(Storage::Memory(memory.clone()));
        let cache = ManifestCache::new(storage.clone(), 1 << 20);
        let built = cache
            .insert(key(commit(), "hello"), doc("{\"mediaType\":\"application/vnd.oci.image.index.v1+json\"}"))
            .await
            .unwrap();
        let by_digest = cache.by_digest(&built.digest).await.unwrap().expect("known");
        assert!(Arc::ptr_eq(&by_digest, &built), "the built manifest itself, no read");
        memory.remove(ObjectKey::manifest(&built.digest).as_str());
        assert!(cache.by_digest(&built.digest).await.unwrap().is_some(), "served from memory, not storage");

        // Another process: read from storage once (media type from the document), then memory.
        let text = "{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}";
        let stored = doc(text);
        storage.put(&ObjectKey::manifest(&stored.digest), stored.bytes.clone()).await.unwrap();
        let other = ManifestCache::new(storage, 1 << 20);
        let read = other.by_digest(&stored.digest).await.unwrap().expect("in storage");
        assert_eq!(read.content_type, "application/vnd.oci.image.index.v1+json");
        assert_eq!((read.bytes.clone(), read.etag.clone()), (stored.bytes.clone(), stored.digest.etag()));
        memory.remove(ObjectKey::manifest(&stored.digest).as_str());
        assert!(Arc::ptr_eq(&other.by_digest(&stored.digest).await.unwrap().unwrap(), &read));
        assert!(other.by_digest(&Digest::of(b"unknown")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn memory_is_bounded() {
        let storage = Arc::new(Storage::Memory(Memory::new()));
        let cache = ManifestCache::new(storage, 64 << 10);
        let big = "x".repeat(8 << 10);
        let names: Vec<String> = (0..64).map(|i| format!("p{i}")).collect();
        for name in &names {
            cache.insert(key(commit(), name), doc(&format!("{name}{big}"))).await.unwrap();
        }
        let kept = names.iter().filter(|n| cache.in_memory(&key(commit(), n)).is_some()).count();
        assert!(kept > 0 && kept <= 8, "{kept} manifests of 9 KiB kept in 64 KiB");
    }
}
