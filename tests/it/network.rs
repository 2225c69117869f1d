//! The networked stores over a slow and broken network, through the fault proxy
//! ([`crate::proxy`]):
//!
//! - the whole conformance suite on Postgres, MySQL and Redis with every packet delayed by
//!   2 ms ± 1 ms each way (`SESSION_STORES_NET_LATENCY_MS=20` for 20 ms ± 10 ms), so that
//!   every race the suite sets up plays out over real round trips, not loopback's
//!   microseconds;
//! - a storm of writes on Postgres, MySQL, Redis and a Redis Cluster while the proxy resets
//!   every connection every 150 ms (Postgres and MySQL: 500 ms, their connections take longer
//!   to set up):
//!   operations may fail with transient errors, but every acknowledged write reads back as
//!   written, every acknowledged `destroy` stays destroyed, a `create` or a compare-and-set
//!   from no session of a fresh id never reports a collision with itself (a write redis-rs
//!   resent after its reply was lost, applied twice), and (Redis) no key is left without an
//!   expiry.
#![cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use session_stores::{ErrorKind, Session, SessionId, SessionStore};

use crate::proxy::Proxy;
use crate::support;

/// One-way delay added to every chunk (2 ms, or `SESSION_STORES_NET_LATENCY_MS`), and its
/// spread (half of it).
fn latency() -> (Duration, Duration) {
    let ms = std::env::var("SESSION_STORES_NET_LATENCY_MS")
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(2);
    (Duration::from_millis(ms), Duration::from_micros(ms * 500))
}

/// The `host:port` of a `scheme://[user@]host:port[/path][?query]` URL, and the URL with
/// that part replaced by `with`.
fn split_authority(url: &str) -> (String, impl Fn(&str) -> String + '_) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let start = rest.rfind('@').map_or(0, |at| at + 1);
    let end = rest[start..]
        .find(['/', '?'])
        .map_or(rest.len(), |end| start + end);
    let authority = rest[start..end].to_owned();
    (authority, move |with: &str| {
        format!("{scheme}://{}{with}{}", &rest[..start], &rest[end..])
    })
}

/// A proxy in front of the server `url` names, and the URL through it.
async fn proxied(url: &str) -> (Proxy, String) {
    let (authority, replace) = split_authority(url);
    let target: SocketAddr = authority
        .to_socket_addrs()
        .expect("a resolvable server")
        .next()
        .expect("an address");
    let proxy = Proxy::start(target).await;
    let through = replace(&format!("127.0.0.1:{}", proxy.port()));
    (proxy, through)
}

#[test]
fn authorities_are_replaced_in_every_url_shape() {
    let (at, replace) = split_authority("postgres://postgres@127.0.0.1:5432/test?x=1");
    assert_eq!(at, "127.0.0.1:5432");
    assert_eq!(replace("h:1"), "postgres://postgres@h:1/test?x=1");
    let (at, replace) = split_authority("redis://127.0.0.1:6379");
    assert_eq!(at, "127.0.0.1:6379");
    assert_eq!(replace("h:1"), "redis://h:1");
}

/// The whole conformance suite on the stores `factory` makes, with `proxies` delaying every
/// chunk by [`latency`]; fails naming every failed check, or if the suite's traffic did not
/// go through the proxies.
async fn whole_suite_through<S, F, Fut>(proxies: &[&Proxy], factory: F)
where
    S: SessionStore + 'static,
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = S> + Send + 'static,
{
    let (latency, jitter) = latency();
    for proxy in proxies {
        proxy.latency(latency, jitter);
    }
    let result = session_stores::conformance::run(factory).await;
    for proxy in proxies {
        proxy.latency(Duration::ZERO, Duration::ZERO);
    }
    if let Err(failures) = result {
        panic!("over {latency:?} ± {jitter:?}: {failures}");
    }
    let chunks: u64 = proxies.iter().map(|proxy| proxy.chunks()).sum();
    assert!(chunks > 1000, "the suite did not go through the proxies");
}

/// Fails if a key under `prefix` on the Redis server at `url` has no expiry.
#[cfg(feature = "redis")]
async fn every_key_expires(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }
}

