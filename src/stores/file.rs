//! A store that keeps one JSON file per session in a directory.
//!
//! [`FileStore`] needs no server: sessions survive restarts, and several processes (or
//! several stores in one process) can share one directory safely. It suits single-machine
//! deployments with moderate traffic; every operation is a few file-system calls.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path().join("sessions");
//! use std::time::Duration;
//! use session_stores::{FileStore, Session, SessionId, SessionStore};
//!
//! let store = FileStore::builder(&dir).durable(true).cache_capacity(10_000).open().await?;
//! let id = SessionId::generate();
//! let mut session = Session::new(Duration::from_secs(3600));
//! session.insert("user", "ada").unwrap();
//! // A new session starts at a fresh, unpredictable version.
//! let version = store.set(&id, &session).await?;
//! assert!(dir.join(format!("{id}.json")).is_file());
//! assert_eq!(store.get(&id).await?.unwrap().version(), version);
//! // Unchanged data and expiry: nothing is written, the version stays.
//! assert_eq!(store.set(&id, &session).await?, version);
//! assert_eq!((store.writes(), store.skipped_writes()), (1, 1));
//! # Ok::<(), session_stores::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Opening a store
//!
//! [`FileStore::new(dir)`](FileStore::new) opens a store with the defaults;
//! [`FileStore::builder(dir)`](FileStore::builder) sets options and
//! [`open`](FileStoreBuilder::open)s it. Both are `async` (creating the directory is file
//! I/O, which this store never does on the executor's threads) and both need a tokio
//! runtime, as does every operation: file I/O runs on tokio's blocking thread pool
//! (`spawn_blocking`). Opening creates `dir` and its missing parents with mode `0700` if it
//! does not exist (an existing directory keeps its mode), and fails with
//! [`Error::Config`](crate::Error::Config) if `dir` cannot be created or is not a directory.
//!
//! Options:
//!
//! - [`durable(bool)`](FileStoreBuilder::durable), default `false`: when `true`, every write
//!   `fsync`s the new file before renaming it into place, and `fsync`s the directory after a
//!   rename or a removal, so that a completed operation survives a power loss or kernel
//!   crash. Without it, writes are still atomic and survive the *process* crashing (the
//!   kernel finishes them), but the last writes before a machine crash may be lost.
//! - [`cache_capacity(n)`](FileStoreBuilder::cache_capacity), default
//!   [`DEFAULT_CACHE_CAPACITY`]: how many sessions the write-skip cache remembers (LRU); `0`
//!   turns the cache off.
//! - [`cache_max_bytes(n)`](FileStoreBuilder::cache_max_bytes), default
//!   [`DEFAULT_CACHE_MAX_BYTES`]: a bound on the bytes the cache holds; least recently used
//!   entries are dropped to stay under it, and a file larger than the bound is not cached.
//!
//! # On-disk layout
//!
//! ```text
//! dir/                     mode 0700 (when the store created it)
//!   <id>.json              one per session, mode 0600
//!   .locks/000.lock ..     128 lock files, mode 0600, never removed
//!   .tmp-XXXXXX.partial    a write in progress (or left behind by a killed process)
//! ```
//!
//! A session file is named by its [`SessionId`] plus `.json`. A `SessionId` is validated
//! before any store sees it (1 to 128 bytes of `[A-Za-z0-9-_.~+=]`, never `.` or `..`), so a
//! name never contains a path separator and can never address a file outside `dir`. The
//! file holds pretty-printed JSON:
//!
//! ```json
//! {
//!   "data": { "user": "ada" },
//!   "expires_at": 1767225600000,
//!   "version": 3
//! }
//! ```
//!
//! `data` is the session's data exactly as written, `expires_at` its expiry in milliseconds
//! since the Unix epoch, and `version` the version this store assigned (from 1 to
//! [`MAX_VERSION`](crate::MAX_VERSION): a new session starts at a
//! [fresh, unpredictable one](crate::fresh_version), each later write adds one). This is
//! the same shape as [`Session`]'s serde form, so a file can be read with
//! `serde_json::from_slice::<Session>`.
//!
//! Files whose names are not `<valid id>.json` (temporary files, the lock directory, anything
//! else) are never read, counted or removed as sessions, except that
//! [`delete_expired`](SessionStore::delete_expired) also removes `.tmp-*.partial` files that
//! have not been modified for ten minutes: those are left over from a process that was
//! killed mid-write.
//!
//! # Guarantees
//!
//! - **Atomic writes.** Every write goes to a new temporary file in `dir` and is then
//!   `rename`d over `<id>.json`. A reader sees the old file or the new one, never a partial
//!   one, even if the writer is killed; a write that fails leaves the old file in place.
//! - **Locking.** `set`, `create`, `set_if_version`, `touch` and `destroy` run under a lock for their id, so that a
//!   read-decide-write is atomic: `create` has one winner, `set_if_version` never loses an
//!   update and `set` never hands out one version twice. The lock is two-level: a tokio
//!   mutex serializes the tasks of one store without tying up threads, and an advisory
//!   `flock` ([`std::fs::File::lock`]) on a lock file serializes stores and processes that
//!   share the directory. Ids are spread over 128 lock files (`.locks/NNN.lock`, each made
//!   on first use) by a stable hash (FNV-1a of the id), so the lock files do not grow with
//!   the number of sessions; two ids that share a lock file only wait for each other. An
//!   `flock` is released by the kernel when its process dies, even by `SIGKILL`, so there
//!   are no stale locks to clean up. `get` and `len` take no lock: atomic renames already
//!   make every file they read whole.
//! - **Bounded waits.** Every operation on a session ends within the
//!   [`operation_timeout`](FileStoreBuilder::operation_timeout) (default 5 s), and a
//!   directory scan (`len`, `clear`, `delete_expired`) within 12 of them: the lock is
//!   taken with `try_lock`, polled with a growing pause of at most 20 ms, so a stopped or hung
//!   process holding a lock file makes operations fail with a transient
//!   [`Error::Timeout`](crate::Error::Timeout) instead of hanging every session on that lock
//!   file; a hung disk likewise.
//! - **Replaced lock files.** A lock file deleted while locked (a tmp cleaner) would let two
//!   processes each hold "the" lock on a different inode. After locking, the store checks that
//!   the path still names the file it locked (device and inode) and starts again if not, so a
//!   waiter never proceeds on a deleted lock file while another process holds the current
//!   one. What no check can catch: a lock file deleted while a write is already under way, and
//!   another process locking the new file in that window; keep cleaners out of `.locks`.
//! - **Expiry.** `get` never returns an expired session, whether or not its file has been
//!   removed yet, and an expired file counts as absent for every operation.
//!   [`delete_expired`](SessionStore::delete_expired) walks the directory one entry at a
//!   time (it never loads the listing into memory) and removes expired files, re-checking
//!   each one under its lock so that a session rewritten meanwhile is kept.
//! - **Empty files.** A zero-length `<id>.json` (what some file systems leave of a write that
//!   a power loss cut short, without `durable`) holds no session: it is absent for every
//!   operation, and the next write replaces it.
//! - **Bad files.** A file under a session's name that is truncated, not JSON, not of
//!   the shape above, has version 0, or is not a regular file is reported as
//!   [`Error::Decode`](crate::Error::Decode) for that id by `get`, `touch`, `create` and
//!   `set_if_version` (which will not decide on state they cannot read). It is skipped (left
//!   in place and not counted) by `len`, `delete_expired` and `clear`. A `set` replaces it,
//!   which repairs the session. Nothing panics on a bad file and nothing removes one silently;
//!   `destroy` removes whatever file is under the id. A FIFO or device under a session's
//!   name is never read from, so it cannot block an operation.
//! - **The largest version.** A session at [`MAX_VERSION`](crate::MAX_VERSION) or above
//!   (only a hand-written file can be above) is not advanced by one: `set` and
//!   `set_if_version` give it a fresh version instead ([`next_version`](crate::next_version)),
//!   as `set` does when it repairs a bad file.
//! - **Durable mode.** If the directory `fsync` after a successful rename fails, the
//!   operation returns an error although the new file is in place (its durability is
//!   unknown), like a database whose commit acknowledgement was lost.
//! - **`clear`** removes the files of this store's format only: files named `<id>.json`
//!   whose content decodes as a session. Other files in the directory are left alone.
//!
//! # The write-skip cache
//!
//! Each `FileStore` (and its clones) has its own bounded LRU cache recording, per id, what it
//! last wrote: the exact bytes of the file and the version and expiry in them. An entry is
//! only recorded after the write succeeded, and is dropped after the file is gone (on
//! `destroy`, `clear`, `delete_expired` or an expiring write). An entry is only trusted while
//! the file on disk holds byte for byte the content it records, which every write checks by
//! reading the file under the id's lock. File metadata is not evidence: an inode number
//! freed by a `destroy` is handed to the next new file at once, and modification times have
//! tick granularity, so a file written by another process or another store can have the
//! same length, modification time and inode as this store's.
//!
//! The cache is used in two ways:
//!
//! - When its entry is valid, a write takes the current version and expiry from the cache
//!   instead of parsing the file.
//! - [`set`](SessionStore::set) skips the write when the session's data and expiry, encoded
//!   with the current version, are byte-for-byte what the file already holds, and returns
//!   the version unchanged (the [contract](SessionStore#contract) allows a `set` of identical
//!   content to keep the version). A middleware that saves at the end of every request pays
//!   a read of the file instead of a write (a new file, a rename and, in durable mode, two
//!   `fsync`s) for an unchanged session.
//!   [`touch`](SessionStore::touch) to the expiry a session already has also writes nothing.
//!
//! [`writes`](FileStore::writes) and [`skipped_writes`](FileStore::skipped_writes) count
//! what happened.
//!
//! # Caveats
//!
//! - The directory must be on a case-sensitive file system: on a case-insensitive one (the
//!   macOS and Windows defaults) ids that differ only in case would share a file. On Windows,
//!   ids that are reserved device names (`CON`, `NUL`, ...) cannot be stored.
//! - `flock` is advisory and, on some network file systems (older NFS), not shared between
//!   machines: share a directory between processes of one machine only.
//! - `len`, `clear` and `delete_expired` read every session file; they cost time in
//!   proportion to the number of sessions.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use lru::LruCache;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::deadline::{DEFAULT_OPERATION_TIMEOUT, within};
use crate::error::{Error, Result};
use crate::session::{Session, SessionId, fresh_version, next_version, now_millis, to_millis};
use crate::store::SessionStore;

