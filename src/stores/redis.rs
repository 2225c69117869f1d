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
//! | [`tls_root_certificate_pem`](RedisStoreBuilder::tls_root_certificate_pem) (`redis-tls`) | the public (webpki) roots | CA certificates to trust instead, for `rediss://` (see [TLS](#tls)) |
//! | [`tls_client_certificate_pem`](RedisStoreBuilder::tls_client_certificate_pem) (`redis-tls`) | none | a client certificate and key, for `tls-auth-clients yes` |
//!
//! Every operation (`ping` too) ends within the operation timeout, with
//! [`crate::deadline::within`]: past it, it fails with a transient [`Error::Timeout`], and a
//! write it had already sent may still happen (see [`crate::deadline`]). Inside it, every
//! round trip is also bounded by the store itself (response timeout), and taking a connection
//! from the pool by the pool wait timeout plus the connect timeout, so a dead, stopped or
//! hung server never hangs a request, whatever pool you hand in. `len` and `clear` are single
//! operations too, of one round trip per 1,000 keys or so: on stores of millions of sessions,
//! raise the operation timeout. In cluster mode the connect and response timeouts of
//! redis-rs's cluster client keep their defaults (deadpool-redis does not expose them; except
//! with [TLS certificates](RedisStoreBuilder::tls_root_certificate_pem), where the store uses
//! the cluster client directly and sets them); the store's own bounds still apply.
//!
//! # TLS
//!
//! With the `redis-tls` feature, `rediss://host:port` (`rediss+cluster://` for a cluster in
//! [`connect`](crate::connect())) connects over TLS (rustls with the ring provider, TLS 1.2
//! and 1.3; no OpenSSL). The server's certificate must chain to a trusted CA and name the
//! URL's host (a DNS name or an IP address in its subject alternative names). Trusted by
//! default: the public roots of the Mozilla CA store (the `webpki-roots` crate, built in, so
//! the same everywhere, including in containers without a CA bundle; the operating system's
//! store is not read). For a private CA, hand its PEM to
//! [`tls_root_certificate_pem`](RedisStoreBuilder::tls_root_certificate_pem) (or put
//! `tls_ca_file=/path/ca.pem` in a [`connect`](crate::connect()) URL): then that CA is
//! trusted instead of the public roots. A server that wants client certificates gets one
//! from [`tls_client_certificate_pem`](RedisStoreBuilder::tls_client_certificate_pem)
//! (`tls_cert_file=` and `tls_key_file=`).
//!
//! - Without the feature, a `rediss://` URL is an [`Error::Config`] naming it.
//! - A refused handshake (an untrusted or misnamed server certificate, a client certificate
//!   the server refuses or wants) is an [`Error::Backend`], not transient, at the first
//!   operation (or [`connect`](RedisStoreBuilder::connect)'s `PING`), at once: its source
//!   says what rustls refused (`invalid peer certificate: UnknownIssuer`) and what to
//!   configure.
//! - redis-rs' `#insecure` URL fragment (no certificate check) is not available.
//! - redis-rs builds its TLS configuration on rustls' process-wide default crypto provider.
//!   If the process has none when a store with a `rediss://` URL is built, the store
//!   installs rustls' ring provider as the default; an application that wants another
//!   installs its own first (`CryptoProvider::install_default`).
//!
//! # Key layout and value format
//!
//! The session `id` lives at the key `{prefix}{id}`, a Redis string:
//!
//! ```text
//! session:Zx81-aB9_q...   →   "<version>:<expires_at_ms>:<data as JSON>"
//!                             e.g. 3:1767225600000:{"user_id":42}
//!                         or  "<version>:<expires_at_ms>:~<owner length>:<owner><data as JSON>"
//!                             e.g. 3:1767225600000:~7:user:42{"user_id":42}
//! session:owner:{757365723a3432}   →   a sorted set: the index of the owner `user:42`
//! ```
//!
//! `version` is a decimal of at most 15 digits, `expires_at_ms` the absolute expiry in
//! milliseconds since the Unix epoch (decimal), then the session's [`Owner`] if it has one
//! (`~`, its length in bytes, `:`, the owner as it is), and the rest the session's data as a
//! JSON object. The owner field is new: a value without it is exactly what the store wrote
//! before owners existed and reads back as a session without an owner (data always starts
//! with `{`, never `~`), and a session without an owner is still written byte for byte the
//! same. The head `<version>:<expires_at_ms>:` the scripts read is unchanged, so they work
//! on both shapes. (An older build of this crate reads an owned value as unreadable: upgrade
//! every process before sessions get owners.) The owner indexes are described under
//! [Owners](#owners). The key carries the same expiry as a Redis expiry (`PXAT`), so Redis deletes the
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
//! The store's owner indexes are the keys `<prefix>owner:{<lowercase hex>}`: never a session
//! key of this store or of another one (an id contains no `:`, `{` or `}`), never counted by
//! `len`, removed by `clear`.
//!
//! # How each operation works
//!
//! In cluster mode each operation on a session without an owner touches exactly one key, so
//! every operation works unchanged on a Redis Cluster, whatever slot the key hashes to; what
//! owners add (and, on a single server, the owner index entry that a write, `touch` or
//! `destroy` removes from the old owner's index) is under [Owners](#owners). Read-modify-write operations are Lua scripts
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
//! - `destroy`: `UNLINK`; on a single server, inside a tiny script that first reads the
//!   value's head and, only if it names an owner, removes the session from that owner's
//!   index ([Owners](#owners)): still one round trip, about 3 µs of server time against
//!   0.6 µs for the bare `UNLINK`.
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
//! - `sessions_of` and `destroy_owner`: see [Owners](#owners).
//! - `scan`: see [Scans](#scans).
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
//! # Owners
//!
//! A session's [`Owner`] is stored in its value (see [the format](#key-layout-and-value-format)),
//! and each owner has an index: the sorted set at `<prefix>owner:{<hex of the owner>}`
//! ([`RedisStore::owner_key_for`]), of member = session id and score = the largest expiry
//! ever written for that id with that owner (`ZADD GT`). The braces are a cluster hash tag,
//! so an owner's index is one key in one slot, whatever the owner's bytes (hex keeps `{`,
//! `}` and any byte out of the key's structure).
//!
//! **On a single server the index is exact**: it holds the owner's live sessions and, at
//! most, entries of sessions that expired by themselves (until their score plus the grace,
//! or the next listing). Every change that can make an entry stale removes it in the same
//! atomic script as the change itself, and every removal happens in a script that proves,
//! atomically, that the key no longer holds a live session of that owner, so a live owned
//! session never loses its entry:
//! - An owned write (`set`, `create`, `set_if_version`) adds or raises its entry in the
//!   write's script (`ZADD GT`, score = the session's expiry), and only when it wrote.
//! - A write that changes or removes the owner of the stored session (a write with another
//!   owner, without one, or to a past expiry, which deletes it) removes the session from
//!   the old owner's index in the write's script. The old owner comes from the value being
//!   overwritten, and its index key is computed in Lua from the prefix and the owner's hex:
//!   a key not declared in `KEYS`, which a single server allows and a cluster does not.
//! - `destroy` of an owned session, and a `touch` to a past time (which deletes it), remove
//!   its entry in their script the same way. `destroy` of a session without an owner reads
//!   its head and nothing else.
//! - `destroy_owner` deletes each session and removes its entry in one script that declares
//!   both keys (the session key and the owner's index key); a candidate whose key is absent,
//!   of another type, unreadable or another owner's (or no one's) is not deleted, but its
//!   entry goes in that same script.
//! - `sessions_of` sends the entries whose session it found dead (absent, unreadable,
//!   another owner's, or expired more than the grace ago) to one more script per page, only
//!   when there are any, which checks each key again and removes the entries still dead
//!   (a write may have given the id back to the owner since the read).
//! - `touch` keeps the owner; when it moves an owned session's expiry later, its script
//!   raises the entry's score to the new expiry in the same round trip (`ZADD GT`). A
//!   touch to an earlier time changes nothing in the index.
//! - Entries of sessions that Redis expired are removed by score: those whose score (the
//!   latest expiry any write gave the session) is more than the grace ([`INDEX_GRACE`],
//!   60 s, plus the operation timeout) in the past go in every owned write of that owner,
//!   and in `sessions_of` and `destroy_owner` (in the round trip of their first page). The
//!   grace covers an operation in flight (a `touch` between its script and its index
//!   update) and clock skew between application servers: an entry of a session that is
//!   still in Redis but expired by the clock of the server listing, by less than the grace,
//!   is kept, since a server whose clock runs behind may still see it live. The index key's
//!   own Redis expiry is its largest score plus the grace, so the index of an owner who is
//!   gone vanishes by itself; an index whose last entry goes is deleted by Redis.
//!
//! So an owner's index holds about as many entries as the owner has live sessions, however
//! often the owner logs in and out: `destroy_owner` of N sessions reads N entries, not every
//! entry written within the session lifetime.
//!
//! **In cluster mode the index is a superset.** A session's key and its owner's index are in
//! different slots, and no script may touch two slots, so no script can both prove that a
//! session is gone and remove its entry, and a removal that is not atomic with that proof
//! is unsafe: between a check that finds the session absent (or another owner's) and the
//! removal, a write of the same id for this owner may run its index update and its write,
//! and the removal would then drop the entry of a live session, which `destroy_owner`
//! would miss. So in a cluster the index is allowed to hold more than the owner's live
//! sessions, never fewer:
//! - An owned write raises the session's entry *before* the session is written (the index
//!   script, then the write, one more round trip). So a `destroy_owner` running at the same
//!   time either finds the entry, or the session's write comes after it has read the index,
//!   and then a later `sessions_of` lists it: it is never lost.
//! - `touch` that moves an owned session's expiry later raises the entry *after* it moved
//!   the expiry: its script returns the owner, and the store raises the entry's score in
//!   one more round trip, only then (`ZADD GT`, which re-adds the entry if the session was
//!   destroyed in between: a stale entry, like the others here). Until that round trip the
//!   entry holds the old, earlier score, which is still at most the grace in the past for
//!   as long as the operation runs, so no removal by score can take it.
//! - Entries are removed only by score (above), never because their session is absent or
//!   belongs to someone else at one instant. `destroy`, a write without an owner or with
//!   another owner, and `destroy_owner` leave the entry, which stays until its score plus
//!   the grace has passed.
//!
//! **What a stale entry costs** (in a cluster): one key read in each `sessions_of` (or one
//! script call in each `destroy_owner`) of that owner, until it ages out; nothing for any
//! other operation. An owner who logs out of sessions that had a 30-day expiry keeps up to
//! 30 days of such entries. `destroy_owner` still tries every entry, so it destroys every
//! live session of the owner that it must, whatever the stale entries.
//!
//! - `sessions_of(owner, with_data)`: the candidates are read with `ZSCAN` (pages of 500;
//!   an id returned twice is read once), then each candidate's value is read (`GETRANGE` of
//!   its head without the data, `GET` with it), 500 at a time: on a single server in one
//!   pipeline (one round trip), on a cluster concurrently, which the multiplexed connection
//!   pipelines, each to its key's node. Only those that
//!   are live by the application's clock and whose stored owner is `owner` are listed; a
//!   value this store cannot read names no owner and is not listed.
//! - `destroy_owner(owner, except)`: the same candidates, but `except`, each deleted by a
//!   script that deletes the key only if its stored owner is `owner`, atomically (a session
//!   re-owned or re-created meanwhile is left alone), 500 at a time, concurrently; on a
//!   single server the same script removes the entry. A session of the owner that is still
//!   in Redis but expired by this server's clock is deleted too (a server whose clock runs
//!   behind may still see it live), but not counted: it returns how many live sessions the
//!   scripts deleted.
//!
//! `destroy_owner` is a single operation under the operation timeout; `sessions_of` is
//! bounded by it step by step (taking the connection, reading the index, then each page of
//! 500 reads and its reclaim), so that a long listing on a loaded machine is not cut short
//! as a whole. Both take about 1 + n / 500 round trips
//! for n entries (the index's, stale ones included; on a single server `sessions_of` adds
//! one per page that met dead entries): thousands of sessions per owner take a handful of
//! round trips. Writes and `touch` of sessions without an owner, over a value without an
//! owner, cost what they did before owners existed (one byte more of the scripts' work, and
//! one small argument, the prefix's length); `destroy` stays one round trip (see
//! [How each operation works](#how-each-operation-works)).
//!
//! # Scans
//!
//! [`scan`](SessionStore::scan) pages through the store's sessions, each as `get` returns it
//! (the values of a page are read in one pipeline on a single server, concurrently on a
//! cluster, and decoded as `get` decodes them: an expired session is skipped, a key of
//! another type or a value this store cannot read is an [`Error::Decode`] naming the
//! session, as from `get`, and the scan goes no further until that key is fixed or
//! removed). Owner index keys and keys that are not this store's are skipped. A `limit` of
//! 0 counts as 1, one above 10,000 as 10,000. Each page is one operation under the
//! operation timeout; a page stops gathering keys after a quarter of it and may then be
//! short, or empty, with `next` still `Some`. A cursor of the other mode, or any other
//! text, is an [`Error::Config`].
//!
//! - **Cluster**: the cursor is `redis1:c:<hash slot>:<last id>`. A page walks the slots in
//!   order from the cursor's: `CLUSTER COUNTKEYSINSLOT` of 1,024 slots at once (each routed
//!   to its slot's primary; the multiplexed connection pipelines them per node), then
//!   `CLUSTER GETKEYSINSLOT` of the non-empty ones, 16 at once, keeps this store's ids,
//!   sorts them and goes on after the cursor's id. **Every session live for the whole scan
//!   is returned exactly once**, whatever is written or destroyed meanwhile, and across
//!   pages whatever slots moved between nodes: the position is a slot, not a node. What is
//!   not covered: a slot *in the middle of* a migration (its keys split between two nodes,
//!   `MIGRATING`/`IMPORTING`) while the page reads it, and a page that reads a slot from a
//!   node redis-rs still believes owns it after it moved (until redis-rs refreshes its slot
//!   map, which a redirected command triggers): such a slot's keys may be missed. Memory:
//!   the page, plus the key names of the slots being read (about 60 keys per slot for a
//!   million sessions spread over the slots; with a hash-tagged prefix, such as
//!   `{sessions}:`, every session is in one slot and a page holds the names of all of them).
//!   A full pass over an empty store costs 16 rounds of 1,024 small commands.
//! - **Single server**: the cursor is `redis1:s:<SCAN cursor>:<ids>`. A page runs `SCAN
//!   <cursor> MATCH <escaped prefix>* COUNT n` (n follows the page's room, at least 10,
//!   growing fourfold after a call that found none of this store's keys, at most 1,000)
//!   until it is full. A `SCAN` call cannot be resumed halfway, so the ids one call found
//!   beyond the page's room travel in the cursor (usually none or a few; at most about one
//!   call's worth) and open the next page. `SCAN` returns every key present for the whole
//!   pass at least once, and a key twice only when Redis *shrinks* the database's hash
//!   table during the pass (after most keys of the database were deleted): the cursor then
//!   falls back to the start of a bucket of the smaller table, and the keys of that bucket
//!   already returned come again (about one key per such shrink, a key returned last). So
//!   **every session live for the whole scan is returned at least once, and exactly once
//!   unless the database's table shrinks during the scan**; a repeat within one page is
//!   dropped. The store keeps no state and the cursor no set of returned ids, so a repeat
//!   across pages in that edge is not caught. Memory: the page and the ids carried over.
//!
//! A cursor is text ([`ScanCursor::as_str`]): saved, it resumes the scan on any store of
//! the same mode and key prefix, on the same Redis.
//!
//! # Failures and recovery
//!
//! Connection errors (refused, reset, closed), `LOADING`, `TRYAGAIN`, `CLUSTERDOWN`,
//! `MASTERDOWN` and `READONLY` are reported as [`Error::Unavailable`], timeouts as
//! [`Error::Timeout`]: both are [transient](Error::is_transient). A refused TLS handshake is
//! an [`Error::Backend`] (see [TLS](#tls)). When Redis restarts, the
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
//! - Owners: if the index update of an owned `touch` fails after its script moved the
//!   expiry (the server went away between the two), `touch` returns the error, and the
//!   session's entry keeps the old expiry as its score: after that expiry plus the grace, the
//!   session, if still live and neither written nor touched again, is no longer listed or
//!   destroyed by owner. Writes do not have this window (the index comes first, or in the
//!   same script).
//! - Owners: the exact index on a single server needs every process writing to it to be a
//!   build that keeps it: an older build leaves stale entries behind (harmless: they are
//!   reclaimed by the next listing or `destroy_owner`), and never drops a live one.

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
use crate::session::{Owner, Session, SessionId, fresh_version, now_millis, to_millis};
use crate::store::{Capabilities, OwnedSession, ScanCursor, ScanPage, SessionStore};

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

