//! The `redis://` and `redis+cluster://` URLs: redis-rs' connection options, and this
//! crate's key prefix and TLS files.

use crate::error::{Error, Result};
use crate::url::{StoreUrl, UrlOptionName, unknown_option};

use super::{RedisStore, RedisStoreBuilder};

/// This crate's options of a Redis URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisOption {
    /// The key prefix (default `session:`).
    KeyPrefix,
    /// A PEM file of the CA to trust instead of the public roots (`rediss://` only).
    TlsCaFile,
    /// A PEM file of the client certificate (`rediss://` only, with `tls_key_file`).
    TlsCertFile,
    /// A PEM file of the client certificate's key.
    TlsKeyFile,
}

impl UrlOptionName for RedisOption {
    const ALL: &'static [Self] = &[
        RedisOption::KeyPrefix,
        RedisOption::TlsCaFile,
        RedisOption::TlsCertFile,
        RedisOption::TlsKeyFile,
    ];
    fn name(self) -> &'static str {
        match self {
            RedisOption::KeyPrefix => "key_prefix",
            RedisOption::TlsCaFile => "tls_ca_file",
            RedisOption::TlsCertFile => "tls_cert_file",
            RedisOption::TlsKeyFile => "tls_key_file",
        }
    }
}

/// redis-rs' URL options (redis 1.x), passed on.
pub(crate) const DRIVER_OPTIONS: &[&str] = &["db", "user", "pass", "protocol"];

impl RedisStore {
    /// The store a `redis://`, `rediss://`, `redis+unix://` or `redis+cluster://` URL
    /// describes, connected and checked with a `PING`; see [`connect`](crate::connect())
    /// for the options.
    pub async fn from_url(url: &str) -> Result<RedisStore> {
        Self::from_store_url(&StoreUrl::parse(url)?).await
    }

    pub(crate) async fn from_store_url(url: &StoreUrl) -> Result<RedisStore> {
        builder_of(url)?.connect().await
    }
}

/// The builder a Redis URL describes, TLS files read; fails for an unknown option, TLS
/// files without TLS (or without the `redis-tls` feature), or a cluster URL with no node.
pub(crate) fn builder_of(url: &StoreUrl) -> Result<RedisStoreBuilder> {
    let cluster = url.kind() == crate::StoreKind::RedisCluster;
    let scheme = if cluster {
        "redis+cluster://"
    } else {
        "redis://"
    };
    let (mut prefix, mut ca_file, mut cert_file, mut key_file) = (None, None, None, None);
    for option in url.options() {
        let value = Some(option.value.clone());
        match RedisOption::of(&option.key) {
            Some(RedisOption::KeyPrefix) => prefix = value,
            Some(RedisOption::TlsCaFile) => ca_file = value,
            Some(RedisOption::TlsCertFile) => cert_file = value,
            Some(RedisOption::TlsKeyFile) => key_file = value,
            None if DRIVER_OPTIONS.contains(&option.key.as_str()) => {}
            None => {
                let known = format!("{}, {}", RedisOption::names(), DRIVER_OPTIONS.join(", "));
                return Err(unknown_option(scheme, &option.key, &known));
            }
        }
    }
    let driver = url.without(|key| RedisOption::of(key).is_some());
    let mut builder = if cluster {
        let nodes = node_urls(&driver)?;
        RedisStore::cluster_builder(nodes)
    } else {
        RedisStore::builder(&driver.to_url())
    };
    if let Some(prefix) = prefix {
        builder = builder.key_prefix(prefix);
    }
    tls_files(builder, url.is_tls(), ca_file, cert_file, key_file)
}

/// The node URLs of a cluster URL: `redis://[userinfo@]host[/path][?options]` for each
/// host (`rediss://` for `rediss+cluster://`).
pub(crate) fn node_urls(url: &StoreUrl) -> Result<Vec<String>> {
    let node = url.with_scheme(if url.is_tls() { "rediss" } else { "redis" });
    let nodes: Vec<String> = url
        .hosts()
        .into_iter()
        .map(|host| node.to_url_with_hosts(host))
        .collect();
    if nodes.is_empty() {
        return Err(Error::config(
            "a redis+cluster URL needs at least one node: redis+cluster://host:port,host:port",
        ));
    }
    Ok(nodes)
}

/// Applies the TLS file options to `builder`, reading the files, so that an unreadable one
/// is an [`Error::Config`] naming its option.
fn tls_files(
    #[allow(unused_mut)] mut builder: RedisStoreBuilder,
    tls: bool,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
) -> Result<RedisStoreBuilder> {
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
        use crate::stores::shared::tls::read_pem_file;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_expand_to_node_urls() {
        let urls = |text: &str| node_urls(&StoreUrl::parse(text).unwrap());
        assert_eq!(
            urls("redis+cluster://a:7001, b:7002,").unwrap(),
            ["redis://a:7001", "redis://b:7002"]
        );
        assert_eq!(
            urls("rediss+cluster://u:p@a:7001,b:7002").unwrap(),
            ["rediss://u:p@a:7001", "rediss://u:p@b:7002"]
        );
        assert_eq!(
            urls("redis+cluster://u:p%3Fq@a:1/0?protocol=resp3").unwrap(),
            ["redis://u:p%3Fq@a:1/0?protocol=resp3"]
        );
        assert!(urls("redis+cluster://").is_err());
        assert!(urls("redis+cluster:").is_err());
    }
}
