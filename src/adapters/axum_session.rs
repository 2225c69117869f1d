//! Any [`SessionStore`] as an [axum_session](https://docs.rs/axum_session/0.22)
//! `DatabasePool` (feature `axum-session`, axum_session 0.22 for axum 0.8).
//!
//! [`AxumSessionPool`] wraps a store of this crate and implements
//! [`axum_session::DatabasePool`], so it can be handed to `axum_session::SessionStore::new`
//! and its `SessionLayer`:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use axum_session::{SessionConfig, SessionLayer, SessionStore};
//! use session_stores::adapters::axum_session::AxumSessionPool;
//! use session_stores::cleanup::spawn_cleanup;
//!
//! let store = session_stores::connect("sqlite://sessions.db").await?;
//! let pool = AxumSessionPool::from_box(store).with_owner_key("user_id");
//! // Sweep expired rows every minute (axum_session's own sweep stops at its first error).
//! let _cleanup = spawn_cleanup(pool.inner_arc(), Duration::from_secs(60));
//!
//! let config = SessionConfig::default()
//!     // Every request reads the store: a logout elsewhere, `destroy_owner` or an expiry
//!     // takes effect on the next request (see "axum_session's memory" below).
//!     .with_memory_lifetime(Duration::ZERO.try_into()?)
//!     // Signed cookies: a forged cookie is not adopted as a session id.
//!     .with_key(axum_session::Key::generate());
//! let sessions = SessionStore::new(Some(pool), config).await?;
//! let app: axum::Router = axum::Router::new().layer(SessionLayer::new(sessions));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! # Mapping
//!
//! | `DatabasePool`          | this crate                                                   |
//! |-------------------------|--------------------------------------------------------------|
//! | `initiate(table)`       | nothing: the store was set up (migrated) when it was built   |
//! | `load(id)`              | [`get`](SessionStore::get); a session the store cannot decode is [destroyed](SessionStore::destroy) and loads as none (axum_session starts a fresh one), with a `tracing` warning |
//! | `store(id, text, expires)` | a compare-and-set on the version this process last read or wrote, merged on a conflict ([saves](#saves)); a session new to axum_session is [created](SessionStore::create) atomically |
//! | `exists(id)`            | [`get`](SessionStore::get)`.is_some()`                       |
//! | `delete_one_by_id(id)`  | [`destroy`](SessionStore::destroy)                           |
//! | `delete_by_expiry`      | [`delete_expired`](SessionStore::delete_expired); returns no ids |
//! | `delete_all`            | [`clear`](SessionStore::clear)                               |
//! | `count`                 | [`len`](SessionStore::len)                                   |
//! | `get_ids`               | every id of a [`scan`](SessionStore::scan)                   |
//! | `auto_handles_expiry`   | `true`: no store of this crate ever loads an expired session |
//!
//! - **Table names.** axum_session passes its `table_name` to every call; the adapter
//!   ignores it: the store's own namespace (table, prefix, directory) is the one used.
//! - **Data.** axum_session hands over its session as JSON text,
//!   `{"data": {key: JSON text}, "longterm": bool}`. Each `data` entry becomes one top-level
//!   key of the stored session, its value the JSON text as a string (as axum_session keeps
//!   it: nothing is re-encoded, so it round-trips exactly); `longterm: true` is kept under
//!   [`LONGTERM_KEY`]. A session axum_session encrypted (`with_database_key`) is opaque text
//!   and is kept whole under [`SEALED_KEY`]: it round-trips, but merges as one key and names
//!   no owner.
//! - **Expiry.** `store` is given whole seconds since the Unix epoch (axum_session truncates
//!   now plus the lifetime to the second); the stored expiry is that second in milliseconds.
//!   A session so never outlives what axum_session asked for, but may end up to 999 ms
//!   earlier: the trait has no finer expiry. axum_session extends a session's expiry when it
//!   saves it (on a change, or every `db_update_interval`).
//! - **Ids.** axum_session mints ids (UUIDs by default) and checks them with `exists`;
//!   `store` of an id it minted creates the session atomically, so a session is never
//!   handed to two users. A cookie value that is not a valid [`SessionId`] loads as no
//!   session and is never stored (a warning is logged), so that browser gets a fresh,
//!   unsaved session on every request.
//! - **`delete_by_expiry`** returns an empty list: the contract's
//!   [`delete_expired`](SessionStore::delete_expired) returns how many it removed, not which.
//!   Only axum_session's `key-store` bloom filter uses the list, and with
//!   `auto_handles_expiry` true it checks `exists` instead of the filter. axum_session's own
//!   sweep runs every `purge_database_update` (5 hours by default) and stops for good at its
//!   first error: use [`spawn_cleanup`](crate::cleanup::spawn_cleanup) for stores that need
//!   sweeping (files, SQLite, Postgres).
//! - **`get_ids`** scans the whole store (only axum_session's `key-store` feature calls it,
//!   once at start-up); a store that does not [`scan`](SessionStore::scan), or that lists
//!   stored ids that are not cookies (`HashedIds`), answers
//!   `GenericNotSupportedError`.
//! - **Errors.** axum_session's `DatabaseError` holds only a string: the adapter renders the
//!   [`Error`] and its chain of sources into it (`GenericSelectError` for reads,
//!   `GenericInsertError` for `store`, `GenericDeleteError` for deletions,
//!   `GenericNotSupportedError` for [`Error::Unsupported`]). The text names a session only by
//!   its shortened [`IdHint`](crate::IdHint), never the whole id or any data. The typed
//!   error is lost; use the store directly when you need it.
//!
//! # Saves
//!
//! `DatabasePool::store(id, text, expires)` is a blind write: it carries no version. So the
//! adapter remembers, per session id, what this process last read (`load`) or wrote
//! (`store`): the version and a 64-bit keyed fingerprint of each top-level value, in a
//! bounded LRU ([`with_remembered`](AxumSessionPool::with_remembered), 10,000 ids by
//! default; nothing else is kept). With that:
//!
//! - **A save is a compare-and-set** on the remembered version. On a conflict (another
//!   process, or any other writer, changed the session) it merges one top-level key at a
//!   time between what this process last saw, what it saves and what is stored, as the other
//!   adapters do ([`OnConflict`]): a key changed by one side keeps that change; a key both
//!   changed takes the saver's value, or fails the save under [`OnConflict::Fail`]. At most
//!   8 attempts. After a merge the adapter knows that axum_session's copy lacks the other
//!   writer's keys, so the next save of that session merges again instead of writing over
//!   them.
//! - **A save never brings a session back.** A session that is gone when the save comes
//!   (destroyed, ended by [`destroy_owner`](SessionStore::destroy_owner), expired) is not
//!   written; the save returns `Ok` (an error would make axum_session answer 500 and keep
//!   the session in its memory), and the adapter forgets the id.
//! - **New sessions.** An id axum_session minted (`exists` said no) or found nothing under
//!   (`load` returned none) is stored with the atomic [`create`](SessionStore::create): if
//!   someone created it meanwhile, the save merges with it instead of overwriting it.
//! - **An id the adapter does not remember** (evicted from the LRU while axum_session still
//!   held the session in memory) is saved only if it exists, replacing the stored data
//!   wholesale: a concurrent change by another process to such a session can be lost, a
//!   session is still never brought back, and a new session whose id was evicted between
//!   `exists` and `store` is not stored (its next request starts afresh). Size the LRU above
//!   the number of sessions axum_session keeps in memory to avoid this.
//!
//! # What axum_session itself does not allow
//!
//! - **axum_session's memory.** axum_session keeps every session it loaded in memory for
//!   `memory_lifespan` (an hour by default) and serves requests from there without calling
//!   `load`. A session that another process, a logout elsewhere, `destroy_owner` or an
//!   expiry ended is then still *seen by this process's handlers* until it leaves that memory:
//!   the adapter never writes it back (see above), but it cannot take it out of
//!   axum_session's memory. Set `SessionConfig::with_memory_lifetime(Duration::ZERO)` so
//!   that every request loads from the store; then a logout, `destroy_owner` or expiry takes
//!   effect on the next request. Requests of one process that run at the same time share one
//!   in-memory copy in axum_session, so their changes meet there before any save.
//! - **Adopted ids.** axum_session takes the session id from the cookie as it is: an unknown
//!   id (forged, or of a session that ended) gets a fresh, empty session *under that id*.
//!   The adapter creates it (empty: nothing of an ended session comes back), but cannot give
//!   it another id. Sign the cookies (`SessionConfig::with_key`), so forged values are not
//!   adopted, and call `Session::renew` at login, so that a planted id is not the logged-in
//!   one.
//!
//! # Owners ("log out everywhere")
//!
//! [`with_owner_key`](AxumSessionPool::with_owner_key) names a data key (such as `"user_id"`)
//! whose value becomes the session's [`Owner`] on every save. axum_session keeps each value
//! as JSON text: a JSON string is the owner as it is, a number its decimal text, `null` or an
//! absent key no owner. Then [`sessions_of`](SessionStore::sessions_of) lists a user's
//! sessions and [`destroy_owner`](SessionStore::destroy_owner) ends them (with
//! `with_memory_lifetime(Duration::ZERO)`, see above); `Session::get_session_id` gives the
//! current id to keep.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ::axum_session::{DatabaseError, DatabasePool};
use async_trait::async_trait;
use lru::LruCache;
use serde_json::{Map, Value};

