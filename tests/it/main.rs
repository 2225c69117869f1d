//! The integration tests, in one binary (`cargo test --test it`) so that the crate is linked
//! once for all of them: one module per area, each what was the test binary of that name
//! (`tests/<area>.rs`, `tests/<area>/main.rs`), so a test's path is `<area>::<test>`, as in
//! `cargo test --all-features --test it conformance::redis::cluster_whole_suite`.
//!
//! Each module keeps its own feature gate (an inner `#![cfg(...)]` at its top), so a plain
//! `cargo test` builds and runs every area its features allow.
//!
//! The tests of every area run at the same time, on the harness' threads of this one process.
//! So a test never changes what the others share:
//!
//! - a test that sets environment variables runs in a process of its own
//!   ([`support::in_own_process`]), as do the child processes that some tests start (this
//!   binary again, with `--exact <area>::<test>`);
//! - a test that restarts, stops, stalls, reconfigures or reads the counters of a Redis
//!   server or cluster starts its own (`redis::own_cluster`, `redis::start_redis`); a test
//!   that ends Postgres backends ends only its own, by `application_name`; every other test
//!   works under a table, schema or key prefix of its own on the shared servers;
//! - servers that tests start listen on ports from [`support::free_port`], which never hands
//!   out a port twice and takes them from below the kernel's ephemeral range;
//! - a test with tight time bounds holds [`support::measures_time`], and the tests that load
//!   the whole machine hold [`support::loads_the_machine`], so the two never run together.
//!
//! `redis` installs the binary's global allocator (it counts each thread's heap, for a test
//! that measures the peak memory of one operation), for every test when `redis` is on.
//!
//! `tests/soak.rs` stays a binary of its own: it keeps 64 tasks busy on each backend for as
//! long as `SESSION_STORES_SOAK_OPS` asks (thousands of operations each in a long soak),
//! killing and restarting its Redis and ending its Postgres connections meanwhile; beside the
//! other tests it would slow every one of them, and be run on its own anyway.

#[path = "../support/mod.rs"]
mod support;

mod adapters;
mod bad_input;
mod cli;
mod conformance;
mod deadline;
mod demo;
mod faults;
mod file;
mod lifetimes;
mod migrating;
mod mysql;
mod network;
mod postgres;
mod proxy;
mod redis;
mod security;
mod sqlite;
mod tls;
mod tools;
