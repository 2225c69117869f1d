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
    Error, ErrorKind, FRESH_VERSION_SPAN, FileStore, MAX_VERSION, Owner, Rotation, ScanCursor,
    Session, SessionId, SessionStore, from_millis, next_version, now_millis,
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
    // (Written as an earlier version of the store wrote files, padded to the same length.)
    let cached = v0 + 1;
    let other = cached - cached % 10 + (cached % 10 + 5) % 10;
    let text = fs::read_to_string(&path).unwrap();
    let mut other_text = serde_json::to_string_pretty(&json!({
        "data": s1.data(), "expires_at": s1.expires_at_millis(), "version": other
    }))
    .unwrap();
    assert!(other_text.len() <= text.len());
    other_text.push_str(&" ".repeat(text.len() - other_text.len()));
    rewrite_in_place(&path, &text, &other_text);
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
    // Versions are random, but the file's first line holds them in fixed-width columns:
    // B's next write, of data of the same length, makes a file of exactly A's length.
    let s2 = with_v("b".repeat(20));
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
            "crash-toucher" => crash_toucher(&store).await,
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
    let _alone = crate::support::measures_time().await;
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

/// The sessions `crash_toucher` moves.
const TOUCHED: usize = 16;

/// Writes [`TOUCHED`] sessions, then moves their expiry as fast as it can, by `touch` and
/// by a `set` of the same data with a new expiry, each expiry later than the one before:
/// on stdout, `ack <n> <expires_at> <version>` after each acknowledged one, until it is
/// killed (or after a million).
async fn crash_toucher(store: &FileStore) {
    let base = session_stores::now_millis() + 3_600_000;
    let s = session(json!({"payload": "p".repeat(2000)}));
    for n in 0..TOUCHED {
        store
            .set(&id(&format!("touched-{n:02}")), &s)
            .await
            .unwrap();
    }
    let mut out = std::io::stdout().lock();
    for i in 0i64..1_000_000 {
        let n = i as usize % TOUCHED;
        let slot = id(&format!("touched-{n:02}"));
        let expires_at = base + i;
        let at = std::time::UNIX_EPOCH + Duration::from_millis(expires_at as u64);
        let version = if i % 3 == 0 {
            let mut s = s.clone();
            s.set_expires_at_millis(expires_at);
            store.set(&slot, &s).await.unwrap()
        } else {
            assert!(store.touch(&slot, at).await.unwrap());
            0
        };
        use std::io::Write;
        writeln!(out, "ack {n} {expires_at} {version}").unwrap();
        out.flush().unwrap();
    }
}

