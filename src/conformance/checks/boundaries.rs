//! Boundaries of time: an expiry equal to now, a few milliseconds either side, a touch that
//! moves an expiry earlier, expired-but-not-deleted sessions, and `delete_expired` next to
//! sessions about to expire.

use std::time::SystemTime;

use serde_json::json;

use super::{CheckResult, Factory, HOUR, PastExt, id, sample, session_with, sleep_ms};
use crate::session::{SessionId, from_millis, now_millis};
use crate::store::SessionStore;

/// Fails unless `id` is absent: `get` returns `None`.
async fn absent(store: &dyn SessionStore, id: &SessionId, what: &str) -> CheckResult {
    ensure!(
        call!("get", store.get(id).await).is_none(),
        "{what}: get returned a session that must be absent"
    );
    Ok(())
}

pub(crate) async fn an_expiry_equal_to_now_has_passed(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    // Over a live session: set, set_if_version and touch to exactly now delete it.
    let (set_id, cas_id, touch_id) = (id(), id(), id());
    call!("set", store.set(&set_id, &sample()).await);
    let cas_version = call!("set", store.set(&cas_id, &sample()).await);
    call!("set", store.set(&touch_id, &sample()).await);

    let v = call!(
        "set with an expiry equal to now",
        store.set(&set_id, &sample().with_expires_at(0)).await
    );
    ensure!(
        v == 0,
        "set with an expiry equal to now returned {v}, not 0"
    );
    absent(&*store, &set_id, "after a set with an expiry equal to now").await?;

    let v = call!(
        "set_if_version with an expiry equal to now",
        store
            .set_if_version(&cas_id, &sample().with_expires_at(0), cas_version)
            .await
    );
    ensure!(
        v == 0,
        "set_if_version with an expiry equal to now returned {v}, not 0"
    );
    absent(
        &*store,
        &cas_id,
        "after set_if_version to an expiry equal to now",
    )
    .await?;

    let existed = call!(
        "touch to now",
        store.touch(&touch_id, from_millis(now_millis())).await
    );
    ensure!(existed, "touch of a live session returned false");
    absent(&*store, &touch_id, "after a touch to exactly now").await?;

    // Over absent ids: nothing is stored.
    let (fresh_set, fresh_create, fresh_cas) = (id(), id(), id());
    let v = call!(
        "set of a new id with an expiry equal to now",
        store.set(&fresh_set, &sample().with_expires_at(0)).await
    );
    ensure!(
        v == 0,
        "set of a new id with an expiry equal to now returned {v}, not 0"
    );
    let created = call!(
        "create with an expiry equal to now",
        store
            .create(&fresh_create, &sample().with_expires_at(0))
            .await
    );
    ensure!(
        created,
        "create of an absent id with an expiry equal to now returned false"
    );
    let v = call!(
        "set_if_version(.., 0) with an expiry equal to now",
        store
            .set_if_version(&fresh_cas, &sample().with_expires_at(0), 0)
            .await
    );
    ensure!(
        v == 0,
        "set_if_version(.., 0) with an expiry equal to now returned {v}, not 0"
    );
    for id in [&fresh_set, &fresh_create, &fresh_cas] {
        absent(&*store, id, "a write with an expiry equal to now").await?;
    }
    let len = call!("len", store.len().await);
    ensure!(
        len == 0,
        "len is {len} after writes whose expiry was equal to now"
    );
    ensure!(
        call!("is_empty", store.is_empty().await),
        "is_empty is false with no live session"
    );
    Ok(())
}

