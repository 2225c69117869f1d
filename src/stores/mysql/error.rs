//! How sqlx errors become the crate's errors, and the retry of a statement that InnoDB
//! rolled back as a deadlock victim.

use sqlx::mysql::MySqlDatabaseError;

use crate::error::{Error, IdHint};
use crate::session::SessionId;

/// How many times [`retry!`] runs a statement that InnoDB chose as a deadlock victim,
/// counting the first.
pub(super) const DEADLOCK_ATTEMPTS: u32 = 4;

/// Runs a statement (`$statement`, built on the executor `$e`, which is `$conn`). If InnoDB
/// rolls it back as a deadlock victim (concurrent upserts of one id take their locks in an
/// order that can cross), it runs it again, up to [`DEADLOCK_ATTEMPTS`] times in all. Each
/// statement is a whole operation in autocommit mode, and a victim's statement changed
/// nothing, so running it again is safe; the fast path stays one round trip.
macro_rules! retry {
    ($conn:ident => $e:ident : $statement:expr) => {{
        let mut attempt = 1;
        loop {
            let result = {
                let $e = &mut *$conn;
                $statement.await
            };
            match result {
                Err(err)
                    if $crate::stores::mysql::error::is_deadlock(&err)
                        && attempt < $crate::stores::mysql::error::DEADLOCK_ATTEMPTS =>
                {
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}
pub(super) use retry;

/// The server's error number of a database error (MySQL's and MariaDB's `ER_*` codes).
pub(super) fn error_number(err: &sqlx::Error) -> Option<u16> {
    err.as_database_error()
        .and_then(|db| db.try_downcast_ref::<MySqlDatabaseError>())
        .map(MySqlDatabaseError::number)
}

/// `ER_LOCK_DEADLOCK`.
pub(super) fn is_deadlock(err: &sqlx::Error) -> bool {
    error_number(err) == Some(1213)
}

/// `ER_DUP_ENTRY`: the insert of an id a row already holds.
pub(super) fn is_duplicate(err: &sqlx::Error) -> bool {
    error_number(err) == Some(1062)
}

/// `ER_TABLEACCESS_DENIED_ERROR` and its kin: the role may not run the statement.
pub(super) fn is_denied(err: &sqlx::Error) -> bool {
    matches!(error_number(err), Some(1142 | 1044 | 1227))
}

/// Classifies an sqlx error: connection trouble is transient, the rest is a backend error.
pub(super) fn map_err(op: &'static str, id: Option<&SessionId>, err: sqlx::Error) -> Error {
    // An untrusted or misnamed certificate, a refused client certificate, no common TLS
    // version (sqlx reports them as I/O errors): retrying gets the same answer, so this is
    // not transient.
    #[cfg(feature = "mysql-tls")]
    let err = match crate::stores::shared::tls::Refused::of(
        err,
        "to trust a private CA: ssl-ca=/path/ca.pem in the URL, with ssl-mode=VERIFY_IDENTITY",
        "ssl-cert=/path/client.pem&ssl-key=/path/client.key in the URL",
    ) {
        Ok(refused) => return Error::backend(op, id, refused),
        Err(err) => err,
    };
    if let sqlx::Error::Tls(tls) = &err
        && !cfg!(feature = "mysql-tls")
        && tls.to_string().contains("without TLS support")
    {
        return Error::Config {
            message: "the MySQL URL asks for TLS (ssl-mode=REQUIRED, VERIFY_CA or \
                      VERIFY_IDENTITY) and needs the `mysql-tls` feature of session-stores: add \
                      features = [\"mysql-tls\"] to its line in Cargo.toml (or pass \
                      --features mysql-tls to cargo)"
                .into(),
            source: Some(Box::new(err)),
        };
    }
    let timeout = |what: &'static str, err: sqlx::Error| Error::Timeout {
        operation: op,
        id: id.map(IdHint::from),
        what,
        source: Some(Box::new(err)),
    };
    match &err {
        sqlx::Error::PoolTimedOut => timeout("a pooled connection", err),
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            Error::unavailable(op, id, err)
        }
        sqlx::Error::Database(_) => match error_number(&err) {
            // Too many connections, server shutdown, connection killed, deadlock victim (after
            // the retries), the server going away: the same call may succeed.
            Some(
                1040 | 1053 | 1077 | 1078 | 1079 | 1152 | 1158..=1161 | 1213 | 1927 | 2006 | 2013,
            ) => Error::unavailable(op, id, err),
            // `innodb_lock_wait_timeout` ended a wait for a row lock another transaction
            // holds; the same call may succeed.
            Some(1205) => timeout("a row lock (innodb_lock_wait_timeout)", err),
            // `max_statement_time` (MariaDB), `max_execution_time` (MySQL), a `KILL QUERY`.
            Some(1969 | 3024 | 1317) => timeout("the statement (max_statement_time)", err),
            _ => Error::backend(op, id, err),
        },
        _ => Error::backend(op, id, err),
    }
}

/// Like [`map_err`], but for statements that carry session data: data the server refuses
/// to store (a packet over `max_allowed_packet`, a value it cannot convert) is an encode
/// error for the session.
pub(super) fn map_write_err(op: &'static str, id: &SessionId, err: sqlx::Error) -> Error {
    match error_number(&err) {
        Some(1153 | 1301 | 1366 | 1406) => Error::encode(id, err),
        _ => map_err(op, Some(id), err),
    }
}
