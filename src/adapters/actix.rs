//! Any [`SessionStore`] as an [actix-session](https://docs.rs/actix-session/0.11) store
//! (feature `actix-session`).
//!
//! [`ActixSessionStore`] wraps a store of this crate and implements
//! [`actix_session::storage::SessionStore`], so it can be handed to
//! `actix_session::SessionMiddleware` in an actix-web app.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use session_stores::adapters::actix::ActixSessionStore;
//! use session_stores::cleanup::spawn_cleanup;
//!
//! let store = ActixSessionStore::from_box(session_stores::connect("sqlite://sessions.db").await?);
//! let _cleanup = spawn_cleanup(store.inner_arc(), Duration::from_secs(60));
//!
//! // HttpServer::new(move || {
//! //     App::new()
//! //         .wrap(SessionMiddleware::new(store.clone(), key.clone()))
//! //         .route("/", web::get().to(index))
//! // })
//! # Ok(())
//! # }
//! ```
//!
//! # Mapping
//!
//! | actix-session                 | this crate                                            |
//! |-------------------------------|-------------------------------------------------------|
//! | `save(state, ttl)`            | a fresh [`SessionId::generate`] key, stored with the atomic [`create`](SessionStore::create); on a collision another key (at most 16 tries) |
//! | `load(key)`                   | [`get`](SessionStore::get): never an expired session   |
//! | `update(key, state, ttl)`     | [`set_if_version`](SessionStore::set_if_version) on the version the request loaded; on a conflict a three-way merge, retried (see below). A session that is gone (logged out, ended by `destroy_owner`, expired) or unreadable is never written: the request goes on with a **new, empty** session under a new key, never one carrying the old state or owner |
//! | `update_ttl(key, ttl)`        | [`touch`](SessionStore::touch): moves the expiry only, never the data or version, never creates |
//! | `delete(key)`                 | [`destroy`](SessionStore::destroy)                     |
//!
//! - **Keys.** Keys are minted by [`SessionId::generate`]: 32 characters of URL-safe base64
//!   (192 random bits). A key from a cookie that is not a valid [`SessionId`] (forged, or
//!   minted by another store) is treated as a missing session: `load` returns `None`,
//!   `update` saves under a new key, `update_ttl` and `delete` do nothing.
//! - **State.** actix-session's state is a `HashMap<String, String>` (each value is already
//!   JSON text made by actix-session). It is stored as a JSON object whose values are those
//!   strings, unchanged, so it round-trips exactly. Loading a session with a value that is not
//!   a string (one written by something else) fails with `LoadError::Deserialization`
//!   holding an [`Error::Decode`] for that session, and so does a session the store itself
//!   cannot decode (a corrupt row or file): actix-session then starts a fresh session for that
//!   request instead of answering 500 to every request with that cookie. Other store errors
//!   (unavailable, timeout) are `LoadError::Other`: a 500, since the session may well be fine.
//! - **Saves merge, never overwrite.** `load` adds one entry to the state, under
//!   [`LOADED_KEY`] (`"session_stores.loaded"`): the version
//!   the request loaded and a 64-bit fingerprint of each value (handlers should leave it
//!   alone; it is never stored). `update` writes with a compare-and-set on that version. On a
//!   conflict it merges one key at a time between what the request loaded, what it saves and
//!   what is stored now: a key changed (or removed) by one side only keeps that change; a key
//!   both changed takes the saving request's value, or fails the update with
//!   [`Error::Conflict`] under
//!   [`with_on_conflict(OnConflict::Fail)`](ActixSessionStore::with_on_conflict). The expiry
//!   is the later of the two. At most 8 attempts in all. A request that cleared its session
//!   (`Session::clear`) replaces the stored one wholesale, still only if it exists.
//! - **TTL.** The expiry is now plus the TTL, to the millisecond. A zero or negative TTL
//!   deletes the session, as the contract's past expiry does.
//! - **Owners.** [`with_owner_key`](ActixSessionStore::with_owner_key) names a state key
//!   (such as `"user_id"`) whose value becomes the session's [`Owner`] on every
//!   save and update, so an existing app gets the owner index ("log out everywhere") by
//!   configuration alone. actix-session keeps each value as JSON text: a JSON string is the
//!   owner as it is, a number its decimal text, `null` or an absent key no owner. Then
//!   [`sessions_of`](SessionStore::sessions_of) lists a user's sessions and
//!   [`destroy_owner`](SessionStore::destroy_owner) ends them; the current session's key is
//!   not visible to handlers in actix-session 0.11, so "everywhere else" is done by ending
//!   them all and renewing the current session (`Session::renew`).
//! # Lifetimes
//!
//! - **Absolute lifetime.** [`with_absolute_lifetime`](ActixSessionStore::with_absolute_lifetime)
//!   gives each new session an absolute expiry that no `update`, `update_ttl` or renewal
//!   moves its expiry past, in every store that declares
//!   [`absolute_expiry`](crate::Capabilities::absolute_expiry).
//! - **Throttled touch.** With `TtlExtensionPolicy::OnEveryRequest` actix-session calls
//!   `update_ttl` on every request. [`with_touch_throttle(f)`](ActixSessionStore::with_touch_throttle)
//!   sends that touch only when it moves the stored expiry (as `load` saw it) by at least `f`
//!   of the TTL; BENCHMARKS.md counts the writes saved.
//! - **Renewing with a grace window.** actix-session's `Session::renew` deletes the old key
//!   (the same `delete` as a logout) before it saves the new one, so requests in flight with
//!   the old cookie find nothing.
//!   [`renew_with_grace(&session, grace)`](ActixSessionStore::renew_with_grace) marks the key
//!   and renews: the adapter's `delete` then [rotates](SessionStore::rotate) the old key to a
//!   fresh one (read-only, as it was, for `grace`) and the request's state is saved under the
//!   new key. `Session::purge` and a plain `renew` still destroy at once.
//! - **Errors.** Every failure keeps this crate's [`Error`] (and the driver's error below it)
//!   as the `anyhow::Error` inside actix-session's error, so
//!   `err.downcast_ref::<session_stores::Error>()` gives it back. Errors never contain a whole
//!   key or any session data.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use actix_session::storage::{self, LoadError, SaveError, SessionKey, UpdateError};
use serde_json::{Map, Value};
use time::Duration;

