//! PostgresStore against raw sqlx queries on the same schema, in one run.
//!
//! Both work on a table of their own, with the store's schema (`migrate`), in a fresh schema
//! `bench_<random>` that is dropped at the end, through a pool of 10 connections each (the
//! store's default). The raw client runs the store's exact SQL text for get, set, touch,
//! destroy, create and update-if-version, with the same binds (expiries and "now" as epoch
//! milliseconds, turned into `timestamptz` by the same SQL expression) and the same JSON text
//! encoding. What it skips: the store's error mapping, the clamping of expiries, the check
//! for past expiries before each write, and the re-spelling of very long integers before
//! decoding (a scan of the text that copies nothing for ordinary data).
//!
//! Reads `SESSION_STORES_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! without a reachable server it prints `SKIPPED` and exits successfully.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Plan, StoreTarget, Target};
use serde_json::{Map, Value};
use session_stores::{PostgresStore, Session, SessionId, now_millis};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool, Row, SqlSafeStr, SqlStr};

const VAR: &str = "SESSION_STORES_POSTGRES_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const STORE_TABLE: &str = "store_sessions";
const RAW_TABLE: &str = "raw_sessions";

/// The store's SQL for the `timestamptz` that is `$n` milliseconds after the Unix epoch.
fn ts(n: usize) -> String {
    format!(
        "('epoch'::timestamptz + (${n}::int8 / 1000) * interval '1 second' \
         + (${n}::int8 % 1000) * interval '1 millisecond')"
    )
}

/// The store's SQL reading `expires_at` back as epoch milliseconds.
const EXPIRES_MILLIS: &str = "CASE WHEN isfinite(expires_at) \
     THEN round(extract(epoch FROM expires_at) * 1000)::int8 \
     ELSE 9223372036854775807 END";

fn sql(text: String) -> SqlStr {
    AssertSqlSafe(text).into_sql_str()
}

/// The store's statements (`Statements` in `src/stores/postgres.rs`), for table `t`.
struct Statements {
    get: SqlStr,
    set: SqlStr,
    delete: SqlStr,
    touch: SqlStr,
    create: SqlStr,
    update_if_version: SqlStr,
    bulk_fill: SqlStr,
}

impl Statements {
    fn new(schema: &str, table: &str) -> Self {
        let t = format!("\"{schema}\".\"{table}\"");
        let upsert_head = format!(
            "INSERT INTO {t} AS s (id, data, expires_at, version) \
             VALUES ($1, $2::jsonb, {exp}, 1) ON CONFLICT (id) DO UPDATE SET \
             data = EXCLUDED.data, expires_at = EXCLUDED.expires_at",
            exp = ts(3)
        );
        Statements {
            get: sql(format!(
                "SELECT data::text, {EXPIRES_MILLIS}, version FROM {t} \
                 WHERE id = $1 AND expires_at > {now}",
                now = ts(2)
            )),
            set: sql(format!(
                "{upsert_head}, version = CASE WHEN s.expires_at > {now} AND s.version > 0 \
                 THEN s.version + 1 ELSE 1 END RETURNING version",
                now = ts(4)
            )),
            delete: sql(format!("DELETE FROM {t} WHERE id = $1")),
            touch: sql(format!(
                "UPDATE {t} SET expires_at = {exp} WHERE id = $1 AND expires_at > {now}",
                exp = ts(2),
                now = ts(3)
            )),
            create: sql(format!(
                "{upsert_head}, version = 1 WHERE s.expires_at <= {now}",
                now = ts(4)
            )),
            update_if_version: sql(format!(
                "UPDATE {t} SET data = $2::jsonb, expires_at = {exp}, version = version + 1 \
                 WHERE id = $1 AND version = $4 AND expires_at > {now} RETURNING version",
                exp = ts(3),
                now = ts(5)
            )),
            // One statement per fill: every id of the array, all holding the same session.
            bulk_fill: sql(format!(
                "INSERT INTO {t} AS s (id, data, expires_at, version) \
                 SELECT u.id, $2::jsonb, {exp}, 1 FROM UNNEST($1::text[]) AS u(id) \
                 ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, \
                 expires_at = EXCLUDED.expires_at, version = 1",
                exp = ts(3)
            )),
        }
    }
}

/// Loads `ids`, all holding `session`, with one statement.
async fn bulk_fill(pool: &PgPool, statement: &SqlStr, ids: &[SessionId], session: &Session) {
    let ids: Vec<&str> = ids.iter().map(SessionId::as_str).collect();
    let data = serde_json::to_string(session.data()).expect("encode");
    sqlx::query(statement.clone())
        .bind(ids)
        .bind(data)
        .bind(session.expires_at_millis())
        .execute(pool)
        .await
        .expect("bulk fill");
}

/// Runs `fut` to completion from synchronous code that runs inside the bench runtime's
/// `block_on` (where the harness calls a bulk fill): `block_in_place` steps out of the runtime
/// context so that the runtime's handle can block on the future.
fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fut))
}

/// The raw baseline: sqlx queries on a pool of its own.
struct RawPg {
    pool: PgPool,
    sql: Statements,
}

