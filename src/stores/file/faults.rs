//! Fault injection for the unit tests: make the next writes or removals fail.
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(super) struct Faults {
    pub(super) failing_writes: AtomicU64,
    pub(super) failing_removes: AtomicU64,
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
        take(&self.failing_writes)
    }
    pub(super) fn check_remove(&self) -> io::Result<()> {
        take(&self.failing_removes)
    }
}
