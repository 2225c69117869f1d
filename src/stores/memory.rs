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
//! **Expired sessions go first.** Before a live session is evicted, the store drops the
//! expired sessions it holds, in the writer's shard and then in the others (each shard keeps a
//! lower bound of its earliest expiry, so it only scans when something may have expired).
//!
//! **The capacity is the store's, not a shard's.** Sessions are spread over shards by a hash
//! of their id, each shard with its own mutex, so tasks touching different sessions rarely wait
//! on each other; but the capacity bounds the whole store: nothing is evicted while the store
//! holds fewer than `capacity` sessions, however unevenly they fall on the shards. When the
//! store is full, a write evicts the least recently used session of its own shard (or, when
//! that shard holds nothing else, of another shard), so LRU order is kept per shard, which
//! approximates a global LRU. The slack: when a writer's own shard holds nothing else and every
//! other shard is busy at that instant, it does not wait, and the store holds one session over
//! its capacity until the next write evicts it, so at most one per concurrent writer. Stores
//! with a capacity under 1024 use one shard, so their eviction order is exact.
//!
//! A large capacity reserves nothing up front: `capacity(usize::MAX)` with a byte budget is a
//! store bounded by bytes only.
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
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lru::LruCache;
use serde_json::{Map, Value};

use crate::error::{Error, IdHint, Result};
use crate::events::{EndCause, EventKind, EventSink, SessionEvent};
use crate::session::{
    Owner, Session, SessionId, fresh_version, next_version, now_millis, to_millis,
};
use crate::store::{Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore};

/// The default capacity of [`MemoryStore::default`]: 100,000 sessions.
pub const DEFAULT_CAPACITY: usize = 100_000;

const SHARDS: usize = 16;

/// The largest page a [`scan`](SessionStore::scan) returns, whatever limit it is given.
pub const MAX_SCAN_PAGE: usize = 10_000;

/// The tag of this store's scan cursors: `m1:<shard>:<last id>` (empty before the first).
const CURSOR_TAG: &str = "m1";

/// A bounded, sharded, in-process LRU session store. See the [module docs](self).
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    /// Entries held over all shards, live or expired.
    held: AtomicUsize,
    shard_seed: u64,
    shard_bytes: Option<usize>,
    capacity: usize,
    max_bytes: Option<usize>,
    evictions: AtomicU64,
    /// The owner index: every entry with an owner is in its owner's set, and nothing else.
    /// Locked only while a shard is locked too (shard first), and only by writes of
    /// sessions that have or had an owner.
    owners: Mutex<HashMap<Owner, HashSet<SessionId>>>,
    /// Where evictions of live sessions are reported, if anywhere.
    events: Option<EventSink>,
}

struct Shard {
    lru: LruCache<SessionId, Entry>,
    bytes: usize,
    /// At most the earliest expiry held (a lower bound: not raised when that entry goes).
    earliest_expiry: i64,
}

/// A stored session.
struct Entry {
    data: Map<String, Value>,
    expires_at: i64,
    version: u64,
    size: usize,
    owner: Option<Owner>,
    /// The absolute expiry, if the session has one.
    absolute_expiry: Option<i64>,
    /// Set on a rotated id: the id its session moved to.
    moved_to: Option<SessionId>,
}

impl Entry {
    /// A live session (not a rotated id).
    fn is_live_session(&self, now: i64) -> bool {
        self.expires_at > now && self.moved_to.is_none()
    }

    /// A rotated id whose grace is not over: it refuses writes.
    fn is_rotated(&self, now: i64) -> bool {
        self.expires_at > now && self.moved_to.is_some()
    }

    fn session(&self) -> Session {
        Session::from_parts(self.data.clone(), self.expires_at, self.version)
            .with_owner(self.owner.clone())
            .with_absolute_expiry_millis(self.absolute_expiry)
            .with_rotated(self.moved_to.is_some())
    }
}

