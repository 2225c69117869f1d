//! Races between different operations on one id.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;
use tokio::sync::Barrier;

use super::{CheckResult, Factory, HOUR, id, joined, sample, session_with};
use crate::error::Error;
use crate::store::SessionStore;

/// Rounds of each race between two operations on one id.
const RACE_ROUNDS: usize = 40;

/// The second party of a two-party race yields `round % 4` times after the barrier, so over
/// the rounds its operation lands before, between and after the first party's await points,
/// whichever task the runtime runs first (on one worker or two), instead of the outcome of
/// every round hanging on which task reached the barrier last.
async fn stagger(round: usize) {
    for _ in 0..round % 4 {
        tokio::task::yield_now().await;
    }
}

pub(crate) async fn set_racing_set_if_version_hands_out_each_version_once(
    factory: Factory,
) -> CheckResult {
    let store = factory.shared().await;
    for _ in 0..super::RACE_ROUNDS {
        set_racing_set_if_version_round(&store).await?;
    }
    Ok(())
}

async fn set_racing_set_if_version_round(store: &Arc<dyn SessionStore>) -> CheckResult {
    const SETTERS: usize = 8;
    const SWAPPERS: usize = 8;
    let id = id();
    let start = call!("set", store.set(&id, &sample()).await);
    let barrier = Arc::new(Barrier::new(SETTERS + SWAPPERS));
    let mut tasks = Vec::new();
    for writer in 0..SETTERS + SWAPPERS {
        let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut written = Vec::new();
            for round in 0..3 {
                // Distinct data per write, so no write may be skipped as identical.
                let session = session_with(HOUR, json!({ "writer": writer, "round": round }));
                if writer < SETTERS {
                    written.push(store.set(&id, &session).await?);
                } else {
                    let current = store
                        .get(&id)
                        .await?
                        .ok_or_else(|| Error::backend("get", Some(&id), "the session vanished"))?;
                    tokio::task::yield_now().await;
                    match store.set_if_version(&id, &session, current.version()).await {
                        Ok(v) => {
                            if v != current.version() + 1 {
                                return Err(Error::backend(
                                    "set_if_version",
                                    Some(&id),
                                    format!("returned {v} after expecting {}", current.version()),
                                ));
                            }
                            written.push(v);
                        }
                        Err(err) if err.is_conflict() => {}
                        Err(err) => return Err(err),
                    }
                }
            }
            Ok::<_, Error>((writer, written))
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        let (writer, written) = joined("a racing writer", task.await)?;
        versions.extend(written.into_iter().map(|v| (v, writer)));
    }
    versions.sort_unstable();
    for (i, &(v, _)) in versions.iter().enumerate() {
        ensure!(
            v == start + 1 + i as u64,
            "racing set and set_if_version calls returned versions that are not {}..={}: a \
             version was handed out twice or skipped ({v} at rank {i})",
            start + 1,
            start + versions.len() as u64
        );
    }
    let got = call!("get", store.get(&id).await).ok_or("the session vanished")?;
    let &(last, last_writer) = versions.last().ok_or("no write succeeded")?;
    ensure!(
        got.version() == last,
        "the stored version is {}, not the highest one returned ({last})",
        got.version()
    );
    ensure!(
        got.data().get("writer") == Some(&json!(last_writer)),
        "the stored data is not that of the write that returned the stored version {last}"
    );
    Ok(())
}

pub(crate) async fn touch_racing_destroy_never_revives(factory: Factory) -> CheckResult {
    let store = factory.shared().await;
    for round in 0..RACE_ROUNDS {
        let id = id();
        call!("set", store.set(&id, &sample()).await);
        let barrier = Arc::new(Barrier::new(2));
        let toucher = {
            let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.touch(&id, SystemTime::now() + HOUR * 2).await
            })
        };
        let destroyer = {
            let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                stagger(round).await;
                store.destroy(&id).await
            })
        };
        joined("touch", toucher.await)?;
        joined("destroy", destroyer.await)?;
        ensure!(
            call!("get", store.get(&id).await).is_none(),
            "round {round}: a touch racing a destroy brought the session back"
        );
    }
    ensure!(
        call!("len", store.len().await) == 0,
        "sessions survived their destroy while touches raced it"
    );
    Ok(())
}

