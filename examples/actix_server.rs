//! The same demo as `examples/server.rs`, on actix-web + actix-session.
//!
//! ```sh
//! cargo run --example actix_server --features actix-session,sqlite
//! ```
//!
//! Environment: `PORT` (default 3000), `HOST` (default 127.0.0.1), `SESSION_STORE_URL` (default
//! `sqlite://sessions.db`, or `memory://` without the `sqlite` feature). Pages: `/` counts
//! visits, `POST /login` renews the session key and logs in, `POST /logout` purges the
//! session, `/store` names the store.

use std::time::Duration;

use actix_session::config::{PersistentSession, TtlExtensionPolicy};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::http::header;
use actix_web::{App, HttpResponse, HttpServer, web};
use session_stores::cleanup::spawn_cleanup;
use session_stores::{ActixSessionStore, StoreKind, connect, connect::redact};

#[derive(Clone)]
struct AppState {
    kind: StoreKind,
    url: String,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

async fn index(app: web::Data<AppState>, session: Session) -> actix_web::Result<HttpResponse> {
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.insert("visits", visits)?;
    let who = match session.get::<String>("user")? {
        Some(user) => format!(
            "<p>Logged in as <b>{}</b>.</p>\
             <form method=post action=/logout><button>Log out</button></form>",
            escape(&user)
        ),
        None => "<p>Not logged in.</p>\
                 <form method=post action=/login>\
                 <input name=user placeholder=name required> <button>Log in</button></form>"
            .to_string(),
    };
    Ok(HttpResponse::Ok().content_type("text/html").body(format!(
        "<!doctype html><title>session-stores demo</title>\
         <h1>Visit number {visits}</h1>{who}\
         <p>Sessions are kept in <a href=/store>{}</a>.</p>",
        app.kind
    )))
}

#[derive(serde::Deserialize)]
struct Login {
    user: String,
}

async fn login(session: Session, form: web::Form<Login>) -> actix_web::Result<HttpResponse> {
    // A new session key on every privilege change (session fixation defence).
    session.renew();
    session.insert("user", form.user.trim())?;
    Ok(see_other("/"))
}

async fn logout(session: Session) -> HttpResponse {
    session.purge();
    see_other("/")
}

async fn store_page(app: web::Data<AppState>) -> String {
    format!(
        "This app keeps its sessions in: {} ({})\nURL: {}\n",
        app.kind,
        app.kind.feature(),
        redact(&app.url)
    )
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let url = std::env::var("SESSION_STORE_URL").unwrap_or_else(|_| {
        if cfg!(feature = "sqlite") {
            "sqlite://sessions.db".into()
        } else {
            "memory://".into()
        }
    });
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(3000);
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_string());
    let opened =
        async { Ok::<_, session_stores::Error>((StoreKind::of(&url)?, connect(&url).await?)) };
    let (kind, store) = opened.await.map_err(std::io::Error::other)?;
    let store = ActixSessionStore::from_box(store);
    let _cleanup = spawn_cleanup(store.inner_arc(), Duration::from_secs(60));
    // A fresh key per start logs everyone out on restart; load a fixed 64-byte key from your
    // secrets in production.
    let key = Key::generate();
    let state = AppState {
        kind,
        url: url.clone(),
    };
    println!(
        "session-stores actix demo on http://{host}:{port} (sessions: {kind}, {})",
        redact(&url)
    );
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_secure(false) // plain http on localhost
                    .session_lifecycle(
                        PersistentSession::default()
                            .session_ttl(actix_web::cookie::time::Duration::hours(1))
                            .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
                    )
                    .build(),
            )
            .route("/", web::get().to(index))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/store", web::get().to(store_page))
    })
    .bind((host.as_str(), port))?
    .run()
    .await
}
