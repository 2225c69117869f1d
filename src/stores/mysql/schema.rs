//! The table and its indexes: `migrate` and the catalog look before it.

use std::time::Duration;

use sqlx::Row;

use super::MySqlStore;
use super::error::{error_number, is_denied, map_err};
use super::statements::{INDEX_SUFFIX, OWNER_INDEX_SUFFIX};
use crate::error::{Error, Result};

/// The named lock (`GET_LOCK`) that [`MySqlStore::migrate`] holds while it changes the
/// schema: this text followed by the table's name, so migrations of different tables do
/// not wait for each other.
pub const MIGRATE_LOCK_NAME: &str = "session-stores migrate ";

/// How long `migrate` waits for the named lock, or for the table's metadata lock, before it
/// fails with a transient error.
const MIGRATE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

impl MySqlStore {
    /// Creates the table with its `expires_at` and `owner` indexes if it is missing, the
    /// indexes if they are, and the `absolute_expiry` and `moved_to` columns on a table of a
    /// release before them. Idempotent, and safe to call from several processes at once,
    /// on a table in use: one instance at a time changes the schema (a named lock), and
    /// InnoDB builds an index online (writes go on). A table that is already there with its
    /// columns and indexes needs no lock and no DDL, so a role with only `SELECT`, `INSERT`,
    /// `UPDATE` and `DELETE` on it can start; a role that may not create a missing index
    /// starts too, on a table that exists (the store scans instead). A lock it cannot get in
    /// time is a transient error: retry. See the [module docs](super#schema) for the SQL.
    pub async fn migrate(&self) -> Result<()> {
        const OP: &str = "migrate";
        let err = |e| map_err(OP, None, e);
        let state = self.catalog_state().await?;
        if state.complete() {
            return Ok(());
        }
        // A connection of its own, closed afterwards (which also releases the named lock if
        // this future is dropped): DDL is not bounded by the operation's statement limit.
        let mut conn = self.pool.acquire().await.map_err(err)?.detach();
        let wait = MIGRATE_LOCK_TIMEOUT.as_secs();
        for (setting, optional) in [
            (format!("SET SESSION lock_wait_timeout = {wait}"), false),
            ("SET SESSION max_statement_time = 0".to_string(), true),
            ("SET SESSION max_execution_time = 0".to_string(), true),
        ] {
            match sqlx::query(sqlx::AssertSqlSafe(setting))
                .execute(&mut conn)
                .await
            {
                Ok(_) => {}
                Err(e) if optional && error_number(&e) == Some(1193) => {}
                Err(e) => return Err(err(e)),
            }
        }
        let lock = format!("{MIGRATE_LOCK_NAME}{}", self.table);
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(&lock)
            .bind(wait as i64)
            .fetch_one(&mut conn)
            .await
            .map_err(err)?;
        if got != Some(1) {
            return Err(Error::Timeout {
                operation: OP,
                id: None,
                what: "the migration lock another instance holds",
                source: None,
            });
        }
        // Looked at again under the lock: another instance may have migrated meanwhile.
        let state = self.catalog_state().await?;
        let existed = state.table;
        let mut steps = Vec::new();
        if !state.table {
            steps.push(&self.sql.create_table);
        } else {
            // A table of a release before absolute expiries and rotation: the store cannot
            // work without the columns (nullable, so old rows read as none; MySQL 8 and
            // MariaDB add them in place, without copying the table).
            if !state.absolute_expiry {
                steps.push(&self.sql.add_absolute_expiry);
            }
            if !state.moved_to {
                steps.push(&self.sql.add_moved_to);
            }
            if !state.index {
                steps.push(&self.sql.create_index);
            }
            if !state.owner_index {
                steps.push(&self.sql.create_owner_index);
            }
        }
        let mut outcome = Ok(());
        for step in steps {
            let column = std::ptr::eq(step, &self.sql.add_absolute_expiry)
                || std::ptr::eq(step, &self.sql.add_moved_to);
            match sqlx::query(step.clone()).execute(&mut conn).await {
                Ok(_) => {}
                // An index that another process (not holding our lock) made meanwhile, or a
                // column (1060).
                Err(e) if matches!(error_number(&e), Some(1061 | 1060)) => {}
                Err(e) if column && is_denied(&e) => {
                    outcome = Err(Error::Config {
                        message: format!(
                            "the session table `{t}` lacks columns this release needs \
                             (`absolute_expiry`, `moved_to`), and this role may not add them: \
                             run migrate() as a role that may alter it, or `ALTER TABLE `{t}` \
                             ADD COLUMN absolute_expiry BIGINT NULL, ADD COLUMN moved_to \
                             VARBINARY(128) NULL` (the columns it lacks)",
                            t = self.table
                        ),
                        source: Some(Box::new(e)),
                    });
                    break;
                }
                // The table is usable without its indexes (delete_expired, sessions_of and
                // destroy_owner scan instead); a role that may not create them still starts.
                Err(e) if existed && is_denied(&e) => break,
                Err(e) => {
                    outcome = Err(err(e));
                    break;
                }
            }
        }
        drop(conn);
        outcome
    }

    /// What of the store's schema is there, read from `information_schema` (no lock, no
    /// privilege beyond connecting and seeing the table).
    async fn catalog_state(&self) -> Result<CatalogState> {
        let row = sqlx::query(
            "SELECT \
             (SELECT COUNT(*) FROM information_schema.columns \
              WHERE table_schema = DATABASE() AND table_name = ? \
              AND column_name IN ('id', 'data', 'expires_at', 'version', 'owner')), \
             (SELECT COUNT(*) FROM information_schema.columns \
              WHERE table_schema = DATABASE() AND table_name = ? \
              AND column_name = 'absolute_expiry'), \
             (SELECT COUNT(*) FROM information_schema.columns \
              WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'moved_to'), \
             (SELECT COUNT(*) FROM information_schema.statistics \
              WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?), \
             (SELECT COUNT(*) FROM information_schema.statistics \
              WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?)",
        )
        .bind(&self.table)
        .bind(&self.table)
        .bind(&self.table)
        .bind(&self.table)
        .bind(format!("{}{INDEX_SUFFIX}", self.table))
        .bind(&self.table)
        .bind(format!("{}{OWNER_INDEX_SUFFIX}", self.table))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_err("migrate", None, e))?;
        let get = |n: usize| -> Result<i64> {
            row.try_get(n)
                .map_err(|e| Error::backend("migrate", None, e))
        };
        let columns = get(0)?;
        if (1..5).contains(&columns) {
            return Err(Error::config(format!(
                "the table `{}` exists but lacks some of the columns id, data, expires_at, \
                 version and owner: it was not made by this store",
                self.table
            )));
        }
        Ok(CatalogState {
            table: columns == 5,
            absolute_expiry: get(1)? > 0,
            moved_to: get(2)? > 0,
            index: get(3)? > 0,
            owner_index: get(4)? > 0,
        })
    }
}

/// What [`MySqlStore::migrate`] found in the catalog.
struct CatalogState {
    /// The table exists with its five first columns.
    table: bool,
    /// The table has `absolute_expiry`.
    absolute_expiry: bool,
    /// The table has `moved_to`.
    moved_to: bool,
    /// The expiry index exists.
    index: bool,
    /// The owner index exists.
    owner_index: bool,
}

impl CatalogState {
    fn complete(&self) -> bool {
        self.table && self.absolute_expiry && self.moved_to && self.index && self.owner_index
    }
}
