//! The crate's one error type.
//!
//! Every failure a store can report is an [`Error`]. Each variant says what went wrong and,
//! where there is one, which session (as an [`IdHint`]: a shortened id, so that a full session
//! id, which is a credential, never reaches a log through an error message). Backend errors keep
//! their cause as [`std::error::Error::source`], so a caller can still downcast to the driver's
//! own error type. [`Error::is_transient`] tells a retry layer whether trying again may help.

use std::fmt;

use crate::session::SessionId;

/// A boxed error from a backend driver, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result<T, session_stores::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A shortened session id for error messages and logs.
///
/// Session ids are bearer credentials, so errors never carry them whole: an `IdHint` keeps at
/// most the first 8 characters, followed by `…` when the id was longer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdHint(String);

impl IdHint {
    /// How many characters of the id a hint keeps.
    pub const KEEP: usize = 8;

    /// The hint as text, for example `"Zx81_aB9…"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_raw(raw: &str) -> Self {
        let mut hint: String = raw.chars().take(Self::KEEP).collect();
        if raw.chars().count() > Self::KEEP {
            hint.push('…');
        }
        IdHint(hint)
    }
}

impl From<&SessionId> for IdHint {
    fn from(id: &SessionId) -> Self {
        IdHint::from_raw(id.as_str())
    }
}

