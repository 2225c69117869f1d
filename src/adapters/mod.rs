//! Adapters that plug any [`SessionStore`](crate::SessionStore) into a web framework's session
//! middleware.
//!
//! | feature          | module                             | middleware                                  |
//! |------------------|------------------------------------|---------------------------------------------|
//! | `tower-sessions` | [`tower_sessions`] | [tower-sessions] 0.15 (axum, any tower stack) |
//! | `tower-sessions-014` | [`tower_sessions`] (`v014`) | tower-sessions 0.14 (axum-login 0.18) |
//! | `actix-session`  | [`actix`]             | [actix-session] 0.11 (actix-web)            |
//! | `axum-session`   | [`axum_session`]      | [axum_session] 0.22 (axum 0.8)              |
//! | `poem`           | [`poem`]              | [poem] 3, `session` feature (`ServerSession`) |
//!
//! Each adapter wraps a store of this crate (or your own, or a `Box<dyn SessionStore>` from
//! [`connect`](crate::connect())) and implements the middleware's store trait on top of the
//! contract: ids are created with the atomic [`create`](crate::SessionStore::create), so two
//! users are never handed the same id; expiry is kept to the millisecond; the data is kept
//! losslessly. A request's save is a compare-and-set on the version it loaded, merged per
//! top-level key with what another request wrote in between ([`OnConflict`]), and never
//! writes a session that a logout, `destroy_owner` or expiry ended while the request ran.
//! Both adapters implement the request-level suite's
//! [`RequestAdapter`](crate::conformance::requests::RequestAdapter) (feature
//! `conformance`). Both enable the `cleanup` feature, whose
//! [`spawn_cleanup`](crate::cleanup::spawn_cleanup) sweeps expired sessions from stores that
//! need it (files, SQLite, Postgres) and, unlike tower-sessions' own task, survives errors.
//!
//! [tower-sessions]: https://docs.rs/tower-sessions/0.15
//! [actix-session]: https://docs.rs/actix-session/0.11
//! [axum_session]: https://docs.rs/axum_session/0.22
//! [poem]: https://docs.rs/poem/3
//!
//! The axum_session and poem adapters keep these promises as far as those frameworks' store
//! traits allow: axum_session's `DatabasePool::store` carries no version and its expiry is in
//! whole seconds, and poem's `update_session` does not say whether a session is new; each
//! module's docs say exactly what is lost. Only the tower-sessions and actix-session
//! adapters implement `RequestAdapter`.

#[cfg(any(feature = "tower-sessions", feature = "tower-sessions-014"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "tower-sessions", feature = "tower-sessions-014")))
)]
pub mod tower_sessions;

#[cfg(any(
    feature = "tower-sessions",
    feature = "tower-sessions-014",
    feature = "actix-session",
    feature = "axum-session",
    feature = "poem"
))]
// The axum_session adapter runs its own save loop over `merge`; alone, `save` is unused.
#[cfg_attr(
    not(any(
        feature = "tower-sessions",
        feature = "tower-sessions-014",
        feature = "actix-session",
        feature = "poem"
    )),
    allow(dead_code)
)]
mod saving;
#[cfg(any(
    feature = "tower-sessions",
    feature = "tower-sessions-014",
    feature = "actix-session",
    feature = "axum-session",
    feature = "poem"
))]
pub use saving::{LOADED_KEY, OnConflict};

#[cfg(feature = "actix-session")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-session")))]
pub mod actix;

#[cfg(feature = "axum-session")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum-session")))]
pub mod axum_session;

#[cfg(feature = "poem")]
#[cfg_attr(docsrs, doc(cfg(feature = "poem")))]
pub mod poem;

/// How many fresh ids an adapter tries before it gives up on minting a session. With 128 or
/// more random bits per id a single collision is already astronomically unlikely; the bound
/// only stops a broken store (one whose `create` always reports a collision) from spinning.
#[cfg(any(
    feature = "tower-sessions",
    feature = "tower-sessions-014",
    feature = "actix-session"
))]
pub(crate) const MAX_CREATE_ATTEMPTS: usize = 16;

/// The owner a session's data names under the adapters' owner key: a string as it is, a
/// number as its decimal text; absent or `null` means no owner. Anything else, or text that
/// is not a valid [`Owner`](crate::Owner), is an [`Error::InvalidOwner`](crate::Error), so a
/// misconfigured key is an error rather than a session silently missing from the index.
#[cfg(any(
    feature = "tower-sessions",
    feature = "tower-sessions-014",
    feature = "actix-session",
    feature = "axum-session",
    feature = "poem"
))]
pub(crate) fn owner_of_value(
    value: Option<&serde_json::Value>,
) -> Result<Option<crate::Owner>, crate::Error> {
    use serde_json::Value;
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => crate::Owner::new(text.as_str()).map(Some),
        Some(Value::Number(n)) => crate::Owner::new(n.to_string()).map(Some),
        Some(_) => Err(crate::Error::InvalidOwner {
            reason: "the owner key holds neither a string nor a number",
        }),
    }
}
