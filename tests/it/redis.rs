//! Behaviour of [`RedisStore`] beyond the conformance suite, against real servers: the key
//! layout and Redis-side expiry, unreadable values, prefix isolation, cluster-wide `len` and
//! `clear`, timeouts, and recovery from a Redis restart.
//!
//! Reads `SESSION_STORES_REDIS_URL` (default `redis://127.0.0.1:6379`) and
//! `SESSION_STORES_REDIS_CLUSTER_URLS`; a missing server is a loud skip locally and a failure
//! in CI. The restart test starts its own `redis-server` on a free port.
#![cfg(feature = "redis")]

use crate::support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use deadpool_redis::redis::{self, AsyncCommands};
use serde_json::json;
use session_stores::{
    ErrorKind, FRESH_VERSION_SPAN, MAX_VERSION, Owner, RedisStore, Session, SessionId,
    SessionStore, now_millis,
};

/// Whether `version` is one a new incarnation can start at.
fn is_fresh(version: u64) -> bool {
    (1..=FRESH_VERSION_SPAN).contains(&version)
}

const URL_VAR: &str = "SESSION_STORES_REDIS_URL";
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
const CLUSTER_VAR: &str = "SESSION_STORES_REDIS_CLUSTER_URLS";

fn url() -> Option<String> {
    support::service_url(URL_VAR, DEFAULT_URL, 6379)
}

async fn store(url: &str) -> RedisStore {
    RedisStore::builder(url)
        .key_prefix(support::unique_name("sst:test:"))
        .connect()
        .await
        .expect("connect to the test server")
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a raw connection")
}

fn session(data: serde_json::Value, ttl: Duration) -> Session {
    let mut session = Session::new(ttl);
    if let serde_json::Value::Object(map) = data {
        session.replace_data(map);
    }
    session
}

const HOUR: Duration = Duration::from_secs(3600);

/// The test binary's allocator: the system one, counting the live heap bytes of each thread,
/// so that a test on a current-thread runtime (where the store, its connection driver and
/// the test all run on one thread) can measure the peak memory of one store operation.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static LIVE: Cell<i64> = const { Cell::new(0) };
        static PEAK: Cell<i64> = const { Cell::new(0) };
    }

    fn add(bytes: i64) {
        // `try_with`: the thread-locals may already be gone while a thread exits.
        let _ = LIVE.try_with(|live| {
            let now = live.get() + bytes;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    fn size(n: usize) -> i64 {
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    // SAFETY: every method forwards to `System` with the same arguments; the bookkeeping
    // only touches const-initialised thread-locals, which never allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let ptr = unsafe { System.alloc(layout) };
            if !ptr.is_null() {
                add(size(layout.size()));
            }
            ptr
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let ptr = unsafe { System.alloc_zeroed(layout) };
            if !ptr.is_null() {
                add(size(layout.size()));
            }
            ptr
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            add(-size(layout.size()));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let new = unsafe { System.realloc(ptr, layout, new_size) };
            if !new.is_null() {
                add(size(new_size) - size(layout.size()));
            }
            new
        }
    }

    /// Starts a measurement on this thread: the current live heap, the base of [`peak_above`].
    pub fn mark() -> i64 {
        let live = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(live));
        live
    }

    /// How far this thread's live heap rose above `base` since [`mark`] returned it.
    pub fn peak_above(base: i64) -> i64 {
        PEAK.with(Cell::get) - base
    }
}

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

#[tokio::test]
async fn key_layout_value_format_and_redis_expiry() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let id = SessionId::generate();
    let s = session(json!({"user": "ada"}), HOUR);
    let v0 = store.set(&id, &s).await.unwrap();
    assert!(is_fresh(v0), "{v0}");
    assert_eq!(store.set(&id, &s).await.unwrap(), v0 + 1);

    let key = store.key_for(&id);
    assert_eq!(key, format!("{}{}", store.key_prefix(), id.as_str()));
    let value: String = raw.get(&key).await.unwrap();
    assert_eq!(
        value,
        format!("{}:{}:{{\"user\":\"ada\"}}", v0 + 1, s.expires_at_millis())
    );
    // Redis itself carries the session's expiry, to the millisecond (PXAT).
    let pexpiretime: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(pexpiretime, s.expires_at_millis());

    // touch moves both the expiry in the value and Redis's expiry, and keeps the version.
    let later = SystemTime::now() + HOUR * 2;
    assert!(store.touch(&id, later).await.unwrap());
    let pexpiretime: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(pexpiretime, session_stores::to_millis(later));
    let value: String = raw.get(&key).await.unwrap();
    assert!(
        value.starts_with(&format!("{}:{pexpiretime}:", v0 + 1)),
        "{value}"
    );

    // create writes a fresh version with SET NX PXAT.
    let fresh = SessionId::generate();
    assert!(store.create(&fresh, &s).await.unwrap());
    let value: String = raw.get(store.key_for(&fresh)).await.unwrap();
    let version = store.get(&fresh).await.unwrap().unwrap().version();
    assert!(is_fresh(version), "{version}");
    assert!(value.starts_with(&format!("{version}:")), "{value}");
    store.clear().await.unwrap();
}

#[tokio::test]
async fn redis_drops_expired_sessions_by_itself() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let id = SessionId::generate();
    store
        .set(&id, &session(json!({}), Duration::from_millis(100)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No delete_expired needed: the key itself is gone from Redis.
    let exists: bool = raw.exists(store.key_for(&id)).await.unwrap();
    assert!(!exists, "Redis did not expire the key");
    assert_eq!(store.delete_expired().await.unwrap(), 0);
}

#[tokio::test]
async fn past_expiry_deletes_and_sends_no_invalid_expire_time() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let id = SessionId::generate();
    store
        .set(&id, &session(json!({"a": 1}), HOUR))
        .await
        .unwrap();
    // Far in the past (before 1970, so a negative PXAT if one were sent) and just now.
    for expiry in [
        SystemTime::UNIX_EPOCH - Duration::from_secs(10),
        SystemTime::UNIX_EPOCH,
        SystemTime::now(),
    ] {
        let mut past = Session::with_expiry(expiry);
        past.insert("a", 2).unwrap();
        assert_eq!(store.set(&id, &past).await.unwrap(), 0);
        let exists: bool = raw.exists(store.key_for(&id)).await.unwrap();
        assert!(!exists);
        let version = store
            .set(&id, &session(json!({"a": 1}), HOUR))
            .await
            .unwrap();
        assert_eq!(store.set_if_version(&id, &past, version).await.unwrap(), 0);
        let exists: bool = raw.exists(store.key_for(&id)).await.unwrap();
        assert!(!exists);
        // create with a past expiry stores nothing.
        assert!(store.create(&id, &past).await.unwrap());
        let exists: bool = raw.exists(store.key_for(&id)).await.unwrap();
        assert!(!exists);
        // touch into the past deletes the key; touch of a missing key never creates it.
        store
            .set(&id, &session(json!({"a": 1}), HOUR))
            .await
            .unwrap();
        assert!(store.touch(&id, expiry).await.unwrap());
        let exists: bool = raw.exists(store.key_for(&id)).await.unwrap();
        assert!(!exists);
        assert!(!store.touch(&id, SystemTime::now() + HOUR).await.unwrap());
        let exists: bool = raw.exists(store.key_for(&id)).await.unwrap();
        assert!(!exists, "touch resurrected a missing key");
    }
}

#[tokio::test]
async fn far_future_expiry_is_kept() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let id = SessionId::generate();
    let s = Session::from_parts(serde_json::Map::new(), i64::MAX, 0);
    let version = store.set(&id, &s).await.unwrap();
    assert!(is_fresh(version), "{version}");
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.expires_at_millis(), i64::MAX);
    assert!(store.touch(&id, SystemTime::now() + HOUR).await.unwrap());
    store.clear().await.unwrap();
}

/// Redis keeps a key until its expiry has *passed* and runs on its own clock; a value whose
/// stored expiry is past by the application's clock is absent for every operation, even
/// while Redis still holds the key.
#[tokio::test]
async fn expired_but_present_values_count_as_absent() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let expired_value = || format!("7:{}:{{\"old\":true}}", now_millis() - 1000);
    let id = SessionId::generate();
    let key = store.key_for(&id);
    let plant = |raw: &mut redis::aio::MultiplexedConnection, value: String| {
        let key = key.clone();
        let mut raw = raw.clone();
        async move {
            let _: () = raw.set_ex(&key, value, 3600).await.unwrap();
        }
    };

    plant(&mut raw, expired_value()).await;
    assert!(store.get(&id).await.unwrap().is_none());
    assert!(!store.touch(&id, SystemTime::now() + HOUR).await.unwrap());
    assert!(store.get(&id).await.unwrap().is_none());

    // A set over it starts a new incarnation: a fresh version, not the expired 7 + 1.
    plant(&mut raw, expired_value()).await;
    let version = store
        .set(&id, &session(json!({"n": 1}), HOUR))
        .await
        .unwrap();
    assert!(is_fresh(version) && version != 8, "{version}");

    plant(&mut raw, expired_value()).await;
    assert!(
        store
            .set_if_version(&id, &session(json!({"n": 1}), HOUR), 7)
            .await
            .unwrap_err()
            .is_conflict()
    );
    let version = store
        .set_if_version(&id, &session(json!({"n": 1}), HOUR), 0)
        .await
        .unwrap();
    assert!(is_fresh(version) && version != 8, "{version}");

    // create: SET NX finds the key, the script sees it expired and replaces it.
    plant(&mut raw, expired_value()).await;
    assert!(
        store
            .create(&id, &session(json!({"new": true}), HOUR))
            .await
            .unwrap()
    );
    let got = store.get(&id).await.unwrap().unwrap();
    assert!(is_fresh(got.version()) && got.version() != 8, "{got:?}");
    assert_eq!(got.get::<bool>("new").unwrap(), Some(true));
    store.clear().await.unwrap();
}

#[tokio::test]
async fn create_collision_keeps_the_existing_value() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let id = SessionId::generate();
    assert!(
        store
            .create(&id, &session(json!({"first": 1}), HOUR))
            .await
            .unwrap()
    );
    let v0 = store.get(&id).await.unwrap().unwrap().version();
    assert!(
        !store
            .create(&id, &session(json!({"second": 2}), HOUR))
            .await
            .unwrap()
    );
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.get::<i32>("first").unwrap(), Some(1));
    assert_eq!(got.version(), v0);
    store.clear().await.unwrap();
}

#[tokio::test]
async fn unreadable_values_are_decode_errors_and_set_replaces_them() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let garbage: [&[u8]; 5] = [
        b"not a session",
        b"1:2",
        b"1:99999999999999:not json",
        b"1:99999999999999:[1,2]",
        b"\xff\xfe\x00",
    ];
    for value in garbage {
        let id = SessionId::generate();
        let key = store.key_for(&id);
        let _: () = raw.set(&key, value).await.unwrap();
        let err = store.get(&id).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode, "{value:?}: {err}");
        assert!(!err.to_string().contains(id.as_str()));
        assert_eq!(err.session(), Some(&id.hint()));
        if !value.starts_with(b"1:9") {
            // Unparseable headers: touch and set_if_version report them too.
            let err = store
                .touch(&id, SystemTime::now() + HOUR)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode, "{value:?}");
            let err = store
                .set_if_version(&id, &session(json!({}), HOUR), 0)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode, "{value:?}");
            // create never overwrites something it cannot read.
            assert!(!store.create(&id, &session(json!({}), HOUR)).await.unwrap());
        }
        // The unreadable value is left as it is until a set replaces it, at a fresh
        // version. A readable header (version 1, live) with unreadable data still counts for
        // the version.
        let still: Vec<u8> = raw.get(&key).await.unwrap();
        assert_eq!(still, value);
        let version = store
            .set(&id, &session(json!({"ok": 1}), HOUR))
            .await
            .unwrap();
        if value.starts_with(b"1:9") {
            assert_eq!(version, 2, "{value:?}");
        } else {
            assert!(is_fresh(version), "{value:?}: {version}");
        }
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.get::<i32>("ok").unwrap(), Some(1));
    }

    // A key of another Redis type under the prefix.
    let id = SessionId::generate();
    let key = store.key_for(&id);
    let _: () = raw.hset(&key, "f", "v").await.unwrap();
    assert_eq!(store.get(&id).await.unwrap_err().kind(), ErrorKind::Decode);
    assert_eq!(
        store
            .touch(&id, SystemTime::now() + HOUR)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Decode
    );
    let version = store.set(&id, &session(json!({}), HOUR)).await.unwrap();
    assert!(is_fresh(version), "{version}");
    assert!(store.get(&id).await.unwrap().is_some());
    store.clear().await.unwrap();
}

#[tokio::test]
async fn clear_and_len_stay_inside_the_prefix_even_with_glob_characters() {
    let Some(url) = url() else { return };
    let mut raw = raw(&url).await;
    let base = support::unique_name("sst:glob:");
    // A prefix full of glob metacharacters, and a neighbour that its unescaped pattern
    // (`[ab]*?` and so on) would match.
    let tricky = RedisStore::builder(&url)
        .key_prefix(format!("{base}:[ab]*?\\-^:"))
        .build()
        .unwrap();
    let neighbour_key = format!("{base}:a-x\\-^:neighbour");
    let _: () = raw.set_ex(&neighbour_key, "keep me", 600).await.unwrap();
    let other = RedisStore::builder(&url)
        .key_prefix(format!("{base}:other:"))
        .build()
        .unwrap();
    let other_id = SessionId::generate();
    other
        .set(&other_id, &session(json!({}), HOUR))
        .await
        .unwrap();

    for _ in 0..25 {
        tricky
            .set(&SessionId::generate(), &session(json!({}), HOUR))
            .await
            .unwrap();
    }
    assert_eq!(tricky.len().await.unwrap(), 25);
    tricky.clear().await.unwrap();
    assert_eq!(tricky.len().await.unwrap(), 0);
    assert!(tricky.is_empty().await.unwrap());

    let kept: Option<String> = raw.get(&neighbour_key).await.unwrap();
    assert_eq!(kept.as_deref(), Some("keep me"));
    assert!(other.get(&other_id).await.unwrap().is_some());
    assert_eq!(other.len().await.unwrap(), 1);
    other.clear().await.unwrap();
    let _: () = raw.del(&neighbour_key).await.unwrap();
}

/// `SCAN MATCH "<prefix>*"` also matches the keys of a store whose prefix extends this one
/// (`p:` and `p:admin:`) and foreign keys such as `p:x:y`; `len` and `clear` keep only keys
/// whose remainder after the prefix is a valid session id.
async fn nested_prefixes_stay_apart(outer: RedisStore, inner: RedisStore, raw_url: &str) {
    let mut raw = raw(raw_url).await;
    let foreign_key = format!("{}x:y", outer.key_prefix());
    let _: () = raw
        .set_ex(&foreign_key, "not a session", 600)
        .await
        .unwrap();
    let inner_ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
    for id in &inner_ids {
        inner
            .set(id, &session(json!({"admin": true}), HOUR))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        outer
            .set(&SessionId::generate(), &session(json!({}), HOUR))
            .await
            .unwrap();
    }
    assert_eq!(outer.len().await.unwrap(), 3);
    assert_eq!(inner.len().await.unwrap(), 4);

    outer.clear().await.unwrap();
    assert_eq!(outer.len().await.unwrap(), 0);
    assert_eq!(inner.len().await.unwrap(), 4);
    for id in &inner_ids {
        assert!(
            inner.get(id).await.unwrap().is_some(),
            "clear removed a nested store's session"
        );
    }
    let kept: Option<String> = raw.get(&foreign_key).await.unwrap();
    assert_eq!(
        kept.as_deref(),
        Some("not a session"),
        "clear removed a foreign key"
    );

    inner.clear().await.unwrap();
    assert_eq!(inner.len().await.unwrap(), 0);
    let _: () = raw.del(&foreign_key).await.unwrap();
}

