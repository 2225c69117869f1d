//! The public conformance suite: checks that a [`SessionStore`] keeps the
//! [contract](crate::SessionStore#contract).
//!
//! Every built-in store runs it, and so can yours, in one of two ways.
//!
//! **One entry point**, [`run`], runs every check and returns an error that names each check
//! that failed and why:
//!
//! ```no_run
//! # #[cfg(feature = "memory")]
//! # async fn demo() {
//! use session_stores::MemoryStore;
//!
//! session_stores::conformance::run(|| async { MemoryStore::new(10_000) })
//!     .await
//!     .unwrap();
//! # }
//! ```
//!
//! **One test per check**: [`conformance_tests!`](crate::conformance_tests) expands to one
//! `#[test]` per check, each running on its own multi-threaded tokio runtime (what
//! `#[tokio::test(flavor = "multi_thread")]` would give), so `cargo test` lists and reports each
//! check by name. It uses only `$crate::` paths: your crate needs `session-stores` with the
//! `conformance` feature as a dev-dependency, and nothing else.
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # mod my_crate {
//! #     pub struct MyStore;
//! #     impl MyStore {
//! #         pub async fn connect_for_tests() -> session_stores::MemoryStore {
//! #             session_stores::MemoryStore::new(10_000)
//! #         }
//! #     }
//! # }
//! // tests/conformance.rs of your crate
//! # #[cfg(feature = "memory")]
//! session_stores::conformance_tests!(|| async { my_crate::MyStore::connect_for_tests().await });
//! # fn main() {}
//! ```
//!
//! # The factory
//!
//! Each check calls the factory for a **fresh store** of its own, and uses random ids
//! ([`SessionId::generate`]). Checks never touch data they did not write, except the
//! `clear_*` checks, which call `clear()` on the fresh store they were given. So the factory
//! must hand out a store that is safe to clear: a new temporary directory, table, schema or
//! key prefix per call, never a store over a user's real data.
//!
//! The factory's stores must hold at least 2,500 live sessions each (one check writes 2,100),
//! and two stores it made one after the other must be isolated from each other: clearing,
//! counting or expiring one never touches the other's sessions, even under the same id.
//!
//! Checks that involve expiry use sub-second expiries and short sleeps; the whole suite takes
//! a few seconds per backend. Each check has a time limit of [`CHECK_TIMEOUT`]; a check that
//! hangs or panics fails, naming itself.
//!
//! # Stability policy
//!
//! - The suite only ever checks sentences of the written contract on [`SessionStore`]. A
//!   check is added when a sentence is added, or when a sentence was under-checked; such an
//!   addition can make a store that passed fail, and it ships in a minor release with a
//!   changelog entry naming the check and the sentence.
//! - Check names are stable: a check is never renamed within a major version. A check that
//!   is removed (because its sentence was) is removed only in a major release.
//! - The contract itself changes only in major releases.
//! - [`run`], [`run_check`], [`check_names`], [`Failures`] and the
//!   [`conformance_tests!`](crate::conformance_tests) macro are public API under semver.

mod checks;
pub mod requests;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::store::SessionStore;

#[cfg(doc)]
use crate::session::SessionId;

/// How many checks [`run`] runs at once (each against its own fresh store).
pub const CONCURRENT_CHECKS: usize = 4;

/// How long one check may take before it fails as hung.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

type StoreFuture = Pin<Box<dyn Future<Output = Box<dyn SessionStore>> + Send>>;
type CheckFuture = Pin<Box<dyn Future<Output = CheckResult> + Send>>;
type CheckResult = Result<(), String>;

/// Makes a fresh store for each check. Built from any `Fn() -> impl Future<Output = S>`.
#[derive(Clone)]
pub struct Factory(Arc<dyn Fn() -> StoreFuture + Send + Sync>);

impl Factory {
    /// Wraps `make`, which must return a fresh store on every call.
    pub fn new<F, Fut, S>(make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = S> + Send + 'static,
        S: SessionStore + 'static,
    {
        Factory(Arc::new(move || {
            let fut = make();
            Box::pin(async move { Box::new(fut.await) as Box<dyn SessionStore> })
        }))
    }

    /// A fresh store as `Box<dyn SessionStore>`.
    pub async fn boxed(&self) -> Box<dyn SessionStore> {
        (self.0)().await
    }

    /// A fresh store as `Arc<dyn SessionStore>`, to share between tasks.
    pub async fn shared(&self) -> Arc<dyn SessionStore> {
        Arc::from(self.boxed().await)
    }
}

impl fmt::Debug for Factory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Factory(..)")
    }
}

struct Check {
    name: &'static str,
    run: fn(Factory) -> CheckFuture,
}

/// Builds the list of checks from the one list in `__for_each_check!`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_registry {
    (() $($name:ident),* $(,)?) => {
        const CHECKS: &[Check] = &[
            $(Check {
                name: stringify!($name),
                run: |factory| Box::pin(checks::$name(factory)),
            }),*
        ];
    };
}

