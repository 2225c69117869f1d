//! The lifetimes checks have teeth: each store here is a correct memory store with one
//! lifetimes sentence broken the way a store (or a wrapper, or a hand-written rotation) could
//! break it, and the check for that sentence must fail on it. The same wrapper with no
//! defect passes, so each failure is the defect's doing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use session_stores::{
    Capabilities, MemoryStore, OwnedSession, Owner, Result, Rotation, ScanCursor, ScanPage,
    Session, SessionId, SessionStore, async_trait,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Defect {
    None,
    /// Writes drop the absolute expiry.
    DropsAbsoluteExpiry,
    /// A write with a later absolute expiry starts over with it.
    LaterWritePostponesAbsolute,
    /// Touch rewrites the session without its absolute expiry.
    TouchIgnoresAbsolute,
    /// Rotation by hand: a copy under the new id, the old id left as it was.
    RotateLeavesOldWritable,
    /// The old id shows the session under the new id.
    OldIdShowsTheNewSession,
    /// The old id resolves from a cache for its grace, whatever became of the new session.
    OldIdOutlivesTheNewSession,
    /// Rotation reads, waits, then writes back what it read under the new id.
    RotateWritesBackAStaleCopy,
    /// `len` counts rotated ids.
    LenCountsRotatedIds,
    /// Destroying the old id leaves the new session.
    DestroyOfOldIdKeepsNew,
}

struct Faulty {
    inner: MemoryStore,
    defect: Defect,
    /// Rotations made: old id -> (new id, the session as it was, grace end).
    rotated: Mutex<HashMap<SessionId, (SessionId, Session, i64)>>,
}

impl Faulty {
    fn new(defect: Defect) -> Faulty {
        Faulty {
            inner: MemoryStore::new(10_000),
            defect,
            rotated: Mutex::new(HashMap::new()),
        }
    }

    fn written(&self, session: &Session) -> Session {
        let mut session = session.clone();
        if self.defect == Defect::DropsAbsoluteExpiry {
            session.set_absolute_expiry_millis(None);
        }
        session
    }

    fn in_grace(&self, id: &SessionId) -> Option<(SessionId, Session)> {
        let rotated = self.rotated.lock().unwrap();
        let (new, session, ends) = rotated.get(id)?;
        (*ends > session_stores::now_millis()).then(|| (new.clone(), session.clone()))
    }
}

#[async_trait]
impl SessionStore for Faulty {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        let got = self.inner.get(id).await?;
        match self.defect {
            Defect::OldIdShowsTheNewSession if got.as_ref().is_some_and(Session::is_rotated) => {
                let Some((new, _)) = self.in_grace(id) else {
                    return Ok(got);
                };
                Ok(self.inner.get(&new).await?.map(|s| s.with_rotated(true)))
            }
            Defect::OldIdOutlivesTheNewSession if got.is_none() => {
                Ok(self.in_grace(id).map(|(_, session)| session))
            }
            _ => Ok(got),
        }
    }
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        if self.defect == Defect::LaterWritePostponesAbsolute
            && let Some(stored) = self.inner.get(id).await?
            && stored.absolute_expiry_millis() < session.absolute_expiry_millis()
        {
            self.inner.destroy(id).await?;
        }
        self.inner.set(id, &self.written(session)).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let keep = match self.defect {
            Defect::DestroyOfOldIdKeepsNew => match self.in_grace(id) {
                Some((new, _)) => self.inner.get(&new).await?.map(|s| (new, s)),
                None => None,
            },
            _ => None,
        };
        self.inner.destroy(id).await?;
        if let Some((new, session)) = keep {
            self.inner.set(&new, &session).await?;
        }
        Ok(())
    }
    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        if self.defect == Defect::TouchIgnoresAbsolute
            && let Some(stored) = self.inner.get(id).await?
            && stored.absolute_expiry_millis().is_some()
            && !stored.is_rotated()
        {
            let mut session = stored.clone();
            session.set_absolute_expiry_millis(None);
            session.set_expires_at(expires_at);
            self.inner.destroy(id).await?;
            self.inner
                .set_if_version(id, &session, 0)
                .await
                .map(|v| v > 0)?;
            return Ok(true);
        }
        self.inner.touch(id, expires_at).await
    }
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        self.inner.create(id, &self.written(session)).await
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        if self.defect == Defect::LaterWritePostponesAbsolute
            && let Some(stored) = self.inner.get(id).await?
            && stored.version() == expected
            && stored.absolute_expiry_millis() < session.absolute_expiry_millis()
        {
            self.inner.destroy(id).await?;
            return self.inner.set(id, session).await;
        }
        self.inner
            .set_if_version(id, &self.written(session), expected)
            .await
    }
    async fn len(&self) -> Result<u64> {
        let len = self.inner.len().await?;
        if self.defect == Defect::LenCountsRotatedIds {
            let rotated = self.rotated.lock().unwrap();
            let now = session_stores::now_millis();
            return Ok(len + rotated.values().filter(|(_, _, ends)| *ends > now).count() as u64);
        }
        Ok(len)
    }
    async fn clear(&self) -> Result<()> {
        self.rotated.lock().unwrap().clear();
        self.inner.clear().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }
    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        self.inner.sessions_of(owner, with_data).await
    }
    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        self.inner.destroy_owner(owner, except).await
    }
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        self.inner.scan(cursor, limit).await
    }
    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        let before = self.inner.get(old).await?;
        let rotation = match self.defect {
            Defect::RotateLeavesOldWritable => {
                let Some(session) = before.clone().filter(|s| !s.is_rotated()) else {
                    return Ok(Rotation::Absent);
                };
                if old == new || self.inner.get(new).await?.is_some() {
                    return Ok(Rotation::Taken);
                }
                let version = self.inner.set(new, &session).await?;
                Rotation::Moved { version }
            }
            Defect::RotateWritesBackAStaleCopy => {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let rotation = self.inner.rotate(old, new, grace).await?;
                if let (Rotation::Moved { .. }, Some(stale)) = (rotation, before.clone()) {
                    let version = self.inner.set(new, &stale).await?;
                    Rotation::Moved { version }
                } else {
                    rotation
                }
            }
            _ => self.inner.rotate(old, new, grace).await?,
        };
        if let (Rotation::Moved { .. }, Some(session)) = (rotation, before) {
            let ends = session_stores::now_millis()
                .saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
            let snapshot = session.with_rotated(true);
            (self.rotated.lock().unwrap()).insert(old.clone(), (new.clone(), snapshot, ends));
        }
        Ok(rotation)
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

