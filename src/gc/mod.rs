//! Garbage collection: storage as a cache that can be emptied, online and safely.
//!
//! Storage only grows otherwise: every layer of every revision of every image ever pulled.
//! What this registry stores is a deterministic function of a recipe, so what nobody pulls
//! any more can go, and comes back byte for byte if it is pulled by digest again
//! ([`crate::cache::recipes`]). `nixery gc [--dry-run]` runs a collection against the
//! server's storage; a server runs one every `NIXERY_GC_INTERVAL` ([`periodic`]), while it
//! serves, with no pause of any replica.
//!
//! # What is kept
//!
//! **Mark.** The documents (manifests, indexes, SBOM and signature manifests, anything under
//! `manifests/sha256:`) kept by themselves are those served within `NIXERY_RETENTION`
//! (their `served/` record, [`crate::retention`]) and those written within
//! `NIXERY_GC_GRACE`. Every stored document is read; from those roots the kept set follows
//! an index to its manifests and a manifest to the artifacts whose `subject` it is
//! ([`graph`], [`documents`]). The blobs kept are those the kept documents reference, and
//! those whose layer record was written within the grace: a build that reuses a stored
//! layer rewrites its record first ([`crate::builder`]), so a blob a running build just
//! picked up is kept though no manifest names it yet.
//!
//! **Sweep**, in an order that never leaves a pointer to something deleted:
//! 1. documents not kept and older than the grace, each looked at once more just before
//!    (a replica may have served it since it was listed), with their `served/` records;
//! 2. manifests cached by key (`manifests/<hex>`) older than the grace whose document was
//!    not kept (read to learn its digest), and SBOM pointers (`sboms/<hex>`) of documents
//!    not kept;
//! 3. blobs not kept and older than the grace, after their layer records (`builds/`, named
//!    by each blob's recipe), so no record points at a deleted blob;
//! 4. abandoned uploads: `staging/` objects started (their name says when) and last written
//!    more than the grace ago (on the filesystem only those no live upload holds), S3
//!    multipart uploads never completed; expired build leases; `served/` records of
//!    documents that are gone.
//!
//! Recipes are never deleted: they are how collected digests are made again. Nor are
//! subject records (`subjects/`, what a served digest was, from which its SBOM is made
//! again) and links (`links/`, which names may read a digest): a few hundred bytes each.
//!
//! # Why online collection is safe
//!
//! Everything a build writes is younger than the grace while the build runs (the grace,
//! one hour by default, must exceed the longest build), a layer it reuses has a young
//! record, and a manifest being served is re-recorded at least once per tenth of the
//! retention. A replica that holds a manifest in memory looks it up in storage again
//! before serving it once its record is old ([`crate::retention`]). What is left is a
//! window of milliseconds between a last look and a delete; a blob lost in it is made
//! again from its recipe when a client asks for it, and a build checks its blobs are all
//! there before it stores its manifest.
//!
//! # Memory and requests
//!
//! Listings are streamed page by page; per document the mark phase keeps a digest and its
//! edges as 32-byte digests ([`graph`]), and blobs are swept as they are listed, in batches
//! of [`sweep::BATCH`]: memory grows with the documents kept, not with the objects stored.
//! Each document is read once (16 at a time), young layer records are read, each blob
//! swept costs a read of its recipe; deletes go in batches (S3 `DeleteObjects`, GCS batch
//! requests).

mod documents;
mod graph;
pub mod periodic;
mod sweep;

pub use documents::{Edges, edges};

use crate::archive::LayerBlob;
use crate::cache::recipes::{self, RecipeRecord};
use crate::digest::Digest;
use crate::storage::{ObjectInfo, ObjectKey, Prefix, Storage, StorageError, Upload, staging_started};
use futures::{StreamExt, TryStreamExt};
use graph::{DigestSet, Graph};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use sweep::Sweep;

/// Reads in flight at once.
const READS: usize = 16;

/// What is kept, in the domain's terms (the configuration maps its settings into this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// A document served within this long keeps its blobs; zero keeps every document.
    pub retention: Duration,
    /// Nothing younger than this is deleted.
    pub grace: Duration,
}

