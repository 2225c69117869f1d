//! MySqlStore against raw sqlx queries on the same table layout, in one run.
//!
//! Both work on a table of their own, made by the store's `migrate`, named
//! `bench_<random>_{store,raw}` and dropped at the end, through a pool of 10 connections each
//! (the store's default). The raw client runs the store's statements for get, set, touch,
//! destroy, create and update-if-version with the same binds and the same JSON text, but
//! with a plain "now" parameter where the store measures the statement's time in the server
//! (`LANDED`), without `LAST_INSERT_ID` (it returns no version from `set`), and without the
//! store's error mapping, past-expiry checks and the closing of connections whose operation
//! was dropped.
//!
//! Reads `SESSION_STORES_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`); without a
//! reachable server it prints `SKIPPED` and exits successfully.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Plan, StoreTarget, Target};
use serde_json::{Map, Value};
use session_stores::{MySqlStore, Session, SessionId, now_millis};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{AssertSqlSafe, MySqlPool, Row, SqlSafeStr, SqlStr};

const VAR: &str = "SESSION_STORES_MYSQL_URL";
const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";

fn sql(text: String) -> SqlStr {
    AssertSqlSafe(text).into_sql_str()
}

/// The raw client's statements over table `t`.
struct Statements {
    get: SqlStr,
    set: SqlStr,
    delete: SqlStr,
    touch: SqlStr,
    insert: SqlStr,
    update_if_version: SqlStr,
}

impl Statements {
    fn new(table: &str) -> Self {
        let t = format!("`{table}`");
        Statements {
            get: sql(format!(
                "SELECT data, expires_at, version FROM {t} WHERE id = ? AND expires_at > ?"
            )),
            set: sql(format!(
                "INSERT INTO {t} (id, data, expires_at, version) VALUES (?, ?, ?, 1) \
                 ON DUPLICATE KEY UPDATE version = IF(expires_at > ?, version + 1, 1), \
                 data = VALUES(data), expires_at = VALUES(expires_at)"
            )),
            delete: sql(format!("DELETE FROM {t} WHERE id = ?")),
            touch: sql(format!(
                "UPDATE {t} SET expires_at = ? WHERE id = ? AND expires_at > ?"
            )),
            insert: sql(format!(
                "INSERT INTO {t} (id, data, expires_at, version) VALUES (?, ?, ?, 1)"
            )),
            update_if_version: sql(format!(
                "UPDATE {t} SET data = ?, expires_at = ?, version = version + 1 \
                 WHERE id = ? AND version = ? AND expires_at > ?"
            )),
        }
    }
}

/// Loads `ids`, all holding `session`, with multi-row inserts of up to 1,000 rows and about
/// 4 MiB each (under the server's `max_allowed_packet`, 16 MiB by default).
async fn bulk_fill(pool: &MySqlPool, table: &str, ids: &[SessionId], session: &Session) {
    let data = serde_json::to_string(session.data()).expect("encode");
    let rows_per_insert = ((4 << 20) / (data.len() + 200)).clamp(1, 1000);
    for chunk in ids.chunks(rows_per_insert) {
        let rows = vec!["(?, ?, ?, 1)"; chunk.len()].join(", ");
        let text = format!(
            "INSERT INTO `{table}` (id, data, expires_at, version) VALUES {rows} \
             ON DUPLICATE KEY UPDATE data = VALUES(data), expires_at = VALUES(expires_at), \
             version = 1"
        );
        let mut query = sqlx::query(AssertSqlSafe(text));
        for id in chunk {
            query = query
                .bind(id.as_str())
                .bind(data.as_str())
                .bind(session.expires_at_millis());
        }
        query.execute(pool).await.expect("bulk fill");
    }
}

/// Runs `fut` to completion from synchronous code inside the bench runtime's `block_on`.
fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fut))
}

/// The raw baseline: sqlx queries on a pool of its own.
struct RawMySql {
    pool: MySqlPool,
    table: String,
    sql: Statements,
}

