//! Client-side deadlines: every store operation ends within a bounded time.
//!
//! A half-open TCP connection, a stopped Redis, a hung disk or a database lock held by a
//! stuck process must not hang a request forever. Every built-in store bounds each operation
//! with an operation timeout (builder option `operation_timeout`, default
//! [`DEFAULT_OPERATION_TIMEOUT`]) and reports an overrun as a transient
//! [`Error::Timeout`](crate::Error::Timeout) naming the operation and the session.
//!
//! [`within`] is that bound, public for stores of your own; the
//! [`WithDeadline`](crate::wrappers::deadline::WithDeadline) wrapper puts it around any store.
//!
//! What an overrun means for the write: the operation's future is dropped. A backend that was
//! still working may finish the write afterwards (the contract's atomicity still holds: the
//! write happens whole or not at all), so after a `Timeout` the caller does not know which; a
//! compare-and-set retry loop stays correct either way.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::session::SessionId;

/// The default bound on one store operation: 5 seconds.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `operation` (a store operation called `name`, on session `id` if it has one) and
/// fails it with [`Error::Timeout`] if it has not finished within `timeout`.
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
    match tokio::time::timeout(timeout, operation).await {
        Ok(result) => result,
        Err(elapsed) => Err(Error::Timeout {
            operation: name,
            id: id.map(Into::into),
            what: "the operation's deadline",
            source: Some(Box::new(elapsed)),
        }),
    }
}
