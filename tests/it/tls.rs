//! TLS in transit, against real servers this test binary starts itself (features
//! `postgres-tls`, `mysql-tls`, `redis-tls`).
//!
//! Each run makes its own PKI with the `openssl` CLI in a temporary directory: a CA, a server
//! certificate it signs (SAN `IP:127.0.0.1`, `DNS:localhost`; also for client use, as the
//! nodes of a TLS cluster present it to each other on the cluster bus), a client certificate
//! it signs, and a second, unrelated CA for the "untrusted" cases. Then:
//!
//! - Postgres: a throwaway cluster (`initdb`, then `postgres` with `ssl=on`, trust auth,
//!   listening on 127.0.0.1 on a free port, its socket in the temporary directory), run as
//!   the `postgres` user when the tests run as root;
//! - MySQL: a throwaway MariaDB (`mariadb-install-db`, then `mariadbd` with `ssl-cert`,
//!   `ssl-key` and `ssl-ca`, no grant tables, on 127.0.0.1 and 127.0.0.2 on a free port);
//! - Redis: `redis-server` with only a TLS port (`--port 0 --tls-port <free>`), one that does
//!   not ask for client certificates and one that requires them; and a 3-primary Redis
//!   Cluster speaking only TLS (`--tls-cluster yes`), formed with `redis-cli --tls`.
//!
//! Servers are shared by the tests that run at the same time and stopped when the last of
//! them is done (also when a test panics: a `Drop` guard), and by a watchdog if this process
//! dies. A missing program (`openssl`, `initdb`, `postgres`, `redis-server`) is a loud skip
//! locally and a failure in CI (`CI=true`).
//!
//! No test installs a rustls crypto provider: the stores must work without the application
//! doing so.
#![cfg(any(feature = "postgres-tls", feature = "mysql-tls", feature = "redis-tls"))]

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use session_stores::{Error, ErrorKind, Session, SessionId, SessionStore};

/// How long a server may take to start on a loaded 2-core machine.
const STARTUP: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------
// Shared fixtures
// ---------------------------------------------------------------------------------------

/// A fixture shared by the tests running at the same time: started by the first that asks,
/// dropped (stopped) when the last `Arc` goes.
fn shared<T>(slot: &'static Mutex<Weak<T>>, start: impl FnOnce() -> T) -> Arc<T> {
    let mut guard = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(running) = guard.upgrade() {
        return running;
    }
    let started = Arc::new(start());
    *guard = Arc::downgrade(&started);
    started
}

