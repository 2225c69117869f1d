#![doc = include_str!("docs.md")]

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::mysql::MySqlConnection;
use sqlx::{MySqlPool, Row};

use crate::deadline::within;
use crate::error::{Error, Result};
use crate::session::{
    Owner, Session, SessionId, fresh_version, next_version, now_millis, to_millis,
};
use crate::store::{Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore};
use crate::stores::shared::codec::{encode_data, version_to_i64};
use crate::stores::shared::{keyset_page, opened_on_a_stopped_runtime, scan_limit};

// Named by the module docs only.
#[cfg(doc)]
use crate::error::IdHint;

#[cfg(feature = "cli")]
pub(crate) mod admin;
mod builder;
mod codec;
mod error;
mod schema;
mod statements;
#[cfg(test)]
mod tests;
pub(crate) mod url;

pub use builder::{
    DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_DELETE_BATCH_SIZE, DEFAULT_MAX_CONNECTIONS, DEFAULT_TABLE,
    MySqlStoreBuilder, PING_IF_IDLE_FOR,
};
pub use schema::MIGRATE_LOCK_NAME;

use codec::{decode_listed, decode_row, scanned_key, to_version};
use error::{is_deadlock, is_duplicate, map_err, map_write_err, retry};
use statements::{ROTATED, Statements};

/// How many times `create` inserts after removing an expired row that held its id, before
/// it answers that the id is taken: each round means another writer put a row there in
/// between, which a create may lose to.
const CREATE_ROUNDS: u32 = 3;

/// How many times `rotate` runs its transaction when InnoDB rolled it back as a deadlock
/// victim (two rotations crossing each other's ids), counting the first.
const ROTATE_ATTEMPTS: u32 = 4;

/// A future running `$body` (one operation's statements, ending in a `Result`) with `$conn`
/// bound to a pooled connection (`&mut MySqlConnection`): see [`MySqlStore::conn`].
///
/// A connection opened on a tokio runtime that has since shut down (actix-web runs one per
/// worker; tests start and stop runtimes) fails its first I/O before anything is sent: it is
/// closed, and `$body` runs again on another connection, at most
/// [`stale_limit`](MySqlStore::stale_limit) times.
macro_rules! on_conn {
    ($store:expr, $op:expr, $id:expr, |$conn:ident| $body:block) => {
        async {
            let mut stale = 0u32;
            loop {
                let mut pooled = Unfinished {
                    conn: $store.conn($op, $id).await?,
                    finished: false,
                };
                let result = {
                    let $conn: &mut MySqlConnection = &mut pooled.conn;
                    async { $body }.await
                };
                pooled.finished = true;
                match result {
                    Err(err)
                        if opened_on_a_stopped_runtime(&err) && stale < $store.stale_limit() =>
                    {
                        stale += 1;
                        pooled.conn.close_on_drop();
                    }
                    result => break result,
                }
            }
        }
    };
}

/// A pooled connection while an operation runs on it. If the operation is dropped midway
/// (its caller's deadline, a client that went away), the connection may be in the middle of
/// a statement's exchange, which sqlx's MySQL driver cannot resume: the next statement on
/// it would read the rest of the old reply. So it is closed, never returned to the pool.
struct Unfinished {
    conn: sqlx::pool::PoolConnection<sqlx::MySql>,
    /// The operation ran to its end (whatever it answered).
    finished: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// One operation of the store: `$body` run as [`on_conn!`] runs it, within the store's
/// operation timeout, named `$op` (on session `$id`) in its errors.
macro_rules! operation {
    ($store:expr, $op:expr, $id:expr, |$conn:ident| $body:block) => {
        within(
            $store.operation_timeout,
            $op,
            $id,
            on_conn!($store, $op, $id, |$conn| $body),
        )
    };
}

/// The clock, read once `statements` are prepared on `conn` (nothing to do, no round trip,
/// for those it has cached, which after its first operations is all of them). A write reads
/// its "now" here, after preparing, because preparing a statement (its first use on a
/// connection) waits for the table's metadata lock, as a migration's `ALTER TABLE` holds it,
/// and a "now" read before that wait would be stale when the statement lands. Waits while
/// the prepared statement runs are measured by the server (see `LANDED` in the statements
/// module).
async fn now_after_preparing(
    conn: &mut MySqlConnection,
    op: &'static str,
    id: &SessionId,
    statements: &[&sqlx::SqlStr],
) -> Result<i64> {
    for statement in statements {
        sqlx::Executor::prepare(&mut *conn, (*statement).clone())
            .await
            .map_err(|e| map_err(op, Some(id), e))?;
    }
    Ok(now_millis())
}

/// A session store over a MySQL or MariaDB table. See the [module docs](self).
#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    table: String,
    delete_batch_size: u32,
    operation_timeout: Duration,
    sql: Statements,
}

