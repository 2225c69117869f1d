//! [`Migrating`]: move sessions from one store to another with no downtime and nobody logged
//! out.
//!
//! Deploy the app with `Migrating::new(old, new)` in place of the old store. From then on:
//!
//! - **reads** look in the new store first and fall back to the old one; a session found only
//!   in the old store is **moved** on that first touch (created in the new store, then removed
//!   from the old one);
//! - **writes** (`set`, `set_if_version`, `touch`, `create`) go to the new store only (a
//!   session still in the old store is moved first, so nothing is lost);
//! - **`destroy`**, `clear` and `destroy_owner` act on both; `delete_expired` adds up both;
//!   `len`, `destroy_owner`, `sessions_of` and `scan` count and show each session once, also
//!   one that sits in both stores (as after a bulk copy, which leaves the old store as it
//!   was).
//!
//! Sessions nobody touches stay in the old store until they expire, or until a bulk copy
//! (the `session-stores migrate` command, or a [`scan`](SessionStore::scan) loop of
//! `create`s) moves them; then the old store can go.
//!
//! # Moving to hashed ids
//!
//! To move sessions behind [`HashedIds`](crate::wrappers::hashed_ids::HashedIds), give the
//! hashed store a namespace of its own (another table, directory or key prefix). Over one
//! namespace, `Migrating::new(plain, HashedIds::new(same, &key))` would let the plain side
//! read a stored (hashed) id taken from a dump as if it were a cookie, and move it.
//!
//! # Guarantees
//!
//! The wrapper keeps the whole [contract](SessionStore#contract) (it passes the conformance
//! suite) as long as every writer goes through it. A move races other operations safely:
//! - the session is created in the new store only if it is absent there (an earlier write or
//!   move wins), and removed from the old store only if it is still the version that was
//!   copied;
//! - a `destroy` that lands between the copy and the removal is not undone: the mover sees
//!   the old session gone and removes its copy, with a compare-and-set on the copy's version,
//!   so a write made since is never removed;
//! - a move is not cancelled with the operation that started it: under a tokio runtime it
//!   runs as a task of its own, so a caller that gives up (a deadline, a client that went
//!   away) between the copy and the removal does not leave a copy that a `destroy` which
//!   already returned `Ok` missed, nor two copies, of which an expiring write would delete
//!   only the new one and the next read move the old one back;
//! - when the removal from the old store fails with anything but a conflict (a timeout, an
//!   outage), the mover cannot tell whether a `destroy` removed the old session, so it
//!   removes its copy too: the session stays in the old store (to be moved by a later read)
//!   or, if the removal did land before failing, is gone. A session lost that way is the
//!   price of never reviving one that a logout ended.
//!
//! `len` counts the new store's sessions and those of the old store that are not in the new
//! one: when the old store can [`scan`](Capabilities::scan), it reads the old store's pages
//! and looks each id up in the new store, so it costs a read per session of the old store.
//! (An old store that cannot scan is counted whole, and a session in both is then counted
//! twice.) A version from the old store does not carry over: the moved session
//! starts a new incarnation in the new store, so a compare-and-set holding the old version
//! fails with a conflict (re-read and retry, as after any concurrent write).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::session::{Owner, Session, SessionId};
use crate::store::{Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore};

/// A store that moves sessions from `old` to `new` as they are used. See the
/// [module docs](self).
#[derive(Debug)]
pub struct Migrating<Old, New> {
    // Shared with the moves in flight, which run as tasks of their own.
    old: Arc<Old>,
    new: Arc<New>,
}

impl<Old, New> Clone for Migrating<Old, New> {
    fn clone(&self) -> Self {
        Migrating {
            old: Arc::clone(&self.old),
            new: Arc::clone(&self.new),
        }
    }
}

impl<Old, New> Migrating<Old, New> {
    /// Reads from `new`, then `old`; writes to `new`.
    pub fn new(old: Old, new: New) -> Self {
        Migrating {
            old: Arc::new(old),
            new: Arc::new(new),
        }
    }

    /// The store sessions are moved from.
    pub fn old(&self) -> &Old {
        &self.old
    }

    /// The store sessions are moved to.
    pub fn new_store(&self) -> &New {
        &self.new
    }
}

impl<Old: SessionStore + 'static, New: SessionStore + 'static> Migrating<Old, New> {
    /// The live session under `id`: from the new store, or moved there from the old one.
    /// `op` names the operation in the error of a move that could not finish.
    async fn current(&self, op: &'static str, id: &SessionId) -> Result<Option<Session>> {
        if let Some(session) = self.new.get(id).await? {
            return Ok(Some(session));
        }
        self.move_from_old(op, id).await
    }

