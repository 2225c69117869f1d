//! [`Encrypted`]: session data sealed with XChaCha20-Poly1305 under a [`KeyRing`], bound to
//! its session id.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::{AeadInOut, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::session::{Owner, Session, SessionId, check_nesting};
use crate::store::{Capabilities, OwnedSession, ScanCursor, ScanPage, SessionStore};
use crate::wrappers::key::{Key, keys_from_env};

/// The one data key of a sealed session, as the wrapped store holds it.
pub const SEALED_FIELD: &str = "sealed";

/// The first byte of a sealed blob: the format. A later format gets a new number, and this
/// version opens every format it knows.
const FORMAT_V1: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Format byte, key id, nonce.
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// Domain separation for the associated data and the key ids.
const AAD_LABEL: &[u8] = b"session-stores sealed session v1\0";
const KEY_ID_LABEL: &[u8] = b"session-stores key id v1\0";

/// Why a stored session could not be opened: the source of the [`Error::Decode`] that
/// [`Encrypted`] returns. It never holds key material or session data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// What the wrapped store holds is not a sealed session (written without this wrapper,
    /// or not in a format this version knows).
    NotSealed,
    /// It was sealed with a key that is not in the key ring (a key removed too early, or
    /// the wrong ring).
    UnknownKey,
    /// It does not open with the key it names: the ciphertext was altered, truncated, or
    /// copied from another session's id.
    Forged,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SealError::NotSealed => "the stored data is not a sealed session",
            SealError::UnknownKey => "the session was sealed with a key that is not in the key ring",
            SealError::Forged => {
                "the sealed session does not authenticate (altered, truncated, or moved from another session id)"
            }
        })
    }
}

impl std::error::Error for SealError {}

struct RingKey {
    id: [u8; KEY_ID_LEN],
    /// A labelled SHA-256 of the key, to tell whether a key is in the ring (compared in
    /// constant time) without keeping the key itself.
    digest: [u8; 32],
    cipher: XChaCha20Poly1305,
}

/// Domain separation for [`RingKey::digest`].
const KEY_DIGEST_LABEL: &[u8] = b"session-stores key digest v1\0";

fn key_digest(key: &Key) -> [u8; 32] {
    Sha256::new()
        .chain_update(KEY_DIGEST_LABEL)
        .chain_update(key.as_bytes())
        .finalize()
        .into()
}

