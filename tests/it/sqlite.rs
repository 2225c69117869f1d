//! Tests specific to `SqliteStore`: persistence across reopening, several connections and
//! processes on one file, corrupt rows, batched `delete_expired` and `clear`, lock timeouts,
//! reads during a waiting write, the schema, and contention and failure (operation deadlines,
//! the bounded queue, expiry decided under the lock, the WAL's size, `close`).
#![cfg(feature = "sqlite")]

use std::collections::BTreeMap;
use std::error::Error as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use serde_json::json;
use session_stores::stores::sqlite::{SCHEMA_TABLE, SCHEMA_VERSION};
use session_stores::{
    Error, ErrorKind, FRESH_VERSION_SPAN, MAX_VERSION, Owner, Rotation, ScanCursor, Session,
    SessionId, SessionStore, SqliteStore, from_millis, next_version, now_millis,
};

const HOUR: Duration = Duration::from_secs(3600);

/// The env var that turns [`two_processes_child`] from a no-op into the second process of
/// [`two_processes_on_one_file_lose_nothing`].
const CHILD_DB: &str = "SESSION_STORES_SQLITE_CHILD_DB";

fn session(data: serde_json::Value) -> Session {
    let mut s = Session::new(HOUR);
    for (k, v) in data.as_object().expect("an object").clone() {
        s.insert(&k, v).unwrap();
    }
    s
}

