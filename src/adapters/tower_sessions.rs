//! Any [`SessionStore`] as a [tower-sessions](https://docs.rs/tower-sessions/0.15) store
//! (feature `tower-sessions` for tower-sessions 0.15, `tower-sessions-014` for 0.14).
//!
//! [`TowerSessionsStore`] wraps a store of this crate and implements
//! [`tower_sessions_core::SessionStore`] and [`tower_sessions_core::ExpiredDeletion`], so it
//! can be handed to `tower_sessions::SessionManagerLayer` in an axum (or any tower) app. It
//! depends only on `tower-sessions-core`; your application adds `tower-sessions` itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use session_stores::adapters::tower_sessions::TowerSessionsStore;
//! use session_stores::cleanup::spawn_cleanup;
//!
//! // Any store: a concrete one, or whatever `connect(url)` picks at run time.
//! let store = session_stores::connect("sqlite://sessions.db").await?;
//! let store = TowerSessionsStore::from_box(store);
//!
//! // Sweep expired rows every minute; the task logs failures and keeps going.
//! let _cleanup = spawn_cleanup(store.inner_arc(), Duration::from_secs(60));
//!
//! // let layer = tower_sessions::SessionManagerLayer::new(store)
//! //     .with_expiry(tower_sessions::Expiry::OnInactivity(time::Duration::hours(1)));
//! // let app = axum::Router::new().route("/", get(handler)).layer(layer);
//! # Ok(())
//! # }
//! ```
//!
//! # Mapping
//!
//! | tower-sessions          | this crate                                                  |
//! |-------------------------|-------------------------------------------------------------|
//! | `create(&mut Record)`   | [`create`](SessionStore::create), atomic; on a collision the record gets a fresh random `Id` and the adapter tries again (at most 16 times) |
//! | `save(&Record)`         | [`set_if_version`](SessionStore::set_if_version) on the version the request loaded; on a conflict a three-way merge, retried (see [saves](#saves-no-lost-update-no-session-brought-back)); never writes a session that is gone |
//! | `load(&Id)`             | [`get`](SessionStore::get): never an expired session; a session the store cannot decode is no session (a fresh one starts, with a `tracing` warning) |
//! | `delete(&Id)`           | [`destroy`](SessionStore::destroy)                           |
//! | `ExpiredDeletion::delete_expired` | [`delete_expired`](SessionStore::delete_expired)   |
//!
//! - **Ids.** A tower-sessions `Id` is a random `i128`, written as 22 characters of unpadded
//!   URL-safe base64 (its `Display`). That text is the [`SessionId`] the store sees, so the
//!   cookie value and the store's key are the same string, and `Id::from_str` of the key
//!   gives back the same `Id`.
//! - **Data.** tower-sessions' `HashMap<String, serde_json::Value>` becomes the session's
//!   JSON object, key for key and value for value; nothing is re-encoded, so it round-trips
//!   exactly.
//! - **Expiry.** `Record::expiry_date` (an `OffsetDateTime`, nanosecond precision) is stored
//!   as whole milliseconds since the Unix epoch, truncated toward the past; loading gives
//!   back that millisecond in UTC. A stored expiry beyond what `OffsetDateTime` can hold
//!   (year 9999) loads as its maximum. This is the one thing of a record that does not come
//!   back exactly as saved: tower-sessions' own `MemoryStore` test `test_load` (a loaded
//!   record equals the saved one, nanoseconds included) and its `always_save` expiry tests
//!   (two saves within one millisecond give two different expiries) would fail here by the
//!   sub-millisecond part alone. Every store of this crate keeps expiries to the
//!   millisecond, which no cookie or TTL needs finer; the same tests hold when expiries are
//!   compared to the millisecond.
//! - **What a request loaded.** `load` adds one entry to the record's data, under
//!   [`LOADED_KEY`] (`"session_stores.loaded"`): the version
//!   the request loaded and a 64-bit fingerprint of each value. `save` and `create` take it
//!   out before anything is stored, so it never reaches the store; handlers should leave it
//!   alone. It lets `save` merge instead of overwrite, without a cache that could grow.
//! - **Errors.** tower-sessions' error type holds only a string, so the adapter renders the
//!   [`Error`] and its chain of sources into it: a decode error becomes
//!   `session_store::Error::Decode`, an encode error `Encode`, anything else `Backend`. The
//!   text names the session only by its shortened [`IdHint`](crate::IdHint), never the
//!   whole id or any data. Use the store directly when you need the typed error.
//!
//! # Saves: no lost update, no session brought back
//!
//! - **A save is a compare-and-set** on the version the request loaded. When no other
//!   request wrote the session in between, that is the whole cost.
//! - **On a conflict it merges** one top-level key at a time, between what the request
//!   loaded (base), what it saves (ours) and what is stored now (theirs): a key changed (or
//!   removed) by one side only keeps that change; a key both sides changed takes the saving
//!   request's value, or fails the save with [`Error::Conflict`] under
//!   [`with_on_conflict(OnConflict::Fail)`](TowerSessionsStore::with_on_conflict). The
//!   expiry is the later of the two. The merged session is written with a compare-and-set
//!   too, at most 8 times in all before the save fails with a conflict.
//! - **A save never brings a session back.** A session that is gone when the request saves
//!   (destroyed by a logout, ended by [`destroy_owner`](SessionStore::destroy_owner),
//!   expired) is not written: the request's changes are dropped (logged at debug level), and
//!   its next request starts a fresh session.
//! - A request that cleared its session (`Session::clear`) carries nothing it loaded: its
//!   save replaces the stored session wholesale, still only if one exists.
//! - A new session never takes over an existing one: `create` (new sessions, `cycle_id`)
//!   only writes an absent id.
//! - tower-sessions extends an `Expiry::OnInactivity` session only when it saves it: on a
//!   change, or on every request with `with_always_save(true)`.
//!
//! # Lifetimes
//!
//! - **Absolute lifetime.** [`with_absolute_lifetime`](TowerSessionsStore::with_absolute_lifetime)
//!   gives each new session an absolute expiry: tower-sessions' `OnInactivity` expiry keeps
//!   sliding with use, but never past it, in every store that declares
//!   [`absolute_expiry`](crate::Capabilities::absolute_expiry) (every built-in one). Saves
//!   keep it (a write never postpones it), and a cycled id carries it over.
//! - **Throttled touch.** With `with_always_save(true)` every request rewrites its session
//!   to slide the expiry. [`with_touch_throttle(f)`](TowerSessionsStore::with_touch_throttle)
//!   makes a save whose data did not change a [`touch`](SessionStore::touch) (the expiry
//!   only), sent only when it moves the stored expiry by at least `f` of the idle timeout.
//!   With `f = 0.1` and an hour of inactivity, a session used every few seconds is written
//!   about every six minutes instead of on every request; its stored expiry lags the cookie's
//!   by at most those six minutes (BENCHMARKS.md counts the writes). A save that changed
//!   anything writes as always.
//! - **Cycling the id with a grace window.** tower-sessions' `Session::cycle_id` deletes the
//!   old id before it saves the new one, through the same `delete` a logout uses, so a store
//!   cannot tell the two apart: requests already in flight with the old cookie (the parallel
//!   requests of a page at login) find no session. Call
//!   [`cycle_id_with_grace(&store, &session, grace)`](cycle_id_with_grace) instead: it marks
//!   the id, and the adapter's `delete` then [rotates](SessionStore::rotate) it to a fresh id
//!   instead of destroying it. For `grace` the old id reads as the session was before the
//!   cycle (so a fixated id shows nothing of the logged-in session) and refuses writes; the
//!   request's changes are saved under the new id, merged like any save. A plain `cycle_id`
//!   and every logout still destroy the old id at once.
//!
//! # tower-sessions 0.14 and 0.15
//!
//! Feature `tower-sessions` implements `tower-sessions-core` 0.15's traits; feature
//! `tower-sessions-014` implements 0.14's (what axum-login 0.18 and tower-sessions' own
//! store crates use). Both can be on at once: one [`TowerSessionsStore`], one code path.

