//! The conformance suite against [`RedisStore`] on a real Redis server and on a real Redis
//! Cluster.
//!
//! - Standalone: `SESSION_STORES_REDIS_URL` (default `redis://127.0.0.1:6379`).
//! - Cluster: `SESSION_STORES_REDIS_CLUSTER_URLS`, comma-separated node URLs (start a
//!   throwaway 3-primary cluster with `.ci/redis-cluster.sh start`).
//!
//! Each missing server is a loud skip locally and a failure in CI. Every store the suite asks
//! for gets its own random key prefix, so a run never touches anyone else's keys (the
//! `clear_*` checks clear only that prefix).

use session_stores::{RedisStore, SessionStore};

use crate::support;

const URL_VAR: &str = "SESSION_STORES_REDIS_URL";
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
const CLUSTER_VAR: &str = "SESSION_STORES_REDIS_CLUSTER_URLS";

/// Runs the whole suite (as `conformance::run` does: a few checks at once) and fails naming
/// every failed check.
async fn run_all<F, Fut>(label: &str, factory: F)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = RedisStore> + Send + 'static,
{
    let _load = support::loads_the_machine().await;
    let started = std::time::Instant::now();
    // The owner checks pass at once for a store that does not declare owners.
    assert!(
        factory().await.capabilities().owners,
        "RedisStore ({label}) must declare owners, or the owner checks are skipped"
    );
    if let Err(failures) = session_stores::conformance::run(factory).await {
        panic!("RedisStore ({label}): {failures}");
    }
    eprintln!(
        "RedisStore ({label}) passed all {} conformance checks in {:?}",
        session_stores::conformance::check_names().count(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_whole_suite() {
    let Some(url) = support::service_url(URL_VAR, DEFAULT_URL, 6379) else {
        return;
    };
    run_all("standalone", move || {
        let url = url.clone();
        async move {
            RedisStore::builder(&url)
                .key_prefix(support::unique_name("sst:conf:"))
                .build()
                .expect("a valid store configuration")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_whole_suite() {
    let Some(urls) = support::service_urls(CLUSTER_VAR, 7001) else {
        return;
    };
    run_all("cluster", move || {
        let urls = urls.clone();
        async move {
            RedisStore::cluster_builder(&urls)
                .key_prefix(support::unique_name("sst:conf:"))
                .build()
                .expect("a valid store configuration")
        }
    })
    .await;
}

/// A store over a pool the application built itself (`from_pool`) keeps the contract too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_from_pool_whole_suite() {
    let Some(url) = support::service_url(URL_VAR, DEFAULT_URL, 6379) else {
        return;
    };
    let pool = deadpool_redis::Config::from_url(url)
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .expect("a pool");
    run_all("from_pool", move || {
        let pool = pool.clone();
        async move {
            RedisStore::from_pool(pool)
                .with_key_prefix(support::unique_name("sst:conf:"))
                .expect("a non-empty prefix")
        }
    })
    .await;
}