#[tokio::test]
async fn clear_and_len_skip_a_nested_prefix_and_foreign_keys() {
    let Some(url) = url() else { return };
    let base = support::unique_name("sst:nest:");
    let outer = RedisStore::builder(&url)
        .key_prefix(format!("{base}:p:"))
        .build()
        .unwrap();
    let inner = RedisStore::builder(&url)
        .key_prefix(format!("{base}:p:admin:"))
        .build()
        .unwrap();
    nested_prefixes_stay_apart(outer, inner, &url).await;
}

/// Versions are Lua doubles in the scripts: a stored version of more than 15 digits (above
/// 2^53 it loses precision, above 2^63 `%d` is undefined) is unreadable. `set` starts a new
/// incarnation at a fresh version as for any unreadable value; `get`, `touch` and
/// `set_if_version` report a decode error and write nothing; `create` leaves it alone.
#[tokio::test]
async fn oversized_stored_versions_are_unreadable() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let expires = now_millis() + 3_600_000;
    for version in [
        "99999999999999999999",
        "18446744073709551615",
        "9223372036854775808",
        "9007199254740993",
        "1000000000000000",
    ] {
        let id = SessionId::generate();
        let key = store.key_for(&id);
        let planted = format!("{version}:{expires}:{{\"old\":true}}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(&planted)
            .arg("PXAT")
            .arg(expires)
            .query_async(&mut raw)
            .await
            .unwrap();
        let unchanged = |raw: redis::aio::MultiplexedConnection| {
            let key = key.clone();
            let planted = planted.clone();
            async move {
                let mut raw = raw;
                let now: String = raw.get(&key).await.unwrap();
                assert_eq!(now, planted, "version {version}: the value was rewritten");
            }
        };

        let err = store.get(&id).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode, "{version}: {err:?}");
        let mut expected = vec![0, 1];
        if let Ok(v) = version.parse::<u64>() {
            expected.extend([v, v.wrapping_sub(1)]);
        }
        for expected in expected {
            let err = store
                .set_if_version(&id, &session(json!({"new": true}), HOUR), expected)
                .await
                .unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::Decode,
                "{version}/{expected}: {err:?}"
            );
            unchanged(raw.clone()).await;
        }
        let err = store
            .touch(&id, SystemTime::now() + HOUR)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode, "{version}: {err:?}");
        unchanged(raw.clone()).await;
        assert!(!store.create(&id, &session(json!({}), HOUR)).await.unwrap());
        unchanged(raw.clone()).await;

        // set repairs it, starting a new incarnation at a fresh version.
        let fresh = store
            .set(&id, &session(json!({"new": true}), HOUR))
            .await
            .unwrap();
        assert!(is_fresh(fresh), "{version}: {fresh}");
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(got.version(), fresh);
        assert_eq!(got.get::<bool>("new").unwrap(), Some(true));
    }

    // The largest readable version still counts up exactly.
    let id = SessionId::generate();
    let key = store.key_for(&id);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(format!("999999999999998:{expires}:{{}}"))
        .arg("PXAT")
        .arg(expires)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().version(),
        999_999_999_999_998
    );
    assert_eq!(
        store
            .set_if_version(&id, &session(json!({}), HOUR), 999_999_999_999_998)
            .await
            .unwrap(),
        MAX_VERSION
    );
    store.clear().await.unwrap();
}

/// Plants a live session at `version` under the key of `id`, by hand.
async fn plant_version(
    raw: &mut redis::aio::MultiplexedConnection,
    store: &RedisStore,
    id: &SessionId,
    version: u64,
) {
    let expires = now_millis() + 3_600_000;
    let _: () = redis::cmd("SET")
        .arg(store.key_for(id))
        .arg(format!("{version}:{expires}:{{\"n\":0}}"))
        .arg("PXAT")
        .arg(expires)
        .query_async(raw)
        .await
        .unwrap();
}

/// A session at [`MAX_VERSION`] (the largest 15-digit number) advances to a fresh version
/// (at most [`FRESH_VERSION_SPAN`]) on `set` and on `set_if_version(MAX_VERSION)`.
#[tokio::test]
async fn the_largest_version_advances_to_a_fresh_one() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let id = SessionId::generate();

    plant_version(&mut raw, &store, &id, MAX_VERSION).await;
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().version(),
        MAX_VERSION
    );
    let fresh = store
        .set(&id, &session(json!({"n": 1}), HOUR))
        .await
        .unwrap();
    assert!(is_fresh(fresh), "set gave {fresh}");
    assert_eq!(store.get(&id).await.unwrap().unwrap().version(), fresh);

    plant_version(&mut raw, &store, &id, MAX_VERSION).await;
    let fresh = store
        .set_if_version(&id, &session(json!({"n": 2}), HOUR), MAX_VERSION)
        .await
        .unwrap();
    assert!(is_fresh(fresh), "set_if_version gave {fresh}");
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (got.version(), got.get::<u64>("n").unwrap()),
        (fresh, Some(2))
    );
    assert_eq!(
        store
            .set(&id, &session(json!({"n": 3}), HOUR))
            .await
            .unwrap(),
        fresh + 1
    );
    store.clear().await.unwrap();
}

/// A session at version 1 (planted by hand), destroyed and created again, starts a new
/// incarnation at a fresh version: neither 1 again nor 2 (each with a chance of 2^-48).
#[tokio::test]
async fn a_new_incarnation_does_not_restart_at_1() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let id = SessionId::generate();
    plant_version(&mut raw, &store, &id, 1).await;
    assert_eq!(store.get(&id).await.unwrap().unwrap().version(), 1);

    store.destroy(&id).await.unwrap();
    assert!(
        store
            .create(&id, &session(json!({"n": 2}), HOUR))
            .await
            .unwrap()
    );
    let version = store.get(&id).await.unwrap().unwrap().version();
    assert_ne!(version, 1);
    assert_ne!(version, 2);
    assert!(is_fresh(version), "{version}");
    // A compare-and-set holding the old incarnation's version fails.
    assert!(
        store
            .set_if_version(&id, &session(json!({"n": 3}), HOUR), 1)
            .await
            .unwrap_err()
            .is_conflict()
    );
    store.clear().await.unwrap();
}

#[tokio::test]
async fn len_and_clear_span_many_scan_pages() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut pipe = redis::pipe();
    let expires = now_millis() + 3_600_000;
    for i in 0..2500 {
        pipe.cmd("SET")
            .arg(format!("{}s{i}", store.key_prefix()))
            .arg(format!("1:{expires}:{{}}"))
            .arg("PXAT")
            .arg(expires)
            .ignore();
    }
    let mut raw = raw(&url).await;
    let _: () = pipe.query_async(&mut raw).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 2500);
    store.clear().await.unwrap();
    assert_eq!(store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn empty_prefix_is_refused() {
    let err = RedisStore::builder(DEFAULT_URL)
        .key_prefix("")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let pool = deadpool_redis::Config::from_url(DEFAULT_URL)
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let err = RedisStore::from_pool(pool).with_key_prefix("").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn delete_expired_is_zero_without_contacting_redis() {
    // A store whose server does not exist still answers delete_expired.
    let port = free_port();
    let store = RedisStore::builder(&format!("redis://127.0.0.1:{port}"))
        .build()
        .unwrap();
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    // And the store says so: Redis expires keys by itself.
    assert!(store.capabilities().expires_by_itself);
}

#[tokio::test]
async fn unreachable_server_is_a_transient_error_naming_the_session() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let err = RedisStore::connect(&url).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let store = RedisStore::builder(&url).build().unwrap();
    let id = SessionId::generate();
    let err = store.get(&id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert_eq!(err.session(), Some(&id.hint()));
    assert!(!err.to_string().contains(id.as_str()));
    assert!(std::error::Error::source(&err).is_some());
    let err = store.set(&id, &session(json!({}), HOUR)).await.unwrap_err();
    assert!(err.is_transient());
}

/// A "server" that accepts connections and never answers: every operation must give up with
/// a timeout instead of hanging.
#[tokio::test]
async fn a_silent_server_times_out_instead_of_hanging() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let store = RedisStore::builder(&format!("redis://{addr}"))
        .connect_timeout(Duration::from_millis(200))
        .response_timeout(Duration::from_millis(200))
        .pool_wait_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let id = SessionId::generate();
    let err = store.get(&id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.is_transient());
    let err = store.set(&id, &session(json!({}), HOUR)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    let err = store.len().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    hold.abort();
}

/// A proxy to `target` that closes the first `refuse` connections it accepts at once (a
/// server restarting, a connect that failed on a loaded machine), and relays the others.
async fn refusing_proxy(target: String, refuse: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok((mut inbound, _)) = listener.accept().await {
            accepted += 1;
            if accepted <= refuse {
                drop(inbound);
                continue;
            }
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    url
}

/// One failed connect fails no operation that has time for another: 32 operations arrive
/// at a store whose first three connects are refused, and every one succeeds (each caller
/// tries again, with backoff, within its own deadline). Before, the first caller failed and
/// so did every waiter whose own single attempt hit a refused connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_fail_no_operation_that_has_time_for_another() {
    let Some(url) = support::service_url(URL_VAR, DEFAULT_URL, 6379) else {
        return;
    };
    let target = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let proxy = refusing_proxy(target, 3).await;
    let store = Arc::new(
        RedisStore::builder(&proxy)
            .key_prefix(support::unique_name("sst:refused:"))
            .operation_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.get(&SessionId::generate()).await })
        })
        .collect();
    for task in tasks {
        let got = task.await.unwrap();
        assert!(got.is_ok(), "an operation failed: {got:?}");
    }

    // With no server at all, an operation still fails within its deadline, as Unavailable,
    // with the connect's own error as the cause.
    let nowhere = format!("redis://127.0.0.1:{}", support::free_port());
    let store = RedisStore::builder(&nowhere)
        .operation_timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = store.get(&SessionId::generate()).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
}

// ----- Redis Cluster -----

fn cluster_urls() -> Option<Vec<String>> {
    support::service_urls(CLUSTER_VAR, 7001)
}

#[tokio::test]
async fn cluster_len_and_clear_visit_every_primary() {
    let Some(urls) = cluster_urls() else { return };
    let store = RedisStore::cluster_builder(&urls)
        .key_prefix(support::unique_name("sst:cl:"))
        .connect()
        .await
        .unwrap();
    assert!(store.is_cluster());
    let ids: Vec<SessionId> = (0..60).map(|_| SessionId::generate()).collect();
    for id in &ids {
        store
            .set(id, &session(json!({"x": 1}), HOUR))
            .await
            .unwrap();
    }
    // The keys really are spread over every primary: count them per node.
    let mut per_node = Vec::new();
    for url in &urls {
        let mut node = raw(url).await;
        let mut found = 0;
        for id in &ids {
            // A node that does not own the key's slot answers MOVED: not counted.
            let exists: redis::RedisResult<bool> = node.exists(store.key_for(id)).await;
            if exists == Ok(true) {
                found += 1;
            }
        }
        per_node.push(found);
    }
    assert_eq!(per_node.iter().sum::<usize>(), ids.len(), "{per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "all keys landed on one node: {per_node:?}"
    );
    assert_eq!(store.len().await.unwrap(), ids.len() as u64);
    store.clear().await.unwrap();
    assert_eq!(store.len().await.unwrap(), 0);
    for id in &ids {
        assert!(store.get(id).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn cluster_clear_and_len_skip_a_nested_prefix_and_foreign_keys() {
    let Some(urls) = cluster_urls() else { return };
    // A hash tag keeps the raw (non-cluster) connection below on the node owning the keys.
    let base = format!("{{{}}}", support::unique_name("sst-nest"));
    let outer = RedisStore::cluster_builder(&urls)
        .key_prefix(format!("{base}:p:"))
        .build()
        .unwrap();
    let inner = RedisStore::cluster_builder(&urls)
        .key_prefix(format!("{base}:p:admin:"))
        .build()
        .unwrap();
    let mut owner = None;
    for url in &urls {
        let mut node = raw(url).await;
        let probe: redis::RedisResult<bool> = node.exists(format!("{base}:probe")).await;
        if probe.is_ok() {
            owner = Some(url.clone());
        }
    }
    let owner = owner.expect("a node owns the hash-tag slot");
    nested_prefixes_stay_apart(outer, inner, &owner).await;
}

#[tokio::test]
async fn cluster_from_pool_and_hash_tag_prefix() {
    let Some(urls) = cluster_urls() else { return };
    let pool = deadpool_redis::cluster::Config::from_urls(urls.clone())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    // A hash-tag prefix puts every session of the store in one slot.
    let store = RedisStore::from_cluster_pool(pool)
        .with_key_prefix(format!("{{{}}}:", support::unique_name("sst")))
        .unwrap();
    let id = SessionId::generate();
    assert!(
        store
            .create(&id, &session(json!({"a": 1}), HOUR))
            .await
            .unwrap()
    );
    let v0 = store.get(&id).await.unwrap().unwrap().version();
    assert_eq!(
        store
            .set_if_version(&id, &session(json!({"a": 2}), HOUR), v0)
            .await
            .unwrap(),
        v0 + 1
    );
    assert!(store.touch(&id, SystemTime::now() + HOUR).await.unwrap());
    assert_eq!(store.len().await.unwrap(), 1);
    store.clear().await.unwrap();
    assert!(store.is_empty().await.unwrap());
}

// ----- Restart -----

/// A port for a test-owned server (see [`support::free_port`]).
fn free_port() -> u16 {
    support::free_port()
}

fn start_redis(port: u16, dir: &std::path::Path) -> Option<tokio::process::Child> {
    start_redis_with(port, dir, &[])
}

/// A test-owned `redis-server` on `port`, with `extra` arguments.
fn start_redis_with(
    port: u16,
    dir: &std::path::Path,
    extra: &[&str],
) -> Option<tokio::process::Child> {
    let child = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    match child {
        Ok(child) => Some(child),
        Err(err) => {
            let message = format!("SKIPPED: cannot run redis-server ({err})");
            if support::in_ci() {
                panic!("{message}");
            }
            eprintln!("\n*** {message} ***\n");
            None
        }
    }
}

async fn wait_until_up(url: &str) {
    for _ in 0..200 {
        if let Ok(client) = redis::Client::open(url)
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not come up at {url}");
}

/// A dedicated redis-server is killed in the middle of a stream of operations and started
/// again on the same port: operations in flight fail with transient errors only, and once
/// the server is back the very same store works again, without being rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_by_itself_after_a_redis_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let Some(mut server) = start_redis(port, dir.path()) else {
        return;
    };
    wait_until_up(&url).await;
    let store = Arc::new(
        RedisStore::builder(&url)
            .key_prefix("restart:")
            .connect_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_secs(1))
            .max_connections(4)
            .connect()
            .await
            .unwrap(),
    );

    // A stream of operations from several tasks, running across the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let store = Arc::clone(&store);
        let stop = Arc::clone(&stop);
        workers.push(tokio::spawn(async move {
            let (mut ok, mut transient) = (0u64, 0u64);
            let mut bad = Vec::new();
            for i in 0..100_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = SessionId::generate();
                let result = async {
                    store.set(&id, &session(json!({"i": i}), HOUR)).await?;
                    store.get(&id).await?;
                    store.touch(&id, SystemTime::now() + HOUR).await?;
                    store.destroy(&id).await
                }
                .await;
                match result {
                    Ok(()) => ok += 1,
                    Err(err) if err.is_transient() => {
                        transient += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(err) => bad.push(format!("{err:?}")),
                }
            }
            (ok, transient, bad)
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill().await.unwrap();
    // While the server is down, operations fail, transiently.
    let id = SessionId::generate();
    let err = store.get(&id).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut server = start_redis(port, dir.path()).expect("redis-server ran before");
    wait_until_up(&url).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total_ok = 0;
    let mut total_transient = 0;
    for worker in workers {
        let (ok, transient, bad) = worker.await.unwrap();
        assert!(
            bad.is_empty(),
            "non-transient errors during restart: {bad:?}"
        );
        total_ok += ok;
        total_transient += transient;
    }
    assert!(total_ok > 0, "no operation ever succeeded");
    assert!(total_transient > 0, "the restart caused no error at all");

    // After the restart every operation on the same store succeeds.
    for i in 0..50 {
        let id = SessionId::generate();
        let version = store
            .set(&id, &session(json!({"i": i}), HOUR))
            .await
            .unwrap();
        assert!(is_fresh(version), "{version}");
        assert_eq!(
            store.get(&id).await.unwrap().map(|s| s.version()),
            Some(version)
        );
        assert!(
            store
                .create(&SessionId::generate(), &session(json!({}), HOUR))
                .await
                .unwrap()
        );
    }
    assert_eq!(store.len().await.unwrap(), 100);
    store.clear().await.unwrap();
    server.kill().await.unwrap();
}

/// `touch` to an expiry of the same width rewrites only the expiry in place (the data bytes
/// are untouched), and to one of another width rewrites the value; either way the data,
/// version and the key's TTL follow.
#[tokio::test]
async fn touch_in_place_and_with_a_wider_expiry() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut conn = raw(&url).await;
    let id = SessionId::generate();
    let blob = "x".repeat(64 * 1024);
    let s = session(json!({ "blob": blob }), HOUR);
    let v0 = store.set(&id, &s).await.unwrap();
    let key = store.key_for(&id);
    let before: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();

    // Same width (13 digits): in place.
    let later = SystemTime::now() + 2 * HOUR;
    assert!(store.touch(&id, later).await.unwrap());
    let after: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(before.len(), after.len());
    let head = |v: &[u8]| v.iter().take_while(|b| **b != b'{').count();
    assert_eq!(
        &before[head(&before)..],
        &after[head(&after)..],
        "data bytes changed"
    );
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.expires_at_millis(), session_stores::to_millis(later));
    assert_eq!((got.version(), got.data()), (v0, s.data()));
    let ttl: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ttl, session_stores::to_millis(later));

    // A wider expiry (year 5000: 14 digits), then back to 13.
    let far = session_stores::from_millis(95_617_584_000_000);
    assert!(store.touch(&id, far).await.unwrap());
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.expires_at_millis(), 95_617_584_000_000);
    assert_eq!((got.version(), got.data()), (v0, s.data()));
    assert!(store.touch(&id, later).await.unwrap());
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.expires_at_millis(), session_stores::to_millis(later));
    assert_eq!((got.version(), got.data()), (v0, s.data()));
    store.destroy(&id).await.unwrap();
}

