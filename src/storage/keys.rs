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

    /// What the registry knows of the manifest `digest` it served (an image's or an index's
    /// recipe: [`crate::cache::artifacts`]), by the digest's hex.
    pub fn subject(digest: &Digest) -> Self {
        ObjectKey(format!("subjects/{}", digest.hex()))
    }

    /// The SBOM artifact manifest of the manifest `digest`.
    pub fn sbom(digest: &Digest) -> Self {
        ObjectKey(format!("sboms/{}", digest.hex()))
    }

    /// The link of the manifest `digest` to the repository name whose identity hashes to
    /// `name` ([`crate::auth::links`]); flat, as every key (backends create no directories),
    /// and a name's links share the prefix `links/<name hex>-`.
    pub fn link(name: &Digest, digest: &Digest) -> Self {
        ObjectKey(format!("links/{}-{digest}", name.hex()))
    }

    /// A key that is never written: what a readiness check looks up to see that the store
    /// answers (its absence is the expected answer).
    pub fn probe() -> Self {
        ObjectKey("staging/readiness-probe".to_owned())
    }

    /// The digest a content-addressed key names (see [`ObjectKey::is_content_addressed`]).
    pub fn content_digest(&self) -> Option<Digest> {
        let digest = self.0.strip_prefix("layers/").or_else(|| self.0.strip_prefix("manifests/"))?;
        digest.starts_with("sha256:").then(|| digest.parse().ok())?
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

/// A fresh `staging/` name: 128 random bits from the operating system, in hex.
///
/// Unique across processes, PID namespaces and hosts sharing a directory or a bucket without
/// any coordination: two names collide with probability 2^-128 per pair. Nothing in it comes
/// from the process (in containers every server is PID 1, and clocks and counters repeat
/// across replicas). The filesystem backend creates the file with `O_EXCL` all the same, so
/// even a collision could not make two writers share a file.
pub(crate) fn staging_name() -> String {
    let mut random = [0u8; 16];
    // The kernel's getrandom(2) does not fail once the entropy pool is initialised (early
    // boot), which it is long before a server starts.
    getrandom::fill(&mut random).expect("the operating system's random number generator");
    format!("staging/{}", hex::encode(random))
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
        assert_eq!(ObjectKey::link(&d, &d).as_str(), format!("links/{}-sha256:{}", d.hex(), d.hex()));
        assert!(!ObjectKey::link(&d, &d).is_content_addressed());
    }

    #[test]
    fn only_digest_keys_are_content_addressed() {
        let d = Digest::of(b"x");
        assert!(ObjectKey::blob(&d).is_content_addressed());
        assert!(ObjectKey::manifest(&d).is_content_addressed());
        assert!(!ObjectKey::manifest_cache(&d).is_content_addressed());
        assert!(!ObjectKey::build(&d).is_content_addressed());
        assert_eq!(ObjectKey::blob(&d).content_digest(), Some(d.clone()));
        assert_eq!(ObjectKey::manifest(&d).content_digest(), Some(d.clone()));
        assert_eq!(ObjectKey::manifest_cache(&d).content_digest(), None);
        assert_eq!(ObjectKey::build(&d).content_digest(), None);
        assert_eq!(ObjectKey::probe().content_digest(), None);
    }

    #[test]
    fn staging_names_are_unique_and_in_staging() {
        let a = staging_name();
        let b = staging_name();
        assert!(a.starts_with("staging/") && b.starts_with("staging/"));
        assert_ne!(a, b);
        assert!(!a[8..].contains('/'));
    }

    /// Two processes that are alike in everything a name could be derived from (both PID 1
    /// of their own PID namespace, started at once) still draw different names.
    #[test]
    fn staging_names_differ_between_pid_1_processes() {
        const CHILD: &str = "NIXERY_STAGING_NAME_CHILD";
        if std::env::var_os(CHILD).is_some() {
            assert_eq!(std::process::id(), 1, "not PID 1");
            println!("name={}", staging_name());
            return;
        }
        if std::process::Command::new("unshare").args(["--pid", "--fork", "true"]).status().is_err() {
            return; // no unshare(1): nothing to compare
        }
        let name = "storage::keys::tests::staging_names_differ_between_pid_1_processes";
        let draw = || {
            let out = std::process::Command::new("unshare")
                .args(["--pid", "--fork"])
                .arg(std::env::current_exe().unwrap())
                .args(["--exact", name, "--nocapture"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
            text.lines().find_map(|l| l.strip_prefix("name=")).expect("a name").to_owned()
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(draw);
            let b = s.spawn(draw);
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_ne!(a, b);
    }
}
