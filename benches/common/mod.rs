//! The shared bench harness: one workload, run against a store and against the raw client
//! doing the same work, in the same run.
//!
//! Every benchmark is named `<backend>/<case>/<param>` with two functions, `store` and `raw`;
//! `benches/report.py` turns criterion's medians into `BENCHMARKS.md` with the ratio
//! `store / raw` for each case.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::{Map, Value, json};
use session_stores::{Session, SessionId, SessionStore, now_millis};
use tokio::runtime::Runtime;

/// The three payload sizes, as serialized session JSON.
pub const PAYLOADS: [(&str, usize); 3] = [("200B", 200), ("4KiB", 4 * 1024), ("64KiB", 64 * 1024)];

/// Concurrency levels for the throughput cases.
pub const TASKS: [usize; 3] = [1, 16, 128];

/// One hour from now, in epoch milliseconds.
pub fn expiry() -> i64 {
    now_millis() + 3_600_000
}

/// A session expiring in an hour, with data whose JSON encoding is about `bytes` long;
/// `variant` changes its content.
pub fn sample(bytes: usize, variant: u64) -> Session {
    Session::from_parts(data(bytes, variant), expiry(), 0)
}

/// Session data whose JSON encoding is about `bytes` long; `variant` changes its content.
pub fn data(bytes: usize, variant: u64) -> Map<String, Value> {
    let base = json!({"user_id": 4242, "csrf": "k2l3j4h5g6f7d8s9", "variant": variant, "blob": ""});
    let overhead = serde_json::to_string(&base).map(|s| s.len()).unwrap_or(80);
    let fill = bytes.saturating_sub(overhead);
    let mut map = match base {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let blob: String = (0..fill)
        .map(|i| char::from(b'a' + ((i as u64 + variant) % 26) as u8))
        .collect();
    map.insert("blob".into(), Value::String(blob));
    map
}

/// A fresh random id.
pub fn new_id() -> SessionId {
    SessionId::generate()
}

/// The operations every backend and every raw client implements.
#[async_trait]
pub trait Target: Send + Sync + 'static {
    /// Reads a session; `true` on a hit.
    async fn get(&self, id: &SessionId) -> bool;
    /// Upserts a session (its data and expiry).
    async fn set(&self, id: &SessionId, session: &Session);
    /// Moves the expiry only.
    async fn touch(&self, id: &SessionId, expires_at: i64) -> bool;
    /// Deletes a session.
    async fn destroy(&self, id: &SessionId);
    /// Inserts only if absent.
    async fn create(&self, id: &SessionId, session: &Session) -> bool;
    /// One compare-and-set round trip: read the version, then write conditionally on it.
    async fn cas(&self, id: &SessionId, session: &Session) -> bool;
    /// Fills the backend with `ids`, all holding `session` (bulk, as fast as the backend
    /// allows).
    async fn fill(&self, ids: &[SessionId], session: &Session) {
        for id in ids {
            self.set(id, session).await;
        }
    }
}

/// Bulk-loads sessions straight into a backend, bypassing the store (for large populations).
pub type BulkFill = Arc<dyn Fn(&[SessionId], &Session) + Send + Sync>;

/// A [`SessionStore`] as a bench [`Target`].
pub struct StoreTarget(pub Arc<dyn SessionStore>, pub Option<BulkFill>);

impl StoreTarget {
    /// The store, filled through its own `set` for population cases.
    pub fn new(store: impl SessionStore + 'static) -> Self {
        StoreTarget(Arc::new(store), None)
    }

    /// The store, filled by `fill` (writing the backend directly) for population cases.
    pub fn with_bulk_fill(store: impl SessionStore + 'static, fill: BulkFill) -> Self {
        StoreTarget(Arc::new(store), Some(fill))
    }
}

