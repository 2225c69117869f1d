//! The `file://` URL: a directory, no options.

use crate::error::{Error, Result};
use crate::url::{StoreUrl, UrlOptionName, unknown_option};

use super::FileStore;

/// The options of a `file://` URL: none today. An enum all the same, so that the first one
/// added is matched wherever options are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileOption {}

impl UrlOptionName for FileOption {
    const ALL: &'static [Self] = &[];
    fn name(self) -> &'static str {
        match self {}
    }
}

impl FileStore {
    /// The store a `file://` URL describes (`file:///abs/dir`, `file://rel/dir`, the path
    /// percent-decoded), created if missing; see [`connect`](crate::connect()).
    pub async fn from_url(url: &str) -> Result<FileStore> {
        Self::from_store_url(&StoreUrl::parse(url)?).await
    }

    pub(crate) async fn from_store_url(url: &StoreUrl) -> Result<FileStore> {
        FileStore::new(dir_of(url)?).await
    }
}

/// The directory of a `file://` URL; fails for an unknown option or no directory.
pub(crate) fn dir_of(url: &StoreUrl) -> Result<String> {
    if let Some(option) = url.options().first() {
        match FileOption::of(&option.key) {
            Some(never) => match never {},
            None => return Err(unknown_option("file://", &option.key, "none")),
        }
    }
    let dir = url.location();
    if dir.is_empty() {
        return Err(Error::config(
            "a file:// session store URL needs a directory, such as file:///var/lib/sessions",
        ));
    }
    Ok(dir)
}
