//! [`MySqlStore`] against a real MySQL or MariaDB server (`SESSION_STORES_MYSQL_URL`,
//! default `mysql://root@127.0.0.1:3306/test`; MariaDB in CI): what the conformance suite
//! cannot see from outside the store. Each test works in tables of its own, dropped at the
//! end.
#![cfg(feature = "mysql")]

use std::time::{Duration, SystemTime};

use serde_json::json;
use std::sync::Arc;

use session_stores::{
    Error, ErrorKind, MySqlStore, Owner, Rotation, Session, SessionId, SessionStore,
};
use sqlx::{AssertSqlSafe, MySqlPool};

use crate::support::{self, MYSQL_DEFAULT, MYSQL_VAR};

const HANG_GUARD: Duration = Duration::from_secs(20);
const HOUR: Duration = Duration::from_secs(3600);

/// A pool to the test server and a table prefix of the test's own, or `None` (a loud skip,
/// a failure in CI) without a server.
async fn server() -> Option<(MySqlPool, String, String)> {
    let url = support::service_url(MYSQL_VAR, MYSQL_DEFAULT, 3306)?;
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .expect("connect to the test MySQL");
    Some((pool, url, support::unique_name("sst_my_") + "_"))
}

async fn migrated(pool: &MySqlPool, table: &str) -> MySqlStore {
    let store = MySqlStore::builder()
        .table(table)
        .build(pool.clone())
        .expect("valid names");
    store.migrate().await.expect("migrate");
    store
}

fn session(data: serde_json::Value) -> Session {
    let mut s = Session::new(HOUR);
    for (k, v) in data.as_object().expect("an object") {
        s.insert(k, v.clone()).unwrap();
    }
    s
}

async fn exec(pool: &MySqlPool, sql: String) {
    sqlx::query(AssertSqlSafe(sql)).execute(pool).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_documented_table_and_is_idempotent() {
    let Some((pool, _, prefix)) = server().await else {
        return;
    };
    let table = format!("{prefix}t");
    let store = migrated(&pool, &table).await;
    store.migrate().await.expect("a second migrate");
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR) \
         FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? \
         ORDER BY ordinal_position",
    )
    .bind(&table)
    .fetch_all(&pool)
    .await
    .unwrap();
    // MariaDB spells the integer type `bigint(20)`, MySQL 8 `bigint`.
    let columns: Vec<(&str, &str)> = columns
        .iter()
        .map(|(n, t)| (n.as_str(), t.trim_end_matches("(20)")))
        .collect();
    assert_eq!(
        columns,
        [
            ("id", "varbinary(128)"),
            ("data", "longtext"),
            ("expires_at", "bigint"),
            ("version", "bigint"),
            ("owner", "varbinary(128)"),
            ("absolute_expiry", "bigint"),
            ("moved_to", "varbinary(128)"),
        ]
    );
    // Several instances starting at once all succeed.
    let table2 = format!("{prefix}u");
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let store = MySqlStore::builder()
                .table(&table2)
                .build(pool.clone())
                .unwrap();
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().expect("a concurrent migrate");
    }
    // The data is the exact JSON written, readable by SQL.
    let id = SessionId::generate();
    store
        .set(&id, &session(json!({"user_id": 42, "z": 1, "a": 2.50})))
        .await
        .unwrap();
    let (data, user): (String, Option<String>) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT data, JSON_VALUE(data, '$.user_id') FROM `{table}` WHERE id = ?"
    )))
    .bind(id.as_str())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(data, r#"{"a":2.5,"user_id":42,"z":1}"#);
    assert_eq!(user.as_deref(), Some("42"));
    support::drop_mysql_tables(&pool, &prefix).await;
}

