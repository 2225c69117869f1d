//! The [`SessionStore`] trait and its written contract.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::session::{Owner, Session, SessionId, from_millis};

/// A place to keep sessions.
///
/// # Contract
///
/// Every store in this crate, and every store that passes the
/// [conformance suite](crate::conformance), behaves as follows.
///
/// **Live and absent.** A session is *live* while the store's clock is before its expiry
/// (`now < expires_at`, in milliseconds): an expiry equal to now has passed. *Absent* means
/// there is no live session under the id, whether nothing was ever stored there, it was
/// destroyed, or it expired. An expired session that was not yet deleted is absent for every
/// operation: `get` does not return it, `set`, `create` and `set_if_version(.., 0)` write over
/// it as over nothing (starting a new incarnation), `touch` does not revive it, and `len` and
/// `is_empty` do not count it.
///
/// **Versions.** Every stored session has a version in `1..=`[`MAX_VERSION`](crate::MAX_VERSION).
/// - A write that stores a session where none was live starts a **new incarnation** at a
///   fresh, unpredictable version ([`fresh_version`](crate::fresh_version)), drawn anew for
///   each incarnation from the whole span `1..=`[`FRESH_VERSION_SPAN`](crate::FRESH_VERSION_SPAN),
///   whichever write starts it (`set`, `create` or `set_if_version(.., 0)`, over an id that
///   was never used, destroyed or expired): never a fixed value such as 1, a counter, or a
///   value from a narrower range.
/// - A write over a live session at version `v` stores `v + 1`
///   ([`next_version`](crate::next_version)); `touch` never changes the version.
/// - So a version never repeats for an id: a version read from one incarnation does not match
///   a later incarnation (except with a chance of about one in 2^48), and a compare-and-set
///   that holds it fails with [`Error::Conflict`](crate::Error::Conflict) instead of
///   overwriting a session that was created after a logout or an expiry.
/// - A caller may assume: 0 means absent; every successful write returns the version it
///   stored; the versions of one incarnation go up by exactly one per write. A caller may not
///   assume any starting value, that a new incarnation's version is larger than an old one's,
///   or anything about versions of different ids.
/// - The version inside a [`Session`] passed to a write is ignored: the store decides it.
///
/// **Operations.**
/// - **`get(id)`** returns the live session stored under `id`, or `None` if it is absent. A
///   store never returns an expired session, even before `delete_expired` has run. The data
///   is returned exactly as written (keys, strings, integers versus floats such as `1` and
///   `1.0`, nulls, empty objects and arrays); the expiry to the millisecond; the version as the
///   store assigned it. Strings, as keys and as values, round-trip exactly even when they hold
///   U+0000 or other control characters; a store that cannot keep such a string (Postgres'
///   `jsonb` cannot keep U+0000) refuses the write with [`Error::Encode`] naming the session,
///   and never changes the string silently.
/// - **`set(id, session)`** is an upsert: it stores the session's data and expiry under `id`,
///   whatever was there, and returns the new version (the live version plus one, or a fresh
///   one if the session was absent). A `set` whose expiry is not in the future deletes any
///   session under `id`, stores nothing and returns 0. One exception: a `set` whose data,
///   expiry and owner are all exactly those of the live stored session changes nothing, so a store may
///   skip the write and return the current version instead (the file store does, to save a
///   rewrite on every request). Either way the returned version is the one now stored, and a
///   compare-and-set on it succeeds. Identical data with another expiry or
///   another owner, or identical content over an absent session, is an ordinary write.
/// - **`destroy(id)`** removes the session. It is idempotent: destroying an absent session
///   is `Ok`.
/// - **`touch(id, expires_at)`** moves the expiry of a live session, later or earlier, and
///   changes nothing else: not the data, not the version. It returns whether a live session
///   existed; it never creates or revives one. Touching to a time that is not in the future
///   expires the session at once (and returns `true`).
/// - **`create(id, session)`** stores the session only if `id` is absent, atomically: of any
///   number of concurrent `create`s of one id, exactly one returns `true`. It returns `false`
///   on a collision and leaves the existing session untouched (data, expiry and version). A
///   created session starts a new incarnation. A `create` whose expiry is not in the future
///   stores nothing live: over an absent id it returns `true` and the id stays absent.
///   Middleware uses `create` so that two users are never handed the same id.
/// - **`set_if_version(id, session, expected)`** is compare-and-set: it writes only if the
///   live version still equals `expected` (0 meaning "absent"), atomically with respect to
///   every other write, and returns the new version (`expected + 1`; a fresh version when
///   `expected` is 0; 0 when the session's expiry is not in the future and the write deleted
///   it). Otherwise it writes nothing and returns [`Error::Conflict`](crate::Error::Conflict)
///   naming the session and the expected version. A read-modify-write loop around it never
///   loses an update.
/// - **`len()`** counts live sessions; expired ones that are not yet deleted do not count.
///   **`is_empty()`** is `len() == 0`.
/// - **`clear()`** removes every session of this store, and only this store's: a store that
///   shares a database, directory or Redis with other data (another table, prefix or
///   directory, another store) removes only its own entries. Likewise `len` counts and
///   `delete_expired` removes only this store's sessions.
/// - **`delete_expired()`** removes expired sessions and returns exactly how many it removed.
///   It never removes a live session, however close to its expiry. A store whose
///   [`capabilities`](SessionStore::capabilities) declare
///   [`expires_by_itself`](Capabilities::expires_by_itself) (Redis, whose keys expire on their
///   own) has nothing to remove and returns 0.
///
/// **Concurrency.** Every operation is atomic with respect to every other on the same id:
/// concurrent writes never produce a mix of two sessions, never hand out one version twice,
/// and leave the last write whole; a `touch` racing a `destroy` never brings the session
/// back; a `create` racing a `destroy` returns `true` only if it stored its session.
///
/// **Operations whose callers give up.** A write whose caller saw an error (a timeout, an
/// outage) or dropped its future midway may or may not have happened: no networked store
/// can promise more. But if it lands, it lands as judged at the moment it lands: its expiry
/// and version decisions are made after its last wait (under the lock, the row lock or the
/// script, or bounded so that it cannot outlive its deadline), so a late write never revives
/// a destroyed or expired session, never writes over a newer incarnation, never loses the
/// session it was changing, and a dropped `create` never lands over a session written
/// since.
///
/// **Data limits.** Data nested more than [`MAX_NESTING`](crate::MAX_NESTING) levels deep
/// is refused by every write with [`Error::Encode`] naming the session,
/// before anything is written (see [`check_nesting`](crate::check_nesting)), so that no store
/// accepts a session it could not read back. A store may also refuse a session over its
/// documented size limit with [`Error::TooLarge`]. A refused write
/// leaves the previous session under the id exactly as it was, and a fresh id absent.
///
/// Ids are validated by [`SessionId`] before any store sees them, and ids are compared
/// exactly: ids that differ only in case, in `.` versus `_`, or in their last byte are
/// different sessions. Errors say which session failed ([`Error::session`](crate::Error::session))
/// and keep the backend's error as their source. A write that fails leaves the previous
/// session intact.
///
/// **Capabilities.** Optional parts of the contract are declared by
/// [`capabilities`](SessionStore::capabilities); the suite holds a store to the sentences of
/// what it declares and never fails it for what it does not.
///
/// **Owners** (stores that declare [`owners`](Capabilities::owners); every store in this
/// crate does). A session may name its [`Owner`], such as a user id:
/// - Every write (`set`, `create`, `set_if_version`) stores the session's owner with it, and
///   `get` returns it. A write of a session with no owner removes the owner. `touch` keeps it.
/// - **`sessions_of(owner, with_data)`** lists exactly the live sessions whose stored owner
///   is `owner`: each one's id, expiry and version, and its data when `with_data` is true.
///   Expired, destroyed and re-owned sessions are never listed, even when they change while
///   the listing runs: every entry is a version that was written for `owner`. The order is
///   unspecified.
/// - **`destroy_owner(owner, except)`** destroys every live session of `owner` except the
///   one under `except`, and returns how many live sessions it destroyed. After it returns,
///   no session of `owner` that was live when it was called is live any more (but `except`);
///   a session written for `owner` concurrently is either destroyed or listed by a later
///   `sessions_of`, never lost from the index. A session under `except` that belongs to
///   someone else is left alone, like every session of another owner.
/// - Owners are compared exactly, like ids: owners that differ only in case, by a prefix or a
///   suffix, by a space, in Unicode normal form (`é` as one code point or as `e` and a
///   combining accent), or by a character some backend's pattern syntax takes as a wildcard
///   (`%`, `_`, `*`, `?`, `[`) are different owners, and never list or end each other's
///   sessions.
/// - **A listed id ends that session**: the id `sessions_of` lists for a session, passed to
///   `destroy` of the same store, ends exactly that session ("sign out this device"), and
///   passed as `destroy_owner`'s `except` keeps exactly it. A store that declares
///   [`lists_stored_ids`](Capabilities::lists_stored_ids) (it keeps sessions under other ids
///   than its callers', as [`HashedIds`](crate::wrappers::hashed_ids::HashedIds) does) lists
///   an id that no other operation accepts for that session: `get`, `touch` and
///   `set_if_version` with it find nothing, so a listed id is never a cookie.
/// - A listing follows each session's expiry: a session kept alive past its first expiry, by
///   `touch` or by a write, stays listed and is ended by `destroy_owner`; one whose expiry
///   was moved earlier stops being listed (and counted) once that has passed.
/// - The cost of both grows with the owner's sessions, not with the whole store: each backend
///   keeps an index from owner to sessions, updated with every write, `destroy`, expiry and
///   `clear`. An owner with thousands of sessions works. Owners of two stores that share a
///   backend (another table, prefix or directory) are separate.
/// - A store that does not declare the capability returns
///   [`Error::Unsupported`](crate::Error::Unsupported) from both (the default methods).
///
/// **Scans** (stores that declare [`scan`](Capabilities::scan); every store in this crate
/// does). **`scan(cursor, limit)`** pages through the store's live sessions: start with
/// `None`, pass each page's [`next`](ScanPage::next) cursor back, stop when it is `None`.
/// - A page holds at most `limit` sessions (a `limit` of 0 counts as 1), each with its id,
///   data, expiry, version and owner as `get` would return them; never an expired one. A page
///   may be empty while `next` is still `Some`.
/// - Every session that is live for the whole scan, and under the same id, is returned
///   exactly once, whatever other writes, destroys and expiries happen meanwhile; a session
///   written, destroyed or expiring during the scan is returned at most once.
/// - A store holds no state for a scan: the cursor is the whole state, a short text that can
///   be saved and handed back later (to resume an interrupted copy, say) to the same store
///   (the same backend and namespace). A saved cursor goes on exactly where its scan stopped
///   whenever it is handed back: after other scans and writes, more than once, and to
///   another instance of the store over the same backend and namespace. A scan's memory is
///   bounded by its page.
/// - Only this store's sessions are scanned.
/// - **An entry the store cannot decode** (corrupt bytes, a format this version does not
///   know, a sealed value that does not open, a stored id that is not valid) is never
///   returned as a session and never stops the scan: the page reports it in
///   [`undecodable`](ScanPage::undecodable), with its id where that is valid and the error
///   (a [`Decode`](crate::Error::Decode) error naming it), and `next` goes on past it, so a
///   caller can count it, show it or remove it (`destroy` of its id) while every other
///   session is scanned. Likewise **a listing** (`sessions_of`) lists such an entry of the
///   owner with no data and the error in [`undecodable`](OwnedSession::undecodable)
///   (with the expiry and version where the store can still read them, else 0), and
///   `destroy` of its id ends it.
/// - A store that does not declare the capability returns
///   [`Error::Unsupported`](crate::Error::Unsupported) (the default method).
///
/// **Lifetimes: absolute expiry** (stores that declare
/// [`absolute_expiry`](Capabilities::absolute_expiry)). Besides its sliding expiry, a session
/// may carry an absolute expiry ([`Session::absolute_expiry`]): its start plus the longest it
/// may live, however often it is used.
/// - Every write stores the session's absolute expiry with it, and `get` and `scan` return it.
/// - The stored expiry is never later than the stored absolute expiry: a write, a `create` or
///   a `touch` whose expiry is later stores the absolute expiry as the expiry instead (a
///   `touch` then still returns `true`). A write whose absolute expiry is not in the future
///   is a write whose expiry is not in the future: it deletes the session and returns 0
///   (`create`: stores nothing live).
/// - A write over a live session keeps the earlier of the stored absolute expiry and the
///   written one: no write removes or postpones the absolute expiry of a live session (a
///   session written with none keeps the stored one). A write that starts a new incarnation
///   stores the absolute expiry it carries, or none.
/// - Each of these is decided atomically with the write or `touch`, as it lands: no
///   interleaving of writes and touches ever leaves a session live past its absolute expiry.
///
/// **Lifetimes: rotation** (stores that declare [`rotation`](Capabilities::rotation)).
/// **`rotate(old, new, grace)`** moves a session to a fresh id, as an application does at
/// login or on a change of privilege, without logging out the requests already in flight
/// with the old id:
/// - If `old` holds a live session and `new` holds nothing (no live session and no rotated
///   id), atomically: the session (data, owner, expiry and absolute expiry) is stored under
///   `new` at a version other than its own (the backends store the next one,
///   [`next_version`](crate::next_version)), and `old` becomes a **rotated id** for `grace`.
///   It returns [`Rotation::Moved`] with the version now under `new`. Otherwise it changes nothing and returns [`Rotation::Absent`] (`old` holds no
///   live session, or is itself a rotated id) or [`Rotation::Taken`] (`new` holds a live
///   session or a rotated id, or is `old`).
/// - A rotated id is **read-only**: `get` of it returns the session as it was when it was
///   rotated (its data, owner and version then, and an expiry no later than the rotation plus
///   `grace`), marked [`is_rotated`](Session::is_rotated), never what was written under
///   `new` since, so a holder of the old id learns
///   nothing of the new session. `set` and `set_if_version` through it write nothing and
///   fail with [`Error::Rotated`] (a conflict), `touch` returns `false`, `create` returns
///   `false`, `rotate` returns [`Rotation::Absent`]: a stale compare-and-set through the old
///   id conflicts, and a request in flight cannot fork the session.
/// - A rotated id resolves only while its grace lasts **and** the session it moved to is
///   still live under `new`, not rotated again: when the grace is over, or the new session
///   is destroyed, ended by `destroy_owner`, expired or rotated once more, `get` of the old
///   id returns `None`. `destroy` of a rotated id ends the new session too. A grace of zero
///   ends the old id at once.
/// - A rotated id is not a session: `len` does not count it, `scan` and `sessions_of` do
///   not return it, `destroy_owner` does not count it. `delete_expired` removes rotated ids
///   whose grace is over (and counts them among what it removed); `clear` removes them.
/// - Rotation is atomic with respect to every other operation on both ids: of a write
///   through `old` and a `rotate` that race, either the write lands first and is what moves
///   to `new`, or the write fails with [`Error::Rotated`]; a `destroy_owner` racing a
///   `rotate` ends the session under whichever id it ends up.
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
/// use session_stores::{
///     async_trait, check_nesting, fresh_version, next_version, now_millis, to_millis, Error,
///     Result, Session, SessionId, SessionStore,
/// };
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
///         let next = next_version(Self::live(&map, id).unwrap_or(0));
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
///         Self::write(&mut map, id, session, fresh_version())?;
///         Ok(true)
///     }
///     async fn set_if_version(&self, id: &SessionId, session: &Session, expected: u64) -> Result<u64> {
///         let mut map = self.0.lock().unwrap();
///         if Self::live(&map, id).unwrap_or(0) != expected {
///             return Err(Error::conflict(id, expected));
///         }
///         Self::write(&mut map, id, session, next_version(expected))
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
/// assert!(loaded.version() >= 1);
/// let next = store.set_if_version(&id, &loaded, loaded.version()).await.unwrap();
/// assert_eq!(next, loaded.version() + 1);
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

    /// The live sessions of `owner`: ids, expiries and versions, and their data if
    /// `with_data`. See [owners](SessionStore#contract). The default returns
    /// [`Error::Unsupported`].
    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        let _ = (owner, with_data);
        Err(Error::Unsupported {
            operation: "sessions_of",
        })
    }

    /// Destroys every live session of `owner` but `except` ("log out everywhere else"), and
    /// returns how many it destroyed. See [owners](SessionStore#contract). The default
    /// returns [`Error::Unsupported`].
    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        let _ = (owner, except);
        Err(Error::Unsupported {
            operation: "destroy_owner",
        })
    }

    /// One page of a scan over the live sessions, from `cursor` (`None`: the start). See
    /// [scans](SessionStore#contract). The default returns
    /// [`Error::Unsupported`].
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let _ = (cursor, limit);
        Err(Error::Unsupported { operation: "scan" })
    }

    /// Moves the live session under `old` to `new` atomically, leaving `old` a read-only
    /// rotated id for `grace`. See [rotation](SessionStore#contract). The default returns
    /// [`Error::Unsupported`].
    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        let _ = (old, new, grace);
        Err(Error::Unsupported {
            operation: "rotate",
        })
    }

    /// **Test support, for the conformance suite**: damages the stored data of session `id`
    /// in place (its expiry and owner kept), as a corrupt backend, a hand
    /// edit or another program's write would, so that reading it is a
    /// [`Decode`](Error::Decode) error. Returns whether it could (`false`: the session is
    /// absent, or the store cannot hold an undecodable entry, as the default says). The
    /// suite uses it to check what scans and listings do with such an entry; never call it
    /// on sessions you want to keep.
    async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
        let _ = id;
        Ok(false)
    }

    /// The optional parts of the contract this store keeps. The default declares none.
    /// A wrapper store forwards the capabilities of the store it wraps, except those it
    /// changes.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

