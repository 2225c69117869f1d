//! Tests specific to [`PostgresStore`], against a real server: the schema it creates,
//! concurrent migrations, the batch bound of `delete_expired`, corrupt rows, data Postgres
//! cannot store, and typed transient errors (not hangs) when the server is unreachable.
//!
//! Reads `SESSION_STORES_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! skips with a notice when no server is reachable, and fails in CI. Each test works in a
//! schema of its own, dropped at the end.
#![cfg(feature = "postgres")]

use crate::support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use session_stores::stores::postgres::{
    DEFAULT_TABLE, MAX_EXPIRY_MILLIS, PING_IF_IDLE_FOR, PostgresStore, PostgresStoreBuilder,
};
use session_stores::{
    Error, ErrorKind, FRESH_VERSION_SPAN, MAX_VERSION, Owner, Rotation, ScanCursor, Session,
    SessionId, SessionStore,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};

const VAR: &str = "SESSION_STORES_POSTGRES_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const HOUR: Duration = Duration::from_secs(3600);
/// A hang guard, far above any expected duration; not a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A pool to the test server and a fresh schema name, or `None` (skip) without a server.
async fn server() -> Option<(PgPool, String)> {
    let url = support::service_url(VAR, DEFAULT_URL, 5432)?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .expect("connect to the test server");
    Some((pool, support::unique_name("sst_pg_")))
}

async fn drop_schema(pool: &PgPool, schema: &str) {
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(pool)
    .await
    .expect("drop the test schema");
}

/// Runs `test` with a pool and a fresh schema name, then drops the schema.
async fn with_schema<F, Fut>(test: F)
where
    F: FnOnce(PgPool, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some((pool, schema)) = server().await else {
        return;
    };
    test(pool.clone(), schema.clone()).await;
    drop_schema(&pool, &schema).await;
}

fn builder(schema: &str) -> PostgresStoreBuilder {
    PostgresStore::builder().schema(schema).table("sessions")
}

async fn migrated(pool: &PgPool, schema: &str) -> PostgresStore {
    let store = builder(schema).build(pool.clone()).expect("valid names");
    store.migrate().await.expect("migrate");
    store
}

async fn exec(pool: &PgPool, sql: String) {
    sqlx::query(AssertSqlSafe(sql))
        .execute(pool)
        .await
        .expect("test SQL");
}

fn session(data: serde_json::Value) -> Session {
    let mut session = Session::new(HOUR);
    if let serde_json::Value::Object(map) = data {
        session.replace_data(map);
    }
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_documented_schema_and_is_idempotent() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        store.migrate().await.expect("a second migrate is a no-op");
        let columns: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text, is_nullable::text \
             FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'sessions' \
             ORDER BY ordinal_position",
        )
        .bind(&schema)
        .fetch_all(&pool)
        .await
        .unwrap();
        let columns: Vec<(&str, &str, &str)> = columns
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("id", "text", "NO"),
                ("data", "jsonb", "NO"),
                ("expires_at", "timestamp with time zone", "NO"),
                ("version", "bigint", "NO"),
                ("owner", "text", "YES"),
                ("absolute_expiry", "timestamp with time zone", "YES"),
                ("moved_to", "text", "YES"),
            ]
        );
        let primary_key: String = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = '\"{schema}\".sessions'::regclass AND i.indisprimary"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(primary_key, "id");
        let index: String = sqlx::query_scalar(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 \
             AND indexname = 'sessions_expires_at_idx'",
        )
        .bind(&schema)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(index.contains("(expires_at)"), "{index}");
        let index: String = sqlx::query_scalar(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 \
             AND indexname = 'sessions_owner_idx'",
        )
        .bind(&schema)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            index.contains("(owner) WHERE (owner IS NOT NULL)"),
            "{index}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_all_succeed() {
    with_schema(|pool, schema| async move {
        // Eight instances of one app start at once (same schema and table), with eight more
        // migrating other tables of the same new schema at the same time.
        let mut tasks = Vec::new();
        for i in 0..16 {
            let table = if i % 2 == 0 {
                "sessions".to_string()
            } else {
                format!("other_{i}")
            };
            let store = PostgresStore::builder()
                .schema(schema.as_str())
                .table(table)
                .build(pool.clone())
                .unwrap();
            tasks.push(tokio::spawn(async move { store.migrate().await }));
        }
        for task in tasks {
            tokio::time::timeout(HANG_GUARD, task)
                .await
                .expect("migrate hung")
                .expect("task panicked")
                .expect("a concurrent migrate failed");
        }
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
        )
        .bind(&schema)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(tables, 9);
        let store = builder(&schema).build(pool.clone()).unwrap();
        let id = SessionId::generate();
        let version = store.set(&id, &session(json!({"a": 1}))).await.unwrap();
        assert_eq!(store.get(&id).await.unwrap().unwrap().version(), version);
    })
    .await;
}

/// Inserts `n` rows that expired an hour ago, straight into the table.
async fn insert_expired(pool: &PgPool, schema: &str, n: usize) {
    exec(
        pool,
        format!(
            "INSERT INTO \"{schema}\".sessions (id, data, expires_at, version) \
             SELECT 'expired-' || g, '{{}}', now() - interval '1 hour', 1 \
             FROM generate_series(1, {n}) AS g"
        ),
    )
    .await;
}

async fn row_count(pool: &PgPool, schema: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{schema}\".sessions"
    )))
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_expired_works_in_bounded_batches() {
    with_schema(|pool, schema| async move {
        let store = builder(&schema)
            .delete_batch_size(3)
            .build(pool.clone())
            .unwrap();
        store.migrate().await.unwrap();
        assert_eq!(store.delete_batch_size(), 3);
        insert_expired(&pool, &schema, 10).await;
        let live = SessionId::generate();
        store
            .set(&live, &session(json!({"live": true})))
            .await
            .unwrap();

        // One batch never removes more than the batch size.
        assert_eq!(store.delete_expired_batch().await.unwrap(), 3);
        assert_eq!(row_count(&pool, &schema).await, 8);
        assert_eq!(store.delete_expired_batch().await.unwrap(), 3);
        assert_eq!(row_count(&pool, &schema).await, 5);

        // delete_expired runs batches until the backlog is gone, and counts them all.
        assert_eq!(store.delete_expired().await.unwrap(), 4);
        assert_eq!(row_count(&pool, &schema).await, 1);
        assert_eq!(store.delete_expired_batch().await.unwrap(), 0);
        assert!(store.get(&live).await.unwrap().is_some());

        // A backlog that is an exact multiple of the batch size is removed completely too.
        insert_expired(&pool, &schema, 6).await;
        assert_eq!(store.delete_expired().await.unwrap(), 6);
        assert_eq!(row_count(&pool, &schema).await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_decode_errors_for_that_session() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        // (data, version, the version a `set` over the row gives: `None` for a fresh one)
        let cases = [
            ("'[1, 2]'", "1", Some(2)),   // data is not an object
            ("'\"text\"'", "7", Some(8)), // data is a string
            ("'{\"a\": 1}'", "-5", None), // negative version
            ("'{\"a\": 1}'", "0", None),  // version 0 is never stored
        ];
        for (data, version, next) in cases {
            let id =
                SessionId::new(format!("corrupt-session-id-{version}-{}", data.len())).unwrap();
            exec(
                &pool,
                format!(
                    "INSERT INTO \"{schema}\".sessions (id, data, expires_at, version) \
                     VALUES ('{id}', {data}, now() + interval '1 hour', {version})"
                ),
            )
            .await;
            let err = store.get(&id).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode, "{data} v{version}: {err:?}");
            assert!(!err.is_transient());
            assert_eq!(err.session(), Some(&id.hint()));
            assert!(std::error::Error::source(&err).is_some());
            assert!(!err.to_string().contains(id.as_str()), "{err}");
            // The row is left as it is, and a later set replaces it.
            assert_eq!(store.get(&id).await.unwrap_err().kind(), ErrorKind::Decode);
            let fresh = session(json!({"fixed": true}));
            let version = store.set(&id, &fresh).await.unwrap();
            match next {
                Some(next) => assert_eq!(version, next, "v{version}"),
                None => assert!(
                    (1..=FRESH_VERSION_SPAN).contains(&version),
                    "v{version}: {version} is not fresh"
                ),
            }
            let got = store.get(&id).await.unwrap().unwrap();
            assert_eq!(got.data(), fresh.data());
            assert_eq!(got.version(), version);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_postgres_cannot_store_is_an_encode_error_and_keeps_the_old_session() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let id = SessionId::generate();
        let old = session(json!({"user": "ada"}));
        let v0 = store.set(&id, &old).await.unwrap();
        let bad = session(json!({"user": "nul \u{0} inside"}));

        let err = store.set(&id, &bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Encode, "{err:?}");
        assert_eq!(err.session(), Some(&id.hint()));
        let err = store.set_if_version(&id, &bad, v0).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Encode, "{err:?}");
        let other = SessionId::generate();
        let err = store.create(&other, &bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Encode, "{err:?}");

        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.data(), old.data());
        assert_eq!(got.version(), v0);
        assert!(store.get(&other).await.unwrap().is_none());
    })
    .await;
}

/// Sets the version of the row of `id` by hand.
async fn set_version(pool: &PgPool, schema: &str, id: &SessionId, version: u64) {
    let done = sqlx::query(AssertSqlSafe(format!(
        "UPDATE \"{schema}\".sessions SET version = $2 WHERE id = $1"
    )))
    .bind(id.as_str())
    .bind(i64::try_from(version).unwrap())
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);
}

