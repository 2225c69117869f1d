//! Session data to and from the table: the `jsonb` checks on write, the row decoders and
//! the respelling of long integers on read, expiry clamping and versions.

use std::borrow::Cow;

use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::{Error, Result};
use crate::session::{Owner, Session, SessionId};
use crate::store::OwnedSession;

/// The earliest expiry stored: 0001-01-01T00:00:00Z, in milliseconds since the Unix epoch.
/// Earlier expiries are stored as this one (they are in the past either way).
pub const MIN_EXPIRY_MILLIS: i64 = -62_135_596_800_000;

/// The latest expiry stored: 9999-12-31T23:59:59.999Z, in milliseconds since the Unix epoch.
/// Later expiries (such as a TTL of `Duration::MAX`) are stored as this one.
pub const MAX_EXPIRY_MILLIS: i64 = 253_402_300_799_999;

/// `ms` clamped to what the table stores. See [`MIN_EXPIRY_MILLIS`], [`MAX_EXPIRY_MILLIS`].
pub(super) fn clamp(ms: i64) -> i64 {
    ms.clamp(MIN_EXPIRY_MILLIS, MAX_EXPIRY_MILLIS)
}

pub(super) fn encode_data(id: &SessionId, session: &Session) -> Result<String> {
    crate::session::check_nesting(id, session.data())?;
    check_jsonb_floats(id, session.data())?;
    // Checks the nesting once more (it only visits arrays and objects), then serialises.
    crate::stores::shared::codec::encode_data(id, session)
}

