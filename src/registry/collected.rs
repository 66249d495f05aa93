//! Answers about what garbage collection took ([`crate::gc`]): a manifest or blob asked for
//! by digest that is no longer stored is made again by the builder from its recipe
//! ([`crate::builder::Builder::manifest_by_digest`], [`crate::builder::Builder::blob_again`])
//! and served as if it had never gone. One that cannot be made again is 404 with the
//! spec's code (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`) and a message that says it was collected
//! and why it cannot come back, which docker, podman and skopeo print; a package that no
//! longer builds is such a reason (the build's message follows).

use super::Asked;
use super::blobs;
use super::error::{Code, RegistryError};
use crate::AppState;
use crate::auth::Identity;
use crate::builder::{ByDigest, RemakeError};
use crate::cache::recipes::Unmakeable;
use crate::digest::Digest;
use crate::image::ImageName;
use crate::storage::StorageError;
use axum::http::StatusCode;
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
        RemakeError::Storage(e) => RegistryError::storage_fault("looking up by digest", &e),
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

/// A blob of `name`: from storage, or made again if it was collected. With authentication
/// only if it is linked to `name` ([`crate::auth::links`]), else the answer is that of a
/// blob never seen; making it again is admitted like a build ([`super::guard`]).
pub async fn blob(
    state: &AppState,
    name: &ImageName,
    digest: &Digest,
    identity: &Identity,
    asked: &Asked<'_>,
) -> Result<Response, RegistryError> {
    let (head, headers) = (asked.head, asked.headers);
    let storage_fault = |e: StorageError| RegistryError::storage_fault("reading a blob's link or recipe", &e);
    if let Some(links) = state.guard.links()
        && !links.is_linked(name, digest).await.map_err(storage_fault)?
    {
        return Err(blobs::unknown(digest));
    }
    match blobs::get(&state.storage, digest, head, headers).await {
        Err(e) if e.code == Code::BlobUnknown => {}
        answer => return answer,
    }
    if state.guard.must_look_first(identity) && state.builder.would_remake_blob(digest).await.map_err(storage_fault)? {
        state.guard.admit_build(identity, name.as_str(), asked.peer, headers)?;
    }
    match state.builder.blob_again(digest).await.map_err(failed(Code::BlobUnknown, "blob", digest))? {
        ByDigest::Found(()) => blobs::get(&state.storage, digest, head, headers).await,
        ByDigest::Unknown => Err(blobs::unknown(digest)),
        ByDigest::Collected(why) => Err(collected(Code::BlobUnknown, "blob", digest, &why)),
    }
}
