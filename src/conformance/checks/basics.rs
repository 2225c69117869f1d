//! Basics: get, set and destroy of one session; a set with a past expiry deletes.

use serde_json::json;

use super::{
    CheckResult, Factory, HOUR, id, in_the_past, same_content, sample, session_with, valid_version,
};
use crate::session::Session;
use crate::store::SessionStore;
pub(crate) async fn get_absent_is_none(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let got = call!("get", store.get(&id()).await);
    ensure!(
        got.is_none(),
        "get of an id never written returned a session"
    );
    Ok(())
}

pub(crate) async fn set_then_get_round_trips(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (id, session) = (id(), sample());
    let version = call!("set", store.set(&id, &session).await);
    valid_version("the first set", version)?;
    let got = call!("get", store.get(&id).await);
    let got = got.ok_or("get after set returned None")?;
    same_content(&got, &session)?;
    ensure!(
        got.version() == version,
        "get after the first set returned version {}, but set returned {version}",
        got.version()
    );
    Ok(())
}

pub(crate) async fn set_overwrites_and_advances_version(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let first = call!("set", store.set(&id, &sample()).await);
    let second = session_with(HOUR * 2, json!({"other": "value"}));
    let version = call!("second set", store.set(&id, &second).await);
    ensure!(
        version == first + 1,
        "the second set returned version {version}, not {} (the first set's plus one)",
        first + 1
    );
    let got = call!("get", store.get(&id).await).ok_or("get after two sets returned None")?;
    same_content(&got, &second)?;
    ensure!(
        !got.data().contains_key("user"),
        "set merged the old data into the new session instead of replacing it"
    );
    ensure!(
        got.version() == first + 1,
        "stored version is {}, not {}",
        got.version(),
        first + 1
    );
    Ok(())
}

pub(crate) async fn set_of_identical_content_returns_the_stored_version(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let (id, session) = (id(), sample());
    let first = call!("set", store.set(&id, &session).await);
    let again = call!("set of identical content", store.set(&id, &session).await);
    ensure!(
        again == first || again == first + 1,
        "set of content identical to the stored session returned version {again}, \
         not {first} (skipped) or {} (rewritten)",
        first + 1
    );
    let got = call!("get", store.get(&id).await).ok_or("the session vanished")?;
    same_content(&got, &session)?;
    ensure!(
        got.version() == again,
        "set returned version {again} but get shows version {}",
        got.version()
    );
    // The returned version is the stored one: a compare-and-set on it succeeds...
    let changed = session_with(HOUR, json!({"user": "grace"}));
    let next = call!(
        "set_if_version on the returned version",
        store.set_if_version(&id, &changed, again).await
    );
    ensure!(
        next == again + 1,
        "set_if_version returned {next}, not {}",
        again + 1
    );
    // ...and a set of different content after it always advances the version.
    let after = call!("set of changed content", store.set(&id, &session).await);
    ensure!(
        after == next + 1,
        "set of changed content returned {after}, not {}",
        next + 1
    );
    Ok(())
}

pub(crate) async fn set_with_past_expiry_deletes(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    call!("set", store.set(&id, &sample()).await);
    let version = call!(
        "set with a past expiry",
        store.set(&id, &in_the_past()).await
    );
    ensure!(
        version == 0,
        "set with a past expiry returned version {version}, not 0"
    );
    let got = call!("get", store.get(&id).await);
    ensure!(
        got.is_none(),
        "get returned a session after set with a past expiry"
    );
    let fresh = id_fresh_past(&*store).await?;
    ensure!(
        fresh.is_none(),
        "set with a past expiry of a new id created a session"
    );
    ensure!(
        call!("len", store.len().await) == 0,
        "len counts a session that was set with a past expiry"
    );
    Ok(())
}

async fn id_fresh_past(store: &dyn SessionStore) -> Result<Option<Session>, String> {
    let id = id();
    call!(
        "set with a past expiry",
        store.set(&id, &in_the_past()).await
    );
    Ok(call!("get", store.get(&id).await))
}

pub(crate) async fn destroy_removes(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    call!("set", store.set(&id, &sample()).await);
    call!("destroy", store.destroy(&id).await);
    ensure!(
        call!("get", store.get(&id).await).is_none(),
        "get returned a session after destroy"
    );
    ensure!(
        call!("len", store.len().await) == 0,
        "len counts a destroyed session"
    );
    Ok(())
}

pub(crate) async fn destroy_is_idempotent(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    call!("destroy of an unknown id", store.destroy(&id).await);
    call!("set", store.set(&id, &sample()).await);
    call!("destroy", store.destroy(&id).await);
    call!("second destroy", store.destroy(&id).await);
    ensure!(
        call!("get", store.get(&id).await).is_none(),
        "get returned a session after two destroys"
    );
    call!("set after destroy", store.set(&id, &sample()).await);
    ensure!(
        call!("get", store.get(&id).await).is_some(),
        "a set after two destroys stored nothing"
    );
    Ok(())
}