// ----- Connection sharing, bounded memory, batching, deadlines -----

/// The integer `field` of `INFO <section>` on the server behind `conn`.
async fn info_field(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

/// A dedicated redis-server (with `DEBUG` enabled) stalls for 300 ms (`DEBUG SLEEP 0.3` from
/// another client) while 200 tasks `get` through one store whose response timeout (100 ms)
/// is shorter than the stall, each retrying its transient errors. The store may replace its
/// connection when nothing comes back on it, but only one caller reconnects while the others
/// wait, and a replacement installed by one task is never thrown away because of another
/// task's timeout on the old one: the server sees a handful of new connections, not one per
/// caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_costs_a_handful_of_connections_not_one_per_caller() {
    let _alone = support::measures_time().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let Some(mut server) = start_redis_with(port, dir.path(), &["--enable-debug-command", "yes"])
    else {
        return;
    };
    wait_until_up(&url).await;
    let store = Arc::new(
        RedisStore::builder(&url)
            .key_prefix("stall:")
            .response_timeout(Duration::from_millis(100))
            .max_connections(64)
            .connect()
            .await
            .unwrap(),
    );
    let id = SessionId::generate();
    store
        .set(&id, &session(json!({"n": 1}), HOUR))
        .await
        .unwrap();
    let mut admin = raw(&url).await;
    let mut sleeper = raw(&url).await;
    let before = info_field(&mut admin, "stats", "total_connections_received").await;

    let stall = tokio::spawn(async move {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("0.3")
            .query_async::<()>(&mut sleeper)
            .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut transient = 0u32;
            loop {
                match store.get(&id).await {
                    Ok(found) => return Ok((transient, found.is_some())),
                    Err(err) if err.is_transient() && std::time::Instant::now() < deadline => {
                        transient += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(err) => return Err(format!("{err:?}")),
                }
            }
        });
    }
    let mut retries = 0;
    while let Some(outcome) = tasks.join_next().await {
        let (transient, found) = outcome.unwrap().expect("every get succeeds in the end");
        assert!(found);
        retries += transient;
    }
    let took = started.elapsed();
    stall.await.unwrap().unwrap();
    let after = info_field(&mut admin, "stats", "total_connections_received").await;
    let opened = after - before;
    eprintln!(
        "stall: 200 gets done in {took:?}, {retries} transient errors retried, {opened} new connections"
    );
    assert!(
        opened <= 5,
        "a 300 ms stall made the store open {opened} connections"
    );
    server.kill().await.unwrap();
}

/// A fake Redis that answers the connection set-up (`CLIENT`), `PING` and `UNWATCH`
/// normally and every other command with the error `reply`, and counts the connections it
/// accepted.
async fn fake_redis(reply: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let mut out = Vec::new();
                    while let Some((name, used)) = parse_command(&buf) {
                        buf.drain(..used);
                        out.extend_from_slice(match name.to_ascii_uppercase().as_slice() {
                            b"CLIENT" | b"UNWATCH" => b"+OK\r\n".as_slice(),
                            b"PING" => b"+PONG\r\n",
                            _ => reply.as_bytes(),
                        });
                    }
                    if socket.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, accepted)
}

/// The name of the first whole RESP command in `buf` and its length in bytes.
fn parse_command(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((&buf[at..at + end], at + end + 2))
    }
    let (head, mut at) = line(buf, 0)?;
    let count: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut name = None;
    for _ in 0..count {
        let (len, next) = line(buf, at)?;
        let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        let arg = buf.get(next..next + len)?;
        name.get_or_insert_with(|| arg.to_vec());
        at = next + len + 2;
        if buf.len() < at {
            return None;
        }
    }
    Some((name?, at))
}

/// `LOADING` and `CLUSTERDOWN` are replies from a server that is there: transient errors for
/// the caller, but the connection that carried them is fine and is kept.
#[tokio::test]
async fn server_error_replies_keep_the_connection() {
    let _alone = support::measures_time().await;
    for reply in [
        "-LOADING Redis is loading the dataset in memory\r\n",
        "-CLUSTERDOWN The cluster is down\r\n",
    ] {
        let (url, accepted) = fake_redis(reply).await;
        let store = RedisStore::builder(&url)
            .response_timeout(Duration::from_secs(1))
            .max_connections(64)
            .connect()
            .await
            .unwrap();
        let id = SessionId::generate();
        for _ in 0..50 {
            let err = store.get(&id).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{reply}: {err:?}");
            let err = store.set(&id, &session(json!({}), HOUR)).await.unwrap_err();
            assert!(err.is_transient(), "{reply}: {err:?}");
        }
        let opened = accepted.load(Ordering::SeqCst);
        eprintln!("{}: 100 operations, {opened} connections", reply.trim());
        assert_eq!(opened, 1, "{}: the store reconnected", reply.trim());
    }
}

/// `len` counts page by page: over 30,000 keys (30 `SCAN` pages) the peak heap of the thread
/// running it stays under 1 MiB (holding every key, as a set of 30,000 keys does, takes
/// several MiB), and the count is exact.
#[tokio::test]
async fn len_counts_many_keys_exactly_in_bounded_memory() {
    let _load = support::loads_the_machine().await;
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    const KEYS: u64 = 30_000;
    let expires = now_millis() + 3_600_000;
    for chunk in 0..KEYS / 5000 {
        let mut pipe = redis::pipe();
        for i in chunk * 5000..(chunk + 1) * 5000 {
            pipe.cmd("SET")
                .arg(format!("{}s{i}", store.key_prefix()))
                .arg(format!("1:{expires}:{{}}"))
                .arg("PXAT")
                .arg(expires)
                .ignore();
        }
        let _: () = pipe.query_async(&mut raw).await.unwrap();
    }
    // Let the raw connection's driver end (and free its buffers) before measuring.
    drop(raw);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let base = heap::mark();
    let counted = store.len().await.unwrap();
    let peak = heap::peak_above(base);
    eprintln!("len of {KEYS} keys: peak heap {peak} bytes above the start");
    assert_eq!(counted, KEYS);
    assert!(peak < 1 << 20, "len held {peak} bytes at its peak");
    store.clear().await.unwrap();
    assert_eq!(store.len().await.unwrap(), 0);
}

