//! Any [`SessionStore`] as a [poem](https://docs.rs/poem/3) `SessionStorage` (feature `poem`,
//! poem 3 with its `session` feature).
//!
//! [`PoemSessionStorage`] wraps a store of this crate and implements
//! [`poem::session::SessionStorage`], so it can be handed to poem's `ServerSession`
//! middleware:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use poem::session::{CookieConfig, ServerSession, Session};
//! use poem::{EndpointExt, Route, get, handler};
//! use session_stores::adapters::poem::PoemSessionStorage;
//! use session_stores::cleanup::spawn_cleanup;
//!
//! #[handler]
//! fn count(session: &Session) -> String {
//!     let n = session.get::<u64>("count").unwrap_or(0) + 1;
//!     session.set("count", n);
//!     n.to_string()
//! }
//!
//! let store = session_stores::connect("sqlite://sessions.db").await?;
//! let storage = PoemSessionStorage::from_box(store).with_owner_key("user_id");
//! // Sweep expired rows every minute; the task logs failures and keeps going.
//! let _cleanup = spawn_cleanup(storage.inner_arc(), Duration::from_secs(60));
//!
//! let config = CookieConfig::default().max_age(Duration::from_secs(3600));
//! let app = Route::new()
//!     .at("/count", get(count))
//!     .with(ServerSession::new(config, storage));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! # Mapping
//!
//! | `SessionStorage`                          | this crate                                   |
//! |-------------------------------------------|----------------------------------------------|
//! | `load_session(id)`                        | [`get`](SessionStore::get); a session the store cannot decode is no session (poem starts a fresh one under a new id), with a `tracing` warning |
//! | `update_session(id, entries, expires)`    | for a session the request loaded: a compare-and-set on the version it loaded, merged on a conflict ([saves](#saves)); otherwise [`create`](SessionStore::create) |
//! | `remove_session(id)`                      | [`destroy`](SessionStore::destroy)           |
//!
//! - **Ids.** poem's `ServerSession` mints ids itself (32 random bytes, 43 characters of
//!   URL-safe base64, all valid [`SessionId`]s) and never adopts a cookie value that names
//!   no session: `load_session` of an unknown or invalid id finds nothing, and poem then
//!   mints a new one.
//! - **Data.** poem's `BTreeMap<String, serde_json::Value>` becomes the session's JSON
//!   object, key for key, nothing re-encoded.
//! - **Expiry.** `expires` is poem's cookie `max_age`: the session expires that long after
//!   the save, to the millisecond. When it is `None` (poem's default: a browser-session
//!   cookie) the adapter uses [`with_default_ttl`](PoemSessionStorage::with_default_ttl),
//!   one day by default, as connect-redis does, rather than keep the session forever. poem
//!   saves only a changed session, so an unchanged session is not extended by activity.
//! - **What a request loaded.** `load_session` adds one entry under [`LOADED_KEY`]
//!   (`"session_stores.loaded"`): the version the request loaded, a 64-bit keyed
//!   fingerprint of each value and of the id. `update_session` takes it out before anything
//!   is stored; handlers should leave it alone (it appears in `Session::entries`).
//! - **Errors.** Every failure is a `poem::Error` (status 500) that keeps this crate's
//!   [`Error`]: `err.downcast_ref::<session_stores::Error>()` gives it back. Errors name a
//!   session only by its shortened [`IdHint`](crate::IdHint).
//!
//! # Saves
//!
//! - **A save is a compare-and-set** on the version the request loaded; on a conflict it
//!   merges one top-level key at a time with what another request wrote meanwhile
//!   ([`OnConflict`]), as the other adapters do: no lost update between concurrent requests.
//! - **A save never brings back a session** that a logout, `destroy_owner` or expiry ended
//!   while the request ran: it is not written, and the request's changes are dropped
//!   (`update_session` returns `Ok`; poem keeps the cookie, whose next request finds no
//!   session and starts afresh under a new id).
//! - **New sessions** (poem's `Changed` with no session yet, and `Renewed`, which moves the
//!   entries to a fresh id) are written with the atomic [`create`](SessionStore::create).
//!
//! # What poem's API does not allow
//!
//! `update_session(id, entries, expires)` does not say whether the session is new. The
//! adapter tells by the entry under [`LOADED_KEY`], which `Session::clear()` removes with
//! everything else. So a request that **clears** its session saves like a new one: a
//! `create`, and when the id exists, a wholesale replacement of the stored data (only if it
//! still exists, never merged). Two things are lost for such a request only:
//!
//! - a concurrent change by another request to the same session is overwritten;
//! - if the session was destroyed (logout, `destroy_owner`, expiry) while the clearing
//!   request ran, its save creates a session under the old id again, holding only what the
//!   handler set after `clear()` (nothing from before the clear, and no owner unless the
//!   handler set one). A handler that means "log out" should call `Session::purge()`, which
//!   destroys the session and is never affected.
//!
//! # Owners ("log out everywhere")
//!
//! [`with_owner_key`](PoemSessionStorage::with_owner_key) names an entry (such as
//! `"user_id"`) whose value becomes the session's [`Owner`] on every save: a string is the
//! owner as it is, a number its decimal text, absent or `null` no owner. Then
//! [`sessions_of`](SessionStore::sessions_of) lists a user's sessions and
//! [`destroy_owner`](SessionStore::destroy_owner) ends them; poem does not show handlers the
//! session id, so "everywhere else" is done by ending them all and renewing the current one
//! (`Session::renew`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::poem::http::StatusCode;
use ::poem::session::SessionStorage;
use serde_json::{Map, Value};