/// The keys of an [`Encrypted`] store: the first seals, every one opens.
///
/// To rotate: put a new key first and keep the old ones after it. Sessions sealed with an
/// old key stay readable and are sealed with the new key on their next write (or at once,
/// with [`Encrypted::reseal`]); once every session sealed with an old key has been rewritten
/// or has expired (after your longest session lifetime), drop the old key. A session whose
/// key is no longer in the ring gives [`Error::Decode`] with [`SealError::UnknownKey`].
///
/// Each sealed session names its key by a 4-byte fingerprint (a hash of the key, which
/// reveals nothing about it), so opening never tries more than the key it names.
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl KeyRing {
    /// A ring of `keys`, the current (sealing) key first. An empty ring is an
    /// [`Error::Config`].
    pub fn new(keys: impl IntoIterator<Item = Key>) -> Result<KeyRing> {
        let keys: Vec<RingKey> = keys
            .into_iter()
            .map(|key| {
                let digest = Sha256::new()
                    .chain_update(KEY_ID_LABEL)
                    .chain_update(key.as_bytes())
                    .finalize();
                let mut id = [0; KEY_ID_LEN];
                id.copy_from_slice(&digest[..KEY_ID_LEN]);
                let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
                RingKey {
                    id,
                    digest: key_digest(&key),
                    cipher,
                }
            })
            .collect();
        if keys.is_empty() {
            return Err(Error::config("a key ring needs at least one key"));
        }
        Ok(KeyRing { keys })
    }

    /// A ring from the environment variable `var`: comma-separated keys of 64 hexadecimal
    /// digits each, the current key first. Errors name the variable, never its value.
    pub fn from_env(var: &str) -> Result<KeyRing> {
        KeyRing::new(keys_from_env(var)?)
    }

    /// Whether `key` is one of the ring's keys (compared in constant time).
    pub fn holds(&self, key: &Key) -> bool {
        use subtle::ConstantTimeEq;
        let digest = key_digest(key);
        self.keys
            .iter()
            .fold(subtle::Choice::from(0), |found, ring_key| {
                found | ring_key.digest.ct_eq(&digest)
            })
            .into()
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a ring holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals `data` for session `id` with the first key.
    fn seal(&self, id: &SessionId, data: &Map<String, Value>) -> Result<Map<String, Value>> {
        check_nesting(id, data)?;
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|err| Error::encode(id, err))?;
        let mut blob = Vec::with_capacity(HEADER_LEN + 256 + TAG_LEN);
        blob.push(FORMAT_V1);
        blob.extend_from_slice(&key.id);
        blob.extend_from_slice(&nonce);
        serde_json::to_writer(&mut blob, data).map_err(|err| Error::encode(id, err))?;
        let aad = associated_data(id, &blob[..HEADER_LEN]);
        let tag = key
            .cipher
            .encrypt_inout_detached(&XNonce::from(nonce), &aad, (&mut blob[HEADER_LEN..]).into())
            .map_err(|_| Error::encode(id, "the session is too large to seal"))?;
        blob.extend_from_slice(&tag);
        let mut sealed = Map::with_capacity(1);
        sealed.insert(
            SEALED_FIELD.to_owned(),
            Value::String(URL_SAFE_NO_PAD.encode(&blob)),
        );
        Ok(sealed)
    }

    /// Opens what [`seal`](KeyRing::seal) made for session `id`; also returns the position
    /// in the ring of the key that opened it.
    fn open(
        &self,
        id: &SessionId,
        sealed: &Map<String, Value>,
    ) -> Result<(Map<String, Value>, usize)> {
        let fail = |why: SealError| Error::decode(id, why);
        let text = match (sealed.len(), sealed.get(SEALED_FIELD)) {
            (1, Some(Value::String(text))) => text,
            _ => return Err(fail(SealError::NotSealed)),
        };
        let mut blob = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| fail(SealError::NotSealed))?;
        if blob.len() < HEADER_LEN + TAG_LEN || blob[0] != FORMAT_V1 {
            return Err(fail(SealError::NotSealed));
        }
        let (header, rest) = blob.split_at_mut(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let tag = Tag::try_from(&tag[..]).map_err(|_| fail(SealError::NotSealed))?;
        let key_id = &header[1..1 + KEY_ID_LEN];
        let nonce =
            XNonce::try_from(&header[1 + KEY_ID_LEN..]).map_err(|_| fail(SealError::NotSealed))?;
        let aad = associated_data(id, header);
        let mut named = self
            .keys
            .iter()
            .enumerate()
            .filter(|(_, key)| key.id == key_id)
            .peekable();
        if named.peek().is_none() {
            return Err(fail(SealError::UnknownKey));
        }
        // Fingerprints of different keys collide with probability 2^-32 per pair; then each
        // key that carries the fingerprint is tried on a copy.
        for (position, key) in named {
            let mut plain = ciphertext.to_vec();
            if key
                .cipher
                .decrypt_inout_detached(&nonce, &aad, (&mut plain[..]).into(), &tag)
                .is_ok()
            {
                let data = serde_json::from_slice::<Map<String, Value>>(&plain)
                    .map_err(|err| Error::decode(id, err))?;
                return Ok((data, position));
            }
        }
        Err(fail(SealError::Forged))
    }
}

/// The associated data: a label, the blob's header and the session id, so a blob opens only
/// for the id it was sealed for.
fn associated_data(id: &SessionId, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + header.len() + id.as_str().len());
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(header);
    aad.extend_from_slice(id.as_str().as_bytes());
    aad
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing({} keys, <redacted>)", self.keys.len())
    }
}

