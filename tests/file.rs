//! `FileStore`-specific behaviour: the write-skip cache, sharing a directory between stores
//! and processes, permissions, hostile ids, corrupt files, expiry and a SIGKILL crash test.
//!
//! Some tests re-run this test binary as a child process (see [`child_process_entry`]).
#![cfg(feature = "file")]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use session_stores::{
    ErrorKind, FRESH_VERSION_SPAN, FileStore, MAX_VERSION, Session, SessionId, SessionStore,
};

const HOUR: Duration = Duration::from_secs(3600);

fn session(data: Value) -> Session {
    let mut session = Session::new(HOUR);
    if let Value::Object(map) = data {
        session.replace_data(map);
    }
    session
}

fn id(text: &str) -> SessionId {
    SessionId::new(text).unwrap()
}

/// Length, mtime and inode of a file: what changes when it is rewritten.
fn stamp(path: &Path) -> (u64, SystemTime, u64) {
    let meta = fs::metadata(path).unwrap();
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let ino = 0;
    (meta.len(), meta.modified().unwrap(), ino)
}

fn on_disk(store: &FileStore, id: &SessionId) -> Session {
    serde_json::from_slice(&fs::read(store.path_of(id)).unwrap()).unwrap()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// The write-skip cache

#[tokio::test]
async fn an_unchanged_save_skips_the_write_and_keeps_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    let s = session(json!({"user": "ada", "roles": ["admin"]}));

    let v0 = store.set(&id, &s).await.unwrap();
    assert_eq!((store.writes(), store.skipped_writes()), (1, 0));
    let before = stamp(&store.path_of(&id));

    for _ in 0..3 {
        assert_eq!(store.set(&id, &s).await.unwrap(), v0);
    }
    assert_eq!((store.writes(), store.skipped_writes()), (1, 3));
    assert_eq!(
        stamp(&store.path_of(&id)),
        before,
        "the file was not rewritten"
    );
    assert_eq!(store.get(&id).await.unwrap().unwrap().version(), v0);

    // A changed expiry is a change.
    let mut later = s.clone();
    later.set_expires_at_millis(s.expires_at_millis() + 1);
    assert_eq!(store.set(&id, &later).await.unwrap(), v0 + 1);
    assert_eq!(store.writes(), 2);
    assert_eq!(
        on_disk(&store, &id).expires_at_millis(),
        later.expires_at_millis()
    );
}

/// A huge write-skip cache capacity reserves nothing up front and still works (it used to
/// panic: "Hash table capacity overflow").
#[tokio::test]
async fn a_huge_cache_capacity_works() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::builder(tmp.path())
        .cache_capacity(usize::MAX)
        .open()
        .await
        .unwrap();
    let id = SessionId::generate();
    let s = session(json!({"user": "ada"}));
    let v = store.set(&id, &s).await.unwrap();
    assert_eq!(store.set(&id, &s).await.unwrap(), v);
    assert_eq!((store.writes(), store.skipped_writes()), (1, 1));
}

#[tokio::test]
async fn a_nested_change_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    let mut s = session(json!({"profile": {"prefs": {"theme": "dark", "tags": [1, 2]}}}));
    let v0 = store.set(&id, &s).await.unwrap();

    // Change a value deep inside the object the caller still holds.
    s.data_mut()["profile"]["prefs"]["theme"] = json!("light");
    assert_eq!(store.set(&id, &s).await.unwrap(), v0 + 1);
    assert_eq!(
        on_disk(&store, &id).data()["profile"]["prefs"]["theme"],
        "light"
    );
    if let Some(tags) = s.data_mut()["profile"]["prefs"]["tags"].as_array_mut() {
        tags.push(json!(3));
    }
    assert_eq!(store.set(&id, &s).await.unwrap(), v0 + 2);
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.data(), s.data());
    assert_eq!(got.version(), v0 + 2);
    assert_eq!((store.writes(), store.skipped_writes()), (3, 0));
}

#[tokio::test]
async fn touch_to_the_same_expiry_skips_and_a_new_expiry_keeps_data_and_version() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    let s = session(json!({"n": 1}));
    let v0 = store.set(&id, &s).await.unwrap();
    let before = stamp(&store.path_of(&id));

    assert!(store.touch(&id, s.expires_at()).await.unwrap());
    assert_eq!((store.writes(), store.skipped_writes()), (1, 1));
    assert_eq!(stamp(&store.path_of(&id)), before);

    let later = SystemTime::now() + 2 * HOUR;
    assert!(store.touch(&id, later).await.unwrap());
    assert_eq!(store.writes(), 2);
    let got = on_disk(&store, &id);
    assert_eq!(got.data(), s.data());
    assert_eq!(got.version(), v0);
    assert_eq!(got.expires_at_millis(), session_stores::to_millis(later));
    // The touch's write is in the cache: an unchanged save at the new expiry skips.
    assert_eq!(store.set(&id, &got).await.unwrap(), v0);
    assert_eq!(store.skipped_writes(), 2);
}

