//! Lifetimes: absolute expiry (no write and no touch moves the expiry past it) and rotation
//! (a session moved to a fresh id, the old id read-only for a grace window). Every check
//! here passes at once for a store that does not declare
//! [`absolute_expiry`](crate::Capabilities::absolute_expiry) or
//! [`rotation`](crate::Capabilities::rotation).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::Barrier;

use super::{
    CheckResult, Factory, HOUR, PastExt, WINDOWS, id, joined, sample, session_with, sleep_ms,
    too_slow,
};
use crate::error::{Error, ErrorKind};
use crate::session::{Owner, Session, SessionId, now_millis, to_millis};
use crate::store::{Rotation, SessionStore};

fn absolute_declared(store: &dyn SessionStore) -> bool {
    store.capabilities().absolute_expiry
}

fn rotation_declared(store: &dyn SessionStore) -> bool {
    store.capabilities().rotation
}

/// `sample()` expiring `expires_in` ms from now with an absolute expiry `absolute_in` ms
/// from now.
fn lived(expires_in: i64, absolute_in: i64) -> Session {
    let now = now_millis();
    let mut session = sample().with_expires_at(expires_in);
    session.set_absolute_expiry_millis(Some(now + absolute_in));
    session
}

/// Every session a whole scan returns, page after page (a page may be short, or empty, while
/// the scan goes on).
async fn scanned(store: &dyn SessionStore) -> Result<Vec<(SessionId, Session)>, String> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = call!("scan", store.scan(cursor.as_ref(), 1000).await);
        all.extend(page.sessions);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}

fn owner() -> Owner {
    match Owner::new(format!("lifetimes:{}", id())) {
        Ok(owner) => owner,
        Err(err) => unreachable!("a generated owner is valid: {err}"),
    }
}

/// Fails unless `got` holds the expiry `expiry` and the absolute expiry `absolute`.
fn lifetimes_are(got: &Session, expiry: i64, absolute: Option<i64>, what: &str) -> CheckResult {
    ensure!(
        got.absolute_expiry_millis() == absolute,
        "{what}: the absolute expiry is {:?} ms, not {absolute:?} ms",
        got.absolute_expiry_millis()
    );
    ensure!(
        got.expires_at_millis() == expiry,
        "{what}: the expiry is {} ms, not {expiry} ms",
        got.expires_at_millis()
    );
    Ok(())
}

pub(crate) async fn absolute_expiry_round_trips_and_caps_every_write(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    if !absolute_declared(&*store) {
        return Ok(());
    }
    // An absolute expiry later than the expiry: both kept as written.
    let (a, early) = (id(), lived(60_000, 600_000));
    call!("set", store.set(&a, &early).await);
    let got = call!("get", store.get(&a).await).ok_or("get after set returned None")?;
    lifetimes_are(
        &got,
        early.expires_at_millis(),
        early.absolute_expiry_millis(),
        "a set with an expiry before its absolute expiry",
    )?;
    // An expiry past the absolute expiry is capped by it, on every kind of write.
    let capped = lived(3_600_000, 600_000);
    let absolute = capped.absolute_expiry_millis();
    let cap = absolute.unwrap_or_default();
    let (b, c, d) = (id(), id(), id());
    call!("set", store.set(&b, &capped).await);
    ensure!(
        call!("create", store.create(&c, &capped).await),
        "create of an absent id returned false"
    );
    call!("set_if_version", store.set_if_version(&d, &capped, 0).await);
    for (which, what) in [(&b, "set"), (&c, "create"), (&d, "set_if_version(.., 0)")] {
        let got = call!("get", store.get(which).await)
            .ok_or_else(|| format!("get after {what} returned None"))?;
        lifetimes_are(
            &got,
            cap,
            absolute,
            &format!("a {what} with an expiry past its absolute expiry"),
        )?;
    }
    // A write whose absolute expiry is not in the future stores nothing.
    let e = id();
    let mut past = sample();
    past.set_absolute_expiry_millis(Some(now_millis() - 1000));
    let version = call!("set", store.set(&e, &past).await);
    ensure!(
        version == 0,
        "a set whose absolute expiry has passed returned version {version}, not 0"
    );
    ensure!(
        call!("get", store.get(&e).await).is_none(),
        "a set whose absolute expiry has passed stored a live session"
    );
    // Over a live session it deletes it, like an expiry in the past.
    let version = call!("set", store.set(&a, &past).await);
    ensure!(
        version == 0 && call!("get", store.get(&a).await).is_none(),
        "a set whose absolute expiry has passed left the live session under its id \
         (returned {version})"
    );
    // A scan returns the absolute expiry too.
    if store.capabilities().scan && !store.capabilities().lists_stored_ids {
        let all = scanned(&*store).await?;
        let scanned = all
            .iter()
            .find(|(id, _)| id == &b)
            .ok_or("scan did not return a session with an absolute expiry")?;
        lifetimes_are(&scanned.1, cap, absolute, "scan")?;
    }
    Ok(())
}

