//! Ids: sessions under different ids are isolated; hostile ids are refused and edge-case ids
//! work.

use std::time::SystemTime;

use serde_json::json;

use super::{CheckResult, Factory, HOUR, id, same_content, sample, session_with};
use crate::error::ErrorKind;
use crate::session::SessionId;
pub(crate) async fn ids_are_isolated(factory: Factory) -> CheckResult {
    let store = factory.boxed().await;
    let (a, b) = (id(), id());
    let (sa, sb) = (
        session_with(HOUR, json!({"who": "a"})),
        session_with(HOUR, json!({"who": "b"})),
    );
    call!("set a", store.set(&a, &sa).await);
    let vb = call!("set b", store.set(&b, &sb).await);
    call!("set a again", store.set(&a, &sample()).await);
    call!(
        "touch a",
        store.touch(&a, SystemTime::now() + HOUR * 3).await
    );
    call!("destroy a", store.destroy(&a).await);
    let got = call!("get b", store.get(&b).await).ok_or("b vanished after writes to a")?;
    same_content(&got, &sb)?;
    ensure!(got.version() == vb, "writes to a changed b's version");
    Ok(())
}

pub(crate) async fn invalid_ids_are_rejected_and_edge_ids_work(factory: Factory) -> CheckResult {
    let hostile = [
        String::new(),
        "x".repeat(SessionId::MAX_LEN + 1),
        "x".repeat(100 * 1024),
        "../../etc/passwd".into(),
        "a/b".into(),
        "a\\b".into(),
        "\0".into(),
        ".".into(),
        "..".into(),
        "a\u{1}b".into(),
        "a b".into(),
        "sess\u{e9}".into(),
        "*".into(),
        "a?".into(),
        "[ab]".into(),
    ];
    for raw in &hostile {
        match SessionId::new(raw.as_str()) {
            Err(err) if err.kind() == ErrorKind::InvalidId => {}
            other => {
                return Err(format!(
                    "SessionId::new accepted a hostile id ({} bytes): {other:?}",
                    raw.len()
                ));
            }
        }
    }
    let store = factory.boxed().await;
    let edge = [
        "x".repeat(SessionId::MAX_LEN),
        "a".into(),
        "...".into(),
        ".hidden".into(),
        "-_.~+=".into(),
        "UPPER_lower-0123456789".into(),
    ];
    for raw in &edge {
        let id =
            SessionId::new(raw.as_str()).map_err(|e| format!("a valid id was refused: {e}"))?;
        let session = session_with(HOUR, json!({ "id": raw }));
        call!("set with an edge-case id", store.set(&id, &session).await);
        let got = call!("get", store.get(&id).await)
            .ok_or_else(|| format!("the session under the valid id {raw:?} was not returned"))?;
        same_content(&got, &session)?;
    }
    let len = call!("len", store.len().await);
    ensure!(
        len == edge.len() as u64,
        "len is {len} after storing {} edge-case ids",
        edge.len()
    );
    Ok(())
}
