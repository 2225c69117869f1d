//! The store's SQL: name checks and quoting, and every statement, built once per store.

use std::fmt;

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use crate::error::{Error, Result};
use crate::session::MAX_VERSION;

/// MySQL's and MariaDB's longest identifier, in characters.
pub(super) const MAX_IDENT_LEN: usize = 64;
pub(super) const INDEX_SUFFIX: &str = "_expires_at_idx";
pub(super) const OWNER_INDEX_SUFFIX: &str = "_owner_idx";
/// The longest table name whose index names (the longer suffix) fit in an identifier.
pub(super) const MAX_TABLE_LEN: usize = MAX_IDENT_LEN - INDEX_SUFFIX.len();
const _: () = assert!(OWNER_INDEX_SUFFIX.len() <= INDEX_SUFFIX.len());

/// Checks a table name: `[A-Za-z_][A-Za-z0-9_]*`, 1..=`max` bytes.
pub(super) fn check_ident(what: &str, name: &str, max: usize) -> Result<()> {
    let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let starts_well = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !valid_chars || !starts_well || name.len() > max {
        return Err(Error::config(format!(
            "the {what} name {name:?} is not 1 to {max} ASCII letters, digits or `_` starting with a letter or `_`"
        )));
    }
    Ok(())
}

/// `` `name` ``. Only called on names that passed [`check_ident`], so there is nothing to
/// escape.
pub(super) fn quote(name: &str) -> String {
    format!("`{name}`")
}

/// SQL for "now" as a write judges it: the parameter (the application's clock in
/// milliseconds, read when the statement was sent) moved on by the time the statement has
/// spent in the server so far: `NOW(6)` is when the statement started, `SYSDATE(6)` when
/// this expression is evaluated, as each row is judged. A statement that waited for a row
/// lock or the table's metadata lock (a migration's `ALTER TABLE`, a `LOCK TABLES`) thus
/// decides "expired?" as of the moment it writes, not as of the moment it was sent, so a
/// write that lands late, even after its caller gave up, never revives a session that
/// expired meanwhile, overwrites its next incarnation, or answers the opposite of what it
/// did. Only the server's elapsed time is used, never its clock, so the two clocks need not
/// agree. (A server started with `--sysdate-is-now` makes the two equal: the store then
/// judges by the time the statement was sent, as a plain parameter would.)
///
/// Reads use the plain parameter: they write nothing, their callers filter what arrives by
/// the clock again, and a plain parameter lets the optimizer use the `expires_at` index.
const LANDED: &str = "(? + TIMESTAMPDIFF(MICROSECOND, NOW(6), SYSDATE(6)) DIV 1000)";

fn sql(text: String) -> SqlStr {
    AssertSqlSafe(text).into_sql_str()
}

/// The largest `BIGINT`: "no absolute expiry" where one caps an expiry (`LEAST` with a NULL
/// is NULL in MySQL and MariaDB, so a missing one is read as this).
const NO_LIMIT: i64 = i64::MAX;

/// What `set` hands back through `LAST_INSERT_ID` when the id is a rotated id within its
/// grace and nothing was written: above every version.
pub(super) const ROTATED: u64 = u64::MAX;
const _: () = assert!(ROTATED > MAX_VERSION);

