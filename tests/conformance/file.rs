//! The conformance suite against `FileStore`, each check in a fresh temporary directory
//! that is removed with the store.

use std::time::SystemTime;

use session_stores::stores::file::FileStoreBuilder;
use session_stores::{FileStore, Result, Session, SessionId, SessionStore, async_trait};
use tempfile::TempDir;

/// A `FileStore` that owns its temporary directory.
struct TempFileStore {
    store: FileStore,
    _dir: TempDir,
}

async fn temp_store(configure: fn(FileStoreBuilder) -> FileStoreBuilder) -> TempFileStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = configure(FileStore::builder(dir.path().join("sessions")))
        .open()
        .await
        .expect("open the file store");
    TempFileStore { store, _dir: dir }
}

#[async_trait]
impl SessionStore for TempFileStore {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        self.store.get(id).await
    }
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        self.store.set(id, session).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.store.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        self.store.touch(id, expires_at).await
    }
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        self.store.create(id, session).await
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        self.store.set_if_version(id, session, expected).await
    }
    async fn len(&self) -> Result<u64> {
        self.store.len().await
    }
    async fn clear(&self) -> Result<()> {
        self.store.clear().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.store.delete_expired().await
    }
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
