#![doc = include_str!("docs.md")]

#[cfg(feature = "cli")]
pub(crate) mod admin;
mod builder;
mod codec;
mod connection;
mod error;
mod expiries;
mod keyspace;
mod ops;
mod owners;
mod rotate;
mod scan;
mod scripts;
#[cfg(test)]
mod tests;
pub(crate) mod url;

pub use builder::RedisStoreBuilder;
#[cfg(fuzzing)]
pub use codec::__fuzz_decode;
pub use expiries::watch_expiries;

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use deadpool_redis::redis::Script;

use crate::deadline::{DEFAULT_OPERATION_TIMEOUT, within};
use crate::error::Result;
use crate::session::{Owner, Session, SessionId};
use crate::store::{Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore};
use crate::stores::shared::scan_limit;

use builder::check_prefix;
use codec::hex;
use connection::{Pool, Shared, Target};
use keyspace::{LEN_WINDOW, OWNER_KEY_INFIX, RecentKeys, Unlink};
use scan::ScanAt;

// Named by the docs (docs.md and the items' own), not by the code here.
#[cfg(doc)]
use crate::error::{Error, IdHint};
// `sessions_of`'s docs give the page size in words.
const _: () = assert!(owners::OWNER_PAGE == 500);
#[cfg(doc)]
use scripts::{CREATE_OWNED_CALL, INDEX_CALL, RECLAIM_LUA, WRITE_OWNED_CALL};

/// The default key prefix, `session:`.
pub const DEFAULT_KEY_PREFIX: &str = "session:";
/// The default time allowed to open one connection: 2 seconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default time allowed for one round trip: 2 seconds.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The default time allowed to wait for a free pooled connection: 2 seconds.
pub const DEFAULT_POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long past the largest expiry ever written for a session its owner index entry stays
/// (plus the operation timeout): see [owners](self#owners).
pub const INDEX_GRACE: Duration = Duration::from_secs(60);

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
    /// The owner index's upkeep on its own ([`INDEX_CALL`]).
    index: Script,
    /// An owned write on a single server ([`WRITE_OWNED_CALL`]).
    write_owned: Script,
    /// An owned `create` on a single server ([`CREATE_OWNED_CALL`]).
    create_owned: Script,
    destroy_owned: Script,
    /// `sessions_of`'s reclaim of dead entries, and `destroy`'s of the entry of the session it
    /// ended, on a single server ([`RECLAIM_LUA`]).
    reclaim: Script,
    /// `rotate` on a single server.
    rotate: Script,
    /// `rotate` on a cluster: claim the new key, mark the old one, release the new one.
    rotate_claim: Script,
    rotate_mark: Script,
    rotate_release: Script,
    rotate_confirm: Script,
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        within(self.operation_timeout, "get", Some(id), self.get_op(id)).await
    }

    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        // A past expiry too goes through the write script, which deletes the session (and
        // refuses, through a rotated id in its grace).
        within(
            self.operation_timeout,
            "set",
            Some(id),
            self.run_write("set", id, session, None),
        )
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
            self.scan_keys("len", &mut count, false).await?;
            Ok(count.count)
        })
        .await
    }

    async fn clear(&self) -> Result<()> {
        within(
            self.operation_timeout,
            "clear",
            None,
            self.scan_keys("clear", &mut Unlink, true),
        )
        .await
    }

    /// Returns 0 without contacting Redis: Redis deletes expired sessions itself (each key
    /// carries the session's expiry), and `get` never returns an expired one meanwhile.
    async fn delete_expired(&self) -> Result<u64> {
        Ok(0)
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let at = cursor
            .map(|cursor| ScanAt::parse(cursor, self.is_cluster()))
            .transpose()?;
        let limit = scan_limit(limit);
        within(
            self.operation_timeout,
            "scan",
            None,
            self.scan_op(at, limit),
        )
        .await
    }

    /// Bounded by the operation timeout step by step (taking the connection, reading the
    /// index, each page of 500 sessions), not as a whole: see [Owners](self#owners).
    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        self.sessions_of_op(owner, with_data).await
    }

    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        within(
            self.operation_timeout,
            "destroy_owner",
            None,
            self.destroy_owner_op(owner, except),
        )
        .await
    }

    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        within(
            self.operation_timeout,
            "rotate",
            Some(old),
            self.rotate_op(old, new, grace),
        )
        .await
    }

    /// Keeps the value's head (version, expiry, owner) and replaces its data with bytes
    /// that are not JSON, keeping the key's TTL.
    async fn make_undecodable(&self, id: &SessionId) -> Result<bool> {
        const OP: &str = "make_undecodable";
        let spoil = async {
            let mut lease = self.conn(OP, Some(id)).await?;
            let key = self.key_for(id);
            let mut get = redis::cmd("GET");
            get.arg(&key);
            let get = get.query_async(&mut lease.conn);
            let raw: Option<Vec<u8>> = self.round_trip(&lease.health, OP, Some(id), get).await?;
            let Some(raw) = raw else {
                return Ok(false);
            };
            let Some(head) = codec::decode_head(&raw) else {
                return Ok(false);
            };
            let mut spoiled = raw[..head.data_at].to_vec();
            spoiled.extend_from_slice(b"not a session");
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(spoiled).arg("KEEPTTL").arg("XX");
            let set = set.query_async(&mut lease.conn);
            let done: Option<String> = self.round_trip(&lease.health, OP, Some(id), set).await?;
            Ok(done.is_some())
        };
        within(self.operation_timeout, OP, Some(id), spoil).await
    }

    /// Redis expires keys by itself ([`Capabilities::expires_by_itself`]); sessions have
    /// owners ([`Capabilities::owners`]); scans ([`Capabilities::scan`], see
    /// [Scans](self#scans)); absolute expiry and rotation (see [Rotation](self#rotation)),
    /// on a single server and on a cluster.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_expires_by_itself(true)
            .with_owners(true)
            .with_scan(true)
            .with_absolute_expiry(true)
            .with_rotation(true)
    }
}