use super::owner_of_value;
use super::saving::{self, Loaded, MAX_SAVE_ATTEMPTS, OnConflict};
use crate::cleanup::error_chain;
use crate::error::{Error, ErrorKind};
use crate::session::{Owner, Session, SessionId};
use crate::store::SessionStore;

/// The data key under which a session axum_session marked long-term (`set_longterm(true)`)
/// keeps that flag. Reserved.
pub const LONGTERM_KEY: &str = "session_stores.longterm";

/// The data key under which a session that axum_session encrypted (`with_database_key`) is
/// kept whole, as the opaque text it is. Reserved.
pub const SEALED_KEY: &str = "session_stores.sealed";

/// How many session ids the adapter remembers by default (see [saves](self#saves)).
pub const DEFAULT_REMEMBERED: usize = 10_000;

/// What the adapter remembers of one session id.
#[derive(Debug, Clone)]
enum Seen {
    /// axum_session minted the id (`exists` said no) or found no session under it (`load`):
    /// the next save may create it.
    New,
    /// What this process last read or wrote: the version and its values' fingerprints.
    Synced(Loaded),
    /// The store holds a merge that axum_session's copy has not seen: the fingerprints of
    /// what this process last wrote from its copy; the next save reads and merges first.
    Behind(Loaded),
}

