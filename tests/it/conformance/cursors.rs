//! A saved scan cursor resumes on another instance of the store over the same backend
//! (the contract: the cursor is the whole state), for every backend that has one: two
//! stores opened with `connect` on one URL, the scan started on the first and finished on
//! the second. The suite checks resuming on the same instance; it cannot open a second one.

use std::collections::BTreeSet;

use serde_json::json;
use session_stores::{ScanCursor, Session, SessionId, SessionStore};

#[cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]
use crate::support;

/// Writes 40 sessions through `a`, scans two pages of 7 on `a`, and resumes from the saved
/// text of its cursor on `b`: every session exactly once.
async fn resumes_on_another_instance(url: &str) {
    let a = session_stores::connect(url)
        .await
        .expect("open the first store");
    let b = session_stores::connect(url)
        .await
        .expect("open the second store");
    a.clear().await.expect("clear");
    for n in 0..40u64 {
        let mut session = Session::new(std::time::Duration::from_secs(3600));
        session.insert("n", json!(n)).expect("a number");
        a.set(&SessionId::generate(), &session).await.expect("set");
    }
    let mut seen = BTreeSet::new();
    let mut cursor: Option<ScanCursor> = None;
    for page in 0.. {
        // Two pages on the first store, then the rest on the second from the cursor's text.
        let store: &dyn SessionStore = if page < 2 { &*a } else { &*b };
        let got = store.scan(cursor.as_ref(), 7).await.expect("scan");
        for (_, session) in &got.sessions {
            let n = session.data()["n"].as_u64().expect("numbered");
            assert!(seen.insert(n), "{url}: session {n} returned twice");
        }
        let Some(next) = got.next else { break };
        cursor = Some(ScanCursor::new(next.as_str().to_string()));
        assert!(page < 1000, "{url}: the scan did not end");
    }
    assert_eq!(seen.len(), 40, "{url}: the resumed scan missed sessions");
    b.clear().await.expect("clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_cursor_resumes_on_another_instance_of_every_backend() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut urls: Vec<String> = Vec::new();
    #[cfg(feature = "file")]
    urls.push(format!("file://{}", dir.path().join("files").display()));
    #[cfg(feature = "sqlite")]
    urls.push(format!(
        "sqlite://{}?table=cursors",
        dir.path().join("cursors.db").display()
    ));
    #[cfg(feature = "postgres")]
    if let Some(url) = support::service_url(
        "SESSION_STORES_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        5432,
    ) {
        let table = support::unique_name("cursors_");
        urls.push(format!("{url}?table={table}"));
    }
    #[cfg(feature = "mysql")]
    let mysql = support::service_url(support::MYSQL_VAR, support::MYSQL_DEFAULT, 3306).map(|url| {
        let table = support::unique_name("cursors_");
        urls.push(format!("{url}?table={table}"));
        (url, table)
    });
    #[cfg(feature = "redis")]
    {
        if let Some(url) =
            support::service_url("SESSION_STORES_REDIS_URL", "redis://127.0.0.1:6379", 6379)
        {
            let prefix = support::unique_name("sst:cursors:");
            urls.push(format!("{url}?key_prefix={prefix}:"));
        }
        if let Some(nodes) = support::service_urls("SESSION_STORES_REDIS_CLUSTER_URLS", 7001) {
            let hosts: Vec<&str> = nodes
                .iter()
                .map(|n| n.trim_start_matches("redis://"))
                .collect();
            let prefix = support::unique_name("sst:cursors:");
            urls.push(format!(
                "redis+cluster://{}?key_prefix={prefix}:",
                hosts.join(",")
            ));
        }
    }
    assert!(!urls.is_empty(), "no backend to resume a cursor on");
    for url in &urls {
        resumes_on_another_instance(url).await;
    }
    #[cfg(feature = "mysql")]
    if let Some((url, table)) = mysql {
        let pool = sqlx::MySqlPool::connect(&url).await.expect("connect");
        support::drop_mysql_tables(&pool, &table).await;
    }
    drop(dir);
}