pub(crate) async fn touch_never_moves_the_expiry_past_the_absolute_expiry(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    if !absolute_declared(&*store) {
        return Ok(());
    }
    let (a, session) = (id(), lived(60_000, 600_000));
    let absolute = session.absolute_expiry_millis();
    call!("set", store.set(&a, &session).await);
    ensure!(
        call!("touch", store.touch(&a, SystemTime::now() + HOUR).await),
        "touch past the absolute expiry returned false for a live session"
    );
    let got = call!("get", store.get(&a).await).ok_or("get after touch returned None")?;
    lifetimes_are(
        &got,
        absolute.unwrap_or_default(),
        absolute,
        "touch to an hour from now with an absolute expiry in ten minutes",
    )?;
    // Earlier than the absolute expiry, touch moves the expiry as usual.
    let earlier = SystemTime::now() + Duration::from_secs(120);
    ensure!(
        call!("touch", store.touch(&a, earlier).await),
        "touch returned false for a live session"
    );
    let got = call!("get", store.get(&a).await).ok_or("get after touch returned None")?;
    lifetimes_are(
        &got,
        to_millis(earlier),
        absolute,
        "touch to two minutes from now",
    )?;
    Ok(())
}

pub(crate) async fn later_writes_keep_the_earlier_absolute_expiry(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    if !absolute_declared(&*store) {
        return Ok(());
    }
    let (a, first) = (id(), lived(60_000, 600_000));
    let kept = first.absolute_expiry_millis();
    let v1 = call!("set", store.set(&a, &first).await);
    // A write with none keeps it, and it caps the written expiry.
    let none = session_with(HOUR, json!({"n": 2}));
    let v2 = call!("set", store.set(&a, &none).await);
    let got = call!("get", store.get(&a).await).ok_or("get returned None")?;
    lifetimes_are(
        &got,
        kept.unwrap_or_default(),
        kept,
        "a set without an absolute expiry over a session with one",
    )?;
    // A later one is not taken: a write never postpones it.
    let later = lived(3_600_000, 7_200_000);
    let v3 = call!("set_if_version", store.set_if_version(&a, &later, v2).await);
    let got = call!("get", store.get(&a).await).ok_or("get returned None")?;
    lifetimes_are(
        &got,
        kept.unwrap_or_default(),
        kept,
        "a compare-and-set with a later absolute expiry",
    )?;
    // An earlier one is.
    let earlier = lived(3_600_000, 300_000);
    let v4 = call!("set", store.set(&a, &earlier).await);
    let got = call!("get", store.get(&a).await).ok_or("get returned None")?;
    lifetimes_are(
        &got,
        earlier.absolute_expiry_millis().unwrap_or_default(),
        earlier.absolute_expiry_millis(),
        "a set with an earlier absolute expiry",
    )?;
    ensure!(
        v2 == v1 + 1 && v3 == v2 + 1 && v4 == v3 + 1,
        "the writes returned versions {v1}, {v2}, {v3}, {v4}: each should add one"
    );
    // A new incarnation starts with the absolute expiry it carries, or none.
    call!("destroy", store.destroy(&a).await);
    call!("set", store.set(&a, &none).await);
    let got = call!("get", store.get(&a).await).ok_or("get returned None")?;
    lifetimes_are(
        &got,
        none.expires_at_millis(),
        None,
        "a new incarnation without an absolute expiry after a destroy",
    )?;
    Ok(())
}

