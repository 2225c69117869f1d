//! The builder: the options, opening the pool (URL parsing, session settings, the TLS file
//! checks) and the store's constructors.

use std::time::Duration;

use sqlx::MySqlPool;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use super::MySqlStore;
use super::error::{error_number, map_err};
use super::statements::{MAX_TABLE_LEN, Statements, check_ident};
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

/// How long a pooled connection of the store's own pool may sit idle before it is pinged on
/// checkout. A busy store's connections are never idle that long, so each operation is one
/// round trip; a connection that went stale while the pool was quiet (a restarted server, a
/// dropped NAT mapping, `wait_timeout`) is found by the ping and replaced instead of
/// failing an operation.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Builds a [`MySqlStore`]. See the [module docs](super#options) for the options.
#[derive(Debug, Clone)]
pub struct MySqlStoreBuilder {
    table: String,
    delete_batch_size: u32,
    max_connections: u32,
    acquire_timeout: Duration,
    operation_timeout: Duration,
}

impl MySqlStoreBuilder {
    /// The table name, in the connection's database. Default: [`DEFAULT_TABLE`].
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

    /// A store over `pool`, the application's own pool (its connections keep the settings
    /// the application gave them: see [Connections](super#connections)).
    ///
    /// Fails with [`Error::Config`] if the table name is invalid.
    pub fn build(self, pool: MySqlPool) -> Result<MySqlStore> {
        self.validate()?;
        let sql = Statements::new(&self.table);
        Ok(MySqlStore {
            pool,
            table: self.table,
            delete_batch_size: self.delete_batch_size,
            operation_timeout: self.operation_timeout,
            sql,
        })
    }

    fn validate(&self) -> Result<()> {
        check_ident("table", &self.table, MAX_TABLE_LEN)
    }

    /// Opens a pool to `url` (a `mysql://` URL, see sqlx's `MySqlConnectOptions`; for TLS,
    /// its `ssl-mode`, `ssl-ca`, `ssl-cert` and `ssl-key`: see [TLS](super#tls)) and checks
    /// that it can connect, then returns the store over it.
    ///
    /// Fails with [`Error::Config`] for an invalid URL or name, an unreadable or malformed
    /// TLS certificate or key file, or TLS asked for without the `mysql-tls` feature; with a
    /// transient error when the server cannot be reached within the acquire timeout; and
    /// with [`Error::Backend`] when the server refuses the connection (unknown database, bad
    /// password, a refused TLS handshake, ...).
    pub async fn connect(self, url: &str) -> Result<MySqlStore> {
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
    pub fn connect_lazy(self, url: &str) -> Result<MySqlStore> {
        require_tokio()?;
        self.validate()?;
        let connect_options = parse_url(url)?;
        let pool = self.pool_options().connect_lazy_with(connect_options);
        self.build(pool)
    }

    /// The store's own pools: each new connection gets the session settings of
    /// [`session_settings`]; a pooled connection is checked with a ping only when it has
    /// been idle for [`PING_IF_IDLE_FOR`] (sqlx's default pings on every checkout, which
    /// doubles the round trips of every operation).
    fn pool_options(&self) -> MySqlPoolOptions {
        let settings = session_settings(self.operation_timeout);
        MySqlPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                let settings = settings.clone();
                Box::pin(async move {
                    for (statement, optional) in settings {
                        match sqlx::query(sqlx::AssertSqlSafe(statement))
                            .execute(&mut *conn)
                            .await
                        {
                            Ok(_) => {}
                            // A variable this server does not have (MariaDB's
                            // `max_statement_time` on MySQL, MySQL's `max_execution_time` on
                            // MariaDB): the other one serves.
                            Err(err) if optional && error_number(&err) == Some(1193) => {}
                            Err(err) => return Err(err),
                        }
                    }
                    Ok(())
                })
            })
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

/// The settings each connection of the store's own pool starts with, and whether a server
/// may lack the variable:
/// - `READ COMMITTED`: every operation is one statement in autocommit mode whose atomicity
///   does not depend on the level, and InnoDB's default `REPEATABLE READ` takes gap locks
///   that make concurrent writes of neighbouring ids deadlock more often;
/// - `innodb_lock_wait_timeout` (whole seconds, at least 1) and the server's statement time
///   limit (`max_statement_time` in seconds on MariaDB, `max_execution_time` in milliseconds
///   on MySQL, where it bounds `SELECT`s only) set to the operation timeout, so a statement
///   whose caller gave up (its deadline fired while it waited for a lock) is stopped by the
///   server rather than holding its connection, and its pool slot, until the lock is freed.
pub(super) fn session_settings(operation_timeout: Duration) -> Vec<(String, bool)> {
    let seconds = operation_timeout.as_secs_f64().max(0.001);
    let lock_wait = operation_timeout
        .as_millis()
        .div_ceil(1000)
        .clamp(1, 1_073_741_824);
    let millis = operation_timeout.as_millis().clamp(1, u128::from(u32::MAX));
    vec![
        (
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".into(),
            false,
        ),
        (
            format!("SET SESSION innodb_lock_wait_timeout = {lock_wait}"),
            false,
        ),
        (
            format!("SET SESSION max_statement_time = {seconds:.3}"),
            true,
        ),
        (format!("SET SESSION max_execution_time = {millis}"), true),
    ]
}

fn require_tokio() -> Result<()> {
    tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|err| Error::Config {
            message: "MySqlStore needs a tokio runtime to open its pool".into(),
            source: Some(Box::new(err)),
        })
}

