//! A PostgreSQL store through [sqlx](https://docs.rs/sqlx): one row per session.
//!
//! [`PostgresStore`] keeps sessions in one table of a Postgres database, so they survive
//! restarts and are shared by every instance of an application. It talks to the server through
//! an sqlx [`PgPool`]: either one the store opens ([`PostgresStore::connect`]) or one the
//! application already has ([`PostgresStore::from_pool`]), so sessions and the rest of the
//! application can share connections.
//!
//! ```no_run
//! # async fn demo() -> session_stores::Result<()> {
//! use std::time::Duration;
//! use session_stores::{PostgresStore, Session, SessionId, SessionStore};
//!
//! let store = PostgresStore::builder()
//!     .schema("auth")
//!     .table("sessions")
//!     .max_connections(20)
//!     .acquire_timeout(Duration::from_secs(3))
//!     .connect("postgres://app@db.internal/app")
//!     .await?;
//! store.migrate().await?; // creates the schema, table and index if missing
//!
//! let id = SessionId::generate();
//! let mut session = Session::new(Duration::from_secs(3600));
//! session.insert("user_id", 42).unwrap();
//! assert!(store.create(&id, &session).await?);
//!
//! // Run now and then (for example every few minutes) to reclaim the space of expired rows.
//! let removed = store.delete_expired().await?;
//! # let _ = removed;
//! # Ok(())
//! # }
//! ```
//!
//! # Options
//!
//! Set on [`PostgresStore::builder`]:
//!
//! | option | default | meaning |
//! |---|---|---|
//! | [`schema`](PostgresStoreBuilder::schema) | none (the connection's `search_path`) | schema of the table; `migrate` creates it if missing |
//! | [`table`](PostgresStoreBuilder::table) | `sessions` | table name |
//! | [`delete_batch_size`](PostgresStoreBuilder::delete_batch_size) | 1000 | rows `delete_expired` removes per statement |
//! | [`max_connections`](PostgresStoreBuilder::max_connections) | 10 | pool size (only for pools the store opens) |
//! | [`acquire_timeout`](PostgresStoreBuilder::acquire_timeout) | 5 s | longest wait for a connection, including connecting (only for pools the store opens) |
//! | [`operation_timeout`](PostgresStoreBuilder::operation_timeout) | 5 s | bound on one whole operation, connection wait included (each batch of `delete_expired`); an overrun is a transient [`Error::Timeout`] |
//!
//! A pool the store opens pings a pooled connection on checkout only when it has sat idle
//! for [`PING_IF_IDLE_FOR`] (1 s), instead of sqlx's ping on every checkout, so each operation
//! of a busy store is one round trip. A pool you pass to
//! [`build`](PostgresStoreBuilder::build) keeps its own settings: give it
//! `.test_before_acquire(false)` for the same effect.
//!
//! Schema and table names must be 1 to 63 bytes (the table at most 48, so that the index names
//! derived from it fit Postgres' 63-byte identifier limit) of ASCII letters, digits and `_`,
//! not starting with a digit. They are always double-quoted in SQL, so they are
//! case-sensitive: `.table("Sessions")` is the table `"Sessions"`, not `sessions`. Any other
//! name is refused with [`Error::Config`].
//!
//! # Schema
//!
//! [`PostgresStore::migrate`] first reads the catalog (`to_regclass`, `pg_attribute`,
//! `pg_namespace`: no lock, no privilege beyond connecting). If the table is there with its
//! five columns and its two indexes, it is done: no DDL and no lock, so a role with only
//! `SELECT`, `INSERT`, `UPDATE` and `DELETE` on an existing table (Postgres 15 grants no
//! `CREATE` on `public` by default) starts, and a boot never takes the `SHARE` lock of
//! `CREATE INDEX` that would stall writes. Otherwise it runs, in one transaction with
//! `SET LOCAL lock_timeout = '5s'` (it fails rather than queue behind a long transaction):
//!
//! ```sql
//! SELECT pg_advisory_xact_lock(<MIGRATE_LOCK_KEY>);
//! CREATE SCHEMA IF NOT EXISTS "<schema>";            -- only when a schema is set and missing
//! CREATE TABLE IF NOT EXISTS "<schema>"."<table>" (
//!     id         text        PRIMARY KEY,
//!     data       jsonb       NOT NULL,
//!     expires_at timestamptz NOT NULL,
//!     version    bigint      NOT NULL,
//!     owner      text        NULL
//! );
//! ALTER TABLE "<schema>"."<table>" ADD COLUMN IF NOT EXISTS owner text;
//! CREATE INDEX IF NOT EXISTS "<table>_expires_at_idx" ON "<schema>"."<table>" (expires_at);
//! CREATE INDEX IF NOT EXISTS "<table>_owner_idx" ON "<schema>"."<table>" (owner)
//!     WHERE owner IS NOT NULL;
//! ```
//!
//! (The schema and table statements only when the table is missing, the `ALTER TABLE` only
//! when it lacks `owner`: a table created by a release before owners is upgraded in place,
//! keeping its sessions, with no owner. Adding a nullable column without a default changes
//! only the catalog, but takes the table's `ACCESS EXCLUSIVE` lock for that instant, under
//! the same `lock_timeout`. A role that may not alter the table gets an [`Error::Config`]
//! saying what to run. An existing table with its `owner` column whose indexes the role may
//! not create is used without them: `delete_expired`, `sessions_of` and `destroy_owner` then
//! scan.) `connect(url)` runs `migrate` unless the URL says `migrate=false`.
//!
//! - `id` is the [`SessionId`] as text. Ids are validated before the store sees them, and are
//!   always bound as parameters.
//! - `data` is the session's JSON object as `jsonb`, so operators can query it
//!   (`WHERE data->>'user_id' = '42'`).
//! - `expires_at` is an absolute instant (`timestamptz`, never a naive timestamp), stored to
//!   the millisecond. Expiries are clamped to the years 1 to 9999
//!   ([`MIN_EXPIRY_MILLIS`], [`MAX_EXPIRY_MILLIS`]); a row whose `expires_at` an operator set
//!   to `'infinity'` reads back as expiring at `i64::MAX` milliseconds.
//! - `version` is the version the store assigned at the last write: from 1 to
//!   [`MAX_VERSION`](crate::MAX_VERSION), a [fresh, unpredictable one](crate::fresh_version)
//!   for a new session, one more for each later write.
//! - `owner` is the session's [`Owner`](crate::Owner), NULL for none, written by every write
//!   (`set`, `create`, `set_if_version`), kept by `touch`. The partial index holds only the
//!   sessions that have one.
//!
//! `migrate` is idempotent and safe when several application instances start at once: the
//! transaction-scoped advisory lock [`MIGRATE_LOCK_KEY`] serialises concurrent migrations
//! (concurrent `CREATE ... IF NOT EXISTS` statements can otherwise fail on Postgres' catalog
//! unique indexes). The store never migrates by itself; call `migrate` at start-up, or create
//! the table with your own migration tool using the SQL above.
//!
//! # Queries and guarantees
//!
//! Every statement is a prepared statement with bound parameters (sqlx caches them per
//! connection). Each operation is a single statement, so it is atomic on its own, whatever
//! the isolation level. Connections the store opens are pinned to `read committed` (a startup
//! option, which takes precedence over a database or role default of `repeatable read` or
//! `serializable`). On an application's own pool at a higher level, a statement that fails
//! with a serialization failure or a deadlock (`40001`, `40P01`) is run once more inside
//! `BEGIN ISOLATION LEVEL READ COMMITTED`, except a `set_if_version` update, whose
//! serialization failure means another write got there first: a [`Error::Conflict`], which
//! is the truth, not an outage. Each operation reads the clock only once it holds a
//! connection, and `get` checks the expiry of the row it received once more, so a long wait
//! for a connection never returns, touches or writes over a session that expired meanwhile.
//!
//!
//! - `get`, `len` filter expiry in SQL (`expires_at > now`), so an expired row is never
//!   returned or counted, even before `delete_expired` removed it.
//! - Versions: the store draws a fresh version ([`fresh_version`](crate::fresh_version)) for
//!   every write that may start a new incarnation and binds it as a parameter; the statement
//!   stores it where no live row is (absent or expired), and `version + 1` over a live row,
//!   unless that row is at [`MAX_VERSION`](crate::MAX_VERSION) (or above, which only a
//!   hand-edited row can be), which gets the fresh version too.
//! - `set` is `INSERT ... ON CONFLICT (id) DO UPDATE`, whose new version is computed from the
//!   row it replaces (`version + 1` if that row is live and its version valid and below
//!   `MAX_VERSION`, else the fresh version). A `set` whose expiry is already past is a
//!   `DELETE`.
//! - `create` is `INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE <the existing row is
//!   expired>`, and its row count is the answer: 1 if it inserted (or replaced an expired row,
//!   which the contract treats as absent), 0 if a live session holds the id. A plain
//!   `ON CONFLICT DO NOTHING` would refuse to replace an expired row; a check-then-insert would
//!   race. Postgres guarantees that of concurrent `create`s exactly one inserts.
//! - `set_if_version` is a conditional `UPDATE ... WHERE version = $expected AND <live>`
//!   (and, for expected version 0, the same conditional insert as `create`).
//! - `touch` updates only `expires_at` of a live row (or deletes the row, when the new expiry
//!   is already past); data and version are untouched.
//! - `delete_expired` deletes in batches of at most
//!   [`delete_batch_size`](PostgresStoreBuilder::delete_batch_size) rows, each batch its own
//!   statement: `DELETE ... WHERE id IN (SELECT id ... WHERE expires_at <= now LIMIT n FOR
//!   UPDATE SKIP LOCKED) AND expires_at <= now`. A huge backlog of expired rows therefore never
//!   locks the table, or many rows, for long, and rows a concurrent write holds are skipped
//!   (and left for the next run) rather than waited for. The outer `expires_at <= now` re-check
//!   means a session refreshed concurrently is never deleted.
//!   [`delete_expired_batch`](PostgresStore::delete_expired_batch) runs one batch.
//! - `clear` is `DELETE FROM <table>`: it removes only this store's table's rows.
//! - `sessions_of` is `SELECT id, <expiry>, version[, data] ... WHERE owner = $1 AND
//!   expires_at > now` (through the owner index), and, like `get`, checks the expiries it
//!   received against the clock once more.
//! - `destroy_owner` is `WITH d AS (DELETE ... WHERE owner = $1 AND id IS DISTINCT FROM $2
//!   RETURNING expires_at) SELECT count(*) FILTER (WHERE expires_at > now) FROM d`: one
//!   statement that removes the owner's rows (expired ones too) but the kept one, and counts
//!   the live ones.
//! - `scan` pages through the table in id order: `SELECT data, <expiry>, version, owner, id
//!   ... WHERE id > $1 AND expires_at > now ORDER BY id LIMIT $2` (the first page without
//!   the id condition), a keyset walk of the primary key, checked against the clock once
//!   more like `get`. The cursor is `1:` and the last id read, so every session live for the
//!   whole scan is returned once, whatever is written meanwhile, and a cursor saved as text
//!   resumes the scan on any store over the same table. A page holds at most 10,000
//!   sessions, whatever limit it is asked for; a page that read fewer rows than its limit is
//!   the last.
//!
//! A failing statement changes nothing, so a failed write leaves the old session intact.
//!
//! ## Clock
//!
//! The store uses the **application's clock** throughout: it binds "now" (from
//! [`now_millis`]) as a parameter into every statement, and never calls the database's
//! `now()`. Session expiries are made by the application ([`Session::new`] adds a TTL to the
//! application's clock), so comparing them with the same clock means a session lives exactly
//! as long as the application intended, and what the store decides agrees with
//! [`Session::is_expired`]. With the database clock, a skew between application and database
//! would shorten or stretch every session by the skew, and a session could be live for the
//! application but already expired for the store. Keep the clocks of several application
//! instances in sync (NTP): each one judges expiry by its own clock.
//!
//! ## Data fidelity
//!
//! `jsonb` stores a normalised form of JSON. Objects, arrays, strings, booleans, null,
//! integers and floats round-trip exactly. What `jsonb` cannot keep exactly is refused
//! before anything is written, with [`Error::Encode`] for that session (the old session
//! stays):
//!
//! - a float with an integral value that `serde_json` writes without a decimal point and that
//!   fits in `i64` or `u64` (whole floats from `1e16` up to 2^64 in magnitude, such as
//!   `1e17`): `jsonb` would give it back as an integer;
//! - the character U+0000, which Postgres cannot store in `jsonb`.
//!
//! # TLS
//!
//! With the `postgres-tls` feature, sqlx connects over TLS (rustls with the ring provider,
//! TLS 1.2 and 1.3; no OpenSSL) as the URL's `sslmode` says, with libpq's meanings:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | |
//! | `prefer` (sqlx's default) | if the server offers it, else plain text, silently | not checked |
//! | `require` | always (else the connection fails) | not checked: encrypted, but anyone in the path can pose as the server |
//! | `verify-ca` | always | must chain to a trusted CA |
//! | `verify-full` | always | must chain to a trusted CA and name the URL's host |
//!
//! Use `verify-full` where the network is not trusted. Trusted CAs: the public roots of the
//! Mozilla CA store (the `webpki-roots` crate, built in; the operating system's store is not
//! read), plus the PEM file of `sslrootcert=/path/ca.pem` for a private CA (managed
//! Postgres services publish theirs). `sslcert=` and `sslkey=` present a client certificate.
//! [`PostgresStoreBuilder::connect`] and [`connect`](crate::connect()) pass every one of
//! these options on to sqlx, and also read sqlx's `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`
//! and `PGSSLKEY` when the URL does not set them.
//!
//! - When TLS may be used, the certificate and key files are read when the store is made: a
//!   missing, unreadable or malformed one is an [`Error::Config`] naming it (sqlx alone
//!   would only find out while connecting).
//! - Without the feature, `sslmode=require`, `verify-ca` and `verify-full` fail with an
//!   [`Error::Config`] naming it (and `prefer` connects in plain text).
//! - A refused handshake (an untrusted or misnamed server certificate, a refused client
//!   certificate) is an [`Error::Backend`], not transient, at once: its source says what
//!   rustls refused (`invalid peer certificate: UnknownIssuer`) and what to configure. A
//!   server without TLS under `require` or stricter is an [`Error::Backend`] too.
//!
//! # Errors
//!
//! - Connection failures (refused, reset, closed, a pool that was closed, server shutting
//!   down, SQLSTATE class `08`, `57P01`-`57P03`, `53300`) are [`Error::Unavailable`]; no
//!   connection within the acquire timeout is [`Error::Timeout`] waiting for "a pooled
//!   connection". Both are transient ([`Error::is_transient`]). sqlx retries a refused
//!   connection with back-off until the acquire timeout, so an unreachable server gives a
//!   [`Error::Timeout`] after at most that long, never a hang. A statement cancelled by
//!   `statement_timeout` (SQLSTATE `57014`) is a transient [`Error::Timeout`] too, and so is
//!   an operation that overran its [`operation_timeout`](PostgresStoreBuilder::operation_timeout).
//!   A serialization failure or deadlock that persists after the retry above is a transient
//!   [`Error::Unavailable`].
//! - A row that cannot be read back as a session (data that is not a JSON object, a negative
//!   version, a column of the wrong type) is [`Error::Decode`] for that session, never a panic.
//! - A refused TLS handshake is [`Error::Backend`] (see [TLS](#tls)).
//! - Everything else the server reports is [`Error::Backend`].
//!
//! Every error keeps the sqlx error as its source and names the session by its
//! [`IdHint`] only.
//!
//! A server that accepts a connection and then stops answering mid-statement, or a row lock
//! held by a stuck transaction, is bounded by the operation timeout: the operation fails with
//! a transient [`Error::Timeout`] and its connection is dropped. Setting Postgres'
//! `statement_timeout` as well lets the server give up on such statements too.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnection, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgPool, Row, SqlSafeStr, SqlStr};