pub(crate) async fn a_session_ends_at_its_absolute_expiry(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    if !absolute_declared(&*store) {
        return Ok(());
    }
    let a = id();
    let mut ended = None;
    for window in WINDOWS {
        let session = lived(3_600_000, window);
        let start = now_millis();
        call!("set", store.set(&a, &session).await);
        // Used again and again: each touch and write asks for another hour.
        let touched = call!("touch", store.touch(&a, SystemTime::now() + HOUR).await);
        let rewritten = session_with(HOUR, json!({"again": true}));
        let wrote = call!("set", store.set(&a, &rewritten).await);
        let seen = call!("get", store.get(&a).await);
        if touched && wrote > 0 && seen.is_some() && now_millis() < start + window {
            ended = Some((session, window));
            break;
        }
        call!("destroy", store.destroy(&a).await);
    }
    let (session, _) = ended.ok_or_else(too_slow)?;
    let absolute = session.absolute_expiry_millis().unwrap_or_default();
    let wait = (absolute - now_millis()).max(0) as u64 + 150;
    sleep_ms(wait).await;
    ensure!(
        call!("get", store.get(&a).await).is_none(),
        "the session was still live after its absolute expiry, although touches and writes \
         asked for an hour"
    );
    ensure!(
        !call!("touch", store.touch(&a, SystemTime::now() + HOUR).await),
        "touch revived a session past its absolute expiry"
    );
    ensure!(
        call!("len", store.len().await) == 0,
        "len counted a session past its absolute expiry"
    );
    Ok(())
}

/// A session of `owner` with an absolute expiry, written under a fresh id: the id, what was
/// written and its version.
async fn owned(
    store: &dyn SessionStore,
    owner: Option<&Owner>,
) -> Result<(SessionId, Session, u64), String> {
    let a = id();
    let session = lived(3_600_000, 7_200_000).with_owner(owner.cloned());
    let version = call!("set", store.set(&a, &session).await);
    Ok((a, session, version))
}

async fn rotated(
    store: &dyn SessionStore,
    old: &SessionId,
    new: &SessionId,
    grace: Duration,
) -> Result<u64, String> {
    match call!("rotate", store.rotate(old, new, grace).await) {
        Rotation::Moved { version } => Ok(version),
        other => Err(format!(
            "rotate of a live session to a fresh id returned {other:?}, not Moved"
        )),
    }
}

fn refused_as_rotated(result: crate::error::Result<u64>, what: &str) -> CheckResult {
    match result {
        Err(err) => {
            ensure!(
                err.kind() == ErrorKind::Conflict,
                "{what} through a rotated id failed with {err}, not a conflict (Error::Rotated)"
            );
            Ok(())
        }
        Ok(version) => Err(format!(
            "{what} through a rotated id wrote (version {version}): a rotated id is read-only"
        )),
    }
}

