//! The end-to-end scenarios, written once for both adapters.
//!
//! Each scenario gets an app (built by the adapter's test module for the [`Variant`] it
//! needs) over a [`Recording`] store that wraps a fresh backend store, and drives it with
//! requests and a cookie jar the way a browser would.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use session_stores::{Owner, SessionId, SessionStore};

use crate::adapters::backends::Backend;
use crate::adapters::common::{App, Jar, Recording, Variant};

/// Which adapter a scenario runs under: a few expectations differ (the cookie of
/// tower-sessions is the plain id; actix-session signs it, and its `update_ttl` is a
/// `touch`, which keeps the version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    Tower,
    Actix,
}

/// Runs every scenario on `backend` (skipping when it is `None`), each on a fresh store,
/// with apps from `make_app`.
pub async fn run_all<F, Fut, A>(adapter: Adapter, backend: Option<Backend>, make_app: F)
where
    F: Fn(Arc<Recording>, Variant) -> Fut,
    Fut: Future<Output = A>,
    A: App,
{
    let Some(backend) = backend else { return };
    let name = backend.name();
    macro_rules! scenario {
        ($scenario:ident, $variant:expr) => {{
            let store = Recording::new(backend.fresh().await);
            let app = make_app(Arc::clone(&store), $variant).await;
            eprintln!("{adapter:?} on {name}: {} ...", stringify!($scenario));
            $scenario(adapter, &app, &store).await;
            store.clear().await.expect("clear the test store");
            eprintln!("{adapter:?} on {name}: {} ok", stringify!($scenario));
        }};
    }
    scenario!(session_survives_requests, Variant::Default);
    scenario!(session_expires, Variant::ShortTtl);
    scenario!(logout_destroys_the_session_in_the_store, Variant::Default);
    scenario!(login_cycles_the_id, Variant::Default);
    scenario!(
        forged_or_unknown_cookies_get_a_fresh_session,
        Variant::Default
    );
    scenario!(
        activity_extends_the_session_without_changing_its_data,
        Variant::ExtendOnEveryRequest
    );
    scenario!(log_out_everywhere_else, Variant::Default);
    scenario!(concurrent_requests_keep_both_changes, Variant::Default);
    scenario!(
        a_request_in_flight_never_brings_back_a_logged_out_session,
        Variant::Default
    );
    scenario!(an_undecodable_session_starts_a_fresh_one, Variant::Default);
    backend.finish().await;
}

/// The id of the session the jar's cookie names.
fn id_of(adapter: Adapter, jar: &Jar, store: &Recording) -> SessionId {
    let cookie = jar.0.as_deref().expect("the jar holds a session cookie");
    match adapter {
        // tower-sessions' cookie is the id itself.
        Adapter::Tower => {
            let id = SessionId::new(cookie).expect("a valid id in the cookie");
            assert_eq!(
                id,
                store.last_created(),
                "the cookie names the created session"
            );
            id
        }
        // actix-session signs its cookie: the last created session is the one.
        Adapter::Actix => store.last_created(),
    }
}

async fn session_survives_requests<A: App>(adapter: Adapter, app: &A, store: &Recording) {
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    let first_cookie = jar.clone();
    let id = id_of(adapter, &jar, store);
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "2".into()));
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "3".into()));
    if adapter == Adapter::Tower {
        // (actix-session encrypts its cookie afresh on every write, so only the store can
        // tell that the key stayed: the count of created sessions below.)
        assert_eq!(jar, first_cookie, "the session keeps its id");
    }
    assert_eq!(
        store.created().len(),
        1,
        "one session for all three requests"
    );
    let stored = store.get(&id).await.unwrap().expect("stored");
    // actix-session keeps values as JSON text; tower-sessions as JSON.
    let count = stored.get_value("count").expect("count is stored");
    assert!(
        count == &serde_json::json!(3) || count == &serde_json::json!("3"),
        "{count}"
    );
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(
        app.send(&mut jar, "GET", "/peek").await,
        (200, "count=3 user=none".into())
    );
}

async fn session_expires<A: App>(adapter: Adapter, app: &A, store: &Recording) {
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "2".into()));
    let old = id_of(adapter, &jar, store);
    assert!(store.get(&old).await.unwrap().is_some());
    // The variant's TTL is one second.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        store.get(&old).await.unwrap().is_none(),
        "expired in the store"
    );
    // The browser still sends the old cookie: the server starts over.
    let mut stale = jar.clone();
    assert_eq!(
        app.send(&mut stale, "GET", "/peek").await,
        (200, "count=none user=none".into())
    );
    assert_eq!(
        app.send(&mut stale, "GET", "/count").await,
        (200, "1".into())
    );
    let new = store.last_created();
    assert_ne!(new, old, "a fresh session under a new id");
    assert!(
        store.get(&old).await.unwrap().is_none(),
        "the old id is not resurrected"
    );
}

