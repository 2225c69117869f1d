//! The peers workload: one job, run on our stores and on the tower-sessions family's, through
//! tower-sessions' `SessionStore` trait, with the same data and the same criterion ids.
//!
//! This one file is compiled into two benches, so the workload cannot drift between them:
//! `benches/peers/benches/peers.rs` (its own crate, for the peer stores) and the main crate's
//! `benches/peers_sqlite.rs` (our SQLite store, whose `libsqlite3` cannot share a build with
//! sqlx's SQLite).
//!
//! Every record carries the same ~1 KiB of data ([`data`]); the phases are `create` (a new
//! record), `load` (an existing one), `update` (`save` of an existing record with changed
//! data) and `delete`, each at 1 and 16 concurrent tasks. A criterion iteration is one
//! operation per task: a sample's `iters × tasks` operations are dealt round-robin to the
//! tasks, and the sample's time is the wall time until the last task is done divided by the
//! task count, so the median is wall time per operation at that concurrency (as in
//! `benches/common/mod.rs`'s concurrency cases), and even the smallest sample keeps every task
//! busy (a slow store gets few iterations per sample). The records a phase needs are created
//! before the clock starts, and whatever a sample created is deleted after it stops, so the
//! stores stay the same size from one sample to the next.
//!
//! Failed calls are timed like successful ones and counted, per store, phase and task count,
//! into `<criterion dir>/peers-failures.json`, which `benches/report.py` shows in place of a
//! time for the rows that had failures.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::runtime::Runtime;

/// The phases, in the order they run and are reported.
pub const PHASES: [&str; 4] = ["create", "load", "update", "delete"];

/// The task counts.
pub const TASKS: [usize; 2] = [1, 16];

/// The size of a record's data, as JSON.
pub const RECORD_BYTES: usize = 1024;

/// How many distinct records `load` and `update` cycle through.
const POOL: u64 = 256;

/// How often setup retries a failed call before giving up on the sample.
const SETUP_ATTEMPTS: usize = 10;

/// A record's data, as tower-sessions keeps it.
pub type Data = HashMap<String, Value>;

/// Record data whose JSON encoding is [`RECORD_BYTES`] long (within a byte or two), the same
/// for every store; `variant` changes its content but not its size class.
pub fn data(variant: u64) -> Data {
    let mut map = Data::new();
    map.insert("user_id".into(), json!(4242));
    map.insert("csrf".into(), json!("k2l3j4h5g6f7d8s9"));
    map.insert("variant".into(), json!(variant));
    map.insert("blob".into(), json!(""));
    let overhead = serde_json::to_string(&map).map_or(80, |s| s.len());
    let blob: String = (0..RECORD_BYTES.saturating_sub(overhead))
        .map(|i| char::from(b'a' + ((i as u64 + variant) % 26) as u8))
        .collect();
    map.insert("blob".into(), Value::String(blob));
    map
}

/// One store as the workload drives it: tower-sessions' four calls, on the `Record` type of
/// the tower-sessions-core version the store implements (see [`tower_target!`]).
#[async_trait::async_trait]
pub trait Target: Send + Sync + 'static {
    /// tower-sessions' `Record` of that version.
    type Record: Clone + Send + Sync + 'static;
    /// A record with a fresh random id.
    fn record(data: &Data, expiry: OffsetDateTime) -> Self::Record;
    /// The same record (id and expiry) holding other data.
    fn with_data(record: &Self::Record, data: &Data) -> Self::Record;
    /// `SessionStore::create`.
    async fn create(&self, record: &mut Self::Record) -> Result<(), String>;
    /// `SessionStore::save`.
    async fn save(&self, record: &Self::Record) -> Result<(), String>;
    /// `SessionStore::load` of the record's id; `Ok(false)` when it found nothing.
    async fn load(&self, record: &Self::Record) -> Result<bool, String>;
    /// `SessionStore::delete` of the record's id.
    async fn delete(&self, record: &Self::Record) -> Result<(), String>;
}

/// Defines `$name<S>`, a [`Target`] for any `S` implementing `$core::session_store::SessionStore`,
/// where `$core` is a tower-sessions-core crate (the peers crate has two versions).
macro_rules! tower_target {
    ($name:ident, $core:ident) => {
        /// A tower-sessions store as a workload target.
        pub struct $name<S>(pub S);

        #[async_trait::async_trait]
        impl<S: $core::session_store::SessionStore> $crate::workload::Target for $name<S> {
            type Record = $core::session::Record;

            fn record(data: &$crate::workload::Data, expiry: time::OffsetDateTime) -> Self::Record {
                $core::session::Record {
                    id: $core::session::Id::default(),
                    data: data.clone(),
                    expiry_date: expiry,
                }
            }

            fn with_data(record: &Self::Record, data: &$crate::workload::Data) -> Self::Record {
                $core::session::Record {
                    id: record.id,
                    data: data.clone(),
                    expiry_date: record.expiry_date,
                }
            }

            async fn create(&self, record: &mut Self::Record) -> Result<(), String> {
                $core::session_store::SessionStore::create(&self.0, record)
                    .await
                    .map_err(|err| err.to_string())
            }

            async fn save(&self, record: &Self::Record) -> Result<(), String> {
                $core::session_store::SessionStore::save(&self.0, record)
                    .await
                    .map_err(|err| err.to_string())
            }

            async fn load(&self, record: &Self::Record) -> Result<bool, String> {
                $core::session_store::SessionStore::load(&self.0, &record.id)
                    .await
                    .map(|found| found.is_some())
                    .map_err(|err| err.to_string())
            }

            async fn delete(&self, record: &Self::Record) -> Result<(), String> {
                $core::session_store::SessionStore::delete(&self.0, &record.id)
                    .await
                    .map_err(|err| err.to_string())
            }
        }
    };
}
#[allow(unused_imports)] // used by the peers crate only
pub(crate) use tower_target;