pub(crate) async fn rotate_moves_the_session_and_leaves_the_old_id_read_only(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    if !rotation_declared(&*store) {
        return Ok(());
    }
    let who = owner();
    let owners = store.capabilities().owners;
    let (old, written, v) = owned(&*store, owners.then_some(&who)).await?;
    let before = call!("get", store.get(&old).await).ok_or("get after set returned None")?;
    let new = id();
    let version = rotated(&*store, &old, &new, HOUR).await?;
    ensure!(
        version != v && version != 0,
        "rotate returned version {version}: the session moved at {v} must be at another one"
    );
    let moved = call!("get", store.get(&new).await).ok_or("get of the new id returned None")?;
    ensure!(moved.data() == written.data(), "rotate changed the data");
    ensure!(
        moved.version() == version,
        "the new id holds version {}, rotate returned {version}",
        moved.version()
    );
    ensure!(moved.owner() == before.owner(), "rotate changed the owner");
    if absolute_declared(&*store) {
        lifetimes_are(
            &moved,
            before.expires_at_millis(),
            before.absolute_expiry_millis(),
            "the session under the new id",
        )?;
    }
    // The old id: read-only, the session as it was.
    let snapshot = call!("get", store.get(&old).await)
        .ok_or("get of the old id within its grace returned None")?;
    ensure!(
        snapshot.data() == written.data() && snapshot.version() == v,
        "get of the old id returned version {} (not the {v} it was rotated at) or other data",
        snapshot.version()
    );
    ensure!(
        snapshot.is_rotated() && !moved.is_rotated(),
        "get of the old id within its grace must return a session marked rotated \
         (Session::is_rotated), and get of the new id one that is not"
    );
    refused_as_rotated(store.set(&old, &sample()).await, "set")?;
    refused_as_rotated(
        store.set_if_version(&old, &sample(), v).await,
        "set_if_version",
    )?;
    refused_as_rotated(
        store.set_if_version(&old, &sample(), 0).await,
        "set_if_version(.., 0)",
    )?;
    ensure!(
        !call!("touch", store.touch(&old, SystemTime::now() + HOUR).await),
        "touch through a rotated id returned true"
    );
    ensure!(
        !call!("create", store.create(&old, &sample()).await),
        "create over a rotated id within its grace returned true"
    );
    let again = call!("rotate", store.rotate(&old, &id(), HOUR).await);
    ensure!(
        again == Rotation::Absent,
        "rotate of a rotated id returned {again:?}, not Absent"
    );
    // Writes through the new id go on, and never show through the old one.
    let changed =
        session_with(HOUR, json!({"after": "rotation"})).with_owner(before.owner().cloned());
    let next = call!(
        "set_if_version",
        store.set_if_version(&new, &changed, version).await
    );
    ensure!(
        next == version + 1,
        "a write after rotate returned {next}, not {}",
        version + 1
    );
    let snapshot = call!("get", store.get(&old).await)
        .ok_or("get of the old id within its grace returned None")?;
    ensure!(
        snapshot.data() == written.data() && snapshot.version() == v,
        "the old id showed what was written under the new id since: a holder of the old id \
         must learn nothing of the new session"
    );
    // A rotated id is not a session.
    let count = call!("len", store.len().await);
    ensure!(
        count == 1,
        "len counted {count} sessions after a rotation, not 1"
    );
    if owners {
        let listed = call!("sessions_of", store.sessions_of(&who, false).await);
        ensure!(
            listed.len() == 1,
            "sessions_of listed {} sessions after a rotation, not 1 (a rotated id is not a \
             session)",
            listed.len()
        );
        if !store.capabilities().lists_stored_ids {
            ensure!(
                listed[0].id == new,
                "sessions_of listed the old id, not the new one"
            );
        }
    }
    if store.capabilities().scan {
        let all = scanned(&*store).await?;
        ensure!(
            all.len() == 1,
            "a whole scan returned {} sessions after a rotation, not 1",
            all.len()
        );
    }
    Ok(())
}

pub(crate) async fn rotate_reports_absent_and_taken_and_changes_nothing(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    if !rotation_declared(&*store) {
        return Ok(());
    }
    let (absent, new) = (id(), id());
    let got = call!("rotate", store.rotate(&absent, &new, HOUR).await);
    ensure!(
        got == Rotation::Absent,
        "rotate of an absent id returned {got:?}"
    );
    ensure!(
        call!("get", store.get(&new).await).is_none(),
        "rotate of an absent id stored something under the new id"
    );
    let (old, _, v) = owned(&*store, None).await?;
    let got = call!("rotate", store.rotate(&old, &old, HOUR).await);
    ensure!(
        got == Rotation::Taken,
        "rotate of an id to itself returned {got:?}"
    );
    let (taken, taken_session, tv) = owned(&*store, None).await?;
    let got = call!("rotate", store.rotate(&old, &taken, HOUR).await);
    ensure!(
        got == Rotation::Taken,
        "rotate onto a live session returned {got:?}"
    );
    for (which, version, what) in [(&old, v, "the old id"), (&taken, tv, "the taken id")] {
        let now = call!("get", store.get(which).await)
            .ok_or_else(|| format!("a refused rotate ended {what}"))?;
        ensure!(
            now.version() == version && now.data() == taken_session.data(),
            "a refused rotate changed {what}"
        );
    }
    // Other data than stored, so no store may skip the write as unchanged (the contract
    // lets a `set` of the live session's exact content return the current version).
    let other = session_with(HOUR, json!({"after": "refused rotations"}));
    let written = call!("set", store.set(&old, &other).await);
    ensure!(
        written == v + 1,
        "after refused rotates, a set through the old id returned {written}, not {}: \
         the old id should be an ordinary live session",
        v + 1
    );
    // An expired session is absent.
    let expired = id();
    call!(
        "set",
        store.set(&expired, &sample().with_expires_at(100)).await
    );
    sleep_ms(250).await;
    let got = call!("rotate", store.rotate(&expired, &id(), HOUR).await);
    ensure!(
        got == Rotation::Absent,
        "rotate of an expired session returned {got:?}"
    );
    // A rotated id within its grace is taken.
    let (other, _, _) = owned(&*store, None).await?;
    let target = id();
    rotated(&*store, &other, &target, HOUR).await?;
    let got = call!("rotate", store.rotate(&taken, &other, HOUR).await);
    ensure!(
        got == Rotation::Taken,
        "rotate onto a rotated id returned {got:?}"
    );
    Ok(())
}

