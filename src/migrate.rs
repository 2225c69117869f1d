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

use std::sync::Arc;

use crate::error::{Error, Result};
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
    /// The cursor of the next page; `None` once the source is done.
    pub cursor: Option<ScanCursor>,
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
    if !from.capabilities().scan {
        return Err(Error::Unsupported {
            operation: "scan (the source store cannot be copied)",
        });
    }
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
        let mut sessions = page.sessions.into_iter();
        loop {
            let mut batch = Vec::with_capacity(options.concurrency);
            for (id, session) in sessions.by_ref().take(options.concurrency) {
                let to = Arc::clone(&to);
                batch.push(tokio::spawn(async move {
                    let expired = session.is_expired();
                    to.create(&id, &session)
                        .await
                        .map(|stored| (stored, expired))
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
                match joined? {
                    (_, true) => progress.expired += 1,
                    (true, false) => progress.copied += 1,
                    (false, false) => progress.present += 1,
                }
            }
        }
        progress.cursor = page.next;
        on_page(&progress)?;
    }
}
