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
//!
//! A failed build is logged inside its flight, so once however many requests wait for it: a
//! failure of the image at WARN with the name and tag that started it and the cause, a fault
//! of the server at ERROR with the detail its answer leaves out ([`crate::registry`] maps
//! both to answers and logs nothing itself).
//!
//! Every build that finishes or fails is recorded once, however many requests waited for it,
//! in [`crate::activity`] (with its layer plan and the tag of the request that started it),
//! which the web pages show; [`Builder::plan`] gives those pages the plan of an image.
//!
//! For clients that may not cause a build (anonymous ones under `NIXERY_ANONYMOUS=pull`, or
//! over their `NIXERY_BUILD_RATE`), [`Builder::existing`] and [`Builder::recorded_plan`]
//! answer from the caches alone, never from Nix ([`crate::auth::access`]).
//!
//! Over time and across replicas ([`fleet`], [`remake`]): a pinned image is built once for
//! every replica sharing storage (a build lease, [`crate::lease`]); a manifest kept in memory
//! is looked up in storage again before it is served once its last served record is old
//! ([`crate::retention`]); a collected manifest or blob asked for by digest is made again
//! from its recipe ([`crate::cache::recipes`]). While an image's layers are archived, GC
//! roots keep its store paths in the Nix store; a build checks that every blob it names is
//! stored before it stores its manifest.

mod artifacts;
mod fleet;
mod index;
mod layer;
mod remake;

pub use remake::{ByDigest, RemakeError};

pub use artifacts::{ArtifactError, ArtifactPolicy};

use crate::activity::{Activity, BuildRecord, FailureRecord, ImageId, PlannedImage};
use crate::archive::{Archiver, LayerBlob};
use crate::cache::artifacts::ArtifactStore;
use crate::cache::{
    CachePolicy, CachedManifest, DocumentKind, Freshness, ManifestCache, ManifestKey, Outcome, Recipe, SourceCache,
};
use crate::compression::Compression;
use crate::flight::SingleFlight;
use crate::image::{Arch, ImageName, ImageSpec, Platforms, Tag};
use crate::layers::LayerPolicy;
use crate::manifest::{self, Document, ManifestFormat};
use crate::metrics::Metrics;
use crate::nix::{Nix, NixError, NixPolicy};
use crate::pkgsource::{PkgSource, SourceError, SourceRevision};
use crate::plan::{ImagePlan, Planner};
use crate::popularity::Popularity;
use crate::retention::{Lifecycle, Retention};
use crate::storage::{ObjectKey, Storage, StorageError};
use fleet::Fleet;
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
    /// The build failed; for an index, one platform's ([`BuildError::Platform`]).
    #[error(transparent)]
    Build(Arc<BuildError>),
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
    /// What its SBOM is made of.
    pub inventory: Arc<crate::sbom::Inventory>,
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
    images: SingleFlight<ImageKey, fleet::FleetResult>,
    manifest_flights: SingleFlight<ManifestKey, ManifestResult>,
    /// When manifests were last served ([`crate::retention`]).
    retention: Retention,
    /// One build per image for the whole fleet ([`crate::lease`]).
    leases: crate::lease::Leases,
    /// Recent builds and failures, and plans for the web pages ([`crate::activity`]).
    activity: Activity,
    /// Subject records, SBOMs and signatures ([`artifacts`]).
    artifacts: ArtifactStore,
    artifact_policy: ArtifactPolicy,
}

