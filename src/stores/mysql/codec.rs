//! Session data to and from the table: the row decoders and versions.

use sqlx::Row;
use sqlx::mysql::MySqlRow;

use crate::error::{Error, Result};
use crate::session::{Owner, Session, SessionId};
use crate::store::OwnedSession;

pub(super) fn to_version(op: &'static str, id: &SessionId, version: i64) -> Result<u64> {
    u64::try_from(version).map_err(|err| Error::backend(op, Some(id), err))
}

/// A `VARBINARY` column (an id, an owner) as text.
fn text_of(bytes: Vec<u8>) -> std::result::Result<String, std::string::FromUtf8Error> {
    String::from_utf8(bytes)
}

/// A session from a row of `get` or `scan` (`data, expires_at, version, owner,
/// absolute_expiry, ...`).
pub(super) fn decode_row(id: &SessionId, row: &MySqlRow) -> Result<Session> {
    let data: String = row.try_get(0).map_err(|e| Error::decode(id, e))?;
    let expires_at: i64 = row.try_get(1).map_err(|e| Error::decode(id, e))?;
    let version: i64 = row.try_get(2).map_err(|e| Error::decode(id, e))?;
    let owner: Option<Vec<u8>> = row.try_get(3).map_err(|e| Error::decode(id, e))?;
    let owner = owner
        .map(|owner| {
            text_of(owner)
                .map_err(|e| Error::decode(id, e))
                .and_then(|owner| Owner::new(owner).map_err(|e| Error::decode(id, e)))
        })
        .transpose()?;
    // A table migrated from a release before absolute expiries reads NULL.
    let absolute: Option<i64> = row.try_get(4).map_err(|e| Error::decode(id, e))?;
    Ok(decode_parts(id, &data, expires_at, version)?
        .with_owner(owner)
        .with_absolute_expiry_millis(absolute))
}

/// An entry of `sessions_of` from its row (`id, expires_at, version[, data]`): a row that
/// is not a valid session is listed as undecodable, with what could be read; one whose id
/// is not valid is left out (`None`: it names no session a caller could end).
pub(super) fn decode_listed(row: &MySqlRow, with_data: bool) -> Result<Option<OwnedSession>> {
    let raw: Vec<u8> = row
        .try_get(0)
        .map_err(|e| Error::backend("sessions_of", None, e))?;
    let Some(id) = text_of(raw).ok().and_then(|raw| SessionId::new(raw).ok()) else {
        return Ok(None);
    };
    let expires_at: Result<i64> = row.try_get(1).map_err(|e| Error::decode(&id, e));
    let version: Result<i64> = row.try_get(2).map_err(|e| Error::decode(&id, e));
    let (at, v) = (
        expires_at.as_ref().map_or(0, |at| *at),
        version
            .as_ref()
            .ok()
            .and_then(|v| u64::try_from(*v).ok())
            .unwrap_or(0),
    );
    let entry = (|| {
        let data: Option<String> = match with_data {
            true => Some(row.try_get(3).map_err(|e| Error::decode(&id, e))?),
            false => None,
        };
        let session = decode_parts(&id, data.as_deref().unwrap_or("{}"), expires_at?, version?)?;
        Ok::<_, Error>(OwnedSession::of(id.clone(), session, with_data))
    })();
    Ok(Some(entry.unwrap_or_else(|err| {
        OwnedSession::undecodable(id, at, v, err)
    })))
}

/// A session from the text of its `data` column (the JSON the store wrote), its expiry in
/// milliseconds and its version.
pub(super) fn decode_parts(
    id: &SessionId,
    data: &str,
    expires_at: i64,
    version: i64,
) -> Result<Session> {
    let data = serde_json::from_str(data).map_err(|e| Error::decode(id, e))?;
    let version = u64::try_from(version).map_err(|e| Error::decode(id, e))?;
    if version == 0 {
        return Err(Error::decode(id, "the stored version is 0"));
    }
    Ok(Session::from_parts(data, expires_at, version))
}

/// The id of a scanned row (its sixth column), as text; one that is not UTF-8 is given
/// with its invalid bytes replaced (it is no valid session id either way).
pub(super) fn scanned_key(row: &MySqlRow) -> Result<String> {
    let raw: Vec<u8> = row
        .try_get(5)
        .map_err(|e| Error::backend("scan", None, e))?;
    Ok(String::from_utf8(raw)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}
