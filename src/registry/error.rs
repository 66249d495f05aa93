//! Registry errors: every failure becomes the distribution spec's JSON body
//! `{"errors":[{"code","message","detail"}]}` with the right status and, for failures of the
//! requested image, a reason phrase that carries the cause, in this one place.
//!
//! # What each client shows, and so which status
//!
//! Measured with the four clients users pull with (README's error table has their lines):
//! docker, podman and skopeo print the JSON `message` of any 4xx answer and nothing of a 5xx
//! body; containerd (`ctr`, the kubelet) resolves a tag with HEAD, so it never sees a body, and
//! prints only "not found" for a 404, dropping the reason phrase, while for any other status it
//! prints the status line, reason phrase included. All four print a custom reason phrase.
//!
//! So a failure of the requested image — names the package set lacks or refuses (with
//! nixpkgs' reason), an evaluation error (with the culprit), a failed build (its derivation
//! and last log line), paths no binary cache has while local builds are off, an untrusted
//! signature, a Nix timeout, a tag that selects no package set — is **422 Unprocessable
//! Content** with code `MANIFEST_UNKNOWN` (the spec's code for a manifest that cannot be
//! had), the cause as `message`, its structured data as `detail`, and the cause again as the
//! reason phrase ([`super::reason`]), so that every client's user reads it. Not 404: a user of
//! Kubernetes would read only "not found". HEAD answers carry the same status and phrase.
//!
//! What stays: 404 for a digest or path this registry does not know, 400 for a malformed
//! name, tag or digest, 405/406/412/416 as the spec says. Faults of the server itself (storage
//! down, a Nix failure this server cannot classify, a bug) are 500, no free Nix job slot
//! within NIX_TIMEOUT and an unreachable package source 503 and 502: with the standard reason
//! phrase and a body that names no internal detail; the detail goes to the log, once, where
//! the failure happened ([`crate::builder`]; [`crate::cache::sources`] for the source).
//! Messages never carry URL credentials ([`crate::redact`]) or the server's file paths (Nix's
//! messages are scrubbed by [`crate::nix`]; source messages here name no URL).
//!
//! Access ([`crate::auth`]): 401 `UNAUTHORIZED` with the `WWW-Authenticate` challenge (no
//! credentials where they are needed, or credentials that do not hold), 403 `DENIED` for a
//! client that is known but may not (a token without the name, a package the package policy
//! refuses: naming the package and the rule), 429 `TOOMANYREQUESTS` with `Retry-After` over
//! the build rate. 403 and 429 carry their message as the reason phrase too, for containerd.

use crate::builder::{BuildError, ManifestError};
use crate::image::NameError;
use crate::manifest::{Unreadable, Unservable};
use crate::nix::NixError;
use crate::pkgsource::SourceError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::ext::ReasonPhrase;
use serde_json::{Value, json};

use super::reason;

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
    /// The registry cannot serve now (Docker's distribution uses it with 503).
    Unavailable,
    /// Authentication required (401, with a `WWW-Authenticate` challenge).
    Unauthorized,
    /// Access denied to an authenticated client (403).
    Denied,
    /// Too many requests (429, with `Retry-After`).
    TooManyRequests,
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
            Code::Unavailable => "UNAVAILABLE",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
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
    /// A reason phrase of its own (already one line of visible ASCII), or the standard one.
    pub reason: Option<String>,
    /// When to ask again (`Retry-After`, in seconds), for an answer that says "not now".
    pub retry_after: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401 (boxed: errors travel in `Result`s).
    pub challenge: Option<Box<HeaderValue>>,
}

