//! The checks. Each takes a [`Factory`], makes its own fresh store, and returns `Err(message)`
//! on the first broken contract sentence it finds.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::{CheckResult, Factory};

use crate::error::{Error, ErrorKind};
use crate::session::{Session, SessionId, now_millis};
use crate::store::SessionStore;

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

pub(super) fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// The newer checks, by theme. Declared after the macros above so that they can use them.
mod boundaries;
mod fidelity;
mod owners;
mod races;
mod scan;
mod versions;

pub(super) use boundaries::*;
pub(super) use fidelity::*;
pub(super) use owners::*;
pub(super) use races::*;
pub(super) use scan::*;
pub(super) use versions::*;

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

pub(super) async fn get_absent_is_none(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let got = call!("get", store.get(&id()).await);
    ensure!(
        got.is_none(),
        "get of an id never written returned a session"
    );
    Ok(())
}

pub(super) async fn set_then_get_round_trips(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (id, session) = (id(), sample());
    let version = call!("set", store.set(&id, &session).await);
    valid_version("the first set", version)?;
    let got = call!("get", store.get(&id).await);
    let got = got.ok_or("get after set returned None")?;
    same_content(&got, &session)?;
    ensure!(
        got.version() == version,
        "get after the first set returned version {}, but set returned {version}",
        got.version()
    );
    Ok(())
}

pub(super) async fn set_overwrites_and_advances_version(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let first = call!("set", store.set(&id, &sample()).await);
    let second = session_with(HOUR * 2, json!({"other": "value"}));
    let version = call!("second set", store.set(&id, &second).await);
    ensure!(
        version == first + 1,
        "the second set returned version {version}, not {} (the first set's plus one)",
        first + 1
    );
    let got = call!("get", store.get(&id).await).ok_or("get after two sets returned None")?;
    same_content(&got, &second)?;
    ensure!(
        !got.data().contains_key("user"),
        "set merged the old data into the new session instead of replacing it"
    );
    ensure!(
        got.version() == first + 1,
        "stored version is {}, not {}",
        got.version(),
        first + 1
    );
    Ok(())
}

pub(super) async fn set_of_identical_content_returns_the_stored_version(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let (id, session) = (id(), sample());
    let first = call!("set", store.set(&id, &session).await);
    let again = call!("set of identical content", store.set(&id, &session).await);
    ensure!(
        again == first || again == first + 1,
        "set of content identical to the stored session returned version {again}, \
         not {first} (skipped) or {} (rewritten)",
        first + 1
    );
    let got = call!("get", store.get(&id).await).ok_or("the session vanished")?;
    same_content(&got, &session)?;
    ensure!(
        got.version() == again,
        "set returned version {again} but get shows version {}",
        got.version()
    );
    // The returned version is the stored one: a compare-and-set on it succeeds...
    let changed = session_with(HOUR, json!({"user": "grace"}));
    let next = call!(
        "set_if_version on the returned version",
        store.set_if_version(&id, &changed, again).await
    );
    ensure!(
        next == again + 1,
        "set_if_version returned {next}, not {}",
        again + 1
    );
    // ...and a set of different content after it always advances the version.
    let after = call!("set of changed content", store.set(&id, &session).await);
    ensure!(
        after == next + 1,
        "set of changed content returned {after}, not {}",
        next + 1
    );
    Ok(())
}

pub(super) async fn set_with_past_expiry_deletes(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    call!("set", store.set(&id, &sample()).await);
    let version = call!(
        "set with a past expiry",
        store.set(&id, &in_the_past()).await
    );
    ensure!(
        version == 0,
        "set with a past expiry returned version {version}, not 0"
    );
    let got = call!("get", store.get(&id).await);
    ensure!(
        got.is_none(),
        "get returned a session after set with a past expiry"
    );
    let fresh = id_fresh_past(&*store).await?;
    ensure!(
        fresh.is_none(),
        "set with a past expiry of a new id created a session"
    );
    ensure!(
        call!("len", store.len().await) == 0,
        "len counts a session that was set with a past expiry"
    );
    Ok(())
}