/// On a Redis Cluster, `clear` of 5,000 sessions batches its deletions per node (one round
/// trip per `SCAN` page, not one per key): the nodes together process far fewer reads than
/// there are keys (`INFO stats` `total_reads_processed`, summed over the primaries). A
/// dedicated cluster, since those counters count every client's reads: on a shared one, the
/// other tests' reads in the meantime would count too.
#[tokio::test]
async fn cluster_clear_batches_its_round_trips() {
    let _load = support::loads_the_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let Some((mut cluster, ports)) = own_cluster(dir.path()).await else {
        return;
    };
    let urls = node_urls(&ports);
    let store = Arc::new(
        RedisStore::cluster_builder(&urls)
            .key_prefix(support::unique_name("sst:clb:"))
            .connect()
            .await
            .unwrap(),
    );
    const KEYS: usize = 5000;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for _ in 0..KEYS / 50 {
                store
                    .set(&SessionId::generate(), &session(json!({}), HOUR))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(store.len().await.unwrap(), KEYS as u64);

    let mut nodes = Vec::new();
    for url in &urls {
        nodes.push(raw(url).await);
    }
    let mut reads = 0;
    for node in &mut nodes {
        reads += info_field(node, "stats", "total_reads_processed").await;
    }
    let started = std::time::Instant::now();
    store.clear().await.unwrap();
    let took = started.elapsed();
    let mut after = 0;
    for node in &mut nodes {
        after += info_field(node, "stats", "total_reads_processed").await;
    }
    // Each node's second INFO is one read of its own.
    let used = after - reads - nodes.len() as u64;
    eprintln!("cluster clear of {KEYS} keys: {took:?}, {used} reads on the primaries");
    assert_eq!(store.len().await.unwrap(), 0);
    assert!(
        used < KEYS as u64 / 5,
        "clear of {KEYS} keys took {used} reads on the primaries"
    );
    for node in &mut cluster {
        node.kill().await.unwrap();
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to the process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// A dedicated redis-server is stopped (SIGSTOP: its sockets stay open and silent, like a
/// hung server). With an operation timeout of 300 ms, shorter than the response and connect
/// timeouts (2 s each), every operation of a connected store, and the first operation of a
/// store that has no connection yet, fails with a transient `Timeout` after about 300 ms.
/// Once the server continues (SIGCONT) the same store works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_fails_every_operation_within_its_deadline() {
    let _alone = support::measures_time().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let Some(mut server) = start_redis(port, dir.path()) else {
        return;
    };
    wait_until_up(&url).await;
    let pid = server.id().expect("the server is running");
    const DEADLINE: Duration = Duration::from_millis(300);
    let build = || {
        RedisStore::builder(&url)
            .key_prefix("stopped:")
            .operation_timeout(DEADLINE)
            .build()
            .unwrap()
    };
    let store = build();
    let cold = build();
    let id = SessionId::generate();
    let version = store
        .set(&id, &session(json!({"n": 1}), HOUR))
        .await
        .unwrap();

    signal(pid, "-STOP");
    let s = session(json!({"n": 2}), HOUR);
    let later = SystemTime::now() + HOUR;
    let mut timings = Vec::new();
    for (name, outcome) in [
        (
            "get",
            Box::pin(async { store.get(&id).await.map(drop) })
                as std::pin::Pin<
                    Box<dyn std::future::Future<Output = session_stores::Result<()>> + Send>,
                >,
        ),
        (
            "set",
            Box::pin(async { store.set(&id, &s).await.map(drop) }),
        ),
        (
            "create",
            Box::pin(async { store.create(&SessionId::generate(), &s).await.map(drop) }),
        ),
        (
            "set_if_version",
            Box::pin(async { store.set_if_version(&id, &s, version).await.map(drop) }),
        ),
        (
            "touch",
            Box::pin(async { store.touch(&id, later).await.map(drop) }),
        ),
        ("destroy", Box::pin(async { store.destroy(&id).await })),
        ("len", Box::pin(async { store.len().await.map(drop) })),
        ("clear", Box::pin(async { store.clear().await })),
        ("ping", Box::pin(async { store.ping().await })),
        (
            "get (no connection yet)",
            Box::pin(async { cold.get(&id).await.map(drop) }),
        ),
    ] {
        let started = std::time::Instant::now();
        let err = outcome.await.expect_err(name);
        let took = started.elapsed();
        timings.push(format!("{name} {took:?}"));
        assert_eq!(err.kind(), ErrorKind::Timeout, "{name}: {err:?}");
        assert!(err.is_transient());
        assert!(
            took >= DEADLINE - Duration::from_millis(20)
                && took < DEADLINE + Duration::from_millis(400),
            "{name} gave up after {took:?} (deadline {DEADLINE:?})"
        );
    }
    eprintln!("stopped server: {}", timings.join(", "));

    // The commands already sent (the destroy and the clear among them) run once the server
    // continues: a timed-out write may still happen. The same stores work again.
    signal(pid, "-CONT");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let fresh = SessionId::generate();
    let version = loop {
        match store
            .set(&fresh, &session(json!({"back": true}), HOUR))
            .await
        {
            Ok(version) => break version,
            Err(err) if err.is_transient() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("the store did not recover: {err:?}"),
        }
    };
    assert_eq!(
        store.get(&fresh).await.unwrap().map(|s| s.version()),
        Some(version)
    );
    assert_eq!(
        cold.get(&fresh).await.unwrap().map(|s| s.version()),
        Some(version)
    );
    server.kill().await.unwrap();
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    support::free_cluster_port()
}

/// `redis-cli` on a node, for cluster administration; its standard output.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The URLs of the cluster nodes on `ports` (loopback).
fn node_urls(ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect()
}

/// The cluster node id of the node on `port`.
fn node_id(port: u16) -> String {
    redis_cli(port, &["cluster", "myid"])
}

/// A dedicated 3-primary Redis Cluster, its nodes' files in `dir`: the nodes (killed when
/// dropped) and their ports; `None` (a skip) when `redis-server` cannot run. For a test that
/// must have a cluster to itself.
async fn own_cluster(dir: &std::path::Path) -> Option<(Vec<tokio::process::Child>, Vec<u16>)> {
    let ports: Vec<u16> = (0..3).map(|_| free_cluster_port()).collect();
    own_cluster_on(dir, ports, None).await
}

/// A test-owned 3-primary cluster on `ports`; with `announced`, each node tells clients to
/// reach it at that port instead (a proxy in front of it), its bus staying direct.
pub(crate) async fn own_cluster_on(
    dir: &std::path::Path,
    ports: Vec<u16>,
    announced: Option<&[u16]>,
) -> Option<(Vec<tokio::process::Child>, Vec<u16>)> {
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let conf = format!("nodes-{port}.conf");
        let mut args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf,
            "--cluster-node-timeout",
            "5000",
        ]
        .map(str::to_owned)
        .into();
        if let Some(announced) = announced {
            args.extend([
                "--cluster-announce-ip".to_owned(),
                "127.0.0.1".to_owned(),
                "--cluster-announce-port".to_owned(),
                announced[i].to_string(),
                "--cluster-announce-bus-port".to_owned(),
                (port + 10_000).to_string(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = start_redis_with(*port, dir, &args)?;
        nodes.push(node);
        wait_until_up(&format!("redis://127.0.0.1:{port}")).await;
    }
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(created.status.success(), "{created:?}");
    for _ in 0..100 {
        if ports
            .iter()
            .all(|p| redis_cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some((nodes, ports))
}

/// While a slot migrates, `clear` still removes every session. The half of the slot already
/// moved lives on the importing node, whose `SCAN` page mixes it with keys of slots that node
/// owns; its pipeline gets `MOVED` for the moving slot, and redis-rs, which redirects a
/// pipeline as a whole, cannot place it. `clear` then sends each slot's `UNLINK` on its own,
/// routed by its keys. A dedicated 3-node cluster, so that no other test's keys are caught in
/// the migrating slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_clear_removes_a_slot_that_is_moving() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut nodes, ports)) = own_cluster(dir.path()).await else {
        return;
    };
    let urls = node_urls(&ports);
    let store = Arc::new(
        RedisStore::cluster_builder(&urls)
            .key_prefix("moving:")
            .connect()
            .await
            .unwrap(),
    );
    // 3,000 sessions spread over the slots, then a slot holding several of them.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for _ in 0..100 {
                store
                    .set(&SessionId::generate(), &session(json!({}), HOUR))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let count = |port: u16, slot: &str| -> u64 {
        redis_cli(port, &["cluster", "countkeysinslot", slot])
            .parse()
            .unwrap()
    };
    let mut raw_node = raw(&urls[0]).await;
    let mut busy = None;
    let mut cursor = 0u64;
    'find: loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("moving:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut raw_node)
            .await
            .unwrap();
        for key in keys {
            let slot = redis_cli(ports[0], &["cluster", "keyslot", &key]);
            if count(ports[0], &slot) >= 2 {
                busy = Some(slot);
                break 'find;
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let slot = busy.expect("a slot with two sessions or more");
    let (source, target) = (ports[0], ports[1]);
    let in_slot = count(source, &slot);
    let (source_id, target_id) = (node_id(source), node_id(target));
    assert_eq!(
        redis_cli(
            target,
            &["cluster", "setslot", &slot, "importing", &source_id]
        ),
        "OK"
    );
    assert_eq!(
        redis_cli(
            source,
            &["cluster", "setslot", &slot, "migrating", &target_id]
        ),
        "OK"
    );
    let keys = redis_cli(source, &["cluster", "getkeysinslot", &slot, "1"]);
    let target_port = target.to_string();
    let migrate = [
        "migrate",
        "127.0.0.1",
        &target_port,
        "",
        "0",
        "5000",
        "keys",
        keys.trim(),
    ];
    assert_eq!(redis_cli(source, &migrate), "OK");
    assert_eq!(
        (count(source, &slot), count(target, &slot)),
        (in_slot - 1, 1)
    );

    store.clear().await.unwrap();
    assert_eq!(
        (count(source, &slot), count(target, &slot)),
        (0, 0),
        "clear left sessions in the moving slot"
    );
    for port in &ports {
        let left = redis_cli(*port, &["dbsize"]);
        assert_eq!(left, "0", "node {port} still holds {left} keys");
    }
    for node in &mut nodes {
        node.kill().await.unwrap();
    }
}

/// After a slot moves to another primary, `len` and `clear` still visit every primary once:
/// they find the primaries from a fresh `CLUSTER SLOTS` and send each `SCAN` to that node by
/// its address, not through the client's own slot map, which still has the slot on its old
/// node (no command since was redirected). Routed by slot, the new owner of slot 0 was
/// reached through the stale map at the old one: one node was scanned twice, one never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_len_and_clear_follow_a_moved_slot() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut nodes, ports)) = own_cluster(dir.path()).await else {
        return;
    };
    let urls = node_urls(&ports);
    let store = RedisStore::cluster_builder(&urls)
        .key_prefix("moved:")
        .connect()
        .await
        .unwrap();
    let ids: Vec<SessionId> = (0..90).map(|_| SessionId::generate()).collect();
    for id in &ids {
        store.set(id, &session(json!({}), HOUR)).await.unwrap();
    }
    assert_eq!(store.len().await.unwrap(), 90);
    // Slot 0 (with its sessions, if any) moves from the node that serves it to another.
    // Whether `port`'s view of the cluster has slot 0 on node `node`.
    let sees_slot_0_on = |port: u16, node: &str| {
        redis_cli(port, &["cluster", "nodes"]).lines().any(|line| {
            line.starts_with(node)
                && line
                    .split(' ')
                    .skip(8)
                    .any(|range| range == "0" || range.starts_with("0-"))
        })
    };
    let owner = ports
        .iter()
        .copied()
        .find(|p| sees_slot_0_on(*p, &node_id(*p)))
        .expect("the node that serves slot 0");
    let other = *ports.iter().find(|p| **p != owner).unwrap();
    let (owner_id, other_id) = (node_id(owner), node_id(other));
    let keys = redis_cli(owner, &["cluster", "getkeysinslot", "0", "1000"]);
    assert_eq!(
        redis_cli(other, &["cluster", "setslot", "0", "importing", &owner_id]),
        "OK"
    );
    assert_eq!(
        redis_cli(owner, &["cluster", "setslot", "0", "migrating", &other_id]),
        "OK"
    );
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let port = other.to_string();
        assert_eq!(
            redis_cli(owner, &["migrate", "127.0.0.1", &port, key, "0", "5000"]),
            "OK"
        );
    }
    for port in &ports {
        assert_eq!(
            redis_cli(*port, &["cluster", "setslot", "0", "node", &other_id]),
            "OK"
        );
    }
    for _ in 0..100 {
        if ports.iter().all(|p| sees_slot_0_on(*p, &other_id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(
        store.len().await.unwrap(),
        90,
        "len after slot 0 moved to another primary"
    );
    store.clear().await.unwrap();
    for port in &ports {
        let left = redis_cli(*port, &["dbsize"]);
        assert_eq!(left, "0", "clear left {left} keys on node {port}");
    }
    for node in &mut nodes {
        node.kill().await.unwrap();
    }
}

/// Writes and reads follow a slot while it migrates and after it moved, with redis-rs'
/// own retries off (the store resends only what the cluster did not run): a new session in
/// a migrating slot is created on the importing node (`ASK`, resent there after `ASKING`),
/// one still on the old node is written there, and after the slot moved a write of it
/// follows `MOVED` to the new node. Every write ran once (the versions count them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_migrating_and_a_moved_slot() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut nodes, ports)) = own_cluster(dir.path()).await else {
        return;
    };
    let urls = node_urls(&ports);
    // A hash tag in the prefix: every session of the store is in one slot.
    let prefix = "{ask-moved}:";
    let store = RedisStore::cluster_builder(&urls)
        .key_prefix(prefix)
        .connect()
        .await
        .unwrap();
    let slot: u16 = redis_cli(ports[0], &["cluster", "keyslot", &format!("{prefix}x")])
        .parse()
        .unwrap();
    let serves = |port: u16, node: &str| {
        redis_cli(port, &["cluster", "nodes"]).lines().any(|line| {
            line.starts_with(node)
                && line.split(' ').skip(8).any(|range| {
                    let (low, high) = range.split_once('-').unwrap_or((range, range));
                    matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(low), Ok(high)) if (low..=high).contains(&slot))
                })
        })
    };
    let source = *ports
        .iter()
        .find(|p| serves(**p, &node_id(**p)))
        .expect("the node that serves the slot");
    let target = *ports.iter().find(|p| **p != source).unwrap();
    let (source_id, target_id) = (node_id(source), node_id(target));
    let count = |port: u16| -> u64 {
        redis_cli(port, &["cluster", "countkeysinslot", &slot.to_string()])
            .parse()
            .unwrap()
    };

    let old = SessionId::generate();
    let v1 = store
        .set(&old, &session(json!({"n": 1}), HOUR))
        .await
        .unwrap();
    let slot_arg = slot.to_string();
    assert_eq!(
        redis_cli(
            target,
            &["cluster", "setslot", &slot_arg, "importing", &source_id]
        ),
        "OK"
    );
    assert_eq!(
        redis_cli(
            source,
            &["cluster", "setslot", &slot_arg, "migrating", &target_id]
        ),
        "OK"
    );
    // A new session: the source does not have it, so it answers ASK.
    let new = SessionId::generate();
    assert!(
        store
            .create(&new, &session(json!({"n": 2}), HOUR))
            .await
            .unwrap()
    );
    assert_eq!(
        (count(source), count(target)),
        (1, 1),
        "the new session is on the importing node"
    );
    let fresh = SessionId::generate();
    store
        .set_if_version(&fresh, &session(json!({"n": 3}), HOUR), 0)
        .await
        .unwrap();
    assert_eq!(count(target), 2);
    // Reads of sessions on either node, and a write of the one still on the source.
    assert_eq!(
        store
            .get(&new)
            .await
            .unwrap()
            .unwrap()
            .get::<u64>("n")
            .unwrap(),
        Some(2)
    );
    let v2 = store
        .set(&old, &session(json!({"n": 4}), HOUR))
        .await
        .unwrap();
    assert_eq!(v2, v1 + 1);

    // The old session moves, then the slot: a write of it follows MOVED.
    let key = format!("{prefix}{}", old.as_str());
    let target_port = target.to_string();
    assert_eq!(
        redis_cli(
            source,
            &["migrate", "127.0.0.1", &target_port, &key, "0", "5000"]
        ),
        "OK"
    );
    for port in &ports {
        assert_eq!(
            redis_cli(
                *port,
                &["cluster", "setslot", &slot_arg, "node", &target_id]
            ),
            "OK"
        );
    }
    let v3 = store
        .set(&old, &session(json!({"n": 5}), HOUR))
        .await
        .unwrap();
    assert_eq!(v3, v2 + 1, "the write after MOVED ran once");
    assert_eq!((count(source), count(target)), (0, 3));
    for (id, n) in [(&old, 5u64), (&new, 2), (&fresh, 3)] {
        assert_eq!(
            store
                .get(id)
                .await
                .unwrap()
                .unwrap()
                .get::<u64>("n")
                .unwrap(),
            Some(n)
        );
    }
    assert!(store.touch(&new, SystemTime::now() + HOUR).await.unwrap());
    store.destroy(&old).await.unwrap();
    assert!(store.get(&old).await.unwrap().is_none());
    assert_eq!(store.len().await.unwrap(), 2);
    for node in &mut nodes {
        node.kill().await.unwrap();
    }
}

// ----- Owners ("log out everywhere") -----

/// A raw connection that reaches every key of the store's Redis: the server itself, or the
/// cluster through redis-rs' cluster client (routed by key).
enum RawAny {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl RawAny {
    async fn of(store: &RedisStore, urls: &[String]) -> RawAny {
        if store.is_cluster() {
            let client = redis::cluster::ClusterClient::new(urls.to_vec()).unwrap();
            RawAny::Cluster(client.get_async_connection().await.unwrap())
        } else {
            RawAny::Single(raw(&urls[0]).await)
        }
    }

    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        match self {
            RawAny::Single(conn) => cmd.query_async(conn).await.unwrap(),
            RawAny::Cluster(conn) => cmd.query_async(conn).await.unwrap(),
        }
    }
}

fn owner(name: &str) -> Owner {
    Owner::new(name).unwrap()
}

fn owned(data: serde_json::Value, ttl: Duration, by: &Owner) -> Session {
    session(data, ttl).with_owner(Some(by.clone()))
}

async fn listed(store: &RedisStore, by: &Owner) -> BTreeSet<SessionId> {
    let ids: BTreeSet<SessionId> = store
        .sessions_of(by, false)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    ids
}

/// The store's stand-alone owner scenario: each write stores the owner, get returns it,
/// touch keeps it, a write without one removes it; listings exclude expired, destroyed and
/// re-owned sessions; `destroy_owner` keeps `except` and counts what it destroyed.
async fn owners_scenario(store: RedisStore, urls: &[String]) {
    let mut raw = RawAny::of(&store, urls).await;
    let ada = owner("user:{ada}");
    let bob = owner("bob é");
    assert!(store.capabilities().owners);

    // Every write stores the owner; get returns it; touch keeps it.
    let a1 = SessionId::generate();
    let a2 = SessionId::generate();
    let a3 = SessionId::generate();
    let v1 = store
        .set(&a1, &owned(json!({"n": 1}), HOUR, &ada))
        .await
        .unwrap();
    assert!(
        store
            .create(&a2, &owned(json!({"n": 2}), HOUR, &ada))
            .await
            .unwrap()
    );
    store
        .set_if_version(&a3, &owned(json!({"n": 3}), HOUR, &ada), 0)
        .await
        .unwrap();
    let got = store.get(&a1).await.unwrap().unwrap();
    assert_eq!(got.owner(), Some(&ada));
    assert_eq!(got.version(), v1);
    let later = SystemTime::now() + 2 * HOUR;
    assert!(store.touch(&a1, later).await.unwrap());
    let got = store.get(&a1).await.unwrap().unwrap();
    assert_eq!(got.owner(), Some(&ada));
    assert_eq!(got.expires_at_millis(), session_stores::to_millis(later));
    // The touch raised the entry's score to the new expiry.
    let key = store.owner_key_for(&ada);
    let score: i64 = raw
        .query(redis::cmd("ZSCORE").arg(&key).arg(a1.as_str()))
        .await;
    assert_eq!(score, session_stores::to_millis(later));
    // The index key expires after its largest score plus the grace.
    let expiry: i64 = raw.query(redis::cmd("PEXPIRETIME").arg(&key)).await;
    let grace = i64::try_from(
        (session_stores::stores::redis::INDEX_GRACE + session_stores::DEFAULT_OPERATION_TIMEOUT)
            .as_millis(),
    )
    .unwrap();
    assert_eq!(expiry, score + grace);
    assert_eq!(
        listed(&store, &ada).await,
        BTreeSet::from([a1.clone(), a2.clone(), a3.clone()])
    );

    // The listing: ids, expiries, versions, and the data only when asked.
    let with_data = store.sessions_of(&ada, true).await.unwrap();
    assert_eq!(with_data.len(), 3);
    for entry in &with_data {
        let stored = store.get(&entry.id).await.unwrap().unwrap();
        assert_eq!(entry.version, stored.version());
        assert_eq!(entry.expires_at_millis, stored.expires_at_millis());
        assert_eq!(entry.data.as_ref(), Some(stored.data()));
    }
    assert!(
        store
            .sessions_of(&ada, false)
            .await
            .unwrap()
            .iter()
            .all(|entry| entry.data.is_none())
    );

    // Re-owned, owner removed, destroyed, expired: no longer listed.
    store
        .set(&a2, &owned(json!({"n": 2}), HOUR, &bob))
        .await
        .unwrap();
    assert_eq!(store.get(&a2).await.unwrap().unwrap().owner(), Some(&bob));
    store
        .set(&a3, &session(json!({"n": 3}), HOUR))
        .await
        .unwrap();
    assert_eq!(store.get(&a3).await.unwrap().unwrap().owner(), None);
    assert_eq!(listed(&store, &ada).await, BTreeSet::from([a1.clone()]));
    assert_eq!(listed(&store, &bob).await, BTreeSet::from([a2.clone()]));
    store.destroy(&a1).await.unwrap();
    let short = SessionId::generate();
    store
        .set(&short, &owned(json!({}), Duration::from_millis(150), &ada))
        .await
        .unwrap();
    assert_eq!(listed(&store, &ada).await, BTreeSet::from([short.clone()]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(listed(&store, &ada).await.is_empty());
    // In a cluster the destroyed and re-owned entries are still in the index (a superset),
    // unlisted; on one server they left with their write, and the expired one with the
    // listing's reclaim.
    let entries: u64 = raw.query(redis::cmd("ZCARD").arg(&key)).await;
    if store.is_cluster() {
        assert!(entries >= 3, "{entries}");
    } else {
        assert_eq!(entries, 0);
    }

    // destroy_owner: every live session of the owner but `except`, counted.
    let ids: Vec<SessionId> = (0..5).map(|_| SessionId::generate()).collect();
    for id in &ids {
        store
            .set(id, &owned(json!({"d": 1}), HOUR, &ada))
            .await
            .unwrap();
    }
    assert_eq!(store.destroy_owner(&ada, Some(&ids[0])).await.unwrap(), 4);
    assert_eq!(listed(&store, &ada).await, BTreeSet::from([ids[0].clone()]));
    for id in &ids[1..] {
        assert!(store.get(id).await.unwrap().is_none());
    }
    // Another owner's sessions are untouched, even under `except`.
    assert_eq!(store.destroy_owner(&ada, Some(&a2)).await.unwrap(), 1);
    assert_eq!(store.get(&a2).await.unwrap().unwrap().owner(), Some(&bob));
    assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 0);
    assert_eq!(store.destroy_owner(&bob, None).await.unwrap(), 1);
    assert!(store.get(&a2).await.unwrap().is_none());
    assert!(store.get(&a3).await.unwrap().is_some(), "no owner: kept");
    store.clear().await.unwrap();
}

/// A store with thousands of sessions of one owner: listed whole, with and without data,
/// and destroyed whole but one.
async fn thousands_scenario(store: RedisStore) {
    let many = owner("many");
    let ids: Vec<SessionId> = (0..2000).map(|_| SessionId::generate()).collect();
    let store = Arc::new(store);
    for chunk in ids.chunks(250) {
        let mut tasks = tokio::task::JoinSet::new();
        for id in chunk {
            let (store, id) = (Arc::clone(&store), id.clone());
            let s = owned(json!({"k": id.as_str()}), HOUR, &many);
            tasks.spawn(async move { store.set(&id, &s).await.unwrap() });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    }
    let started = std::time::Instant::now();
    let all = store.sessions_of(&many, false).await.unwrap();
    let took = started.elapsed();
    assert_eq!(all.len(), ids.len());
    let expected: BTreeSet<SessionId> = ids.iter().cloned().collect();
    assert_eq!(
        all.into_iter().map(|s| s.id).collect::<BTreeSet<_>>(),
        expected
    );
    let with_data = store.sessions_of(&many, true).await.unwrap();
    assert_eq!(with_data.len(), ids.len());
    assert!(
        with_data
            .iter()
            .all(|s| s.data.as_ref().unwrap()["k"] == json!(s.id.as_str()))
    );
    let started = std::time::Instant::now();
    assert_eq!(
        store.destroy_owner(&many, Some(&ids[7])).await.unwrap(),
        ids.len() as u64 - 1
    );
    eprintln!(
        "2000 sessions of one owner: sessions_of {took:?}, destroy_owner {:?}",
        started.elapsed()
    );
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(
        listed(&store, &many).await,
        BTreeSet::from([ids[7].clone()])
    );
    store.clear().await.unwrap();
}

/// Two stores on one Redis with the same owner: separate indexes and sessions.
async fn isolation_scenario(one: RedisStore, two: RedisStore) {
    let shared = owner("shared");
    let (x, y) = (SessionId::generate(), SessionId::generate());
    one.set(&x, &owned(json!({}), HOUR, &shared)).await.unwrap();
    two.set(&y, &owned(json!({}), HOUR, &shared)).await.unwrap();
    assert_eq!(listed(&one, &shared).await, BTreeSet::from([x.clone()]));
    assert_eq!(listed(&two, &shared).await, BTreeSet::from([y.clone()]));
    assert_eq!(one.destroy_owner(&shared, None).await.unwrap(), 1);
    assert!(two.get(&y).await.unwrap().is_some());
    assert_eq!(listed(&two, &shared).await, BTreeSet::from([y.clone()]));
    // Clearing one store leaves the other's index.
    one.clear().await.unwrap();
    assert_eq!(listed(&two, &shared).await, BTreeSet::from([y]));
    two.clear().await.unwrap();
}

/// Index keys are not sessions: `len` does not count them, `clear` removes them; a store
/// whose sessions have no owner writes no index at all.
async fn index_keys_scenario(store: RedisStore, urls: &[String]) {
    let mut raw = RawAny::of(&store, urls).await;
    let owners: Vec<Owner> = (0..5).map(|i| owner(&format!("o{i}"))).collect();
    for by in &owners {
        store
            .set(&SessionId::generate(), &owned(json!({}), HOUR, by))
            .await
            .unwrap();
    }
    let plain = SessionId::generate();
    store.set(&plain, &session(json!({}), HOUR)).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 6);
    for by in &owners {
        let exists: bool = raw
            .query(redis::cmd("EXISTS").arg(store.owner_key_for(by)))
            .await;
        assert!(exists);
    }
    store.clear().await.unwrap();
    assert_eq!(store.len().await.unwrap(), 0);
    for by in &owners {
        let exists: bool = raw
            .query(redis::cmd("EXISTS").arg(store.owner_key_for(by)))
            .await;
        assert!(!exists, "clear left the index of {by:?}");
        assert!(store.sessions_of(by, false).await.unwrap().is_empty());
    }
}

/// An entry whose score is older than the grace is provably dead and is removed by the next
/// listing. A younger one whose session is absent is kept in a cluster (a write of it may
/// be between its index update and its write), and reclaimed by the listing on one server
/// (where the write and its index update are one script).
async fn pruning_scenario(store: RedisStore, urls: &[String]) {
    let mut raw = RawAny::of(&store, urls).await;
    let by = owner("pruned");
    let key = store.owner_key_for(&by);
    let live = SessionId::generate();
    store
        .set(&live, &owned(json!({}), HOUR, &by))
        .await
        .unwrap();
    let dead = SessionId::generate();
    let recent = SessionId::generate();
    let now = now_millis();
    let _: i64 = raw
        .query(
            redis::cmd("ZADD")
                .arg(&key)
                .arg(now - 10 * 60_000)
                .arg(dead.as_str())
                .arg(now - 1_000)
                .arg(recent.as_str()),
        )
        .await;
    assert_eq!(listed(&store, &by).await, BTreeSet::from([live.clone()]));
    let members: Vec<String> = raw
        .query(redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1))
        .await;
    let members: BTreeSet<String> = members.into_iter().collect();
    assert!(!members.contains(dead.as_str()), "{members:?}");
    assert_eq!(
        members.contains(recent.as_str()),
        store.is_cluster(),
        "{members:?}"
    );
    assert!(members.contains(live.as_str()), "{members:?}");
    store.clear().await.unwrap();
}

#[tokio::test]
async fn owners_round_trip_list_and_destroy() {
    let Some(url) = url() else { return };
    owners_scenario(store(&url).await, &[url]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_with_thousands_of_sessions() {
    let Some(url) = url() else { return };
    thousands_scenario(store(&url).await).await;
}

#[tokio::test]
async fn owners_are_separate_between_prefixes() {
    let Some(url) = url() else { return };
    isolation_scenario(store(&url).await, store(&url).await).await;
}

#[tokio::test]
async fn owner_index_keys_are_not_counted_and_are_cleared() {
    let Some(url) = url() else { return };
    index_keys_scenario(store(&url).await, &[url]).await;
}

#[tokio::test]
async fn owner_index_entries_are_pruned_only_when_provably_dead() {
    let Some(url) = url() else { return };
    pruning_scenario(store(&url).await, &[url]).await;
}

async fn cluster_store(urls: &[String]) -> RedisStore {
    RedisStore::cluster_builder(urls)
        .key_prefix(support::unique_name("sst:own:"))
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_owners() {
    let Some(urls) = cluster_urls() else { return };
    owners_scenario(cluster_store(&urls).await, &urls).await;
    thousands_scenario(cluster_store(&urls).await).await;
    isolation_scenario(cluster_store(&urls).await, cluster_store(&urls).await).await;
    index_keys_scenario(cluster_store(&urls).await, &urls).await;
    pruning_scenario(cluster_store(&urls).await, &urls).await;
}

/// A value written before owners existed (no owner field) still reads, as a session
/// without an owner, and takes one on its next write. A session without an owner is still
/// written byte for byte as before, with no index.
#[tokio::test]
async fn values_without_an_owner_field_still_read() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let id = SessionId::generate();
    let expires = now_millis() + 3_600_000;
    let _: () = raw
        .set_options(
            store.key_for(&id),
            format!("41:{expires}:{{\"legacy\":true}}"),
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PXAT(expires as u64)),
        )
        .await
        .unwrap();
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.version(), 41);
    assert_eq!(got.owner(), None);
    assert_eq!(got.get::<bool>("legacy").unwrap(), Some(true));
    assert!(store.touch(&id, SystemTime::now() + HOUR).await.unwrap());
    let ada = owner("ada");
    let v = store
        .set_if_version(&id, &got.clone().with_owner(Some(ada.clone())), 41)
        .await
        .unwrap();
    assert_eq!(v, 42);
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.owner(), Some(&ada));
    assert_eq!(listed(&store, &ada).await, BTreeSet::from([id.clone()]));
    let value: String = raw.get(store.key_for(&id)).await.unwrap();
    assert!(value.starts_with("42:"), "{value}");
    assert!(value.contains(":~3:ada{\"legacy\":true}"), "{value}");
    // Back to no owner: the value is in the old shape again.
    store.set(&id, &got.with_owner(None)).await.unwrap();
    let value: String = raw.get(store.key_for(&id)).await.unwrap();
    assert!(
        value.ends_with(":{\"legacy\":true}") && !value.contains('~'),
        "{value}"
    );
    store.clear().await.unwrap();
    // Unowned sessions write no index.
    let plain = SessionId::generate();
    store.set(&plain, &session(json!({}), HOUR)).await.unwrap();
    assert!(
        store
            .create(&SessionId::generate(), &session(json!({}), HOUR))
            .await
            .unwrap()
    );
    assert!(store.touch(&plain, SystemTime::now() + HOUR).await.unwrap());
    let keys: Vec<String> = raw.keys(format!("{}*", store.key_prefix())).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("owner:")), "{keys:?}");
    store.clear().await.unwrap();
}

