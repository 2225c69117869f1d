use std::str::FromStr;
use std::time::SystemTime;

use serde_json::json;
use time::macros::datetime;
use tower_sessions_core::session_store::{ExpiredDeletion, SessionStore as TowerStore};

use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store;

use super::v015::session_id_of;
use super::*;
use crate::error::Result;
use crate::stores::memory::MemoryStore;

fn record(ttl_secs: i64) -> Record {
    let mut data = std::collections::HashMap::new();
    data.insert(
        "user".to_string(),
        json!({"name": "ada", "roles": ["admin"]}),
    );
    data.insert("n".to_string(), json!(1.5));
    data.insert("nothing".to_string(), json!(null));
    Record {
        id: Id::default(),
        data,
        expiry_date: OffsetDateTime::now_utc() + time::Duration::seconds(ttl_secs),
    }
}

#[test]
fn ids_map_to_their_display_text_and_back() {
    for raw in [0i128, -1, i128::MIN, i128::MAX, 42] {
        let id = Id(raw);
        let sid = session_id_of(&id).unwrap();
        assert_eq!(sid.as_str(), id.to_string());
        assert_eq!(sid.as_str().len(), 22);
        assert_eq!(Id::from_str(sid.as_str()).unwrap(), id);
    }
}

#[test]
fn expiry_maps_to_the_millisecond_truncating_toward_the_past() {
    let t = datetime!(2030-01-02 03:04:05.678_999 UTC);
    let ms = millis_of(t);
    assert_eq!(ms, 1_893_553_445_678);
    assert_eq!(
        offset_date_time_of(ms),
        datetime!(2030-01-02 03:04:05.678 UTC)
    );
    let before = datetime!(1969-12-31 23:59:59.9985 UTC);
    assert_eq!(millis_of(before), -2);
    assert_eq!(
        offset_date_time_of(i64::MAX),
        PrimitiveDateTime::MAX.assume_utc()
    );
    assert_eq!(
        offset_date_time_of(i64::MIN),
        PrimitiveDateTime::MIN.assume_utc()
    );
    // The same millisecond as this crate's own SystemTime conversion.
    let now = SystemTime::now();
    assert_eq!(millis_of(OffsetDateTime::from(now)), crate::to_millis(now));
}

#[tokio::test]
async fn round_trip_is_lossless_and_load_never_returns_expired() -> Result<()> {
    let store = TowerSessionsStore::new(MemoryStore::new(100));
    let mut rec = record(60);
    store.create(&mut rec).await.unwrap();
    let mut loaded = store.load(&rec.id).await.unwrap().unwrap();
    let stamp = loaded
        .data
        .remove(LOADED_KEY)
        .expect("load stamps the record");
    assert_eq!(loaded.data, rec.data);
    assert_eq!(loaded.id, rec.id);
    assert_eq!(millis_of(loaded.expiry_date), millis_of(rec.expiry_date));
    let sid = session_id_of(&rec.id)?;
    let created = store.inner().get(&sid).await?.unwrap().version();

    assert_eq!(Loaded::from_value(&stamp).unwrap().version, created);
    let stored = store.inner().get(&sid).await?.unwrap();
    assert!(
        stored.get_value(LOADED_KEY).is_none(),
        "the stamp is never stored"
    );

    // save is a compare-and-set: a new version (one more), the new data.
    rec.data.insert("n".into(), json!(2));
    rec.data.insert(LOADED_KEY.into(), stamp);
    store.save(&rec).await.unwrap();
    let stored = store.inner().get(&sid).await?.unwrap();
    assert_eq!(stored.version(), created + 1);
    assert_eq!(stored.get_value("n"), Some(&json!(2)));
    assert!(
        stored.get_value(LOADED_KEY).is_none(),
        "the stamp is never stored"
    );

    // An expired record is deleted by save and never loaded.
    let mut expired = store.load(&rec.id).await.unwrap().unwrap();
    expired.expiry_date = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    store.save(&expired).await.unwrap();
    assert!(store.load(&rec.id).await.unwrap().is_none());

    store.delete(&rec.id).await.unwrap();
    store.delete(&rec.id).await.unwrap();
    Ok(())
}

