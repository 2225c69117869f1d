//! A store in an SQLite database, through [rusqlite](https://docs.rs/rusqlite) with its
//! bundled SQLite (no system library needed).
//!
//! [`SqliteStore`] keeps sessions in one table of an SQLite database file. It is the embedded
//! store a small deployment can run in production: sessions survive restarts, several
//! processes can share one database file, and there is no server to run.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use session_stores::{Session, SessionId, SessionStore, SqliteStore};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::builder()
//!     .table("web_sessions")
//!     .busy_timeout(Duration::from_secs(10))
//!     .open(dir.path().join("sessions.db"))
//!     .await?;
//! let id = SessionId::generate();
//! let mut session = Session::new(Duration::from_secs(3600));
//! session.insert("user", "ada").unwrap();
//! assert!(store.create(&id, &session).await?);
//! // A new session starts at a fresh, unpredictable version; each write adds one.
//! let version = store.get(&id).await?.unwrap().version();
//! assert_eq!(store.set(&id, &session).await?, version + 1);
//!
//! // A test or a single process that needs no persistence:
//! let scratch = SqliteStore::open_in_memory().await?;
//! assert!(scratch.is_empty().await?);
//! # Ok::<(), session_stores::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Opening and options
//!
//! [`SqliteStore::open`] opens (creating if needed) a database file with the defaults;
//! [`SqliteStore::open_in_memory`] makes a private in-memory database; [`SqliteStore::builder`]
//! sets the options:
//!
//! | option | default | meaning |
//! | --- | --- | --- |
//! | [`table`](SqliteStoreBuilder::table) | `sessions` | the table, an identifier matching `[A-Za-z_][A-Za-z0-9_]{0,62}`, not starting with `sqlite_` and not the schema table's name |
//! | [`busy_timeout`](SqliteStoreBuilder::busy_timeout) | 5 s | how long a connection waits for another connection's lock (never past the operation's deadline) before the operation fails with a transient [`Error::Timeout`] |
//! | [`synchronous`](SqliteStoreBuilder::synchronous) | [`Synchronous::Normal`] | SQLite's `PRAGMA synchronous`: with WAL, `Normal` never corrupts the database but a power loss may drop the last commits; `Full` syncs every commit |
//! | [`wal`](SqliteStoreBuilder::wal) | `true` | switch the file to write-ahead logging (`PRAGMA journal_mode=WAL`), so reads run while a write is in progress; `false` leaves the file's journal mode as it is |
//! | [`readers`](SqliteStoreBuilder::readers) | 4 | how many read connections serve `get` and `len` (0: the write connection serves them) |
//! | [`inline_reads`](SqliteStoreBuilder::inline_reads) | up to 8 | how many connections let `get` run on the calling task's own thread when one is free (0: every `get` goes to a read connection's thread) |
//! | [`delete_batch_size`](SqliteStoreBuilder::delete_batch_size) | 1000 | how many rows one batch of [`delete_expired`](SessionStore::delete_expired) or [`clear`](SessionStore::clear) deletes |
//! | [`operation_timeout`](SqliteStoreBuilder::operation_timeout) | 5 s ([`DEFAULT_OPERATION_TIMEOUT`]) | the client-side bound on one operation, queue and lock waits included; an overrun is a transient [`Error::Timeout`] (for `delete_expired` and `clear`: on each batch) |
//! | [`queue_capacity`](SqliteStoreBuilder::queue_capacity) | 1024 | how many operations may wait in each connection queue; a caller that finds it full waits for room within its operation timeout |
//!
//! Opening is async and runs on the store's own threads, like everything else.
//!
//! # Schema
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "sessions" (
//!     id         TEXT PRIMARY KEY NOT NULL, -- the session id
//!     data       TEXT NOT NULL,             -- the session's data as a JSON object
//!     expires_at INTEGER NOT NULL,          -- expiry, milliseconds since the Unix epoch (UTC)
//!     version    INTEGER NOT NULL,          -- the store-assigned version, 1 to MAX_VERSION
//!     owner      TEXT NULL                  -- the session's Owner, NULL for none
//! );
//! CREATE INDEX IF NOT EXISTS "sessions_expires_at" ON "sessions" (expires_at);
//! CREATE INDEX IF NOT EXISTS "sessions_owner" ON "sessions" (owner) WHERE owner IS NOT NULL;
//!
//! CREATE TABLE IF NOT EXISTS session_stores_schema (
//!     table_name TEXT PRIMARY KEY NOT NULL, -- a session table in this database
//!     version    INTEGER NOT NULL           -- its schema version, SCHEMA_VERSION (2) today
//! );
//! ```
//!
//! The store creates both tables and the indexes if they are missing and records the session
//! table's schema version in `session_stores_schema`, so a later release can migrate it. A
//! table recorded with a newer schema version than this release knows, or an existing table
//! without the columns `id`, `data`, `expires_at` and `version`, is refused with
//! [`Error::Config`]. A table of schema version 1 (written by releases before owners) is
//! upgraded when a store opens it, in the same transaction that checks it:
//! `ALTER TABLE .. ADD COLUMN owner TEXT`, the owner index, and version 2 recorded. Its
//! sessions are kept, with no owner. (A process still running an older release on the same
//! file keeps working but does not maintain owners: its writes leave a row's owner as it
//! was. Upgrade every process sharing a file.) Expiry is always an
//! integer in epoch milliseconds, never a local or naive timestamp. Several stores can share a
//! database file with different tables; [`clear`](SessionStore::clear) empties only its own.
//!
//! # Queries
//!
//! - `get` and `len` filter expiry in SQL (`expires_at > now`), so an expired row is never
//!   returned or counted, even before `delete_expired` runs.
//! - Versions: a write that starts a new incarnation (over an absent, expired or corrupt row)
//!   stores a [fresh, unpredictable version](crate::fresh_version), drawn by the store and
//!   bound as a parameter; a write over a live row stores its version + 1, or a fresh one if
//!   the row is at [`MAX_VERSION`](crate::MAX_VERSION) (or above, which only a hand-edited row
//!   can be).
//! - `set` is one upsert (`INSERT ... ON CONFLICT (id) DO UPDATE ... RETURNING version`) that
//!   advances the version of a live row and stores the fresh one over an expired row (or over
//!   a corrupt one whose version is not a positive integer).
//! - `create` is an `INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE expires_at <= now`, which
//!   inserts over an absent or expired row and does nothing over a live one; the change count
//!   says which happened.
//! - `set_if_version` is `UPDATE ... WHERE id = ? AND version = ? AND expires_at > now` (or the
//!   `create` statement for an expected version of 0), checked by its change count.
//! - `touch` updates only `expires_at`, and only of a live row (the owner stays).
//! - Every write stores the session's [`Owner`](crate::Owner) in `owner` (NULL for none).
//!   `sessions_of` is one `SELECT id, expires_at, version[, data] ... WHERE owner = ? AND
//!   expires_at > now` over the owner index, on a read connection (never inline: a listing
//!   may be long). `destroy_owner` is one `DELETE ... WHERE owner = ? AND id IS NOT ?
//!   RETURNING expires_at > now` on the write connection, in a `BEGIN IMMEDIATE`
//!   transaction (so "now" is read under the lock): it removes the owner's rows, expired
//!   ones too, and counts the live ones.
//! - `scan` pages through the table in id order, on a read connection like `sessions_of`:
//!   `SELECT data, expires_at, version, owner, id ... WHERE id > ? AND +expires_at > now
//!   ORDER BY id LIMIT ?` (the first page without the id condition), a keyset walk of the
//!   primary key's index (the `+` keeps the planner off the expiry index). The cursor is
//!   `1:` and the last id returned, so every session live for the whole scan is returned
//!   once, whatever is written meanwhile, and a cursor saved as text resumes the scan on any
//!   store over the same table. A page holds at most 10,000 sessions, whatever limit it is
//!   asked for; a page shorter than its limit is the last.
//! - `delete_expired` deletes in batches of [`delete_batch_size`](SqliteStoreBuilder::delete_batch_size)
//!   rows, each its own short transaction queued behind other writes, so a large backlog never
//!   holds the write lock for long. [`SqliteStore::delete_expired_batch`] runs one batch.
//! - `clear` deletes in batches of the same size, each its own transaction, up to the largest
//!   rowid it found when it started: it removes every session that was there when it was
//!   called, and writes queued meanwhile run between its batches (a session written during a
//!   `clear` may or may not survive it).
//!
//! `set`, `create`, `set_if_version` and `touch` run in `BEGIN IMMEDIATE` transactions: they
//! take the database's write lock when they start (waiting up to the busy timeout for it), so
//! two processes never fail with `SQLITE_BUSY` halfway through a read-modify-write. They read
//! the clock only once they hold the lock, so whether a session has expired is decided when
//! the write happens, not when it was called: a `set` whose expiry passes while it waits for
//! the queue or the lock stores nothing and returns 0. A write that fails rolls back and
//! leaves the previous session intact.
//!
//! # Write-ahead log size
//!
//! With WAL, SQLite checkpoints the log into the database every 1000 pages and then reuses
//! the log file from its start, but never shrinks the file by itself. The write connection
//! sets `PRAGMA journal_size_limit` to [`WAL_SIZE_LIMIT`] (4 MiB), so a log that a large
//! transaction grew is cut back to that size when it is reused; and a `clear` or
//! `delete_expired` that removed at least [`LARGE_DELETE_ROWS`] (1000) rows ends with a
//! `PRAGMA wal_checkpoint(TRUNCATE)`, which empties the file (best effort: it waits at most
//! 250 ms for other connections' locks, and a failure is ignored).
//!
//! # Threads and concurrency
//!
//! rusqlite is synchronous, so a SQLite call that may wait never runs on an async executor's
//! thread. The one call that does run there is `get` on an
//! [inline read](SqliteStoreBuilder::inline_reads) connection, which never waits (a busy
//! connection is skipped, and a locked database sends the read to the read connections):
//! it only reads the session's pages. Writes stay on their thread, since a commit can
//! checkpoint the WAL or `fsync`, and waits for the write lock. A
//! file-backed store owns one thread for its write connection and one thread per read
//! connection; operations are sent to them over bounded queues
//! ([`queue_capacity`](SqliteStoreBuilder::queue_capacity), default
//! [`DEFAULT_QUEUE_CAPACITY`]) and their results come back through `tokio::sync::oneshot`, so
//! the store works under any executor and needs no tokio runtime. Writes from one store are
//! serialised on its write connection; with WAL, reads on the read connections proceed in
//! parallel with a write. Every connection caches its prepared statements (`prepare_cached`).
//! [`SqliteStore::pending_writes`] says how many writes are waiting.
//!
//! # Deadlines and shutdown
//!
//! Every operation is bounded by the [operation timeout](SqliteStoreBuilder::operation_timeout)
//! (default 5 s), from the call to the answer: waiting for room in a full queue, waiting in
//! the queue, waiting for the lock, running. It is
//! [`deadline::within`](crate::deadline::within), and an overrun is a transient
//! [`Error::Timeout`] naming the operation and the session. Its timer is a tokio timer on one
//! thread per process (started with the first store), which the store's futures use whatever
//! executor polls them, so the bound holds under any executor, in a tokio runtime built
//! without timers, or with none. The connection threads keep the same deadline: a job whose
//! caller has gone (timed out, or its future dropped) is skipped without touching the
//! database, a job whose deadline passed while it was queued is answered with a timeout, and
//! a job never waits for the lock past its deadline (its busy timeout is the smaller of the
//! configured one and the time left). So a lock held by another process for longer than the
//! timeout makes the calls behind it fail, and they do not happen later: only a job that had
//! already started when its caller gave up may still complete (see
//! [`deadline`](crate::deadline) for what a `Timeout` means for a write).
//!
//! [`SqliteStore::close`] stops the store: the operations already queued run (each within its
//! deadline), then the threads stop and close their connections, and `close` returns. Every
//! operation called after `close` fails with [`Error::Unavailable`] whose source says the
//! store was closed; it is not transient in practice: open a new store. Dropping the store
//! without `close` also lets its threads finish the queued operations and close their
//! connections, but nothing waits for them (a process that exits right away loses them).
//!
//! Several stores, in one process or in several, may open the same file: SQLite's locking
//! keeps every operation atomic across them, and the busy timeout absorbs ordinary lock
//! contention. A lock still held by someone else when the timeout runs out surfaces as
//! [`Error::Timeout`] (transient), never as a raw `SQLITE_BUSY`.
//!
//! An in-memory store has a single connection that serves reads and writes (an in-memory
//! database is private to its connection), so its reads wait behind its writes.
//!
//! # Errors
//!
//! A row whose data is not a JSON object, or whose columns have the wrong types, gives
//! [`Error::Decode`] for that id (the row is left as it is; a later `set` replaces it). Lock
//! timeouts and overrun deadlines give [`Error::Timeout`]; a store that was closed or whose
//! threads have stopped gives [`Error::Unavailable`]; other SQLite failures give
//! [`Error::Backend`]. Each keeps the rusqlite error as its source when there is one (a lock
//! timeout's is `SQLITE_BUSY`; an overrun deadline's is the timer's, or none).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use rusqlite::ffi::ErrorCode;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::deadline::{DEFAULT_OPERATION_TIMEOUT, within};
use crate::error::{Error, IdHint, Result};
use crate::session::{
    MAX_VERSION, Owner, Session, SessionId, fresh_version, next_version, now_millis, to_millis,
};
use crate::store::{Capabilities, OwnedSession, ScanCursor, ScanPage, SessionStore};

/// The default table name: `sessions`.
pub const DEFAULT_TABLE: &str = "sessions";

/// The most sessions one page of [`scan`](SessionStore::scan) returns, whatever limit it is
/// asked for: a page is read whole into memory.
const MAX_SCAN_LIMIT: usize = 10_000;

/// The default busy timeout: 5 seconds.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The default number of read connections of a file-backed store: 4.
pub const DEFAULT_READERS: usize = 4;

/// The default number of rows one batch of `delete_expired` or `clear` deletes: 1000.
pub const DEFAULT_DELETE_BATCH_SIZE: usize = 1000;

/// The default number of operations that may wait in each connection queue (the write
/// connection's, the read connections'): 1024.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// The largest queue capacity the builder accepts; larger values are taken as this.
const MAX_QUEUE_CAPACITY: usize = 1 << 20;

/// The write connection's `PRAGMA journal_size_limit`: 4 MiB. Whenever SQLite restarts the
/// write-ahead log from its beginning, it truncates a larger file to this size.
pub const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// A `clear` or `delete_expired` that removed at least this many rows ends with a
/// `PRAGMA wal_checkpoint(TRUNCATE)`, which empties the write-ahead log file.
pub const LARGE_DELETE_ROWS: u64 = 1000;

/// How long the checkpoint after a large delete waits for other connections' locks before it
/// gives up (it is housekeeping: the delete has already succeeded).
const CHECKPOINT_WAIT: Duration = Duration::from_millis(250);

/// The schema version this release writes and reads. Version 2 added the `owner` column
/// and its index; a version 1 table is upgraded when a store opens it.
pub const SCHEMA_VERSION: i64 = 2;

/// The table that records the schema version of each session table in a database.
pub const SCHEMA_TABLE: &str = "session_stores_schema";

/// What the store waits for when a lock is still busy after the busy timeout.
const LOCK_WAIT: &str = "the SQLite database lock";

/// SQLite's `PRAGMA synchronous` setting: how hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// Never sync. Fastest; an operating system crash or power loss can corrupt the database.
    Off,
    /// Sync at checkpoints. With WAL, the database never corrupts, but a power loss may lose
    /// the most recent commits. The default.
    #[default]
    Normal,
    /// Sync every commit: a committed session survives a power loss.
    Full,
    /// Like `Full`, and also sync the directory after deleting a rollback journal.
    Extra,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

/// Builds a [`SqliteStore`]. See the [module docs](self) for the options.
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    table: String,
    busy_timeout: Duration,
    synchronous: Synchronous,
    wal: bool,
    readers: usize,
    inline_reads: usize,
    delete_batch_size: usize,
    operation_timeout: Duration,
    queue_capacity: usize,
}

