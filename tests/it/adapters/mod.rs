//! End-to-end tests of both adapters: real middleware (tower-sessions 0.15 under axum,
//! actix-session 0.11 under actix-web), real HTTP requests through the framework's service
//! (`tower::ServiceExt::oneshot`, `actix_web::test::call_service`), with a cookie jar kept
//! by the test, against every backend enabled by features:
//!
//! - memory always, file and SQLite (temporary directories) with their features;
//! - Postgres (`SESSION_STORES_POSTGRES_URL`), Redis (`SESSION_STORES_REDIS_URL`) and Redis
//!   Cluster (`SESSION_STORES_REDIS_CLUSTER_URLS`) when reachable: a loud skip locally, a
//!   failure in CI.
//!
//! Each test runs every scenario of [`scenarios`] for one adapter on one backend, each
//! scenario on a fresh, isolated store. Run with
//! `cargo test --features tower-sessions,actix-session --test it adapters::` (plus the
//! backend features).
//!
//! Needs the `memory` feature (on by default) besides an adapter feature.
#![cfg(all(
    feature = "memory",
    any(
        feature = "tower-sessions",
        feature = "tower-sessions-014",
        feature = "actix-session"
    )
))]

mod common;

mod backends;
mod scenarios;

#[cfg(any(feature = "tower-sessions", feature = "tower-sessions-014"))]
mod tower;

#[cfg(feature = "actix-session")]
mod actix;

mod connect;

mod requests;

#[cfg(feature = "tower-sessions-014")]
mod axum_login;
