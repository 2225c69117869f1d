//! What an operator's tool needs of a deployment beyond the [`SessionStore`] contract
//! (feature `cli`; the `session-stores` command is built on it): counting expired sessions
//! a backend still holds, making and removing scratch namespaces beside a deployment, and
//! inspecting settings that lose sessions.
//!
//! Every function reads the store URL as [`connect`](crate::connect()) does (decoded, the
//! last of a repeated option winning, validated), so it names the same table, directory or
//! key prefix as the store: nothing here re-parses a URL or builds SQL from its raw text.
//! Every wait is bounded.

use std::sync::{Arc, Mutex};

use crate::connect::{StoreKind, connect};
use crate::error::{Error, Result};
use crate::session::SessionId;
use crate::store::SessionStore;
use crate::url::StoreUrl;

pub use finding::Finding;

pub(crate) mod finding;

/// How many expired sessions the backend at `url` still holds (`delete_expired` has not
/// removed them yet), where it can tell: `Ok(None)` for a backend that cannot (memory, an
/// in-memory SQLite database) and `Ok(Some(0))` for one that removes them by itself
/// (Redis). `live` is the store's [`len`](SessionStore::len), which the file store needs.
pub async fn count_expired(url: &str, live: u64) -> Result<Option<u64>> {
    let url = StoreUrl::parse(url)?.without_wrappers();
    #[cfg(not(any(
        feature = "file",
        feature = "sqlite",
        feature = "postgres",
        feature = "mysql"
    )))]
    let _ = live;
    match url.kind() {
        StoreKind::Redis | StoreKind::RedisCluster => Ok(Some(0)),
        #[cfg(feature = "file")]
        StoreKind::File => crate::stores::file::admin::count_expired(&url, live)
            .await
            .map(Some),
        #[cfg(feature = "sqlite")]
        StoreKind::Sqlite => crate::stores::sqlite::admin::count_expired(&url).await,
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => crate::stores::postgres::admin::count_expired(&url)
            .await
            .map(Some),
        #[cfg(feature = "mysql")]
        StoreKind::MySql => crate::stores::mysql::admin::count_expired(&url)
            .await
            .map(Some),
        #[allow(unreachable_patterns)]
        _ => Ok(None),
    }
}

/// The settings of the deployment at `url` that lose sessions (a Redis eviction policy,
/// persistence off, a memory store in production, a missing index), and notes. Reading
/// them never fails the call: what could not be read is a note.
pub async fn inspect(url: &str) -> Result<Vec<Finding>> {
    let url = StoreUrl::parse(url)?.without_wrappers();
    Ok(match url.kind() {
        StoreKind::Memory => vec![Finding::problem(
            "memory:// keeps sessions in this process only: a restart logs everyone out, and \
             other processes do not see them. Use file://, sqlite:, postgres://, mysql:// or redis:// \
             for a deployment.",
        )],
        #[cfg(feature = "redis")]
        StoreKind::Redis | StoreKind::RedisCluster => {
            crate::stores::redis::admin::inspect(&url).await
        }
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => crate::stores::postgres::admin::inspect(&url).await,
        #[cfg(feature = "mysql")]
        StoreKind::MySql => crate::stores::mysql::admin::inspect(&url).await,
        StoreKind::File | StoreKind::Sqlite => vec![Finding::note(format!(
            "expired sessions stay on disk until `purge` (or spawn_cleanup) runs: schedule \
             `session-stores purge {}`",
            url.redacted()
        ))],
        // A backend whose feature is off: `connect` refuses its URL.
        #[allow(unreachable_patterns)]
        _ => Vec::new(),
    })
}

/// What [`damaged`] found in a store, and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// Entries found that no operation can use and that never go away by themselves.
    pub found: u64,
    /// Of those, how many were removed.
    pub removed: u64,
}

/// Entries of the store at `url` that no operation can use and that never go away by
/// themselves, and with `remove`, removes them: on Redis, session keys with no expiry (the
/// payload of a write that reached an older write script after its own expiry, or a key
/// someone `PERSIST`ed; `get` of such an id is a `Decode` error, `len` counts it, a scan
/// stops at it). `Ok(None)` for a backend without such a pass. A key written since with an
/// expiry is never removed.
pub async fn damaged(url: &str, remove: bool) -> Result<Option<Damage>> {
    let url = StoreUrl::parse(url)?.without_wrappers();
    #[cfg(not(feature = "redis"))]
    let _ = remove;
    match url.kind() {
        #[cfg(feature = "redis")]
        StoreKind::Redis | StoreKind::RedisCluster => {
            let store = crate::stores::redis::RedisStore::from_store_url(&url).await?;
            let (found, removed) = store.immortal_keys(remove).await?;
            Ok(Some(Damage { found, removed }))
        }
        _ => Ok(None),
    }
}

