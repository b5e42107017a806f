//! The XKS request bodies and the ciphertext metadata parser never panic.
#![no_main]
use keyhold_xks::wire::{self, DecryptRequest, EncryptRequest, MetadataRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = wire::parse_json::<EncryptRequest>(data) {
        let _ = wire::b64_optional("plaintext", r.plaintext.as_deref());
        let _ = wire::b64_optional("aad", r.additional_authenticated_data.as_deref());
    }
    if let Ok(r) = wire::parse_json::<DecryptRequest>(data) {
        if let Ok(ctm) = wire::b64_optional("ctm", r.ciphertext_metadata.as_deref()) {
            let _ = wire::ctm::parse(&ctm);
            let _ = wire::build_aad(&ctm, &ctm);
        }
    }
    let _ = wire::parse_json::<MetadataRequest>(data);
    let _ = wire::ctm::parse(data);
});
