//! The whole conformance suite over the security wrappers ([`HashedIds`], [`Encrypted`]),
//! alone and stacked in both orders, on every backend, always through
//! `Box<dyn SessionStore>`.

use std::sync::Arc;

use session_stores::SessionStore;
use session_stores::wrappers::encrypted::{Encrypted, KeyRing};
use session_stores::wrappers::hashed_ids::HashedIds;
use session_stores::wrappers::key::Key;

/// Which wrappers, outermost first.
#[derive(Clone, Copy, Debug)]
pub enum Layers {
    Hashed,
    Encrypted,
    HashedOverEncrypted,
    EncryptedOverHashed,
}

pub const ALL: [Layers; 4] = [
    Layers::Hashed,
    Layers::Encrypted,
    Layers::HashedOverEncrypted,
    Layers::EncryptedOverHashed,
];

/// The keys of one run: an id key and a ring of two (the suite writes with the first).
#[derive(Clone)]
pub struct Keys {
    id: Arc<Key>,
    ring: Arc<Vec<Key>>,
}

impl Keys {
    pub fn generate() -> Keys {
        Keys {
            id: Arc::new(Key::generate().unwrap()),
            ring: Arc::new(vec![Key::generate().unwrap(), Key::generate().unwrap()]),
        }
    }

    fn ring(&self) -> KeyRing {
        KeyRing::new(self.ring.iter().cloned()).unwrap()
    }
}

pub fn wrap<S: SessionStore + 'static>(
    layers: Layers,
    keys: &Keys,
    store: S,
) -> Box<dyn SessionStore> {
    match layers {
        Layers::Hashed => Box::new(HashedIds::new(store, &keys.id)),
        Layers::Encrypted => Box::new(Encrypted::new(store, keys.ring())),
        Layers::HashedOverEncrypted => {
            Box::new(HashedIds::new(Encrypted::new(store, keys.ring()), &keys.id))
        }
        Layers::EncryptedOverHashed => {
            Box::new(Encrypted::new(HashedIds::new(store, &keys.id), keys.ring()))
        }
    }
}

/// Runs the whole suite on `factory`'s stores under every combination of wrappers, and
/// fails naming each combination that failed.
pub async fn run_every_layering<F, Fut, S>(backend: &str, factory: F)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = S> + Send + 'static,
    S: SessionStore + 'static,
{
    let _load = crate::support::loads_the_machine().await;
    let mut failed = Vec::new();
    for layers in ALL {
        let keys = Keys::generate();
        let factory = factory.clone();
        let started = std::time::Instant::now();
        let result = session_stores::conformance::run(move || {
            let (factory, keys) = (factory.clone(), keys.clone());
            async move { wrap(layers, &keys, factory().await) }
        })
        .await;
        match result {
            Ok(()) => eprintln!(
                "{backend} under {layers:?}: the whole suite passed in {:?}",
                started.elapsed()
            ),
            Err(failures) => failed.push(format!("{backend} under {layers:?}: {failures}")),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[cfg(feature = "memory")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_under_every_layering() {
    run_every_layering("MemoryStore", || async {
        session_stores::MemoryStore::new(10_000)
    })
    .await;
}

#[cfg(feature = "file")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_under_every_layering() {
    run_every_layering("FileStore", || async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = session_stores::FileStore::builder(dir.path().join("sessions"))
            .open()
            .await
            .expect("open the file store");
        crate::support::WithDir::new(store, dir)
    })
    .await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_under_every_layering() {
    run_every_layering("SqliteStore", || async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = session_stores::SqliteStore::open(dir.path().join("sessions.db"))
            .await
            .expect("open a SqliteStore");
        crate::support::WithDir::new(store, dir)
    })
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_under_every_layering() {
    use crate::support;
    let Some(url) = support::service_url(
        "SESSION_STORES_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        5432,
    ) else {
        return;
    };
    let run = support::RunSchema::new(&url, "sst_wrap_").await;
    let outcome = tokio::spawn(run_every_layering("PostgresStore", run.factory())).await;
    run.drop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_under_every_layering() {
    use crate::support;
    let Some(url) = support::service_url(support::MYSQL_VAR, support::MYSQL_DEFAULT, 3306) else {
        return;
    };
    let run = support::RunTables::new(&url, "sst_wrap_").await;
    let outcome = tokio::spawn(run_every_layering("MySqlStore", run.factory())).await;
    run.drop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_under_every_layering() {
    use crate::support;
    let Some(url) =
        support::service_url("SESSION_STORES_REDIS_URL", "redis://127.0.0.1:6379", 6379)
    else {
        return;
    };
    run_every_layering("RedisStore", move || {
        let url = url.clone();
        async move {
            session_stores::RedisStore::builder(&url)
                .key_prefix(support::unique_name("sst:wrap:"))
                // Four whole suites in a row beside the rest of the tests on a small machine:
                // generous bounds, so a slow connect under load is not a failure.
                .connect_timeout(std::time::Duration::from_secs(10))
                .response_timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("a valid store configuration")
        }
    })
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_under_every_layering() {
    use crate::support;
    let Some(urls) = support::service_urls("SESSION_STORES_REDIS_CLUSTER_URLS", 7001) else {
        return;
    };
    run_every_layering("RedisStore (cluster)", move || {
        let urls = urls.clone();
        async move {
            session_stores::RedisStore::cluster_builder(&urls)
                .key_prefix(support::unique_name("sst:wrap:"))
                // Four whole suites in a row beside the rest of the tests on a small machine:
                // generous bounds, so a slow connect under load is not a failure.
                .connect_timeout(std::time::Duration::from_secs(10))
                .response_timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("a valid store configuration")
        }
    })
    .await;
}
