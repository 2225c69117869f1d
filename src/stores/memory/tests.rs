use super::*;
use std::sync::Arc;
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn session(bytes: usize) -> Session {
    let mut s = Session::new(Duration::from_secs(60));
    s.insert("blob", "x".repeat(bytes)).unwrap();
    s
}

#[test]
fn evicts_least_recently_used() {
    rt().block_on(async {
        let store = MemoryStore::new(3);
        let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
        for id in &ids[..3] {
            store.set(id, &session(1)).await.unwrap();
        }
        // Use the oldest, so the second one becomes least recently used.
        assert!(store.get(&ids[0]).await.unwrap().is_some());
        store.set(&ids[3], &session(1)).await.unwrap();
        assert!(store.get(&ids[1]).await.unwrap().is_none(), "LRU evicted");
        for i in [0, 2, 3] {
            assert!(store.get(&ids[i]).await.unwrap().is_some(), "{i} kept");
        }
        assert_eq!(store.len().await.unwrap(), 3);
        assert_eq!(store.evictions(), 1);
    });
}

#[test]
fn byte_budget_evicts_and_refuses_oversized() {
    rt().block_on(async {
        let store = MemoryStore::builder()
            .capacity(1000)
            .max_bytes(10_000)
            .build();
        let ids: Vec<SessionId> = (0..5).map(|_| SessionId::generate()).collect();
        for id in &ids {
            store.set(id, &session(3000)).await.unwrap();
        }
        assert!(store.estimated_bytes() <= 10_000);
        assert_eq!(store.len().await.unwrap(), 3);
        assert!(store.get(&ids[0]).await.unwrap().is_none());
        assert!(store.get(&ids[4]).await.unwrap().is_some());

        let big = SessionId::generate();
        let err = store.set(&big, &session(20_000)).await.unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { limit: 10_000, .. }),
            "{err:?}"
        );
        assert!(store.get(&big).await.unwrap().is_none());
        // The refused write left the previous session under that id intact.
        store.set(&ids[4], &session(20_000)).await.unwrap_err();
        assert!(store.get(&ids[4]).await.unwrap().is_some());
    });
}

#[test]
fn bytes_are_accounted_on_replace_destroy_and_clear() {
    rt().block_on(async {
        let store = MemoryStore::builder()
            .capacity(10)
            .max_bytes(1 << 20)
            .build();
        let id = SessionId::generate();
        store.set(&id, &session(1000)).await.unwrap();
        let one = store.estimated_bytes();
        store.set(&id, &session(1000)).await.unwrap();
        assert_eq!(store.estimated_bytes(), one);
        store.destroy(&id).await.unwrap();
        assert_eq!(store.estimated_bytes(), 0);
        store.set(&id, &session(1000)).await.unwrap();
        store.clear().await.unwrap();
        assert_eq!(store.estimated_bytes(), 0);
    });
}

#[test]
fn sharded_store_counts_across_shards() {
    rt().block_on(async {
        let store = MemoryStore::new(100_000);
        assert_eq!(store.shards.len(), SHARDS);
        for _ in 0..1000 {
            store
                .set(&SessionId::generate(), &session(1))
                .await
                .unwrap();
        }
        assert_eq!(store.len().await.unwrap(), 1000);
        assert_eq!(store.evictions(), 0);
        // The shard hash spreads ids: with 1000 ids over 16 shards (62.5 expected per
        // shard), every shard holds some and none holds more than twice its share.
        for shard in store.shards.iter() {
            let n = lock(shard).lru.len();
            assert!((1..=125).contains(&n), "unbalanced shard with {n} sessions");
        }
    });
}

#[test]
fn a_huge_capacity_reserves_nothing_and_the_byte_budget_bounds_it() {
    rt().block_on(async {
        let store = MemoryStore::builder()
            .capacity(usize::MAX)
            .max_bytes(256 << 20)
            .build();
        let fresh = MemoryStore::builder().capacity(usize::MAX).build();
        for _ in 0..100 {
            store
                .set(&SessionId::generate(), &session(10))
                .await
                .unwrap();
            fresh
                .set(&SessionId::generate(), &session(10))
                .await
                .unwrap();
        }
        assert_eq!(store.len().await.unwrap(), 100);
        assert_eq!(fresh.len().await.unwrap(), 100);
        assert_eq!(store.evictions(), 0);
    });
}