#[tokio::test]
async fn an_expired_session_is_never_saved_by_a_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    let mut s = session(json!({"n": 1}));
    s.set_expires_at_millis(session_stores::now_millis() + 150);
    store.set(&id, &s).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The cached entry describes an expired session: the save is a fresh write, and a
    // past expiry deletes.
    assert_eq!(store.set(&id, &s).await.unwrap(), 0);
    assert!(!store.path_of(&id).exists());
    assert_eq!(store.skipped_writes(), 0);
}

// ---------------------------------------------------------------------------------------
// Sharing a directory

#[tokio::test]
async fn two_stores_on_one_directory_never_serve_or_keep_stale_data() {
    let tmp = tempfile::tempdir().unwrap();
    let a = FileStore::new(tmp.path()).await.unwrap();
    let b = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    // Same length, same expiry: only the inode tells the files apart.
    let mut s1 = session(json!({"v": "aaaa"}));
    let mut s2 = session(json!({"v": "bbbb"}));
    s2.set_expires_at_millis(s1.expires_at_millis());

    let v0 = a.set(&id, &s1).await.unwrap();
    assert_eq!(b.set(&id, &s2).await.unwrap(), v0 + 1, "b read a's version");
    assert_eq!(a.get(&id).await.unwrap().unwrap().data(), s2.data());

    // a's cache says "s1 at version v0", but the file is b's: no skip, and the version
    // continues from b's.
    assert_eq!(a.set(&id, &s1).await.unwrap(), v0 + 2);
    assert_eq!(a.skipped_writes(), 0);
    let got = b.get(&id).await.unwrap().unwrap();
    assert_eq!((got.data(), got.version()), (s1.data(), v0 + 2));

    // b destroys; a's save writes a new session (a new incarnation, at a fresh version)
    // rather than trusting its cache.
    b.destroy(&id).await.unwrap();
    let v1 = a.set(&id, &s1).await.unwrap();
    assert_ne!(
        v1,
        v0 + 2,
        "a skipped the write or continued the old versions"
    );
    assert_eq!(a.skipped_writes(), 0);
    assert_eq!(b.get(&id).await.unwrap().unwrap().version(), v1);

    // b writes a new file; a's next write must read b's version, not its own cached one.
    s1.insert("v", "cccc").unwrap();
    assert_eq!(b.set(&id, &s1).await.unwrap(), v1 + 1);
    assert_eq!(a.set(&id, &s1).await.unwrap(), v1 + 2);
    assert_eq!(b.set_if_version(&id, &s1, v1 + 2).await.unwrap(), v1 + 3);
    assert!(
        a.set_if_version(&id, &s1, v1 + 2)
            .await
            .unwrap_err()
            .is_conflict()
    );
    assert_eq!(a.get(&id).await.unwrap().unwrap().version(), v1 + 3);
}

/// Overwrites the first `from` in the file at `path` with `to` (of the same length) in
/// place, without truncating, and puts its mtime back: the file keeps its length, mtime and
/// inode, so no metadata tells the new content from the old.
fn rewrite_in_place(path: &Path, from: &str, to: &str) {
    use std::io::Write;
    assert_eq!(from.len(), to.len());
    let before = stamp(path);
    let old = fs::read(path).unwrap();
    let text = String::from_utf8(old).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    let new = text.replacen(from, to, 1);
    let mut file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all(new.as_bytes()).unwrap();
    file.set_modified(before.1).unwrap();
    drop(file);
    assert_eq!(fs::read(path).unwrap(), new.as_bytes());
    assert_eq!(stamp(path), before, "length, mtime and inode are unchanged");
}