/// What one task of a storm believes of one id: the last write the store acknowledged, or
/// nothing known (a failed operation may or may not have landed).
#[derive(Clone, Debug)]
enum Known {
    Unknown,
    Absent,
    Holds { n: u64, version: u64 },
}

/// `TASKS` tasks each write, rewrite, destroy and create ids of their own for `ROUNDS`
/// rounds while the proxy (6 ms ± 3 ms each way) resets every connection every
/// `reset_every`; then, over a healthy network, every
/// id whose last operation was acknowledged reads back as that operation left it.
async fn storm(store: Arc<dyn SessionStore>, proxy: &Proxy, reset_every: Duration) -> (u64, u64) {
    // Each request and reply spends milliseconds in the proxy, so that resets often land
    // between a write's arrival at the server and its reply's at the client.
    proxy.latency(Duration::from_millis(6), Duration::from_millis(3));
    const TASKS: usize = 8;
    const IDS: usize = 6;
    const ROUNDS: u64 = 60;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let resetting = {
        let (stop, reset) = (Arc::clone(&stop), proxy.resetter());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(reset_every).await;
                reset();
            }
        })
    };
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let ids: Vec<SessionId> = (0..IDS).map(|_| SessionId::generate()).collect();
            let mut known: HashMap<SessionId, Known> =
                ids.iter().map(|id| (id.clone(), Known::Absent)).collect();
            let (mut acked, mut failed) = (0u64, 0u64);
            for round in 0..ROUNDS {
                let id = &ids[(round as usize + task) % IDS];
                let n = round * 100 + task as u64;
                let mut session = Session::new(Duration::from_secs(600));
                session.insert("n", n).unwrap();
                let outcome = match round % 4 {
                    0 | 1 => store.set(id, &session).await.map(|v| Known::Holds { n, version: v }),
                    2 => store.destroy(id).await.map(|()| Known::Absent),
                    _ => {
                        // A fresh id, by `create` or a compare-and-set from no session: a
                        // collision would be this call's own earlier attempt, applied twice.
                        let fresh = SessionId::generate();
                        let written = if round % 8 == 3 {
                            store.create(&fresh, &session).await
                        } else {
                            match store.set_if_version(&fresh, &session, 0).await {
                                Err(err) if err.is_conflict() => Ok(false),
                                other => other.map(|_| true),
                            }
                        };
                        match written {
                            Ok(created) => {
                                assert!(created, "a write of a fresh id reported a collision: a write applied twice");
                                let got = store.get(&fresh).await;
                                if let Ok(got) = got {
                                    assert_eq!(got.unwrap().get::<u64>("n").unwrap(), Some(n));
                                }
                            }
                            Err(err) => {
                                assert!(err.is_transient(), "a write of a fresh id failed with {err:?}");
                                failed += 1;
                            }
                        }
                        continue;
                    }
                };
                match outcome {
                    Ok(now) => {
                        acked += 1;
                        known.insert(id.clone(), now);
                    }
                    Err(err) => {
                        assert!(
                            err.is_transient() || err.kind() == ErrorKind::Timeout,
                            "a write failed with a non-transient error under resets: {err:?}"
                        );
                        failed += 1;
                        known.insert(id.clone(), Known::Unknown);
                    }
                }
            }
            (known, acked, failed)
        }));
    }
    let mut all = HashMap::new();
    let (mut acked, mut failed) = (0, 0);
    for task in tasks {
        let (known, a, f) = task.await.expect("a storm task panicked");
        all.extend(known);
        acked += a;
        failed += f;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    resetting.await.unwrap();
    proxy.latency(Duration::ZERO, Duration::ZERO);
    // The network is healthy again: every acknowledged state holds.
    for (id, known) in all {
        let got = loop {
            match store.get(&id).await {
                Ok(got) => break got,
                Err(err) if err.is_transient() => continue,
                Err(err) => panic!("get after the storm: {err:?}"),
            }
        };
        match known {
            Known::Unknown => {}
            Known::Absent => assert!(got.is_none(), "an acknowledged destroy was revived"),
            Known::Holds { n, version } => {
                let got = got.expect("an acknowledged write was lost");
                assert_eq!(
                    got.get::<u64>("n").unwrap(),
                    Some(n),
                    "another write's data"
                );
                assert_eq!(got.version(), version, "another version than acknowledged");
            }
        }
    }
    (acked, failed)
}

