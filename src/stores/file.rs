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
//!   .owners/               the owner index (only once a session had an owner), mode 0700
//!     <key>/               one per owner: key = base64url, no padding, of the owner's bytes
//!       <id>               an empty marker file per session of that owner, mode 0600
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
//!   "version": 3,
//!   "owner": "user:42"
//! }
//! ```
//!
//! `data` is the session's data exactly as written, `expires_at` its expiry in milliseconds
//! since the Unix epoch, and `version` the version this store assigned (from 1 to
//! [`MAX_VERSION`](crate::MAX_VERSION): a new session starts at a
//! [fresh, unpredictable one](crate::fresh_version), each later write adds one). `owner`
//! is the session's [`Owner`], and is left out for a session without one, so files written
//! before owners existed read as sessions without owner, and a store of an older version
//! reads the files of this one (ignoring the owner). This is the same shape as
//! [`Session`]'s serde form, so a file can be read with `serde_json::from_slice::<Session>`.
//! An `owner` that breaks [`Owner`]'s rules makes the file undecodable (see bad files).
//!
//! Files whose names are not `<valid id>.json` (temporary files, the lock directory, the
//! owner index, anything else) are never read, counted, scanned or removed as sessions,
//! except that
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
//! # Owners
//!
//! [`sessions_of`](SessionStore::sessions_of) and
//! [`destroy_owner`](SessionStore::destroy_owner) ("log out everywhere") go through the
//! owner index, so they cost time in proportion to the owner's sessions, not the store's:
//! `.owners/<key>/` holds an empty marker file named by the id of each session of the owner
//! (the key, base64url of the owner's UTF-8 bytes, is at most 171 bytes of `[A-Za-z0-9_-]`).
//! A file system cannot change two files at once, so the index is a **superset**: every
//! live session with an owner has its marker, but a marker may outlive its session.
//!
//! - **Marker before write.** A write of a session with an owner makes the owner's marker
//!   (one `open` that fails if it exists) before it replaces the session file; in durable
//!   mode a new marker (and a new owner directory) is `fsync`ed first. So a `destroy_owner`
//!   running meanwhile either sees the marker or listed the directory before the session
//!   was written, and a later `sessions_of` lists it; and a crash never keeps a session
//!   without its marker (without `durable`, a machine crash may lose a marker as it may
//!   lose the write; the session's next write makes it again). A write of a session
//!   without owner over one without owner touches no marker: it costs nothing more.
//! - **Markers go only when dead**, under the id's lock (so no write of the id is in
//!   between): after a write that changes or removes the owner, `destroy`, an expiring
//!   write or `touch`, `delete_expired` of the session, `clear`, and lazily when
//!   `sessions_of` or `destroy_owner` find the session absent, expired or someone else's.
//!   An owner's directory is removed with its last marker (a writer makes it again).
//!   `destroy` learns the owner from the write-skip cache, or reads the file when the cache
//!   has no entry; a marker it misses (another process changed the owner behind the cache)
//!   stays stale until a listing of that owner reclaims it. Removing a marker is best
//!   effort: one left behind is only stale.
//! - **`sessions_of`** reads the owner's directory, then each marked session file (without
//!   locks, like `get`), and lists those that are live and whose stored owner is the owner.
//!   **`destroy_owner`** takes each marked id's lock (but `except`'s), checks the same, and
//!   removes the file and the marker. A marked file that cannot be decoded is neither listed
//!   nor destroyed and keeps its marker. Both are bounded like a directory scan.
//! - `len`, `clear`'s and `delete_expired`'s walks never see the index (it is not a
//!   `<id>.json` file); `clear` removes the markers of the sessions it removes and then every
//!   dead marker and empty directory of the index. Stores over different directories have
//!   different indexes.
//!
//! # Scans
//!
//! [`scan`](SessionStore::scan) pages through the store's sessions in the order of their
//! ids (bytewise), keyset style: the cursor is a version tag and the last id a page covered
//! (`1:<id>`), so the store keeps nothing between pages, and a cursor saved from
//! [`as_str`](crate::ScanCursor::as_str) resumes the scan on any store over the same
//! directory, in another process or after a restart. Text that is not such a cursor is an
//! [`Error::Config`].
//!
//! - **A page is one directory pass.** It streams the directory entries (never loading the
//!   listing), keeps in a bounded set the `limit` smallest ids greater than the cursor's
//!   (only `<valid id>.json` names: temporary files, the lock files and the owner index
//!   are never sessions), then reads those files without locks, as `get` does, and returns
//!   the live ones with their data, expiry, version and owner. A file that is gone by then,
//!   expired or empty is skipped (so a page may hold fewer than `limit` sessions, even
//!   none, while `next` is `Some`); one that cannot be decoded fails the page with
//!   [`Error::Decode`] naming the session, like `get`.
//! - **Memory is bounded by the page**, not by the directory: at most `limit + 1` ids and
//!   `limit` sessions, whatever the number of files. `limit` counts from 1 (a `limit` of 0
//!   counts as 1) to 10,000 (a larger one counts as 10,000).
//! - **The cost:** each page reads the whole directory listing, so a full scan of `n`
//!   session files costs `n / limit` listings of `n` entries, `O(n²/limit)` entries read
//!   (plus one read per session file). Scan large directories with large pages, as a
//!   command-line copy of a whole store should (100,000 files in pages of 10,000: ten
//!   listings).
//! - **Exactly once.** A page's `next` is the largest id it covered, and the next page
//!   starts after it, so ids are covered in increasing order, each at most once: a session
//!   live (under the same id) for the whole scan is returned exactly once, whatever is
//!   written, destroyed or expires meanwhile, and a session written or destroyed during
//!   the scan at most once. `next` is `None` once no greater id is left. This relies on
//!   the file system listing every entry that exists for the whole of a directory pass,
//!   which POSIX `readdir` promises; a session rewritten during the pass is renamed over
//!   its own name, which ext4, XFS and Btrfs do in place (and tmpfs lists the new entry
//!   later in the same pass, which the set removes as a duplicate).
//! - **Bounded waits.** A page is bounded like `len`: 12 operation timeouts, and it takes
//!   no locks.
//!
//! # The write-skip cache
//!
//! Each `FileStore` (and its clones) has its own bounded LRU cache recording, per id, what it
//! last wrote: the exact bytes of the file and the version, expiry and owner in them. An entry is
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
//!   with the current version and the session's owner, are byte-for-byte what the file
//!   already holds (so the same data under another owner is written), and returns
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
//!   proportion to the number of sessions. Each page of a `scan` reads the whole directory
//!   listing (see [scans](#scans)). `sessions_of` and `destroy_owner` read the
//!   owner's markers and sessions only.