/// A row at [`MAX_VERSION`] advances to a fresh version (at most [`FRESH_VERSION_SPAN`]) on
/// `set` and on `set_if_version(MAX_VERSION)`; so does a row above it (only a hand-edited
/// row can be), up to `i64::MAX`, without overflowing the `bigint`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_version_advances_to_a_fresh_one() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let id = SessionId::generate();
        store.set(&id, &session(json!({"n": 1}))).await.unwrap();
        for top in [MAX_VERSION, i64::MAX as u64] {
            set_version(&pool, &schema, &id, top).await;
            assert_eq!(store.get(&id).await.unwrap().unwrap().version(), top);
            let fresh = store.set(&id, &session(json!({"n": 2}))).await.unwrap();
            assert!(
                (1..=FRESH_VERSION_SPAN).contains(&fresh),
                "set on {top} gave {fresh}"
            );
            assert_eq!(store.get(&id).await.unwrap().unwrap().version(), fresh);

            set_version(&pool, &schema, &id, top).await;
            let fresh = store
                .set_if_version(&id, &session(json!({"n": 3})), top)
                .await
                .unwrap();
            assert!(
                (1..=FRESH_VERSION_SPAN).contains(&fresh),
                "set_if_version on {top} gave {fresh}"
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
    })
    .await;
}

/// A session at version 1 (set by hand), destroyed and created again, starts a new
/// incarnation at a fresh version: neither 1 again nor 2 (each with a chance of 2^-48).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_incarnation_does_not_restart_at_1() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let id = SessionId::generate();
        store.set(&id, &session(json!({"n": 1}))).await.unwrap();
        set_version(&pool, &schema, &id, 1).await;
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
        // And set_if_version(.., 0) over an absent session starts a fresh one too.
        let other = SessionId::generate();
        let version = store
            .set_if_version(&other, &session(json!({})), 0)
            .await
            .unwrap();
        assert!((1..=FRESH_VERSION_SPAN).contains(&version), "{version}");
        assert_eq!(store.get(&other).await.unwrap().unwrap().version(), version);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_queryable_jsonb_and_expiry_is_an_exact_timestamptz() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let id = SessionId::generate();
        let mut s = session(json!({"user_id": 42, "roles": ["admin"]}));
        // 2033-05-18T03:33:20.123Z
        s.set_expires_at_millis(2_000_000_000_123);
        store.set(&id, &s).await.unwrap();
        let (user, expires): (String, String) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT data->>'user_id', to_char(expires_at AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM \"{schema}\".sessions \
             WHERE data->'roles' ? 'admin'"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(user, "42");
        assert_eq!(expires, "2033-05-18T03:33:20.123000");
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.expires_at_millis(), 2_000_000_000_123);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_zone_of_the_connection_does_not_matter() {
    with_schema(|pool, schema| async move {
        migrated(&pool, &schema).await;
        // An application pool whose connections use another time zone (sqlx itself asks
        // for UTC at connect time, so set it afterwards).
        let url = support::service_url(VAR, DEFAULT_URL, 5432).unwrap();
        let tokyo = PgPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET TimeZone = 'Asia/Tokyo'")
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect(&url)
            .await
            .unwrap();
        let store = builder(&schema).build(tokyo).unwrap();
        let zone: String = sqlx::query_scalar("SHOW TimeZone")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(zone, "Asia/Tokyo");
        let utc = builder(&schema).build(pool.clone()).unwrap();
        let id = SessionId::generate();
        let mut s = session(json!({}));
        s.set_expires_at_millis(2_000_000_000_123);
        store.set(&id, &s).await.unwrap();
        assert_eq!(
            utc.get(&id).await.unwrap().unwrap().expires_at_millis(),
            2_000_000_000_123
        );
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().expires_at_millis(),
            2_000_000_000_123
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_future_expiries_are_clamped_and_infinity_reads_as_never() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let id = SessionId::generate();
        let mut forever = session(json!({}));
        forever.expire_in(Duration::MAX);
        store.set(&id, &forever).await.unwrap();
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.expires_at_millis(), MAX_EXPIRY_MILLIS);
        assert!(
            store
                .touch(&id, SystemTime::now() + Duration::from_secs(u64::MAX / 4))
                .await
                .unwrap()
        );

        exec(
            &pool,
            format!("UPDATE \"{schema}\".sessions SET expires_at = 'infinity'"),
        )
        .await;
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.expires_at_millis(), i64::MAX);
        assert_eq!(store.len().await.unwrap(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_removes_only_this_stores_table() {
    with_schema(|pool, schema| async move {
        let mine = migrated(&pool, &schema).await;
        let theirs = PostgresStore::builder()
            .schema(schema.as_str())
            .table("other_sessions")
            .build(pool.clone())
            .unwrap();
        theirs.migrate().await.unwrap();
        let id = SessionId::generate();
        mine.set(&id, &session(json!({"m": 1}))).await.unwrap();
        theirs.set(&id, &session(json!({"t": 1}))).await.unwrap();
        mine.clear().await.unwrap();
        assert!(mine.get(&id).await.unwrap().is_none());
        assert_eq!(
            theirs.get(&id).await.unwrap().unwrap().data()["t"],
            json!(1)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_pool_shares_the_applications_pool_with_default_names() {
    let Some((pool, _)) = server().await else {
        return;
    };
    let store = PostgresStore::from_pool(pool.clone());
    assert_eq!(store.table(), DEFAULT_TABLE);
    assert_eq!(store.schema(), None);
    // The very same pool, not a copy: closing one closes the other.
    let shared = store.pool().clone();
    assert!(!pool.is_closed());
    shared.close().await;
    assert!(pool.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_and_urls_are_config_errors() {
    for (schema, table) in [
        (None, "bad-name"),
        (None, "1table"),
        (None, "t\"; DROP TABLE users; --"),
        (None, ""),
        (Some("sch ema"), "sessions"),
        (Some(""), "sessions"),
        (
            None,
            "a_table_name_that_is_far_too_long_for_the_index_name_x",
        ),
    ] {
        let mut builder = PostgresStore::builder().table(table);
        if let Some(schema) = schema {
            builder = builder.schema(schema);
        }
        let err = builder
            .connect_lazy("postgres://postgres@127.0.0.1:5432/test")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{schema:?} {table:?}");
        assert!(!err.is_transient());
    }
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:notaport/test")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn constructing_outside_a_runtime_is_a_config_error_not_a_panic() {
    let err = PostgresStore::builder()
        .connect_lazy("postgres://postgres@127.0.0.1:5432/test")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

/// A local port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn assert_transient(err: &Error, op: &str, id: Option<&SessionId>) {
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().starts_with(op), "{err}");
    assert_eq!(err.session(), id.map(SessionId::hint).as_ref());
    assert!(std::error::Error::source(err).is_some(), "{err:?}");
    if let Error::Timeout { what, .. } = err {
        assert_eq!(*what, "a pooled connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_gives_a_typed_transient_error_not_a_hang() {
    let url = format!("postgres://postgres@127.0.0.1:{}/test", closed_port());
    let builder = PostgresStore::builder().acquire_timeout(Duration::from_millis(300));

    let err = tokio::time::timeout(HANG_GUARD, builder.clone().connect(&url))
        .await
        .expect("connect hung")
        .unwrap_err();
    assert_transient(&err, "connect", None);
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");

    let store = builder.connect_lazy(&url).unwrap();
    let id = SessionId::generate();
    let err = tokio::time::timeout(HANG_GUARD, store.get(&id))
        .await
        .expect("get hung")
        .unwrap_err();
    assert_transient(&err, "get", Some(&id));
    let err = tokio::time::timeout(HANG_GUARD, store.set(&id, &session(json!({"a": 1}))))
        .await
        .expect("set hung")
        .unwrap_err();
    assert_transient(&err, "set", Some(&id));
    let err = tokio::time::timeout(HANG_GUARD, store.migrate())
        .await
        .expect("migrate hung")
        .unwrap_err();
    assert_transient(&err, "migrate", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_gives_a_timeout_not_a_hang() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    let accept = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            keep.lock().await.push(socket);
        }
    });
    let store = PostgresStore::builder()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/test"))
        .unwrap();
    let id = SessionId::generate();
    let err = tokio::time::timeout(HANG_GUARD, store.touch(&id, SystemTime::now() + HOUR))
        .await
        .expect("touch hung")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert_transient(&err, "touch", Some(&id));
    accept.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pool_is_unavailable() {
    let Some((pool, _)) = server().await else {
        return;
    };
    let store = PostgresStore::from_pool(pool.clone());
    pool.close().await;
    let id = SessionId::generate();
    let err = store.get(&id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert_transient(&err, "get", Some(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_the_database_is_not_transient() {
    let Some(url) = support::service_url(VAR, DEFAULT_URL, 5432) else {
        return;
    };
    // Same server, a database that does not exist.
    let without_query = url.split('?').next().unwrap();
    let (base, _) = without_query.rsplit_once('/').unwrap();
    let missing = format!("{base}/{}", support::unique_name("no_such_db_"));
    let err = tokio::time::timeout(
        HANG_GUARD,
        PostgresStore::builder()
            .acquire_timeout(Duration::from_secs(10))
            .connect(&missing),
    )
    .await
    .expect("connect hung")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_is_a_backend_error_naming_the_session() {
    with_schema(|pool, schema| async move {
        // Not migrated.
        let store = builder(&schema).build(pool.clone()).unwrap();
        let id = SessionId::generate();
        let err = store.get(&id).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend, "{err:?}");
        assert_eq!(err.session(), Some(&id.hint()));
        let source = std::error::Error::source(&err).unwrap();
        let sqlx_err = source
            .downcast_ref::<sqlx::Error>()
            .expect("the sqlx error");
        let code = sqlx_err.as_database_error().and_then(|db| db.code());
        assert_eq!(code.as_deref(), Some("42P01"));
    })
    .await;
}

/// A statement stopped by `statement_timeout` is a transient timeout, and the session is
/// left as it was: here the row is locked by another transaction, so the store's `set`
/// waits until Postgres cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_is_a_transient_timeout_and_writes_nothing() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let id = SessionId::generate();
        store.set(&id, &session(json!({"n": 1}))).await.unwrap();

        let url = std::env::var(VAR).unwrap_or_else(|_| DEFAULT_URL.to_string());
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let short = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.options([("statement_timeout", "200")]))
            .await
            .unwrap();
        let impatient = builder(&schema).build(short).expect("valid names");

        let mut locker = pool.begin().await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "SELECT 1 FROM \"{schema}\".sessions WHERE id = $1 FOR UPDATE"
        )))
        .bind(id.as_str())
        .execute(&mut *locker)
        .await
        .unwrap();
        let err = tokio::time::timeout(HANG_GUARD, impatient.set(&id, &session(json!({"n": 2}))))
            .await
            .expect("no hang")
            .unwrap_err();
        locker.rollback().await.unwrap();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
        assert!(err.is_transient());
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.get::<u64>("n").unwrap(), Some(1));
    })
    .await;
}

/// `url` with its user replaced by `user` (no password: the test server trusts loopback).
fn url_as(user: &str) -> String {
    let url = support::service_url(VAR, DEFAULT_URL, 5432).expect("a server");
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

async fn drop_role(pool: &PgPool, role: &str) {
    exec(pool, format!("DROP OWNED BY \"{role}\" CASCADE")).await;
    exec(pool, format!("DROP ROLE IF EXISTS \"{role}\"")).await;
}

/// A role with only SELECT, INSERT, UPDATE and DELETE on an existing session table (no CREATE
/// on the schema, not the table's owner: what PG 15 gives an application role by default)
/// starts through `connect(url)`, whose migration looks at the catalog before any DDL, and
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_or_ownership_can_start_and_work() {
    with_schema(|pool, schema| async move {
        let role = support::unique_name("sst_app_");
        exec(&pool, format!("CREATE ROLE \"{role}\" LOGIN")).await;
        migrated(&pool, &schema).await;
        exec(
            &pool,
            format!("GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\""),
        )
        .await;
        exec(
            &pool,
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON \"{schema}\".sessions TO \"{role}\""),
        )
        .await;
        let url = format!("{}?schema={schema}&table=sessions", url_as(&role));
        let result = session_stores::connect(&url).await;
        let store = match result {
            Ok(store) => store,
            Err(err) => {
                drop_role(&pool, &role).await;
                panic!("a role with DML rights only could not start: {err}");
            }
        };
        let id = SessionId::generate();
        let v = store
            .set(&id, &session(json!({"role": "app"})))
            .await
            .unwrap();
        assert_eq!(store.get(&id).await.unwrap().unwrap().version(), v);
        store.destroy(&id).await.unwrap();
        drop(store);
        drop_role(&pool, &role).await;
    })
    .await;
}

/// A role whose default isolation is `serializable`: the store pins its own connections to
/// `read committed`, so the whole conformance suite passes; on the application's own pool
/// (left at `serializable`), concurrent compare-and-set increments give conflicts, never
/// `Unavailable`, and lose nothing.
#[cfg(feature = "conformance")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serializable_default_isolation_still_gives_conflicts_not_errors() {
    with_schema(|pool, schema| async move {
        let role = support::unique_name("sst_ser_");
        exec(&pool, format!("CREATE ROLE \"{role}\" LOGIN")).await;
        exec(
            &pool,
            format!("ALTER ROLE \"{role}\" SET default_transaction_isolation = 'serializable'"),
        )
        .await;
        exec(
            &pool,
            format!("CREATE SCHEMA \"{schema}\" AUTHORIZATION \"{role}\""),
        )
        .await;
        let url = url_as(&role);
        let own_pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .unwrap();
        let level: String = sqlx::query_scalar("SHOW transaction_isolation")
            .fetch_one(&own_pool)
            .await
            .unwrap();
        assert_eq!(level, "serializable", "the role's default did not apply");

        let (suite_url, suite_schema) = (url.clone(), schema.clone());
        let suite = session_stores::conformance::run(move || {
            let (url, schema) = (suite_url.clone(), suite_schema.clone());
            async move {
                let store = PostgresStore::builder()
                    .schema(schema)
                    .table(support::unique_name("t_"))
                    .connect(&url)
                    .await
                    .expect("connect as the serializable role");
                store.migrate().await.expect("migrate");
                store
            }
        })
        .await;

        let shared = PostgresStore::builder()
            .schema(&schema)
            .table("own_pool")
            .build(own_pool.clone())
            .unwrap();
        shared.migrate().await.unwrap();
        let own = Arc::new(shared);
        let checks = [
            "set_if_version_concurrent_increments_lose_nothing",
            "set_racing_set_if_version_hands_out_each_version_once",
            "concurrent_sets_leave_one_whole_value",
            "create_concurrent_exactly_one_wins",
        ];
        let mut own_failures = Vec::new();
        for check in checks {
            let own = Arc::clone(&own);
            if let Err(failure) = session_stores::conformance::run_check(check, move || {
                let own = Arc::clone(&own);
                async move { own }
            })
            .await
            {
                own_failures.push(failure.to_string());
            }
        }
        own_pool.close().await;
        drop(own);
        drop_role(&pool, &role).await;
        if let Err(failures) = suite {
            panic!("the suite failed as a serializable role: {failures}");
        }
        assert!(own_failures.is_empty(), "{own_failures:#?}");
    })
    .await;
}

/// "Now" is read once the connection is in hand: after a long wait for the pool's only
/// connection, a session that expired meanwhile is not returned, touched or written over as
/// if live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_expires_while_waiting_for_a_connection_is_not_revived() {
    with_schema(|pool, schema| async move {
        migrated(&pool, &schema).await;
        let url = support::service_url(VAR, DEFAULT_URL, 5432).unwrap();
        let store = builder(&schema)
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let id = SessionId::generate();
        let mut short = session(json!({"n": 1}));
        short.set_expires_at_millis(session_stores::now_millis() + 300);
        let v = store.set(&id, &short).await.unwrap();
        let held = store.pool().acquire().await.unwrap();
        let (get, touch, cas) = {
            let (a, b, c) = (store.clone(), store.clone(), store.clone());
            let (ia, ib, ic) = (id.clone(), id.clone(), id.clone());
            (
                tokio::spawn(async move { a.get(&ia).await }),
                tokio::spawn(async move { b.touch(&ib, SystemTime::now() + HOUR).await }),
                tokio::spawn(
                    async move { c.set_if_version(&ic, &session(json!({"n": 2})), v).await },
                ),
            )
        };
        tokio::time::sleep(Duration::from_millis(600)).await;
        drop(held);
        assert!(
            get.await.unwrap().unwrap().is_none(),
            "get returned an expired session"
        );
        assert!(
            !touch.await.unwrap().unwrap(),
            "touch revived an expired session"
        );
        match cas.await.unwrap() {
            Err(err) if err.is_conflict() => {}
            other => panic!("set_if_version over an expired session gave {other:?}"),
        }
        assert!(store.get(&id).await.unwrap().is_none());
    })
    .await;
}

/// A row locked by a stuck transaction makes a write fail with `Timeout` after the
/// operation timeout, not wait for the lock forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_lock_held_by_a_stuck_transaction_gives_a_timeout() {
    let _alone = support::measures_time().await;
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let id = SessionId::generate();
        store.set(&id, &session(json!({}))).await.unwrap();
        let mut stuck = pool.begin().await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "SELECT 1 FROM \"{schema}\".sessions WHERE id = $1 FOR UPDATE"
        )))
        .bind(id.as_str())
        .execute(&mut *stuck)
        .await
        .unwrap();
        let bounded = builder(&schema)
            .operation_timeout(Duration::from_millis(400))
            .build(pool.clone())
            .unwrap();
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(HANG_GUARD, bounded.set(&id, &session(json!({"n": 2}))))
            .await
            .expect("set hung on a locked row");
        let waited = started.elapsed();
        stuck.rollback().await.unwrap();
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
        assert_eq!(err.session(), Some(&id.hint()));
        assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    })
    .await;
}

