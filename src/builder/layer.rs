//! Archiving layers: once per layer, whoever asks.
//!
//! A layer is identified by its content key ([`crate::cache::layers`]). Before archiving,
//! its record is looked up (a recorded layer whose blob is present is never archived
//! again, also after a restart or on another replica). Concurrent builds of *different*
//! images that need the same layer share one archive job: jobs are single-flight by content
//! key across every build of the process, so three images sharing a 512 MiB layer compress
//! it once, not three times side by side (each of which would also run slower, competing for
//! the same cores). A job goes on while any build still waits for it.

use super::BuildError;
use crate::archive::{Archiver, ChannelWriter, LayerBlob, LayerContents};
use crate::cache::layers::{content_key, record, reused};
use crate::cache::recipes::{self, LayerRecipe, RecipeRecord};
use crate::digest::Digest;
use crate::flight::SingleFlight;
use crate::metrics::Metrics;
use crate::storage::{ByteStream, ObjectKey, Storage};
use bytes::Bytes;
use futures::FutureExt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};

/// Chunks in flight between the archive writer and the upload.
const CHANNEL_DEPTH: usize = 4;

type LayerResult = Result<LayerBlob, Arc<BuildError>>;

/// The layer archive jobs of the process.
#[derive(Clone)]
pub struct LayerJobs {
    inner: Arc<Jobs>,
}

struct Jobs {
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    /// At most this many archives are written at once.
    slots: Semaphore,
    /// Tar and compression settings of every layer.
    archiver: Archiver,
    /// Store paths are read from below this root (`/` in production; see [`crate::archive`]).
    store_root: PathBuf,
    flights: SingleFlight<Digest, LayerResult>,
}

impl LayerJobs {
    pub fn new(
        storage: Arc<Storage>,
        metrics: Arc<Metrics>,
        slots: usize,
        archiver: Archiver,
        store_root: PathBuf,
    ) -> Self {
        let slots = Semaphore::new(slots);
        let jobs = Jobs { storage, metrics, slots, archiver, store_root, flights: SingleFlight::new() };
        LayerJobs { inner: Arc::new(jobs) }
    }

    /// Whether every store path of `contents` is in the local store (a layer's recipe can
    /// be archived again only then).
    pub fn in_store(&self, contents: &LayerContents) -> bool {
        let paths = match contents {
            LayerContents::StorePaths(paths) => paths,
            LayerContents::Forest { packages, .. } => packages,
        };
        paths.iter().all(|p| self.inner.store_root.join(p.as_str().trim_start_matches('/')).exists())
    }

    /// Whether `blob` is stored whole.
    pub async fn stored(&self, blob: &LayerBlob) -> Result<bool, crate::storage::StorageError> {
        Ok(self.inner.storage.size(&ObjectKey::blob(&blob.digest)).await? == Some(blob.size))
    }

    /// Archives again each of `blobs` (the layers of `contents`, in order) that is not stored
    /// whole any more, so a manifest never names a missing blob: a collection running
    /// meanwhile may have deleted a blob after this build found its record (see
    /// [`crate::gc`]). Layers are deterministic, so the blob comes back the same.
    pub async fn check_stored(&self, contents: Vec<LayerContents>, blobs: &[LayerBlob]) -> Result<(), BuildError> {
        let checks = blobs.iter().map(|blob| self.stored(blob));
        let stored = futures::future::try_join_all(checks).await?;
        for ((contents, blob), stored) in contents.into_iter().zip(blobs).zip(stored) {
            if stored {
                continue;
            }
            tracing::warn!(digest = %blob.digest, "a layer's blob went missing during the build: archiving it again");
            let again = self.layer(contents).await.map_err(BuildError::Layer)?;
            if again != *blob {
                let detail = format!("layer {} came out as {} the second time", blob.digest, again.digest);
                return Err(BuildError::Archive(std::io::Error::other(detail)));
            }
        }
        Ok(())
    }

    /// The blob of `contents`: from its record, from a job already running, or archived now.
    pub async fn layer(&self, contents: LayerContents) -> LayerResult {
        let key = content_key(&contents, self.inner.archiver.compression());
        let jobs = self.inner.clone();
        let job_key = key.clone();
        let start = move || async move { jobs.build(&job_key, contents).await.map_err(Arc::new) }.boxed();
        self.inner.flights.run(key, start).await
    }
}

