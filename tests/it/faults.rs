//! Fault injection for the embedded backends: writers killed with SIGKILL in a loop, a full
//! disk and a read-only directory.
//!
//! - A child process (this test binary, re-run with `FAULT_CHILD` set) writes sessions and
//!   prints an acknowledgement after each write returns. The parent kills it with SIGKILL at
//!   a varying point, five times over, and then checks that every file or row is whole and
//!   that every acknowledged write is there (the stored counter is at least the last one
//!   acknowledged for its session).
//! - Full disk and read-only directory use a small `tmpfs` mounted by the test (Linux, as
//!   root, as on the CI machine): `set` must fail with a typed error, leave the previous
//!   session intact and never panic, and the store must work again once there is room.

#![cfg(all(unix, any(feature = "file", feature = "sqlite")))]

use crate::support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use session_stores::{Session, SessionId, SessionStore};

const CHILD: &str = "FAULT_CHILD";
const CHILD_PATH: &str = "FAULT_CHILD_PATH";
const SLOTS: u64 = 8;

fn slot_id(slot: u64) -> SessionId {
    SessionId::new(format!("slot-{slot}")).unwrap()
}

fn session(seq: u64) -> Session {
    let mut s = Session::new(Duration::from_secs(3600));
    s.insert("seq", seq).unwrap();
    // Large enough that a write takes several syscalls, so a kill can land mid-write.
    s.insert("body", format!("{seq:08}").repeat(2048)).unwrap();
    s
}

fn check_whole(s: &Session) -> u64 {
    let seq = s.get::<u64>("seq").unwrap().expect("seq");
    assert_eq!(
        s.get::<String>("body").unwrap().unwrap(),
        format!("{seq:08}").repeat(2048),
        "a torn session"
    );
    seq
}

async fn open(kind: &str, path: &Path) -> Box<dyn SessionStore> {
    match kind {
        #[cfg(feature = "file")]
        "file" => Box::new(session_stores::FileStore::new(path).await.unwrap()),
        #[cfg(feature = "sqlite")]
        "sqlite" => Box::new(session_stores::SqliteStore::open(path).await.unwrap()),
        other => panic!("no store {other} in this build"),
    }
}

/// The child: writes forever (until killed), acknowledging each completed write on stdout.
#[test]
fn fault_child_entry() {
    let (Ok(kind), Ok(path)) = (std::env::var(CHILD), std::env::var(CHILD_PATH)) else {
        return; // An ordinary test run: nothing to do.
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = open(&kind, Path::new(&path)).await;
        let mut seq = 0u64;
        loop {
            seq += 1;
            let slot = seq % SLOTS;
            store.set(&slot_id(slot), &session(seq)).await.unwrap();
            println!("ack {slot} {seq}");
        }
    });
}

