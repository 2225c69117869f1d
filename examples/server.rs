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
//! in the store, `/sessions` lists your devices (every live session of your user, from the
//! store's owner index) with a "log out everywhere else" button (`POST /logout-others`),
//! and `/store` says which store serves the app. Log in under one name from two browsers (or
//! a normal and a private window) to see it work.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Form;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use session_stores::adapters::tower_sessions::{
    cycle_id_with_grace, offset_date_time_of, session_id_of,
};
use session_stores::cleanup::spawn_cleanup;
use session_stores::{
    Owner, SessionId, SessionStore, StoreKind, TowerSessionsStore, connect, connect::redact,
};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// What the pages need: the store (for the owner index) and what `/store` shows.
#[derive(Clone)]
struct AppState {
    kind: StoreKind,
    url: String,
    store: TowerSessionsStore<dyn SessionStore>,
}

/// The longest a session lives, however active: its absolute deadline.
const ABSOLUTE_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// How long the old id of a session whose id a login cycled still reads (read-only).
const LOGIN_GRACE: Duration = Duration::from_secs(10);

/// The session key the owner is taken from: the logged-in user's name.
const OWNER_KEY: &str = "user";

#[derive(Deserialize)]
struct Login {
    user: String,
}

/// The device a "Sign out" button on the sessions page ends: its token, never its id.
#[derive(Deserialize)]
struct Device {
    device: String,
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
    if session.get::<i64>("started").await?.is_none() {
        session
            .insert("started", session_stores::now_millis())
            .await?;
    }
    let user = session.get::<String>("user").await?;
    let who = match &user {
        Some(user) => format!(
            "<p>Logged in as <b>{}</b>. <a href=/sessions>Your sessions</a></p>\
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

async fn login(
    State(app): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(login): Form<Login>,
) -> Result<Response, Failure> {
    let user = login.user.trim();
    if Owner::new(user).is_err() {
        return Ok((
            StatusCode::BAD_REQUEST,
            "a name of 1 to 128 printable bytes",
        )
            .into_response());
    }
    // A new id for the session on every privilege change: whoever knew the old id (say, an
    // attacker who planted it) does not get the logged-in session. With a grace window:
    // the page's other requests still in flight with the old cookie read the session as it
    // was (never the login) for a few seconds instead of finding none.
    cycle_id_with_grace(&app.store, &session, LOGIN_GRACE).await?;
    if session.get::<i64>("started").await?.is_none() {
        session
            .insert("started", session_stores::now_millis())
            .await?;
    }
    // The adapter makes `user` the session's owner, so the store indexes it.
    session.insert(OWNER_KEY, user).await?;
    // What the sessions page shows about this device, and a token to tell it apart (with
    // `hash_ids_key_env` the store lists hashed ids, not the cookie's).
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown browser");
    session
        .insert("agent", agent.chars().take(120).collect::<String>())
        .await?;
    session
        .insert("device", SessionId::generate().into_string())
        .await?;
    Ok(Redirect::to("/").into_response())
}

/// The logged-in user's live sessions, from the store's owner index.
async fn sessions_page(State(app): State<AppState>, session: Session) -> Result<Response, Failure> {
    let Some(user) = session.get::<String>(OWNER_KEY).await? else {
        return Ok(Redirect::to("/").into_response());
    };
    let owner = Owner::new(user.as_str())?;
    let this_device = session.get::<String>("device").await?;
    let mut rows = String::new();
    let listed = app.store.inner().sessions_of(&owner, true).await?;
    for entry in &listed {
        let data = entry.data.as_ref();
        let text = |key: &str| {
            data.and_then(|d| d.get(key))
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let current = this_device.as_deref() == Some(text("device").as_str());
        // The button names the device by its token: a session id in a page would be a
        // credential one script could steal.
        let action = if current {
            "<b>(this device)</b>".to_string()
        } else {
            format!(
                "<form method=post action=/end-device><input type=hidden name=device \
                 value=\"{}\"><button>Sign out</button></form>",
                escape(&text("device"))
            )
        };
        let started = data.and_then(|d| d.get("started")).and_then(|v| v.as_i64());
        let when = |millis: Option<i64>| {
            millis.map_or("?".to_string(), |m| offset_date_time_of(m).to_string())
        };
        let lifetime = i64::try_from(ABSOLUTE_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            escape(&text("agent")),
            when(started),
            offset_date_time_of(entry.expires_at_millis),
            when(started.map(|s| s.saturating_add(lifetime))),
        ));
    }
    Ok(Html(format!(
        "<!doctype html><title>Your sessions</title>\
         <h1>{} session(s) of {}</h1>\
         <table><tr><th>Device</th><th>Started (UTC)</th><th>Idle expiry (UTC)</th>\
         <th>Absolute deadline (UTC)</th><th></th></tr>{rows}</table>\
         <form method=post action=/logout-others><button>Log out everywhere else</button></form>\
         <p><a href=/>Back</a></p>",
        listed.len(),
        escape(&user)
    ))
    .into_response())
}

/// Ends one other session of the logged-in user, found in the listing by its device token:
/// `destroy` of the id the listing gives ends exactly that session, also when the store
/// keeps sessions under hashed ids (the listing then gives an id that only `destroy`
/// accepts).
async fn end_device(
    State(app): State<AppState>,
    session: Session,
    Form(form): Form<Device>,
) -> Result<Redirect, Failure> {
    if let Some(user) = session.get::<String>(OWNER_KEY).await? {
        let owner = Owner::new(user)?;
        let listed = app.store.inner().sessions_of(&owner, true).await?;
        let device = |data: Option<&serde_json::Map<String, serde_json::Value>>| {
            data.and_then(|d| d.get("device"))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let this_device = session.get::<String>("device").await?;
        for entry in listed {
            let of_entry = device(entry.data.as_ref());
            if of_entry.as_deref() == Some(form.device.as_str()) && of_entry != this_device {
                app.store.inner().destroy(&entry.id).await?;
            }
        }
    }
    Ok(Redirect::to("/sessions"))
}

/// Ends every other session of the logged-in user, keeping this one.
async fn logout_others(State(app): State<AppState>, session: Session) -> Result<Redirect, Failure> {
    if let (Some(user), Some(id)) = (session.get::<String>(OWNER_KEY).await?, session.id()) {
        let owner = Owner::new(user)?;
        app.store
            .inner()
            .destroy_owner(&owner, Some(&session_id_of(&id)?))
            .await?;
    }
    Ok(Redirect::to("/sessions"))
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

    // Idle for an hour at most (tower-sessions' expiry below), and never longer than
    // twelve hours in all, however active.
    let store = TowerSessionsStore::from_box(connect(&url).await?)
        .with_owner_key(OWNER_KEY)
        .with_absolute_lifetime(ABSOLUTE_LIFETIME);
    // Expired sessions are never served; this reclaims their space every minute.
    let cleanup = spawn_cleanup(store.inner_arc(), Duration::from_secs(60));

    let sessions = SessionManagerLayer::new(store.clone())
        .with_secure(false) // plain http on localhost; keep the default `true` behind TLS
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)));
    let app = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/sessions", get(sessions_page))
        .route("/logout-others", post(logout_others))
        .route("/end-device", post(end_device))
        .route("/store", get(store_page))
        .layer(sessions)
        .with_state(AppState {
            kind,
            url: url.clone(),
            store,
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
