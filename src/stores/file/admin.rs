//! What the `session-stores` command needs of a file deployment beyond the contract
//! (feature `cli`): counting expired files and removing a scratch directory, in the
//! directory the URL names (percent-decoded as the store does).

use crate::error::{Error, Result};
use crate::session::SessionId;
use crate::url::StoreUrl;

/// How many session files the directory holds that `len` (`live`) does not count: expired
/// ones, not deleted yet.
pub(crate) async fn count_expired(url: &StoreUrl, live: u64) -> Result<u64> {
    let dir = super::url::dir_of(url)?;
    let what = "counting expired sessions";
    tokio::task::spawn_blocking(move || {
        let mut files = 0u64;
        for entry in std::fs::read_dir(&dir).map_err(|err| Error::backend(what, None, err))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".json")
                && SessionId::check(id).is_ok()
            {
                files += 1;
            }
        }
        Ok(files.saturating_sub(live))
    })
    .await
    .map_err(|err| Error::backend(what, None, err))?
}

/// Removes the store's directory and everything in it (a scratch directory of `check`).
/// A directory already gone is not an error.
pub(crate) async fn remove_dir(url: &StoreUrl) -> Result<()> {
    let dir = super::url::dir_of(url)?;
    let what = "removing a scratch directory";
    tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::backend(what, None, err)),
    })
    .await
    .map_err(|err| Error::backend(what, None, err))?
}