/// The optional parts of the [contract](SessionStore#contract) a store declares, as
/// [OpenDAL's `Capability`](https://docs.rs/opendal) does: the conformance suite checks the
/// sentences of each declared capability and never fails a store for one it does not declare.
///
/// New capabilities are added as new fields (the struct is `#[non_exhaustive]`); build one
/// with the `with_*` methods:
///
/// ```
/// use session_stores::Capabilities;
///
/// let caps = Capabilities::new().with_expires_by_itself(true);
/// assert!(caps.expires_by_itself);
/// assert!(!Capabilities::default().expires_by_itself);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Capabilities {
    /// The backend removes expired sessions by itself (Redis key expiry), so
    /// [`delete_expired`](SessionStore::delete_expired) has nothing to remove and returns 0.
    /// A store that does not declare it must return exactly the number it removed.
    pub expires_by_itself: bool,
    /// The store keeps each session's [`Owner`] and an index from owner to sessions, so
    /// [`sessions_of`](SessionStore::sessions_of) and
    /// [`destroy_owner`](SessionStore::destroy_owner) work. See
    /// [owners](SessionStore#contract).
    pub owners: bool,
    /// The ids [`sessions_of`](SessionStore::sessions_of) lists are not the ids its callers
    /// use: a wrapper that stores each session under another id
    /// ([`HashedIds`](crate::wrappers::hashed_ids::HashedIds)) cannot turn a stored key back
    /// into the caller's id, so it lists an id that only `destroy` (and `destroy_owner`'s
    /// `except`) accepts for that session. Such a listing still has one entry per session,
    /// with its expiry, version and data; the suite compares it by those only.
    pub lists_stored_ids: bool,
    /// [`scan`](SessionStore::scan) pages through the live sessions. See
    /// [scans](SessionStore#contract). The ids a scan returns are the stored ones when
    /// [`lists_stored_ids`](Capabilities::lists_stored_ids) is declared too.
    pub scan: bool,
    /// Sessions may carry an absolute expiry that no write or `touch` moves their expiry
    /// past. See [lifetimes](SessionStore#contract).
    pub absolute_expiry: bool,
    /// [`rotate`](SessionStore::rotate) moves a session to a fresh id with a grace window.
    /// See [rotation](SessionStore#contract).
    pub rotation: bool,
}