use super::saving::{self, LOADED_KEY, Loaded, OnConflict, Rotations, Saved};
use super::{MAX_CREATE_ATTEMPTS, owner_of_value};
use crate::error::Error;
use crate::session::{Owner, Session, SessionId, now_millis};
use crate::store::SessionStore;

/// A [`SessionStore`] of this crate as an [`actix_session::storage::SessionStore`]. See the
/// [module docs](self) for how operations, keys, state and TTLs map.
///
/// Cloning is cheap: clones share the store.
pub struct ActixSessionStore<S: ?Sized> {
    store: Arc<S>,
    owner_key: Option<Arc<str>>,
    on_conflict: OnConflict,
    absolute_lifetime: Option<std::time::Duration>,
    touch_throttle: Option<f64>,
    rotations: Arc<Rotations>,
    /// The stored expiry of each session loaded lately, for a throttled `update_ttl` (which
    /// actix-session calls with the key alone): at most [`MAX_SEEN`] entries.
    seen: Arc<std::sync::Mutex<HashMap<SessionId, i64>>>,
}

/// How many loaded expiries a throttling adapter remembers; past that it forgets them all
/// (the next `update_ttl` of each then touches, as without throttling).
const MAX_SEEN: usize = 10_000;

impl<S: SessionStore> ActixSessionStore<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }
}

impl ActixSessionStore<dyn SessionStore> {
    /// Wraps a boxed store, such as the one [`connect`](crate::connect()) returns.
    pub fn from_box(store: Box<dyn SessionStore>) -> Self {
        Self::from_arc(Arc::from(store))
    }
}

impl<S: SessionStore + ?Sized> ActixSessionStore<S> {
    /// Wraps a store that the application also uses elsewhere.
    pub fn from_arc(store: Arc<S>) -> Self {
        ActixSessionStore {
            store,
            owner_key: None,
            on_conflict: OnConflict::default(),
            absolute_lifetime: None,
            touch_throttle: None,
            rotations: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// Gives every new session an [absolute expiry](crate::Session::absolute_expiry)
    /// `lifetime` after it is created: however active, it ends then. Default: none. See
    /// the [module docs](self#lifetimes).
    pub fn with_absolute_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.absolute_lifetime = Some(lifetime);
        self
    }

    /// Throttles `update_ttl` (actix-session's `TtlExtensionPolicy::OnEveryRequest`): the
    /// stored expiry is moved only when that moves it by at least `fraction` (0.0 to 1.0)
    /// of the TTL. Default: every `update_ttl` touches. See the [module docs](self#lifetimes).
    pub fn with_touch_throttle(mut self, fraction: f64) -> Self {
        self.touch_throttle = Some(if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        });
        self
    }