impl fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStore")
            .field("table", &self.table)
            .field("delete_batch_size", &self.delete_batch_size)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SessionStore for MySqlStore {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        operation!(self, "get", Some(id), |conn| {
            let row = retry!(conn => e:
                sqlx::query(self.sql.get.clone())
                    .bind(id.as_str())
                    .bind(now_millis())
                    .bind(now_millis())
                    .fetch_optional(e)
            )
            .map_err(|e| map_err("get", Some(id), e))?;
            let session = row
                .map(|row| {
                    let rotated: i64 = row.try_get(5).map_err(|e| Error::decode(id, e))?;
                    Ok::<_, Error>(decode_row(id, &row)?.with_rotated(rotated != 0))
                })
                .transpose()?;
            // The clock again, now that the row is here: a session that expired while the
            // reply travelled is not returned.
            Ok(session.filter(|s| !s.is_expired_at(now_millis())))
        })
        .await
    }

    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        const OP: &str = "set";
        operation!(self, OP, Some(id), |conn| {
            let sql = &self.sql;
            let now =
                now_after_preparing(conn, OP, id, &[&sql.set, &sql.delete_unless_rotated]).await?;
            // The expiry capped by the absolute expiry written (a live session's stored one
            // is never earlier than its expiry, which is in the future).
            if session.capped_expiry_millis() <= now {
                return self.delete_for_an_expired_write(conn, OP, id, now).await;
            }
            let data = encode_data(id, session)?;
            let fresh = fresh_version();
            let done = retry!(conn => e:
                sqlx::query(self.sql.set.clone())
                    .bind(id.as_str())
                    .bind(data.as_str())
                    .bind(session.capped_expiry_millis())
                    .bind(version_to_i64(fresh))
                    .bind(session.owner().map(Owner::as_str))
                    .bind(session.absolute_expiry_millis())
                    .bind(now)
                    .execute(e)
            )
            .map_err(|e| map_write_err(OP, id, e))?;
            // An update hands back the version it assigned (never 0), or `ROTATED` if it
            // wrote nothing; an insert assigned the fresh one.
            match done.last_insert_id() {
                0 => Ok(fresh),
                ROTATED => Err(Error::rotated(id)),
                version => to_version(OP, id, i64::try_from(version).unwrap_or(-1)),
            }
        })
        .await
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        operation!(self, "destroy", Some(id), |conn| {
            self.destroy_on(conn, id).await
        })
        .await
    }

    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        operation!(self, "touch", Some(id), |conn| {
            let sql = &self.sql;
            let now =
                now_after_preparing(conn, "touch", id, &[&sql.touch, &sql.touch_delete]).await?;
            let expires_at = to_millis(expires_at);
            let done = if expires_at <= now {
                retry!(conn => e:
                    sqlx::query(self.sql.touch_delete.clone())
                        .bind(id.as_str())
                        .bind(now)
                        .execute(e)
                )
            } else {
                retry!(conn => e:
                    sqlx::query(self.sql.touch.clone())
                        .bind(expires_at)
                        .bind(id.as_str())
                        .bind(now)
                        .execute(e)
                )
            }
            .map_err(|e| map_err("touch", Some(id), e))?;
            // sqlx connects with CLIENT_FOUND_ROWS: an update counts the rows it matched,
            // also one whose expiry it set to the value it had.
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        const OP: &str = "create";
        operation!(self, OP, Some(id), |conn| {
            let now = now_after_preparing(conn, OP, id, &self.sql.creating()).await?;
            if session.capped_expiry_millis() <= now {
                // Nothing is stored, but the answer still says whether the id was free.
                return self.free_for_an_expired_write(conn, OP, id, now).await;
            }
            self.insert_if_absent(conn, OP, id, session, fresh_version(), now)
                .await
        })
        .await
    }

    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected_version: u64,
    ) -> Result<u64> {
        const OP: &str = "set_if_version";
        operation!(self, OP, Some(id), |conn| {
            let sql = &self.sql;
            let now = match expected_version {
                0 => now_after_preparing(conn, OP, id, &sql.creating()).await?,
                _ => {
                    let swapping = [&sql.delete_if_version, &sql.update_if_version];
                    now_after_preparing(conn, OP, id, &swapping).await?
                }
            };
            let expired = session.capped_expiry_millis() <= now;
            if expected_version == 0 {
                if expired {
                    return match self.free_for_an_expired_write(conn, OP, id, now).await? {
                        true => Ok(0),
                        false => Err(self.conflict_or_rotated(conn, OP, id, 0).await),
                    };
                }
                let fresh = next_version(0);
                return if self
                    .insert_if_absent(conn, OP, id, session, fresh, now)
                    .await?
                {
                    Ok(fresh)
                } else {
                    Err(self.conflict_or_rotated(conn, OP, id, 0).await)
                };
            }
            // Stored versions are `BIGINT`: a larger expected version can never match.
            let Ok(expected) = i64::try_from(expected_version) else {
                return Err(Error::conflict(id, expected_version));
            };
            if expired {
                let done = retry!(conn => e:
                    sqlx::query(self.sql.delete_if_version.clone())
                        .bind(id.as_str())
                        .bind(expected)
                        .bind(now)
                        .execute(e)
                )
                .map_err(|e| map_err(OP, Some(id), e))?;
                return if done.rows_affected() == 1 {
                    Ok(0)
                } else {
                    Err(self
                        .conflict_or_rotated(conn, OP, id, expected_version)
                        .await)
                };
            }
            let data = encode_data(id, session)?;
            // `expected + 1`, or a fresh version if `expected` is the largest (or above).
            let next = next_version(expected_version);
            let done = retry!(conn => e:
                sqlx::query(self.sql.update_if_version.clone())
                    .bind(data.as_str())
                    .bind(session.capped_expiry_millis())
                    .bind(version_to_i64(next))
                    .bind(session.owner().map(Owner::as_str))
                    .bind(session.absolute_expiry_millis())
                    .bind(session.absolute_expiry_millis())
                    .bind(id.as_str())
                    .bind(expected)
                    .bind(now)
                    .execute(e)
            )
            .map_err(|e| map_write_err(OP, id, e))?;
            // Rows matched (CLIENT_FOUND_ROWS): the version always changes anyway.
            match done.rows_affected() {
                0 => Err(self
                    .conflict_or_rotated(conn, OP, id, expected_version)
                    .await),
                _ => Ok(next),
            }
        })
        .await
    }

    async fn len(&self) -> Result<u64> {
        operation!(self, "len", None, |conn| {
            let count: i64 = retry!(conn => e:
                sqlx::query_scalar(self.sql.len.clone())
                    .bind(now_millis())
                    .fetch_one(e)
            )
            .map_err(|e| map_err("len", None, e))?;
            // COUNT(*) is never negative.
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    async fn clear(&self) -> Result<()> {
        operation!(self, "clear", None, |conn| {
            retry!(conn => e: sqlx::query(self.sql.clear.clone()).execute(e))
                .map_err(|e| map_err("clear", None, e))?;
            Ok(())
        })
        .await
    }

    /// Removes expired rows in batches of [`delete_batch_size`](Self::delete_batch_size); the
    /// operation timeout bounds each batch, not the whole sweep, so a large backlog is
    /// worked off batch by batch.
    async fn delete_expired(&self) -> Result<u64> {
        let now = now_millis();
        let mut total = 0u64;
        loop {
            let batch = self.delete_batch_at(now);
            let removed = within(self.operation_timeout, "delete_expired", None, batch).await?;
            total += removed;
            if removed < u64::from(self.delete_batch_size) {
                return Ok(total);
            }
        }
    }

    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        const OP: &str = "sessions_of";
        operation!(self, OP, None, |conn| {
            let statement = if with_data {
                &self.sql.sessions_of_with_data
            } else {
                &self.sql.sessions_of
            };
            let rows = retry!(conn => e:
                sqlx::query(statement.clone())
                    .bind(owner.as_str())
                    .bind(now_millis())
                    .fetch_all(e)
            )
            .map_err(|e| map_err(OP, None, e))?;
            // The clock again, now that the rows are here, as `get` does.
            let now = now_millis();
            let mut listed = Vec::with_capacity(rows.len());
            for row in &rows {
                // An entry that does not decode is listed as such (see the contract).
                let Some(entry) = decode_listed(row, with_data)? else {
                    continue;
                };
                if entry.expires_at_millis > now || entry.undecodable.is_some() {
                    listed.push(entry);
                }
            }
            Ok(listed)
        })
        .await
    }

    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        const OP: &str = "destroy_owner";
        operation!(self, OP, None, |conn| {
            let now = now_millis();
            let live = retry!(conn => e:
                sqlx::query(self.sql.destroy_owner_live.clone())
                    .bind(owner.as_str())
                    .bind(except.map(SessionId::as_str))
                    .bind(now)
                    .execute(e)
            )
            .map_err(|e| map_err(OP, None, e))?;
            let mut ended = live.rows_affected();
            // The sessions the owner's rotated ids moved to: gone already, unless a rotation
            // landed while the delete above ran, after it had passed the new row.
            let moved_to: Vec<Vec<u8>> = retry!(conn => e:
                sqlx::query_scalar(self.sql.destroy_owner_moved_to.clone())
                    .bind(owner.as_str())
                    .bind(except.map(SessionId::as_str))
                    .fetch_all(e)
            )
            .map_err(|e| map_err(OP, None, e))?;
            for target in moved_to {
                if except.is_some_and(|except| except.as_str().as_bytes() == target) {
                    continue;
                }
                let done = retry!(conn => e:
                    sqlx::query(self.sql.destroy_owner_target.clone())
                        .bind(target.as_slice())
                        .bind(owner.as_str())
                        .bind(now)
                        .execute(e)
                )
                .map_err(|e| map_err(OP, None, e))?;
                ended += done.rows_affected();
            }
            retry!(conn => e:
                sqlx::query(self.sql.destroy_owner_expired.clone())
                    .bind(owner.as_str())
                    .bind(except.map(SessionId::as_str))
                    .bind(now)
                    .execute(e)
            )
            .map_err(|e| map_err(OP, None, e))?;
            Ok(ended)
        })
        .await
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        const OP: &str = "scan";
        let after = cursor.map(|c| c.keyset_text("MySqlStore")).transpose()?;
        let limit = scan_limit(limit);
        let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
        operation!(self, OP, None, |conn| {
            let rows = match &after {
                None => retry!(conn => e:
                    sqlx::query(self.sql.scan_first.clone())
                        .bind(now_millis())
                        .bind(sql_limit)
                        .fetch_all(e)
                ),
                Some(after) => retry!(conn => e:
                    sqlx::query(self.sql.scan_after.clone())
                        .bind(after.as_bytes())
                        .bind(now_millis())
                        .bind(sql_limit)
                        .fetch_all(e)
                ),
            }
            .map_err(|e| map_err(OP, None, e))?;
            keyset_page(&rows, limit, scanned_key, decode_row)
        })
        .await
    }

    /// Replaces the row's data with JSON that is not an object.
    async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
        const OP: &str = "make_undecodable";
        operation!(self, OP, Some(id), |conn| {
            let done = retry!(conn => e:
                sqlx::query(self.sql.spoil.clone()).bind(id.as_str()).execute(e)
            )
            .map_err(|e| map_err(OP, Some(id), e))?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        const OP: &str = "rotate";
        if old == new {
            return Ok(Rotation::Taken);
        }
        operation!(self, OP, Some(old), |conn| {
            let sql = &self.sql;
            let statements = [
                &sql.rotate_lock,
                &sql.rotate_copy,
                &sql.rotate_mark,
                &sql.delete,
            ];
            let mut attempt = 0;
            loop {
                attempt += 1;
                let now = now_after_preparing(conn, OP, old, &statements).await?;
                match self.rotate_on(conn, old, new, grace, now).await {
                    Err(e) if is_deadlock(&e) && attempt < ROTATE_ATTEMPTS => {}
                    Err(e) => break Err(map_write_err(OP, old, e)),
                    Ok(rotation) => break Ok(rotation),
                }
            }
        })
        .await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_owners(true)
            .with_scan(true)
            .with_absolute_expiry(true)
            .with_rotation(true)
    }
}

impl MySqlStore {
    /// The pool the store uses.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The table name (unquoted).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// How many rows one batch of `delete_expired` removes at most.
    pub fn delete_batch_size(&self) -> u32 {
        self.delete_batch_size
    }

    /// Runs one batch of [`delete_expired`](SessionStore::delete_expired): removes at most
    /// [`delete_batch_size`](Self::delete_batch_size) expired sessions in one statement and
    /// returns how many it removed.
    pub async fn delete_expired_batch(&self) -> Result<u64> {
        self.delete_batch_at(now_millis()).await
    }

    async fn delete_batch_at(&self, now: i64) -> Result<u64> {
        on_conn!(self, "delete_expired", None, |conn| {
            let done = retry!(conn => e:
                sqlx::query(self.sql.delete_expired_batch.clone())
                    .bind(now)
                    .bind(i64::from(self.delete_batch_size))
                    .execute(e)
            )
            .map_err(|e| map_err("delete_expired", None, e))?;
            Ok(done.rows_affected())
        })
        .await
    }

    /// A pooled connection. Operations read the clock only once they hold one, so a long
    /// wait for a connection never makes them decide on a stale "now" (and return, touch or
    /// revive a session that expired meanwhile). See [`on_conn`].
    async fn conn(
        &self,
        op: &'static str,
        id: Option<&SessionId>,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::MySql>> {
        self.pool.acquire().await.map_err(|e| map_err(op, id, e))
    }

    /// How many connections [`on_conn`] closes, at most, before it lets an operation fail
    /// as the connection it was given did: as many as the pool may hold, and one more.
    fn stale_limit(&self) -> u32 {
        self.pool.options().get_max_connections().saturating_add(1)
    }

    /// For a write whose session has already expired, which stores nothing: whether `id`
    /// is free (no live session holds it); an expired row under it is deleted.
    async fn free_for_an_expired_write(
        &self,
        conn: &mut MySqlConnection,
        op: &'static str,
        id: &SessionId,
        now: i64,
    ) -> Result<bool> {
        let row = retry!(conn => e:
            sqlx::query(self.sql.live_exists.clone())
                .bind(id.as_str())
                .bind(now)
                .fetch_one(e)
        )
        .map_err(|e| map_err(op, Some(id), e))?;
        let live: i64 = row
            .try_get(0)
            .map_err(|e| Error::backend(op, Some(id), e))?;
        if live != 0 {
            return Ok(false);
        }
        self.delete_if_expired(conn, op, id, now).await?;
        Ok(true)
    }

    /// Inserts `session` at `version` if no live session holds `id`; returns whether it
    /// did. The session's expiry must be in the future. The insert fails on any row under
    /// the id; an expired one is then removed (judged as the statement lands) and the
    /// insert made again, a bounded number of times.
    async fn insert_if_absent(
        &self,
        conn: &mut MySqlConnection,
        op: &'static str,
        id: &SessionId,
        session: &Session,
        version: u64,
        now: i64,
    ) -> Result<bool> {
        let data = encode_data(id, session)?;
        for _ in 0..CREATE_ROUNDS {
            let inserted = retry!(conn => e:
                sqlx::query(self.sql.insert.clone())
                    .bind(id.as_str())
                    .bind(data.as_str())
                    .bind(session.capped_expiry_millis())
                    .bind(version_to_i64(version))
                    .bind(session.owner().map(Owner::as_str))
                    .bind(session.absolute_expiry_millis())
                    .execute(e)
            );
            match inserted {
                Ok(_) => return Ok(true),
                Err(err) if is_duplicate(&err) => {}
                Err(err) => return Err(map_write_err(op, id, err)),
            }
            // A row holds the id: a live one keeps it; an expired one is removed, and the
            // insert tried again.
            if !self.delete_if_expired(conn, op, id, now).await? {
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// Removes the row under `id` if it has expired; returns whether there was one.
    async fn delete_if_expired(
        &self,
        conn: &mut MySqlConnection,
        op: &'static str,
        id: &SessionId,
        now: i64,
    ) -> Result<bool> {
        let done = retry!(conn => e:
            sqlx::query(self.sql.delete_if_expired.clone())
                .bind(id.as_str())
                .bind(now)
                .execute(e)
        )
        .map_err(|e| map_err(op, Some(id), e))?;
        Ok(done.rows_affected() > 0)
    }

    /// `destroy`: deletes the row; a rotated id within its grace takes the session it moved
    /// to with it (one statement, both rows locked as it lands).
    async fn destroy_on(&self, conn: &mut MySqlConnection, id: &SessionId) -> Result<()> {
        retry!(conn => e:
            sqlx::query(self.sql.destroy.clone())
                .bind(now_millis())
                .bind(id.as_str())
                .execute(e)
        )
        .map_err(|e| map_err("destroy", Some(id), e))?;
        Ok(())
    }

    /// `set` of a session whose (capped) expiry has passed: deletes the session, and
    /// returns 0, unless `id` is a rotated id within its grace, which is left as it is
    /// ([`Error::Rotated`]).
    async fn delete_for_an_expired_write(
        &self,
        conn: &mut MySqlConnection,
        op: &'static str,
        id: &SessionId,
        now: i64,
    ) -> Result<u64> {
        let done = retry!(conn => e:
            sqlx::query(self.sql.delete_unless_rotated.clone())
                .bind(id.as_str())
                .bind(now)
                .execute(e)
        )
        .map_err(|e| map_err(op, Some(id), e))?;
        if done.rows_affected() == 0 && self.rotated_live(conn, op, id).await? {
            return Err(Error::rotated(id));
        }
        Ok(0)
    }

    /// Whether `id` is a rotated id within its grace.
    async fn rotated_live(
        &self,
        conn: &mut MySqlConnection,
        op: &'static str,
        id: &SessionId,
    ) -> Result<bool> {
        let rotated: i64 = retry!(conn => e:
            sqlx::query_scalar(self.sql.rotated_live.clone())
                .bind(id.as_str())
                .bind(now_millis())
                .fetch_one(e)
        )
        .map_err(|e| map_err(op, Some(id), e))?;
        Ok(rotated != 0)
    }

    /// The error of a compare-and-set that wrote nothing: [`Error::Rotated`] through a
    /// rotated id within its grace, a conflict otherwise (or the error of the look).
    async fn conflict_or_rotated(
        &self,
        conn: &mut MySqlConnection,
        op: &'static str,
        id: &SessionId,
        expected: u64,
    ) -> Error {
        match self.rotated_live(conn, op, id).await {
            Ok(true) => Error::rotated(id),
            Ok(false) => Error::conflict(id, expected),
            Err(err) => err,
        }
    }

    /// One attempt at `rotate`, in one transaction: the old row is locked (`FOR UPDATE`)
    /// and judged, then the new one (a live row there, a session or a rotated id within its
    /// grace, makes the id taken; an expired one is removed), the session copied under
    /// `new` (a concurrent insert of `new` makes it a duplicate: taken) and the old row
    /// marked as moved, its expiry cut to the end of the grace (deleted at once for a grace
    /// under a millisecond).
    async fn rotate_on(
        &self,
        conn: &mut MySqlConnection,
        old: &SessionId,
        new: &SessionId,
        grace: Duration,
        now: i64,
    ) -> std::result::Result<Rotation, sqlx::Error> {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let locked: Option<(i64, i64, i64)> = sqlx::query_as(self.sql.rotate_lock.clone())
            .bind(now)
            .bind(old.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let version = match locked {
            Some((version, live, 0)) if live != 0 => version,
            // No live session under `old`, or `old` is a rotated id.
            _ => {
                tx.rollback().await?;
                return Ok(Rotation::Absent);
            }
        };
        let held: Option<(i64, i64, i64)> = sqlx::query_as(self.sql.rotate_lock.clone())
            .bind(now)
            .bind(new.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        match held {
            None => {}
            Some((_, 0, _)) => {
                sqlx::query(self.sql.delete.clone())
                    .bind(new.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            Some(_) => {
                tx.rollback().await?;
                return Ok(Rotation::Taken);
            }
        }
        let next = next_version(u64::try_from(version).unwrap_or(0));
        let copied = sqlx::query(self.sql.rotate_copy.clone())
            .bind(new.as_str())
            .bind(version_to_i64(next))
            .bind(old.as_str())
            .execute(&mut *tx)
            .await;
        match copied {
            Ok(_) => {}
            Err(err) if is_duplicate(&err) => {
                tx.rollback().await?;
                return Ok(Rotation::Taken);
            }
            Err(err) => return Err(err),
        }
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        if grace == 0 {
            sqlx::query(self.sql.delete.clone())
                .bind(old.as_str())
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(self.sql.rotate_mark.clone())
                .bind(new.as_str())
                .bind(now.saturating_add(grace))
                .bind(old.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Rotation::Moved { version: next })
    }
}