impl Capabilities {
    /// No optional capability.
    pub const fn new() -> Self {
        Capabilities {
            expires_by_itself: false,
            owners: false,
            lists_stored_ids: false,
            scan: false,
            absolute_expiry: false,
            rotation: false,
        }
    }

    /// Declares (or not) [`absolute_expiry`](Capabilities::absolute_expiry).
    pub const fn with_absolute_expiry(mut self, yes: bool) -> Self {
        self.absolute_expiry = yes;
        self
    }

    /// Declares (or not) [`rotation`](Capabilities::rotation).
    pub const fn with_rotation(mut self, yes: bool) -> Self {
        self.rotation = yes;
        self
    }

    /// Declares (or not) [`scan`](Capabilities::scan).
    pub const fn with_scan(mut self, yes: bool) -> Self {
        self.scan = yes;
        self
    }

    /// Declares (or not) [`lists_stored_ids`](Capabilities::lists_stored_ids).
    pub const fn with_lists_stored_ids(mut self, yes: bool) -> Self {
        self.lists_stored_ids = yes;
        self
    }

    /// Declares (or not) [`owners`](Capabilities::owners).
    pub const fn with_owners(mut self, yes: bool) -> Self {
        self.owners = yes;
        self
    }

    /// Declares (or not) [`expires_by_itself`](Capabilities::expires_by_itself).
    pub const fn with_expires_by_itself(mut self, yes: bool) -> Self {
        self.expires_by_itself = yes;
        self
    }
}

