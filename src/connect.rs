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
//! | `mysql://...`, `mariadb://...` | [`MySqlStore`](crate::MySqlStore) (MySQL or MariaDB); the table is created if missing ([`migrate`](crate::MySqlStore::migrate)) | `mysql` |
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
//! | `mysql://` | `table`, `migrate` (as for Postgres) | sqlx's: `ssl-mode` (`DISABLED`, `PREFERRED`, `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`), `ssl-ca`, `ssl-cert`, `ssl-key` (and their undashed spellings), `charset`, `collation`, `socket`, `timezone`, `statement-cache-capacity`; `REQUIRED` and the verifying modes need the `mysql-tls` feature |
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

use crate::error::{Error, Result};
use crate::store::SessionStore;
use crate::url::{ENCRYPTION_OPTION, HASH_IDS_OPTION, StoreUrl, is_variable_name};

pub use crate::url::StoreKind;

/// Opens the store that `url` selects. See the [module docs](self) for the URL forms.
///
/// Fails with [`Error::Config`] for an unknown scheme, a scheme whose feature is off (the
/// message names the feature), a malformed URL or an unknown query option, and with the
/// store's own error when it cannot be opened (an unreachable server, an unwritable
/// directory, ...). No error shows a password or a key.
pub async fn connect(url: &str) -> Result<Box<dyn SessionStore>> {
    let (opened, layers) = open(url).await?;
    Ok(layers.wrap(opened.into_dyn()))
}

/// The backend a URL opened, as its own type (for the command's admin operations), and the
/// wrappers the URL asks for.
pub(crate) async fn open(url: &str) -> Result<(Opened, Layers)> {
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
    let url = StoreUrl::parse(url)?;
    // The wrappers' keys are read before anything is opened, so a missing key fails fast.
    let (url, layers) = Layers::take(&url)?;
    Ok((Opened::open(&url).await?, layers))
}

/// A store as the URL's backend opened it, before any wrapper.
pub(crate) enum Opened {
    /// `memory://`.
    #[cfg(feature = "memory")]
    Memory(crate::MemoryStore),
    /// `file://`.
    #[cfg(feature = "file")]
    File(crate::FileStore),
    /// `sqlite:`.
    #[cfg(feature = "sqlite")]
    Sqlite(crate::SqliteStore),
    /// `postgres://`.
    #[cfg(feature = "postgres")]
    Postgres(crate::PostgresStore),
    /// `mysql://`.
    #[cfg(feature = "mysql")]
    MySql(crate::MySqlStore),
    /// `redis://`, `redis+cluster://`.
    #[cfg(feature = "redis")]
    Redis(crate::RedisStore),
}

impl Opened {
    /// Opens the backend `url` selects: the scheme picks the backend, the backend reads its
    /// own options.
    // In a build with no backend feature, every kind is refused and `Ok` is never reached.
    #[allow(unreachable_code)]
    async fn open(url: &StoreUrl) -> Result<Opened> {
        Ok(match url.kind() {
            #[cfg(feature = "memory")]
            StoreKind::Memory => Opened::Memory(crate::MemoryStore::from_store_url(url)?),
            #[cfg(feature = "file")]
            StoreKind::File => Opened::File(crate::FileStore::from_store_url(url).await?),
            #[cfg(feature = "sqlite")]
            StoreKind::Sqlite => Opened::Sqlite(crate::SqliteStore::from_store_url(url).await?),
            #[cfg(feature = "postgres")]
            StoreKind::Postgres => {
                Opened::Postgres(crate::PostgresStore::from_store_url(url).await?)
            }
            #[cfg(feature = "mysql")]
            StoreKind::MySql => Opened::MySql(crate::MySqlStore::from_store_url(url).await?),
            #[cfg(feature = "redis")]
            StoreKind::Redis | StoreKind::RedisCluster => {
                Opened::Redis(crate::RedisStore::from_store_url(url).await?)
            }
            // `open` checked the feature; this is a kind whose feature is compiled out.
            #[allow(unreachable_patterns)]
            kind => {
                return Err(Error::config(format!(
                    "the `{}` feature is off",
                    kind.feature()
                )));
            }
        })
    }

    /// The store as a `Box<dyn SessionStore>`.
    pub(crate) fn into_dyn(self) -> Box<dyn SessionStore> {
        match self {
            #[cfg(feature = "memory")]
            Opened::Memory(store) => Box::new(store),
            #[cfg(feature = "file")]
            Opened::File(store) => Box::new(store),
            #[cfg(feature = "sqlite")]
            Opened::Sqlite(store) => Box::new(store),
            #[cfg(feature = "postgres")]
            Opened::Postgres(store) => Box::new(store),
            #[cfg(feature = "mysql")]
            Opened::MySql(store) => Box::new(store),
            #[cfg(feature = "redis")]
            Opened::Redis(store) => Box::new(store),
        }
    }
}

