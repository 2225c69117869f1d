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

/// The file format, for writing. `owner` is left out when there is none, so a file without
/// an owner is exactly what versions before owners wrote.
#[derive(Serialize)]
struct StoredRef<'a> {
    data: &'a Map<String, Value>,
    expires_at: i64,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
}

/// The file format, for reading. A file without `owner` (as every version before owners
/// wrote) has none.
#[derive(Deserialize)]
pub(super) struct Stored {
    pub(super) data: Map<String, Value>,
    pub(super) expires_at: i64,
    pub(super) version: u64,
    #[serde(default)]
    pub(super) owner: Option<Owner>,
}

impl Stored {
    pub(super) fn is_expired_at(&self, now: i64) -> bool {
        self.expires_at <= now
    }

    /// Whether this is a live session of the owner whose index directory is `key`.
    pub(super) fn is_live_of(&self, key: &str, now: i64) -> bool {
        !self.is_expired_at(now) && self.owner.as_ref().is_some_and(|o| owner_key(o) == key)
    }
}

pub(super) fn encode(
    id: &SessionId,
    data: &Map<String, Value>,
    expires_at: i64,
    version: u64,
    owner: Option<&Owner>,
) -> Result<Vec<u8>> {
    crate::session::check_nesting(id, data)?;
    let mut bytes = serde_json::to_vec_pretty(&StoredRef {
        data,
        expires_at,
        version,
        owner: owner.map(Owner::as_str),
    })
    .map_err(|err| Error::encode(id, err))?;
    bytes.push(b'\n');
    Ok(bytes)
}

pub(super) fn decode(id: &SessionId, bytes: &[u8]) -> Result<Stored> {
    let stored: Stored = serde_json::from_slice(bytes).map_err(|err| Error::decode(id, err))?;
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

/// `O_NONBLOCK` where its value is known (std has no constant for it), so that opening a
/// FIFO never waits for a writer; on a regular file it changes nothing.
#[cfg(unix)]
const O_NONBLOCK: Option<i32> = if cfg!(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
)) {
    Some(0x0004)
} else if cfg!(all(
    any(target_os = "linux", target_os = "android"),
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv32",
        target_arch = "riscv64",
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64",
    ),
)) {
    Some(0o4000)
} else {
    None
};

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
    if let Some(flag) = O_NONBLOCK {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, flag);
    }
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
        Loaded::Bytes(bytes) => Some(decode(id, &bytes)),
    }
}