#[test]
fn the_capacity_is_the_stores_not_a_shards() {
    rt().block_on(async {
        for shards in [1, 4, 16] {
            let store = MemoryStore::builder().capacity(1024).shards(shards).build();
            let ids: Vec<SessionId> = (0..1024).map(|_| SessionId::generate()).collect();
            for id in &ids {
                store.set(id, &session(1)).await.unwrap();
            }
            assert_eq!(store.evictions(), 0, "{shards} shards evicted before full");
            assert_eq!(store.len().await.unwrap(), 1024);
            // One more: exactly one eviction, and the store holds its capacity.
            store
                .set(&SessionId::generate(), &session(1))
                .await
                .unwrap();
            assert_eq!(store.evictions(), 1, "{shards} shards");
            assert_eq!(store.len().await.unwrap(), 1024, "{shards} shards");
            assert_eq!(store.held.load(Ordering::Relaxed), 1024);
        }
    });
}

#[test]
fn expired_sessions_are_dropped_before_live_ones_are_evicted() {
    rt().block_on(async {
        for shards in [1, 16] {
            let store = MemoryStore::builder().capacity(1024).shards(shards).build();
            let mut short = session(1);
            short.set_expires_at_millis(now_millis() + 100);
            for _ in 0..512 {
                store.set(&SessionId::generate(), &short).await.unwrap();
            }
            let live: Vec<SessionId> = (0..512).map(|_| SessionId::generate()).collect();
            for id in &live {
                store.set(id, &session(1)).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let newer: Vec<SessionId> = (0..512).map(|_| SessionId::generate()).collect();
            for id in &newer {
                store.set(id, &session(1)).await.unwrap();
            }
            assert_eq!(
                store.evictions(),
                0,
                "{shards} shards evicted a live session"
            );
            for id in live.iter().chain(&newer) {
                assert!(store.get(id).await.unwrap().is_some(), "{shards} shards");
            }
            assert_eq!(store.len().await.unwrap(), 1024);
        }
    });
}

#[test]
fn counts_stay_true_through_clear_destroy_and_delete_expired() {
    rt().block_on(async {
        let store = MemoryStore::builder().capacity(64).shards(4).build();
        let ids: Vec<SessionId> = (0..64).map(|_| SessionId::generate()).collect();
        for id in &ids {
            store.set(id, &session(1)).await.unwrap();
        }
        store.destroy(&ids[0]).await.unwrap();
        assert_eq!(store.held.load(Ordering::Relaxed), 63);
        let mut short = session(1);
        short.set_expires_at_millis(now_millis() + 50);
        store.set(&ids[1], &short).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.delete_expired().await.unwrap(), 1);
        assert_eq!(store.held.load(Ordering::Relaxed), 62);
        store.clear().await.unwrap();
        assert_eq!(store.held.load(Ordering::Relaxed), 0);
        for id in &ids {
            store.set(id, &session(1)).await.unwrap();
        }
        assert_eq!(store.evictions(), 0);
    });
}

#[test]
fn accessors_and_debug_say_what_was_built() {
    let store = MemoryStore::builder()
        .capacity(1234)
        .max_bytes(1 << 20)
        .build();
    assert_eq!(store.capacity(), 1234);
    assert_eq!(store.shards.len(), SHARDS);
    let debug = format!("{store:?}");
    assert!(
        debug.contains("capacity: 1234") && debug.contains("shards: 16"),
        "{debug}"
    );
    // The one-shard threshold: under 1024 one shard, from 1024 on, 16.
    assert_eq!(MemoryStore::new(1023).shards.len(), 1);
    assert_eq!(MemoryStore::new(1024).shards.len(), SHARDS);
}

#[test]
fn the_size_estimate_counts_the_id_keys_strings_and_overheads() {
    let id = SessionId::new("abcd").unwrap();
    let mut s = Session::new(Duration::from_secs(60));
    s.insert("k", "vvv").unwrap(); // 1 + (32 + 3)
    s.insert("o", serde_json::json!({"ab": [1, "xy"]})).unwrap();
    // "o": 1 + (32 + ("ab": 2 + (32 + (32 + 0) + (32 + 2))))
    let want = 128 + 4 + (1 + 32 + 3) + (1 + 32 + (2 + 32 + 32 + 32 + 2));
    assert_eq!(estimate_size(&id, &s), want);
}

