//! Sessions that expire on their own, reported as events: Redis removes an expired key by
//! itself (no `delete_expired` sees it), and tells subscribers when its keyspace
//! notifications are enabled.

use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;

use crate::error::{Error, Result};
use crate::events::{EndCause, EventKind, EventSink, SessionEvent};
use crate::session::SessionId;

use super::error::redis_error;

/// The operation errors name.
const OPERATION: &str = "watch_expiries";

/// How long each step of (re)subscribing may take: connecting, reading the setting,
/// subscribing, and a liveness `PING`.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// After this long without a message the watcher pings the server on its connection, and
/// replaces a connection that does not answer within [`STEP_TIMEOUT`]: a connection left
/// open but dead (a half-open TCP connection, a server gone quiet) would otherwise lose
/// every later event without a sign.
const PING_WHEN_QUIET: Duration = Duration::from_secs(10);

/// How long the watcher waits between two attempts to subscribe again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

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
/// Every wait is bounded: connecting, reading the setting and subscribing each get 5 s, and
/// a server that does not answer is [`Error::Timeout`] (one that refuses the connection,
/// [`Error::Unavailable`]). The returned task runs until it is aborted. When its connection
/// closes, or stays silent for 10 s and then does not answer a `PING` within 5 s (a dead
/// connection that never closed), it subscribes again on a new one, every second until that
/// succeeds, each attempt bounded the same way.
///
/// Redis' notifications are fire-and-forget: one sent while the watcher is reconnecting is
/// lost, and a rotated id whose grace ends is reported too (the key name cannot tell it
/// from a session once its value is gone).
pub async fn watch_expiries(
    url: &str,
    key_prefix: &str,
    sink: EventSink,
) -> Result<tokio::task::JoinHandle<()>> {
    let client = redis::Client::open(url).map_err(|_| Error::config("not a Redis URL"))?;
    let mut conn = bounded("a connection", client.get_multiplexed_async_connection()).await?;
    let setting: Result<Vec<String>> = bounded(
        "the reply to CONFIG GET",
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut conn),
    )
    .await;
    match setting {
        Ok(setting) => {
            if let Some(flags) = setting.get(1)
                && !notifies_expiries(flags)
            {
                return Err(Error::config(format!(
                    "the server does not notify expired keys (notify-keyspace-events is \
                     {flags:?}; it needs E and x, for example `CONFIG SET \
                     notify-keyspace-events Ex`)"
                )));
            }
        }
        // A server that hides CONFIG (managed ones do) is trusted; one that does not answer
        // is not waited for.
        Err(err @ Error::Timeout { .. }) => return Err(err),
        Err(_) => {}
    }
    let db = client.get_connection_info().redis_settings().db();
    let channel = format!("__keyevent@{db}__:expired");
    let mut subscribed = subscribe(&client, &channel).await?;
    let prefix = key_prefix.to_owned();
    Ok(tokio::spawn(async move {
        loop {
            watch(&mut subscribed, &prefix, &sink).await;
            // The connection closed or went dead: subscribe again.
            loop {
                tokio::time::sleep(RETRY_EVERY).await;
                if let Ok(again) = subscribe(&client, &channel).await {
                    subscribed = again;
                    break;
                }
            }
        }
    }))
}

/// A subscription: the half that sends (for the liveness `PING`) and the messages.
struct Subscribed {
    sink: redis::aio::PubSubSink,
    messages: redis::aio::PubSubStream,
}

/// Reports the expiries `subscribed` receives until its connection closes or stops
/// answering.
async fn watch(subscribed: &mut Subscribed, prefix: &str, sink: &EventSink) {
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut subscribed.messages).poll_next(cx));
        match tokio::time::timeout(PING_WHEN_QUIET, next).await {
            Ok(Some(message)) => {
                let Ok(key) = message.get_payload::<String>() else {
                    continue;
                };
                if let Some(id) = expired_session(&key, prefix) {
                    let kind = EventKind::Ended(EndCause::Expired);
                    sink.send(SessionEvent::new(kind, Some(&id), None, 1));
                }
            }
            Ok(None) => return,
            Err(_quiet) => {
                let ping = subscribed.sink.ping::<redis::Value>();
                if !matches!(tokio::time::timeout(STEP_TIMEOUT, ping).await, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

/// `step`, bounded by [`STEP_TIMEOUT`]: a server that does not answer within it is a
/// [`Error::Timeout`] naming `what`; a driver error is classed as the store classes them
/// (its own timeouts a `Timeout`, a dropped connection `Unavailable`, a refusal `Backend`).
async fn bounded<T>(
    what: &'static str,
    step: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(STEP_TIMEOUT, step).await {
        Ok(result) => result.map_err(|err| redis_error(OPERATION, None, err)),
        Err(_elapsed) => Err(Error::Timeout {
            operation: OPERATION,
            id: None,
            what,
            source: None,
        }),
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> Result<Subscribed> {
    let pubsub = bounded("a connection", client.get_async_pubsub()).await?;
    let (mut sink, messages) = pubsub.split();
    bounded("the reply to SUBSCRIBE", sink.subscribe(channel)).await?;
    Ok(Subscribed { sink, messages })
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