use crate::deadline::{DEFAULT_OPERATION_TIMEOUT, within};
use crate::error::{Error, IdHint, Result};
use crate::session::{
    MAX_VERSION, Owner, Session, SessionId, fresh_version, next_version, now_millis, to_millis,
};
use crate::store::{Capabilities, OwnedSession, ScanCursor, ScanPage, SessionStore};

/// Runs a statement (`$statement`, built on the executor `$e`, which is `$conn`). If it fails
/// with a serialization failure or a deadlock (possible only on a connection whose isolation
/// level is above `read committed`, such as an application's own pool at `serializable`), it
/// runs it once more inside `BEGIN ISOLATION LEVEL READ COMMITTED`, where a single statement
/// cannot fail that way. Each statement is a whole operation, so running it again is safe;
/// the fast path stays one round trip.
macro_rules! retry {
    ($conn:ident => $e:ident : $statement:expr) => {{
        let first = {
            let $e = &mut *$conn;
            $statement.await
        };
        match first {
            Err(err) if is_serialization_failure(&err) => {
                async {
                    let mut tx = sqlx::Connection::begin_with(
                        &mut *$conn,
                        "BEGIN ISOLATION LEVEL READ COMMITTED",
                    )
                    .await?;
                    let result = {
                        let $e = &mut *tx;
                        $statement.await
                    }?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(result)
                }
                .await
            }
            other => other,
        }
    }};
}

