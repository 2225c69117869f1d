//! The live-migration wrapper: sessions move from the old store to the new one on first
//! touch, writes go to the new one only, destroys reach both, and races never revive or lose a
//! session.
#![cfg(feature = "memory")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use session_stores::wrappers::migrating::Migrating;
use session_stores::{MemoryStore, Owner, Session, SessionId, SessionStore};

fn session(n: u64) -> Session {
    let mut s = Session::new(Duration::from_secs(3600));
    s.insert("n", n).unwrap();
    s
}

type Both = Migrating<Arc<MemoryStore>, Arc<MemoryStore>>;

fn stores() -> (Arc<MemoryStore>, Arc<MemoryStore>, Both) {
    let (old, new) = (
        Arc::new(MemoryStore::new(10_000)),
        Arc::new(MemoryStore::new(10_000)),
    );
    let both = Migrating::new(Arc::clone(&old), Arc::clone(&new));
    (old, new, both)
}

#[tokio::test]
async fn a_read_moves_the_session_with_its_data_expiry_and_owner() {
    let (old, new, both) = stores();
    let id = SessionId::generate();
    let owner = Owner::new("ada").unwrap();
    let written = session(1).with_owner(Some(owner.clone()));
    old.set(&id, &written).await.unwrap();
    let got = both
        .get(&id)
        .await
        .unwrap()
        .expect("found in the old store");
    assert_eq!(got.data(), written.data());
    assert_eq!(got.expires_at_millis(), written.expires_at_millis());
    assert_eq!(got.owner(), Some(&owner));
    assert!(
        old.get(&id).await.unwrap().is_none(),
        "moved out of the old store"
    );
    let moved = new
        .get(&id)
        .await
        .unwrap()
        .expect("moved into the new store");
    assert_eq!(
        moved.version(),
        got.version(),
        "the version the new store holds"
    );
    // A compare-and-set on what was read goes through.
    both.set_if_version(&id, &session(2), got.version())
        .await
        .unwrap();
    assert_eq!(
        new.get(&id)
            .await
            .unwrap()
            .unwrap()
            .get::<u64>("n")
            .unwrap(),
        Some(2)
    );
}

#[tokio::test]
async fn writes_go_to_the_new_store_and_move_first() {
    let (old, new, both) = stores();
    let (a, b, c) = (
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
    );
    for id in [&a, &b, &c] {
        old.set(id, &session(1)).await.unwrap();
    }
    both.set(&a, &session(5)).await.unwrap();
    assert!(old.get(&a).await.unwrap().is_none());
    assert_eq!(
        new.get(&a).await.unwrap().unwrap().get::<u64>("n").unwrap(),
        Some(5)
    );

    let later = SystemTime::now() + Duration::from_secs(7200);
    assert!(both.touch(&b, later).await.unwrap());
    assert!(old.get(&b).await.unwrap().is_none());
    let touched = new.get(&b).await.unwrap().unwrap();
    assert_eq!(
        touched.expires_at_millis(),
        session_stores::to_millis(later)
    );
    assert_eq!(
        touched.get::<u64>("n").unwrap(),
        Some(1),
        "touch keeps the data"
    );

    assert!(
        !both.create(&c, &session(9)).await.unwrap(),
        "live in the old store"
    );
    assert!(!both.touch(&SessionId::generate(), later).await.unwrap());
    both.destroy(&c).await.unwrap();
    assert!(old.get(&c).await.unwrap().is_none() && new.get(&c).await.unwrap().is_none());
    assert!(both.create(&c, &session(3)).await.unwrap());
    assert!(
        old.get(&c).await.unwrap().is_none(),
        "creates go to the new store"
    );
}