pub(crate) async fn writes_with_a_past_expiry_store_nothing(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    for offset in [-1, -5, -1000] {
        let (a, b, c) = (id(), id(), id());
        let past = || sample().with_expires_at(offset);
        let v = call!("set with a past expiry", store.set(&a, &past()).await);
        ensure!(
            v == 0,
            "set with an expiry {offset} ms ago returned {v}, not 0"
        );
        call!("create with a past expiry", store.create(&b, &past()).await);
        let v = call!(
            "set_if_version(.., 0) with a past expiry",
            store.set_if_version(&c, &past(), 0).await
        );
        ensure!(
            v == 0,
            "set_if_version(.., 0) with an expiry {offset} ms ago returned {v}, not 0"
        );
        for id in [&a, &b, &c] {
            absent(
                &*store,
                id,
                &format!("a write with an expiry {offset} ms ago"),
            )
            .await?;
        }
    }
    ensure!(
        call!("len", store.len().await) == 0,
        "len counts sessions written with a past expiry"
    );
    // Over a live session, a create or a conflicting compare-and-set with a past expiry
    // changes nothing.
    let id = id();
    let v = call!("set", store.set(&id, &sample()).await);
    let before = call!("get", store.get(&id).await);
    let created = call!(
        "create over a live session with a past expiry",
        store.create(&id, &sample().with_expires_at(-1000)).await
    );
    ensure!(
        !created,
        "create over a live session returned true (its expiry was in the past)"
    );
    for wrong in [v + 1, 0] {
        match store
            .set_if_version(&id, &sample().with_expires_at(-1000), wrong)
            .await
        {
            Err(err) if err.is_conflict() => {}
            other => {
                return Err(format!(
                    "set_if_version expecting {wrong} (stored: {v}) with a past expiry gave \
                     {other:?}, not a conflict"
                ));
            }
        }
    }
    ensure!(
        call!("get", store.get(&id).await) == before,
        "a refused write with a past expiry changed the live session"
    );
    Ok(())
}

pub(crate) async fn expiries_a_few_milliseconds_ahead_are_live(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    for ahead in [40, 120] {
        let id = id();
        let session = sample().with_expires_at(ahead);
        let expiry = session.expires_at_millis();
        let v = call!("set", store.set(&id, &session).await);
        // Only what the clock proves: while now < expiry the session is live.
        if v == 0 && now_millis() < expiry {
            return Err(format!(
                "set with an expiry {ahead} ms ahead returned 0 (deleted) although its expiry \
                 had not passed"
            ));
        }
        let got = call!("get", store.get(&id).await);
        if got.is_none() && now_millis() < expiry {
            return Err(format!(
                "get did not return a session whose expiry ({ahead} ms ahead) had not passed"
            ));
        }
        if let Some(got) = got {
            ensure!(
                got.expires_at_millis() == expiry,
                "expiry {} ms stored instead of {expiry} ms",
                got.expires_at_millis()
            );
        }
    }
    Ok(())
}

pub(crate) async fn touch_can_move_the_expiry_earlier(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let mut seen = None;
    for window in super::WINDOWS {
        let id = id();
        let v = call!("set", store.set(&id, &sample()).await);
        let earlier = SystemTime::now() + std::time::Duration::from_millis(window as u64);
        ensure!(
            call!(
                "touch to an earlier expiry",
                store.touch(&id, earlier).await
            ),
            "touch of a live session returned false"
        );
        let want = crate::session::to_millis(earlier);
        match call!("get", store.get(&id).await) {
            Some(got) => {
                seen = Some((id, v, got, want, window));
                break;
            }
            None => ensure!(
                now_millis() >= want,
                "the session vanished after a touch to {} ms ahead",
                want - now_millis()
            ),
        }
    }
    let (id, v, got, want, window) = seen.ok_or_else(super::too_slow)?;
    ensure!(
        got.expires_at_millis() == want,
        "touch to an earlier (future) expiry left expiry {} ms, not {want} ms",
        got.expires_at_millis()
    );
    ensure!(
        got.version() == v,
        "touch changed the version from {v} to {}",
        got.version()
    );
    sleep_ms(window as u64 + 150).await;
    absent(&*store, &id, "after the earlier expiry set by touch passed").await
}

