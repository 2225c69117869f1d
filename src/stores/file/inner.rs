//! [`Inner`], the state every clone of a [`FileStore`](super::FileStore) shares, and its
//! operations on one session: reading, the cache probe, writing, removing.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::cache::{Cache, Snapshot, Written};
use super::codec::{
    Body, HEADER_LEN, Header, Loaded, SUFFIX, Stored, TMP_PREFIX, TMP_SUFFIX, decode_loaded,
    encode, encode_body, head_of, next_header, read_file, winner_of,
};
use super::fs::sync_dir;
use crate::error::{Error, Result};
use crate::session::{
    Owner, Session, SessionId, fresh_version, kept_absolute_expiry, next_version, now_millis,
};
use crate::store::Rotation;

pub(super) struct Inner {
    pub(super) dir: PathBuf,
    pub(super) lock_dir: PathBuf,
    pub(super) owners_dir: PathBuf,
    pub(super) durable: bool,
    /// Whether expiry-only writes may rewrite a file's first line in place.
    pub(super) in_place: bool,
    pub(super) operation_timeout: Duration,
    pub(super) stripes: Box<[Arc<tokio::sync::Mutex<()>>]>,
    pub(super) cache: Mutex<Cache>,
    pub(super) writes: AtomicU64,
    pub(super) skipped: AtomicU64,
    #[cfg(test)]
    pub(super) faults: super::faults::Faults,
}

/// The state of an id, as far as a write needs to know.
enum Current {
    /// No file, or an expired one.
    Absent,
    Live {
        version: u64,
        /// Its expiry: a write that relies on it being live must land before then.
        expires_at: i64,
    },
    /// A rotated id whose grace lasts: read-only.
    Rotated,
    /// The file cannot be decoded.
    Corrupt(Error),
}

/// What a write needs to know of the file it lands over before it encodes anything: whether
/// it holds a live session (not a rotated id), a live rotated id, and the absolute expiry of
/// the live session.
#[derive(Clone, Copy, Default)]
struct Seen {
    live: bool,
    rotated: bool,
    absolute: Option<i64>,
}

impl Seen {
    fn of(probe: &Probe, now: i64) -> Seen {
        let (expires_at, moved, absolute) = match probe {
            Probe::Cached(entry) => (
                entry.expires_at,
                entry.moved_to.is_some(),
                entry.absolute_expiry,
            ),
            Probe::Read(Some(Ok(stored)), _) => (
                stored.expires_at,
                stored.moved_to.is_some(),
                stored.absolute_expiry,
            ),
            Probe::Read(..) => return Seen::default(),
        };
        if expires_at <= now {
            return Seen::default();
        }
        Seen {
            live: !moved,
            rotated: moved,
            absolute: absolute.filter(|_| !moved),
        }
    }
}

/// `expires_at`, capped by the absolute expiry if there is one.
pub(super) fn capped(expires_at: i64, absolute: Option<i64>) -> i64 {
    absolute.map_or(expires_at, |absolute| absolute.min(expires_at))
}

/// What the file of `id` holds, read under the id's lock.
enum Probe {
    /// Exactly the bytes this store last wrote there, as recorded in its cache entry: the
    /// version and expiry are known without parsing.
    Cached(Snapshot),
    /// Anything else: `None` if there is no file, `Some(Err)` if it cannot be decoded; and
    /// the file's first line, if it is that long.
    Read(Option<Result<Stored>>, Option<Box<Header>>),
}

/// How a write of a session compares with the file [`probe`](Inner::probe) found.
enum Compared {
    /// The file holds exactly this session, at this version.
    Same(u64),
    /// Only the expiry differs: the first line, as it is, is enough to rewrite.
    ExpiryOnly(Box<Header>),
    /// Anything else (or nothing known): the whole file is written.
    Rewrite,
}

/// The outcome of rewriting a file's first line in place.
enum InPlace {
    /// Rewritten: the version now stored.
    Done(u64),
    /// The file already held that expiry and version: nothing written.
    Unchanged,
    /// The session had expired (or expired before the write): nothing written.
    Expired,
    /// Not a file this can be done to (no header, or not the one expected): nothing
    /// written, the caller writes the whole file.
    Whole,
}

impl Inner {
    pub(super) fn path(&self, id: &SessionId) -> PathBuf {
        let mut name = String::with_capacity(id.as_str().len() + SUFFIX.len());
        name.push_str(id.as_str());
        name.push_str(SUFFIX);
        self.dir.join(name)
    }