impl RawMySql {
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

    /// An insert; a duplicate id is `false` (the store then checks for an expired row).
    async fn insert(&self, id: &SessionId, session: &Session) -> bool {
        let data = serde_json::to_string(session.data()).expect("encode");
        match sqlx::query(self.sql.insert.clone())
            .bind(id.as_str())
            .bind(data)
            .bind(session.expires_at_millis())
            .execute(&self.pool)
            .await
        {
            Ok(_) => true,
            Err(err)
                if err
                    .as_database_error()
                    .is_some_and(|e| e.is_unique_violation()) =>
            {
                false
            }
            Err(err) => panic!("create: {err}"),
        }
    }
}

#[async_trait]
impl Target for RawMySql {
    async fn get(&self, id: &SessionId) -> bool {
        self.load(id).await.map(std::hint::black_box).is_some()
    }

    async fn set(&self, id: &SessionId, session: &Session) {
        let data = serde_json::to_string(session.data()).expect("encode");
        sqlx::query(self.sql.set.clone())
            .bind(id.as_str())
            .bind(data)
            .bind(session.expires_at_millis())
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .expect("set");
    }

    async fn touch(&self, id: &SessionId, expires_at: i64) -> bool {
        sqlx::query(self.sql.touch.clone())
            .bind(expires_at)
            .bind(id.as_str())
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
        self.insert(id, session).await
    }

    async fn cas(&self, id: &SessionId, session: &Session) -> bool {
        let Some(current) = self.load(id).await else {
            return self.insert(id, session).await;
        };
        let data = serde_json::to_string(session.data()).expect("encode");
        sqlx::query(self.sql.update_if_version.clone())
            .bind(data)
            .bind(session.expires_at_millis())
            .bind(id.as_str())
            .bind(current.version() as i64)
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .expect("update if version")
            .rows_affected()
            == 1
    }

    async fn fill(&self, ids: &[SessionId], session: &Session) {
        bulk_fill(&self.pool, &self.table, ids, session).await;
    }
}

/// A pool like the store's own (10 connections, 5 s acquire timeout), without sqlx's ping
/// on every checkout: the raw client's floor is one round trip per statement.
async fn pool(url: &str) -> sqlx::Result<MySqlPool> {
    MySqlPoolOptions::new()
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
            eprintln!("\n*** SKIPPED: mysql bench, no server at {url}: {err} (set {VAR}) ***\n");
            return;
        }
    };
    let tag: String = SessionId::generate()
        .as_str()
        .to_ascii_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let (store_table, raw_table) = (format!("bench_{tag}_store"), format!("bench_{tag}_raw"));

    let store = rt.block_on(async {
        let store = MySqlStore::builder()
            .table(&store_table)
            .connect(&url)
            .await
            .expect("connect the store");
        store.migrate().await.expect("migrate the store's table");
        MySqlStore::builder()
            .table(&raw_table)
            .build(admin.clone())
            .expect("valid names")
            .migrate()
            .await
            .expect("migrate the raw table");
        store
    });
    let (fill_pool, fill_table) = (admin.clone(), store_table.clone());
    let store = Arc::new(StoreTarget::with_bulk_fill(
        store,
        Arc::new(move |ids: &[SessionId], session: &Session| {
            block_on(bulk_fill(&fill_pool, &fill_table, ids, session))
        }),
    ));
    let raw = Arc::new(RawMySql {
        pool: rt.block_on(pool(&url)).expect("connect the raw pool"),
        table: raw_table.clone(),
        sql: Statements::new(&raw_table),
    });

    let mut c = common::criterion();
    let plan = Plan {
        backend: "mysql",
        populations: vec![1_000, 100_000],
        expiry_only_set: false,
    };
    common::run_all(&mut c, &rt, &plan, store, raw);
    c.final_summary();

    rt.block_on(async {
        for table in [&store_table, &raw_table] {
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS `{table}`")))
                .execute(&admin)
                .await
                .expect("drop a bench table");
        }
    });
}