pub(crate) async fn a_rotated_id_ends_with_its_grace_or_its_new_session(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    if !rotation_declared(&*store) {
        return Ok(());
    }
    // The grace passes.
    let mut seen = None;
    for window in WINDOWS {
        let (old, _, _) = owned(&*store, None).await?;
        let start = now_millis();
        rotated(&*store, &old, &id(), Duration::from_millis(window as u64)).await?;
        let live = call!("get", store.get(&old).await).is_some();
        if now_millis() < start + window {
            ensure!(live, "get of the old id within its grace returned None");
            seen = Some((old, start + window));
            break;
        }
    }
    let (old, ends) = seen.ok_or_else(too_slow)?;
    sleep_ms((ends - now_millis()).max(0) as u64 + 150).await;
    ensure!(
        call!("get", store.get(&old).await).is_none(),
        "the old id still resolved after its grace"
    );
    ensure!(
        call!("set", store.set(&old, &sample()).await) > 0,
        "after its grace, the old id is absent: a set writes there as over nothing"
    );
    // A grace of zero ends it at once.
    let (old, _, _) = owned(&*store, None).await?;
    rotated(&*store, &old, &id(), Duration::ZERO).await?;
    ensure!(
        call!("get", store.get(&old).await).is_none(),
        "the old id resolved after a rotation with no grace"
    );
    // The new session is destroyed.
    let (old, _, _) = owned(&*store, None).await?;
    let new = id();
    rotated(&*store, &old, &new, HOUR).await?;
    call!("destroy", store.destroy(&new).await);
    ensure!(
        call!("get", store.get(&old).await).is_none(),
        "the old id still resolved after the new session was destroyed"
    );
    // Destroying the old id ends the new session too.
    let (old, _, _) = owned(&*store, None).await?;
    let new = id();
    rotated(&*store, &old, &new, HOUR).await?;
    call!("destroy", store.destroy(&old).await);
    ensure!(
        call!("get", store.get(&new).await).is_none(),
        "destroying the old id within its grace left the new session live"
    );
    // The new session expires (moved into the past by touch).
    let (old, _, _) = owned(&*store, None).await?;
    let new = id();
    rotated(&*store, &old, &new, HOUR).await?;
    call!("touch", store.touch(&new, SystemTime::now() - HOUR).await);
    ensure!(
        call!("get", store.get(&old).await).is_none(),
        "the old id still resolved after the new session expired"
    );
    // The session is rotated once more: the first old id ends.
    let (old, _, _) = owned(&*store, None).await?;
    let (new, newer) = (id(), id());
    rotated(&*store, &old, &new, HOUR).await?;
    rotated(&*store, &new, &newer, HOUR).await?;
    ensure!(
        call!("get", store.get(&old).await).is_none(),
        "the first old id still resolved after the session was rotated again"
    );
    ensure!(
        call!("get", store.get(&new).await).is_some(),
        "the second old id did not resolve within its grace"
    );
    // The owner's sessions end: both ids, and only the session counts.
    if store.capabilities().owners {
        let who = owner();
        let (old, _, _) = owned(&*store, Some(&who)).await?;
        let new = id();
        rotated(&*store, &old, &new, HOUR).await?;
        let ended = call!("destroy_owner", store.destroy_owner(&who, None).await);
        ensure!(
            ended == 1,
            "destroy_owner counted {ended} sessions after a rotation, not 1 (a rotated id is \
             not a session)"
        );
        for (which, what) in [(&old, "old"), (&new, "new")] {
            ensure!(
                call!("get", store.get(which).await).is_none(),
                "the {what} id still resolved after destroy_owner"
            );
        }
    }
    Ok(())
}

