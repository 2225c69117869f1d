//! The suite has teeth: each store here breaks exactly one contract sentence, the way real
//! session stores have, and the suite must fail on it, naming the check for that sentence.
//! The same store with no defect passes, so each failure is the defect's doing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::SystemTime;

use serde_json::Value;
use session_stores::{
    Capabilities, Error, OwnedSession, Owner, Result, ScanCursor, ScanPage, Session, SessionId,
    SessionStore, async_trait, fresh_version, next_version, now_millis, to_millis,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Defect {
    None,
    // Expiry.
    IgnoresExpiry,
    ExpiryEqualToNowIsLive,
    WritesTreatExpiredAsLive,
    CreateCollidesWithExpired,
    TouchRevivesExpired,
    TouchOnlyExtends,
    IsEmptyCountsExpired,
    LenCountsExpired,
    DeleteExpiredReturnsZero,
    DeleteExpiredCountsEverything,
    DeleteExpiredWithSlack,
    PastExpiryWriteIgnoresVersion,
    // Versions.
    VersionRestartsAtOne,
    VersionFromTheClock,
    HonoursCarriedVersion,
    SetIfVersionIgnoresVersion,
    ZeroMatchesAnything,
    ConflictCarriesStoredVersion,
    MismatchIsABackendError,
    UnchangedSetMisreportsVersion,
    IdenticalSetIgnoresExpiry,
    SkipCacheSurvivesDestroy,
    // Writes.
    DestroyDoesNothing,
    TouchRewritesData,
    TouchWritesBackWholeSession,
    NonAtomicCreate,
    NonAtomicSet,
    NonAtomicSetIfVersion,
    CapsExpiryAt30Days,
    CreateTrustsSecondLook,
    AcceptsOverDeepData,
    RefusedWriteRemovesOld,
    RefusedCreateLeavesPlaceholder,
    EncodeErrorNamesNoSession,
    // Data and ids.
    IntegralFloatsBecomeIntegers,
    NormalizesLineEndings,
    DropsNullMembers,
    IdsCaseInsensitive,
    IdsTruncatedTo64,
    DotsAreUnderscores,
    DestroyByPrefix,
    // Scale and isolation.
    LenCapsAt1000,
    ClearFirstPageOnly,
    ClearClearsEveryStore,
    // Owners.
    IndexNotUpdatedOnDestroy,
    ListsExpired,
    ListsReownedSessions,
    MissesConcurrentCreate,
    TouchDropsOwner,
    IdenticalSetIgnoresOwner,
    OwnerChangeKeepsOldIndex,
    DestroyOwnerIgnoresExcept,
    DestroyOwnerCountsExpired,
    ClearKeepsOwnerIndex,
    OwnersSharedAcrossStores,
    ListingCapsAt1000,
    ListingWithoutData,
    // Scans.
    ScanReturnsExpired,
    ScanCursorIsAnOffset,
    ScanIgnoresLimit,
    ScanEndsAfterOnePage,
    ScanDropsOwner,
    // Blind spots found by auditing the contract's sentences against the checks.
    StripsNulFromStrings,
    FreshVersionsFromASmallRange,
    FreshVersionsFromACounter,
    CompareAndSetStartsAtAFixedVersion,
    TouchLeavesIndexExpiry,
    IndexKeepsFirstExpiry,
    OwnersCaseInsensitive,
    OwnersTrimmed,
    OwnersNormalized,
    DestroyOwnerByPattern,
    CursorIsAOneShotToken,
    CursorIsTheLastScansPosition,
    // Operations whose callers give up.
    DroppedTouchLandsLate,
    DroppedCreateLandsLate,
    DroppedCompareAndSetLosesTheSession,
    // Listed ids.
    ListedIdsDestroyNothing,
    ListedIdsAreCookies,
    // Owners at rest.
    OwnedDataLosesReservedKey,
    // Entries that cannot be decoded.
    ScanStopsAtUndecodable,
    ListingDropsUndecodable,
}

/// Runs `write` on the map 30 ms from now in a task of its own, and waits for it: a caller
/// that gives up meanwhile does not stop it (the defects of work that outlives its caller,
/// decided before its wait).
async fn lands_later(map: Arc<Mutex<Map>>, write: impl FnOnce(&mut Map) + Send + 'static) {
    let _ = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        write(&mut map.lock().unwrap());
    })
    .await;
}

type Map = HashMap<(u64, SessionId), Session>;

/// What a write-skip cache remembers of an id's last write: data, expiry, version and owner.
type Written = (serde_json::Map<String, Value>, i64, u64, Option<Owner>);

/// The owner index: per owner, a copy of each of its sessions as last written or touched,
/// which is what listings show (so a stale index is visible).
type Index = HashMap<Owner, HashMap<SessionId, Session>>;

/// One index for every store, for the defect that does not keep stores apart.
static SHARED_INDEX: LazyLock<Arc<Mutex<Index>>> = LazyLock::new(Arc::default);

struct Faulty {
    map: Arc<Mutex<Map>>,
    ns: u64,
    defect: Defect,
    /// The last content written per id, for a write-skip cache (one defect forgets to drop it).
    written: Mutex<HashMap<SessionId, Written>>,
    index: Arc<Mutex<Index>>,
    /// Scan positions the store keeps, for the two defects whose cursor is not the whole state.
    positions: Mutex<HashMap<String, usize>>,
    /// The next fresh version, for the defect that counts them.
    counter: AtomicU64,
    /// Sessions made undecodable (`make_undecodable`): `get` of them is a `Decode` error.
    spoiled: Mutex<std::collections::HashSet<SessionId>>,
}

static NAMESPACES: AtomicU64 = AtomicU64::new(1);

impl Faulty {
    fn new(defect: Defect) -> Self {
        Self::over(defect, Arc::default())
    }

