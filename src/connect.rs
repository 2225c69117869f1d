//! Picking a store at run time from a URL: [`connect`].
//!
//! An application that reads its session store from configuration (an environment variable
//! such as `SESSION_STORE_URL`) calls [`connect`] and gets a `Box<dyn SessionStore>`, which
//! is a [`SessionStore`] itself and plugs into both adapters. Each scheme needs its cargo
//! feature; a URL whose feature is off, or an unknown scheme, is an [`Error::Config`] that
//! names the feature to enable.
//!
//! | URL | store | feature |
//! |-----|-------|---------|
//! | `memory://` or `memory://?capacity=N` | [`MemoryStore`](crate::MemoryStore) with `N` sessions (default 100,000) | `memory` |
//! | `file:///abs/dir`, `file://rel/dir` | [`FileStore`](crate::FileStore) in that directory (created if missing) | `file` |
//! | `sqlite://path/to.db`, `sqlite:///abs/to.db`, `sqlite:path` | [`SqliteStore`](crate::SqliteStore) in that file (created if missing) | `sqlite` |
//! | `sqlite::memory:`, `sqlite://:memory:` | an in-memory [`SqliteStore`](crate::SqliteStore) | `sqlite` |
//! | `postgres://...`, `postgresql://...` | [`PostgresStore`](crate::PostgresStore); the table is created if missing ([`migrate`](crate::PostgresStore::migrate)) | `postgres` |
//! | `redis://...`, `rediss://...`, `redis+unix:///path` | [`RedisStore`](crate::RedisStore) on one server | `redis` (`rediss://`: `redis-tls`) |
//! | `redis+cluster://host1:7001,host2:7002` (`rediss+cluster://` for TLS; `user:pass@` before the first host applies to all) | [`RedisStore`](crate::RedisStore) on a Redis Cluster | `redis` (`rediss+cluster://`: `redis-tls`) |
//!
//! Query options (any other is an [`Error::Config`] naming the known ones, so a typo never
//! goes unnoticed):
//!
//! | scheme | this crate's options | the driver's options, passed on |
//! |---|---|---|
//! | `memory://` | `capacity` (a positive integer) | |
//! | `file://` | | |
//! | `sqlite:` | `table` (default `sessions`); `schema` may only be `main` (the file's own database) | |
//! | `postgres://` | `table`, `schema`, `migrate` (`true`, the default: create the table if it is missing; `false`: only use an existing one) | sqlx's: `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `host`, `hostaddr`, `port`, `dbname`, `user`, `password`, `application_name`, `options`, `statement-cache-capacity` (and their dashed spellings); `sslmode=require`, `verify-ca` and `verify-full` need the `postgres-tls` feature |
//! | `redis://`, `redis+cluster://` | `key_prefix` (default `session:`); with `rediss://` or `rediss+cluster://` (feature `redis-tls`): `tls_ca_file=/path/ca.pem` (trust this CA instead of the public roots), `tls_cert_file=` and `tls_key_file=` (a client certificate and its key, for `tls-auth-clients yes`), each a PEM file | redis-rs': `db`, `user`, `pass`, `protocol` |
//!
//! Paths and option values may be percent-encoded (`%20` for a space).
//!
//! Every scheme also takes the [security wrappers](crate::wrappers)' options, each naming an
//! environment variable that holds the keys (a key never goes in the URL, which ends up in
//! logs):
//!
//! | option | wraps the store in | feature |
//! |---|---|---|
//! | `hash_ids_key_env=VAR` | [`HashedIds`](crate::wrappers::hashed_ids::HashedIds), keyed with the 64 hexadecimal digits in `VAR` | `hashed-ids` |
//! | `encryption_keys_env=VAR` | [`Encrypted`](crate::wrappers::encrypted::Encrypted), with the comma-separated key ring in `VAR` (current key first) | `encryption` |
//!
//! With both, the store is `HashedIds<Encrypted<_>>`. A variable that is unset or does not
//! hold valid keys is an [`Error::Config`] naming the variable (never its value), raised
//! before anything is opened.
//!
//! Every store is opened with its defaults otherwise; use the store's builder directly for
//! the other options. [`StoreKind::of`] tells which store a URL selects without connecting,
//! and [`redact`] gives a URL with its password removed, for logs and status pages.
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_stores::Result<()> {
//! use session_stores::{connect, StoreKind, SessionStore};
//!
//! // In an application: std::env::var("SESSION_STORE_URL").
//! let store = connect("memory://?capacity=1000").await?;
//! assert_eq!(store.len().await?, 0);
//! assert_eq!(StoreKind::of("redis+cluster://a:7001,b:7002")?, StoreKind::RedisCluster);
//!
//! let err = connect("mongodb://localhost").await.err().unwrap();
//! assert!(err.to_string().contains("unknown session store URL scheme `mongodb`"));
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```

use std::fmt;

use crate::error::{Error, Result};
use crate::store::SessionStore;

/// The kind of store a URL selects. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreKind {
    /// `memory://`.
    Memory,
    /// `file://`.
    File,
    /// `sqlite:`.
    Sqlite,
    /// `postgres://`, `postgresql://`.
    Postgres,
    /// `redis://`, `rediss://`, `redis+unix://`.
    Redis,
    /// `redis+cluster://`, `rediss+cluster://`.
    RedisCluster,
}