/// A file's length, mtime and inode do not prove that it still holds what this store wrote:
/// Linux hands a freed inode number to the next new file at once, and an mtime has tick
/// granularity, so another writer's file can carry exactly the old stamp. The worst case is
/// made here by rewriting the file in place and restoring its mtime: the cache must not be
/// trusted for the skip, nor for the version.
#[tokio::test]
async fn a_file_changed_behind_an_unchanged_stamp_is_never_taken_for_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let a = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    let s1 = session(json!({"v": "aaaa"}));
    let v0 = a.set(&id, &s1).await.unwrap();
    let path = a.path_of(&id);

    // Other data, same length, same version.
    rewrite_in_place(&path, "aaaa", "bbbb");
    assert_eq!(a.set(&id, &s1).await.unwrap(), v0 + 1, "not skipped");
    assert_eq!((a.writes(), a.skipped_writes()), (2, 0));
    let got = a.get(&id).await.unwrap().unwrap();
    assert_eq!((got.data(), got.version()), (s1.data(), v0 + 1));
    // The file is this store's again: an identical save skips.
    assert_eq!(a.set(&id, &s1).await.unwrap(), v0 + 1);
    assert_eq!((a.writes(), a.skipped_writes()), (2, 1));

    // Same data, another version of the same length (its last digit changed): the version
    // is the file's, not the cached one.
    let cached = v0 + 1;
    let other = cached - cached % 10 + (cached % 10 + 5) % 10;
    rewrite_in_place(
        &path,
        &format!("\"version\": {cached}"),
        &format!("\"version\": {other}"),
    );
    assert!(
        a.set_if_version(&id, &s1, cached)
            .await
            .unwrap_err()
            .is_conflict()
    );
    assert_eq!(a.set(&id, &s1).await.unwrap(), other + 1);
    assert_eq!((a.writes(), a.skipped_writes()), (3, 1));
    assert_eq!(a.get(&id).await.unwrap().unwrap().version(), other + 1);
}

/// The race the previous test stands for: store A writes, and within one mtime tick store B
/// destroys the session and writes another of the same length, whose new file may get the
/// inode A's file just freed. A's save of its old data must then be written, not skipped.
#[tokio::test]
async fn a_save_after_another_store_destroyed_and_rewrote_the_session_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let a = FileStore::new(tmp.path()).await.unwrap();
    let b = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    let s1 = session(json!({"v": "a".repeat(20)}));
    let with_v = |v: String| {
        let mut s = session(json!({ "v": v }));
        s.set_expires_at_millis(s1.expires_at_millis());
        s
    };

    let v0 = a.set(&id, &s1).await.unwrap();
    let path = a.path_of(&id);
    let (len, mtime, _) = stamp(&path);
    b.destroy(&id).await.unwrap();
    let v1 = b.set(&id, &with_v("c".into())).await.unwrap();
    assert_ne!(v1, v0 + 1, "absent after the destroy: a new incarnation");
    // Versions are random, so their widths differ: B's next write pads its data to bring
    // the file to exactly the length of A's.
    let width = |v: u64| v.to_string().len();
    let s2 = with_v("b".repeat(20 + width(v0) - width(v1 + 1)));
    assert_eq!(b.set(&id, &s2).await.unwrap(), v1 + 1);
    // Put A's mtime back, as if the writes fell in one tick.
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    assert_eq!(stamp(&path).0, len);

    // set = the previous live version (B's) + 1.
    assert_eq!(a.set(&id, &s1).await.unwrap(), v1 + 2);
    assert_eq!((a.writes(), a.skipped_writes()), (2, 0));
    for store in [&a, &b] {
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!((got.data(), got.version()), (s1.data(), v1 + 2));
    }
}