    fn over(defect: Defect, map: Arc<Mutex<Map>>) -> Self {
        Faulty {
            map,
            ns: NAMESPACES.fetch_add(1, Ordering::Relaxed),
            defect,
            written: Mutex::default(),
            index: if defect == Defect::OwnersSharedAcrossStores {
                SHARED_INDEX.clone()
            } else {
                Arc::default()
            },
            positions: Mutex::default(),
            counter: AtomicU64::new(fresh_version()),
            spoiled: Mutex::default(),
        }
    }

    /// What the owner index files `owner` under (four defects merge owners that look alike).
    fn owner_key(&self, owner: &Owner) -> Owner {
        let text = owner.as_str();
        let key = if self.is(Defect::OwnersCaseInsensitive) {
            text.to_lowercase()
        } else if self.is(Defect::OwnersTrimmed) {
            text.trim().to_string()
        } else if self.is(Defect::OwnersNormalized) {
            text.replace("e\u{301}", "\u{e9}")
        } else {
            return owner.clone();
        };
        Owner::new(key).unwrap_or_else(|_| owner.clone())
    }

    /// Whether the stored owner `stored` is the owner asked for: one owner as the index files
    /// it, or (the defect) an SQL `LIKE` pattern that `asked` is taken as.
    fn owner_matches(&self, asked: &Owner, stored: &Owner) -> bool {
        if self.is(Defect::DestroyOwnerByPattern) {
            return like(asked.as_str().as_bytes(), stored.as_str().as_bytes());
        }
        self.owner_key(asked) == self.owner_key(stored)
    }

    fn is(&self, defect: Defect) -> bool {
        self.defect == defect
    }

    /// A snapshot of the ids `owner`'s index holds.
    fn indexed_ids(&self, owner: &Owner) -> Vec<SessionId> {
        let index = self.index.lock().unwrap();
        if self.is(Defect::DestroyOwnerByPattern) {
            return index
                .iter()
                .filter(|(stored, _)| self.owner_matches(owner, stored))
                .flat_map(|(_, ids)| ids.keys().cloned())
                .collect();
        }
        index
            .get(&self.owner_key(owner))
            .into_iter()
            .flatten()
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn key(&self, id: &SessionId) -> (u64, SessionId) {
        let mut raw = id.as_str().to_string();
        if self.is(Defect::IdsCaseInsensitive) {
            raw = raw.to_ascii_lowercase();
        }
        if self.is(Defect::IdsTruncatedTo64) {
            raw.truncate(64);
        }
        if self.is(Defect::DotsAreUnderscores) {
            raw = raw.replace('.', "_");
        }
        (self.ns, SessionId::new(raw).expect("still a valid id"))
    }

    fn expired(&self, session: &Session, now: i64) -> bool {
        if self.is(Defect::IgnoresExpiry) {
            return false;
        }
        if self.is(Defect::ExpiryEqualToNowIsLive) {
            return session.expires_at_millis() < now;
        }
        session.is_expired_at(now)
    }

    /// The live version, as the write paths see it.
    fn live_for_write(&self, map: &Map, id: &SessionId, now: i64) -> Option<u64> {
        map.get(&self.key(id))
            .filter(|s| self.is(Defect::WritesTreatExpiredAsLive) || !self.expired(s, now))
            .map(Session::version)
    }

    fn check_data(&self, id: &SessionId, session: &Session) -> Result<()> {
        if self.is(Defect::AcceptsOverDeepData) {
            return Ok(());
        }
        session_stores::check_nesting(id, session.data()).map_err(|err| {
            if self.is(Defect::EncodeErrorNamesNoSession) {
                Error::encode(&SessionId::new("someone-else").unwrap(), err)
            } else {
                err
            }
        })
    }

    /// What the store keeps of `session`'s data (three defects lose something).
    fn kept(&self, session: &Session) -> Session {
        fn walk(value: &mut Value, defect: Defect) {
            match value {
                Value::Number(n) if defect == Defect::IntegralFloatsBecomeIntegers => {
                    if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) {
                        *value = Value::from(f as i64);
                    }
                }
                Value::String(s) if defect == Defect::NormalizesLineEndings => {
                    *s = s.replace("\r\n", "\n");
                }
                Value::String(s) if defect == Defect::StripsNulFromStrings => {
                    s.retain(|c| c != '\0');
                }
                Value::Array(items) => items.iter_mut().for_each(|v| walk(v, defect)),
                Value::Object(map) => {
                    if defect == Defect::DropsNullMembers {
                        map.retain(|_, v| !v.is_null());
                    }
                    if defect == Defect::StripsNulFromStrings {
                        *map = std::mem::take(map)
                            .into_iter()
                            .map(|(k, v)| (k.replace('\0', ""), v))
                            .collect();
                    }
                    map.values_mut().for_each(|v| walk(v, defect));
                }
                _ => {}
            }
        }
        let mut data = Value::Object(session.data().clone());
        walk(&mut data, self.defect);
        let Value::Object(mut data) = data else {
            unreachable!()
        };
        // A wrapper that keeps the owner in the data under a key of its own, and loses the
        // caller's key of that name.
        if self.is(Defect::OwnedDataLosesReservedKey) && session.owner().is_some() {
            data.remove("\u{1}owner");
        }
        Session::from_parts(data, session.expires_at_millis(), session.version())
            .with_owner(session.owner().cloned())
    }

    /// Drops `id` from `owner`'s entries in the index.
    fn unindex(&self, owner: Option<&Owner>, id: &SessionId) {
        if let Some(owner) = owner
            && let Some(ids) = self.index.lock().unwrap().get_mut(&self.owner_key(owner))
        {
            ids.remove(id);
        }
    }