    pub(super) fn cache(&self) -> MutexGuard<'_, Cache> {
        // A poisoned cache only means a thread panicked while holding it; every method leaves
        // it consistent, and an entry is only ever trusted after comparing it with the file.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the file of `id` and compares it with the cache entry: only a file holding
    /// byte for byte what the entry records is taken for this store's. No metadata is
    /// trusted for this: an inode number is reused as soon as it is freed and an mtime has
    /// tick granularity, so another writer's file can have this store's length, mtime and
    /// inode. A stale entry is dropped. The caller holds the id's lock, so only an eviction
    /// can change the entry meanwhile; the cache mutex is not held during the read.
    fn probe(&self, op: &'static str, id: &SessionId) -> Result<Probe> {
        let cached = {
            let mut cache = self.cache();
            cache
                .lru
                .as_mut()
                .and_then(|lru| lru.get(id))
                .map(|written| Snapshot {
                    content: Arc::clone(&written.content),
                    version: written.version,
                    expires_at: written.expires_at,
                    owner: written.owner.clone(),
                    absolute_expiry: written.absolute_expiry,
                    moved_to: written.moved_to.clone(),
                })
        };
        let loaded = read_file(&self.path(id)).map_err(|err| Error::backend(op, Some(id), err))?;
        if let Some(entry) = cached {
            if let Loaded::Bytes(bytes) = &loaded
                && **bytes == *entry.content
            {
                return Ok(Probe::Cached(entry));
            }
            self.cache().forget(id);
        }
        let head = match &loaded {
            Loaded::Bytes(bytes) => head_of(bytes),
            _ => None,
        };
        Ok(Probe::Read(decode_loaded(id, loaded), head))
    }

    /// The state of `id` for a write, from a [`probe`](Inner::probe), and the owner stored
    /// in its file, live or expired (`None` without a file or for one that cannot be read).
    fn current_of(probe: Probe, now: i64) -> (Current, Option<Owner>) {
        match probe {
            Probe::Cached(entry) if entry.expires_at <= now => (Current::Absent, entry.owner),
            Probe::Cached(entry) if entry.moved_to.is_some() => (Current::Rotated, entry.owner),
            Probe::Cached(entry) => (
                Current::Live {
                    version: entry.version,
                    expires_at: entry.expires_at,
                },
                entry.owner,
            ),
            Probe::Read(None, _) => (Current::Absent, None),
            Probe::Read(Some(Err(err)), _) => (Current::Corrupt(err), None),
            Probe::Read(Some(Ok(stored)), _) if stored.is_expired_at(now) => {
                (Current::Absent, stored.owner)
            }
            Probe::Read(Some(Ok(stored)), _) if stored.moved_to.is_some() => {
                (Current::Rotated, stored.owner)
            }
            Probe::Read(Some(Ok(stored)), _) => (
                Current::Live {
                    version: stored.version,
                    expires_at: stored.expires_at,
                },
                stored.owner,
            ),
        }
    }

    /// The state of `id` for a write and its stored owner. The caller holds the id's lock.
    fn current(
        &self,
        op: &'static str,
        id: &SessionId,
        now: i64,
    ) -> Result<(Current, Option<Owner>)> {
        Ok(Self::current_of(self.probe(op, id)?, now))
    }

    /// Reads and decodes the file of `id`: `None` if there is none, `Some(Err)` if it cannot
    /// be decoded, an `Err` if it cannot be read.
    pub(super) fn load(&self, op: &'static str, id: &SessionId) -> Result<Option<Result<Stored>>> {
        let loaded = read_file(&self.path(id)).map_err(|err| Error::backend(op, Some(id), err))?;
        Ok(decode_loaded(id, loaded))
    }

    /// How writing `session` would change the file, when `probe` found it holding byte for
    /// byte what this store last wrote (so the version and expiry in the cache entry are the
    /// ones in the file) and the session there is live: not at all, or only in its first
    /// line (the expiry, and with it the version).
    fn compare(
        &self,
        id: &SessionId,
        body: Body<'_>,
        expires_at: i64,
        now: i64,
        probe: &Probe,
    ) -> Result<Compared> {
        let Probe::Cached(entry) = probe else {
            return Ok(Compared::Rewrite);
        };
        if entry.expires_at <= now {
            return Ok(Compared::Rewrite);
        }
        // The owner and the absolute expiry are part of the body: the same data under
        // another owner is a change.
        let body = encode_body(id, body)?;
        if entry.content.get(HEADER_LEN..) != Some(&*body) {
            return Ok(Compared::Rewrite);
        }
        if entry.expires_at == expires_at {
            return Ok(Compared::Same(entry.version));
        }
        Ok(head_of(&entry.content).map_or(Compared::Rewrite, Compared::ExpiryOnly))
    }

