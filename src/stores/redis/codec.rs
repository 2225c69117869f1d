//! A session as the store keeps it in one Redis string:
//! `<version>:<expires_at_ms>:[@<absolute_ms>:][><length>:<moved_to>][~<owner length>:<owner>]<data JSON>`,
//! and its parts.

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::session::{Owner, Session, SessionId};

use super::error::FormatError;

/// The longest stored version the scripts read, in digits. Lua numbers are doubles: up to 15
/// digits (below 2^53) `version + 1` is exact and `%d` formats it; a longer version is treated
/// as unreadable, like a value of the wrong shape. [`decode_value`] agrees.
pub(super) const MAX_VERSION_DIGITS: usize = 15;

/// The head of a stored value: everything but the data.
pub(super) struct Head<'a> {
    pub(super) version: u64,
    pub(super) expires_at: i64,
    /// The absolute expiry (`@<ms>:`), if the value has one.
    pub(super) absolute: Option<i64>,
    /// The id this rotated id moved to (`><length>:<id>`), if it is one (not yet checked to
    /// be a [`SessionId`]).
    pub(super) moved_to: Option<&'a [u8]>,
    /// The owner's bytes, if the value names one (not yet checked to be an [`Owner`]).
    pub(super) owner: Option<&'a [u8]>,
    /// Where the owner field (or, without one, the data JSON) starts.
    pub(super) owner_at: usize,
    /// Where the data JSON starts.
    pub(super) data_at: usize,
}

/// How many bytes of a value always hold its whole head: a version of at most 15 digits, an
/// expiry of at most 20, an absolute expiry field of at most `@` and 15 digits, a moved-to
/// field of at most `>128:` and 128 bytes and an owner field of at most `~128:` and 128
/// bytes, with the separators, are 303 bytes.
pub(super) const HEAD_BYTES: usize = 512;

/// The most digits of a stored absolute expiry (as of a version: exact in Lua's doubles). A
/// later deadline (past the year 33,000) is stored as none: see [`stored_absolute`].
pub(super) const MAX_ABSOLUTE_DIGITS: usize = 15;

/// The most digits of the length of an owner or moved-to field.
const MAX_LENGTH_DIGITS: usize = 3;

/// A length-prefixed field `<mark><length>:<bytes>` at `at`: the bytes and where the field
/// ends. `None` if it is malformed (the length of 1 to 3 digits, at least 1, the bytes all
/// there).
fn length_field(raw: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let field = raw.get(at + 1..)?;
    let colon = field
        .iter()
        .take(MAX_LENGTH_DIGITS + 1)
        .position(|&b| b == b':')?;
    let len = usize::try_from(parse_digits(&field[..colon])?).ok()?;
    if len == 0 {
        return None;
    }
    let start = at + 1 + colon + 1;
    let end = start.checked_add(len)?;
    Some((raw.get(start..end)?, end))
}

/// Parses the head of a stored value, `<version>:<expires_at_ms>:`, then the optional fields
/// in this order: the absolute expiry `@<ms>:`, the id a rotated id moved to
/// `><length>:<id>` and the owner `~<length>:<owner>` (data JSON always starts with `{`, so
/// a value without a field, as every value before it existed, reads as one without it).
/// `raw` may be cut anywhere after the head. `None` if it does not have this shape. The
/// scripts' `parse_head` ([`HEAD_FN`](super::scripts::HEAD_FN)) reads it the same way.
pub(super) fn decode_head(raw: &[u8]) -> Option<Head<'_>> {
    let first = raw.iter().position(|&b| b == b':')?;
    let version = &raw[..first];
    if version.len() > MAX_VERSION_DIGITS {
        return None;
    }
    let version = parse_digits(version)?;
    let rest = &raw[first + 1..];
    let second = rest.iter().position(|&b| b == b':')?;
    let expires_at = i64::try_from(parse_digits(&rest[..second])?).ok()?;
    let mut data_at = first + 1 + second + 1;
    let mut absolute = None;
    if raw.get(data_at) == Some(&b'@') {
        let field = &raw[data_at + 1..];
        let colon = field
            .iter()
            .take(MAX_ABSOLUTE_DIGITS + 1)
            .position(|&b| b == b':')?;
        absolute = Some(i64::try_from(parse_digits(&field[..colon])?).ok()?);
        data_at += 1 + colon + 1;
    }
    let mut moved_to = None;
    if raw.get(data_at) == Some(&b'>') {
        let (id, end) = length_field(raw, data_at)?;
        moved_to = Some(id);
        data_at = end;
    }
    let owner_at = data_at;
    let mut owner = None;
    if raw.get(data_at) == Some(&b'~') {
        let (name, end) = length_field(raw, data_at)?;
        owner = Some(name);
        data_at = end;
    }
    Some(Head {
        version,
        expires_at,
        absolute,
        moved_to,
        owner,
        owner_at,
        data_at,
    })
}

/// How many bytes of a value always show whether it is a rotated id's: the version, the
/// expiry and the absolute expiry with their separators are at most 54 bytes, then `>`.
pub(super) const ROTATED_MARK_BYTES: usize = 64;

