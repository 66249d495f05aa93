//! Where blobs, manifests and build records live.
//!
//! Key layout (the same for every backend):
//! - `staging/<unique>`: uploads in progress, never served;
//! - `layers/sha256:<hex>`: layer and config blobs (Nixery's name for the prefix);
//! - `manifests/sha256:<hex>`: manifests by digest;
//! - `manifests/<hex cache key>`: manifests of pinned sources, by what they were built from;
//! - `builds/<hex layer key>`: which blob a layer's store paths became.
//!
//! Writes always go to `staging/` first and are moved to their key only when complete, so a
//! failed or abandoned upload never leaves anything under a digest. The backends are a closed
//! enum (attic's shape): the filesystem now, object stores later.

mod filesystem;
mod keys;

pub use filesystem::Filesystem;
pub use keys::ObjectKey;

use bytes::Bytes;
use futures::stream::BoxStream;
use std::path::PathBuf;

/// A stream of bytes to upload.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Storage failures. Carries the key involved, never an HTTP concept.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O on {key}: {source}")]
    Io { key: String, source: std::io::Error },
}

/// How a client gets an object's bytes.
#[derive(Debug)]
pub enum Download {
    /// A local file the server streams itself.
    File { path: PathBuf, len: u64 },
}

/// An upload that reached staging and is not yet visible; dropping it discards it.
#[derive(Debug)]
pub enum Staged {
    Filesystem(filesystem::StagedFile),
}

/// The configured backend.
pub enum Storage {
    Filesystem(Filesystem),
}

impl Storage {
    /// Uploads `body` under a fresh staging key.
    pub async fn stage(&self, body: ByteStream) -> Result<Staged, StorageError> {
        match self {
            Storage::Filesystem(fs) => fs.stage(body).await.map(Staged::Filesystem),
        }
    }

    /// Makes a staged upload visible under `key` (atomically replacing any previous object).
    pub async fn commit(&self, staged: Staged, key: &ObjectKey) -> Result<(), StorageError> {
        match (self, staged) {
            (Storage::Filesystem(fs), Staged::Filesystem(s)) => fs.commit(s, key).await,
        }
    }

    /// Stores a small object in full (through staging).
    pub async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StorageError> {
        let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
        let staged = self.stage(body).await?;
        self.commit(staged, key).await
    }

    /// Reads a small object in full; `None` if absent.
    pub async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, StorageError> {
        match self {
            Storage::Filesystem(fs) => fs.get(key).await,
        }
    }

    /// The size of an object; `None` if absent.
    pub async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StorageError> {
        match self {
            Storage::Filesystem(fs) => fs.size(key).await,
        }
    }

    /// How to serve an object; `None` if absent.
    pub async fn download(&self, key: &ObjectKey) -> Result<Option<Download>, StorageError> {
        match self {
            Storage::Filesystem(fs) => fs.download(key).await,
        }
    }
}