/// The most sessions one page of [`scan`](SessionStore::scan) returns, whatever limit it is
/// asked for: a page is read whole into memory.
const MAX_SCAN_LIMIT: usize = 10_000;

/// The default table name: `sessions`.
pub const DEFAULT_TABLE: &str = "sessions";

/// The default number of rows `delete_expired` removes per statement.
pub const DEFAULT_DELETE_BATCH_SIZE: u32 = 1000;

/// The default pool size of a pool the store opens.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The default acquire timeout of a pool the store opens.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The key of the transaction-scoped advisory lock that [`PostgresStore::migrate`] takes
/// (`pg_advisory_xact_lock`). The bytes spell `SESSTORE`.
pub const MIGRATE_LOCK_KEY: i64 = 0x5345_5353_544F_5245;

/// The earliest expiry stored: 0001-01-01T00:00:00Z, in milliseconds since the Unix epoch.
/// Earlier expiries are stored as this one (they are in the past either way).
pub const MIN_EXPIRY_MILLIS: i64 = -62_135_596_800_000;

/// The latest expiry stored: 9999-12-31T23:59:59.999Z, in milliseconds since the Unix epoch.
/// Later expiries (such as a TTL of `Duration::MAX`) are stored as this one.
pub const MAX_EXPIRY_MILLIS: i64 = 253_402_300_799_999;

const MAX_IDENT_LEN: usize = 63;
const INDEX_SUFFIX: &str = "_expires_at_idx";
const OWNER_INDEX_SUFFIX: &str = "_owner_idx";
/// The longest table name whose index names (the longer suffix) fit in an identifier.
const MAX_TABLE_LEN: usize = MAX_IDENT_LEN - INDEX_SUFFIX.len();
const _: () = assert!(OWNER_INDEX_SUFFIX.len() <= INDEX_SUFFIX.len());

/// A session store over a PostgreSQL table. See the [module docs](self).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<String>,
    table: String,
    delete_batch_size: u32,
    operation_timeout: Duration,
    sql: Statements,
}

/// Builds a [`PostgresStore`]. See the [module docs](self#options) for the options.
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    schema: Option<String>,
    table: String,
    delete_batch_size: u32,
    max_connections: u32,
    acquire_timeout: Duration,
    operation_timeout: Duration,
}

impl PostgresStoreBuilder {
    /// The schema of the table. Default: none, so the table is found through the connection's
    /// `search_path` (normally `public`). [`PostgresStore::migrate`] creates the schema if it is
    /// missing.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The table name. Default: [`DEFAULT_TABLE`].
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// How many expired rows one `DELETE` of [`delete_expired`](SessionStore::delete_expired)
    /// removes (at least 1). Default: [`DEFAULT_DELETE_BATCH_SIZE`].
    pub fn delete_batch_size(mut self, rows: u32) -> Self {
        self.delete_batch_size = rows.max(1);
        self
    }

    /// The largest number of connections of a pool the store opens (at least 1). Ignored by
    /// [`build`](Self::build), which uses the caller's pool. Default:
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long an operation waits for a connection, including opening one, before it fails
    /// with a transient [`Error::Timeout`]. Ignored by [`build`](Self::build), which uses the
    /// caller's pool. Default: [`DEFAULT_ACQUIRE_TIMEOUT`].
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The bound on one operation, from waiting for a connection to the last row: an
    /// operation that has not finished by then fails with a transient [`Error::Timeout`] (a
    /// half-open connection, a server that stopped answering, a row lock held by a stuck
    /// transaction). Default: [`DEFAULT_OPERATION_TIMEOUT`](crate::DEFAULT_OPERATION_TIMEOUT).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// A store over `pool`, the application's own pool.
    ///
    /// Fails with [`Error::Config`] if the schema or table name is invalid.
    pub fn build(self, pool: PgPool) -> Result<PostgresStore> {
        self.validate()?;
        let sql = Statements::new(self.schema.as_deref(), &self.table);
        Ok(PostgresStore {
            pool,
            schema: self.schema,
            table: self.table,
            delete_batch_size: self.delete_batch_size,
            operation_timeout: self.operation_timeout,
            sql,
        })
    }

    fn validate(&self) -> Result<()> {
        if let Some(schema) = &self.schema {
            check_ident("schema", schema, MAX_IDENT_LEN)?;
        }
        check_ident("table", &self.table, MAX_TABLE_LEN)
    }

    /// Opens a pool to `url` (a `postgres://` URL, see sqlx's `PgConnectOptions`; for TLS,
    /// its `sslmode`, `sslrootcert`, `sslcert` and `sslkey`: see [TLS](self#tls)) and checks
    /// that it can connect, then returns the store over it.
    ///
    /// Fails with [`Error::Config`] for an invalid URL or name, an unreadable or malformed
    /// TLS certificate or key file, or TLS asked for without the `postgres-tls` feature; with
    /// a transient error when the server cannot be reached within the acquire timeout; and
    /// with [`Error::Backend`] when the server refuses the connection (unknown database, bad
    /// password, a refused TLS handshake, ...).
    pub async fn connect(self, url: &str) -> Result<PostgresStore> {
        require_tokio()?;
        self.validate()?;
        let connect_options = parse_url(url)?;
        let pool = self
            .pool_options()
            .connect_with(connect_options)
            .await
            .map_err(|err| map_err("connect", None, err))?;
        self.build(pool)
    }

    /// Like [`connect`](Self::connect), but opens connections only when an operation needs one,
    /// so an application can start before its database. Must be called within a tokio runtime
    /// (it fails with [`Error::Config`] otherwise).
    pub fn connect_lazy(self, url: &str) -> Result<PostgresStore> {
        require_tokio()?;
        let connect_options = parse_url(url)?;
        let pool = self.pool_options().connect_lazy_with(connect_options);
        self.build(pool)
    }

    /// The store's own pools check a pooled connection with a ping only when it has been idle
    /// for [`PING_IF_IDLE_FOR`]: sqlx's default pings on every checkout, which doubles the
    /// round trips of every operation.
    fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
    }
}

/// How long a pooled connection of the store's own pool may sit idle before it is pinged on
/// checkout. A busy store's connections are never idle that long, so each operation is one
/// round trip; a connection that went stale while the pool was quiet (a restarted server, a
/// dropped NAT mapping) is found by the ping and replaced instead of failing an operation.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

fn require_tokio() -> Result<()> {
    tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|err| Error::Config {
            message: "PostgresStore needs a tokio runtime to open its pool".into(),
            source: Some(Box::new(err)),
        })
}

/// Parses `url` and pins the connections' isolation level to `read committed`: every
/// operation is one statement whose atomicity does not depend on the level, and a database
/// or role default of `repeatable read` or `serializable` would otherwise turn concurrent
/// writes into serialization failures. (Startup options take precedence over database and
/// role defaults.)
///
/// With `postgres-tls`, the certificate and key files the connections will read are checked
/// here too (see [`check_tls_files`]).
fn parse_url(url: &str) -> Result<sqlx::postgres::PgConnectOptions> {
    let options: sqlx::postgres::PgConnectOptions =
        url.parse().map_err(|err: sqlx::Error| Error::Config {
            message: "the Postgres URL is invalid".into(),
            source: Some(Box::new(err)),
        })?;
    #[cfg(feature = "postgres-tls")]
    if !matches!(
        options.get_ssl_mode(),
        sqlx::postgres::PgSslMode::Disable | sqlx::postgres::PgSslMode::Allow
    ) {
        check_tls_files(url)?;
    }
    Ok(options.options([("default_transaction_isolation", "read committed")]))
}

