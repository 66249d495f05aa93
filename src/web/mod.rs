//! Pages for people: `GET /` ([`index`]: how to pull, the package source, recent builds and
//! failures) and `GET /ui/<image>[?tag=]` ([`image`]: the layer plan, drawn as bars).
//!
//! Why this shape:
//! - **Server-rendered HTML and one inline stylesheet**, no JavaScript and no external
//!   asset: the pages work offline, behind any proxy, in any browser, and a registry that
//!   serves no scripts has no script to be tricked into running.
//! - **Escaped everywhere**, by construction: pages are [`maud`] templates, which escape every
//!   spliced value (opting out takes `PreEscaped`, used only for the constant stylesheet).
//!   What reaches a page from outside is the `Host` header, names and tags (validated too),
//!   and failure messages from Nix (which may quote anything a package set says).
//! - **No secrets, no server paths**: the same rules as the registry's answers (source URLs
//!   redacted, a local package set's path not shown, failure messages as clients get them).
//! - **Bounded cost**: the index page reads memory only; `/ui/` of an image built or viewed
//!   recently reads memory only, and of any other image plans it under the Nix job limit
//!   without archiving, once however many ask ([`crate::activity`]).
//! - Answers are `text/html; charset=utf-8`, errors included (400 for a bad name or tag,
//!   and the registry's status for a failure of the image, e.g. 422 for unknown packages);
//!   HEAD gets GET's headers; other methods 405. The registry's JSON errors stay for `/v2/`.
//! - **The registry's rules** ([`crate::registry::guard`]): `/ui/<image>` needs the right to
//!   pull the name, and a page that has to plan (Nix runs) is a build: it obeys
//!   `NIXERY_ANONYMOUS`, `NIXERY_BUILD_RATE` and the package policy like a pull. Refusals are
//!   pages with the registry's status, and a 401 carries the challenge (a browser asks for
//!   the htpasswd user and password; it cannot get a token). With `NIXERY_ANONYMOUS=none` the
//!   start page needs credentials too.

mod image;
mod index;
mod layout;

use crate::AppState;
use crate::auth::Action;
use crate::image::{ImageName, ImageSpec, NameError, Tag};
use crate::registry::RegistryError;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use layout::{error_page, respond};
use percent_encoding::percent_decode_str;
use std::net::SocketAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index_page).fallback(method_not_allowed))
        .route("/ui", get(image_page).fallback(method_not_allowed))
        .route("/ui/", get(image_page).fallback(method_not_allowed))
        .route("/ui/{*name}", get(image_page).fallback(method_not_allowed))
        .route("/cosign.pub", get(public_key).fallback(method_not_allowed))
}

/// `GET /cosign.pub`: the signing key's public half (PEM), what `cosign verify --key` and
/// policy engines are given; 404 when the registry signs nothing.
async fn public_key(State(state): State<AppState>) -> Response {
    use axum::response::IntoResponse;
    match state.builder.public_key() {
        Some(pem) => {
            ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], pem.to_owned()).into_response()
        }
        None => error_page(
            StatusCode::NOT_FOUND,
            "This registry signs nothing: it has no signing key (NIXERY_SIGNING_KEY).",
        ),
    }
}

async fn index_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let allowed = async {
        let identity = state.guard.identify(&headers, None).await?;
        state.guard.check_browse(&identity)
    };
    if let Err(refused) = allowed.await {
        return refusal_page(refused);
    }
    respond(StatusCode::OK, index::render(&state, &headers))
}

/// A refusal of the registry's rules as a page, with its challenge (so that a browser asks
/// for the htpasswd user and password) and `Retry-After`.
fn refusal_page(refused: RegistryError) -> Response {
    let mut page = error_page(refused.status, &refused.message);
    if let Some(challenge) = refused.challenge {
        page.headers_mut().insert(header::WWW_AUTHENTICATE, *challenge);
    }
    if let Some(seconds) = refused.retry_after {
        page.headers_mut().insert(header::RETRY_AFTER, seconds.into());
    }
    page
}

