use super::*;
use crate::MemoryStore;

fn pool() -> AxumSessionPool<MemoryStore> {
    AxumSessionPool::new(MemoryStore::default()).with_owner_key("user")
}

fn later() -> i64 {
    crate::now_millis() / 1000 + 3600
}

#[test]
fn session_text_round_trips() {
    for text in [
        r#"{"data":{"a":"1","b":"\"x\""},"longterm":false}"#,
        r#"{"data":{},"longterm":true}"#,
        "c2VhbGVkIGJ5IGF4dW1fc2Vzc2lvbg",
        r#"{"data":{"a":1},"longterm":false}"#,
    ] {
        let data = data_of_text(text);
        let back: Value = serde_json::from_str(&text_of(&data)).unwrap_or(Value::Null);
        match serde_json::from_str::<Value>(text) {
            Ok(value) if !data.contains_key(SEALED_KEY) => assert_eq!(back, value),
            _ => assert_eq!(text_of(&data), text),
        }
    }
    assert_eq!(
        data_of_text(r#"{"data":{},"longterm":true}"#).get(LONGTERM_KEY),
        Some(&Value::Bool(true))
    );
}

#[tokio::test]
async fn a_merge_is_not_overwritten_by_the_next_save() {
    let pool = pool();
    let t = "sessions";
    assert!(!pool.exists("abc", t).await.unwrap());
    pool.store(
        "abc",
        r#"{"data":{"count":"1"},"longterm":false}"#,
        later(),
        t,
    )
    .await
    .unwrap();
    // Another process adds a key.
    let id = SessionId::new("abc").unwrap();
    let mut other = pool.inner().get(&id).await.unwrap().unwrap();
    let version = other.version();
    other
        .data_mut()
        .insert("theme".into(), Value::String("\"dark\"".into()));
    pool.inner()
        .set_if_version(&id, &other, version)
        .await
        .unwrap();
    // This process saves twice from its own copy, which lacks `theme`.
    for count in ["2", "3"] {
        let text = format!(r#"{{"data":{{"count":"{count}"}},"longterm":false}}"#);
        pool.store("abc", &text, later(), t).await.unwrap();
        let stored = pool.inner().get(&id).await.unwrap().unwrap();
        assert_eq!(
            stored.get_value("theme"),
            Some(&Value::String("\"dark\"".into()))
        );
        assert_eq!(
            stored.get_value("count"),
            Some(&Value::String(count.into()))
        );
    }
}

#[tokio::test]
async fn a_save_never_brings_back_a_destroyed_session() {
    let pool = pool();
    let t = "sessions";
    assert!(!pool.exists("abc", t).await.unwrap());
    pool.store(
        "abc",
        r#"{"data":{"user":"\"ada\""},"longterm":false}"#,
        later(),
        t,
    )
    .await
    .unwrap();
    assert!(pool.load("abc", t).await.unwrap().is_some());
    let owner = Owner::new("ada").unwrap();
    assert_eq!(pool.inner().destroy_owner(&owner, None).await.unwrap(), 1);
    for _ in 0..2 {
        pool.store(
            "abc",
            r#"{"data":{"user":"\"ada\""},"longterm":false}"#,
            later(),
            t,
        )
        .await
        .unwrap();
        let id = SessionId::new("abc").unwrap();
        assert!(pool.inner().get(&id).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_forgotten_id_is_written_only_over_an_existing_session() {
    let pool = pool().with_remembered(1);
    let t = "sessions";
    assert!(!pool.exists("abc", t).await.unwrap());
    assert!(!pool.exists("def", t).await.unwrap()); // evicts "abc"
    pool.store("abc", r#"{"data":{},"longterm":false}"#, later(), t)
        .await
        .unwrap();
    assert!(pool.load("abc", t).await.unwrap().is_none());
}
