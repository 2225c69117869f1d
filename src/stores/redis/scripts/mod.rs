//! The Lua scripts of the store, each piece a `.lua` file of this folder, and the scripts
//! Redis runs, composed of them.
//!
//! Redis caches a script by the SHA1 of its text, so the composed texts are kept byte for
//! byte: most pieces start with a newline (`concat!("\n", ..)`), as they did when they were
//! string literals here, and the `tests` module checks the SHA1 of every composed script.

use deadpool_redis::redis::Script;

#[cfg(doc)]
use super::RedisStore;
#[cfg(doc)]
use super::codec::owner_field;

/// The value head's parser, as a Lua function for every script that reads a head:
/// `parse_head(s)` returns the version and expiry (as digit strings), the absolute expiry
/// (digits, or `false`), the id a rotated id moved to (or `false`) and where the owner field
/// (or the data) starts (1-based), or `nil` for a head this store cannot read. It reads the
/// head as [`decode_head`](super::codec::decode_head) does (a test holds them to each
/// other); `s` is a value's first [`HEAD_BYTES`](super::codec::HEAD_BYTES) bytes or more.
pub(super) const HEAD_FN: &str = concat!("\n", include_str!("head_fn.lua"));

/// `set` and `set_if_version`. KEYS[1] = key; ARGV: now_ms, mode (`set` | `cas`), expected
/// version, expires_at_ms, data JSON (behind the owner field, if any), a fresh version, the
/// key prefix's length in bytes on a single server (0 in cluster mode), and the written
/// absolute expiry (empty for none). Over a live session the earlier of the stored and the
/// written absolute expiry is kept; the expiry stored is capped by it. A live rotated id
/// refuses the write: -3. On a single server, a write that changes or
/// removes the owner named by the stored value (or deletes the session) also removes the
/// session from that old owner's index, in this same script ([`OWNER_FN`]'s `unindex`); in
/// cluster mode the old index lies in another slot and is left alone. Returns the new
/// version, 0 when the write deleted the session (past expiry), -1 on a version conflict,
/// -2 when the stored value is unreadable (only in `cas` mode; `set` replaces it, at the
/// fresh version). The new version is the live one + 1, or the fresh one where no session is
/// live (or the live one is [`MAX_VERSION`](crate::MAX_VERSION), written into the script).
/// Every check comes before the writes, so the script never writes and then fails.
pub(super) const WRITE_LUA: &str = concat!("\n", include_str!("write.lua"));

/// `touch`. The new expiry is capped by the absolute expiry; a rotated id is not touched
/// (0). KEYS[1] = key; ARGV: now_ms, new expires_at_ms, the key prefix's length on a
/// single server (0 in cluster mode: see [`WRITE_LUA`]; a touch to a past time deletes the
/// session and, on a single server, its owner's index entry), then the index's cutoff and
/// grace (see [`INDEX_FN`]). Returns 1 if a live session existed (and was moved, or deleted
/// for a past expiry), 0 if none, -2 if unreadable. When it moves the expiry of an owned
/// session later, a single server raises the session's score in the owner's index in this
/// same script (the index key computed from the prefix, as `unindex` does); in cluster
/// mode, where that key lies in another slot, it returns `{1, owner, expiry stored}`
/// instead, so that the
/// store raises the score in a second round trip (see [owners](super#owners)). The check
/// for an owner is one byte of the head already read, so touching a session without an
/// owner costs what it did.
pub(super) const TOUCH_LUA: &str = concat!("\n", include_str!("touch.lua"));

/// `create` when `SET NX` found the key (or the expiry is past). KEYS[1] = key; ARGV: now_ms,
/// expires_at_ms, the whole value. Returns 1 if created (or, for a past expiry, if there was
/// no live session), 0 if a live or unreadable value is in the way.
pub(super) const CREATE_LUA: &str = concat!("\n", include_str!("create.lua"));

/// Lua functions for the scripts that read a value's owner and keep the owner indexes exact
/// on a single server (see [owners](super#owners)):
/// - `owner_at(head, at)`: the owner named by the owner field `~<length>:<owner>` starting
///   at byte `at` (1-based) of `head` (a value's first bytes, or a write's payload), or
///   `nil` when there is no such field.
/// - `unindex(key, plen, owner)`: removes the session at `key` from `owner`'s index, whose
///   key is computed here from the key prefix (`key`'s first `plen` bytes) and the owner's
///   hex, as [`RedisStore::owner_key_for`] does. Such a key is not in the script's `KEYS`,
///   which a single server allows and a cluster does not (the index lies in another slot):
///   with `plen` 0 (cluster mode) or no owner it does nothing.
pub(super) const OWNER_FN: &str = concat!("\n", include_str!("owner_fn.lua"));