fn child(mode: &str, dir: &Path) -> Command {
    let mut command = Command::new(crate::support::this_test_binary());
    command
        .args([
            "file::child_process_entry",
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
    let _load = crate::support::loads_the_machine().await;
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
    let _load = crate::support::loads_the_machine().await;
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

/// A writer that only moves expiries (in place, by rewriting a file's first line) killed
/// with SIGKILL, five times, at different points: every file still decodes, as a session
/// and through the store, with the expiry of the last acknowledged write or of the one in
/// flight, never an older one; a version at least the last acknowledged one; and no
/// temporary file, since none of these writes made one.
#[tokio::test]
async fn a_killed_toucher_leaves_whole_files_with_the_last_acknowledged_expiry() {
    let _load = crate::support::loads_the_machine().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    for round in 0..5u64 {
        let mut toucher = child("crash-toucher", &dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(toucher.stdout.take().unwrap()).lines();
        // Per session: the last acknowledged expiry and version (0 for a touch).
        let mut acked = vec![(0i64, 0u64); TOUCHED];
        let mut note = |line: std::io::Result<String>| {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("ack ") else {
                return false;
            };
            let parts: Vec<i64> = rest.split(' ').map(|p| p.parse().unwrap()).collect();
            let entry = &mut acked[parts[0] as usize];
            entry.0 = parts[1];
            if parts[2] > 0 {
                entry.1 = parts[2] as u64;
            }
            true
        };
        let mut count = 0u64;
        let stop_at = 500 + round * 397;
        for line in lines.by_ref() {
            count += u64::from(note(line));
            if count >= stop_at {
                break;
            }
        }
        assert!(count >= stop_at, "the toucher stopped early, at {count}");
        toucher.kill().unwrap();
        assert!(!toucher.wait().unwrap().success(), "killed, not finished");
        // The toucher went on writing (and acknowledging) until the kill reached it: the
        // acknowledgements it printed meanwhile are still in the pipe.
        for line in lines {
            note(line);
        }

        let store = FileStore::new(&dir).await.unwrap();
        for (n, &(expires_at, version)) in acked.iter().enumerate() {
            let slot = id(&format!("touched-{n:02}"));
            let got = store.get(&slot).await.unwrap().unwrap();
            // At most one write was in flight, and it moved one session's expiry by at
            // most the number of sessions past its last acknowledged one.
            let stored = got.expires_at_millis();
            assert!(
                (expires_at..=expires_at + TOUCHED as i64).contains(&stored),
                "round {round}, session {n}: expiry {stored}, acknowledged {expires_at}"
            );
            assert!(got.version() >= version, "round {round}, session {n}");
            let text = fs::read(store.path_of(&slot)).unwrap();
            let plain: Session = serde_json::from_slice(&text).unwrap();
            assert_eq!(
                (plain.expires_at_millis(), plain.version()),
                (stored, got.version()),
                "the plain columns agree with the slot"
            );
        }
        let left: Vec<String> = names(&dir)
            .into_iter()
            .filter(|name| name.starts_with(".tmp-"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
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
    let mut value: Value = serde_json::from_str(&text).unwrap();
    // The two expiry slots of the first line, which only this store reads.
    let slots = value.as_object_mut().unwrap().remove("slots").unwrap();
    assert_eq!(slots.as_array().map(Vec::len), Some(2), "{slots}");
    assert_eq!(
        value,
        json!({"data": s.data(), "expires_at": s.expires_at_millis(), "version": v0 + 1})
    );
    // A touch rewrites the first line in place: still JSON, with the new expiry.
    let later = s.expires_at() + Duration::from_secs(60);
    assert!(store.touch(&id, later).await.unwrap());
    let text = fs::read_to_string(store.path_of(&id)).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["expires_at"], json!(s.expires_at_millis() + 60_000));
    assert_eq!(value["version"], json!(v0 + 1));
    assert_eq!(value["data"], json!(s.data()));
    // And it reads as a `Session`, as files always have.
    let read: Session = serde_json::from_str(&text).unwrap();
    assert_eq!(read.expires_at_millis(), s.expires_at_millis() + 60_000);
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

// ---------------------------------------------------------------------------------------
// Owners and the owner index (`dir/.owners/<base64url(owner)>/<id>`)

fn owner(text: &str) -> Owner {
    Owner::new(text).unwrap()
}

fn owned(data: Value, who: &str) -> Session {
    session(data).with_owner(Some(owner(who)))
}

/// The marker of `id` in the index directory of `who` (base64url of the owner, no padding:
/// "ada" is "YWRh", "bob" is "Ym9i").
fn marker(dir: &Path, key: &str, id: &SessionId) -> std::path::PathBuf {
    dir.join(".owners").join(key).join(id.as_str())
}

/// The ids `sessions_of(who)` lists, sorted.
async fn listed(store: &FileStore, who: &str) -> Vec<String> {
    let mut ids: Vec<String> = store
        .sessions_of(&owner(who), false)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.as_str().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_owner_is_stored_returned_kept_by_touch_and_removed_by_a_write_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    assert!(store.capabilities().owners);
    let a = id("a");

    let v0 = store.set(&a, &owned(json!({"n": 1}), "ada")).await.unwrap();
    let raw: Value = serde_json::from_slice(&fs::read(store.path_of(&a)).unwrap()).unwrap();
    assert_eq!(raw["owner"], "ada");
    let got = store.get(&a).await.unwrap().unwrap();
    assert_eq!(got.owner(), Some(&owner("ada")));
    assert_eq!(on_disk(&store, &a).owner(), Some(&owner("ada")));
    assert!(marker(dir, "YWRh", &a).is_file());
    assert_eq!(fs::metadata(marker(dir, "YWRh", &a)).unwrap().len(), 0);

    // touch keeps the owner (and its marker).
    assert!(store.touch(&a, SystemTime::now() + 2 * HOUR).await.unwrap());
    let got = store.get(&a).await.unwrap().unwrap();
    assert_eq!((got.owner(), got.version()), (Some(&owner("ada")), v0));
    assert_eq!(listed(&store, "ada").await, ["a"]);

    // The same data and expiry under another owner is a change: written, not skipped.
    let mut moved = got.clone();
    moved.set_owner(Some(owner("bob")));
    let skipped = store.skipped_writes();
    let v1 = store.set(&a, &moved).await.unwrap();
    assert_eq!(v1, v0 + 1);
    assert_eq!(store.skipped_writes(), skipped);
    assert_eq!(
        store.get(&a).await.unwrap().unwrap().owner(),
        Some(&owner("bob"))
    );
    assert!(
        !marker(dir, "YWRh", &a).exists(),
        "the old owner's marker went"
    );
    assert!(
        !dir.join(".owners/YWRh").exists(),
        "and its emptied directory"
    );
    assert!(marker(dir, "Ym9i", &a).is_file());
    assert_eq!(listed(&store, "ada").await, Vec::<String>::new());
    assert_eq!(listed(&store, "bob").await, ["a"]);
    // An identical save now is skipped.
    assert_eq!(store.set(&a, &moved).await.unwrap(), v1);
    assert_eq!(store.skipped_writes(), skipped + 1);

    // set_if_version and create store the owner too.
    let v2 = store
        .set_if_version(&a, &owned(json!({"n": 2}), "ada"), v1)
        .await
        .unwrap();
    assert_eq!(listed(&store, "ada").await, ["a"]);
    assert_eq!(listed(&store, "bob").await, Vec::<String>::new());
    let b = id("b");
    assert!(store.create(&b, &owned(json!({}), "ada")).await.unwrap());
    assert_eq!(listed(&store, "ada").await, ["a", "b"]);

    // A write without owner removes it: from the file and from the index.
    let mut plain = store.get(&a).await.unwrap().unwrap();
    plain.set_owner(None);
    assert_eq!(store.set(&a, &plain).await.unwrap(), v2 + 1);
    let raw: Value = serde_json::from_slice(&fs::read(store.path_of(&a)).unwrap()).unwrap();
    assert!(raw.get("owner").is_none(), "{raw}");
    assert_eq!(store.get(&a).await.unwrap().unwrap().owner(), None);
    assert!(!marker(dir, "YWRh", &a).exists());
    assert_eq!(listed(&store, "ada").await, ["b"]);
}

#[tokio::test]
async fn an_old_file_without_owner_still_reads_and_an_owned_one_reads_as_a_session() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    let expires = session_stores::now_millis() + 60_000;
    let old = json!({"data": {"user": "ada"}, "expires_at": expires, "version": 7});
    fs::write(
        dir.join("old.json"),
        serde_json::to_vec_pretty(&old).unwrap(),
    )
    .unwrap();
    let got = store.get(&id("old")).await.unwrap().unwrap();
    assert_eq!((got.version(), got.owner()), (7, None));
    assert_eq!(got.get::<String>("user").unwrap().as_deref(), Some("ada"));
    // Giving it an owner indexes it.
    let v = store
        .set(&id("old"), &got.clone().with_owner(Some(owner("ada"))))
        .await
        .unwrap();
    assert_eq!(v, 8);
    assert_eq!(listed(&store, "ada").await, ["old"]);
    // The owned file is still the serde form of `Session`.
    assert_eq!(on_disk(&store, &id("old")).owner(), Some(&owner("ada")));
    // An owner that breaks the rules makes the file undecodable, not a panic.
    let bad = json!({"data": {}, "expires_at": expires, "version": 1, "owner": ""});
    fs::write(dir.join("bad.json"), bad.to_string()).unwrap();
    let err = store.get(&id("bad")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}");
}

#[tokio::test]
async fn listings_leave_out_expired_destroyed_and_reowned_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    for name in [
        "live",
        "expiring",
        "destroyed",
        "reowned",
        "touched",
        "unowned",
    ] {
        store
            .set(&id(name), &owned(json!({"name": name}), "ada"))
            .await
            .unwrap();
    }
    let listing = store.sessions_of(&owner("ada"), true).await.unwrap();
    assert_eq!(listing.len(), 6);
    let live = listing.iter().find(|s| s.id.as_str() == "live").unwrap();
    assert_eq!(live.data.as_ref().unwrap()["name"], "live");
    let got = store.get(&id("live")).await.unwrap().unwrap();
    assert_eq!(
        (live.version, live.expires_at_millis),
        (got.version(), got.expires_at_millis())
    );
    assert!(
        store
            .sessions_of(&owner("ada"), false)
            .await
            .unwrap()
            .iter()
            .all(|s| s.data.is_none())
    );

    // Expired by a write (its marker goes with the file), by touch, destroyed, re-owned,
    // disowned.
    let mut past = owned(json!({}), "ada");
    past.set_expires_at(SystemTime::now() - HOUR);
    assert_eq!(store.set(&id("expiring"), &past).await.unwrap(), 0);
    assert!(
        store
            .touch(&id("touched"), SystemTime::now())
            .await
            .unwrap()
    );
    store.destroy(&id("destroyed")).await.unwrap();
    store
        .set(&id("reowned"), &owned(json!({}), "bob"))
        .await
        .unwrap();
    store
        .set(&id("unowned"), &session(json!({})))
        .await
        .unwrap();
    for gone in ["expiring", "touched", "destroyed", "reowned", "unowned"] {
        assert!(!marker(dir, "YWRh", &id(gone)).exists(), "{gone}");
    }
    assert_eq!(listed(&store, "ada").await, ["live"]);
    assert_eq!(listed(&store, "bob").await, ["reowned"]);
    assert_eq!(listed(&store, "nobody").await, Vec::<String>::new());
}

#[tokio::test]
async fn destroy_owner_ends_every_session_of_the_owner_but_the_one_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    for n in 0..5 {
        store
            .set(&id(&format!("ada-{n}")), &owned(json!({"n": n}), "ada"))
            .await
            .unwrap();
    }
    store
        .set(&id("bob-0"), &owned(json!({}), "bob"))
        .await
        .unwrap();
    store.set(&id("none"), &session(json!({}))).await.unwrap();

    // `except` naming someone else's session protects nothing of ada's and leaves bob's.
    assert_eq!(
        store
            .destroy_owner(&owner("ada"), Some(&id("ada-2")))
            .await
            .unwrap(),
        4
    );
    assert_eq!(listed(&store, "ada").await, ["ada-2"]);
    assert!(store.get(&id("ada-0")).await.unwrap().is_none());
    assert!(store.get(&id("ada-2")).await.unwrap().is_some());
    assert_eq!(
        store
            .destroy_owner(&owner("ada"), Some(&id("bob-0")))
            .await
            .unwrap(),
        1
    );
    assert!(store.get(&id("bob-0")).await.unwrap().is_some());
    assert!(store.get(&id("none")).await.unwrap().is_some());
    assert_eq!(store.len().await.unwrap(), 2);
    assert!(
        !dir.join(".owners/YWRh").exists(),
        "the emptied directory went"
    );
    // Nothing left: 0, and an unknown owner is 0 too.
    assert_eq!(store.destroy_owner(&owner("ada"), None).await.unwrap(), 0);
    assert_eq!(store.destroy_owner(&owner("zed"), None).await.unwrap(), 0);
    // A destroyed session's id can be written again for the owner.
    store
        .set(&id("ada-0"), &owned(json!({}), "ada"))
        .await
        .unwrap();
    assert_eq!(listed(&store, "ada").await, ["ada-0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_with_two_thousand_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let ids: Vec<SessionId> = (0..2000).map(|_| SessionId::generate()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in ids.chunks(250) {
        let (store, chunk) = (store.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for id in chunk {
                store
                    .set(&id, &owned(json!({"k": 1}), "many"))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // Another owner's sessions are not read.
    store
        .set(&SessionId::generate(), &owned(json!({}), "other"))
        .await
        .unwrap();
    let listing = store.sessions_of(&owner("many"), true).await.unwrap();
    assert_eq!(listing.len(), 2000);
    let kept = &ids[1234];
    assert_eq!(
        store
            .destroy_owner(&owner("many"), Some(kept))
            .await
            .unwrap(),
        1999
    );
    assert_eq!(listed(&store, "many").await, [kept.as_str()]);
    assert_eq!(store.len().await.unwrap(), 2);
}

#[tokio::test]
async fn owners_of_two_directories_are_separate() {
    let tmp = tempfile::tempdir().unwrap();
    let one = FileStore::new(tmp.path().join("one")).await.unwrap();
    let two = FileStore::new(tmp.path().join("two")).await.unwrap();
    one.set(&id("s1"), &owned(json!({}), "ada")).await.unwrap();
    two.set(&id("s2"), &owned(json!({}), "ada")).await.unwrap();
    assert_eq!(listed(&one, "ada").await, ["s1"]);
    assert_eq!(listed(&two, "ada").await, ["s2"]);
    assert_eq!(one.destroy_owner(&owner("ada"), None).await.unwrap(), 1);
    assert_eq!(listed(&two, "ada").await, ["s2"]);
    two.clear().await.unwrap();
    one.set(&id("s3"), &owned(json!({}), "ada")).await.unwrap();
    assert_eq!(listed(&one, "ada").await, ["s3"]);
}

#[tokio::test]
async fn the_index_is_not_a_session_and_clear_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    // No owner, no index directory: the layout is what it was before owners.
    store.set(&id("plain"), &session(json!({}))).await.unwrap();
    assert_eq!(names(dir), [".locks", "plain.json"]);

    store.set(&id("a"), &owned(json!({}), "ada")).await.unwrap();
    store.set(&id("b"), &owned(json!({}), "bob")).await.unwrap();
    // An owner whose key would look like a session file name still is not one.
    store
        .set(&id("c"), &owned(json!({}), "x.json"))
        .await
        .unwrap();
    assert_eq!(store.len().await.unwrap(), 4);
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    assert!(marker(dir, "YWRh", &id("a")).is_file());

    // delete_expired removes an expired session's marker with it.
    let now = session_stores::now_millis();
    let body = json!({"data": {}, "expires_at": now - 1, "version": 1, "owner": "ada"});
    fs::write(dir.join("gone.json"), body.to_string()).unwrap();
    fs::create_dir_all(dir.join(".owners/YWRh")).unwrap();
    fs::write(marker(dir, "YWRh", &id("gone")), "").unwrap();
    assert_eq!(store.delete_expired().await.unwrap(), 1);
    assert!(!marker(dir, "YWRh", &id("gone")).exists());
    assert!(marker(dir, "YWRh", &id("a")).exists());

    store.clear().await.unwrap();
    assert_eq!(store.len().await.unwrap(), 0);
    assert_eq!(names(dir), [".locks"], "the index went with the sessions");
    assert_eq!(listed(&store, "ada").await, Vec::<String>::new());
    // And it comes back with the next owned write.
    store.set(&id("a"), &owned(json!({}), "ada")).await.unwrap();
    assert_eq!(listed(&store, "ada").await, ["a"]);
}

#[tokio::test]
async fn stale_markers_are_reclaimed_and_a_lost_one_is_made_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    store
        .set(&id("live"), &owned(json!({}), "ada"))
        .await
        .unwrap();
    store
        .set(&id("bobs"), &owned(json!({}), "bob"))
        .await
        .unwrap();
    store.set(&id("plain"), &session(json!({}))).await.unwrap();
    let now = session_stores::now_millis();
    let expired = json!({"data": {}, "expires_at": now - 1, "version": 1, "owner": "ada"});
    fs::write(dir.join("expired.json"), expired.to_string()).unwrap();
    fs::write(dir.join("corrupt.json"), "{not json").unwrap();
    // Markers left by a crash or another process: a missing session, someone else's, one
    // without owner, an expired one, an unreadable one, and a name that is no id.
    for stale in ["missing", "bobs", "plain", "expired", "corrupt"] {
        fs::write(marker(dir, "YWRh", &id(stale)), "").unwrap();
    }
    fs::write(dir.join(".owners/YWRh/not an id"), "").unwrap();

    // The unreadable file is listed (as undecodable), so that it can be seen and ended.
    assert_eq!(listed(&store, "ada").await, ["corrupt", "live"]);
    let mut left = names(&dir.join(".owners/YWRh"));
    left.sort();
    assert_eq!(
        left,
        ["corrupt", "live", "not an id"],
        "dead markers reclaimed; an unreadable file keeps its marker"
    );
    // destroy_owner reclaims too, and counts only live sessions of the owner.
    fs::write(marker(dir, "YWRh", &id("bobs")), "").unwrap();
    assert_eq!(store.destroy_owner(&owner("ada"), None).await.unwrap(), 1);
    assert!(store.get(&id("bobs")).await.unwrap().is_some());
    assert!(!marker(dir, "YWRh", &id("bobs")).exists());

    // A marker lost (deleted by hand) is made again by the next write of the session.
    store
        .set(&id("again"), &owned(json!({"n": 1}), "ada"))
        .await
        .unwrap();
    fs::remove_file(marker(dir, "YWRh", &id("again"))).unwrap();
    assert_eq!(listed(&store, "ada").await, ["corrupt"]);
    store
        .set(&id("again"), &owned(json!({"n": 2}), "ada"))
        .await
        .unwrap();
    assert_eq!(listed(&store, "ada").await, ["again", "corrupt"]);
}

#[tokio::test]
async fn another_store_changing_the_owner_is_never_undone_by_a_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let one = FileStore::new(tmp.path()).await.unwrap();
    let two = FileStore::new(tmp.path()).await.unwrap();
    let s = owned(json!({"n": 1}), "ada");
    let v0 = one.set(&id("s"), &s).await.unwrap();
    let mut moved = s.clone();
    moved.set_owner(Some(owner("bob")));
    assert_eq!(two.set(&id("s"), &moved).await.unwrap(), v0 + 1);
    // `one` saves its (now stale) copy: the file differs from what it wrote, so it writes.
    assert_eq!(one.set(&id("s"), &s).await.unwrap(), v0 + 2);
    assert_eq!(listed(&one, "ada").await, ["s"]);
    assert_eq!(listed(&two, "bob").await, Vec::<String>::new());
    // destroy through `two`, whose cache still says bob: the file goes, and ada's marker is
    // reclaimed by the next listing.
    two.destroy(&id("s")).await.unwrap();
    assert_eq!(listed(&one, "ada").await, Vec::<String>::new());
    assert!(!tmp.path().join(".owners/YWRh").exists());
}

#[tokio::test]
async fn durable_stores_keep_owners_too() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::builder(tmp.path())
        .durable(true)
        .open()
        .await
        .unwrap();
    let long = "é".repeat(64); // 128 bytes: the longest owner
    store.set(&id("a"), &owned(json!({}), &long)).await.unwrap();
    store.set(&id("b"), &owned(json!({}), &long)).await.unwrap();
    assert_eq!(listed(&store, &long).await, ["a", "b"]);
    assert_eq!(
        store
            .destroy_owner(&owner(&long), Some(&id("a")))
            .await
            .unwrap(),
        1
    );
    assert_eq!(listed(&store, &long).await, ["a"]);
}

// ---------------------------------------------------------------------------------------
// Scans (one directory pass per page, keyset cursors `1:<last id>`)

/// Every page of a scan from the start, each checked to hold at most `limit` sessions.
async fn pages(store: &FileStore, limit: usize) -> Vec<Vec<(SessionId, Session)>> {
    let mut pages = Vec::new();
    let mut cursor: Option<ScanCursor> = None;
    loop {
        let page = store.scan(cursor.as_ref(), limit).await.unwrap();
        assert!(
            page.sessions.len() <= limit.max(1),
            "{}",
            page.sessions.len()
        );
        pages.push(page.sessions);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return pages,
        }
    }
}

/// The ids of a whole scan in the order returned, checked to be strictly increasing (so
/// none is returned twice).
async fn scanned(store: &FileStore, limit: usize) -> Vec<(SessionId, Session)> {
    let all: Vec<_> = pages(store, limit).await.into_iter().flatten().collect();
    for pair in all.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "{:?} then {:?}",
            pair[0].0,
            pair[1].0
        );
    }
    all
}

fn ids_of(sessions: &[(SessionId, Session)]) -> Vec<String> {
    sessions
        .iter()
        .map(|(id, _)| id.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn a_scan_returns_every_session_once_as_get_does() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    assert!(store.capabilities().scan && store.capabilities().owners);
    let mut expected = Vec::new();
    for n in 0..300 {
        let id = SessionId::generate();
        let mut s = session(json!({"n": n, "tags": ["a", n]}));
        s.set_expires_at(SystemTime::now() + HOUR + Duration::from_secs(n));
        if n % 3 == 0 {
            s = s.with_owner(Some(owner(&format!("user:{}", n % 7))));
        }
        store.set(&id, &s).await.unwrap();
        expected.push(id.as_str().to_owned());
    }
    expected.sort();

    let pages = pages(&store, 7).await;
    assert!(pages.len() >= 300 / 7, "{} pages", pages.len());
    let all: Vec<_> = pages.into_iter().flatten().collect();
    assert_eq!(ids_of(&all), expected, "each once, in id order");
    for (id, got) in &all {
        let want = store.get(id).await.unwrap().unwrap();
        assert_eq!(got, &want, "{id:?}");
        assert_eq!(got.owner(), want.owner());
        assert_eq!(got.version(), want.version());
        assert_eq!(got.expires_at_millis(), want.expires_at_millis());
    }
    assert_eq!(all.iter().filter(|(_, s)| s.owner().is_some()).count(), 100);

    // A limit of 0 counts as 1; a huge one is capped, and 300 fit in one page.
    let first = store.scan(None, 0).await.unwrap();
    assert_eq!(ids_of(&first.sessions), expected[..1]);
    let next = store.scan(first.next.as_ref(), 0).await.unwrap();
    assert_eq!(ids_of(&next.sessions), expected[1..2]);
    let whole = store.scan(None, usize::MAX).await.unwrap();
    assert_eq!(ids_of(&whole.sessions), expected);
    assert!(whole.next.is_none());
    // A page that covers the last id exactly ends the scan.
    let exact = store.scan(None, 300).await.unwrap();
    assert_eq!(exact.sessions.len(), 300);
    assert!(exact.next.is_none());
}

#[tokio::test]
async fn scans_skip_expired_empty_temporary_lock_and_index_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    let now = session_stores::now_millis();
    let live_body = json!({"data": {"x": 1}, "expires_at": now + 3_600_000, "version": 5});
    for n in 0..10 {
        let expired = json!({"data": {"n": n}, "expires_at": now - 1000, "version": 3});
        fs::write(dir.join(format!("expired-{n}.json")), expired.to_string()).unwrap();
    }
    fs::write(dir.join("empty.json"), b"").unwrap();
    // Live-looking content under names that are not sessions.
    fs::write(dir.join(".tmp-abcdef.partial"), live_body.to_string()).unwrap();
    fs::write(dir.join("a b.json"), live_body.to_string()).unwrap();
    fs::write(dir.join("notes.txt"), live_body.to_string()).unwrap();
    fs::write(dir.join("hand.json"), live_body.to_string()).unwrap();
    let mut live = vec!["hand".to_owned()];
    for n in 0..20 {
        let id = id(&format!("live-{n:02}"));
        store
            .set(&id, &owned(json!({"n": n}), "ada"))
            .await
            .unwrap();
        live.push(id.as_str().to_owned());
    }
    // An expiring touch and a destroy: gone for scans too.
    store
        .touch(&id("live-03"), SystemTime::now() - HOUR)
        .await
        .unwrap();
    store.destroy(&id("live-04")).await.unwrap();
    live.retain(|id| id != "live-03" && id != "live-04");
    live.sort();
    assert!(dir.join(".owners").is_dir() && dir.join(".locks").is_dir());
    assert!(fs::read_dir(dir.join(".locks")).unwrap().count() > 0);

    for limit in [1, 3, 1000] {
        let all = scanned(&store, limit).await;
        assert_eq!(ids_of(&all), live, "limit {limit}");
    }
    let hand = scanned(&store, 1).await.remove(0).1;
    assert_eq!((hand.version(), hand.data()["x"].clone()), (5, json!(1)));
    assert!(hand.owner().is_none());
}

/// A corrupt file is reported in its page (a Decode error naming it) and the scan goes on.
#[tokio::test]
async fn a_corrupt_file_is_reported_in_its_page_and_the_scan_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    for name in ["a", "c"] {
        store.set(&id(name), &session(json!({}))).await.unwrap();
    }
    fs::write(tmp.path().join("b.json"), b"{\"data\":").unwrap();
    let first = store.scan(None, 1).await.unwrap();
    assert_eq!(ids_of(&first.sessions), ["a"]);
    let second = store.scan(first.next.as_ref(), 1).await.unwrap();
    assert!(second.sessions.is_empty());
    assert_eq!(second.undecodable.len(), 1);
    let err = &second.undecodable[0].error;
    assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}");
    assert_eq!(err.session(), Some(&id("b").hint()));
    assert_eq!(second.undecodable[0].id, Some(id("b")));
    let third = store.scan(second.next.as_ref(), 1).await.unwrap();
    assert_eq!(ids_of(&third.sessions), ["c"]);
    // `set` repairs it, and a scan from the same cursor returns it.
    store.set(&id("b"), &session(json!({}))).await.unwrap();
    let page = store.scan(first.next.as_ref(), 5).await.unwrap();
    assert_eq!(ids_of(&page.sessions), ["b", "c"]);
}