/// Compare-and-set increments on one session through two stores (two caches, two sets of
/// in-process locks): only the `flock` keeps them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_in_one_process_lose_no_update() {
    let tmp = tempfile::tempdir().unwrap();
    let stores = [
        Arc::new(FileStore::new(tmp.path()).await.unwrap()),
        Arc::new(FileStore::new(tmp.path()).await.unwrap()),
    ];
    let counter = SessionId::generate();
    let v0 = stores[0]
        .set(&counter, &session(json!({"n": 0})))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let store = stores[t % 2].clone();
            let counter = counter.clone();
            tokio::spawn(async move { increment(&*store, &counter, 25).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let got = stores[1].get(&counter).await.unwrap().unwrap();
    assert_eq!(got.get::<u64>("n").unwrap(), Some(100));
    assert_eq!(got.version(), v0 + 100);

    // Concurrent creates through both stores: exactly one winner.
    let fresh = SessionId::generate();
    let creates: Vec<_> = (0..8)
        .map(|t| {
            let store = stores[t % 2].clone();
            let fresh = fresh.clone();
            tokio::spawn(async move {
                store
                    .create(&fresh, &session(json!({"t": t})))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in creates {
        winners += u32::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
}

async fn increment(store: &dyn SessionStore, id: &SessionId, times: u64) {
    for _ in 0..times {
        loop {
            let mut s = store.get(id).await.unwrap().expect("the counter exists");
            let n = s.get::<u64>("n").unwrap().unwrap_or(0);
            s.insert("n", n + 1).unwrap();
            tokio::task::yield_now().await;
            match store.set_if_version(id, &s, s.version()).await {
                Ok(_) => break,
                Err(err) if err.is_conflict() => continue,
                Err(err) => panic!("set_if_version failed: {err}"),
            }
        }
    }
}

const CHILD_MODE: &str = "SESSION_STORES_FILE_CHILD";
const CHILD_DIR: &str = "SESSION_STORES_FILE_CHILD_DIR";

/// Not a test on its own: the body of the child processes that other tests start by
/// re-running this test binary with [`CHILD_MODE`] set. Without it, it does nothing.
#[test]
fn child_process_entry() {
    let (Ok(mode), Ok(dir)) = (std::env::var(CHILD_MODE), std::env::var(CHILD_DIR)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = FileStore::new(&dir).await.unwrap();
        match mode.as_str() {
            "increment" => increment(&store, &id("counter"), 100).await,
            "crash-writer" => crash_writer(&store).await,
            "hold-locks" => hold_locks(&dir),
            other => panic!("unknown child mode {other}"),
        }
    });
}

/// Locks every stripe's lock file, says so on stdout, and sleeps until it is killed: a
/// stopped or hung peer process.
fn hold_locks(dir: &str) {
    let held = lock_all(Path::new(dir));
    println!("locked {}", held.len());
    std::thread::sleep(Duration::from_secs(60));
}

/// Opens (creating if needed) and locks every stripe's lock file under `dir`.
fn lock_all(dir: &Path) -> Vec<fs::File> {
    let locks = dir.join(".locks");
    fs::create_dir_all(&locks).unwrap();
    (0..128)
        .map(|i| {
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(locks.join(format!("{i:03}.lock")))
                .unwrap();
            file.lock().unwrap();
            file
        })
        .collect()
}

/// Starts a child process holding every lock file of `dir`, once it has them all.
fn lock_holder(dir: &Path) -> std::process::Child {
    let mut holder = child("hold-locks", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    while !line.contains("locked ") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the lock holder died"
        );
    }
    holder
}

/// A peer process that holds the lock and hangs makes operations fail with a transient
/// `Timeout` after the operation timeout, not hang forever.
#[tokio::test]
async fn a_hung_peer_holding_the_lock_gives_a_timeout_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::builder(tmp.path())
        .operation_timeout(Duration::from_millis(400))
        .open()
        .await
        .unwrap();
    let mut holder = lock_holder(tmp.path());
    let id = SessionId::generate();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), store.set(&id, &session(json!({}))))
        .await
        .expect("set hung on a lock held by another process");
    let waited = started.elapsed();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.is_transient());
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(3),
        "waited {waited:?} for a 400 ms operation timeout"
    );
    // Once the peer is gone, the same operation goes through.
    store.set(&id, &session(json!({}))).await.unwrap();
}

/// A lock file deleted and recreated while a writer waits (a tmp cleaner) must not let the
/// waiter proceed on the old file while another process holds the new one.
#[tokio::test]
async fn a_replaced_lock_file_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let mut old_holder = lock_holder(tmp.path());
    let id = SessionId::generate();
    let waiter = {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move { store.set(&id, &session(json!({"from": "waiter"}))).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A cleaner removes the lock files and another process makes new ones and takes them:
    // each path atomically names a new, locked file.
    let locks = tmp.path().join(".locks");
    let new_holder: Vec<fs::File> = (0..128)
        .map(|i| {
            let fresh = locks.join(format!("{i:03}.lock.new"));
            let file = fs::File::create(&fresh).unwrap();
            file.lock().unwrap();
            fs::rename(&fresh, locks.join(format!("{i:03}.lock"))).unwrap();
            file
        })
        .collect();
    // The old holder goes away: its (deleted) lock files are free now.
    old_holder.kill().unwrap();
    old_holder.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter wrote under a deleted lock file while another process held the current one"
    );
    drop(new_holder);
    waiter.await.unwrap().unwrap();
    assert!(store.get(&id).await.unwrap().is_some());
}

/// A zero-length session file (what a power loss can leave of a write without `durable`) reads
/// as absent, not as a permanent decode error for that user, and the next write replaces it.
#[tokio::test]
async fn a_zero_length_file_is_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    fs::write(store.path_of(&id), b"").unwrap();
    assert!(store.get(&id).await.unwrap().is_none());
    assert_eq!(store.len().await.unwrap(), 0);
    assert!(!store.touch(&id, SystemTime::now() + HOUR).await.unwrap());
    match store.set_if_version(&id, &session(json!({})), 3).await {
        Err(err) if err.is_conflict() => {}
        other => panic!("set_if_version(3) over an empty file gave {other:?}"),
    }
    assert!(store.create(&id, &session(json!({"n": 1}))).await.unwrap());
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.get::<u64>("n").unwrap(), Some(1));
    let other = SessionId::generate();
    fs::write(store.path_of(&other), b"").unwrap();
    assert!(store.set(&other, &session(json!({}))).await.unwrap() > 0);
}