/// A store that seals each session's data with XChaCha20-Poly1305 before the wrapped store
/// sees it, and opens it on the way back.
///
/// - **What the backend holds**: the data as one field, [`SEALED_FIELD`], whose value is
///   URL-safe base64 of a format byte, the sealing key's fingerprint, a random 192-bit nonce,
///   the ciphertext and the tag. The expiry and the version stay in the clear, so expiry,
///   [`touch`](SessionStore::touch), [`len`](SessionStore::len),
///   [`delete_expired`](SessionStore::delete_expired) and compare-and-set work unchanged.
/// - **Bound to the id**: the session id is authenticated with the data, so a ciphertext
///   copied to another session's id does not open.
/// - **Failures**: a tampered or swapped ciphertext, a key that is not in the ring and data
///   that was never sealed are each an [`Error::Decode`] for that session, whose source is a
///   [`SealError`]. Nothing panics, and no error or `Debug` output contains a key.
/// - **Rotation**: see [`KeyRing`]. Every write seals with the ring's first key.
/// - **Not hidden**: which sessions exist, when they expire, how often they are written, and
///   the data's size (the sealed form is 4/3 of the JSON plus 60 bytes).
///
/// ```
/// # #[cfg(feature = "memory")]
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use session_stores::{MemoryStore, Session, SessionId, SessionStore};
/// use session_stores::wrappers::{encrypted::{Encrypted, KeyRing}, key::Key};
///
/// // In an application: KeyRing::from_env("SESSION_KEYS")?
/// let ring = KeyRing::new([Key::generate().unwrap()]).unwrap();
/// let store = Encrypted::new(MemoryStore::new(1000), ring);
///
/// let id = SessionId::generate();
/// let mut session = Session::new(Duration::from_secs(60));
/// session.insert("email", "ada@example.com").unwrap();
/// store.set(&id, &session).await.unwrap();
/// assert_eq!(store.get(&id).await.unwrap().unwrap().data(), session.data());
///
/// let raw = store.inner().get(&id).await.unwrap().unwrap();
/// assert!(!serde_json::to_string(raw.data()).unwrap().contains("ada@"));
/// # });
/// ```
pub struct Encrypted<S> {
    inner: S,
    ring: Arc<KeyRing>,
}