/// The run's certificates, made with the `openssl` CLI.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn get() -> Arc<Pki> {
        static PKI: Mutex<Weak<Pki>> = Mutex::new(Weak::new());
        shared(&PKI, Pki::generate)
    }

    fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("a temporary directory for the PKI");
        let path = dir.path();
        std::fs::write(
            path.join("openssl.cnf"),
            "[req]\n\
             distinguished_name = dn\n\
             [dn]\n\
             [ca]\n\
             basicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n\
             [server]\n\
             basicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage = serverAuth,clientAuth\n\
             subjectAltName = IP:127.0.0.1,DNS:localhost\n\
             subjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid\n\
             [client]\n\
             basicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\n\
             extendedKeyUsage = clientAuth\n\
             subjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid\n",
        )
        .expect("write openssl.cnf");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(path)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = |name: &str| {
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                name,
            ])
        };
        for (ca, cn) in [
            ("ca", "session-stores test CA"),
            ("other-ca", "an unrelated CA"),
        ] {
            key(&format!("{ca}.key"));
            openssl(&[
                "req",
                "-x509",
                "-new",
                "-config",
                "openssl.cnf",
                "-extensions",
                "ca",
                "-key",
                &format!("{ca}.key"),
                "-subj",
                &format!("/CN={cn}"),
                "-days",
                "2",
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        for (leaf, cn, serial) in [("server", "localhost", "1001"), ("client", "app", "1002")] {
            key(&format!("{leaf}.key"));
            openssl(&[
                "req",
                "-new",
                "-config",
                "openssl.cnf",
                "-key",
                &format!("{leaf}.key"),
                "-subj",
                &format!("/CN={cn}"),
                "-out",
                &format!("{leaf}.csr"),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{leaf}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "2",
                "-extfile",
                "openssl.cnf",
                "-extensions",
                leaf,
                "-out",
                &format!("{leaf}.pem"),
            ]);
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read a PEM file of the run's PKI")
    }

    /// Our CA, which signed the servers' certificates.
    fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A CA that signed nothing of ours.
    fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }
}

/// Starts a shell that sends `signal` to `pid` once this test process has died (a test run
/// killed from outside never runs its `Drop` guards).
fn watchdog(pid: u32, signal: &str) -> Child {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill -{signal} {pid} 2>/dev/null",
        parent = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a watchdog shell")
}

/// Stops `child` with `signal`, waiting up to 10 s before a `SIGKILL`.
fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
    let stopped = support::poll_until(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let start = log.len().saturating_sub(4000);
    log.get(start..).unwrap_or(&log).to_string()
}

/// The whole error chain of `err`, for assertions on what the driver said.
fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(next) = source {
        text.push_str(" <- ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

/// Checks that `store` works: a session written is read back.
async fn round_trip(store: &dyn SessionStore) {
    let id = SessionId::generate();
    let mut session = Session::new(HOUR);
    session.insert("over", "tls").unwrap();
    assert!(store.create(&id, &session).await.expect("create over TLS"));
    let read = store.get(&id).await.expect("get over TLS").expect("live");
    assert_eq!(read.get::<String>("over").unwrap().as_deref(), Some("tls"));
    store.destroy(&id).await.expect("destroy over TLS");
}

/// Asserts that `result` is the typed error of a refused TLS handshake: a `Backend` error
/// (not transient), whose chain holds rustls' verdict (`expected`).
fn assert_refused<T>(result: session_stores::Result<T>, expected: &str, elapsed: Duration) {
    let Err(err) = result else {
        panic!("a TLS connection that should be refused succeeded");
    };
    let text = chain(&err);
    assert_eq!(err.kind(), ErrorKind::Backend, "{text}");
    assert!(!err.is_transient(), "{text}");
    assert!(
        text.contains("the TLS handshake with the server failed") && text.contains(expected),
        "{text}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "refused only after {elapsed:?}, not at once: {text}"
    );
    eprintln!("refused as expected in {elapsed:?}: {text}");
}

// ---------------------------------------------------------------------------------------
// Postgres
// ---------------------------------------------------------------------------------------

#[cfg(feature = "postgres-tls")]
mod postgres {
    use super::*;
    use session_stores::PostgresStore;

    /// The directory of `initdb` and `postgres`: `SESSION_STORES_PG_BIN`, else the newest
    /// `/usr/lib/postgresql/*/bin` (Debian), else whatever is on `PATH`.
    fn bin_dir() -> PathBuf {
        if let Ok(dir) = std::env::var("SESSION_STORES_PG_BIN") {
            return PathBuf::from(dir);
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").exists().then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin).unwrap_or_default()
    }

    fn program(name: &str) -> String {
        bin_dir().join(name).to_string_lossy().into_owned()
    }

    /// The uid and gid to run Postgres as: the `postgres` user's when this runs as root
    /// (Postgres refuses to run as root), else none (run as ourselves).
    fn postgres_user() -> Option<(u32, u32)> {
        let id = |args: &[&str]| -> Option<u32> {
            let out = Command::new("id").args(args).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        if id(&["-u"])? != 0 {
            return None;
        }
        let uid = id(&["-u", "postgres"]).expect("a `postgres` user to run the server as");
        let gid = id(&["-g", "postgres"]).expect("the `postgres` user's group");
        Some((uid, gid))
    }

    fn as_postgres(command: &mut Command) -> &mut Command {
        use std::os::unix::process::CommandExt;
        if let Some((uid, gid)) = postgres_user() {
            command.gid(gid).uid(uid);
        }
        command
    }

    /// A throwaway Postgres cluster with `ssl=on`, stopped on drop.
    pub struct Server {
        dir: tempfile::TempDir,
        port: u16,
        child: Child,
        watchdog: Child,
        pki: Arc<Pki>,
    }

    impl Server {
        /// The shared server, or `None` (a loud skip; a panic in CI) if a program is missing.
        pub fn get(test: &str) -> Option<Arc<Server>> {
            let programs = [
                program("initdb"),
                program("postgres"),
                program("pg_isready"),
            ];
            let mut needed = vec!["openssl"];
            needed.extend(programs.iter().map(String::as_str));
            if !support::require_programs(test, &needed) {
                return None;
            }
            static SERVER: Mutex<Weak<Server>> = Mutex::new(Weak::new());
            Some(shared(&SERVER, || Server::start(Pki::get())))
        }

        fn start(pki: Arc<Pki>) -> Server {
            let dir = tempfile::tempdir().expect("a temporary directory for Postgres");
            let path = dir.path();
            for (from, to) in [("server.pem", "server.pem"), ("server.key", "server.key")] {
                std::fs::copy(pki.path(from), path.join(to)).expect("copy the server's cert");
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                path.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod 600 the server's key");
            if postgres_user().is_some() {
                let chowned = Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(path)
                    .status()
                    .expect("run chown");
                assert!(
                    chowned.success(),
                    "chown the Postgres directory to postgres"
                );
            }
            let data = path.join("data");
            let out = as_postgres(&mut Command::new(program("initdb")))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync")
                .output()
                .expect("run initdb");
            assert!(
                out.status.success(),
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let port = support::free_port();
            let log_path = path.join("postgres.log");
            let log = std::fs::File::create(&log_path).expect("create the Postgres log");
            let mut child = as_postgres(&mut Command::new(program("postgres")))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(path)
                // 127.0.0.2 too: an address the certificate does not name, for the
                // host-name checks.
                .args(["-c", "listen_addresses=127.0.0.1,127.0.0.2"])
                .args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    path.join("server.pem").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    path.join("server.key").display()
                ))
                .args(["-c", "fsync=off", "-c", "max_connections=200"])
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().expect("clone the log handle")))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("start postgres");
            let watchdog = watchdog(child.id(), "INT");
            let mut exited = None;
            let ready = support::poll_until(STARTUP, || {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                Command::new(program("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .status()
                    .is_ok_and(|status| status.success())
            });
            let mut server = Server {
                dir,
                port,
                child,
                watchdog,
                pki,
            };
            if let Some(status) = exited {
                panic!(
                    "postgres exited at start ({status}): {}",
                    log_tail(&log_path)
                );
            }
            if !ready {
                stop(&mut server.child, "INT");
                panic!(
                    "postgres did not accept connections within {STARTUP:?}: {}",
                    log_tail(&log_path)
                );
            }
            support::loud(&format!(
                "tests/tls.rs: started a throwaway Postgres with ssl=on on 127.0.0.1:{port}"
            ));
            server
        }

        /// A URL to the server's `postgres` database with `query` (such as
        /// `sslmode=require`).
        pub fn url(&self, host: &str, query: &str) -> String {
            format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
        }

        pub fn pki(&self) -> &Pki {
            &self.pki
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            // Fast shutdown: roll back open transactions, close connections, exit.
            stop(&mut self.child, "INT");
            let _ = self.watchdog.kill();
            let _ = self.watchdog.wait();
            let _ = &self.dir;
        }
    }

    /// `(ssl, version)` of the connection a query of `pool` ran on, from `pg_stat_ssl`.
    async fn ssl_of(pool: &sqlx::PgPool) -> (bool, Option<String>) {
        sqlx::query_as("select ssl, version from pg_stat_ssl where pid = pg_backend_pid()")
            .fetch_one(pool)
            .await
            .expect("query pg_stat_ssl")
    }

    fn verify_full(server: &Server, host: &str, ca: &Path) -> String {
        server.url(
            host,
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        )
    }

    /// `sslmode=require` connects, and the server reports the store's own connections as
    /// encrypted; `sslmode=disable` is not (so the query tells the two apart), and the
    /// default `prefer` takes TLS when the server offers it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn require_is_really_encrypted() {
        let Some(server) = Server::get("require_is_really_encrypted") else {
            return;
        };
        for (query, encrypted) in [
            ("sslmode=require", true),
            ("sslmode=prefer", true),
            ("", true),
            ("sslmode=disable", false),
        ] {
            let store = PostgresStore::builder()
                .table(support::unique_name("tls_"))
                .max_connections(2)
                .connect(&server.url("127.0.0.1", query))
                .await
                .unwrap_or_else(|err| panic!("connect with `{query}`: {}", chain(&err)));
            store.migrate().await.expect("migrate");
            round_trip(&store).await;
            let (ssl, version) = ssl_of(store.pool()).await;
            assert_eq!(ssl, encrypted, "`{query}`: pg_stat_ssl.ssl");
            if encrypted {
                let version = version.expect("a TLS version");
                assert!(version.starts_with("TLSv1."), "{version}");
                eprintln!("`{query}`: the store's connection is encrypted ({version})");
            }
            store.clear().await.expect("clear");
        }
    }

    /// `sslmode=verify-full` with our CA as `sslrootcert` connects, by IP address and by
    /// name, through the builder and through `connect(url)`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_full_with_our_ca_connects() {
        let Some(server) = Server::get("verify_full_with_our_ca_connects") else {
            return;
        };
        let ca = server.pki().ca();
        for host in ["127.0.0.1", "localhost"] {
            let url = verify_full(&server, host, &ca);
            let store = PostgresStore::builder()
                .table(support::unique_name("tls_"))
                .connect(&url)
                .await
                .unwrap_or_else(|err| panic!("verify-full to {host}: {}", chain(&err)));
            store.migrate().await.expect("migrate");
            round_trip(&store).await;
            assert!(ssl_of(store.pool()).await.0, "encrypted");
            store.clear().await.expect("clear");
        }
        let url = format!(
            "{}&table={}",
            verify_full(&server, "127.0.0.1", &ca),
            support::unique_name("tls_url_")
        );
        let store = session_stores::connect(&url)
            .await
            .unwrap_or_else(|err| panic!("connect(url): {}", chain(&err)));
        round_trip(&*store).await;
        store.clear().await.expect("clear");
        // `require` with our CA as `sslrootcert` verifies the chain against it, and passes.
        let url = server.url(
            "127.0.0.1",
            &format!("sslmode=require&sslrootcert={}", ca.display()),
        );
        let store = PostgresStore::builder()
            .table(support::unique_name("tls_"))
            .connect(&url)
            .await
            .unwrap_or_else(|err| panic!("require with our CA: {}", chain(&err)));
        store.migrate().await.expect("migrate");
        round_trip(&store).await;
        store.clear().await.expect("clear");
    }

    /// `sslmode=verify-full` with a CA that did not sign the server's certificate is refused
    /// at once with a typed, non-transient error, through the builder and `connect(url)`;
    /// so is `verify-ca`, `verify-full` with only the public roots, and `require` with that
    /// CA as `sslrootcert` (libpq verifies the chain then; sqlx alone accepted any
    /// certificate).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_full_with_another_ca_is_refused() {
        let Some(server) = Server::get("verify_full_with_another_ca_is_refused") else {
            return;
        };
        let other = server.pki().other_ca();
        let urls = [
            verify_full(&server, "127.0.0.1", &other),
            server.url(
                "127.0.0.1",
                &format!("sslmode=verify-ca&sslrootcert={}", other.display()),
            ),
            server.url("127.0.0.1", "sslmode=verify-full"),
            // As libpq: `require` with a root certificate verifies the chain against it.
            server.url(
                "127.0.0.1",
                &format!("sslmode=require&sslrootcert={}", other.display()),
            ),
        ];
        for url in &urls {
            let started = Instant::now();
            let result = PostgresStore::builder().connect(url).await;
            assert_refused(result, "invalid peer certificate", started.elapsed());
        }
        let started = Instant::now();
        let result = session_stores::connect(&urls[0]).await;
        assert_refused(result, "UnknownIssuer", started.elapsed());
    }

    /// `verify-full` checks the host name: to 127.0.0.2, an address of the same server that
    /// the certificate (IP 127.0.0.1, DNS localhost) does not name, it is refused with our
    /// CA trusted; `verify-ca`, which checks the chain only, connects there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_full_refuses_a_host_the_certificate_does_not_name() {
        let Some(server) = Server::get("verify_full_refuses_a_host_the_certificate_does_not_name")
        else {
            return;
        };
        let ca = server.pki().ca();
        let started = Instant::now();
        let result = PostgresStore::builder()
            .connect(&verify_full(&server, "127.0.0.2", &ca))
            .await;
        assert_refused(result, "does not name the host", started.elapsed());
        let url = server.url(
            "127.0.0.2",
            &format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
        );
        let store = PostgresStore::builder()
            .table(support::unique_name("tls_"))
            .connect(&url)
            .await
            .unwrap_or_else(|err| panic!("verify-ca to 127.0.0.2: {}", chain(&err)));
        store.migrate().await.expect("migrate");
        round_trip(&store).await;
        store.clear().await.expect("clear");
    }

    /// The whole conformance suite over `sslmode=verify-full` connections, each store on a
    /// pool of its own that `PostgresStoreBuilder::connect` opened.
    #[cfg(feature = "conformance")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_suite_over_tls() {
        let _load = support::loads_the_machine().await;
        let Some(server) = Server::get("whole_suite_over_tls") else {
            return;
        };
        let url = verify_full(&server, "127.0.0.1", &server.pki().ca());
        let schema = support::unique_name("sst_tls_");
        let started = Instant::now();
        let (url_for_factory, schema_for_factory) = (url.clone(), schema.clone());
        let result = session_stores::conformance::run(move || {
            let (url, schema) = (url_for_factory.clone(), schema_for_factory.clone());
            async move {
                let store = PostgresStore::builder()
                    .schema(schema)
                    .table(support::unique_name("sessions_"))
                    .max_connections(4)
                    .connect(&url)
                    .await
                    .expect("connect over TLS");
                store.migrate().await.expect("migrate");
                store
            }
        })
        .await;
        if let Err(failures) = result {
            panic!("PostgresStore over TLS: {failures}");
        }
        eprintln!(
            "PostgresStore over TLS (verify-full) passed all {} conformance checks in {:?}",
            session_stores::conformance::check_names().count(),
            started.elapsed()
        );
    }
}