/// Reads and parses the CA certificate, client certificate and client key that the
/// connections will use (the URL's `sslrootcert`, `sslcert` and `sslkey`, or else sqlx's
/// `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY`), so that a missing, unreadable or malformed
/// file is an [`Error::Config`] naming its option when the store is made. (sqlx reads them
/// only while connecting, where a missing file would look like an unreachable server.)
#[cfg(feature = "postgres-tls")]
fn check_tls_files(url: &str) -> Result<()> {
    use crate::stores::shared::tls;
    // (option, value, whether the value may be the PEM text itself, as sqlx allows for
    // the environment variables)
    let from_env = |var: &str| {
        std::env::var(var)
            .ok()
            .map(|value| (format!("the variable {var}"), value, true))
    };
    let (mut root, mut cert, mut key) = (
        from_env("PGSSLROOTCERT"),
        from_env("PGSSLCERT"),
        from_env("PGSSLKEY"),
    );
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name);
        let slot = match name.as_str() {
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => &mut root,
            "sslcert" | "ssl-cert" => &mut cert,
            "sslkey" | "ssl-key" => &mut key,
            _ => continue,
        };
        *slot = Some((format!("the URL option {name}"), form_decode(value), false));
    }
    let read = |(option, value, may_be_inline): (String, String, bool)| -> Result<Vec<u8>> {
        let trimmed = value.trim();
        if may_be_inline && trimmed.starts_with("-----BEGIN") && trimmed.ends_with("-----") {
            return Ok(value.into_bytes());
        }
        std::fs::read(&value).map_err(|err| Error::Config {
            message: format!("could not read the Postgres TLS file `{value}` ({option})"),
            source: Some(Box::new(err)),
        })
    };
    if let Some(root) = root {
        tls::certificates("the Postgres sslrootcert", &read(root)?)?;
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            tls::certificates("the Postgres sslcert", &read(cert)?)?;
            tls::check_private_key("the Postgres sslkey", &read(key)?)?;
        }
        (None, None) => {}
        _ => {
            return Err(Error::config(
                "a Postgres client certificate (sslcert) needs its key (sslkey), and the key \
                 its certificate",
            ));
        }
    }
    Ok(())
}

/// Decodes a URL query component as the `url` crate does for sqlx: `+` is a space, `%XX` a
/// byte; malformed escapes stay as they are.
#[cfg(feature = "postgres-tls")]
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a schema or table name: `[A-Za-z_][A-Za-z0-9_]*`, 1..=`max` bytes.
fn check_ident(what: &str, name: &str, max: usize) -> Result<()> {
    let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let starts_well = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !valid_chars || !starts_well || name.len() > max {
        return Err(Error::config(format!(
            "the {what} name {name:?} is not 1 to {max} ASCII letters, digits or `_` starting with a letter or `_`"
        )));
    }
    Ok(())
}

/// `"name"`. Only called on names that passed [`check_ident`], so there is nothing to escape.
fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// SQL for the `timestamptz` that is `$n` milliseconds after the Unix epoch, exact to the
/// millisecond. (Whole seconds and the millisecond remainder are multiplied separately, so
/// the float multiplication of `interval` stays exact over the whole clamped range.)
fn ts(n: usize) -> String {
    format!(
        "('epoch'::timestamptz + (${n}::int8 / 1000) * interval '1 second' \
         + (${n}::int8 % 1000) * interval '1 millisecond')"
    )
}

/// SQL reading `expires_at` back as milliseconds since the Unix epoch.
const EXPIRES_MILLIS: &str = "CASE WHEN isfinite(expires_at) \
     THEN round(extract(epoch FROM expires_at) * 1000)::int8 \
     ELSE 9223372036854775807 END";

fn sql(text: String) -> SqlStr {
    AssertSqlSafe(text).into_sql_str()
}

/// The store's SQL, built once from the validated, quoted names.
#[derive(Clone)]
struct Statements {
    create_schema: Option<SqlStr>,
    create_table: SqlStr,
    add_owner: SqlStr,
    create_index: SqlStr,
    create_owner_index: SqlStr,
    get: SqlStr,
    set: SqlStr,
    delete: SqlStr,
    delete_if_expired_or_absent: SqlStr,
    live_exists: SqlStr,
    touch: SqlStr,
    touch_delete: SqlStr,
    create: SqlStr,
    update_if_version: SqlStr,
    delete_if_version: SqlStr,
    len: SqlStr,
    clear: SqlStr,
    delete_expired_batch: SqlStr,
    sessions_of: SqlStr,
    sessions_of_with_data: SqlStr,
    destroy_owner: SqlStr,
    scan_first: SqlStr,
    scan_after: SqlStr,
}

impl Statements {
    fn new(schema: Option<&str>, table: &str) -> Self {
        let t = match schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(table)),
            None => quote(table),
        };
        let index = quote(&format!("{table}{INDEX_SUFFIX}"));
        let owner_index = quote(&format!("{table}{OWNER_INDEX_SUFFIX}"));
        // $5 is a fresh version, for a row that starts a new incarnation; $6 the owner (or
        // NULL).
        let upsert_head = format!(
            "INSERT INTO {t} AS s (id, data, expires_at, version, owner) \
             VALUES ($1, $2::jsonb, {exp}, $5::int8, $6::text) ON CONFLICT (id) DO UPDATE SET \
             data = EXCLUDED.data, expires_at = EXCLUDED.expires_at, owner = EXCLUDED.owner",
            exp = ts(3)
        );
        // `owner = $1` implies `owner IS NOT NULL`, so these use the partial owner index.
        let listed = |columns: &str| {
            sql(format!(
                "SELECT {columns} FROM {t} WHERE owner = $1 AND expires_at > {now}",
                now = ts(2)
            ))
        };
        Statements {
            create_schema: schema
                .map(|schema| sql(format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema)))),
            create_table: sql(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id text PRIMARY KEY, \
                 data jsonb NOT NULL, \
                 expires_at timestamptz NOT NULL, \
                 version bigint NOT NULL, \
                 owner text NULL)"
            )),
            add_owner: sql(format!(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS owner text NULL"
            )),
            create_index: sql(format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at)"
            )),
            create_owner_index: sql(format!(
                "CREATE INDEX IF NOT EXISTS {owner_index} ON {t} (owner) WHERE owner IS NOT NULL"
            )),
            get: sql(format!(
                "SELECT data::text, {EXPIRES_MILLIS}, version, owner FROM {t} \
                 WHERE id = $1 AND expires_at > {now}",
                now = ts(2)
            )),
            set: sql(format!(
                "{upsert_head}, version = CASE WHEN s.expires_at > {now} AND s.version > 0 \
                 AND s.version < {MAX_VERSION} THEN s.version + 1 ELSE EXCLUDED.version END \
                 RETURNING version",
                now = ts(4)
            )),
            delete: sql(format!("DELETE FROM {t} WHERE id = $1")),
            delete_if_expired_or_absent: sql(format!(
                "DELETE FROM {t} WHERE id = $1 AND expires_at <= {now}",
                now = ts(2)
            )),
            live_exists: sql(format!(
                "SELECT EXISTS (SELECT 1 FROM {t} WHERE id = $1 AND expires_at > {now})",
                now = ts(2)
            )),
            touch: sql(format!(
                "UPDATE {t} SET expires_at = {exp} WHERE id = $1 AND expires_at > {now}",
                exp = ts(2),
                now = ts(3)
            )),
            touch_delete: sql(format!(
                "DELETE FROM {t} WHERE id = $1 AND expires_at > {now}",
                now = ts(2)
            )),
            create: sql(format!(
                "{upsert_head}, version = EXCLUDED.version WHERE s.expires_at <= {now}",
                now = ts(4)
            )),
            // $6 is the version after $4, computed by the caller (`next_version`); $7 the
            // owner (or NULL).
            update_if_version: sql(format!(
                "UPDATE {t} SET data = $2::jsonb, expires_at = {exp}, version = $6::int8, \
                 owner = $7::text \
                 WHERE id = $1 AND version = $4 AND expires_at > {now} RETURNING version",
                exp = ts(3),
                now = ts(5)
            )),
            delete_if_version: sql(format!(
                "DELETE FROM {t} WHERE id = $1 AND version = $2 AND expires_at > {now}",
                now = ts(3)
            )),
            len: sql(format!(
                "SELECT count(*) FROM {t} WHERE expires_at > {now}",
                now = ts(1)
            )),
            clear: sql(format!("DELETE FROM {t}")),
            delete_expired_batch: sql(format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE expires_at <= {now} \
                 LIMIT $2 FOR UPDATE SKIP LOCKED) AND expires_at <= {now}",
                now = ts(1)
            )),
            sessions_of: listed(&format!("id, {EXPIRES_MILLIS}, version")),
            sessions_of_with_data: listed(&format!("id, {EXPIRES_MILLIS}, version, data::text")),
            // $2 is the id to keep, or NULL (from which every id is distinct).
            destroy_owner: sql(format!(
                "WITH d AS (DELETE FROM {t} WHERE owner = $1 AND id IS DISTINCT FROM $2::text \
                 RETURNING expires_at) \
                 SELECT count(*) FILTER (WHERE expires_at > {now}) FROM d",
                now = ts(3)
            )),
            // Keyset pages in id order (the primary key's order): `get`'s columns, then the id.
            scan_first: sql(format!(
                "SELECT data::text, {EXPIRES_MILLIS}, version, owner, id FROM {t} \
                 WHERE expires_at > {now} ORDER BY id LIMIT $2",
                now = ts(1)
            )),
            scan_after: sql(format!(
                "SELECT data::text, {EXPIRES_MILLIS}, version, owner, id FROM {t} \
                 WHERE id > $1 AND expires_at > {now} ORDER BY id LIMIT $3",
                now = ts(2)
            )),
        }
    }
}

