//! Single-flight: concurrent requests for the same key share one computation (image builds,
//! manifest look-ups, layer archive jobs, source resolutions).
//!
//! The computation is a `Shared` future polled by every waiter, and the map holds only a weak
//! handle. So the work goes on while at least one waiter is left, and when the last waiter
//! goes away (every client disconnected) the future is dropped, which stops its Nix
//! processes. A finished or abandoned entry is replaced by the next request.

use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

type Flight<T> = Shared<BoxFuture<'static, T>>;

pub struct SingleFlight<K, T: Clone> {
    inflight: Mutex<HashMap<K, WeakShared<BoxFuture<'static, T>>>>,
}

impl<K: Hash + Eq + Clone, T: Clone + Send + Sync + 'static> Default for SingleFlight<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone, T: Clone + Send + Sync + 'static> SingleFlight<K, T> {
    pub fn new() -> Self {
        SingleFlight { inflight: Mutex::new(HashMap::new()) }
    }

    /// Joins the computation for `key`, starting it with `start` if none is running.
    pub async fn run(&self, key: K, start: impl FnOnce() -> BoxFuture<'static, T>) -> T {
        let flight: Flight<T> = {
            let mut map = self.inflight.lock().expect("single-flight map poisoned");
            match map.get(&key).and_then(WeakShared::upgrade) {
                Some(f) => f,
                None => {
                    map.retain(|_, w| w.upgrade().is_some());
                    let f = start().shared();
                    map.insert(key.clone(), f.downgrade().expect("a new shared future is pending"));
                    f
                }
            }
        };
        let result = flight.clone().await;
        let mut map = self.inflight.lock().expect("single-flight map poisoned");
        if map.get(&key).and_then(WeakShared::upgrade).is_some_and(|f| f.ptr_eq(&flight)) {
            map.remove(&key);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = Arc::new(SingleFlight::<&str, usize>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run("img", || {
                        async move {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            runs.fetch_add(1, Ordering::SeqCst) + 100
                        }
                        .boxed()
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 100);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // After completion the next caller starts a new run.
        let again = flights.run("img", || async { 7 }.boxed()).await;
        assert_eq!(again, 7);
    }

    #[tokio::test]
    async fn the_work_is_dropped_when_every_waiter_leaves() {
        struct DropFlag(Arc<AtomicUsize>);
        impl Drop for DropFlag {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let flights = Arc::new(SingleFlight::<&str, ()>::new());
        let dropped = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run("img", move || {
                        async move {
                            let _flag = DropFlag(d);
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        .boxed()
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        waiter.abort();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "abandoned work was not dropped");
    }
}
