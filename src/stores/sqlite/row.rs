//! Decoding stored rows into sessions, never panicking on what a row holds.

use rusqlite::types::ValueRef;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::session::{Owner, Session, SessionId};
use crate::store::OwnedSession;

use super::error::{OpError, RowError};

pub(super) fn describe(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

/// Decodes `data, expires_at, version, owner, absolute_expiry` into a session, never
/// panicking on what is stored.
pub(super) fn decode_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Session, RowError>> {
    let data = row.get_ref(0)?;
    let expires_at = row.get_ref(1)?;
    let version = row.get_ref(2)?;
    let owner = row.get_ref(3)?;
    let absolute = row.get_ref(4)?;
    Ok((|| {
        let session = Session::from_parts(
            decode_data(data)?,
            integer_expiry(expires_at)?,
            integer_version(version)?,
        );
        Ok(session
            .with_owner(decode_owner(owner)?)
            .with_absolute_expiry_millis(decode_absolute(absolute)?))
    })())
}

/// The `absolute_expiry` column: NULL for none, else an integer (epoch milliseconds).
pub(super) fn decode_absolute(value: ValueRef<'_>) -> Result<Option<i64>, RowError> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(ms) => Ok(Some(ms)),
        other => Err(RowError::Column {
            column: "absolute_expiry",
            found: describe(other),
        }),
    }
}

pub(super) fn decode_data(value: ValueRef<'_>) -> Result<Map<String, Value>, RowError> {
    match value {
        ValueRef::Text(text) => serde_json::from_slice(text).map_err(|e| RowError::Json(e.into())),
        other => Err(RowError::Column {
            column: "data",
            found: describe(other),
        }),
    }
}

pub(super) fn integer_expiry(value: ValueRef<'_>) -> Result<i64, RowError> {
    match value {
        ValueRef::Integer(ms) => Ok(ms),
        other => Err(RowError::Column {
            column: "expires_at",
            found: describe(other),
        }),
    }
}

/// The `owner` column: NULL for none, else text that is a valid [`Owner`].
pub(super) fn decode_owner(value: ValueRef<'_>) -> Result<Option<Owner>, RowError> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Text(text) => std::str::from_utf8(text)
            .ok()
            .and_then(|text| Owner::new(text).ok())
            .map(Some)
            .ok_or(RowError::Column {
                column: "owner",
                found: "text that is not a valid owner",
            }),
        other => Err(RowError::Column {
            column: "owner",
            found: describe(other),
        }),
    }
}

/// Decodes a listed row, `id, expires_at, version[, data]`, into an entry; a row that is not a
/// valid session is a decode error naming it.
pub(super) fn decode_listed(
    row: &rusqlite::Row<'_>,
    with_data: bool,
) -> Result<Option<OwnedSession>, OpError> {
    let id = match row.get_ref(0)? {
        ValueRef::Text(text) => std::str::from_utf8(text).ok(),
        _ => None,
    };
    // A stored id that is not valid names no session a caller could end: left out (a scan
    // reports it).
    let Some(id) = id.and_then(|id| SessionId::new(id).ok()) else {
        return Ok(None);
    };
    let expires_at = integer_expiry(row.get_ref(1)?);
    let version = integer_version(row.get_ref(2)?);
    let data = match with_data {
        true => Some(decode_data(row.get_ref(3)?)),
        false => None,
    };
    // Listed as undecodable, with what could be read, if any part is not valid.
    let (at, v) = (
        expires_at.as_ref().map_or(0, |at| *at),
        version.as_ref().map_or(0, |v| *v),
    );
    let entry = (|| Ok::<_, RowError>((expires_at?, version?, data.transpose()?)))();
    let entry = match entry {
        Ok((expires_at, version, data)) => OwnedSession::new(id, expires_at, version, data),
        Err(err) => {
            let err = Error::decode(&id, err);
            OwnedSession::undecodable(id, at, v, err)
        }
    };
    Ok(Some(entry))
}

pub(super) fn integer_version(value: ValueRef<'_>) -> Result<u64, RowError> {
    match value {
        ValueRef::Integer(v) => u64::try_from(v).map_err(|_| RowError::Column {
            column: "version",
            found: "a negative integer",
        }),
        other => Err(RowError::Column {
            column: "version",
            found: describe(other),
        }),
    }
}
