//! The owner index: `.owners/<key>/<id>` marker files, a superset of each owner's live
//! sessions, and the operations that go through it (`sessions_of`, `destroy_owner`).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::path::PathBuf;

use super::codec::{Stored, owner_key};
use super::fs::sync_dir;
use super::inner::Inner;
use super::scan::{SWEEP_LOCK_WAIT, lock_held};
use super::stop;
use crate::error::{Error, Result};
use crate::session::{Owner, SessionId, now_millis};
use crate::store::OwnedSession;

/// The directory holding the owner index: one subdirectory per owner, one empty marker
/// file per session in it.
pub(super) const OWNERS_DIR: &str = ".owners";
/// How many rotations of one session `destroy_owner` follows from a listed id.
const FOLLOWED_ROTATIONS: usize = 16;
/// How often creating a marker is retried when its owner's directory vanishes in between
/// (another operation removed it as empty).
const MARKER_ATTEMPTS: usize = 16;

impl Inner {
    /// `dir/.owners/<key>`: the index directory of the owner whose key is `key`.
    fn owner_dir(&self, key: &str) -> PathBuf {
        self.owners_dir.join(key)
    }

    /// Makes `owner`'s marker of `id` (an empty file) if it is missing: one `open` that fails
    /// when it exists. A missing directory is made (and made again if another operation
    /// removes it as empty in between). In durable mode a new marker, and a new directory,
    /// is `fsync`ed into its directory before the session file is written, so a crash never
    /// keeps a session its owner's index lacks. The caller holds the id's lock.
    pub(super) fn add_marker(&self, op: &'static str, id: &SessionId, owner: &Owner) -> Result<()> {
        let io_err = |err: io::Error| Error::backend(op, Some(id), err);
        let dir = self.owner_dir(&owner_key(owner));
        let path = dir.join(id.as_str());
        for _ in 0..MARKER_ATTEMPTS {
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&path) {
                Ok(_) => {
                    if self.durable {
                        sync_dir(&dir).map_err(io_err)?;
                    }
                    return Ok(());
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    let mut builder = DirBuilder::new();
                    builder.recursive(true);
                    #[cfg(unix)]
                    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                    builder.create(&dir).map_err(io_err)?;
                    if self.durable {
                        sync_dir(&self.owners_dir).map_err(io_err)?;
                        sync_dir(&self.dir).map_err(io_err)?;
                    }
                }
                Err(err) => return Err(io_err(err)),
            }
        }
        Err(io_err(io::Error::other(
            "the owner's index directory kept vanishing while its marker was made",
        )))
    }

    /// Removes `owner`'s marker of `id`, and the owner's directory if that was its last
    /// marker. Best effort: a marker left behind is stale, which the index allows (it is
    /// removed when a listing finds it dead). The caller holds the id's lock and knows the
    /// marker is dead: the session is gone, expired or someone else's.
    pub(super) fn remove_marker(&self, owner: &Owner, id: &SessionId) {
        self.remove_marker_of(&owner_key(owner), id);
    }

    /// [`remove_marker`](Inner::remove_marker) by the owner's key.
    fn remove_marker_of(&self, key: &str, id: &SessionId) {
        let dir = self.owner_dir(key);
        if fs::remove_file(dir.join(id.as_str())).is_ok() {
            // Fails (and is meant to) while the directory holds other markers.
            let _ = fs::remove_dir(&dir);
        }
    }

    /// The index part of `clear`: every marker whose session is not a live session of its
    /// owner (after the scan, all but those written meanwhile and those of unreadable
    /// files) is removed under its id's lock, then the emptied directories.
    pub(super) fn clear_index(&self) -> Result<()> {
        const OP: &str = "clear";
        let owners = match fs::read_dir(&self.owners_dir) {
            Ok(owners) => owners,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(Error::backend(OP, None, err)),
        };
        for entry in owners {
            stop::check(OP, None)?;
            let entry = entry.map_err(|err| Error::backend(OP, None, err))?;
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(key) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            for id in self.marked(OP, &key)? {
                // A marker whose session's locks are held stays; a stale marker is harmless.
                if let Some(_locks) = self.lock_blocking(OP, &id, SWEEP_LOCK_WAIT)? {
                    self.reclaim(OP, &key, &id)?;
                }
            }
            let _ = fs::remove_dir(self.owner_dir(&key));
        }
        // Gone too once empty; a writer makes it again when it needs it.
        let _ = fs::remove_dir(&self.owners_dir);
        Ok(())
    }

    /// The ids marked in the index directory of the owner whose key is `key`: empty if it
    /// has none. Names that are not session ids are skipped.
    fn marked(&self, op: &'static str, key: &str) -> Result<Vec<SessionId>> {
        let entries = match fs::read_dir(self.owner_dir(key)) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(Error::backend(op, None, err)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| Error::backend(op, None, err))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| SessionId::new(name).ok())
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Removes the marker of `id` under the owner whose key is `key` if it is provably dead:
    /// no session file, an expired one, or one of another owner (or none). A file that
    /// cannot be read keeps its marker. Returns the session if it is a live one of that
    /// owner. The caller holds the id's lock, so no write of `id` can be in between.
    fn reclaim(&self, op: &'static str, key: &str, id: &SessionId) -> Result<Option<Stored>> {
        match self.load(op, id)? {
            Some(Err(_)) => Ok(None),
            Some(Ok(stored)) if stored.is_live_of(key, now_millis()) => Ok(Some(stored)),
            _ => {
                self.remove_marker_of(key, id);
                Ok(None)
            }
        }
    }

    /// The live sessions of `owner`, read through its index directory. A marker whose
    /// session is absent, expired or someone else's is removed (under the id's lock, after
    /// checking again).
    pub(super) fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        const OP: &str = "sessions_of";
        let key = owner_key(owner);
        let ids = self.marked(OP, &key)?;
        let mut sessions = Vec::with_capacity(ids.len());
        for id in ids {
            stop::check(OP, None)?;
            let stored = match self.load(OP, &id)? {
                Some(Ok(stored)) if stored.is_live_of(&key, now_millis()) => stored,
                // Unreadable: listed as such (its marker stays), so that it can be seen and
                // ended.
                Some(Err(err)) => {
                    sessions.push(OwnedSession::undecodable(id, 0, 0, err));
                    continue;
                }
                _ => {
                    // Its locks held by a write: that write left it live for this owner or
                    // not; not listed either way is what a read just before it would say.
                    let Some(_locks) = self.lock_blocking(OP, &id, SWEEP_LOCK_WAIT)? else {
                        continue;
                    };
                    match self.reclaim(OP, &key, &id)? {
                        // Rewritten for this owner since the read.
                        Some(stored) => stored,
                        None => continue,
                    }
                }
            };
            // A rotated id is not a session: not listed (its marker stays, for
            // `destroy_owner`).
            if stored.moved_to.is_some() {
                continue;
            }
            sessions.push(OwnedSession::new(
                id,
                stored.expires_at,
                stored.version,
                with_data.then_some(stored.data),
            ));
        }
        Ok(sessions)
    }

    /// Destroys the live sessions of `owner` but `except`, each under its id's lock after
    /// checking that it is still live and `owner`'s; dead markers go on the way.
    pub(super) fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        const OP: &str = "destroy_owner";
        let key = owner_key(owner);
        let mut destroyed = 0;
        let mut held = None;
        for id in self.marked(OP, &key)? {
            stop::check(OP, None)?;
            // A rotated id's session is followed to the id it moved to (and on, if it moved
            // again), each under its own lock, so that a rotation made after the listing
            // does not let the session escape under an id the listing does not have.
            let mut next = Some(id);
            for _ in 0..FOLLOWED_ROTATIONS {
                let Some(id) = next.take() else { break };
                stop::check(OP, None)?;
                if except == Some(&id) {
                    break;
                }
                // A session whose locks another holder keeps for an operation timeout does
                // not keep the others alive: they are ended, then this fails with that
                // timeout.
                let Some(_locks) = self.lock_blocking(OP, &id, self.operation_timeout)? else {
                    held.get_or_insert_with(|| lock_held(OP, &id));
                    break;
                };
                let Some(stored) = self.reclaim(OP, &key, &id)? else {
                    break;
                };
                if self.remove_owned(OP, &id, Some(owner))? {
                    match stored.moved_to {
                        // A rotated id is removed too, but not counted: it is not a session.
                        Some(target) => next = Some(target),
                        None => destroyed += 1,
                    }
                }
            }
        }
        held.map_or(Ok(destroyed), Err)
    }
}
