//! Building one layer, or finding it already built.
//!
//! A layer is identified by its content key, the hash of its store paths (store paths name
//! their contents, so equal keys mean equal layers). `builds/<key>` records the blob a key
//! became; a recorded layer whose blob is present is never archived again, also after a
//! restart or on another replica sharing the storage.

use super::BuildError;
use crate::archive::{ChannelWriter, LayerBlob, LayerContents, write_layer};
use crate::digest::Digest;
use crate::metrics::Metrics;
use crate::storage::{ByteStream, ObjectKey, Storage};
use bytes::Bytes;
use std::io::Write;
use tokio::sync::{Semaphore, mpsc};

/// Chunks in flight between the archive writer and the upload.
const CHANNEL_DEPTH: usize = 4;
/// Bumped whenever the archive format changes, so old records are not reused.
const FORMAT_VERSION: &str = "nixery-layer-v1";

/// The content key of a layer.
pub fn content_key(contents: &LayerContents) -> Digest {
    let (kind, paths) = match contents {
        LayerContents::StorePaths(p) => ("store-paths", p),
        LayerContents::Forest(p) => ("symlink-forest", p),
    };
    let mut text = format!("{FORMAT_VERSION}\n{kind}\n");
    for p in paths {
        text.push_str(p.as_str());
        text.push('\n');
    }
    Digest::of(text.as_bytes())
}

/// Returns the blob of `contents`, from the build cache or by archiving it now (at most as
/// many archives at once as `slots` allows).
pub async fn build_layer(
    storage: &Storage,
    metrics: &Metrics,
    slots: &Semaphore,
    contents: LayerContents,
) -> Result<LayerBlob, BuildError> {
    let key = content_key(&contents);
    let record = ObjectKey::build(&key);
    if let Some(blob) = cached(storage, &record).await? {
        metrics.layer_cache_hits.inc();
        return Ok(blob);
    }

    let _slot = slots.acquire().await.expect("layer slots are never closed");
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let writer = tokio::task::spawn_blocking(move || {
        let (mut sink, blob) = write_layer(&contents, ChannelWriter::new(tx))?;
        sink.flush()?;
        Ok::<_, std::io::Error>(blob)
    });
    let body: ByteStream = Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|c| c.map(Ok))));
    let staged = storage.stage(body).await;
    let written = writer.await.map_err(BuildError::Task)?;
    // A storage failure explains a writer's broken pipe, so it is reported first.
    let staged = staged?;
    let blob = written.map_err(BuildError::Archive)?;

    storage.commit(staged, &ObjectKey::blob(&blob.digest)).await?;
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

    #[test]
    fn content_keys_depend_on_kind_and_paths() {
        let path = |hash: &str| crate::nix::StorePath::parse(&format!("/nix/store/{}-x", hash.repeat(32))).unwrap();
        let a = LayerContents::StorePaths(vec![path("a")]);
        let a2 = LayerContents::StorePaths(vec![path("a")]);
        let b = LayerContents::StorePaths(vec![path("b")]);
        let fa = LayerContents::Forest(vec![path("a")]);
        assert_eq!(content_key(&a), content_key(&a2));
        assert_ne!(content_key(&a), content_key(&b));
        assert_ne!(content_key(&a), content_key(&fa));
    }
}