/// The default number of sessions the write-skip cache remembers: 10,000.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// The default bound on the bytes held by the write-skip cache: 64 MiB.
pub const DEFAULT_CACHE_MAX_BYTES: usize = 64 << 20;

/// The extension of session files.
const SUFFIX: &str = ".json";
/// Temporary files are `.tmp-XXXXXX.partial`: never a session file name.
const TMP_PREFIX: &str = ".tmp-";
const TMP_SUFFIX: &str = ".partial";
/// The directory holding the lock files.
const LOCK_DIR: &str = ".locks";
/// How many lock files (and in-process lock stripes) ids are spread over.
const LOCK_STRIPES: usize = 128;
/// Whether `file` (open) is the file that `path` names now.
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    let now = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(held.dev() == now.dev() && held.ino() == now.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = (held, now);
        Ok(true)
    }
}

/// Temporary files untouched for this long are leftovers of a killed writer.
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);
/// An upper bound on the buffer reserved up front when reading a file.
const READ_HINT_LIMIT: u64 = 16 << 20;

/// A session store keeping one JSON file per session in a directory. See the
/// [module docs](self).
///
/// Clones share the directory, the locks, the write-skip cache and the counters.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    lock_dir: PathBuf,
    durable: bool,
    operation_timeout: Duration,
    stripes: Box<[Arc<tokio::sync::Mutex<()>>]>,
    cache: Mutex<Cache>,
    writes: AtomicU64,
    skipped: AtomicU64,
    #[cfg(test)]
    faults: faults::Faults,
}

