use super::*;
use std::fs;
use std::time::Duration;

use super::codec::{Stored, decode, id_of_file_name, is_temp_file_name, owner_key};
use super::locks::{LOCK_STRIPES, stripe_of};
use super::owners::OWNERS_DIR;
use std::sync::atomic::Ordering::SeqCst;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn session(value: &str) -> Session {
    let mut s = Session::new(Duration::from_secs(3600));
    s.insert("value", value).unwrap();
    s
}

fn on_disk(store: &FileStore, id: &SessionId) -> Stored {
    decode(id, &fs::read(store.path_of(id)).unwrap()).unwrap()
}

#[test]
fn a_failed_write_keeps_the_old_file_and_is_retried_not_skipped() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new(tmp.path()).await.unwrap();
        let id = SessionId::generate();
        let (a, b) = (session("a"), session("b"));
        let v0 = store.set(&id, &a).await.unwrap();

        store.inner.faults.failing_writes.store(1, SeqCst);
        let err = store.set(&id, &b).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Backend, "{err:?}");
        assert!(std::error::Error::source(&err).is_some(), "source kept");
        // The old session is intact, and no temporary file was left behind.
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.data(), a.data());
        assert_eq!(got.version(), v0);
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            2,
            "file + .locks"
        );

        // The retry really writes: the cache did not record the failed write.
        let writes = store.writes();
        assert_eq!(store.set(&id, &b).await.unwrap(), v0 + 1);
        assert_eq!(store.writes(), writes + 1);
        assert_eq!(store.skipped_writes(), 0);
        let stored = on_disk(&store, &id);
        assert_eq!(stored.data, *b.data());
        assert_eq!(stored.version, v0 + 1);
        // And now an identical save is skipped.
        assert_eq!(store.set(&id, &b).await.unwrap(), v0 + 1);
        assert_eq!(store.skipped_writes(), 1);
    });
}

#[test]
fn a_failed_touch_and_a_failed_version_write_leave_the_session() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new(tmp.path()).await.unwrap();
        let id = SessionId::generate();
        let a = session("a");
        let v0 = store.set(&id, &a).await.unwrap();
        store.inner.faults.failing_writes.store(2, SeqCst);
        let later = SystemTime::now() + Duration::from_secs(7200);
        assert!(store.touch(&id, later).await.is_err());
        assert!(store.set_if_version(&id, &session("b"), v0).await.is_err());
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.data(), a.data());
        assert_eq!(got.expires_at_millis(), a.expires_at_millis());
        assert_eq!(got.version(), v0);
        // Both retried for real.
        assert!(store.touch(&id, later).await.unwrap());
        assert_eq!(
            store.set_if_version(&id, &session("b"), v0).await.unwrap(),
            v0 + 1
        );
    });
}

#[test]
fn a_cache_entry_is_dropped_only_after_the_file_is_gone() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new(tmp.path()).await.unwrap();
        let id = SessionId::generate();
        let a = session("a");
        let v0 = store.set(&id, &a).await.unwrap();

        store.inner.faults.failing_removes.store(1, SeqCst);
        assert!(store.destroy(&id).await.is_err());
        assert!(
            store.path_of(&id).exists(),
            "the failed destroy kept the file"
        );
        assert!(store.inner.cache().lru.as_mut().unwrap().contains(&id));
        // The entry still describes the file on disk, so a skip is still right.
        assert_eq!(store.set(&id, &a).await.unwrap(), v0);
        assert_eq!(store.skipped_writes(), 1);

        store.destroy(&id).await.unwrap();
        assert!(!store.path_of(&id).exists());
        assert!(!store.inner.cache().lru.as_mut().unwrap().contains(&id));
        // A new incarnation, at a fresh version.
        let v1 = store.set(&id, &a).await.unwrap();
        assert_ne!(v1, v0);
        assert_eq!(on_disk(&store, &id).version, v1);
        assert_eq!(store.skipped_writes(), 1, "no skip once the file is gone");
    });
}

#[test]
fn the_cache_is_bounded_by_entries_and_bytes() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::builder(tmp.path())
            .cache_capacity(2)
            .open()
            .await
            .unwrap();
        let ids: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
        let x = session("x");
        let mut versions = Vec::new();
        for id in &ids {
            versions.push(store.set(id, &x).await.unwrap());
        }
        assert_eq!(store.inner.cache().lru.as_ref().unwrap().len(), 2);
        // The least recently written id was evicted: saving it writes again.
        assert_eq!(store.set(&ids[0], &x).await.unwrap(), versions[0] + 1);
        assert_eq!(store.skipped_writes(), 0);
        assert_eq!(store.set(&ids[2], &x).await.unwrap(), versions[2]);
        assert_eq!(store.skipped_writes(), 1);

        let small = FileStore::builder(tmp.path().join("small"))
            .cache_max_bytes(180)
            .open()
            .await
            .unwrap();
        for id in &ids {
            small.set(id, &session("y")).await.unwrap();
        }
        let (bytes, entries) = {
            let cache = small.inner.cache();
            (cache.bytes, cache.lru.as_ref().unwrap().len())
        };
        assert!(bytes <= 180, "{bytes} bytes cached");
        assert!((1..3).contains(&entries), "{entries} entries");
        small
            .set(&ids[0], &session(&"z".repeat(400)))
            .await
            .unwrap();
        let cache = small.inner.cache();
        assert!(
            !cache.lru.as_ref().unwrap().contains(&ids[0]),
            "too big to cache"
        );
        assert!(cache.bytes <= 180);
    });
}

