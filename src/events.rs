//! Session lifecycle events and where they go: an [`EventSink`], a bounded queue that never
//! makes a sender wait. The [`Events`](crate::wrappers::events::Events) wrapper sends them for
//! every store; a backend that can tell more (the memory store's evictions, Redis' own
//! expiries) sends its own to the same sink. See [`wrappers::events`](crate::wrappers::events)
//! for what is reported when.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::error::IdHint;
use crate::session::{Owner, SessionId};

/// Why sessions ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndCause {
    /// `destroy`: the user logged out, or the application ended this session.
    Logout,
    /// `destroy_owner`: every session of an owner (but one) ended at once.
    OwnerWide,
    /// Expired sessions were deleted (`delete_expired`), or a backend reported that a
    /// session expired on its own.
    Expired,
    /// The store evicted a live session to make room (memory store).
    Evicted,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A session was created.
    Created,
    /// A session moved to a new id ([`rotate`](crate::SessionStore::rotate)); the event's `id` is
    /// the old one.
    Rotated {
        /// The new id.
        to: IdHint,
    },
    /// Sessions ended.
    Ended(EndCause),
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionEvent {
    /// What happened.
    pub kind: EventKind,
    /// The session, where the event is about one (shortened: ids are credentials).
    pub id: Option<IdHint>,
    /// The owner, where known.
    pub owner: Option<Owner>,
    /// How many sessions the event is about: 1, or the count a `destroy_owner` or
    /// `delete_expired` reported.
    pub count: u64,
    /// When the change was made (the wrapper's clock, after the store answered).
    pub at: SystemTime,
}

impl SessionEvent {
    /// An event about `count` sessions. For stores and wrappers that report events.
    pub fn new(kind: EventKind, id: Option<&SessionId>, owner: Option<Owner>, count: u64) -> Self {
        SessionEvent {
            kind,
            id: id.map(IdHint::from),
            owner,
            count,
            at: SystemTime::now(),
        }
    }
}

/// Where events go: a bounded queue that never makes a sender wait. Cheap to clone; every
/// clone feeds the same queue and counts into the same dropped count.
#[derive(Clone)]
pub struct EventSink {
    sender: mpsc::Sender<SessionEvent>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// A sink holding at most `capacity` events that nobody has received yet (at least 1),
    /// and the receiver to read them from.
    pub fn channel(capacity: usize) -> (EventSink, mpsc::Receiver<SessionEvent>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let sink = EventSink {
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (sink, receiver)
    }

    /// A sink whose events `listener` receives one by one, on a tokio task of its own (so
    /// it must be called within a tokio runtime). While the listener is busy, up to
    /// `capacity` events wait; more are dropped and counted.
    pub fn callback<F>(capacity: usize, mut listener: F) -> EventSink
    where
        F: FnMut(SessionEvent) + Send + 'static,
    {
        let (sink, mut receiver) = EventSink::channel(capacity);
        tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                listener(event);
            }
        });
        sink
    }

    /// Sends `event` if the queue has room; otherwise drops and counts it. Never waits.
    pub fn send(&self, event: SessionEvent) {
        if self.sender.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many events were dropped: the queue was full (a slow listener) or nobody
    /// listens any more.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSink")
            .field("capacity", &self.sender.max_capacity())
            .field("dropped", &self.dropped())
            .finish()
    }
}
