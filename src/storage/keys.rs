//! Object keys, built only from checked values (digests, hex hashes), so a key can never
//! escape its prefix.
//!
//! Every key starts with one of the [`Prefix`]es; listings ([`super::StorageBackend::list`])
//! go prefix by prefix, which is how garbage collection ([`crate::gc`]) walks storage.

use crate::digest::Digest;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first component of every key: what kind of object it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// Uploads in progress (`staging/<started>-<random>`).
    Staging,
    /// Layer and config blobs by digest.
    Layers,
    /// Manifests and indexes, by digest and (for pinned sources) by what they were built from.
    Manifests,
    /// Layer records: which blob a layer's store paths became.
    Builds,
    /// How a manifest, index or blob is made again once collected ([`crate::cache::recipes`]).
    Recipes,
    /// When a manifest was last served ([`crate::retention`]).
    Served,
    /// Who builds an image now, for the whole fleet ([`crate::lease`]).
    Leases,
    /// What a served manifest is and how it was made ([`crate::cache::artifacts`]).
    Subjects,
    /// A served manifest's SBOM artifact manifest, by the manifest's digest.
    Sboms,
    /// Which names a manifest was served for, with authentication ([`crate::auth::links`]).
    Links,
}

impl Prefix {
    pub const ALL: [Prefix; 10] = [
        Prefix::Staging,
        Prefix::Layers,
        Prefix::Manifests,
        Prefix::Builds,
        Prefix::Recipes,
        Prefix::Served,
        Prefix::Leases,
        Prefix::Subjects,
        Prefix::Sboms,
        Prefix::Links,
    ];

    /// The directory name (`layers`) and what keys start with (`layers/`).
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Prefix::Staging => ("staging", "staging/"),
            Prefix::Layers => ("layers", "layers/"),
            Prefix::Manifests => ("manifests", "manifests/"),
            Prefix::Builds => ("builds", "builds/"),
            Prefix::Recipes => ("recipes", "recipes/"),
            Prefix::Served => ("served", "served/"),
            Prefix::Leases => ("leases", "leases/"),
            Prefix::Subjects => ("subjects", "subjects/"),
            Prefix::Sboms => ("sboms", "sboms/"),
            Prefix::Links => ("links", "links/"),
        }
    }

    /// The directory name (`layers`), without the slash.
    pub fn dir(self) -> &'static str {
        self.names().0
    }

    /// What keys with this prefix start with (`layers/`).
    pub fn as_str(self) -> &'static str {
        self.names().1
    }
}

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

    /// The recipe of a manifest, index or blob: how it is made again once collected.
    pub fn recipe(digest: &Digest) -> Self {
        ObjectKey(format!("recipes/{digest}"))
    }

    /// When a manifest or index was last served.
    pub fn served(digest: &Digest) -> Self {
        ObjectKey(format!("served/{digest}"))
    }

    /// The build lease of an image, by the hash of what it is built from.
    pub fn lease(key: &Digest) -> Self {
        ObjectKey(format!("leases/{}", key.hex()))
    }

    /// A key a backend holds (from a listing): backends list only what was written through
    /// them, so it is one of the keys above or a `staging/` name.
    pub(crate) fn stored(key: impl Into<String>) -> Self {
        ObjectKey(key.into())
    }

    /// The key's prefix, if it has one of the known ones.
    pub fn prefix(&self) -> Option<Prefix> {
        Prefix::ALL.into_iter().find(|p| self.0.starts_with(p.as_str()))
    }

    /// What follows the prefix (`sha256:<hex>` of a blob), or the whole key.
    pub fn name(&self) -> &str {
        self.prefix().map_or(&self.0, |p| &self.0[p.as_str().len()..])
    }

    /// The digest named after the prefix (blobs, manifests by digest, recipes, served
    /// records), if the name is one.
    pub fn named_digest(&self) -> Option<Digest> {
        let name = self.name();
        name.starts_with("sha256:").then(|| name.parse().ok())?
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

/// A fresh `staging/` name: when the upload started (Unix milliseconds, 12 hex digits), a
/// dash, and 128 random bits from the operating system, in hex.
///
/// Unique across processes, PID namespaces and hosts sharing a directory or a bucket without
/// any coordination: two names collide with probability 2^-128 per pair. Nothing in the
/// random part comes from the process (in containers every server is PID 1, and clocks and
/// counters repeat across replicas). The filesystem backend creates the file with `O_EXCL`
/// all the same, so even a collision could not make two writers share a file.
///
/// The start time is there for garbage collection: an S3 multipart upload is listed with an
/// initiation time some stores do not keep (moto answers 2010 for every upload), and a
/// staging object's modification time says when it was finished, not begun. The name says
/// it either way ([`staging_started`]).
pub(crate) fn staging_name() -> String {
    let mut random = [0u8; 16];
    // The kernel's getrandom(2) does not fail once the entropy pool is initialised (early
    // boot), which it is long before a server starts.
    getrandom::fill(&mut random).expect("the operating system's random number generator");
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    format!("staging/{millis:012x}-{}", hex::encode(random))
}

/// When the upload named `name` (a key or the part after `staging/`) started, if the name
/// says ([`staging_name`]; older names do not).
pub fn staging_started(name: &str) -> Option<SystemTime> {
    let name = name.strip_prefix("staging/").unwrap_or(name);
    let (millis, random) = name.split_once('-')?;
    if millis.len() != 12 || random.len() != 32 {
        return None;
    }
    let millis = u64::from_str_radix(millis, 16).ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(millis))
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

    #[test]
    fn staging_names_say_when_the_upload_started() {
        let before = SystemTime::now() - Duration::from_millis(1);
        let name = staging_name();
        let started = staging_started(&name).expect("a time in the name");
        assert!(started >= before && started <= SystemTime::now() + Duration::from_millis(1), "{name}");
        assert_eq!(staging_started(&name[8..]), Some(started), "the name without its prefix");
        for old in ["staging/123-0", "staging/0123456789abcdef0123456789abcdef", "staging/x-y"] {
            assert_eq!(staging_started(old), None, "{old}");
        }
    }

    #[test]
    fn keys_know_their_prefix_name_and_digest() {
        let d = Digest::of(b"x");
        for (key, prefix) in [
            (ObjectKey::blob(&d), Prefix::Layers),
            (ObjectKey::manifest(&d), Prefix::Manifests),
            (ObjectKey::recipe(&d), Prefix::Recipes),
            (ObjectKey::served(&d), Prefix::Served),
        ] {
            assert_eq!(key.prefix(), Some(prefix), "{key}");
            assert_eq!(key.name(), d.to_string(), "{key}");
            assert_eq!(key.named_digest(), Some(d.clone()), "{key}");
            assert_eq!(ObjectKey::stored(format!("{}{}", prefix.as_str(), key.name())), key);
        }
        let lease = ObjectKey::lease(&d);
        assert_eq!((lease.prefix(), lease.name()), (Some(Prefix::Leases), d.hex().as_str()));
        assert_eq!(ObjectKey::manifest_cache(&d).named_digest(), None);
        assert_eq!(ObjectKey::build(&d).prefix(), Some(Prefix::Builds));
        assert!(Prefix::ALL.iter().all(|p| p.as_str() == format!("{}/", p.dir())));
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