impl Builder {
    pub fn new(
        policy: &BuildPolicy,
        cache: CachePolicy,
        lifecycle: Lifecycle,
        archiver: Archiver,
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
                artifacts: ArtifactStore::new(storage.clone(), cache.manifest_memory),
                artifact_policy: ArtifactPolicy::default(),
                recipe: Recipe::new(policy.layers, archiver.compression(), &policy.nix.nixpkgs_config)
                    .with_package_policy(&policy.nix.packages),
                layer_jobs: LayerJobs::new(storage.clone(), metrics.clone(), cores, archiver, "/".into()),
                platforms: policy.platforms.clone(),
                retention: Retention::new(lifecycle.retention, storage.clone()),
                leases: crate::lease::Leases::new(storage.clone(), lifecycle.build_lease),
                storage,
                metrics,
                images: SingleFlight::new(),
                manifest_flights: SingleFlight::new(),
                activity: Activity::default(),
            }),
        })
    }

    /// The compression of this builder's layers, which decides the manifest formats it can
    /// answer in ([`ManifestFormat::negotiate_for`]).
    pub fn compression(&self) -> Compression {
        self.inner.recipe.compression
    }

    /// The manifest of `spec` at `tag` in `format`: from memory when the tag's resolution is
    /// fresh and the image known (no Nix, no git, no I/O), else from storage, else built.
    /// `name` is what the client asked for (for the log).
    pub async fn manifest(
        &self,
        name: &ImageName,
        spec: ImageSpec,
        tag: &Tag,
        format: ManifestFormat,
    ) -> Result<Arc<CachedManifest>, ManifestError> {
        self.document(name, tag, spec, format, DocumentKind::Manifest).await
    }

    /// The document `document` of `spec` at `tag` in `format`, through the caches; the
    /// request is counted by what answering it took.
    async fn document(
        &self,
        name: &ImageName,
        tag: &Tag,
        image: ImageSpec,
        format: ManifestFormat,
        document: DocumentKind,
    ) -> Result<Arc<CachedManifest>, ManifestError> {
        let inner = &self.inner;
        let (source, freshness) = inner.sources.resolve(tag).await.map_err(ManifestError::Source)?;
        let key = ManifestKey { source, image, format, recipe: inner.recipe.clone(), document };
        let requested = Requested { log_name: format!("{name}:{}", tag.as_str()), tag: tag.clone() };
        let (doc, outcome) = inner.clone().cached(key, freshness, requested).await.map_err(ManifestError::Build)?;
        inner.metrics.manifest_served(outcome);
        Ok(doc)
    }

    /// The manifest (or, with `index`, the index of every platform) of `spec` at `tag` in
    /// `format` if it exists for the tag's current revision, in memory or storage; `None`
    /// if answering would mean building. Nothing is built and no Nix runs (a moving tag may
    /// be resolved, as for any request). An answer is counted as [`Builder::manifest`]'s
    /// would be. An image the package policy refused recently is refused again, from the
    /// record of failures.
    pub async fn existing(
        &self,
        spec: ImageSpec,
        tag: &Tag,
        format: ManifestFormat,
        index: bool,
    ) -> Result<Option<Arc<CachedManifest>>, ManifestError> {
        let inner = &self.inner;
        let (source, freshness) = inner.sources.resolve(tag).await.map_err(ManifestError::Source)?;
        let (image, document) = match index {
            true => {
                let platforms = inner.platforms.clone();
                (ImageSpec { arch: platforms.default_arch(), ..spec }, DocumentKind::Index(platforms))
            }
            false => (spec, DocumentKind::Manifest),
        };
        // A recent refusal by the package policy stands for this revision: answered again
        // without Nix (docker asks twice, HEAD then GET, and each would count as a build).
        // (For an index, the default platform's refusal.)
        let id = ImageId { source: source.clone(), spec: image.clone() };
        if let Some(failure) = inner.activity.failure_of(&id)
            && matches!(failure.error.as_ref(), BuildError::Nix(NixError::Refused(_)))
        {
            return Err(ManifestError::Build(failure.error.clone()));
        }
        let key = ManifestKey { source, image, format, recipe: inner.recipe.clone(), document };
        // A manifest in memory whose served record is old is looked up in storage again, as
        // for a pull that may build ([`crate::retention`]).
        let in_memory = match inner.manifests.in_memory(&key) {
            Some(hit) if inner.retention.serving(&hit).await => Some(hit),
            Some(hit) => {
                inner.manifests.forget(Some(&key), &hit.digest);
                None
            }
            None => None,
        };
        let found = match in_memory {
            Some(hit) => Some((hit, freshness.memory_outcome())),
            None => match inner.manifests.stored(&key).await? {
                Some(stored) => {
                    inner.retention.serving(&stored).await;
                    Some((stored, Outcome::Stored))
                }
                None => None,
            },
        };
        Ok(found.map(|(doc, outcome)| {
            inner.metrics.manifest_served(outcome);
            doc
        }))
    }

    /// The recorded plan of `spec` at `tag` (of a recent build or page view), if there is
    /// one: what a `/ui/` page can show without running Nix.
    pub async fn recorded_plan(&self, spec: ImageSpec, tag: &Tag) -> Result<Option<Arc<PlannedImage>>, ManifestError> {
        let (source, _) = self.inner.sources.resolve(tag).await.map_err(ManifestError::Source)?;
        Ok(self.inner.activity.recorded_plan(&ImageId { source, spec }))
    }

    /// The configured platforms.
    pub fn platforms(&self) -> &Platforms {
        &self.inner.platforms
    }

    /// The layer plan of `spec` at `tag`, for the web pages: the recorded plan of a recent
    /// build or page view, else planned now (Nix, under the job slots; nothing archived).
    pub async fn plan(&self, spec: ImageSpec, tag: &Tag) -> Result<Arc<PlannedImage>, ManifestError> {
        let (source, _) = self.inner.sources.resolve(tag).await.map_err(ManifestError::Source)?;
        let inner = self.inner.clone();
        let plan = move |id: ImageId| async move { Ok(inner.planner.plan(&id.source, &id.spec).await?) }.boxed();
        self.inner.activity.plan(ImageId { source, spec }, plan).await.map_err(ManifestError::Build)
    }

    /// What the server did recently.
    pub fn activity(&self) -> &Activity {
        &self.inner.activity
    }

    /// The configured source and its resolutions.
    pub fn sources(&self) -> &SourceCache {
        &self.inner.sources
    }
}

