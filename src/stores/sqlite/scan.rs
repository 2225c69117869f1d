//! Scans: one page of the table in id order, the body of [`SessionStore::scan`].

use rusqlite::params;
use rusqlite::types::ValueRef;

use crate::error::{Error, Result};
use crate::session::{SessionId, now_millis};
#[cfg(doc)]
use crate::store::SessionStore;
use crate::store::{ScanCursor, ScanPage};
use crate::stores::shared::codec::invalid_stored_id;
use crate::stores::shared::scan_limit;

use super::SqliteStore;
use super::error::OpError;
use super::row::{decode_row, describe};

impl SqliteStore {
    /// [`SessionStore::scan`]: one page of live sessions in id order, on a read connection.
    pub(super) async fn scan_page(
        &self,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage> {
        let after = cursor.map(|c| c.keyset_id("SqliteStore")).transpose()?;
        let limit = scan_limit(limit);
        // On a read connection, like `sessions_of`: a page can be long.
        self.read("scan", None, move |conn, sql| {
            let now = now_millis();
            let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut sessions = Vec::new();
            let mut each = |row: &rusqlite::Row<'_>| -> Result<(), OpError> {
                let id = scanned_id(row)?;
                match decode_row(row)? {
                    Ok(session) => sessions.push((id, session)),
                    Err(err) => return Err(OpError::Done(Error::decode(&id, err))),
                }
                Ok(())
            };
            match &after {
                None => {
                    let mut stmt = conn.prepare_cached(&sql.scan_first)?;
                    let mut rows = stmt.query(params![now, sql_limit])?;
                    while let Some(row) = rows.next()? {
                        each(row)?;
                    }
                }
                Some(after) => {
                    let mut stmt = conn.prepare_cached(&sql.scan_after)?;
                    let mut rows = stmt.query(params![after.as_str(), now, sql_limit])?;
                    while let Some(row) = rows.next()? {
                        each(row)?;
                    }
                }
            }
            // A short page is the last one; a full one goes on after its last id.
            let next = match sessions.len() < limit {
                true => None,
                false => sessions.last().map(|(id, _)| ScanCursor::after_id(id)),
            };
            Ok(ScanPage::new(sessions, next))
        })
        .await
    }
}

/// The id of a scanned row (its fifth column); a row whose id is no valid session id is a
/// decode error naming what it holds.
fn scanned_id(row: &rusqlite::Row<'_>) -> Result<SessionId, OpError> {
    let value = row.get_ref(4)?;
    let id = match value {
        ValueRef::Text(text) => std::str::from_utf8(text).ok(),
        _ => None,
    };
    match id.and_then(|id| SessionId::new(id).ok()) {
        Some(id) => Ok(id),
        None => {
            let raw = match value {
                ValueRef::Text(text) => String::from_utf8_lossy(text).into_owned(),
                other => describe(other).to_owned(),
            };
            Err(OpError::Done(invalid_stored_id(&raw)))
        }
    }
}