//! # Owners ("log out everywhere")
//!
//! [`with_owner_key`](TowerSessionsStore::with_owner_key) names a data key (such as
//! `"user_id"`) whose value becomes the session's [`Owner`] on every `create`
//! and `save`: an existing app that stores its user id in the session gets the owner index
//! by configuration alone. A string is the owner as it is, a number its decimal text;
//! absent or `null` means no owner (a logged-out session). Then list a user's sessions with
//! [`sessions_of`](SessionStore::sessions_of) and end the others with
//! [`destroy_owner`](SessionStore::destroy_owner), keeping the current one by
//! [`session_id_of`] its `Id`:
//!
//! ```no_run
//! # async fn demo(current: tower_sessions_core::session::Id) -> Result<(), session_stores::Error> {
//! use session_stores::adapters::tower_sessions::{session_id_of, TowerSessionsStore};
//! use session_stores::{MemoryStore, Owner, SessionStore};
//!
//! let store = TowerSessionsStore::new(MemoryStore::default()).with_owner_key("user_id");
//! // ... in the "log out everywhere else" handler:
//! let owner = Owner::new("42")?;
//! let ended = store.inner().destroy_owner(&owner, Some(&session_id_of(&current)?)).await?;
//! # let _ = ended;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use time::{OffsetDateTime, PrimitiveDateTime};

