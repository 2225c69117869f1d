//! The conformance suite against `FileStore`, each check in a fresh temporary directory
//! that is removed with the store.

use session_stores::FileStore;
use session_stores::stores::file::FileStoreBuilder;

use crate::support::WithDir;

/// A `FileStore` in a fresh temporary directory that is removed with the store.
async fn temp_store(configure: fn(FileStoreBuilder) -> FileStoreBuilder) -> WithDir<FileStore> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = configure(FileStore::builder(dir.path().join("sessions")))
        .open()
        .await
        .expect("open the file store");
    WithDir::new(store, dir)
}

// One #[test] per check, with the default options.
session_stores::conformance_tests!(|| temp_store(|b| b));

/// `durable(true)` (fsync of file and directory) keeps the contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_durable() {
    session_stores::conformance::run(|| temp_store(|b| b.durable(true)))
        .await
        .unwrap();
}

/// Without the write-skip cache every state is read from disk: still the contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_without_cache() {
    session_stores::conformance::run(|| temp_store(|b| b.cache_capacity(0)))
        .await
        .unwrap();
}

/// A one-entry cache, so entries are evicted all the time: still the contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_with_a_tiny_cache() {
    session_stores::conformance::run(|| temp_store(|b| b.cache_capacity(1).cache_max_bytes(4096)))
        .await
        .unwrap();
}
