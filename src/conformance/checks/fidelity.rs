//! Data fidelity, scale, isolation between stores, and ids that differ only slightly.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{CheckResult, Factory, HOUR, PastExt, id, joined, sample, session_with, sleep_ms};
use crate::error::Error;
use crate::session::{Session, SessionId};
use crate::store::SessionStore;

fn edge_values() -> Value {
    json!({
        "a.b": "dotted key",
        "a b": "spaced key",
        " leading and trailing ": 1,
        "ключ 鍵 🔑": "unicode key",
        "": "empty key",
        "$where": "operator-like key",
        "a\"quote": "quoted key",
        "integral float": 1.0,
        "integer": 1,
        "negative float": -2.0,
        "fractions": [0.1, 2.5, 1e-7, -0.5],
        "crlf": "line one\r\nline two\r\n",
        "null member": null,
        "nested nulls": {"x": null, "y": [null, null]},
        "empty object": {},
        "empty array": [],
        "empties": [{}, [], "", [[]], [{}]],
        "large integers": [9007199254740993_u64, u64::MAX, i64::MIN, i64::MAX, -9007199254740993_i64],
        "zero": 0,
        "bools": [true, false],
        "tab\tkey": "tab",
    })
}

pub(crate) async fn round_trip_edge_values_exactly(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let session = session_with(HOUR, edge_values());
    call!("set", store.set(&id, &session).await);
    let got = call!("get", store.get(&id).await).ok_or("get returned None")?;
    let mut differing: Vec<String> = session
        .data()
        .iter()
        .filter(|(k, v)| got.data().get(*k) != Some(v))
        .map(|(k, v)| format!("{k:?} (wrote {v}, read {:?})", got.data().get(k)))
        .collect();
    differing.extend(
        got.data()
            .keys()
            .filter(|k| !session.data().contains_key(*k))
            .map(|k| format!("{k:?} (not written)")),
    );
    ensure!(
        differing.is_empty(),
        "data did not round-trip exactly: {}",
        differing.join("; ")
    );
    // 1.0 must stay a float and 1 an integer.
    let (float, int) = (&got.data()["integral float"], &got.data()["integer"]);
    ensure!(
        float.is_f64() && int.is_u64(),
        "1.0 and 1 were not kept apart: read back {float} ({}) and {int} ({})",
        if float.is_f64() { "float" } else { "integer" },
        if int.is_u64() { "integer" } else { "float" }
    );
    Ok(())
}

