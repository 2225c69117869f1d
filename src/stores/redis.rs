//! A Redis store, for a single Redis server or a Redis Cluster, through
//! [redis-rs](https://docs.rs/redis) and [deadpool-redis](https://docs.rs/deadpool-redis).
//!
//! [`RedisStore`] keeps each session under one Redis key and lets Redis expire it, so any
//! number of application processes share the same sessions and nothing needs sweeping.
//!
//! # Connecting
//!
//! ```no_run
//! # async fn demo() -> session_stores::Result<()> {
//! use std::time::Duration;
//! use session_stores::{RedisStore, Session, SessionId, SessionStore};
//!
//! // One server, with the defaults (key prefix `session:`).
//! let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
//!
//! // A Redis Cluster: any reachable nodes, the client discovers the rest.
//! let cluster = RedisStore::connect_cluster([
//!     "redis://127.0.0.1:7001",
//!     "redis://127.0.0.1:7002",
//! ])
//! .await?;
//!
//! // Every option.
//! let tuned = RedisStore::builder("redis://127.0.0.1:6379")
//!     .key_prefix("myapp:session:")
//!     .connect_timeout(Duration::from_secs(1))
//!     .response_timeout(Duration::from_millis(500))
//!     .pool_wait_timeout(Duration::from_secs(1))
//!     .operation_timeout(Duration::from_secs(3))
//!     .max_connections(32)
//!     .connect()
//!     .await?;
//!
//! let id = SessionId::generate();
//! tuned.set(&id, &Session::new(Duration::from_secs(3600))).await?;
//! # let _ = (store, cluster);
//! # Ok(())
//! # }
//! ```
//!
//! [`RedisStore::from_pool`] and [`RedisStore::from_cluster_pool`] wrap a
//! [`deadpool_redis::Pool`] or [`deadpool_redis::cluster::Pool`] that you built yourself.
//! [`connect`](RedisStore::connect) and [`RedisStoreBuilder::connect`] check the server with a
//! `PING`; [`RedisStoreBuilder::build`] does no I/O (connections are opened on first use).
//!
//! # Options
//!
//! | option | default | meaning |
//! | --- | --- | --- |
//! | [`key_prefix`](RedisStoreBuilder::key_prefix) | `session:` | prepended to every id; the store's namespace (must not be empty; see [Key prefixes](#key-prefixes)) |
//! | [`connect_timeout`](RedisStoreBuilder::connect_timeout) | 2 s | opening one connection |
//! | [`response_timeout`](RedisStoreBuilder::response_timeout) | 2 s | one round trip (a command or a script) |
//! | [`pool_wait_timeout`](RedisStoreBuilder::pool_wait_timeout) | 2 s | waiting for a pooled connection |
//! | [`operation_timeout`](RedisStoreBuilder::operation_timeout) | 5 s ([`DEFAULT_OPERATION_TIMEOUT`]) | one whole operation: waiting for a connection (or for another caller's reconnect) and every round trip |
//! | [`max_connections`](RedisStoreBuilder::max_connections) | deadpool's (4 × CPUs) | pool size (the store keeps one connection in use and shares it: see [Connections](#connections)) |
//!
//! Every operation (`ping` too) ends within the operation timeout, with
//! [`crate::deadline::within`]: past it, it fails with a transient [`Error::Timeout`], and a
//! write it had already sent may still happen (see [`crate::deadline`]). Inside it, every
//! round trip is also bounded by the store itself (response timeout), and taking a connection
//! from the pool by the pool wait timeout plus the connect timeout, so a dead, stopped or
//! hung server never hangs a request, whatever pool you hand in. `len` and `clear` are single
//! operations too, of one round trip per 1,000 keys or so: on stores of millions of sessions,
//! raise the operation timeout. In cluster mode the connect and response timeouts of
//! redis-rs's cluster client keep their defaults (deadpool-redis does not expose them); the
//! store's own bounds still apply.
//!
//! # Key layout and value format
//!
//! The session `id` lives at the key `{prefix}{id}`, a Redis string:
//!
//! ```text
//! session:Zx81-aB9_q...   →   "<version>:<expires_at_ms>:<data as JSON>"
//!                             e.g. 3:1767225600000:{"user_id":42}
//! ```
//!
//! `version` is a decimal of at most 15 digits, `expires_at_ms` the absolute expiry in
//! milliseconds since the Unix epoch (decimal), and the rest the session's data as a JSON
//! object. The key carries the same expiry as a Redis expiry (`PXAT`), so Redis deletes the
//! session by itself. A value that does not have this shape (written by something else) is
//! reported as [`Error::Decode`] by `get`, `touch` and `set_if_version`, which write nothing,
//! is left alone by `create`, and is replaced by `set`, which starts a new incarnation at a
//! fresh version.
//!
//! Versions: a write that starts a new incarnation (`create`, or `set` or
//! `set_if_version(.., 0)` where no live session is) stores a
//! [fresh, unpredictable version](crate::fresh_version), drawn by the store and passed to
//! the script; a write over a live session stores its version + 1, or a fresh version if it
//! is already [`MAX_VERSION`](crate::MAX_VERSION), the largest 15-digit number. The scripts
//! compute versions as Lua numbers (doubles), exact below 2^53, which every version of at
//! most 15 digits and every fresh version (at most 2^48) is; a stored version of more than 15
//! digits counts as such an unreadable value rather than being rounded.
//!
//! # Key prefixes
//!
//! A store owns exactly the keys made of its prefix followed by a valid [`SessionId`]. `len`
//! and `clear` find keys with `SCAN MATCH <prefix>*` and then keep only those; since an id
//! never contains `:` (or `/`, space and other separators), a key such as `session:admin:x`
//! or `session:a:b` under the prefix `session:` is not this store's and is neither counted
//! nor removed.
//!
//! - End a prefix with a separator such as `:` (`myapp:session:`), so that what follows it
//!   can only be an id.
//! - Never give two stores on the same Redis prefixes such that one store's prefix followed
//!   by a valid id can equal a key of the other. `a` and `ab` are such a pair: the key `ab1`
//!   is both the session `1` of `ab` and the session `b1` of `a`, so the stores would read,
//!   overwrite, count and clear each other's sessions. `session:` and `session:admin:` are
//!   fine: no id contains the `:` after `admin`.
//!
//! # How each operation works
//!
//! Each operation touches exactly one key, so every operation works unchanged on a Redis
//! Cluster, whatever slot the key hashes to. Read-modify-write operations are Lua scripts
//! (sent with `EVALSHA`, loaded automatically on `NOSCRIPT`), which Redis runs atomically.
//!
//! - `get`: `GET`, then the expiry in the value is checked against the application's clock,
//!   so an expired session is never returned, even in the millisecond before Redis drops it.
//! - `set`: a script reads the live version, writes `version + 1` (or the fresh version, over
//!   no live session) with `SET ... PXAT`. A session whose expiry is already past is deleted
//!   instead (`DEL`): the store never sends a past or invalid expire time.
//! - `create`: `SET key value NX PXAT`, the value at a fresh version. Only when the key
//!   exists does a script check whether
//!   the stored session has already expired by the application's clock (Redis may still hold
//!   it for a millisecond) and, if so, replace it, atomically.
//! - `set_if_version`: a script compares the stored live version with the expected one and
//!   writes only on a match; otherwise it writes nothing and the store returns
//!   [`Error::Conflict`]. No `WATCH` is involved, so it is safe on a multiplexed connection.
//! - `touch`: a script that moves the expiry of a live session (rewriting the expiry in the
//!   value and the key's `PXAT`), keeps data and version, never creates a key, and deletes
//!   the session when the new expiry is in the past.
//! - `destroy`: `UNLINK`.
//! - `len` and `clear`: `SCAN MATCH <escaped prefix>*` (never `KEYS` or `FLUSHDB`); in cluster
//!   mode on every primary (found with `CLUSTER SLOTS`). Of the keys found, only those whose
//!   rest after the prefix is a valid session id are kept (see [Key prefixes](#key-prefixes)).
//!   Both work page by page (1,000 keys a `SCAN`) and hold one page at a time.
//!   `clear` deletes each page in one round trip: one `UNLINK` of the page's keys on a single
//!   server; on a cluster node, a pipeline of one `UNLINK` per hash slot (a multi-key command
//!   must stay within one slot), sent to that node. Only this store's sessions are removed.
//!   `len` counts each page as it comes. `SCAN` may return a key twice, but only when Redis
//!   shrinks its hash table during the pass, and then only the keys it returned last (the
//!   cursor falls back to the start of the bucket it was in, and a table shrinks to at least
//!   one bucket per key, so such a bucket holds about one of this store's keys): `len`
//!   remembers the last 1,000 keys it counted and counts a key again only if it is not among
//!   them. Memory stays at a page's worth whatever the store's size (a set of every key, as
//!   `len` once kept, takes hundreds of MiB for millions of sessions).
//! - `delete_expired` returns 0 and sends nothing: Redis expires keys itself.
//!
//! Unlike a store that writes with `SET XX`, no write is ever silently dropped: `set` and
//! `set_if_version` write whether or not the key exists (as the contract requires).
//!
//! # Cluster use
//!
//! Keys hash to slots across the primaries by default. A prefix with a hash tag, such as
//! `{sessions}:`, puts every session in one slot (one primary); that is allowed but gives up
//! spreading the load. Reads go to primaries. `len` and `clear` visit every primary, so they
//! cost one `SCAN` pass per primary; `clear` adds one round trip per page of keys.
//!
//! # Failures and recovery
//!
//! Connection errors (refused, reset, closed), `LOADING`, `TRYAGAIN`, `CLUSTERDOWN`,
//! `MASTERDOWN` and `READONLY` are reported as [`Error::Unavailable`], timeouts as
//! [`Error::Timeout`]: both are [transient](Error::is_transient). When Redis restarts, the
//! operations in flight fail with such errors and the store recovers by itself: the
//! connection is replaced (see [Connections](#connections)), so later operations succeed
//! without rebuilding the store.
//!
//! # Connections
//!
//! redis-rs connections are multiplexed: one socket pipelines any number of concurrent
//! requests. The store therefore keeps one pooled connection checked out and gives every
//! operation a cheap clone of it, rather than taking a connection from the pool per
//! operation: deadpool-redis verifies each checkout with an `UNWATCH`+`PING` round trip,
//! which doubled the round trips of every operation. The pool supplies and verifies
//! replacements after a failure; `max_connections` bounds it.
//!
//! When the connection is replaced, and when it is not:
//!
//! - **I/O failures** (refused, reset, closed, the connection's driver gone) discard it.
//! - **Server error replies** (`LOADING`, `CLUSTERDOWN`, `WRONGTYPE`, ...) keep it: they came
//!   over a working socket, and a new connection would get the same reply.
//! - **A timeout** keeps it if anything at all came back on it while the timed-out request
//!   waited (one slow command, or one slow node of a cluster), and discards it if nothing
//!   did: from the client's side a half-open socket looks exactly like that, and only a new
//!   connection gets past it. A stalled server looks the same, so a stall longer than the
//!   response timeout costs one new connection per response timeout, not one per caller.
//! - Only **the connection that failed** is discarded: each installed connection has a
//!   generation number, and a failure seen on an older one never discards a newer one that
//!   another task has installed meanwhile.
//! - **One caller reconnects**, the others wait for it (within their operation timeout)
//!   and share what it installs. If its checkout fails, those that waited fail with it at
//!   once instead of each trying again in turn.
//!
//! Other Redis errors are [`Error::Backend`]. Errors name the session by its [`IdHint`] and
//! keep the redis-rs error as their source.
//!
//! # Requirements and caveats
//!
//! - **Redis 6.2 or later**: `SET ... PXAT` needs it. Valkey works too.
//! - Expiry decisions (live or not) use the application's clock, passed to each script;
//!   Redis's own expiry uses the server's clock. Keep clocks in sync (NTP): with skew, Redis
//!   may drop a session early or keep an expired one, which the store then hides.
//! - `len` counts the store's keys that Redis still holds, without reading them, so it may
//!   count sessions that have expired by the application's clock but not yet by Redis's:
//!   for as long as the two clocks differ (when Redis's clock runs behind the application's),
//!   plus the millisecond of the expiry itself (Redis drops a key only once its expiry time
//!   has *passed*). `get` never returns such a session.
//! - `len` recognises a key `SCAN` returns twice only among the last 1,000 it counted (see
//!   [How each operation works](#how-each-operation-works)): a key repeated from further
//!   back, possible only if the database loses nearly all its keys in the middle of the
//!   count, counts twice. While a cluster is resharding, a key moving between primaries in
//!   the middle of a `len` may be counted twice or not at all; `clear` still removes it (a
//!   page whose slot has moved is deleted slot by slot, following the redirects).
//! - A session is read and written whole; Redis's 512 MB string limit applies.
//! - Redis persistence (RDB/AOF) decides whether sessions survive a Redis restart.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Cmd, ErrorKind as RedisErrorKind, RedisError, RedisFuture, Script,
    ServerErrorKind, Value,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};
