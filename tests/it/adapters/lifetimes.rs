//! Lifetimes through real apps, on every backend: a login that cycles the id with a grace
//! window (requests in flight with the old cookie keep reading the session as it was, and
//! cannot write; a logout still ends it at once), an absolute lifetime that activity cannot
//! extend, and a throttled touch that stops rewriting a session on every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use session_stores::{
    Capabilities, OwnedSession, Owner, Result, Rotation, ScanCursor, ScanPage, Session, SessionId,
    SessionStore, async_trait,
};

use crate::adapters::common::{App, Jar};

/// A store that counts the writes that reach the backend (`set`, `set_if_version`,
/// `create`, `touch`).
pub struct Counting {
    inner: Arc<dyn SessionStore>,
    writes: AtomicU64,
}

impl Counting {
    pub fn new(inner: Arc<dyn SessionStore>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            writes: AtomicU64::new(0),
        })
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl SessionStore for Counting {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        self.inner.get(id).await
    }
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        self.wrote();
        self.inner.set(id, session).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        self.wrote();
        self.inner.touch(id, expires_at).await
    }
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        self.wrote();
        self.inner.create(id, session).await
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
        self.wrote();
        self.inner.set_if_version(id, session, expected).await
    }
    async fn len(&self) -> Result<u64> {
        self.inner.len().await
    }
    async fn clear(&self) -> Result<()> {
        self.inner.clear().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }
    async fn sessions_of(&self, owner: &Owner, with_data: bool) -> Result<Vec<OwnedSession>> {
        self.inner.sessions_of(owner, with_data).await
    }
    async fn destroy_owner(&self, owner: &Owner, except: Option<&SessionId>) -> Result<u64> {
        self.inner.destroy_owner(owner, except).await
    }
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        self.inner.scan(cursor, limit).await
    }
    async fn rotate(&self, old: &SessionId, new: &SessionId, grace: Duration) -> Result<Rotation> {
        self.inner.rotate(old, new, grace).await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

/// The grace window of the login routes.
pub const GRACE: Duration = Duration::from_millis(1500);

/// Login with a grace window: the request in flight with the old cookie reads the session as
/// it was before the login (never the logged-in one), cannot write it, and is logged out when
/// the grace is over; the new cookie holds the login; a logout still ends a session at once.
pub async fn login_with_grace(app: &impl App) {
    let mut jar = Jar(None);
    assert_eq!(app.send(&mut jar, "GET", "/count").await.1, "1");
    assert_eq!(app.send(&mut jar, "GET", "/count").await.1, "2");
    let mut in_flight = Jar(jar.0.clone());
    assert_eq!(app.send(&mut jar, "POST", "/login-grace").await.0, 200);
    assert_ne!(jar.0, in_flight.0, "the login cycled the id");
    assert_eq!(
        app.send(&mut jar, "GET", "/peek").await.1,
        "count=2 user=ada"
    );
    // The old cookie, within the grace: the session as it was, never the login.
    assert_eq!(
        app.send(&mut in_flight, "GET", "/peek").await.1,
        "count=2 user=none"
    );
    // A write through it is dropped, and hands out no new id.
    let before = in_flight.0.clone();
    let (status, _) = app.send(&mut in_flight, "GET", "/count").await;
    assert_eq!(status, 200);
    // (actix-session seals its cookie anew each time, so the cookie text may change: what
    // it holds is checked by what it reads.) Still the old, read-only session, never the
    // login and never a new empty one.
    assert_eq!(
        app.send(&mut in_flight, "GET", "/peek").await.1,
        "count=2 user=none"
    );
    assert_eq!(app.send(&mut jar, "GET", "/count").await.1, "3");
    // After the grace, the old id is gone; the new one lives on.
    tokio::time::sleep(GRACE + Duration::from_millis(300)).await;
    let mut late = Jar(before);
    assert_eq!(
        app.send(&mut late, "GET", "/peek").await.1,
        "count=none user=none"
    );
    assert_eq!(
        app.send(&mut jar, "GET", "/peek").await.1,
        "count=3 user=ada"
    );
    // A logout ends the session at once, for every request.
    let mut other = Jar(jar.0.clone());
    assert_eq!(app.send(&mut jar, "POST", "/logout").await.0, 200);
    assert_eq!(
        app.send(&mut other, "GET", "/peek").await.1,
        "count=none user=none"
    );
}

/// The new session ends at its absolute expiry although every request extends it.
pub async fn absolute_lifetime_ends_an_active_session(app: &impl App, lifetime: Duration) {
    let mut jar = Jar(None);
    let started = std::time::Instant::now();
    assert_eq!(app.send(&mut jar, "GET", "/count").await.1, "1");
    let mut last = 1;
    while started.elapsed() < lifetime.saturating_sub(Duration::from_millis(400)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = app
            .send(&mut jar, "GET", "/count")
            .await
            .1
            .parse::<u64>()
            .unwrap();
    }
    assert!(last > 1, "the session did not live through its lifetime");
    tokio::time::sleep(lifetime.saturating_sub(started.elapsed()) + Duration::from_millis(300))
        .await;
    assert_eq!(
        app.send(&mut jar, "GET", "/count").await.1,
        "1",
        "the session outlived its absolute lifetime"
    );
}

/// Requests that only read an extended session: how many writes reach the store.
pub async fn writes_for_reads(app: &impl App, store: &Counting, requests: usize) -> u64 {
    let mut jar = Jar(None);
    assert_eq!(app.send(&mut jar, "GET", "/count").await.1, "1");
    let before = store.writes();
    for _ in 0..requests {
        assert_eq!(
            app.send(&mut jar, "GET", "/peek").await.1,
            "count=1 user=none"
        );
    }
    store.writes() - before
}

#[cfg(feature = "tower-sessions")]
mod tower {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, header};
    use axum::routing::{get, post};
    use http_body_util::BodyExt;
    use session_stores::TowerSessionsStore;
    use session_stores::adapters::tower_sessions::cycle_id_with_grace;
    use tower::ServiceExt;
    use tower_sessions::{Expiry, Session, SessionManagerLayer};

    use super::{Counting, GRACE};
    use crate::adapters::backends::Backend;
    use crate::adapters::common::{App, COOKIE, Jar};

    type Adapter = TowerSessionsStore<Counting>;

    struct TowerApp(Router);

    impl App for TowerApp {
        async fn send(&self, jar: &mut Jar, method: &str, path: &str) -> (u16, String) {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(cookie) = jar.header() {
                request = request.header(header::COOKIE, cookie);
            }
            let response = (self.0.clone().oneshot(request.body(Body::empty()).unwrap()))
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

    async fn logout(session: Session) -> String {
        session.flush().await.unwrap();
        "bye".into()
    }

    fn app(adapter: Adapter, always_save: bool) -> TowerApp {
        let login = {
            let adapter = adapter.clone();
            move |session: Session| async move {
                cycle_id_with_grace(&adapter, &session, GRACE)
                    .await
                    .unwrap();
                session.insert("user", "ada").await.unwrap();
                "welcome".to_string()
            }
        };
        let layer = SessionManagerLayer::new(adapter)
            .with_name(COOKIE)
            .with_secure(false)
            .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)))
            .with_always_save(always_save);
        TowerApp(
            Router::new()
                .route("/count", get(count))
                .route("/peek", get(peek))
                .route("/login-grace", post(login))
                .route("/logout", post(logout))
                .layer(layer),
        )
    }

    async fn run(backend: Option<Backend>) {
        let Some(backend) = backend else { return };
        let store = Counting::new(backend.fresh().await);
        super::login_with_grace(&app(TowerSessionsStore::from_arc(store), false)).await;

        let lifetime = Duration::from_millis(2000);
        let store = Counting::new(backend.fresh().await);
        let adapter = TowerSessionsStore::from_arc(store).with_absolute_lifetime(lifetime);
        super::absolute_lifetime_ends_an_active_session(&app(adapter, true), lifetime).await;

        // Every request rewrites an always-saved session; throttled, none of 50 does.
        let store = Counting::new(backend.fresh().await);
        let plain = app(TowerSessionsStore::from_arc(Arc::clone(&store)), true);
        assert_eq!(super::writes_for_reads(&plain, &store, 50).await, 50);
        let adapter = TowerSessionsStore::from_arc(Arc::clone(&store)).with_touch_throttle(0.1);
        let throttled = app(adapter, true);
        assert_eq!(super::writes_for_reads(&throttled, &store, 50).await, 0);
        // A throttle of 1 touches only when the expiry moves by the whole idle time: never
        // within an hour; a throttle of 0 touches every time, without a rewrite.
        let adapter = TowerSessionsStore::from_arc(Arc::clone(&store)).with_touch_throttle(0.0);
        assert_eq!(
            super::writes_for_reads(&app(adapter, true), &store, 10).await,
            10
        );
        backend.finish().await;
    }

    crate::per_backend!(
        tokio::test(flavor = "multi_thread", worker_threads = 2),
        run
    );
}

