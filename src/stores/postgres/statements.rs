//! The store's SQL: name checks and quoting, and every statement, built once per store.

use std::fmt;

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use crate::error::{Error, Result};
use crate::session::MAX_VERSION;

pub(super) const MAX_IDENT_LEN: usize = 63;
pub(super) const INDEX_SUFFIX: &str = "_expires_at_idx";
pub(super) const OWNER_INDEX_SUFFIX: &str = "_owner_idx";
/// The longest table name whose index names (the longer suffix) fit in an identifier.
pub(super) const MAX_TABLE_LEN: usize = MAX_IDENT_LEN - INDEX_SUFFIX.len();
const _: () = assert!(OWNER_INDEX_SUFFIX.len() <= INDEX_SUFFIX.len());

/// Checks a schema or table name: `[A-Za-z_][A-Za-z0-9_]*`, 1..=`max` bytes.
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

/// `"name"`. Only called on names that passed [`check_ident`], so there is nothing to escape.
pub(super) fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// SQL for the `timestamptz` that is `$n` milliseconds after the Unix epoch, exact to the
/// millisecond. (Whole seconds and the millisecond remainder are multiplied separately, so
/// the float multiplication of `interval` stays exact over the whole clamped range.)
fn ts(n: usize) -> String {
    format!(
        "('epoch'::timestamptz + (${n}::int8 / 1000) * interval '1 second' \
         + (${n}::int8 % 1000) * interval '1 millisecond')"
    )
}

/// SQL for "now" as a write judges it: `$n` (the application's clock, read when the statement
/// was sent) moved on by the time the statement has spent in the server so far. A statement
/// that waited for a lock (a migration's `ALTER TABLE`, a `LOCK TABLE`, a row another
/// transaction was writing) thus decides "expired?" as of the moment it writes, not as of
/// the moment it was sent, so a write that lands late, even after its caller gave up, never
/// revives a session that expired meanwhile, overwrites its next incarnation, or answers the
/// opposite of what it did. Only the server's elapsed time is used, never its clock, so the
/// two clocks need not agree. (`transaction_timestamp()` is when the server received the
/// statement's `Bind`, before the lock waits of running it; `clock_timestamp()` is read as
/// each row is judged, and again when Postgres re-checks a row that a concurrent writer
/// changed. Preparing a statement also waits for locks, so the store prepares a write's
/// statements before it reads its clock: see `now_after_preparing` in the store's module.)
///
/// Reads keep [`ts`]: they write nothing, their callers filter what arrives by the clock
/// again, and a plain parameter lets the planner use the `expires_at` index.
fn landed(n: usize) -> String {
    format!(
        "({} + (clock_timestamp() - transaction_timestamp()))",
        ts(n)
    )
}

/// SQL reading `expires_at` back as milliseconds since the Unix epoch.
const EXPIRES_MILLIS: &str = "CASE WHEN isfinite(expires_at) \
     THEN round(extract(epoch FROM expires_at) * 1000)::int8 \
     ELSE 9223372036854775807 END";

/// SQL reading the `timestamptz` column `column` (qualified as the query needs) back as
/// milliseconds since the Unix epoch, or NULL.
fn millis(column: &str) -> String {
    format!(
        "CASE WHEN {column} IS NULL THEN NULL WHEN isfinite({column}) \
         THEN round(extract(epoch FROM {column}) * 1000)::int8 \
         ELSE 9223372036854775807 END"
    )
}

fn sql(text: String) -> SqlStr {
    AssertSqlSafe(text).into_sql_str()
}

