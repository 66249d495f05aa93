//! The open connections: what each is doing, which ones may be closed, and closing them.
//!
//! A connection is either *busy* (a request has been read in full and its answer is not
//! yet sent) or *waiting* (for the first request, or for the next one on a keep-alive
//! connection). A waiting connection holds nothing but a socket, and closing it loses
//! nothing: a client that sent half a request never gets an answer anyway, and an HTTP
//! client retries an idempotent request on a keep-alive connection that was closed. So
//! waiting connections are what gives way:
//!
//! - after their timeout ([`Connections::sweep`], every [`Limits::tick`]): the *header
//!   timeout* from the first byte of a request (or from accepting a connection that sends
//!   nothing) until the request is complete, and the *idle timeout* between an answer and
//!   the next request; a busy connection whose client stopped reading the answer (writes
//!   blocked) for the idle timeout is closed too;
//! - when the connection limit is reached ([`Connections::make_room`]), the ones that have
//!   been waiting longest, a batch at a time so that finding them (a scan of the table)
//!   costs little per accepted connection;
//! - when the process runs out of file descriptors ([`Connections::shed`]);
//! - at shutdown, all of them at once ([`Connections::close_waiting`]).
//!
//! Busy connections are never closed to make room: if every connection is busy, the server
//! stops accepting until one finishes, and the kernel's listen backlog holds the newcomers.
//!
//! A connection is closed by aborting its task, which drops the socket (and with it
//! hyper's state); the task's [`Registration`] takes it out of the table however it ends.
//! The per-request bookkeeping is a few atomic operations on the connection's own
//! [`ConnState`]; the table's lock is taken once per connection and once per sweep.

use super::Limits;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// What one connection is doing, updated by its I/O and its requests. Times are
/// milliseconds since the table's epoch, plus one (so that 0 means "none").
pub struct ConnState {
    epoch: Instant,
    /// Requests read in full whose answers are not sent yet.
    busy: AtomicU32,
    /// Whether a request has been answered (so waiting means idle between requests).
    served: AtomicBool,
    /// When it started waiting: accepted, or its last answer sent.
    waiting_since: AtomicU64,
    /// The first byte of a request that is not complete yet.
    first_byte: AtomicU64,
    /// Since when a write has been blocked (the client does not read).
    write_blocked: AtomicU64,
}

