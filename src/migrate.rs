//! Copying every live session from one store to another, resumably: what the
//! `session-stores migrate` command runs, usable from code as well.
//!
//! [`copy_sessions`] pages through the source with [`scan`](SessionStore::scan) and writes each
//! session to the destination with [`create`](SessionStore::create), so a session already at
//! the destination (written there since, by an app running on
//! [`Migrating`](crate::wrappers::migrating::Migrating), or by an earlier run) is never
//! overwritten. Data, expiry (to the millisecond) and owner are copied as they are; the
//! destination assigns its own versions (a new incarnation).
//!
//! After each page it hands the caller a [`CopyProgress`] holding the cursor of the next page:
//! save it (the command writes it to a state file) and pass it back as
//! [`CopyOptions::resume`] to go on after an interruption. A page copied twice (when the run
//! stopped between its writes and the save) costs nothing but time: its sessions are already
//! at the destination and are counted as present.
//!
//! # Guarantees
//!
//! - **No id is transformed twice.** A source that lists stored ids
//!   ([`lists_stored_ids`](crate::Capabilities::lists_stored_ids): a
//!   [`HashedIds`](crate::wrappers::hashed_ids::HashedIds) store lists the keyed hashes it
//!   stores, not its callers' ids) is refused with [`Error::Config`] when the destination
//!   also stores under ids of its own making: every id would be hashed a second time and
//!   every user logged out. Copy the stores under the wrappers instead (the same `HashedIds`
//!   key at both ends, each store opened without it); the `session-stores migrate` command
//!   does so by itself.
//! - **A logout during the copy stays a logout.** After writing a page, the copy reads that
//!   page of the source again (one scan, then a read by id for a copied session the second
//!   page does not show); a session destroyed there since it was read (a logout through
//!   [`Migrating`](crate::wrappers::migrating::Migrating), which destroys in both stores) is
//!   removed from the destination, with a compare-and-set on the version the copy wrote, so
//!   a session written there since is kept. Such sessions are counted in
//!   [`CopyProgress::vanished`]. (A source that lists stored ids cannot be read back by
//!   them, so this check needs a source that lists its callers' ids.)
//! - **A newer session at the destination is never overwritten**: every write is a
//!   [`create`](SessionStore::create).
//! - **One refused session never stops the copy.** A session the destination cannot take
//!   (data it cannot encode, such as `U+0000` or a whole float of 1e16 and more for
//!   Postgres' `jsonb`, or over a size limit) is reported in [`CopyProgress::failures`] by
//!   its shortened id and the reason, and the copy goes on. The cursor moves past it, so
//!   resuming does not repeat it. Any other error (the destination down) stops the copy.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, IdHint, Result};
use crate::session::{Session, SessionId};
use crate::store::{ScanCursor, SessionStore};

/// How [`copy_sessions`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CopyOptions {
    /// Sessions read per page of the source's scan. Default 1,000.
    pub page: usize,
    /// Writes in flight at once. Default 32.
    pub concurrency: usize,
    /// Where to start: a cursor saved from an earlier run's [`CopyProgress::cursor`].
    pub resume: Option<ScanCursor>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            page: 1000,
            concurrency: 32,
            resume: None,
        }
    }
}

impl CopyOptions {
    /// Sessions per page.
    pub fn page(mut self, page: usize) -> Self {
        self.page = page.max(1);
        self
    }

    /// Writes in flight at once.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Resumes from a saved cursor.
    pub fn resume(mut self, cursor: Option<ScanCursor>) -> Self {
        self.resume = cursor;
        self
    }
}

/// Where a copy stands, after each page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyProgress {
    /// Live sessions read from the source in this run.
    pub read: u64,
    /// Sessions written to the destination.
    pub copied: u64,
    /// Sessions already at the destination, left as they were.
    pub present: u64,
    /// Sessions that expired between the read and the write.
    pub expired: u64,
    /// Sessions destroyed at the source while they were copied, and so removed from the
    /// destination again.
    pub vanished: u64,
    /// Sessions the destination refused (see the [module docs](self)), by shortened id, with
    /// the reason; the copy went on past each.
    pub failures: Vec<CopyFailure>,
    /// Entries of the source that its scan could not decode (see
    /// [`Undecodable`](crate::Undecodable)), by shortened id (`?` when not even the id is
    /// valid), with the reason: not copied, and the copy went on past each.
    pub undecodable: Vec<CopyFailure>,
    /// The cursor of the next page; `None` once the source is done.
    pub cursor: Option<ScanCursor>,
}

/// A session [`copy_sessions`] could not write to the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyFailure {
    /// The session, shortened.
    pub id: IdHint,
    /// Why the destination refused it, with the error's causes.
    pub reason: String,
}

/// What became of one session.
enum Outcome {
    Copied,
    Present,
    Expired,
    Failed(CopyFailure),
}

/// The error kinds by which a destination refuses one session (its data or its size), not
/// the copy as a whole.
fn refuses_the_session(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::Encode | ErrorKind::TooLarge)
}