/// A role with only `SELECT, INSERT, UPDATE, DELETE` on a ready table starts (through
/// `connect`, which migrates) and works; on a table missing an index it still starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_only_row_privileges_can_start_and_work() {
    let Some((pool, url, prefix)) = server().await else {
        return;
    };
    let table = format!("{prefix}t");
    migrated(&pool, &table).await;
    let user = support::unique_name("sst_lp_");
    exec(
        &pool,
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'"),
    )
    .await;
    exec(
        &pool,
        format!("CREATE USER '{user}'@'localhost' IDENTIFIED BY 'pw-{user}'"),
    )
    .await;
    for host in ["%", "localhost"] {
        exec(
            &pool,
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON `{table}` TO '{user}'@'{host}'"),
        )
        .await;
    }
    let (_, rest) = url.split_once("://").unwrap();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let as_user = format!("mysql://{user}:pw-{user}@{rest}");
    let sep = if as_user.contains('?') { '&' } else { '?' };
    let outcome = async {
        let store = session_stores::connect(&format!("{as_user}{sep}table={table}")).await?;
        let id = SessionId::generate();
        assert!(store.create(&id, &session(json!({"n": 1}))).await?);
        assert_eq!(
            store.get(&id).await?.unwrap().get::<u64>("n").unwrap(),
            Some(1)
        );
        assert!(store.touch(&id, SystemTime::now() + HOUR).await?);
        store.delete_expired().await?;
        store.destroy(&id).await?;
        // Without its expiry index, the table still serves this role: migrate may not
        // create it, and the store scans instead.
        exec(
            &pool,
            format!("DROP INDEX `{table}_expires_at_idx` ON `{table}`"),
        )
        .await;
        let store = session_stores::connect(&format!("{as_user}{sep}table={table}")).await?;
        store.set(&id, &session(json!({"n": 2}))).await?;
        assert_eq!(store.len().await?, 1);
        // A table it may not create is an error, not a panic.
        let missing = session_stores::connect(&format!("{as_user}{sep}table={prefix}none")).await;
        assert!(missing.is_err());
        Ok::<_, Error>(())
    }
    .await;
    for host in ["%", "localhost"] {
        exec(&pool, format!("DROP USER IF EXISTS '{user}'@'{host}'")).await;
    }
    support::drop_mysql_tables(&pool, &prefix).await;
    outcome.unwrap();
}

/// A row locked by a stuck transaction makes a write fail with a transient `Timeout` within
/// the operation timeout (the server's lock wait, or the store's deadline), and the old
/// session is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_lock_held_by_a_stuck_transaction_gives_a_timeout_and_keeps_the_session() {
    let _alone = support::measures_time().await;
    let Some((pool, url, prefix)) = server().await else {
        return;
    };
    let table = format!("{prefix}t");
    let store = migrated(&pool, &table).await;
    let id = SessionId::generate();
    store.set(&id, &session(json!({"n": 1}))).await.unwrap();
    let bounded = MySqlStore::builder()
        .table(&table)
        .operation_timeout(Duration::from_millis(1500))
        .connect(&url)
        .await
        .unwrap();
    let mut stuck = pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "SELECT 1 FROM `{table}` WHERE id = ? FOR UPDATE"
    )))
    .bind(id.as_str())
    .execute(&mut *stuck)
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(HANG_GUARD, bounded.set(&id, &session(json!({"n": 2}))))
        .await
        .expect("set hung on a locked row");
    let waited = started.elapsed();
    stuck.rollback().await.unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert_eq!(err.session(), Some(&id.hint()));
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    // The store's connection is usable again, and the old session is intact.
    let got = bounded.get(&id).await.unwrap().unwrap();
    assert_eq!(got.get::<u64>("n").unwrap(), Some(1));
    support::drop_mysql_tables(&pool, &prefix).await;
}

/// A write that waited for a row lock past the session's expiry is judged when it lands:
/// `touch` and `set_if_version` do not revive the session, and `create` of its id succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_lands_after_the_expiry_does_not_revive_the_session() {
    let _alone = support::measures_time().await;
    let Some((pool, _, prefix)) = server().await else {
        return;
    };
    let table = format!("{prefix}t");
    let store = migrated(&pool, &table).await;
    let id = SessionId::generate();
    let mut short = session(json!({"n": 1}));
    short.set_expires_at_millis(session_stores::now_millis() + 400);
    let v = store.set(&id, &short).await.unwrap();
    let mut stuck = pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "SELECT 1 FROM `{table}` WHERE id = ? FOR UPDATE"
    )))
    .bind(id.as_str())
    .execute(&mut *stuck)
    .await
    .unwrap();
    let (touch, cas) = {
        let (a, b) = (store.clone(), store.clone());
        let (ia, ib) = (id.clone(), id.clone());
        (
            tokio::spawn(async move { a.touch(&ia, SystemTime::now() + HOUR).await }),
            tokio::spawn(async move { b.set_if_version(&ib, &session(json!({"n": 2})), v).await }),
        )
    };
    tokio::time::sleep(Duration::from_millis(900)).await;
    stuck.rollback().await.unwrap();
    assert!(
        !touch.await.unwrap().unwrap(),
        "touch revived an expired session"
    );
    match cas.await.unwrap() {
        Err(err) if err.is_conflict() => {}
        other => panic!("set_if_version over an expired session gave {other:?}"),
    }
    assert!(store.get(&id).await.unwrap().is_none());
    assert!(store.create(&id, &session(json!({"n": 3}))).await.unwrap());
    support::drop_mysql_tables(&pool, &prefix).await;
}