/// `touch` keeps the owner on both of its paths: the expiry rewritten in place (same width)
/// and the value rebuilt (another width), and raises the index only when moving later.
#[tokio::test]
async fn touch_keeps_the_owner_whatever_the_expiry_width() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let by = owner("wide");
    let id = SessionId::generate();
    let far =
        Session::from_parts(serde_json::Map::new(), i64::MAX - 1, 0).with_owner(Some(by.clone()));
    store.set(&id, &far).await.unwrap();
    let soon = SystemTime::now() + HOUR;
    assert!(store.touch(&id, soon).await.unwrap());
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.owner(), Some(&by));
    assert_eq!(got.expires_at_millis(), session_stores::to_millis(soon));
    assert_eq!(listed(&store, &by).await, BTreeSet::from([id.clone()]));
    let farther = session_stores::from_millis(i64::MAX);
    assert!(store.touch(&id, farther).await.unwrap());
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.owner(), Some(&by));
    assert_eq!(got.expires_at_millis(), i64::MAX);
    assert_eq!(
        index_score(&mut raw, &store, &by, &id).await,
        i64::MAX as f64
    );
    // A key that can never expire by Redis's clock keeps an index without an expiry.
    let ttl: i64 = raw.pttl(store.owner_key_for(&by)).await.unwrap();
    assert_eq!(ttl, -1);
    assert_eq!(listed(&store, &by).await, BTreeSet::from([id]));
    store.clear().await.unwrap();
}

/// The score of `id` in `by`'s owner index (its latest expiry), read with a raw connection.
async fn index_score(
    raw: &mut redis::aio::MultiplexedConnection,
    store: &RedisStore,
    by: &Owner,
    id: &SessionId,
) -> f64 {
    redis::cmd("ZSCORE")
        .arg(store.owner_key_for(by))
        .arg(id.as_str())
        .query_async(raw)
        .await
        .unwrap()
}

/// How many times `command` ran on the server since its stats were last reset (commands
/// that scripts run count under their own names).
async fn calls_of(raw: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .unwrap();
    let head = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(head.as_str()))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// On one server a `touch` that moves an owned session later raises its index entry in its
/// own script: one round trip (one `EVALSHA`), as for a session without an owner. Its own
/// server, so that no other test's commands are counted.
#[tokio::test]
async fn owned_touch_is_one_round_trip_on_a_single_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let Some(_server) = start_redis(port, dir.path()) else {
        return;
    };
    wait_until_up(&url).await;
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let by = owner("touched");
    let id = SessionId::generate();
    let mut s = session(json!({ "n": 1 }), HOUR);
    s.set_owner(Some(by.clone()));
    store.set(&id, &s).await.unwrap();
    // Loads every script the touches below use, so that none is sent as a whole EVAL.
    assert!(store.touch(&id, SystemTime::now() + HOUR).await.unwrap());
    let mut expected = session_stores::to_millis(SystemTime::now() + HOUR);
    for (n, width_change) in [(1, false), (2, false), (3, true)] {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut raw)
            .await
            .unwrap();
        expected += 60_000 * n;
        if width_change {
            // A wider expiry rewrites the value instead of overwriting it in place.
            expected = 10_000_000_000_000 + n;
        }
        let at = session_stores::from_millis(expected);
        assert!(store.touch(&id, at).await.unwrap());
        assert_eq!(calls_of(&mut raw, "evalsha").await, 1, "touch {n}");
        assert_eq!(calls_of(&mut raw, "eval").await, 0, "touch {n}");
        let score = index_score(&mut raw, &store, &by, &id).await;
        assert_eq!(score, expected as f64, "touch {n}");
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            (got.expires_at_millis(), got.owner()),
            (expected, Some(&by))
        );
    }
    // Moving it earlier leaves the index as it was (scores only grow).
    let earlier = SystemTime::now() + HOUR;
    assert!(store.touch(&id, earlier).await.unwrap());
    assert_eq!(listed(&store, &by).await, BTreeSet::from([id.clone()]));
    store.destroy(&id).await.unwrap();
    assert!(
        index_of(&mut raw, &store.owner_key_for(&by))
            .await
            .is_empty()
    );
}

// ----- The exact owner index on one server -----

/// The ids in an owner's index, read with a raw connection.
async fn index_of(raw: &mut redis::aio::MultiplexedConnection, key: &str) -> BTreeSet<String> {
    let members: Vec<String> = raw.zrange(key, 0, -1).await.unwrap();
    members.into_iter().collect()
}

fn ids_of(ids: &[&SessionId]) -> BTreeSet<String> {
    ids.iter().map(|id| id.as_str().to_string()).collect()
}