#[test]
fn the_byte_budget_is_split_over_the_shards_and_holds_at_its_exact_limit() {
    rt().block_on(async {
        // A sharded store keeps its total under the budget.
        let store = MemoryStore::builder()
            .capacity(10_000)
            .shards(4)
            .max_bytes(40_000)
            .build();
        for _ in 0..100 {
            store
                .set(&SessionId::generate(), &session(3000))
                .await
                .unwrap();
        }
        assert!(store.estimated_bytes() > 0);
        assert!(
            store.estimated_bytes() <= 40_000,
            "{}",
            store.estimated_bytes()
        );
        // A session whose estimate is exactly the budget is kept, and two that fill it
        // exactly are both kept.
        let id = SessionId::generate();
        let one = session(100);
        let size = estimate_size(&id, &one);
        let exact = MemoryStore::builder().capacity(10).max_bytes(size).build();
        exact.set(&id, &one).await.unwrap();
        assert_eq!(exact.estimated_bytes(), size);
        let other = SessionId::new("x".repeat(id.as_str().len())).unwrap();
        let two = MemoryStore::builder()
            .capacity(10)
            .max_bytes(2 * size)
            .build();
        two.set(&id, &one).await.unwrap();
        two.set(&other, &one).await.unwrap();
        assert_eq!(two.len().await.unwrap(), 2);
        assert_eq!(two.evictions(), 0);
        assert_eq!(two.estimated_bytes(), 2 * size);
    });
}

#[test]
fn evictions_keep_the_byte_count_true() {
    rt().block_on(async {
        let store = MemoryStore::builder()
            .capacity(2)
            .max_bytes(1 << 30)
            .build();
        let ids: Vec<SessionId> = (0..5).map(|_| SessionId::generate()).collect();
        for id in &ids {
            store.set(id, &session(500)).await.unwrap();
        }
        let kept: usize = ids[3..]
            .iter()
            .map(|id| estimate_size(id, &session(500)))
            .sum();
        assert_eq!(store.evictions(), 3);
        assert_eq!(store.estimated_bytes(), kept);
    });
}

/// Ids of `store` that fall in shard `index` (fails, rather than looping, if the shard
/// hash never picks that shard).
fn ids_in_shard(store: &MemoryStore, index: usize, n: usize) -> Vec<SessionId> {
    let ids: Vec<SessionId> = std::iter::repeat_with(SessionId::generate)
        .take(100_000)
        .filter(|id| store.shard_index(id) == index)
        .take(n)
        .collect();
    assert_eq!(ids.len(), n, "the shard hash never picks shard {index}");
    ids
}

#[test]
fn a_write_into_an_empty_shard_of_a_full_store_takes_room_from_another_shard() {
    rt().block_on(async {
        for (shards, empty) in [(2, 1), (4, 0), (4, 3)] {
            let store = MemoryStore::builder()
                .capacity(4)
                .shards(shards)
                .max_bytes(1 << 30)
                .build();
            let full = (empty + 1) % shards;
            let old = ids_in_shard(&store, full, 4);
            for id in &old {
                store.set(id, &session(10)).await.unwrap();
            }
            let new = ids_in_shard(&store, empty, 1).remove(0);
            store.set(&new, &session(10)).await.unwrap();
            assert!(
                store.get(&new).await.unwrap().is_some(),
                "{shards} shards: the new session was evicted at once"
            );
            assert!(
                store.get(&old[0]).await.unwrap().is_none(),
                "{shards} shards"
            );
            assert_eq!(store.len().await.unwrap(), 4);
            assert_eq!(store.evictions(), 1);
            assert_eq!(
                store.estimated_bytes(),
                old[1..]
                    .iter()
                    .chain([&new])
                    .map(|id| estimate_size(id, &session(10)))
                    .sum::<usize>()
            );
        }
    });
}