/// The one list of check names. Calls `$crate::$m!` with `($($args)*)` followed by the names.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_check {
    ($m:ident ! ($($args:tt)*)) => {
        $crate::$m! { ($($args)*)
            get_absent_is_none,
            set_then_get_round_trips,
            set_overwrites_and_advances_version,
            set_of_identical_content_returns_the_stored_version,
            set_with_past_expiry_deletes,
            get_never_returns_expired,
            expiry_is_honoured_at_sub_second_granularity,
            destroy_removes,
            destroy_is_idempotent,
            touch_moves_expiry_only,
            touch_keeps_data_and_version,
            touch_absent_returns_false_and_creates_nothing,
            touch_into_the_past_expires,
            create_absent_succeeds_with_a_fresh_version,
            create_collision_returns_false_and_keeps_existing,
            create_over_expired_session_succeeds,
            create_concurrent_exactly_one_wins,
            set_if_version_matching_writes,
            set_if_version_mismatch_conflicts_and_writes_nothing,
            set_if_version_zero_means_absent,
            set_if_version_concurrent_increments_lose_nothing,
            len_counts_live_sessions_only,
            clear_removes_everything,
            delete_expired_removes_only_expired,
            round_trip_nested_json_and_unicode,
            round_trip_one_mib_session,
            round_trip_empty_session,
            nesting_at_the_limit_round_trips_and_deeper_is_refused,
            ids_are_isolated,
            invalid_ids_are_rejected_and_edge_ids_work,
            concurrent_sets_leave_one_whole_value,
            works_as_box_dyn_store,
            works_as_arc_dyn_store_across_tasks,
            stale_compare_and_set_after_destroy_conflicts,
            stale_compare_and_set_after_expiry_conflicts,
            versions_never_repeat_across_incarnations,
            version_inside_a_written_session_is_ignored,
            identical_data_with_another_expiry_is_a_write,
            identical_content_after_destroy_is_a_new_session,
            errors_name_the_session_and_kind,
            an_expiry_equal_to_now_has_passed,
            writes_with_a_past_expiry_store_nothing,
            expiries_a_few_milliseconds_ahead_are_live,
            touch_can_move_the_expiry_earlier,
            an_expired_session_is_absent_for_touch_len_and_is_empty,
            delete_expired_spares_sessions_about_to_expire,
            set_racing_set_if_version_hands_out_each_version_once,
            touch_racing_destroy_never_revives,
            touch_racing_set_keeps_the_written_data,
            create_racing_destroy_stores_only_when_it_returns_true,
            round_trip_edge_values_exactly,
            len_and_clear_at_scale,
            stores_from_the_factory_are_isolated,
            ids_that_differ_slightly_are_distinct,
            far_future_expiries_round_trip,
            set_if_version_racing_destroy_never_revives,
            owner_round_trips_through_every_write,
            sessions_of_lists_the_live_sessions_of_that_owner_only,
            a_new_owner_moves_the_session_between_listings,
            destroy_owner_ends_every_session_but_the_one_kept,
            destroy_owner_racing_writes_loses_no_session,
            a_listing_racing_owner_changes_lists_only_that_owners_versions,
            owners_are_isolated_between_stores,
            clear_empties_every_owner,
            an_owner_with_thousands_of_sessions,
            scan_returns_every_live_session_once,
            scan_under_writes_returns_each_steady_session_once,
            scan_resumes_from_a_saved_cursor,
            scans_see_only_their_own_store,
            strings_with_control_characters_round_trip_or_are_refused,
            fresh_versions_span_the_whole_range_on_every_path,
            a_listing_follows_expiries_moved_by_touch_and_writes,
            look_alike_owners_are_different_owners,
            a_saved_cursor_resumes_exactly_after_other_scans_and_writes,
            operations_dropped_midway_never_revive_duplicate_or_lose,
            a_listed_id_ends_exactly_that_session,
            owned_sessions_keep_every_data_key,
            undecodable_entries_are_reported_and_never_stop_scans_or_listings,
            absolute_expiry_round_trips_and_caps_every_write,
            touch_never_moves_the_expiry_past_the_absolute_expiry,
            later_writes_keep_the_earlier_absolute_expiry,
            a_session_ends_at_its_absolute_expiry,
            rotate_moves_the_session_and_leaves_the_old_id_read_only,
            rotate_reports_absent_and_taken_and_changes_nothing,
            a_rotated_id_ends_with_its_grace_or_its_new_session,
            rotated_ids_are_removed_by_delete_expired_and_clear,
            rotate_racing_a_write_through_the_old_id_loses_nothing,
            rotate_racing_destroy_owner_ends_the_session,
        }
    };
}

crate::__for_each_check!(__conformance_registry!());

