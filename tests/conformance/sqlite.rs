//! The conformance suite against `SqliteStore`: file-backed (one fresh database file per
//! check), in-memory, several stores sharing one file through their own tables, and without
//! WAL or read connections.

use std::time::SystemTime;

use session_stores::{Result, Session, SessionId, SessionStore, SqliteStore, async_trait};
use tempfile::TempDir;

use crate::support::unique_name;

/// A file-backed store that owns the temporary directory of its database.
struct TempSqlite {
    store: SqliteStore,
    _dir: TempDir,
}

impl TempSqlite {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(dir.path().join("sessions.db"))
            .await
            .expect("open a file-backed SqliteStore");
        TempSqlite { store, _dir: dir }
    }
}

#[async_trait]
impl SessionStore for TempSqlite {
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

/// One #[test] per check, each on a fresh database file.
mod file {
    session_stores::conformance_tests!(|| async { super::TempSqlite::new().await });
}

/// One #[test] per check, each on a fresh in-memory database.
mod memory {
    session_stores::conformance_tests!(|| async {
        session_stores::SqliteStore::open_in_memory()
            .await
            .expect("open an in-memory SqliteStore")
    });
}

/// Every check on one shared database file, each store with its own table: `clear` and
/// `len` stay within a store's table, and the schema is shared safely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_file_with_a_table_per_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    session_stores::conformance::run(move || {
        let path = path.clone();
        async move {
            SqliteStore::builder()
                .table(unique_name("sessions_"))
                .open(path)
                .await
                .expect("open a SqliteStore on the shared file")
        }
    })
    .await
    .unwrap();
}

/// Without WAL and without read connections (the write connection serves everything), the
/// contract still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_without_wal_or_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollback.db");
    session_stores::conformance::run(move || {
        let path = path.clone();
        async move {
            SqliteStore::builder()
                .table(unique_name("t"))
                .wal(false)
                .readers(0)
                .delete_batch_size(1)
                .open(path)
                .await
                .expect("open a SqliteStore without WAL")
        }
    })
    .await
    .unwrap();
}
