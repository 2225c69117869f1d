#![doc = include_str!("docs.md")]

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::deadline::within;
use crate::error::{Error, Result};
use crate::session::{
    Owner, Session, SessionId, fresh_version, kept_absolute_expiry, next_version, now_millis,
    to_millis,
};
use crate::store::{Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore};
use crate::stores::shared::codec::{encode_data, version_to_i64};

#[cfg(doc)]
use crate::deadline::DEFAULT_OPERATION_TIMEOUT;

#[cfg(feature = "cli")]
pub(crate) mod admin;
mod builder;
mod error;
mod owners;
mod row;
mod scan;
mod schema;
mod sql;
pub(crate) mod url;
mod worker;

#[cfg(test)]
mod tests;

pub use builder::{
    DEFAULT_BUSY_TIMEOUT, DEFAULT_DELETE_BATCH_SIZE, DEFAULT_QUEUE_CAPACITY, DEFAULT_READERS,
    DEFAULT_TABLE, SqliteStoreBuilder, Synchronous, WAL_SIZE_LIMIT,
};
pub use schema::{SCHEMA_TABLE, SCHEMA_VERSION};

use builder::Location;
use error::{OpError, is_locked};
use row::{decode_row, integer_expiry, integer_version};
use sql::Sql;
use worker::{Inline, InlineWriter, Pool};

/// A `clear` or `delete_expired` that removed at least this many rows ends with a
/// `PRAGMA wal_checkpoint(TRUNCATE)`, which empties the write-ahead log file.
pub const LARGE_DELETE_ROWS: u64 = 1000;

/// How long the checkpoint after a large delete waits for other connections' locks before it
/// gives up (it is housekeeping: the delete has already succeeded).
const CHECKPOINT_WAIT: Duration = Duration::from_millis(250);

