//! The connection the store keeps checked out and shares between its operations: the pool
//! it comes from, the lease an operation works on, its replacement when it fails, and the
//! round trips on it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deadpool_redis::PoolError;
use deadpool_redis::redis::aio::ConnectionLike as _;
use deadpool_redis::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use deadpool_redis::redis::{self, Cmd, RedisFuture, Value};

use crate::deadline::within;
use crate::error::{BoxError, Error, IdHint, Result};
use crate::session::SessionId;

use super::RedisStore;
use super::error::{breaks_connection, is_reply, pool_error, redis_error};

#[cfg(doc)]
use super::RedisStoreBuilder;

/// The connection the store shares between its operations, and how it is replaced.
///
/// Each connection the store installs gets a new generation number. An operation works on a
/// [`Lease`] (a clone of the connection and its [`Health`]); when the connection fails, the
/// operation discards that generation only, so a failure seen on an old connection never
/// throws away a newer one that another task has installed meanwhile. A replacement is
/// checked out by one caller at a time (`reconnect`); the others wait for it.
/// How long a caller that waited for another's failed connect pauses before its own
/// attempt: the attempts of many waiters then come at most this often, not all at once.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause between a caller's own connect attempts.
pub(super) const RETRY_PAUSE_MAX: Duration = Duration::from_millis(800);

pub(super) struct Shared {
    pub(super) current: Mutex<Option<Current>>,
    /// Held by the one caller checking a replacement out of the pool.
    pub(super) reconnect: tokio::sync::Mutex<()>,
    /// The last generation handed out.
    pub(super) generations: AtomicU64,
    /// How many checkouts have failed, so that a caller that waited for one pauses
    /// ([`RETRY_PAUSE`]) before its own attempt.
    pub(super) failed_checkouts: AtomicU64,
    /// The origin of the [`Health::last_reply`] clock.
    pub(super) epoch: Instant,
}

pub(super) struct Current {
    pooled: Pooled,
    health: Arc<Health>,
}

/// What the store knows about one installed connection.
pub(super) struct Health {
    generation: u64,
    /// When something last came back on the connection (a value or a server error), in
    /// microseconds since [`Shared::epoch`].
    last_reply: AtomicU64,
    /// A cluster connection only (`None` on one server): when something last came back for
    /// each group of [`SLOTS_PER_GROUP`] hash slots. A node serves whole ranges of slots, so a group's
    /// replies come from one node (from two, for the groups where one node's range ends):
    /// a request to a node that stopped answering times out while the other nodes' replies
    /// keep `last_reply` fresh, and only this tells that its node has gone quiet.
    slot_replies: Option<Box<[AtomicU64]>>,
}

impl Health {
    /// Whether the connection replaces a failed node's connection by itself, as a cluster
    /// connection does (redis-rs reconnects that node, and only that one): an I/O error on
    /// one node then does not discard the connection, which would reconnect to every node.
    fn repairs_itself(&self) -> bool {
        self.slot_replies.is_some()
    }
}

/// Hash slots per group of [`Health::slot_replies`]: 256 groups of 64 of the 16,384 slots.
const SLOTS_PER_GROUP: u16 = 64;

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between
/// the first `{` and the next `}`, if not empty) or of the whole key, modulo 16,384.
pub(super) fn hash_slot(key: &[u8]) -> u16 {
    let tag = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key)) % 16384
}

/// An operation's handle on the shared connection.
pub(super) struct Lease {
    pub(super) conn: Conn,
    pub(super) health: Arc<Health>,
}

#[derive(Clone)]
pub(super) enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
    /// A Redis Cluster the store connects to itself, through redis-rs' cluster client, so
    /// that its connect and response timeouts (and TLS certificates of the application's
    /// own, [`RedisStoreBuilder::tls_root_certificate_pem`]) reach every node's connection:
    /// deadpool-redis' cluster manager passes on neither. The store holds one multiplexed
    /// cluster connection at a time anyway; a replacement is a new connection from the
    /// client.
    ClusterClient(Arc<redis::cluster::ClusterClient>),
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
    /// A connection of [`Pool::ClusterClient`] (no pool to return it to).
    ClusterClient(redis::cluster_async::ClusterConnection),
}

