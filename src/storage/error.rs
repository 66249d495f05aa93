//! Storage errors in the domain's terms: which operation on which key failed, and what kind of
//! failure it was. What exactly went wrong is the backend's own error type (an `io::Error`,
//! `gcs::GcsError`, `s3::S3Error`), kept as the `source`, so reqwest, object_store and
//! google-cloud-auth types never leave their backend modules and callers branch on the
//! [`ErrorKind`] alone. Setting a backend up fails with a [`SetupError`], built the same way.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// A backend's own error, kept as the source of a domain error.
pub type BackendError = Box<dyn Error + Send + Sync>;

/// The step of a storage operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Uploading to `staging/`.
    Upload,
    /// Moving a staged upload to its key.
    Commit,
    /// Removing an object.
    Delete,
    /// Listing the objects under a prefix.
    List,
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
            Op::List => "list",
            Op::Read => "read",
            Op::Stat => "stat",
            Op::Sign => "sign",
        })
    }
}

/// What kind of failure, as far as a caller can act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The stream handed to an upload failed: the caller's side, not the store's.
    Body,
    /// An object the operation needs is not there (a lookup of an absent key is not an error:
    /// it answers `None`).
    NotFound,
    /// The store could not be reached, timed out, or failed on its side (5xx, 429, a local
    /// I/O error); the same request may succeed later.
    Unavailable,
    /// The store refused the request: credentials, permissions, a failed precondition, a full
    /// disk, a request it does not accept.
    Rejected,
    /// The store's answer contradicts the request: unreadable, or holding other bytes than
    /// were sent.
    Integrity,
}

/// A failed storage operation. Carries the key involved (a `staging/` name for uploads),
/// never a filesystem path or an HTTP concept of this server.
#[derive(Debug, thiserror::Error)]
#[error("{op} {key}: {source}")]
pub struct StorageError {
    op: Op,
    key: String,
    kind: ErrorKind,
    source: BackendError,
}

impl StorageError {
    pub fn new(op: Op, key: impl fmt::Display, kind: ErrorKind, source: impl Into<BackendError>) -> Self {
        StorageError { op, key: key.to_string(), kind, source: source.into() }
    }

    /// The body of the upload to `key` failed.
    pub fn body(key: impl fmt::Display, source: std::io::Error) -> Self {
        Self::new(Op::Upload, key, ErrorKind::Body, source)
    }

    pub fn op(&self) -> Op {
        self.op
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Why a backend could not be set up (at start-up).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the bucket name is empty")]
    EmptyBucket,
    #[error("signed URL lifetime {0:?} must be between 1 second and 7 days")]
    UrlTtl(Duration),
    /// The backend's own reason (credentials, client set-up, the storage directory).
    #[error(transparent)]
    Backend(BackendError),
}

impl SetupError {
    /// The backend's reason, if it is of type `E`.
    pub fn backend<E: Error + 'static>(&self) -> Option<&E> {
        match self {
            SetupError::Backend(e) => e.downcast_ref(),
            _ => None,
        }
    }
}

/// The checks every bucket backend makes of its configuration.
pub(crate) fn check_bucket(bucket: &str, url_ttl: Duration) -> Result<(), SetupError> {
    if bucket.trim().is_empty() {
        return Err(SetupError::EmptyBucket);
    }
    if url_ttl < Duration::from_secs(1) || url_ttl > Duration::from_secs(7 * 86_400) {
        return Err(SetupError::UrlTtl(url_ttl));
    }
    Ok(())
}

/// The kind of a local I/O failure.
pub(crate) fn io_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as Io;
    match e.kind() {
        Io::NotFound => ErrorKind::NotFound,
        Io::PermissionDenied | Io::ReadOnlyFilesystem | Io::StorageFull | Io::QuotaExceeded | Io::FileTooLarge => {
            ErrorKind::Rejected
        }
        Io::InvalidData | Io::UnexpectedEof => ErrorKind::Integrity,
        _ => ErrorKind::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_operation_key_and_cause() {
        let e = StorageError::new(Op::Commit, "layers/sha256:ab", ErrorKind::Rejected, "no write access");
        assert_eq!(e.to_string(), "commit layers/sha256:ab: no write access");
        assert_eq!((e.op(), e.key(), e.kind()), (Op::Commit, "layers/sha256:ab", ErrorKind::Rejected));
        assert_eq!(Error::source(&e).unwrap().to_string(), "no write access");
        let body = StorageError::body("staging/x", std::io::Error::other("writer failed"));
        assert_eq!((body.op(), body.kind()), (Op::Upload, ErrorKind::Body));
    }

    #[test]
    fn bucket_settings_are_checked() {
        assert!(matches!(check_bucket(" ", Duration::from_secs(300)), Err(SetupError::EmptyBucket)));
        assert!(matches!(check_bucket("b", Duration::from_millis(10)), Err(SetupError::UrlTtl(_))));
        assert!(matches!(check_bucket("b", Duration::from_secs(8 * 86_400)), Err(SetupError::UrlTtl(_))));
        assert!(check_bucket("b", Duration::from_secs(7 * 86_400)).is_ok());
    }

    #[test]
    fn io_failures_have_kinds() {
        let kind = |k| io_kind(&std::io::Error::from(k));
        assert_eq!(kind(std::io::ErrorKind::NotFound), ErrorKind::NotFound);
        assert_eq!(kind(std::io::ErrorKind::PermissionDenied), ErrorKind::Rejected);
        assert_eq!(kind(std::io::ErrorKind::StorageFull), ErrorKind::Rejected);
        assert_eq!(kind(std::io::ErrorKind::Interrupted), ErrorKind::Unavailable);
    }
}
