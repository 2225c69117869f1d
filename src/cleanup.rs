//! A background task that removes expired sessions (feature `cleanup`, enabled by both
//! adapter features).
//!
//! Stores that keep expired sessions until someone deletes them (files, SQLite, Postgres)
//! never return them, but they still take space. [`spawn_cleanup`] starts a tokio task that
//! calls [`delete_expired`](SessionStore::delete_expired) once per period:
//!
//! - the first sweep runs one period after the spawn, then one every period (a sweep that
//!   takes longer than the period delays the next one instead of piling up);
//! - a failing sweep is logged with [`tracing`] (at `warn`, with the error and its sources)
//!   and the task keeps going: the next sweep runs on schedule. (tower-sessions' own
//!   `continuously_delete_expired` ends at the first error, and nobody notices.) Successful
//!   sweeps that removed something are logged at `debug`;
//! - a sweep that has not finished within the sweep timeout (default
//!   [`DEFAULT_SWEEP_TIMEOUT`], see [`spawn_cleanup_with_timeout`]) is abandoned and counted
//!   and logged as a failure, so a hung store (a stopped server, a hung disk) never stalls the
//!   task silently: the next sweep runs on schedule;
//! - the task stops when its [`CleanupHandle`] is dropped, or on
//!   [`CleanupHandle::stop`] (which also waits for it to end). A sweep that is running when
//!   the handle goes is abandoned at its next `.await`; the contract makes that safe, since
//!   `delete_expired` never removes a live session.
//!
//! [`CleanupHandle::sweeps`] and [`CleanupHandle::failures`] count what the task did, for
//! health checks and tests.
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use session_stores::{MemoryStore, cleanup::spawn_cleanup};
//!
//! let store = Arc::new(MemoryStore::new(10_000));
//! let cleanup = spawn_cleanup(Arc::clone(&store), Duration::from_secs(300));
//! // ... serve requests with `store` ...
//! cleanup.stop().await;
//! # }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```
//!
//! It needs a running tokio runtime (any flavour, including actix-web's).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::store::SessionStore;

/// How long one sweep may take before [`spawn_cleanup`] abandons it as hung: 60 seconds.
pub const DEFAULT_SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a task that calls `store.delete_expired()` every `period`, logging failures and
/// carrying on, with a sweep timeout of [`DEFAULT_SWEEP_TIMEOUT`]. The task ends when the
/// returned handle is dropped or stopped.
///
/// A zero `period` is raised to one millisecond.
///
/// # Panics
///
/// If called outside a tokio runtime (as [`tokio::spawn`] does).
pub fn spawn_cleanup<S>(store: Arc<S>, period: Duration) -> CleanupHandle
where
    S: SessionStore + ?Sized + 'static,
{
    spawn_cleanup_with_timeout(store, period, DEFAULT_SWEEP_TIMEOUT)
}

/// Like [`spawn_cleanup`], with a sweep that has not finished within `sweep_timeout` abandoned,
/// counted in [`CleanupHandle::failures`] and logged as a failure (a transient
/// [`Error::Timeout`](crate::Error::Timeout)). A zero timeout is raised to one millisecond.
///
/// # Panics
///
/// If called outside a tokio runtime (as [`tokio::spawn`] does).
pub fn spawn_cleanup_with_timeout<S>(
    store: Arc<S>,
    period: Duration,
    sweep_timeout: Duration,
) -> CleanupHandle
where
    S: SessionStore + ?Sized + 'static,
{
    let period = period.max(Duration::from_millis(1));
    let sweep_timeout = sweep_timeout.max(Duration::from_millis(1));
    let counters = Arc::new(Counters::default());
    let task_counters = Arc::clone(&counters);
    let task = tokio::spawn(async move {
        let start = tokio::time::Instant::now() + period;
        let mut ticks = tokio::time::interval_at(start, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let sweep = store.delete_expired();
            match crate::deadline::within(sweep_timeout, "delete_expired", None, sweep).await {
                Ok(removed) => {
                    task_counters.sweeps.fetch_add(1, Ordering::Relaxed);
                    if removed > 0 {
                        tracing::debug!(removed, "session cleanup: removed expired sessions");
                    }
                }
                Err(err) => {
                    task_counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        error = %error_chain(&err),
                        transient = err.is_transient(),
                        "session cleanup: delete_expired failed; trying again next period"
                    );
                }
            }
        }
    });
    CleanupHandle {
        task: Some(task),
        counters,
    }
}

/// The error and its chain of sources as one line (for logs, and for middleware error types
/// that hold only a string). Errors of this crate never contain a whole session id or data.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[derive(Default, Debug)]
struct Counters {
    sweeps: AtomicU64,
    failures: AtomicU64,
}

/// Owns the task started by [`spawn_cleanup`]: dropping it stops the task.
#[derive(Debug)]
#[must_use = "dropping the handle stops the cleanup task at once"]
pub struct CleanupHandle {
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl CleanupHandle {
    /// How many sweeps succeeded so far.
    pub fn sweeps(&self) -> u64 {
        self.counters.sweeps.load(Ordering::Relaxed)
    }

    /// How many sweeps failed so far (each was logged, and the task went on).
    pub fn failures(&self) -> u64 {
        self.counters.failures.load(Ordering::Relaxed)
    }

    /// Whether the task is still running. It only ends when stopped, or if a store's
    /// `delete_expired` panics.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// Stops the task and waits until it has ended.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // The task never returns on its own; the join reports the cancellation (or a
            // panic of the store), neither of which is the caller's concern here.
            let _ = task.await;
        }
    }

    /// Lets the task run for as long as the runtime does, without a handle.
    pub fn detach(mut self) {
        self.task.take();
    }
}

