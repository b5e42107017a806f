//! JSON Web Tokens (RFC 7519) signed with public keys from a JWK set: the
//! signature, algorithm, issuer, audience and time checks are
//! `jsonwebtoken`'s (on aws-lc-rs); this module only narrows its API to
//! what the front-ends need, refuses the algorithms a bearer token must
//! never use (`none`, HMAC with a public key as secret), and issues RS256
//! tokens with a key Keyhold holds.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Why a token was refused: said to the caller in a word, never with the
/// token's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("the token names no key of its issuer (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not trusted")]
    Issuer,
    #[error("the token is not meant for this service (audience)")]
    Audience,
    #[error("the token lacks the claim {0}")]
    MissingClaim(String),
    #[error("the JWK set is not usable: {0}")]
    Keys(String),
}

/// The signature algorithms accepted for bearer tokens (no HMAC: the
/// verifier holds only public keys).
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A JWK set's public keys, parsed once.
pub struct Jwks {
    keys: Vec<(Option<String>, DecodingKey, Option<Algorithm>)>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(kid, _, _)| kid))
            .finish()
    }
}

impl Jwks {
    /// Parses `{"keys": [...]}`; keys of kinds that cannot verify a token
    /// (symmetric, encryption-only) are left out. At least one must remain.
    pub fn parse(json: &[u8]) -> Result<Self, JwtError> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(json).map_err(|e| JwtError::Keys(e.to_string()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
            ) {
                continue;
            }
            if matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            keys.push((jwk.common.key_id.clone(), key, alg));
        }
        if keys.is_empty() {
            return Err(JwtError::Keys("no signature verification key in it".into()));
        }
        Ok(Self { keys })
    }

    /// How many usable keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether it has a key with this id.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|(k, ..)| k.as_deref() == Some(kid))
    }
}

/// What a token must say besides its signature.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// `iss` must be one of these.
    pub issuers: &'a [String],
    /// `aud` must be (or contain) one of these.
    pub audiences: &'a [String],
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
}

/// A token's header and issuer, read without verifying anything: to pick
/// the issuer's keys. Never trust what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    pub kid: Option<String>,
    pub alg: String,
    pub iss: Option<String>,
}

fn b64_json(part: &str) -> Result<Map<String, Value>, JwtError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed),
    }
}

/// Reads a token's header and `iss` without verifying them.
pub fn peek(token: &str) -> Result<Unverified, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header = b64_json(h)?;
    let payload = b64_json(p)?;
    let s = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(Unverified {
        kid: s(&header, "kid"),
        alg: s(&header, "alg").ok_or(JwtError::Malformed)?,
        iss: s(&payload, "iss"),
    })
}

/// Verifies a token with the key `kid` names in `keys` (or, without a
/// kid, any key of the right kind) and the expectations; answers its
/// claims. `exp`, `iss` and `aud` are required.
pub fn verify(
    token: &str,
    keys: &Jwks,
    expect: &Expect<'_>,
) -> Result<Map<String, Value>, JwtError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
    }
    let mut v = Validation::new(header.alg);
    v.set_issuer(expect.issuers);
    v.set_audience(expect.audiences);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v.leeway = expect.leeway_s;
    v.validate_nbf = true;
    let candidates: Vec<&DecodingKey> = keys
        .keys
        .iter()
        .filter(|(kid, key, alg)| {
            (header.kid.is_none() || *kid == header.kid)
                && key.family() == header.alg.family()
                && alg.is_none_or(|a| a == header.alg)
        })
        .map(|(_, k, _)| k)
        .collect();
    if candidates.is_empty() {
        return Err(JwtError::UnknownKey(header.kid));
    }
    let mut last = JwtError::Signature;
    for key in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, &v) {
            Ok(t) => return Ok(t.claims),
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                last = match e.into_kind() {
                    K::InvalidSignature => JwtError::Signature,
                    K::ExpiredSignature => return Err(JwtError::Expired),
                    K::ImmatureSignature => return Err(JwtError::NotYetValid),
                    K::InvalidIssuer => return Err(JwtError::Issuer),
                    K::InvalidAudience => return Err(JwtError::Audience),
                    K::MissingRequiredClaim(c) => return Err(JwtError::MissingClaim(c)),
                    K::InvalidAlgorithm | K::MissingAlgorithm => {
                        return Err(JwtError::Algorithm(format!("{:?}", header.alg)))
                    }
                    _ => JwtError::Malformed,
                };
            }
        }
    }
    Err(last)
}

/// Signs `claims` as an RS256 JWT with an RSA private key (PKCS#1 or
/// PKCS#8 DER) under the key id `kid`: the tokens Keyhold issues itself.
pub fn sign_rs256(claims: &Value, kid: &str, private_der: &[u8]) -> Result<String, JwtError> {
    let pkcs1 = crate::asym::rsa_private_to_pkcs1(private_der)
        .map_err(|e| JwtError::Keys(e.to_string()))?;
    let key = jsonwebtoken::EncodingKey::from_rsa_der(pkcs1.expose());
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).map_err(|e| JwtError::Keys(e.to_string()))
}