#[tokio::test]
async fn writes_between_pages_never_duplicate_or_drop_a_session_live_throughout() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let mut stable = Vec::new();
    for n in 0..200 {
        let id = SessionId::generate();
        store
            .set(&id, &owned(json!({"n": n}), "ada"))
            .await
            .unwrap();
        stable.push(id);
    }
    let mut doomed = Vec::new();
    for _ in 0..50 {
        let id = SessionId::generate();
        store.set(&id, &session(json!({}))).await.unwrap();
        doomed.push(id);
    }
    let mut seen: Vec<SessionId> = Vec::new();
    let mut cursor: Option<ScanCursor> = None;
    let mut round = 0;
    loop {
        let page = store.scan(cursor.as_ref(), 9).await.unwrap();
        seen.extend(page.sessions.into_iter().map(|(id, _)| id));
        let Some(next) = page.next else { break };
        cursor = Some(next);
        // Between pages: rewrite, re-own and touch stable sessions on both sides of the
        // cursor, create new ones, destroy and expire others.
        round += 1;
        for (k, id) in stable.iter().enumerate().skip(round % 5).step_by(5) {
            let s = owned(json!({"n": k, "round": round}), ["ada", "bob"][round % 2]);
            store.set(id, &s).await.unwrap();
            store.touch(id, SystemTime::now() + HOUR * 2).await.unwrap();
        }
        for _ in 0..5 {
            store
                .set(&SessionId::generate(), &session(json!({"new": round})))
                .await
                .unwrap();
        }
        if let Some(id) = doomed.pop() {
            store.destroy(&id).await.unwrap();
        }
        if let Some(id) = doomed.pop() {
            store.touch(&id, SystemTime::now() - HOUR).await.unwrap();
        }
    }
    assert!(round > 20, "{round} rounds");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "a session returned twice");
    for id in &stable {
        assert!(seen.contains(id), "{id:?} dropped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_page_never_duplicate_or_drop_a_session_live_throughout() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let mut stable = Vec::new();
    for n in 0..300 {
        let id = SessionId::generate();
        store.set(&id, &session(json!({"n": n}))).await.unwrap();
        stable.push(id);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stable, stop) = (store.clone(), stable.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Every stable file renamed over again and again, and churn around them.
                let id = &stable[(n as usize * 7) % stable.len()];
                store.set(id, &session(json!({"w": n}))).await.unwrap();
                let fresh = SessionId::generate();
                store.set(&fresh, &session(json!({}))).await.unwrap();
                if n.is_multiple_of(2) {
                    store.destroy(&fresh).await.unwrap();
                }
                n += 1;
            }
            n
        })
    };
    for _ in 0..3 {
        let ids: Vec<SessionId> = scanned(&store, 16)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        for id in &stable {
            assert!(ids.binary_search(id).is_ok(), "{id:?} dropped");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0);
}

