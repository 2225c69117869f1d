//! What a request's save does, shared by the adapters: a compare-and-set on the version the
//! request loaded, a three-way merge on a conflict, and never a session brought back.
//!
//! The request carries what it loaded under [`LOADED_KEY`] inside its own data (the
//! adapters put it there on `load` and strip it before anything is stored): the version it
//! loaded and, for each top-level key, a 64-bit fingerprint of the value it loaded. The
//! fingerprints are keyed SipHash with a key drawn at random once per process, so no input
//! can be crafted to collide; they are all the merge needs to tell which side changed a key,
//! and they cost no copy of the data and no memory outside the request.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::session::{Owner, Session, SessionId};
use crate::store::SessionStore;

/// The data key under which a loaded session carries what it loaded, from `load` to `save`.
/// Reserved: a stored session's own value under this key is not kept by the adapters.
pub const LOADED_KEY: &str = "session_stores.loaded";

/// How many times a save re-reads and merges when other requests keep writing the same
/// session between its read and its write.
pub(crate) const MAX_SAVE_ATTEMPTS: usize = 8;

/// What a save does with a key that both the saving request and another request changed
/// (to different values) since the saving request loaded the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnConflict {
    /// The saving request's value wins (the default): the later save is the later intent.
    #[default]
    SaverWins,
    /// The save fails with [`Error::Conflict`](crate::Error::Conflict) and writes nothing; the
    /// middleware answers the request with an error.
    Fail,
}

/// What a request loaded: the version, and a fingerprint of each top-level value; with the id
/// and expiry it was loaded with, when the adapter knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    pub(crate) version: u64,
    prints: Map<String, Value>,
    /// The id the session was loaded under (to follow it through a rotation).
    pub(crate) origin: Option<String>,
    /// The stored expiry when it was loaded, in milliseconds (for a throttled touch).
    pub(crate) expires_at: Option<i64>,
}

impl Loaded {
    /// What a request that loaded `session` remembers of it.
    pub(crate) fn of(session: &Session) -> Loaded {
        let prints = session
            .data()
            .iter()
            .map(|(key, value)| (key.clone(), Value::from(fingerprint(value))))
            .collect();
        Loaded {
            version: session.version(),
            prints,
            origin: None,
            expires_at: None,
        }
    }

    /// What a request that loaded `session` under `id` remembers of it, its id and expiry
    /// included.
    #[cfg_attr(
        not(any(
            feature = "tower-sessions",
            feature = "tower-sessions-014",
            feature = "actix-session"
        )),
        allow(dead_code)
    )]
    pub(crate) fn of_id(id: &SessionId, session: &Session) -> Loaded {
        Loaded {
            origin: Some(id.as_str().to_owned()),
            expires_at: Some(session.expires_at_millis()),
            ..Loaded::of(session)
        }
    }

    /// Whether `data` holds exactly the values that were loaded (by their fingerprints).
    #[cfg_attr(
        not(any(feature = "tower-sessions", feature = "tower-sessions-014")),
        allow(dead_code)
    )]
    pub(crate) fn unchanged(&self, data: &Map<String, Value>) -> bool {
        data.len() == self.prints.len()
            && data
                .iter()
                .all(|(key, value)| self.print_of(key) == Some(fingerprint(value)))
    }

    /// The same, at `version` (the version a rotation moved the session to).
    #[cfg_attr(
        not(any(
            feature = "tower-sessions",
            feature = "tower-sessions-014",
            feature = "actix-session"
        )),
        allow(dead_code)
    )]
    pub(crate) fn at_version(&self, version: u64) -> Loaded {
        Loaded {
            version,
            ..self.clone()
        }
    }

    /// The stamp to put under [`LOADED_KEY`].
    pub(crate) fn into_value(self) -> Value {
        let mut stamp = Map::with_capacity(4);
        stamp.insert("v".into(), Value::from(self.version));
        stamp.insert("k".into(), Value::Object(self.prints));
        if let Some(origin) = self.origin {
            stamp.insert("i".into(), Value::from(origin));
        }
        if let Some(expires_at) = self.expires_at {
            stamp.insert("e".into(), Value::from(expires_at));
        }
        Value::Object(stamp)
    }

    /// The stamp read back; `None` if it is not one of ours (then the save is treated as one
    /// of a request that loaded nothing it can name).
    pub(crate) fn from_value(value: &Value) -> Option<Loaded> {
        let stamp = value.as_object()?;
        let version = stamp.get("v")?.as_u64()?;
        let prints = stamp.get("k")?.as_object()?;
        if !prints.values().all(Value::is_u64) {
            return None;
        }
        Some(Loaded {
            version,
            prints: prints.clone(),
            origin: stamp.get("i").and_then(Value::as_str).map(str::to_owned),
            expires_at: stamp.get("e").and_then(Value::as_i64),
        })
    }

    fn print_of(&self, key: &str) -> Option<u64> {
        self.prints.get(key).and_then(Value::as_u64)
    }
}