/// The store's own pool skips sqlx's ping on every checkout, but still pings a connection
/// that sat idle for `PING_IF_IDLE_FOR`: a connection the server dropped while the pool was
/// quiet is replaced, and the next operation succeeds instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_while_idle_is_replaced_not_failed() {
    with_schema(|admin, schema| async move {
        let url = support::service_url(VAR, DEFAULT_URL, 5432).expect("a server");
        let app = support::unique_name("sst_idle_");
        let separator = if url.contains('?') { '&' } else { '?' };
        let store = builder(&schema)
            .max_connections(1)
            .connect(&format!("{url}{separator}application_name={app}"))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        let id = SessionId::generate();
        store.set(&id, &session(json!({"n": 1}))).await.unwrap();
        for round in 0..3 {
            let killed: Vec<(bool,)> = sqlx::query_as(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(&app)
            .fetch_all(&admin)
            .await
            .unwrap();
            assert_eq!(killed.len(), 1, "round {round}: the store's one connection");
            tokio::time::sleep(PING_IF_IDLE_FOR + Duration::from_millis(300)).await;
            let got = tokio::time::timeout(HANG_GUARD, store.get(&id)).await.unwrap();
            assert!(got.unwrap().is_some(), "round {round}");
        }
    })
    .await;
}

fn owner(name: &str) -> Owner {
    Owner::new(format!("{name}-{}", SessionId::generate())).unwrap()
}

fn owned(owner: &Owner, data: serde_json::Value) -> Session {
    session(data).with_owner(Some(owner.clone()))
}

/// The ids `sessions_of` lists, sorted.
async fn listed(store: &PostgresStore, owner: &Owner) -> Vec<SessionId> {
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

async fn owner_column(pool: &PgPool, schema: &str, id: &SessionId) -> Option<String> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT owner FROM \"{schema}\".sessions WHERE id = $1"
    )))
    .bind(id.as_str())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every write stores the owner (NULL for none), `get` returns it, `touch` keeps it, and an