/// How many index entries one `ZSCAN` asks for, and how many sessions `sessions_of` and
/// `destroy_owner` read or delete at once (concurrently, on the multiplexed connection).
const OWNER_PAGE: usize = 500;

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
/// version, expires_at_ms, data JSON, a fresh version, and the key prefix's length in bytes
/// on a single server (0 in cluster mode). On a single server, a write that changes or
/// removes the owner named by the stored value (or deletes the session) also removes the
/// session from that old owner's index, in this same script ([`OWNER_FN`]'s `unindex`); in
/// cluster mode the old index lies in another slot and is left alone. Returns the new
/// version, 0 when the write deleted the session (past expiry), -1 on a version conflict,
/// -2 when the stored value is unreadable (only in `cas` mode; `set` replaces it, at the
/// fresh version). The new version is the live one + 1, or the fresh one where no session is
/// live (or the live one is [`MAX_VERSION`](crate::MAX_VERSION), written into the script).
/// Every check comes before the writes, so the script never writes and then fails.
const WRITE_LUA: &str = r#"
local key = KEYS[1]
local now = tonumber(ARGV[1])
local cas = ARGV[2] == 'cas'
local live = '0'
-- Where the stored value's owner field starts, if it names an owner.
local tilde = false
local kind = redis.call('TYPE', key)['ok']
if kind == 'string' then
  -- Only the head is needed: a version of at most 15 digits and an expiry.
  local cur = redis.call('GETRANGE', key, 0, 63)
  local v, e = string.match(cur, '^(%d+):(%d+):')
  if v and #v > 15 then v = nil end
  if v then
    if tonumber(e) > now then live = v end
    if string.byte(cur, #v + #e + 3) == 126 then tilde = #v + #e + 3 end
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
-- The stored value names an owner and this write changes or removes it, or deletes the
-- session: that owner's index loses the entry (single server only).
if tilde and tonumber(ARGV[7]) > 0 then
  local old = owner_at(redis.call('GETRANGE', key, 0, 255), tilde)
  if old and (tonumber(ARGV[4]) <= now or old ~= owner_at(ARGV[5], 1)) then
    unindex(key, tonumber(ARGV[7]), old)
  end
end
if tonumber(ARGV[4]) <= now then
  redis.call('DEL', key)
  return 0
end
-- The head, then the payload appended: no Lua string of the whole value is ever made
-- (concatenating one costs a copy that grows with the payload; APPEND keeps the expiry).
redis.call('SET', key, string.format('%d', nextv) .. ':' .. ARGV[4] .. ':', 'PXAT', ARGV[4])
redis.call('APPEND', key, ARGV[5])
return nextv
"#;

/// `touch`. KEYS[1] = key; ARGV: now_ms, new expires_at_ms, the key prefix's length on a
/// single server (0 in cluster mode: see [`WRITE_LUA`]; a touch to a past time deletes the
/// session and, on a single server, its owner's index entry), then the index's cutoff and
/// grace (see [`INDEX_FN`]). Returns 1 if a live session existed (and was moved, or deleted
/// for a past expiry), 0 if none, -2 if unreadable. When it moves the expiry of an owned
/// session later, a single server raises the session's score in the owner's index in this
/// same script (the index key computed from the prefix, as `unindex` does); in cluster
/// mode, where that key lies in another slot, it returns `{1, owner}` instead, so that the
/// store raises the score in a second round trip (see [owners](self#owners)). The check
/// for an owner is one byte of the head already read, so touching a session without an
/// owner costs what it did.
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
local at = #v + #e + 3
local tilde = string.sub(head, at, at) == '~'
if tonumber(ARGV[2]) <= now then
  if tilde and tonumber(ARGV[3]) > 0 then
    unindex(key, tonumber(ARGV[3]), owner_at(redis.call('GETRANGE', key, 0, 255), at))
  end
  redis.call('DEL', key)
  return 1
end
local owner = false
if tilde and tonumber(ARGV[2]) > tonumber(e) then
  owner = owner_at(redis.call('GETRANGE', key, 0, 255), at) or false
end
if #ARGV[2] == #e then
  -- Same width (the usual case): overwrite the expiry in place, without moving the data.
  redis.call('SETRANGE', key, #v + 1, ARGV[2])
  redis.call('PEXPIREAT', key, ARGV[2])
else
  local cur = redis.call('GET', key)
  redis.call('SET', key, v .. ':' .. ARGV[2] .. ':' .. string.sub(cur, #v + #e + 3), 'PXAT', ARGV[2])
end
if owner then
  local plen = tonumber(ARGV[3])
  if plen < 1 then return {1, owner} end
  -- One server: the index entry follows in this same script.
  index(index_key(key, plen, owner), string.sub(key, plen + 1), ARGV[2], ARGV[4], ARGV[5])
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

/// Lua functions for the scripts that read a value's owner and keep the owner indexes exact
/// on a single server (see [owners](self#owners)):
/// - `owner_at(head, at)`: the owner named by the owner field `~<length>:<owner>` starting
///   at byte `at` (1-based) of `head` (a value's first bytes, or a write's payload), or
///   `nil` when there is no such field.
/// - `unindex(key, plen, owner)`: removes the session at `key` from `owner`'s index, whose
///   key is computed here from the key prefix (`key`'s first `plen` bytes) and the owner's
///   hex, as [`RedisStore::owner_key_for`] does. Such a key is not in the script's `KEYS`,
///   which a single server allows and a cluster does not (the index lies in another slot):
///   with `plen` 0 (cluster mode) or no owner it does nothing.
const OWNER_FN: &str = r#"
local function owner_at(head, at)
  local n = string.match(head, '^~(%d+):', at)
  if not n then return nil end
  local len = tonumber(n)
  local owner = string.sub(head, at + #n + 2, at + #n + 1 + len)
  if len < 1 or #owner ~= len then return nil end
  return owner
end
local function index_key(key, plen, owner)
  local hexed = string.gsub(owner, '.', function(c) return string.format('%02x', string.byte(c)) end)
  return string.sub(key, 1, plen) .. 'owner:{' .. hexed .. '}'
end
local function unindex(key, plen, owner)
  if plen < 1 or not owner then return end
  redis.call('ZREM', index_key(key, plen, owner), string.sub(key, plen + 1))
end
"#;

/// `destroy` on a single server. KEYS[1] = key; ARGV: the key prefix's length. Deletes the
/// key (`UNLINK`) and, if its value names an owner, the session's entry in that owner's
/// index, atomically. A session without an owner costs one `GETRANGE` of its head more
/// than a bare `UNLINK`, in the same round trip (`pcall`: a key of another type is deleted
/// as `UNLINK` would).
const DESTROY_LUA: &str = r#"
local key = KEYS[1]
local head = redis.pcall('GETRANGE', key, 0, 255)
if type(head) == 'string' then
  local v, e = string.match(head, '^(%d+):(%d+):~')
  if v then unindex(key, tonumber(ARGV[1]), owner_at(head, #v + #e + 3)) end
end
return redis.call('UNLINK', key)
"#;

/// `sessions_of`'s reclaim of dead entries, on a single server. KEYS[1] = the owner's index
/// key, KEYS[2..] = session keys; ARGV: cutoff (now minus the grace), the owner's field
/// (see [`owner_field`]), then the id of each session key in order. Removes from the index
/// each id whose key does not hold a session of this owner expiring at or after the
/// cutoff (absent, another type, unreadable, another owner or none, long expired), each
/// checked in this same atomic script, so a live session of this owner keeps its entry.
/// Returns how many entries it removed.
const RECLAIM_LUA: &str = r#"
local removed = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local dead = true
  if redis.call('TYPE', key)['ok'] == 'string' then
    local head = redis.call('GETRANGE', key, 0, 255)
    local v, e = string.match(head, '^(%d+):(%d+):')
    if v and #v <= 15 and tonumber(e) >= tonumber(ARGV[1]) then
      local at = #v + #e + 3
      dead = string.sub(head, at, at + #ARGV[2] - 1) ~= ARGV[2]
    end
  end
  if dead then removed = removed + redis.call('ZREM', KEYS[1], ARGV[i + 1]) end
end
return removed
"#;

/// The owner index's upkeep, as a Lua function for the scripts below: `index(key, id,
/// score, cutoff, grace)` raises (or adds) `id` in the sorted set `key` to `score` (the
/// session's expiry; `ZADD GT`, so a score only ever grows), removes the entries whose
/// score is below `cutoff` (now minus the grace: provably dead), and sets the key's own
/// expiry to its largest score plus the grace, so an abandoned index vanishes by itself
/// (without `PEXPIREAT .. GT`, which needs Redis 7: the largest score is read instead). An
/// expiry too far away for a Redis expire time (a session that never expires) leaves the
/// key without one.
const INDEX_FN: &str = r#"
local function index(key, id, score, cutoff, grace)
  redis.call('ZADD', key, 'GT', score, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cutoff)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then
    local at = tonumber(top[2]) + tonumber(grace)
    if at < 1e15 then
      redis.call('PEXPIREAT', key, string.format('%d', at))
    else
      redis.call('PERSIST', key)
    end
  end
  return 1
end
"#;

/// The owner index's upkeep on its own (cluster mode, and `touch`). KEYS[1] = the owner's
/// index key; ARGV: id, score, cutoff, grace. See [`INDEX_FN`].
const INDEX_CALL: &str = "return index(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])\n";

/// `set` and `set_if_version` of an owned session on a single server: [`WRITE_LUA`] and, when
/// it stored the session, the index upkeep, in one atomic script. KEYS[1] = key, KEYS[2] =
/// the owner's index key; ARGV: those of [`WRITE_LUA`], then id, cutoff, grace.
const WRITE_OWNED_CALL: &str = r#"
local r = write()
if r > 0 then index(KEYS[2], ARGV[8], ARGV[4], ARGV[9], ARGV[10]) end
return r
"#;

/// `create` of an owned session on a single server: [`CREATE_LUA`] and, when it stored a live
/// session, the index upkeep, in one atomic script. KEYS[1] = key, KEYS[2] = the owner's
/// index key; ARGV: those of [`CREATE_LUA`], then id, cutoff, grace.
const CREATE_OWNED_CALL: &str = r#"
local r = create()
if r == 1 and tonumber(ARGV[2]) > tonumber(ARGV[1]) then
  index(KEYS[2], ARGV[4], ARGV[2], ARGV[5], ARGV[6])
end
return r
"#;

/// `destroy_owner`'s delete. KEYS[1] = key, and on a single server KEYS[2] = the owner's
/// index key; ARGV: now_ms, the owner's field in the value (`~<length>:<owner>`, see
/// [`owner_field`]), the id. Deletes the session if its stored owner is that one (live or
/// already expired by this clock: an application server whose clock runs behind may still
/// see it live) and returns 1 if it was live; otherwise (absent, another type, unreadable,
/// another owner or none) returns 0 and leaves the key alone. On a single server it also
/// removes the id from the index in the same atomic script: after it, the key holds no
/// session of this owner, so the entry is dead. In cluster mode (no KEYS[2]) the index is
/// left as it is.
const DESTROY_OWNED_LUA: &str = r#"
local key = KEYS[1]
local function unlisted()
  if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[3]) end
  return 0
end
if redis.call('TYPE', key)['ok'] ~= 'string' then return unlisted() end
local head = redis.call('GETRANGE', key, 0, 255)
local v, e = string.match(head, '^(%d+):(%d+):')
if not v or #v > 15 then return unlisted() end
local at = #v + #e + 3
if string.sub(head, at, at + #ARGV[2] - 1) ~= ARGV[2] then return unlisted() end
redis.call('DEL', key)
unlisted()
if tonumber(e) <= tonumber(ARGV[1]) then return 0 end
return 1
"#;

/// `script` (a whole script, ending in `return`s) as a Lua function `name`, to be called by
/// a script composed around it.
fn as_function(name: &str, script: &str) -> String {
    format!("local function {name}()\n{script}\nend\n")
}

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
    /// `destroy` on a single server ([`DESTROY_LUA`]).
    destroy: Script,
    /// `sessions_of`'s reclaim of dead entries on a single server ([`RECLAIM_LUA`]).
    reclaim: Script,
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
    /// A Redis Cluster over TLS with certificates of the application's own
    /// ([`RedisStoreBuilder::tls_root_certificate_pem`]): deadpool-redis' cluster manager
    /// cannot pass them on, so the store connects through redis-rs' cluster client itself.
    /// The store holds one multiplexed cluster connection at a time anyway; a replacement
    /// is a new connection from the client.
    #[cfg(feature = "redis-tls")]
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
    #[cfg(feature = "redis-tls")]
    ClusterClient(redis::cluster_async::ClusterConnection),
}

impl Pooled {
    fn handle(&self) -> Conn {
        match self {
            Pooled::Single(conn) => Conn::Single((**conn).clone()),
            Pooled::Cluster(conn) => Conn::Cluster((**conn).clone()),
            #[cfg(feature = "redis-tls")]
            Pooled::ClusterClient(conn) => Conn::Cluster(conn.clone()),
        }
    }

    /// Drops the connection without returning it to the pool.
    fn discard(self) {
        match self {
            Pooled::Single(conn) => drop(deadpool_redis::Connection::take(conn)),
            Pooled::Cluster(conn) => drop(deadpool_redis::cluster::Connection::take(conn)),
            #[cfg(feature = "redis-tls")]
            Pooled::ClusterClient(conn) => drop(conn),
        }
    }
}

#[derive(Clone)]
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
    #[cfg(feature = "redis-tls")]
    tls: TlsPem,
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
            #[cfg(feature = "redis-tls")]
            tls: TlsPem::default(),
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

    /// Trusts the CA certificate(s) in `pem` (one or more PEM `CERTIFICATE` blocks) for the
    /// server's TLS certificate, **instead of** the public (webpki) roots: for a Redis whose
    /// certificate a private CA signed. Needs a `rediss://` URL (`rediss+cluster://` nodes
    /// for a cluster). The server's certificate must still name the host of the URL (a DNS
    /// name or an IP address in its subject alternative names).
    ///
    /// [`build`](Self::build) fails with [`Error::Config`] if `pem` holds no certificate or
    /// one that does not parse, or if the URL is not a TLS one. `connect(url)` sets this from
    /// the URL option `tls_ca_file=/path/ca.pem`.
    ///
    /// Without this, the server's certificate must chain to one of the public roots of the
    /// Mozilla CA store that the crate carries (the `webpki-roots` crate), not the
    /// operating system's.
    ///
    /// In cluster mode, a store with TLS certificates connects through redis-rs' cluster
    /// client directly rather than through deadpool-redis (which cannot pass them on):
    /// [`max_connections`](Self::max_connections) and
    /// [`pool_wait_timeout`](Self::pool_wait_timeout) do not apply, and the connect and
    /// response timeouts apply to the cluster client too.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root = Some(pem.into());
        self
    }

    /// Presents a client certificate (mutual TLS, Redis' `tls-auth-clients yes`):
    /// `certificate_chain` holds the client's certificate (then any intermediates) as PEM
    /// `CERTIFICATE` blocks, `private_key` its key as one PEM block (PKCS#8, PKCS#1 or SEC1).
    /// Needs a `rediss://` URL. [`build`](Self::build) fails with [`Error::Config`] if either
    /// does not parse. The key is never printed (`Debug` hides it). `connect(url)` sets this
    /// from the URL options `tls_cert_file=` and `tls_key_file=`.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_client_certificate_pem(
        mut self,
        certificate_chain: impl Into<Vec<u8>>,
        private_key: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client = Some((certificate_chain.into(), private_key.into()));
        self
    }

    /// The store, without any I/O: connections are opened on first use. Fails with
    /// [`Error::Config`] on an unusable URL, an empty key prefix, a `rediss://` URL when the
    /// `redis-tls` feature is off (the message names the feature), and TLS certificates that
    /// do not parse or come with a URL that is not a TLS one.
    pub fn build(self) -> Result<RedisStore> {
        check_prefix(&self.prefix)?;
        let urls: Vec<&str> = match &*self.target.0 {
            Target::Url(url) => vec![url.as_str()],
            Target::Cluster(urls) => urls.iter().map(String::as_str).collect(),
        };
        if urls.is_empty() {
            return Err(Error::config("a Redis Cluster needs at least one URL"));
        }
        #[cfg(feature = "redis-tls")]
        let certificates = self.tls.certificates(&urls)?;
        #[cfg(not(feature = "redis-tls"))]
        let certificates: Option<()> = None;
        let mut pool_config = PoolConfig::default();
        if let Some(max) = self.max_connections {
            pool_config.max_size = max;
        }
        pool_config.timeouts = Timeouts {
            wait: Some(self.pool_wait_timeout),
            create: Some(self.connect_timeout),
            recycle: Some(self.response_timeout),
        };
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let pool = match (&*self.target.0, certificates) {
            #[cfg(feature = "redis-tls")]
            (Target::Url(url), Some(certificates)) => {
                // The certificates travel inside the connection info.
                let client = redis::Client::build_with_tls(url.as_str(), certificates)
                    .map_err(|err| url_error(&urls, "the Redis URL is not usable", err))?;
                Pool::Single(single_pool(
                    client.get_connection_info().clone(),
                    connection_config,
                    pool_config,
                    &urls,
                )?)
            }
            #[cfg(feature = "redis-tls")]
            (Target::Cluster(_), Some(certificates)) => {
                let client = redis::cluster::ClusterClientBuilder::new(urls.iter().copied())
                    .certs(certificates)
                    .connection_timeout(self.connect_timeout)
                    .response_timeout(self.response_timeout)
                    .build()
                    .map_err(|err| {
                        url_error(&urls, "the Redis Cluster URLs are not usable", err)
                    })?;
                Pool::ClusterClient(Arc::new(client))
            }
            (Target::Url(url), _) => Pool::Single(single_pool(
                url.as_str(),
                connection_config,
                pool_config,
                &urls,
            )?),
            (Target::Cluster(_), _) => {
                let manager =
                    deadpool_redis::cluster::Manager::new(urls.clone(), false).map_err(|err| {
                        url_error(&urls, "the Redis Cluster URLs are not usable", err)
                    })?;
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

/// The TLS certificates given to a [`RedisStoreBuilder`], as PEM.
#[cfg(feature = "redis-tls")]
#[derive(Clone, Default)]
struct TlsPem {
    /// The CA certificates to trust instead of the public roots.
    root: Option<Vec<u8>>,
    /// The client's certificate chain and private key.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

#[cfg(feature = "redis-tls")]
impl fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Certificates are public, but the key is not: print neither, only what is set.
        f.debug_struct("TlsPem")
            .field("root_certificate", &self.root.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

#[cfg(feature = "redis-tls")]
impl TlsPem {
    /// The certificates for redis-rs (`None` when none were given), after checking that they
    /// parse and that every URL is a TLS one. When any URL is a TLS one, also makes sure
    /// rustls has a crypto provider (redis-rs needs a process default).
    fn certificates(&self, urls: &[&str]) -> Result<Option<redis::TlsCertificates>> {
        use crate::stores::shared::tls;
        if urls.iter().any(|url| is_tls_url(url)) {
            tls::ensure_crypto_provider();
        }
        if self.root.is_none() && self.client.is_none() {
            return Ok(None);
        }
        if urls.iter().any(|url| !is_tls_url(url)) {
            return Err(Error::config(
                "TLS certificates were given for a Redis URL that is not a TLS one: use \
                 rediss:// (rediss+cluster:// for a cluster)",
            ));
        }
        if let Some(root) = &self.root {
            tls::certificates("the Redis TLS root certificate", root)?;
        }
        if let Some((chain, key)) = &self.client {
            tls::certificates("the Redis TLS client certificate", chain)?;
            tls::check_private_key("the Redis TLS client key", key)?;
        }
        Ok(Some(redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(chain, key)| redis::ClientTlsConfig {
                    client_cert: chain.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.root.clone(),
        }))
    }
}

/// A pool of connections to one server.
fn single_pool(
    info: impl redis::IntoConnectionInfo,
    connection_config: AsyncConnectionConfig,
    pool_config: PoolConfig,
    urls: &[&str],
) -> Result<deadpool_redis::Pool> {
    let manager = deadpool_redis::Manager::new_with_config(info, connection_config)
        .map_err(|err| url_error(urls, "the Redis URL is not usable", err))?;
    deadpool_redis::Pool::builder(manager)
        .config(pool_config)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|err| config_error("could not build the connection pool", err))
}

/// Whether `url` asks for TLS: `rediss://` (or `valkeys://`).
fn is_tls_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
    })
}

/// redis-rs refused `urls`. When they ask for TLS and this build has no TLS (so that is why),
/// the message names the feature to enable instead of redis-rs' "the feature is not
/// enabled", which would name none of ours.
fn url_error(urls: &[&str], message: &str, err: RedisError) -> Error {
    let tls_missing = !cfg!(feature = "redis-tls")
        && urls.iter().any(|url| is_tls_url(url))
        && err.to_string().contains("TLS");
    if tls_missing {
        return config_error(
            "a rediss:// (TLS) Redis URL needs the `redis-tls` feature of session-stores: add \
             features = [\"redis-tls\"] to its line in Cargo.toml (or pass --features redis-tls \
             to cargo)",
            err,
        );
    }
    config_error(message, err)
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
            write: Script::new(&format!("{OWNER_FN}{WRITE_LUA}")),
            touch: Script::new(&format!("{OWNER_FN}{INDEX_FN}{TOUCH_LUA}")),
            create: Script::new(CREATE_LUA),
            index: Script::new(&format!("{INDEX_FN}{INDEX_CALL}")),
            write_owned: Script::new(&format!(
                "{OWNER_FN}{INDEX_FN}{}{WRITE_OWNED_CALL}",
                as_function("write", WRITE_LUA)
            )),
            create_owned: Script::new(&format!(
                "{INDEX_FN}{}{CREATE_OWNED_CALL}",
                as_function("create", CREATE_LUA)
            )),
            destroy_owned: Script::new(DESTROY_OWNED_LUA),
            destroy: Script::new(&format!("{OWNER_FN}{DESTROY_LUA}")),
            reclaim: Script::new(RECLAIM_LUA),
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

    fn owner_key_of(&self, owner: &[u8]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 8 + 2 * owner.len());
        key.push_str(&self.prefix);
        key.push_str(OWNER_KEY_INFIX);
        key.push_str(&hex(owner));
        key.push('}');
        key
    }

    /// What the scripts get as the key prefix's length, to remove entries from an owner index
    /// the script computes the key of ([`OWNER_FN`]): the length on a single server, 0 in
    /// cluster mode, where that index lies in another slot and is left alone.
    fn unindex_len(&self, conn: &Conn) -> usize {
        match conn {
            Conn::Single(_) => self.prefix.len(),
            Conn::Cluster(_) => 0,
        }
    }

    /// How long past its score (the largest expiry written for the session) an index entry
    /// is kept, in milliseconds: [`INDEX_GRACE`] plus the operation timeout, so that an
    /// operation still running (a `touch` between its script and its index update) or an
    /// application clock somewhat behind never sees a live session's entry removed.
    fn index_grace(&self) -> i64 {
        let grace = INDEX_GRACE.saturating_add(self.operation_timeout);
        i64::try_from(grace.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// Raises (or adds) `id` in the index at `owner_key` to `expires_at`, removing the
    /// provably dead entries ([`INDEX_FN`]).
    async fn raise_index(
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
                #[cfg(feature = "redis-tls")]
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
                if session.expires_at_millis() > now {
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
            .arg(self.unindex_len(&lease.conn));
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

    /// Calls `each` with every page of this store's session keys (and its owner index keys
    /// too, `with_index`), on every node (one `SCAN` pass per node). Only the page at hand
    /// is held.
    async fn scan_keys<F: AsyncBatch>(
        &self,
        op: &'static str,
        each: &mut F,
        with_index: bool,
    ) -> Result<()> {
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
                keys.retain(|key| {
                    is_own_key(&self.prefix, key) || (with_index && is_index_key(&self.prefix, key))
                });
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

/// The most sessions one `scan` page returns: a larger limit counts as this.
const MAX_SCAN_LIMIT: usize = 10_000;

/// The start of a scan cursor on a single server: `redis1:s:<SCAN cursor | end>:<ids>`.
const SCAN_TAG_SINGLE: &str = "redis1:s:";

/// The start of a scan cursor on a cluster: `redis1:c:<slot>:<last id | nothing>`.
const SCAN_TAG_CLUSTER: &str = "redis1:c:";

/// The number of hash slots of a Redis Cluster.
const HASH_SLOTS: u16 = 16384;

/// How many slots a cluster scan counts the keys of at once (concurrently, each routed to
/// its slot's primary).
const SLOT_BATCH: u16 = 1024;

/// How many non-empty slots a cluster scan reads the keys of at once.
const SLOT_READS: usize = 16;

/// The smallest `COUNT` a single-server scan asks `SCAN` for.
const SCAN_MIN_COUNT: usize = 10;

/// Where a scan goes on.
#[derive(Debug, PartialEq)]
enum ScanAt {
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
    fn parse(cursor: &ScanCursor, cluster: bool) -> Result<ScanAt> {
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
    /// One page of a scan (see [Scans](self#scans)).
    async fn scan_op(&self, at: Option<ScanAt>, limit: usize) -> Result<ScanPage> {
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
        for (id, value) in ids.into_iter().zip(values) {
            let raw = match value {
                Ok(Some(raw)) => raw,
                // Gone since the keys were listed: not live for the whole scan.
                Ok(None) => continue,
                // A key of another type under this store's prefix, as `get` reports it.
                Err(err) if err.code() == Some("WRONGTYPE") => {
                    return Err(Error::decode(&id, err));
                }
                Err(err) => return Err(redis_error(OP, Some(&id), err)),
            };
            let session = decode_value(&id, &raw)?;
            if !session.is_expired_at(now) {
                sessions.push((id, session));
            }
        }
        Ok(ScanPage::new(sessions, next.map(|at| at.cursor())))
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
    /// counting [`SLOT_BATCH`] slots' keys at once and reading the keys of the non-empty
    /// ones, [`SLOT_READS`] at once, each routed to its slot's primary; a slot's ids in
    /// order, so that a page can end in the middle of a slot.
    async fn scan_cluster(
        &self,
        lease: &mut Lease,
        mut slot: u16,
        mut after: Option<SessionId>,
        limit: usize,
        started: Instant,
    ) -> Result<(Vec<SessionId>, Option<ScanAt>)> {
        let mut ids = Vec::new();
        while slot < HASH_SLOTS && ids.len() < limit {
            let end = slot.saturating_add(SLOT_BATCH).min(HASH_SLOTS);
            let counts = self.slot_commands(lease, slot..end, |slot| {
                let mut cmd = redis::cmd("CLUSTER");
                cmd.arg("COUNTKEYSINSLOT").arg(slot);
                cmd
            });
            let counts = counts.await?;
            let mut busy: Vec<(u16, usize)> = Vec::new();
            for (s, reply) in (slot..end).zip(counts) {
                let count: usize = redis::from_redis_value(reply)
                    .map_err(|err| redis_error("scan", None, err.into()))?;
                if count > 0 {
                    busy.push((s, count));
                }
            }
            let mut full = false;
            'slots: for group in busy.chunks(SLOT_READS) {
                let keys = join_all(
                    group
                        .iter()
                        .map(|&(s, count)| self.slot_keys(lease, s, count))
                        .collect(),
                )
                .await;
                for (&(s, _), keys) in group.iter().zip(keys) {
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
                        break 'slots;
                    }
                    ids.extend_from_slice(rest);
                }
            }
            if full {
                break;
            }
            slot = end;
            after = None;
            if self.scan_budget_spent(started) {
                break;
            }
        }
        let next = (slot < HASH_SLOTS).then_some(ScanAt::Cluster { slot, after });
        Ok((ids, next))
    }

    /// Runs `command(slot)` for every slot of `slots`, concurrently, each routed to the
    /// slot's primary (the multiplexed cluster connection pipelines those to one node).
    async fn slot_commands(
        &self,
        lease: &Lease,
        slots: std::ops::Range<u16>,
        command: impl Fn(u16) -> Cmd,
    ) -> Result<Vec<Value>> {
        let Conn::Cluster(cluster) = &lease.conn else {
            return Ok(Vec::new());
        };
        let health = &lease.health;
        let sends = slots.map(|slot| {
            let mut cluster = cluster.clone();
            let cmd = command(slot);
            async move {
                self.round_trip(
                    health,
                    "scan",
                    None,
                    cluster.route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                            slot,
                            SlotAddr::Master,
                        ))),
                    ),
                )
                .await
            }
        });
        join_all(sends.collect()).await.into_iter().collect()
    }

    /// Every key in `slot` (`count` of them when counted): `CLUSTER GETKEYSINSLOT`, asked
    /// again for more while it returns as many as it was asked for (keys written since the
    /// count), since it returns them in no particular order.
    async fn slot_keys(&self, lease: &Lease, slot: u16, count: usize) -> Result<Vec<Vec<u8>>> {
        let Conn::Cluster(cluster) = &lease.conn else {
            return Ok(Vec::new());
        };
        let mut ask = count.saturating_add(count / 4).saturating_add(16);
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
    async fn read_values(
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

/// Runs `futures` concurrently and returns their outputs in order. On one multiplexed
/// connection, concurrent requests are pipelined; this is what lets `sessions_of` and
/// `destroy_owner` read a page of sessions in about one round trip, even on a cluster, where
/// a pipeline cannot span slots.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
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

/// The head of a stored value: everything but the data.
struct Head<'a> {
    version: u64,
    expires_at: i64,
    /// The owner's bytes, if the value names one (not yet checked to be an [`Owner`]).
    owner: Option<&'a [u8]>,
    /// Where the data JSON starts.
    data_at: usize,
}

/// How many bytes of a value always hold its whole head: a version of at most 15 digits, an
/// expiry of at most 20 and an owner field of at most `~128:` and 128 bytes, with the
/// separators, are 170 bytes.
const HEAD_BYTES: usize = 256;

/// Parses the head of a stored value, `<version>:<expires_at_ms>:` and the owner field
/// `~<length>:<owner>` if there is one (data JSON always starts with `{`, so a value
/// without the field, as every value before owners, reads as one without an owner). `raw`
/// may be cut anywhere after the head. `None` if it does not have this shape.
fn decode_head(raw: &[u8]) -> Option<Head<'_>> {
    let first = raw.iter().position(|&b| b == b':')?;
    let version = &raw[..first];
    if version.len() > MAX_VERSION_DIGITS {
        return None;
    }
    let version = parse_digits(version)?;
    let rest = &raw[first + 1..];
    let second = rest.iter().position(|&b| b == b':')?;
    let expires_at = i64::try_from(parse_digits(&rest[..second])?).ok()?;
    let mut data_at = first + 1 + second + 1;
    let mut owner = None;
    if raw.get(data_at) == Some(&b'~') {
        let field = &raw[data_at + 1..];
        let colon = field.iter().take(4).position(|&b| b == b':')?;
        let len = usize::try_from(parse_digits(&field[..colon])?).ok()?;
        let start = data_at + 1 + colon + 1;
        owner = Some(raw.get(start..start.checked_add(len)?)?);
        data_at = start + len;
    }
    Some(Head {
        version,
        expires_at,
        owner,
        data_at,
    })
}

/// The owner named by a value's head, checked against [`Owner`]'s rules.
fn decode_owner(id: &SessionId, owner: Option<&[u8]>) -> Result<Option<Owner>> {
    let Some(owner) = owner else {
        return Ok(None);
    };
    let text = std::str::from_utf8(owner).map_err(|err| Error::decode(id, err))?;
    Owner::new(text)
        .map(Some)
        .map_err(|err| Error::decode(id, err))
}

/// Parses a stored value: `<version>:<expires_at_ms>:[~<owner length>:<owner>]<data JSON>`.
fn decode_value(id: &SessionId, raw: &[u8]) -> Result<Session> {
    let Some(head) = decode_head(raw) else {
        return Err(Error::decode(
            id,
            FormatError("the stored value is not `<version>:<expires_at>:[~<n>:<owner>]<json>`"),
        ));
    };
    let data: Map<String, Json> =
        serde_json::from_slice(&raw[head.data_at..]).map_err(|err| Error::decode(id, err))?;
    let owner = decode_owner(id, head.owner)?;
    Ok(Session::from_parts(data, head.expires_at, head.version).with_owner(owner))
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

/// The owner's field in a stored value: `~<length in bytes>:<owner>`, between the expiry and
/// the data. Prefix-free (the length comes first), so a value's field equals this one
/// exactly when its owner does.
fn owner_field(owner: &Owner) -> Vec<u8> {
    let owner = owner.as_str().as_bytes();
    let mut field = format!("~{}:", owner.len()).into_bytes();
    field.extend_from_slice(owner);
    field
}

/// The data as the write scripts store it after the expiry: the data JSON, behind the
/// owner's field when there is an owner. A session without an owner is stored exactly as
/// before owners existed.
fn payload(session: &Session, data: Vec<u8>) -> Vec<u8> {
    match session.owner() {
        None => data,
        Some(owner) => {
            let mut payload = owner_field(owner);
            payload.extend_from_slice(&data);
            payload
        }
    }
}

/// Lowercase hex of `bytes`: an owner in its index key, where any byte (`{`, `}`, `:`) must
/// be safe.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// What comes after the prefix in an owner's index key: `owner:{<hex of the owner>}`.
const OWNER_KEY_INFIX: &str = "owner:{";

/// Whether `key` is an owner index key of the store with this prefix:
/// `<prefix>owner:{<lowercase hex>}`. It is never a session key of any store (an id has no
/// `:`, `{` or `}`).
fn is_index_key(prefix: &str, key: &[u8]) -> bool {
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
    // An untrusted or misnamed certificate, a refused client certificate, no common TLS
    // version: retrying gets the same answer, so this is not transient.
    #[cfg(feature = "redis-tls")]
    let err = match crate::stores::shared::tls::Refused::of(
        err,
        "to trust a private CA: RedisStoreBuilder::tls_root_certificate_pem, or \
         tls_ca_file= in a connect() URL",
        "RedisStoreBuilder::tls_client_certificate_pem, or tls_cert_file= and tls_key_file= \
         in a connect() URL",
    ) {
        Ok(refused) => return Error::backend(op, id, refused),
        Err(err) => err,
    };
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
        let limit = limit.clamp(1, MAX_SCAN_LIMIT);
        within(
            self.operation_timeout,
            "scan",
            None,
            self.scan_op(at, limit),
        )
        .await
    }

    /// Bounded by the operation timeout step by step (taking the connection, reading the
    /// index, each page of [`OWNER_PAGE`] sessions), not as a whole: see [Owners](self#owners).
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

    /// Redis expires keys by itself ([`Capabilities::expires_by_itself`]); sessions have
    /// owners ([`Capabilities::owners`]); scans ([`Capabilities::scan`], see
    /// [Scans](self#scans)).
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_expires_by_itself(true)
            .with_owners(true)
            .with_scan(true)
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
                [Value::Int(1), Value::BulkString(owner)] => {
                    let owner_key = self.owner_key_of(owner);
                    self.raise_index(&mut lease, "touch", id, &owner_key, expires_at)
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

    async fn create_op(&self, id: &SessionId, session: &Session) -> Result<bool> {
        crate::session::check_nesting(id, session.data())?;
        let data = serde_json::to_vec(session.data()).map_err(|err| Error::encode(id, err))?;
        let expires_at = session.expires_at_millis();
        let value = encode_value(fresh_version(), expires_at, &payload(session, data));
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

    async fn sessions_of_op(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
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
                if head.expires_at <= now {
                    continue;
                }
                let data = if with_data {
                    match serde_json::from_slice(&raw[head.data_at..]) {
                        Ok(data) => Some(data),
                        Err(_) => continue,
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

    async fn destroy_owner_op(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        const OP: &str = "destroy_owner";
        let mut lease = self.conn(OP, None).await?;
        let owner_key = self.owner_key_for(owner);
        let ids = self.candidates(OP, &mut lease, &owner_key).await?;
        let field = owner_field(owner);
        let single = matches!(lease.conn, Conn::Single(_));
        let ids: Vec<&SessionId> = ids.iter().filter(|id| Some(*id) != except).collect();
        let mut destroyed = 0;
        for page in ids.chunks(OWNER_PAGE) {
            let now = now_millis();
            // Each one atomically: deleted only if it is still this owner's; on a single
            // server its index entry goes in the same script, whatever the key held.
            let deletes = page.iter().map(|&id| {
                let mut conn = lease.conn.clone();
                let mut invocation = self.destroy_owned.key(self.key_for(id));
                if single {
                    invocation.key(&owner_key);
                }
                invocation.arg(now).arg(&field).arg(id.as_str());
                let health = &lease.health;
                async move {
                    self.round_trip(
                        health,
                        OP,
                        Some(id),
                        invocation.invoke_async::<i64>(&mut conn),
                    )
                    .await
                }
            });
            for deleted in join_all(deletes.collect()).await {
                destroyed += u64::from(deleted? == 1);
            }
        }
        Ok(destroyed)
    }

    async fn destroy_op(&self, op: &'static str, id: &SessionId) -> Result<()> {
        let mut lease = self.conn(op, Some(id)).await?;
        if matches!(lease.conn, Conn::Single(_)) {
            // One server: the key and, if it names an owner, its index entry, atomically.
            let mut invocation = self.destroy.key(self.key_for(id));
            invocation.arg(self.prefix.len());
            return self
                .round_trip(
                    &lease.health,
                    op,
                    Some(id),
                    invocation.invoke_async::<i64>(&mut lease.conn),
                )
                .await
                .map(drop);
        }
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
    fn owned_values_round_trip_and_old_values_have_no_owner() {
        let owner = Owner::new("user:{42} é").unwrap();
        let mut session = Session::new(Duration::from_secs(60));
        session.set_owner(Some(owner.clone()));
        let data = payload(&session, br#"{"a":1}"#.to_vec());
        let raw = encode_value(7, 1_767_225_600_000, &data);
        let text = format!(
            "7:1767225600000:~{}:user:{{42}} é{{\"a\":1}}",
            owner.as_str().len()
        );
        assert_eq!(raw, text.as_bytes());
        let back = decode_value(&id(), &raw).unwrap();
        assert_eq!(back.owner(), Some(&owner));
        assert_eq!(back.version(), 7);
        assert_eq!(back.get::<i64>("a").unwrap(), Some(1));
        // The head alone (as `sessions_of` reads it without the data) names the owner.
        let head = decode_head(&raw[..raw.len() - 3]).unwrap();
        assert_eq!(head.owner, Some(owner.as_str().as_bytes()));
        // A value written before owners: no owner; and an unowned write is unchanged.
        let old = decode_value(&id(), b"3:1767225600000:{\"u\":2}").unwrap();
        assert_eq!(old.owner(), None);
        let unowned = Session::new(Duration::from_secs(60));
        assert_eq!(payload(&unowned, b"{}".to_vec()), b"{}");
        // The field is prefix-free: one owner's field never starts another's value.
        assert!(
            !owner_field(&Owner::new("ab").unwrap())
                .starts_with(&owner_field(&Owner::new("a").unwrap()))
        );
    }

    #[test]
    fn malformed_owner_fields_are_decode_errors() {
        for raw in [
            &b"1:1:~"[..],
            b"1:1:~5",
            b"1:1:~5:abc{}",
            b"1:1:~x:a{}",
            b"1:1:~1000:a{}",
            b"1:1:~0:{}",
            b"1:1:~1:\n{}",
            b"1:1:~2:\xff\xfe{}",
            b"1:1:~1:a",
            b"1:1:~1:a[1]",
        ] {
            let err = decode_value(&id(), raw).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Decode, "{raw:?}");
        }
    }

    #[test]
    fn owner_index_keys_are_never_session_keys() {
        let store = RedisStore::builder("redis://127.0.0.1")
            .key_prefix("p:")
            .build()
            .unwrap();
        let key = store.owner_key_for(&Owner::new("a{b}:c").unwrap());
        assert_eq!(key, "p:owner:{617b627d3a63}");
        assert!(is_index_key("p:", key.as_bytes()));
        assert!(!is_own_key("p:", key.as_bytes()));
        for other in [
            &b"p:owner:{}"[..],
            b"p:owner:{6}",
            b"p:owner:{6G}",
            b"p:owner:{61}x",
            b"p:owner:61",
            b"q:owner:{61}",
            b"p:x:owner:{61}",
        ] {
            assert!(!is_index_key("p:", other), "{other:?}");
        }
        let longest = store.owner_key_for(&Owner::new("x".repeat(Owner::MAX_LEN)).unwrap());
        assert!(is_index_key("p:", longest.as_bytes()));
    }

    /// The composed scripts keep the pieces' text (so a change to one script reaches its
    /// owned variant) and the touch script's owner read stays within the head it reads.
    #[test]
    fn owned_scripts_are_composed_from_the_plain_ones() {
        let write = format!(
            "{INDEX_FN}{}{WRITE_OWNED_CALL}",
            as_function("write", WRITE_LUA)
        );
        assert!(write.contains(WRITE_LUA));
        assert!(CREATE_OWNED_CALL.contains("create()"));
        assert!(TOUCH_LUA.contains(&format!("GETRANGE', key, 0, {}", HEAD_BYTES - 1)));
        assert!(DESTROY_OWNED_LUA.contains(&format!("GETRANGE', key, 0, {}", HEAD_BYTES - 1)));
        assert!(DESTROY_LUA.contains(&format!("GETRANGE', key, 0, {}", HEAD_BYTES - 1)));
        assert!(RECLAIM_LUA.contains(&format!("GETRANGE', key, 0, {}", HEAD_BYTES - 1)));
        assert!(WRITE_LUA.contains(&format!("GETRANGE', key, 0, {}", HEAD_BYTES - 1)));
        // The index key the scripts compute is the store's.
        assert!(OWNER_FN.contains(&format!("'{OWNER_KEY_INFIX}' .. hexed .. '}}'")));
        // The longest head fits HEAD_BYTES.
        let owner = Owner::new("x".repeat(Owner::MAX_LEN)).unwrap();
        let mut field = format!("{}:{}:", crate::session::MAX_VERSION, i64::MAX).into_bytes();
        field.extend_from_slice(&owner_field(&owner));
        assert!(field.len() <= HEAD_BYTES, "{}", field.len());
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

    /// Without `redis-tls` (and no TLS in redis-rs from elsewhere), a `rediss://` URL and
    /// the TLS URL options are configuration errors naming the feature.
    #[cfg(not(feature = "redis-tls"))]
    #[tokio::test]
    async fn tls_without_the_feature_names_it() {
        let builders = [
            RedisStore::builder("rediss://127.0.0.1:1"),
            RedisStore::cluster_builder(["rediss://127.0.0.1:1", "rediss://127.0.0.1:2"]),
        ];
        for builder in builders {
            let err = builder.build().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{err}");
            assert!(err.to_string().contains("`redis-tls` feature"), "{err}");
        }
        for url in [
            "rediss://127.0.0.1:1",
            "rediss+cluster://127.0.0.1:1,127.0.0.1:2",
            "redis://127.0.0.1:1?tls_ca_file=/ca.pem",
            "rediss://127.0.0.1:1?tls_ca_file=/ca.pem",
        ] {
            let err = crate::connect(url).await.map(drop).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{url}: {err}");
            assert!(
                err.to_string().contains("`redis-tls` feature"),
                "{url}: {err}"
            );
        }
    }

    #[cfg(feature = "redis-tls")]
    #[test]
    fn debug_hides_tls_keys() {
        let builder = RedisStore::builder("rediss://127.0.0.1")
            .tls_client_certificate_pem("CERT-BYTES", "SECRET-KEY-BYTES");
        let debug = format!("{builder:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("client_certificate: true"), "{debug}");
    }
}
