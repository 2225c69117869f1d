//! The `session-stores` command end to end: the real binary against real stores.
//!
//! - `migrate` moves 100k sessions file → SQLite → Postgres → (MySQL, with its feature) →
//!   Redis → files again, with data,
//!   expiry (to the millisecond) and owner equal at the end, one hop interrupted (SIGKILL) and
//!   resumed from its state file;
//! - `check` passes on a sound deployment and names the problem on a Redis started with
//!   `--maxmemory-policy allkeys-lru`;
//! - `stats`, `list`, `show`, `purge` and the one-line errors.
#![cfg(all(
    feature = "cli",
    feature = "file",
    feature = "sqlite",
    feature = "postgres",
    feature = "redis"
))]

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_stores::{FileStore, Owner, Session, SessionId, SessionStore, connect};

const BIN: &str = env!("CARGO_BIN_EXE_session-stores");

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run session-stores")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What a session must keep through every hop: its data as JSON text, expiry, owner.
type Kept = (String, i64, Option<String>);

fn kept(session: &Session) -> Kept {
    (
        serde_json::to_string(session.data()).unwrap(),
        session.expires_at_millis(),
        session.owner().map(|o| o.as_str().to_string()),
    )
}

async fn everything(store: &dyn SessionStore) -> BTreeMap<SessionId, Kept> {
    let mut all = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = store.scan(cursor.as_ref(), 5000).await.unwrap();
        for (id, session) in page.sessions {
            assert!(all.insert(id, kept(&session)).is_none(), "scanned twice");
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

fn sessions_to_write() -> usize {
    std::env::var("SESSION_STORES_CLI_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_100k_sessions_through_every_backend_and_back() {
    let _load = support::loads_the_machine().await;
    let Some(pg) = support::service_url(
        "SESSION_STORES_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        5432,
    ) else {
        return;
    };
    let Some(redis) =
        support::service_url("SESSION_STORES_REDIS_URL", "redis://127.0.0.1:6379", 6379)
    else {
        return;
    };
    #[cfg(feature = "mysql")]
    let Some(mysql) = support::service_url(support::MYSQL_VAR, support::MYSQL_DEFAULT, 3306) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tag = support::unique_name("cli_");
    let sep = |url: &str| if url.contains('?') { '&' } else { '?' };
    let mut urls = vec![
        format!("file://{}", dir.path().join("files").display()),
        format!("sqlite://{}", dir.path().join("sessions.db").display()),
        format!("{pg}{}table={tag}", sep(&pg)),
    ];
    #[cfg(feature = "mysql")]
    urls.push(format!("{mysql}{}table={tag}", sep(&mysql)));
    let service_backed = 2..urls.len() + 1;
    urls.push(format!("{redis}{}key_prefix={tag}:", sep(&redis)));
    urls.push(format!(
        "file://{}",
        dir.path().join("files-again").display()
    ));

    // 100k sessions of varied data, expiries to the millisecond and owners.
    let count = sessions_to_write();
    let source: Arc<dyn SessionStore> =
        Arc::new(FileStore::new(dir.path().join("files")).await.unwrap());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let source = Arc::clone(&source);
        tasks.push(tokio::spawn(async move {
            for n in (writer..count).step_by(16) {
                let mut s = Session::with_expiry(
                    std::time::SystemTime::now() + Duration::from_secs(3600 + n as u64),
                );
                s.set_expires_at_millis(s.expires_at_millis() + (n % 1000) as i64);
                s.insert("n", n).unwrap();
                s.insert("float", 1.0 + n as f64 / 8.0).unwrap();
                s.insert("text", format!("línea {n}\r\n\"quoted\" 🔑"))
                    .unwrap();
                s.insert("nested", serde_json::json!({"a": [n, null, {}], "b": []}))
                    .unwrap();
                if n % 4 == 0 {
                    s.set_owner(Some(Owner::new(format!("user-{}", n % 97)).unwrap()));
                }
                source.set(&SessionId::generate(), &s).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let original = everything(&*source).await;
    assert_eq!(original.len(), count);
    eprintln!("wrote {count} sessions in {:?}", started.elapsed());

    for (hop, pair) in urls.windows(2).enumerate() {
        let (from, to) = (&pair[0], &pair[1]);
        let state = dir.path().join(format!("hop-{hop}.state"));
        let state_arg = state.to_str().unwrap();
        let started = Instant::now();
        if hop == 1 {
            // Interrupted once: killed as soon as it has saved a position, then resumed.
            let mut child = Command::new(BIN)
                .args(["migrate", from, to, "--state", state_arg, "--page", "2000"])
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let saved = support::poll_until(Duration::from_secs(120), || {
                std::fs::read_to_string(&state).is_ok_and(|t| !t.trim().is_empty())
            });
            child.kill().unwrap();
            child.wait().unwrap();
            let position = std::fs::read_to_string(&state).unwrap_or_default();
            assert!(
                saved && position.trim() != "done",
                "killed before the end: {position:?}"
            );
            // The saved position names no session: an id is a bearer credential.
            assert!(
                original.keys().all(|id| !position.contains(id.as_str())),
                "the state file holds a live id: {position:?}"
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&state).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "state file mode {mode:o}");
            }
        }
        let out = run(&["migrate", from, to, "--state", state_arg], dir.path());
        assert!(out.status.success(), "hop {hop}: {}", text(&out));
        let said = text(&out);
        assert!(said.contains(" 0 missing"), "hop {hop}: {said}");
        if hop == 1 {
            assert!(said.contains("resuming"), "hop {hop} resumed: {said}");
        }
        eprintln!("hop {hop} ({from} -> {to}) in {:?}", started.elapsed());
        let arrived: Box<dyn SessionStore> = connect(to).await.unwrap();
        let got = everything(&*arrived).await;
        assert_eq!(got.len(), count, "hop {hop}: sessions at the destination");
        for (id, want) in &original {
            assert_eq!(got.get(id), Some(want), "hop {hop}: session {id:?} changed");
        }
    }

    // A second run of a finished migration changes nothing.
    let state = dir.path().join("hop-0.state");
    let out = run(
        &[
            "migrate",
            &urls[0],
            &urls[1],
            "--state",
            state.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(
        out.status.success() && text(&out).contains("done"),
        "{}",
        text(&out)
    );

    // Clean up the service-backed namespaces.
    for url in &urls[service_backed] {
        connect(url).await.unwrap().clear().await.unwrap();
    }
    #[cfg(feature = "mysql")]
    {
        let pool = sqlx::MySqlPool::connect(&mysql).await.unwrap();
        support::drop_mysql_tables(&pool, &tag).await;
    }
    let pool = sqlx::PgPool::connect(&pg).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS \"{tag}\""
    )))
    .execute(&pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_list_show_purge_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("s").display());
    let store = connect(&url).await.unwrap();
    let ada = Owner::new("ada").unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut s = Session::new(Duration::from_secs(600));
        s.insert("secret", format!("value-{n}")).unwrap();
        if n < 2 {
            s.set_owner(Some(ada.clone()));
        }
        let id = SessionId::generate();
        store.set(&id, &s).await.unwrap();
        ids.push(id);
    }
    let mut doomed = Session::new(Duration::from_millis(50));
    doomed.insert("x", 1).unwrap();
    store.set(&SessionId::generate(), &doomed).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let out = run(&["stats", &url], dir.path());
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("live sessions:  5"), "{said}");
    assert!(
        said.contains("owned:          2 sessions of 1 owners"),
        "{said}"
    );
    assert!(
        said.contains("expired:        1 not deleted yet"),
        "the file store tells its expired sessions: {said}"
    );

    let out = run(&["list", &url, "--owner", "ada", "--full-ids"], dir.path());
    let said = text(&out);
    assert!(
        ids[..2].iter().all(|id| said.contains(id.as_str())),
        "{said}"
    );
    assert!(!said.contains(ids[2].as_str()), "{said}");
    // Without --full-ids, ids (bearer credentials) are shortened.
    let out = run(&["list", &url, "--owner", "ada"], dir.path());
    let said = text(&out);
    assert!(
        ids[..2]
            .iter()
            .all(|id| !said.contains(id.as_str()) && said.contains(&id.hint().to_string())),
        "{said}"
    );
    let out = run(&["list", &url, "--limit", "3"], dir.path());
    assert_eq!(text(&out).lines().count(), 4, "a header and 3 sessions");

    let out = run(&["show", &url, ids[0].as_str()], dir.path());
    let said = text(&out);
    assert!(
        said.contains("owner:    ada") && !said.contains("value-0"),
        "{said}"
    );
    let out = run(&["show", &url, ids[0].as_str(), "--data"], dir.path());
    assert!(text(&out).contains("value-0"), "data only with --data");

    let out = run(&["purge", &url], dir.path());
    assert!(
        text(&out).contains("purged 1 expired sessions"),
        "{}",
        text(&out)
    );

    // Errors: one line, a non-zero exit, no password.
    let out = run(
        &["stats", "postgres://admin:hunter2@127.0.0.1:1/db"],
        dir.path(),
    );
    let said = text(&out);
    assert!(!out.status.success());
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(
        said.starts_with("error: ") && !said.contains("hunter2"),
        "{said}"
    );
    let out = run(&["show", &url, "not/an/id"], dir.path());
    assert!(!out.status.success() && text(&out).starts_with("error: "));
}

/// A throwaway `redis-server` with `args`, stopped on drop.
struct OwnRedis(std::process::Child, u16);

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn own_redis(dir: &Path, args: &[&str]) -> OwnRedis {
    let port = support::free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--dir", dir.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    assert!(support::poll_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    OwnRedis(child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_sound_deployment_and_names_what_loses_sessions() {
    if !support::require_programs("check", &["redis-server"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sound = own_redis(
        dir.path(),
        &["--appendonly", "yes", "--maxmemory-policy", "noeviction"],
    );
    let url = format!("redis://127.0.0.1:{}?key_prefix=app:", sound.1);
    // A session of the deployment that check must leave alone.
    let store = connect(&url).await.unwrap();
    let id = SessionId::generate();
    store
        .set(&id, &Session::new(Duration::from_secs(600)))
        .await
        .unwrap();
    let out = run(&["check", &url], dir.path());
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("checks passed") && said.contains("nothing found"),
        "{said}"
    );
    assert!(
        store.get(&id).await.unwrap().is_some(),
        "check touched a live session"
    );
    assert_eq!(
        store.len().await.unwrap(),
        1,
        "check left scratch sessions behind"
    );

    // Every eviction policy loses sessions, volatile-lru too: they all have an expiry.
    for policy in ["allkeys-lru", "volatile-lru"] {
        let lossy_dir = tempfile::tempdir().unwrap();
        let lossy = own_redis(
            lossy_dir.path(),
            &["--appendonly", "yes", "--maxmemory-policy", policy],
        );
        let out = run(
            &["check", &format!("redis://127.0.0.1:{}", lossy.1)],
            dir.path(),
        );
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{policy}: {said}");
        assert!(
            said.contains(&format!("maxmemory-policy is {policy}")),
            "{said}"
        );
        assert!(said.contains("noeviction"), "says what to change: {said}");
    }
}

/// A Redis session key with no expiry (what a write that reached the old write script after
/// its own expiry left behind): `check` reports it and fails, `purge` removes it and nothing
/// else, and `check` then finds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_and_purge_removes_redis_keys_with_no_expiry() {
    let Some(redis) =
        support::service_url("SESSION_STORES_REDIS_URL", "redis://127.0.0.1:6379", 6379)
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tag = support::unique_name("immortal_");
    let sep = if redis.contains('?') { '&' } else { '?' };
    let url = format!("{redis}{sep}key_prefix={tag}:");
    let store = connect(&url).await.unwrap();
    let live = SessionId::generate();
    let mut session = Session::new(Duration::from_secs(3600));
    session.insert("user", "ada").unwrap();
    store.set(&live, &session).await.unwrap();
    // The damage: the payload alone, as a key of its own, with no expiry.
    let damaged = SessionId::generate();
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("SET")
        .arg(format!("{tag}:{}", damaged.as_str()))
        .arg(r#"{"cart":1}"#)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert!(store.get(&damaged).await.is_err(), "a Decode error");
    assert_eq!(store.len().await.unwrap(), 2, "len counts it");

    let out = run(&["check", &url], dir.path());
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("1 session key(s) with no expiry"), "{said}");
    assert!(
        !said.contains(damaged.as_str()),
        "no whole id in the output: {said}"
    );

    let out = run(&["purge", &url], dir.path());
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("removed 1 of 1 damaged entries"), "{said}");
    assert_eq!(store.len().await.unwrap(), 1);
    let kept = store
        .get(&live)
        .await
        .unwrap()
        .expect("the live session stays");
    assert_eq!(kept.get_value("user"), session.get_value("user"));

    let out = run(&["check", &url], dir.path());
    let said = text(&out);
    assert!(said.contains("every session key has an expiry"), "{said}");
    store.clear().await.unwrap();
}

/// The command on a MySQL deployment: `stats` counts live, owned and expired rows, `purge`
/// removes the expired ones, `check` runs the whole suite in scratch tables beside the
/// deployment (and removes them), naming no problem on a migrated table.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_purge_and_check_on_mysql() {
    let _load = support::loads_the_machine().await;
    let Some(base) = support::service_url(support::MYSQL_VAR, support::MYSQL_DEFAULT, 3306) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tag = support::unique_name("cli_my_");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}table={tag}");
    let store = connect(&url).await.unwrap();
    let ada = Owner::new("ada").unwrap();
    for n in 0..3 {
        let mut s = Session::new(Duration::from_secs(600));
        if n < 2 {
            s.set_owner(Some(ada.clone()));
        }
        store.set(&SessionId::generate(), &s).await.unwrap();
    }
    let doomed = Session::new(Duration::from_millis(50));
    store.set(&SessionId::generate(), &doomed).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let out = run(&["stats", &url], dir.path());
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("live sessions:  3"), "{said}");
    assert!(
        said.contains("owned:          2 sessions of 1 owners"),
        "{said}"
    );
    assert!(said.contains("expired:        1 not deleted yet"), "{said}");
    let out = run(&["purge", &url], dir.path());
    assert!(
        text(&out).contains("purged 1 expired sessions"),
        "{}",
        text(&out)
    );

    let out = run(&["check", &url], dir.path());
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("checks passed"), "{said}");
    let pool = sqlx::MySqlPool::connect(&base).await.unwrap();
    let scratch: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE 'sst\\_check\\_%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(scratch, 0, "check left scratch tables behind");
    assert_eq!(
        store.len().await.unwrap(),
        3,
        "check touched the deployment"
    );

    support::drop_mysql_tables(&pool, &tag).await;
}
