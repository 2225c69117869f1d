//! Id validation: whatever the input, `SessionId::new` either refuses it or accepts only
//! text that is safe as a file name, a Redis key suffix and a bound SQL parameter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_stores::SessionId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let checked = SessionId::check(text).is_ok();
    match SessionId::new(text) {
        Ok(id) => {
            assert!(checked, "check and new disagree on {text:?}");
            let s = id.as_str();
            assert!(!s.is_empty() && s.len() <= SessionId::MAX_LEN);
            assert!(s != "." && s != "..");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~+=".contains(&b)),
                "accepted {s:?}"
            );
            assert_eq!(s, text);
            // The shortened form never exceeds the hint length.
            assert!(id.hint().as_str().chars().count() <= 9);
        }
        Err(err) => {
            assert!(!checked, "check and new disagree on {text:?}");
            // The message depends only on the reason, never on the refused text.
            match &err {
                session_stores::Error::InvalidId { reason } => {
                    assert_eq!(err.to_string(), format!("invalid session id: {reason}"));
                }
                other => panic!("not an InvalidId error: {other:?}"),
            }
        }
    }
});
