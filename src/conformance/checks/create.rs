//! Create: stores only over an absent (or expired) session, and exactly one concurrent
//! create of an id wins.

use std::sync::Arc;

use serde_json::json;

use super::{
    CheckResult, Factory, HOUR, PastExt, id, joined, same_content, sample, session_with, sleep_ms,
    valid_version,
};
pub(crate) async fn create_absent_succeeds_with_a_fresh_version(factory: Factory) -> CheckResult {
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

pub(crate) async fn create_collision_returns_false_and_keeps_existing(
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

pub(crate) async fn create_over_expired_session_succeeds(factory: Factory) -> CheckResult {
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

pub(crate) async fn create_concurrent_exactly_one_wins(factory: Factory) -> CheckResult {
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
