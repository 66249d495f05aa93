//! Registry errors: every failure becomes the distribution spec's JSON body
//! `{"errors":[{"code","message","detail"}]}` with the right status, in this one place.
//! Internal details (storage paths, I/O errors) are logged, not sent.

use crate::build::{BuildError, ManifestError};
use crate::image::NameError;
use crate::nix::NixError;
use crate::pkgsource::SourceError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Error codes of the distribution spec (plus `UNKNOWN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadUnknown,
    ManifestUnknown,
    NameInvalid,
    TagInvalid,
    DigestInvalid,
    Unsupported,
    NameUnknown,
    Unknown,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::TagInvalid => "TAG_INVALID",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::Unsupported => "UNSUPPORTED",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::Unknown => "UNKNOWN",
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct RegistryError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub detail: Value,
}

impl RegistryError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        RegistryError { status, code, message: message.into(), detail: Value::Null }
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    pub fn unsupported(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::Unsupported,
            format!("{method} is not supported: this registry builds images, it does not accept pushes or deletes"),
        )
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Unknown, "internal error, see the server log")
    }
}

impl From<NameError> for RegistryError {
    fn from(e: NameError) -> Self {
        let code = match e {
            NameError::EmptyName | NameError::NameTooLong | NameError::BadComponent(_) => Code::NameInvalid,
            NameError::BadTag(_) => Code::TagInvalid,
            NameError::BadDigest(_) => Code::DigestInvalid,
        };
        Self::new(StatusCode::BAD_REQUEST, code, e.to_string())
    }
}

impl From<&BuildError> for RegistryError {
    fn from(e: &BuildError) -> Self {
        match e {
            BuildError::Nix(nix) => nix.into(),
            other => {
                tracing::error!(error = %other, "image build failed");
                Self::internal()
            }
        }
    }
}

impl From<&ManifestError> for RegistryError {
    fn from(e: &ManifestError) -> Self {
        match e {
            ManifestError::Source(source) => source.as_ref().into(),
            ManifestError::Build(build) => build.as_ref().into(),
            // One platform of an index: that platform's answer, its message naming it.
            ManifestError::Platform { platform, error } => {
                let mut answer = RegistryError::from(error.as_ref());
                answer.message = format!("{}: {}", platform.platform(), answer.message);
                if let Value::Object(detail) = &mut answer.detail {
                    detail.insert("platform".to_owned(), platform.platform().into());
                }
                answer
            }
        }
    }
}

/// A tag that selects nothing is a failure of the requested image: 422 `MANIFEST_UNKNOWN`
/// naming the tag (clients show a 4xx answer's message). A remote that cannot be asked is
/// not the image's fault: 502, with git's (redacted) message.
impl From<&SourceError> for RegistryError {
    fn from(e: &SourceError) -> Self {
        match e {
            SourceError::UnknownRef { .. } | SourceError::PathTag(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, Code::ManifestUnknown, e.to_string())
            }
            SourceError::Remote { .. } | SourceError::Timeout { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, Code::Unknown, e.to_string())
            }
            SourceError::Spawn(_) => {
                tracing::error!(error = %e, "resolving the package source failed");
                Self::internal()
            }
        }
    }
}

/// A Nix failure: its message (which names each cause, and no server path) and its
/// structured data as `detail`. Statuses: 404 for names that are missing or refused, as
/// before; the kinds added with issue 9 (a name whose evaluation fails, a package set that
/// does not evaluate, not in any cache, an untrusted signature) 422, by the decided policy
/// for failures of the requested image; a failed build 500 and a timeout 504, as before;
/// no Nix job slot in time 503; the server's own faults 500.
impl From<&NixError> for RegistryError {
    fn from(nix: &NixError) -> Self {
        let (status, code) = match nix {
            NixError::Packages(p) if p.failing.is_empty() => (StatusCode::NOT_FOUND, Code::ManifestUnknown),
            NixError::Packages(_)
            | NixError::PackageSet { .. }
            | NixError::NotSubstitutable(_)
            | NixError::UntrustedSignature(_) => (StatusCode::UNPROCESSABLE_ENTITY, Code::ManifestUnknown),
            NixError::Build(_) => (StatusCode::INTERNAL_SERVER_ERROR, Code::Unknown),
            NixError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, Code::Unknown),
            NixError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, Code::Unknown),
            NixError::Command { .. } | NixError::Output { .. } | NixError::Graph(_) => {
                tracing::error!(error = %nix, "nix failed");
                (StatusCode::INTERNAL_SERVER_ERROR, Code::Unknown)
            }
        };
        Self::new(status, code, nix.to_string()).with_detail(nix.detail())
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if !self.detail.is_null() {
            error["detail"] = self.detail;
        }
        let body = json!({ "errors": [error] });
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}
