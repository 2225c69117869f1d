use std::borrow::Cow;

use super::codec::respell_long_integers;
use super::statements::{MAX_IDENT_LEN, MAX_TABLE_LEN, check_ident};
use super::*;

#[test]
fn identifiers_are_validated() {
    for good in ["sessions", "_x", "Sessions_2", &"t".repeat(MAX_TABLE_LEN)] {
        assert!(check_ident("table", good, MAX_TABLE_LEN).is_ok(), "{good}");
    }
    for bad in [
        "",
        "1abc",
        "a-b",
        "a b",
        "a\"b",
        "a;drop table x",
        "ünï",
        "a.b",
        &"t".repeat(MAX_TABLE_LEN + 1),
    ] {
        let err = check_ident("table", bad, MAX_TABLE_LEN).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config, "{bad}");
    }
    assert!(check_ident("schema", &"s".repeat(63), MAX_IDENT_LEN).is_ok());
    assert!(check_ident("schema", &"s".repeat(64), MAX_IDENT_LEN).is_err());
}

#[test]
fn long_integers_are_respelled_outside_strings_only() {
    let big = format!("17976931348623157{}", "0".repeat(292));
    let text = format!(
        r#"{{"a": {big}, "b": -{big}, "c": "{big}", "d": 18446744073709551615, "e": 0.5, "f": [1, {big}], "g": "q\"{big}"}}"#
    );
    let respelled = respell_long_integers(&text);
    let expected = r#"{"a": 17976931348623157e292, "b": -17976931348623157e292, "c": "BIG", "d": 18446744073709551615, "e": 0.5, "f": [1, 17976931348623157e292], "g": "q\"BIG"}"#
        .replace("BIG", &big);
    assert_eq!(respelled, expected);
    let value: serde_json::Value = serde_json::from_str(&respelled).unwrap();
    assert_eq!(value["a"], serde_json::json!(f64::MAX));
    assert_eq!(value["b"], serde_json::json!(f64::MIN));
    assert_eq!(value["d"], serde_json::json!(u64::MAX));
    // Text without long integers is not copied.
    assert!(matches!(
        respell_long_integers(r#"{"x": [1, -2, 3.5, 1e300]}"#),
        Cow::Borrowed(_)
    ));
}

#[test]
fn expiries_are_clamped_to_the_stored_range() {
    assert_eq!(clamp(i64::MAX), MAX_EXPIRY_MILLIS);
    assert_eq!(clamp(i64::MIN), MIN_EXPIRY_MILLIS);
    assert_eq!(clamp(1_700_000_000_123), 1_700_000_000_123);
}

#[test]
fn statements_quote_names() {
    let sql = Statements::new(Some("auth"), "Sessions");
    assert!(sql.get.as_str().contains("FROM \"auth\".\"Sessions\""));
    assert!(
        sql.create_index
            .as_str()
            .contains("\"Sessions_expires_at_idx\" ON \"auth\".\"Sessions\"")
    );
    let sql = Statements::new(None, "sessions");
    assert!(sql.create_schema.is_none());
    assert!(sql.clear.as_str().ends_with("DELETE FROM \"sessions\""));
}

/// Without `postgres-tls` (and no TLS in sqlx from elsewhere), a URL that requires TLS
/// is a configuration error naming the feature, not sqlx's "built without TLS support".
/// sqlx finds that out once the TCP connection is open, so a bare listener stands in for
/// the server (nothing is sent to it).
#[cfg(not(feature = "postgres-tls"))]
#[tokio::test]
async fn tls_without_the_feature_names_it() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = format!("postgres://u@127.0.0.1:{port}/db?sslmode={mode}");
        let err = PostgresStore::builder()
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .map(drop)
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config, "{mode}: {err}");
        assert!(err.to_string().contains("`postgres-tls` feature"), "{err}");
        let err = crate::connect(&url).await.map(drop).unwrap_err();
        assert!(err.to_string().contains("`postgres-tls` feature"), "{err}");
    }
}

/// A connection cut while it opened (sqlx reads the closed socket as the answer 0x00 to its
/// TLS request) is transient; another server's answer there is not.
#[test]
fn a_connection_cut_while_it_opened_is_transient() {
    let cut = sqlx::Error::Protocol(
        "unexpected response from SSLRequest: 0x00 (sqlx_postgres::connection::tls:95)".into(),
    );
    assert!(super::error::map_err("get", None, cut).is_transient());
    let redis = sqlx::Error::Protocol(
        "unexpected response from SSLRequest: 0x2d (sqlx_postgres::connection::tls:95)".into(),
    );
    assert!(!super::error::map_err("get", None, redis).is_transient());
}

/// Rotated ids (`moved_to` set) are never counted, listed or scanned, and the write
/// statements cap the expiry by the absolute expiry.
#[test]
fn statements_skip_rotated_ids_and_cap_expiries() {
    let sql = Statements::new(None, "sessions");
    for listing in [
        &sql.len,
        &sql.scan_first,
        &sql.scan_after,
        &sql.sessions_of,
        &sql.sessions_of_with_data,
        &sql.touch,
        &sql.touch_delete,
        &sql.update_if_version,
        &sql.delete_if_version,
    ] {
        assert!(
            listing.as_str().contains("moved_to IS NULL"),
            "{}",
            listing.as_str()
        );
    }
    for capped in [&sql.set, &sql.touch, &sql.update_if_version] {
        assert!(
            capped.as_str().contains("absolute_expiry)"),
            "{}",
            capped.as_str()
        );
    }
    assert!(sql.rotate_lock_old.as_str().ends_with("FOR UPDATE"));
    assert!(
        sql.get
            .as_str()
            .contains("LEFT JOIN \"sessions\" AS n ON n.id = s.moved_to")
    );
}
