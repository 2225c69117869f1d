//! A session as the store keeps it in one Redis string:
//! `<version>:<expires_at_ms>:[~<owner length>:<owner>]<data JSON>`, and its parts.

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
    /// The owner's bytes, if the value names one (not yet checked to be an [`Owner`]).
    pub(super) owner: Option<&'a [u8]>,
    /// Where the data JSON starts.
    pub(super) data_at: usize,
}

/// How many bytes of a value always hold its whole head: a version of at most 15 digits, an
/// expiry of at most 20 and an owner field of at most `~128:` and 128 bytes, with the
/// separators, are 170 bytes.
pub(super) const HEAD_BYTES: usize = 256;

/// Parses the head of a stored value, `<version>:<expires_at_ms>:` and the owner field
/// `~<length>:<owner>` if there is one (data JSON always starts with `{`, so a value
/// without the field, as every value before owners, reads as one without an owner). `raw`
/// may be cut anywhere after the head. `None` if it does not have this shape.
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
    let mut owner = None;
    if raw.get(data_at) == Some(&b'~') {
        let field = &raw[data_at + 1..];
        let colon = field.iter().take(4).position(|&b| b == b':')?;
        let len = usize::try_from(parse_digits(&field[..colon])?).ok()?;
        let start = data_at + 1 + colon + 1;
        owner = Some(raw.get(start..start.checked_add(len)?)?);
        data_at = start + len;
    }
    Some(Head {
        version,
        expires_at,
        owner,
        data_at,
    })
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

/// Parses a stored value: `<version>:<expires_at_ms>:[~<owner length>:<owner>]<data JSON>`.
pub(super) fn decode_value(id: &SessionId, raw: &[u8]) -> Result<Session> {
    let Some(head) = decode_head(raw) else {
        return Err(Error::decode(
            id,
            FormatError("the stored value is not `<version>:<expires_at>:[~<n>:<owner>]<json>`"),
        ));
    };
    let data: Map<String, Json> =
        serde_json::from_slice(&raw[head.data_at..]).map_err(|err| Error::decode(id, err))?;
    let owner = decode_owner(id, head.owner)?;
    Ok(Session::from_parts(data, head.expires_at, head.version).with_owner(owner))
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
