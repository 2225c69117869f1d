//! Owners: the owner index behind `sessions_of` and `destroy_owner` ("log out everywhere").
//! Every check here passes at once for a store that does not declare
//! [`owners`](crate::Capabilities::owners).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;
use tokio::sync::Barrier;

use super::{CheckResult, Factory, HOUR, PastExt, id, joined, session_with, sleep_ms};
use crate::error::Error;
use crate::session::{Owner, Session, SessionId};
use crate::store::{OwnedSession, SessionStore};

/// A fresh owner, so that checks never see each other's sessions.
fn owner(name: &str) -> Owner {
    match Owner::new(format!("{name}:{}", id())) {
        Ok(owner) => owner,
        Err(err) => unreachable!("a generated owner is valid: {err}"),
    }
}

/// A session of `owner` whose data names it by `device`.
fn device(owner: &Owner, device: usize) -> Session {
    session_with(HOUR, json!({ "device": device })).with_owner(Some(owner.clone()))
}

fn device_of(entry: &OwnedSession) -> Option<u64> {
    entry.data.as_ref()?.get("device")?.as_u64()
}

/// Whether the store declares owners; the checks of this module do nothing otherwise.
fn declared(store: &dyn SessionStore) -> bool {
    store.capabilities().owners
}

/// Writes `count` sessions of `owner` (devices `0..count`), one after the other; their ids.
async fn write_devices(
    store: &dyn SessionStore,
    owner: &Owner,
    count: usize,
) -> Result<Vec<SessionId>, String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let id = id();
        call!("set", store.set(&id, &device(owner, i)).await);
        ids.push(id);
    }
    Ok(ids)
}

/// The ids `sessions_of` lists, failing on duplicates.
async fn listed(store: &dyn SessionStore, owner: &Owner) -> Result<BTreeSet<SessionId>, String> {
    let entries = call!("sessions_of", store.sessions_of(owner, false).await);
    let mut ids = BTreeSet::new();
    for entry in entries {
        ensure!(
            entry.data.is_none(),
            "sessions_of without data returned the data of {:?}",
            entry.id
        );
        let id = entry.id.clone();
        ensure!(ids.insert(entry.id), "sessions_of listed {id:?} twice");
    }
    Ok(ids)
}

/// The ids a listing should show: the written ids, or what the store keeps them as when it
/// re-keys sessions (its listing cannot be compared by id then, only by count).
fn expect_ids(
    store: &dyn SessionStore,
    got: &BTreeSet<SessionId>,
    want: &[&SessionId],
    what: &str,
) -> CheckResult {
    ensure!(
        got.len() == want.len(),
        "sessions_of listed {} sessions {what}, not {}",
        got.len(),
        want.len()
    );
    if !store.capabilities().lists_stored_ids {
        let want: BTreeSet<SessionId> = want.iter().map(|id| (*id).clone()).collect();
        ensure!(
            *got == want,
            "sessions_of listed other sessions than {what}: {got:?} instead of {want:?}"
        );
    }
    Ok(())
}

pub(crate) async fn owner_round_trips_through_every_write(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    let (ada, bob) = (owner("ada"), owner("bob"));
    let id = id();
    let got_owner = |s: Option<Session>| s.and_then(|s| s.owner().cloned());

    call!("set", store.set(&id, &device(&ada, 1)).await);
    let got = got_owner(call!("get", store.get(&id).await));
    ensure!(
        got.as_ref() == Some(&ada),
        "set stored owner {got:?}, not {ada:?}"
    );

    ensure!(
        call!(
            "touch",
            store.touch(&id, SystemTime::now() + HOUR * 2).await
        ),
        "touch of a live session returned false"
    );
    let got = got_owner(call!("get", store.get(&id).await));
    ensure!(
        got.as_ref() == Some(&ada),
        "touch changed the owner to {got:?}"
    );

    // Same data and expiry, another owner: a change, not an identical write to skip.
    let loaded = call!("get", store.get(&id).await).ok_or("the session vanished")?;
    let reowned = loaded.clone().with_owner(Some(bob.clone()));
    call!("set", store.set(&id, &reowned).await);
    let got = got_owner(call!("get", store.get(&id).await));
    ensure!(
        got.as_ref() == Some(&bob),
        "a set with the same data and expiry but another owner left owner {got:?}: it is a \
         write, not an identical set"
    );

    let current = call!("get", store.get(&id).await).ok_or("the session vanished")?;
    call!(
        "set_if_version",
        store
            .set_if_version(
                &id,
                &current.clone().with_owner(Some(ada.clone())),
                current.version()
            )
            .await
    );
    let got = got_owner(call!("get", store.get(&id).await));
    ensure!(
        got.as_ref() == Some(&ada),
        "set_if_version stored owner {got:?}, not {ada:?}"
    );

    call!(
        "set",
        store.set(&id, &current.clone().with_owner(None)).await
    );
    let got = got_owner(call!("get", store.get(&id).await));
    ensure!(got.is_none(), "a set without an owner left owner {got:?}");
    ensure!(
        listed(&*store, &ada).await?.is_empty(),
        "sessions_of still lists a session written without its owner"
    );

    let created = SessionId::generate();
    ensure!(
        call!("create", store.create(&created, &device(&bob, 2)).await),
        "create of a fresh id returned false"
    );
    let got = got_owner(call!("get", store.get(&created).await));
    ensure!(
        got.as_ref() == Some(&bob),
        "create stored owner {got:?}, not {bob:?}"
    );
    Ok(())
}