/// Whether a value (or its first [`ROTATED_MARK_BYTES`]) is a rotated id's: the field after
/// the expiry and the absolute expiry, if any, is `>` (what `len` reads of each key). A
/// value of another shape is not.
pub(super) fn marks_rotated(raw: &[u8]) -> bool {
    let mut at = 0;
    for _ in 0..2 {
        match raw
            .get(at..)
            .and_then(|rest| rest.iter().position(|&b| b == b':'))
        {
            Some(colon) => at += colon + 1,
            None => return false,
        }
    }
    if raw.get(at) == Some(&b'@') {
        match raw[at..].iter().position(|&b| b == b':') {
            Some(colon) => at += colon + 1,
            None => return false,
        }
    }
    raw.get(at) == Some(&b'>')
}

/// The owner named by a value's head, checked against [`Owner`]'s rules.
fn decode_owner(id: &SessionId, owner: Option<&[u8]>) -> Result<Option<Owner>> {
    let Some(owner) = owner else {
        return Ok(None);
    };
    let text = std::str::from_utf8(owner).map_err(|err| Error::decode(id, err))?;
    Owner::new(text)
        .map(Some)
        .map_err(|err| Error::decode(id, err))
}

/// Parses a stored value:
/// `<version>:<expires_at_ms>:[@<absolute>:][><n>:<moved_to>][~<n>:<owner>]<data JSON>`.
#[cfg(any(test, fuzzing))]
pub(super) fn decode_value(id: &SessionId, raw: &[u8]) -> Result<Session> {
    decode_stored(id, raw).map(|(session, _)| session)
}

/// [`decode_value`], and the id the value moved to if it is a rotated id's.
pub(super) fn decode_stored(id: &SessionId, raw: &[u8]) -> Result<(Session, Option<SessionId>)> {
    let Some(head) = decode_head(raw) else {
        return Err(Error::decode(
            id,
            FormatError(
                "the stored value is not \
                 `<version>:<expires_at>:[@<absolute>:][><n>:<id>][~<n>:<owner>]<json>`",
            ),
        ));
    };
    let data: Map<String, Json> =
        serde_json::from_slice(&raw[head.data_at..]).map_err(|err| Error::decode(id, err))?;
    let owner = decode_owner(id, head.owner)?;
    let moved_to = match head.moved_to {
        None => None,
        Some(moved) => {
            let text = std::str::from_utf8(moved).map_err(|err| Error::decode(id, err))?;
            Some(SessionId::new(text).map_err(|err| Error::decode(id, err))?)
        }
    };
    let session = Session::from_parts(data, head.expires_at, head.version)
        .with_owner(owner)
        .with_absolute_expiry_millis(head.absolute)
        .with_rotated(moved_to.is_some());
    Ok((session, moved_to))
}

/// The absolute expiry a write stores for `session`: its own, unless it is too far away to
/// be written in [`MAX_ABSOLUTE_DIGITS`] digits (then none: no write lives that long anyway).
pub(super) fn stored_absolute(session: &Session) -> Option<i64> {
    session
        .absolute_expiry_millis()
        .filter(|&at| at < 10_i64.pow(MAX_ABSOLUTE_DIGITS as u32))
}

/// The absolute expiry's field in a stored value, `@<ms>:` (empty for none). Only a deadline
/// in the future is ever stored (a write past it deletes the session), so it is never negative.
pub(super) fn absolute_field(absolute: Option<i64>) -> Vec<u8> {
    match absolute {
        Some(at) if at >= 0 => format!("@{at}:").into_bytes(),
        _ => Vec::new(),
    }
}

/// The value decoder, for the fuzz target in `fuzz/` (built with `--cfg fuzzing` only).
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn __fuzz_decode(raw: &[u8]) -> Result<Session> {
    let id = SessionId::new("fuzzed").expect("a valid id");
    decode_value(&id, raw)
}

pub(super) fn parse_digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

pub(super) fn encode_value(version: u64, expires_at: i64, data: &[u8]) -> Vec<u8> {
    let mut value = format!("{version}:{expires_at}:").into_bytes();
    value.extend_from_slice(data);
    value
}

/// The owner's field in a stored value: `~<length in bytes>:<owner>`, between the expiry and
/// the data. Prefix-free (the length comes first), so a value's field equals this one
/// exactly when its owner does.
pub(super) fn owner_field(owner: &Owner) -> Vec<u8> {
    owner_field_of(owner.as_str().as_bytes())
}

/// [`owner_field`] of an owner's bytes as a stored value's head gives them.
pub(super) fn owner_field_of(owner: &[u8]) -> Vec<u8> {
    let mut field = format!("~{}:", owner.len()).into_bytes();
    field.extend_from_slice(owner);
    field
}

/// The data as the write scripts store it after the expiry: the data JSON, behind the
/// owner's field when there is an owner. A session without an owner is stored exactly as
/// before owners existed.
pub(super) fn payload(session: &Session, data: Vec<u8>) -> Vec<u8> {
    match session.owner() {
        None => data,
        Some(owner) => {
            let mut payload = owner_field(owner);
            payload.extend_from_slice(&data);
            payload
        }
    }
}

/// Lowercase hex of `bytes`: an owner in its index key, where any byte (`{`, `}`, `:`) must
/// be safe.
pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}