impl RegistryError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        RegistryError {
            status,
            code,
            message: message.into(),
            detail: Value::Null,
            reason: None,
            retry_after: None,
            challenge: None,
        }
    }

    /// A failure of the requested image: 422 `MANIFEST_UNKNOWN`, the message also as the
    /// reason phrase (see the module docs).
    pub fn image_failure(message: impl Into<String>) -> Self {
        let message = message.into();
        let reason = reason::phrase(&message);
        RegistryError {
            reason: Some(reason),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, Code::ManifestUnknown, message)
        }
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    /// `cause` (any text) as the reason phrase.
    pub fn with_reason(mut self, cause: &str) -> Self {
        self.reason = Some(reason::phrase(cause));
        self
    }

    /// `Retry-After`: the client may ask again after `wait` (in whole seconds, at least one:
    /// `0` would say "now").
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait.as_secs().max(1));
        self
    }

    /// 401 `UNAUTHORIZED` with the `WWW-Authenticate` challenge that says how to log in.
    pub fn unauthorized(message: impl Into<String>, challenge: HeaderValue) -> Self {
        let challenge = Some(Box::new(challenge));
        RegistryError { challenge, ..Self::new(StatusCode::UNAUTHORIZED, Code::Unauthorized, message) }
    }

    /// 403 `DENIED`, the message also as the reason phrase (containerd shows only that).
    pub fn denied(message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(StatusCode::FORBIDDEN, Code::Denied, message.clone()).with_reason(&message)
    }

    /// 429 `TOOMANYREQUESTS` with when to ask again, the message also as the reason phrase.
    pub fn too_many_requests(message: impl Into<String>, wait: std::time::Duration) -> Self {
        let message = message.into();
        Self::new(StatusCode::TOO_MANY_REQUESTS, Code::TooManyRequests, message.clone())
            .with_reason(&message)
            .retry_after(wait)
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

    /// A storage fault while `doing` something: the server's, logged here with its cause and
    /// answered as [`RegistryError::internal`] (the cause may name a bucket or a path).
    pub fn storage_fault(doing: &str, e: &crate::storage::StorageError) -> Self {
        tracing::error!(error = %e, "{doing}");
        Self::internal()
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

/// Distribution's answer to a client that does not accept the only format a manifest exists
/// in ("OCI manifest found, but accept header does not support OCI manifests"): 404
/// `MANIFEST_UNKNOWN`, whose message Docker, skopeo and podman print.
impl From<Unreadable> for RegistryError {
    fn from(e: Unreadable) -> Self {
        Self::new(StatusCode::NOT_FOUND, Code::ManifestUnknown, e.to_string())
    }
}

/// A client that refuses both formats gets 406 (RFC 9110 §15.5.7), before anything is built.
impl From<Unservable> for RegistryError {
    fn from(e: Unservable) -> Self {
        match e {
            Unservable::Refused => Self::new(StatusCode::NOT_ACCEPTABLE, Code::Unsupported, e.to_string()),
            Unservable::Unreadable(unreadable) => unreadable.into(),
        }
    }
}

/// Server faults were logged where they happened ([`crate::builder`]): here they only become
/// the generic answer.
impl From<&BuildError> for RegistryError {
    fn from(e: &BuildError) -> Self {
        match e {
            BuildError::Nix(nix) => nix.into(),
            BuildError::Layer(layer) => layer.as_ref().into(),
            BuildError::Platform(platform, error) => for_platform(*platform, error),
            BuildError::Storage(_) | BuildError::Archive(_) | BuildError::Task(_) => Self::internal(),
        }
    }
}

/// One platform's failure: that platform's answer, its message and reason phrase naming it.
fn for_platform(platform: crate::image::Arch, error: &BuildError) -> RegistryError {
    let mut answer = RegistryError::from(error);
    answer.message = format!("{}: {}", platform.platform(), answer.message);
    if let Some(reason) = &answer.reason {
        answer.reason = Some(reason::phrase(&format!("{}: {reason}", platform.platform())));
    }
    if let Value::Object(detail) = &mut answer.detail {
        detail.insert("platform".to_owned(), platform.platform().into());
    }
    answer
}

impl From<&ManifestError> for RegistryError {
    fn from(e: &ManifestError) -> Self {
        match e {
            ManifestError::Source(source) => source.as_ref().into(),
            ManifestError::Build(build) => build.as_ref().into(),
            // One platform of an index: that platform's answer, its message naming it.
        }
    }
}

/// A tag that selects nothing is a failure of the requested image (422, naming the tag, not
/// the remote: its URL may be a server path). A remote that cannot be asked is not the
/// image's fault: 502 without git's message, which is in the log.
impl From<&SourceError> for RegistryError {
    fn from(e: &SourceError) -> Self {
        match e {
            SourceError::UnknownRef { reference, .. } => {
                Self::image_failure(format!("the package source has no branch or tag '{reference}'"))
            }
            SourceError::PathTag(_) => Self::image_failure(e.to_string()),
            SourceError::Remote { reference, .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                Code::Unknown,
                format!("the package source could not be asked for '{reference}', see the server log"),
            ),
            SourceError::Timeout { reference, seconds, .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                Code::Unknown,
                format!("the package source did not resolve '{reference}' within {seconds} s"),
            ),
            SourceError::Spawn(_) => Self::internal(),
            // What the tag selects could not be fetched: Nix's reason (without credentials or
            // server paths) is the answer. The server cannot tell a commit that does not exist
            // from a forge that does not answer, and Nix's words say which.
            SourceError::Flake { .. } => Self::image_failure(e.to_string()),
        }
    }
}

/// A Nix failure of the image: 422 with Nix's message (which names each cause, and no server
/// path), its structured data as `detail` and [`headline`] as the reason phrase. No Nix job
/// slot in time: 503 with `Retry-After` as long as the image waited (NIX_TIMEOUT): every image
/// holding a slot now has at most that long left before its deadline, so by then one is
/// free. The server's own faults: 500, generic. Packages the package policy refuses: 403
/// `DENIED`, naming each package and rule.
impl From<&NixError> for RegistryError {
    fn from(nix: &NixError) -> Self {
        if let NixError::Refused(refused) = nix {
            return Self::denied(refused.to_string()).with_detail(nix.detail());
        }
        if nix.is_image_failure() {
            return Self::image_failure(nix.to_string()).with_detail(nix.detail()).with_reason(&headline(nix));
        }
        match nix {
            NixError::Busy(busy) => Self::new(StatusCode::SERVICE_UNAVAILABLE, Code::Unknown, nix.to_string())
                .with_detail(nix.detail())
                .retry_after(busy.waited),
            _ => Self::internal(),
        }
    }
}

/// The cause of an image's Nix failure in the words that fit a status line: a failed build
/// as the derivation's name (without its hash) and its last log line; a build Nix will not
/// run and a refusal for want of a cache in their own short words; every other failure as
/// its message, whose first words are its cause.
fn headline(nix: &NixError) -> String {
    let build = match nix {
        NixError::Build(build) => build,
        NixError::Unbuildable(unbuildable) => return unbuildable.headline(),
        NixError::NotSubstitutable(refusal) => return refusal.headline(),
        _ => return nix.to_string(),
    };
    let what = build.derivation.as_ref().map(|d| d.name().trim_end_matches(".drv").to_owned());
    let mut line = format!("build of {} failed", what.as_deref().unwrap_or("the packages"));
    if !build.packages.is_empty() {
        line.push_str(&format!(" (needed by {})", build.packages.join(", ")));
    }
    if let Some(last) = build.log_tail.iter().rev().map(|l| l.trim()).find(|l| !l.is_empty()) {
        line.push_str(": ");
        line.push_str(last);
    }
    line
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
        if let Some(phrase) = self.reason.and_then(|r| ReasonPhrase::try_from(r.into_bytes()).ok()) {
            resp.extensions_mut().insert(phrase);
        }
        if let Some(seconds) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.challenge {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, *challenge);
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::PackageName;
    use crate::nix::{BuildFailure, PackageProblems, StorePath};
    use std::sync::Arc;

    fn phrase_of(e: RegistryError) -> (StatusCode, Option<String>, String) {
        let resp = e.into_response();
        let phrase =
            resp.extensions().get::<ReasonPhrase>().map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned());
        (resp.status(), phrase, format!("{:?}", resp.headers()))
    }

    #[test]
    fn a_failed_build_is_422_with_the_derivation_and_last_line_on_the_status_line() {
        let drv = StorePath::parse(&format!("/nix/store/{}-broken-1.0.drv", "a".repeat(32))).unwrap();
        let nix = NixError::Build(BuildFailure {
            derivation: Some(drv),
            packages: vec![PackageName::parse("broken").unwrap()],
            log_tail: vec!["compiling broken...".into(), "error: this package is broken on purpose".into(), "".into()],
        });
        let e = RegistryError::from(&nix);
        assert_eq!((e.status, e.code), (StatusCode::UNPROCESSABLE_ENTITY, Code::ManifestUnknown));
        assert_eq!(e.detail["packages"][0], "broken");
        let (status, phrase, _) = phrase_of(e);
        assert_eq!(status, 422);
        assert_eq!(
            phrase.as_deref(),
            Some("build of broken-1.0 failed (needed by broken): error: this package is broken on purpose")
        );
    }

    #[test]
    fn every_failure_of_the_image_is_422_with_its_message_as_the_phrase() {
        let missing = NixError::Packages(PackageProblems {
            missing: vec![PackageName::parse("nosuchpkg").unwrap()],
            ..Default::default()
        });
        let timeout = NixError::Timeout { step: crate::nix::Step::Realise, seconds: 2 };
        for nix in [missing, timeout] {
            let (status, phrase, _) = phrase_of(RegistryError::from(&nix));
            assert_eq!(status, 422, "{nix}");
            assert_eq!(phrase, Some(nix.to_string()));
        }
    }

    /// The issue-17 case: an index whose arm64 image this Nix cannot build is the image's
    /// failure, naming the platform, the system, the package and what would help.
    #[test]
    fn a_platform_nix_cannot_build_for_is_the_images_failure() {
        use crate::nix::{Need, Unbuildable};
        let drv = StorePath::parse(&format!("/nix/store/{}-native-1.0.drv", "a".repeat(32))).unwrap();
        let nix = NixError::Unbuildable(Unbuildable {
            derivation: Some(drv),
            packages: vec![PackageName::parse("native").unwrap()],
            more_builds: 0,
            need: Need::Machine {
                system: "aarch64-linux".into(),
                foreign_system: true,
                missing_features: vec![],
                host_system: Some("x86_64-linux".into()),
                host_features: None,
            },
        });
        let platform = BuildError::Platform(crate::image::Arch::Arm64, Arc::new(BuildError::Nix(nix)));
        let e = RegistryError::from(&platform);
        assert_eq!((e.status, e.code), (StatusCode::UNPROCESSABLE_ENTITY, Code::ManifestUnknown));
        assert!(e.message.starts_with("linux/arm64: cannot build /nix/store/"), "{}", e.message);
        assert!(e.message.contains("extra-platforms = aarch64-linux with binfmt"), "{}", e.message);
        assert_eq!((&e.detail["platform"], &e.detail["system"]), (&json!("linux/arm64"), &json!("aarch64-linux")));
        let (_, phrase, _) = phrase_of(e);
        let phrase = phrase.unwrap();
        assert!(
            phrase.starts_with("linux/arm64: cannot build native-1.0 for aarch64-linux (needed by native)"),
            "{phrase}"
        );
    }

    #[test]
    fn server_faults_are_generic() {
        let unwritable = NixError::StoreNotWritable {
            step: crate::nix::Step::Evaluate,
            message: "remounting /nix/store writable: Invalid argument".into(),
        };
        let e = RegistryError::from(&unwritable);
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error, see the server log")
        );
        assert!(
            unwritable.to_string().contains("the Nix store cannot be written"),
            "the log says it plainly: {unwritable}"
        );

        let source = serde_json::from_str::<u8>("/srv/secret-path").unwrap_err();
        let nix = NixError::Output { step: crate::nix::Step::QueryGraph, source };
        let e = RegistryError::from(&nix);
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.message, "internal error, see the server log");
        assert!(e.detail.is_null());
        let (_, phrase, _) = phrase_of(e);
        assert_eq!(phrase, None, "the standard reason phrase");

        let remote = SourceError::Remote {
            remote: "file:///srv/pkgs".into(),
            reference: crate::pkgsource::RemoteRef::Head,
            message: "fatal: '/srv/pkgs' does not appear to be a git repository".into(),
        };
        let e = RegistryError::from(&remote);
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(!e.message.contains("/srv"), "{}", e.message);
        let unknown = SourceError::UnknownRef {
            remote: "file:///srv/pkgs".into(),
            reference: crate::pkgsource::RemoteRef::Named("v9".into()),
        };
        let e = RegistryError::from(&unknown);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.message, "the package source has no branch or tag 'v9'");
    }

    #[test]
    fn a_full_nix_queue_is_503_with_when_to_ask_again() {
        use std::time::Duration;
        let busy = NixError::Busy(crate::nix::Busy { waited: Duration::from_millis(2300), limit: 2 });
        let resp = RegistryError::from(&busy).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2", "the wait, in whole seconds");
        let short = RegistryError::new(StatusCode::TOO_MANY_REQUESTS, Code::Unknown, "x").retry_after(Duration::ZERO);
        assert_eq!(short.into_response().headers()[header::RETRY_AFTER], "1", "never 0: that says now");
        let (_, _, headers) = phrase_of(RegistryError::internal());
        assert!(!headers.contains("retry-after"), "{headers}");
    }
}
