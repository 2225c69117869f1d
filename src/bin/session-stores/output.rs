//! What every command shares: failures as one line with an exit code, opening a store,
//! paging through it, and showing times.

use std::sync::Arc;

use session_stores::connect::redact;
use session_stores::{ScanCursor, Session, SessionId, SessionStore, connect, now_millis};

/// A failure: printed as one line, with the exit code.
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure {
            message: chain(&err),
            code: 1,
        }
    }
}

/// `err` and its causes, as one line: `error: cause: cause`.
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

pub(crate) fn failure(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
    }
}

/// The store at `url`, or a failure naming the URL (redacted).
pub(crate) async fn open(url: &str) -> Result<Arc<dyn SessionStore>, Failure> {
    let store = connect(url)
        .await
        .map_err(|err| failure(format!("{}: {}", redact(url), Failure::from(err).message)))?;
    Ok(Arc::from(store))
}

/// When `millis` (since the epoch) comes: `in 1h02m03s`, or `expired`.
pub(crate) fn when(millis: i64) -> String {
    let left = millis - now_millis();
    if left <= 0 {
        return "expired".to_string();
    }
    let secs = left / 1000;
    format!("in {}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Scans the whole store in pages of 1,000, handing each page to `on_page`.
pub(crate) async fn each_page(
    store: &dyn SessionStore,
    mut on_page: impl AsyncFnMut(Vec<(SessionId, Session)>) -> Result<(), Failure>,
) -> Result<u64, Failure> {
    let mut cursor: Option<ScanCursor> = None;
    let mut undecodable = 0u64;
    loop {
        let page = store.scan(cursor.as_ref(), 1000).await?;
        undecodable += page.undecodable.len() as u64;
        on_page(page.sessions).await?;
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(undecodable),
        }
    }
}
