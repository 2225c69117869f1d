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
use std::sync::OnceLock;
use std::task::Poll;
use std::time::Duration;

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
/// tokio runtime at all. `None` if the thread cannot be started.
fn timer_sleep(timeout: Duration) -> Option<tokio::time::Sleep> {
    static TIMER: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    let handle = TIMER.get_or_init(start_timer).as_ref()?;
    let _enter = handle.enter();
    Some(tokio::time::sleep(timeout))
}

fn start_timer() -> Option<tokio::runtime::Handle> {
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("session-stores-timer".to_string())
        .spawn(move || {
            // Built (and never dropped) on its own thread: dropping a runtime inside an async
            // context would panic.
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(runtime) => {
                    let _ = handle_tx.send(Some(runtime.handle().clone()));
                    runtime.block_on(std::future::pending::<()>());
                }
                Err(_) => {
                    let _ = handle_tx.send(None);
                }
            }
        })
        .ok()?;
    handle_rx
        .recv_timeout(Duration::from_secs(10))
        .ok()
        .flatten()
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
}
