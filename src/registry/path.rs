//! Parsing `/v2/...` paths. Repository names contain slashes, so routes cannot be matched
//! segment by segment; the endpoint is found from the right (`/manifests/<ref>`,
//! `/blobs/<digest>`, `/tags/list`) and the rest is the name, checked by [`ImageName`].

use super::error::{Code, RegistryError};
use crate::digest::Digest;
use crate::image::{ImageName, NameError, Reference};
use axum::http::StatusCode;

/// A request under `/v2/`.
#[derive(Debug)]
pub enum Endpoint {
    Manifest {
        name: ImageName,
        reference: Reference,
    },
    /// Blobs are content-addressed: the (checked) name plays no part in finding them.
    Blob {
        digest: Digest,
    },
    Tags {
        name: ImageName,
    },
    /// Blob upload endpoints (`/blobs/uploads/...`): push, which is not supported.
    Upload,
}

pub fn parse(path: &str) -> Result<Endpoint, RegistryError> {
    if path.contains("/blobs/uploads") {
        return Ok(Endpoint::Upload);
    }
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Ok(Endpoint::Tags { name: ImageName::parse(name)? });
    }
    if let Some((name, reference)) = path.rsplit_once("/manifests/") {
        let name = ImageName::parse(name)?;
        if reference.is_empty() || reference.contains('/') {
            return Err(NameError::BadTag(reference.to_owned()).into());
        }
        return Ok(Endpoint::Manifest { name, reference: Reference::parse(reference)? });
    }
    if let Some((name, digest)) = path.rsplit_once("/blobs/") {
        ImageName::parse(name)?;
        let digest = digest.parse().map_err(NameError::from)?;
        return Ok(Endpoint::Blob { digest });
    }
    Err(RegistryError::new(StatusCode::NOT_FOUND, Code::NameUnknown, format!("no registry endpoint at /v2/{path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_endpoints_from_the_right() {
        let Endpoint::Manifest { name, reference } = parse("shell/git/manifests/latest").unwrap() else { panic!() };
        assert_eq!(name.as_str(), "shell/git");
        assert!(matches!(reference, Reference::Tag(t) if t.as_str() == "latest"));

        let d = format!("sha256:{}", "a".repeat(64));
        let Endpoint::Blob { digest } = parse(&format!("a/b/blobs/{d}")).unwrap() else { panic!() };
        assert_eq!(digest.to_string(), d);

        assert!(matches!(parse("hello/tags/list"), Ok(Endpoint::Tags { .. })));
        assert!(matches!(parse("hello/blobs/uploads/"), Ok(Endpoint::Upload)));
    }

    #[test]
    fn maps_bad_parts_to_codes() {
        let code = |p: &str| parse(p).unwrap_err().code;
        assert_eq!(code("bad..name/manifests/latest"), Code::NameInvalid);
        assert_eq!(code("hello/manifests/-tag"), Code::TagInvalid);
        assert_eq!(code("hello/manifests/sha256:123"), Code::DigestInvalid);
        assert_eq!(code("hello/blobs/sha256:xyz"), Code::DigestInvalid);
        assert_eq!(code("hello/blobs/md5:abc"), Code::DigestInvalid);
        assert_eq!(code("hello/whatever"), Code::NameUnknown);
    }
}
