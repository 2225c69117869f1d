//! One request's session round trip through the axum_session and poem adapters, over the
//! memory store, at one task, in one run (`adapters-frameworks/request/*`):
//!
//! - `blind`: what an adapter without the promises does: `get`, change one value, `set`;
//! - `axum_session`: `DatabasePool::load` of the session's text, one value changed, then
//!   `DatabasePool::store` (a compare-and-set on the version the adapter remembered);
//! - `poem`: `SessionStorage::load_session`, one value changed, then `update_session` (a
//!   compare-and-set on the version the loaded entries carry).
//!
//! The same ~1 KiB session of four keys as `benches/adapters.rs`. `BENCHMARKS.md` gives each
//! adapter's time over `blind`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum_session::DatabasePool;
use criterion::{Criterion, criterion_group, criterion_main};
use poem::session::SessionStorage;
use serde_json::{Map, Value, json};
use session_stores::adapters::axum_session::AxumSessionPool;
use session_stores::adapters::poem::PoemSessionStorage;
use session_stores::{MemoryStore, Session, SessionId, SessionStore};

fn data() -> Map<String, Value> {
    let mut data = Map::new();
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

/// axum_session's text of a session: each value as JSON text, under `data`.
fn axum_text(data: &Map<String, Value>) -> String {
    let inner: Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
        .collect();
    json!({"data": inner, "longterm": false}).to_string()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let far = 4_102_444_800_000;
    let mut group = c.benchmark_group("adapters-frameworks/request");

    let store = MemoryStore::new(10_000);
    let id = SessionId::generate();
    rt.block_on(store.set(&id, &Session::from_parts(data(), far, 0)))
        .expect("set");
    let mut n = 0u64;
    group.bench_function("blind", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut session = store.get(&id).await.expect("get").expect("live");
                n += 1;
                session.insert("theme", n).expect("insert");
                store.set(&id, &session).await.expect("set");
            })
        })
    });

    let pool = AxumSessionPool::new(MemoryStore::new(10_000));
    let id = SessionId::generate();
    let sid = id.as_str().to_string();
    rt.block_on(async {
        assert!(!pool.exists(&sid, "t").await.expect("exists"));
        pool.store(&sid, &axum_text(&data()), far / 1000, "t")
            .await
            .expect("store");
    });
    let mut n = 0u64;
    group.bench_function("axum_session", |b| {
        b.iter(|| {
            rt.block_on(async {
                let text = pool.load(&sid, "t").await.expect("load").expect("live");
                let mut value: Value = serde_json::from_str(&text).expect("its text");
                n += 1;
                value["data"]["theme"] = Value::String(n.to_string());
                pool.store(&sid, &value.to_string(), far / 1000, "t")
                    .await
                    .expect("store");
            })
        })
    });

    let storage = PoemSessionStorage::new(MemoryStore::new(10_000));
    let id = SessionId::generate();
    let sid = id.as_str().to_string();
    let entries: BTreeMap<String, Value> = data().into_iter().collect();
    let ttl = Some(Duration::from_secs(3600));
    rt.block_on(storage.update_session(&sid, &entries, ttl))
        .expect("first save");
    let mut n = 0u64;
    group.bench_function("poem", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut entries = storage
                    .load_session(&sid)
                    .await
                    .expect("load")
                    .expect("live");
                n += 1;
                entries.insert("theme".into(), Value::from(n));
                storage
                    .update_session(&sid, &entries, ttl)
                    .await
                    .expect("update");
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
