//! The scenarios under actix-session 0.11 and actix-web, through
//! `actix_web::test::call_service`.

use std::sync::Arc;

use actix_session::config::{BrowserSession, PersistentSession, TtlExtensionPolicy};
use actix_session::{Session, SessionMiddleware};
use actix_web::body::MessageBody;
use actix_web::cookie::{Key, time::Duration};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::{App as ActixWebApp, test, web};
use session_stores::{ActixSessionStore, Owner, SessionStore};

use crate::adapters::common::{App, COOKIE, Jar, OWNER_KEY, Recording, Variant};
use crate::adapters::scenarios::{Adapter, run_all};

async fn count(session: Session) -> String {
    let n = session.get::<u64>("count").unwrap().unwrap_or(0) + 1;
    session.insert("count", n).unwrap();
    n.to_string()
}

async fn peek(session: Session) -> String {
    let count = session.get::<u64>("count").unwrap();
    let user = session.get::<String>("user").unwrap();
    format!(
        "count={} user={}",
        count.map_or("none".to_string(), |n| n.to_string()),
        user.as_deref().unwrap_or("none")
    )
}

async fn login(session: Session) -> String {
    session.renew();
    session.insert("user", "ada").unwrap();
    "welcome ada".to_string()
}

async fn logout(session: Session) -> String {
    session.purge();
    "bye".to_string()
}

fn user_of(session: &Session) -> Owner {
    let user = session.get::<String>(OWNER_KEY).unwrap();
    Owner::new(user.expect("a logged-in session")).unwrap()
}

async fn devices(store: web::Data<Arc<Recording>>, session: Session) -> String {
    let owner = user_of(&session);
    store
        .sessions_of(&owner, false)
        .await
        .unwrap()
        .len()
        .to_string()
}

/// actix-session does not show handlers the session key: end every session of the user,
/// then renew this one, which saves it again under a new key.
async fn logout_others(store: web::Data<Arc<Recording>>, session: Session) -> String {
    let owner = user_of(&session);
    let ended = store.destroy_owner(&owner, None).await.unwrap();
    session.renew();
    format!("ended {}", ended - 1)
}

/// Reads the session, waits for the scenario, then sets `key`.
async fn hold(store: &Recording, session: &Session, key: &str) -> String {
    let _ = session.get::<String>("user").unwrap();
    store.hold().await;
    session.insert(key, "on").unwrap();
    "held".to_string()
}

async fn hold_cart(store: web::Data<Arc<Recording>>, session: Session) -> String {
    hold(&store, &session, "cart").await
}

async fn hold_theme(store: web::Data<Arc<Recording>>, session: Session) -> String {
    hold(&store, &session, "theme").await
}

pub struct ActixApp<S>(S);

pub async fn app(
    store: Arc<Recording>,
    variant: Variant,
) -> ActixApp<
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
> {
    let key = Key::from(&[7u8; 64]);
    let adapter = ActixSessionStore::from_arc(Arc::clone(&store)).with_owner_key(OWNER_KEY);
    let middleware = SessionMiddleware::builder(adapter, key)
        .cookie_name(COOKIE.to_string())
        .cookie_secure(false);
    let middleware =
        match variant {
            Variant::Default => middleware
                .session_lifecycle(BrowserSession::default().state_ttl(Duration::hours(1))),
            Variant::ShortTtl => middleware
                .session_lifecycle(BrowserSession::default().state_ttl(Duration::seconds(1))),
            Variant::ExtendOnEveryRequest => middleware.session_lifecycle(
                PersistentSession::default()
                    .session_ttl(Duration::hours(1))
                    .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
            ),
        };
    let service = test::init_service(
        ActixWebApp::new()
            .app_data(web::Data::new(store))
            .wrap(middleware.build())
            .route("/count", web::get().to(count))
            .route("/peek", web::get().to(peek))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/devices", web::get().to(devices))
            .route("/logout-others", web::post().to(logout_others))
            .route("/hold-cart", web::post().to(hold_cart))
            .route("/hold-theme", web::post().to(hold_theme)),
    )
    .await;
    ActixApp(service)
}

impl<S, B> App for ActixApp<S>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    async fn send(&self, jar: &mut Jar, method: &str, path: &str) -> (u16, String) {
        let mut request = match method {
            "GET" => test::TestRequest::get(),
            "POST" => test::TestRequest::post(),
            other => panic!("unsupported method {other}"),
        }
        .uri(path);
        if let Some(cookie) = jar.header() {
            request = request.insert_header((header::COOKIE, cookie));
        }
        let response = test::call_service(&self.0, request.to_request()).await;
        for set_cookie in response.headers().get_all(header::SET_COOKIE) {
            jar.apply(set_cookie.to_str().unwrap());
        }
        let status = response.status().as_u16();
        let body = test::read_body(response).await;
        (status, String::from_utf8(body.to_vec()).unwrap())
    }
}

async fn run(backend: Option<crate::adapters::backends::Backend>) {
    run_all(Adapter::Actix, backend, app).await;
}

crate::per_backend!(actix_web::test, run);

/// A session the store cannot decode (here a corrupted file) makes actix-session start a fresh
/// session for that request, instead of answering 500 to every request with that cookie.
#[cfg(feature = "file")]
#[actix_web::test]
async fn a_session_the_store_cannot_decode_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let file = session_stores::FileStore::new(dir.path()).await.unwrap();
    let recording = Recording::new(Arc::new(file.clone()));
    let app = app(recording.clone(), Variant::Default).await;
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "1".into()));
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "2".into()));
    std::fs::write(file.path_of(&recording.last_created()), b"{not json").unwrap();
    let (status, body) = app.send(&mut jar, "GET", "/count").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "1"),
        "a session the store cannot decode must start afresh, not fail the request"
    );
    assert_eq!(app.send(&mut jar, "GET", "/count").await, (200, "2".into()));
}
