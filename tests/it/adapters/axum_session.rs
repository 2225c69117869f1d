//! axum_session 0.22 under axum, through `tower::ServiceExt::oneshot`, over
//! [`AxumSessionPool`] on every backend.
//!
//! axum_session does not fit the shared [`scenarios`](crate::adapters::scenarios): it adopts
//! the id a cookie names (a fresh session under a forged or ended id, unless cookies are
//! signed) and keeps sessions in its own memory. So its scenarios are here, with the app
//! configured as the adapter's docs advise (`with_memory_lifetime(ZERO)`: every request
//! loads from the store), and "two processes" are two apps, each with its own
//! axum_session memory and its own adapter, over one store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::{get, post};
use axum::{Extension, Router};
use axum_session::{Key, Session, SessionConfig, SessionLayer, SessionStore as AxumStore};
use http_body_util::BodyExt;
use serde_json::Value;
use session_stores::{AxumSessionPool, Owner, SessionId, SessionStore};
use tower::ServiceExt;

use crate::adapters::backends::Backend;
use crate::adapters::common::{App, COOKIE, Jar, OWNER_KEY, Recording};

type S = Session<AxumSessionPool<Recording>>;

async fn count(session: S) -> String {
    let n = session.get::<u64>("count").unwrap_or(0) + 1;
    session.set("count", n);
    n.to_string()
}

async fn peek(session: S) -> String {
    let count = session.get::<u64>("count");
    let user = session.get::<String>("user");
    format!(
        "count={} user={}",
        count.map_or("none".to_string(), |n| n.to_string()),
        user.as_deref().unwrap_or("none")
    )
}

async fn login(session: S) -> String {
    session.renew();
    session.set("user", "ada");
    "welcome ada".to_string()
}

async fn logout(session: S) -> String {
    session.destroy();
    "bye".to_string()
}

async fn logout_others(Extension(store): Extension<Arc<Recording>>, session: S) -> String {
    let user = session
        .get::<String>(OWNER_KEY)
        .expect("a logged-in session");
    let owner = Owner::new(user).unwrap();
    let current = SessionId::new(session.get_session_id()).unwrap();
    let ended = store.destroy_owner(&owner, Some(&current)).await.unwrap();
    format!("ended {ended}")
}

/// Reads the session, waits for the scenario, then sets `key`.
async fn hold(store: &Recording, session: &S, key: &str) -> String {
    let _ = session.get::<String>("user");
    store.hold().await;
    session.set(key, "on");
    "held".to_string()
}

async fn hold_cart(Extension(store): Extension<Arc<Recording>>, session: S) -> String {
    hold(&store, &session, "cart").await
}

async fn hold_theme(Extension(store): Extension<Arc<Recording>>, session: S) -> String {
    hold(&store, &session, "theme").await
}

/// How the app is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    /// Unsigned cookies (the cookie is the id), sessions live an hour.
    Plain,
    /// Sessions live one second.
    ShortTtl,
    /// Signed cookies.
    Signed,
}

struct AxumApp(Router);

async fn app(store: Arc<Recording>, config: Config) -> AxumApp {
    let pool = AxumSessionPool::from_arc(Arc::clone(&store)).with_owner_key(OWNER_KEY);
    let mut session_config = SessionConfig::default()
        .with_session_name(COOKIE)
        .with_memory_lifetime(Duration::ZERO.try_into().unwrap())
        .with_lifetime(Duration::from_secs(3600).try_into().unwrap());
    match config {
        Config::Plain => {}
        Config::ShortTtl => {
            session_config =
                session_config.with_lifetime(Duration::from_secs(1).try_into().unwrap())
        }
        Config::Signed => session_config = session_config.with_key(Key::from(&[7u8; 64])),
    }
    let sessions = AxumStore::new(Some(pool), session_config)
        .await
        .expect("axum_session's store");
    AxumApp(
        Router::new()
            .route("/count", get(count))
            .route("/peek", get(peek))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route("/logout-others", post(logout_others))
            .route("/hold-cart", post(hold_cart))
            .route("/hold-theme", post(hold_theme))
            .layer(SessionLayer::new(sessions))
            .layer(Extension(store)),
    )
}