impl StoreKind {
    /// The kind of store `url` selects, from its scheme alone (no I/O). Fails with
    /// [`Error::Config`] for an unknown scheme; this does not check that the feature is on.
    pub fn of(url: &str) -> Result<StoreKind> {
        let scheme = scheme_of(url)?;
        Ok(match scheme.as_str() {
            "memory" => StoreKind::Memory,
            "file" => StoreKind::File,
            "sqlite" => StoreKind::Sqlite,
            "postgres" | "postgresql" => StoreKind::Postgres,
            "redis" | "rediss" | "redis+unix" | "unix" => StoreKind::Redis,
            "redis+cluster" | "rediss+cluster" => StoreKind::RedisCluster,
            _ => {
                return Err(Error::config(format!(
                    "unknown session store URL scheme `{scheme}`: expected memory://, file://, \
                     sqlite:, postgres://, redis:// or redis+cluster://"
                )));
            }
        })
    }

    /// The cargo feature of session-stores this kind of store needs.
    pub fn feature(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::File => "file",
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
            StoreKind::Redis | StoreKind::RedisCluster => "redis",
        }
    }

    /// Whether this build has the feature this kind of store needs.
    pub fn is_enabled(self) -> bool {
        match self {
            StoreKind::Memory => cfg!(feature = "memory"),
            StoreKind::File => cfg!(feature = "file"),
            StoreKind::Sqlite => cfg!(feature = "sqlite"),
            StoreKind::Postgres => cfg!(feature = "postgres"),
            StoreKind::Redis | StoreKind::RedisCluster => cfg!(feature = "redis"),
        }
    }

    /// The store's name, such as `"SQLite"`.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::File => "JSON files",
            StoreKind::Sqlite => "SQLite",
            StoreKind::Postgres => "Postgres",
            StoreKind::Redis => "Redis",
            StoreKind::RedisCluster => "Redis Cluster",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Opens the store that `url` selects. See the [module docs](self) for the URL forms.
///
/// Fails with [`Error::Config`] for an unknown scheme, a scheme whose feature is off (the
/// message names the feature), a malformed URL or an unknown query option, and with the
/// store's own error when it cannot be opened (an unreachable server, an unwritable
/// directory, ...).
pub async fn connect(url: &str) -> Result<Box<dyn SessionStore>> {
    let kind = StoreKind::of(url)?;
    if !kind.is_enabled() {
        return Err(Error::config(format!(
            "the session store URL `{}` needs the `{feature}` feature of session-stores: add \
             features = [\"{feature}\"] to its line in Cargo.toml (or pass --features {feature} \
             to cargo)",
            redact(url),
            feature = kind.feature(),
        )));
    }
    // The wrappers' keys are read before anything is opened, so a missing key fails fast.
    let (url, layers) = take_wrapper_options(url)?;
    let url = url.as_str();
    let store = match kind {
        StoreKind::Memory => open_memory(url),
        StoreKind::File => open_file(url).await,
        StoreKind::Sqlite => open_sqlite(url).await,
        StoreKind::Postgres => open_postgres(url).await,
        StoreKind::Redis => open_redis(url).await,
        StoreKind::RedisCluster => open_redis_cluster(url).await,
    }?;
    Ok(layers.wrap(store))
}

