//! Bounded Nix work: at most NIXERY_MAX_NIX_JOBS Nix processes at a time, across all images.
//!
//! One evaluation of a big package set takes seconds and a gigabyte; without a bound, a flood
//! of distinct image names starts a Nix process per request and the machine runs out of memory
//! or processes (measured before this bound: 200 distinct requests ran up to 194 Nix
//! processes at once). So Nix work is handed out in slots:
//!
//! - An image takes one slot ([`NixJobs::turn`]) for all of its Nix steps (evaluate, check
//!   caches, realise, query), which run one after the other. Holding the slot across the steps
//!   keeps an image's place: an image that finished evaluating does not queue again behind
//!   everything that arrived since, so images finish in the order they came instead of all
//!   finishing late.
//! - Waiting is first come, first served (tokio's semaphore is fair), and a waiter that goes
//!   away (every client disconnected) leaves the queue.
//! - Extra work inside an image (evaluating names one at a time to find the one that breaks
//!   the evaluation) may use spare slots ([`NixJobs::spare`]), which are only handed out when
//!   nobody is waiting, so it never overtakes a queued image and never waits while holding a
//!   slot (which could deadlock when every slot holder wants a second one).
//!
//! The wait is not part of an image's Nix deadline (NIX_TIMEOUT): a request must not time out
//! because of a flood it did not cause. It is bounded by the same length, though: an image
//! that found no slot within NIX_TIMEOUT is refused as busy ([`Busy`]) rather than waiting
//! without end. So a request takes at most twice NIX_TIMEOUT in Nix, half of it queued.

use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// The slots.
pub struct NixJobs {
    slots: Semaphore,
    limit: usize,
    metrics: Arc<Metrics>,
}

/// No slot became free in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no Nix job slot became free within {} s: all {limit} (NIXERY_MAX_NIX_JOBS) stayed busy", .waited.as_secs())]
pub struct Busy {
    pub waited: Duration,
    pub limit: usize,
}

impl NixJobs {
    /// `limit` slots (at least one).
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Self {
        let limit = limit.max(1);
        metrics.nix_jobs_limit.set(limit as i64);
        NixJobs { slots: Semaphore::new(limit), limit, metrics }
    }

    /// A slot for one image's Nix steps, in order of arrival, waiting at most `patience`.
    pub async fn turn(&self, patience: Duration) -> Result<SemaphorePermit<'_>, Busy> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        let started = Instant::now();
        let waiting = self.metrics.nix_waiting.hold();
        let acquired = tokio::time::timeout(patience, self.slots.acquire()).await;
        drop(waiting);
        self.metrics.nix_wait.add(started.elapsed());
        match acquired {
            Ok(permit) => Ok(permit.expect("the Nix job semaphore is never closed")),
            Err(_) => Err(Busy { waited: started.elapsed(), limit: self.limit }),
        }
    }

    /// Another slot, if one is free and nobody waits for it.
    pub fn spare(&self) -> Option<SemaphorePermit<'_>> {
        self.slots.try_acquire().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(limit: usize) -> Arc<NixJobs> {
        Arc::new(NixJobs::new(limit, Arc::new(Metrics::default())))
    }

    #[tokio::test]
    async fn waiters_are_served_in_order_of_arrival() {
        let jobs = jobs(1);
        let first = jobs.turn(Duration::from_secs(5)).await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..5 {
            let (jobs, order) = (jobs.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _slot = jobs.turn(Duration::from_secs(5)).await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            // Let waiter i queue before waiter i + 1 arrives.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(jobs.metrics.nix_waiting.get(), 5);
        assert!(jobs.spare().is_none(), "a spare slot while images wait");
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(jobs.metrics.nix_waiting.get(), 0);
        assert!(jobs.metrics.nix_wait.get() > 0.0);
    }

    #[tokio::test]
    async fn a_wait_beyond_its_patience_is_busy() {
        let jobs = jobs(2);
        let _a = jobs.turn(Duration::from_secs(1)).await.unwrap();
        let spare = jobs.spare().expect("one slot is free");
        let err = jobs.turn(Duration::from_millis(100)).await.unwrap_err();
        assert_eq!(err.limit, 2);
        assert!(err.waited >= Duration::from_millis(100));
        drop(spare);
        assert!(jobs.turn(Duration::from_millis(100)).await.is_ok());
    }
}