/// Writes sessions of varying sizes as fast as it can, reporting progress on stdout, until
/// it is killed (or after a million writes).
async fn crash_writer(store: &FileStore) {
    for i in 0u64..1_000_000 {
        let slot = id(&format!("crash-{:02}", i % 16));
        let fill = char::from(b'a' + (i % 26) as u8);
        let payload: String =
            std::iter::repeat_n(fill, 100 + (i as usize * 977) % 20_000).collect();
        let s = session(json!({"i": i, "payload": payload, "check": payload.len()}));
        if i % 5 == 4 {
            store
                .touch(&slot, SystemTime::now() + 2 * HOUR)
                .await
                .unwrap();
        } else {
            store.set(&slot, &s).await.unwrap();
        }
        if i % 100 == 0 {
            println!("progress {i}");
        }
    }
}

fn child(mode: &str, dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir);
    command
}

/// Two processes doing compare-and-set increments on one session: none is lost.
#[tokio::test]
async fn two_processes_lose_no_update() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let v0 = store
        .set(&id("counter"), &session(json!({"n": 0})))
        .await
        .unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            child("increment", tmp.path())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a child failed: {output:?}");
    }
    let got = store.get(&id("counter")).await.unwrap().unwrap();
    assert_eq!(got.get::<u64>("n").unwrap(), Some(200));
    assert_eq!(got.version(), v0 + 200);
}

/// A writer killed with SIGKILL in the middle of thousands of writes leaves only whole
/// files: every session file parses, and the store works on.
#[tokio::test]
async fn a_killed_writer_leaves_no_torn_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let mut writer = child("crash-writer", &dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = writer.stdout.take().unwrap();
    let mut reached = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("progress ") {
            reached = n.parse().unwrap();
            if reached >= 3000 {
                break;
            }
        }
    }
    assert!(reached >= 3000, "the writer stopped early, at {reached}");
    writer.kill().unwrap(); // SIGKILL on Unix
    let status = writer.wait().unwrap();
    assert!(!status.success(), "the writer was killed, not finished");

    let store = FileStore::new(&dir).await.unwrap();
    let mut sessions = 0;
    for name in names(&dir) {
        let path = dir.join(&name);
        if let Some(slot) = name.strip_suffix(".json") {
            let bytes = fs::read(&path).unwrap();
            let s: Session = serde_json::from_slice(&bytes)
                .unwrap_or_else(|err| panic!("{name} is torn ({} bytes): {err}", bytes.len()));
            let payload = s.get::<String>("payload").unwrap().unwrap();
            assert_eq!(s.get::<usize>("check").unwrap(), Some(payload.len()));
            let got = store.get(&id(slot)).await.unwrap().unwrap();
            assert_eq!(got.data(), s.data());
            sessions += 1;
        } else {
            // At most the write in flight was left behind, as a temporary file.
            assert!(
                name == ".locks" || (name.starts_with(".tmp-") && name.ends_with(".partial")),
                "unexpected {name}"
            );
        }
    }
    assert_eq!(sessions, 16);
    assert_eq!(store.len().await.unwrap(), 16);
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    // The store carries on where the writer stopped.
    let slot = id("crash-00");
    let version = store.get(&slot).await.unwrap().unwrap().version();
    assert_eq!(
        store.set(&slot, &session(json!({}))).await.unwrap(),
        version + 1
    );
}

// ---------------------------------------------------------------------------------------
// Layout, permissions and ids

#[cfg(unix)]
#[tokio::test]
async fn directory_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/sessions");
    let store = FileStore::new(&dir).await.unwrap();
    assert_eq!(mode(&dir), 0o700);
    let id = SessionId::generate();
    store
        .set(&id, &session(json!({"secret": 1})))
        .await
        .unwrap();
    assert_eq!(mode(&store.path_of(&id)), 0o600);
    store
        .touch(&id, SystemTime::now() + 2 * HOUR)
        .await
        .unwrap();
    assert_eq!(mode(&store.path_of(&id)), 0o600, "after a rewrite too");
    for lock in fs::read_dir(dir.join(".locks")).unwrap() {
        assert_eq!(mode(&lock.unwrap().path()), 0o600);
    }

    // An existing directory keeps its mode.
    let shared = tmp.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o750)).unwrap();
    FileStore::new(&shared).await.unwrap();
    assert_eq!(mode(&shared), 0o750);
}

#[tokio::test]
async fn opening_a_file_as_the_directory_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain");
    fs::write(&file, b"x").unwrap();
    let err = FileStore::new(&file).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
    let err = FileStore::new(file.join("below")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
}

