//! The locks of an id: an in-process stripe (a tokio mutex) and a cross-process `flock` on
//! one of [`LOCK_STRIPES`] lock files, picked by a stable hash of the id.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fs::prepare_dir;
use super::inner::Inner;
use super::stop;
use crate::error::{Error, ErrorKind, Result};
use crate::session::SessionId;

/// The directory holding the lock files.
pub(super) const LOCK_DIR: &str = ".locks";
/// How many lock files (and in-process lock stripes) ids are spread over.
pub(super) const LOCK_STRIPES: usize = 128;

/// Whether `file` (open) is the file that `path` names now.
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    let now = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(held.dev() == now.dev() && held.ino() == now.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = (held, now);
        Ok(true)
    }
}

/// A stable (across processes) hash of the id, picking its lock stripe.
pub(super) fn stripe_of(id: &SessionId) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % LOCK_STRIPES as u64) as usize
}

impl Inner {
    pub(super) fn stripe(&self, index: usize) -> Arc<tokio::sync::Mutex<()>> {
        // `index` comes from `stripe_of`, always below LOCK_STRIPES; fall back to the first
        // stripe rather than panic.
        match self.stripes.get(index) {
            Some(stripe) => Arc::clone(stripe),
            None => Arc::clone(&self.stripes[0]),
        }
    }

    /// Takes the cross-process lock of stripe `index`: an exclusive `flock` on its lock file,
    /// released when the returned file is dropped.
    ///
    /// - It never waits past `deadline`: a stopped or hung process holding the lock makes
    ///   this a transient [`Error::Timeout`] instead of a hang (`try_lock` polled with a
    ///   growing pause, at most 20 ms).
    /// - A lock file deleted or replaced while locked (a tmp cleaner) would let two processes
    ///   each hold "the" lock on a different inode, so after locking it checks that the path
    ///   still names the file it locked, and starts again if not.
    pub(super) fn flock(
        &self,
        op: &'static str,
        id: &SessionId,
        index: usize,
        deadline: Instant,
    ) -> Result<File> {
        let path = self.lock_dir.join(format!("{index:03}.lock"));
        let open = || {
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options.open(&path)
        };
        let locked = poll_until(deadline, || {
            loop {
                let file = match open() {
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        // The lock directory was removed under us: make it again.
                        prepare_dir(&self.lock_dir)?;
                        open()
                    }
                    other => other,
                }
                .map_err(|err| Error::backend(op, Some(id), err))?;
                match file.try_lock() {
                    Ok(()) => {
                        if same_file(&file, &path)
                            .map_err(|err| Error::backend(op, Some(id), err))?
                        {
                            return Ok(Some(file));
                        }
                        // Locked a file that is no longer at the path: drop it and lock the new
                        // one, at once.
                    }
                    Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(std::fs::TryLockError::Error(err)) => {
                        return Err(Error::backend(op, Some(id), err));
                    }
                }
            }
        })?;
        locked.ok_or_else(|| Error::Timeout {
            operation: op,
            id: Some(id.into()),
            what: "the session's lock file (held by another process)",
            source: None,
        })
    }

    /// Takes both locks of `id` from a blocking thread (for the walks), waiting at most
    /// `wait` and never past the current job's [stop](super::stop). Returns `None` if
    /// another holder kept either lock that long (a write in progress, a stopped process),
    /// so a walk can go on with its other entries; an error if the job must stop or a lock
    /// file cannot be used.
    pub(super) fn lock_blocking(
        &self,
        op: &'static str,
        id: &SessionId,
        wait: Duration,
    ) -> Result<Option<(tokio::sync::OwnedMutexGuard<()>, File)>> {
        let stripe = stripe_of(id);
        let mut deadline = stop::deadline_after(wait);
        if let Some(stop) = stop::current() {
            deadline = deadline.min(stop.deadline());
        }
        // The in-process stripe, polled: an operation may hold it while its job waits for
        // a blocking thread that this walk occupies, so waiting without a bound could wait
        // forever.
        let Some(guard) = poll_until(deadline, || {
            stop::check(op, Some(id))?;
            Ok(self.stripe(stripe).try_lock_owned().ok())
        })?
        else {
            return Ok(None);
        };
        match self.flock(op, id, stripe, deadline) {
            Ok(file) => Ok(Some((guard, file))),
            Err(err) if err.kind() == ErrorKind::Timeout => {
                stop::check(op, Some(id))?;
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }
}

/// Calls `attempt` until it gives a value (`Some`) or an error, pausing between tries (100 µs,
/// doubling up to 20 ms) and never past `deadline`; `None` if `deadline` came first. The
/// locks are taken with `try_lock`s polled this way, so no wait for one is unbounded.
fn poll_until<T>(
    deadline: Instant,
    mut attempt: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let mut pause = Duration::from_micros(100);
    loop {
        if let Some(value) = attempt()? {
            return Ok(Some(value));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
