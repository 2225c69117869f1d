//! The file format (encoding and decoding a session file), reading a file without ever
//! blocking on a FIFO, and the names of session files, temporary files and owners' index
//! directories.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::session::{Owner, SessionId};

/// The extension of session files.
pub(super) const SUFFIX: &str = ".json";
/// Temporary files are `.tmp-XXXXXX.partial`: never a session file name.
pub(super) const TMP_PREFIX: &str = ".tmp-";
pub(super) const TMP_SUFFIX: &str = ".partial";

/// An upper bound on the buffer reserved up front when reading a file.
const READ_HINT_LIMIT: u64 = 16 << 20;

/// The id a directory entry's name stands for, if it is a session file name.
pub(super) fn id_of_file_name(name: &std::ffi::OsStr) -> Option<SessionId> {
    let stem = name.to_str()?.strip_suffix(SUFFIX)?;
    SessionId::new(stem).ok()
}

pub(super) fn is_temp_file_name(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.starts_with(TMP_PREFIX) && n.ends_with(TMP_SUFFIX))
}

/// The name of `owner`'s index directory: base64url without padding of its UTF-8 bytes.
/// An owner is at most [`Owner::MAX_LEN`] (128) bytes, so the name is at most 171 bytes of
/// `[A-Za-z0-9_-]`: a safe file name, never `.` or `..`, distinct for distinct owners (on a
/// case-sensitive file system, which the session files need anyway).
pub(super) fn owner_key(owner: &Owner) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = owner.as_str().as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // One input byte gives 2 characters, two give 3, three give 4.
        for i in 0..=chunk.len() {
            let index = ((n >> (18 - 6 * i)) & 0x3f) as usize;
            out.push(char::from(ALPHABET[index]));
        }
    }
    out
}

/// What a session file holds besides its expiry and version (which its first line holds).
#[derive(Clone, Copy)]
pub(super) struct Body<'a> {
    pub(super) data: &'a Map<String, Value>,
    pub(super) owner: Option<&'a Owner>,
    /// The absolute expiry, if any (milliseconds since the Unix epoch).
    pub(super) absolute_expiry: Option<i64>,
    /// Set only in the file of a rotated id: the id its session moved to.
    pub(super) moved_to: Option<&'a SessionId>,
}

impl<'a> Body<'a> {
    /// The body of a session that is not a rotated id.
    pub(super) fn session(
        data: &'a Map<String, Value>,
        owner: Option<&'a Owner>,
        absolute_expiry: Option<i64>,
    ) -> Self {
        Body {
            data,
            owner,
            absolute_expiry,
            moved_to: None,
        }
    }
}

/// The file format's body, for writing: everything but the expiry and the version, which
/// the first line holds. `owner`, `absolute_expiry` and `moved_to` are left out when there
/// is none, so a file without them is exactly what earlier versions wrote.
#[derive(Serialize)]
struct BodyRef<'a> {
    data: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    absolute_expiry: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    moved_to: Option<&'a str>,
}

/// The file format, for reading. A file without `owner` (as every version before owners
/// wrote) has none; one without `absolute_expiry` or `moved_to` (every version before
/// lifetimes) has no absolute expiry and is not a rotated id. `expires_at` and `version` are
/// read once [`decode`] has set them to the winning slot's, in a file that has slots.
#[derive(Deserialize)]
pub(super) struct Stored {
    pub(super) data: Map<String, Value>,
    pub(super) expires_at: i64,
    pub(super) version: u64,
    #[serde(default)]
    pub(super) owner: Option<Owner>,
    #[serde(default)]
    pub(super) absolute_expiry: Option<i64>,
    #[serde(default, deserialize_with = "moved_to")]
    pub(super) moved_to: Option<SessionId>,
}

/// `moved_to`: absent or null for none, else a valid session id.
fn moved_to<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<SessionId>, D::Error> {
    let id = Option::<String>::deserialize(deserializer)?;
    id.map(|id| {
        SessionId::new(id)
            .map_err(|_| serde::de::Error::custom("moved_to is not a valid session id"))
    })
    .transpose()
}

impl Stored {
    pub(super) fn is_expired_at(&self, now: i64) -> bool {
        self.expires_at <= now
    }