#[test]
fn expired_sessions_in_another_shard_make_room_before_a_live_one_is_evicted() {
    rt().block_on(async {
        let store = MemoryStore::builder().capacity(4).shards(2).build();
        let mut short = session(1);
        short.set_expires_at_millis(now_millis() + 50);
        for id in ids_in_shard(&store, 1, 2) {
            store.set(&id, &short).await.unwrap();
        }
        let live = ids_in_shard(&store, 0, 3);
        for id in &live[..2] {
            store.set(id, &session(1)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Shard 0 holds only live sessions; the expired ones are all in shard 1.
        store.set(&live[2], &session(1)).await.unwrap();
        store
            .set(&SessionId::generate(), &session(1))
            .await
            .unwrap();
        assert_eq!(
            store.evictions(),
            0,
            "a live session went while expired ones stayed"
        );
        for id in &live {
            assert!(store.get(id).await.unwrap().is_some());
        }
    });
}

#[test]
fn a_byte_budget_drops_expired_sessions_before_evicting() {
    rt().block_on(async {
        let id = SessionId::generate();
        let size = estimate_size(&id, &session(1000));
        let store = MemoryStore::builder()
            .capacity(100)
            .max_bytes(3 * size + size / 2)
            .build();
        let mut short = session(1000);
        short.set_expires_at_millis(now_millis() + 50);
        store.set(&SessionId::generate(), &short).await.unwrap();
        store.set(&SessionId::generate(), &short).await.unwrap();
        store.set(&id, &session(1000)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        store
            .set(&SessionId::generate(), &session(1000))
            .await
            .unwrap();
        assert_eq!(
            store.evictions(),
            0,
            "the budget evicted instead of dropping expired ones"
        );
        assert!(store.get(&id).await.unwrap().is_some());
    });
}

/// A cursor this store never made is refused, including one naming the shard just past the
/// last (which a scan would otherwise read as "the end", silently returning nothing).
#[test]
fn cursors_of_shards_out_of_range_are_refused() {
    rt().block_on(async {
        let store = MemoryStore::builder().capacity(4096).shards(16).build();
        for text in [
            format!("{CURSOR_TAG}:16:"),
            format!("{CURSOR_TAG}:17:"),
            "m1:x:".to_string(),
        ] {
            let err = store
                .scan(Some(&ScanCursor::new(text.clone())), 10)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{text}");
        }
        let last = store
            .scan(Some(&ScanCursor::new(format!("{CURSOR_TAG}:15:"))), 10)
            .await
            .unwrap();
        assert!(last.sessions.is_empty() && last.next.is_none());
    });
}

/// Runs `op` on a thread of its own while this thread holds the store's only shard, until
/// `hold` has passed; its result.
fn behind_the_lock<T: Send + 'static>(
    store: &Arc<MemoryStore>,
    hold: Duration,
    op: impl FnOnce(Arc<MemoryStore>) -> T + Send + 'static,
) -> T {
    let guard = lock(&store.shards[0]);
    let store = Arc::clone(store);
    let waiting = std::thread::spawn(move || op(store));
    std::thread::sleep(hold);
    drop(guard);
    waiting.join().unwrap()
}

/// A write or a touch that waited for the shard decides by the clock it reads once it holds
/// it: a session that expired meanwhile is not revived by `touch`, and `set` over it starts
/// a new incarnation. Before, the clock was read before the wait (a long `len` or `scan`
/// holding the shard), so `touch` brought back a session that `get` had already found
/// expired, and `set` continued its version.
#[test]
fn decisions_use_the_clock_read_after_waiting_for_the_shard() {
    let store = Arc::new(MemoryStore::builder().capacity(100).shards(1).build());
    let id = SessionId::generate();
    let short = |ms: i64| {
        let mut s = session(10);
        s.set_expires_at_millis(now_millis() + ms);
        s
    };
    let first = rt().block_on(store.set(&id, &short(60))).unwrap();
    let touched = behind_the_lock(&store, Duration::from_millis(200), {
        let id = id.clone();
        move |store| rt().block_on(store.touch(&id, SystemTime::now() + Duration::from_secs(3600)))
    })
    .unwrap();
    assert!(
        !touched,
        "touch revived a session that expired while it waited"
    );
    assert!(rt().block_on(store.get(&id)).unwrap().is_none());

    let again = rt().block_on(store.set(&id, &short(60))).unwrap();
    let version = behind_the_lock(&store, Duration::from_millis(200), {
        let id = id.clone();
        move |store| rt().block_on(store.set(&id, &session(10)))
    })
    .unwrap();
    assert_ne!(
        version,
        again + 1,
        "a set continued the version of a session that expired while it waited"
    );
    assert_ne!(version, first);

    // A write whose own expiry passes while it waits stores nothing.
    let other = SessionId::generate();
    let written = behind_the_lock(&store, Duration::from_millis(200), {
        let other = other.clone();
        move |store| rt().block_on(store.set(&other, &short(60)))
    })
    .unwrap();
    assert_eq!(written, 0);
    assert!(rt().block_on(store.get(&other)).unwrap().is_none());
}
