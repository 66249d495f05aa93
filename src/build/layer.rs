//! Building one layer, or finding it already built.
//!
//! A layer is identified by its content key, the hash of its store paths (store paths name
//! their contents, so equal keys mean equal layers), its compression and the archive format
//! version. `builds/<key>` records the blob a key became; a recorded layer whose blob is present is never archived again, also after a
//! restart or on another replica sharing the storage.

use super::BuildError;
use crate::archive::{Archiver, ChannelWriter, LayerBlob, LayerContents};
use crate::compression::Compression;
use crate::digest::Digest;
use crate::metrics::Metrics;
use crate::storage::{ByteStream, ObjectKey, Storage};
use bytes::Bytes;
use std::io::Write;
use std::path::Path;
use tokio::sync::{Semaphore, mpsc};

/// Chunks in flight between the archive writer and the upload.
const CHANNEL_DEPTH: usize = 4;
/// Bumped whenever the archive format changes, so old records are not reused. v2: gzip in
/// parallel blocks with noise stored (see [`crate::archive`]), and the compression in the key.
pub(super) const FORMAT_VERSION: &str = "nixery-layer-v2";

/// The content key of a layer: the same store paths give other blobs in each compression.
pub fn content_key(contents: &LayerContents, compression: Compression) -> Digest {
    let (kind, paths) = match contents {
        LayerContents::StorePaths(p) => ("store-paths", p),
        LayerContents::Forest(p) => ("symlink-forest", p),
    };
    let mut text = format!("{FORMAT_VERSION}\n{}\n{kind}\n", compression.id());
    for p in paths {
        text.push_str(p.as_str());
        text.push('\n');
    }
    Digest::of(text.as_bytes())
}

/// Returns the blob of `contents`, from the build cache or by archiving it now with
/// `archiver` (at most as many archives at once as `slots` allows). Store paths are read from
/// below `store_root` (`/` in production; see [`crate::archive`]).
pub async fn build_layer(
    storage: &Storage,
    metrics: &Metrics,
    slots: &Semaphore,
    archiver: &Archiver,
    store_root: &Path,
    contents: LayerContents,
) -> Result<LayerBlob, BuildError> {
    let key = content_key(&contents, archiver.compression());
    let record = ObjectKey::build(&key);
    if let Some(blob) = cached(storage, &record).await? {
        metrics.layer_cache_hits.inc();
        return Ok(blob);
    }

    let _slot = slots.acquire().await.expect("layer slots are never closed");
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let (store_root, archiver) = (store_root.to_owned(), archiver.clone());
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
    let blob = storage.upload(body, written).await?;
    let json = serde_json::to_vec(&blob).expect("layer blobs serialise");
    storage.put(&record, json.into()).await?;
    metrics.layers_built.inc();
    tracing::info!(digest = %blob.digest, size = blob.size, "built layer");
    Ok(blob)
}

/// A build record whose blob is still there.
async fn cached(storage: &Storage, record: &ObjectKey) -> Result<Option<LayerBlob>, BuildError> {
    let Some(bytes) = storage.get(record).await? else {
        return Ok(None);
    };
    let Ok(blob) = serde_json::from_slice::<LayerBlob>(&bytes) else {
        tracing::warn!(%record, "ignoring unreadable build record");
        return Ok(None);
    };
    let present = storage.size(&ObjectKey::blob(&blob.digest)).await? == Some(blob.size);
    Ok(present.then_some(blob))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::ArchivePolicy;
    use crate::nix::StorePath;
    use crate::storage::Memory;
    use flate2::read::GzDecoder;
    use std::io::Read;

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
        storage: Storage,
        metrics: Metrics,
        slots: Semaphore,
        store_root: std::path::PathBuf,
    }

    fn archiver(compression: Compression) -> Archiver {
        Archiver::new(ArchivePolicy { compression, ..ArchivePolicy::default() }).unwrap()
    }

    impl Fixture {
        fn new(store_root: &Path) -> Self {
            let memory = Memory::new();
            let storage = Storage::Memory(memory.clone());
            let store_root = store_root.to_owned();
            Fixture { memory, storage, metrics: Metrics::default(), slots: Semaphore::new(2), store_root }
        }

        /// A gzip layer, as servers build them by default.
        async fn build(&self, contents: &LayerContents) -> Result<LayerBlob, BuildError> {
            self.build_as(Compression::Gzip, contents).await
        }

        async fn build_as(&self, compression: Compression, contents: &LayerContents) -> Result<LayerBlob, BuildError> {
            let archiver = archiver(compression);
            build_layer(&self.storage, &self.metrics, &self.slots, &archiver, &self.store_root, contents.clone()).await
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
        GzDecoder::new(&stored[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(Digest::of(&tar), blob.diff_id);
        let record = ObjectKey::build(&content_key(&contents, Compression::Gzip));
        let record = f.storage.get(&record).await.unwrap().expect("a record");
        assert_eq!(serde_json::from_slice::<LayerBlob>(&record).unwrap(), blob);
        assert!(f.memory.keys("staging/").is_empty(), "staging leftovers: {:?}", f.memory.keys("staging/"));
        assert_eq!(f.built_and_hits(), (1, 0));

        assert_eq!(f.build(&contents).await.unwrap(), blob);
        assert_eq!(f.built_and_hits(), (1, 1), "the second build was not a cache hit");
        assert_eq!(f.memory.keys("").len(), 2, "{:?}", f.memory.keys(""));
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
        assert!(matches!(err, BuildError::Archive(_)), "{err:?}");
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

    #[test]
    fn content_keys_depend_on_kind_paths_and_compression() {
        let path = |hash: &str| StorePath::parse(&format!("/nix/store/{}-x", hash.repeat(32))).unwrap();
        let key = |contents: &LayerContents| content_key(contents, Compression::Gzip);
        let a = LayerContents::StorePaths(vec![path("a")]);
        let a2 = LayerContents::StorePaths(vec![path("a")]);
        let b = LayerContents::StorePaths(vec![path("b")]);
        let fa = LayerContents::Forest(vec![path("a")]);
        assert_eq!(key(&a), key(&a2));
        assert_ne!(key(&a), key(&b));
        assert_ne!(key(&a), key(&fa));
        assert_ne!(key(&a), content_key(&a, Compression::Zstd));
    }
}
