//! Scans: paging through the live sessions with `scan`. Every check here passes at once for a
//! store that does not declare [`scan`](crate::Capabilities::scan).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde_json::json;

use super::{CheckResult, Factory, HOUR, PastExt, id, session_with, sleep_ms};
use crate::session::{Owner, Session, SessionId};
use crate::store::{ScanCursor, SessionStore};

/// The most pages a check reads before it calls the scan endless.
const MAX_PAGES: usize = 10_000;

fn declared(store: &dyn SessionStore) -> bool {
    store.capabilities().scan
}

/// A session whose data names it by `n`, so that it can be told apart even under a store that
/// returns stored ids.
fn numbered(n: usize) -> Session {
    session_with(HOUR, json!({ "n": n, "pad": "x".repeat(n % 50) }))
}

fn number_of(session: &Session) -> Option<u64> {
    session.data().get("n")?.as_u64()
}

/// Runs `between` after each page (with the page's index). Fails on a page over `limit`,
/// on an id returned twice, and on a scan that does not end. Returns what it returned.
async fn scan_all<F, Fut>(
    store: &dyn SessionStore,
    limit: usize,
    mut between: F,
) -> Result<Vec<(SessionId, Session)>, String>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = CheckResult>,
{
    let mut cursor: Option<ScanCursor> = None;
    let mut seen = BTreeSet::new();
    let mut all = Vec::new();
    for page in 0..MAX_PAGES {
        let got = call!("scan", store.scan(cursor.as_ref(), limit).await);
        ensure!(
            got.sessions.len() <= limit.max(1),
            "scan returned a page of {} sessions with a limit of {limit}",
            got.sessions.len()
        );
        for (id, session) in got.sessions {
            ensure!(
                seen.insert(id.clone()),
                "scan returned session {id:?} twice (page {page})"
            );
            all.push((id, session));
        }
        match got.next {
            None => return Ok(all),
            Some(next) => cursor = Some(next),
        }
        between(page).await?;
    }
    Err(format!("scan did not end after {MAX_PAGES} pages"))
}

async fn nothing(_: usize) -> CheckResult {
    Ok(())
}

pub(crate) async fn scan_returns_every_live_session_once(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    let owner = Owner::new(format!("scan:{}", id())).map_err(|e| e.to_string())?;
    let mut ids = BTreeMap::new();
    for n in 0..230 {
        let id = id();
        let mut session = numbered(n);
        if n % 3 == 0 {
            session.set_owner(Some(owner.clone()));
        }
        call!("set", store.set(&id, &session).await);
        ids.insert(n as u64, id);
    }
    for n in 1000..1005 {
        call!(
            "set",
            store.set(&id(), &numbered(n).with_expires_at(150)).await
        );
    }
    sleep_ms(400).await;
    let stored_ids = store.capabilities().lists_stored_ids;
    for limit in [7, 1000, 0] {
        let all = scan_all(&*store, limit, nothing).await?;
        ensure!(
            all.len() == ids.len(),
            "a scan with limit {limit} returned {} sessions of the {} live ones",
            all.len(),
            ids.len()
        );
        let mut numbers = BTreeSet::new();
        for (scanned_id, session) in &all {
            let n = number_of(session).ok_or("scan returned a session without its data")?;
            ensure!(n < 1000, "scan returned an expired session");
            ensure!(
                numbers.insert(n),
                "scan returned session {n} twice under two ids"
            );
            let id = ids.get(&n).ok_or("scan returned a session nobody wrote")?;
            ensure!(
                stored_ids || scanned_id == id,
                "scan returned the data of {id:?} under {scanned_id:?}"
            );
            let got = call!("get", store.get(id).await).ok_or("a scanned session is absent")?;
            ensure!(
                got == *session,
                "scan returned session {n} other than get does (data, expiry, version or owner)"
            );
        }
        if limit == 0 {
            break; // One page per session: enough to see it progresses.
        }
    }
    Ok(())
}