#[async_trait]
impl Target for StoreTarget {
    async fn get(&self, id: &SessionId) -> bool {
        self.0.get(id).await.expect("get").is_some()
    }
    async fn set(&self, id: &SessionId, session: &Session) {
        self.0.set(id, session).await.expect("set");
    }
    async fn touch(&self, id: &SessionId, expires_at: i64) -> bool {
        self.0
            .touch(id, session_stores::from_millis(expires_at))
            .await
            .expect("touch")
    }
    async fn destroy(&self, id: &SessionId) {
        self.0.destroy(id).await.expect("destroy");
    }
    async fn create(&self, id: &SessionId, session: &Session) -> bool {
        self.0.create(id, session).await.expect("create")
    }
    async fn cas(&self, id: &SessionId, session: &Session) -> bool {
        let version = self
            .0
            .get(id)
            .await
            .expect("get")
            .map_or(0, |s| s.version());
        self.0.set_if_version(id, session, version).await.is_ok()
    }
    async fn fill(&self, ids: &[SessionId], session: &Session) {
        match &self.1 {
            Some(fill) => fill(ids, session),
            None => {
                for id in ids {
                    self.set(id, session).await;
                }
            }
        }
    }
}

/// What to run for one backend.
pub struct Plan {
    /// The backend's name, the first part of every benchmark id.
    pub backend: &'static str,
    /// Live-session counts for the population cases.
    pub populations: Vec<usize>,
    /// Also run `set_expiry`: a `set` of the same data with a new expiry each time.
    pub expiry_only_set: bool,
}

/// Runs `iters` calls of `op` (given the iteration number) and returns the elapsed time.
async fn timed<F, Fut>(iters: u64, mut op: F) -> Duration
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    for i in 0..iters {
        op(i).await;
    }
    start.elapsed()
}

/// Ids prepared for a batch: `n` fresh ids.
fn ids(n: u64) -> Vec<SessionId> {
    (0..n).map(|_| new_id()).collect()
}

/// Benchmarks every operation, payload, concurrency level and population on `store` and
/// `raw`.
pub fn run_all(
    c: &mut Criterion,
    rt: &Runtime,
    plan: &Plan,
    store: Arc<dyn Target>,
    raw: Arc<dyn Target>,
) {
    let targets = [("store", store), ("raw", raw)];
    operations(c, rt, plan, &targets);
    concurrency(c, rt, plan, &targets);
    populations(c, rt, plan, &targets);
}

fn operations(c: &mut Criterion, rt: &Runtime, plan: &Plan, targets: &[(&str, Arc<dyn Target>)]) {
    for (payload, bytes) in PAYLOADS {
        let d0 = sample(bytes, 0);
        let d1 = sample(bytes, 1);
        let cases: [&str; 10] = [
            "get_hit",
            "get_miss",
            "set_new",
            "set_changed",
            "set_unchanged",
            "set_expiry",
            "touch",
            "destroy",
            "create",
            "set_if_version",
        ];
        for case in cases {
            if case == "set_expiry" && !plan.expiry_only_set {
                continue;
            }
            let mut group = c.benchmark_group(format!("{}/{case}", plan.backend));
            group.throughput(Throughput::Elements(1));
            for (name, target) in targets {
                let target = Arc::clone(target);
                let (d0, d1) = (d0.clone(), d1.clone());
                group.bench_function(BenchmarkId::new(*name, payload), |b| {
                    b.to_async(rt).iter_custom(|iters| {
                        let (t, d0, d1) = (Arc::clone(&target), d0.clone(), d1.clone());
                        async move { one_case(&*t, case, iters, &d0, &d1).await }
                    })
                });
            }
            group.finish();
        }
    }
}

/// Runs `iters` of one operation on prepared state; only the operations are timed. The
/// sessions the case created are destroyed afterwards (untimed), so the backend's size stays
/// the same from one sample to the next.
pub async fn one_case(
    t: &dyn Target,
    case: &str,
    iters: u64,
    d0: &Session,
    d1: &Session,
) -> Duration {
    let (elapsed, pool) = timed_case(t, case, iters, d0, d1).await;
    for id in &pool {
        t.destroy(id).await;
    }
    elapsed
}

