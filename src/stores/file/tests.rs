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
    decode(id, fs::read(store.path_of(id)).unwrap()).unwrap()
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
            .cache_max_bytes(600)
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
        assert!(bytes <= 600, "{bytes} bytes cached");
        assert!((1..3).contains(&entries), "{entries} entries");
        small
            .set(&ids[0], &session(&"z".repeat(800)))
            .await
            .unwrap();
        let cache = small.inner.cache();
        assert!(
            !cache.lru.as_ref().unwrap().contains(&ids[0]),
            "too big to cache"
        );
        assert!(cache.bytes <= 600);
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
        let (touched, swapped, rewritten, prolonged) = (
            SessionId::generate(),
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

        // The same data with a later expiry (a rewrite of the first line in place), decided
        // on while the session is live.
        store.inner.faults.write_delay_millis.store(0, SeqCst);
        let kept = short();
        let p = store.set(&prolonged, &kept).await.unwrap();
        store.inner.faults.write_delay_millis.store(300, SeqCst);
        let mut later_kept = kept.clone();
        later_kept.set_expires_at_millis(now_millis() + 3_600_000);
        let err = store
            .set_if_version(&prolonged, &later_kept, p)
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "{err:?}");
        assert!(store.get(&prolonged).await.unwrap().is_none());

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

// ---------------------------------------------------------------------------------------
// The first line: two expiry slots, rewritten in place

use super::codec::{Body, HEADER_LEN, Header, encode, next_header, winner_of};

fn inode(path: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap())
}

/// A file as `encode` writes it, and the same file after `n` in-place rewrites of its
/// expiry (each `+ 1000`), with the version `version + n`.
fn rewritten(n: u64) -> (Vec<u8>, Vec<u8>) {
    let id = SessionId::generate();
    let s = session("v");
    let first = encode(&id, Body::session(s.data(), None, None), 1_000_000, 7).unwrap();
    let mut file = first.clone();
    for i in 1..=n {
        let head = Header::try_from(&file[..HEADER_LEN]).unwrap();
        let winner = winner_of(&head).unwrap().unwrap();
        let next = next_header(&head, winner, 7 + i, 1_000_000 + 1000 * i as i64);
        file[..HEADER_LEN].copy_from_slice(&next);
    }
    (first, file)
}

#[test]
fn a_file_reads_with_the_winning_slots_expiry_and_version() {
    let id = SessionId::generate();
    for n in 0..4 {
        let (_, file) = rewritten(n);
        let stored = decode(&id, file.clone()).unwrap();
        assert_eq!(
            (stored.expires_at, stored.version),
            (1_000_000 + 1000 * n as i64, 7 + n)
        );
        assert_eq!(stored.data.get("value"), Some(&serde_json::json!("v")));
        // The plain columns say the same, for serde and earlier versions of the store.
        let plain: Session = serde_json::from_slice(&file).unwrap();
        assert_eq!(
            (plain.expires_at_millis(), plain.version()),
            (stored.expires_at, stored.version)
        );
    }
}