#[tokio::test]
async fn hostile_ids_never_address_a_file_outside_the_directory() {
    for hostile in [
        "../escape",
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        ".",
        "a/b",
        "a\\b",
        "C:\\x",
        "a\0b",
        "%2e%2e%2f",
        "*",
        "",
        "a\nb",
        "é",
    ] {
        assert!(SessionId::new(hostile).is_err(), "{hostile:?} was accepted");
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let store = FileStore::new(&dir).await.unwrap();
    let long = "x".repeat(SessionId::MAX_LEN);
    let tricky = [
        "...",
        ".locks",
        ".tmp-abc.partial",
        "-rf",
        "~",
        "~root",
        "a.json",
        "=",
        "+",
        ".hidden",
        long.as_str(),
    ];
    for (n, text) in tricky.iter().enumerate() {
        store
            .set(&id(text), &session(json!({ "n": n })))
            .await
            .unwrap();
    }
    let mut want: Vec<String> = tricky.iter().map(|t| format!("{t}.json")).collect();
    want.push(".locks".to_string());
    want.sort();
    assert_eq!(
        names(&dir),
        want,
        "exactly one file per id, inside the directory"
    );
    assert_eq!(
        names(tmp.path()),
        ["sessions"],
        "nothing written outside it"
    );
    for (n, text) in tricky.iter().enumerate() {
        let got = store.get(&id(text)).await.unwrap().unwrap();
        assert_eq!(got.get::<usize>("n").unwrap(), Some(n), "{text}");
    }
    assert_eq!(store.len().await.unwrap(), tricky.len() as u64);
    store.clear().await.unwrap();
    assert_eq!(names(&dir), [".locks"]);
}

#[tokio::test]
async fn the_file_is_readable_json_with_data_expiry_and_version() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    let s = session(json!({"user": "ada", "nested": {"k": [1, "two"]}}));
    let v0 = store
        .set(&id, &session(json!({"first": true})))
        .await
        .unwrap();
    store.set(&id, &s).await.unwrap();
    let text = fs::read_to_string(store.path_of(&id)).unwrap();
    assert!(text.contains('\n'), "pretty-printed: {text}");
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value,
        json!({"data": s.data(), "expires_at": s.expires_at_millis(), "version": v0 + 1})
    );
}

// ---------------------------------------------------------------------------------------
// Bad files and expiry

#[tokio::test]
async fn corrupt_files_give_decode_errors_are_skipped_by_scans_and_repaired_by_set() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    let good = SessionId::generate();
    store
        .set(&good, &session(json!({"ok": true})))
        .await
        .unwrap();

    // (An empty file is absent, not corrupt: see `a_zero_length_file_is_absent`.)
    let corrupt: [(&str, &[u8]); 5] = [
        (
            "truncated-0123456789",
            b"{\"data\":{\"a\":1},\"expires_at\":99999999999",
        ),
        ("not-json", b"\x00\xff garbage"),
        ("foreign", b"{\"name\":\"package\",\"version\":\"1.0\"}"),
        (
            "version-zero",
            b"{\"data\":{},\"expires_at\":99999999999999,\"version\":0}",
        ),
        (
            "wrong-types",
            b"{\"data\":[],\"expires_at\":\"soon\",\"version\":1}",
        ),
    ];
    for (name, bytes) in corrupt {
        fs::write(dir.join(format!("{name}.json")), bytes).unwrap();
    }
    fs::create_dir(dir.join("a-directory.json")).unwrap();
    fs::write(dir.join("notes.txt"), b"not a session").unwrap();

    let bad_ids: Vec<SessionId> = corrupt
        .iter()
        .map(|(name, _)| id(name))
        .chain([id("a-directory")])
        .collect();
    for bad in &bad_ids {
        let err = store.get(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode, "{bad:?}: {err:?}");
        assert_eq!(err.session(), Some(&bad.hint()));
        assert!(!err.to_string().contains("truncated-0123456789"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
        let later = SystemTime::now() + HOUR;
        assert_eq!(
            store.touch(bad, later).await.unwrap_err().kind(),
            ErrorKind::Decode
        );
        assert_eq!(
            store
                .create(bad, &session(json!({})))
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Decode
        );
        assert_eq!(
            store
                .set_if_version(bad, &session(json!({})), 0)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Decode
        );
    }
    // Scans skip them and leave them where they are.
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    store.clear().await.unwrap();
    assert!(
        store.get(&good).await.unwrap().is_none(),
        "clear removed the good one"
    );
    for (name, bytes) in corrupt {
        assert_eq!(fs::read(dir.join(format!("{name}.json"))).unwrap(), bytes);
    }
    assert!(dir.join("notes.txt").exists());

    // A set repairs a bad file; the session starts again, at a fresh version.
    for bad in &bad_ids[..corrupt.len()] {
        let version = store.set(bad, &session(json!({"fixed": 1}))).await.unwrap();
        assert!((1..=FRESH_VERSION_SPAN).contains(&version), "{version}");
        assert_eq!(store.get(bad).await.unwrap().unwrap().version(), version);
    }
    // destroy removes whatever file is under the id.
    for (name, _) in corrupt {
        store.destroy(&id(name)).await.unwrap();
        assert!(!dir.join(format!("{name}.json")).exists());
    }
    assert_eq!(store.len().await.unwrap(), 0);
}

/// A file above the largest version a store assigns (only a hand-written file can be) is
/// not advanced by one: a `set` gives it a fresh version, whether the version comes from the
/// file or from the cache.
#[tokio::test]
async fn a_set_on_a_version_above_the_largest_starts_a_fresh_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    let body = hand_written(json!({"n": 1}), u64::MAX);

    fs::write(store.path_of(&id), &body).unwrap();
    assert_eq!(store.get(&id).await.unwrap().unwrap().version(), u64::MAX);
    let s = session(json!({"n": 2}));
    let fresh = store.set(&id, &s).await.unwrap();
    assert!((1..=FRESH_VERSION_SPAN).contains(&fresh), "{fresh}");
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!((got.data(), got.version()), (s.data(), fresh));

    // Through the cache: a touch writes the file at its version and records it.
    fs::write(store.path_of(&id), &body).unwrap();
    assert!(
        store
            .touch(&id, SystemTime::now() + 2 * HOUR)
            .await
            .unwrap()
    );
    assert_eq!(on_disk(&store, &id).version(), u64::MAX);
    let fresh = store.set(&id, &s).await.unwrap();
    assert!((1..=FRESH_VERSION_SPAN).contains(&fresh), "{fresh}");
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!((got.data(), got.version()), (s.data(), fresh));

    // And a compare-and-set on it succeeds, with a fresh version too.
    fs::write(store.path_of(&id), &body).unwrap();
    let fresh = store.set_if_version(&id, &s, u64::MAX).await.unwrap();
    assert!((1..=FRESH_VERSION_SPAN).contains(&fresh), "{fresh}");
    assert_eq!(store.get(&id).await.unwrap().unwrap().version(), fresh);
}

