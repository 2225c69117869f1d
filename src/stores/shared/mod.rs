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

/// One page of a SQL store's keyset `scan` from its `rows` (at most `limit` of them, in key
/// order): each row's key by `key_of`, its session by `decode`. The clock is read again, now
/// that the rows are here, as `get` does; a row dropped as expired still moves the cursor on,
/// so the page may come out short (or empty) while the scan goes on. An entry that does not
/// decode, or whose key is no valid session id, is reported, and the scan goes on past it.
/// Fewer rows than `limit` mean the table had no more: no next cursor.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn keyset_page<R>(
    rows: &[R],
    limit: usize,
    key_of: impl Fn(&R) -> crate::error::Result<String>,
    decode: impl Fn(&crate::session::SessionId, &R) -> crate::error::Result<crate::session::Session>,
) -> crate::error::Result<crate::store::ScanPage> {
    use crate::session::SessionId;
    use crate::store::{ScanCursor, ScanPage, Undecodable};
    let now = crate::session::now_millis();
    let mut sessions = Vec::with_capacity(rows.len());
    let mut undecodable = Vec::new();
    let mut last = None;
    for row in rows {
        let key = key_of(row)?;
        match SessionId::new(key.as_str()) {
            Err(_) => undecodable.push(Undecodable::new(None, codec::invalid_stored_id(&key))),
            Ok(id) => match decode(&id, row) {
                Ok(session) if session.is_expired_at(now) => {}
                Ok(session) => sessions.push((id, session)),
                Err(err) => undecodable.push(Undecodable::new(Some(id), err)),
            },
        }
        last = Some(key);
    }
    let next = match rows.len() < limit {
        true => None,
        false => last.as_deref().map(ScanCursor::after_text),
    };
    Ok(ScanPage::new(sessions, next).with_undecodable(undecodable))
}
