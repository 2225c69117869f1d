//! [`Encrypted`]: session data sealed with XChaCha20-Poly1305 under a [`KeyRing`], bound to
//! its session id.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::{AeadInOut, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::session::{Owner, Session, SessionId, check_nesting};
use crate::store::{
    Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore, Undecodable,
};
use crate::wrappers::key::{Key, keys_from_env};
use crate::wrappers::owners::{OwnerMac, destroy_across, list_across};

/// The one data key of a sealed session, as the wrapped store holds it.
pub const SEALED_FIELD: &str = "sealed";

/// The first byte of a sealed blob: the format. A later format gets a new number, and this
/// version opens every format it knows.
///
/// - 1: bound to the session id only (what earlier releases wrote; still opened).
/// - 2: also bound to the owner, the wrapper's context label and a latest expiry, which the
///   header carries.
/// - 3: as 2, bound to the owner the wrapped store keeps (a keyed hash of the real one),
///   with the real owner sealed in front of the data (one length byte, then its bytes).
const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;
const FORMAT_V3: u8 = 3;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Format byte, key id, nonce.
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// Format 2's (and 3's) header: format 1's, then the latest expiry (milliseconds,
/// big-endian `i64`).
const HEADER_V2_LEN: usize = HEADER_LEN + 8;
/// Domain separation for the associated data and the key ids.
const AAD_LABEL: &[u8] = b"session-stores sealed session v1\0";
const AAD_LABEL_V2: &[u8] = b"session-stores sealed session v2\0";

