//! `stats`: live sessions, owners, data sizes and expired sessions not deleted yet.

use session_stores::connect::redact;
use session_stores::{StoreKind, admin};

use crate::output::{Failure, each_page, open};

/// Live sessions, owners and the size of the session data.
pub(crate) async fn run(url: &str) -> Result<(), Failure> {
    let store = open(url).await?;
    let live = store.len().await?;
    println!("store:          {} ({})", redact(url), StoreKind::of(url)?);
    println!("live sessions:  {live}");
    if !store.capabilities().scan {
        println!("(this store cannot be scanned: no size distribution)");
        return Ok(());
    }
    let (mut sizes, mut owned, mut owners) = (Vec::new(), 0u64, std::collections::HashSet::new());
    let undecodable = each_page(&*store, async |sessions| {
        for (_, session) in &sessions {
            sizes.push(serde_json::to_vec(session.data()).map_or(0, |b| b.len()));
            if let Some(owner) = session.owner() {
                owned += 1;
                owners.insert(owner.clone());
            }
        }
        Ok(())
    })
    .await?;
    sizes.sort_unstable();
    println!("scanned:        {} sessions", sizes.len());
    if undecodable > 0 {
        println!(
            "undecodable:    {undecodable} entries the store cannot decode (not counted; `list` names them)"
        );
    }
    println!(
        "owned:          {owned} sessions of {} owners",
        owners.len()
    );
    if !sizes.is_empty() {
        let at = |q: f64| sizes[((sizes.len() - 1) as f64 * q) as usize];
        println!(
            "data bytes:     min {}  p50 {}  p90 {}  p99 {}  max {}",
            sizes[0],
            at(0.5),
            at(0.9),
            at(0.99),
            sizes[sizes.len() - 1]
        );
    }
    if store.capabilities().expires_by_itself {
        println!("expired:        0 (the backend removes expired sessions by itself)");
    } else {
        match admin::count_expired(url, live).await {
            Ok(Some(expired)) => {
                println!("expired:        {expired} not deleted yet (`purge` deletes them)")
            }
            Ok(None) => {
                println!("expired:        not counted here; `purge` deletes them and says how many")
            }
            Err(err) => println!(
                "expired:        could not be counted: {}",
                Failure::from(err).message
            ),
        }
    }
    Ok(())
}