/// A session store in an SQLite database. See the [module docs](self).
pub struct SqliteStore {
    writer: Pool,
    readers: Option<Pool>,
    /// Connections for `get` on the caller's thread; see
    /// [`inline_reads`](SqliteStoreBuilder::inline_reads).
    inline: Option<Inline>,
    /// The connection for writes of one session on the caller's thread; see
    /// [`inline_writes`](SqliteStoreBuilder::inline_writes).
    inline_writer: Option<InlineWriter>,
    table: String,
    location: Location,
    delete_batch_size: usize,
    operation_timeout: Duration,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .field("table", &self.table)
            .field("readers", &self.readers.as_ref().map_or(0, |r| r.size))
            .field("delete_batch_size", &self.delete_batch_size)
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        match self.read_inline(|conn, sql| read_session(conn, sql, id.as_str())) {
            // The database was locked (a checkpoint): the read connections wait for it.
            Some(Err(OpError::Sql(err))) if is_locked(&err) => {}
            Some(result) => return result.map_err(|e| e.into_error("get", Some(id))),
            None => {}
        }
        let key = id.as_str().to_owned();
        self.read("get", Some(id), move |conn, sql| {
            read_session(conn, sql, &key)
        })
        .await
    }

    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        let key = id.as_str().to_owned();
        let expires_at = session.expires_at_millis();
        let written_absolute = session.absolute_expiry_millis();
        // A session already expired on the caller's clock (its expiry or its absolute
        // expiry, which caps whatever absolute expiry is kept) has nothing to store (and is
        // not encoded); any other is encoded here, so that an encoding error is the caller's.
        let data = if session.capped_expiry_millis() <= now_millis() {
            None
        } else {
            Some(encode_data(id, session)?)
        };
        // Used if the write starts a new incarnation; the statement decides.
        let fresh = version_to_i64(fresh_version());
        let owner = owner_column(session);
        self.write_one("set", Some(id), move |conn, sql| {
            let tx = immediate(conn)?;
            // Expired or not is decided now, holding the write lock: the wait for the queue
            // and the lock may have outlasted the session.
            let now = now_millis();
            let live = live_row(&tx, sql, &key, now)?;
            if live.is_some_and(|live| live.rotated) {
                return Err(OpError::Rotated);
            }
            let absolute = kept_absolute_expiry(
                live.is_some(),
                live.and_then(|live| live.absolute),
                written_absolute,
            );
            let expires_at = capped(expires_at, absolute);
            let version = match &data {
                Some(data) if expires_at > now => {
                    let mut stmt = tx.prepare_cached(&sql.upsert)?;
                    stmt.query_row(
                        params![key, data, expires_at, now, fresh, owner, absolute],
                        |row| Ok(integer_version(row.get_ref(0)?)),
                    )??
                }
                _ => {
                    tx.prepare_cached(&sql.delete)?.execute(params![key])?;
                    0
                }
            };
            tx.commit()?;
            Ok(version)
        })
        .await
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let key = id.as_str().to_owned();
        self.write_one("destroy", Some(id), move |conn, sql| {
            // A live rotated id ends the session it moved to too; whether it is live is
            // decided under the write lock.
            let tx = immediate(conn)?;
            tx.prepare_cached(&sql.destroy)?
                .execute(params![key, now_millis()])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        let key = id.as_str().to_owned();
        let expires_at = to_millis(expires_at);
        self.write_one("touch", Some(id), move |conn, sql| {
            let tx = immediate(conn)?;
            // Read under the write lock, so a session that expired during the wait for it
            // is not revived.
            let now = now_millis();
            // A rotated id is never touched.
            let changed = if expires_at <= now {
                // Touching into the past expires the session at once.
                tx.prepare_cached(&sql.delete_live)?
                    .execute(params![key, now])?
                    == 1
            } else {
                // The expiry stored is capped by the absolute expiry: one that is not in the
                // future expires the session at once.
                let stored = tx
                    .prepare_cached(&sql.touch)?
                    .query_row(params![key, expires_at, now], |row| {
                        Ok(integer_expiry(row.get_ref(0)?))
                    })
                    .optional()?
                    .transpose()?;
                match stored {
                    None => false,
                    Some(stored) => {
                        if stored <= now {
                            tx.prepare_cached(&sql.delete)?.execute(params![key])?;
                        }
                        true
                    }
                }
            };
            tx.commit()?;
            Ok(changed)
        })
        .await
    }

    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let key = id.as_str().to_owned();
        // A create never lands over a live session, so it stores the absolute expiry it
        // carries, and an expiry capped by it.
        let expires_at = session.capped_expiry_millis();
        let absolute = session.absolute_expiry_millis();
        let data = encode_data(id, session)?;
        let fresh = version_to_i64(fresh_version());
        let owner = owner_column(session);
        self.write_one("create", Some(id), move |conn, sql| {
            let tx = immediate(conn)?;
            let now = now_millis();
            let created = if expires_at <= now {
                // Created and expired at once: succeeds only if the id is absent, and leaves
                // it absent (a live rotated id is not absent).
                if live_row(&tx, sql, &key, now)?.is_some() {
                    false
                } else {
                    tx.prepare_cached(&sql.delete_stale)?
                        .execute(params![key, now])?;
                    true
                }
            } else {
                tx.prepare_cached(&sql.insert_if_absent)?
                    .execute(params![key, data, expires_at, now, fresh, owner, absolute])?
                    == 1
            };
            tx.commit()?;
            Ok(created)
        })
        .await
    }

    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected_version: u64,
    ) -> Result<u64> {
        // No stored version is above i64::MAX, so such an expectation can never match.
        let Ok(expected) = i64::try_from(expected_version) else {
            return Err(Error::conflict(id, expected_version));
        };
        let key = id.as_str().to_owned();
        let expires_at = session.expires_at_millis();
        let written_absolute = session.absolute_expiry_millis();
        let data = encode_data(id, session)?;
        // `expected + 1`, or a fresh version for an absent session (0) or one at the largest
        // version: the statement stores it only if the live version is still `expected`.
        let next = next_version(expected_version);
        let next_sql = version_to_i64(next);
        let owner = owner_column(session);
        self.write_one("set_if_version", Some(id), move |conn, sql| {
            let tx = immediate(conn)?;
            let now = now_millis();
            let live = live_row(&tx, sql, &key, now)?;
            if live.is_some_and(|live| live.rotated) {
                return Err(OpError::Rotated);
            }
            let absolute = kept_absolute_expiry(
                live.is_some(),
                live.and_then(|live| live.absolute),
                written_absolute,
            );
            let expires_at = capped(expires_at, absolute);
            let new_version = match (expires_at <= now, expected) {
                // An expired write to an absent id: nothing to store; drop any stale row.
                (true, 0) => {
                    if live.is_some() {
                        return Err(OpError::Conflict(expected_version));
                    }
                    tx.prepare_cached(&sql.delete_stale)?
                        .execute(params![key, now])?;
                    0
                }
                // An expired write over the expected live version deletes it.
                (true, expected) => {
                    let deleted = tx
                        .prepare_cached(&sql.delete_live_if_version)?
                        .execute(params![key, expected, now])?;
                    if deleted != 1 {
                        return Err(OpError::Conflict(expected_version));
                    }
                    0
                }
                (false, 0) => {
                    let inserted = tx.prepare_cached(&sql.insert_if_absent)?.execute(params![
                        key, data, expires_at, now, next_sql, owner, absolute
                    ])?;
                    if inserted != 1 {
                        return Err(OpError::Conflict(expected_version));
                    }
                    next
                }
                (false, expected) => {
                    let updated = tx.prepare_cached(&sql.update_if_version)?.execute(params![
                        key, data, expires_at, expected, now, next_sql, owner, absolute
                    ])?;
                    if updated != 1 {
                        return Err(OpError::Conflict(expected_version));
                    }
                    next
                }
            };
            tx.commit()?;
            Ok(new_version)
        })
        .await
    }

    async fn len(&self) -> Result<u64> {
        self.read("len", None, |conn, sql| {
            let count: i64 = conn
                .prepare_cached(&sql.count)?
                .query_row(params![now_millis()], |row| row.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    async fn clear(&self) -> Result<()> {
        let batch = i64::try_from(self.delete_batch_size).unwrap_or(i64::MAX);
        // The first batch notes the largest rowid: the clear removes the rows up to it, the
        // ones there when it started, so it ends even while other writers keep inserting.
        let (mut deleted, last) = self
            .write("clear", None, move |conn, sql| {
                let tx = immediate(conn)?;
                let last: Option<i64> = tx
                    .prepare_cached(&sql.max_rowid)?
                    .query_row([], |row| row.get(0))?;
                let Some(last) = last else {
                    return Ok((0, 0));
                };
                let deleted = tx
                    .prepare_cached(&sql.clear_batch)?
                    .execute(params![last, batch])?;
                tx.commit()?;
                Ok((deleted as u64, last))
            })
            .await?;
        let mut total = deleted;
        // Each batch is its own job and transaction, like delete_expired's.
        while deleted >= self.delete_batch_size as u64 {
            deleted = self
                .write("clear", None, move |conn, sql| {
                    let mut stmt = conn.prepare_cached(&sql.clear_batch)?;
                    Ok(stmt.execute(params![last, batch])? as u64)
                })
                .await?;
            total += deleted;
        }
        if total >= LARGE_DELETE_ROWS {
            self.shrink_wal("clear").await;
        }
        Ok(())
    }

    async fn delete_expired(&self) -> Result<u64> {
        let batch = self.delete_batch_size as u64;
        let mut total = 0;
        loop {
            // Each batch is its own job and transaction, so writes queued meanwhile (from
            // this store or another process) get the lock between batches.
            let deleted = self.delete_expired_batch().await?;
            total += deleted;
            if deleted < batch {
                break;
            }
        }
        if total >= LARGE_DELETE_ROWS {
            self.shrink_wal("delete_expired").await;
        }
        Ok(total)
    }

    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        self.owner_sessions(owner, with_data).await
    }

    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        self.destroy_owner_sessions(owner, except).await
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        self.scan_page(cursor, limit).await
    }

    /// One transaction: reads the old row and the new id's, copies the old row under the new
    /// id, and marks the old one rotated (or deletes it for a grace of zero).
    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        if old == new {
            return Ok(Rotation::Taken);
        }
        let (old_key, new_key) = (old.as_str().to_owned(), new.as_str().to_owned());
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        self.write_one("rotate", Some(old), move |conn, sql| {
            let tx = immediate(conn)?;
            let now = now_millis();
            let source = tx
                .prepare_cached(&sql.rotate_source)?
                .query_row(params![old_key, now], |row| {
                    Ok((
                        integer_expiry(row.get_ref(0)?),
                        integer_version(row.get_ref(1)?),
                        matches!(row.get_ref(2)?, ValueRef::Integer(1)),
                    ))
                })
                .optional()?;
            let Some((expires_at, version, rotated)) = source else {
                return Ok(Rotation::Absent);
            };
            if rotated {
                return Ok(Rotation::Absent);
            }
            if live_row(&tx, sql, &new_key, now)?.is_some() {
                return Ok(Rotation::Taken);
            }
            // A row whose expiry or version is not valid is not a session to move.
            let (expires_at, version) = (expires_at?, next_version(version?));
            tx.prepare_cached(&sql.rotate_copy)?.execute(params![
                old_key,
                new_key,
                version_to_i64(version)
            ])?;
            let until = now.saturating_add(grace).min(expires_at);
            if until <= now {
                tx.prepare_cached(&sql.delete)?.execute(params![old_key])?;
            } else {
                tx.prepare_cached(&sql.rotate_mark)?
                    .execute(params![old_key, new_key, until])?;
            }
            tx.commit()?;
            Ok(Rotation::Moved { version })
        })
        .await
    }

    /// Replaces the row's data with text that is not JSON.
    async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
        let key = id.as_str().to_owned();
        self.write("make_undecodable", Some(id), move |conn, sql| {
            Ok(conn.execute(&sql.spoil, rusqlite::params![key])? > 0)
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

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, with the default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder().open(path).await
    }

    /// Opens a new, private, in-memory database with the default options.
    pub async fn open_in_memory() -> Result<Self> {
        Self::builder().open_in_memory().await
    }

    /// A builder, starting from the defaults.
    pub fn builder() -> SqliteStoreBuilder {
        SqliteStoreBuilder::default()
    }

    /// The table this store keeps its sessions in.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            Location::File(path) => Some(path),
            Location::Memory => None,
        }
    }

    /// The number of rows one batch of `delete_expired` or `clear` deletes.
    pub fn delete_batch_size(&self) -> usize {
        self.delete_batch_size
    }

    /// Deletes at most one batch ([`delete_batch_size`](Self::delete_batch_size) rows) of
    /// expired sessions, in one short transaction, and returns how many it deleted.
    /// [`delete_expired`](SessionStore::delete_expired) repeats this until a batch comes back
    /// short; call this instead to pace the cleanup yourself.
    pub async fn delete_expired_batch(&self) -> Result<u64> {
        let batch = i64::try_from(self.delete_batch_size).unwrap_or(i64::MAX);
        self.write("delete_expired", None, move |conn, sql| {
            let mut stmt = conn.prepare_cached(&sql.delete_expired_batch)?;
            Ok(stmt.execute(params![now_millis(), batch])? as u64)
        })
        .await
    }

    /// The bound on one operation (see
    /// [`operation_timeout`](SqliteStoreBuilder::operation_timeout)).
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// How many write operations are waiting in the write connection's queue right now (not
    /// counting the one running), at most the
    /// [`queue_capacity`](SqliteStoreBuilder::queue_capacity). 0 once the store is closed
    /// and its queue drained.
    pub fn pending_writes(&self) -> usize {
        self.writer.pending()
    }

    /// Finishes the queued operations, then stops the store's threads and closes its
    /// connections, so that a process can exit without losing a write it queued.
    ///
    /// Operations already queued (or waiting for room in the queue) when `close` is called
    /// still run, each within its operation timeout. Every operation called after it fails
    /// with [`Error::Unavailable`] whose source says the store was closed: the kind is
    /// transient, but retrying on this store never helps (open a new one). `close` waits
    /// at most twice the operation timeout (inside a tokio runtime; elsewhere as long as the
    /// queued operations take, each bounded by its own deadline) and then fails with
    /// [`Error::Timeout`], the threads still finishing in the background. Calling it again
    /// waits again; it is never an error to close a closed store. Dropping the store without
    /// `close` also lets the threads finish the queue, but nothing waits for them.
    pub async fn close(&self) -> Result<()> {
        if let Some(inline) = &self.inline {
            inline.close();
        }
        if let Some(inline) = &self.inline_writer {
            inline.close();
        }
        self.writer.close();
        if let Some(readers) = &self.readers {
            readers.close();
        }
        let stopped = async {
            self.writer.stopped().await;
            if let Some(readers) = &self.readers {
                readers.stopped().await;
            }
            Ok(())
        };
        within(
            self.operation_timeout.saturating_mul(2),
            "close",
            None,
            stopped,
        )
        .await
    }

    /// After a large delete: checkpoints the write-ahead log and truncates its file to zero
    /// bytes (`PRAGMA wal_checkpoint(TRUNCATE)`), so it does not stay at its peak size. Best
    /// effort: it waits at most [`CHECKPOINT_WAIT`] for other connections, and a failure is
    /// ignored (the next checkpoint, or [`WAL_SIZE_LIMIT`], takes care of the file).
    async fn shrink_wal(&self, op: &'static str) {
        if !matches!(self.location, Location::File(_)) {
            return;
        }
        let lock_wait = self.writer.busy_timeout.min(CHECKPOINT_WAIT);
        let _ = self
            .on(&self.writer, op, None, lock_wait, |conn, _| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
                Ok(())
            })
            .await;
    }
}

