//! The conformance suite against `SqliteStore`: file-backed (one fresh database file per
//! check), in-memory, several stores sharing one file through their own tables, and without
//! WAL or read connections.

use session_stores::SqliteStore;

use crate::support::{WithDir, unique_name};

/// A file-backed store in a fresh temporary directory that is removed with the store.
async fn temp_sqlite() -> WithDir<SqliteStore> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("sessions.db"))
        .await
        .expect("open a file-backed SqliteStore");
    WithDir::new(store, dir)
}

/// One #[test] per check, each on a fresh database file.
mod file {
    session_stores::conformance_tests!(super::temp_sqlite);
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
                // One-row batches over a rollback journal, four checks at once: far slower
                // than any real set-up, so a wider deadline than the default.
                .operation_timeout(std::time::Duration::from_secs(30))
                .busy_timeout(std::time::Duration::from_secs(30))
                .open(path)
                .await
                .expect("open a SqliteStore without WAL")
        }
    })
    .await
    .unwrap();
}
