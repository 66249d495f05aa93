//! Object keys, built only from checked values (digests, hex hashes), so a key can never
//! escape its prefix.

use crate::digest::Digest;
use std::fmt;

/// The name of an object in storage.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// A layer or config blob.
    pub fn blob(digest: &Digest) -> Self {
        ObjectKey(format!("layers/{digest}"))
    }

    /// A manifest by its digest.
    pub fn manifest(digest: &Digest) -> Self {
        ObjectKey(format!("manifests/{digest}"))
    }

    /// A cached manifest, by the hash of what it was built from.
    pub fn manifest_cache(key: &Digest) -> Self {
        ObjectKey(format!("manifests/{}", key.hex()))
    }

    /// A layer build record, by the hash of the layer's contents.
    pub fn build(key: &Digest) -> Self {
        ObjectKey(format!("builds/{}", key.hex()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_in_their_prefixes() {
        let d = Digest::of(b"x");
        assert_eq!(
            ObjectKey::blob(&d).as_str(),
            format!("layers/sha256:{}", d.hex())
        );
        assert_eq!(
            ObjectKey::manifest(&d).as_str(),
            format!("manifests/sha256:{}", d.hex())
        );
        assert_eq!(
            ObjectKey::manifest_cache(&d).as_str(),
            format!("manifests/{}", d.hex())
        );
        assert_eq!(ObjectKey::build(&d).as_str(), format!("builds/{}", d.hex()));
        assert_ne!(ObjectKey::manifest(&d), ObjectKey::manifest_cache(&d));
    }
}
