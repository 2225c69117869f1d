use std::time::SystemTime;

use actix_session::storage::SessionStore as ActixStore;
use async_trait::async_trait;

use super::*;
use crate::error::Result;
use crate::stores::memory::MemoryStore;

fn state() -> HashMap<String, String> {
    let mut state = HashMap::new();
    state.insert("user".to_string(), r#"{"name":"ada"}"#.to_string());
    state.insert("count".to_string(), "3".to_string());
    state.insert("odd".to_string(), "not json at all \u{1F600}".to_string());
    state
}

fn key(text: &str) -> SessionKey {
    SessionKey::try_from(text.to_string()).unwrap()
}

/// A loaded state without what the adapter adds to carry it to `update`.
fn unstamped(state: Option<HashMap<String, String>>) -> Option<HashMap<String, String>> {
    state.map(|mut state| {
        assert!(state.remove(LOADED_KEY).is_some(), "load stamps the state");
        state
    })
}

#[tokio::test]
async fn save_load_update_round_trip_losslessly() -> Result<()> {
    let store = ActixSessionStore::new(MemoryStore::new(100));
    let ttl = Duration::minutes(5);
    let before = now_millis();
    let k = store.save(state(), &ttl).await.unwrap();
    assert_eq!(k.as_ref().len(), 32);
    let id = SessionId::new(k.as_ref())?;
    let stored = store.inner().get(&id).await?.unwrap();
    let created = stored.version();
    assert!(stored.expires_at_millis() >= before + 300_000);
    assert!(stored.expires_at_millis() <= now_millis() + 300_000);
    assert_eq!(unstamped(store.load(&k).await.unwrap()), Some(state()));

    let mut changed = store.load(&k).await.unwrap().unwrap();
    changed.insert("count".into(), "4".into());
    let same = store.update(k, changed.clone(), &ttl).await.unwrap();
    assert_eq!(same.as_ref(), id.as_str(), "a live key is kept");
    changed.remove(LOADED_KEY);
    assert_eq!(unstamped(store.load(&same).await.unwrap()), Some(changed));
    let stored = store.inner().get(&id).await?.unwrap();
    assert!(
        stored.get_value(LOADED_KEY).is_none(),
        "the stamp is never stored"
    );
    assert_eq!(
        store.inner().get(&id).await?.unwrap().version(),
        created + 1
    );
    Ok(())
}

#[tokio::test]
async fn update_of_a_missing_or_expired_key_saves_under_a_new_key() -> Result<()> {
    let store = ActixSessionStore::new(MemoryStore::new(100));
    let ttl = Duration::minutes(5);
    // Missing.
    let unknown = SessionId::generate();
    let k = store
        .update(key(unknown.as_str()), state(), &ttl)
        .await
        .unwrap();
    assert_ne!(k.as_ref(), unknown.as_str());
    assert!(
        store.inner().get(&unknown).await?.is_none(),
        "not resurrected"
    );
    assert_eq!(unstamped(store.load(&k).await.unwrap()), Some(state()));
    // Expired.
    let old = SessionId::new(k.as_ref())?;
    store
        .inner()
        .touch(&old, SystemTime::now() - std::time::Duration::from_secs(1))
        .await?;
    let k2 = store.update(k, state(), &ttl).await.unwrap();
    assert_ne!(k2.as_ref(), old.as_str());
    assert!(store.inner().get(&old).await?.is_none());
    // A key that is not a valid SessionId (forged cookie).
    let k3 = store.update(key("a/../b"), state(), &ttl).await.unwrap();
    assert_eq!(unstamped(store.load(&k3).await.unwrap()), Some(state()));
    assert_eq!(store.inner().len().await?, 2);
    Ok(())
}

#[tokio::test]
async fn update_of_a_loaded_session_that_is_gone_starts_an_empty_one() -> Result<()> {
    let store = ActixSessionStore::new(MemoryStore::new(100)).with_owner_key("user");
    let ttl = Duration::minutes(5);
    let mut state = state();
    state.insert("user".into(), r#""ada""#.into());
    let k = store.save(state, &ttl).await.unwrap();
    let id = SessionId::new(k.as_ref())?;
    let mut loaded = store.load(&k).await.unwrap().unwrap();
    // Logged out everywhere while the request runs.
    let ada = Owner::new("ada")?;
    assert_eq!(store.inner().destroy_owner(&ada, None).await?, 1);
    loaded.insert("cart".into(), "1".into());
    let next = store.update(k, loaded, &ttl).await.unwrap();
    assert_ne!(next.as_ref(), id.as_str());
    assert!(store.inner().get(&id).await?.is_none(), "not brought back");
    assert!(store.inner().sessions_of(&ada, false).await?.is_empty());
    assert_eq!(
        unstamped(store.load(&next).await.unwrap()),
        Some(HashMap::new()),
        "a new, empty session"
    );
    Ok(())
}

#[tokio::test]
async fn update_ttl_moves_only_the_expiry_and_never_creates() -> Result<()> {
    let store = ActixSessionStore::new(MemoryStore::new(100));
    let k = store.save(state(), &Duration::seconds(10)).await.unwrap();
    let id = SessionId::new(k.as_ref())?;
    let before = store.inner().get(&id).await?.unwrap();
    store.update_ttl(&k, &Duration::hours(1)).await.unwrap();
    let after = store.inner().get(&id).await?.unwrap();
    assert!(after.expires_at_millis() >= before.expires_at_millis() + 3_000_000);
    assert_eq!(after.version(), before.version());
    assert_eq!(after.data(), before.data());

    let unknown = SessionId::generate();
    store
        .update_ttl(&key(unknown.as_str()), &Duration::hours(1))
        .await
        .unwrap();
    assert!(store.inner().get(&unknown).await?.is_none());
    store
        .update_ttl(&key("bad key!"), &Duration::hours(1))
        .await
        .unwrap();

    // A negative TTL expires the session at once.
    store.update_ttl(&k, &Duration::seconds(-1)).await.unwrap();
    assert_eq!(store.load(&k).await.unwrap(), None);
    Ok(())
}

#[tokio::test]
async fn load_and_delete_of_foreign_keys_and_foreign_data() -> Result<()> {
    let store = ActixSessionStore::new(MemoryStore::new(100));
    assert_eq!(store.load(&key("")).await.unwrap(), None);
    assert_eq!(store.load(&key("../etc/passwd")).await.unwrap(), None);
    store.delete(&key("*")).await.unwrap();

    let id = SessionId::generate();
    let mut foreign = Session::new(std::time::Duration::from_secs(60));
    foreign.insert("n", 1).unwrap();
    store.inner().set(&id, &foreign).await?;
    match store.load(&key(id.as_str())).await {
        Err(LoadError::Deserialization(err)) => {
            let ours = err.downcast_ref::<Error>().expect("our typed error");
            assert_eq!(ours.kind(), crate::ErrorKind::Decode);
            assert!(!err.to_string().contains(id.as_str()));
        }
        other => panic!("{other:?}"),
    }
    store.delete(&key(id.as_str())).await.unwrap();
    assert!(store.inner().get(&id).await?.is_none());
    Ok(())
}

/// A store whose `get` fails with a decode error (a corrupt row), and with `Unavailable`
/// for one id.
struct Corrupt(MemoryStore, SessionId);

#[async_trait]
impl SessionStore for Corrupt {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        if *id == self.1 {
            return Err(Error::unavailable("get", Some(id), "the server is down"));
        }
        Err(Error::decode(id, "corrupt row"))
    }
    async fn set(&self, id: &SessionId, s: &Session) -> Result<u64> {
        self.0.set(id, s).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.0.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, at: std::time::SystemTime) -> Result<bool> {
        self.0.touch(id, at).await
    }
    async fn create(&self, id: &SessionId, s: &Session) -> Result<bool> {
        self.0.create(id, s).await
    }
    async fn set_if_version(&self, id: &SessionId, s: &Session, e: u64) -> Result<u64> {
        self.0.set_if_version(id, s, e).await
    }
    async fn len(&self) -> Result<u64> {
        self.0.len().await
    }
    async fn clear(&self) -> Result<()> {
        self.0.clear().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.0.delete_expired().await
    }
}

#[tokio::test]
async fn a_session_the_store_cannot_decode_is_a_deserialization_error() {
    let down = SessionId::generate();
    let store = ActixSessionStore::new(Corrupt(MemoryStore::new(10), down.clone()));
    let id = SessionId::generate();
    match store.load(&key(id.as_str())).await {
        Err(LoadError::Deserialization(err)) => {
            let ours = err.downcast_ref::<Error>().expect("our typed error");
            assert_eq!(ours.kind(), crate::ErrorKind::Decode);
        }
        other => panic!("a decode error must be LoadError::Deserialization: {other:?}"),
    }
    match store.load(&key(down.as_str())).await {
        Err(LoadError::Other(err)) => {
            let ours = err.downcast_ref::<Error>().expect("our typed error");
            assert_eq!(ours.kind(), crate::ErrorKind::Unavailable);
        }
        other => panic!("an unavailable store must be LoadError::Other: {other:?}"),
    }
}

/// Fails every `set_if_version` with a conflict (as if other requests kept writing), and
/// every `create` with a collision.
struct Contended(MemoryStore);

#[async_trait]
impl SessionStore for Contended {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        self.0.get(id).await
    }
    async fn set(&self, id: &SessionId, s: &Session) -> Result<u64> {
        self.0.set(id, s).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.0.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, t: SystemTime) -> Result<bool> {
        self.0.touch(id, t).await
    }
    async fn create(&self, _: &SessionId, _: &Session) -> Result<bool> {
        Ok(false)
    }
    async fn set_if_version(&self, id: &SessionId, _: &Session, e: u64) -> Result<u64> {
        Err(Error::conflict(id, e))
    }
    async fn len(&self) -> Result<u64> {
        self.0.len().await
    }
    async fn clear(&self) -> Result<()> {
        self.0.clear().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.0.delete_expired().await
    }
}

#[tokio::test]
async fn endless_contention_is_a_typed_error_not_a_hang() -> Result<()> {
    let store = ActixSessionStore::new(Contended(MemoryStore::new(10)));
    let id = SessionId::generate();
    let mut original = Session::new(std::time::Duration::from_secs(60));
    original.insert("user", "ada").unwrap();
    store.inner().set(&id, &original).await?;
    match store
        .update(key(id.as_str()), state(), &Duration::minutes(1))
        .await
    {
        Err(UpdateError::Other(err)) => {
            assert!(err.downcast_ref::<Error>().unwrap().is_conflict())
        }
        other => panic!("{other:?}"),
    }
    let kept = store.inner().get(&id).await?.unwrap();
    assert_eq!(
        kept.data(),
        original.data(),
        "a failed update leaves it intact"
    );
    assert!(matches!(
        store.save(state(), &Duration::minutes(1)).await,
        Err(SaveError::Other(_))
    ));
    Ok(())
}
