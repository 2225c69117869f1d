//! Security at rest, on every backend:
//!
//! - a dump of what the backend holds (files, SQL rows, Redis keys and values) behind
//!   `HashedIds<Encrypted<_>>` contains no live session id, no plaintext data and no owner
//!   (as text, hexadecimal or base64), while listings and "log out everywhere" work with the
//!   real owners;
//! - rotating the key ring keeps every session readable, re-seals on write and on
//!   `reseal`, and a session whose key left the ring is a `Decode` error;
//! - a tampered ciphertext, a ciphertext swapped to another id and a wrong key are each a
//!   `Decode` error with a `SealError` source.
#![cfg(all(feature = "hashed-ids", feature = "encryption"))]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use session_stores::wrappers::encrypted::{Encrypted, KeyRing, SEALED_FIELD, SealError};
use session_stores::wrappers::hashed_ids::HashedIds;
use session_stores::wrappers::key::Key;
use session_stores::{Error, ErrorKind, Owner, Session, SessionId, SessionStore, now_millis};

#[cfg(feature = "file")]
use crate::support;

const SESSIONS: usize = 40;

fn secret_data(n: usize) -> Session {
    let mut session = Session::new(Duration::from_secs(600));
    session
        .insert("email", format!("plaintext-marker-{n}@example.com"))
        .unwrap();
    session.insert("card", "4111-1111-1111-1111").unwrap();
    session
}

/// Owners of the sessions `nothing_usable_at_rest` writes: session `n` belongs to owner
/// `n % OWNERS`, but every fifth session has none.
const OWNERS: usize = 4;

fn owner_of(n: usize) -> Option<Owner> {
    (n % 5 != 4).then(|| Owner::new(format!("owner-marker-{}@example.com", n % OWNERS)).unwrap())
}

/// Every way a backend might spell `text` at rest: as is, in hexadecimal (Redis index keys)
/// and in URL-safe base64 (file names).
fn spellings(text: &str) -> [String; 4] {
    use base64::Engine as _;
    [
        text.to_owned(),
        hex::encode(text),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text),
        base64::engine::general_purpose::STANDARD.encode(text),
    ]
}

