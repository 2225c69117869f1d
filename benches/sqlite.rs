//! SqliteStore against raw rusqlite prepared statements on the same schema, in one run.
//!
//! Both use a file database in WAL mode with `synchronous = NORMAL` and a 5 s busy timeout
//! (the store's defaults). The raw client runs the same statements, with the same JSON
//! encoding and the same transactions, directly on one connection behind a mutex; it blocks
//! the calling executor thread, which the store never does (its work runs on its own
//! connection threads), so the ratio includes the cost of that hand-off.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::{Plan, StoreTarget, Target};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};
use session_stores::{Session, SessionId, SqliteStore, now_millis};

const TABLE: &str = "sessions";

struct RawSqlite(Mutex<Connection>);

fn connect(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        .expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous");
    conn
}

fn bulk_fill(conn: &mut Connection, ids: &[SessionId], session: &Session) {
    let data = serde_json::to_string(session.data()).expect("encode");
    let tx = conn.transaction().expect("tx");
    {
        let mut stmt = tx
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO {TABLE} (id, data, expires_at, version) VALUES (?1, ?2, ?3, 1)"
            ))
            .expect("prepare");
        for id in ids {
            stmt.execute(params![id.as_str(), data, session.expires_at_millis()])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

impl RawSqlite {
    fn open(path: &Path) -> Self {
        let conn = connect(path);
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, \
             expires_at INTEGER NOT NULL, version INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS {TABLE}_expires_at ON {TABLE} (expires_at);"
        ))
        .expect("schema");
        RawSqlite(Mutex::new(conn))
    }
}

#[async_trait]
impl Target for RawSqlite {
    async fn get(&self, id: &SessionId) -> bool {
        let conn = self.0.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT data, expires_at, version FROM {TABLE} WHERE id = ?1 AND expires_at > ?2"
            ))
            .expect("prepare");
        let row = stmt
            .query_row(params![id.as_str(), now_millis()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .optional()
            .expect("get");
        match row {
            Some((data, expires_at, version)) => {
                let data: Map<String, Value> = serde_json::from_str(&data).expect("decode");
                std::hint::black_box(Session::from_parts(data, expires_at, version as u64));
                true
            }
            None => false,
        }
    }

    async fn set(&self, id: &SessionId, session: &Session) {
        let data = serde_json::to_string(session.data()).expect("encode");
        let mut conn = self.0.lock().unwrap();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO {TABLE} (id, data, expires_at, version) VALUES (?1, ?2, ?3, 1) \
                     ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                     expires_at = excluded.expires_at, \
                     version = CASE WHEN {TABLE}.expires_at > ?4 THEN {TABLE}.version + 1 ELSE 1 END \
                     RETURNING version"
                ))
                .expect("prepare");
            let version: i64 = stmt
                .query_row(
                    params![id.as_str(), data, session.expires_at_millis(), now_millis()],
                    |row| row.get(0),
                )
                .expect("upsert");
            std::hint::black_box(version);
        }
        tx.commit().expect("commit");
    }

    async fn touch(&self, id: &SessionId, expires_at: i64) -> bool {
        let conn = self.0.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(&format!(
                "UPDATE {TABLE} SET expires_at = ?2 WHERE id = ?1 AND expires_at > ?3"
            ))
            .expect("prepare");
        stmt.execute(params![id.as_str(), expires_at, now_millis()])
            .expect("touch")
            == 1
    }

    async fn destroy(&self, id: &SessionId) {
        let conn = self.0.lock().unwrap();
        conn.prepare_cached(&format!("DELETE FROM {TABLE} WHERE id = ?1"))
            .expect("prepare")
            .execute(params![id.as_str()])
            .expect("delete");
    }

    async fn create(&self, id: &SessionId, session: &Session) -> bool {
        let data = serde_json::to_string(session.data()).expect("encode");
        let mut conn = self.0.lock().unwrap();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        let created = tx
            .prepare_cached(&format!(
                "INSERT INTO {TABLE} (id, data, expires_at, version) VALUES (?1, ?2, ?3, 1) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                 expires_at = excluded.expires_at, version = 1 WHERE {TABLE}.expires_at <= ?4"
            ))
            .expect("prepare")
            .execute(params![
                id.as_str(),
                data,
                session.expires_at_millis(),
                now_millis()
            ])
            .expect("create")
            == 1;
        tx.commit().expect("commit");
        created
    }

    async fn cas(&self, id: &SessionId, session: &Session) -> bool {
        let expected: i64 = {
            let conn = self.0.lock().unwrap();
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT data, expires_at, version FROM {TABLE} WHERE id = ?1 AND expires_at > ?2"
                ))
                .expect("prepare");
            stmt.query_row(params![id.as_str(), now_millis()], |row| {
                let data: String = row.get(0)?;
                let parsed: Map<String, Value> = serde_json::from_str(&data).unwrap_or_default();
                std::hint::black_box(parsed);
                row.get(2)
            })
            .optional()
            .expect("read")
            .unwrap_or(0)
        };
        let data = serde_json::to_string(session.data()).expect("encode");
        let mut conn = self.0.lock().unwrap();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        let updated = tx
            .prepare_cached(&format!(
                "UPDATE {TABLE} SET data = ?2, expires_at = ?3, version = version + 1 \
                 WHERE id = ?1 AND version = ?4 AND expires_at > ?5"
            ))
            .expect("prepare")
            .execute(params![
                id.as_str(),
                data,
                session.expires_at_millis(),
                expected,
                now_millis()
            ])
            .expect("update")
            == 1;
        tx.commit().expect("commit");
        updated
    }

    async fn fill(&self, ids: &[SessionId], session: &Session) {
        bulk_fill(&mut self.0.lock().unwrap(), ids, session);
    }
}

fn main() {
    let mut c = common::criterion();
    let rt = common::runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let store_path: PathBuf = dir.path().join("store.db");
    let raw_path = dir.path().join("raw.db");
    let store = rt
        .block_on(SqliteStore::open(&store_path))
        .expect("open store");
    let fill_path = store_path.clone();
    let store = Arc::new(StoreTarget::with_bulk_fill(
        store,
        Arc::new(move |ids: &[SessionId], session: &Session| {
            bulk_fill(&mut connect(&fill_path), ids, session)
        }),
    ));
    let raw = Arc::new(RawSqlite::open(&raw_path));
    let plan = Plan {
        backend: "sqlite",
        populations: vec![1_000, 100_000, 1_000_000],
        expiry_only_set: false,
    };
    common::run_all(&mut c, &rt, &plan, store, raw);
    c.final_summary();
}