/// identical write under another owner is a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_are_stored_by_every_write_and_kept_by_touch() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        assert!(store.capabilities().owners);
        let (ada, bob) = (owner("ada"), owner("bob"));
        let id = SessionId::generate();
        let s = owned(&ada, json!({"k": 1}));
        assert!(store.create(&id, &s).await.unwrap());
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.owner(), Some(&ada));
        assert_eq!(
            owner_column(&pool, &schema, &id).await.as_deref(),
            Some(ada.as_str())
        );

        let v = store
            .set(&id, &s.clone().with_owner(Some(bob.clone())))
            .await
            .unwrap();
        assert_eq!(got.version() + 1, v);
        assert_eq!(store.get(&id).await.unwrap().unwrap().owner(), Some(&bob));
        assert!(listed(&store, &ada).await.is_empty());
        assert_eq!(listed(&store, &bob).await, vec![id.clone()]);

        assert!(
            store
                .touch(&id, SystemTime::now() + 2 * HOUR)
                .await
                .unwrap()
        );
        assert_eq!(store.get(&id).await.unwrap().unwrap().owner(), Some(&bob));

        let v = store.set_if_version(&id, &s, v).await.unwrap();
        assert_eq!(store.get(&id).await.unwrap().unwrap().owner(), Some(&ada));
        store
            .set_if_version(&id, &s.clone().with_owner(None), v)
            .await
            .unwrap();
        assert_eq!(store.get(&id).await.unwrap().unwrap().owner(), None);
        assert_eq!(owner_column(&pool, &schema, &id).await, None);
        assert!(listed(&store, &ada).await.is_empty());

        let other = SessionId::generate();
        store.set_if_version(&other, &s, 0).await.unwrap();
        let third = SessionId::generate();
        store.set(&third, &s).await.unwrap();
        assert_eq!(listed(&store, &ada).await, sorted(vec![other, third]));
    })
    .await;
}

/// Listings hold exactly the live sessions of the owner, with their expiry, version and (if
/// asked) data; `destroy_owner` ends all but the kept one and counts only live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_and_destroy_owner() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let (ada, bob) = (owner("ada"), owner("bob"));
        let ids: Vec<SessionId> = (0..5).map(|_| SessionId::generate()).collect();
        let mut versions = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            versions.push(
                store
                    .set(id, &owned(&ada, json!({ "n": n })))
                    .await
                    .unwrap(),
            );
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
        let without = store.sessions_of(&ada, false).await.unwrap();
        assert!(without.iter().all(|e| e.data.is_none()));

        store.destroy(&ids[0]).await.unwrap();
        store
            .touch(&ids[1], SystemTime::now() - HOUR)
            .await
            .unwrap();
        exec(
            &pool,
            format!(
                "UPDATE \"{schema}\".sessions SET expires_at = now() - interval '1 second' \
                 WHERE id = '{}'",
                ids[2]
            ),
        )
        .await;
        store.set(&ids[3], &owned(&bob, json!({}))).await.unwrap();
        assert_eq!(listed(&store, &ada).await, vec![ids[4].clone()]);

        // The expired row of ada's goes too but is not counted.
        assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
        assert!(store.get(&ids[4]).await.unwrap().is_none());
        let left: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{schema}\".sessions WHERE owner = $1"
        )))
        .bind(ada.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(left, 0);
        assert_eq!(
            listed(&store, &bob).await,
            sorted(vec![bobs.clone(), ids[3].clone()])
        );
        assert!(store.get(&unowned).await.unwrap().is_some());
        assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 0);

        assert_eq!(store.destroy_owner(&bob, Some(&bobs)).await.unwrap(), 1);
        assert_eq!(listed(&store, &bob).await, vec![bobs.clone()]);
        store.set(&ids[0], &owned(&bob, json!({}))).await.unwrap();
        assert_eq!(store.destroy_owner(&bob, Some(&unowned)).await.unwrap(), 2);
        assert!(listed(&store, &bob).await.is_empty());
        assert!(store.get(&unowned).await.unwrap().is_some());

        // Errors name the operation.
        let url = support::service_url(VAR, DEFAULT_URL, 5432).expect("a server");
        let own_pool = PgPoolOptions::new().connect_lazy(&url).unwrap();
        own_pool.close().await;
        let closed = builder(&schema).build(own_pool).unwrap();
        let err = closed.sessions_of(&ada, true).await.unwrap_err();
        assert!(err.to_string().contains("sessions_of"), "{err}");
        let err = closed.destroy_owner(&ada, None).await.unwrap_err();
        assert!(err.to_string().contains("destroy_owner"), "{err}");
    })
    .await;
}

/// An owner with 2000 sessions lists and destroys them all; both statements can use the
/// owner index, and owners of two tables are separate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sessions_of_one_owner_through_the_index() {
    with_schema(|pool, schema| async move {
        let a = migrated(&pool, &schema).await;
        let b = PostgresStore::builder()
            .schema(schema.as_str())
            .table("other")
            .build(pool.clone())
            .unwrap();
        b.migrate().await.unwrap();
        let ada = owner("ada");
        let ids: Vec<SessionId> = (0..2000).map(|_| SessionId::generate()).collect();
        for chunk in ids.chunks(100) {
            let writes = chunk.iter().map(|id| {
                let (a, s) = (a.clone(), owned(&ada, json!({"id": id.as_str()})));
                let id = id.clone();
                tokio::spawn(async move { a.set(&id, &s).await })
            });
            for write in writes.collect::<Vec<_>>() {
                write.await.unwrap().unwrap();
            }
        }
        b.set(&ids[0], &owned(&ada, json!({"in": "b"})))
            .await
            .unwrap();
        assert_eq!(listed(&a, &ada).await, sorted(ids.clone()));
        let with_data = a.sessions_of(&ada, true).await.unwrap();
        assert_eq!(with_data.len(), 2000);
        assert!(
            with_data
                .iter()
                .all(|e| e.data.as_ref().unwrap()["id"] == json!(e.id.as_str()))
        );
        assert_eq!(listed(&b, &ada).await, vec![ids[0].clone()]);

        // The partial index is usable for both statements' `owner = $1`.
        let mut conn = pool.acquire().await.unwrap();
        exec_on(&mut conn, "SET enable_seqscan = off").await;
        for statement in [
            format!(
                "SELECT id FROM \"{schema}\".sessions WHERE owner = $1 AND expires_at > now() \
                 AND $2::text IS NULL"
            ),
            format!(
                "DELETE FROM \"{schema}\".sessions WHERE owner = $1 \
                 AND id IS DISTINCT FROM $2::text RETURNING expires_at"
            ),
        ] {
            let plan: Vec<String> =
                sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {statement}")))
                    .bind("x")
                    .bind(None::<String>)
                    .fetch_all(&mut *conn)
                    .await
                    .expect(&statement);
            let plan = plan.join("\n");
            assert!(plan.contains("sessions_owner_idx"), "{statement}:\n{plan}");
        }
        exec_on(&mut conn, "RESET enable_seqscan").await;
        drop(conn);

        assert_eq!(a.destroy_owner(&ada, Some(&ids[7])).await.unwrap(), 1999);
        assert_eq!(listed(&a, &ada).await, vec![ids[7].clone()]);
        assert_eq!(listed(&b, &ada).await, vec![ids[0].clone()]);
        assert_eq!(b.destroy_owner(&ada, None).await.unwrap(), 1);
        assert_eq!(listed(&a, &ada).await, vec![ids[7].clone()]);
    })
    .await;
}

async fn exec_on(conn: &mut sqlx::PgConnection, sql: &'static str) {
    sqlx::query(sql).execute(&mut *conn).await.expect(sql);
}

/// The table of a release before owners (four columns, the expiry index) is upgraded by
/// `migrate`: the column and the owner index are added, its sessions survive with no owner,
/// and a role that may not alter it gets a configuration error saying what to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_upgrades_a_table_without_owners_and_keeps_its_sessions() {
    with_schema(|pool, schema| async move {
        let old_layout = |table: &str| {
            format!(
                "CREATE TABLE \"{schema}\".\"{table}\" (id text PRIMARY KEY, \
                 data jsonb NOT NULL, expires_at timestamptz NOT NULL, \
                 version bigint NOT NULL); \
                 CREATE INDEX \"{table}_expires_at_idx\" ON \"{schema}\".\"{table}\" \
                 (expires_at)"
            )
        };
        exec(&pool, format!("CREATE SCHEMA \"{schema}\"")).await;
        for statement in old_layout("sessions").split("; ") {
            exec(&pool, statement.to_string()).await;
        }
        let id = SessionId::generate();
        exec(
            &pool,
            format!(
                "INSERT INTO \"{schema}\".sessions VALUES \
                 ('{id}', '{{\"user\": \"ada\"}}', now() + interval '1 hour', 7)"
            ),
        )
        .await;
        let store = builder(&schema).build(pool.clone()).unwrap();
        // Before the upgrade the store cannot read the table.
        assert!(store.get(&id).await.is_err());
        store.migrate().await.unwrap();
        let got = store.get(&id).await.unwrap().expect("kept");
        assert_eq!(got.data()["user"], json!("ada"));
        assert_eq!((got.version(), got.owner()), (7, None));
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 \
             AND tablename = 'sessions' ORDER BY indexname",
        )
        .bind(&schema)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            indexes,
            [
                "sessions_expires_at_idx",
                "sessions_owner_idx",
                "sessions_pkey"
            ]
        );
        let ada = owner("ada");
        assert_eq!(
            store
                .set(&id, &got.clone().with_owner(Some(ada.clone())))
                .await
                .unwrap(),
            8
        );
        assert_eq!(listed(&store, &ada).await, vec![id.clone()]);
        store.migrate().await.expect("a second migrate is a no-op");

        // A role with DML rights only on an old table cannot upgrade it: a Config error that
        // says what to run, and the table is left as it was.
        for statement in old_layout("legacy").split("; ") {
            exec(&pool, statement.to_string()).await;
        }
        let role = support::unique_name("sst_old_");
        exec(&pool, format!("CREATE ROLE \"{role}\" LOGIN")).await;
        exec(
            &pool,
            format!("GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\""),
        )
        .await;
        exec(
            &pool,
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON \"{schema}\".legacy TO \"{role}\""),
        )
        .await;
        let url = format!("{}?schema={schema}&table=legacy", url_as(&role));
        let result = session_stores::connect(&url).await.map(drop);
        drop_role(&pool, &role).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
        assert!(err.to_string().contains("ADD COLUMN owner"), "{err}");
        let columns: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'legacy'",
        )
        .bind(&schema)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(columns, 4);
    })
    .await;
}

