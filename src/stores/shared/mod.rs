//! What every backend repeats: the data and version codec, the scan page limit, the
//! stored-id error, and the TLS helpers of the networked stores. Nothing here knows a
//! backend; each backend reads from here and never from another backend.

// Each helper is used by some backends only, so a build with one backend leaves some unused.
#![allow(dead_code)]

pub(crate) mod codec;

/// TLS helpers of the Postgres, MySQL and Redis stores.
#[cfg(any(feature = "postgres-tls", feature = "mysql-tls", feature = "redis-tls"))]
pub(crate) mod tls;

/// The most sessions one `scan` page returns, whatever limit the caller asks for.
pub(crate) const MAX_SCAN_LIMIT: usize = 10_000;

/// A caller's page limit as a backend serves it: at least 1, at most [`MAX_SCAN_LIMIT`].
pub(crate) fn scan_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_SCAN_LIMIT)
}

/// Whether `err` came from a connection whose socket belongs to a tokio runtime that has
/// shut down: its I/O fails at once with tokio's "being shutdown" error, before anything is
/// sent, so the operation can run again on another connection. (tokio offers no other way
/// to tell: the error is an `io::ErrorKind::Other` with that message.)
pub(crate) fn opened_on_a_stopped_runtime(err: &crate::error::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::Other
                && io
                    .to_string()
                    .contains("context was found, but it is being shutdown");
        }
        source = cause.source();
    }
    false
}
