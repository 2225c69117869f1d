//! [`FileStoreBuilder`]: the options of a [`FileStore`], and opening it.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;

use super::cache::Cache;
use super::fs::prepare_dir;
use super::inner::Inner;
use super::locks::{LOCK_DIR, LOCK_STRIPES};
use super::owners::OWNERS_DIR;
use super::{FileStore, blocking};
use crate::error::Result;

#[cfg(doc)]
use crate::error::Error;

/// Builds a [`FileStore`]. See the [module docs](super) for the options.
#[derive(Debug, Clone)]
pub struct FileStoreBuilder {
    pub(super) dir: PathBuf,
    pub(super) durable: bool,
    pub(super) in_place_writes: bool,
    pub(super) operation_timeout: Duration,
    pub(super) cache_capacity: usize,
    pub(super) cache_max_bytes: usize,
}

impl FileStoreBuilder {
    /// Whether every write and removal is `fsync`ed (file and directory) before it returns.
    /// Default: `false`.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Whether a write that changes only a session's expiry (a `touch`, or a `set` or
    /// `set_if_version` of the same data and owner) rewrites the file's first line in place
    /// instead of writing a new file and renaming it. Default: `true`. Turn it off while
    /// processes of an earlier version of this crate (one that writes files without that
    /// first line) share the directory: they read the expiry and version from the line's
    /// plain columns, which a read racing the rewrite may see half-written (this version
    /// reads the checksummed slots instead). See the
    /// [file format](super#on-disk-layout).
    pub fn in_place_writes(mut self, in_place: bool) -> Self {
        self.in_place_writes = in_place;
        self
    }

    /// The bound on one operation, waiting for another process's lock included: an operation
    /// that has not finished by then fails with a transient [`Error::Timeout`] (a stopped or
    /// hung process holding a lock file, a hung disk). Default:
    /// [`DEFAULT_OPERATION_TIMEOUT`](crate::DEFAULT_OPERATION_TIMEOUT).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How many sessions the write-skip cache remembers; `0` turns it off. Default:
    /// [`DEFAULT_CACHE_CAPACITY`](super::DEFAULT_CACHE_CAPACITY).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// A bound on the bytes the write-skip cache holds. Default:
    /// [`DEFAULT_CACHE_MAX_BYTES`](super::DEFAULT_CACHE_MAX_BYTES).
    pub fn cache_max_bytes(mut self, max_bytes: usize) -> Self {
        self.cache_max_bytes = max_bytes;
        self
    }

    /// Opens the store, creating the directory (mode `0700`) if it is missing.
    ///
    /// Fails with [`Error::Config`] if the directory cannot be created or opened, or is not
    /// a directory.
    pub async fn open(self) -> Result<FileStore> {
        let FileStoreBuilder {
            dir,
            durable,
            in_place_writes,
            operation_timeout,
            cache_capacity,
            cache_max_bytes,
        } = self;
        let lock_dir = dir.join(LOCK_DIR);
        let owners_dir = dir.join(OWNERS_DIR);
        let (dir, lock_dir) = blocking("open", None, move || {
            prepare_dir(&dir)?;
            prepare_dir(&lock_dir)?;
            Ok((dir, lock_dir))
        })
        .await?;
        // Unbounded maps bounded by hand: a large capacity reserves nothing up front.
        let lru = (cache_capacity > 0).then(LruCache::unbounded);
        Ok(FileStore {
            inner: Arc::new(Inner {
                dir,
                lock_dir,
                owners_dir,
                durable,
                in_place: in_place_writes,
                operation_timeout,
                stripes: (0..LOCK_STRIPES)
                    .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                    .collect(),
                cache: Mutex::new(Cache {
                    lru,
                    capacity: cache_capacity,
                    bytes: 0,
                    max_bytes: cache_max_bytes,
                }),
                writes: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                #[cfg(test)]
                faults: super::faults::Faults::default(),
            }),
        })
    }
}
