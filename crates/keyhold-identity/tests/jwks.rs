//! The verifier against a real HTTPS JWK-set server on loopback: fetched
//! once, a repeated token verified once, a rotated key fetched on first
//! sight, made-up key ids not fetched for more than once per floor, the
//! last good set kept while the server is down, and a server that does not
//! chain to the pinned CA never trusted.

mod support;

use keyhold_crypto::asym::{generate, PairKind};
use keyhold_crypto::jwt::{rsa_public_jwk, sign_rs256};
use keyhold_identity::{IdError, Issuer, Verifier, VerifierConfig};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::serve_jwks;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn jwk_sets_are_fetched_cached_refreshed_and_pinned() {
    let k1 = generate(PairKind::Rsa(2048)).unwrap();
    let k2 = generate(PairKind::Rsa(2048)).unwrap();
    let set = |keys: Vec<serde_json::Value>| json!({ "keys": keys }).to_string();
    let srv = serve_jwks(set(vec![rsa_public_jwk(&k1.public, "k1").unwrap()])).await;
    let issuer = Issuer {
        issuers: vec!["https://idp.test".into()],
        audiences: vec!["client".into()],
        jwks_url: format!("https://localhost:{}/jwks", srv.port),
        jwks_ca_pem: Some(srv.ca_pem.clone()),
    };
    let claims = json!({"iss": "https://idp.test", "aud": "client", "email": "a@x.test",
        "iat": now(), "exp": now() + 600});
    let v = Verifier::new(VerifierConfig {
        refresh_floor: Duration::from_secs(3600),
        ..VerifierConfig::default()
    });
    let t1 = sign_rs256(&claims, "k1", k1.private.expose()).unwrap();
    assert_eq!(v.verify(&t1, &issuer).await.unwrap()["email"], "a@x.test");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
    // The same token again: no second signature check.
    v.verify(&t1, &issuer).await.unwrap();
    let s = v.stats();
    assert_eq!((s.signature_checks, s.cache_hits), (1, 1));
    // The IdP rotates to k2: a token under it fetches the set once more
    // (the floor applies to fetches after that one).
    *srv.body.lock() = set(vec![
        rsa_public_jwk(&k1.public, "k1").unwrap(),
        rsa_public_jwk(&k2.public, "k2").unwrap(),
    ]);
    let v2 = Verifier::default();
    v2.verify(&t1, &issuer).await.unwrap();
    let hits = srv.hits.load(Ordering::SeqCst);
    let t2 = sign_rs256(&claims, "k2", k2.private.expose()).unwrap();
    v2.verify(&t2, &issuer).await.unwrap();
    // v2 fetched a set with k2 already; v (fetched before) must refresh.
    assert_eq!(srv.hits.load(Ordering::SeqCst), hits);
    assert!(v.verify(&t2, &issuer).await.is_ok());
    assert_eq!(srv.hits.load(Ordering::SeqCst), hits + 1);
    // Made-up key ids: refused, and no more fetches within the floor.
    for i in 0..20 {
        let t = sign_rs256(&claims, &format!("nope-{i}"), k1.private.expose()).unwrap();
        assert!(v.verify(&t, &issuer).await.is_err());
    }
    assert_eq!(srv.hits.load(Ordering::SeqCst), hits + 1);
    // The server goes down: a set past its TTL still serves (the fetch
    // fails, the last good set is kept).
    let stale = Verifier::new(VerifierConfig {
        jwks_ttl: Duration::ZERO,
        refresh_floor: Duration::ZERO,
        ..VerifierConfig::default()
    });
    stale.verify(&t1, &issuer).await.unwrap();
    srv.down.store(true, Ordering::SeqCst);
    let before = srv.hits.load(Ordering::SeqCst);
    let t3 = sign_rs256(
        &json!({"iss": "https://idp.test", "aud": "client", "exp": now() + 60}),
        "k2",
        k2.private.expose(),
    )
    .unwrap();
    assert!(stale.verify(&t3, &issuer).await.is_ok());
    assert!(
        srv.hits.load(Ordering::SeqCst) > before,
        "a fetch was tried"
    );
    // Another CA pinned: the server is not trusted, nothing verifies.
    let other = rcgen::CertifiedIssuer::self_signed(
        {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p
        },
        rcgen::KeyPair::generate().unwrap(),
    )
    .unwrap();
    srv.down.store(false, Ordering::SeqCst);
    let pinned_elsewhere = Issuer {
        jwks_ca_pem: Some(other.pem()),
        ..issuer.clone()
    };
    assert!(matches!(
        Verifier::default().verify(&t1, &pinned_elsewhere).await,
        Err(IdError::KeysUnavailable(_))
    ));
    // Plain HTTP is never fetched.
    let http = Issuer {
        jwks_url: format!("http://localhost:{}/jwks", srv.port),
        ..issuer.clone()
    };
    assert!(Verifier::default().verify(&t1, &http).await.is_err());
}