/// Why a collection stopped. What it deleted before stays deleted, in the order of the
/// module docs, so nothing points at anything deleted.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Objects and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub objects: u64,
    pub bytes: u64,
}

/// What a collection found and deleted (or, in a dry run, would delete).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub dry_run: bool,
    /// Documents stored, and how many were kept.
    pub documents: u64,
    pub documents_kept: u64,
    /// Blobs the kept documents (and young layer records) reference.
    pub blobs_referenced: u64,
    /// By prefix (`layers`, `manifests`, …).
    pub deleted: BTreeMap<&'static str, Tally>,
    pub uploads_aborted: u64,
    pub took: Duration,
}

impl Report {
    /// Everything deleted.
    pub fn total(&self) -> Tally {
        self.deleted
            .values()
            .fold(Tally::default(), |a, t| Tally { objects: a.objects + t.objects, bytes: a.bytes + t.bytes })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total();
        let verb = if self.dry_run { "would delete" } else { "deleted" };
        write!(
            f,
            "{verb} {} objects ({} bytes) in {:.1} s; kept {} of {} documents and the {} blobs they reference",
            total.objects,
            total.bytes,
            self.took.as_secs_f64(),
            self.documents_kept,
            self.documents,
            self.blobs_referenced
        )?;
        for (prefix, t) in &self.deleted {
            write!(f, "; {prefix}: {} ({} bytes)", t.objects, t.bytes)?;
        }
        if self.uploads_aborted > 0 {
            write!(f, "; unfinished uploads: {}", self.uploads_aborted)?;
        }
        Ok(())
    }
}

/// Something a collection deletes (what a dry run lists).
#[derive(Clone, Copy, Debug)]
pub enum Candidate<'a> {
    Object(&'a ObjectInfo),
    Upload(&'a Upload),
}

impl fmt::Display for Candidate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Candidate::Object(o) => write!(f, "{} {}", o.key, o.size),
            Candidate::Upload(u) => write!(f, "{} (unfinished upload {})", u.key, u.id),
        }
    }
}

/// The ages that decide, as of one moment.
#[derive(Clone, Copy)]
struct Clock {
    now: SystemTime,
    policy: GcPolicy,
}

impl Clock {
    fn age(&self, t: SystemTime) -> Duration {
        self.now.duration_since(t).unwrap_or(Duration::ZERO)
    }

    /// Written within the grace (or in the future, by a clock ahead of ours).
    fn young(&self, t: SystemTime) -> bool {
        self.age(t) < self.policy.grace
    }

    /// Served within the retention (always, with retention zero).
    fn recent(&self, served: SystemTime) -> bool {
        self.policy.retention.is_zero() || self.age(served) < self.policy.retention
    }
}

/// A stored document, compactly.
#[derive(Clone)]
struct Stored {
    digest: Digest,
    modified: SystemTime,
    size: u64,
}

impl Stored {
    fn info(&self) -> ObjectInfo {
        ObjectInfo { key: ObjectKey::manifest(&self.digest), size: self.size, modified: self.modified }
    }
}

/// Runs collections against one store.
pub struct Collector {
    storage: Arc<Storage>,
    policy: GcPolicy,
}

impl Collector {
    pub fn new(storage: Arc<Storage>, policy: GcPolicy) -> Self {
        Collector { storage, policy }
    }

