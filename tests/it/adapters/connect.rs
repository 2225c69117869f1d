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
    use crate::adapters::backends::{POSTGRES_DEFAULT, POSTGRES_VAR};
    let Some(url) = crate::support::service_url(POSTGRES_VAR, POSTGRES_DEFAULT, 5432) else {
        return;
    };
    round_trip(&url, StoreKind::Postgres).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_url() {
    use crate::adapters::backends::{REDIS_DEFAULT, REDIS_VAR};
    let Some(url) = crate::support::service_url(REDIS_VAR, REDIS_DEFAULT, 6379) else {
        return;
    };
    round_trip(&url, StoreKind::Redis).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_cluster_url() {
    let Some(urls) = crate::support::service_urls(crate::adapters::backends::CLUSTER_VAR, 7001)
    else {
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

/// `table` and `schema` in a Postgres URL choose where the sessions go; `migrate=false` uses
/// an existing table only; an unknown option is a config error, never silently ignored.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_url_options() {
    use crate::adapters::backends::{POSTGRES_DEFAULT, POSTGRES_VAR};
    let Some(url) = crate::support::service_url(POSTGRES_VAR, POSTGRES_DEFAULT, 5432) else {
        return;
    };
    let schema = crate::support::unique_name("sst_url_");
    let sep = if url.contains('?') { '&' } else { '?' };
    let with = format!("{url}{sep}schema={schema}&table=from_url&application_name=sst");
    round_trip(&with, StoreKind::Postgres).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name = 'from_url')",
    )
    .bind(&schema)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(exists, "the schema and table options were not used");
    // migrate=false over a table that does not exist: connecting works, using it fails.
    let missing = format!("{url}{sep}schema={schema}&table=never_made&migrate=false");
    let store = connect(&missing).await.expect("connect without migrating");
    assert!(store.len().await.is_err());
    for bad in ["tabel=x", "migrate=perhaps", "sslmdoe=require"] {
        let err = connect(&format!("{url}{sep}{bad}")).await.err().expect(bad);
        assert_eq!(
            err.kind(),
            session_stores::ErrorKind::Config,
            "{bad}: {err}"
        );
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
}

/// `key_prefix` in a Redis URL sets the key prefix; an unknown option is a config error.
#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_url_options() {
    use crate::adapters::backends::{REDIS_DEFAULT, REDIS_VAR};
    let Some(url) = crate::support::service_url(REDIS_VAR, REDIS_DEFAULT, 6379) else {
        return;
    };
    let prefix = crate::support::unique_name("sst:url:");
    let sep = if url.contains('?') { '&' } else { '?' };
    let with = format!("{url}{sep}key_prefix={prefix}&protocol=resp2");
    let store = connect(&with).await.expect("connect with key_prefix");
    let id = SessionId::generate();
    store
        .set(&id, &Session::new(Duration::from_secs(60)))
        .await
        .unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("{prefix}{id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(exists, "the key_prefix option was not used");
    store.destroy(&id).await.unwrap();
    let err = connect(&format!("{url}{sep}keyprefix=x"))
        .await
        .err()
        .expect("typo");
    assert_eq!(err.kind(), session_stores::ErrorKind::Config, "{err}");
}
