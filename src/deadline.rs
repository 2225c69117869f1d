//! Client-side deadlines: every store operation ends within a bounded time.
//!
//! A half-open TCP connection, a stopped Redis, a hung disk or a database lock held by a
//! stuck process must not hang a request forever. Every built-in store bounds each operation
//! with an operation timeout (builder option `operation_timeout`, default
//! [`DEFAULT_OPERATION_TIMEOUT`]) and reports an overrun as a transient
//! [`Error::Timeout`] naming the operation and the session.
//!
//! [`within`] is that bound, public for stores of your own; the
//! [`WithDeadline`](crate::wrappers::deadline::WithDeadline) wrapper puts it around any store.
//!
//! What an overrun means for the write: the operation's future is dropped. A backend that was
//! still working may finish the write afterwards (the contract's atomicity still holds: the
//! write happens whole or not at all), so after a `Timeout` the caller does not know which; a
//! compare-and-set retry loop stays correct either way.

use std::future::Future;
use std::sync::RwLock;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::session::SessionId;

/// The default bound on one store operation: 5 seconds.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `operation` (a store operation called `name`, on session `id` if it has one) and
/// fails it with [`Error::Timeout`] if it has not finished within `timeout`.
///
/// The operation is polled by the caller's executor; only the timer lives on the crate's own
/// timer thread (started once per process), so the bound holds under any executor, including
/// a tokio runtime built without timers.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use session_stores::{deadline::within, ErrorKind};
///
/// let slow = async {
///     tokio::time::sleep(Duration::from_secs(60)).await;
///     Ok(())
/// };
/// let err = within(Duration::from_millis(10), "get", None, slow).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Timeout);
/// assert!(err.is_transient());
/// # });
/// ```
pub async fn within<T>(
    timeout: Duration,
    name: &'static str,
    id: Option<&SessionId>,
    operation: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(sleep) = timer_sleep(timeout) else {
        // No timer thread could be started (the process is out of threads): the backend's
        // own timeouts are all that bound the operation.
        return operation.await;
    };
    let mut operation = std::pin::pin!(operation);
    let mut sleep = std::pin::pin!(sleep);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = operation.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::Timeout {
                operation: name,
                id: id.map(Into::into),
                what: "the operation's deadline",
                source: None,
            })),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A sleep of `timeout` on the crate's timer runtime: one thread running a current-thread
/// tokio runtime with only its time driver, started with the first deadline of the process.
/// A sleep made there can be awaited from any executor (the operation itself is polled where
/// the caller polls it), so deadlines hold in a tokio runtime built without timers, or in no
/// tokio runtime at all. `None` if the thread cannot be started (see [`TimerSlot`]).
fn timer_sleep(timeout: Duration) -> Option<tokio::time::Sleep> {
    static TIMER: TimerSlot = TimerSlot::new();
    // The process id is asked for on every deadline (a system call: with the slot's lock,
    // about 90 ns more per operation than a handle kept once, measured by `benches/deadline.rs`;
    // a fork handler would be cheaper but needs `unsafe`, which this crate forbids).
    TIMER.sleep(timeout, std::process::id, start_timer)
}

/// How long after a failed start of the timer thread the next deadline tries again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Where the timer runtime's handle is kept, with the process it was started in.
///
/// - A start that failed (the process out of threads, say) is not kept: the first deadline
///   at least [`RESTART_PAUSE`] later tries again, so deadlines come back once threads do
///   (meanwhile the backends' own timeouts bound each operation).
/// - A handle from another process is not used: after `fork()` the child has none of its
///   parent's threads, so the timer thread is started anew in the child.
/// - Starting never waits for the thread: the runtime is built by the caller and handed to
///   the thread, so the first deadline of a process does not block an executor thread
///   while a new thread is scheduled.
struct TimerSlot(RwLock<Timer>);

/// What a [`TimerSlot`] holds.
enum Timer {
    /// Not started yet.
    Absent,
    /// Running, started in the process `pid`.
    Running {
        pid: u32,
        handle: tokio::runtime::Handle,
    },
    /// The last start failed, at `at`.
    Failed { at: Instant },
}

