//! Expiry: an expired session is never returned, at sub-second granularity.

use super::{CheckResult, Factory, PastExt, WINDOWS, id, sample, sleep_ms, too_slow};
use crate::session::now_millis;
pub(crate) async fn get_never_returns_expired(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    for window in WINDOWS {
        let id = id();
        let session = sample().with_expires_at(window);
        call!("set", store.set(&id, &session).await);
        if call!("get", store.get(&id).await).is_none() {
            // Only a failure if the clock proves the session was still live.
            ensure!(
                now_millis() >= session.expires_at_millis(),
                "a session {window} ms from expiry was not returned"
            );
            continue;
        }
        sleep_ms(window as u64 + 150).await;
        ensure!(
            call!("get", store.get(&id).await).is_none(),
            "get returned a session after its expiry"
        );
        return Ok(());
    }
    Err(too_slow())
}

pub(crate) async fn expiry_is_honoured_at_sub_second_granularity(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (short, long) = (id(), id());
    call!(
        "set",
        store.set(&short, &sample().with_expires_at(250)).await
    );
    let long_session = sample().with_expires_at(1500);
    call!("set", store.set(&long, &long_session).await);
    sleep_ms(600).await;
    ensure!(
        call!("get", store.get(&short).await).is_none(),
        "a session that expired 350 ms ago was returned"
    );
    let got = call!("get", store.get(&long).await);
    // Only a failure if the clock proves the long session was still live.
    ensure!(
        got.is_some() || now_millis() >= long_session.expires_at_millis(),
        "a session with about 900 ms left was not returned (expiry rounded to whole seconds?)"
    );
    Ok(())
}
