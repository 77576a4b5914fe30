//! Work that must not slow serving down.
//!
//! A publish hashes, writes, fsyncs and indexes gigabytes; on a 2-core hub
//! that work, run at the same priority as serving, took the p99 of small
//! object reads to 9x their idle figure (`bench/load`). It runs instead on a
//! few threads at a lower CPU priority (Linux applies `nice` per thread), so
//! requests from agents and relays are scheduled first and the publish uses
//! the time they leave.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use crate::ApiError;

/// How much nicer than the process background threads are: at nice 0
/// against 10 (CFS weights 1024 and 110), serving threads get about 90% of
/// a contended core.
const BACKGROUND_NICE: libc::c_int = 10;

type Job = Box<dyn FnOnce() + Send>;

fn pool() -> &'static Mutex<Sender<Job>> {
    static POOL: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("ferry-background-{i}"))
                .spawn(move || work(&rx))
                .expect("spawning a background thread");
        }
        Mutex::new(tx)
    })
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    // SAFETY: getpriority and setpriority only read their integer
    // arguments; on Linux a thread id names that one thread. Relative to the
    // process's own nice value, so a hub started with `nice` keeps the gap.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    let target = (current + BACKGROUND_NICE).min(19);
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, target) } != 0 {
        tracing::debug!(
            "background thread keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
    loop {
        let job = match jobs.lock().map(|rx| rx.recv()) {
            Ok(Ok(job)) => job,
            _ => return,
        };
        job();
    }
}

/// Runs bulk work (ingesting uploads, assembling a publish) on the
/// lower-priority background threads and waits for its result.
pub async fn background<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // A panicking job must not take its thread with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(ApiError::internal("a background task panicked")));
        let _ = tx.send(result);
    });
    pool()
        .lock()
        .map_err(|_| ApiError::internal("the background pool is poisoned"))?
        .send(job)
        .map_err(|_| ApiError::internal("the background pool stopped"))?;
    rx.await
        .map_err(|_| ApiError::internal("a background task failed"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_at_lower_priority_and_survives_a_panic() {
        let nice = background(|| {
            // SAFETY: reads this thread's own priority.
            let tid = unsafe { libc::gettid() };
            Ok(unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) })
        })
        .await
        .unwrap();
        // SAFETY: as above, for the test's own thread.
        let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        assert_eq!(nice, (own + BACKGROUND_NICE).min(19));

        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for _ in 0..threads + 1 {
            let panicked = background::<()>(|| panic!("a job that panics")).await;
            assert!(panicked.is_err());
        }
        assert_eq!(background(|| Ok(7)).await.unwrap(), 7, "the pool survived");
    }
}
