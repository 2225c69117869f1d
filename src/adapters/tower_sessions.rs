//! Any [`SessionStore`] as a [tower-sessions](https://docs.rs/tower-sessions/0.15) store
//! (feature `tower-sessions`).
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
//! | `save(&Record)`         | [`set`](SessionStore::set) (an upsert, as in tower-sessions' own stores) |
//! | `load(&Id)`             | [`get`](SessionStore::get): never an expired session         |
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
//!   (year 9999) loads as its maximum.
//! - **Errors.** tower-sessions' error type holds only a string, so the adapter renders the
//!   [`Error`] and its chain of sources into it: a decode error becomes
//!   `session_store::Error::Decode`, an encode error `Encode`, anything else `Backend`. The
//!   text names the session only by its shortened [`IdHint`](crate::IdHint), never the
//!   whole id or any data. Use the store directly when you need the typed error.
//!
//! # Guarantees and caveats
//!
//! - A new session never takes over an existing one: `create` only writes an absent id.
//! - tower-sessions writes whole sessions with `save` and has no compare-and-set, so two
//!   concurrent requests that both change one session can still overwrite each other's
//!   change (last writer wins), as with every tower-sessions store. Use
//!   [`set_if_version`](SessionStore::set_if_version) on the store directly where that
//!   matters.
//! - `save` of a session that another request deleted in the meantime stores it again,
//!   as tower-sessions' own stores do.
//! - tower-sessions extends an `Expiry::OnInactivity` session only when it saves it: on a
//!   change, or on every request with `with_always_save(true)`.
//!
//! # Owners ("log out everywhere")
//!
//! [`with_owner_key`](TowerSessionsStore::with_owner_key) names a data key (such as
//! `"user_id"`) whose value becomes the session's [`Owner`](crate::Owner) on every `create`
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

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Map;
use time::{OffsetDateTime, PrimitiveDateTime};
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store;

use super::{MAX_CREATE_ATTEMPTS, owner_of_value};
use crate::cleanup::error_chain;
use crate::error::{Error, ErrorKind};
use crate::session::{Session, SessionId};
use crate::store::SessionStore;

/// A [`SessionStore`] of this crate as a [`tower_sessions_core::SessionStore`]. See the
/// [module docs](self) for how operations, ids, data and expiry map.
///
/// Cloning is cheap: clones share the store.
pub struct TowerSessionsStore<S: ?Sized> {
    store: Arc<S>,
    owner_key: Option<Arc<str>>,
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
        }
    }

    /// Takes each session's [`Owner`](crate::Owner) from the value under `key` in its data
    /// (see [owners](self#owners-log-out-everywhere)).
    pub fn with_owner_key(mut self, key: impl Into<String>) -> Self {
        self.owner_key = Some(Arc::from(key.into()));
        self
    }

    /// The data key the owner is taken from, if one was set.
    pub fn owner_key(&self) -> Option<&str> {
        self.owner_key.as_deref()
    }

    /// The session to store for `record`, with the owner its data names.
    fn session_of(&self, record: &Record) -> Result<Session, Error> {
        let session = session_of(record);
        let Some(key) = &self.owner_key else {
            return Ok(session);
        };
        let owner = owner_of_value(record.data.get(&**key))?;
        Ok(session.with_owner(owner))
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
        }
    }
}

impl<S: ?Sized> fmt::Debug for TowerSessionsStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerSessionsStore")
            .field("store", &std::any::type_name::<S>())
            .field("owner_key", &self.owner_key)
            .finish()
    }
}