fn raw(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let id = SessionId::generate();
    let other = SessionId::generate();
    let written = session(json!({"user": "ada", "roles": ["admin"], "n": 3}));
    let v0 = {
        let store = SqliteStore::open(&path).await.unwrap();
        let v0 = store.set(&id, &written).await.unwrap();
        assert_eq!(store.set(&id, &written).await.unwrap(), v0 + 1);
        assert!(store.create(&other, &written).await.unwrap());
        v0
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let got = store.get(&id).await.unwrap().expect("kept across reopen");
    assert_eq!(got.data(), written.data());
    assert_eq!(got.expires_at_millis(), written.expires_at_millis());
    assert_eq!(got.version(), v0 + 1);
    assert_eq!(store.len().await.unwrap(), 2);
    assert_eq!(store.set(&id, &written).await.unwrap(), v0 + 2);
    assert!(!store.create(&other, &written).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_hold_json_text_and_integer_epoch_millis() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let id = SessionId::generate();
    let s = session(json!({"user": "ada", "emoji": "ü🦀"}));
    let stored = store.set(&id, &s).await.unwrap();
    let (data_type, data, expiry_type, expires_at, version): (String, String, String, i64, i64) =
        raw(&path)
            .query_row(
                "SELECT typeof(data), data, typeof(expires_at), expires_at, version \
                 FROM sessions WHERE id = ?1",
                [id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
    assert_eq!(data_type, "text");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&data).unwrap(),
        json!({"user": "ada", "emoji": "ü🦀"})
    );
    assert_eq!(expiry_type, "integer");
    assert_eq!(expires_at, s.expires_at_millis());
    assert_eq!(u64::try_from(version), Ok(stored));
}

/// The shared work of the two-writer tests: `increments` compare-and-set increments of the
/// counter, and a `create` race on every id of `shared`, marking the winner with `owner`.
/// Returns how many creates this caller won. Any error but a conflict fails the test.
async fn hammer(
    store: &SqliteStore,
    counter: &SessionId,
    increments: u64,
    shared: &[SessionId],
    owner: &str,
) -> u64 {
    let mut wins = 0;
    let rounds = (increments as usize).max(shared.len());
    for i in 0..rounds {
        if (i as u64) < increments {
            loop {
                let current = store
                    .get(counter)
                    .await
                    .unwrap_or_else(|e| panic!("get failed: {e} ({e:?})"))
                    .expect("the counter exists");
                let n: u64 = current.get("n").unwrap().unwrap();
                let mut next = current.clone();
                next.insert("n", n + 1).unwrap();
                match store
                    .set_if_version(counter, &next, current.version())
                    .await
                {
                    Ok(v) => {
                        assert_eq!(v, current.version() + 1);
                        break;
                    }
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => panic!("set_if_version failed: {e} ({e:?})"),
                }
            }
        }
        if let Some(id) = shared.get(i) {
            let mine = session(json!({ "owner": owner }));
            match store.create(id, &mine).await {
                Ok(true) => wins += 1,
                Ok(false) => {}
                Err(e) => panic!("create failed: {e} ({e:?})"),
            }
            // A plain set from every writer too, on an id of its own.
            let own = SessionId::new(format!("{owner}-{i}")).unwrap();
            store
                .set(&own, &mine)
                .await
                .unwrap_or_else(|e| panic!("set failed: {e} ({e:?})"));
        }
    }
    wins
}

fn shared_ids(n: usize) -> Vec<SessionId> {
    (0..n)
        .map(|i| SessionId::new(format!("shared-{i}")).unwrap())
        .collect()
}

/// How many of the `shared` ids each side owns, by the owner in their data. (Versions do
/// not tell: every incarnation starts at a fresh one, so a created session's version says
/// nothing about whether a losing `create` overwrote it; the owner counts, compared with
/// the wins, do.)
async fn owners(store: &SqliteStore, shared: &[SessionId]) -> (u64, u64) {
    let (mut a, mut b) = (0, 0);
    for id in shared {
        let s = store
            .get(id)
            .await
            .unwrap()
            .expect("every shared id created");
        match s.get::<String>("owner").unwrap().as_deref() {
            Some("parent") | Some("a") => a += 1,
            Some("child") | Some("b") => b += 1,
            other => panic!("unexpected owner {other:?}"),
        }
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_lose_nothing_and_never_report_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let a = std::sync::Arc::new(SqliteStore::open(&path).await.unwrap());
    let b = std::sync::Arc::new(SqliteStore::open(&path).await.unwrap());
    let counter = SessionId::new("counter").unwrap();
    assert!(a.create(&counter, &session(json!({"n": 0}))).await.unwrap());
    let v0 = a.get(&counter).await.unwrap().unwrap().version();
    let shared = shared_ids(60);
    const TASKS: u64 = 3;
    const INCREMENTS: u64 = 40;
    let mut handles = Vec::new();
    for (store, owner) in [(&a, "a"), (&b, "b")] {
        for _ in 0..TASKS {
            let store = std::sync::Arc::clone(store);
            let counter = counter.clone();
            let shared = shared.clone();
            handles.push(tokio::spawn(async move {
                (
                    owner,
                    hammer(&store, &counter, INCREMENTS, &shared, owner).await,
                )
            }));
        }
    }
    let (mut wins_a, mut wins_b) = (0, 0);
    for handle in handles {
        match handle.await.unwrap() {
            ("a", wins) => wins_a += wins,
            (_, wins) => wins_b += wins,
        }
    }
    assert_eq!(
        wins_a + wins_b,
        shared.len() as u64,
        "exactly one create per id won"
    );
    assert_eq!(
        owners(&a, &shared).await,
        (wins_a, wins_b),
        "a created session is never overwritten"
    );
    let total = 2 * TASKS * INCREMENTS;
    for store in [&a, &b] {
        let c = store.get(&counter).await.unwrap().unwrap();
        assert_eq!(c.get::<u64>("n").unwrap(), Some(total), "no increment lost");
        assert_eq!(c.version(), v0 + total);
    }
}

/// Runs [`hammer`] as the second process of [`two_processes_on_one_file_lose_nothing`] when
/// `SESSION_STORES_SQLITE_CHILD_DB` names the database; does nothing otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_child() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let counter = SessionId::new("counter").unwrap();
    // Meet the parent, so that the two processes really write at the same time.
    let child_ready = SessionId::new("child-ready").unwrap();
    let parent_ready = SessionId::new("parent-ready").unwrap();
    store.set(&child_ready, &session(json!({}))).await.unwrap();
    wait_for(&store, &parent_ready).await;
    let wins = hammer(
        &store,
        &counter,
        PROCESS_INCREMENTS,
        &shared_ids(80),
        "child",
    )
    .await;
    println!("\nCHILD_WINS={wins}");
}

const PROCESS_INCREMENTS: u64 = 150;

async fn wait_for(store: &SqliteStore, id: &SessionId) {
    for _ in 0..6000 {
        if store.get(id).await.unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the other process never got ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_file_lose_nothing() {
    let _load = crate::support::loads_the_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let counter = SessionId::new("counter").unwrap();
    assert!(
        store
            .create(&counter, &session(json!({"n": 0})))
            .await
            .unwrap()
    );
    let v0 = store.get(&counter).await.unwrap().unwrap().version();
    let shared = shared_ids(80);

    let child = tokio::process::Command::new(crate::support::this_test_binary())
        .args([
            "--exact",
            "sqlite::two_processes_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &path)
        .kill_on_drop(true)
        .output();
    let parent = async {
        wait_for(&store, &SessionId::new("child-ready").unwrap()).await;
        store
            .set(
                &SessionId::new("parent-ready").unwrap(),
                &session(json!({})),
            )
            .await
            .unwrap();
        hammer(&store, &counter, PROCESS_INCREMENTS, &shared, "parent").await
    };
    let (child, parent_wins) = tokio::join!(child, parent);
    let child = child.unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let child_wins: u64 = stdout
        .lines()
        .find_map(|l| l.split("CHILD_WINS=").nth(1))
        .unwrap_or_else(|| panic!("the child ran its work: {stdout}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(parent_wins + child_wins, shared.len() as u64);
    assert_eq!(owners(&store, &shared).await, (parent_wins, child_wins));
    let c = store.get(&counter).await.unwrap().unwrap();
    assert_eq!(
        c.get::<u64>("n").unwrap(),
        Some(2 * PROCESS_INCREMENTS),
        "no increment lost"
    );
    assert_eq!(c.version(), v0 + 2 * PROCESS_INCREMENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_give_a_decode_error_for_that_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let good = SessionId::generate();
    store
        .set(&good, &session(json!({"ok": true})))
        .await
        .unwrap();
    let db = raw(&path);
    let corruptions = [
        ("data = 'not json{'", "not JSON"),
        ("data = '[1, 2]'", "JSON but not an object"),
        ("data = X'7B7D'", "a blob"),
        ("data = CAST(X'FF' AS TEXT)", "invalid UTF-8"),
        ("expires_at = 'soon'", "text expiry"),
        ("version = -3", "negative version"),
        ("version = 1.5", "real version"),
    ];
    for (update, what) in corruptions {
        let id = SessionId::new(format!("corrupt-row-{}", what.replace(' ', "_"))).unwrap();
        store.set(&id, &session(json!({"x": 1}))).await.unwrap();
        let changed = db
            .execute(
                &format!("UPDATE sessions SET {update} WHERE id = ?1"),
                [id.as_str()],
            )
            .unwrap();
        assert_eq!(changed, 1);
        let err = store.get(&id).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode, "{what}: {err:?}");
        assert_eq!(err.session(), Some(&id.hint()), "{what}");
        assert!(!err.to_string().contains(id.as_str()), "{what}: {err}");
        assert!(err.source().is_some(), "{what}: the cause is kept");
        // Other sessions are unaffected, and the row still counts as present.
        assert!(store.get(&good).await.unwrap().is_some());
        // A create does not overwrite it; a set replaces it and the session reads again.
        assert!(
            !store.create(&id, &session(json!({}))).await.unwrap(),
            "{what}"
        );
        let version = store
            .set(&id, &session(json!({"fixed": what})))
            .await
            .unwrap();
        let fixed = store.get(&id).await.unwrap().expect(what);
        assert_eq!(fixed.get::<String>("fixed").unwrap().as_deref(), Some(what));
        assert_eq!(fixed.version(), version);
        // destroy works on a corrupt row too.
        db.execute(
            &format!("UPDATE sessions SET {update} WHERE id = ?1"),
            [id.as_str()],
        )
        .unwrap();
        store.destroy(&id).await.unwrap();
        assert!(store.get(&id).await.unwrap().is_none(), "{what}");
    }
    // The JSON error is reachable as the decode error's source chain, as a data-free summary.
    let id = SessionId::generate();
    store.set(&id, &session(json!({}))).await.unwrap();
    db.execute(
        "UPDATE sessions SET data = '{' WHERE id = ?1",
        [id.as_str()],
    )
    .unwrap();
    let err = store.get(&id).await.unwrap_err();
    let row_error = err.source().unwrap();
    assert!(
        row_error
            .source()
            .and_then(|e| e.downcast_ref::<session_stores::JsonError>())
            .is_some_and(|json| json.category == "eof"),
        "{err:?}"
    );
}

/// Inserts `n` already-expired rows directly.
fn insert_expired(path: &Path, prefix: &str, n: usize) {
    let db = raw(path);
    let past = now_millis() - 60_000;
    for i in 0..n {
        db.execute(
            "INSERT INTO sessions (id, data, expires_at, version) VALUES (?1, '{}', ?2, 1)",
            rusqlite::params![format!("{prefix}{i}"), past],
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_expired_runs_in_batches_of_the_configured_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::builder()
        .delete_batch_size(10)
        .open(&path)
        .await
        .unwrap();
    assert_eq!(store.delete_batch_size(), 10);
    let live: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
    for id in &live {
        store.set(id, &session(json!({}))).await.unwrap();
    }
    insert_expired(&path, "old-", 25);
    assert_eq!(store.len().await.unwrap(), 3);
    // One batch deletes at most the batch size.
    assert_eq!(store.delete_expired_batch().await.unwrap(), 10);
    assert_eq!(store.delete_expired_batch().await.unwrap(), 10);
    assert_eq!(store.delete_expired_batch().await.unwrap(), 5);
    assert_eq!(store.delete_expired_batch().await.unwrap(), 0);
    // delete_expired repeats batches until the backlog is gone, including an exact multiple.
    insert_expired(&path, "older-", 30);
    assert_eq!(store.delete_expired().await.unwrap(), 30);
    insert_expired(&path, "oldest-", 7);
    assert_eq!(store.delete_expired().await.unwrap(), 7);
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    let rows: i64 = raw(&path)
        .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3, "only the live sessions remain");
    for id in &live {
        assert!(store.get(id).await.unwrap().is_some());
    }
    // A batch size of 0 is taken as 1.
    let one = SqliteStore::builder()
        .delete_batch_size(0)
        .open(&path)
        .await
        .unwrap();
    insert_expired(&path, "again-", 2);
    assert_eq!(one.delete_batch_size(), 1);
    assert_eq!(one.delete_expired_batch().await.unwrap(), 1);
    assert_eq!(one.delete_expired().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_busy_timeout_is_a_transient_timeout_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::builder()
        .busy_timeout(Duration::from_millis(50))
        .open(&path)
        .await
        .unwrap();
    let id = SessionId::generate();
    let old = session(json!({"v": "old"}));
    let v0 = store.set(&id, &old).await.unwrap();

    let db = raw(&path);
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let new = session(json!({"v": "new"}));
    let results = [
        ("set", store.set(&id, &new).await.map(|_| ())),
        (
            "create",
            store.create(&SessionId::generate(), &new).await.map(|_| ()),
        ),
        (
            "set_if_version",
            store.set_if_version(&id, &new, v0).await.map(|_| ()),
        ),
        (
            "touch",
            store.touch(&id, SystemTime::now() + HOUR).await.map(|_| ()),
        ),
        ("destroy", store.destroy(&id).await),
        ("clear", store.clear().await),
    ];
    for (op, result) in results {
        let err = result.expect_err(op);
        assert!(matches!(err, Error::Timeout { .. }), "{op}: {err:?}");
        assert!(err.is_transient(), "{op}");
        let source = err
            .source()
            .and_then(|e| e.downcast_ref::<rusqlite::Error>());
        assert_eq!(
            source.and_then(rusqlite::Error::sqlite_error_code),
            Some(rusqlite::ErrorCode::DatabaseBusy),
            "{op}: {err:?}"
        );
    }
    // Reads are not blocked by the lock.
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.get::<String>("v").unwrap().as_deref(), Some("old"));
    db.execute_batch("ROLLBACK").unwrap();

    // Nothing was written, and the store works once the lock is released.
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.get::<String>("v").unwrap().as_deref(), Some("old"));
    assert_eq!(got.version(), v0);
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(store.set(&id, &new).await.unwrap(), v0 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_proceed_while_a_write_waits_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::builder()
        .busy_timeout(Duration::from_secs(60))
        .open(&path)
        .await
        .unwrap();
    let id = SessionId::generate();
    store.set(&id, &session(json!({"v": 1}))).await.unwrap();

    let db = raw(&path);
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let other = SessionId::generate();
    let value = session(json!({"v": 2}));
    let mut write = Box::pin(store.set(&other, &value));
    // Poll the write once: it is now queued on the write connection, which waits for the
    // lock (it cannot finish while the lock is held).
    assert!(
        tokio::time::timeout(Duration::ZERO, &mut write)
            .await
            .is_err()
    );
    // If reads were queued behind that write, these would wait out the 60 s busy timeout
    // and the write would then fail.
    assert!(store.get(&id).await.unwrap().is_some());
    assert!(store.get(&other).await.unwrap().is_none());
    assert_eq!(store.len().await.unwrap(), 1);
    db.execute_batch("COMMIT").unwrap();
    let version = write.await.unwrap();
    assert_eq!(
        store.get(&other).await.unwrap().map(|s| s.version()),
        Some(version)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_created_versioned_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::builder()
        .table("web_sessions")
        .open(&path)
        .await
        .unwrap();
    assert_eq!(store.table(), "web_sessions");
    assert_eq!(store.path(), Some(path.as_path()));
    drop(store);
    let db = raw(&path);
    let version: i64 = db
        .query_row(
            &format!("SELECT version FROM {SCHEMA_TABLE} WHERE table_name = 'web_sessions'"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let index: String = db
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'web_sessions' \
             AND sql IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(index.contains("expires_at"), "{index}");
    let journal: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal", "WAL by default");

    // A table recorded by a newer release is refused.
    db.execute(
        &format!("UPDATE {SCHEMA_TABLE} SET version = ?1 WHERE table_name = 'web_sessions'"),
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    let err = SqliteStore::builder()
        .table("web_sessions")
        .open(&path)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    assert!(err.to_string().contains("newer"), "{err}");

    // A table that is not a session table is refused.
    db.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        .unwrap();
    let err = SqliteStore::builder()
        .table("users")
        .open(&path)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");

    // So is a table whose `id` is not its primary key.
    db.execute_batch(
        "CREATE TABLE loose (id TEXT, data TEXT, expires_at INTEGER, version INTEGER)",
    )
    .unwrap();
    let err = SqliteStore::builder()
        .table("loose")
        .open(&path)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");

    // Bad names never reach SQL.
    for bad in [
        "bad-name",
        "x; DROP TABLE users",
        "sqlite_x",
        SCHEMA_TABLE,
        "",
    ] {
        let err = SqliteStore::builder()
            .table(bad)
            .open(&path)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
    }
    let users: i64 = db
        .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(users, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_false_keeps_the_journal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollback.db");
    let store = SqliteStore::builder().wal(false).open(&path).await.unwrap();
    let id = SessionId::generate();
    store.set(&id, &session(json!({}))).await.unwrap();
    let journal: String = raw(&path)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_one_file_are_separate_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let a = SqliteStore::builder().table("a").open(&path).await.unwrap();
    let b = SqliteStore::builder().table("b").open(&path).await.unwrap();
    let id = SessionId::generate();
    a.set(&id, &session(json!({"in": "a"}))).await.unwrap();
    assert!(b.get(&id).await.unwrap().is_none());
    assert!(b.create(&id, &session(json!({"in": "b"}))).await.unwrap());
    b.clear().await.unwrap();
    assert_eq!(b.len().await.unwrap(), 0);
    assert_eq!(a.len().await.unwrap(), 1);
    let got = a.get(&id).await.unwrap().unwrap();
    assert_eq!(got.get::<String>("in").unwrap().as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_stores_are_private() {
    let a = SqliteStore::open_in_memory().await.unwrap();
    let b = SqliteStore::open_in_memory().await.unwrap();
    let id = SessionId::generate();
    a.set(&id, &session(json!({}))).await.unwrap();
    assert!(a.get(&id).await.unwrap().is_some());
    assert!(b.get(&id).await.unwrap().is_none());
    assert_eq!(b.len().await.unwrap(), 0);
    assert!(a.path().is_none());
}

#[test]
fn works_without_a_tokio_runtime() {
    // The store's work runs on its own threads, so any executor (here a minimal one) can
    // drive it.
    let result = std::thread::spawn(|| {
        futures_lite_block_on(async {
            let store = SqliteStore::open_in_memory().await?;
            let id = SessionId::generate();
            let version = store.set(&id, &session(json!({"k": "v"}))).await?;
            Ok::<_, Error>((version, store.get(&id).await?.map(|s| s.version())))
        })
    })
    .join()
    .unwrap();
    let (version, got) = result.unwrap();
    assert_eq!(got, Some(version));
}

/// A file-backed store (with its inline read connections) needs no tokio runtime either.
#[test]
fn a_file_store_works_without_a_tokio_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-tokio.db");
    let result = std::thread::spawn(move || {
        futures_lite_block_on(async {
            let store = SqliteStore::builder().inline_reads(2).open(&path).await?;
            let id = SessionId::generate();
            let version = store.set(&id, &session(json!({"k": "v"}))).await?;
            let got = store.get(&id).await?.map(|s| s.version());
            store.close().await?;
            Ok::<_, Error>((version, got))
        })
    })
    .join()
    .unwrap();
    let (version, got) = result.unwrap();
    assert_eq!(got, Some(version));
}

/// A tiny executor: polls `fut` on this thread, parking between wake-ups.
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// A row whose version is already i64::MAX (above [`MAX_VERSION`]: only a hand-edited row can
/// be) never becomes a REAL or an unreadable row: `set_if_version` and `set` on it give it a
/// fresh version, as `next_version` does.
#[tokio::test]
async fn a_version_at_i64_max_never_overflows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let id = SessionId::generate();
    store.set(&id, &session(json!({"n": 1}))).await.unwrap();
    let db = raw(&path);
    let max = i64::MAX as u64;
    set_version(&db, &id, max);
    assert_eq!(store.get(&id).await.unwrap().unwrap().version(), max);
    let fresh = store
        .set_if_version(&id, &session(json!({"n": 2})), max)
        .await
        .unwrap();
    assert!((1..=FRESH_VERSION_SPAN).contains(&fresh), "{fresh}");
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (got.version(), got.get::<u64>("n").unwrap()),
        (fresh, Some(2))
    );
    set_version(&db, &id, max);
    let fresh = store.set(&id, &session(json!({"n": 3}))).await.unwrap();
    assert!((1..=FRESH_VERSION_SPAN).contains(&fresh), "{fresh}");
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (got.version(), got.get::<u64>("n").unwrap()),
        (fresh, Some(3))
    );
}

/// Sets the version of the row of `id` by hand.
fn set_version(db: &Connection, id: &SessionId, version: u64) {
    let changed = db
        .execute(
            "UPDATE sessions SET version = ?2 WHERE id = ?1",
            rusqlite::params![id.as_str(), i64::try_from(version).unwrap()],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// A row at [`MAX_VERSION`] advances to a fresh version (at most [`FRESH_VERSION_SPAN`]) on
/// `set` and on `set_if_version(MAX_VERSION)`.
#[tokio::test]
async fn the_largest_version_advances_to_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let db = raw(&path);
    let id = SessionId::generate();
    store.set(&id, &session(json!({"n": 1}))).await.unwrap();

    set_version(&db, &id, MAX_VERSION);
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().version(),
        MAX_VERSION
    );
    let fresh = store.set(&id, &session(json!({"n": 2}))).await.unwrap();
    assert!(
        (1..=FRESH_VERSION_SPAN).contains(&fresh),
        "set gave {fresh}"
    );
    assert_eq!(store.get(&id).await.unwrap().unwrap().version(), fresh);

    set_version(&db, &id, MAX_VERSION);
    let fresh = store
        .set_if_version(&id, &session(json!({"n": 3})), MAX_VERSION)
        .await
        .unwrap();
    assert!(
        (1..=FRESH_VERSION_SPAN).contains(&fresh),
        "set_if_version gave {fresh}"
    );
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (got.version(), got.get::<u64>("n").unwrap()),
        (fresh, Some(3))
    );
    assert_eq!(
        store.set(&id, &session(json!({"n": 4}))).await.unwrap(),
        fresh + 1
    );
}

/// A session at version 1 (set by hand), destroyed and created again, starts a new
/// incarnation at a fresh version: neither 1 again nor 2 (each with a chance of 2^-48).
#[tokio::test]
async fn a_new_incarnation_does_not_restart_at_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let db = raw(&path);
    let id = SessionId::generate();
    store.set(&id, &session(json!({"n": 1}))).await.unwrap();
    set_version(&db, &id, 1);
    assert_eq!(store.get(&id).await.unwrap().unwrap().version(), 1);

    store.destroy(&id).await.unwrap();
    assert!(store.create(&id, &session(json!({"n": 2}))).await.unwrap());
    let version = store.get(&id).await.unwrap().unwrap().version();
    assert_ne!(version, 1);
    assert_ne!(version, 2);
    assert!((1..=FRESH_VERSION_SPAN).contains(&version), "{version}");
    // A compare-and-set holding the old incarnation's version fails.
    assert!(
        store
            .set_if_version(&id, &session(json!({"n": 3})), 1)
            .await
            .unwrap_err()
            .is_conflict()
    );
}

// ---------------------------------------------------------------------------------------
// Contention and failure: a lock held by another connection, abandoned calls, expiry decided
// under the lock, WAL growth, batched `clear`, `close`.
// ---------------------------------------------------------------------------------------

/// The size of the database's `-wal` file in bytes (0 if there is none).
fn wal_size(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// 10,000 `set`s against a write lock held by another connection: each fails with a
/// transient `Timeout` at the operation timeout, the queue never holds more than its capacity,
/// and once the lock is released none of the abandoned writes happens after all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_that_time_out_behind_a_held_lock_never_commit_later_and_the_queue_stays_bounded() {
    let _load = crate::support::loads_the_machine().await;
    const SETS: usize = 10_000;
    const CAPACITY: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = std::sync::Arc::new(
        SqliteStore::builder()
            .operation_timeout(Duration::from_millis(200))
            .queue_capacity(CAPACITY)
            .open(&path)
            .await
            .unwrap(),
    );
    assert_eq!(store.operation_timeout(), Duration::from_millis(200));
    let db = raw(&path);
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..SETS)
        .map(|_| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let id = SessionId::generate();
                store.set(&id, &session(json!({"n": 1}))).await
            })
        })
        .collect();
    let mut most_pending = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        most_pending = most_pending.max(store.pending_writes());
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sets never gave up"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let waited = started.elapsed();
    for task in tasks {
        let err = task.await.unwrap().expect_err("the lock is held");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
        assert!(err.is_transient());
        assert!(err.session().is_some(), "the error names the session");
    }
    println!("{SETS} sets timed out after {waited:?}; at most {most_pending} queued");
    assert!(most_pending <= CAPACITY, "{most_pending} queued");
    db.execute_batch("ROLLBACK").unwrap();

    // A write queued now runs after every job still in the queue.
    let probe = SessionId::generate();
    store.set(&probe, &session(json!({}))).await.unwrap();
    assert_eq!(store.pending_writes(), 0);
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "only the probe: no abandoned set committed later");
}

/// A `set` whose expiry is in the future when called but past by the time the writer gets
/// the lock stores nothing and returns 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_that_expires_while_waiting_for_the_lock_stores_nothing_and_returns_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::builder()
        .busy_timeout(Duration::from_secs(30))
        .open(&path)
        .await
        .unwrap();
    let db = raw(&path);
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let id = SessionId::generate();
    let mut short = Session::new(Duration::from_millis(300));
    short.insert("n", 1).unwrap();
    assert!(!short.is_expired_at(now_millis()), "live when called");
    let mut write = Box::pin(store.set(&id, &short));
    // Queue it: the writer now waits for the lock, longer than the session lives.
    assert!(
        tokio::time::timeout(Duration::ZERO, &mut write)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(short.is_expired_at(now_millis()));
    db.execute_batch("ROLLBACK").unwrap();
    assert_eq!(write.await.unwrap(), 0, "the job found the expiry passed");
    let rows: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM sessions WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0, "no already-expired row was stored");
    assert!(store.get(&id).await.unwrap().is_none());
}

/// Inserts `n` rows of about 300 bytes, `expires_at` ms since the epoch, in transactions of
/// 1000 rows.
fn insert_rows(path: &Path, prefix: &str, n: usize, expires_at: i64) {
    let mut db = raw(path);
    let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(256));
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let tx = db.transaction().unwrap();
        for i in chunk {
            tx.execute(
                "INSERT INTO sessions (id, data, expires_at, version) VALUES (?1, ?2, ?3, 1)",
                rusqlite::params![format!("{prefix}{i}"), data, expires_at],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
}

/// After a `clear` or `delete_expired` of 20,000 sessions the WAL is not left at its peak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_shrinks_after_a_large_clear_or_delete_expired() {
    const MIB: u64 = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();

    insert_rows(&path, "live-", 20_000, now_millis() + 3_600_000);
    assert_eq!(store.len().await.unwrap(), 20_000);
    let before = wal_size(&path);
    store.clear().await.unwrap();
    let after_clear = wal_size(&path);
    assert_eq!(store.len().await.unwrap(), 0);

    insert_rows(&path, "old-", 20_000, now_millis() - 60_000);
    let before_expired = wal_size(&path);
    assert_eq!(store.delete_expired().await.unwrap(), 20_000);
    let after_expired = wal_size(&path);
    println!(
        "WAL bytes: {before} before clear, {after_clear} after; \
         {before_expired} before delete_expired, {after_expired} after"
    );
    assert!(after_clear < MIB, "WAL after clear: {after_clear} bytes");
    assert!(
        after_expired < MIB,
        "WAL after delete_expired: {after_expired} bytes"
    );
}

/// `clear` of many rows runs in batches: a write queued while the first batch waits for the
/// lock runs before the second batch, and still finds the rows of later batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_runs_in_batches_that_let_other_writes_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::builder()
        .delete_batch_size(100)
        .busy_timeout(Duration::from_secs(30))
        .open(&path)
        .await
        .unwrap();
    insert_rows(&path, "s-", 1000, now_millis() + 3_600_000);
    // The row cleared last (the largest rowid).
    let last = SessionId::new("s-999").unwrap();

    let db = raw(&path);
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut clear = Box::pin(store.clear());
    assert!(
        tokio::time::timeout(Duration::ZERO, &mut clear)
            .await
            .is_err()
    );
    // Queued behind the first batch of the clear.
    let mut touch = Box::pin(store.touch(&last, SystemTime::now() + HOUR));
    assert!(
        tokio::time::timeout(Duration::ZERO, &mut touch)
            .await
            .is_err()
    );
    db.execute_batch("ROLLBACK").unwrap();
    let (cleared, touched) = tokio::join!(clear, touch);
    cleared.unwrap();
    assert!(
        touched.unwrap(),
        "the touch ran between two batches, before the clear reached its row"
    );
    assert_eq!(store.len().await.unwrap(), 0, "the clear still removed it");
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}

/// `close` runs every write queued before it, stops the threads and closes the connections;
/// operations afterwards fail with `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_queued_writes_then_refuses_operations() {
    const SETS: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = std::sync::Arc::new(SqliteStore::open(&path).await.unwrap());
    // Another connection holds the lock while the sets are called, so that they queue up.
    let db = raw(&path);
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let tasks: Vec<_> = (0..SETS)
        .map(|i| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let id = SessionId::new(format!("s-{i}")).unwrap();
                let result = store.set(&id, &session(json!({ "i": i }))).await;
                (id, result)
            })
        })
        .collect();
    let waiting = std::time::Instant::now();
    while store.pending_writes() < 100 {
        assert!(
            waiting.elapsed() < Duration::from_secs(4),
            "the sets never queued"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    let queued = store.pending_writes();
    store.close().await.unwrap();
    assert_eq!(store.pending_writes(), 0);
    let mut written = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            (id, Ok(version)) => written.push((id, version)),
            (_, Err(err)) => {
                assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
                refused += 1;
            }
        }
    }
    println!(
        "{queued} writes queued at close; {} acknowledged, {refused} refused",
        written.len()
    );
    assert!(queued > 0 && !written.is_empty());
    // Every connection is closed: the last one checkpointed and removed the WAL file.
    assert_eq!(wal_size(&path), 0, "the WAL was checkpointed and removed");
    let id = SessionId::generate();
    for err in [
        store.get(&id).await.map(|_| ()).unwrap_err(),
        store
            .set(&id, &session(json!({})))
            .await
            .map(|_| ())
            .unwrap_err(),
        store.len().await.map(|_| ()).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("the SQLite store was closed")
        );
    }
    // Closing again is fine.
    store.close().await.unwrap();

    let reopened = SqliteStore::open(&path).await.unwrap();
    for (id, version) in &written {
        let got = reopened.get(id).await.unwrap();
        assert_eq!(got.map(|s| s.version()), Some(*version), "{id:?}");
    }
    assert_eq!(reopened.len().await.unwrap(), written.len() as u64);
}

