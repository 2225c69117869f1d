//! The demo server (`examples/server.rs`, the README's first command) end to end, as a
//! browser would use it, on every backend through `SESSION_STORE_URL`: one user logs in from
//! two cookie jars, the "your sessions" page lists both devices (this one marked), and "log out
//! everywhere else" from the first logs the second out.
//!
//! `cargo test` builds the example next to the test binaries; the test starts it on a free
//! port per backend.
#![cfg(all(feature = "tower-sessions", feature = "memory"))]

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The example binary cargo built for this test run: `<target>/<profile>/examples/server`.
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in <profile>/deps");
    profile_dir.join("examples").join("server")
}

/// A running demo server, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(url: &str) -> Server {
        Server::start_with(url, &[])
    }

    /// Starts the server on `url` with `env` added to its environment.
    fn start_with(url: &str, env: &[(&str, &str)]) -> Server {
        let port = support::free_port();
        let child = Command::new(server_binary())
            .envs(env.iter().copied())
            .env("SESSION_STORE_URL", url)
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the demo server (built by cargo test as an example)");
        let server = Server { child, port };
        assert!(
            support::poll_until(Duration::from_secs(30), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "the demo server on {url} did not listen within 30 s"
        );
        server
    }

    /// One HTTP/1.1 request with the jar's cookie; updates the jar; the status and body.
    fn send(
        &self,
        jar: &mut Option<String>,
        method: &str,
        path: &str,
        form: &str,
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a read timeout");
        let cookie = jar
            .as_ref()
            .map(|c| format!("Cookie: id={c}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: jar-{}\r\n{cookie}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{form}",
            jar.as_deref().map_or("new", |c| &c[..4.min(c.len())]),
            form.len()
        );
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        for line in head.lines() {
            if let Some(value) = line
                .strip_prefix("set-cookie: ")
                .or(line.strip_prefix("Set-Cookie: "))
                && let Some(rest) = value.strip_prefix("id=")
            {
                let value = rest.split(';').next().unwrap_or("");
                *jar = (!value.is_empty()).then(|| value.to_string());
            }
        }
        (status, body.to_string())
    }
}

/// The device token of the row of the sessions page whose device is `agent`.
fn device_token(page: &str, agent: &str) -> String {
    let row = page
        .split("<tr>")
        .find(|row| row.contains(agent))
        .unwrap_or_else(|| panic!("no row for {agent}: {page}"));
    let (_, rest) = row
        .split_once("name=device value=\"")
        .unwrap_or_else(|| panic!("no sign-out button for {agent}: {page}"));
    rest.split('"').next().unwrap().to_string()
}

fn log_out_everywhere_else_on(url: &str) {
    your_sessions_page(Server::start(url), url);
}

/// One user logged in from three browsers: the first signs the third out from its sessions
/// page, then logs out everywhere else.
fn your_sessions_page(server: Server, url: &str) {
    let mut jars = [None, None, None];
    let mut agents = Vec::new();
    for jar in &mut jars {
        assert_eq!(server.send(jar, "GET", "/", "").0, 200);
        // The user agent the login request sends (see `send`).
        agents.push(format!("jar-{}", &jar.as_deref().unwrap()[..4]));
        let mut before_login = jar.clone();
        let (status, _) = server.send(jar, "POST", "/login", "user=ada");
        assert_eq!(status, 303, "login redirects");
        assert!(jar.is_some(), "a session cookie after login");
        assert_ne!(*jar, before_login, "the login cycled the id");
        // A request still in flight with the old cookie (within the login's grace) reads
        // the session as it was before the login, never the logged-in one.
        let (status, home) = server.send(&mut before_login, "GET", "/", "");
        assert_eq!(status, 200, "{url}: {home}");
        assert!(home.contains("Not logged in."), "{url}: {home}");
    }
    let [first, second, third] = &mut jars;
    let (status, page) = server.send(first, "GET", "/sessions", "");
    assert_eq!(status, 200, "{url}: {page}");
    assert!(page.contains("3 session(s) of ada"), "{url}: {page}");
    assert!(page.contains("Absolute deadline (UTC)"), "{url}: {page}");
    assert_eq!(
        page.matches("<td>?</td>").count(),
        0,
        "each device's start: {url}: {page}"
    );
    assert_eq!(page.matches("(this device)").count(), 1, "{url}: {page}");
    assert_eq!(
        page.matches("Sign out</button>").count(),
        2,
        "{url}: {page}"
    );
    // Sign out one device.
    let token = device_token(&page, &agents[2]);
    let (status, _) = server.send(first, "POST", "/end-device", &format!("device={token}"));
    assert_eq!(status, 303);
    let (_, page) = server.send(first, "GET", "/sessions", "");
    assert!(page.contains("2 session(s) of ada"), "{url}: {page}");
    assert!(!page.contains(&agents[2]), "{url}: {page}");
    let (_, home) = server.send(third, "GET", "/", "");
    assert!(
        home.contains("Not logged in"),
        "{url}: the signed-out browser is logged out: {home}"
    );
    let (_, home) = server.send(second, "GET", "/", "");
    assert!(home.contains("Logged in as <b>ada</b>"), "{url}: {home}");
    // Log out everywhere else.
    let (status, _) = server.send(first, "POST", "/logout-others", "");
    assert_eq!(status, 303);
    let (_, page) = server.send(first, "GET", "/sessions", "");
    assert!(page.contains("1 session(s) of ada"), "{url}: {page}");
    let (_, home) = server.send(second, "GET", "/", "");
    assert!(
        home.contains("Not logged in"),
        "{url}: the other browser is logged out: {home}"
    );
    let (_, home) = server.send(first, "GET", "/", "");
    assert!(home.contains("Logged in as <b>ada</b>"), "{url}: {home}");
}

/// The same behind `HashedIds` (and `Encrypted`) from the URL: the listing holds ids only
/// `destroy` accepts, and signing a device out still ends exactly it.
#[cfg(all(feature = "hashed-ids", feature = "encryption", feature = "file"))]
#[test]
fn your_sessions_page_behind_hashed_ids_and_encryption() {
    let dir = tempfile::tempdir().unwrap();
    let (id_key, seal_key) = ("0f".repeat(32), "a5".repeat(32));
    let url = format!(
        "file://{}?hash_ids_key_env=DEMO_ID_KEY&encryption_keys_env=DEMO_SEAL_KEY",
        dir.path().display()
    );
    let server = Server::start_with(
        &url,
        &[("DEMO_ID_KEY", &id_key), ("DEMO_SEAL_KEY", &seal_key)],
    );
    your_sessions_page(server, &url);
}

#[test]
fn your_sessions_page_on_memory() {
    log_out_everywhere_else_on("memory://");
}

#[cfg(feature = "file")]
#[test]
fn your_sessions_page_on_files() {
    let dir = tempfile::tempdir().unwrap();
    log_out_everywhere_else_on(&format!("file://{}", dir.path().display()));
}

#[cfg(feature = "sqlite")]
#[test]
fn your_sessions_page_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    log_out_everywhere_else_on(&format!("sqlite://{}", dir.path().join("s.db").display()));
}

