//! Parsing `/v2/...` paths into endpoints.
//!
//! Repository names contain slashes, and their components are package names, so any word can
//! be one: `blobs`, `uploads`, `manifests`, `tags` and `referrers` are all possible packages.
//! Routes therefore cannot be matched from the left; the endpoint is the *last* segments of
//! the path and everything before them is the name (distribution-spec v1.1.1, "Endpoints"):
//!
//! | last segments                | endpoint                                       |
//! |------------------------------|------------------------------------------------|
//! | `manifests/<reference>`      | a manifest (end-3)                             |
//! | `blobs/<digest>`             | a blob (end-2)                                 |
//! | `tags/list`                  | the tag list (end-8a, end-8b)                  |
//! | `referrers/<digest>`         | the referrers of a manifest (end-12a, end-12b) |
//! | `blobs/uploads/` (empty last)| starting an upload (end-4a), push              |
//! | `blobs/uploads/<id>`         | an upload session (end-5, end-6, end-13), push |
//!
//! The first four are decided by the second-to-last segment, the uploads by the two before
//! the last being `blobs/uploads`; both cannot hold at once (`uploads` is not one of the four
//! words), so no path has two readings. `hello/blobs/uploads/manifests/latest` is the
//! manifest of the image `hello/blobs/uploads`, `blobs/uploads/blobs/<digest>` a blob, and
//! only `<name>/blobs/uploads/` and `<name>/blobs/uploads/<id>` are uploads. A path that ends
//! in none of these (`hello/blobs/uploads` without the slash is `blobs/<digest>` with the
//! digest `uploads`) is no endpoint.
//!
//! The name is checked by [`ImageName`] for every endpoint, the digest by [`Digest`]: a bad
//! one is 400 `NAME_INVALID` / `DIGEST_INVALID` (the referrers section asks for 400 on an
//! invalid digest). A manifest reference that is neither a tag nor a digest names no manifest:
//! 404 `MANIFEST_UNKNOWN`, as the endpoint table gives only 404 as end-3's failure and the
//! conformance suite asks of `.INVALID_MANIFEST_NAME` (pull workflow, "nonexistent
//! manifest"). `TAG_INVALID` is a push code ("Legacy Docker support error codes"), and this
//! registry takes no pushes.
//!
//! Paths arrive percent-encoded. They are decoded as a whole (so `%2F` separates segments, as
//! in distribution and axum's own `Path`), and bytes that are not UTF-8 become U+FFFD: every
//! grammar here is ASCII, so such a segment fails the check of whatever part it is in and gets
//! that part's error (a name with `%FF` is `NAME_INVALID`), never a plain-text rejection.

use super::error::{Code, RegistryError};
use crate::digest::Digest;
use crate::image::{ImageName, NameError, Reference};
use axum::http::StatusCode;
use percent_encoding::percent_decode_str;

/// A request under `/v2/`.
#[derive(Debug)]
pub enum Endpoint {
    Manifest {
        name: ImageName,
        reference: Reference,
    },
    /// Blobs are content-addressed: the (checked) name plays no part in finding them, only
    /// in who may read them.
    Blob {
        name: ImageName,
        digest: Digest,
    },
    Tags {
        name: ImageName,
    },
    /// The referrers of the manifest `digest` as an image of `name`.
    Referrers {
        name: ImageName,
        digest: Digest,
    },
    /// Blob upload endpoints (`/blobs/uploads/`, `/blobs/uploads/<id>`): push, which is not
    /// supported.
    Upload {
        name: ImageName,
    },
}

impl Endpoint {
    /// The repository name the request is about.
    pub fn name(&self) -> &ImageName {
        match self {
            Endpoint::Manifest { name, .. }
            | Endpoint::Blob { name, .. }
            | Endpoint::Tags { name }
            | Endpoint::Referrers { name, .. }
            | Endpoint::Upload { name } => name,
        }
    }
}

