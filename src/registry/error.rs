//! Registry errors: every failure becomes the distribution spec's JSON body
//! `{"errors":[{"code","message","detail"}]}` with the right status, in this one place.
//! Internal details (storage paths, I/O errors) are logged, not sent.

use crate::build::BuildError;
use crate::image::NameError;
use crate::nix::{NixError, ProcessError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Error codes of the distribution spec (plus `UNKNOWN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    ManifestUnknown,
    NameInvalid,
    TagInvalid,
    DigestInvalid,
    Unsupported,
    NameUnknown,
    /// The registry cannot serve now (Docker's distribution uses it with 503).
    Unavailable,
    Unknown,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::TagInvalid => "TAG_INVALID",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::Unsupported => "UNSUPPORTED",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::Unavailable => "UNAVAILABLE",
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
            BuildError::Nix(NixError::UnknownPackages { missing, unusable }) => {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!("packages not found: {}", missing.join(", ")));
                }
                if !unusable.is_empty() {
                    parts.push(format!(
                        "packages that are not derivations or fail to evaluate: {}",
                        unusable.join(", ")
                    ));
                }
                Self::new(StatusCode::NOT_FOUND, Code::ManifestUnknown, parts.join("; "))
                    .with_detail(json!({ "missing": missing, "unusable": unusable }))
            }
            BuildError::Nix(nix) => match nix.process() {
                Some(ProcessError::Timeout { seconds, .. }) => Self::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    Code::Unknown,
                    format!("building the image timed out after {seconds} s (NIX_TIMEOUT)"),
                ),
                Some(ProcessError::Failed { log_tail, .. }) => Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Unknown,
                    format!("{nix}: see detail for the end of the Nix log"),
                )
                .with_detail(json!({ "log": log_tail })),
                _ => {
                    tracing::error!(error = %nix, "nix failed");
                    Self::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Unknown, nix.to_string())
                }
            },
            other => {
                tracing::error!(error = %other, "image build failed");
                Self::internal()
            }
        }
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