async fn id_fresh_past(store: &dyn SessionStore) -> Result<Option<Session>, String> {
    let id = id();
    call!(
        "set with a past expiry",
        store.set(&id, &in_the_past()).await
    );
    Ok(call!("get", store.get(&id).await))
}

/// Expiry windows (ms) for checks that must see a session live before it expires: a store too
/// slow to answer within the first is tried with the next, so a loaded machine does not fail a
/// correct store.
pub(super) const WINDOWS: [i64; 3] = [300, 1500, 5000];

pub(super) fn too_slow() -> String {
    format!(
        "the store took longer than {} ms to answer a set and a read, so the check could not \
         tell",
        WINDOWS[WINDOWS.len() - 1]
    )
}

pub(super) async fn get_never_returns_expired(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    for window in WINDOWS {
        let id = id();
        let session = sample().with_expires_at(window);
        call!("set", store.set(&id, &session).await);
        if call!("get", store.get(&id).await).is_none() {
            // Only a failure if the clock proves the session was still live.
            ensure!(
                now_millis() >= session.expires_at_millis(),
                "a session {window} ms from expiry was not returned"
            );
            continue;
        }
        sleep_ms(window as u64 + 150).await;
        ensure!(
            call!("get", store.get(&id).await).is_none(),
            "get returned a session after its expiry"
        );
        return Ok(());
    }
    Err(too_slow())
}

pub(super) async fn expiry_is_honoured_at_sub_second_granularity(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (short, long) = (id(), id());
    call!(
        "set",
        store.set(&short, &sample().with_expires_at(250)).await
    );
    let long_session = sample().with_expires_at(1500);
    call!("set", store.set(&long, &long_session).await);
    sleep_ms(600).await;
    ensure!(
        call!("get", store.get(&short).await).is_none(),
        "a session that expired 350 ms ago was returned"
    );
    let got = call!("get", store.get(&long).await);
    // Only a failure if the clock proves the long session was still live.
    ensure!(
        got.is_some() || now_millis() >= long_session.expires_at_millis(),
        "a session with about 900 ms left was not returned (expiry rounded to whole seconds?)"
    );
    Ok(())
}

pub(super) async fn destroy_removes(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    call!("set", store.set(&id, &sample()).await);
    call!("destroy", store.destroy(&id).await);
    ensure!(
        call!("get", store.get(&id).await).is_none(),
        "get returned a session after destroy"
    );
    ensure!(
        call!("len", store.len().await) == 0,
        "len counts a destroyed session"
    );
    Ok(())
}

pub(super) async fn destroy_is_idempotent(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    call!("destroy of an unknown id", store.destroy(&id).await);
    call!("set", store.set(&id, &sample()).await);
    call!("destroy", store.destroy(&id).await);
    call!("second destroy", store.destroy(&id).await);
    ensure!(
        call!("get", store.get(&id).await).is_none(),
        "get returned a session after two destroys"
    );
    call!("set after destroy", store.set(&id, &sample()).await);
    ensure!(
        call!("get", store.get(&id).await).is_some(),
        "a set after two destroys stored nothing"
    );
    Ok(())
}

pub(super) async fn touch_moves_expiry_only(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let mut touched = None;
    for window in WINDOWS {
        let session = sample().with_expires_at(window);
        call!("set", store.set(&id, &session).await);
        let new_expiry = SystemTime::now() + HOUR;
        if call!("touch", store.touch(&id, new_expiry).await) {
            touched = Some((window, new_expiry));
            break;
        }
        ensure!(
            now_millis() >= session.expires_at_millis(),
            "touch of a live session returned false"
        );
    }
    let (window, new_expiry) = touched.ok_or_else(too_slow)?;
    sleep_ms(window as u64 + 150).await;
    let got = call!("get", store.get(&id).await)
        .ok_or("the session expired at its old expiry: touch did not move it")?;
    let want = crate::session::to_millis(new_expiry);
    ensure!(
        got.expires_at_millis() == want,
        "after touch the expiry is {} ms, not {want} ms",
        got.expires_at_millis()
    );
    Ok(())
}

