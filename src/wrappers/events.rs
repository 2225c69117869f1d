//! Events: observe sessions being created, rotated and ended, for audit logs and "new
//! sign-in" e-mails, without slowing a request.
//!
//! [`Events`] is a store over a store that reports each lifecycle change it makes to an
//! [`EventSink`]: a bounded queue. Sending never waits: when the queue is full (a slow
//! listener), the event is dropped and counted ([`EventSink::dropped`]), so a listener can
//! never slow or block a request. Listen with the [`Receiver`](tokio::sync::mpsc::Receiver)
//! that [`EventSink::channel`] returns, or hand a callback to [`EventSink::callback`], which
//! runs it on a task of its own.
//!
//! | event | when | what it carries |
//! |---|---|---|
//! | [`Created`](EventKind::Created) | `create` returned `true`, or `set_if_version(.., 0)` stored a session | id, owner |
//! | [`Rotated`](EventKind::Rotated) | `rotate` moved a session | old id, new id, owner |
//! | [`Ended`](EventKind::Ended)`(`[`Logout`](EndCause::Logout)`)` | `destroy` ended a live session | id, owner |
//! | [`Ended`](EventKind::Ended)`(`[`OwnerWide`](EndCause::OwnerWide)`)` | `destroy_owner` ended sessions | owner, how many |
//! | [`Ended`](EventKind::Ended)`(`[`Expired`](EndCause::Expired)`)` | `delete_expired` removed expired entries | how many |
//! | [`Ended`](EventKind::Ended)`(`[`Expired`](EndCause::Expired)`)` | Redis expired a session by itself (feature `redis`: [`watch_expiries`](crate::stores::redis::watch_expiries), with the server's keyspace notifications on) | id |
//! | [`Ended`](EventKind::Ended)`(`[`Evicted`](EndCause::Evicted)`)` | a [`MemoryStore`](crate::MemoryStore) evicted a live session to make room (give it the sink with [`MemoryStoreBuilder::events`](crate::stores::memory::MemoryStoreBuilder::events)) | id, owner |
//!
//! **No event for a write that did not happen**: a `create` that collided, a refused or
//! failed write, a `destroy` of an absent session, a `destroy_owner` or `delete_expired` that
//! ended nothing, a `rotate` that found the old id absent or the new one taken, send nothing.
//! A plain `set` sends nothing either: an upsert cannot tell a new session from an update
//! (middleware creates sessions with `create`). `destroy` reads the session first, to know
//! whether it was live and whose it was; two `destroy`s of one session racing may both
//! report it.
//!
//! Ids are credentials, so events carry an [`IdHint`](crate::IdHint) (the first characters), never a
//! whole id. Owners are carried whole: they are the application's user ids.
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use session_stores::wrappers::events::{EventKind, EventSink, Events};
//! use session_stores::{MemoryStore, Owner, Session, SessionId, SessionStore};
//!
//! let (sink, mut events) = EventSink::channel(1024);
//! let store = Events::new(MemoryStore::new(10_000), sink);
//! let id = SessionId::generate();
//! let owner = Owner::new("user:42")?;
//! let session = Session::new(Duration::from_secs(60)).with_owner(Some(owner.clone()));
//! assert!(store.create(&id, &session).await?);
//! let event = events.recv().await.unwrap();
//! assert_eq!(event.kind, EventKind::Created);
//! assert_eq!(event.owner, Some(owner));
//! # Ok::<(), session_stores::Error>(())
//! # }).unwrap();
//! ```

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub use crate::events::{EndCause, EventKind, EventSink, SessionEvent};

use crate::error::Result;
use crate::session::{Owner, Session, SessionId};
use crate::store::{Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore};

/// A store that reports the lifecycle changes it makes to an [`EventSink`]. See the
/// [module docs](self).
#[derive(Debug)]
pub struct Events<S> {
    inner: S,
    sink: EventSink,
}

impl<S> Events<S> {
    /// `inner`, reporting to `sink`.
    pub fn new(inner: S, sink: EventSink) -> Self {
        Events { inner, sink }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The sink events go to.
    pub fn sink(&self) -> &EventSink {
        &self.sink
    }

    fn emit(&self, kind: EventKind, id: Option<&SessionId>, owner: Option<Owner>, count: u64) {
        self.sink.send(SessionEvent::new(kind, id, owner, count));
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<S: SessionStore> SessionStore for Events<S> {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        self.inner.get(id).await
    }
    /// Sends nothing: an upsert cannot tell a new session from an update.
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        self.inner.set(id, session).await
    }
    /// Reads the session first: an event only when a live session (not a rotated id)
    /// ended.
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let before = self.inner.get(id).await.ok().flatten();
        self.inner.destroy(id).await?;
        if let Some(session) = before.filter(|session| !session.is_rotated()) {
            let owner = session.owner().cloned();
            self.emit(EventKind::Ended(EndCause::Logout), Some(id), owner, 1);
        }
        Ok(())
    }
    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        self.inner.touch(id, expires_at).await
    }
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let created = self.inner.create(id, session).await?;
        // A create whose expiry has passed stores nothing live: no session began.
        if created && session.capped_expiry_millis() > crate::session::now_millis() {
            self.emit(EventKind::Created, Some(id), session.owner().cloned(), 1);
        }
        Ok(created)
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        let version = self.inner.set_if_version(id, session, expected).await?;
        if expected == 0 && version > 0 {
            self.emit(EventKind::Created, Some(id), session.owner().cloned(), 1);
        }
        Ok(version)
    }
    async fn len(&self) -> Result<u64> {
        self.inner.len().await
    }
    async fn is_empty(&self) -> Result<bool> {
        self.inner.is_empty().await
    }
    async fn clear(&self) -> Result<()> {
        self.inner.clear().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        let removed = self.inner.delete_expired().await?;
        if removed > 0 {
            self.emit(EventKind::Ended(EndCause::Expired), None, None, removed);
        }
        Ok(removed)
    }
    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        self.inner.sessions_of(owner, with_data).await
    }
    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        let ended = self.inner.destroy_owner(owner, except).await?;
        if ended > 0 {
            let kind = EventKind::Ended(EndCause::OwnerWide);
            self.emit(kind, None, Some(owner.clone()), ended);
        }
        Ok(ended)
    }
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        self.inner.scan(cursor, limit).await
    }
    /// The owner of a moved session is read back from the new id (one more read, on a
    /// rotation only).
    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        let rotation = self.inner.rotate(old, new, grace).await?;
        if let Rotation::Moved { .. } = rotation {
            let owner = (self.inner.get(new).await.ok().flatten())
                .and_then(|session| session.owner().cloned());
            let kind = EventKind::Rotated { to: new.into() };
            self.emit(kind, Some(old), owner, 1);
        }
        Ok(rotation)
    }
    async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
        self.inner.make_undecodable(id).await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}