    /// Whether expiry-only writes may be made in place: turned on, and on Unix (`pwrite`).
    fn writes_in_place(&self) -> bool {
        cfg!(unix) && self.in_place
    }

    /// Rewrites the first line of `id`'s file in place: `expires_at` and `version` (the
    /// stored one when `None`) in its losing slot and its plain columns, one `pwrite` of
    /// the whole line that leaves the winning slot's bytes as they were (see the codec), then
    /// an `fdatasync` when `durable`. The caller holds the id's lock. `expected`: the first
    /// line the caller saw (from the cache); any other content is
    /// [`Whole`](InPlace::Whole), as is a file without a header, for the caller
    /// to write the whole file instead. As in [`write`](Inner::write), the clock is read
    /// again just before the write, and a session that has expired by then is not
    /// rewritten.
    fn rewrite_head(
        &self,
        op: &'static str,
        id: &SessionId,
        expected: Option<&Header>,
        version: Option<u64>,
        expires_at: i64,
    ) -> Result<InPlace> {
        #[cfg(unix)]
        if self.writes_in_place() {
            use std::os::unix::fs::FileExt;
            let io_err = |err: io::Error| Error::backend(op, Some(id), err);
            let path = self.path(id);
            let Some((file, head)) = super::codec::open_header(&path).map_err(io_err)? else {
                return Ok(InPlace::Whole);
            };
            if expected.is_some_and(|expected| *expected != head) {
                return Ok(InPlace::Whole);
            }
            let Ok(Some((winner, slot))) = winner_of(&head) else {
                return Ok(InPlace::Whole);
            };
            // No `seq` after the largest (only a hand-made file holds it): a new file
            // starts again at 1.
            if slot.seq == u64::MAX {
                return Ok(InPlace::Whole);
            }
            if slot.expires_at <= now_millis() {
                return Ok(InPlace::Expired);
            }
            let version = version.unwrap_or(slot.version);
            if version == slot.version && expires_at == slot.expires_at {
                return Ok(InPlace::Unchanged);
            }
            let next = next_header(&head, (winner, slot), version, expires_at);
            #[cfg(test)]
            self.faults.check_write().map_err(io_err)?;
            if now_millis() >= slot.expires_at {
                return Ok(InPlace::Expired);
            }
            file.write_all_at(&next, 0).map_err(io_err)?;
            self.writes.fetch_add(1, Ordering::Relaxed);
            if self.durable
                && let Err(err) = file.sync_data()
            {
                self.cache().forget(id);
                return Err(io_err(err));
            }
            self.cache()
                .rewrote_head(id, &head, &next, version, expires_at);
            return Ok(InPlace::Done(version));
        }
        let _ = (op, id, expected, version, expires_at);
        Ok(InPlace::Whole)
    }

    /// An upsert, skipped when [`compare`](Inner::compare) finds it the same. The caller holds the id's
    /// lock.
    pub(super) fn set(&self, id: &SessionId, session: &Session, now: i64) -> Result<u64> {
        let probe = self.probe("set", id)?;
        let seen = Seen::of(&probe, now);
        if seen.rotated {
            return Err(Error::rotated(id));
        }
        // Over a live session, the earlier of its absolute expiry and the written one.
        let absolute =
            kept_absolute_expiry(seen.live, seen.absolute, session.absolute_expiry_millis());
        let expires_at = capped(session.expires_at_millis(), absolute);
        if expires_at <= now {
            let (_, previous) = Self::current_of(probe, now);
            self.remove_owned("set", id, previous.as_ref())?;
            return Ok(0);
        }
        let body = Body::session(session.data(), session.owner(), absolute);
        let compared = self.compare(id, body, expires_at, now, &probe)?;
        if let Compared::Same(version) = compared {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(version);
        }
        let (current, previous) = Self::current_of(probe, now);
        if let Current::Live {
            version,
            expires_at: live_until,
        } = current
        {
            let landed = self.write_or_rewrite_head(
                "set",
                id,
                body,
                expires_at,
                next_version(version),
                &compared,
                previous.as_ref(),
                Some(live_until),
            )?;
            if let Some(version) = landed {
                return Ok(version);
            }
            // The session expired while this write was being made: it starts a new
            // incarnation instead of counting on from the old one's version, with the
            // absolute expiry written.
        }
        // An absent session starts a new incarnation, and a corrupt file is repaired, at a
        // fresh version.
        let absolute = session.absolute_expiry_millis();
        self.write(
            "set",
            id,
            Body::session(session.data(), session.owner(), absolute),
            capped(session.expires_at_millis(), absolute),
            fresh_version(),
            previous.as_ref(),
            None,
        )
        .map(|landed| landed.unwrap_or(0))
    }

