//! Our stores against the tower-sessions family, one workload (`../workload.rs`), one run.
//!
//! | backend  | ours (through `TowerSessionsStore`) | peers                                          |
//! |----------|-------------------------------------|------------------------------------------------|
//! | memory   | `MemoryStore`, and also through its own `SessionStore` trait (`ours-native`) | tower-sessions' `MemoryStore`, `tower-sessions-moka-store` |
//! | sqlite   | in the main crate's `benches/peers_sqlite.rs` | `tower-sessions-sqlx-store` `SqliteStore`, temp file, its default pool |
//! | postgres | `PostgresStore`, own schema         | `tower-sessions-sqlx-store` `PostgresStore`, own schema, default `PgPool` |
//! | mysql    | `MySqlStore`, own table             | `tower-sessions-sqlx-store` `MySqlStore`, own table, default `MySqlPool` |
//! | redis    | `RedisStore`, own key prefix, also native (`ours-native`) | `tower-sessions-redis-store` (fred), a pool of 6 clients as in its example |
//!
//! The peer stores' newest releases implement tower-sessions-core 0.14 (ours and
//! tower-sessions' `MemoryStore` implement 0.15); the trait and `Record` are the same in both,
//! and each store is driven through the trait of the version it implements.
//!
//! Postgres and Redis are found as the main crate's benches find them
//! (`SESSION_STORES_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`;
//! `SESSION_STORES_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`, whose database
//! holds both MySQL tables, dropped at the end;
//! `SESSION_STORES_REDIS_URL`, default `redis://127.0.0.1:6379`); a backend whose server is
//! absent is skipped with a loud `SKIPPED` line. Both schemas are dropped and our Redis prefix
//! cleared at the end; the fred store's keys (bare ids) are deleted after every sample.

#[path = "../../common/mod.rs"]
mod common;
#[path = "../workload.rs"]
mod workload;

use std::time::Duration;

use criterion::Criterion;
use session_stores::{
    MemoryStore, MySqlStore, PostgresStore, RedisStore, Session, SessionId, SessionStore, TowerSessionsStore,
};
use tokio::runtime::Runtime;
use tower_sessions_moka_store::MokaStore;
use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
use tower_sessions_sqlx_store::sqlx::mysql::MySqlPool;
use tower_sessions_sqlx_store::sqlx::postgres::PgPool;
use tower_sessions_sqlx_store::sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use workload::{Failures, Tower, store};

workload::tower_target!(Tower014, tower_sessions_core_014);

/// One of our stores through its own [`SessionStore`] trait, without the adapter: the four
/// calls as `create`, `set`, `get` and `destroy` of a [`Session`] made from the same data.
struct Native<S>(S);

#[derive(Clone)]
struct NativeRecord {
    id: SessionId,
    session: Session,
}

#[async_trait::async_trait]
impl<S: SessionStore + 'static> workload::Target for Native<S> {
    type Record = NativeRecord;

    fn record(data: &workload::Data, expiry: time::OffsetDateTime) -> NativeRecord {
        let millis = (expiry.unix_timestamp_nanos() / 1_000_000) as i64;
        let data = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        NativeRecord {
            id: SessionId::generate(),
            session: Session::from_parts(data, millis, 0),
        }
    }

    fn with_data(record: &NativeRecord, data: &workload::Data) -> NativeRecord {
        let data = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        NativeRecord {
            id: record.id.clone(),
            session: Session::from_parts(data, record.session.expires_at_millis(), 0),
        }
    }

    async fn create(&self, record: &mut NativeRecord) -> Result<(), String> {
        // As tower-sessions' stores do, a taken id is replaced by a new one.
        while !self
            .0
            .create(&record.id, &record.session)
            .await
            .map_err(|err| err.to_string())?
        {
            record.id = SessionId::generate();
        }
        Ok(())
    }

    async fn save(&self, record: &NativeRecord) -> Result<(), String> {
        self.0
            .set(&record.id, &record.session)
            .await
            .map(drop)
            .map_err(|err| err.to_string())
    }

    async fn load(&self, record: &NativeRecord) -> Result<bool, String> {
        self.0
            .get(&record.id)
            .await
            .map(|found| found.is_some())
            .map_err(|err| err.to_string())
    }

    async fn delete(&self, record: &NativeRecord) -> Result<(), String> {
        self.0
            .destroy(&record.id)
            .await
            .map_err(|err| err.to_string())
    }
}