/// Racing creates of one id: exactly one wins, also over an expired row; racing `set`s of
/// one id (which InnoDB may turn into deadlocks) all succeed with distinct versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_have_one_winner_and_racing_sets_all_land() {
    let Some((pool, url, prefix)) = server().await else {
        return;
    };
    let table = format!("{prefix}t");
    migrated(&pool, &table).await;
    let store = MySqlStore::builder()
        .table(&table)
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap();
    for round in 0..20 {
        let id = SessionId::generate();
        if round % 2 == 1 {
            let mut old = session(json!({}));
            old.set_expires_at_millis(session_stores::now_millis() + 30);
            store.set(&id, &old).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move { store.create(&id, &session(json!({ "n": n }))).await })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            won += usize::from(task.await.unwrap().unwrap());
        }
        assert_eq!(won, 1, "round {round}");
    }
    let id = SessionId::generate();
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                let mut versions = Vec::new();
                for k in 0..10 {
                    versions.push(store.set(&id, &session(json!({ "n": n, "k": k }))).await?);
                }
                Ok::<_, Error>(versions)
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.extend(task.await.unwrap().unwrap());
    }
    let count = versions.len();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), count, "two sets reported one version");
    let last = store.get(&id).await.unwrap().unwrap();
    assert_eq!(Some(last.version()), versions.last().copied());
    support::drop_mysql_tables(&pool, &prefix).await;
}

/// Owners compare byte for byte: owners differing only in case or a trailing space are
/// different owners (a collation would fold them together).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_ids_compare_byte_for_byte() {
    let Some((pool, _, prefix)) = server().await else {
        return;
    };
    let store = migrated(&pool, &format!("{prefix}t")).await;
    let names = ["Ada", "ada", "ada ", "ädä"];
    for name in names {
        let mut s = session(json!({}));
        s.set_owner(Some(Owner::new(name).unwrap()));
        store.set(&SessionId::generate(), &s).await.unwrap();
    }
    for name in names {
        let listed = store
            .sessions_of(&Owner::new(name).unwrap(), false)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "{name:?}");
    }
    let (a, b) = (
        SessionId::new("Abc").unwrap(),
        SessionId::new("abc").unwrap(),
    );
    store
        .set(&a, &session(json!({"which": "A"})))
        .await
        .unwrap();
    store
        .set(&b, &session(json!({"which": "a"})))
        .await
        .unwrap();
    assert_eq!(
        store
            .get(&a)
            .await
            .unwrap()
            .unwrap()
            .get::<String>("which")
            .unwrap(),
        Some("A".into())
    );
    assert_eq!(store.len().await.unwrap(), 6);
    support::drop_mysql_tables(&pool, &prefix).await;
}