/// Builds a [`FileStore`]. See the [module docs](self) for the options.
#[derive(Debug, Clone)]
pub struct FileStoreBuilder {
    dir: PathBuf,
    durable: bool,
    operation_timeout: Duration,
    cache_capacity: usize,
    cache_max_bytes: usize,
}

impl FileStoreBuilder {
    /// Whether every write and removal is `fsync`ed (file and directory) before it returns.
    /// Default: `false`.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
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
    /// [`DEFAULT_CACHE_CAPACITY`].
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// A bound on the bytes the write-skip cache holds. Default: [`DEFAULT_CACHE_MAX_BYTES`].
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
            operation_timeout,
            cache_capacity,
            cache_max_bytes,
        } = self;
        let lock_dir = dir.join(LOCK_DIR);
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
                durable,
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
                faults: faults::Faults::default(),
            }),
        })
    }
}

/// Creates `dir` (mode 0700) if missing and checks that it is a directory.
fn prepare_dir(dir: &Path) -> Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    let config = |what: &str, err: io::Error| Error::Config {
        message: format!("session directory {}: {what}", dir.display()),
        source: Some(Box::new(err)),
    };
    builder
        .create(dir)
        .map_err(|err| config("cannot create it", err))?;
    let meta = fs::metadata(dir).map_err(|err| config("cannot open it", err))?;
    if !meta.is_dir() {
        return Err(config(
            "it is not a directory",
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    Ok(())
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .field("durable", &self.inner.durable)
            .field("writes", &self.writes())
            .field("skipped_writes", &self.skipped_writes())
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens a store over `dir` with the default options, creating the directory (mode
    /// `0700`) if it is missing. Same as `FileStore::builder(dir).open().await`.
    pub async fn new(dir: impl Into<PathBuf>) -> Result<FileStore> {
        Self::builder(dir).open().await
    }

    /// A builder for a store over `dir`, starting from the defaults.
    pub fn builder(dir: impl Into<PathBuf>) -> FileStoreBuilder {
        FileStoreBuilder {
            dir: dir.into(),
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            durable: false,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
        }
    }

    /// The directory holding the session files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The path of the file that holds (or would hold) the session `id`: `dir/<id>.json`.
    pub fn path_of(&self, id: &SessionId) -> PathBuf {
        self.inner.path(id)
    }

    /// How many session files this store (and its clones) has written since it was opened.
    pub fn writes(&self) -> u64 {
        self.inner.writes.load(Ordering::Relaxed)
    }

    /// How many writes this store (and its clones) skipped because the file already held
    /// exactly the content to write (see [`set`](SessionStore::set) and
    /// [`touch`](SessionStore::touch)).
    pub fn skipped_writes(&self) -> u64 {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    /// Runs `f` on the blocking pool, holding the in-process and the cross-process lock of
    /// `id`.
    async fn locked<T, F>(&self, op: &'static str, id: &SessionId, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &SessionId) -> Result<T> + Send + 'static,
    {
        let deadline = Instant::now() + self.inner.operation_timeout;
        let locked = async {
            let stripe = stripe_of(id);
            let guard = self.inner.stripe(stripe).lock_owned().await;
            let inner = Arc::clone(&self.inner);
            let owned = id.clone();
            blocking(op, Some(id), move || {
                let id = owned;
                let _guard = guard;
                let _flock = inner.flock(op, &id, stripe, deadline)?;
                f(&inner, &id)
            })
            .await
        };
        within(self.inner.operation_timeout, op, Some(id), locked).await
    }

    /// Runs `f` on the blocking pool, without locks.
    async fn unlocked<T, F>(&self, op: &'static str, id: Option<&SessionId>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        // A directory scan (`len`, `clear`, `delete_expired`) reads every session file, so it
        // gets a longer bound than one session's operation; each lock it takes is still bounded
        // by the operation timeout.
        let timeout = match id {
            Some(_) => self.inner.operation_timeout,
            None => self
                .inner
                .operation_timeout
                .saturating_mul(SCAN_TIMEOUT_FACTOR),
        };
        within(timeout, op, id, blocking(op, id, move || f(&inner))).await
    }
}

/// How many operation timeouts a directory scan may take.
const SCAN_TIMEOUT_FACTOR: u32 = 12;

/// Runs `f` on tokio's blocking pool; a panic or cancellation of the task becomes a
/// [`Error::Backend`].
async fn blocking<T, F>(op: &'static str, id: Option<&SessionId>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(Error::backend(op, id, join)),
    }
}

/// A stable (across processes) hash of the id, picking its lock stripe.
fn stripe_of(id: &SessionId) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % LOCK_STRIPES as u64) as usize
}

/// The id a directory entry's name stands for, if it is a session file name.
fn id_of_file_name(name: &std::ffi::OsStr) -> Option<SessionId> {
    let stem = name.to_str()?.strip_suffix(SUFFIX)?;
    SessionId::new(stem).ok()
}

fn is_temp_file_name(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.starts_with(TMP_PREFIX) && n.ends_with(TMP_SUFFIX))
}

/// What this store last wrote under an id.
struct Written {
    content: Arc<[u8]>,
    version: u64,
    expires_at: i64,
}

/// A cache entry, copied out of the cache.
struct Snapshot {
    content: Arc<[u8]>,
    version: u64,
    expires_at: i64,
}

struct Cache {
    /// `None` when the cache is turned off.
    lru: Option<LruCache<SessionId, Written>>,
    /// The most entries kept.
    capacity: usize,
    bytes: usize,
    max_bytes: usize,
}

impl Cache {
    fn forget(&mut self, id: &SessionId) {
        if let Some(old) = self.lru.as_mut().and_then(|lru| lru.pop(id)) {
            self.bytes = self.bytes.saturating_sub(old.content.len());
        }
    }

    fn remember(&mut self, id: &SessionId, written: Written) {
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

/// The file format, for writing.
#[derive(Serialize)]
struct StoredRef<'a> {
    data: &'a Map<String, Value>,
    expires_at: i64,
    version: u64,
}

/// The file format, for reading.
#[derive(Deserialize)]
struct Stored {
    data: Map<String, Value>,
    expires_at: i64,
    version: u64,
}

impl Stored {
    fn is_expired_at(&self, now: i64) -> bool {
        self.expires_at <= now
    }
}

fn encode(
    id: &SessionId,
    data: &Map<String, Value>,
    expires_at: i64,
    version: u64,
) -> Result<Vec<u8>> {
    crate::session::check_nesting(id, data)?;
    let mut bytes = serde_json::to_vec_pretty(&StoredRef {
        data,
        expires_at,
        version,
    })
    .map_err(|err| Error::encode(id, err))?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn decode(id: &SessionId, bytes: &[u8]) -> Result<Stored> {
    let stored: Stored = serde_json::from_slice(bytes).map_err(|err| Error::decode(id, err))?;
    if stored.version == 0 {
        return Err(Error::decode(
            id,
            "the stored version is 0, which no write assigns",
        ));
    }
    Ok(stored)
}

/// A file read from disk.
enum Loaded {
    Missing,
    /// Something that is not a regular file sits under the name.
    NotAFile,
    Bytes(Vec<u8>),
}

/// `O_NONBLOCK` where its value is known (std has no constant for it), so that opening a
/// FIFO never waits for a writer; on a regular file it changes nothing.
#[cfg(unix)]
const O_NONBLOCK: Option<i32> = if cfg!(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
)) {
    Some(0x0004)
} else if cfg!(all(
    any(target_os = "linux", target_os = "android"),
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv32",
        target_arch = "riscv64",
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64",
    ),
)) {
    Some(0o4000)
} else {
    None
};

/// Reads the file at `path`. Something other than a regular file (a directory, a FIFO, a
/// device) is [`Loaded::NotAFile`] and is never read: the type is checked before opening,
/// and where possible the open itself cannot block, so a FIFO put there between the check
/// and the open is caught by the check after it.
fn read_file(path: &Path) -> io::Result<Loaded> {
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Ok(Loaded::NotAFile),
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(err) => return Err(err),
    }
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    if let Some(flag) = O_NONBLOCK {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, flag);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(err) => return Err(err),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Loaded::NotAFile);
    }
    let hint = usize::try_from(meta.len().min(READ_HINT_LIMIT)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(hint);
    file.read_to_end(&mut bytes)?;
    Ok(Loaded::Bytes(bytes))
}

