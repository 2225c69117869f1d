//! Fault injection for the unit tests: make the next writes or removals fail, or make
//! writes slow (a loaded disk syncing the new file).
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(super) struct Faults {
    pub(super) failing_writes: AtomicU64,
    pub(super) failing_removes: AtomicU64,
    /// Milliseconds each write sleeps after writing its temporary file, before replacing
    /// the session's file.
    pub(super) write_delay_millis: AtomicU64,
    /// Milliseconds each removal sleeps first.
    pub(super) remove_delay_millis: AtomicU64,
}

fn take(counter: &AtomicU64) -> io::Result<()> {
    let took = counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if took {
        Err(io::Error::other("injected failure"))
    } else {
        Ok(())
    }
}

impl Faults {
    pub(super) fn check_write(&self) -> io::Result<()> {
        let delay = self.write_delay_millis.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        take(&self.failing_writes)
    }
    pub(super) fn check_remove(&self) -> io::Result<()> {
        let delay = self.remove_delay_millis.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        take(&self.failing_removes)
    }
}