#[tokio::test]
async fn invalid_names_and_urls_are_config_errors() {
    for bad in ["", "a-b", "x`y", &"t".repeat(50)] {
        let err = MySqlStore::builder()
            .table(bad)
            .connect_lazy("mysql://root@127.0.0.1:1/test")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
    }
    for bad in [
        "mysql://root@127.0.0.1/test?nope=1",
        "mysql://root@127.0.0.1/test?ssl-mode=SOMETIMES",
    ] {
        let err = session_stores::connect(bad).await.err().expect("refused");
        assert_eq!(err.kind(), ErrorKind::Config, "{bad}: {err}");
    }
    #[cfg(feature = "mysql-tls")]
    {
        let err = session_stores::connect(
            "mysql://root@127.0.0.1/test?ssl-mode=VERIFY_CA&ssl-ca=/no/such/ca.pem",
        )
        .await
        .err()
        .expect("refused");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("ssl-ca"), "{err}");
    }
    // An unreachable server is a transient error within the acquire timeout, not a hang.
    let started = std::time::Instant::now();
    let err = MySqlStore::builder()
        .acquire_timeout(Duration::from_millis(500))
        .connect("mysql://root@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// `migrate` puts back a missing index of an existing table (each of the two), keeping the
/// table's sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_rebuilds_a_missing_index_and_keeps_the_sessions() {
    let Some((pool, _, prefix)) = server().await else {
        return;
    };
    let table = format!("{prefix}t");
    let store = migrated(&pool, &table).await;
    let id = SessionId::generate();
    store.set(&id, &session(json!({"n": 1}))).await.unwrap();
    let indexes = || async {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT CAST(index_name AS CHAR) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = ? ORDER BY 1",
        )
        .bind(&table)
        .fetch_all(&pool)
        .await
        .unwrap();
        names
    };
    let all = indexes().await;
    for suffix in ["_expires_at_idx", "_owner_idx"] {
        exec(&pool, format!("DROP INDEX `{table}{suffix}` ON `{table}`")).await;
        assert_ne!(indexes().await, all, "{suffix} dropped");
        store.migrate().await.expect("migrate");
        assert_eq!(indexes().await, all, "{suffix} is back");
    }
    assert_eq!(
        store
            .get(&id)
            .await
            .unwrap()
            .unwrap()
            .get::<u64>("n")
            .unwrap(),
        Some(1)
    );
    support::drop_mysql_tables(&pool, &prefix).await;
}

/// An insert that fails for another reason than a taken id (here: a trigger refuses it, after
/// the statements were prepared) is an error, never "the id is taken": `create` does not
/// answer `false`, `set_if_version` from no session does not answer `Conflict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_insert_is_an_error_not_a_taken_id() {
    let Some((pool, _, prefix)) = server().await else {
        return;
    };
    let table = format!("{prefix}t");
    let store = migrated(&pool, &table).await;
    // The statements are prepared on the store's connections before the trigger exists.
    assert!(
        store
            .create(&SessionId::generate(), &session(json!({})))
            .await
            .unwrap()
    );
    exec(
        &pool,
        format!(
            "CREATE TRIGGER `{table}_refuse` BEFORE INSERT ON `{table}` FOR EACH ROW \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by a trigger'"
        ),
    )
    .await;
    let id = SessionId::generate();
    let err = store
        .create(&id, &session(json!({})))
        .await
        .expect_err("a create the server refused");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err:?}");
    assert_eq!(err.session(), Some(&id.hint()));
    let err = store
        .set_if_version(&id, &session(json!({})), 0)
        .await
        .expect_err("a compare-and-set the server refused");
    assert!(!err.is_conflict(), "{err:?}");
    support::drop_mysql_tables(&pool, &prefix).await;
}

fn owner(name: &str) -> Owner {
    Owner::new(format!("{name}-{}", SessionId::generate())).unwrap()
}

fn owned(owner: &Owner, data: serde_json::Value) -> Session {
    session(data).with_owner(Some(owner.clone()))
}

/// The ids `sessions_of` lists, sorted.
async fn listed(store: &MySqlStore, owner: &Owner) -> Vec<SessionId> {
    let mut ids: Vec<SessionId> = store
        .sessions_of(owner, false)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    ids.sort();
    ids
}

// Lifetimes: absolute expiry and rotation.

const HOUR_MS: i64 = 3_600_000;

/// A session expiring `expires_in` ms from now, with an absolute expiry `absolute_in` ms
/// from now (or none).
fn lived(expires_in: i64, absolute_in: Option<i64>, data: serde_json::Value) -> Session {
    let now = session_stores::now_millis();
    let mut s = session(data);
    s.set_expires_at_millis(now + expires_in);
    s.set_absolute_expiry_millis(absolute_in.map(|a| now + a));
    s
}

async fn got(store: &MySqlStore, id: &SessionId) -> Session {
    store.get(id).await.unwrap().expect("a live session")
}