fn owner(name: &str) -> Owner {
    Owner::new(format!("{name}-{}", SessionId::generate())).unwrap()
}

fn owned(owner: &Owner, data: serde_json::Value) -> Session {
    session(data).with_owner(Some(owner.clone()))
}

/// The ids `sessions_of` lists, sorted.
async fn listed(store: &SqliteStore, owner: &Owner) -> Vec<SessionId> {
    let mut ids: Vec<SessionId> = store
        .sessions_of(owner, false)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<SessionId>) -> Vec<SessionId> {
    ids.sort();
    ids
}

fn owner_column(path: &Path, table: &str, id: &SessionId) -> Option<String> {
    raw(path)
        .query_row(
            &format!("SELECT owner FROM \"{table}\" WHERE id = ?1"),
            [id.as_str()],
            |r| r.get(0),
        )
        .unwrap()
}

/// Every write stores the owner (NULL for none), `get` returns it, `touch` keeps it, and an
/// identical write under another owner is a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_are_stored_by_every_write_and_kept_by_touch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.capabilities().owners);
    let (ada, bob) = (owner("ada"), owner("bob"));
    let id = SessionId::generate();
    let s = owned(&ada, json!({"k": 1}));
    assert!(store.create(&id, &s).await.unwrap());
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.owner(), Some(&ada));
    assert_eq!(
        owner_column(&path, "sessions", &id).as_deref(),
        Some(ada.as_str())
    );

    // The same data and expiry under another owner: stored.
    let v = store
        .set(&id, &s.clone().with_owner(Some(bob.clone())))
        .await
        .unwrap();
    assert_eq!(got.version() + 1, v);
    assert_eq!(store.get(&id).await.unwrap().unwrap().owner(), Some(&bob));
    assert_eq!(listed(&store, &ada).await, Vec::<SessionId>::new());
    assert_eq!(listed(&store, &bob).await, vec![id.clone()]);

    // touch keeps it.
    assert!(
        store
            .touch(&id, SystemTime::now() + 2 * HOUR)
            .await
            .unwrap()
    );
    assert_eq!(store.get(&id).await.unwrap().unwrap().owner(), Some(&bob));

    // set_if_version moves it back; a write with no owner removes it.
    let v = store.set_if_version(&id, &s, v).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap().unwrap().owner(), Some(&ada));
    store
        .set_if_version(&id, &s.clone().with_owner(None), v)
        .await
        .unwrap();
    assert_eq!(store.get(&id).await.unwrap().unwrap().owner(), None);
    assert_eq!(owner_column(&path, "sessions", &id), None);
    assert!(listed(&store, &ada).await.is_empty());

    // A fresh id through set_if_version(0), and through set.
    let other = SessionId::generate();
    store.set_if_version(&other, &s, 0).await.unwrap();
    let third = SessionId::generate();
    store.set(&third, &s).await.unwrap();
    assert_eq!(listed(&store, &ada).await, sorted(vec![other, third]));
}

