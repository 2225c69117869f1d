//! `connect(url)` on the service-backed URL forms (Postgres, Redis, Redis Cluster), when the
//! servers are reachable; the other forms are covered by the unit tests in `src/connect.rs`.
//! Each test writes, reads and destroys one session under a fresh random id only, so it never
//! touches anyone else's sessions.

#![allow(unused_imports)]

use std::time::Duration;

use session_stores::{Session, SessionId, SessionStore, StoreKind, connect};

#[allow(dead_code)]
async fn round_trip(url: &str, kind: StoreKind) {
    assert_eq!(StoreKind::of(url).unwrap(), kind);
    let store = connect(url).await.expect("connect");
    let id = SessionId::generate();
    let mut session = Session::new(Duration::from_secs(60));
    session.insert("via", url).unwrap();
    assert!(store.create(&id, &session).await.unwrap());
    let loaded = store.get(&id).await.unwrap().expect("stored");
    assert_eq!(loaded.get::<String>("via").unwrap().as_deref(), Some(url));
    store.destroy(&id).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_none());
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_url() {
    use crate::backends::{POSTGRES_DEFAULT, POSTGRES_VAR};
    let Some(url) = crate::support::service_url(POSTGRES_VAR, POSTGRES_DEFAULT, 5432) else {
        return;
    };
    round_trip(&url, StoreKind::Postgres).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_url() {
    use crate::backends::{REDIS_DEFAULT, REDIS_VAR};
    let Some(url) = crate::support::service_url(REDIS_VAR, REDIS_DEFAULT, 6379) else {
        return;
    };
    round_trip(&url, StoreKind::Redis).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_cluster_url() {
    let Some(urls) = crate::support::service_urls(crate::backends::CLUSTER_VAR, 7001) else {
        return;
    };
    let hosts: Vec<&str> = urls
        .iter()
        .map(|url| url.split_once("://").map_or(url.as_str(), |(_, rest)| rest))
        .collect();
    let url = format!("redis+cluster://{}", hosts.join(","));
    round_trip(&url, StoreKind::RedisCluster).await;
}

/// An unreachable server is the store's own (transient) error, not a panic or a hang.
#[cfg(feature = "redis")]
#[tokio::test]
async fn unreachable_redis_is_an_error() {
    let err = connect("redis://127.0.0.1:1")
        .await
        .err()
        .expect("no server on port 1");
    assert!(
        err.is_transient() || err.kind() == session_stores::ErrorKind::Backend,
        "{err}"
    );
}