/// Reads `id` over a network that may still be settling: transient errors are retried.
async fn settled_get(store: &dyn SessionStore, id: &SessionId) -> Option<Session> {
    for _ in 0..100 {
        match store.get(id).await {
            Ok(got) => return got,
            Err(err) if err.is_transient() || err.kind() == ErrorKind::Timeout => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("get after a lost reply: {err:?}"),
        }
    }
    panic!("the store did not recover from a lost reply");
}

/// Each kind of write, with its reply lost: the proxy drops the next reply the server sends
/// and resets that connection (for a cluster, the nodes' proxies share one such flag, and
/// the write goes to one of them). The caller may get a transient error (it cannot know whether the write ran),
/// but the write never runs twice: a `set` leaves the version at most one past the one
/// before (a `set` run twice leaves it two past), a compare-and-set is never a conflict
/// with itself, a `create` never a collision with itself, a `touch` never loses the
/// session, an acknowledged `destroy` stays done. A client that resends a request whose
/// reply it lost, as redis-rs' cluster client does with its retries on, fails this.
///
/// `one_round_trip`: each write is one request (Redis), so the lost reply is the write's own
/// and the write ran: the state after is the write's. Otherwise (Postgres' transactions)
/// the lost reply may be an earlier statement's, and the write then did not run at all.
async fn writes_whose_reply_is_lost_run_once(
    store: &dyn SessionStore,
    proxies: &[&Proxy],
    one_round_trip: bool,
) {
    let lose = |on: bool| {
        for proxy in proxies {
            proxy.lose_next_reply(on);
        }
    };
    // Arms the proxies, runs one write, disarms them; checks that one reply was lost and
    // that an error is one a caller retries.
    macro_rules! with_lost_reply {
        ($write:expr) => {{
            lose(true);
            let outcome = $write;
            let lost = proxies.iter().filter(|proxy| proxy.reply_lost()).count();
            lose(false);
            assert_eq!(lost, proxies.len(), "no reply was lost");
            if let Err(err) = &outcome {
                assert!(
                    err.is_transient() || err.kind() == ErrorKind::Timeout,
                    "a write whose reply was lost failed with {err:?}"
                );
            }
            outcome
        }};
    }
    let ttl = Duration::from_secs(600);
    let session = |n: u64| {
        let mut session = Session::new(ttl);
        session.insert("n", n).unwrap();
        session
    };
    let n_of = |got: &Session| got.get::<u64>("n").unwrap().unwrap();
    // The write ran if it was acknowledged, or if its own reply is the one lost.
    let ran = |acknowledged: bool| acknowledged || one_round_trip;
    for round in 0..4u64 {
        let id = SessionId::generate();
        let first = store.set(&id, &session(0)).await.unwrap();

        let set = with_lost_reply!(store.set(&id, &session(1)).await);
        let got = settled_get(store, &id)
            .await
            .expect("a set lost the session");
        match (n_of(&got), got.version()) {
            (1, version) if version == first + 1 => {}
            (0, version) if version == first && !ran(set.is_ok()) => {}
            other => panic!("round {round}: after a set from {first}: {other:?} (ran twice?)"),
        }
        if let Ok(version) = set {
            assert_eq!(version, got.version());
        }

        let before = got.version();
        let cas = with_lost_reply!(store.set_if_version(&id, &session(2), before).await);
        if let Err(err) = &cas {
            assert!(
                !err.is_conflict(),
                "round {round}: a compare-and-set conflicted with itself"
            );
        }
        let got = settled_get(store, &id)
            .await
            .expect("a compare-and-set lost the session");
        match (n_of(&got), got.version()) {
            (2, version) if version == before + 1 => {}
            (_, version) if version == before && !ran(cas.is_ok()) => {}
            other => panic!("round {round}: after a compare-and-set from {before}: {other:?}"),
        }

        let touched = with_lost_reply!(
            store
                .touch(&id, std::time::SystemTime::now() + 2 * ttl)
                .await
        );
        assert!(
            !matches!(touched, Ok(false)),
            "round {round}: a touch missed a live session"
        );
        assert!(
            settled_get(store, &id).await.is_some(),
            "a touch lost the session"
        );

        let fresh = SessionId::generate();
        let created = with_lost_reply!(store.create(&fresh, &session(3)).await);
        assert!(
            !matches!(created, Ok(false)),
            "round {round}: a create collided with itself"
        );
        let got = settled_get(store, &fresh).await;
        assert!(
            got.is_some() || !ran(created.is_ok()),
            "round {round}: a create that ran left no session"
        );

        let fresh = SessionId::generate();
        let from_none = with_lost_reply!(store.set_if_version(&fresh, &session(4), 0).await);
        if let Err(err) = &from_none {
            assert!(
                !err.is_conflict(),
                "round {round}: a compare-and-set from no session conflicted with itself"
            );
        }
        let got = settled_get(store, &fresh).await;
        assert!(
            got.is_some() || !ran(from_none.is_ok()),
            "round {round}: a compare-and-set from no session that ran left no session"
        );

        let destroyed = with_lost_reply!(store.destroy(&id).await);
        let got = settled_get(store, &id).await;
        assert!(
            got.is_none() || !ran(destroyed.is_ok()),
            "round {round}: a destroy that ran left the session"
        );
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use session_stores::PostgresStore;
    use sqlx::postgres::PgPoolOptions;

    const VAR: &str = "SESSION_STORES_POSTGRES_URL";
    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_suite_over_a_slow_network() {
        let _load = support::loads_the_machine().await;
        let Some(url) = support::service_url(VAR, DEFAULT_URL, 5432) else {
            return;
        };
        let (proxy, through) = proxied(&url).await;
        let run = support::RunSchema::new(&through, "sst_net_").await;
        whole_suite_through(&[&proxy], run.factory()).await;
        run.drop().await;
    }

    /// A store on a table of its own, through a proxy in front of the Postgres server, and
    /// what [`drop_table`] needs; `None` (a skip) without a server.
    async fn proxied_store() -> Option<(Proxy, PostgresStore, String, String)> {
        let url = support::service_url(VAR, DEFAULT_URL, 5432)?;
        let (proxy, through) = proxied(&url).await;
        let table = support::unique_name("sst_net_");
        let store = PostgresStore::builder()
            .table(&table)
            .operation_timeout(Duration::from_secs(2))
            .connect(&through)
            .await
            .expect("connect through the proxy");
        store.migrate().await.unwrap();
        Some((proxy, store, url, table))
    }

    /// Empties the store and drops its table, over a direct connection.
    async fn drop_table(store: &PostgresStore, url: &str, table: &str) {
        store.clear().await.unwrap();
        let pool = PgPoolOptions::new().connect(url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS \"{table}\""
        )))
        .execute(&pool)
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_writes_hold_through_connection_resets() {
        let _load = support::loads_the_machine().await;
        let Some((proxy, store, url, table)) = proxied_store().await else {
            return;
        };
        let (acked, failed) =
            storm(Arc::new(store.clone()), &proxy, Duration::from_millis(500)).await;
        eprintln!("postgres storm: {acked} writes acknowledged, {failed} failed");
        assert!(acked > 100, "too few writes got through: {acked}");
        assert!(proxy.accepted() > 2, "no connection was reset");
        drop_table(&store, &url, &table).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_whose_reply_is_lost_run_once() {
        let _load = support::loads_the_machine().await;
        let Some((proxy, store, url, table)) = proxied_store().await else {
            return;
        };
        super::writes_whose_reply_is_lost_run_once(&store, &[&proxy], false).await;
        drop_table(&store, &url, &table).await;
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use session_stores::MySqlStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_suite_over_a_slow_network() {
        let _load = support::loads_the_machine().await;
        let Some(url) = support::service_url(support::MYSQL_VAR, support::MYSQL_DEFAULT, 3306)
        else {
            return;
        };
        let (proxy, through) = proxied(&url).await;
        let run = support::RunTables::new(&through, "sst_net_").await;
        whole_suite_through(&[&proxy], run.factory()).await;
        run.drop().await;
    }

    /// A store on a table of its own, through a proxy in front of the MySQL server, and
    /// the direct URL and table name; `None` (a skip) without a server.
    async fn proxied_store() -> Option<(Proxy, MySqlStore, String, String)> {
        let url = support::service_url(support::MYSQL_VAR, support::MYSQL_DEFAULT, 3306)?;
        let (proxy, through) = proxied(&url).await;
        let table = support::unique_name("sst_net_");
        let store = MySqlStore::builder()
            .table(&table)
            .operation_timeout(Duration::from_secs(2))
            .connect(&through)
            .await
            .expect("connect through the proxy");
        store.migrate().await.unwrap();
        Some((proxy, store, url, table))
    }

    /// Empties the store and drops its table, over a direct connection.
    async fn drop_table(store: &MySqlStore, url: &str, table: &str) {
        store.clear().await.unwrap();
        let pool = sqlx::MySqlPool::connect(url).await.unwrap();
        support::drop_mysql_tables(&pool, table).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_writes_hold_through_connection_resets() {
        let _load = support::loads_the_machine().await;
        let Some((proxy, store, url, table)) = proxied_store().await else {
            return;
        };
        let (acked, failed) =
            storm(Arc::new(store.clone()), &proxy, Duration::from_millis(500)).await;
        eprintln!("mysql storm: {acked} writes acknowledged, {failed} failed");
        assert!(acked > 100, "too few writes got through: {acked}");
        assert!(proxy.accepted() > 2, "no connection was reset");
        drop_table(&store, &url, &table).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_whose_reply_is_lost_run_once() {
        let _load = support::loads_the_machine().await;
        let Some((proxy, store, url, table)) = proxied_store().await else {
            return;
        };
        super::writes_whose_reply_is_lost_run_once(&store, &[&proxy], false).await;
        drop_table(&store, &url, &table).await;
    }
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;
    use session_stores::RedisStore;

    fn url() -> Option<String> {
        support::service_url("SESSION_STORES_REDIS_URL", "redis://127.0.0.1:6379", 6379)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_suite_over_a_slow_network() {
        let _load = support::loads_the_machine().await;
        let Some(url) = url() else { return };
        let (proxy, through) = proxied(&url).await;
        whole_suite_through(&[&proxy], move || {
            let through = through.clone();
            async move {
                RedisStore::builder(&through)
                    .key_prefix(support::unique_name("sst:net:"))
                    .connect()
                    .await
                    .expect("connect through the proxy")
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_writes_hold_through_connection_resets() {
        let _load = support::loads_the_machine().await;
        let Some(url) = url() else { return };
        let (proxy, through) = proxied(&url).await;
        let prefix = support::unique_name("sst:net:");
        let store = Arc::new(
            RedisStore::builder(&through)
                .key_prefix(&prefix)
                .operation_timeout(Duration::from_secs(2))
                .connect()
                .await
                .expect("connect through the proxy"),
        );
        let (acked, failed) = storm(
            Arc::clone(&store) as Arc<dyn SessionStore>,
            &proxy,
            Duration::from_millis(150),
        )
        .await;
        eprintln!("redis storm: {acked} writes acknowledged, {failed} failed");
        assert!(acked > 100, "too few writes got through: {acked}");
        every_key_expires(&url, &prefix).await;
        store.clear().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_whose_reply_is_lost_run_once() {
        let _load = support::loads_the_machine().await;
        let Some(url) = url() else { return };
        let (proxy, through) = proxied(&url).await;
        let store = RedisStore::builder(&through)
            .key_prefix(support::unique_name("sst:net:"))
            .operation_timeout(Duration::from_secs(2))
            .connect()
            .await
            .expect("connect through the proxy");
        super::writes_whose_reply_is_lost_run_once(&store, &[&proxy], true).await;
        store.clear().await.unwrap();
    }
}

/// A test-owned Redis Cluster whose three nodes each sit behind a proxy and announce the
/// proxy's port, so that every connection the cluster client makes (also those it learns
/// from `CLUSTER SLOTS` and redirections) goes through a proxy.
#[cfg(feature = "redis")]
mod redis_cluster {
    use super::*;
    use session_stores::RedisStore;

    struct Cluster {
        _dir: tempfile::TempDir,
        _nodes: Vec<tokio::process::Child>,
        proxies: Vec<Proxy>,
    }

    impl Cluster {
        async fn start() -> Option<Cluster> {
            if !support::require_programs(
                "a Redis Cluster behind proxies",
                &["redis-server", "redis-cli"],
            ) {
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let ports: Vec<u16> = (0..3).map(|_| support::free_cluster_port()).collect();
            let mut proxies = Vec::new();
            // One lost reply at a time, on whichever node carries one first.
            let lose_reply = Arc::default();
            for port in &ports {
                let target = SocketAddr::from(([127, 0, 0, 1], *port));
                proxies
                    .push(Proxy::start_sharing_lost_reply(target, Arc::clone(&lose_reply)).await);
            }
            let announced: Vec<u16> = proxies.iter().map(Proxy::port).collect();
            let (nodes, _) =
                crate::redis::own_cluster_on(dir.path(), ports, Some(&announced)).await?;
            Some(Cluster {
                _dir: dir,
                _nodes: nodes,
                proxies,
            })
        }

        /// A store on the cluster, through the proxies, with a 2 s operation timeout.
        async fn store(&self, prefix: &str) -> RedisStore {
            RedisStore::cluster_builder(self.urls())
                .key_prefix(prefix)
                .operation_timeout(Duration::from_secs(2))
                .connect()
                .await
                .expect("connect through the proxies")
        }

        fn urls(&self) -> Vec<String> {
            self.proxies
                .iter()
                .map(|proxy| format!("redis://127.0.0.1:{}", proxy.port()))
                .collect()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_suite_over_a_slow_network() {
        let _load = support::loads_the_machine().await;
        let Some(cluster) = Cluster::start().await else {
            return;
        };
        let urls = cluster.urls();
        let proxies: Vec<&Proxy> = cluster.proxies.iter().collect();
        whole_suite_through(&proxies, move || {
            let urls = urls.clone();
            async move {
                RedisStore::cluster_builder(&urls)
                    .key_prefix(support::unique_name("sst:net:"))
                    .connect()
                    .await
                    .expect("connect through the proxies")
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_writes_hold_through_connection_resets() {
        let _load = support::loads_the_machine().await;
        let Some(cluster) = Cluster::start().await else {
            return;
        };
        let prefix = support::unique_name("sst:net:");
        let store = Arc::new(cluster.store(&prefix).await);
        // Resets on one node's proxy: the others' connections carry on.
        let (acked, failed) = storm(
            Arc::clone(&store) as Arc<dyn SessionStore>,
            &cluster.proxies[0],
            Duration::from_millis(150),
        )
        .await;
        eprintln!("cluster storm: {acked} writes acknowledged, {failed} failed");
        assert!(acked > 100, "too few writes got through: {acked}");
        // Each node's own keys (KEYS on a node lists only its own).
        for proxy in &cluster.proxies {
            every_key_expires(&format!("redis://127.0.0.1:{}", proxy.port()), &prefix).await;
        }
    }

    /// Every write whose reply is lost runs once on a cluster: redis-rs' cluster client,
    /// with its retries on, resent such a write on a new connection to the node, where a
    /// `set` ran twice and a compare-and-set conflicted with its own write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_whose_reply_is_lost_run_once() {
        let _load = support::loads_the_machine().await;
        let Some(cluster) = Cluster::start().await else {
            return;
        };
        let store = cluster.store(&support::unique_name("sst:net:")).await;
        let proxies: Vec<&Proxy> = cluster.proxies.iter().collect();
        super::writes_whose_reply_is_lost_run_once(&store, &proxies, true).await;
        store.clear().await.unwrap();
    }

    /// One node's connection reset: only that node is reconnected. Its operations may fail
    /// (transient) until it is; the other nodes' connections are not touched (their proxies
    /// accept no new connection), so their operations never wait for a reconnect to the
    /// whole cluster. The store used to discard its whole cluster connection on one node's
    /// I/O error and open a new one to every node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_nodes_failure_reconnects_that_node_only() {
        let _load = support::loads_the_machine().await;
        let Some(cluster) = Cluster::start().await else {
            return;
        };
        let store = cluster.store(&support::unique_name("sst:net:")).await;
        let ids: Vec<SessionId> = (0..60).map(|_| SessionId::generate()).collect();
        let session = Session::new(Duration::from_secs(600));
        for id in &ids {
            store.set(id, &session).await.unwrap();
        }
        let accepted = |cluster: &Cluster| -> Vec<u64> {
            cluster.proxies.iter().map(Proxy::accepted).collect()
        };
        let before = accepted(&cluster);
        cluster.proxies[0].reset();
        let mut failed = 0;
        for _ in 0..3 {
            for id in &ids {
                match store.set(id, &session).await {
                    Ok(_) => {}
                    Err(err) => {
                        assert!(err.is_transient(), "{err:?}");
                        failed += 1;
                    }
                }
            }
        }
        for id in &ids {
            assert!(settled_get(&store, id).await.is_some());
        }
        let after = accepted(&cluster);
        eprintln!(
            "one node reset: {failed} writes failed; connections accepted {before:?} -> {after:?}"
        );
        assert!(after[0] > before[0], "the reset node was not reconnected");
        assert_eq!(
            after[1..],
            before[1..],
            "the nodes that did not fail were reconnected too"
        );
        store.clear().await.unwrap();
    }

    /// One node's open connections stop carrying anything (a peer gone without a FIN, a
    /// firewall that lost their state) while new connections to it work, and the other
    /// nodes keep answering (a reader keeps them busy): the store gets past the quiet node
    /// by itself within a few response timeouts. It used to ask only whether anything at
    /// all had come back on the cluster connection, which the other nodes' replies always
    /// answered, so the node's slots kept timing out for good (until TCP gave up).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_gone_quiet_is_got_past() {
        let _load = support::loads_the_machine().await;
        let Some(cluster) = Cluster::start().await else {
            return;
        };
        let store = Arc::new(
            RedisStore::cluster_builder(cluster.urls())
                .key_prefix(support::unique_name("sst:net:"))
                .response_timeout(Duration::from_millis(250))
                .operation_timeout(Duration::from_secs(1))
                .connect()
                .await
                .expect("connect through the proxies"),
        );
        let ids: Arc<Vec<SessionId>> = Arc::new((0..60).map(|_| SessionId::generate()).collect());
        let session = Session::new(Duration::from_secs(600));
        // The sessions on the other nodes: those whose `get` sends nothing through the
        // first node's proxy.
        let mut elsewhere = Vec::new();
        for id in ids.iter() {
            store.set(id, &session).await.unwrap();
            let chunks = cluster.proxies[0].chunks();
            store.get(id).await.unwrap();
            if cluster.proxies[0].chunks() == chunks {
                elsewhere.push(id.clone());
            }
        }
        assert!(!elsewhere.is_empty() && elsewhere.len() < ids.len());
        // Two readers keep replies coming from the other nodes all along.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let elsewhere = Arc::new(elsewhere);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, ids, stop) = (
                    Arc::clone(&store),
                    Arc::clone(&elsewhere),
                    Arc::clone(&stop),
                );
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for id in ids.iter() {
                            let _ = store.get(id).await;
                        }
                    }
                })
            })
            .collect();
        let before = cluster.proxies[0].accepted();
        cluster.proxies[0].stall_open_connections();
        let started = tokio::time::Instant::now();
        let mut passes = 0;
        let recovered = loop {
            passes += 1;
            let mut failed = 0;
            for id in ids.iter() {
                if let Err(err) = store.set(id, &session).await {
                    assert!(
                        err.is_transient() || err.kind() == ErrorKind::Timeout,
                        "{err:?}"
                    );
                    failed += 1;
                }
            }
            if failed == 0 {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "writes to the quiet node still fail after {passes} passes ({failed} in the last)"
            );
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            reader.await.unwrap();
        }
        eprintln!("a quiet node got past in {recovered:?} ({passes} passes)");
        assert!(
            cluster.proxies[0].accepted() > before,
            "no new connection to the quiet node"
        );
        store.clear().await.unwrap();
    }
}
