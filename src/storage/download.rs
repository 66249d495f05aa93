//! How a client gets an object's bytes (attic's `Download`): sent to a URL of the store, or
//! streamed by this server. The answer is in storage terms only: the HTTP layer decides what
//! a request's `Range` means and asks the [`Stream`] for exactly those bytes, so every
//! streamed backend is served by one piece of HTTP code and none hands out a file path.

use super::{ByteStream, ErrorKind, ObjectKey, Op, StorageBackend, StorageError};
use futures::future::BoxFuture;
use std::fmt;
use std::ops::Range;

/// How to serve an object.
#[derive(Debug)]
pub enum Download {
    /// Send the client here: a time-limited signed URL, or a public URL, of the object.
    Redirect { url: String, len: u64 },
    /// Stream the object through this server.
    Stream(Stream),
}

type Open = Box<dyn FnOnce(Option<Range<u64>>) -> BoxFuture<'static, Result<ByteStream, StorageError>> + Send>;

/// The bytes of one object of a known size, read when asked for: all of them or a range.
pub struct Stream {
    len: u64,
    open: Open,
}

impl Stream {
    /// The object under `key` of `backend`, `len` bytes long, read through
    /// [`StorageBackend::read`].
    pub fn of<B: StorageBackend>(backend: &B, key: &ObjectKey, len: u64) -> Stream {
        let (backend, key) = (backend.clone(), key.clone());
        let open: Open = Box::new(move |range| {
            Box::pin(async move {
                let gone = || StorageError::new(Op::Read, &key, ErrorKind::NotFound, "gone since it was looked up");
                backend.read(&key, range).await?.ok_or_else(gone)
            })
        });
        Stream { len, open }
    }

    /// The object's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The object's bytes: all of them, or the half-open `range`, which must lie within the
    /// object.
    pub async fn bytes(self, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
        (self.open)(range).await
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").field("len", &self.len).finish_non_exhaustive()
    }
}
