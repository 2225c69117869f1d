//! A small axum + tower-sessions web app on any session store of this crate.
//!
//! ```sh
//! cargo run --example server --features tower-sessions,sqlite
//! ```
//!
//! Then open <http://localhost:3000>. It needs no server: sessions are kept in SQLite in
//! `./sessions.db` (or in memory when the `sqlite` feature is off). Environment:
//!
//! - `PORT`: the port to listen on (default 3000, on 127.0.0.1; set `HOST=0.0.0.0` to listen
//!   on every interface);
//! - `SESSION_STORE_URL`: any other store, such as `memory://`, `file:///tmp/sessions`,
//!   `postgres://postgres@127.0.0.1/test`, `redis://127.0.0.1:6379` or
//!   `redis+cluster://127.0.0.1:7001,127.0.0.1:7002` (with that store's feature on).
//!
//! Pages: `/` counts your visits, `POST /login` logs you in and gives your session a new id
//! (the old id stops working: session fixation defence), `POST /logout` destroys the session
//! in the store, `/store` says which store serves the app.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Form;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use session_stores::cleanup::spawn_cleanup;
use session_stores::{StoreKind, TowerSessionsStore, connect, connect::redact};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// What the `/store` page shows.
#[derive(Clone)]
struct AppState {
    kind: StoreKind,
    url: String,
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

/// A handler error: logged on the server, a bare 500 for the browser.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure(err.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        eprintln!("request failed: {}", self.0);
        (StatusCode::INTERNAL_SERVER_ERROR, "session store error").into_response()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn index(State(app): State<AppState>, session: Session) -> Result<Html<String>, Failure> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    let user = session.get::<String>("user").await?;
    let who = match &user {
        Some(user) => format!(
            "<p>Logged in as <b>{}</b>.</p>\
             <form method=post action=/logout><button>Log out</button></form>",
            escape(user)
        ),
        None => "<p>Not logged in.</p>\
                 <form method=post action=/login>\
                 <input name=user placeholder=name required> <button>Log in</button></form>"
            .to_string(),
    };
    Ok(Html(format!(
        "<!doctype html><title>session-stores demo</title>\
         <h1>Visit number {visits}</h1>{who}\
         <p>Sessions are kept in <a href=/store>{}</a>.</p>",
        app.kind
    )))
}

async fn login(session: Session, Form(login): Form<Login>) -> Result<Redirect, Failure> {
    // A new id for the session on every privilege change: whoever knew the old id (say, an
    // attacker who planted it) does not get the logged-in session.
    session.cycle_id().await?;
    session.insert("user", login.user.trim()).await?;
    Ok(Redirect::to("/"))
}

async fn logout(session: Session) -> Result<Redirect, Failure> {
    // Deletes the session in the store and clears the cookie.
    session.flush().await?;
    Ok(Redirect::to("/"))
}

async fn store_page(State(app): State<AppState>) -> String {
    format!(
        "This app keeps its sessions in: {} ({})\nURL: {}\n",
        app.kind,
        app.kind.feature(),
        redact(&app.url)
    )
}

fn default_url() -> String {
    if cfg!(feature = "sqlite") {
        "sqlite://sessions.db".to_string()
    } else {
        "memory://".to_string()
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The error and its causes, one per line (never a password: URLs are redacted).
            eprintln!("error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SESSION_STORE_URL").unwrap_or_else(|_| default_url());
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT={port} is not a port"))?,
        Err(_) => 3000,
    };
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_string());
    let kind = StoreKind::of(&url)?;

    let store = TowerSessionsStore::from_box(connect(&url).await?);
    // Expired sessions are never served; this reclaims their space every minute.
    let cleanup = spawn_cleanup(store.inner_arc(), Duration::from_secs(60));

    let sessions = SessionManagerLayer::new(store)
        .with_secure(false) // plain http on localhost; keep the default `true` behind TLS
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)));
    let app = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/store", get(store_page))
        .layer(sessions)
        .with_state(AppState {
            kind,
            url: url.clone(),
        });

    let addr: SocketAddr = format!("{host}:{port}").parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "session-stores demo on http://{} (sessions: {kind}, {})",
        listener.local_addr()?,
        redact(&url)
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    cleanup.stop().await;
    Ok(())
}