use super::saving::{self, LOADED_KEY, Loaded, OnConflict, Rotations};
use super::{MAX_CREATE_ATTEMPTS, owner_of_value};
use crate::cleanup::error_chain;
use crate::error::{Error, ErrorKind};
use crate::session::{Owner, Session, SessionId};
use crate::store::SessionStore;

/// A [`SessionStore`] of this crate as a [`tower_sessions_core::SessionStore`]. See the
/// [module docs](self) for how operations, ids, data and expiry map.
///
/// Cloning is cheap: clones share the store.
pub struct TowerSessionsStore<S: ?Sized> {
    store: Arc<S>,
    owner_key: Option<Arc<str>>,
    on_conflict: OnConflict,
    absolute_lifetime: Option<std::time::Duration>,
    touch_throttle: Option<f64>,
    rotations: Arc<Rotations>,
}

impl<S: SessionStore> TowerSessionsStore<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }
}

impl TowerSessionsStore<dyn SessionStore> {
    /// Wraps a boxed store, such as the one [`connect`](crate::connect()) returns.
    pub fn from_box(store: Box<dyn SessionStore>) -> Self {
        Self::from_arc(Arc::from(store))
    }
}

impl<S: SessionStore + ?Sized> TowerSessionsStore<S> {
    /// Wraps a store that the application also uses elsewhere.
    pub fn from_arc(store: Arc<S>) -> Self {
        TowerSessionsStore {
            store,
            owner_key: None,
            on_conflict: OnConflict::default(),
            absolute_lifetime: None,
            touch_throttle: None,
            rotations: Arc::default(),
        }
    }

    /// Gives every new session an [absolute expiry](crate::Session::absolute_expiry)
    /// `lifetime` after it is created: however active, it ends then (in a store that
    /// declares [`absolute_expiry`](crate::Capabilities::absolute_expiry); see
    /// [lifetimes](self#lifetimes)). Default: none.
    pub fn with_absolute_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.absolute_lifetime = Some(lifetime);
        self
    }

    /// Throttles the writes that only extend a session: a save whose data did not change
    /// moves the stored expiry with [`touch`](SessionStore::touch) (no rewrite, no new
    /// version), and only when that moves it by at least `fraction` (0.0 to 1.0) of the idle
    /// timeout; otherwise it writes nothing. See [lifetimes](self#lifetimes). Default: every
    /// save writes.
    pub fn with_touch_throttle(mut self, fraction: f64) -> Self {
        self.touch_throttle = Some(if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        });
        self
    }

    /// What a save does with a key that another request changed too since this one loaded
    /// the session (see [saves](self#saves-no-lost-update-no-session-brought-back)):
    /// [`OnConflict::SaverWins`] by default.
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

    /// The session to store for a record's data and expiry, with the owner its data names.
    fn session_of(
        &self,
        data: &HashMap<String, Value>,
        expiry: OffsetDateTime,
    ) -> Result<Session, Error> {
        let session = session_of_parts(data, expiry);
        let owner = self.owner_in(session.data())?;
        Ok(session.with_owner(owner))
    }

    /// The owner that `data` names under the owner key, if one was set.
    fn owner_in(&self, data: &Map<String, Value>) -> Result<Option<Owner>, Error> {
        match &self.owner_key {
            Some(key) => owner_of_value(data.get(&**key)),
            None => Ok(None),
        }
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
}

impl<S: ?Sized> Clone for TowerSessionsStore<S> {
    fn clone(&self) -> Self {
        TowerSessionsStore {
            store: Arc::clone(&self.store),
            owner_key: self.owner_key.clone(),
            on_conflict: self.on_conflict,
            absolute_lifetime: self.absolute_lifetime,
            touch_throttle: self.touch_throttle,
            rotations: Arc::clone(&self.rotations),
        }
    }
}

