//! How the store reads redis-rs' and deadpool-redis' errors: which are transient, which
//! break the connection, and the store's [`Error`] for each.

use std::fmt;

use deadpool_redis::PoolError;
use deadpool_redis::redis::{ErrorKind as RedisErrorKind, RedisError, ServerErrorKind};

use crate::error::{Error, IdHint};
use crate::session::SessionId;

/// Why a stored value could not be read.
#[derive(Debug)]
pub(super) struct FormatError(pub(super) &'static str);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for FormatError {}

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
pub(super) fn breaks_connection(err: &RedisError) -> bool {
    !err.is_timeout()
        && (err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.kind() == RedisErrorKind::ClusterConnectionNotFound)
}

/// Whether a redis-rs error sends the command to another node: `MOVED`, `ASK`, or `TRYAGAIN`
/// (a multi-key command on a slot in the middle of a migration).
pub(super) fn is_redirect(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        RedisErrorKind::Server(
            ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::TryAgain
        )
    )
}

/// Whether a redis-rs error is an error reply from the server (so the connection works).
pub(super) fn is_reply(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        RedisErrorKind::Server(_) | RedisErrorKind::Extension
    )
}

pub(super) fn redis_error(op: &'static str, id: Option<&SessionId>, err: RedisError) -> Error {
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

pub(super) fn pool_error(op: &'static str, id: Option<&SessionId>, err: PoolError) -> Error {
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
