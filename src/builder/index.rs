//! A tag's index: every configured platform's manifest, built concurrently.
//!
//! Each platform's image is exactly the single-platform image of the same name for that
//! architecture (what `arm64/<name>` builds for arm64): its own manifest key, so it is
//! cached, stored by digest and shared with plain requests for it, and its own build, with
//! the package set instantiated for that platform's system. The builds run side by side
//! under the limits every build has (Nix job slots, layer archive slots), and layers whose
//! store paths coincide between platforms (the same content key: architecture-independent
//! paths such as data or scripts) are archived once and shared, by the layer jobs and
//! records of [`super::layer`].
//!
//! The index itself is then rendered ([`crate::index`]) and cached under a key naming the
//! platforms ([`DocumentKind::Index`]); for a pinned source it is stored and never rebuilt.
//! A platform that fails fails the request, naming the platform; the other platforms' builds
//! stop if nobody else waits for them.

use super::{Builder, Inner, ManifestError, ManifestResult, Requested};
use crate::cache::{CachedManifest, DocumentKind, ManifestKey, Outcome};
use crate::image::{ImageName, ImageSpec, Tag};
use crate::manifest::ManifestFormat;
use std::sync::Arc;

impl Builder {
    /// The index of `spec` (its architecture is ignored) at `tag`, with every configured
    /// platform's manifest in `format`.
    pub async fn index(
        &self,
        name: &ImageName,
        spec: ImageSpec,
        tag: &Tag,
        format: ManifestFormat,
    ) -> Result<Arc<CachedManifest>, ManifestError> {
        let platforms = self.inner.platforms.clone();
        let image = ImageSpec { arch: platforms.default_arch(), ..spec };
        self.document(name, tag, image, format, DocumentKind::Index(platforms)).await
    }
}

impl Inner {
    /// An index not in memory: from storage, or rendered from every platform's manifest.
    pub(super) async fn stored_or_indexed(self: Arc<Self>, key: ManifestKey, requested: Requested) -> ManifestResult {
        // A storage fault is the server's: logged, as on the manifest's path.
        let fault = |e| super::logged_fault(&requested.log_name, e);
        if let Some(stored) = self.manifests.stored(&key).await.map_err(fault)? {
            self.record_read(&key, &stored).await.map_err(fault)?;
            return Ok((stored, Outcome::Stored));
        }
        let DocumentKind::Index(platforms) = &key.document else { unreachable!("only index keys come here") };
        let manifests = platforms.all().iter().map(|&arch| {
            let key = ManifestKey {
                image: ImageSpec { arch, ..key.image.clone() },
                document: DocumentKind::Manifest,
                ..key.clone()
            };
            let (inner, requested) = (self.clone(), requested.clone());
            async move {
                // Its outcome is not counted: the request is counted once, as the index's.
                match inner.cached(key, crate::cache::Freshness::Pinned, requested).await {
                    Ok((manifest, _)) => Ok((arch, manifest)),
                    Err(error) => Err(Arc::new(super::BuildError::Platform(arch, error))),
                }
            }
        });
        let manifests = futures::future::try_join_all(manifests).await?;
        let entries: Vec<_> = manifests.iter().map(|(arch, m)| (*arch, m.as_ref())).collect();
        let doc = crate::index::index(key.format, &entries);
        self.record_index(&key, &doc, &entries).await.map_err(fault)?;
        let cached = self.manifests.insert(key, doc).await.map_err(fault)?;
        Ok((cached, Outcome::Cold))
    }
}