pub(crate) async fn touch_racing_set_keeps_the_written_data(factory: Factory) -> CheckResult {
    let store = factory.shared().await;
    for round in 0..RACE_ROUNDS {
        let id = id();
        let v = call!(
            "set",
            store
                .set(&id, &session_with(HOUR, json!({"data": "old"})))
                .await
        );
        let new = session_with(HOUR * 3, json!({"data": "new", "round": round}));
        let touched_to = SystemTime::now() + HOUR * 2;
        let barrier = Arc::new(Barrier::new(2));
        let toucher = {
            let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.touch(&id, touched_to).await
            })
        };
        let setter = {
            let (store, id, barrier, new) =
                (store.clone(), id.clone(), barrier.clone(), new.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                stagger(round).await;
                store.set(&id, &new).await
            })
        };
        ensure!(
            joined("touch", toucher.await)?,
            "round {round}: touch of a live session returned false"
        );
        let written = joined("set", setter.await)?;
        ensure!(
            written == v + 1,
            "round {round}: set over version {v} returned {written}"
        );
        let got = call!("get", store.get(&id).await).ok_or("the session vanished")?;
        ensure!(
            got.data() == new.data(),
            "round {round}: a touch racing a set wrote back the old data"
        );
        ensure!(
            got.version() == v + 1,
            "round {round}: after a set and a touch the version is {}, not {}",
            got.version(),
            v + 1
        );
        let touched = crate::session::to_millis(touched_to);
        ensure!(
            got.expires_at_millis() == touched
                || got.expires_at_millis() == new.expires_at_millis(),
            "round {round}: the expiry is {}, neither the touch's nor the set's",
            got.expires_at_millis()
        );
    }
    Ok(())
}

pub(crate) async fn create_racing_destroy_stores_only_when_it_returns_true(
    factory: Factory,
) -> CheckResult {
    let store = factory.shared().await;
    for round in 0..RACE_ROUNDS {
        let id = id();
        call!("set", store.set(&id, &sample()).await);
        let new = session_with(HOUR, json!({"created": round}));
        let barrier = Arc::new(Barrier::new(2));
        let creator = {
            let (store, id, barrier, new) =
                (store.clone(), id.clone(), barrier.clone(), new.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.create(&id, &new).await
            })
        };
        let destroyer = {
            let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                stagger(round).await;
                store.destroy(&id).await
            })
        };
        let created = joined("create", creator.await)?;
        joined("destroy", destroyer.await)?;
        let got = call!("get", store.get(&id).await);
        match (created, got) {
            (true, Some(got)) if got.data() == new.data() => {}
            (true, _) => {
                return Err(format!(
                    "round {round}: create returned true while racing a destroy, but its \
                     session is not stored"
                ));
            }
            (false, None) => {}
            (false, Some(_)) => {
                return Err(format!(
                    "round {round}: create returned false (a collision), so the destroy came \
                     after it, yet a session is stored"
                ));
            }
        }
    }
    Ok(())
}

pub(crate) async fn set_if_version_racing_destroy_never_revives(factory: Factory) -> CheckResult {
    let store = factory.shared().await;
    for round in 0..RACE_ROUNDS {
        let id = id();
        let v = call!("set", store.set(&id, &sample()).await);
        let barrier = Arc::new(Barrier::new(2));
        let writer = {
            let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                let update = session_with(HOUR, json!({"round": round}));
                barrier.wait().await;
                store.set_if_version(&id, &update, v).await
            })
        };
        let destroyer = {
            let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                stagger(round).await;
                store.destroy(&id).await
            })
        };
        let written = match writer.await {
            Ok(Ok(_)) => true,
            Ok(Err(err)) if err.is_conflict() => false,
            Ok(Err(err)) => return Err(format!("set_if_version failed: {err}")),
            Err(join) => return Err(format!("set_if_version panicked: {join}")),
        };
        joined("destroy", destroyer.await)?;
        // Whichever ran first, the destroy removed the session: a compare-and-set after it
        // must conflict (the session is absent), one before it is destroyed with it.
        ensure!(
            call!("get", store.get(&id).await).is_none(),
            "round {round}: a compare-and-set racing a destroy (it {}) left a session behind",
            if written { "succeeded" } else { "conflicted" }
        );
    }
    Ok(())
}