/// A session made ready for a shard before its lock is taken: checked, sized and copied.
/// `None` for a session whose expiry has passed (writing it deletes the entry).
type Prepared = Result<Option<Entry>>;

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    capacity: usize,
    max_bytes: Option<usize>,
    shards: Option<usize>,
    events: Option<EventSink>,
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

    /// Reports each live session this store evicts to make room to `sink`, as
    /// [`Ended(Evicted)`](crate::events::EndCause::Evicted) (see
    /// [`Events`](crate::wrappers::events::Events), which reports the rest). Sending never
    /// waits. Default: no events.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        let shards = self
            .shards
            .unwrap_or(if self.capacity < 1024 { 1 } else { SHARDS })
            .min(self.capacity);
        MemoryStore {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        // Unbounded: the store bounds the total itself, and reserves nothing
                        // up front.
                        lru: LruCache::unbounded(),
                        bytes: 0,
                        earliest_expiry: i64::MAX,
                    })
                })
                .collect(),
            held: AtomicUsize::new(0),
            shard_seed: RandomState::new().hash_one(0x5e55_1075u64),
            shard_bytes: self.max_bytes.map(|b| (b / shards).max(1)),
            capacity: self.capacity,
            max_bytes: self.max_bytes,
            evictions: AtomicU64::new(0),
            owners: Mutex::new(HashMap::new()),
            events: self.events,
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
            events: None,
        }
    }

    /// The capacity in sessions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many sessions were evicted to make room, since the store was made. Expired sessions
    /// dropped first are not counted: nobody could load them any more.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The current estimate of the bytes held, summed over all shards.
    pub fn estimated_bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).bytes).sum()
    }

    fn shard(&self, id: &SessionId) -> MutexGuard<'_, Shard> {
        lock(&self.shards[self.shard_index(id)])
    }

    fn shard_index(&self, id: &SessionId) -> usize {
        if self.shards.len() == 1 {
            return 0;
        }
        (self.shard_hash(id.as_str()) % self.shards.len() as u64) as usize
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
    fn live_version(&self, shard: &mut Shard, id: &SessionId, now: i64) -> Option<u64> {
        match shard.lru.peek(id) {
            Some(entry) if entry.expires_at <= now => {
                self.remove(shard, id);
                None
            }
            Some(entry) => Some(entry.version),
            None => None,
        }
    }

    /// Removes `id` from `shard`, keeping the counts and the owner index.
    fn remove(&self, shard: &mut Shard, id: &SessionId) {
        if let Some(old) = shard.lru.pop(id) {
            shard.bytes -= old.size;
            self.held.fetch_sub(1, Ordering::Relaxed);
            self.reindex(id, old.owner.as_ref(), None);
        }
    }

    /// Moves `id` in the owner index from `old` to `new`. The caller holds `id`'s shard, so
    /// no other write of `id` can interleave. Costs nothing when neither has an owner.
    fn reindex(&self, id: &SessionId, old: Option<&Owner>, new: Option<&Owner>) {
        if old == new {
            return;
        }
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = old
            && let Some(ids) = owners.get_mut(old)
        {
            ids.remove(id);
            if ids.is_empty() {
                owners.remove(old);
            }
        }
        if let Some(new) = new {
            owners.entry(new.clone()).or_default().insert(id.clone());
        }
    }

    /// The ids the owner index holds for `owner`, copied so that no lock is held after.
    fn indexed(&self, owner: &Owner) -> Vec<SessionId> {
        let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners
            .get(owner)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops every expired entry of `shard` if its earliest expiry may have passed, and
    /// recomputes that expiry exactly.
    fn drop_expired(&self, shard: &mut Shard, now: i64) -> usize {
        if shard.earliest_expiry > now {
            return 0;
        }
        let mut earliest = i64::MAX;
        let mut expired = Vec::new();
        for (id, entry) in shard.lru.iter() {
            let expiry = entry.expires_at;
            if expiry <= now {
                expired.push(id.clone());
            } else {
                earliest = earliest.min(expiry);
            }
        }
        shard.earliest_expiry = earliest;
        for id in &expired {
            self.remove(shard, id);
        }
        expired.len()
    }

    /// Makes room after `id` was added to `shard` (at `index`) while the store was full:
    /// expired sessions first, then the least recently used one of this shard, or of another
    /// shard when this one holds nothing else.
    fn make_room(&self, shard: &mut Shard, index: usize, id: &SessionId, now: i64) {
        if self.held.load(Ordering::Relaxed) <= self.capacity {
            return;
        }
        if self.drop_expired(shard, now) > 0 && self.held.load(Ordering::Relaxed) <= self.capacity {
            return;
        }
        // Expired sessions of the other shards go before any live one.
        for mut other in self.free_others(index) {
            if self.drop_expired(&mut other, now) > 0
                && self.held.load(Ordering::Relaxed) <= self.capacity
            {
                return;
            }
        }
        if shard.lru.len() > 1 {
            let evicted = self.evict_lru(shard);
            debug_assert!(
                evicted.is_some_and(|old| old != *id),
                "the new entry is the most recently used"
            );
            return;
        }
        // This shard holds only the new session: take room from another shard.
        for mut other in self.free_others(index) {
            if self.evict_lru(&mut other).is_some() {
                return;
            }
        }
    }

    /// The shards other than the one at `index` that are free right now, in order after it.
    /// A busy shard is skipped rather than waited for: waiting on a second shard while holding
    /// one could deadlock.
    fn free_others(&self, index: usize) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        let count = self.shards.len();
        (1..count).filter_map(move |offset| self.shards[(index + offset) % count].try_lock().ok())
    }

    /// Evicts `shard`'s least recently used session, keeping the counts; its id, if there
    /// was one.
    fn evict_lru(&self, shard: &mut Shard) -> Option<SessionId> {
        let (id, old) = shard.lru.pop_lru()?;
        shard.bytes -= old.size;
        self.held.fetch_sub(1, Ordering::Relaxed);
        self.evictions.fetch_add(1, Ordering::Relaxed);
        self.reindex(&id, old.owner.as_ref(), None);
        if let Some(sink) = &self.events
            && old.is_live_session(now_millis())
        {
            let kind = EventKind::Ended(EndCause::Evicted);
            sink.send(SessionEvent::new(kind, Some(&id), old.owner, 1));
        }
        Some(id)
    }

    /// Checks, sizes and copies `session` for a write, without any lock held. Errors wait in
    /// the result until the write is due, so that `create` on a live id and a conflicting
    /// `set_if_version` answer as they would have without this session.
    fn prepare(&self, id: &SessionId, session: &Session, now: i64) -> Prepared {
        if session.capped_expiry_millis() <= now {
            return Ok(None);
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
        Ok(Some(Entry {
            data: session.data().clone(),
            expires_at: session.expires_at_millis(),
            version: 0,
            size,
            owner: session.owner().cloned(),
            absolute_expiry: session.absolute_expiry_millis(),
            moved_to: None,
        }))
    }

    /// Stores the prepared session with `version` (or deletes the entry if it has expired).
    /// The caller holds the lock.
    fn write(
        &self,
        shard: &mut Shard,
        index: usize,
        id: &SessionId,
        prepared: Prepared,
        version: u64,
        now: i64,
    ) -> Result<u64> {
        // Prepared before the lock; judged by the clock read under it: a session whose expiry
        // passed while the write waited for the shard is a deletion, as if it came late. Over
        // a live session, the earlier absolute expiry is kept and caps the expiry.
        let stored = shard
            .lru
            .peek(id)
            .filter(|entry| entry.is_live_session(now))
            .map(|entry| entry.absolute_expiry);
        let prepared = prepared?.map(|mut entry| {
            entry.absolute_expiry = crate::session::kept_absolute_expiry(
                stored.is_some(),
                stored.flatten(),
                entry.absolute_expiry,
            );
            if let Some(absolute) = entry.absolute_expiry {
                entry.expires_at = entry.expires_at.min(absolute);
            }
            entry
        });
        let Some(mut entry) = prepared.filter(|entry| entry.expires_at > now) else {
            self.remove(shard, id);
            return Ok(0);
        };
        entry.version = version;
        let size = entry.size;
        shard.earliest_expiry = shard.earliest_expiry.min(entry.expires_at);
        // One lookup: an entry that is there is replaced in place (and becomes the most
        // recently used); only a new id is inserted.
        match shard.lru.get_mut(id) {
            Some(old) => {
                shard.bytes -= old.size;
                if old.owner != entry.owner {
                    self.reindex(id, old.owner.as_ref(), entry.owner.as_ref());
                }
                *old = entry;
            }
            None => {
                self.reindex(id, None, entry.owner.as_ref());
                shard.lru.put(id.clone(), entry);
                self.held.fetch_add(1, Ordering::Relaxed);
            }
        }
        shard.bytes += size;
        self.make_room(shard, index, id, now);
        if let Some(limit) = self.shard_bytes {
            if shard.bytes > limit {
                self.drop_expired(shard, now);
            }
            while shard.bytes > limit && shard.lru.len() > 1 {
                if self.evict_lru(shard).is_none() {
                    break;
                }
            }
        }
        Ok(version)
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
        + session.owner().map_or(0, |owner| owner.as_str().len())
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
        let (session, moved_to) = match shard.lru.get(id) {
            // The clock is read only on a hit: a miss costs no clock call.
            Some(entry) if entry.expires_at <= now_millis() => {
                self.remove(&mut shard, id);
                return Ok(None);
            }
            Some(entry) if entry.moved_to.is_none() => return Ok(Some(entry.session())),
            Some(entry) => (entry.session(), entry.moved_to.clone()),
            None => return Ok(None),
        };
        drop(shard);
        // A rotated id resolves while the session it moved to is live and not rotated again
        // (the old id's shard is released first: two shards are only ever locked in order).
        let target_live = moved_to.is_some_and(|new| {
            self.shard(&new)
                .lru
                .peek(&new)
                .is_some_and(|entry| entry.is_live_session(now_millis()))
        });
        Ok(target_live.then_some(session))
    }

    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        let prepared = self.prepare(id, session, now_millis());
        let index = self.shard_index(id);
        let mut shard = lock(&self.shards[index]);
        // Every decision is made by the clock read under the lock, after the last wait.
        let now = now_millis();
        let version = match shard.lru.peek(id) {
            Some(entry) if entry.is_rotated(now) => return Err(Error::rotated(id)),
            Some(entry) if entry.expires_at > now => next_version(entry.version),
            _ => next_version(0),
        };
        self.write(&mut shard, index, id, prepared, version, now)
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let moved_to = {
            let mut shard = self.shard(id);
            let moved_to = shard.lru.peek(id).and_then(|entry| entry.moved_to.clone());
            self.remove(&mut shard, id);
            moved_to
        };
        // Destroying a rotated id ends the session it moved to as well.
        if let Some(new) = moved_to {
            let mut shard = self.shard(&new);
            if shard
                .lru
                .peek(&new)
                .is_some_and(|entry| entry.moved_to.is_none())
            {
                self.remove(&mut shard, &new);
            }
        }
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        let expires_at = to_millis(expires_at);
        let mut shard = self.shard(id);
        let now = now_millis();
        let Some(absolute) = shard
            .lru
            .peek(id)
            .filter(|entry| entry.is_live_session(now))
            .map(|entry| entry.absolute_expiry)
        else {
            self.live_version(&mut shard, id, now);
            return Ok(false);
        };
        let expires_at = absolute.map_or(expires_at, |absolute| expires_at.min(absolute));
        if expires_at <= now {
            self.remove(&mut shard, id);
        } else if let Some(entry) = shard.lru.get_mut(id) {
            entry.expires_at = expires_at;
            shard.earliest_expiry = shard.earliest_expiry.min(expires_at);
        }
        Ok(true)
    }

    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let prepared = self.prepare(id, session, now_millis());
        let index = self.shard_index(id);
        let mut shard = lock(&self.shards[index]);
        let now = now_millis();
        if self.live_version(&mut shard, id, now).is_some() {
            return Ok(false);
        }
        self.write(&mut shard, index, id, prepared, fresh_version(), now)?;
        Ok(true)
    }

    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected_version: u64,
    ) -> Result<u64> {
        let prepared = self.prepare(id, session, now_millis());
        let index = self.shard_index(id);
        let mut shard = lock(&self.shards[index]);
        let now = now_millis();
        if shard
            .lru
            .peek(id)
            .is_some_and(|entry| entry.is_rotated(now))
        {
            return Err(Error::rotated(id));
        }
        if self.live_version(&mut shard, id, now).unwrap_or(0) != expected_version {
            return Err(Error::conflict(id, expected_version));
        }
        let version = next_version(expected_version);
        self.write(&mut shard, index, id, prepared, version, now)
    }

    async fn len(&self) -> Result<u64> {
        let live = self
            .shards
            .iter()
            .map(|shard| {
                let shard = lock(shard);
                let now = now_millis();
                shard
                    .lru
                    .iter()
                    .filter(|(_, entry)| entry.is_live_session(now))
                    .count() as u64
            })
            .sum();
        Ok(live)
    }

    async fn clear(&self) -> Result<()> {
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            self.held.fetch_sub(shard.lru.len(), Ordering::Relaxed);
            for (id, entry) in shard.lru.iter() {
                self.reindex(id, entry.owner.as_ref(), None);
            }
            shard.lru.clear();
            shard.bytes = 0;
            shard.earliest_expiry = i64::MAX;
        }
        Ok(())
    }

    async fn delete_expired(&self) -> Result<u64> {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let now = now_millis();
            // A full scan: the earliest-expiry bound is only a hint for eviction.
            shard.earliest_expiry = i64::MIN;
            removed += self.drop_expired(&mut shard, now) as u64;
        }
        Ok(removed)
    }

    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        let mut listed = Vec::new();
        for id in self.indexed(owner) {
            let mut shard = self.shard(&id);
            let now = now_millis();
            match shard.lru.peek(&id) {
                Some(entry) if entry.owner.as_ref() != Some(owner) => {}
                // A rotated id is not a session of its own.
                Some(entry) if entry.moved_to.is_some() && entry.expires_at > now => {}
                // Reclaimed here rather than listed.
                Some(entry) if entry.expires_at <= now => self.remove(&mut shard, &id),
                Some(entry) => {
                    let data = with_data.then(|| entry.data.clone());
                    let (expires_at, version) = (entry.expires_at, entry.version);
                    listed.push(OwnedSession::new(id, expires_at, version, data));
                }
                None => {}
            }
        }
        Ok(listed)
    }

    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        let mut ended = 0;
        // A session written for the owner after this snapshot is in the index when its write
        // returns, so a later `sessions_of` lists it.
        for id in self.indexed(owner) {
            if Some(&id) == except {
                continue;
            }
            let mut shard = self.shard(&id);
            if let Some(entry) = shard.lru.peek(&id)
                && entry.owner.as_ref() == Some(owner)
            {
                ended += u64::from(entry.is_live_session(now_millis()));
                self.remove(&mut shard, &id);
            }
        }
        Ok(ended)
    }

    /// Pages through the shards in order; within a shard, ids in order (keyset), so a
    /// session live for the whole scan is returned exactly once. A page walks each shard it
    /// reads once, keeping only the `limit` smallest ids after the cursor.
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let limit = limit.clamp(1, MAX_SCAN_PAGE);
        let (mut shard_index, mut after) = match cursor {
            None => (0, None),
            Some(cursor) => self.parse_cursor(cursor)?,
        };
        let mut sessions: Vec<(SessionId, Session)> = Vec::new();
        while shard_index < self.shards.len() && sessions.len() < limit {
            let want = limit - sessions.len();
            let shard = lock(&self.shards[shard_index]);
            let now = now_millis();
            // The `want` smallest live ids after the cursor, in a bounded max-heap.
            let mut smallest: std::collections::BinaryHeap<&SessionId> =
                std::collections::BinaryHeap::with_capacity(want + 1);
            for (id, entry) in shard.lru.iter() {
                if !entry.is_live_session(now) || after.as_ref().is_some_and(|a| id <= a) {
                    continue;
                }
                if smallest.len() < want {
                    smallest.push(id);
                } else if smallest.peek().is_some_and(|largest| id < *largest) {
                    smallest.pop();
                    smallest.push(id);
                }
            }
            let full = smallest.len() == want;
            let mut page: Vec<SessionId> = smallest.into_iter().cloned().collect();
            page.sort_unstable();
            for id in page {
                if let Some(entry) = shard.lru.peek(&id) {
                    let session = entry.session();
                    after = Some(id.clone());
                    sessions.push((id, session));
                }
            }
            drop(shard);
            if !full {
                // This shard is done: the next one from its start.
                shard_index += 1;
                after = None;
            }
        }
        let next = (shard_index < self.shards.len()).then(|| {
            let last = after.as_ref().map_or("", |id| id.as_str());
            ScanCursor::new(format!("{CURSOR_TAG}:{shard_index}:{last}"))
        });
        Ok(ScanPage::new(sessions, next))
    }

    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        if old == new {
            return Ok(Rotation::Taken);
        }
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let (old_index, new_index) = (self.shard_index(old), self.shard_index(new));
        // Both shards, always locked in index order (one lock when they are the same):
        // `first` is the old id's, `second` the new id's when it is another.
        let (mut first, mut second) = match old_index.cmp(&new_index) {
            std::cmp::Ordering::Equal => (lock(&self.shards[old_index]), None),
            std::cmp::Ordering::Less => {
                let old_guard = lock(&self.shards[old_index]);
                (old_guard, Some(lock(&self.shards[new_index])))
            }
            std::cmp::Ordering::Greater => {
                let new_guard = lock(&self.shards[new_index]);
                (lock(&self.shards[old_index]), Some(new_guard))
            }
        };
        let now = now_millis();
        let old_shard: &mut Shard = &mut first;
        let Some(moved) = old_shard
            .lru
            .peek(old)
            .filter(|entry| entry.is_live_session(now))
            .map(|entry| Entry {
                data: entry.data.clone(),
                expires_at: entry.expires_at,
                version: next_version(entry.version),
                size: entry.size,
                owner: entry.owner.clone(),
                absolute_expiry: entry.absolute_expiry,
                moved_to: None,
            })
        else {
            return Ok(Rotation::Absent);
        };
        let target: &mut Shard = match second.as_mut() {
            Some(shard) => shard,
            None => &mut first,
        };
        if target
            .lru
            .peek(new)
            .is_some_and(|entry| entry.expires_at > now)
        {
            return Ok(Rotation::Taken);
        }
        let version = moved.version;
        self.remove(target, new);
        target.earliest_expiry = target.earliest_expiry.min(moved.expires_at);
        target.bytes += moved.size;
        self.reindex(new, None, moved.owner.as_ref());
        target.lru.put(new.clone(), moved);
        self.held.fetch_add(1, Ordering::Relaxed);
        // The old id: read-only for the grace, then gone.
        let old_shard: &mut Shard = &mut first;
        let ends = now.saturating_add(grace);
        let kept = match old_shard.lru.peek_mut(old) {
            Some(entry) if ends > now => {
                entry.expires_at = entry.expires_at.min(ends);
                entry.moved_to = Some(new.clone());
                Some(entry.expires_at)
            }
            _ => None,
        };
        match kept {
            Some(expiry) => old_shard.earliest_expiry = old_shard.earliest_expiry.min(expiry),
            None => self.remove(old_shard, old),
        }
        drop(second);
        drop(first);
        // The new entry may have put the store over its capacity.
        let mut shard = lock(&self.shards[new_index]);
        self.make_room(&mut shard, new_index, new, now);
        Ok(Rotation::Moved { version })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_owners(true)
            .with_scan(true)
            .with_absolute_expiry(true)
            .with_rotation(true)
    }
}