/// Writes `SESSIONS` sessions through `HashedIds<Encrypted<backend>>` (and `touch`es and
/// rewrites some, so every write path is covered), then checks `dump()`: it must show every
/// session's hashed id (so the dump really sees the data) and no live id or plaintext.
async fn nothing_usable_at_rest<S, D, Fut>(backend: S, dump: D)
where
    S: SessionStore + 'static,
    D: Fn() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let id_key = Key::generate().unwrap();
    let ring = KeyRing::new([Key::generate().unwrap()]).unwrap();
    let store = HashedIds::new(Encrypted::new(backend, ring), &id_key);
    let ids: Vec<SessionId> = (0..SESSIONS).map(|_| SessionId::generate()).collect();
    let written = |n: usize| secret_data(n).with_owner(owner_of(n));
    for (n, id) in ids.iter().enumerate() {
        match n % 3 {
            0 => assert!(store.create(id, &written(n)).await.unwrap()),
            1 => {
                let v = store.set(id, &secret_data(n)).await.unwrap();
                store.set_if_version(id, &written(n), v).await.unwrap();
            }
            _ => {
                store.set(id, &written(n)).await.unwrap();
                let later = std::time::SystemTime::now() + Duration::from_secs(900);
                assert!(store.touch(id, later).await.unwrap());
            }
        }
    }
    let dumped = dump().await;
    for (n, id) in ids.iter().enumerate() {
        assert!(
            dumped.contains(store.stored_id(id).as_str()),
            "the dump misses session {n}'s hashed id: it does not see the backend's data"
        );
        assert!(!dumped.contains(id.as_str()), "the dump holds live id {n}");
        assert!(!dumped.contains(&format!("plaintext-marker-{n}@")));
        let got = store.get(id).await.unwrap().unwrap();
        assert_eq!(got.data(), secret_data(n).data());
        assert_eq!(got.owner(), owner_of(n).as_ref(), "session {n}'s owner");
    }
    assert!(
        !dumped.contains("4111-1111"),
        "the dump holds plaintext data"
    );
    assert!(!dumped.contains("email"), "the dump holds plaintext keys");
    assert!(dumped.contains(SEALED_FIELD));
    for n in 0..OWNERS {
        let owner = owner_of(n).unwrap();
        for spelled in spellings(owner.as_str()) {
            assert!(
                !dumped.contains(&spelled),
                "the dump names owner {n} ({spelled})"
            );
        }
    }
    for spelled in spellings("owner-marker") {
        assert!(!dumped.contains(&spelled), "the dump names an owner");
    }

    // The owners' listings and "log out everywhere" work with the real owners.
    for n in 0..OWNERS {
        let owner = owner_of(n).unwrap();
        let mut want: Vec<SessionId> = (0..SESSIONS)
            .filter(|&m| owner_of(m).as_ref() == Some(&owner))
            .map(|m| store.listed_id_of(&ids[m]))
            .collect();
        let listed = store.sessions_of(&owner, true).await.unwrap();
        let mut got: Vec<SessionId> = listed.iter().map(|entry| entry.id.clone()).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "owner {n}'s listing");
        for entry in &listed {
            let data = entry.data.as_ref().unwrap();
            assert!(
                data["email"]
                    .as_str()
                    .unwrap()
                    .starts_with("plaintext-marker-")
            );
            assert_eq!(data.len(), 2, "the listing shows only the caller's data");
        }
    }
    let first = owner_of(0).unwrap();
    let ended = store.destroy_owner(&first, Some(&ids[0])).await.unwrap();
    let of_first = (0..SESSIONS)
        .filter(|&m| owner_of(m).as_ref() == Some(&first))
        .count();
    assert_eq!(ended, of_first as u64 - 1);
    assert_eq!(store.sessions_of(&first, false).await.unwrap().len(), 1);
    for (n, id) in ids.iter().enumerate() {
        let live = store.get(id).await.unwrap().is_some();
        let ended = n != 0 && owner_of(n).as_ref() == Some(&first);
        assert_eq!(live, !ended, "session {n} after destroy_owner");
    }
}

fn seal_error(err: &Error) -> SealError {
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    let source = std::error::Error::source(err).expect("a source");
    *source
        .downcast_ref::<SealError>()
        .unwrap_or_else(|| panic!("a SealError source, not {source}"))
}

fn ring(keys: &[&Key]) -> KeyRing {
    KeyRing::new(keys.iter().map(|key| (*key).clone())).unwrap()
}

