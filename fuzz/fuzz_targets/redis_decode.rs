//! The Redis store's value format (`<version>:<expires_at_ms>:<data JSON>`): any bytes give
//! a session or a typed decode error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_stores::ErrorKind;
use session_stores::stores::redis::__fuzz_decode;

fuzz_target!(|data: &[u8]| {
    match __fuzz_decode(data) {
        Ok(_) => {}
        Err(err) => assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}"),
    }
});
