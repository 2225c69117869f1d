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

/// What a request loaded: the version, and a fingerprint of each top-level value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    pub(crate) version: u64,
    prints: Map<String, Value>,
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
        }
    }

    /// The stamp to put under [`LOADED_KEY`].
    pub(crate) fn into_value(self) -> Value {
        let mut stamp = Map::with_capacity(2);
        stamp.insert("v".into(), Value::from(self.version));
        stamp.insert("k".into(), Value::Object(self.prints));
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

fn gone(id: &SessionId) -> Saved {
    tracing::debug!(
        session = %id.hint(),
        "save dropped: the session was destroyed, ended or expired since this request loaded it"
    );
    Saved::Gone
}

#[cfg(test)]
mod tests;
