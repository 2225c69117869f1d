//! The write-skip cache: what this store last wrote under each id, bounded by entries
//! and bytes.

use std::sync::Arc;

use lru::LruCache;

use crate::session::{Owner, SessionId};

/// The default number of sessions the write-skip cache remembers: 10,000.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// The default bound on the bytes held by the write-skip cache: 64 MiB.
pub const DEFAULT_CACHE_MAX_BYTES: usize = 64 << 20;

/// What this store last wrote under an id.
pub(super) struct Written {
    pub(super) content: Arc<[u8]>,
    pub(super) version: u64,
    pub(super) expires_at: i64,
    pub(super) owner: Option<Owner>,
    pub(super) absolute_expiry: Option<i64>,
    /// Set for a rotated id's file.
    pub(super) moved_to: Option<SessionId>,
}

/// A cache entry, copied out of the cache.
pub(super) struct Snapshot {
    pub(super) content: Arc<[u8]>,
    pub(super) version: u64,
    pub(super) expires_at: i64,
    pub(super) owner: Option<Owner>,
    pub(super) absolute_expiry: Option<i64>,
    /// Set for a rotated id's file.
    pub(super) moved_to: Option<SessionId>,
}

pub(super) struct Cache {
    /// `None` when the cache is turned off.
    pub(super) lru: Option<LruCache<SessionId, Written>>,
    /// The most entries kept.
    pub(super) capacity: usize,
    pub(super) bytes: usize,
    pub(super) max_bytes: usize,
}

impl Cache {
    pub(super) fn forget(&mut self, id: &SessionId) {
        if let Some(old) = self.lru.as_mut().and_then(|lru| lru.pop(id)) {
            self.bytes = self.bytes.saturating_sub(old.content.len());
        }
    }

    /// Records that the first line of `id`'s file went from `old` to `new` (in place): an
    /// entry that recorded the file with `old` now records it with `new`; any other entry
    /// no longer matches the file and goes.
    pub(super) fn rewrote_head(
        &mut self,
        id: &SessionId,
        old: &[u8],
        new: &[u8],
        version: u64,
        expires_at: i64,
    ) {
        let Some(entry) = self.lru.as_mut().and_then(|lru| lru.peek_mut(id)) else {
            return;
        };
        if entry.content.get(..old.len()) == Some(old) && old.len() == new.len() {
            let mut content = entry.content.to_vec();
            content[..new.len()].copy_from_slice(new);
            entry.content = content.into();
            entry.version = version;
            entry.expires_at = expires_at;
        } else {
            self.forget(id);
        }
    }

    pub(super) fn remember(&mut self, id: &SessionId, written: Written) {
        self.forget(id);
        let size = written.content.len();
        if size > self.max_bytes {
            return;
        }
        let Some(lru) = self.lru.as_mut() else {
            return;
        };
        if let Some((_, evicted)) = lru.push(id.clone(), written) {
            self.bytes = self.bytes.saturating_sub(evicted.content.len());
        }
        self.bytes += size;
        while self.bytes > self.max_bytes || lru.len() > self.capacity {
            match lru.pop_lru() {
                Some((_, evicted)) => {
                    self.bytes = self.bytes.saturating_sub(evicted.content.len());
                }
                None => break,
            }
        }
    }
}
