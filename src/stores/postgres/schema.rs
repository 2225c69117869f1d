//! The table, its indexes and the `owner`, `absolute_expiry` and `moved_to` columns:
//! `migrate` and the catalog look before it.

use sqlx::Row;

use super::PostgresStore;
use super::error::{has_sql_state, map_err};
use super::statements::{INDEX_SUFFIX, OWNER_INDEX_SUFFIX, quote};
use crate::error::{Error, Result};

/// The key of the transaction-scoped advisory lock that [`PostgresStore::migrate`] takes
/// (`pg_advisory_xact_lock`). The bytes spell `SESSTORE`.
pub const MIGRATE_LOCK_KEY: i64 = 0x5345_5353_544F_5245;

/// The session-level advisory lock held by the one instance building a table's indexes
/// (`pg_try_advisory_lock`): a 64-bit hash of this text and the qualified table name, so
/// builds of different tables do not wait for each other.
const INDEX_BUILD_LOCK: &str = "session-stores index build ";

/// How long `migrate` waits for a lock (the advisory lock of another instance's migration,
/// the transactions an index build must outwait) before it fails with a transient error.
const MIGRATE_LOCK_TIMEOUT: &str = "5s";

/// How long the `ALTER TABLE` that adds the `owner` column may queue for the table's lock.
/// While it queues, every write to the table queues behind it, so it gives up soon and
/// tries again ([`ALTER_ATTEMPTS`] times), letting the writes through in between.
const ALTER_LOCK_TIMEOUT: &str = "200ms";
const ALTER_ATTEMPTS: u32 = 20;
const ALTER_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

impl PostgresStore {
    /// Creates the schema (if one is set), the table and its `expires_at` and `owner`
    /// indexes if they are missing, and adds the `owner` column to a table made by a release
    /// before owners. Idempotent, and safe to call from several processes at once, on a
    /// table in use: indexes are built `CONCURRENTLY` (writes go on), by one instance at a
    /// time (the others find it building and return at once, the table usable without
    /// them). A lock it cannot get in time is a transient error: retry. See the [module
    /// docs](super#schema) for the SQL.
    pub async fn migrate(&self) -> Result<()> {
        // Look first: a table that is already there with its column and valid indexes needs
        // no lock and no DDL, so a role with only SELECT, INSERT, UPDATE and DELETE on it can
        // start, and a boot takes no lock at all.
        let state = self.catalog_state().await?;
        let columns = state.owner_column && state.lifetime_columns;
        if !state.table || !columns {
            self.migrate_table(&state).await?;
        }
        if state.index && state.owner_index {
            return Ok(());
        }
        self.build_indexes(state.table && columns).await
    }