/// A stored owner that is not a valid owner, and a listed row that is not a session, are
/// decode errors naming the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_owners_and_listed_rows_are_decode_errors() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let id = SessionId::generate();
        store.set(&id, &session(json!({}))).await.unwrap();
        for bad in ["''", "E'a\\nb'"] {
            exec(
                &pool,
                format!("UPDATE \"{schema}\".sessions SET owner = {bad} WHERE id = '{id}'"),
            )
            .await;
            let err = store.get(&id).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode, "{bad}: {err:?}");
            assert_eq!(err.session(), Some(&id.hint()), "{bad}");
        }

        let ada = owner("ada");
        let id = SessionId::generate();
        store.set(&id, &owned(&ada, json!({}))).await.unwrap();
        exec(
            &pool,
            format!("UPDATE \"{schema}\".sessions SET data = '[1]' WHERE id = '{id}'"),
        )
        .await;
        assert_eq!(listed(&store, &ada).await, vec![id.clone()]);
        // Listed as undecodable (the Decode error naming it), never failing the listing.
        support::listed_only_as_undecodable(&store, &ada, true, &id).await;
        exec(
            &pool,
            format!("UPDATE \"{schema}\".sessions SET version = -1 WHERE id = '{id}'"),
        )
        .await;
        support::listed_only_as_undecodable(&store, &ada, false, &id).await;
        exec(
            &pool,
            format!("UPDATE \"{schema}\".sessions SET id = 'a/b', version = 1 WHERE id = '{id}'"),
        )
        .await;
        // An id that is not valid names no session a caller could end: left out.
        assert!(store.sessions_of(&ada, false).await.unwrap().is_empty());
        assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
    })
    .await;
}

// Scans.

/// Every page of a scan from `cursor` on, each checked to hold at most `limit` sessions.
async fn scan_from(
    store: &PostgresStore,
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

/// The sessions of `scanned` by id, checked to be there once each.
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
async fn write_many(store: &PostgresStore, n: usize) -> BTreeMap<SessionId, Session> {
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
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        assert!(store.capabilities().scan);
        assert!(store.capabilities().owners);
        let mut written = write_many(&store, 300).await;
        // Ten of them expire (by hand, as time passing would): never scanned.
        let expired: Vec<SessionId> = written.keys().step_by(30).cloned().collect();
        for id in &expired {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE \"{schema}\".sessions SET expires_at = now() - interval '1 second' \
                 WHERE id = $1"
            )))
            .bind(id.as_str())
            .execute(&pool)
            .await
            .unwrap();
            written.remove(id);
        }
        assert_eq!(written.len(), 290);

        for limit in [7, 1, 290, 1000] {
            let scanned = scan_from(&store, None, limit).await;
            assert_eq!(once_each(&scanned), written, "limit {limit}");
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_with_writes_between_pages_never_duplicates_or_drops_a_session_live_throughout() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
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
            // Between pages: new sessions, destroyed ones, updated ones (a new version and
            // data).
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
        for id in seen.keys() {
            assert!(stable.contains_key(id) || doomed.contains(id) || created.contains(id));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_saved_as_text_resumes_on_a_new_store_over_the_same_table() {
    with_schema(|pool, schema| async move {
        let written = write_many(&migrated(&pool, &schema).await, 120).await;
        let (first, saved) = {
            let store = migrated(&pool, &schema).await;
            let page = store.scan(None, 50).await.unwrap();
            let saved = page.next.expect("more to come").as_str().to_owned();
            (page.sessions, saved)
        };
        // A store of its own pool, as another process would have.
        let url = support::service_url(VAR, DEFAULT_URL, 5432).unwrap();
        let store = builder(&schema).connect(&url).await.unwrap();
        let mut scanned = first;
        scanned.extend(scan_from(&store, Some(ScanCursor::new(saved)), 50).await);
        assert_eq!(once_each(&scanned), written);
        store.pool().close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_this_store_did_not_make_is_a_config_error() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_ends_its_scan_at_once() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let page = store.scan(None, 10).await.unwrap();
        assert!(page.sessions.is_empty());
        assert!(page.next.is_none());
        // Only expired sessions: empty too.
        let id = SessionId::generate();
        store.set(&id, &session(json!({}))).await.unwrap();
        exec(
            &pool,
            format!("UPDATE \"{schema}\".sessions SET expires_at = 'epoch'"),
        )
        .await;
        let page = store.scan(None, 10).await.unwrap();
        assert!(page.sessions.is_empty());
        assert!(page.next.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_of_two_tables_are_separate() {
    with_schema(|pool, schema| async move {
        let a = migrated(&pool, &schema).await;
        let b = PostgresStore::builder()
            .schema(schema.as_str())
            .table("other")
            .build(pool.clone())
            .unwrap();
        b.migrate().await.unwrap();
        let in_a = write_many(&a, 40).await;
        let in_b = write_many(&b, 30).await;
        assert_eq!(once_each(&scan_from(&a, None, 8).await), in_a);
        assert_eq!(once_each(&scan_from(&b, None, 8).await), in_b);
        b.clear().await.unwrap();
        assert!(scan_from(&b, None, 8).await.is_empty());
        assert_eq!(once_each(&scan_from(&a, None, 8).await), in_a);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_scanned_row_is_reported_with_a_decode_error_naming_it() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let id = SessionId::generate();
        for bad in [
            "data = '[1, 2]'",
            "version = 0",
            "version = -3",
            "owner = ''",
        ] {
            store.set(&id, &session(json!({}))).await.unwrap();
            exec(
                &pool,
                format!(
                    "UPDATE \"{schema}\".sessions SET {bad} WHERE id = '{}'",
                    id.as_str()
                ),
            )
            .await;
            let page = store.scan(None, 10).await.unwrap();
            assert!(page.sessions.is_empty(), "{bad}");
            assert_eq!(page.undecodable.len(), 1, "{bad}");
            let err = &page.undecodable[0].error;
            assert_eq!(err.kind(), ErrorKind::Decode, "{bad}: {err:?}");
            assert_eq!(err.session(), Some(&id.hint()), "{bad}");
            exec(&pool, format!("DELETE FROM \"{schema}\".sessions")).await;
        }
        exec(
            &pool,
            format!(
                "INSERT INTO \"{schema}\".sessions (id, data, expires_at, version) \
                 VALUES ('a/b', '{{}}', now() + interval '1 hour', 1)"
            ),
        )
        .await;
        let page = store.scan(None, 10).await.unwrap();
        assert!(page.sessions.is_empty());
        assert_eq!(page.undecodable.len(), 1);
        assert_eq!(page.undecodable[0].id, None);
        assert_eq!(page.undecodable[0].error.kind(), ErrorKind::Decode);
    })
    .await;
}

/// `session(data)` expiring `millis` from now.
fn expiring_in(millis: i64, data: serde_json::Value) -> Session {
    let mut short = session(data);
    short.set_expires_at_millis(session_stores::now_millis() + millis);
    short
}

/// Holds `"<schema>".sessions` in `ACCESS EXCLUSIVE` mode (as a migration's `ALTER TABLE`
/// or an operator's `LOCK TABLE` does) until the transaction ends.
async fn lock_table(pool: &PgPool, schema: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut locker = pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE \"{schema}\".sessions IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *locker)
    .await
    .unwrap();
    locker
}

/// Writes that wait on a table lock past the expiry of the session they write decide
/// "expired?" when they land, not when they were sent: the touch does not revive the session,
/// the compare-and-set does not write over it, `create` finds the id free, and `set` starts a
/// new incarnation instead of counting on from the old one's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_waited_for_a_lock_are_judged_when_they_land() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
        let mut versions = Vec::new();
        for id in &ids {
            versions.push(
                store
                    .set(id, &expiring_in(300, json!({"n": 1})))
                    .await
                    .unwrap(),
            );
        }
        let locker = lock_table(&pool, &schema).await;
        let (touch, cas, create, set) = {
            let s = || store.clone();
            let (a, b, c, d) = (s(), s(), s(), s());
            let [ia, ib, ic, id_] = <[SessionId; 4]>::try_from(ids.clone()).unwrap();
            let cas_version = versions[1];
            (
                tokio::spawn(async move { a.touch(&ia, SystemTime::now() + HOUR).await }),
                tokio::spawn(async move {
                    b.set_if_version(&ib, &session(json!({"n": 2})), cas_version)
                        .await
                }),
                tokio::spawn(async move { c.create(&ic, &session(json!({"n": 2}))).await }),
                tokio::spawn(async move { d.set(&id_, &session(json!({"n": 2}))).await }),
            )
        };
        // Past the sessions' expiry, with every write queued behind the lock.
        tokio::time::sleep(Duration::from_millis(700)).await;
        locker.rollback().await.unwrap();
        assert!(
            !tokio::time::timeout(HANG_GUARD, touch)
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
            "touch revived a session that expired while it waited"
        );
        match tokio::time::timeout(HANG_GUARD, cas)
            .await
            .unwrap()
            .unwrap()
        {
            Err(err) if err.is_conflict() => {}
            other => {
                panic!("set_if_version over a session that expired while it waited: {other:?}")
            }
        }
        assert!(
            tokio::time::timeout(HANG_GUARD, create)
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
            "create found the id taken by a session that expired while it waited"
        );
        let new_version = tokio::time::timeout(HANG_GUARD, set)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_ne!(
            new_version,
            versions[3] + 1,
            "set counted on from an incarnation that expired while it waited"
        );
        assert!(store.get(&ids[0]).await.unwrap().is_none());
        assert!(store.get(&ids[1]).await.unwrap().is_none());
        assert!(store.get(&ids[2]).await.unwrap().is_some());
        assert_eq!(
            store.get(&ids[3]).await.unwrap().unwrap().version(),
            new_version
        );
    })
    .await;
}

/// The same on a connection that has every statement prepared already, where the wait is in
/// running the statement rather than in preparing it: the server's measure of that wait
/// moves "now" on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_writes_that_waited_for_a_lock_are_judged_when_they_land() {
    with_schema(|pool, schema| async move {
        migrated(&pool, &schema).await;
        let url = support::service_url(VAR, DEFAULT_URL, 5432).unwrap();
        let store = builder(&schema)
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        // Every write statement prepared on the one connection.
        let warm = SessionId::generate();
        let v = store.set(&warm, &session(json!({}))).await.unwrap();
        store
            .set_if_version(&warm, &session(json!({})), v)
            .await
            .unwrap();
        store.touch(&warm, SystemTime::now() + HOUR).await.unwrap();
        store
            .create(&SessionId::generate(), &session(json!({})))
            .await
            .unwrap();
        let id = SessionId::generate();
        let v = store
            .set(&id, &expiring_in(300, json!({"n": 1})))
            .await
            .unwrap();
        for (name, write) in [("touch", 0), ("set_if_version", 1)] {
            let locker = lock_table(&pool, &schema).await;
            let s = store.clone();
            let target = id.clone();
            let task = tokio::spawn(async move {
                match write {
                    0 => s
                        .touch(&target, SystemTime::now() + HOUR)
                        .await
                        .map(|t| t as u64),
                    _ => {
                        s.set_if_version(&target, &session(json!({"n": 2})), v)
                            .await
                    }
                }
            });
            tokio::time::sleep(Duration::from_millis(700)).await;
            locker.rollback().await.unwrap();
            let result = tokio::time::timeout(HANG_GUARD, task)
                .await
                .unwrap()
                .unwrap();
            match result {
                Ok(0) => {}
                Err(err) if err.is_conflict() => {}
                other => panic!("{name} revived a session that expired while it waited: {other:?}"),
            }
            assert!(store.get(&id).await.unwrap().is_none(), "{name}");
        }
    })
    .await;
}

/// A touch whose caller gave up (its deadline fired while the table was locked) never lands
/// later as a revival, on the application's own pool (no `statement_timeout`) or on the
/// store's own pool, whose `statement_timeout` makes the server cancel the statement and
/// free its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_that_timed_out_on_a_lock_never_revives_the_session_later() {
    with_schema(|pool, schema| async move {
        migrated(&pool, &schema).await;
        let url = support::service_url(VAR, DEFAULT_URL, 5432).unwrap();
        let app = support::unique_name("sst_late_");
        let separator = if url.contains('?') { '&' } else { '?' };
        let own_pool = builder(&schema)
            .operation_timeout(Duration::from_millis(500))
            .connect(&format!("{url}{separator}application_name={app}"))
            .await
            .unwrap();
        let shared_pool = builder(&schema)
            .operation_timeout(Duration::from_millis(500))
            .build(pool.clone())
            .unwrap();
        for (name, store) in [("own pool", own_pool), ("application's pool", shared_pool)] {
            let id = SessionId::generate();
            store
                .set(&id, &expiring_in(300, json!({"n": 1})))
                .await
                .unwrap();
            let locker = lock_table(&pool, &schema).await;
            let err = tokio::time::timeout(HANG_GUARD, store.touch(&id, SystemTime::now() + HOUR))
                .await
                .expect("no hang")
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout, "{name}: {err:?}");
            if name == "own pool" {
                // The server gave up on the statement too: nothing of the store's is still
                // running (waiting for the lock) once the timeout has passed on the server.
                tokio::time::sleep(Duration::from_millis(400)).await;
                let active: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                     AND state = 'active'",
                )
                .bind(&app)
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(
                    active, 0,
                    "the timed-out statement still holds its connection"
                );
            }
            locker.rollback().await.unwrap();
            // Whatever of the touch was still queued has run by now.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                store.get(&id).await.unwrap().is_none(),
                "{name}: a touch that timed out revived the session after it expired"
            );
            let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM \"{schema}\".sessions WHERE id = $1 AND expires_at > now()"
            )))
            .bind(id.as_str())
            .fetch_one(&pool)
            .await
            .unwrap();
            assert_eq!(rows, 0, "{name}: the row was given a new expiry");
        }
    })
    .await;
}

