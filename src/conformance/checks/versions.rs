//! Versions: a version never repeats for an id, so a stale compare-and-set never succeeds
//! against a later incarnation; the version inside a written session is ignored.

use std::collections::BTreeSet;

use serde_json::json;

use super::{
    CheckResult, Factory, HOUR, PastExt, id, names_the_session, sample, session_with, sleep_ms,
    valid_version,
};
use crate::error::{Error, ErrorKind};
use crate::session::{Session, SessionId};
use crate::store::SessionStore;

/// Fails unless a compare-and-set expecting `stale` conflicts and leaves the session intact.
async fn stale_cas_conflicts(
    store: &dyn SessionStore,
    id: &SessionId,
    stale: u64,
    what: &str,
) -> CheckResult {
    let before = call!("get", store.get(id).await);
    let intruder = session_with(HOUR, json!({"stale": "request"}));
    match store.set_if_version(id, &intruder, stale).await {
        Err(err) if err.kind() == ErrorKind::Conflict => names_the_session(&err, id, "a conflict")?,
        Err(err) => {
            return Err(format!(
                "{what}: a stale set_if_version (expected {stale}) failed with {}, not a conflict",
                super::chain(&err)
            ));
        }
        Ok(v) => {
            return Err(format!(
                "{what}: a stale set_if_version holding version {stale} of an earlier \
                 incarnation succeeded (returned {v}) and overwrote the new session: versions \
                 must never repeat for an id"
            ));
        }
    }
    let after = call!("get", store.get(id).await);
    ensure!(
        after == before,
        "{what}: a conflicting set_if_version changed the session"
    );
    Ok(())
}

/// Starts a new incarnation of the absent `id` with `session`, written by `how` (`set`,
/// `create` or anything else for `set_if_version(.., 0)`), and returns its version, checked
/// to be one a store may assign. `context` says how the id became absent, for the messages.
async fn start_incarnation(
    store: &dyn SessionStore,
    id: &SessionId,
    how: &str,
    session: &Session,
    context: &str,
) -> Result<u64, String> {
    let failed = |err: Error| format!("{how} {context} failed: {}", super::chain(&err));
    let version = match how {
        "set" => store.set(id, session).await.map_err(failed)?,
        "create" => {
            ensure!(
                store.create(id, session).await.map_err(failed)?,
                "create {context} returned false"
            );
            call!("get", store.get(id).await)
                .ok_or("get after create returned None")?
                .version()
        }
        _ => store.set_if_version(id, session, 0).await.map_err(failed)?,
    };
    valid_version(how, version)?;
    Ok(version)
}

pub(crate) async fn stale_compare_and_set_after_destroy_conflicts(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    // 1. create; request A reads version v1.
    ensure!(
        call!("create", store.create(&id, &sample()).await),
        "create of an absent id returned false"
    );
    let a = call!("get", store.get(&id).await).ok_or("get after create returned None")?;
    let v1 = a.version();
    let mut seen = BTreeSet::from([v1]);
    // 2. logout; 3. request C writes the id afresh, in each of the three ways.
    for (round, how) in ["set_if_version(.., 0)", "set", "create"]
        .into_iter()
        .enumerate()
    {
        call!("destroy", store.destroy(&id).await);
        let c = session_with(HOUR, json!({"request": "C", "round": round}));
        let v = start_incarnation(&*store, &id, how, &c, "after destroy").await?;
        ensure!(
            !seen.contains(&v),
            "{how} after destroy started the new incarnation at version {v}, which the id \
             already held: a stale compare-and-set would succeed"
        );
        // 4. every stale request conflicts, whichever old version it holds.
        for &stale in &seen {
            stale_cas_conflicts(&*store, &id, stale, &format!("after destroy and {how}")).await?;
        }
        let got = call!("get", store.get(&id).await).ok_or("the new session vanished")?;
        ensure!(
            got.data() == c.data() && got.version() == v,
            "after destroy and {how}, get does not show request C's session at version {v}"
        );
        seen.insert(v);
    }
    Ok(())
}

