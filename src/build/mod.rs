//! Turning an image request into a manifest: the caches first, the pipeline when they miss.
//!
//! name + tag → [`ImageSpec`] and a pinned source revision (the resolution cache) → the
//! manifest cache (memory, then storage) → on a miss, the pipeline: [`Planner`] (Nix:
//! resolve, realise, graph; layer grouping) → layer archives (built concurrently, each once
//! per process whoever asks, or taken from its record) → image config → manifests in every
//! format, stored by digest (so clients can fetch them again) and by key ([`crate::cache`]).
//!
//! With several platforms (`NIXERY_PLATFORMS`), a tag can also be answered with an index of
//! every platform's manifest ([`index`]), each built as above.
//!
//! Concurrent requests for the same image (same revision, architecture and packages) share
//! one build, whatever manifest format each wants, and concurrent requests for the same
//! manifest share one storage look-up and one write ([`SingleFlight`]). A build goes on while
//! any request waits for it and stops (with its Nix processes) when the last one leaves.

mod index;
mod layer;

use crate::archive::LayerBlob;
use crate::cache::{
    CachePolicy, CachedManifest, DocumentKind, Freshness, ManifestCache, ManifestKey, Outcome, Recipe, SourceCache,
};
use crate::flight::SingleFlight;
use crate::image::{Arch, ImageSpec, Platforms, Tag};
use crate::layers::LayerPolicy;
use crate::manifest::{self, Document, ManifestFormat};
use crate::metrics::Metrics;
use crate::nix::{Nix, NixError, NixPolicy};
use crate::pkgsource::{PkgSource, SourceError, SourceRevision};
use crate::plan::Planner;
use crate::popularity::Popularity;
use crate::storage::{ObjectKey, Storage, StorageError};
use futures::FutureExt;
use futures::future::BoxFuture;
use layer::LayerJobs;
use std::sync::Arc;

/// How images are built, in the domain's terms (the configuration maps its settings into
/// this at start-up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildPolicy {
    pub source: PkgSource,
    /// How Nix runs: its deadline, local builds, job slots, nixpkgs' config.
    pub nix: NixPolicy,
    pub layers: LayerPolicy,
    /// What a tag's index holds (`NIXERY_PLATFORMS`).
    pub platforms: Platforms,
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
    /// A layer job this build shared with others failed.
    #[error(transparent)]
    Layer(Arc<BuildError>),
    /// One platform's image of an index failed.
    #[error("the {} image: {}", .0.platform(), .1)]
    Platform(Arch, Arc<BuildError>),
}

/// Why a manifest could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The tag selects no package set (an unknown branch, a remote that did not answer).
    #[error(transparent)]
    Source(Arc<SourceError>),
    #[error(transparent)]
    Build(Arc<BuildError>),
    /// One platform's image of an index failed (the request fails with it).
    #[error("the {} image: {error}", platform.platform())]
    Platform { platform: Arch, error: Arc<BuildError> },
}

impl From<StorageError> for ManifestError {
    fn from(e: StorageError) -> Self {
        ManifestError::Build(Arc::new(e.into()))
    }
}

/// A built image, independent of manifest format.
#[derive(Debug)]
pub struct BuiltImage {
    /// Layers in manifest order (the symlink forest last).
    pub layers: Vec<LayerBlob>,
    pub config: Document,
}

type BuildResult = Result<Arc<BuiltImage>, Arc<BuildError>>;
type ManifestResult = Result<(Arc<CachedManifest>, Outcome), Arc<BuildError>>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct ImageKey {
    source: Arc<SourceRevision>,
    spec: ImageSpec,
}

/// Serves manifests, building images when the caches miss.
#[derive(Clone)]
pub struct Builder {
    inner: Arc<Inner>,
}

struct Inner {
    planner: Planner,
    sources: SourceCache,
    manifests: ManifestCache,
    layer_jobs: LayerJobs,
    recipe: Recipe,
    platforms: Platforms,
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    images: SingleFlight<ImageKey, BuildResult>,
    manifest_flights: SingleFlight<ManifestKey, ManifestResult>,
}

impl Builder {
    pub fn new(
        policy: &BuildPolicy,
        cache: CachePolicy,
        storage: Arc<Storage>,
        popularity: Popularity,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let nix = Nix::new(policy.nix.clone(), metrics.clone())?;
        Ok(Builder {
            inner: Arc::new(Inner {
                planner: Planner::new(nix, popularity, policy.layers),
                sources: SourceCache::new(policy.source.clone(), cache.source_ttl, metrics.clone()),
                manifests: ManifestCache::new(storage.clone(), cache.manifest_memory),
                layer_jobs: LayerJobs::new(storage.clone(), metrics.clone(), cores, "/".into()),
                recipe: Recipe::new(policy.layers, &policy.nix.nixpkgs_config),
                platforms: policy.platforms.clone(),
                storage,
                metrics,
                images: SingleFlight::new(),
                manifest_flights: SingleFlight::new(),
            }),
        })
    }