/// Kills a writer five times at different points, checking the store after each kill.
async fn killed_writer_loses_nothing(kind: &str, path: PathBuf) {
    let mut acked: HashMap<u64, u64> = HashMap::new();
    for round in 0..5u64 {
        let mut child = Command::new(support::this_test_binary())
            .args([
                "faults::fault_child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, kind)
            .env(CHILD_PATH, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let target = 150 + round * 97;
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("ack ") {
                let mut parts = rest.split(' ');
                let slot: u64 = parts.next().unwrap().parse().unwrap();
                let seq: u64 = parts.next().unwrap().parse().unwrap();
                // The child restarts its counter each round: keep the newest per slot.
                acked.insert(slot, seq + round * 1_000_000);
                seen += 1;
                if seen >= target {
                    break;
                }
            }
        }
        assert!(
            seen >= target,
            "{kind}: the writer stopped early ({seen} writes)"
        );
        child.kill().unwrap(); // SIGKILL
        assert!(!child.wait().unwrap().success());

        // Every session is whole, and every acknowledged write is there.
        let store = open(kind, &path).await;
        for (slot, newest) in &acked {
            let got = store
                .get(&slot_id(*slot))
                .await
                .unwrap_or_else(|err| {
                    panic!("{kind}: slot {slot} unreadable after a kill: {err:?}")
                })
                .unwrap_or_else(|| panic!("{kind}: slot {slot} lost after a kill"));
            let seq = check_whole(&got) + round * 1_000_000;
            assert!(
                seq >= *newest,
                "{kind}: slot {slot} holds write {seq}, but write {newest} was acknowledged"
            );
            // Keep the rounds comparable: the next child starts from 1 again.
            let fresh = session(0);
            store.set(&slot_id(*slot), &fresh).await.unwrap();
        }
        acked.clear();
        eprintln!("{kind}: round {round}: killed after {seen} acknowledged writes, nothing lost");
    }
}

#[cfg(feature = "file")]
#[tokio::test]
async fn file_writer_killed_in_a_loop_leaves_whole_files_and_every_acknowledged_write() {
    let _load = support::loads_the_machine().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    killed_writer_loses_nothing("file", dir.clone()).await;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".json") {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            let s: Session = serde_json::from_slice(&bytes)
                .unwrap_or_else(|err| panic!("{stem}.json is torn: {err}"));
            check_whole(&s);
        }
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_writer_killed_mid_transaction_leaves_a_clean_database() {
    let _load = support::loads_the_machine().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("sessions.db");
    killed_writer_loses_nothing("sqlite", db.clone()).await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// A small tmpfs mounted for the test, unmounted on drop.
#[cfg(feature = "file")]
struct Tmpfs {
    dir: tempfile::TempDir,
}

#[cfg(feature = "file")]
impl Tmpfs {
    /// Mounts `size` of tmpfs, or `None` (a loud skip locally, a failure in CI) when this
    /// process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status();
        if matches!(status, Ok(s) if s.success()) {
            return Some(Tmpfs { dir });
        }
        let message = "SKIPPED: cannot mount a tmpfs here (needs root on Linux)";
        assert!(!support::in_ci(), "{message}");
        eprintln!("\n*** {message} ***\n");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {mode}");
    }
}

#[cfg(feature = "file")]
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[cfg(feature = "file")]
#[tokio::test]
async fn file_store_on_a_full_disk_fails_cleanly_and_recovers() {
    let Some(fs) = Tmpfs::mount("512k") else {
        return;
    };
    let store = session_stores::FileStore::new(fs.path().join("s"))
        .await
        .unwrap();
    let keep = SessionId::new("keep").unwrap();
    store.set(&keep, &session(1)).await.unwrap();
    let mut written = Vec::new();
    let err = loop {
        let id = SessionId::generate();
        match store.set(&id, &session(2)).await {
            Ok(_) => written.push(id),
            Err(err) => break err,
        }
        assert!(written.len() < 1000, "the disk never filled");
    };
    eprintln!("full disk after {} sessions: {err}", written.len());
    let io = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(|e| e.kind());
    assert_eq!(
        io,
        Some(std::io::ErrorKind::StorageFull),
        "the source is the io::Error for ENOSPC: {err:?}"
    );
    // An update of an existing session on the full disk fails and keeps the old one.
    assert!(store.set(&keep, &session(3)).await.is_err());
    let kept = store.get(&keep).await.unwrap().unwrap();
    assert_eq!(check_whole(&kept), 1, "a failed write changed the session");
    // No partial temporary file is left behind by the failed writes.
    let leftovers = std::fs::read_dir(fs.path().join("s"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .count();
    assert_eq!(leftovers, 0, "failed writes left temporary files");
    // Make room: the store works again without being reopened.
    for id in written.iter().take(4) {
        store.destroy(id).await.unwrap();
    }
    store.set(&keep, &session(4)).await.unwrap();
    assert_eq!(check_whole(&store.get(&keep).await.unwrap().unwrap()), 4);
}

#[cfg(feature = "file")]
#[tokio::test]
async fn file_store_on_a_read_only_directory_fails_cleanly_and_recovers() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let store = session_stores::FileStore::new(fs.path().join("s"))
        .await
        .unwrap();
    let id = SessionId::new("keep").unwrap();
    store.set(&id, &session(1)).await.unwrap();
    fs.remount("ro");
    let err = store.set(&id, &session(2)).await.unwrap_err();
    eprintln!("read-only: {err}");
    assert!(
        err.to_string().contains("keep"),
        "the error names the session: {err}"
    );
    assert!(
        store
            .create(&SessionId::generate(), &session(2))
            .await
            .is_err()
    );
    assert!(store.destroy(&id).await.is_err());
    let kept = store.get(&id).await.unwrap().unwrap();
    assert_eq!(check_whole(&kept), 1, "a failed write changed the session");
    fs.remount("rw");
    store.set(&id, &session(3)).await.unwrap();
    assert_eq!(check_whole(&store.get(&id).await.unwrap().unwrap()), 3);
}