    /// A fresh version for a new incarnation.
    fn fresh(&self) -> u64 {
        if self.is(Defect::VersionRestartsAtOne) {
            1
        } else if self.is(Defect::VersionFromTheClock) {
            now_millis() as u64
        } else if self.is(Defect::FreshVersionsFromASmallRange) {
            fresh_version() % 1_000_000 + 1
        } else if self.is(Defect::FreshVersionsFromACounter) {
            self.counter.fetch_add(1, Ordering::Relaxed)
        } else {
            fresh_version()
        }
    }

    /// Stores `session` at `version` (deleting on a past expiry). The caller holds the lock.
    fn put(&self, map: &mut Map, id: &SessionId, session: &Session, version: u64, now: i64) -> u64 {
        self.spoiled.lock().unwrap().remove(id);
        let old_owner = map.get(&self.key(id)).and_then(|s| s.owner().cloned());
        if self.expired(session, now) {
            map.remove(&self.key(id));
            self.unindex(old_owner.as_ref(), id);
            return 0;
        }
        let mut kept = self.kept(session).with_version(version);
        if self.is(Defect::CapsExpiryAt30Days) {
            let cap = now + 30 * 24 * 3600 * 1000;
            kept.set_expires_at_millis(kept.expires_at_millis().min(cap));
        }
        if old_owner.as_ref() != kept.owner() && !self.is(Defect::OwnerChangeKeepsOldIndex) {
            self.unindex(old_owner.as_ref(), id);
        }
        if let Some(owner) = kept.owner() {
            let mut index = self.index.lock().unwrap();
            let entries = index.entry(self.owner_key(owner)).or_default();
            let mut copy = kept.clone();
            if self.is(Defect::IndexKeepsFirstExpiry)
                && let Some(old) = entries.get(id)
            {
                copy.set_expires_at_millis(old.expires_at_millis());
            }
            entries.insert(id.clone(), copy);
        }
        map.insert(self.key(id), kept);
        self.written.lock().unwrap().insert(
            id.clone(),
            (
                session.data().clone(),
                session.expires_at_millis(),
                version,
                session.owner().cloned(),
            ),
        );
        version
    }

    fn next(&self, live: Option<u64>, session: &Session) -> u64 {
        if self.is(Defect::HonoursCarriedVersion) && session.version() > 0 {
            return session.version() + 1;
        }
        match live {
            Some(v) => next_version(v),
            None => self.fresh(),
        }
    }
}