pub(crate) async fn scan_under_writes_returns_each_steady_session_once(
    factory: Factory,
) -> CheckResult {
    let store = factory.shared().await;
    if !declared(&*store) {
        return Ok(());
    }
    // Steady sessions are live for the whole scan; the others come and go during it.
    let mut steady = BTreeMap::new();
    for n in 0..150 {
        let id = id();
        call!("set", store.set(&id, &numbered(n)).await);
        steady.insert(n as u64, id);
    }
    let mut doomed = Vec::new();
    for n in 500..560 {
        let id = id();
        call!("set", store.set(&id, &numbered(n)).await);
        doomed.push(id);
    }
    let steady_ids: Vec<SessionId> = steady.values().cloned().collect();
    let all = {
        let store = store.clone();
        let steady_ids = steady_ids.clone();
        scan_all(&*store.clone(), 9, move |page| {
            let (store, steady_ids, doomed) = (store.clone(), steady_ids.clone(), doomed.clone());
            async move {
                // New sessions, destroyed ones, and writes and touches of steady ones.
                for k in 0..4 {
                    call!(
                        "set",
                        store.set(&id(), &numbered(2000 + page * 4 + k)).await
                    );
                }
                for id in doomed.iter().skip(page * 3).take(3) {
                    call!("destroy", store.destroy(id).await);
                }
                let steady_one = &steady_ids[(page * 7) % steady_ids.len()];
                let n = (page * 7) % steady_ids.len();
                call!("set", store.set(steady_one, &numbered(n)).await);
                let other = &steady_ids[(page * 11 + 3) % steady_ids.len()];
                call!(
                    "touch",
                    store.touch(other, SystemTime::now() + HOUR * 2).await
                );
                Ok(())
            }
        })
        .await?
    };
    let stored_ids = store.capabilities().lists_stored_ids;
    let mut found = BTreeSet::new();
    for (scanned_id, session) in &all {
        let Some(n) = number_of(session) else {
            return Err("scan returned a session without its data".into());
        };
        if let Some(id) = steady.get(&n) {
            ensure!(
                found.insert(n),
                "scan returned steady session {n} twice while other writes happened"
            );
            ensure!(
                stored_ids || scanned_id == id,
                "scan returned the data of {id:?} under {scanned_id:?}"
            );
        }
    }
    ensure!(
        found.len() == steady.len(),
        "scan returned {} of the {} sessions that were live for the whole scan, while other \
         sessions were written and destroyed between its pages",
        found.len(),
        steady.len()
    );
    Ok(())
}

pub(crate) async fn scan_resumes_from_a_saved_cursor(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    for n in 0..40 {
        call!("set", store.set(&id(), &numbered(n)).await);
    }
    let first = call!("scan", store.scan(None, 15).await);
    let saved = first
        .next
        .as_ref()
        .ok_or("a scan of 40 sessions with limit 15 ended after one page")?
        .as_str()
        .to_string();
    let mut numbers: BTreeSet<u64> = first
        .sessions
        .iter()
        .filter_map(|(_, s)| number_of(s))
        .collect();
    // The cursor as saved text, as an interrupted copy would keep it.
    let mut cursor = Some(ScanCursor::new(saved));
    let mut pages = 0;
    while let Some(current) = cursor {
        let page = call!("scan", store.scan(Some(&current), 15).await);
        for (_, session) in &page.sessions {
            let n = number_of(session).ok_or("scan returned a session without its data")?;
            ensure!(
                numbers.insert(n),
                "a resumed scan returned session {n} again"
            );
        }
        cursor = page.next;
        pages += 1;
        ensure!(pages < MAX_PAGES, "a resumed scan did not end");
    }
    ensure!(
        numbers.len() == 40,
        "a scan resumed from a saved cursor returned {} of 40 sessions in all",
        numbers.len()
    );
    Ok(())
}

pub(crate) async fn scans_see_only_their_own_store(factory: Factory) -> CheckResult {
    let (a, b) = (factory.boxed().await, factory.boxed().await);
    if !declared(&*a) {
        return Ok(());
    }
    let all = scan_all(&*a, 10, nothing).await?;
    ensure!(
        all.is_empty(),
        "a scan of an empty store returned {} sessions",
        all.len()
    );
    for n in 0..12 {
        call!("set in a", a.set(&id(), &numbered(n)).await);
    }
    for n in 100..105 {
        call!("set in b", b.set(&id(), &numbered(n)).await);
    }
    let all = scan_all(&*b, 4, nothing).await?;
    ensure!(
        all.len() == 5
            && all
                .iter()
                .all(|(_, s)| number_of(s).is_some_and(|n| n >= 100)),
        "a scan of store b returned {} sessions, some of them store a's",
        all.len()
    );
    call!("clear a", a.clear().await);
    let all = scan_all(&*a, 4, nothing).await?;
    ensure!(
        all.is_empty(),
        "a scan after clear returned {} sessions",
        all.len()
    );
    Ok(())
}