/// Writes `count` sessions with 16 tasks and returns their ids.
async fn fill(
    store: &Arc<dyn SessionStore>,
    count: usize,
    session: &Session,
) -> Result<Vec<SessionId>, String> {
    const TASKS: usize = 16;
    let ids: Vec<SessionId> = (0..count).map(|_| id()).collect();
    let chunks: Vec<Vec<SessionId>> = ids
        .chunks(count.div_ceil(TASKS).max(1))
        .map(<[SessionId]>::to_vec)
        .collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let (store, session) = (store.clone(), session.clone());
            tokio::spawn(async move {
                for id in &chunk {
                    store.set(id, &session).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        joined("a filling task", task.await)?;
    }
    Ok(ids)
}

pub(crate) async fn len_and_clear_at_scale(factory: Factory) -> CheckResult {
    const LIVE: usize = 2000;
    const EXPIRING: usize = 100;
    let store = factory.shared().await;
    let small = session_with(HOUR, json!({"n": 1}));
    let ids = fill(&store, LIVE, &small).await?;
    fill(&store, EXPIRING, &small.clone().with_expires_at(150)).await?;
    sleep_ms(300).await;
    let len = call!("len", store.len().await);
    ensure!(
        len == LIVE as u64,
        "len is {len} with {LIVE} live sessions and {EXPIRING} expired ones"
    );
    call!("clear", store.clear().await);
    let len = call!("len", store.len().await);
    ensure!(len == 0, "len is {len} after clear of {LIVE} sessions");
    ensure!(
        call!("is_empty", store.is_empty().await),
        "is_empty is false after clear"
    );
    for id in ids.iter().step_by(97) {
        ensure!(
            call!("get", store.get(id).await).is_none(),
            "a session survived clear of {LIVE} sessions"
        );
    }
    Ok(())
}

pub(crate) async fn stores_from_the_factory_are_isolated(factory: Factory) -> CheckResult {
    let a = factory.boxed().await;
    let b = factory.boxed().await;
    // One id in both stores holds two different sessions.
    let shared = id();
    let (sa, sb) = (
        session_with(HOUR, json!({"store": "a"})),
        session_with(HOUR, json!({"store": "b"})),
    );
    call!("set in a", a.set(&shared, &sa).await);
    call!("set in b", b.set(&shared, &sb).await);
    for _ in 0..2 {
        call!("set in a", a.set(&id(), &sample()).await);
    }
    for _ in 0..3 {
        call!("set in b", b.set(&id(), &sample()).await);
    }
    // A store too slow to write before the expiry stores nothing (and returns 0).
    let a_doomed = u64::from(
        call!(
            "set in a",
            a.set(&id(), &sample().with_expires_at(150)).await
        ) > 0,
    );
    let mut b_doomed = 0;
    for _ in 0..2 {
        if call!(
            "set in b",
            b.set(&id(), &sample().with_expires_at(150)).await
        ) > 0
        {
            b_doomed += 1;
        }
    }
    let got = call!("get from a", a.get(&shared).await).ok_or("a lost its session")?;
    ensure!(
        got.data() == sa.data(),
        "store a returned store b's session under the same id"
    );
    sleep_ms(300).await;
    ensure!(
        call!("len of a", a.len().await) == 3 && call!("len of b", b.len().await) == 4,
        "len counts another store's sessions"
    );
    if !a.capabilities().expires_by_itself {
        let removed = call!("delete_expired on a", a.delete_expired().await);
        ensure!(
            removed == a_doomed,
            "delete_expired on store a removed {removed}, but a had {a_doomed} expired session \
             (b had {b_doomed})"
        );
        let removed = call!("delete_expired on b", b.delete_expired().await);
        ensure!(
            removed == b_doomed,
            "delete_expired on store b removed {removed}, not its {b_doomed} expired sessions"
        );
    }
    call!("destroy in a", a.destroy(&shared).await);
    ensure!(
        call!("get from b", b.get(&shared).await).is_some(),
        "destroy in store a removed store b's session"
    );
    call!("clear a", a.clear().await);
    ensure!(
        call!("len of a", a.len().await) == 0,
        "clear did not empty store a"
    );
    let len = call!("len of b", b.len().await);
    ensure!(
        len == 4,
        "clear of store a left store b with {len} sessions, not 4"
    );
    let got = call!("get from b", b.get(&shared).await).ok_or("clear of a removed b's session")?;
    ensure!(
        got.data() == sb.data(),
        "store b's session changed when a was cleared"
    );
    Ok(())
}

pub(crate) async fn ids_that_differ_slightly_are_distinct(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let base = id().into_string();
    let max = SessionId::MAX_LEN;
    let long = format!("{base}{}", "x".repeat(max - base.len() - 1));
    let raw = [
        format!("{}q", base.to_ascii_lowercase()),
        format!("{}Q", base.to_ascii_uppercase()),
        format!("{}q", base.to_ascii_uppercase()),
        format!("{base}.x"),
        format!("{base}_x"),
        format!("{base}-x"),
        format!("{base}~x"),
        format!("{long}a"),
        format!("{long}b"),
        format!("{long}A"),
        base.clone(),
        format!("{base}."),
    ];
    let ids: Vec<SessionId> = raw
        .iter()
        .map(|r| SessionId::new(r.as_str()).map_err(|e| format!("{r:?} was refused: {e}")))
        .collect::<Result<_, _>>()?;
    for (i, id) in ids.iter().enumerate() {
        call!(
            "set",
            store.set(id, &session_with(HOUR, json!({ "i": i }))).await
        );
    }
    let len = call!("len", store.len().await);
    ensure!(
        len == ids.len() as u64,
        "len is {len} after writing {} ids that differ only slightly: some were taken for one",
        ids.len()
    );
    for (i, id) in ids.iter().enumerate() {
        let got = call!("get", store.get(id).await)
            .ok_or_else(|| format!("the session under id #{i} vanished"))?;
        ensure!(
            got.data().get("i") == Some(&json!(i)),
            "id #{i} returned the session of id #{}: ids that differ only in case, in . \
             versus _, or in their last byte must be different sessions",
            got.data().get("i").cloned().unwrap_or(Value::Null)
        );
    }
    call!("destroy", store.destroy(&ids[7]).await);
    ensure!(
        call!("get", store.get(&ids[8]).await).is_some(),
        "destroying one of two maximum-length ids that differ in the last byte removed the other"
    );
    // An id that is a prefix of others: destroying it removes it alone.
    call!("destroy", store.destroy(&ids[10]).await);
    ensure!(
        call!("get", store.get(&ids[10]).await).is_none(),
        "destroy did not remove its session"
    );
    let len = call!("len", store.len().await);
    ensure!(
        len == ids.len() as u64 - 2,
        "len is {len} after destroying 2 of {} ids: destroying an id removed others that \
         start with it",
        ids.len()
    );
    Ok(())
}

/// Strings with U+0000, the other C0 controls, DEL, C1 controls, line separators and text that
/// looks like an escape, as values, as keys and nested.
fn control_strings() -> Value {
    let c0: String = (0u8..0x20).map(char::from).collect();
    json!({
        "nul": "a\u{0}b",
        "only nul": "\u{0}",
        "trailing nul": "end\u{0}",
        "c0": c0,
        "del and c1": "\u{7f}\u{80}\u{85}\u{9f}",
        "separators": "\u{2028}\u{2029}\u{feff}",
        "escape look-alikes": "\\u0000 \\n \\\" \\\\",
        "k\u{0}ey": "nul in a key",
        "\u{1}\u{1f}": "controls as a key",
        "nested": {"list": ["\u{0}", "\u{1b}[31m", {"\u{0}": "\r\u{0}\n"}]},
    })
}

pub(crate) async fn strings_with_control_characters_round_trip_or_are_refused(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let before = session_with(HOUR, json!({"before": "the control strings were written"}));
    let data = control_strings();
    let session = session_with(HOUR, data.clone());
    // Each write path: over a live session (set, set_if_version) and over an absent id
    // (create), so that a refusal is seen to leave the old session, or nothing, in place.
    for how in ["set", "set_if_version", "create"] {
        let id = id();
        let old_version = if how == "create" {
            0
        } else {
            call!("set", store.set(&id, &before).await)
        };
        let written = match how {
            "set" => store.set(&id, &session).await.map(|_| ()),
            "set_if_version" => store
                .set_if_version(&id, &session, old_version)
                .await
                .map(|_| ()),
            _ => store.create(&id, &session).await.and_then(|created| {
                if created {
                    Ok(())
                } else {
                    Err(Error::backend("create", Some(&id), "returned false"))
                }
            }),
        };
        let got = call!("get", store.get(&id).await);
        match written {
            Ok(()) => {
                let got = got.ok_or_else(|| format!("{how} succeeded but get returned None"))?;
                ensure!(
                    Value::Object(got.data().clone()) == data,
                    "{how} of strings with control characters succeeded, but they did not \
                     round-trip exactly: {}",
                    changed_strings(&data, &Value::Object(got.data().clone())).join("; ")
                );
            }
            Err(err) if err.kind() == crate::error::ErrorKind::Encode => {
                super::names_the_session(&err, &id, "the refusal")?;
                if how == "create" {
                    ensure!(
                        got.is_none(),
                        "a create refused with Encode left a session under the id"
                    );
                } else {
                    let got = got.ok_or_else(|| {
                        format!("{how} refused with Encode removed the previous session")
                    })?;
                    ensure!(
                        got.data() == before.data() && got.version() == old_version,
                        "{how} refused with Encode changed the previous session"
                    );
                }
            }
            Err(err) => {
                return Err(format!(
                    "{how} of strings with control characters failed with {} (a store that \
                     cannot keep them must refuse with Encode)",
                    super::chain(&err)
                ));
            }
        }
    }
    Ok(())
}

/// The paths (keys, escaped) whose values differ between `want` and `got`.
fn changed_strings(want: &Value, got: &Value) -> Vec<String> {
    fn walk(path: &str, want: &Value, got: Option<&Value>, out: &mut Vec<String>) {
        match (want, got) {
            (Value::Object(w), Some(Value::Object(g))) => {
                for (k, v) in w {
                    walk(&format!("{path}/{}", k.escape_default()), v, g.get(k), out);
                }
                for k in g.keys().filter(|k| !w.contains_key(*k)) {
                    out.push(format!("{path}/{}: not written", k.escape_default()));
                }
            }
            (Value::Array(w), Some(Value::Array(g))) if w.len() == g.len() => {
                for (i, (v, h)) in w.iter().zip(g).enumerate() {
                    walk(&format!("{path}/{i}"), v, Some(h), out);
                }
            }
            (w, g) if Some(w) != g => out.push(format!(
                "{path}: wrote {}, read {}",
                w.to_string().escape_default(),
                g.map_or("nothing".to_string(), |g| g
                    .to_string()
                    .escape_default()
                    .to_string())
            )),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", want, Some(got), &mut out);
    out
}
