//! The store's connection threads: a [`Pool`] of threads serving jobs from a bounded queue
//! (the write connection's, the read connections'), the [`Inline`] connections that serve
//! `get` on the caller's thread, the [`InlineWriter`] that serves writes of one session
//! there, and how an operation is handed to them within its deadline.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};

use crate::deadline::within;
use crate::error::{Error, Result};
use crate::session::SessionId;

use super::SqliteStore;
use super::error::{OpError, is_locked};
use super::sql::Sql;

#[cfg(doc)]
use super::SqliteStoreBuilder;

impl SqliteStore {
    /// Runs `f` on the write connection.
    pub(super) async fn write<T, F>(
        &self,
        op: &'static str,
        id: Option<&SessionId>,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Sql) -> Result<T, OpError> + Send + 'static,
    {
        self.on(&self.writer, op, id, self.writer.busy_timeout, f)
            .await
    }

    /// Runs `f` on a read connection (the write connection if there are none).
    pub(super) async fn read<T, F>(
        &self,
        op: &'static str,
        id: Option<&SessionId>,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Sql) -> Result<T, OpError> + Send + 'static,
    {
        let pool = self.readers.as_ref().unwrap_or(&self.writer);
        self.on(pool, op, id, pool.busy_timeout, f).await
    }

    /// Runs `f` right here on a free inline connection: `None` when there is none (or inline
    /// reads are off, or the store is closed).
    pub(super) fn read_inline<T>(
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
    pub(super) async fn on<T, F>(
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
}

impl SqliteStore {
    /// Runs a write of one session: on the caller's thread when the
    /// [inline write connection](SqliteStoreBuilder::inline_writes) is free and the
    /// database's write lock is free at that instant (it never waits for either), otherwise
    /// on the write connection's thread like [`write`](Self::write). `f` may be called
    /// twice: once inline, where it fails at its first statement if the database is locked
    /// (and so has done nothing), then on the write connection.
    pub(super) async fn write_one<T, F>(
        &self,
        op: &'static str,
        id: Option<&SessionId>,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut Connection, &Sql) -> Result<T, OpError> + Send + Sync + 'static,
    {
        if let Some(inline) = &self.inline_writer
            && !inline
                .checkpointing
                .load(std::sync::atomic::Ordering::Acquire)
        {
            match inline.try_run(&f) {
                // Locked by another connection (this store's write connection, another
                // process): the write connection waits for it, within the deadline.
                Some(Err(OpError::Sql(err))) if is_locked(&err) => {}
                Some(result) => {
                    if result.is_ok() {
                        inline.committed(&self.writer);
                    }
                    return result.map_err(|e| e.into_error(op, id));
                }
                None => {}
            }
        }
        self.write(op, id, f).await
    }
}

/// How many writes the inline write connection commits between two checkpoints it asks the
/// write connection for. Its own automatic checkpoints are off: a checkpoint may wait for
/// the disk, which must not happen on the caller's thread.
pub(super) const INLINE_COMMITS_PER_CHECKPOINT: u64 = 256;

// Why writes stop going inline while the checkpoint runs: SQLite starts the log over from
// its beginning only when a write begins after a checkpoint has copied the whole log back.
// A checkpoint on another thread while inline writes go on always finds new frames behind
// it, so the log would never start over and would grow without bound (47 MB after 5,000
// writes of 2 KB in `inline_writes_keep_the_log_small`). Queued behind the checkpoint, the
// next write finds the log copied back and starts it over, as an automatic checkpoint in
// the committing connection would.

/// The connection of [`SqliteStoreBuilder::inline_writes`], taken with `try_lock` only.
pub(super) struct InlineWriter {
    /// `None` once the store is closed.
    pub(super) conn: Mutex<Option<Connection>>,
    pub(super) sql: Arc<Sql>,
    /// Commits made inline, for the checkpoints.
    commits: std::sync::atomic::AtomicU64,
    /// Set while a checkpoint this connection asked for is queued or running: writes then go
    /// to the write connection, behind it.
    checkpointing: Arc<std::sync::atomic::AtomicBool>,
}

impl InlineWriter {
    pub(super) fn new(conn: Connection, sql: Arc<Sql>) -> Self {
        InlineWriter {
            conn: Mutex::new(Some(conn)),
            sql,
            commits: std::sync::atomic::AtomicU64::new(0),
            checkpointing: Arc::default(),
        }
    }

    /// Runs `f` on the inline write connection if it is free: `None` if it is in use or
    /// closed.
    fn try_run<T>(
        &self,
        f: &impl Fn(&mut Connection, &Sql) -> Result<T, OpError>,
    ) -> Option<Result<T, OpError>> {
        let mut guard = match self.conn.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let conn = guard.as_mut()?;
        Some(f(conn, &self.sql))
    }

    /// Counts a commit; every [`INLINE_COMMITS_PER_CHECKPOINT`] commits, queues a passive
    /// checkpoint on the write connection and sends writes there until it has run (unless
    /// the queue is full: then its own commits checkpoint, or the next request does).
    fn committed(&self, writer: &Pool) {
        use std::sync::atomic::Ordering;
        let commits = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if commits.is_multiple_of(INLINE_COMMITS_PER_CHECKPOINT)
            && !self.checkpointing.swap(true, Ordering::AcqRel)
        {
            let done = Arc::clone(&self.checkpointing);
            let queued = writer.try_detached(Box::new(move |conn, _| {
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                done.store(false, Ordering::Release);
            }));
            if !queued {
                self.checkpointing.store(false, Ordering::Release);
            }
        }
    }

    /// Closes the connection (waiting for a write in progress on it, which never waits on
    /// anything itself).
    pub(super) fn close(&self) {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(conn);
    }
}

/// The connections of [`SqliteStoreBuilder::inline_reads`], each taken with `try_lock` only.
pub(super) struct Inline {
    /// `None` once the store is closed.
    pub(super) conns: Box<[Mutex<Option<Connection>>]>,
    pub(super) sql: Arc<Sql>,
}

impl Inline {
    /// Closes every connection (waiting for a read in progress on it, which never waits on
    /// anything itself).
    pub(super) fn close(&self) {
        for slot in self.conns.iter() {
            let conn = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            drop(conn);
        }
    }
}

/// An operation to run on a connection thread.
type Job = Box<dyn FnOnce(&mut Connection, &Sql) + Send>;

/// The largest queue capacity the builder accepts; larger values are taken as this.
pub(super) const MAX_QUEUE_CAPACITY: usize = 1 << 20;

/// One or more connection threads that take jobs from one bounded queue.
pub(super) struct Pool {
    /// The queue's sending side; `None` once the pool is closed.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// How many of the pool's threads are still running.
    running: watch::Receiver<usize>,
    pub(super) size: usize,
    /// The configured busy timeout: the longest a job waits for another connection's lock.
    pub(super) busy_timeout: Duration,
}

/// The connection threads of a store have stopped (they only stop if a job panicked past
/// the guard or the thread could not be kept).
#[derive(Debug)]
pub(super) struct WorkerStopped;

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
pub(super) fn sqlite_wait(wait: Duration) -> Duration {
    wait.min(Duration::from_millis(i32::MAX as u64))
}

impl Pool {
    /// Starts `size` threads, each opening its connection with `open`, and waits until every
    /// one is ready (or one failed).
    pub(super) async fn start<O>(
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

    /// Queues `job` if there is room at once, without waiting for its answer; whether it
    /// was queued.
    fn try_detached(&self, job: Job) -> bool {
        self.sender().is_some_and(|jobs| jobs.try_send(job).is_ok())
    }

    /// How many jobs wait in the queue.
    pub(super) fn pending(&self) -> usize {
        self.sender()
            .map_or(0, |jobs| jobs.max_capacity() - jobs.capacity())
    }

    /// Accepts no more jobs; the threads stop once the queued ones (and those of callers
    /// already waiting for room) have run.
    pub(super) fn close(&self) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Waits until every thread of the pool has stopped and closed its connection.
    pub(super) async fn stopped(&self) {
        let mut running = self.running.clone();
        // An error means every thread (each holding a sender) is gone: stopped too.
        let _ = running.wait_for(|n| *n == 0).await;
    }

    /// Runs `f` on one of the pool's connections and returns its result. The job is skipped
    /// if its caller has gone away (its deadline passed or its future was dropped) before it
    /// starts, answered with a timeout if `deadline` has passed, and otherwise waits for
    /// another connection's lock at most `lock_wait` and never past `deadline`.
    pub(super) async fn run<T, F>(
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