/// The option naming the environment variable that holds the
/// [`HashedIds`](crate::wrappers::hashed_ids::HashedIds) key.
const HASH_IDS_OPTION: &str = "hash_ids_key_env";
/// The option naming the environment variable that holds the
/// [`Encrypted`](crate::wrappers::encrypted::Encrypted) key ring.
const ENCRYPTION_OPTION: &str = "encryption_keys_env";

/// The security wrappers a URL asks for, with their keys already read.
#[derive(Default)]
struct Layers {
    #[cfg(feature = "hashed-ids")]
    hash_ids: Option<crate::wrappers::key::Key>,
    #[cfg(feature = "encryption")]
    encryption: Option<crate::wrappers::encrypted::KeyRing>,
}

impl Layers {
    /// `store` inside the wrappers: `HashedIds<Encrypted<store>>` when both are asked for.
    fn wrap(self, store: Box<dyn SessionStore>) -> Box<dyn SessionStore> {
        #[cfg(feature = "encryption")]
        let store: Box<dyn SessionStore> = match self.encryption {
            Some(ring) => Box::new(crate::wrappers::encrypted::Encrypted::new(store, ring)),
            None => store,
        };
        #[cfg(feature = "hashed-ids")]
        let store: Box<dyn SessionStore> = match &self.hash_ids {
            Some(key) => Box::new(crate::wrappers::hashed_ids::HashedIds::new(store, key)),
            None => store,
        };
        store
    }
}

/// Splits [`HASH_IDS_OPTION`] and [`ENCRYPTION_OPTION`] (which every scheme takes) out of
/// `url`'s query, reads the keys from the variables they name, and returns the URL without
/// them.
fn take_wrapper_options(url: &str) -> Result<(String, Layers)> {
    let mut layers = Layers::default();
    let rest = filter_query(url, |key, raw_value| {
        if key != HASH_IDS_OPTION && key != ENCRYPTION_OPTION {
            return Ok(false);
        }
        let var = percent_decode(raw_value)?;
        if var.is_empty() {
            return Err(Error::config(format!(
                "the session store URL option `{key}` needs the name of an environment variable \
                 holding the key (never the key itself)"
            )));
        }
        if key == HASH_IDS_OPTION {
            layers.set_hash_ids(&var)?;
        } else {
            layers.set_encryption(&var)?;
        }
        Ok(true)
    })?;
    Ok((rest, layers))
}

/// Walks the options of `url`'s query, calling `take` with each one's decoded key and raw
/// value, and returns `url` without the options `take` took (returned `true` for). The
/// others stay as they were written, and so does a `#fragment` (redis-rs' `#insecure`).
fn filter_query(url: &str, mut take: impl FnMut(&str, &str) -> Result<bool>) -> Result<String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_string());
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        if !take(&percent_decode(raw_key)?, raw_value)? {
            kept.push(pair);
        }
    }
    let mut rest = base.to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        rest.push('#');
        rest.push_str(fragment);
    }
    Ok(rest)
}

impl Layers {
    #[cfg(feature = "hashed-ids")]
    fn set_hash_ids(&mut self, var: &str) -> Result<()> {
        let mut keys = crate::wrappers::key::keys_from_env(var)?;
        if keys.len() != 1 {
            return Err(Error::config(format!(
                "the key variable `{var}` of `{HASH_IDS_OPTION}` must hold exactly one key, not {}",
                keys.len()
            )));
        }
        self.hash_ids = keys.pop();
        Ok(())
    }

    #[cfg(not(feature = "hashed-ids"))]
    fn set_hash_ids(&mut self, _: &str) -> Result<()> {
        Err(wrapper_feature_off(HASH_IDS_OPTION, "hashed-ids"))
    }

    #[cfg(feature = "encryption")]
    fn set_encryption(&mut self, var: &str) -> Result<()> {
        self.encryption = Some(crate::wrappers::encrypted::KeyRing::from_env(var)?);
        Ok(())
    }

    #[cfg(not(feature = "encryption"))]
    fn set_encryption(&mut self, _: &str) -> Result<()> {
        Err(wrapper_feature_off(ENCRYPTION_OPTION, "encryption"))
    }
}

#[cfg(not(all(feature = "hashed-ids", feature = "encryption")))]
fn wrapper_feature_off(option: &str, feature: &str) -> Error {
    Error::config(format!(
        "the session store URL option `{option}` needs the `{feature}` feature of \
         session-stores: add features = [\"{feature}\"] to its line in Cargo.toml"
    ))
}

