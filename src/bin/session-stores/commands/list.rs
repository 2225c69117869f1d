//! `list`: sessions with their expiry, version and owner.

use session_stores::{Owner, ScanCursor, SessionId};

use crate::output::{Failure, chain, open, when};

/// An id as `list` prints it: shortened (an id is a bearer credential), whole with
/// `--full-ids`.
fn printed(id: &SessionId, full: bool) -> String {
    if full {
        id.as_str().to_string()
    } else {
        id.hint().to_string()
    }
}

/// Lists at most `limit` sessions (of `owner` only, if given).
pub(crate) async fn run(
    url: &str,
    owner: Option<String>,
    limit: usize,
    full_ids: bool,
) -> Result<(), Failure> {
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
                printed(&entry.id, full_ids),
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
                printed(&id, full_ids),
                session.version(),
                when(session.expires_at_millis()),
                session.owner().map_or("-", |o| o.as_str())
            );
            shown += 1;
        }
        for entry in &page.undecodable {
            let id = entry
                .id
                .as_ref()
                .map_or("?".to_owned(), |id| printed(id, full_ids));
            println!("{id:<40} cannot be decoded: {}", chain(&*entry.error));
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(())
}