impl<S: ?Sized> fmt::Debug for TowerSessionsStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerSessionsStore")
            .field("store", &std::any::type_name::<S>())
            .field("owner_key", &self.owner_key)
            .field("on_conflict", &self.on_conflict)
            .field("absolute_lifetime", &self.absolute_lifetime)
            .field("touch_throttle", &self.touch_throttle)
            .finish()
    }
}

/// Milliseconds since the Unix epoch for an `OffsetDateTime`, truncated toward the past and
/// saturating at the ends of `i64`.
pub fn millis_of(time: OffsetDateTime) -> i64 {
    let millis = time.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX })
}

/// The `OffsetDateTime` (UTC) of a number of milliseconds since the Unix epoch, clamped to the
/// range `OffsetDateTime` can hold.
pub fn offset_date_time_of(millis: i64) -> OffsetDateTime {
    match OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000) {
        Ok(time) => time,
        Err(_) if millis < 0 => PrimitiveDateTime::MIN.assume_utc(),
        Err(_) => PrimitiveDateTime::MAX.assume_utc(),
    }
}

/// What the adapter needs of a tower-sessions record, whatever the tower-sessions version.
fn session_of_parts(data: &HashMap<String, Value>, expiry: OffsetDateTime) -> Session {
    let data: Map<String, Value> = data
        .iter()
        .filter(|(key, _)| key.as_str() != LOADED_KEY)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Session::from_parts(data, millis_of(expiry), 0)
}

/// A loaded session as a record's data, stamped with what the request loaded.
fn data_of(id: &SessionId, session: Session) -> (HashMap<String, Value>, OffsetDateTime) {
    let loaded = Loaded::of_id(id, &session);
    let (data, expires_at, _version) = session.into_parts();
    let mut data: HashMap<String, Value> = data.into_iter().collect();
    data.insert(LOADED_KEY.to_owned(), loaded.into_value());
    (data, offset_date_time_of(expires_at))
}

impl<S: SessionStore + ?Sized> TowerSessionsStore<S> {
    /// `create`, for any tower-sessions version: `next_id` draws a fresh id after a
    /// collision. Returns the id the session was stored under.
    async fn create_parts(
        &self,
        data: &mut HashMap<String, Value>,
        expiry: OffsetDateTime,
        mut id: SessionId,
        mut next_id: impl FnMut() -> Result<SessionId, Error>,
    ) -> Result<SessionId, Error> {
        // A record that was loaded under another id (cycle_id) carries that id's stamp: if
        // that id was rotated with a grace (`cycle_id_with_grace`), the session lives on
        // under the id it moved to, and this request's changes are saved there.
        let stamp = data.remove(LOADED_KEY);
        let loaded = stamp.as_ref().and_then(Loaded::from_value);
        if let Some(loaded) = &loaded
            && let Some(origin) = &loaded.origin
            && let Some((moved, version)) = self.rotations.take_moved(origin)
        {
            let session = self.session_of(data, expiry)?;
            let (ours, expires_at, _) = session.into_parts();
            let saved = saving::save(
                &*self.store,
                &moved,
                ours,
                expires_at,
                Some(&loaded.at_version(version)),
                self.on_conflict,
                |data| self.owner_in(data),
            )
            .await?;
            if let saving::Saved::Written(_) = saved {
                return Ok(moved);
            }
            // Ended since it moved (destroy_owner, expiry): a new session, as without grace.
        }
        let session = self.session_of(data, expiry)?;
        let session = saving::with_absolute_lifetime(session, self.absolute_lifetime);
        for _ in 0..MAX_CREATE_ATTEMPTS {
            if self.store.create(&id, &session).await? {
                return Ok(id);
            }
            // Someone holds this id: never hand it out again, draw a fresh one.
            id = next_id()?;
        }
        Err(Error::Backend {
            operation: "create",
            id: None,
            source: format!(
                "the store reported a collision for {MAX_CREATE_ATTEMPTS} fresh random ids in a row"
            )
            .into(),
        })
    }