/// `url` with every password replaced by `***`, for logs and status pages: the password of
/// its user info (even one holding an unencoded `/` or `?`) and the value of any
/// `password`, `pass` or `pwd` query option (which Postgres URLs accept). Cluster URLs keep
/// every host.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The user info ends at the last `@`: a password may contain `/`, `?` or `:`, a host
    // list never contains `@`.
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => userinfo.to_string(),
            };
            format!("{user}@{hosts}")
        }
        None => rest.to_string(),
    };
    let rest = match rest.split_once('?') {
        Some((location, query)) => {
            let options: Vec<String> = query
                .split('&')
                .map(|option| match option.split_once('=') {
                    Some((key, _))
                        if matches!(
                            key.to_ascii_lowercase().as_str(),
                            "password" | "pass" | "pwd"
                        ) =>
                    {
                        format!("{key}=***")
                    }
                    _ => option.to_string(),
                })
                .collect();
            format!("{location}?{}", options.join("&"))
        }
        None => rest,
    };
    format!("{scheme}://{rest}")
}

fn scheme_of(url: &str) -> Result<String> {
    // `sqlite::memory:` and `sqlite:path` have no `//`.
    let end = url.find(':').ok_or_else(|| {
        Error::config("a session store URL needs a scheme, such as memory:// or sqlite://")
    })?;
    let scheme = &url[..end];
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return Err(Error::config(
            "a session store URL needs a scheme, such as memory:// or sqlite://",
        ));
    }
    Ok(scheme.to_ascii_lowercase())
}

/// The part after `scheme:` (and after `//` if present), split into location and query
/// options.
#[allow(dead_code)] // Unused when every scheme that takes options is compiled out.
fn location_and_options(url: &str) -> Result<(String, Vec<(String, String)>)> {
    let (_, rest) = url.split_once(':').unwrap_or(("", url));
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, query),
        None => (rest, ""),
    };
    let mut options = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        options.push((percent_decode(key)?, percent_decode(value)?));
    }
    Ok((percent_decode(location)?, options))
}

#[allow(dead_code)]
fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| Error::config("a session store URL has a malformed %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|err| Error::Config {
        message: "a session store URL's %-escapes do not decode to UTF-8".into(),
        source: Some(Box::new(err)),
    })
}

/// Splits this crate's options (`ours`) out of `url`'s query and returns the URL without them
/// (for the driver) and their decoded values. An option in neither `ours` nor `drivers` is an
/// [`Error::Config`].
#[allow(dead_code)] // Unused when Postgres and Redis are compiled out.
fn take_options(
    scheme: &str,
    url: &str,
    ours: &[&str],
    drivers: &[&str],
) -> Result<(String, Vec<(String, String)>)> {
    let mut taken = Vec::new();
    let driver_url = filter_query(url, |key, raw_value| {
        if ours.contains(&key) {
            taken.push((key.to_string(), percent_decode(raw_value)?));
            Ok(true)
        } else if drivers.contains(&key) {
            Ok(false)
        } else {
            let known: Vec<&str> = ours.iter().chain(drivers).copied().collect();
            Err(unknown_option(scheme, key, &known.join(", ")))
        }
    })?;
    Ok((driver_url, taken))
}

/// sqlx's Postgres URL options (sqlx-postgres 0.9, `PgConnectOptions::from_str`).
#[allow(dead_code)]
const POSTGRES_DRIVER_OPTIONS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// redis-rs' URL options (redis 1.x).
#[allow(dead_code)]
const REDIS_DRIVER_OPTIONS: &[&str] = &["db", "user", "pass", "protocol"];

#[allow(dead_code)]
fn unknown_option(scheme: &str, key: &str, known: &str) -> Error {
    Error::config(format!(
        "unknown option `{key}` in a {scheme} session store URL (known: {known})"
    ))
}

#[cfg(feature = "memory")]
fn open_memory(url: &str) -> Result<Box<dyn SessionStore>> {
    let (location, options) = location_and_options(url)?;
    if !location.is_empty() {
        return Err(Error::config(
            "a memory:// session store URL takes no host or path, only ?capacity=N",
        ));
    }
    let mut capacity = crate::stores::memory::DEFAULT_CAPACITY;
    for (key, value) in options {
        match key.as_str() {
            "capacity" => {
                capacity = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        Error::config(format!(
                            "memory:// capacity must be a positive integer, not `{value}`"
                        ))
                    })?;
            }
            _ => return Err(unknown_option("memory://", &key, "capacity")),
        }
    }
    Ok(Box::new(crate::MemoryStore::new(capacity)))
}