async fn logout_destroys_the_session_in_the_store<A: App>(
    adapter: Adapter,
    app: &A,
    store: &Recording,
) {
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    let id = id_of(adapter, &jar, store);
    let old_cookie = jar.clone();
    assert_eq!(
        app.send(&mut jar, "POST", "/logout").await,
        (200, "bye".into())
    );
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "destroyed in the store"
    );
    assert_eq!(store.len().await.unwrap(), 0);
    assert_eq!(jar, Jar::default(), "the cookie is removed");
    // Replaying the old cookie does not bring the session back.
    let mut replay = old_cookie;
    assert_eq!(
        app.send(&mut replay, "GET", "/peek").await,
        (200, "count=none user=none".into())
    );
    assert_eq!(
        app.send(&mut replay, "GET", "/count").await,
        (200, "1".into())
    );
    assert_ne!(store.last_created(), id);
    assert!(store.get(&id).await.unwrap().is_none());
}

async fn login_cycles_the_id<A: App>(adapter: Adapter, app: &A, store: &Recording) {
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    let before = id_of(adapter, &jar, store);
    let before_cookie = jar.clone();
    assert_eq!(
        app.send(&mut jar, "POST", "/login").await,
        (200, "welcome ada".into())
    );
    assert_ne!(jar, before_cookie, "a new cookie");
    let after = id_of(adapter, &jar, store);
    assert_ne!(after, before, "a new id");
    assert!(
        store.get(&before).await.unwrap().is_none(),
        "the old id no longer loads"
    );
    assert_eq!(store.len().await.unwrap(), 1);
    // The data moved to the new id.
    assert_eq!(
        app.send(&mut jar, "GET", "/peek").await,
        (200, "count=1 user=ada".into())
    );
    // Whoever held the old id (a planted cookie) gets nothing.
    let mut attacker = before_cookie;
    assert_eq!(
        app.send(&mut attacker, "GET", "/peek").await,
        (200, "count=none user=none".into())
    );
}

async fn forged_or_unknown_cookies_get_a_fresh_session<A: App>(
    adapter: Adapter,
    app: &A,
    store: &Recording,
) {
    let unknown = SessionId::generate();
    let forged = [
        "not a valid id at all!".to_string(),
        "../../etc/passwd".to_string(),
        "x".repeat(300),
        // Looks like a real cookie of the app, but names no session.
        unknown.as_str().to_string(),
        // A tower-sessions id that was never issued.
        "AAAAAAAAAAAAAAAAAAAAAA".to_string(),
    ];
    for (n, cookie) in forged.iter().enumerate() {
        let mut jar = Jar::with(cookie);
        assert_eq!(
            app.send(&mut jar, "GET", "/peek").await,
            (200, "count=none user=none".into()),
            "{cookie}"
        );
        assert_eq!(
            app.send(&mut jar, "GET", "/count").await,
            (200, "1".into()),
            "{cookie}"
        );
        let issued = jar.0.clone().expect("a new cookie");
        assert_ne!(&issued, cookie, "the forged value is never adopted");
        let id = id_of(adapter, &jar, store);
        assert_ne!(id.as_str(), cookie);
        assert_eq!(
            store.created().len(),
            n + 1,
            "one fresh session per forged cookie"
        );
        assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "2".into()));
    }
    assert!(
        store.get(&unknown).await.unwrap().is_none(),
        "no session under a forged id"
    );
    let tower_zero = SessionId::new("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
    assert!(store.get(&tower_zero).await.unwrap().is_none());
    assert_eq!(store.len().await.unwrap(), forged.len() as u64);
}

async fn activity_extends_the_session_without_changing_its_data<A: App>(
    adapter: Adapter,
    app: &A,
    store: &Recording,
) {
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    let id = id_of(adapter, &jar, store);
    let before = store.get(&id).await.unwrap().expect("stored");
    // Let the clock move past the millisecond of the first expiry.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A request that reads but does not change the session.
    assert_eq!(
        app.send(&mut jar, "GET", "/peek").await,
        (200, "count=1 user=none".into())
    );
    let after = store.get(&id).await.unwrap().expect("still stored");
    assert!(
        after.expires_at_millis() > before.expires_at_millis(),
        "the expiry moved forward: {} -> {}",
        before.expires_at_millis(),
        after.expires_at_millis()
    );
    assert_eq!(after.data(), before.data(), "the data is unchanged");
    if adapter == Adapter::Actix {
        // update_ttl is touch: not a write of the data, so the version stays.
        assert_eq!(after.version(), before.version());
    }
    assert_eq!(store.created().len(), 1, "the same session, not a new one");
}

