//! The directory walks: `len`, `clear`, `delete_expired` (and its removal of stale
//! temporary files) and the pages of `scan`.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::codec::{SUFFIX, Stored, id_of_file_name, is_temp_file_name};
use super::inner::Inner;
use super::stop;
use crate::error::{Error, Result};
use crate::session::{SessionId, now_millis};
use crate::store::{ScanCursor, ScanPage, Undecodable};

/// How long `delete_expired` waits for the locks of one expired session before it leaves
/// that session to the next sweep.
pub(super) const SWEEP_LOCK_WAIT: Duration = Duration::from_millis(50);

/// The error of a walk that could not take the locks of `id` within an operation timeout.
pub(super) fn lock_held(op: &'static str, id: &SessionId) -> Error {
    Error::Timeout {
        operation: op,
        id: Some(id.into()),
        what: "the session's locks (held by another operation or process)",
        source: None,
    }
}

/// Temporary files untouched for this long are leftovers of a killed writer.
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

impl Inner {
    /// Calls `f` with each session file's id, one directory entry at a time.
    fn walk(
        &self,
        op: &'static str,
        mut f: impl FnMut(&Inner, SessionId) -> Result<()>,
        mut other: impl FnMut(&fs::DirEntry),
    ) -> Result<()> {
        let entries = fs::read_dir(&self.dir).map_err(|err| Error::backend(op, None, err))?;
        for entry in entries {
            stop::check(op, None)?;
            let entry = entry.map_err(|err| Error::backend(op, None, err))?;
            match id_of_file_name(&entry.file_name()) {
                Some(id) => f(self, id)?,
                None => other(&entry),
            }
        }
        Ok(())
    }

    /// Reads `id` for a directory walk: `Some` only for a file that decodes.
    fn load_for_walk(&self, op: &'static str, id: &SessionId) -> Result<Option<Stored>> {
        Ok(self.load(op, id)?.and_then(Result::ok))
    }

    pub(super) fn len(&self) -> Result<u64> {
        let now = now_millis();
        let mut live = 0;
        self.walk(
            "len",
            |inner, id| {
                if inner
                    .load_for_walk("len", &id)?
                    .is_some_and(|s| !s.is_expired_at(now) && s.moved_to.is_none())
                {
                    // A rotated id is not a session.
                    live += 1;
                }
                Ok(())
            },
            |_| {},
        )?;
        Ok(live)
    }

    /// Removes every session, each under its id's locks. A session whose locks another
    /// holder keeps for an operation timeout (a stopped process) does not stop the others:
    /// the walk goes on, and then fails with that timeout.
    pub(super) fn clear(&self) -> Result<()> {
        let mut held = None;
        self.walk(
            "clear",
            |inner, id| {
                let Some(_locks) = inner.lock_blocking("clear", &id, inner.operation_timeout)?
                else {
                    held.get_or_insert_with(|| lock_held("clear", &id));
                    return Ok(());
                };
                if let Some(stored) = inner.load_for_walk("clear", &id)? {
                    inner.remove_owned("clear", &id, stored.owner.as_ref())?;
                }
                Ok(())
            },
            |_| {},
        )?;
        self.clear_index()?;
        held.map_or(Ok(()), Err)
    }

    /// One page of [`scan`](crate::store::SessionStore::scan): the live sessions among the
    /// `limit` smallest ids greater than `after`, found in one pass over the directory that
    /// keeps at most `limit + 1` ids, then read like `get` reads them.
    pub(super) fn scan_page(&self, after: Option<&SessionId>, limit: usize) -> Result<ScanPage> {
        const OP: &str = "scan";
        let after = after.map(SessionId::as_str);
        // The `limit` smallest ids greater than `after` seen so far (a set: a file system
        // may list an entry replaced during the pass twice), and whether a greater one was
        // left out.
        let mut smallest: BTreeSet<SessionId> = BTreeSet::new();
        let mut more = false;
        let entries = fs::read_dir(&self.dir).map_err(|err| Error::backend(OP, None, err))?;
        for entry in entries {
            stop::check(OP, None)?;
            let entry = entry.map_err(|err| Error::backend(OP, None, err))?;
            let name = entry.file_name();
            // Compared as text before any allocation: most entries of a large directory are
            // outside the page. `str` and `SessionId` order alike (bytewise).
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
                continue;
            };
            if after.is_some_and(|after| stem <= after) {
                continue;
            }
            if smallest.len() >= limit
                && let Some(largest) = smallest.last()
                && stem >= largest.as_str()
            {
                more |= stem > largest.as_str();
                continue;
            }
            // Temporary files, lock files and the owner index are not `<valid id>.json`.
            let Ok(id) = SessionId::new(stem) else {
                continue;
            };
            smallest.insert(id);
            if smallest.len() > limit {
                smallest.pop_last();
                more = true;
            }
        }
        let next = if more {
            smallest.last().map(ScanCursor::after_id)
        } else {
            None
        };
        let mut sessions = Vec::with_capacity(smallest.len());
        let mut undecodable = Vec::new();
        for id in smallest {
            stop::check(OP, None)?;
            let stored = match self.load(OP, &id)? {
                // Destroyed since the pass, or an empty file: no session.
                None => continue,
                Some(Ok(stored)) => stored,
                // Reported, and the scan goes on.
                Some(Err(err)) => {
                    undecodable.push(Undecodable::new(Some(id), err));
                    continue;
                }
            };
            // A rotated id is not a session: skipped.
            if stored.is_expired_at(now_millis()) || stored.moved_to.is_some() {
                continue;
            }
            sessions.push((id, stored.into_session()));
        }
        Ok(ScanPage::new(sessions, next).with_undecodable(undecodable))
    }

    pub(super) fn delete_expired(&self) -> Result<u64> {
        let now = now_millis();
        let mut removed = 0;
        self.walk(
            "delete_expired",
            |inner, id| {
                if !inner
                    .load_for_walk("delete_expired", &id)?
                    .is_some_and(|s| s.is_expired_at(now))
                {
                    return Ok(());
                }
                // Re-check under the lock: the session may have been rewritten meanwhile. One
                // whose lock is held (a write in progress, a stopped process) is left for the
                // next sweep; the others go on.
                let Some(_locks) = inner.lock_blocking("delete_expired", &id, SWEEP_LOCK_WAIT)?
                else {
                    return Ok(());
                };
                if let Some(stored) = inner
                    .load_for_walk("delete_expired", &id)?
                    .filter(|s| s.is_expired_at(now_millis()))
                    && inner.remove_owned("delete_expired", &id, stored.owner.as_ref())?
                {
                    removed += 1;
                }
                Ok(())
            },
            |entry| {
                if is_temp_file_name(&entry.file_name()) {
                    remove_stale_temp(&entry.path());
                }
            },
        )?;
        Ok(removed)
    }
}

/// Removes a temporary file that has not been modified for [`STALE_TEMP_AGE`]: a writer
/// that was killed before its rename left it. Failures are ignored; the next run retries.
fn remove_stale_temp(path: &Path) {
    let stale = fs::symlink_metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age >= STALE_TEMP_AGE);
    if stale {
        let _ = fs::remove_file(path);
    }
}
