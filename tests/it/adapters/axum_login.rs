//! tower-sessions 0.14 through axum-login 0.18 (feature `tower-sessions-014`): login,
//! logout, and a request in flight during a logout, through a real axum app whose session
//! layer is our adapter.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Router};
use axum_login::{AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, UserId};
use session_stores::adapters::tower_sessions::v014::session_id_of;
use session_stores::{SessionStore, TowerSessionsStore};
use tower_sessions_014::{Session, SessionManagerLayer};

use crate::adapters::backends::Backend as StoreBackend;
use crate::adapters::common::{App, COOKIE, Jar, Recording};
use crate::adapters::tower::v014::TowerApp;

#[derive(Debug, Clone)]
struct User {
    id: i64,
    name: &'static str,
    hash: Vec<u8>,
}

impl AuthUser for User {
    type Id = i64;
    fn id(&self) -> i64 {
        self.id
    }
    fn session_auth_hash(&self) -> &[u8] {
        &self.hash
    }
}

#[derive(Clone)]
struct Users(Arc<HashMap<i64, User>>);

impl AuthnBackend for Users {
    type User = User;
    type Credentials = i64;
    type Error = std::convert::Infallible;

    async fn authenticate(&self, id: i64) -> Result<Option<User>, Self::Error> {
        Ok(self.0.get(&id).cloned())
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, Self::Error> {
        Ok(self.0.get(id).cloned())
    }
}

type Auth = AuthSession<Users>;

async fn login(mut auth: Auth) -> (StatusCode, String) {
    let user = auth.authenticate(1).await.unwrap().expect("ada exists");
    auth.login(&user).await.unwrap();
    (StatusCode::OK, format!("welcome {}", user.name))
}

async fn logout(mut auth: Auth) -> &'static str {
    auth.logout().await.unwrap();
    "bye"
}

async fn me(auth: Auth) -> (StatusCode, String) {
    match auth.user {
        Some(user) => (StatusCode::OK, user.name.to_string()),
        None => (StatusCode::UNAUTHORIZED, "who are you".to_string()),
    }
}

/// Reads the logged-in user, waits for the test, then writes to the session.
async fn hold(Extension(store): Extension<Arc<Recording>>, auth: Auth, session: Session) -> String {
    let name = auth.user.map_or("nobody", |user| user.name);
    store.hold().await;
    session.insert("cart", "book").await.unwrap();
    name.to_string()
}

async fn current(session: Session) -> String {
    session
        .id()
        .map(|id| session_id_of(&id).unwrap().as_str().to_string())
        .unwrap_or_default()
}

fn app(store: Arc<Recording>) -> TowerApp {
    let users = Users(Arc::new(HashMap::from([(
        1,
        User {
            id: 1,
            name: "ada",
            hash: b"pw-hash".to_vec(),
        },
    )])));
    let sessions = SessionManagerLayer::new(TowerSessionsStore::from_arc(Arc::clone(&store)))
        .with_name(COOKIE)
        .with_secure(false);
    let auth = AuthManagerLayerBuilder::new(users, sessions).build();
    TowerApp(
        Router::new()
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route("/me", get(me))
            .route("/hold", post(hold))
            .route("/current", get(current))
            .layer(auth)
            .layer(Extension(store)),
    )
}

async fn run(backend: Option<StoreBackend>) {
    let Some(backend) = backend else { return };
    let store = Recording::new(backend.fresh().await);
    let app = app(Arc::clone(&store));

    // Login and logout.
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "GET", "/me").await.0, 401);
    assert_eq!(
        app.send(&mut jar, "POST", "/login").await,
        (200, "welcome ada".into())
    );
    assert_eq!(app.send(&mut jar, "GET", "/me").await, (200, "ada".into()));
    let stolen = jar.clone();
    assert_eq!(app.send(&mut jar, "POST", "/logout").await.0, 200);
    assert_eq!(app.send(&mut jar, "GET", "/me").await.0, 401);
    let mut replayed = stolen.clone();
    assert_eq!(
        app.send(&mut replayed, "GET", "/me").await.0,
        401,
        "the cookie from before the logout is logged out too"
    );

    // A request in flight while the session is ended by the store: its save does not bring
    // the login back.
    let mut jar = Jar::default();
    assert_eq!(app.send(&mut jar, "POST", "/login").await.0, 200);
    let (_, id) = app.send(&mut jar, "GET", "/current").await;
    let id = session_stores::SessionId::new(id).unwrap();
    let mut in_flight = jar.clone();
    let (held, ()) = tokio::join!(app.send(&mut in_flight, "POST", "/hold"), async {
        store.wait_loaded(1).await;
        store.destroy(&id).await.unwrap();
        store.go.add_permits(1);
    });
    assert_eq!(held, (200, "ada".into()));
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "the session came back"
    );
    assert_eq!(app.send(&mut in_flight, "GET", "/me").await.0, 401);
    store.clear().await.unwrap();
    backend.finish().await;
}

crate::per_backend!(
    tokio::test(flavor = "multi_thread", worker_threads = 2),
    run
);
