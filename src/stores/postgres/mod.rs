#![doc = include_str!("docs.md")]

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use sqlx::{PgPool, Row};

use crate::deadline::within;
use crate::error::{Error, Result};
use crate::session::{
    Owner, Session, SessionId, fresh_version, next_version, now_millis, to_millis,
};
use crate::store::{Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore};
use crate::stores::shared::codec::version_to_i64;
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
    PING_IF_IDLE_FOR, PostgresStoreBuilder,
};
#[cfg(fuzzing)]
pub use codec::__fuzz_decode;
pub use codec::{MAX_EXPIRY_MILLIS, MIN_EXPIRY_MILLIS};
pub use schema::MIGRATE_LOCK_KEY;

use codec::{clamp, decode_listed, decode_row, encode_data, scanned_key, to_version};
use error::{is_serialization_failure, map_err, map_write_err, retry};
use statements::Statements;

/// How many times `rotate` runs its transaction when Postgres rolled it back as a deadlock
/// victim (two rotations crossing each other's ids) or a serialization failure.
const ROTATE_ATTEMPTS: u32 = 4;

/// A future running `$body` (one operation's statements, ending in a `Result`) with `$conn`
/// bound to a pooled connection (`&mut PgConnection`): see [`PostgresStore::conn`].
///
/// A connection opened on a tokio runtime that has since shut down (actix-web runs one per
/// worker; tests start and stop runtimes) fails its first I/O before anything is sent: it is
/// closed, and `$body` runs again on another connection, at most
/// [`stale_limit`](PostgresStore::stale_limit) times, so a restarted worker's first
/// operations do not fail for connections its predecessor left in the pool.
macro_rules! on_conn {
    ($store:expr, $op:expr, $id:expr, |$conn:ident| $body:block) => {
        async {
            let mut stale = 0u32;
            loop {
                let mut pooled = $store.conn($op, $id).await?;
                let result = {
                    let $conn: &mut PgConnection = &mut pooled;
                    async { $body }.await
                };
                match result {
                    Err(err)
                        if opened_on_a_stopped_runtime(&err) && stale < $store.stale_limit() =>
                    {
                        stale += 1;
                        pooled.close_on_drop();
                    }
                    result => break result,
                }
            }
        }
    };
}

