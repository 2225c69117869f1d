//! The request-level suite: what any adapter between a session middleware and a store must
//! keep, whatever the store, when requests interleave.
//!
//! The store suite checks one store call at a time. Users reach a store through a
//! middleware, where a request loads a session, changes it while other requests run, and
//! saves it at the end; that is where updates get lost and logged-out sessions come back.
//! [`run_requests`] plays such interleavings through a [`RequestAdapter`] (the two halves
//! of a request, as the middleware calls them) and checks the store afterwards:
//!
//! | scenario | the promise |
//! |---|---|
//! | `concurrent_saves_keep_both_changes` | two requests loaded one session; each adds its own key; both saves land: both keys stay |
//! | `a_key_both_changed_takes_the_later_save` | both changed one key: the later save's value wins, the other keys stay |
//! | `a_removal_is_a_change` | a key one request removed stays removed after the other request's save |
//! | `a_save_after_a_logout_writes_nothing` | `destroy` while a request is in flight: its save does not bring the session back, nor its state under another id |
//! | `a_save_after_destroy_owner_writes_nothing` | the same for "log out everywhere" |
//! | `a_save_after_expiry_writes_nothing` | the session expired while a request was in flight: not revived |
//! | `cycling_the_id_moves_the_session` | login: the old id is gone, the new one holds the data, and no id is taken over |
//! | `nothing_of_the_adapter_is_stored` | what the adapter adds to a loaded session to carry it to the save never reaches the store |
//!
//! The adapter must take a session's owner from the data key [`OWNER_KEY`] (`"user"`).
//! Both of this crate's adapters implement [`RequestAdapter`] (with their features).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::session::{Owner, SessionId};
use crate::store::SessionStore;

/// An error of the adapter under test.
pub type AdapterError = Box<dyn std::error::Error + Send + Sync>;

/// The data key the adapter under test must take the owner from.
pub const OWNER_KEY: &str = "user";

/// An adapter as its middleware calls it, in the middleware's own vocabulary brought to one
/// shape: a request's data is a JSON object (actix-session's JSON-text values are
/// `Value::String`s of that text, see [`encode`](RequestAdapter::encode)).
#[async_trait]
pub trait RequestAdapter: Send + Sync {
    /// The store the adapter writes to.
    fn store(&self) -> &dyn SessionStore;

    /// A value as this middleware hands it to the adapter (actix-session: its JSON text).
    fn encode(&self, value: Value) -> Value {
        value
    }

    /// The start of a request whose cookie names `id`: the data the middleware gets, with
    /// whatever the adapter adds to it, or `None` for no session.
    async fn load(&self, id: &SessionId) -> Result<Option<Map<String, Value>>, AdapterError>;

    /// The end of a request that loaded `id` and changed its data to `data`, to live `ttl`
    /// more. Returns the session its cookie names afterwards (the same id, another one, or
    /// none).
    async fn save(
        &self,
        id: &SessionId,
        data: Map<String, Value>,
        ttl: Duration,
    ) -> Result<Option<SessionId>, AdapterError>;

    /// A new session with `data` (a first request, or the second half of a login's id
    /// cycle); returns its id.
    async fn create(
        &self,
        data: Map<String, Value>,
        ttl: Duration,
    ) -> Result<SessionId, AdapterError>;

    /// A logout through the middleware.
    async fn delete(&self, id: &SessionId) -> Result<(), AdapterError>;
}

/// One failed scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioFailure {
    /// The scenario's name, as in the table above.
    pub scenario: &'static str,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for ScenarioFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request scenario `{}` failed: {}",
            self.scenario, self.message
        )
    }
}

impl std::error::Error for ScenarioFailure {}

/// The names of the scenarios, in the order [`run_requests`] runs them.
pub const SCENARIOS: &[&str] = &[
    "concurrent_saves_keep_both_changes",
    "a_key_both_changed_takes_the_later_save",
    "a_removal_is_a_change",
    "a_save_after_a_logout_writes_nothing",
    "a_save_after_destroy_owner_writes_nothing",
    "a_save_after_expiry_writes_nothing",
    "cycling_the_id_moves_the_session",
    "nothing_of_the_adapter_is_stored",
];

type Outcome = Result<(), String>;

const HOUR: Duration = Duration::from_secs(3600);

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn fail(err: AdapterError) -> String {
    format!("the adapter failed: {err}")
}

fn object(adapter: &dyn RequestAdapter, pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), adapter.encode(value.clone())))
        .collect()
}

