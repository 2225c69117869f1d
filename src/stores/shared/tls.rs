//! TLS helpers shared by the Postgres, MySQL and Redis stores (features `postgres-tls`,
//! `mysql-tls`, `redis-tls`): reading PEM certificates and keys into typed errors, telling a refused TLS
//! handshake from an unreachable server, and making sure rustls has a crypto provider.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// Makes sure rustls has a process-wide default crypto provider, for drivers that build their
/// TLS configuration with `rustls::ClientConfig::builder()` (redis-rs does). If none is
/// installed, installs rustls' ring provider, the one these features build; an application
/// that installed its own (before building a store) keeps it. Idempotent and thread-safe:
/// when two threads race, one installs and the other's attempt is refused harmlessly.
#[cfg(feature = "redis-tls")]
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one in between, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The certificates of a PEM text (one or more `CERTIFICATE` blocks; other blocks are
/// skipped), each checked to parse as an X.509 trust anchor. `what` names the input in the
/// error, such as "the Redis TLS root certificate".
pub(crate) fn certificates(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| Error::Config {
            message: format!("{what} is not valid PEM"),
            source: Some(Box::new(err)),
        })?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    let mut anchors = rustls::RootCertStore::empty();
    for cert in &certs {
        anchors.add(cert.clone()).map_err(|err| Error::Config {
            message: format!("{what} holds a certificate that does not parse"),
            source: Some(Box::new(err)),
        })?;
    }
    Ok(certs)
}

/// Checks that `pem` holds a private key (PKCS#8, PKCS#1 or SEC1 PEM block). The key itself
/// never reaches an error message.
pub(crate) fn check_private_key(what: &str, pem: &[u8]) -> Result<()> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(drop)
        .map_err(|err| Error::Config {
            message: format!("{what} holds no PEM private key"),
            source: Some(Box::new(err)),
        })
}

/// Reads a PEM file named by a URL option, for [`certificates`] or [`check_private_key`].
#[cfg(feature = "redis-tls")]
pub(crate) fn read_pem_file(option: &str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|err| Error::Config {
        message: format!("could not read the file `{path}` of the URL option `{option}`"),
        source: Some(Box::new(err)),
    })
}

/// The rustls error that made a TLS handshake fail, if `err` (or an error in its source
/// chain) is one: an untrusted or misnamed server certificate, a refused client certificate,
/// no common TLS version or cipher. Drivers wrap it in an `io::Error` (tokio-rustls, sqlx),
/// which redis-rs keeps in an `Arc`; `io::Error::source` skips the error it wraps, so each
/// of those is opened explicitly.
pub(crate) fn handshake_failure<'a>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = rustls_error_in(err) {
            return Some(found);
        }
        next = err.source();
    }
    None
}

fn rustls_error_in<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        let inner: &(dyn StdError + 'static) = io.get_ref()?;
        return handshake_failure(inner);
    }
    if let Some(shared) = err.downcast_ref::<Arc<dyn StdError + Send + Sync>>() {
        let inner: &(dyn StdError + 'static) = &**shared;
        return handshake_failure(inner);
    }
    None
}

/// The source of the [`Error::Backend`] a store reports for a refused TLS handshake: says
/// what rustls refused and, where it helps, what to configure, and keeps the driver's error
/// as its own source.
#[derive(Debug)]
pub(crate) struct Refused {
    message: String,
    source: Box<dyn StdError + Send + Sync + 'static>,
}