    /// Renews the session's key (`Session::renew`, at login or a change of privilege) with
    /// a grace window: the old key is [rotated](SessionStore::rotate) rather than
    /// destroyed, so requests already in flight with it keep reading the session as it was,
    /// read-only, for `grace`, and this request's state is saved under the new key. Returns
    /// whether the grace applies (`false` for a session that was not loaded from the store:
    /// then it is a plain `renew`). See the [module docs](self#lifetimes).
    pub fn renew_with_grace(
        &self,
        session: &actix_session::Session,
        grace: std::time::Duration,
    ) -> bool {
        let origin = session
            .get::<Value>(LOADED_KEY)
            .ok()
            .flatten()
            .and_then(|stamp| Loaded::from_value(&stamp))
            .and_then(|loaded| loaded.origin)
            .and_then(|origin| SessionId::new(origin).ok());
        let marked = origin.is_some_and(|id| self.rotations.mark(id, grace));
        session.renew();
        marked
    }

    /// Takes each session's [`Owner`] from the value under `key` in its state
    /// (see the [module docs](self)).
    pub fn with_owner_key(mut self, key: impl Into<String>) -> Self {
        self.owner_key = Some(Arc::from(key.into()));
        self
    }

    /// The state key the owner is taken from, if one was set.
    pub fn owner_key(&self) -> Option<&str> {
        self.owner_key.as_deref()
    }

    /// The session to store for `state`, with the owner it names.
    fn session_of(
        &self,
        mut state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<Session, Error> {
        state.remove(LOADED_KEY);
        let session = session_of(state, ttl);
        let owner = self.owner_in(session.data())?;
        Ok(session.with_owner(owner))
    }

    /// The owner that the stored data names under the owner key, if one was set.
    fn owner_in(&self, data: &Map<String, Value>) -> Result<Option<Owner>, Error> {
        let Some(key) = &self.owner_key else {
            return Ok(None);
        };
        match data.get(&**key) {
            // actix-session keeps JSON text; text that is not JSON is taken as it is.
            Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
                Ok(value) => owner_of_value(Some(&value)),
                Err(_) => owner_of_value(Some(&Value::String(text.clone()))),
            },
            other => owner_of_value(other),
        }
    }

    /// What a save does with a key that another request changed too since this one loaded
    /// the session: [`OnConflict::SaverWins`] by default (see the [module docs](self)).
    pub fn with_on_conflict(mut self, policy: OnConflict) -> Self {
        self.on_conflict = policy;
        self
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

    async fn save_new(&self, session: &Session) -> Result<SessionKey, Error> {
        let session = &saving::with_absolute_lifetime(session.clone(), self.absolute_lifetime);
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let id = SessionId::try_generate()?;
            if self.store.create(&id, session).await? {
                return SessionKey::try_from(id.into_string()).map_err(|err| Error::Backend {
                    operation: "save",
                    id: None,
                    source: Box::new(err),
                });
            }
        }
        Err(Error::Backend {
            operation: "save",
            id: None,
            source: format!(
                "the store reported a collision for {MAX_CREATE_ATTEMPTS} fresh random ids in a row"
            )
            .into(),
        })
    }

    async fn update_existing(
        &self,
        key: SessionKey,
        mut state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, Error> {
        let loaded = state
            .remove(LOADED_KEY)
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|stamp| Loaded::from_value(&stamp));
        // What the request goes on with when its session is gone: a request that loaded the
        // old state gets a new, empty session, never one carrying that state or its owner;
        // a request that loaded nothing (its session could not be read, so actix-session
        // gave it a fresh one, or it cleared its state) keeps its own state, under a new key.
        // Only that second, rare case copies the state.
        let fallback = if loaded.is_some() {
            HashMap::new()
        } else {
            state.clone()
        };
        let Ok(id) = SessionId::new(key.as_ref()) else {
            return self.save_new(&self.session_of(fallback, ttl)?).await;
        };
        let (data, expires_at, _) = session_of(state, ttl).into_parts();
        let saved = saving::save(
            &*self.store,
            &id,
            data,
            expires_at,
            loaded.as_ref(),
            self.on_conflict,
            |data| self.owner_in(data),
        )
        .await;
        match saved {
            Ok(Saved::Written(_)) => return Ok(key),
            // A request in flight with a key rotated by `renew_with_grace`: its changes are
            // dropped and it keeps its key (never the new one, never a new empty session).
            Ok(Saved::ReadOnly) => return Ok(key),
            // Destroyed, ended by destroy_owner or expired since this request loaded it: the
            // request's changes to it are dropped.
            Ok(Saved::Gone) => {}
            Err(err) if err.kind() == crate::ErrorKind::Decode => {
                // A record nobody can read (load gave actix a fresh session for it): remove
                // it.
                self.store.destroy(&id).await?;
            }
            Err(err) => return Err(err),
        }
        self.save_new(&self.session_of(fallback, ttl)?).await
    }
}