impl<S: Clone> Clone for Encrypted<S> {
    fn clone(&self) -> Self {
        Encrypted {
            inner: self.inner.clone(),
            ring: Arc::clone(&self.ring),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Encrypted<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encrypted")
            .field("inner", &self.inner)
            .field("ring", &self.ring)
            .finish()
    }
}

impl<S> Encrypted<S> {
    /// Wraps `inner`, sealing with `ring`'s first key.
    pub fn new(inner: S, ring: KeyRing) -> Self {
        Encrypted {
            inner,
            ring: Arc::new(ring),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The key ring.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    fn sealed(&self, id: &SessionId, session: &Session) -> Result<Session> {
        let data = self.ring.seal(id, session.data())?;
        // The owner stays readable: the backend's owner index needs it.
        Ok(
            Session::from_parts(data, session.expires_at_millis(), session.version())
                .with_owner(session.owner().cloned()),
        )
    }
}

impl<S: SessionStore> Encrypted<S> {
    /// Re-seals session `id` with the ring's current key now, if it was sealed with an older
    /// one, with a compare-and-set so that a concurrent write is never overwritten. Returns
    /// whether this call rewrote it (false when it is absent, already current, or was
    /// written concurrently, which also re-sealed it). The session's version advances.
    pub async fn reseal(&self, id: &SessionId) -> Result<bool> {
        let Some((session, position)) = self.open_stored(id).await? else {
            return Ok(false);
        };
        if position == 0 {
            return Ok(false);
        }
        let version = session.version();
        match self.set_if_version(id, &session, version).await {
            Ok(_) => Ok(true),
            Err(err) if err.is_conflict() => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Reads and opens session `id`, with the position in the ring of the key that opened it.
    async fn open_stored(&self, id: &SessionId) -> Result<Option<(Session, usize)>> {
        let Some(stored) = self.inner.get(id).await? else {
            return Ok(None);
        };
        let owner = stored.owner().cloned();
        let (sealed, expires_at, version) = stored.into_parts();
        let (data, position) = self.ring.open(id, &sealed)?;
        Ok(Some((
            Session::from_parts(data, expires_at, version).with_owner(owner),
            position,
        )))
    }

    /// Whether the inner store lists sessions under ids other than those this wrapper
    /// sealed them with (a `HashedIds` inside): then their data cannot be opened from a
    /// listing.
    fn lists_foreign_ids(&self) -> bool {
        self.inner.capabilities().lists_stored_ids
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<S: SessionStore> SessionStore for Encrypted<S> {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        Ok(self.open_stored(id).await?.map(|(session, _)| session))
    }
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        let sealed = self.sealed(id, session)?;
        self.inner.set(id, &sealed).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        self.inner.touch(id, expires_at).await
    }
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let sealed = self.sealed(id, session)?;
        self.inner.create(id, &sealed).await
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        let sealed = self.sealed(id, session)?;
        self.inner.set_if_version(id, &sealed, expected).await
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
    /// Lists the owner's sessions, opening their data when asked. Over a store that lists
    /// stored ids (`HashedIds` inside this wrapper) the data was sealed under ids the listing
    /// does not give, so asking for data is [`Error::Unsupported`]:
    /// put `HashedIds` outside `Encrypted`, as [`connect`](crate::connect()) does.
    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        if with_data && self.lists_foreign_ids() {
            return Err(Error::Unsupported {
                operation: "sessions_of with data under HashedIds",
            });
        }
        let mut listed = self.inner.sessions_of(owner, with_data).await?;
        for entry in &mut listed {
            if let Some(sealed) = entry.data.take() {
                entry.data = Some(self.ring.open(&entry.id, &sealed)?.0);
            }
        }
        Ok(listed)
    }
    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        self.inner.destroy_owner(owner, except).await
    }
    /// A scan of the inner store with each session opened. Over a store that lists stored
    /// ids (`HashedIds` inside this wrapper) the sessions cannot be opened:
    /// [`Error::Unsupported`], as for
    /// [`sessions_of`](Self::sessions_of).
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        if self.lists_foreign_ids() {
            return Err(Error::Unsupported {
                operation: "scan under HashedIds",
            });
        }
        let page = self.inner.scan(cursor, limit).await?;
        let mut opened = Vec::with_capacity(page.sessions.len());
        for (id, stored) in page.sessions {
            let owner = stored.owner().cloned();
            let (sealed, expires_at, version) = stored.into_parts();
            let (data, _) = self.ring.open(&id, &sealed)?;
            let session = Session::from_parts(data, expires_at, version).with_owner(owner);
            opened.push((id, session));
        }
        Ok(ScanPage::new(opened, page.next))
    }
    /// The inner store's, except that owners are not declared over a store that lists
    /// stored ids (see [`sessions_of`](Self::sessions_of)).
    fn capabilities(&self) -> Capabilities {
        let inner = self.inner.capabilities();
        inner
            .with_owners(inner.owners && !inner.lists_stored_ids)
            .with_scan(inner.scan && !inner.lists_stored_ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn ring(keys: &[&Key]) -> KeyRing {
        KeyRing::new(keys.iter().map(|k| (*k).clone())).unwrap()
    }

    fn data() -> Map<String, Value> {
        let mut data = Map::new();
        data.insert("email".into(), Value::from("ada@example.com"));
        data.insert("n".into(), Value::from(42));
        data
    }

    fn seal_error(err: &Error) -> SealError {
        assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
        let source = std::error::Error::source(err).expect("a source");
        *source.downcast_ref::<SealError>().expect("a SealError")
    }

    #[test]
    fn sealing_round_trips_and_hides_the_data() {
        let key = Key::generate().unwrap();
        let ring = ring(&[&key]);
        let id = SessionId::generate();
        let sealed = ring.seal(&id, &data()).unwrap();
        assert_eq!(sealed.len(), 1);
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(!text.contains("ada@"), "{text}");
        assert!(!text.contains(&key.to_hex()), "{text}");
        assert_eq!(ring.open(&id, &sealed).unwrap(), (data(), 0));
        // Random nonces: the same data seals differently each time.
        assert_ne!(sealed, ring.seal(&id, &data()).unwrap());
    }

    #[test]
    fn a_blob_opens_only_for_its_own_id() {
        let ring = ring(&[&Key::generate().unwrap()]);
        let id = SessionId::generate();
        let sealed = ring.seal(&id, &data()).unwrap();
        let err = ring.open(&SessionId::generate(), &sealed).unwrap_err();
        assert_eq!(seal_error(&err), SealError::Forged);
    }

    #[test]
    fn every_altered_byte_is_refused() {
        let ring = ring(&[&Key::generate().unwrap()]);
        let id = SessionId::generate();
        let sealed = ring.seal(&id, &data()).unwrap();
        let blob = URL_SAFE_NO_PAD
            .decode(sealed[SEALED_FIELD].as_str().unwrap())
            .unwrap();
        for i in 0..blob.len() {
            let mut altered = blob.clone();
            altered[i] ^= 0x01;
            let mut map = Map::new();
            map.insert(SEALED_FIELD.into(), URL_SAFE_NO_PAD.encode(&altered).into());
            let err = ring.open(&id, &map).unwrap_err();
            let expected = match i {
                0 => SealError::NotSealed,
                1..=4 => SealError::UnknownKey,
                _ => SealError::Forged,
            };
            assert_eq!(seal_error(&err), expected, "byte {i}");
        }
        let mut map = Map::new();
        map.insert(
            SEALED_FIELD.into(),
            URL_SAFE_NO_PAD.encode(&blob[..blob.len() - 1]).into(),
        );
        assert_eq!(
            seal_error(&ring.open(&id, &map).unwrap_err()),
            SealError::Forged
        );
    }

    #[test]
    fn unsealed_or_malformed_data_is_not_sealed() {
        let ring = ring(&[&Key::generate().unwrap()]);
        let id = SessionId::generate();
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"email": "ada@example.com"}),
            serde_json::json!({"sealed": 42}),
            serde_json::json!({"sealed": "!!!not base64"}),
            serde_json::json!({"sealed": "AQID"}),
            serde_json::json!({"sealed": "AQID", "other": 1}),
        ] {
            let Value::Object(map) = bad else {
                unreachable!()
            };
            let err = ring.open(&id, &map).unwrap_err();
            assert_eq!(seal_error(&err), SealError::NotSealed, "{map:?}");
            assert!(err.to_string().contains(id.hint().as_str()));
        }
    }

