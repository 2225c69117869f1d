//! What the `session-stores` command needs of a SQLite deployment beyond the contract
//! (feature `cli`): counting expired rows and dropping a scratch table, in the file and
//! table the URL names (decoded and validated as the store does).

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::session::now_millis;
use crate::url::StoreUrl;

use super::SCHEMA_TABLE;
use super::url::{SqliteLocation, builder_of};

/// How long the command waits for the database lock.
const ADMIN_LOCK_WAIT: Duration = Duration::from_secs(10);

/// The file and table a URL names; `None` for an in-memory database.
fn file_and_table(url: &StoreUrl) -> Result<Option<(String, String)>> {
    let (builder, location) = builder_of(url)?;
    let table = builder.table.clone();
    super::sql::validate_table(&table)?;
    Ok(match location {
        SqliteLocation::File(path) => Some((path, table)),
        SqliteLocation::InMemory => None,
    })
}

fn failed(what: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |err| Error::backend(what, None, err)
}

/// How many expired rows the table holds; `None` for an in-memory database (another
/// process cannot see it).
pub(crate) async fn count_expired(url: &StoreUrl) -> Result<Option<u64>> {
    let Some((path, table)) = file_and_table(url)? else {
        return Ok(None);
    };
    let what = "counting expired sessions";
    tokio::task::spawn_blocking(move || {
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(failed(what))?;
        conn.busy_timeout(ADMIN_LOCK_WAIT).map_err(failed(what))?;
        let count: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM \"{table}\" WHERE expires_at <= ?1"),
                [now_millis()],
                |row| row.get(0),
            )
            .map_err(failed(what))?;
        Ok(Some(count.max(0) as u64))
    })
    .await
    .map_err(|err| Error::backend(what, None, err))?
}

/// Drops the store's table and its schema record (a scratch table of `check`).
pub(crate) async fn drop_table(url: &StoreUrl) -> Result<()> {
    let Some((path, table)) = file_and_table(url)? else {
        return Ok(());
    };
    let what = "dropping a scratch table";
    tokio::task::spawn_blocking(move || {
        let conn = Connection::open(&path).map_err(failed(what))?;
        conn.busy_timeout(ADMIN_LOCK_WAIT).map_err(failed(what))?;
        conn.execute_batch(&format!("DROP TABLE IF EXISTS \"{table}\""))
            .map_err(failed(what))?;
        conn.execute(
            &format!("DELETE FROM {SCHEMA_TABLE} WHERE table_name = ?1"),
            [&table],
        )
        .map_err(failed(what))?;
        Ok(())
    })
    .await
    .map_err(|err| Error::backend(what, None, err))?
}