fn decode_loaded(id: &SessionId, loaded: Loaded) -> Option<Result<Stored>> {
    match loaded {
        Loaded::Missing => None,
        Loaded::NotAFile => Some(Err(Error::decode(
            id,
            "the session's path is not a regular file",
        ))),
        // An empty file is what some file systems leave of a write that a power loss cut
        // short (without `durable`): no session was ever readable there, so it is absent,
        // not a permanent decode error for that user. The next write replaces it.
        Loaded::Bytes(bytes) if bytes.is_empty() => None,
        Loaded::Bytes(bytes) => Some(decode(id, &bytes)),
    }
}

/// The state of an id, as far as a write needs to know.
enum Current {
    /// No file, or an expired one.
    Absent,
    Live {
        version: u64,
    },
    /// The file cannot be decoded.
    Corrupt(Error),
}

/// What the file of `id` holds, read under the id's lock.
enum Probe {
    /// Exactly the bytes this store last wrote there, as recorded in its cache entry: the
    /// version and expiry are known without parsing.
    Cached(Snapshot),
    /// Anything else: `None` if there is no file, `Some(Err)` if it cannot be decoded.
    Read(Option<Result<Stored>>),
}

impl Inner {
    fn path(&self, id: &SessionId) -> PathBuf {
        let mut name = String::with_capacity(id.as_str().len() + SUFFIX.len());
        name.push_str(id.as_str());
        name.push_str(SUFFIX);
        self.dir.join(name)
    }

    fn stripe(&self, index: usize) -> Arc<tokio::sync::Mutex<()>> {
        // `index` comes from `stripe_of`, always below LOCK_STRIPES; fall back to the first
        // stripe rather than panic.
        match self.stripes.get(index) {
            Some(stripe) => Arc::clone(stripe),
            None => Arc::clone(&self.stripes[0]),
        }
    }