#[test]
fn a_disabled_cache_never_skips_a_set() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::builder(tmp.path())
            .cache_capacity(0)
            .open()
            .await
            .unwrap();
        let id = SessionId::generate();
        let a = session("a");
        let v0 = store.set(&id, &a).await.unwrap();
        assert_eq!(store.set(&id, &a).await.unwrap(), v0 + 1);
        assert_eq!((store.writes(), store.skipped_writes()), (2, 0));
    });
}

#[test]
fn owner_keys_are_base64url_without_padding() {
    let key = |text: &str| owner_key(&Owner::new(text).unwrap());
    assert_eq!(key("a"), "YQ");
    assert_eq!(key("ab"), "YWI");
    assert_eq!(key("ada"), "YWRh");
    assert_eq!(key("user:42"), "dXNlcjo0Mg");
    // The URL-safe alphabet: `_` where the standard one has `/` (and `-` for `+`).
    assert_eq!(key("\u{7ff}\u{ffff}"), "37_vv78");
    assert_ne!(key("Ada"), key("ada"));
    let longest = key(&"é".repeat(64));
    assert_eq!(longest.len(), 171);
    assert!(
        longest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
}

#[test]
fn a_failed_write_for_a_new_owner_leaves_no_marker_and_keeps_the_old_one() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new(tmp.path()).await.unwrap();
        let id = SessionId::generate();
        let (ada, bob) = (Owner::new("ada").unwrap(), Owner::new("bob").unwrap());
        let marker = |owner: &Owner| {
            tmp.path()
                .join(OWNERS_DIR)
                .join(owner_key(owner))
                .join(id.as_str())
        };
        store
            .set(&id, &session("a").with_owner(Some(ada.clone())))
            .await
            .unwrap();
        store.inner.faults.failing_writes.store(1, SeqCst);
        let moved = session("a").with_owner(Some(bob.clone()));
        assert!(store.set(&id, &moved).await.is_err());
        assert!(marker(&ada).is_file(), "still ada's");
        assert!(!marker(&bob).exists(), "bob's dead marker went");
        assert_eq!(store.sessions_of(&ada, false).await.unwrap().len(), 1);
        // A failed write for the same owner keeps its marker.
        store.inner.faults.failing_writes.store(1, SeqCst);
        assert!(
            store
                .set(&id, &session("b").with_owner(Some(ada.clone())))
                .await
                .is_err()
        );
        assert!(marker(&ada).is_file());
        // A failed destroy keeps file and marker.
        store.inner.faults.failing_removes.store(1, SeqCst);
        assert!(store.destroy(&id).await.is_err());
        assert!(marker(&ada).is_file());
        store.destroy(&id).await.unwrap();
        assert!(!marker(&ada).exists());
        assert!(!tmp.path().join(OWNERS_DIR).join(owner_key(&ada)).exists());
    });
}

#[test]
fn stripes_are_stable_and_in_range() {
    let id = SessionId::new("abc").unwrap();
    // FNV-1a of "abc" is 0xe71fa2190541574b; it must never change, since processes
    // sharing a directory must agree on it.
    assert_eq!(stripe_of(&id), (0xe71f_a219_0541_574b_u64 % 128) as usize);
    for _ in 0..1000 {
        assert!(stripe_of(&SessionId::generate()) < LOCK_STRIPES);
    }
}

#[test]
fn file_names_map_back_to_ids() {
    use std::ffi::OsStr;
    assert_eq!(
        id_of_file_name(OsStr::new("abc.json")).unwrap().as_str(),
        "abc"
    );
    assert_eq!(
        id_of_file_name(OsStr::new("....json")).unwrap().as_str(),
        "..."
    );
    for name in [
        ".json",
        "..json",
        "...json",
        "a.txt",
        "a b.json",
        "a.json.partial",
        ".tmp-x.partial",
        ".locks",
    ] {
        assert!(id_of_file_name(OsStr::new(name)).is_none(), "{name}");
    }
    assert!(is_temp_file_name(OsStr::new(".tmp-abc.partial")));
    assert!(!is_temp_file_name(OsStr::new(".tmp-abc.json")));
}