/// Every write and `touch` is capped by the absolute expiry, later writes keep the earlier
/// one, a write whose absolute expiry has passed deletes, and a new incarnation starts with
/// the one it carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_expiry_caps_writes_and_touches_and_later_writes_keep_the_earlier() {
    let Some((pool, _, prefix)) = server().await else {
        return;
    };
    {
        let store = migrated(&pool, &format!("{prefix}t")).await;
        let id = SessionId::generate();
        let first = lived(HOUR_MS, Some(60_000), json!({"n": 1}));
        let abs = first.absolute_expiry_millis().unwrap();
        let v1 = store.set(&id, &first).await.unwrap();
        let s = got(&store, &id).await;
        assert_eq!(
            (s.absolute_expiry_millis(), s.expires_at_millis()),
            (Some(abs), abs)
        );
        // touch past it: capped, still true.
        assert!(store.touch(&id, SystemTime::now() + HOUR).await.unwrap());
        assert_eq!(got(&store, &id).await.expires_at_millis(), abs);
        // touch before it moves the expiry as usual.
        let earlier = SystemTime::now() + Duration::from_secs(30);
        assert!(store.touch(&id, earlier).await.unwrap());
        assert_eq!(
            got(&store, &id).await.expires_at_millis(),
            session_stores::to_millis(earlier)
        );
        // A write with none keeps it and is capped by it.
        let v2 = store
            .set(&id, &lived(HOUR_MS, None, json!({"n": 2})))
            .await
            .unwrap();
        assert_eq!(v2, v1 + 1);
        let s = got(&store, &id).await;
        assert_eq!(
            (s.absolute_expiry_millis(), s.expires_at_millis()),
            (Some(abs), abs)
        );
        // A later one is not taken (set and compare-and-set).
        store
            .set(&id, &lived(HOUR_MS, Some(2 * HOUR_MS), json!({"n": 3})))
            .await
            .unwrap();
        let v = got(&store, &id).await.version();
        let v = store
            .set_if_version(&id, &lived(HOUR_MS, Some(3 * HOUR_MS), json!({"n": 4})), v)
            .await
            .unwrap();
        let s = got(&store, &id).await;
        assert_eq!(
            (s.absolute_expiry_millis(), s.expires_at_millis()),
            (Some(abs), abs)
        );
        assert_eq!(s.data()["n"], json!(4));
        // An earlier one is taken, and caps.
        let earlier = lived(HOUR_MS, Some(30_000), json!({"n": 5}));
        let earlier_abs = earlier.absolute_expiry_millis().unwrap();
        store.set_if_version(&id, &earlier, v).await.unwrap();
        let s = got(&store, &id).await;
        assert_eq!(
            (s.absolute_expiry_millis(), s.expires_at_millis()),
            (Some(earlier_abs), earlier_abs)
        );
        // Scans return it too.
        let page = store.scan(None, 10).await.unwrap();
        assert_eq!(page.sessions.len(), 1);
        assert_eq!(
            page.sessions[0].1.absolute_expiry_millis(),
            Some(earlier_abs)
        );
        // A write whose absolute expiry has passed deletes, and returns 0.
        assert_eq!(
            store
                .set(&id, &lived(HOUR_MS, Some(-1), json!({})))
                .await
                .unwrap(),
            0
        );
        assert!(store.get(&id).await.unwrap().is_none());
        // A new incarnation starts with the absolute expiry it carries (later than the
        // deleted one's), or none.
        let later = lived(HOUR_MS, Some(2 * HOUR_MS), json!({}));
        assert!(store.create(&id, &later).await.unwrap());
        assert_eq!(
            got(&store, &id).await.absolute_expiry_millis(),
            later.absolute_expiry_millis()
        );
        store.destroy(&id).await.unwrap();
        store
            .set(&id, &lived(HOUR_MS, None, json!({})))
            .await
            .unwrap();
        let s = got(&store, &id).await;
        assert_eq!(s.absolute_expiry_millis(), None);
        // create with a passed absolute expiry stores nothing live.
        let other = SessionId::generate();
        assert!(
            store
                .create(&other, &lived(HOUR_MS, Some(-1), json!({})))
                .await
                .unwrap()
        );
        assert!(store.get(&other).await.unwrap().is_none());
    }
    support::drop_mysql_tables(&pool, &prefix).await;
}