/// What a sealed session is bound to, besides its key: a blob opens only where all of it is
/// as it was sealed.
#[derive(Clone, Copy)]
struct Bound<'a> {
    id: &'a SessionId,
    /// The session's owner, as the wrapped store keeps it (format 3: its keyed hash).
    owner: Option<&'a Owner>,
    /// The wrapper's context label ([`Encrypted::with_context`]).
    context: &'a str,
}
const KEY_ID_LABEL: &[u8] = b"session-stores key id v1\0";
/// The label deriving a ring key's owner hash key from it.
const OWNER_KEY_LABEL: &[u8] = b"session-stores Encrypted owner key v1";
/// What an owner hashed by this wrapper starts with.
const OWNER_PREFIX: &str = "oe.";

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
    /// copied from another session's id; or (format 2) the session's owner was changed, or
    /// it was sealed under another context label.
    Forged,
    /// Its expiry is later than the latest one sealed with it (see
    /// [`Encrypted::with_max_lifetime`]): someone with write access to the backend, but not
    /// the keys, extended it.
    ExpiryBeyondSeal,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SealError::NotSealed => "the stored data is not a sealed session",
            SealError::UnknownKey => "the session was sealed with a key that is not in the key ring",
            SealError::Forged => {
                "the sealed session does not authenticate (altered, truncated, moved from another session id, re-owned, or from another context)"
            }
            SealError::ExpiryBeyondSeal => {
                "the session's expiry is later than the latest expiry sealed with it (changed outside this wrapper)"
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
    /// Hides owners: keyed with a key derived from this one.
    owners: OwnerMac,
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
                    owners: OwnerMac::derive(key.as_bytes(), OWNER_KEY_LABEL),
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

    /// Seals `owner` and `data` for `bound` with the first key (format 3), with
    /// `latest_expiry` (ms) in the header.
    fn seal(
        &self,
        bound: Bound<'_>,
        latest_expiry: i64,
        owner: Option<&Owner>,
        data: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        self.seal_as(FORMAT_V3, bound, latest_expiry, owner, data)
    }

    /// [`seal`](Self::seal) in `format` (2 or 3; 2 leaves `owner` out): tests write format
    /// 2, as the previous release did.
    fn seal_as(
        &self,
        format: u8,
        bound: Bound<'_>,
        latest_expiry: i64,
        owner: Option<&Owner>,
        data: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let id = bound.id;
        check_nesting(id, data)?;
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|err| Error::encode(id, err))?;
        let mut blob = Vec::with_capacity(HEADER_V2_LEN + 256 + TAG_LEN);
        blob.push(format);
        blob.extend_from_slice(&key.id);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&latest_expiry.to_be_bytes());
        if format == FORMAT_V3 {
            let owner = owner.map_or("", Owner::as_str).as_bytes();
            // Owners are at most 128 bytes, and never empty: 0 stands for none.
            let owner_len = u8::try_from(owner.len())
                .map_err(|_| Error::encode(id, "the owner is too long to seal"))?;
            blob.push(owner_len);
            blob.extend_from_slice(owner);
        }
        serde_json::to_writer(&mut blob, data).map_err(|err| Error::encode(id, err))?;
        let aad = associated_data(bound, &blob[..HEADER_V2_LEN]);
        let tag = key
            .cipher
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                &aad,
                (&mut blob[HEADER_V2_LEN..]).into(),
            )
            .map_err(|_| Error::encode(id, "the session is too large to seal"))?;
        blob.extend_from_slice(&tag);
        let mut sealed = Map::with_capacity(1);
        sealed.insert(
            SEALED_FIELD.to_owned(),
            Value::String(URL_SAFE_NO_PAD.encode(&blob)),
        );
        Ok(sealed)
    }

    /// Opens what [`seal`](KeyRing::seal) made for `bound`, whose stored expiry is
    /// `expires_at` (ms); also returns the position in the ring of the key that opened it
    /// and the blob's format.
    fn open(
        &self,
        bound: Bound<'_>,
        expires_at: i64,
        sealed: &Map<String, Value>,
    ) -> Result<Opened> {
        let id = bound.id;
        let fail = |why: SealError| Error::decode(id, why);
        let text = match (sealed.len(), sealed.get(SEALED_FIELD)) {
            (1, Some(Value::String(text))) => text,
            _ => return Err(fail(SealError::NotSealed)),
        };
        let mut blob = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| fail(SealError::NotSealed))?;
        let header_len = match blob.first() {
            Some(&FORMAT_V1) => HEADER_LEN,
            Some(&FORMAT_V2 | &FORMAT_V3) => HEADER_V2_LEN,
            _ => return Err(fail(SealError::NotSealed)),
        };
        let format = blob[0];
        if blob.len() < header_len + TAG_LEN {
            return Err(fail(SealError::NotSealed));
        }
        let (header, rest) = blob.split_at_mut(header_len);
        let (ciphertext, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let tag = Tag::try_from(&tag[..]).map_err(|_| fail(SealError::NotSealed))?;
        let key_id = &header[1..1 + KEY_ID_LEN];
        let nonce = XNonce::try_from(&header[1 + KEY_ID_LEN..HEADER_LEN])
            .map_err(|_| fail(SealError::NotSealed))?;
        let aad = match format {
            FORMAT_V1 => associated_data_v1(id, header),
            _ => associated_data(bound, header),
        };
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
                let mut latest_expiry = None;
                if format != FORMAT_V1 {
                    let mut latest = [0u8; 8];
                    latest.copy_from_slice(&header[HEADER_LEN..HEADER_V2_LEN]);
                    let latest = i64::from_be_bytes(latest);
                    if expires_at > latest {
                        return Err(fail(SealError::ExpiryBeyondSeal));
                    }
                    latest_expiry = (latest != i64::MAX).then_some(latest);
                }
                let (owner, json) = match format {
                    FORMAT_V3 => {
                        let (owner, json) = sealed_owner(&plain)
                            .ok_or_else(|| Error::decode(id, "the sealed owner is malformed"))?;
                        (Some(owner), json)
                    }
                    _ => (None, &plain[..]),
                };
                let data = serde_json::from_slice::<Map<String, Value>>(json)
                    .map_err(|err| Error::decode(id, err))?;
                return Ok(Opened {
                    data,
                    owner,
                    position,
                    format,
                    latest_expiry,
                });
            }
        }
        Err(fail(SealError::Forged))
    }
}

