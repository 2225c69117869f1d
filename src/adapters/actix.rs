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

use super::saving::{self, LOADED_KEY, Loaded, OnConflict, Saved};
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
}

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
        }
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
        let fresh = |state: HashMap<String, String>| {
            if loaded.is_some() {
                session_of(HashMap::new(), ttl)
            } else {
                session_of(state, ttl)
            }
        };
        let Ok(id) = SessionId::new(key.as_ref()) else {
            let session = fresh(state);
            let owner = self.owner_in(session.data())?;
            return self.save_new(&session.with_owner(owner)).await;
        };
        let (data, expires_at, _) = session_of(state.clone(), ttl).into_parts();
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
        let session = fresh(state);
        let owner = self.owner_in(session.data())?;
        self.save_new(&session.with_owner(owner)).await
    }
}

impl<S: ?Sized> Clone for ActixSessionStore<S> {
    fn clone(&self) -> Self {
        ActixSessionStore {
            store: Arc::clone(&self.store),
            owner_key: self.owner_key.clone(),
            on_conflict: self.on_conflict,
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
        let loaded = Loaded::of(&session);
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
        let expires_at = session_of(HashMap::new(), ttl).expires_at();
        self.store.touch(&id, expires_at).await?;
        Ok(())
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        let Ok(id) = SessionId::new(key.as_ref()) else {
            return Ok(());
        };
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
mod tests {
    use std::time::SystemTime;

    use actix_session::storage::SessionStore as ActixStore;
    use async_trait::async_trait;

    use super::*;
    use crate::error::Result;
    use crate::stores::memory::MemoryStore;

    fn state() -> HashMap<String, String> {
        let mut state = HashMap::new();
        state.insert("user".to_string(), r#"{"name":"ada"}"#.to_string());
        state.insert("count".to_string(), "3".to_string());
        state.insert("odd".to_string(), "not json at all \u{1F600}".to_string());
        state
    }

    fn key(text: &str) -> SessionKey {
        SessionKey::try_from(text.to_string()).unwrap()
    }

    /// A loaded state without what the adapter adds to carry it to `update`.
    fn unstamped(state: Option<HashMap<String, String>>) -> Option<HashMap<String, String>> {
        state.map(|mut state| {
            assert!(state.remove(LOADED_KEY).is_some(), "load stamps the state");
            state
        })
    }

    #[tokio::test]
    async fn save_load_update_round_trip_losslessly() -> Result<()> {
        let store = ActixSessionStore::new(MemoryStore::new(100));
        let ttl = Duration::minutes(5);
        let before = now_millis();
        let k = store.save(state(), &ttl).await.unwrap();
        assert_eq!(k.as_ref().len(), 32);
        let id = SessionId::new(k.as_ref())?;
        let stored = store.inner().get(&id).await?.unwrap();
        let created = stored.version();
        assert!(stored.expires_at_millis() >= before + 300_000);
        assert!(stored.expires_at_millis() <= now_millis() + 300_000);
        assert_eq!(unstamped(store.load(&k).await.unwrap()), Some(state()));

        let mut changed = store.load(&k).await.unwrap().unwrap();
        changed.insert("count".into(), "4".into());
        let same = store.update(k, changed.clone(), &ttl).await.unwrap();
        assert_eq!(same.as_ref(), id.as_str(), "a live key is kept");
        changed.remove(LOADED_KEY);
        assert_eq!(unstamped(store.load(&same).await.unwrap()), Some(changed));
        let stored = store.inner().get(&id).await?.unwrap();
        assert!(
            stored.get_value(LOADED_KEY).is_none(),
            "the stamp is never stored"
        );
        assert_eq!(
            store.inner().get(&id).await?.unwrap().version(),
            created + 1
        );
        Ok(())
    }

    #[tokio::test]
    async fn update_of_a_missing_or_expired_key_saves_under_a_new_key() -> Result<()> {
        let store = ActixSessionStore::new(MemoryStore::new(100));
        let ttl = Duration::minutes(5);
        // Missing.
        let unknown = SessionId::generate();
        let k = store
            .update(key(unknown.as_str()), state(), &ttl)
            .await
            .unwrap();
        assert_ne!(k.as_ref(), unknown.as_str());
        assert!(
            store.inner().get(&unknown).await?.is_none(),
            "not resurrected"
        );
        assert_eq!(unstamped(store.load(&k).await.unwrap()), Some(state()));
        // Expired.
        let old = SessionId::new(k.as_ref())?;
        store
            .inner()
            .touch(&old, SystemTime::now() - std::time::Duration::from_secs(1))
            .await?;
        let k2 = store.update(k, state(), &ttl).await.unwrap();
        assert_ne!(k2.as_ref(), old.as_str());
        assert!(store.inner().get(&old).await?.is_none());
        // A key that is not a valid SessionId (forged cookie).
        let k3 = store.update(key("a/../b"), state(), &ttl).await.unwrap();
        assert_eq!(unstamped(store.load(&k3).await.unwrap()), Some(state()));
        assert_eq!(store.inner().len().await?, 2);
        Ok(())
    }

    #[tokio::test]
    async fn update_of_a_loaded_session_that_is_gone_starts_an_empty_one() -> Result<()> {
        let store = ActixSessionStore::new(MemoryStore::new(100)).with_owner_key("user");
        let ttl = Duration::minutes(5);
        let mut state = state();
        state.insert("user".into(), r#""ada""#.into());
        let k = store.save(state, &ttl).await.unwrap();
        let id = SessionId::new(k.as_ref())?;
        let mut loaded = store.load(&k).await.unwrap().unwrap();
        // Logged out everywhere while the request runs.
        let ada = Owner::new("ada")?;
        assert_eq!(store.inner().destroy_owner(&ada, None).await?, 1);
        loaded.insert("cart".into(), "1".into());
        let next = store.update(k, loaded, &ttl).await.unwrap();
        assert_ne!(next.as_ref(), id.as_str());
        assert!(store.inner().get(&id).await?.is_none(), "not brought back");
        assert!(store.inner().sessions_of(&ada, false).await?.is_empty());
        assert_eq!(
            unstamped(store.load(&next).await.unwrap()),
            Some(HashMap::new()),
            "a new, empty session"
        );
        Ok(())
    }

    #[tokio::test]
    async fn update_ttl_moves_only_the_expiry_and_never_creates() -> Result<()> {
        let store = ActixSessionStore::new(MemoryStore::new(100));
        let k = store.save(state(), &Duration::seconds(10)).await.unwrap();
        let id = SessionId::new(k.as_ref())?;
        let before = store.inner().get(&id).await?.unwrap();
        store.update_ttl(&k, &Duration::hours(1)).await.unwrap();
        let after = store.inner().get(&id).await?.unwrap();
        assert!(after.expires_at_millis() >= before.expires_at_millis() + 3_000_000);
        assert_eq!(after.version(), before.version());
        assert_eq!(after.data(), before.data());

        let unknown = SessionId::generate();
        store
            .update_ttl(&key(unknown.as_str()), &Duration::hours(1))
            .await
            .unwrap();
        assert!(store.inner().get(&unknown).await?.is_none());
        store
            .update_ttl(&key("bad key!"), &Duration::hours(1))
            .await
            .unwrap();

        // A negative TTL expires the session at once.
        store.update_ttl(&k, &Duration::seconds(-1)).await.unwrap();
        assert_eq!(store.load(&k).await.unwrap(), None);
        Ok(())
    }

    #[tokio::test]
    async fn load_and_delete_of_foreign_keys_and_foreign_data() -> Result<()> {
        let store = ActixSessionStore::new(MemoryStore::new(100));
        assert_eq!(store.load(&key("")).await.unwrap(), None);
        assert_eq!(store.load(&key("../etc/passwd")).await.unwrap(), None);
        store.delete(&key("*")).await.unwrap();

        let id = SessionId::generate();
        let mut foreign = Session::new(std::time::Duration::from_secs(60));
        foreign.insert("n", 1).unwrap();
        store.inner().set(&id, &foreign).await?;
        match store.load(&key(id.as_str())).await {
            Err(LoadError::Deserialization(err)) => {
                let ours = err.downcast_ref::<Error>().expect("our typed error");
                assert_eq!(ours.kind(), crate::ErrorKind::Decode);
                assert!(!err.to_string().contains(id.as_str()));
            }
            other => panic!("{other:?}"),
        }
        store.delete(&key(id.as_str())).await.unwrap();
        assert!(store.inner().get(&id).await?.is_none());
        Ok(())
    }

    /// A store whose `get` fails with a decode error (a corrupt row), and with `Unavailable`
    /// for one id.
    struct Corrupt(MemoryStore, SessionId);

    #[async_trait]
    impl SessionStore for Corrupt {
        async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
            if *id == self.1 {
                return Err(Error::unavailable("get", Some(id), "the server is down"));
            }
            Err(Error::decode(id, "corrupt row"))
        }
        async fn set(&self, id: &SessionId, s: &Session) -> Result<u64> {
            self.0.set(id, s).await
        }
        async fn destroy(&self, id: &SessionId) -> Result<()> {
            self.0.destroy(id).await
        }
        async fn touch(&self, id: &SessionId, at: std::time::SystemTime) -> Result<bool> {
            self.0.touch(id, at).await
        }
        async fn create(&self, id: &SessionId, s: &Session) -> Result<bool> {
            self.0.create(id, s).await
        }
        async fn set_if_version(&self, id: &SessionId, s: &Session, e: u64) -> Result<u64> {
            self.0.set_if_version(id, s, e).await
        }
        async fn len(&self) -> Result<u64> {
            self.0.len().await
        }
        async fn clear(&self) -> Result<()> {
            self.0.clear().await
        }
        async fn delete_expired(&self) -> Result<u64> {
            self.0.delete_expired().await
        }
    }

    #[tokio::test]
    async fn a_session_the_store_cannot_decode_is_a_deserialization_error() {
        let down = SessionId::generate();
        let store = ActixSessionStore::new(Corrupt(MemoryStore::new(10), down.clone()));
        let id = SessionId::generate();
        match store.load(&key(id.as_str())).await {
            Err(LoadError::Deserialization(err)) => {
                let ours = err.downcast_ref::<Error>().expect("our typed error");
                assert_eq!(ours.kind(), crate::ErrorKind::Decode);
            }
            other => panic!("a decode error must be LoadError::Deserialization: {other:?}"),
        }
        match store.load(&key(down.as_str())).await {
            Err(LoadError::Other(err)) => {
                let ours = err.downcast_ref::<Error>().expect("our typed error");
                assert_eq!(ours.kind(), crate::ErrorKind::Unavailable);
            }
            other => panic!("an unavailable store must be LoadError::Other: {other:?}"),
        }
    }

    /// Fails every `set_if_version` with a conflict (as if other requests kept writing), and
    /// every `create` with a collision.
    struct Contended(MemoryStore);

    #[async_trait]
    impl SessionStore for Contended {
        async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
            self.0.get(id).await
        }
        async fn set(&self, id: &SessionId, s: &Session) -> Result<u64> {
            self.0.set(id, s).await
        }
        async fn destroy(&self, id: &SessionId) -> Result<()> {
            self.0.destroy(id).await
        }
        async fn touch(&self, id: &SessionId, t: SystemTime) -> Result<bool> {
            self.0.touch(id, t).await
        }
        async fn create(&self, _: &SessionId, _: &Session) -> Result<bool> {
            Ok(false)
        }
        async fn set_if_version(&self, id: &SessionId, _: &Session, e: u64) -> Result<u64> {
            Err(Error::conflict(id, e))
        }
        async fn len(&self) -> Result<u64> {
            self.0.len().await
        }
        async fn clear(&self) -> Result<()> {
            self.0.clear().await
        }
        async fn delete_expired(&self) -> Result<u64> {
            self.0.delete_expired().await
        }
    }

    #[tokio::test]
    async fn endless_contention_is_a_typed_error_not_a_hang() -> Result<()> {
        let store = ActixSessionStore::new(Contended(MemoryStore::new(10)));
        let id = SessionId::generate();
        let mut original = Session::new(std::time::Duration::from_secs(60));
        original.insert("user", "ada").unwrap();
        store.inner().set(&id, &original).await?;
        match store
            .update(key(id.as_str()), state(), &Duration::minutes(1))
            .await
        {
            Err(UpdateError::Other(err)) => {
                assert!(err.downcast_ref::<Error>().unwrap().is_conflict())
            }
            other => panic!("{other:?}"),
        }
        let kept = store.inner().get(&id).await?.unwrap();
        assert_eq!(
            kept.data(),
            original.data(),
            "a failed update leaves it intact"
        );
        assert!(matches!(
            store.save(state(), &Duration::minutes(1)).await,
            Err(SaveError::Other(_))
        ));
        Ok(())
    }
}