impl fmt::Display for IdHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Why a session id was refused. See [`SessionId::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidIdReason {
    /// The id is the empty string.
    Empty,
    /// The id is longer than [`SessionId::MAX_LEN`] bytes.
    TooLong,
    /// The id is exactly `.` or `..`.
    DotSegment,
    /// The id contains a character outside the allowed set (ASCII letters, digits and
    /// `-` `_` `.` `~` `+` `=`); this covers `/`, `\`, NUL, control characters, whitespace,
    /// non-ASCII text and glob metacharacters such as `*`, `?` and `[`.
    ForbiddenChar,
}

impl fmt::Display for InvalidIdReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidIdReason::Empty => "it is empty",
            InvalidIdReason::TooLong => "it is longer than the maximum length",
            InvalidIdReason::DotSegment => "it is `.` or `..`",
            InvalidIdReason::ForbiddenChar => "it contains a character outside [A-Za-z0-9-_.~+=]",
        })
    }
}

/// A JSON encode or decode failure, with what went wrong and where, but none of the data.
///
/// `serde_json`'s own messages quote the offending value (`invalid type: string "…"`), which
/// for a session may be a secret. Stores keep this summary as the source of
/// [`Error::Decode`] and [`Error::Encode`] instead, so error chains and logs never carry
/// session data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    /// What kind of failure: `"syntax"`, `"data"` (well-formed JSON of the wrong shape),
    /// `"eof"` (truncated) or `"io"`.
    pub category: &'static str,
    /// The 1-based line of the failure (0 when it has no position).
    pub line: usize,
    /// The 1-based column of the failure (0 when it has no position).
    pub column: usize,
}

impl From<&serde_json::Error> for JsonError {
    fn from(err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        JsonError {
            category: match err.classify() {
                Category::Io => "io",
                Category::Syntax => "syntax",
                Category::Data => "data",
                Category::Eof => "eof",
            },
            line: err.line(),
            column: err.column(),
        }
    }
}

impl From<serde_json::Error> for JsonError {
    fn from(err: serde_json::Error) -> Self {
        JsonError::from(&err)
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.category {
            "syntax" => "not valid JSON",
            "data" => "JSON of the wrong shape or type",
            "eof" => "truncated JSON",
            _ => "unreadable JSON",
        };
        if self.line == 0 {
            f.write_str(what)
        } else {
            write!(f, "{what} at line {} column {}", self.line, self.column)
        }
    }
}

impl std::error::Error for JsonError {}

/// Replaces a `serde_json::Error` source by its data-free [`JsonError`] summary.
fn redact_json(source: BoxError) -> BoxError {
    match source.downcast::<serde_json::Error>() {
        Ok(json) => Box::new(JsonError::from(*json)),
        Err(other) => other,
    }
}

/// What kind of failure an [`Error`] is, for matching without caring about its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A session id was refused. See [`Error::InvalidId`].
    InvalidId,
    /// A compare-and-set found another version. See [`Error::Conflict`].
    Conflict,
    /// The session could not be encoded. See [`Error::Encode`].
    Encode,
    /// A stored session could not be decoded. See [`Error::Decode`].
    Decode,
    /// The session is over the store's size limit. See [`Error::TooLarge`].
    TooLarge,
    /// The backend could not be reached. See [`Error::Unavailable`].
    Unavailable,
    /// The backend did not answer in time. See [`Error::Timeout`].
    Timeout,
    /// The backend failed. See [`Error::Backend`].
    Backend,
    /// The store was configured wrongly. See [`Error::Config`].
    Config,
    /// An owner was refused. See [`Error::InvalidOwner`].
    InvalidOwner,
    /// The store does not keep an optional part of the contract. See [`Error::Unsupported`].
    Unsupported,
}

/// An error from a session store.
///
/// The enum is `#[non_exhaustive]`: new kinds of failure may be added in minor releases.
/// Match on [`Error::kind`] when only the kind matters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A session id was refused before any backend saw it.
    #[error("invalid session id: {reason}")]
    InvalidId {
        /// Why the id was refused.
        reason: InvalidIdReason,
    },

    /// [`set_if_version`](crate::SessionStore::set_if_version) found that the stored version
    /// is not the expected one (another writer got there first, or the session is gone).
    #[error("session {id}: version conflict (expected version {expected})")]
    Conflict {
        /// The session.
        id: IdHint,
        /// The version the caller expected to find.
        expected: u64,
    },

    /// A write through an id that [`rotate`](crate::SessionStore::rotate) moved its session
    /// away from: during its grace window the old id is read-only, so `set` and
    /// `set_if_version` through it change nothing. Its [kind](Error::kind) is
    /// [`ErrorKind::Conflict`]: re-read the session (the caller's request should carry the
    /// new id by now) instead of retrying.
    #[error("session {id}: the id was rotated; writes through it are refused")]
    Rotated {
        /// The old (rotated) id.
        id: IdHint,
    },

    /// The session could not be encoded for storage.
    #[error("session {id}: could not encode the session")]
    Encode {
        /// The session.
        id: IdHint,
        /// The encoder's error.
        #[source]
        source: BoxError,
    },

    /// What the backend holds for this session is not a valid stored session (corrupt,
    /// truncated, foreign or of the wrong shape). The stored data is left as it is; a later
    /// `set` replaces it.
    #[error("session {id}: stored data could not be decoded")]
    Decode {
        /// The session.
        id: IdHint,
        /// The decoder's error.
        #[source]
        source: BoxError,
    },

    /// The encoded session is larger than the store accepts.
    #[error("session {id}: encoded size {size} bytes is over the store's limit of {limit} bytes")]
    TooLarge {
        /// The session.
        id: IdHint,
        /// The encoded size in bytes.
        size: usize,
        /// The store's limit in bytes.
        limit: usize,
    },

    /// The backend could not be reached (connection refused or reset, server restarting).
    /// Transient: the same call may succeed later.
    #[error("{operation}{}: backend unavailable", IdSuffix(.id))]
    Unavailable {
        /// The store operation, such as `"get"`.
        operation: &'static str,
        /// The session, when the operation had one.
        id: Option<IdHint>,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// The backend did not answer in time. Transient.
    #[error("{operation}{}: timed out waiting for {what}", IdSuffix(.id))]
    Timeout {
        /// The store operation, such as `"get"`.
        operation: &'static str,
        /// The session, when the operation had one.
        id: Option<IdHint>,
        /// What timed out, such as `"a pooled connection"` or `"the server's reply"`.
        what: &'static str,
        /// The driver's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The backend failed in a way that retrying is not expected to fix.
    #[error("{operation}{}: backend error", IdSuffix(.id))]
    Backend {
        /// The store operation, such as `"set"`.
        operation: &'static str,
        /// The session, when the operation had one.
        id: Option<IdHint>,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// The store's configuration is invalid (a bad table name, an unusable URL, ...).
    #[error("invalid store configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// A session owner was refused before any backend saw it. See
    /// [`Owner::new`](crate::Owner::new).
    #[error("invalid session owner: {reason}")]
    InvalidOwner {
        /// Why the owner was refused.
        reason: &'static str,
    },

    /// The store does not keep this optional part of the contract (its
    /// [`capabilities`](crate::SessionStore::capabilities) do not declare it).
    #[error("{operation}: this store does not support it")]
    Unsupported {
        /// The store operation, such as `"sessions_of"`.
        operation: &'static str,
    },
}

struct IdSuffix<'a>(&'a Option<IdHint>);

impl fmt::Display for IdSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, " of session {id}"),
            None => Ok(()),
        }
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidId { .. } => ErrorKind::InvalidId,
            Error::Conflict { .. } | Error::Rotated { .. } => ErrorKind::Conflict,
            Error::Encode { .. } => ErrorKind::Encode,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::Config { .. } => ErrorKind::Config,
            Error::InvalidOwner { .. } => ErrorKind::InvalidOwner,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
        }
    }

    /// Whether retrying the same call later may succeed: true for [`Error::Unavailable`] and
    /// [`Error::Timeout`], false for everything else. A [`Error::Conflict`] is not transient:
    /// the caller must re-read the session and merge before it tries again.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }

    /// Whether this is a version conflict from
    /// [`set_if_version`](crate::SessionStore::set_if_version), or a write through a
    /// [rotated](Error::Rotated) id.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::Rotated { .. })
    }

    /// The shortened id of the session the error is about, if any.
    pub fn session(&self) -> Option<&IdHint> {
        match self {
            Error::Conflict { id, .. }
            | Error::Rotated { id }
            | Error::Encode { id, .. }
            | Error::Decode { id, .. }
            | Error::TooLarge { id, .. } => Some(id),
            Error::Unavailable { id, .. }
            | Error::Timeout { id, .. }
            | Error::Backend { id, .. } => id.as_ref(),
            Error::InvalidId { .. }
            | Error::Config { .. }
            | Error::InvalidOwner { .. }
            | Error::Unsupported { .. } => None,
        }
    }

    /// The same error about session `id` instead: for a wrapper that stores each session
    /// under another id (such as
    /// [`HashedIds`](crate::wrappers::hashed_ids::HashedIds)), so that its callers' errors
    /// name their own session. An error about no session stays so.
    pub fn for_session(mut self, id: &SessionId) -> Self {
        match &mut self {
            Error::Conflict { id: hint, .. }
            | Error::Rotated { id: hint }
            | Error::Encode { id: hint, .. }
            | Error::Decode { id: hint, .. }
            | Error::TooLarge { id: hint, .. } => *hint = id.into(),
            Error::Unavailable { id: hint, .. }
            | Error::Timeout { id: hint, .. }
            | Error::Backend { id: hint, .. } => {
                if hint.is_some() {
                    *hint = Some(id.into());
                }
            }
            Error::InvalidId { .. }
            | Error::Config { .. }
            | Error::InvalidOwner { .. }
            | Error::Unsupported { .. } => {}
        }
        self
    }

    /// A version conflict on `id`.
    pub fn conflict(id: &SessionId, expected: u64) -> Self {
        Error::Conflict {
            id: id.into(),
            expected,
        }
    }

    /// A write through `id`, which was rotated (see [`Error::Rotated`]).
    pub fn rotated(id: &SessionId) -> Self {
        Error::Rotated { id: id.into() }
    }

    /// A decode error for `id`, keeping `source` (a `serde_json::Error` is kept as its
    /// data-free [`JsonError`] summary).
    pub fn decode(id: &SessionId, source: impl Into<BoxError>) -> Self {
        Error::Decode {
            id: id.into(),
            source: redact_json(source.into()),
        }
    }

    /// An encode error for `id`, keeping `source` (a `serde_json::Error` is kept as its
    /// data-free [`JsonError`] summary).
    pub fn encode(id: &SessionId, source: impl Into<BoxError>) -> Self {
        Error::Encode {
            id: id.into(),
            source: redact_json(source.into()),
        }
    }

    /// A transient "backend unavailable" error for `operation` (on `id`, if any).
    pub fn unavailable(
        operation: &'static str,
        id: Option<&SessionId>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Unavailable {
            operation,
            id: id.map(IdHint::from),
            source: source.into(),
        }
    }

    /// A non-transient backend error for `operation` (on `id`, if any).
    pub fn backend(
        operation: &'static str,
        id: Option<&SessionId>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            operation,
            id: id.map(IdHint::from),
            source: source.into(),
        }
    }

    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
            source: None,
        }
    }
}