pub(super) async fn touch_keeps_data_and_version(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (id, session) = (id(), sample());
    let version = call!("set", store.set(&id, &session).await);
    ensure!(
        call!(
            "touch",
            store.touch(&id, SystemTime::now() + HOUR * 5).await
        ),
        "touch of a live session returned false"
    );
    let got = call!("get", store.get(&id).await).ok_or("get after touch returned None")?;
    ensure!(got.data() == session.data(), "touch changed the data");
    ensure!(
        got.version() == version,
        "touch changed the version from {version} to {}: touch must not rewrite the session",
        got.version()
    );
    // A compare-and-set based on the version read before the touch still succeeds.
    let next = call!(
        "set_if_version after touch",
        store.set_if_version(&id, &sample(), version).await
    );
    ensure!(
        next == version + 1,
        "set_if_version after touch returned {next}, not {}",
        version + 1
    );
    Ok(())
}

pub(super) async fn touch_absent_returns_false_and_creates_nothing(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let existed = call!("touch", store.touch(&id, SystemTime::now() + HOUR).await);
    ensure!(!existed, "touch of an unknown id returned true");
    ensure!(
        call!("get", store.get(&id).await).is_none(),
        "touch of an unknown id created a session"
    );
    let expired = self::id();
    call!(
        "set",
        store.set(&expired, &sample().with_expires_at(150)).await
    );
    sleep_ms(300).await;
    let existed = call!(
        "touch",
        store.touch(&expired, SystemTime::now() + HOUR).await
    );
    ensure!(!existed, "touch of an expired session returned true");
    ensure!(
        call!("get", store.get(&expired).await).is_none(),
        "touch resurrected an expired session"
    );
    Ok(())
}

pub(super) async fn touch_into_the_past_expires(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    call!("set", store.set(&id, &sample()).await);
    let existed = call!(
        "touch",
        store
            .touch(&id, SystemTime::now() - Duration::from_secs(1))
            .await
    );
    ensure!(existed, "touch of a live session returned false");
    ensure!(
        call!("get", store.get(&id).await).is_none(),
        "a session touched into the past was still returned"
    );
    Ok(())
}

pub(super) async fn create_absent_succeeds_with_a_fresh_version(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (id, session) = (id(), sample());
    ensure!(
        call!("create", store.create(&id, &session).await),
        "create of an absent id returned false"
    );
    let got = call!("get", store.get(&id).await).ok_or("get after create returned None")?;
    same_content(&got, &session)?;
    valid_version("a created session", got.version())?;
    // A second incarnation of another id does not start at the same value: versions are
    // fresh, not a fixed starting point.
    let mut starts = vec![got.version()];
    for _ in 0..3 {
        let other = self::id();
        ensure!(
            call!("create", store.create(&other, &session).await),
            "create of an absent id returned false"
        );
        let version = call!("get", store.get(&other).await)
            .ok_or("get after create returned None")?
            .version();
        valid_version("a created session", version)?;
        starts.push(version);
    }
    starts.sort_unstable();
    starts.dedup();
    ensure!(
        starts.len() > 1,
        "four created sessions all start at version {}: a new incarnation must start at a \
         fresh, unpredictable version",
        starts[0]
    );
    Ok(())
}

pub(super) async fn create_collision_returns_false_and_keeps_existing(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let (id, first) = (id(), sample());
    let version = call!("set", store.set(&id, &first).await);
    let intruder = session_with(HOUR, json!({"user": "mallory"}));
    ensure!(
        !call!("create", store.create(&id, &intruder).await),
        "create over a live session returned true"
    );
    let got = call!("get", store.get(&id).await).ok_or("the existing session vanished")?;
    same_content(&got, &first)?;
    ensure!(
        got.version() == version,
        "a failed create changed the version"
    );
    Ok(())
}

pub(super) async fn create_over_expired_session_succeeds(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    call!("set", store.set(&id, &sample().with_expires_at(150)).await);
    sleep_ms(300).await;
    let fresh = session_with(HOUR, json!({"fresh": true}));
    ensure!(
        call!("create", store.create(&id, &fresh).await),
        "create over an expired (absent) session returned false"
    );
    let got = call!("get", store.get(&id).await).ok_or("get after create returned None")?;
    same_content(&got, &fresh)?;
    Ok(())
}