#[tokio::test]
async fn a_saved_cursor_resumes_the_scan_on_a_new_store_over_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    let text = {
        let store = FileStore::new(tmp.path()).await.unwrap();
        for n in 0..40 {
            let id = id(&format!("s{n:03}"));
            store.set(&id, &session(json!({"n": n}))).await.unwrap();
            expected.push(id.as_str().to_owned());
        }
        let first = store.scan(None, 15).await.unwrap();
        assert_eq!(ids_of(&first.sessions), expected[..15]);
        first.next.unwrap().as_str().to_owned()
    };
    // The cursor names the last id covered, under a version tag.
    assert_eq!(text, "1:s014");
    let store = FileStore::new(tmp.path()).await.unwrap();
    let mut cursor = Some(ScanCursor::new(text));
    let mut rest = Vec::new();
    while let Some(at) = cursor {
        let page = store.scan(Some(&at), 15).await.unwrap();
        rest.extend(page.sessions);
        cursor = page.next;
    }
    assert_eq!(ids_of(&rest), expected[15..]);
    assert_eq!(rest[0].1.data()["n"], json!(15));
}

#[tokio::test]
async fn a_cursor_this_store_did_not_make_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    store.set(&id("a"), &session(json!({}))).await.unwrap();
    for text in [
        "", "a", "1:", "2:a", "1:a/b", "1:..", "1:a b", "0:a", "1", ":a",
    ] {
        let err = store
            .scan(Some(&ScanCursor::new(text)), 10)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{text:?}: {err:?}");
        assert!(
            err.to_string().contains("not a scan cursor of this store"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn an_empty_store_ends_its_scan_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    let page = store.scan(None, 10).await.unwrap();
    assert!(page.sessions.is_empty() && page.next.is_none());
    // Nothing but files that are not sessions (an owner index left by a destroyed one).
    store.set(&id("x"), &owned(json!({}), "ada")).await.unwrap();
    store.destroy(&id("x")).await.unwrap();
    fs::write(dir.join(".tmp-abc.partial"), b"{}").unwrap();
    fs::write(dir.join("readme.txt"), b"{}").unwrap();
    let page = store.scan(None, 0).await.unwrap();
    assert!(page.sessions.is_empty() && page.next.is_none());
    // Only expired sessions: an empty last page.
    let mut gone = session(json!({}));
    gone.set_expires_at(SystemTime::now() + Duration::from_millis(50));
    store.set(&id("y"), &gone).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let page = store.scan(None, 10).await.unwrap();
    assert!(page.sessions.is_empty() && page.next.is_none());
}

// ---------------------------------------------------------------------------------------
// Lifetimes: absolute expiry and rotation

const MINUTE_MS: i64 = 60_000;
const GRACE: Duration = Duration::from_secs(60);

/// A session with `data`, expiring `expires_in` ms from now, with an absolute expiry
/// `absolute_in` ms from now (or none).
fn lived(data: Value, expires_in: i64, absolute_in: Option<i64>) -> Session {
    let now = now_millis();
    let mut s = session(data);
    s.set_expires_at_millis(now + expires_in);
    s.set_absolute_expiry_millis(absolute_in.map(|ms| now + ms));
    s
}

/// The session file of `id` as JSON, `None` if there is none.
fn file_json(store: &FileStore, id: &SessionId) -> Option<Value> {
    let bytes = fs::read(store.path_of(id)).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

async fn moved(store: &FileStore, old: &SessionId, new: &SessionId, grace: Duration) -> u64 {
    match store.rotate(old, new, grace).await.unwrap() {
        Rotation::Moved { version } => version,
        other => panic!("expected Moved, got {other:?}"),
    }
}

fn is_rotated_error(err: &Error) -> bool {
    matches!(err, Error::Rotated { .. }) && err.kind() == ErrorKind::Conflict
}

/// Every write and `touch` stores an expiry no later than the absolute expiry, which the
/// file holds and `get` and `scan` return; a write whose absolute expiry has passed stores
/// nothing. With the write-skip cache and without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_absolute_expiry_caps_every_write_and_touch() {
    for capacity in [10_000, 0] {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::builder(tmp.path())
            .cache_capacity(capacity)
            .open()
            .await
            .unwrap();
        assert!(store.capabilities().absolute_expiry && store.capabilities().rotation);
        let id = SessionId::generate();
        let s = lived(json!({"user": "ada"}), 60 * MINUTE_MS, Some(10 * MINUTE_MS));
        let absolute = s.absolute_expiry_millis().unwrap();
        store.set(&id, &s).await.unwrap();
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.absolute_expiry_millis(), Some(absolute));
        assert_eq!(got.expires_at_millis(), absolute);
        assert!(!got.is_rotated());
        let on_file = file_json(&store, &id).unwrap();
        assert_eq!(on_file["absolute_expiry"], json!(absolute));
        assert_eq!(on_file["expires_at"], json!(absolute));
        assert!(on_file.get("moved_to").is_none());
        // Still the serde form of `Session`.
        assert_eq!(
            on_disk(&store, &id).absolute_expiry_millis(),
            Some(absolute)
        );
        let page = store.scan(None, 10).await.unwrap();
        assert_eq!(page.sessions[0].1.absolute_expiry_millis(), Some(absolute));

        // `touch` past it stores it (and says true), in place or not; before it, the time
        // given.
        assert!(
            store
                .touch(&id, from_millis(absolute + 3_600_000))
                .await
                .unwrap()
        );
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().expires_at_millis(),
            absolute
        );
        assert!(
            store
                .touch(&id, from_millis(absolute - MINUTE_MS))
                .await
                .unwrap()
        );
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.expires_at_millis(), absolute - MINUTE_MS);
        assert_eq!(
            got.absolute_expiry_millis(),
            Some(absolute),
            "kept by touch"
        );
        // The same session written again with a later expiry: capped, kept as it is.
        store.set(&id, &s).await.unwrap();
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().expires_at_millis(),
            absolute
        );

        // `create` and `set_if_version` are capped alike.
        let other = SessionId::generate();
        assert!(store.create(&other, &s).await.unwrap());
        let created = store.get(&other).await.unwrap().unwrap();
        assert_eq!(created.expires_at_millis(), absolute);
        let mut later = s.clone();
        later.set_expires_at_millis(absolute + 3_600_000);
        let v = store
            .set_if_version(&other, &later, created.version())
            .await
            .unwrap();
        assert_eq!(v, next_version(created.version()));
        assert_eq!(
            store
                .get(&other)
                .await
                .unwrap()
                .unwrap()
                .expires_at_millis(),
            absolute
        );

        // An absolute expiry that has passed: the write deletes and returns 0, `create`
        // stores nothing live, a compare-and-set deletes.
        let past = lived(json!({}), 60 * MINUTE_MS, Some(-1));
        assert_eq!(store.set(&id, &past).await.unwrap(), 0);
        assert!(store.get(&id).await.unwrap().is_none());
        assert!(!store.path_of(&id).exists());
        let fresh = SessionId::generate();
        assert!(store.create(&fresh, &past).await.unwrap());
        assert!(store.get(&fresh).await.unwrap().is_none());
        assert_eq!(store.set_if_version(&other, &past, v).await.unwrap(), 0);
        assert!(store.get(&other).await.unwrap().is_none());

        // A touch whose capped expiry is not in the future ends the session (only a file
        // written by hand has an absolute expiry before its expiry).
        let edited = SessionId::generate();
        let hand = json!({"data": {}, "expires_at": now_millis() + 3_600_000, "version": 3,
            "absolute_expiry": now_millis() - 1});
        fs::write(store.path_of(&edited), hand.to_string()).unwrap();
        assert!(
            store
                .touch(&edited, from_millis(now_millis() + 3_600_000))
                .await
                .unwrap()
        );
        assert!(!store.path_of(&edited).exists());
    }
}

