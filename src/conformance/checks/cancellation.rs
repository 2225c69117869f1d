//! Operations whose callers give up midway (a deadline, a client that went away, a `select!`
//! that took another branch): the future is dropped at some await point. What the store
//! does with such an operation may or may not happen, but if it lands, it lands as judged
//! at the moment it lands: no session revived, duplicated or lost.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::{CheckResult, Factory, HOUR, id, sample, session_with, sleep_ms};
use crate::session::{SessionId, next_version};
use crate::store::SessionStore;

/// Rounds of the check; each runs [`SCENARIOS_AT_ONCE`] scenarios at once, for load.
const CANCEL_ROUNDS: usize = 6;
const SCENARIOS_AT_ONCE: usize = 8;

/// How long after a dropped operation the check waits for work that the store may still be
/// doing for it (on a server, in a thread pool, in a task of its own) to land.
const SETTLE_MS: u64 = 100;

/// When the operations are dropped: at their first await point (0), and after growing
/// delays, so that over the rounds they are dropped before, during and after their I/O.
const DROP_AFTER_MICROS: [u64; 6] = [0, 50, 200, 700, 2_000, 6_000];

/// Polls `operation` for at most `micros`, then drops it; its result if it finished.
async fn dropped<T>(micros: u64, operation: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(Duration::from_micros(micros), operation)
        .await
        .ok()
}

pub(crate) async fn operations_dropped_midway_never_revive_duplicate_or_lose(
    factory: Factory,
) -> CheckResult {
    let store = factory.shared().await;
    for round in 0..CANCEL_ROUNDS {
        let mut tasks = Vec::with_capacity(SCENARIOS_AT_ONCE);
        for slot in 0..SCENARIOS_AT_ONCE {
            let store = Arc::clone(&store);
            let micros = DROP_AFTER_MICROS[(round + slot) % DROP_AFTER_MICROS.len()];
            let scenario = (round * SCENARIOS_AT_ONCE + slot) % 4;
            tasks.push(tokio::spawn(async move {
                let store = &*store;
                match scenario {
                    0 => dropped_touch_racing_destroy(store, micros).await,
                    1 => dropped_compare_and_set_racing_destroy(store, micros).await,
                    2 => dropped_create_then_set(store, micros).await,
                    _ => dropped_compare_and_set_alone(store, micros).await,
                }
            }));
        }
        for task in tasks {
            match task.await {
                Ok(result) => result?,
                Err(join) => return Err(format!("a scenario panicked: {join}")),
            }
        }
    }
    Ok(())
}

/// Fails unless `id` is absent now and still absent [`SETTLE_MS`] later.
async fn stays_gone(store: &dyn SessionStore, id: &SessionId, what: &str) -> CheckResult {
    sleep_ms(SETTLE_MS).await;
    for look in 0..2 {
        ensure!(
            call!("get", store.get(id).await).is_none(),
            "{what} brought back session {} after destroy returned (look {look})",
            id.hint()
        );
        sleep_ms(SETTLE_MS / 2).await;
    }
    Ok(())
}

/// `write` (of session `id`, called `what`) dropped midway while `destroy` of `id` runs:
/// the session stays destroyed.
async fn dropped_racing_destroy<T>(
    store: &dyn SessionStore,
    id: &SessionId,
    micros: u64,
    what: &str,
    write: impl Future<Output = T>,
) -> CheckResult {
    let write = dropped(micros, write);
    let destroy = async {
        tokio::task::yield_now().await;
        store.destroy(id).await
    };
    let (_, destroyed) = tokio::join!(write, destroy);
    call!("destroy", destroyed);
    stays_gone(store, id, what).await
}

/// A touch dropped midway while `destroy` runs.
async fn dropped_touch_racing_destroy(store: &dyn SessionStore, micros: u64) -> CheckResult {
    let id = id();
    call!("set", store.set(&id, &sample()).await);
    let touch = store.touch(&id, SystemTime::now() + HOUR);
    dropped_racing_destroy(store, &id, micros, "a touch dropped by its caller", touch).await
}

