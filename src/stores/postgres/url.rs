//! The `postgres://` URL: sqlx's connection options, and this crate's table, schema and
//! migrate.

use crate::error::Result;
use crate::url::{StoreUrl, UrlOptionName, parse_bool, unknown_option};

use super::{PostgresStore, PostgresStoreBuilder};

/// This crate's options of a `postgres://` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PostgresOption {
    /// The table (default `sessions`).
    Table,
    /// The schema (default: the connection's search path).
    Schema,
    /// Whether `connect` creates the table if it is missing (default `true`).
    Migrate,
}

impl UrlOptionName for PostgresOption {
    const ALL: &'static [Self] = &[
        PostgresOption::Table,
        PostgresOption::Schema,
        PostgresOption::Migrate,
    ];
    fn name(self) -> &'static str {
        match self {
            PostgresOption::Table => "table",
            PostgresOption::Schema => "schema",
            PostgresOption::Migrate => "migrate",
        }
    }
}

/// sqlx's Postgres URL options (sqlx-postgres 0.9, `PgConnectOptions::from_str`), passed on.
pub(crate) const DRIVER_OPTIONS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// What a `postgres://` URL describes: the builder with this crate's options, the URL for
/// sqlx (without them), and whether to migrate.
pub(crate) struct PostgresUrl {
    pub(crate) builder: PostgresStoreBuilder,
    pub(crate) driver_url: String,
    pub(crate) migrate: bool,
}

impl PostgresStore {
    /// The store a `postgres://` URL describes, connected, its table created if missing
    /// unless the URL says `migrate=false`; see [`connect`](crate::connect()) for the
    /// options.
    pub async fn from_url(url: &str) -> Result<PostgresStore> {
        Self::from_store_url(&StoreUrl::parse(url)?).await
    }

    pub(crate) async fn from_store_url(url: &StoreUrl) -> Result<PostgresStore> {
        let PostgresUrl {
            builder,
            driver_url,
            migrate,
        } = parse(url)?;
        let store = builder.connect(&driver_url).await?;
        if migrate {
            store.migrate().await?;
        }
        Ok(store)
    }
}

/// Takes a `postgres://` URL apart; fails for an option neither this crate nor sqlx knows.
pub(crate) fn parse(url: &StoreUrl) -> Result<PostgresUrl> {
    let mut builder = PostgresStore::builder();
    let mut migrate = true;
    for option in url.options() {
        let value = &option.value;
        match PostgresOption::of(&option.key) {
            Some(PostgresOption::Table) => builder = builder.table(value.clone()),
            Some(PostgresOption::Schema) => builder = builder.schema(value.clone()),
            Some(PostgresOption::Migrate) => migrate = parse_bool("migrate", value)?,
            None if DRIVER_OPTIONS.contains(&option.key.as_str()) => {}
            None => {
                let known = format!("{}, {}", PostgresOption::names(), DRIVER_OPTIONS.join(", "));
                return Err(unknown_option("postgres://", &option.key, &known));
            }
        }
    }
    let driver_url = url
        .without(|key| PostgresOption::of(key).is_some())
        .to_url();
    Ok(PostgresUrl {
        builder,
        driver_url,
        migrate,
    })
}
