//! URI routing never panics, and what it accepts is well formed.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(r) = keyhold_xks::route::parse(s) {
            assert!(s.starts_with(r.prefix));
            assert!(r.key_id.len() <= 128);
        }
        let _ = keyhold_core::StorePrefix::parse(s);
        let _ = keyhold_core::KeyId::parse(s);
    }
});
