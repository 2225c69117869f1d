//! The checks. Each takes a [`Factory`], makes its own fresh store, and returns `Err(message)`
//! on the first broken contract sentence it finds.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{CheckResult, Factory};

use crate::error::Error;
use crate::session::{Session, SessionId, now_millis};

/// Fails the check with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Unwraps a store result, failing the check with the error and its source chain.
macro_rules! call {
    ($what:literal, $e:expr) => {
        match $e {
            Ok(value) => value,
            Err(err) => {
                return Err(format!(
                    "{} failed: {}",
                    $what,
                    $crate::conformance::checks::chain(&err)
                ))
            }
        }
    };
}

/// An error and its causes, one line (the crate's own).
pub(super) use crate::error::chain;

// The checks, by theme. Declared after the macros above so that they can use them.
mod basics;
mod boundaries;
mod cancellation;
mod compare_and_set;
mod contention;
mod create;
mod dyn_store;
mod expiry;
mod fidelity;
mod ids;
mod lifetimes;
mod owners;
mod races;
mod round_trips;
mod scan;
mod touch;
mod versions;
mod whole_store;

pub(super) use basics::*;
pub(super) use boundaries::*;
pub(super) use cancellation::*;
pub(super) use compare_and_set::*;
pub(super) use contention::*;
pub(super) use create::*;
pub(super) use dyn_store::*;
pub(super) use expiry::*;
pub(super) use fidelity::*;
pub(super) use ids::*;
pub(super) use lifetimes::*;
pub(super) use owners::*;
pub(super) use races::*;
pub(super) use round_trips::*;
pub(super) use scan::*;
pub(super) use touch::*;
pub(super) use versions::*;
pub(super) use whole_store::*;

pub(super) const HOUR: Duration = Duration::from_secs(3600);

pub(super) fn id() -> SessionId {
    SessionId::generate()
}

pub(super) fn session_with(ttl: Duration, data: Value) -> Session {
    let mut session = Session::new(ttl);
    if let Value::Object(map) = data {
        session.replace_data(map);
    }
    session
}

pub(super) fn sample() -> Session {
    session_with(HOUR, json!({"user": "ada", "n": 1, "tags": ["a", "b"]}))
}

pub(super) fn in_the_past() -> Session {
    session_with(Duration::ZERO, json!({"stale": true})).with_expires_at(-1000)
}

pub(super) trait PastExt {
    fn with_expires_at(self, offset_ms: i64) -> Self;
}

impl PastExt for Session {
    fn with_expires_at(mut self, offset_ms: i64) -> Self {
        self.set_expires_at_millis(now_millis() + offset_ms);
        self
    }
}

/// Compares what `get` returned with what was written (data and expiry, not version).
pub(super) fn same_content(got: &Session, want: &Session) -> CheckResult {
    ensure!(
        got.data() == want.data(),
        "get returned different data than was written"
    );
    ensure!(
        got.expires_at_millis() == want.expires_at_millis(),
        "get returned expiry {} ms, but {} ms was written",
        got.expires_at_millis(),
        want.expires_at_millis()
    );
    Ok(())
}

/// The result of a spawned task: its panic or its store error as a check failure.
pub(super) fn joined<T>(
    what: &str,
    result: Result<crate::error::Result<T>, tokio::task::JoinError>,
) -> Result<T, String> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(format!("{what} failed: {}", chain(&err))),
        Err(join) => Err(format!("{what} panicked or was cancelled: {join}")),
    }
}

/// Fails unless `version` is one a store may assign to a stored session.
pub(super) fn valid_version(what: &str, version: u64) -> CheckResult {
    ensure!(
        (1..=crate::session::MAX_VERSION).contains(&version),
        "{what} has version {version}, outside 1..=MAX_VERSION"
    );
    Ok(())
}

/// Fails unless `err` names the session `id` (as its shortened hint).
pub(super) fn names_the_session(err: &Error, id: &SessionId, what: &str) -> CheckResult {
    ensure!(
        err.session() == Some(&id.hint()),
        "{what} names session {:?}, not the session it is about ({:?}): {err}",
        err.session(),
        id.hint()
    );
    Ok(())
}

pub(super) async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Expiry windows (ms) for checks that must see a session live before it expires: a store too
/// slow to answer within the first is tried with the next, so a loaded machine does not fail a
/// correct store. The last is long because some checks need several writes to land within
/// one window (the lifetimes checks: a write, a touch, another write and a read), and a
/// server syncing its log beside a bulk load can take seconds for each; a fast store never
/// reaches it.
pub(super) const WINDOWS: [i64; 4] = [300, 1500, 5000, 15_000];

pub(super) fn too_slow() -> String {
    format!(
        "the store took longer than {} ms to answer the few calls the check needs within one \
         expiry window, so the check could not tell",
        WINDOWS[WINDOWS.len() - 1]
    )
}

pub(super) fn nested(depth: usize) -> Value {
    // `depth` levels in all, counting the session's data object itself.
    let mut value = json!("leaf");
    for level in 0..depth.saturating_sub(1) {
        // Built by hand: `json!` would re-serialize the whole value at every level.
        value = if level % 2 == 0 {
            Value::Array(vec![value, Value::from(level)])
        } else {
            let mut map = Map::new();
            map.insert("k".into(), value);
            map.insert("n".into(), Value::from(level));
            Value::Object(map)
        };
    }
    let mut data = Map::new();
    data.insert("root".into(), value);
    Value::Object(data)
}

/// Rounds of each contention check: every round is a fresh chance to catch a lost race.
pub(super) const RACE_ROUNDS: usize = 3;
