//! [`HashedIds`]: each session stored under a keyed hash of its id, so that a leaked store
//! holds no usable session id.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::session::{Owner, Session, SessionId};
use crate::store::{Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore};
use crate::wrappers::key::Key;
use crate::wrappers::owners::{OwnerMac, destroy_across, list_across};

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
/// - **Owners** are indexed under a keyed hash too: the wrapped store sees
///   `oh.<64 hexadecimal digits>` ([`stored_owner`](Self::stored_owner), with a key derived
///   from, not equal to, the id key) as each session's owner, so its owner index (SQL
///   column, file names, Redis keys) names nobody. The real owner, which `get` returns, is
///   kept in the session's data under a reserved key (`"\u{1}owner"`; a caller's own keys
///   that start with U+0001 are stored with one more, and come back as they were): readable
///   in the backend unless [`Encrypted`](crate::wrappers::encrypted::Encrypted) is stacked
///   inside this wrapper (as [`connect`](crate::connect()) does), which seals it.
///   [`sessions_of`](SessionStore::sessions_of) and
///   [`destroy_owner`](SessionStore::destroy_owner) take the real owner, and also find
///   sessions stored with the plain owner by earlier releases (until their next write or
///   expiry), at the cost of one more listing of the wrapped store.
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
    /// Keyed with another key derived from the id key: hides owners.
    owners: OwnerMac,
}

/// What a listed id starts with; no id that [`SessionId::generate`] makes contains a `.`.
const LISTED_PREFIX: &str = "ls.";
/// Bytes of the listed id's tag (128 bits, as 32 hexadecimal digits).
const LISTED_TAG_BYTES: usize = 16;
/// The HMAC message deriving the listed ids' tag key from the id key.
const LISTED_KEY_LABEL: &[u8] = b"session-stores HashedIds listed-id tag key v1";
/// The label deriving the owners' hash key from the id key.
const OWNER_KEY_LABEL: &[u8] = b"session-stores HashedIds owner key v1";
/// What a hashed owner starts with.
const OWNER_PREFIX: &str = "oh.";
/// The data key under which the wrapped store keeps an owned session's real owner. Every
/// caller's key that starts with U+0001 is stored with one more U+0001 in front, so none is
/// ever taken for it. (Not U+0000: Postgres' `jsonb` cannot hold it.)
const OWNER_FIELD: &str = "\u{1}owner";
/// What [`OWNER_FIELD`] and every escaped key start with.
const ESCAPE: char = '\u{1}';

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
            owners: OwnerMac::derive(key.as_bytes(), OWNER_KEY_LABEL),
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
    /// The owner under which the wrapped store indexes the sessions of `owner`:
    /// `oh.<64 hexadecimal digits>`. For operators who need to find one owner's sessions in
    /// the backend.
    pub fn stored_owner(&self, owner: &Owner) -> Owner {
        self.owners.hidden(OWNER_PREFIX, "", owner)
    }

    /// `session` as the wrapped store keeps it: an owned session under its hashed owner,
    /// with the real owner in its data (and the caller's keys that start with U+0001 escaped).
    fn for_storage<'a>(&self, session: &'a Session) -> Cow<'a, Session> {
        let Some(owner) = session.owner() else {
            return Cow::Borrowed(session);
        };
        let mut data = Map::new();
        for (key, value) in session.data() {
            let key = if key.starts_with(ESCAPE) {
                format!("{ESCAPE}{key}")
            } else {
                key.clone()
            };
            data.insert(key, value.clone());
        }
        data.insert(
            OWNER_FIELD.to_owned(),
            Value::String(owner.as_str().to_owned()),
        );
        Cow::Owned(
            Session::from_parts(data, session.expires_at_millis(), session.version())
                .with_owner(Some(self.stored_owner(owner)))
                .with_absolute_expiry_millis(session.absolute_expiry_millis()),
        )
    }

    /// The real owner of a session the wrapped store keeps under `stored` with `data`: the
    /// one in its data if `stored` is that owner's hash; `None` for a session this wrapper
    /// did not hash the owner of (unowned, or written by an earlier release).
    fn real_owner(&self, stored: Option<&Owner>, data: &Map<String, Value>) -> Option<Owner> {
        let stored = stored?;
        if !stored.as_str().starts_with(OWNER_PREFIX) {
            return None;
        }
        let Some(Value::String(text)) = data.get(OWNER_FIELD) else {
            return None;
        };
        let real = Owner::new(text.as_str()).ok()?;
        (self.stored_owner(&real) == *stored).then_some(real)
    }

    /// A session as the wrapped store returned it, as the caller wrote it.
    fn as_written(&self, stored: Session) -> Session {
        let Some(real) = self.real_owner(stored.owner(), stored.data()) else {
            return stored;
        };
        let (absolute, rotated) = (stored.absolute_expiry_millis(), stored.is_rotated());
        let (data, expires_at, version) = stored.into_parts();
        Session::from_parts(caller_data(data), expires_at, version)
            .with_owner(Some(real))
            .with_absolute_expiry_millis(absolute)
            .with_rotated(rotated)
    }

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