/// One store used from two runtimes in turn (actix-web runs one per worker; a worker
/// restarts): the connections the first runtime opened are not handed to the second
/// runtime's operations as failures.
#[test]
fn a_store_outlives_the_runtime_that_opened_its_connections() {
    let Some(url) = support::service_url(VAR, DEFAULT_URL, 5432) else {
        return;
    };
    let schema = support::unique_name("sst_pg_");
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let (store, ids) = first.block_on(async {
        let store = builder(&schema)
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        // Every connection of the pool opened (and left idle in it) on this runtime.
        let writes = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = SessionId::generate();
                store.set(&id, &session(json!({"n": 1}))).await.unwrap();
                id
            })
        });
        let mut ids = Vec::new();
        for write in writes {
            ids.push(write.await.unwrap());
        }
        (store, ids)
    });
    drop(first);
    let second = runtime();
    second.block_on(async {
        for round in 0..28 {
            let id = &ids[round % ids.len()];
            let got = tokio::time::timeout(HANG_GUARD, store.get(id))
                .await
                .expect("no hang");
            assert!(
                got.unwrap_or_else(|e| panic!("operation {round} on the second runtime: {e:?}"))
                    .is_some()
            );
        }
        let pool = store.pool().clone();
        drop_schema(&pool, &schema).await;
    });
}

/// `"<schema>".sessions` in the current layout without its indexes, with `rows` sessions.
async fn table_without_indexes(pool: &PgPool, schema: &str, rows: usize) {
    exec(pool, format!("CREATE SCHEMA \"{schema}\"")).await;
    exec(
        pool,
        format!(
            "CREATE TABLE \"{schema}\".sessions (id text PRIMARY KEY, data jsonb NOT NULL, \
             expires_at timestamptz NOT NULL, version bigint NOT NULL, owner text NULL, \
             absolute_expiry timestamptz NULL, moved_to text NULL)"
        ),
    )
    .await;
    exec(
        pool,
        format!(
            "INSERT INTO \"{schema}\".sessions \
             SELECT 'row' || n, '{{}}', now() + interval '1 hour', 1, 'owner' || (n % 100), \
             NULL, NULL FROM generate_series(1, {rows}) n"
        ),
    )
    .await;
}

/// Whether both of the store's indexes exist and are valid.
async fn indexes_valid(pool: &PgPool, schema: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 \
         AND c.relname IN ('sessions_expires_at_idx', 'sessions_owner_idx') AND i.indisvalid",
    )
    .bind(schema)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A rolling deploy upgrading a table in use: two instances migrate at once while a writer
/// runs and another transaction has a write open on the table. The indexes are built
/// concurrently, so no write waits for the build (a plain `CREATE INDEX` would queue behind
/// the open write and every later write behind it); the instance that is not building
/// returns at once instead of waiting for (and failing on) the other's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_are_built_concurrently_while_writes_go_on() {
    with_schema(|pool, schema| async move {
        table_without_indexes(&pool, &schema, 20_000).await;
        // A transaction with a write open on the table, as a slow request would have.
        let mut open = pool.begin().await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE \"{schema}\".sessions SET version = 2 WHERE id = 'row1'"
        )))
        .execute(&mut *open)
        .await
        .unwrap();
        let writer = builder(&schema)
            .operation_timeout(Duration::from_millis(2000))
            .build(pool.clone())
            .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writes = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut done = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = SessionId::generate();
                    writer
                        .set(&id, &session(json!({"n": done})))
                        .await
                        .unwrap_or_else(|e| panic!("write {done} during the migration: {e:?}"));
                    done += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                done
            })
        };
        let instance = || {
            let store = builder(&schema).build(pool.clone()).unwrap();
            tokio::spawn(async move { store.migrate().await })
        };
        let (mut a, mut b) = (instance(), instance());
        // One instance builds, and waits for the open write; the other returns at once.
        let (first, builder_is_b) = tokio::time::timeout(HANG_GUARD, async {
            tokio::select! {
                done = &mut a => (done, true),
                done = &mut b => (done, false),
            }
        })
        .await
        .expect("neither instance returned while the other was building");
        first.unwrap().expect("the instance that is not building");
        let building = if builder_is_b { b } else { a };
        assert!(
            !building.is_finished(),
            "the build waits for the open write"
        );
        assert_eq!(
            indexes_valid(&pool, &schema).await,
            0,
            "the build is waiting"
        );
        // Writes go on while the build waits (behind a plain CREATE INDEX they would wait
        // the whole 3 s, past their 2 s operation timeout).
        tokio::time::sleep(Duration::from_millis(3000)).await;
        open.commit().await.unwrap();
        tokio::time::timeout(HANG_GUARD, building)
            .await
            .expect("the build hung")
            .unwrap()
            .expect("the instance that built the indexes");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let done = writes.await.unwrap();
        assert!(
            done >= 20,
            "only {done} writes while the indexes were built"
        );
        assert_eq!(indexes_valid(&pool, &schema).await, 2);
    })
    .await;
}