/// A rewrite of the first line cut short after any number of bytes (a crash; a reader
/// racing the write), or with any subset of its bytes written (a disk that writes sectors
/// in any order), reads as the session before it or after it, never as an error or as
/// anything else; the rewrite after that one still works.
#[test]
fn a_torn_first_line_reads_as_before_or_after_the_rewrite() {
    let id = SessionId::generate();
    for n in 0..3 {
        let (_, old) = rewritten(n);
        let (_, new) = rewritten(n + 1);
        let before = (1_000_000 + 1000 * n as i64, 7 + n);
        let after = (before.0 + 1000, before.1 + 1);
        let read = |bytes: Vec<u8>| {
            let stored = decode(&id, bytes).unwrap();
            (stored.expires_at, stored.version)
        };
        let mut seen_after = false;
        for cut in 0..=HEADER_LEN {
            let mut torn = old.clone();
            torn[..cut].copy_from_slice(&new[..cut]);
            let got = read(torn.clone());
            assert!(got == before || got == after, "cut {cut}: {got:?}");
            seen_after |= got == after;
            // The next rewrite, from whatever the torn file holds, reads as written.
            let head = Header::try_from(&torn[..HEADER_LEN]).unwrap();
            let winner = winner_of(&head).unwrap().unwrap();
            torn[..HEADER_LEN].copy_from_slice(&next_header(&head, winner, 99, 5_000_000));
            assert_eq!(read(torn), (5_000_000, 99), "cut {cut}, then a rewrite");
        }
        assert!(seen_after, "the whole rewrite reads as after");
        // Every byte from the old or the new line, in a thousand patterns.
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ n;
        for _ in 0..1000 {
            let mut torn = old.clone();
            for (i, byte) in torn[..HEADER_LEN].iter_mut().enumerate() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if state & 1 == 1 {
                    *byte = new[i];
                }
            }
            let got = read(torn);
            assert!(got == before || got == after, "{got:?}");
        }
    }
}

#[test]
fn a_first_line_with_both_slots_damaged_is_a_decode_error_and_other_files_read_as_before() {
    let id = SessionId::generate();
    let (_, mut file) = rewritten(1);
    let text = String::from_utf8(file.clone()).unwrap();
    let slots = text.find("\"slots\":[\"").unwrap() + 10;
    file[slots] ^= 1;
    file[slots + 62] ^= 1;
    let err = decode(&id, file).err().unwrap();
    assert_eq!(err.kind(), crate::ErrorKind::Decode, "{err:?}");
    // A file without the first line (an earlier version's, or edited by hand) reads by its
    // plain fields.
    let plain = br#"{"data": {"a": 1}, "expires_at": 123, "version": 4}"#.to_vec();
    let stored = decode(&id, plain).unwrap();
    assert_eq!((stored.expires_at, stored.version), (123, 4));
    assert!(winner_of(br#"{"expires_at": 1}"#).unwrap().is_none());
}

/// `touch` and a `set` or `set_if_version` that changes only the expiry rewrite the file's
/// first line in place (the same inode, no temporary file), count as writes, and leave the
/// cache describing the file, so an unchanged save after them still skips.
#[test]
fn expiry_only_writes_rewrite_the_first_line_in_place() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new(tmp.path()).await.unwrap();
        let id = SessionId::generate();
        let mut s = session("a");
        let v0 = store.set(&id, &s).await.unwrap();
        let path = store.path_of(&id);
        let ino = inode(&path);

        let later = s.expires_at() + Duration::from_secs(60);
        assert!(store.touch(&id, later).await.unwrap());
        assert_eq!(inode(&path), ino, "touched in place");
        assert_eq!(
            on_disk(&store, &id).expires_at,
            s.expires_at_millis() + 60_000
        );
        assert_eq!(on_disk(&store, &id).version, v0);
        assert_eq!((store.writes(), store.skipped_writes()), (2, 0));
        // The same expiry again: nothing written, a skip.
        assert!(store.touch(&id, later).await.unwrap());
        assert_eq!((store.writes(), store.skipped_writes()), (2, 1));

        s.set_expires_at_millis(s.expires_at_millis() + 120_000);
        assert_eq!(store.set(&id, &s).await.unwrap(), v0 + 1);
        assert_eq!(inode(&path), ino, "an expiry-only set, in place");
        assert_eq!(store.set(&id, &s).await.unwrap(), v0 + 1, "then skipped");
        assert_eq!((store.writes(), store.skipped_writes()), (3, 2));

        s.set_expires_at_millis(s.expires_at_millis() + 1_000);
        assert_eq!(store.set_if_version(&id, &s, v0 + 1).await.unwrap(), v0 + 2);
        assert_eq!(
            inode(&path),
            ino,
            "an expiry-only compare-and-set, in place"
        );
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            (got.version(), got.expires_at_millis()),
            (v0 + 2, s.expires_at_millis())
        );

        // Other data: a whole new file.
        s.insert("value", "b").unwrap();
        assert_eq!(store.set(&id, &s).await.unwrap(), v0 + 3);
        assert_ne!(inode(&path), ino);
        // No temporary file was left by any of it.
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    });
}