pub(super) async fn create_concurrent_exactly_one_wins(factory: Factory) -> CheckResult {
    const TASKS: usize = 32;
    for round in 0..5 {
        let store = factory.shared().await;
        let id = id();
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
                tokio::spawn(async move {
                    let session = session_with(HOUR, json!({ "task": task }));
                    barrier.wait().await;
                    store.create(&id, &session).await.map(|won| (task, won))
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (task, won) = joined("create", task.await)?;
            if won {
                winners.push(task);
            }
        }
        ensure!(
            winners.len() == 1,
            "round {round}: {} of {TASKS} concurrent creates of one id returned true",
            winners.len()
        );
        let got = call!("get", store.get(&id).await).ok_or("no session after the creates")?;
        ensure!(
            got.data().get("task") == Some(&json!(winners[0])),
            "round {round}: the stored session is not the winner's"
        );
    }
    Ok(())
}

pub(super) async fn set_if_version_matching_writes(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let first = call!("set", store.set(&id, &sample()).await);
    let update = session_with(HOUR, json!({"user": "ada", "n": 2}));
    let version = call!(
        "set_if_version",
        store.set_if_version(&id, &update, first).await
    );
    ensure!(
        version == first + 1,
        "set_if_version with the right version returned {version}, not {}",
        first + 1
    );
    let got = call!("get", store.get(&id).await).ok_or("get returned None")?;
    same_content(&got, &update)?;
    ensure!(
        got.version() == first + 1,
        "stored version is {}, not {}",
        got.version(),
        first + 1
    );
    Ok(())
}

pub(super) async fn set_if_version_mismatch_conflicts_and_writes_nothing(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let (id, original) = (id(), sample());
    let first = call!(
        "set",
        store
            .set(&id, &session_with(HOUR, json!({"first": 1})))
            .await
    );
    let stored = call!("set", store.set(&id, &original).await);
    let stale = session_with(HOUR, json!({"user": "stale"}));
    for expected in [first, stored + 1, stored + 1000, 0] {
        match store.set_if_version(&id, &stale, expected).await {
            Err(err) if err.kind() == ErrorKind::Conflict => {
                names_the_session(&err, &id, "a conflict")?;
                ensure!(
                    matches!(err, Error::Conflict { expected: e, .. } if e == expected),
                    "the conflict error does not carry the expected version {expected}: {err}"
                );
            }
            Err(err) => {
                return Err(format!(
                    "set_if_version with stale version {expected} failed with {}, not a conflict",
                    chain(&err)
                ));
            }
            Ok(v) => {
                return Err(format!(
                    "set_if_version with stale version {expected} (stored: {stored}) wrote version {v}"
                ));
            }
        }
    }
    let got = call!("get", store.get(&id).await).ok_or("get returned None")?;
    same_content(&got, &original)?;
    ensure!(
        got.version() == stored,
        "a conflicting write changed the version"
    );
    Ok(())
}

pub(super) async fn set_if_version_zero_means_absent(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    match store.set_if_version(&id, &sample(), 4).await {
        Err(err) if err.is_conflict() => {}
        other => {
            return Err(format!(
                "set_if_version(expected 4) on an absent id gave {other:?}, not a conflict"
            ));
        }
    }
    let version = call!(
        "set_if_version(expected 0) on an absent id",
        store.set_if_version(&id, &sample(), 0).await
    );
    valid_version("set_if_version(expected 0) on an absent id", version)?;
    let got = call!("get", store.get(&id).await).ok_or("set_if_version(0) stored nothing")?;
    ensure!(
        got.version() == version,
        "set_if_version(0) returned {version} but get shows {}",
        got.version()
    );
    match store.set_if_version(&id, &sample(), 0).await {
        Err(err) if err.is_conflict() => Ok(()),
        other => Err(format!(
            "set_if_version(expected 0) on a live session gave {other:?}, not a conflict"
        )),
    }
}

pub(super) async fn set_if_version_concurrent_increments_lose_nothing(
    factory: Factory,
) -> CheckResult {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 25;
    let store = factory.shared().await;
    let id = id();
    let start = call!(
        "set",
        store
            .set(&id, &session_with(HOUR, json!({"counter": 0})))
            .await
    );
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                let mut conflicts = 0u64;
                for _ in 0..INCREMENTS {
                    loop {
                        let Some(mut session) = store.get(&id).await? else {
                            return Err(Error::backend("get", Some(&id), "the session vanished"));
                        };
                        let counter = session.get::<u64>("counter").ok().flatten().unwrap_or(0);
                        session
                            .insert("counter", counter + 1)
                            .map_err(|e| Error::encode(&id, e))?;
                        // Let other tasks run between the read and the write, as a request
                        // handler would, so that stale writes really happen.
                        tokio::task::yield_now().await;
                        match store.set_if_version(&id, &session, session.version()).await {
                            Ok(_) => break,
                            Err(err) if err.is_conflict() => {
                                conflicts += 1;
                                tokio::task::yield_now().await;
                            }
                            Err(err) => return Err(err),
                        }
                    }
                }
                Ok(conflicts)
            })
        })
        .collect();
    for task in tasks {
        joined("an increment task", task.await)?;
    }
    let got = call!("get", store.get(&id).await).ok_or("the counter session vanished")?;
    let counter = got.get::<u64>("counter").ok().flatten().unwrap_or(0);
    ensure!(
        counter == TASKS * INCREMENTS,
        "{TASKS} tasks x {INCREMENTS} compare-and-set increments left the counter at {counter}, \
         not {}: updates were lost",
        TASKS * INCREMENTS
    );
    ensure!(
        got.version() == start + TASKS * INCREMENTS,
        "the version is {}, not {}",
        got.version(),
        start + TASKS * INCREMENTS
    );
    Ok(())
}

