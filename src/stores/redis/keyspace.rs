//! The store's keys as a whole: which keys are its own, and `len` and `clear`, which visit
//! them page by page with `SCAN` on every primary.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_redis::redis::{
    self, Value,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};

use crate::error::{Error, Result};
use crate::session::{Owner, SessionId};

use super::RedisStore;
use super::codec::{ROTATED_MARK_BYTES, marks_rotated};
use super::connection::{Conn, Lease, cluster_command, join_all};
use super::error::{FormatError, is_redirect, redis_error};

/// How many keys one `SCAN` call asks for.
pub(super) const SCAN_COUNT: usize = 1000;

/// How many of the keys it counted last `len` remembers, to recognise one that `SCAN` returns
/// a second time (see [`RecentKeys`]): one page's worth.
pub(super) const LEN_WINDOW: usize = SCAN_COUNT;

impl RedisStore {
    /// The primaries of the cluster as one node's `CLUSTER SLOTS` lists them, each by its
    /// address: a command sent there reaches that node, whatever the client's own slot map
    /// (which may still place a moved slot on its old node) says.
    async fn primaries(
        &self,
        op: &'static str,
        lease: &mut Lease,
    ) -> Result<Vec<SingleNodeRoutingInfo>> {
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
            // The primary: [host, port, node id, ...]; identify it by host and port.
            let node = match fields.get(2) {
                Some(Value::Array(node)) => node,
                _ => return Err(bad()),
            };
            let host = match node.first() {
                Some(Value::BulkString(host)) => {
                    String::from_utf8(host.clone()).map_err(|_| bad())?
                }
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err(bad()),
            };
            let port = match node.get(1) {
                Some(Value::Int(port)) => u16::try_from(*port).map_err(|_| bad())?,
                _ => return Err(bad()),
            };
            if seen.insert((host.clone(), port)) {
                routes.push(SingleNodeRoutingInfo::ByAddress { host, port });
            }
        }
        Ok(routes)
    }

    /// Calls `each` with every page of this store's session keys (and its owner index keys
    /// too, `with_index`), on every node (one `SCAN` pass per node). Only the page at hand
    /// is held.
    pub(super) async fn scan_keys<F: AsyncBatch>(
        &self,
        op: &'static str,
        each: &mut F,
        with_index: bool,
    ) -> Result<()> {
        let mut lease = self.conn(op, None).await?;
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let routes = self.primaries(op, &mut lease).await?;
        let nodes: Vec<Option<SingleNodeRoutingInfo>> = if routes.is_empty() {
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
                            cluster.route_command(cmd, RoutingInfo::SingleNode(route.clone())),
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
                keys.retain(|key| {
                    is_own_key(&self.prefix, key) || (with_index && is_index_key(&self.prefix, key))
                });
                if !keys.is_empty() {
                    each.batch(self, &mut lease, node.as_ref(), keys).await?;
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

impl RedisStore {
    /// The keys of `keys` that do not hold a rotated id (which is not a session): the first
    /// bytes of each value are read, in one pipeline on a single server, concurrently on a
    /// cluster (each key to its node). A key gone or of another type is kept, as `len`
    /// counted it before.
    pub(super) async fn without_rotated(
        &self,
        op: &'static str,
        lease: &mut Lease,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Vec<u8>>> {
        let read = |key: &[u8]| {
            let mut cmd = redis::cmd("GETRANGE");
            cmd.arg(key).arg(0).arg(ROTATED_MARK_BYTES - 1);
            cmd
        };
        let heads: Vec<redis::RedisResult<Option<Vec<u8>>>> =
            if matches!(lease.conn, Conn::Single(_)) {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for key in &keys {
                    pipe.add_command(read(key));
                }
                self.round_trip(&lease.health, op, None, pipe.query_async(&mut lease.conn))
                    .await?
            } else {
                let health = &lease.health;
                let reads = keys.iter().map(|key| {
                    let mut conn = lease.conn.clone();
                    let cmd = read(key);
                    async move {
                        self.exchange(
                            health,
                            op,
                            None,
                            cmd.query_async::<Option<Vec<u8>>>(&mut conn),
                        )
                        .await
                    }
                });
                join_all(reads.collect())
                    .await
                    .into_iter()
                    .collect::<Result<_>>()?
            };
        Ok(keys
            .into_iter()
            .zip(heads)
            .filter(|(_, head)| !matches!(head, Ok(Some(head)) if marks_rotated(head)))
            .map(|(key, _)| key)
            .collect())
    }
}

/// What `scan_keys` does with each page of keys (a trait rather than a closure, so that the
/// batch can borrow the connection across an `.await`).
#[async_trait]
pub(super) trait AsyncBatch: Send {
    /// A `SCAN` pass on another node begins.
    fn start_node(&mut self) {}

    /// One page of this store's keys, found on `node` (`None` on a single server).
    async fn batch(
        &mut self,
        store: &RedisStore,
        lease: &mut Lease,
        node: Option<&SingleNodeRoutingInfo>,
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
pub(super) struct RecentKeys {
    capacity: usize,
    pub(super) count: u64,
    order: VecDeque<Arc<[u8]>>,
    pub(super) seen: HashSet<Arc<[u8]>>,
}

impl RecentKeys {
    pub(super) fn new(capacity: usize) -> Self {
        RecentKeys {
            capacity: capacity.max(1),
            count: 0,
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Counts the keys of one page that are not among the last ones counted.
    pub(super) fn count_page(&mut self, keys: Vec<Vec<u8>>) {
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
    pub(super) fn held(&self) -> usize {
        self.order.len()
    }
}

#[async_trait]
impl AsyncBatch for RecentKeys {
    fn start_node(&mut self) {
        self.forget();
    }

    /// Counts the page's keys but those of rotated ids.
    async fn batch(
        &mut self,
        store: &RedisStore,
        lease: &mut Lease,
        _: Option<&SingleNodeRoutingInfo>,
        keys: Vec<Vec<u8>>,
    ) -> Result<()> {
        let keys = store.without_rotated("len", lease, keys).await?;
        self.count_page(keys);
        Ok(())
    }
}

/// Deletes each page of keys in one round trip: on a single server one `UNLINK` of the whole
/// page; on a cluster node a pipeline of one `UNLINK` per hash slot (a multi-key command must
/// stay within one slot), sent to the node the page came from. If a slot has moved since
/// (resharding), each slot's `UNLINK` of the page goes on its own, following the redirects.
pub(super) struct Unlink;

#[async_trait]
impl AsyncBatch for Unlink {
    async fn batch(
        &mut self,
        store: &RedisStore,
        lease: &mut Lease,
        node: Option<&SingleNodeRoutingInfo>,
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
                let route = node.cloned().unwrap_or_else(|| {
                    SingleNodeRoutingInfo::SpecificNode(Route::with_key(first, SlotAddr::Master))
                });
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
                        cluster.route_pipeline(pipe, 0, commands.len(), route),
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
                    // spans two nodes, and a pipeline cannot be placed as a whole. Each slot's
                    // `UNLINK` then goes on its own, routed by its keys, following redirects
                    // (`cluster_command`; an `UNLINK` already done is harmless again).
                    Err(err) if is_redirect(&err) => {
                        for cmd in &commands {
                            store
                                .round_trip(
                                    &lease.health,
                                    "clear",
                                    None,
                                    cluster_command(cluster, cmd),
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
pub(super) fn is_own_key(prefix: &str, key: &[u8]) -> bool {
    key.strip_prefix(prefix.as_bytes())
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .is_some_and(|rest| SessionId::check(rest).is_ok())
}

/// `prefix` with the glob metacharacters of `SCAN MATCH` escaped.
pub(super) fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 4);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What comes after the prefix in an owner's index key: `owner:{<hex of the owner>}`.
pub(super) const OWNER_KEY_INFIX: &str = "owner:{";

/// Whether `key` is an owner index key of the store with this prefix:
/// `<prefix>owner:{<lowercase hex>}`. It is never a session key of any store (an id has no
/// `:`, `{` or `}`).
pub(super) fn is_index_key(prefix: &str, key: &[u8]) -> bool {
    key.strip_prefix(prefix.as_bytes())
        .and_then(|rest| rest.strip_prefix(OWNER_KEY_INFIX.as_bytes()))
        .and_then(|rest| rest.strip_suffix(b"}"))
        .is_some_and(|owner| {
            !owner.is_empty()
                && owner.len() % 2 == 0
                && owner.len() <= 2 * Owner::MAX_LEN
                && owner.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}
