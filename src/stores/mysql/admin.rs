//! What the `session-stores` command needs of a MySQL deployment beyond the contract
//! (feature `cli`): counting expired rows, dropping a scratch table, inspecting indexes.
//! Every query runs on a one-connection pool of its own within [`ADMIN_QUERY_TIMEOUT`],
//! connecting included, and names its table only as the store does: from the URL's last,
//! decoded, validated `table` option, quoted.

use std::future::Future;
use std::time::Duration;

use sqlx::MySqlPool;

use crate::admin::finding::Finding;
use crate::error::{Error, Result};
use crate::session::now_millis;
use crate::url::StoreUrl;

use super::MySqlStore;
use super::statements::{INDEX_SUFFIX, quote};

/// How long one of the command's own queries may take, connecting included.
#[cfg(not(test))]
pub(crate) const ADMIN_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// In this crate's unit tests the bound is shorter, so that the test holding the commands to
/// it against a silent server does not wait 10 s.
#[cfg(test)]
pub(crate) const ADMIN_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The store a URL names, on a lazy one-connection pool that waits at most `limit`; it is
/// never migrated.
fn lazy_store(url: &StoreUrl, limit: Duration) -> Result<MySqlStore> {
    let parsed = super::url::parse(url)?;
    parsed
        .builder
        .max_connections(1)
        .acquire_timeout(limit)
        .operation_timeout(limit)
        .connect_lazy(&parsed.driver_url)
}

/// Runs `query` on the store's own one-connection pool within `limit`: a server that
/// accepts connections and never answers is an error naming `what`, not a hang.
pub(crate) async fn within<T, F, Fut>(
    url: &StoreUrl,
    limit: Duration,
    what: &'static str,
    query: F,
) -> Result<T>
where
    F: FnOnce(MySqlStore) -> Fut,
    Fut: Future<Output = std::result::Result<T, sqlx::Error>>,
{
    let store = lazy_store(url, limit)?;
    let pool: MySqlPool = store.pool().clone();
    let answer = tokio::time::timeout(limit, query(store)).await;
    pool.close().await;
    match answer {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(Error::backend(what, None, err)),
        Err(elapsed) => Err(Error::Timeout {
            operation: what,
            id: None,
            what: "the server's reply (the command's own query)",
            source: Some(Box::new(elapsed)),
        }),
    }
}

/// How many expired rows the table holds (`delete_expired` has not removed yet).
pub(crate) async fn count_expired(url: &StoreUrl) -> Result<u64> {
    let count: i64 = within(
        url,
        ADMIN_QUERY_TIMEOUT,
        "counting expired sessions",
        |store| async move {
            let sql = format!(
                "SELECT COUNT(*) FROM {} WHERE expires_at <= ?",
                quote(store.table())
            );
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(now_millis())
                .fetch_one(store.pool())
                .await
        },
    )
    .await?;
    Ok(count.max(0) as u64)
}

/// Drops the store's table (a scratch table of `check`), if it is there.
pub(crate) async fn drop_table(url: &StoreUrl) -> Result<()> {
    within(
        url,
        ADMIN_QUERY_TIMEOUT,
        "dropping a scratch table",
        |store| async move {
            let sql = format!("DROP TABLE IF EXISTS {}", quote(store.table()));
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(store.pool())
                .await
                .map(drop)
        },
    )
    .await
}

/// What loses sessions or time in the deployment's table: a missing index on `expires_at`.
pub(crate) async fn inspect(url: &StoreUrl) -> Vec<Finding> {
    let indexed = within(
        url,
        ADMIN_QUERY_TIMEOUT,
        "reading the MySQL indexes",
        |store| async move {
            let table = store.table().to_owned();
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM information_schema.statistics \
                 WHERE table_schema = DATABASE() AND table_name = ? \
                 AND column_name = 'expires_at' AND seq_in_index = 1",
            )
            .bind(&table)
            .fetch_one(store.pool())
            .await
            .map(|count| (table, count > 0))
        },
    )
    .await;
    match indexed {
        Ok((_, true)) => Vec::new(),
        Ok((table, false)) => vec![Finding::problem(format!(
            "MySQL table {table} has no index on expires_at: every delete_expired scans the \
             whole table. Run the store's migration (connect without migrate=false) or CREATE \
             INDEX {table}{INDEX_SUFFIX} ON {table} (expires_at)"
        ))],
        Err(err) => vec![Finding::note(crate::error::chain(&err))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A MySQL server that hangs: the kernel completes the TCP handshake from the
    /// listener's backlog, and nothing ever answers (not even the server greeting).
    fn silent_mysql() -> (std::net::TcpListener, StoreUrl) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "mysql://root@{}/test?table=sessions",
            listener.local_addr().expect("address")
        );
        (listener, StoreUrl::parse(&url).expect("a URL"))
    }

    /// `stats`' expired count, and `check`'s index inspection and scratch-table drop, fail
    /// (or note the failure) within the bound instead of hanging.
    #[tokio::test]
    async fn the_commands_own_mysql_queries_are_bounded() {
        let (_listener, url) = silent_mysql();
        let started = Instant::now();
        let (count, dropped, findings) =
            tokio::join!(count_expired(&url), drop_table(&url), inspect(&url));
        let took = started.elapsed();
        assert!(
            count.is_err(),
            "the expired count came back from a silent server"
        );
        assert!(dropped.is_err(), "the drop came back from a silent server");
        assert!(
            findings.iter().all(|f| !f.is_problem()),
            "{:?}",
            findings.len()
        );
        assert!(
            took >= ADMIN_QUERY_TIMEOUT && took < ADMIN_QUERY_TIMEOUT * 2,
            "took {took:?}"
        );
    }

    /// The bound does not get in the way of a server that answers.
    #[tokio::test]
    async fn a_direct_query_to_mysql_answers() {
        let url = std::env::var("SESSION_STORES_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
        let url = StoreUrl::parse(&url).expect("a URL");
        let answer: i64 = within(&url, ADMIN_QUERY_TIMEOUT, "probing", |store| async move {
            sqlx::query_scalar("SELECT 41 + 1")
                .fetch_one(store.pool())
                .await
        })
        .await
        .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(answer, 42);
    }
}