async fn failures_of(defect: Defect, checks: &[&'static str]) -> Vec<&'static str> {
    let mut failed = Vec::new();
    for &check in checks {
        let result =
            session_stores::conformance::run_check(
                check,
                move || async move { Faulty::new(defect) },
            )
            .await;
        if result.is_err() {
            failed.push(check);
        }
    }
    failed
}

const LIFETIMES_CHECKS: [&str; 10] = [
    "absolute_expiry_round_trips_and_caps_every_write",
    "touch_never_moves_the_expiry_past_the_absolute_expiry",
    "later_writes_keep_the_earlier_absolute_expiry",
    "a_session_ends_at_its_absolute_expiry",
    "rotate_moves_the_session_and_leaves_the_old_id_read_only",
    "rotate_reports_absent_and_taken_and_changes_nothing",
    "a_rotated_id_ends_with_its_grace_or_its_new_session",
    "rotated_ids_are_removed_by_delete_expired_and_clear",
    "rotate_racing_a_write_through_the_old_id_loses_nothing",
    "rotate_racing_destroy_owner_ends_the_session",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifetimes_reference_without_a_defect_passes() {
    let failed = failures_of(Defect::None, &LIFETIMES_CHECKS).await;
    assert!(failed.is_empty(), "the reference failed {failed:?}");
}

macro_rules! caught {
    ($($name:ident: $defect:ident => [$($check:literal),+ $(,)?];)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let want: &[&'static str] = &[$($check),+];
            let failed = failures_of(Defect::$defect, want).await;
            assert_eq!(failed, want, "{:?} was not caught by every check named", Defect::$defect);
        }
    )*};
}

caught! {
    drops_absolute_expiry: DropsAbsoluteExpiry => [
        "absolute_expiry_round_trips_and_caps_every_write",
        "a_session_ends_at_its_absolute_expiry",
    ];
    later_write_postpones_absolute: LaterWritePostponesAbsolute => [
        "later_writes_keep_the_earlier_absolute_expiry",
    ];
    touch_ignores_absolute: TouchIgnoresAbsolute => [
        "touch_never_moves_the_expiry_past_the_absolute_expiry",
        "a_session_ends_at_its_absolute_expiry",
    ];
    rotate_leaves_old_writable: RotateLeavesOldWritable => [
        "rotate_moves_the_session_and_leaves_the_old_id_read_only",
    ];
    old_id_shows_the_new_session: OldIdShowsTheNewSession => [
        "rotate_moves_the_session_and_leaves_the_old_id_read_only",
    ];
    old_id_outlives_the_new_session: OldIdOutlivesTheNewSession => [
        "a_rotated_id_ends_with_its_grace_or_its_new_session",
    ];
    rotate_writes_back_a_stale_copy: RotateWritesBackAStaleCopy => [
        "rotate_racing_a_write_through_the_old_id_loses_nothing",
    ];
    len_counts_rotated_ids: LenCountsRotatedIds => [
        "rotate_moves_the_session_and_leaves_the_old_id_read_only",
    ];
    destroy_of_old_id_keeps_new: DestroyOfOldIdKeepsNew => [
        "a_rotated_id_ends_with_its_grace_or_its_new_session",
    ];
}