    /// The manifest of `spec` at `tag` in `format`: from memory when the tag's resolution is
    /// fresh and the image known (no Nix, no git, no I/O), else from storage, else built.
    pub async fn manifest(
        &self,
        spec: ImageSpec,
        tag: &Tag,
        format: ManifestFormat,
    ) -> Result<Arc<CachedManifest>, ManifestError> {
        self.document(tag, spec, format, DocumentKind::Manifest).await
    }

    /// The document `document` of `spec` at `tag` in `format`, through the caches; the
    /// request is counted by what answering it took.
    async fn document(
        &self,
        tag: &Tag,
        image: ImageSpec,
        format: ManifestFormat,
        document: DocumentKind,
    ) -> Result<Arc<CachedManifest>, ManifestError> {
        let inner = &self.inner;
        let (source, freshness) = inner.sources.resolve(tag).await.map_err(ManifestError::Source)?;
        let key = ManifestKey { source, image, format, recipe: inner.recipe.clone(), document };
        let (doc, outcome) = inner.clone().cached(key, freshness).await.map_err(|e| match e.as_ref() {
            BuildError::Platform(platform, error) => {
                ManifestError::Platform { platform: *platform, error: error.clone() }
            }
            _ => ManifestError::Build(e),
        })?;
        inner.metrics.manifest_served(outcome);
        Ok(doc)
    }

    /// The configured platforms.
    pub fn platforms(&self) -> &Platforms {
        &self.inner.platforms
    }
}

impl Inner {
    /// The document of `key` (a manifest or an index), from memory, else from storage or
    /// built, once for all concurrent requests. (Boxed: an index's build asks this for each
    /// platform's manifest, and a recursive `async fn` has no nameable type.)
    fn cached(self: Arc<Self>, key: ManifestKey, freshness: Freshness) -> BoxFuture<'static, ManifestResult> {
        async move {
            if let Some(hit) = self.manifests.in_memory(&key) {
                return Ok((hit, freshness.memory_outcome()));
            }
            let start = {
                let (inner, key) = (self.clone(), key.clone());
                move || match key.document {
                    DocumentKind::Manifest => async move { inner.stored_or_built(key).await }.boxed(),
                    DocumentKind::Index(_) => async move { inner.stored_or_indexed(key).await }.boxed(),
                }
            };
            self.manifest_flights.run(key, start).await
        }
        .boxed()
    }

    /// A manifest not in memory: from storage, or built.
    async fn stored_or_built(self: Arc<Self>, key: ManifestKey) -> ManifestResult {
        let key_format = key.format;
        if let Some(stored) = self.manifests.stored(&key).await.map_err(|e| Arc::new(e.into()))? {
            return Ok((stored, Outcome::Stored));
        }
        let image_key = ImageKey { source: key.source.clone(), spec: key.image.clone() };
        let start = {
            let (inner, image_key) = (self.clone(), image_key.clone());
            move || async move { inner.build(image_key).await.map(Arc::new).map_err(Arc::new) }.boxed()
        };
        let image = self.images.run(image_key, start).await?;
        // Both formats at once: a client asking for the other one later gets it from the
        // caches instead of planning the image again.
        let mut wanted = None;
        for format in [ManifestFormat::Docker, ManifestFormat::Oci] {
            let doc = manifest::manifest(format, &image.config, &image.layers);
            let key = ManifestKey { format, ..key.clone() };
            debug_assert_eq!(key.document, DocumentKind::Manifest);
            let cached = self.manifests.insert(key, doc).await.map_err(|e| Arc::new(e.into()))?;
            wanted = wanted.or((format == key_format).then_some(cached));
        }
        Ok((wanted.expect("every format is rendered"), Outcome::Cold))
    }

    async fn build(&self, image: ImageKey) -> Result<BuiltImage, BuildError> {
        let ImageKey { source, spec } = image;
        self.metrics.image_builds.inc();
        let started = std::time::Instant::now();
        let plan = self.planner.plan(&source, &spec).await?;
        let jobs = plan.contents().into_iter().map(|c| self.layer_jobs.layer(c));
        let blobs = futures::future::try_join_all(jobs).await.map_err(BuildError::Layer)?;

        let exec = manifest::Exec { cmd: plan.command.as_deref(), user: spec.user.config_user() };
        let config = manifest::image_config(spec.arch, &blobs, exec);
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