/// The store's SQL, built once from the validated, quoted names.
#[derive(Clone)]
pub(super) struct Statements {
    pub(super) create_table: SqlStr,
    pub(super) add_absolute_expiry: SqlStr,
    pub(super) add_moved_to: SqlStr,
    pub(super) create_index: SqlStr,
    pub(super) create_owner_index: SqlStr,
    pub(super) get: SqlStr,
    pub(super) set: SqlStr,
    pub(super) delete: SqlStr,
    /// `destroy`: the row, and the row a rotated id within its grace moved to.
    pub(super) destroy: SqlStr,
    /// A write whose session has expired: deletes the row unless it is a rotated id within
    /// its grace.
    pub(super) delete_unless_rotated: SqlStr,
    /// Whether the id is a rotated id within its grace.
    pub(super) rotated_live: SqlStr,
    pub(super) delete_if_expired: SqlStr,
    pub(super) live_exists: SqlStr,
    pub(super) touch: SqlStr,
    pub(super) touch_delete: SqlStr,
    pub(super) insert: SqlStr,
    pub(super) update_if_version: SqlStr,
    pub(super) delete_if_version: SqlStr,
    pub(super) len: SqlStr,
    pub(super) clear: SqlStr,
    pub(super) delete_expired_batch: SqlStr,
    pub(super) sessions_of: SqlStr,
    pub(super) sessions_of_with_data: SqlStr,
    pub(super) destroy_owner_live: SqlStr,
    pub(super) destroy_owner_moved_to: SqlStr,
    pub(super) destroy_owner_target: SqlStr,
    pub(super) destroy_owner_expired: SqlStr,
    pub(super) scan_first: SqlStr,
    pub(super) scan_after: SqlStr,
    pub(super) rotate_lock: SqlStr,
    pub(super) rotate_copy: SqlStr,
    pub(super) rotate_mark: SqlStr,
    /// Test support ([`make_undecodable`](crate::SessionStore::make_undecodable)).
    pub(super) spoil: SqlStr,
}