async fn method_not_allowed() -> Response {
    error_page(StatusCode::METHOD_NOT_ALLOWED, "These pages are read-only: use GET or HEAD.")
}

/// Why a `/ui/` request names no image.
#[derive(Debug, thiserror::Error)]
enum UiRequestError {
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("the image name is not valid UTF-8 once percent-decoded")]
    NotUtf8,
}

/// The image name and tag of a `/ui/<name>?tag=<tag>` request.
fn parse_request(uri: &Uri) -> Result<(ImageName, Tag), UiRequestError> {
    let raw = uri.path().strip_prefix("/ui").unwrap_or_default().trim_matches('/');
    let name = percent_decode_str(raw).decode_utf8().map_err(|_| UiRequestError::NotUtf8)?;
    let name = ImageName::parse(&name)?;
    let tag = uri.query().unwrap_or_default().split('&').find_map(|pair| pair.strip_prefix("tag="));
    let tag = match tag {
        Some(t) => Tag::parse(&percent_decode_str(t).decode_utf8().map_err(|_| UiRequestError::NotUtf8)?)?,
        None => Tag::latest(),
    };
    Ok((name, tag))
}

async fn image_page(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let (name, tag) = match parse_request(&uri) {
        Ok(request) => request,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &format!("Not an image name this registry serves: {e}.")),
    };
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let planned = match plan(&state, &name, &tag, &headers, peer).await {
        Ok(planned) => planned,
        Err(refused) => return refusal_page(refused),
    };
    let activity = state.builder.activity();
    let built = activity.build_of(&planned.id);
    let sharers = activity.sharers(&planned);
    let reached = index::Reached::from_headers(&headers);
    let view = image::View {
        name: name.as_str(),
        tag: &tag,
        planned: &planned,
        built: built.as_deref(),
        sharers: &sharers,
        reached: &reached,
    };
    respond(StatusCode::OK, image::render(&view))
}

/// The plan of `name` at `tag` under the registry's rules: the right to pull the name; a
/// recorded plan is shown as it is, and planning anew runs Nix, so it is a build for the
/// anonymous mode, the build rate and (in Nix) the package policy.
async fn plan(
    state: &AppState,
    name: &ImageName,
    tag: &Tag,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<std::sync::Arc<crate::activity::PlannedImage>, RegistryError> {
    let (guard, builder) = (&state.guard, &state.builder);
    let identity = guard.identify(headers, Some(name.as_str())).await?;
    guard.check(&identity, name.as_str(), Action::Pull)?;
    let spec = ImageSpec::from_name(name);
    if guard.must_look_first(&identity)
        && let Some(recorded) = builder.recorded_plan(spec.clone(), tag).await.map_err(|e| RegistryError::from(&e))?
    {
        return Ok(recorded);
    }
    if guard.must_look_first(&identity) {
        guard.admit_build(&identity, name.as_str(), peer, headers)?;
    }
    builder.plan(spec, tag).await.map_err(|e| {
        let answer = RegistryError::from(&e);
        guard.count_build_answer(&answer);
        answer
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str) -> Result<(String, String), String> {
        parse_request(&uri.parse().unwrap())
            .map(|(n, t)| (n.as_str().to_owned(), t.as_str().to_owned()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ui_requests_name_an_image_and_maybe_a_tag() {
        assert_eq!(parse("/ui/shell/git"), Ok(("shell/git".into(), "latest".into())));
        assert_eq!(parse("/ui/shell/git/?tag=nixos-24.11"), Ok(("shell/git".into(), "nixos-24.11".into())));
        assert_eq!(parse("/ui/hello?x=1&tag=v1"), Ok(("hello".into(), "v1".into())));
        assert_eq!(parse("/ui/bash%49nteractive"), Ok(("bashInteractive".into(), "latest".into())));
        assert!(parse("/ui/").unwrap_err().contains("empty"));
        assert!(parse("/ui/a%3Cb").unwrap_err().contains("'a<b'"));
        assert!(parse("/ui/%ff").unwrap_err().contains("UTF-8"));
        assert!(parse("/ui/hello?tag=-x").unwrap_err().contains("tag '-x'"));
    }
}