/// On one server every operation that ends an owned session, or moves it to another owner
/// or to none, takes its entry out of the old owner's index in the same script: `destroy`,
/// `destroy_owner`, `set` and `set_if_version` with another owner or none, a write or a
/// `touch` to a past time. A rewrite by the same owner, a refused write and a `create` that
/// finds a live session keep it.
#[tokio::test]
async fn single_server_index_is_exact() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let (ada, bob) = (owner("ada {x}"), owner("bob é"));
    let (ada_key, bob_key) = (store.owner_key_for(&ada), store.owner_key_for(&bob));
    let ids: Vec<SessionId> = (0..9).map(|_| SessionId::generate()).collect();
    for id in &ids {
        store.set(id, &owned(json!({}), HOUR, &ada)).await.unwrap();
    }
    let all: Vec<&SessionId> = ids.iter().collect();
    assert_eq!(index_of(&mut raw, &ada_key).await, ids_of(&all));

    // Kept: the same owner again, a refused write, a create over a live session, a touch.
    let v = store
        .set(&ids[0], &owned(json!({"n": 1}), HOUR, &ada))
        .await
        .unwrap();
    let err = store
        .set_if_version(&ids[0], &owned(json!({}), HOUR, &bob), v + 7)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        !store
            .create(&ids[0], &owned(json!({}), HOUR, &bob))
            .await
            .unwrap()
    );
    assert!(
        store
            .touch(&ids[0], SystemTime::now() + 2 * HOUR)
            .await
            .unwrap()
    );
    assert_eq!(index_of(&mut raw, &ada_key).await, ids_of(&all));

    // Removed from ada's index, each by its own write.
    store.destroy(&ids[1]).await.unwrap();
    store
        .set(&ids[2], &owned(json!({}), HOUR, &bob))
        .await
        .unwrap();
    store.set(&ids[3], &session(json!({}), HOUR)).await.unwrap();
    let v4 = store.get(&ids[4]).await.unwrap().unwrap().version();
    store
        .set_if_version(&ids[4], &owned(json!({}), HOUR, &bob), v4)
        .await
        .unwrap();
    let v5 = store.get(&ids[5]).await.unwrap().unwrap().version();
    let past = Session::from_parts(serde_json::Map::new(), now_millis() - 1_000, 0)
        .with_owner(Some(ada.clone()));
    assert_eq!(store.set_if_version(&ids[5], &past, v5).await.unwrap(), 0);
    assert_eq!(store.set(&ids[6], &past).await.unwrap(), 0);
    assert!(
        store
            .touch(&ids[7], SystemTime::now() - Duration::from_secs(1))
            .await
            .unwrap()
    );
    for id in &ids[1..8] {
        assert!(
            store
                .get(id)
                .await
                .unwrap()
                .is_none_or(|s| s.owner() != Some(&ada)),
            "{id:?}"
        );
    }
    assert_eq!(
        index_of(&mut raw, &ada_key).await,
        ids_of(&[&ids[0], &ids[8]])
    );
    assert_eq!(
        index_of(&mut raw, &bob_key).await,
        ids_of(&[&ids[2], &ids[4]])
    );

    // destroy_owner: what it deletes and the dead entries it meets leave the index;
    // `except` keeps its entry.
    let absent = SessionId::generate();
    let foreign = SessionId::generate();
    let _: () = raw.rpush(store.key_for(&foreign), "a list").await.unwrap();
    let _: () = raw
        .zadd_multiple(
            &ada_key,
            &[
                (now_millis() + 60_000, absent.as_str()),
                (now_millis() + 60_000, foreign.as_str()),
                (now_millis() + 60_000, ids[2].as_str()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(store.destroy_owner(&ada, Some(&ids[8])).await.unwrap(), 1);
    assert_eq!(index_of(&mut raw, &ada_key).await, ids_of(&[&ids[8]]));
    assert_eq!(
        store.get(&ids[2]).await.unwrap().unwrap().owner(),
        Some(&bob)
    );
    let list: i64 = raw.llen(store.key_for(&foreign)).await.unwrap();
    assert_eq!(list, 1, "destroy_owner deleted a key that is not a session");
    assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
    let exists: bool = raw.exists(&ada_key).await.unwrap();
    assert!(!exists, "an emptied index is gone");

    // A listing reclaims dead entries and keeps the live ones, and those of sessions that
    // expired less than the grace ago (an application server whose clock runs behind may
    // still see them live).
    let live = SessionId::generate();
    store
        .set(&live, &owned(json!({}), HOUR, &bob))
        .await
        .unwrap();
    let just_expired = SessionId::generate();
    let at = now_millis() - 1_000;
    let _: () = raw
        .set_options(
            store.key_for(&just_expired),
            format!("5:{at}:~{}:{}{{}}", bob.as_str().len(), bob.as_str()),
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(60_000)),
        )
        .await
        .unwrap();
    let _: () = raw
        .zadd_multiple(
            &bob_key,
            &[
                (now_millis() + 60_000, absent.as_str()),
                (now_millis() + 60_000, foreign.as_str()),
                (now_millis() + 60_000, ids[0].as_str()),
                (at, just_expired.as_str()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        listed(&store, &bob).await,
        BTreeSet::from([ids[2].clone(), ids[4].clone(), live.clone()])
    );
    assert_eq!(
        index_of(&mut raw, &bob_key).await,
        ids_of(&[&ids[2], &ids[4], &live, &just_expired])
    );
    // With the data too.
    let _: () = raw
        .zadd(&bob_key, absent.as_str(), now_millis())
        .await
        .unwrap();
    assert_eq!(store.sessions_of(&bob, true).await.unwrap().len(), 3);
    assert!(!index_of(&mut raw, &bob_key).await.contains(absent.as_str()));

    // `destroy` of a key that is not a session deletes it, as `UNLINK` did.
    store.destroy(&foreign).await.unwrap();
    let exists: bool = raw.exists(store.key_for(&foreign)).await.unwrap();
    assert!(!exists);
    store.clear().await.unwrap();
}

/// A user who logs in and out again and again, and rounds of N new sessions then
/// `destroy_owner`: the owner's index never holds more than the live sessions. Prints the
/// time of `destroy` (unowned and owned) and of each `destroy_owner`.
#[tokio::test]
async fn single_server_index_stays_bounded() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let by = owner("churn");
    let key = store.owner_key_for(&by);
    let ids: Vec<SessionId> = (0..1000).map(|_| SessionId::generate()).collect();
    for id in &ids {
        store.set(id, &session(json!({}), HOUR)).await.unwrap();
    }
    let started = std::time::Instant::now();
    for id in &ids {
        store.destroy(id).await.unwrap();
    }
    let unowned = started.elapsed() / 1000;
    // Log in, log out.
    for id in &ids {
        assert!(
            store
                .create(id, &owned(json!({}), HOUR, &by))
                .await
                .unwrap()
        );
    }
    let started = std::time::Instant::now();
    for id in &ids {
        store.destroy(id).await.unwrap();
    }
    let owned_destroy = started.elapsed() / 1000;
    let entries: u64 = raw.zcard(&key).await.unwrap();
    assert_eq!(entries, 0);
    const N: usize = 300;
    let mut rounds = Vec::new();
    for round in 0..5 {
        for _ in 0..N {
            store
                .set(&SessionId::generate(), &owned(json!({}), HOUR, &by))
                .await
                .unwrap();
        }
        let entries: u64 = raw.zcard(&key).await.unwrap();
        assert_eq!(entries, N as u64, "round {round}");
        let started = std::time::Instant::now();
        assert_eq!(store.destroy_owner(&by, None).await.unwrap(), N as u64);
        rounds.push(started.elapsed());
        let entries: u64 = raw.zcard(&key).await.unwrap();
        assert_eq!(entries, 0, "round {round}");
    }
    eprintln!(
        "destroy: unowned {unowned:?}, owned {owned_destroy:?} each; destroy_owner of {N}, \
         round by round: {rounds:?}"
    );
    store.clear().await.unwrap();
}

/// `destroy_owner` and `sessions_of` racing writes of the same ids (tower-sessions saves a
/// session after another request deleted it: a `set` of an id being destroyed), `destroy`s,
/// owner changes and `touch`es: once all is done, every live session of the owner is in its
/// index, and the index holds nothing else that a listing would not reclaim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_server_index_never_loses_a_live_session() {
    let Some(url) = url() else { return };
    let store = Arc::new(store(&url).await);
    let mut raw = raw(&url).await;
    let (ada, bob) = (owner("racer"), owner("other"));
    let key = store.owner_key_for(&ada);
    let ids: Arc<Vec<SessionId>> = Arc::new((0..40).map(|_| SessionId::generate()).collect());
    let mut live_seen = 0;
    for round in 0..8u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..4u64 {
            let (store, ids, stop) = (Arc::clone(&store), Arc::clone(&ids), Arc::clone(&stop));
            let (ada, bob) = (ada.clone(), bob.clone());
            tasks.spawn(async move {
                let mut n = writer + round;
                while !stop.load(Ordering::SeqCst) {
                    let id = &ids[(n % 40) as usize];
                    match n % 7 {
                        0 => store.destroy(id).await.unwrap(),
                        1 => {
                            store.set(id, &owned(json!({}), HOUR, &bob)).await.unwrap();
                        }
                        2 => {
                            store.set(id, &session(json!({}), HOUR)).await.unwrap();
                        }
                        3 => {
                            store.touch(id, SystemTime::now() + HOUR).await.unwrap();
                        }
                        4 => {
                            store
                                .create(id, &owned(json!({}), HOUR, &ada))
                                .await
                                .unwrap();
                        }
                        _ => {
                            store.set(id, &owned(json!({}), HOUR, &ada)).await.unwrap();
                        }
                    }
                    n += 5;
                }
            });
        }
        for lister in 0..2 {
            let (store, stop, ada) = (Arc::clone(&store), Arc::clone(&stop), ada.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if lister == 0 {
                        store.destroy_owner(&ada, None).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(round % 3)).await;
                    } else {
                        store.sessions_of(&ada, false).await.unwrap();
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        stop.store(true, Ordering::SeqCst);
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let indexed = index_of(&mut raw, &key).await;
        let mut live = BTreeSet::new();
        for id in ids.iter() {
            if store
                .get(id)
                .await
                .unwrap()
                .is_some_and(|s| s.owner() == Some(&ada))
            {
                assert!(
                    indexed.contains(id.as_str()),
                    "round {round}: {id:?} is live but not indexed"
                );
                live.insert(id.clone());
            }
        }
        assert_eq!(listed(&store, &ada).await, live, "round {round}");
        let ids_live: Vec<&SessionId> = live.iter().collect();
        assert_eq!(
            index_of(&mut raw, &key).await,
            ids_of(&ids_live),
            "round {round}"
        );
        live_seen += live.len();
    }
    eprintln!("{live_seen} live sessions of the owner checked at the ends of the rounds");
    store.clear().await.unwrap();
}

/// Scans every page of `store` with `limit`, running `between` after each page; panics on a
/// page over the limit or an id returned twice.
async fn scan_all(
    store: &RedisStore,
    limit: usize,
    mut between: impl AsyncFnMut(usize),
) -> Vec<(SessionId, Session)> {
    let mut cursor: Option<session_stores::ScanCursor> = None;
    let mut seen = BTreeSet::new();
    let mut all = Vec::new();
    for page in 0..100_000 {
        let got = store.scan(cursor.as_ref(), limit).await.expect("scan");
        assert!(got.sessions.len() <= limit.max(1));
        for (id, session) in got.sessions {
            assert!(seen.insert(id.clone()), "{id:?} returned twice");
            all.push((id, session));
        }
        match got.next {
            None => return all,
            Some(next) => cursor = Some(next),
        }
        between(page).await;
    }
    panic!("the scan did not end");
}

/// The scan behaviour shared by a single server and a cluster: `store` and `twin` have the
/// same prefix, `other` another one; `raw_set` writes a raw key.
async fn scans_behave(store: RedisStore, twin: RedisStore, other: RedisStore) {
    use session_stores::ScanCursor;
    // An empty store's scan ends with nothing. Not necessarily in one page: a cluster page
    // stops walking slots when its time budget is spent (a loaded machine), returning an
    // empty page with `next`, which the contract allows.
    assert!(scan_all(&store, 10, async |_| {}).await.is_empty());
    let owner = Owner::new("scan-owner").unwrap();
    let mut ids = BTreeSet::new();
    for n in 0..300 {
        let id = SessionId::generate();
        let mut s = session(json!({ "n": n }), Duration::from_secs(3600));
        if n % 4 == 0 {
            s.set_owner(Some(owner.clone()));
        }
        store.set(&id, &s).await.unwrap();
        ids.insert(id);
    }
    // Expired ones (still in Redis a moment) and another prefix's are skipped; the owner
    // index key is no session.
    for _ in 0..5 {
        let s = session(json!({}), Duration::from_millis(150));
        store.set(&SessionId::generate(), &s).await.unwrap();
    }
    other
        .set(
            &SessionId::generate(),
            &session(json!({}), Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for limit in [1, 7, 64, 10_000] {
        let all = scan_all(&store, limit, async |_| {}).await;
        let got: BTreeSet<SessionId> = all.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(got, ids, "limit {limit}");
        if limit == 7 {
            for (id, s) in &all {
                assert_eq!(store.get(id).await.unwrap().as_ref(), Some(s));
            }
        }
    }
    // Writes and destroys between pages: every session live throughout comes once.
    let steady: Vec<SessionId> = ids.iter().cloned().collect();
    let doomed: Vec<SessionId> = steady.iter().step_by(10).cloned().collect();
    let all = scan_all(&store, 9, async |page| {
        for _ in 0..5 {
            let s = session(json!({ "new": page }), Duration::from_secs(60));
            store.set(&SessionId::generate(), &s).await.unwrap();
        }
        if let Some(id) = doomed.get(page) {
            store.destroy(id).await.unwrap();
        }
        let id = &steady[(page * 7) % steady.len()];
        let s = session(json!({ "rewritten": page }), Duration::from_secs(3600));
        store.set(id, &s).await.unwrap();
    })
    .await;
    let got: BTreeSet<SessionId> = all.iter().map(|(id, _)| id.clone()).collect();
    for id in steady.iter().filter(|id| !doomed.contains(id)) {
        assert!(got.contains(id), "{id:?} live throughout was not returned");
    }
    // A cursor saved as text resumes on another store instance with the same prefix.
    let first = store.scan(None, 50).await.unwrap();
    let saved = first.next.expect("more pages").as_str().to_string();
    let mut seen: BTreeSet<SessionId> = first.sessions.into_iter().map(|(id, _)| id).collect();
    let mut cursor = Some(ScanCursor::new(saved));
    while let Some(at) = cursor {
        let page = twin.scan(Some(&at), 50).await.unwrap();
        for (id, _) in page.sessions {
            assert!(seen.insert(id), "resumed scan repeated a session");
        }
        cursor = page.next;
    }
    assert_eq!(seen.len() as u64, store.len().await.unwrap());
    // Foreign cursors are configuration errors.
    for text in [
        "",
        "1:abc",
        "redis1:x:1:",
        "redis1:s:x:",
        "redis1:c:99999:",
        "redis1:s:1:a b",
    ] {
        let err = store
            .scan(Some(&ScanCursor::new(text)), 5)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{text:?}");
    }
    let foreign = if store.is_cluster() {
        "redis1:s:0:"
    } else {
        "redis1:c:0:"
    };
    let err = store
        .scan(Some(&ScanCursor::new(foreign)), 5)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    // The other prefix sees only its own session.
    assert_eq!(scan_all(&other, 3, async |_| {}).await.len(), 1);
    store.clear().await.unwrap();
    other.clear().await.unwrap();
    assert!(scan_all(&store, 5, async |_| {}).await.is_empty());
}

#[tokio::test]
async fn scans_return_each_session_once_on_a_single_server() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let twin = RedisStore::builder(&url)
        .key_prefix(store.key_prefix())
        .build()
        .unwrap();
    scans_behave(store, twin, self::store(&url).await).await;
}

#[tokio::test]
async fn scans_return_each_session_once_on_a_cluster() {
    let Some(urls) = cluster_urls() else { return };
    let build = |prefix: &str| {
        RedisStore::cluster_builder(&urls)
            .key_prefix(prefix)
            .build()
            .unwrap()
    };
    let prefix = support::unique_name("sst:scan:");
    scans_behave(
        build(&prefix),
        build(&prefix),
        build(&support::unique_name("sst:scan:")),
    )
    .await;
}

/// `destroy` removes whatever is under the session's key: a session with and without an
/// owner (and the owner's index entry), a value this store cannot read, a key of another
/// type (a set, a hash), as `UNLINK` would; on a single server it reads the value back
/// (`GETDEL`) to find an owner, which a key of another type refuses (`WRONGTYPE`).
#[tokio::test]
async fn destroy_removes_any_key_under_the_id() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut conn = raw(&url).await;
    let id = SessionId::generate();
    let key = store.key_for(&id);
    let exists = async |conn: &mut redis::aio::MultiplexedConnection| -> bool {
        conn.exists(&key).await.unwrap()
    };
    store
        .set(&id, &session(json!({"n": 1}), HOUR))
        .await
        .unwrap();
    store.destroy(&id).await.unwrap();
    assert!(!exists(&mut conn).await);
    let ada = Owner::new("ada-destroy").unwrap();
    let mut owned = session(json!({"n": 2}), HOUR);
    owned.set_owner(Some(ada.clone()));
    store.set(&id, &owned).await.unwrap();
    store.destroy(&id).await.unwrap();
    assert!(!exists(&mut conn).await);
    let entries: u64 = conn.zcard(store.owner_key_for(&ada)).await.unwrap();
    assert_eq!(entries, 0, "the owner's index kept the destroyed session");
    let _: () = conn.set(&key, "not a session").await.unwrap();
    store.destroy(&id).await.unwrap();
    assert!(!exists(&mut conn).await);
    let _: () = conn.sadd(&key, "x").await.unwrap();
    store.destroy(&id).await.unwrap();
    assert!(!exists(&mut conn).await, "a set under the id");
    let _: () = conn.hset(&key, "f", "v").await.unwrap();
    store.destroy(&id).await.unwrap();
    assert!(!exists(&mut conn).await, "a hash under the id");
    // Destroying what is not there is fine.
    store.destroy(&id).await.unwrap();
}

/// A key of another type, or a value this store cannot read, under the prefix is reported
/// by a scan as an undecodable entry with the Decode error naming the session, as `get`
/// gives it (and the scan goes on).
#[tokio::test]
async fn scans_report_unreadable_values_as_get_does() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut conn = raw(&url).await;
    let id = SessionId::new("unreadable").unwrap();
    let reported = async |store: &RedisStore| {
        let page = store.scan(None, 10).await.unwrap();
        assert!(page.sessions.is_empty() && page.next.is_none());
        assert_eq!(page.undecodable.len(), 1);
        let entry = &page.undecodable[0];
        assert_eq!(entry.id.as_ref(), Some(&id));
        assert_eq!(entry.error.kind(), ErrorKind::Decode);
        assert_eq!(entry.error.session(), Some(&id.hint()));
    };
    let _: () = conn.set(store.key_for(&id), "not a session").await.unwrap();
    reported(&store).await;
    assert_eq!(store.get(&id).await.unwrap_err().kind(), ErrorKind::Decode);
    let _: () = conn.del(store.key_for(&id)).await.unwrap();
    let _: () = conn.sadd(store.key_for(&id), "x").await.unwrap();
    reported(&store).await;
    let _: () = conn.del(store.key_for(&id)).await.unwrap();
    assert!(scan_all(&store, 10, async |_| {}).await.is_empty());
}

/// A test-owned `redis-server` (its files in the returned directory) and a store on it with
/// the key prefix `prefix` and 5 s response and operation timeouts, patient enough for the
/// tests that hold the server's writes with `CLIENT PAUSE`; `None` (a skip) when
/// `redis-server` cannot run.
async fn patient_store_on_own_server(
    prefix: &str,
) -> Option<(tempfile::TempDir, tokio::process::Child, String, RedisStore)> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = start_redis_with(port, dir.path(), &[])?;
    wait_until_up(&url).await;
    let store = RedisStore::builder(&url)
        .key_prefix(prefix)
        .response_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    Some((dir, server, url, store))
}