/// Reads the live session `key`, deciding expiry with the clock read now.
fn read_session(conn: &mut Connection, sql: &Sql, key: &str) -> Result<Option<Session>, OpError> {
    let mut stmt = conn.prepare_cached(&sql.get)?;
    let row = stmt
        .query_row(params![key, now_millis()], |row| {
            let rotated = matches!(row.get_ref(5)?, ValueRef::Integer(1));
            Ok(decode_row(row)?.map(|session| session.with_rotated(rotated)))
        })
        .optional()?;
    Ok(row.transpose()?)
}

/// Starts an immediate (write-locking) transaction.
fn immediate(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// The live row of an id (a session or a rotated id), as a write needs to know it.
#[derive(Clone, Copy)]
struct LiveRow {
    /// Its absolute expiry; a value that is not an integer (only a hand edit stores one) is
    /// none.
    absolute: Option<i64>,
    /// Whether it is a rotated id.
    rotated: bool,
}

fn live_row(conn: &Connection, sql: &Sql, id: &str, now: i64) -> rusqlite::Result<Option<LiveRow>> {
    let mut stmt = conn.prepare_cached(&sql.live)?;
    stmt.query_row(params![id, now], |row| {
        Ok(LiveRow {
            absolute: match row.get_ref(0)? {
                ValueRef::Integer(ms) => Some(ms),
                _ => None,
            },
            rotated: matches!(row.get_ref(1)?, ValueRef::Integer(1)),
        })
    })
    .optional()
}

/// `expires_at`, capped by the absolute expiry if there is one.
fn capped(expires_at: i64, absolute: Option<i64>) -> i64 {
    absolute.map_or(expires_at, |absolute| absolute.min(expires_at))
}

/// The session's owner as the `owner` column takes it: NULL for none.
fn owner_column(session: &Session) -> Option<String> {
    session.owner().map(|owner| owner.as_str().to_owned())
}
