//! Leases: one replica at a time does a piece of work for the whole fleet (an image's build,
//! a garbage collection), through an object in shared storage.
//!
//! Replicas behind one load balancer are asked for the same new image at once when a
//! rollout pulls it everywhere; without coordination each would evaluate, realise and
//! archive it. With a lease, the first takes `leases/<hex>` by a conditional create (GCS
//! `ifGenerationMatch=0`, S3 `If-None-Match: *`, a hard link on the filesystem: see
//! [`crate::storage::StorageBackend::create`]), renews it every third of
//! `NIXERY_BUILD_LEASE` by a conditional replace of the generation it holds, and the others
//! wait for the work to be done (for a build: its manifest to appear in storage), polling
//! with backoff, as long as the lease keeps being renewed.
//!
//! The lease is a small JSON object:
//!
//! ```json
//! {"holder":"9f1c…","token":"5ab2…","what":"shell/git:latest","expires":1796626058806,"released":false}
//! ```
//!
//! A holder that dies stops renewing. A waiter takes the lease over (a conditional replace
//! of the generation it saw, so of several waiters exactly one wins) when the lease is
//! released, unreadable, or expired: either its generation has not changed for a whole
//! lease period as the waiter's own clock measures it (no comparison of clocks between
//! hosts), or its `expires` is more than a period in the past by the waiter's clock (so a
//! lease left by a replica that died long ago is taken at once). A holder that finishes
//! releases the lease (marks it released), and one whose work is abandoned (every client
//! left) releases it when it drops it, so a waiter takes over without waiting for expiry.
//! A holder that finds its lease taken over (its renewal loses) goes on: both do the same
//! deterministic work, and the second write of the same bytes is harmless.
//!
//! `token` tells a holder its own write from another's when the answer to a conditional
//! write was lost and a retry was refused: the object then holds its token.

