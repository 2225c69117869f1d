//! The `mysql://` URL: sqlx's connection options, and this crate's table and migrate.

use crate::error::Result;
use crate::url::{StoreUrl, UrlOptionName, parse_bool, unknown_option};

use super::{MySqlStore, MySqlStoreBuilder};

/// This crate's options of a `mysql://` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MySqlOption {
    /// The table (default `sessions`).
    Table,
    /// Whether `connect` creates the table if it is missing (default `true`).
    Migrate,
}

impl UrlOptionName for MySqlOption {
    const ALL: &'static [Self] = &[MySqlOption::Table, MySqlOption::Migrate];
    fn name(self) -> &'static str {
        match self {
            MySqlOption::Table => "table",
            MySqlOption::Migrate => "migrate",
        }
    }
}

/// sqlx's MySQL URL options (sqlx-mysql 0.9, `MySqlConnectOptions::from_str`), passed on.
pub(crate) const DRIVER_OPTIONS: &[&str] = &[
    "ssl-mode",
    "sslmode",
    "ssl-ca",
    "sslca",
    "ssl-cert",
    "sslcert",
    "ssl-key",
    "sslkey",
    "charset",
    "collation",
    "statement-cache-capacity",
    "socket",
    "timezone",
    "time-zone",
];

/// What a `mysql://` URL describes: the builder with this crate's options, the URL for sqlx
/// (without them), and whether to migrate.
pub(crate) struct MySqlUrl {
    pub(crate) builder: MySqlStoreBuilder,
    pub(crate) driver_url: String,
    pub(crate) migrate: bool,
}

impl MySqlStore {
    /// The store a `mysql://` (or `mariadb://`) URL describes, connected, its table created
    /// if missing unless the URL says `migrate=false`; see [`connect`](crate::connect()) for
    /// the options.
    pub async fn from_url(url: &str) -> Result<MySqlStore> {
        Self::from_store_url(&StoreUrl::parse(url)?).await
    }

    pub(crate) async fn from_store_url(url: &StoreUrl) -> Result<MySqlStore> {
        let MySqlUrl {
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

/// Takes a `mysql://` URL apart; fails for an option neither this crate nor sqlx knows.
pub(crate) fn parse(url: &StoreUrl) -> Result<MySqlUrl> {
    let mut builder = MySqlStore::builder();
    let mut migrate = true;
    for option in url.options() {
        let value = &option.value;
        match MySqlOption::of(&option.key) {
            Some(MySqlOption::Table) => builder = builder.table(value.clone()),
            Some(MySqlOption::Migrate) => migrate = parse_bool("migrate", value)?,
            None if DRIVER_OPTIONS.contains(&option.key.as_str()) => {}
            None => {
                let known = format!("{}, {}", MySqlOption::names(), DRIVER_OPTIONS.join(", "));
                return Err(unknown_option("mysql://", &option.key, &known));
            }
        }
    }
    let mut driver_url = url.without(|key| MySqlOption::of(key).is_some()).to_url();
    // sqlx knows only the `mysql` scheme.
    if let Some(rest) = driver_url.strip_prefix("mariadb:") {
        driver_url = format!("mysql:{rest}");
    }
    Ok(MySqlUrl {
        builder,
        driver_url,
        migrate,
    })
}
