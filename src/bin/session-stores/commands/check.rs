//! `check`: the conformance suite in scratch namespaces beside the deployment, and its
//! settings that lose sessions.

use std::sync::Arc;
use std::time::Instant;

use session_stores::admin::{self, Scratch};
use session_stores::connect::redact;
use session_stores::{SessionStore, StoreKind};

use crate::output::{Failure, open};

/// Runs the suite in scratch namespaces, removes them, and inspects the deployment. Exits
/// with 2 when it finds a problem, including scratch namespaces it could not remove.
pub(crate) async fn run(url: &str) -> Result<(), Failure> {
    let kind = StoreKind::of(url)?;
    // The store as deployed must open; the suite then runs in scratch namespaces beside it.
    let deployed: Arc<dyn SessionStore> = open(url).await?;
    drop(deployed);
    println!("checking {} ({kind})", redact(url));
    let scratch = Scratch::new(url)?;
    let factory_scratch = Arc::clone(&scratch);
    let started = Instant::now();
    let result = session_stores::conformance::run(move || {
        let scratch = Arc::clone(&factory_scratch);
        async move {
            match scratch.store().await {
                Ok(store) => store,
                // The suite reports a failing factory as the check's failure.
                Err(err) => panic!("opening a scratch store: {}", Failure::from(err).message),
            }
        }
    })
    .await;
    let cleanup = scratch.remove().await;
    let mut problems = Vec::new();
    match result {
        Ok(()) => println!(
            "conformance: all {} checks passed in a scratch namespace ({:.0} s)",
            session_stores::conformance::check_names().count(),
            started.elapsed().as_secs_f64()
        ),
        Err(failures) => problems.push(format!("the conformance suite failed: {failures}")),
    }
    if let Err(err) = cleanup {
        problems.push(Failure::from(err).message);
    }
    if let Some(damage) = admin::damaged(url, false).await? {
        if damage.found > 0 {
            problems.push(format!(
                "{} session key(s) with no expiry: they never expire, their ids read as \
                 Decode errors, len counts them and scans stop at them. `session-stores purge \
                 {}` removes them",
                damage.found,
                redact(url)
            ));
        } else {
            println!("keys: every session key has an expiry");
        }
    }
    for finding in admin::inspect(url).await? {
        if finding.is_problem() {
            problems.push(finding.message().to_string());
        } else {
            println!("note: {}", finding.message());
        }
    }
    if problems.is_empty() {
        println!("settings: nothing found that loses sessions");
        return Ok(());
    }
    for problem in &problems {
        println!("PROBLEM: {problem}");
    }
    Err(Failure {
        message: format!("{} problem(s) found", problems.len()),
        code: 2,
    })
}