/// The three bad-file cases of a URL whose CA option is `ca` and client-certificate option
/// `cert` (a missing CA file, a CA file with no certificate, a certificate without its key),
/// each an [`ErrorKind::Config`] naming what is wrong, through `open` (the backend's builder)
/// and through `connect`. No server is needed: nothing is sent.
#[cfg(any(feature = "postgres-tls", feature = "mysql-tls"))]
async fn bad_tls_files_are_config_errors<F, Fut>(base: &str, ca: &str, cert: &str, open: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = session_stores::Result<()>>,
{
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            format!("{base}&{ca}={}", missing.display()),
            "could not read",
        ),
        (
            format!("{base}&{ca}={}", garbage.display()),
            "holds no PEM certificate",
        ),
        (
            format!("{base}&{cert}={}", garbage.display()),
            "needs its key",
        ),
    ];
    for (url, expected) in &cases {
        for result in [
            open(url.clone()).await,
            session_stores::connect(url).await.map(drop),
        ] {
            let err = result.expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {}", chain(&err));
            assert!(chain(&err).contains(expected), "{url}: {}", chain(&err));
        }
    }
}

/// Bad TLS files in a Postgres URL are configuration errors when the store is made, not
/// connection failures.
#[cfg(feature = "postgres-tls")]
#[tokio::test]
async fn postgres_bad_tls_files_are_config_errors() {
    bad_tls_files_are_config_errors(
        "postgres://postgres@127.0.0.1:1/postgres?sslmode=verify-full",
        "sslrootcert",
        "sslcert",
        |url| async move {
            session_stores::PostgresStore::builder()
                .connect(&url)
                .await
                .map(drop)
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// MySQL (MariaDB)
// ---------------------------------------------------------------------------------------

#[cfg(feature = "mysql-tls")]
mod mysql {
    use super::*;
    use session_stores::MySqlStore;

    /// A throwaway MariaDB with TLS, stopped on drop.
    pub struct Server {
        dir: tempfile::TempDir,
        port: u16,
        child: Child,
        watchdog: Child,
        pki: Arc<Pki>,
    }

    impl Server {
        /// The shared server, or `None` (a loud skip; a panic in CI) if a program is missing.
        pub fn get(test: &str) -> Option<Arc<Server>> {
            if !support::require_programs(test, &["openssl", "mariadb-install-db", "mariadbd"]) {
                return None;
            }
            static SERVER: Mutex<Weak<Server>> = Mutex::new(Weak::new());
            Some(shared(&SERVER, || Server::start(Pki::get())))
        }

        fn start(pki: Arc<Pki>) -> Server {
            let dir = tempfile::tempdir().expect("a temporary directory for MariaDB");
            let path = dir.path();
            let data = path.join("data");
            let out = Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(["--user=root", "--auth-root-authentication-method=normal"])
                .args(["--skip-test-db", "--skip-name-resolve"])
                .output()
                .expect("run mariadb-install-db");
            assert!(
                out.status.success(),
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let port = support::free_port();
            let log_path = path.join("mariadb.log");
            let mut child = Command::new("mariadbd")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", path.join("mysqld.sock").display()))
                .arg(format!("--pid-file={}", path.join("mysqld.pid").display()))
                .arg(format!("--log-error={}", log_path.display()))
                .arg(format!("--port={port}"))
                // 127.0.0.2 too: an address the certificate does not name.
                .arg("--bind-address=127.0.0.1,127.0.0.2")
                .args(["--user=root", "--skip-grant-tables", "--skip-name-resolve"])
                .args([
                    "--innodb-buffer-pool-size=32M",
                    "--innodb-flush-log-at-trx-commit=0",
                ])
                .args(["--skip-log-bin", "--max-connections=200"])
                .arg(format!("--ssl-cert={}", pki.path("server.pem").display()))
                .arg(format!("--ssl-key={}", pki.path("server.key").display()))
                .arg(format!("--ssl-ca={}", pki.ca().display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mariadbd");
            let watchdog = watchdog(child.id(), "TERM");
            let mut exited = None;
            let ready = support::poll_until(STARTUP, || {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            let mut server = Server {
                dir,
                port,
                child,
                watchdog,
                pki,
            };
            if let Some(status) = exited {
                panic!(
                    "mariadbd exited at start ({status}): {}",
                    log_tail(&log_path)
                );
            }
            if !ready {
                stop(&mut server.child, "TERM");
                panic!(
                    "mariadbd did not accept connections within {STARTUP:?}: {}",
                    log_tail(&log_path)
                );
            }
            support::loud(&format!(
                "tests/tls.rs: started a throwaway MariaDB with TLS on 127.0.0.1:{port}"
            ));
            server
        }

        /// A URL to the server's `mysql` database with `query` (such as
        /// `ssl-mode=REQUIRED`).
        pub fn url(&self, host: &str, query: &str) -> String {
            format!("mysql://root@{host}:{}/mysql?{query}", self.port)
        }

        pub fn pki(&self) -> &Pki {
            &self.pki
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            stop(&mut self.child, "TERM");
            let _ = self.watchdog.kill();
            let _ = self.watchdog.wait();
            let _ = &self.dir;
        }
    }

    /// The TLS version of the connection a query of `pool` ran on (empty: no TLS).
    async fn tls_version_of(pool: &sqlx::MySqlPool) -> String {
        let (_, version): (String, String) =
            sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_version'")
                .fetch_one(pool)
                .await
                .expect("read Ssl_version");
        version
    }

    fn verify_identity(server: &Server, host: &str, ca: &Path) -> String {
        server.url(
            host,
            &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", ca.display()),
        )
    }

    /// `ssl-mode=REQUIRED` and the default `PREFERRED` connect encrypted, `DISABLED` does
    /// not (so the query tells them apart); `VERIFY_IDENTITY` with our CA connects by
    /// address and by name, through the builder and `connect(url)`; `REQUIRED` with our CA
    /// verifies the chain against it, and passes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn required_and_verified_connections_are_encrypted() {
        let Some(server) = Server::get("required_and_verified_connections_are_encrypted") else {
            return;
        };
        let ca = server.pki().ca();
        let with_ca = format!("ssl-mode=REQUIRED&ssl-ca={}", ca.display());
        let cases = [
            (server.url("127.0.0.1", "ssl-mode=REQUIRED"), true),
            (server.url("127.0.0.1", ""), true),
            (server.url("127.0.0.1", "ssl-mode=DISABLED"), false),
            (verify_identity(&server, "127.0.0.1", &ca), true),
            (verify_identity(&server, "localhost", &ca), true),
            (server.url("127.0.0.1", &with_ca), true),
        ];
        for (url, encrypted) in &cases {
            let store = MySqlStore::builder()
                .table(support::unique_name("tls_"))
                .max_connections(2)
                .connect(url)
                .await
                .unwrap_or_else(|err| panic!("connect to {url}: {}", chain(&err)));
            store.migrate().await.expect("migrate");
            round_trip(&store).await;
            let version = tls_version_of(store.pool()).await;
            assert_eq!(
                !version.is_empty(),
                *encrypted,
                "{url}: Ssl_version {version:?}"
            );
            if *encrypted {
                assert!(version.starts_with("TLSv1."), "{version}");
            }
            store.clear().await.expect("clear");
        }
        let url = format!(
            "{}&table={}",
            verify_identity(&server, "127.0.0.1", &ca),
            support::unique_name("tls_url_")
        );
        let store = session_stores::connect(&url)
            .await
            .unwrap_or_else(|err| panic!("connect(url): {}", chain(&err)));
        round_trip(&*store).await;
        store.clear().await.expect("clear");
    }

    /// A CA that did not sign the server's certificate is refused at once with a typed,
    /// non-transient error: with `VERIFY_IDENTITY`, `VERIFY_CA`, and `REQUIRED` naming that
    /// CA (which verifies the chain; sqlx alone accepted any certificate); so is
    /// `VERIFY_IDENTITY` with only the public roots, and to 127.0.0.2, an address the
    /// certificate does not name, with our CA.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn untrusted_or_misnamed_servers_are_refused() {
        let Some(server) = Server::get("untrusted_or_misnamed_servers_are_refused") else {
            return;
        };
        let (ca, other) = (server.pki().ca(), server.pki().other_ca());
        let cases = [
            (
                verify_identity(&server, "127.0.0.1", &other),
                "invalid peer certificate",
            ),
            (
                server.url(
                    "127.0.0.1",
                    &format!("ssl-mode=VERIFY_CA&ssl-ca={}", other.display()),
                ),
                "invalid peer certificate",
            ),
            (
                server.url(
                    "127.0.0.1",
                    &format!("ssl-mode=REQUIRED&ssl-ca={}", other.display()),
                ),
                "invalid peer certificate",
            ),
            (
                server.url("127.0.0.1", "ssl-mode=VERIFY_IDENTITY"),
                "invalid peer certificate",
            ),
            (
                verify_identity(&server, "127.0.0.2", &ca),
                "does not name the host",
            ),
        ];
        for (url, expected) in &cases {
            let started = Instant::now();
            let result = MySqlStore::builder().connect(url).await;
            assert_refused(result, expected, started.elapsed());
        }
        let started = Instant::now();
        let result = session_stores::connect(&cases[0].0).await;
        assert_refused(result, "UnknownIssuer", started.elapsed());
    }

    /// The whole conformance suite over `VERIFY_IDENTITY` connections, each store on a pool
    /// of its own that `MySqlStoreBuilder::connect` opened.
    #[cfg(feature = "conformance")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_suite_over_tls() {
        let _load = support::loads_the_machine().await;
        let Some(server) = Server::get("whole_suite_over_tls") else {
            return;
        };
        let url = verify_identity(&server, "127.0.0.1", &server.pki().ca());
        let started = Instant::now();
        let url_for_factory = url.clone();
        let result = session_stores::conformance::run(move || {
            let url = url_for_factory.clone();
            async move {
                let store = MySqlStore::builder()
                    .table(support::unique_name("sessions_"))
                    .max_connections(4)
                    .connect(&url)
                    .await
                    .expect("connect over TLS");
                store.migrate().await.expect("migrate");
                store
            }
        })
        .await;
        if let Err(failures) = result {
            panic!("MySqlStore over TLS: {failures}");
        }
        eprintln!(
            "MySqlStore over TLS (VERIFY_IDENTITY) passed all {} conformance checks in {:?}",
            session_stores::conformance::check_names().count(),
            started.elapsed()
        );
    }
}

/// Bad TLS files in a MySQL URL are configuration errors when the store is made, not
/// connection failures.
#[cfg(feature = "mysql-tls")]
#[tokio::test]
async fn mysql_bad_tls_files_are_config_errors() {
    bad_tls_files_are_config_errors(
        "mysql://root@127.0.0.1:1/test?ssl-mode=VERIFY_IDENTITY",
        "ssl-ca",
        "ssl-cert",
        |url| async move {
            session_stores::MySqlStore::builder()
                .connect(&url)
                .await
                .map(drop)
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

#[cfg(feature = "redis-tls")]
mod redis {
    use super::*;
    use session_stores::RedisStore;

    /// A `redis-server` with only a TLS port, killed on drop.
    pub struct Server {
        dir: tempfile::TempDir,
        port: u16,
        child: Child,
        watchdog: Child,
        pki: Arc<Pki>,
    }

    impl Server {
        /// The shared server that does not ask for client certificates (`mutual: false`) or
        /// the one that requires them, or `None` (a loud skip; a panic in CI) if a program is
        /// missing.
        pub fn get(test: &str, mutual: bool) -> Option<Arc<Server>> {
            if !support::require_programs(test, &["openssl", "redis-server"]) {
                return None;
            }
            static ONE_WAY: Mutex<Weak<Server>> = Mutex::new(Weak::new());
            static MUTUAL: Mutex<Weak<Server>> = Mutex::new(Weak::new());
            let slot = if mutual { &MUTUAL } else { &ONE_WAY };
            Some(shared(slot, || Server::start(Pki::get(), mutual)))
        }

        fn start(pki: Arc<Pki>, mutual: bool) -> Server {
            let dir = tempfile::tempdir().expect("a temporary directory for Redis");
            let port = support::free_port();
            let log_path = dir.path().join("redis.log");
            let mut child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                // 127.0.0.2 too: an address the certificate does not name.
                .args(["--bind", "127.0.0.1", "127.0.0.2"])
                .arg("--tls-cert-file")
                .arg(pki.path("server.pem"))
                .arg("--tls-key-file")
                .arg(pki.path("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(pki.ca())
                .args(["--tls-auth-clients", if mutual { "yes" } else { "no" }])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            let watchdog = watchdog(child.id(), "KILL");
            let mut exited = None;
            let ready = support::poll_until(STARTUP, || {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            let mut server = Server {
                dir,
                port,
                child,
                watchdog,
                pki,
            };
            if let Some(status) = exited {
                panic!(
                    "redis-server exited at start ({status}; is it built with TLS?): {}",
                    log_tail(&log_path)
                );
            }
            if !ready {
                stop(&mut server.child, "KILL");
                panic!(
                    "redis-server did not listen within {STARTUP:?}: {}",
                    log_tail(&log_path)
                );
            }
            support::loud(&format!(
                "tests/tls.rs: started a throwaway TLS-only redis-server on 127.0.0.1:{port} \
                 (client certificates {})",
                if mutual { "required" } else { "not asked for" }
            ));
            server
        }

        pub fn url(&self, scheme: &str) -> String {
            format!("{scheme}://127.0.0.1:{}", self.port)
        }

        pub fn pki(&self) -> &Pki {
            &self.pki
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            stop(&mut self.child, "KILL");
            let _ = self.watchdog.kill();
            let _ = self.watchdog.wait();
            let _ = &self.dir;
        }
    }

    /// `rediss://` with our CA trusted connects and works, with the builder method and with
    /// `connect(url)`'s `tls_ca_file`; the same port refuses plain `redis://`, so what works
    /// is TLS.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rediss_with_our_ca_works() {
        let Some(server) = Server::get("rediss_with_our_ca_works", false) else {
            return;
        };
        let store = RedisStore::builder(&server.url("rediss"))
            .key_prefix(support::unique_name("sst:tls:"))
            .tls_root_certificate_pem(server.pki().read("ca.pem"))
            .connect()
            .await
            .unwrap_or_else(|err| panic!("builder: {}", chain(&err)));
        round_trip(&store).await;

        let url = format!(
            "{}?tls_ca_file={}&key_prefix={}",
            server.url("rediss"),
            server.pki().ca().display(),
            support::unique_name("sst:tls:")
        );
        let store = session_stores::connect(&url)
            .await
            .unwrap_or_else(|err| panic!("connect(url): {}", chain(&err)));
        round_trip(&*store).await;
        store.clear().await.expect("clear");

        // Plain text to the TLS port gets nowhere.
        let plain = RedisStore::builder(&server.url("redis"))
            .operation_timeout(Duration::from_secs(3))
            .connect()
            .await;
        assert!(plain.is_err(), "plain redis:// to the TLS port");
    }

    /// A `rediss://` server whose certificate our trust does not cover is refused at once
    /// with a typed, non-transient error: another CA (builder and `tls_ca_file`), or only the
    /// public roots (no CA given).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn untrusted_certificates_are_refused_quickly() {
        let Some(server) = Server::get("untrusted_certificates_are_refused_quickly", false) else {
            return;
        };
        let operation_timeout = Duration::from_secs(5);
        let url = server.url("rediss");
        let builders = [
            RedisStore::builder(&url).tls_root_certificate_pem(server.pki().read("other-ca.pem")),
            RedisStore::builder(&url),
        ];
        for builder in builders {
            let started = Instant::now();
            let result = builder.operation_timeout(operation_timeout).connect().await;
            assert_refused(result, "UnknownIssuer", started.elapsed());
        }
        // The error also comes from an operation of a store built without I/O.
        let store = RedisStore::builder(&url)
            .operation_timeout(operation_timeout)
            .build()
            .expect("build does no I/O");
        let started = Instant::now();
        let result = store.get(&SessionId::generate()).await;
        assert_refused(result, "invalid peer certificate", started.elapsed());

        let started = Instant::now();
        let result = session_stores::connect(&format!(
            "{url}?tls_ca_file={}",
            server.pki().other_ca().display()
        ))
        .await;
        assert_refused(result, "UnknownIssuer", started.elapsed());
    }

    /// redis-rs checks the host name: `rediss://127.0.0.2`, an address of the same server
    /// that the certificate (IP 127.0.0.1, DNS localhost) does not name, is refused with our
    /// CA trusted, through the builder and `connect(url)`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_the_certificate_does_not_name_is_refused() {
        let Some(server) = Server::get("a_host_the_certificate_does_not_name_is_refused", false)
        else {
            return;
        };
        let url = server.url("rediss").replace("127.0.0.1", "127.0.0.2");
        let started = Instant::now();
        let result = RedisStore::builder(&url)
            .tls_root_certificate_pem(server.pki().read("ca.pem"))
            .operation_timeout(Duration::from_secs(5))
            .connect()
            .await;
        assert_refused(result, "does not name the host", started.elapsed());
        let started = Instant::now();
        let result = session_stores::connect(&format!(
            "{url}?tls_ca_file={}",
            server.pki().ca().display()
        ))
        .await;
        assert_refused(result, "does not name the host", started.elapsed());
    }

    /// A server that requires client certificates accepts ours (builder and URL options)
    /// and refuses a client without one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_certificates_for_mutual_tls() {
        let Some(server) = Server::get("client_certificates_for_mutual_tls", true) else {
            return;
        };
        let pki = server.pki();
        let store = RedisStore::builder(&server.url("rediss"))
            .key_prefix(support::unique_name("sst:mtls:"))
            .tls_root_certificate_pem(pki.read("ca.pem"))
            .tls_client_certificate_pem(pki.read("client.pem"), pki.read("client.key"))
            .connect()
            .await
            .unwrap_or_else(|err| panic!("with a client certificate: {}", chain(&err)));
        round_trip(&store).await;
        let url = format!(
            "{}?tls_ca_file={}&tls_cert_file={}&tls_key_file={}",
            server.url("rediss"),
            pki.ca().display(),
            pki.path("client.pem").display(),
            pki.path("client.key").display()
        );
        let store = session_stores::connect(&url).await.unwrap_or_else(|err| {
            panic!("connect(url) with a client certificate: {}", chain(&err))
        });
        round_trip(&*store).await;

        let started = Instant::now();
        let result = RedisStore::builder(&server.url("rediss"))
            .tls_root_certificate_pem(pki.read("ca.pem"))
            .operation_timeout(Duration::from_secs(5))
            .connect()
            .await;
        let elapsed = started.elapsed();
        let err = result.expect_err("no client certificate");
        let text = chain(&err);
        eprintln!("without a client certificate, in {elapsed:?}: {text}");
        // TLS 1.3 finishes the client's handshake before the server checks its certificate,
        // so the refusal comes with the first reply: normally the server's alert, but the
        // server's close may overtake it (a reset, which reads as an unreachable server).
        match err.kind() {
            ErrorKind::Backend => {
                assert!(text.contains("CertificateRequired"), "{text}");
                assert!(text.contains("tls_client_certificate_pem"), "{text}");
            }
            ErrorKind::Unavailable => {}
            other => panic!("{other:?}: {text}"),
        }
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }

    /// The whole conformance suite over `rediss://` with our CA, every store with a key
    /// prefix of its own.
    #[cfg(feature = "conformance")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_suite_over_tls() {
        let _load = support::loads_the_machine().await;
        let Some(server) = Server::get("whole_suite_over_tls", false) else {
            return;
        };
        let url = server.url("rediss");
        let ca = server.pki().read("ca.pem");
        let started = Instant::now();
        let result = session_stores::conformance::run(move || {
            let (url, ca) = (url.clone(), ca.clone());
            async move {
                RedisStore::builder(&url)
                    .key_prefix(support::unique_name("sst:conf:tls:"))
                    .tls_root_certificate_pem(ca)
                    .build()
                    .expect("a valid store configuration")
            }
        })
        .await;
        if let Err(failures) = result {
            panic!("RedisStore over TLS: {failures}");
        }
        eprintln!(
            "RedisStore over TLS passed all {} conformance checks in {:?}",
            session_stores::conformance::check_names().count(),
            started.elapsed()
        );
    }
}

/// A throwaway 3-primary Redis Cluster speaking only TLS, its cluster bus included.
#[cfg(feature = "redis-tls")]
mod redis_cluster {
    use super::*;
    use session_stores::RedisStore;

    pub struct Cluster {
        dir: tempfile::TempDir,
        ports: Vec<u16>,
        nodes: Vec<(Child, Child)>,
        pki: Arc<Pki>,
    }

    /// A free loopback port whose cluster bus port (+10000) is free too.
    fn free_cluster_port() -> u16 {
        support::free_cluster_port()
    }

    impl Cluster {
        pub fn get(test: &str) -> Option<Arc<Cluster>> {
            if !support::require_programs(test, &["openssl", "redis-server", "redis-cli"]) {
                return None;
            }
            static CLUSTER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
            Some(shared(&CLUSTER, || Cluster::start(Pki::get())))
        }

        /// `redis-cli` over TLS against one node, bounded to 60 s (it waits for a cluster
        /// to join without limit).
        fn cli(&self, port: u16, args: &[&str]) -> std::process::Output {
            Command::new("timeout")
                .args(["60", "redis-cli", "--tls"])
                .arg("--cacert")
                .arg(self.pki.ca())
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(args)
                .output()
                .expect("run redis-cli")
        }

        fn start(pki: Arc<Pki>) -> Cluster {
            let dir = tempfile::tempdir().expect("a temporary directory for the cluster");
            let mut cluster = Cluster {
                dir,
                ports: Vec::new(),
                nodes: Vec::new(),
                pki,
            };
            for _ in 0..3 {
                let port = free_cluster_port();
                let path = cluster.dir.path();
                let child = Command::new("redis-server")
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--bind", "127.0.0.1"])
                    .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                    .arg("--cluster-config-file")
                    .arg(format!("nodes-{port}.conf"))
                    .arg("--tls-cert-file")
                    .arg(cluster.pki.path("server.pem"))
                    .arg("--tls-key-file")
                    .arg(cluster.pki.path("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(cluster.pki.ca())
                    .args(["--tls-auth-clients", "no"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(path)
                    .arg("--logfile")
                    .arg(path.join(format!("{port}.log")))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start redis-server");
                let guard = watchdog(child.id(), "KILL");
                cluster.ports.push(port);
                cluster.nodes.push((child, guard));
            }
            for port in cluster.ports.clone() {
                let up = support::poll_until(STARTUP, || {
                    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                });
                let log = cluster.dir.path().join(format!("{port}.log"));
                assert!(up, "a cluster node did not listen: {}", log_tail(&log));
            }
            let nodes: Vec<String> = cluster
                .ports
                .iter()
                .map(|port| format!("127.0.0.1:{port}"))
                .collect();
            let mut args = vec!["--cluster", "create"];
            args.extend(nodes.iter().map(String::as_str));
            args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
            let created = cluster.cli(cluster.ports[0], &args);
            assert!(
                created.status.success(),
                "could not form the TLS cluster: {}{}",
                String::from_utf8_lossy(&created.stdout),
                String::from_utf8_lossy(&created.stderr)
            );
            let ok = support::poll_until(STARTUP, || {
                cluster.ports.iter().all(|port| {
                    String::from_utf8_lossy(&cluster.cli(*port, &["cluster", "info"]).stdout)
                        .contains("cluster_state:ok")
                })
            });
            assert!(ok, "the TLS cluster did not reach cluster_state:ok");
            support::loud(&format!(
                "tests/tls.rs: started a throwaway TLS-only Redis Cluster on 127.0.0.1 ports {:?}",
                cluster.ports
            ));
            cluster
        }

        pub fn urls(&self) -> Vec<String> {
            self.ports
                .iter()
                .map(|port| format!("rediss://127.0.0.1:{port}"))
                .collect()
        }
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            for (child, guard) in &mut self.nodes {
                stop(child, "KILL");
                let _ = guard.kill();
                let _ = guard.wait();
            }
        }
    }

    /// A TLS cluster with our CA: the builder and `connect("rediss+cluster://...")` work
    /// (keys land on every primary), and the whole conformance suite passes over it.
    #[cfg(feature = "conformance")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_over_tls_with_our_ca() {
        let _load = support::loads_the_machine().await;
        let Some(cluster) = Cluster::get("cluster_over_tls_with_our_ca") else {
            return;
        };
        let ca = cluster.pki.read("ca.pem");
        let store = RedisStore::cluster_builder(cluster.urls())
            .key_prefix(support::unique_name("sst:tlsc:"))
            .tls_root_certificate_pem(ca.clone())
            .connect()
            .await
            .unwrap_or_else(|err| panic!("cluster builder: {}", chain(&err)));
        assert!(store.is_cluster());
        for _ in 0..20 {
            round_trip(&store).await;
        }
        let url = format!(
            "rediss+cluster://127.0.0.1:{},127.0.0.1:{}?tls_ca_file={}&key_prefix={}",
            cluster.ports[0],
            cluster.ports[1],
            cluster.pki.ca().display(),
            support::unique_name("sst:tlsc:")
        );
        let store = session_stores::connect(&url)
            .await
            .unwrap_or_else(|err| panic!("connect(url): {}", chain(&err)));
        round_trip(&*store).await;

        let urls = cluster.urls();
        let started = Instant::now();
        let result = session_stores::conformance::run(move || {
            let (urls, ca) = (urls.clone(), ca.clone());
            async move {
                RedisStore::cluster_builder(&urls)
                    .key_prefix(support::unique_name("sst:conf:tlsc:"))
                    .tls_root_certificate_pem(ca)
                    .build()
                    .expect("a valid store configuration")
            }
        })
        .await;
        if let Err(failures) = result {
            panic!("RedisStore on a TLS cluster: {failures}");
        }
        eprintln!(
            "RedisStore on a TLS cluster passed all {} conformance checks in {:?}",
            session_stores::conformance::check_names().count(),
            started.elapsed()
        );
    }

    /// A TLS cluster whose certificates our trust does not cover is refused at once with a
    /// typed, non-transient error: another CA (the cluster client path), or the public roots
    /// only (deadpool-redis' cluster pool).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_with_an_untrusted_certificate_is_refused() {
        let Some(cluster) = Cluster::get("cluster_with_an_untrusted_certificate_is_refused") else {
            return;
        };
        let operation_timeout = Duration::from_secs(5);
        let builders = [
            RedisStore::cluster_builder(cluster.urls())
                .tls_root_certificate_pem(cluster.pki.read("other-ca.pem")),
            RedisStore::cluster_builder(cluster.urls()),
        ];
        for builder in builders {
            let started = Instant::now();
            let result = builder.operation_timeout(operation_timeout).connect().await;
            assert_refused(result, "UnknownIssuer", started.elapsed());
        }
    }
}

/// Bad TLS settings for Redis are configuration errors (no server needed: nothing is sent).
#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn redis_bad_tls_settings_are_config_errors() {
    use session_stores::RedisStore;
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    let builds = [
        (
            RedisStore::builder("rediss://127.0.0.1:1").tls_root_certificate_pem("not pem"),
            "holds no PEM certificate",
        ),
        (
            RedisStore::builder("rediss://127.0.0.1:1")
                .tls_root_certificate_pem(std::fs::read(&garbage).unwrap()),
            "does not parse",
        ),
        (
            RedisStore::builder("rediss://127.0.0.1:1")
                .tls_client_certificate_pem("not pem", "not a key"),
            "holds no PEM certificate",
        ),
        (
            RedisStore::builder("redis://127.0.0.1:1").tls_root_certificate_pem("x"),
            "not a TLS one",
        ),
        (
            RedisStore::cluster_builder(["rediss://127.0.0.1:1", "redis://127.0.0.1:2"])
                .tls_root_certificate_pem("x"),
            "not a TLS one",
        ),
    ];
    for (builder, expected) in builds {
        let err = builder.build().expect_err(expected);
        assert_eq!(err.kind(), ErrorKind::Config, "{}", chain(&err));
        assert!(chain(&err).contains(expected), "{}", chain(&err));
    }
    let urls = [
        (
            format!("rediss://127.0.0.1:1?tls_ca_file={}", missing.display()),
            "could not read",
        ),
        (
            format!("rediss://127.0.0.1:1?tls_ca_file={}", garbage.display()),
            "does not parse",
        ),
        (
            format!("redis://127.0.0.1:1?tls_ca_file={}", garbage.display()),
            "need a TLS URL",
        ),
        (
            format!("rediss://127.0.0.1:1?tls_cert_file={}", garbage.display()),
            "go together",
        ),
        (
            format!(
                "rediss+cluster://127.0.0.1:1,127.0.0.1:2?tls_ca_file={}",
                missing.display()
            ),
            "could not read",
        ),
    ];
    for (url, expected) in &urls {
        let err = session_stores::connect(url).await.map(drop).expect_err(url);
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {}", chain(&err));
        assert!(chain(&err).contains(expected), "{url}: {}", chain(&err));
    }
}
