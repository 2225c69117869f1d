//! Soak tests: every backend under a mixed workload from 64 tasks, checked against a model.
//!
//! Each task owns its own ids and keeps a model of what each should hold (data, version,
//! expiry). 90% of operations are `get`s, each compared with the model exactly (a torn or
//! stale value fails); the rest are `set`, `touch` and `destroy`, whose results are checked
//! too. At the end every id is checked once more. The tasks run at the same time on one
//! store, so the backend sees 64-way concurrency throughout.
//!
//! Fault variants restart the server under the soak (Redis, with `appendonly yes`) or kill
//! the store's database connections (Postgres, `pg_terminate_backend`). Operations in flight
//! may then fail with *transient* errors; a write whose reply was lost may or may not have
//! happened, so the model keeps both outcomes until the next `get` says which. Any other
//! error, any value matching neither outcome, and any acknowledged write that is missing
//! fails the test.
//!
//! The operation count per task is `SESSION_STORES_SOAK_OPS` (default 150, so CI stays
//! quick); set it to thousands for a long soak.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use session_stores::{Error, FRESH_VERSION_SPAN, Session, SessionId, SessionStore, now_millis};

const TASKS: usize = 64;
const IDS_PER_TASK: usize = 4;

fn ops_per_task() -> usize {
    std::env::var("SESSION_STORES_SOAK_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

/// The version of a [`State::Live`] that starts a new incarnation before the store has said
/// which one: any fresh version (`1..=FRESH_VERSION_SPAN`) matches. No store assigns 0.
const FRESH: u64 = 0;

/// What an id holds, as far as the model knows.
#[derive(Clone, Debug, PartialEq)]
enum State {
    Absent,
    Live {
        data: Map<String, Value>,
        expires_at: i64,
        /// The version, or [`FRESH`] while unknown.
        version: u64,
    },
}

impl State {
    /// The version a `set` over this state stores: one more over a live session (whose
    /// version is known: the model reads an uncertain id before writing it), a fresh one
    /// over an absent session.
    fn next_version(&self) -> u64 {
        match self {
            State::Absent => FRESH,
            State::Live { version, .. } => version + 1,
        }
    }

    /// Whether a store's answer `version` is the one this state expects.
    fn version_matches(expected: u64, version: u64) -> bool {
        if expected == FRESH {
            (1..=FRESH_VERSION_SPAN).contains(&version)
        } else {
            version == expected
        }
    }

    /// This state with its version as the store reported it in `got`.
    fn pinned(self, got: &Option<Session>) -> State {
        match (self, got) {
            (
                State::Live {
                    data, expires_at, ..
                },
                Some(s),
            ) => State::Live {
                data,
                expires_at,
                version: s.version(),
            },
            (state, _) => state,
        }
    }

    fn matches(&self, got: &Option<Session>) -> bool {
        match (self, got) {
            (State::Absent, None) => true,
            (
                State::Live {
                    data,
                    expires_at,
                    version,
                },
                Some(s),
            ) => {
                s.data() == data
                    && s.expires_at_millis() == *expires_at
                    && State::version_matches(*version, s.version())
            }
            _ => false,
        }
    }
}

/// Counts of what a soak did.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    gets: AtomicU64,
    writes: AtomicU64,
    transient: AtomicU64,
    resolved_uncertain: AtomicU64,
}

/// What a fault injector sees of a running soak: whether it has ended, and how far it got.
/// Injectors that must fire while the soak runs wait on [`Progress::reached`] rather than
/// on a clock, so a fast soak cannot end before the fault it exists to test.
#[derive(Clone)]
struct Progress {
    done: Arc<AtomicBool>,
    tally: Arc<Tally>,
    total: u64,
}

impl Progress {
    fn ended(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits until `percent` of the soak's operations are done; false if it ended first.
    async fn reached(&self, percent: u64) -> bool {
        let target = self.total * percent / 100;
        while self.tally.ops.load(Ordering::Relaxed) < target {
            if self.ended() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        !self.ended()
    }
}

/// A deterministic pseudo-random sequence per task (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn payload(task: usize, counter: u64) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("task".into(), json!(task));
    map.insert("counter".into(), json!(counter));
    // A body whose every part depends on the counter, so a torn write cannot match.
    map.insert(
        "body".into(),
        json!(format!("{task}-{counter}-").repeat(40)),
    );
    map.insert("list".into(), json!(vec![counter; 16]));
    map
}

/// Runs one task's share of the soak. `faults` says whether transient errors are expected.
async fn run_task(
    store: Arc<dyn SessionStore>,
    task: usize,
    ops: usize,
    faults: bool,
    tally: Arc<Tally>,
) -> Result<(), String> {
    let ids: Vec<SessionId> = (0..IDS_PER_TASK).map(|_| SessionId::generate()).collect();
    // Each id's possible states: one when known, two after a write whose reply was lost.
    let mut model: Vec<Vec<State>> = vec![vec![State::Absent]; IDS_PER_TASK];
    let mut rng =
        Rng(0x9E37_79B9_7F4A_7C15 ^ (task as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut counter = 0u64;
    let transient = |err: &Error, what: &str| -> Result<(), String> {
        if faults && err.is_transient() {
            Ok(())
        } else {
            Err(format!(
                "task {task}: {what} failed unexpectedly: {err} ({err:?})"
            ))
        }
    };
    for _ in 0..ops {
        tally.ops.fetch_add(1, Ordering::Relaxed);
        let slot = (rng.next() % IDS_PER_TASK as u64) as usize;
        let id = &ids[slot];
        let roll = rng.next() % 100;
        // An uncertain id is read first, to learn what happened.
        let op = if model[slot].len() > 1 || roll < 90 {
            "get"
        } else if roll < 95 {
            "set"
        } else if roll < 98 {
            "touch"
        } else {
            "destroy"
        };
        match op {
            "get" => {
                tally.gets.fetch_add(1, Ordering::Relaxed);
                match store.get(id).await {
                    Ok(got) => {
                        let Some(state) = model[slot].iter().find(|s| s.matches(&got)).cloned()
                        else {
                            return Err(format!(
                                "task {task}: get returned {got:?}, but the model allows only {:?}",
                                model[slot]
                            ));
                        };
                        if model[slot].len() > 1 {
                            tally.resolved_uncertain.fetch_add(1, Ordering::Relaxed);
                        }
                        model[slot] = vec![state.pinned(&got)];
                    }
                    Err(err) => {
                        tally.transient.fetch_add(1, Ordering::Relaxed);
                        transient(&err, "get")?;
                    }
                }
            }
            "set" => {
                tally.writes.fetch_add(1, Ordering::Relaxed);
                counter += 1;
                let data = payload(task, counter);
                let expires_at = now_millis() + 3_600_000 + counter as i64;
                let session = Session::from_parts(data.clone(), expires_at, 0);
                let before = model[slot][0].clone();
                let next = before.next_version();
                let expected = State::Live {
                    data: data.clone(),
                    expires_at,
                    version: next,
                };
                match store.set(id, &session).await {
                    Ok(version) => {
                        if !State::version_matches(next, version) {
                            return Err(format!(
                                "task {task}: set returned version {version}, the model expected \
                                 {next} (0: a fresh one) after {before:?}"
                            ));
                        }
                        model[slot] = vec![State::Live {
                            data,
                            expires_at,
                            version,
                        }];
                    }
                    Err(err) => {
                        tally.transient.fetch_add(1, Ordering::Relaxed);
                        transient(&err, "set")?;
                        model[slot] = vec![before, expected];
                    }
                }
            }
            "touch" => {
                tally.writes.fetch_add(1, Ordering::Relaxed);
                let before = model[slot][0].clone();
                let new_expiry = now_millis() + 7_200_000 + (rng.next() % 1000) as i64;
                let after = match &before {
                    State::Absent => State::Absent,
                    State::Live { data, version, .. } => State::Live {
                        data: data.clone(),
                        expires_at: new_expiry,
                        version: *version,
                    },
                };
                let when = session_stores::from_millis(new_expiry);
                match store.touch(id, when).await {
                    Ok(existed) => {
                        if existed != (before != State::Absent) {
                            return Err(format!(
                                "task {task}: touch returned {existed} for {before:?}"
                            ));
                        }
                        model[slot] = vec![after];
                    }
                    Err(err) => {
                        tally.transient.fetch_add(1, Ordering::Relaxed);
                        transient(&err, "touch")?;
                        model[slot] = vec![before, after];
                    }
                }
            }
            _ => {
                tally.writes.fetch_add(1, Ordering::Relaxed);
                let before = model[slot][0].clone();
                match store.destroy(id).await {
                    Ok(()) => model[slot] = vec![State::Absent],
                    Err(err) => {
                        tally.transient.fetch_add(1, Ordering::Relaxed);
                        transient(&err, "destroy")?;
                        model[slot] = vec![before, State::Absent];
                    }
                }
            }
        }
    }
    // The final check: every id, read until the store answers (faults may still be settling).
    for (slot, id) in ids.iter().enumerate() {
        let mut attempts = 0;
        let got = loop {
            match store.get(id).await {
                Ok(got) => break got,
                Err(err) if faults && err.is_transient() && attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(format!("task {task}: final get failed: {err:?}")),
            }
        };
        if !model[slot].iter().any(|s| s.matches(&got)) {
            return Err(format!(
                "task {task}: at the end get returned {got:?}, the model allows only {:?}: \
                 an acknowledged write was lost or a value is torn",
                model[slot]
            ));
        }
    }
    Ok(())
}

/// Runs the soak on `store`; `during` runs alongside it (fault injection) until the soak
/// ends. Returns the tally for the report.
async fn soak<F, Fut>(name: &str, store: Arc<dyn SessionStore>, faults: bool, during: F)
where
    F: FnOnce(Progress) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let ops = ops_per_task();
    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));
    let injector = tokio::spawn(during(Progress {
        done: Arc::clone(&done),
        tally: Arc::clone(&tally),
        total: (TASKS * ops) as u64,
    }));
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(run_task(
                Arc::clone(&store),
                task,
                ops,
                faults,
                Arc::clone(&tally),
            ))
        })
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => failures.push(message),
            Err(join) => failures.push(format!("a soak task panicked: {join}")),
        }
    }
    done.store(true, Ordering::SeqCst);
    injector.await.expect("the fault injector panicked");
    eprintln!(
        "soak {name}: {} tasks, {} ops ({} gets, {} writes), {} transient errors, \
         {} uncertain writes resolved, {} failures, {:.1?}",
        TASKS,
        tally.ops.load(Ordering::Relaxed),
        tally.gets.load(Ordering::Relaxed),
        tally.writes.load(Ordering::Relaxed),
        tally.transient.load(Ordering::Relaxed),
        tally.resolved_uncertain.load(Ordering::Relaxed),
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "soak {name} failed:\n{}",
        failures.join("\n")
    );
}