/// `err` with its causes, one line: `error: cause: cause`.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn for_session_renames_the_session_and_keeps_the_rest() {
        let stored = SessionId::new("0123456789abcdef").unwrap();
        let caller = SessionId::new("callers-own-id").unwrap();
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let cases = [
            Error::conflict(&stored, 7),
            Error::decode(&stored, "bad"),
            Error::encode(&stored, "bad"),
            Error::TooLarge {
                id: (&stored).into(),
                size: 2,
                limit: 1,
            },
            Error::unavailable("get", Some(&stored), io()),
            Error::backend("set", Some(&stored), io()),
            Error::Timeout {
                operation: "get",
                id: Some((&stored).into()),
                what: "x",
                source: None,
            },
        ];
        for err in cases {
            let kind = err.kind();
            let renamed = err.for_session(&caller);
            assert_eq!(renamed.kind(), kind);
            assert_eq!(renamed.session(), Some(&caller.hint()), "{renamed}");
        }
        let no_session = Error::unavailable("len", None, io()).for_session(&caller);
        assert_eq!(no_session.session(), None);
        let config = Error::config("x").for_session(&caller);
        assert_eq!(config.kind(), ErrorKind::Config);
        assert!(matches!(
            Error::conflict(&stored, 7).for_session(&caller),
            Error::Conflict { expected: 7, .. }
        ));
    }

    #[test]
    fn hint_truncates_long_ids() {
        let id = SessionId::new("abcdefghijklmnop").unwrap();
        assert_eq!(IdHint::from(&id).as_str(), "abcdefgh…");
        let id = SessionId::new("short").unwrap();
        assert_eq!(IdHint::from(&id).as_str(), "short");
    }

    #[test]
    fn errors_never_show_a_whole_id_and_keep_their_source() {
        let id = SessionId::new("supersecretsessionid0123456789").unwrap();
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::unavailable("get", Some(&id), io);
        let text = err.to_string();
        assert!(!text.contains(id.as_str()), "{text}");
        assert!(text.contains("supersec…"), "{text}");
        assert!(err.is_transient());
        let source = err.source().expect("source kept");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("source is still the io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(!format!("{err:?}").contains(id.as_str()));
    }

    #[test]
    fn json_sources_never_carry_data() {
        let id = SessionId::new("abc").unwrap();
        let err = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
            "\"hunter2-secret\"",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("hunter2"),
            "serde_json quotes the data"
        );
        let err = Error::decode(&id, err);
        let mut chain = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            chain.push_str(&format!(" / {cause} / {cause:?}"));
            source = cause.source();
        }
        assert!(!chain.contains("hunter2"), "{chain}");
        let json = err.source().unwrap().downcast_ref::<JsonError>().unwrap();
        assert_eq!((json.category, json.line), ("data", 1));
        assert!(chain.contains("JSON of the wrong shape"), "{chain}");
    }

    #[test]
    fn kinds_and_transience() {
        let id = SessionId::new("abc").unwrap();
        assert_eq!(Error::conflict(&id, 3).kind(), ErrorKind::Conflict);
        assert!(Error::conflict(&id, 3).is_conflict());
        assert!(!Error::conflict(&id, 3).is_transient());
        assert!(!Error::decode(&id, "bad").is_transient());
        let timeout = Error::Timeout {
            operation: "get",
            id: None,
            what: "a pooled connection",
            source: None,
        };
        assert!(timeout.is_transient());
        assert_eq!(
            timeout.to_string(),
            "get: timed out waiting for a pooled connection"
        );
        assert_eq!(Error::conflict(&id, 3).session().unwrap().as_str(), "abc");
    }
}
