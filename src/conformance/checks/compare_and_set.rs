//! Compare-and-set (`set_if_version`): writes only on the expected version, conflicts
//! otherwise, and loses no update under contention.

use serde_json::json;

use super::{
    CheckResult, Factory, HOUR, chain, id, joined, names_the_session, same_content, sample,
    session_with, valid_version,
};
use crate::error::{Error, ErrorKind};
pub(crate) async fn set_if_version_matching_writes(factory: Factory) -> CheckResult {
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

pub(crate) async fn set_if_version_mismatch_conflicts_and_writes_nothing(
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

pub(crate) async fn set_if_version_zero_means_absent(factory: Factory) -> CheckResult {
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

pub(crate) async fn set_if_version_concurrent_increments_lose_nothing(
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