/// Writes one session; see the [module docs](self) for what each outcome means. A copied
/// session is checked against the source afterwards, page by page ([`take_back_vanished`]).
async fn copy_one(to: &dyn SessionStore, id: &SessionId, session: &Session) -> Result<Outcome> {
    if session.is_expired() {
        return Ok(Outcome::Expired);
    }
    match to.create(id, session).await {
        Ok(false) => Ok(Outcome::Present),
        Ok(true) => Ok(Outcome::Copied),
        Err(err) if refuses_the_session(&err) => Ok(Outcome::Failed(CopyFailure {
            id: id.hint(),
            reason: crate::error::chain(&err),
        })),
        Err(err) => Err(err),
    }
}

/// After a page is written: the copied sessions that the source no longer holds (destroyed
/// there since the page was read) are taken back from the destination, unless the
/// destination holds a newer write. The source's page is read again from the same cursor
/// (one scan, not a read per session); only a copied id that this second page does not
/// show is looked up by itself. Returns how many were taken back.
async fn take_back_vanished(
    from: &dyn SessionStore,
    to: &dyn SessionStore,
    start: Option<&ScanCursor>,
    limit: usize,
    copied: Vec<SessionId>,
) -> Result<u64> {
    if copied.is_empty() {
        return Ok(0);
    }
    let again: HashSet<SessionId> = from
        .scan(start, limit)
        .await?
        .sessions
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut taken_back = 0;
    for id in copied.iter().filter(|id| !again.contains(*id)) {
        if from.get(id).await?.is_some() {
            continue;
        }
        if let Some(copy) = to.get(id).await? {
            match to
                .set_if_version(id, &Session::tombstone(), copy.version())
                .await
            {
                Ok(_) => {}
                // Written there since the copy: the newer session stays.
                Err(err) if err.is_conflict() => continue,
                Err(err) => return Err(err),
            }
        }
        taken_back += 1;
    }
    Ok(taken_back)
}

/// Copies every live session of `from` into `to` (see the [module docs](self)), calling
/// `on_page` after each page; an error from `on_page` (say, the state file could not be
/// written) stops the copy. Both stores must declare [`scan`](crate::Capabilities::scan) for
/// the source; a source that does not is [`Error::Unsupported`].
pub async fn copy_sessions<F>(
    from: Arc<dyn SessionStore>,
    to: Arc<dyn SessionStore>,
    options: CopyOptions,
    mut on_page: F,
) -> Result<CopyProgress>
where
    F: FnMut(&CopyProgress) -> Result<()>,
{
    let (source, destination) = (from.capabilities(), to.capabilities());
    if !source.scan {
        return Err(Error::Unsupported {
            operation: "scan (the source store cannot be copied)",
        });
    }
    if source.lists_stored_ids && destination.lists_stored_ids {
        return Err(Error::config(
            "the source lists stored ids (HashedIds) and the destination stores sessions under \
             ids of its own making: every id would be hashed twice and every user logged out. \
             Copy the stores under the wrappers instead: open both without HashedIds (with the \
             same key at both ends afterwards); `session-stores migrate` does this itself when \
             both URLs name the same hash_ids_key_env key",
        ));
    }
    let check_source = !source.lists_stored_ids;
    let mut progress = CopyProgress {
        cursor: options.resume.clone(),
        ..CopyProgress::default()
    };
    let mut started = options.resume.is_some();
    loop {
        if started && progress.cursor.is_none() {
            return Ok(progress);
        }
        started = true;
        let page = from.scan(progress.cursor.as_ref(), options.page).await?;
        progress.read += page.sessions.len() as u64;
        progress
            .undecodable
            .extend(page.undecodable.iter().map(|entry| {
                CopyFailure {
                    id: entry
                        .id
                        .as_ref()
                        .map_or_else(|| crate::error::IdHint::from_raw("?"), SessionId::hint),
                    reason: crate::error::chain(&entry.error),
                }
            }));
        let mut copied = Vec::new();
        let mut sessions = page.sessions.into_iter();
        loop {
            let mut batch = Vec::with_capacity(options.concurrency);
            for (id, session) in sessions.by_ref().take(options.concurrency) {
                let to = Arc::clone(&to);
                batch.push(tokio::spawn(async move {
                    let outcome = copy_one(&*to, &id, &session).await;
                    (id, outcome)
                }));
            }
            if batch.is_empty() {
                break;
            }
            for task in batch {
                let joined = task.await.map_err(|err| Error::Backend {
                    operation: "migrate",
                    id: None,
                    source: Box::new(err),
                })?;
                let (id, outcome) = joined;
                match outcome? {
                    Outcome::Copied => {
                        progress.copied += 1;
                        copied.push(id);
                    }
                    Outcome::Present => progress.present += 1,
                    Outcome::Expired => progress.expired += 1,
                    Outcome::Failed(failure) => progress.failures.push(failure),
                }
            }
        }
        if check_source {
            let taken_back =
                take_back_vanished(&*from, &*to, progress.cursor.as_ref(), options.page, copied)
                    .await?;
            progress.copied -= taken_back;
            progress.vanished += taken_back;
        }
        progress.cursor = page.next;
        on_page(&progress)?;
    }
}
