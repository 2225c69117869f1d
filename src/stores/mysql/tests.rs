use std::time::Duration;

use super::builder::session_settings;
use super::statements::{MAX_IDENT_LEN, MAX_TABLE_LEN, check_ident};
use super::*;

#[test]
fn table_names_are_validated() {
    for good in ["sessions", "_x", "Sessions_2", &"t".repeat(MAX_TABLE_LEN)] {
        assert!(check_ident("table", good, MAX_TABLE_LEN).is_ok(), "{good}");
    }
    for bad in [
        "",
        "1abc",
        "a-b",
        "a b",
        "a`b",
        "a;drop table x",
        "ünï",
        "a.b",
        &"t".repeat(MAX_TABLE_LEN + 1),
    ] {
        let err = check_ident("table", bad, MAX_TABLE_LEN).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config, "{bad}");
    }
    // The longest table's index names are still identifiers.
    assert_eq!(
        MAX_TABLE_LEN + statements::INDEX_SUFFIX.len(),
        MAX_IDENT_LEN
    );
}

#[test]
fn statements_quote_the_table() {
    let sql = Statements::new("Sessions");
    assert!(
        sql.get.as_str().contains("FROM `Sessions` "),
        "{}",
        sql.get.as_str()
    );
    assert!(
        sql.create_table
            .as_str()
            .contains("`Sessions_expires_at_idx`")
    );
    assert!(sql.create_table.as_str().contains("`Sessions_owner_idx`"));
}

#[test]
fn a_store_with_a_bad_table_name_is_refused() {
    let err = MySqlStore::builder()
        .table("no such; table")
        .connect_lazy("mysql://root@127.0.0.1:1/test")
        .map(drop);
    // Outside a runtime the tokio check answers first; both are configuration errors.
    assert_eq!(err.unwrap_err().kind(), crate::ErrorKind::Config);
}

#[test]
fn the_session_settings_follow_the_operation_timeout() {
    let settings = session_settings(Duration::from_millis(2500));
    let text: Vec<&str> = settings.iter().map(|(s, _)| s.as_str()).collect();
    assert!(
        text.contains(&"SET SESSION innodb_lock_wait_timeout = 3"),
        "{text:?}"
    );
    assert!(
        text.contains(&"SET SESSION max_statement_time = 2.500"),
        "{text:?}"
    );
    assert!(
        text.contains(&"SET SESSION max_execution_time = 2500"),
        "{text:?}"
    );
    // The lock wait is whole seconds, at least one.
    let settings = session_settings(Duration::from_millis(10));
    assert!(
        settings
            .iter()
            .any(|(s, _)| s == "SET SESSION innodb_lock_wait_timeout = 1")
    );
    // Only the server-specific statement limits may be missing on a server.
    for (statement, optional) in &settings {
        assert_eq!(*optional, statement.contains("max_"), "{statement}");
    }
}

/// Rotated ids (`moved_to` set) are never counted, listed or scanned; an absolute expiry
/// caps through `IFNULL` (`LEAST` with a NULL is NULL in MySQL and MariaDB).
#[test]
fn statements_skip_rotated_ids_and_cap_expiries_around_nulls() {
    let sql = Statements::new("sessions");
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
        &sql.destroy_owner_live,
    ] {
        assert!(
            listing.as_str().contains("moved_to IS NULL"),
            "{}",
            listing.as_str()
        );
    }
    for capped in [&sql.set, &sql.touch, &sql.update_if_version] {
        assert!(
            capped
                .as_str()
                .contains("IFNULL(absolute_expiry, 9223372036854775807)"),
            "{}",
            capped.as_str()
        );
    }
    assert!(sql.rotate_lock.as_str().ends_with("FOR UPDATE"));
    assert!(
        sql.set
            .as_str()
            .contains(&format!("LAST_INSERT_ID({ROTATED})"))
    );
}