/// Listings hold exactly the live sessions of the owner, with their expiry, version and (if
/// asked) data; `destroy_owner` ends all but the kept one and counts only live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_and_destroy_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let (ada, bob) = (owner("ada"), owner("bob"));
    let ids: Vec<SessionId> = (0..5).map(|_| SessionId::generate()).collect();
    let mut versions = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        versions.push(store.set(id, &owned(&ada, json!({"n": n}))).await.unwrap());
    }
    let bobs = SessionId::generate();
    store.set(&bobs, &owned(&bob, json!({}))).await.unwrap();
    let unowned = SessionId::generate();
    store.set(&unowned, &session(json!({}))).await.unwrap();

    let with_data = store.sessions_of(&ada, true).await.unwrap();
    assert_eq!(with_data.len(), 5);
    for entry in &with_data {
        let n = ids
            .iter()
            .position(|id| *id == entry.id)
            .expect("one of ada's");
        assert_eq!(entry.version, versions[n]);
        assert_eq!(entry.data.as_ref().unwrap()["n"], json!(n));
        let stored = store.get(&entry.id).await.unwrap().unwrap();
        assert_eq!(entry.expires_at_millis, stored.expires_at_millis());
    }
    assert!(
        store
            .sessions_of(&ada, false)
            .await
            .unwrap()
            .iter()
            .all(|e| e.data.is_none())
    );

    // Destroyed, expired by touch, expired in the table, re-owned: not listed.
    store.destroy(&ids[0]).await.unwrap();
    store
        .touch(&ids[1], SystemTime::now() - HOUR)
        .await
        .unwrap();
    raw(&path)
        .execute(
            "UPDATE sessions SET expires_at = ?2 WHERE id = ?1",
            rusqlite::params![ids[2].as_str(), now_millis() - 1],
        )
        .unwrap();
    store.set(&ids[3], &owned(&bob, json!({}))).await.unwrap();
    assert_eq!(listed(&store, &ada).await, vec![ids[4].clone()]);

    // The expired row of ada's is deleted too but not counted; bob's and the unowned one
    // stay.
    assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
    assert!(store.get(&ids[4]).await.unwrap().is_none());
    let rows: i64 = raw(&path)
        .query_row(
            "SELECT COUNT(*) FROM sessions WHERE owner = ?1",
            [ada.as_str()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(
        listed(&store, &bob).await,
        sorted(vec![bobs.clone(), ids[3].clone()])
    );
    assert!(store.get(&unowned).await.unwrap().is_some());
    assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 0);

    // With a kept session: it stays; a kept id of someone else protects nothing.
    assert_eq!(store.destroy_owner(&bob, Some(&bobs)).await.unwrap(), 1);
    assert_eq!(listed(&store, &bob).await, vec![bobs.clone()]);
    store.set(&ids[0], &owned(&bob, json!({}))).await.unwrap();
    assert_eq!(store.destroy_owner(&bob, Some(&unowned)).await.unwrap(), 2);
    assert!(listed(&store, &bob).await.is_empty());
    assert!(store.get(&unowned).await.unwrap().is_some());

    // Both are named in their errors, and an in-memory store has them too.
    let memory = SqliteStore::open_in_memory().await.unwrap();
    let id = SessionId::generate();
    memory.set(&id, &owned(&ada, json!({}))).await.unwrap();
    assert_eq!(listed(&memory, &ada).await, vec![id.clone()]);
    assert_eq!(memory.destroy_owner(&ada, None).await.unwrap(), 1);
    memory.close().await.unwrap();
    for err in [
        memory.sessions_of(&ada, true).await.unwrap_err(),
        memory.destroy_owner(&ada, None).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }
    let err = memory.sessions_of(&ada, true).await.unwrap_err();
    assert!(err.to_string().contains("sessions_of"), "{err}");
    let err = memory.destroy_owner(&ada, None).await.unwrap_err();
    assert!(err.to_string().contains("destroy_owner"), "{err}");
}

