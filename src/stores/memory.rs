//! An in-process store: a sharded, bounded LRU with per-session expiry.
//!
//! [`MemoryStore`] keeps sessions in this process's memory, so they are lost when it exits and
//! are not shared between processes. It is the store for tests, development and single-process
//! deployments that can afford to log everyone out on restart.
//!
//! # Eviction
//!
//! The store is bounded by a number of sessions (its capacity) and, optionally, by an
//! estimate of the bytes they use. When a write would go over either bound, the store
//! **evicts the least recently used sessions** (a `get` or a write counts as a use) until it
//! fits. For users this means that on a full store the session of whoever has been idle the
//! longest is dropped, and that user is logged out early. Size the capacity for your peak of
//! live sessions; [`MemoryStore::evictions`] counts how often eviction happened.
//!
//! Sessions are spread over shards by a hash of their id, each shard with its own mutex and
//! its own share of the capacity, so tasks touching different sessions rarely wait on each
//! other. LRU order is kept per shard, which approximates a global LRU. Stores with a capacity
//! under 1024 use one shard, so their eviction order is exact.
//!
//! No lock is ever held across an `.await`: every operation runs to completion under one
//! shard's mutex, which is also what makes `create` and `set_if_version` atomic.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use session_stores::{MemoryStore, Session, SessionId, SessionStore};
//!
//! let store = MemoryStore::builder().capacity(10_000).max_bytes(64 << 20).build();
//! let id = SessionId::generate();
//! store.set(&id, &Session::new(Duration::from_secs(60))).await?;
//! assert_eq!(store.len().await?, 1);
//! # Ok::<(), session_stores::Error>(())
//! # }).unwrap();
//! ```

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use lru::LruCache;
use serde_json::Value;

use crate::error::{Error, IdHint, Result};
use crate::session::{Session, SessionId, fresh_version, next_version, now_millis, to_millis};
use crate::store::SessionStore;

/// The default capacity of [`MemoryStore::default`]: 100,000 sessions.
pub const DEFAULT_CAPACITY: usize = 100_000;

const SHARDS: usize = 16;

/// A bounded, sharded, in-process LRU session store. See the [module docs](self).
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    shard_seed: u64,
    shard_bytes: Option<usize>,
    capacity: usize,
    max_bytes: Option<usize>,
    evictions: AtomicU64,
}

struct Shard {
    lru: LruCache<SessionId, Entry>,
    bytes: usize,
}

struct Entry {
    session: Session,
    size: usize,
}

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    capacity: usize,
    max_bytes: Option<usize>,
    shards: Option<usize>,
}

