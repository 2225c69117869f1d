//! `list`: sessions with their expiry, version and owner.

use session_stores::{Owner, ScanCursor};

use crate::output::{Failure, open, when};

/// Lists at most `limit` sessions (of `owner` only, if given).
pub(crate) async fn run(url: &str, owner: Option<String>, limit: usize) -> Result<(), Failure> {
    let store = open(url).await?;
    println!("{:<40} {:>18} {:>16}  owner", "id", "version", "expires");
    if let Some(owner) = owner {
        let owner = Owner::new(owner)?;
        for entry in store
            .sessions_of(&owner, false)
            .await?
            .into_iter()
            .take(limit)
        {
            println!(
                "{:<40} {:>18} {:>16}  {owner}",
                entry.id.as_str(),
                entry.version,
                when(entry.expires_at_millis)
            );
        }
        return Ok(());
    }
    let mut shown = 0;
    let mut cursor: Option<ScanCursor> = None;
    while shown < limit {
        let page = store
            .scan(cursor.as_ref(), (limit - shown).min(1000))
            .await?;
        for (id, session) in page.sessions.into_iter().take(limit - shown) {
            println!(
                "{:<40} {:>18} {:>16}  {}",
                id.as_str(),
                session.version(),
                when(session.expires_at_millis()),
                session.owner().map_or("-", |o| o.as_str())
            );
            shown += 1;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(())
}