    /// Takes the cross-process lock of stripe `index`: an exclusive `flock` on its lock file,
    /// released when the returned file is dropped.
    ///
    /// - It never waits past `deadline`: a stopped or hung process holding the lock makes
    ///   this a transient [`Error::Timeout`] instead of a hang (`try_lock` polled with a
    ///   growing pause, at most 20 ms).
    /// - A lock file deleted or replaced while locked (a tmp cleaner) would let two processes
    ///   each hold "the" lock on a different inode, so after locking it checks that the path
    ///   still names the file it locked, and starts again if not.
    fn flock(
        &self,
        op: &'static str,
        id: &SessionId,
        index: usize,
        deadline: Instant,
    ) -> Result<File> {
        let path = self.lock_dir.join(format!("{index:03}.lock"));
        let open = || {
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options.open(&path)
        };
        let mut pause = Duration::from_micros(100);
        loop {
            let file = match open() {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    // The lock directory was removed under us: make it again.
                    prepare_dir(&self.lock_dir)?;
                    open()
                }
                other => other,
            }
            .map_err(|err| Error::backend(op, Some(id), err))?;
            match file.try_lock() {
                Ok(()) => {
                    if same_file(&file, &path).map_err(|err| Error::backend(op, Some(id), err))? {
                        return Ok(file);
                    }
                    // Locked a file that is no longer at the path: drop it and lock the new one.
                    continue;
                }
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(err)) => {
                    return Err(Error::backend(op, Some(id), err));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    operation: op,
                    id: Some(id.into()),
                    what: "the session's lock file (held by another process)",
                    source: None,
                });
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Takes both locks of `id` from a blocking thread (for directory scans).
    fn lock_blocking(
        &self,
        op: &'static str,
        id: &SessionId,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, File)> {
        let stripe = stripe_of(id);
        let guard = self.stripe(stripe).blocking_lock_owned();
        let file = self.flock(op, id, stripe, Instant::now() + self.operation_timeout)?;
        Ok((guard, file))
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A poisoned cache only means a thread panicked while holding it; every method leaves
        // it consistent, and an entry is only ever trusted after comparing it with the file.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the file of `id` and compares it with the cache entry: only a file holding
    /// byte for byte what the entry records is taken for this store's. No metadata is
    /// trusted for this: an inode number is reused as soon as it is freed and an mtime has
    /// tick granularity, so another writer's file can have this store's length, mtime and
    /// inode. A stale entry is dropped. The caller holds the id's lock, so only an eviction
    /// can change the entry meanwhile; the cache mutex is not held during the read.
    fn probe(&self, op: &'static str, id: &SessionId) -> Result<Probe> {
        let cached = {
            let mut cache = self.cache();
            cache
                .lru
                .as_mut()
                .and_then(|lru| lru.get(id))
                .map(|written| Snapshot {
                    content: Arc::clone(&written.content),
                    version: written.version,
                    expires_at: written.expires_at,
                })
        };
        let loaded = read_file(&self.path(id)).map_err(|err| Error::backend(op, Some(id), err))?;
        if let Some(entry) = cached {
            if let Loaded::Bytes(bytes) = &loaded
                && **bytes == *entry.content
            {
                return Ok(Probe::Cached(entry));
            }
            self.cache().forget(id);
        }
        Ok(Probe::Read(decode_loaded(id, loaded)))
    }

    /// The state of `id` for a write, from a [`probe`](Inner::probe).
    fn current_of(probe: Probe, now: i64) -> Current {
        match probe {
            Probe::Cached(entry) if entry.expires_at <= now => Current::Absent,
            Probe::Cached(entry) => Current::Live {
                version: entry.version,
            },
            Probe::Read(None) => Current::Absent,
            Probe::Read(Some(Err(err))) => Current::Corrupt(err),
            Probe::Read(Some(Ok(stored))) if stored.is_expired_at(now) => Current::Absent,
            Probe::Read(Some(Ok(stored))) => Current::Live {
                version: stored.version,
            },
        }
    }

    /// The state of `id` for a write. The caller holds the id's lock.
    fn current(&self, op: &'static str, id: &SessionId, now: i64) -> Result<Current> {
        Ok(Self::current_of(self.probe(op, id)?, now))
    }

    /// Reads and decodes the file of `id`: `None` if there is none, `Some(Err)` if it cannot
    /// be decoded, an `Err` if it cannot be read.
    fn load(&self, op: &'static str, id: &SessionId) -> Result<Option<Result<Stored>>> {
        let loaded = read_file(&self.path(id)).map_err(|err| Error::backend(op, Some(id), err))?;
        Ok(decode_loaded(id, loaded))
    }

    /// The stored version if writing `session` would not change the file: `probe` found
    /// the file holding byte for byte what this store last wrote (so the version in the
    /// cache entry is the one in the file), the session there is live, and `session`
    /// encodes, at that version, to exactly those bytes.
    fn unchanged(
        &self,
        id: &SessionId,
        session: &Session,
        now: i64,
        probe: &Probe,
    ) -> Result<Option<u64>> {
        let Probe::Cached(entry) = probe else {
            return Ok(None);
        };
        // A different expiry is a different file: no need to encode to know it (and a write
        // that follows encodes anyway, at its new version).
        if entry.expires_at <= now || entry.expires_at != session.expires_at_millis() {
            return Ok(None);
        }
        let bytes = encode(
            id,
            session.data(),
            session.expires_at_millis(),
            entry.version,
        )?;
        Ok((*bytes == *entry.content).then_some(entry.version))
    }

    /// An upsert, skipped when [`unchanged`](Inner::unchanged). The caller holds the id's
    /// lock.
    fn set(&self, id: &SessionId, session: &Session, now: i64) -> Result<u64> {
        if session.is_expired_at(now) {
            self.remove("set", id)?;
            return Ok(0);
        }
        let probe = self.probe("set", id)?;
        if let Some(version) = self.unchanged(id, session, now, &probe)? {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(version);
        }
        let version = match Self::current_of(probe, now) {
            Current::Live { version } => next_version(version),
            // An absent session starts a new incarnation, and a corrupt file is repaired,
            // at a fresh version.
            Current::Absent | Current::Corrupt(_) => fresh_version(),
        };
        self.write(
            "set",
            id,
            session.data(),
            session.expires_at_millis(),
            version,
        )
    }

    /// Atomically replaces the file of `id`, then records the write in the cache. The caller
    /// holds the id's lock.
    fn write(
        &self,
        op: &'static str,
        id: &SessionId,
        data: &Map<String, Value>,
        expires_at: i64,
        version: u64,
    ) -> Result<u64> {
        let content = encode(id, data, expires_at, version)?;
        let io_err = |err: io::Error| Error::backend(op, Some(id), err);
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .suffix(TMP_SUFFIX)
            .tempfile_in(&self.dir)
            .map_err(io_err)?;
        tmp.write_all(&content).map_err(io_err)?;
        if self.durable {
            tmp.as_file().sync_all().map_err(io_err)?;
        }
        #[cfg(test)]
        self.faults.check_write().map_err(io_err)?;
        // On failure the temporary file is removed when `PersistError` drops it.
        tmp.persist(self.path(id))
            .map_err(|err| io_err(err.error))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        if self.durable
            && let Err(err) = sync_dir(&self.dir)
        {
            // The new file is in place but maybe not durable: report it, and do not rely on
            // the cache for this id.
            self.cache().forget(id);
            return Err(io_err(err));
        }
        self.cache().remember(
            id,
            Written {
                content: content.into(),
                version,
                expires_at,
            },
        );
        Ok(version)
    }

    /// Removes the file of `id`, then forgets its cache entry. Returns whether there was one.
    /// The caller holds the id's lock.
    fn remove(&self, op: &'static str, id: &SessionId) -> Result<bool> {
        #[cfg(test)]
        self.faults
            .check_remove()
            .map_err(|err| Error::backend(op, Some(id), err))?;
        let removed = match fs::remove_file(self.path(id)) {
            Ok(()) => true,
            Err(err) if err.kind() == io::ErrorKind::NotFound => false,
            Err(err) => return Err(Error::backend(op, Some(id), err)),
        };
        self.cache().forget(id);
        if removed && self.durable {
            sync_dir(&self.dir).map_err(|err| Error::backend(op, Some(id), err))?;
        }
        Ok(removed)
    }

    fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        match self.load("get", id)? {
            None => Ok(None),
            Some(stored) => {
                let stored = stored?;
                if stored.is_expired_at(now_millis()) {
                    return Ok(None);
                }
                Ok(Some(Session::from_parts(
                    stored.data,
                    stored.expires_at,
                    stored.version,
                )))
            }
        }
    }