/// The security wrappers a URL asks for, with their keys already read.
#[derive(Default)]
pub(crate) struct Layers {
    #[cfg(feature = "hashed-ids")]
    hash_ids: Option<crate::wrappers::key::Key>,
    #[cfg(feature = "encryption")]
    encryption: Option<crate::wrappers::encrypted::KeyRing>,
}

impl Layers {
    /// Takes [`HASH_IDS_OPTION`] and [`ENCRYPTION_OPTION`] (which every scheme takes) out of
    /// `url`, reads the keys from the variables they name, and returns the URL without them.
    fn take(url: &StoreUrl) -> Result<(StoreUrl, Layers)> {
        let mut layers = Layers::default();
        for option in url.options() {
            let key = option.key.as_str();
            if key != HASH_IDS_OPTION && key != ENCRYPTION_OPTION {
                continue;
            }
            let var = option.value.as_str();
            if var.is_empty() {
                return Err(Error::config(format!(
                    "the session store URL option `{key}` needs the name of an environment \
                     variable holding the key (never the key itself)"
                )));
            }
            if !is_variable_name(var) {
                // Not shown: it may be the key itself, pasted where its variable's name goes.
                return Err(Error::config(format!(
                    "the session store URL option `{key}` takes the name of an environment \
                     variable (letters, digits and _), and its value is not one; if it is the \
                     key itself, move it into a variable and name the variable here"
                )));
            }
            if key == HASH_IDS_OPTION {
                layers.set_hash_ids(var)?;
            } else {
                layers.set_encryption(var)?;
            }
        }
        #[cfg(all(feature = "hashed-ids", feature = "encryption"))]
        if let (Some(id_key), Some(ring)) = (&layers.hash_ids, &layers.encryption)
            && ring.holds(id_key)
        {
            // One secret for two purposes: a leak of either use is a leak of both.
            return Err(Error::config(format!(
                "the key in `{HASH_IDS_OPTION}`'s variable is also in `{ENCRYPTION_OPTION}`'s \
                 ring: give the id hashing and the encryption keys of their own \
                 (Key::generate())"
            )));
        }
        Ok((url.without_wrappers(), layers))
    }

    /// Whether the URL asked for any wrapper.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        #[allow(unused_mut)]
        let mut empty = true;
        #[cfg(feature = "hashed-ids")]
        {
            empty &= self.hash_ids.is_none();
        }
        #[cfg(feature = "encryption")]
        {
            empty &= self.encryption.is_none();
        }
        empty
    }

    /// Whether this URL asks for `HashedIds`, and whether `other` asks for it with the same
    /// key (compared in constant time).
    #[cfg(all(feature = "hashed-ids", feature = "cli"))]
    pub(crate) fn hash_key_match(&self, other: &Layers) -> (bool, bool) {
        match (&self.hash_ids, &other.hash_ids) {
            (Some(mine), Some(theirs)) => (true, mine.same_as(theirs)),
            (Some(_), None) => (true, false),
            (None, _) => (false, false),
        }
    }

    /// No `HashedIds` key: the URL asks for none, or this build cannot hash.
    #[cfg(all(not(feature = "hashed-ids"), feature = "cli"))]
    pub(crate) fn hash_key_match(&self, _: &Layers) -> (bool, bool) {
        (false, false)
    }

    /// Leaves `HashedIds` out of [`wrap`](Self::wrap).
    #[cfg(feature = "cli")]
    #[allow(unused_mut)]
    pub(crate) fn without_hash_ids(mut self) -> Layers {
        #[cfg(feature = "hashed-ids")]
        {
            self.hash_ids = None;
        }
        self
    }

    /// `store` inside the wrappers: `HashedIds<Encrypted<store>>` when both are asked for.
    pub(crate) fn wrap(self, store: Box<dyn SessionStore>) -> Box<dyn SessionStore> {
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
/// its user info (even one holding an unencoded `/`, `?`, `#` or `@`), the value of any
/// `password`, `pass` or `pwd` query option (which Postgres and Redis URLs accept, however
/// its name is percent-encoded), and a wrapper key option's value when it is not the name
/// of a variable (a key pasted where its variable's name goes). Cluster URLs keep every
/// host.
pub fn redact(url: &str) -> String {
    crate::url::redact(url)
}

#[cfg(test)]
mod tests;