/// The caller's data of an owned session as the wrapped store keeps it: without the owner
/// field, each escaped key as it was.
fn caller_data(mut data: Map<String, Value>) -> Map<String, Value> {
    data.remove(OWNER_FIELD);
    if !data.keys().any(|key| key.starts_with(ESCAPE)) {
        return data;
    }
    data.into_iter()
        .map(|(key, value)| match key.strip_prefix(ESCAPE) {
            Some(escaped) => (escaped.to_owned(), value),
            None => (key, value),
        })
        .collect()
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
        let session = self
            .inner
            .get(&stored)
            .await
            .map_err(|e| e.for_session(id))?;
        Ok(session.map(|session| self.as_written(session)))
    }
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        let stored = self.stored_id(id);
        let session = self.for_storage(session);
        (self.inner.set(&stored, &session).await).map_err(|e| e.for_session(id))
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
        let session = self.for_storage(session);
        (self.inner.create(&stored, &session).await).map_err(|e| e.for_session(id))
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        let stored = self.stored_id(id);
        let session = self.for_storage(session);
        (self.inner.set_if_version(&stored, &session, expected).await)
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
    ///
    /// Also lists the owner's sessions that an earlier release stored under the plain owner.
    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        let hashed = self.stored_owner(owner);
        let forms = [owner.clone(), hashed];
        let listed = list_across(&self.inner, &forms, with_data).await?;
        // A stored id too long to list is not one of this wrapper's (those are 64 digits):
        // no caller's id reaches it, so it is not the owner's through this store.
        Ok(listed
            .into_iter()
            .filter_map(|(form, mut entry)| {
                entry.id = self.listed_id(&entry.id).ok()?;
                if let Some(undecodable) = &mut entry.undecodable {
                    undecodable.id = Some(entry.id.clone());
                }
                entry.data = entry.data.map(|data| {
                    let ours = self.real_owner(Some(&forms[form]), &data);
                    if ours.as_ref() == Some(owner) {
                        caller_data(data)
                    } else {
                        data
                    }
                });
                Some(entry)
            })
            .collect())
    }
    /// `except` may be the caller's id or a listed id. Also ends the owner's sessions that an
    /// earlier release stored under the plain owner.
    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        let except = except.map(|id| self.stored_for_destroy(id));
        let forms = [owner.clone(), self.stored_owner(owner)];
        destroy_across(&self.inner, &forms, except.as_ref()).await
    }
    /// A scan of the inner store: the sessions under their stored (hashed) ids, each with
    /// its real owner and data.
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let page = self.inner.scan(cursor, limit).await?;
        let sessions = (page.sessions.into_iter())
            .map(|(id, session)| (id, self.as_written(session)))
            .collect();
        Ok(ScanPage::new(sessions, page.next).with_undecodable(page.undecodable))
    }
    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        let (stored_old, stored_new) = (self.stored_id(old), self.stored_id(new));
        (self.inner.rotate(&stored_old, &stored_new, grace).await).map_err(|e| e.for_session(old))
    }
    async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
        self.inner.make_undecodable(&self.stored_id(id)).await
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

    /// Sessions an earlier release stored with the plain owner are read with it, listed and
    /// ended by it, and move under the hash on their next write (listed once meanwhile).
    #[cfg(feature = "memory")]
    #[test]
    fn owners_stored_in_the_clear_are_still_listed_and_ended() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let backend = std::sync::Arc::new(crate::MemoryStore::new(100));
                let key = Key::generate().unwrap();
                let store = HashedIds::new(std::sync::Arc::clone(&backend), &key);
                let ada = Owner::new("ada@example.com").unwrap();
                let session =
                    Session::new(std::time::Duration::from_secs(600)).with_owner(Some(ada.clone()));
                let (old, new) = (SessionId::generate(), SessionId::generate());
                // As an earlier release wrote it: the plain owner, no owner field.
                backend.set(&store.stored_id(&old), &session).await.unwrap();
                store.set(&new, &session).await.unwrap();
                let raw = backend.get(&store.stored_id(&new)).await.unwrap().unwrap();
                assert_eq!(raw.owner(), Some(&store.stored_owner(&ada)));
                assert_eq!(raw.data()[OWNER_FIELD], ada.as_str());

                let got = store.get(&old).await.unwrap().unwrap();
                assert_eq!((got.owner(), got.data()), (Some(&ada), session.data()));
                let mut listed: Vec<SessionId> = (store.sessions_of(&ada, true).await.unwrap())
                    .into_iter()
                    .map(|entry| {
                        assert_eq!(entry.data.as_ref(), Some(session.data()));
                        entry.id
                    })
                    .collect();
                listed.sort();
                let mut want = vec![store.listed_id_of(&old), store.listed_id_of(&new)];
                want.sort();
                assert_eq!(listed, want);
                // Rewritten: under the hash, listed once.
                store.set(&old, &got).await.unwrap();
                assert_eq!(store.sessions_of(&ada, false).await.unwrap().len(), 2);
                // One more in the clear; "log out everywhere" ends all three.
                let third = SessionId::generate();
                backend
                    .set(&store.stored_id(&third), &session)
                    .await
                    .unwrap();
                assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 3);
                assert_eq!(backend.len().await.unwrap(), 0);

                // An owner field that does not match the hashed owner (changed in the
                // backend) is not taken for the owner: the session reads as stored.
                store.set(&new, &session).await.unwrap();
                let mut raw = backend.get(&store.stored_id(&new)).await.unwrap().unwrap();
                raw.insert(OWNER_FIELD, "bob").unwrap();
                backend.set(&store.stored_id(&new), &raw).await.unwrap();
                let got = store.get(&new).await.unwrap().unwrap();
                assert_eq!(got.owner(), Some(&store.stored_owner(&ada)));
            });
    }

    #[test]
    fn caller_keys_that_look_reserved_are_escaped_and_restored() {
        let key = Key::generate().unwrap();
        let wrapper = store(&key);
        let data = serde_json::json!({
            "\u{1}owner": 1, "\u{1}": 2, "\u{1}\u{1}x": 3, "plain": 4, "x\u{1}": 5
        });
        let serde_json::Value::Object(data) = data else {
            unreachable!()
        };
        let mut session = Session::new(std::time::Duration::from_secs(60))
            .with_owner(Some(Owner::new("ada").unwrap()));
        session.replace_data(data.clone());
        let stored = wrapper.for_storage(&session).into_owned();
        assert_eq!(stored.data().len(), data.len() + 1);
        assert_eq!(stored.data()[OWNER_FIELD], "ada");
        assert_eq!(stored.data()["\u{1}\u{1}owner"], 1);
        assert_eq!(stored.data()["\u{1}\u{1}\u{1}x"], 3);
        assert_eq!(stored.data()["x\u{1}"], 5);
        assert_eq!(wrapper.as_written(stored), session);
        // Unowned sessions are stored as they are.
        let unowned = session.clone().with_owner(None);
        assert!(matches!(wrapper.for_storage(&unowned), Cow::Borrowed(_)));
        assert_eq!(wrapper.as_written(unowned.clone()), unowned);
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