async fn timed_case(
    t: &dyn Target,
    case: &str,
    iters: u64,
    d0: &Session,
    d1: &Session,
) -> (Duration, Vec<SessionId>) {
    let exp = expiry();
    match case {
        "get_hit" => {
            let pool = ids(iters.min(256));
            for id in &pool {
                t.set(id, d0).await;
            }
            let elapsed = timed(iters, |i| {
                let id = &pool[(i % pool.len() as u64) as usize];
                async move {
                    assert!(t.get(id).await, "get_hit missed");
                }
            })
            .await;
            (elapsed, pool)
        }
        "get_miss" => {
            let pool = ids(iters);
            let elapsed = timed(iters, |i| {
                let id = &pool[i as usize];
                async move {
                    assert!(!t.get(id).await);
                }
            })
            .await;
            (elapsed, pool)
        }
        "set_new" | "create" => {
            let pool = ids(iters);
            let create = case == "create";
            let elapsed = timed(iters, |i| {
                let id = &pool[i as usize];
                async move {
                    if create {
                        assert!(t.create(id, d0).await);
                    } else {
                        t.set(id, d0).await;
                    }
                }
            })
            .await;
            (elapsed, pool)
        }
        "set_changed" | "set_unchanged" => {
            let pool = ids(iters.min(256));
            for id in &pool {
                t.set(id, d0).await;
            }
            let changed = case == "set_changed";
            let elapsed = timed(iters, |i| {
                let id = &pool[(i % pool.len() as u64) as usize];
                // Changed: alternate between two contents, so every write differs from the last.
                let d = if changed && (i / pool.len() as u64).is_multiple_of(2) {
                    d1
                } else {
                    d0
                };
                async move { t.set(id, d).await }
            })
            .await;
            (elapsed, pool)
        }
        "set_expiry" => {
            let pool = ids(iters.min(256));
            for id in &pool {
                t.set(id, d0).await;
            }
            let elapsed = timed(iters, |i| {
                let id = &pool[(i % pool.len() as u64) as usize];
                let mut d = d0.clone();
                d.set_expires_at_millis(exp + 1 + i as i64);
                async move { t.set(id, &d).await }
            })
            .await;
            (elapsed, pool)
        }
        "touch" => {
            let pool = ids(iters.min(256));
            for id in &pool {
                t.set(id, d0).await;
            }
            let elapsed = timed(iters, |i| {
                let id = &pool[(i % pool.len() as u64) as usize];
                async move {
                    assert!(t.touch(id, exp + 1 + i as i64).await);
                }
            })
            .await;
            (elapsed, pool)
        }
        "destroy" => {
            let pool = ids(iters);
            t.fill(&pool, d0).await;
            let elapsed = timed(iters, |i| {
                let id = &pool[i as usize];
                async move { t.destroy(id).await }
            })
            .await;
            (elapsed, pool)
        }
        "set_if_version" => {
            let pool = ids(iters.min(256));
            for id in &pool {
                t.set(id, d0).await;
            }
            let elapsed = timed(iters, |i| {
                let id = &pool[(i % pool.len() as u64) as usize];
                let d = if i.is_multiple_of(2) { d1 } else { d0 };
                async move {
                    assert!(t.cas(id, d).await, "uncontended CAS failed");
                }
            })
            .await;
            (elapsed, pool)
        }
        other => panic!("unknown case {other}"),
    }
}

/// The task counts of the single-operation concurrency groups (`get_1KiB`, `set_1KiB`).
pub const SINGLE_TASKS: [usize; 2] = [1, 16];

/// How a concurrency group mixes its operations.
#[derive(Clone, Copy)]
enum Mix {
    /// Three `get`s to one `set` of unchanged data.
    ThreeGetsOneSet,
    /// Only `get`s of live sessions.
    Gets,
    /// Only `set`s, each with data other than the session's current data (so that no store
    /// can skip one as unchanged).
    ChangedSets,
}