/// A write over a live session keeps the earlier of the stored and the written absolute
/// expiry (none written keeps the stored one); a new incarnation takes what it carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_writes_keep_the_earlier_absolute_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let id = SessionId::generate();
    let first = lived(json!({"n": 1}), 60 * MINUTE_MS, Some(30 * MINUTE_MS));
    let kept = first.absolute_expiry_millis();
    store.set(&id, &first).await.unwrap();
    let abs = |s: Option<Session>| s.unwrap().absolute_expiry_millis();
    for written in [Some(50 * MINUTE_MS), None] {
        let s = lived(json!({"n": 2}), 60 * MINUTE_MS, written);
        store.set(&id, &s).await.unwrap();
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.absolute_expiry_millis(), kept);
        assert_eq!(
            Some(got.expires_at_millis()),
            kept,
            "capped by the kept one"
        );
    }
    let v = store.get(&id).await.unwrap().unwrap().version();
    let later = lived(json!({"n": 3}), 60 * MINUTE_MS, Some(55 * MINUTE_MS));
    store.set_if_version(&id, &later, v).await.unwrap();
    assert_eq!(abs(store.get(&id).await.unwrap()), kept);
    let earlier = lived(json!({"n": 4}), 60 * MINUTE_MS, Some(20 * MINUTE_MS));
    store.set(&id, &earlier).await.unwrap();
    assert_eq!(
        abs(store.get(&id).await.unwrap()),
        earlier.absolute_expiry_millis()
    );
    assert!(
        store
            .touch(&id, from_millis(now_millis() + 5 * MINUTE_MS))
            .await
            .unwrap()
    );
    assert_eq!(
        abs(store.get(&id).await.unwrap()),
        earlier.absolute_expiry_millis()
    );
    store.destroy(&id).await.unwrap();
    store.set(&id, &session(json!({}))).await.unwrap();
    assert_eq!(abs(store.get(&id).await.unwrap()), None);
    assert!(
        file_json(&store, &id)
            .unwrap()
            .get("absolute_expiry")
            .is_none()
    );
}