#[cfg(test)]
impl KeyRing {
    /// [`seal`](KeyRing::seal) bound to `id` alone, with no latest expiry.
    fn seal_for(&self, id: &SessionId, data: &Map<String, Value>) -> Result<Map<String, Value>> {
        let bound = Bound {
            id,
            owner: None,
            context: "",
        };
        self.seal(bound, i64::MAX, None, data)
    }

    /// [`open`](KeyRing::open) of what [`seal_for`](KeyRing::seal_for) made: the data and
    /// the key's position.
    fn open_for(
        &self,
        id: &SessionId,
        sealed: &Map<String, Value>,
    ) -> Result<(Map<String, Value>, usize)> {
        let bound = Bound {
            id,
            owner: None,
            context: "",
        };
        let opened = self.open(bound, 0, sealed)?;
        Ok((opened.data, opened.position))
    }
}

/// The owner sealed in front of format 3's data, and the data's bytes after it; `None` if
/// malformed.
fn sealed_owner(plain: &[u8]) -> Option<(Option<Owner>, &[u8])> {
    let (&len, rest) = plain.split_first()?;
    if len == 0 {
        return Some((None, rest));
    }
    let (owner, json) = rest.split_at_checked(usize::from(len))?;
    let owner = Owner::new(std::str::from_utf8(owner).ok()?).ok()?;
    Some((Some(owner), json))
}

/// What [`KeyRing::open`] found.
struct Opened {
    data: Map<String, Value>,
    /// Format 3: the sealed (real) owner. Earlier formats: `None`, the owner is the stored one.
    owner: Option<Option<Owner>>,
    /// The position in the ring of the key that opened it.
    position: usize,
    /// The blob's format.
    format: u8,
    /// The latest expiry sealed with it (format 2), `None` for none.
    latest_expiry: Option<i64>,
}

/// Format 1's associated data: a label, the blob's header and the session id, so a blob
/// opens only for the id it was sealed for.
fn associated_data_v1(id: &SessionId, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + header.len() + id.as_str().len());
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(header);
    aad.extend_from_slice(id.as_str().as_bytes());
    aad
}

/// Format 2's associated data: a label, the header (with the latest expiry), then the
/// context label, the owner (or its absence) and the id, each but the last length-prefixed
/// so that no two bindings give the same bytes.
fn associated_data(bound: Bound<'_>, header: &[u8]) -> Vec<u8> {
    let owner = bound.owner.map(Owner::as_str);
    let mut aad = Vec::with_capacity(
        AAD_LABEL_V2.len()
            + header.len()
            + 9
            + bound.context.len()
            + owner.map_or(0, str::len)
            + bound.id.as_str().len(),
    );
    // Context labels and owners are far below 4 GiB (owners: at most 128 bytes).
    aad.extend_from_slice(AAD_LABEL_V2);
    aad.extend_from_slice(header);
    aad.extend_from_slice(&(bound.context.len() as u32).to_be_bytes());
    aad.extend_from_slice(bound.context.as_bytes());
    match owner {
        None => aad.push(0),
        Some(owner) => {
            aad.push(1);
            aad.extend_from_slice(&(owner.len() as u32).to_be_bytes());
            aad.extend_from_slice(owner.as_bytes());
        }
    }
    aad.extend_from_slice(bound.id.as_str().as_bytes());
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
/// - **Owners sealed**: the wrapped store indexes each owned session under a keyed hash of
///   its [`Owner`], `oe.<64 hexadecimal digits>` ([`stored_owner`](Encrypted::stored_owner);
///   a key derived from the sealing key, and the context label), and the real owner is
///   sealed with the data: a dump names nobody. [`sessions_of`](SessionStore::sessions_of)
///   and [`destroy_owner`](SessionStore::destroy_owner) take the real owner and look under
///   its hash for each key of the ring and under the plain owner (sessions that earlier
///   releases sealed, until their next write or [`reseal`](Encrypted::reseal)): one listing
///   of the wrapped store per form.
/// - **Bound to the id, the owner and the store**: the session id, its stored owner and the
///   wrapper's [context label](Encrypted::with_context) are authenticated with the data, so
///   a ciphertext copied to another session's id or another application that shares the
///   keys does not open, and a session a backend writer re-owned (so that `destroy_owner`
///   would miss it) is a [`SealError::Forged`] decode error. With a
///   [maximum lifetime](Encrypted::with_max_lifetime), the latest expiry is sealed too, and
///   a session extended past it in the backend is [`SealError::ExpiryBeyondSeal`].
/// - **Not bound: the version, and the past.** A backend writer can put back an older
///   sealed value of the same session (a restored backup, a replayed row): it opens, as the
///   data it held then. Keep what must never go back (a logout, a permission revoked, a
///   counter) in your own database rather than in the session, and bound how old a value
///   can be with [`with_max_lifetime`](Encrypted::with_max_lifetime).
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
    /// Bound into every seal: a blob sealed under another label does not open.
    context: Arc<str>,
    /// The longest a session may live past its last write, sealed with it.
    max_lifetime: Option<std::time::Duration>,
}