/// What [`rotate`](SessionStore::rotate) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rotation {
    /// The session now lives under the new id, at this version; the old id is a read-only
    /// rotated id for the grace window.
    Moved {
        /// The version of the session under the new id.
        version: u64,
    },
    /// The old id holds no live session (or is itself a rotated id): nothing changed.
    Absent,
    /// The new id already holds a live session or a rotated id (or is the old id): nothing
    /// changed. Draw another id.
    Taken,
}

/// One live session of an owner, as [`sessions_of`](SessionStore::sessions_of) lists it.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct OwnedSession {
    /// The session's id, as the store keeps it (a wrapper that stores sessions under other
    /// ids, such as `HashedIds`, lists those).
    pub id: SessionId,
    /// The expiry, in milliseconds since the Unix epoch.
    pub expires_at_millis: i64,
    /// The stored version.
    pub version: u64,
    /// The data, when it was asked for.
    pub data: Option<Map<String, Value>>,
    /// Set when the store could not decode this entry: then `data` is `None` (and the
    /// expiry and version are 0 where the store could not read them either). See
    /// [scans](SessionStore#contract).
    pub undecodable: Option<Undecodable>,
}

/// An entry that a [`scan`](SessionStore::scan) or a
/// [`sessions_of`](SessionStore::sessions_of) found but could not decode: reported beside the
/// sessions, never in their place, and never stopping the others.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Undecodable {
    /// The entry's id as the store keeps it; `None` when not even that is a valid id.
    pub id: Option<SessionId>,
    /// Why it could not be decoded: usually an [`Error::Decode`] naming the entry.
    pub error: Arc<Error>,
}

