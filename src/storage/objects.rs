//! What storage says about objects beyond their bytes: listings (key, size, when last
//! written), generations of small objects that change under a condition, and the
//! unfinished uploads a store may keep.
//!
//! A generation names one version of an object: a write that says which generation it
//! replaces succeeds only if that is still the current one, so two replicas racing for the
//! same object cannot both win. Each backend has its own kind (a GCS object generation, an
//! S3 ETag, a counter in a file name on the filesystem); callers only compare and pass them
//! back, so the type is opaque.

use super::{ObjectKey, StorageError};
use bytes::Bytes;
use futures::stream::BoxStream;
use std::fmt;
use std::time::SystemTime;

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: ObjectKey,
    pub size: u64,
    /// When the object was last written (created, replaced or committed).
    pub modified: SystemTime,
}

/// The objects under a prefix, fetched page by page as the stream is read.
pub type Listing = BoxStream<'static, Result<ObjectInfo, StorageError>>;

/// One version of an object (opaque: compared and handed back, never interpreted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Generation(String);

impl Generation {
    pub(super) fn new(value: impl Into<String>) -> Self {
        Generation(value.into())
    }

    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A small object's bytes and the generation they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub bytes: Bytes,
    pub generation: Generation,
}

/// An upload the store keeps open until it is completed or aborted (an S3 multipart upload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The key it would complete to (a `staging/` name).
    pub key: String,
    /// The store's name for the upload.
    pub id: String,
    /// When it was started, by the store's clock.
    pub initiated: SystemTime,
}
