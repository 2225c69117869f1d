//! Contention: concurrent sets of one id leave one whole value and hand out each version
//! once.

use std::sync::Arc;

use serde_json::{Map, json};

use super::{CheckResult, Factory, HOUR, RACE_ROUNDS, id, joined};
use crate::session::Session;
use crate::store::SessionStore;
pub(crate) async fn concurrent_sets_leave_one_whole_value(factory: Factory) -> CheckResult {
    let store = factory.shared().await;
    // A read-then-write store loses a race only when the scheduler interleaves two writers;
    // several rounds on fresh ids keep one lucky schedule from passing it.
    for _ in 0..RACE_ROUNDS {
        concurrent_sets_round(&store).await?;
    }
    Ok(())
}

async fn concurrent_sets_round(store: &Arc<dyn SessionStore>) -> CheckResult {
    const WRITERS: usize = 100;
    let id = id();
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut data = Map::new();
                data.insert("writer".into(), json!(writer));
                data.insert("payload".into(), json!(format!("{writer:04}").repeat(2048)));
                data.insert("list".into(), json!(vec![writer; 64]));
                let mut session = Session::new(HOUR);
                session.replace_data(data);
                barrier.wait().await;
                store.set(&id, &session).await.map(|v| (writer, v))
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(joined("concurrent set", task.await)?);
    }
    let got = call!("get", store.get(&id).await).ok_or("no session after 100 concurrent sets")?;
    let writer = got
        .get::<usize>("writer")
        .ok()
        .flatten()
        .ok_or("the stored session has no writer field")?;
    ensure!(
        got.get::<String>("payload").ok().flatten() == Some(format!("{writer:04}").repeat(2048))
            && got.get::<Vec<usize>>("list").ok().flatten() == Some(vec![writer; 64]),
        "the stored session mixes fields from different writers (a torn write)"
    );
    // Each set got its own version: the first a fresh one, every other one more.
    versions.sort_unstable_by_key(|&(_, v)| v);
    let first = versions[0].1;
    for (i, &(_, v)) in versions.iter().enumerate() {
        ensure!(
            v == first + i as u64,
            "{WRITERS} concurrent sets returned versions that are not {first}..={}: a version \
             was handed out twice or skipped ({v} at rank {i})",
            first + WRITERS as u64 - 1
        );
    }
    let (last_writer, last) = versions[WRITERS - 1];
    ensure!(
        got.version() == last,
        "{WRITERS} sets left version {}, not the highest one returned ({last})",
        got.version()
    );
    ensure!(
        writer == last_writer,
        "the stored session is writer {writer}'s, but writer {last_writer}'s set returned the \
         stored version {last}"
    );
    Ok(())
}
