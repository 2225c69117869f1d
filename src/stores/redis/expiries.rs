//! Sessions that expire on their own, reported as events: Redis removes an expired key by
//! itself (no `delete_expired` sees it), and tells subscribers when its keyspace
//! notifications are enabled.

use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;

use crate::error::{Error, Result};
use crate::events::{EndCause, EventKind, EventSink, SessionEvent};
use crate::session::SessionId;

/// Reports each session of the store under `key_prefix` at `url` that Redis expires by
/// itself to `sink`, as [`Ended(Expired)`](EndCause::Expired) (with its shortened id; the
/// owner is gone with the value). For the rest of a session's life, wrap the store in
/// [`Events`](crate::wrappers::events::Events).
///
/// Needs the server's keyspace notifications for expired keys (`notify-keyspace-events`
/// with `E` and `x`, or `A`; `CONFIG SET notify-keyspace-events Ex`): this reads the setting
/// and refuses with [`Error::Config`] when it is off, rather than changing a server's
/// configuration behind its operator's back (a server that hides `CONFIG`, as managed ones
/// do, is trusted). A single server only: a cluster's nodes notify their own subscribers.
///
/// Redis' notifications are fire-and-forget: one sent while the watcher is reconnecting is
/// lost, and a rotated id whose grace ends is reported too (the key name cannot tell it
/// from a session once its value is gone). The returned task reconnects (every second) until
/// it is aborted.
pub async fn watch_expiries(
    url: &str,
    key_prefix: &str,
    sink: EventSink,
) -> Result<tokio::task::JoinHandle<()>> {
    let client = redis::Client::open(url).map_err(|_| Error::config("not a Redis URL"))?;
    let unavailable = |err: redis::RedisError| Error::Unavailable {
        operation: "watch_expiries",
        id: None,
        source: Box::new(err),
    };
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| Error::config("Redis did not answer within 5 s"))?
    .map_err(unavailable)?;
    let setting: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut conn)
        .await;
    if let Ok(setting) = setting
        && let Some(flags) = setting.get(1)
        && !notifies_expiries(flags)
    {
        return Err(Error::config(format!(
            "the server does not notify expired keys (notify-keyspace-events is {flags:?}; \
             it needs E and x, for example `CONFIG SET notify-keyspace-events Ex`)"
        )));
    }
    let db = client.get_connection_info().redis_settings().db();
    let channel = format!("__keyevent@{db}__:expired");
    let mut stream = subscribe(&client, &channel).await.map_err(unavailable)?;
    let prefix = key_prefix.to_owned();
    Ok(tokio::spawn(async move {
        loop {
            while let Some(message) =
                std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await
            {
                let Ok(key) = message.get_payload::<String>() else {
                    continue;
                };
                if let Some(id) = expired_session(&key, &prefix) {
                    let kind = EventKind::Ended(EndCause::Expired);
                    sink.send(SessionEvent::new(kind, Some(&id), None, 1));
                }
            }
            // The connection dropped: subscribe again.
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(again) = subscribe(&client, &channel).await {
                    stream = again;
                    break;
                }
            }
        }
    }))
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSubStream> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub.into_on_message())
}

/// Whether `notify-keyspace-events` flags include expired-key events.
fn notifies_expiries(flags: &str) -> bool {
    flags.contains('E') && (flags.contains('x') || flags.contains('A'))
}

/// The session an expired key was, if it is one of this store's sessions (not an owner
/// index key, which holds `:` and `{`).
fn expired_session(key: &str, prefix: &str) -> Option<SessionId> {
    SessionId::new(key.strip_prefix(prefix)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_events_need_e_and_x() {
        assert!(notifies_expiries("Ex"));
        assert!(notifies_expiries("xE"));
        assert!(notifies_expiries("AE"));
        assert!(notifies_expiries("KEA"));
        assert!(!notifies_expiries(""));
        assert!(!notifies_expiries("Kx"));
        assert!(!notifies_expiries("E"));
        assert!(!notifies_expiries("Eg$"));
    }

    #[test]
    fn only_this_stores_sessions_are_reported() {
        let id = SessionId::generate();
        let key = format!("app:{}", id.as_str());
        assert_eq!(expired_session(&key, "app:"), Some(id.clone()));
        assert_eq!(expired_session(&key, "other:"), None);
        assert_eq!(expired_session("app:owner:{6164612e}", "app:"), None);
        assert_eq!(expired_session("app:", "app:"), None);
    }
}
