//! The pieces every scenario uses: a recording store, a cookie jar and an app abstraction
//! over both frameworks.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use session_stores::{
    Capabilities, OwnedSession, Owner, Result, ScanCursor, ScanPage, Session, SessionId,
    SessionStore, async_trait,
};

/// The middleware configuration a scenario needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Sessions live for an hour; only changes are written.
    Default,
    /// Sessions live for one second.
    ShortTtl,
    /// Sessions live for an hour, and every request extends them (tower-sessions:
    /// `with_always_save`; actix-session: `TtlExtensionPolicy::OnEveryRequest`, which calls
    /// `update_ttl`).
    ExtendOnEveryRequest,
}

/// The routes every test app has:
///
/// - `GET /count`: adds one to `count` in the session and answers the new count;
/// - `GET /peek`: answers `count` and `user` without changing the session;
/// - `POST /login`: cycles the session id and sets `user` to `ada`;
/// - `POST /logout`: destroys the session;
/// - `GET /devices`: answers how many live sessions the logged-in user has (the adapters
///   take the owner from the `user` key);
/// - `POST /logout-others`: ends every other session of the logged-in user ("log out
///   everywhere else").
pub trait App {
    /// Sends a request with the jar's cookie, updates the jar from `Set-Cookie`, and returns
    /// the status code and body.
    async fn send(&self, jar: &mut Jar, method: &str, path: &str) -> (u16, String);
}

/// The name of the session cookie in every test app.
pub const COOKIE: &str = "id";

/// A one-cookie jar, as a browser keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jar(pub Option<String>);

impl Jar {
    /// A jar holding `value`.
    pub fn with(value: &str) -> Jar {
        Jar(Some(value.to_string()))
    }

    /// The `Cookie` request header value, if the jar holds a cookie.
    pub fn header(&self) -> Option<String> {
        self.0.as_ref().map(|value| format!("{COOKIE}={value}"))
    }

    /// Applies one `Set-Cookie` header: a new value replaces the cookie, an empty value
    /// (how both middlewares delete their cookie) removes it. Other cookies are ignored.
    pub fn apply(&mut self, set_cookie: &str) {
        let first = set_cookie.split(';').next().unwrap_or("").trim();
        if let Some((name, value)) = first.split_once('=')
            && name.trim() == COOKIE
        {
            let value = value.trim().trim_matches('"');
            self.0 = (!value.is_empty()).then(|| value.to_string());
        }
    }
}

/// A store that passes everything to `inner` and remembers the ids it was asked to create,
/// so a test can find a session whose cookie it cannot read (actix-session signs it).
pub struct Recording {
    pub inner: Arc<dyn SessionStore>,
    created: Mutex<Vec<SessionId>>,
    /// Sessions whose `get` fails as the store's own decode error would (a corrupt entry, a
    /// key rotated out of the ring).
    poisoned: Mutex<Vec<SessionId>>,
    /// The holding handlers (`/hold-cart`, `/hold-theme`) add a permit to `loaded` once they
    /// have read their session, then wait for a permit of `go` before they change it: the
    /// scenario decides what happens in between.
    pub loaded: tokio::sync::Semaphore,
    pub go: tokio::sync::Semaphore,
}

impl Recording {
    pub fn new(inner: Arc<dyn SessionStore>) -> Arc<Recording> {
        Arc::new(Recording {
            inner,
            created: Mutex::new(Vec::new()),
            poisoned: Mutex::new(Vec::new()),
            loaded: tokio::sync::Semaphore::new(0),
            go: tokio::sync::Semaphore::new(0),
        })
    }

    /// From now on, `get` of `id` fails with a decode error.
    pub fn poison(&self, id: &SessionId) {
        self.poisoned.lock().unwrap().push(id.clone());
    }

    /// What a holding handler does between reading its session and changing it.
    pub async fn hold(&self) {
        self.loaded.add_permits(1);
        self.go.acquire().await.unwrap().forget();
    }

    /// Waits until `n` holding handlers have read their session.
    pub async fn wait_loaded(&self, n: u32) {
        self.loaded.acquire_many(n).await.unwrap().forget();
    }

    /// Every id a successful `create` stored, oldest first.
    pub fn created(&self) -> Vec<SessionId> {
        self.created.lock().unwrap().clone()
    }

    /// The id of the last session created.
    pub fn last_created(&self) -> SessionId {
        self.created()
            .last()
            .cloned()
            .expect("a session was created")
    }
}

#[async_trait]
impl SessionStore for Recording {
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        if self.poisoned.lock().unwrap().contains(id) {
            return Err(session_stores::Error::decode(id, "poisoned by the test"));
        }
        self.inner.get(id).await
    }
    async fn set(&self, id: &SessionId, session: &Session) -> Result<u64> {
        self.inner.set(id, session).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, expires_at: SystemTime) -> Result<bool> {
        self.inner.touch(id, expires_at).await
    }
    async fn create(&self, id: &SessionId, session: &Session) -> Result<bool> {
        let created = self.inner.create(id, session).await?;
        if created {
            self.created.lock().unwrap().push(id.clone());
        }
        Ok(created)
    }
    async fn set_if_version(
        &self,
        id: &SessionId,
        session: &Session,
        expected: u64,
    ) -> Result<u64> {
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
    async fn rotate(
        &self,
        old: &session_stores::SessionId,
        new: &session_stores::SessionId,
        grace: std::time::Duration,
    ) -> session_stores::Result<session_stores::Rotation> {
        self.inner.rotate(old, new, grace).await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

/// The data key both test apps take the owner from.
pub const OWNER_KEY: &str = "user";

#[test]
fn jar_follows_set_cookie() {
    let mut jar = Jar::default();
    jar.apply("id=abc; HttpOnly; SameSite=Strict; Path=/");
    assert_eq!(jar, Jar::with("abc"));
    jar.apply("other=zzz; Path=/");
    assert_eq!(jar, Jar::with("abc"));
    jar.apply("id=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(jar, Jar::default());
    assert_eq!(Jar::with("x").header().as_deref(), Some("id=x"));
}