    /// `save`, for any tower-sessions version.
    async fn save_parts(
        &self,
        id: &SessionId,
        data: &HashMap<String, Value>,
        expiry: OffsetDateTime,
    ) -> Result<(), Error> {
        let loaded = data.get(LOADED_KEY).and_then(Loaded::from_value);
        let (ours, expires_at, _) = session_of_parts(data, expiry).into_parts();
        if let (Some(fraction), Some(loaded)) = (self.touch_throttle, &loaded)
            && loaded.unchanged(&ours)
        {
            // Nothing changed but the expiry: a touch, and only when it is due.
            let now = crate::session::now_millis();
            let due = loaded
                .expires_at
                .is_none_or(|stored| saving::touch_due(stored, expires_at, now, fraction));
            if due {
                let expiry = crate::session::from_millis(expires_at);
                self.store.touch(id, expiry).await?;
            }
            return Ok(());
        }
        saving::save(
            &*self.store,
            id,
            ours,
            expires_at,
            loaded.as_ref(),
            self.on_conflict,
            |data| self.owner_in(data),
        )
        .await?;
        Ok(())
    }

    /// `load`, for any tower-sessions version: a session the store cannot decode is no
    /// session (the request starts a fresh one), with a warning.
    async fn load_parts(
        &self,
        id: &SessionId,
    ) -> Result<Option<(HashMap<String, Value>, OffsetDateTime)>, Error> {
        match self.store.get(id).await {
            Ok(session) => Ok(session.map(|session| data_of(id, session))),
            Err(err) if err.kind() == ErrorKind::Decode => {
                tracing::warn!(
                    session = %id.hint(),
                    error = %error_chain(&err),
                    "a session the store cannot decode: starting a fresh one"
                );
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }
}

fn to_tower_text(err: &Error) -> (ErrorKind, String) {
    (err.kind(), error_chain(err))
}

/// The tower-sessions traits, for one version of `tower-sessions-core`: the same code path
/// for each.
macro_rules! tower_impl {
    ($core:ident) => {
        use std::str::FromStr as _;
        use $core::session::{Id, Record};
        use $core::session_store;

        fn to_tower(err: Error) -> session_store::Error {
            let (kind, text) = to_tower_text(&err);
            match kind {
                ErrorKind::Decode => session_store::Error::Decode(text),
                ErrorKind::Encode | ErrorKind::InvalidOwner => session_store::Error::Encode(text),
                _ => session_store::Error::Backend(text),
            }
        }

        /// Cycles the session's id (`Session::cycle_id`, at login or a change of
        /// privilege) with a grace window: the old id is [rotated](SessionStore::rotate)
        /// rather than destroyed, so requests already in flight with it keep reading the
        /// session as it was, read-only, for `grace`; the request's changes are saved under
        /// the new id. Without a loaded session (nothing stored yet), a plain `cycle_id`.
        /// See [lifetimes](crate::adapters::tower_sessions#lifetimes).
        pub async fn cycle_id_with_grace<S: SessionStore + ?Sized + 'static>(
            store: &TowerSessionsStore<S>,
            session: &$core::session::Session,
            grace: std::time::Duration,
        ) -> Result<(), $core::session::Error> {
            if let Some(id) = session.id()
                && let Ok(id) = session_id_of(&id)
            {
                store.rotations.mark(id, grace);
            }
            session.cycle_id().await
        }

        /// The [`SessionId`] for a tower-sessions `Id`: its `Display` text.
        pub fn session_id_of(id: &Id) -> Result<SessionId, Error> {
            // 22 characters of URL-safe base64 always pass the id rules; the error path is
            // kept for safety rather than unwrapped.
            SessionId::new(id.to_string())
        }

        #[async_trait]
        impl<S: SessionStore + ?Sized + 'static> session_store::SessionStore
            for TowerSessionsStore<S>
        {
            async fn create(&self, record: &mut Record) -> session_store::Result<()> {
                let first = session_id_of(&record.id).map_err(to_tower)?;
                let mut drawn = None;
                let result = self
                    .create_parts(&mut record.data, record.expiry_date, first, || {
                        let id = Id::default();
                        drawn = Some(id);
                        session_id_of(&id)
                    })
                    .await;
                let stored = result.map_err(to_tower)?;
                record.id = match drawn {
                    Some(last) if session_id_of(&last).is_ok_and(|id| id == stored) => last,
                    _ if session_id_of(&record.id).is_ok_and(|id| id == stored) => record.id,
                    // Moved there by a rotation with a grace (minted as an `Id` by `delete`).
                    _ => Id::from_str(stored.as_str()).map_err(|err| {
                        session_store::Error::Backend(format!("not a tower-sessions id: {err}"))
                    })?,
                };
                Ok(())
            }

            async fn save(&self, record: &Record) -> session_store::Result<()> {
                let id = session_id_of(&record.id).map_err(to_tower)?;
                self.save_parts(&id, &record.data, record.expiry_date)
                    .await
                    .map_err(to_tower)
            }

            async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
                let id = session_id_of(session_id).map_err(to_tower)?;
                let loaded = self.load_parts(&id).await.map_err(to_tower)?;
                Ok(loaded.map(|(data, expiry_date)| Record {
                    id: *session_id,
                    data,
                    expiry_date,
                }))
            }

            /// Destroys the session, unless the application marked its id with
            /// [`cycle_id_with_grace`]: then it rotates it to a fresh id with that grace.
            async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
                let id = session_id_of(session_id).map_err(to_tower)?;
                if let Some(grace) = self.rotations.marked(&id) {
                    let fresh = || session_id_of(&Id::default());
                    match saving::rotate_away(&*self.store, &id, grace, fresh).await {
                        Ok(Some((new, version))) => {
                            self.rotations.moved(&id, new, version);
                            return Ok(());
                        }
                        Ok(None) => self.rotations.forget(&id),
                        Err(err) => {
                            self.rotations.forget(&id);
                            return Err(to_tower(err));
                        }
                    }
                }
                self.store.destroy(&id).await.map_err(to_tower)
            }
        }

