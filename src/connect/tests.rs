use super::*;
use crate::error::ErrorKind;
use crate::url::StoreUrl;

fn config_message(result: Result<Box<dyn SessionStore>>) -> String {
    match result {
        Err(Error::Config { message, .. }) => message,
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(_) => panic!("expected a config error, got a store"),
    }
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn wrapper_options_need_a_set_variable_and_their_feature() {
    for option in [HASH_IDS_OPTION, ENCRYPTION_OPTION] {
        let url = format!("memory://?capacity=10&{option}=SESSION_STORES_TEST_UNSET_VAR");
        let message = config_message(connect(&url).await);
        let feature_on = (option == HASH_IDS_OPTION && cfg!(feature = "hashed-ids"))
            || (option == ENCRYPTION_OPTION && cfg!(feature = "encryption"));
        if feature_on {
            assert!(
                message.contains("SESSION_STORES_TEST_UNSET_VAR"),
                "{message}"
            );
            assert!(message.contains("not set"), "{message}");
        } else {
            assert!(message.contains("feature"), "{message}");
        }
        let message = config_message(connect(&format!("memory://?{option}=")).await);
        assert!(
            message.contains("name of an environment variable"),
            "{message}"
        );
    }
    // Without wrapper options the URL reaches the store unchanged.
    let url = StoreUrl::parse("redis://h:1/0?db=2&key_prefix=a#insecure").unwrap();
    let (rest, layers) = Layers::take(&url).unwrap();
    assert!(layers.is_empty());
    assert_eq!(rest.to_url(), "redis://h:1/0?db=2&key_prefix=a#insecure");
}

#[test]
fn kinds_by_scheme() {
    let cases = [
        ("memory://", StoreKind::Memory),
        ("MEMORY://?capacity=3", StoreKind::Memory),
        ("file:///tmp/x", StoreKind::File),
        ("sqlite://a.db", StoreKind::Sqlite),
        ("sqlite::memory:", StoreKind::Sqlite),
        ("postgres://u@h/db", StoreKind::Postgres),
        ("postgresql://u@h/db", StoreKind::Postgres),
        ("redis://h:6379", StoreKind::Redis),
        ("rediss://h:6379", StoreKind::Redis),
        ("redis+unix:///run/redis.sock", StoreKind::Redis),
        ("redis+cluster://a:1,b:2", StoreKind::RedisCluster),
        ("rediss+cluster://a:1", StoreKind::RedisCluster),
    ];
    for (url, kind) in cases {
        assert_eq!(StoreKind::of(url).unwrap(), kind, "{url}");
    }
    assert_eq!(StoreKind::RedisCluster.feature(), "redis");
    assert_eq!(StoreKind::Sqlite.to_string(), "SQLite");
}

#[tokio::test]
async fn unknown_and_malformed_urls_are_config_errors() {
    let message = config_message(connect("mongodb://localhost/db").await);
    assert!(
        message.contains("unknown session store URL scheme `mongodb`"),
        "{message}"
    );
    for bad in ["", "no scheme here", "://x", "a b://c"] {
        let err = connect(bad).await.err().expect(bad);
        assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
    }
}

#[test]
fn redact_hides_passwords_only() {
    assert_eq!(
        redact("postgres://app:s3cret@db:5432/app?sslmode=require"),
        "postgres://app:***@db:5432/app?sslmode=require"
    );
    assert_eq!(redact("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
    assert_eq!(
        redact("postgres://app:a/b?c@db/app"),
        "postgres://app:***@db/app"
    );
    assert_eq!(
        redact("postgres://db/app?user=app&password=s3cret&sslmode=require"),
        "postgres://db/app?user=app&password=***&sslmode=require"
    );
    assert_eq!(redact("redis://user@h"), "redis://user@h");
    assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
    assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
    assert_eq!(
        redact("redis+cluster://u:p@a:1,b:2"),
        "redis+cluster://u:***@a:1,b:2"
    );
}

/// Every scheme whose feature is off names the feature to enable.
#[tokio::test]
async fn disabled_features_are_named() {
    let urls = [
        "memory://",
        "file:///tmp/x",
        "sqlite::memory:",
        "postgres://u:pw@127.0.0.1:1/db",
        "redis://127.0.0.1:1",
        "redis+cluster://127.0.0.1:1",
    ];
    for url in urls {
        let kind = StoreKind::of(url).unwrap();
        if kind.is_enabled() {
            continue;
        }
        let message = config_message(connect(url).await);
        assert!(
            message.contains(&format!("the `{}` feature", kind.feature())),
            "{message}"
        );
        assert!(
            !message.contains("pw@"),
            "the password is redacted: {message}"
        );
    }
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn memory_urls() {
    let store = connect("memory://?capacity=2").await.unwrap();
    let session = crate::Session::new(std::time::Duration::from_secs(60));
    for _ in 0..3 {
        store
            .set(&crate::SessionId::generate(), &session)
            .await
            .unwrap();
    }
    assert_eq!(store.len().await.unwrap(), 2, "capacity 2 is applied");
    connect("memory://").await.unwrap();
    connect("memory:").await.unwrap();
    for bad in [
        "memory://?capacity=0",
        "memory://?capacity=lots",
        "memory://?size=3",
        "memory://host",
    ] {
        config_message(connect(bad).await);
    }
}

#[cfg(feature = "file")]
#[tokio::test]
async fn file_urls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("with space");
    let url = format!("file://{}", path.display()).replace(' ', "%20");
    let store = connect(&url).await.unwrap();
    let id = crate::SessionId::generate();
    store
        .set(
            &id,
            &crate::Session::new(std::time::Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(store.get(&id).await.unwrap().is_some());
    assert!(path.is_dir(), "the %20 in the URL is a space in the path");
    config_message(connect("file://").await);
    config_message(connect(&format!("{url}?durable=no")).await);
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_urls() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.db");
    for url in [
        format!("sqlite://{}", file.display()),
        format!("sqlite:{}?table=other_sessions", file.display()),
        "sqlite::memory:".to_string(),
        "sqlite://:memory:".to_string(),
    ] {
        let store = connect(&url).await.unwrap();
        let id = crate::SessionId::generate();
        store
            .set(
                &id,
                &crate::Session::new(std::time::Duration::from_secs(60)),
            )
            .await
            .unwrap();
        assert_eq!(store.len().await.unwrap(), 1, "{url}");
    }
    assert!(file.exists());
    // Two tables in the one file: each store counted only its own session.
    let store = connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    assert_eq!(store.len().await.unwrap(), 1);
    config_message(connect("sqlite://").await);
    config_message(connect("sqlite://x.db?wal=off").await);
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_urls_take_table_and_schema_main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let url = format!("sqlite://{}?table=t_url&schema=main", path.display());
    let store = connect(&url).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 0);
    let other = format!("sqlite://{}?schema=aux", path.display());
    assert!(config_message(connect(&other).await).contains("schema `aux`"));
    let typo = format!("sqlite://{}?tabel=x", path.display());
    assert!(config_message(connect(&typo).await).contains("`tabel`"));
}

/// A key pasted where the name of its variable belongs is refused, and never shown.
#[cfg(feature = "memory")]
#[tokio::test]
async fn a_key_given_for_a_variable_name_is_never_shown() {
    for key in [
        "ab".repeat(32),
        "0123456789abcdef".repeat(4),
        "k-e-y".into(),
    ] {
        for option in [HASH_IDS_OPTION, ENCRYPTION_OPTION] {
            let url = format!("memory://?{option}={key}");
            let message = config_message(connect(&url).await);
            assert!(!message.contains(&key), "{message}");
            assert!(message.contains(option), "{message}");
        }
    }
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_options_are_taken_and_the_drivers_kept() {
    let url = StoreUrl::parse(
        "postgres://u:p@h/db?sslmode=require&table=t&schema=s%5Fx&options=-c%20a%3Db&migrate=no",
    )
    .unwrap();
    let parsed = crate::stores::postgres::url::parse(&url).unwrap();
    assert_eq!(
        parsed.driver_url,
        "postgres://u:p@h/db?sslmode=require&options=-c%20a%3Db"
    );
    assert!(!parsed.migrate);
    let url = StoreUrl::parse("postgres://u:pw@h/db?tabel=x").unwrap();
    let err = crate::stores::postgres::url::parse(&url).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("`tabel`"), "{err}");
    assert!(err.to_string().contains("table"), "{err}");
    // A `?` in the password stays in the password: never an unknown option.
    let url = StoreUrl::parse("postgres://u:pa?ss=1@h/db").unwrap();
    let parsed = crate::stores::postgres::url::parse(&url).unwrap();
    assert_eq!(parsed.driver_url, "postgres://u:pa%3Fss=1@h/db");
}

#[cfg(feature = "redis")]
#[test]
fn redis_options_are_taken_and_the_drivers_kept() {
    let url = StoreUrl::parse("redis://h?prefix=x").unwrap();
    let err = crate::stores::redis::url::builder_of(&url).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("`prefix`"), "{err}");
    assert!(err.to_string().contains("key_prefix"), "{err}");
    let url = StoreUrl::parse("rediss://h:1/2?key_prefix=app%3A&db=3#insecure").unwrap();
    assert!(crate::stores::redis::url::builder_of(&url).is_ok());
}