    fn touch(&self, id: &SessionId, expires_at: i64) -> Result<bool> {
        let now = now_millis();
        let stored = match self.load("touch", id)? {
            None => return Ok(false),
            Some(stored) => stored?,
        };
        if stored.is_expired_at(now) {
            return Ok(false);
        }
        if expires_at <= now {
            self.remove("touch", id)?;
        } else if expires_at == stored.expires_at {
            // The file was just read under the lock: it already holds exactly this.
            self.skipped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.write("touch", id, &stored.data, expires_at, stored.version)?;
        }
        Ok(true)
    }

    fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let now = now_millis();
        match self.current("create", id, now)? {
            Current::Live { .. } => return Ok(false),
            Current::Corrupt(err) => return Err(err),
            Current::Absent => {}
        }
        if session.is_expired_at(now) {
            // Stored and expired at once: nothing to keep, but drop an expired leftover.
            self.remove("create", id)?;
        } else {
            self.write(
                "create",
                id,
                session.data(),
                session.expires_at_millis(),
                fresh_version(),
            )?;
        }
        Ok(true)
    }

    fn set_if_version(&self, id: &SessionId, session: &Session, expected: u64) -> Result<u64> {
        let now = now_millis();
        let version = match self.current("set_if_version", id, now)? {
            Current::Live { version } => version,
            Current::Absent => 0,
            Current::Corrupt(err) => return Err(err),
        };
        if version != expected {
            return Err(Error::conflict(id, expected));
        }
        if session.is_expired_at(now) {
            self.remove("set_if_version", id)?;
            return Ok(0);
        }
        // `expected + 1`, or a fresh version for an absent session (0) or one at the
        // largest version.
        self.write(
            "set_if_version",
            id,
            session.data(),
            session.expires_at_millis(),
            next_version(expected),
        )
    }

    /// Calls `f` with each session file's id, one directory entry at a time.
    fn scan(
        &self,
        op: &'static str,
        mut f: impl FnMut(&Inner, SessionId) -> Result<()>,
        mut other: impl FnMut(&fs::DirEntry),
    ) -> Result<()> {
        let entries = fs::read_dir(&self.dir).map_err(|err| Error::backend(op, None, err))?;
        for entry in entries {
            let entry = entry.map_err(|err| Error::backend(op, None, err))?;
            match id_of_file_name(&entry.file_name()) {
                Some(id) => f(self, id)?,
                None => other(&entry),
            }
        }
        Ok(())
    }

    /// Reads `id` for a scan: `Some` only for a file that decodes.
    fn load_for_scan(&self, op: &'static str, id: &SessionId) -> Result<Option<Stored>> {
        Ok(self.load(op, id)?.and_then(Result::ok))
    }

    fn len(&self) -> Result<u64> {
        let now = now_millis();
        let mut live = 0;
        self.scan(
            "len",
            |inner, id| {
                if inner
                    .load_for_scan("len", &id)?
                    .is_some_and(|s| !s.is_expired_at(now))
                {
                    live += 1;
                }
                Ok(())
            },
            |_| {},
        )?;
        Ok(live)
    }

    fn clear(&self) -> Result<()> {
        self.scan(
            "clear",
            |inner, id| {
                let _locks = inner.lock_blocking("clear", &id)?;
                if inner.load_for_scan("clear", &id)?.is_some() {
                    inner.remove("clear", &id)?;
                }
                Ok(())
            },
            |_| {},
        )
    }

    fn delete_expired(&self) -> Result<u64> {
        let now = now_millis();
        let mut removed = 0;
        self.scan(
            "delete_expired",
            |inner, id| {
                if !inner
                    .load_for_scan("delete_expired", &id)?
                    .is_some_and(|s| s.is_expired_at(now))
                {
                    return Ok(());
                }
                // Re-check under the lock: the session may have been rewritten meanwhile.
                let _locks = inner.lock_blocking("delete_expired", &id)?;
                if inner
                    .load_for_scan("delete_expired", &id)?
                    .is_some_and(|s| s.is_expired_at(now_millis()))
                    && inner.remove("delete_expired", &id)?
                {
                    removed += 1;
                }
                Ok(())
            },
            |entry| {
                if is_temp_file_name(&entry.file_name()) {
                    remove_stale_temp(&entry.path());
                }
            },
        )?;
        Ok(removed)
    }
}