/// A [`SessionStore`] of this crate as an [`axum_session::DatabasePool`]. See the
/// [module docs](self) for how operations, data and expiry map.
///
/// Cloning is cheap: clones share the store and what the adapter remembers.
pub struct AxumSessionPool<S: ?Sized> {
    store: Arc<S>,
    seen: Arc<Mutex<LruCache<SessionId, Seen>>>,
    owner_key: Option<Arc<str>>,
    on_conflict: OnConflict,
    absolute_lifetime: Option<std::time::Duration>,
}

impl<S: SessionStore> AxumSessionPool<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }
}

impl AxumSessionPool<dyn SessionStore> {
    /// Wraps a boxed store, such as the one [`connect`](crate::connect()) returns.
    pub fn from_box(store: Box<dyn SessionStore>) -> Self {
        Self::from_arc(Arc::from(store))
    }
}

fn lru(capacity: usize) -> Arc<Mutex<LruCache<SessionId, Seen>>> {
    Arc::new(Mutex::new(LruCache::new(
        NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
    )))
}

impl<S: SessionStore + ?Sized> AxumSessionPool<S> {
    /// Wraps a store that the application also uses elsewhere.
    pub fn from_arc(store: Arc<S>) -> Self {
        AxumSessionPool {
            store,
            seen: lru(DEFAULT_REMEMBERED),
            owner_key: None,
            on_conflict: OnConflict::default(),
            absolute_lifetime: None,
        }
    }

    /// How many session ids the adapter remembers (see [saves](self#saves)); at least 1.
    /// Forgets what it remembered so far.
    pub fn with_remembered(mut self, capacity: usize) -> Self {
        self.seen = lru(capacity);
        self
    }

