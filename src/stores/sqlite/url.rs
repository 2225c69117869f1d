//! The `sqlite:` URL: a database file or `:memory:`, and the table.

use crate::error::{Error, Result};
use crate::url::{StoreUrl, UrlOptionName, unknown_option};

use super::{SqliteStore, SqliteStoreBuilder};

/// The options of a `sqlite:` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqliteOption {
    /// The table (default `sessions`).
    Table,
    /// Only `main`: the file's own database.
    Schema,
}

impl UrlOptionName for SqliteOption {
    const ALL: &'static [Self] = &[SqliteOption::Table, SqliteOption::Schema];
    fn name(self) -> &'static str {
        match self {
            SqliteOption::Table => "table",
            SqliteOption::Schema => "schema",
        }
    }
}

/// Where a `sqlite:` URL puts its database.
pub(crate) enum SqliteLocation {
    /// A file, created if missing.
    File(String),
    /// `:memory:`.
    InMemory,
}

impl SqliteStore {
    /// The store a `sqlite:` URL describes (`sqlite://path.db`, `sqlite:///abs.db`,
    /// `sqlite::memory:`, `?table=`); see [`connect`](crate::connect()).
    pub async fn from_url(url: &str) -> Result<SqliteStore> {
        Self::from_store_url(&StoreUrl::parse(url)?).await
    }

    pub(crate) async fn from_store_url(url: &StoreUrl) -> Result<SqliteStore> {
        let (builder, location) = builder_of(url)?;
        match location {
            SqliteLocation::InMemory => builder.open_in_memory().await,
            SqliteLocation::File(path) => builder.open(path).await,
        }
    }
}

/// The builder and location a `sqlite:` URL describes. Fails for an unknown option, a
/// schema other than `main`, or no file.
pub(crate) fn builder_of(url: &StoreUrl) -> Result<(SqliteStoreBuilder, SqliteLocation)> {
    let mut builder = SqliteStore::builder();
    for option in url.options() {
        let value = &option.value;
        match SqliteOption::of(&option.key) {
            Some(SqliteOption::Table) => builder = builder.table(value.clone()),
            // A store's table lives in the database file it opens, SQLite's schema `main`.
            Some(SqliteOption::Schema) if value == "main" => {}
            Some(SqliteOption::Schema) => {
                return Err(Error::config(format!(
                    "a sqlite: session store keeps its table in the file it opens (schema \
                     `main`), not in schema `{value}`: open that database's file instead"
                )));
            }
            None => {
                return Err(unknown_option(
                    "sqlite:",
                    &option.key,
                    &SqliteOption::names(),
                ));
            }
        }
    }
    let location = match url.location().as_str() {
        ":memory:" => SqliteLocation::InMemory,
        "" => {
            return Err(Error::config(
                "a sqlite: session store URL needs a file, such as sqlite://sessions.db, or \
                 :memory: (sqlite::memory:)",
            ));
        }
        path => SqliteLocation::File(path.to_string()),
    };
    Ok((builder, location))
}
