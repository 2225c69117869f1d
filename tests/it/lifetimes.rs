//! Lifetimes beyond the conformance suite: the events wrapper (what it reports, what it never
//! reports, and that a slow listener never slows a request), eviction events of the memory
//! store, and rotated ids under `Migrating`.
#![cfg(feature = "memory")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_stores::wrappers::events::{EndCause, EventKind, EventSink, Events, SessionEvent};
use session_stores::wrappers::migrating::Migrating;
use session_stores::{
    ErrorKind, IdHint, MemoryStore, Owner, Rotation, Session, SessionId, SessionStore,
};
use tokio::sync::mpsc::Receiver;

const HOUR: Duration = Duration::from_secs(3600);

fn owned(owner: &Owner) -> Session {
    Session::new(HOUR).with_owner(Some(owner.clone()))
}

/// Every event waiting now, in order.
fn drain(events: &mut Receiver<SessionEvent>) -> Vec<SessionEvent> {
    let mut got = Vec::new();
    while let Ok(event) = events.try_recv() {
        got.push(event);
    }
    got
}

fn kinds(events: &[SessionEvent]) -> Vec<EventKind> {
    events.iter().map(|event| event.kind.clone()).collect()
}

#[cfg(feature = "conformance")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_wrapper_keeps_the_contract() {
    session_stores::conformance::run(|| async {
        let (sink, events) = EventSink::channel(16);
        // Nobody listens: every event is dropped and counted, and nothing waits.
        drop(events);
        Events::new(MemoryStore::new(10_000), sink)
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn events_report_each_change_that_happened_and_nothing_else() {
    let (sink, mut events) = EventSink::channel(64);
    let store = Events::new(MemoryStore::new(1000), sink.clone());
    let ada = Owner::new("ada").unwrap();
    let (a, b, c) = (
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
    );

    // Created: by create and by a compare-and-set from absent; never by a collision, an
    // upsert, or a create that stores nothing live.
    assert!(store.create(&a, &owned(&ada)).await.unwrap());
    assert!(!store.create(&a, &owned(&ada)).await.unwrap());
    store.set_if_version(&b, &owned(&ada), 0).await.unwrap();
    store.set(&c, &owned(&ada)).await.unwrap();
    let expired = Session::with_expiry(std::time::SystemTime::now() - HOUR);
    assert!(
        store
            .create(&SessionId::generate(), &expired)
            .await
            .unwrap()
    );
    let got = drain(&mut events);
    assert_eq!(kinds(&got), vec![EventKind::Created, EventKind::Created]);
    assert_eq!(got[0].id, Some(IdHint::from(&a)));
    assert_eq!(got[1].id, Some(IdHint::from(&b)));
    assert!(
        got.iter()
            .all(|e| e.owner.as_ref() == Some(&ada) && e.count == 1)
    );

    // Rotated: with the new id and the owner; nothing for an absent or taken rotation, or a
    // refused write through the old id.
    let new = SessionId::generate();
    let moved = store.rotate(&a, &new, HOUR).await.unwrap();
    assert!(matches!(moved, Rotation::Moved { .. }));
    assert_eq!(
        store
            .rotate(&a, &SessionId::generate(), HOUR)
            .await
            .unwrap(),
        Rotation::Absent
    );
    assert_eq!(store.rotate(&b, &c, HOUR).await.unwrap(), Rotation::Taken);
    let refused = store.set(&a, &owned(&ada)).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    let got = drain(&mut events);
    assert_eq!(
        kinds(&got),
        vec![EventKind::Rotated {
            to: IdHint::from(&new)
        }]
    );
    assert_eq!(got[0].id, Some(IdHint::from(&a)));
    assert_eq!(got[0].owner, Some(ada.clone()));

    // Logout: a live session, once; nothing for an absent one.
    store.destroy(&b).await.unwrap();
    store.destroy(&b).await.unwrap();
    store.destroy(&SessionId::generate()).await.unwrap();
    let got = drain(&mut events);
    assert_eq!(kinds(&got), vec![EventKind::Ended(EndCause::Logout)]);
    assert_eq!(
        (got[0].id.clone(), got[0].owner.clone()),
        (Some(IdHint::from(&b)), Some(ada.clone()))
    );

    // Owner-wide: the owner and how many; nothing when none was live.
    assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 2);
    assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 0);
    let got = drain(&mut events);
    assert_eq!(kinds(&got), vec![EventKind::Ended(EndCause::OwnerWide)]);
    assert_eq!((got[0].owner.clone(), got[0].count), (Some(ada.clone()), 2));

    // Expired and deleted: how many.
    for _ in 0..3 {
        let mut short = Session::new(Duration::from_millis(20));
        short.insert("n", 1).unwrap();
        store.set(&SessionId::generate(), &short).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(store.delete_expired().await.unwrap(), 3);
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    let got = drain(&mut events);
    assert_eq!(kinds(&got), vec![EventKind::Ended(EndCause::Expired)]);
    assert_eq!(got[0].count, 3);
    assert_eq!(sink.dropped(), 0);
}

#[tokio::test]
async fn a_slow_listener_never_slows_a_request_and_dropped_events_are_counted() {
    let (sink, _events) = EventSink::channel(4);
    let store = Events::new(MemoryStore::new(10_000), sink);
    let started = Instant::now();
    for _ in 0..1000 {
        assert!(
            store
                .create(&SessionId::generate(), &Session::new(HOUR))
                .await
                .unwrap()
        );
    }
    // Nobody reads: four events wait, the rest are dropped and counted; no create waited.
    assert_eq!(store.sink().dropped(), 996);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_callback_listener_receives_events_on_its_own_task() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = {
        let seen = Arc::clone(&seen);
        EventSink::callback(16, move |event| seen.lock().unwrap().push(event.kind))
    };
    let store = Events::new(MemoryStore::new(100), sink);
    let id = SessionId::generate();
    assert!(store.create(&id, &Session::new(HOUR)).await.unwrap());
    store.destroy(&id).await.unwrap();
    for _ in 0..100 {
        if seen.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![EventKind::Created, EventKind::Ended(EndCause::Logout)]
    );
}

#[tokio::test]
async fn the_memory_store_reports_each_live_session_it_evicts() {
    let (sink, mut events) = EventSink::channel(16);
    let store = MemoryStore::builder().capacity(2).events(sink).build();
    let ada = Owner::new("ada").unwrap();
    let ids: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
    for id in &ids {
        store.set(id, &owned(&ada)).await.unwrap();
    }
    let got = drain(&mut events);
    assert_eq!(kinds(&got), vec![EventKind::Ended(EndCause::Evicted)]);
    assert_eq!(got[0].id, Some(IdHint::from(&ids[0])));
    assert_eq!(got[0].owner, Some(ada));
    assert!(store.get(&ids[0]).await.unwrap().is_none());
}

/// A rotated id in the old store stays read-only through `Migrating`: it is never copied to
/// the new store as a session of its own, and writes through it are refused.
#[tokio::test]
async fn migrating_never_turns_a_rotated_id_into_a_session() {
    let (old, new) = (
        Arc::new(MemoryStore::new(100)),
        Arc::new(MemoryStore::new(100)),
    );
    let (a, b) = (SessionId::generate(), SessionId::generate());
    let mut session = Session::new(HOUR);
    session.insert("before", "login").unwrap();
    old.set(&a, &session).await.unwrap();
    assert!(matches!(
        old.rotate(&a, &b, HOUR).await.unwrap(),
        Rotation::Moved { .. }
    ));
    let both = Migrating::new(Arc::clone(&old), Arc::clone(&new));
    let got = both.get(&a).await.unwrap().unwrap();
    assert!(got.is_rotated());
    assert!(
        new.get(&a).await.unwrap().is_none(),
        "the rotated id was copied"
    );
    assert_eq!(
        both.set(&a, &session).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        both.set_if_version(&a, &session, got.version())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );
    assert!(
        !both
            .touch(&a, std::time::SystemTime::now() + HOUR)
            .await
            .unwrap()
    );
    assert!(new.get(&a).await.unwrap().is_none());
    // Its session moves on use, and rotates in the new store.
    let c = SessionId::generate();
    assert!(matches!(
        both.rotate(&b, &c, HOUR).await.unwrap(),
        Rotation::Moved { .. }
    ));
    assert!(new.get(&c).await.unwrap().is_some());
    assert!(both.get(&b).await.unwrap().unwrap().is_rotated());
}