/// `rotate`: Taken, Absent and Moved; the old id reads as the snapshot it was, marked
/// rotated, refuses writes, and is not a session for len, scan and sessions_of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_moves_the_session_and_leaves_a_read_only_old_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    let ada = owner("ada");
    let (old, new) = (SessionId::generate(), SessionId::generate());
    let mut s = owned(json!({"user": "ada"}), "ada");
    s.set_absolute_expiry_millis(Some(now_millis() + 2 * 3_600_000));
    let v = store.set(&old, &s).await.unwrap();
    let before = store.get(&old).await.unwrap().unwrap();

    assert_eq!(
        store.rotate(&old, &old, GRACE).await.unwrap(),
        Rotation::Taken
    );
    let missing = SessionId::generate();
    assert_eq!(
        store.rotate(&missing, &new, GRACE).await.unwrap(),
        Rotation::Absent
    );
    let taken = SessionId::generate();
    store.set(&taken, &session(json!({}))).await.unwrap();
    assert_eq!(
        store.rotate(&old, &taken, GRACE).await.unwrap(),
        Rotation::Taken
    );
    assert_eq!(
        store.get(&old).await.unwrap().unwrap().version(),
        v,
        "unchanged"
    );
    assert!(!store.path_of(&new).exists());

    let version = moved(&store, &old, &new, GRACE).await;
    assert_eq!(version, next_version(v));
    let got_new = store.get(&new).await.unwrap().unwrap();
    assert_eq!(got_new.data(), before.data());
    assert_eq!(got_new.version(), version);
    assert_eq!(got_new.owner(), Some(&ada));
    assert_eq!(got_new.expires_at_millis(), before.expires_at_millis());
    assert_eq!(
        got_new.absolute_expiry_millis(),
        before.absolute_expiry_millis()
    );
    assert!(!got_new.is_rotated());
    let got_old = store.get(&old).await.unwrap().unwrap();
    assert!(got_old.is_rotated());
    assert_eq!(got_old.data(), before.data());
    assert_eq!(got_old.version(), v);
    assert_eq!(got_old.owner(), Some(&ada));
    assert!(got_old.expires_at_millis() <= now_millis() + 60_000);
    assert_eq!(
        file_json(&store, &old).unwrap()["moved_to"],
        json!(new.as_str())
    );
    assert!(marker(dir, "YWRh", &new).exists(), "the new id is indexed");

    assert_eq!(
        store
            .rotate(&old, &SessionId::generate(), GRACE)
            .await
            .unwrap(),
        Rotation::Absent
    );
    assert_eq!(
        store.rotate(&taken, &old, GRACE).await.unwrap(),
        Rotation::Taken
    );

    // Writes through the old id are refused and change nothing.
    let changed = owned(json!({"user": "eve"}), "ada");
    let file_before = fs::read(store.path_of(&old)).unwrap();
    assert!(is_rotated_error(
        &store.set(&old, &changed).await.unwrap_err()
    ));
    assert!(is_rotated_error(
        &store
            .set(&old, &lived(json!({}), -1, None))
            .await
            .unwrap_err()
    ));
    for expected in [v, 0, version] {
        let err = store
            .set_if_version(&old, &changed, expected)
            .await
            .unwrap_err();
        assert!(is_rotated_error(&err), "{err:?}");
        assert!(err.is_conflict());
    }
    assert!(
        !store
            .touch(&old, from_millis(now_millis() + 3_600_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .touch(&old, from_millis(now_millis() - 1))
            .await
            .unwrap()
    );
    assert!(!store.create(&old, &changed).await.unwrap());
    assert_eq!(fs::read(store.path_of(&old)).unwrap(), file_before);

    // A write under the new id is not seen through the old one.
    store.set(&new, &changed).await.unwrap();
    assert_eq!(
        store.get(&old).await.unwrap().unwrap().data(),
        before.data()
    );

    // Not a session: len, scan and sessions_of skip it; destroy_owner does not count it.
    assert_eq!(store.len().await.unwrap(), 2);
    let mut expected = vec![new.as_str().to_owned(), taken.as_str().to_owned()];
    expected.sort();
    assert_eq!(ids_of(&scanned(&store, 100).await), expected);
    assert_eq!(listed(&store, "ada").await, [new.as_str()]);
    assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
    assert!(store.get(&old).await.unwrap().is_none());
    assert!(store.get(&new).await.unwrap().is_none());
    assert!(!store.path_of(&old).exists(), "removed too");
    assert!(!marker(dir, "YWRh", &old).exists());
}

/// A rotated id resolves to nothing once its grace is over, its new session is destroyed,
/// or that session is rotated again; `destroy` of it ends the new session; a grace of zero
/// ends it at once; `delete_expired` and `clear` remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_id_ends_with_its_grace_or_its_new_session() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let ids = || (SessionId::generate(), SessionId::generate());

    let (old, new) = ids();
    store.set(&old, &session(json!({"n": 1}))).await.unwrap();
    moved(&store, &old, &new, Duration::from_millis(300)).await;
    assert!(store.get(&old).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.get(&old).await.unwrap().is_none());
    assert!(store.get(&new).await.unwrap().is_some());
    assert_eq!(store.delete_expired().await.unwrap(), 1, "the rotated id");
    assert!(!store.path_of(&old).exists());
    assert!(store.create(&old, &session(json!({"n": 2}))).await.unwrap());

    // An expired rotated file is written over as over nothing.
    let (old, new) = ids();
    store.set(&old, &session(json!({}))).await.unwrap();
    moved(&store, &old, &new, Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        store
            .set(&old, &session(json!({"again": true})))
            .await
            .unwrap()
            > 0
    );
    assert!(!store.get(&old).await.unwrap().unwrap().is_rotated());
    assert!(file_json(&store, &old).unwrap().get("moved_to").is_none());

    // The new session is destroyed.
    let (old, new) = ids();
    store.set(&old, &session(json!({}))).await.unwrap();
    moved(&store, &old, &new, GRACE).await;
    store.destroy(&new).await.unwrap();
    assert!(store.get(&old).await.unwrap().is_none());

    // The new session is rotated again.
    let (old, new) = ids();
    let newer = SessionId::generate();
    store.set(&old, &session(json!({}))).await.unwrap();
    let v = moved(&store, &old, &new, GRACE).await;
    assert_eq!(moved(&store, &new, &newer, GRACE).await, next_version(v));
    assert!(store.get(&old).await.unwrap().is_none());
    assert!(store.get(&new).await.unwrap().unwrap().is_rotated());
    assert!(!store.get(&newer).await.unwrap().unwrap().is_rotated());
    // destroy of the middle one ends the newest, and the first is left to its grace.
    store.destroy(&new).await.unwrap();
    assert!(store.get(&newer).await.unwrap().is_none());

    // destroy of the old id ends the new session.
    let (old, new) = ids();
    store.set(&old, &owned(json!({}), "bob")).await.unwrap();
    moved(&store, &old, &new, GRACE).await;
    store.destroy(&old).await.unwrap();
    assert!(store.get(&old).await.unwrap().is_none());
    assert!(store.get(&new).await.unwrap().is_none());
    assert!(!store.path_of(&new).exists());
    assert!(listed(&store, "bob").await.is_empty());

    // A grace of zero: the old file goes at once.
    let (old, new) = ids();
    store.set(&old, &session(json!({}))).await.unwrap();
    moved(&store, &old, &new, Duration::ZERO).await;
    assert!(store.get(&old).await.unwrap().is_none());
    assert!(!store.path_of(&old).exists());
    assert!(store.get(&new).await.unwrap().is_some());

    // clear removes rotated files too.
    let (old, new) = ids();
    store.set(&old, &session(json!({}))).await.unwrap();
    moved(&store, &old, &new, GRACE).await;
    store.clear().await.unwrap();
    assert!(!store.path_of(&old).exists());
    assert_eq!(store.len().await.unwrap(), 0);
}

