//! How sqlx errors become the crate's errors, and the retry of a statement that failed with a
//! serialization failure or a deadlock.

use crate::error::{Error, IdHint};
use crate::session::SessionId;

/// Runs a statement (`$statement`, built on the executor `$e`, which is `$conn`). If it fails
/// with a serialization failure or a deadlock (possible only on a connection whose isolation
/// level is above `read committed`, such as an application's own pool at `serializable`), it
/// runs it once more inside `BEGIN ISOLATION LEVEL READ COMMITTED`, where a single statement
/// cannot fail that way. Each statement is a whole operation, so running it again is safe;
/// the fast path stays one round trip.
macro_rules! retry {
    ($conn:ident => $e:ident : $statement:expr) => {{
        let first = {
            let $e = &mut *$conn;
            $statement.await
        };
        match first {
            Err(err) if $crate::stores::postgres::error::is_serialization_failure(&err) => {
                async {
                    let mut tx = sqlx::Connection::begin_with(
                        &mut *$conn,
                        "BEGIN ISOLATION LEVEL READ COMMITTED",
                    )
                    .await?;
                    let result = {
                        let $e = &mut *tx;
                        $statement.await
                    }?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(result)
                }
                .await
            }
            other => other,
        }
    }};
}
pub(super) use retry;

/// Classifies an sqlx error: connection trouble is transient, the rest is a backend error.
pub(super) fn map_err(op: &'static str, id: Option<&SessionId>, err: sqlx::Error) -> Error {
    // An untrusted or misnamed certificate, a refused client certificate, no common TLS
    // version (sqlx reports them as I/O errors): retrying gets the same answer, so this is
    // not transient.
    #[cfg(feature = "postgres-tls")]
    let err = match crate::stores::shared::tls::Refused::of(
        err,
        "to trust a private CA: sslrootcert=/path/ca.pem in the URL, with sslmode=verify-full",
        "sslcert=/path/client.pem&sslkey=/path/client.key in the URL",
    ) {
        Ok(refused) => return Error::backend(op, id, refused),
        Err(err) => err,
    };
    if let sqlx::Error::Tls(tls) = &err
        && !cfg!(feature = "postgres-tls")
        && tls.to_string().contains("without TLS support")
    {
        return Error::Config {
            message: "the Postgres URL asks for TLS (sslmode=require, verify-ca or \
                      verify-full) and needs the `postgres-tls` feature of session-stores: add \
                      features = [\"postgres-tls\"] to its line in Cargo.toml (or pass \
                      --features postgres-tls to cargo)"
                .into(),
            source: Some(Box::new(err)),
        };
    }
    match &err {
        sqlx::Error::PoolTimedOut => Error::Timeout {
            operation: op,
            id: id.map(IdHint::from),
            what: "a pooled connection",
            source: Some(Box::new(err)),
        },
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            Error::unavailable(op, id, err)
        }
        // A connection cut while it was being opened, just after sqlx asked for TLS: sqlx
        // reads the closed socket as a one-byte answer 0x00 (a server's answer is `S` or
        // `N`; another server's, such as Redis' `-ERR`, is never 0x00). Found by the fault
        // proxy: a reset there is as transient as any other.
        sqlx::Error::Protocol(message) if message.contains("from SSLRequest: 0x00") => {
            Error::unavailable(op, id, err)
        }
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300") {
                Error::unavailable(op, id, err)
            } else if code == "57014" {
                // query_canceled: `statement_timeout` (or a cancel request) stopped it.
                Error::Timeout {
                    operation: op,
                    id: id.map(IdHint::from),
                    what: "the statement (statement_timeout)",
                    source: Some(Box::new(err)),
                }
            } else if code == "55P03" {
                // lock_not_available: `lock_timeout` ended a wait for a lock that another
                // transaction holds (a migration's, an operator's); the same call may succeed.
                Error::Timeout {
                    operation: op,
                    id: id.map(IdHint::from),
                    what: "a lock (lock_timeout)",
                    source: Some(Box::new(err)),
                }
            } else if matches!(code, "40001" | "40P01") {
                // serialization_failure, deadlock_detected: the same call may succeed.
                Error::unavailable(op, id, err)
            } else {
                Error::backend(op, id, err)
            }
        }
        _ => Error::backend(op, id, err),
    }
}

/// Like [`map_err`], but for statements that carry session data: a value Postgres cannot
/// store in `jsonb` (such as U+0000) is an encode error for the session.
pub(super) fn map_write_err(op: &'static str, id: &SessionId, err: sqlx::Error) -> Error {
    let unstorable = err
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| matches!(&*code, "22P05" | "22P02"));
    if unstorable {
        Error::encode(id, err)
    } else {
        map_err(op, Some(id), err)
    }
}

/// Whether `err` is a database error whose SQLSTATE is one of `codes`.
pub(super) fn has_sql_state(err: &sqlx::Error, codes: &[&str]) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| codes.contains(&code.as_ref()))
}

/// serialization_failure or deadlock_detected.
pub(super) fn is_serialization_failure(err: &sqlx::Error) -> bool {
    has_sql_state(err, &["40001", "40P01"])
}
