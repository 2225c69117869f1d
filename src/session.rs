//! [`Session`] (data, expiry, version) and [`SessionId`] (a validated id).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, IdHint, InvalidIdReason, Result};

/// A validated session id.
///
/// A `SessionId` can only hold text that is safe to use as a file name, a Redis key suffix or
/// a bound SQL parameter, so no backend ever has to validate an id again. The rules:
///
/// - 1 to [`SessionId::MAX_LEN`] bytes;
/// - only ASCII letters, digits and `-` `_` `.` `~` `+` `=` (this refuses `/`, `\`, NUL,
///   control characters, whitespace, non-ASCII text and glob metacharacters such as `*`, `?`
///   and `[`);
/// - not exactly `.` or `..`.
///
/// The ids that session middlewares mint (tower-sessions' base64url ids, actix-session's
/// alphanumeric keys, express' uid-safe ids) all fit.
///
/// `Debug` prints only a shortened id, because a session id is a credential. `Display` and
/// [`as_str`](SessionId::as_str) give the whole id, for cookies.
///
/// ```
/// use session_stores::SessionId;
///
/// let id = SessionId::new("Zx81-aB9_q").unwrap();
/// assert_eq!(id.as_str(), "Zx81-aB9_q");
/// assert!(SessionId::new("../../etc/passwd").is_err());
/// assert!(SessionId::new("").is_err());
/// assert_eq!(SessionId::generate().as_str().len(), 32);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// The longest id accepted, in bytes. Chosen so that an id plus a file extension stays
    /// well under the 255-byte file name limit of common file systems.
    pub const MAX_LEN: usize = 128;

    /// Validates `id`. See the type's docs for the rules.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        Self::check(&id)?;
        Ok(SessionId(id))
    }

    /// Checks `id` against the rules without allocating.
    pub fn check(id: &str) -> Result<()> {
        let reason = if id.is_empty() {
            InvalidIdReason::Empty
        } else if id.len() > Self::MAX_LEN {
            InvalidIdReason::TooLong
        } else if id == "." || id == ".." {
            InvalidIdReason::DotSegment
        } else if !id.bytes().all(is_id_byte) {
            InvalidIdReason::ForbiddenChar
        } else {
            return Ok(());
        };
        Err(Error::InvalidId { reason })
    }

    /// A new random id: 192 bits from the operating system's CSPRNG, as 32 characters of
    /// URL-safe base64 (`A-Z a-z 0-9 - _`).
    ///
    /// # Panics
    ///
    /// Only if the operating system cannot supply random bytes at all; see
    /// [`try_generate`](SessionId::try_generate) to handle that as an error.
    pub fn generate() -> Self {
        match Self::try_generate() {
            Ok(id) => id,
            Err(err) => panic!("the OS random number generator failed: {err}"),
        }
    }

    /// Like [`generate`](SessionId::generate), but reports a failing OS random number
    /// generator as an [`Error::Backend`] instead of panicking.
    pub fn try_generate() -> Result<Self> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(|err| Error::Backend {
            operation: "generate id",
            id: None,
            source: Box::new(err),
        })?;
        Ok(SessionId(base64url(&bytes)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned `String`.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The shortened form used in errors and `Debug` output.
    pub fn hint(&self) -> IdHint {
        IdHint::from(self)
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'=')
}

/// URL-safe base64 without padding (`A-Z a-z 0-9 - _`), the base64 crate's.
fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.hint())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        SessionId::new(s)
    }
}

impl TryFrom<String> for SessionId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        SessionId::new(s)
    }
}

impl TryFrom<&str> for SessionId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        SessionId::new(s)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

