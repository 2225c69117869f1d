//! What a job on a connection thread fails with, and how SQLite's errors become the
//! crate's [`Error`].

use std::fmt;

use rusqlite::ffi::ErrorCode;

use crate::error::{Error, IdHint};
use crate::session::SessionId;

/// What the store waits for when a lock is still busy after the busy timeout.
const LOCK_WAIT: &str = "the SQLite database lock";

/// What a job on a connection thread can fail with; turned into an [`Error`] naming the
/// operation and the session on the way back.
#[derive(Debug)]
pub(super) enum OpError {
    Sql(rusqlite::Error),
    Row(RowError),
    Conflict(u64),
    /// A write through a rotated id.
    Rotated,
    /// The operation's deadline passed before its job could start.
    Deadline,
    /// An error already made, naming its own session (a listed row that is not a session).
    Done(Error),
}

impl From<rusqlite::Error> for OpError {
    fn from(err: rusqlite::Error) -> Self {
        OpError::Sql(err)
    }
}

impl From<RowError> for OpError {
    fn from(err: RowError) -> Self {
        OpError::Row(err)
    }
}

impl OpError {
    pub(super) fn into_error(self, op: &'static str, id: Option<&SessionId>) -> Error {
        match (self, id) {
            (OpError::Sql(err), id) => sql_error(op, id, err),
            (OpError::Row(err), Some(id)) => Error::decode(id, err),
            (OpError::Row(err), None) => Error::backend(op, None, err),
            (OpError::Conflict(expected), Some(id)) => Error::conflict(id, expected),
            (OpError::Conflict(expected), None) => Error::backend(
                op,
                None,
                format!("unexpected version conflict (expected {expected})"),
            ),
            (OpError::Rotated, Some(id)) => Error::rotated(id),
            (OpError::Rotated, None) => {
                Error::backend(op, None, "unexpected write through a rotated id")
            }
            (OpError::Deadline, id) => Error::Timeout {
                operation: op,
                id: id.map(IdHint::from),
                what: "the operation's deadline",
                source: None,
            },
            (OpError::Done(err), _) => err,
        }
    }
}

/// Whether `err` is SQLite's "database is locked" (or "busy").
pub(super) fn is_locked(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Maps a rusqlite error: a lock still busy after the busy timeout is a transient
/// [`Error::Timeout`], anything else a [`Error::Backend`].
pub(super) fn sql_error(op: &'static str, id: Option<&SessionId>, err: rusqlite::Error) -> Error {
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Timeout {
            operation: op,
            id: id.map(IdHint::from),
            what: LOCK_WAIT,
            source: Some(Box::new(err)),
        },
        _ => Error::backend(op, id, err),
    }
}

/// A stored row that is not a valid session.
#[derive(Debug)]
pub(super) enum RowError {
    Json(crate::error::JsonError),
    Column {
        column: &'static str,
        found: &'static str,
    },
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowError::Json(_) => f.write_str("the data column is not a JSON object"),
            RowError::Column { column, found } => {
                write!(f, "the {column} column holds {found}")
            }
        }
    }
}

impl std::error::Error for RowError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RowError::Json(err) => Some(err),
            RowError::Column { .. } => None,
        }
    }
}