use super::owner_of_value;
use super::saving::{self, LOADED_KEY, Loaded, OnConflict};
use crate::cleanup::error_chain;
use crate::error::{Error, ErrorKind};
use crate::session::{Owner, Session, SessionId, now_millis};
use crate::store::SessionStore;

/// The TTL of a session whose cookie has no `max_age` (see
/// [`with_default_ttl`](PoemSessionStorage::with_default_ttl)): one day.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// A [`SessionStore`] of this crate as a [`poem::session::SessionStorage`]. See the
/// [module docs](self) for how operations, entries and expiry map.
///
/// Cloning is cheap: clones share the store.
pub struct PoemSessionStorage<S: ?Sized> {
    store: Arc<S>,
    owner_key: Option<Arc<str>>,
    on_conflict: OnConflict,
    absolute_lifetime: Option<std::time::Duration>,
    default_ttl: Duration,
}

impl<S: SessionStore> PoemSessionStorage<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }
}

impl PoemSessionStorage<dyn SessionStore> {
    /// Wraps a boxed store, such as the one [`connect`](crate::connect()) returns.
    pub fn from_box(store: Box<dyn SessionStore>) -> Self {
        Self::from_arc(Arc::from(store))
    }
}

impl<S: SessionStore + ?Sized> PoemSessionStorage<S> {
    /// Wraps a store that the application also uses elsewhere.
    pub fn from_arc(store: Arc<S>) -> Self {
        PoemSessionStorage {
            store,
            owner_key: None,
            on_conflict: OnConflict::default(),
            absolute_lifetime: None,
            default_ttl: DEFAULT_TTL,
        }
    }