async fn no_faults(_progress: Progress) {}

#[cfg(feature = "memory")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_memory() {
    let store = Arc::new(session_stores::MemoryStore::new(100_000));
    soak("memory", store, false, no_faults).await;
}

#[cfg(feature = "file")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(session_stores::FileStore::new(dir.path()).await.unwrap());
    soak("file", store, false, no_faults).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = session_stores::SqliteStore::open(dir.path().join("soak.db"))
        .await
        .unwrap();
    soak("sqlite", Arc::new(store), false, no_faults).await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use session_stores::PostgresStore;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    const VAR: &str = "SESSION_STORES_POSTGRES_URL";
    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// A store on its own schema and a pool whose connections carry `app` as their
    /// application name, so the fault injector can find them.
    async fn store(url: &str, app: &str, schema: &str) -> (PostgresStore, sqlx::PgPool) {
        let options: PgConnectOptions = url.parse().expect("postgres URL");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.application_name(app))
            .await
            .expect("connect");
        let store = PostgresStore::builder()
            .schema(schema)
            .table("sessions")
            .build(pool.clone())
            .expect("names");
        store.migrate().await.expect("migrate");
        (store, pool)
    }

    async fn drop_schema(url: &str, schema: &str) {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .expect("admin");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&admin)
        .await
        .expect("drop schema");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn soak_postgres() {
        let Some(url) = support::service_url(VAR, DEFAULT_URL, 5432) else {
            return;
        };
        let schema = support::unique_name("sst_soak_");
        let app = support::unique_name("soak_");
        let (store, _pool) = store(&url, &app, &schema).await;
        soak("postgres", Arc::new(store), false, no_faults).await;
        drop_schema(&url, &schema).await;
    }

    /// `pg_terminate_backend` on every connection of the store's pool, every 150 ms from when
    /// a tenth of the soak is done until it ends: the pool reconnects and no acknowledged
    /// write is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn soak_postgres_with_terminated_backends() {
        let Some(url) = support::service_url(VAR, DEFAULT_URL, 5432) else {
            return;
        };
        let schema = support::unique_name("sst_soak_");
        let app = support::unique_name("soak_");
        let (store, _pool) = store(&url, &app, &schema).await;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("admin");
        let killed = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&killed);
        soak(
            "postgres+terminate",
            Arc::new(store),
            true,
            move |progress: Progress| async move {
                // Start once the pool's connections are in use, not on a clock.
                progress.reached(10).await;
                while !progress.ended() {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = $1",
                    )
                    .bind(&app)
                    .fetch_one(&admin)
                    .await
                    .unwrap_or(0);
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            },
        )
        .await;
        let killed = killed.load(Ordering::Relaxed);
        eprintln!("soak postgres+terminate: {killed} backends terminated");
        assert!(
            killed > 0,
            "the fault injector terminated no backend: the test proved nothing"
        );
        drop_schema(&url, &schema).await;
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use session_stores::RedisStore;
    use std::process::{Child, Command, Stdio};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn soak_redis() {
        let Some(url) =
            support::service_url("SESSION_STORES_REDIS_URL", "redis://127.0.0.1:6379", 6379)
        else {
            return;
        };
        let store = RedisStore::builder(&url)
            .key_prefix(format!("{}:", support::unique_name("sst:soak:")))
            .connect()
            .await
            .expect("connect");
        let store = Arc::new(store);
        soak(
            "redis",
            Arc::clone(&store) as Arc<dyn SessionStore>,
            false,
            no_faults,
        )
        .await;
        store.clear().await.expect("clean up");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn soak_redis_cluster() {
        let Some(urls) = support::service_urls("SESSION_STORES_REDIS_CLUSTER_URLS", 6379) else {
            return;
        };
        let store = RedisStore::cluster_builder(&urls)
            .key_prefix(format!("{}:", support::unique_name("sst:soak:")))
            .connect()
            .await
            .expect("connect");
        let store = Arc::new(store);
        soak(
            "redis cluster",
            Arc::clone(&store) as Arc<dyn SessionStore>,
            false,
            no_faults,
        )
        .await;
        store.clear().await.expect("clean up");
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    fn start_redis(port: u16, dir: &std::path::Path) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// A test-owned `redis-server` with `appendonly yes` and `appendfsync always` is killed
    /// with SIGKILL and restarted twice during the soak, when a quarter and when half of its
    /// operations are done. The same store keeps working
    /// afterwards, and every acknowledged write survives (the model checks each id).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn soak_redis_with_restarts() {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            let message =
                "SKIPPED: redis-server is not installed (the Debian package redis-server)";
            assert!(!support::in_ci(), "{message}");
            eprintln!("\n*** {message} ***\n");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let server = Arc::new(std::sync::Mutex::new(start_redis(port, dir.path())));
        let store = RedisStore::builder(&format!("redis://127.0.0.1:{port}"))
            .response_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .pool_wait_timeout(Duration::from_millis(500))
            .connect()
            .await
            .expect("connect");
        let restarts = Arc::new(AtomicU64::new(0));
        let (srv, count, path) = (
            Arc::clone(&server),
            Arc::clone(&restarts),
            dir.path().to_owned(),
        );
        soak(
            "redis+restart",
            Arc::new(store),
            true,
            move |progress: Progress| async move {
                // Restart when a quarter and when half of the operations are done: on a
                // clock, a fast soak could end before the first restart.
                for percent in [25, 50] {
                    if !progress.reached(percent).await {
                        break;
                    }
                    let path = path.clone();
                    let srv = Arc::clone(&srv);
                    tokio::task::spawn_blocking(move || {
                        let mut child = srv.lock().unwrap();
                        child.kill().expect("kill redis-server");
                        child.wait().expect("reap redis-server");
                        std::thread::sleep(Duration::from_millis(200));
                        *child = start_redis(port, &path);
                    })
                    .await
                    .expect("restart");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            },
        )
        .await;
        let restarts = restarts.load(Ordering::Relaxed);
        eprintln!("soak redis+restart: {restarts} restarts");
        assert!(
            restarts > 0,
            "the soak ended before any restart: the test proved nothing"
        );
        let mut child = server.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The soak's own teeth: a store that loses one write in a hundred must fail it.
#[cfg(feature = "memory")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_catches_a_store_that_drops_writes() {
    use session_stores::{MemoryStore, Result, async_trait};
    use std::time::SystemTime;

    struct Lossy(MemoryStore, AtomicU64);

    #[async_trait]
    impl SessionStore for Lossy {
        async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
            self.0.get(id).await
        }
        async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
            if self.1.fetch_add(1, Ordering::Relaxed) % 100 == 99 {
                // Acknowledge the write without doing it.
                let version = self.0.get(id).await?.map_or(0, |s| s.version());
                return Ok(session_stores::next_version(version));
            }
            self.0.set(id, session).await
        }
        async fn destroy(&self, id: &SessionId) -> Result<()> {
            self.0.destroy(id).await
        }
        async fn touch(&self, id: &SessionId, at: SystemTime) -> Result<bool> {
            self.0.touch(id, at).await
        }
        async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
            self.0.create(id, session).await
        }
        async fn set_if_version(&self, id: &SessionId, s: &Session, v: u64) -> Result<u64> {
            self.0.set_if_version(id, s, v).await
        }
        async fn len(&self) -> Result<u64> {
            self.0.len().await
        }
        async fn clear(&self) -> Result<()> {
            self.0.clear().await
        }
        async fn delete_expired(&self) -> Result<u64> {
            self.0.delete_expired().await
        }
    }

    let store = Arc::new(Lossy(MemoryStore::new(100_000), AtomicU64::new(0)));
    let result = tokio::spawn(async move { soak("lossy", store, false, no_faults).await }).await;
    assert!(result.is_err(), "the soak passed a store that drops writes");
}
