//! Bearer tokens and JWK sets from the network: reading a token's header
//! and verifying it against a JWK set never panic, and nothing made up
//! verifies.
#![no_main]
use keyhold_crypto::jwt::{peek, verify, Expect, Jwks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Jwks::parse(data);
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = peek(s);
    let keys = Jwks::parse(
        br#"{"keys":[{"kty":"RSA","kid":"k","alg":"RS256","use":"sig","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}]}"#,
    )
    .unwrap();
    let iss = vec!["https://idp.test".to_owned()];
    let aud = vec!["client".to_owned()];
    let e = Expect { issuers: &iss, audiences: &aud, leeway_s: 60 };
    assert!(verify(s, &keys, &e).is_err());
});