/// A file this store did not write (no cache entry: another process's, or one written
/// before a restart) is decoded before it is touched in place; a file of an earlier
/// version (no first line) is rewritten whole, in the new format, and then touched in
/// place; a file that does not decode is not touched.
#[test]
fn a_touch_of_a_file_not_in_the_cache_decodes_it_first() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let writer = FileStore::new(tmp.path()).await.unwrap();
        let store = FileStore::new(tmp.path()).await.unwrap();
        let id = SessionId::generate();
        let s = session("a");
        writer.set(&id, &s).await.unwrap();
        let path = store.path_of(&id);
        let ino = inode(&path);
        let later = s.expires_at() + Duration::from_secs(60);
        assert!(store.touch(&id, later).await.unwrap());
        assert_eq!(inode(&path), ino);
        assert_eq!(on_disk(&store, &id).expires_at, s.expires_at_millis() + 60_000);

        let old = SessionId::generate();
        let text = serde_json::json!({"data": {"x": 1}, "expires_at": s.expires_at_millis(), "version": 5});
        fs::write(store.path_of(&old), text.to_string()).unwrap();
        assert!(store.touch(&old, later).await.unwrap());
        let bytes = fs::read(store.path_of(&old)).unwrap();
        assert!(winner_of(&bytes).unwrap().is_some(), "rewritten with a first line");
        let ino = inode(&store.path_of(&old));
        assert!(store.touch(&old, later + Duration::from_secs(1)).await.unwrap());
        assert_eq!(inode(&store.path_of(&old)), ino);
        assert_eq!(on_disk(&store, &old).version, 5);

        // The body broken behind a whole first line: the touch fails, and writes nothing.
        let (_, mut file) = rewritten(0);
        let len = file.len();
        file[len - 3] = b'!';
        let bad = SessionId::generate();
        fs::write(store.path_of(&bad), &file).unwrap();
        let err = store.touch(&bad, later).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Decode, "{err:?}");
        assert_eq!(fs::read(store.path_of(&bad)).unwrap(), file);
    });
}

/// The first line the store's docs show is the one a write and then a touch make.
#[test]
fn the_first_line_in_the_docs_is_the_one_written() {
    let id = SessionId::generate();
    let file = encode(
        &id,
        Body::session(&serde_json::Map::new(), None, None),
        1_767_225_000_000,
        3,
    )
    .unwrap();
    let head = Header::try_from(&file[..HEADER_LEN]).unwrap();
    let next = next_header(
        &head,
        winner_of(&head).unwrap().unwrap(),
        3,
        1_767_225_600_000,
    );
    let line = std::str::from_utf8(&next).unwrap();
    assert!(include_str!("docs.md").contains(line), "{line}");
    assert_eq!(HEADER_LEN, 200, "as the docs say");
}

#[test]
fn with_in_place_writes_off_every_write_is_a_whole_file() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::builder(tmp.path())
            .in_place_writes(false)
            .open()
            .await
            .unwrap();
        let id = SessionId::generate();
        let mut s = session("a");
        let v0 = store.set(&id, &s).await.unwrap();
        let path = store.path_of(&id);
        let ino = inode(&path);
        assert!(
            store
                .touch(&id, s.expires_at() + Duration::from_secs(60))
                .await
                .unwrap()
        );
        let touched = inode(&path);
        assert_ne!(touched, ino, "a new file");
        s.set_expires_at_millis(s.expires_at_millis() + 120_000);
        assert_eq!(store.set(&id, &s).await.unwrap(), v0 + 1);
        assert_ne!(inode(&path), touched, "a new file");
        assert_eq!(on_disk(&store, &id).expires_at, s.expires_at_millis());
    });
}