pub(crate) async fn versions_never_repeat_across_incarnations(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let mut seen = BTreeSet::new();
    for round in 0..12 {
        let first = call!("set", store.set(&id, &sample()).await);
        let second = call!(
            "second set",
            store
                .set(&id, &session_with(HOUR, json!({ "round": round })))
                .await
        );
        ensure!(
            second == first + 1,
            "a set over version {first} returned {second}, not {}",
            first + 1
        );
        for v in [first, second] {
            ensure!(
                seen.insert(v),
                "version {v} was handed out twice for one id (incarnation {round}): a new \
                 incarnation must start at a fresh version"
            );
        }
        call!("destroy", store.destroy(&id).await);
    }
    Ok(())
}

pub(crate) async fn stale_compare_and_set_after_expiry_conflicts(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let ways = ["set_if_version(.., 0)", "set", "create"];
    let mut ids = Vec::new();
    for _ in ways {
        let id = id();
        let v = call!("set", store.set(&id, &sample().with_expires_at(150)).await);
        ids.push((id, v));
    }
    sleep_ms(300).await;
    for (how, (id, old)) in ways.into_iter().zip(&ids) {
        let c = session_with(HOUR, json!({"request": "C", "how": how}));
        let v = start_incarnation(&*store, id, how, &c, "over an expired session").await?;
        ensure!(
            v != *old && v != old + 1,
            "{how} over an expired session at version {old} returned version {v}: an expired \
             session is absent, so the write starts a new incarnation at a fresh version"
        );
        stale_cas_conflicts(&*store, id, *old, &format!("after expiry and {how}")).await?;
        let got = call!("get", store.get(id).await).ok_or("the new session vanished")?;
        ensure!(
            got.data() == c.data() && got.version() == v,
            "after expiry and {how}, get does not show the new session at version {v}"
        );
    }
    Ok(())
}

pub(crate) async fn version_inside_a_written_session_is_ignored(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let carrying = |version: u64| sample().with_version(version);
    // A fresh id: the carried version is not stored.
    let id = id();
    let v = call!("set", store.set(&id, &carrying(777_777)).await);
    valid_version("set", v)?;
    ensure!(
        v != 777_777,
        "set stored the version carried inside the session (777777)"
    );
    // Over a live session: plus one, whatever the session carries.
    for carried in [v + 10, 0, v, 1] {
        let before = call!("get", store.get(&id).await).ok_or("the session vanished")?;
        let changed = session_with(HOUR, json!({ "carried": carried })).with_version(carried);
        let next = call!("set", store.set(&id, &changed).await);
        ensure!(
            next == before.version() + 1,
            "set of a session carrying version {carried} over version {} returned {next}, not {}",
            before.version(),
            before.version() + 1
        );
    }
    let current = call!("get", store.get(&id).await)
        .ok_or("the session vanished")?
        .version();
    let next = call!(
        "set_if_version",
        store
            .set_if_version(&id, &carrying(current + 5), current)
            .await
    );
    ensure!(
        next == current + 1,
        "set_if_version of a session carrying version {} returned {next}, not {}",
        current + 5,
        current + 1
    );
    // create and set_if_version(.., 0) ignore it too.
    let created = self::id();
    ensure!(
        call!("create", store.create(&created, &carrying(424_242)).await),
        "create of an absent id returned false"
    );
    let got = call!("get", store.get(&created).await).ok_or("create stored nothing")?;
    ensure!(
        got.version() != 424_242,
        "create stored the version carried inside the session (424242)"
    );
    let cas = self::id();
    let v = call!(
        "set_if_version(.., 0)",
        store.set_if_version(&cas, &carrying(434_343), 0).await
    );
    ensure!(
        v != 434_343,
        "set_if_version(.., 0) stored the version carried inside the session (434343)"
    );
    Ok(())
}