use std::collections::BTreeSet;
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
use crate::session::{
    Owner, Session, SessionId, fresh_version, next_version, now_millis, to_millis,
};
use crate::store::{Capabilities, OwnedSession, ScanCursor, ScanPage, SessionStore};

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
/// The directory holding the owner index: one subdirectory per owner, one empty marker
/// file per session in it.
const OWNERS_DIR: &str = ".owners";
/// How often creating a marker is retried when its owner's directory vanishes in between
/// (another operation removed it as empty).
const MARKER_ATTEMPTS: usize = 16;
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
    owners_dir: PathBuf,
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

/// The name of `owner`'s index directory: base64url without padding of its UTF-8 bytes.
/// An owner is at most [`Owner::MAX_LEN`] (128) bytes, so the name is at most 171 bytes of
/// `[A-Za-z0-9_-]`: a safe file name, never `.` or `..`, distinct for distinct owners (on a
/// case-sensitive file system, which the session files need anyway).
fn owner_key(owner: &Owner) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = owner.as_str().as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // One input byte gives 2 characters, two give 3, three give 4.
        for i in 0..=chunk.len() {
            let index = ((n >> (18 - 6 * i)) & 0x3f) as usize;
            out.push(char::from(ALPHABET[index]));
        }
    }
    out
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
    owner: Option<Owner>,
}

/// A cache entry, copied out of the cache.
struct Snapshot {
    content: Arc<[u8]>,
    version: u64,
    expires_at: i64,
    owner: Option<Owner>,
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

/// The file format, for writing. `owner` is left out when there is none, so a file without
/// an owner is exactly what versions before owners wrote.
#[derive(Serialize)]
struct StoredRef<'a> {
    data: &'a Map<String, Value>,
    expires_at: i64,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
}

/// The file format, for reading. A file without `owner` (as every version before owners
/// wrote) has none.
#[derive(Deserialize)]
struct Stored {
    data: Map<String, Value>,
    expires_at: i64,
    version: u64,
    #[serde(default)]
    owner: Option<Owner>,
}

