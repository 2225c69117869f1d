//! Bad input on every backend: huge values, numbers at the edges, every escape, and secrets
//! that must never reach an error message or `Debug` output.
//!
//! Each case either round-trips exactly or is refused with a clear error (`Encode` or
//! `TooLarge`), and a refused write leaves the previous session intact. Ids are covered by
//! the conformance suite (`invalid_ids_are_rejected_and_edge_ids_work`) and by
//! `SessionId`'s own tests; the depth limit by `nesting_at_the_limit_round_trips_and_deeper_is_refused`.

#[cfg(any(
    feature = "file",
    feature = "sqlite",
    feature = "postgres",
    feature = "redis"
))]
use crate::support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use session_stores::{ErrorKind, Session, SessionId, SessionStore};

const SECRET: &str = "s3cr3t-marker-9f2c";

/// What a test made on servers, removed by [`Cleanup::done`] at its end.
#[derive(Default)]
struct Cleanup {
    #[allow(dead_code)]
    postgres: Option<(String, String)>,
}

impl Cleanup {
    async fn done(self) {
        #[cfg(feature = "postgres")]
        if let Some((url, schema)) = self.postgres {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
}

/// Every store enabled by features whose server is reachable, each on its own namespace.
#[allow(clippy::vec_init_then_push)]
async fn stores() -> (Vec<(&'static str, Arc<dyn SessionStore>)>, Cleanup) {
    #[allow(unused_mut)]
    let mut cleanup = Cleanup::default();
    #[allow(unused_mut)]
    let mut stores: Vec<(&'static str, Arc<dyn SessionStore>)> = Vec::new();
    #[cfg(feature = "memory")]
    stores.push(("memory", Arc::new(session_stores::MemoryStore::new(1000))));
    #[cfg(feature = "file")]
    {
        let dir = tempfile::tempdir().unwrap();
        let store = session_stores::FileStore::new(dir.path()).await.unwrap();
        stores.push(("file", Arc::new(support::WithDir::new(store, dir))));
    }
    #[cfg(feature = "sqlite")]
    {
        let dir = tempfile::tempdir().unwrap();
        let store = session_stores::SqliteStore::open(dir.path().join("bad.db"))
            .await
            .unwrap();
        stores.push(("sqlite", Arc::new(support::WithDir::new(store, dir))));
    }
    #[cfg(feature = "postgres")]
    if let Some(url) = support::service_url(
        "SESSION_STORES_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        5432,
    ) {
        let schema = support::unique_name("sst_bad_");
        let store = session_stores::PostgresStore::builder()
            .schema(schema.as_str())
            .connect(&url)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        stores.push(("postgres", Arc::new(store)));
        cleanup.postgres = Some((url, schema));
    }
    #[cfg(feature = "redis")]
    if let Some(url) =
        support::service_url("SESSION_STORES_REDIS_URL", "redis://127.0.0.1:6379", 6379)
    {
        let store = session_stores::RedisStore::builder(&url)
            .key_prefix(format!("{}:", support::unique_name("sst:bad:")))
            .connect()
            .await
            .unwrap();
        stores.push(("redis", Arc::new(store)));
    }
    (stores, cleanup)
}

fn session(data: Value) -> Session {
    let mut session = Session::new(Duration::from_secs(3600));
    if let Value::Object(map) = data {
        session.replace_data(map);
    }
    session
}

/// Writes `data` over a known previous session: it must read back exactly, or be refused
/// with Encode/TooLarge and leave the previous session as it was. Returns whether it was
/// stored.
async fn round_trip_or_refuse(
    name: &str,
    store: &dyn SessionStore,
    what: &str,
    data: Value,
) -> bool {
    let id = SessionId::generate();
    let previous = session(json!({ "previous": true }));
    store.set(&id, &previous).await.unwrap();
    let attempt = session(data);
    match store.set(&id, &attempt).await {
        Ok(_) => {
            let got = store.get(&id).await.unwrap().expect("stored session");
            assert!(
                got.data() == attempt.data(),
                "{name}: {what} was stored but did not read back exactly"
            );
            store.destroy(&id).await.unwrap();
            true
        }
        Err(err) => {
            assert!(
                matches!(err.kind(), ErrorKind::Encode | ErrorKind::TooLarge),
                "{name}: {what} was refused with {err:?}, not a clear Encode/TooLarge error"
            );
            let text = format!("{err} {err:?}");
            assert!(
                !text.contains(SECRET),
                "{name}: the error shows session data: {text}"
            );
            let got = store
                .get(&id)
                .await
                .unwrap()
                .expect("previous session kept");
            assert_eq!(
                got.data(),
                previous.data(),
                "{name}: a refused write changed the session"
            );
            store.destroy(&id).await.unwrap();
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_value_round_trips_on_every_backend() {
    let blob: String = (0..16 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let (stores, cleanup) = stores().await;
    for (name, store) in stores {
        let stored =
            round_trip_or_refuse(name, &*store, "a 16 MiB value", json!({ "blob": blob })).await;
        assert!(
            stored,
            "{name} refused a 16 MiB session; every backend documents no lower limit"
        );
        eprintln!("{name}: 16 MiB value round-tripped");
    }
    cleanup.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_at_the_edges_round_trip_or_are_refused() {
    let numbers: Vec<(&str, Value)> = vec![
        ("i64::MIN", json!(i64::MIN)),
        ("i64::MAX", json!(i64::MAX)),
        ("u64::MAX", json!(u64::MAX)),
        ("f64::MAX", json!(f64::MAX)),
        ("f64::MIN", json!(f64::MIN)),
        ("f64::MIN_POSITIVE", json!(f64::MIN_POSITIVE)),
        ("smallest subnormal", json!(5e-324)),
        ("f64::EPSILON", json!(f64::EPSILON)),
        ("0.1", json!(0.1)),
        ("-0.0", json!(-0.0)),
        ("2.0", json!(2.0)),
        ("1e16 as a float", json!(1e16)),
        ("1.5e16 as a float", json!(1.5e16)),
        (
            "-1.2345678901234568e17 as a float",
            json!(-1.2345678901234568e17),
        ),
        ("2^53 + 2 as a float", json!(9007199254740994.0)),
        ("-1e300", json!(-1e300)),
    ];
    let (stores, cleanup) = stores().await;
    for (name, store) in stores {
        let mut refused = Vec::new();
        for (what, number) in &numbers {
            let data = json!({ "n": number, "secret": SECRET });
            if !round_trip_or_refuse(name, &*store, what, data).await {
                refused.push(*what);
            }
        }
        eprintln!(
            "{name}: {} numbers round-tripped, refused: {refused:?}",
            numbers.len() - refused.len()
        );
        // Integers always round-trip: only floats a backend cannot keep exactly may be refused.
        for integer in ["i64::MIN", "i64::MAX", "u64::MAX"] {
            assert!(!refused.contains(&integer), "{name} refused {integer}");
        }
    }
    cleanup.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_with_every_escape_round_trip_or_are_refused() {
    let controls: String = (1u8..0x20).map(char::from).collect();
    let every_ascii: String = (1u8..0x80).map(char::from).collect();
    let cases: Vec<(&str, Value)> = vec![
        ("control characters", json!(controls)),
        ("every ASCII character", json!(every_ascii)),
        ("quotes and backslashes", json!("\"\\\"\\\\\"'`")),
        (
            "unicode line separators",
            json!("a\u{2028}b\u{2029}c\u{85}d"),
        ),
        ("astral plane", json!("\u{1F600}\u{10FFFF}\u{E000}")),
        ("byte order mark", json!("\u{FEFF}x")),
        ("a key full of escapes", json!({ "\n\t\"\\\u{1}": 1 })),
        ("NUL", json!("a\u{0}b")),
    ];
    let (stores, cleanup) = stores().await;
    for (name, store) in stores {
        let mut refused = Vec::new();
        for (what, value) in &cases {
            let data = json!({ "s": value, "secret": SECRET });
            if !round_trip_or_refuse(name, &*store, what, data).await {
                refused.push(*what);
            }
        }
        eprintln!("{name}: refused {refused:?}");
        // Only NUL may be refused (Postgres' jsonb cannot hold U+0000).
        assert!(
            refused.iter().all(|what| *what == "NUL"),
            "{name} refused {refused:?}"
        );
    }
    cleanup.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_and_errors_never_show_session_data_or_whole_ids() {
    let id = SessionId::new("AAAAbbbbCCCCddddEEEEffff0123456789").unwrap();
    let mut s = Session::new(Duration::from_secs(60));
    s.insert("password", SECRET).unwrap();
    for text in [format!("{s:?}"), format!("{id:?}")] {
        assert!(
            !text.contains(SECRET) && !text.contains(id.as_str()),
            "{text}"
        );
    }
    let mut deep = Map::new();
    let mut value = json!(SECRET);
    for _ in 0..200 {
        value = Value::Array(vec![value]);
    }
    deep.insert("deep".into(), value);
    let mut deep_session = Session::new(Duration::from_secs(60));
    deep_session.replace_data(deep);
    let (stores, cleanup) = stores().await;
    for (name, store) in stores {
        let err = store.set(&id, &deep_session).await.unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(SECRET), "{name}: {text}");
            assert!(
                !text.contains(id.as_str()),
                "{name} shows the whole id: {text}"
            );
        }
        let conflict = store.set_if_version(&id, &s, 7).await.unwrap_err();
        let text = format!("{conflict} {conflict:?}");
        assert!(
            !text.contains(SECRET) && !text.contains(id.as_str()),
            "{name}: {text}"
        );
        assert!(
            text.contains("AAAAbbbb"),
            "{name}: the error does not name the session: {text}"
        );
    }
    cleanup.done().await;
}