impl App for AxumApp {
    async fn send(&self, jar: &mut Jar, method: &str, path: &str) -> (u16, String) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(cookie) = jar.header() {
            request = request.header(header::COOKIE, cookie);
        }
        let response = self
            .0
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        for set_cookie in response.headers().get_all(header::SET_COOKIE) {
            jar.apply(set_cookie.to_str().unwrap());
        }
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }
}

/// The id an unsigned cookie names (axum_session's cookie is the id itself).
fn id_of(jar: &Jar) -> SessionId {
    SessionId::new(jar.0.as_deref().expect("a session cookie")).expect("a valid id")
}

fn text(value: &str) -> Value {
    Value::String(value.to_string())
}

async fn run(backend: Option<Backend>) {
    let Some(backend) = backend else { return };
    let name = backend.name();
    macro_rules! scenario {
        ($scenario:ident) => {{
            let store = Recording::new(backend.fresh().await);
            eprintln!("axum_session on {name}: {} ...", stringify!($scenario));
            $scenario(&store).await;
            store.clear().await.expect("clear the test store");
            eprintln!("axum_session on {name}: {} ok", stringify!($scenario));
        }};
    }
    scenario!(session_survives_requests);
    scenario!(session_expires);
    scenario!(logout_destroys_the_session_in_the_store);
    scenario!(login_renews_the_id);
    scenario!(forged_or_unknown_cookies_get_a_fresh_session);
    scenario!(activity_extends_the_session);
    scenario!(log_out_everywhere_else_takes_effect_on_the_next_request);
    scenario!(concurrent_requests_of_two_processes_keep_both_changes);
    scenario!(a_request_in_flight_never_brings_back_a_logged_out_session);
    scenario!(an_undecodable_session_starts_a_fresh_one);
    backend.finish().await;
}

crate::per_backend!(
    tokio::test(flavor = "multi_thread", worker_threads = 2),
    run
);

async fn session_survives_requests(store: &Arc<Recording>) {
    let app = app(Arc::clone(store), Config::Plain).await;
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    let first = jar.clone();
    let id = id_of(&jar);
    assert_eq!(store.last_created(), id, "created with the atomic create");
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "2".into()));
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "3".into()));
    assert_eq!(jar, first, "the session keeps its id");
    assert_eq!(store.created().len(), 1, "one session for three requests");
    let stored = store.get(&id).await.unwrap().expect("stored");
    // axum_session keeps each value as JSON text.
    assert_eq!(stored.get_value("count"), Some(&text("3")));
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(
        app.send(&mut jar, "GET", "/peek").await,
        (200, "count=3 user=none".into())
    );
    // A second process reads the same session from the store.
    let other = self::app(Arc::clone(store), Config::Plain).await;
    assert_eq!(
        other.send(&mut jar, "GET", "/count").await,
        (200, "4".into())
    );
}

async fn session_expires(store: &Arc<Recording>) {
    let app = app(Arc::clone(store), Config::ShortTtl).await;
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    let id = id_of(&jar);
    let stored = store.get(&id).await.unwrap().expect("stored");
    // axum_session gives whole seconds: the expiry is a whole second, at most a second on.
    let left = stored.expires_at_millis() - session_stores::now_millis();
    assert_eq!(stored.expires_at_millis() % 1000, 0);
    assert!((-100..=1000).contains(&left), "{left} ms left");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "expired in the store"
    );
    assert_eq!(
        app.send(&mut jar, "GET", "/peek").await,
        (200, "count=none user=none".into())
    );
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
}

async fn logout_destroys_the_session_in_the_store(store: &Arc<Recording>) {
    let app = app(Arc::clone(store), Config::Plain).await;
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    assert_eq!(app.send(&mut jar, "POST", "/login").await.0, 200);
    let id = id_of(&jar);
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
    // Replaying the old cookie: axum_session adopts the id, but nothing of the session
    // comes back.
    let mut replay = old_cookie;
    assert_eq!(
        app.send(&mut replay, "GET", "/peek").await,
        (200, "count=none user=none".into())
    );
    assert_eq!(
        app.send(&mut replay, "GET", "/count").await,
        (200, "1".into())
    );
    let ada = Owner::new("ada").unwrap();
    assert!(store.sessions_of(&ada, false).await.unwrap().is_empty());
    if let Some(session) = store.get(&id).await.unwrap() {
        assert!(session.get_value("user").is_none(), "{:?}", session.data());
    }
}

