//! The conformance suite against [`PostgresStore`] on a real server.
//!
//! Reads `SESSION_STORES_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! skips with a notice when no server is reachable, and fails in CI. Every store of the run
//! gets its own table inside one schema made for this run, which is dropped at the end, so a
//! run never touches anyone's data.

use session_stores::{PostgresStore, SessionStore};
use sqlx::postgres::PgPoolOptions;

use crate::support;

const VAR: &str = "SESSION_STORES_POSTGRES_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite() {
    let _load = support::loads_the_machine().await;
    let Some(url) = support::service_url(VAR, DEFAULT_URL, 5432) else {
        return;
    };
    let run = support::RunSchema::new(&url, "sst_conf_").await;
    // The owner checks pass at once for a store that does not declare owners.
    assert!(
        run.factory()().await.capabilities().owners,
        "PostgresStore must declare owners"
    );
    let result = session_stores::conformance::run(run.factory()).await;
    run.drop().await;
    if let Err(failures) = result {
        panic!("{failures}");
    }
    eprintln!(
        "PostgresStore passed all {} conformance checks",
        session_stores::conformance::check_names().count()
    );
}

/// A store that opens its own pool (through `connect`) keeps the contract too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_with_own_pools() {
    let _load = support::loads_the_machine().await;
    let Some(url) = support::service_url(VAR, DEFAULT_URL, 5432) else {
        return;
    };
    let schema = support::unique_name("sst_conf_");
    let url_for_factory = url.clone();
    let schema_for_factory = schema.clone();
    let result = session_stores::conformance::run(move || {
        let (url, schema) = (url_for_factory.clone(), schema_for_factory.clone());
        async move {
            let store = PostgresStore::builder()
                .schema(schema)
                .table(support::unique_name("sessions_"))
                .max_connections(4)
                .delete_batch_size(2)
                .connect(&url)
                .await
                .expect("connect");
            store.migrate().await.expect("migrate");
            store
        }
    })
    .await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .expect("drop the run's schema");
    if let Err(failures) = result {
        panic!("{failures}");
    }
}
