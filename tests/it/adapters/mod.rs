//! End-to-end tests of the adapters: real middleware (tower-sessions 0.15 and axum_session
//! 0.22 under axum, actix-session 0.11 under actix-web, poem 3's `ServerSession`), real HTTP
//! requests through the framework's service (`tower::ServiceExt::oneshot`,
//! `actix_web::test::call_service`, poem's `Endpoint::get_response`), with a cookie jar kept
//! by the test, against every backend enabled by features:
//!
//! - memory always, file and SQLite (temporary directories) with their features;
//! - Postgres (`SESSION_STORES_POSTGRES_URL`), Redis (`SESSION_STORES_REDIS_URL`) and Redis
//!   Cluster (`SESSION_STORES_REDIS_CLUSTER_URLS`) when reachable: a loud skip locally, a
//!   failure in CI.
//!
//! Each test runs every scenario of [`scenarios`] for one adapter on one backend, each
//! scenario on a fresh, isolated store. Run with
//! `cargo test --features tower-sessions,actix-session,axum-session,poem --test it adapters::`
//! (plus the backend features).
//!
//! Needs the `memory` feature (on by default) besides an adapter feature.
#![cfg(all(
    feature = "memory",
    any(
        feature = "tower-sessions",
        feature = "tower-sessions-014",
        feature = "actix-session",
        feature = "axum-session",
        feature = "poem"
    )
))]

mod common;

mod backends;
mod scenarios;

#[cfg(any(feature = "tower-sessions", feature = "tower-sessions-014"))]
mod tower;

#[cfg(feature = "actix-session")]
mod actix;

#[cfg(feature = "axum-session")]
mod axum_session;

#[cfg(feature = "poem")]
mod poem;

mod connect;

#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
mod lifetimes;

mod requests;

#[cfg(feature = "tower-sessions-014")]
mod axum_login;
