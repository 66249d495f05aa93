//! What garbage collection took, made again when a client asks for it by digest.
//!
//! A manifest by digest is served from memory or storage; if neither has it, its recipe
//! ([`crate::cache::recipes`]) names the key it was built from, and the manifest is built
//! through the caches like any other (once for the fleet, [`super::fleet`]). Layers are
//! deterministic, so the result has the same digest and is served; if it does not (the
//! package set no longer gives the same packages), or the recipe cannot work on this server
//! (a local path source, other layer settings, another package source), the answer says
//! why ([`Unmakeable`]). A blob goes the same way: a layer is archived again from the store
//! paths its recipe names (if the local store still has them), a config is made with the
//! image of its manifest.

use super::{BuildError, Builder, ImageKey, Inner, ManifestError, Requested};
use crate::archive::LayerBlob;
use crate::cache::recipes::{self, RecipeRecord, Unmakeable};
use crate::cache::{CachedManifest, Freshness};
use crate::digest::Digest;
use crate::image::Tag;
use crate::storage::{ObjectKey, StorageError};
use std::sync::Arc;

/// What there is under a digest.
#[derive(Debug)]
pub enum ByDigest<T> {
    /// Stored, or made again.
    Found(T),
    /// Never served here.
    Unknown,
    /// Served here once, collected since, and it cannot be made again: why.
    Collected(Unmakeable),
}

/// Why looking something up by digest failed.
#[derive(Debug, thiserror::Error)]
pub enum RemakeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Making it again failed (a package that no longer builds, a server fault).
    #[error(transparent)]
    Build(ManifestError),
}

impl From<Arc<BuildError>> for RemakeError {
    fn from(e: Arc<BuildError>) -> Self {
        RemakeError::Build(ManifestError::Build(e))
    }
}

impl Inner {
    /// The manifest or index with `digest` from memory or storage, served (its served record
    /// kept, [`crate::retention`]); one in memory whose record is old is looked up in storage
    /// again, in case garbage collection took it.
    pub(super) async fn known_manifest(&self, digest: &Digest) -> Result<Option<Arc<CachedManifest>>, StorageError> {
        if let Some(known) = self.manifests.by_digest(digest).await? {
            if self.retention.serving(&known).await {
                return Ok(Some(known));
            }
            self.manifests.forget(None, digest);
            if let Some(stored) = self.manifests.by_digest(digest).await? {
                self.retention.serving(&stored).await;
                return Ok(Some(stored));
            }
        }
        Ok(None)
    }
}

impl Builder {
    /// The manifest or index with `digest`, as first served: from memory once known, else
    /// from storage, else made again from its recipe.
    pub async fn manifest_by_digest(&self, digest: &Digest) -> Result<ByDigest<Arc<CachedManifest>>, RemakeError> {
        let inner = &self.inner;
        if let Some(known) = inner.known_manifest(digest).await? {
            return Ok(ByDigest::Found(known));
        }
        let identity = match recipes::find(&inner.storage, digest).await? {
            None | Some(Ok(RecipeRecord::Layer { .. } | RecipeRecord::Config { .. })) => return Ok(ByDigest::Unknown),
            Some(Err(why)) => return Ok(ByDigest::Collected(why)),
            Some(Ok(RecipeRecord::Document { key })) => key,
        };
        let key = match recipes::key_of(&identity, inner.sources.source(), &inner.recipe) {
            Ok(key) => key,
            Err(why) => return Ok(ByDigest::Collected(why)),
        };
        let tag = key.source.commit().and_then(|c| Tag::parse(c.as_str()).ok()).unwrap_or_else(Tag::latest);
        tracing::info!(%digest, "a collected manifest was asked for: making it again from its recipe");
        let requested = Requested { log_name: format!("{digest} (collected)"), tag };
        let (made, _) = inner.clone().cached(key, Freshness::Pinned, requested).await?;
        if made.digest != *digest {
            return Ok(ByDigest::Collected(Unmakeable::Differs(made.digest.clone())));
        }
        // The manifest may have come from its cached copy by key: store it by digest again.
        let by_digest = ObjectKey::manifest(digest);
        if inner.storage.size(&by_digest).await?.is_none() {
            inner.storage.put(&by_digest, made.bytes.clone()).await?;
        }
        inner.metrics.remade.inc();
        Ok(ByDigest::Found(made))
    }

