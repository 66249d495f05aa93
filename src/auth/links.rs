//! Which manifests and blobs belong to which repository names, so that a manifest or blob by
//! digest is served only under a name it was built for when authentication is on.
//!
//! Distribution keeps the same rule: content is linked to the repositories it was pushed to,
//! and `GET /v2/<name>/manifests/<digest>` of a digest not linked to `<name>` is
//! `MANIFEST_UNKNOWN`, a blob `BLOB_UNKNOWN`. Without it a token for `hello` could read the
//! image of `secret` under `/v2/hello/manifests/sha256:…` or its layers under
//! `/v2/hello/blobs/sha256:…` once it knew the digests. Here nothing is pushed: a manifest (or
//! index) is linked to a name when it is served for that name, with what it references (an
//! index's platform manifests, a manifest's config and layers), so containerd's HEAD by tag
//! followed by GET by digest, a client picking its platform from an index, and every blob
//! pull find theirs.
//!
//! A name's link identity is its components sorted and de-duplicated (`shell/git` and
//! `git/shell` are the same image, [`crate::image::ImageSpec`]). Links live in storage under
//! `links/<sha256 of the identity>-<digest>` (the object holds the identity, for people), so
//! they hold across restarts and for every replica sharing the storage; each process also
//! remembers the links it has seen, so a warm answer writes and reads nothing.

use crate::digest::Digest;
use crate::image::ImageName;
use crate::storage::{ObjectKey, Storage, StorageError};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Links remembered in memory, at most.
const REMEMBERED: usize = 65_536;

/// The links between names and manifests.
pub struct Links {
    storage: Arc<Storage>,
    known: quick_cache::sync::Cache<(Digest, Digest), ()>,
}

/// The identity of `name` (see the module docs) and its digest.
pub fn identity(name: &ImageName) -> (String, Digest) {
    let parts: BTreeSet<&str> = name.components().iter().map(|c| c.as_str()).collect();
    let text = parts.into_iter().collect::<Vec<_>>().join("/");
    let digest = Digest::of(text.as_bytes());
    (text, digest)
}

/// What a manifest document references: an index's manifests, a manifest's config and
/// layers (none for anything that is not one).
pub fn referenced(bytes: &[u8]) -> Vec<Digest> {
    #[derive(serde::Deserialize)]
    struct Entry {
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct Document {
        #[serde(default)]
        manifests: Vec<Entry>,
        config: Option<Entry>,
        #[serde(default)]
        layers: Vec<Entry>,
    }
    serde_json::from_slice::<Document>(bytes)
        .map(|d| {
            d.manifests.into_iter().chain(d.config).chain(d.layers).filter_map(|e| e.digest.parse().ok()).collect()
        })
        .unwrap_or_default()
}

/// What linking the document `digest` (whose bytes are `bytes`) to a name links: what it
/// references, then the document itself, the order [`Links::link`] needs.
pub fn with_references(digest: &Digest, bytes: &[u8]) -> Vec<Digest> {
    let mut digests = referenced(bytes);
    digests.push(digest.clone());
    digests
}

impl Links {
    pub fn new(storage: Arc<Storage>) -> Self {
        Links { storage, known: quick_cache::sync::Cache::new(REMEMBERED) }
    }

    /// Whether this process has linked or seen `digest` linked to `name`: no storage read.
    pub fn is_known(&self, name: &ImageName, digest: &Digest) -> bool {
        self.known.get(&(identity(name).1, digest.clone())).is_some()
    }

    /// Links `digests` to `name` (in storage unless this process already did), in order:
    /// a document last, after what it references, so that a document known to be linked
    /// means its references are too.
    pub async fn link(&self, name: &ImageName, digests: &[Digest]) -> Result<(), StorageError> {
        let (text, id) = identity(name);
        for digest in digests {
            let pair = (id.clone(), digest.clone());
            if self.known.get(&pair).is_some() {
                continue;
            }
            self.storage.put(&ObjectKey::link(&id, digest), Bytes::from(text.clone())).await?;
            self.known.insert(pair, ());
        }
        Ok(())
    }

    /// Whether `digest` is linked to `name` (by this process, another replica, or before a
    /// restart).
    pub async fn is_linked(&self, name: &ImageName, digest: &Digest) -> Result<bool, StorageError> {
        let (_, id) = identity(name);
        let pair = (id.clone(), digest.clone());
        if self.known.get(&pair).is_some() {
            return Ok(true);
        }
        let linked = self.storage.size(&ObjectKey::link(&id, digest)).await?.is_some();
        if linked {
            self.known.insert(pair, ());
        }
        Ok(linked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Memory;

    fn name(s: &str) -> ImageName {
        ImageName::parse(s).unwrap()
    }

    #[test]
    fn names_of_the_same_image_share_an_identity() {
        assert_eq!(identity(&name("shell/git")), identity(&name("git/shell/git")));
        assert_eq!(identity(&name("shell/git")).0, "git/shell");
        assert_ne!(identity(&name("shell/git")).1, identity(&name("shell")).1);
        assert_ne!(identity(&name("arm64/git")).1, identity(&name("git")).1);
    }

    #[test]
    fn references_are_read_from_indexes_and_manifests() {
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let index = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{a}","size":1}},{{"digest":"bad"}}]}}"#);
        assert_eq!(referenced(index.as_bytes()), vec![a]);
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{b}","size":2}},"layers":[{{"digest":"{c}","size":3}}]}}"#
        );
        assert_eq!(referenced(manifest.as_bytes()), vec![b, c]);
        assert!(referenced(br#"{"schemaVersion":2,"layers":[]}"#).is_empty());
        assert!(referenced(b"not json").is_empty());
    }

    #[tokio::test]
    async fn links_hold_for_another_process_on_the_same_storage() {
        let memory = Memory::new();
        let storage = Arc::new(Storage::Memory(memory.clone()));
        let links = Links::new(storage.clone());
        let (one, two) = (Digest::of(b"one"), Digest::of(b"two"));
        links.link(&name("shell/git"), std::slice::from_ref(&one)).await.unwrap();
        assert!(links.is_linked(&name("git/shell"), &one).await.unwrap());
        assert!(!links.is_linked(&name("shell/git"), &two).await.unwrap());
        assert!(!links.is_linked(&name("hello"), &one).await.unwrap());
        assert_eq!(memory.keys("links/").len(), 1);
        links.link(&name("shell/git"), std::slice::from_ref(&one)).await.unwrap();
        assert_eq!(memory.keys("links/").len(), 1, "linked once");

        let restarted = Links::new(storage);
        assert!(restarted.is_linked(&name("shell/git"), &one).await.unwrap());
        assert!(!restarted.is_linked(&name("hello"), &one).await.unwrap());
    }
}