pub(super) async fn len_counts_live_sessions_only(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    ensure!(
        call!("len", store.len().await) == 0,
        "a fresh store has a non-zero len"
    );
    ensure!(
        call!("is_empty", store.is_empty().await),
        "a fresh store is not empty"
    );
    for _ in 0..3 {
        call!("set", store.set(&id(), &sample()).await);
    }
    let short = sample().with_expires_at(150);
    let stored = call!("set", store.set(&id(), &short).await) > 0;
    let len = call!("len", store.len().await);
    // The short session counts unless the clock says it may have expired meanwhile.
    if stored && now_millis() < short.expires_at_millis() {
        ensure!(len == 4, "len is {len} after 4 sets, not 4");
    } else {
        ensure!(
            len == 3 || len == 4,
            "len is {len} after 4 sets, not 3 or 4"
        );
    }
    sleep_ms(300).await;
    let len = call!("len", store.len().await);
    ensure!(
        len == 3,
        "len is {len} with 3 live sessions and 1 expired one, not 3"
    );
    ensure!(
        !call!("is_empty", store.is_empty().await),
        "a store with 3 sessions is empty"
    );
    Ok(())
}

pub(super) async fn clear_removes_everything(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let ids: Vec<SessionId> = (0..5).map(|_| id()).collect();
    for id in &ids {
        call!("set", store.set(id, &sample()).await);
    }
    call!("clear", store.clear().await);
    let len = call!("len", store.len().await);
    ensure!(len == 0, "len is {len} after clear");
    for id in &ids {
        ensure!(
            call!("get", store.get(id).await).is_none(),
            "a session survived clear"
        );
    }
    call!("set after clear", store.set(&ids[0], &sample()).await);
    ensure!(
        call!("len", store.len().await) == 1,
        "the store does not work after clear"
    );
    Ok(())
}