// tower-sessions-core 0.15: our adapter and tower-sessions' own MemoryStore.
tower_target!(Tower, tower_sessions_core);

/// What the calls of some samples came to.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Calls that returned an error (or, for `load`, found nothing).
    pub failed: u64,
    /// Calls made.
    pub total: u64,
    /// The first failure's text.
    pub first_error: Option<String>,
}

impl Outcome {
    fn note(&mut self, result: Result<(), String>) {
        self.total += 1;
        if let Err(err) = result {
            self.failed += 1;
            self.first_error.get_or_insert(err);
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.failed += other.failed;
        self.total += other.total;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

type Run = Arc<
    dyn Fn(&'static str, usize, u64) -> Pin<Box<dyn Future<Output = (Duration, Outcome)> + Send>>
        + Send
        + Sync,
>;

/// A named store, its type erased, ready for [`run`].
pub struct Store {
    name: &'static str,
    run: Run,
}

/// `target` under the criterion function id `name` (`ours`, `tower-memory`, ...).
pub fn store<T: Target>(name: &'static str, target: T) -> Store {
    let target = Arc::new(target);
    Store {
        name,
        run: Arc::new(move |phase, tasks, iters| {
            Box::pin(one_sample(Arc::clone(&target), phase, tasks, iters))
        }),
    }
}

/// Benchmarks every phase and task count on every store, as `peers-<backend>/<phase>`,
/// function = the store's name, parameter `<n>_tasks`; the stores of a phase and task count
/// run one after the other. Counts of failed calls go to `failures`, which is written after
/// every phase.
pub fn run(c: &mut Criterion, rt: &Runtime, backend: &str, stores: &[Store], failures: &Failures) {
    for phase in PHASES {
        let group_name = format!("peers-{backend}/{phase}");
        let mut group = c.benchmark_group(&group_name);
        group.throughput(Throughput::Elements(1));
        for tasks in TASKS {
            let param = format!("{tasks}_tasks");
            for store in stores {
                let tally = Arc::new(Mutex::new(Outcome::default()));
                group.bench_function(BenchmarkId::new(store.name, &param), |b| {
                    b.to_async(rt).iter_custom(|iters| {
                        let (run, tally) = (Arc::clone(&store.run), Arc::clone(&tally));
                        async move {
                            let (elapsed, outcome) = run(phase, tasks, iters).await;
                            tally.lock().expect("tally").merge(outcome);
                            elapsed
                        }
                    })
                });
                let outcome = tally.lock().expect("tally").clone();
                failures.record(&group_name, store.name, &param, outcome);
            }
        }
        group.finish();
        failures.write();
    }
}

/// One sample: `iters × tasks` calls of `phase` over `tasks` tasks; returns their wall time
/// divided by `tasks`.
async fn one_sample<T: Target>(
    t: Arc<T>,
    phase: &'static str,
    tasks: usize,
    iters: u64,
) -> (Duration, Outcome) {
    let ops = iters * tasks as u64;
    let (elapsed, outcome) = timed_sample(t, phase, tasks, ops).await;
    (elapsed / tasks as u32, outcome)
}

/// `ops` calls of `phase` over `tasks` tasks; returns their wall time.
async fn timed_sample<T: Target>(
    t: Arc<T>,
    phase: &'static str,
    tasks: usize,
    ops: u64,
) -> (Duration, Outcome) {
    let expiry = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let (d0, d1) = (data(0), data(1));
    if phase == "create" {
        // Each task owns the records it creates (create may give a record a new id).
        let mut lanes: Vec<Vec<T::Record>> = (0..tasks).map(|_| Vec::new()).collect();
        for i in 0..ops as usize {
            lanes[i % tasks].push(T::record(&d0, expiry));
        }
        let start = Instant::now();
        let handles: Vec<_> = lanes
            .into_iter()
            .map(|mut lane| {
                let t = Arc::clone(&t);
                tokio::spawn(async move {
                    let mut outcome = Outcome::default();
                    for record in &mut lane {
                        outcome.note(t.create(record).await);
                    }
                    (lane, outcome)
                })
            })
            .collect();
        let mut done = Vec::with_capacity(tasks);
        for handle in handles {
            done.push(handle.await.expect("bench task"));
        }
        let elapsed = start.elapsed();
        let mut outcome = Outcome::default();
        for (lane, lane_outcome) in done {
            outcome.merge(lane_outcome);
            cleanup(&*t, &lane).await;
        }
        return (elapsed, outcome);
    }

    // load, update and delete work on records that exist before the clock starts.
    let count = if phase == "delete" {
        ops
    } else {
        ops.min(POOL)
    };
    let mut records = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let mut record = T::record(&d0, expiry);
        setup(&*t, &mut record).await;
        records.push(record);
    }
    // For update: pass p over the pool writes d1 when p is even, d0 when odd, so every save
    // changes what the record holds.
    let changed: Vec<T::Record> = if phase == "update" {
        records.iter().map(|r| T::with_data(r, &d1)).collect()
    } else {
        Vec::new()
    };
    let work = Arc::new((records, changed));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|lane| {
            let (t, work) = (Arc::clone(&t), Arc::clone(&work));
            tokio::spawn(async move {
                let (records, changed) = (&work.0, &work.1);
                let n = records.len() as u64;
                let mut outcome = Outcome::default();
                for i in (lane as u64..ops).step_by(tasks) {
                    let k = (i % n) as usize;
                    let result = match phase {
                        "load" => match t.load(&records[k]).await {
                            Ok(true) => Ok(()),
                            Ok(false) => Err("load found nothing for an existing record".into()),
                            Err(err) => Err(err),
                        },
                        "update" if (i / n).is_multiple_of(2) => t.save(&changed[k]).await,
                        "update" => t.save(&records[k]).await,
                        "delete" => t.delete(&records[k]).await,
                        other => panic!("unknown phase {other}"),
                    };
                    outcome.note(result);
                }
                outcome
            })
        })
        .collect();
    let mut outcome = Outcome::default();
    for handle in handles {
        outcome.merge(handle.await.expect("bench task"));
    }
    let elapsed = start.elapsed();
    if phase != "delete" || outcome.failed > 0 {
        cleanup(&*t, &work.0).await;
    }
    (elapsed, outcome)
}

/// Creates `record` before a timed section, retrying a failure a few times.
async fn setup<T: Target>(t: &T, record: &mut T::Record) {
    let mut last = String::new();
    for _ in 0..SETUP_ATTEMPTS {
        match t.create(record).await {
            Ok(()) => return,
            Err(err) => last = err,
        }
    }
    panic!("setup: create failed {SETUP_ATTEMPTS} times in a row: {last}");
}

/// Deletes `records` after a timed section (a failed delete is retried once).
async fn cleanup<T: Target>(t: &T, records: &[T::Record]) {
    for record in records {
        if t.delete(record).await.is_err() {
            let _ = t.delete(record).await;
        }
    }
}

/// Failed calls per (group, store, parameter), written as `peers-failures.json` in the
/// criterion directory. Entries from other runs (such as the other peers bench) are kept;
/// this run's entries replace theirs.
#[derive(Default)]
pub struct Failures(Mutex<BTreeMap<(String, String, String), Outcome>>);

impl Failures {
    fn record(&self, group: &str, store: &str, param: &str, outcome: Outcome) {
        if outcome.total == 0 {
            return; // filtered out: nothing ran
        }
        if outcome.failed > 0 {
            eprintln!(
                "\n*** {group} {store} {param}: {} of {} calls failed; first: {} ***\n",
                outcome.failed,
                outcome.total,
                outcome.first_error.as_deref().unwrap_or("?")
            );
        }
        self.0
            .lock()
            .expect("failures")
            .insert((group.into(), store.into(), param.into()), outcome);
    }

    /// Merges this run's counts into `peers-failures.json`.
    pub fn write(&self) {
        let path = criterion_dir().join("peers-failures.json");
        let mut rows: Vec<Value> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        let ours = self.0.lock().expect("failures");
        rows.retain(|row| {
            let key = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            !ours.contains_key(&(key("group"), key("store"), key("param")))
        });
        for ((group, store, param), outcome) in ours.iter() {
            rows.push(json!({
                "group": group,
                "store": store,
                "param": param,
                "failed": outcome.failed,
                "total": outcome.total,
                "error": outcome.first_error,
            }));
        }
        let text = serde_json::to_string_pretty(&rows).expect("json");
        if let Err(err) = std::fs::create_dir_all(criterion_dir())
            .and_then(|()| std::fs::write(&path, text + "\n"))
        {
            eprintln!("\n*** could not write {}: {err} ***\n", path.display());
        }
    }
}

/// The directory criterion writes to, found as criterion finds it: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else the target directory `cargo metadata` names, else
/// `target/criterion`.
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    std::env::var_os("CARGO")
        .and_then(|cargo| {
            std::process::Command::new(cargo)
                .args(["metadata", "--format-version", "1", "--no-deps"])
                .output()
                .ok()
        })
        .and_then(|out| serde_json::from_slice::<Value>(&out.stdout).ok())
        .and_then(|meta| meta.get("target_directory")?.as_str().map(PathBuf::from))
        .map_or_else(
            || PathBuf::from("target/criterion"),
            |t| t.join("criterion"),
        )
}