fn hasher() -> impl Hasher {
    static KEYS: OnceLock<std::hash::RandomState> = OnceLock::new();
    KEYS.get_or_init(std::hash::RandomState::new).build_hasher()
}

/// A keyed 64-bit fingerprint of a JSON value. Equal values (in the sense of `==`) have
/// equal fingerprints whatever the order of their objects' keys.
pub(crate) fn fingerprint(value: &Value) -> u64 {
    let mut h = hasher();
    feed(&mut h, value);
    h.finish()
}

fn feed(h: &mut impl Hasher, value: &Value) {
    match value {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => {
            h.write_u8(1);
            h.write_u8(u8::from(*b));
        }
        Value::Number(n) => {
            // As `==` does: a positive integer, a negative one and a float are never equal
            // (1 != 1.0), so each kind has its own tag; no allocation.
            if let Some(u) = n.as_u64() {
                h.write_u8(2);
                h.write_u64(u);
            } else if let Some(i) = n.as_i64() {
                h.write_u8(6);
                h.write_i64(i);
            } else {
                h.write_u8(7);
                h.write_u64(n.as_f64().map_or(0, f64::to_bits));
            }
        }
        Value::String(s) => {
            h.write_u8(3);
            h.write(s.as_bytes());
            h.write_u8(0xff);
        }
        Value::Array(items) => {
            h.write_u8(4);
            h.write_usize(items.len());
            for item in items {
                feed(h, item);
            }
        }
        Value::Object(map) => {
            // Order-independent: the sum of each entry's own fingerprint.
            h.write_u8(5);
            h.write_usize(map.len());
            let mut sum = 0u64;
            for (key, item) in map {
                let mut entry = hasher();
                entry.write(key.as_bytes());
                entry.write_u8(0xff);
                feed(&mut entry, item);
                sum = sum.wrapping_add(entry.finish());
            }
            h.write_u64(sum);
        }
    }
}

/// The three-way merge of one top-level key at a time: a key changed by one side keeps that
/// change (a removal is a change); a key both sides changed to the same value keeps it; a key
/// both sides changed differently takes `ours` under [`OnConflict::SaverWins`] and is an
/// `Err` naming nothing but the fact under [`OnConflict::Fail`].
pub(crate) fn merge(
    loaded: &Loaded,
    ours: &Map<String, Value>,
    theirs: &Map<String, Value>,
    policy: OnConflict,
) -> std::result::Result<Map<String, Value>, ()> {
    let mut merged = Map::with_capacity(ours.len().max(theirs.len()));
    let keys = ours
        .keys()
        .chain(theirs.keys().filter(|key| !ours.contains_key(*key)));
    for key in keys {
        let base = loaded.print_of(key);
        let mine = ours.get(key);
        let other = theirs.get(key);
        let take = if mine.map(fingerprint) == base {
            other
        } else if other.map(fingerprint) == base || mine == other {
            mine
        } else {
            match policy {
                OnConflict::SaverWins => mine,
                OnConflict::Fail => return Err(()),
            }
        };
        if let Some(value) = take {
            merged.insert(key.clone(), value.clone());
        }
    }
    Ok(merged)
}

/// What became of a save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Saved {
    /// Written; the new version (0 when the saved expiry was already past and the session was
    /// deleted).
    Written(u64),
    /// The session was gone when the save came (destroyed, ended by `destroy_owner`, expired):
    /// nothing was written.
    Gone,
    /// The id was rotated (a request in flight with the old id during its grace window):
    /// the old id is read-only, nothing was written, and the request keeps its id (handing
    /// it the new one would hand the session to whoever holds the old id).
    ReadOnly,
}

