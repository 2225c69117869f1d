//! The SQLite store's rows: any data text, expiry and version (integers, reals, text or
//! blobs written behind the store's back) give a session or a typed decode error, never a
//! panic; and a `set` always repairs the row.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rusqlite::types::Value;
use session_stores::{ErrorKind, Session, SessionId, SessionStore, SqliteStore};

struct World {
    rt: tokio::runtime::Runtime,
    store: SqliteStore,
    raw: std::sync::Mutex<rusqlite::Connection>,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.db");
        let store = rt.block_on(SqliteStore::open(&path)).unwrap();
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.busy_timeout(Duration::from_secs(5)).unwrap();
        World { rt, store, raw: std::sync::Mutex::new(raw), _dir: dir }
    })
}

/// Turns fuzz bytes into a column value of any SQLite type.
fn column(tag: u8, bytes: &[u8]) -> Value {
    let mut eight = [0u8; 8];
    for (slot, b) in eight.iter_mut().zip(bytes) {
        *slot = *b;
    }
    match tag % 5 {
        0 => Value::Integer(i64::from_le_bytes(eight)),
        1 => Value::Real(f64::from_le_bytes(eight)),
        2 => Value::Text(String::from_utf8_lossy(bytes).into_owned()),
        3 => Value::Blob(bytes.to_vec()),
        _ => Value::Null,
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let (tags, rest) = input.split_at(3);
    let split = rest.len() / 2;
    let (data_bytes, other) = rest.split_at(split);
    let w = world();
    let id = SessionId::new("fuzzed").unwrap();
    let data = if tags[0] % 2 == 0 {
        Value::Text(String::from_utf8_lossy(data_bytes).into_owned())
    } else {
        column(tags[0] / 2, data_bytes)
    };
    let expires = if tags[1] % 3 == 0 {
        Value::Integer(i64::MAX)
    } else {
        column(tags[1], other)
    };
    let version = column(tags[2], &other.iter().rev().copied().collect::<Vec<_>>());
    {
        let raw = w.raw.lock().unwrap();
        raw.execute("DELETE FROM sessions WHERE id = 'fuzzed'", []).unwrap();
        // NOT NULL constraints may refuse some rows: then there is nothing to read.
        let _ = raw.execute(
            "INSERT INTO sessions (id, data, expires_at, version) VALUES ('fuzzed', ?1, ?2, ?3)",
            rusqlite::params![data, expires, version],
        );
    }
    w.rt.block_on(async {
        match w.store.get(&id).await {
            Ok(_) => {}
            Err(err) => assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}"),
        }
        let _ = w.store.len().await.unwrap();
        w.store.set(&id, &Session::new(Duration::from_secs(60))).await.unwrap();
        assert!(w.store.get(&id).await.unwrap().is_some());
    });
});
