//! The session table's schema: creating it, checking an existing one, recording its version
//! and upgrading an older one, when the write connection opens.

use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::{Error, Result};

use super::builder::{ConnConfig, Location};
use super::error::sql_error;
use super::worker::sqlite_wait;

/// The schema version this release writes and reads. Version 2 added the `owner` column
/// and its index; version 3 the `absolute_expiry` and `moved_to` columns (absolute expiry
/// and rotation). A table of an older version is upgraded when a store opens it.
pub const SCHEMA_VERSION: i64 = 3;

/// The table that records the schema version of each session table in a database.
pub const SCHEMA_TABLE: &str = "session_stores_schema";

impl ConnConfig {
    /// Switches to WAL if asked, and creates (or checks) the schema. SQLite answers some of
    /// these steps with an immediate `SQLITE_BUSY` that its busy handler does not wait out
    /// (while another connection writes or checkpoints), so a busy answer is retried, with a
    /// short pause, until the busy timeout has passed.
    pub(super) fn set_up(&self, conn: &mut Connection) -> Result<()> {
        let deadline = Instant::now() + sqlite_wait(self.busy_timeout);
        loop {
            match self.try_set_up(conn) {
                Err(Error::Timeout { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    fn try_set_up(&self, conn: &mut Connection) -> Result<()> {
        if self.wal && matches!(self.location, Location::File(_)) {
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(|e| sql_error("open", None, e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::config(format!(
                    "SQLite refused to switch the database to WAL (journal mode is {mode:?}); \
                     open it with wal(false) to keep its journal mode"
                )));
            }
        }
        self.create_schema(conn).map_err(|e| match e {
            SchemaError::Sql(err) => sql_error("open", None, err),
            SchemaError::Config(message) => Error::config(message),
        })
    }

    fn create_schema(&self, conn: &mut Connection) -> Result<(), SchemaError> {
        let table = &self.table;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (\
                 table_name TEXT PRIMARY KEY NOT NULL, \
                 version INTEGER NOT NULL)"
        ))?;
        let recorded: Option<i64> = tx
            .query_row(
                &format!("SELECT version FROM {SCHEMA_TABLE} WHERE table_name = ?1"),
                params![table],
                |row| row.get(0),
            )
            .optional()?;
        match recorded {
            Some(version) if version > SCHEMA_VERSION => {
                return Err(SchemaError::Config(format!(
                    "SQLite table {table:?} has schema version {version}, newer than the {SCHEMA_VERSION} \
                     this release of session-stores knows; upgrade session-stores"
                )));
            }
            Some(version) if version < 1 => {
                return Err(SchemaError::Config(format!(
                    "SQLite table {table:?} has an invalid schema version {version}"
                )));
            }
            _ => {}
        }
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS \"{table}\" (\
                 id TEXT PRIMARY KEY NOT NULL, \
                 data TEXT NOT NULL, \
                 expires_at INTEGER NOT NULL, \
                 version INTEGER NOT NULL, \
                 owner TEXT NULL, \
                 absolute_expiry INTEGER NULL, \
                 moved_to TEXT NULL)"
        ))?;
        let columns: Vec<(String, i64)> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT name, pk FROM pragma_table_info('{table}')"
            ))?;
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        let id_is_key = columns
            .iter()
            .filter(|(_, pk)| *pk > 0)
            .map(|(name, _)| name.as_str())
            .eq(["id"]);
        if !id_is_key {
            return Err(SchemaError::Config(format!(
                "SQLite table {table:?} already exists and `id` is not its primary key; \
                 it is not a session table (choose another table name)"
            )));
        }
        for wanted in ["id", "data", "expires_at", "version"] {
            if !columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(wanted)) {
                return Err(SchemaError::Config(format!(
                    "SQLite table {table:?} already exists without a {wanted:?} column; \
                     it is not a session table (choose another table name)"
                )));
            }
        }
        // Schema version 1 had no owners: its sessions are kept, with no owner.
        if !columns.iter().any(|(c, _)| c.eq_ignore_ascii_case("owner")) {
            tx.execute_batch(&format!(
                "ALTER TABLE \"{table}\" ADD COLUMN owner TEXT NULL"
            ))?;
        }
        // Schema version 2 had no lifetimes: its sessions are kept, with no absolute expiry,
        // none of them a rotated id.
        for (column, decl) in [
            ("absolute_expiry", "INTEGER NULL"),
            ("moved_to", "TEXT NULL"),
        ] {
            if !columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(column)) {
                tx.execute_batch(&format!(
                    "ALTER TABLE \"{table}\" ADD COLUMN {column} {decl}"
                ))?;
            }
        }
        tx.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_expires_at\" ON \"{table}\" (expires_at); \
             CREATE INDEX IF NOT EXISTS \"{table}_owner\" ON \"{table}\" (owner) \
             WHERE owner IS NOT NULL"
        ))?;
        tx.execute(
            &format!(
                "INSERT INTO {SCHEMA_TABLE} (table_name, version) VALUES (?1, ?2) \
                 ON CONFLICT (table_name) DO UPDATE SET version = excluded.version \
                 WHERE {SCHEMA_TABLE}.version < excluded.version"
            ),
            params![table, SCHEMA_VERSION],
        )?;
        tx.commit()?;
        Ok(())
    }
}

enum SchemaError {
    Sql(rusqlite::Error),
    Config(String),
}

impl From<rusqlite::Error> for SchemaError {
    fn from(err: rusqlite::Error) -> Self {
        SchemaError::Sql(err)
    }
}