/// A write in place never goes through a symbolic link or to a file with a second name (a
/// hard-link snapshot): the link is replaced by a new file, as every write did before, and
/// what the link pointed at, or the other name, is left as it was.
#[test]
fn a_link_or_a_second_name_is_never_written_through() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sessions");
        let elsewhere = tmp.path().join("elsewhere");
        let store = FileStore::new(&dir).await.unwrap();
        let other = FileStore::new(&elsewhere).await.unwrap();
        let s = session("a");
        let later = s.expires_at() + Duration::from_secs(60);

        let linked = SessionId::generate();
        other.set(&linked, &s).await.unwrap();
        let target = other.path_of(&linked);
        let before = fs::read(&target).unwrap();
        std::os::unix::fs::symlink(&target, store.path_of(&linked)).unwrap();
        assert!(store.touch(&linked, later).await.unwrap());
        assert_eq!(
            fs::read(&target).unwrap(),
            before,
            "the link's target is unchanged"
        );
        let meta = fs::symlink_metadata(store.path_of(&linked)).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the link was replaced by a file"
        );
        assert_eq!(
            on_disk(&store, &linked).expires_at,
            s.expires_at_millis() + 60_000
        );

        let snapshot = SessionId::generate();
        store.set(&snapshot, &s).await.unwrap();
        let copy = tmp.path().join("snapshot.json");
        fs::hard_link(store.path_of(&snapshot), &copy).unwrap();
        let before = fs::read(&copy).unwrap();
        assert!(store.touch(&snapshot, later).await.unwrap());
        assert_eq!(
            fs::read(&copy).unwrap(),
            before,
            "the other name is unchanged"
        );
        assert_eq!(
            on_disk(&store, &snapshot).expires_at,
            s.expires_at_millis() + 60_000
        );
    });
}

/// A first line whose winning slot is at the largest `seq` (only a hand-made file holds
/// one) has no next slot: the touch writes a whole new file, and it reads as touched.
#[test]
fn a_winner_at_the_largest_seq_is_rewritten_whole() {
    use super::codec::{Slot, slot_text};
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new(tmp.path()).await.unwrap();
        let id = SessionId::generate();
        let s = session("a");
        let mut file = encode(
            &id,
            Body::session(s.data(), None, None),
            s.expires_at_millis(),
            5,
        )
        .unwrap();
        let at = String::from_utf8(file.clone())
            .unwrap()
            .find("\"slots\":[\"")
            .unwrap()
            + 10;
        let last = slot_text(Slot {
            seq: u64::MAX,
            version: 5,
            expires_at: s.expires_at_millis(),
        });
        file[at..at + last.len()].copy_from_slice(&last);
        fs::write(store.path_of(&id), &file).unwrap();
        assert_eq!(on_disk(&store, &id).version, 5);
        let later = s.expires_at() + Duration::from_secs(60);
        assert!(store.touch(&id, later).await.unwrap());
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            (got.expires_at_millis(), got.version()),
            (s.expires_at_millis() + 60_000, 5)
        );
    });
}

/// With `durable`, a touch is made in place only on a file whose `rename` this store made
/// durable (it wrote the file); another writer's file is rewritten whole (and the
/// directory synced), and touched in place after that.
#[test]
fn a_durable_store_touches_in_place_only_files_it_made_durable() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let writer = FileStore::new(tmp.path()).await.unwrap();
        let store = FileStore::builder(tmp.path())
            .durable(true)
            .open()
            .await
            .unwrap();
        let id = SessionId::generate();
        let s = session("a");
        writer.set(&id, &s).await.unwrap();
        let path = store.path_of(&id);
        let ino = inode(&path);
        assert!(
            store
                .touch(&id, s.expires_at() + Duration::from_secs(60))
                .await
                .unwrap()
        );
        let rewritten = inode(&path);
        assert_ne!(rewritten, ino, "another writer's file: rewritten whole");
        assert!(
            store
                .touch(&id, s.expires_at() + Duration::from_secs(120))
                .await
                .unwrap()
        );
        assert_eq!(inode(&path), rewritten, "its own: in place");
        assert_eq!(
            on_disk(&store, &id).expires_at,
            s.expires_at_millis() + 120_000
        );
    });
}

