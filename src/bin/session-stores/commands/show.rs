//! `show`: one session.

use session_stores::SessionId;

use crate::output::{Failure, failure, open, when};

/// One session; its data only with `data`.
pub(crate) async fn run(url: &str, id: &str, data: bool) -> Result<(), Failure> {
    let store = open(url).await?;
    let id = SessionId::new(id)?;
    let Some(session) = store.get(&id).await? else {
        return Err(failure(format!("no live session {}", id.hint())));
    };
    println!("id:       {}", id.as_str());
    println!("version:  {}", session.version());
    println!(
        "expires:  {} ({} ms since the epoch)",
        when(session.expires_at_millis()),
        session.expires_at_millis()
    );
    println!("owner:    {}", session.owner().map_or("-", |o| o.as_str()));
    println!("keys:     {}", session.data().len());
    if data {
        println!("{}", serde_json::to_string_pretty(session.data())?);
    }
    Ok(())
}
