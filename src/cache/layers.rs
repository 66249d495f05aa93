//! Layer records: which blob a layer's store paths became.
//!
//! A layer is identified by its content key, the hash of its kind and store paths (store
//! paths name their contents, so equal keys mean equal layers), its compression (the same
//! store paths give another blob in each) and [`FORMAT_VERSION`].
//! `builds/<content key>` holds the [`LayerBlob`] it became; a record whose blob is still
//! present means the layer is never archived again, also after a restart or on another
//! replica sharing the storage. (Concurrent builds of one layer share one archive job:
//! [`crate::builder`].) A build that reuses a record writes it again ([`reused`]): garbage
//! collection keeps the blobs of young records.

use crate::archive::{LayerBlob, LayerContents};
use crate::compression::Compression;
use crate::digest::Digest;
use crate::image::ImageUser;
use crate::storage::{ObjectKey, Storage, StorageError};

/// Bumped whenever the archive format changes, so old records are not reused (and part of
/// every manifest key, see [`super::Recipe`]). v2: gzip in parallel blocks with noise stored
/// (see [`crate::archive`]), and the compression in the key. v3: the symlink forest carries
/// the user database, `/root` and the nonroot home. v4: gzip layers are libdeflate level 5,
/// a gzip member per 1 MiB block (src/compression/gzip.rs).
pub const FORMAT_VERSION: &str = "nixery-layer-v4";

/// The content key of a layer archived with `compression`.
pub fn content_key(contents: &LayerContents, compression: Compression) -> Digest {
    let (kind, paths) = match contents {
        LayerContents::StorePaths(p) => ("store-paths", p),
        LayerContents::Forest { packages, user: ImageUser::Root } => ("symlink-forest", packages),
        LayerContents::Forest { packages, user: ImageUser::NonRoot } => ("symlink-forest nonroot", packages),
    };
    let mut text = format!("{FORMAT_VERSION}\n{}\n{kind}\n", compression.id());
    for p in paths {
        text.push_str(p.as_str());
        text.push('\n');
    }
    Digest::of(text.as_bytes())
}

/// The recorded blob of the layer with content key `key`, if its blob is still there, for
/// a build that reuses it: the record is written again first, so that garbage collection,
/// which keeps the blobs of records younger than its grace, keeps this blob while the build
/// that just picked it up runs ([`crate::gc`]).
pub async fn reused(storage: &Storage, key: &Digest) -> Result<Option<LayerBlob>, StorageError> {
    let record = ObjectKey::build(key);
    let Some(bytes) = storage.get(&record).await? else {
        return Ok(None);
    };
    let Ok(blob) = serde_json::from_slice::<LayerBlob>(&bytes) else {
        tracing::warn!(%record, "ignoring unreadable build record");
        return Ok(None);
    };
    storage.put(&record, bytes).await?;
    let present = storage.size(&ObjectKey::blob(&blob.digest)).await? == Some(blob.size);
    Ok(present.then_some(blob))
}

/// Records that the layer with content key `key` became `blob` (stored already).
pub async fn record(storage: &Storage, key: &Digest, blob: &LayerBlob) -> Result<(), StorageError> {
    let json = serde_json::to_vec(blob).expect("layer blobs serialise");
    storage.put(&ObjectKey::build(key), json.into()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::StorePath;

    #[test]
    fn content_keys_depend_on_kind_paths_and_compression() {
        let path = |hash: &str| StorePath::parse(&format!("/nix/store/{}-x", hash.repeat(32))).unwrap();
        let content_key = |contents: &LayerContents| super::content_key(contents, Compression::Gzip);
        let a = LayerContents::StorePaths(vec![path("a")]);
        let a2 = LayerContents::StorePaths(vec![path("a")]);
        let b = LayerContents::StorePaths(vec![path("b")]);
        let fa = LayerContents::Forest { packages: vec![path("a")], user: ImageUser::Root };
        let fa_nonroot = LayerContents::Forest { packages: vec![path("a")], user: ImageUser::NonRoot };
        assert_eq!(content_key(&a), content_key(&a2));
        assert_ne!(content_key(&a), content_key(&b));
        assert_ne!(content_key(&a), content_key(&fa));
        assert_ne!(content_key(&a), super::content_key(&a, Compression::Zstd));
        assert_ne!(content_key(&fa), content_key(&fa_nonroot));
    }
}
