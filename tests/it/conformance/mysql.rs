//! The conformance suite against [`MySqlStore`] on a real server (MariaDB in CI).
//!
//! Reads `SESSION_STORES_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`); skips with
//! a notice when no server is reachable, and fails in CI. Every store of the run gets a table
//! of its own named with the run's prefix, all dropped at the end, so a run never touches
//! anyone's data.

use session_stores::{MySqlStore, SessionStore};

use crate::support::{self, MYSQL_DEFAULT, MYSQL_VAR};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite() {
    let _load = support::loads_the_machine().await;
    let Some(url) = support::service_url(MYSQL_VAR, MYSQL_DEFAULT, 3306) else {
        return;
    };
    let run = support::RunTables::new(&url, "sst_conf_").await;
    assert!(
        run.factory()().await.capabilities().owners,
        "MySqlStore must declare owners"
    );
    let result = session_stores::conformance::run(run.factory()).await;
    run.drop().await;
    if let Err(failures) = result {
        panic!("{failures}");
    }
    eprintln!(
        "MySqlStore passed all {} conformance checks",
        session_stores::conformance::check_names().count()
    );
}

/// A store that opens its own pool (through `connect`, with its session settings) keeps the
/// contract too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_with_own_pools() {
    let _load = support::loads_the_machine().await;
    let Some(url) = support::service_url(MYSQL_VAR, MYSQL_DEFAULT, 3306) else {
        return;
    };
    let prefix = support::unique_name("sst_own_") + "_";
    let (url_for_factory, prefix_for_factory) = (url.clone(), prefix.clone());
    let result = session_stores::conformance::run(move || {
        let (url, prefix) = (url_for_factory.clone(), prefix_for_factory.clone());
        async move {
            let store = MySqlStore::builder()
                .table(support::unique_name(&prefix))
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
    let pool = sqlx::MySqlPool::connect(&url).await.expect("connect");
    support::drop_mysql_tables(&pool, &prefix).await;
    if let Err(failures) = result {
        panic!("{failures}");
    }
}
