//! MemoryStore against a raw `Mutex<lru::LruCache>` doing the same work.

mod common;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::{Plan, StoreTarget, Target};
use lru::LruCache;
use serde_json::{Map, Value};
use session_stores::{MemoryStore, Session, SessionId, now_millis};

/// The raw baseline: one mutex around one LRU of (data, expiry, version), with the same
/// expiry checks and version bookkeeping the store does, and no sharding.
type Entry = (Map<String, Value>, i64, u64);

struct RawLru(Mutex<LruCache<String, Entry>>);

impl RawLru {
    fn live_version(cache: &mut LruCache<String, Entry>, id: &str) -> Option<u64> {
        match cache.peek(id) {
            Some((_, exp, _)) if *exp <= now_millis() => {
                cache.pop(id);
                None
            }
            Some((_, _, v)) => Some(*v),
            None => None,
        }
    }
}

#[async_trait]
impl Target for RawLru {
    async fn get(&self, id: &SessionId) -> bool {
        let mut cache = self.0.lock().unwrap();
        match cache.get(id.as_str()) {
            Some((data, exp, v)) if *exp > now_millis() => {
                std::hint::black_box((data.clone(), *exp, *v));
                true
            }
            _ => false,
        }
    }
    async fn set(&self, id: &SessionId, session: &Session) {
        let mut cache = self.0.lock().unwrap();
        let v = Self::live_version(&mut cache, id.as_str()).unwrap_or(0) + 1;
        let entry = (session.data().clone(), session.expires_at_millis(), v);
        cache.push(id.as_str().to_string(), entry);
    }
    async fn touch(&self, id: &SessionId, expires_at: i64) -> bool {
        let mut cache = self.0.lock().unwrap();
        if Self::live_version(&mut cache, id.as_str()).is_none() {
            return false;
        }
        if let Some(entry) = cache.get_mut(id.as_str()) {
            entry.1 = expires_at;
        }
        true
    }
    async fn destroy(&self, id: &SessionId) {
        self.0.lock().unwrap().pop(id.as_str());
    }
    async fn create(&self, id: &SessionId, session: &Session) -> bool {
        let mut cache = self.0.lock().unwrap();
        if Self::live_version(&mut cache, id.as_str()).is_some() {
            return false;
        }
        let entry = (session.data().clone(), session.expires_at_millis(), 1);
        cache.push(id.as_str().to_string(), entry);
        true
    }
    async fn cas(&self, id: &SessionId, session: &Session) -> bool {
        let seen = {
            let mut cache = self.0.lock().unwrap();
            cache.get(id.as_str()).map(|(d, e, v)| (d.clone(), *e, *v))
        };
        let expected = seen.map_or(0, |s| s.2);
        let mut cache = self.0.lock().unwrap();
        if Self::live_version(&mut cache, id.as_str()).unwrap_or(0) != expected {
            return false;
        }
        let entry = (
            session.data().clone(),
            session.expires_at_millis(),
            expected + 1,
        );
        cache.push(id.as_str().to_string(), entry);
        true
    }
}

fn main() {
    let mut c = common::criterion();
    let rt = common::runtime();
    let capacity = 2_000_000;
    let store = Arc::new(StoreTarget::new(MemoryStore::new(capacity)));
    let raw = Arc::new(RawLru(Mutex::new(LruCache::new(
        NonZeroUsize::new(capacity).expect("non-zero"),
    ))));
    let plan = Plan {
        backend: "memory",
        populations: vec![1_000, 100_000, 1_000_000],
        expiry_only_set: false,
    };
    common::run_all(&mut c, &rt, &plan, store, raw);
    c.final_summary();
}