/// An index left invalid by an interrupted concurrent build (here: a unique build that
/// failed on duplicates, under the index's name) is dropped and built again by the next
/// `migrate`, not taken for done by `IF NOT EXISTS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_left_invalid_by_an_interrupted_build_is_built_again() {
    with_schema(|pool, schema| async move {
        table_without_indexes(&pool, &schema, 200).await;
        let failed = sqlx::query(AssertSqlSafe(format!(
            "CREATE UNIQUE INDEX CONCURRENTLY sessions_owner_idx ON \"{schema}\".sessions (owner)"
        )))
        .execute(&pool)
        .await;
        assert!(failed.is_err(), "duplicate owners fail a unique build");
        let store = migrated(&pool, &schema).await;
        assert_eq!(indexes_valid(&pool, &schema).await, 2);
        let unique: bool = sqlx::query_scalar(
            "SELECT i.indisunique FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = 'sessions_owner_idx'",
        )
        .bind(&schema)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(!unique, "the invalid index was kept");
        assert_eq!(store.len().await.unwrap(), 200);
    })
    .await;
}

/// A `migrate` that cannot get a lock in time (another transaction holds the table) fails
/// with a transient error, so an instance retries instead of treating it as fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_cannot_get_its_lock_is_a_transient_error() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        exec(
            &pool,
            format!("ALTER TABLE \"{schema}\".sessions DROP COLUMN owner"),
        )
        .await;
        let locker = lock_table(&pool, &schema).await;
        let err = tokio::time::timeout(HANG_GUARD, store.migrate())
            .await
            .expect("no hang")
            .unwrap_err();
        locker.rollback().await.unwrap();
        assert!(err.is_transient(), "{err:?}");
        store
            .migrate()
            .await
            .expect("migrate once the lock is gone");
        assert_eq!(indexes_valid(&pool, &schema).await, 2);
    })
    .await;
}

/// Rows that are not valid sessions (data that is not an object, a negative version, an id
/// that is not a valid id) never stop a scan or a listing: a scan reports each in
/// `undecodable` and goes on past it, in pages of every size; a listing lists the owner's
/// corrupt row as undecodable (with its expiry), leaves out the row with an invalid id, and
/// lists the others with their data. Before, each failed with `Decode` at the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_never_stop_a_scan_or_a_listing() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let ada = Owner::new("ada").unwrap();
        let mut good = Vec::new();
        for n in 0..4 {
            let id = SessionId::new(format!("good-{n}")).unwrap();
            let s = session(json!({ "n": n })).with_owner(Some(ada.clone()));
            store.set(&id, &s).await.unwrap();
            good.push(id);
        }
        for (id, data, version) in [
            ("good-1a", "'[1, 2]'", "1"),
            ("good-2a", "'{\"a\": 1}'", "-5"),
            ("not a valid id!", "'{\"a\": 1}'", "3"),
        ] {
            exec(
                &pool,
                format!(
                    "INSERT INTO \"{schema}\".sessions (id, data, expires_at, version, owner) \
                     VALUES ('{id}', {data}, now() + interval '1 hour', {version}, 'ada')"
                ),
            )
            .await;
        }
        for limit in [1, 2, 3, 100] {
            let (mut seen, mut bad) = (Vec::new(), Vec::new());
            let mut cursor = None;
            loop {
                let page = store.scan(cursor.as_ref(), limit).await.unwrap();
                seen.extend(page.sessions.into_iter().map(|(id, _)| id));
                bad.extend(page.undecodable.into_iter().map(|entry| {
                    assert_eq!(entry.error.kind(), ErrorKind::Decode);
                    entry.id.map(|id| id.as_str().to_owned())
                }));
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, good, "limit {limit}");
            assert_eq!(
                bad,
                [Some("good-1a".to_owned()), Some("good-2a".to_owned()), None],
                "limit {limit}"
            );
        }
        let listed = store.sessions_of(&ada, true).await.unwrap();
        assert_eq!(listed.len(), 6, "{listed:?}");
        let undecodable: Vec<_> = listed.iter().filter(|e| e.undecodable.is_some()).collect();
        assert_eq!(undecodable.len(), 2, "{listed:?}");
        assert!(undecodable.iter().all(|e| e.data.is_none()));
        assert!(
            undecodable
                .iter()
                .all(|e| e.expires_at_millis > session_stores::now_millis())
        );
        // Without data, only the negative version is undecodable; the invalid id is left out.
        let listed = store.sessions_of(&ada, false).await.unwrap();
        assert_eq!(listed.len(), 6, "{listed:?}");
        assert_eq!(listed.iter().filter(|e| e.undecodable.is_some()).count(), 1);
    })
    .await;
}

// Lifetimes: absolute expiry and rotation.

const HOUR_MS: i64 = 3_600_000;

/// A session expiring `expires_in` ms from now, with an absolute expiry `absolute_in` ms
/// from now (or none).
fn lived(expires_in: i64, absolute_in: Option<i64>, data: serde_json::Value) -> Session {
    let now = session_stores::now_millis();
    let mut s = session(data);
    s.set_expires_at_millis(now + expires_in);
    s.set_absolute_expiry_millis(absolute_in.map(|a| now + a));
    s
}

async fn got(store: &PostgresStore, id: &SessionId) -> Session {
    store.get(id).await.unwrap().expect("a live session")
}

/// Every write and `touch` is capped by the absolute expiry, later writes keep the earlier
/// one, a write whose absolute expiry has passed deletes, and a new incarnation starts with
/// the one it carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_expiry_caps_writes_and_touches_and_later_writes_keep_the_earlier() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let id = SessionId::generate();
        let first = lived(HOUR_MS, Some(60_000), json!({"n": 1}));
        let abs = first.absolute_expiry_millis().unwrap();
        let v1 = store.set(&id, &first).await.unwrap();
        let s = got(&store, &id).await;
        assert_eq!(
            (s.absolute_expiry_millis(), s.expires_at_millis()),
            (Some(abs), abs)
        );
        // touch past it: capped, still true.
        assert!(store.touch(&id, SystemTime::now() + HOUR).await.unwrap());
        assert_eq!(got(&store, &id).await.expires_at_millis(), abs);
        // touch before it moves the expiry as usual.
        let earlier = SystemTime::now() + Duration::from_secs(30);
        assert!(store.touch(&id, earlier).await.unwrap());
        assert_eq!(
            got(&store, &id).await.expires_at_millis(),
            session_stores::to_millis(earlier)
        );
        // A write with none keeps it and is capped by it.
        let v2 = store
            .set(&id, &lived(HOUR_MS, None, json!({"n": 2})))
            .await
            .unwrap();
        assert_eq!(v2, v1 + 1);
        let s = got(&store, &id).await;
        assert_eq!(
            (s.absolute_expiry_millis(), s.expires_at_millis()),
            (Some(abs), abs)
        );
        // A later one is not taken (set and compare-and-set).
        store
            .set(&id, &lived(HOUR_MS, Some(2 * HOUR_MS), json!({"n": 3})))
            .await
            .unwrap();
        let v = got(&store, &id).await.version();
        let v = store
            .set_if_version(&id, &lived(HOUR_MS, Some(3 * HOUR_MS), json!({"n": 4})), v)
            .await
            .unwrap();
        let s = got(&store, &id).await;
        assert_eq!(
            (s.absolute_expiry_millis(), s.expires_at_millis()),
            (Some(abs), abs)
        );
        assert_eq!(s.data()["n"], json!(4));
        // An earlier one is taken, and caps.
        let earlier = lived(HOUR_MS, Some(30_000), json!({"n": 5}));
        let earlier_abs = earlier.absolute_expiry_millis().unwrap();
        store.set_if_version(&id, &earlier, v).await.unwrap();
        let s = got(&store, &id).await;
        assert_eq!(
            (s.absolute_expiry_millis(), s.expires_at_millis()),
            (Some(earlier_abs), earlier_abs)
        );
        // Scans return it too.
        let page = store.scan(None, 10).await.unwrap();
        assert_eq!(page.sessions.len(), 1);
        assert_eq!(
            page.sessions[0].1.absolute_expiry_millis(),
            Some(earlier_abs)
        );
        // A write whose absolute expiry has passed deletes, and returns 0.
        assert_eq!(
            store
                .set(&id, &lived(HOUR_MS, Some(-1), json!({})))
                .await
                .unwrap(),
            0
        );
        assert!(store.get(&id).await.unwrap().is_none());
        // A new incarnation starts with the absolute expiry it carries (later than the
        // deleted one's), or none.
        let later = lived(HOUR_MS, Some(2 * HOUR_MS), json!({}));
        assert!(store.create(&id, &later).await.unwrap());
        assert_eq!(
            got(&store, &id).await.absolute_expiry_millis(),
            later.absolute_expiry_millis()
        );
        store.destroy(&id).await.unwrap();
        store
            .set(&id, &lived(HOUR_MS, None, json!({})))
            .await
            .unwrap();
        let s = got(&store, &id).await;
        assert_eq!(s.absolute_expiry_millis(), None);
        // create with a passed absolute expiry stores nothing live.
        let other = SessionId::generate();
        assert!(
            store
                .create(&other, &lived(HOUR_MS, Some(-1), json!({})))
                .await
                .unwrap()
        );
        assert!(store.get(&other).await.unwrap().is_none());
    })
    .await;
}