impl Jobs {
    async fn build(&self, key: &Digest, contents: LayerContents) -> Result<LayerBlob, BuildError> {
        let recipe = RecipeRecord::Layer { layer: LayerRecipe::new(&contents, self.archiver.compression(), key) };
        if let Some(blob) = reused(&self.storage, key).await? {
            self.metrics.layer_cache_hits.inc();
            // Records written before recipes existed get one.
            recipes::keep(&self.storage, &blob.digest, &recipe).await?;
            return Ok(blob);
        }
        let _slot = self.slots.acquire().await.expect("layer slots are never closed");
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let (store_root, archiver) = (self.store_root.clone(), self.archiver.clone());
        let writer = tokio::task::spawn_blocking(move || {
            let (mut sink, blob) = archiver.write_layer_from(&store_root, &contents, ChannelWriter::new(tx))?;
            sink.flush()?;
            Ok::<_, std::io::Error>(blob)
        });
        let body: ByteStream = Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|c| c.map(Ok))));
        // The blob's key is its digest, known when the writer is done; a storage failure is
        // reported before the writer's (it explains a broken pipe).
        let written = async {
            let blob = writer.await.map_err(BuildError::Task)?.map_err(BuildError::Archive)?;
            Ok::<_, BuildError>((ObjectKey::blob(&blob.digest), blob))
        };
        let blob = self.storage.upload(body, written).await?;
        recipes::keep(&self.storage, &blob.digest, &recipe).await?;
        record(&self.storage, key, &blob).await?;
        self.metrics.layers_built.inc();
        tracing::info!(digest = %blob.digest, size = blob.size, "built layer");
        Ok(blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::ArchivePolicy;
    use crate::compression::Compression;
    use crate::nix::StorePath;
    use crate::storage::Memory;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;
    use std::path::Path;

    /// A store path `/nix/store/<hash>-name` kept below `root`, with a file and an
    /// executable; `hash` is repeated to Nix's 32 characters.
    fn store_path(root: &Path, hash: &str, name: &str) -> StorePath {
        let path = StorePath::parse(&format!("/nix/store/{}-{name}", hash.repeat(32))).unwrap();
        let dir = root.join(path.as_str().trim_start_matches('/'));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("README"), format!("{name}\n")).unwrap();
        std::fs::write(dir.join("bin/run"), "#!/bin/sh\necho hi\n").unwrap();
        path
    }

    struct Fixture {
        memory: Memory,
        storage: Arc<Storage>,
        metrics: Arc<Metrics>,
        store_root: std::path::PathBuf,
        jobs: LayerJobs,
    }

    fn archiver(compression: Compression) -> Archiver {
        Archiver::new(ArchivePolicy { compression, ..ArchivePolicy::default() }).unwrap()
    }

    impl Fixture {
        fn new(store_root: &Path) -> Self {
            let memory = Memory::new();
            let storage = Arc::new(Storage::Memory(memory.clone()));
            let metrics = Arc::new(Metrics::default());
            let (gzip, store_root) = (archiver(Compression::Gzip), store_root.to_owned());
            let jobs = LayerJobs::new(storage.clone(), metrics.clone(), 2, gzip, store_root.clone());
            Fixture { memory, storage, metrics, store_root, jobs }
        }

        /// A gzip layer, as servers build them by default.
        async fn build(&self, contents: &LayerContents) -> LayerResult {
            self.jobs.layer(contents.clone()).await
        }

        /// A layer as a server with `compression` builds it (a server has one compression;
        /// the jobs of two servers sharing storage are two [`LayerJobs`]).
        async fn build_as(&self, compression: Compression, contents: &LayerContents) -> LayerResult {
            let jobs = LayerJobs::new(
                self.storage.clone(),
                self.metrics.clone(),
                2,
                archiver(compression),
                self.store_root.clone(),
            );
            jobs.layer(contents.clone()).await
        }

        fn built_and_hits(&self) -> (u64, u64) {
            (self.metrics.layers_built.get(), self.metrics.layer_cache_hits.get())
        }
    }

    #[tokio::test]
    async fn a_layer_is_stored_with_its_record_then_found_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let contents = LayerContents::StorePaths(vec![store_path(dir.path(), "a", "hello")]);
        let f = Fixture::new(dir.path());
        let blob = f.build(&contents).await.unwrap();

        let stored = f.storage.get(&ObjectKey::blob(&blob.digest)).await.unwrap().expect("the blob is stored");
        assert_eq!(Digest::of(&stored), blob.digest);
        assert_eq!(stored.len() as u64, blob.size);
        let mut tar = Vec::new();
        MultiGzDecoder::new(&stored[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(Digest::of(&tar), blob.diff_id);
        let record = ObjectKey::build(&content_key(&contents, Compression::Gzip));
        let record_bytes = f.storage.get(&record).await.unwrap().expect("a record");
        assert_eq!(serde_json::from_slice::<LayerBlob>(&record_bytes).unwrap(), blob);
        assert!(f.memory.keys("staging/").is_empty(), "staging leftovers: {:?}", f.memory.keys("staging/"));
        assert_eq!(f.built_and_hits(), (1, 0));
        let recipe = crate::cache::recipes::find(&f.storage, &blob.digest).await.unwrap().expect("a recipe");
        let Ok(RecipeRecord::Layer { layer }) = recipe else { panic!("not a layer recipe: {recipe:?}") };
        assert_eq!(layer.record_key(), Some(record.clone()));
        assert!(matches!(layer.contents(Compression::Gzip), Ok(LayerContents::StorePaths(p)) if p.len() == 1));

        // Reusing the layer writes its record again: garbage collection sees it young.
        f.memory.age(record.as_str(), std::time::Duration::from_secs(7200));
        let aged = f.storage.info(&record).await.unwrap().unwrap().modified;
        assert_eq!(f.build(&contents).await.unwrap(), blob);
        assert_eq!(f.built_and_hits(), (1, 1), "the second build was not a cache hit");
        assert!(f.storage.info(&record).await.unwrap().unwrap().modified > aged, "the record was not refreshed");
        assert_eq!(f.memory.keys("").len(), 3, "{:?}", f.memory.keys(""));
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_layer_share_one_archive_job() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<StorePath> = (0..200).map(|i| store_path(dir.path(), "g", &format!("big{i}"))).collect();
        let contents = LayerContents::StorePaths(paths);
        let f = Fixture::new(dir.path());
        let all = (0..3).map(|_| f.build(&contents));
        let blobs: Vec<LayerBlob> = futures::future::try_join_all(all).await.unwrap();
        assert!(blobs.windows(2).all(|w| w[0] == w[1]), "{blobs:?}");
        assert_eq!(f.built_and_hits(), (1, 0), "one archive, and the others joined it (no record look-up)");
    }

    #[tokio::test]
    async fn a_record_whose_blob_is_gone_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let contents = LayerContents::StorePaths(vec![store_path(dir.path(), "b", "lib")]);
        let f = Fixture::new(dir.path());
        let phantom = LayerBlob { digest: Digest::of(b"gone"), diff_id: Digest::of(b"gone"), size: 4 };
        let record = ObjectKey::build(&content_key(&contents, Compression::Gzip));
        f.storage.put(&record, serde_json::to_vec(&phantom).unwrap().into()).await.unwrap();
        let blob = f.build(&contents).await.unwrap();
        assert_ne!(blob, phantom);
        assert_eq!(f.built_and_hits(), (1, 0));
        let rewritten: LayerBlob = serde_json::from_slice(&f.storage.get(&record).await.unwrap().unwrap()).unwrap();
        assert_eq!(rewritten, blob);
    }

    #[tokio::test]
    async fn a_failing_archive_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let good = store_path(dir.path(), "c", "ok");
        let missing = StorePath::parse(&format!("/nix/store/{}-missing", "d".repeat(32))).unwrap();
        let f = Fixture::new(dir.path());
        let err = f.build(&LayerContents::StorePaths(vec![good, missing])).await.unwrap_err();
        assert!(matches!(*err, BuildError::Archive(_)), "{err:?}");
        assert!(f.memory.keys("").is_empty(), "left behind: {:?}", f.memory.keys(""));
        assert_eq!(f.built_and_hits(), (0, 0));
    }

    #[tokio::test]
    async fn switching_the_compression_builds_and_records_the_other_kind() {
        let dir = tempfile::tempdir().unwrap();
        let contents = LayerContents::StorePaths(vec![store_path(dir.path(), "f", "tool")]);
        let f = Fixture::new(dir.path());
        let gzip = f.build_as(Compression::Gzip, &contents).await.unwrap();
        // The gzip record is not the zstd layer's: a new archive, recorded under its own key.
        let zstd = f.build_as(Compression::Zstd, &contents).await.unwrap();
        assert_eq!(f.built_and_hits(), (2, 0));
        assert_ne!(zstd.digest, gzip.digest);
        assert_eq!(zstd.diff_id, gzip.diff_id, "the same tar under both");
        let stored = f.storage.get(&ObjectKey::blob(&zstd.digest)).await.unwrap().expect("the zstd blob");
        assert_eq!(Digest::of(&zstd::decode_all(&stored[..]).unwrap()), zstd.diff_id);
        for (compression, blob) in [(Compression::Gzip, &gzip), (Compression::Zstd, &zstd)] {
            let record = ObjectKey::build(&content_key(&contents, compression));
            let recorded: LayerBlob = serde_json::from_slice(&f.storage.get(&record).await.unwrap().unwrap()).unwrap();
            assert_eq!(&recorded, blob, "{compression}");
            assert_eq!(&f.build_as(compression, &contents).await.unwrap(), blob, "{compression}");
        }
        assert_eq!(f.built_and_hits(), (2, 2), "each found its own record");
    }
}