pub(crate) async fn identical_data_with_another_expiry_is_a_write(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let session = sample();
    let v = call!("set", store.set(&id, &session).await);
    let mut later = session.clone();
    later.set_expires_at_millis(session.expires_at_millis() + 7_200_000);
    let next = call!(
        "set of the same data with a later expiry",
        store.set(&id, &later).await
    );
    ensure!(
        next == v + 1,
        "a set of identical data with another expiry returned {next}, not {}: only a set whose \
         data and expiry are both unchanged may keep the version",
        v + 1
    );
    let got = call!("get", store.get(&id).await).ok_or("the session vanished")?;
    ensure!(
        got.expires_at_millis() == later.expires_at_millis() && got.version() == next,
        "after a set that only moved the expiry, get shows expiry {} at version {}, not {} at {next}",
        got.expires_at_millis(),
        got.version(),
        later.expires_at_millis()
    );
    // Moving it earlier is a write as well.
    let mut earlier = session.clone();
    earlier.set_expires_at_millis(session.expires_at_millis() - 600_000);
    let third = call!("set with an earlier expiry", store.set(&id, &earlier).await);
    ensure!(
        third == next + 1,
        "a set of identical data with an earlier expiry returned {third}, not {}",
        next + 1
    );
    let got = call!("get", store.get(&id).await).ok_or("the session vanished")?;
    ensure!(
        got.expires_at_millis() == earlier.expires_at_millis(),
        "a set with an earlier expiry left expiry {} instead of {}",
        got.expires_at_millis(),
        earlier.expires_at_millis()
    );
    Ok(())
}

pub(crate) async fn identical_content_after_destroy_is_a_new_session(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let session = sample();
    let v = call!("set", store.set(&id, &session).await);
    call!("destroy", store.destroy(&id).await);
    let again = call!(
        "set of the same content after destroy",
        store.set(&id, &session).await
    );
    let got = call!("get", store.get(&id).await).ok_or(
        "a set of the same content after destroy stored nothing: the identical-set exception \
         applies only over a live session",
    )?;
    ensure!(
        got.data() == session.data() && got.expires_at_millis() == session.expires_at_millis(),
        "get after destroy and set shows different content"
    );
    ensure!(
        got.version() == again,
        "set returned version {again} but get shows {}",
        got.version()
    );
    ensure!(
        again != v && again != v + 1,
        "set after destroy returned version {again}, continuing the destroyed session's {v}"
    );
    stale_cas_conflicts(&*store, &id, v, "after destroy and an identical set").await
}

pub(crate) async fn errors_name_the_session_and_kind(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let v = call!("set", store.set(&id, &sample()).await);
    let err = match store.set_if_version(&id, &sample(), v + 1).await {
        Err(err) => err,
        Ok(got) => {
            return Err(format!(
                "set_if_version with a wrong version returned {got}"
            ));
        }
    };
    ensure!(
        err.kind() == ErrorKind::Conflict && err.is_conflict() && !err.is_transient(),
        "a version mismatch gave {err:?}, not a (non-transient) conflict"
    );
    names_the_session(&err, &id, "a conflict")?;
    ensure!(
        matches!(err, Error::Conflict { expected, .. } if expected == v + 1),
        "the conflict does not carry the expected version {}: {err:?}",
        v + 1
    );
    let absent = self::id();
    match store.set_if_version(&absent, &sample(), 9).await {
        Err(err) if err.is_conflict() => names_the_session(&err, &absent, "a conflict")?,
        other => {
            return Err(format!(
                "set_if_version(expected 9) on an absent id gave {other:?}, not a conflict"
            ));
        }
    }
    // One level deeper than the limit.
    let deep = session_with(HOUR, super::nested(crate::session::MAX_NESTING + 1));
    for (op, result) in [
        ("set", store.set(&id, &deep).await.map(|_| ())),
        (
            "set_if_version",
            store.set_if_version(&id, &deep, v).await.map(|_| ()),
        ),
    ] {
        match result {
            Err(err) if err.kind() == ErrorKind::Encode => {
                names_the_session(&err, &id, &format!("{op}'s encode error"))?
            }
            other => return Err(format!("{op} of over-deep data gave {other:?}, not Encode")),
        }
    }
    Ok(())
}