/// A write decided on a live session whose new file takes longer to make than the session
/// has left (a loaded disk, a durable store's sync) does not replace the file once the
/// session has expired: an unlocked `get` that saw it expired never sees it live again. The
/// touch says it found no session, the compare-and-set conflicts, and `set` starts a new
/// incarnation instead of counting on from the expired one's version.
#[test]
fn a_write_slower_than_the_sessions_remaining_life_does_not_revive_it() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new(tmp.path()).await.unwrap();
        let short = || {
            let mut s = session("short");
            s.set_expires_at_millis(now_millis() + 150);
            s
        };
        let (touched, swapped, rewritten) = (
            SessionId::generate(),
            SessionId::generate(),
            SessionId::generate(),
        );
        store.set(&touched, &short()).await.unwrap();
        let v = store.set(&swapped, &short()).await.unwrap();
        let old = store.set(&rewritten, &short()).await.unwrap();
        store.inner.faults.write_delay_millis.store(300, SeqCst);

        let watcher = {
            let store = store.clone();
            let id = touched.clone();
            tokio::spawn(async move {
                // Expired while the touch makes its new file: seen gone, then never back.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut seen = Vec::new();
                for _ in 0..30 {
                    seen.push(store.get(&id).await.unwrap().is_some());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                seen
            })
        };
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert!(
            !store.touch(&touched, later).await.unwrap(),
            "touch revived it"
        );
        let seen = watcher.await.unwrap();
        assert!(
            seen.iter().all(|live| !live),
            "get saw it live again: {seen:?}"
        );
        assert!(store.get(&touched).await.unwrap().is_none());

        let err = store
            .set_if_version(&swapped, &session("new"), v)
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "{err:?}");
        assert!(store.get(&swapped).await.unwrap().is_none());

        let version = store.set(&rewritten, &session("new")).await.unwrap();
        assert_ne!(
            version,
            old + 1,
            "set counted on from an expired incarnation"
        );
        let got = store.get(&rewritten).await.unwrap().unwrap();
        assert_eq!(got.version(), version);
    });
}

/// `n` ids on `n` different lock stripes.
fn ids_on_distinct_stripes(n: usize) -> Vec<SessionId> {
    let mut ids: Vec<SessionId> = Vec::new();
    while ids.len() < n {
        let id = SessionId::generate();
        if ids.iter().all(|other| stripe_of(other) != stripe_of(&id)) {
            ids.push(id);
        }
    }
    ids
}

/// `delete_expired` skips a session whose locks are held, in this process (an operation's
/// stripe) or by another (a stopped process's `flock`), instead of waiting for it without a
/// bound or failing the whole sweep: the others are removed and counted, and the held ones
/// go in a later sweep.
#[test]
fn a_sweep_skips_sessions_whose_locks_are_held_and_counts_the_rest() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new(tmp.path()).await.unwrap();
        let ids = ids_on_distinct_stripes(5);
        for id in &ids {
            let mut s = session("expiring");
            s.set_expires_at_millis(now_millis() + 100);
            store.set(id, &s).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let stripe = store.inner.stripe(stripe_of(&ids[0])).lock_owned().await;
        let lock_file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(
                store
                    .inner
                    .lock_dir
                    .join(format!("{:03}.lock", stripe_of(&ids[1]))),
            )
            .unwrap();
        lock_file.lock().unwrap();
        let removed = tokio::time::timeout(Duration::from_secs(30), store.delete_expired())
            .await
            .expect("the sweep waited for a held lock without a bound")
            .unwrap();
        assert_eq!(removed, 3);
        drop(stripe);
        lock_file.unlock().unwrap();
        assert_eq!(store.delete_expired().await.unwrap(), 2);
    });
}

/// A locked operation whose job waited in the blocking pool's queue past its deadline (the
/// caller already has its `Timeout`) does not write when it finally runs.
#[test]
fn a_job_dequeued_after_its_deadline_does_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::builder(tmp.path())
            .operation_timeout(Duration::from_millis(200))
            .open()
            .await
            .unwrap();
        let id = SessionId::generate();
        store.set(&id, &session("old")).await.unwrap();
        // The one blocking thread is busy for 600 ms.
        let busy = tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(600)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let err = store.set(&id, &session("late")).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Timeout, "{err:?}");
        busy.await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.get::<String>("value").unwrap().as_deref(), Some("old"));
    });
}

/// A walk whose caller dropped it (here: a `clear` given up after 100 ms) stops at its next
/// entry instead of going on over the whole directory on the blocking pool.
#[test]
fn an_abandoned_walk_stops() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new(tmp.path()).await.unwrap();
        for _ in 0..100 {
            store
                .set(&SessionId::generate(), &session("kept"))
                .await
                .unwrap();
        }
        store.inner.faults.remove_delay_millis.store(20, SeqCst);
        let gave_up = tokio::time::timeout(Duration::from_millis(100), store.clear()).await;
        assert!(
            gave_up.is_err(),
            "clear of 100 slow removals finished in 100 ms"
        );
        // Long enough for the whole walk (2 s) had it gone on.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        store.inner.faults.remove_delay_millis.store(0, SeqCst);
        let left = store.len().await.unwrap();
        assert!(
            left >= 80,
            "the abandoned clear went on: {left} of 100 left"
        );
    });
}
