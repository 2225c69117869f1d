//! The [`SessionStore`] trait and its written contract.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::error::Result;
use crate::session::{Session, SessionId};

/// A place to keep sessions.
///
/// # Contract
///
/// Every store in this crate, and every store that passes the
/// [conformance suite](crate::conformance), behaves as follows. "Live" means the session's
/// expiry is still in the future (`now < expires_at`); "absent" means there is no live
/// session under the id, whether nothing was ever stored there, it was destroyed, or it
/// expired.
///
/// - **`get(id)`** returns the live session stored under `id`, or `None` if it is absent. A
///   store never returns an expired session, even before `delete_expired` has run. The data
///   is returned exactly as written; the expiry to the millisecond; the version as the
///   store assigned it.
/// - **`set(id, session)`** is an upsert: it stores the session's data and expiry under `id`,
///   whatever was there, and returns the new version: the previous live version plus one,
///   or 1 if the session was absent. A `set` whose expiry is already in the past deletes the
///   session and returns 0. The version inside `session` is ignored. One exception: a `set`
///   whose data and expiry are exactly those of the live stored session changes nothing, so a
///   store may skip the write and return the current version instead (the file store does,
///   to save a rewrite on every request). Either way the returned version is the one now
///   stored, and a compare-and-set on it succeeds.
/// - **`destroy(id)`** removes the session. It is idempotent: destroying an absent session
///   is `Ok`.
/// - **`touch(id, expires_at)`** moves the expiry of a live session and changes nothing
///   else: not the data, not the version. It returns whether a live session existed; it never
///   creates one. Touching to a time in the past expires the session at once.
/// - **`create(id, session)`** stores the session only if `id` is absent, atomically: of any
///   number of concurrent `create`s of one id, exactly one returns `true`. It returns `false`
///   on a collision and leaves the existing session untouched. A created session has version
///   1. Middleware uses this so that two users are never handed the same id.
/// - **`set_if_version(id, session, expected)`** is compare-and-set: it writes only if the
///   stored version still equals `expected` (0 meaning "absent"), atomically with respect to
///   every other write, and returns the new version (`expected + 1`, or 0 if the session's
///   expiry is in the past and the write deleted it). Otherwise it writes nothing and returns
///   [`Error::Conflict`](crate::Error::Conflict). A read-modify-write loop around it never
///   loses an update.
/// - **`len()`** counts live sessions; expired ones that are not yet deleted do not count.
///   **`clear()`** removes every session of this store (and only this store's: a store that
///   shares a database, directory or Redis with other data removes only its own entries).
/// - **`delete_expired()`** removes expired sessions and returns how many it removed. It never
///   removes a live session. A backend that expires entries by itself (Redis) may return 0.
///
/// - **Data limits:** data nested more than [`MAX_NESTING`](crate::MAX_NESTING) levels deep
///   is refused by every write with [`Error::Encode`](crate::Error::Encode) before anything
///   is written (see [`check_nesting`](crate::check_nesting)), so that no store accepts a
///   session it could not read back. A store may also refuse a session over its documented
///   size limit with [`Error::TooLarge`](crate::Error::TooLarge).
///
/// Ids are validated by [`SessionId`] before any store sees them. Errors say which session
/// failed and keep the backend's error as their source. A write that fails leaves the
/// previous session intact.
///
/// The trait is dyn-compatible: `Box<dyn SessionStore>` and `Arc<dyn SessionStore>` are
/// stores too (as are `&S`, `Box<S>` and `Arc<S>`).
///
/// # Example: a store of your own
///
/// A complete, correct store over a `HashMap` behind a mutex. Check yours with
/// [`conformance::run`](crate::conformance) (feature `conformance`).
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use std::time::SystemTime;
///
/// use session_stores::{async_trait, check_nesting, now_millis, to_millis, Error, Result, Session, SessionId, SessionStore};
///
/// #[derive(Default)]
/// struct MapStore(Mutex<HashMap<SessionId, Session>>);
///
/// impl MapStore {
///     fn live(map: &HashMap<SessionId, Session>, id: &SessionId) -> Option<u64> {
///         map.get(id).filter(|s| !s.is_expired()).map(|s| s.version())
///     }
///     fn write(map: &mut HashMap<SessionId, Session>, id: &SessionId, s: &Session, version: u64) -> Result<u64> {
///         if s.is_expired() {
///             map.remove(id);
///             return Ok(0);
///         }
///         check_nesting(id, s.data())?;
///         map.insert(id.clone(), s.clone().with_version(version));
///         Ok(version)
///     }
/// }
///
/// #[async_trait]
/// impl SessionStore for MapStore {
///     async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
///         let map = self.0.lock().unwrap();
///         Ok(map.get(id).filter(|s| !s.is_expired()).cloned())
///     }
///     async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
///         let mut map = self.0.lock().unwrap();
///         let next = Self::live(&map, id).unwrap_or(0) + 1;
///         Self::write(&mut map, id, session, next)
///     }
///     async fn destroy(&self, id: &SessionId) -> Result<()> {
///         self.0.lock().unwrap().remove(id);
///         Ok(())
///     }
///     async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
///         let mut map = self.0.lock().unwrap();
///         match map.get_mut(id).filter(|s| !s.is_expired()) {
///             Some(session) => {
///                 session.set_expires_at(expires_at);
///                 Ok(true)
///             }
///             None => Ok(false),
///         }
///     }
///     async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
///         let mut map = self.0.lock().unwrap();
///         if Self::live(&map, id).is_some() {
///             return Ok(false);
///         }
///         Self::write(&mut map, id, session, 1)?;
///         Ok(true)
///     }
///     async fn set_if_version(&self, id: &SessionId, session: &Session, expected: u64) -> Result<u64> {
///         let mut map = self.0.lock().unwrap();
///         if Self::live(&map, id).unwrap_or(0) != expected {
///             return Err(Error::conflict(id, expected));
///         }
///         Self::write(&mut map, id, session, expected + 1)
///     }
///     async fn len(&self) -> Result<u64> {
///         let now = now_millis();
///         Ok(self.0.lock().unwrap().values().filter(|s| !s.is_expired_at(now)).count() as u64)
///     }
///     async fn clear(&self) -> Result<()> {
///         self.0.lock().unwrap().clear();
///         Ok(())
///     }
///     async fn delete_expired(&self) -> Result<u64> {
///         let now = now_millis();
///         let mut map = self.0.lock().unwrap();
///         let before = map.len();
///         map.retain(|_, s| !s.is_expired_at(now));
///         Ok((before - map.len()) as u64)
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store: Box<dyn SessionStore> = Box::new(MapStore::default());
/// let id = SessionId::generate();
/// let mut session = Session::new(std::time::Duration::from_secs(60));
/// session.insert("user", "ada").unwrap();
/// assert!(store.create(&id, &session).await.unwrap());
/// let loaded = store.get(&id).await.unwrap().unwrap();
/// assert_eq!(loaded.version(), 1);
/// assert_eq!(loaded.get::<String>("user").unwrap().as_deref(), Some("ada"));
/// # let _ = to_millis(SystemTime::now());
/// # });
/// ```
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The live session under `id`, or `None` if it is absent or expired.
    async fn get(&self, id: &SessionId) -> Result<Option<Session>>;

    /// Stores `session` under `id` (an upsert) and returns the new version; an expiry in the
    /// past deletes the session and returns 0.
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64>;

    /// Removes the session under `id`. Idempotent.
    async fn destroy(&self, id: &SessionId) -> Result<()>;

    /// Moves the expiry of the live session under `id`, without rewriting its data or
    /// changing its version. Returns whether a live session existed.
    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool>;

    /// Stores `session` under `id` only if `id` is absent, atomically. Returns `false` on a
    /// collision.
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool>;

    /// Stores `session` under `id` only if the stored version equals `expected_version` (0:
    /// absent), atomically; returns the new version, or [`Error::Conflict`](crate::Error).
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected_version: u64,
    ) -> Result<u64>;

    /// The number of live sessions.
    async fn len(&self) -> Result<u64>;

    /// Whether there are no live sessions.
    async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Removes every session of this store.
    async fn clear(&self) -> Result<()>;

    /// Removes expired sessions and returns how many were removed.
    async fn delete_expired(&self) -> Result<u64>;
}

macro_rules! forward_store {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl<S: SessionStore + ?Sized> SessionStore for $ty {
            async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
                (**self).get(id).await
            }
            async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
                (**self).set(id, session).await
            }
            async fn destroy(&self, id: &SessionId) -> Result<()> {
                (**self).destroy(id).await
            }
            async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
                (**self).touch(id, expires_at).await
            }
            async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
                (**self).create(id, session).await
            }
            async fn set_if_version(
                &self,
                id: &SessionId,
                session: &Session,
                expected_version: u64,
            ) -> Result<u64> {
                (**self).set_if_version(id, session, expected_version).await
            }
            async fn len(&self) -> Result<u64> {
                (**self).len().await
            }
            async fn is_empty(&self) -> Result<bool> {
                (**self).is_empty().await
            }
            async fn clear(&self) -> Result<()> {
                (**self).clear().await
            }
            async fn delete_expired(&self) -> Result<u64> {
                (**self).delete_expired().await
            }
        }
    )*};
}

forward_store!(Box<S>, Arc<S>, &S);