/// Saves a request's `data` and expiry under `id` without losing another request's update
/// and without bringing back a session that is gone. `loaded` is what the request loaded
/// (`None`: it carries nothing, for example after it cleared its data: the save then
/// replaces the stored session wholesale, still only if one exists). `owner_of` names the
/// owner of the data to be written.
pub(crate) async fn save<S, F>(
    store: &S,
    id: &SessionId,
    data: Map<String, Value>,
    expires_at: i64,
    loaded: Option<&Loaded>,
    policy: OnConflict,
    owner_of: F,
) -> Result<Saved>
where
    S: SessionStore + ?Sized,
    F: Fn(&Map<String, Value>) -> Result<Option<Owner>>,
{
    let owner = owner_of(&data)?;
    let mut expected = match loaded {
        Some(loaded) => loaded.version,
        None => match store.get(id).await? {
            Some(current) => current.version(),
            None => return Ok(gone(id)),
        },
    };
    let mut session = Session::from_parts(data, expires_at, 0).with_owner(owner);
    // The request's own data, kept aside only once a conflict calls for a merge.
    let mut ours: Option<Map<String, Value>> = None;
    for _ in 0..MAX_SAVE_ATTEMPTS {
        match store.set_if_version(id, &session, expected).await {
            Ok(version) => return Ok(Saved::Written(version)),
            Err(Error::Rotated { .. }) => {
                tracing::debug!(
                    session = %id.hint(),
                    "save dropped: the id was rotated and is read-only for its grace window"
                );
                return Ok(Saved::ReadOnly);
            }
            Err(err) if err.is_conflict() => {}
            Err(err) => return Err(err),
        }
        let Some(theirs) = store.get(id).await? else {
            return Ok(gone(id));
        };
        if let Some(loaded) = loaded {
            let ours = ours.get_or_insert_with(|| session.data().clone());
            let merged = merge(loaded, ours, theirs.data(), policy)
                .map_err(|()| Error::conflict(id, loaded.version))?;
            let owner = owner_of(&merged)?;
            let expiry = expires_at.max(theirs.expires_at_millis());
            session = Session::from_parts(merged, expiry, 0).with_owner(owner);
        }
        expected = theirs.version();
    }
    Err(Error::conflict(id, expected))
}

/// `session` with an absolute expiry `lifetime` from now, when the adapter is configured
/// with one (`with_absolute_lifetime`): what every adapter does to a session it creates.
pub(crate) fn with_absolute_lifetime(
    mut session: Session,
    lifetime: Option<std::time::Duration>,
) -> Session {
    if let Some(lifetime) = lifetime {
        let lifetime = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
        let absolute = crate::session::now_millis().saturating_add(lifetime);
        session.set_absolute_expiry_millis(Some(absolute));
    }
    session
}

/// Whether a session whose data did not change should have its expiry moved from
/// `loaded_expiry` to `new_expiry` now: only when that moves it by at least `fraction` of the
/// idle timeout (`new_expiry - now`). A throttled touch skips the rest, as Go's scs and
/// axum_session do: the stored expiry then lags the cookie's by less than that fraction.
#[cfg_attr(
    not(any(
        feature = "tower-sessions",
        feature = "tower-sessions-014",
        feature = "actix-session"
    )),
    allow(dead_code)
)]
pub(crate) fn touch_due(loaded_expiry: i64, new_expiry: i64, now: i64, fraction: f64) -> bool {
    let idle = new_expiry.saturating_sub(now).max(0) as f64;
    let moved = new_expiry.saturating_sub(loaded_expiry) as f64;
    moved >= fraction.clamp(0.0, 1.0) * idle
}

/// Ids marked for a rotation with a grace window, from the handler's call (the adapters'
/// `cycle_id`/`renew` helpers) to the middleware's `delete` of the old id, then from that
/// `delete` (which rotates instead of destroying) to the `create`/`save` of the new session.
/// A framework calls `delete` both for a logout and for a cycle of the id, so only an id the
/// application marked is rotated; every other `delete` destroys at once. Entries older than
/// a minute are dropped, and at most [`MAX_PENDING`] are held: an unmarked id is a plain
/// cycle (no grace), never a session kept.
#[derive(Debug, Default)]
#[cfg_attr(
    not(any(
        feature = "tower-sessions",
        feature = "tower-sessions-014",
        feature = "actix-session"
    )),
    allow(dead_code)
)]
pub(crate) struct Rotations(std::sync::Mutex<std::collections::HashMap<SessionId, Pending>>);