#[tokio::test]
async fn create_never_takes_over_an_existing_session() -> Result<()> {
    let store = TowerSessionsStore::new(MemoryStore::new(100));
    let mut first = record(60);
    store.create(&mut first).await.unwrap();
    let mut second = record(60);
    second.id = first.id;
    second.data.insert("user".into(), json!("mallory"));
    store.create(&mut second).await.unwrap();
    assert_ne!(second.id, first.id, "a colliding create gets a fresh id");
    let mut kept = store.load(&first.id).await.unwrap().unwrap();
    kept.data.remove(LOADED_KEY);
    assert_eq!(kept.data, first.data, "the existing session is untouched");
    let other = store.load(&second.id).await.unwrap().unwrap();
    assert_eq!(other.data.get("user"), Some(&json!("mallory")));
    Ok(())
}

#[tokio::test]
async fn concurrent_saves_merge_or_fail_as_configured() -> Result<()> {
    for policy in [OnConflict::SaverWins, OnConflict::Fail] {
        let store = TowerSessionsStore::new(MemoryStore::new(100)).with_on_conflict(policy);
        let mut rec = record(60);
        store.create(&mut rec).await.unwrap();
        let mut one = store.load(&rec.id).await.unwrap().unwrap();
        let mut other = store.load(&rec.id).await.unwrap().unwrap();
        one.data.insert("n".into(), json!("one"));
        one.data.insert("cart".into(), json!(1));
        other.data.insert("n".into(), json!("other"));
        other.data.remove("nothing");
        store.save(&one).await.unwrap();
        let second = store.save(&other).await;
        let stored = store.inner().get(&session_id_of(&rec.id)?).await?.unwrap();
        match policy {
            OnConflict::SaverWins => {
                second.unwrap();
                assert_eq!(stored.get_value("n"), Some(&json!("other")));
                assert_eq!(stored.get_value("cart"), Some(&json!(1)), "one's key kept");
                assert!(
                    stored.get_value("nothing").is_none(),
                    "other's removal kept"
                );
            }
            _ => {
                assert!(
                    matches!(second, Err(session_store::Error::Backend(ref text)) if text.contains("conflict")),
                    "{second:?}"
                );
                assert_eq!(
                    stored.get_value("n"),
                    Some(&json!("one")),
                    "nothing written"
                );
                assert!(stored.get_value("nothing").is_some());
            }
        }
    }
    Ok(())
}

/// A store whose `create` always collides, and whose other calls fail with typed errors.
struct Stubborn;

#[async_trait]
impl SessionStore for Stubborn {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        Err(Error::decode(id, "not json"))
    }
    async fn set(&self, id: &SessionId, _: &Session) -> Result<u64> {
        Err(Error::unavailable(
            "set",
            Some(id),
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        ))
    }
    async fn destroy(&self, _: &SessionId) -> Result<()> {
        Ok(())
    }
    async fn touch(&self, _: &SessionId, _: SystemTime) -> Result<bool> {
        Ok(false)
    }
    async fn create(&self, _: &SessionId, _: &Session) -> Result<bool> {
        Ok(false)
    }
    async fn set_if_version(&self, id: &SessionId, _: &Session, e: u64) -> Result<u64> {
        Err(Error::conflict(id, e))
    }
    async fn len(&self) -> Result<u64> {
        Ok(0)
    }
    async fn clear(&self) -> Result<()> {
        Ok(())
    }
    async fn delete_expired(&self) -> Result<u64> {
        Err(Error::encode(&SessionId::new("x")?, "nope"))
    }
}

#[tokio::test]
async fn errors_map_by_kind_with_their_chain_and_without_the_id() {
    let store = TowerSessionsStore::new(Stubborn);
    let mut rec = record(60);
    assert!(matches!(
        store.create(&mut rec).await,
        Err(session_store::Error::Backend(_))
    ));
    let id = rec.id;
    // A session the store cannot decode is no session: a fresh one starts.
    assert!(matches!(store.load(&id).await, Ok(None)));
    // A save reads what is stored when it carries nothing it loaded: the decode error,
    // with its cause and without the id.
    match store.save(&rec).await {
        Err(session_store::Error::Decode(text)) => {
            assert!(text.contains("not json"), "{text}");
            assert!(!text.contains(&id.to_string()), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn expired_deletion_calls_delete_expired() {
    // Stubborn's delete_expired fails with an encode error: proof that the call went
    // through to the store (the success path is covered by the cleanup tests).
    let store = TowerSessionsStore::from_arc(Arc::new(Stubborn));
    match store.delete_expired().await {
        Err(session_store::Error::Encode(text)) => assert!(text.contains("nope"), "{text}"),
        other => panic!("{other:?}"),
    }
    let ok = TowerSessionsStore::new(MemoryStore::new(10));
    ok.delete_expired().await.unwrap();
}
