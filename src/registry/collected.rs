//! Answers about what garbage collection took ([`crate::gc`]): a manifest or blob asked for
//! by digest that is no longer stored is made again by the builder from its recipe
//! ([`crate::builder::Builder::manifest_by_digest`], [`crate::builder::Builder::blob_again`])
//! and served as if it had never gone. One that cannot be made again is 404 with the
//! spec's code (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`) and a message that says it was collected
//! and why it cannot come back, which docker, podman and skopeo print; a package that no
//! longer builds is such a reason (the build's message follows).

use super::blobs;
use super::error::{Code, RegistryError};
use crate::AppState;
use crate::builder::{ByDigest, RemakeError};
use crate::cache::recipes::Unmakeable;
use crate::digest::Digest;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

/// 404 for something this registry served once, collected since, that cannot be made again.
pub fn collected(code: Code, what: &str, digest: &Digest, why: &Unmakeable) -> RegistryError {
    RegistryError::new(
        StatusCode::NOT_FOUND,
        code,
        format!(
            "{what} {digest} was garbage-collected (not pulled within the retention) and cannot be made again: {why}"
        ),
    )
}

/// The answer to a failure of looking up `what` (a code's object) by `digest`: a failure
/// of the image while making it again (a package that no longer builds) is a reason it
/// cannot be made again; a fault of the server is answered as such.
pub fn failed(code: Code, what: &str, digest: &Digest) -> impl FnOnce(RemakeError) -> RegistryError {
    move |e| match e {
        RemakeError::Storage(e) => {
            tracing::error!(error = %e, "looking up by digest");
            RegistryError::internal()
        }
        RemakeError::Build(e) => {
            let answer = RegistryError::from(&e);
            if answer.status != StatusCode::UNPROCESSABLE_ENTITY {
                return answer;
            }
            let message = format!(
                "{what} {digest} was garbage-collected (not pulled within the retention) and cannot be made again: {}",
                answer.message
            );
            RegistryError { status: StatusCode::NOT_FOUND, code, message, reason: None, ..answer }
        }
    }
}

/// A blob: from storage, or made again if it was collected.
pub async fn blob(
    state: &AppState,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    match blobs::get(&state.storage, digest, head, headers).await {
        Err(e) if e.code == Code::BlobUnknown => {}
        answer => return answer,
    }
    match state.builder.blob_again(digest).await.map_err(failed(Code::BlobUnknown, "blob", digest))? {
        ByDigest::Found(()) => blobs::get(&state.storage, digest, head, headers).await,
        ByDigest::Unknown => Err(blobs::unknown(digest)),
        ByDigest::Collected(why) => Err(collected(Code::BlobUnknown, "blob", digest, &why)),
    }
}