/// The file of a live session with `data` at `version`, as written by hand.
fn hand_written(data: Value, version: u64) -> String {
    let expires_at = session_stores::now_millis() + 3_600_000;
    json!({"data": data, "expires_at": expires_at, "version": version}).to_string()
}

/// A session at [`MAX_VERSION`] advances to a fresh version (at most
/// [`FRESH_VERSION_SPAN`]) on `set` and on `set_if_version(MAX_VERSION)`.
#[tokio::test]
async fn the_largest_version_advances_to_a_fresh_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    let s = session(json!({"n": 2}));

    fs::write(
        store.path_of(&id),
        hand_written(json!({"n": 1}), MAX_VERSION),
    )
    .unwrap();
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().version(),
        MAX_VERSION
    );
    let fresh = store.set(&id, &s).await.unwrap();
    assert!(
        (1..=FRESH_VERSION_SPAN).contains(&fresh),
        "set gave {fresh}"
    );
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!((got.data(), got.version()), (s.data(), fresh));

    fs::write(
        store.path_of(&id),
        hand_written(json!({"n": 1}), MAX_VERSION),
    )
    .unwrap();
    let fresh = store.set_if_version(&id, &s, MAX_VERSION).await.unwrap();
    assert!(
        (1..=FRESH_VERSION_SPAN).contains(&fresh),
        "set_if_version gave {fresh}"
    );
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!((got.data(), got.version()), (s.data(), fresh));
    assert_eq!(
        store.set(&id, &session(json!({}))).await.unwrap(),
        fresh + 1
    );
}

/// A session at version 1 (written by hand), destroyed and created again, starts a new
/// incarnation at a fresh version: neither 1 again nor 2 (each with a chance of 2^-48).
#[tokio::test]
async fn a_new_incarnation_does_not_restart_at_1() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    fs::write(store.path_of(&id), hand_written(json!({"n": 1}), 1)).unwrap();
    assert_eq!(store.get(&id).await.unwrap().unwrap().version(), 1);

    store.destroy(&id).await.unwrap();
    assert!(store.create(&id, &session(json!({"n": 2}))).await.unwrap());
    let version = store.get(&id).await.unwrap().unwrap().version();
    assert_ne!(version, 1);
    assert_ne!(version, 2);
    assert!((1..=FRESH_VERSION_SPAN).contains(&version), "{version}");
    // A compare-and-set holding the old incarnation's version fails.
    assert!(
        store
            .set_if_version(&id, &session(json!({"n": 3})), 1)
            .await
            .unwrap_err()
            .is_conflict()
    );
}

