//! Owners: the index of each owner's sessions (a sorted set), its upkeep, and
//! `sessions_of` and `destroy_owner`, which read it.

use std::collections::HashSet;

use deadpool_redis::redis::{self, Value};

use crate::deadline::within;
use crate::error::{Error, Result};
use crate::session::{Owner, SessionId, now_millis};
use crate::store::OwnedSession;

use super::codec::{decode_head, owner_field};
use super::connection::{Conn, Lease, join_all};
use super::error::redis_error;
use super::{INDEX_GRACE, RedisStore};

#[cfg(doc)]
use super::scripts::{DESTROY_OWNED_LUA, INDEX_FN, OWNER_FN};

/// How many index entries one `ZSCAN` asks for, and how many sessions `sessions_of` and
/// `destroy_owner` read or delete at once (concurrently, on the multiplexed connection).
pub(super) const OWNER_PAGE: usize = 500;

impl RedisStore {
    /// What the scripts get as the key prefix's length, to remove entries from an owner index
    /// the script computes the key of ([`OWNER_FN`]): the length on a single server, 0 in
    /// cluster mode, where that index lies in another slot and is left alone.
    pub(super) fn unindex_len(&self, conn: &Conn) -> usize {
        match conn {
            Conn::Single(_) => self.prefix.len(),
            Conn::Cluster(_) => 0,
        }
    }

