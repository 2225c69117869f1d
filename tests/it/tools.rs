//! The tools and wrappers together: `copy_sessions`, `migrate`, `Migrating` and `check`
//! keep the stores' promises, and no secret reaches an error or a command's output.
//!
//! - `migrate` between two stores behind the same `HashedIds` (and `Encrypted`) keys copies
//!   every session under its stored id, so that each reads back by its id; a hashed source
//!   whose key the destination lacks is refused;
//! - a session logged out during a copy is not live at the destination afterwards, and one
//!   the destination refuses is reported while the copy goes on;
//! - `Migrating` counts and ends each session once after a bulk copy;
//! - `check` on a path with a space removes what it made;
//! - passwords with `?`, `@`, `#` and `%`, and a key given for a variable name, never show.
#![cfg(all(
    feature = "cli",
    feature = "memory",
    feature = "file",
    feature = "sqlite",
    feature = "hashed-ids",
    feature = "encryption"
))]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use session_stores::migrate::{CopyOptions, copy_sessions};
use session_stores::wrappers::encrypted::{Encrypted, KeyRing};
use session_stores::wrappers::hashed_ids::HashedIds;
use session_stores::wrappers::key::Key;
use session_stores::wrappers::migrating::Migrating;
use session_stores::{
    ErrorKind, MemoryStore, Owner, Result, Session, SessionId, SessionStore, SqliteStore,
    async_trait,
};

const BIN: &str = env!("CARGO_BIN_EXE_session-stores");

