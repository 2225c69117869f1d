//! The public request-level suite (`session_stores::conformance::requests`): both adapters,
//! on every backend, bare and under the security wrappers; and broken adapters, each of
//! which it must catch.
#![cfg(feature = "conformance")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use session_stores::async_trait;
use session_stores::conformance::requests::{
    AdapterError, OWNER_KEY, RequestAdapter, run_requests,
};
use session_stores::{Owner, Session, SessionId, SessionStore};

use crate::adapters::backends::Backend;

/// The store stacks of one backend: bare, behind `Migrating` from a memory store, and (with
/// the wrapper features) HashedIds over Encrypted.
fn stacks(store: Arc<dyn SessionStore>) -> Vec<(&'static str, Arc<dyn SessionStore>)> {
    let old: Arc<dyn SessionStore> = Arc::new(session_stores::MemoryStore::new(10_000));
    let mut stacks = vec![
        ("bare", Arc::clone(&store)),
        // Moving from a memory store to this backend, as `Migrating` does in a deploy.
        (
            "migrating from memory",
            Arc::new(session_stores::wrappers::migrating::Migrating::new(
                old,
                Arc::clone(&store),
            )) as Arc<dyn SessionStore>,
        ),
    ];
    #[cfg(all(feature = "hashed-ids", feature = "encryption"))]
    {
        use crate::conformance::wrappers::{Keys, Layers, wrap};
        let keys = Keys::generate();
        stacks.push((
            "hashed over encrypted",
            Arc::from(wrap(Layers::HashedOverEncrypted, &keys, Arc::clone(&store))),
        ));
    }
    stacks
}

#[allow(clippy::vec_init_then_push)]
fn adapters(store: &Arc<dyn SessionStore>) -> Vec<(&'static str, Box<dyn RequestAdapter>)> {
    #[allow(unused_mut)]
    let mut adapters: Vec<(&'static str, Box<dyn RequestAdapter>)> = Vec::new();
    #[cfg(any(feature = "tower-sessions", feature = "tower-sessions-014"))]
    adapters.push((
        "tower-sessions",
        Box::new(
            session_stores::TowerSessionsStore::from_arc(Arc::clone(store))
                .with_owner_key(OWNER_KEY),
        ),
    ));
    #[cfg(feature = "actix-session")]
    adapters.push((
        "actix-session",
        Box::new(
            session_stores::ActixSessionStore::from_arc(Arc::clone(store))
                .with_owner_key(OWNER_KEY),
        ),
    ));
    adapters
}

async fn run(backend: Option<Backend>) {
    let Some(backend) = backend else { return };
    let mut failed = Vec::new();
    for (stack, store) in stacks(backend.fresh().await) {
        for (name, adapter) in adapters(&store) {
            if let Err(failures) = run_requests(&*adapter).await {
                for failure in failures {
                    failed.push(format!("{name} over {stack}: {failure}"));
                }
            }
        }
        store.clear().await.unwrap();
    }
    backend.finish().await;
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

crate::per_backend!(
    tokio::test(flavor = "multi_thread", worker_threads = 2),
    run
);

/// What a broken adapter gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    /// `save` is a blind `set`, as in tower-sessions' own stores.
    BlindSave,
    /// `save` of a session that is gone writes it again.
    ResurrectingSave,
    /// `save` of a session that is gone carries its state to a new id.
    StateToNewKey,
    /// On a conflict, the merge keeps only the saving request's keys.
    MergeDropsTheirKeys,
}

/// A correct adapter but for one defect.
struct Broken {
    inner: Box<dyn RequestAdapter>,
    defect: Defect,
}

impl Broken {
    /// The session a broken save writes: the request's data without what the adapter added,
    /// its owner from the owner key.
    fn session(data: &Map<String, Value>, ttl: Duration) -> Session {
        let data: Map<String, Value> = data
            .iter()
            .filter(|(key, _)| key.as_str() != session_stores::adapters::LOADED_KEY)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let owner = data
            .get(OWNER_KEY)
            .and_then(Value::as_str)
            .map(|text| text.trim_matches('"'))
            .and_then(|text| Owner::new(text).ok());
        let mut session = Session::new(ttl);
        session.replace_data(data);
        session.with_owner(owner)
    }
}

#[async_trait]
impl RequestAdapter for Broken {
    fn store(&self) -> &dyn SessionStore {
        self.inner.store()
    }
    fn encode(&self, value: Value) -> Value {
        self.inner.encode(value)
    }
    async fn load(&self, id: &SessionId) -> Result<Option<Map<String, Value>>, AdapterError> {
        self.inner.load(id).await
    }
    async fn save(
        &self,
        id: &SessionId,
        data: Map<String, Value>,
        ttl: Duration,
    ) -> Result<Option<SessionId>, AdapterError> {
        let store = self.store();
        let current = store.get(id).await?;
        match (self.defect, current) {
            (Defect::BlindSave, _) | (Defect::ResurrectingSave, None) => {
                store.set(id, &Self::session(&data, ttl)).await?;
                Ok(Some(id.clone()))
            }
            (Defect::StateToNewKey, None) => {
                let new = self.inner.create(data, ttl).await?;
                Ok(Some(new))
            }
            (Defect::MergeDropsTheirKeys, Some(current)) => {
                store
                    .set_if_version(id, &Self::session(&data, ttl), current.version())
                    .await?;
                Ok(Some(id.clone()))
            }
            _ => self.inner.save(id, data, ttl).await,
        }
    }
    async fn create(
        &self,
        data: Map<String, Value>,
        ttl: Duration,
    ) -> Result<SessionId, AdapterError> {
        self.inner.create(data, ttl).await
    }
    async fn delete(&self, id: &SessionId) -> Result<(), AdapterError> {
        self.inner.delete(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_suite_catches_each_broken_adapter() {
    let store: Arc<dyn SessionStore> = Arc::new(session_stores::MemoryStore::new(10_000));
    let expected = [
        (Defect::BlindSave, "concurrent_saves_keep_both_changes"),
        (
            Defect::ResurrectingSave,
            "a_save_after_a_logout_writes_nothing",
        ),
        (
            Defect::StateToNewKey,
            "a_save_after_destroy_owner_writes_nothing",
        ),
        (
            Defect::MergeDropsTheirKeys,
            "concurrent_saves_keep_both_changes",
        ),
    ];
    for (name, _) in adapters(&store) {
        for (defect, scenario) in expected {
            let broken = Broken {
                inner: adapters(&store)
                    .into_iter()
                    .find(|(other, _)| *other == name)
                    .unwrap()
                    .1,
                defect,
            };
            let failures = run_requests(&broken)
                .await
                .expect_err(&format!("{name} with {defect:?} passed the request suite"));
            assert!(
                failures.iter().any(|failure| failure.scenario == scenario),
                "{name} with {defect:?}: {scenario} did not fail, only {failures:?}"
            );
        }
        // The same adapter without a defect passes.
        let sound = adapters(&store)
            .into_iter()
            .find(|(other, _)| *other == name)
            .unwrap()
            .1;
        run_requests(&*sound).await.unwrap();
    }
}