/// What a backend writer without keys might change in a sealed, owned session: its owner
/// (so `destroy_owner` would miss it), its expiry (to keep it alive for years), or the store
/// it lives in (a blob copied to another application sharing the keys). Each is a `Decode`
/// error; a touch through the wrapper moves the expiry no later than the one sealed.
async fn bindings(backend: Arc<dyn SessionStore>) {
    let key = Key::generate().unwrap();
    let hour = Duration::from_secs(3600);
    let store = Encrypted::new(Arc::clone(&backend), ring(&[&key]))
        .with_context("demo app: sessions")
        .with_max_lifetime(hour);
    let (ada, bob) = (
        Owner::new("ada@example.com").unwrap(),
        Owner::new("bob@example.com").unwrap(),
    );
    let id = SessionId::generate();
    let mut session = Session::new(Duration::from_secs(600)).with_owner(Some(ada.clone()));
    session.insert("email", "ada@example.com").unwrap();
    store.set(&id, &session).await.unwrap();
    let raw = backend.get(&id).await.unwrap().unwrap();
    assert_eq!(
        raw.owner(),
        Some(&store.stored_owner(&ada)),
        "the index sees the owner's keyed hash"
    );
    assert!(!raw.owner().unwrap().as_str().contains("@example"));
    assert_eq!(store.get(&id).await.unwrap().unwrap().owner(), Some(&ada));

    // Re-owned in the backend (to bob's hash, or to bob in the clear, as an earlier release
    // stored owners): it no longer opens, listed or read.
    for reowned in [store.stored_owner(&bob), bob.clone()] {
        backend
            .set(&id, &raw.clone().with_owner(Some(reowned)))
            .await
            .unwrap();
        assert_eq!(
            seal_error(&store.get(&id).await.unwrap_err()),
            SealError::Forged
        );
        if store.capabilities().owners {
            // Listed under bob as an entry that does not open, never with data.
            let listed = store.sessions_of(&bob, true).await.unwrap();
            assert_eq!(listed.len(), 1);
            assert!(listed[0].data.is_none());
            let undecodable = listed[0]
                .undecodable
                .as_ref()
                .expect("reported as undecodable");
            assert_eq!(seal_error(&undecodable.error), SealError::Forged);
        }
    }

    // Extended in the backend past the latest expiry sealed with it.
    let mut extended = raw.clone();
    extended.set_expires_at_millis(now_millis() + 365 * 86_400_000);
    backend.set(&id, &extended).await.unwrap();
    assert_eq!(
        seal_error(&store.get(&id).await.unwrap_err()),
        SealError::ExpiryBeyondSeal
    );

    // Put back as it was, then touched far ahead through the wrapper: moved no further than
    // the sealed bound (an hour after the write).
    backend.set(&id, &raw).await.unwrap();
    assert!(
        store
            .touch(&id, SystemTime::now() + 30 * hour)
            .await
            .unwrap()
    );
    let touched = store.get(&id).await.expect("still opens").unwrap();
    assert!(touched.expires_at_millis() > session.expires_at_millis());
    assert!(
        touched.expires_at_millis() <= now_millis() + 3_600_000,
        "the touch went past the sealed bound"
    );

    // The same keys under another context label: nothing opens.
    let elsewhere = Encrypted::new(Arc::clone(&backend), ring(&[&key])).with_context("another app");
    assert_eq!(
        seal_error(&elsewhere.get(&id).await.unwrap_err()),
        SealError::Forged
    );
}

