//! The codec the SQL and file backends share: a session's data as JSON text, a version as a
//! signed 64-bit integer, and the error for a stored entry whose id is no valid session id.

use crate::error::{Error, IdHint, Result};
use crate::session::{MAX_VERSION, Session, SessionId};

/// The session's data as JSON text, after checking its nesting depth (see
/// [`check_nesting`](crate::session::check_nesting)); an error names the session.
pub(crate) fn encode_data(id: &SessionId, session: &Session) -> Result<String> {
    crate::session::check_nesting(id, session.data())?;
    serde_json::to_string(session.data()).map_err(|err| Error::encode(id, err))
}

/// A version as a signed 64-bit integer (SQLite's `INTEGER`, Postgres' `bigint`). Every
/// version a store assigns is at most [`MAX_VERSION`], far below `i64::MAX`.
pub(crate) fn version_to_i64(version: u64) -> i64 {
    i64::try_from(version.min(MAX_VERSION)).unwrap_or(i64::MAX)
}

/// The error for a stored entry (a row, a file) whose id column or name holds `raw`, which
/// is no valid session id. The error carries a shortened hint of `raw`, never all of it.
pub(crate) fn invalid_stored_id(raw: &str) -> Error {
    Error::Decode {
        id: IdHint::from_raw(raw),
        source: "the id column holds no valid session id".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_fit_a_signed_integer() {
        assert_eq!(version_to_i64(0), 0);
        assert_eq!(version_to_i64(7), 7);
        assert_eq!(version_to_i64(MAX_VERSION), MAX_VERSION as i64);
        assert_eq!(version_to_i64(u64::MAX), MAX_VERSION as i64);
    }

    #[test]
    fn an_invalid_stored_id_is_a_decode_error() {
        let err = invalid_stored_id("not a valid id at all");
        assert_eq!(err.kind(), crate::ErrorKind::Decode);
    }
}