/// The signing input of an RS256 JWT (`base64url(header).base64url(claims)`)
/// whose signature is made elsewhere (by the key service, with a key that
/// may live in an HSM); [`finish_rs256`] appends it.
pub fn rs256_signing_input(claims: &Value, kid: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// The JWT of a signing input and its RSASSA-PKCS1-v1_5 SHA-256 signature.
pub fn finish_rs256(signing_input: &str, signature: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The public JWK of an RSA key (SubjectPublicKeyInfo or PKCS#1 DER) for a
/// JWK set that verifies [`sign_rs256`]'s tokens.
pub fn rsa_public_jwk(public_der: &[u8], kid: &str) -> Result<Value, JwtError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let (n, e) =
        crate::asym::rsa_public_parts(public_der).map_err(|e| JwtError::Keys(e.to_string()))?;
    let strip = |v: &[u8]| {
        let i = v.iter().position(|b| *b != 0).unwrap_or(0);
        URL_SAFE_NO_PAD.encode(&v[i..])
    };
    Ok(serde_json::json!({
        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
        "n": strip(&n), "e": strip(&e),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    struct Idp {
        private: crate::SecretBytes,
        jwks: Jwks,
    }

    fn idp(kid: &str) -> Idp {
        let p = crate::asym::generate(crate::asym::PairKind::Rsa(2048)).unwrap();
        let jwk = rsa_public_jwk(&p.public, kid).unwrap();
        let jwks = Jwks::parse(json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
        Idp {
            private: p.private,
            jwks,
        }
    }

    fn expect<'a>(iss: &'a [String], aud: &'a [String]) -> Expect<'a> {
        Expect {
            issuers: iss,
            audiences: aud,
            leeway_s: 60,
        }
    }

    #[test]
    fn tokens_verify_only_as_expected() {
        let i = idp("k1");
        let iss = vec!["https://idp.test".to_owned()];
        let aud = vec!["client".to_owned()];
        let claims = |extra: Value| {
            let mut c = json!({"iss": "https://idp.test", "aud": "client", "email": "a@x.test",
                "iat": now(), "exp": now() + 300});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let t = sign_rs256(&claims(json!({})), "k1", i.private.expose()).unwrap();
        let c = verify(&t, &i.jwks, &expect(&iss, &aud)).unwrap();
        assert_eq!(c["email"], "a@x.test");
        assert_eq!(peek(&t).unwrap().kid.as_deref(), Some("k1"));
        // aud as a list containing ours.
        let t = sign_rs256(
            &claims(json!({"aud": ["x", "client"]})),
            "k1",
            i.private.expose(),
        )
        .unwrap();
        assert!(verify(&t, &i.jwks, &expect(&iss, &aud)).is_ok());
        let bad = |extra: Value, kid: &str| {
            let t = sign_rs256(&claims(extra), kid, i.private.expose()).unwrap();
            verify(&t, &i.jwks, &expect(&iss, &aud)).unwrap_err()
        };
        assert_eq!(bad(json!({"exp": now() - 3600}), "k1"), JwtError::Expired);
        assert_eq!(
            bad(json!({"nbf": now() + 3600}), "k1"),
            JwtError::NotYetValid
        );
        assert_eq!(
            bad(json!({"iss": "https://evil.test"}), "k1"),
            JwtError::Issuer
        );
        assert_eq!(bad(json!({"aud": "other"}), "k1"), JwtError::Audience);
        assert_eq!(
            bad(json!({}), "k2"),
            JwtError::UnknownKey(Some("k2".into()))
        );
        // Missing aud: refused, not skipped.
        let mut c = claims(json!({}));
        c.as_object_mut().unwrap().remove("aud");
        let t = sign_rs256(&c, "k1", i.private.expose()).unwrap();
        assert!(matches!(
            verify(&t, &i.jwks, &expect(&iss, &aud)),
            Err(JwtError::MissingClaim(_))
        ));
        // Another key, same kid: the signature fails.
        let other = idp("k1");
        let t = sign_rs256(&claims(json!({})), "k1", other.private.expose()).unwrap();
        assert_eq!(
            verify(&t, &i.jwks, &expect(&iss, &aud)).unwrap_err(),
            JwtError::Signature
        );
        // alg none and HS256 are refused whatever they carry.
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B;
        use base64::Engine;
        let body = B.encode(claims(json!({})).to_string());
        for h in [r#"{"alg":"none"}"#, r#"{"alg":"HS256","kid":"k1"}"#] {
            let t = format!("{}.{body}.{}", B.encode(h), B.encode(b"sig"));
            assert!(verify(&t, &i.jwks, &expect(&iss, &aud)).is_err(), "{h}");
        }
        for junk in ["", "a.b", "a.b.c.d", "...", "e30.e30.e30"] {
            assert!(verify(junk, &i.jwks, &expect(&iss, &aud)).is_err());
            let _ = peek(junk);
        }
    }

    #[test]
    fn tokens_signed_elsewhere_verify() {
        let i = idp("k9");
        let claims =
            json!({"iss": "https://kacls2.test", "aud": "kacls-migration", "exp": now() + 60});
        let input = rs256_signing_input(&claims, "k9");
        let sig = crate::asym::sign(
            i.private.expose(),
            crate::asym::SignScheme::RsaPkcs1(crate::asym::Hash::Sha256),
            input.as_bytes(),
        )
        .unwrap();
        let t = finish_rs256(&input, &sig);
        let iss = vec!["https://kacls2.test".to_owned()];
        let aud = vec!["kacls-migration".to_owned()];
        assert!(verify(&t, &i.jwks, &expect(&iss, &aud)).is_ok());
    }

    #[test]
    fn jwk_sets_need_a_verification_key() {
        assert!(Jwks::parse(br#"{"keys":[]}"#).is_err());
        assert!(Jwks::parse(br#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#).is_err());
        assert!(Jwks::parse(b"not json").is_err());
    }
}