#[async_trait]
impl SessionStore for Faulty {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        let map = self.map.lock().unwrap();
        let found = map
            .get(&self.key(id))
            .filter(|s| !self.expired(s, now_millis()))
            .cloned();
        if found.is_some() && self.spoiled.lock().unwrap().contains(id) {
            return Err(Error::decode(id, "spoiled"));
        }
        Ok(found)
    }

    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        let now = now_millis();
        if let Err(err) = self.check_data(id, session) {
            if self.is(Defect::RefusedWriteRemovesOld) {
                self.map.lock().unwrap().remove(&self.key(id));
            }
            return Err(err);
        }
        if self.is(Defect::NonAtomicSet) {
            // Read the version, let other tasks run, then write: two writers get one version.
            let live = self.live_for_write(&self.map.lock().unwrap(), id, now);
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let next = self.next(live, session);
            return Ok(self.put(&mut self.map.lock().unwrap(), id, session, next, now));
        }
        let mut map = self.map.lock().unwrap();
        let live = self.live_for_write(&map, id, now);
        let cached = self.written.lock().unwrap().get(id).cloned();
        if let Some((data, expires_at, version, owner)) = cached {
            let same_expiry = self.is(Defect::IdenticalSetIgnoresExpiry)
                || expires_at == session.expires_at_millis();
            let same_owner =
                self.is(Defect::IdenticalSetIgnoresOwner) || owner.as_ref() == session.owner();
            let cache_valid = self.is(Defect::SkipCacheSurvivesDestroy) || live == Some(version);
            if cache_valid
                && same_expiry
                && same_owner
                && data == *session.data()
                && !self.expired(session, now)
            {
                return Ok(if self.is(Defect::UnchangedSetMisreportsVersion) {
                    version + 1
                } else {
                    version
                });
            }
        }
        let next = self.next(live, session);
        Ok(self.put(&mut map, id, session, next, now))
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        if self.is(Defect::DestroyByPrefix) {
            // A key pattern `<id>*`: every id that starts with this one goes too.
            let (ns, prefix) = self.key(id);
            self.map
                .lock()
                .unwrap()
                .retain(|(n, other), _| *n != ns || !other.as_str().starts_with(prefix.as_str()));
            return Ok(());
        }
        if !self.is(Defect::DestroyDoesNothing) {
            self.spoiled.lock().unwrap().remove(id);
            let gone = self.map.lock().unwrap().remove(&self.key(id));
            if !self.is(Defect::IndexNotUpdatedOnDestroy) {
                self.unindex(gone.as_ref().and_then(Session::owner), id);
            }
            if !self.is(Defect::SkipCacheSurvivesDestroy) {
                self.written.lock().unwrap().remove(id);
            }
        }
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        let now = now_millis();
        if self.is(Defect::DroppedTouchLandsLate) {
            // Decided now, written back later by a task its caller cannot stop.
            let Some(mut session) = self.get(id).await? else {
                return Ok(false);
            };
            session.set_expires_at(expires_at);
            let key = self.key(id);
            lands_later(Arc::clone(&self.map), move |map| {
                map.insert(key, session);
            })
            .await;
            return Ok(true);
        }
        if self.is(Defect::TouchRewritesData) {
            // Read, change, write back: a rewrite that advances the version.
            let Some(mut session) = self.get(id).await? else {
                return Ok(false);
            };
            session.set_expires_at(expires_at);
            self.set(id, &session).await?;
            return Ok(true);
        }
        if self.is(Defect::TouchWritesBackWholeSession) {
            // Read, let other tasks run, write the whole session back: races lose writes.
            let Some(mut session) = self.get(id).await? else {
                return Ok(false);
            };
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            session.set_expires_at(expires_at);
            self.map.lock().unwrap().insert(self.key(id), session);
            return Ok(true);
        }
        let mut map = self.map.lock().unwrap();
        let key = self.key(id);
        let revive = self.is(Defect::TouchRevivesExpired);
        match map
            .get_mut(&key)
            .filter(|s| revive || !self.expired(s, now))
        {
            Some(session) => {
                let new = to_millis(expires_at);
                let keep_later = self.is(Defect::TouchOnlyExtends)
                    && new > now
                    && new < session.expires_at_millis();
                if !keep_later {
                    session.set_expires_at_millis(new);
                }
                if self.is(Defect::TouchDropsOwner) {
                    self.unindex(session.owner(), id);
                    session.set_owner(None);
                } else if let Some(owner) = session.owner()
                    && !self.is(Defect::TouchLeavesIndexExpiry)
                    && let Some(entries) =
                        self.index.lock().unwrap().get_mut(&self.owner_key(owner))
                    && let Some(copy) = entries.get_mut(id)
                {
                    copy.set_expires_at_millis(session.expires_at_millis());
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let now = now_millis();
        if let Err(err) = self.check_data(id, session) {
            if self.is(Defect::RefusedCreateLeavesPlaceholder) {
                let mut placeholder = session.clone();
                placeholder.replace_data(Default::default());
                let mut map = self.map.lock().unwrap();
                if self.live_for_write(&map, id, now).is_none() {
                    map.insert(self.key(id), placeholder.with_version(self.fresh()));
                }
            }
            return Err(err);
        }
        if self.is(Defect::DroppedCreateLandsLate) {
            // "Absent" decided now, the session stored later by a task its caller cannot
            // stop, over whatever is there by then.
            if self
                .live_for_write(&self.map.lock().unwrap(), id, now)
                .is_some()
            {
                return Ok(false);
            }
            let (key, stored) = (self.key(id), session.clone().with_version(self.fresh()));
            lands_later(Arc::clone(&self.map), move |map| {
                map.insert(key, stored);
            })
            .await;
            return Ok(true);
        }
        if self.is(Defect::NonAtomicCreate) {
            // Check, let other tasks run, then insert: the classic race.
            if self
                .live_for_write(&self.map.lock().unwrap(), id, now)
                .is_some()
            {
                return Ok(false);
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let fresh = self.fresh();
            self.put(&mut self.map.lock().unwrap(), id, session, fresh, now);
            return Ok(true);
        }
        if self.is(Defect::CreateTrustsSecondLook) {
            // On a collision, look once more and report success if the id is free by then,
            // as if the first attempt had written.
            if self
                .live_for_write(&self.map.lock().unwrap(), id, now)
                .is_some()
            {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                return Ok(self
                    .live_for_write(&self.map.lock().unwrap(), id, now_millis())
                    .is_none());
            }
        }
        let mut map = self.map.lock().unwrap();
        let collides = if self.is(Defect::CreateCollidesWithExpired) {
            map.contains_key(&self.key(id))
        } else {
            self.live_for_write(&map, id, now).is_some()
        };
        if collides {
            return Ok(false);
        }
        let fresh = self.next(None, session);
        self.put(&mut map, id, session, fresh, now);
        Ok(true)
    }

    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        let now = now_millis();
        if let Err(err) = self.check_data(id, session) {
            if self.is(Defect::RefusedWriteRemovesOld) {
                self.map.lock().unwrap().remove(&self.key(id));
            }
            return Err(err);
        }
        if self.is(Defect::DroppedCompareAndSetLosesTheSession) {
            // Remove, let other tasks run, then write: a caller that gives up in between
            // leaves nothing.
            let live = self.live_for_write(&self.map.lock().unwrap(), id, now);
            if live.unwrap_or(0) != expected {
                return Err(Error::conflict(id, expected));
            }
            self.map.lock().unwrap().remove(&self.key(id));
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let next = self.next(live, session);
            return Ok(self.put(&mut self.map.lock().unwrap(), id, session, next, now));
        }
        if self.is(Defect::NonAtomicSetIfVersion) {
            // Compare, let other tasks run, then write: a destroy in between is undone.
            let live = self.live_for_write(&self.map.lock().unwrap(), id, now);
            if live.unwrap_or(0) != expected {
                return Err(Error::conflict(id, expected));
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let next = self.next(live, session);
            return Ok(self.put(&mut self.map.lock().unwrap(), id, session, next, now));
        }
        let mut map = self.map.lock().unwrap();
        if self.is(Defect::PastExpiryWriteIgnoresVersion) && self.expired(session, now) {
            map.remove(&self.key(id));
            return Ok(0);
        }
        let live = self.live_for_write(&map, id, now);
        let current = live.unwrap_or(0);
        let matches = current == expected
            || self.is(Defect::SetIfVersionIgnoresVersion)
            || (self.is(Defect::ZeroMatchesAnything) && expected == 0);
        if !matches {
            return Err(if self.is(Defect::ConflictCarriesStoredVersion) {
                Error::conflict(id, current)
            } else if self.is(Defect::MismatchIsABackendError) {
                Error::backend("set_if_version", Some(id), "version mismatch")
            } else {
                Error::conflict(id, expected)
            });
        }
        let next = if live.is_none() && self.is(Defect::CompareAndSetStartsAtAFixedVersion) {
            // A fixed starting value, high enough to look drawn, on this path only.
            0x0000_9e37_79b9_7f4a
        } else {
            self.next(live, session)
        };
        Ok(self.put(&mut map, id, session, next, now))
    }

    async fn len(&self) -> Result<u64> {
        let now = now_millis();
        let map = self.map.lock().unwrap();
        let live = map
            .iter()
            .filter(|((ns, _), s)| {
                *ns == self.ns && (self.is(Defect::LenCountsExpired) || !self.expired(s, now))
            })
            .count() as u64;
        Ok(if self.is(Defect::LenCapsAt1000) {
            live.min(1000)
        } else {
            live
        })
    }

    async fn is_empty(&self) -> Result<bool> {
        if self.is(Defect::IsEmptyCountsExpired) {
            let map = self.map.lock().unwrap();
            return Ok(!map.keys().any(|(ns, _)| *ns == self.ns));
        }
        Ok(self.len().await? == 0)
    }

    async fn clear(&self) -> Result<()> {
        let mut map = self.map.lock().unwrap();
        if self.is(Defect::ClearClearsEveryStore) {
            map.clear();
        } else {
            let mut mine: Vec<_> = map
                .keys()
                .filter(|(ns, _)| *ns == self.ns)
                .cloned()
                .collect();
            if self.is(Defect::ClearFirstPageOnly) {
                mine.truncate(1000);
            }
            for key in mine {
                map.remove(&key);
            }
        }
        self.written.lock().unwrap().clear();
        if !self.is(Defect::ClearKeepsOwnerIndex) {
            self.index.lock().unwrap().clear();
        }
        Ok(())
    }

    async fn delete_expired(&self) -> Result<u64> {
        let now = now_millis();
        let horizon = if self.is(Defect::DeleteExpiredWithSlack) {
            now + 1000
        } else {
            now
        };
        let mut map = self.map.lock().unwrap();
        let doomed: Vec<_> = map
            .iter()
            .filter(|((ns, _), s)| *ns == self.ns && self.expired(s, horizon))
            .map(|(key, _)| key.clone())
            .collect();
        let mine = map.keys().filter(|(ns, _)| *ns == self.ns).count() as u64;
        for key in &doomed {
            if let Some(gone) = map.remove(key) {
                self.unindex(gone.owner(), &key.1);
            }
        }
        Ok(match self.defect {
            Defect::DeleteExpiredReturnsZero => 0,
            Defect::DeleteExpiredCountsEverything => mine,
            _ => doomed.len() as u64,
        })
    }

    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        let now = now_millis();
        if self.is(Defect::ListsReownedSessions) {
            // Candidates from the index, then each session as it is now, without checking
            // that it still belongs to `owner`.
            let ids = self.indexed_ids(owner);
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let map = self.map.lock().unwrap();
            return Ok(ids
                .into_iter()
                .filter_map(|id| {
                    let session = map.get(&self.key(&id))?;
                    (!self.expired(session, now))
                        .then(|| OwnedSession::of(id, session.clone(), with_data))
                })
                .collect());
        }
        let index = self.index.lock().unwrap();
        let mut listed: Vec<OwnedSession> = index
            .get(&self.owner_key(owner))
            .into_iter()
            .flatten()
            .filter(|(_, s)| self.is(Defect::ListsExpired) || !self.expired(s, now))
            .map(|(id, s)| {
                let with_data = with_data && !self.is(Defect::ListingWithoutData);
                OwnedSession::of(id.clone(), s.clone(), with_data)
            })
            .collect();
        if self.is(Defect::ListingCapsAt1000) {
            listed.truncate(1000);
        }
        let spoiled = self.spoiled.lock().unwrap();
        if self.is(Defect::ListingDropsUndecodable) {
            listed.retain(|entry| !spoiled.contains(&entry.id));
        } else {
            for entry in listed.iter_mut().filter(|e| spoiled.contains(&e.id)) {
                if entry.data.is_some() {
                    let err = Error::decode(&entry.id, "spoiled");
                    *entry = OwnedSession::undecodable(
                        entry.id.clone(),
                        entry.expires_at_millis,
                        entry.version,
                        err,
                    );
                }
            }
        }
        drop(spoiled);
        if self.is(Defect::ListedIdsDestroyNothing) {
            // A stored form of each id that no operation takes back, `destroy` included.
            for entry in &mut listed {
                entry.id = SessionId::new(format!("stored.{}", entry.id.as_str())).unwrap();
            }
        }
        Ok(listed)
    }

    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        let ids = self.indexed_ids(owner);
        if self.is(Defect::MissesConcurrentCreate) {
            // Let writers run between the snapshot and dropping the owner's whole entry: the
            // sessions they wrote for the owner are live but no longer indexed.
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let now = now_millis();
        let mut ended = 0;
        let mut map = self.map.lock().unwrap();
        for id in &ids {
            let except = except == Some(id) && !self.is(Defect::DestroyOwnerIgnoresExcept);
            let key = self.key(id);
            let owned = map
                .get(&key)
                .and_then(Session::owner)
                .is_some_and(|stored| self.owner_matches(owner, stored));
            if except || !owned {
                continue;
            }
            if let Some(gone) = map.remove(&key) {
                let live = !self.expired(&gone, now);
                ended += u64::from(live || self.is(Defect::DestroyOwnerCountsExpired));
                self.unindex(gone.owner(), id);
            }
        }
        if self.is(Defect::MissesConcurrentCreate) {
            self.index.lock().unwrap().remove(owner);
        }
        Ok(ended)
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let limit = limit.max(1);
        let now = now_millis();
        let map = self.map.lock().unwrap();
        let mut live: Vec<(&SessionId, &Session)> = map
            .iter()
            .filter(|((ns, _), s)| {
                *ns == self.ns && (self.is(Defect::ScanReturnsExpired) || !self.expired(s, now))
            })
            .map(|((_, id), s)| (id, s))
            .collect();
        live.sort_by(|a, b| a.0.cmp(b.0));
        let start = match cursor.map(ScanCursor::as_str) {
            None => 0,
            // Two defects: the position is the store's, not the cursor's.
            Some(token) if self.is(Defect::CursorIsAOneShotToken) => {
                self.positions.lock().unwrap().remove(token).unwrap_or(0)
            }
            Some(_) if self.is(Defect::CursorIsTheLastScansPosition) => self
                .positions
                .lock()
                .unwrap()
                .get("last")
                .copied()
                .unwrap_or(0),
            // The defect: a position in today's list, which shifts when others are written.
            Some(offset) if self.is(Defect::ScanCursorIsAnOffset) => offset.parse().unwrap(),
            Some(last) => live.partition_point(|(id, _)| id.as_str() <= last),
        };
        let take = if self.is(Defect::ScanIgnoresLimit) {
            usize::MAX
        } else {
            limit
        };
        let page: Vec<(SessionId, Session)> = live
            .iter()
            .skip(start)
            .take(take)
            .map(|(id, s)| {
                let mut s = (*s).clone();
                if self.is(Defect::ScanDropsOwner) {
                    s.set_owner(None);
                }
                ((*id).clone(), s)
            })
            .collect();
        let end = start + page.len();
        let next = if end >= live.len() || self.is(Defect::ScanEndsAfterOnePage) {
            None
        } else if self.is(Defect::ScanCursorIsAnOffset) {
            Some(ScanCursor::new(end.to_string()))
        } else if self.is(Defect::CursorIsAOneShotToken) {
            let token = session_stores::SessionId::generate().as_str().to_string();
            self.positions.lock().unwrap().insert(token.clone(), end);
            Some(ScanCursor::new(token))
        } else if self.is(Defect::CursorIsTheLastScansPosition) {
            self.positions.lock().unwrap().insert("last".into(), end);
            Some(ScanCursor::new("more"))
        } else {
            page.last().map(|(id, _)| ScanCursor::new(id.as_str()))
        };
        let spoiled = self.spoiled.lock().unwrap();
        let mut undecodable = Vec::new();
        let mut sessions = Vec::with_capacity(page.len());
        for (id, session) in page {
            if !spoiled.contains(&id) {
                sessions.push((id, session));
            } else if self.is(Defect::ScanStopsAtUndecodable) {
                return Err(Error::decode(&id, "spoiled"));
            } else {
                undecodable.push(session_stores::Undecodable::new(
                    Some(id.clone()),
                    Error::decode(&id, "spoiled"),
                ));
            }
        }
        Ok(ScanPage::new(sessions, next).with_undecodable(undecodable))
    }

    async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
        let live = self.get(id).await?.is_some();
        if live {
            self.spoiled.lock().unwrap().insert(id.clone());
        }
        Ok(live)
    }

    fn capabilities(&self) -> Capabilities {
        // Both listed-id defects claim to list stored ids: one lists ids destroy ignores,
        // the other lists the callers' own ids, which work as cookies.
        let stored =
            self.is(Defect::ListedIdsDestroyNothing) || self.is(Defect::ListedIdsAreCookies);
        Capabilities::new()
            .with_owners(true)
            .with_scan(true)
            .with_lists_stored_ids(stored)
    }
}

