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

// The pre-keyed HMAC states are two SHA-256 states keyed with the key's inner and outer
// pads; with the `zeroize` features of `hmac` and `sha2` each is wiped when dropped (and the
// block buffer too). This fails to build if that stops being so.
const _: fn() = || {
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    wiped_on_drop::<sha2::block_api::Sha256VarCore>();
};

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
/// - [`sessions_of`](SessionStore::sessions_of) cannot give back the ids the owner's devices
///   use (a hash cannot be turned back). It lists each session under a **listed id** instead:
///   `ls.<stored id>.<tag>`, where the tag is a keyed MAC of the stored id (with a key
///   derived from, not equal to, the id key). [`destroy`](SessionStore::destroy) of a listed
///   id ends exactly that session ("sign out this device"), and
///   [`destroy_owner`](SessionStore::destroy_owner) keeps the session whose listed id is its
///   `except`. Every other operation hashes a listed id like any id, so it never finds that
///   session: a listed id is not a cookie, and without the key nobody can make one from a
///   stored id taken from a dump.
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
    /// Keyed with a key derived from the id key: tags the listed ids.
    listed_mac: HmacSha256,
}

/// What a listed id starts with; no id that [`SessionId::generate`] makes contains a `.`.
const LISTED_PREFIX: &str = "ls.";
/// Bytes of the listed id's tag (128 bits, as 32 hexadecimal digits).
const LISTED_TAG_BYTES: usize = 16;
/// The HMAC message deriving the listed ids' tag key from the id key.
const LISTED_KEY_LABEL: &[u8] = b"session-stores HashedIds listed-id tag key v1";

impl<S> HashedIds<S> {
    /// Wraps `inner`, hashing ids with `key`.
    pub fn new(inner: S, key: &Key) -> Self {
        // A pre-keyed HMAC state: each id then costs a clone and two SHA-256 blocks.
        let keyed = |bytes: &[u8]| match HmacSha256::new_from_slice(bytes) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        let mac = keyed(key.as_bytes());
        let mut derive = mac.clone();
        derive.update(LISTED_KEY_LABEL);
        let listed_mac = keyed(&derive.finalize().into_bytes());
        HashedIds {
            inner,
            mac,
            listed_mac,
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The id [`sessions_of`](SessionStore::sessions_of) lists for session `id`: to find the
    /// caller's own session in a listing.
    pub fn listed_id_of(&self, id: &SessionId) -> SessionId {
        match self.listed_id(&self.stored_id(id)) {
            Ok(listed) => listed,
            Err(_) => unreachable!("a listed id of a 64-digit stored id is 100 valid bytes"),
        }
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

impl<S> HashedIds<S> {
    /// The id [`sessions_of`](SessionStore::sessions_of) lists for the session kept under
    /// `stored`: `ls.<stored>.<tag>`.
    fn listed_id(&self, stored: &SessionId) -> Result<SessionId> {
        let tag = self.listed_tag(stored.as_str());
        SessionId::new(format!("{LISTED_PREFIX}{}.{tag}", stored.as_str()))
    }

    fn listed_tag(&self, stored: &str) -> String {
        let mut mac = self.listed_mac.clone();
        mac.update(stored.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..LISTED_TAG_BYTES])
    }

    /// The stored id of a listed id this wrapper made (its tag checked in constant time), or
    /// `None` for any other id.
    fn stored_of_listed(&self, id: &SessionId) -> Option<SessionId> {
        let rest = id.as_str().strip_prefix(LISTED_PREFIX)?;
        let (stored, tag) = rest.rsplit_once('.')?;
        let tag = hex::decode(tag).ok()?;
        let mut mac = self.listed_mac.clone();
        mac.update(stored.as_bytes());
        mac.verify_truncated_left(&tag).ok()?;
        (tag.len() == LISTED_TAG_BYTES)
            .then(|| SessionId::new(stored).ok())
            .flatten()
    }

    /// The stored id `destroy` and `destroy_owner` act on: a listed id's own, or the hash.
    fn stored_for_destroy(&self, id: &SessionId) -> SessionId {
        self.stored_of_listed(id)
            .unwrap_or_else(|| self.stored_id(id))
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
    /// Also ends the session a listed id (see [`HashedIds`]) names.
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let stored = self.stored_for_destroy(id);
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
    /// The owner's sessions, each under its listed id (`ls.<stored id>.<tag>`): a hash
    /// cannot be turned back into the id. [`destroy`](SessionStore::destroy) of a listed id
    /// ends that session; nothing else finds it by that id. To find the caller's own session
    /// in the listing, compare with [`listed_id_of`](Self::listed_id_of).
    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        let listed = self.inner.sessions_of(owner, with_data).await?;
        // A stored id too long to list is not one of this wrapper's (those are 64 digits):
        // no caller's id reaches it, so it is not the owner's through this store.
        Ok(listed
            .into_iter()
            .filter_map(|mut entry| {
                entry.id = self.listed_id(&entry.id).ok()?;
                Some(entry)
            })
            .collect())
    }
    /// `except` may be the caller's id or a listed id.
    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        let except = except.map(|id| self.stored_for_destroy(id));
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

    #[test]
    fn listed_ids_name_their_stored_id_only_with_the_key() {
        let key = Key::generate().unwrap();
        let wrapper = store(&key);
        let id = SessionId::generate();
        let listed = wrapper.listed_id_of(&id);
        assert!(listed.as_str().starts_with(LISTED_PREFIX));
        assert!(!listed.as_str().contains(id.as_str()));
        assert_eq!(
            wrapper.stored_of_listed(&listed),
            Some(wrapper.stored_id(&id))
        );
        // What destroy acts on: the listed session for a listed id, the hash for any other.
        assert_eq!(wrapper.stored_for_destroy(&listed), wrapper.stored_id(&id));
        assert_eq!(wrapper.stored_for_destroy(&id), wrapper.stored_id(&id));
        // Another key's listed id, a changed tag, a changed stored id, a cut tag: not listed
        // ids of this wrapper (so destroy hashes them like cookies).
        let other = store(&Key::generate().unwrap()).listed_id_of(&id);
        let text = listed.as_str();
        let flipped = {
            let last = if text.ends_with('0') { '1' } else { '0' };
            format!("{}{last}", &text[..text.len() - 1])
        };
        let stored = wrapper.stored_id(&id);
        let other_stored = format!(
            "{LISTED_PREFIX}{}{}",
            if stored.as_str().starts_with('a') {
                'b'
            } else {
                'a'
            },
            &text[LISTED_PREFIX.len() + 1..]
        );
        for forged in [
            other.as_str(),
            flipped.as_str(),
            other_stored.as_str(),
            &text[..text.len() - 2],
            &format!("{LISTED_PREFIX}{}", stored.as_str()),
        ] {
            let forged = SessionId::new(forged).unwrap();
            assert_eq!(wrapper.stored_of_listed(&forged), None, "{forged:?}");
        }
        // Generated ids never look like listed ids.
        for _ in 0..1000 {
            assert_eq!(wrapper.stored_of_listed(&SessionId::generate()), None);
        }
    }
}
