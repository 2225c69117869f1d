//! "Log out everywhere": listing and ending 1, 10 and 1000 sessions of one owner in a store
//! that holds 1M other sessions (file: 100k), per backend, in one run.
//!
//! Groups `owners-<backend>/sessions_of` (without data) and `owners-<backend>/destroy_owner`,
//! parameter the owner's session count. `destroy_owner` is timed alone: the owner's sessions
//! are written again, untimed, before each call. `OWNERS_BENCH_POPULATION` overrides the
//! background population (for a quick try); Postgres and Redis are found as the other benches
//! find them, and skipped loudly when absent.

#[path = "common/mod.rs"]
mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use session_stores::{
    FileStore, MemoryStore, Owner, PostgresStore, RedisStore, Session, SessionId, SessionStore,
    SqliteStore,
};
use tokio::runtime::Runtime;

const OWNED: [usize; 3] = [1, 10, 1000];
const WRITERS: usize = 64;

fn population(default: usize) -> usize {
    std::env::var("OWNERS_BENCH_POPULATION")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(default, |n: usize| n.min(default))
}

fn session(owner: Option<&Owner>) -> Session {
    common::sample(200, 1).with_owner(owner.cloned())
}

/// Writes `count` sessions through the store, `WRITERS` at a time; returns their ids.
async fn write_many(
    store: &Arc<dyn SessionStore>,
    count: usize,
    owner: Option<&Owner>,
) -> Vec<SessionId> {
    let mut tasks = Vec::new();
    let writers = WRITERS.min(count.max(1));
    for writer in 0..writers {
        let store = Arc::clone(store);
        let session = session(owner);
        let share = count / writers + usize::from(writer < count % writers);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(share);
            for _ in 0..share {
                let id = SessionId::generate();
                store.set(&id, &session).await.expect("write a session");
                ids.push(id);
            }
            ids
        }));
    }
    let mut ids = Vec::with_capacity(count);
    for task in tasks {
        ids.extend(task.await.expect("a writer"));
    }
    ids
}

/// Times `op` alone over `iters` runs, running `setup` untimed before each.
async fn timed<S, SF, O, OF>(iters: u64, mut setup: S, mut op: O) -> Duration
where
    S: FnMut() -> SF,
    SF: Future<Output = ()>,
    O: FnMut() -> OF,
    OF: Future<Output = ()>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        setup().await;
        let start = Instant::now();
        op().await;
        total += start.elapsed();
    }
    total
}

fn bench_backend(c: &mut Criterion, rt: &Runtime, backend: &str, store: Arc<dyn SessionStore>) {
    let mut group = c.benchmark_group(format!("owners-{backend}/sessions_of"));
    let owners: Vec<(usize, Owner)> = OWNED
        .iter()
        .map(|&n| (n, Owner::new(format!("bench-owner-{n}")).expect("owner")))
        .collect();
    for (n, owner) in &owners {
        rt.block_on(write_many(&store, *n, Some(owner)));
        group.bench_with_input(BenchmarkId::new("store", n), n, |b, &n| {
            b.to_async(rt).iter(|| async {
                let listed = store.sessions_of(owner, false).await.expect("sessions_of");
                assert_eq!(listed.len(), n);
            })
        });
    }
    group.finish();
    for (_, owner) in &owners {
        rt.block_on(store.destroy_owner(owner, None))
            .expect("end the listed sessions");
    }
    let mut group = c.benchmark_group(format!("owners-{backend}/destroy_owner"));
    for (n, owner) in &owners {
        group.bench_with_input(BenchmarkId::new("store", n), n, |b, &n| {
            b.to_async(rt).iter_custom(|iters| {
                let store = Arc::clone(&store);
                async move {
                    timed(
                        iters,
                        || {
                            let store = Arc::clone(&store);
                            async move {
                                write_many(&store, n, Some(owner)).await;
                            }
                        },
                        || async {
                            let ended = store.destroy_owner(owner, None).await.expect("end");
                            assert_eq!(ended, n as u64);
                        },
                    )
                    .await
                }
            })
        });
    }
    group.finish();
    rt.block_on(store.clear()).expect("clear");
}

fn main() {
    let rt = common::runtime();
    let mut c = common::criterion();
    let million = population(1_000_000);

    {
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new(million + 10_000));
        rt.block_on(async {
            for _ in 0..million {
                store
                    .set(&SessionId::generate(), &session(None))
                    .await
                    .expect("fill");
            }
        });
        bench_backend(&mut c, &rt, "memory", store);
    }

    {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store: Arc<dyn SessionStore> =
            Arc::new(rt.block_on(FileStore::new(dir.path())).expect("file store"));
        rt.block_on(write_many(&store, population(100_000), None));
        bench_backend(&mut c, &rt, "file", store);
    }

    {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("owners.db");
        let store = rt.block_on(SqliteStore::open(&path)).expect("sqlite store");
        // The background rows in one raw transaction: a million store writes would take the
        // whole run.
        let mut raw = rusqlite::Connection::open(&path).expect("open the database");
        raw.busy_timeout(Duration::from_secs(30))
            .expect("busy timeout");
        let tx = raw.transaction().expect("a transaction");
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO sessions (id, data, expires_at, version) VALUES (?1, ?2, ?3, 1)",
                )
                .expect("prepare");
            let data = serde_json::to_string(session(None).data()).expect("encode");
            for _ in 0..million {
                insert
                    .execute((SessionId::generate().as_str(), &data, common::expiry()))
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
        drop(raw);
        bench_backend(&mut c, &rt, "sqlite", Arc::new(store));
    }

    let pg_url = std::env::var("SESSION_STORES_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    match rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(5),
            PostgresStore::builder()
                .table("bench_owners")
                // Clearing a million rows takes longer than the default deadline.
                .operation_timeout(Duration::from_secs(600))
                .connect(&pg_url),
        )
        .await
    }) {
        Ok(Ok(store)) => {
            rt.block_on(async {
                store.migrate().await.expect("migrate");
                store.clear().await.expect("clear");
                sqlx::query(
                    "INSERT INTO bench_owners (id, data, expires_at, version) \
                     SELECT 'bg' || g, $1::jsonb, now() + interval '1 day', 1 \
                     FROM generate_series(1, $2) g",
                )
                .bind(serde_json::to_string(session(None).data()).expect("encode"))
                .bind(million as i64)
                .execute(store.pool())
                .await
                .expect("fill");
                sqlx::query("ANALYZE bench_owners")
                    .execute(store.pool())
                    .await
                    .expect("analyze");
            });
            bench_backend(&mut c, &rt, "postgres", Arc::new(store));
        }
        Ok(Err(err)) => eprintln!("\n*** SKIPPED: owners bench on postgres: {err} ***\n"),
        Err(_) => eprintln!("\n*** SKIPPED: owners bench on postgres: timed out ***\n"),
    }

    let redis_url = std::env::var("SESSION_STORES_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    match rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(5),
            RedisStore::builder(&redis_url)
                .key_prefix("bench-owners:")
                .operation_timeout(Duration::from_secs(600))
                .connect(),
        )
        .await
    }) {
        Ok(Ok(store)) => {
            let store: Arc<dyn SessionStore> = Arc::new(store);
            rt.block_on(async {
                store.clear().await.expect("clear");
                write_many(&store, million, None).await;
            });
            bench_backend(&mut c, &rt, "redis", store);
        }
        Ok(Err(err)) => eprintln!("\n*** SKIPPED: owners bench on redis: {err} ***\n"),
        Err(_) => eprintln!("\n*** SKIPPED: owners bench on redis: timed out ***\n"),
    }
    c.final_summary();
}