#[cfg(not(feature = "memory"))]
fn open_memory(_: &str) -> Result<Box<dyn SessionStore>> {
    Err(Error::config("the `memory` feature is off"))
}

#[cfg(feature = "file")]
async fn open_file(url: &str) -> Result<Box<dyn SessionStore>> {
    let (dir, options) = location_and_options(url)?;
    if let Some((key, _)) = options.first() {
        return Err(unknown_option("file://", key, "none"));
    }
    if dir.is_empty() {
        return Err(Error::config(
            "a file:// session store URL needs a directory, such as file:///var/lib/sessions",
        ));
    }
    Ok(Box::new(crate::FileStore::new(dir).await?))
}

#[cfg(not(feature = "file"))]
async fn open_file(_: &str) -> Result<Box<dyn SessionStore>> {
    Err(Error::config("the `file` feature is off"))
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(url: &str) -> Result<Box<dyn SessionStore>> {
    let (path, options) = location_and_options(url)?;
    let mut builder = crate::SqliteStore::builder();
    for (key, value) in options {
        match key.as_str() {
            "table" => builder = builder.table(value),
            // A store's table lives in the database file it opens, SQLite's schema `main`.
            "schema" if value == "main" => {}
            "schema" => {
                return Err(Error::config(format!(
                    "a sqlite: session store keeps its table in the file it opens (schema \
                     `main`), not in schema `{value}`: open that database's file instead"
                )));
            }
            _ => return Err(unknown_option("sqlite:", &key, "table, schema")),
        }
    }
    let store = match path.as_str() {
        ":memory:" => builder.open_in_memory().await?,
        "" => {
            return Err(Error::config(
                "a sqlite: session store URL needs a file, such as sqlite://sessions.db, or \
                 :memory: (sqlite::memory:)",
            ));
        }
        path => builder.open(path).await?,
    };
    Ok(Box::new(store))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(_: &str) -> Result<Box<dyn SessionStore>> {
    Err(Error::config("the `sqlite` feature is off"))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Box<dyn SessionStore>> {
    let (url, options) = take_options(
        "postgres://",
        url,
        &["table", "schema", "migrate"],
        POSTGRES_DRIVER_OPTIONS,
    )?;
    let mut builder = crate::PostgresStore::builder();
    let mut migrate = true;
    for (key, value) in options {
        match key.as_str() {
            "table" => builder = builder.table(value),
            "schema" => builder = builder.schema(value),
            _ => {
                migrate = parse_bool("migrate", &value)?;
            }
        }
    }
    let store = builder.connect(&url).await?;
    if migrate {
        store.migrate().await?;
    }
    Ok(Box::new(store))
}

#[allow(dead_code)]
fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(Error::config(format!(
            "the session store URL option `{key}` is `{other}`, not true or false"
        ))),
    }
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_: &str) -> Result<Box<dyn SessionStore>> {
    Err(Error::config("the `postgres` feature is off"))
}

/// This crate's options of a Redis URL.
#[allow(dead_code)]
const REDIS_OPTIONS: &[&str] = &["key_prefix", "tls_ca_file", "tls_cert_file", "tls_key_file"];

#[cfg(feature = "redis")]
async fn open_redis(url: &str) -> Result<Box<dyn SessionStore>> {
    let tls = scheme_of(url)? == "rediss";
    let (url, options) = take_options("redis://", url, REDIS_OPTIONS, REDIS_DRIVER_OPTIONS)?;
    let builder = redis_options(crate::RedisStore::builder(&url), options, tls)?;
    Ok(Box::new(builder.connect().await?))
}

/// Applies this crate's options of a Redis URL (`REDIS_OPTIONS`) to `builder`; `tls` tells
/// whether the URL is a `rediss` one. The TLS files are read here, so an unreadable one is an
/// [`Error::Config`] naming its option.
#[cfg(feature = "redis")]
fn redis_options(
    mut builder: crate::stores::redis::RedisStoreBuilder,
    options: Vec<(String, String)>,
    tls: bool,
) -> Result<crate::stores::redis::RedisStoreBuilder> {
    let (mut ca_file, mut cert_file, mut key_file) = (None, None, None);
    for (key, value) in options {
        match key.as_str() {
            "tls_ca_file" => ca_file = Some(value),
            "tls_cert_file" => cert_file = Some(value),
            "tls_key_file" => key_file = Some(value),
            _ => builder = builder.key_prefix(value),
        }
    }
    if ca_file.is_none() && cert_file.is_none() && key_file.is_none() {
        return Ok(builder);
    }
    if !cfg!(feature = "redis-tls") {
        return Err(Error::config(
            "the Redis URL options tls_ca_file, tls_cert_file and tls_key_file need the \
             `redis-tls` feature of session-stores: add features = [\"redis-tls\"] to its line \
             in Cargo.toml (or pass --features redis-tls to cargo)",
        ));
    }
    if !tls {
        return Err(Error::config(
            "the Redis URL options tls_ca_file, tls_cert_file and tls_key_file need a TLS URL: \
             rediss:// (rediss+cluster:// for a cluster)",
        ));
    }
    #[cfg(feature = "redis-tls")]
    {
        use crate::stores::tls::read_pem_file;
        if let Some(path) = ca_file {
            builder = builder.tls_root_certificate_pem(read_pem_file("tls_ca_file", &path)?);
        }
        match (cert_file, key_file) {
            (Some(cert), Some(key)) => {
                builder = builder.tls_client_certificate_pem(
                    read_pem_file("tls_cert_file", &cert)?,
                    read_pem_file("tls_key_file", &key)?,
                );
            }
            (None, None) => {}
            _ => {
                return Err(Error::config(
                    "the Redis URL options tls_cert_file and tls_key_file go together: a client \
                     certificate needs its key",
                ));
            }
        }
    }
    Ok(builder)
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_: &str) -> Result<Box<dyn SessionStore>> {
    Err(Error::config("the `redis` feature is off"))
}

/// The node URLs of a `redis+cluster://[userinfo@]host:port,host:port[/...]` URL.
#[allow(dead_code)]
fn cluster_node_urls(url: &str) -> Result<Vec<String>> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        Error::config("a redis+cluster URL looks like redis+cluster://host:port,host:port")
    })?;
    let node_scheme = if scheme.eq_ignore_ascii_case("rediss+cluster") {
        "rediss"
    } else {
        "redis"
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| format!("{node_scheme}://{userinfo}{host}{tail}"))
        .collect();
    if nodes.is_empty() {
        return Err(Error::config(
            "a redis+cluster URL needs at least one node: redis+cluster://host:port,host:port",
        ));
    }
    Ok(nodes)
}