pub(crate) async fn rotated_ids_are_removed_by_delete_expired_and_clear(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    if !rotation_declared(&*store) {
        return Ok(());
    }
    let (old, _, _) = owned(&*store, None).await?;
    let new = id();
    rotated(&*store, &old, &new, Duration::from_millis(100)).await?;
    sleep_ms(250).await;
    let removed = call!("delete_expired", store.delete_expired().await);
    if !store.capabilities().expires_by_itself {
        ensure!(
            removed == 1,
            "delete_expired removed {removed} entries, not the one rotated id past its grace"
        );
    }
    ensure!(
        call!("get", store.get(&new).await).is_some(),
        "delete_expired removed the session a rotated id moved to"
    );
    let (old, _, _) = owned(&*store, None).await?;
    rotated(&*store, &old, &id(), HOUR).await?;
    call!("clear", store.clear().await);
    ensure!(
        call!("get", store.get(&old).await).is_none(),
        "clear left a rotated id that resolves"
    );
    ensure!(
        call!("create", store.create(&old, &sample()).await),
        "clear left a rotated id that refuses create"
    );
    Ok(())
}

pub(crate) async fn rotate_racing_a_write_through_the_old_id_loses_nothing(
    factory: Factory,
) -> CheckResult {
    let store = factory.shared().await;
    if !rotation_declared(&*store) {
        return Ok(());
    }
    for round in 0..super::RACE_ROUNDS * 4 {
        let (old, _, v) = owned(&*store, None).await?;
        let new = id();
        let barrier = Arc::new(Barrier::new(2));
        let saved = session_with(HOUR, json!({"saved": round}));
        let writer = {
            let (store, old, saved, barrier) =
                (store.clone(), old.clone(), saved.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.set_if_version(&old, &saved, v).await
            })
        };
        let rotator = {
            let (store, old, new, barrier) =
                (store.clone(), old.clone(), new.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.rotate(&old, &new, HOUR).await
            })
        };
        let write = writer.await;
        let rotation = joined("rotate", rotator.await)?;
        let Rotation::Moved { version } = rotation else {
            return Err(format!("rotate racing a write returned {rotation:?}"));
        };
        let moved = call!("get", store.get(&new).await).ok_or("the new id holds nothing")?;
        match write {
            Ok(Ok(written)) => {
                // The write landed first, so it is what moved.
                ensure!(
                    written == v + 1 && moved.data() == saved.data(),
                    "a write through the old id returned {written} before a rotate that \
                     returned {version}, but the new id holds other data: the write was lost"
                );
            }
            Ok(Err(err)) => {
                ensure!(
                    matches!(err, Error::Rotated { .. }) || err.kind() == ErrorKind::Conflict,
                    "a write racing rotate failed with {err}, not a conflict"
                );
                ensure!(
                    moved.data() != saved.data(),
                    "a write through the old id failed, yet the new id holds its data"
                );
            }
            Err(join) => return Err(format!("the write panicked: {join}")),
        }
    }
    Ok(())
}

pub(crate) async fn rotate_racing_destroy_owner_ends_the_session(factory: Factory) -> CheckResult {
    let store = factory.shared().await;
    if !rotation_declared(&*store) || !store.capabilities().owners {
        return Ok(());
    }
    for _ in 0..super::RACE_ROUNDS * 4 {
        let who = owner();
        let (old, _, _) = owned(&*store, Some(&who)).await?;
        let new = id();
        let barrier = Arc::new(Barrier::new(2));
        let ender = {
            let (store, who, barrier) = (store.clone(), who.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.destroy_owner(&who, None).await
            })
        };
        let rotator = {
            let (store, old, new, barrier) =
                (store.clone(), old.clone(), new.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.rotate(&old, &new, HOUR).await
            })
        };
        let ended = joined("destroy_owner", ender.await)?;
        let rotation = joined("rotate", rotator.await)?;
        ensure!(
            ended == 1,
            "destroy_owner racing rotate counted {ended} sessions, not the one it ended \
             (rotate returned {rotation:?})"
        );
        for (which, what) in [(&old, "old"), (&new, "new")] {
            ensure!(
                call!("get", store.get(which).await).is_none(),
                "after destroy_owner raced rotate ({rotation:?}), the {what} id still resolves"
            );
        }
    }
    Ok(())
}