/// Refuses floats that `jsonb` would give back as integers, so that what is stored always
/// reads back exactly. serde_json writes large whole floats without a decimal point (`1e16`);
/// `jsonb` keeps them as the integer `10000000000000000`, which would read back as an integer,
/// not a float, whenever it fits in `i64` or `u64` (whole floats from 1e16 up to 2^64 in
/// magnitude).
fn check_jsonb_floats(id: &SessionId, data: &Map<String, Value>) -> Result<()> {
    let mut stack: Vec<&Value> = data.values().collect();
    while let Some(value) = stack.pop() {
        match value {
            Value::Number(n) if n.is_f64() => {
                // jsonb keeps a number as `numeric`, printed without exponent: a whole
                // float of 1e16 or more (`1e16`, `1.5e16`) comes back as an integer, which
                // reads back as i64/u64 when it fits. (Whole floats under 1e16 are written
                // by serde_json as `123.0`, which jsonb keeps.)
                let f = n.as_f64().unwrap_or(0.0);
                let integral = f.is_finite() && f.fract() == 0.0;
                let fits = (i64::MIN as f64..u64::MAX as f64).contains(&f);
                if integral && fits && f.abs() >= 1e16 {
                    return Err(Error::encode(
                        id,
                        "the data holds a whole-number float of 1e16 or more that Postgres' jsonb \
                         would give back as an integer; store it as an integer or a string",
                    ));
                }
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    Ok(())
}

pub(super) fn to_version(op: &'static str, id: &SessionId, version: i64) -> Result<u64> {
    u64::try_from(version).map_err(|err| Error::backend(op, Some(id), err))
}

/// A session from a row of `get` or `scan` (`data, expires_at, version, owner,
/// absolute_expiry, ...`).
pub(super) fn decode_row(id: &SessionId, row: &PgRow) -> Result<Session> {
    let data: String = row.try_get(0).map_err(|e| Error::decode(id, e))?;
    let expires_at: i64 = row.try_get(1).map_err(|e| Error::decode(id, e))?;
    let version: i64 = row.try_get(2).map_err(|e| Error::decode(id, e))?;
    let owner: Option<String> = row.try_get(3).map_err(|e| Error::decode(id, e))?;
    let owner = owner
        .map(Owner::new)
        .transpose()
        .map_err(|e| Error::decode(id, e))?;
    // A table migrated from a release before absolute expiries reads NULL.
    let absolute: Option<i64> = row.try_get(4).map_err(|e| Error::decode(id, e))?;
    Ok(decode_parts(id, &data, expires_at, version)?
        .with_owner(owner)
        .with_absolute_expiry_millis(absolute))
}

/// An entry of `sessions_of` from its row (`id, <expiry>, version[, data]`): a row that is
/// not a valid session is listed as undecodable, with what could be read; one whose id is
/// not valid is left out (`None`: it names no session a caller could end).
pub(super) fn decode_listed(row: &PgRow, with_data: bool) -> Result<Option<OwnedSession>> {
    let raw: String = row
        .try_get(0)
        .map_err(|e| Error::backend("sessions_of", None, e))?;
    let Ok(id) = SessionId::new(raw.as_str()) else {
        return Ok(None);
    };
    let expires_at: Result<i64> = row.try_get(1).map_err(|e| Error::decode(&id, e));
    let version: Result<i64> = row.try_get(2).map_err(|e| Error::decode(&id, e));
    let (at, v) = (
        expires_at.as_ref().map_or(0, |at| *at),
        version
            .as_ref()
            .ok()
            .and_then(|v| u64::try_from(*v).ok())
            .unwrap_or(0),
    );
    let entry = (|| {
        let data: Option<String> = match with_data {
            true => Some(row.try_get(3).map_err(|e| Error::decode(&id, e))?),
            false => None,
        };
        let session = decode_parts(&id, data.as_deref().unwrap_or("{}"), expires_at?, version?)?;
        Ok::<_, Error>(OwnedSession::of(id.clone(), session, with_data))
    })();
    Ok(Some(entry.unwrap_or_else(|err| {
        OwnedSession::undecodable(id, at, v, err)
    })))
}

/// A session from the text of its `data` column (as `jsonb` prints it), its expiry in
/// milliseconds and its version.
pub(super) fn decode_parts(
    id: &SessionId,
    data: &str,
    expires_at: i64,
    version: i64,
) -> Result<Session> {
    let data: Map<String, Value> =
        serde_json::from_str(&respell_long_integers(data)).map_err(|e| Error::decode(id, e))?;
    let version = u64::try_from(version).map_err(|e| Error::decode(id, e))?;
    if version == 0 {
        return Err(Error::decode(id, "the stored version is 0"));
    }
    Ok(Session::from_parts(data, expires_at, version))
}

/// The row decoder, for the fuzz target in `fuzz/` (built with `--cfg fuzzing` only).
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn __fuzz_decode(data: &str, expires_at: i64, version: i64) -> Result<Session> {
    let id = SessionId::new("fuzzed").expect("a valid id");
    decode_parts(&id, data, expires_at, version)
}

/// `jsonb` prints every number in plain decimal notation, so a float such as `1e300` comes
/// back as a 301-digit integer, which `serde_json` reads less precisely than the exponent form
/// it wrote (and can even overflow to "number out of range" near `f64::MAX`). This rewrites
/// each integer token that does not fit `i64`/`u64` (so it would become a float anyway) and
/// ends in zeros into `<digits>e<zeros>`, which `serde_json` parses exactly as it parses its
/// own output. Strings are skipped; nothing else changes.
pub(super) fn respell_long_integers(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    let mut in_string = false;
    while let Some(&b) = bytes.get(i) {
        if in_string {
            match b {
                b'\\' => i += 2,
                b'"' => {
                    in_string = false;
                    i += 1;
                }
                _ => i += 1,
            }
        } else if b == b'"' {
            in_string = true;
            i += 1;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while bytes
                .get(i)
                .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
            {
                i += 1;
            }
            if let Some(respelled) = text.get(start..i).and_then(respell) {
                let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(text.get(copied..start).unwrap_or_default());
                out.push_str(&respelled);
                copied = i;
            }
        } else {
            i += 1;
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(text.get(copied..).unwrap_or_default());
            Cow::Owned(out)
        }
    }
}

/// `<digits>e<zeros>` for an integer token too large for `i64`/`u64` that ends in zeros.
fn respell(token: &str) -> Option<String> {
    let (sign, digits) = match token.strip_prefix('-') {
        Some(digits) => ("-", digits),
        None => ("", token),
    };
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || token.parse::<i64>().is_ok()
        || token.parse::<u64>().is_ok()
    {
        return None;
    }
    let significant = digits.trim_end_matches('0');
    let zeros = digits.len() - significant.len();
    if zeros == 0 || significant.is_empty() {
        return None;
    }
    Some(format!("{sign}{significant}e{zeros}"))
}

/// The id of a scanned row (its sixth column, after `get`'s five); one that is no valid
/// session id is a decode error naming what it holds.
pub(super) fn scanned_key(row: &PgRow) -> Result<String> {
    row.try_get(5).map_err(|e| Error::backend("scan", None, e))
}
