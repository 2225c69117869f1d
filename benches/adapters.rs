//! The tower-sessions adapter's save and load paths, over the memory store, at one task, in
//! one run:
//!
//! - `adapters-memory/save/blind_set`: what `save` was before it became a compare-and-set:
//!   the record's data turned into a session and written with `set`;
//! - `adapters-memory/save/ours`: `TowerSessionsStore::save` of a record a request loaded,
//!   with no other writer (the compare-and-set succeeds the first time);
//! - `adapters-memory/save/ours_conflict`: the same save when another request wrote the
//!   session in between (a failed compare-and-set, a read, a merge, a second one);
//! - `adapters-memory/save/tower-memory` and `adapters-memory/load/*`: tower-sessions' own
//!   `MemoryStore` against our adapter over `MemoryStore`, for the same ~1 KiB record.
//!
//! `benches/report.py` gives each function's ratio to the group's first (`blind_set` for
//! save, `tower-memory` for load).

use std::collections::HashMap;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use session_stores::adapters::LOADED_KEY;
use session_stores::{MemoryStore, Session, SessionId, SessionStore, TowerSessionsStore};
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::SessionStore as TowerStore;

fn data() -> HashMap<String, Value> {
    let mut data = HashMap::new();
    data.insert(
        "user".into(),
        json!({"id": 42, "name": "ada", "roles": ["admin", "dev"]}),
    );
    data.insert(
        "cart".into(),
        json!(
            (0..20)
                .map(|n| json!({"sku": n, "qty": n % 3}))
                .collect::<Vec<_>>()
        ),
    );
    data.insert("theme".into(), json!("dark"));
    data.insert("csrf".into(), json!("x".repeat(400)));
    data
}

fn record() -> Record {
    Record {
        id: Id::default(),
        data: data(),
        expiry_date: OffsetDateTime::now_utc() + time::Duration::hours(1),
    }
}

/// The stamp's version set to `version`, as a request that loaded that version holds it.
fn restamp(record: &mut Record, version: u64) {
    if let Some(Value::Object(stamp)) = record.data.get_mut(LOADED_KEY) {
        stamp.insert("v".into(), Value::from(version));
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");

    let mut group = c.benchmark_group("adapters-memory/save");
    // Today's blind save: the old adapter's `session_of` and `set`.
    let store = Arc::new(MemoryStore::new(10_000));
    let rec = record();
    let id = SessionId::new(rec.id.to_string()).expect("an id");
    group.bench_function("blind_set", |b| {
        b.to_async(&rt).iter(|| {
            let (store, id, rec) = (Arc::clone(&store), id.clone(), &rec);
            async move {
                let data: Map<String, Value> = rec
                    .data
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let session = Session::from_parts(data, 4_102_444_800_000, 0);
                store.set(&id, &session).await.expect("set");
            }
        })
    });

    // Ours, no conflict: each save carries the version the previous one wrote.
    let adapter = TowerSessionsStore::new(MemoryStore::new(10_000));
    let mut rec = record();
    rt.block_on(adapter.create(&mut rec)).expect("create");
    let mut loaded = rt
        .block_on(adapter.load(&rec.id))
        .expect("load")
        .expect("a record");
    let sid = SessionId::new(loaded.id.to_string()).expect("an id");
    let mut version = rt
        .block_on(adapter.inner().get(&sid))
        .expect("get")
        .expect("stored")
        .version();
    group.bench_function("ours", |b| {
        b.iter(|| {
            restamp(&mut loaded, version);
            rt.block_on(adapter.save(&loaded)).expect("save");
            version += 1;
        })
    });

    // Ours with a conflict every time: another writer moved the version on first.
    let other = Session::from_parts(data().into_iter().collect(), 4_102_444_800_000, 0);
    group.bench_function("ours_conflict", |b| {
        b.iter(|| {
            let current = rt
                .block_on(adapter.inner().get(&sid))
                .expect("get")
                .expect("stored")
                .version();
            rt.block_on(adapter.inner().set_if_version(&sid, &other, current))
                .expect("the other writer");
            restamp(&mut loaded, current);
            rt.block_on(adapter.save(&loaded)).expect("save");
        })
    });

    let tower = tower_sessions::MemoryStore::default();
    let mut tower_rec = record();
    rt.block_on(tower.create(&mut tower_rec)).expect("create");
    group.bench_function("tower-memory", |b| {
        b.iter(|| rt.block_on(tower.save(&tower_rec)).expect("save"))
    });
    group.finish();

    let mut group = c.benchmark_group("adapters-memory/load");
    group.bench_function("tower-memory", |b| {
        b.iter(|| rt.block_on(tower.load(&tower_rec.id)).expect("load"))
    });
    group.bench_function("ours", |b| {
        b.iter(|| rt.block_on(adapter.load(&loaded.id)).expect("load"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
