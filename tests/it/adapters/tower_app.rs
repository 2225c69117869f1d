// The axum app and the scenarios' driver, included once per tower-sessions version by
// `tower.rs` (with `ts` and `session_id_of` of that version in scope).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use session_stores::{Owner, SessionStore, TowerSessionsStore};
use tower::ServiceExt;
use ts::{Expiry, Session, SessionManagerLayer};

use crate::adapters::common::{App, COOKIE, Jar, OWNER_KEY, Recording, Variant};
use crate::adapters::scenarios::{Adapter, run_all};

async fn count(session: Session) -> String {
    let n = session.get::<u64>("count").await.unwrap().unwrap_or(0) + 1;
    session.insert("count", n).await.unwrap();
    n.to_string()
}

async fn peek(session: Session) -> String {
    let count = session.get::<u64>("count").await.unwrap();
    let user = session.get::<String>("user").await.unwrap();
    format!(
        "count={} user={}",
        count.map_or("none".to_string(), |n| n.to_string()),
        user.as_deref().unwrap_or("none")
    )
}

async fn login(session: Session) -> String {
    session.cycle_id().await.unwrap();
    session.insert("user", "ada").await.unwrap();
    "welcome ada".to_string()
}

async fn logout(session: Session) -> String {
    session.flush().await.unwrap();
    "bye".to_string()
}

async fn user_of(session: &Session) -> Owner {
    let user = session.get::<String>(OWNER_KEY).await.unwrap();
    Owner::new(user.expect("a logged-in session")).unwrap()
}

async fn devices(Extension(store): Extension<Arc<Recording>>, session: Session) -> String {
    let owner = user_of(&session).await;
    store
        .sessions_of(&owner, false)
        .await
        .unwrap()
        .len()
        .to_string()
}

async fn logout_others(Extension(store): Extension<Arc<Recording>>, session: Session) -> String {
    let owner = user_of(&session).await;
    let current = session_id_of(&session.id().expect("a stored session")).unwrap();
    let ended = store.destroy_owner(&owner, Some(&current)).await.unwrap();
    format!("ended {ended}")
}

/// Reads the session, waits for the scenario, then sets `key`.
async fn hold(store: &Recording, session: &Session, key: &str) -> String {
    let _ = session.get::<String>("user").await.unwrap();
    store.hold().await;
    session.insert(key, "on").await.unwrap();
    "held".to_string()
}

async fn hold_cart(Extension(store): Extension<Arc<Recording>>, session: Session) -> String {
    hold(&store, &session, "cart").await
}

async fn hold_theme(Extension(store): Extension<Arc<Recording>>, session: Session) -> String {
    hold(&store, &session, "theme").await
}

pub struct TowerApp(pub Router);

pub async fn app(store: Arc<Recording>, variant: Variant) -> TowerApp {
    let adapter = TowerSessionsStore::from_arc(Arc::clone(&store)).with_owner_key(OWNER_KEY);
    let layer = SessionManagerLayer::new(adapter)
        .with_name(COOKIE)
        .with_secure(false);
    let layer = match variant {
        Variant::Default => layer.with_expiry(Expiry::OnInactivity(time::Duration::hours(1))),
        Variant::ShortTtl => layer.with_expiry(Expiry::OnInactivity(time::Duration::seconds(1))),
        Variant::ExtendOnEveryRequest => layer
            .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)))
            .with_always_save(true),
    };
    TowerApp(
        Router::new()
            .route("/count", get(count))
            .route("/peek", get(peek))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route("/devices", get(devices))
            .route("/logout-others", post(logout_others))
            .route("/hold-cart", post(hold_cart))
            .route("/hold-theme", post(hold_theme))
            .layer(layer)
            .layer(Extension(store)),
    )
}

impl App for TowerApp {
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

async fn run(backend: Option<crate::adapters::backends::Backend>) {
    run_all(Adapter::Tower, backend, app).await;
}

crate::per_backend!(
    tokio::test(flavor = "multi_thread", worker_threads = 2),
    run
);