impl PostgresStore {
    /// Opens a pool to `url` with the default options and returns a store over the table
    /// [`DEFAULT_TABLE`]. See [`PostgresStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder().connect(url).await
    }

    /// A store with the default options over the application's own `pool`.
    pub fn from_pool(pool: PgPool) -> Self {
        let sql = Statements::new(None, DEFAULT_TABLE);
        PostgresStore {
            pool,
            schema: None,
            table: DEFAULT_TABLE.to_string(),
            delete_batch_size: DEFAULT_DELETE_BATCH_SIZE,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            sql,
        }
    }

    /// A builder, starting from the defaults.
    pub fn builder() -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            schema: None,
            table: DEFAULT_TABLE.to_string(),
            delete_batch_size: DEFAULT_DELETE_BATCH_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }

    /// Creates the schema (if one is set), the table and its `expires_at` and `owner`
    /// indexes if they are missing, and adds the `owner` column to a table made by a release
    /// before owners. Idempotent, and safe to call from several processes at once. See the
    /// [module docs](self#schema) for the SQL.
    pub async fn migrate(&self) -> Result<()> {
        const OP: &str = "migrate";
        let err = |e| map_err(OP, None, e);
        // Look first: a table that is already there with its column and indexes needs no lock
        // and no DDL, so a role with only SELECT, INSERT, UPDATE and DELETE on it can start,
        // and a boot takes no SHARE lock that would stall writes.
        let state = self.catalog_state().await?;
        if state.table && state.owner_column && state.index && state.owner_index {
            return Ok(());
        }
        let (schema_ready, table_ready) = (state.schema, state.table);
        let mut tx = self.pool.begin().await.map_err(err)?;
        // Never queue behind a long transaction holding the table: fail instead.
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        if !table_ready {
            // (Even `IF NOT EXISTS` needs CREATE on the database, so only when missing.)
            if let Some(create_schema) = self.sql.create_schema.as_ref().filter(|_| !schema_ready) {
                sqlx::query(create_schema.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
            sqlx::query(self.sql.create_table.clone())
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        if !state.owner_column {
            // A table of a release before owners (or one such a release created since the
            // look): the store cannot work without the column.
            match sqlx::query(self.sql.add_owner.clone())
                .execute(&mut *tx)
                .await
            {
                Ok(_) => {}
                Err(e) if has_sql_state(&e, &["42501"]) => {
                    return Err(Error::Config {
                        message: format!(
                            "the session table {} lacks the `owner` column this release needs, \
                             and this role may not add it: run migrate() as the table's owner, \
                             or `ALTER TABLE {} ADD COLUMN owner text` and \
                             `CREATE INDEX {} ON {} (owner) WHERE owner IS NOT NULL`",
                            self.qualified(&self.table),
                            self.qualified(&self.table),
                            quote(&format!("{}{OWNER_INDEX_SUFFIX}", self.table)),
                            self.qualified(&self.table),
                        ),
                        source: Some(Box::new(e)),
                    });
                }
                Err(e) => return Err(err(e)),
            }
        }
        for create_index in [&self.sql.create_index, &self.sql.create_owner_index] {
            match sqlx::query(create_index.clone()).execute(&mut *tx).await {
                Ok(_) => {}
                // The table is usable without its indexes (delete_expired, sessions_of and
                // destroy_owner scan instead); a role that may not create them still starts.
                // (Such a role could not have altered the table either: nothing is lost.)
                Err(e) if table_ready && state.owner_column && has_sql_state(&e, &["42501"]) => {
                    return Ok(());
                }
                Err(e) => return Err(err(e)),
            }
        }
        tx.commit().await.map_err(err)
    }

    /// `"<schema>"."<name>"`, or `"<name>"` without a schema.
    fn qualified(&self, name: &str) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(name)),
            None => quote(name),
        }
    }

    /// What of the store's schema is there, read from the catalog (no lock, no privilege
    /// beyond connecting).
    async fn catalog_state(&self) -> Result<CatalogState> {
        let row = sqlx::query(
            "SELECT \
             (SELECT count(*) FROM pg_attribute \
              WHERE attrelid = to_regclass($1) AND NOT attisdropped \
              AND attname IN ('id', 'data', 'expires_at', 'version')) = 4, \
             EXISTS (SELECT 1 FROM pg_attribute \
              WHERE attrelid = to_regclass($1) AND NOT attisdropped AND attname = 'owner'), \
             to_regclass($2) IS NOT NULL, \
             to_regclass($4) IS NOT NULL, \
             $3::text IS NULL OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $3)",
        )
        .bind(self.qualified(&self.table))
        .bind(self.qualified(&format!("{}{INDEX_SUFFIX}", self.table)))
        .bind(self.schema.as_deref())
        .bind(self.qualified(&format!("{}{OWNER_INDEX_SUFFIX}", self.table)))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_err("migrate", None, e))?;
        let get = |n: usize| -> Result<bool> {
            row.try_get(n)
                .map_err(|e| Error::backend("migrate", None, e))
        };
        Ok(CatalogState {
            table: get(0)?,
            owner_column: get(1)?,
            index: get(2)?,
            owner_index: get(3)?,
            schema: get(4)?,
        })
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema, if one was set.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The table name (unquoted).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// How many rows one batch of `delete_expired` removes at most.
    pub fn delete_batch_size(&self) -> u32 {
        self.delete_batch_size
    }

    /// Runs one batch of [`delete_expired`](SessionStore::delete_expired): removes at most
    /// [`delete_batch_size`](Self::delete_batch_size) expired sessions in one statement and
    /// returns how many it removed.
    pub async fn delete_expired_batch(&self) -> Result<u64> {
        self.delete_batch_at(now_millis()).await
    }

    async fn delete_batch_at(&self, now: i64) -> Result<u64> {
        let done = sqlx::query(self.sql.delete_expired_batch.clone())
            .bind(clamp(now))
            .bind(i64::from(self.delete_batch_size))
            .execute(&self.pool)
            .await
            .map_err(|e| map_err("delete_expired", None, e))?;
        Ok(done.rows_affected())
    }

    /// A pooled connection. Operations read the clock only once they hold one, so a long
    /// wait for a connection never makes them decide on a stale "now" (and return, touch or
    /// revive a session that expired meanwhile).
    async fn conn(
        &self,
        op: &'static str,
        id: Option<&SessionId>,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        self.pool.acquire().await.map_err(|e| map_err(op, id, e))
    }

    async fn live_exists(
        &self,
        conn: &mut PgConnection,
        op: &'static str,
        id: &SessionId,
        now: i64,
    ) -> Result<bool> {
        let row = retry!(conn => e:
            sqlx::query(self.sql.live_exists.clone())
                .bind(id.as_str())
                .bind(clamp(now))
                .fetch_one(e)
        )
        .map_err(|e| map_err(op, Some(id), e))?;
        row.try_get::<bool, _>(0)
            .map_err(|e| Error::backend(op, Some(id), e))
    }

    /// The `create` statement: inserts `session` at `version` if no live session holds `id`.
    /// Returns whether it did. The session's expiry must be in the future.
    async fn insert_if_absent(
        &self,
        conn: &mut PgConnection,
        op: &'static str,
        id: &SessionId,
        session: &Session,
        version: u64,
        now: i64,
    ) -> Result<bool> {
        let data = encode_data(id, session)?;
        let done = retry!(conn => e:
            sqlx::query(self.sql.create.clone())
                .bind(id.as_str())
                .bind(data.as_str())
                .bind(clamp(session.expires_at_millis()))
                .bind(clamp(now))
                .bind(db_version(version))
                .bind(session.owner().map(Owner::as_str))
                .execute(e)
        )
        .map_err(|e| map_write_err(op, id, e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_if_expired(
        &self,
        conn: &mut PgConnection,
        op: &'static str,
        id: &SessionId,
        now: i64,
    ) -> Result<()> {
        retry!(conn => e:
            sqlx::query(self.sql.delete_if_expired_or_absent.clone())
                .bind(id.as_str())
                .bind(clamp(now))
                .execute(e)
        )
        .map_err(|e| map_err(op, Some(id), e))?;
        Ok(())
    }
}

/// What [`PostgresStore::migrate`] found in the catalog.
struct CatalogState {
    /// The schema exists, or none is set.
    schema: bool,
    /// The table exists with `id`, `data`, `expires_at` and `version`.
    table: bool,
    /// The table has `owner`.
    owner_column: bool,
    /// The expiry index exists.
    index: bool,
    /// The owner index exists.
    owner_index: bool,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("delete_batch_size", &self.delete_batch_size)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Statements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Statements(..)")
    }
}

/// `ms` clamped to what the table stores. See [`MIN_EXPIRY_MILLIS`], [`MAX_EXPIRY_MILLIS`].
fn clamp(ms: i64) -> i64 {
    ms.clamp(MIN_EXPIRY_MILLIS, MAX_EXPIRY_MILLIS)
}

fn encode_data(id: &SessionId, session: &Session) -> Result<String> {
    crate::session::check_nesting(id, session.data())?;
    check_jsonb_floats(id, session.data())?;
    serde_json::to_string(session.data()).map_err(|err| Error::encode(id, err))
}

/// Refuses floats that `jsonb` would give back as integers, so that what is stored always
/// reads back exactly. serde_json writes large whole floats without a decimal point (`1e16`);
/// `jsonb` keeps them as the integer `10000000000000000`, which would read back as an integer,
/// not a float, whenever it fits in `i64` or `u64` (whole floats from 1e16 up to 2^64 in
/// magnitude).
fn check_jsonb_floats(id: &SessionId, data: &Map<String, Value>) -> Result<()> {
    let mut stack: Vec<&Value> = data.values().collect();
    while let Some(value) = stack.pop() {
        match value {
            Value::Number(n) if n.is_f64() => {
                // jsonb keeps a number as `numeric`, printed without exponent: a whole
                // float of 1e16 or more (`1e16`, `1.5e16`) comes back as an integer, which
                // reads back as i64/u64 when it fits. (Whole floats under 1e16 are written
                // by serde_json as `123.0`, which jsonb keeps.)
                let f = n.as_f64().unwrap_or(0.0);
                let integral = f.is_finite() && f.fract() == 0.0;
                let fits = (i64::MIN as f64..u64::MAX as f64).contains(&f);
                if integral && fits && f.abs() >= 1e16 {
                    return Err(Error::encode(
                        id,
                        "the data holds a whole-number float of 1e16 or more that Postgres' jsonb \
                         would give back as an integer; store it as an integer or a string",
                    ));
                }
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    Ok(())
}

/// A version as a `bigint`. Every version a store assigns is at most [`MAX_VERSION`], far
/// below `i64::MAX`.
fn db_version(version: u64) -> i64 {
    i64::try_from(version.min(MAX_VERSION)).unwrap_or(i64::MAX)
}

fn to_version(op: &'static str, id: &SessionId, version: i64) -> Result<u64> {
    u64::try_from(version).map_err(|err| Error::backend(op, Some(id), err))
}

fn decode_row(id: &SessionId, row: &PgRow) -> Result<Session> {
    let data: String = row.try_get(0).map_err(|e| Error::decode(id, e))?;
    let expires_at: i64 = row.try_get(1).map_err(|e| Error::decode(id, e))?;
    let version: i64 = row.try_get(2).map_err(|e| Error::decode(id, e))?;
    let owner: Option<String> = row.try_get(3).map_err(|e| Error::decode(id, e))?;
    let owner = owner
        .map(Owner::new)
        .transpose()
        .map_err(|e| Error::decode(id, e))?;
    Ok(decode_parts(id, &data, expires_at, version)?.with_owner(owner))
}

/// An entry of `sessions_of` from its row (`id, <expiry>, version[, data]`); a row that is
/// not a valid session is a decode error naming it.
fn decode_listed(row: &PgRow, with_data: bool) -> Result<OwnedSession> {
    let raw: String = row
        .try_get(0)
        .map_err(|e| Error::backend("sessions_of", None, e))?;
    let id = SessionId::new(raw.as_str()).map_err(|_| Error::Decode {
        id: IdHint::from_raw(&raw),
        source: "the id column holds no valid session id".into(),
    })?;
    let expires_at: i64 = row.try_get(1).map_err(|e| Error::decode(&id, e))?;
    let version: i64 = row.try_get(2).map_err(|e| Error::decode(&id, e))?;
    let data: Option<String> = match with_data {
        true => Some(row.try_get(3).map_err(|e| Error::decode(&id, e))?),
        false => None,
    };
    let session = decode_parts(&id, data.as_deref().unwrap_or("{}"), expires_at, version)?;
    Ok(OwnedSession::of(id, session, with_data))
}

/// A session from the text of its `data` column (as `jsonb` prints it), its expiry in
/// milliseconds and its version.
fn decode_parts(id: &SessionId, data: &str, expires_at: i64, version: i64) -> Result<Session> {
    let data: Map<String, Value> =
        serde_json::from_str(&respell_long_integers(data)).map_err(|e| Error::decode(id, e))?;
    let version = u64::try_from(version).map_err(|e| Error::decode(id, e))?;
    if version == 0 {
        return Err(Error::decode(id, "the stored version is 0"));
    }
    Ok(Session::from_parts(data, expires_at, version))
}

/// The row decoder, for the fuzz target in `fuzz/` (built with `--cfg fuzzing` only).
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn __fuzz_decode(data: &str, expires_at: i64, version: i64) -> Result<Session> {
    let id = SessionId::new("fuzzed").expect("a valid id");
    decode_parts(&id, data, expires_at, version)
}

/// `jsonb` prints every number in plain decimal notation, so a float such as `1e300` comes
/// back as a 301-digit integer, which `serde_json` reads less precisely than the exponent form
/// it wrote (and can even overflow to "number out of range" near `f64::MAX`). This rewrites
/// each integer token that does not fit `i64`/`u64` (so it would become a float anyway) and
/// ends in zeros into `<digits>e<zeros>`, which `serde_json` parses exactly as it parses its
/// own output. Strings are skipped; nothing else changes.
fn respell_long_integers(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    let mut in_string = false;
    while let Some(&b) = bytes.get(i) {
        if in_string {
            match b {
                b'\\' => i += 2,
                b'"' => {
                    in_string = false;
                    i += 1;
                }
                _ => i += 1,
            }
        } else if b == b'"' {
            in_string = true;
            i += 1;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while bytes
                .get(i)
                .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
            {
                i += 1;
            }
            if let Some(respelled) = text.get(start..i).and_then(respell) {
                let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(text.get(copied..start).unwrap_or_default());
                out.push_str(&respelled);
                copied = i;
            }
        } else {
            i += 1;
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(text.get(copied..).unwrap_or_default());
            Cow::Owned(out)
        }
    }
}

/// `<digits>e<zeros>` for an integer token too large for `i64`/`u64` that ends in zeros.
fn respell(token: &str) -> Option<String> {
    let (sign, digits) = match token.strip_prefix('-') {
        Some(digits) => ("-", digits),
        None => ("", token),
    };
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || token.parse::<i64>().is_ok()
        || token.parse::<u64>().is_ok()
    {
        return None;
    }
    let significant = digits.trim_end_matches('0');
    let zeros = digits.len() - significant.len();
    if zeros == 0 || significant.is_empty() {
        return None;
    }
    Some(format!("{sign}{significant}e{zeros}"))
}

/// Classifies an sqlx error: connection trouble is transient, the rest is a backend error.
fn map_err(op: &'static str, id: Option<&SessionId>, err: sqlx::Error) -> Error {
    // An untrusted or misnamed certificate, a refused client certificate, no common TLS
    // version (sqlx reports them as I/O errors): retrying gets the same answer, so this is
    // not transient.
    #[cfg(feature = "postgres-tls")]
    let err = match crate::stores::shared::tls::Refused::of(
        err,
        "to trust a private CA: sslrootcert=/path/ca.pem in the URL, with sslmode=verify-full",
        "sslcert=/path/client.pem&sslkey=/path/client.key in the URL",
    ) {
        Ok(refused) => return Error::backend(op, id, refused),
        Err(err) => err,
    };
    if let sqlx::Error::Tls(tls) = &err
        && !cfg!(feature = "postgres-tls")
        && tls.to_string().contains("without TLS support")
    {
        return Error::Config {
            message: "the Postgres URL asks for TLS (sslmode=require, verify-ca or \
                      verify-full) and needs the `postgres-tls` feature of session-stores: add \
                      features = [\"postgres-tls\"] to its line in Cargo.toml (or pass \
                      --features postgres-tls to cargo)"
                .into(),
            source: Some(Box::new(err)),
        };
    }
    match &err {
        sqlx::Error::PoolTimedOut => Error::Timeout {
            operation: op,
            id: id.map(IdHint::from),
            what: "a pooled connection",
            source: Some(Box::new(err)),
        },
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            Error::unavailable(op, id, err)
        }
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300") {
                Error::unavailable(op, id, err)
            } else if code == "57014" {
                // query_canceled: `statement_timeout` (or a cancel request) stopped it.
                Error::Timeout {
                    operation: op,
                    id: id.map(IdHint::from),
                    what: "the statement (statement_timeout)",
                    source: Some(Box::new(err)),
                }
            } else if matches!(code, "40001" | "40P01") {
                // serialization_failure, deadlock_detected: the same call may succeed.
                Error::unavailable(op, id, err)
            } else {
                Error::backend(op, id, err)
            }
        }
        _ => Error::backend(op, id, err),
    }
}

/// Like [`map_err`], but for statements that carry session data: a value Postgres cannot
/// store in `jsonb` (such as U+0000) is an encode error for the session.
fn map_write_err(op: &'static str, id: &SessionId, err: sqlx::Error) -> Error {
    let unstorable = err
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| matches!(&*code, "22P05" | "22P02"));
    if unstorable {
        Error::encode(id, err)
    } else {
        map_err(op, Some(id), err)
    }
}