impl<S: ?Sized> Clone for ActixSessionStore<S> {
    fn clone(&self) -> Self {
        ActixSessionStore {
            store: Arc::clone(&self.store),
            owner_key: self.owner_key.clone(),
            on_conflict: self.on_conflict,
            absolute_lifetime: self.absolute_lifetime,
            touch_throttle: self.touch_throttle,
            rotations: Arc::clone(&self.rotations),
            seen: Arc::clone(&self.seen),
        }
    }
}

impl<S: ?Sized> fmt::Debug for ActixSessionStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActixSessionStore")
            .field("store", &std::any::type_name::<S>())
            .field("owner_key", &self.owner_key)
            .field("on_conflict", &self.on_conflict)
            .finish()
    }
}

/// A session holding actix-session's state, expiring `ttl` from now.
fn session_of(state: HashMap<String, String>, ttl: &Duration) -> Session {
    let ttl_ms = ttl.whole_milliseconds();
    let ttl_ms = i64::try_from(ttl_ms).unwrap_or(if ttl_ms < 0 { i64::MIN } else { i64::MAX });
    let data: Map<String, Value> = state
        .into_iter()
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    Session::from_parts(data, now_millis().saturating_add(ttl_ms), 0)
}

/// The stored data as actix-session's state; every value must be a string.
fn state_of(id: &SessionId, session: Session) -> Result<HashMap<String, String>, Error> {
    let (data, _, _) = session.into_parts();
    let mut state = HashMap::with_capacity(data.len());
    for (key, value) in data {
        match value {
            Value::String(text) => {
                state.insert(key, text);
            }
            _ => return Err(Error::decode(id, NotActixState)),
        }
    }
    Ok(state)
}

/// The stored session has a value that is not a string, so it was not written through
/// [`ActixSessionStore`].
#[derive(Debug)]
struct NotActixState;

impl fmt::Display for NotActixState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a value of the stored session is not a string (it was not written by the actix-session adapter)",
        )
    }
}

impl std::error::Error for NotActixState {}

impl<S: SessionStore + ?Sized> storage::SessionStore for ActixSessionStore<S> {
    async fn load(&self, key: &SessionKey) -> Result<Option<HashMap<String, String>>, LoadError> {
        let Ok(id) = SessionId::new(key.as_ref()) else {
            return Ok(None);
        };
        let session = self.store.get(&id).await.map_err(|err| {
            // A session the store cannot decode is lost either way: as a deserialization
            // error actix-session starts a fresh session (and logs it) instead of answering
            // 500 to every request that carries this cookie.
            if err.kind() == crate::ErrorKind::Decode {
                LoadError::Deserialization(err.into())
            } else {
                LoadError::Other(err.into())
            }
        })?;
        let Some(session) = session else {
            return Ok(None);
        };
        let loaded = Loaded::of_id(&id, &session);
        if self.touch_throttle.is_some() {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= MAX_SEEN {
                seen.clear();
            }
            seen.insert(id.clone(), session.expires_at_millis());
        }
        let mut state =
            state_of(&id, session).map_err(|err| LoadError::Deserialization(err.into()))?;
        state.insert(LOADED_KEY.to_owned(), loaded.into_value().to_string());
        Ok(Some(state))
    }

    async fn save(
        &self,
        state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, SaveError> {
        // A renewed session whose old key was rotated with a grace (`renew_with_grace`):
        // its state is saved where the session moved.
        let loaded = state
            .get(LOADED_KEY)
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|stamp| Loaded::from_value(&stamp));
        if let Some(loaded) = loaded
            && let Some(origin) = &loaded.origin
            && let Some((moved, version)) = self.rotations.take_moved(origin)
        {
            let mut state = state.clone();
            state.remove(LOADED_KEY);
            let (data, expires_at, _) = session_of(state, ttl).into_parts();
            let saved = saving::save(
                &*self.store,
                &moved,
                data,
                expires_at,
                Some(&loaded.at_version(version)),
                self.on_conflict,
                |data| self.owner_in(data),
            )
            .await
            .map_err(|err| SaveError::Other(err.into()))?;
            if let Saved::Written(_) = saved {
                return SessionKey::try_from(moved.into_string())
                    .map_err(|err| SaveError::Other(err.into()));
            }
        }
        let session = self
            .session_of(state, ttl)
            .map_err(|err| SaveError::Serialization(err.into()))?;
        self.save_new(&session).await.map_err(|err| match err {
            Error::Encode { .. } => SaveError::Serialization(err.into()),
            err => SaveError::Other(err.into()),
        })
    }

