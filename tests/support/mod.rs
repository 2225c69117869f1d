//! Helpers shared by the integration tests: finding the servers that service-backed tests
//! need, loopback ports for the servers the tests start, and a process of its own for a test
//! that must not share one. Included by `tests/it/main.rs` (as `crate::support`) and by
//! `tests/soak.rs` (`mod support;`).
#![allow(dead_code)]

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use session_stores::{Result, Session, SessionId};

/// Whether this run is CI (`CI=true` or `CI=1`), where a missing server fails the test.
pub fn in_ci() -> bool {
    matches!(
        std::env::var("CI")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Ok("true") | Ok("1")
    )
}

/// The URL of a service from `var`, or `default`, if a TCP connection to its host and port
/// succeeds within two seconds.
///
/// When the service cannot be reached: in CI this panics (a skipped service-backed test is a
/// failure there); locally it prints a loud notice naming `var` and returns `None`, and the
/// caller returns early.
pub fn service_url(var: &str, default: &str, default_port: u16) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_string());
    match host_port(&url, default_port) {
        Some(addr) if reachable(&addr) => Some(url),
        _ => {
            let message = format!(
                "SKIPPED: no server at {url} (set {var} to a reachable server; CI=true makes this a failure)"
            );
            if in_ci() {
                panic!("{message}");
            }
            loud(&message);
            None
        }
    }
}

/// Several `host:port` URLs from `var` (comma-separated), each reachable; same skip/fail
/// rules as [`service_url`]. `None` when `var` is unset outside CI.
///
/// For `SESSION_STORES_REDIS_CLUSTER_URLS` left unset, the tests start their own throwaway
/// 3-primary Redis Cluster when `redis-server` is installed ([`own_redis_cluster`]), so that
/// the README's `cargo test --all-features` runs the cluster tests too.
pub fn service_urls(var: &str, default_port: u16) -> Option<Vec<String>> {
    let raw = match std::env::var(var) {
        Ok(raw) if !raw.trim().is_empty() => raw,
        _ if var == "SESSION_STORES_REDIS_CLUSTER_URLS" && has_redis_server() => {
            return Some(own_redis_cluster().to_vec());
        }
        _ => {
            let message = format!(
                "SKIPPED: {var} is not set (a comma-separated list of URLs) and redis-server is \
                 not installed to start a throwaway one"
            );
            if in_ci() {
                panic!("{message}");
            }
            loud(&message);
            return None;
        }
    };
    let urls: Vec<String> = raw.split(',').map(|s| s.trim().to_string()).collect();
    for url in &urls {
        let ok = host_port(url, default_port).is_some_and(|addr| reachable(&addr));
        if !ok {
            let message = format!("SKIPPED: {url} from {var} is not reachable");
            if in_ci() {
                panic!("{message}");
            }
            loud(&message);
            return None;
        }
    }
    Some(urls)
}

fn host_port(url: &str, default_port: u16) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.is_empty() {
        return None;
    }
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok() && !host_port.ends_with(']'));
    Some(if has_port {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    })
}

fn reachable(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|sock| TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_ok())
}

/// A random lowercase name with `prefix`, for per-test tables, schemas and key prefixes.
pub fn unique_name(prefix: &str) -> String {
    let id = session_stores::SessionId::generate();
    let suffix: String = id
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{prefix}{suffix}")
}

/// A store that owns the temporary directory its data lives in, so the directory is removed
/// when the store is dropped (for factories that must hand out a fresh store per check).
pub struct WithDir<S> {
    pub store: S,
    _dir: tempfile::TempDir,
}

impl<S> WithDir<S> {
    /// `store`, keeping `dir` alive as long as it is.
    pub fn new(store: S, dir: tempfile::TempDir) -> Self {
        WithDir { store, _dir: dir }
    }
}