/// Whether `err` is a database error whose SQLSTATE is one of `codes`.
fn has_sql_state(err: &sqlx::Error, codes: &[&str]) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| codes.contains(&code.as_ref()))
}

/// serialization_failure or deadlock_detected.
fn is_serialization_failure(err: &sqlx::Error) -> bool {
    has_sql_state(err, &["40001", "40P01"])
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        within(self.operation_timeout, "get", Some(id), async {
            let mut conn = self.conn("get", Some(id)).await?;
            let row = retry!(conn => e:
                sqlx::query(self.sql.get.clone())
                    .bind(id.as_str())
                    .bind(clamp(now_millis()))
                    .fetch_optional(e)
            )
            .map_err(|e| map_err("get", Some(id), e))?;
            let session = row.map(|row| decode_row(id, &row)).transpose()?;
            // The clock again, now that the row is here: a session that expired while the
            // reply travelled is not returned.
            Ok(session.filter(|s| !s.is_expired_at(now_millis())))
        })
        .await
    }

    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        const OP: &str = "set";
        within(self.operation_timeout, OP, Some(id), async {
            let mut conn = self.conn(OP, Some(id)).await?;
            let now = now_millis();
            if session.is_expired_at(now) {
                self.destroy_on(&mut conn, id).await?;
                return Ok(0);
            }
            let data = encode_data(id, session)?;
            let version: i64 = retry!(conn => e:
                sqlx::query_scalar(self.sql.set.clone())
                    .bind(id.as_str())
                    .bind(data.as_str())
                    .bind(clamp(session.expires_at_millis()))
                    .bind(clamp(now))
                    .bind(db_version(fresh_version()))
                    .bind(session.owner().map(Owner::as_str))
                    .fetch_one(e)
            )
            .map_err(|e| map_write_err(OP, id, e))?;
            to_version(OP, id, version)
        })
        .await
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        within(self.operation_timeout, "destroy", Some(id), async {
            let mut conn = self.conn("destroy", Some(id)).await?;
            self.destroy_on(&mut conn, id).await
        })
        .await
    }

    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        within(self.operation_timeout, "touch", Some(id), async {
            let mut conn = self.conn("touch", Some(id)).await?;
            let now = now_millis();
            let expires_at = to_millis(expires_at);
            let done = if expires_at <= now {
                retry!(conn => e:
                    sqlx::query(self.sql.touch_delete.clone())
                        .bind(id.as_str())
                        .bind(clamp(now))
                        .execute(e)
                )
            } else {
                retry!(conn => e:
                    sqlx::query(self.sql.touch.clone())
                        .bind(id.as_str())
                        .bind(clamp(expires_at))
                        .bind(clamp(now))
                        .execute(e)
                )
            }
            .map_err(|e| map_err("touch", Some(id), e))?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        const OP: &str = "create";
        within(self.operation_timeout, OP, Some(id), async {
            let mut conn = self.conn(OP, Some(id)).await?;
            let now = now_millis();
            if session.is_expired_at(now) {
                // Nothing is stored, but the answer still says whether the id was free.
                if self.live_exists(&mut conn, OP, id, now).await? {
                    return Ok(false);
                }
                self.delete_if_expired(&mut conn, OP, id, now).await?;
                return Ok(true);
            }
            self.insert_if_absent(&mut conn, OP, id, session, fresh_version(), now)
                .await
        })
        .await
    }

    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected_version: u64,
    ) -> Result<u64> {
        const OP: &str = "set_if_version";
        within(self.operation_timeout, OP, Some(id), async {
            let mut conn = self.conn(OP, Some(id)).await?;
            let now = now_millis();
            let expired = session.is_expired_at(now);
            if expected_version == 0 {
                if expired {
                    if self.live_exists(&mut conn, OP, id, now).await? {
                        return Err(Error::conflict(id, 0));
                    }
                    self.delete_if_expired(&mut conn, OP, id, now).await?;
                    return Ok(0);
                }
                let fresh = next_version(0);
                return if self
                    .insert_if_absent(&mut conn, OP, id, session, fresh, now)
                    .await?
                {
                    Ok(fresh)
                } else {
                    Err(Error::conflict(id, 0))
                };
            }
            // Stored versions are `bigint`: a larger expected version can never match.
            let Ok(expected) = i64::try_from(expected_version) else {
                return Err(Error::conflict(id, expected_version));
            };
            // A serialization failure here (a caller's pool at `repeatable read` or above)
            // means another transaction wrote the row first: the expected version is stale,
            // which is a conflict, not an outage.
            let conflict_or =
                |e: sqlx::Error, map: fn(&'static str, &SessionId, sqlx::Error) -> Error| {
                    if is_serialization_failure(&e) {
                        Error::conflict(id, expected_version)
                    } else {
                        map(OP, id, e)
                    }
                };
            if expired {
                let done = sqlx::query(self.sql.delete_if_version.clone())
                    .bind(id.as_str())
                    .bind(expected)
                    .bind(clamp(now))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| conflict_or(e, |op, id, e| map_err(op, Some(id), e)))?;
                return if done.rows_affected() == 1 {
                    Ok(0)
                } else {
                    Err(Error::conflict(id, expected_version))
                };
            }
            let data = encode_data(id, session)?;
            let version: Option<i64> = sqlx::query_scalar(self.sql.update_if_version.clone())
                .bind(id.as_str())
                .bind(data)
                .bind(clamp(session.expires_at_millis()))
                .bind(expected)
                .bind(clamp(now))
                // `expected + 1`, or a fresh version if `expected` is the largest (or above).
                .bind(db_version(next_version(expected_version)))
                .bind(session.owner().map(Owner::as_str))
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| conflict_or(e, map_write_err))?;
            match version {
                Some(version) => to_version(OP, id, version),
                None => Err(Error::conflict(id, expected_version)),
            }
        })
        .await
    }

    async fn len(&self) -> Result<u64> {
        within(self.operation_timeout, "len", None, async {
            let mut conn = self.conn("len", None).await?;
            let count: i64 = retry!(conn => e:
                sqlx::query_scalar(self.sql.len.clone())
                    .bind(clamp(now_millis()))
                    .fetch_one(e)
            )
            .map_err(|e| map_err("len", None, e))?;
            // count(*) is never negative.
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    async fn clear(&self) -> Result<()> {
        within(self.operation_timeout, "clear", None, async {
            let mut conn = self.conn("clear", None).await?;
            retry!(conn => e: sqlx::query(self.sql.clear.clone()).execute(e))
                .map_err(|e| map_err("clear", None, e))?;
            Ok(())
        })
        .await
    }

    /// Removes expired rows in batches of [`delete_batch_size`](Self::delete_batch_size); the
    /// operation timeout bounds each batch, not the whole sweep, so a large backlog is
    /// worked off batch by batch.
    async fn delete_expired(&self) -> Result<u64> {
        let now = now_millis();
        let mut total = 0u64;
        loop {
            let batch = self.delete_batch_at(now);
            let removed = within(self.operation_timeout, "delete_expired", None, batch).await?;
            total += removed;
            if removed < u64::from(self.delete_batch_size) {
                return Ok(total);
            }
        }
    }

    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        const OP: &str = "sessions_of";
        within(self.operation_timeout, OP, None, async {
            let mut conn = self.conn(OP, None).await?;
            let statement = if with_data {
                &self.sql.sessions_of_with_data
            } else {
                &self.sql.sessions_of
            };
            let rows = retry!(conn => e:
                sqlx::query(statement.clone())
                    .bind(owner.as_str())
                    .bind(clamp(now_millis()))
                    .fetch_all(e)
            )
            .map_err(|e| map_err(OP, None, e))?;
            // The clock again, now that the rows are here, as `get` does.
            let now = now_millis();
            let mut listed = Vec::with_capacity(rows.len());
            for row in &rows {
                let entry = decode_listed(row, with_data)?;
                if entry.expires_at_millis > now {
                    listed.push(entry);
                }
            }
            Ok(listed)
        })
        .await
    }

    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        const OP: &str = "destroy_owner";
        within(self.operation_timeout, OP, None, async {
            let mut conn = self.conn(OP, None).await?;
            let ended: i64 = retry!(conn => e:
                sqlx::query_scalar(self.sql.destroy_owner.clone())
                    .bind(owner.as_str())
                    .bind(except.map(SessionId::as_str))
                    .bind(clamp(now_millis()))
                    .fetch_one(e)
            )
            .map_err(|e| map_err(OP, None, e))?;
            // count(*) is never negative.
            Ok(u64::try_from(ended).unwrap_or(0))
        })
        .await
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        const OP: &str = "scan";
        let after = cursor.map(|c| c.keyset_id("PostgresStore")).transpose()?;
        let limit = limit.clamp(1, MAX_SCAN_LIMIT);
        let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
        within(self.operation_timeout, OP, None, async {
            let mut conn = self.conn(OP, None).await?;
            let rows = match &after {
                None => retry!(conn => e:
                    sqlx::query(self.sql.scan_first.clone())
                        .bind(clamp(now_millis()))
                        .bind(sql_limit)
                        .fetch_all(e)
                ),
                Some(after) => retry!(conn => e:
                    sqlx::query(self.sql.scan_after.clone())
                        .bind(after.as_str())
                        .bind(clamp(now_millis()))
                        .bind(sql_limit)
                        .fetch_all(e)
                ),
            }
            .map_err(|e| map_err(OP, None, e))?;
            // The clock again, now that the rows are here, as `get` does. A row dropped here
            // still moves the cursor on, so the page may come out short (or empty) while the
            // scan goes on.
            let now = now_millis();
            let mut sessions = Vec::with_capacity(rows.len());
            let mut last = None;
            for row in &rows {
                let id = scanned_id(row)?;
                let session = decode_row(&id, row)?;
                if !session.is_expired_at(now) {
                    sessions.push((id.clone(), session));
                }
                last = Some(id);
            }
            // Fewer rows than asked for: the table had no more.
            let next = match rows.len() < limit {
                true => None,
                false => last.map(|id| ScanCursor::after_id(&id)),
            };
            Ok(ScanPage::new(sessions, next))
        })
        .await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new().with_owners(true).with_scan(true)
    }
}