use deadpool_redis::{PoolConfig, PoolError, Runtime, Timeouts};
use serde_json::{Map, Value as Json};

use crate::deadline::{DEFAULT_OPERATION_TIMEOUT, within};
use crate::error::{BoxError, Error, IdHint, Result};
use crate::session::{Session, SessionId, fresh_version, now_millis, to_millis};
use crate::store::{Capabilities, SessionStore};

/// The default key prefix, `session:`.
pub const DEFAULT_KEY_PREFIX: &str = "session:";
/// The default time allowed to open one connection: 2 seconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default time allowed for one round trip: 2 seconds.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The default time allowed to wait for a free pooled connection: 2 seconds.
pub const DEFAULT_POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many keys one `SCAN` call asks for.
const SCAN_COUNT: usize = 1000;

/// How many of the keys it counted last `len` remembers, to recognise one that `SCAN` returns
/// a second time (see [`RecentKeys`]): one page's worth.
const LEN_WINDOW: usize = SCAN_COUNT;

/// The longest stored version the scripts read, in digits. Lua numbers are doubles: up to 15
/// digits (below 2^53) `version + 1` is exact and `%d` formats it; a longer version is treated
/// as unreadable, like a value of the wrong shape. [`decode_value`] agrees.
const MAX_VERSION_DIGITS: usize = 15;

/// `set` and `set_if_version`. KEYS[1] = key; ARGV: now_ms, mode (`set` | `cas`), expected
/// version, expires_at_ms, data JSON, a fresh version. Returns the new version, 0 when the
/// write deleted the session (past expiry), -1 on a version conflict, -2 when the stored
/// value is unreadable (only in `cas` mode; `set` replaces it, at the fresh version). The new
/// version is the live one + 1, or the fresh one where no session is live (or the live one is
/// [`MAX_VERSION`](crate::MAX_VERSION), written into the script). Every check comes before the single write, so
/// the script never writes and then fails.
const WRITE_LUA: &str = r#"
local key = KEYS[1]
local now = tonumber(ARGV[1])
local cas = ARGV[2] == 'cas'
local live = '0'
local kind = redis.call('TYPE', key)['ok']
if kind == 'string' then
  -- Only the head is needed: a version of at most 15 digits and an expiry.
  local cur = redis.call('GETRANGE', key, 0, 63)
  local v, e = string.match(cur, '^(%d+):(%d+):')
  if v and #v > 15 then v = nil end
  if v then
    if tonumber(e) > now then live = v end
  elseif cas then
    return -2
  end