impl Undecodable {
    /// A report of entry `id` and its `error`. For store implementations.
    pub fn new(id: Option<SessionId>, error: Error) -> Self {
        Undecodable {
            id,
            error: Arc::new(error),
        }
    }
}

/// Two reports are equal when they name the same id and their errors are of the same kind
/// and say the same.
impl PartialEq for Undecodable {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.error.kind() == other.error.kind()
            && self.error.to_string() == other.error.to_string()
    }
}

impl OwnedSession {
    /// An entry for a listing. For store implementations.
    pub fn new(
        id: SessionId,
        expires_at_millis: i64,
        version: u64,
        data: Option<Map<String, Value>>,
    ) -> Self {
        OwnedSession {
            id,
            expires_at_millis,
            version,
            data,
            undecodable: None,
        }
    }

    /// The entry of session `id` that the store could not decode, with `error` (and the
    /// expiry and version where it could still read them, else 0). For store
    /// implementations.
    pub fn undecodable(id: SessionId, expires_at_millis: i64, version: u64, error: Error) -> Self {
        OwnedSession {
            undecodable: Some(Undecodable::new(Some(id.clone()), error)),
            ..OwnedSession::new(id, expires_at_millis, version, None)
        }
    }

    /// The entry of a stored `session`, with its data if `with_data`. For store
    /// implementations.
    pub fn of(id: SessionId, session: Session, with_data: bool) -> Self {
        let (data, expires_at_millis, version) = session.into_parts();
        OwnedSession::new(id, expires_at_millis, version, with_data.then_some(data))
    }

