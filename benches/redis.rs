//! RedisStore against raw redis-rs commands on one multiplexed connection, in one run.
//!
//! Both keep each session under `<prefix><id>` as the store's value format,
//! `"<version>:<expires_at_ms>:<data JSON>"`, with the session's expiry as the key's Redis
//! expiry (`PXAT`); each uses a random key prefix of its own, and both prefixes are removed
//! (`SCAN` + `UNLINK`) at the end. The store goes through its deadpool pool with a timeout
//! on every round trip; the raw client shares one multiplexed connection.
//!
//! The raw client does the plain-command version of each operation:
//!
//! - get: `GET`, then parse the value and check its expiry (as the store does);
//! - set: one `SET key value PXAT ms` of the same bytes, with no version bookkeeping (the
//!   physical limit of a write); the store reads the live version and writes the next one
//!   in one atomic Lua script (`EVALSHA`), also one round trip;
//! - create: `SET key value NX PXAT ms` (the store's first step; its script fallback only
//!   runs when the key exists);
//! - touch: `PEXPIREAT`, which moves Redis's expiry only; the store's script also rewrites
//!   the expiry inside the value, atomically;
//! - destroy: `UNLINK`;
//! - compare-and-set: `GET` (decoded, as the store's `get`), then `SET ... PXAT` with the
//!   next version, unconditionally (not atomic); the store's `get` is followed by its
//!   atomic conditional-write script.
//!
//! Reads `SESSION_STORES_REDIS_URL` (default `redis://127.0.0.1:6379`); without a reachable
//! server it prints `SKIPPED` and exits successfully.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Plan, StoreTarget, Target};
use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value};
use session_stores::{RedisStore, Session, SessionId, now_millis};

const VAR: &str = "SESSION_STORES_REDIS_URL";
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// How many `SET`s one pipeline of a bulk fill sends.
const FILL_CHUNK: usize = 10_000;

/// The store's value format.
fn encode_value(version: u64, expires_at: i64, data: &[u8]) -> Vec<u8> {
    let mut value = format!("{version}:{expires_at}:").into_bytes();
    value.extend_from_slice(data);
    value
}

/// The version and expiry at the head of a stored value.
fn parse_head(raw: &[u8]) -> (u64, i64, &[u8]) {
    let mut parts = raw.splitn(3, |&b| b == b':');
    let mut number = || {
        std::str::from_utf8(parts.next().expect("a field"))
            .expect("utf-8")
            .parse::<i64>()
            .expect("a number")
    };
    let (version, expires_at) = (number(), number());
    let data = parts.next().expect("data");
    (version as u64, expires_at, data)
}

/// Loads `ids` under `prefix`, all holding `session` at version 1, with pipelined `SET`s.
async fn bulk_fill(
    conn: &MultiplexedConnection,
    prefix: &str,
    ids: &[SessionId],
    session: &Session,
) {
    let mut conn = conn.clone();
    let data = serde_json::to_vec(session.data()).expect("encode");
    let expires_at = session.expires_at_millis();
    let value = encode_value(1, expires_at, &data);
    for chunk in ids.chunks(FILL_CHUNK) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("SET")
                .arg(format!("{prefix}{}", id.as_str()))
                .arg(&value)
                .arg("PXAT")
                .arg(expires_at)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.expect("bulk fill");
    }
}

/// Removes every key under `prefix` (`SCAN MATCH` + `UNLINK`).
async fn remove_prefix(conn: &MultiplexedConnection, prefix: &str) {
    let mut conn = conn.clone();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(keys)
                .query_async::<()>(&mut conn)
                .await
                .expect("unlink");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

/// Runs `fut` to completion from synchronous code that runs inside the bench runtime's
/// `block_on` (where the harness calls a bulk fill): `block_in_place` steps out of the runtime
/// context so that the runtime's handle can block on the future.
fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fut))
}

/// The raw baseline: plain commands on one multiplexed connection.
struct RawRedis {
    conn: MultiplexedConnection,
    prefix: String,
}

impl RawRedis {
    fn key(&self, id: &SessionId) -> String {
        format!("{}{}", self.prefix, id.as_str())
    }

