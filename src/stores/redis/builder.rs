//! [`RedisStoreBuilder`], and the checks and pools it builds a store with.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncConnectionConfig, RedisError};
use deadpool_redis::{PoolConfig, Runtime, Timeouts};

use crate::deadline::DEFAULT_OPERATION_TIMEOUT;
use crate::error::{Error, Result};

use super::connection::{Pool, Target};
use super::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_POOL_WAIT_TIMEOUT,
    DEFAULT_RESPONSE_TIMEOUT, RedisStore,
};

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
    pub(super) fn new(target: Target) -> Self {
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
    /// `ab`): see [Key prefixes](super#key-prefixes). Default: [`DEFAULT_KEY_PREFIX`].
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
            (Target::Url(url), _) => Pool::Single(single_pool(
                url.as_str(),
                connection_config,
                pool_config,
                &urls,
            )?),
            (Target::Cluster(_), certificates) => {
                // redis-rs' cluster client itself, so that the store's connect and response
                // timeouts (and TLS certificates of the application's own) reach every
                // node's connection (deadpool-redis' cluster manager builds its client with
                // redis-rs' defaults: a 1 s connect limit that a loaded machine exceeds).
                let builder = redis::cluster::ClusterClientBuilder::new(urls.iter().copied())
                    .connection_timeout(self.connect_timeout)
                    .response_timeout(self.response_timeout)
                    // The store resends what a cluster did not run, and only that (see
                    // `connection::resend`): redis-rs' own retries would also resend a write
                    // script whose reply was lost with its connection, which then runs twice.
                    .retries(0);
                #[cfg(feature = "redis-tls")]
                let builder = match certificates {
                    Some(certificates) => builder.certs(certificates),
                    None => builder,
                };
                #[cfg(not(feature = "redis-tls"))]
                let _: Option<()> = certificates;
                let client = builder.build().map_err(|err| {
                    url_error(&urls, "the Redis Cluster URLs are not usable", err)
                })?;
                Pool::ClusterClient(Arc::new(client))
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

pub(super) fn check_prefix(prefix: &str) -> Result<()> {
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