/// The store's SQL, built once from the validated, quoted names.
#[derive(Clone)]
pub(super) struct Statements {
    pub(super) create_schema: Option<SqlStr>,
    pub(super) create_table: SqlStr,
    pub(super) add_owner: SqlStr,
    pub(super) add_lifetimes: SqlStr,
    pub(super) create_index: SqlStr,
    pub(super) create_owner_index: SqlStr,
    pub(super) get: SqlStr,
    pub(super) set: SqlStr,
    /// A write whose session has expired: deletes the row unless it is a rotated id within
    /// its grace.
    pub(super) delete_unless_rotated: SqlStr,
    /// Whether the id is a rotated id within its grace.
    pub(super) rotated_live: SqlStr,
    pub(super) delete: SqlStr,
    /// `destroy`: deletes the row, returning where it moved to and whether it was live.
    pub(super) destroy: SqlStr,
    pub(super) delete_if_expired_or_absent: SqlStr,
    pub(super) live_exists: SqlStr,
    pub(super) touch: SqlStr,
    pub(super) touch_delete: SqlStr,
    pub(super) create: SqlStr,
    pub(super) update_if_version: SqlStr,
    pub(super) delete_if_version: SqlStr,
    pub(super) len: SqlStr,
    pub(super) clear: SqlStr,
    pub(super) delete_expired_batch: SqlStr,
    pub(super) sessions_of: SqlStr,
    pub(super) sessions_of_with_data: SqlStr,
    pub(super) destroy_owner: SqlStr,
    /// The sessions rotated ids of an owner moved to while `destroy_owner` ran.
    pub(super) destroy_owner_moved: SqlStr,
    pub(super) scan_first: SqlStr,
    pub(super) scan_after: SqlStr,
    pub(super) rotate_lock_old: SqlStr,
    pub(super) rotate_copy: SqlStr,
    pub(super) rotate_mark: SqlStr,
    /// Test support ([`make_undecodable`](crate::SessionStore::make_undecodable)).
    pub(super) spoil: SqlStr,
}

