//! The store's SQL statements, and the check of the table name they are built with.

use crate::error::{Error, Result};
use crate::session::MAX_VERSION;

use super::SCHEMA_TABLE;

/// The store's SQL, with its (validated, quoted) table name filled in.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) get: String,
    pub(super) live: String,
    pub(super) upsert: String,
    pub(super) insert_if_absent: String,
    pub(super) update_if_version: String,
    pub(super) delete: String,
    pub(super) destroy: String,
    pub(super) delete_live: String,
    pub(super) delete_live_if_version: String,
    pub(super) delete_stale: String,
    pub(super) touch: String,
    pub(super) count: String,
    pub(super) max_rowid: String,
    pub(super) clear_batch: String,
    pub(super) delete_expired_batch: String,
    pub(super) sessions_of: String,
    pub(super) sessions_of_with_data: String,
    pub(super) destroy_owner: String,
    pub(super) scan_first: String,
    pub(super) scan_after: String,
    pub(super) rotate_source: String,
    pub(super) rotate_copy: String,
    pub(super) rotate_mark: String,
    /// Test support ([`make_undecodable`](crate::SessionStore::make_undecodable)).
    pub(super) spoil: String,
}

impl Sql {
    pub(super) fn new(table: &str) -> Self {
        let t = format!("\"{table}\"");
        Sql {
            // A rotated row (`moved_to` set) reads as its own session, marked rotated (the
            // last column), only while the row it moved to is live and not rotated itself.
            get: format!(
                "SELECT s.data, s.expires_at, s.version, s.owner, s.absolute_expiry, \
                 s.moved_to IS NOT NULL FROM {t} AS s LEFT JOIN {t} AS n ON n.id = s.moved_to \
                 WHERE s.id = ?1 AND s.expires_at > ?2 \
                 AND (s.moved_to IS NULL OR (n.expires_at > ?2 AND n.moved_to IS NULL))"
            ),
            // The live row of an id (a session or a rotated id), as a write needs it.
            live: format!(
                "SELECT absolute_expiry, moved_to IS NOT NULL FROM {t} \
                 WHERE id = ?1 AND expires_at > ?2"
            ),
            // ?5 is a fresh version: stored when no live row with a valid version is there,
            // or when the live version is already the largest. ?6 is the owner (or NULL), ?7
            // the absolute expiry (or NULL). The caller has checked that a live row is not a
            // rotated id.
            upsert: format!(
                "INSERT INTO {t} (id, data, expires_at, version, owner, absolute_expiry, moved_to) \
                 VALUES (?1, ?2, ?3, ?5, ?6, ?7, NULL) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                 expires_at = excluded.expires_at, owner = excluded.owner, \
                 absolute_expiry = excluded.absolute_expiry, moved_to = NULL, \
                 version = CASE WHEN {t}.expires_at > ?4 AND typeof({t}.version) = 'integer' \
                 AND {t}.version >= 1 AND {t}.version < {MAX_VERSION} \
                 THEN {t}.version + 1 ELSE excluded.version END \
                 RETURNING version"
            ),
            // ?5 is the new incarnation's (fresh) version, ?6 the owner (or NULL), ?7 the
            // absolute expiry (or NULL). A live rotated id is live: nothing is inserted.
            insert_if_absent: format!(
                "INSERT INTO {t} (id, data, expires_at, version, owner, absolute_expiry, moved_to) \
                 VALUES (?1, ?2, ?3, ?5, ?6, ?7, NULL) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                 expires_at = excluded.expires_at, version = excluded.version, \
                 owner = excluded.owner, absolute_expiry = excluded.absolute_expiry, \
                 moved_to = NULL \
                 WHERE {t}.expires_at <= ?4"
            ),
            // ?6 is the next version after ?4, computed by the caller (`next_version`); ?7
            // the owner (or NULL); ?8 the absolute expiry (or NULL).
            update_if_version: format!(
                "UPDATE {t} SET data = ?2, expires_at = ?3, version = ?6, owner = ?7, \
                 absolute_expiry = ?8 \
                 WHERE id = ?1 AND version = ?4 AND expires_at > ?5 AND moved_to IS NULL"
            ),
            delete: format!("DELETE FROM {t} WHERE id = ?1"),
            // A live rotated id takes the row it moved to with it.
            destroy: format!(
                "DELETE FROM {t} WHERE id = ?1 \
                 OR id = (SELECT moved_to FROM {t} WHERE id = ?1 AND expires_at > ?2)"
            ),
            delete_live: format!(
                "DELETE FROM {t} WHERE id = ?1 AND expires_at > ?2 AND moved_to IS NULL"
            ),
            delete_live_if_version: format!(
                "DELETE FROM {t} WHERE id = ?1 AND version = ?2 AND expires_at > ?3 \
                 AND moved_to IS NULL"
            ),
            delete_stale: format!("DELETE FROM {t} WHERE id = ?1 AND expires_at <= ?2"),
            // The new expiry is capped by the absolute expiry (a value that is not an integer,
            // which only a hand edit stores, caps nothing); the caller reads it back.
            touch: format!(
                "UPDATE {t} SET expires_at = CASE WHEN typeof(absolute_expiry) = 'integer' \
                 AND absolute_expiry < ?2 THEN absolute_expiry ELSE ?2 END \
                 WHERE id = ?1 AND expires_at > ?3 AND moved_to IS NULL \
                 RETURNING expires_at"
            ),
            count: format!("SELECT COUNT(*) FROM {t} WHERE expires_at > ?1 AND moved_to IS NULL"),
            max_rowid: format!("SELECT MAX(rowid) FROM {t}"),
            clear_batch: format!(
                "DELETE FROM {t} WHERE rowid IN \
                 (SELECT rowid FROM {t} WHERE rowid <= ?1 ORDER BY rowid LIMIT ?2)"
            ),
            delete_expired_batch: format!(
                "DELETE FROM {t} WHERE rowid IN \
                 (SELECT rowid FROM {t} WHERE expires_at <= ?1 LIMIT ?2)"
            ),
            // `owner = ?` implies `owner IS NOT NULL`, so both use the partial owner index.
            // Rotated ids are not sessions: never listed.
            sessions_of: format!(
                "SELECT id, expires_at, version FROM {t} \
                 WHERE owner = ?1 AND expires_at > ?2 AND moved_to IS NULL"
            ),
            sessions_of_with_data: format!(
                "SELECT id, expires_at, version, data FROM {t} \
                 WHERE owner = ?1 AND expires_at > ?2 AND moved_to IS NULL"
            ),
            // ?2 is the id to keep, or NULL (`IS NOT NULL` is true of every id). Rotated ids
            // are deleted too, but not counted.
            destroy_owner: format!(
                "DELETE FROM {t} WHERE owner = ?1 AND id IS NOT ?2 \
                 RETURNING expires_at > ?3 AND moved_to IS NULL"
            ),
            // Keyset pages in id order, over the primary key's index: the unary `+` keeps the
            // planner off the expiry index (which would read every live row and sort them).
            // The columns are `get`'s, then the id. Rotated ids are skipped.
            scan_first: format!(
                "SELECT data, expires_at, version, owner, absolute_expiry, id FROM {t} \
                 WHERE +expires_at > ?1 AND moved_to IS NULL ORDER BY id LIMIT ?2"
            ),
            scan_after: format!(
                "SELECT data, expires_at, version, owner, absolute_expiry, id FROM {t} \
                 WHERE id > ?1 AND +expires_at > ?2 AND moved_to IS NULL ORDER BY id LIMIT ?3"
            ),
            // The live row of the old id of a rotation.
            rotate_source: format!(
                "SELECT expires_at, version, moved_to IS NOT NULL FROM {t} \
                 WHERE id = ?1 AND expires_at > ?2"
            ),
            // Copies the old id's row (?1) under the new id (?2) at version ?3, over an
            // expired leftover row there (the caller has checked that nothing live is).
            // (`WHERE` in the `SELECT` keeps `ON CONFLICT` from parsing as a join's.)
            rotate_copy: format!(
                "INSERT INTO {t} (id, data, expires_at, version, owner, absolute_expiry, moved_to) \
                 SELECT ?2, data, expires_at, ?3, owner, absolute_expiry, NULL FROM {t} \
                 WHERE id = ?1 \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                 expires_at = excluded.expires_at, version = excluded.version, \
                 owner = excluded.owner, absolute_expiry = excluded.absolute_expiry, \
                 moved_to = NULL"
            ),
            // Turns the old id into a rotated id: ?2 the new id, ?3 its expiry.
            rotate_mark: format!("UPDATE {t} SET moved_to = ?2, expires_at = ?3 WHERE id = ?1"),
            spoil: format!("UPDATE {t} SET data = 'not a session' WHERE id = ?1"),
        }
    }
}

/// Checks a table name: `[A-Za-z_][A-Za-z0-9_]{0,62}`, not `sqlite_*`, not [`SCHEMA_TABLE`].
pub(super) fn validate_table(table: &str) -> Result<()> {
    let mut bytes = table.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !first_ok || !rest_ok || table.len() > 63 {
        return Err(Error::config(format!(
            "SQLite table name {table:?} is not an identifier matching [A-Za-z_][A-Za-z0-9_]{{0,62}}"
        )));
    }
    if table.to_ascii_lowercase().starts_with("sqlite_") {
        return Err(Error::config(format!(
            "SQLite table name {table:?} is reserved: names starting with sqlite_ belong to SQLite"
        )));
    }
    if table.eq_ignore_ascii_case(SCHEMA_TABLE) {
        return Err(Error::config(format!(
            "SQLite table name {table:?} is the store's own schema table"
        )));
    }
    Ok(())
}