#[tokio::test]
async fn counts_listings_and_owner_ends_cover_both_stores() {
    let (old, new, both) = stores();
    let ada = Owner::new("ada").unwrap();
    for n in 0..3 {
        old.set(
            &SessionId::generate(),
            &session(n).with_owner(Some(ada.clone())),
        )
        .await
        .unwrap();
        new.set(
            &SessionId::generate(),
            &session(10 + n).with_owner(Some(ada.clone())),
        )
        .await
        .unwrap();
    }
    assert_eq!(both.len().await.unwrap(), 6);
    assert_eq!(both.sessions_of(&ada, false).await.unwrap().len(), 6);
    // Scanned: every session at least once, here (nothing moves) exactly once.
    let mut cursor = None;
    let mut seen = BTreeSet::new();
    loop {
        let page = both.scan(cursor.as_ref(), 2).await.unwrap();
        for (id, _) in page.sessions {
            assert!(seen.insert(id), "no duplicate while nothing moves");
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(both.destroy_owner(&ada, None).await.unwrap(), 6);
    assert_eq!(both.len().await.unwrap(), 0);
}

/// A move racing a destroy never brings the destroyed session back, and two racing reads
/// move it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_racing_destroys_and_reads_never_revive_or_lose() {
    let (old, new, both) = stores();
    let both = Arc::new(both);
    for round in 0..2000u64 {
        let id = SessionId::generate();
        old.set(&id, &session(round)).await.unwrap();
        let reader = {
            let (both, id) = (Arc::clone(&both), id.clone());
            tokio::spawn(async move { both.get(&id).await })
        };
        let other = {
            let (both, id) = (Arc::clone(&both), id.clone());
            tokio::spawn(async move {
                if round % 2 == 0 {
                    both.destroy(&id).await.map(|_| None)
                } else {
                    both.get(&id).await
                }
            })
        };
        let read = reader.await.unwrap().unwrap();
        let other = other.await.unwrap().unwrap();
        let now_old = old.get(&id).await.unwrap();
        let now_new = new.get(&id).await.unwrap();
        assert!(now_old.is_none(), "round {round}: left in the old store");
        if round % 2 == 0 {
            assert!(
                now_new.is_none(),
                "round {round}: a destroyed session came back"
            );
        } else {
            let stored = now_new.expect("two reads lost the session");
            for got in [read, other] {
                let got = got.expect("both reads see it");
                assert_eq!(got.get::<u64>("n").unwrap(), Some(round));
                assert_eq!(got.version(), stored.version(), "one move, one version");
            }
        }
    }
}

/// The whole conformance suite through the wrapper, with an old store that holds other
/// sessions meanwhile.
#[cfg(feature = "conformance")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrapper_keeps_the_contract() {
    session_stores::conformance::run(|| async {
        Migrating::new(MemoryStore::new(10_000), MemoryStore::new(10_000))
    })
    .await
    .unwrap();
}

/// From files to SQLite, through the suite and through a move.
#[cfg(all(feature = "conformance", feature = "file", feature = "sqlite"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_to_sqlite_keep_the_contract() {
    use session_stores::{FileStore, SqliteStore};
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&dirs);
    session_stores::conformance::run(move || {
        let keep = Arc::clone(&keep);
        async move {
            let dir = tempfile::tempdir().unwrap();
            let old = FileStore::new(dir.path().join("files")).await.unwrap();
            let new = SqliteStore::open(dir.path().join("s.db")).await.unwrap();
            keep.lock().unwrap().push(dir);
            Migrating::new(old, new)
        }
    })
    .await
    .unwrap();
    drop(dirs);
}

/// What [`Gated`] does to the `set_if_version` calls of a move.
#[derive(Clone, Copy, PartialEq)]
enum Gate {
    /// The copy into the new store (`expected` 0) waits for `release` before it is made,
    /// then for `resume` after it landed.
    HoldCopy,
    /// The removal from the old store (a tombstone over a live version) fails with a
    /// transient timeout, without doing anything.
    FailRemoval,
}

/// A memory store whose moves can be held or failed at chosen points.
struct Gated {
    inner: MemoryStore,
    gate: Gate,
    copy_started: tokio::sync::Notify,
    release: tokio::sync::Notify,
    copied: tokio::sync::Notify,
    resume: tokio::sync::Notify,
}