impl Statements {
    pub(super) fn new(schema: Option<&str>, table: &str) -> Self {
        let t = match schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(table)),
            None => quote(table),
        };
        let index = quote(&format!("{table}{INDEX_SUFFIX}"));
        let owner_index = quote(&format!("{table}{OWNER_INDEX_SUFFIX}"));
        let columns = "id, data, expires_at, version, owner, absolute_expiry, moved_to";
        // $3 is the expiry already capped by the written absolute expiry ($7); $5 a fresh
        // version, for a row that starts a new incarnation; $6 the owner (or NULL).
        let values = format!(
            "VALUES ($1, $2::text::jsonb, {exp}, $5::int8, $6::text, {abs}, NULL)",
            exp = ts(3),
            abs = ts(7)
        );
        // `get`'s and `scan`'s columns: data, expiry, version, owner, absolute expiry.
        let read = |s: &str| {
            format!(
                "{s}data::text, {}, {s}version, {s}owner, {}",
                millis(&format!("{s}expires_at")),
                millis(&format!("{s}absolute_expiry"))
            )
        };
        let session_columns = read("");
        // `owner = $1` implies `owner IS NOT NULL`, so these use the partial owner index.
        // Rotated ids are not sessions: never listed.
        let listed = |columns: &str| {
            sql(format!(
                "SELECT {columns} FROM {t} WHERE owner = $1 AND expires_at > {now} \
                 AND moved_to IS NULL",
                now = ts(2)
            ))
        };
        // What `destroy_owner` answers over the rows `d` it deleted: how many were live
        // sessions (not rotated ids), and the ids rotated ones moved to that `d` lacks (a
        // rotation that committed while the delete ran: its new row was not visible yet).
        let ended = |now: String| {
            format!(
                "SELECT count(*) FILTER (WHERE d.moved_to IS NULL AND d.expires_at > {now}), \
                 array_agg(d.moved_to) FILTER (WHERE d.moved_to IS NOT NULL AND e.id IS NULL) \
                 FROM d LEFT JOIN d AS e ON e.id = d.moved_to"
            )
        };
        Statements {
            create_schema: schema
                .map(|schema| sql(format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema)))),
            create_table: sql(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id text PRIMARY KEY, \
                 data jsonb NOT NULL, \
                 expires_at timestamptz NOT NULL, \
                 version bigint NOT NULL, \
                 owner text NULL, \
                 absolute_expiry timestamptz NULL, \
                 moved_to text NULL)"
            )),
            add_owner: sql(format!(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS owner text NULL"
            )),
            add_lifetimes: sql(format!(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS absolute_expiry timestamptz NULL, \
                 ADD COLUMN IF NOT EXISTS moved_to text NULL"
            )),
            create_index: sql(format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {t} (expires_at)"
            )),
            create_owner_index: sql(format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {owner_index} ON {t} (owner) \
                 WHERE owner IS NOT NULL"
            )),
            // A rotated id resolves only while the row it moved to is a live session that
            // was not rotated again. The last column: whether it is one.
            get: sql(format!(
                "SELECT {columns}, s.moved_to IS NOT NULL \
                 FROM {t} AS s LEFT JOIN {t} AS n ON n.id = s.moved_to \
                 WHERE s.id = $1 AND s.expires_at > {now} \
                 AND (s.moved_to IS NULL OR (n.moved_to IS NULL AND n.expires_at > {now}))",
                columns = read("s."),
                now = ts(2)
            )),
            // Over a live session (not a rotated id) the earlier absolute expiry is kept and
            // caps the expiry (LEAST ignores NULLs); a rotated id within its grace is left as
            // it is, and no row comes back. The other rows are a new incarnation.
            set: sql(format!(
                "INSERT INTO {t} AS s ({columns}) {values} ON CONFLICT (id) DO UPDATE SET \
                 data = EXCLUDED.data, owner = EXCLUDED.owner, moved_to = NULL, \
                 absolute_expiry = CASE WHEN {live} \
                 THEN LEAST(s.absolute_expiry, EXCLUDED.absolute_expiry) \
                 ELSE EXCLUDED.absolute_expiry END, \
                 expires_at = CASE WHEN {live} \
                 THEN LEAST(EXCLUDED.expires_at, s.absolute_expiry) \
                 ELSE EXCLUDED.expires_at END, \
                 version = CASE WHEN {live} AND s.version > 0 \
                 AND s.version < {MAX_VERSION} THEN s.version + 1 ELSE EXCLUDED.version END \
                 WHERE s.moved_to IS NULL OR s.expires_at <= {now} \
                 RETURNING version",
                live = format!("(s.moved_to IS NULL AND s.expires_at > {})", landed(4)),
                now = landed(4)
            )),
            delete_unless_rotated: sql(format!(
                "DELETE FROM {t} WHERE id = $1 AND (moved_to IS NULL OR expires_at <= {now})",
                now = landed(2)
            )),
            rotated_live: sql(format!(
                "SELECT EXISTS (SELECT 1 FROM {t} WHERE id = $1 AND moved_to IS NOT NULL \
                 AND expires_at > {now})",
                now = ts(2)
            )),
            delete: sql(format!("DELETE FROM {t} WHERE id = $1")),
            destroy: sql(format!(
                "DELETE FROM {t} WHERE id = $1 RETURNING moved_to, expires_at > {now}",
                now = landed(2)
            )),
            delete_if_expired_or_absent: sql(format!(
                "DELETE FROM {t} WHERE id = $1 AND expires_at <= {now}",
                now = landed(2)
            )),
            live_exists: sql(format!(
                "SELECT EXISTS (SELECT 1 FROM {t} WHERE id = $1 AND expires_at > {now})",
                now = ts(2)
            )),
            touch: sql(format!(
                "UPDATE {t} SET expires_at = LEAST({exp}, absolute_expiry) \
                 WHERE id = $1 AND expires_at > {now} AND moved_to IS NULL",
                exp = ts(2),
                now = landed(3)
            )),
            touch_delete: sql(format!(
                "DELETE FROM {t} WHERE id = $1 AND expires_at > {now} AND moved_to IS NULL",
                now = landed(2)
            )),
            create: sql(format!(
                "INSERT INTO {t} AS s ({columns}) {values} ON CONFLICT (id) DO UPDATE SET \
                 data = EXCLUDED.data, expires_at = EXCLUDED.expires_at, \
                 owner = EXCLUDED.owner, absolute_expiry = EXCLUDED.absolute_expiry, \
                 moved_to = NULL, version = EXCLUDED.version WHERE s.expires_at <= {now}",
                now = landed(4)
            )),
            // $3 is the expiry capped by the written absolute expiry ($8); $6 the version
            // after $4, computed by the caller (`next_version`); $7 the owner (or NULL). The
            // row is live, so the stored absolute expiry is kept if earlier, and caps too.
            update_if_version: sql(format!(
                "UPDATE {t} AS s SET data = $2::text::jsonb, \
                 expires_at = LEAST({exp}, s.absolute_expiry), \
                 absolute_expiry = LEAST(s.absolute_expiry, {abs}), version = $6::int8, \
                 owner = $7::text \
                 WHERE id = $1 AND version = $4 AND expires_at > {now} AND moved_to IS NULL \
                 RETURNING version",
                exp = ts(3),
                abs = ts(8),
                now = landed(5)
            )),
            delete_if_version: sql(format!(
                "DELETE FROM {t} WHERE id = $1 AND version = $2 AND expires_at > {now} \
                 AND moved_to IS NULL",
                now = landed(3)
            )),
            len: sql(format!(
                "SELECT count(*) FROM {t} WHERE expires_at > {now} AND moved_to IS NULL",
                now = ts(1)
            )),
            clear: sql(format!("DELETE FROM {t}")),
            delete_expired_batch: sql(format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE expires_at <= {now} \
                 LIMIT $2 FOR UPDATE SKIP LOCKED) AND expires_at <= {now}",
                now = ts(1)
            )),
            sessions_of: listed(&format!("id, {EXPIRES_MILLIS}, version")),
            sessions_of_with_data: listed(&format!("id, {EXPIRES_MILLIS}, version, data::text")),
            // $2 is the id to keep, or NULL (from which every id is distinct).
            destroy_owner: sql(format!(
                "WITH d AS (DELETE FROM {t} WHERE owner = $1 AND id IS DISTINCT FROM $2::text \
                 RETURNING id, expires_at, moved_to) {}",
                ended(landed(3))
            )),
            // $4: the ids rotated ids moved to (`destroy_owner`'s second column).
            destroy_owner_moved: sql(format!(
                "WITH d AS (DELETE FROM {t} WHERE id = ANY($4::text[]) AND owner = $1 \
                 AND id IS DISTINCT FROM $2::text RETURNING id, expires_at, moved_to) {}",
                ended(landed(3))
            )),
            // Keyset pages in id order (the primary key's order): `get`'s columns, then the id.
            scan_first: sql(format!(
                "SELECT {session_columns}, id FROM {t} \
                 WHERE expires_at > {now} AND moved_to IS NULL ORDER BY id LIMIT $2",
                now = ts(1)
            )),
            scan_after: sql(format!(
                "SELECT {session_columns}, id FROM {t} \
                 WHERE id > $1 AND expires_at > {now} AND moved_to IS NULL ORDER BY id LIMIT $3",
                now = ts(2)
            )),
            // Rotation, in one transaction: lock the old row and judge it; copy it under the
            // new id unless a live row (a session or a rotated id in its grace) holds that id
            // (an expired leftover is replaced); then mark the old row.
            rotate_lock_old: sql(format!(
                "SELECT version, expires_at > {now}, moved_to IS NOT NULL FROM {t} \
                 WHERE id = $1 FOR UPDATE",
                now = landed(2)
            )),
            // $3: the version after the old one.
            rotate_copy: sql(format!(
                "INSERT INTO {t} AS n ({columns}) \
                 SELECT $2::text, data, expires_at, $3::int8, owner, absolute_expiry, NULL \
                 FROM {t} WHERE id = $1 \
                 ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, \
                 expires_at = EXCLUDED.expires_at, version = EXCLUDED.version, \
                 owner = EXCLUDED.owner, absolute_expiry = EXCLUDED.absolute_expiry, \
                 moved_to = NULL WHERE n.expires_at <= {now}",
                now = landed(4)
            )),
            // $3: the end of the grace.
            rotate_mark: sql(format!(
                "UPDATE {t} SET moved_to = $2::text, expires_at = LEAST(expires_at, {until}) \
                 WHERE id = $1",
                until = ts(3)
            )),
            // `jsonb` holds only valid JSON: an array is not a session's data object.
            spoil: sql(format!(
                "UPDATE {t} SET data = '[\"not a session\"]'::jsonb WHERE id = $1"
            )),
        }
    }
}

impl Statements {
    /// The statements of a write that may start an incarnation (`create`,
    /// `set_if_version(.., 0)`): whether a live session holds the id, the removal of an
    /// expired one, the insert.
    pub(super) fn creating(&self) -> [&SqlStr; 3] {
        [
            &self.live_exists,
            &self.delete_if_expired_or_absent,
            &self.create,
        ]
    }
}

impl fmt::Debug for Statements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Statements(..)")
    }
}
