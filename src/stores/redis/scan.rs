//! `scan`: the store's sessions page by page, `SCAN` on a single server and slot by slot on
//! a cluster, and the cursors that resume it.

use std::collections::HashSet;
use std::time::Instant;

use deadpool_redis::redis::{
    self,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};

use crate::error::{Error, Result};
use crate::session::{SessionId, now_millis};
use crate::store::{ScanCursor, ScanPage, Undecodable};

use super::RedisStore;
use super::codec::{HEAD_BYTES, decode_stored, parse_digits};
use super::connection::{Conn, Lease, join_all};
use super::error::redis_error;
use super::keyspace::{SCAN_COUNT, escape_glob};

/// The start of a scan cursor on a single server: `redis1:s:<SCAN cursor | end>:<ids>`.
const SCAN_TAG_SINGLE: &str = "redis1:s:";

/// The start of a scan cursor on a cluster: `redis1:c:<slot>:<last id | nothing>`.
const SCAN_TAG_CLUSTER: &str = "redis1:c:";

/// The number of hash slots of a Redis Cluster.
const HASH_SLOTS: u16 = 16384;

/// The most slots a cluster scan reads the keys of at once (concurrently, each routed to
/// its slot's primary).
const SLOT_BATCH: u16 = 1024;

/// The fewest slots a cluster scan reads at once: a page starts with a batch that follows
/// its room (4 slots per session it has room for, from this up to [`SLOT_BATCH`]), growing
/// fourfold after a batch that held none of this store's keys, so that a small page does
/// not count a thousand slots and a sparse store does not take a round trip per few slots.
const SLOT_BATCH_MIN: u16 = 16;

/// How many keys a cluster scan first asks a slot for (most slots of a cluster hold fewer).
const SLOT_KEYS_FIRST: usize = 32;

/// The smallest `COUNT` a single-server scan asks `SCAN` for.
const SCAN_MIN_COUNT: usize = 10;

/// Where a scan goes on.
#[derive(Debug, PartialEq)]
pub(super) enum ScanAt {
    /// A single server: the `SCAN` cursor (`None` once the pass is over) and the ids a
    /// `SCAN` call found beyond the page that had room for them, returned first.
    Single {
        cursor: Option<u64>,
        pending: Vec<SessionId>,
    },
    /// A cluster: the hash slot, and the last id returned in it (the slot's ids come in
    /// order).
    Cluster { slot: u16, after: Option<SessionId> },
}

impl ScanAt {
    fn cursor(&self) -> ScanCursor {
        match self {
            ScanAt::Single { cursor, pending } => {
                let at = cursor.map_or_else(|| "end".to_string(), |c| c.to_string());
                let ids: Vec<&str> = pending.iter().map(SessionId::as_str).collect();
                ScanCursor::new(format!("{SCAN_TAG_SINGLE}{at}:{}", ids.join(",")))
            }
            ScanAt::Cluster { slot, after } => ScanCursor::new(format!(
                "{SCAN_TAG_CLUSTER}{slot}:{}",
                after.as_ref().map_or("", SessionId::as_str)
            )),
        }
    }

    /// A cursor this store made (for a store in `cluster` mode or not); [`Error::Config`]
    /// for anything else, a cursor of the other mode included.
    pub(super) fn parse(cursor: &ScanCursor, cluster: bool) -> Result<ScanAt> {
        let foreign = || {
            Error::config(if cluster {
                "not a scan cursor of a RedisStore on a Redis Cluster (`redis1:c:<slot>:<id>`)"
            } else {
                "not a scan cursor of a RedisStore on a single Redis server \
                 (`redis1:s:<cursor>:<ids>`)"
            })
        };
        let text = cursor.as_str();
        if cluster {
            let rest = text.strip_prefix(SCAN_TAG_CLUSTER).ok_or_else(foreign)?;
            let (slot, after) = rest.split_once(':').ok_or_else(foreign)?;
            let slot: u16 = parse_digits(slot.as_bytes())
                .and_then(|slot| u16::try_from(slot).ok())
                .filter(|&slot| slot < HASH_SLOTS)
                .ok_or_else(foreign)?;
            let after = match after {
                "" => None,
                id => Some(SessionId::new(id).map_err(|_| foreign())?),
            };
            Ok(ScanAt::Cluster { slot, after })
        } else {
            let rest = text.strip_prefix(SCAN_TAG_SINGLE).ok_or_else(foreign)?;
            let (at, ids) = rest.split_once(':').ok_or_else(foreign)?;
            let cursor = match at {
                "end" => None,
                at => Some(parse_digits(at.as_bytes()).ok_or_else(foreign)?),
            };
            let pending = match ids {
                "" => Vec::new(),
                ids => ids
                    .split(',')
                    .map(|id| SessionId::new(id).map_err(|_| foreign()))
                    .collect::<Result<_>>()?,
            };
            Ok(ScanAt::Single { cursor, pending })
        }
    }
}