/// A compare-and-set through the old id racing `rotate` (from two stores, each with its own
/// cache, on one directory): either the write lands first and is what moved, or it fails
/// as rotated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_set_racing_rotate_lands_before_it_or_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = FileStore::new(tmp.path()).await.unwrap();
    let b = FileStore::new(tmp.path()).await.unwrap();
    let (mut before, mut after) = (0, 0);
    for round in 0..40 {
        let (old, new) = (SessionId::generate(), SessionId::generate());
        let v = a
            .set(&old, &session(json!({"round": round})))
            .await
            .unwrap();
        let written = session(json!({"round": round, "written": true}));
        let (cas, rotation) = tokio::join!(
            a.set_if_version(&old, &written, v),
            b.rotate(&old, &new, GRACE)
        );
        let Rotation::Moved { version } = rotation.unwrap() else {
            panic!("the rotation must move the session");
        };
        let got = a.get(&new).await.unwrap().unwrap();
        match cas {
            Ok(v2) => {
                before += 1;
                assert_eq!(v2, next_version(v));
                assert_eq!(version, next_version(v2));
                assert_eq!(got.data(), written.data(), "the write moved");
            }
            Err(err) => {
                after += 1;
                assert!(is_rotated_error(&err), "{err:?}");
                assert_eq!(version, next_version(v));
                assert_eq!(got.get::<bool>("written").unwrap(), None);
            }
        }
        assert_eq!(a.get(&old).await.unwrap().unwrap().data(), got.data());
    }
    assert_eq!(before + after, 40);
}