async fn login_renews_the_id(store: &Arc<Recording>) {
    let app = app(Arc::clone(store), Config::Plain).await;
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    let before = id_of(&jar);
    assert_eq!(
        app.send(&mut jar, "POST", "/login").await,
        (200, "welcome ada".into())
    );
    let after = id_of(&jar);
    assert_ne!(after, before, "a new id");
    assert_eq!(store.last_created(), after, "the new id was created");
    assert!(
        store.get(&before).await.unwrap().is_none(),
        "the old id is gone"
    );
    assert_eq!(
        app.send(&mut jar, "GET", "/peek").await,
        (200, "count=1 user=ada".into())
    );
    let ada = Owner::new("ada").unwrap();
    let listed = store.sessions_of(&ada, false).await.unwrap();
    assert_eq!(listed.len(), 1, "the owner key names the owner");
}

async fn forged_or_unknown_cookies_get_a_fresh_session(store: &Arc<Recording>) {
    // Signed cookies: a forged value is never adopted.
    let signed = app(Arc::clone(store), Config::Signed).await;
    let unknown = SessionId::generate();
    let forged = [
        "not a valid id at all!".to_string(),
        "x".repeat(300),
        unknown.as_str().to_string(),
        "00000000-0000-4000-8000-000000000000".to_string(),
    ];
    for (n, cookie) in forged.iter().enumerate() {
        let mut jar = Jar::with(cookie);
        assert_eq!(
            signed.send(&mut jar, "GET", "/peek").await,
            (200, "count=none user=none".into()),
            "{cookie}"
        );
        let mut jar = Jar::with(cookie);
        assert_eq!(
            signed.send(&mut jar, "GET", "/count").await,
            (200, "1".into())
        );
        assert_ne!(jar.0.as_deref(), Some(cookie.as_str()), "a new cookie");
        let id = store.last_created();
        assert_ne!(id.as_str(), cookie, "the forged value is not the id");
        assert_eq!(
            signed.send(&mut jar, "GET", "/count").await,
            (200, "2".into())
        );
        assert!(store.created().len() > n);
    }
    assert!(store.get(&unknown).await.unwrap().is_none());
    // Unsigned cookies: axum_session adopts a valid unknown id for a fresh, empty session;
    // an invalid one is never stored and never fails the request.
    let plain = app(Arc::clone(store), Config::Plain).await;
    let victim = {
        let mut jar = Jar::default();
        assert_eq!(plain.send(&mut jar, "POST", "/login").await.0, 200);
        id_of(&jar)
    };
    let mut jar = Jar::with(unknown.as_str());
    assert_eq!(
        plain.send(&mut jar, "GET", "/count").await,
        (200, "1".into())
    );
    let adopted = store.get(&unknown).await.unwrap().expect("adopted");
    assert_eq!(adopted.get_value("count"), Some(&text("1")));
    assert!(adopted.get_value("user").is_none());
    for junk in ["not a valid id at all!", &"x".repeat(300)] {
        let mut jar = Jar::with(junk);
        assert_eq!(
            plain.send(&mut jar, "GET", "/count").await,
            (200, "1".into()),
            "{junk}"
        );
    }
    // The victim's session is untouched.
    let victim = store
        .get(&victim)
        .await
        .unwrap()
        .expect("the victim's session");
    assert_eq!(victim.get_value("user"), Some(&text("\"ada\"")));
}

async fn activity_extends_the_session(store: &Arc<Recording>) {
    let app = app(Arc::clone(store), Config::Plain).await;
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    let id = id_of(&jar);
    let before = store.get(&id).await.unwrap().expect("stored");
    // Expiries are whole seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.send(&mut jar, "GET", "/peek").await,
        (200, "count=1 user=none".into())
    );
    let after = store.get(&id).await.unwrap().expect("still stored");
    assert!(after.expires_at_millis() > before.expires_at_millis());
    assert_eq!(after.data(), before.data(), "the data is unchanged");
    assert_eq!(store.created().len(), 1);
}