/// The id of `key`, if it is a session key of the store with this prefix.
fn id_of_key(prefix: &str, key: &[u8]) -> Option<SessionId> {
    let rest = key.strip_prefix(prefix.as_bytes())?;
    SessionId::new(std::str::from_utf8(rest).ok()?).ok()
}

impl RedisStore {
    /// One page of a scan (see [Scans](super#scans)).
    pub(super) async fn scan_op(&self, at: Option<ScanAt>, limit: usize) -> Result<ScanPage> {
        const OP: &str = "scan";
        let mut lease = self.conn(OP, None).await?;
        let started = Instant::now();
        let (ids, next) = match (&lease.conn, at) {
            (Conn::Single(_), None) => {
                self.scan_single(&mut lease, Some(0), Vec::new(), limit, started)
                    .await?
            }
            (Conn::Single(_), Some(ScanAt::Single { cursor, pending })) => {
                self.scan_single(&mut lease, cursor, pending, limit, started)
                    .await?
            }
            (Conn::Cluster(_), None) => {
                self.scan_cluster(&mut lease, 0, None, limit, started)
                    .await?
            }
            (Conn::Cluster(_), Some(ScanAt::Cluster { slot, after })) => {
                self.scan_cluster(&mut lease, slot, after, limit, started)
                    .await?
            }
            // `parse` took the mode into account; the connection's mode is the pool's.
            (_, Some(_)) => {
                return Err(Error::config(
                    "a scan cursor of a RedisStore in the other mode (single server or cluster)",
                ));
            }
        };
        let values = self.read_values(OP, &mut lease, &ids, true).await?;
        let now = now_millis();
        let mut sessions = Vec::with_capacity(ids.len());
        // Entries that do not decode are reported, and the scan goes on past them.
        let mut undecodable = Vec::new();
        for (id, value) in ids.into_iter().zip(values) {
            let raw = match value {
                Ok(Some(raw)) => raw,
                // Gone since the keys were listed: not live for the whole scan.
                Ok(None) => continue,
                // A key of another type under this store's prefix, as `get` reports it.
                Err(err) if err.code() == Some("WRONGTYPE") => {
                    let err = Error::decode(&id, err);
                    undecodable.push(Undecodable::new(Some(id), err));
                    continue;
                }
                Err(err) => return Err(redis_error(OP, Some(&id), err)),
            };
            match decode_stored(&id, &raw) {
                // Expired, or a rotated id (not a session).
                Ok((session, moved_to)) if session.is_expired_at(now) || moved_to.is_some() => {}
                Ok((session, _)) => sessions.push((id, session)),
                Err(err) => undecodable.push(Undecodable::new(Some(id), err)),
            }
        }
        Ok(ScanPage::new(sessions, next.map(|at| at.cursor())).with_undecodable(undecodable))
    }

    /// Whether a page that has been gathering keys since `started` should stop and return
    /// what it has (empty perhaps), leaving room in the operation timeout for its reads.
    fn scan_budget_spent(&self, started: Instant) -> bool {
        started.elapsed() >= self.operation_timeout / 4
    }

    /// The ids of a single-server page: the pending ones first, then `SCAN` calls from
    /// `cursor` until the page is full, the pass is over or the time budget is spent. Ids
    /// found beyond the page's room go into the next cursor (`SCAN` cannot resume in the
    /// middle of what one call returned). Its `COUNT` follows the page's room (at least
    /// [`SCAN_MIN_COUNT`]), growing fourfold after a call that found none of this store's
    /// keys (up to [`SCAN_COUNT`]), so that a sparse keyspace costs few round trips and a
    /// dense one leaves few ids over.
    async fn scan_single(
        &self,
        lease: &mut Lease,
        mut cursor: Option<u64>,
        mut pending: Vec<SessionId>,
        limit: usize,
        started: Instant,
    ) -> Result<(Vec<SessionId>, Option<ScanAt>)> {
        const OP: &str = "scan";
        let take = pending.len().min(limit);
        let mut ids: Vec<SessionId> = pending.drain(..take).collect();
        let mut seen: HashSet<SessionId> = ids.iter().chain(&pending).cloned().collect();
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut count = (limit - ids.len()).clamp(SCAN_MIN_COUNT, SCAN_COUNT);
        while pending.is_empty() && ids.len() < limit {
            let Some(at) = cursor else { break };
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(at)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(count);
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .round_trip(&lease.health, OP, None, cmd.query_async(&mut lease.conn))
                .await?;
            cursor = (next != 0).then_some(next);
            let mut found = false;
            for id in keys.iter().filter_map(|key| id_of_key(&self.prefix, key)) {
                found = true;
                // A key the pass returned twice within this page is kept once.
                if !seen.insert(id.clone()) {
                    continue;
                }
                if ids.len() < limit {
                    ids.push(id);
                } else {
                    pending.push(id);
                }
            }
            count = if found {
                (limit - ids.len()).clamp(SCAN_MIN_COUNT, SCAN_COUNT)
            } else {
                (count * 4).min(SCAN_COUNT)
            };
            if self.scan_budget_spent(started) {
                break;
            }
        }
        let next =
            (cursor.is_some() || !pending.is_empty()).then_some(ScanAt::Single { cursor, pending });
        Ok((ids, next))
    }

