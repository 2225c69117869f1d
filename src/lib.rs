// The README is the crate's front page, and its examples run as doctests. They use the
// default `memory` feature; without it the page is still the docs, just not tested.
#![cfg_attr(feature = "memory", doc = include_str!("../README.md"))]
#![cfg_attr(
    not(feature = "memory"),
    doc = "One `SessionStore` contract and its backends; see README.md (built with the `memory` feature, it is this page)."
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod deadline;
pub mod error;
pub mod events;
pub mod migrate;
pub mod session;
pub mod store;
pub mod stores;
mod url;
pub mod wrappers;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

pub mod connect;

#[cfg(any(
    feature = "tower-sessions",
    feature = "tower-sessions-014",
    feature = "actix-session",
    feature = "axum-session",
    feature = "poem"
))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "tower-sessions",
        feature = "tower-sessions-014",
        feature = "actix-session",
        feature = "axum-session",
        feature = "poem"
    )))
)]
pub mod adapters;

#[cfg(feature = "cleanup")]
#[cfg_attr(docsrs, doc(cfg(feature = "cleanup")))]
pub mod cleanup;

#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod admin;

pub use connect::{StoreKind, connect};
pub use deadline::DEFAULT_OPERATION_TIMEOUT;

pub use error::{BoxError, Error, ErrorKind, IdHint, InvalidIdReason, JsonError, Result};
pub use session::{
    FRESH_VERSION_SPAN, MAX_NESTING, MAX_VERSION, Owner, Session, SessionId, check_nesting,
    fresh_version, from_millis, kept_absolute_expiry, next_version, now_millis, to_millis,
};
pub use store::{
    Capabilities, OwnedSession, Rotation, ScanCursor, ScanPage, SessionStore, Undecodable,
};

/// Re-exported so that a store of your own can implement [`SessionStore`] without adding
/// `async-trait` to its dependencies.
pub use async_trait::async_trait;

#[cfg(feature = "actix-session")]
pub use adapters::actix::ActixSessionStore;
#[cfg(feature = "axum-session")]
pub use adapters::axum_session::AxumSessionPool;
#[cfg(feature = "poem")]
pub use adapters::poem::PoemSessionStorage;
#[cfg(any(feature = "tower-sessions", feature = "tower-sessions-014"))]
pub use adapters::tower_sessions::TowerSessionsStore;
#[cfg(feature = "file")]
pub use stores::file::FileStore;
#[cfg(feature = "memory")]
pub use stores::memory::MemoryStore;
#[cfg(feature = "mysql")]
pub use stores::mysql::MySqlStore;
#[cfg(feature = "postgres")]
pub use stores::postgres::PostgresStore;
#[cfg(feature = "redis")]
pub use stores::redis::RedisStore;
#[cfg(feature = "sqlite")]
pub use stores::sqlite::SqliteStore;