fn run(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(dir);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run session-stores")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Copies every session of `from` into `to` with `options`, saving no position: what the
/// copy did.
async fn copy_everything(
    from: Arc<dyn SessionStore>,
    to: Arc<dyn SessionStore>,
    options: CopyOptions,
) -> session_stores::migrate::CopyProgress {
    copy_sessions(from, to, options, |_| Ok(())).await.unwrap()
}

fn session(n: usize, owner: Option<&str>) -> Session {
    let mut s = Session::with_expiry(SystemTime::now() + Duration::from_secs(3600));
    s.insert("n", n).unwrap();
    s.set_owner(owner.map(|o| Owner::new(o).unwrap()));
    s
}

/// The store the app sees at `path`: `HashedIds<Encrypted<SqliteStore>>`, as
/// `connect("sqlite://path?hash_ids_key_env=..&encryption_keys_env=..")` builds it.
async fn sealed_sqlite(path: &Path, hash: &Key, seal: &Key) -> HashedIds<Encrypted<SqliteStore>> {
    let ring = KeyRing::new([Key::from_hex(&seal.to_hex()).unwrap()]).unwrap();
    HashedIds::new(
        Encrypted::new(SqliteStore::open(path).await.unwrap(), ring),
        hash,
    )
}

/// `migrate` between two stores that share their `HashedIds` and `Encrypted` keys: every
/// session reads back by its id at the destination, with its data; the verification reads
/// by id too. Before the fix, every id was hashed twice and nobody could log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_between_hashed_and_encrypted_stores_keeps_every_id() {
    let dir = tempfile::tempdir().unwrap();
    let (hash, seal) = (Key::generate().unwrap(), Key::generate().unwrap());
    let (from_db, to_db) = (dir.path().join("from.db"), dir.path().join("to.db"));
    let source = sealed_sqlite(&from_db, &hash, &seal).await;
    let mut ids = Vec::new();
    for n in 0..50 {
        let id = SessionId::generate();
        let owner = (n % 5 == 0).then_some("alice@example.com");
        source.set(&id, &session(n, owner)).await.unwrap();
        ids.push(id);
    }
    drop(source);
    let env = [
        ("SST_HASH_KEY", hash.to_hex()),
        ("SST_SEAL_KEY", seal.to_hex()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let options = "hash_ids_key_env=SST_HASH_KEY&encryption_keys_env=SST_SEAL_KEY";
    let from = format!("sqlite://{}?{options}", from_db.display());
    let to = format!("sqlite://{}?{options}", to_db.display());
    let state = dir.path().join("state");
    let out = run(
        &["migrate", &from, &to, "--state", state.to_str().unwrap()],
        dir.path(),
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0 missing"), "{}", text(&out));

    let target = sealed_sqlite(&to_db, &hash, &seal).await;
    for (n, id) in ids.iter().enumerate() {
        let got = target
            .get(id)
            .await
            .unwrap()
            .expect("every session by its id");
        assert_eq!(got.get::<usize>("n").unwrap(), Some(n));
    }
    let alice = Owner::new("alice@example.com").unwrap();
    assert_eq!(target.sessions_of(&alice, false).await.unwrap().len(), 10);

    // The state file is its owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "state file mode {mode:o}");
    }

    // A destination without the source's HashedIds key cannot take its (hashed) ids.
    let plain = format!("sqlite://{}", dir.path().join("plain.db").display());
    let out = run(&["migrate", &from, &plain], dir.path(), &env);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("hash_ids_key_env"), "{}", text(&out));
    let other = Key::generate().unwrap().to_hex();
    let mut env_other = env.clone();
    env_other.push(("SST_OTHER_KEY", other.as_str()));
    let elsewhere = format!(
        "sqlite://{}?hash_ids_key_env=SST_OTHER_KEY",
        dir.path().join("other.db").display()
    );
    let out = run(&["migrate", &from, &elsewhere], dir.path(), &env_other);
    assert!(!out.status.success(), "{}", text(&out));
}

/// One key as both the id-hashing key and an encryption key is refused (a leak of either
/// use would be a leak of both), by the command as by `connect`; a ring that does not hold
/// the id key is accepted.
#[test]
fn one_key_for_hashing_and_encryption_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (shared, other) = (Key::generate().unwrap(), Key::generate().unwrap());
    let ring = format!("{},{}", other.to_hex(), shared.to_hex());
    let env = [
        ("SST_HASH_KEY", shared.to_hex()),
        ("SST_RING_WITH_IT", ring),
        ("SST_RING_WITHOUT_IT", other.to_hex()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = |ring: &str| {
        format!(
            "sqlite://{}?hash_ids_key_env=SST_HASH_KEY&encryption_keys_env={ring}",
            dir.path().join("s.db").display()
        )
    };
    let out = run(&["stats", &url("SST_RING_WITH_IT")], dir.path(), &env);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("give the id hashing"), "{}", text(&out));
    assert!(!text(&out).contains(&shared.to_hex()), "{}", text(&out));
    let out = run(&["stats", &url("SST_RING_WITHOUT_IT")], dir.path(), &env);
    assert!(out.status.success(), "{}", text(&out));
}

/// `copy_sessions` itself refuses to hash ids twice.
#[tokio::test]
async fn copy_sessions_refuses_a_hashed_source_into_a_hashed_destination() {
    let key = Key::generate().unwrap();
    let from: Arc<dyn SessionStore> = Arc::new(HashedIds::new(MemoryStore::new(100), &key));
    let to: Arc<dyn SessionStore> = Arc::new(HashedIds::new(MemoryStore::new(100), &key));
    from.set(&SessionId::generate(), &session(1, None))
        .await
        .unwrap();
    let err = copy_sessions(from, to, CopyOptions::default(), |_| Ok(()))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

/// A destination of a copy: a memory store whose `create` does one thing more.
struct Destination {
    inner: MemoryStore,
    on_create: OnCreate,
}

enum OnCreate {
    /// Logs `victim` out at `source` (as `Migrating`'s `destroy` would, in both stores),
    /// landing between the copy's read of the source and its write here.
    LogOutAtSource {
        source: Arc<MemoryStore>,
        victim: SessionId,
    },
    /// Refuses the data of every third session it is given, as Postgres' `jsonb` refuses
    /// `U+0000`.
    RefuseEveryThird(AtomicUsize),
}

impl Destination {
    fn new(on_create: OnCreate) -> Arc<Destination> {
        Arc::new(Destination {
            inner: MemoryStore::new(100),
            on_create,
        })
    }
}

#[async_trait]
impl SessionStore for Destination {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        self.inner.get(id).await
    }
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        self.inner.set(id, session).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        self.inner.touch(id, expires_at).await
    }
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        match &self.on_create {
            OnCreate::LogOutAtSource { source, victim } if id == victim => {
                // The logout ended the session in both stores before this write arrived.
                source.destroy(id).await?;
                self.inner.destroy(id).await?;
                self.inner.create(id, session).await
            }
            OnCreate::RefuseEveryThird(seen)
                if seen.fetch_add(1, Ordering::SeqCst).is_multiple_of(3) =>
            {
                Err(session_stores::Error::encode(id, "U+0000 in a string"))
            }
            _ => self.inner.create(id, session).await,
        }
    }
    async fn set_if_version(&self, id: &SessionId, s: &Session, expected: u64) -> Result<u64> {
        self.inner.set_if_version(id, s, expected).await
    }
    async fn len(&self) -> Result<u64> {
        self.inner.len().await
    }
    async fn clear(&self) -> Result<()> {
        self.inner.clear().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }
}

