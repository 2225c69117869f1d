//! The backends the adapter tests run on, each able to hand out fresh, isolated stores.

#![allow(dead_code)]

use std::sync::Arc;

use session_stores::SessionStore;

#[allow(unused_imports)]
use crate::support;

/// One backend for one test: everything a fresh store needs (a temporary directory, a pool,
/// a URL), and what must be removed at the end.
pub enum Backend {
    Memory,
    #[cfg(feature = "file")]
    File(tempfile::TempDir),
    #[cfg(feature = "sqlite")]
    Sqlite(tempfile::TempDir),
    #[cfg(feature = "postgres")]
    Postgres {
        pool: sqlx::PgPool,
        schema: String,
    },
    #[cfg(feature = "mysql")]
    MySql {
        pool: sqlx::MySqlPool,
        prefix: String,
    },
    #[cfg(feature = "redis")]
    Redis(String),
    #[cfg(feature = "redis")]
    RedisCluster(Vec<String>),
}

pub const POSTGRES_VAR: &str = "SESSION_STORES_POSTGRES_URL";
pub const POSTGRES_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const REDIS_VAR: &str = "SESSION_STORES_REDIS_URL";
pub const REDIS_DEFAULT: &str = "redis://127.0.0.1:6379";
pub const CLUSTER_VAR: &str = "SESSION_STORES_REDIS_CLUSTER_URLS";

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            #[cfg(feature = "file")]
            Backend::File(_) => "file",
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres { .. } => "postgres",
            #[cfg(feature = "mysql")]
            Backend::MySql { .. } => "mysql",
            #[cfg(feature = "redis")]
            Backend::Redis(_) => "redis",
            #[cfg(feature = "redis")]
            Backend::RedisCluster(_) => "redis-cluster",
        }
    }

    pub async fn memory() -> Option<Backend> {
        Some(Backend::Memory)
    }

    #[cfg(feature = "file")]
    pub async fn file() -> Option<Backend> {
        Some(Backend::File(
            tempfile::tempdir().expect("a temporary directory"),
        ))
    }

    #[cfg(feature = "sqlite")]
    pub async fn sqlite() -> Option<Backend> {
        Some(Backend::Sqlite(
            tempfile::tempdir().expect("a temporary directory"),
        ))
    }

    /// `None` (after a loud notice) when no server is reachable outside CI.
    #[cfg(feature = "postgres")]
    pub async fn postgres() -> Option<Backend> {
        let url = support::service_url(POSTGRES_VAR, POSTGRES_DEFAULT, 5432)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect to the test Postgres");
        Some(Backend::Postgres {
            pool,
            schema: support::unique_name("sst_adapters_"),
        })
    }

    /// `None` (after a loud notice) when no server is reachable outside CI.
    #[cfg(feature = "mysql")]
    pub async fn mysql() -> Option<Backend> {
        let url = support::service_url(support::MYSQL_VAR, support::MYSQL_DEFAULT, 3306)?;
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect to the test MySQL");
        Some(Backend::MySql {
            pool,
            prefix: support::unique_name("sst_adapters_") + "_",
        })
    }

    #[cfg(feature = "redis")]
    pub async fn redis() -> Option<Backend> {
        support::service_url(REDIS_VAR, REDIS_DEFAULT, 6379).map(Backend::Redis)
    }

    #[cfg(feature = "redis")]
    pub async fn redis_cluster() -> Option<Backend> {
        support::service_urls(CLUSTER_VAR, 7001).map(Backend::RedisCluster)
    }

    /// A new store that shares nothing with the stores handed out before.
    pub async fn fresh(&self) -> Arc<dyn SessionStore> {
        match self {
            Backend::Memory => Arc::new(session_stores::MemoryStore::new(10_000)),
            #[cfg(feature = "file")]
            Backend::File(dir) => {
                let path = dir.path().join(support::unique_name("store_"));
                Arc::new(session_stores::FileStore::new(path).await.expect("open"))
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(dir) => {
                let path = dir.path().join(support::unique_name("store_") + ".db");
                Arc::new(session_stores::SqliteStore::open(path).await.expect("open"))
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres { pool, schema } => {
                let store = session_stores::PostgresStore::builder()
                    .schema(schema.as_str())
                    .table(support::unique_name("sessions_"))
                    .build(pool.clone())
                    .expect("valid names");
                store.migrate().await.expect("migrate");
                Arc::new(store)
            }
            #[cfg(feature = "mysql")]
            Backend::MySql { pool, prefix } => {
                let store = session_stores::MySqlStore::builder()
                    .table(support::unique_name(prefix))
                    .build(pool.clone())
                    .expect("valid names");
                store.migrate().await.expect("migrate");
                Arc::new(store)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(url) => Arc::new(
                session_stores::RedisStore::builder(url)
                    .key_prefix(support::unique_name("sst:adapters:"))
                    .connect()
                    .await
                    .expect("connect"),
            ),
            #[cfg(feature = "redis")]
            Backend::RedisCluster(urls) => Arc::new(
                session_stores::RedisStore::cluster_builder(urls)
                    .key_prefix(support::unique_name("sst:adapters:"))
                    .connect()
                    .await
                    .expect("connect"),
            ),
        }
    }

    /// Removes what the backend left behind (the Postgres schema; temporary directories go
    /// when dropped, Redis keys are cleared per store by the scenarios).
    pub async fn finish(self) {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres { pool, schema } = &self {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(pool)
            .await
            .expect("drop the test schema");
        }
        #[cfg(feature = "mysql")]
        if let Backend::MySql { pool, prefix } = &self {
            support::drop_mysql_tables(pool, prefix).await;
        }
        drop(self);
    }
}

/// Declares one test per enabled backend: `$prefix_memory`, `$prefix_file`, ..., each
/// calling `$run(backend)` inside the test attribute `$attr`.
#[macro_export]
macro_rules! per_backend {
    ($attr:meta, $run:path) => {
        #[$attr]
        async fn memory() {
            $run($crate::adapters::backends::Backend::memory().await).await;
        }
        #[cfg(feature = "file")]
        #[$attr]
        async fn file() {
            $run($crate::adapters::backends::Backend::file().await).await;
        }
        #[cfg(feature = "sqlite")]
        #[$attr]
        async fn sqlite() {
            $run($crate::adapters::backends::Backend::sqlite().await).await;
        }
        #[cfg(feature = "postgres")]
        #[$attr]
        async fn postgres() {
            $run($crate::adapters::backends::Backend::postgres().await).await;
        }
        #[cfg(feature = "mysql")]
        #[$attr]
        async fn mysql() {
            $run($crate::adapters::backends::Backend::mysql().await).await;
        }
        #[cfg(feature = "redis")]
        #[$attr]
        async fn redis() {
            $run($crate::adapters::backends::Backend::redis().await).await;
        }
        #[cfg(feature = "redis")]
        #[$attr]
        async fn redis_cluster() {
            $run($crate::adapters::backends::Backend::redis_cluster().await).await;
        }
    };
}