/// One user logs in from three browsers, lists three devices, and from the first ends the
/// other two: they are logged out, the first is not.
async fn log_out_everywhere_else<A: App>(_adapter: Adapter, app: &A, store: &Recording) {
    let mut jars = [Jar::default(), Jar::default(), Jar::default()];
    // A session that never logs in has no owner and is never listed or ended.
    let mut anonymous = Jar::default();
    assert_eq!(app.send(&mut anonymous, "GET", "/count").await.0, 200);
    for jar in &mut jars {
        assert_eq!(app.send(jar, "GET", "/count").await.0, 200);
        let (status, body) = app.send(jar, "POST", "/login").await;
        assert_eq!((status, body.as_str()), (200, "welcome ada"));
    }
    let [first, second, third] = &mut jars;
    assert_eq!(
        app.send(first, "GET", "/devices").await,
        (200, "3".to_string()),
        "three logged-in browsers are three devices of one user"
    );
    let (status, body) = app.send(first, "POST", "/logout-others").await;
    assert_eq!((status, body.as_str()), (200, "ended 2"));
    for (name, jar) in [("second", second), ("third", third)] {
        let (status, body) = app.send(jar, "GET", "/peek").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "count=none user=none"),
            "the {name} browser is logged out"
        );
    }
    let (status, body) = app.send(first, "GET", "/peek").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "count=1 user=ada"),
        "the browser that logged the others out is still logged in"
    );
    assert_eq!(
        app.send(first, "GET", "/devices").await,
        (200, "1".to_string()),
        "one device is left"
    );
    let (status, body) = app.send(&mut anonymous, "GET", "/peek").await;
    assert_eq!((status, body.as_str()), (200, "count=1 user=none"));
    assert!(store.len().await.unwrap() >= 2);
}

/// Two requests load one session; one adds `cart`, the other `theme`; both save, the second
/// after the first: the session ends with both.
async fn concurrent_requests_keep_both_changes<A: App>(
    adapter: Adapter,
    app: &A,
    store: &Recording,
) {
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    let id = id_of(adapter, &jar, store);
    let (mut one, mut other) = (jar.clone(), jar.clone());
    let ((cart, theme), ()) = tokio::join!(
        async {
            tokio::join!(
                app.send(&mut one, "POST", "/hold-cart"),
                app.send(&mut other, "POST", "/hold-theme")
            )
        },
        async {
            // Both have loaded the same version before either changes it.
            store.wait_loaded(2).await;
            store.go.add_permits(2);
        }
    );
    assert_eq!(cart, (200, "held".into()));
    assert_eq!(theme, (200, "held".into()));
    let stored = store
        .get(&id)
        .await
        .unwrap()
        .expect("the session is still there");
    for key in ["count", "cart", "theme"] {
        assert!(
            stored.get_value(key).is_some(),
            "{key} was lost: {:?}",
            stored.data()
        );
    }
    assert_eq!(store.created().len(), 1, "no new session");
}

/// A request loads a logged-in session; while it runs, the user logs out (`destroy`) or
/// clicks "log out everywhere" (`destroy_owner`); then the request saves. The session stays
/// gone, no session of the user is left, and nothing of the old state follows the cookie.
async fn a_request_in_flight_never_brings_back_a_logged_out_session<A: App>(
    adapter: Adapter,
    app: &A,
    store: &Recording,
) {
    let ada = Owner::new("ada").unwrap();
    for everywhere in [false, true] {
        let mut jar = Jar::default();
        assert_eq!(app.send(&mut jar, "GET", "/count").await.0, 200);
        assert_eq!(
            app.send(&mut jar, "POST", "/login").await,
            (200, "welcome ada".into())
        );
        let id = id_of(adapter, &jar, store);
        assert_eq!(store.sessions_of(&ada, false).await.unwrap().len(), 1);
        let mut stolen = jar.clone();
        let (held, ()) = tokio::join!(app.send(&mut stolen, "POST", "/hold-cart"), async {
            store.wait_loaded(1).await;
            if everywhere {
                assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
            } else {
                store.destroy(&id).await.unwrap();
            }
            store.go.add_permits(1);
        });
        assert_eq!(held.0, 200, "the request itself goes through");
        assert!(
            store.get(&id).await.unwrap().is_none(),
            "the logged-out session was brought back (everywhere: {everywhere})"
        );
        assert!(
            store.sessions_of(&ada, true).await.unwrap().is_empty(),
            "a session of the logged-out user exists (everywhere: {everywhere})"
        );
        // Whatever cookie the in-flight request left, it carries nothing of the old state.
        assert_eq!(
            app.send(&mut stolen, "GET", "/peek").await,
            (200, "count=none user=none".into()),
            "everywhere: {everywhere}"
        );
        for created in store.created() {
            if let Some(session) = store.get(&created).await.unwrap() {
                assert!(
                    session.get_value("user").is_none() && session.get_value("count").is_none(),
                    "old state under a new key: {:?}",
                    session.data()
                );
            }
        }
    }
}

/// A session the store cannot decode (a corrupt entry, a key rotated out of the ring) gives
/// a fresh session, never an error on every request.
async fn an_undecodable_session_starts_a_fresh_one<A: App>(
    adapter: Adapter,
    app: &A,
    store: &Recording,
) {
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "2".into()));
    let id = id_of(adapter, &jar, store);
    store.poison(&id);
    assert_eq!(
        app.send(&mut jar, "GET", "/count").await,
        (200, "1".into()),
        "a fresh session, not a 500"
    );
    assert_ne!(store.last_created(), id, "the fresh session has a new id");
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "2".into()));
}
