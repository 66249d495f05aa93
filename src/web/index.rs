//! `GET /`: how to pull from this server, what it builds from, and what it did recently.
//!
//! - **Pull instructions** name the server as the client reached it: the `Host` header (a
//!   value that is not a plain `host[:port]` is replaced by a placeholder, so the page never
//!   shows a command that would not work). The server itself speaks plain HTTP, so the
//!   commands carry each client's plain-HTTP switch, unless a TLS proxy in front says the
//!   request came over HTTPS (`X-Forwarded-Proto: https`).
//! - **Package source**: what is configured, with credentials of remote URLs shown as `***`
//!   (as in logs); a local path is not shown at all (no server path in an answer). The
//!   revision is what `latest` resolved to last, as the resolution cache knows it: showing
//!   the page resolves nothing (no `git` per page view).
//! - **Recent builds and failures** come from [`crate::activity`]. A failure shows what a
//!   pulling client was told (the registry's message for it: Nix's cause, no server path).

use super::layout::{duration, flake_revision, moment, page, size};
use crate::activity::{BuildRecord, FailureRecord, ImageId};
use crate::cache::KnownRevision;
use crate::image::Tag;
use crate::pkgsource::{Channel, PkgSource, SourceRevision};
use crate::registry::RegistryError;
use crate::{AppState, builder::BuildError};
use axum::http::{HeaderMap, StatusCode, header};
use maud::{Markup, html};
use std::time::SystemTime;

/// Shown instead of a `Host` header that is not a plain host name or address.
const HOST_PLACEHOLDER: &str = "<this-server>";

/// How a client reached the server.
#[derive(Debug, PartialEq, Eq)]
pub struct Reached {
    /// `host[:port]` as the client named it.
    pub host: String,
    /// Whether the connection was plain HTTP (no TLS proxy in front said otherwise).
    pub plain_http: bool,
}

impl Reached {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).filter(|h| plain_host(h));
        let proto = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok());
        let https = proto.and_then(|p| p.split(',').next()).is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        Reached { host: host.unwrap_or(HOST_PLACEHOLDER).to_owned(), plain_http: !https }
    }
}

/// A host name, IPv4 address or bracketed IPv6 address, with an optional port.
fn plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        && !host.starts_with(['-', '.', ':'])
}

/// The pull commands of each client, for `image` on this server.
pub fn pull_commands(reached: &Reached, image: &str) -> Markup {
    let reference = format!("{}/{image}", reached.host);
    let (podman_flag, ctr_flag) = if reached.plain_http { (" --tls-verify=false", " --plain-http") } else { ("", "") };
    html! {
        pre {
            "docker pull " (reference) "\n"
            "podman pull" (podman_flag) " " (reference) "\n"
            "ctr images pull" (ctr_flag) " " (reference) ":latest"
        }
        @if reached.plain_http {
            p.note {
                "This server speaks plain HTTP: Docker pulls from it only if it is listed in "
                code { "insecure-registries" } " of " code { "/etc/docker/daemon.json" }
                " (addresses in 127.0.0.0/8 are allowed without it)."
            }
        }
    }
}

pub fn render(state: &AppState, headers: &HeaderMap) -> Markup {
    let builder = &state.builder;
    let reached = Reached::from_headers(headers);
    let known = builder.sources().known(&Tag::latest());
    let now = SystemTime::now();
    let content = html! {
        p { "Every image name is a list of Nix packages: ask for one and it is built on the spot." }
        h2 { "Pull an image" }
        (pull_commands(&reached, "shell/git"))
        p.note {
            code { "shell" } " adds bash, coreutils, moreutils and nano; "
            code { "arm64" } " builds for aarch64-linux; every other path component is a package. "
            "A tag other than " code { "latest" } " selects a branch or commit of the package source."
        }
        h2 { "Package source" }
        (source(builder.sources().source(), known.as_ref(), now))
        h2 { "SBOMs and signatures" }
        (verification(builder.public_key(), &reached))
        h2 { "Recent builds" }
        (builds(&builder.activity().builds(), now))
        h2 { "Recent failures" }
        (failures(&builder.activity().failures(), now))
    };
    page("Nixery", content)
}

/// How to check what this registry serves: every image has an SPDX SBOM as an OCI referrer;
/// with a signing key, the public key (also at `/cosign.pub`) and the cosign commands.
fn verification(public_key: Option<&str>, reached: &Reached) -> Markup {
    let image = format!("{}/shell/git", reached.host);
    let insecure = if reached.plain_http { " --allow-insecure-registry --allow-http-registry" } else { "" };
    let oras_flag = if reached.plain_http { " --plain-http" } else { "" };
    let scheme = if reached.plain_http { "http" } else { "https" };
    html! {
        p { "Every image has an SPDX SBOM, attached as an OCI referrer:" }
        pre { "oras discover" (oras_flag) " " (image) }
        @match public_key {
            Some(pem) => {
                p { "Every image and index is signed (cosign's format); its SBOM is also a signed attestation. The public key, also at " a href="/cosign.pub" { "/cosign.pub" } ":" }
                pre.key { (pem.trim_end()) }
                pre {
                    "curl -O " (scheme) "://" (reached.host) "/cosign.pub\n"
                    "cosign verify --key cosign.pub --insecure-ignore-tlog=true" (insecure) " " (image) "\n"
                    "cosign verify-attestation --type spdxjson --key cosign.pub --insecure-ignore-tlog=true" (insecure) " " (image)
                }
            }
            None => p.note { "This registry signs nothing (no " code { "NIXERY_SIGNING_KEY" } ")." }
        }
    }
}