    /// How long past its score (the largest expiry written for the session) an index entry
    /// is kept, in milliseconds: [`INDEX_GRACE`] plus the operation timeout, so that an
    /// operation still running (a `touch` between its script and its index update) or an
    /// application clock somewhat behind never sees a live session's entry removed.
    pub(super) fn index_grace(&self) -> i64 {
        let grace = INDEX_GRACE.saturating_add(self.operation_timeout);
        i64::try_from(grace.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// Raises (or adds) `id` in the index at `owner_key` to `expires_at`, removing the
    /// provably dead entries ([`INDEX_FN`]).
    pub(super) async fn raise_index(
        &self,
        lease: &mut Lease,
        op: &'static str,
        id: &SessionId,
        owner_key: &str,
        expires_at: i64,
    ) -> Result<()> {
        let grace = self.index_grace();
        let mut invocation = self.index.key(owner_key);
        invocation
            .arg(id.as_str())
            .arg(expires_at)
            .arg(now_millis().saturating_sub(grace))
            .arg(grace);
        self.round_trip(
            &lease.health,
            op,
            Some(id),
            invocation.invoke_async::<i64>(&mut lease.conn),
        )
        .await
        .map(drop)
    }

    /// The candidates of `owner`'s index: every id in it, once each, after removing the
    /// entries that are provably dead (score below now minus the grace). `ZSCAN` returns
    /// every entry present for the whole pass (and perhaps one twice: hence the set), in
    /// pages of about [`OWNER_PAGE`]; the removal rides in the first page's round trip.
    async fn candidates(
        &self,
        op: &'static str,
        lease: &mut Lease,
        owner_key: &str,
    ) -> Result<Vec<SessionId>> {
        let cutoff = now_millis().saturating_sub(self.index_grace());
        let mut seen = HashSet::new();
        let mut ids = Vec::new();
        let mut cursor: u64 = 0;
        let mut first = true;
        loop {
            let mut zscan = redis::cmd("ZSCAN");
            zscan
                .arg(owner_key)
                .arg(cursor)
                .arg("COUNT")
                .arg(OWNER_PAGE);
            let reply: Value = if first {
                let mut pipe = redis::pipe();
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(owner_key)
                    .arg("-inf")
                    .arg(format!("({cutoff}"))
                    .ignore()
                    .add_command(zscan);
                let (reply,): (Value,) = self
                    .round_trip(&lease.health, op, None, pipe.query_async(&mut lease.conn))
                    .await?;
                reply
            } else {
                self.round_trip(&lease.health, op, None, zscan.query_async(&mut lease.conn))
                    .await?
            };
            first = false;
            let (next, members): (u64, Vec<Vec<u8>>) =
                redis::from_redis_value(reply).map_err(|err| redis_error(op, None, err.into()))?;
            // Member, score, member, score, ...
            for member in members.into_iter().step_by(2) {
                let Some(id) = std::str::from_utf8(&member)
                    .ok()
                    .and_then(|id| SessionId::new(id).ok())
                else {
                    continue;
                };
                if seen.insert(id.clone()) {
                    ids.push(id);
                }
            }
            if next == 0 {
                return Ok(ids);
            }
            cursor = next;
        }
    }

    pub(super) async fn sessions_of_op(
        &self,
        owner: &Owner,
        with_data: bool,
    ) -> Result<Vec<OwnedSession>> {
        const OP: &str = "sessions_of";
        let bound = self.operation_timeout;
        let mut lease = within(bound, OP, None, self.conn(OP, None)).await?;
        let owner_key = self.owner_key_for(owner);
        let ids = within(bound, OP, None, self.candidates(OP, &mut lease, &owner_key)).await?;
        let single = matches!(lease.conn, Conn::Single(_));
        let cutoff = now_millis().saturating_sub(self.index_grace());
        let field = owner_field(owner);
        let mut sessions = Vec::new();
        for page in ids.chunks(OWNER_PAGE) {
            // One pipeline on a single server; concurrent reads on a cluster, each to its
            // key's node. Without the data, the head is enough. Each page is bounded by the
            // operation timeout on its own.
            let replies = within(
                self.operation_timeout,
                OP,
                None,
                self.read_values(OP, &mut lease, page, with_data),
            )
            .await?
            .into_iter()
            .zip(page)
            .map(|(reply, id)| match reply {
                Ok(raw) => Ok(raw),
                // A key of another type: not a session of anyone's.
                Err(err) if err.code() == Some("WRONGTYPE") => Ok(None),
                Err(err) => Err(redis_error(OP, Some(id), err)),
            });
            let now = now_millis();
            // The entries whose key held no session of this owner, as the reads saw it.
            let mut dead = Vec::new();
            for (id, reply) in page.iter().zip(replies) {
                let Some(raw) = reply? else {
                    dead.push(id);
                    continue;
                };
                // A value this store cannot read names no owner: it is not listed.
                let Some(head) = decode_head(&raw) else {
                    dead.push(id);
                    continue;
                };
                if head.owner != Some(owner.as_str().as_bytes()) || head.expires_at < cutoff {
                    dead.push(id);
                    continue;
                }
                // A rotated id is not a session (its entry stays while it lives).
                if head.expires_at <= now || head.moved_to.is_some() {
                    continue;
                }
                let data = if with_data {
                    match serde_json::from_slice(&raw[head.data_at..]) {
                        Ok(data) => Some(data),
                        // Listed as undecodable (see the contract).
                        Err(err) => {
                            sessions.push(OwnedSession::undecodable(
                                id.clone(),
                                head.expires_at,
                                head.version,
                                Error::decode(id, err),
                            ));
                            continue;
                        }
                    }
                } else {
                    None
                };
                sessions.push(OwnedSession::new(
                    id.clone(),
                    head.expires_at,
                    head.version,
                    data,
                ));
            }
            // One server: those entries go, each re-checked atomically by the script (a
            // write may have given the id back to this owner since the read).
            if single && !dead.is_empty() {
                let mut invocation = self.reclaim.key(&owner_key);
                for id in &dead {
                    invocation.key(self.key_for(id));
                }
                invocation.arg(cutoff).arg(&field);
                for id in &dead {
                    invocation.arg(id.as_str());
                }
                within(
                    self.operation_timeout,
                    OP,
                    None,
                    self.round_trip(
                        &lease.health,
                        OP,
                        None,
                        invocation.invoke_async::<i64>(&mut lease.conn),
                    ),
                )
                .await?;
            }
        }
        Ok(sessions)
    }

    pub(super) async fn destroy_owner_op(
        &self,
        owner: &Owner,
        except: Option<&SessionId>,
    ) -> Result<u64> {
        const OP: &str = "destroy_owner";
        let mut lease = self.conn(OP, None).await?;
        let owner_key = self.owner_key_for(owner);
        let ids = self.candidates(OP, &mut lease, &owner_key).await?;
        let field = owner_field(owner);
        let single = matches!(lease.conn, Conn::Single(_));
        let ids: Vec<&SessionId> = ids.iter().filter(|id| Some(*id) != except).collect();
        let mut destroyed = 0;
        // The rotated ids deleted (each with the id it moved to), followed once every page
        // is done.
        let mut edges: Vec<(SessionId, SessionId)> = Vec::new();
        for page in ids.chunks(OWNER_PAGE) {
            let deletes = page
                .iter()
                .map(|&id| self.destroy_owned_step(&lease, &owner_key, &field, id, except, single));
            for (deleted, &id) in join_all(deletes.collect()).await.into_iter().zip(page) {
                match deleted? {
                    Step::Done(n) => destroyed += n,
                    Step::Moved(target) => edges.push((id.clone(), target)),
                }
            }
        }
        // Each rotated id's session ends where it moved to. Two deleted ids that point at
        // each other are a cluster rotation's old id and pending copy (see
        // [Rotation](super#rotation)), both deleted at once by this call: the session was
        // one of them, ended here, counted once.
        let deleted: HashSet<SessionId> = edges.iter().map(|(from, _)| from.clone()).collect();
        for (from, to) in &edges {
            if Some(to) == except {
                continue;
            }
            if deleted.contains(to) {
                if from < to && edges.iter().any(|(a, b)| a == to && b == from) {
                    destroyed += 1;
                }
                continue;
            }
            destroyed += self
                .follow_owned(&lease, &owner_key, &field, to, except, single, &deleted)
                .await?;
        }
        Ok(destroyed)
    }

    /// Ends the session at `id`, reached from a rotated id this `destroy_owner` deleted, as
    /// [`destroy_owned_step`](Self::destroy_owned_step) does, following a chain of rotated
    /// ids a few hops. A chain back to an id it deleted (a pending copy and its old id,
    /// pointing at each other) counts the session ended there.
    #[allow(clippy::too_many_arguments)]
    async fn follow_owned(
        &self,
        lease: &Lease,
        owner_key: &str,
        field: &[u8],
        id: &SessionId,
        except: Option<&SessionId>,
        single: bool,
        deleted: &HashSet<SessionId>,
    ) -> Result<u64> {
        const HOPS: usize = 8;
        let mut visited = deleted.clone();
        let mut at = id.clone();
        for _ in 0..HOPS {
            match self
                .destroy_owned_step(lease, owner_key, field, &at, except, single)
                .await?
            {
                Step::Done(n) => return Ok(n),
                Step::Moved(target) => {
                    if Some(&target) == except {
                        return Ok(0);
                    }
                    if visited.contains(&target) {
                        return Ok(1);
                    }
                    visited.insert(at);
                    at = target;
                }
            }
        }
        Ok(0)
    }

    /// Deletes `id` if it is still `owner`'s (atomically, [`DESTROY_OWNED_LUA`]; on a single
    /// server its index entry goes in the same script, whatever the key held): `Done(1)` if
    /// it was a live session, `Done(0)` if nothing of the owner's was live there, and, for a
    /// live rotated id of the owner (deleted, not counted), the id it moved to.
    async fn destroy_owned_step(
        &self,
        lease: &Lease,
        owner_key: &str,
        field: &[u8],
        id: &SessionId,
        except: Option<&SessionId>,
        single: bool,
    ) -> Result<Step> {
        const OP: &str = "destroy_owner";
        let mut conn = lease.conn.clone();
        let mut invocation = self.destroy_owned.key(self.key_for(id));
        if single {
            invocation.key(owner_key);
        }
        invocation
            .arg(now_millis())
            .arg(field)
            .arg(id.as_str())
            .arg(except.map_or("", SessionId::as_str));
        let reply: Value = self
            .round_trip(
                &lease.health,
                OP,
                Some(id),
                invocation.invoke_async(&mut conn),
            )
            .await?;
        match reply {
            Value::Int(n) => Ok(Step::Done(u64::from(n == 1))),
            Value::BulkString(moved) => Ok(std::str::from_utf8(&moved)
                .ok()
                .and_then(|target| SessionId::new(target).ok())
                .map_or(Step::Done(0), Step::Moved)),
            _ => Err(Error::backend(
                OP,
                Some(id),
                super::error::FormatError("the destroy_owner script returned an unexpected value"),
            )),
        }
    }
}

/// What `destroy_owner`'s script did with one id.
enum Step {
    /// Deleted a live session (1), or nothing live of the owner's (0).
    Done(u64),
    /// Deleted a live rotated id of the owner, which moved to this id.
    Moved(SessionId),
}