pub(super) async fn delete_expired_removes_only_expired(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let by_itself = store.capabilities().expires_by_itself;
    let live: Vec<SessionId> = (0..3).map(|_| id()).collect();
    let doomed: Vec<SessionId> = (0..2).map(|_| id()).collect();
    for id in &live {
        call!("set", store.set(id, &sample()).await);
    }
    let mut stored = 0;
    for id in &doomed {
        // A store too slow to write before the expiry stores nothing (and returns 0).
        if call!("set", store.set(id, &sample().with_expires_at(150)).await) > 0 {
            stored += 1;
        }
    }
    sleep_ms(300).await;
    let removed = call!("delete_expired", store.delete_expired().await);
    let want = if by_itself { 0 } else { stored };
    ensure!(
        removed == want,
        "delete_expired reported {removed} removed with {} sessions expired; it must return \
         exactly the number it removed ({want}{})",
        doomed.len(),
        if by_itself {
            ": the store declares expires_by_itself"
        } else {
            ""
        }
    );
    for id in &live {
        ensure!(
            call!("get", store.get(id).await).is_some(),
            "delete_expired removed a live session"
        );
    }
    for id in &doomed {
        ensure!(
            call!("get", store.get(id).await).is_none(),
            "an expired session was returned after delete_expired"
        );
    }
    let len = call!("len", store.len().await);
    ensure!(len == 3, "len is {len} after delete_expired, not 3");
    let again = call!("second delete_expired", store.delete_expired().await);
    ensure!(
        again == 0,
        "a second delete_expired removed {again} more sessions"
    );
    Ok(())
}

fn nested_unicode() -> Value {
    json!({
        "unicode": "héllo wörld — 你好, мир, 🎉🦀, \u{10FFFF}",
        "escapes": "quote \" backslash \\ slash / controls \n\t\r\u{0008}\u{000C} nul-free \u{001F}",
        "numbers": {
            "i64_min": i64::MIN, "i64_max": i64::MAX, "u64_max": u64::MAX,
            "zero": 0, "neg": -1, "float": 1.5, "small": 1.0e-300, "big": 1.7976931348623157e308,
            "pi": std::f64::consts::PI
        },
        "literals": [true, false, null],
        "empty": {"object": {}, "array": [], "string": ""},
        "deep": {"a": {"b": {"c": {"d": {"e": {"f": [1, [2, [3, [4, {"g": "h"}]]]]}}}}}},
        "keys with spaces and ünïcode": {"🔑": "value"},
        "array_of_objects": [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]
    })
}

