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

#[test]
fn the_stamp_carries_the_loaded_id_and_expiry() {
    let id = SessionId::generate();
    let session = Session::from_parts(map(json!({"a": 1})), 1_234_567, 9);
    let stamp = Loaded::of_id(&id, &session);
    let back = Loaded::from_value(&stamp.clone().into_value()).unwrap();
    assert_eq!(back, stamp);
    assert_eq!(back.origin.as_deref(), Some(id.as_str()));
    assert_eq!(back.expires_at, Some(1_234_567));
    assert_eq!(back.at_version(12).version, 12);
    assert_eq!(back.at_version(12).origin, back.origin);
    // A stamp without them (an older one) reads with none.
    let plain = Loaded::from_value(&Loaded::of(&session).into_value()).unwrap();
    assert_eq!((plain.origin, plain.expires_at), (None, None));
}

#[test]
fn unchanged_means_the_same_keys_and_values() {
    let base = loaded(json!({"a": 1, "b": [1, 2]}));
    assert!(base.unchanged(&map(json!({"b": [1, 2], "a": 1}))));
    assert!(!base.unchanged(&map(json!({"a": 1, "b": [1, 3]}))));
    assert!(!base.unchanged(&map(json!({"a": 1}))));
    assert!(!base.unchanged(&map(json!({"a": 1, "b": [1, 2], "c": null}))));
    assert!(!base.unchanged(&map(json!({"a": 1, "c": [1, 2]}))));
    assert!(loaded(json!({})).unchanged(&Map::new()));
}

#[test]
fn a_touch_is_due_when_it_moves_the_expiry_by_the_fraction() {
    let now = 1_000_000;
    let idle = 10_000;
    // Moving by exactly a tenth of the idle time is due at 0.1; a millisecond less is not.
    assert!(touch_due(now + idle - 1_000, now + idle, now, 0.1));
    assert!(!touch_due(now + idle - 999, now + idle, now, 0.1));
    // 0 always touches; 1 only when the whole idle time passed.
    assert!(touch_due(now + idle, now + idle, now, 0.0));
    assert!(!touch_due(now + 1, now + idle, now, 1.0));
    assert!(touch_due(now, now + idle, now, 1.0));
    // Out-of-range fractions are clamped; an expiry moved earlier is never due (but at 0).
    assert!(!touch_due(now + idle + 5, now + idle, now, 0.5));
    assert!(touch_due(now, now + idle, now, 7.0));
    assert!(touch_due(now + idle, now + idle, now, -3.0));
}

#[test]
fn rotations_follow_a_marked_id_from_delete_to_create() {
    let rotations = Rotations::default();
    let (old, new) = (SessionId::generate(), SessionId::generate());
    assert_eq!(rotations.marked(&old), None);
    assert!(rotations.mark(old.clone(), std::time::Duration::from_secs(5)));
    assert_eq!(
        rotations.marked(&old),
        Some(std::time::Duration::from_secs(5))
    );
    // Not moved yet: nothing to take.
    assert_eq!(rotations.take_moved(old.as_str()), None);
    rotations.moved(&old, new.clone(), 42);
    // Moved: no longer "marked" for another delete, and taken once.
    assert_eq!(rotations.marked(&old), None);
    assert_eq!(rotations.take_moved(old.as_str()), Some((new, 42)));
    assert_eq!(rotations.take_moved(old.as_str()), None);
    assert_eq!(rotations.take_moved("not a valid id!"), None);
    // Forgotten.
    assert!(rotations.mark(old.clone(), std::time::Duration::from_secs(5)));
    rotations.forget(&old);
    assert_eq!(rotations.marked(&old), None);
}

#[test]
fn rotations_hold_a_bounded_number_of_marks() {
    let rotations = Rotations::default();
    for _ in 0..MAX_PENDING {
        assert!(rotations.mark(SessionId::generate(), std::time::Duration::from_secs(1)));
    }
    // Full: a further mark is refused (that cycle simply has no grace).
    assert!(!rotations.mark(SessionId::generate(), std::time::Duration::from_secs(1)));
}