elseif kind ~= 'none' and cas then
  return -2
end
if cas and live ~= ARGV[3] then return -1 end
-- live has at most 15 digits, so live + 1 is exact; a fresh version (ARGV[6]) is below 2^49.
local cur = tonumber(live)
local nextv
if cur >= 1 and cur < 999999999999999 then
  nextv = cur + 1
else
  nextv = tonumber(ARGV[6])
end
if tonumber(ARGV[4]) <= now then
  redis.call('DEL', key)
  return 0
end
redis.call('SET', key, string.format('%d', nextv) .. ':' .. ARGV[4] .. ':' .. ARGV[5], 'PXAT', ARGV[4])
return nextv
"#;

/// `touch`. KEYS[1] = key; ARGV: now_ms, new expires_at_ms. Returns 1 if a live session
/// existed (and was moved, or deleted for a past expiry), 0 if none, -2 if unreadable.
const TOUCH_LUA: &str = r#"
local key = KEYS[1]
local now = tonumber(ARGV[1])
local kind = redis.call('TYPE', key)['ok']
if kind == 'none' then return 0 end
if kind ~= 'string' then return -2 end
local head = redis.call('GETRANGE', key, 0, 63)
local v, e = string.match(head, '^(%d+):(%d+):')
if not v or #v > 15 then return -2 end
if tonumber(e) <= now then return 0 end
if tonumber(ARGV[2]) <= now then
  redis.call('DEL', key)
  return 1
end
if #ARGV[2] == #e then
  -- Same width (the usual case): overwrite the expiry in place, without moving the data.
  redis.call('SETRANGE', key, #v + 1, ARGV[2])
  redis.call('PEXPIREAT', key, ARGV[2])
else
  local cur = redis.call('GET', key)
  redis.call('SET', key, v .. ':' .. ARGV[2] .. ':' .. string.sub(cur, #v + #e + 3), 'PXAT', ARGV[2])
end
return 1
"#;

/// `create` when `SET NX` found the key (or the expiry is past). KEYS[1] = key; ARGV: now_ms,
/// expires_at_ms, the whole value. Returns 1 if created (or, for a past expiry, if there was
/// no live session), 0 if a live or unreadable value is in the way.
const CREATE_LUA: &str = r#"
local key = KEYS[1]
local now = tonumber(ARGV[1])
local kind = redis.call('TYPE', key)['ok']
if kind == 'string' then
  local cur = redis.call('GETRANGE', key, 0, 63)
  local v, e = string.match(cur, '^(%d+):(%d+):')
  if not v or #v > 15 or tonumber(e) > now then return 0 end
elseif kind ~= 'none' then
  return 0
end
if tonumber(ARGV[2]) <= now then
  redis.call('DEL', key)
  return 1
end
redis.call('SET', key, ARGV[3], 'PXAT', ARGV[2])
return 1
"#;

/// A session store on Redis or a Redis Cluster. See the [module docs](self).
pub struct RedisStore {
    pool: Pool,
    /// The pooled connection the store keeps checked out and shares between operations.
    shared: Shared,
    prefix: String,
    response_timeout: Duration,
    checkout_timeout: Duration,
    operation_timeout: Duration,
    write: Script,
    touch: Script,
    create: Script,
}

/// The connection the store shares between its operations, and how it is replaced.
///
/// Each connection the store installs gets a new generation number. An operation works on a
/// [`Lease`] (a clone of the connection and its [`Health`]); when the connection fails, the
/// operation discards that generation only, so a failure seen on an old connection never
/// throws away a newer one that another task has installed meanwhile. A replacement is
/// checked out by one caller at a time (`reconnect`); the others wait for it.
struct Shared {
    current: Mutex<Option<Current>>,
    /// Held by the one caller checking a replacement out of the pool.
    reconnect: tokio::sync::Mutex<()>,
    /// The last generation handed out.
    generations: AtomicU64,
    /// How many checkouts have failed, so that the callers that waited for one fail with it
    /// instead of each trying again in turn (each try may take the whole connect timeout).
    failed_checkouts: AtomicU64,
    /// Whether the last failed checkout timed out (rather than being refused).
    last_failure_timed_out: AtomicBool,
    /// The origin of the [`Health::last_reply`] clock.
    epoch: Instant,
}

struct Current {
    pooled: Pooled,
    health: Arc<Health>,
}

/// What the store knows about one installed connection.
struct Health {
    generation: u64,
    /// When something last came back on the connection (a value or a server error), in
    /// microseconds since [`Shared::epoch`].
    last_reply: AtomicU64,
}

/// An operation's handle on the shared connection.
struct Lease {
    conn: Conn,
    health: Arc<Health>,
}

#[derive(Clone)]
enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A connection checked out of the pool and kept by the store. Both kinds are multiplexed
/// (one socket pipelines many concurrent requests), so every operation uses a cheap clone of
/// it instead of checking a connection out of the pool, which would cost deadpool-redis'
/// `UNWATCH`+`PING` round trip each time. When the connection fails (see
/// [`RedisStore::exchange`]), the store discards it (it never goes back to the pool) and the
/// next operation checks out a fresh, verified one: this is how the store recovers from a
/// Redis restart by itself.
enum Pooled {
    Single(deadpool_redis::Connection),
    Cluster(deadpool_redis::cluster::Connection),
}

impl Pooled {
    fn handle(&self) -> Conn {
        match self {
            Pooled::Single(conn) => Conn::Single((**conn).clone()),
            Pooled::Cluster(conn) => Conn::Cluster((**conn).clone()),
        }
    }

    /// Drops the connection without returning it to the pool.
    fn discard(self) {
        match self {
            Pooled::Single(conn) => drop(deadpool_redis::Connection::take(conn)),
            Pooled::Cluster(conn) => drop(deadpool_redis::cluster::Connection::take(conn)),
        }
    }
}

enum Conn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

enum Target {
    Url(String),
    Cluster(Vec<String>),
}

/// Builds a [`RedisStore`]. Start with [`RedisStore::builder`] or
/// [`RedisStore::cluster_builder`].
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    target: TargetDebug,
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    pool_wait_timeout: Duration,
    max_connections: Option<usize>,
    operation_timeout: Duration,
}

// The URLs may hold a password: keep them out of `Debug`.
#[derive(Clone)]
struct TargetDebug(std::sync::Arc<Target>);

impl fmt::Debug for TargetDebug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Target::Url(_) => f.write_str("Single(..)"),
            Target::Cluster(urls) => write!(f, "Cluster({} urls)", urls.len()),
        }
    }
}

