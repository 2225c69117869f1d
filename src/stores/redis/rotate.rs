//! `rotate`: one atomic script over both keys on a single server, a claim, mark and confirm
//! protocol on a cluster (see [Rotation](super#rotation)).

use std::time::Duration;

use deadpool_redis::redis;

use crate::error::{Error, Result};
use crate::session::{SessionId, fresh_version, next_version, now_millis};
use crate::store::Rotation;

use super::RedisStore;
use super::codec::{absolute_field, decode_head};
use super::connection::{Conn, Lease};
use super::error::{FormatError, redis_error};

/// How many times a cluster `rotate` starts over when the old id changed between its read
/// and its mark (a write, a `touch` or another `rotate` through it landed in between).
const ROTATE_ATTEMPTS: usize = 4;

/// How long past the operation timeout the copy a cluster `rotate` claims under the new id
/// lives before the rotation is confirmed (its expiry then moves to the session's own): an
/// application that dies between the steps leaves a copy no one holds the id of for at most
/// this long. Room for the clocks of the application and Redis to differ.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn unreadable(id: &SessionId) -> Error {
    Error::decode(
        id,
        FormatError("the stored value is not a session written by this store"),
    )
}

impl RedisStore {
    pub(super) async fn rotate_op(
        &self,
        old: &SessionId,
        new: &SessionId,
        grace: Duration,
    ) -> Result<Rotation> {
        const OP: &str = "rotate";
        if old == new {
            return Ok(Rotation::Taken);
        }
        let grace = millis(grace);
        let mut lease = self.conn(OP, Some(old)).await?;
        if !matches!(lease.conn, Conn::Single(_)) {
            return self.rotate_cluster(&mut lease, old, new, grace).await;
        }
        // One server: both keys (and the owner's index) in one atomic script.
        let now = now_millis();
        let index_grace = self.index_grace();
        let mut invocation = self.rotate.key(self.key_for(old));
        invocation
            .key(self.key_for(new))
            .arg(now)
            .arg(now.saturating_add(grace))
            .arg(fresh_version())
            .arg(self.prefix.len())
            .arg(new.as_str())
            .arg(now.saturating_sub(index_grace))
            .arg(index_grace);
        let reply: i64 = self
            .round_trip(
                &lease.health,
                OP,
                Some(old),
                invocation.invoke_async(&mut lease.conn),
            )
            .await?;
        match reply {
            0 => Ok(Rotation::Absent),
            -1 => Ok(Rotation::Taken),
            -2 => Err(unreadable(old)),
            version => u64::try_from(version)
                .map(|version| Rotation::Moved { version })
                .map_err(|_| {
                    Error::backend(
                        OP,
                        Some(old),
                        FormatError("the rotate script returned an unexpected value"),
                    )
                }),
        }
    }

    /// The cluster protocol (the two keys lie in different hash slots, which no script
    /// spans): read old; raise the new id in the owner's index; claim new with a pending
    /// copy (a rotated id moved back to old) that lives only for the claim's window, if new
    /// holds nothing live; mark old rotated if it still holds what was read (else release
    /// the claim and start over); then confirm new as the session, with its own expiry.
    /// See [Rotation](super#rotation).
    async fn rotate_cluster(
        &self,
        lease: &mut Lease,
        old: &SessionId,
        new: &SessionId,
        grace: i64,
    ) -> Result<Rotation> {
        const OP: &str = "rotate";
        let old_key = self.key_for(old);
        let new_key = self.key_for(new);
        for _ in 0..ROTATE_ATTEMPTS {
            let reply = self
                .exchange(
                    &lease.health,
                    OP,
                    Some(old),
                    redis::cmd("GET")
                        .arg(&old_key)
                        .query_async::<Option<Vec<u8>>>(&mut lease.conn),
                )
                .await?;
            let raw = match reply {
                Ok(Some(raw)) => raw,
                // Nothing, or a key of another type (as on a single server): no session.
                Ok(None) => return Ok(Rotation::Absent),
                Err(err) if err.code() == Some("WRONGTYPE") => return Ok(Rotation::Absent),
                Err(err) => return Err(redis_error(OP, Some(old), err)),
            };
            let Some(head) = decode_head(&raw) else {
                return Err(unreadable(old));
            };
            let now = now_millis();
            if head.expires_at <= now || head.moved_to.is_some() {
                return Ok(Rotation::Absent);
            }
            let version = next_version(head.version);
            let expires_at = head.expires_at;
            let claim_until = expires_at.min(
                now.saturating_add(millis(self.operation_timeout))
                    .saturating_add(millis(CLAIM_MARGIN)),
            );
            // The copy is claimed pending: in the form of a rotated id moved back to old (not a
            // session: not counted, listed or written through), until it is confirmed.
            let mut claimed = format!("{version}:{claim_until}:").into_bytes();
            claimed.extend_from_slice(&absolute_field(head.absolute));
            let mut confirmed = format!("{version}:{expires_at}:").into_bytes();
            confirmed.extend_from_slice(&absolute_field(head.absolute));
            claimed
                .extend_from_slice(format!(">{}:{}", old.as_str().len(), old.as_str()).as_bytes());
            let mut value = claimed.clone();
            value.extend_from_slice(&raw[head.owner_at..]);
            // The index first (another slot), as an owned write does: a `destroy_owner`
            // that read the index before this misses new, but then finds old, live or
            // rotated, and ends the session wherever it is.
            if let Some(owner) = head.owner {
                let owner_key = self.owner_key_of(owner);
                self.raise_index(lease, OP, new, &owner_key, expires_at)
                    .await?;
            }
            let mut claim = self.rotate_claim.key(&new_key);
            claim.arg(now).arg(&value).arg(claim_until);
            let claimed_new: i64 = self
                .round_trip(
                    &lease.health,
                    OP,
                    Some(new),
                    claim.invoke_async(&mut lease.conn),
                )
                .await?;
            if claimed_new != 1 {
                return Ok(Rotation::Taken);
            }
            let now = now_millis();
            let mut mark = self.rotate_mark.key(&old_key);
            mark.arg(now)
                .arg(&raw[..head.data_at])
                .arg(now.saturating_add(grace))
                .arg(new.as_str());
            let marked: i64 = self
                .round_trip(
                    &lease.health,
                    OP,
                    Some(old),
                    mark.invoke_async(&mut lease.conn),
                )
                .await?;
            if marked == 1 {
                // Confirmed: new becomes the session, as long-lived as it was. (If new is gone
                // already, ended through old, there is nothing to confirm.)
                let mut confirm = self.rotate_confirm.key(&new_key);
                confirm.arg(&claimed).arg(&confirmed).arg(expires_at);
                self.round_trip(
                    &lease.health,
                    OP,
                    Some(new),
                    confirm.invoke_async::<i64>(&mut lease.conn),
                )
                .await?;
                return Ok(Rotation::Moved { version });
            }
            // Old changed since it was read: the claim goes, and the rotation starts over.
            let mut release = self.rotate_release.key(&new_key);
            release.arg(&claimed);
            self.round_trip(
                &lease.health,
                OP,
                Some(new),
                release.invoke_async::<i64>(&mut lease.conn),
            )
            .await?;
        }
        Err(Error::backend(
            OP,
            Some(old),
            FormatError("the session kept changing while it was being rotated"),
        ))
    }
}