#[session_stores::async_trait]
impl<S: session_stores::SessionStore> session_stores::SessionStore for WithDir<S> {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        self.store.get(id).await
    }
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        self.store.set(id, session).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.store.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, expires_at: std::time::SystemTime) -> Result<bool> {
        self.store.touch(id, expires_at).await
    }
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        self.store.create(id, session).await
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        self.store.set_if_version(id, session, expected).await
    }
    async fn len(&self) -> Result<u64> {
        self.store.len().await
    }
    async fn clear(&self) -> Result<()> {
        self.store.clear().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.store.delete_expired().await
    }
    async fn sessions_of(
        &self,
        owner: &session_stores::Owner,
        with_data: bool,
    ) -> Result<Vec<session_stores::OwnedSession>> {
        self.store.sessions_of(owner, with_data).await
    }
    async fn destroy_owner(
        &self,
        owner: &session_stores::Owner,
        except: Option<&SessionId>,
    ) -> Result<u64> {
        self.store.destroy_owner(owner, except).await
    }
    async fn scan(
        &self,
        cursor: Option<&session_stores::ScanCursor>,
        limit: usize,
    ) -> Result<session_stores::ScanPage> {
        self.store.scan(cursor, limit).await
    }
    async fn rotate(
        &self,
        old: &session_stores::SessionId,
        new: &session_stores::SessionId,
        grace: std::time::Duration,
    ) -> session_stores::Result<session_stores::Rotation> {
        self.store.rotate(old, new, grace).await
    }
    fn capabilities(&self) -> session_stores::Capabilities {
        self.store.capabilities()
    }
}

/// Writes `message` to the real standard error, past the test harness' capture (which only
/// takes `print!` and `eprint!`), so a skipped test shows in the run's output even when it
/// "passes".
pub fn loud(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** {message} ***\n");
}

fn has_redis_server() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The node URLs of a throwaway 3-primary Redis Cluster that this test process started (once;
/// every test of the binary shares it). Its nodes run on free loopback ports, keep no data on
/// disk, and are stopped by a watchdog shell when this process exits.
pub fn own_redis_cluster() -> &'static [String] {
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;
    static CLUSTER: OnceLock<Vec<String>> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sst-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the throwaway cluster");
        let ports = free_cluster_ports(3);
        let parent = std::process::id();
        for port in &ports {
            let script = format!(
                "redis-server --port {port} --bind 127.0.0.1 --cluster-enabled yes \
                 --cluster-config-file nodes-{port}.conf --cluster-node-timeout 5000 \
                 --save '' --appendonly no --dir '{dir}' --logfile '{dir}/{port}.log' & \
                 server=$!; while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; \
                 kill $server; rm -rf '{dir}'",
                dir = dir.display()
            );
            // Not waited for on purpose: the watchdog shell lives as long as this process.
            #[allow(clippy::zombie_processes)]
            Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start a throwaway redis-server");
        }
        for port in &ports {
            wait_for(|| redis_cli(*port, &["ping"]).is_some_and(|out| out.contains("PONG")));
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            created.status.success(),
            "could not form the throwaway cluster: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        wait_for(|| {
            redis_cli(ports[0], &["cluster", "info"])
                .is_some_and(|out| out.contains("cluster_state:ok"))
        });
        loud(&format!(
            "SESSION_STORES_REDIS_CLUSTER_URLS is not set: started a throwaway Redis Cluster on \
             127.0.0.1 ports {ports:?} for this test binary"
        ));
        ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    })
}

fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for(mut ready: impl FnMut() -> bool) {
    for _ in 0..150 {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the throwaway Redis Cluster did not come up within 15 s");
}

/// `n` loopback ports that are free, each with its cluster bus port (+10000) free too.
fn free_cluster_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| free_cluster_port()).collect()
}

/// Whether every program of `programs` (a name on `PATH` or an absolute path) can be run.
/// When one cannot, same rules as [`service_url`]: in CI this panics; locally it prints a
/// loud SKIPPED notice naming `test` and the program, and returns `false`.
pub fn require_programs(test: &str, programs: &[&str]) -> bool {
    for program in programs {
        let found = std::process::Command::new(program)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            let message = format!(
                "SKIPPED: {test} needs `{program}`, which is not installed (CI=true makes this a \
                 failure)"
            );
            if in_ci() {
                panic!("{message}");
            }
            loud(&message);
            return false;
        }
    }
    true
}

/// A loopback TCP port for a server that a test starts: free a moment ago, and never handed
/// out before in this process.
///
/// Ports come from 10000-22767, below the kernel's ephemeral range (32768-60999 by default,
/// `net.ipv4.ip_local_port_range`), so that no outgoing connection of another test (there are
/// hundreds a second while the whole binary runs) takes the port between this check and the
/// server binding it; and a port claimed once is never claimed again by this process, so two
/// tests that start servers at the same time never get the same port.
pub fn free_port() -> u16 {
    claim_port(false)
}