impl RedisStoreBuilder {
    fn new(target: Target) -> Self {
        RedisStoreBuilder {
            target: TargetDebug(std::sync::Arc::new(target)),
            prefix: DEFAULT_KEY_PREFIX.to_string(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            pool_wait_timeout: DEFAULT_POOL_WAIT_TIMEOUT,
            max_connections: None,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }

    /// How long one whole operation may take: waiting for a connection (and for another
    /// caller's reconnect), every round trip, and everything in between. An operation still
    /// running then fails with [`Error::Timeout`] (see [`crate::deadline`]). It also bounds
    /// `len` and `clear` as a whole, which make one round trip per 1,000 keys or so: raise
    /// it for stores of millions of sessions. Default:
    /// [`DEFAULT_OPERATION_TIMEOUT`] (5 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// The prefix of every key (the store's namespace). Must not be empty; should end with a
    /// separator such as `:`, and must not collide with another store's prefix (not `a` and
    /// `ab`): see [Key prefixes](self#key-prefixes). Default: [`DEFAULT_KEY_PREFIX`].
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long opening one connection may take. Default: [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one round trip (a command or a script) may take. Default:
    /// [`DEFAULT_RESPONSE_TIMEOUT`].
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long an operation may wait for a free pooled connection. Default:
    /// [`DEFAULT_POOL_WAIT_TIMEOUT`].
    pub fn pool_wait_timeout(mut self, timeout: Duration) -> Self {
        self.pool_wait_timeout = timeout;
        self
    }

    /// The largest number of pooled connections (at least 1). Default: deadpool's, 4 × the
    /// number of CPUs.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max.max(1));
        self
    }

    /// The store, without any I/O: connections are opened on first use. Fails with
    /// [`Error::Config`] on an unusable URL or an empty key prefix.
    pub fn build(self) -> Result<RedisStore> {
        check_prefix(&self.prefix)?;
        let mut pool_config = PoolConfig::default();
        if let Some(max) = self.max_connections {
            pool_config.max_size = max;
        }
        pool_config.timeouts = Timeouts {
            wait: Some(self.pool_wait_timeout),
            create: Some(self.connect_timeout),
            recycle: Some(self.response_timeout),
        };
        let pool = match &*self.target.0 {
            Target::Url(url) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.response_timeout));
                let manager = deadpool_redis::Manager::new_with_config(url.as_str(), config)
                    .map_err(|err| config_error("the Redis URL is not usable", err))?;
                let pool = deadpool_redis::Pool::builder(manager)
                    .config(pool_config)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(|err| config_error("could not build the connection pool", err))?;
                Pool::Single(pool)
            }
            Target::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(Error::config("a Redis Cluster needs at least one URL"));
                }
                let manager = deadpool_redis::cluster::Manager::new(
                    urls.iter().map(String::as_str).collect(),
                    false,
                )
                .map_err(|err| config_error("the Redis Cluster URLs are not usable", err))?;
                let pool = deadpool_redis::cluster::Pool::builder(manager)
                    .config(pool_config)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(|err| config_error("could not build the connection pool", err))?;
                Pool::Cluster(pool)
            }
        };
        let mut store = RedisStore::new(
            pool,
            self.prefix,
            self.response_timeout,
            self.pool_wait_timeout + self.connect_timeout,
        );
        store.operation_timeout = self.operation_timeout;
        Ok(store)
    }

    /// The store, after checking with a `PING` that the server (or cluster) answers.
    pub async fn connect(self) -> Result<RedisStore> {
        let store = self.build()?;
        store.ping().await?;
        Ok(store)
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Err(Error::config(
            "the Redis key prefix must not be empty (clear() would remove every key)",
        ));
    }
    Ok(())
}

fn config_error(message: &str, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Config {
        message: message.to_string(),
        source: Some(Box::new(source)),
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "mode",
                &match self.pool {
                    Pool::Single(_) => "single",
                    Pool::Cluster(_) => "cluster",
                },
            )
            .field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}

