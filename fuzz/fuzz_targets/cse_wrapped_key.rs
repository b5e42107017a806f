//! A wrapped key sent to the KACLS is parsed without panicking, and what
//! parses holds together.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(b) = keyhold_cse::blob::parse(data) {
        assert_eq!(b.iv.len(), 12);
        assert_eq!(b.tag.len(), 16);
        assert!(b.perimeter.len() <= 128);
        assert!(b.header.len() + 12 + b.ciphertext.len() + 16 == data.len());
    }
    if let Some(b) = keyhold_cse::blob::parse_private(data) {
        assert_eq!((b.iv.len(), b.tag.len()), (12, 16));
        assert!(b.header.len() + 12 + b.ciphertext.len() + 16 == data.len());
    }
});
