use serde_json::json;

use super::*;

fn map(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn loaded(data: Value) -> Loaded {
    Loaded::of(&Session::from_parts(map(data), i64::MAX, 7))
}

#[test]
fn fingerprints_follow_equality() {
    let a = json!({"x": [1, {"y": "z"}], "b": true, "n": null});
    let b: Value = serde_json::from_str(r#"{"n": null, "b": true, "x": [1, {"y": "z"}]}"#).unwrap();
    assert_eq!(fingerprint(&a), fingerprint(&b));
    for (one, other) in [
        (json!(1), json!(1.0)),
        (json!(-1), json!(u64::MAX)),
        (json!(-0.5), json!(0.5)),
        (json!(2), json!(3)),
        (json!("a"), json!(["a"])),
        (json!(["ab", "c"]), json!(["a", "bc"])),
        (json!({"a": 1, "b": 2}), json!({"a": 2, "b": 1})),
        (json!(null), json!(false)),
        (json!([]), json!({})),
        (json!(""), json!(null)),
    ] {
        assert_ne!(fingerprint(&one), fingerprint(&other), "{one} vs {other}");
    }
}

#[test]
fn merge_keeps_each_sides_own_changes() {
    let base = loaded(json!({"keep": 1, "mine": 1, "theirs": 1, "gone_mine": 1, "gone_theirs": 1}));
    let ours = map(json!({"keep": 1, "mine": 2, "theirs": 1, "gone_theirs": 1, "new_mine": 3}));
    let theirs = map(json!({"keep": 1, "mine": 1, "theirs": 2, "gone_mine": 1, "new_theirs": 4}));
    let merged = merge(&base, &ours, &theirs, OnConflict::Fail).unwrap();
    assert_eq!(
        Value::Object(merged),
        json!({"keep": 1, "mine": 2, "theirs": 2, "new_mine": 3, "new_theirs": 4})
    );
}

#[test]
fn a_key_both_changed_follows_the_policy() {
    let base = loaded(json!({"k": 1}));
    let ours = map(json!({"k": 2}));
    let theirs = map(json!({"k": 3}));
    let merged = merge(&base, &ours, &theirs, OnConflict::SaverWins).unwrap();
    assert_eq!(merged.get("k"), Some(&json!(2)));
    assert!(merge(&base, &ours, &theirs, OnConflict::Fail).is_err());
    // Both made the same change: no conflict.
    let same = map(json!({"k": 2}));
    assert_eq!(
        merge(&base, &ours, &same, OnConflict::Fail)
            .unwrap()
            .get("k"),
        Some(&json!(2))
    );
    // One removed, the other changed: a conflict too.
    let removed = map(json!({}));
    assert!(merge(&base, &removed, &theirs, OnConflict::Fail).is_err());
    assert!(
        merge(&base, &removed, &theirs, OnConflict::SaverWins)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_stamp_round_trips_and_refuses_strangers() {
    let base = loaded(json!({"a": 1, "b": [2]}));
    assert_eq!(Loaded::from_value(&base.clone().into_value()), Some(base));
    for stranger in [
        json!(null),
        json!({"v": 1}),
        json!({"v": -1, "k": {}}),
        json!({"v": 1, "k": {"a": "x"}}),
        json!("text"),
    ] {
        assert_eq!(Loaded::from_value(&stranger), None, "{stranger}");
    }
}