/// A write that reaches Redis after the session's expiry by Redis' own clock (here: writes
/// paused with `CLIENT PAUSE` until after it) stores nothing. Before the fix, `SET .. PXAT`
/// of an expiry in the past stored nothing and the `APPEND` that followed made a key of the
/// payload alone, with no expiry: `get` of that id was a `Decode` error forever, `len`
/// counted it and scans stopped at it. The owned write (with the owner index) likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_lands_after_its_expiry_leaves_no_immortal_key() {
    let Some((_dir, mut server, url, store)) = patient_store_on_own_server("late:").await else {
        return;
    };
    let store = Arc::new(store);
    let mut admin = raw(&url).await;
    for owned in [false, true] {
        let id = SessionId::generate();
        let mut late = session(
            json!({"payload": "x".repeat(64)}),
            Duration::from_millis(50),
        );
        if owned {
            late.set_owner(Some(Owner::new("late-owner").unwrap()));
        }
        // Writes wait on the server until 300 ms from now, well past the 50 ms expiry.
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(300)
            .arg("WRITE")
            .query_async::<()>(&mut admin)
            .await
            .unwrap();
        let written = store.set(&id, &late).await.unwrap();
        assert_eq!(
            written, 0,
            "owned {owned}: the session had expired when it landed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let key = store.key_for(&id);
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(exists, 0, "owned {owned}: a key outlived its session");
        assert!(store.get(&id).await.unwrap().is_none());
        assert_eq!(store.len().await.unwrap(), 0, "owned {owned}");
        assert!(
            scan_all(&store, 10, async |_| {}).await.is_empty(),
            "owned {owned}"
        );
    }
    server.kill().await.unwrap();
}

/// The application's clock 500 ms behind Redis': each write script decides "expired?" on the
/// application's clock, which it is sent, while Redis expires keys by its own. Here every
/// write waits 600 ms on the server (`CLIENT PAUSE .. WRITE`), so that its `now` is 600 ms
/// behind Redis' when it runs, for a session that expires 100 ms after that `now`: already
/// past by Redis' clock. Whatever each kind of write (`set` with and without an owner, a
/// compare-and-set from a live version and from none, `create`, `touch`) answers, it leaves
/// no key without an expiry, and the session is absent for `get`, `len` and scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_a_clock_behind_the_servers_leave_no_immortal_key() {
    let Some((_dir, mut server, url, store)) = patient_store_on_own_server("skew:").await else {
        return;
    };
    let mut admin = raw(&url).await;
    let soon = |owned: bool| {
        let mut soon = session(
            json!({"payload": "x".repeat(64)}),
            Duration::from_millis(100),
        );
        if owned {
            soon.set_owner(Some(Owner::new("skewed").unwrap()));
        }
        soon
    };
    for kind in [
        "set",
        "owned set",
        "cas from live",
        "cas from none",
        "create",
        "touch",
    ] {
        let id = SessionId::generate();
        let live = store.set(&id, &session(json!({}), HOUR)).await.unwrap();
        if matches!(kind, "cas from none" | "create") {
            store.destroy(&id).await.unwrap();
        }
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(600)
            .arg("WRITE")
            .query_async::<()>(&mut admin)
            .await
            .unwrap();
        let answer = match kind {
            "set" => store.set(&id, &soon(false)).await.map(|v| v.to_string()),
            "owned set" => store.set(&id, &soon(true)).await.map(|v| v.to_string()),
            "cas from live" => store
                .set_if_version(&id, &soon(false), live)
                .await
                .map(|v| v.to_string()),
            "cas from none" => store
                .set_if_version(&id, &soon(false), 0)
                .await
                .map(|v| v.to_string()),
            "create" => store.create(&id, &soon(false)).await.map(|c| c.to_string()),
            _ => store
                .touch(&id, SystemTime::now() + Duration::from_millis(100))
                .await
                .map(|t| t.to_string()),
        };
        let answer = answer.unwrap_or_else(|err| panic!("{kind}: {err:?}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("skew:*")
                .query_async(&mut admin)
                .await
                .unwrap();
            for key in keys {
                let ttl: i64 = redis::cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut admin)
                    .await
                    .unwrap();
                assert!(ttl != -1, "{kind} (answered {answer}): {key} has no expiry");
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert!(store.get(&id).await.unwrap().is_none(), "{kind}");
        assert_eq!(store.len().await.unwrap(), 0, "{kind}");
        assert!(
            scan_all(&store, 10, async |_| {}).await.is_empty(),
            "{kind}"
        );
    }
    server.kill().await.unwrap();
}

/// `admin::damaged` on a cluster: session keys with no expiry, spread over every primary, are
/// all found and removed, and nothing else.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_keys_are_found_and_removed_on_every_primary_of_a_cluster() {
    let Some(urls) = support::service_urls("SESSION_STORES_REDIS_CLUSTER_URLS", 7001) else {
        return;
    };
    let tag = support::unique_name("damaged_");
    let hosts: Vec<&str> = urls
        .iter()
        .map(|url| url.trim_start_matches("redis://").trim_end_matches('/'))
        .collect();
    let url = format!("redis+cluster://{}?key_prefix={tag}:", hosts.join(","));
    let store = session_stores::connect(&url).await.unwrap();
    let live = SessionId::generate();
    store
        .set(&live, &Session::new(Duration::from_secs(3600)))
        .await
        .unwrap();
    let client = redis::cluster::ClusterClient::new(urls.clone()).unwrap();
    let mut raw = client.get_async_connection().await.unwrap();
    for _ in 0..20 {
        redis::cmd("SET")
            .arg(format!("{tag}:{}", SessionId::generate().as_str()))
            .arg(r#"{"cart":1}"#)
            .query_async::<()>(&mut raw)
            .await
            .unwrap();
    }
    assert_eq!(store.len().await.unwrap(), 21);
    let found = session_stores::admin::damaged(&url, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.found, found.removed), (20, 0));
    assert_eq!(store.len().await.unwrap(), 21, "finding removes nothing");
    let repaired = session_stores::admin::damaged(&url, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((repaired.found, repaired.removed), (20, 20));
    assert_eq!(store.len().await.unwrap(), 1);
    assert!(store.get(&live).await.unwrap().is_some());
    store.clear().await.unwrap();
}

/// Values the store cannot read (no head, a cut head, data that is not JSON or not an
/// object, bytes that are not text) and a key of another type under the prefix never stop a
/// scan: each is reported in `undecodable` with its id, and the scan goes on past it, in
/// pages of every size. Before, the scan failed with `Decode` at the first one.
#[tokio::test]
async fn unreadable_values_never_stop_a_scan() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let mut bad = std::collections::BTreeSet::new();
    for value in [
        &b"not a session"[..],
        b"1:2",
        b"1:99999999999999:not json",
        b"1:99999999999999:[1,2]",
        b"\xff\xfe\x00",
    ] {
        let id = SessionId::generate();
        let _: () = raw.set(store.key_for(&id), value).await.unwrap();
        bad.insert(id);
    }
    let id = SessionId::generate();
    let _: () = raw.hset(store.key_for(&id), "f", "v").await.unwrap();
    bad.insert(id);
    let mut good = std::collections::BTreeSet::new();
    for n in 0..3 {
        let id = SessionId::generate();
        store
            .set(&id, &session(json!({ "n": n }), HOUR))
            .await
            .unwrap();
        good.insert(id);
    }
    for limit in [1, 2, 100] {
        let (mut seen, mut reported) = (std::collections::BTreeSet::new(), Vec::new());
        let mut cursor = None;
        loop {
            let page = store.scan(cursor.as_ref(), limit).await.unwrap();
            seen.extend(page.sessions.into_iter().map(|(id, _)| id));
            for entry in page.undecodable {
                assert_eq!(entry.error.kind(), ErrorKind::Decode);
                reported.push(entry.id.unwrap());
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, good, "limit {limit}");
        assert_eq!(reported.len(), bad.len(), "limit {limit}: reported twice?");
        assert_eq!(
            reported
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
            bad
        );
    }
    store.clear().await.unwrap();
}

// ----- Lifetimes: absolute expiry and rotation -----

const MINUTE: Duration = Duration::from_secs(60);

/// The stored value of `id`, as bytes (`None` if absent).
async fn stored(raw: &mut RawAny, store: &RedisStore, id: &SessionId) -> Option<Vec<u8>> {
    raw.query(redis::cmd("GET").arg(store.key_for(id))).await
}

/// A session with an absolute expiry `absolute` from now, and `idle` as its expiry.
fn bounded(data: serde_json::Value, idle: Duration, absolute: Duration) -> Session {
    let mut session = session(data, idle);
    session.set_absolute_expiry_millis(Some(
        now_millis() + i64::try_from(absolute.as_millis()).unwrap(),
    ));
    session
}

/// Writes and touches cap the expiry at the absolute expiry (the value's `@` field and
/// Redis' own expiry both), a later write keeps the earlier absolute expiry (written with
/// none or a later one), and a write past it deletes the session.
async fn absolute_scenario(store: RedisStore, urls: &[String]) {
    let mut raw = RawAny::of(&store, urls).await;
    assert!(store.capabilities().absolute_expiry);
    let id = SessionId::generate();
    let first = bounded(json!({"n": 1}), HOUR, MINUTE);
    let abs = first.absolute_expiry_millis().unwrap();
    let v1 = store.set(&id, &first).await.unwrap();
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.absolute_expiry_millis(), Some(abs));
    assert_eq!(got.expires_at_millis(), abs, "the write caps the expiry");
    let value = stored(&mut raw, &store, &id).await.unwrap();
    assert_eq!(
        value,
        format!("{v1}:{abs}:@{abs}:{{\"n\":1}}").into_bytes(),
        "the value format"
    );
    let pttl: i64 = raw.query(redis::cmd("PTTL").arg(store.key_for(&id))).await;
    assert!(
        pttl > 0 && pttl <= 60_000,
        "Redis' expiry is capped too: {pttl}"
    );
    // A later write without one, or with a later one, keeps the earlier.
    let mut next = session(json!({"n": 2}), HOUR);
    store.set_if_version(&id, &next, v1).await.unwrap();
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.absolute_expiry_millis(), Some(abs));
    assert_eq!(got.expires_at_millis(), abs);
    next.set_absolute_expiry_millis(Some(abs + 3_600_000));
    store.set(&id, &next).await.unwrap();
    assert_eq!(
        store
            .get(&id)
            .await
            .unwrap()
            .unwrap()
            .absolute_expiry_millis(),
        Some(abs)
    );
    // An earlier one wins.
    next.set_absolute_expiry_millis(Some(abs - 10_000));
    store.set(&id, &next).await.unwrap();
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.absolute_expiry_millis(), Some(abs - 10_000));
    assert_eq!(got.expires_at_millis(), abs - 10_000);
    // touch caps (and still returns true), in place or not.
    assert!(store.touch(&id, SystemTime::now() + HOUR).await.unwrap());
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().expires_at_millis(),
        abs - 10_000
    );
    assert!(
        store
            .touch(&id, SystemTime::now() + Duration::from_secs(10))
            .await
            .unwrap()
    );
    let got = store.get(&id).await.unwrap().unwrap();
    assert!(got.expires_at_millis() < abs - 10_000);
    assert_eq!(got.absolute_expiry_millis(), Some(abs - 10_000));
    // A write whose absolute expiry is past deletes the session and returns 0.
    next.set_absolute_expiry_millis(Some(now_millis() - 1));
    assert_eq!(store.set(&id, &next).await.unwrap(), 0);
    assert!(store.get(&id).await.unwrap().is_none());
    assert!(stored(&mut raw, &store, &id).await.is_none());
    // A new incarnation stores what it carries: create caps too.
    let fresh = bounded(json!({}), HOUR, MINUTE);
    assert!(store.create(&id, &fresh).await.unwrap());
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        got.expires_at_millis(),
        fresh.absolute_expiry_millis().unwrap()
    );
    // A write over an expired (absent) one starts afresh with what it carries.
    store.destroy(&id).await.unwrap();
    let owned_one = bounded(json!({}), HOUR, MINUTE).with_owner(Some(owner("abs")));
    store.set(&id, &owned_one).await.unwrap();
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.owner(), Some(&owner("abs")));
    assert_eq!(
        got.absolute_expiry_millis(),
        owned_one.absolute_expiry_millis()
    );
    // A touch past the absolute expiry deletes it (as a past touch does).
    let mut short = owned_one.clone();
    short.set_absolute_expiry_millis(Some(now_millis() + 200));
    let id2 = SessionId::generate();
    store.set(&id2, &short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.get(&id2).await.unwrap().is_none());
    assert!(!store.touch(&id2, SystemTime::now() + HOUR).await.unwrap());
    store.clear().await.unwrap();
}

#[tokio::test]
async fn absolute_expiry_caps_writes_and_touch() {
    let Some(url) = url() else { return };
    absolute_scenario(store(&url).await, &[url]).await;
}

/// Values written before the absolute expiry and rotation existed (no `@`, no `>`) read as
/// sessions without an absolute expiry, and a write gives them one.
#[tokio::test]
async fn values_without_the_new_fields_still_read() {
    let Some(url) = url() else { return };
    let store = store(&url).await;
    let mut raw = raw(&url).await;
    let id = SessionId::generate();
    let expiry = now_millis() + 3_600_000;
    let _: () = raw
        .set(store.key_for(&id), format!("5:{expiry}:~3:ada{{\"a\":1}}"))
        .await
        .unwrap();
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.version(), 5);
    assert_eq!(got.absolute_expiry_millis(), None);
    assert_eq!(got.owner(), Some(&owner("ada")));
    assert!(store.touch(&id, SystemTime::now() + HOUR).await.unwrap());
    let abs = now_millis() + 60_000;
    let mut next = got.clone();
    next.set_absolute_expiry_millis(Some(abs));
    assert_eq!(store.set_if_version(&id, &next, 5).await.unwrap(), 6);
    let value: Vec<u8> = raw.get(store.key_for(&id)).await.unwrap();
    assert_eq!(
        value,
        format!("6:{abs}:@{abs}:~3:ada{{\"a\":1}}").into_bytes()
    );
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(
        store.sessions_of(&owner("ada"), false).await.unwrap().len(),
        1
    );
    store.clear().await.unwrap();
}

