//! The scenarios under tower-sessions 0.15 and axum, through `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use session_stores::TowerSessionsStore;
use tower::ServiceExt;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

use crate::common::{App, COOKIE, Jar, Recording, Variant};
use crate::scenarios::{Adapter, run_all};

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

pub struct TowerApp(Router);

pub async fn app(store: Arc<Recording>, variant: Variant) -> TowerApp {
    let layer = SessionManagerLayer::new(TowerSessionsStore::from_arc(store))
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
            .layer(layer),
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

async fn run(backend: Option<crate::backends::Backend>) {
    run_all(Adapter::Tower, backend, app).await;
}

crate::per_backend!(
    tokio::test(flavor = "multi_thread", worker_threads = 2),
    run
);