async fn load(adapter: &dyn RequestAdapter, id: &SessionId) -> Result<Map<String, Value>, String> {
    adapter
        .load(id)
        .await
        .map_err(fail)?
        .ok_or_else(|| "a live session loaded as no session".to_owned())
}

async fn stored(
    adapter: &dyn RequestAdapter,
    id: &SessionId,
) -> Result<Option<Map<String, Value>>, String> {
    let session = adapter
        .store()
        .get(id)
        .await
        .map_err(|err| format!("the store failed: {err}"))?;
    Ok(session.map(|session| session.into_parts().0))
}

/// Runs every scenario against `adapter`; each scenario works on sessions of its own, so
/// the store may hold others. `Err` lists every failed scenario.
pub async fn run_requests(adapter: &dyn RequestAdapter) -> Result<(), Vec<ScenarioFailure>> {
    let mut failures = Vec::new();
    for &name in SCENARIOS {
        if let Err(message) = run_scenario(name, adapter).await {
            failures.push(ScenarioFailure {
                scenario: name,
                message,
            });
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Runs the one scenario called `name`.
pub async fn run_scenario(name: &str, adapter: &dyn RequestAdapter) -> Result<(), String> {
    match name {
        "concurrent_saves_keep_both_changes" => concurrent_saves(adapter).await,
        "a_key_both_changed_takes_the_later_save" => both_changed(adapter).await,
        "a_removal_is_a_change" => removal(adapter).await,
        "a_save_after_a_logout_writes_nothing" => gone_in_flight(adapter, Ending::Logout).await,
        "a_save_after_destroy_owner_writes_nothing" => {
            gone_in_flight(adapter, Ending::DestroyOwner).await
        }
        "a_save_after_expiry_writes_nothing" => gone_in_flight(adapter, Ending::Expiry).await,
        "cycling_the_id_moves_the_session" => cycle(adapter).await,
        "nothing_of_the_adapter_is_stored" => nothing_stored(adapter).await,
        _ => Err(format!("there is no request scenario called `{name}`")),
    }
}

async fn concurrent_saves(adapter: &dyn RequestAdapter) -> Outcome {
    let count = object(adapter, &[("count", Value::from(1))]);
    let id = adapter.create(count, HOUR).await.map_err(fail)?;
    let mut one = load(adapter, &id).await?;
    let mut other = load(adapter, &id).await?;
    one.insert("cart".into(), adapter.encode(Value::from("book")));
    other.insert("theme".into(), adapter.encode(Value::from("dark")));
    adapter.save(&id, one, HOUR).await.map_err(fail)?;
    adapter.save(&id, other, HOUR).await.map_err(fail)?;
    let now = stored(adapter, &id).await?.ok_or("the session is gone")?;
    for key in ["count", "cart", "theme"] {
        ensure!(
            now.contains_key(key),
            "`{key}` was lost: keys {:?}",
            now.keys().collect::<Vec<_>>()
        );
    }
    Ok(())
}

async fn both_changed(adapter: &dyn RequestAdapter) -> Outcome {
    let data = object(
        adapter,
        &[("k", Value::from("base")), ("other", Value::from(1))],
    );
    let id = adapter.create(data, HOUR).await.map_err(fail)?;
    let mut one = load(adapter, &id).await?;
    let mut other = load(adapter, &id).await?;
    one.insert("k".into(), adapter.encode(Value::from("first")));
    one.insert("mine".into(), adapter.encode(Value::from(true)));
    other.insert("k".into(), adapter.encode(Value::from("second")));
    adapter.save(&id, one, HOUR).await.map_err(fail)?;
    adapter.save(&id, other, HOUR).await.map_err(fail)?;
    let now = stored(adapter, &id).await?.ok_or("the session is gone")?;
    ensure!(
        now.get("k") == Some(&adapter.encode(Value::from("second"))),
        "`k` is {:?}, not the later save's value",
        now.get("k")
    );
    ensure!(
        now.contains_key("mine") && now.contains_key("other"),
        "a key only one side had was lost"
    );
    Ok(())
}

async fn removal(adapter: &dyn RequestAdapter) -> Outcome {
    let data = object(adapter, &[("x", Value::from(1)), ("y", Value::from(1))]);
    let id = adapter.create(data, HOUR).await.map_err(fail)?;
    let mut one = load(adapter, &id).await?;
    let mut other = load(adapter, &id).await?;
    one.remove("x");
    other.insert("y".into(), adapter.encode(Value::from(2)));
    adapter.save(&id, one, HOUR).await.map_err(fail)?;
    adapter.save(&id, other, HOUR).await.map_err(fail)?;
    let now = stored(adapter, &id).await?.ok_or("the session is gone")?;
    ensure!(!now.contains_key("x"), "a removed key came back");
    ensure!(
        now.get("y") == Some(&adapter.encode(Value::from(2))),
        "the other change was lost"
    );
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    Logout,
    DestroyOwner,
    Expiry,
}

async fn gone_in_flight(adapter: &dyn RequestAdapter, ending: Ending) -> Outcome {
    let owner = Owner::new(format!("conformance-{}", SessionId::generate().hint()))
        .map_err(|err| err.to_string())?;
    let ttl = HOUR;
    let data = object(
        adapter,
        &[
            (OWNER_KEY, Value::from(owner.as_str())),
            ("secret", Value::from("old state")),
        ],
    );
    let id = adapter.create(data, ttl).await.map_err(fail)?;
    ensure!(
        adapter
            .store()
            .get(&id)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|s| s.owner().cloned())
            == Some(owner.clone()),
        "the adapter did not take the owner from `{OWNER_KEY}`"
    );
    let mut request = load(adapter, &id).await?;
    match ending {
        Ending::Logout => adapter.delete(&id).await.map_err(fail)?,
        Ending::DestroyOwner => {
            adapter
                .store()
                .destroy_owner(&owner, None)
                .await
                .map_err(|err| format!("the store failed: {err}"))?;
        }
        // The session's time runs out while the request runs (moved into the past rather
        // than waited for, so that a slow machine cannot expire it before the load).
        Ending::Expiry => {
            let past = std::time::SystemTime::now() - Duration::from_secs(1);
            adapter
                .store()
                .touch(&id, past)
                .await
                .map_err(|err| format!("the store failed: {err}"))?;
        }
    }
    request.insert("cart".into(), adapter.encode(Value::from("book")));
    let after = adapter.save(&id, request, HOUR).await.map_err(fail)?;
    ensure!(
        stored(adapter, &id).await?.is_none(),
        "the session came back under its id"
    );
    let owned = adapter
        .store()
        .sessions_of(&owner, false)
        .await
        .map_err(|err| format!("the store failed: {err}"))?;
    ensure!(
        owned.is_empty(),
        "{} session(s) of the logged-out owner exist",
        owned.len()
    );
    if let Some(other) = after.filter(|other| *other != id) {
        let data = stored(adapter, &other).await?.unwrap_or_default();
        ensure!(
            !data.contains_key(OWNER_KEY)
                && !data.contains_key("secret")
                && !data.contains_key("cart"),
            "the old state followed the request to a new id: keys {:?}",
            data.keys().collect::<Vec<_>>()
        );
    }
    Ok(())
}

async fn cycle(adapter: &dyn RequestAdapter) -> Outcome {
    let data = object(adapter, &[("count", Value::from(1))]);
    let old = adapter.create(data, HOUR).await.map_err(fail)?;
    let other = adapter
        .create(object(adapter, &[("someone", Value::from("else"))]), HOUR)
        .await
        .map_err(fail)?;
    ensure!(old != other, "two creates gave one id");
    let mut request = load(adapter, &old).await?;
    request.insert(OWNER_KEY.into(), adapter.encode(Value::from("ada")));
    adapter.delete(&old).await.map_err(fail)?;
    let new = adapter.create(request, HOUR).await.map_err(fail)?;
    ensure!(
        new != old && new != other,
        "the login took over an existing id"
    );
    ensure!(
        stored(adapter, &old).await?.is_none(),
        "the old id still holds a session"
    );
    let now = stored(adapter, &new)
        .await?
        .ok_or("the new id holds nothing")?;
    ensure!(
        now.contains_key("count") && now.contains_key(OWNER_KEY),
        "the data did not move: {:?}",
        now.keys().collect::<Vec<_>>()
    );
    let untouched = stored(adapter, &other)
        .await?
        .ok_or("another session is gone")?;
    ensure!(untouched.contains_key("someone"), "another session changed");
    Ok(())
}

async fn nothing_stored(adapter: &dyn RequestAdapter) -> Outcome {
    let data = object(adapter, &[("a", Value::from(1))]);
    let id = adapter.create(data, HOUR).await.map_err(fail)?;
    let mut request = load(adapter, &id).await?;
    request.insert("b".into(), adapter.encode(Value::from(2)));
    adapter.save(&id, request, HOUR).await.map_err(fail)?;
    let now = stored(adapter, &id).await?.ok_or("the session is gone")?;
    let mut keys: Vec<_> = now.keys().map(String::as_str).collect();
    keys.sort_unstable();
    ensure!(
        keys == ["a", "b"],
        "the store holds keys {keys:?}, not just the request's a and b"
    );
    Ok(())
}