impl Stored {
    fn is_expired_at(&self, now: i64) -> bool {
        self.expires_at <= now
    }

    /// Whether this is a live session of the owner whose index directory is `key`.
    fn is_live_of(&self, key: &str, now: i64) -> bool {
        !self.is_expired_at(now) && self.owner.as_ref().is_some_and(|o| owner_key(o) == key)
    }
}

fn encode(
    id: &SessionId,
    data: &Map<String, Value>,
    expires_at: i64,
    version: u64,
    owner: Option<&Owner>,
) -> Result<Vec<u8>> {
    crate::session::check_nesting(id, data)?;
    let mut bytes = serde_json::to_vec_pretty(&StoredRef {
        data,
        expires_at,
        version,
        owner: owner.map(Owner::as_str),
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
                    owner: written.owner.clone(),
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

    /// The state of `id` for a write, from a [`probe`](Inner::probe), and the owner stored
    /// in its file, live or expired (`None` without a file or for one that cannot be read).
    fn current_of(probe: Probe, now: i64) -> (Current, Option<Owner>) {
        match probe {
            Probe::Cached(entry) if entry.expires_at <= now => (Current::Absent, entry.owner),
            Probe::Cached(entry) => (
                Current::Live {
                    version: entry.version,
                },
                entry.owner,
            ),
            Probe::Read(None) => (Current::Absent, None),
            Probe::Read(Some(Err(err))) => (Current::Corrupt(err), None),
            Probe::Read(Some(Ok(stored))) if stored.is_expired_at(now) => {
                (Current::Absent, stored.owner)
            }
            Probe::Read(Some(Ok(stored))) => (
                Current::Live {
                    version: stored.version,
                },
                stored.owner,
            ),
        }
    }

    /// The state of `id` for a write and its stored owner. The caller holds the id's lock.
    fn current(
        &self,
        op: &'static str,
        id: &SessionId,
        now: i64,
    ) -> Result<(Current, Option<Owner>)> {
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
        // The owner is part of the content: the same data under another owner is a change.
        let bytes = encode(
            id,
            session.data(),
            session.expires_at_millis(),
            entry.version,
            session.owner(),
        )?;
        Ok((*bytes == *entry.content).then_some(entry.version))
    }

    /// An upsert, skipped when [`unchanged`](Inner::unchanged). The caller holds the id's
    /// lock.
    fn set(&self, id: &SessionId, session: &Session, now: i64) -> Result<u64> {
        if session.is_expired_at(now) {
            self.destroy("set", id)?;
            return Ok(0);
        }
        let probe = self.probe("set", id)?;
        if let Some(version) = self.unchanged(id, session, now, &probe)? {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(version);
        }
        let (current, previous) = Self::current_of(probe, now);
        let version = match current {
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
            session.owner(),
            previous.as_ref(),
        )
    }

    /// Atomically replaces the file of `id`, then records the write in the cache. The caller
    /// holds the id's lock. `owner` is stored with the session; `previous` is the owner of
    /// the file being replaced (live or expired), whose marker goes once the new file is in
    /// place if the owner changed.
    ///
    /// The owner's marker is made before the file is replaced, so the index never lacks a
    /// session that is on disk. A session without owner that had none costs nothing more.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        op: &'static str,
        id: &SessionId,
        data: &Map<String, Value>,
        expires_at: i64,
        version: u64,
        owner: Option<&Owner>,
        previous: Option<&Owner>,
    ) -> Result<u64> {
        let content = encode(id, data, expires_at, version, owner)?;
        let io_err = |err: io::Error| Error::backend(op, Some(id), err);
        if let Some(owner) = owner {
            self.add_marker(op, id, owner)?;
        }
        // A write that fails leaves the session to its previous owner: a marker just made
        // for another owner is dead, and goes (best effort; a stale marker is harmless).
        let undo_marker = |err: Error| {
            if let Some(owner) = owner
                && previous != Some(owner)
            {
                self.remove_marker(owner, id);
            }
            err
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .suffix(TMP_SUFFIX)
            .tempfile_in(&self.dir)
            .map_err(io_err)
            .map_err(undo_marker)?;
        tmp.write_all(&content)
            .map_err(io_err)
            .map_err(undo_marker)?;
        if self.durable {
            tmp.as_file()
                .sync_all()
                .map_err(io_err)
                .map_err(undo_marker)?;
        }
        #[cfg(test)]
        self.faults
            .check_write()
            .map_err(io_err)
            .map_err(undo_marker)?;
        // On failure the temporary file is removed when `PersistError` drops it.
        tmp.persist(self.path(id))
            .map_err(|err| io_err(err.error))
            .map_err(undo_marker)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        // The session is now `owner`'s (or no one's): the previous owner's marker is dead.
        if let Some(previous) = previous
            && owner != Some(previous)
        {
            self.remove_marker(previous, id);
        }
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
                owner: owner.cloned(),
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

    /// Removes the session file of `id` and the marker of the owner stored in it. The owner
    /// is taken from the cache entry when there is one (no read for a session this store
    /// wrote), else from the file. Either way the file is gone afterwards, so whatever
    /// marker is removed was dead; a marker missed because another process changed the
    /// owner behind the cache stays stale, which the index allows. The caller holds the
    /// id's lock.
    fn destroy(&self, op: &'static str, id: &SessionId) -> Result<()> {
        let cached = self
            .cache()
            .lru
            .as_mut()
            .and_then(|lru| lru.peek(id))
            .map(|written| written.owner.clone());
        let owner = match cached {
            Some(owner) => owner,
            None => match self.load(op, id)? {
                Some(Ok(stored)) => stored.owner,
                // No file, or one that cannot be read: no owner known.
                _ => None,
            },
        };
        self.remove_owned(op, id, owner.as_ref()).map(drop)
    }

    /// Removes the session file of `id`, then `owner`'s marker of it. Returns whether there
    /// was a file. The caller holds the id's lock.
    fn remove_owned(
        &self,
        op: &'static str,
        id: &SessionId,
        owner: Option<&Owner>,
    ) -> Result<bool> {
        let removed = self.remove(op, id)?;
        if let Some(owner) = owner {
            self.remove_marker(owner, id);
        }
        Ok(removed)
    }

    /// `dir/.owners/<key>`: the index directory of the owner whose key is `key`.
    fn owner_dir(&self, key: &str) -> PathBuf {
        self.owners_dir.join(key)
    }

    /// Makes `owner`'s marker of `id` (an empty file) if it is missing: one `open` that fails
    /// when it exists. A missing directory is made (and made again if another operation
    /// removes it as empty in between). In durable mode a new marker, and a new directory,
    /// is `fsync`ed into its directory before the session file is written, so a crash never
    /// keeps a session its owner's index lacks. The caller holds the id's lock.
    fn add_marker(&self, op: &'static str, id: &SessionId, owner: &Owner) -> Result<()> {
        let io_err = |err: io::Error| Error::backend(op, Some(id), err);
        let dir = self.owner_dir(&owner_key(owner));
        let path = dir.join(id.as_str());
        for _ in 0..MARKER_ATTEMPTS {
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&path) {
                Ok(_) => {
                    if self.durable {
                        sync_dir(&dir).map_err(io_err)?;
                    }
                    return Ok(());
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    let mut builder = DirBuilder::new();
                    builder.recursive(true);
                    #[cfg(unix)]
                    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                    builder.create(&dir).map_err(io_err)?;
                    if self.durable {
                        sync_dir(&self.owners_dir).map_err(io_err)?;
                        sync_dir(&self.dir).map_err(io_err)?;
                    }
                }
                Err(err) => return Err(io_err(err)),
            }
        }
        Err(io_err(io::Error::other(
            "the owner's index directory kept vanishing while its marker was made",
        )))
    }

    /// Removes `owner`'s marker of `id`, and the owner's directory if that was its last
    /// marker. Best effort: a marker left behind is stale, which the index allows (it is
    /// removed when a listing finds it dead). The caller holds the id's lock and knows the
    /// marker is dead: the session is gone, expired or someone else's.
    fn remove_marker(&self, owner: &Owner, id: &SessionId) {
        self.remove_marker_of(&owner_key(owner), id);
    }

    /// [`remove_marker`](Inner::remove_marker) by the owner's key.
    fn remove_marker_of(&self, key: &str, id: &SessionId) {
        let dir = self.owner_dir(key);
        if fs::remove_file(dir.join(id.as_str())).is_ok() {
            // Fails (and is meant to) while the directory holds other markers.
            let _ = fs::remove_dir(&dir);
        }
    }

    fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        match self.load("get", id)? {
            None => Ok(None),
            Some(stored) => {
                let stored = stored?;
                if stored.is_expired_at(now_millis()) {
                    return Ok(None);
                }
                Ok(Some(
                    Session::from_parts(stored.data, stored.expires_at, stored.version)
                        .with_owner(stored.owner),
                ))
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
            self.remove_owned("touch", id, stored.owner.as_ref())?;
        } else if expires_at == stored.expires_at {
            // The file was just read under the lock: it already holds exactly this.
            self.skipped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.write(
                "touch",
                id,
                &stored.data,
                expires_at,
                stored.version,
                stored.owner.as_ref(),
                stored.owner.as_ref(),
            )?;
        }
        Ok(true)
    }

    fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let now = now_millis();
        let previous = match self.current("create", id, now)? {
            (Current::Live { .. }, _) => return Ok(false),
            (Current::Corrupt(err), _) => return Err(err),
            (Current::Absent, previous) => previous,
        };
        if session.is_expired_at(now) {
            // Stored and expired at once: nothing to keep, but drop an expired leftover.
            self.remove_owned("create", id, previous.as_ref())?;
        } else {
            self.write(
                "create",
                id,
                session.data(),
                session.expires_at_millis(),
                fresh_version(),
                session.owner(),
                previous.as_ref(),
            )?;
        }
        Ok(true)
    }

    fn set_if_version(&self, id: &SessionId, session: &Session, expected: u64) -> Result<u64> {
        let now = now_millis();
        let (version, previous) = match self.current("set_if_version", id, now)? {
            (Current::Live { version }, previous) => (version, previous),
            (Current::Absent, previous) => (0, previous),
            (Current::Corrupt(err), _) => return Err(err),
        };
        if version != expected {
            return Err(Error::conflict(id, expected));
        }
        if session.is_expired_at(now) {
            self.remove_owned("set_if_version", id, previous.as_ref())?;
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
            session.owner(),
            previous.as_ref(),
        )
    }

    /// Calls `f` with each session file's id, one directory entry at a time.
    fn walk(
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

    /// Reads `id` for a directory walk: `Some` only for a file that decodes.
    fn load_for_walk(&self, op: &'static str, id: &SessionId) -> Result<Option<Stored>> {
        Ok(self.load(op, id)?.and_then(Result::ok))
    }

    fn len(&self) -> Result<u64> {
        let now = now_millis();
        let mut live = 0;
        self.walk(
            "len",
            |inner, id| {
                if inner
                    .load_for_walk("len", &id)?
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
        self.walk(
            "clear",
            |inner, id| {
                let _locks = inner.lock_blocking("clear", &id)?;
                if let Some(stored) = inner.load_for_walk("clear", &id)? {
                    inner.remove_owned("clear", &id, stored.owner.as_ref())?;
                }
                Ok(())
            },
            |_| {},
        )?;
        self.clear_index()
    }

    /// The index part of `clear`: every marker whose session is not a live session of its
    /// owner (after the scan, all but those written meanwhile and those of unreadable
    /// files) is removed under its id's lock, then the emptied directories.
    fn clear_index(&self) -> Result<()> {
        const OP: &str = "clear";
        let owners = match fs::read_dir(&self.owners_dir) {
            Ok(owners) => owners,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(Error::backend(OP, None, err)),
        };
        for entry in owners {
            let entry = entry.map_err(|err| Error::backend(OP, None, err))?;
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(key) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            for id in self.marked(OP, &key)? {
                let _locks = self.lock_blocking(OP, &id)?;
                self.reclaim(OP, &key, &id)?;
            }
            let _ = fs::remove_dir(self.owner_dir(&key));
        }
        // Gone too once empty; a writer makes it again when it needs it.
        let _ = fs::remove_dir(&self.owners_dir);
        Ok(())
    }

    /// The ids marked in the index directory of the owner whose key is `key`: empty if it
    /// has none. Names that are not session ids are skipped.
    fn marked(&self, op: &'static str, key: &str) -> Result<Vec<SessionId>> {
        let entries = match fs::read_dir(self.owner_dir(key)) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(Error::backend(op, None, err)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| Error::backend(op, None, err))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| SessionId::new(name).ok())
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Removes the marker of `id` under the owner whose key is `key` if it is provably dead:
    /// no session file, an expired one, or one of another owner (or none). A file that
    /// cannot be read keeps its marker. Returns the session if it is a live one of that
    /// owner. The caller holds the id's lock, so no write of `id` can be in between.
    fn reclaim(&self, op: &'static str, key: &str, id: &SessionId) -> Result<Option<Stored>> {
        match self.load(op, id)? {
            Some(Err(_)) => Ok(None),
            Some(Ok(stored)) if stored.is_live_of(key, now_millis()) => Ok(Some(stored)),
            _ => {
                self.remove_marker_of(key, id);
                Ok(None)
            }
        }
    }

    /// The live sessions of `owner`, read through its index directory. A marker whose
    /// session is absent, expired or someone else's is removed (under the id's lock, after
    /// checking again).
    fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        const OP: &str = "sessions_of";
        let key = owner_key(owner);
        let ids = self.marked(OP, &key)?;
        let mut sessions = Vec::with_capacity(ids.len());
        for id in ids {
            let stored = match self.load(OP, &id)? {
                Some(Ok(stored)) if stored.is_live_of(&key, now_millis()) => stored,
                // Unreadable: not listed, and its marker stays.
                Some(Err(_)) => continue,
                _ => {
                    let _locks = self.lock_blocking(OP, &id)?;
                    match self.reclaim(OP, &key, &id)? {
                        // Rewritten for this owner since the read.
                        Some(stored) => stored,
                        None => continue,
                    }
                }
            };
            sessions.push(OwnedSession::new(
                id,
                stored.expires_at,
                stored.version,
                with_data.then_some(stored.data),
            ));
        }
        Ok(sessions)
    }

    /// Destroys the live sessions of `owner` but `except`, each under its id's lock after
    /// checking that it is still live and `owner`'s; dead markers go on the way.
    fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        const OP: &str = "destroy_owner";
        let key = owner_key(owner);
        let mut destroyed = 0;
        for id in self.marked(OP, &key)? {
            if except == Some(&id) {
                continue;
            }
            let _locks = self.lock_blocking(OP, &id)?;
            if self.reclaim(OP, &key, &id)?.is_some() && self.remove_owned(OP, &id, Some(owner))? {
                destroyed += 1;
            }
        }
        Ok(destroyed)
    }

    /// One page of [`scan`](SessionStore::scan): the live sessions among the `limit`
    /// smallest ids greater than `after`, found in one pass over the directory that keeps
    /// at most `limit + 1` ids, then read like `get` reads them.
    fn scan_page(&self, after: Option<&SessionId>, limit: usize) -> Result<ScanPage> {
        const OP: &str = "scan";
        let after = after.map(SessionId::as_str);
        // The `limit` smallest ids greater than `after` seen so far (a set: a file system
        // may list an entry replaced during the pass twice), and whether a greater one was
        // left out.
        let mut smallest: BTreeSet<SessionId> = BTreeSet::new();
        let mut more = false;
        let entries = fs::read_dir(&self.dir).map_err(|err| Error::backend(OP, None, err))?;
        for entry in entries {
            let entry = entry.map_err(|err| Error::backend(OP, None, err))?;
            let name = entry.file_name();
            // Compared as text before any allocation: most entries of a large directory are
            // outside the page. `str` and `SessionId` order alike (bytewise).
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
                continue;
            };
            if after.is_some_and(|after| stem <= after) {
                continue;
            }
            if smallest.len() >= limit
                && let Some(largest) = smallest.last()
                && stem >= largest.as_str()
            {
                more |= stem > largest.as_str();
                continue;
            }
            // Temporary files, lock files and the owner index are not `<valid id>.json`.
            let Ok(id) = SessionId::new(stem) else {
                continue;
            };
            smallest.insert(id);
            if smallest.len() > limit {
                smallest.pop_last();
                more = true;
            }
        }
        let next = if more {
            smallest.last().map(ScanCursor::after_id)
        } else {
            None
        };
        let mut sessions = Vec::with_capacity(smallest.len());
        for id in smallest {
            let stored = match self.load(OP, &id)? {
                // Destroyed since the pass, or an empty file: no session.
                None => continue,
                Some(stored) => stored?,
            };
            if stored.is_expired_at(now_millis()) {
                continue;
            }
            let session = Session::from_parts(stored.data, stored.expires_at, stored.version)
                .with_owner(stored.owner);
            sessions.push((id, session));
        }
        Ok(ScanPage::new(sessions, next))
    }

    fn delete_expired(&self) -> Result<u64> {
        let now = now_millis();
        let mut removed = 0;
        self.walk(
            "delete_expired",
            |inner, id| {
                if !inner
                    .load_for_walk("delete_expired", &id)?
                    .is_some_and(|s| s.is_expired_at(now))
                {
                    return Ok(());
                }
                // Re-check under the lock: the session may have been rewritten meanwhile.
                let _locks = inner.lock_blocking("delete_expired", &id)?;
                if let Some(stored) = inner
                    .load_for_walk("delete_expired", &id)?
                    .filter(|s| s.is_expired_at(now_millis()))
                    && inner.remove_owned("delete_expired", &id, stored.owner.as_ref())?
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

/// The most sessions a page of [`scan`](SessionStore::scan) holds, whatever `limit` asks.
const MAX_SCAN_LIMIT: usize = 10_000;

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
    /// `session`'s data, expiry and owner encode, at that file's version, to exactly that content, nothing is written and the stored version is returned unchanged
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
        self.locked("destroy", id, |inner, id| inner.destroy("destroy", id))
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

    /// Reads the owner's index directory, then each marked session; costs time in
    /// proportion to the owner's sessions (markers included that are not yet reclaimed).
    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        let owner = owner.clone();
        self.unlocked("sessions_of", None, move |inner| {
            inner.sessions_of(&owner, with_data)
        })
        .await
    }

    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        let owner = owner.clone();
        let except = except.cloned();
        self.unlocked("destroy_owner", None, move |inner| {
            inner.destroy_owner(&owner, except.as_ref())
        })
        .await
    }

    /// One pass over the directory per page: the page holds the live sessions among the
    /// `limit` smallest ids after the cursor's (`limit` from 1 to 10,000), so a full scan
    /// of `n` files reads `n / limit` directory listings of `n` entries. See
    /// [scans](self#scans).
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let after = cursor.map(|c| c.keyset_id("FileStore")).transpose()?;
        let limit = limit.clamp(1, MAX_SCAN_LIMIT);
        self.unlocked("scan", None, move |inner| {
            inner.scan_page(after.as_ref(), limit)
        })
        .await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new().with_owners(true).with_scan(true)
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
    fn owner_keys_are_base64url_without_padding() {
        let key = |text: &str| owner_key(&Owner::new(text).unwrap());
        assert_eq!(key("a"), "YQ");
        assert_eq!(key("ab"), "YWI");
        assert_eq!(key("ada"), "YWRh");
        assert_eq!(key("user:42"), "dXNlcjo0Mg");
        // The URL-safe alphabet: `_` where the standard one has `/` (and `-` for `+`).
        assert_eq!(key("\u{7ff}\u{ffff}"), "37_vv78");
        assert_ne!(key("Ada"), key("ada"));
        let longest = key(&"é".repeat(64));
        assert_eq!(longest.len(), 171);
        assert!(
            longest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn a_failed_write_for_a_new_owner_leaves_no_marker_and_keeps_the_old_one() {
        rt().block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let store = FileStore::new(tmp.path()).await.unwrap();
            let id = SessionId::generate();
            let (ada, bob) = (Owner::new("ada").unwrap(), Owner::new("bob").unwrap());
            let marker = |owner: &Owner| {
                tmp.path()
                    .join(OWNERS_DIR)
                    .join(owner_key(owner))
                    .join(id.as_str())
            };
            store
                .set(&id, &session("a").with_owner(Some(ada.clone())))
                .await
                .unwrap();
            store.inner.faults.failing_writes.store(1, SeqCst);
            let moved = session("a").with_owner(Some(bob.clone()));
            assert!(store.set(&id, &moved).await.is_err());
            assert!(marker(&ada).is_file(), "still ada's");
            assert!(!marker(&bob).exists(), "bob's dead marker went");
            assert_eq!(store.sessions_of(&ada, false).await.unwrap().len(), 1);
            // A failed write for the same owner keeps its marker.
            store.inner.faults.failing_writes.store(1, SeqCst);
            assert!(
                store
                    .set(&id, &session("b").with_owner(Some(ada.clone())))
                    .await
                    .is_err()
            );
            assert!(marker(&ada).is_file());
            // A failed destroy keeps file and marker.
            store.inner.faults.failing_removes.store(1, SeqCst);
            assert!(store.destroy(&id).await.is_err());
            assert!(marker(&ada).is_file());
            store.destroy(&id).await.unwrap();
            assert!(!marker(&ada).exists());
            assert!(!tmp.path().join(OWNERS_DIR).join(owner_key(&ada)).exists());
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
