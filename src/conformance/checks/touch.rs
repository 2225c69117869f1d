//! Touch: moves the expiry only, never creates or resurrects a session.

use std::time::{Duration, SystemTime};

use super::{CheckResult, Factory, HOUR, PastExt, WINDOWS, id, sample, sleep_ms, too_slow};
use crate::session::now_millis;
pub(crate) async fn touch_moves_expiry_only(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let mut touched = None;
    for window in WINDOWS {
        let session = sample().with_expires_at(window);
        call!("set", store.set(&id, &session).await);
        let new_expiry = SystemTime::now() + HOUR;
        if call!("touch", store.touch(&id, new_expiry).await) {
            touched = Some((window, new_expiry));
            break;
        }
        ensure!(
            now_millis() >= session.expires_at_millis(),
            "touch of a live session returned false"
        );
    }
    let (window, new_expiry) = touched.ok_or_else(too_slow)?;
    sleep_ms(window as u64 + 150).await;
    let got = call!("get", store.get(&id).await)
        .ok_or("the session expired at its old expiry: touch did not move it")?;
    let want = crate::session::to_millis(new_expiry);
    ensure!(
        got.expires_at_millis() == want,
        "after touch the expiry is {} ms, not {want} ms",
        got.expires_at_millis()
    );
    Ok(())
}

pub(crate) async fn touch_keeps_data_and_version(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (id, session) = (id(), sample());
    let version = call!("set", store.set(&id, &session).await);
    ensure!(
        call!(
            "touch",
            store.touch(&id, SystemTime::now() + HOUR * 5).await
        ),
        "touch of a live session returned false"
    );
    let got = call!("get", store.get(&id).await).ok_or("get after touch returned None")?;
    ensure!(got.data() == session.data(), "touch changed the data");
    ensure!(
        got.version() == version,
        "touch changed the version from {version} to {}: touch must not rewrite the session",
        got.version()
    );
    // A compare-and-set based on the version read before the touch still succeeds.
    let next = call!(
        "set_if_version after touch",
        store.set_if_version(&id, &sample(), version).await
    );
    ensure!(
        next == version + 1,
        "set_if_version after touch returned {next}, not {}",
        version + 1
    );
    Ok(())
}

pub(crate) async fn touch_absent_returns_false_and_creates_nothing(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let existed = call!("touch", store.touch(&id, SystemTime::now() + HOUR).await);
    ensure!(!existed, "touch of an unknown id returned true");
    ensure!(
        call!("get", store.get(&id).await).is_none(),
        "touch of an unknown id created a session"
    );
    let expired = self::id();
    call!(
        "set",
        store.set(&expired, &sample().with_expires_at(150)).await
    );
    sleep_ms(300).await;
    let existed = call!(
        "touch",
        store.touch(&expired, SystemTime::now() + HOUR).await
    );
    ensure!(!existed, "touch of an expired session returned true");
    ensure!(
        call!("get", store.get(&expired).await).is_none(),
        "touch resurrected an expired session"
    );
    Ok(())
}

pub(crate) async fn touch_into_the_past_expires(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    call!("set", store.set(&id, &sample()).await);
    let existed = call!(
        "touch",
        store
            .touch(&id, SystemTime::now() - Duration::from_secs(1))
            .await
    );
    ensure!(existed, "touch of a live session returned false");
    ensure!(
        call!("get", store.get(&id).await).is_none(),
        "a session touched into the past was still returned"
    );
    Ok(())
}