impl<S: Clone> Clone for Encrypted<S> {
    fn clone(&self) -> Self {
        Encrypted {
            inner: self.inner.clone(),
            ring: Arc::clone(&self.ring),
            context: Arc::clone(&self.context),
            max_lifetime: self.max_lifetime,
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
            context: Arc::from(""),
            max_lifetime: None,
        }
    }

    /// Binds every session this wrapper seals to `label` (say, the application and the
    /// store's purpose): a sealed session copied into another store or application that
    /// shares the keys but not the label does not open there ([`SealError::Forged`]).
    /// Sessions sealed under another label, or before this was set, become unreadable, so
    /// choose it once. Default: the empty label.
    pub fn with_context(mut self, label: impl Into<String>) -> Self {
        self.context = Arc::from(label.into());
        self
    }

    /// Seals with every write the latest expiry the session may reach: its expiry, or
    /// `lifetime` after the write if that is later. A session whose stored expiry is later
    /// than that (someone with write access to the backend, but not the keys, extended it)
    /// is a [`Error::Decode`] with [`SealError::ExpiryBeyondSeal`], and this wrapper's
    /// [`touch`](SessionStore::touch) moves an expiry no further than it (reading the
    /// session first). Without it (the default) the expiry is not bound: a backend writer
    /// can make a session live longer.
    pub fn with_max_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.max_lifetime = Some(lifetime);
        self
    }

    fn bound<'a>(&'a self, id: &'a SessionId, owner: Option<&'a Owner>) -> Bound<'a> {
        Bound {
            id,
            owner,
            context: &self.context,
        }
    }

    /// The latest expiry sealed with `session` when written now.
    fn latest_expiry(&self, session: &Session) -> i64 {
        match self.max_lifetime {
            None => i64::MAX,
            Some(lifetime) => {
                let cap = crate::session::now_millis()
                    .saturating_add(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX));
                cap.max(session.expires_at_millis())
            }
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
        let stored_owner = session.owner().map(|owner| self.stored_owner(owner));
        let bound = self.bound(id, stored_owner.as_ref());
        let data = self.ring.seal(
            bound,
            self.latest_expiry(session),
            session.owner(),
            session.data(),
        )?;
        // The backend's owner index sees the keyed hash, bound to the data: changed in the
        // backend, the session does not open.
        Ok(
            Session::from_parts(data, session.expires_at_millis(), session.version())
                .with_owner(stored_owner)
                .with_absolute_expiry_millis(session.absolute_expiry_millis()),
        )
    }

    /// The owner under which the wrapped store indexes the sessions of `owner` sealed with
    /// the ring's current key: `oe.<64 hexadecimal digits>`, a keyed hash (under a key
    /// derived from the ring key, and the [context label](Self::with_context)). For operators
    /// who need to find one owner's sessions in the backend.
    pub fn stored_owner(&self, owner: &Owner) -> Owner {
        self.ring.keys[0]
            .owners
            .hidden(OWNER_PREFIX, &self.context, owner)
    }

    /// Every owner the wrapped store may index the sessions of `owner` under, oldest form
    /// first: the plain owner (earlier releases), then its hash under each ring key, the
    /// current key last.
    fn owner_forms(&self, owner: &Owner) -> Vec<Owner> {
        let mut forms = vec![owner.clone()];
        for key in self.ring.keys.iter().rev() {
            let hidden = key.owners.hidden(OWNER_PREFIX, &self.context, owner);
            if !forms.contains(&hidden) {
                forms.push(hidden);
            }
        }
        forms
    }
}