/// Rotation, tampering, swapping and a wrong key over `backend`, reaching the stored form
/// through the backend itself.
async fn rotation_and_tampering<S: SessionStore + 'static>(backend: S) {
    let backend = Arc::new(backend);
    let (old, new, stranger) = (
        Key::generate().unwrap(),
        Key::generate().unwrap(),
        Key::generate().unwrap(),
    );
    let with_old = Encrypted::new(Arc::clone(&backend), ring(&[&old]));
    let rotated = Encrypted::new(Arc::clone(&backend), ring(&[&new, &old]));
    let with_new = Encrypted::new(Arc::clone(&backend), ring(&[&new]));

    let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
    for (n, id) in ids.iter().enumerate() {
        with_old.set(id, &secret_data(n)).await.unwrap();
    }
    // After rotation every session is readable.
    for (n, id) in ids.iter().enumerate() {
        let session = rotated
            .get(id)
            .await
            .unwrap()
            .expect("readable after rotation");
        assert_eq!(session.data(), secret_data(n).data());
    }
    // Not yet re-sealed: the new key alone cannot open them.
    assert_eq!(
        seal_error(&with_new.get(&ids[0]).await.unwrap_err()),
        SealError::UnknownKey
    );
    // A write re-seals with the current key.
    let current = rotated.get(&ids[0]).await.unwrap().unwrap();
    rotated
        .set_if_version(&ids[0], &current, current.version())
        .await
        .unwrap();
    assert_eq!(
        with_new.get(&ids[0]).await.unwrap().unwrap().data(),
        secret_data(0).data()
    );
    // So does `reseal`, once; a current session is left alone.
    assert!(rotated.reseal(&ids[1]).await.unwrap());
    assert!(!rotated.reseal(&ids[1]).await.unwrap());
    assert!(!rotated.reseal(&ids[0]).await.unwrap());
    assert!(!rotated.reseal(&SessionId::generate()).await.unwrap());
    assert_eq!(
        with_new.get(&ids[1]).await.unwrap().unwrap().data(),
        secret_data(1).data()
    );
    // `touch` keeps the seal readable.
    let later = std::time::SystemTime::now() + Duration::from_secs(1200);
    assert!(rotated.touch(&ids[1], later).await.unwrap());
    assert_eq!(
        with_new.get(&ids[1]).await.unwrap().unwrap().data(),
        secret_data(1).data()
    );

    // A wrong key.
    let wrong = Encrypted::new(Arc::clone(&backend), ring(&[&stranger]));
    assert_eq!(
        seal_error(&wrong.get(&ids[1]).await.unwrap_err()),
        SealError::UnknownKey
    );

    // A tampered ciphertext: one character changed in the middle of the sealed text.
    let raw = backend.get(&ids[2]).await.unwrap().unwrap();
    let mut text = raw.data()[SEALED_FIELD].as_str().unwrap().to_owned();
    let middle = text.len() / 2;
    let replacement = if &text[middle..=middle] == "A" {
        "B"
    } else {
        "A"
    };
    text.replace_range(middle..=middle, replacement);
    let mut tampered = raw.clone();
    tampered.data_mut().insert(SEALED_FIELD.into(), text.into());
    backend.set(&ids[2], &tampered).await.unwrap();
    let err = rotated.get(&ids[2]).await.unwrap_err();
    assert_eq!(seal_error(&err), SealError::Forged);
    assert_eq!(err.session(), Some(&ids[2].hint()));

    // A ciphertext swapped to another session's id.
    let raw = backend.get(&ids[3]).await.unwrap().unwrap();
    let victim = SessionId::generate();
    backend.set(&victim, &raw).await.unwrap();
    assert_eq!(
        seal_error(&rotated.get(&victim).await.unwrap_err()),
        SealError::Forged
    );
    // The session it was copied from is untouched, and a later set replaces the bad one.
    assert_eq!(
        rotated.get(&ids[3]).await.unwrap().unwrap().data(),
        secret_data(3).data()
    );
    rotated.set(&victim, &secret_data(9)).await.unwrap();
    assert_eq!(
        rotated.get(&victim).await.unwrap().unwrap().data(),
        secret_data(9).data()
    );

    // Data written without the wrapper is not a sealed session.
    let plain = SessionId::generate();
    backend.set(&plain, &secret_data(5)).await.unwrap();
    assert_eq!(
        seal_error(&rotated.get(&plain).await.unwrap_err()),
        SealError::NotSealed
    );
}

#[cfg(feature = "memory")]
mod memory {
    use super::*;
    use session_stores::MemoryStore;

    #[tokio::test]
    async fn rotation_and_tampering() {
        super::rotation_and_tampering(MemoryStore::new(1000)).await;
    }

    #[tokio::test]
    async fn owner_expiry_and_context_are_bound() {
        super::bindings(Arc::new(MemoryStore::new(1000))).await;
    }

    /// The memory store has no dump; its raw sessions, read back through the inner store
    /// under every id it could be asked for, still show no plaintext.
    #[tokio::test]
    async fn nothing_usable_at_rest() {
        let backend = Arc::new(MemoryStore::new(1000));
        let seen = Arc::new(std::sync::Mutex::new(Vec::<SessionId>::new()));
        let recorder = Recorder {
            inner: Arc::clone(&backend),
            seen: Arc::clone(&seen),
        };
        super::nothing_usable_at_rest(recorder, || {
            let (backend, seen) = (Arc::clone(&backend), Arc::clone(&seen));
            async move {
                let ids = seen.lock().unwrap().clone();
                let mut dump = String::new();
                for id in ids {
                    if let Some(raw) = backend.get(&id).await.unwrap() {
                        dump.push_str(&format!(
                            "{id} {} {:?}\n",
                            serde_json::to_string(raw.data()).unwrap(),
                            raw.owner()
                        ));
                    }
                }
                dump
            }
        })
        .await;
    }