    #[test]
    fn rotation_opens_old_keys_and_seals_with_the_first() {
        let old = Key::generate().unwrap();
        let new = Key::generate().unwrap();
        let id = SessionId::generate();
        let sealed_old = ring(&[&old]).seal(&id, &data()).unwrap();
        let rotated = ring(&[&new, &old]);
        assert_eq!(rotated.open(&id, &sealed_old).unwrap(), (data(), 1));
        let resealed = rotated.seal(&id, &data()).unwrap();
        assert_eq!(ring(&[&new]).open(&id, &resealed).unwrap(), (data(), 0));
        let err = ring(&[&new]).open(&id, &sealed_old).unwrap_err();
        assert_eq!(seal_error(&err), SealError::UnknownKey);
    }

    #[test]
    fn an_empty_ring_is_a_config_error_and_debug_hides_keys() {
        let err = KeyRing::new(Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let key = Key::generate().unwrap();
        let text = format!("{:?}", Encrypted::new((), ring(&[&key])));
        assert!(!text.contains(&key.to_hex()), "{text}");
        assert!(text.contains("1 keys"), "{text}");
    }

    #[test]
    fn over_deep_data_is_an_encode_error() {
        let ring = ring(&[&Key::generate().unwrap()]);
        let mut value = Value::Null;
        for _ in 0..crate::MAX_NESTING + 5 {
            value = Value::Array(vec![value]);
        }
        let mut map = Map::new();
        map.insert("deep".into(), value);
        let err = ring.seal(&SessionId::generate(), &map).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Encode);
    }

    #[test]
    fn a_ring_tells_whether_it_holds_a_key() {
        let (a, b, c) = (
            Key::generate().unwrap(),
            Key::generate().unwrap(),
            Key::generate().unwrap(),
        );
        let both = ring(&[&a, &b]);
        assert!(both.holds(&a));
        assert!(both.holds(&b));
        assert!(!both.holds(&c));
        assert!(a.same_as(&a.clone()));
        assert!(!a.same_as(&b));
    }
}