    /// Gives every new session an [absolute expiry](crate::Session::absolute_expiry)
    /// `lifetime` after it is created: however active, it ends then, in every store that
    /// declares [`absolute_expiry`](crate::Capabilities::absolute_expiry). Default: none.
    pub fn with_absolute_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.absolute_lifetime = Some(lifetime);
        self
    }

    /// What a save does with a key that another writer changed too since this process last
    /// saw the session: [`OnConflict::SaverWins`] by default (see [saves](self#saves)).
    pub fn with_on_conflict(mut self, policy: OnConflict) -> Self {
        self.on_conflict = policy;
        self
    }

    /// Takes each session's [`Owner`] from the value under `key` in its data
    /// (see [owners](self#owners-log-out-everywhere)).
    pub fn with_owner_key(mut self, key: impl Into<String>) -> Self {
        self.owner_key = Some(Arc::from(key.into()));
        self
    }

    /// The data key the owner is taken from, if one was set.
    pub fn owner_key(&self) -> Option<&str> {
        self.owner_key.as_deref()
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// The wrapped store, shared (for example for
    /// [`spawn_cleanup`](crate::cleanup::spawn_cleanup)).
    pub fn inner_arc(&self) -> Arc<S> {
        Arc::clone(&self.store)
    }

    fn seen(&self) -> MutexGuard<'_, LruCache<SessionId, Seen>> {
        // The map is never left half-updated, so a panic elsewhere does not spoil it.
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, id: &SessionId, seen: Seen) {
        self.seen().put(id.clone(), seen);
    }

    fn forget(&self, id: &SessionId) {
        self.seen().pop(id);
    }

    /// The owner that `data` names under the owner key, if one was set.
    fn owner_in(&self, data: &Map<String, Value>) -> Result<Option<Owner>, Error> {
        let Some(key) = &self.owner_key else {
            return Ok(None);
        };
        match data.get(&**key) {
            // axum_session keeps JSON text; text that is not JSON is taken as it is.
            Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
                Ok(value) => owner_of_value(Some(&value)),
                Err(_) => owner_of_value(Some(&Value::String(text.clone()))),
            },
            other => owner_of_value(other),
        }
    }

    async fn load_text(&self, id: &SessionId) -> Result<Option<String>, Error> {
        match self.store.get(id).await {
            Ok(Some(session)) => {
                self.remember(id, Seen::Synced(Loaded::of(&session)));
                Ok(Some(text_of(session.data())))
            }
            Ok(None) => {
                self.remember(id, Seen::New);
                Ok(None)
            }
            Err(err) if err.kind() == ErrorKind::Decode => {
                // axum_session keeps the id of the cookie and starts a fresh session under
                // it: the entry nobody can read must make way for it.
                tracing::warn!(
                    session = %id.hint(),
                    error = %error_chain(&err),
                    "a session the store cannot decode: destroying it, starting a fresh one"
                );
                self.store.destroy(id).await?;
                self.remember(id, Seen::New);
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// `store`: see [saves](self#saves).
    async fn save(
        &self,
        id: &SessionId,
        ours: Map<String, Value>,
        expires_at: i64,
    ) -> Result<(), Error> {
        let seen = self.seen().get(id).cloned();
        let owner = self.owner_in(&ours)?;
        let mut session = Session::from_parts(ours.clone(), expires_at, 0).with_owner(owner);
        let (mut expected, base) = match seen {
            Some(Seen::Synced(loaded)) => (Some(loaded.version), Some(loaded)),
            Some(Seen::Behind(loaded)) => (None, Some(loaded)),
            Some(Seen::New) => {
                if self
                    .store
                    .create(
                        id,
                        &saving::with_absolute_lifetime(session.clone(), self.absolute_lifetime),
                    )
                    .await?
                {
                    // The version is not known until the next read: the next save reads
                    // first (with every request loading, that read is its `load`).
                    let (written, _, _) = session.into_parts();
                    self.remember(
                        id,
                        Seen::Behind(Loaded::of(&Session::from_parts(written, 0, 0))),
                    );
                    return Ok(());
                }
                // Someone created it meanwhile: merge with it, from nothing.
                (
                    None,
                    Some(Loaded::of(&Session::from_parts(Map::new(), 0, 0))),
                )
            }
            // Forgotten: written only over an existing session, wholesale.
            None => (None, None),
        };
        for _ in 0..MAX_SAVE_ATTEMPTS {
            if let Some(version) = expected {
                match self.store.set_if_version(id, &session, version).await {
                    Ok(0) => {
                        // The expiry had passed: the session was deleted.
                        self.forget(id);
                        return Ok(());
                    }
                    Ok(version) => {
                        let (written, _, _) = session.into_parts();
                        let seen = if written == ours {
                            Seen::Synced(Loaded::of(&Session::from_parts(written, 0, version)))
                        } else {
                            Seen::Behind(Loaded::of(&Session::from_parts(ours, 0, 0)))
                        };
                        self.remember(id, seen);
                        return Ok(());
                    }
                    // A rotated id (read-only during its grace): the changes are dropped.
                    Err(Error::Rotated { .. }) => {
                        self.forget(id);
                        return Ok(());
                    }
                    Err(err) if err.is_conflict() => {}
                    Err(err) => return Err(err),
                }
            }
            let Some(theirs) = self.store.get(id).await? else {
                tracing::debug!(
                    session = %id.hint(),
                    "save dropped: the session was destroyed, ended or expired since this process read it"
                );
                self.forget(id);
                return Ok(());
            };
            if let Some(base) = &base {
                let merged = saving::merge(base, &ours, theirs.data(), self.on_conflict)
                    .map_err(|()| Error::conflict(id, theirs.version()))?;
                let owner = self.owner_in(&merged)?;
                let expiry = expires_at.max(theirs.expires_at_millis());
                session = Session::from_parts(merged, expiry, 0).with_owner(owner);
            }
            expected = Some(theirs.version());
        }
        Err(Error::conflict(id, expected.unwrap_or(0)))
    }
}

impl<S: ?Sized> Clone for AxumSessionPool<S> {
    fn clone(&self) -> Self {
        AxumSessionPool {
            store: Arc::clone(&self.store),
            seen: Arc::clone(&self.seen),
            owner_key: self.owner_key.clone(),
            on_conflict: self.on_conflict,
            absolute_lifetime: self.absolute_lifetime,
        }
    }
}

impl<S: ?Sized> fmt::Debug for AxumSessionPool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AxumSessionPool")
            .field("store", &std::any::type_name::<S>())
            .field("owner_key", &self.owner_key)
            .field("on_conflict", &self.on_conflict)
            .finish()
    }
}