    async fn update(
        &self,
        key: SessionKey,
        state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        self.update_existing(key, state, ttl)
            .await
            .map_err(|err| match err {
                Error::Encode { .. } => UpdateError::Serialization(err.into()),
                err => UpdateError::Other(err.into()),
            })
    }

    async fn update_ttl(&self, key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
        let Ok(id) = SessionId::new(key.as_ref()) else {
            return Ok(());
        };
        let expires_at = session_of(HashMap::new(), ttl).expires_at_millis();
        if let Some(fraction) = self.touch_throttle {
            let stored = (self.seen.lock().unwrap_or_else(|p| p.into_inner())).remove(&id);
            if let Some(stored) = stored
                && !saving::touch_due(stored, expires_at, now_millis(), fraction)
            {
                return Ok(());
            }
        }
        let expires_at = crate::session::from_millis(expires_at);
        self.store.touch(&id, expires_at).await?;
        Ok(())
    }

    /// Destroys the session, unless the application marked it with
    /// [`renew_with_grace`](ActixSessionStore::renew_with_grace): then it rotates it to a
    /// fresh key with that grace.
    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        let Ok(id) = SessionId::new(key.as_ref()) else {
            return Ok(());
        };
        if let Some(grace) = self.rotations.marked(&id) {
            let rotated =
                saving::rotate_away(&*self.store, &id, grace, SessionId::try_generate).await;
            match rotated {
                Ok(Some((new, version))) => {
                    self.rotations.moved(&id, new, version);
                    return Ok(());
                }
                Ok(None) => self.rotations.forget(&id),
                Err(err) => {
                    self.rotations.forget(&id);
                    return Err(err.into());
                }
            }
        }
        self.store.destroy(&id).await?;
        Ok(())
    }
}

/// The request-level suite's view of this adapter: actix-session's storage calls, its state
/// values as JSON text.
#[cfg(feature = "conformance")]
#[async_trait::async_trait]
impl<S: SessionStore + ?Sized + 'static> crate::conformance::requests::RequestAdapter
    for ActixSessionStore<S>
{
    fn store(&self) -> &dyn SessionStore {
        &self.store
    }

    fn encode(&self, value: Value) -> Value {
        Value::String(value.to_string())
    }

    async fn load(
        &self,
        id: &SessionId,
    ) -> Result<Option<Map<String, Value>>, crate::conformance::requests::AdapterError> {
        let key = SessionKey::try_from(id.as_str().to_owned())?;
        let state = storage::SessionStore::load(self, &key).await?;
        Ok(state.map(|state| {
            state
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        }))
    }

    async fn save(
        &self,
        id: &SessionId,
        data: Map<String, Value>,
        ttl: std::time::Duration,
    ) -> Result<Option<SessionId>, crate::conformance::requests::AdapterError> {
        let key = SessionKey::try_from(id.as_str().to_owned())?;
        let key =
            storage::SessionStore::update(self, key, actix_state(data)?, &actix_ttl(ttl)?).await?;
        Ok(Some(SessionId::new(key.as_ref())?))
    }

    async fn create(
        &self,
        data: Map<String, Value>,
        ttl: std::time::Duration,
    ) -> Result<SessionId, crate::conformance::requests::AdapterError> {
        let key = storage::SessionStore::save(self, actix_state(data)?, &actix_ttl(ttl)?).await?;
        Ok(SessionId::new(key.as_ref())?)
    }

    async fn delete(
        &self,
        id: &SessionId,
    ) -> Result<(), crate::conformance::requests::AdapterError> {
        let key = SessionKey::try_from(id.as_str().to_owned())?;
        storage::SessionStore::delete(self, &key).await?;
        Ok(())
    }
}

#[cfg(feature = "conformance")]
fn actix_state(
    data: Map<String, Value>,
) -> Result<HashMap<String, String>, crate::conformance::requests::AdapterError> {
    data.into_iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key, text)),
            _ => Err("actix-session state values are JSON text".into()),
        })
        .collect()
}

#[cfg(feature = "conformance")]
fn actix_ttl(
    ttl: std::time::Duration,
) -> Result<Duration, crate::conformance::requests::AdapterError> {
    Ok(Duration::try_from(ttl)?)
}

#[cfg(all(test, feature = "memory"))]
mod tests;