/// Parses `url`. With `mysql-tls`, the certificate and key files the connections will read
/// are checked here too (see [`check_tls_files`]), and a URL that names a CA (`ssl-ca`)
/// with `ssl-mode` `PREFERRED` (the default) or `REQUIRED` verifies the server's chain
/// against it (`VERIFY_CA`), as MySQL's own clients do: sqlx alone would accept any
/// certificate, so a URL that names a CA would trust a server that CA never signed.
fn parse_url(url: &str) -> Result<MySqlConnectOptions> {
    #[cfg_attr(not(feature = "mysql-tls"), allow(unused_mut))]
    let mut options: MySqlConnectOptions =
        url.parse().map_err(|err: sqlx::Error| Error::Config {
            message: "the MySQL URL is invalid".into(),
            source: Some(Box::new(err)),
        })?;
    #[cfg(feature = "mysql-tls")]
    {
        use sqlx::mysql::MySqlSslMode;
        if !matches!(options.get_ssl_mode(), MySqlSslMode::Disabled) {
            let has_root = check_tls_files(url)?;
            if has_root
                && matches!(
                    options.get_ssl_mode(),
                    MySqlSslMode::Preferred | MySqlSslMode::Required
                )
            {
                options = options.ssl_mode(MySqlSslMode::VerifyCa);
            }
        }
    }
    Ok(options)
}

/// Reads and parses the CA certificate, client certificate and client key that the
/// connections will use (the URL's `ssl-ca`, `ssl-cert` and `ssl-key`), so that a missing,
/// unreadable or malformed file is an [`Error::Config`] naming its option when the store is
/// made. (sqlx reads them only while connecting, where a missing file would look like an
/// unreachable server.) Returns whether a root certificate was given.
#[cfg(feature = "mysql-tls")]
fn check_tls_files(url: &str) -> Result<bool> {
    use crate::stores::shared::tls::{self, form_decode};
    let (mut root, mut cert, mut key) = (None, None, None);
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name);
        let slot = match name.as_str() {
            "sslca" | "ssl-ca" => &mut root,
            "sslcert" | "ssl-cert" => &mut cert,
            "sslkey" | "ssl-key" => &mut key,
            _ => continue,
        };
        *slot = Some((name, form_decode(value)));
    }
    let read = |(option, value): (String, String)| -> Result<Vec<u8>> {
        std::fs::read(&value).map_err(|err| Error::Config {
            message: format!(
                "could not read the MySQL TLS file `{value}` (the URL option {option})"
            ),
            source: Some(Box::new(err)),
        })
    };
    let has_root = root.is_some();
    if let Some(root) = root {
        tls::certificates("the MySQL ssl-ca", &read(root)?)?;
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            tls::certificates("the MySQL ssl-cert", &read(cert)?)?;
            tls::check_private_key("the MySQL ssl-key", &read(key)?)?;
        }
        (None, None) => {}
        _ => {
            return Err(Error::config(
                "a MySQL client certificate (ssl-cert) needs its key (ssl-key), and the key \
                 its certificate",
            ));
        }
    }
    Ok(has_root)
}

impl MySqlStore {
    /// Opens a pool to `url` with the default options and returns a store over the table
    /// [`DEFAULT_TABLE`]. See [`MySqlStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder().connect(url).await
    }

    /// A store with the default options over the application's own `pool`.
    pub fn from_pool(pool: MySqlPool) -> Self {
        MySqlStore {
            pool,
            table: DEFAULT_TABLE.to_string(),
            delete_batch_size: DEFAULT_DELETE_BATCH_SIZE,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            sql: Statements::new(DEFAULT_TABLE),
        }
    }

    /// A builder, starting from the defaults.
    pub fn builder() -> MySqlStoreBuilder {
        MySqlStoreBuilder {
            table: DEFAULT_TABLE.to_string(),
            delete_batch_size: DEFAULT_DELETE_BATCH_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }
}