/// The clock, read once `statements` are prepared on `conn` (nothing to do, no round trip,
/// for those it has cached, which after its first operations is all of them). A write reads
/// its "now" here, after preparing, because preparing a statement (its first use on a
/// connection) waits for the table's lock, as a migration's `ALTER TABLE` or a `LOCK TABLE`
/// holds it, and a "now" read before that wait would be stale when the statement lands.
/// Waits while the prepared statement runs are measured by the server (see the `landed`
/// SQL of the statements module). Every parameter's type is spelled out in the SQL, so the
/// server infers the types the store binds.
async fn now_after_preparing(
    conn: &mut PgConnection,
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

/// A session store over a PostgreSQL table. See the [module docs](self).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<String>,
    table: String,
    delete_batch_size: u32,
    operation_timeout: Duration,
    sql: Statements,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("delete_batch_size", &self.delete_batch_size)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        operation!(self, "get", Some(id), |conn| {
            let row = retry!(conn => e:
                sqlx::query(self.sql.get.clone())
                    .bind(id.as_str())
                    .bind(clamp(now_millis()))
                    .fetch_optional(e)
            )
            .map_err(|e| map_err("get", Some(id), e))?;
            let session = row
                .map(|row| {
                    let rotated: bool = row.try_get(5).map_err(|e| Error::decode(id, e))?;
                    Ok::<_, Error>(decode_row(id, &row)?.with_rotated(rotated))
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
            let version: Option<i64> = retry!(conn => e:
                sqlx::query_scalar(self.sql.set.clone())
                    .bind(id.as_str())
                    .bind(data.as_str())
                    .bind(clamp(session.capped_expiry_millis()))
                    .bind(clamp(now))
                    .bind(version_to_i64(fresh_version()))
                    .bind(session.owner().map(Owner::as_str))
                    .bind(session.absolute_expiry_millis().map(clamp))
                    .fetch_optional(e)
            )
            .map_err(|e| map_write_err(OP, id, e))?;
            match version {
                Some(version) => to_version(OP, id, version),
                // A rotated id within its grace: nothing written.
                None => Err(Error::rotated(id)),
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
                        .bind(clamp(now))
                        .execute(e)
                )
            } else {
                retry!(conn => e:
                    sqlx::query(self.sql.touch.clone())
                        .bind(id.as_str())
                        .bind(clamp(expires_at))
                        .bind(clamp(now))
                        .execute(e)
                )
            }
            .map_err(|e| map_err("touch", Some(id), e))?;
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
            // The statements of the path `expected_version` takes.
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
            // Stored versions are `bigint`: a larger expected version can never match.
            let Ok(expected) = i64::try_from(expected_version) else {
                return Err(Error::conflict(id, expected_version));
            };
            // A serialization failure here (a caller's pool at `repeatable read` or above)
            // means another transaction wrote the row first: the expected version is stale,
            // which is a conflict, not an outage.
            let conflict_or =
                |e: sqlx::Error, map: fn(&'static str, &SessionId, sqlx::Error) -> Error| {
                    if is_serialization_failure(&e) {
                        Error::conflict(id, expected_version)
                    } else {
                        map(OP, id, e)
                    }
                };
            if expired {
                let done = sqlx::query(self.sql.delete_if_version.clone())
                    .bind(id.as_str())
                    .bind(expected)
                    .bind(clamp(now))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| conflict_or(e, |op, id, e| map_err(op, Some(id), e)))?;
                return if done.rows_affected() == 1 {
                    Ok(0)
                } else {
                    Err(self
                        .conflict_or_rotated(conn, OP, id, expected_version)
                        .await)
                };
            }
            let data = encode_data(id, session)?;
            let version: Option<i64> = sqlx::query_scalar(self.sql.update_if_version.clone())
                .bind(id.as_str())
                .bind(data)
                .bind(clamp(session.capped_expiry_millis()))
                .bind(expected)
                .bind(clamp(now))
                // `expected + 1`, or a fresh version if `expected` is the largest (or above).
                .bind(version_to_i64(next_version(expected_version)))
                .bind(session.owner().map(Owner::as_str))
                .bind(session.absolute_expiry_millis().map(clamp))
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| conflict_or(e, map_write_err))?;
            match version {
                Some(version) => to_version(OP, id, version),
                None => Err(self
                    .conflict_or_rotated(conn, OP, id, expected_version)
                    .await),
            }
        })
        .await
    }

    async fn len(&self) -> Result<u64> {
        operation!(self, "len", None, |conn| {
            let count: i64 = retry!(conn => e:
                sqlx::query_scalar(self.sql.len.clone())
                    .bind(clamp(now_millis()))
                    .fetch_one(e)
            )
            .map_err(|e| map_err("len", None, e))?;
            // count(*) is never negative.
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
                    .bind(clamp(now_millis()))
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
            let (ended, mut moved): (i64, Option<Vec<String>>) = retry!(conn => e:
                sqlx::query_as(self.sql.destroy_owner.clone())
                    .bind(owner.as_str())
                    .bind(except.map(SessionId::as_str))
                    .bind(clamp(now_millis()))
                    .fetch_one(e)
            )
            .map_err(|e| map_err(OP, None, e))?;
            // count(*) is never negative.
            let mut total = u64::try_from(ended).unwrap_or(0);
            // A rotated id whose new row the delete could not see (the rotation committed
            // while it ran): that session is the owner's too. Each round follows one more
            // rotation; the rows are gone, so the chain ends.
            for _ in 0..ROTATE_ATTEMPTS {
                let Some(targets) = moved.take().filter(|t| !t.is_empty()) else {
                    break;
                };
                let (ended, next): (i64, Option<Vec<String>>) = retry!(conn => e:
                    sqlx::query_as(self.sql.destroy_owner_moved.clone())
                        .bind(owner.as_str())
                        .bind(except.map(SessionId::as_str))
                        .bind(clamp(now_millis()))
                        .bind(&targets)
                        .fetch_one(e)
                )
                .map_err(|e| map_err(OP, None, e))?;
                total += u64::try_from(ended).unwrap_or(0);
                moved = next;
            }
            Ok(total)
        })
        .await
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        const OP: &str = "scan";
        let after = cursor.map(|c| c.keyset_text("PostgresStore")).transpose()?;
        let limit = scan_limit(limit);
        let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
        operation!(self, OP, None, |conn| {
            let rows = match &after {
                None => retry!(conn => e:
                    sqlx::query(self.sql.scan_first.clone())
                        .bind(clamp(now_millis()))
                        .bind(sql_limit)
                        .fetch_all(e)
                ),
                Some(after) => retry!(conn => e:
                    sqlx::query(self.sql.scan_after.clone())
                        .bind(&**after)
                        .bind(clamp(now_millis()))
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
                &sql.rotate_lock_old,
                &sql.rotate_copy,
                &sql.rotate_mark,
                &sql.delete,
            ];
            let mut attempt = 0;
            loop {
                attempt += 1;
                let now = now_after_preparing(conn, OP, old, &statements).await?;
                match self.rotate_on(conn, old, new, grace, now).await {
                    Err(e) if is_serialization_failure(&e) && attempt < ROTATE_ATTEMPTS => {}
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

impl PostgresStore {
    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema, if one was set.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
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
            let done = sqlx::query(self.sql.delete_expired_batch.clone())
                .bind(clamp(now))
                .bind(i64::from(self.delete_batch_size))
                .execute(&mut *conn)
                .await
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
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
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
        conn: &mut PgConnection,
        op: &'static str,
        id: &SessionId,
        now: i64,
    ) -> Result<bool> {
        if self.live_exists(conn, op, id, now).await? {
            return Ok(false);
        }
        self.delete_if_expired(conn, op, id, now).await?;
        Ok(true)
    }

    async fn live_exists(
        &self,
        conn: &mut PgConnection,
        op: &'static str,
        id: &SessionId,
        now: i64,
    ) -> Result<bool> {
        let row = retry!(conn => e:
            sqlx::query(self.sql.live_exists.clone())
                .bind(id.as_str())
                .bind(clamp(now))
                .fetch_one(e)
        )
        .map_err(|e| map_err(op, Some(id), e))?;
        row.try_get::<bool, _>(0)
            .map_err(|e| Error::backend(op, Some(id), e))
    }

    /// The `create` statement: inserts `session` at `version` if no live session holds `id`.
    /// Returns whether it did. The session's expiry must be in the future.
    async fn insert_if_absent(
        &self,
        conn: &mut PgConnection,
        op: &'static str,
        id: &SessionId,
        session: &Session,
        version: u64,
        now: i64,
    ) -> Result<bool> {
        let data = encode_data(id, session)?;
        let done = retry!(conn => e:
            sqlx::query(self.sql.create.clone())
                .bind(id.as_str())
                .bind(data.as_str())
                .bind(clamp(session.capped_expiry_millis()))
                .bind(clamp(now))
                .bind(version_to_i64(version))
                .bind(session.owner().map(Owner::as_str))
                .bind(session.absolute_expiry_millis().map(clamp))
                .execute(e)
        )
        .map_err(|e| map_write_err(op, id, e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_if_expired(
        &self,
        conn: &mut PgConnection,
        op: &'static str,
        id: &SessionId,
        now: i64,
    ) -> Result<()> {
        retry!(conn => e:
            sqlx::query(self.sql.delete_if_expired_or_absent.clone())
                .bind(id.as_str())
                .bind(clamp(now))
                .execute(e)
        )
        .map_err(|e| map_err(op, Some(id), e))?;
        Ok(())
    }

    /// `destroy`: deletes the row; a rotated id within its grace takes the session it moved
    /// to with it.
    async fn destroy_on(&self, conn: &mut PgConnection, id: &SessionId) -> Result<()> {
        let row: Option<(Option<String>, bool)> = retry!(conn => e:
            sqlx::query_as(self.sql.destroy.clone())
                .bind(id.as_str())
                .bind(clamp(now_millis()))
                .fetch_optional(e)
        )
        .map_err(|e| map_err("destroy", Some(id), e))?;
        if let Some((Some(moved_to), true)) = row {
            retry!(conn => e:
                sqlx::query(self.sql.delete.clone())
                    .bind(moved_to.as_str())
                    .execute(e)
            )
            .map_err(|e| map_err("destroy", Some(id), e))?;
        }
        Ok(())
    }

    /// `set` of a session whose (capped) expiry has passed: deletes the session, and
    /// returns 0, unless `id` is a rotated id within its grace, which is left as it is
    /// ([`Error::Rotated`]).
    async fn delete_for_an_expired_write(
        &self,
        conn: &mut PgConnection,
        op: &'static str,
        id: &SessionId,
        now: i64,
    ) -> Result<u64> {
        let done = retry!(conn => e:
            sqlx::query(self.sql.delete_unless_rotated.clone())
                .bind(id.as_str())
                .bind(clamp(now))
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
        conn: &mut PgConnection,
        op: &'static str,
        id: &SessionId,
    ) -> Result<bool> {
        retry!(conn => e:
            sqlx::query_scalar(self.sql.rotated_live.clone())
                .bind(id.as_str())
                .bind(clamp(now_millis()))
                .fetch_one(e)
        )
        .map_err(|e| map_err(op, Some(id), e))
    }

    /// The error of a compare-and-set that wrote nothing: [`Error::Rotated`] through a
    /// rotated id within its grace, a conflict otherwise (or the error of the look).
    async fn conflict_or_rotated(
        &self,
        conn: &mut PgConnection,
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

    /// One attempt at `rotate`, in one transaction at `read committed`: the old row is
    /// locked (`FOR UPDATE`) and judged, the session copied under `new` unless a live row
    /// holds it (the insert's `ON CONFLICT` waits for a concurrent writer of `new`), and
    /// the old row marked as moved, its expiry cut to the end of the grace (deleted at once
    /// for a grace under a millisecond).
    async fn rotate_on(
        &self,
        conn: &mut PgConnection,
        old: &SessionId,
        new: &SessionId,
        grace: Duration,
        now: i64,
    ) -> std::result::Result<Rotation, sqlx::Error> {
        let mut tx =
            sqlx::Connection::begin_with(&mut *conn, "BEGIN ISOLATION LEVEL READ COMMITTED")
                .await?;
        let row: Option<(i64, bool, bool)> = sqlx::query_as(self.sql.rotate_lock_old.clone())
            .bind(old.as_str())
            .bind(clamp(now))
            .fetch_optional(&mut *tx)
            .await?;
        let version = match row {
            Some((version, true, false)) => version,
            // No live session under `old`, or `old` is a rotated id.
            _ => {
                tx.rollback().await?;
                return Ok(Rotation::Absent);
            }
        };
        let next = next_version(u64::try_from(version).unwrap_or(0));
        let copied = sqlx::query(self.sql.rotate_copy.clone())
            .bind(old.as_str())
            .bind(new.as_str())
            .bind(version_to_i64(next))
            .bind(clamp(now))
            .execute(&mut *tx)
            .await?;
        if copied.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Rotation::Taken);
        }
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        if grace == 0 {
            sqlx::query(self.sql.delete.clone())
                .bind(old.as_str())
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(self.sql.rotate_mark.clone())
                .bind(old.as_str())
                .bind(new.as_str())
                .bind(clamp(now.saturating_add(grace)))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Rotation::Moved { version: next })
    }
}