    /// Records every id the backend is asked to write: the memory store's "dump" is what it
    /// holds under those ids.
    struct Recorder {
        inner: Arc<MemoryStore>,
        seen: Arc<std::sync::Mutex<Vec<SessionId>>>,
    }

    #[session_stores::async_trait]
    impl SessionStore for Recorder {
        async fn get(&self, id: &SessionId) -> session_stores::Result<Option<Session>> {
            self.inner.get(id).await
        }
        async fn set(&self, id: &SessionId, s: &Session) -> session_stores::Result<u64> {
            self.seen.lock().unwrap().push(id.clone());
            self.inner.set(id, s).await
        }
        async fn destroy(&self, id: &SessionId) -> session_stores::Result<()> {
            self.inner.destroy(id).await
        }
        async fn touch(
            &self,
            id: &SessionId,
            at: std::time::SystemTime,
        ) -> session_stores::Result<bool> {
            self.inner.touch(id, at).await
        }
        async fn create(&self, id: &SessionId, s: &Session) -> session_stores::Result<bool> {
            self.seen.lock().unwrap().push(id.clone());
            self.inner.create(id, s).await
        }
        async fn set_if_version(
            &self,
            id: &SessionId,
            s: &Session,
            v: u64,
        ) -> session_stores::Result<u64> {
            self.seen.lock().unwrap().push(id.clone());
            self.inner.set_if_version(id, s, v).await
        }
        async fn len(&self) -> session_stores::Result<u64> {
            self.inner.len().await
        }
        async fn clear(&self) -> session_stores::Result<()> {
            self.inner.clear().await
        }
        async fn delete_expired(&self) -> session_stores::Result<u64> {
            self.inner.delete_expired().await
        }
        async fn sessions_of(
            &self,
            owner: &Owner,
            with_data: bool,
        ) -> session_stores::Result<Vec<session_stores::OwnedSession>> {
            self.inner.sessions_of(owner, with_data).await
        }
        async fn destroy_owner(
            &self,
            owner: &Owner,
            except: Option<&SessionId>,
        ) -> session_stores::Result<u64> {
            self.inner.destroy_owner(owner, except).await
        }
        async fn scan(
            &self,
            cursor: Option<&session_stores::ScanCursor>,
            limit: usize,
        ) -> session_stores::Result<session_stores::ScanPage> {
            self.inner.scan(cursor, limit).await
        }
        async fn rotate(
            &self,
            old: &session_stores::SessionId,
            new: &session_stores::SessionId,
            grace: std::time::Duration,
        ) -> session_stores::Result<session_stores::Rotation> {
            self.inner.rotate(old, new, grace).await
        }
        fn capabilities(&self) -> session_stores::Capabilities {
            self.inner.capabilities()
        }
    }
}

#[cfg(feature = "file")]
mod file {
    use session_stores::FileStore;

    async fn store(dir: &std::path::Path) -> FileStore {
        FileStore::builder(dir.join("sessions"))
            .open()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn rotation_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        super::rotation_and_tampering(store(dir.path()).await).await;
    }

    #[tokio::test]
    async fn owner_expiry_and_context_are_bound() {
        let dir = tempfile::tempdir().unwrap();
        super::bindings(std::sync::Arc::new(store(dir.path()).await)).await;
    }

    /// Every file name and every byte of every file in the sessions directory.
    #[tokio::test]
    async fn nothing_usable_at_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sessions");
        super::nothing_usable_at_rest(store(dir.path()).await, || {
            let root = root.clone();
            async move {
                let mut dump = String::new();
                let mut pending = vec![root];
                while let Some(path) = pending.pop() {
                    dump.push_str(&format!("{}\n", path.display()));
                    if path.is_dir() {
                        for entry in std::fs::read_dir(&path).unwrap() {
                            pending.push(entry.unwrap().path());
                        }
                    } else {
                        dump.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
                        dump.push('\n');
                    }
                }
                dump
            }
        })
        .await;
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use session_stores::SqliteStore;

