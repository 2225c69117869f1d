//! `purge`: deletes the expired sessions, and the entries no operation can use that never
//! go away by themselves (on Redis, session keys with no expiry).

use session_stores::admin;

use crate::output::{Failure, open};

/// Deletes the expired sessions (`delete_expired`) and the damaged entries
/// ([`admin::damaged`]), and says how many.
pub(crate) async fn run(url: &str) -> Result<(), Failure> {
    let store = open(url).await?;
    let removed = store.delete_expired().await?;
    if store.capabilities().expires_by_itself {
        println!("purged 0 expired sessions (the backend removes them by itself)");
    } else {
        println!("purged {removed} expired sessions");
    }
    if let Some(damage) = admin::damaged(url, true).await? {
        println!(
            "removed {} of {} damaged entries (session keys with no expiry)",
            damage.removed, damage.found
        );
    }
    Ok(())
}