impl MemoryStore {
    /// The shard and the last id of a cursor this store made.
    fn parse_cursor(&self, cursor: &ScanCursor) -> Result<(usize, Option<SessionId>)> {
        let foreign = || Error::config("not a scan cursor of this memory store");
        let mut parts = cursor.as_str().splitn(3, ':');
        if parts.next() != Some(CURSOR_TAG) {
            return Err(foreign());
        }
        let shard: usize = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|&s| s < self.shards.len())
            .ok_or_else(foreign)?;
        let after = match parts.next().ok_or_else(foreign)? {
            "" => None,
            id => Some(SessionId::new(id).map_err(|_| foreign())?),
        };
        Ok((shard, after))
    }
}

// ---- URL options (connect) ----

/// The options of a `memory://` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemoryOption {
    Capacity,
}

impl crate::url::UrlOptionName for MemoryOption {
    const ALL: &'static [Self] = &[MemoryOption::Capacity];
    fn name(self) -> &'static str {
        match self {
            MemoryOption::Capacity => "capacity",
        }
    }
}

impl MemoryStore {
    /// The store a `memory://` URL describes (`memory://?capacity=N`); see
    /// [`connect`](crate::connect()) for the URL forms. Fails with [`Error::Config`] for a
    /// host, a path or an unknown option.
    pub fn from_url(url: &str) -> Result<MemoryStore> {
        Self::from_store_url(&crate::url::StoreUrl::parse(url)?)
    }

    pub(crate) fn from_store_url(url: &crate::url::StoreUrl) -> Result<MemoryStore> {
        use crate::url::UrlOptionName;
        if !url.location().is_empty() {
            return Err(Error::config(
                "a memory:// session store URL takes no host or path, only ?capacity=N",
            ));
        }
        let mut capacity = DEFAULT_CAPACITY;
        for option in url.options() {
            let value = &option.value;
            match MemoryOption::of(&option.key) {
                Some(MemoryOption::Capacity) => {
                    capacity = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            Error::config(format!(
                                "memory:// capacity must be a positive integer, not `{value}`"
                            ))
                        })?;
                }
                None => {
                    return Err(crate::url::unknown_option(
                        "memory://",
                        &option.key,
                        &MemoryOption::names(),
                    ));
                }
            }
        }
        Ok(MemoryStore::new(capacity))
    }
}

#[cfg(test)]
mod tests;
