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

    /// Whether the key names its contents (a digest), so any two objects ever stored under it
    /// are the same bytes and an existing object never needs replacing.
    pub fn is_content_addressed(&self) -> bool {
        self.0.starts_with("layers/sha256:") || self.0.starts_with("manifests/sha256:")
    }
}

/// A fresh `staging/` name, unique across processes and machines sharing a bucket: the
/// process's random hash seed (drawn from the OS), the time and a counter.
pub(crate) fn staging_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().build_hasher().finish());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("staging/{seed:016x}-{}-{nanos:x}-{n}", std::process::id())
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
        assert_eq!(ObjectKey::blob(&d).as_str(), format!("layers/sha256:{}", d.hex()));
        assert_eq!(ObjectKey::manifest(&d).as_str(), format!("manifests/sha256:{}", d.hex()));
        assert_eq!(ObjectKey::manifest_cache(&d).as_str(), format!("manifests/{}", d.hex()));
        assert_eq!(ObjectKey::build(&d).as_str(), format!("builds/{}", d.hex()));
        assert_ne!(ObjectKey::manifest(&d), ObjectKey::manifest_cache(&d));
    }

    #[test]
    fn only_digest_keys_are_content_addressed() {
        let d = Digest::of(b"x");
        assert!(ObjectKey::blob(&d).is_content_addressed());
        assert!(ObjectKey::manifest(&d).is_content_addressed());
        assert!(!ObjectKey::manifest_cache(&d).is_content_addressed());
        assert!(!ObjectKey::build(&d).is_content_addressed());
    }

    #[test]
    fn staging_names_are_unique_and_in_staging() {
        let a = staging_name();
        let b = staging_name();
        assert!(a.starts_with("staging/") && b.starts_with("staging/"));
        assert_ne!(a, b);
        assert!(!a[8..].contains('/'));
    }
}
