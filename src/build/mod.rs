//! Turning an image request into a stored manifest: the pipeline.
//!
//! name + tag → [`ImageSpec`] → Nix (resolve, realise, graph) → layer groups → layer
//! archives (built concurrently, or taken from the build cache) → image config → manifest,
//! stored by digest so clients can fetch it again by digest.
//!
//! Concurrent requests for the same image (same source revision, architecture and packages)
//! share one build ([`SingleFlight`]). Manifests of pinned sources (a full commit) are cached
//! in storage by what they were built from and served without running Nix at all.

mod flight;
mod layer;

use crate::archive::{Archiver, LayerBlob, LayerContents};
use crate::compression::Compression;
use crate::digest::Digest;
use crate::image::{ImageSpec, Tag};
use crate::layers::LayerPolicy;
use crate::manifest::{self, Document, ManifestFormat};
use crate::metrics::Metrics;
use crate::nix::{Nix, NixError};
use crate::pkgsource::{PkgSource, SourceRevision};
use crate::popularity::Popularity;
use crate::storage::{ObjectKey, Storage, StorageError};
use flight::SingleFlight;
use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How images are built, in the domain's terms (the configuration maps its settings into
/// this at start-up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildPolicy {
    pub source: PkgSource,
    /// How long one image's Nix work (evaluate, build, query) may take.
    pub nix_timeout: Duration,
    pub layers: LayerPolicy,
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("writing a layer archive failed: {0}")]
    Archive(#[source] std::io::Error),
    #[error("a build task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// A built image, independent of manifest format.
#[derive(Debug)]
pub struct BuiltImage {
    /// Layers in manifest order (the symlink forest last).
    pub layers: Vec<LayerBlob>,
    pub config: Document,
}

type BuildResult = Result<Arc<BuiltImage>, Arc<BuildError>>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    source: SourceRevision,
    spec: ImageSpec,
}

/// Builds and stores images.
#[derive(Clone)]
pub struct Builder {
    inner: Arc<Inner>,
}

struct Inner {
    source: PkgSource,
    nix: Nix,
    popularity: Popularity,
    layers: LayerPolicy,
    archiver: Archiver,
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    layer_slots: Semaphore,
    flights: SingleFlight<FlightKey, BuildResult>,
}

impl Builder {
    pub fn new(
        policy: &BuildPolicy,
        archiver: Archiver,
        storage: Arc<Storage>,
        popularity: Popularity,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(Builder {
            inner: Arc::new(Inner {
                source: policy.source.clone(),
                nix: Nix::new(policy.nix_timeout, metrics.clone())?,
                popularity,
                layers: policy.layers,
                archiver,
                storage,
                metrics,
                layer_slots: Semaphore::new(cores),
                flights: SingleFlight::new(),
            }),
        })
    }

    /// The compression of this builder's layers, which decides the manifest formats it can
    /// answer in ([`ManifestFormat::negotiate`]).
    pub fn compression(&self) -> Compression {
        self.inner.archiver.compression()
    }

    /// The manifest of `spec` at `tag` in `format`, built if needed, stored by digest.
    pub async fn manifest(
        &self,
        spec: &ImageSpec,
        tag: &Tag,
        format: ManifestFormat,
    ) -> Result<Document, Arc<BuildError>> {
        let inner = &self.inner;
        let source = inner.source.revision(tag);
        let compression = inner.archiver.compression();
        let cache_key = source.pinned_identity().map(|pin| manifest_cache_key(pin, spec, format, compression));
        if let Some(key) = &cache_key {
            let cached = inner.storage.get(&ObjectKey::manifest_cache(key)).await.map_err(|e| Arc::new(e.into()))?;
            if let Some(bytes) = cached {
                inner.metrics.manifest_cache_hits.inc();
                let digest = Digest::of(&bytes);
                return Ok(Document { bytes, digest });
            }
        }

        let key = FlightKey { source: source.clone(), spec: spec.clone() };
        let image = inner
            .flights
            .run(key, || {
                let inner = self.inner.clone();
                let spec = spec.clone();
                async move { inner.build(&source, &spec).await.map(Arc::new).map_err(Arc::new) }.boxed()
            })
            .await?;

        let doc = manifest::manifest(format, compression, &image.config, &image.layers);
        let store = async {
            let by_digest = ObjectKey::manifest(&doc.digest);
            if inner.storage.size(&by_digest).await?.is_none() {
                inner.storage.put(&by_digest, doc.bytes.clone()).await?;
            }
            if let Some(key) = &cache_key {
                inner.storage.put(&ObjectKey::manifest_cache(key), doc.bytes.clone()).await?;
            }
            Ok::<_, StorageError>(())
        };
        store.await.map_err(|e| Arc::new(e.into()))?;
        Ok(doc)
    }
}

impl Inner {
    async fn build(&self, source: &SourceRevision, spec: &ImageSpec) -> Result<BuiltImage, BuildError> {
        self.metrics.image_builds.inc();
        let started = std::time::Instant::now();
        let realised = self.nix.realise(source, spec.arch, &spec.packages).await?;

        let very_popular = realised.always_included_outputs();
        let groups = self.layers.group(&realised.graph, &self.popularity, &very_popular);

        let mut contents: Vec<LayerContents> =
            groups.into_iter().map(|l| LayerContents::StorePaths(l.contents)).collect();
        contents.push(LayerContents::Forest(realised.graph.roots.clone()));
        let root = std::path::Path::new("/");
        let builds = contents
            .into_iter()
            .map(|c| layer::build_layer(&self.storage, &self.metrics, &self.layer_slots, &self.archiver, root, c));
        let blobs = futures::future::try_join_all(builds).await?;

        let has_bash = realised.packages.iter().any(|p| p.attr == "bashInteractive");
        let config = manifest::image_config(spec.arch, &blobs, has_bash);
        let config_key = ObjectKey::blob(&config.digest);
        if self.storage.size(&config_key).await?.is_none() {
            self.storage.put(&config_key, config.bytes.clone()).await?;
        }
        tracing::info!(
            packages = ?spec.packages,
            arch = spec.arch.oci_name(),
            layers = blobs.len(),
            seconds = started.elapsed().as_secs_f64(),
            "built image"
        );
        Ok(BuiltImage { layers: blobs, config })
    }
}

/// What a cached manifest depends on: the pinned source revision, architecture, packages,
/// format, layer compression. Version 3: the compression and the layer format are part of
/// the key, so a server switched to the other compression never serves a manifest of the
/// other kind of layers (version 2 had neither; version 1 held the source as rendered for
/// Nix, not [`SourceRevision::pinned_identity`]).
fn manifest_cache_key(
    pinned_source: serde_json::Value,
    spec: &ImageSpec,
    format: ManifestFormat,
    compression: Compression,
) -> Digest {
    let text = serde_json::json!({
        "version": 3,
        "source": pinned_source,
        "arch": spec.arch.oci_name(),
        "packages": spec.packages,
        "format": format.media_type(),
        "compression": compression.id(),
        "layer_format": layer::FORMAT_VERSION,
    });
    Digest::of(text.to_string().as_bytes())
}