impl MemoryStoreBuilder {
    /// The largest number of sessions kept (at least 1). Default: [`DEFAULT_CAPACITY`].
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// A budget for the estimated memory of the stored sessions, in bytes. The estimate
    /// counts the id, every key and string, and a fixed size per JSON value and per entry.
    /// A session whose estimate is over its shard's share of the budget is refused with
    /// [`Error::TooLarge`]. Default: no byte budget.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// The number of shards (at least 1). Default: 16, or 1 for capacities under 1024.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.max(1));
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        let shards = self
            .shards
            .unwrap_or(if self.capacity < 1024 { 1 } else { SHARDS })
            .min(self.capacity);
        let per_shard =
            NonZeroUsize::new(self.capacity.div_ceil(shards)).unwrap_or(NonZeroUsize::MIN);
        MemoryStore {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        lru: LruCache::new(per_shard),
                        bytes: 0,
                    })
                })
                .collect(),
            shard_seed: RandomState::new().hash_one(0x5e55_1075u64),
            shard_bytes: self.max_bytes.map(|b| (b / shards).max(1)),
            capacity: self.capacity,
            max_bytes: self.max_bytes,
            evictions: AtomicU64::new(0),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.capacity)
            .field("max_bytes", &self.max_bytes)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store that keeps at most `capacity` sessions, with no byte budget.
    pub fn new(capacity: usize) -> Self {
        Self::builder().capacity(capacity).build()
    }

    /// A builder, starting from the defaults.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            capacity: DEFAULT_CAPACITY,
            max_bytes: None,
            shards: None,
        }
    }

    /// The capacity in sessions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many live or expired sessions were evicted to make room, since the store was made.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The current estimate of the bytes held, summed over all shards.
    pub fn estimated_bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).bytes).sum()
    }

    fn shard(&self, id: &SessionId) -> MutexGuard<'_, Shard> {
        if self.shards.len() == 1 {
            return lock(&self.shards[0]);
        }
        let index = (self.shard_hash(id.as_str()) % self.shards.len() as u64) as usize;
        lock(&self.shards[index])
    }

    /// A fast seeded hash of the id, only to pick a shard (the LRU inside the shard uses its
    /// own DoS-resistant hasher). Ids are mostly random already; the seed keeps a client from
    /// choosing ids that all land in one shard without knowing it.
    fn shard_hash(&self, id: &str) -> u64 {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut h = self.shard_seed;
        let mut chunks = id.as_bytes().chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(word))
                .wrapping_mul(K)
                .rotate_left(29);
        }
        for &b in chunks.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(K).rotate_left(29);
        }
        h ^= h >> 32;
        h = h.wrapping_mul(K);
        h ^ (h >> 29)
    }

    /// The live version under `id`, removing the entry if it has expired.
    fn live_version(shard: &mut Shard, id: &SessionId, now: i64) -> Option<u64> {
        match shard.lru.peek(id) {
            Some(entry) if entry.session.is_expired_at(now) => {
                shard.remove(id);
                None
            }
            Some(entry) => Some(entry.session.version()),
            None => None,
        }
    }

    /// Stores `session` with `version` (or deletes it if expired). The caller holds the lock.
    fn write(
        &self,
        shard: &mut Shard,
        id: &SessionId,
        session: &Session,
        version: u64,
        now: i64,
    ) -> Result<u64> {
        if session.is_expired_at(now) {
            shard.remove(id);
            return Ok(0);
        }
        crate::session::check_nesting(id, session.data())?;
        let size = match self.shard_bytes {
            Some(limit) => {
                let size = estimate_size(id, session);
                if size > limit {
                    return Err(Error::TooLarge {
                        id: IdHint::from(id),
                        size,
                        limit,
                    });
                }
                size
            }
            None => 0,
        };
        let entry = Entry {
            session: session.clone().with_version(version),
            size,
        };
        if let Some((old_id, old)) = shard.lru.push(id.clone(), entry) {
            shard.bytes -= old.size;
            if old_id != *id {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        shard.bytes += size;
        if let Some(limit) = self.shard_bytes {
            while shard.bytes > limit && shard.lru.len() > 1 {
                match shard.lru.pop_lru() {
                    Some((_, old)) => {
                        shard.bytes -= old.size;
                        self.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                    None => break,
                }
            }
        }
        Ok(version)
    }
}

impl Shard {
    fn remove(&mut self, id: &SessionId) {
        if let Some(old) = self.lru.pop(id) {
            self.bytes -= old.size;
        }
    }
}

/// A poisoned shard only means another thread panicked while holding it; every operation
/// leaves the shard consistent before it can panic, so the data is still good to use.
fn lock(mutex: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A rough estimate of the heap bytes a stored session takes.
fn estimate_size(id: &SessionId, session: &Session) -> usize {
    const ENTRY_OVERHEAD: usize = 128;
    const VALUE_OVERHEAD: usize = 32;
    fn value_size(value: &Value) -> usize {
        VALUE_OVERHEAD
            + match value {
                Value::String(s) => s.len(),
                Value::Array(items) => items.iter().map(value_size).sum(),
                Value::Object(map) => map.iter().map(|(k, v)| k.len() + value_size(v)).sum(),
                Value::Null | Value::Bool(_) | Value::Number(_) => 0,
            }
    }
    ENTRY_OVERHEAD
        + id.as_str().len()
        + session
            .data()
            .iter()
            .map(|(k, v)| k.len() + value_size(v))
            .sum::<usize>()
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        let mut shard = self.shard(id);
        match shard.lru.get(id) {
            // The clock is read only on a hit: a miss costs no clock call.
            Some(entry) if entry.session.is_expired_at(now_millis()) => {
                shard.remove(id);
                Ok(None)
            }
            Some(entry) => Ok(Some(entry.session.clone())),
            None => Ok(None),
        }
    }

    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        let now = now_millis();
        let mut shard = self.shard(id);
        let version = next_version(Self::live_version(&mut shard, id, now).unwrap_or(0));
        self.write(&mut shard, id, session, version, now)
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.shard(id).remove(id);
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        let now = now_millis();
        let expires_at = to_millis(expires_at);
        let mut shard = self.shard(id);
        if Self::live_version(&mut shard, id, now).is_none() {
            return Ok(false);
        }
        if expires_at <= now {
            shard.remove(id);
        } else if let Some(entry) = shard.lru.get_mut(id) {
            entry.session.set_expires_at_millis(expires_at);
        }
        Ok(true)
    }

    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let now = now_millis();
        let mut shard = self.shard(id);
        if Self::live_version(&mut shard, id, now).is_some() {
            return Ok(false);
        }
        self.write(&mut shard, id, session, fresh_version(), now)?;
        Ok(true)
    }

    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected_version: u64,
    ) -> Result<u64> {
        let now = now_millis();
        let mut shard = self.shard(id);
        if Self::live_version(&mut shard, id, now).unwrap_or(0) != expected_version {
            return Err(Error::conflict(id, expected_version));
        }
        self.write(&mut shard, id, session, next_version(expected_version), now)
    }

    async fn len(&self) -> Result<u64> {
        let now = now_millis();
        let live = self
            .shards
            .iter()
            .map(|shard| {
                lock(shard)
                    .lru
                    .iter()
                    .filter(|(_, entry)| !entry.session.is_expired_at(now))
                    .count() as u64
            })
            .sum();
        Ok(live)
    }

    async fn clear(&self) -> Result<()> {
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.lru.clear();
            shard.bytes = 0;
        }
        Ok(())
    }

    async fn delete_expired(&self) -> Result<u64> {
        let now = now_millis();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let expired: Vec<SessionId> = shard
                .lru
                .iter()
                .filter(|(_, entry)| entry.session.is_expired_at(now))
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                shard.remove(id);
            }
            removed += expired.len() as u64;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn session(bytes: usize) -> Session {
        let mut s = Session::new(Duration::from_secs(60));
        s.insert("blob", "x".repeat(bytes)).unwrap();
        s
    }

    #[test]
    fn evicts_least_recently_used() {
        rt().block_on(async {
            let store = MemoryStore::new(3);
            let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
            for id in &ids[..3] {
                store.set(id, &session(1)).await.unwrap();
            }
            // Use the oldest, so the second one becomes least recently used.
            assert!(store.get(&ids[0]).await.unwrap().is_some());
            store.set(&ids[3], &session(1)).await.unwrap();
            assert!(store.get(&ids[1]).await.unwrap().is_none(), "LRU evicted");
            for i in [0, 2, 3] {
                assert!(store.get(&ids[i]).await.unwrap().is_some(), "{i} kept");
            }
            assert_eq!(store.len().await.unwrap(), 3);
            assert_eq!(store.evictions(), 1);
        });
    }

    #[test]
    fn byte_budget_evicts_and_refuses_oversized() {
        rt().block_on(async {
            let store = MemoryStore::builder()
                .capacity(1000)
                .max_bytes(10_000)
                .build();
            let ids: Vec<SessionId> = (0..5).map(|_| SessionId::generate()).collect();
            for id in &ids {
                store.set(id, &session(3000)).await.unwrap();
            }
            assert!(store.estimated_bytes() <= 10_000);
            assert_eq!(store.len().await.unwrap(), 3);
            assert!(store.get(&ids[0]).await.unwrap().is_none());
            assert!(store.get(&ids[4]).await.unwrap().is_some());

            let big = SessionId::generate();
            let err = store.set(&big, &session(20_000)).await.unwrap_err();
            assert!(
                matches!(err, Error::TooLarge { limit: 10_000, .. }),
                "{err:?}"
            );
            assert!(store.get(&big).await.unwrap().is_none());
            // The refused write left the previous session under that id intact.
            store.set(&ids[4], &session(20_000)).await.unwrap_err();
            assert!(store.get(&ids[4]).await.unwrap().is_some());
        });
    }

    #[test]
    fn bytes_are_accounted_on_replace_destroy_and_clear() {
        rt().block_on(async {
            let store = MemoryStore::builder()
                .capacity(10)
                .max_bytes(1 << 20)
                .build();
            let id = SessionId::generate();
            store.set(&id, &session(1000)).await.unwrap();
            let one = store.estimated_bytes();
            store.set(&id, &session(1000)).await.unwrap();
            assert_eq!(store.estimated_bytes(), one);
            store.destroy(&id).await.unwrap();
            assert_eq!(store.estimated_bytes(), 0);
            store.set(&id, &session(1000)).await.unwrap();
            store.clear().await.unwrap();
            assert_eq!(store.estimated_bytes(), 0);
        });
    }

    #[test]
    fn sharded_store_counts_across_shards() {
        rt().block_on(async {
            let store = MemoryStore::new(100_000);
            assert_eq!(store.shards.len(), SHARDS);
            for _ in 0..1000 {
                store
                    .set(&SessionId::generate(), &session(1))
                    .await
                    .unwrap();
            }
            assert_eq!(store.len().await.unwrap(), 1000);
            assert_eq!(store.evictions(), 0);
            // The shard hash spreads ids: with 1000 ids over 16 shards (62.5 expected per
            // shard), every shard holds some and none holds more than twice its share.
            for shard in store.shards.iter() {
                let n = lock(shard).lru.len();
                assert!((1..=125).contains(&n), "unbalanced shard with {n} sessions");
            }
        });
    }
}