/// The two stores to copy sessions between with
/// [`copy_sessions`](crate::migrate::copy_sessions), from their URLs: each opened as
/// [`connect`](crate::connect()) opens it, except that a
/// [`HashedIds`](crate::wrappers::hashed_ids::HashedIds) layer with the same key at both
/// ends is left out of both, so that sessions are copied under their stored ids and no id
/// is hashed twice. A source that stores hashed ids under a key the destination does not
/// share is refused with [`Error::Config`]: its ids cannot be turned back into the
/// callers' ids. `Encrypted` layers stay, so every session is opened at the source and
/// sealed for the destination, each with its own key ring.
pub async fn copy_stores(
    from: &str,
    to: &str,
) -> Result<(Arc<dyn SessionStore>, Arc<dyn SessionStore>)> {
    let (source, source_layers) = crate::connect::open(from).await?;
    let (target, target_layers) = crate::connect::open(to).await?;
    let (source_layers, target_layers) = match source_layers.hash_key_match(&target_layers) {
        (true, true) => (
            source_layers.without_hash_ids(),
            target_layers.without_hash_ids(),
        ),
        (true, false) => {
            return Err(Error::config(
                "the source stores keyed hashes of its session ids (hash_ids_key_env), \
                     which cannot be turned back into ids: give the destination URL the same \
                     hash_ids_key_env key, so that the sessions are copied as they are stored",
            ));
        }
        (false, _) => (source_layers, target_layers),
    };
    Ok((
        Arc::from(source_layers.wrap(source.into_dyn())),
        Arc::from(target_layers.wrap(target.into_dyn())),
    ))
}

/// Scratch namespaces beside a deployment, for running the conformance suite against the
/// real thing without touching its sessions: each [`store`](Scratch::store) is a fresh,
/// empty store in a namespace of its own (a table, a key prefix, a directory inside the
/// store's), and [`remove`](Scratch::remove) removes every one made.
#[derive(Debug)]
pub struct Scratch {
    url: StoreUrl,
    tag: String,
    made: Mutex<Vec<StoreUrl>>,
}

impl Scratch {
    /// Scratch namespaces beside the deployment at `url` (its wrapper options apply to
    /// each scratch store too). Fails for a URL `connect` would refuse to parse.
    pub fn new(url: &str) -> Result<Arc<Scratch>> {
        let url = StoreUrl::parse(url)?;
        let tag = SessionId::generate().as_str()[..10]
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "x");
        Ok(Arc::new(Scratch {
            url,
            tag,
            made: Mutex::new(Vec::new()),
        }))
    }

    /// A fresh store in a namespace of its own.
    pub async fn store(&self) -> Result<Box<dyn SessionStore>> {
        let url = {
            let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
            let name = format!("sst_check_{}_{}", self.tag, made.len() + 1);
            let url = match self.url.kind() {
                StoreKind::Memory => self.url.clone(),
                StoreKind::File => {
                    let dir = self.url.location();
                    self.url
                        .with_location(&format!("{}/.{name}", dir.trim_end_matches('/')))
                }
                StoreKind::Sqlite | StoreKind::Postgres | StoreKind::MySql => {
                    self.url.with_option("table", &name)
                }
                StoreKind::Redis | StoreKind::RedisCluster => {
                    self.url.with_option("key_prefix", &format!("{name}:"))
                }
            };
            made.push(url.clone());
            url
        };
        connect(&url.to_url()).await
    }

    /// Removes every scratch namespace made: its sessions, and its table or directory.
    /// Goes on past a failure, and returns the first one, naming the namespace.
    pub async fn remove(&self) -> Result<()> {
        let made: Vec<StoreUrl> = self.made.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut first_error = None;
        for url in &made {
            if let Err(err) = remove_one(url).await {
                first_error.get_or_insert(Error::config(format!(
                    "the scratch namespace at {} was not removed: {}",
                    url.redacted(),
                    crate::error::chain(&err)
                )));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The namespaces made so far, as redacted URLs.
    pub fn made(&self) -> Vec<String> {
        let made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        made.iter().map(StoreUrl::redacted).collect()
    }
}

async fn remove_one(url: &StoreUrl) -> Result<()> {
    if url.kind() == StoreKind::Memory {
        return Ok(());
    }
    let store = connect(&url.to_url()).await?;
    store.clear().await?;
    drop(store);
    let url = &url.without_wrappers();
    match url.kind() {
        #[cfg(feature = "file")]
        StoreKind::File => crate::stores::file::admin::remove_dir(url).await,
        #[cfg(feature = "sqlite")]
        StoreKind::Sqlite => crate::stores::sqlite::admin::drop_table(url).await,
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => crate::stores::postgres::admin::drop_table(url).await,
        #[cfg(feature = "mysql")]
        StoreKind::MySql => crate::stores::mysql::admin::drop_table(url).await,
        _ => Ok(()),
    }
}