    /// A write of `session` at `version`: in place when only the expiry of the live session
    /// the file holds changes (`compared`), else (or when the file turns out not to allow
    /// it) the whole file. `live_until`: as in [`write`](Inner::write), the expiry of the
    /// live session the write was decided on; `None` when that session expired before the
    /// write.
    #[allow(clippy::too_many_arguments)]
    fn write_or_rewrite_head(
        &self,
        op: &'static str,
        id: &SessionId,
        body: Body<'_>,
        expires_at: i64,
        version: u64,
        compared: &Compared,
        previous: Option<&Owner>,
        live_until: Option<i64>,
    ) -> Result<Option<u64>> {
        if let Compared::ExpiryOnly(head) = compared {
            match self.rewrite_head(op, id, Some(head), Some(version), expires_at)? {
                InPlace::Done(version) => return Ok(Some(version)),
                InPlace::Expired => return Ok(None),
                // The expected first line holds another expiry, so it cannot be unchanged;
                // either way the whole file is written.
                InPlace::Unchanged | InPlace::Whole => {}
            }
        }
        self.write(op, id, body, expires_at, version, previous, live_until)
    }

    /// Atomically replaces the file of `id`, then records the write in the cache. The caller
    /// holds the id's lock. `owner` is stored with the session; `previous` is the owner of
    /// the file being replaced (live or expired), whose marker goes once the new file is in
    /// place if the owner changed.
    ///
    /// The owner's marker is made before the file is replaced, so the index never lacks a
    /// session that is on disk. A session without owner that had none costs nothing more.
    ///
    /// `live_until`: the expiry of the live session this write was decided on (a `touch`, a
    /// compare-and-set, the next version of a `set`). The clock is read again after the new
    /// content is written (and synced), just before it replaces the file: if that session
    /// has expired meanwhile, nothing is replaced and this returns `None`, so a write never
    /// brings back a session that an unlocked `get` already saw expired. Otherwise it
    /// returns the version written.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        op: &'static str,
        id: &SessionId,
        body: Body<'_>,
        expires_at: i64,
        version: u64,
        previous: Option<&Owner>,
        live_until: Option<i64>,
    ) -> Result<Option<u64>> {
        let owner = body.owner;
        let content = encode(id, body, expires_at, version)?;
        let io_err = |err: io::Error| Error::backend(op, Some(id), err);
        if let Some(owner) = owner {
            self.add_marker(op, id, owner)?;
        }
        // A write that fails leaves the session to its previous owner: a marker just made
        // for another owner is dead, and goes (best effort; a stale marker is harmless).
        let undo_marker = |err: Error| {
            if let Some(owner) = owner
                && previous != Some(owner)
            {
                self.remove_marker(owner, id);
            }
            err
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .suffix(TMP_SUFFIX)
            .tempfile_in(&self.dir)
            .map_err(io_err)
            .map_err(undo_marker)?;
        tmp.write_all(&content)
            .map_err(io_err)
            .map_err(undo_marker)?;
        if self.durable {
            tmp.as_file()
                .sync_all()
                .map_err(io_err)
                .map_err(undo_marker)?;
        }
        #[cfg(test)]
        self.faults
            .check_write()
            .map_err(io_err)
            .map_err(undo_marker)?;
        if live_until.is_some_and(|until| now_millis() >= until) {
            // Decided on a session that has expired since: the temporary file goes with
            // `tmp`, and a marker just made for another owner with it.
            let _ = undo_marker(Error::conflict(id, version));
            return Ok(None);
        }
        // On failure the temporary file is removed when `PersistError` drops it.
        tmp.persist(self.path(id))
            .map_err(|err| io_err(err.error))
            .map_err(undo_marker)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        // The session is now `owner`'s (or no one's): the previous owner's marker is dead.
        if let Some(previous) = previous
            && owner != Some(previous)
        {
            self.remove_marker(previous, id);
        }
        if self.durable
            && let Err(err) = sync_dir(&self.dir)
        {
            // The new file is in place but maybe not durable: report it, and do not rely on
            // the cache for this id.
            self.cache().forget(id);
            return Err(io_err(err));
        }
        self.cache().remember(
            id,
            Written {
                content: content.into(),
                version,
                expires_at,
                owner: owner.cloned(),
                absolute_expiry: body.absolute_expiry,
                moved_to: body.moved_to.cloned(),
            },
        );
        Ok(Some(version))
    }

    /// Removes the file of `id`, then forgets its cache entry. Returns whether there was one.
    /// The caller holds the id's lock.
    fn remove(&self, op: &'static str, id: &SessionId) -> Result<bool> {
        #[cfg(test)]
        self.faults
            .check_remove()
            .map_err(|err| Error::backend(op, Some(id), err))?;
        let removed = match fs::remove_file(self.path(id)) {
            Ok(()) => true,
            Err(err) if err.kind() == io::ErrorKind::NotFound => false,
            Err(err) => return Err(Error::backend(op, Some(id), err)),
        };
        self.cache().forget(id);
        if removed && self.durable {
            sync_dir(&self.dir).map_err(|err| Error::backend(op, Some(id), err))?;
        }
        Ok(removed)
    }

    /// Removes the session file of `id` and the marker of the owner stored in it. The owner
    /// is taken from the cache entry when there is one (no read for a session this store
    /// wrote), else from the file. Either way the file is gone afterwards, so whatever
    /// marker is removed was dead; a marker missed because another process changed the
    /// owner behind the cache stays stale, which the index allows. The caller holds the
    /// id's lock.
    pub(super) fn destroy(&self, op: &'static str, id: &SessionId) -> Result<()> {
        let cached = self
            .cache()
            .lru
            .as_mut()
            .and_then(|lru| lru.peek(id))
            .map(|written| written.owner.clone());
        let owner = match cached {
            Some(owner) => owner,
            None => match self.load(op, id)? {
                Some(Ok(stored)) => stored.owner,
                // No file, or one that cannot be read: no owner known.
                _ => None,
            },
        };
        self.remove_owned(op, id, owner.as_ref()).map(drop)
    }

    /// `destroy` of `id`, under its lock and, when `held` is given, the lock of that id too.
    /// A live rotated id ends the session it moved to as well, which needs that id's lock:
    /// if `id` is a live rotated id that moved to another id than `held`, nothing is changed
    /// and that id is returned, for the caller to call again holding its lock too.
    pub(super) fn destroy_following(
        &self,
        op: &'static str,
        id: &SessionId,
        held: Option<&SessionId>,
    ) -> Result<Option<SessionId>> {
        // Read whatever the cache says: whether `id` is a rotated id is only in the file.
        let stored = match self.load(op, id)? {
            Some(Ok(stored)) => Some(stored),
            // No file, or one that cannot be read: removed with the owner the cache knows.
            _ => None,
        };
        let moved_to = stored
            .as_ref()
            .filter(|stored| !stored.is_expired_at(now_millis()))
            .and_then(|stored| stored.moved_to.clone());
        if let Some(target) = &moved_to
            && held != Some(target)
        {
            return Ok(moved_to);
        }
        match stored {
            Some(stored) => {
                self.remove_owned(op, id, stored.owner.as_ref())?;
            }
            None => self.destroy(op, id)?,
        }
        if let Some(target) = moved_to
            && target != *id
        {
            // The session it moved to ends too (whatever that file is now: one rotated
            // again is removed, and what it moved to is left alone).
            self.destroy(op, &target)?;
        }
        Ok(None)
    }

    /// [`rotate`](crate::SessionStore::rotate), holding the locks of both ids. The new file is
    /// written first, then the old one is rewritten as a rotated id (or removed, for a
    /// grace that is already over): a crash in between leaves the old session as it was and
    /// a copy of it under `new` that no caller was told of (see the module docs). A failure
    /// to rewrite the old file removes the new one again (best effort).
    pub(super) fn rotate(&self, old: &SessionId, new: &SessionId, grace: i64) -> Result<Rotation> {
        const OP: &str = "rotate";
        let now = now_millis();
        let source = match self.load(OP, old)? {
            None => return Ok(Rotation::Absent),
            Some(Err(err)) => return Err(err),
            Some(Ok(stored)) if stored.is_expired_at(now) || stored.moved_to.is_some() => {
                return Ok(Rotation::Absent);
            }
            Some(Ok(stored)) => stored,
        };
        let previous = match self.current(OP, new, now)? {
            (Current::Live { .. } | Current::Rotated, _) => return Ok(Rotation::Taken),
            // Not a file this store can decide on: `create` refuses it alike.
            (Current::Corrupt(err), _) => return Err(err.for_session(new)),
            (Current::Absent, previous) => previous,
        };
        let version = next_version(source.version);
        let body = Body::session(&source.data, source.owner.as_ref(), source.absolute_expiry);
        // Decided on the old session being live: it lands only if it still is.
        let landed = self.write(
            OP,
            new,
            body,
            source.expires_at,
            version,
            previous.as_ref(),
            Some(source.expires_at),
        )?;
        if landed.is_none() {
            return Ok(Rotation::Absent);
        }
        let now = now_millis();
        let until = now.saturating_add(grace).min(source.expires_at);
        let marked = if until <= now {
            self.remove_owned(OP, old, source.owner.as_ref()).map(drop)
        } else {
            let rotated = Body {
                moved_to: Some(new),
                ..body
            };
            self.write(
                OP,
                old,
                rotated,
                until,
                source.version,
                source.owner.as_ref(),
                None,
            )
            .map(drop)
        };
        if let Err(err) = marked {
            // The old session stays as it was: the copy goes, so that nothing changed.
            let _ = self.remove_owned(OP, new, source.owner.as_ref());
            return Err(err);
        }
        Ok(Rotation::Moved { version })
    }

    /// Removes the session file of `id`, then `owner`'s marker of it. Returns whether there
    /// was a file. The caller holds the id's lock.
    pub(super) fn remove_owned(
        &self,
        op: &'static str,
        id: &SessionId,
        owner: Option<&Owner>,
    ) -> Result<bool> {
        let removed = self.remove(op, id)?;
        if let Some(owner) = owner {
            self.remove_marker(owner, id);
        }
        Ok(removed)
    }

    /// Reads `id` without locks. A rotated id reads as the session it holds (as it was when
    /// it was rotated) only while the session it moved to is live and not rotated itself:
    /// two unlocked reads, each of a whole file.
    pub(super) fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        let Some(stored) = self.load("get", id)? else {
            return Ok(None);
        };
        let stored = stored?;
        let now = now_millis();
        if stored.is_expired_at(now) {
            return Ok(None);
        }
        if let Some(target) = &stored.moved_to {
            // An error reading the target is about this read: it names `id`, not the target.
            let target = self
                .load("get", target)
                .map_err(|err| err.for_session(id))?;
            match target {
                Some(Ok(target)) if !target.is_expired_at(now) && target.moved_to.is_none() => {}
                // Gone, expired, rotated again, or not readable: the old id resolves to
                // nothing.
                _ => return Ok(None),
            }
        }
        Ok(Some(stored.into_session()))
    }

    pub(super) fn touch(&self, id: &SessionId, expires_at: i64) -> Result<bool> {
        let now = now_millis();
        if expires_at > now && self.writes_in_place() {
            // Only the first line changes: rewritten in place when the file has one, and is
            // known whole (this store wrote it, or it was just read and decoded). A rotated
            // id (live or not) is never touched.
            let (head, absolute) = match self.probe("touch", id)? {
                // An expired one is told by the rewrite, which reads the clock again.
                Probe::Cached(entry) if entry.moved_to.is_some() => return Ok(false),
                Probe::Cached(entry) => (head_of(&entry.content), entry.absolute_expiry),
                Probe::Read(None, _) => return Ok(false),
                Probe::Read(Some(Err(err)), _) => return Err(err),
                Probe::Read(Some(Ok(stored)), _)
                    if stored.is_expired_at(now) || stored.moved_to.is_some() =>
                {
                    return Ok(false);
                }
                // With `durable`, only a file whose rename this store made durable (its
                // cache entry is recorded after the directory's `fsync`): the rename that
                // put another writer's file in place may not be, and a power loss could
                // then take the touch with it.
                Probe::Read(..) if self.durable => (None, None),
                Probe::Read(Some(Ok(stored)), head) => {
                    // A file this store did not write: its owner's marker is made again if
                    // it went missing, as a whole-file write does.
                    if let Some(owner) = &stored.owner {
                        self.add_marker("touch", id, owner)?;
                    }
                    (head, stored.absolute_expiry)
                }
            };
            // Capped by the absolute expiry; an expiry that is then not in the future
            // removes the session, below.
            let expires_at = capped(expires_at, absolute);
            if let Some(head) = head.filter(|_| expires_at > now) {
                match self.rewrite_head("touch", id, Some(&head), None, expires_at)? {
                    InPlace::Done(_) => return Ok(true),
                    InPlace::Unchanged => {
                        self.skipped.fetch_add(1, Ordering::Relaxed);
                        return Ok(true);
                    }
                    InPlace::Expired => return Ok(false),
                    InPlace::Whole => {}
                }
            }
        }
        let stored = match self.load("touch", id)? {
            None => return Ok(false),
            Some(stored) => stored?,
        };
        if stored.is_expired_at(now) || stored.moved_to.is_some() {
            return Ok(false);
        }
        let expires_at = capped(expires_at, stored.absolute_expiry);
        if expires_at <= now {
            self.remove_owned("touch", id, stored.owner.as_ref())?;
        } else if expires_at == stored.expires_at {
            // The file was just read under the lock: it already holds exactly this.
            self.skipped.fetch_add(1, Ordering::Relaxed);
        } else {
            let landed = self.write(
                "touch",
                id,
                stored.body(),
                expires_at,
                stored.version,
                stored.owner.as_ref(),
                Some(stored.expires_at),
            )?;
            // `None`: the session expired while the new file was being made.
            return Ok(landed.is_some());
        }
        Ok(true)
    }

    pub(super) fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let now = now_millis();
        let previous = match self.current("create", id, now)? {
            // A rotated id in its grace is not absent either.
            (Current::Live { .. } | Current::Rotated, _) => return Ok(false),
            (Current::Corrupt(err), _) => return Err(err),
            (Current::Absent, previous) => previous,
        };
        // A new incarnation: the absolute expiry it carries, and its expiry capped by it.
        let absolute = session.absolute_expiry_millis();
        let expires_at = session.capped_expiry_millis();
        if expires_at <= now {
            // Stored and expired at once: nothing to keep, but drop an expired leftover.
            self.remove_owned("create", id, previous.as_ref())?;
        } else {
            self.write(
                "create",
                id,
                Body::session(session.data(), session.owner(), absolute),
                expires_at,
                fresh_version(),
                previous.as_ref(),
                None,
            )?;
        }
        Ok(true)
    }

    pub(super) fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        let now = now_millis();
        let probe = self.probe("set_if_version", id)?;
        let seen = Seen::of(&probe, now);
        if seen.rotated {
            return Err(Error::rotated(id));
        }
        let absolute =
            kept_absolute_expiry(seen.live, seen.absolute, session.absolute_expiry_millis());
        let expires_at = capped(session.expires_at_millis(), absolute);
        let body = Body::session(session.data(), session.owner(), absolute);
        // Only a write that can succeed is compared (an encoding, for a cached file).
        let compared = match &probe {
            Probe::Cached(entry) if entry.version == expected => {
                self.compare(id, body, expires_at, now, &probe)?
            }
            _ => Compared::Rewrite,
        };
        let (version, live_until, previous) = match Self::current_of(probe, now) {
            (
                Current::Live {
                    version,
                    expires_at,
                },
                previous,
            ) => (version, Some(expires_at), previous),
            (Current::Absent, previous) => (0, None, previous),
            (Current::Rotated, _) => return Err(Error::rotated(id)),
            (Current::Corrupt(err), _) => return Err(err),
        };
        if version != expected {
            return Err(Error::conflict(id, expected));
        }
        if expires_at <= now {
            self.remove_owned("set_if_version", id, previous.as_ref())?;
            return Ok(0);
        }
        // `expected + 1`, or a fresh version for an absent session (0) or one at the
        // largest version.
        // (`compared` is `Rewrite` unless the expected session is live in the cache.)
        self.write_or_rewrite_head(
            "set_if_version",
            id,
            body,
            expires_at,
            next_version(expected),
            &compared,
            previous.as_ref(),
            live_until,
        )?
        // `None`: the expected incarnation expired while the new file was being made.
        .ok_or_else(|| Error::conflict(id, expected))
    }
}