    /// The expiry.
    pub fn expires_at(&self) -> SystemTime {
        from_millis(self.expires_at_millis)
    }
}

impl std::fmt::Debug for OwnedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedSession")
            .field("id", &self.id)
            .field("expires_at_millis", &self.expires_at_millis)
            .field("version", &self.version)
            .field("data", &self.data.as_ref().map(|d| d.len()))
            .field("undecodable", &self.undecodable)
            .finish()
    }
}

/// Where a [`scan`](SessionStore::scan) goes on: opaque text that a store makes and reads
/// back. Save it ([`as_str`](ScanCursor::as_str)) to resume a scan later, from another
/// process even, on the same store.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ScanCursor(String);

impl ScanCursor {
    /// A cursor from its text: one a store made, or one saved from [`as_str`](Self::as_str).
    /// A store refuses text it did not make with [`Error::Config`].
    pub fn new(text: impl Into<String>) -> Self {
        ScanCursor(text.into())
    }

    /// The cursor as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A keyset cursor: the scan goes on after `id`, in id order (`1:<id>`). For stores that
    /// scan their sessions ordered by id (SQL tables, directories); read it back with
    /// [`keyset_id`](Self::keyset_id).
    pub fn after_id(id: &SessionId) -> Self {
        ScanCursor(format!("{KEYSET_TAG}{}", id.as_str()))
    }