fn source(configured: &PkgSource, known: Option<&KnownRevision>, now: SystemTime) -> Markup {
    html! {
        dl.facts {
            @match configured {
                PkgSource::Channel { repo, channel } => {
                    dt { "nixpkgs channel" }
                    dd { code { (channel.as_str()) } @if matches!(channel, Channel::Commit(_)) { " (a pinned commit)" } }
                    dt { "repository" } dd { code { (repo.redacted()) } }
                }
                PkgSource::Git(url) => { dt { "git repository" } dd { code { (url.redacted()) } } }
                PkgSource::Path(_) => {
                    dt { "local package set" }
                    dd.muted { "a directory or file on the server (its path is not shown)" }
                }
                PkgSource::Flake(flake) => { dt { "flake" } dd { code { (flake.shown()) } } }
            }
            dt { "latest is" }
            dd { (revision(known, now)) }
        }
    }
}

fn revision(known: Option<&KnownRevision>, now: SystemTime) -> Markup {
    let Some(known) = known else {
        return html! { span.muted { "no resolution kept: the next pull of latest resolves it" } };
    };
    html! {
        @match known.revision.as_ref() {
            SourceRevision::Channel { commit, .. } | SourceRevision::Git { commit, .. } => { "commit " code { (commit.as_str()) } }
            SourceRevision::Path { generation, .. } => { "the files as read (reading " (generation) ")" }
            SourceRevision::Flake(locked) => { (flake_revision(locked)) }
        }
        @if let Some(at) = known.resolved_at {
            ", resolved " (moment(at, now))
            @if known.expired { span.muted { " (expired: the next pull resolves again)" } }
        } @else {
            span.muted { ", pinned by the configuration" }
        }
    }
}

/// The `/ui/` page of `id`: its canonical name, and the commit it was built from as the tag
/// (which selects exactly that revision, so the page shows the recorded plan however the
/// branch moved since), else `tag` (a local path's `latest`).
pub fn ui_link(id: &ImageId, tag: Option<&Tag>) -> String {
    let name = id.spec.canonical_name();
    let tag = id.source.commit().map(|c| c.as_str()).or(tag.map(Tag::as_str)).unwrap_or("latest");
    if tag == "latest" { format!("/ui/{name}") } else { format!("/ui/{name}?tag={tag}") }
}

fn builds(records: &[std::sync::Arc<BuildRecord>], now: SystemTime) -> Markup {
    if records.is_empty() {
        return html! { p.muted { "No image was built since the server started." } };
    }
    html! {
        div.scroll { table.builds {
            thead { tr {
                th { "image" } th { "tag" } th { "built" } th.num { "took" } th.num { "layers" } th.num { "size" }
            } }
            tbody {
                @for b in records {
                    @let name = b.image.id.spec.canonical_name();
                    tr {
                        td { a href=(ui_link(&b.image.id, Some(&b.tag))) { (name) } }
                        td { code { (b.tag.as_str()) } }
                        td { (moment(b.finished, now)) }
                        td.num { (duration(b.took)) }
                        td.num { (b.blobs.len()) }
                        td.num { (size(b.size())) }
                    }
                }
            }
        } }
    }
}

/// What the registry told the client about `error`: its status and message (the server's
/// own faults, logged when they happened, are "internal error" there and here).
pub fn client_view(error: &BuildError) -> (StatusCode, String) {
    let answer = match error {
        BuildError::Nix(nix) => RegistryError::from(nix),
        _ => RegistryError::internal(),
    };
    (answer.status, answer.message)
}