/// `sessions_of`'s reclaim of dead entries, on a single server. KEYS[1] = the owner's index
/// key, KEYS[2..] = session keys; ARGV: cutoff (now minus the grace), the owner's field
/// (see [`owner_field`]), then the id of each session key in order. Removes from the index
/// each id whose key does not hold a session of this owner expiring at or after the
/// cutoff (absent, another type, unreadable, another owner or none, long expired), each
/// checked in this same atomic script, so a live session of this owner keeps its entry.
/// Returns how many entries it removed.
pub(super) const RECLAIM_LUA: &str = concat!("\n", include_str!("reclaim.lua"));

/// The owner index's upkeep, as a Lua function for the scripts below: `index(key, id,
/// score, cutoff, grace)` raises (or adds) `id` in the sorted set `key` to `score` (the
/// session's expiry; `ZADD GT`, so a score only ever grows), removes the entries whose
/// score is below `cutoff` (now minus the grace: provably dead), and sets the key's own
/// expiry to its largest score plus the grace, so an abandoned index vanishes by itself
/// (without `PEXPIREAT .. GT`, which needs Redis 7: the largest score is read instead). An
/// expiry too far away for a Redis expire time (a session that never expires) leaves the
/// key without one.
pub(super) const INDEX_FN: &str = concat!("\n", include_str!("index_fn.lua"));

/// The owner index's upkeep on its own (cluster mode, and `touch`). KEYS[1] = the owner's
/// index key; ARGV: id, score, cutoff, grace. See [`INDEX_FN`].
pub(super) const INDEX_CALL: &str = include_str!("index_call.lua");

/// `set` and `set_if_version` of an owned session on a single server: [`WRITE_LUA`] and, when
/// it stored the session, the index upkeep, in one atomic script. KEYS[1] = key, KEYS[2] =
/// the owner's index key; ARGV: those of [`WRITE_LUA`] (8), then id, cutoff, grace.
pub(super) const WRITE_OWNED_CALL: &str = concat!("\n", include_str!("write_owned_call.lua"));

/// `create` of an owned session on a single server: [`CREATE_LUA`] and, when it stored a live
/// session, the index upkeep, in one atomic script. KEYS[1] = key, KEYS[2] = the owner's
/// index key; ARGV: those of [`CREATE_LUA`], then id, cutoff, grace.
pub(super) const CREATE_OWNED_CALL: &str = concat!("\n", include_str!("create_owned_call.lua"));

/// `destroy_owner`'s delete. KEYS[1] = key, and on a single server KEYS[2] = the owner's
/// index key; ARGV: now_ms, the owner's field in the value (`~<length>:<owner>`, see
/// [`owner_field`]), the id, and the id kept (`except`, or empty). A live rotated id of the
/// owner is deleted too (unless it moved to the id kept, which keeps it), not counted: the
/// script returns the id it moved to instead, for the store to end that session too. Deletes the session if its stored owner is that one (live or
/// already expired by this clock: an application server whose clock runs behind may still
/// see it live) and returns 1 if it was live; otherwise (absent, another type, unreadable,
/// another owner or none) returns 0 and leaves the key alone. On a single server it also
/// removes the id from the index in the same atomic script: after it, the key holds no
/// session of this owner, so the entry is dead. In cluster mode (no KEYS[2]) the index is
/// left as it is.
pub(super) const DESTROY_OWNED_LUA: &str = concat!("\n", include_str!("destroy_owned.lua"));

/// `rotate` on a single server, one atomic script over both keys. KEYS[1] = old key,
/// KEYS[2] = new key; ARGV: now_ms, the end of the grace (now + grace), a fresh version, the
/// key prefix's length, the new id, the index's cutoff and grace. Returns the new version
/// (moved), 0 (old holds no live session, or is a rotated id), -1 (new is taken: a live
/// session, a rotated id in its grace, an unreadable value or a key of another type), -2
/// (old's value is unreadable).
pub(super) const ROTATE_LUA: &str = concat!("\n", include_str!("rotate.lua"));

/// Cluster `rotate`, step 1, on the new key: stores the copy (ARGV[2]: a pending copy, in
/// the form of a rotated id moved to the old id) with the claim's short expiry (ARGV[3]) if
/// the key holds nothing live (ARGV[1] = now_ms). Returns 1 if it
/// stored it, 0 if the id is taken. See [rotation in a cluster](super#rotation).
pub(super) const ROTATE_CLAIM_LUA: &str = concat!("\n", include_str!("rotate_claim.lua"));