impl<S: SessionStore> Encrypted<S> {
    /// Re-seals session `id` with the ring's current key now, if it was sealed with an older
    /// one (or in format 1, which binds neither the owner nor the expiry), with a compare-and-set so that a concurrent write is never overwritten. Returns
    /// whether this call rewrote it (false when it is absent, already current, or was
    /// written concurrently, which also re-sealed it). The session's version advances.
    pub async fn reseal(&self, id: &SessionId) -> Result<bool> {
        let Some((session, opened)) = self.open_stored(id).await? else {
            return Ok(false);
        };
        // Sealed with the current key in the current format already.
        if opened.position == 0 && opened.format == FORMAT_V3 {
            return Ok(false);
        }
        let version = session.version();
        match self.set_if_version(id, &session, version).await {
            Ok(_) => Ok(true),
            Err(err) if err.is_conflict() => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Reads and opens session `id`, with what opening it found.
    async fn open_stored(&self, id: &SessionId) -> Result<Option<(Session, Opened)>> {
        let Some(stored) = self.inner.get(id).await? else {
            return Ok(None);
        };
        self.open_session(id, stored).map(Some)
    }

    /// Opens `stored`, the inner store's session `id`.
    fn open_session(&self, id: &SessionId, stored: Session) -> Result<(Session, Opened)> {
        let owner = stored.owner().cloned();
        let (absolute, rotated) = (stored.absolute_expiry_millis(), stored.is_rotated());
        let (sealed, expires_at, version) = stored.into_parts();
        let mut opened = self
            .ring
            .open(self.bound(id, owner.as_ref()), expires_at, &sealed)?;
        let data = std::mem::take(&mut opened.data);
        let owner = opened.owner.take().unwrap_or(owner);
        Ok((
            Session::from_parts(data, expires_at, version)
                .with_owner(owner)
                .with_absolute_expiry_millis(absolute)
                .with_rotated(rotated),
            opened,
        ))
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
    /// With a [maximum lifetime](Encrypted::with_max_lifetime), reads the session first and
    /// moves its expiry no later than the latest one sealed with it.
    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        if self.max_lifetime.is_none() {
            return self.inner.touch(id, expires_at).await;
        }
        let Some(stored) = self.inner.get(id).await? else {
            return Ok(false);
        };
        let (_, opened) = self.open_session(id, stored)?;
        let wanted = crate::session::to_millis(expires_at);
        let at = match opened.latest_expiry {
            Some(latest) if wanted > latest => crate::session::from_millis(latest),
            _ => expires_at,
        };
        self.inner.touch(id, at).await
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
        let forms = self.owner_forms(owner);
        let listed = list_across(&self.inner, &forms, with_data).await?;
        let mut opened = Vec::with_capacity(listed.len());
        for (form, mut entry) in listed {
            if let Some(sealed) = entry.data.take() {
                let bound = self.bound(&entry.id, Some(&forms[form]));
                match self.ring.open(bound, entry.expires_at_millis, &sealed) {
                    Ok(open) => entry.data = Some(open.data),
                    // Listed as undecodable (see the contract): a seal that does not open.
                    Err(err) => {
                        entry = OwnedSession::undecodable(
                            entry.id,
                            entry.expires_at_millis,
                            entry.version,
                            err,
                        );
                    }
                }
            }
            opened.push(entry);
        }
        Ok(opened)
    }
    /// Ends the sessions indexed under each of the owner's forms (its hash under each ring
    /// key, and the plain owner earlier releases stored).
    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        destroy_across(&self.inner, &self.owner_forms(owner), except).await
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
        // What the inner store could not decode, and each seal that does not open: reported,
        // and the scan goes on.
        let mut undecodable = page.undecodable;
        for (id, stored) in page.sessions {
            match self.open_session(&id, stored) {
                Ok((session, _)) => opened.push((id, session)),
                Err(err) => undecodable.push(Undecodable::new(Some(id), err)),
            }
        }
        Ok(ScanPage::new(opened, page.next).with_undecodable(undecodable))
    }
    /// Rotates in the wrapped store, then re-seals the moved session for its new id (a
    /// sealed session is bound to its id) with a compare-and-set, before the new id is
    /// returned to anyone. The returned version is the re-sealed one. If the call is dropped
    /// between the two steps, the session under the new id does not open (it reads as
    /// undecodable) until it expires; the old id keeps its grace either way.
    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        let rotation = self.inner.rotate(old, new, grace).await?;
        let Rotation::Moved { version } = rotation else {
            return Ok(rotation);
        };
        let Some(stored) = self.inner.get(new).await? else {
            // Ended since (destroy_owner, expiry): nothing to re-seal.
            return Ok(rotation);
        };
        let (session, _) = self.open_session(old, stored)?;
        let resealed = self.sealed(new, &session)?;
        match self.inner.set_if_version(new, &resealed, version).await {
            Ok(version) => Ok(Rotation::Moved { version }),
            // Written or ended since by someone who holds the new id.
            Err(err) if err.is_conflict() => Ok(rotation),
            Err(err) => Err(err),
        }
    }
    /// Replaces the sealed value in the wrapped store with one that does not open (its
    /// expiry, version and owner kept).
    async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
        let Some(stored) = self.inner.get(id).await? else {
            return Ok(false);
        };
        let mut spoiled = stored.clone();
        spoiled.replace_data(
            [(SEALED_FIELD.to_owned(), Value::from("not a sealed session"))]
                .into_iter()
                .collect(),
        );
        match self
            .inner
            .set_if_version(id, &spoiled, stored.version())
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.is_conflict() => Ok(false),
            Err(err) => Err(err),
        }
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
        let sealed = ring.seal_for(&id, &data()).unwrap();
        assert_eq!(sealed.len(), 1);
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(!text.contains("ada@"), "{text}");
        assert!(!text.contains(&key.to_hex()), "{text}");
        assert_eq!(ring.open_for(&id, &sealed).unwrap(), (data(), 0));
        // Random nonces: the same data seals differently each time.
        assert_ne!(sealed, ring.seal_for(&id, &data()).unwrap());
    }

    #[test]
    fn a_blob_opens_only_for_its_own_id() {
        let ring = ring(&[&Key::generate().unwrap()]);
        let id = SessionId::generate();
        let sealed = ring.seal_for(&id, &data()).unwrap();
        let err = ring.open_for(&SessionId::generate(), &sealed).unwrap_err();
        assert_eq!(seal_error(&err), SealError::Forged);
    }

    #[test]
    fn every_altered_byte_is_refused() {
        let ring = ring(&[&Key::generate().unwrap()]);
        let id = SessionId::generate();
        let sealed = ring.seal_for(&id, &data()).unwrap();
        let blob = URL_SAFE_NO_PAD
            .decode(sealed[SEALED_FIELD].as_str().unwrap())
            .unwrap();
        for i in 0..blob.len() {
            let mut altered = blob.clone();
            altered[i] ^= 0x01;
            let mut map = Map::new();
            map.insert(SEALED_FIELD.into(), URL_SAFE_NO_PAD.encode(&altered).into());
            let err = ring.open_for(&id, &map).unwrap_err();
            let expected = match i {
                // Another format this version knows: the header is in the associated data.
                0 if matches!(altered[0], FORMAT_V1 | FORMAT_V2 | FORMAT_V3) => SealError::Forged,
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
            seal_error(&ring.open_for(&id, &map).unwrap_err()),
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
            let err = ring.open_for(&id, &map).unwrap_err();
            assert_eq!(seal_error(&err), SealError::NotSealed, "{map:?}");
            assert!(err.to_string().contains(id.hint().as_str()));
        }
    }

    #[test]
    fn rotation_opens_old_keys_and_seals_with_the_first() {
        let old = Key::generate().unwrap();
        let new = Key::generate().unwrap();
        let id = SessionId::generate();
        let sealed_old = ring(&[&old]).seal_for(&id, &data()).unwrap();
        let rotated = ring(&[&new, &old]);
        assert_eq!(rotated.open_for(&id, &sealed_old).unwrap(), (data(), 1));
        let resealed = rotated.seal_for(&id, &data()).unwrap();
        assert_eq!(ring(&[&new]).open_for(&id, &resealed).unwrap(), (data(), 0));
        let err = ring(&[&new]).open_for(&id, &sealed_old).unwrap_err();
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
        let err = ring.seal_for(&SessionId::generate(), &map).unwrap_err();
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

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// Sessions the previous release sealed (format 2, the owner in the clear in the
    /// backend's index) are still read with their owner, listed and ended by the real owner,
    /// and move under the owner's hash on their next write (listed once meanwhile).
    #[cfg(feature = "memory")]
    #[test]
    fn owners_stored_in_the_clear_by_format_2_are_still_listed_and_ended() {
        block_on(async {
            let backend = Arc::new(crate::MemoryStore::new(100));
            let key = Key::generate().unwrap();
            let store = Encrypted::new(Arc::clone(&backend), ring(&[&key])).with_context("app");
            let ada = Owner::new("ada@example.com").unwrap();
            let (old, new) = (SessionId::generate(), SessionId::generate());
            // As the previous release wrote it.
            let session = Session::new(std::time::Duration::from_secs(600));
            let bound = store.bound(&old, Some(&ada));
            let sealed = (store.ring)
                .seal_as(FORMAT_V2, bound, i64::MAX, None, &data())
                .unwrap();
            let raw = Session::from_parts(sealed, session.expires_at_millis(), 0)
                .with_owner(Some(ada.clone()));
            backend.set(&old, &raw).await.unwrap();
            let mut owned = session.clone().with_owner(Some(ada.clone()));
            owned.replace_data(data());
            store.set(&new, &owned).await.unwrap();

            let got = store.get(&old).await.unwrap().unwrap();
            assert_eq!((got.owner(), got.data()), (Some(&ada), &data()));
            let listed = store.sessions_of(&ada, true).await.unwrap();
            assert_eq!(listed.len(), 2);
            assert!(listed.iter().all(|entry| entry.data == Some(data())));
            // Rewritten: under the hash now, and listed once.
            let v = store.set(&old, &got).await.unwrap();
            let raw = backend.get(&old).await.unwrap().unwrap();
            assert_eq!(raw.owner(), Some(&store.stored_owner(&ada)));
            assert_eq!(store.sessions_of(&ada, false).await.unwrap().len(), 2);
            assert_eq!(store.get(&old).await.unwrap().unwrap().version(), v);
            // One more in the clear, then "log out everywhere" ends all three.
            let third = SessionId::generate();
            let sealed = (store.ring)
                .seal_as(
                    FORMAT_V2,
                    store.bound(&third, Some(&ada)),
                    i64::MAX,
                    None,
                    &data(),
                )
                .unwrap();
            let clear = Session::from_parts(sealed, session.expires_at_millis(), 0)
                .with_owner(Some(ada.clone()));
            backend.set(&third, &clear).await.unwrap();
            assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 3);
            assert!(store.sessions_of(&ada, false).await.unwrap().is_empty());
            assert_eq!(backend.len().await.unwrap(), 0);
        });
    }

    /// After a key rotation, sessions sealed with the old key are indexed under the owner's
    /// hash for that key: still listed (once) and ended, and moved under the new key's hash
    /// when re-sealed.
    #[cfg(feature = "memory")]
    #[test]
    fn owners_indexed_under_an_old_key_are_listed_and_ended() {
        block_on(async {
            let backend = Arc::new(crate::MemoryStore::new(100));
            let (old_key, new_key) = (Key::generate().unwrap(), Key::generate().unwrap());
            let before = Encrypted::new(Arc::clone(&backend), ring(&[&old_key]));
            let after = Encrypted::new(Arc::clone(&backend), ring(&[&new_key, &old_key]));
            let ada = Owner::new("ada").unwrap();
            assert_ne!(before.stored_owner(&ada), after.stored_owner(&ada));
            let ids: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
            let owned =
                Session::new(std::time::Duration::from_secs(600)).with_owner(Some(ada.clone()));
            for id in &ids[..2] {
                before.set(id, &owned).await.unwrap();
            }
            after.set(&ids[2], &owned).await.unwrap();
            assert_eq!(after.sessions_of(&ada, true).await.unwrap().len(), 3);
            assert!(after.reseal(&ids[0]).await.unwrap());
            let raw = backend.get(&ids[0]).await.unwrap().unwrap();
            assert_eq!(raw.owner(), Some(&after.stored_owner(&ada)));
            assert_eq!(
                after.get(&ids[0]).await.unwrap().unwrap().owner(),
                Some(&ada)
            );
            assert_eq!(after.sessions_of(&ada, false).await.unwrap().len(), 3);
            // The old ring alone no longer sees the re-sealed one.
            assert_eq!(before.sessions_of(&ada, false).await.unwrap().len(), 1);
            assert_eq!(after.destroy_owner(&ada, Some(&ids[1])).await.unwrap(), 2);
            let left = after.sessions_of(&ada, false).await.unwrap();
            assert_eq!(left.len(), 1);
            assert_eq!(left[0].id, ids[1]);
        });
    }

    /// What earlier releases sealed (format 1, bound to the id only) still opens, whatever
    /// the owner, context and expiry, and only for its id.
    #[test]
    fn format_1_blobs_still_open_for_their_id() {
        let key = Key::generate().unwrap();
        let ring = ring(&[&key]);
        let id = SessionId::generate();
        let nonce = [7u8; NONCE_LEN];
        let mut blob = vec![FORMAT_V1];
        blob.extend_from_slice(&ring.keys[0].id);
        blob.extend_from_slice(&nonce);
        serde_json::to_writer(&mut blob, &data()).unwrap();
        let aad = associated_data_v1(&id, &blob[..HEADER_LEN]);
        let tag = ring.keys[0]
            .cipher
            .encrypt_inout_detached(&XNonce::from(nonce), &aad, (&mut blob[HEADER_LEN..]).into())
            .unwrap();
        blob.extend_from_slice(&tag);
        let mut sealed = Map::new();
        sealed.insert(
            SEALED_FIELD.to_owned(),
            Value::String(URL_SAFE_NO_PAD.encode(&blob)),
        );
        let owner = Owner::new("someone").unwrap();
        let bound = Bound {
            id: &id,
            owner: Some(&owner),
            context: "any",
        };
        let opened = ring.open(bound, i64::MAX - 1, &sealed).unwrap();
        assert_eq!(opened.data, data());
        assert_eq!((opened.format, opened.latest_expiry), (FORMAT_V1, None));
        let other = SessionId::generate();
        let err = ring.open_for(&other, &sealed).unwrap_err();
        assert_eq!(seal_error(&err), SealError::Forged);
    }
}