#[cfg(feature = "actix-session")]
mod actix {
    use std::sync::Arc;
    use std::time::Duration;

    use actix_session::config::{PersistentSession, TtlExtensionPolicy};
    use actix_session::{Session, SessionMiddleware};
    use actix_web::body::MessageBody;
    use actix_web::cookie::Key;
    use actix_web::dev::{Service, ServiceResponse};
    use actix_web::http::header;
    use actix_web::{App as ActixWebApp, test, web};
    use session_stores::ActixSessionStore;

    use super::{Counting, GRACE};
    use crate::adapters::backends::Backend;
    use crate::adapters::common::{App, COOKIE, Jar};

    type Adapter = ActixSessionStore<Counting>;

    struct ActixApp<S>(S);

    impl<S, B> App for ActixApp<S>
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        async fn send(&self, jar: &mut Jar, method: &str, path: &str) -> (u16, String) {
            let request = match method {
                "GET" => test::TestRequest::get(),
                _ => test::TestRequest::post(),
            };
            let mut request = request.uri(path);
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

    async fn login(adapter: web::Data<Adapter>, session: Session) -> String {
        assert!(adapter.renew_with_grace(&session, GRACE));
        session.insert("user", "ada").unwrap();
        "welcome".into()
    }

    async fn logout(session: Session) -> String {
        session.purge();
        "bye".into()
    }

    async fn app(
        adapter: Adapter,
    ) -> ActixApp<
        impl Service<
            actix_http::Request,
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
        >,
    > {
        let middleware = SessionMiddleware::builder(adapter.clone(), Key::from(&[7u8; 64]))
            .cookie_name(COOKIE.to_string())
            .cookie_secure(false)
            .session_lifecycle(
                PersistentSession::default()
                    .session_ttl(actix_web::cookie::time::Duration::hours(1))
                    .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
            );
        let service = test::init_service(
            ActixWebApp::new()
                .app_data(web::Data::new(adapter))
                .wrap(middleware.build())
                .route("/count", web::get().to(count))
                .route("/peek", web::get().to(peek))
                .route("/login-grace", web::post().to(login))
                .route("/logout", web::post().to(logout)),
        )
        .await;
        ActixApp(service)
    }

    async fn run(backend: Option<Backend>) {
        let Some(backend) = backend else { return };
        let store = Counting::new(backend.fresh().await);
        super::login_with_grace(&app(ActixSessionStore::from_arc(store)).await).await;

        let lifetime = Duration::from_millis(2000);
        let store = Counting::new(backend.fresh().await);
        let adapter = ActixSessionStore::from_arc(store).with_absolute_lifetime(lifetime);
        super::absolute_lifetime_ends_an_active_session(&app(adapter).await, lifetime).await;

        // OnEveryRequest touches on every request; throttled, none of 50 does.
        let store = Counting::new(backend.fresh().await);
        let plain = app(ActixSessionStore::from_arc(Arc::clone(&store))).await;
        assert_eq!(super::writes_for_reads(&plain, &store, 50).await, 50);
        let adapter = ActixSessionStore::from_arc(Arc::clone(&store)).with_touch_throttle(0.1);
        let throttled = app(adapter).await;
        assert_eq!(super::writes_for_reads(&throttled, &store, 50).await, 0);
        backend.finish().await;
    }

    crate::per_backend!(actix_web::test, run);
}

/// The axum_session and poem adapters give a new session its absolute expiry, which later
/// saves keep (their store traits are called directly: each framework's first save of a new
/// id).
#[cfg(all(feature = "axum-session", feature = "poem"))]
mod other_frameworks {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use axum_session::DatabasePool;
    use poem::session::SessionStorage;
    use session_stores::adapters::axum_session::AxumSessionPool;
    use session_stores::adapters::poem::PoemSessionStorage;
    use session_stores::{MemoryStore, SessionId, SessionStore, now_millis};