/// A compare-and-set dropped midway while `destroy` runs.
async fn dropped_compare_and_set_racing_destroy(
    store: &dyn SessionStore,
    micros: u64,
) -> CheckResult {
    let id = id();
    let version = call!("set", store.set(&id, &sample()).await);
    let next = session_with(HOUR, json!({"n": 2}));
    let swap = store.set_if_version(&id, &next, version);
    let what = "a compare-and-set dropped by its caller";
    dropped_racing_destroy(store, &id, micros, what, swap).await
}

/// A `create` dropped midway, then a `set` of the id: the `set`'s session holds the id
/// afterwards (a late `create` finds it live and stores nothing), and a further `create`
/// returns `false`.
async fn dropped_create_then_set(store: &dyn SessionStore, micros: u64) -> CheckResult {
    let id = id();
    let first = session_with(HOUR, json!({"by": "the dropped create"}));
    let second = session_with(HOUR, json!({"by": "the set"}));
    let _ = dropped(micros, store.create(&id, &first)).await;
    let version = call!("set", store.set(&id, &second).await);
    sleep_ms(SETTLE_MS).await;
    let Some(got) = call!("get", store.get(&id).await) else {
        return Err(format!(
            "session {} is gone after a dropped create and a set",
            id.hint()
        ));
    };
    ensure!(
        got.data() == second.data() && got.version() == version,
        "a create dropped by its caller landed over session {}, which a set had written \
         since (it holds {:?} at version {}, the set returned version {version})",
        id.hint(),
        got.data(),
        got.version()
    );
    ensure!(
        !call!("create", store.create(&id, &first).await),
        "a create of live session {} returned true",
        id.hint()
    );
    Ok(())
}

/// A compare-and-set dropped midway, alone: afterwards the session holds either the old
/// data at the old version or the new data at the next one, never nothing, and it can
/// still be written with the version it has.
async fn dropped_compare_and_set_alone(store: &dyn SessionStore, micros: u64) -> CheckResult {
    let id = id();
    let old = sample();
    let version = call!("set", store.set(&id, &old).await);
    let next = session_with(HOUR, json!({"n": 2}));
    let finished = dropped(micros, store.set_if_version(&id, &next, version)).await;
    sleep_ms(SETTLE_MS).await;
    let Some(got) = call!("get", store.get(&id).await) else {
        return Err(format!(
            "session {} was lost by a compare-and-set its caller dropped",
            id.hint()
        ));
    };
    if got.data() == next.data() {
        ensure!(
            got.version() == next_version(version),
            "the dropped compare-and-set of session {} landed at version {}, not {}",
            id.hint(),
            got.version(),
            next_version(version)
        );
    } else {
        ensure!(
            got.data() == old.data() && got.version() == version,
            "session {} holds neither the old session nor the new one after a dropped \
             compare-and-set",
            id.hint()
        );
    }
    if let Some(Ok(written)) = finished {
        ensure!(
            got.version() == written,
            "set_if_version of session {} returned {written}, but it holds version {}",
            id.hint(),
            got.version()
        );
    }
    // Still writable with the version it has. The dropped write may land only now (a loaded
    // server answering late): then it is the new session at the next version.
    let again = session_with(HOUR, json!({"n": 3}));
    match store.set_if_version(&id, &again, got.version()).await {
        Ok(_) => Ok(()),
        Err(err) if err.is_conflict() && got.version() == version => {
            let late = call!("get", store.get(&id).await).ok_or_else(|| {
                format!(
                    "session {} was lost by a compare-and-set that landed late",
                    id.hint()
                )
            })?;
            ensure!(
                late.data() == next.data() && late.version() == next_version(version),
                "session {} changed to neither the old nor the new session after a dropped \
                 compare-and-set",
                id.hint()
            );
            call!(
                "set_if_version",
                store.set_if_version(&id, &again, late.version()).await
            );
            Ok(())
        }
        Err(err) => Err(format!(
            "set_if_version after a dropped compare-and-set failed: {}",
            super::chain(&err)
        )),
    }
}
