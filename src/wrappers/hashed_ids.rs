//! [`HashedIds`]: each session stored under a keyed hash of its id, so that a leaked store
//! holds no usable session id.

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::session::{Owner, Session, SessionId};
use crate::store::{Capabilities, OwnedSession, ScanCursor, ScanPage, SessionStore};
use crate::wrappers::key::Key;

type HmacSha256 = hmac::Hmac<Sha256>;

/// A store that keeps each session under `HMAC-SHA-256(key, id)` instead of its id.
///
/// A session id is a bearer credential: whoever holds it is logged in. Behind this wrapper
/// the backend only ever sees the hash, as 64 lowercase hexadecimal digits (a valid
/// [`SessionId`]), so the file names, SQL rows and Redis keys of a dump, a snapshot or a
/// backup cannot be used as cookies, and the hash cannot be turned back into the id (nor,
/// without the key, even be checked against a guessed id).
///
/// - Every operation of the contract is kept: the wrapped store sees one fixed id per session.
///   Errors name the caller's session, not the hash.
/// - The key is a secret "pepper". Changing it makes every existing session unreachable
///   (everyone is logged out, and the old entries expire as usual), so keep it stable. With
///   high-entropy ids such as [`SessionId::generate`]'s 192 bits, a leaked key alone still
///   does not reveal ids; it only lets someone test guesses.
/// - It does not hide session data: stack [`Encrypted`](crate::wrappers::encrypted::Encrypted)
///   for that, in either order.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use session_stores::{MemoryStore, Session, SessionId, SessionStore};
/// use session_stores::wrappers::{hashed_ids::HashedIds, key::Key};
///
/// // In an application: Key::from_hex(&std::env::var("SESSION_ID_KEY")?)?
/// let key = Key::generate().unwrap();
/// let store = HashedIds::new(MemoryStore::new(1000), &key);
///
/// let id = SessionId::generate();
/// store.set(&id, &Session::new(Duration::from_secs(60))).await.unwrap();
/// assert!(store.get(&id).await.unwrap().is_some());
/// // The backend holds the session under the hash only.
/// assert!(store.inner().get(&id).await.unwrap().is_none());
/// assert!(store.inner().get(&store.stored_id(&id)).await.unwrap().is_some());
/// # });
/// ```
#[derive(Clone)]
pub struct HashedIds<S> {
    inner: S,
    mac: HmacSha256,
}

impl<S> HashedIds<S> {
    /// Wraps `inner`, hashing ids with `key`.
    pub fn new(inner: S, key: &Key) -> Self {
        // A pre-keyed HMAC state: each id then costs a clone and two SHA-256 blocks.
        let mac = match HmacSha256::new_from_slice(key.as_bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        HashedIds { inner, mac }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The id under which the wrapped store keeps session `id`: 64 lowercase hexadecimal
    /// digits of `HMAC-SHA-256(key, id)`. For operators who need to find one session in the
    /// backend.
    pub fn stored_id(&self, id: &SessionId) -> SessionId {
        let mut mac = self.mac.clone();
        mac.update(id.as_str().as_bytes());
        let hash = hex::encode(mac.finalize().into_bytes());
        match SessionId::new(hash) {
            Ok(stored) => stored,
            Err(_) => unreachable!("64 hexadecimal digits are a valid session id"),
        }
    }
}

impl<S> fmt::Debug for HashedIds<S>
where
    S: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashedIds")
            .field("inner", &self.inner)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<S: SessionStore> SessionStore for HashedIds<S> {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        let stored = self.stored_id(id);
        self.inner.get(&stored).await.map_err(|e| e.for_session(id))
    }
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        let stored = self.stored_id(id);
        (self.inner.set(&stored, session).await).map_err(|e| e.for_session(id))
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let stored = self.stored_id(id);
        self.inner
            .destroy(&stored)
            .await
            .map_err(|e| e.for_session(id))
    }
    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        let stored = self.stored_id(id);
        (self.inner.touch(&stored, expires_at).await).map_err(|e| e.for_session(id))
    }
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let stored = self.stored_id(id);
        (self.inner.create(&stored, session).await).map_err(|e| e.for_session(id))
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        let stored = self.stored_id(id);
        (self.inner.set_if_version(&stored, session, expected).await)
            .map_err(|e: Error| e.for_session(id))
    }
    async fn len(&self) -> Result<u64> {
        self.inner.len().await
    }
    async fn is_empty(&self) -> Result<bool> {
        self.inner.is_empty().await
    }
    async fn clear(&self) -> Result<()> {
        self.inner.clear().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }
    /// The owner's sessions, listed under their stored (hashed) ids: a hash cannot be turned
    /// back into the id. Compare with [`stored_id`](Self::stored_id) to find the caller's
    /// own session in the listing.
    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        self.inner.sessions_of(owner, with_data).await
    }
    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        let except = except.map(|id| self.stored_id(id));
        self.inner.destroy_owner(owner, except.as_ref()).await
    }
    /// A scan of the inner store: the sessions under their stored (hashed) ids.
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        self.inner.scan(cursor, limit).await
    }
    /// The inner store's, plus [`lists_stored_ids`](Capabilities::lists_stored_ids).
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities().with_lists_stored_ids(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(key: &Key) -> HashedIds<()> {
        HashedIds::new((), key)
    }

    #[test]
    fn the_stored_id_is_the_hmac_sha256_of_the_id_in_hex() {
        // Known answer computed independently with Python:
        // hmac.new(b"\x0b" * 32, b"Hi-There", hashlib.sha256).hexdigest()
        let key = Key::from_hex(&"0b".repeat(32)).unwrap();
        let id = SessionId::new("Hi-There").unwrap();
        assert_eq!(
            store(&key).stored_id(&id).as_str(),
            "7c7742dd7438d1d60436b7c329caa5dadb14b20b10df648ba897b5def4e2664c"
        );
    }

    #[test]
    fn stored_ids_depend_on_the_id_and_the_key_and_hide_the_id() {
        let key = Key::generate().unwrap();
        let other = Key::generate().unwrap();
        let a = SessionId::generate();
        let b = SessionId::generate();
        let hashed = store(&key).stored_id(&a);
        assert_eq!(hashed, store(&key).stored_id(&a));
        assert_ne!(hashed, store(&key).stored_id(&b));
        assert_ne!(hashed, store(&other).stored_id(&a));
        assert_eq!(hashed.as_str().len(), 64);
        assert!(!hashed.as_str().contains(a.as_str()));
        assert!(!format!("{:?}", store(&key)).contains(&key.to_hex()));
    }
}