/// rotate: Moved, Absent, Taken; the old id read-only during its grace, skipped by len,
/// scan and sessions_of; destroy of it ends the new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_moves_the_session_and_leaves_the_old_id_read_only() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let ada = owner("ada");
        let (old, new) = (SessionId::generate(), SessionId::generate());
        let written =
            lived(HOUR_MS, Some(2 * HOUR_MS), json!({"user": "ada"})).with_owner(Some(ada.clone()));
        let v = store.set(&old, &written).await.unwrap();
        let rotation = store.rotate(&old, &new, HOUR).await.unwrap();
        assert_eq!(rotation, Rotation::Moved { version: v + 1 });
        let moved = got(&store, &new).await;
        assert_eq!(moved.version(), v + 1);
        assert_eq!(moved.data(), written.data());
        assert_eq!(moved.owner(), Some(&ada));
        assert_eq!(
            moved.absolute_expiry_millis(),
            written.absolute_expiry_millis()
        );
        assert_eq!(moved.expires_at_millis(), written.expires_at_millis());
        assert!(!moved.is_rotated());
        // The old id: the session as it was, read-only.
        let snapshot = got(&store, &old).await;
        assert!(snapshot.is_rotated());
        assert_eq!((snapshot.version(), snapshot.data()), (v, written.data()));
        assert_eq!(snapshot.owner(), Some(&ada));
        assert!(snapshot.expires_at_millis() <= session_stores::now_millis() + HOUR_MS);
        let err = store.set(&old, &written).await.unwrap_err();
        assert!(matches!(err, Error::Rotated { .. }), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        for expected in [v, 0, v + 1] {
            let err = store
                .set_if_version(&old, &written, expected)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Rotated { .. }), "{expected}: {err:?}");
        }
        let expired = lived(-1, None, json!({}));
        let err = store.set(&old, &expired).await.unwrap_err();
        assert!(matches!(err, Error::Rotated { .. }), "{err:?}");
        let err = store.set_if_version(&old, &expired, v).await.unwrap_err();
        assert!(matches!(err, Error::Rotated { .. }), "{err:?}");
        assert!(!store.create(&old, &written).await.unwrap());
        assert!(!store.touch(&old, SystemTime::now() + HOUR).await.unwrap());
        assert_eq!(
            store
                .rotate(&old, &SessionId::generate(), HOUR)
                .await
                .unwrap(),
            Rotation::Absent
        );
        assert_eq!(got(&store, &old).await.version(), v);
        // Writes under the new id never show through the old one.
        store
            .set(&new, &owned(&ada, json!({"user": "ada", "admin": true})))
            .await
            .unwrap();
        assert_eq!(got(&store, &old).await.data(), written.data());
        // A rotated id is not a session.
        assert_eq!(store.len().await.unwrap(), 1);
        let page = store.scan(None, 10).await.unwrap();
        let ids: Vec<_> = page.sessions.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids, vec![new.clone()]);
        assert_eq!(listed(&store, &ada).await, vec![new.clone()]);

        // Absent and Taken change nothing.
        let nobody = SessionId::generate();
        assert_eq!(
            store
                .rotate(&nobody, &SessionId::generate(), HOUR)
                .await
                .unwrap(),
            Rotation::Absent
        );
        assert_eq!(
            store.rotate(&new, &new, HOUR).await.unwrap(),
            Rotation::Taken
        );
        let other = SessionId::generate();
        let vo = store.set(&other, &session(json!({"o": 1}))).await.unwrap();
        assert_eq!(
            store.rotate(&other, &new, HOUR).await.unwrap(),
            Rotation::Taken
        );
        assert_eq!(
            store.rotate(&other, &old, HOUR).await.unwrap(),
            Rotation::Taken
        );
        assert_eq!(got(&store, &other).await.version(), vo);
        assert!(!got(&store, &other).await.is_rotated());

        // Destroying the old id ends the new session too.
        store.destroy(&old).await.unwrap();
        assert!(store.get(&old).await.unwrap().is_none());
        assert!(store.get(&new).await.unwrap().is_none());
    })
    .await;
}

/// The old id resolves only while its grace lasts and the new session is live and not
/// rotated again; delete_expired removes it after its grace and counts it; destroy_owner
/// counts only the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_id_ends_with_its_grace_or_its_new_session() {
    with_schema(|pool, schema| async move {
        let store = migrated(&pool, &schema).await;
        let shared = &store;
        let fresh = move |data: serde_json::Value| async move {
            let id = SessionId::generate();
            shared.set(&id, &session(data)).await.unwrap();
            id
        };
        // The grace passes: absent, writable as over nothing, removed by delete_expired.
        let old = fresh(json!({"g": 1})).await;
        let new = SessionId::generate();
        store
            .rotate(&old, &new, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(store.get(&old).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(store.get(&old).await.unwrap().is_none());
        assert_eq!(store.delete_expired().await.unwrap(), 1);
        assert!(store.get(&new).await.unwrap().is_some());
        let old = fresh(json!({"g": 2})).await;
        let new = SessionId::generate();
        store
            .rotate(&old, &new, Duration::from_millis(200))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(store.set(&old, &session(json!({}))).await.unwrap() > 0);
        // An expired rotated id under a new id is replaced by a rotation.
        let third = fresh(json!({"g": 3})).await;
        let spare = SessionId::generate();
        store
            .rotate(&third, &spare, Duration::from_millis(100))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let fourth = fresh(json!({"g": 4})).await;
        assert!(matches!(
            store.rotate(&fourth, &third, HOUR).await.unwrap(),
            Rotation::Moved { .. }
        ));
        assert_eq!(got(&store, &third).await.data()["g"], json!(4));
        // A grace of zero ends it at once.
        let old = fresh(json!({"z": 0})).await;
        store
            .rotate(&old, &SessionId::generate(), Duration::ZERO)
            .await
            .unwrap();
        assert!(store.get(&old).await.unwrap().is_none());
        // The new session destroyed, expired, or rotated again.
        let old = fresh(json!({})).await;
        let new = SessionId::generate();
        store.rotate(&old, &new, HOUR).await.unwrap();
        store.destroy(&new).await.unwrap();
        assert!(store.get(&old).await.unwrap().is_none());
        let old = fresh(json!({})).await;
        let new = SessionId::generate();
        store.rotate(&old, &new, HOUR).await.unwrap();
        store.touch(&new, SystemTime::now() - HOUR).await.unwrap();
        assert!(store.get(&old).await.unwrap().is_none());
        let old = fresh(json!({})).await;
        let (new, newer) = (SessionId::generate(), SessionId::generate());
        store.rotate(&old, &new, HOUR).await.unwrap();
        store.rotate(&new, &newer, HOUR).await.unwrap();
        assert!(store.get(&old).await.unwrap().is_none());
        assert!(got(&store, &new).await.is_rotated());
        // destroy_owner: both ids end, one session counted.
        let ada = owner("ada");
        let old = SessionId::generate();
        store.set(&old, &owned(&ada, json!({}))).await.unwrap();
        let new = SessionId::generate();
        store.rotate(&old, &new, HOUR).await.unwrap();
        assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
        assert!(store.get(&old).await.unwrap().is_none());
        assert!(store.get(&new).await.unwrap().is_none());
    })
    .await;
}

/// A compare-and-set through the old id racing a rotation: either the write lands first
/// and is what moves, or it fails as rotated (or a conflict) and the old data moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_the_old_id_racing_rotate_is_moved_or_refused() {
    with_schema(|pool, schema| async move {
        let store = Arc::new(migrated(&pool, &schema).await);
        let (mut landed, mut refused) = (0, 0);
        for round in 0..40 {
            let old = SessionId::generate();
            let v = store
                .set(&old, &session(json!({"round": round})))
                .await
                .unwrap();
            let new = SessionId::generate();
            let saved = session(json!({"saved": round}));
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let writer = tokio::spawn({
                let (store, old, saved, barrier) =
                    (store.clone(), old.clone(), saved.clone(), barrier.clone());
                async move {
                    barrier.wait().await;
                    store.set_if_version(&old, &saved, v).await
                }
            });
            let rotator = tokio::spawn({
                let (store, old, new, barrier) =
                    (store.clone(), old.clone(), new.clone(), barrier.clone());
                async move {
                    barrier.wait().await;
                    store.rotate(&old, &new, HOUR).await
                }
            });
            let write = writer.await.unwrap();
            let rotation = rotator.await.unwrap().unwrap();
            let moved = got(&store, &new).await;
            match write {
                Ok(written) => {
                    landed += 1;
                    assert_eq!(written, v + 1);
                    assert_eq!(rotation, Rotation::Moved { version: v + 2 });
                    assert_eq!(moved.data(), saved.data());
                }
                Err(err) => {
                    refused += 1;
                    assert!(err.is_conflict(), "{err:?}");
                    assert_eq!(rotation, Rotation::Moved { version: v + 1 });
                    assert_eq!(moved.data()["round"], json!(round));
                }
            }
        }
        eprintln!("{landed} writes landed first, {refused} were refused");
    })
    .await;
}

/// A table of a release before absolute expiries and rotation (with owners) is upgraded by
/// `migrate`: both nullable columns are added and its sessions read with no absolute expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_adds_the_lifetime_columns_and_keeps_the_sessions() {
    with_schema(|pool, schema| async move {
        exec(&pool, format!("CREATE SCHEMA \"{schema}\"")).await;
        exec(
            &pool,
            format!(
                "CREATE TABLE \"{schema}\".sessions (id text PRIMARY KEY, data jsonb NOT NULL, \
                 expires_at timestamptz NOT NULL, version bigint NOT NULL, owner text NULL)"
            ),
        )
        .await;
        let id = SessionId::generate();
        exec(
            &pool,
            format!(
                "INSERT INTO \"{schema}\".sessions VALUES \
                 ('{id}', '{{\"user\": \"ada\"}}', now() + interval '1 hour', 7, 'ada')"
            ),
        )
        .await;
        let store = builder(&schema).build(pool.clone()).unwrap();
        store.migrate().await.unwrap();
        let s = got(&store, &id).await;
        assert_eq!((s.version(), s.absolute_expiry_millis()), (7, None));
        assert_eq!(s.owner().map(Owner::as_str), Some("ada"));
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'sessions' ORDER BY ordinal_position",
        )
        .bind(&schema)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            columns,
            [
                "id",
                "data",
                "expires_at",
                "version",
                "owner",
                "absolute_expiry",
                "moved_to"
            ]
        );
        let capped = lived(HOUR_MS, Some(60_000), json!({}));
        assert_eq!(store.set(&id, &capped).await.unwrap(), 8);
        assert_eq!(
            got(&store, &id).await.absolute_expiry_millis(),
            capped.absolute_expiry_millis()
        );
        let new = SessionId::generate();
        assert_eq!(
            store.rotate(&id, &new, HOUR).await.unwrap(),
            Rotation::Moved { version: 9 }
        );
        store.migrate().await.expect("a second migrate is a no-op");
    })
    .await;
}