/// The stored data for axum_session's session text (see the [module docs](self)).
fn data_of_text(text: &str) -> Map<String, Value> {
    if let Ok(Value::Object(mut outer)) = serde_json::from_str::<Value>(text) {
        let longterm = match outer.remove("longterm") {
            None => Some(false),
            Some(Value::Bool(b)) => Some(b),
            Some(_) => None,
        };
        if let (Some(longterm), Some(Value::Object(entries))) = (longterm, outer.remove("data"))
            && outer.is_empty()
            && entries.values().all(Value::is_string)
            && !entries.contains_key(LONGTERM_KEY)
            && !entries.contains_key(SEALED_KEY)
        {
            let mut data = entries;
            if longterm {
                data.insert(LONGTERM_KEY.to_owned(), Value::Bool(true));
            }
            return data;
        }
    }
    let mut data = Map::with_capacity(1);
    data.insert(SEALED_KEY.to_owned(), Value::String(text.to_owned()));
    data
}

/// axum_session's session text for stored data: the inverse of [`data_of_text`]. A value
/// that is not a string (a session some other writer stored) is handed over as its JSON text.
fn text_of(data: &Map<String, Value>) -> String {
    if let Some(Value::String(sealed)) = data.get(SEALED_KEY) {
        return sealed.clone();
    }
    let mut entries = Map::with_capacity(data.len());
    let mut longterm = false;
    for (key, value) in data {
        match (key.as_str(), value) {
            (LONGTERM_KEY, value) => longterm = value.as_bool().unwrap_or(false),
            (_, Value::String(text)) => {
                entries.insert(key.clone(), Value::String(text.clone()));
            }
            (_, other) => {
                entries.insert(key.clone(), Value::String(other.to_string()));
            }
        }
    }
    let mut outer = Map::with_capacity(2);
    outer.insert("data".to_owned(), Value::Object(entries));
    outer.insert("longterm".to_owned(), Value::Bool(longterm));
    Value::Object(outer).to_string()
}

/// Milliseconds since the epoch for axum_session's whole seconds, saturating.
fn millis_of_seconds(seconds: i64) -> i64 {
    seconds.saturating_mul(1000)
}