impl RawPg {
    /// The live session under `id`, decoded as the store decodes it.
    async fn load(&self, id: &SessionId) -> Option<Session> {
        let row = sqlx::query(self.sql.get.clone())
            .bind(id.as_str())
            .bind(now_millis())
            .fetch_optional(&self.pool)
            .await
            .expect("get")?;
        let data: String = row.get(0);
        let expires_at: i64 = row.get(1);
        let version: i64 = row.get(2);
        let data: Map<String, Value> = serde_json::from_str(&data).expect("decode");
        Some(Session::from_parts(data, expires_at, version as u64))
    }

    async fn insert(&self, statement: &SqlStr, id: &SessionId, session: &Session) -> bool {
        let data = serde_json::to_string(session.data()).expect("encode");
        sqlx::query(statement.clone())
            .bind(id.as_str())
            .bind(data)
            .bind(session.expires_at_millis())
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .expect("create")
            .rows_affected()
            == 1
    }
}

#[async_trait]
impl Target for RawPg {
    async fn get(&self, id: &SessionId) -> bool {
        self.load(id).await.map(std::hint::black_box).is_some()
    }

    async fn set(&self, id: &SessionId, session: &Session) {
        let data = serde_json::to_string(session.data()).expect("encode");
        let version: i64 = sqlx::query_scalar(self.sql.set.clone())
            .bind(id.as_str())
            .bind(data)
            .bind(session.expires_at_millis())
            .bind(now_millis())
            .fetch_one(&self.pool)
            .await
            .expect("set");
        std::hint::black_box(version);
    }

    async fn touch(&self, id: &SessionId, expires_at: i64) -> bool {
        sqlx::query(self.sql.touch.clone())
            .bind(id.as_str())
            .bind(expires_at)
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .expect("touch")
            .rows_affected()
            > 0
    }

    async fn destroy(&self, id: &SessionId) {
        sqlx::query(self.sql.delete.clone())
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .expect("destroy");
    }

    async fn create(&self, id: &SessionId, session: &Session) -> bool {
        self.insert(&self.sql.create, id, session).await
    }

    async fn cas(&self, id: &SessionId, session: &Session) -> bool {
        let Some(current) = self.load(id).await else {
            // Expected version 0: the store's conditional insert.
            return self.insert(&self.sql.create, id, session).await;
        };
        let data = serde_json::to_string(session.data()).expect("encode");
        let version: Option<i64> = sqlx::query_scalar(self.sql.update_if_version.clone())
            .bind(id.as_str())
            .bind(data)
            .bind(session.expires_at_millis())
            .bind(current.version() as i64)
            .bind(now_millis())
            .fetch_optional(&self.pool)
            .await
            .expect("update if version");
        version.is_some()
    }

    async fn fill(&self, ids: &[SessionId], session: &Session) {
        bulk_fill(&self.pool, &self.sql.bulk_fill, ids, session).await;
    }
}

/// A pool like the store's own (10 connections, 5 s acquire timeout), without sqlx's ping
/// on every checkout: the raw client's floor is one round trip per statement.
async fn pool(url: &str) -> sqlx::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .connect(url)
        .await
}

fn main() {
    let url = std::env::var(VAR).unwrap_or_else(|_| DEFAULT_URL.to_string());
    let rt = common::runtime();
    let admin = match rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), pool(&url))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|err| err.to_string())
    }) {
        Ok(pool) => pool,
        Err(err) => {
            eprintln!("\n*** SKIPPED: postgres bench, no server at {url}: {err} (set {VAR}) ***\n");
            return;
        }
    };
    let schema = format!(
        "bench_{}",
        SessionId::generate().as_str().to_ascii_lowercase()
    )
    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
    let schema: String = schema.chars().take(40).collect();

    let store = rt.block_on(async {
        let store = PostgresStore::builder()
            .schema(&schema)
            .table(STORE_TABLE)
            .connect(&url)
            .await
            .expect("connect the store");
        store.migrate().await.expect("migrate the store's table");
        // The raw table: the store's schema, created by a store over it.
        PostgresStore::builder()
            .schema(&schema)
            .table(RAW_TABLE)
            .build(admin.clone())
            .expect("valid names")
            .migrate()
            .await
            .expect("migrate the raw table");
        store
    });
    // Not the store's pool: its connections carry the store's `statement_timeout` (the
    // operation timeout, 5 s), which a fill of a million rows can outlast on this VM.
    let fill_pool = admin.clone();
    let fill_sql = Statements::new(&schema, STORE_TABLE).bulk_fill;
    let store = Arc::new(StoreTarget::with_bulk_fill(
        store,
        Arc::new(move |ids: &[SessionId], session: &Session| {
            block_on(bulk_fill(&fill_pool, &fill_sql, ids, session))
        }),
    ));
    let raw = Arc::new(RawPg {
        pool: rt.block_on(pool(&url)).expect("connect the raw pool"),
        sql: Statements::new(&schema, RAW_TABLE),
    });

    let mut c = common::criterion();
    let plan = Plan {
        backend: "postgres",
        populations: vec![1_000, 100_000, 1_000_000],
        expiry_only_set: false,
    };
    common::run_all(&mut c, &rt, &plan, store, raw);
    c.final_summary();

    rt.block_on(async {
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&admin)
        .await
        .expect("drop the bench schema");
    });
}