    #[tokio::test]
    async fn rotation_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).await.unwrap();
        super::rotation_and_tampering(store).await;
    }

    #[tokio::test]
    async fn owner_expiry_and_context_are_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).await.unwrap();
        super::bindings(std::sync::Arc::new(store)).await;
    }

    /// Every row of every table of the database file, read with rusqlite; plus the raw bytes
    /// of the database and WAL files.
    #[tokio::test]
    async fn nothing_usable_at_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).await.unwrap();
        super::nothing_usable_at_rest(store, || {
            let (path, dir) = (path.clone(), dir.path().to_owned());
            async move {
                let conn = rusqlite::Connection::open(&path).unwrap();
                let mut dump = String::new();
                let tables: Vec<String> = conn
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .unwrap()
                    .query_map([], |row| row.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                for table in tables {
                    let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
                    let columns = stmt.column_count();
                    let mut rows = stmt.query([]).unwrap();
                    while let Some(row) = rows.next().unwrap() {
                        for c in 0..columns {
                            let value: rusqlite::types::Value = row.get(c).unwrap();
                            dump.push_str(&format!("{value:?} "));
                        }
                        dump.push('\n');
                    }
                }
                for entry in std::fs::read_dir(dir).unwrap() {
                    let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                    // Raw pages: check the plaintext is not there either.
                    let raw = String::from_utf8_lossy(&bytes);
                    assert!(
                        !raw.contains("plaintext-marker"),
                        "a raw database file holds plaintext"
                    );
                }
                dump
            }
        })
        .await;
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use session_stores::PostgresStore;

    async fn store(url: &str, table: &str) -> PostgresStore {
        let store = PostgresStore::builder()
            .table(table)
            .connect(url)
            .await
            .expect("connect");
        store.migrate().await.unwrap();
        store
    }

    fn url() -> Option<String> {
        crate::support::service_url(
            "SESSION_STORES_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
            5432,
        )
    }

    async fn drop_table(url: &str, table: &str) {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS \"{table}\""
        )))
        .execute(&pool)
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_and_tampering() {
        let Some(url) = url() else { return };
        let table = crate::support::unique_name("sst_sec_");
        super::rotation_and_tampering(store(&url, &table).await).await;
        drop_table(&url, &table).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn owner_expiry_and_context_are_bound() {
        let Some(url) = url() else { return };
        let table = crate::support::unique_name("sst_sec_");
        super::bindings(std::sync::Arc::new(store(&url, &table).await)).await;
        drop_table(&url, &table).await;
    }

    /// Every row of the table, as Postgres prints it (`t::text`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_usable_at_rest() {
        let Some(url) = url() else { return };
        let table = crate::support::unique_name("sst_sec_");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        super::nothing_usable_at_rest(store(&url, &table).await, || {
            let (pool, table) = (pool.clone(), table.clone());
            async move {
                let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT t::text FROM \"{table}\" t"
                )))
                .fetch_all(&pool)
                .await
                .unwrap();
                rows.into_iter().map(|(row,)| row + "\n").collect()
            }
        })
        .await;
        drop_table(&url, &table).await;
    }
}

#[cfg(feature = "redis")]
mod redis_store {
    use session_stores::RedisStore;