use crate::storage::{Generation, ObjectKey, Storage, StorageError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// First pause between looks at a lease held by another replica.
const FIRST_POLL: Duration = Duration::from_millis(100);
/// Longest pause between looks.
const LONGEST_POLL: Duration = Duration::from_secs(2);

#[derive(Serialize, Deserialize)]
struct Record {
    holder: String,
    token: String,
    what: String,
    /// Unix milliseconds.
    expires: u64,
    #[serde(default)]
    released: bool,
    /// When the work was finished (Unix milliseconds), for work done periodically.
    #[serde(default)]
    finished: Option<u64>,
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn random_hex() -> String {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the operating system's random number generator");
    hex::encode(random)
}

/// The leases of this replica.
#[derive(Clone)]
pub struct Leases {
    storage: Arc<Storage>,
    period: Duration,
    /// This process, among all replicas.
    holder: Arc<str>,
}

/// How a claim ended.
pub enum Claim {
    /// This replica holds the lease: do the work, then drop or [`Lease::release`] it.
    Held(Lease),
    /// The work is done (by another replica, or before the claim).
    Done,
}

/// What one look at a lease found.
enum Attempt {
    Held(Lease),
    Busy,
}

/// A generation of a lease and since when this process has seen it unchanged.
#[derive(Default)]
struct Watch {
    seen: Option<(Generation, Instant)>,
}

impl Watch {
    /// Whether `generation` has been the lease's for longer than `period`.
    fn unchanged_for(&mut self, generation: &Generation, period: Duration) -> bool {
        match &self.seen {
            Some((g, since)) if g == generation => since.elapsed() > period,
            _ => {
                self.seen = Some((generation.clone(), Instant::now()));
                false
            }
        }
    }
}

impl Leases {
    pub fn new(storage: Arc<Storage>, period: Duration) -> Self {
        Leases { storage, period, holder: random_hex().into() }
    }

    /// How long a lease lasts without renewal.
    pub fn period(&self) -> Duration {
        self.period
    }

    fn record(&self, what: &str) -> Record {
        Record {
            holder: self.holder.to_string(),
            token: random_hex(),
            what: what.to_owned(),
            expires: unix_millis(SystemTime::now() + self.period),
            released: false,
            finished: None,
        }
    }

    /// Takes the lease `key` for `what` (a name for logs), or waits while another replica
    /// holds it and keeps renewing it, until `done` says the work is done (asked before
    /// every look at the lease).
    pub async fn claim<F, Fut>(&self, key: &ObjectKey, what: &str, mut done: F) -> Result<Claim, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool, StorageError>>,
    {
        let mut watch = Watch::default();
        let mut pending = None;
        let mut pause = FIRST_POLL;
        let mut waiting = false;
        loop {
            if done().await? {
                if waiting {
                    tracing::info!(what, "done by another replica");
                }
                return Ok(Claim::Done);
            }
            if let Attempt::Held(lease) = self.attempt(key, what, &mut watch, &mut pending).await? {
                return Ok(Claim::Held(lease));
            }
            if !waiting {
                tracing::info!(what, "another replica is at it: waiting for it");
                waiting = true;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(LONGEST_POLL).min(self.period / 4).max(FIRST_POLL);
        }
    }

    /// The lease `key` if nobody holds it now (one look, no waiting).
    pub async fn try_take(&self, key: &ObjectKey, what: &str) -> Result<Option<Lease>, StorageError> {
        match self.attempt(key, what, &mut Watch::default(), &mut None).await? {
            Attempt::Held(lease) => Ok(Some(lease)),
            Attempt::Busy => Ok(None),
        }
    }

    /// When the work of lease `key` was last finished, if a holder said so.
    pub async fn finished(&self, key: &ObjectKey) -> Result<Option<SystemTime>, StorageError> {
        let Some(current) = self.storage.read_versioned(key).await? else { return Ok(None) };
        let record = serde_json::from_slice::<Record>(&current.bytes).ok();
        Ok(record.and_then(|r| r.finished).map(|ms| UNIX_EPOCH + Duration::from_millis(ms)))
    }

    /// One look at the lease, taking it if it is free. `pending` is the token of a write
    /// of ours whose answer said it failed (see the module docs).
    async fn attempt(
        &self,
        key: &ObjectKey,
        what: &str,
        watch: &mut Watch,
        pending: &mut Option<String>,
    ) -> Result<Attempt, StorageError> {
        let mine = self.record(what);
        let bytes: Bytes = serde_json::to_vec(&mine).expect("leases serialise").into();
        let written = match self.storage.read_versioned(key).await? {
            None => self.storage.create(key, bytes).await?,
            Some(current) => {
                let record = serde_json::from_slice::<Record>(&current.bytes).ok();
                if let Some(r) = &record
                    && pending.as_deref() == Some(r.token.as_str())
                {
                    // Ours after all.
                    return Ok(Attempt::Held(self.held(key, current.generation)));
                }
                let now = unix_millis(SystemTime::now());
                let period = self.period.as_millis() as u64;
                let stale = watch.unchanged_for(&current.generation, self.period);
                let free = match &record {
                    None => true,
                    Some(r) => r.released || r.expires.saturating_add(period) < now || stale,
                };
                if !free {
                    return Ok(Attempt::Busy);
                }
                if let Some(r) = record.filter(|r| !r.released) {
                    tracing::warn!(what, holder = r.holder, "taking over a lease that was not renewed");
                }
                self.storage.replace(key, bytes, &current.generation).await?
            }
        };
        match written {
            Some(generation) => Ok(Attempt::Held(self.held(key, generation))),
            None => {
                *pending = Some(mine.token);
                Ok(Attempt::Busy)
            }
        }
    }

    fn held(&self, key: &ObjectKey, generation: Generation) -> Lease {
        let state = Arc::new(Mutex::new(generation));
        let renewer = tokio::spawn(renew(self.clone(), key.clone(), state.clone()));
        Lease { leases: self.clone(), key: key.clone(), state, renewer: Some(renewer) }
    }
}

/// Renews a held lease every third of its period until it is released or lost; `state` is
/// the generation it holds.
async fn renew(leases: Leases, key: ObjectKey, state: Arc<Mutex<Generation>>) {
    let what = format!("lease {key}");
    loop {
        tokio::time::sleep(leases.period / 3).await;
        let record = leases.record(&what);
        let bytes: Bytes = serde_json::to_vec(&record).expect("leases serialise").into();
        let generation = state.lock().expect("lease state").clone();
        match leases.storage.replace(&key, bytes, &generation).await {
            Ok(Some(renewed)) => *state.lock().expect("lease state") = renewed,
            Ok(None) => {
                tracing::warn!(%key, "lost a lease to another replica (it was not renewed in time); going on");
                return;
            }
            Err(e) => tracing::warn!(%key, error = %e, "cannot renew a lease; trying again"),
        }
    }
}

/// A lease this replica holds; released when dropped.
pub struct Lease {
    leases: Leases,
    key: ObjectKey,
    state: Arc<Mutex<Generation>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Lease {
    /// Releases the lease now, saying the work was finished (for work done periodically).
    pub async fn finish(mut self) {
        self.give_back(true).await;
    }

    /// Releases the lease now.
    pub async fn release(mut self) {
        self.give_back(false).await;
    }

    async fn give_back(&mut self, finished: bool) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let (leases, key) = (self.leases.clone(), self.key.clone());
        let generation = self.state.lock().expect("lease state").clone();
        release(leases, key, generation, finished).await;
    }
}

async fn release(leases: Leases, key: ObjectKey, generation: Generation, finished: bool) {
    let mut record = leases.record("released");
    record.released = true;
    record.finished = finished.then(|| unix_millis(SystemTime::now()));
    let bytes: Bytes = serde_json::to_vec(&record).expect("leases serialise").into();
    match leases.storage.replace(&key, bytes, &generation).await {
        Ok(_) => {}
        Err(e) => tracing::warn!(%key, error = %e, "cannot release a lease; it expires by itself"),
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(renewer) = self.renewer.take() else { return };
        renewer.abort();
        let (leases, key) = (self.leases.clone(), self.key.clone());
        let generation = self.state.lock().expect("lease state").clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(release(leases, key, generation, false));
        }
    }
}

#[cfg(test)]
impl Lease {
    /// Stops renewing without releasing: what a holder that dies leaves behind.
    fn abandon(mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::storage::Memory;
    use std::sync::atomic::{AtomicBool, Ordering};

    const PERIOD: Duration = Duration::from_millis(400);

    fn replicas(n: usize) -> (Vec<Leases>, ObjectKey) {
        let storage = Arc::new(Storage::Memory(Memory::new()));
        let leases = (0..n).map(|_| Leases::new(storage.clone(), PERIOD)).collect();
        (leases, ObjectKey::lease(&Digest::of(b"image")))
    }

    async fn never_done() -> Result<bool, StorageError> {
        Ok(false)
    }

    #[tokio::test]
    async fn one_replica_of_many_takes_a_lease() {
        let (replicas, key) = replicas(4);
        let attempts = replicas.iter().map(|l| l.try_take(&key, "x"));
        let taken = futures::future::join_all(attempts).await;
        let held: Vec<Lease> = taken.into_iter().filter_map(|t| t.unwrap()).collect();
        assert_eq!(held.len(), 1);
    }

    #[tokio::test]
    async fn waiters_wait_while_the_holder_renews_and_see_the_work_done() {
        let (replicas, key) = replicas(2);
        let Claim::Held(lease) = replicas[0].claim(&key, "x", never_done).await.unwrap() else { panic!("not held") };
        let done = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (leases, key, done) = (replicas[1].clone(), key.clone(), done.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let claim = leases.claim(&key, "x", || {
                    let done = done.clone();
                    async move { Ok(done.load(Ordering::SeqCst)) }
                });
                (matches!(claim.await.unwrap(), Claim::Done), started.elapsed())
            })
        };
        // Three periods: the lease would have expired three times over without renewal.
        tokio::time::sleep(PERIOD * 3).await;
        assert!(!waiter.is_finished(), "the waiter took a lease that was being renewed");
        done.store(true, Ordering::SeqCst);
        lease.release().await;
        let (saw_done, waited) = waiter.await.unwrap();
        assert!(saw_done, "the waiter did the work itself");
        assert!(waited >= PERIOD * 3);
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_at_once_and_an_abandoned_one_after_a_period() {
        let (replicas, key) = replicas(2);
        let first = replicas[0].try_take(&key, "x").await.unwrap().expect("free");
        assert!(replicas[1].try_take(&key, "x").await.unwrap().is_none(), "held");
        drop(first); // an abandoned build: released in the background
        let started = Instant::now();
        let Claim::Held(second) = replicas[1].claim(&key, "x", never_done).await.unwrap() else { panic!() };
        assert!(started.elapsed() < PERIOD, "a released lease was waited for: {:?}", started.elapsed());

        second.abandon(); // its holder died: no release, no renewal
        let started = Instant::now();
        let Claim::Held(third) = replicas[0].claim(&key, "x", never_done).await.unwrap() else { panic!() };
        let waited = started.elapsed();
        assert!(waited > PERIOD && waited < PERIOD * 3, "taken over after {waited:?}");
        third.finish().await;
        let finished = replicas[1].finished(&key).await.unwrap().expect("a finished time");
        assert!(SystemTime::now().duration_since(finished).unwrap() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_lease_left_long_ago_is_taken_without_waiting() {
        let (replicas, key) = replicas(2);
        let old = Record {
            holder: "dead".into(),
            token: "t".into(),
            what: "x".into(),
            expires: unix_millis(SystemTime::now() - Duration::from_secs(3600)),
            released: false,
            finished: None,
        };
        let storage = &replicas[0].storage;
        storage.create(&key, serde_json::to_vec(&old).unwrap().into()).await.unwrap().unwrap();
        assert!(replicas[1].try_take(&key, "x").await.unwrap().is_some());
    }
}