/// A touch in place of an owned session's file that this store did not write makes the
/// owner's marker again if it went missing, as a whole-file write does.
#[test]
fn a_touch_in_place_makes_a_missing_owner_marker_again() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let writer = FileStore::new(tmp.path()).await.unwrap();
        let store = FileStore::new(tmp.path()).await.unwrap();
        let id = SessionId::generate();
        let owner = crate::Owner::new("user:1").unwrap();
        let s = session("a").with_owner(Some(owner.clone()));
        writer.set(&id, &s).await.unwrap();
        let marker = tmp
            .path()
            .join(OWNERS_DIR)
            .join(owner_key(&owner))
            .join(id.as_str());
        fs::remove_file(&marker).unwrap();
        let ino = inode(&store.path_of(&id));
        assert!(
            store
                .touch(&id, s.expires_at() + Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert_eq!(inode(&store.path_of(&id)), ino, "in place");
        assert!(marker.exists(), "the marker is back");
        assert_eq!(store.sessions_of(&owner, false).await.unwrap().len(), 1);
    });
}

/// A file shorter than a first line (or a name that is no regular file) is not rewritten in
/// place: left to the whole-file write.
#[test]
fn only_a_regular_file_with_a_whole_first_line_is_opened_for_a_rewrite() {
    use super::codec::open_header;
    let tmp = tempfile::tempdir().unwrap();
    let short = tmp.path().join("short.json");
    fs::write(&short, vec![b' '; HEADER_LEN - 1]).unwrap();
    assert!(open_header(&short).unwrap().is_none());
    let whole = tmp.path().join("whole.json");
    fs::write(&whole, vec![b' '; HEADER_LEN]).unwrap();
    assert!(open_header(&whole).unwrap().is_some());
    assert!(
        open_header(&tmp.path().join("missing.json"))
            .unwrap()
            .is_none()
    );
    assert!(open_header(tmp.path()).unwrap().is_none());
}

/// The lifetime fields round-trip through the format and are left out when there are none,
/// so a file without them is what earlier versions wrote, and decodes with none.
#[test]
fn lifetime_fields_round_trip_and_are_optional() {
    let id = SessionId::generate();
    let new = SessionId::generate();
    let s = session("x");
    let plain = encode(&id, Body::session(s.data(), None, None), 1_000, 3).unwrap();
    let text = String::from_utf8(plain.clone()).unwrap();
    assert!(
        !text.contains("absolute_expiry") && !text.contains("moved_to"),
        "{text}"
    );
    let stored = decode(&id, plain).unwrap();
    assert_eq!((stored.absolute_expiry, stored.moved_to), (None, None));

    let rotated = Body {
        moved_to: Some(&new),
        ..Body::session(s.data(), None, Some(2_000))
    };
    let bytes = encode(&id, rotated, 1_000, 3).unwrap();
    let stored = decode(&id, bytes).unwrap();
    assert_eq!(stored.absolute_expiry, Some(2_000));
    assert_eq!(stored.moved_to.as_ref(), Some(&new));
    let session = stored.into_session();
    assert!(session.is_rotated());
    assert_eq!(session.absolute_expiry_millis(), Some(2_000));

    // `moved_to` must be a valid id; null is none.
    let bad = br#"{"data":{},"expires_at":1,"version":1,"moved_to":"a/b"}"#.to_vec();
    assert_eq!(
        decode(&id, bad).err().unwrap().kind(),
        crate::ErrorKind::Decode
    );
    let null = br#"{"data":{},"expires_at":1,"version":1,"moved_to":null}"#.to_vec();
    assert_eq!(decode(&id, null).unwrap().moved_to, None);
}