    const LIFETIME: Duration = Duration::from_secs(600);

    fn near(got: Option<i64>, want: i64) -> bool {
        got.is_some_and(|got| (want - 5_000..=want + 5_000).contains(&got))
    }

    #[tokio::test]
    async fn axum_session_gives_new_sessions_their_absolute_expiry() {
        let store = Arc::new(MemoryStore::new(100));
        let pool = AxumSessionPool::from_arc(Arc::clone(&store)).with_absolute_lifetime(LIFETIME);
        let id = SessionId::generate();
        let sid = id.as_str().to_string();
        assert!(!pool.exists(&sid, "t").await.unwrap());
        let far = (now_millis() / 1000) + 3600 * 24;
        let text = r#"{"data":{"n":"1"},"longterm":false}"#;
        pool.store(&sid, text, far, "t").await.unwrap();
        let stored = store.get(&id).await.unwrap().unwrap();
        let want = now_millis() + LIFETIME.as_millis() as i64;
        assert!(near(stored.absolute_expiry_millis(), want), "{stored:?}");
        assert_eq!(
            stored.expires_at_millis(),
            stored.absolute_expiry_millis().unwrap()
        );
    }

    #[tokio::test]
    async fn poem_gives_new_sessions_their_absolute_expiry() {
        let store = Arc::new(MemoryStore::new(100));
        let storage =
            PoemSessionStorage::from_arc(Arc::clone(&store)).with_absolute_lifetime(LIFETIME);
        let id = SessionId::generate();
        let entries: BTreeMap<String, serde_json::Value> =
            [("n".to_string(), serde_json::json!(1))]
                .into_iter()
                .collect();
        storage
            .update_session(id.as_str(), &entries, Some(Duration::from_secs(3600 * 24)))
            .await
            .unwrap();
        let stored = store.get(&id).await.unwrap().unwrap();
        let want = now_millis() + LIFETIME.as_millis() as i64;
        assert!(near(stored.absolute_expiry_millis(), want), "{stored:?}");
    }
}