pub(super) async fn round_trip_nested_json_and_unicode(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (id, session) = (id(), session_with(HOUR, nested_unicode()));
    call!("set", store.set(&id, &session).await);
    let got = call!("get", store.get(&id).await).ok_or("get returned None")?;
    if got.data() != session.data() {
        let mut differing: Vec<&String> = session
            .data()
            .iter()
            .filter(|(k, v)| got.data().get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        differing.sort();
        return Err(format!(
            "nested JSON did not round-trip exactly; differing keys: {differing:?}"
        ));
    }
    same_content(&got, &session)
}

pub(super) async fn round_trip_one_mib_session(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let blob: String = (0..(1 << 20))
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let session = session_with(HOUR, json!({ "blob": blob, "tail": "end" }));
    call!("set of a 1 MiB session", store.set(&id, &session).await);
    let got = call!("get", store.get(&id).await).ok_or("get returned None")?;
    same_content(&got, &session)
}

pub(super) async fn round_trip_empty_session(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (id, session) = (id(), Session::new(HOUR));
    call!("set of an empty session", store.set(&id, &session).await);
    let got = call!("get", store.get(&id).await)
        .ok_or("a session with empty data was not returned: empty data is still a session")?;
    same_content(&got, &session)?;
    ensure!(
        call!("len", store.len().await) == 1,
        "len does not count an empty session"
    );
    Ok(())
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

pub(super) async fn nesting_at_the_limit_round_trips_and_deeper_is_refused(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let deepest = session_with(HOUR, nested(crate::session::MAX_NESTING));
    call!(
        "set of data nested exactly MAX_NESTING levels deep",
        store.set(&id, &deepest).await
    );
    let got = call!("get", store.get(&id).await).ok_or("the deepest allowed session vanished")?;
    same_content(&got, &deepest)?;
    let fresh = self::id();
    for depth in [crate::session::MAX_NESTING + 1, 500] {
        let bomb = session_with(HOUR, nested(depth));
        for (op, target, result) in [
            ("set", &id, store.set(&id, &bomb).await.map(|_| ())),
            (
                "set_if_version",
                &id,
                store
                    .set_if_version(&id, &bomb, got.version())
                    .await
                    .map(|_| ()),
            ),
            (
                "set of a new id",
                &fresh,
                store.set(&fresh, &bomb).await.map(|_| ()),
            ),
            (
                "create",
                &fresh,
                store.create(&fresh, &bomb).await.map(|_| ()),
            ),
            (
                "set_if_version(.., 0) of a new id",
                &fresh,
                store.set_if_version(&fresh, &bomb, 0).await.map(|_| ()),
            ),
        ] {
            match result {
                Err(err) if err.kind() == ErrorKind::Encode => {
                    names_the_session(&err, target, &format!("{op}'s encode error"))?;
                }
                other => {
                    return Err(format!(
                        "{op} of data nested {depth} levels deep gave {other:?}, not an encode error"
                    ));
                }
            }
        }
    }
    ensure!(
        call!("get", store.get(&fresh).await).is_none(),
        "a refused write of over-deep data stored something under a new id"
    );
    ensure!(
        call!("len", store.len().await) == 1,
        "a refused write of over-deep data is counted by len"
    );
    let after = call!("get", store.get(&id).await).ok_or("a refused write removed the session")?;
    same_content(&after, &deepest)?;
    ensure!(
        after.version() == got.version(),
        "a refused write changed the version"
    );
    Ok(())
}

pub(super) async fn ids_are_isolated(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (a, b) = (id(), id());
    let (sa, sb) = (
        session_with(HOUR, json!({"who": "a"})),
        session_with(HOUR, json!({"who": "b"})),
    );
    call!("set a", store.set(&a, &sa).await);
    let vb = call!("set b", store.set(&b, &sb).await);
    call!("set a again", store.set(&a, &sample()).await);
    call!(
        "touch a",
        store.touch(&a, SystemTime::now() + HOUR * 3).await
    );
    call!("destroy a", store.destroy(&a).await);
    let got = call!("get b", store.get(&b).await).ok_or("b vanished after writes to a")?;
    same_content(&got, &sb)?;
    ensure!(got.version() == vb, "writes to a changed b's version");
    Ok(())
}

pub(super) async fn invalid_ids_are_rejected_and_edge_ids_work(factory: Factory) -> CheckResult {
    let hostile = [
        String::new(),
        "x".repeat(SessionId::MAX_LEN + 1),
        "x".repeat(100 * 1024),
        "../../etc/passwd".into(),
        "a/b".into(),
        "a\\b".into(),
        "\0".into(),
        ".".into(),
        "..".into(),
        "a\u{1}b".into(),
        "a b".into(),
        "sess\u{e9}".into(),
        "*".into(),
        "a?".into(),
        "[ab]".into(),
    ];
    for raw in &hostile {
        match SessionId::new(raw.as_str()) {
            Err(err) if err.kind() == ErrorKind::InvalidId => {}
            other => {
                return Err(format!(
                    "SessionId::new accepted a hostile id ({} bytes): {other:?}",
                    raw.len()
                ));
            }
        }
    }
    let store = factory.boxed().await;
    let edge = [
        "x".repeat(SessionId::MAX_LEN),
        "a".into(),
        "...".into(),
        ".hidden".into(),
        "-_.~+=".into(),
        "UPPER_lower-0123456789".into(),
    ];
    for raw in &edge {
        let id =
            SessionId::new(raw.as_str()).map_err(|e| format!("a valid id was refused: {e}"))?;
        let session = session_with(HOUR, json!({ "id": raw }));
        call!("set with an edge-case id", store.set(&id, &session).await);
        let got = call!("get", store.get(&id).await)
            .ok_or_else(|| format!("the session under the valid id {raw:?} was not returned"))?;
        same_content(&got, &session)?;
    }
    let len = call!("len", store.len().await);
    ensure!(
        len == edge.len() as u64,
        "len is {len} after storing {} edge-case ids",
        edge.len()
    );
    Ok(())
}

pub(super) async fn concurrent_sets_leave_one_whole_value(factory: Factory) -> CheckResult {
    let store = factory.shared().await;
    // A read-then-write store loses a race only when the scheduler interleaves two writers;
    // several rounds on fresh ids keep one lucky schedule from passing it.
    for _ in 0..RACE_ROUNDS {
        concurrent_sets_round(&store).await?;
    }
    Ok(())
}

/// Rounds of each contention check: every round is a fresh chance to catch a lost race.
pub(super) const RACE_ROUNDS: usize = 3;

async fn concurrent_sets_round(store: &Arc<dyn SessionStore>) -> CheckResult {
    const WRITERS: usize = 100;
    let id = id();
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut data = Map::new();
                data.insert("writer".into(), json!(writer));
                data.insert("payload".into(), json!(format!("{writer:04}").repeat(2048)));
                data.insert("list".into(), json!(vec![writer; 64]));
                let mut session = Session::new(HOUR);
                session.replace_data(data);
                barrier.wait().await;
                store.set(&id, &session).await.map(|v| (writer, v))
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(joined("concurrent set", task.await)?);
    }
    let got = call!("get", store.get(&id).await).ok_or("no session after 100 concurrent sets")?;
    let writer = got
        .get::<usize>("writer")
        .ok()
        .flatten()
        .ok_or("the stored session has no writer field")?;
    ensure!(
        got.get::<String>("payload").ok().flatten() == Some(format!("{writer:04}").repeat(2048))
            && got.get::<Vec<usize>>("list").ok().flatten() == Some(vec![writer; 64]),
        "the stored session mixes fields from different writers (a torn write)"
    );
    // Each set got its own version: the first a fresh one, every other one more.
    versions.sort_unstable_by_key(|&(_, v)| v);
    let first = versions[0].1;
    for (i, &(_, v)) in versions.iter().enumerate() {
        ensure!(
            v == first + i as u64,
            "{WRITERS} concurrent sets returned versions that are not {first}..={}: a version \
             was handed out twice or skipped ({v} at rank {i})",
            first + WRITERS as u64 - 1
        );
    }
    let (last_writer, last) = versions[WRITERS - 1];
    ensure!(
        got.version() == last,
        "{WRITERS} sets left version {}, not the highest one returned ({last})",
        got.version()
    );
    ensure!(
        writer == last_writer,
        "the stored session is writer {writer}'s, but writer {last_writer}'s set returned the \
         stored version {last}"
    );
    Ok(())
}

pub(super) async fn works_as_box_dyn_store(factory: Factory) -> CheckResult {
    let store: Box<dyn SessionStore> = factory.boxed().await;
    let id = id();
    ensure!(
        call!("create", store.create(&id, &sample()).await),
        "create through Box<dyn SessionStore> returned false"
    );
    ensure!(
        call!("get", store.get(&id).await).is_some(),
        "get through Box<dyn SessionStore> returned None"
    );
    call!("destroy", store.destroy(&id).await);
    ensure!(
        call!("get", store.get(&id).await).is_none(),
        "destroy through Box<dyn SessionStore> did not remove"
    );
    Ok(())
}

pub(super) async fn works_as_arc_dyn_store_across_tasks(factory: Factory) -> CheckResult {
    let store: Arc<dyn SessionStore> = factory.shared().await;
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let id = SessionId::generate();
                let session = session_with(HOUR, json!({ "task": task }));
                store.set(&id, &session).await?;
                let got = store.get(&id).await?;
                Ok::<_, Error>((got.map(|s| s.data().clone()), session.data().clone()))
            })
        })
        .collect();
    for task in tasks {
        let (got, want) = joined("a task", task.await)?;
        ensure!(
            got.as_ref() == Some(&want),
            "a task sharing Arc<dyn SessionStore> did not read back its own session"
        );
    }
    let len = call!("len", store.len().await);
    ensure!(
        len == 16,
        "len is {len} after 16 tasks each set one session"
    );
    Ok(())
}