/// Rotations and destroys that take two ids' locks in opposite directions never wait for
/// each other forever: the locks are taken in one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossed_rotations_and_destroys_never_deadlock() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).await.unwrap();
    let ids: Vec<SessionId> = (0..8).map(|_| SessionId::generate()).collect();
    for id in &ids {
        store.set(id, &session(json!({}))).await.unwrap();
    }
    let mut tasks = Vec::new();
    for n in 0..64 {
        let store = store.clone();
        let (a, b) = (ids[n % 8].clone(), ids[(n * 3 + 1) % 8].clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let _ = store.rotate(&a, &b, GRACE).await.unwrap();
                let _ = store.rotate(&b, &a, Duration::ZERO).await.unwrap();
                store.destroy(&a).await.unwrap();
                let _ = store.set(&b, &session(json!({}))).await;
                let _ = store.create(&a, &session(json!({}))).await.unwrap();
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await
    .expect("no deadlock");
}

/// What a crash between the two writes of a rotation leaves (simulated by putting the old
/// file back as it was): the old session intact, and a copy under the new id that no caller
/// was told of, which is a session of its own until it expires or is ended. Rotating again
/// to another id works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_two_writes_of_a_rotation_leaves_the_old_session_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::builder(tmp.path())
        .cache_capacity(0)
        .open()
        .await
        .unwrap();
    let (old, new) = (SessionId::generate(), SessionId::generate());
    let v = store
        .set(&old, &owned(json!({"user": "ada"}), "ada"))
        .await
        .unwrap();
    let old_file = fs::read(store.path_of(&old)).unwrap();
    moved(&store, &old, &new, GRACE).await;
    fs::write(store.path_of(&old), &old_file).unwrap();
    let got = store.get(&old).await.unwrap().unwrap();
    assert!(!got.is_rotated());
    assert_eq!(got.version(), v);
    assert_eq!(store.len().await.unwrap(), 2, "the copy is a session");
    assert_eq!(
        store.rotate(&old, &new, GRACE).await.unwrap(),
        Rotation::Taken
    );
    let again = SessionId::generate();
    moved(&store, &old, &again, GRACE).await;
    assert!(store.get(&old).await.unwrap().unwrap().is_rotated());
    // The orphan copy goes with the owner's other sessions.
    assert_eq!(store.destroy_owner(&owner("ada"), None).await.unwrap(), 2);
}

/// Files written before lifetimes (with or without the first line) read with no absolute
/// expiry and as no rotated id, and can be rotated; a `moved_to` that is not a valid id
/// makes the file undecodable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_without_the_lifetime_fields_still_read_and_rotate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = FileStore::new(dir).await.unwrap();
    let expires = now_millis() + 60_000;
    let old = json!({"data": {"user": "ada"}, "expires_at": expires, "version": 7,
        "owner": "ada"});
    fs::write(
        dir.join("old.json"),
        serde_json::to_vec_pretty(&old).unwrap(),
    )
    .unwrap();
    let got = store.get(&id("old")).await.unwrap().unwrap();
    assert_eq!((got.version(), got.absolute_expiry_millis()), (7, None));
    assert!(!got.is_rotated());
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(moved(&store, &id("old"), &id("new"), GRACE).await, 8);
    assert!(store.get(&id("old")).await.unwrap().unwrap().is_rotated());
    assert_eq!(store.get(&id("new")).await.unwrap().unwrap().version(), 8);

    let bad = json!({"data": {}, "expires_at": expires, "version": 1, "moved_to": "../x"});
    fs::write(dir.join("bad.json"), bad.to_string()).unwrap();
    let err = store.get(&id("bad")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}");
    let err = store
        .rotate(&id("bad"), &id("other"), GRACE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}");
}

/// The lifetime checks of the conformance suite, on stores used directly (without a
/// wrapper), each in a directory of its own.
#[cfg(feature = "conformance")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifetime_conformance_checks_pass() {
    let tmp = Arc::new(tempfile::tempdir().unwrap());
    let names: Vec<&str> = session_stores::conformance::check_names()
        .filter(|name| {
            [
                "absolute",
                "rotate",
                "rotated",
                "later_writes_keep",
                "a_session_ends",
            ]
            .iter()
            .any(|part| name.contains(part))
        })
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for capacity in [10_000, 0] {
        for name in &names {
            let tmp = Arc::clone(&tmp);
            session_stores::conformance::run_check(name, move || {
                let dir = tmp.path().join(SessionId::generate().as_str());
                async move {
                    FileStore::builder(dir)
                        .cache_capacity(capacity)
                        .open()
                        .await
                        .unwrap()
                }
            })
            .await
            .unwrap_or_else(|failure| panic!("{failure:?}"));
        }
    }
}
