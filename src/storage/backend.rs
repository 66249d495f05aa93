//! What a storage backend implements (attic's `StorageBackend`, with native `async fn`).
//!
//! A backend provides four primitives, each on one key: [`stage`](StorageBackend::stage) an
//! upload under a fresh `staging/` name, [`commit`](StorageBackend::commit) it to its key,
//! look up a [`size`](StorageBackend::size), [`read`](StorageBackend::read) bytes,
//! [`ping`](StorageBackend::ping) the store (readiness); and, if
//! clients can fetch objects from the store itself, a [`url`](StorageBackend::url). Everything
//! callers use is built on them here, once: [`upload`](StorageBackend::upload) (stage, learn
//! the key, commit), [`put`](StorageBackend::put), [`get`](StorageBackend::get) and
//! [`download`](StorageBackend::download).
//!
//! Storage over time (garbage collection, [`crate::gc`]) and across replicas (build leases,
//! [`crate::lease`]) need more, each done by the store itself rather than built on the above:
//! - [`list`](StorageBackend::list) a prefix page by page, with sizes and modification times,
//!   and [`info`](StorageBackend::info) of one object;
//! - [`delete`](StorageBackend::delete) many objects in as few requests as the store allows;
//! - [`create`](StorageBackend::create) a small object only if it is absent,
//!   [`replace`](StorageBackend::replace) it only if it is still the generation read
//!   ([`read_versioned`](StorageBackend::read_versioned)): one atomic request each, so two
//!   replicas cannot both win;
//! - find and abort [`unfinished_uploads`](StorageBackend::unfinished_uploads), which only
//!   S3 keeps (multipart uploads never completed nor aborted).
//!
//! A staged upload is the backend's own [`Staged`](StorageBackend::Staged) type and never
//! leaves [`upload`](StorageBackend::upload), so an upload staged by one backend cannot be
//! committed by another: the type system rules it out rather than a runtime check.

use super::error::io_kind;
use super::{
    ByteStream, Download, Generation, Listing, ObjectInfo, ObjectKey, Op, Prefix, StorageError, Stream, Upload,
    Versioned,
};
use bytes::Bytes;
use futures::TryStreamExt;
use std::future::Future;
use std::ops::Range;
use std::time::SystemTime;