#[tokio::test]
async fn a_session_logged_out_during_a_copy_is_not_live_at_the_destination() {
    let source = Arc::new(MemoryStore::new(100));
    let mut ids = Vec::new();
    for n in 0..10 {
        let id = SessionId::generate();
        source.set(&id, &session(n, None)).await.unwrap();
        ids.push(id);
    }
    let victim = ids[3].clone();
    let target = Destination::new(OnCreate::LogOutAtSource {
        source: Arc::clone(&source),
        victim: victim.clone(),
    });
    let progress = copy_everything(source.clone(), target.clone(), CopyOptions::default()).await;
    assert_eq!(progress.vanished, 1, "{progress:?}");
    assert_eq!(progress.copied, 9, "{progress:?}");
    assert!(target.get(&victim).await.unwrap().is_none(), "revived");
    for id in ids.iter().filter(|id| **id != victim) {
        assert!(target.get(id).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn a_session_the_destination_refuses_is_reported_and_the_copy_goes_on() {
    let source = Arc::new(MemoryStore::new(100));
    for n in 0..9 {
        source
            .set(&SessionId::generate(), &session(n, None))
            .await
            .unwrap();
    }
    let target = Destination::new(OnCreate::RefuseEveryThird(AtomicUsize::new(0)));
    let progress = copy_everything(source, target.clone(), CopyOptions::default().page(2)).await;
    assert_eq!(progress.failures.len(), 3, "{progress:?}");
    assert_eq!(progress.copied, 6, "{progress:?}");
    assert_eq!(target.len().await.unwrap(), 6);
    for failure in &progress.failures {
        assert!(failure.reason.contains("U+0000"), "{}", failure.reason);
        assert!(
            failure.id.to_string().len() < 20,
            "shortened: {}",
            failure.id
        );
    }
}

/// After the README's recipe (the app on `Migrating`, then a bulk copy of the rest), every
/// session sits in both stores; `len` and `destroy_owner` count each once.
#[tokio::test]
async fn migrating_counts_and_ends_each_session_once_after_a_bulk_copy() {
    let (old, new) = (
        Arc::new(MemoryStore::new(100)),
        Arc::new(MemoryStore::new(100)),
    );
    let alice = Owner::new("alice").unwrap();
    for n in 0..8 {
        let owner = (n % 2 == 0).then_some("alice");
        old.set(&SessionId::generate(), &session(n, owner))
            .await
            .unwrap();
    }
    let progress = copy_everything(old.clone(), new.clone(), CopyOptions::default()).await;
    assert_eq!(progress.copied, 8);
    let migrating = Migrating::new(Arc::clone(&old), Arc::clone(&new));
    assert_eq!(migrating.len().await.unwrap(), 8);
    // One more, only in the old store, and one only in the new.
    old.set(&SessionId::generate(), &session(8, Some("alice")))
        .await
        .unwrap();
    new.set(&SessionId::generate(), &session(9, None))
        .await
        .unwrap();
    assert_eq!(migrating.len().await.unwrap(), 10);
    assert_eq!(migrating.destroy_owner(&alice, None).await.unwrap(), 5);
    assert!(
        migrating
            .sessions_of(&alice, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(migrating.len().await.unwrap(), 5);
}

/// `check` on SQLite and file URLs whose path has a space (`%20`) removes every scratch
/// table and directory it made; before, it left them in the production database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_cleans_up_on_a_path_with_a_space() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("with space");
    std::fs::create_dir_all(&base).unwrap();
    let db = base.join("s.db");
    let sqlite = format!("sqlite://{}", db.display()).replace(' ', "%20");
    let out = run(&["check", &sqlite], dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'sst_check%'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(|name| name.unwrap())
        .collect();
    assert!(tables.is_empty(), "left behind: {tables:?}");

    let files = base.join("files");
    let file_url = format!("file://{}", files.display()).replace(' ', "%20");
    let out = run(&["check", &file_url], dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let left: Vec<_> = std::fs::read_dir(&files)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().contains("sst_check"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `list` shortens ids (bearer credentials) unless asked for whole ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shortens_ids_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let id = SessionId::generate();
    store.set(&id, &session(1, None)).await.unwrap();
    drop(store);
    let url = format!("sqlite://{}", db.display());
    let out = run(&["list", &url], dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(id.as_str()), "{}", text(&out));
    assert!(
        text(&out).contains(&id.hint().to_string()),
        "{}",
        text(&out)
    );
    let out = run(&["list", &url, "--full-ids"], dir.path(), &[]);
    assert!(text(&out).contains(id.as_str()), "{}", text(&out));
}

/// No error or output of the command shows a password (with `?`, `@`, `#` or `%` in it) or
/// a key given where the name of its variable belongs, nor any part of either.
#[test]
fn no_password_or_key_reaches_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let secrets = ["Qx7?Wz9", "Qx7@Wz9", "Qx7#Wz9", "Qx7%3FWz9", "Qx7/Wz9?Vb3"];
    for secret in secrets {
        for scheme in ["postgres", "redis"] {
            let url = format!("{scheme}://app:{secret}@127.0.0.1:{port}/0?table=t");
            let url = url.replace(
                "table=t",
                if scheme == "redis" { "db=0" } else { "table=t" },
            );
            let out = run(&["stats", &url], dir.path(), &[]);
            let shown = text(&out);
            assert!(!out.status.success(), "{shown}");
            for part in ["Qx7", "Wz9", "Vb3"] {
                assert!(!shown.contains(part), "{secret} in {url}: {shown}");
            }
        }
    }
    let key = Key::generate().unwrap().to_hex();
    for option in ["hash_ids_key_env", "encryption_keys_env"] {
        let url = format!("memory://?{option}={key}");
        let out = run(&["stats", &url], dir.path(), &[]);
        let shown = text(&out);
        assert!(!out.status.success(), "{shown}");
        assert!(!shown.contains(&key[..16]), "{shown}");
        assert!(!shown.contains(&key[key.len() - 16..]), "{shown}");
    }
}

/// One entry the store cannot decode (data that is not JSON) and one row whose id is not a
/// valid id stop no tool: `stats` counts them apart, `list` names them among the others,
/// `list --owner` lists the owner's sessions, and `migrate` copies every other session,
/// names both, and exits with an error. Before, each of the three failed with `Decode`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_undecodable_entry_stops_no_tool() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let ids: Vec<SessionId> = (0..6).map(|_| SessionId::generate()).collect();
    for (n, id) in ids.iter().enumerate() {
        let owner = (n < 3).then_some("ada");
        store.set(id, &session(n, owner)).await.unwrap();
    }
    drop(store);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE sessions SET data = 'not json' WHERE id = ?1",
        [ids[1].as_str()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO sessions (id, data, expires_at, version, owner) \
         SELECT 'not a valid id!', data, expires_at, version, NULL FROM sessions WHERE id = ?1",
        [ids[0].as_str()],
    )
    .unwrap();
    drop(conn);
    let url = format!("sqlite://{}", db.display());

    let out = run(&["stats", &url], dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("scanned:        5 sessions"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("undecodable:    2 entries"),
        "{}",
        text(&out)
    );

    let out = run(&["list", &url], dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches("cannot be decoded").count(),
        2,
        "{}",
        text(&out)
    );
    for (n, id) in ids.iter().enumerate() {
        assert!(
            text(&out).contains(&id.hint().to_string()),
            "{n}: {}",
            text(&out)
        );
    }

    let out = run(&["list", &url, "--owner", "ada"], dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    for id in &ids[..3] {
        assert!(
            text(&out).contains(&id.hint().to_string()),
            "{}",
            text(&out)
        );
    }

    let dest = dir.path().join("d.db");
    let dest_url = format!("sqlite://{}", dest.display());
    let out = run(&["migrate", &url, &dest_url], dir.path(), &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches("the source cannot decode it").count(),
        2,
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("0 missing"), "{}", text(&out));
    let copied = SqliteStore::open(&dest).await.unwrap();
    assert_eq!(copied.len().await.unwrap(), 5);
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(
            copied.get(id).await.unwrap().is_some(),
            n != 1,
            "session {n}"
        );
    }
}

/// `copy_sessions` (what `session-stores migrate` runs) carries each session's absolute
/// expiry, so a migrated session still ends at its deadline, and copies no rotated id: a
/// rotated id is not a session, and copied it would become a writable one.
#[tokio::test]
async fn copy_sessions_keeps_absolute_expiries_and_skips_rotated_ids() {
    use session_stores::Rotation;
    let from = Arc::new(MemoryStore::new(100));
    let to = Arc::new(MemoryStore::new(100));
    let (kept, old, new) = (
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
    );
    let lived = Session::with_lifetimes(Duration::from_secs(600), Duration::from_secs(3600));
    from.set(&kept, &lived).await.unwrap();
    from.set(&old, &lived).await.unwrap();
    let rotated = from
        .rotate(&old, &new, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(matches!(rotated, Rotation::Moved { .. }));
    let progress = copy_everything(from.clone(), to.clone(), CopyOptions::default()).await;
    assert_eq!(progress.copied, 2, "{progress:?}");
    for id in [&kept, &new] {
        let copy = to.get(id).await.unwrap().expect("copied");
        assert_eq!(
            copy.absolute_expiry_millis(),
            lived.absolute_expiry_millis()
        );
    }
    assert!(
        to.get(&old).await.unwrap().is_none(),
        "a rotated id was copied"
    );
}
