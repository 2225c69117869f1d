//! Throttled touch: what a session that is only read costs when every request extends it
//! (tower-sessions' `with_always_save(true)`), on Redis and Postgres, in one run.
//!
//! 1. **Writes per 1,000 requests**, counted by the servers themselves: Redis' `EVALSHA`
//!    calls (every write and touch of the store is a script; a read is a plain `GET`) from
//!    `INFO commandstats`; on Postgres, a row trigger on the store's table that counts every
//!    row it inserts, updates or deletes (the statistics views lag by up to ten seconds;
//!    the timed requests below use another table, without the trigger). 1,000 requests of one session, 10 ms apart (10 s), with an
//!    idle timeout of 10 s: the requests of a user who keeps clicking. Modes: `every`
//!    (no throttle: each request rewrites the session), `throttle-0.1` and `throttle-0.25`
//!    (`TowerSessionsStore::with_touch_throttle`). Printed as `writes/1000 <backend> <mode> N`.
//! 2. **One request's time** (`throttled-touch/<backend>/<mode>`): the adapter's `load` then
//!    `save` of a record whose data did not change and whose expiry moved by one
//!    millisecond: `every` writes it, `throttle-0.1` skips it.
//!
//! Reads `SESSION_STORES_REDIS_URL` and `SESSION_STORES_POSTGRES_URL` (the tests' defaults);
//! a backend without a reachable server is skipped loudly.

use std::time::Duration;

use criterion::Criterion;
use session_stores::adapters::tower_sessions::TowerSessionsStore;
use session_stores::{PostgresStore, RedisStore, SessionId, SessionStore};
use tower_sessions_core::SessionStore as _;
use tower_sessions_core::session::{Id, Record};

#[path = "common/mod.rs"]
mod common;

const IDLE: Duration = Duration::from_secs(10);
const REQUESTS: usize = 1000;
const PACE: Duration = Duration::from_millis(10);

#[derive(Clone, Copy)]
enum Mode {
    Every,
    Throttle(f64),
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Every => "every".into(),
            Mode::Throttle(f) => format!("throttle-{f}"),
        }
    }

    fn adapter(
        self,
        store: std::sync::Arc<dyn SessionStore>,
    ) -> TowerSessionsStore<dyn SessionStore> {
        let adapter = TowerSessionsStore::from_arc(store);
        match self {
            Mode::Every => adapter,
            Mode::Throttle(f) => adapter.with_touch_throttle(f),
        }
    }
}

fn expiry_in(idle: Duration) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + idle
}

/// One request that only reads its session: load, then save with the expiry moved on.
async fn request(adapter: &TowerSessionsStore<dyn SessionStore>, id: Id, idle: Duration) {
    let mut record = adapter.load(&id).await.expect("load").expect("live");
    record.expiry_date = expiry_in(idle);
    adapter.save(&record).await.expect("save");
}

async fn new_session(adapter: &TowerSessionsStore<dyn SessionStore>) -> Id {
    let mut record = Record {
        id: Id::default(),
        data: [("user".to_string(), serde_json::json!("ada"))]
            .into_iter()
            .collect(),
        expiry_date: expiry_in(IDLE),
    };
    adapter.create(&mut record).await.expect("create");
    record.id
}

/// A boxed future, as the count and clean-up callbacks return.
type Boxed<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

/// A backend under test: its store and how to read its server's write count.
struct Backend {
    name: &'static str,
    /// The store whose writes are counted.
    store: std::sync::Arc<dyn SessionStore>,
    /// The store the requests are timed on (on Postgres, a table without the trigger).
    timed: std::sync::Arc<dyn SessionStore>,
    writes: Box<dyn Fn() -> Boxed<u64>>,
    /// Removes what the bench made on the server.
    drop: Option<Box<dyn Fn() -> Boxed<()>>>,
}

async fn redis_backend() -> Option<Backend> {
    let url = std::env::var("SESSION_STORES_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench:throttle:{}:", SessionId::generate());
    let store = match tokio::time::timeout(
        Duration::from_secs(5),
        RedisStore::builder(&url).key_prefix(prefix).connect(),
    )
    .await
    {
        Ok(Ok(store)) => store,
        _ => {
            eprintln!("\n*** SKIPPED: throttled-touch on redis, no server at {url} ***\n");
            return None;
        }
    };
    let client = redis::Client::open(url.as_str()).expect("a redis url");
    let writes = move || {
        let client = client.clone();
        Box::pin(async move {
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("connect");
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut conn)
                .await
                .expect("INFO");
            info.lines()
                .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        }) as Boxed<u64>
    };
    let store: std::sync::Arc<dyn SessionStore> = std::sync::Arc::new(store);
    Some(Backend {
        drop: None,
        name: "redis",
        timed: store.clone(),
        store,
        writes: Box::new(writes),
    })
}

