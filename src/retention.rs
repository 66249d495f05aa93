//! Retention: a manifest served within `NIXERY_RETENTION` keeps its blobs.
//!
//! When a manifest or index was last served is recorded in storage, `served/sha256:<hex>`,
//! whose modification time is the answer (garbage collection lists the prefix and reads no
//! object, [`crate::gc`]). Not on every request: a replica records a manifest when it first
//! serves it and then at most once per tenth of the retention, keeping the time of its last
//! record with the manifest in memory ([`Stamp`]). Garbage collection keeps a manifest whose
//! record is younger than the retention, so a manifest this replica serves at least once per
//! ninth-tenths of the retention is never collected.
//!
//! A manifest this replica keeps in memory but has not served for a while may have been
//! collected by another replica (or `nixery gc`). So once its last record is older than
//! nine tenths of the retention (the last tenth is a margin for clocks that differ between
//! hosts and the store), it is looked up in storage again before it is served: still
//! there, it is recorded and served; gone, it is dropped from memory and made again like a
//! manifest never seen (which gives its blobs back). No replica serves a manifest from
//! memory whose blobs another one collected.
//!
//! A retention of zero keeps everything: nothing is recorded and garbage collection keeps
//! every manifest (and collects only what no manifest references).

use crate::cache::CachedManifest;
use crate::digest::Digest;
use crate::gc::GcPolicy;
use crate::storage::{ObjectKey, Storage, StorageError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How storage is kept over time and shared across replicas, in the domain's terms (the
/// configuration maps `NIXERY_RETENTION`, `NIXERY_GC_INTERVAL`, `NIXERY_GC_GRACE` and
/// `NIXERY_BUILD_LEASE` into this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    /// A manifest served within this long keeps its blobs; zero keeps everything.
    pub retention: Duration,
    /// How often the server collects garbage; zero never.
    pub gc_interval: Duration,
    /// Nothing younger than this is collected.
    pub gc_grace: Duration,
    /// How long a build lease lasts without renewal ([`crate::lease`]).
    pub build_lease: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            retention: Duration::from_secs(30 * 86_400),
            gc_interval: Duration::from_secs(86_400),
            gc_grace: Duration::from_secs(3600),
            build_lease: Duration::from_secs(30),
        }
    }
}

impl Lifecycle {
    /// What garbage collection keeps.
    pub fn gc(&self) -> GcPolicy {
        GcPolicy { retention: self.retention, grace: self.gc_grace }
    }
}

/// A stamp that was never set.
const NEVER: u64 = u64::MAX;

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// When this process last recorded a manifest as served (kept with the manifest in memory),
/// in Unix milliseconds: the wall clock, like the records' modification times it stands for.
#[derive(Debug)]
pub struct Stamp(AtomicU64);

impl Default for Stamp {
    fn default() -> Self {
        Stamp(AtomicU64::new(NEVER))
    }
}

impl Stamp {
    fn set(&self, t: SystemTime) {
        self.0.store(unix_millis(t), Ordering::Relaxed);
    }

    /// How long ago it was set; `None` if never.
    fn age(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            NEVER => None,
            at => Some(Duration::from_millis(unix_millis(SystemTime::now()).saturating_sub(at))),
        }
    }
}

/// What serving a manifest from memory takes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Nothing: recorded recently.
    Serve,
    /// Record it as served (first serve, or a tenth of the retention since the last record).
    Record,
    /// Look it up in storage, then record it: another replica may have collected it.
    Confirm,
}

/// The retention of manifests and the records of when they were served.
#[derive(Clone)]
pub struct Retention {
    /// `None`: keep everything.
    period: Option<Duration>,
    storage: Arc<Storage>,
}

impl Retention {
    /// `period` zero keeps everything.
    pub fn new(period: Duration, storage: Arc<Storage>) -> Self {
        Retention { period: (!period.is_zero()).then_some(period), storage }
    }