    /// Creates the schema and table, or adds the `owner` column, in one transaction under
    /// the advisory lock [`MIGRATE_LOCK_KEY`]. The `ALTER TABLE` (a catalog change, but one
    /// that needs the table's `ACCESS EXCLUSIVE` lock for an instant) queues at most
    /// [`ALTER_LOCK_TIMEOUT`] at a time.
    async fn migrate_table(&self, state: &CatalogState) -> Result<()> {
        const OP: &str = "migrate";
        let err = |e| map_err(OP, None, e);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.pool.begin().await.map_err(err)?;
            // The transaction is bounded by its lock timeouts, not by the operation's.
            for setting in [
                "SET LOCAL statement_timeout = 0".to_string(),
                format!("SET LOCAL lock_timeout = '{MIGRATE_LOCK_TIMEOUT}'"),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(setting))
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATE_LOCK_KEY)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            if !state.table {
                // (Even `IF NOT EXISTS` needs CREATE on the database, so only when missing.)
                if let Some(create_schema) =
                    self.sql.create_schema.as_ref().filter(|_| !state.schema)
                {
                    sqlx::query(create_schema.clone())
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                }
                sqlx::query(self.sql.create_table.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SET LOCAL lock_timeout = '{ALTER_LOCK_TIMEOUT}'"
            )))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            // A table of a release before owners, or before absolute expiries and rotation
            // (or one such a release created since the look): the store cannot work without
            // the columns. A no-op otherwise.
            let added = match sqlx::query(self.sql.add_owner.clone())
                .execute(&mut *tx)
                .await
            {
                Ok(_) => {
                    sqlx::query(self.sql.add_lifetimes.clone())
                        .execute(&mut *tx)
                        .await
                }
                Err(e) => Err(e),
            };
            match added {
                Ok(_) => return tx.commit().await.map_err(err),
                // Readers or writers hold the table: let the writes queued behind this
                // statement through, then try again.
                Err(e) if has_sql_state(&e, &["55P03"]) && attempt < ALTER_ATTEMPTS => {
                    drop(tx);
                    tokio::time::sleep(ALTER_PAUSE).await;
                }
                Err(e) if has_sql_state(&e, &["42501"]) => {
                    return Err(Error::Config {
                        message: format!(
                            "the session table {} lacks columns this release needs (`owner`, \
                             `absolute_expiry`, `moved_to`), and this role may not add them: \
                             run migrate() as the table's owner, or `ALTER TABLE {} ADD COLUMN \
                             owner text, ADD COLUMN absolute_expiry timestamptz, ADD COLUMN \
                             moved_to text` (the columns it lacks) and \
                             `CREATE INDEX {} ON {} (owner) WHERE owner IS NOT NULL`",
                            self.qualified(&self.table),
                            self.qualified(&self.table),
                            quote(&format!("{}{OWNER_INDEX_SUFFIX}", self.table)),
                            self.qualified(&self.table),
                        ),
                        source: Some(Box::new(e)),
                    });
                }
                Err(e) => return Err(err(e)),
            }
        }
    }

    /// Builds the missing (or invalid) indexes with `CREATE INDEX CONCURRENTLY`, which lets
    /// writes go on, on a connection of its own that holds the session-level advisory lock
    /// [`INDEX_BUILD_LOCK`]. If another instance holds it, that one is building: return
    /// at once. The connection is closed afterwards (dropped, also when this future is),
    /// which releases the lock; a build it interrupted leaves an invalid index, which the
    /// next `migrate` drops and builds again.
    ///
    /// `existed`: the table was there with its `owner` column before this call, so a role
    /// that may not create indexes still starts (the store scans instead).
    async fn build_indexes(&self, existed: bool) -> Result<()> {
        const OP: &str = "migrate";
        let err = |e| map_err(OP, None, e);
        let mut conn = self.pool.acquire().await.map_err(err)?.detach();
        for setting in [
            "SET statement_timeout = 0".to_string(),
            format!("SET lock_timeout = '{MIGRATE_LOCK_TIMEOUT}'"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(setting))
                .execute(&mut conn)
                .await
                .map_err(err)?;
        }
        let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("{INDEX_BUILD_LOCK}{}", self.qualified(&self.table)))
            .fetch_one(&mut conn)
            .await
            .map_err(err)?;
        if !mine {
            return Ok(());
        }
        // Looked at again under the lock: another instance may have built them meanwhile.
        let state = self.catalog_state().await?;
        let wanted = [
            (state.index, INDEX_SUFFIX, &self.sql.create_index),
            (
                state.owner_index,
                OWNER_INDEX_SUFFIX,
                &self.sql.create_owner_index,
            ),
        ];
        for (ready, suffix, create_index) in wanted {
            if ready {
                continue;
            }
            // An invalid index left by an interrupted build: `IF NOT EXISTS` would keep it.
            let drop_invalid = format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {}",
                self.qualified(&format!("{}{suffix}", self.table))
            );
            let built = match sqlx::query(sqlx::AssertSqlSafe(drop_invalid))
                .execute(&mut conn)
                .await
            {
                Ok(_) => sqlx::query(create_index.clone()).execute(&mut conn).await,
                Err(e) => Err(e),
            };
            match built {
                Ok(_) => {}
                // The table is usable without its indexes (delete_expired, sessions_of and
                // destroy_owner scan instead); a role that may not create them still starts.
                // (Such a role could not have altered the table either: nothing is lost.)
                Err(e) if existed && has_sql_state(&e, &["42501"]) => return Ok(()),
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    /// `"<schema>"."<name>"`, or `"<name>"` without a schema.
    fn qualified(&self, name: &str) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(name)),
            None => quote(name),
        }
    }

    /// What of the store's schema is there, read from the catalog (no lock, no privilege
    /// beyond connecting).
    async fn catalog_state(&self) -> Result<CatalogState> {
        let row = sqlx::query(
            "SELECT \
             (SELECT count(*) FROM pg_attribute \
              WHERE attrelid = to_regclass($1) AND NOT attisdropped \
              AND attname IN ('id', 'data', 'expires_at', 'version')) = 4, \
             EXISTS (SELECT 1 FROM pg_attribute \
              WHERE attrelid = to_regclass($1) AND NOT attisdropped AND attname = 'owner'), \
             EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass($2) AND indisvalid), \
             EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass($4) AND indisvalid), \
             $3::text IS NULL OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $3), \
             (SELECT count(*) FROM pg_attribute \
              WHERE attrelid = to_regclass($1) AND NOT attisdropped \
              AND attname IN ('absolute_expiry', 'moved_to')) = 2",
        )
        .bind(self.qualified(&self.table))
        .bind(self.qualified(&format!("{}{INDEX_SUFFIX}", self.table)))
        .bind(self.schema.as_deref())
        .bind(self.qualified(&format!("{}{OWNER_INDEX_SUFFIX}", self.table)))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_err("migrate", None, e))?;
        let get = |n: usize| -> Result<bool> {
            row.try_get(n)
                .map_err(|e| Error::backend("migrate", None, e))
        };
        Ok(CatalogState {
            table: get(0)?,
            owner_column: get(1)?,
            index: get(2)?,
            owner_index: get(3)?,
            schema: get(4)?,
            lifetime_columns: get(5)?,
        })
    }
}

/// What [`PostgresStore::migrate`] found in the catalog.
struct CatalogState {
    /// The schema exists, or none is set.
    schema: bool,
    /// The table exists with `id`, `data`, `expires_at` and `version`.
    table: bool,
    /// The table has `owner`.
    owner_column: bool,
    /// The table has `absolute_expiry` and `moved_to`.
    lifetime_columns: bool,
    /// The expiry index exists and is valid (not left by an interrupted concurrent build).
    index: bool,
    /// The owner index exists and is valid.
    owner_index: bool,
}