/// rotate: Moved, Absent, Taken; the old id read-only during its grace, skipped by len,
/// scan and sessions_of; destroy of it ends the new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_moves_the_session_and_leaves_the_old_id_read_only() {
    let Some((pool, _, prefix)) = server().await else {
        return;
    };
    {
        let store = migrated(&pool, &format!("{prefix}t")).await;
        let ada = owner("ada");
        let (old, new) = (SessionId::generate(), SessionId::generate());
        let written =
            lived(HOUR_MS, Some(2 * HOUR_MS), json!({"user": "ada"})).with_owner(Some(ada.clone()));
        let v = store.set(&old, &written).await.unwrap();
        let rotation = store.rotate(&old, &new, HOUR).await.unwrap();
        assert_eq!(rotation, Rotation::Moved { version: v + 1 });
        let moved = got(&store, &new).await;
        assert_eq!(moved.version(), v + 1);
        assert_eq!(moved.data(), written.data());
        assert_eq!(moved.owner(), Some(&ada));
        assert_eq!(
            moved.absolute_expiry_millis(),
            written.absolute_expiry_millis()
        );
        assert_eq!(moved.expires_at_millis(), written.expires_at_millis());
        assert!(!moved.is_rotated());
        // The old id: the session as it was, read-only.
        let snapshot = got(&store, &old).await;
        assert!(snapshot.is_rotated());
        assert_eq!((snapshot.version(), snapshot.data()), (v, written.data()));
        assert_eq!(snapshot.owner(), Some(&ada));
        assert!(snapshot.expires_at_millis() <= session_stores::now_millis() + HOUR_MS);
        let err = store.set(&old, &written).await.unwrap_err();
        assert!(matches!(err, Error::Rotated { .. }), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        for expected in [v, 0, v + 1] {
            let err = store
                .set_if_version(&old, &written, expected)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Rotated { .. }), "{expected}: {err:?}");
        }
        let expired = lived(-1, None, json!({}));
        let err = store.set(&old, &expired).await.unwrap_err();
        assert!(matches!(err, Error::Rotated { .. }), "{err:?}");
        let err = store.set_if_version(&old, &expired, v).await.unwrap_err();
        assert!(matches!(err, Error::Rotated { .. }), "{err:?}");
        assert!(!store.create(&old, &written).await.unwrap());
        assert!(!store.touch(&old, SystemTime::now() + HOUR).await.unwrap());
        assert_eq!(
            store
                .rotate(&old, &SessionId::generate(), HOUR)
                .await
                .unwrap(),
            Rotation::Absent
        );
        assert_eq!(got(&store, &old).await.version(), v);
        // Writes under the new id never show through the old one.
        store
            .set(&new, &owned(&ada, json!({"user": "ada", "admin": true})))
            .await
            .unwrap();
        assert_eq!(got(&store, &old).await.data(), written.data());
        // A rotated id is not a session.
        assert_eq!(store.len().await.unwrap(), 1);
        let page = store.scan(None, 10).await.unwrap();
        let ids: Vec<_> = page.sessions.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids, vec![new.clone()]);
        assert_eq!(listed(&store, &ada).await, vec![new.clone()]);

        // Absent and Taken change nothing.
        let nobody = SessionId::generate();
        assert_eq!(
            store
                .rotate(&nobody, &SessionId::generate(), HOUR)
                .await
                .unwrap(),
            Rotation::Absent
        );
        assert_eq!(
            store.rotate(&new, &new, HOUR).await.unwrap(),
            Rotation::Taken
        );
        let other = SessionId::generate();
        let vo = store.set(&other, &session(json!({"o": 1}))).await.unwrap();
        assert_eq!(
            store.rotate(&other, &new, HOUR).await.unwrap(),
            Rotation::Taken
        );
        assert_eq!(
            store.rotate(&other, &old, HOUR).await.unwrap(),
            Rotation::Taken
        );
        assert_eq!(got(&store, &other).await.version(), vo);
        assert!(!got(&store, &other).await.is_rotated());

        // Destroying the old id ends the new session too.
        store.destroy(&old).await.unwrap();
        assert!(store.get(&old).await.unwrap().is_none());
        assert!(store.get(&new).await.unwrap().is_none());
    }
    support::drop_mysql_tables(&pool, &prefix).await;
}

