//! The Authorization header parser and the canonical query string never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = keyhold_xks::sigv4::parse_authorization(s);
        let _ = keyhold_xks::sigv4::canonical_query(s);
        let _ = keyhold_core::time::parse_amz_date(s);
    }
});
