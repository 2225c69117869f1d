//! The crate's deadlines (`session_stores::deadline::within`) across a `fork()`: the timer
//! thread that runs them is the parent's, and a child has none of its parent's threads.
#![cfg(unix)]

use std::time::Duration;

use session_stores::ErrorKind;
use session_stores::deadline::within;

use crate::support;

/// A deadline on a runtime without timers: whether it fires (as `Timeout`) within 50 ms.
fn deadline_fires() -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let result = runtime.block_on(within(
        Duration::from_millis(50),
        "get",
        None,
        std::future::pending::<session_stores::Result<()>>(),
    ));
    matches!(result, Err(ref err) if err.kind() == ErrorKind::Timeout)
}

/// After `fork()`, deadlines still hold in the child: it starts a timer thread of its own.
/// Before, the child kept its parent's timer handle, whose thread it does not have, and
/// every deadline in it was silently off (here: the child hung until its watchdog).
#[test]
fn deadlines_hold_in_a_forked_child() {
    support::in_own_process("deadline::deadlines_hold_in_a_forked_child", || {
        // The parent's timer thread starts here.
        assert!(deadline_fires(), "a deadline in the parent");
        // SAFETY: the child only starts threads, builds a runtime and exits with `_exit`,
        // never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_secs(10));
                // SAFETY: ends the child process, nothing else.
                unsafe { libc::_exit(3) }
            });
            let code = if deadline_fires() { 0 } else { 4 };
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
        let mut status = 0;
        // SAFETY: waits for the child this process just forked.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child's deadline did not fire (exit status {}; 3: hung until the watchdog)",
            libc::WEXITSTATUS(status)
        );
    });
}