impl Drop for CleanupHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::SystemTime;

    use async_trait::async_trait;
    use tokio::sync::mpsc;

    use super::*;
    use crate::error::{Error, Result};
    use crate::session::{Session, SessionId};

    /// Fails the first `fail` calls of `delete_expired`, then succeeds; reports every call
    /// on a channel.
    struct Flaky {
        fail: usize,
        calls: AtomicUsize,
        seen: mpsc::UnboundedSender<std::result::Result<(), ()>>,
        /// Whether a failing `delete_expired` hangs instead of returning its error.
        hang: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl SessionStore for Flaky {
        async fn get(&self, _: &SessionId) -> Result<Option<Session>> {
            Ok(None)
        }
        async fn set(&self, _: &SessionId, _: &Session) -> Result<u64> {
            Ok(1)
        }
        async fn destroy(&self, _: &SessionId) -> Result<()> {
            Ok(())
        }
        async fn touch(&self, _: &SessionId, _: SystemTime) -> Result<bool> {
            Ok(false)
        }
        async fn create(&self, _: &SessionId, _: &Session) -> Result<bool> {
            Ok(true)
        }
        async fn set_if_version(&self, _: &SessionId, _: &Session, e: u64) -> Result<u64> {
            Ok(e + 1)
        }
        async fn len(&self) -> Result<u64> {
            Ok(0)
        }
        async fn clear(&self) -> Result<()> {
            Ok(())
        }
        async fn delete_expired(&self) -> Result<u64> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail {
                let _ = self.seen.send(Err(()));
                if self.hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                Err(Error::unavailable(
                    "delete_expired",
                    None,
                    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "down"),
                ))
            } else {
                let _ = self.seen.send(Ok(()));
                Ok(3)
            }
        }
    }

    fn flaky(
        fail: usize,
    ) -> (
        Arc<Flaky>,
        mpsc::UnboundedReceiver<std::result::Result<(), ()>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let store = Arc::new(Flaky {
            fail,
            calls: AtomicUsize::new(0),
            seen: tx,
            hang: Default::default(),
        });
        (store, rx)
    }

    /// Waits until the task has let go of the store (it holds the only other clone).
    async fn released(store: &Arc<Flaky>) {
        while Arc::strong_count(store) > 1 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn keeps_going_after_errors() {
        let (store, mut seen) = flaky(3);
        let handle = spawn_cleanup(Arc::clone(&store), Duration::from_millis(5));
        for _ in 0..3 {
            assert_eq!(seen.recv().await, Some(Err(())));
        }
        assert_eq!(seen.recv().await, Some(Ok(())));
        assert_eq!(seen.recv().await, Some(Ok(())));
        assert!(handle.is_running());
        assert_eq!(handle.failures(), 3);
        // On this single-threaded runtime the counter is bumped in the same poll as the
        // call that reported.
        assert!(handle.sweeps() >= 1);
        handle.stop().await;
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "stop waited for the task to end"
        );
    }

    #[tokio::test]
    async fn first_sweep_comes_one_period_in_and_then_every_period() {
        let (store, mut seen) = flaky(0);
        let period = Duration::from_millis(40);
        let start = tokio::time::Instant::now();
        let _handle = spawn_cleanup(Arc::clone(&store), period);
        seen.recv().await.unwrap().unwrap();
        // Lower bounds only: tokio never fires an interval early.
        assert!(start.elapsed() >= period, "no sweep at spawn time");
        seen.recv().await.unwrap().unwrap();
        assert!(start.elapsed() >= 2 * period);
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_the_task() {
        let (store, mut seen) = flaky(0);
        let handle = spawn_cleanup(Arc::clone(&store), Duration::from_millis(2));
        seen.recv().await.unwrap().unwrap();
        drop(handle);
        released(&store).await;
        let calls = store.calls.load(Ordering::SeqCst);
        // Twenty periods: a live task would have swept again.
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            store.calls.load(Ordering::SeqCst),
            calls,
            "no sweep after the drop"
        );
    }

    #[tokio::test]
    async fn detach_keeps_it_running() {
        let (store, mut seen) = flaky(0);
        spawn_cleanup(Arc::clone(&store), Duration::from_millis(2)).detach();
        seen.recv().await.unwrap().unwrap();
        seen.recv().await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_zero_period_still_works() {
        let (store, mut seen) = flaky(1);
        let handle = spawn_cleanup(Arc::clone(&store), Duration::ZERO);
        assert_eq!(seen.recv().await, Some(Err(())));
        assert_eq!(seen.recv().await, Some(Ok(())));
        handle.stop().await;
    }

    #[tokio::test]
    async fn a_hung_sweep_is_a_failure_and_the_next_one_still_runs() {
        let (store, mut started) = flaky(usize::MAX);
        store.hang.store(true, Ordering::SeqCst);
        let handle = spawn_cleanup_with_timeout(
            Arc::clone(&store),
            Duration::from_millis(5),
            Duration::from_millis(20),
        );
        for _ in 0..3 {
            started.recv().await.unwrap().unwrap_err();
        }
        assert!(handle.failures() >= 2, "{} failures", handle.failures());
        assert_eq!(handle.sweeps(), 0);
        assert!(handle.is_running());
        handle.stop().await;
    }
}