fn failures(records: &[std::sync::Arc<FailureRecord>], now: SystemTime) -> Markup {
    if records.is_empty() {
        return html! { p.muted { "No build failed since the server started." } };
    }
    html! {
        div.scroll { table.failures {
            thead { tr { th { "image" } th { "tag" } th { "failed" } th { "status" } th { "message" } } }
            tbody {
                @for f in records {
                    @let (status, message) = client_view(&f.error);
                    tr.failure {
                        td.nowrap { code { (f.id.spec.canonical_name()) } }
                        td.nowrap { code { (f.tag.as_str()) } }
                        td.nowrap { (moment(f.failed, now)) }
                        td.status { (status.as_u16()) }
                        td { pre.error-message { (message) } }
                    }
                }
            }
        } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn reached(host: Option<&str>, proto: Option<&str>) -> Reached {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        }
        if let Some(p) = proto {
            headers.insert("x-forwarded-proto", HeaderValue::from_str(p).unwrap());
        }
        Reached::from_headers(&headers)
    }

    #[test]
    fn the_host_is_taken_as_the_client_named_it_if_it_is_a_host() {
        assert_eq!(reached(Some("registry.example:8080"), None).host, "registry.example:8080");
        assert_eq!(reached(Some("[::1]:5000"), None).host, "[::1]:5000");
        for odd in ["a b", "<x>", "evil\"", "-x", "host/path"] {
            assert_eq!(reached(Some(odd), None).host, HOST_PLACEHOLDER, "{odd}");
        }
        assert_eq!(reached(None, None).host, HOST_PLACEHOLDER);
    }

    #[test]
    fn plain_http_switches_are_shown_unless_a_proxy_says_https() {
        let plain = pull_commands(&reached(Some("h:1"), None), "shell/git").into_string();
        assert!(plain.contains("ctr images pull --plain-http h:1/shell/git:latest"), "{plain}");
        assert!(plain.contains("podman pull --tls-verify=false h:1/shell/git"), "{plain}");
        let tls = pull_commands(&reached(Some("h"), Some("https")), "git").into_string();
        assert!(tls.contains("ctr images pull h/git:latest") && !tls.contains("insecure-registries"), "{tls}");
        let placeholder = pull_commands(&reached(None, None), "git").into_string();
        assert!(placeholder.contains("docker pull &lt;this-server&gt;/git"), "escaped: {placeholder}");
    }

    #[test]
    fn links_to_image_pages_pin_the_commit_an_image_was_built_from() {
        use crate::image::{ImageName, ImageSpec};
        use crate::pkgsource::{CommitHash, RemoteUrl};
        let spec = ImageSpec::from_name(&ImageName::parse("git/shell").unwrap());
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let url = RemoteUrl::new("https://example.org/pkgs");
        let pinned = SourceRevision::Git { url, commit: CommitHash::parse(commit).unwrap() };
        let id = |source| ImageId { source: std::sync::Arc::new(source), spec: spec.clone() };
        let branch = Tag::parse("main").unwrap();
        assert_eq!(ui_link(&id(pinned), Some(&branch)), format!("/ui/shell/git?tag={commit}"));
        let path = || SourceRevision::Path { path: "/srv/pkgs".into(), generation: 2 };
        assert_eq!(ui_link(&id(path()), Some(&Tag::latest())), "/ui/shell/git");
        assert_eq!(ui_link(&id(path()), None), "/ui/shell/git");
    }

    #[test]
    fn sources_are_shown_without_credentials_or_server_paths() {
        let url = crate::pkgsource::RemoteUrl::new("https://user:s3cret@git.example/pkgs.git");
        let shown = source(&PkgSource::Git(url), None, SystemTime::now()).into_string();
        assert!(shown.contains("https://***@git.example/pkgs.git") && !shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("no resolution kept"), "{shown}");
        let path = source(&PkgSource::Path("/srv/secret-place/pkgs".into()), None, SystemTime::now()).into_string();
        assert!(!path.contains("secret-place"), "{path}");
        let flake = |text: &str| crate::pkgsource::FlakeRef::parse(text, std::path::Path::new("/")).unwrap();
        let shown =
            source(&PkgSource::Flake(flake("git+https://u:s3cret@h/flake")), None, SystemTime::now()).into_string();
        assert!(shown.contains("git+https://***@h/flake") && !shown.contains("s3cret"), "{shown}");
        let local = source(&PkgSource::Flake(flake("path:/srv/secret-place")), None, SystemTime::now()).into_string();
        assert!(!local.contains("secret-place") && local.contains("flake"), "{local}");
    }

    #[test]
    fn a_flakes_latest_names_its_commit_and_nixpkgs() {
        use crate::pkgsource::{CommitHash, FlakeLock, FlakeRef, LockedFlake};
        let commit = CommitHash::parse(&"c".repeat(40)).unwrap();
        let locked = LockedFlake {
            flake: FlakeRef::parse("github:o/r", std::path::Path::new("/")).unwrap(),
            lock: FlakeLock::Commit(commit.clone()),
            nixpkgs: CommitHash::parse(&"d".repeat(40)),
            last_modified: None,
        };
        let known = KnownRevision {
            revision: std::sync::Arc::new(SourceRevision::Flake(locked)),
            resolved_at: Some(SystemTime::now()),
            expired: false,
        };
        let shown = revision(Some(&known), SystemTime::now()).into_string();
        assert!(
            shown.contains(&"c".repeat(40)) && shown.contains(&format!("nixpkgs at <code>{}", "d".repeat(40))),
            "{shown}"
        );
    }
}