/// Logs a failed build, once per build however many requests wait for it (it runs inside
/// the image's single flight): a failure of the image at WARN with its cause, a fault of the
/// server at ERROR with the detail its error answer leaves out.
fn log_failure(image: &str, e: &BuildError) {
    let image_failure = match e {
        BuildError::Nix(nix) => nix.is_image_failure(),
        BuildError::Layer(layer) | BuildError::Platform(_, layer) => {
            matches!(layer.as_ref(), BuildError::Nix(nix) if nix.is_image_failure())
        }
        BuildError::Storage(_) | BuildError::Archive(_) | BuildError::Task(_) => false,
    };
    if image_failure {
        tracing::warn!(image, cause = %e, "image failed");
    } else {
        tracing::error!(image, error = %e, "image build failed");
    }
}

/// A storage fault around a build (reading or writing the manifest), logged once per manifest
/// flight.
fn logged_fault(image: &str, e: StorageError) -> Arc<BuildError> {
    let e = BuildError::from(e);
    log_failure(image, &e);
    Arc::new(e)
}

/// Who asked for a document: the name and tag as requested (for the log) and the tag (for
/// the record of builds).
#[derive(Clone, Debug)]
pub(super) struct Requested {
    log_name: String,
    tag: Tag,
}

impl Inner {
    /// The document of `key` (a manifest or an index), from memory, else from storage or
    /// built, once for all concurrent requests. (Boxed: an index's build asks this for each
    /// platform's manifest, and a recursive `async fn` has no nameable type.)
    fn cached(
        self: Arc<Self>,
        key: ManifestKey,
        freshness: Freshness,
        requested: Requested,
    ) -> BoxFuture<'static, ManifestResult> {
        async move {
            if let Some(hit) = self.manifests.in_memory(&key) {
                if self.retention.serving(&hit).await {
                    return Ok((hit, freshness.memory_outcome()));
                }
                self.manifests.forget(Some(&key), &hit.digest);
            }
            let start = {
                let (inner, key) = (self.clone(), key.clone());
                move || match key.document {
                    DocumentKind::Manifest => async move { inner.stored_or_built(key, requested).await }.boxed(),
                    DocumentKind::Index(_) => async move { inner.stored_or_indexed(key, requested).await }.boxed(),
                }
            };
            let (doc, outcome) = self.manifest_flights.run(key, start).await?;
            self.retention.serving(&doc).await;
            Ok((doc, outcome))
        }
        .boxed()
    }

    /// A manifest not in memory: from storage, or built.
    async fn stored_or_built(self: Arc<Self>, key: ManifestKey, requested: Requested) -> ManifestResult {
        let Requested { log_name: image, tag } = requested;
        let key_format = key.format;
        if let Some(stored) = self.manifests.stored(&key).await.map_err(|e| logged_fault(&image, e))? {
            self.record_read(&key, &stored).await.map_err(|e| logged_fault(&image, e))?;
            return Ok((stored, Outcome::Stored));
        }
        let image_key = ImageKey { source: key.source.clone(), spec: key.image.clone() };
        let (built, lease) = match self.clone().build_once(&key, image_key.clone(), tag.clone(), &image).await? {
            Fleet::Built(built, lease) => (built, lease),
            Fleet::Elsewhere => match self.manifests.stored(&key).await.map_err(|e| logged_fault(&image, e))? {
                Some(stored) => return Ok((stored, Outcome::Stored)),
                // Another replica with other settings: build it here.
                None => (self.build_recorded(image_key, tag, &image).await?, None),
            },
        };
        // Every format the layers can be described in, at once: a client asking for the other
        // one later gets it from the caches instead of planning the image again.
        let mut wanted = None;
        let compression = self.recipe.compression;
        for format in ManifestFormat::for_compression(compression) {
            let doc = manifest::manifest(*format, compression, &built.config, &built.layers);
            let key = ManifestKey { format: *format, ..key.clone() };
            // Its record and SBOM first: a manifest in storage always has them.
            self.record_built(&key, &doc, &built.inventory).await.map_err(|e| logged_fault(&image, e))?;
            let cached = self.manifests.insert(key, doc).await.map_err(|e| logged_fault(&image, e))?;
            wanted = wanted.or((*format == key_format).then_some(cached));
        }
        let wanted = wanted.expect("every format is rendered");
        self.keep_config_recipe(&built, &wanted.digest).await.map_err(|e| logged_fault(&image, e))?;
        // The lease goes once this image's manifests are stored (by the last flight holding it).
        drop(lease);
        Ok((wanted, Outcome::Cold))
    }

    /// [`Inner::build`], recorded in [`Activity`] (once per build, however many wait).
    async fn build_recorded(&self, image: ImageKey, tag: Tag, log_name: &str) -> BuildResult {
        let (started, finished) = (std::time::Instant::now(), std::time::SystemTime::now);
        let id = ImageId { source: image.source.clone(), spec: image.spec.clone() };
        match self.build(image).await {
            Ok((built, plan)) => {
                let image = Arc::new(PlannedImage::new(id, plan));
                let blobs = built.layers.clone();
                let took = started.elapsed();
                self.activity.built(BuildRecord { image, tag, finished: finished(), took, blobs });
                Ok(Arc::new(built))
            }
            Err(e) => {
                log_failure(log_name, &e);
                let error = Arc::new(e);
                let took = started.elapsed();
                self.activity.failed(FailureRecord { id, tag, failed: finished(), took, error: error.clone() });
                Err(error)
            }
        }
    }

    async fn build(&self, image: ImageKey) -> Result<(BuiltImage, ImagePlan), BuildError> {
        let ImageKey { source, spec } = image;
        self.metrics.image_builds.inc();
        let started = std::time::Instant::now();
        // The roots keep the plan's store paths in the Nix store until the layers are stored.
        let (plan, roots) = self.planner.plan_held(&source, &spec).await?;
        let jobs = plan.contents().into_iter().map(|c| self.layer_jobs.layer(c));
        let blobs = futures::future::try_join_all(jobs).await.map_err(BuildError::Layer)?;
        self.layer_jobs.check_stored(plan.contents(), &blobs).await?;
        drop(roots);

        let exec = manifest::Exec { cmd: plan.command.as_deref(), user: spec.user.config_user() };
        let config = manifest::image_config(spec.arch, &blobs, exec);
        // Written even if present: a young config is kept by garbage collection while this
        // build's manifest is not yet stored.
        self.storage.put(&ObjectKey::blob(&config.digest), config.bytes.clone()).await?;
        tracing::info!(
            packages = ?spec.packages,
            arch = spec.arch.oci_name(),
            layers = blobs.len(),
            seconds = started.elapsed().as_secs_f64(),
            "built image"
        );
        Ok((BuiltImage { layers: blobs, config, inventory: plan.inventory.clone() }, plan))
    }
}
