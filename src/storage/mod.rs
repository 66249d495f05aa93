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
mod s3;

pub use backend::StorageBackend;
pub use download::{Download, Stream};
pub use error::{BackendError, ErrorKind, Op, SetupError, StorageError};
pub use filesystem::Filesystem;
pub use gcs::{Gcs, GcsConfig};
pub use keys::ObjectKey;
pub use memory::Memory;
pub use s3::{S3, S3Config};

use bytes::Bytes;
use futures::stream::BoxStream;
use std::future::Future;
use std::ops::Range;

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
}