    /// The body of this file, as it would be written again.
    pub(super) fn body(&self) -> Body<'_> {
        Body {
            data: &self.data,
            owner: self.owner.as_ref(),
            absolute_expiry: self.absolute_expiry,
            moved_to: self.moved_to.as_ref(),
        }
    }

    /// The session this file holds, as `get` and `scan` return it (marked rotated for a
    /// rotated id's file).
    pub(super) fn into_session(self) -> crate::session::Session {
        crate::session::Session::from_parts(self.data, self.expires_at, self.version)
            .with_owner(self.owner)
            .with_absolute_expiry_millis(self.absolute_expiry)
            .with_rotated(self.moved_to.is_some())
    }

    /// Whether this is a live session of the owner whose index directory is `key`.
    pub(super) fn is_live_of(&self, key: &str, now: i64) -> bool {
        !self.is_expired_at(now) && self.owner.as_ref().is_some_and(|o| owner_key(o) == key)
    }
}

// The first line of a session file, `HEADER_LEN` bytes at fixed offsets:
//
// {"expires_at":       1767225600000,"version":                   3,"slots":["<A>","<B>"],
//
// `expires_at` and `version` are where serde (`Session`'s form) and earlier versions of
// this store read them, right-aligned in 20 columns (JSON allows the spaces). The two
// slots are where this version reads them: each is `seq-version-expires_at-crc`, the
// first three as 16 lowercase hex digits and `crc` the CRC-32C of the 50 bytes before it
// as 8. The whole slot with the highest `seq` wins. A change of only the expiry (and the
// version) rewrites this line in place: the losing slot gets the new values at `seq + 1`,
// the winning slot's bytes are written unchanged, so a write cut short anywhere (a crash,
// a reader racing it) leaves the winner whole and at worst a torn slot that fails its
// CRC. The rest of the file is the pretty-printed body without its opening brace.
const HEAD_OPEN: &[u8] = b"{\"expires_at\":";
const HEAD_VERSION: &[u8] = b",\"version\":";
const HEAD_SLOTS: &[u8] = b",\"slots\":[\"";
const HEAD_BETWEEN: &[u8] = b"\",\"";
const HEAD_CLOSE: &[u8] = b"\"],";
/// The columns of `expires_at` and `version`: the widest `i64` and `u64`.
const NUMBER_WIDTH: usize = 20;
const SLOT_LEN: usize = 59;
/// The bytes of a slot that its CRC covers.
const SLOT_SUMMED: usize = 50;
const EXPIRES_AT: usize = HEAD_OPEN.len();
const VERSION_AT: usize = EXPIRES_AT + NUMBER_WIDTH + HEAD_VERSION.len();
const SLOTS_AT: [usize; 2] = [
    VERSION_AT + NUMBER_WIDTH + HEAD_SLOTS.len(),
    VERSION_AT + NUMBER_WIDTH + HEAD_SLOTS.len() + SLOT_LEN + HEAD_BETWEEN.len(),
];
/// The length of a session file's first line (without its newline).
pub(super) const HEADER_LEN: usize = SLOTS_AT[1] + SLOT_LEN + HEAD_CLOSE.len();
/// What an empty slot holds: `seq` 0, which no write assigns.
const EMPTY_SLOT: &[u8; SLOT_LEN] = b"0000000000000000-0000000000000000-0000000000000000-00000000";

const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// A session file's first line.
pub(super) type Header = [u8; HEADER_LEN];

/// The first line of `bytes`, boxed (a header is 200 bytes), if `bytes` is that long.
pub(super) fn head_of(bytes: &[u8]) -> Option<Box<Header>> {
    bytes
        .get(..HEADER_LEN)
        .and_then(|head| Header::try_from(head).ok())
        .map(Box::new)
}

/// The expiry and version in one slot of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) seq: u64,
    pub(super) version: u64,
    pub(super) expires_at: i64,
}

pub(super) fn slot_text(slot: Slot) -> [u8; SLOT_LEN] {
    let summed = format!(
        "{:016x}-{:016x}-{:016x}",
        slot.seq, slot.version, slot.expires_at as u64
    );
    let text = format!("{summed}-{:08x}", CASTAGNOLI.checksum(summed.as_bytes()));
    let mut out = *EMPTY_SLOT;
    out.copy_from_slice(text.as_bytes());
    out
}