async fn log_out_everywhere_else_takes_effect_on_the_next_request(store: &Arc<Recording>) {
    let app = app(Arc::clone(store), Config::Plain).await;
    let mut jars = [Jar::default(), Jar::default(), Jar::default()];
    for jar in &mut jars {
        assert_eq!(app.send(jar, "GET", "/count").await.0, 200);
        assert_eq!(app.send(jar, "POST", "/login").await.0, 200);
    }
    let ada = Owner::new("ada").unwrap();
    assert_eq!(store.sessions_of(&ada, false).await.unwrap().len(), 3);
    let [first, second, third] = &mut jars;
    assert_eq!(
        app.send(first, "POST", "/logout-others").await,
        (200, "ended 2".into())
    );
    for jar in [second, third] {
        assert_eq!(
            app.send(jar, "GET", "/peek").await,
            (200, "count=none user=none".into()),
            "logged out on its next request"
        );
    }
    assert_eq!(
        app.send(first, "GET", "/peek").await,
        (200, "count=1 user=ada".into())
    );
    assert_eq!(store.sessions_of(&ada, false).await.unwrap().len(), 1);
}

/// Two processes (two apps, two adapters) load one session; one adds `cart`, the other
/// `theme`; both save: the session ends with both.
async fn concurrent_requests_of_two_processes_keep_both_changes(store: &Arc<Recording>) {
    let one = app(Arc::clone(store), Config::Plain).await;
    let other = app(Arc::clone(store), Config::Plain).await;
    let mut jar = Jar::default();
    assert_eq!(one.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    let id = id_of(&jar);
    let (mut a, mut b) = (jar.clone(), jar.clone());
    let ((cart, theme), ()) = tokio::join!(
        async {
            tokio::join!(
                one.send(&mut a, "POST", "/hold-cart"),
                other.send(&mut b, "POST", "/hold-theme")
            )
        },
        async {
            store.wait_loaded(2).await;
            store.go.add_permits(2);
        }
    );
    assert_eq!(cart, (200, "held".into()));
    assert_eq!(theme, (200, "held".into()));
    let stored = store.get(&id).await.unwrap().expect("still there");
    for key in ["count", "cart", "theme"] {
        assert!(
            stored.get_value(key).is_some(),
            "{key} was lost: {:?}",
            stored.data()
        );
    }
    // Later saves of each process keep what the other wrote.
    assert_eq!(one.send(&mut jar, "GET", "/count").await, (200, "2".into()));
    assert_eq!(
        other.send(&mut jar, "GET", "/count").await,
        (200, "3".into())
    );
    let stored = store.get(&id).await.unwrap().expect("still there");
    assert!(stored.get_value("cart").is_some() && stored.get_value("theme").is_some());
    assert_eq!(
        store.created().len(),
        1,
        "one session created through create"
    );
}

async fn a_request_in_flight_never_brings_back_a_logged_out_session(store: &Arc<Recording>) {
    let app = app(Arc::clone(store), Config::Plain).await;
    let ada = Owner::new("ada").unwrap();
    for everywhere in [false, true] {
        let mut jar = Jar::default();
        assert_eq!(app.send(&mut jar, "GET", "/count").await.0, 200);
        assert_eq!(app.send(&mut jar, "POST", "/login").await.0, 200);
        let id = id_of(&jar);
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
        assert!(store.sessions_of(&ada, true).await.unwrap().is_empty());
        assert_eq!(
            app.send(&mut stolen, "GET", "/peek").await,
            (200, "count=none user=none".into()),
            "everywhere: {everywhere}"
        );
        if let Some(session) = store.get(&id).await.unwrap() {
            assert!(
                session.get_value("user").is_none() && session.get_value("count").is_none(),
                "old state under the old id: {:?}",
                session.data()
            );
        }
    }
}

async fn an_undecodable_session_starts_a_fresh_one(store: &Arc<Recording>) {
    let app = app(Arc::clone(store), Config::Plain).await;
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "2".into()));
    store.poison(&id_of(&jar));
    assert_eq!(
        app.send(&mut jar, "GET", "/count").await,
        (200, "1".into()),
        "a fresh session, not a 500"
    );
}