/// Data whose keys look like what a store or a wrapper might keep beside the caller's own
/// (an owner stashed in the data, a sealed field, escaped keys).
fn reserved_looking_data() -> serde_json::Value {
    json!({
        "\u{1}owner": "the caller's own",
        "\u{1}": 1,
        "\u{1}\u{1}owner": [2],
        "\u{1}sealed": {"\u{1}": "nested"},
        "$owner": "dollar",
        "_owner": "underscore",
        "__owner__": "dunder",
        "owner": "plain",
        "sealed": "not sealed",
        "device": 7,
    })
}

pub(crate) async fn owned_sessions_keep_every_data_key(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    let ada = owner("ada");
    let data = reserved_looking_data();
    let owned = session_with(HOUR, data.clone()).with_owner(Some(ada.clone()));
    let unowned = session_with(HOUR, data.clone());
    let mut written = Vec::new();
    for how in ["set", "create", "set_if_version", "unowned set"] {
        let id = id();
        match how {
            "set" => {
                call!("set", store.set(&id, &owned).await);
            }
            "create" => ensure!(
                call!("create", store.create(&id, &owned).await),
                "create of a fresh id returned false"
            ),
            "set_if_version" => {
                let v = call!("set", store.set(&id, &unowned).await);
                call!("set_if_version", store.set_if_version(&id, &owned, v).await);
            }
            _ => {
                call!("set", store.set(&id, &unowned).await);
            }
        }
        let got = call!("get", store.get(&id).await).ok_or("get returned None")?;
        ensure!(
            serde_json::Value::Object(got.data().clone()) == data,
            "{how} of a session whose data has keys such as \"\\u0001owner\" and \"sealed\" \
             read back other data: {:?}",
            got.data().keys().collect::<Vec<_>>()
        );
        let want_owner = (how != "unowned set").then(|| ada.clone());
        ensure!(
            got.owner() == want_owner.as_ref(),
            "{how} read back owner {:?}, not {want_owner:?}",
            got.owner()
        );
        written.push(id);
    }
    let entries = call!("sessions_of", store.sessions_of(&ada, true).await);
    ensure!(
        entries.len() == 3,
        "sessions_of listed {} sessions of an owner with 3",
        entries.len()
    );
    for entry in entries {
        let got = entry.data.map(serde_json::Value::Object);
        ensure!(
            got.as_ref() == Some(&data),
            "sessions_of with data listed other data than was written: {got:?}"
        );
    }
    if store.capabilities().scan {
        let mut cursor = None;
        let mut seen = 0;
        for _ in 0..1000 {
            let page = call!("scan", store.scan(cursor.as_ref(), 2).await);
            for (_, session) in page.sessions {
                if session.data().get("device") != Some(&json!(7)) {
                    continue;
                }
                seen += 1;
                ensure!(
                    serde_json::Value::Object(session.data().clone()) == data,
                    "scan returned other data than was written: {:?}",
                    session.data().keys().collect::<Vec<_>>()
                );
                ensure!(
                    session.owner().is_none_or(|owner| *owner == ada),
                    "scan returned owner {:?}, not {ada:?}",
                    session.owner()
                );
            }
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        ensure!(seen == 4, "scan returned {seen} of the 4 sessions written");
    }
    Ok(())
}

pub(crate) async fn sessions_of_lists_the_live_sessions_of_that_owner_only(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    let (ada, bob) = (owner("ada"), owner("bob"));
    let ids = write_devices(&*store, &ada, 6).await?;
    let bobs = id();
    call!("set", store.set(&bobs, &device(&bob, 99)).await);
    call!(
        "set",
        store
            .set(&id(), &session_with(HOUR, json!({"device": 98})))
            .await
    );
    ensure!(
        listed(&*store, &owner("nobody")).await?.is_empty(),
        "sessions_of lists sessions for an owner that has none"
    );

    // With data: every session, its expiry, version and data as stored.
    let entries = call!("sessions_of", store.sessions_of(&ada, true).await);
    ensure!(
        entries.len() == ids.len(),
        "sessions_of listed {} sessions of an owner with {}",
        entries.len(),
        ids.len()
    );
    let mut seen = BTreeSet::new();
    let lists_stored = store.capabilities().lists_stored_ids;
    for entry in &entries {
        let device = device_of(entry).ok_or("sessions_of with data listed no data")? as usize;
        ensure!(
            device < ids.len() && seen.insert(device),
            "sessions_of listed device {device}, which is not one of the owner's or listed twice"
        );
        let want_id = &ids[device];
        ensure!(
            lists_stored || entry.id == *want_id,
            "sessions_of listed {:?} with the data of {want_id:?}",
            entry.id
        );
        let got = call!("get", store.get(want_id).await).ok_or("a listed session is absent")?;
        ensure!(
            entry.expires_at_millis == got.expires_at_millis() && entry.version == got.version(),
            "sessions_of listed expiry {} and version {} for a session stored with {} and {}",
            entry.expires_at_millis,
            entry.version,
            got.expires_at_millis(),
            got.version()
        );
        ensure!(
            Some(got.data()) == entry.data.as_ref(),
            "sessions_of listed other data than get returns"
        );
    }
    let bob_listed = listed(&*store, &bob).await?;
    expect_ids(&*store, &bob_listed, &[&bobs], "for the other owner")?;

    // Destroyed, deleted by a past expiry, expired by touch, expired by time: never listed.
    call!("destroy", store.destroy(&ids[0]).await);
    call!(
        "set",
        store
            .set(&ids[1], &device(&ada, 1).with_expires_at(-1000))
            .await
    );
    call!("touch", store.touch(&ids[2], SystemTime::now()).await);
    call!(
        "set",
        store
            .set(&ids[3], &device(&ada, 3).with_expires_at(150))
            .await
    );
    sleep_ms(400).await;
    let left = listed(&*store, &ada).await?;
    expect_ids(
        &*store,
        &left,
        &[&ids[4], &ids[5]],
        "after one was destroyed, one deleted, one touched into the past and one expired",
    )?;
    call!("delete_expired", store.delete_expired().await);
    let left = listed(&*store, &ada).await?;
    expect_ids(&*store, &left, &[&ids[4], &ids[5]], "after delete_expired")?;
    Ok(())
}

pub(crate) async fn a_new_owner_moves_the_session_between_listings(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    let (ada, bob) = (owner("ada"), owner("bob"));
    let id = id();
    call!("set", store.set(&id, &device(&ada, 1)).await);
    call!("set", store.set(&id, &device(&bob, 1)).await);
    let (a, b) = (listed(&*store, &ada).await?, listed(&*store, &bob).await?);
    expect_ids(
        &*store,
        &a,
        &[],
        "for the previous owner after a set with another owner",
    )?;
    expect_ids(
        &*store,
        &b,
        &[&id],
        "for the new owner after a set with another owner",
    )?;
    ensure!(
        call!("destroy_owner", store.destroy_owner(&ada, None).await) == 0,
        "destroy_owner of the previous owner destroyed a session that is no longer its own"
    );
    ensure!(
        call!("get", store.get(&id).await).is_some(),
        "destroy_owner of the previous owner destroyed the new owner's session"
    );

    // Back to the first owner through compare-and-set, then to no owner through create.
    let current = call!("get", store.get(&id).await).ok_or("the session vanished")?;
    call!(
        "set_if_version",
        store
            .set_if_version(&id, &device(&ada, 2), current.version())
            .await
    );
    let (a, b) = (listed(&*store, &ada).await?, listed(&*store, &bob).await?);
    expect_ids(&*store, &a, &[&id], "for the owner set by set_if_version")?;
    expect_ids(&*store, &b, &[], "for the owner replaced by set_if_version")?;

    // Destroyed, then created again under the same id for the same owner: listed again.
    call!("destroy", store.destroy(&id).await);
    ensure!(
        call!("create", store.create(&id, &device(&ada, 3)).await),
        "create after destroy returned false"
    );
    let a = listed(&*store, &ada).await?;
    expect_ids(
        &*store,
        &a,
        &[&id],
        "after destroy and a new create of the same id",
    )?;
    call!("destroy_owner", store.destroy_owner(&ada, None).await);
    call!("set", store.set(&id, &device(&ada, 4)).await);
    let a = listed(&*store, &ada).await?;
    expect_ids(
        &*store,
        &a,
        &[&id],
        "after destroy_owner and a new set of the same id",
    )?;

    // Destroyed, then created again under the same id for another owner: listed only there.
    call!("destroy", store.destroy(&id).await);
    ensure!(
        call!("create", store.create(&id, &device(&bob, 5)).await),
        "create after destroy returned false"
    );
    let (a, b) = (listed(&*store, &ada).await?, listed(&*store, &bob).await?);
    expect_ids(
        &*store,
        &a,
        &[],
        "for the owner of a destroyed session created again for another",
    )?;
    expect_ids(
        &*store,
        &b,
        &[&id],
        "for the owner of the session created again",
    )?;
    ensure!(
        call!("destroy_owner", store.destroy_owner(&ada, None).await) == 0,
        "destroy_owner ended a session destroyed and created again for another owner"
    );
    Ok(())
}

pub(crate) async fn destroy_owner_ends_every_session_but_the_one_kept(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    let (ada, bob) = (owner("ada"), owner("bob"));
    let ids = write_devices(&*store, &ada, 5).await?;
    // An expired session of the owner is not counted as ended.
    call!(
        "set",
        store
            .set(&id(), &device(&ada, 9).with_expires_at(150))
            .await
    );
    let bobs: Vec<SessionId> = (0..2).map(|_| id()).collect();
    for (i, id) in bobs.iter().enumerate() {
        call!("set", store.set(id, &device(&bob, i)).await);
    }
    let unowned = id();
    call!(
        "set",
        store
            .set(&unowned, &session_with(HOUR, json!({"device": 7})))
            .await
    );
    sleep_ms(400).await;

    let kept = &ids[2];
    let ended = call!("destroy_owner", store.destroy_owner(&ada, Some(kept)).await);
    ensure!(
        ended == 4,
        "destroy_owner of 5 live sessions but one returned {ended}, not 4 (an expired session \
         is not counted)"
    );
    for (i, id) in ids.iter().enumerate() {
        let live = call!("get", store.get(id).await).is_some();
        ensure!(
            live == (id == kept),
            "after destroy_owner, session {i} of the owner is {} (the kept one is 2)",
            if live { "live" } else { "gone" }
        );
    }
    for id in bobs.iter().chain([&unowned]) {
        ensure!(
            call!("get", store.get(id).await).is_some(),
            "destroy_owner destroyed a session of another owner or of none"
        );
    }
    let left = listed(&*store, &ada).await?;
    expect_ids(&*store, &left, &[kept], "after destroy_owner kept one")?;
    let bob_left = listed(&*store, &bob).await?;
    expect_ids(
        &*store,
        &bob_left,
        &[&bobs[0], &bobs[1]],
        "for another owner",
    )?;

    // A kept id of another owner protects nothing of this one and is itself left alone.
    let ended = call!(
        "destroy_owner",
        store.destroy_owner(&ada, Some(&bobs[0])).await
    );
    ensure!(
        ended == 1,
        "destroy_owner returned {ended} for the owner's last session, not 1"
    );
    ensure!(
        call!("get", store.get(kept).await).is_none(),
        "destroy_owner kept a session it was not asked to keep"
    );
    ensure!(
        call!("get", store.get(&bobs[0]).await).is_some(),
        "destroy_owner destroyed another owner's session named as the one to keep"
    );
    ensure!(
        call!("destroy_owner", store.destroy_owner(&ada, None).await) == 0,
        "destroy_owner of an owner with no session left returned more than 0"
    );
    Ok(())
}

pub(crate) async fn destroy_owner_racing_writes_loses_no_session(factory: Factory) -> CheckResult {
    const BEFORE: usize = 40;
    const DURING: usize = 40;
    let store = factory.shared().await;
    if !declared(&*store) {
        return Ok(());
    }
    for round in 0..super::RACE_ROUNDS {
        let ada = owner("ada");
        let before = write_devices(&*store, &ada, BEFORE).await?;
        let barrier = Arc::new(Barrier::new(DURING + 1));
        let mut writers = Vec::new();
        for i in 0..DURING {
            let (store, ada, barrier) = (store.clone(), ada.clone(), barrier.clone());
            writers.push(tokio::spawn(async move {
                let id = SessionId::generate();
                barrier.wait().await;
                // Half create a new session, half set one.
                let session = device(&ada, BEFORE + i);
                if i % 2 == 0 {
                    store.create(&id, &session).await.map(|_| id)
                } else {
                    store.set(&id, &session).await.map(|_| id)
                }
            }));
        }
        let ender = {
            let (store, ada, barrier) = (store.clone(), ada.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.destroy_owner(&ada, None).await
            })
        };
        let mut during = Vec::new();
        for writer in writers {
            during.push(joined("a racing write", writer.await)?);
        }
        let ended = joined("destroy_owner", ender.await)?;
        ensure!(
            ended >= BEFORE as u64,
            "round {round}: destroy_owner returned {ended}, fewer than the {BEFORE} sessions \
             that were live when it was called"
        );
        for id in &before {
            ensure!(
                call!("get", store.get(id).await).is_none(),
                "round {round}: a session that was live when destroy_owner was called is live \
                 after it returned"
            );
        }
        let mut live = Vec::new();
        for id in &during {
            if call!("get", store.get(id).await).is_some() {
                live.push(id);
            }
        }
        let left = listed(&*store, &ada).await?;
        expect_ids(
            &*store,
            &left,
            &live,
            &format!(
                "in round {round}, of the sessions written during destroy_owner that are still \
                 live (a write racing destroy_owner was lost from the index)"
            ),
        )?;
        let ended = call!("destroy_owner", store.destroy_owner(&ada, None).await);
        ensure!(
            ended == live.len() as u64,
            "round {round}: destroy_owner ended {ended} sessions, not the {} left live",
            live.len()
        );
    }
    Ok(())
}