/// Who a session belongs to: an opaque string chosen by the application, such as a user id.
///
/// Stores that declare [`owners`](crate::Capabilities::owners) keep an index from owner to
/// sessions, so that an application can list a user's sessions ("your devices") and end
/// them all, or all but the current one ("log out everywhere else"), with
/// [`sessions_of`](crate::SessionStore::sessions_of) and
/// [`destroy_owner`](crate::SessionStore::destroy_owner).
///
/// The rules: 1 to [`Owner::MAX_LEN`] bytes of UTF-8 with no control characters. Owners are
/// compared exactly (`Ada` and `ada` are different owners).
///
/// ```
/// use session_stores::Owner;
///
/// let owner = Owner::new("user:42").unwrap();
/// assert_eq!(owner.as_str(), "user:42");
/// assert!(Owner::new("").is_err());
/// assert!(Owner::new("a\nb").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Owner(String);

impl Owner {
    /// The longest owner accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates `owner`. See the type's docs for the rules.
    pub fn new(owner: impl Into<String>) -> Result<Self> {
        let owner = owner.into();
        Self::check(&owner)?;
        Ok(Owner(owner))
    }

    /// Checks `owner` against the rules without allocating.
    pub fn check(owner: &str) -> Result<()> {
        let reason = if owner.is_empty() {
            "it is empty"
        } else if owner.len() > Self::MAX_LEN {
            "it is longer than 128 bytes"
        } else if owner.chars().any(char::is_control) {
            "it contains a control character"
        } else {
            return Ok(());
        };
        Err(Error::InvalidOwner { reason })
    }

    /// The owner as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner({:?})", self.0)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Owner {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Owner {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Owner::new(s)
    }
}

impl TryFrom<String> for Owner {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Owner::new(s)
    }
}

impl TryFrom<&str> for Owner {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Owner::new(s)
    }
}

impl From<Owner> for String {
    fn from(owner: Owner) -> String {
        owner.0
    }
}

/// The current time as milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    to_millis(SystemTime::now())
}

/// `time` as whole milliseconds since the Unix epoch (negative before 1970), saturating at
/// the ends of `i64`. Sub-millisecond parts are truncated toward the past.
pub fn to_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let ms = i64::try_from(before.as_millis()).unwrap_or(i64::MAX);
            // Truncate toward the past: 1.5 ms before the epoch is -2 ms.
            let partial = before.as_nanos() % 1_000_000 != 0;
            (-ms).saturating_sub(i64::from(partial))
        }
    }
}

/// Milliseconds since the Unix epoch as a `SystemTime`, clamped to what `SystemTime` can hold.
pub fn from_millis(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH.checked_add(magnitude).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

/// The largest version a store assigns: the largest 15-digit number. Every version fits a
/// signed 64-bit SQL integer, a Redis value header and a JSON or JavaScript number exactly
/// (it is below 2^53).
pub const MAX_VERSION: u64 = 999_999_999_999_999;

/// A new incarnation's version is drawn from `1..=FRESH_VERSION_SPAN` (2^48), which leaves
/// room for more than 7 * 10^14 later writes before [`MAX_VERSION`].
pub const FRESH_VERSION_SPAN: u64 = 1 << 48;

/// A fresh, unpredictable version for a new incarnation of a session: a write that stores a
/// session where none was live (`create`, or `set`/`set_if_version(.., 0)` over an absent or
/// expired session).
///
/// It is drawn uniformly from `1..=`[`FRESH_VERSION_SPAN`], so a compare-and-set that still
/// holds a version of an earlier incarnation of the same id (destroyed or expired since) fails
/// with [`Error::Conflict`] instead of overwriting the new session, except with a chance of
/// about one in 2^48. Stores call this; it is public for stores of your own.
///
/// The generator is a per-thread SplitMix64 seeded from the standard library's randomly keyed
/// hasher: fast (no system call per write) and never failing. Versions are not secrets: they
/// need to be distinct, not unguessable.
///
/// ```
/// use session_stores::{fresh_version, FRESH_VERSION_SPAN};
///
/// let v = fresh_version();
/// assert!((1..=FRESH_VERSION_SPAN).contains(&v));
/// assert_ne!(v, fresh_version());
/// ```
pub fn fresh_version() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, RandomState};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0x7e55_1075_u64));
    }
    STATE.with(|state| {
        // SplitMix64 (Steele, Lea and Flood, 2014).
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 16) + 1
    })
}