impl Gated {
    fn new(gate: Gate) -> Arc<Gated> {
        Arc::new(Gated {
            inner: MemoryStore::new(1_000),
            gate,
            copy_started: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
            copied: tokio::sync::Notify::new(),
            resume: tokio::sync::Notify::new(),
        })
    }
}

#[async_trait::async_trait]
impl SessionStore for Gated {
    async fn get(&self, id: &SessionId) -> session_stores::Result<Option<Session>> {
        self.inner.get(id).await
    }
    async fn set(&self, id: &SessionId, session: &Session) -> session_stores::Result<u64> {
        self.inner.set(id, session).await
    }
    async fn destroy(&self, id: &SessionId) -> session_stores::Result<()> {
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, at: SystemTime) -> session_stores::Result<bool> {
        self.inner.touch(id, at).await
    }
    async fn create(&self, id: &SessionId, session: &Session) -> session_stores::Result<bool> {
        self.inner.create(id, session).await
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> session_stores::Result<u64> {
        match self.gate {
            Gate::HoldCopy if expected == 0 => {
                self.copy_started.notify_one();
                self.release.notified().await;
                let copied = self.inner.set_if_version(id, session, 0).await;
                self.copied.notify_one();
                self.resume.notified().await;
                copied
            }
            Gate::FailRemoval if expected != 0 && session.is_expired() => {
                Err(session_stores::Error::Timeout {
                    operation: "set_if_version",
                    id: Some(id.hint()),
                    what: "an injected timeout",
                    source: None,
                })
            }
            _ => self.inner.set_if_version(id, session, expected).await,
        }
    }
    async fn len(&self) -> session_stores::Result<u64> {
        self.inner.len().await
    }
    async fn clear(&self) -> session_stores::Result<()> {
        self.inner.clear().await
    }
    async fn delete_expired(&self) -> session_stores::Result<u64> {
        self.inner.delete_expired().await
    }
}

/// A move whose caller gives up after the copy, while a logout ran between the move's read
/// and its copy: the logout returned `Ok`, so the session must stay gone. (The caller's
/// future is dropped at the worst point: the copy has landed, the undo has not run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_dropped_after_its_copy_never_outlives_a_logout() {
    let old = Arc::new(MemoryStore::new(1_000));
    let new = Gated::new(Gate::HoldCopy);
    let both = Arc::new(Migrating::new(Arc::clone(&old), Arc::clone(&new)));
    let id = SessionId::generate();
    old.set(&id, &session(1)).await.unwrap();
    let reader = {
        let (both, id) = (Arc::clone(&both), id.clone());
        tokio::spawn(async move { both.get(&id).await })
    };
    new.copy_started.notified().await;
    // The logout: both stores, while the move holds the session it read.
    both.destroy(&id).await.unwrap();
    new.release.notify_one();
    new.copied.notified().await;
    // The caller goes away (a deadline, a client disconnect) with the copy in place.
    reader.abort();
    let _ = reader.await;
    new.resume.notify_one();
    let mut still_there = true;
    for _ in 0..100 {
        still_there = new.inner.get(&id).await.unwrap().is_some();
        if !still_there {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !still_there,
        "the logged-out session lives on in the new store"
    );
    assert!(both.get(&id).await.unwrap().is_none());
    assert!(old.get(&id).await.unwrap().is_none());
}

/// A move whose removal from the old store fails with a timeout (not a conflict) removes
/// its copy: the session is then in the old store only, once, and a later read moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_whose_removal_fails_leaves_one_copy() {
    let old = Gated::new(Gate::FailRemoval);
    let new = Arc::new(MemoryStore::new(1_000));
    let both = Migrating::new(Arc::clone(&old), Arc::clone(&new));
    let id = SessionId::generate();
    old.inner.set(&id, &session(1)).await.unwrap();
    let err = both.get(&id).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(new.get(&id).await.unwrap().is_none(), "the copy stayed");
    assert!(old.inner.get(&id).await.unwrap().is_some());
    // A logout now ends it for good.
    both.destroy(&id).await.unwrap();
    assert!(both.get(&id).await.unwrap().is_none());
}
