//! The builder of a [`SqliteStore`], its options and defaults, and how each connection is
//! opened and configured.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::deadline::DEFAULT_OPERATION_TIMEOUT;
use crate::error::{Error, Result};

use super::SqliteStore;
use super::error::sql_error;
use super::sql::{Sql, validate_table};
use super::worker::{Inline, InlineWriter, MAX_QUEUE_CAPACITY, Pool, WorkerStopped, sqlite_wait};

#[cfg(doc)]
use super::SCHEMA_TABLE;

/// The default table name: `sessions`.
pub const DEFAULT_TABLE: &str = "sessions";

/// The default busy timeout: 5 seconds.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The default number of read connections of a file-backed store: 4.
pub const DEFAULT_READERS: usize = 4;

/// The default number of rows one batch of `delete_expired` or `clear` deletes: 1000.
pub const DEFAULT_DELETE_BATCH_SIZE: usize = 1000;

/// The default number of operations that may wait in each connection queue (the write
/// connection's, the read connections'): 1024.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// The write connection's `PRAGMA journal_size_limit`: 4 MiB. Whenever SQLite restarts the
/// write-ahead log from its beginning, it truncates a larger file to this size.
pub const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

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

/// Builds a [`SqliteStore`]. See the [module docs](super) for the options.
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    pub(super) table: String,
    busy_timeout: Duration,
    synchronous: Synchronous,
    wal: bool,
    readers: usize,
    inline_reads: usize,
    inline_writes: bool,
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
            inline_writes: true,
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

    /// Whether a write of one session (`set`, `set_if_version`, `create`, `touch`,
    /// `destroy`) may run on the calling task's own thread, on a second write connection,
    /// when that connection is free and the database's write lock is free at that instant,
    /// instead of being handed to the write connection's thread (a thread hand-off costs
    /// more than a small write itself). The database allows one writer at a time either
    /// way: this changes where a write runs, not what it does.
    ///
    /// An inline write never waits: not for its connection (a busy one is skipped), not for
    /// a queue, and not for a lock (busy timeout zero: a write that finds the database
    /// locked goes to the write connection's queue, having done nothing). Nor for the
    /// disk: only with WAL and [`Synchronous::Normal`] or [`Synchronous::Off`], where a
    /// commit does not sync; the inline connection never checkpoints either (it asks the
    /// write connection's thread to, every 256 commits). What it takes is the time SQLite
    /// needs to change the session's pages in its cache and append them to the log. `clear`,
    /// `delete_expired` and owner-wide operations always run on the write connection's
    /// thread. Ignored (off) for in-memory databases, without WAL, and with
    /// [`Synchronous::Full`] or [`Synchronous::Extra`]. Default: `true`.
    pub fn inline_writes(mut self, on: bool) -> Self {
        self.inline_writes = on;
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
                let conns = on_a_thread(open_all).await?;
                Some(Inline {
                    conns: conns.into_boxed_slice(),
                    sql: Arc::clone(&sql),
                })
            }
            _ => None,
        };
        let syncs_on_commit = matches!(self.synchronous, Synchronous::Full | Synchronous::Extra);
        let inline_writer = match &location {
            Location::File(_) if self.wal && self.inline_writes && !syncs_on_commit => {
                let config = Arc::clone(&config);
                let open = move || -> Result<Connection> {
                    let conn = config.connect(false)?;
                    let configure = || -> rusqlite::Result<()> {
                        // Never wait for a lock or a checkpoint on the caller's thread.
                        conn.busy_timeout(Duration::ZERO)?;
                        conn.pragma_update_and_check(None, "wal_autocheckpoint", 0, |_| Ok(()))?;
                        conn.pragma_update_and_check(
                            None,
                            "journal_size_limit",
                            WAL_SIZE_LIMIT,
                            |_| Ok(()),
                        )
                    };
                    configure().map_err(|e| sql_error("open", None, e))?;
                    Ok(conn)
                };
                let conn = on_a_thread(open).await?;
                Some(InlineWriter::new(conn, Arc::clone(&sql)))
            }
            _ => None,
        };
        Ok(SqliteStore {
            writer,
            readers,
            inline,
            inline_writer,
            table: self.table,
            location,
            delete_batch_size: self.delete_batch_size,
            operation_timeout: self.operation_timeout,
        })
    }
}

/// Runs `open` on a thread of its own, like every connection's opening (this may run outside
/// any tokio runtime), and waits for its result.
async fn on_a_thread<T: Send + 'static>(
    open: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (opened_tx, opened) = oneshot::channel();
    thread::Builder::new()
        .name("session-stores-sqlite-open".into())
        .spawn(move || {
            let _ = opened_tx.send(open());
        })
        .map_err(|err| Error::backend("open", None, err))?;
    opened
        .await
        .map_err(|_| Error::backend("open", None, WorkerStopped))?
}

#[derive(Debug, Clone)]
pub(super) enum Location {
    File(PathBuf),
    Memory,
}

/// The default number of inline read connections: the number of CPUs, 1 to 8.
fn default_inline_reads() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8))
}

/// How each connection is opened and configured.
#[derive(Debug)]
pub(super) struct ConnConfig {
    pub(super) location: Location,
    pub(super) table: String,
    pub(super) busy_timeout: Duration,
    synchronous: Synchronous,
    pub(super) wal: bool,
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
}