impl ConnState {
    fn new(epoch: Instant) -> Self {
        let state = ConnState {
            epoch,
            busy: AtomicU32::new(0),
            served: AtomicBool::new(false),
            waiting_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
        };
        state.waiting_since.store(state.now(), Ordering::Relaxed);
        state
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Bytes arrived from the client.
    pub fn on_read(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 && self.first_byte.load(Ordering::Relaxed) == 0 {
            self.first_byte.store(self.now(), Ordering::Relaxed);
        }
    }

    /// A write could not proceed (`blocked`) or did.
    pub fn on_write(&self, blocked: bool) {
        let since = self.write_blocked.load(Ordering::Relaxed);
        if blocked && since == 0 {
            self.write_blocked.store(self.now(), Ordering::Relaxed);
        } else if !blocked && since != 0 {
            self.write_blocked.store(0, Ordering::Relaxed);
        }
    }

    /// A request was read in full; the connection is busy until the guard is dropped (when
    /// its answer has been sent, or abandoned).
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.first_byte.store(0, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    fn is_waiting(&self) -> bool {
        self.busy.load(Ordering::Relaxed) == 0
    }

    /// Whether it has overstayed its timeout at `now`.
    fn expired(&self, now: u64, limits: &Limits) -> bool {
        let ms = |d: Duration| d.as_millis() as u64;
        let after = |since: u64, limit: Duration| since != 0 && now.saturating_sub(since) > ms(limit);
        if !self.is_waiting() {
            return after(self.write_blocked.load(Ordering::Relaxed), limits.idle_timeout);
        }
        let first_byte = self.first_byte.load(Ordering::Relaxed);
        if first_byte != 0 {
            return after(first_byte, limits.header_timeout);
        }
        let waiting = self.waiting_since.load(Ordering::Relaxed);
        let limit = if self.served.load(Ordering::Relaxed) { limits.idle_timeout } else { limits.header_timeout };
        after(waiting, limit)
    }
}

/// Marks a connection busy while a request is answered.
pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let state = &self.0;
        state.served.store(true, Ordering::Relaxed);
        state.waiting_since.store(state.now(), Ordering::Relaxed);
        state.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Entry {
    state: Arc<ConnState>,
    task: AbortHandle,
}

/// The table of open connections.
pub struct Connections {
    limits: Limits,
    epoch: Instant,
    table: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    /// Signalled when a connection leaves the table.
    left: Notify,
}

/// Keeps a connection in the table while its task lives.
pub struct Registration {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.remove(self.id);
    }
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            epoch: Instant::now(),
            table: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            left: Notify::new(),
        })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Every change is a single insert or remove: a panic cannot leave it half-done.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_full(&self) -> bool {
        self.len() >= self.limits.max_connections
    }

    /// Adds a connection whose task `start` spawns, given its state and its registration.
    pub fn add(self: &Arc<Self>, start: impl FnOnce(Arc<ConnState>, Registration) -> tokio::task::JoinHandle<()>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(self.epoch));
        let registration = Registration { connections: self.clone(), id };
        // Under the lock, so the task cannot end (and remove itself) before it is added.
        let mut table = self.table();
        let task = start(state.clone(), registration).abort_handle();
        table.insert(id, Entry { state, task });
    }

    fn remove(&self, id: u64) {
        if self.table().remove(&id).is_some() {
            self.left.notify_waiters();
        }
    }

    /// Returns when there is room for one more connection: at once if the table is not
    /// full or waiting connections could be closed, else when a busy one has finished.
    pub async fn wait_for_room(&self) {
        loop {
            let left = self.left.notified();
            tokio::pin!(left);
            // Registered before looking, so a connection leaving in between is not missed.
            left.as_mut().enable();
            if !self.is_full() || self.make_room() > 0 {
                return;
            }
            left.await;
        }
    }

    /// Returns when every connection has left.
    pub async fn wait_until_empty(&self) {
        loop {
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            left.await;
        }
    }

    /// Closes the connections that overstayed their timeout; how many.
    pub fn sweep(&self) -> usize {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.close_where(|state| state.expired(now, &self.limits), usize::MAX)
    }

    /// With the table full, closes the waiting connections that have waited longest (a
    /// batch, so the next accepts need not look again); how many.
    pub fn make_room(&self) -> usize {
        let len = self.len();
        if len < self.limits.max_connections {
            return 0;
        }
        let needed = len + 1 - self.limits.max_connections;
        self.close_oldest_waiting(needed.max(self.limits.max_connections / 64).max(1))
    }

    /// Closes some of the waiting connections (an eighth, at least one) to free file
    /// descriptors; how many.
    pub fn shed(&self) -> usize {
        self.close_oldest_waiting((self.len() / 8).max(1))
    }

    /// Closes every waiting connection (shutdown); how many.
    pub fn close_waiting(&self) -> usize {
        self.close_where(ConnState::is_waiting, usize::MAX)
    }

    /// Closes every connection (the end of shutdown).
    pub fn close_all(&self) -> usize {
        self.close_where(|_| true, usize::MAX)
    }

    fn close_oldest_waiting(&self, count: usize) -> usize {
        let mut table = self.table();
        let mut waiting: Vec<(u64, u64)> = table
            .iter()
            .filter(|(_, e)| e.state.is_waiting())
            .map(|(id, e)| (e.state.waiting_since.load(Ordering::Relaxed), *id))
            .collect();
        if waiting.len() > count {
            waiting.select_nth_unstable(count);
            waiting.truncate(count);
        }
        for (_, id) in &waiting {
            if let Some(entry) = table.remove(id) {
                entry.task.abort();
            }
        }
        waiting.len()
    }

    fn close_where(&self, close: impl Fn(&ConnState) -> bool, most: usize) -> usize {
        let mut table = self.table();
        let ids: Vec<u64> = table.iter().filter(|(_, e)| close(&e.state)).map(|(id, _)| *id).take(most).collect();
        for id in &ids {
            if let Some(entry) = table.remove(id) {
                entry.task.abort();
            }
        }
        ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize) -> Limits {
        Limits { header_timeout: Duration::from_millis(100), idle_timeout: Duration::from_millis(300), max_connections }
    }

    /// A connection whose task waits forever; its state.
    fn add(connections: &Arc<Connections>) -> Arc<ConnState> {
        let mut state = None;
        connections.add(|s, registration| {
            state = Some(s);
            tokio::spawn(async move {
                let _registration = registration;
                std::future::pending::<()>().await
            })
        });
        state.unwrap()
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn a_silent_or_half_sent_connection_gets_the_header_timeout() {
        let c = Connections::new(limits(10));
        let silent = add(&c);
        let half = add(&c);
        half.on_read();
        assert_eq!(c.sweep(), 0);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(c.sweep(), 2);
        settle().await;
        assert_eq!(c.len(), 0);
        drop((silent, half));
    }

    #[tokio::test]
    async fn between_requests_the_idle_timeout_applies_and_busy_ones_stay() {
        let c = Connections::new(limits(10));
        let idle = add(&c);
        drop(idle.begin_request());
        let busy = add(&c);
        let _request = busy.begin_request();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(c.sweep(), 0, "past the header timeout, within the idle timeout");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(c.sweep(), 1, "the idle one only");
        settle().await;
        assert_eq!(c.len(), 1);
        // A busy connection whose client stopped reading is closed after the idle timeout.
        busy.on_write(true);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(c.sweep(), 1);
    }

    #[tokio::test]
    async fn making_room_closes_the_longest_waiting_and_never_a_busy_one() {
        let c = Connections::new(limits(3));
        let oldest = add(&c);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let busy = add(&c);
        let _request = busy.begin_request();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let newer = add(&c);
        assert!(c.is_full());
        assert_eq!(c.make_room(), 1);
        settle().await;
        assert_eq!(c.len(), 2);
        assert!(Arc::strong_count(&oldest) == 1, "the oldest waiting connection is closed");
        assert!(Arc::strong_count(&newer) > 1 && Arc::strong_count(&busy) > 1);
        // Only busy connections: nothing to close.
        let c = Connections::new(limits(1));
        let only = add(&c);
        let _request = only.begin_request();
        assert_eq!(c.make_room(), 0);
        assert_eq!(c.close_waiting(), 0);
        assert_eq!(c.close_all(), 1);
    }
}
