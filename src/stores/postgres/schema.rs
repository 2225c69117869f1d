//! The table, its indexes and the `owner` column: `migrate` and the catalog look before it.

use sqlx::Row;

use super::PostgresStore;
use super::error::{has_sql_state, map_err};
use super::statements::{INDEX_SUFFIX, OWNER_INDEX_SUFFIX, quote};
use crate::error::{Error, Result};

/// The key of the transaction-scoped advisory lock that [`PostgresStore::migrate`] takes
/// (`pg_advisory_xact_lock`). The bytes spell `SESSTORE`.
pub const MIGRATE_LOCK_KEY: i64 = 0x5345_5353_544F_5245;

impl PostgresStore {
    /// Creates the schema (if one is set), the table and its `expires_at` and `owner`
    /// indexes if they are missing, and adds the `owner` column to a table made by a release
    /// before owners. Idempotent, and safe to call from several processes at once. See the
    /// [module docs](super#schema) for the SQL.
    pub async fn migrate(&self) -> Result<()> {
        const OP: &str = "migrate";
        let err = |e| map_err(OP, None, e);
        // Look first: a table that is already there with its column and indexes needs no lock
        // and no DDL, so a role with only SELECT, INSERT, UPDATE and DELETE on it can start,
        // and a boot takes no SHARE lock that would stall writes.
        let state = self.catalog_state().await?;
        if state.table && state.owner_column && state.index && state.owner_index {
            return Ok(());
        }
        let (schema_ready, table_ready) = (state.schema, state.table);
        let mut tx = self.pool.begin().await.map_err(err)?;
        // Never queue behind a long transaction holding the table: fail instead.
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        if !table_ready {
            // (Even `IF NOT EXISTS` needs CREATE on the database, so only when missing.)
            if let Some(create_schema) = self.sql.create_schema.as_ref().filter(|_| !schema_ready) {
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
        if !state.owner_column {
            // A table of a release before owners (or one such a release created since the
            // look): the store cannot work without the column.
            match sqlx::query(self.sql.add_owner.clone())
                .execute(&mut *tx)
                .await
            {
                Ok(_) => {}
                Err(e) if has_sql_state(&e, &["42501"]) => {
                    return Err(Error::Config {
                        message: format!(
                            "the session table {} lacks the `owner` column this release needs, \
                             and this role may not add it: run migrate() as the table's owner, \
                             or `ALTER TABLE {} ADD COLUMN owner text` and \
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
        for create_index in [&self.sql.create_index, &self.sql.create_owner_index] {
            match sqlx::query(create_index.clone()).execute(&mut *tx).await {
                Ok(_) => {}
                // The table is usable without its indexes (delete_expired, sessions_of and
                // destroy_owner scan instead); a role that may not create them still starts.
                // (Such a role could not have altered the table either: nothing is lost.)
                Err(e) if table_ready && state.owner_column && has_sql_state(&e, &["42501"]) => {
                    return Ok(());
                }
                Err(e) => return Err(err(e)),
            }
        }
        tx.commit().await.map_err(err)
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
             to_regclass($2) IS NOT NULL, \
             to_regclass($4) IS NOT NULL, \
             $3::text IS NULL OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $3)",
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
    /// The expiry index exists.
    index: bool,
    /// The owner index exists.
    owner_index: bool,
}
