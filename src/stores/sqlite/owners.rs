//! Owners: listing an owner's sessions and ending them, the bodies of
//! [`SessionStore::sessions_of`] and [`SessionStore::destroy_owner`].

use rusqlite::params;
use rusqlite::types::ValueRef;

use crate::error::Result;
use crate::session::{Owner, SessionId, now_millis};
use crate::store::OwnedSession;
#[cfg(doc)]
use crate::store::SessionStore;

use super::SqliteStore;
use super::immediate;
use super::row::decode_listed;

impl SqliteStore {
    /// [`SessionStore::sessions_of`]: the owner's live sessions, on a read connection.
    pub(super) async fn owner_sessions(
        &self,
        owner: &Owner,
        with_data: bool,
    ) -> Result<Vec<OwnedSession>> {
        let owner = owner.as_str().to_owned();
        // On a read connection, not inline: a listing can be long, and an inline read would
        // run it on the caller's (executor's) thread with no deadline.
        self.read("sessions_of", None, move |conn, sql| {
            let query = if with_data {
                &sql.sessions_of_with_data
            } else {
                &sql.sessions_of
            };
            let mut stmt = conn.prepare_cached(query)?;
            let mut rows = stmt.query(params![owner, now_millis()])?;
            let mut listed = Vec::new();
            while let Some(row) = rows.next()? {
                listed.extend(decode_listed(row, with_data)?);
            }
            Ok(listed)
        })
        .await
    }

    /// [`SessionStore::destroy_owner`]: deletes the owner's sessions (but `except`), on the
    /// write connection, and counts the live ones.
    pub(super) async fn destroy_owner_sessions(
        &self,
        owner: &Owner,
        except: Option<&SessionId>,
    ) -> Result<u64> {
        let owner = owner.as_str().to_owned();
        let except = except.map(|id| id.as_str().to_owned());
        self.write("destroy_owner", None, move |conn, sql| {
            let tx = immediate(conn)?;
            // Read under the write lock, like every write's: which of the owner's sessions
            // were live is decided when they are deleted.
            let now = now_millis();
            let mut ended = 0u64;
            {
                let mut stmt = tx.prepare_cached(&sql.destroy_owner)?;
                let mut rows = stmt.query(params![owner, except, now])?;
                while let Some(row) = rows.next()? {
                    if matches!(row.get_ref(0)?, ValueRef::Integer(1)) {
                        ended += 1;
                    }
                }
            }
            tx.commit()?;
            Ok(ended)
        })
        .await
    }
}