impl Refused {
    /// `err` as a refused TLS handshake, if it is one ([`handshake_failure`]), else `err`
    /// back. `trust_hint` tells how to trust a private CA with this store, for a server
    /// certificate that was refused; `client_hint` how to present a client certificate, for
    /// a server that refused ours (or wanted one).
    pub(crate) fn of<E: StdError + Send + Sync + 'static>(
        err: E,
        trust_hint: &str,
        client_hint: &str,
    ) -> std::result::Result<Refused, E> {
        let what = match handshake_failure(&err) {
            Some(tls) => tls.to_string(),
            // redis-rs' cluster client keeps only the text of the errors of its first
            // connections ("Failed to create initial connections - Io: invalid peer
            // certificate: UnknownIssuer"): rustls' own words in it are as good.
            None => match handshake_failure_in_text(&err.to_string()) {
                Some(what) => what.to_string(),
                None => return Err(err),
            },
        };
        let misnamed = ["not valid for name", "NotValidForName"];
        let hint = if what.starts_with("invalid peer certificate")
            && misnamed.iter().any(|words| what.contains(words))
        {
            " (the server's certificate does not name the host the URL connects to: connect \
             by a name or address it holds)"
                .to_string()
        } else if what.starts_with("invalid peer certificate") {
            format!(" ({trust_hint})")
        } else if what.starts_with("received fatal alert")
            && CLIENT_CERTIFICATE_ALERTS
                .iter()
                .any(|alert| what.ends_with(alert))
        {
            format!(" (the server refused the client's certificate or wants one: {client_hint})")
        } else {
            String::new()
        };
        Ok(Refused {
            message: format!("the TLS handshake with the server failed: {what}{hint}"),
            source: Box::new(err),
        })
    }
}

/// How rustls' `Display` starts each error that refuses a handshake over certificates or
/// protocol (`rustls::Error::InvalidCertificate`, `AlertReceived`, `PeerIncompatible`,
/// `PeerMisbehaved`).
const RUSTLS_REFUSALS: &[&str] = &[
    "invalid peer certificate",
    "received fatal alert",
    "peer is incompatible",
    "peer misbehaved",
];

/// The alerts (as rustls prints them) with which a server refuses the client's certificate,
/// or its absence.
const CLIENT_CERTIFICATE_ALERTS: &[&str] = &[
    "CertificateRequired",
    "BadCertificate",
    "UnknownCA",
    "CertificateUnknown",
    "CertificateExpired",
    "CertificateRevoked",
    "UnsupportedCertificate",
    "AccessDenied",
];

/// rustls' words for a refused handshake in `text`, from the first of them to the end.
fn handshake_failure_in_text(text: &str) -> Option<&str> {
    RUSTLS_REFUSALS
        .iter()
        .filter_map(|phrase| text.find(phrase))
        .min()
        .map(|start| &text[start..])
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Refused {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Decodes a URL query component as the `url` crate does for sqlx: `+` is a space, `%XX` a
/// byte; malformed escapes stay as they are.
pub(crate) fn form_decode(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_are_found_through_io_and_arc_wrappers() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        assert!(handshake_failure(&io).is_some());
        let shared: Arc<dyn StdError + Send + Sync> = Arc::new(io);
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(shared);
        assert!(matches!(
            handshake_failure(&*boxed),
            Some(rustls::Error::InvalidCertificate(_))
        ));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(handshake_failure(&plain).is_none());
    }

    #[test]
    fn refusals_name_what_to_configure() {
        let trust = "TRUST-HINT";
        let client = "CLIENT-HINT";
        let untrusted = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let refused = Refused::of(untrusted, trust, client).unwrap().to_string();
        assert!(
            refused.contains("UnknownIssuer") && refused.contains(trust),
            "{refused}"
        );
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        let refused = Refused::of(alert, trust, client).unwrap().to_string();
        assert!(refused.contains(client), "{refused}");
        // Only the text survived (redis-rs' cluster client).
        let text = std::io::Error::other(
            "Failed to create initial connections - Io: invalid peer certificate: UnknownIssuer",
        );
        let refused = Refused::of(text, trust, client).unwrap().to_string();
        assert!(
            refused.ends_with("failed: invalid peer certificate: UnknownIssuer (TRUST-HINT)"),
            "{refused}"
        );
        let misnamed = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        );
        let refused = Refused::of(misnamed, trust, client).unwrap().to_string();
        assert!(
            refused.contains("does not name the host") && !refused.contains(trust),
            "{refused}"
        );
        let refused_conn = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(Refused::of(refused_conn, trust, client).is_err());
    }

    #[test]
    fn bad_pem_is_a_config_error_never_a_panic() {
        for bad in [
            &b""[..],
            b"not pem at all",
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE-----\n",
            b"\xff\xfe\x00",
        ] {
            let err = certificates("the test CA", bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{bad:?}: {err}");
            assert!(err.to_string().contains("the test CA"), "{err}");
        }
    }
}