/// A port as [`free_port`] gives, whose cluster bus port (+10000) is free too (and claimed
/// with it), for a node of a Redis Cluster.
pub fn free_cluster_port() -> u16 {
    claim_port(true)
}

fn claim_port(bus: bool) -> u16 {
    use std::collections::BTreeSet;
    use std::net::TcpListener;
    use std::sync::{Mutex, PoisonError};
    const FIRST: u32 = 10_000;
    const LAST: u32 = 22_767;
    static CLAIMED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
    let mut claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner);
    let span = LAST - FIRST + 1;
    // Another process running these tests starts elsewhere in the range.
    let start = (std::process::id().wrapping_mul(7919) + claimed.len() as u32 * 61) % span;
    let free = |port: u32| {
        !claimed.contains(&port)
            && u16::try_from(port).is_ok_and(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
    };
    for step in 0..span {
        let port = FIRST + (start + step) % span;
        let ports = if bus {
            vec![port, port + 10_000]
        } else {
            vec![port]
        };
        if ports.iter().all(|&p| free(p)) {
            claimed.extend(ports);
            return port as u16;
        }
    }
    panic!("no free loopback port left in {FIRST}-{LAST}");
}

/// Runs `body` in a process of its own: this test binary run again with only the test
/// `path` (its whole path in the binary, such as `security::some_test`), which finds
/// [`OWN_PROCESS`] set to `path` and runs `body`; here, it waits for that process and fails
/// if the test failed there (or did not run).
///
/// For a test that changes what every thread of a process shares, the environment above
/// all: `std::env::set_var` is `unsafe` because any other thread may read the environment
/// at the same time (the C library does, in DNS lookups for one), and the tests of the
/// binary run on threads of one process.
pub fn in_own_process(path: &str, body: impl FnOnce()) {
    if std::env::var(OWN_PROCESS).as_deref() == Ok(path) {
        body();
        return;
    }
    let out = std::process::Command::new(this_test_binary())
        .args([path, "--exact", "--nocapture", "--test-threads=1"])
        .env(OWN_PROCESS, path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run this test binary again");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.contains("1 passed"),
        "{path} in a process of its own: {}\n{said}",
        out.status
    );
}

/// This test binary, to run again as a child process: `/proc/self/exe` where there is one
/// (Linux), which is this very program even when a build has since replaced the file (the
/// target directory is shared, and another `cargo test` relinks the binary in place while
/// this one runs); elsewhere, the path this process was started from.
pub fn this_test_binary() -> std::path::PathBuf {
    let running = std::path::Path::new("/proc/self/exe");
    if running.exists() {
        running.to_path_buf()
    } else {
        std::env::current_exe().expect("this test binary")
    }
}

/// The variable that tells a test binary run by [`in_own_process`] which test to run there.
pub const OWN_PROCESS: &str = "SESSION_STORES_TEST_OWN_PROCESS";

/// Held exclusively by a test whose assertions hang on how long something takes, to a few
/// hundred milliseconds ([`measures_time`]), and shared by the tests that load the whole
/// machine for a long while ([`loads_the_machine`]): child processes writing flat out,
/// whole conformance suites against a server, tens of thousands of sessions. The tests of
/// the binary run two or more at a time in one process, in an order of the harness' choosing;
/// with this, a tight timing never runs beside such a load, and the loads still run beside
/// each other and beside every other test.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// See [`MACHINE`]: waits until no test that loads the machine is running, and keeps new
/// ones from starting while the guard lives.
pub async fn measures_time() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// See [`MACHINE`]: waits while a test that measures time runs.
pub async fn loads_the_machine() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

/// Polls `ready` every 100 ms until it returns true, for at most `limit`; false if it never
/// did.
pub fn poll_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fails unless `sessions_of(owner, with_data)` lists exactly one entry, session `id`,
/// reported as undecodable: no data, and a `Decode` error naming it.
pub async fn listed_only_as_undecodable(
    store: &dyn session_stores::SessionStore,
    owner: &session_stores::Owner,
    with_data: bool,
    id: &SessionId,
) {
    let listed = store.sessions_of(owner, with_data).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].data.is_none());
    let err = &listed[0].undecodable.as_ref().expect("undecodable").error;
    assert_eq!(err.kind(), session_stores::ErrorKind::Decode, "{err:?}");
    assert_eq!(err.session(), Some(&id.hint()));
}