        #[async_trait]
        impl<S: SessionStore + ?Sized + 'static> session_store::ExpiredDeletion
            for TowerSessionsStore<S>
        {
            async fn delete_expired(&self) -> session_store::Result<()> {
                self.store.delete_expired().await.map_err(to_tower)?;
                Ok(())
            }
        }
    };
}

#[cfg(feature = "tower-sessions")]
mod v015 {
    use super::*;
    tower_impl!(tower_sessions_core);
}

#[cfg(feature = "tower-sessions")]
pub use v015::{cycle_id_with_grace, session_id_of};

/// The same adapter for tower-sessions 0.14 (feature `tower-sessions-014`), for apps whose
/// other crates (axum-login 0.18, tower-sessions' own stores) still use
/// `tower-sessions-core` 0.14. [`TowerSessionsStore`] implements both versions' traits when
/// both features are on.
#[cfg(feature = "tower-sessions-014")]
pub mod v014 {
    use super::*;
    tower_impl!(tower_sessions_core_014);
}

/// The request-level suite's view of this adapter: the same `load`, `save` and `create`
/// paths as the tower-sessions traits, whatever the tower-sessions version.
#[cfg(feature = "conformance")]
#[async_trait]
impl<S: SessionStore + ?Sized + 'static> crate::conformance::requests::RequestAdapter
    for TowerSessionsStore<S>
{
    fn store(&self) -> &dyn SessionStore {
        &self.store
    }

    async fn load(
        &self,
        id: &SessionId,
    ) -> Result<Option<Map<String, Value>>, crate::conformance::requests::AdapterError> {
        let loaded = self.load_parts(id).await?;
        Ok(loaded.map(|(data, _)| data.into_iter().collect()))
    }

    async fn save(
        &self,
        id: &SessionId,
        data: Map<String, Value>,
        ttl: std::time::Duration,
    ) -> Result<Option<SessionId>, crate::conformance::requests::AdapterError> {
        let data: HashMap<String, Value> = data.into_iter().collect();
        self.save_parts(id, &data, expiry_in(ttl)).await?;
        Ok(Some(id.clone()))
    }

    async fn create(
        &self,
        data: Map<String, Value>,
        ttl: std::time::Duration,
    ) -> Result<SessionId, crate::conformance::requests::AdapterError> {
        let mut data: HashMap<String, Value> = data.into_iter().collect();
        let first = SessionId::try_generate()?;
        let id = self
            .create_parts(&mut data, expiry_in(ttl), first, SessionId::try_generate)
            .await?;
        Ok(id)
    }

    async fn delete(
        &self,
        id: &SessionId,
    ) -> Result<(), crate::conformance::requests::AdapterError> {
        self.store.destroy(id).await?;
        Ok(())
    }
}

#[cfg(feature = "conformance")]
fn expiry_in(ttl: std::time::Duration) -> OffsetDateTime {
    OffsetDateTime::now_utc() + ttl
}

#[cfg(all(test, feature = "memory"))]
mod tests;