    /// One collection (see the module docs); `on_candidate` is told of everything deleted,
    /// and in a `dry_run` nothing is.
    pub async fn run(
        &self,
        dry_run: bool,
        on_candidate: &mut (dyn FnMut(Candidate<'_>) + Send),
    ) -> Result<Report, GcError> {
        let started = Instant::now();
        let clock = Clock { now: SystemTime::now(), policy: self.policy };
        let storage = &*self.storage;
        let mut sweep = Sweep::new(storage, dry_run, on_candidate);

        // When documents were last served.
        let (mut recent, mut old_records) = (Vec::new(), Vec::new());
        let mut listing = storage.list(Prefix::Served);
        while let Some(record) = listing.try_next().await? {
            let Some(digest) = record.key.named_digest() else { continue };
            if clock.recent(record.modified) {
                recent.push(*digest.as_bytes());
            } else {
                old_records.push((digest, record));
            }
        }
        let served = DigestSet::from_unsorted(recent);

        // The documents, and the manifests cached by key.
        let (mut stored, mut by_key) = (Vec::new(), Vec::new());
        let mut listing = storage.list(Prefix::Manifests);
        while let Some(object) = listing.try_next().await? {
            match object.key.named_digest() {
                Some(digest) => stored.push(Stored { digest, modified: object.modified, size: object.size }),
                None => by_key.push(object),
            }
        }

        // Mark.
        let mut graph = Graph::default();
        let mut reads = self.each(stored.clone(), |storage, doc| async move {
            let read = storage.get(&ObjectKey::manifest(&doc.digest)).await;
            (doc, read)
        });
        while let Some((doc, read)) = reads.next().await {
            let Some(bytes) = read? else { continue }; // deleted meanwhile
            let root = clock.young(doc.modified) || served.contains(&doc.digest) || self.policy.retention.is_zero();
            graph.add(&doc.digest, root, edges(&bytes));
        }
        drop(reads);
        let documents = graph.len() as u64;
        let marks = graph.mark();
        let mut blobs = marks.blobs;
        blobs.extend(self.young_records(&clock).await?);
        let blobs = DigestSet::from_unsorted(blobs);
        let kept = marks.documents;
        let report = sweep.report();
        (report.documents, report.documents_kept, report.blobs_referenced) =
            (documents, kept.len() as u64, blobs.len() as u64);

        // 1. Documents, looked at once more, and their served records.
        let doomed: Vec<Stored> =
            stored.iter().filter(|d| !kept.contains(&d.digest) && !clock.young(d.modified)).cloned().collect();
        let mut checks = self.each(doomed, |storage, doc| async move {
            let record = storage.info(&ObjectKey::served(&doc.digest)).await;
            (doc, record)
        });
        let mut deleted = Vec::new();
        while let Some((doc, record)) = checks.next().await {
            if record?.is_some_and(|r| clock.recent(r.modified)) {
                continue; // served since the listing
            }
            deleted.push(doc);
        }
        drop(checks);
        let infos: Vec<ObjectInfo> = deleted.iter().map(|d| d.info()).collect();
        sweep.delete(Prefix::Manifests, &infos).await?;
        let deleted = DigestSet::from_unsorted(deleted.iter().map(|d| *d.digest.as_bytes()).collect());
        let existing = DigestSet::from_unsorted(stored.iter().map(|d| *d.digest.as_bytes()).collect());
        old_records.retain(|(digest, _)| deleted.contains(digest) || !existing.contains(digest));
        let records: Vec<ObjectInfo> = old_records.into_iter().map(|(_, r)| r).collect();
        sweep.delete(Prefix::Served, &records).await?;
        drop(stored);

        // 2. Manifests cached by key whose document is gone.
        by_key.retain(|o| !clock.young(o.modified));
        let mut reads = self.each(by_key, |storage, object| async move {
            let bytes = storage.get(&object.key).await;
            (object, bytes)
        });
        let mut stale = Vec::new();
        while let Some((object, bytes)) = reads.next().await {
            if bytes?.is_some_and(|b| !kept.contains(&Digest::of(&b))) {
                stale.push(object);
            }
        }
        drop(reads);
        sweep.delete(Prefix::Manifests, &stale).await?;

        // 2b. SBOM pointers (`sboms/<hex>`, [`crate::cache::artifacts`]) of documents not kept:
        // their SBOM went with the document, so a pointer would name deleted blobs. Subject
        // records and links stay, like recipes: they say what a digest was and for whom.
        let subject_gone = |o: &ObjectInfo| {
            let subject = format!("sha256:{}", o.key.name()).parse::<Digest>();
            !clock.young(o.modified) && subject.is_ok_and(|d| !kept.contains(&d))
        };
        let pointers = listed(storage, Prefix::Sboms, subject_gone).await?;
        sweep.delete(Prefix::Sboms, &pointers).await?;

        // 3. Blobs, after their layer records.
        let mut batch = Vec::new();
        let mut listing = storage.list(Prefix::Layers);
        while let Some(blob) = listing.try_next().await? {
            let keep = blob.key.named_digest().is_none_or(|d| blobs.contains(&d)) || clock.young(blob.modified);
            if !keep {
                batch.push(blob);
            }
            if batch.len() == sweep::BATCH {
                self.sweep_blobs(&mut sweep, std::mem::take(&mut batch)).await?;
            }
        }
        self.sweep_blobs(&mut sweep, batch).await?;

        // 4. Abandoned uploads, expired leases.
        let abandoned = move |o: &ObjectInfo| {
            !clock.young(o.modified) && staging_started(o.key.as_str()).is_none_or(|t| !clock.young(t))
        };
        let staging = listed(storage, Prefix::Staging, abandoned).await?;
        sweep.delete(Prefix::Staging, &staging).await?;
        let cutoff = clock.now.checked_sub(self.policy.grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let uploads = storage.unfinished_uploads(cutoff).await?;
        sweep.abort(&uploads).await?;
        // Expired leases, except the one that says when the last collection finished.
        let collection = periodic::lease_key();
        let expired = move |o: &ObjectInfo| !clock.young(o.modified) && !o.key.name().starts_with(collection.name());
        let leases = listed(storage, Prefix::Leases, expired).await?;
        sweep.delete(Prefix::Leases, &leases).await?;

        let mut report = sweep.finish();
        report.took = started.elapsed();
        Ok(report)
    }

    /// `work` on each of `items` with the store, [`READS`] at a time, answers as they come.
    fn each<T, F, Fut>(&self, items: Vec<T>, work: F) -> impl futures::Stream<Item = Fut::Output> + use<T, F, Fut>
    where
        F: Fn(Arc<Storage>, T) -> Fut,
        Fut: std::future::Future,
    {
        let storage = self.storage.clone();
        futures::stream::iter(items).map(move |item| work(storage.clone(), item)).buffer_unordered(READS)
    }

    /// The blobs of layer records written within the grace.
    async fn young_records(&self, clock: &Clock) -> Result<Vec<graph::Hash>, StorageError> {
        let clock = *clock;
        let young = listed(&self.storage, Prefix::Builds, move |o| clock.young(o.modified)).await?;
        let mut reads = self.each(young, |storage, o| async move { storage.get(&o.key).await });
        let mut blobs = Vec::new();
        while let Some(read) = reads.next().await {
            if let Some(blob) = read?.and_then(|b| serde_json::from_slice::<LayerBlob>(&b).ok()) {
                blobs.push(*blob.digest.as_bytes());
            }
        }
        Ok(blobs)
    }

    /// Deletes `doomed` blobs, after the layer records their recipes name.
    async fn sweep_blobs(&self, sweep: &mut Sweep<'_>, doomed: Vec<ObjectInfo>) -> Result<(), StorageError> {
        if doomed.is_empty() {
            return Ok(());
        }
        let digests: Vec<Digest> = doomed.iter().filter_map(|b| b.key.named_digest()).collect();
        let mut lookups = self.each(digests, |storage, digest| async move {
            let Some(Ok(RecipeRecord::Layer { layer })) = recipes::find(&storage, &digest).await? else {
                return Ok(None);
            };
            let Some(record) = layer.record_key() else { return Ok(None) };
            storage.info(&record).await
        });
        let mut records = Vec::new();
        while let Some(record) = lookups.next().await {
            records.extend(record?);
        }
        drop(lookups);
        sweep.delete(Prefix::Builds, &records).await?;
        sweep.delete(Prefix::Layers, &doomed).await
    }
}

/// The objects under `prefix` that `keep` selects.
async fn listed(
    storage: &Storage,
    prefix: Prefix,
    keep: impl Fn(&ObjectInfo) -> bool,
) -> Result<Vec<ObjectInfo>, StorageError> {
    let mut listing = storage.list(prefix);
    let mut selected = Vec::new();
    while let Some(object) = listing.try_next().await? {
        if keep(&object) {
            selected.push(object);
        }
    }
    Ok(selected)
}

#[cfg(test)]
mod tests;