    /// The ids of a cluster page: slot after slot from `slot` (after `after` within it),
    /// reading a batch of slots' keys at once ([`SLOT_BATCH_MIN`] to [`SLOT_BATCH`] slots),
    /// each routed to its slot's primary; a slot's ids in order, so that a page can end in
    /// the middle of a slot.
    async fn scan_cluster(
        &self,
        lease: &mut Lease,
        mut slot: u16,
        mut after: Option<SessionId>,
        limit: usize,
        started: Instant,
    ) -> Result<(Vec<SessionId>, Option<ScanAt>)> {
        let mut ids = Vec::new();
        let room_batch = u16::try_from(limit.saturating_mul(4)).unwrap_or(SLOT_BATCH);
        let mut batch = room_batch.clamp(SLOT_BATCH_MIN, SLOT_BATCH);
        while slot < HASH_SLOTS && ids.len() < limit {
            let end = slot.saturating_add(batch).min(HASH_SLOTS);
            let had = ids.len();
            // Every slot's keys at once (most slots hold a few keys, so asking for them
            // costs no more than counting them first).
            let keys = join_all((slot..end).map(|s| self.slot_keys(lease, s)).collect()).await;
            let mut full = false;
            for (s, keys) in (slot..end).zip(keys) {
                let mut slot_ids: Vec<SessionId> = keys?
                    .iter()
                    .filter_map(|key| id_of_key(&self.prefix, key))
                    .collect();
                slot_ids.sort_unstable();
                let from = match (s == slot, &after) {
                    (true, Some(after)) => slot_ids.partition_point(|id| id <= after),
                    _ => 0,
                };
                let room = limit - ids.len();
                let rest = &slot_ids[from..];
                if rest.len() > room {
                    // The page ends in the middle of this slot.
                    ids.extend_from_slice(&rest[..room]);
                    slot = s;
                    // Nothing of this slot yet if the page was already full.
                    after = rest[..room].last().cloned();
                    full = true;
                    break;
                }
                ids.extend_from_slice(rest);
            }
            if full {
                break;
            }
            slot = end;
            after = None;
            if ids.len() == had {
                batch = batch.saturating_mul(4).min(SLOT_BATCH);
            }
            if self.scan_budget_spent(started) {
                break;
            }
        }
        let next = (slot < HASH_SLOTS).then_some(ScanAt::Cluster { slot, after });
        Ok((ids, next))
    }

    /// Every key in `slot`: `CLUSTER GETKEYSINSLOT` for [`SLOT_KEYS_FIRST`] keys, asked
    /// again for twice as many while it returns as many as it was asked for, since it
    /// returns them in no particular order.
    async fn slot_keys(&self, lease: &Lease, slot: u16) -> Result<Vec<Vec<u8>>> {
        let Conn::Cluster(cluster) = &lease.conn else {
            return Ok(Vec::new());
        };
        let mut ask = SLOT_KEYS_FIRST;
        loop {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("GETKEYSINSLOT").arg(slot).arg(ask);
            let keys: Vec<Vec<u8>> = self
                .round_trip(
                    &lease.health,
                    "scan",
                    None,
                    cluster.clone().route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                            slot,
                            SlotAddr::Master,
                        ))),
                    ),
                )
                .await
                .and_then(|reply| {
                    redis::from_redis_value(reply)
                        .map_err(|err| redis_error("scan", None, err.into()))
                })?;
            if keys.len() < ask {
                return Ok(keys);
            }
            ask = ask.saturating_mul(2);
        }
    }

    /// The values of `ids` (`GET`, or with `data` false `GETRANGE` of the head only), in
    /// order, each as the server answered it (a server error reply, such as `WRONGTYPE`,
    /// stays the caller's to map). On a single server one pipeline, one round trip; on a
    /// cluster concurrent commands, which the multiplexed connection pipelines to each key's
    /// node (a pipeline cannot span slots).
    pub(super) async fn read_values(
        &self,
        op: &'static str,
        lease: &mut Lease,
        ids: &[SessionId],
        data: bool,
    ) -> Result<Vec<redis::RedisResult<Option<Vec<u8>>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let read = |id: &SessionId| {
            let mut cmd = redis::cmd(if data { "GET" } else { "GETRANGE" });
            cmd.arg(self.key_for(id));
            if !data {
                cmd.arg(0).arg(HEAD_BYTES - 1);
            }
            cmd
        };
        if matches!(lease.conn, Conn::Single(_)) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for id in ids {
                pipe.add_command(read(id));
            }
            return self
                .round_trip(&lease.health, op, None, pipe.query_async(&mut lease.conn))
                .await;
        }
        let health = &lease.health;
        let reads = ids.iter().map(|id| {
            let mut conn = lease.conn.clone();
            let cmd = read(id);
            async move {
                self.exchange(
                    health,
                    op,
                    Some(id),
                    cmd.query_async::<Option<Vec<u8>>>(&mut conn),
                )
                .await
            }
        });
        join_all(reads.collect()).await.into_iter().collect()
    }
}