/// Removes a temporary file that has not been modified for [`STALE_TEMP_AGE`]: a writer
/// that was killed before its rename left it. Failures are ignored; the next run retries.
fn remove_stale_temp(path: &Path) {
    let stale = fs::symlink_metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age >= STALE_TEMP_AGE);
    if stale {
        let _ = fs::remove_file(path);
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for FileStore {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        let owned = id.clone();
        self.unlocked("get", Some(id), move |inner| inner.get(&owned))
            .await
    }

    /// Skips the write when nothing changed: if the session under `id` is live, its file
    /// (read under the id's lock) holds byte for byte what this store last wrote there, and
    /// `session`'s data and expiry encode, at that file's version, to exactly that content, nothing is written and the stored version is returned unchanged
    /// (the contract allows this). The comparison is made on the encoded bytes, not on any
    /// object the caller still holds, and only against what this store wrote, so a change
    /// made by another process or store is never overwritten by a skip.
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        let session = session.clone();
        self.locked("set", id, move |inner, id| {
            inner.set(id, &session, now_millis())
        })
        .await
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.locked("destroy", id, |inner, id| {
            inner.remove("destroy", id).map(drop)
        })
        .await
    }

    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        let expires_at = to_millis(expires_at);
        self.locked("touch", id, move |inner, id| inner.touch(id, expires_at))
            .await
    }

    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let session = session.clone();
        self.locked("create", id, move |inner, id| inner.create(id, &session))
            .await
    }

    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected_version: u64,
    ) -> Result<u64> {
        let session = session.clone();
        self.locked("set_if_version", id, move |inner, id| {
            inner.set_if_version(id, &session, expected_version)
        })
        .await
    }

    async fn len(&self) -> Result<u64> {
        self.unlocked("len", None, Inner::len).await
    }

    async fn clear(&self) -> Result<()> {
        self.unlocked("clear", None, Inner::clear).await
    }

    async fn delete_expired(&self) -> Result<u64> {
        self.unlocked("delete_expired", None, Inner::delete_expired)
            .await
    }
}

#[cfg(test)]
mod faults {
    //! Fault injection for the unit tests: make the next writes or removals fail.
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    pub(super) struct Faults {
        pub(super) failing_writes: AtomicU64,
        pub(super) failing_removes: AtomicU64,
    }

    fn take(counter: &AtomicU64) -> io::Result<()> {
        let took = counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if took {
            Err(io::Error::other("injected failure"))
        } else {
            Ok(())
        }
    }

    impl Faults {
        pub(super) fn check_write(&self) -> io::Result<()> {
            take(&self.failing_writes)
        }
        pub(super) fn check_remove(&self) -> io::Result<()> {
            take(&self.failing_removes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::SeqCst;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn session(value: &str) -> Session {
        let mut s = Session::new(Duration::from_secs(3600));
        s.insert("value", value).unwrap();
        s
    }

    fn on_disk(store: &FileStore, id: &SessionId) -> Stored {
        decode(id, &fs::read(store.path_of(id)).unwrap()).unwrap()
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_is_retried_not_skipped() {
        rt().block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let store = FileStore::new(tmp.path()).await.unwrap();
            let id = SessionId::generate();
            let (a, b) = (session("a"), session("b"));
            let v0 = store.set(&id, &a).await.unwrap();

            store.inner.faults.failing_writes.store(1, SeqCst);
            let err = store.set(&id, &b).await.unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Backend, "{err:?}");
            assert!(std::error::Error::source(&err).is_some(), "source kept");
            // The old session is intact, and no temporary file was left behind.
            let got = store.get(&id).await.unwrap().unwrap();
            assert_eq!(got.data(), a.data());
            assert_eq!(got.version(), v0);
            assert_eq!(
                fs::read_dir(tmp.path()).unwrap().count(),
                2,
                "file + .locks"
            );

            // The retry really writes: the cache did not record the failed write.
            let writes = store.writes();
            assert_eq!(store.set(&id, &b).await.unwrap(), v0 + 1);
            assert_eq!(store.writes(), writes + 1);
            assert_eq!(store.skipped_writes(), 0);
            let stored = on_disk(&store, &id);
            assert_eq!(stored.data, *b.data());
            assert_eq!(stored.version, v0 + 1);
            // And now an identical save is skipped.
            assert_eq!(store.set(&id, &b).await.unwrap(), v0 + 1);
            assert_eq!(store.skipped_writes(), 1);
        });
    }