/// The id of a scanned row (its fifth column); one that is no valid session id is a decode
/// error naming what it holds.
fn scanned_id(row: &PgRow) -> Result<SessionId> {
    let raw: String = row
        .try_get(4)
        .map_err(|e| Error::backend("scan", None, e))?;
    SessionId::new(raw.as_str()).map_err(|_| Error::Decode {
        id: IdHint::from_raw(&raw),
        source: "the id column holds no valid session id".into(),
    })
}

impl PostgresStore {
    async fn destroy_on(&self, conn: &mut PgConnection, id: &SessionId) -> Result<()> {
        retry!(conn => e:
            sqlx::query(self.sql.delete.clone())
                .bind(id.as_str())
                .execute(e)
        )
        .map_err(|e| map_err("destroy", Some(id), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated() {
        for good in ["sessions", "_x", "Sessions_2", &"t".repeat(MAX_TABLE_LEN)] {
            assert!(check_ident("table", good, MAX_TABLE_LEN).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "a;drop table x",
            "ünï",
            "a.b",
            &"t".repeat(MAX_TABLE_LEN + 1),
        ] {
            let err = check_ident("table", bad, MAX_TABLE_LEN).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{bad}");
        }
        assert!(check_ident("schema", &"s".repeat(63), MAX_IDENT_LEN).is_ok());
        assert!(check_ident("schema", &"s".repeat(64), MAX_IDENT_LEN).is_err());
    }

    #[test]
    fn long_integers_are_respelled_outside_strings_only() {
        let big = format!("17976931348623157{}", "0".repeat(292));
        let text = format!(
            r#"{{"a": {big}, "b": -{big}, "c": "{big}", "d": 18446744073709551615, "e": 0.5, "f": [1, {big}], "g": "q\"{big}"}}"#
        );
        let respelled = respell_long_integers(&text);
        let expected = r#"{"a": 17976931348623157e292, "b": -17976931348623157e292, "c": "BIG", "d": 18446744073709551615, "e": 0.5, "f": [1, 17976931348623157e292], "g": "q\"BIG"}"#
            .replace("BIG", &big);
        assert_eq!(respelled, expected);
        let value: serde_json::Value = serde_json::from_str(&respelled).unwrap();
        assert_eq!(value["a"], serde_json::json!(f64::MAX));
        assert_eq!(value["b"], serde_json::json!(f64::MIN));
        assert_eq!(value["d"], serde_json::json!(u64::MAX));
        // Text without long integers is not copied.
        assert!(matches!(
            respell_long_integers(r#"{"x": [1, -2, 3.5, 1e300]}"#),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn expiries_are_clamped_to_the_stored_range() {
        assert_eq!(clamp(i64::MAX), MAX_EXPIRY_MILLIS);
        assert_eq!(clamp(i64::MIN), MIN_EXPIRY_MILLIS);
        assert_eq!(clamp(1_700_000_000_123), 1_700_000_000_123);
    }

    #[test]
    fn statements_quote_names() {
        let sql = Statements::new(Some("auth"), "Sessions");
        assert!(sql.get.as_str().contains("FROM \"auth\".\"Sessions\""));
        assert!(
            sql.create_index
                .as_str()
                .contains("\"Sessions_expires_at_idx\" ON \"auth\".\"Sessions\"")
        );
        let sql = Statements::new(None, "sessions");
        assert!(sql.create_schema.is_none());
        assert!(sql.clear.as_str().ends_with("DELETE FROM \"sessions\""));
    }

    /// Without `postgres-tls` (and no TLS in sqlx from elsewhere), a URL that requires TLS
    /// is a configuration error naming the feature, not sqlx's "built without TLS support".
    /// sqlx finds that out once the TCP connection is open, so a bare listener stands in for
    /// the server (nothing is sent to it).
    #[cfg(not(feature = "postgres-tls"))]
    #[tokio::test]
    async fn tls_without_the_feature_names_it() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = format!("postgres://u@127.0.0.1:{port}/db?sslmode={mode}");
            let err = PostgresStore::builder()
                .acquire_timeout(Duration::from_secs(10))
                .connect(&url)
                .await
                .map(drop)
                .unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{mode}: {err}");
            assert!(err.to_string().contains("`postgres-tls` feature"), "{err}");
            let err = crate::connect(&url).await.map(drop).unwrap_err();
            assert!(err.to_string().contains("`postgres-tls` feature"), "{err}");
        }
    }
}
