//! The shared [`scenarios`](crate::adapters::scenarios) under poem 3's `ServerSession` over
//! [`PoemSessionStorage`], through `Endpoint::get_response`, on every backend; and what
//! poem's API leaves to the adapter when a request clears its session.
//!
//! poem's cookie is the session id itself, as tower-sessions' is, so the scenarios run with
//! [`Adapter::Tower`]'s expectations. poem saves only a changed session and has no
//! "always save": for [`Variant::ExtendOnEveryRequest`] the app's `/peek` writes back the
//! values it read (a save of unchanged data), which is how a poem app extends a session.

use std::sync::Arc;
use std::time::Duration;

use poem::endpoint::BoxEndpoint;
use poem::http::{Method, header};
use poem::session::{CookieConfig, ServerSession, Session};
use poem::web::Data;
use poem::{Endpoint, EndpointExt, Request, Route, get, handler, post};
use session_stores::{Owner, PoemSessionStorage, SessionId, SessionStore};

use crate::adapters::backends::Backend;
use crate::adapters::common::{App, COOKIE, Jar, OWNER_KEY, Recording, Variant};
use crate::adapters::scenarios::{Adapter, run_all};

#[handler]
fn count(session: &Session) -> String {
    let n = session.get::<u64>("count").unwrap_or(0) + 1;
    session.set("count", n);
    n.to_string()
}

fn peek_text(session: &Session) -> String {
    let n = session.get::<u64>("count");
    let user = session.get::<String>("user");
    format!(
        "count={} user={}",
        n.map_or("none".to_string(), |n| n.to_string()),
        user.as_deref().unwrap_or("none")
    )
}

#[handler]
fn peek(session: &Session) -> String {
    peek_text(session)
}

/// `/peek` that saves what it read back, so that poem writes the session (and extends it).
#[handler]
fn peek_and_extend(session: &Session) -> String {
    if let Some(n) = session.get::<u64>("count") {
        session.set("count", n);
    }
    peek_text(session)
}

#[handler]
fn login(session: &Session) -> String {
    session.renew();
    session.set("user", "ada");
    "welcome ada".to_string()
}

#[handler]
fn logout(session: &Session) -> String {
    session.purge();
    "bye".to_string()
}

fn user_of(session: &Session) -> Owner {
    Owner::new(
        session
            .get::<String>(OWNER_KEY)
            .expect("a logged-in session"),
    )
    .unwrap()
}

#[handler]
async fn devices(store: Data<&Arc<Recording>>, session: &Session) -> String {
    let owner = user_of(session);
    store
        .sessions_of(&owner, false)
        .await
        .unwrap()
        .len()
        .to_string()
}

/// poem does not show handlers the session id: end every session of the user, then renew
/// this one, which saves it again under a new id.
#[handler]
async fn logout_others(store: Data<&Arc<Recording>>, session: &Session) -> String {
    let owner = user_of(session);
    let ended = store.destroy_owner(&owner, None).await.unwrap();
    session.renew();
    format!("ended {}", ended - 1)
}

/// Clears the session and sets `fresh`: a save without what the request loaded.
#[handler]
async fn clear_and_hold(store: Data<&Arc<Recording>>, session: &Session) -> String {
    let _ = session.get::<String>("user");
    store.hold().await;
    session.clear();
    session.set("fresh", "yes");
    "cleared".to_string()
}

async fn hold(store: &Recording, session: &Session, key: &str) -> String {
    let _ = session.get::<String>("user");
    store.hold().await;
    session.set(key, "on");
    "held".to_string()
}

#[handler]
async fn hold_cart(store: Data<&Arc<Recording>>, session: &Session) -> String {
    hold(&store, session, "cart").await
}

#[handler]
async fn hold_theme(store: Data<&Arc<Recording>>, session: &Session) -> String {
    hold(&store, session, "theme").await
}

