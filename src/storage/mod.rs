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
//! enum (attic's shape):
//! - [`Filesystem`]: a local directory; blobs are streamed by this server;
//! - [`Gcs`]: a Google Cloud Storage bucket (JSON API), shareable by replicas;
//! - [`S3`]: an S3 bucket (or an S3-compatible store), shareable by replicas.
//!
//! The object stores serve blobs by redirecting clients to the bucket (a signed URL, or the
//! public URL of a GCS object when no signing key is configured), or, when configured to
//! proxy, through this server ([`Download::Proxy`] + [`Storage::read`]).

mod filesystem;
mod gcs;
mod keys;
mod s3;

pub use filesystem::Filesystem;
pub use gcs::{Gcs, GcsConfig};
pub use keys::ObjectKey;
pub use s3::{S3, S3Config};

use bytes::Bytes;
use futures::stream::BoxStream;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// A stream of bytes to upload or serve.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// The step of a storage operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Uploading to `staging/`.
    Upload,
    /// Moving a staged upload to its key.
    Commit,
    /// Removing an object (a staged upload).
    Delete,
    /// Reading an object's bytes.
    Read,
    /// Looking up an object's size.
    Stat,
    /// Making a download URL.
    Sign,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Upload => "upload",
            Op::Commit => "commit",
            Op::Delete => "delete",
            Op::Read => "read",
            Op::Stat => "stat",
            Op::Sign => "sign",
        })
    }
}

/// Storage failures. Carries the key involved, never an HTTP concept of this server.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Local I/O, or the uploaded stream itself failed (the key is then the staging key).
    #[error("storage I/O on {key}: {source}")]
    Io { key: String, source: std::io::Error },
    /// The object store answered a request with an unexpected status.
    #[error("{op} {key}: the object store answered {status}: {message}")]
    Status { op: Op, key: String, status: u16, message: String },
    /// The object store could not be reached, or the connection broke.
    #[error("{op} {key}: {source}")]
    Transport {
        op: Op,
        key: String,
        #[source]
        source: reqwest::Error,
    },
    /// The object store answered with something this client does not understand.
    #[error("{op} {key}: unexpected answer from the object store: {detail}")]
    Protocol { op: Op, key: String, detail: String },
    /// A failure reported by the S3 client.
    #[error("{op} {key}: {source}")]
    ObjectStore {
        op: Op,
        key: String,
        #[source]
        source: object_store::Error,
    },
    /// No access token could be obtained for a request.
    #[error("{op} {key}: no access token: {source}")]
    Credentials {
        op: Op,
        key: String,
        #[source]
        source: google_cloud_auth::errors::CredentialsError,
    },
    /// A download URL could not be signed.
    #[error("signing a URL for {key}: {source}")]
    Signing {
        key: String,
        #[source]
        source: google_cloud_auth::signer::SigningError,
    },
    /// A [`Staged`] upload handed to a backend other than the one that made it.
    #[error("commit {key}: the upload was staged by another storage backend")]
    ForeignStaged { key: String },
    /// The backend could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// Why a backend could not be set up (at start-up).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the bucket name is empty")]
    EmptyBucket,
    #[error("emulator host {0:?} is not an http(s) URL or host:port")]
    EmulatorHost(String),
    #[error("credentials file {}: {source}", .path.display())]
    ReadCredentials { path: PathBuf, source: std::io::Error },
    #[error("credentials file {}: not JSON: {source}", .path.display())]
    ParseCredentials { path: PathBuf, source: serde_json::Error },
    #[error("credentials{}: {source}", .path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    BuildCredentials {
        path: Option<PathBuf>,
        #[source]
        source: google_cloud_auth::build_errors::Error,
    },
    #[error("credentials file {}: the service account key cannot sign: {source}", .path.display())]
    SigningKey {
        path: PathBuf,
        #[source]
        source: google_cloud_auth::signer::SigningError,
    },
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("S3 configuration: {0}")]
    S3(#[source] object_store::Error),
    #[error("signed URL lifetime {0:?} must be between 1 second and 7 days")]
    UrlTtl(std::time::Duration),
}

/// How a client gets an object's bytes.
#[derive(Debug)]
pub enum Download {
    /// A local file the server streams itself.
    File { path: PathBuf, len: u64 },
    /// Send the client here: a time-limited signed URL, or a public URL, of the object.
    Redirect { url: String, len: u64 },
    /// Stream the object through this server: its bytes come from [`Storage::read`].
    Proxy { len: u64 },
}

/// An upload that reached staging and is not yet visible; dropping it discards it.
#[derive(Debug)]
pub enum Staged {
    Filesystem(filesystem::StagedFile),
    Gcs(gcs::StagedObject),
    S3(s3::StagedObject),
}

/// The configured backend.
pub enum Storage {
    Filesystem(Filesystem),
    Gcs(Gcs),
    S3(S3),
}

impl Storage {
    /// Uploads `body` under a fresh staging key.
    pub async fn stage(&self, body: ByteStream) -> Result<Staged, StorageError> {
        match self {
            Storage::Filesystem(fs) => fs.stage(body).await.map(Staged::Filesystem),
            Storage::Gcs(gcs) => gcs.stage(body).await.map(Staged::Gcs),
            Storage::S3(s3) => s3.stage(body).await.map(Staged::S3),
        }
    }

    /// Makes a staged upload visible under `key` (atomically replacing any previous object).
    /// Two commits of the same bytes under the same key, from this or another replica, both
    /// succeed.
    pub async fn commit(&self, staged: Staged, key: &ObjectKey) -> Result<(), StorageError> {
        match (self, staged) {
            (Storage::Filesystem(fs), Staged::Filesystem(s)) => fs.commit(s, key).await,
            (Storage::Gcs(gcs), Staged::Gcs(s)) => gcs.commit(s, key).await,
            (Storage::S3(s3), Staged::S3(s)) => s3.commit(s, key).await,
            _ => Err(StorageError::ForeignStaged { key: key.to_string() }),
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
            Storage::Gcs(gcs) => gcs.get(key).await,
            Storage::S3(s3) => s3.get(key).await,
        }
    }

    /// The size of an object; `None` if absent.
    pub async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StorageError> {
        match self {
            Storage::Filesystem(fs) => fs.size(key).await,
            Storage::Gcs(gcs) => gcs.size(key).await,
            Storage::S3(s3) => s3.size(key).await,
        }
    }

    /// How to serve an object; `None` if absent.
    pub async fn download(&self, key: &ObjectKey) -> Result<Option<Download>, StorageError> {
        match self {
            Storage::Filesystem(fs) => fs.download(key).await,
            Storage::Gcs(gcs) => gcs.download(key).await,
            Storage::S3(s3) => s3.download(key).await,
        }
    }

    /// Streams an object's bytes, all of them or the half-open `range` (which must lie within
    /// the object); `None` if absent.
    pub async fn read(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<Option<ByteStream>, StorageError> {
        match self {
            Storage::Filesystem(fs) => fs.read(key, range).await,
            Storage::Gcs(gcs) => gcs.read(key, range).await,
            Storage::S3(s3) => s3.read(key, range).await,
        }
    }
}
