//! One build per image for the whole fleet.
//!
//! Replicas sharing storage that are asked for the same pinned image at once build it once:
//! the image's flight (one per process, [`crate::flight`]) first claims the image's build
//! lease (`leases/<hex of the build identity>`, [`ManifestKey::build_identity`]). The
//! replica that gets it builds; the others wait until the manifest the holder stores last
//! appears in storage (the holder stores every format, then releases the lease), and
//! answer from storage. A holder that dies stops renewing and another replica takes over
//! ([`crate::lease`]). A path source's reading means nothing to another replica, so such
//! an image is built by each replica that is asked for it, once per replica.
//!
//! The lease is held until every manifest flight of this process that waited for the
//! build has stored its manifests: the flights share it (`Arc`), and the last one to drop
//! it releases it.

use super::{BuildError, BuiltImage, ImageKey, Inner, ManifestKey, logged_fault};
use crate::cache::DocumentKind;
use crate::cache::recipes::{self, RecipeRecord};
use crate::digest::Digest;
use crate::image::Tag;
use crate::lease::{Claim, Lease};
use crate::manifest::ManifestFormat;
use crate::storage::{ObjectKey, StorageError};
use futures::FutureExt;
use std::sync::Arc;

/// What an image's flight gives every manifest flight that waits for it.
#[derive(Clone)]
pub(super) enum Fleet {
    /// Built here; with the build lease, held until the manifests are stored.
    Built(Arc<BuiltImage>, Option<Arc<Lease>>),
    /// Built by another replica: its manifests are in storage.
    Elsewhere,
}

pub(super) type FleetResult = Result<Fleet, Arc<BuildError>>;

impl Inner {
    /// The image of `key`, built once for this process and, for a pinned source, once for
    /// every replica sharing storage.
    pub(super) async fn build_once(
        self: Arc<Self>,
        key: &ManifestKey,
        image: ImageKey,
        tag: Tag,
        log_name: &str,
    ) -> FleetResult {
        let start = {
            let (inner, key, image, log_name) = (self.clone(), key.clone(), image.clone(), log_name.to_owned());
            move || async move { inner.leased_build(key, image, tag, &log_name).await }.boxed()
        };
        self.images.run(image, start).await
    }

    async fn leased_build(self: Arc<Self>, key: ManifestKey, image: ImageKey, tag: Tag, log_name: &str) -> FleetResult {
        let Some(identity) = key.build_identity() else {
            return Ok(Fleet::Built(self.build_recorded(image, tag, log_name).await?, None));
        };
        // The holder stores this manifest last of all.
        let formats = ManifestFormat::for_compression(self.recipe.compression);
        let last = formats.last().expect("at least one format");
        let last = ManifestKey { format: *last, document: DocumentKind::Manifest, ..key };
        let last = last.storage_key().expect("a pinned source's manifest is stored");
        let storage = self.storage.clone();
        let done = move || {
            let (storage, last) = (storage.clone(), last.clone());
            async move { Ok::<_, StorageError>(storage.size(&last).await?.is_some()) }
        };
        match self.leases.claim(&ObjectKey::lease(&identity), log_name, done).await {
            Ok(Claim::Done) => {
                self.metrics.builds_elsewhere.inc();
                Ok(Fleet::Elsewhere)
            }
            Ok(Claim::Held(lease)) => {
                let built = self.build_recorded(image, tag, log_name).await?;
                Ok(Fleet::Built(built, Some(Arc::new(lease))))
            }
            Err(e) => Err(logged_fault(log_name, e)),
        }
    }

    /// Keeps the recipe of `built`'s config: made again with the manifest `manifest`.
    pub(super) async fn keep_config_recipe(&self, built: &BuiltImage, manifest: &Digest) -> Result<(), StorageError> {
        let record = RecipeRecord::Config { manifest: manifest.clone() };
        recipes::keep(&self.storage, &built.config.digest, &record).await
    }
}