/// The numbers of the sessions a scan returns from `cursor` (`None`: the start) to its end,
/// reading pages of `limit`; stops after `pages` pages when given, returning the next cursor
/// as saved text.
async fn scan_numbers(
    store: &dyn SessionStore,
    mut cursor: Option<ScanCursor>,
    limit: usize,
    pages: Option<usize>,
) -> Result<(Vec<u64>, Option<String>), String> {
    let mut numbers = Vec::new();
    for page in 0..MAX_PAGES {
        if pages == Some(page) {
            return Ok((numbers, cursor.map(|c| c.as_str().to_string())));
        }
        let got = call!("scan", store.scan(cursor.as_ref(), limit).await);
        for (_, session) in &got.sessions {
            numbers.push(number_of(session).ok_or("scan returned a session without its data")?);
        }
        match got.next {
            None => return Ok((numbers, None)),
            Some(next) => cursor = Some(next),
        }
    }
    Err(format!("scan did not end after {MAX_PAGES} pages"))
}

/// Fails unless `before` and `after` (a scan's two parts) hold every steady session (numbers
/// below `steady`) exactly once.
fn each_steady_once(before: &[u64], after: &[u64], steady: u64, what: &str) -> CheckResult {
    let mut seen = BTreeSet::new();
    for &n in before.iter().chain(after).filter(|&&n| n < steady) {
        ensure!(seen.insert(n), "{what} returned session {n} twice");
    }
    ensure!(
        seen.len() as u64 == steady,
        "{what} returned {} of the {steady} sessions live for the whole scan",
        seen.len()
    );
    Ok(())
}

pub(crate) async fn a_saved_cursor_resumes_exactly_after_other_scans_and_writes(
    factory: Factory,
) -> CheckResult {
    const STEADY: u64 = 60;
    let store = factory.boxed().await;
    if !declared(&*store) {
        return Ok(());
    }
    let mut steady_ids = Vec::new();
    for n in 0..STEADY {
        let id = id();
        call!("set", store.set(&id, &numbered(n as usize)).await);
        steady_ids.push(id);
    }
    let doomed: Vec<SessionId> = (0..12).map(|_| id()).collect();
    for (k, id) in doomed.iter().enumerate() {
        call!("set", store.set(id, &numbered(500 + k)).await);
    }
    // Two scans stopped part-way, their cursors kept only as text.
    let (a_before, a) = scan_numbers(&*store, None, 10, Some(2)).await?;
    let a = a.ok_or("a scan of 72 sessions with limit 10 ended after two pages")?;
    let (b_before, b) = scan_numbers(&*store, None, 7, Some(3)).await?;
    let b = b.ok_or("a scan of 72 sessions with limit 7 ended after three pages")?;
    // Meanwhile: a whole other scan, new and destroyed sessions, steady ones rewritten.
    let (other, _) = scan_numbers(&*store, None, 5, None).await?;
    each_steady_once(&other, &[], STEADY, "a whole scan between the others")?;
    for k in 0..12 {
        call!("set", store.set(&id(), &numbered(1000 + k)).await);
    }
    for id in &doomed[..6] {
        call!("destroy", store.destroy(id).await);
    }
    for (n, id) in steady_ids.iter().enumerate().step_by(5) {
        call!("set", store.set(id, &numbered(n)).await);
    }
    // Each saved cursor, handed back as text, goes on exactly where its scan stopped; the
    // same cursor handed back again does too.
    let (a_after, _) = scan_numbers(&*store, Some(ScanCursor::new(a.clone())), 10, None).await?;
    each_steady_once(
        &a_before,
        &a_after,
        STEADY,
        "a scan resumed from its saved cursor after other scans and writes",
    )?;
    for id in &doomed[6..] {
        call!("destroy", store.destroy(id).await);
    }
    let (b_after, _) = scan_numbers(&*store, Some(ScanCursor::new(b)), 3, None).await?;
    each_steady_once(
        &b_before,
        &b_after,
        STEADY,
        "a second scan resumed from its saved cursor, with another limit",
    )?;
    let (a_again, _) = scan_numbers(&*store, Some(ScanCursor::new(a)), 10, None).await?;
    each_steady_once(
        &a_before,
        &a_again,
        STEADY,
        "a scan resumed a second time from the same saved cursor",
    )?;
    Ok(())
}