    /// What serving `manifest` takes, by the age of its last record.
    pub fn check(&self, manifest: &CachedManifest) -> Check {
        let Some(period) = self.period else { return Check::Serve };
        match manifest.served.age() {
            None => Check::Record,
            Some(age) if age >= period.mul_f64(0.9) => Check::Confirm,
            Some(age) if age >= period / 10 => Check::Record,
            Some(_) => Check::Serve,
        }
    }

    /// Whether `manifest` may be served, recording it as served when due: `false` only if it
    /// is no longer in storage (collected). Storage failures serve it and are logged: a
    /// missed record costs at worst a rebuild after the next collection.
    pub async fn serving(&self, manifest: &CachedManifest) -> bool {
        match self.check(manifest) {
            Check::Serve => return true,
            Check::Record => {}
            Check::Confirm => match self.storage.size(&ObjectKey::manifest(&manifest.digest)).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::info!(digest = %manifest.digest, "a manifest kept in memory was collected: making it again");
                    return false;
                }
                Err(e) => tracing::warn!(error = %e, "cannot check whether a manifest is still stored"),
            },
        }
        if let Err(e) = self.record(&manifest.digest).await {
            tracing::warn!(error = %e, "cannot record that a manifest was served");
        }
        manifest.served.set(SystemTime::now());
        true
    }

    /// Records that the manifest `digest` was served now.
    async fn record(&self, digest: &Digest) -> Result<(), StorageError> {
        let body = serde_json::json!({ "digest": digest, "served": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string() });
        self.storage.put(&ObjectKey::served(digest), body.to_string().into()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Document;
    use crate::storage::Memory;

    fn manifest(text: &str) -> CachedManifest {
        CachedManifest::new(Document::new(text.as_bytes().to_vec()), "application/vnd.oci.image.manifest.v1+json")
    }

    fn age(stamp: &Stamp, ago: Duration) {
        stamp.set(SystemTime::now() - ago);
    }

    #[tokio::test]
    async fn records_are_written_once_per_tenth_of_the_retention() {
        let memory = Memory::new();
        let retention = Retention::new(Duration::from_secs(1000), Arc::new(Storage::Memory(memory.clone())));
        let m = manifest("{}");
        assert_eq!(retention.check(&m), Check::Record, "never recorded");
        assert!(retention.serving(&m).await);
        assert_eq!(memory.keys("served/"), [ObjectKey::served(&m.digest).to_string()]);
        assert_eq!(retention.check(&m), Check::Serve);
        age(&m.served, Duration::from_secs(99));
        assert_eq!(retention.check(&m), Check::Serve);
        age(&m.served, Duration::from_secs(101));
        assert_eq!(retention.check(&m), Check::Record);
        age(&m.served, Duration::from_secs(901));
        assert_eq!(retention.check(&m), Check::Confirm);
    }

    #[tokio::test]
    async fn a_manifest_collected_elsewhere_is_not_served_from_memory() {
        let memory = Memory::new();
        let storage = Arc::new(Storage::Memory(memory.clone()));
        let retention = Retention::new(Duration::from_secs(1000), storage.clone());
        let m = manifest("{\"a\":1}");
        storage.put(&ObjectKey::manifest(&m.digest), m.bytes.clone()).await.unwrap();
        age(&m.served, Duration::from_secs(950));
        assert!(retention.serving(&m).await, "still stored: served");
        assert_eq!(retention.check(&m), Check::Serve, "and recorded again");
        age(&m.served, Duration::from_secs(950));
        memory.remove(ObjectKey::manifest(&m.digest).as_str());
        assert!(!retention.serving(&m).await, "collected: not served");
    }

    #[tokio::test]
    async fn zero_keeps_everything_and_records_nothing() {
        let memory = Memory::new();
        let retention = Retention::new(Duration::ZERO, Arc::new(Storage::Memory(memory.clone())));
        let m = manifest("{}");
        assert_eq!(retention.check(&m), Check::Serve);
        assert!(retention.serving(&m).await);
        assert!(memory.keys("").is_empty());
    }
}
