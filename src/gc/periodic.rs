//! The server's own collections: one per `NIXERY_GC_INTERVAL` for the whole fleet.
//!
//! Every replica looks every twenty-fourth of the interval (at least every second, at most
//! every hour) at the collection's lease ([`crate::lease`], `leases/<hex of "nixery garbage
//! collection">`). If a collection finished within the interval, or another replica is
//! collecting now, it does nothing; otherwise it takes the lease, collects, and releases it
//! saying when it finished. So a fleet of any size collects once per interval, a replica
//! that restarts does not collect again, and a fresh store is collected at the first look.
//! The collection's lease is the one lease garbage collection never removes.

use super::{Candidate, Collector};
use crate::digest::Digest;
use crate::lease::Leases;
use crate::metrics::Metrics;
use crate::storage::ObjectKey;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The lease of garbage collection.
pub fn lease_key() -> ObjectKey {
    ObjectKey::lease(&Digest::of(b"nixery garbage collection"))
}

/// How often a replica looks whether a collection is due.
fn look_every(interval: Duration) -> Duration {
    (interval / 24).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Collects every `interval` for as long as the returned task runs.
pub fn spawn(
    collector: Collector,
    leases: Leases,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(look_every(interval)).await;
            if let Err(e) = collect_if_due(&collector, &leases, interval, &metrics).await {
                metrics.gc_failures.inc();
                tracing::error!(error = %e, "garbage collection failed; trying again at the next interval");
            }
        }
    })
}

async fn collect_if_due(
    collector: &Collector,
    leases: &Leases,
    interval: Duration,
    metrics: &Metrics,
) -> Result<(), super::GcError> {
    let key = lease_key();
    let due = |finished: Option<SystemTime>| {
        finished.is_none_or(|t| SystemTime::now().duration_since(t).is_ok_and(|since| since >= interval))
    };
    if !due(leases.finished(&key).await?) {
        return Ok(());
    }
    let Some(lease) = leases.try_take(&key, "garbage collection").await? else { return Ok(()) };
    // Another replica may have finished between the look and the take.
    if !due(leases.finished(&key).await?) {
        lease.release().await;
        return Ok(());
    }
    tracing::info!("garbage collection starting");
    let mut deleted = |c: Candidate<'_>| tracing::debug!(%c, "collected");
    let report = collector.run(false, &mut deleted).await;
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            lease.release().await;
            return Err(e);
        }
    };
    lease.finish().await;
    let total = report.total();
    metrics.gc_runs.inc();
    metrics.gc_objects_deleted.add(total.objects);
    metrics.gc_bytes_deleted.add(total.bytes);
    tracing::info!(
        objects = total.objects,
        bytes = total.bytes,
        uploads = report.uploads_aborted,
        seconds = report.took.as_secs_f64(),
        "garbage collection: {report}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::GcPolicy;
    use crate::storage::{Memory, Storage};

    #[test]
    fn replicas_look_often_enough_but_not_too_often() {
        assert_eq!(look_every(Duration::from_secs(86_400)), Duration::from_secs(3600));
        assert_eq!(look_every(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(look_every(Duration::from_secs(240)), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn one_collection_per_interval_for_the_fleet() {
        let storage = Arc::new(Storage::Memory(Memory::new()));
        let policy = GcPolicy { retention: Duration::from_secs(60), grace: Duration::from_secs(60) };
        let metrics = Arc::new(Metrics::default());
        let replicas: Vec<(Collector, Leases)> = (0..3)
            .map(|_| (Collector::new(storage.clone(), policy), Leases::new(storage.clone(), Duration::from_secs(30))))
            .collect();
        for (collector, leases) in &replicas {
            collect_if_due(collector, leases, Duration::from_secs(3600), &metrics).await.unwrap();
        }
        assert_eq!(metrics.gc_runs.get(), 1, "three replicas, one collection");
        for (collector, leases) in &replicas {
            collect_if_due(collector, leases, Duration::ZERO, &metrics).await.unwrap();
        }
        assert_eq!(metrics.gc_runs.get(), 4, "due again at once with a zero interval");
    }
}
