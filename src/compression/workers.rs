//! The threads that compress layer blocks: a fixed set, shared by every layer being built.
//!
//! One set for the whole process, sized by the cores ([`Workers::shared`]), rather than
//! threads per layer: the server builds several layers at once (one per core), and threads
//! per layer would multiply the threads, and the blocks in memory, by the number of layers
//! without adding a core. Jobs run in the order they were submitted, so layers share the
//! workers fairly. Tests and benchmarks make their own sets ([`Workers::new`]) to pin the
//! count; dropping a set lets its threads finish the jobs already queued and joins them.

use std::io;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A unit of work. It reports its result itself (through a channel it owns), so a job that
/// panics only drops its own channel and the worker goes on with the next.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of compression threads fed from one queue.
pub struct Workers {
    queue: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` threads.
    pub fn new(count: NonZeroUsize) -> io::Result<Arc<Self>> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        let mut workers = Workers { queue: Some(queue), threads: Vec::with_capacity(count.get()) };
        for i in 0..count.get() {
            let jobs = Arc::clone(&jobs);
            // On failure, dropping `workers` stops and joins the threads already started.
            let thread = thread::Builder::new().name(format!("nixery-compress-{i}")).spawn(move || run(&jobs))?;
            workers.threads.push(thread);
        }
        Ok(Arc::new(workers))
    }

    /// The process-wide set, one thread per available core, started on first use.
    pub fn shared() -> io::Result<Arc<Self>> {
        static SHARED: Mutex<Option<Arc<Workers>>> = Mutex::new(None);
        let mut shared = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(workers) = &*shared {
            return Ok(Arc::clone(workers));
        }
        let cores = thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        let workers = Workers::new(cores)?;
        *shared = Some(Arc::clone(&workers));
        Ok(workers)
    }

    /// How many threads there are.
    pub fn count(&self) -> NonZeroUsize {
        NonZeroUsize::new(self.threads.len()).expect("a worker set has at least one thread")
    }

    /// Queues `job`; it runs on the next free thread, after every job queued before it.
    pub(crate) fn submit(&self, job: Job) {
        // The receiving side lives as long as a thread does, and threads only stop once
        // `queue` is dropped, which happens in `drop`: sending cannot fail while `self` lives.
        let queue = self.queue.as_ref().expect("the queue is open until drop");
        queue.send(job).expect("worker threads outlive the queue");
    }
}

/// A worker's loop: the next job, until the queue is closed and empty.
fn run(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A panicking job has dropped its result channel, which its submitter reports as an
        // error; the thread itself stays for the next job.
        let _ = panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// The CPU time the calling thread has used so far (user and system): what a job costs,
/// whatever else the machine runs at the same time.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given; the clock exists on every
    // Linux since 2.6.12.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

impl Drop for Workers {
    fn drop(&mut self) {
        drop(self.queue.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_job_and_joins_on_drop() {
        let workers = Workers::new(NonZeroUsize::new(3).unwrap()).unwrap();
        assert_eq!(workers.count().get(), 3);
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let done = Arc::clone(&done);
            workers.submit(Box::new(move || {
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        // Dropping the last handle finishes the queued jobs and joins the threads.
        drop(workers);
        assert_eq!(done.load(Ordering::SeqCst), 100);
    }

    #[test]
    fn a_panicking_job_does_not_take_its_thread_down() {
        let workers = Workers::new(NonZeroUsize::MIN).unwrap();
        let (tx, rx) = mpsc::channel::<u8>();
        let dropped = tx.clone();
        workers.submit(Box::new(move || {
            let _owned = dropped;
            panic!("a job fails");
        }));
        workers.submit(Box::new(move || tx.send(7).unwrap()));
        assert_eq!(rx.recv().unwrap(), 7);
    }

    #[test]
    fn thread_cpu_time_counts_this_threads_work_only() {
        let before = thread_cpu_time();
        thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu_time() - before;
        let mut x = 0u64;
        let busy_from = thread_cpu_time();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let busy = thread_cpu_time() - busy_from;
        assert!(slept < Duration::from_millis(20), "sleeping took {slept:?} of CPU");
        assert!(busy > Duration::from_millis(5), "spinning took {busy:?} of CPU");
    }

    #[test]
    fn the_shared_set_is_one_set() {
        let a = Workers::shared().unwrap();
        let b = Workers::shared().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