impl TimerSlot {
    const fn new() -> Self {
        TimerSlot(RwLock::new(Timer::Absent))
    }

    /// A sleep on the timer of process `pid()`, started with `start` if it has none.
    fn sleep(
        &self,
        timeout: Duration,
        pid: impl Fn() -> u32,
        start: impl FnOnce() -> Option<tokio::runtime::Handle>,
    ) -> Option<tokio::time::Sleep> {
        let pid = pid();
        let sleep_on = |timer: &Timer| match timer {
            Timer::Running { pid: owner, handle } if *owner == pid => {
                let _enter = handle.enter();
                Some(tokio::time::sleep(timeout))
            }
            _ => None,
        };
        if let Some(sleep) = sleep_on(&self.0.read().unwrap_or_else(|poison| poison.into_inner())) {
            return Some(sleep);
        }
        let mut timer = self.0.write().unwrap_or_else(|poison| poison.into_inner());
        if let Some(sleep) = sleep_on(&timer) {
            return Some(sleep);
        }
        if matches!(*timer, Timer::Failed { at } if at.elapsed() < RESTART_PAUSE) {
            return None;
        }
        *timer = match start() {
            Some(handle) => Timer::Running { pid, handle },
            None => Timer::Failed { at: Instant::now() },
        };
        sleep_on(&timer)
    }
}

fn start_timer() -> Option<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .ok()?;
    let handle = runtime.handle().clone();
    // The runtime is never dropped: not on its thread, which runs it for the life of the
    // process, and not here if the thread cannot be started (dropping a runtime inside an
    // async context panics; a runtime that was never run is leaked instead).
    let runtime = std::mem::ManuallyDrop::new(runtime);
    std::thread::Builder::new()
        .name("session-stores-timer".to_string())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .ok()?;
    Some(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deadline holds with no timer in the caller's runtime (and with no runtime at all).
    #[test]
    fn the_deadline_holds_in_a_runtime_without_timers() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let err = runtime
            .block_on(within(
                Duration::from_millis(50),
                "get",
                None,
                std::future::pending::<Result<()>>(),
            ))
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Timeout);
        assert!(started.elapsed() < Duration::from_secs(5));
        let ok = runtime.block_on(within(Duration::from_secs(5), "get", None, async { Ok(7) }));
        assert_eq!(ok.unwrap(), 7);
    }

    /// A failed start is not kept: deadlines are off until the pause has passed, then the
    /// next one starts the timer. A handle from another process (a `fork()` parent's) is not
    /// used: the child starts its own.
    #[test]
    fn a_failed_start_is_retried_and_a_forked_child_starts_its_own_timer() {
        let slot = TimerSlot::new();
        let starts = std::cell::Cell::new(0);
        let failing = || {
            starts.set(starts.get() + 1);
            None
        };
        assert!(slot.sleep(Duration::from_secs(1), || 7, failing).is_none());
        assert!(slot.sleep(Duration::from_secs(1), || 7, failing).is_none());
        assert_eq!(starts.get(), 1, "a second start within the pause");
        *slot.0.write().unwrap() = Timer::Failed {
            at: Instant::now() - RESTART_PAUSE,
        };
        let starting = || {
            starts.set(starts.get() + 1);
            start_timer()
        };
        assert!(slot.sleep(Duration::from_secs(1), || 7, starting).is_some());
        assert!(slot.sleep(Duration::from_secs(1), || 7, starting).is_some());
        assert_eq!(starts.get(), 2, "started once after the pause, then kept");
        // The same slot seen from another process id: a new timer.
        assert!(slot.sleep(Duration::from_secs(1), || 8, starting).is_some());
        assert_eq!(
            starts.get(),
            3,
            "a forked child uses its parent's timer thread"
        );
        let sleep = slot
            .sleep(Duration::from_millis(20), || 8, || None)
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let started = Instant::now();
        runtime.block_on(sleep);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