    /// A keyset cursor after a stored key that may not be a valid id (an entry a scan
    /// reports as [`Undecodable`], so that the scan goes on past it): a valid id gives
    /// [`after_id`](Self::after_id)'s cursor, any other key `1%<percent-encoded key>`. Read it
    /// back with [`keyset_text`](Self::keyset_text). For stores that compare keys as text.
    pub fn after_text(key: &str) -> Self {
        match SessionId::new(key) {
            Ok(id) => Self::after_id(&id),
            Err(_) => {
                let encoded =
                    percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
                ScanCursor(format!("{KEYSET_RAW_TAG}{encoded}"))
            }
        }
    }

    /// The stored key a keyset cursor goes on after: the id of an
    /// [`after_id`](Self::after_id) cursor, or the key of an
    /// [`after_text`](Self::after_text) cursor. Text that is neither is an
    /// [`Error::Config`] naming `store`.
    pub fn keyset_text(&self, store: &str) -> Result<std::borrow::Cow<'_, str>> {
        if let Some(raw) = self.0.strip_prefix(KEYSET_RAW_TAG)
            && let Ok(key) = percent_encoding::percent_decode_str(raw).decode_utf8()
            && !key.is_empty()
        {
            return Ok(key);
        }
        let id = self.keyset_id(store)?;
        Ok(std::borrow::Cow::Owned(id.into_string()))
    }

    /// The id a [keyset cursor](Self::after_id) goes on after; text that is not one is an
    /// [`Error::Config`] naming `store`.
    pub fn keyset_id(&self, store: &str) -> Result<SessionId> {
        self.0
            .strip_prefix(KEYSET_TAG)
            .and_then(|id| SessionId::new(id).ok())
            .ok_or_else(|| {
                Error::config(format!(
                    "not a scan cursor of this store ({store} cursors are `{KEYSET_TAG}<id>`)"
                ))
            })
    }
}