/// Incarnations each write path starts in [`fresh_versions_span_the_whole_range_on_every_path`],
/// per way of being absent (a new id, a destroyed one, an expired one).
const INCARNATIONS: usize = 8;

pub(crate) async fn fresh_versions_span_the_whole_range_on_every_path(
    factory: Factory,
) -> CheckResult {
    use crate::session::FRESH_VERSION_SPAN;
    let store = factory.boxed().await;
    let ways = ["set", "create", "set_if_version(.., 0)"];
    let numbered = |how: &str, n: usize| session_with(HOUR, json!({ "how": how, "n": n }));
    let mut drawn: Vec<(u64, String)> = Vec::new();
    // Sessions about to expire, one per way and incarnation, written first so that a single
    // sleep lets them all expire.
    let mut expiring = Vec::new();
    for how in ways {
        for _ in 0..INCARNATIONS {
            let id = id();
            call!(
                "set",
                store
                    .set(&id, &session_with(HOUR, json!({})).with_expires_at(100))
                    .await
            );
            expiring.push((how, id));
        }
    }
    for how in ways {
        // New ids.
        for n in 0..INCARNATIONS {
            drawn.push((
                start_incarnation(&*store, &id(), how, &numbered(how, n), "of a new id").await?,
                format!("{how} of a new id"),
            ));
        }
        // One id, destroyed between incarnations.
        let id = id();
        for n in 0..INCARNATIONS {
            drawn.push((
                start_incarnation(&*store, &id, how, &numbered(how, n), "after destroy").await?,
                format!("{how} after destroy"),
            ));
            call!("destroy", store.destroy(&id).await);
        }
    }
    sleep_ms(150).await;
    for (n, (how, id)) in expiring.iter().enumerate() {
        drawn.push((
            start_incarnation(
                &*store,
                id,
                how,
                &numbered(how, n),
                "over an expired session",
            )
            .await?,
            format!("{how} over an expired session"),
        ));
    }
    // Every fresh version is new, and none is near another: a counter from a random start, or
    // one draw reused, shows as versions a few apart. For versions drawn uniformly from
    // 1..=2^48, two of these 72 within 2^12 of each other has a chance below one in 10^7.
    drawn.sort();
    for pair in drawn.windows(2) {
        let ((a, how_a), (b, how_b)) = (&pair[0], &pair[1]);
        ensure!(
            b - a >= 1 << 12,
            "fresh versions {a} ({how_a}) and {b} ({how_b}) are {} apart: a new incarnation \
             must start at a fresh, unpredictable version drawn anew each time, not a fixed \
             value or a counter",
            b - a
        );
    }
    // Every way draws from the whole span: the chance that 24 uniform draws from 1..=2^48 all
    // fall below 2^46 is 2^-48, so a store that draws from a quarter of the span or less
    // shows here.
    for how in ways {
        let highest = drawn
            .iter()
            .filter(|(_, what)| what.starts_with(how) && what[how.len()..].starts_with(' '))
            .map(|(v, _)| *v)
            .max()
            .unwrap_or(0);
        ensure!(
            highest >= FRESH_VERSION_SPAN >> 2,
            "the {} fresh versions {how} drew are all below {highest} + 1: fresh versions \
             must be drawn from the whole span 1..=FRESH_VERSION_SPAN (2^48), or a version of \
             an old incarnation is likely to match a new one",
            3 * INCARNATIONS
        );
    }
    Ok(())
}