/// A schema of its own on a Postgres server, for one run of many stores (the whole suite),
/// each store on a table of its own in it; [`RunSchema::drop`] drops it all.
#[cfg(feature = "postgres")]
pub struct RunSchema {
    pub pool: sqlx::PgPool,
    pub schema: String,
}

#[cfg(feature = "postgres")]
impl RunSchema {
    /// A pool of 16 connections to `url` and a new schema name starting with `prefix`.
    pub async fn new(url: &str, prefix: &str) -> RunSchema {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await
            .expect("connect to the test server");
        RunSchema {
            pool,
            schema: unique_name(prefix),
        }
    }

    /// Makes migrated stores, each on a new table of the schema.
    pub fn factory(
        &self,
    ) -> impl Fn() -> std::pin::Pin<
        Box<dyn std::future::Future<Output = session_stores::PostgresStore> + Send>,
    > + Clone
    + Send
    + Sync
    + 'static {
        let (pool, schema) = (self.pool.clone(), self.schema.clone());
        move || {
            let (pool, schema) = (pool.clone(), schema.clone());
            Box::pin(async move {
                let store = session_stores::PostgresStore::builder()
                    .schema(schema.as_str())
                    .table(unique_name("sessions_"))
                    .build(pool)
                    .expect("valid names");
                store.migrate().await.expect("migrate");
                store
            })
        }
    }

    /// Drops the schema and every table in it.
    pub async fn drop(self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema
        )))
        .execute(&self.pool)
        .await
        .expect("drop the run's schema");
    }
}

/// The MySQL/MariaDB server the tests use: `SESSION_STORES_MYSQL_URL`, by default the local
/// MariaDB's `test` database as `root`.
#[cfg(feature = "mysql")]
pub const MYSQL_VAR: &str = "SESSION_STORES_MYSQL_URL";
#[cfg(feature = "mysql")]
pub const MYSQL_DEFAULT: &str = "mysql://root@127.0.0.1:3306/test";

/// Tables of their own on a MySQL server, for one run of many stores (the whole suite):
/// each store gets a new table whose name starts with the run's prefix;
/// [`RunTables::drop`] drops them all.
#[cfg(feature = "mysql")]
pub struct RunTables {
    pub pool: sqlx::MySqlPool,
    pub prefix: String,
}

#[cfg(feature = "mysql")]
impl RunTables {
    /// A pool of 16 connections to `url` and a new table prefix starting with `prefix`.
    pub async fn new(url: &str, prefix: &str) -> RunTables {
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await
            .expect("connect to the test server");
        RunTables {
            pool,
            prefix: unique_name(prefix) + "_",
        }
    }

    /// Makes migrated stores, each on a new table of the run.
    pub fn factory(
        &self,
    ) -> impl Fn() -> std::pin::Pin<
        Box<dyn std::future::Future<Output = session_stores::MySqlStore> + Send>,
    > + Clone
    + Send
    + Sync
    + 'static {
        let (pool, prefix) = (self.pool.clone(), self.prefix.clone());
        move || {
            let (pool, prefix) = (pool.clone(), prefix.clone());
            Box::pin(async move {
                let store = session_stores::MySqlStore::builder()
                    .table(unique_name(&prefix))
                    .build(pool)
                    .expect("valid names");
                store.migrate().await.expect("migrate");
                store
            })
        }
    }

    /// Drops every table of the run.
    pub async fn drop(self) {
        drop_mysql_tables(&self.pool, &self.prefix).await;
    }
}

/// Drops every table of the current database whose name starts with `prefix`.
#[cfg(feature = "mysql")]
pub async fn drop_mysql_tables(pool: &sqlx::MySqlPool, prefix: &str) {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE CONCAT(?, '%')",
    )
    .bind(prefix.replace('_', "\\_"))
    .fetch_all(pool)
    .await
    .expect("list the run's tables");
    for table in tables {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS `{table}`"
        )))
        .execute(pool)
        .await
        .expect("drop a run's table");
    }
}