/// Expands to one `#[test]` per conformance check, against the store factory `$factory`
/// (an expression of type `Fn() -> impl Future<Output = impl SessionStore>`).
///
/// Each test runs its check on a fresh multi-threaded tokio runtime and panics with the
/// check's name and failure message. Invoke it inside a module of an integration test:
///
/// ```
/// # #[cfg(feature = "memory")]
/// mod memory {
///     session_stores::conformance_tests!(|| async { session_stores::MemoryStore::new(10_000) });
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::__for_each_check!(__conformance_test_fns!($factory));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test_fns {
    (($factory:expr) $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::run_check_blocking(stringify!($name), $factory);
            }
        )*
    };
}

/// One failed check: its name and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    /// The check's name, as listed by [`check_names`].
    pub check: &'static str,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance check `{}` failed: {}",
            self.check, self.message
        )
    }
}

impl std::error::Error for CheckFailure {}

/// The checks that failed in a [`run`], with the names of those that passed.
#[derive(Debug, Clone)]
pub struct Failures {
    /// The failed checks, in suite order.
    pub failed: Vec<CheckFailure>,
    /// The names of the checks that passed.
    pub passed: Vec<&'static str>,
}

impl Failures {
    /// Whether the check called `name` failed.
    pub fn failed(&self, name: &str) -> bool {
        self.failed.iter().any(|f| f.check == name)
    }

    /// The names of the failed checks.
    pub fn failed_names(&self) -> Vec<&'static str> {
        self.failed.iter().map(|f| f.check).collect()
    }
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} of {} conformance checks failed:",
            self.failed.len(),
            self.failed.len() + self.passed.len()
        )?;
        for failure in &self.failed {
            writeln!(f, "  - {}: {}", failure.check, failure.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Failures {}

/// The names of every check, in the order [`run`] runs them.
pub fn check_names() -> impl Iterator<Item = &'static str> {
    CHECKS.iter().map(|check| check.name)
}

/// Runs every check against fresh stores from `factory`, [`CONCURRENT_CHECKS`] at a time.
/// `Ok` when all pass; otherwise the error names every failed check and says why.
///
/// Must be called within a multi-threaded tokio runtime (the checks spawn tasks and sleep).
pub async fn run<F, Fut, S>(factory: F) -> Result<(), Failures>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = S> + Send + 'static,
    S: SessionStore + 'static,
{
    let factory = Factory::new(factory);
    let mut failures = Failures {
        failed: Vec::new(),
        passed: Vec::new(),
    };
    // Most of the suite's time is spent sleeping past expiries, so a few checks run at once;
    // each has a store of its own. Results are reported in suite order.
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CHECKS));
    let tasks: Vec<_> = CHECKS
        .iter()
        .map(|check| {
            let (factory, permits) = (factory.clone(), permits.clone());
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                run_one(check, factory).await
            })
        })
        .collect();
    for (check, task) in CHECKS.iter().zip(tasks) {
        let result = task.await.unwrap_or_else(|join| {
            Err(CheckFailure {
                check: check.name,
                message: format!("panicked or was cancelled: {join}"),
            })
        });
        match result {
            Ok(()) => failures.passed.push(check.name),
            Err(failure) => failures.failed.push(failure),
        }
    }
    if failures.failed.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Runs the one check called `name` against a fresh store from `factory`.
pub async fn run_check<F, Fut, S>(name: &str, factory: F) -> Result<(), CheckFailure>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = S> + Send + 'static,
    S: SessionStore + 'static,
{
    let check = CHECKS
        .iter()
        .find(|check| check.name == name)
        .ok_or_else(|| CheckFailure {
            check: "unknown",
            message: format!("there is no conformance check called `{name}`"),
        })?;
    run_one(check, Factory::new(factory)).await
}

/// Runs the check called `name` on a new multi-threaded runtime and panics if it fails. This
/// is what [`conformance_tests!`](crate::conformance_tests) calls.
#[doc(hidden)]
pub fn run_check_blocking<F, Fut, S>(name: &str, factory: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = S> + Send + 'static,
    S: SessionStore + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance check");
    if let Err(failure) = runtime.block_on(run_check(name, factory)) {
        panic!("{failure}");
    }
}

async fn run_one(check: &Check, factory: Factory) -> Result<(), CheckFailure> {
    let task = tokio::spawn(tokio::time::timeout(CHECK_TIMEOUT, (check.run)(factory)));
    let message = match task.await {
        Ok(Ok(Ok(()))) => return Ok(()),
        Ok(Ok(Err(message))) => message,
        Ok(Err(_elapsed)) => format!("did not finish within {CHECK_TIMEOUT:?}"),
        Err(join) if join.is_panic() => {
            let panic = join.into_panic();
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_string());
            format!("panicked: {text}")
        }
        Err(join) => format!("was cancelled: {join}"),
    };
    Err(CheckFailure {
        check: check.name,
        message,
    })
}
