//! Runs the public conformance suite against every built-in store enabled by features, and
//! proves the suite has teeth against deliberately broken stores.
//!
//! Needs the `conformance` feature: `cargo test --all-features`.
#![cfg(feature = "conformance")]

mod broken;
#[cfg(feature = "memory")]
mod broken_lifetimes;
#[cfg(any(
    feature = "file",
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "redis"
))]
mod cursors;

#[cfg(feature = "memory")]
mod memory {
    use session_stores::MemoryStore;

    // One #[test] per check, as a user of the macro gets them.
    session_stores::conformance_tests!(|| async { MemoryStore::new(10_000) });

    /// The owner checks pass at once for a store that does not declare owners: every
    /// built-in store must declare them.
    #[tokio::test]
    async fn every_built_in_store_declares_owners() {
        use session_stores::SessionStore;
        assert!(MemoryStore::new(10).capabilities().owners, "memory");
        #[cfg(feature = "file")]
        {
            let dir = tempfile::tempdir().unwrap();
            let store = session_stores::FileStore::new(dir.path()).await.unwrap();
            assert!(store.capabilities().owners, "file");
        }
        #[cfg(feature = "sqlite")]
        {
            let store = session_stores::SqliteStore::open_in_memory().await.unwrap();
            assert!(store.capabilities().owners, "sqlite");
        }
    }

    /// A small sharded store (4096 sessions over 16 shards) still keeps the contract.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_suite_on_a_sharded_store() {
        session_stores::conformance::run(|| async {
            MemoryStore::builder().capacity(4096).shards(16).build()
        })
        .await
        .unwrap();
    }

    /// A byte budget does not change the contract (the budget is large enough for the suite's
    /// 1 MiB session).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_suite_with_a_byte_budget() {
        session_stores::conformance::run(|| async {
            MemoryStore::builder()
                .capacity(10_000)
                .max_bytes(64 << 20)
                .shards(1)
                .build()
        })
        .await
        .unwrap();
    }
}

#[cfg(feature = "file")]
mod file;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(all(feature = "hashed-ids", feature = "encryption"))]
pub mod wrappers;