/// `rotate` and the rotated id: Moved / Absent / Taken, the old id read-only for its
/// grace and resolving only while the new session lives, not rotated again; `destroy` of
/// it ends the new one; `len`, `scan`, `sessions_of` and `destroy_owner` skip it.
async fn rotation_scenario(store: RedisStore, urls: &[String]) {
    let mut raw = RawAny::of(&store, urls).await;
    assert!(store.capabilities().rotation);
    let who = owner("rotating");
    let old = SessionId::generate();
    let new = SessionId::generate();
    let mut first = owned(json!({"n": 1}), HOUR, &who);
    first.set_absolute_expiry_millis(Some(now_millis() + 2 * 3_600_000));
    let v1 = store.set(&old, &first).await.unwrap();
    // Absent / Taken.
    let nobody = SessionId::generate();
    assert_eq!(
        store.rotate(&nobody, &new, MINUTE).await.unwrap(),
        session_stores::Rotation::Absent
    );
    assert_eq!(
        store.rotate(&old, &old, MINUTE).await.unwrap(),
        session_stores::Rotation::Taken
    );
    let busy = SessionId::generate();
    store.set(&busy, &session(json!({}), HOUR)).await.unwrap();
    assert_eq!(
        store.rotate(&old, &busy, MINUTE).await.unwrap(),
        session_stores::Rotation::Taken
    );
    assert_eq!(store.get(&old).await.unwrap().unwrap().version(), v1);
    // An expired leftover under new is replaced.
    let leftover = format!("9:{}:{{}}", now_millis() - 1000);
    let _: () = raw
        .query(
            redis::cmd("SET")
                .arg(store.key_for(&new))
                .arg(leftover)
                .arg("EX")
                .arg(60),
        )
        .await;
    // Moved.
    let moved = store.rotate(&old, &new, MINUTE).await.unwrap();
    let session_stores::Rotation::Moved { version } = moved else {
        panic!("{moved:?}")
    };
    assert_eq!(version, v1 + 1);
    let under_new = store.get(&new).await.unwrap().unwrap();
    assert_eq!(under_new.version(), v1 + 1);
    assert_eq!(under_new.owner(), Some(&who));
    assert_eq!(under_new.data(), first.data());
    assert_eq!(under_new.expires_at_millis(), first.capped_expiry_millis());
    assert_eq!(
        under_new.absolute_expiry_millis(),
        first.absolute_expiry_millis()
    );
    // The old id: a snapshot, its own version, an expiry within the grace.
    let snapshot = store.get(&old).await.unwrap().unwrap();
    assert!(snapshot.is_rotated() && !under_new.is_rotated());
    assert_eq!(snapshot.version(), v1);
    assert_eq!(snapshot.data(), first.data());
    assert!(snapshot.expires_at_millis() <= now_millis() + 60_000);
    let value = stored(&mut raw, &store, &old).await.unwrap();
    let moved_field = format!(">{}:{}~", new.as_str().len(), new.as_str());
    assert!(
        value
            .windows(moved_field.len())
            .any(|w| w == moved_field.as_bytes()),
        "{}",
        String::from_utf8_lossy(&value)
    );
    // A write under new is not seen through old.
    let mut changed = under_new.clone();
    changed.insert("n", 2).unwrap();
    let v3 = store.set_if_version(&new, &changed, version).await.unwrap();
    assert_eq!(
        store
            .get(&old)
            .await
            .unwrap()
            .unwrap()
            .get::<i64>("n")
            .unwrap(),
        Some(1)
    );
    // Read-only: writes, CAS, touch, create, rotate through old.
    let err = store.set(&old, &changed).await.unwrap_err();
    assert!(
        matches!(err, session_stores::Error::Rotated { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = store.set_if_version(&old, &changed, v1).await.unwrap_err();
    assert!(
        matches!(err, session_stores::Error::Rotated { .. }),
        "{err:?}"
    );
    let err = store.set_if_version(&old, &changed, 0).await.unwrap_err();
    assert!(
        matches!(err, session_stores::Error::Rotated { .. }),
        "{err:?}"
    );
    let mut gone = changed.clone();
    gone.set_expires_at(SystemTime::now() - MINUTE);
    assert!(
        store.set(&old, &gone).await.is_err(),
        "a past write through old changes nothing"
    );
    assert!(!store.touch(&old, SystemTime::now() + HOUR).await.unwrap());
    assert!(!store.create(&old, &changed).await.unwrap());
    let elsewhere = SessionId::generate();
    assert_eq!(
        store.rotate(&old, &elsewhere, MINUTE).await.unwrap(),
        session_stores::Rotation::Absent
    );
    assert!(store.get(&elsewhere).await.unwrap().is_none());
    // Rotated ids are not sessions: len, scan, sessions_of, destroy_owner.
    assert_eq!(store.len().await.unwrap(), 2, "new and busy, not old");
    let page = store.scan(None, 100).await.unwrap();
    let scanned: BTreeSet<SessionId> = page.sessions.iter().map(|(id, _)| id.clone()).collect();
    assert!(
        scanned.contains(&new) && !scanned.contains(&old),
        "{scanned:?}"
    );
    assert_eq!(listed(&store, &who).await, BTreeSet::from([new.clone()]));
    // A rotated id blocks a rotation onto it (Taken).
    let third = SessionId::generate();
    store.set(&third, &session(json!({}), HOUR)).await.unwrap();
    assert_eq!(
        store.rotate(&third, &old, MINUTE).await.unwrap(),
        session_stores::Rotation::Taken
    );
    // destroy_owner keeping new keeps old's grace; then counts only new.
    assert_eq!(store.destroy_owner(&who, Some(&new)).await.unwrap(), 0);
    assert!(store.get(&old).await.unwrap().is_some());
    assert_eq!(store.destroy_owner(&who, None).await.unwrap(), 1);
    assert!(store.get(&new).await.unwrap().is_none());
    assert!(
        store.get(&old).await.unwrap().is_none(),
        "after destroy_owner"
    );
    let _ = v3;

    // After destroy(new).
    let (a, b) = (SessionId::generate(), SessionId::generate());
    store.set(&a, &owned(json!({}), HOUR, &who)).await.unwrap();
    assert!(matches!(
        store.rotate(&a, &b, MINUTE).await.unwrap(),
        session_stores::Rotation::Moved { .. }
    ));
    assert!(store.get(&a).await.unwrap().is_some());
    store.destroy(&b).await.unwrap();
    assert!(store.get(&a).await.unwrap().is_none(), "after destroy(new)");
    // After a second rotate.
    let (a, b, c) = (
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
    );
    store.set(&a, &session(json!({}), HOUR)).await.unwrap();
    store.rotate(&a, &b, MINUTE).await.unwrap();
    assert!(matches!(
        store.rotate(&b, &c, MINUTE).await.unwrap(),
        session_stores::Rotation::Moved { .. }
    ));
    assert!(
        store.get(&a).await.unwrap().is_none(),
        "after a second rotate"
    );
    assert!(store.get(&b).await.unwrap().is_some());
    assert!(store.get(&c).await.unwrap().is_some());
    // destroy(old) ends new.
    store.destroy(&b).await.unwrap();
    assert!(
        store.get(&c).await.unwrap().is_none(),
        "destroy(old) ends new"
    );
    // After the grace; a grace of zero ends old at once.
    let (a, b) = (SessionId::generate(), SessionId::generate());
    store.set(&a, &session(json!({}), HOUR)).await.unwrap();
    store
        .rotate(&a, &b, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(store.get(&a).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.get(&a).await.unwrap().is_none(), "after the grace");
    // ... and once its grace is over, a write through old writes as over nothing.
    assert!(store.create(&a, &session(json!({}), HOUR)).await.unwrap());
    let (a, b) = (SessionId::generate(), SessionId::generate());
    store.set(&a, &owned(json!({}), HOUR, &who)).await.unwrap();
    store.rotate(&a, &b, Duration::ZERO).await.unwrap();
    assert!(store.get(&a).await.unwrap().is_none());
    assert!(stored(&mut raw, &store, &a).await.is_none());
    assert!(store.get(&b).await.unwrap().is_some());
    store.clear().await.unwrap();
}

#[tokio::test]
async fn rotation_moves_the_session_and_the_old_id_is_read_only() {
    let Some(url) = url() else { return };
    rotation_scenario(store(&url).await, &[url]).await;
}

/// A compare-and-set through old racing a rotate: either the write lands first and is what
/// moves to new, or it fails with `Rotated` (or a conflict); never both, never lost.
async fn rotation_race_scenario(store: RedisStore) {
    let store = Arc::new(store);
    for round in 0..40 {
        let old = SessionId::generate();
        let new = SessionId::generate();
        let v = store
            .set(&old, &session(json!({"n": 0}), HOUR))
            .await
            .unwrap();
        let writer = {
            let (store, old) = (Arc::clone(&store), old.clone());
            tokio::spawn(async move {
                store
                    .set_if_version(&old, &session(json!({"n": 1}), HOUR), v)
                    .await
            })
        };
        let rotator = {
            let (store, old, new) = (Arc::clone(&store), old.clone(), new.clone());
            tokio::spawn(async move { store.rotate(&old, &new, MINUTE).await })
        };
        let written = writer.await.unwrap();
        let rotated = rotator.await.unwrap().unwrap();
        let session_stores::Rotation::Moved { version } = rotated else {
            panic!("round {round}: {rotated:?}")
        };
        let moved = store.get(&new).await.unwrap().unwrap();
        match written {
            Ok(w) => {
                assert_eq!(moved.get::<i64>("n").unwrap(), Some(1), "round {round}");
                assert_eq!(version, w + 1, "round {round}");
            }
            Err(err) => {
                assert!(err.is_conflict(), "round {round}: {err:?}");
                assert_eq!(moved.get::<i64>("n").unwrap(), Some(0), "round {round}");
                assert_eq!(version, v + 1, "round {round}");
            }
        }
    }
    store.clear().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_old_racing_a_rotate_lands_before_or_fails() {
    let Some(url) = url() else { return };
    rotation_race_scenario(store(&url).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_lifetimes() {
    let Some(urls) = cluster_urls() else { return };
    absolute_scenario(cluster_store(&urls).await, &urls).await;
    rotation_scenario(cluster_store(&urls).await, &urls).await;
    rotation_race_scenario(cluster_store(&urls).await).await;
}

/// A test-owned `redis-server` with keyspace notifications for expired keys on: the
/// process, its URL and its port; `None` when the test is skipped (no `redis-server`).
async fn notifying_redis(dir: &std::path::Path) -> Option<(tokio::process::Child, String, u16)> {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = start_redis_with(port, dir, &["--notify-keyspace-events", "Ex"])?;
    wait_until_up(&url).await;
    Some((server, url, port))
}

/// Sessions Redis expires by itself are reported as events when the server's keyspace
/// notifications are on (a test-owned server started with them), only this store's sessions
/// (not its owner index, not another prefix), and a server without them is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_are_reported_from_keyspace_notifications() {
    use session_stores::stores::redis::watch_expiries;
    use session_stores::wrappers::events::{EndCause, EventKind, EventSink};
    let dir = tempfile::tempdir().unwrap();
    let Some((mut server, own, _)) = notifying_redis(dir.path()).await else {
        return;
    };
    let (sink, mut events) = EventSink::channel(64);
    let watcher = watch_expiries(&own, "exp:", sink.clone()).await.unwrap();
    let store = RedisStore::builder(&own)
        .key_prefix("exp:")
        .connect()
        .await
        .unwrap();
    let other = RedisStore::builder(&own)
        .key_prefix("other:")
        .connect()
        .await
        .unwrap();
    let ada = session_stores::Owner::new("ada").unwrap();
    let (short, long) = (SessionId::generate(), SessionId::generate());
    let mut session = Session::new(Duration::from_millis(200)).with_owner(Some(ada));
    session.insert("n", 1).unwrap();
    store.set(&short, &session).await.unwrap();
    store
        .set(&long, &Session::new(Duration::from_secs(3600)))
        .await
        .unwrap();
    other
        .set(
            &SessionId::generate(),
            &Session::new(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an expiry event within 10 s")
        .unwrap();
    assert_eq!(event.kind, EventKind::Ended(EndCause::Expired));
    assert_eq!(event.id, Some(session_stores::IdHint::from(&short)));
    // Nothing else: not the other store's session, not the live one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(events.try_recv().is_err());
    watcher.abort();
    let _ = server.kill().await;

    // The shared server keeps its notifications off: refused, and its setting left alone.
    if let Some(shared) = url() {
        let err = watch_expiries(&shared, "exp:", sink).await.unwrap_err();
        assert_eq!(err.kind(), session_stores::ErrorKind::Config, "{err}");
    }
}

/// The expiry watcher never waits without bound and outlives a dead connection: against a
/// server that accepts and never answers, `watch_expiries` is a `Timeout` within its 5 s
/// steps; and when its subscribed connection goes dead without closing (the fault proxy
/// stalls it), it notices by a `PING` that gets no answer, subscribes again on a new
/// connection, and reports expiries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_watcher_bounds_its_waits_and_replaces_a_dead_connection() {
    use crate::proxy::Proxy;
    use session_stores::stores::redis::watch_expiries;
    use session_stores::wrappers::events::{EndCause, EventKind, EventSink};
    let dir = tempfile::tempdir().unwrap();
    let Some((mut server, own, port)) = notifying_redis(dir.path()).await else {
        return;
    };
    let target = format!("127.0.0.1:{port}").parse().unwrap();

    // A server that never answers: a Timeout, not a hang.
    let silent = Proxy::start(target).await;
    silent.half_open(true);
    let (sink, _events) = EventSink::channel(8);
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        watch_expiries(
            &format!("redis://127.0.0.1:{}", silent.port()),
            "exp:",
            sink,
        ),
    )
    .await
    .expect("watch_expiries returned within 30 s")
    .unwrap_err();
    assert_eq!(err.kind(), session_stores::ErrorKind::Timeout, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );

    // A subscribed connection that goes dead is replaced.
    let proxy = Proxy::start(target).await;
    let (sink, mut events) = EventSink::channel(64);
    let through = format!("redis://127.0.0.1:{}", proxy.port());
    let watcher = watch_expiries(&through, "exp:", sink).await.unwrap();
    let store = RedisStore::builder(&own)
        .key_prefix("exp:")
        .connect()
        .await
        .unwrap();
    let expiring = || async {
        let id = SessionId::generate();
        store
            .set(&id, &Session::new(Duration::from_millis(100)))
            .await
            .unwrap();
        id
    };
    let first = expiring().await;
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an expiry event within 10 s")
        .unwrap();
    assert_eq!(event.id, Some(session_stores::IdHint::from(&first)));
    let accepted = proxy.accepted();
    proxy.stall_open_connections();
    // Sessions keep expiring; those whose events were sent on the dead connection are lost
    // (fire-and-forget), and one after the watcher's new subscription is reported.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let reported = loop {
        expiring().await;
        match tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
            // Only an event received on a new connection counts: one already on its way
            // when the connection was stalled may still arrive.
            Ok(Some(event)) if proxy.accepted() > accepted => break Some(event),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the event channel closed"),
            Err(_) if std::time::Instant::now() < deadline => {}
            Err(_) => break None,
        }
    };
    let event = reported.expect(
        "an expiry reported on a new connection within 40 s of the watcher's connection dying",
    );
    assert_eq!(event.kind, EventKind::Ended(EndCause::Expired));
    watcher.abort();
    let _ = server.kill().await;
}