/// Why a stored value could not be read.
#[derive(Debug)]
struct FormatError(&'static str);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for FormatError {}

impl RedisStore {
    fn new(pool: Pool, prefix: String, response_timeout: Duration, checkout: Duration) -> Self {
        RedisStore {
            pool,
            shared: Shared {
                current: Mutex::new(None),
                reconnect: tokio::sync::Mutex::new(()),
                generations: AtomicU64::new(0),
                failed_checkouts: AtomicU64::new(0),
                last_failure_timed_out: AtomicBool::new(false),
                epoch: Instant::now(),
            },
            prefix,
            response_timeout,
            checkout_timeout: checkout,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            write: Script::new(WRITE_LUA),
            touch: Script::new(TOUCH_LUA),
            create: Script::new(CREATE_LUA),
        }
    }

    /// Connects to one Redis server with the default options, and checks it with a `PING`.
    /// The URL is a redis-rs URL: `redis://[user:password@]host[:port][/db]`, `rediss://`
    /// for TLS (with a TLS feature of redis-rs), `redis+unix:///path`.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url).connect().await
    }

    /// Connects to a Redis Cluster through any of its nodes, with the default options, and
    /// checks it with a `PING`.
    pub async fn connect_cluster<I, U>(urls: I) -> Result<Self>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        Self::cluster_builder(urls).connect().await
    }

    /// A builder for a store on one Redis server.
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Target::Url(url.to_string()))
    }

    /// A builder for a store on a Redis Cluster, reached through any of `urls`.
    pub fn cluster_builder<I, U>(urls: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        RedisStoreBuilder::new(Target::Cluster(
            urls.into_iter().map(|u| u.as_ref().to_string()).collect(),
        ))
    }

    /// A store over a pool of your own, with the default key prefix, response timeout and
    /// operation timeout. The pool's own timeouts apply to taking a connection; the store
    /// also gives up on a checkout after [`DEFAULT_POOL_WAIT_TIMEOUT`] +
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn from_pool(pool: deadpool_redis::Pool) -> Self {
        Self::new(
            Pool::Single(pool),
            DEFAULT_KEY_PREFIX.to_string(),
            DEFAULT_RESPONSE_TIMEOUT,
            DEFAULT_POOL_WAIT_TIMEOUT + DEFAULT_CONNECT_TIMEOUT,
        )
    }

    /// A store over a Redis Cluster pool of your own. See [`from_pool`](Self::from_pool).
    pub fn from_cluster_pool(pool: deadpool_redis::cluster::Pool) -> Self {
        Self::new(
            Pool::Cluster(pool),
            DEFAULT_KEY_PREFIX.to_string(),
            DEFAULT_RESPONSE_TIMEOUT,
            DEFAULT_POOL_WAIT_TIMEOUT + DEFAULT_CONNECT_TIMEOUT,
        )
    }

    /// This store with another key prefix. Fails with [`Error::Config`] if it is empty. See
    /// [`RedisStoreBuilder::key_prefix`] and [Key prefixes](self#key-prefixes).
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        check_prefix(&prefix)?;
        self.prefix = prefix;
        Ok(self)
    }

    /// This store with another bound on one round trip (see
    /// [`RedisStoreBuilder::response_timeout`]).
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// This store with another bound on each whole operation (see
    /// [`RedisStoreBuilder::operation_timeout`]).
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this store is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.pool, Pool::Cluster(_))
    }

    /// The Redis key of the session `id`: the prefix followed by the id.
    pub fn key_for(&self, id: &SessionId) -> String {
        let mut key = String::with_capacity(self.prefix.len() + id.as_str().len());
        key.push_str(&self.prefix);
        key.push_str(id.as_str());
        key
    }

    /// Sends a `PING` (to every primary, in cluster mode), within the operation timeout.
    pub async fn ping(&self) -> Result<()> {
        within(self.operation_timeout, "ping", None, async {
            let mut lease = self.conn("ping", None).await?;
            self.round_trip(
                &lease.health,
                "ping",
                None,
                redis::cmd("PING").query_async::<()>(&mut lease.conn),
            )
            .await
        })
        .await
    }

    /// A lease on the shared connection. When the store holds none, one caller checks one
    /// out of the pool (verified by the pool's `PING`) and installs it, and the callers that
    /// arrive meanwhile wait for it rather than each opening a connection of its own. If
    /// that checkout fails, they fail with it rather than queueing one more attempt each.
    async fn conn(&self, op: &'static str, id: Option<&SessionId>) -> Result<Lease> {
        if let Some(lease) = self.current_lease() {
            return Ok(lease);
        }
        let failures = self.shared.failed_checkouts.load(Ordering::SeqCst);
        let _turn = self.shared.reconnect.lock().await;
        if let Some(lease) = self.current_lease() {
            return Ok(lease);
        }
        if self.shared.failed_checkouts.load(Ordering::SeqCst) != failures {
            let source = Box::new(FormatError(
                "another caller's attempt to connect, which this one waited for, just failed",
            ));
            return Err(
                if self.shared.last_failure_timed_out.load(Ordering::SeqCst) {
                    Error::Timeout {
                        operation: op,
                        id: id.map(IdHint::from),
                        what: "a connection",
                        source: Some(source),
                    }
                } else {
                    Error::unavailable(op, id, source)
                },
            );
        }
        match self.checkout(op, id).await {
            Ok(pooled) => {
                let health = Arc::new(Health {
                    generation: self.shared.generations.fetch_add(1, Ordering::SeqCst) + 1,
                    last_reply: AtomicU64::new(self.clock()),
                });
                let lease = Lease {
                    conn: pooled.handle(),
                    health: Arc::clone(&health),
                };
                // Only a holder of `reconnect` installs, and it found the slot empty; a
                // connection that were there all the same would go back to the pool.
                *self.lock_current() = Some(Current { pooled, health });
                Ok(lease)
            }
            Err(err) => {
                self.shared
                    .last_failure_timed_out
                    .store(err.kind() == crate::ErrorKind::Timeout, Ordering::SeqCst);
                self.shared.failed_checkouts.fetch_add(1, Ordering::SeqCst);
                Err(err)
            }
        }
    }

    /// A lease on the installed connection, if there is one.
    fn current_lease(&self) -> Option<Lease> {
        self.lock_current().as_ref().map(|current| Lease {
            conn: current.pooled.handle(),
            health: Arc::clone(&current.health),
        })
    }

    /// A connection from the pool, within the checkout timeout.
    async fn checkout(&self, op: &'static str, id: Option<&SessionId>) -> Result<Pooled> {
        let checkout = async {
            match &self.pool {
                Pool::Single(pool) => pool.get().await.map(Pooled::Single),
                Pool::Cluster(pool) => pool.get().await.map(Pooled::Cluster),
            }
        };
        match tokio::time::timeout(self.checkout_timeout, checkout).await {
            Ok(Ok(pooled)) => Ok(pooled),
            Ok(Err(err)) => Err(pool_error(op, id, err)),
            Err(elapsed) => Err(Error::Timeout {
                operation: op,
                id: id.map(IdHint::from),
                what: "a pooled connection",
                source: Some(Box::new(elapsed)),
            }),
        }
    }

    fn lock_current(&self) -> MutexGuard<'_, Option<Current>> {
        // Nothing panics while holding this lock; a poisoned one still holds a valid Option.
        self.shared
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Discards the connection of `generation` if it is still the installed one (a newer
    /// connection is never discarded because an older one failed), so that the next
    /// operation installs a fresh one. It never goes back to the pool.
    fn discard(&self, generation: u64) {
        let failed = {
            let mut current = self.lock_current();
            match current.as_ref() {
                Some(installed) if installed.health.generation == generation => current.take(),
                _ => None,
            }
        };
        if let Some(failed) = failed {
            failed.pooled.discard();
        }
    }

    /// Microseconds since the store was made: the clock of [`Health::last_reply`].
    fn clock(&self) -> u64 {
        u64::try_from(self.shared.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Runs one round trip on a leased connection under the response timeout, and keeps the
    /// connection's health. Returns the server's own error replies (and other errors that
    /// leave the connection usable) as `Ok(Err(..))`, for the caller to map.
    ///
    /// The connection is discarded (only that generation) when it has failed:
    /// - on an I/O failure (refused, reset, closed, or the connection's driver gone);
    /// - on a timeout, if nothing at all came back on the connection while this request
    ///   waited: a half-open socket looks exactly like that, and only a new connection gets
    ///   past it. If other replies arrived meanwhile (one slow command, one slow cluster
    ///   node), the connection is fine and is kept.
    ///
    /// Server error replies (`LOADING`, `CLUSTERDOWN`, `WRONGTYPE`, ...) came over a working
    /// connection, which is kept.
    async fn exchange<T>(
        &self,
        health: &Health,
        op: &'static str,
        id: Option<&SessionId>,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>> {
        let started = self.clock();
        let timed_out = |source: BoxError| {
            if health.last_reply.load(Ordering::SeqCst) < started {
                self.discard(health.generation);
            }
            Error::Timeout {
                operation: op,
                id: id.map(IdHint::from),
                what: "the server's reply",
                source: Some(source),
            }
        };
        match tokio::time::timeout(self.response_timeout, fut).await {
            Ok(Ok(value)) => {
                health.last_reply.fetch_max(self.clock(), Ordering::SeqCst);
                Ok(Ok(value))
            }
            // redis-rs's own response timeout, which is an I/O error too.
            Ok(Err(err)) if err.is_timeout() => Err(timed_out(Box::new(err))),
            Ok(Err(err)) => {
                if breaks_connection(&err) {
                    self.discard(health.generation);
                } else if is_reply(&err) {
                    health.last_reply.fetch_max(self.clock(), Ordering::SeqCst);
                }
                Ok(Err(err))
            }
            Err(elapsed) => Err(timed_out(Box::new(elapsed))),
        }
    }

    /// [`exchange`](Self::exchange), with every error mapped to the store's [`Error`].
    async fn round_trip<T>(
        &self,
        health: &Health,
        op: &'static str,
        id: Option<&SessionId>,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        self.exchange(health, op, id, fut)
            .await?
            .map_err(|err| redis_error(op, id, err))
    }

    async fn run_write(
        &self,
        op: &'static str,
        id: &SessionId,
        session: &Session,
        expected: Option<u64>,
    ) -> Result<u64> {
        crate::session::check_nesting(id, session.data())?;
        let data = serde_json::to_vec(session.data()).map_err(|err| Error::encode(id, err))?;
        let mut lease = self.conn(op, Some(id)).await?;
        let mut invocation = self.write.key(self.key_for(id));
        invocation
            .arg(now_millis())
            .arg(if expected.is_some() { "cas" } else { "set" })
            .arg(expected.unwrap_or(0))
            .arg(session.expires_at_millis())
            .arg(data)
            .arg(fresh_version());
        let result: i64 = self
            .round_trip(
                &lease.health,
                op,
                Some(id),
                invocation.invoke_async(&mut lease.conn),
            )
            .await?;
        match result {
            -1 => Err(Error::conflict(id, expected.unwrap_or(0))),
            -2 => Err(Error::decode(
                id,
                FormatError("the stored value is not a session written by this store"),
            )),
            version => u64::try_from(version).map_err(|_| {
                Error::backend(
                    op,
                    Some(id),
                    FormatError("the write script returned an unexpected value"),
                )
            }),
        }
    }

    /// The primaries of the cluster, each as one slot it serves (to route commands to it).
    async fn primaries(&self, op: &'static str, lease: &mut Lease) -> Result<Vec<Route>> {
        let Conn::Cluster(cluster) = &mut lease.conn else {
            return Ok(Vec::new());
        };
        let reply = self
            .round_trip(
                &lease.health,
                op,
                None,
                cluster.route_command(
                    redis::cmd("CLUSTER").arg("SLOTS").clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                ),
            )
            .await?;
        let bad = || Error::backend(op, None, FormatError("unexpected reply to CLUSTER SLOTS"));
        let Value::Array(ranges) = reply else {
            return Err(bad());
        };
        let mut seen = HashSet::new();
        let mut routes = Vec::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err(bad());
            };
            let start = match fields.first() {
                Some(Value::Int(start)) => u16::try_from(*start).map_err(|_| bad())?,
                _ => return Err(bad()),
            };
            // The primary: [host, port, node id, ...]; identify it by host and port.
            let node = match fields.get(2) {
                Some(Value::Array(node)) => node,
                _ => return Err(bad()),
            };
            let host = match node.first() {
                Some(Value::BulkString(host)) => host.clone(),
                Some(Value::SimpleString(host)) => host.clone().into_bytes(),
                _ => return Err(bad()),
            };
            let port = match node.get(1) {
                Some(Value::Int(port)) => *port,
                _ => return Err(bad()),
            };
            if seen.insert((host, port)) {
                routes.push(Route::new(start, SlotAddr::Master));
            }
        }
        Ok(routes)
    }

    /// Calls `each` with every page of this store's keys, on every node (one `SCAN` pass per
    /// node). Only the page at hand is held.
    async fn scan_keys<F: AsyncBatch>(&self, op: &'static str, each: &mut F) -> Result<()> {
        let mut lease = self.conn(op, None).await?;
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let routes = self.primaries(op, &mut lease).await?;
        let nodes: Vec<Option<Route>> = if routes.is_empty() {
            vec![None]
        } else {
            routes.into_iter().map(Some).collect()
        };
        for node in nodes {
            each.start_node();
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
                let reply: Value = match (&mut lease.conn, &node) {
                    (Conn::Cluster(cluster), Some(route)) => {
                        self.round_trip(
                            &lease.health,
                            op,
                            None,
                            cluster.route_command(
                                cmd,
                                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                                    *route,
                                )),
                            ),
                        )
                        .await?
                    }
                    (conn, _) => {
                        self.round_trip(&lease.health, op, None, cmd.query_async(conn))
                            .await?
                    }
                };
                let (next, mut keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)
                    .map_err(|err| redis_error(op, None, err.into()))?;
                // `MATCH` also finds keys of a store whose prefix extends this one
                // (`session:admin:...` under `session:`) and foreign keys (`session:a:b`).
                keys.retain(|key| is_own_key(&self.prefix, key));
                if !keys.is_empty() {
                    each.batch(self, &mut lease, node, keys).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }
}

/// What `scan_keys` does with each page of keys (a trait rather than a closure, so that the
/// batch can borrow the connection across an `.await`).
#[async_trait]
trait AsyncBatch: Send {
    /// A `SCAN` pass on another node begins.
    fn start_node(&mut self) {}

    /// One page of this store's keys, found on `node` (`None` on a single server).
    async fn batch(
        &mut self,
        store: &RedisStore,
        lease: &mut Lease,
        node: Option<Route>,
        keys: Vec<Vec<u8>>,
    ) -> Result<()>;
}

/// Counts the distinct keys of a `SCAN` pass, page by page, holding at most [`LEN_WINDOW`]
/// keys: the last ones it counted, so that a key `SCAN` returns again is not counted twice.
///
/// `SCAN` returns a key more than once only when Redis shrinks the hash table between two
/// calls: the cursor then falls back to the start of the (larger) bucket of the smaller
/// table it lies in, and the keys of that bucket that the pass had already returned come
/// again. Those are the keys the pass returned last. Redis shrinks a table to the smallest
/// power of two at least as large as the number of keys, so such a bucket holds about one
/// key of this store (expected at most one, the store's keys being spread by a hash), and a
/// window of a thousand keys holds every key that can come again, with overwhelming
/// probability. Remembering every key (a set of all of them, as `len` once did) costs
/// memory proportional to the store: hundreds of MiB for millions of sessions.
struct RecentKeys {
    capacity: usize,
    count: u64,
    order: VecDeque<Arc<[u8]>>,
    seen: HashSet<Arc<[u8]>>,
}

impl RecentKeys {
    fn new(capacity: usize) -> Self {
        RecentKeys {
            capacity: capacity.max(1),
            count: 0,
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Counts the keys of one page that are not among the last ones counted.
    fn count_page(&mut self, keys: Vec<Vec<u8>>) {
        for key in keys {
            let key: Arc<[u8]> = key.into();
            if self.seen.contains(&key) {
                continue;
            }
            self.count += 1;
            if self.order.len() >= self.capacity
                && let Some(oldest) = self.order.pop_front()
            {
                self.seen.remove(&oldest);
            }
            self.seen.insert(Arc::clone(&key));
            self.order.push_back(key);
        }
    }

    /// Forgets the remembered keys (a pass on another node never returns them).
    fn forget(&mut self) {
        self.order.clear();
        self.seen.clear();
    }

    /// How many keys it holds.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.order.len()
    }
}

#[async_trait]
impl AsyncBatch for RecentKeys {
    fn start_node(&mut self) {
        self.forget();
    }

    async fn batch(
        &mut self,
        _: &RedisStore,
        _: &mut Lease,
        _: Option<Route>,
        keys: Vec<Vec<u8>>,
    ) -> Result<()> {
        self.count_page(keys);
        Ok(())
    }
}

/// Deletes each page of keys in one round trip: on a single server one `UNLINK` of the whole
/// page; on a cluster node a pipeline of one `UNLINK` per hash slot (a multi-key command must
/// stay within one slot), sent to the node the page came from. If a slot has moved since
/// (resharding), each slot's `UNLINK` of the page goes on its own, following the redirects.
struct Unlink;

#[async_trait]
impl AsyncBatch for Unlink {
    async fn batch(
        &mut self,
        store: &RedisStore,
        lease: &mut Lease,
        node: Option<Route>,
        keys: Vec<Vec<u8>>,
    ) -> Result<()> {
        match &mut lease.conn {
            Conn::Single(conn) => {
                let mut cmd = redis::cmd("UNLINK");
                for key in &keys {
                    cmd.arg(key);
                }
                store
                    .round_trip(&lease.health, "clear", None, cmd.query_async::<()>(conn))
                    .await
            }
            Conn::Cluster(cluster) => {
                let Some(first) = keys.first() else {
                    return Ok(());
                };
                // The node the page came from (or, without one, the node of its first key:
                // every key of the page lies on the same node).
                let route = node.unwrap_or_else(|| Route::with_key(first, SlotAddr::Master));
                let mut slots: HashMap<Route, redis::Cmd> = HashMap::new();
                for key in &keys {
                    slots
                        .entry(Route::with_key(key, SlotAddr::Master))
                        .or_insert_with(|| redis::cmd("UNLINK"))
                        .arg(key);
                }
                let commands: Vec<redis::Cmd> = slots.into_values().collect();
                let mut pipe = redis::pipe();
                for cmd in &commands {
                    pipe.add_command(cmd.clone());
                }
                let sent = store
                    .exchange(
                        &lease.health,
                        "clear",
                        None,
                        cluster.route_pipeline(
                            pipe,
                            0,
                            commands.len(),
                            SingleNodeRoutingInfo::SpecificNode(route),
                        ),
                    )
                    .await?;
                match sent {
                    Ok(replies) => {
                        for reply in replies {
                            reply
                                .extract_error()
                                .map_err(|err| redis_error("clear", None, err))?;
                        }
                    }
                    // A slot moved, or is moving, since the `SCAN` (resharding): the page now
                    // spans two nodes, and redis-rs, which redirects a pipeline as a whole,
                    // cannot place it. Each slot's `UNLINK` then goes on its own, routed by its
                    // keys, following redirects (an `UNLINK` already done is harmless again).
                    Err(err) if is_redirect(&err) => {
                        for cmd in &commands {
                            store
                                .round_trip(
                                    &lease.health,
                                    "clear",
                                    None,
                                    cmd.query_async::<()>(&mut *cluster),
                                )
                                .await?;
                        }
                    }
                    Err(err) => return Err(redis_error("clear", None, err)),
                }
                Ok(())
            }
        }
    }
}

/// Whether `key` is a session key of the store with this prefix: the prefix followed by a
/// valid [`SessionId`] (which never contains `:` or another separator).
fn is_own_key(prefix: &str, key: &[u8]) -> bool {
    key.strip_prefix(prefix.as_bytes())
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .is_some_and(|rest| SessionId::check(rest).is_ok())
}

/// `prefix` with the glob metacharacters of `SCAN MATCH` escaped.
fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 4);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Parses a stored value: `<version>:<expires_at_ms>:<data JSON>`.
fn decode_value(id: &SessionId, raw: &[u8]) -> Result<Session> {
    let malformed = || {
        Error::decode(
            id,
            FormatError("the stored value is not `<version>:<expires_at>:<json>`"),
        )
    };
    let mut parts = raw.splitn(3, |&b| b == b':');
    let (Some(version), Some(expires), Some(data)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if version.len() > MAX_VERSION_DIGITS {
        return Err(malformed());
    }
    let version = parse_digits(version).ok_or_else(malformed)?;
    let expires = parse_digits(expires)
        .and_then(|e| i64::try_from(e).ok())
        .ok_or_else(malformed)?;
    let data: Map<String, Json> =
        serde_json::from_slice(data).map_err(|err| Error::decode(id, err))?;
    Ok(Session::from_parts(data, expires, version))
}

/// The value decoder, for the fuzz target in `fuzz/` (built with `--cfg fuzzing` only).
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn __fuzz_decode(raw: &[u8]) -> Result<Session> {
    let id = SessionId::new("fuzzed").expect("a valid id");
    decode_value(&id, raw)
}

fn parse_digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn encode_value(version: u64, expires_at: i64, data: &[u8]) -> Vec<u8> {
    let mut value = format!("{version}:{expires_at}:").into_bytes();
    value.extend_from_slice(data);
    value
}

/// Whether a redis-rs error means "try again later".
fn is_transient(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.kind(),
            RedisErrorKind::ClusterConnectionNotFound
                | RedisErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        )
}

/// Whether a redis-rs error means the connection that carried it is broken: an I/O failure
/// other than a timeout (refused, reset, closed, the connection's driver gone), or a cluster
/// client that lost its connection to a node. Not a server's error reply, not a timeout.
fn breaks_connection(err: &RedisError) -> bool {
    !err.is_timeout()
        && (err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.kind() == RedisErrorKind::ClusterConnectionNotFound)
}

/// Whether a redis-rs error sends the command to another node: `MOVED`, `ASK`, or `TRYAGAIN`
/// (a multi-key command on a slot in the middle of a migration).
fn is_redirect(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        RedisErrorKind::Server(
            ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::TryAgain
        )
    )
}

