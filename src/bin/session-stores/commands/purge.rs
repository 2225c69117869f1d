//! `purge`: deletes the expired sessions.

use crate::output::{Failure, open};

/// Deletes the expired sessions (`delete_expired`) and says how many.
pub(crate) async fn run(url: &str) -> Result<(), Failure> {
    let store = open(url).await?;
    let removed = store.delete_expired().await?;
    if store.capabilities().expires_by_itself {
        println!("purged 0 expired sessions (the backend removes them by itself)");
    } else {
        println!("purged {removed} expired sessions");
    }
    Ok(())
}