/// Runs `op`, failing the test if it takes 10 s: a hang guard, not a timing assertion. On a
/// hang, opens the FIFO at `fifo` for writing, which releases a reader blocked opening it.
async fn unblocked<T>(fifo: &Path, what: &str, op: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), op).await {
        Ok(out) => out,
        Err(_) => {
            drop(fs::OpenOptions::new().write(true).open(fifo));
            panic!("{what} blocked on a FIFO");
        }
    }
}

/// A FIFO under a session's name is not a regular file: it is a decode error for that id,
/// skipped by scans and replaced by `set`, and opening it never blocks (no writer will come).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_under_a_session_name_is_a_decode_error_and_never_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let fifo = id("a-fifo");
    let path = store.path_of(&fifo);
    let status = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(status.success());
    let is_fifo = |path: &Path| {
        use std::os::unix::fs::FileTypeExt;
        fs::symlink_metadata(path).unwrap().file_type().is_fifo()
    };

    let err = unblocked(&path, "get", store.get(&fifo)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}");
    let later = SystemTime::now() + HOUR;
    let err = unblocked(&path, "touch", store.touch(&fifo, later))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}");
    let s = session(json!({"fixed": 1}));
    let err = unblocked(&path, "create", store.create(&fifo, &s))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}");
    let err = unblocked(&path, "set_if_version", store.set_if_version(&fifo, &s, 0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}");
    assert_eq!(unblocked(&path, "len", store.len()).await.unwrap(), 0);
    assert_eq!(
        unblocked(&path, "delete_expired", store.delete_expired())
            .await
            .unwrap(),
        0
    );
    unblocked(&path, "clear", store.clear()).await.unwrap();
    assert!(is_fifo(&path), "scans leave it in place");

    let version = unblocked(&path, "set", store.set(&fifo, &s)).await.unwrap();
    assert!(!is_fifo(&path) && path.is_file(), "set replaced it");
    let got = store.get(&fifo).await.unwrap().unwrap();
    assert_eq!((got.data(), got.version()), (s.data(), version));
}

#[tokio::test]
async fn expired_files_are_never_served_and_delete_expired_removes_only_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    let now = session_stores::now_millis();
    // Files written by someone else (another process, an older run) that have expired.
    for n in 0..5 {
        let body = json!({"data": {"n": n}, "expires_at": now - 1000, "version": 3});
        fs::write(dir.join(format!("old-{n}.json")), body.to_string()).unwrap();
    }
    let live = SessionId::generate();
    store
        .set(&live, &session(json!({"live": true})))
        .await
        .unwrap();

    assert!(store.get(&id("old-0")).await.unwrap().is_none());
    assert!(
        !store
            .touch(&id("old-1"), SystemTime::now() + HOUR)
            .await
            .unwrap()
    );
    assert_eq!(store.len().await.unwrap(), 1);
    // Expired counts as absent: a set starts a new incarnation (a fresh version, not the
    // expired one's 3 + 1), a create succeeds.
    let version = store.set(&id("old-2"), &session(json!({}))).await.unwrap();
    assert_ne!(version, 4);
    assert!((1..=FRESH_VERSION_SPAN).contains(&version), "{version}");
    assert!(
        store
            .create(&id("old-3"), &session(json!({})))
            .await
            .unwrap()
    );

    assert_eq!(store.delete_expired().await.unwrap(), 3);
    for gone in ["old-0.json", "old-1.json", "old-4.json"] {
        assert!(!dir.join(gone).exists(), "{gone}");
    }
    assert!(dir.join("old-2.json").exists() && dir.join("old-3.json").exists());
    assert_eq!(store.len().await.unwrap(), 3);
    assert_eq!(store.delete_expired().await.unwrap(), 0);
}

#[tokio::test]
async fn temporary_files_are_not_sessions_and_stale_ones_are_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    let body = json!({"data": {}, "expires_at": session_stores::now_millis() - 10, "version": 1});
    let stale = dir.join(".tmp-stale1.partial");
    let fresh = dir.join(".tmp-fresh1.partial");
    fs::write(&stale, body.to_string()).unwrap();
    fs::write(&fresh, body.to_string()).unwrap();
    let file = fs::File::options().write(true).open(&stale).unwrap();
    file.set_modified(SystemTime::now() - HOUR).unwrap();
    drop(file);

    assert_eq!(store.len().await.unwrap(), 0);
    assert_eq!(
        store.delete_expired().await.unwrap(),
        0,
        "not counted as sessions"
    );
    assert!(
        !stale.exists(),
        "a temporary file untouched for an hour is a leftover"
    );
    assert!(fresh.exists(), "a recent one may be a write in progress");
    store.clear().await.unwrap();
    assert!(fresh.exists());
}