/// An owner with 2000 sessions lists and destroys them all; the statements use the owner
/// index, and owners of two tables in one file are separate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sessions_of_one_owner_through_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let a = SqliteStore::builder().table("a").open(&path).await.unwrap();
    let b = SqliteStore::builder().table("b").open(&path).await.unwrap();
    let ada = owner("ada");
    let mut ids = Vec::new();
    for n in 0..2000 {
        let id = SessionId::generate();
        a.set(&id, &owned(&ada, json!({ "n": n }))).await.unwrap();
        ids.push(id);
    }
    let shared = ids[0].clone();
    b.set(&shared, &owned(&ada, json!({"in": "b"})))
        .await
        .unwrap();
    assert_eq!(listed(&a, &ada).await, sorted(ids.clone()));
    assert_eq!(a.sessions_of(&ada, true).await.unwrap().len(), 2000);
    assert_eq!(listed(&b, &ada).await, vec![shared.clone()]);

    let db = raw(&path);
    for statement in [
        "SELECT id, expires_at, version FROM a WHERE owner = ?1 AND expires_at > ?2",
        "DELETE FROM a WHERE owner = ?1 AND id IS NOT ?2 RETURNING expires_at > ?2",
    ] {
        let plan: Vec<String> = db
            .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
            .unwrap()
            .query_map(rusqlite::params!["x", 1], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("INDEX \"a_owner\"") || step.contains("INDEX a_owner")),
            "{statement}: {plan:?}"
        );
    }

    assert_eq!(a.destroy_owner(&ada, Some(&ids[7])).await.unwrap(), 1999);
    assert_eq!(listed(&a, &ada).await, vec![ids[7].clone()]);
    assert_eq!(listed(&b, &ada).await, vec![shared.clone()]);
    assert_eq!(b.destroy_owner(&ada, None).await.unwrap(), 1);
    assert_eq!(listed(&a, &ada).await, vec![ids[7].clone()]);
}

/// A table of schema version 1 (no `owner` column, no owner index) is upgraded when a store
/// opens it, and its sessions survive with no owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_table_is_upgraded_and_keeps_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let id = SessionId::generate();
    let expires_at = now_millis() + 3_600_000;
    {
        let db = raw(&path);
        db.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; \
             CREATE TABLE {SCHEMA_TABLE} (table_name TEXT PRIMARY KEY NOT NULL, \
                 version INTEGER NOT NULL); \
             INSERT INTO {SCHEMA_TABLE} VALUES ('sessions', 1); \
             CREATE TABLE \"sessions\" (id TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, \
                 expires_at INTEGER NOT NULL, version INTEGER NOT NULL); \
             CREATE INDEX \"sessions_expires_at\" ON \"sessions\" (expires_at);"
        ))
        .unwrap();
        db.execute(
            "INSERT INTO sessions VALUES (?1, '{\"user\":\"ada\"}', ?2, 7)",
            rusqlite::params![id.as_str(), expires_at],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let got = store.get(&id).await.unwrap().expect("kept");
    assert_eq!(got.get::<String>("user").unwrap().as_deref(), Some("ada"));
    assert_eq!((got.version(), got.expires_at_millis()), (7, expires_at));
    assert_eq!(got.owner(), None);

    let db = raw(&path);
    let version: i64 = db
        .query_row(
            &format!("SELECT version FROM {SCHEMA_TABLE} WHERE table_name = 'sessions'"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 3);
    let index: String = db
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'sessions_owner'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(index.contains("WHERE owner IS NOT NULL"), "{index}");

    // The upgraded table keeps owners; opening it again changes nothing.
    let ada = owner("ada");
    let v = store
        .set(&id, &got.clone().with_owner(Some(ada.clone())))
        .await
        .unwrap();
    assert_eq!(v, 8);
    drop(store);
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(listed(&store, &ada).await, vec![id.clone()]);
    assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
}

/// A stored owner that is not a valid owner, and a listed row that is not a session, are
/// decode errors naming the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_owners_and_listed_rows_are_decode_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let db = raw(&path);
    let id = SessionId::generate();
    store.set(&id, &session(json!({}))).await.unwrap();
    // (The column's TEXT affinity stores numbers as text, which are valid owners.)
    for bad in ["''", "'a\nb'", "X'00'"] {
        db.execute(
            &format!("UPDATE sessions SET owner = {bad} WHERE id = ?1"),
            [id.as_str()],
        )
        .unwrap();
        let err = store.get(&id).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode, "{bad}: {err:?}");
        assert_eq!(err.session(), Some(&id.hint()), "{bad}");
    }

    let ada = owner("ada");
    let id = SessionId::generate();
    store.set(&id, &owned(&ada, json!({}))).await.unwrap();
    db.execute(
        "UPDATE sessions SET data = 'not json' WHERE id = ?1",
        [id.as_str()],
    )
    .unwrap();
    // Without data the row lists; with data it is listed as undecodable (the Decode error
    // naming it), never failing the listing.
    assert_eq!(listed(&store, &ada).await, vec![id.clone()]);
    crate::support::listed_only_as_undecodable(&store, &ada, true, &id).await;
    db.execute(
        "UPDATE sessions SET version = 'x' WHERE id = ?1",
        [id.as_str()],
    )
    .unwrap();
    crate::support::listed_only_as_undecodable(&store, &ada, false, &id).await;
    // A hand-written id that is no session id names no session a caller could end: left
    // out.
    db.execute(
        "UPDATE sessions SET id = 'a/b', version = 1 WHERE id = ?1",
        [id.as_str()],
    )
    .unwrap();
    assert!(store.sessions_of(&ada, false).await.unwrap().is_empty());
    // destroy_owner needs no decoding.
    assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
}

// Scans.