#[cfg(feature = "redis")]
async fn open_redis_cluster(url: &str) -> Result<Box<dyn SessionStore>> {
    let tls = scheme_of(url)? == "rediss+cluster";
    let (url, options) =
        take_options("redis+cluster://", url, REDIS_OPTIONS, REDIS_DRIVER_OPTIONS)?;
    let nodes = cluster_node_urls(&url)?;
    let builder = redis_options(crate::RedisStore::cluster_builder(nodes), options, tls)?;
    Ok(Box::new(builder.connect().await?))
}

#[cfg(not(feature = "redis"))]
async fn open_redis_cluster(_: &str) -> Result<Box<dyn SessionStore>> {
    Err(Error::config("the `redis` feature is off"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn config_message(result: Result<Box<dyn SessionStore>>) -> String {
        match result {
            Err(Error::Config { message, .. }) => message,
            Err(other) => panic!("expected a config error, got {other:?}"),
            Ok(_) => panic!("expected a config error, got a store"),
        }
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn wrapper_options_need_a_set_variable_and_their_feature() {
        for option in [HASH_IDS_OPTION, ENCRYPTION_OPTION] {
            let url = format!("memory://?capacity=10&{option}=SESSION_STORES_TEST_UNSET_VAR");
            let message = config_message(connect(&url).await);
            let feature_on = (option == HASH_IDS_OPTION && cfg!(feature = "hashed-ids"))
                || (option == ENCRYPTION_OPTION && cfg!(feature = "encryption"));
            if feature_on {
                assert!(
                    message.contains("SESSION_STORES_TEST_UNSET_VAR"),
                    "{message}"
                );
                assert!(message.contains("not set"), "{message}");
            } else {
                assert!(message.contains("feature"), "{message}");
            }
            let message = config_message(connect(&format!("memory://?{option}=")).await);
            assert!(
                message.contains("name of an environment variable"),
                "{message}"
            );
        }
        // Without wrapper options the URL reaches the store unchanged.
        let (rest, _) = take_wrapper_options("redis://h:1/0?db=2&key_prefix=a#insecure").unwrap();
        assert_eq!(rest, "redis://h:1/0?db=2&key_prefix=a#insecure");
    }

    #[test]
    fn kinds_by_scheme() {
        let cases = [
            ("memory://", StoreKind::Memory),
            ("MEMORY://?capacity=3", StoreKind::Memory),
            ("file:///tmp/x", StoreKind::File),
            ("sqlite://a.db", StoreKind::Sqlite),
            ("sqlite::memory:", StoreKind::Sqlite),
            ("postgres://u@h/db", StoreKind::Postgres),
            ("postgresql://u@h/db", StoreKind::Postgres),
            ("redis://h:6379", StoreKind::Redis),
            ("rediss://h:6379", StoreKind::Redis),
            ("redis+unix:///run/redis.sock", StoreKind::Redis),
            ("redis+cluster://a:1,b:2", StoreKind::RedisCluster),
            ("rediss+cluster://a:1", StoreKind::RedisCluster),
        ];
        for (url, kind) in cases {
            assert_eq!(StoreKind::of(url).unwrap(), kind, "{url}");
        }
        assert_eq!(StoreKind::RedisCluster.feature(), "redis");
        assert_eq!(StoreKind::Sqlite.to_string(), "SQLite");
    }

    #[tokio::test]
    async fn unknown_and_malformed_urls_are_config_errors() {
        let message = config_message(connect("mongodb://localhost/db").await);
        assert!(
            message.contains("unknown session store URL scheme `mongodb`"),
            "{message}"
        );
        for bad in ["", "no scheme here", "://x", "a b://c"] {
            let err = connect(bad).await.err().expect(bad);
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/app?sslmode=require"),
            "postgres://app:***@db:5432/app?sslmode=require"
        );
        assert_eq!(redact("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(
            redact("postgres://app:a/b?c@db/app"),
            "postgres://app:***@db/app"
        );
        assert_eq!(
            redact("postgres://db/app?user=app&password=s3cret&sslmode=require"),
            "postgres://db/app?user=app&password=***&sslmode=require"
        );
        assert_eq!(redact("redis://user@h"), "redis://user@h");
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(
            redact("redis+cluster://u:p@a:1,b:2"),
            "redis+cluster://u:***@a:1,b:2"
        );
    }

    #[test]
    fn cluster_urls_expand_to_node_urls() {
        assert_eq!(
            cluster_node_urls("redis+cluster://a:7001, b:7002,").unwrap(),
            ["redis://a:7001", "redis://b:7002"]
        );
        assert_eq!(
            cluster_node_urls("rediss+cluster://u:p@a:7001,b:7002").unwrap(),
            ["rediss://u:p@a:7001", "rediss://u:p@b:7002"]
        );
        assert!(cluster_node_urls("redis+cluster://").is_err());
        assert!(cluster_node_urls("redis+cluster:").is_err());
    }

    #[test]
    fn locations_and_options_are_percent_decoded() {
        let (location, options) =
            location_and_options("sqlite://my%20dir/s.db?table=web%5Fsessions").unwrap();
        assert_eq!(location, "my dir/s.db");
        assert_eq!(options, [("table".to_string(), "web_sessions".to_string())]);
        let (location, _) = location_and_options("sqlite::memory:").unwrap();
        assert_eq!(location, ":memory:");
        let (location, _) = location_and_options("file:///var/lib/s").unwrap();
        assert_eq!(location, "/var/lib/s");
        assert!(location_and_options("file:///a%zz").is_err());
        assert!(location_and_options("file:///a%ff").is_err());
    }

    /// Every scheme whose feature is off names the feature to enable.
    #[tokio::test]
    async fn disabled_features_are_named() {
        let urls = [
            "memory://",
            "file:///tmp/x",
            "sqlite::memory:",
            "postgres://u:pw@127.0.0.1:1/db",
            "redis://127.0.0.1:1",
            "redis+cluster://127.0.0.1:1",
        ];
        for url in urls {
            let kind = StoreKind::of(url).unwrap();
            if kind.is_enabled() {
                continue;
            }
            let message = config_message(connect(url).await);
            assert!(
                message.contains(&format!("the `{}` feature", kind.feature())),
                "{message}"
            );
            assert!(
                !message.contains("pw@"),
                "the password is redacted: {message}"
            );
        }
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn memory_urls() {
        let store = connect("memory://?capacity=2").await.unwrap();
        let session = crate::Session::new(std::time::Duration::from_secs(60));
        for _ in 0..3 {
            store
                .set(&crate::SessionId::generate(), &session)
                .await
                .unwrap();
        }
        assert_eq!(store.len().await.unwrap(), 2, "capacity 2 is applied");
        connect("memory://").await.unwrap();
        connect("memory:").await.unwrap();
        for bad in [
            "memory://?capacity=0",
            "memory://?capacity=lots",
            "memory://?size=3",
            "memory://host",
        ] {
            config_message(connect(bad).await);
        }
    }

    #[cfg(feature = "file")]
    #[tokio::test]
    async fn file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("with space");
        let url = format!("file://{}", path.display()).replace(' ', "%20");
        let store = connect(&url).await.unwrap();
        let id = crate::SessionId::generate();
        store
            .set(
                &id,
                &crate::Session::new(std::time::Duration::from_secs(60)),
            )
            .await
            .unwrap();
        assert!(store.get(&id).await.unwrap().is_some());
        assert!(path.is_dir(), "the %20 in the URL is a space in the path");
        config_message(connect("file://").await);
        config_message(connect(&format!("{url}?durable=no")).await);
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_urls() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.db");
        for url in [
            format!("sqlite://{}", file.display()),
            format!("sqlite:{}?table=other_sessions", file.display()),
            "sqlite::memory:".to_string(),
            "sqlite://:memory:".to_string(),
        ] {
            let store = connect(&url).await.unwrap();
            let id = crate::SessionId::generate();
            store
                .set(
                    &id,
                    &crate::Session::new(std::time::Duration::from_secs(60)),
                )
                .await
                .unwrap();
            assert_eq!(store.len().await.unwrap(), 1, "{url}");
        }
        assert!(file.exists());
        // Two tables in the one file: each store counted only its own session.
        let store = connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        assert_eq!(store.len().await.unwrap(), 1);
        config_message(connect("sqlite://").await);
        config_message(connect("sqlite://x.db?wal=off").await);
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_urls_take_table_and_schema_main() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let url = format!("sqlite://{}?table=t_url&schema=main", path.display());
        let store = connect(&url).await.unwrap();
        assert_eq!(store.len().await.unwrap(), 0);
        let other = format!("sqlite://{}?schema=aux", path.display());
        assert!(config_message(connect(&other).await).contains("schema `aux`"));
        let typo = format!("sqlite://{}?tabel=x", path.display());
        assert!(config_message(connect(&typo).await).contains("`tabel`"));
    }

    #[test]
    fn our_options_are_taken_and_the_drivers_kept() {
        let (url, ours) = take_options(
            "postgres://",
            "postgres://u:p@h/db?sslmode=require&table=t&schema=s%5Fx&options=-c%20a%3Db",
            &["table", "schema"],
            POSTGRES_DRIVER_OPTIONS,
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://u:p@h/db?sslmode=require&options=-c%20a%3Db"
        );
        assert_eq!(
            ours,
            [
                ("table".into(), "t".into()),
                ("schema".into(), "s_x".into())
            ]
        );
        let (url, ours) = take_options(
            "redis://",
            "rediss://h:1/2?key_prefix=app%3A#insecure",
            &["key_prefix"],
            REDIS_DRIVER_OPTIONS,
        )
        .unwrap();
        assert_eq!(url, "rediss://h:1/2#insecure");
        assert_eq!(ours, [("key_prefix".into(), "app:".into())]);
        let (url, ours) = take_options("redis://", "redis://h", &["key_prefix"], &[]).unwrap();
        assert_eq!((url.as_str(), ours.len()), ("redis://h", 0));
        let err = take_options(
            "redis://",
            "redis://h?prefix=x",
            &["key_prefix"],
            REDIS_DRIVER_OPTIONS,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("`prefix`"), "{err}");
        assert!(err.to_string().contains("key_prefix"), "{err}");
    }
}