fn concurrency(c: &mut Criterion, rt: &Runtime, plan: &Plan, targets: &[(&str, Arc<dyn Target>)]) {
    let small = (Arc::new(sample(200, 0)), Arc::new(sample(200, 1)));
    let kib = (Arc::new(sample(1024, 0)), Arc::new(sample(1024, 1)));
    let groups: [(&str, Mix, &[usize], _); 3] = [
        ("mixed_3get_1set_200B", Mix::ThreeGetsOneSet, &TASKS, small),
        ("get_1KiB", Mix::Gets, &SINGLE_TASKS, kib.clone()),
        ("set_1KiB", Mix::ChangedSets, &SINGLE_TASKS, kib),
    ];
    for (name, mix, task_counts, (d0, d1)) in groups {
        let mut group = c.benchmark_group(format!("{}/{name}", plan.backend));
        group.throughput(Throughput::Elements(1));
        for &tasks in task_counts {
            for (name, target) in targets {
                // Written once, outside the samples: a sample times its operations only, and
                // so many of them that a slow write does not shrink it to a handful of
                // reads just after writes. `done` carries on across samples, so that
                // `ChangedSets` always writes the other content.
                let pool: Arc<Vec<SessionId>> = Arc::new(ids(256));
                rt.block_on(async {
                    for id in pool.iter() {
                        target.set(id, &d0).await;
                    }
                });
                let done = Arc::new(AtomicUsize::new(0));
                let work = Work {
                    mix,
                    contents: [Arc::clone(&d0), Arc::clone(&d1)],
                    pool: Arc::clone(&pool),
                    tasks,
                };
                let target = Arc::clone(target);
                group.bench_function(BenchmarkId::new(*name, format!("{tasks}_tasks")), |b| {
                    b.to_async(rt).iter_custom(|iters| {
                        let (t, work, done) =
                            (Arc::clone(&target), work.clone(), Arc::clone(&done));
                        async move {
                            let start = done.fetch_add(iters as usize, Ordering::Relaxed);
                            mixed(t, work, start, iters).await
                        }
                    })
                });
                rt.block_on(async {
                    for id in pool.iter() {
                        target.destroy(id).await;
                    }
                });
            }
        }
        group.finish();
    }
}

/// What a concurrency sample runs: `mix` over the live sessions of `pool`, from `tasks` tasks.
#[derive(Clone)]
struct Work {
    mix: Mix,
    /// The content the sessions were written with, and the other one.
    contents: [Arc<Session>; 2],
    pool: Arc<Vec<SessionId>>,
    tasks: usize,
}