    async fn fetch(&self, id: &SessionId) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(self.key(id))
            .query_async(&mut self.conn.clone())
            .await
            .expect("GET")
    }

    /// The live session under `id`, decoded as the store decodes it.
    async fn load(&self, id: &SessionId) -> Option<Session> {
        let raw = self.fetch(id).await?;
        let (version, expires_at, data) = parse_head(&raw);
        let data: Map<String, Value> = serde_json::from_slice(data).expect("decode");
        (expires_at > now_millis()).then(|| Session::from_parts(data, expires_at, version))
    }

    async fn write(&self, id: &SessionId, session: &Session, version: u64) {
        let data = serde_json::to_vec(session.data()).expect("encode");
        let expires_at = session.expires_at_millis();
        redis::cmd("SET")
            .arg(self.key(id))
            .arg(encode_value(version, expires_at, &data))
            .arg("PXAT")
            .arg(expires_at)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .expect("SET");
    }
}

#[async_trait]
impl Target for RawRedis {
    async fn get(&self, id: &SessionId) -> bool {
        self.load(id).await.map(std::hint::black_box).is_some()
    }

    async fn set(&self, id: &SessionId, session: &Session) {
        // The physical limit: one `SET ... PXAT` of the same bytes, no read of the old
        // version (so no version bookkeeping at all).
        self.write(id, session, 1).await;
    }

    async fn touch(&self, id: &SessionId, expires_at: i64) -> bool {
        let moved: i64 = redis::cmd("PEXPIREAT")
            .arg(self.key(id))
            .arg(expires_at)
            .query_async(&mut self.conn.clone())
            .await
            .expect("PEXPIREAT");
        moved == 1
    }

    async fn destroy(&self, id: &SessionId) {
        redis::cmd("UNLINK")
            .arg(self.key(id))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .expect("UNLINK");
    }

    async fn create(&self, id: &SessionId, session: &Session) -> bool {
        let data = serde_json::to_vec(session.data()).expect("encode");
        let expires_at = session.expires_at_millis();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(id))
            .arg(encode_value(1, expires_at, &data))
            .arg("NX")
            .arg("PXAT")
            .arg(expires_at)
            .query_async(&mut self.conn.clone())
            .await
            .expect("SET NX");
        set.is_some()
    }

    async fn cas(&self, id: &SessionId, session: &Session) -> bool {
        let expected = self.load(id).await.map_or(0, |s| s.version());
        self.write(id, session, expected + 1).await;
        true
    }

    async fn fill(&self, ids: &[SessionId], session: &Session) {
        bulk_fill(&self.conn, &self.prefix, ids, session).await;
    }
}

fn main() {
    let url = std::env::var(VAR).unwrap_or_else(|_| DEFAULT_URL.to_string());
    let rt = common::runtime();
    let conn = match rt.block_on(async {
        let client = redis::Client::open(url.as_str()).map_err(|err| err.to_string())?;
        tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|err| err.to_string())
    }) {
        Ok(conn) => conn,
        Err(err) => {
            eprintln!("\n*** SKIPPED: redis bench, no server at {url}: {err} (set {VAR}) ***\n");
            return;
        }
    };
    let run = SessionId::generate();
    let store_prefix = format!("bench:store:{}:", run.as_str());
    let raw_prefix = format!("bench:raw:{}:", run.as_str());

    let store = rt
        .block_on(
            RedisStore::builder(&url)
                .key_prefix(store_prefix.clone())
                .connect(),
        )
        .expect("connect the store");
    let (fill_conn, fill_prefix) = (conn.clone(), store_prefix.clone());
    let store = Arc::new(StoreTarget::with_bulk_fill(
        store,
        Arc::new(move |ids: &[SessionId], session: &Session| {
            block_on(bulk_fill(&fill_conn, &fill_prefix, ids, session))
        }),
    ));
    let raw = Arc::new(RawRedis {
        conn: conn.clone(),
        prefix: raw_prefix.clone(),
    });

    let mut c = common::criterion();
    let plan = Plan {
        backend: "redis",
        populations: vec![1_000, 100_000, 1_000_000],
        expiry_only_set: false,
    };
    common::run_all(&mut c, &rt, &plan, store, raw);
    c.final_summary();

    rt.block_on(async {
        remove_prefix(&conn, &store_prefix).await;
        remove_prefix(&conn, &raw_prefix).await;
    });
}
