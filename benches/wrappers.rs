//! The cost of the security wrappers per operation: the same store plain, under
//! `HashedIds`, under `Encrypted`, and under both (`HashedIds<Encrypted<_>>`), over the
//! memory store (where the wrapper's own work is all there is to see) and over Redis (where
//! a round trip dominates). Every benchmark is `wrappers-<backend>/<case>/<payload>` with the
//! four variants as functions; `benches/report.py` gives each variant's ratio to `plain`.
//!
//! Redis: `SESSION_STORES_REDIS_URL` (default `redis://127.0.0.1:6379`); skipped loudly when
//! no server answers.

mod common;

use std::sync::Arc;

use criterion::{BenchmarkId, Throughput};
use session_stores::wrappers::encrypted::{Encrypted, KeyRing};
use session_stores::wrappers::hashed_ids::HashedIds;
use session_stores::wrappers::key::Key;
use session_stores::{MemoryStore, RedisStore, SessionStore};

const CASES: [&str; 4] = ["get_hit", "set_changed", "touch", "create"];
const PAYLOADS: [(&str, usize); 2] = [("200B", 200), ("4KiB", 4 * 1024)];

fn variants(base: Arc<dyn SessionStore>) -> Vec<(&'static str, Arc<dyn SessionStore>)> {
    let id_key = Key::generate().expect("a key");
    let ring = || KeyRing::new([Key::from_hex(&"42".repeat(32)).expect("a key")]).expect("a ring");
    vec![
        ("plain", Arc::clone(&base)),
        (
            "hashed",
            Arc::new(HashedIds::new(Arc::clone(&base), &id_key)),
        ),
        (
            "encrypted",
            Arc::new(Encrypted::new(Arc::clone(&base), ring())),
        ),
        (
            "both",
            Arc::new(HashedIds::new(Encrypted::new(base, ring()), &id_key)),
        ),
    ]
}

fn main() {
    let rt = common::runtime();
    let mut c = common::criterion();
    let mut backends: Vec<(&str, Arc<dyn SessionStore>)> =
        vec![("memory", Arc::new(MemoryStore::new(100_000)))];
    let url = std::env::var("SESSION_STORES_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let redis = rt.block_on(async {
        let store = RedisStore::builder(&url)
            .key_prefix("sst:bench:wrappers:")
            .build()
            .ok()?;
        store.len().await.ok()?;
        Some(store)
    });
    match redis {
        Some(store) => backends.push(("redis", Arc::new(store))),
        None => {
            eprintln!("SKIPPED: the Redis half (no server at {url}; set SESSION_STORES_REDIS_URL)")
        }
    }
    for (backend, base) in backends {
        let variants = variants(base);
        for (payload, bytes) in PAYLOADS {
            let d0 = common::sample(bytes, 0);
            let d1 = common::sample(bytes, 1);
            for case in CASES {
                let mut group = c.benchmark_group(format!("wrappers-{backend}/{case}"));
                group.throughput(Throughput::Elements(1));
                for (name, store) in &variants {
                    let target: Arc<dyn common::Target> =
                        Arc::new(common::StoreTarget(Arc::clone(store), None));
                    group.bench_function(BenchmarkId::new(*name, payload), |b| {
                        b.to_async(&rt).iter_custom(|iters| {
                            let (t, d0, d1) = (Arc::clone(&target), d0.clone(), d1.clone());
                            async move { common::one_case(&*t, case, iters, &d0, &d1).await }
                        })
                    });
                }
                group.finish();
            }
        }
    }
    c.final_summary();
}