    /// How long a session lives after a save when poem's cookie has no `max_age` (poem
    /// passes no expiry then): [`DEFAULT_TTL`], one day, unless set.
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Gives every new session an [absolute expiry](crate::Session::absolute_expiry)
    /// `lifetime` after it is created: however active, it ends then, in every store that
    /// declares [`absolute_expiry`](crate::Capabilities::absolute_expiry). Default: none.
    pub fn with_absolute_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.absolute_lifetime = Some(lifetime);
        self
    }

    /// What a save does with a key that another request changed too since this one loaded
    /// the session: [`OnConflict::SaverWins`] by default (see [saves](self#saves)).
    pub fn with_on_conflict(mut self, policy: OnConflict) -> Self {
        self.on_conflict = policy;
        self
    }

    /// Takes each session's [`Owner`] from the value under `key` in its entries
    /// (see [owners](self#owners-log-out-everywhere)).
    pub fn with_owner_key(mut self, key: impl Into<String>) -> Self {
        self.owner_key = Some(Arc::from(key.into()));
        self
    }

    /// The entry the owner is taken from, if one was set.
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

    fn owner_in(&self, data: &Map<String, Value>) -> Result<Option<Owner>, Error> {
        match &self.owner_key {
            Some(key) => owner_of_value(data.get(&**key)),
            None => Ok(None),
        }
    }

    async fn load(&self, id: &SessionId) -> Result<Option<BTreeMap<String, Value>>, Error> {
        let session = match self.store.get(id).await {
            Ok(Some(session)) => session,
            Ok(None) => return Ok(None),
            Err(err) if err.kind() == ErrorKind::Decode => {
                tracing::warn!(
                    session = %id.hint(),
                    error = %error_chain(&err),
                    "a session the store cannot decode: starting a fresh one"
                );
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        let stamp = stamp(id, Loaded::of(&session));
        let (data, _, _) = session.into_parts();
        let mut entries: BTreeMap<String, Value> = data.into_iter().collect();
        entries.insert(LOADED_KEY.to_owned(), stamp);
        Ok(Some(entries))
    }

    async fn update(
        &self,
        id: &SessionId,
        entries: &BTreeMap<String, Value>,
        expires: Option<Duration>,
    ) -> Result<(), Error> {
        let loaded = entries
            .get(LOADED_KEY)
            .and_then(|stamp| loaded_of_stamp(id, stamp));
        let data: Map<String, Value> = entries
            .iter()
            .filter(|(key, _)| key.as_str() != LOADED_KEY)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let ttl = expires.unwrap_or(self.default_ttl);
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at = now_millis().saturating_add(ttl_ms);
        if loaded.is_none() {
            // A new session (poem minted the id), or one this request cleared.
            let owner = self.owner_in(&data)?;
            let session = Session::from_parts(data.clone(), expires_at, 0).with_owner(owner);
            if self
                .store
                .create(
                    id,
                    &saving::with_absolute_lifetime(session, self.absolute_lifetime),
                )
                .await?
            {
                return Ok(());
            }
        }
        saving::save(
            &*self.store,
            id,
            data,
            expires_at,
            loaded.as_ref(),
            self.on_conflict,
            |data| self.owner_in(data),
        )
        .await?;
        Ok(())
    }
}

/// The entry a loaded session carries: the id's fingerprint and what was loaded, so that a
/// session renewed under a new id (whose entries still carry the old id's stamp) is saved
/// as the new session it is.
fn stamp(id: &SessionId, loaded: Loaded) -> Value {
    let mut stamp = Map::with_capacity(2);
    stamp.insert("i".into(), Value::from(id_print(id)));
    stamp.insert("l".into(), loaded.into_value());
    Value::Object(stamp)
}

/// What the request loaded, if `stamp` is one of ours and was made for `id`.
fn loaded_of_stamp(id: &SessionId, stamp: &Value) -> Option<Loaded> {
    let stamp = stamp.as_object()?;
    if stamp.get("i")?.as_u64()? != id_print(id) {
        return None;
    }
    Loaded::from_value(stamp.get("l")?)
}

/// A keyed fingerprint of an id: never the id itself in the entries handlers see.
fn id_print(id: &SessionId) -> u64 {
    saving::fingerprint(&Value::String(id.as_str().to_owned()))
}

/// A poem error (status 500) that keeps the typed error.
fn to_poem(err: Error) -> ::poem::Error {
    ::poem::Error::new(err, StatusCode::INTERNAL_SERVER_ERROR)
}

impl<S: ?Sized> Clone for PoemSessionStorage<S> {
    fn clone(&self) -> Self {
        PoemSessionStorage {
            store: Arc::clone(&self.store),
            owner_key: self.owner_key.clone(),
            on_conflict: self.on_conflict,
            absolute_lifetime: self.absolute_lifetime,
            default_ttl: self.default_ttl,
        }
    }
}

impl<S: ?Sized> fmt::Debug for PoemSessionStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoemSessionStorage")
            .field("store", &std::any::type_name::<S>())
            .field("owner_key", &self.owner_key)
            .field("on_conflict", &self.on_conflict)
            .field("default_ttl", &self.default_ttl)
            .finish()
    }
}

impl<S: SessionStore + ?Sized + 'static> SessionStorage for PoemSessionStorage<S> {
    async fn load_session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> ::poem::Result<Option<BTreeMap<String, Value>>> {
        let Ok(id) = SessionId::new(session_id) else {
            return Ok(None);
        };
        self.load(&id).await.map_err(to_poem)
    }

    async fn update_session<'a>(
        &'a self,
        session_id: &'a str,
        entries: &'a BTreeMap<String, Value>,
        expires: Option<Duration>,
    ) -> ::poem::Result<()> {
        let id = SessionId::new(session_id).map_err(to_poem)?;
        self.update(&id, entries, expires).await.map_err(to_poem)
    }

    async fn remove_session<'a>(&'a self, session_id: &'a str) -> ::poem::Result<()> {
        let Ok(id) = SessionId::new(session_id) else {
            return Ok(());
        };
        self.store.destroy(&id).await.map_err(to_poem)
    }
}
