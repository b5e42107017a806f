//! SigV4 verification of arbitrary headers and bodies never panics and
//! never accepts a request without the right signature.
#![no_main]
use hyper::http::{HeaderMap, HeaderName, HeaderValue};
use keyhold_crypto::HmacKey;
use keyhold_xks::sigv4::{self, RequestParts, SigningKeys};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

struct Keys;
impl SigningKeys for Keys {
    fn signing_key(&self, _: &str, d: &str, r: &str, s: &str) -> Option<Arc<HmacKey>> {
        Some(Arc::new(sigv4::derive_signing_key(b"secret", d, r, s)))
    }
}

fuzz_target!(|data: &[u8]| {
    // Split the input into header lines and a body.
    let (head, body) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        if let Some(i) = line.iter().position(|&b| b == b':') {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(&line[..i]),
                HeaderValue::from_bytes(&line[i + 1..]),
            ) {
                headers.append(n, v);
            }
        }
    }
    let req = RequestParts {
        method: "POST",
        path: "/p/kms/xks/v1/health",
        query: "",
        headers: &headers,
        authority: Some("h"),
    };
    let _ = sigv4::verify(&req, body, &Keys, 1_700_000_000);
});