/// Whether `text` matches the SQL `LIKE` pattern `pattern` (`%` any run, `_` one byte).
fn like(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'%', rest)) => (0..=text.len()).any(|i| like(rest, &text[i..])),
        Some((b'_', rest)) => !text.is_empty() && like(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && like(rest, &text[1..]),
    }
}

async fn failures_of(defect: Defect) -> Vec<&'static str> {
    let shared: Arc<Mutex<Map>> = Arc::default();
    let result = session_stores::conformance::run(move || {
        let store = if defect == Defect::ClearClearsEveryStore {
            Faulty::over(defect, shared.clone())
        } else {
            Faulty::new(defect)
        };
        async move { store }
    })
    .await;
    match result {
        Ok(()) => Vec::new(),
        Err(failures) => {
            eprintln!("{defect:?}: {failures}");
            failures.failed_names()
        }
    }
}

async fn assert_caught(defect: Defect, by: &[&str]) {
    let failed = failures_of(defect).await;
    assert!(
        !failed.is_empty(),
        "the suite passed a store with defect {defect:?}"
    );
    for check in by {
        assert!(
            failed.contains(check),
            "defect {defect:?} was not caught by `{check}`; failed checks: {failed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_store_without_a_defect_passes() {
    assert_eq!(failures_of(Defect::None).await, Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_check_names_an_unknown_check() {
    let err = session_stores::conformance::run_check("no_such_check", || async {
        Faulty::new(Defect::None)
    })
    .await
    .unwrap_err();
    assert!(err.message.contains("no_such_check"), "{err}");
    assert!(session_stores::conformance::check_names().count() >= 50);
}

/// One test per defect: `caught!(test_name, Defect, ["check", ...])`.
macro_rules! caught {
    ($($name:ident: $defect:ident => [$($check:literal),+ $(,)?];)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            assert_caught(Defect::$defect, &[$($check),+]).await;
        }
    )+};
}

caught! {
    catches_a_store_that_ignores_expiry: IgnoresExpiry => [
        "get_never_returns_expired", "expiry_is_honoured_at_sub_second_granularity"];
    catches_an_expiry_equal_to_now_taken_as_live: ExpiryEqualToNowIsLive => [
        "an_expiry_equal_to_now_has_passed"];
    catches_writes_that_continue_an_expired_session: WritesTreatExpiredAsLive => [
        "stale_compare_and_set_after_expiry_conflicts"];
    catches_a_create_that_collides_with_an_expired_session: CreateCollidesWithExpired => [
        "create_over_expired_session_succeeds", "stale_compare_and_set_after_expiry_conflicts"];
    catches_a_touch_that_revives_an_expired_session: TouchRevivesExpired => [
        "touch_absent_returns_false_and_creates_nothing",
        "an_expired_session_is_absent_for_touch_len_and_is_empty"];
    catches_a_touch_that_only_extends: TouchOnlyExtends => ["touch_can_move_the_expiry_earlier"];
    catches_an_is_empty_that_counts_expired_sessions: IsEmptyCountsExpired => [
        "an_expired_session_is_absent_for_touch_len_and_is_empty"];
    catches_a_len_that_counts_expired_sessions: LenCountsExpired => [
        "len_counts_live_sessions_only"];
    catches_a_delete_expired_that_returns_zero: DeleteExpiredReturnsZero => [
        "delete_expired_removes_only_expired", "delete_expired_spares_sessions_about_to_expire"];
    catches_a_delete_expired_that_counts_everything: DeleteExpiredCountsEverything => [
        "delete_expired_removes_only_expired"];
    catches_a_delete_expired_with_slack: DeleteExpiredWithSlack => [
        "delete_expired_spares_sessions_about_to_expire"];
    catches_a_past_expiry_write_that_skips_the_version_check: PastExpiryWriteIgnoresVersion => [
        "writes_with_a_past_expiry_store_nothing"];
    catches_versions_that_restart_at_one: VersionRestartsAtOne => [
        "stale_compare_and_set_after_destroy_conflicts",
        "versions_never_repeat_across_incarnations",
        "create_absent_succeeds_with_a_fresh_version"];
    catches_versions_taken_from_the_clock: VersionFromTheClock => [
        "stale_compare_and_set_after_destroy_conflicts"];
    catches_a_store_that_honours_the_carried_version: HonoursCarriedVersion => [
        "version_inside_a_written_session_is_ignored"];
    catches_a_set_if_version_that_ignores_the_version: SetIfVersionIgnoresVersion => [
        "set_if_version_mismatch_conflicts_and_writes_nothing",
        "set_if_version_zero_means_absent",
        "set_if_version_concurrent_increments_lose_nothing"];
    catches_a_zero_that_matches_a_live_session: ZeroMatchesAnything => [
        "set_if_version_zero_means_absent",
        "set_if_version_mismatch_conflicts_and_writes_nothing"];
    catches_a_conflict_that_carries_the_stored_version: ConflictCarriesStoredVersion => [
        "errors_name_the_session_and_kind"];
    catches_a_mismatch_reported_as_a_backend_error: MismatchIsABackendError => [
        "errors_name_the_session_and_kind",
        "set_if_version_mismatch_conflicts_and_writes_nothing"];
    catches_a_skipped_identical_set_that_misreports_its_version: UnchangedSetMisreportsVersion => [
        "set_of_identical_content_returns_the_stored_version"];
    catches_an_identical_set_that_ignores_the_expiry: IdenticalSetIgnoresExpiry => [
        "identical_data_with_another_expiry_is_a_write"];
    catches_a_skip_cache_that_survives_destroy: SkipCacheSurvivesDestroy => [
        "identical_content_after_destroy_is_a_new_session"];
    catches_a_destroy_that_does_nothing: DestroyDoesNothing => [
        "destroy_removes", "destroy_is_idempotent"];
    catches_a_touch_that_rewrites_data: TouchRewritesData => ["touch_keeps_data_and_version"];
    catches_a_touch_that_writes_back_the_whole_session: TouchWritesBackWholeSession => [
        "touch_racing_destroy_never_revives", "touch_racing_set_keeps_the_written_data"];
    catches_a_non_atomic_create: NonAtomicCreate => ["create_concurrent_exactly_one_wins"];
    catches_a_non_atomic_set: NonAtomicSet => [
        "set_racing_set_if_version_hands_out_each_version_once",
        "concurrent_sets_leave_one_whole_value"];
    catches_an_owner_index_not_updated_on_destroy: IndexNotUpdatedOnDestroy => [
        "sessions_of_lists_the_live_sessions_of_that_owner_only"];
    catches_an_owner_listing_with_expired_sessions: ListsExpired => [
        "sessions_of_lists_the_live_sessions_of_that_owner_only"];
    catches_an_owner_listing_that_does_not_recheck_the_owner: ListsReownedSessions => [
        "a_listing_racing_owner_changes_lists_only_that_owners_versions"];
    catches_a_destroy_owner_that_misses_a_concurrent_create: MissesConcurrentCreate => [
        "destroy_owner_racing_writes_loses_no_session"];
    catches_a_touch_that_drops_the_owner: TouchDropsOwner => [
        "owner_round_trips_through_every_write"];
    catches_an_identical_set_that_ignores_the_owner: IdenticalSetIgnoresOwner => [
        "owner_round_trips_through_every_write"];
    catches_an_owner_change_that_keeps_the_old_index: OwnerChangeKeepsOldIndex => [
        "a_new_owner_moves_the_session_between_listings"];
    catches_a_destroy_owner_that_ignores_the_kept_session: DestroyOwnerIgnoresExcept => [
        "destroy_owner_ends_every_session_but_the_one_kept"];
    catches_a_destroy_owner_that_counts_expired_sessions: DestroyOwnerCountsExpired => [
        "destroy_owner_ends_every_session_but_the_one_kept"];
    catches_a_clear_that_keeps_the_owner_index: ClearKeepsOwnerIndex => [
        "clear_empties_every_owner"];
    catches_owners_shared_between_stores: OwnersSharedAcrossStores => [
        "owners_are_isolated_between_stores"];
    catches_an_owner_listing_capped_at_1000: ListingCapsAt1000 => [
        "an_owner_with_thousands_of_sessions"];
    catches_an_owner_listing_without_data: ListingWithoutData => [
        "sessions_of_lists_the_live_sessions_of_that_owner_only"];
    catches_a_scan_that_returns_expired_sessions: ScanReturnsExpired => [
        "scan_returns_every_live_session_once"];
    catches_a_scan_cursor_that_is_an_offset: ScanCursorIsAnOffset => [
        "scan_under_writes_returns_each_steady_session_once"];
    catches_a_scan_that_ignores_its_limit: ScanIgnoresLimit => [
        "scan_returns_every_live_session_once"];
    catches_a_scan_that_ends_after_one_page: ScanEndsAfterOnePage => [
        "scan_returns_every_live_session_once", "scan_resumes_from_a_saved_cursor"];
    catches_a_scan_that_drops_the_owner: ScanDropsOwner => [
        "scan_returns_every_live_session_once"];
    catches_a_non_atomic_set_if_version: NonAtomicSetIfVersion => [
        "set_if_version_racing_destroy_never_revives"];
    catches_expiries_capped_at_30_days: CapsExpiryAt30Days => ["far_future_expiries_round_trip"];
    catches_a_create_that_trusts_a_second_look: CreateTrustsSecondLook => [
        "create_racing_destroy_stores_only_when_it_returns_true"];
    catches_a_store_that_accepts_data_it_could_not_read_back: AcceptsOverDeepData => [
        "nesting_at_the_limit_round_trips_and_deeper_is_refused"];
    catches_a_refused_write_that_removes_the_old_session: RefusedWriteRemovesOld => [
        "nesting_at_the_limit_round_trips_and_deeper_is_refused"];
    catches_a_refused_create_that_leaves_a_placeholder: RefusedCreateLeavesPlaceholder => [
        "nesting_at_the_limit_round_trips_and_deeper_is_refused"];
    catches_an_encode_error_that_names_another_session: EncodeErrorNamesNoSession => [
        "errors_name_the_session_and_kind"];
    catches_integral_floats_turned_into_integers: IntegralFloatsBecomeIntegers => [
        "round_trip_edge_values_exactly"];
    catches_normalized_line_endings: NormalizesLineEndings => ["round_trip_edge_values_exactly"];
    catches_dropped_null_members: DropsNullMembers => ["round_trip_edge_values_exactly"];
    catches_case_insensitive_ids: IdsCaseInsensitive => ["ids_that_differ_slightly_are_distinct"];
    catches_truncated_ids: IdsTruncatedTo64 => ["ids_that_differ_slightly_are_distinct"];
    catches_a_destroy_by_prefix: DestroyByPrefix => ["ids_that_differ_slightly_are_distinct"];
    catches_dots_taken_for_underscores: DotsAreUnderscores => [
        "ids_that_differ_slightly_are_distinct"];
    catches_a_len_that_stops_at_a_thousand: LenCapsAt1000 => ["len_and_clear_at_scale"];
    catches_a_clear_of_the_first_page_only: ClearFirstPageOnly => ["len_and_clear_at_scale"];
    catches_a_clear_that_clears_every_store: ClearClearsEveryStore => [
        "stores_from_the_factory_are_isolated"];
    catches_nul_stripped_from_strings: StripsNulFromStrings => [
        "strings_with_control_characters_round_trip_or_are_refused"];
    catches_fresh_versions_from_a_small_range: FreshVersionsFromASmallRange => [
        "fresh_versions_span_the_whole_range_on_every_path"];
    catches_fresh_versions_from_a_counter: FreshVersionsFromACounter => [
        "fresh_versions_span_the_whole_range_on_every_path"];
    catches_a_compare_and_set_that_starts_at_a_fixed_version: CompareAndSetStartsAtAFixedVersion => [
        "fresh_versions_span_the_whole_range_on_every_path"];
    catches_an_index_expiry_that_touch_does_not_move: TouchLeavesIndexExpiry => [
        "a_listing_follows_expiries_moved_by_touch_and_writes"];
    catches_an_index_that_keeps_the_first_expiry: IndexKeepsFirstExpiry => [
        "a_listing_follows_expiries_moved_by_touch_and_writes"];
    catches_case_insensitive_owners: OwnersCaseInsensitive => [
        "look_alike_owners_are_different_owners"];
    catches_trimmed_owners: OwnersTrimmed => ["look_alike_owners_are_different_owners"];
    catches_unicode_normalized_owners: OwnersNormalized => [
        "look_alike_owners_are_different_owners"];
    catches_a_destroy_owner_by_pattern: DestroyOwnerByPattern => [
        "look_alike_owners_are_different_owners"];
    catches_a_one_shot_cursor: CursorIsAOneShotToken => [
        "a_saved_cursor_resumes_exactly_after_other_scans_and_writes"];
    catches_a_cursor_that_is_the_last_scans_position: CursorIsTheLastScansPosition => [
        "a_saved_cursor_resumes_exactly_after_other_scans_and_writes"];
    catches_a_dropped_touch_that_lands_later: DroppedTouchLandsLate => [
        "operations_dropped_midway_never_revive_duplicate_or_lose"];
    catches_a_dropped_create_that_lands_later: DroppedCreateLandsLate => [
        "operations_dropped_midway_never_revive_duplicate_or_lose"];
    catches_a_dropped_compare_and_set_that_loses_the_session: DroppedCompareAndSetLosesTheSession => [
        "operations_dropped_midway_never_revive_duplicate_or_lose"];
    catches_listed_ids_that_destroy_ignores: ListedIdsDestroyNothing => [
        "a_listed_id_ends_exactly_that_session"];
    catches_listed_ids_that_work_as_cookies: ListedIdsAreCookies => [
        "a_listed_id_ends_exactly_that_session"];
    catches_owned_data_that_loses_a_reserved_looking_key: OwnedDataLosesReservedKey => [
        "owned_sessions_keep_every_data_key"];
    catches_a_scan_that_stops_at_an_undecodable_entry: ScanStopsAtUndecodable => [
        "undecodable_entries_are_reported_and_never_stop_scans_or_listings"];
    catches_a_listing_that_drops_an_undecodable_entry: ListingDropsUndecodable => [
        "undecodable_entries_are_reported_and_never_stop_scans_or_listings"];
}
