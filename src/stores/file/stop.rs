//! When a blocking job of the file store must stop: its caller's deadline has passed, or its
//! caller dropped the operation (a client that went away, a `select!` that took another
//! branch). The store's job runner sets the job's [`Stop`] for the thread that runs it; the
//! walks check it at every entry and before every lock wait, and a locked operation checks
//! it once it holds its locks, so work whose caller gave up does not go on (or write) on
//! the blocking pool behind the caller's back.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::session::SessionId;

thread_local! {
    static CURRENT: RefCell<Option<Stop>> = const { RefCell::new(None) };
}

/// A job's stop condition.
#[derive(Clone)]
pub(super) struct Stop {
    deadline: Instant,
    abandoned: Arc<AtomicBool>,
}

/// Marks its job abandoned when dropped: held by the future that awaits the job, so that
/// dropping the operation (or the operation's own deadline, which drops it) reaches the job.
pub(super) struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Stop {
    /// A stop at `deadline`, and the guard whose drop stops the job earlier.
    pub(super) fn at(deadline: Instant) -> (Stop, Abandon) {
        let abandoned = Arc::new(AtomicBool::new(false));
        let stop = Stop {
            deadline,
            abandoned: Arc::clone(&abandoned),
        };
        (stop, Abandon(abandoned))
    }

    /// The job's deadline.
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the job must stop now.
    fn due(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    /// Runs `f` with this stop as the thread's current one.
    pub(super) fn run<T>(self, f: impl FnOnce() -> T) -> T {
        /// Clears the thread's stop also if `f` panics (the thread goes back to the pool).
        struct Clear;
        impl Drop for Clear {
            fn drop(&mut self) {
                CURRENT.with_borrow_mut(|current| *current = None);
            }
        }
        CURRENT.with_borrow_mut(|current| *current = Some(self));
        let _clear = Clear;
        f()
    }
}

/// `timeout` from now, or a century from now for a timeout too large to add.
pub(super) fn deadline_after(timeout: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// The current job's stop, if the thread runs one.
pub(super) fn current() -> Option<Stop> {
    CURRENT.with_borrow(Clone::clone)
}

/// Fails with a transient [`Error::Timeout`] if the current job must stop (its deadline
/// passed or its caller dropped it); `Ok` outside a job.
pub(super) fn check(op: &'static str, id: Option<&SessionId>) -> Result<()> {
    if current().is_some_and(|stop| stop.due()) {
        return Err(Error::Timeout {
            operation: op,
            id: id.map(Into::into),
            what: "the operation's deadline (or its caller gave up)",
            source: None,
        });
    }
    Ok(())
}
