use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::sql::validate_table;
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

/// The statements of one session that rotation touched look rows up by the primary key
/// only: `get`'s self-join to the row a rotated id moved to, `destroy`'s subquery, the
/// rotation's copy.
#[test]
fn rotation_statements_look_up_by_the_primary_key() {
    rt().block_on(async {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let plans = store
            .write("test", None, |conn, sql| {
                Ok([
                    plan(conn, &sql.get, params!["a", now_millis()]),
                    plan(conn, &sql.destroy, params!["a", now_millis()]),
                    plan(conn, &sql.rotate_copy, params!["a", "b", 1]),
                    plan(conn, &sql.live, params!["a", now_millis()]),
                ])
            })
            .await
            .unwrap();
        for plan in plans {
            assert!(plan.contains("sqlite_autoindex_sessions_1"), "{plan}");
            assert!(!plan.contains("SCAN"), "{plan}");
        }
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

/// Inserts a row into a table `t` of its own by [`SqliteStore::write_one`]; the thread the
/// write ran on.
async fn insert_row(store: &SqliteStore) -> std::thread::ThreadId {
    store
        .write_one("test", None, |conn, _| {
            conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)", [])?;
            conn.execute("INSERT INTO t VALUES (1)", [])?;
            Ok(std::thread::current().id())
        })
        .await
        .unwrap()
}

/// A write of one session runs on the caller's thread when the inline write connection and
/// the database's write lock are free; on the write connection's thread when the inline
/// connection is in use or the database is locked by another connection (the inline attempt
/// then did nothing: the row is written once); never inline after `close`.
#[test]
// The inline connection's lock is held across the write on purpose: the write must find it
// in use (the write connection's thread never takes it).
#[allow(clippy::await_holding_lock)]
fn inline_writes_run_here_unless_busy_or_locked() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let store = SqliteStore::builder().open(&path).await.unwrap();
        let here = std::thread::current().id();
        assert_eq!(
            insert_row(&store).await,
            here,
            "a free inline writer runs here"
        );

        // The inline connection in use: the write connection's thread.
        let held = store.inline_writer.as_ref().unwrap().conn.lock().unwrap();
        assert_ne!(insert_row(&store).await, here);
        drop(held);

        // The database locked by another connection for 200 ms: the inline attempt fails at
        // once and the write connection waits for the lock.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            other.execute_batch("COMMIT").unwrap();
        });
        let started = Instant::now();
        assert_ne!(insert_row(&store).await, here);
        assert!(started.elapsed() >= Duration::from_millis(150));
        release.join().unwrap();
        let rows: i64 = store
            .read("test", None, |conn, _| {
                Ok(conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(rows, 3, "each write ran once");

        store.close().await.unwrap();
        let err = store
            .set(
                &SessionId::generate(),
                &Session::new(Duration::from_secs(60)),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable, "{err}");
    });
}

/// Inline writes are off where a commit would wait for the disk (synchronous FULL or
/// EXTRA), without WAL, in memory, and when turned off.
#[test]
fn inline_writes_only_where_a_commit_never_waits() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str, builder: SqliteStoreBuilder| {
            let path = dir.path().join(name);
            async move { builder.open(path).await.unwrap() }
        };
        let on = |store: &SqliteStore| store.inline_writer.is_some();
        assert!(on(&open("a.db", SqliteStore::builder()).await));
        let off = SqliteStore::builder().synchronous(Synchronous::Off);
        assert!(on(&open("b.db", off).await));
        for (name, builder) in [
            (
                "c.db",
                SqliteStore::builder().synchronous(Synchronous::Full),
            ),
            (
                "d.db",
                SqliteStore::builder().synchronous(Synchronous::Extra),
            ),
            ("e.db", SqliteStore::builder().wal(false)),
            ("f.db", SqliteStore::builder().inline_writes(false)),
        ] {
            assert!(!on(&open(name, builder).await), "{name}");
        }
        let memory = SqliteStore::builder().open_in_memory().await.unwrap();
        assert!(!on(&memory));
    });
}

/// The inline write connection never checkpoints, so it asks the write connection to: after
/// thousands of writes, all inline, the log file stays small (without those checkpoints it
/// grows by every page every write touches: tens of MiB here).
#[test]
fn inline_writes_keep_the_log_small() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let store = SqliteStore::builder().open(&path).await.unwrap();
        let mut session = Session::new(Duration::from_secs(600));
        session.insert("payload", "x".repeat(2000)).unwrap();
        let ids: Vec<SessionId> = (0..500).map(|_| SessionId::generate()).collect();
        let mut largest = 0;
        for round in 0..10 {
            for id in &ids {
                session.insert("round", round).unwrap();
                store.set(id, &session).await.unwrap();
            }
            // The checkpoints it asked for run on the write connection's thread.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let wal = std::fs::metadata(dir.path().join("log.db-wal")).map_or(0, |m| m.len());
            largest = largest.max(wal);
        }
        assert!(
            largest < 3 * WAL_SIZE_LIMIT as u64,
            "the log grew to {largest} bytes"
        );
    });
}

/// An inline write that fails for another reason than a lock (here: no such table) fails
/// once: it is not run again on the write connection.
#[test]
fn an_inline_write_that_fails_runs_once() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::builder()
            .open(dir.path().join("f.db"))
            .await
            .unwrap();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let err = store
            .write_one("test", None, move |conn, _| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                conn.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Backend, "{err}");
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    });
}

/// Writes stay inline between checkpoints: 100 of them while the write connection's thread
/// is busy all run on the caller's thread (no checkpoint is asked for before the 256th);
/// and after more than two checkpoints' worth, once they have run, writes are inline again.
#[test]
fn inline_writes_go_on_inline_between_checkpoints() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::builder()
                .open(dir.path().join("c.db"))
                .await
                .unwrap(),
        );
        let here = std::thread::current().id();
        let busy = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .write("busy", None, |_, _| {
                        std::thread::sleep(Duration::from_millis(300));
                        Ok(())
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        for n in 0..100 {
            assert_eq!(
                insert_row(&store).await,
                here,
                "write {n} left the caller's thread"
            );
        }
        busy.await.unwrap().unwrap();
        for _ in 0..600 {
            insert_row(&store).await;
        }
        // Once the checkpoints asked for have run (at once here; 5 s under any load).
        let started = Instant::now();
        while insert_row(&store).await != here {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "writes stayed off the caller's thread"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
