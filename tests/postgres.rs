//! Tests specific to [`PostgresStore`], against a real server: the schema it creates,
//! concurrent migrations, the batch bound of `delete_expired`, corrupt rows, data Postgres
//! cannot store, and typed transient errors (not hangs) when the server is unreachable.
//!
//! Reads `SESSION_STORES_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! skips with a notice when no server is reachable, and fails in CI. Each test works in a
//! schema of its own, dropped at the end.
#![cfg(feature = "postgres")]

#[path = "support/mod.rs"]
mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use session_stores::stores::postgres::{
    DEFAULT_TABLE, MAX_EXPIRY_MILLIS, PostgresStore, PostgresStoreBuilder,
};
use session_stores::{
    Error, ErrorKind, FRESH_VERSION_SPAN, MAX_VERSION, Session, SessionId, SessionStore,
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