/// Every page of a scan from `cursor` on, each checked to hold at most `limit` sessions.
async fn scan_from(
    store: &SqliteStore,
    mut cursor: Option<ScanCursor>,
    limit: usize,
) -> Vec<(SessionId, Session)> {
    let mut all = Vec::new();
    loop {
        let page = store.scan(cursor.as_ref(), limit).await.unwrap();
        assert!(
            page.sessions.len() <= limit.max(1),
            "{}",
            page.sessions.len()
        );
        all.extend(page.sessions);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

/// The ids of `scanned`, checked to be there once each.
fn once_each(scanned: &[(SessionId, Session)]) -> BTreeMap<SessionId, Session> {
    let mut seen = BTreeMap::new();
    for (id, session) in scanned {
        assert!(
            seen.insert(id.clone(), session.clone()).is_none(),
            "{id:?} twice"
        );
    }
    seen
}

/// Writes `n` sessions, every third with an owner, some written twice (a later version),
/// and returns them as `get` reads them back.
async fn write_many(store: &SqliteStore, n: usize) -> BTreeMap<SessionId, Session> {
    let ada = owner("ada");
    let mut written = BTreeMap::new();
    for i in 0..n {
        let id = SessionId::generate();
        let mut s = session(json!({"i": i, "tags": ["a", i % 7]}));
        if i % 3 == 0 {
            s = s.with_owner(Some(ada.clone()));
        }
        s.expire_in(HOUR + Duration::from_secs(i as u64));
        store.set(&id, &s).await.unwrap();
        if i % 5 == 0 {
            store.set(&id, &s).await.unwrap();
        }
        written.insert(id.clone(), store.get(&id).await.unwrap().unwrap());
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_pages_through_every_live_session_once_as_get_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let mut written = write_many(&store, 300).await;
    // Ten of them expire (by hand, as time passing would): never scanned.
    let expired: Vec<SessionId> = written.keys().step_by(30).cloned().collect();
    for id in &expired {
        raw(&path)
            .execute(
                "UPDATE sessions SET expires_at = ?2 WHERE id = ?1",
                rusqlite::params![id.as_str(), now_millis() - 1],
            )
            .unwrap();
        written.remove(id);
    }
    assert_eq!(written.len(), 290);
    assert!(store.capabilities().scan);
    assert!(store.capabilities().owners);

    for limit in [7, 1, 290, 1000] {
        let scanned = scan_from(&store, None, limit).await;
        let seen = once_each(&scanned);
        assert_eq!(seen, written, "limit {limit}");
        // In id order.
        assert!(scanned.windows(2).all(|w| w[0].0 < w[1].0));
    }
    // A limit of 0 counts as 1; a huge one is capped, and a short page ends the scan.
    let page = store.scan(None, 0).await.unwrap();
    assert_eq!(page.sessions.len(), 1);
    assert!(page.next.is_some());
    let page = store.scan(None, usize::MAX).await.unwrap();
    assert_eq!(page.sessions.len(), 290);
    assert!(page.next.is_none());
    // A full last page is followed by an empty one that ends the scan.
    let page = store.scan(None, 290).await.unwrap();
    let next = page.next.expect("a full page goes on");
    let page = store.scan(Some(&next), 290).await.unwrap();
    assert!(page.sessions.is_empty());
    assert!(page.next.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_with_writes_between_pages_never_duplicates_or_drops_a_session_live_throughout() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let stable = write_many(&store, 300).await;
    let doomed: Vec<SessionId> = write_many(&store, 100).await.into_keys().collect();
    let mut created = Vec::new();
    let mut cursor = None;
    let mut scanned = Vec::new();
    let mut round = 0usize;
    loop {
        let page = store.scan(cursor.as_ref(), 9).await.unwrap();
        scanned.extend(page.sessions);
        let Some(next) = page.next else { break };
        cursor = Some(next);
        // Between pages: new sessions, destroyed ones, updated ones (a new version and data).
        for _ in 0..3 {
            let id = SessionId::generate();
            assert!(
                store
                    .create(&id, &session(json!({"new": round})))
                    .await
                    .unwrap()
            );
            created.push(id);
        }
        if let Some(id) = doomed.get(round) {
            store.destroy(id).await.unwrap();
        }
        for id in stable.keys().skip(round * 7 % 300).take(2) {
            let mut s = store.get(id).await.unwrap().unwrap();
            s.insert("updated", round).unwrap();
            store.set(id, &s).await.unwrap();
        }
        round += 1;
    }
    assert!(round > 30, "{round} pages");
    let seen = once_each(&scanned);
    for (id, session) in &stable {
        let got = seen.get(id).unwrap_or_else(|| panic!("{id:?} dropped"));
        assert_eq!(got.owner(), session.owner());
        assert_eq!(got.get_value("i"), session.get_value("i"));
    }
    // Everything scanned is one of the sessions written.
    for id in seen.keys() {
        assert!(stable.contains_key(id) || doomed.contains(id) || created.contains(id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_saved_as_text_resumes_on_a_new_store_over_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let written = {
        let store = SqliteStore::builder()
            .table("web")
            .open(&path)
            .await
            .unwrap();
        write_many(&store, 120).await
    };
    let (first, saved) = {
        let store = SqliteStore::builder()
            .table("web")
            .open(&path)
            .await
            .unwrap();
        let page = store.scan(None, 50).await.unwrap();
        let saved = page.next.expect("more to come").as_str().to_owned();
        store.close().await.unwrap();
        (page.sessions, saved)
    };
    let store = SqliteStore::builder()
        .table("web")
        .open(&path)
        .await
        .unwrap();
    let mut scanned = first;
    scanned.extend(scan_from(&store, Some(ScanCursor::new(saved)), 50).await);
    assert_eq!(once_each(&scanned), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_this_store_did_not_make_is_a_config_error() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    write_many(&store, 3).await;
    for text in [
        "",
        "1",
        "1:",
        "2:abc",
        "abc",
        "1:a/b",
        "1: x",
        &"1:".repeat(100),
    ] {
        let err = store
            .scan(Some(&ScanCursor::new(text)), 10)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{text:?}: {err:?}");
        assert!(err.to_string().contains("not a scan cursor"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_ends_its_scan_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let page = store.scan(None, 10).await.unwrap();
    assert!(page.sessions.is_empty());
    assert!(page.next.is_none());
    // Only expired sessions: empty too.
    let id = SessionId::generate();
    store.set(&id, &session(json!({}))).await.unwrap();
    raw(&path)
        .execute("UPDATE sessions SET expires_at = 0", [])
        .unwrap();
    let page = store.scan(None, 10).await.unwrap();
    assert!(page.sessions.is_empty());
    assert!(page.next.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_of_two_tables_in_one_file_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let a = SqliteStore::builder().table("a").open(&path).await.unwrap();
    let b = SqliteStore::builder().table("b").open(&path).await.unwrap();
    let in_a = write_many(&a, 40).await;
    let in_b = write_many(&b, 30).await;
    assert_eq!(once_each(&scan_from(&a, None, 8).await), in_a);
    assert_eq!(once_each(&scan_from(&b, None, 8).await), in_b);
    b.clear().await.unwrap();
    assert!(scan_from(&b, None, 8).await.is_empty());
    assert_eq!(once_each(&scan_from(&a, None, 8).await), in_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_scanned_row_is_reported_with_a_decode_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let id = SessionId::generate();
    store.set(&id, &session(json!({}))).await.unwrap();
    let db = raw(&path);
    for bad in [
        "data = 'not json'",
        "version = 'x'",
        "owner = ''",
        "expires_at = 'soon'",
    ] {
        store.set(&id, &session(json!({}))).await.unwrap();
        db.execute(
            &format!("UPDATE sessions SET {bad} WHERE id = ?1"),
            [id.as_str()],
        )
        .unwrap();
        let page = store.scan(None, 10).await.unwrap();
        assert!(page.sessions.is_empty(), "{bad}");
        assert_eq!(page.undecodable.len(), 1, "{bad}");
        let err = &page.undecodable[0].error;
        assert_eq!(err.kind(), ErrorKind::Decode, "{bad}: {err:?}");
        assert_eq!(err.session(), Some(&id.hint()), "{bad}");
        db.execute("DELETE FROM sessions", []).unwrap();
    }
    db.execute(
        "INSERT INTO sessions (id, data, expires_at, version) VALUES ('a/b', '{}', ?1, 1)",
        [now_millis() + 60_000],
    )
    .unwrap();
    let page = store.scan(None, 10).await.unwrap();
    assert!(page.sessions.is_empty());
    assert_eq!(page.undecodable.len(), 1);
    assert_eq!(page.undecodable[0].id, None);
    assert_eq!(page.undecodable[0].error.kind(), ErrorKind::Decode);
}

// Lifetimes: absolute expiry and rotation.

const MINUTE_MS: i64 = 60_000;
const GRACE: Duration = Duration::from_secs(60);

/// A session with `data`, expiring `expires_in` ms from now, with an absolute expiry
/// `absolute_in` ms from now (or none).
fn lived(data: serde_json::Value, expires_in: i64, absolute_in: Option<i64>) -> Session {
    let now = now_millis();
    let mut s = session(data);
    s.set_expires_at_millis(now + expires_in);
    s.set_absolute_expiry_millis(absolute_in.map(|ms| now + ms));
    s
}

/// The `expires_at`, `absolute_expiry` and `moved_to` columns of a row.
fn lifetime_columns(path: &Path, id: &SessionId) -> Option<(i64, Option<i64>, Option<String>)> {
    use rusqlite::OptionalExtension;
    raw(path)
        .query_row(
            "SELECT expires_at, absolute_expiry, moved_to FROM sessions WHERE id = ?1",
            [id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .unwrap()
}

async fn moved(store: &SqliteStore, old: &SessionId, new: &SessionId, grace: Duration) -> u64 {
    match store.rotate(old, new, grace).await.unwrap() {
        Rotation::Moved { version } => version,
        other => panic!("expected Moved, got {other:?}"),
    }
}

fn is_rotated_error(err: &Error) -> bool {
    matches!(err, Error::Rotated { .. }) && err.kind() == ErrorKind::Conflict
}

/// Every write and `touch` stores an expiry no later than the absolute expiry, which is
/// stored in its column and returned by `get` and `scan`; a write whose absolute expiry has
/// passed stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_absolute_expiry_caps_every_write_and_touch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.capabilities().absolute_expiry && store.capabilities().rotation);
    let id = SessionId::generate();
    let s = lived(json!({"user": "ada"}), 60 * MINUTE_MS, Some(10 * MINUTE_MS));
    let absolute = s.absolute_expiry_millis().unwrap();
    store.set(&id, &s).await.unwrap();
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.absolute_expiry_millis(), Some(absolute));
    assert_eq!(got.expires_at_millis(), absolute);
    assert!(!got.is_rotated());
    assert_eq!(
        lifetime_columns(&path, &id),
        Some((absolute, Some(absolute), None))
    );
    let page = store.scan(None, 10).await.unwrap();
    assert_eq!(page.sessions[0].1.absolute_expiry_millis(), Some(absolute));

    // `touch` past it stores it (and says true); before it, the time given.
    assert!(
        store
            .touch(&id, from_millis(absolute + 3_600_000))
            .await
            .unwrap()
    );
    assert_eq!(lifetime_columns(&path, &id).unwrap().0, absolute);
    assert!(
        store
            .touch(&id, from_millis(absolute - MINUTE_MS))
            .await
            .unwrap()
    );
    assert_eq!(
        lifetime_columns(&path, &id).unwrap().0,
        absolute - MINUTE_MS
    );

    // `create` and `set_if_version` are capped alike.
    let other = SessionId::generate();
    assert!(store.create(&other, &s).await.unwrap());
    let created = store.get(&other).await.unwrap().unwrap();
    assert_eq!(created.expires_at_millis(), absolute);
    let mut later = s.clone();
    later.set_expires_at_millis(absolute + 3_600_000);
    let v = store
        .set_if_version(&other, &later, created.version())
        .await
        .unwrap();
    assert_eq!(v, next_version(created.version()));
    assert_eq!(lifetime_columns(&path, &other).unwrap().0, absolute);

    // An absolute expiry that has passed: the write deletes and returns 0, `create` stores
    // nothing live, a compare-and-set deletes.
    let past = lived(json!({}), 60 * MINUTE_MS, Some(-1));
    assert_eq!(store.set(&id, &past).await.unwrap(), 0);
    assert!(store.get(&id).await.unwrap().is_none());
    assert!(lifetime_columns(&path, &id).is_none());
    let fresh = SessionId::generate();
    assert!(store.create(&fresh, &past).await.unwrap());
    assert!(store.get(&fresh).await.unwrap().is_none());
    assert_eq!(store.set_if_version(&other, &past, v).await.unwrap(), 0);
    assert!(store.get(&other).await.unwrap().is_none());

    // A touch whose capped expiry is not in the future ends the session (only a row edited
    // by hand has an absolute expiry before its expiry).
    let edited = SessionId::generate();
    store.set(&edited, &session(json!({}))).await.unwrap();
    raw(&path)
        .execute(
            "UPDATE sessions SET absolute_expiry = ?2 WHERE id = ?1",
            rusqlite::params![edited.as_str(), now_millis() - 1],
        )
        .unwrap();
    assert!(
        store
            .touch(&edited, from_millis(now_millis() + 3_600_000))
            .await
            .unwrap()
    );
    assert!(lifetime_columns(&path, &edited).is_none());

    // A hand-edited absolute expiry that is not an integer is a decode error naming it.
    store.set(&edited, &session(json!({}))).await.unwrap();
    raw(&path)
        .execute(
            "UPDATE sessions SET absolute_expiry = 'soon' WHERE id = ?1",
            [edited.as_str()],
        )
        .unwrap();
    let err = store.get(&edited).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}");
    assert_eq!(err.session(), Some(&edited.hint()), "{err}");
}

/// A write over a live session keeps the earlier of the stored and the written absolute
/// expiry (none written keeps the stored one); a new incarnation takes what it carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_writes_keep_the_earlier_absolute_expiry() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let id = SessionId::generate();
    let first = lived(json!({"n": 1}), 60 * MINUTE_MS, Some(30 * MINUTE_MS));
    let kept = first.absolute_expiry_millis();
    store.set(&id, &first).await.unwrap();
    let abs = |s: Option<Session>| s.unwrap().absolute_expiry_millis();
    for written in [Some(50 * MINUTE_MS), None] {
        let s = lived(json!({"n": 2}), 60 * MINUTE_MS, written);
        store.set(&id, &s).await.unwrap();
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.absolute_expiry_millis(), kept);
        assert_eq!(
            Some(got.expires_at_millis()),
            kept,
            "capped by the kept one"
        );
    }
    let v = store.get(&id).await.unwrap().unwrap().version();
    let later = lived(json!({"n": 3}), 60 * MINUTE_MS, Some(55 * MINUTE_MS));
    store.set_if_version(&id, &later, v).await.unwrap();
    assert_eq!(abs(store.get(&id).await.unwrap()), kept);
    // An earlier one lowers it.
    let earlier = lived(json!({"n": 4}), 60 * MINUTE_MS, Some(20 * MINUTE_MS));
    store.set(&id, &earlier).await.unwrap();
    assert_eq!(
        abs(store.get(&id).await.unwrap()),
        earlier.absolute_expiry_millis()
    );
    // `touch` keeps it.
    assert!(
        store
            .touch(&id, from_millis(now_millis() + 5 * MINUTE_MS))
            .await
            .unwrap()
    );
    assert_eq!(
        abs(store.get(&id).await.unwrap()),
        earlier.absolute_expiry_millis()
    );
    // A new incarnation stores what it carries, none too.
    store.destroy(&id).await.unwrap();
    store.set(&id, &session(json!({}))).await.unwrap();
    assert_eq!(abs(store.get(&id).await.unwrap()), None);
    // So does one over an expired row.
    let expired = SessionId::generate();
    store
        .set(&expired, &lived(json!({}), 100, Some(100)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    store
        .set(
            &expired,
            &lived(json!({}), 60 * MINUTE_MS, Some(40 * MINUTE_MS)),
        )
        .await
        .unwrap();
    let got = store.get(&expired).await.unwrap().unwrap();
    assert!(got.absolute_expiry_millis().unwrap() > now_millis() + 30 * MINUTE_MS);
}

/// `rotate`: Taken, Absent and Moved; the old id reads as the snapshot it was, marked
/// rotated, refuses writes, and is not a session for len, scan and sessions_of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_moves_the_session_and_leaves_a_read_only_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let ada = owner("ada");
    let (old, new) = (SessionId::generate(), SessionId::generate());
    let mut s = owned(&ada, json!({"user": "ada"}));
    s.set_absolute_expiry_millis(Some(now_millis() + 2 * 3_600_000));
    let v = store.set(&old, &s).await.unwrap();
    let before = store.get(&old).await.unwrap().unwrap();

    assert_eq!(
        store.rotate(&old, &old, GRACE).await.unwrap(),
        Rotation::Taken
    );
    let missing = SessionId::generate();
    assert_eq!(
        store.rotate(&missing, &new, GRACE).await.unwrap(),
        Rotation::Absent
    );
    let taken = SessionId::generate();
    store.set(&taken, &session(json!({}))).await.unwrap();
    assert_eq!(
        store.rotate(&old, &taken, GRACE).await.unwrap(),
        Rotation::Taken
    );
    assert_eq!(
        store.get(&old).await.unwrap().unwrap().version(),
        v,
        "unchanged"
    );
    assert!(store.get(&new).await.unwrap().is_none());

    let version = moved(&store, &old, &new, GRACE).await;
    assert_eq!(version, next_version(v));
    let got_new = store.get(&new).await.unwrap().unwrap();
    assert_eq!(got_new.data(), before.data());
    assert_eq!(got_new.version(), version);
    assert_eq!(got_new.owner(), Some(&ada));
    assert_eq!(got_new.expires_at_millis(), before.expires_at_millis());
    assert_eq!(
        got_new.absolute_expiry_millis(),
        before.absolute_expiry_millis()
    );
    assert!(!got_new.is_rotated());
    let got_old = store.get(&old).await.unwrap().unwrap();
    assert!(got_old.is_rotated());
    assert_eq!(got_old.data(), before.data());
    assert_eq!(got_old.version(), v);
    assert_eq!(got_old.owner(), Some(&ada));
    assert!(got_old.expires_at_millis() <= now_millis() + 60_000);
    assert_eq!(
        lifetime_columns(&path, &old).unwrap().2.as_deref(),
        Some(new.as_str())
    );

    // The old id is rotated, the new one taken.
    assert_eq!(
        store
            .rotate(&old, &SessionId::generate(), GRACE)
            .await
            .unwrap(),
        Rotation::Absent
    );
    assert_eq!(
        store.rotate(&taken, &old, GRACE).await.unwrap(),
        Rotation::Taken
    );

    // Writes through the old id are refused and change nothing.
    let changed = owned(&ada, json!({"user": "eve"}));
    assert!(is_rotated_error(
        &store.set(&old, &changed).await.unwrap_err()
    ));
    assert!(is_rotated_error(
        &store
            .set(&old, &lived(json!({}), -1, None))
            .await
            .unwrap_err()
    ));
    for expected in [v, 0, version] {
        let err = store
            .set_if_version(&old, &changed, expected)
            .await
            .unwrap_err();
        assert!(is_rotated_error(&err), "{err:?}");
        assert!(err.is_conflict());
    }
    assert!(
        !store
            .touch(&old, from_millis(now_millis() + 3_600_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .touch(&old, from_millis(now_millis() - 1))
            .await
            .unwrap()
    );
    assert!(!store.create(&old, &changed).await.unwrap());
    assert_eq!(
        store.get(&old).await.unwrap().unwrap().data(),
        before.data()
    );

    // A write under the new id is not seen through the old one.
    store.set(&new, &changed).await.unwrap();
    assert_eq!(
        store.get(&old).await.unwrap().unwrap().data(),
        before.data()
    );

    // Not a session: len, scan and sessions_of skip it; destroy_owner does not count it.
    assert_eq!(store.len().await.unwrap(), 2);
    let scanned: Vec<SessionId> = store
        .scan(None, 100)
        .await
        .unwrap()
        .sessions
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(scanned, sorted(vec![new.clone(), taken.clone()]));
    assert_eq!(listed(&store, &ada).await, vec![new.clone()]);
    assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
    assert!(store.get(&old).await.unwrap().is_none());
    assert!(store.get(&new).await.unwrap().is_none());
    assert!(lifetime_columns(&path, &old).is_none(), "deleted too");
}

/// A rotated id resolves to nothing once its grace is over, its new session is destroyed,
/// or that session is rotated again; `destroy` of it ends the new session; a grace of zero
/// ends it at once; `delete_expired` removes it once its grace is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_id_ends_with_its_grace_or_its_new_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let ids = || (SessionId::generate(), SessionId::generate());

    // The grace ends: absent, and writable as over nothing.
    let (old, new) = ids();
    store.set(&old, &session(json!({"n": 1}))).await.unwrap();
    moved(&store, &old, &new, Duration::from_millis(300)).await;
    assert!(store.get(&old).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.get(&old).await.unwrap().is_none());
    assert!(store.get(&new).await.unwrap().is_some());
    assert_eq!(store.delete_expired().await.unwrap(), 1, "the rotated id");
    assert!(lifetime_columns(&path, &old).is_none());
    assert!(store.create(&old, &session(json!({"n": 2}))).await.unwrap());

    // An expired rotated row is written over as over nothing.
    let (old, new) = ids();
    store.set(&old, &session(json!({}))).await.unwrap();
    moved(&store, &old, &new, Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        store
            .set(&old, &session(json!({"again": true})))
            .await
            .unwrap()
            > 0
    );
    let got = store.get(&old).await.unwrap().unwrap();
    assert!(!got.is_rotated());
    assert_eq!(lifetime_columns(&path, &old).unwrap().2, None);

    // The new session is destroyed.
    let (old, new) = ids();
    store.set(&old, &session(json!({}))).await.unwrap();
    moved(&store, &old, &new, GRACE).await;
    store.destroy(&new).await.unwrap();
    assert!(store.get(&old).await.unwrap().is_none());

    // The new session is rotated again.
    let (old, new) = ids();
    let newer = SessionId::generate();
    store.set(&old, &session(json!({}))).await.unwrap();
    let v = moved(&store, &old, &new, GRACE).await;
    assert_eq!(moved(&store, &new, &newer, GRACE).await, next_version(v));
    assert!(store.get(&old).await.unwrap().is_none());
    assert!(store.get(&new).await.unwrap().unwrap().is_rotated());
    assert!(!store.get(&newer).await.unwrap().unwrap().is_rotated());

    // destroy of the old id ends the new session.
    let (old, new) = ids();
    store.set(&old, &session(json!({}))).await.unwrap();
    moved(&store, &old, &new, GRACE).await;
    store.destroy(&old).await.unwrap();
    assert!(store.get(&old).await.unwrap().is_none());
    assert!(store.get(&new).await.unwrap().is_none());

    // A grace of zero: the old row goes at once.
    let (old, new) = ids();
    store.set(&old, &session(json!({}))).await.unwrap();
    moved(&store, &old, &new, Duration::ZERO).await;
    assert!(store.get(&old).await.unwrap().is_none());
    assert!(lifetime_columns(&path, &old).is_none());
    assert!(store.get(&new).await.unwrap().is_some());

    // clear removes rotated rows too.
    let (old, new) = ids();
    store.set(&old, &session(json!({}))).await.unwrap();
    moved(&store, &old, &new, GRACE).await;
    store.clear().await.unwrap();
    let rows: i64 = raw(&path)
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}

/// A compare-and-set through the old id racing `rotate` (from two stores on one file):
/// either the write lands first and is what moved, or it fails as rotated. Never both, never
/// a lost write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_set_racing_rotate_lands_before_it_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    let (mut before, mut after) = (0, 0);
    for round in 0..40 {
        let (old, new) = (SessionId::generate(), SessionId::generate());
        let v = a
            .set(&old, &session(json!({"round": round})))
            .await
            .unwrap();
        let written = session(json!({"round": round, "written": true}));
        let (cas, rotation) = tokio::join!(
            a.set_if_version(&old, &written, v),
            b.rotate(&old, &new, GRACE)
        );
        let Rotation::Moved { version } = rotation.unwrap() else {
            panic!("the rotation must move the session");
        };
        let got = a.get(&new).await.unwrap().unwrap();
        match cas {
            Ok(v2) => {
                before += 1;
                assert_eq!(v2, next_version(v));
                assert_eq!(version, next_version(v2));
                assert_eq!(got.data(), written.data(), "the write moved");
            }
            Err(err) => {
                after += 1;
                assert!(is_rotated_error(&err), "{err:?}");
                assert_eq!(version, next_version(v));
                assert_eq!(got.get::<bool>("written").unwrap(), None);
            }
        }
        let through_old = a.get(&old).await.unwrap().unwrap();
        assert_eq!(through_old.data(), got.data());
    }
    assert_eq!(before + after, 40);
}

/// A version 2 table (owners, no lifetimes) is upgraded when a store opens it: the two
/// columns are added, its sessions are kept with no absolute expiry and none of them is a
/// rotated id, and they can be rotated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_table_gets_the_lifetime_columns_and_keeps_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    let id = SessionId::generate();
    let ada = owner("ada");
    let expires_at = now_millis() + 3_600_000;
    {
        let db = raw(&path);
        db.execute_batch(&format!(
            "CREATE TABLE {SCHEMA_TABLE} (table_name TEXT PRIMARY KEY NOT NULL, \
                 version INTEGER NOT NULL); \
             INSERT INTO {SCHEMA_TABLE} VALUES ('sessions', 2); \
             CREATE TABLE \"sessions\" (id TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, \
                 expires_at INTEGER NOT NULL, version INTEGER NOT NULL, owner TEXT NULL); \
             CREATE INDEX \"sessions_expires_at\" ON \"sessions\" (expires_at); \
             CREATE INDEX \"sessions_owner\" ON \"sessions\" (owner) WHERE owner IS NOT NULL;"
        ))
        .unwrap();
        db.execute(
            "INSERT INTO sessions VALUES (?1, '{\"user\":\"ada\"}', ?2, 7, ?3)",
            rusqlite::params![id.as_str(), expires_at, ada.as_str()],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let got = store.get(&id).await.unwrap().expect("kept");
    assert_eq!((got.version(), got.expires_at_millis()), (7, expires_at));
    assert_eq!(got.owner(), Some(&ada));
    assert_eq!(got.absolute_expiry_millis(), None);
    assert!(!got.is_rotated());
    let db = raw(&path);
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('sessions')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(
        columns.iter().any(|c| c == "absolute_expiry"),
        "{columns:?}"
    );
    assert!(columns.iter().any(|c| c == "moved_to"), "{columns:?}");
    let version: i64 = db
        .query_row(
            &format!("SELECT version FROM {SCHEMA_TABLE} WHERE table_name = 'sessions'"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(listed(&store, &ada).await, vec![id.clone()]);
    let new = SessionId::generate();
    assert_eq!(moved(&store, &id, &new, GRACE).await, 8);
    assert!(store.get(&id).await.unwrap().unwrap().is_rotated());
    drop(store);
    // Opening it again changes nothing.
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.get(&id).await.unwrap().unwrap().is_rotated());
    assert_eq!(store.get(&new).await.unwrap().unwrap().version(), 8);
}

/// The lifetime checks of the conformance suite, on file-backed stores (one table each in
/// one file) used directly, without a wrapper.
#[cfg(feature = "conformance")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifetime_conformance_checks_pass_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lifetimes.db");
    let names: Vec<&str> = session_stores::conformance::check_names()
        .filter(|name| {
            [
                "absolute",
                "rotate",
                "rotated",
                "later_writes_keep",
                "a_session_ends",
            ]
            .iter()
            .any(|part| name.contains(part))
        })
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let path = path.clone();
        session_stores::conformance::run_check(name, move || {
            let path = path.clone();
            async move {
                SqliteStore::builder()
                    .table(crate::support::unique_name("lifetimes_"))
                    .open(path)
                    .await
                    .unwrap()
            }
        })
        .await
        .unwrap_or_else(|failure| panic!("{failure:?}"));
    }
}
