#![doc = include_str!("docs.md")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::deadline::{DEFAULT_OPERATION_TIMEOUT, within};
use crate::error::{Error, Result};
use crate::session::{Owner, Session, SessionId, now_millis, to_millis};
use crate::store::{Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore};
use crate::stores::shared::scan_limit;

mod builder;
mod cache;
mod codec;
mod fs;
mod inner;
mod locks;
mod owners;
mod scan;
mod stop;
pub(crate) mod url;

#[cfg(feature = "cli")]
pub(crate) mod admin;

#[cfg(test)]
mod faults;
#[cfg(test)]
mod tests;

pub use builder::FileStoreBuilder;
pub use cache::{DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_MAX_BYTES};

use inner::Inner;
use locks::stripe_of;
use stop::Stop;

/// A session store keeping one JSON file per session in a directory. See the
/// [module docs](self).
///
/// Clones share the directory, the locks, the write-skip cache and the counters.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
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

    /// A live rotated id ends the session it moved to too: the old id's lock is taken, and
    /// if its file says it was rotated, both ids' locks (in a fixed order) and the file read
    /// again.
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let mut held: Option<SessionId> = None;
        // A rotated id's target never changes while it is live, so the second round ends;
        // more are only needed if it expired and was rotated anew in between.
        for _ in 0..DESTROY_ROUNDS {
            let next = match held.take() {
                None => {
                    self.locked("destroy", id, |inner, id| {
                        inner.destroy_following("destroy", id, None)
                    })
                    .await?
                }
                Some(target) => {
                    self.locked_pair("destroy", id, &target, |inner, id, target| {
                        inner.destroy_following("destroy", id, Some(target))
                    })
                    .await?
                }
            };
            match next {
                None => return Ok(()),
                Some(target) => held = Some(target),
            }
        }
        Err(Error::backend(
            "destroy",
            Some(id),
            "the rotated id kept being rotated anew while it was destroyed",
        ))
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
        let limit = scan_limit(limit);
        self.unlocked("scan", None, move |inner| {
            inner.scan_page(after.as_ref(), limit)
        })
        .await
    }

    /// Holds both ids' locks (in a fixed order, so two rotations never wait for each other),
    /// writes the new file, then rewrites the old one as a rotated id. See
    /// [rotation](self#rotation) for what a crash in between leaves.
    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        if old == new {
            return Ok(Rotation::Taken);
        }
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        self.locked_pair("rotate", old, new, move |inner, old, new| {
            inner.rotate(old, new, grace)
        })
        .await
    }

    /// Overwrites the session's file with bytes that are not JSON (its owner marker kept).
    async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
        let path = self.path_of(id);
        if !path.exists() {
            return Ok(false);
        }
        std::fs::write(&path, b"not a session")
            .map_err(|err| Error::backend("make_undecodable", Some(id), err))?;
        Ok(true)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_owners(true)
            .with_scan(true)
            .with_absolute_expiry(true)
            .with_rotation(true)
    }
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
            in_place_writes: true,
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
    /// `id`. Once it holds both (its last wait), the job checks that its caller is still
    /// there and within its deadline: a job that waited in the blocking pool's queue, or for
    /// a lock, past either does nothing.
    async fn locked<T, F>(&self, op: &'static str, id: &SessionId, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &SessionId) -> Result<T> + Send + 'static,
    {
        let deadline = stop::deadline_after(self.inner.operation_timeout);
        let (stop, abandon) = Stop::at(deadline);
        let locked = async {
            let _abandon = abandon;
            let stripe = stripe_of(id);
            let guard = self.inner.stripe(stripe).lock_owned().await;
            let inner = Arc::clone(&self.inner);
            let owned = id.clone();
            blocking(op, Some(id), move || {
                stop.run(|| {
                    let id = owned;
                    let _guard = guard;
                    let _flock = inner.flock(op, &id, stripe, deadline)?;
                    stop::check(op, Some(&id))?;
                    f(&inner, &id)
                })
            })
            .await
        };
        within(self.inner.operation_timeout, op, Some(id), locked).await
    }

    /// [`locked`](Self::locked) for two ids: runs `f(first, second)` holding the locks of
    /// both. The stripes are taken in increasing order (the in-process ones, then the lock
    /// files), and one stripe shared by both ids is taken once, so two such jobs never wait
    /// for each other in a cycle, in one process or across processes (every other operation
    /// holds one stripe at a time).
    async fn locked_pair<T, F>(
        &self,
        op: &'static str,
        first: &SessionId,
        second: &SessionId,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &SessionId, &SessionId) -> Result<T> + Send + 'static,
    {
        let deadline = stop::deadline_after(self.inner.operation_timeout);
        let (stop, abandon) = Stop::at(deadline);
        let locked = async {
            let _abandon = abandon;
            let (a, b) = (stripe_of(first), stripe_of(second));
            let stripes: Vec<usize> = if a == b {
                vec![a]
            } else {
                vec![a.min(b), a.max(b)]
            };
            let mut guards = Vec::with_capacity(stripes.len());
            for &stripe in &stripes {
                guards.push(self.inner.stripe(stripe).lock_owned().await);
            }
            let inner = Arc::clone(&self.inner);
            let (first, second) = (first.clone(), second.clone());
            let id = first.clone();
            blocking(op, Some(&id), move || {
                stop.run(|| {
                    let _guards = guards;
                    let mut flocks = Vec::with_capacity(stripes.len());
                    for &stripe in &stripes {
                        flocks.push(inner.flock(op, &first, stripe, deadline)?);
                    }
                    stop::check(op, Some(&first))?;
                    f(&inner, &first, &second)
                })
            })
            .await
        };
        within(self.inner.operation_timeout, op, Some(first), locked).await
    }

    /// Runs `f` on the blocking pool, without locks. The walks in `f` stop at their next
    /// entry once the caller's deadline passes or the caller drops the operation.
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
        let (stop, abandon) = Stop::at(stop::deadline_after(timeout));
        let job = async {
            let _abandon = abandon;
            blocking(op, id, move || stop.run(|| f(&inner))).await
        };
        within(timeout, op, id, job).await
    }
}

/// How many times `destroy` takes the locks again when it finds a rotated id.
const DESTROY_ROUNDS: usize = 4;

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