impl Statements {
    /// The statements over `table` in the connection's database.
    pub(super) fn new(table: &str) -> Self {
        let t = quote(table);
        let index = quote(&format!("{table}{INDEX_SUFFIX}"));
        let owner_index = quote(&format!("{table}{OWNER_INDEX_SUFFIX}"));
        // Rotated ids are not sessions: never listed.
        let listed = |columns: &str| {
            sql(format!(
                "SELECT {columns} FROM {t} WHERE owner = ? AND expires_at > ? \
                 AND moved_to IS NULL"
            ))
        };
        // In `set`, once its first assignment has run: the row is a rotated id within its
        // grace, kept as it is.
        let kept = "(moved_to IS NOT NULL AND moved_to <> '')";
        Statements {
            // Ids and owners are compared byte for byte (`VARBINARY`: no collation, no
            // trailing-space padding, the order of Rust's `str`, which scans page by); the
            // data is kept as the exact JSON text the store wrote.
            create_table: sql(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id VARBINARY(128) NOT NULL PRIMARY KEY, \
                 data LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
                 expires_at BIGINT NOT NULL, \
                 version BIGINT NOT NULL, \
                 owner VARBINARY(128) NULL, \
                 absolute_expiry BIGINT NULL, \
                 moved_to VARBINARY(128) NULL, \
                 KEY {index} (expires_at), \
                 KEY {owner_index} (owner)) ENGINE=InnoDB"
            )),
            add_absolute_expiry: sql(format!(
                "ALTER TABLE {t} ADD COLUMN absolute_expiry BIGINT NULL"
            )),
            add_moved_to: sql(format!(
                "ALTER TABLE {t} ADD COLUMN moved_to VARBINARY(128) NULL"
            )),
            create_index: sql(format!("CREATE INDEX {index} ON {t} (expires_at)")),
            create_owner_index: sql(format!("CREATE INDEX {owner_index} ON {t} (owner)")),
            // Binds: id, now, now. A rotated id resolves only while the row it moved to is a
            // live session that was not rotated again. The last column: whether it is one.
            get: sql(format!(
                "SELECT s.data, s.expires_at, s.version, s.owner, s.absolute_expiry, \
                 s.moved_to IS NOT NULL FROM {t} AS s LEFT JOIN {t} AS n ON n.id = s.moved_to \
                 WHERE s.id = ? AND s.expires_at > ? \
                 AND (s.moved_to IS NULL OR (n.moved_to IS NULL AND n.expires_at > ?))"
            )),
            // Binds: id, data, expires_at (capped by the written absolute expiry), a fresh
            // version (for a row that starts a new incarnation), owner, absolute expiry, now.
            // The assignments run left to right, each seeing the ones before. The first
            // judges the stored row once, as the statement lands, and says it in `moved_to`:
            // '' (no id is empty) for a live session, the id it moved to for a rotated id
            // within its grace, NULL for an expired row; the last puts NULL back for ''.
            // `LAST_INSERT_ID(x)` hands the version an update assigned back in the reply
            // ([`ROTATED`] when nothing was written); an insert leaves it 0 (the fresh
            // version was assigned). Over a live session the earlier absolute expiry is kept
            // and caps the expiry (IFNULL: `LEAST` with a NULL is NULL here).
            set: sql(format!(
                "INSERT INTO {t} (id, data, expires_at, version, owner, absolute_expiry) \
                 VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
                 moved_to = IF(expires_at > {LANDED}, IF(moved_to IS NULL, '', moved_to), NULL), \
                 version = IF(moved_to IS NULL, LAST_INSERT_ID(VALUES(version)), \
                 IF(moved_to = '', LAST_INSERT_ID(IF(version > 0 AND version < {MAX_VERSION}, \
                 version + 1, VALUES(version))), \
                 IF(LAST_INSERT_ID({ROTATED}), version, version))), \
                 data = IF({kept}, data, VALUES(data)), \
                 owner = IF({kept}, owner, VALUES(owner)), \
                 expires_at = IF({kept}, expires_at, IF(moved_to = '', \
                 LEAST(VALUES(expires_at), IFNULL(absolute_expiry, {NO_LIMIT})), \
                 VALUES(expires_at))), \
                 absolute_expiry = IF({kept}, absolute_expiry, \
                 IF(moved_to = '' AND absolute_expiry IS NOT NULL, \
                 LEAST(absolute_expiry, IFNULL(VALUES(absolute_expiry), absolute_expiry)), \
                 VALUES(absolute_expiry))), \
                 moved_to = IF(moved_to = '', NULL, moved_to)"
            )),
            delete: sql(format!("DELETE FROM {t} WHERE id = ?")),
            // Binds: now, id.
            destroy: sql(format!(
                "DELETE s, n FROM {t} AS s LEFT JOIN {t} AS n \
                 ON n.id = s.moved_to AND s.expires_at > {LANDED} WHERE s.id = ?"
            )),
            delete_unless_rotated: sql(format!(
                "DELETE FROM {t} WHERE id = ? AND (moved_to IS NULL OR expires_at <= {LANDED})"
            )),
            rotated_live: sql(format!(
                "SELECT EXISTS (SELECT 1 FROM {t} WHERE id = ? AND moved_to IS NOT NULL \
                 AND expires_at > ?)"
            )),
            delete_if_expired: sql(format!(
                "DELETE FROM {t} WHERE id = ? AND expires_at <= {LANDED}"
            )),
            live_exists: sql(format!(
                "SELECT EXISTS (SELECT 1 FROM {t} WHERE id = ? AND expires_at > ?)"
            )),
            // Binds: expires_at, id, now. The absolute expiry caps it.
            touch: sql(format!(
                "UPDATE {t} SET expires_at = LEAST(?, IFNULL(absolute_expiry, {NO_LIMIT})) \
                 WHERE id = ? AND expires_at > {LANDED} AND moved_to IS NULL"
            )),
            touch_delete: sql(format!(
                "DELETE FROM {t} WHERE id = ? AND expires_at > {LANDED} AND moved_to IS NULL"
            )),
            insert: sql(format!(
                "INSERT INTO {t} (id, data, expires_at, version, owner, absolute_expiry) \
                 VALUES (?, ?, ?, ?, ?, ?)"
            )),
            // Binds: data, expires_at (capped by the written absolute expiry), the next
            // version (computed by the caller), owner, absolute expiry twice, id, the
            // expected version, now. The row is live: the stored absolute expiry caps the
            // expiry (assigned first, so it reads the stored one) and is kept if earlier.
            update_if_version: sql(format!(
                "UPDATE {t} SET data = ?, \
                 expires_at = LEAST(?, IFNULL(absolute_expiry, {NO_LIMIT})), version = ?, \
                 owner = ?, absolute_expiry = IF(absolute_expiry IS NULL, ?, \
                 LEAST(absolute_expiry, IFNULL(?, absolute_expiry))) \
                 WHERE id = ? AND version = ? AND expires_at > {LANDED} AND moved_to IS NULL"
            )),
            delete_if_version: sql(format!(
                "DELETE FROM {t} WHERE id = ? AND version = ? AND expires_at > {LANDED} \
                 AND moved_to IS NULL"
            )),
            len: sql(format!(
                "SELECT COUNT(*) FROM {t} WHERE expires_at > ? AND moved_to IS NULL"
            )),
            clear: sql(format!("DELETE FROM {t}")),
            delete_expired_batch: sql(format!(
                "DELETE FROM {t} WHERE expires_at <= ? ORDER BY expires_at LIMIT ?"
            )),
            sessions_of: listed("id, expires_at, version"),
            sessions_of_with_data: listed("id, expires_at, version, data"),
            // Binds: owner, the id to keep (or NULL, which `<=>` matches with no id), now.
            // The live sessions first (their count is the answer), then the sessions the
            // owner's rotated ids moved to (a rotation that landed while the first delete
            // ran), one by one, then the owner's rotated ids and expired rows (a write that
            // lands in between is live, and kept, as if it landed after).
            destroy_owner_live: sql(format!(
                "DELETE FROM {t} WHERE owner = ? AND NOT (id <=> ?) AND moved_to IS NULL \
                 AND expires_at > {LANDED}"
            )),
            destroy_owner_moved_to: sql(format!(
                "SELECT moved_to FROM {t} WHERE owner = ? AND NOT (id <=> ?) \
                 AND moved_to IS NOT NULL"
            )),
            // Binds: id, owner, now.
            destroy_owner_target: sql(format!(
                "DELETE FROM {t} WHERE id = ? AND owner = ? AND moved_to IS NULL \
                 AND expires_at > {LANDED}"
            )),
            destroy_owner_expired: sql(format!(
                "DELETE FROM {t} WHERE owner = ? AND NOT (id <=> ?) \
                 AND (moved_to IS NOT NULL OR expires_at <= {LANDED})"
            )),
            // Keyset pages in id order (the primary key's order): `get`'s columns, then the id.
            scan_first: sql(format!(
                "SELECT data, expires_at, version, owner, absolute_expiry, id FROM {t} \
                 WHERE expires_at > ? AND moved_to IS NULL ORDER BY id LIMIT ?"
            )),
            scan_after: sql(format!(
                "SELECT data, expires_at, version, owner, absolute_expiry, id FROM {t} \
                 WHERE id > ? AND expires_at > ? AND moved_to IS NULL ORDER BY id LIMIT ?"
            )),
            // Rotation, in one transaction. Binds: now, id. Locks the row (the old id, then
            // the new one) and judges it as the statement lands.
            rotate_lock: sql(format!(
                "SELECT version, expires_at > {LANDED}, moved_to IS NOT NULL FROM {t} \
                 WHERE id = ? FOR UPDATE"
            )),
            // Binds: new id, its version, old id.
            rotate_copy: sql(format!(
                "INSERT INTO {t} (id, data, expires_at, version, owner, absolute_expiry, \
                 moved_to) SELECT ?, data, expires_at, ?, owner, absolute_expiry, NULL \
                 FROM {t} WHERE id = ?"
            )),
            // Binds: new id, the end of the grace, old id.
            rotate_mark: sql(format!(
                "UPDATE {t} SET moved_to = ?, expires_at = LEAST(expires_at, ?) WHERE id = ?"
            )),
            spoil: sql(format!(
                "UPDATE {t} SET data = '[\"not a session\"]' WHERE id = ?"
            )),
        }
    }

    /// The statements of a write that may start an incarnation (`create`,
    /// `set_if_version(.., 0)`): whether a live session holds the id, the removal of an
    /// expired one, the insert.
    pub(super) fn creating(&self) -> [&SqlStr; 3] {
        [&self.live_exists, &self.delete_if_expired, &self.insert]
    }
}

impl fmt::Debug for Statements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Statements(..)")
    }
}