async fn postgres_backend() -> Option<Backend> {
    let url = std::env::var("SESSION_STORES_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let table = format!(
        "bench_throttle_{}",
        SessionId::generate().as_str().to_ascii_lowercase()
    )
    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
    let table: String = table.chars().take(40).collect();
    let store = match tokio::time::timeout(
        Duration::from_secs(5),
        PostgresStore::builder()
            .schema(&table)
            .table("counted")
            .connect(&url),
    )
    .await
    {
        Ok(Ok(store)) => store,
        _ => {
            eprintln!("\n*** SKIPPED: throttled-touch on postgres, no server at {url} ***\n");
            return None;
        }
    };
    store.migrate().await.expect("migrate");
    let timed = PostgresStore::builder()
        .schema(&table)
        .table("timed")
        .connect(&url)
        .await
        .expect("connect");
    timed.migrate().await.expect("migrate");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    for statement in [
        format!("CREATE TABLE {table}.writes (n bigint NOT NULL)"),
        format!("INSERT INTO {table}.writes VALUES (0)"),
        format!(
            "CREATE FUNCTION {table}.count() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN UPDATE {table}.writes SET n = n + 1; RETURN NULL; END $$"
        ),
        format!(
            "CREATE TRIGGER count AFTER INSERT OR UPDATE OR DELETE ON {table}.counted \
             FOR EACH ROW EXECUTE FUNCTION {table}.count()"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .expect("the counting trigger");
    }
    let dropper = {
        let (pool, table) = (pool.clone(), table.clone());
        move || {
            let (pool, table) = (pool.clone(), table.clone());
            Box::pin(async move {
                let drop = format!("DROP SCHEMA IF EXISTS {table} CASCADE");
                sqlx::query(sqlx::AssertSqlSafe(drop))
                    .execute(&pool)
                    .await
                    .expect("drop the bench schema");
            }) as Boxed<()>
        }
    };
    let writes = move || {
        let (pool, table) = (pool.clone(), table.clone());
        Box::pin(async move {
            let row: (i64,) =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT n FROM {table}.writes")))
                    .fetch_one(&pool)
                    .await
                    .expect("the write count");
            row.0 as u64
        }) as Boxed<u64>
    };
    Some(Backend {
        drop: Some(Box::new(dropper)),
        name: "postgres",
        timed: std::sync::Arc::new(timed),
        store: std::sync::Arc::new(store),
        writes: Box::new(writes),
    })
}

const MODES: [Mode; 3] = [Mode::Every, Mode::Throttle(0.1), Mode::Throttle(0.25)];

fn main() {
    let rt = common::runtime();
    let backends: Vec<Backend> = rt
        .block_on(async { vec![redis_backend().await, postgres_backend().await] })
        .into_iter()
        .flatten()
        .collect();
    // 1. Writes per 1,000 requests, as the servers count them.
    for backend in &backends {
        for mode in MODES {
            let writes = rt.block_on(async {
                let adapter = mode.adapter(backend.store.clone());
                let id = new_session(&adapter).await;
                let before = (backend.writes)().await;
                for _ in 0..REQUESTS {
                    request(&adapter, id, IDLE).await;
                    tokio::time::sleep(PACE).await;
                }
                (backend.writes)().await - before
            });
            println!("writes/1000 {} {} {writes}", backend.name, mode.name());
        }
    }
    // 2. One request's time.
    let mut c: Criterion = common::criterion();
    for backend in &backends {
        let mut group = c.benchmark_group(format!("throttled-touch/{}", backend.name));
        for mode in [Mode::Every, Mode::Throttle(0.1)] {
            let adapter = mode.adapter(backend.timed.clone());
            let id = rt.block_on(new_session(&adapter));
            group.bench_function(mode.name(), |b| {
                b.iter(|| rt.block_on(request(&adapter, id, Duration::from_secs(3600))))
            });
        }
        group.finish();
    }
    rt.block_on(async {
        for backend in &backends {
            backend.store.clear().await.expect("clear");
            backend.timed.clear().await.expect("clear");
            if let Some(drop) = &backend.drop {
                drop().await;
            }
        }
    });
    c.final_summary();
}
