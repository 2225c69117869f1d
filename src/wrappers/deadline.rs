//! [`WithDeadline`]: a deadline on every operation of any store.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::deadline::within;
use crate::error::Result;
use crate::session::{Owner, Session, SessionId};
use crate::store::{Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore};

/// A store whose every operation fails with a transient
/// [`Error::Timeout`](crate::Error::Timeout) if the wrapped store has not answered within the
/// timeout. The built-in stores have a deadline of their own; this is for stores of yours
/// (or a tighter bound on a built-in one).
///
/// ```
/// # #[cfg(feature = "memory")]
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use session_stores::{MemoryStore, SessionStore, wrappers::deadline::WithDeadline};
///
/// let store = WithDeadline::new(MemoryStore::new(1000), Duration::from_secs(2));
/// assert_eq!(store.len().await.unwrap(), 0);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct WithDeadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> WithDeadline<S> {
    /// Wraps `inner`, bounding each of its operations by `timeout`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        WithDeadline { inner, timeout }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The bound on one operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<S: SessionStore> SessionStore for WithDeadline<S> {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        within(self.timeout, "get", Some(id), self.inner.get(id)).await
    }
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        within(self.timeout, "set", Some(id), self.inner.set(id, session)).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        within(self.timeout, "destroy", Some(id), self.inner.destroy(id)).await
    }
    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        within(
            self.timeout,
            "touch",
            Some(id),
            self.inner.touch(id, expires_at),
        )
        .await
    }
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        within(
            self.timeout,
            "create",
            Some(id),
            self.inner.create(id, session),
        )
        .await
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        let op = self.inner.set_if_version(id, session, expected);
        within(self.timeout, "set_if_version", Some(id), op).await
    }
    async fn len(&self) -> Result<u64> {
        within(self.timeout, "len", None, self.inner.len()).await
    }
    async fn is_empty(&self) -> Result<bool> {
        within(self.timeout, "is_empty", None, self.inner.is_empty()).await
    }
    async fn clear(&self) -> Result<()> {
        within(self.timeout, "clear", None, self.inner.clear()).await
    }
    async fn delete_expired(&self) -> Result<u64> {
        within(
            self.timeout,
            "delete_expired",
            None,
            self.inner.delete_expired(),
        )
        .await
    }
    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        let op = self.inner.sessions_of(owner, with_data);
        within(self.timeout, "sessions_of", None, op).await
    }
    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        let op = self.inner.destroy_owner(owner, except);
        within(self.timeout, "destroy_owner", None, op).await
    }
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        within(self.timeout, "scan", None, self.inner.scan(cursor, limit)).await
    }
    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        let op = self.inner.rotate(old, new, grace);
        within(self.timeout, "rotate", Some(old), op).await
    }
    async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
        let spoil = self.inner.make_undecodable(id);
        within(self.timeout, "make_undecodable", Some(id), spoil).await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}
