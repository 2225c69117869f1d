//! The operations on one session: `get`, `set` and `set_if_version`, `touch`, `create` and
//! `destroy`.

use std::time::SystemTime;

use deadpool_redis::redis::{self, Value};

use crate::error::{Error, Result};
use crate::session::{Session, SessionId, fresh_version, now_millis, to_millis};

use super::RedisStore;
use super::codec::{
    HEAD_BYTES, absolute_field, decode_head, decode_stored, encode_value, owner_field_of, payload,
    stored_absolute,
};
use super::connection::{Conn, Lease};
use super::error::{FormatError, redis_error};

impl RedisStore {
    pub(super) async fn run_write(
        &self,
        op: &'static str,
        id: &SessionId,
        session: &Session,
        expected: Option<u64>,
    ) -> Result<u64> {
        crate::session::check_nesting(id, session.data())?;
        let data = serde_json::to_vec(session.data()).map_err(|err| Error::encode(id, err))?;
        let data = payload(session, data);
        let mut lease = self.conn(op, Some(id)).await?;
        let now = now_millis();
        let owned = session.owner().map(|owner| self.owner_key_for(owner));
        let single = matches!(lease.conn, Conn::Single(_));
        let mut invocation = match &owned {
            // One server: the write and the index in one script (see [owners](self#owners)).
            Some(owner_key) if single => {
                let mut invocation = self.write_owned.key(self.key_for(id));
                invocation.key(owner_key);
                invocation
            }
            // A cluster: the index first (another slot), then the write.
            Some(owner_key) => {
                if session.capped_expiry_millis() > now {
                    self.raise_index(&mut lease, op, id, owner_key, session.expires_at_millis())
                        .await?;
                }
                self.write.key(self.key_for(id))
            }
            None => self.write.key(self.key_for(id)),
        };
        invocation
            .arg(now)
            .arg(if expected.is_some() { "cas" } else { "set" })
            .arg(expected.unwrap_or(0))
            .arg(session.expires_at_millis())
            .arg(data)
            .arg(fresh_version())
            .arg(self.unindex_len(&lease.conn))
            .arg(stored_absolute(session).map_or_else(String::new, |at| at.to_string()));
        if owned.is_some() && single {
            invocation
                .arg(id.as_str())
                .arg(now.saturating_sub(self.index_grace()))
                .arg(self.index_grace());
        }
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
            -3 => Err(Error::rotated(id)),
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

    pub(super) async fn get_op(&self, id: &SessionId) -> Result<Option<Session>> {
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
        let (session, moved_to) = decode_stored(id, &raw)?;
        if session.is_expired_at(now_millis()) {
            return Ok(None);
        }
        // A rotated id in its grace: its own session, only while the one it moved to is
        // live and not rotated again (a second read, only for a rotated id).
        if let Some(target) = moved_to {
            let reply = self
                .exchange(
                    &lease.health,
                    "get",
                    Some(id),
                    redis::cmd("GETRANGE")
                        .arg(self.key_for(&target))
                        .arg(0)
                        .arg(HEAD_BYTES - 1)
                        .query_async::<Option<Vec<u8>>>(&mut lease.conn),
                )
                .await?;
            let resolves = match reply {
                // Live and not rotated; or, on a cluster, the pending copy of this very
                // rotation, not yet confirmed (moved back to this id: see
                // [Rotation](super#rotation)).
                Ok(Some(head)) => decode_head(&head).is_some_and(|head| {
                    head.expires_at > now_millis()
                        && head
                            .moved_to
                            .is_none_or(|back| back == id.as_str().as_bytes())
                }),
                Ok(None) => false,
                Err(err) if err.code() == Some("WRONGTYPE") => false,
                Err(err) => return Err(redis_error("get", Some(id), err)),
            };
            if !resolves {
                return Ok(None);
            }
        }
        Ok(Some(session))
    }

    pub(super) async fn touch_op(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        let mut lease = self.conn("touch", Some(id)).await?;
        let expires_at = to_millis(expires_at);
        let mut invocation = self.touch.key(self.key_for(id));
        let grace = self.index_grace();
        let now = now_millis();
        invocation
            .arg(now)
            .arg(expires_at)
            .arg(self.unindex_len(&lease.conn))
            .arg(now.saturating_sub(grace))
            .arg(grace);
        let result: Value = self
            .round_trip(
                &lease.health,
                "touch",
                Some(id),
                invocation.invoke_async(&mut lease.conn),
            )
            .await?;
        match result {
            Value::Int(-2) => Err(Error::decode(
                id,
                FormatError("the stored value is not a session written by this store"),
            )),
            Value::Int(n) => Ok(n == 1),
            // An owned session moved later in a cluster: its index entry follows, in its own
            // slot (on a single server the script raised it; see [owners](self#owners)).
            Value::Array(reply) => match reply.as_slice() {
                [
                    Value::Int(1),
                    Value::BulkString(owner),
                    Value::BulkString(stored),
                ] => {
                    let owner_key = self.owner_key_of(owner);
                    // The expiry the script stored (capped by the absolute expiry).
                    let stored = super::codec::parse_digits(stored)
                        .and_then(|at| i64::try_from(at).ok())
                        .unwrap_or(expires_at);
                    self.raise_index(&mut lease, "touch", id, &owner_key, stored)
                        .await?;
                    Ok(true)
                }
                _ => Err(Error::backend(
                    "touch",
                    Some(id),
                    FormatError("the touch script returned an unexpected value"),
                )),
            },
            _ => Err(Error::backend(
                "touch",
                Some(id),
                FormatError("the touch script returned an unexpected value"),
            )),
        }
    }

    pub(super) async fn create_op(&self, id: &SessionId, session: &Session) -> Result<bool> {
        crate::session::check_nesting(id, session.data())?;
        let data = serde_json::to_vec(session.data()).map_err(|err| Error::encode(id, err))?;
        // A new incarnation: its own absolute expiry, which caps its expiry.
        let absolute = stored_absolute(session);
        let expires_at = match absolute {
            Some(at) => session.expires_at_millis().min(at),
            None => session.expires_at_millis(),
        };
        let mut fields = absolute_field(absolute);
        fields.extend_from_slice(&payload(session, data));
        let value = encode_value(fresh_version(), expires_at, &fields);
        let key = self.key_for(id);
        let mut lease = self.conn("create", Some(id)).await?;
        if let Some(owner) = session.owner() {
            let owner_key = self.owner_key_for(owner);
            if matches!(lease.conn, Conn::Single(_)) {
                // One server: the create and the index in one script (see [owners](self#owners)).
                let grace = self.index_grace();
                let now = now_millis();
                let mut invocation = self.create_owned.key(key);
                invocation
                    .key(owner_key)
                    .arg(now)
                    .arg(expires_at)
                    .arg(value)
                    .arg(id.as_str())
                    .arg(now.saturating_sub(grace))
                    .arg(grace);
                let created: i64 = self
                    .round_trip(
                        &lease.health,
                        "create",
                        Some(id),
                        invocation.invoke_async(&mut lease.conn),
                    )
                    .await?;
                return Ok(created == 1);
            }
            // A cluster: the index first (another slot), then the create.
            if expires_at > now_millis() {
                self.raise_index(&mut lease, "create", id, &owner_key, expires_at)
                    .await?;
            }
        }
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

    pub(super) async fn destroy_op(&self, op: &'static str, id: &SessionId) -> Result<()> {
        let mut lease = self.conn(op, Some(id)).await?;
        let Some(value) = self.delete_key(&mut lease, op, id).await? else {
            return Ok(());
        };
        // A rotated id in its grace: the session it moved to ends too.
        if let Some(head) = decode_head(&value)
            && head.expires_at > now_millis()
            && let Some(target) = head.moved_to
            && let Some(target) = std::str::from_utf8(target)
                .ok()
                .and_then(|target| SessionId::new(target).ok())
        {
            self.delete_key(&mut lease, op, &target).await?;
        }
        Ok(())
    }

    /// Deletes the key of `id` and returns the value it held (`None` if none, or a key of
    /// another type, deleted all the same).
    async fn delete_key(
        &self,
        lease: &mut Lease,
        op: &'static str,
        id: &SessionId,
    ) -> Result<Option<Vec<u8>>> {
        // The key goes and its value comes back, in one plain command (`GETDEL`: on a single
        // server a third of the server time of a script doing the same, and at 16 tasks a
        // quarter less wall time than a `MULTI` of `GETRANGE` and `UNLINK`, whose replies
        // cost the client more to read; see [owners](self#owners)).
        let key = self.key_for(id);
        let reply = self
            .exchange(
                &lease.health,
                op,
                Some(id),
                redis::cmd("GETDEL")
                    .arg(&key)
                    .query_async::<Value>(&mut lease.conn),
            )
            .await?;
        let value = match reply {
            Ok(Value::BulkString(value)) => value,
            Ok(_) => return Ok(None),
            // A key of another type under the prefix: not a session, deleted all the
            // same, as `UNLINK` would.
            Err(err) if err.code() == Some("WRONGTYPE") => {
                self.round_trip(
                    &lease.health,
                    op,
                    Some(id),
                    redis::cmd("UNLINK")
                        .arg(&key)
                        .query_async::<()>(&mut lease.conn),
                )
                .await?;
                return Ok(None);
            }
            Err(err) => return Err(redis_error(op, Some(id), err)),
        };
        // One server: the session named an owner, so its entry in that owner's index goes
        // too, unless the id holds a live session of that owner again (written meanwhile).
        // Best effort: the session is gone whatever happens here, and an entry left behind
        // is one a listing skips and reclaims, as in a cluster (where the index is left).
        if matches!(lease.conn, Conn::Single(_))
            && let Some(owner) = decode_head(&value).and_then(|head| head.owner)
        {
            let mut invocation = self.reclaim.key(self.owner_key_of(owner));
            invocation
                .key(&key)
                .arg(now_millis().saturating_sub(self.index_grace()))
                .arg(owner_field_of(owner))
                .arg(id.as_str());
            let _ = self
                .round_trip(
                    &lease.health,
                    op,
                    Some(id),
                    invocation.invoke_async::<i64>(&mut lease.conn),
                )
                .await;
        }
        Ok(Some(value))
    }
}