/// Whether a redis-rs error is an error reply from the server (so the connection works).
fn is_reply(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        RedisErrorKind::Server(_) | RedisErrorKind::Extension
    )
}

fn redis_error(op: &'static str, id: Option<&SessionId>, err: RedisError) -> Error {
    if err.is_timeout() {
        Error::Timeout {
            operation: op,
            id: id.map(IdHint::from),
            what: "the server's reply",
            source: Some(Box::new(err)),
        }
    } else if is_transient(&err) {
        Error::unavailable(op, id, err)
    } else {
        Error::backend(op, id, err)
    }
}

fn pool_error(op: &'static str, id: Option<&SessionId>, err: PoolError) -> Error {
    match err {
        PoolError::Backend(err) => redis_error(op, id, err),
        err @ PoolError::Timeout(_) => Error::Timeout {
            operation: op,
            id: id.map(IdHint::from),
            what: "a pooled connection",
            source: Some(Box::new(err)),
        },
        err @ PoolError::NoRuntimeSpecified => Error::Config {
            message: "the connection pool has no async runtime configured".to_string(),
            source: Some(Box::new(err)),
        },
        err => Error::backend(op, id, err),
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        within(self.operation_timeout, "get", Some(id), self.get_op(id)).await
    }

    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        within(self.operation_timeout, "set", Some(id), async {
            if session.is_expired_at(now_millis()) {
                self.destroy_op("set", id).await?;
                return Ok(0);
            }
            self.run_write("set", id, session, None).await
        })
        .await
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        within(
            self.operation_timeout,
            "destroy",
            Some(id),
            self.destroy_op("destroy", id),
        )
        .await
    }

    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        within(
            self.operation_timeout,
            "touch",
            Some(id),
            self.touch_op(id, expires_at),
        )
        .await
    }

    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        within(
            self.operation_timeout,
            "create",
            Some(id),
            self.create_op(id, session),
        )
        .await
    }

    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected_version: u64,
    ) -> Result<u64> {
        within(
            self.operation_timeout,
            "set_if_version",
            Some(id),
            self.run_write("set_if_version", id, session, Some(expected_version)),
        )
        .await
    }

    async fn len(&self) -> Result<u64> {
        within(self.operation_timeout, "len", None, async {
            let mut count = RecentKeys::new(LEN_WINDOW);
            self.scan_keys("len", &mut count).await?;
            Ok(count.count)
        })
        .await
    }

    async fn clear(&self) -> Result<()> {
        within(
            self.operation_timeout,
            "clear",
            None,
            self.scan_keys("clear", &mut Unlink),
        )
        .await
    }

    /// Returns 0 without contacting Redis: Redis deletes expired sessions itself (each key
    /// carries the session's expiry), and `get` never returns an expired one meanwhile.
    async fn delete_expired(&self) -> Result<u64> {
        Ok(0)
    }

    /// Redis expires keys by itself ([`Capabilities::expires_by_itself`]).
    fn capabilities(&self) -> Capabilities {
        Capabilities::new().with_expires_by_itself(true)
    }
}