impl Pooled {
    fn handle(&self) -> Conn {
        match self {
            Pooled::Single(conn) => Conn::Single((**conn).clone()),
            Pooled::Cluster(conn) => Conn::Cluster((**conn).clone()),
            Pooled::ClusterClient(conn) => Conn::Cluster(conn.clone()),
        }
    }

    /// Drops the connection without returning it to the pool.
    fn discard(self) {
        match self {
            Pooled::Single(conn) => drop(deadpool_redis::Connection::take(conn)),
            Pooled::Cluster(conn) => drop(deadpool_redis::cluster::Connection::take(conn)),
            Pooled::ClusterClient(conn) => drop(conn),
        }
    }
}

#[derive(Clone)]
pub(super) enum Conn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

#[deny(clippy::missing_trait_methods)]
impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => Box::pin(cluster_command(conn, cmd)),
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
            Conn::Cluster(conn) => Box::pin(cluster_pipeline(conn, pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// How many times a command a cluster did not run is sent again (a redirection, a cluster
/// that is failing over or loading, a node connection being replaced) before its error is
/// returned. Each wait is short; the operation's own deadline bounds the whole.
const CLUSTER_RESENDS: u32 = 16;

/// The pause before resending a command the cluster did not run, after `attempt` tries: 10 ms,
/// doubling, at most 160 ms.
fn cluster_pause(attempt: u32) -> Duration {
    Duration::from_millis(10u64 << attempt.min(4))
}

/// Where a command the cluster did not run goes next.
pub(super) enum Resend {
    /// To the node that serves the slot now (`MOVED`): the command was not run.
    Moved(SingleNodeRoutingInfo),
    /// To the node importing the slot, after `ASKING` (`ASK`): the command was not run.
    Ask(SingleNodeRoutingInfo),
    /// Again, routed by its keys, after a pause: the cluster refused it without running it
    /// (`TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING`, `READONLY`, no connection to the
    /// node), or it only reads and its connection broke.
    Later,
}

/// Whether and where to resend a command that failed with `err`. Never after an error that
/// leaves open whether the command ran (an I/O error or a timeout after it was sent), unless
/// it only reads: redis-rs' cluster client, left to itself, resends those too, and a write
/// script that already ran would run twice (a `create` would report a collision with
/// itself, a compare-and-set a conflict with its own write, a `set` could undo a later
/// write). The store's cluster clients are built with redis-rs' retries off
/// ([`RedisStoreBuilder::connect`]), and this is their only resend.
pub(super) fn resend(err: &redis::RedisError, reads_only: bool) -> Option<Resend> {
    use redis::{ErrorKind, ServerErrorKind};
    let by_address = || {
        let (addr, _slot) = err.redirect_node()?;
        let (host, port) = addr.rsplit_once(':')?;
        Some(SingleNodeRoutingInfo::ByAddress {
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    };
    match err.kind() {
        ErrorKind::Server(ServerErrorKind::Moved) => {
            Some(by_address().map_or(Resend::Later, Resend::Moved))
        }
        ErrorKind::Server(ServerErrorKind::Ask) => {
            Some(by_address().map_or(Resend::Later, Resend::Ask))
        }
        ErrorKind::Server(
            ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::ReadOnly,
        )
        | ErrorKind::ClusterConnectionNotFound => Some(Resend::Later),
        _ if err.is_connection_refusal() => Some(Resend::Later),
        // Any I/O error but a timeout (a dropped connection is one of them).
        _ if reads_only && !err.is_timeout() && err.is_io_error() => Some(Resend::Later),
        _ => None,
    }
}

/// Whether a command only reads (so running it twice is harmless). Scripts are not: every
/// script of the store writes.
pub(super) fn reads_only(cmd: &Cmd) -> bool {
    const READS: [&[u8]; 14] = [
        b"GET",
        b"GETRANGE",
        b"MGET",
        b"EXISTS",
        b"TYPE",
        b"PTTL",
        b"STRLEN",
        b"PING",
        b"SCAN",
        b"ZSCAN",
        b"ZRANGE",
        b"ZRANGEBYSCORE",
        b"ZCARD",
        b"ZSCORE",
    ];
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => READS.iter().any(|read| name.eq_ignore_ascii_case(read)),
        _ => false,
    }
}

/// One command on a cluster connection, resent where the cluster did not run it
/// ([`resend`]).
pub(super) async fn cluster_command(
    conn: &mut redis::cluster_async::ClusterConnection,
    cmd: &Cmd,
) -> redis::RedisResult<Value> {
    let reads = reads_only(cmd);
    let mut next: Option<Resend> = None;
    let mut attempt = 0;
    loop {
        let result = match next.take() {
            None | Some(Resend::Later) => conn.req_packed_command(cmd).await,
            Some(Resend::Moved(node)) => {
                conn.route_command(cmd.clone(), RoutingInfo::SingleNode(node))
                    .await
            }
            Some(Resend::Ask(node)) => {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").add_command(cmd.clone());
                conn.route_pipeline(pipe, 1, 1, node)
                    .await
                    .and_then(|mut replies| {
                        replies.pop().ok_or_else(|| {
                            redis::RedisError::from((
                                redis::ErrorKind::Client,
                                "no reply to a command sent after ASKING",
                            ))
                        })
                    })
            }
        };
        let err = match result {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        attempt += 1;
        match resend(&err, reads) {
            Some(how) if attempt <= CLUSTER_RESENDS => {
                if matches!(how, Resend::Later) {
                    tokio::time::sleep(cluster_pause(attempt)).await;
                }
                next = Some(how);
            }
            _ => return Err(err),
        }
    }
}

/// A pipeline on a cluster connection, sent again, after a pause, when the cluster ran none
/// of it: redis-rs places a pipeline by its first command's keys and reports a redirection
/// or a missing node connection for the whole. Only the pipeline's own routing (by its
/// keys) is retried; the store sends no pipeline that writes across slots.
async fn cluster_pipeline(
    conn: &mut redis::cluster_async::ClusterConnection,
    pipeline: &redis::Pipeline,
    offset: usize,
    count: usize,
) -> redis::RedisResult<Vec<Value>> {
    let reads = pipeline.cmd_iter().all(reads_only);
    let mut attempt = 0;
    loop {
        let err = match conn.req_packed_commands(pipeline, offset, count).await {
            Ok(values) => return Ok(values),
            Err(err) => err,
        };
        attempt += 1;
        match resend(&err, reads) {
            Some(_) if attempt <= CLUSTER_RESENDS => {
                tokio::time::sleep(cluster_pause(attempt)).await;
            }
            _ => return Err(err),
        }
    }
}

pub(super) enum Target {
    Url(String),
    Cluster(Vec<String>),
}

impl RedisStore {
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
    /// that checkout fails, each waiter makes an attempt of its own in turn, after a short
    /// pause ([`RETRY_PAUSE`]): one connect that failed (say, one that took longer than its
    /// limit on a loaded machine) fails only its own caller, and every other caller fails
    /// only when its own operation deadline passes, with its own attempt's error as the
    /// cause.
    ///
    /// A caller whose own attempt failed with a transient error (the server unreachable, a
    /// connect over its limit) tries again, after a pause that doubles from [`RETRY_PAUSE`]
    /// up to [`RETRY_PAUSE_MAX`], while the next attempt can still start before the
    /// operation's deadline (the operation timeout from the call): so one refused or slow
    /// connect fails no operation that had time for another, and an operation that runs out
    /// of time fails with its last attempt's error, the real cause, as its source.
    pub(super) async fn conn(&self, op: &'static str, id: Option<&SessionId>) -> Result<Lease> {
        // The common case, an installed connection, reads no clock.
        if let Some(lease) = self.current_lease() {
            return Ok(lease);
        }
        let deadline = Instant::now() + self.operation_timeout;
        let mut pause = RETRY_PAUSE;
        loop {
            match self.conn_once(op, id).await {
                Err(err) if err.is_transient() && Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
                done => return done,
            }
        }
    }

    /// One turn at [`conn`](Self::conn): the installed connection, or one attempt to install
    /// one.
    async fn conn_once(&self, op: &'static str, id: Option<&SessionId>) -> Result<Lease> {
        if let Some(lease) = self.current_lease() {
            return Ok(lease);
        }
        let failures = self.shared.failed_checkouts.load(Ordering::SeqCst);
        let _turn = self.shared.reconnect.lock().await;
        if let Some(lease) = self.current_lease() {
            return Ok(lease);
        }
        if self.shared.failed_checkouts.load(Ordering::SeqCst) != failures {
            // Another caller's attempt failed while this one waited: not at once again.
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        match self.checkout(op, id).await {
            Ok(pooled) => {
                let health = Arc::new(Health {
                    generation: self.shared.generations.fetch_add(1, Ordering::SeqCst) + 1,
                    last_reply: AtomicU64::new(self.clock()),
                    slot_replies: (!matches!(pooled, Pooled::Single(_))).then(|| {
                        (0..16384 / SLOTS_PER_GROUP)
                            .map(|_| AtomicU64::new(self.clock()))
                            .collect()
                    }),
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
                Pool::ClusterClient(client) => client
                    .get_async_connection()
                    .await
                    .map(Pooled::ClusterClient)
                    .map_err(PoolError::Backend),
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
    /// - on an I/O failure (refused, reset, closed, or the connection's driver gone), on one
    ///   server; a cluster connection is kept, since redis-rs replaces the failed node's
    ///   connection itself, and only that one (the others carry on undisturbed);
    /// - on a timeout, if nothing at all came back on the connection while this request
    ///   waited: a half-open socket looks exactly like that, and only a new connection gets
    ///   past it. If other replies arrived meanwhile (one slow command), the connection is
    ///   fine and is kept. On a cluster, for a request on a session's key, "nothing came
    ///   back" is asked of the key's group of slots (its node), not of the whole
    ///   connection: a node that went quiet is got past although the others answer (by a
    ///   new cluster connection; redis-rs has no way to replace one node's connection from
    ///   outside, and the requests on the old one to the other nodes finish there).
    ///
    /// Server error replies (`LOADING`, `CLUSTERDOWN`, `WRONGTYPE`, ...) came over a working
    /// connection, which is kept.
    pub(super) async fn exchange<T>(
        &self,
        health: &Health,
        op: &'static str,
        id: Option<&SessionId>,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>> {
        // On a cluster, the replies of the slot group of the session's key: its node's.
        let group = health.slot_replies.as_ref().zip(id).map(|(groups, id)| {
            &groups[usize::from(hash_slot(self.key_for(id).as_bytes()) / SLOTS_PER_GROUP)]
        });
        let replied = || {
            let now = self.clock();
            health.last_reply.fetch_max(now, Ordering::SeqCst);
            if let Some(group) = group {
                group.fetch_max(now, Ordering::SeqCst);
            }
        };
        let started = self.clock();
        let timed_out = |source: BoxError| {
            let last = group.unwrap_or(&health.last_reply);
            if last.load(Ordering::SeqCst) < started {
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
                replied();
                Ok(Ok(value))
            }
            // redis-rs's own response timeout, which is an I/O error too.
            Ok(Err(err)) if err.is_timeout() => Err(timed_out(Box::new(err))),
            Ok(Err(err)) => {
                if breaks_connection(&err) && !health.repairs_itself() {
                    self.discard(health.generation);
                } else if is_reply(&err) {
                    replied();
                }
                Ok(Err(err))
            }
            Err(elapsed) => Err(timed_out(Box::new(elapsed))),
        }
    }

    /// [`exchange`](Self::exchange), with every error mapped to the store's [`Error`].
    pub(super) async fn round_trip<T>(
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
}

/// Runs `futures` concurrently and returns their outputs in order. On one multiplexed
/// connection, concurrent requests are pipelined; this is what lets `sessions_of` and
/// `destroy_owner` read a page of sessions in about one round trip, even on a cluster, where
/// a pipeline cannot span slots.
pub(super) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