/// A listing racing writes that move sessions between owners lists, under an owner, only
/// versions that were written for that owner: a store that finds its candidates in the
/// index and then reads each session must check the owner it read, since the session may
/// have moved to another owner in between.
pub(crate) async fn a_listing_racing_owner_changes_lists_only_that_owners_versions(
    factory: Factory,
) -> CheckResult {
    const IDS: usize = 16;
    // The writes go on for at least this long (and at least 4 passes), so that a narrow
    // window between a listing's index read and its session reads is hit on fast stores too.
    const FLIPPING: std::time::Duration = std::time::Duration::from_millis(200);
    const MAX_PASSES: usize = 5000;
    let store = factory.shared().await;
    if !declared(&*store) {
        return Ok(());
    }
    for round in 0..super::RACE_ROUNDS {
        let (ada, bob) = (owner("ada"), owner("bob"));
        let ids: Vec<SessionId> = (0..IDS).map(|_| id()).collect();
        // Which owner each (device, version) was written for. Sessions are told apart by
        // their data (device n is ids[n]), since a store that re-keys sessions lists other ids.
        let mut written: BTreeMap<(u64, u64), Owner> = BTreeMap::new();
        for (n, id) in ids.iter().enumerate() {
            let version = call!("set", store.set(id, &device(&ada, n)).await);
            written.insert((n as u64, version), ada.clone());
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (store, ids, ada, bob, done) = (
                store.clone(),
                ids.clone(),
                ada.clone(),
                bob.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                let mut wrote = Vec::new();
                let result = async {
                    let began = std::time::Instant::now();
                    for flip in 0..MAX_PASSES {
                        if flip >= 4 && began.elapsed() >= FLIPPING {
                            break;
                        }
                        let to = if flip % 2 == 0 { &bob } else { &ada };
                        for (n, id) in ids.iter().enumerate() {
                            let version = store.set(id, &device(to, n)).await?;
                            wrote.push((n as u64, version, to.clone()));
                        }
                    }
                    Ok::<_, Error>(())
                }
                .await;
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                result.map(|()| wrote)
            })
        };
        let lister = {
            let (store, ada, done) = (store.clone(), ada.clone(), done.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let last = done.load(std::sync::atomic::Ordering::SeqCst);
                    for entry in store.sessions_of(&ada, true).await? {
                        seen.push((device_of(&entry), entry.version));
                    }
                    if last {
                        return Ok::<_, Error>(seen);
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        let wrote = joined("the writes moving sessions between owners", flipper.await)?;
        let seen = joined("sessions_of", lister.await)?;
        for (n, version, to) in wrote {
            written.insert((n, version), to);
        }
        for (device, version) in seen {
            let device = device.ok_or("sessions_of with data listed a session without its data")?;
            match written.get(&(device, version)) {
                Some(by) if *by == ada => {}
                Some(_) => {
                    return Err(format!(
                        "round {round}: sessions_of(ada) listed device {device} at version \
                         {version}, which was written for another owner (the listing read a \
                         session that had moved to another owner without checking its owner)"
                    ));
                }
                None => {
                    return Err(format!(
                        "round {round}: sessions_of(ada) listed device {device} at version \
                         {version}, which no write of this check returned"
                    ));
                }
            }
        }
        for id in &ids {
            call!("destroy", store.destroy(id).await);
        }
    }
    Ok(())
}

pub(crate) async fn owners_are_isolated_between_stores(factory: Factory) -> CheckResult {
    let (a, b) = (factory.boxed().await, factory.boxed().await);
    if !declared(&*a) {
        return Ok(());
    }
    let ada = owner("ada");
    let (in_a, in_b, shared) = (id(), id(), id());
    call!("set in a", a.set(&in_a, &device(&ada, 1)).await);
    call!("set in a", a.set(&shared, &device(&ada, 2)).await);
    call!("set in b", b.set(&in_b, &device(&ada, 3)).await);
    call!("set in b", b.set(&shared, &device(&ada, 4)).await);
    let (la, lb) = (listed(&*a, &ada).await?, listed(&*b, &ada).await?);
    expect_ids(
        &*a,
        &la,
        &[&in_a, &shared],
        "in store a for an owner in two stores",
    )?;
    expect_ids(
        &*b,
        &lb,
        &[&in_b, &shared],
        "in store b for an owner in two stores",
    )?;
    let ended = call!("destroy_owner in b", b.destroy_owner(&ada, None).await);
    ensure!(
        ended == 2,
        "destroy_owner in b returned {ended}, not b's 2 sessions"
    );
    ensure!(
        call!("get in a", a.get(&in_a).await).is_some()
            && call!("get in a", a.get(&shared).await).is_some(),
        "destroy_owner in store b destroyed sessions of store a"
    );
    let la = listed(&*a, &ada).await?;
    expect_ids(
        &*a,
        &la,
        &[&in_a, &shared],
        "in store a after destroy_owner in b",
    )?;
    call!("clear b", b.clear().await);
    let la = listed(&*a, &ada).await?;
    expect_ids(&*a, &la, &[&in_a, &shared], "in store a after clear of b")?;
    Ok(())
}

pub(crate) async fn clear_empties_every_owner(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    let ada = owner("ada");
    for i in 0..3 {
        call!("set", store.set(&id(), &device(&ada, i)).await);
    }
    call!("clear", store.clear().await);
    ensure!(
        listed(&*store, &ada).await?.is_empty(),
        "sessions_of lists sessions after clear"
    );
    ensure!(
        call!("destroy_owner", store.destroy_owner(&ada, None).await) == 0,
        "destroy_owner ended sessions after clear"
    );
    let fresh = id();
    call!("set", store.set(&fresh, &device(&ada, 4)).await);
    let left = listed(&*store, &ada).await?;
    expect_ids(&*store, &left, &[&fresh], "after clear and one new session")?;
    Ok(())
}

pub(crate) async fn an_owner_with_thousands_of_sessions(factory: Factory) -> CheckResult {
    const SESSIONS: usize = 2000;
    const WRITERS: usize = 16;
    let store = factory.shared().await;
    if !declared(&*store) {
        return Ok(());
    }
    let (ada, bob) = (owner("ada"), owner("bob"));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (store, ada) = (store.clone(), ada.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (writer..SESSIONS).step_by(WRITERS) {
                let id = SessionId::generate();
                store.set(&id, &device(&ada, i)).await?;
                ids.push(id);
            }
            Ok::<_, Error>(ids)
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(joined("a writer", task.await)?);
    }
    let bobs = id();
    call!("set", store.set(&bobs, &device(&bob, 0)).await);
    let entries = call!("sessions_of", store.sessions_of(&ada, true).await);
    let devices: BTreeMap<u64, usize> =
        entries
            .iter()
            .filter_map(device_of)
            .fold(BTreeMap::new(), |mut seen, device| {
                *seen.entry(device).or_default() += 1;
                seen
            });
    ensure!(
        entries.len() == SESSIONS && devices.len() == SESSIONS,
        "sessions_of listed {} entries ({} distinct sessions) of an owner with {SESSIONS}",
        entries.len(),
        devices.len()
    );
    let listed_ids = listed(&*store, &ada).await?;
    let want: Vec<&SessionId> = ids.iter().collect();
    expect_ids(
        &*store,
        &listed_ids,
        &want,
        "of an owner with thousands of sessions",
    )?;
    let kept = &ids[SESSIONS / 2];
    let ended = call!("destroy_owner", store.destroy_owner(&ada, Some(kept)).await);
    ensure!(
        ended == SESSIONS as u64 - 1,
        "destroy_owner of {SESSIONS} sessions but one returned {ended}"
    );
    let len = call!("len", store.len().await);
    ensure!(
        len == 2,
        "len is {len} after destroy_owner left one of {SESSIONS} sessions and another owner's one"
    );
    let left = listed(&*store, &ada).await?;
    expect_ids(&*store, &left, &[kept], "after destroy_owner of thousands")?;
    Ok(())
}

/// The devices `sessions_of(owner, true)` lists, with their expiries; fails on a device listed
/// twice or an entry without data.
async fn listed_devices(
    store: &dyn SessionStore,
    owner: &Owner,
) -> Result<BTreeMap<u64, i64>, String> {
    let entries = call!("sessions_of", store.sessions_of(owner, true).await);
    let mut devices = BTreeMap::new();
    for entry in &entries {
        let device = device_of(entry).ok_or("sessions_of with data listed an entry without it")?;
        ensure!(
            devices.insert(device, entry.expires_at_millis).is_none(),
            "sessions_of listed device {device} twice"
        );
    }
    Ok(devices)
}

pub(crate) async fn a_listing_follows_expiries_moved_by_touch_and_writes(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    let ada = owner("ada");
    // Device 0 is kept alive by `touch`, device 1 by a rewrite with a later expiry, device 3
    // by a compare-and-set with a later expiry, all before their first expiry; device 2 is
    // moved earlier by `touch`.
    let mut ready = None;
    for window in super::WINDOWS {
        let ids = [id(), id(), id(), id()];
        let first = device(&ada, 0).with_expires_at(window);
        call!("set", store.set(&ids[0], &first).await);
        call!(
            "set",
            store
                .set(&ids[1], &device(&ada, 1).with_expires_at(window))
                .await
        );
        call!("set", store.set(&ids[2], &device(&ada, 2)).await);
        let cas_from = call!(
            "set",
            store
                .set(&ids[3], &device(&ada, 3).with_expires_at(window))
                .await
        );
        let later = SystemTime::now() + HOUR;
        let touched = call!("touch", store.touch(&ids[0], later).await);
        let rewritten = device(&ada, 1);
        call!("set", store.set(&ids[1], &rewritten).await);
        let swapped = device(&ada, 3);
        // A conflict here means device 3 expired first: the store was too slow for the
        // window, and the next one is tried.
        let swapped_in_time = match store.set_if_version(&ids[3], &swapped, cas_from).await {
            Ok(_) => true,
            Err(err) if err.is_conflict() => false,
            Err(err) => {
                return Err(format!("set_if_version failed: {}", super::chain(&err)));
            }
        };
        let in_time = crate::session::now_millis() < first.expires_at_millis();
        let earlier = SystemTime::now() + std::time::Duration::from_millis(window as u64);
        ensure!(
            call!("touch", store.touch(&ids[2], earlier).await),
            "touch of a live session returned false"
        );
        if touched && in_time && swapped_in_time {
            let want = [
                crate::session::to_millis(later),
                rewritten.expires_at_millis(),
                swapped.expires_at_millis(),
            ];
            ready = Some((window, ids, want));
            break;
        }
        // Too slow for this window: its sessions go, so that the next window's listing
        // shows only its own (a slow network once left device 1 listed twice).
        for id in &ids {
            call!("destroy", store.destroy(id).await);
        }
    }
    let (window, ids, want) = ready.ok_or_else(super::too_slow)?;
    sleep_ms(window as u64 + 150).await;
    let devices = listed_devices(&*store, &ada).await?;
    ensure!(
        devices.keys().copied().collect::<Vec<_>>() == [0, 1, 3],
        "after the first expiry passed, sessions_of lists devices {:?}, not [0, 1, 3]: a \
         session kept alive by touch (0), by a write (1) or by a compare-and-set (3) stays \
         listed, and one touched to an earlier expiry that has passed (2) is not",
        devices.keys().collect::<Vec<_>>()
    );
    ensure!(
        devices[&0] == want[0] && devices[&1] == want[1] && devices[&3] == want[2],
        "sessions_of lists expiries {:?}, not the ones touch and the write set ({want:?})",
        devices.values().collect::<Vec<_>>()
    );
    let ended = call!("destroy_owner", store.destroy_owner(&ada, None).await);
    ensure!(
        ended == 3,
        "destroy_owner returned {ended}, not 3: the three sessions kept alive are live and the \
         one touched earlier has expired"
    );
    for (i, id) in ids.iter().enumerate() {
        ensure!(
            call!("get", store.get(id).await).is_none(),
            "device {i} is still live after destroy_owner"
        );
    }
    ensure!(
        listed(&*store, &ada).await?.is_empty(),
        "sessions_of lists sessions after destroy_owner"
    );
    Ok(())
}

pub(crate) async fn look_alike_owners_are_different_owners(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    let tag: String = id()
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(10)
        .collect();
    let base = format!("Ada-{tag}");
    let mut prefix = base.clone();
    prefix.pop();
    // In the order they are ended: wildcards and prefixes first, while every owner they could
    // match still has its sessions.
    let names = [
        format!("{base}%"),
        format!("{base}_"),
        format!("Ada_{tag}"),
        format!("{base}*"),
        format!("{base}?"),
        format!("{base}[1]"),
        prefix,
        format!(" {base}"),
        format!("ada-{tag}"),
        format!("ADA-{tag}"),
        format!("{base}\u{e9}"),
        format!("{base} "),
        format!("{base}\u{a0}"),
        base.clone(),
        format!("{base}1"),
        format!("{base}e\u{301}"),
    ];
    let owners: Vec<Owner> = names
        .iter()
        .map(|name| Owner::new(name.as_str()).map_err(|err| format!("owner {name:?}: {err}")))
        .collect::<Result<_, _>>()?;
    // Owner i has device i, and the base owner a second one (100 + i).
    let mut sessions: Vec<(usize, u64, SessionId)> = Vec::new();
    for (i, owner) in owners.iter().enumerate() {
        let mut devices = vec![i];
        if names[i] == base {
            devices.push(100 + i);
        }
        for d in devices {
            let id = id();
            call!("set", store.set(&id, &device(owner, d)).await);
            sessions.push((i, d as u64, id));
        }
    }
    for (i, owner) in owners.iter().enumerate() {
        let got: Vec<u64> = listed_devices(&*store, owner).await?.into_keys().collect();
        let want: Vec<u64> = sessions
            .iter()
            .filter(|(o, _, _)| *o == i)
            .map(|(_, d, _)| *d)
            .collect();
        ensure!(
            got == want,
            "sessions_of({:?}) lists devices {got:?}, not {want:?}: owners that look alike \
             are different owners",
            names[i]
        );
    }
    for (i, owner) in owners.iter().enumerate() {
        let want = sessions.iter().filter(|(o, _, _)| *o == i).count() as u64;
        let ended = call!("destroy_owner", store.destroy_owner(owner, None).await);
        ensure!(
            ended == want,
            "destroy_owner({:?}) returned {ended}, not {want}: owners that look alike are \
             different owners",
            names[i]
        );
        for (o, d, id) in &sessions {
            let live = call!("get", store.get(id).await).is_some();
            ensure!(
                live == (*o > i),
                "after destroy_owner({:?}), device {d} of owner {:?} is {}",
                names[i],
                names[*o],
                if live { "still live" } else { "gone" }
            );
        }
    }
    Ok(())
}

pub(crate) async fn a_listed_id_ends_exactly_that_session(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    let ada = owner("ada");
    let ids = write_devices(&*store, &ada, 3).await?;
    let entries = call!("sessions_of", store.sessions_of(&ada, true).await);
    let entry = |device: u64| {
        entries
            .iter()
            .find(|entry| device_of(entry) == Some(device))
            .ok_or_else(|| format!("sessions_of did not list device {device} of 3"))
    };
    let (first, second, third) = (entry(0)?, entry(1)?, entry(2)?);
    if store.capabilities().lists_stored_ids {
        // A listed id is not a cookie: nothing but destroy finds the session by it.
        ensure!(
            call!("get", store.get(&third.id).await).is_none(),
            "get of an id sessions_of listed found a session: a listed id must not work as \
             a cookie in a store that lists stored ids"
        );
        ensure!(
            !call!(
                "touch",
                store.touch(&third.id, SystemTime::now() + HOUR).await
            ),
            "touch of an id sessions_of listed found a session"
        );
        match store
            .set_if_version(&third.id, &device(&ada, 9), third.version)
            .await
        {
            Err(err) if err.is_conflict() => {}
            Ok(_) => return Err("set_if_version through an id sessions_of listed wrote".into()),
            Err(err) => {
                return Err(format!(
                    "set_if_version through a listed id failed: {}",
                    super::chain(&err)
                ));
            }
        }
        let kept = call!("get", store.get(&ids[2]).await)
            .ok_or("a session was lost after operations on its listed id")?;
        ensure!(
            kept.version() == third.version && kept.data() == device(&ada, 2).data(),
            "operations on a listed id changed the session it lists"
        );
    }
    // Sign out one device.
    call!("destroy", store.destroy(&second.id).await);
    ensure!(
        call!("get", store.get(&ids[1]).await).is_none(),
        "destroy of the id sessions_of listed for a session left that session live"
    );
    for device in [0, 2] {
        ensure!(
            call!("get", store.get(&ids[device]).await).is_some(),
            "destroy of one listed id ended device {device} too"
        );
    }
    // Log out everywhere but the device a listing names.
    let ended = call!(
        "destroy_owner",
        store.destroy_owner(&ada, Some(&first.id)).await
    );
    ensure!(
        ended == 1,
        "destroy_owner keeping a listed id ended {ended} sessions, not 1"
    );
    ensure!(
        call!("get", store.get(&ids[0]).await).is_some(),
        "destroy_owner ended the session whose listed id it was to keep"
    );
    ensure!(
        call!("get", store.get(&ids[2]).await).is_none(),
        "destroy_owner kept a session it was to end"
    );
    Ok(())
}