const POSTGRES_VAR: &str = "SESSION_STORES_POSTGRES_URL";
const POSTGRES_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
const MYSQL_VAR: &str = "SESSION_STORES_MYSQL_URL";
const MYSQL_DEFAULT: &str = "mysql://root@127.0.0.1:3306/test";
const REDIS_VAR: &str = "SESSION_STORES_REDIS_URL";
const REDIS_DEFAULT: &str = "redis://127.0.0.1:6379";
/// Room for every record a sample creates, so the bounded memory stores never evict.
const MEMORY_CAPACITY: usize = 1_000_000;
/// How long a server gets to answer before its backend is skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    let rt = common::runtime();
    let mut c = common::criterion();
    let failures = Failures::default();
    memory(&mut c, &rt, &failures);
    sqlite(&mut c, &rt, &failures);
    postgres(&mut c, &rt, &failures);
    mysql(&mut c, &rt, &failures);
    redis(&mut c, &rt, &failures);
    c.final_summary();
}

fn memory(c: &mut Criterion, rt: &Runtime, failures: &Failures) {
    let stores = [
        store(
            "ours",
            Tower(TowerSessionsStore::new(MemoryStore::new(MEMORY_CAPACITY))),
        ),
        store("ours-native", Native(MemoryStore::new(MEMORY_CAPACITY))),
        store(
            "tower-memory",
            Tower(tower_sessions::MemoryStore::default()),
        ),
        store(
            "tower-moka",
            Tower014(MokaStore::new(Some(MEMORY_CAPACITY as u64))),
        ),
    ];
    workload::run(c, rt, "memory", &stores, failures);
}

fn sqlite(c: &mut Criterion, rt: &Runtime, failures: &Failures) {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("tower.db"))
        .create_if_missing(true);
    let peer = rt.block_on(async {
        let pool = SqlitePool::connect_with(options)
            .await
            .expect("open the SQLite file");
        let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
        store
            .migrate()
            .await
            .expect("migrate the sqlx SQLite store");
        store
    });
    workload::run(
        c,
        rt,
        "sqlite",
        &[store("tower-sqlx", Tower014(peer))],
        failures,
    );
}

/// A schema name of our own for this run.
fn schema(who: &str) -> String {
    let run: String = SessionId::generate()
        .as_str()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(16)
        .collect();
    format!("peers_{who}_{run}")
}

fn postgres(c: &mut Criterion, rt: &Runtime, failures: &Failures) {
    let url = std::env::var(POSTGRES_VAR).unwrap_or_else(|_| POSTGRES_DEFAULT.to_string());
    let pool = match rt.block_on(async {
        tokio::time::timeout(CONNECT_TIMEOUT, PgPool::connect(&url))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|err| err.to_string())
    }) {
        Ok(pool) => pool,
        Err(err) => {
            eprintln!(
                "\n*** SKIPPED: peers-postgres, no server at {url}: {err} (set {POSTGRES_VAR}) ***\n"
            );
            return;
        }
    };
    let (ours_schema, peer_schema) = (schema("ours"), schema("tower"));
    let (ours, peer) = rt.block_on(async {
        let ours = PostgresStore::builder()
            .schema(&ours_schema)
            .connect(&url)
            .await
            .expect("connect our store");
        ours.migrate().await.expect("migrate our store");
        let peer = tower_sessions_sqlx_store::PostgresStore::new(pool.clone())
            .with_schema_name(&peer_schema)
            .expect("a valid schema name");
        peer.migrate().await.expect("migrate the sqlx store");
        (ours, peer)
    });
    let stores = [
        store("ours", Tower(TowerSessionsStore::new(ours))),
        store("tower-sqlx", Tower014(peer)),
    ];
    workload::run(c, rt, "postgres", &stores, failures);
    drop(stores);
    rt.block_on(async {
        for schema in [&ours_schema, &peer_schema] {
            let drop_schema = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
            if let Err(err) = tower_sessions_sqlx_store::sqlx::query(&drop_schema)
                .execute(&pool)
                .await
            {
                eprintln!("\n*** could not drop schema {schema}: {err} ***\n");
            }
        }
    });
}

