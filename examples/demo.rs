//! A tour of the `SessionStore` contract on the embedded default store.
//!
//! `cargo run --example demo` runs it on the in-memory store (the default feature).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use session_stores::{Error, Session, SessionId, SessionStore};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let store = open_store()?;
    println!("store: {}", store.0);
    let store = store.1;

    // A login: mint an id and create the session atomically (false would mean a collision).
    let id = SessionId::generate();
    let mut session = Session::new(Duration::from_secs(30 * 60));
    session
        .insert("user", "ada")
        .map_err(|e| Error::encode(&id, e))?;
    assert!(store.create(&id, &session).await?);
    // A new session starts at a fresh, unpredictable version; each write adds one.
    let created = store.get(&id).await?.expect("live session").version();
    println!("created session {id:?} (version {created})");

    // Two concurrent requests each add to a counter; compare-and-set means neither is lost.
    let tasks: Vec<_> = (0..2)
        .map(|request| {
            let (store, id) = (Arc::clone(&store), id.clone());
            tokio::spawn(async move {
                for _ in 0..50 {
                    loop {
                        let mut s = store.get(&id).await?.expect("live session");
                        let visits = s.get::<u64>("visits").ok().flatten().unwrap_or(0);
                        s.insert("visits", visits + 1)
                            .map_err(|e| Error::encode(&id, e))?;
                        match store.set_if_version(&id, &s, s.version()).await {
                            Ok(_) => break,
                            Err(err) if err.is_conflict() => continue,
                            Err(err) => return Err(err),
                        }
                    }
                }
                println!("request {request} done");
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task")?;
    }
    let s = store.get(&id).await?.expect("live session");
    println!(
        "visits = {} (100 expected), version = {} ({created} + 100 expected)",
        s.get::<u64>("visits").ok().flatten().unwrap_or(0),
        s.version()
    );

    // Activity extends the session without rewriting it.
    assert!(
        store
            .touch(&id, SystemTime::now() + Duration::from_secs(3600))
            .await?
    );
    println!(
        "touched: version still {}",
        store.get(&id).await?.expect("live").version()
    );

    // A session that has expired is never returned.
    let short = SessionId::generate();
    store
        .set(&short, &Session::new(Duration::from_millis(100)))
        .await?;
    tokio::time::sleep(Duration::from_millis(150)).await;
    println!(
        "expired session returned: {}",
        store.get(&short).await?.is_some()
    );
    println!(
        "live sessions: {}, expired removed: {}",
        store.len().await?,
        store.delete_expired().await?
    );

    // Logout.
    store.destroy(&id).await?;
    println!(
        "after logout: {:?}",
        store.get(&id).await?.map(|s| s.version())
    );
    Ok(())
}

fn open_store() -> Result<(String, Arc<dyn SessionStore>), Error> {
    #[cfg(feature = "memory")]
    {
        let store = session_stores::MemoryStore::new(10_000);
        Ok(("memory (LRU, 10,000 sessions)".into(), Arc::new(store)))
    }
    #[cfg(not(feature = "memory"))]
    {
        Err(Error::config(
            "the demo needs the `memory` feature (on by default)",
        ))
    }
}
