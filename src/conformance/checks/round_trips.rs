//! Round trips: nested JSON and Unicode, a 1 MiB session, empty data, and data nested to
//! the limit (deeper is refused).

use serde_json::{Value, json};

use super::{
    CheckResult, Factory, HOUR, id, names_the_session, nested, same_content, session_with,
};
use crate::error::ErrorKind;
use crate::session::Session;
fn nested_unicode() -> Value {
    json!({
        "unicode": "héllo wörld — 你好, мир, 🎉🦀, \u{10FFFF}",
        "escapes": "quote \" backslash \\ slash / controls \n\t\r\u{0008}\u{000C} nul-free \u{001F}",
        "numbers": {
            "i64_min": i64::MIN, "i64_max": i64::MAX, "u64_max": u64::MAX,
            "zero": 0, "neg": -1, "float": 1.5, "small": 1.0e-300, "big": 1.7976931348623157e308,
            "pi": std::f64::consts::PI
        },
        "literals": [true, false, null],
        "empty": {"object": {}, "array": [], "string": ""},
        "deep": {"a": {"b": {"c": {"d": {"e": {"f": [1, [2, [3, [4, {"g": "h"}]]]]}}}}}},
        "keys with spaces and ünïcode": {"🔑": "value"},
        "array_of_objects": [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]
    })
}

pub(crate) async fn round_trip_nested_json_and_unicode(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (id, session) = (id(), session_with(HOUR, nested_unicode()));
    call!("set", store.set(&id, &session).await);
    let got = call!("get", store.get(&id).await).ok_or("get returned None")?;
    if got.data() != session.data() {
        let mut differing: Vec<&String> = session
            .data()
            .iter()
            .filter(|(k, v)| got.data().get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        differing.sort();
        return Err(format!(
            "nested JSON did not round-trip exactly; differing keys: {differing:?}"
        ));
    }
    same_content(&got, &session)
}

pub(crate) async fn round_trip_one_mib_session(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let blob: String = (0..(1 << 20))
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let session = session_with(HOUR, json!({ "blob": blob, "tail": "end" }));
    call!("set of a 1 MiB session", store.set(&id, &session).await);
    let got = call!("get", store.get(&id).await).ok_or("get returned None")?;
    same_content(&got, &session)
}

pub(crate) async fn round_trip_empty_session(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (id, session) = (id(), Session::new(HOUR));
    call!("set of an empty session", store.set(&id, &session).await);
    let got = call!("get", store.get(&id).await)
        .ok_or("a session with empty data was not returned: empty data is still a session")?;
    same_content(&got, &session)?;
    ensure!(
        call!("len", store.len().await) == 1,
        "len does not count an empty session"
    );
    Ok(())
}

pub(crate) async fn nesting_at_the_limit_round_trips_and_deeper_is_refused(
    factory: Factory,
) -> CheckResult {
    let store = factory.boxed().await;
    let id = id();
    let deepest = session_with(HOUR, nested(crate::session::MAX_NESTING));
    call!(
        "set of data nested exactly MAX_NESTING levels deep",
        store.set(&id, &deepest).await
    );
    let got = call!("get", store.get(&id).await).ok_or("the deepest allowed session vanished")?;
    same_content(&got, &deepest)?;
    let fresh = self::id();
    for depth in [crate::session::MAX_NESTING + 1, 500] {
        let bomb = session_with(HOUR, nested(depth));
        for (op, target, result) in [
            ("set", &id, store.set(&id, &bomb).await.map(|_| ())),
            (
                "set_if_version",
                &id,
                store
                    .set_if_version(&id, &bomb, got.version())
                    .await
                    .map(|_| ()),
            ),
            (
                "set of a new id",
                &fresh,
                store.set(&fresh, &bomb).await.map(|_| ()),
            ),
            (
                "create",
                &fresh,
                store.create(&fresh, &bomb).await.map(|_| ()),
            ),
            (
                "set_if_version(.., 0) of a new id",
                &fresh,
                store.set_if_version(&fresh, &bomb, 0).await.map(|_| ()),
            ),
        ] {
            match result {
                Err(err) if err.kind() == ErrorKind::Encode => {
                    names_the_session(&err, target, &format!("{op}'s encode error"))?;
                }
                other => {
                    return Err(format!(
                        "{op} of data nested {depth} levels deep gave {other:?}, not an encode error"
                    ));
                }
            }
        }
    }
    ensure!(
        call!("get", store.get(&fresh).await).is_none(),
        "a refused write of over-deep data stored something under a new id"
    );
    ensure!(
        call!("len", store.len().await) == 1,
        "a refused write of over-deep data is counted by len"
    );
    let after = call!("get", store.get(&id).await).ok_or("a refused write removed the session")?;
    same_content(&after, &deepest)?;
    ensure!(
        after.version() == got.version(),
        "a refused write changed the version"
    );
    Ok(())
}