    /// The manifest or index with `digest` if it is in memory or storage (nothing is made
    /// again): what a client that may not cause builds can be given.
    pub async fn known_manifest(&self, digest: &Digest) -> Result<Option<Arc<CachedManifest>>, StorageError> {
        self.inner.known_manifest(digest).await
    }

    /// Whether asking for the manifest `digest`, which is not stored, would build it again
    /// (it has a recipe): a build, which the registry admits like one by tag.
    pub async fn would_remake(&self, digest: &Digest) -> Result<bool, StorageError> {
        let found = recipes::find(&self.inner.storage, digest).await?;
        Ok(matches!(found, Some(Ok(RecipeRecord::Document { .. }))))
    }

    /// Whether asking for the blob `digest`, which is not stored, would make it again (a layer
    /// archived again, a config with its image's build): work the registry admits like a
    /// build.
    pub async fn would_remake_blob(&self, digest: &Digest) -> Result<bool, StorageError> {
        let found = recipes::find(&self.inner.storage, digest).await?;
        Ok(matches!(found, Some(Ok(RecipeRecord::Layer { .. } | RecipeRecord::Config { .. }))))
    }

    /// Makes the collected blob `digest` again, if its recipe says how: `Found(())` once it
    /// is stored again.
    pub async fn blob_again(&self, digest: &Digest) -> Result<ByDigest<()>, RemakeError> {
        let inner = &self.inner;
        let record = match recipes::find(&inner.storage, digest).await? {
            None | Some(Ok(RecipeRecord::Document { .. })) => return Ok(ByDigest::Unknown),
            Some(Err(why)) => return Ok(ByDigest::Collected(why)),
            Some(Ok(record)) => record,
        };
        match record {
            RecipeRecord::Layer { layer } => {
                let contents = match layer.contents(inner.recipe.compression) {
                    Ok(contents) => contents,
                    Err(why) => return Ok(ByDigest::Collected(why)),
                };
                if !inner.layer_jobs.in_store(&contents) {
                    return Ok(ByDigest::Collected(Unmakeable::PathsGone));
                }
                tracing::info!(%digest, "a collected layer was asked for: archiving it again from its recipe");
                let blob: LayerBlob = inner.layer_jobs.layer(contents).await?;
                if blob.digest != *digest {
                    return Ok(ByDigest::Collected(Unmakeable::Differs(blob.digest)));
                }
            }
            // The manifest may be stored while its config is not (a collection that deleted an
            // old config between a build's write of it and its manifest's): the image is
            // built again from the manifest's recipe, which writes the config.
            RecipeRecord::Config { manifest } => {
                let key = match recipes::find(&inner.storage, &manifest).await? {
                    Some(Ok(RecipeRecord::Document { key })) => key,
                    Some(Err(why)) => return Ok(ByDigest::Collected(why)),
                    _ => return Ok(ByDigest::Unknown),
                };
                let key = match recipes::key_of(&key, inner.sources.source(), &inner.recipe) {
                    Ok(key) => key,
                    Err(why) => return Ok(ByDigest::Collected(why)),
                };
                let image = ImageKey { source: key.source.clone(), spec: key.image.clone() };
                let tag = key.source.commit().and_then(|c| Tag::parse(c.as_str()).ok()).unwrap_or_else(Tag::latest);
                tracing::info!(%digest, "a collected config was asked for: building its image again");
                let log_name = format!("{manifest} (config collected)");
                let built = inner.build_recorded(image, tag, &log_name).await?;
                if built.config.digest != *digest {
                    return Ok(ByDigest::Collected(Unmakeable::Differs(built.config.digest.clone())));
                }
            }
            RecipeRecord::Document { .. } => unreachable!("handled above"),
        }
        inner.metrics.remade.inc();
        Ok(ByDigest::Found(()))
    }
}