impl RedisStore {
    async fn get_op(&self, id: &SessionId) -> Result<Option<Session>> {
        let mut lease = self.conn("get", Some(id)).await?;
        let reply = self
            .exchange(
                &lease.health,
                "get",
                Some(id),
                redis::cmd("GET")
                    .arg(self.key_for(id))
                    .query_async::<Option<Vec<u8>>>(&mut lease.conn),
            )
            .await?;
        let raw = match reply {
            Ok(raw) => raw,
            // A key of another type under this store's prefix: not a session.
            Err(err) if err.code() == Some("WRONGTYPE") => return Err(Error::decode(id, err)),
            Err(err) => return Err(redis_error("get", Some(id), err)),
        };
        let Some(raw) = raw else {
            return Ok(None);
        };
        let session = decode_value(id, &raw)?;
        if session.is_expired_at(now_millis()) {
            return Ok(None);
        }
        Ok(Some(session))
    }

    async fn touch_op(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        let mut lease = self.conn("touch", Some(id)).await?;
        let mut invocation = self.touch.key(self.key_for(id));
        invocation.arg(now_millis()).arg(to_millis(expires_at));
        let result: i64 = self
            .round_trip(
                &lease.health,
                "touch",
                Some(id),
                invocation.invoke_async(&mut lease.conn),
            )
            .await?;
        match result {
            -2 => Err(Error::decode(
                id,
                FormatError("the stored value is not a session written by this store"),
            )),
            n => Ok(n == 1),
        }
    }

    async fn create_op(&self, id: &SessionId, session: &Session) -> Result<bool> {
        crate::session::check_nesting(id, session.data())?;
        let data = serde_json::to_vec(session.data()).map_err(|err| Error::encode(id, err))?;
        let expires_at = session.expires_at_millis();
        let value = encode_value(fresh_version(), expires_at, &data);
        let key = self.key_for(id);
        let mut lease = self.conn("create", Some(id)).await?;
        if expires_at > now_millis() {
            let set: Option<String> = self
                .round_trip(
                    &lease.health,
                    "create",
                    Some(id),
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .arg("NX")
                        .arg("PXAT")
                        .arg(expires_at)
                        .query_async(&mut lease.conn),
                )
                .await?;
            if set.is_some() {
                return Ok(true);
            }
        }
        // The key exists (perhaps holding an expired session Redis has not dropped yet), or
        // the expiry is already past: decide atomically in a script.
        let mut invocation = self.create.key(key);
        invocation.arg(now_millis()).arg(expires_at).arg(value);
        let created: i64 = self
            .round_trip(
                &lease.health,
                "create",
                Some(id),
                invocation.invoke_async(&mut lease.conn),
            )
            .await?;
        Ok(created == 1)
    }