pub struct PoemApp(BoxEndpoint<'static, poem::Response>);

pub async fn app(store: Arc<Recording>, variant: Variant) -> PoemApp {
    let storage = PoemSessionStorage::from_arc(Arc::clone(&store)).with_owner_key(OWNER_KEY);
    let ttl = match variant {
        Variant::ShortTtl => Duration::from_secs(1),
        Variant::Default | Variant::ExtendOnEveryRequest => Duration::from_secs(3600),
    };
    let config = CookieConfig::default()
        .name(COOKIE)
        .secure(false)
        .max_age(ttl);
    let route = Route::new()
        .at("/count", get(count))
        .at("/login", post(login))
        .at("/logout", post(logout))
        .at("/devices", get(devices))
        .at("/logout-others", post(logout_others))
        .at("/hold-cart", post(hold_cart))
        .at("/hold-theme", post(hold_theme))
        .at("/clear-and-hold", post(clear_and_hold));
    let route = if variant == Variant::ExtendOnEveryRequest {
        route.at("/peek", get(peek_and_extend))
    } else {
        route.at("/peek", get(peek))
    };
    let endpoint = route
        .with(ServerSession::new(config, storage))
        .data(store)
        .map_to_response()
        .boxed();
    PoemApp(endpoint)
}

impl App for PoemApp {
    async fn send(&self, jar: &mut Jar, method: &str, path: &str) -> (u16, String) {
        let method = match method {
            "GET" => Method::GET,
            "POST" => Method::POST,
            other => panic!("unsupported method {other}"),
        };
        let mut request = Request::builder().method(method).uri_str(path);
        if let Some(cookie) = jar.header() {
            request = request.header(header::COOKIE, cookie);
        }
        let response = self.0.get_response(request.finish()).await;
        for set_cookie in response.headers().get_all(header::SET_COOKIE) {
            jar.apply(set_cookie.to_str().unwrap());
        }
        let status = response.status().as_u16();
        let body = response.into_body().into_string().await.unwrap();
        (status, body)
    }
}

async fn run(backend: Option<Backend>) {
    // poem's cookie is the plain id, as tower-sessions' is.
    run_all(Adapter::Tower, backend, app).await;
}

crate::per_backend!(
    tokio::test(flavor = "multi_thread", worker_threads = 2),
    run
);

mod clearing {
    use super::*;

    /// What the module docs say a clearing request loses: a session destroyed while it ran
    /// is created again under the old id, holding only what the handler set after `clear()`.
    async fn run(backend: Option<Backend>) {
        let Some(backend) = backend else { return };
        let store = Recording::new(backend.fresh().await);
        let app = app(Arc::clone(&store), Variant::Default).await;
        let ada = Owner::new("ada").unwrap();
        let mut jar = Jar::default();
        assert_eq!(app.send(&mut jar, "GET", "/count").await.0, 200);
        assert_eq!(app.send(&mut jar, "POST", "/login").await.0, 200);
        let id = SessionId::new(jar.0.clone().unwrap()).unwrap();
        // Without a logout, a clearing save replaces the session wholesale.
        let mut same = jar.clone();
        let (cleared, ()) = tokio::join!(app.send(&mut same, "POST", "/clear-and-hold"), async {
            store.wait_loaded(1).await;
            store.go.add_permits(1);
        });
        assert_eq!(cleared, (200, "cleared".into()));
        let stored = store.get(&id).await.unwrap().expect("still there");
        assert_eq!(stored.get_value("fresh"), Some(&serde_json::json!("yes")));
        assert!(stored.get_value("user").is_none() && stored.get_value("count").is_none());
        assert!(stored.owner().is_none());
        // With a logout while it runs: the id comes back, nothing of the old state does.
        assert_eq!(app.send(&mut jar, "POST", "/login").await.0, 200);
        let id = SessionId::new(jar.0.clone().unwrap()).unwrap();
        let (cleared, ()) = tokio::join!(app.send(&mut jar, "POST", "/clear-and-hold"), async {
            store.wait_loaded(1).await;
            assert_eq!(store.destroy_owner(&ada, None).await.unwrap(), 1);
            store.go.add_permits(1);
        });
        assert_eq!(cleared, (200, "cleared".into()));
        let back = store
            .get(&id)
            .await
            .unwrap()
            .expect("documented: created again");
        assert_eq!(back.data().len(), 1, "{:?}", back.data());
        assert_eq!(back.get_value("fresh"), Some(&serde_json::json!("yes")));
        assert!(store.sessions_of(&ada, false).await.unwrap().is_empty());
        store.clear().await.unwrap();
        backend.finish().await;
    }

    crate::per_backend!(
        tokio::test(flavor = "multi_thread", worker_threads = 2),
        run
    );
}