/// The old id resolves only while its grace lasts and the new session is live and not
/// rotated again; delete_expired removes it after its grace and counts it; destroy_owner
/// counts only the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_id_ends_with_its_grace_or_its_new_session() {
    let Some((pool, _, prefix)) = server().await else {
        return;
    };
    {
        let store = migrated(&pool, &format!("{prefix}t")).await;
        let shared = &store;
        let fresh = move |data: serde_json::Value| async move {
            let id = SessionId::generate();
            shared.set(&id, &session(data)).await.unwrap();
            id
        };
        // The grace passes: absent, writable as over nothing, removed by delete_expired.
        let old = fresh(json!({"g": 1})).await;
        let new = SessionId::generate();
        store
            .rotate(&old, &new, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(store.get(&old).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(store.get(&old).await.unwrap().is_none());
        assert_eq!(store.delete_expired().await.unwrap(), 1);
        assert!(store.get(&new).await.unwrap().is_some());
        let old = fresh(json!({"g": 2})).await;
        let new = SessionId::generate();
        store
            .rotate(&old, &new, Duration::from_millis(200))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(store.set(&old, &session(json!({}))).await.unwrap() > 0);
        // An expired rotated id under a new id is replaced by a rotation.
        let third = fresh(json!({"g": 3})).await;
        let spare = SessionId::generate();
        store
            .rotate(&third, &spare, Duration::from_millis(100))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let fourth = fresh(json!({"g": 4})).await;
        assert!(matches!(
            store.rotate(&fourth, &third, HOUR).await.unwrap(),
            Rotation::Moved { .. }
        ));
        assert_eq!(got(&store, &third).await.data()["g"], json!(4));
        // A grace of zero ends it at once.
        let old = fresh(json!({"z": 0})).await;
        store
            .rotate(&old, &SessionId::generate(), Duration::ZERO)
            .await
            .unwrap();
        assert!(store.get(&old).await.unwrap().is_none());
        // The new session destroyed, expired, or rotated again.
        let old = fresh(json!({})).await;
        let new = SessionId::generate();
        store.rotate(&old, &new, HOUR).await.unwrap();
        store.destroy(&new).await.unwrap();
        assert!(store.get(&old).await.unwrap().is_none());
        let old = fresh(json!({})).await;
        let new = SessionId::generate();
        store.rotate(&old, &new, HOUR).await.unwrap();
        store.touch(&new, SystemTime::now() - HOUR).await.unwrap();
        assert!(store.get(&old).await.unwrap().is_none());
        let old = fresh(json!({})).await;
        let (new, newer) = (SessionId::generate(), SessionId::generate());
        store.rotate(&old, &new, HOUR).await.unwrap();
        store.rotate(&new, &newer, HOUR).await.unwrap();
        assert!(store.get(&old).await.unwrap().is_none());
        assert!(got(&store, &new).await.is_rotated());
        // destroy_owner: both ids end, one session counted.
        let ada = owner("ada");
        let old = SessionId::generate();
        store.set(&old, &owned(&ada, json!({}))).await.unwrap();
        let new = SessionId::generate();
        store.rotate(&old, &new, HOUR).await.unwrap();
        assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
        assert!(store.get(&old).await.unwrap().is_none());
        assert!(store.get(&new).await.unwrap().is_none());
    }
    support::drop_mysql_tables(&pool, &prefix).await;
}

/// A compare-and-set through the old id racing a rotation: either the write lands first
/// and is what moves, or it fails as rotated (or a conflict) and the old data moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_the_old_id_racing_rotate_is_moved_or_refused() {
    let Some((pool, _, prefix)) = server().await else {
        return;
    };
    {
        let store = Arc::new(migrated(&pool, &format!("{prefix}t")).await);
        let (mut landed, mut refused) = (0, 0);
        for round in 0..40 {
            let old = SessionId::generate();
            let v = store
                .set(&old, &session(json!({"round": round})))
                .await
                .unwrap();
            let new = SessionId::generate();
            let saved = session(json!({"saved": round}));
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let writer = tokio::spawn({
                let (store, old, saved, barrier) =
                    (store.clone(), old.clone(), saved.clone(), barrier.clone());
                async move {
                    barrier.wait().await;
                    store.set_if_version(&old, &saved, v).await
                }
            });
            let rotator = tokio::spawn({
                let (store, old, new, barrier) =
                    (store.clone(), old.clone(), new.clone(), barrier.clone());
                async move {
                    barrier.wait().await;
                    store.rotate(&old, &new, HOUR).await
                }
            });
            let write = writer.await.unwrap();
            let rotation = rotator.await.unwrap().unwrap();
            let moved = got(&store, &new).await;
            match write {
                Ok(written) => {
                    landed += 1;
                    assert_eq!(written, v + 1);
                    assert_eq!(rotation, Rotation::Moved { version: v + 2 });
                    assert_eq!(moved.data(), saved.data());
                }
                Err(err) => {
                    refused += 1;
                    assert!(err.is_conflict(), "{err:?}");
                    assert_eq!(rotation, Rotation::Moved { version: v + 1 });
                    assert_eq!(moved.data()["round"], json!(round));
                }
            }
        }
        eprintln!("{landed} writes landed first, {refused} were refused");
    }
    support::drop_mysql_tables(&pool, &prefix).await;
}

