//! Scans: one page of the table in id order, the body of [`SessionStore::scan`].

use rusqlite::params;
use rusqlite::types::ValueRef;

use crate::error::{Error, Result};
use crate::session::{SessionId, now_millis};
#[cfg(doc)]
use crate::store::SessionStore;
use crate::store::{ScanCursor, ScanPage, Undecodable};
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
        let after = cursor
            .map(|c| {
                c.keyset_text("SqliteStore")
                    .map(std::borrow::Cow::into_owned)
            })
            .transpose()?;
        let limit = scan_limit(limit);
        // On a read connection, like `sessions_of`: a page can be long.
        self.read("scan", None, move |conn, sql| {
            let now = now_millis();
            let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut sessions = Vec::new();
            let mut undecodable = Vec::new();
            let (mut rows_read, mut last) = (0usize, None);
            let mut each = |row: &rusqlite::Row<'_>| -> Result<(), OpError> {
                let key = scanned_key(row)?;
                rows_read += 1;
                match SessionId::new(key.as_str()) {
                    // Reported, and the scan goes on past it.
                    Err(_) => undecodable.push(Undecodable::new(None, invalid_stored_id(&key))),
                    Ok(id) => match decode_row(row)? {
                        Ok(session) => sessions.push((id, session)),
                        Err(err) => {
                            let err = Error::decode(&id, err);
                            undecodable.push(Undecodable::new(Some(id), err));
                        }
                    },
                }
                last = Some(key);
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
            // A short page is the last one; a full one goes on after its last key.
            let next = match rows_read < limit {
                true => None,
                false => last.as_deref().map(ScanCursor::after_text),
            };
            Ok(ScanPage::new(sessions, next).with_undecodable(undecodable))
        })
        .await
    }
}

/// The key of a scanned row (its sixth column) as text; a key that is not UTF-8 text is a
/// decode error naming what it holds (no cursor could go on past it exactly).
fn scanned_key(row: &rusqlite::Row<'_>) -> Result<String, OpError> {
    let value = row.get_ref(5)?;
    match value {
        ValueRef::Text(text) => match std::str::from_utf8(text) {
            Ok(key) => Ok(key.to_owned()),
            Err(_) => Err(OpError::Done(invalid_stored_id(&String::from_utf8_lossy(
                text,
            )))),
        },
        other => Err(OpError::Done(invalid_stored_id(describe(other)))),
    }
}
