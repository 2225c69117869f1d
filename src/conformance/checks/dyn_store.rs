//! Trait objects: the store works as `Box<dyn SessionStore>` and shared as
//! `Arc<dyn SessionStore>` across tasks.

use std::sync::Arc;

use serde_json::json;

use super::{CheckResult, Factory, HOUR, id, joined, sample, session_with};
use crate::error::Error;
use crate::session::SessionId;
use crate::store::SessionStore;
pub(crate) async fn works_as_box_dyn_store(factory: Factory) -> CheckResult {
    let store: Box<dyn SessionStore> = factory.boxed().await;
    let id = id();
    ensure!(
        call!("create", store.create(&id, &sample()).await),
        "create through Box<dyn SessionStore> returned false"
    );
    ensure!(
        call!("get", store.get(&id).await).is_some(),
        "get through Box<dyn SessionStore> returned None"
    );
    call!("destroy", store.destroy(&id).await);
    ensure!(
        call!("get", store.get(&id).await).is_none(),
        "destroy through Box<dyn SessionStore> did not remove"
    );
    Ok(())
}

pub(crate) async fn works_as_arc_dyn_store_across_tasks(factory: Factory) -> CheckResult {
    let store: Arc<dyn SessionStore> = factory.shared().await;
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let id = SessionId::generate();
                let session = session_with(HOUR, json!({ "task": task }));
                store.set(&id, &session).await?;
                let got = store.get(&id).await?;
                Ok::<_, Error>((got.map(|s| s.data().clone()), session.data().clone()))
            })
        })
        .collect();
    for task in tasks {
        let (got, want) = joined("a task", task.await)?;
        ensure!(
            got.as_ref() == Some(&want),
            "a task sharing Arc<dyn SessionStore> did not read back its own session"
        );
    }
    let len = call!("len", store.len().await);
    ensure!(
        len == 16,
        "len is {len} after 16 tasks each set one session"
    );
    Ok(())
}