/// Which kind of `DatabaseError` an operation's failure becomes.
#[derive(Clone, Copy)]
enum Op {
    Select,
    Insert,
    Delete,
}

fn to_db(op: Op, err: &Error) -> DatabaseError {
    let text = error_chain(err);
    if err.kind() == ErrorKind::Unsupported {
        return DatabaseError::GenericNotSupportedError(text);
    }
    match op {
        Op::Select => DatabaseError::GenericSelectError(text),
        Op::Insert => DatabaseError::GenericInsertError(text),
        Op::Delete => DatabaseError::GenericDeleteError(text),
    }
}

/// How many sessions a page of `get_ids` asks for.
const IDS_PAGE: usize = 1000;

#[async_trait]
impl<S: SessionStore + ?Sized + 'static> DatabasePool for AxumSessionPool<S> {
    async fn initiate(&self, _table_name: &str) -> Result<(), DatabaseError> {
        Ok(())
    }

    async fn count(&self, _table_name: &str) -> Result<i64, DatabaseError> {
        let n = self
            .store
            .len()
            .await
            .map_err(|err| to_db(Op::Select, &err))?;
        Ok(i64::try_from(n).unwrap_or(i64::MAX))
    }

    async fn store(
        &self,
        id: &str,
        session: &str,
        expires: i64,
        _table_name: &str,
    ) -> Result<(), DatabaseError> {
        let Ok(id) = SessionId::new(id) else {
            // Only a cookie value can get here (minted ids pass `exists`, which refuses
            // invalid ones): no session can be kept under it.
            tracing::warn!(
                "axum_session adopted a cookie value that is not a valid session id: the session is not stored"
            );
            return Ok(());
        };
        self.save(&id, data_of_text(session), millis_of_seconds(expires))
            .await
            .map_err(|err| to_db(Op::Insert, &err))
    }

    async fn load(&self, id: &str, _table_name: &str) -> Result<Option<String>, DatabaseError> {
        let Ok(id) = SessionId::new(id) else {
            return Ok(None);
        };
        self.load_text(&id)
            .await
            .map_err(|err| to_db(Op::Select, &err))
    }

    async fn delete_one_by_id(&self, id: &str, _table_name: &str) -> Result<(), DatabaseError> {
        let Ok(id) = SessionId::new(id) else {
            return Ok(());
        };
        self.forget(&id);
        self.store
            .destroy(&id)
            .await
            .map_err(|err| to_db(Op::Delete, &err))
    }

    async fn exists(&self, id: &str, _table_name: &str) -> Result<bool, DatabaseError> {
        // axum_session asks only of ids it minted: an id the store cannot hold is an error
        // (a misconfigured `IdGenerator`), not a free id.
        let id = SessionId::new(id).map_err(|err| to_db(Op::Select, &err))?;
        let exists = self
            .store
            .get(&id)
            .await
            .map_err(|err| to_db(Op::Select, &err))?
            .is_some();
        if !exists {
            self.remember(&id, Seen::New);
        }
        Ok(exists)
    }

    async fn delete_by_expiry(&self, _table_name: &str) -> Result<Vec<String>, DatabaseError> {
        self.store
            .delete_expired()
            .await
            .map_err(|err| to_db(Op::Delete, &err))?;
        Ok(Vec::new())
    }

    async fn delete_all(&self, _table_name: &str) -> Result<(), DatabaseError> {
        self.store
            .clear()
            .await
            .map_err(|err| to_db(Op::Delete, &err))?;
        self.seen().clear();
        Ok(())
    }

    async fn get_ids(&self, _table_name: &str) -> Result<Vec<String>, DatabaseError> {
        if self.store.capabilities().lists_stored_ids {
            return Err(DatabaseError::GenericNotSupportedError(
                "this store lists the ids it keeps sessions under, which are not cookies".into(),
            ));
        }
        let mut ids = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .store
                .scan(cursor.as_ref(), IDS_PAGE)
                .await
                .map_err(|err| to_db(Op::Select, &err))?;
            ids.extend(page.sessions.into_iter().map(|(id, _)| id.into_string()));
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(ids),
            }
        }
    }

    fn auto_handles_expiry(&self) -> bool {
        true
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests;
