//! The builder: the options, opening the pool (URL parsing, the TLS file checks) and the
//! store's constructors.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::PostgresStore;
use super::error::map_err;
use super::statements::{MAX_IDENT_LEN, MAX_TABLE_LEN, Statements, check_ident};
use crate::deadline::DEFAULT_OPERATION_TIMEOUT;
use crate::error::{Error, Result};
// Named by the docs only.
#[cfg(doc)]
use crate::store::SessionStore;

/// The default table name: `sessions`.
pub const DEFAULT_TABLE: &str = "sessions";

/// The default number of rows `delete_expired` removes per statement.
pub const DEFAULT_DELETE_BATCH_SIZE: u32 = 1000;

/// The default pool size of a pool the store opens.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The default acquire timeout of a pool the store opens.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a [`PostgresStore`]. See the [module docs](super#options) for the options.
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
    /// its `sslmode`, `sslrootcert`, `sslcert` and `sslkey`: see [TLS](super#tls)) and checks
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
        let connect_options = parse_url(url, self.operation_timeout)?;
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
        let connect_options = parse_url(url, self.operation_timeout)?;
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
/// Sets the connections' `statement_timeout` to `operation_timeout` too, so a statement
/// whose caller gave up (its deadline fired while it waited for a lock) is cancelled by the
/// server rather than holding its connection, and its pool slot, until the lock is freed.
/// A `statement_timeout` the URL sets itself (`options=-c statement_timeout=...`) is kept.
///
/// With `postgres-tls`, the certificate and key files the connections will read are checked
/// here too (see [`check_tls_files`]).
fn parse_url(url: &str, operation_timeout: Duration) -> Result<sqlx::postgres::PgConnectOptions> {
    #[cfg_attr(not(feature = "postgres-tls"), allow(unused_mut))]
    let mut options: sqlx::postgres::PgConnectOptions =
        url.parse().map_err(|err: sqlx::Error| Error::Config {
            message: "the Postgres URL is invalid".into(),
            source: Some(Box::new(err)),
        })?;
    #[cfg(feature = "postgres-tls")]
    if !matches!(
        options.get_ssl_mode(),
        sqlx::postgres::PgSslMode::Disable | sqlx::postgres::PgSslMode::Allow
    ) {
        let has_root = check_tls_files(url)?;
        // As libpq does: `require` with a root certificate verifies the server's chain
        // against it (`verify-ca`). sqlx alone would accept any certificate, so a URL that
        // names a CA would trust a server that CA never signed.
        if has_root && matches!(options.get_ssl_mode(), sqlx::postgres::PgSslMode::Require) {
            options = options.ssl_mode(sqlx::postgres::PgSslMode::VerifyCa);
        }
    }
    let options = options.options([("default_transaction_isolation", "read committed")]);
    // A URL that sets its own (`options=-c statement_timeout=...`) keeps it.
    let own_timeout = options
        .get_options()
        .is_some_and(|own| own.contains("statement_timeout"));
    Ok(match own_timeout {
        true => options,
        false => options.options([("statement_timeout", statement_timeout(operation_timeout))]),
    })
}

/// `statement_timeout` in milliseconds for an operation timeout: at least 1 (0 would turn it
/// off), at most Postgres' largest.
fn statement_timeout(operation_timeout: Duration) -> String {
    let millis = operation_timeout.as_millis().clamp(1, i32::MAX as u128);
    format!("{millis}")
}

/// Reads and parses the CA certificate, client certificate and client key that the
/// connections will use (the URL's `sslrootcert`, `sslcert` and `sslkey`, or else sqlx's
/// `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY`), so that a missing, unreadable or malformed
/// file is an [`Error::Config`] naming its option when the store is made. (sqlx reads them
/// only while connecting, where a missing file would look like an unreachable server.)
/// Returns whether a root certificate was given.
#[cfg(feature = "postgres-tls")]
fn check_tls_files(url: &str) -> Result<bool> {
    use crate::stores::shared::tls::{self, form_decode};
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
    let has_root = root.is_some();
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
    Ok(has_root)
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
}