    /// Moves `id` from the old store to the new one, if it is in the old one; the session as
    /// the new store holds it afterwards. Under a tokio runtime the move runs as a task of
    /// its own, which dropping this future does not cancel (see the [module docs](self)).
    async fn move_from_old(&self, op: &'static str, id: &SessionId) -> Result<Option<Session>> {
        let (old, new) = (Arc::clone(&self.old), Arc::clone(&self.new));
        let owned = id.clone();
        let moving = async move { move_session(&*old, &*new, &owned).await };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn(moving)
                .await
                .unwrap_or_else(|join| Err(Error::backend(op, Some(id), join))),
            // Not on a tokio runtime: the move runs in this future.
            Err(_) => moving.await,
        }
    }
}

/// The move of [`Migrating::move_from_old`].
async fn move_session<Old: SessionStore, New: SessionStore>(
    old_store: &Old,
    new_store: &New,
    id: &SessionId,
) -> Result<Option<Session>> {
    let Some(old) = old_store.get(id).await? else {
        // Not in the old store (any more): another caller may have moved it since the new
        // store was read, so the new store answers.
        return new_store.get(id).await;
    };
    if old.is_rotated() {
        // A rotated id stays read-only where it is: copied, it would become a session.
        return Ok(Some(old));
    }
    let copied = match new_store.set_if_version(id, &old, 0).await {
        Ok(version) => version,
        // Written or moved there meanwhile: that one wins. The old copy is left to the
        // caller that moved it (removing it here would make that mover undo its copy).
        Err(err) if err.is_conflict() => return new_store.get(id).await,
        Err(err) => return Err(err),
    };
    if copied == 0 {
        // It expired on the way.
        old_store.destroy(id).await?;
        return Ok(None);
    }
    let removed = old_store
        .set_if_version(id, &Session::tombstone(), old.version())
        .await;
    let failure = match removed {
        Ok(_) => return Ok(Some(old.with_version(copied))),
        // Destroyed (or changed) in the old store since it was read.
        Err(err) if err.is_conflict() => None,
        // Not known whether a `destroy` removed it: the copy goes all the same.
        Err(err) => Some(err),
    };
    // Undo the copy, unless someone has written the new store since.
    let undone = match new_store
        .set_if_version(id, &Session::tombstone(), copied)
        .await
    {
        Ok(_) => Ok(None),
        Err(err) if err.is_conflict() => new_store.get(id).await,
        Err(err) => Err(err),
    };
    match failure {
        Some(err) => Err(err),
        None => undone,
    }
}

/// Sessions per page of the old store's scan when [`len`](SessionStore::len) counts it.
const LEN_PAGE: usize = 1000;