    async fn destroy_op(&self, op: &'static str, id: &SessionId) -> Result<()> {
        let mut lease = self.conn(op, Some(id)).await?;
        self.round_trip(
            &lease.health,
            op,
            Some(id),
            redis::cmd("UNLINK")
                .arg(self.key_for(id))
                .query_async::<()>(&mut lease.conn),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SessionId {
        SessionId::new("abcdefghijkl").unwrap()
    }

    #[test]
    fn values_round_trip() {
        let data = br#"{"user":"ada","n":[1,2]}"#;
        let raw = encode_value(7, 1_767_225_600_000, data);
        assert_eq!(&raw[..17], b"7:1767225600000:{");
        let session = decode_value(&id(), &raw).unwrap();
        assert_eq!(session.version(), 7);
        assert_eq!(session.expires_at_millis(), 1_767_225_600_000);
        assert_eq!(
            session.get::<String>("user").unwrap().as_deref(),
            Some("ada")
        );
    }

    #[test]
    fn malformed_values_are_decode_errors_never_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"garbage",
            b"1:2",
            b"x:1:{}",
            b"+1:1:{}",
            b"1:-5:{}",
            b"1:1:not json",
            b"1:1:[1,2]",
            b"99999999999999999999999:1:{}",
            b"1000000000000000:1:{}",
            b"9007199254740993:1:{}",
            b"1:99999999999999999999:{}",
            b"\xff\xfe:1:{}",
        ];
        for raw in cases {
            let err = decode_value(&id(), raw).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Decode, "{raw:?}");
            assert!(!err.to_string().contains(id().as_str()));
        }
    }

    #[test]
    fn fifteen_digit_versions_are_the_largest_readable() {
        let session = decode_value(&id(), b"999999999999999:1:{}").unwrap();
        assert_eq!(session.version(), 999_999_999_999_999);
        assert!(WRITE_LUA.contains(&format!("#v > {MAX_VERSION_DIGITS}")));
        assert!(TOUCH_LUA.contains(&format!("#v > {MAX_VERSION_DIGITS}")));
        assert!(CREATE_LUA.contains(&format!("#v > {MAX_VERSION_DIGITS}")));
        // The script's largest version is MAX_VERSION, which has MAX_VERSION_DIGITS digits.
        use crate::session::MAX_VERSION;
        assert!(WRITE_LUA.contains(&format!("cur < {MAX_VERSION}")));
        assert_eq!(MAX_VERSION.to_string().len(), MAX_VERSION_DIGITS);
    }

    #[test]
    fn only_valid_ids_under_the_prefix_are_the_store_s_keys() {
        let own = |key: &[u8]| is_own_key("p:", key);
        assert!(own(b"p:abc"));
        assert!(own(b"p:Zx81-aB9_q"));
        assert!(!own(b"p:admin:abc"));
        assert!(!own(b"p:x:y"));
        assert!(!own(b"p:"));
        assert!(!own(b"p:.."));
        assert!(!own(b"p:a b"));
        assert!(!own(b"p:\xff"));
        assert!(!own(b"q:abc"));
    }

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(escape_glob("session:"), "session:");
        assert_eq!(escape_glob("a*b?c[d]e\\f"), r"a\*b\?c\[d\]e\\f");
        assert_eq!(escape_glob("{tag}-x^"), r"{tag}\-x\^");
    }

    #[test]
    fn empty_prefix_and_bad_urls_are_config_errors() {
        let err = RedisStore::builder("redis://127.0.0.1")
            .key_prefix("")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        let err = RedisStore::builder("not a url").build().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        let none: [&str; 0] = [];
        let err = RedisStore::cluster_builder(none).build().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }

    #[test]
    fn transient_classification() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(redis_error("get", Some(&id()), io).is_transient());
        let reset = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert_eq!(
            redis_error("get", None, reset).kind(),
            crate::ErrorKind::Unavailable
        );
        let timeout = RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
        assert_eq!(
            redis_error("get", None, timeout).kind(),
            crate::ErrorKind::Timeout
        );
        let server = RedisError::from((RedisErrorKind::Client, "bad"));
        let err = redis_error("set", Some(&id()), server);
        assert_eq!(err.kind(), crate::ErrorKind::Backend);
        assert!(!err.is_transient());
        use std::error::Error as _;
        assert!(err.source().unwrap().downcast_ref::<RedisError>().is_some());
    }

    fn page(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range.map(|i| format!("p:k{i}").into_bytes()).collect()
    }

    /// `len`'s counter holds at most one page's worth of keys however many it counts, and
    /// counts each key once.
    #[test]
    fn len_counts_page_by_page_holding_one_page_of_keys() {
        let mut count = RecentKeys::new(LEN_WINDOW);
        for p in 0..50 {
            count.count_page(page(p * 1000..(p + 1) * 1000));
            assert!(count.held() <= LEN_WINDOW, "holds {}", count.held());
        }
        assert_eq!(count.count, 50_000);
        assert_eq!(count.held(), LEN_WINDOW);
        // A key counted long ago is no longer held: memory does not grow with the store.
        assert!(!count.seen.contains(b"p:k0".as_slice()));
    }

    /// After Redis shrinks its table between two `SCAN` calls, the next page starts with
    /// keys the pass returned last: they are not counted again.
    #[test]
    fn keys_scan_returns_again_after_a_shrink_count_once() {
        let mut count = RecentKeys::new(LEN_WINDOW);
        count.count_page(page(0..1000));
        count.count_page(page(1000..1700));
        // The rewound bucket: the last few keys again, then new ones.
        count.count_page(page(1690..2500));
        assert_eq!(count.count, 2500);
        // Within one page too.
        let mut count = RecentKeys::new(LEN_WINDOW);
        count.count_page(vec![b"a".to_vec(), b"b".to_vec(), b"a".to_vec()]);
        assert_eq!(count.count, 2);
        // A pass on another node starts afresh.
        count.start_node();
        assert_eq!(count.held(), 0);
        assert_eq!(count.count, 2);
    }

    /// Which errors discard the shared connection: I/O failures, not timeouts and not the
    /// server's error replies.
    #[test]
    fn only_broken_connections_are_discarded() {
        let io = |kind| RedisError::from(std::io::Error::new(kind, "x"));
        for kind in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::NotConnected,
        ] {
            assert!(breaks_connection(&io(kind)), "{kind:?}");
            assert!(!is_reply(&io(kind)), "{kind:?}");
        }
        assert!(!breaks_connection(&io(std::io::ErrorKind::TimedOut)));
        assert!(breaks_connection(&RedisError::from((
            RedisErrorKind::ClusterConnectionNotFound,
            "no node"
        ))));
        for code in [
            "LOADING",
            "CLUSTERDOWN",
            "TRYAGAIN",
            "MASTERDOWN",
            "READONLY",
            "WRONGTYPE",
            "NOSCRIPT",
        ] {
            let err = match redis::parse_redis_value(format!("-{code} x\r\n").as_bytes()) {
                Ok(reply) => reply.extract_error().unwrap_err(),
                Err(err) => err,
            };
            assert_eq!(err.code(), Some(code));
            assert!(!breaks_connection(&err), "{code}");
            assert!(is_reply(&err), "{code}");
        }
    }

    #[test]
    fn debug_hides_urls() {
        let builder = RedisStore::builder("redis://user:hunter2@127.0.0.1");
        assert!(!format!("{builder:?}").contains("hunter2"));
    }
}