fn hex_field(text: &[u8]) -> Option<u64> {
    if !text
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(text).ok()?, 16).ok()
}

/// The slot in `text` if it is whole (its CRC matches) and was written (`seq` above 0).
fn parse_slot(text: &[u8]) -> Option<Slot> {
    let text = <&[u8; SLOT_LEN]>::try_from(text).ok()?;
    if [16, 33, 50].iter().any(|&i| text[i] != b'-') {
        return None;
    }
    if hex_field(&text[SLOT_SUMMED + 1..])? != u64::from(CASTAGNOLI.checksum(&text[..SLOT_SUMMED]))
    {
        return None;
    }
    let slot = Slot {
        seq: hex_field(&text[..16])?,
        version: hex_field(&text[17..33])?,
        expires_at: hex_field(&text[34..50])? as i64,
    };
    (slot.seq != 0).then_some(slot)
}

/// The index and content of the winning slot of `bytes`' first line, `Ok(None)` if
/// `bytes` does not start with a header (a file of an earlier version, or one edited by
/// hand), `Err` if it does but neither slot is whole.
pub(super) fn winner_of(bytes: &[u8]) -> std::result::Result<Option<(usize, Slot)>, ()> {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let literals = [
        (0, HEAD_OPEN),
        (EXPIRES_AT + NUMBER_WIDTH, HEAD_VERSION),
        (VERSION_AT + NUMBER_WIDTH, HEAD_SLOTS),
        (SLOTS_AT[0] + SLOT_LEN, HEAD_BETWEEN),
        (SLOTS_AT[1] + SLOT_LEN, HEAD_CLOSE),
    ];
    if literals
        .iter()
        .any(|&(at, literal)| &head[at..at + literal.len()] != literal)
    {
        return Ok(None);
    }
    let slots = SLOTS_AT.map(|at| parse_slot(&head[at..at + SLOT_LEN]));
    match slots {
        [Some(a), Some(b)] if b.seq > a.seq => Ok(Some((1, b))),
        [Some(a), _] => Ok(Some((0, a))),
        [None, Some(b)] => Ok(Some((1, b))),
        [None, None] => Err(()),
    }
}

/// Writes `expires_at` and `version` into their columns of `head`.
fn set_plain_fields(head: &mut [u8], expires_at: i64, version: u64) {
    let expires = format!("{expires_at:>NUMBER_WIDTH$}");
    let version = format!("{version:>NUMBER_WIDTH$}");
    head[EXPIRES_AT..EXPIRES_AT + NUMBER_WIDTH].copy_from_slice(expires.as_bytes());
    head[VERSION_AT..VERSION_AT + NUMBER_WIDTH].copy_from_slice(version.as_bytes());
}

/// `head` (a header whose winning slot is at `winner`) with a new winning slot in the
/// other place: `version` and `expires_at` at the next `seq`. The old winner's bytes are
/// kept as they are, so writing the result over `head` never makes it unreadable.
pub(super) fn next_header(
    head: &Header,
    (winner, slot): (usize, Slot),
    version: u64,
    expires_at: i64,
) -> Header {
    let mut next = *head;
    set_plain_fields(&mut next, expires_at, version);
    let at = SLOTS_AT[1 - winner];
    next[at..at + SLOT_LEN].copy_from_slice(&slot_text(Slot {
        seq: slot.seq.wrapping_add(1).max(1),
        version,
        expires_at,
    }));
    next
}

/// The body of a session file: its bytes after the header.
pub(super) fn encode_body(id: &SessionId, body: Body<'_>) -> Result<Vec<u8>> {
    crate::session::check_nesting(id, body.data)?;
    let mut body = serde_json::to_vec_pretty(&BodyRef {
        data: body.data,
        owner: body.owner.map(Owner::as_str),
        absolute_expiry: body.absolute_expiry,
        moved_to: body.moved_to.map(SessionId::as_str),
    })
    .map_err(|err| Error::encode(id, err))?;
    // A struct's pretty form opens with its brace, which the header stands in for.
    if body.first() != Some(&b'{') {
        return Err(Error::encode(id, "the session's body is not a JSON object"));
    }
    body.remove(0);
    body.push(b'\n');
    Ok(body)
}