    fn url() -> Option<String> {
        crate::support::service_url("SESSION_STORES_REDIS_URL", "redis://127.0.0.1:6379", 6379)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_and_tampering() {
        let Some(url) = url() else { return };
        let prefix = crate::support::unique_name("sst:sec:");
        let store = RedisStore::builder(&url)
            .key_prefix(&prefix)
            .build()
            .unwrap();
        super::rotation_and_tampering(store).await;
        let _ = session_stores::SessionStore::clear(
            &RedisStore::builder(&url)
                .key_prefix(prefix)
                .build()
                .unwrap(),
        )
        .await;
    }

    /// Every key under the store's prefix and its value.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_usable_at_rest() {
        let Some(url) = url() else { return };
        let prefix = crate::support::unique_name("sst:sec:");
        let store = RedisStore::builder(&url)
            .key_prefix(&prefix)
            .build()
            .unwrap();
        let client = redis::Client::open(url.as_str()).unwrap();
        super::nothing_usable_at_rest(store, || {
            let (client, prefix) = (client.clone(), prefix.clone());
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let mut dump = String::new();
                for key in keys {
                    let kind: String = redis::cmd("TYPE")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    let read = match kind.as_str() {
                        "string" => "GET",
                        "zset" => "ZRANGE",
                        "set" => "SMEMBERS",
                        "hash" => "HGETALL",
                        other => panic!("a {other} under the prefix: dump it too"),
                    };
                    let mut cmd = redis::cmd(read);
                    cmd.arg(&key);
                    if read == "ZRANGE" {
                        cmd.arg(0).arg(-1).arg("WITHSCORES");
                    }
                    let values: Vec<Vec<u8>> = if read == "GET" {
                        vec![cmd.query_async(&mut conn).await.unwrap()]
                    } else {
                        cmd.query_async(&mut conn).await.unwrap()
                    };
                    dump.push_str(&key);
                    for value in values {
                        dump.push(' ');
                        dump.push_str(&String::from_utf8_lossy(&value));
                    }
                    dump.push('\n');
                }
                dump
            }
        })
        .await;
        let _ = session_stores::SessionStore::clear(
            &RedisStore::builder(&url)
                .key_prefix(prefix)
                .build()
                .unwrap(),
        )
        .await;
    }
}

/// `connect` wraps the store when the URL names key variables, and the files it writes show
/// neither the id nor the data.
///
/// It sets environment variables, which no other thread may read or write meanwhile, and the
/// other tests of this binary run on threads of this process: so it runs in a process of its
/// own ([`support::in_own_process`]).
#[cfg(feature = "file")]
#[test]
fn connect_turns_on_both_wrappers_from_key_variables() {
    support::in_own_process(
        "security::connect_turns_on_both_wrappers_from_key_variables",
        || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(key_variables_in_this_process());
        },
    );
}

#[cfg(feature = "file")]
async fn key_variables_in_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let (id_var, ring_var) = (
        support::unique_name("SST_ID_KEY_").to_uppercase(),
        support::unique_name("SST_RING_").to_uppercase(),
    );
    let (id_key, current, old) = (
        Key::generate().unwrap(),
        Key::generate().unwrap(),
        Key::generate().unwrap(),
    );
    // SAFETY: this process runs this one test (see above), so no other thread reads or
    // writes the environment meanwhile; here and below.
    unsafe {
        std::env::set_var(&id_var, id_key.to_hex());
        std::env::set_var(&ring_var, format!("{},{}", current.to_hex(), old.to_hex()));
    }
    let url = format!(
        "file://{}?hash_ids_key_env={id_var}&encryption_keys_env={ring_var}",
        dir.path().display()
    );
    let store = session_stores::connect(&url).await.unwrap();
    let id = SessionId::generate();
    store.set(&id, &secret_data(1)).await.unwrap();
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().data(),
        secret_data(1).data()
    );

    let expected = HashedIds::new((), &id_key).stored_id(&id);
    let file = dir.path().join(format!("{}.json", expected.as_str()));
    let content = std::fs::read_to_string(&file).expect("the session under its hashed id");
    assert!(content.contains(SEALED_FIELD), "{content}");
    assert!(!content.contains("plaintext-marker"), "{content}");
    assert!(!dir.path().join(format!("{}.json", id.as_str())).exists());

    // The same directory opened with only the old key cannot read the session.
    unsafe { std::env::set_var(&ring_var, old.to_hex()) };
    let old_only = session_stores::connect(&url).await.unwrap();
    assert_eq!(
        seal_error(&old_only.get(&id).await.unwrap_err()),
        SealError::UnknownKey
    );
    // A hash key variable with two keys is refused.
    unsafe { std::env::set_var(&id_var, format!("{},{}", id_key.to_hex(), old.to_hex())) };
    let err = session_stores::connect(&url)
        .await
        .err()
        .expect("a config error");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains(&id_var), "{err}");
    assert!(!err.to_string().contains(&id_key.to_hex()), "{err}");
}
