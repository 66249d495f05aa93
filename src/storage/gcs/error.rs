//! What goes wrong talking to Cloud Storage, as this backend's own types; the rest of the
//! server sees them only as the source of a [`StorageError`] or [`SetupError`].

use super::super::{ErrorKind, Op, SetupError, StorageError};
use google_cloud_auth::errors::CredentialsError;
use google_cloud_auth::signer::SigningError;
use reqwest::{Response, StatusCode};
use std::path::PathBuf;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    /// An answer with an unexpected status.
    #[error("the object store answered {status}: {message}")]
    Status { status: u16, message: String },
    /// The store could not be reached, or the connection broke.
    #[error("{0}")]
    Transport(#[source] reqwest::Error),
    /// An answer this client does not understand.
    #[error("unexpected answer from the object store: {0}")]
    Protocol(String),
    /// No access token could be obtained.
    #[error("no access token: {0}")]
    Credentials(#[source] CredentialsError),
    /// A download URL could not be signed.
    #[error("{0}")]
    Signing(#[source] SigningError),
}

impl GcsError {
    fn kind(&self) -> ErrorKind {
        match self {
            GcsError::Status { status: 404, .. } => ErrorKind::NotFound,
            GcsError::Status { status, .. } if *status == 408 || *status == 429 || *status >= 500 => {
                ErrorKind::Unavailable
            }
            GcsError::Status { .. } => ErrorKind::Rejected,
            GcsError::Transport(_) => ErrorKind::Unavailable,
            GcsError::Protocol(_) => ErrorKind::Integrity,
            GcsError::Credentials(e) if e.is_transient() => ErrorKind::Unavailable,
            GcsError::Signing(e) if e.is_transport() => ErrorKind::Unavailable,
            GcsError::Credentials(_) | GcsError::Signing(_) => ErrorKind::Rejected,
        }
    }

    pub(super) fn at(self, op: Op, key: &str) -> StorageError {
        StorageError::new(op, key, self.kind(), self)
    }
}

/// Why the client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GcsSetupError {
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
        source: SigningError,
    },
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

impl From<GcsSetupError> for SetupError {
    fn from(e: GcsSetupError) -> Self {
        SetupError::Backend(Box::new(e))
    }
}

/// A broken connection or body during `op` on `key`.
pub(super) fn transport(op: Op, key: &str) -> impl FnOnce(reqwest::Error) -> StorageError {
    move |e| GcsError::Transport(e).at(op, key)
}

/// An answer that makes no sense for `op` on `key`.
pub(super) fn protocol(op: Op, key: &str, detail: impl Into<String>) -> StorageError {
    GcsError::Protocol(detail.into()).at(op, key)
}

/// An error for an unexpected answer, with (the start of) its body.
pub(super) async fn status_error(op: Op, key: &str, resp: Response) -> StorageError {
    let status = resp.status().as_u16();
    let mut message = resp.text().await.unwrap_or_default();
    if message.len() > 500 {
        let mut cut = 500;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    GcsError::Status { status, message }.at(op, key)
}

/// Whether an answer is worth retrying.
pub(super) fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}