    #[test]
    fn a_failed_touch_and_a_failed_version_write_leave_the_session() {
        rt().block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let store = FileStore::new(tmp.path()).await.unwrap();
            let id = SessionId::generate();
            let a = session("a");
            let v0 = store.set(&id, &a).await.unwrap();
            store.inner.faults.failing_writes.store(2, SeqCst);
            let later = SystemTime::now() + Duration::from_secs(7200);
            assert!(store.touch(&id, later).await.is_err());
            assert!(store.set_if_version(&id, &session("b"), v0).await.is_err());
            let got = store.get(&id).await.unwrap().unwrap();
            assert_eq!(got.data(), a.data());
            assert_eq!(got.expires_at_millis(), a.expires_at_millis());
            assert_eq!(got.version(), v0);
            // Both retried for real.
            assert!(store.touch(&id, later).await.unwrap());
            assert_eq!(
                store.set_if_version(&id, &session("b"), v0).await.unwrap(),
                v0 + 1
            );
        });
    }

    #[test]
    fn a_cache_entry_is_dropped_only_after_the_file_is_gone() {
        rt().block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let store = FileStore::new(tmp.path()).await.unwrap();
            let id = SessionId::generate();
            let a = session("a");
            let v0 = store.set(&id, &a).await.unwrap();

            store.inner.faults.failing_removes.store(1, SeqCst);
            assert!(store.destroy(&id).await.is_err());
            assert!(
                store.path_of(&id).exists(),
                "the failed destroy kept the file"
            );
            assert!(store.inner.cache().lru.as_mut().unwrap().contains(&id));
            // The entry still describes the file on disk, so a skip is still right.
            assert_eq!(store.set(&id, &a).await.unwrap(), v0);
            assert_eq!(store.skipped_writes(), 1);

            store.destroy(&id).await.unwrap();
            assert!(!store.path_of(&id).exists());
            assert!(!store.inner.cache().lru.as_mut().unwrap().contains(&id));
            // A new incarnation, at a fresh version.
            let v1 = store.set(&id, &a).await.unwrap();
            assert_ne!(v1, v0);
            assert_eq!(on_disk(&store, &id).version, v1);
            assert_eq!(store.skipped_writes(), 1, "no skip once the file is gone");
        });
    }

    #[test]
    fn the_cache_is_bounded_by_entries_and_bytes() {
        rt().block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let store = FileStore::builder(tmp.path())
                .cache_capacity(2)
                .open()
                .await
                .unwrap();
            let ids: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
            let x = session("x");
            let mut versions = Vec::new();
            for id in &ids {
                versions.push(store.set(id, &x).await.unwrap());
            }
            assert_eq!(store.inner.cache().lru.as_ref().unwrap().len(), 2);
            // The least recently written id was evicted: saving it writes again.
            assert_eq!(store.set(&ids[0], &x).await.unwrap(), versions[0] + 1);
            assert_eq!(store.skipped_writes(), 0);
            assert_eq!(store.set(&ids[2], &x).await.unwrap(), versions[2]);
            assert_eq!(store.skipped_writes(), 1);

            let small = FileStore::builder(tmp.path().join("small"))
                .cache_max_bytes(180)
                .open()
                .await
                .unwrap();
            for id in &ids {
                small.set(id, &session("y")).await.unwrap();
            }
            let (bytes, entries) = {
                let cache = small.inner.cache();
                (cache.bytes, cache.lru.as_ref().unwrap().len())
            };
            assert!(bytes <= 180, "{bytes} bytes cached");
            assert!((1..3).contains(&entries), "{entries} entries");
            small
                .set(&ids[0], &session(&"z".repeat(400)))
                .await
                .unwrap();
            let cache = small.inner.cache();
            assert!(
                !cache.lru.as_ref().unwrap().contains(&ids[0]),
                "too big to cache"
            );
            assert!(cache.bytes <= 180);
        });
    }

    #[test]
    fn a_disabled_cache_never_skips_a_set() {
        rt().block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let store = FileStore::builder(tmp.path())
                .cache_capacity(0)
                .open()
                .await
                .unwrap();
            let id = SessionId::generate();
            let a = session("a");
            let v0 = store.set(&id, &a).await.unwrap();
            assert_eq!(store.set(&id, &a).await.unwrap(), v0 + 1);
            assert_eq!((store.writes(), store.skipped_writes()), (2, 0));
        });
    }

    #[test]
    fn stripes_are_stable_and_in_range() {
        let id = SessionId::new("abc").unwrap();
        // FNV-1a of "abc" is 0xe71fa2190541574b; it must never change, since processes
        // sharing a directory must agree on it.
        assert_eq!(stripe_of(&id), (0xe71f_a219_0541_574b_u64 % 128) as usize);
        for _ in 0..1000 {
            assert!(stripe_of(&SessionId::generate()) < LOCK_STRIPES);
        }
    }

    #[test]
    fn file_names_map_back_to_ids() {
        use std::ffi::OsStr;
        assert_eq!(
            id_of_file_name(OsStr::new("abc.json")).unwrap().as_str(),
            "abc"
        );
        assert_eq!(
            id_of_file_name(OsStr::new("....json")).unwrap().as_str(),
            "..."
        );
        for name in [
            ".json",
            "..json",
            "...json",
            "a.txt",
            "a b.json",
            "a.json.partial",
            ".tmp-x.partial",
            ".locks",
        ] {
            assert!(id_of_file_name(OsStr::new(name)).is_none(), "{name}");
        }
        assert!(is_temp_file_name(OsStr::new(".tmp-abc.partial")));
        assert!(!is_temp_file_name(OsStr::new(".tmp-abc.json")));
    }
}
