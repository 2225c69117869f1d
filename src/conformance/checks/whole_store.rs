//! The whole store: `len` and `is_empty` count live sessions only, `clear` removes
//! everything, `delete_expired` removes only expired sessions.

use super::{CheckResult, Factory, PastExt, id, sample, sleep_ms};
use crate::session::{SessionId, now_millis};
pub(crate) async fn len_counts_live_sessions_only(factory: Factory) -> CheckResult {
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

pub(crate) async fn clear_removes_everything(factory: Factory) -> CheckResult {
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

pub(crate) async fn delete_expired_removes_only_expired(factory: Factory) -> CheckResult {
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