/// A table of a release before absolute expiries and rotation is upgraded by `migrate`: both
/// nullable columns are added and its sessions read with no absolute expiry; a role that may
/// not alter it gets a configuration error saying what to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_adds_the_lifetime_columns_and_keeps_the_sessions() {
    let Some((pool, url, prefix)) = server().await else {
        return;
    };
    let old_layout = |table: &str| {
        format!(
            "CREATE TABLE `{table}` (id VARBINARY(128) NOT NULL PRIMARY KEY, \
             data LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
             expires_at BIGINT NOT NULL, version BIGINT NOT NULL, owner VARBINARY(128) NULL, \
             KEY `{table}_expires_at_idx` (expires_at), KEY `{table}_owner_idx` (owner)) \
             ENGINE=InnoDB"
        )
    };
    let table = format!("{prefix}t");
    exec(&pool, old_layout(&table)).await;
    let id = SessionId::generate();
    let expires = session_stores::now_millis() + HOUR_MS;
    exec(
        &pool,
        format!(
            "INSERT INTO `{table}` VALUES ('{id}', '{{\"user\":\"ada\"}}', {expires}, 7, 'ada')"
        ),
    )
    .await;
    let store = migrated(&pool, &table).await;
    let s = got(&store, &id).await;
    assert_eq!((s.version(), s.absolute_expiry_millis()), (7, None));
    assert_eq!(s.owner().map(Owner::as_str), Some("ada"));
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
    )
    .bind(&table)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        columns,
        [
            "id",
            "data",
            "expires_at",
            "version",
            "owner",
            "absolute_expiry",
            "moved_to"
        ]
    );
    let capped = lived(HOUR_MS, Some(60_000), json!({}));
    assert_eq!(store.set(&id, &capped).await.unwrap(), 8);
    assert_eq!(
        got(&store, &id).await.absolute_expiry_millis(),
        capped.absolute_expiry_millis()
    );
    assert_eq!(
        store
            .rotate(&id, &SessionId::generate(), HOUR)
            .await
            .unwrap(),
        Rotation::Moved { version: 9 }
    );
    store.migrate().await.expect("a second migrate is a no-op");

    // A role with row privileges only cannot upgrade an old table: a Config error that
    // says what to run, and the table is left as it was.
    let legacy = format!("{prefix}legacy");
    exec(&pool, old_layout(&legacy)).await;
    let user = support::unique_name("sst_lm_");
    for host in ["%", "localhost"] {
        exec(
            &pool,
            format!("CREATE USER '{user}'@'{host}' IDENTIFIED BY 'pw-{user}'"),
        )
        .await;
        exec(
            &pool,
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON `{legacy}` TO '{user}'@'{host}'"),
        )
        .await;
    }
    let (_, rest) = url.split_once("://").unwrap();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let as_user = format!("mysql://{user}:pw-{user}@{rest}");
    let sep = if as_user.contains('?') { '&' } else { '?' };
    let result = session_stores::connect(&format!("{as_user}{sep}table={legacy}"))
        .await
        .map(drop);
    for host in ["%", "localhost"] {
        exec(&pool, format!("DROP USER IF EXISTS '{user}'@'{host}'")).await;
    }
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    assert!(
        err.to_string().contains("ADD COLUMN absolute_expiry"),
        "{err}"
    );
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(&legacy)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(count, 5);
    support::drop_mysql_tables(&pool, &prefix).await;
}