/// The [`SessionId`] for a tower-sessions [`Id`]: its `Display` text.
pub fn session_id_of(id: &Id) -> Result<SessionId, Error> {
    // 22 characters of URL-safe base64 always pass the id rules; the error path is kept
    // for safety rather than unwrapped.
    SessionId::new(id.to_string())
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

fn session_of(record: &Record) -> Session {
    let data: Map<String, serde_json::Value> = record
        .data
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Session::from_parts(data, millis_of(record.expiry_date), 0)
}

fn record_of(id: Id, session: Session) -> Record {
    let (data, expires_at, _version) = session.into_parts();
    Record {
        id,
        data: data.into_iter().collect(),
        expiry_date: offset_date_time_of(expires_at),
    }
}

fn to_tower(err: Error) -> session_store::Error {
    let text = error_chain(&err);
    match err.kind() {
        ErrorKind::Decode => session_store::Error::Decode(text),
        ErrorKind::Encode | ErrorKind::InvalidOwner => session_store::Error::Encode(text),
        _ => session_store::Error::Backend(text),
    }
}

#[async_trait]
impl<S: SessionStore + ?Sized + 'static> session_store::SessionStore for TowerSessionsStore<S> {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let session = self.session_of(record).map_err(to_tower)?;
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let id = session_id_of(&record.id).map_err(to_tower)?;
            if self.store.create(&id, &session).await.map_err(to_tower)? {
                return Ok(());
            }
            // Someone holds this id: never hand it out again, draw a fresh one.
            record.id = Id::default();
        }
        Err(session_store::Error::Backend(format!(
            "create: the store reported a collision for {MAX_CREATE_ATTEMPTS} fresh random ids in a row"
        )))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let id = session_id_of(&record.id).map_err(to_tower)?;
        let session = self.session_of(record).map_err(to_tower)?;
        self.store.set(&id, &session).await.map_err(to_tower)?;
        Ok(())
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let id = session_id_of(session_id).map_err(to_tower)?;
        let session = self.store.get(&id).await.map_err(to_tower)?;
        Ok(session.map(|session| record_of(*session_id, session)))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let id = session_id_of(session_id).map_err(to_tower)?;
        self.store.destroy(&id).await.map_err(to_tower)
    }
}