/// One entry the store cannot decode (planted with
/// [`make_undecodable`](SessionStore::make_undecodable)) among six sessions: `get` of it is a
/// `Decode` error; a scan reports it once, in `undecodable`, and returns every other session
/// (in pages of 2, so that it sits inside a page and at a page's edge in turn); a listing of
/// its owner lists it with no data and the error, beside the others with theirs; `destroy`
/// of its id ends it. Passes at once for a store that cannot plant one.
pub(crate) async fn undecodable_entries_are_reported_and_never_stop_scans_or_listings(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let caps = store.capabilities();
    if !caps.scan && !caps.owners {
        return Ok(());
    }
    let ada = Owner::new(format!("ada:{}", id())).map_err(|err| err.to_string())?;
    let mut ids = Vec::new();
    for n in 0..7 {
        let id = id();
        let owner = (n < 5).then(|| ada.clone());
        call!("set", store.set(&id, &numbered(n).with_owner(owner)).await);
        ids.push(id);
    }
    let bad = ids[2].clone();
    if !call!("make_undecodable", store.make_undecodable(&bad).await) {
        return Ok(());
    }
    match store.get(&bad).await {
        Err(err) if err.kind() == crate::ErrorKind::Decode => {}
        other => {
            return Err(format!(
                "make_undecodable returned true, but get of that session then returned {}",
                match other {
                    Ok(found) => format!("Ok({:?})", found.map(|_| "a session")),
                    Err(err) => super::chain(&err),
                }
            ));
        }
    }
    if caps.scan {
        for limit in [2, 3, 1000] {
            let mut cursor: Option<ScanCursor> = None;
            let (mut numbers, mut reported) = (BTreeSet::new(), Vec::new());
            for page in 0..MAX_PAGES {
                let got = call!("scan", store.scan(cursor.as_ref(), limit).await);
                for (_, session) in &got.sessions {
                    let n = number_of(session).ok_or("a scanned session lost its data")?;
                    ensure!(numbers.insert(n), "scan returned session {n} twice");
                }
                reported.extend(got.undecodable);
                match got.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
                ensure!(page + 1 < MAX_PAGES, "the scan did not end");
            }
            let want: BTreeSet<u64> = [0, 1, 3, 4, 5, 6].into();
            ensure!(
                numbers == want,
                "a scan in pages of {limit} past an entry it cannot decode returned sessions \
                 {numbers:?}, not {want:?}: one bad entry must not stop or skip the others"
            );
            ensure!(
                reported.len() == 1,
                "a scan in pages of {limit} reported {} undecodable entries, not the 1 planted",
                reported.len()
            );
            ensure!(
                reported[0].error.kind() == crate::ErrorKind::Decode,
                "the undecodable entry was reported with a {:?} error, not Decode",
                reported[0].error.kind()
            );
            if !caps.lists_stored_ids {
                ensure!(
                    reported[0].id.as_ref() == Some(&bad),
                    "the undecodable entry was reported under another id"
                );
            }
        }
    }
    if caps.owners {
        let listed = call!("sessions_of", store.sessions_of(&ada, true).await);
        ensure!(
            listed.len() == 5,
            "sessions_of with data listed {} sessions of an owner with 5, one of them \
             undecodable: it must list the undecodable one as such and the others in full",
            listed.len()
        );
        let (broken, whole): (Vec<_>, Vec<_>) =
            listed.into_iter().partition(|e| e.undecodable.is_some());
        ensure!(
            broken.len() == 1 && broken[0].data.is_none(),
            "sessions_of with data listed {} entries as undecodable (want 1, with no data)",
            broken.len()
        );
        let numbers: BTreeSet<u64> = whole
            .iter()
            .filter_map(|e| e.data.as_ref()?.get("n")?.as_u64())
            .collect();
        ensure!(
            numbers == [0, 1, 3, 4].into(),
            "sessions_of with data listed the decodable sessions {numbers:?}, not [0, 1, 3, 4]"
        );
        let without = call!("sessions_of", store.sessions_of(&ada, false).await);
        ensure!(
            without.len() == 5,
            "sessions_of without data listed {} sessions of an owner with 5",
            without.len()
        );
        // The listed id of the undecodable entry ends it.
        call!("destroy", store.destroy(&broken[0].id).await);
        let after = call!("sessions_of", store.sessions_of(&ada, true).await);
        ensure!(
            after.len() == 4 && after.iter().all(|e| e.undecodable.is_none()),
            "after destroy of the undecodable entry's listed id, sessions_of listed {} \
             entries ({} undecodable), not the 4 others",
            after.len(),
            after.iter().filter(|e| e.undecodable.is_some()).count()
        );
    } else {
        call!("destroy", store.destroy(&bad).await);
    }
    if caps.scan {
        let page = call!("scan", store.scan(None, 1000).await);
        ensure!(
            page.undecodable.is_empty(),
            "after destroy, a scan still reports the undecodable entry"
        );
    }
    Ok(())
}