impl Default for SqliteStoreBuilder {
    fn default() -> Self {
        SqliteStoreBuilder {
            table: DEFAULT_TABLE.to_string(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            synchronous: Synchronous::default(),
            wal: true,
            readers: DEFAULT_READERS,
            inline_reads: default_inline_reads(),
            delete_batch_size: DEFAULT_DELETE_BATCH_SIZE,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}

impl SqliteStoreBuilder {
    /// The table to keep sessions in. It must match `[A-Za-z_][A-Za-z0-9_]{0,62}`, must not
    /// start with `sqlite_` and must not be [`SCHEMA_TABLE`]; opening fails with
    /// [`Error::Config`] otherwise. Default: [`DEFAULT_TABLE`].
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// How long an operation waits for a lock held by another connection before it fails
    /// with [`Error::Timeout`] (never longer than what is left of its
    /// [`operation_timeout`](Self::operation_timeout)). Default: [`DEFAULT_BUSY_TIMEOUT`].
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// SQLite's `PRAGMA synchronous` for every connection. Default: [`Synchronous::Normal`].
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Whether to switch a database file to write-ahead logging. `false` leaves the file's
    /// journal mode unchanged. Ignored for in-memory databases. Default: `true`.
    pub fn wal(mut self, wal: bool) -> Self {
        self.wal = wal;
        self
    }

    /// The number of read connections of a file-backed store (each on its own thread). With
    /// 0, the write connection serves reads too. Ignored for in-memory databases, which have
    /// one connection. Default: [`DEFAULT_READERS`].
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers;
        self
    }

    /// How many connections serve `get` inline: on the calling task's own thread, when one of
    /// them is free at that instant, instead of handing the read to a read connection's thread
    /// and waiting for its answer (a thread hand-off costs about as much as the read itself).
    ///
    /// An inline read never waits: not for a connection (a busy one is skipped), not for a
    /// queue, and not for a lock (its connections have a busy timeout of zero; a read that
    /// finds the database locked, which under WAL happens only around a checkpoint, goes to
    /// the read connections instead). What it can take is the time SQLite needs to read the
    /// session's pages, from its cache or the operating system's, or from disk on a cold
    /// cache. Only for a database file in WAL mode; 0 turns it off. Default: the number of
    /// CPUs, at most 8.
    pub fn inline_reads(mut self, connections: usize) -> Self {
        self.inline_reads = connections;
        self
    }

    /// How many rows one batch of `delete_expired` or `clear` deletes (at least 1). Default:
    /// [`DEFAULT_DELETE_BATCH_SIZE`].
    pub fn delete_batch_size(mut self, rows: usize) -> Self {
        self.delete_batch_size = rows.max(1);
        self
    }

    /// The client-side bound on one operation, from the call to the answer, including the
    /// time spent waiting in the queue and for the database lock. An operation that
    /// overruns it fails with a transient [`Error::Timeout`], and its job is skipped if it has
    /// not started yet. `delete_expired` and `clear` apply it to each batch. Default:
    /// [`DEFAULT_OPERATION_TIMEOUT`].
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How many operations may wait in each connection queue (at least 1, at most 2^20).
    /// An operation that finds its queue full waits for room, within its operation timeout.
    /// Default: [`DEFAULT_QUEUE_CAPACITY`].
    pub fn queue_capacity(mut self, jobs: usize) -> Self {
        self.queue_capacity = jobs.clamp(1, MAX_QUEUE_CAPACITY);
        self
    }

    /// Opens (creating if needed) the database file at `path` and the store's table.
    pub async fn open(self, path: impl AsRef<Path>) -> Result<SqliteStore> {
        self.start(Location::File(path.as_ref().to_path_buf()))
            .await
    }

    /// Opens a new, private, in-memory database. Its sessions are lost when the store is
    /// dropped.
    pub async fn open_in_memory(self) -> Result<SqliteStore> {
        self.start(Location::Memory).await
    }

    async fn start(self, location: Location) -> Result<SqliteStore> {
        validate_table(&self.table)?;
        let sql = Arc::new(Sql::new(&self.table));
        let config = Arc::new(ConnConfig {
            location: location.clone(),
            table: self.table.clone(),
            busy_timeout: self.busy_timeout,
            synchronous: self.synchronous,
            wal: self.wal,
        });

        let queue = self.queue_capacity;
        let writer = {
            let config = Arc::clone(&config);
            Pool::start(
                "writer",
                1,
                queue,
                self.busy_timeout,
                Arc::clone(&sql),
                move || {
                    let mut conn = config.connect(true)?;
                    config.set_up(&mut conn)?;
                    Ok(conn)
                },
            )
            .await?
        };
        let readers = match (&location, self.readers) {
            (Location::Memory, _) | (_, 0) => None,
            (Location::File(_), readers) => {
                let config = Arc::clone(&config);
                Some(
                    Pool::start(
                        "reader",
                        readers,
                        queue,
                        self.busy_timeout,
                        Arc::clone(&sql),
                        move || {
                            let conn = config.connect(false)?;
                            conn.pragma_update(None, "query_only", true)
                                .map_err(|e| sql_error("open", None, e))?;
                            Ok(conn)
                        },
                    )
                    .await?,
                )
            }
        };
        let inline = match (&location, self.wal, self.inline_reads) {
            (Location::File(_), true, n) if n > 0 => {
                let config = Arc::clone(&config);
                // Opened on a thread of their own, like every connection: this may run
                // outside any tokio runtime.
                let (opened_tx, opened) = oneshot::channel();
                let open_all = move || {
                    (0..n)
                        .map(|_| {
                            let conn = config.connect(false)?;
                            let configure = || -> rusqlite::Result<()> {
                                conn.pragma_update(None, "query_only", true)?;
                                // Never wait for a lock on the caller's thread.
                                conn.busy_timeout(Duration::ZERO)
                            };
                            configure().map_err(|e| sql_error("open", None, e))?;
                            Ok(Mutex::new(Some(conn)))
                        })
                        .collect::<Result<Vec<_>>>()
                };
                thread::Builder::new()
                    .name("session-stores-sqlite-open".into())
                    .spawn(move || {
                        let _ = opened_tx.send(open_all());
                    })
                    .map_err(|err| Error::backend("open", None, err))?;
                let conns = opened
                    .await
                    .map_err(|_| Error::backend("open", None, WorkerStopped))??;
                Some(Inline {
                    conns: conns.into_boxed_slice(),
                    sql: Arc::clone(&sql),
                })
            }
            _ => None,
        };
        Ok(SqliteStore {
            writer,
            readers,
            inline,
            table: self.table,
            location,
            delete_batch_size: self.delete_batch_size,
            operation_timeout: self.operation_timeout,
        })
    }
}

/// A session store in an SQLite database. See the [module docs](self).
pub struct SqliteStore {
    writer: Pool,
    readers: Option<Pool>,
    /// Connections for `get` on the caller's thread; see
    /// [`inline_reads`](SqliteStoreBuilder::inline_reads).
    inline: Option<Inline>,
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

#[derive(Debug, Clone)]
enum Location {
    File(PathBuf),
    Memory,
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

    /// Runs `f` on the write connection.
    async fn write<T, F>(&self, op: &'static str, id: Option<&SessionId>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Sql) -> Result<T, OpError> + Send + 'static,
    {
        self.on(&self.writer, op, id, self.writer.busy_timeout, f)
            .await
    }

    /// Runs `f` on a read connection (the write connection if there are none).
    async fn read<T, F>(&self, op: &'static str, id: Option<&SessionId>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Sql) -> Result<T, OpError> + Send + 'static,
    {
        let pool = self.readers.as_ref().unwrap_or(&self.writer);
        self.on(pool, op, id, pool.busy_timeout, f).await
    }

    /// Runs `f` right here on a free inline connection: `None` when there is none (or inline
    /// reads are off, or the store is closed).
    fn read_inline<T>(
        &self,
        f: impl FnOnce(&mut Connection, &Sql) -> Result<T, OpError>,
    ) -> Option<Result<T, OpError>> {
        let inline = self.inline.as_ref()?;
        for slot in inline.conns.iter() {
            let mut guard = match slot.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            let conn = guard.as_mut()?;
            return Some(f(conn, &inline.sql));
        }
        None
    }

    /// Runs `f` on one of `pool`'s connections within the operation timeout, waiting at most
    /// `lock_wait` for a lock held by another connection.
    async fn on<T, F>(
        &self,
        pool: &Pool,
        op: &'static str,
        id: Option<&SessionId>,
        lock_wait: Duration,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Sql) -> Result<T, OpError> + Send + 'static,
    {
        // The connection thread keeps the same deadline: it skips the job once it has passed
        // and never waits for a lock beyond it.
        let deadline = Instant::now().checked_add(self.operation_timeout);
        within(
            self.operation_timeout,
            op,
            id,
            pool.run(op, id, deadline, lock_wait, f),
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

/// What a job on a connection thread can fail with; turned into an [`Error`] naming the
/// operation and the session on the way back.
#[derive(Debug)]
enum OpError {
    Sql(rusqlite::Error),
    Row(RowError),
    Conflict(u64),
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
    fn into_error(self, op: &'static str, id: Option<&SessionId>) -> Error {
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

/// Reads the live session `key`, deciding expiry with the clock read now.
fn read_session(conn: &mut Connection, sql: &Sql, key: &str) -> Result<Option<Session>, OpError> {
    let mut stmt = conn.prepare_cached(&sql.get)?;
    let row = stmt
        .query_row(params![key, now_millis()], decode_row)
        .optional()?;
    Ok(row.transpose()?)
}

/// Whether `err` is SQLite's "database is locked" (or "busy").
fn is_locked(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The connections of [`SqliteStoreBuilder::inline_reads`], each taken with `try_lock` only.
struct Inline {
    /// `None` once the store is closed.
    conns: Box<[Mutex<Option<Connection>>]>,
    sql: Arc<Sql>,
}

impl Inline {
    /// Closes every connection (waiting for a read in progress on it, which never waits on
    /// anything itself).
    fn close(&self) {
        for slot in self.conns.iter() {
            let conn = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            drop(conn);
        }
    }
}

/// The default number of inline read connections: the number of CPUs, 1 to 8.
fn default_inline_reads() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8))
}

/// Maps a rusqlite error: a lock still busy after the busy timeout is a transient
/// [`Error::Timeout`], anything else a [`Error::Backend`].
fn sql_error(op: &'static str, id: Option<&SessionId>, err: rusqlite::Error) -> Error {
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
enum RowError {
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

fn describe(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

/// Decodes `data, expires_at, version, owner` into a session, never panicking on what is
/// stored.
fn decode_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Session, RowError>> {
    let data = row.get_ref(0)?;
    let expires_at = row.get_ref(1)?;
    let version = row.get_ref(2)?;
    let owner = row.get_ref(3)?;
    Ok((|| {
        let session = Session::from_parts(
            decode_data(data)?,
            integer_expiry(expires_at)?,
            integer_version(version)?,
        );
        Ok(session.with_owner(decode_owner(owner)?))
    })())
}

fn decode_data(value: ValueRef<'_>) -> Result<Map<String, Value>, RowError> {
    match value {
        ValueRef::Text(text) => serde_json::from_slice(text).map_err(|e| RowError::Json(e.into())),
        other => Err(RowError::Column {
            column: "data",
            found: describe(other),
        }),
    }
}

fn integer_expiry(value: ValueRef<'_>) -> Result<i64, RowError> {
    match value {
        ValueRef::Integer(ms) => Ok(ms),
        other => Err(RowError::Column {
            column: "expires_at",
            found: describe(other),
        }),
    }
}

/// The `owner` column: NULL for none, else text that is a valid [`Owner`].
fn decode_owner(value: ValueRef<'_>) -> Result<Option<Owner>, RowError> {
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
fn decode_listed(row: &rusqlite::Row<'_>, with_data: bool) -> Result<OwnedSession, OpError> {
    let id = match row.get_ref(0)? {
        ValueRef::Text(text) => std::str::from_utf8(text).ok(),
        _ => None,
    };
    let Some(id) = id.and_then(|id| SessionId::new(id).ok()) else {
        let raw = match row.get_ref(0)? {
            ValueRef::Text(text) => String::from_utf8_lossy(text).into_owned(),
            other => describe(other).to_owned(),
        };
        return Err(OpError::Done(Error::Decode {
            id: IdHint::from_raw(&raw),
            source: "the id column holds no valid session id".into(),
        }));
    };
    let entry = (|| {
        let expires_at = integer_expiry(row.get_ref(1)?)?;
        let version = integer_version(row.get_ref(2)?)?;
        let data = match with_data {
            true => Some(decode_data(row.get_ref(3)?)?),
            false => None,
        };
        Ok::<_, OpError>((expires_at, version, data))
    })();
    match entry {
        Ok((expires_at, version, data)) => Ok(OwnedSession::new(id, expires_at, version, data)),
        Err(OpError::Row(err)) => Err(OpError::Done(Error::decode(&id, err))),
        Err(other) => Err(other),
    }
}

fn integer_version(value: ValueRef<'_>) -> Result<u64, RowError> {
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

/// A version as an SQLite integer. Every version a store assigns is at most
/// [`MAX_VERSION`], far below `i64::MAX`.
fn sql_version(version: u64) -> i64 {
    i64::try_from(version.min(MAX_VERSION)).unwrap_or(i64::MAX)
}

/// A JSON encoding of the session's data, for the `data` column.
fn encode(id: &SessionId, session: &Session) -> Result<String> {
    crate::session::check_nesting(id, session.data())?;
    serde_json::to_string(session.data()).map_err(|e| Error::encode(id, e))
}

/// The store's SQL, with its (validated, quoted) table name filled in.
#[derive(Debug)]
struct Sql {
    get: String,
    live_version: String,
    upsert: String,
    insert_if_absent: String,
    update_if_version: String,
    delete: String,
    delete_live: String,
    delete_live_if_version: String,
    delete_stale: String,
    touch: String,
    count: String,
    max_rowid: String,
    clear_batch: String,
    delete_expired_batch: String,
    sessions_of: String,
    sessions_of_with_data: String,
    destroy_owner: String,
    scan_first: String,
    scan_after: String,
}

impl Sql {
    fn new(table: &str) -> Self {
        let t = format!("\"{table}\"");
        Sql {
            get: format!(
                "SELECT data, expires_at, version, owner FROM {t} \
                 WHERE id = ?1 AND expires_at > ?2"
            ),
            live_version: format!("SELECT version FROM {t} WHERE id = ?1 AND expires_at > ?2"),
            // ?5 is a fresh version: stored when no live row with a valid version is there,
            // or when the live version is already the largest. ?6 is the owner (or NULL).
            upsert: format!(
                "INSERT INTO {t} (id, data, expires_at, version, owner) \
                 VALUES (?1, ?2, ?3, ?5, ?6) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                 expires_at = excluded.expires_at, owner = excluded.owner, \
                 version = CASE WHEN {t}.expires_at > ?4 AND typeof({t}.version) = 'integer' \
                 AND {t}.version >= 1 AND {t}.version < {MAX_VERSION} \
                 THEN {t}.version + 1 ELSE excluded.version END \
                 RETURNING version"
            ),
            // ?5 is the new incarnation's (fresh) version, ?6 the owner (or NULL).
            insert_if_absent: format!(
                "INSERT INTO {t} (id, data, expires_at, version, owner) \
                 VALUES (?1, ?2, ?3, ?5, ?6) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                 expires_at = excluded.expires_at, version = excluded.version, \
                 owner = excluded.owner \
                 WHERE {t}.expires_at <= ?4"
            ),
            // ?6 is the next version after ?4, computed by the caller (`next_version`); ?7
            // the owner (or NULL).
            update_if_version: format!(
                "UPDATE {t} SET data = ?2, expires_at = ?3, version = ?6, owner = ?7 \
                 WHERE id = ?1 AND version = ?4 AND expires_at > ?5"
            ),
            delete: format!("DELETE FROM {t} WHERE id = ?1"),
            delete_live: format!("DELETE FROM {t} WHERE id = ?1 AND expires_at > ?2"),
            delete_live_if_version: format!(
                "DELETE FROM {t} WHERE id = ?1 AND version = ?2 AND expires_at > ?3"
            ),
            delete_stale: format!("DELETE FROM {t} WHERE id = ?1 AND expires_at <= ?2"),
            touch: format!("UPDATE {t} SET expires_at = ?2 WHERE id = ?1 AND expires_at > ?3"),
            count: format!("SELECT COUNT(*) FROM {t} WHERE expires_at > ?1"),
            max_rowid: format!("SELECT MAX(rowid) FROM {t}"),
            clear_batch: format!(
                "DELETE FROM {t} WHERE rowid IN \
                 (SELECT rowid FROM {t} WHERE rowid <= ?1 ORDER BY rowid LIMIT ?2)"
            ),
            delete_expired_batch: format!(
                "DELETE FROM {t} WHERE rowid IN \
                 (SELECT rowid FROM {t} WHERE expires_at <= ?1 LIMIT ?2)"
            ),
            // `owner = ?` implies `owner IS NOT NULL`, so both use the partial owner index.
            sessions_of: format!(
                "SELECT id, expires_at, version FROM {t} WHERE owner = ?1 AND expires_at > ?2"
            ),
            sessions_of_with_data: format!(
                "SELECT id, expires_at, version, data FROM {t} \
                 WHERE owner = ?1 AND expires_at > ?2"
            ),
            // ?2 is the id to keep, or NULL (`IS NOT NULL` is true of every id).
            destroy_owner: format!(
                "DELETE FROM {t} WHERE owner = ?1 AND id IS NOT ?2 RETURNING expires_at > ?3"
            ),
            // Keyset pages in id order, over the primary key's index: the unary `+` keeps the
            // planner off the expiry index (which would read every live row and sort them).
            // The columns are `get`'s, then the id.
            scan_first: format!(
                "SELECT data, expires_at, version, owner, id FROM {t} \
                 WHERE +expires_at > ?1 ORDER BY id LIMIT ?2"
            ),
            scan_after: format!(
                "SELECT data, expires_at, version, owner, id FROM {t} \
                 WHERE id > ?1 AND +expires_at > ?2 ORDER BY id LIMIT ?3"
            ),
        }
    }
}

/// Checks a table name: `[A-Za-z_][A-Za-z0-9_]{0,62}`, not `sqlite_*`, not [`SCHEMA_TABLE`].
fn validate_table(table: &str) -> Result<()> {
    let mut bytes = table.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !first_ok || !rest_ok || table.len() > 63 {
        return Err(Error::config(format!(
            "SQLite table name {table:?} is not an identifier matching [A-Za-z_][A-Za-z0-9_]{{0,62}}"
        )));
    }
    if table.to_ascii_lowercase().starts_with("sqlite_") {
        return Err(Error::config(format!(
            "SQLite table name {table:?} is reserved: names starting with sqlite_ belong to SQLite"
        )));
    }
    if table.eq_ignore_ascii_case(SCHEMA_TABLE) {
        return Err(Error::config(format!(
            "SQLite table name {table:?} is the store's own schema table"
        )));
    }
    Ok(())
}

/// How each connection is opened and configured.
#[derive(Debug)]
struct ConnConfig {
    location: Location,
    table: String,
    busy_timeout: Duration,
    synchronous: Synchronous,
    wal: bool,
}

impl ConnConfig {
    /// Opens and configures one connection (`create`: the write connection may create the
    /// file; read connections open it once the write connection has set it up).
    fn connect(&self, create: bool) -> Result<Connection> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = match &self.location {
            Location::File(path) => {
                Connection::open_with_flags(path, flags).map_err(|e| Error::Config {
                    message: format!("cannot open the SQLite database {}", path.display()),
                    source: Some(Box::new(e)),
                })?
            }
            Location::Memory => {
                Connection::open_in_memory_with_flags(flags).map_err(|e| Error::Config {
                    message: "cannot open an in-memory SQLite database".to_string(),
                    source: Some(Box::new(e)),
                })?
            }
        };
        let configure = || -> rusqlite::Result<()> {
            conn.busy_timeout(sqlite_wait(self.busy_timeout))?;
            conn.pragma_update(None, "synchronous", self.synchronous.pragma())?;
            if create {
                // The write connection restarts the log after its checkpoints.
                conn.pragma_update_and_check(None, "journal_size_limit", WAL_SIZE_LIMIT, |_| {
                    Ok(())
                })?;
            }
            conn.set_prepared_statement_cache_capacity(32);
            Ok(())
        };
        configure().map_err(|e| sql_error("open", None, e))?;
        Ok(conn)
    }

    /// Switches to WAL if asked, and creates (or checks) the schema. SQLite answers some of
    /// these steps with an immediate `SQLITE_BUSY` that its busy handler does not wait out
    /// (while another connection writes or checkpoints), so a busy answer is retried, with a
    /// short pause, until the busy timeout has passed.
    fn set_up(&self, conn: &mut Connection) -> Result<()> {
        let deadline = Instant::now() + sqlite_wait(self.busy_timeout);
        loop {
            match self.try_set_up(conn) {
                Err(Error::Timeout { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    fn try_set_up(&self, conn: &mut Connection) -> Result<()> {
        if self.wal && matches!(self.location, Location::File(_)) {
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(|e| sql_error("open", None, e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::config(format!(
                    "SQLite refused to switch the database to WAL (journal mode is {mode:?}); \
                     open it with wal(false) to keep its journal mode"
                )));
            }
        }
        self.create_schema(conn).map_err(|e| match e {
            SchemaError::Sql(err) => sql_error("open", None, err),
            SchemaError::Config(message) => Error::config(message),
        })
    }

    fn create_schema(&self, conn: &mut Connection) -> Result<(), SchemaError> {
        let table = &self.table;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (\
                 table_name TEXT PRIMARY KEY NOT NULL, \
                 version INTEGER NOT NULL)"
        ))?;
        let recorded: Option<i64> = tx
            .query_row(
                &format!("SELECT version FROM {SCHEMA_TABLE} WHERE table_name = ?1"),
                params![table],
                |row| row.get(0),
            )
            .optional()?;
        match recorded {
            Some(version) if version > SCHEMA_VERSION => {
                return Err(SchemaError::Config(format!(
                    "SQLite table {table:?} has schema version {version}, newer than the {SCHEMA_VERSION} \
                     this release of session-stores knows; upgrade session-stores"
                )));
            }
            Some(version) if version < 1 => {
                return Err(SchemaError::Config(format!(
                    "SQLite table {table:?} has an invalid schema version {version}"
                )));
            }
            _ => {}
        }
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS \"{table}\" (\
                 id TEXT PRIMARY KEY NOT NULL, \
                 data TEXT NOT NULL, \
                 expires_at INTEGER NOT NULL, \
                 version INTEGER NOT NULL, \
                 owner TEXT NULL)"
        ))?;
        let columns: Vec<(String, i64)> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT name, pk FROM pragma_table_info('{table}')"
            ))?;
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        let id_is_key = columns
            .iter()
            .filter(|(_, pk)| *pk > 0)
            .map(|(name, _)| name.as_str())
            .eq(["id"]);
        if !id_is_key {
            return Err(SchemaError::Config(format!(
                "SQLite table {table:?} already exists and `id` is not its primary key; \
                 it is not a session table (choose another table name)"
            )));
        }
        for wanted in ["id", "data", "expires_at", "version"] {
            if !columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(wanted)) {
                return Err(SchemaError::Config(format!(
                    "SQLite table {table:?} already exists without a {wanted:?} column; \
                     it is not a session table (choose another table name)"
                )));
            }
        }
        // Schema version 1 had no owners: its sessions are kept, with no owner.
        if !columns.iter().any(|(c, _)| c.eq_ignore_ascii_case("owner")) {
            tx.execute_batch(&format!(
                "ALTER TABLE \"{table}\" ADD COLUMN owner TEXT NULL"
            ))?;
        }
        tx.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_expires_at\" ON \"{table}\" (expires_at); \
             CREATE INDEX IF NOT EXISTS \"{table}_owner\" ON \"{table}\" (owner) \
             WHERE owner IS NOT NULL"
        ))?;
        tx.execute(
            &format!(
                "INSERT INTO {SCHEMA_TABLE} (table_name, version) VALUES (?1, ?2) \
                 ON CONFLICT (table_name) DO UPDATE SET version = excluded.version \
                 WHERE {SCHEMA_TABLE}.version < excluded.version"
            ),
            params![table, SCHEMA_VERSION],
        )?;
        tx.commit()?;
        Ok(())
    }
}

enum SchemaError {
    Sql(rusqlite::Error),
    Config(String),
}

impl From<rusqlite::Error> for SchemaError {
    fn from(err: rusqlite::Error) -> Self {
        SchemaError::Sql(err)
    }
}

/// An operation to run on a connection thread.
type Job = Box<dyn FnOnce(&mut Connection, &Sql) + Send>;

/// One or more connection threads that take jobs from one bounded queue.
struct Pool {
    /// The queue's sending side; `None` once the pool is closed.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// How many of the pool's threads are still running.
    running: watch::Receiver<usize>,
    size: usize,
    /// The configured busy timeout: the longest a job waits for another connection's lock.
    busy_timeout: Duration,
}

/// The connection threads of a store have stopped (they only stop if a job panicked past
/// the guard or the thread could not be kept).
#[derive(Debug)]
struct WorkerStopped;

impl fmt::Display for WorkerStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the SQLite connection thread stopped before answering")
    }
}

impl std::error::Error for WorkerStopped {}

/// The store was closed with [`SqliteStore::close`].
#[derive(Debug)]
struct StoreClosed;

impl fmt::Display for StoreClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the SQLite store was closed")
    }
}

impl std::error::Error for StoreClosed {}

/// Counts a connection thread out when it ends, however it ends.
struct Running(Arc<watch::Sender<usize>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A wait as SQLite's busy timeout takes it: whole milliseconds, at most `i32::MAX`.
fn sqlite_wait(wait: Duration) -> Duration {
    wait.min(Duration::from_millis(i32::MAX as u64))
}

impl Pool {
    /// Starts `size` threads, each opening its connection with `open`, and waits until every
    /// one is ready (or one failed).
    async fn start<O>(
        role: &'static str,
        size: usize,
        capacity: usize,
        busy_timeout: Duration,
        sql: Arc<Sql>,
        open: O,
    ) -> Result<Self>
    where
        O: Fn() -> Result<Connection> + Send + Sync + 'static,
    {
        let (jobs, queue) = mpsc::channel::<Job>(capacity.clamp(1, MAX_QUEUE_CAPACITY));
        let queue = Arc::new(Mutex::new(queue));
        let (running_tx, running) = watch::channel(size);
        let running_tx = Arc::new(running_tx);
        let open = Arc::new(open);
        let mut ready = Vec::with_capacity(size);
        for n in 0..size {
            let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
            ready.push(ready_rx);
            let queue = Arc::clone(&queue);
            let sql = Arc::clone(&sql);
            let open = Arc::clone(&open);
            let counted = Running(Arc::clone(&running_tx));
            thread::Builder::new()
                .name(format!("session-stores-sqlite-{role}-{n}"))
                .spawn(move || {
                    let _counted = counted;
                    let mut conn = match open() {
                        Ok(conn) => {
                            let _ = ready_tx.send(Ok(()));
                            conn
                        }
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return;
                        }
                    };
                    serve(&queue, &mut conn, &sql);
                    // Closed before the thread counts itself out, so that `close` returns
                    // only once every connection is closed.
                    drop(conn);
                })
                .map_err(|e| Error::backend("open", None, e))?;
        }
        for ready in ready {
            ready
                .await
                .map_err(|_| Error::backend("open", None, WorkerStopped))??;
        }
        Ok(Pool {
            jobs: Mutex::new(Some(jobs)),
            running,
            size,
            busy_timeout,
        })
    }

    fn sender(&self) -> Option<mpsc::Sender<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many jobs wait in the queue.
    fn pending(&self) -> usize {
        self.sender()
            .map_or(0, |jobs| jobs.max_capacity() - jobs.capacity())
    }

    /// Accepts no more jobs; the threads stop once the queued ones (and those of callers
    /// already waiting for room) have run.
    fn close(&self) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Waits until every thread of the pool has stopped and closed its connection.
    async fn stopped(&self) {
        let mut running = self.running.clone();
        // An error means every thread (each holding a sender) is gone: stopped too.
        let _ = running.wait_for(|n| *n == 0).await;
    }

    /// Runs `f` on one of the pool's connections and returns its result. The job is skipped
    /// if its caller has gone away (its deadline passed or its future was dropped) before it
    /// starts, answered with a timeout if `deadline` has passed, and otherwise waits for
    /// another connection's lock at most `lock_wait` and never past `deadline`.
    async fn run<T, F>(
        &self,
        op: &'static str,
        id: Option<&SessionId>,
        deadline: Option<Instant>,
        lock_wait: Duration,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Sql) -> Result<T, OpError> + Send + 'static,
    {
        let jobs = self
            .sender()
            .ok_or_else(|| Error::unavailable(op, id, StoreClosed))?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn, sql| {
            if tx.is_closed() {
                // Nobody is waiting for the answer: the write must not happen behind the
                // back of a caller that was told it timed out.
                return;
            }
            let wait = match deadline {
                None => lock_wait,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => lock_wait.min(left),
                    _ => {
                        let _ = tx.send(Err(OpError::Deadline));
                        return;
                    }
                },
            };
            let result = conn
                .busy_timeout(sqlite_wait(wait))
                .map_err(OpError::from)
                .and_then(|()| f(conn, sql));
            let _ = tx.send(result);
        });
        // Waits for room in a full queue (bounded by the caller's deadline).
        jobs.send(job)
            .await
            .map_err(|_| Error::unavailable(op, id, WorkerStopped))?;
        drop(jobs);
        match rx.await {
            Ok(result) => result.map_err(|e| e.into_error(op, id)),
            // The job was dropped without answering: it panicked (and was rolled back).
            Err(_) => Err(Error::backend(op, id, WorkerStopped)),
        }
    }
}

/// A connection thread's loop: run jobs until the store is closed or dropped and its queue
/// is empty.
fn serve(queue: &Mutex<mpsc::Receiver<Job>>, conn: &mut Connection, sql: &Sql) {
    loop {
        let job = queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv();
        let Some(job) = job else { return };
        // A panicking job drops its transaction (rolling it back) and its reply channel (the
        // caller gets an error); the connection keeps serving.
        let _ = catch_unwind(AssertUnwindSafe(|| job(conn, sql)));
    }
}

/// Starts an immediate (write-locking) transaction.
fn immediate(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

fn live_exists(conn: &Connection, sql: &Sql, id: &str, now: i64) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached(&sql.live_version)?;
    Ok(stmt
        .query_row(params![id, now], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The session's owner as the `owner` column takes it: NULL for none.
fn owner_column(session: &Session) -> Option<String> {
    session.owner().map(|owner| owner.as_str().to_owned())
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
        // A session already expired on the caller's clock has nothing to store (and is not
        // encoded); any other is encoded here, so that an encoding error is the caller's.
        let data = if session.is_expired_at(now_millis()) {
            None
        } else {
            Some(encode(id, session)?)
        };
        // Used if the write starts a new incarnation; the statement decides.
        let fresh = sql_version(fresh_version());
        let owner = owner_column(session);
        self.write("set", Some(id), move |conn, sql| {
            let tx = immediate(conn)?;
            // Expired or not is decided now, holding the write lock: the wait for the queue
            // and the lock may have outlasted the session.
            let now = now_millis();
            let version = match data {
                Some(data) if expires_at > now => {
                    let mut stmt = tx.prepare_cached(&sql.upsert)?;
                    stmt.query_row(params![key, data, expires_at, now, fresh, owner], |row| {
                        Ok(integer_version(row.get_ref(0)?))
                    })??
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
        self.write("destroy", Some(id), move |conn, sql| {
            conn.prepare_cached(&sql.delete)?.execute(params![key])?;
            Ok(())
        })
        .await
    }

    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        let key = id.as_str().to_owned();
        let expires_at = to_millis(expires_at);
        self.write("touch", Some(id), move |conn, sql| {
            let tx = immediate(conn)?;
            // Read under the write lock, so a session that expired during the wait for it
            // is not revived.
            let now = now_millis();
            let changed = if expires_at <= now {
                // Touching into the past expires the session at once.
                tx.prepare_cached(&sql.delete_live)?
                    .execute(params![key, now])?
            } else {
                tx.prepare_cached(&sql.touch)?
                    .execute(params![key, expires_at, now])?
            };
            tx.commit()?;
            Ok(changed == 1)
        })
        .await
    }

    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let key = id.as_str().to_owned();
        let expires_at = session.expires_at_millis();
        let data = encode(id, session)?;
        let fresh = sql_version(fresh_version());
        let owner = owner_column(session);
        self.write("create", Some(id), move |conn, sql| {
            let tx = immediate(conn)?;
            let now = now_millis();
            let created = if expires_at <= now {
                // Created and expired at once: succeeds only if the id is absent, and leaves
                // it absent.
                if live_exists(&tx, sql, &key, now)? {
                    false
                } else {
                    tx.prepare_cached(&sql.delete_stale)?
                        .execute(params![key, now])?;
                    true
                }
            } else {
                tx.prepare_cached(&sql.insert_if_absent)?
                    .execute(params![key, data, expires_at, now, fresh, owner])?
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
        let data = encode(id, session)?;
        // `expected + 1`, or a fresh version for an absent session (0) or one at the largest
        // version: the statement stores it only if the live version is still `expected`.
        let next = next_version(expected_version);
        let next_sql = sql_version(next);
        let owner = owner_column(session);
        self.write("set_if_version", Some(id), move |conn, sql| {
            let tx = immediate(conn)?;
            let now = now_millis();
            let new_version = match (expires_at <= now, expected) {
                // An expired write to an absent id: nothing to store; drop any stale row.
                (true, 0) => {
                    if live_exists(&tx, sql, &key, now)? {
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
                    let inserted = tx
                        .prepare_cached(&sql.insert_if_absent)?
                        .execute(params![key, data, expires_at, now, next_sql, owner])?;
                    if inserted != 1 {
                        return Err(OpError::Conflict(expected_version));
                    }
                    next
                }
                (false, expected) => {
                    let updated = tx.prepare_cached(&sql.update_if_version)?.execute(params![
                        key, data, expires_at, expected, now, next_sql, owner
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
                listed.push(decode_listed(row, with_data)?);
            }
            Ok(listed)
        })
        .await
    }

    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
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

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let after = cursor.map(|c| c.keyset_id("SqliteStore")).transpose()?;
        let limit = limit.clamp(1, MAX_SCAN_LIMIT);
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

    fn capabilities(&self) -> Capabilities {
        Capabilities::new().with_owners(true).with_scan(true)
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
            Err(OpError::Done(Error::Decode {
                id: IdHint::from_raw(&raw),
                source: "the id column holds no valid session id".into(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A `get` whose inline connection finds the database locked (it never waits) goes to a
    /// read connection, which reads the session. The inline connection is swapped for one to
    /// a decoy database that another connection holds an exclusive lock on, so its read is
    /// refused with SQLITE_BUSY every time.
    #[test]
    fn a_locked_inline_read_falls_back_to_a_read_connection() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::builder()
                .inline_reads(1)
                .open(dir.path().join("real.db"))
                .await
                .unwrap();
            let id = SessionId::generate();
            let session = Session::new(Duration::from_secs(60));
            store.set(&id, &session).await.unwrap();

            let decoy = dir.path().join("decoy.db");
            let holder = Connection::open(&decoy).unwrap();
            holder
                .execute_batch(
                    "PRAGMA journal_mode = DELETE; \
                     CREATE TABLE sessions (id TEXT PRIMARY KEY, data TEXT, expires_at INTEGER, version INTEGER, owner TEXT); \
                     BEGIN EXCLUSIVE; INSERT INTO sessions (id, data, expires_at, version) VALUES ('x', '{}', 0, 1);",
                )
                .unwrap();
            let locked = Connection::open(&decoy).unwrap();
            locked.busy_timeout(Duration::ZERO).unwrap();
            *store.inline.as_ref().unwrap().conns[0].lock().unwrap() = Some(locked);

            match store.read_inline(|conn, sql| read_session(conn, sql, id.as_str())) {
                Some(Err(OpError::Sql(err))) => assert!(is_locked(&err), "{err}"),
                _ => panic!("the inline read should find the decoy locked"),
            }
            let got = store.get(&id).await.unwrap().expect("the session, from a reader");
            assert_eq!(got.expires_at_millis(), session.expires_at_millis());
            drop(holder);
        });
    }

    /// Inline reads serve `get` when a connection is free, and close with the store.
    #[test]
    fn inline_reads_serve_get_and_close_with_the_store() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::builder()
                .inline_reads(2)
                .open(dir.path().join("s.db"))
                .await
                .unwrap();
            let id = SessionId::generate();
            let version = store
                .set(&id, &Session::new(Duration::from_secs(60)))
                .await
                .unwrap();
            let inline = store.read_inline(|conn, sql| read_session(conn, sql, id.as_str()));
            assert_eq!(
                inline.unwrap().ok().flatten().map(|s| s.version()),
                Some(version)
            );
            store.close().await.unwrap();
            assert!(store.read_inline(|_, _| Ok(())).is_none());
            let err = store.get(&id).await.unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Unavailable, "{err}");
            // Off: no inline connection at all.
            let off = SqliteStore::builder()
                .inline_reads(0)
                .open(dir.path().join("off.db"))
                .await
                .unwrap();
            assert!(off.inline.is_none());
            let rollback = SqliteStore::builder()
                .wal(false)
                .open(dir.path().join("rollback.db"))
                .await
                .unwrap();
            assert!(rollback.inline.is_none(), "inline reads need WAL");
        });
    }

    async fn pragma(store: &SqliteStore, reader: bool, name: &'static str) -> String {
        let f = move |conn: &mut Connection, _: &Sql| -> Result<String, OpError> {
            let value: rusqlite::types::Value =
                conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))?;
            Ok(format!("{value:?}"))
        };
        if reader {
            store.read("test", None, f).await.unwrap()
        } else {
            store.write("test", None, f).await.unwrap()
        }
    }

    #[test]
    fn connections_get_the_configured_pragmas() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::builder()
                .busy_timeout(Duration::from_millis(1234))
                .synchronous(Synchronous::Full)
                .readers(2)
                .open(dir.path().join("db"))
                .await
                .unwrap();
            for reader in [false, true] {
                assert_eq!(
                    pragma(&store, reader, "busy_timeout").await,
                    "Integer(1234)"
                );
                // FULL is 2.
                assert_eq!(pragma(&store, reader, "synchronous").await, "Integer(2)");
                assert_eq!(
                    pragma(&store, reader, "journal_mode").await,
                    "Text(\"wal\")"
                );
            }
            assert_eq!(pragma(&store, true, "query_only").await, "Integer(1)");
            assert_eq!(pragma(&store, false, "query_only").await, "Integer(0)");

            let store = SqliteStore::open(dir.path().join("db2")).await.unwrap();
            // NORMAL is 1, the default.
            assert_eq!(pragma(&store, false, "synchronous").await, "Integer(1)");
            assert_eq!(pragma(&store, true, "synchronous").await, "Integer(1)");
            // The 5 s default, less what the job's 5 s operation deadline has already used.
            let busy = pragma(&store, false, "busy_timeout").await;
            let busy: i64 = busy
                .strip_prefix("Integer(")
                .and_then(|b| b.strip_suffix(')'))
                .and_then(|b| b.parse().ok())
                .unwrap_or_else(|| panic!("{busy}"));
            assert!((4000..=5000).contains(&busy), "{busy}");
            assert_eq!(
                pragma(&store, false, "journal_size_limit").await,
                format!("Integer({WAL_SIZE_LIMIT})")
            );
        });
    }

    fn plan(conn: &Connection, statement: &str, params: impl rusqlite::Params) -> String {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
            .unwrap()
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
            .join("; ")
    }

    /// A scan page walks the primary key's index from the cursor on: no expiry index, no
    /// sort, even when the statistics say that almost every row is expired.
    #[test]
    fn scans_walk_the_primary_key_without_sorting() {
        rt().block_on(async {
            let store = SqliteStore::open_in_memory().await.unwrap();
            let plans = store
                .write("test", None, |conn, sql| {
                    let tx = conn.transaction()?;
                    for i in 0..2000 {
                        tx.execute(
                            "INSERT INTO sessions (id, data, expires_at, version) \
                             VALUES (?1, '{}', ?2, 1)",
                            params![format!("s{i:05}"), if i % 100 == 0 { i64::MAX } else { 1 }],
                        )?;
                    }
                    tx.commit()?;
                    conn.execute_batch("ANALYZE")?;
                    Ok([
                        plan(conn, &sql.scan_first, params![now_millis(), 10]),
                        plan(conn, &sql.scan_after, params!["s00500", now_millis(), 10]),
                    ])
                })
                .await
                .unwrap();
            for plan in plans {
                assert!(plan.contains("sqlite_autoindex_sessions_1"), "{plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{plan}");
                assert!(!plan.contains("expires_at"), "{plan}");
            }
            let page = store.scan(None, 5).await.unwrap();
            let ids: Vec<&str> = page.sessions.iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(ids, ["s00000", "s00100", "s00200", "s00300", "s00400"]);
            let page = store.scan(page.next.as_ref(), 50).await.unwrap();
            assert_eq!(page.sessions.len(), 15);
            assert!(page.next.is_none());
        });
    }

    #[test]
    fn in_memory_store_has_one_connection() {
        rt().block_on(async {
            let store = SqliteStore::builder()
                .readers(8)
                .open_in_memory()
                .await
                .unwrap();
            assert!(store.readers.is_none());
            assert!(store.path().is_none());
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::builder()
                .readers(0)
                .open(dir.path().join("missing").join("x.db"))
                .await;
            // The directory does not exist, so opening fails with a typed error.
            assert!(matches!(store, Err(Error::Config { .. })), "{store:?}");
        });
    }

    #[test]
    fn a_panicking_job_leaves_the_connection_serving() {
        rt().block_on(async {
            let store = SqliteStore::builder()
                .readers(0)
                .open_in_memory()
                .await
                .unwrap();
            let err = store
                .write(
                    "test",
                    None,
                    |_: &mut Connection, _: &Sql| -> Result<(), OpError> { panic!("boom") },
                )
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Backend { .. }), "{err:?}");
            let id = SessionId::generate();
            let session = Session::new(Duration::from_secs(60));
            let version = store.set(&id, &session).await.unwrap();
            assert_eq!(store.get(&id).await.unwrap().unwrap().version(), version);
        });
    }

    /// The deadline holds in a tokio runtime built without timers (where
    /// `tokio::time::timeout` on its own would panic): a `set` queued behind a job that keeps
    /// the write connection busy for 2 s fails with `Timeout` at its 100 ms deadline, and the
    /// busy job's successor is skipped rather than run late.
    #[test]
    fn the_deadline_holds_in_a_runtime_without_timers() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = SqliteStore::builder()
                .readers(0)
                .operation_timeout(Duration::from_millis(100))
                .open_in_memory()
                .await
                .unwrap();
            let (started_tx, started_rx) = oneshot::channel();
            let mut slow = std::pin::pin!(store.write(
                "test",
                None,
                move |_: &mut Connection, _: &Sql| -> Result<(), OpError> {
                    let _ = started_tx.send(());
                    std::thread::sleep(Duration::from_secs(2));
                    Ok(())
                },
            ));
            // Polled once, the slow job is queued; the writer starts it.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(slow.as_mut().poll(&mut cx).is_pending());
            started_rx.await.unwrap();

            let id = SessionId::generate();
            let started = Instant::now();
            let err = store
                .set(&id, &Session::new(Duration::from_secs(60)))
                .await
                .unwrap_err();
            let waited = started.elapsed();
            assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
            assert!(waited < Duration::from_secs(1), "waited {waited:?}");
            // Queued behind the slow job and the abandoned set, this job (without a
            // deadline) finds that the set was skipped, not run late.
            let key = id.as_str().to_owned();
            let rows = store
                .writer
                .run(
                    "test",
                    None,
                    None,
                    DEFAULT_BUSY_TIMEOUT,
                    move |conn: &mut Connection, _: &Sql| -> Result<i64, OpError> {
                        Ok(conn.query_row(
                            "SELECT COUNT(*) FROM sessions WHERE id = ?1",
                            [key],
                            |row| row.get(0),
                        )?)
                    },
                )
                .await
                .unwrap();
            assert_eq!(rows, 0);
        });
    }

    #[test]
    fn table_names_are_validated() {
        for good in ["sessions", "_x", "A1_b2", &"t".repeat(63)] {
            assert!(validate_table(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "sessions;drop",
            "é",
            "sqlite_master",
            "SQLITE_x",
            SCHEMA_TABLE,
            &"t".repeat(64),
        ] {
            assert!(
                matches!(validate_table(bad), Err(Error::Config { .. })),
                "{bad:?}"
            );
        }
    }
}
