//! The Postgres store's row decoder: any `data` text (as `jsonb` would print it, including
//! the long integers it prints for large floats), expiry and version give a session or a
//! typed decode error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_stores::ErrorKind;
use session_stores::stores::postgres::__fuzz_decode;

fuzz_target!(|input: &[u8]| {
    if input.len() < 16 {
        return;
    }
    let (numbers, text) = input.split_at(16);
    let expires_at = i64::from_le_bytes(numbers[..8].try_into().unwrap());
    let version = i64::from_le_bytes(numbers[8..].try_into().unwrap());
    let text = String::from_utf8_lossy(text);
    match __fuzz_decode(&text, expires_at, version) {
        Ok(session) => {
            assert!(session.version() > 0);
            assert_eq!(session.expires_at_millis(), expires_at);
        }
        Err(err) => assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}"),
    }
});
