//! Azure EKM routing never panics: whatever the path and query, a store
//! is found by its prefix (or none), and the key name is within limits.
#![no_main]
use keyhold_core::StorePrefix;
use keyhold_service::{AzureEkmBinding, StoreApi};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let b = |p: &str| {
        StoreApi::AzureEkm(AzureEkmBinding {
            path_prefix: p.into(),
            client_cn: "c".into(),
            client_ca_pem: String::new(),
        })
    };
    let apis = vec![
        (StorePrefix::parse("/root").unwrap(), b("")),
        (StorePrefix::parse("/prod").unwrap(), b("/contoso/prod")),
    ];
    if let Some(r) = keyhold_azure::route::parse(s, &apis) {
        if let Ok((_, key)) = r.target {
            assert!(key.len() <= 64);
        }
    }
    let _ = keyhold_azure::route::check_api_version(Some(s));
});
