//! Where blobs, manifests and build records live.
//!
//! Key layout (the same for every backend):
//! - `staging/<started>-<unique>`: uploads in progress, never served;
//! - `layers/sha256:<hex>`: layer and config blobs (Nixery's name for the prefix);
//! - `manifests/sha256:<hex>`: manifests by digest;
//! - `manifests/<hex cache key>`: manifests of pinned sources, by what they were built from;
//! - `builds/<hex layer key>`: which blob a layer's store paths became;
//! - `recipes/sha256:<hex>`: how a manifest, index or blob is made again once collected;
//! - `served/sha256:<hex>`: when a manifest or index was last served (its modification time);
//! - `leases/<hex image key>`: which replica builds an image now.
//!
//! Writes always go to `staging/` first and are moved to their key only when complete, so a
//! failed or abandoned upload never leaves anything under a digest. A layer's digest is known
//! only when its archive stream ends, so [`Storage::upload`] takes the key as a future that
//! resolves after the body has been staged; the staged upload never leaves that call.
//!
//! Each backend implements [`StorageBackend`] (native `async fn`; attic's shape):
//! - [`Filesystem`]: a local directory; blobs are streamed by this server;
//! - [`Gcs`]: a Google Cloud Storage bucket (JSON API), shareable by replicas;
//! - [`S3`]: an S3 bucket (or an S3-compatible store), shareable by replicas;
//! - [`Memory`]: a map in memory, for tests.
//!
//! Callers hold the configured one as [`Storage`], a closed enum dispatched in one place
//! (`dispatch!` below): adding a backend is a module, a variant and a line there. A closed
//! enum rather than `dyn`: the trait's generic `upload` and its `Staged` type make it
//! dyn-incompatible, and the set of backends is fixed at compile time anyway.
//!
//! Failures are [`StorageError`]s (operation, key, [`ErrorKind`]) with the backend's own error
//! as their source; set-up failures are [`SetupError`]s. A [`Download`] says how a client gets
//! an object: redirected to the bucket (a signed URL, or the public URL of a GCS object when
//! no signing key is configured) or streamed through this server (the filesystem, memory, and
//! object stores configured to proxy).

mod backend;
mod download;
mod error;
mod filesystem;
mod gcs;
mod keys;
mod memory;
mod objects;
mod s3;

pub use backend::StorageBackend;
pub use download::{Download, Stream};
pub use error::{BackendError, ErrorKind, Op, SetupError, StorageError};
pub use filesystem::Filesystem;
pub use gcs::{Gcs, GcsConfig};
#[cfg(test)]
pub(crate) use keys::staging_name;
pub use keys::{ObjectKey, Prefix, staging_started};
pub use memory::Memory;
pub use objects::{Generation, Listing, ObjectInfo, Upload, Versioned};
pub use s3::{S3, S3Config};

use bytes::Bytes;
use futures::stream::BoxStream;
use std::future::Future;
use std::ops::Range;
use std::time::SystemTime;

/// A stream of bytes to upload or serve.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// The configured backend.
#[derive(Clone)]
pub enum Storage {
    Filesystem(Filesystem),
    Gcs(Gcs),
    S3(S3),
    Memory(Memory),
}

/// Runs `$call` with `$backend` bound to whichever backend `$storage` is.
macro_rules! dispatch {
    ($storage:expr, $backend:ident => $call:expr) => {
        match $storage {
            Storage::Filesystem($backend) => $call,
            Storage::Gcs($backend) => $call,
            Storage::S3($backend) => $call,
            Storage::Memory($backend) => $call,
        }
    };
}

/// The operations of [`StorageBackend`] that callers use, on whichever backend is configured.
impl Storage {
    /// See [`StorageBackend::upload`].
    pub async fn upload<T, E, F>(&self, body: ByteStream, finish: F) -> Result<T, E>
    where
        F: Future<Output = Result<(ObjectKey, T), E>> + Send,
        T: Send,
        E: From<StorageError> + Send,
    {
        dispatch!(self, b => b.upload(body, finish).await)
    }

    /// See [`StorageBackend::put`].
    pub async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StorageError> {
        dispatch!(self, b => b.put(key, bytes).await)
    }

    /// See [`StorageBackend::get`].
    pub async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, StorageError> {
        dispatch!(self, b => b.get(key).await)
    }

    /// See [`StorageBackend::size`].
    pub async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StorageError> {
        dispatch!(self, b => b.size(key).await)
    }

    /// See [`StorageBackend::read`].
    pub async fn read(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<Option<ByteStream>, StorageError> {
        dispatch!(self, b => b.read(key, range).await)
    }

    /// See [`StorageBackend::ping`].
    pub async fn ping(&self) -> Result<(), StorageError> {
        dispatch!(self, b => b.ping().await)
    }

    /// See [`StorageBackend::download`].
    pub async fn download(&self, key: &ObjectKey) -> Result<Option<Download>, StorageError> {
        dispatch!(self, b => b.download(key).await)
    }

    /// See [`StorageBackend::list`].
    pub fn list(&self, prefix: Prefix) -> Listing {
        dispatch!(self, b => b.list(prefix))
    }

    /// See [`StorageBackend::info`].
    pub async fn info(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StorageError> {
        dispatch!(self, b => b.info(key).await)
    }

    /// See [`StorageBackend::delete`].
    pub async fn delete(&self, keys: &[ObjectKey]) -> Result<(), StorageError> {
        dispatch!(self, b => b.delete(keys).await)
    }

    /// See [`StorageBackend::create`].
    pub async fn create(&self, key: &ObjectKey, bytes: Bytes) -> Result<Option<Generation>, StorageError> {
        dispatch!(self, b => b.create(key, bytes).await)
    }

    /// See [`StorageBackend::replace`].
    pub async fn replace(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        current: &Generation,
    ) -> Result<Option<Generation>, StorageError> {
        dispatch!(self, b => b.replace(key, bytes, current).await)
    }

    /// See [`StorageBackend::read_versioned`].
    pub async fn read_versioned(&self, key: &ObjectKey) -> Result<Option<Versioned>, StorageError> {
        dispatch!(self, b => b.read_versioned(key).await)
    }

    /// See [`StorageBackend::unfinished_uploads`].
    pub async fn unfinished_uploads(&self, before: SystemTime) -> Result<Vec<Upload>, StorageError> {
        dispatch!(self, b => b.unfinished_uploads(before).await)
    }

    /// See [`StorageBackend::abort_upload`].
    pub async fn abort_upload(&self, upload: &Upload) -> Result<(), StorageError> {
        dispatch!(self, b => b.abort_upload(upload).await)
    }

    /// Which backend this is, for logs and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Storage::Filesystem(_) => "filesystem",
            Storage::Gcs(_) => "gcs",
            Storage::S3(_) => "s3",
            Storage::Memory(_) => "memory",
        }
    }
}