impl RedisStore {
    fn new(pool: Pool, prefix: String, response_timeout: Duration, checkout: Duration) -> Self {
        RedisStore {
            pool,
            shared: Shared {
                current: Mutex::new(None),
                reconnect: tokio::sync::Mutex::new(()),
                generations: AtomicU64::new(0),
                failed_checkouts: AtomicU64::new(0),
                epoch: Instant::now(),
            },
            prefix,
            response_timeout,
            checkout_timeout: checkout,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            write: scripts::write(),
            touch: scripts::touch(),
            create: scripts::create(),
            index: scripts::index(),
            write_owned: scripts::write_owned(),
            create_owned: scripts::create_owned(),
            destroy_owned: scripts::destroy_owned(),
            reclaim: scripts::reclaim(),
            rotate: scripts::rotate(),
            rotate_claim: scripts::rotate_claim(),
            rotate_mark: scripts::rotate_mark(),
            rotate_release: scripts::rotate_release(),
            rotate_confirm: scripts::rotate_confirm(),
        }
    }

    /// Connects to one Redis server with the default options, and checks it with a `PING`.
    /// The URL is a redis-rs URL: `redis://[user:password@]host[:port][/db]`, `rediss://`
    /// for TLS (feature `redis-tls`, see [TLS](self#tls)), `redis+unix:///path`.
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
        !matches!(self.pool, Pool::Single(_))
    }

    /// The Redis key of the session `id`: the prefix followed by the id.
    pub fn key_for(&self, id: &SessionId) -> String {
        let mut key = String::with_capacity(self.prefix.len() + id.as_str().len());
        key.push_str(&self.prefix);
        key.push_str(id.as_str());
        key
    }

    /// The Redis key of `owner`'s index: `<prefix>owner:{<hex of the owner>}`, a sorted set
    /// of session ids (see [owners](self#owners)). The braces are a cluster hash tag: an
    /// owner's whole index is one key in one slot. Never a session key: ids have no `:`.
    pub fn owner_key_for(&self, owner: &Owner) -> String {
        self.owner_key_of(owner.as_str().as_bytes())
    }

    pub(super) fn owner_key_of(&self, owner: &[u8]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 8 + 2 * owner.len());
        key.push_str(&self.prefix);
        key.push_str(OWNER_KEY_INFIX);
        key.push_str(&hex(owner));
        key.push('}');
        key
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "mode",
                &if self.is_cluster() {
                    "cluster"
                } else {
                    "single"
                },
            )
            .field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}