/// Operations `start .. start + iters` of `work`, spread over its tasks; returns wall time,
/// so the median is time per operation at that concurrency (its inverse is throughput).
async fn mixed(t: Arc<dyn Target>, work: Work, start: usize, iters: u64) -> Duration {
    let end = start + iters as usize;
    let next = Arc::new(AtomicUsize::new(start));
    let began = Instant::now();
    let handles: Vec<_> = (0..work.tasks)
        .map(|_| {
            let (t, work, next) = (Arc::clone(&t), work.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let pool = &work.pool;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    let id = &pool[i % pool.len()];
                    match work.mix {
                        Mix::ThreeGetsOneSet if i % 4 == 3 => t.set(id, &work.contents[0]).await,
                        Mix::ThreeGetsOneSet => {
                            t.get(id).await;
                        }
                        Mix::Gets => assert!(t.get(id).await, "get missed"),
                        // Pass k over the pool writes content (k + 1) % 2: never what the
                        // session holds.
                        Mix::ChangedSets => {
                            t.set(id, &work.contents[(i / pool.len() + 1) % 2]).await
                        }
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("bench task");
    }
    began.elapsed()
}

fn populations(c: &mut Criterion, rt: &Runtime, plan: &Plan, targets: &[(&str, Arc<dyn Target>)]) {
    let d0 = sample(200, 0);
    let d1 = sample(200, 1);
    for &population in &plan.populations {
        let label = match population {
            n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
            n if n >= 1_000 => format!("{}k", n / 1_000),
            n => n.to_string(),
        };
        for (name, target) in targets {
            // Fill once per target and population; the cases then read and write inside it.
            let pool: Vec<SessionId> = ids(population as u64);
            rt.block_on(target.fill(&pool, &d0));
            let pool = Arc::new(pool);
            rt.block_on(get_latencies(plan.backend, name, &label, &**target, &pool));
            // Writes so far to this population, across samples: every id is written once
            // per pass through the population, and each pass writes the other content, so
            // no write repeats what the id already holds (no store can skip it).
            let done = Arc::new(AtomicUsize::new(0));
            for case in ["get", "set"] {
                let mut group =
                    c.benchmark_group(format!("{}/population_{case}_200B", plan.backend));
                group.throughput(Throughput::Elements(1));
                let (t, pool) = (Arc::clone(target), Arc::clone(&pool));
                let contents = Arc::new([d1.clone(), d0.clone()]);
                let done = Arc::clone(&done);
                group.bench_function(BenchmarkId::new(*name, &label), |b| {
                    b.to_async(rt).iter_custom(|iters| {
                        let (t, pool) = (Arc::clone(&t), Arc::clone(&pool));
                        let (contents, done) = (Arc::clone(&contents), Arc::clone(&done));
                        async move {
                            // A stride through the population, so reads are spread over it
                            // (7919 is prime, so the stride visits every id once per pass).
                            let stride = 7919usize;
                            let start = done.fetch_add(iters as usize, Ordering::Relaxed);
                            timed(iters, |i| {
                                let n = start + i as usize;
                                let id = &pool[n.wrapping_mul(stride) % pool.len()];
                                let session = &contents[(n / pool.len()) % 2];
                                let t = &t;
                                async move {
                                    if case == "get" {
                                        assert!(t.get(id).await, "population get missed");
                                    } else {
                                        t.set(id, session).await;
                                    }
                                }
                            })
                            .await
                        }
                    })
                });
                group.finish();
            }
        }
    }
}

/// How many single `get`s [`get_latencies`] times.
const LATENCY_SAMPLES: usize = 5_000;

/// Times `LATENCY_SAMPLES` single `get`s spread over the population (after 500 untimed
/// ones), and appends their p50, p99 and maximum to `<target>/criterion/latency.jsonl` for
/// `benches/report.py`. Criterion gives means; a session store's users feel the tail.
async fn get_latencies(
    backend: &str,
    target_name: &str,
    population: &str,
    t: &dyn Target,
    pool: &[SessionId],
) {
    let stride = 104_729usize; // prime: the reads visit ids all over the population
    let mut times = Vec::with_capacity(LATENCY_SAMPLES);
    for n in 0..LATENCY_SAMPLES + 500 {
        let id = &pool[n.wrapping_mul(stride) % pool.len()];
        let start = Instant::now();
        let hit = t.get(id).await;
        let elapsed = start.elapsed();
        assert!(hit, "latency get missed");
        if n >= 500 {
            times.push(elapsed.as_nanos() as u64);
        }
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let line = json!({
        "backend": backend,
        "target": target_name,
        "population": population,
        "p50_ns": at(0.50),
        "p99_ns": at(0.99),
        "max_ns": times[times.len() - 1],
        "samples": times.len(),
    });
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let dir = std::path::Path::new(&dir).join("criterion");
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("latency.jsonl"))?;
        writeln!(file, "{line}")
    });
    if let Err(err) = written {
        eprintln!("could not record get latencies: {err}");
    }
}

/// The criterion settings for every bench: short by default (a quick run of every backend
/// stays within minutes on 2 cores); command-line flags such as `--measurement-time` override
/// them, which `benches/report.sh --long` uses.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500))
        .sample_size(10)
        .without_plots()
        .configure_from_args()
}

/// A multi-threaded runtime for the benches.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