#[cfg(feature = "postgres")]
#[test]
fn your_sessions_page_on_postgres() {
    let Some(url) = support::service_url(
        "SESSION_STORES_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        5432,
    ) else {
        return;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let table = support::unique_name("demo_");
    log_out_everywhere_else_on(&format!("{url}{separator}table={table}"));
    // Leave the test database as it was.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let pool = sqlx::PgPool::connect(&url).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS \"{table}\""
            )))
            .execute(&pool)
            .await
            .expect("drop the demo table");
        });
}

#[cfg(feature = "redis")]
#[test]
fn your_sessions_page_on_redis() {
    let Some(url) =
        support::service_url("SESSION_STORES_REDIS_URL", "redis://127.0.0.1:6379", 6379)
    else {
        return;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let prefix = support::unique_name("demo:");
    log_out_everywhere_else_on(&format!("{url}{separator}key_prefix={prefix}"));
}

#[cfg(feature = "redis")]
#[test]
fn your_sessions_page_on_a_redis_cluster() {
    let Some(nodes) = support::service_urls("SESSION_STORES_REDIS_CLUSTER_URLS", 6379) else {
        return;
    };
    let hosts: Vec<&str> = nodes
        .iter()
        .map(|n| n.trim_start_matches("redis://").trim_end_matches('/'))
        .collect();
    let prefix = support::unique_name("demo:");
    log_out_everywhere_else_on(&format!(
        "redis+cluster://{}?key_prefix={prefix}",
        hosts.join(",")
    ));
}
