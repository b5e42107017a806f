//! What a bearer token costs the DKE and CSE front-ends: verified the
//! first time (RS256 signature, claims), and answered from the cache of
//! verified tokens when it comes again, as it does for every document a
//! user opens in a session. `cargo bench -p keyhold-identity`.

#[path = "../tests/support/mod.rs"]
mod support;

use keyhold_crypto::asym::{generate, PairKind};
use keyhold_crypto::jwt::{rsa_public_jwk, sign_rs256};
use keyhold_identity::{Issuer, Verifier};
use serde_json::json;
use std::time::Instant;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let k = generate(PairKind::Rsa(2048)).unwrap();
        let srv = support::serve_jwks(
            json!({"keys": [rsa_public_jwk(&k.public, "k1").unwrap()]}).to_string(),
        )
        .await;
        let issuer = Issuer {
            issuers: vec!["https://idp.test".into()],
            audiences: vec!["client".into()],
            jwks_url: format!("https://localhost:{}/keys", srv.port),
            jwks_ca_pem: Some(srv.ca_pem.clone()),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let n = 20_000;
        let tokens: Vec<String> = (0..n)
            .map(|i| {
                let c = json!({"iss": "https://idp.test", "aud": "client", "email": format!("u{i}@x.test"),
                    "iat": now, "exp": now + 3600});
                sign_rs256(&c, "k1", k.private.expose()).unwrap()
            })
            .collect();
        let v = Verifier::default();
        v.verify(&tokens[0], &issuer).await.unwrap(); // the JWK set, fetched once
        let t = Instant::now();
        for tok in &tokens[1..] {
            v.verify(tok, &issuer).await.unwrap();
        }
        let first = (n - 1) as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let rounds = 200_000;
        for i in 0..rounds {
            v.verify(&tokens[i % 1000], &issuer).await.unwrap();
        }
        let again = rounds as f64 / t.elapsed().as_secs_f64();
        let s = v.stats();
        println!("token verification, one thread (RS256, 2048-bit):");
        println!("  first sight (signature checked): {first:>10.0}/s");
        println!("  seen before (from the cache):    {again:>10.0}/s");
        println!(
            "  signature checks {}, cache hits {}, JWK set fetches {}",
            s.signature_checks, s.cache_hits, s.fetches
        );
        assert_eq!(s.signature_checks, n as u64);
    });
}