pub(crate) async fn an_expired_session_is_absent_for_touch_len_and_is_empty(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let (a, b) = (id(), id());
    call!("set", store.set(&a, &sample().with_expires_at(150)).await);
    call!("set", store.set(&b, &sample().with_expires_at(150)).await);
    sleep_ms(300).await;
    // Nothing has deleted them: they are expired but may still be stored.
    ensure!(
        call!("len", store.len().await) == 0,
        "len counts expired sessions"
    );
    ensure!(
        call!("is_empty", store.is_empty().await),
        "is_empty is false when every session has expired"
    );
    let revived = call!(
        "touch of an expired session",
        store.touch(&a, SystemTime::now() + HOUR).await
    );
    ensure!(!revived, "touch of an expired session returned true");
    absent(&*store, &a, "after a touch of an expired session").await?;
    ensure!(
        call!("is_empty", store.is_empty().await),
        "a touch of an expired session made the store non-empty"
    );
    // The other expired session, written over, counts again.
    call!(
        "set over an expired session",
        store.set(&b, &sample()).await
    );
    ensure!(
        call!("len", store.len().await) == 1,
        "len is not 1 after a set over an expired session"
    );
    Ok(())
}

pub(crate) async fn delete_expired_spares_sessions_about_to_expire(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let by_itself = store.capabilities().expires_by_itself;
    let doomed: Vec<SessionId> = (0..3).map(|_| id()).collect();
    let mut stored = 0;
    for id in &doomed {
        // A store too slow to write before the expiry stores nothing (and returns 0).
        if call!("set", store.set(id, &sample().with_expires_at(100)).await) > 0 {
            stored += 1;
        }
    }
    sleep_ms(250).await;
    let mut near = Vec::new();
    for ahead in [60, 200, 400] {
        let id = id();
        let session = session_with(HOUR, json!({ "ahead": ahead })).with_expires_at(ahead);
        if call!("set", store.set(&id, &session).await) > 0 {
            near.push((id, session.expires_at_millis()));
        }
    }
    let removed = call!("delete_expired", store.delete_expired().await);
    let after = now_millis();
    // Sessions whose expiry passed while delete_expired ran may or may not be counted.
    let unsure = near.iter().filter(|(_, exp)| *exp <= after).count() as u64;
    let expired: u64 = stored;
    if by_itself {
        ensure!(
            removed == 0,
            "delete_expired of a store that expires by itself returned {removed}, not 0"
        );
    } else {
        ensure!(
            removed >= expired && removed <= expired + unsure,
            "delete_expired returned {removed} with {expired} sessions expired and {} about \
             to expire: it must count exactly what it removed, and never a live session",
            near.len()
        );
    }
    for (id, expiry) in &near {
        let got = call!("get", store.get(id).await);
        if got.is_none() && now_millis() < *expiry {
            return Err(format!(
                "delete_expired removed a live session {} ms before its expiry",
                expiry - now_millis()
            ));
        }
    }
    sleep_ms(450).await;
    let rest = call!("second delete_expired", store.delete_expired().await);
    if !by_itself {
        ensure!(
            removed + rest == expired + near.len() as u64,
            "two delete_expired calls removed {removed} + {rest} sessions, but {} expired",
            expired + near.len() as u64
        );
    }
    Ok(())
}

pub(crate) async fn far_future_expiries_round_trip(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    // A year ahead ("remember me"), and the year 2100 (past 2038: no 32-bit seconds).
    let year = 366 * 24 * 3600 * 1000;
    let year_2100 = 4_102_444_800_000;
    for expiry in [now_millis() + year, year_2100] {
        let id = id();
        let mut session = sample();
        session.set_expires_at_millis(expiry);
        call!("set", store.set(&id, &session).await);
        let got = call!("get", store.get(&id).await).ok_or("a far-future session vanished")?;
        ensure!(
            got.expires_at_millis() == expiry,
            "expiry {expiry} ms came back as {} ms (capped or overflowed?)",
            got.expires_at_millis()
        );
        let touched = call!("touch", store.touch(&id, from_millis(expiry + 1)).await);
        ensure!(touched, "touch of a live session returned false");
        let got = call!("get", store.get(&id).await).ok_or("the session vanished after touch")?;
        ensure!(
            got.expires_at_millis() == expiry + 1,
            "touch to {} ms left expiry {} ms",
            expiry + 1,
            got.expires_at_millis()
        );
    }
    Ok(())
}
