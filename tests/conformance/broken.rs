//! The suite has teeth: each store here breaks exactly one contract sentence, and the suite
//! must fail on it, naming the check for that sentence. The same store with no defect passes,
//! so each failure is the defect's doing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use session_stores::{
    Error, Result, Session, SessionId, SessionStore, async_trait, now_millis, to_millis,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Defect {
    None,
    IgnoresExpiry,
    DestroyDoesNothing,
    TouchRewritesData,
    NonAtomicCreate,
    SetIfVersionIgnoresVersion,
    LenCountsExpired,
    AcceptsOverDeepData,
    UnchangedSetMisreportsVersion,
}

struct Faulty {
    map: Mutex<HashMap<SessionId, Session>>,
    defect: Defect,
}

impl Faulty {
    fn new(defect: Defect) -> Self {
        Faulty {
            map: Mutex::new(HashMap::new()),
            defect,
        }
    }

    /// The nesting limit every write must enforce (skipped by one defect).
    fn check_data(&self, id: &SessionId, session: &Session) -> Result<()> {
        if self.defect == Defect::AcceptsOverDeepData {
            return Ok(());
        }
        session_stores::check_nesting(id, session.data())
    }

    fn live_version(&self, id: &SessionId) -> Option<u64> {
        let map = self.map.lock().unwrap();
        map.get(id)
            .filter(|s| self.defect == Defect::IgnoresExpiry || !s.is_expired())
            .map(Session::version)
    }

    fn write(&self, id: &SessionId, session: &Session, version: u64) -> u64 {
        let mut map = self.map.lock().unwrap();
        if session.is_expired() {
            map.remove(id);
            return 0;
        }
        map.insert(id.clone(), session.clone().with_version(version));
        version
    }
}

#[async_trait]
impl SessionStore for Faulty {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        let map = self.map.lock().unwrap();
        Ok(map
            .get(id)
            .filter(|s| self.defect == Defect::IgnoresExpiry || !s.is_expired())
            .cloned())
    }

    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        self.check_data(id, session)?;
        // One lock for the read and the write, so the version advances atomically.
        let mut map = self.map.lock().unwrap();
        let live = map.get(id).filter(|s| !s.is_expired());
        let next = live.map_or(1, |s| s.version() + 1);
        if self.defect == Defect::UnchangedSetMisreportsVersion
            && live.is_some_and(|s| {
                s.data() == session.data() && s.expires_at_millis() == session.expires_at_millis()
            })
        {
            // Skips the identical write, but reports a version that is not the stored one.
            return Ok(next);
        }
        if session.is_expired() {
            map.remove(id);
            return Ok(0);
        }
        map.insert(id.clone(), session.clone().with_version(next));
        Ok(next)
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        if self.defect != Defect::DestroyDoesNothing {
            self.map.lock().unwrap().remove(id);
        }
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        if self.defect == Defect::TouchRewritesData {
            // Read, change, write back: a rewrite that advances the version.
            let Some(mut session) = self.get(id).await? else {
                return Ok(false);
            };
            session.set_expires_at(expires_at);
            self.set(id, &session).await?;
            return Ok(true);
        }
        let mut map = self.map.lock().unwrap();
        match map.get_mut(id).filter(|s| !s.is_expired()) {
            Some(session) => {
                session.set_expires_at(expires_at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        self.check_data(id, session)?;
        if self.defect == Defect::NonAtomicCreate {
            // Check, let other tasks run, then insert: the classic race.
            if self.live_version(id).is_some() {
                return Ok(false);
            }
            tokio::task::yield_now().await;
            self.write(id, session, 1);
            return Ok(true);
        }
        let mut map = self.map.lock().unwrap();
        if map.get(id).is_some_and(|s| !s.is_expired()) {
            return Ok(false);
        }
        map.insert(id.clone(), session.clone().with_version(1));
        Ok(true)
    }

    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        self.check_data(id, session)?;
        let mut map = self.map.lock().unwrap();
        let current = map
            .get(id)
            .filter(|s| !s.is_expired())
            .map_or(0, Session::version);
        if current != expected && self.defect != Defect::SetIfVersionIgnoresVersion {
            return Err(Error::conflict(id, expected));
        }
        if session.is_expired() {
            map.remove(id);
            return Ok(0);
        }
        map.insert(id.clone(), session.clone().with_version(current + 1));
        Ok(current + 1)
    }

    async fn len(&self) -> Result<u64> {
        let now = now_millis();
        let map = self.map.lock().unwrap();
        Ok(map
            .values()
            .filter(|s| self.defect == Defect::LenCountsExpired || !s.is_expired_at(now))
            .count() as u64)
    }

    async fn clear(&self) -> Result<()> {
        self.map.lock().unwrap().clear();
        Ok(())
    }

    async fn delete_expired(&self) -> Result<u64> {
        let now = now_millis();
        let mut map = self.map.lock().unwrap();
        let before = map.len();
        map.retain(|_, s| !s.is_expired_at(now));
        Ok((before - map.len()) as u64)
    }
}

async fn failures_of(defect: Defect) -> Vec<&'static str> {
    let _ = to_millis(SystemTime::now());
    match session_stores::conformance::run(move || async move { Faulty::new(defect) }).await {
        Ok(()) => Vec::new(),
        Err(failures) => {
            eprintln!("{defect:?}: {failures}");
            failures.failed_names()
        }
    }
}

async fn assert_caught(defect: Defect, by: &[&str]) {
    let failed = failures_of(defect).await;
    assert!(
        !failed.is_empty(),
        "the suite passed a store with defect {defect:?}"
    );
    for check in by {
        assert!(
            failed.contains(check),
            "defect {defect:?} was not caught by `{check}`; failed checks: {failed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_store_without_a_defect_passes() {
    assert_eq!(failures_of(Defect::None).await, Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_store_that_ignores_expiry() {
    assert_caught(
        Defect::IgnoresExpiry,
        &[
            "get_never_returns_expired",
            "expiry_is_honoured_at_sub_second_granularity",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_destroy_that_does_nothing() {
    assert_caught(
        Defect::DestroyDoesNothing,
        &["destroy_removes", "destroy_is_idempotent"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_touch_that_rewrites_data() {
    assert_caught(Defect::TouchRewritesData, &["touch_keeps_data_and_version"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_non_atomic_create() {
    assert_caught(
        Defect::NonAtomicCreate,
        &["create_concurrent_exactly_one_wins"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_set_if_version_that_ignores_the_version() {
    assert_caught(
        Defect::SetIfVersionIgnoresVersion,
        &[
            "set_if_version_mismatch_conflicts_and_writes_nothing",
            "set_if_version_zero_means_absent",
            "set_if_version_concurrent_increments_lose_nothing",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_len_that_counts_expired_sessions() {
    assert_caught(Defect::LenCountsExpired, &["len_counts_live_sessions_only"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_check_names_an_unknown_check() {
    let err = session_stores::conformance::run_check("no_such_check", || async {
        Faulty::new(Defect::None)
    })
    .await
    .unwrap_err();
    assert!(err.message.contains("no_such_check"), "{err}");
    assert!(session_stores::conformance::check_names().count() >= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_store_that_accepts_data_it_could_not_read_back() {
    assert_caught(
        Defect::AcceptsOverDeepData,
        &["nesting_at_the_limit_round_trips_and_deeper_is_refused"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_skipped_identical_set_that_misreports_its_version() {
    assert_caught(
        Defect::UnchangedSetMisreportsVersion,
        &["set_of_identical_content_returns_the_stored_version"],
    )
    .await;
}