#[async_trait]
impl<S: SessionStore + ?Sized + 'static> session_store::ExpiredDeletion for TowerSessionsStore<S> {
    async fn delete_expired(&self) -> session_store::Result<()> {
        self.store.delete_expired().await.map_err(to_tower)?;
        Ok(())
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::str::FromStr;
    use std::time::SystemTime;

    use serde_json::json;
    use time::macros::datetime;
    use tower_sessions_core::session_store::{ExpiredDeletion, SessionStore as TowerStore};

    use super::*;
    use crate::error::Result;
    use crate::stores::memory::MemoryStore;

    fn record(ttl_secs: i64) -> Record {
        let mut data = std::collections::HashMap::new();
        data.insert(
            "user".to_string(),
            json!({"name": "ada", "roles": ["admin"]}),
        );
        data.insert("n".to_string(), json!(1.5));
        data.insert("nothing".to_string(), json!(null));
        Record {
            id: Id::default(),
            data,
            expiry_date: OffsetDateTime::now_utc() + time::Duration::seconds(ttl_secs),
        }
    }

    #[test]
    fn ids_map_to_their_display_text_and_back() {
        for raw in [0i128, -1, i128::MIN, i128::MAX, 42] {
            let id = Id(raw);
            let sid = session_id_of(&id).unwrap();
            assert_eq!(sid.as_str(), id.to_string());
            assert_eq!(sid.as_str().len(), 22);
            assert_eq!(Id::from_str(sid.as_str()).unwrap(), id);
        }
    }

    #[test]
    fn expiry_maps_to_the_millisecond_truncating_toward_the_past() {
        let t = datetime!(2030-01-02 03:04:05.678_999 UTC);
        let ms = millis_of(t);
        assert_eq!(ms, 1_893_553_445_678);
        assert_eq!(
            offset_date_time_of(ms),
            datetime!(2030-01-02 03:04:05.678 UTC)
        );
        let before = datetime!(1969-12-31 23:59:59.9985 UTC);
        assert_eq!(millis_of(before), -2);
        assert_eq!(
            offset_date_time_of(i64::MAX),
            PrimitiveDateTime::MAX.assume_utc()
        );
        assert_eq!(
            offset_date_time_of(i64::MIN),
            PrimitiveDateTime::MIN.assume_utc()
        );
        // The same millisecond as this crate's own SystemTime conversion.
        let now = SystemTime::now();
        assert_eq!(millis_of(OffsetDateTime::from(now)), crate::to_millis(now));
    }

    #[tokio::test]
    async fn round_trip_is_lossless_and_load_never_returns_expired() -> Result<()> {
        let store = TowerSessionsStore::new(MemoryStore::new(100));
        let mut rec = record(60);
        store.create(&mut rec).await.unwrap();
        let loaded = store.load(&rec.id).await.unwrap().unwrap();
        assert_eq!(loaded.data, rec.data);
        assert_eq!(loaded.id, rec.id);
        assert_eq!(millis_of(loaded.expiry_date), millis_of(rec.expiry_date));
        let sid = session_id_of(&rec.id)?;
        let created = store.inner().get(&sid).await?.unwrap().version();

        // save is set: a new version (one more), the new data.
        rec.data.insert("n".into(), json!(2));
        store.save(&rec).await.unwrap();
        let stored = store.inner().get(&sid).await?.unwrap();
        assert_eq!(stored.version(), created + 1);
        assert_eq!(stored.get_value("n"), Some(&json!(2)));

        // An expired record is deleted by save and never loaded.
        let mut expired = rec.clone();
        expired.expiry_date = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        store.save(&expired).await.unwrap();
        assert!(store.load(&rec.id).await.unwrap().is_none());

        store.delete(&rec.id).await.unwrap();
        store.delete(&rec.id).await.unwrap();
        Ok(())
    }

    #[tokio::test]
    async fn create_never_takes_over_an_existing_session() -> Result<()> {
        let store = TowerSessionsStore::new(MemoryStore::new(100));
        let mut first = record(60);
        store.create(&mut first).await.unwrap();
        let mut second = record(60);
        second.id = first.id;
        second.data.insert("user".into(), json!("mallory"));
        store.create(&mut second).await.unwrap();
        assert_ne!(second.id, first.id, "a colliding create gets a fresh id");
        let kept = store.load(&first.id).await.unwrap().unwrap();
        assert_eq!(kept.data, first.data, "the existing session is untouched");
        let other = store.load(&second.id).await.unwrap().unwrap();
        assert_eq!(other.data.get("user"), Some(&json!("mallory")));
        Ok(())
    }

    /// A store whose `create` always collides, and whose other calls fail with typed errors.
    struct Stubborn;

    #[async_trait]
    impl SessionStore for Stubborn {
        async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
            Err(Error::decode(id, "not json"))
        }
        async fn set(&self, id: &SessionId, _: &Session) -> Result<u64> {
            Err(Error::unavailable(
                "set",
                Some(id),
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
            ))
        }
        async fn destroy(&self, _: &SessionId) -> Result<()> {
            Ok(())
        }
        async fn touch(&self, _: &SessionId, _: SystemTime) -> Result<bool> {
            Ok(false)
        }
        async fn create(&self, _: &SessionId, _: &Session) -> Result<bool> {
            Ok(false)
        }
        async fn set_if_version(&self, id: &SessionId, _: &Session, e: u64) -> Result<u64> {
            Err(Error::conflict(id, e))
        }
        async fn len(&self) -> Result<u64> {
            Ok(0)
        }
        async fn clear(&self) -> Result<()> {
            Ok(())
        }
        async fn delete_expired(&self) -> Result<u64> {
            Err(Error::encode(&SessionId::new("x")?, "nope"))
        }
    }

    #[tokio::test]
    async fn errors_map_by_kind_with_their_chain_and_without_the_id() {
        let store = TowerSessionsStore::new(Stubborn);
        let mut rec = record(60);
        assert!(matches!(
            store.create(&mut rec).await,
            Err(session_store::Error::Backend(_))
        ));
        let id = rec.id;
        match store.load(&id).await {
            Err(session_store::Error::Decode(text)) => {
                assert!(text.contains("not json"), "{text}");
                assert!(!text.contains(&id.to_string()), "{text}");
            }
            other => panic!("{other:?}"),
        }
        match store.save(&rec).await {
            Err(session_store::Error::Backend(text)) => {
                assert!(text.contains("backend unavailable: refused"), "{text}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn expired_deletion_calls_delete_expired() {
        // Stubborn's delete_expired fails with an encode error: proof that the call went
        // through to the store (the success path is covered by the cleanup tests).
        let store = TowerSessionsStore::from_arc(Arc::new(Stubborn));
        match store.delete_expired().await {
            Err(session_store::Error::Encode(text)) => assert!(text.contains("nope"), "{text}"),
            other => panic!("{other:?}"),
        }
        let ok = TowerSessionsStore::new(MemoryStore::new(10));
        ok.delete_expired().await.unwrap();
    }
}