/// The endpoint of `path`, the part of the request path after `/v2/`, still percent-encoded.
pub fn parse(path: &str) -> Result<Endpoint, RegistryError> {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let path = decoded.as_ref();

    // The last two segments, and what comes before them.
    let mut parts = path.rsplitn(3, '/');
    let last = parts.next().unwrap_or_default();
    let kind = parts.next();
    let before = parts.next().unwrap_or_default();
    match kind {
        Some("manifests") => {
            let name = ImageName::parse(before)?;
            return Ok(Endpoint::Manifest { name, reference: reference(last)? });
        }
        Some("blobs") => {
            let name = ImageName::parse(before)?;
            return Ok(Endpoint::Blob { name, digest: digest(last)? });
        }
        Some("tags") if last == "list" => return Ok(Endpoint::Tags { name: ImageName::parse(before)? }),
        Some("referrers") => {
            let name = ImageName::parse(before)?;
            return Ok(Endpoint::Referrers { name, digest: digest(last)? });
        }
        _ => {}
    }
    if kind == Some("uploads")
        && let Some(name) = before.strip_suffix("/blobs").or((before == "blobs").then_some(""))
    {
        return Ok(Endpoint::Upload { name: ImageName::parse(name)? });
    }
    Err(no_endpoint(&format!("/v2/{path}")))
}

/// 404 for a path that names nothing here. `UNSUPPORTED` ("the operation is unsupported"),
/// not `NAME_UNKNOWN`: every valid name exists here (images are built on demand), and a
/// client reading `NAME_UNKNOWN` would conclude the repository does not.
pub fn no_endpoint(path: &str) -> RegistryError {
    let shown: String = path.chars().take(200).collect();
    RegistryError::new(StatusCode::NOT_FOUND, Code::Unsupported, format!("no registry endpoint at {shown}"))
}

fn digest(s: &str) -> Result<Digest, RegistryError> {
    s.parse().map_err(|e| NameError::from(e).into())
}