fn mysql(c: &mut Criterion, rt: &Runtime, failures: &Failures) {
    let url = std::env::var(MYSQL_VAR).unwrap_or_else(|_| MYSQL_DEFAULT.to_string());
    let pool = match rt.block_on(async {
        tokio::time::timeout(CONNECT_TIMEOUT, MySqlPool::connect(&url))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|err| err.to_string())
    }) {
        Ok(pool) => pool,
        Err(err) => {
            eprintln!(
                "\n*** SKIPPED: peers-mysql, no server at {url}: {err} (set {MYSQL_VAR}) ***\n"
            );
            return;
        }
    };
    let (ours_table, peer_table) = (schema("ours"), schema("tower"));
    // The peer makes its table in a schema (a database) of its choosing: the URL's.
    let database = url
        .rsplit_once('/')
        .map(|(_, db)| db.split('?').next().unwrap_or(db).to_string())
        .unwrap_or_else(|| "test".into());
    let (ours, peer) = rt.block_on(async {
        let ours = MySqlStore::builder()
            .table(&ours_table)
            .connect(&url)
            .await
            .expect("connect our store");
        ours.migrate().await.expect("migrate our store");
        let peer = tower_sessions_sqlx_store::MySqlStore::new(pool.clone())
            .with_schema_name(&database)
            .expect("a valid schema name")
            .with_table_name(&peer_table)
            .expect("a valid table name");
        peer.migrate().await.expect("migrate the sqlx store");
        (ours, peer)
    });
    let stores = [
        store("ours", Tower(TowerSessionsStore::new(ours))),
        store("tower-sqlx", Tower014(peer)),
    ];
    workload::run(c, rt, "mysql", &stores, failures);
    drop(stores);
    rt.block_on(async {
        for table in [&ours_table, &peer_table] {
            let drop_table = format!("DROP TABLE IF EXISTS `{table}`");
            if let Err(err) = tower_sessions_sqlx_store::sqlx::query(&drop_table)
                .execute(&pool)
                .await
            {
                eprintln!("\n*** could not drop table {table}: {err} ***\n");
            }
        }
    });
}

fn redis(c: &mut Criterion, rt: &Runtime, failures: &Failures) {
    let url = std::env::var(REDIS_VAR).unwrap_or_else(|_| REDIS_DEFAULT.to_string());
    let pool = match rt.block_on(async {
        let config = Config::from_url(&url).map_err(|err| err.to_string())?;
        let pool = Pool::new(config, None, None, None, 6).map_err(|err| err.to_string())?;
        tokio::time::timeout(CONNECT_TIMEOUT, pool.init())
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|err| err.to_string())?;
        Ok::<_, String>(pool)
    }) {
        Ok(pool) => pool,
        Err(err) => {
            eprintln!(
                "\n*** SKIPPED: peers-redis, no server at {url}: {err} (set {REDIS_VAR}) ***\n"
            );
            return;
        }
    };
    let prefix = format!("peers:ours:{}:", SessionId::generate().as_str());
    let ours = rt
        .block_on(RedisStore::builder(&url).key_prefix(prefix).connect())
        .expect("connect our store");
    let ours = TowerSessionsStore::new(ours);
    let stores = [
        store("ours", Tower(ours.clone())),
        store("ours-native", Native(ours.inner_arc())),
        store(
            "tower-fred",
            Tower014(tower_sessions_redis_store::RedisStore::new(pool.clone())),
        ),
    ];
    workload::run(c, rt, "redis", &stores, failures);
    rt.block_on(async {
        if let Err(err) = ours.inner().clear().await {
            eprintln!("\n*** could not clear our Redis prefix: {err} ***\n");
        }
        let _ = pool.quit().await;
    });
}