pub(super) fn encode(
    id: &SessionId,
    body: Body<'_>,
    expires_at: i64,
    version: u64,
) -> Result<Vec<u8>> {
    let body = encode_body(id, body)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(HEAD_OPEN);
    bytes.extend_from_slice(&[b' '; NUMBER_WIDTH]);
    bytes.extend_from_slice(HEAD_VERSION);
    bytes.extend_from_slice(&[b' '; NUMBER_WIDTH]);
    bytes.extend_from_slice(HEAD_SLOTS);
    bytes.extend_from_slice(&slot_text(Slot {
        seq: 1,
        version,
        expires_at,
    }));
    bytes.extend_from_slice(HEAD_BETWEEN);
    bytes.extend_from_slice(EMPTY_SLOT);
    bytes.extend_from_slice(HEAD_CLOSE);
    set_plain_fields(&mut bytes, expires_at, version);
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Decodes a session file. In a file with a header, the winning slot's expiry and version
/// are what count: they are first written into the plain columns (in this copy), which a
/// write cut short may have left torn.
pub(super) fn decode(id: &SessionId, mut bytes: Vec<u8>) -> Result<Stored> {
    match winner_of(&bytes) {
        Ok(Some((_, slot))) => set_plain_fields(&mut bytes, slot.expires_at, slot.version),
        Ok(None) => {}
        Err(()) => {
            return Err(Error::decode(
                id,
                "neither expiry slot of the session file is whole",
            ));
        }
    }
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|err| Error::decode(id, err))?;
    if stored.version == 0 {
        return Err(Error::decode(
            id,
            "the stored version is 0, which no write assigns",
        ));
    }
    Ok(stored)
}

/// A file read from disk.
pub(super) enum Loaded {
    Missing,
    /// Something that is not a regular file sits under the name.
    NotAFile,
    Bytes(Vec<u8>),
}

/// Reads the file at `path`. Something other than a regular file (a directory, a FIFO, a
/// device) is [`Loaded::NotAFile`] and is never read: the type is checked before opening,
/// and where possible the open itself cannot block, so a FIFO put there between the check
/// and the open is caught by the check after it.
pub(super) fn read_file(path: &Path) -> io::Result<Loaded> {
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Ok(Loaded::NotAFile),
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(err) => return Err(err),
    }
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(err) => return Err(err),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Loaded::NotAFile);
    }
    let hint = usize::try_from(meta.len().min(READ_HINT_LIMIT)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(hint);
    file.read_to_end(&mut bytes)?;
    Ok(Loaded::Bytes(bytes))
}

/// Opens the file at `path` for an in-place rewrite of its header and reads the header:
/// `None` if there is no such file, or it is not a regular file (a symbolic link is not
/// followed), has another name too (a hard link: writing it in place would change the
/// other name's file, which a `rename` never did), or is shorter than a header. Opening
/// never blocks (as in [`read_file`]).
#[cfg(unix)]
pub(super) fn open_header(path: &Path) -> io::Result<Option<(fs::File, Header)>> {
    use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        // No file, a link (`ELOOP`), a directory, anything that cannot be opened for
        // writing: left to the whole-file write, which replaces the name or tells what
        // is wrong.
        Err(_) => return Ok(None),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Ok(None);
    }
    let mut head = [0; HEADER_LEN];
    match file.read_exact_at(&mut head, 0) {
        Ok(()) => Ok(Some((file, head))),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(err) => Err(err),
    }
}

pub(super) fn decode_loaded(id: &SessionId, loaded: Loaded) -> Option<Result<Stored>> {
    match loaded {
        Loaded::Missing => None,
        Loaded::NotAFile => Some(Err(Error::decode(
            id,
            "the session's path is not a regular file",
        ))),
        // An empty file is what some file systems leave of a write that a power loss cut
        // short (without `durable`): no session was ever readable there, so it is absent,
        // not a permanent decode error for that user. The next write replaces it.
        Loaded::Bytes(bytes) if bytes.is_empty() => None,
        Loaded::Bytes(bytes) => Some(decode(id, bytes)),
    }
}