/// A tag or a digest; anything else names no manifest (404, see the module docs).
fn reference(s: &str) -> Result<Reference, RegistryError> {
    Reference::parse(s).map_err(|e| match e {
        NameError::BadTag(_) => RegistryError::new(
            StatusCode::NOT_FOUND,
            Code::ManifestUnknown,
            format!("'{s}' is neither a tag nor a digest, so it names no manifest ({e})"),
        ),
        other => other.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> String {
        format!("sha256:{}", "a".repeat(64))
    }

    /// The name of a manifest endpoint, or a description of what `path` parsed to.
    fn manifest_name(path: &str) -> String {
        match parse(path) {
            Ok(Endpoint::Manifest { name, .. }) => name.as_str().to_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn finds_endpoints_from_the_right() {
        let Endpoint::Manifest { name, reference } = parse("shell/git/manifests/latest").unwrap() else { panic!() };
        assert_eq!(name.as_str(), "shell/git");
        assert!(matches!(reference, Reference::Tag(t) if t.as_str() == "latest"));

        let d = digest();
        let Endpoint::Blob { name, digest } = parse(&format!("a/b/blobs/{d}")).unwrap() else { panic!() };
        assert_eq!(name.as_str(), "a/b");
        assert_eq!(digest.to_string(), d);
        assert!(
            matches!(parse(&format!("a/referrers/{d}")), Ok(Endpoint::Referrers { name, .. }) if name.as_str() == "a")
        );

        assert!(matches!(parse("hello/tags/list"), Ok(Endpoint::Tags { .. })));
        assert!(matches!(parse("hello/blobs/uploads/"), Ok(Endpoint::Upload { .. })));
        assert!(matches!(parse("a/b/blobs/uploads/5f0e-11"), Ok(Endpoint::Upload { .. })));
    }

    #[test]
    fn endpoint_words_are_package_names_too() {
        let d = digest();
        // Names made of endpoint words are pulled like any other.
        for (path, name) in [
            ("blobs/uploads/manifests/latest", "blobs/uploads"),
            ("x/blobs/uploads/y/manifests/latest", "x/blobs/uploads/y"),
            ("hello/blobs/uploads/manifests/latest", "hello/blobs/uploads"),
            ("manifests/manifests/latest", "manifests"),
            ("uploads/blobs/manifests/latest", "uploads/blobs"),
            ("tags/list/manifests/latest", "tags/list"),
            ("referrers/manifests/latest", "referrers"),
            ("blobs/uploads/x/manifests/uploads", "blobs/uploads/x"),
        ] {
            assert_eq!(manifest_name(path), name, "{path}");
        }
        assert!(matches!(parse(&format!("x/blobs/uploads/blobs/{d}")), Ok(Endpoint::Blob { .. })));
        assert!(matches!(parse(&format!("blobs/uploads/referrers/{d}")), Ok(Endpoint::Referrers { .. })));
        assert!(
            matches!(parse("blobs/uploads/tags/list"), Ok(Endpoint::Tags { name }) if name.as_str() == "blobs/uploads")
        );

        // Only `<name>/blobs/uploads/` and `<name>/blobs/uploads/<id>` are uploads, whatever
        // the name and the id.
        for upload in [
            "x/blobs/uploads/",
            "x/blobs/uploads/manifests",
            "blobs/uploads/blobs/uploads/",
            "manifests/blobs/uploads/latest",
        ] {
            assert!(matches!(parse(upload), Ok(Endpoint::Upload { .. })), "{upload}: {:?}", parse(upload));
        }
        // Not uploads: the name is missing or bad, or the path ends elsewhere.
        let code = |p: &str| parse(p).unwrap_err().code;
        assert_eq!(code("blobs/uploads/"), Code::NameInvalid);
        assert_eq!(code("bad..name/blobs/uploads/"), Code::NameInvalid);
        assert_eq!(code("x/blobs/uploads"), Code::DigestInvalid, "blobs/<digest> with the digest `uploads`");
        assert_eq!(code("x/blobs/uploads/a/b"), Code::Unsupported);
        assert_eq!(code("x/uploads/a"), Code::Unsupported);
    }

    #[test]
    fn maps_bad_parts_to_codes() {
        let status = |p: &str| {
            let e = parse(p).unwrap_err();
            (e.status.as_u16(), e.code)
        };
        assert_eq!(status("bad..name/manifests/latest"), (400, Code::NameInvalid));
        assert_eq!(status("manifests/latest"), (400, Code::NameInvalid));
        assert_eq!(status("hello/manifests/sha256:123"), (400, Code::DigestInvalid));
        assert_eq!(status("hello/blobs/sha256:xyz"), (400, Code::DigestInvalid));
        assert_eq!(status("hello/blobs/md5:abc"), (400, Code::DigestInvalid));
        assert_eq!(status("hello/referrers/sha256:xyz"), (400, Code::DigestInvalid));
        assert_eq!(status("bad..name/referrers/sha256:xyz"), (400, Code::NameInvalid));
        // References that are neither tags nor digests name no manifest.
        for tag in [".INVALID_MANIFEST_NAME", "-tag", "", &"a".repeat(129), "a%20b"] {
            assert_eq!(status(&format!("hello/manifests/{tag}")), (404, Code::ManifestUnknown), "{tag:?}");
        }
        // No endpoint.
        for path in ["hello/whatever", "hello/manifests/latest/", "hello/tags/all", "", "hello"] {
            assert_eq!(status(path), (404, Code::Unsupported), "{path:?}");
        }
    }

    #[test]
    fn decodes_percent_escapes_and_never_fails_on_bytes() {
        assert_eq!(manifest_name("shell%2Fgit/manifests/latest"), "shell/git");
        let d = digest().replace(':', "%3A");
        assert!(matches!(parse(&format!("x/blobs/{d}")), Ok(Endpoint::Blob { .. })));
        let code = |p: &str| parse(p).unwrap_err().code;
        assert_eq!(code("hello%FF/manifests/latest"), Code::NameInvalid);
        assert_eq!(code("hello/manifests/%FF"), Code::ManifestUnknown);
        assert_eq!(code("hello/blobs/sha256%3A%FF"), Code::DigestInvalid);
        assert_eq!(code("hello/%FF/x"), Code::Unsupported);
    }
}
