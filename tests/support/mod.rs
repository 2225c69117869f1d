//! Helpers shared by the integration tests: finding the servers that service-backed tests
//! need. Include with `#[path = "../support/mod.rs"] mod support;` (or `mod support;` from a
//! test at the top of `tests/`).
#![allow(dead_code)]

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use session_stores::{Result, Session, SessionId};

/// Whether this run is CI (`CI=true` or `CI=1`), where a missing server fails the test.
pub fn in_ci() -> bool {
    matches!(
        std::env::var("CI")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Ok("true") | Ok("1")
    )
}

/// The URL of a service from `var`, or `default`, if a TCP connection to its host and port
/// succeeds within two seconds.
///
/// When the service cannot be reached: in CI this panics (a skipped service-backed test is a
/// failure there); locally it prints a loud notice naming `var` and returns `None`, and the
/// caller returns early.
pub fn service_url(var: &str, default: &str, default_port: u16) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_string());
    match host_port(&url, default_port) {
        Some(addr) if reachable(&addr) => Some(url),
        _ => {
            let message = format!(
                "SKIPPED: no server at {url} (set {var} to a reachable server; CI=true makes this a failure)"
            );
            if in_ci() {
                panic!("{message}");
            }
            eprintln!("\n*** {message} ***\n");
            None
        }
    }
}

/// Several `host:port` URLs from `var` (comma-separated), each reachable; same skip/fail
/// rules as [`service_url`]. `None` when `var` is unset outside CI.
pub fn service_urls(var: &str, default_port: u16) -> Option<Vec<String>> {
    let raw = match std::env::var(var) {
        Ok(raw) if !raw.trim().is_empty() => raw,
        _ => {
            let message = format!("SKIPPED: {var} is not set (a comma-separated list of URLs)");
            if in_ci() {
                panic!("{message}");
            }
            eprintln!("\n*** {message} ***\n");
            return None;
        }
    };
    let urls: Vec<String> = raw.split(',').map(|s| s.trim().to_string()).collect();
    for url in &urls {
        let ok = host_port(url, default_port).is_some_and(|addr| reachable(&addr));
        if !ok {
            let message = format!("SKIPPED: {url} from {var} is not reachable");
            if in_ci() {
                panic!("{message}");
            }
            eprintln!("\n*** {message} ***\n");
            return None;
        }
    }
    Some(urls)
}

fn host_port(url: &str, default_port: u16) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.is_empty() {
        return None;
    }
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok() && !host_port.ends_with(']'));
    Some(if has_port {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    })
}

fn reachable(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|sock| TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_ok())
}

/// A random lowercase name with `prefix`, for per-test tables, schemas and key prefixes.
pub fn unique_name(prefix: &str) -> String {
    let id = session_stores::SessionId::generate();
    let suffix: String = id
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{prefix}{suffix}")
}

/// A store that owns the temporary directory its data lives in, so the directory is removed
/// when the store is dropped (for factories that must hand out a fresh store per check).
pub struct WithDir<S> {
    pub store: S,
    _dir: tempfile::TempDir,
}

impl<S> WithDir<S> {
    /// `store`, keeping `dir` alive as long as it is.
    pub fn new(store: S, dir: tempfile::TempDir) -> Self {
        WithDir { store, _dir: dir }
    }
}

#[session_stores::async_trait]
impl<S: session_stores::SessionStore> session_stores::SessionStore for WithDir<S> {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        self.store.get(id).await
    }
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        self.store.set(id, session).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.store.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, expires_at: std::time::SystemTime) -> Result<bool> {
        self.store.touch(id, expires_at).await
    }
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        self.store.create(id, session).await
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        self.store.set_if_version(id, session, expected).await
    }
    async fn len(&self) -> Result<u64> {
        self.store.len().await
    }
    async fn clear(&self) -> Result<()> {
        self.store.clear().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.store.delete_expired().await
    }
}