/// A place to keep objects under [`ObjectKey`]s. Cheap to clone (clones share the store).
pub trait StorageBackend: Clone + Send + Sync + 'static {
    /// An upload that reached `staging/` and is not yet visible; dropping it discards it.
    type Staged: Send;

    /// Uploads `body` under a fresh `staging/` name. A failing body fails the upload with
    /// [`ErrorKind::Body`](super::ErrorKind::Body) and leaves nothing behind.
    fn stage(&self, body: ByteStream) -> impl Future<Output = Result<Self::Staged, StorageError>> + Send;

    /// Makes a staged upload visible under `key`, atomically: the key holds nothing or
    /// everything. Two commits of the same bytes under the same key, from this or another
    /// replica, both succeed.
    fn commit(&self, staged: Self::Staged, key: &ObjectKey) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The size of an object; `None` if absent.
    fn size(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<u64>, StorageError>> + Send;

    /// Streams an object's bytes, all of them or the half-open `range` (which must lie within
    /// the object); `None` if absent.
    fn read(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> impl Future<Output = Result<Option<ByteStream>, StorageError>> + Send;

    /// Whether the store answers, cheaply (a readiness check calls it every few seconds):
    /// `Ok` if it does, the failure of a small request otherwise.
    fn ping(&self) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Every object whose key starts with `prefix`, with its size and modification time,
    /// fetched page by page as the stream is read: memory stays bounded however many objects
    /// there are. The order is the store's. Objects written or removed while the listing
    /// runs may or may not be in it.
    fn list(&self, prefix: Prefix) -> Listing;

    /// Size and modification time of one object; `None` if absent.
    fn info(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<ObjectInfo>, StorageError>> + Send;

    /// Removes objects, any number, in as few requests as the store allows; an absent one is
    /// no error. On the filesystem a `staging/` file that a live upload holds is left alone.
    fn delete(&self, keys: &[ObjectKey]) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Creates a small object only if there is none under `key`, atomically: its generation,
    /// or `None` if one exists (whoever made it).
    fn create(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
    ) -> impl Future<Output = Result<Option<Generation>, StorageError>> + Send;

    /// Replaces a small object only if it is still generation `current`, atomically: the new
    /// generation, or `None` if another write came first (or the object is gone).
    fn replace(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        current: &Generation,
    ) -> impl Future<Output = Result<Option<Generation>, StorageError>> + Send;

    /// A small object written by [`create`](StorageBackend::create) or
    /// [`replace`](StorageBackend::replace), with its generation; `None` if absent.
    fn read_versioned(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<Versioned>, StorageError>> + Send;

    /// Uploads under `staging/` that the store keeps open (never completed nor aborted) and
    /// that started before `before`. Only S3 has such uploads (multipart uploads); a GCS
    /// resumable session expires by itself within a week, and a filesystem upload is a file.
    fn unfinished_uploads(
        &self,
        _before: SystemTime,
    ) -> impl Future<Output = Result<Vec<Upload>, StorageError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Aborts an unfinished upload (its parts are freed).
    fn abort_upload(&self, _upload: &Upload) -> impl Future<Output = Result<(), StorageError>> + Send {
        async { Ok(()) }
    }

    /// A URL clients fetch an existing object from, or `None` to stream it through this
    /// server (the default).
    fn url(&self, _key: &ObjectKey) -> impl Future<Output = Result<Option<String>, StorageError>> + Send {
        async { Ok(None) }
    }

    /// Uploads `body` through `staging/` to the key `finish` names. `finish` runs once the
    /// body has been staged, so it can name a key that depends on the bytes (a digest known
    /// only when the stream ends); it is awaited even if staging failed, and the staging error
    /// wins, since it explains a producer's broken pipe. An error of `finish` discards the
    /// staged upload.
    fn upload<T, E, F>(&self, body: ByteStream, finish: F) -> impl Future<Output = Result<T, E>> + Send
    where
        F: Future<Output = Result<(ObjectKey, T), E>> + Send,
        T: Send,
        E: From<StorageError> + Send,
    {
        async move {
            let staged = self.stage(body).await;
            let finished = finish.await;
            let staged = staged?;
            let (key, value) = finished?;
            self.commit(staged, &key).await?;
            Ok(value)
        }
    }

    /// Stores a small object in full (through staging).
    fn put(&self, key: &ObjectKey, bytes: Bytes) -> impl Future<Output = Result<(), StorageError>> + Send {
        let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
        let key = key.clone();
        self.upload(body, async move { Ok::<_, StorageError>((key, ())) })
    }

    /// Reads a small object in full; `None` if absent.
    fn get(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<Bytes>, StorageError>> + Send {
        async move {
            let Some(body) = self.read(key, None).await? else { return Ok(None) };
            let chunks: Vec<Bytes> =
                body.try_collect().await.map_err(|e| StorageError::new(Op::Read, key, io_kind(&e), e))?;
            Ok(Some(match chunks.len() {
                1 => chunks.into_iter().next().expect("one chunk"),
                _ => chunks.concat().into(),
            }))
        }
    }

    /// How to serve an object: redirected to its [`url`](StorageBackend::url) if there is one,
    /// else streamed; `None` if absent. A URL is made only for an object that exists.
    fn download(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<Download>, StorageError>> + Send {
        async move {
            let Some(len) = self.size(key).await? else { return Ok(None) };
            Ok(Some(match self.url(key).await? {
                Some(url) => Download::Redirect { url, len },
                None => Download::Stream(Stream::of(self, key, len)),
            }))
        }
    }
}