#[derive(Debug)]
#[cfg_attr(
    not(any(
        feature = "tower-sessions",
        feature = "tower-sessions-014",
        feature = "actix-session"
    )),
    allow(dead_code)
)]
struct Pending {
    grace: std::time::Duration,
    since: std::time::Instant,
    moved: Option<(SessionId, u64)>,
}

/// The most rotations pending at once.
#[cfg_attr(
    not(any(
        feature = "tower-sessions",
        feature = "tower-sessions-014",
        feature = "actix-session"
    )),
    allow(dead_code)
)]
pub(crate) const MAX_PENDING: usize = 10_000;

#[cfg_attr(
    not(any(
        feature = "tower-sessions",
        feature = "tower-sessions-014",
        feature = "actix-session"
    )),
    allow(dead_code)
)]
impl Rotations {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<SessionId, Pending>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `old` for a rotation with `grace`. Returns whether it was marked.
    pub(crate) fn mark(&self, old: SessionId, grace: std::time::Duration) -> bool {
        let mut pending = self.lock();
        pending.retain(|_, p| p.since.elapsed() < std::time::Duration::from_secs(60));
        if pending.len() >= MAX_PENDING {
            return false;
        }
        let since = std::time::Instant::now();
        pending.insert(
            old,
            Pending {
                grace,
                since,
                moved: None,
            },
        );
        true
    }

    /// The grace of a marked `old` that has not moved yet.
    pub(crate) fn marked(&self, old: &SessionId) -> Option<std::time::Duration> {
        let pending = self.lock();
        pending
            .get(old)
            .filter(|p| p.moved.is_none())
            .map(|p| p.grace)
    }

    /// Records that `old` moved to `new` at `version`.
    pub(crate) fn moved(&self, old: &SessionId, new: SessionId, version: u64) {
        if let Some(p) = self.lock().get_mut(old) {
            p.moved = Some((new, version));
        }
    }

    /// Where `old` moved to, taken out.
    pub(crate) fn take_moved(&self, old: &str) -> Option<(SessionId, u64)> {
        let id = SessionId::new(old).ok()?;
        let mut pending = self.lock();
        pending.get(&id)?.moved.as_ref()?;
        pending.remove(&id).and_then(|p| p.moved)
    }

    /// Forgets `old`.
    pub(crate) fn forget(&self, old: &SessionId) {
        self.lock().remove(old);
    }
}

/// The `delete` of a marked id: rotates it to a fresh id from `fresh` with `grace` instead
/// of destroying it, so requests in flight with it keep reading it, read-only. `None` when
/// there was nothing to move (the session was gone).
#[cfg_attr(
    not(any(
        feature = "tower-sessions",
        feature = "tower-sessions-014",
        feature = "actix-session"
    )),
    allow(dead_code)
)]
pub(crate) async fn rotate_away<S: SessionStore + ?Sized>(
    store: &S,
    old: &SessionId,
    grace: std::time::Duration,
    mut fresh: impl FnMut() -> Result<SessionId>,
) -> Result<Option<(SessionId, u64)>> {
    for _ in 0..MAX_ROTATE_ATTEMPTS {
        let new = fresh()?;
        match store.rotate(old, &new, grace).await? {
            crate::store::Rotation::Moved { version } => return Ok(Some((new, version))),
            crate::store::Rotation::Taken => continue,
            _ => return Ok(None),
        }
    }
    Err(Error::Backend {
        operation: "rotate",
        id: Some(old.into()),
        source: "the store reported every fresh id taken".into(),
    })
}

/// How many fresh ids a rotation tries before it gives up (a broken store that reports every
/// id taken).
const MAX_ROTATE_ATTEMPTS: usize = 16;

fn gone(id: &SessionId) -> Saved {
    tracing::debug!(
        session = %id.hint(),
        "save dropped: the session was destroyed, ended or expired since this request loaded it"
    );
    Saved::Gone
}

#[cfg(test)]
mod tests;