// The scan cursor of a [`Migrating`] store: the old store's scan, then the new one's.
const OLD_TAG: &str = "mig-old:";
const NEW_TAG: &str = "mig-new:";

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<Old: SessionStore + 'static, New: SessionStore + 'static> SessionStore
    for Migrating<Old, New>
{
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        self.current("get", id).await
    }

    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        // Moved first, so the version goes on from the moved session's.
        if self
            .current("set", id)
            .await?
            .is_some_and(|s| s.is_rotated())
        {
            return Err(Error::rotated(id));
        }
        self.new.set(id, session).await
    }

    /// The old store first: a move in flight then finds its source gone and undoes its copy
    /// (or its copy is already in the new store, which is destroyed next).
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.old.destroy(id).await?;
        self.new.destroy(id).await
    }

    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        if self.new.touch(id, expires_at).await? {
            return Ok(true);
        }
        match self.move_from_old("touch", id).await? {
            None => return Ok(false),
            Some(session) if session.is_rotated() => return Ok(false),
            Some(_) => {}
        }
        self.new.touch(id, expires_at).await
    }

    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        if self.old.get(id).await?.is_some() {
            return Ok(false);
        }
        self.new.create(id, session).await
    }

    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        // Moved first: a version read from the old store then conflicts (the moved session
        // is a new incarnation), and an `expected` of 0 conflicts with the moved session.
        if (self.current("set_if_version", id).await?).is_some_and(|s| s.is_rotated()) {
            return Err(Error::rotated(id));
        }
        self.new.set_if_version(id, session, expected).await
    }

    /// Each session once: see the [module docs](self).
    async fn len(&self) -> Result<u64> {
        let new = self.new.len().await?;
        if !self.old.capabilities().scan {
            return Ok(new + self.old.len().await?);
        }
        let mut only_old = 0;
        let mut cursor: Option<ScanCursor> = None;
        loop {
            let page = self.old.scan(cursor.as_ref(), LEN_PAGE).await?;
            for (id, _) in &page.sessions {
                if self.new.get(id).await?.is_none() {
                    only_old += 1;
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(new + only_old),
            }
        }
    }

    /// Empty exactly when both stores are (`len` is 0 only then), without `len`'s reads.
    async fn is_empty(&self) -> Result<bool> {
        Ok(self.new.is_empty().await? && self.old.is_empty().await?)
    }

    async fn clear(&self) -> Result<()> {
        self.old.clear().await?;
        self.new.clear().await
    }

    async fn delete_expired(&self) -> Result<u64> {
        Ok(self.new.delete_expired().await? + self.old.delete_expired().await?)
    }

    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        let mut listed = self.new.sessions_of(owner, with_data).await?;
        let moved: HashSet<SessionId> = listed.iter().map(|entry| entry.id.clone()).collect();
        for entry in self.old.sessions_of(owner, with_data).await? {
            if !moved.contains(&entry.id) && self.new.get(&entry.id).await?.is_none() {
                listed.push(entry);
            }
        }
        Ok(listed)
    }

    /// Ends the owner's sessions in both stores and counts each session once, also one that
    /// sits in both.
    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        // What sits in both stores, to be counted once.
        let in_old: HashSet<SessionId> = self
            .old
            .sessions_of(owner, false)
            .await?
            .into_iter()
            .map(|entry| entry.id)
            .collect();
        let in_both = self
            .new
            .sessions_of(owner, false)
            .await?
            .into_iter()
            .filter(|entry| in_old.contains(&entry.id) && Some(&entry.id) != except)
            .count() as u64;
        // The old store first: a session moved meanwhile is then in the new one.
        let old = self.old.destroy_owner(owner, except).await?;
        let new = self.new.destroy_owner(owner, except).await?;
        Ok((old + new).saturating_sub(in_both.min(old.min(new))))
    }

    /// The old store's sessions that are not in the new one yet, then the new store's. A
    /// session moved while the scan runs is never missed (if it left the old store before the
    /// old store's pages reached it, the new store's pages return it) but may be returned
    /// twice (once from each store): so this wrapper does not declare
    /// [`scan`](Capabilities::scan), whose sentence is "exactly once".
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let foreign = || Error::config("not a scan cursor of this migrating store");
        let (in_old, inner) = match cursor.map(ScanCursor::as_str) {
            None => (true, None),
            Some(text) => match (text.strip_prefix(OLD_TAG), text.strip_prefix(NEW_TAG)) {
                (Some(rest), _) => (true, (!rest.is_empty()).then(|| ScanCursor::new(rest))),
                (_, Some(rest)) => (false, (!rest.is_empty()).then(|| ScanCursor::new(rest))),
                _ => return Err(foreign()),
            },
        };
        if !in_old {
            let page = self.new.scan(inner.as_ref(), limit).await?;
            let next = page
                .next
                .map(|next| ScanCursor::new(format!("{NEW_TAG}{}", next.as_str())));
            return Ok(ScanPage::new(page.sessions, next).with_undecodable(page.undecodable));
        }
        let page = self.old.scan(inner.as_ref(), limit).await?;
        let mut sessions = Vec::with_capacity(page.sessions.len());
        for (id, session) in page.sessions {
            // Already in the new store (even one it cannot decode): its pages return it.
            match self.new.get(&id).await {
                Ok(None) => sessions.push((id, session)),
                Ok(Some(_)) => {}
                Err(err) if err.kind() == ErrorKind::Decode => {}
                Err(err) => return Err(err),
            }
        }
        let next = match page.next {
            Some(next) => format!("{OLD_TAG}{}", next.as_str()),
            None => NEW_TAG.to_string(),
        };
        Ok(ScanPage::new(sessions, Some(ScanCursor::new(next))).with_undecodable(page.undecodable))
    }

    /// The session is moved to the new store first, and rotated there; the new id must be
    /// free in both stores.
    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        match self.current("rotate", old).await? {
            None => return Ok(Rotation::Absent),
            Some(session) if session.is_rotated() => return Ok(Rotation::Absent),
            Some(_) => {}
        }
        if old == new || self.old.get(new).await?.is_some() {
            return Ok(Rotation::Taken);
        }
        self.new.rotate(old, new, grace).await
    }

    /// Damages the session where it is: in the new store, else in the old one.
    async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
        Ok(self.new.make_undecodable(id).await? || self.old.make_undecodable(id).await?)
    }

    /// What both stores keep.
    fn capabilities(&self) -> Capabilities {
        let (old, new) = (self.old.capabilities(), self.new.capabilities());
        Capabilities::new()
            .with_expires_by_itself(old.expires_by_itself && new.expires_by_itself)
            .with_owners(old.owners && new.owners)
            .with_lists_stored_ids(old.lists_stored_ids || new.lists_stored_ids)
            .with_absolute_expiry(old.absolute_expiry && new.absolute_expiry)
            // Sessions are rotated in the new store, after they moved there.
            .with_rotation(new.rotation)
    }
}
