//! The directory helpers the store's files share: making a private directory, and making a
//! rename or removal in a directory durable.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::path::Path;

use crate::error::{Error, Result};

/// Creates `dir` (mode 0700) if missing and checks that it is a directory.
pub(super) fn prepare_dir(dir: &Path) -> Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    let config = |what: &str, err: io::Error| Error::Config {
        message: format!("session directory {}: {what}", dir.display()),
        source: Some(Box::new(err)),
    };
    builder
        .create(dir)
        .map_err(|err| config("cannot create it", err))?;
    let meta = fs::metadata(dir).map_err(|err| config("cannot open it", err))?;
    if !meta.is_dir() {
        return Err(config(
            "it is not a directory",
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    Ok(())
}

/// Makes a rename or removal in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
