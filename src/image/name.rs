//! Registry names, tags and references, checked at construction.
//!
//! Names follow the distribution spec's grammar (components of alphanumerics joined by `.`,
//! `_`, `__` or runs of `-`, separated by `/`), extended to upper-case letters so that a
//! `curl` of `bashInteractive` works too. Anything else is rejected here, before it can
//! reach Nix; package names are handed to Nix as JSON data in any case, never as code.

use crate::digest::{Digest, DigestError};
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;

/// Longest name accepted (the spec bounds hostname + name by 255 characters).
const MAX_NAME_LEN: usize = 255;
/// Longest tag accepted (the spec's tag grammar allows 128 characters).
const MAX_TAG_LEN: usize = 128;

/// Why a name, tag or reference was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("image name is empty")]
    EmptyName,
    #[error("image name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error("image name component '{0}' is not a valid package name")]
    BadComponent(String),
    #[error("tag '{0}' is not valid (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')")]
    BadTag(String),
    #[error(transparent)]
    BadDigest(#[from] DigestError),
}

/// One path component of an image name: a package attribute (possibly dotted) or a
/// meta-package; after [`super::ImageSpec`] has expanded the meta-packages, a package name
/// as it is handed to Nix (and echoed back by it, checked again on the way in).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackageName(String);

impl PackageName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if valid_component(s) { Ok(PackageName(s.to_owned())) } else { Err(NameError::BadComponent(s.to_owned())) }
    }

    /// A name the registry itself adds (meta-package contents, always-included packages).
    ///
    /// # Panics
    /// If `s` is not a valid name: a mistake in a constant, which the tests catch.
    pub(crate) fn from_static(s: &'static str) -> Self {
        Self::parse(s).unwrap_or_else(|e| panic!("built-in package name: {e}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// As the text (logs show sets of names as they showed sets of strings).
impl fmt::Debug for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for PackageName {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<PackageName> for String {
    fn from(name: PackageName) -> String {
        name.0
    }
}

/// Lets sets of names be searched and joined as text (`Ord` and `Hash` agree with `str`'s).
impl Borrow<str> for PackageName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A repository name as sent by the client, e.g. `shell/git`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageName {
    raw: String,
    components: Vec<PackageName>,
}

impl ImageName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::EmptyName);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::NameTooLong);
        }
        let components = s.split('/').map(PackageName::parse).collect::<Result<Vec<_>, _>>()?;
        Ok(ImageName { raw: s.to_owned(), components })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn components(&self) -> &[PackageName] {
        &self.components
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A tag, e.g. `latest`, a git branch, or a full commit hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let mut bytes = s.bytes();
        let first_ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_');
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if first_ok && rest_ok && s.len() <= MAX_TAG_LEN {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::BadTag(s.to_owned()))
        }
    }

    pub fn latest() -> Self {
        Tag("latest".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `<reference>` of a manifest request: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// A reference containing `:` is a digest, anything else a tag (as in the distribution spec).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.contains(':') { Ok(Reference::Digest(s.parse()?)) } else { Ok(Reference::Tag(Tag::parse(s)?)) }
    }
}

/// `[A-Za-z0-9]+` separated by `.`, `_`, `__` or runs of `-`.
fn valid_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_registry_names() {
        for ok in [
            "git",
            "shell/git",
            "haskellpackages.pandoc",
            "iana-etc",
            "a__b",
            "a---b",
            "bashInteractive",
            "1password",
            "python3_11",
        ] {
            assert!(ImageName::parse(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "/git",
            "git/",
            "shell//git",
            "-git",
            "git-",
            "a..b",
            "a._b",
            "a b",
            "a\"b",
            "a;b",
            "${x}",
            "a/../b",
            "Ä",
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad:?} should be invalid");
        }
        assert_eq!(ImageName::parse(&"a".repeat(256)), Err(NameError::NameTooLong));
    }

    #[test]
    fn tags_follow_the_spec() {
        for ok in ["latest", "v1.2", "_x", "main", "0123456789abcdef0123456789abcdef01234567"] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references_are_tags_or_digests() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let d = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert!(matches!(Reference::parse("sha256:xyz"), Err(NameError::BadDigest(_))));
    }
}