/// The version a write assigns over a live session at `version`: `version + 1`, or a
/// [`fresh_version`] when `version` is 0 (absent) or already [`MAX_VERSION`] or above (which
/// no store assigns; only a hand-edited or corrupt record holds one).
///
/// ```
/// use session_stores::{next_version, MAX_VERSION};
///
/// assert_eq!(next_version(41), 42);
/// assert!(next_version(MAX_VERSION) <= MAX_VERSION);
/// assert!(next_version(0) > 0);
/// ```
pub fn next_version(version: u64) -> u64 {
    if version == 0 || version >= MAX_VERSION {
        fresh_version()
    } else {
        version + 1
    }
}

/// How deeply session data may nest arrays and objects: the data object itself is level 1,
/// so `{"a": {"b": [1]}}` has depth 3. Every store refuses deeper data with
/// [`Error::Encode`] before writing anything, because a JSON parser (serde_json's stops at
/// 128 levels) could not read it back: a session that can be written but never loaded again
/// would be a lost session.
pub const MAX_NESTING: usize = 100;

/// Checks that `data` nests at most [`MAX_NESTING`] levels deep (without recursion, so a
/// depth bomb cannot overflow the stack here). Stores call this before they write; it is
/// public for stores of your own.
pub fn check_nesting(id: &SessionId, data: &Map<String, Value>) -> Result<()> {
    fn is_container(value: &&Value) -> bool {
        matches!(value, Value::Array(_) | Value::Object(_))
    }
    // Only arrays and objects are pushed, so flat data (the usual session) never allocates.
    let mut stack: Vec<(&Value, usize)> = Vec::new();
    stack.extend(data.values().filter(is_container).map(|v| (v, 2)));
    while let Some((value, depth)) = stack.pop() {
        if depth > MAX_NESTING {
            return Err(Error::encode(
                id,
                format!("the session data nests deeper than {MAX_NESTING} levels"),
            ));
        }
        match value {
            Value::Array(items) => {
                stack.extend(items.iter().filter(is_container).map(|c| (c, depth + 1)));
            }
            Value::Object(map) => {
                stack.extend(map.values().filter(is_container).map(|c| (c, depth + 1)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A session: a JSON object of data, an absolute expiry and a version.
///
/// - The **data** is a `serde_json` object. Stores keep it losslessly: what `get` returns is
///   equal to what was written.
/// - The **expiry** is absolute, with millisecond precision (finer parts are truncated when
///   it is set). A store never returns a session whose expiry has passed.
/// - The **version** is assigned by the store on every successful write and is what
///   [`set_if_version`](crate::SessionStore::set_if_version) compares. A session that has
///   never been stored has version 0. A new incarnation of an id starts at an unpredictable
///   [`fresh_version`]; each later write adds one. The version a caller puts in a `Session`
///   is ignored by writes: the store decides it.
///
/// The typed helpers mirror @fastify/session's `session.get(key)` / `session.set(key, value)`:
///
/// ```
/// use std::time::Duration;
/// use session_stores::Session;
///
/// let mut session = Session::new(Duration::from_secs(3600));
/// session.insert("user_id", 42).unwrap();
/// session.insert("roles", ["admin", "editor"]).unwrap();
/// assert_eq!(session.get::<u64>("user_id").unwrap(), Some(42));
/// assert_eq!(session.get::<Vec<String>>("roles").unwrap().unwrap().len(), 2);
/// assert_eq!(session.remove("user_id"), Some(serde_json::json!(42)));
/// assert!(!session.is_expired());
/// ```
///
/// `Debug` shows the keys' count, the expiry and the version, never the data: sessions hold
/// secrets.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    data: Map<String, Value>,
    expires_at: i64,
    #[serde(default)]
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<Owner>,
    /// The absolute deadline, in milliseconds since the Unix epoch, if the session has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    absolute_expiry: Option<i64>,
    /// Read through a rotated id (never stored).
    #[serde(skip)]
    rotated: bool,
}

impl Session {
    /// An empty session that expires `ttl` from now.
    pub fn new(ttl: Duration) -> Self {
        let mut session = Session::with_expiry(UNIX_EPOCH);
        session.expire_in(ttl);
        session
    }

    /// An empty session that expires at `expires_at`.
    pub fn with_expiry(expires_at: SystemTime) -> Self {
        Session {
            data: Map::new(),
            expires_at: to_millis(expires_at),
            version: 0,
            owner: None,
            absolute_expiry: None,
            rotated: false,
        }
    }

    /// An empty session with two lifetimes: it expires `idle` from now unless it is used
    /// again (each use moves the expiry, with a write or a `touch`), and never lives past
    /// `absolute` from now, its [absolute expiry](Session::absolute_expiry), however often it is used.
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_stores::Session;
    ///
    /// let session = Session::with_lifetimes(Duration::from_secs(1800), Duration::from_secs(12 * 3600));
    /// assert!(session.absolute_expiry().unwrap() > session.expires_at());
    /// ```
    pub fn with_lifetimes(idle: Duration, absolute: Duration) -> Self {
        let now = now_millis();
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let absolute = now.saturating_add(millis(absolute));
        let mut session = Session::with_expiry(UNIX_EPOCH);
        session.expires_at = now.saturating_add(millis(idle)).min(absolute);
        session.absolute_expiry = Some(absolute);
        session
    }

    /// A session that has already expired: writing it with a compare-and-set deletes the
    /// stored one only if it is still the version expected. Used by `Migrating` and
    /// `copy_sessions` to take back a copy.
    pub(crate) fn tombstone() -> Session {
        Session::from_parts(Default::default(), now_millis() - 1, 0)
    }

    /// A session from its stored parts: data, expiry in milliseconds since the Unix epoch,
    /// and version, with no owner (add one with [`with_owner`](Session::with_owner)). For
    /// store implementations.
    pub fn from_parts(data: Map<String, Value>, expires_at_millis: i64, version: u64) -> Self {
        Session {
            data,
            expires_at: expires_at_millis,
            version,
            owner: None,
            absolute_expiry: None,
            rotated: false,
        }
    }

    /// Splits the session into data, expiry (milliseconds since the Unix epoch) and version.
    pub fn into_parts(self) -> (Map<String, Value>, i64, u64) {
        (self.data, self.expires_at, self.version)
    }

    /// The data.
    pub fn data(&self) -> &Map<String, Value> {
        &self.data
    }

    /// The data, mutably.
    pub fn data_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.data
    }

    /// Replaces the data, returning the old data.
    pub fn replace_data(&mut self, data: Map<String, Value>) -> Map<String, Value> {
        std::mem::replace(&mut self.data, data)
    }

    /// The value under `key`, deserialized as `T`; `Ok(None)` if there is no such key, and an
    /// error if the value is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, serde_json::Error> {
        self.data
            .get(key)
            .map(|value| T::deserialize(value))
            .transpose()
    }

    /// The raw JSON value under `key`.
    pub fn get_value(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }

    /// Stores `value` under `key`, returning the previous value.
    pub fn insert<T: Serialize>(
        &mut self,
        key: impl Into<String>,
        value: T,
    ) -> Result<Option<Value>, serde_json::Error> {
        let value = serde_json::to_value(value)?;
        Ok(self.data.insert(key.into(), value))
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.data.remove(key)
    }

    /// Whether the data is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The expiry.
    pub fn expires_at(&self) -> SystemTime {
        from_millis(self.expires_at)
    }

    /// The expiry in milliseconds since the Unix epoch.
    pub fn expires_at_millis(&self) -> i64 {
        self.expires_at
    }

    /// Sets the expiry (truncated to the millisecond).
    pub fn set_expires_at(&mut self, expires_at: SystemTime) {
        self.expires_at = to_millis(expires_at);
    }

    /// Sets the expiry in milliseconds since the Unix epoch.
    pub fn set_expires_at_millis(&mut self, expires_at_millis: i64) {
        self.expires_at = expires_at_millis;
    }

    /// Sets the expiry to `ttl` from now.
    pub fn expire_in(&mut self, ttl: Duration) {
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.expires_at = now_millis().saturating_add(ttl);
    }

    /// Whether the expiry has passed.
    pub fn is_expired(&self) -> bool {
        self.is_expired_at(now_millis())
    }

    /// Whether the session is expired at `now_millis` (milliseconds since the Unix epoch). A
    /// session is live while `now < expires_at`.
    pub fn is_expired_at(&self, now_millis: i64) -> bool {
        self.expires_at <= now_millis
    }

    /// The version: 0 for a session that was never stored, otherwise the version the store
    /// assigned at its last write.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Sets the version. Stores use this when they load a session; writes ignore it.
    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    /// This session with `version`. Stores use this when they load a session.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// The session's owner, if it has one. See [`Owner`].
    ///
    /// A write stores the owner with the session, and a session read back carries it, so a
    /// session that is loaded, changed and written keeps its owner until the application
    /// changes it; writing a session with no owner removes the owner.
    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_ref()
    }

    /// Sets (or, with `None`, removes) the owner, returning the previous one.
    pub fn set_owner(&mut self, owner: Option<Owner>) -> Option<Owner> {
        std::mem::replace(&mut self.owner, owner)
    }

    /// This session with `owner` (or none). Stores use this when they load a session.
    pub fn with_owner(mut self, owner: Option<Owner>) -> Self {
        self.owner = owner;
        self
    }

    /// The absolute deadline, if the session has one: the time past which no write and no
    /// `touch` moves its expiry, in stores that declare
    /// [`absolute_expiry`](crate::Capabilities::absolute_expiry). See
    /// [lifetimes](crate::SessionStore#contract).
    pub fn absolute_expiry(&self) -> Option<SystemTime> {
        self.absolute_expiry.map(from_millis)
    }

    /// The absolute deadline in milliseconds since the Unix epoch, if there is one.
    pub fn absolute_expiry_millis(&self) -> Option<i64> {
        self.absolute_expiry
    }

    /// Sets (or, with `None`, removes) the absolute deadline, truncated to the millisecond.
    /// A store keeps the earlier of this and the deadline it already holds for the session:
    /// a write never removes or postpones a stored deadline.
    pub fn set_absolute_expiry(&mut self, deadline: Option<SystemTime>) {
        self.absolute_expiry = deadline.map(to_millis);
    }

    /// Sets (or removes) the absolute deadline in milliseconds since the Unix epoch.
    pub fn set_absolute_expiry_millis(&mut self, absolute_expiry_millis: Option<i64>) {
        self.absolute_expiry = absolute_expiry_millis;
    }

    /// This session with the absolute deadline `absolute_expiry_millis` (or none). Stores use this
    /// when they load a session.
    pub fn with_absolute_expiry_millis(mut self, absolute_expiry_millis: Option<i64>) -> Self {
        self.absolute_expiry = absolute_expiry_millis;
        self
    }

    /// Whether this session was read through a rotated id (see
    /// [rotation](crate::SessionStore#contract)): it is the session as it was when its id was
    /// rotated, and writes through that id are refused with
    /// [`Error::Rotated`]. Never stored; a write ignores it.
    pub fn is_rotated(&self) -> bool {
        self.rotated
    }

    /// This session marked as read through a rotated id (or not). Stores use this when they
    /// load a rotated id.
    pub fn with_rotated(mut self, rotated: bool) -> Self {
        self.rotated = rotated;
        self
    }

    /// The expiry a store keeps for this session: its expiry, or its deadline if that is
    /// earlier (milliseconds since the Unix epoch).
    pub fn capped_expiry_millis(&self) -> i64 {
        match self.absolute_expiry {
            Some(deadline) => self.expires_at.min(deadline),
            None => self.expires_at,
        }
    }
}

/// The deadline a write keeps, in milliseconds since the Unix epoch: over a live session
/// holding `stored`, the earlier of `stored` and `written` (a write never removes or
/// postpones a deadline); over an absent one, `written`. For store implementations.
pub fn kept_absolute_expiry(live: bool, stored: Option<i64>, written: Option<i64>) -> Option<i64> {
    match (live, stored, written) {
        (true, Some(stored), Some(written)) => Some(stored.min(written)),
        (true, Some(stored), None) => Some(stored),
        (_, _, written) => written,
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("keys", &self.data.len())
            .field("expires_at_millis", &self.expires_at)
            .field("version", &self.version)
            .field("owner", &self.owner)
            .field("absolute_expiry_millis", &self.absolute_expiry)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_write_keeps_the_earlier_absolute_expiry_of_a_live_session() {
        assert_eq!(kept_absolute_expiry(true, Some(10), Some(20)), Some(10));
        assert_eq!(kept_absolute_expiry(true, Some(30), Some(20)), Some(20));
        assert_eq!(kept_absolute_expiry(true, Some(10), None), Some(10));
        assert_eq!(kept_absolute_expiry(true, None, Some(20)), Some(20));
        assert_eq!(kept_absolute_expiry(true, None, None), None);
        // A new incarnation takes what it carries.
        assert_eq!(kept_absolute_expiry(false, Some(10), Some(20)), Some(20));
        assert_eq!(kept_absolute_expiry(false, Some(10), None), None);
    }

    #[test]
    fn the_absolute_expiry_caps_the_expiry() {
        let mut session = Session::from_parts(Map::new(), 5_000, 0);
        assert_eq!(session.capped_expiry_millis(), 5_000);
        session.set_absolute_expiry_millis(Some(4_000));
        assert_eq!(session.capped_expiry_millis(), 4_000);
        session.set_absolute_expiry_millis(Some(6_000));
        assert_eq!(session.capped_expiry_millis(), 5_000);
        let lived = Session::with_lifetimes(Duration::from_secs(60), Duration::from_secs(30));
        assert_eq!(
            lived.expires_at_millis(),
            lived.absolute_expiry_millis().unwrap()
        );
        let lived = Session::with_lifetimes(Duration::from_secs(30), Duration::from_secs(60));
        assert_eq!(
            lived.absolute_expiry_millis().unwrap() - lived.expires_at_millis(),
            30_000
        );
        // Never stored, so never serialized; the absolute expiry is.
        let text = serde_json::to_string(&lived.clone().with_rotated(true)).unwrap();
        let back: Session = serde_json::from_str(&text).unwrap();
        assert!(!back.is_rotated());
        assert_eq!(
            back.absolute_expiry_millis(),
            lived.absolute_expiry_millis()
        );
    }

    #[test]
    fn valid_ids() {
        for id in ["a", "abc-DEF_123", "a.b", "...", "~x+y=", &"x".repeat(128)] {
            assert!(SessionId::new(id).is_ok(), "{id:?} should be valid");
        }
    }

    #[test]
    fn invalid_ids() {
        let cases: &[(&str, InvalidIdReason)] = &[
            ("", InvalidIdReason::Empty),
            (&"x".repeat(129), InvalidIdReason::TooLong),
            (".", InvalidIdReason::DotSegment),
            ("..", InvalidIdReason::DotSegment),
            ("a/b", InvalidIdReason::ForbiddenChar),
            ("../../etc/passwd", InvalidIdReason::ForbiddenChar),
            ("a\\b", InvalidIdReason::ForbiddenChar),
            ("a\0b", InvalidIdReason::ForbiddenChar),
            ("a b", InvalidIdReason::ForbiddenChar),
            ("a\tb", InvalidIdReason::ForbiddenChar),
            ("a\nb", InvalidIdReason::ForbiddenChar),
            ("a\u{7f}", InvalidIdReason::ForbiddenChar),
            ("é", InvalidIdReason::ForbiddenChar),
            ("a*", InvalidIdReason::ForbiddenChar),
            ("a?", InvalidIdReason::ForbiddenChar),
            ("a[b]", InvalidIdReason::ForbiddenChar),
            ("a:b", InvalidIdReason::ForbiddenChar),
            ("a{b}", InvalidIdReason::ForbiddenChar),
            // Found by the session_id fuzzer (an oracle bug, kept as a regression case): the
            // text of the error message itself.
            (
                "invalid session id: it contains a character outside [A-Za-z0-9-_.",
                InvalidIdReason::ForbiddenChar,
            ),
        ];
        for (id, reason) in cases {
            match SessionId::new(*id) {
                Err(Error::InvalidId { reason: got }) => assert_eq!(got, *reason, "{id:?}"),
                other => panic!("{id:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn generated_ids_are_valid_unique_and_url_safe() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = SessionId::generate();
            assert_eq!(id.as_str().len(), 32);
            assert!(
                id.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            SessionId::check(id.as_str()).unwrap();
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn base64url_matches_known_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn debug_hides_secrets() {
        let id = SessionId::new("averysecretsessionidvalue").unwrap();
        assert_eq!(format!("{id:?}"), "SessionId(averysec…)");
        let mut session = Session::new(Duration::from_secs(60));
        session.insert("password", "hunter2").unwrap();
        let debug = format!("{session:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("password"),
            "{debug}"
        );
    }

    #[test]
    fn millis_round_trip_and_truncate() {
        let t = UNIX_EPOCH + Duration::from_micros(1_500_700);
        assert_eq!(to_millis(t), 1500);
        assert_eq!(from_millis(1500), UNIX_EPOCH + Duration::from_millis(1500));
        let before = UNIX_EPOCH - Duration::from_micros(1500);
        assert_eq!(to_millis(before), -2);
        assert_eq!(from_millis(-2), UNIX_EPOCH - Duration::from_millis(2));
        assert_eq!(to_millis(from_millis(i64::MIN + 1)), i64::MIN + 1);
    }

    #[test]
    fn typed_helpers() {
        let mut s = Session::new(Duration::from_secs(1));
        assert_eq!(s.insert("n", 1).unwrap(), None);
        assert_eq!(s.insert("n", 2).unwrap(), Some(json!(1)));
        assert_eq!(s.get::<i32>("n").unwrap(), Some(2));
        assert!(s.get::<String>("n").is_err());
        assert_eq!(s.get::<i32>("missing").unwrap(), None);
        assert_eq!(s.version(), 0);
    }

    fn nested(depth: usize) -> Map<String, Value> {
        // `depth` levels in all, counting the data object itself.
        let mut value = json!(1);
        for level in 0..depth.saturating_sub(1) {
            // Built by hand: `json!` would re-serialize the whole value at every level.
            value = if level % 2 == 0 {
                Value::Array(vec![value])
            } else {
                let mut map = Map::new();
                map.insert("k".into(), value);
                Value::Object(map)
            };
        }
        let mut map = Map::new();
        map.insert("root".into(), value);
        map
    }

    #[test]
    fn nesting_limit() {
        let id = SessionId::new("abc").unwrap();
        assert!(check_nesting(&id, &Map::new()).is_ok());
        assert!(check_nesting(&id, &nested(MAX_NESTING)).is_ok());
        let err = check_nesting(&id, &nested(MAX_NESTING + 1)).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Encode);
        assert!(check_nesting(&id, &nested(1000)).is_err());
        // The deepest data accepted still parses back with serde_json.
        let text = serde_json::to_string(&json!({"data": nested(MAX_NESTING)})).unwrap();
        serde_json::from_str::<Value>(&text).unwrap();
    }

    #[test]
    fn expiry() {
        let s = Session::with_expiry(SystemTime::now() - Duration::from_millis(1));
        assert!(s.is_expired());
        let s = Session::new(Duration::from_secs(60));
        assert!(!s.is_expired());
        assert!(s.is_expired_at(s.expires_at_millis()));
        assert!(!s.is_expired_at(s.expires_at_millis() - 1));
        let huge = Session::new(Duration::MAX);
        assert!(!huge.is_expired());
    }
}