/// The version tag of keyset cursors.
const KEYSET_TAG: &str = "1:";
/// The tag of keyset cursors after a stored key that is not a valid id.
const KEYSET_RAW_TAG: &str = "1%";

impl std::fmt::Debug for ScanCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A cursor may hold a session id (the last one returned): show its length only.
        write!(f, "ScanCursor({} bytes)", self.0.len())
    }
}

/// One page of a [`scan`](SessionStore::scan).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ScanPage {
    /// The live sessions of this page, each under its id.
    pub sessions: Vec<(SessionId, Session)>,
    /// Where the scan goes on; `None` when it is over.
    pub next: Option<ScanCursor>,
    /// The entries of this page that the store could not decode (see
    /// [scans](SessionStore#contract)): not in `sessions`, and the scan goes on past them.
    pub undecodable: Vec<Undecodable>,
}

impl ScanPage {
    /// A page. For store implementations.
    pub fn new(sessions: Vec<(SessionId, Session)>, next: Option<ScanCursor>) -> Self {
        ScanPage {
            sessions,
            next,
            undecodable: Vec::new(),
        }
    }

    /// The page, reporting `undecodable` entries. For store implementations.
    pub fn with_undecodable(mut self, undecodable: Vec<Undecodable>) -> Self {
        self.undecodable = undecodable;
        self
    }
}

macro_rules! forward_store {
    ($($ty:ty),*) => {$(
        #[deny(clippy::missing_trait_methods)]
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
            async fn sessions_of(
                &self,
                owner: &Owner,
                with_data: bool,
            ) -> Result<Vec<OwnedSession>> {
                (**self).sessions_of(owner, with_data).await
            }
            async fn destroy_owner(
                &self,
                owner: &Owner,
                except: Option<&SessionId>,
            ) -> Result<u64> {
                (**self).destroy_owner(owner, except).await
            }
            async fn scan(
                &self,
                cursor: Option<&ScanCursor>,
                limit: usize,
            ) -> Result<ScanPage> {
                (**self).scan(cursor, limit).await
            }
            async fn rotate(
                &self,
                old: &SessionId,
                new: &SessionId,
                grace: Duration,
            ) -> Result<Rotation> {
                (**self).rotate(old, new, grace).await
            }
            async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
                (**self).make_undecodable(id).await
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
        }
    )*};
}

forward_store!(Box<S>, Arc<S>, &S);

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports are equal when they name the same id with errors of the same kind that say
    /// the same, and differ in any one of the three.
    #[test]
    fn undecodable_reports_compare_by_id_kind_and_message() {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let report = |id: &SessionId, error: Error| Undecodable::new(Some(id.clone()), error);
        let decode = |id: &SessionId, why: &str| Error::decode(id, why.to_owned());
        assert_eq!(report(&a, decode(&a, "bad")), report(&a, decode(&a, "bad")));
        // Another id.
        assert_ne!(report(&a, decode(&a, "bad")), report(&b, decode(&a, "bad")));
        assert_ne!(
            report(&a, decode(&a, "bad")),
            Undecodable::new(None, decode(&a, "bad"))
        );
        // Another message (the source is part of it).
        assert_ne!(report(&a, decode(&a, "bad")), report(&a, decode(&b, "bad")));
        // Another kind, with the same text.
        let config = Error::config(decode(&a, "bad").to_string());
        assert_ne!(config.to_string(), "");
        assert_ne!(report(&a, decode(&a, "bad")), report(&a, config));
        // A page holding one compares by it.
        let page = |u| ScanPage::new(Vec::new(), None).with_undecodable(vec![u]);
        assert_eq!(
            page(report(&a, decode(&a, "bad"))),
            page(report(&a, decode(&a, "bad")))
        );
        assert_ne!(
            page(report(&a, decode(&a, "bad"))),
            page(report(&b, decode(&b, "bad")))
        );
    }
}