/// Cluster `rotate`, step 2, on the old key: turns it into a rotated id (moved to ARGV[4],
/// until ARGV[3] at the latest) only if its head is still ARGV[2], the head read (same
/// version, expiry, absolute expiry and owner) and it is live (ARGV[1] = now_ms). Returns 1
/// if it did, 0 if old changed.
pub(super) const ROTATE_MARK_LUA: &str = concat!("\n", include_str!("rotate_mark.lua"));

/// Cluster `rotate`, confirming: turns the claimed copy under the new key (if its value
/// still starts with the claimed head, ARGV[1]) into the session: the head ARGV[2] instead,
/// expiring at ARGV[3]. Returns 1 if it did, 0 if the copy is gone (ended meanwhile).
pub(super) const ROTATE_CONFIRM_LUA: &str = include_str!("rotate_confirm.lua");

/// Cluster `rotate`, undoing step 1 when step 2 failed: deletes the new key only if its
/// value still starts with the claimed head (ARGV[1]). Returns 1 if it deleted it.
pub(super) const ROTATE_RELEASE_LUA: &str = include_str!("rotate_release.lua");

/// `script` (a whole script, ending in `return`s) as a Lua function `name`, to be called by
/// a script composed around it.
pub(super) fn as_function(name: &str, script: &str) -> String {
    format!("local function {name}()\n{script}\nend\n")
}

/// `set` and `set_if_version` ([`WRITE_LUA`], with [`OWNER_FN`]).
pub(super) fn write() -> Script {
    Script::new(&format!("{HEAD_FN}{OWNER_FN}{WRITE_LUA}"))
}

/// `touch` ([`TOUCH_LUA`], with [`OWNER_FN`] and [`INDEX_FN`]).
pub(super) fn touch() -> Script {
    Script::new(&format!("{HEAD_FN}{OWNER_FN}{INDEX_FN}{TOUCH_LUA}"))
}

/// `create` when `SET NX` found the key ([`CREATE_LUA`]).
pub(super) fn create() -> Script {
    Script::new(&format!("{HEAD_FN}{CREATE_LUA}"))
}

/// The owner index's upkeep on its own ([`INDEX_CALL`], with [`INDEX_FN`]).
pub(super) fn index() -> Script {
    Script::new(&format!("{INDEX_FN}{INDEX_CALL}"))
}

/// An owned write on a single server ([`WRITE_OWNED_CALL`], around [`WRITE_LUA`]).
pub(super) fn write_owned() -> Script {
    Script::new(&format!(
        "{HEAD_FN}{OWNER_FN}{INDEX_FN}{}{WRITE_OWNED_CALL}",
        as_function("write", WRITE_LUA)
    ))
}

/// An owned `create` on a single server ([`CREATE_OWNED_CALL`], around [`CREATE_LUA`]).
pub(super) fn create_owned() -> Script {
    Script::new(&format!(
        "{HEAD_FN}{INDEX_FN}{}{CREATE_OWNED_CALL}",
        as_function("create", CREATE_LUA)
    ))
}

/// `destroy_owner`'s delete ([`DESTROY_OWNED_LUA`]).
pub(super) fn destroy_owned() -> Script {
    Script::new(&format!("{HEAD_FN}{DESTROY_OWNED_LUA}"))
}

/// `sessions_of`'s reclaim of dead entries on a single server ([`RECLAIM_LUA`]).
pub(super) fn reclaim() -> Script {
    Script::new(&format!("{HEAD_FN}{RECLAIM_LUA}"))
}

/// `rotate` on a single server ([`ROTATE_LUA`]).
pub(super) fn rotate() -> Script {
    Script::new(&format!("{HEAD_FN}{OWNER_FN}{INDEX_FN}{ROTATE_LUA}"))
}

/// Cluster `rotate`'s claim of the new key ([`ROTATE_CLAIM_LUA`]).
pub(super) fn rotate_claim() -> Script {
    Script::new(&format!("{HEAD_FN}{ROTATE_CLAIM_LUA}"))
}

/// Cluster `rotate`'s mark of the old key ([`ROTATE_MARK_LUA`]).
pub(super) fn rotate_mark() -> Script {
    Script::new(&format!("{HEAD_FN}{ROTATE_MARK_LUA}"))
}

/// Cluster `rotate`'s confirmation of the new key ([`ROTATE_CONFIRM_LUA`]).
pub(super) fn rotate_confirm() -> Script {
    Script::new(ROTATE_CONFIRM_LUA)
}

/// Cluster `rotate`'s release of the new key ([`ROTATE_RELEASE_LUA`]).
pub(super) fn rotate_release() -> Script {
    Script::new(ROTATE_RELEASE_LUA)
}
