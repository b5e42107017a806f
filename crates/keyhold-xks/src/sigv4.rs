//! AWS Signature Version 4: verification (server) and signing (load
//! generator, tests), as the XKS specification's Appendix A describes.
//!
//! The canonical request is built from the request as received: method,
//! path (each byte outside the unreserved set percent-encoded), canonical
//! query string, the headers named in `SignedHeaders` (lower-cased names,
//! trimmed values with inner runs of spaces folded, repeated headers joined
//! by commas) and the hex SHA-256 of the body.

use hyper::http::HeaderMap;
use keyhold_core::time::{format_amz_date, parse_amz_date};
use keyhold_crypto::{ct_eq, sha256, HmacKey};
use std::fmt::Write;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const XKS_SERVICE: &str = "kms-xks-proxy";
/// Largest accepted difference between `X-Amz-Date` and the server clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Why a request failed authentication. Shown to the caller in
/// `errorMessage` (none of it is secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    MissingAuthorization,
    Malformed(&'static str),
    WrongAlgorithm,
    WrongService,
    MissingDate,
    BadDate,
    DateMismatch,
    Stale,
    UnsignedRequiredHeader(&'static str),
    MissingSignedHeader(String),
    UnknownAccessKey,
    PayloadHashMismatch,
    SignatureMismatch,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::MissingAuthorization => f.write_str("missing Authorization header"),
            AuthError::Malformed(w) => write!(f, "malformed Authorization header: {w}"),
            AuthError::WrongAlgorithm => write!(f, "signature algorithm must be {ALGORITHM}"),
            AuthError::WrongService => {
                write!(f, "credential scope service must be {XKS_SERVICE}")
            }
            AuthError::MissingDate => f.write_str("missing X-Amz-Date header"),
            AuthError::BadDate => f.write_str("X-Amz-Date must be YYYYMMDD'T'HHMMSS'Z'"),
            AuthError::DateMismatch => {
                f.write_str("credential scope date does not match X-Amz-Date")
            }
            AuthError::Stale => {
                f.write_str("X-Amz-Date is more than 5 minutes away from the server's clock")
            }
            AuthError::UnsignedRequiredHeader(h) => write!(f, "the {h} header must be signed"),
            AuthError::MissingSignedHeader(h) => {
                write!(f, "signed header {h} is not in the request")
            }
            AuthError::UnknownAccessKey => {
                f.write_str("the access key id is not valid for this path")
            }
            AuthError::PayloadHashMismatch => {
                f.write_str("x-amz-content-sha256 does not match the body")
            }
            AuthError::SignatureMismatch => f.write_str("the signature does not match"),
        }
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader<'a> {
    pub access_key_id: &'a str,
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: [u8; 32],
}

impl AuthorizationHeader<'_> {
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Parses an Authorization header value. Never panics on any input.
pub fn parse_authorization(v: &str) -> Result<AuthorizationHeader<'_>, AuthError> {
    let rest = v.strip_prefix(ALGORITHM).ok_or(AuthError::WrongAlgorithm)?;
    if !rest.starts_with(' ') {
        return Err(AuthError::WrongAlgorithm);
    }
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let (k, val) = part
            .split_once('=')
            .ok_or(AuthError::Malformed("expected key=value"))?;
        let slot = match k {
            "Credential" => &mut cred,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut sig,
            _ => return Err(AuthError::Malformed("unknown component")),
        };
        if slot.replace(val).is_some() {
            return Err(AuthError::Malformed("repeated component"));
        }
    }
    let cred = cred.ok_or(AuthError::Malformed("missing Credential"))?;
    let signed = signed.ok_or(AuthError::Malformed("missing SignedHeaders"))?;
    let sig = sig.ok_or(AuthError::Malformed("missing Signature"))?;

    let mut it = cred.split('/');
    let (akid, date, region, service, term) = (
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
    );
    if it.next().is_some() || akid.is_empty() || region.is_empty() || term != "aws4_request" {
        return Err(AuthError::Malformed("bad Credential scope"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed("bad Credential date"));
    }
    if service != XKS_SERVICE {
        return Err(AuthError::WrongService);
    }
    let signed_headers: Vec<&str> = signed.split(';').collect();
    if signed_headers
        .iter()
        .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase() || b == b' '))
    {
        return Err(AuthError::Malformed("bad SignedHeaders"));
    }
    if signed_headers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(AuthError::Malformed(
            "SignedHeaders must be sorted and unique",
        ));
    }
    let mut signature = [0u8; 32];
    if sig.len() != 64 || hex::decode_to_slice(sig, &mut signature).is_err() {
        return Err(AuthError::Malformed("Signature must be 64 hex digits"));
    }
    Ok(AuthorizationHeader {
        access_key_id: akid,
        date,
        region,
        service,
        signed_headers,
        signature,
    })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn uri_encode(out: &mut String, s: &[u8], keep_slash: bool) {
    for &b in s {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    fn hexval(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The canonical query string: parameters decoded, re-encoded, sorted.
pub fn canonical_query(q: &str) -> String {
    if q.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let mut ke = String::new();
            uri_encode(&mut ke, &percent_decode(k), false);
            let mut ve = String::new();
            uri_encode(&mut ve, &percent_decode(v), false);
            (ke, ve)
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn push_header_value(out: &mut String, v: &[u8]) {
    // Trim, and fold runs of spaces into one.
    let s = String::from_utf8_lossy(v);
    let mut first = true;
    for word in s.split_ascii_whitespace() {
        if !first {
            out.push(' ');
        }
        out.push_str(word);
        first = false;
    }
}

/// A request as SigV4 sees it.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as received (already percent-encoded where needed).
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// Value for `host` when there is no Host header (HTTP/2 `:authority`).
    pub authority: Option<&'a str>,
}

/// Builds the canonical request for `signed_headers`.
pub fn canonical_request(
    req: &RequestParts<'_>,
    signed_headers: &[&str],
    payload_hash_hex: &str,
) -> Result<String, AuthError> {
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    if req.path.is_empty() {
        out.push('/');
    } else {
        uri_encode(&mut out, req.path.as_bytes(), true);
    }
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for &h in signed_headers {
        out.push_str(h);
        out.push(':');
        let mut any = false;
        for (i, v) in req.headers.get_all(h).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_header_value(&mut out, v.as_bytes());
            any = true;
        }
        if !any {
            match (h, req.authority) {
                ("host", Some(a)) => out.push_str(a),
                _ => return Err(AuthError::MissingSignedHeader(h.to_owned())),
            }
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash_hex);
    Ok(out)
}

/// The string to sign for a canonical request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(sha256(&[canonical_request.as_bytes()]))
    )
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request").
pub fn derive_signing_key(secret: &[u8], date: &str, region: &str, service: &str) -> HmacKey {
    let mut k0 = Vec::with_capacity(4 + secret.len());
    k0.extend_from_slice(b"AWS4");
    k0.extend_from_slice(secret);
    let k1 = HmacKey::new(&k0).sign(date.as_bytes());
    k0.iter_mut().for_each(|b| *b = 0);
    let k2 = HmacKey::new(&k1).sign(region.as_bytes());
    let k3 = HmacKey::new(&k2).sign(service.as_bytes());
    let k4 = HmacKey::new(&k3).sign(b"aws4_request");
    HmacKey::new(&k4)
}

/// What the caller of [`verify`] must supply: the secret for an access key id.
pub trait SigningKeys {
    /// The signing key for (access key id, date, region, service), or `None`
    /// when the access key id is unknown *for this request's key store*.
    fn signing_key(
        &self,
        access_key_id: &str,
        date: &str,
        region: &str,
        service: &str,
    ) -> Option<std::sync::Arc<HmacKey>>;
}

/// Verifies a request's SigV4 signature at time `now` (Unix seconds).
/// Returns the access key id that signed it.
pub fn verify<'h>(
    req: &RequestParts<'h>,
    body: &[u8],
    keys: &impl SigningKeys,
    now: i64,
) -> Result<&'h str, AuthError> {
    let auth = req
        .headers
        .get("authorization")
        .ok_or(AuthError::MissingAuthorization)?
        .to_str()
        .map_err(|_| AuthError::Malformed("not ASCII"))?;
    let a = parse_authorization(auth)?;
    for required in ["host", "x-amz-date"] {
        if !a.signed_headers.contains(&required) {
            return Err(AuthError::UnsignedRequiredHeader(required));
        }
    }
    let amz_date = req
        .headers
        .get("x-amz-date")
        .ok_or(AuthError::MissingDate)?
        .to_str()
        .map_err(|_| AuthError::BadDate)?;
    let t = parse_amz_date(amz_date).ok_or(AuthError::BadDate)?;
    if &amz_date[..8] != a.date {
        return Err(AuthError::DateMismatch);
    }
    if (t - now).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(AuthError::Stale);
    }
    let body_hash = hex::encode(sha256(&[body]));
    if let Some(h) = req.headers.get("x-amz-content-sha256") {
        if h.as_bytes() != body_hash.as_bytes() && h.as_bytes() != b"UNSIGNED-PAYLOAD" {
            return Err(AuthError::PayloadHashMismatch);
        }
        if h.as_bytes() == b"UNSIGNED-PAYLOAD" {
            // The XKS API always signs its body.
            return Err(AuthError::PayloadHashMismatch);
        }
    }
    let creq = canonical_request(req, &a.signed_headers, &body_hash)?;
    let sts = string_to_sign(amz_date, &a.scope(), &creq);
    let key = keys
        .signing_key(a.access_key_id, a.date, a.region, a.service)
        .ok_or(AuthError::UnknownAccessKey)?;
    let expected = key.sign(sts.as_bytes());
    if !ct_eq(&expected, &a.signature) {
        return Err(AuthError::SignatureMismatch);
    }
    // Return the id as a slice of the header (it lives as long as `req`).
    let start = auth.find("Credential=").map(|i| i + 11).unwrap_or(0);
    Ok(&auth[start..start + a.access_key_id.len()])
}

/// A client-side signer (for the load generator and tests).
pub struct Signer {
    pub access_key_id: String,
    pub secret: Vec<u8>,
    pub region: String,
    pub service: String,
    cached: std::sync::Mutex<Option<(String, std::sync::Arc<HmacKey>)>>,
}

impl Signer {
    pub fn new(access_key_id: &str, secret: &[u8], region: &str, service: &str) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret: secret.into(),
            region: region.into(),
            service: service.into(),
            cached: std::sync::Mutex::new(None),
        }
    }

    /// Returns `(x-amz-date, authorization)` for a request with the given
    /// host and body, signing `host;x-amz-date` (plus content-type when given).
    pub fn sign(
        &self,
        method: &str,
        host: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> (String, String) {
        let amz_date = format_amz_date(now);
        let date = &amz_date[..8];
        let mut headers = HeaderMap::new();
        headers.insert("host", host.parse().expect("host header"));
        headers.insert("x-amz-date", amz_date.parse().expect("date header"));
        let mut signed = vec!["host", "x-amz-date"];
        if let Some(ct) = content_type {
            headers.insert("content-type", ct.parse().expect("content-type header"));
            signed.insert(0, "content-type");
        }
        let req = RequestParts {
            method,
            path,
            query: "",
            headers: &headers,
            authority: None,
        };
        let body_hash = hex::encode(sha256(&[body]));
        let creq = canonical_request(&req, &signed, &body_hash).expect("headers present");
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let sts = string_to_sign(&amz_date, &scope, &creq);
        let key = {
            let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            match c.as_ref() {
                Some((d, k)) if d == date => k.clone(),
                _ => {
                    let k = std::sync::Arc::new(derive_signing_key(
                        &self.secret,
                        date,
                        &self.region,
                        &self.service,
                    ));
                    *c = Some((date.to_owned(), k.clone()));
                    k
                }
            }
        };
        let sig = hex::encode(key.sign(sts.as_bytes()));
        let auth = format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={sig}",
            self.access_key_id,
            signed.join(";")
        );
        (amz_date, auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    // The AWS SigV4 test suite ("aws-sig-v4-test-suite") secret and clock
    // (access key id AKIDEXAMPLE, region us-east-1, service "service").
    const SECRET: &[u8] = b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";
    const NOW: i64 = 1440938160;

    fn suite_sig(method: &str, query: &str, extra: &[(&str, &str)], body: &[u8]) -> String {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", DATE.parse().unwrap());
        for (k, v) in extra {
            headers.append(
                hyper::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut names: Vec<String> = headers.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        let signed: Vec<&str> = names.iter().map(String::as_str).collect();
        let req = RequestParts {
            method,
            path: "/",
            query,
            headers: &headers,
            authority: None,
        };
        let creq = canonical_request(&req, &signed, &hex::encode(sha256(&[body]))).unwrap();
        let sts = string_to_sign(DATE, "20150830/us-east-1/service/aws4_request", &creq);
        let key = derive_signing_key(SECRET, "20150830", "us-east-1", "service");
        hex::encode(key.sign(sts.as_bytes()))
    }

    #[test]
    fn aws_test_suite_post_vectors() {
        // post-vanilla
        assert_eq!(
            suite_sig("POST", "", &[], b""),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        // post-vanilla-query
        assert_eq!(
            suite_sig("POST", "Param1=value1", &[], b""),
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"
        );
        // post-header-key-sort
        assert_eq!(
            suite_sig("POST", "", &[("my-header1", "value1")], b""),
            "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"
        );
        // post-header-value-case
        assert_eq!(
            suite_sig("POST", "", &[("my-header1", "VALUE1")], b""),
            "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"
        );
        // post-x-www-form-urlencoded: a signed body.
        assert_eq!(
            suite_sig(
                "POST",
                "",
                &[("content-type", "application/x-www-form-urlencoded")],
                b"Param1=value1"
            ),
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn post_vanilla_canonical_request() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", DATE.parse().unwrap());
        let req = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            authority: None,
        };
        let creq =
            canonical_request(&req, &["host", "x-amz-date"], &hex::encode(sha256(&[b""]))).unwrap();
        assert_eq!(
            creq,
            "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            string_to_sign(DATE, "20150830/us-east-1/service/aws4_request", &creq),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87"
        );
    }

    #[test]
    fn header_values_are_trimmed_and_folded() {
        let mut headers = HeaderMap::new();
        headers.insert("my-header1", "  a   b  c ".parse().unwrap());
        headers.append("my-header1", "d".parse().unwrap());
        let req = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            authority: Some("h"),
        };
        let c = canonical_request(&req, &["host", "my-header1"], "x").unwrap();
        assert!(c.contains("host:h\nmy-header1:a b c,d\n"), "{c}");
    }

    struct OneKey;
    impl SigningKeys for OneKey {
        fn signing_key(
            &self,
            akid: &str,
            date: &str,
            region: &str,
            svc: &str,
        ) -> Option<Arc<HmacKey>> {
            (akid == "AKIDEXAMPLEAKIDEXAMPLE")
                .then(|| Arc::new(derive_signing_key(SECRET, date, region, svc)))
        }
    }

    fn signed_request(now: i64, body: &[u8]) -> HeaderMap {
        let s = Signer::new("AKIDEXAMPLEAKIDEXAMPLE", SECRET, "eu-west-1", XKS_SERVICE);
        let (d, a) = s.sign(
            "POST",
            "xks.example.com",
            "/p/kms/xks/v1/health",
            Some("application/json"),
            body,
            now,
        );
        let mut h = HeaderMap::new();
        h.insert("host", "xks.example.com".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("x-amz-date", d.parse().unwrap());
        h.insert("authorization", a.parse().unwrap());
        h
    }

    fn parts(h: &HeaderMap) -> RequestParts<'_> {
        RequestParts {
            method: "POST",
            path: "/p/kms/xks/v1/health",
            query: "",
            headers: h,
            authority: None,
        }
    }

    #[test]
    fn sign_then_verify() {
        let h = signed_request(NOW, b"{}");
        assert_eq!(
            verify(&parts(&h), b"{}", &OneKey, NOW).unwrap(),
            "AKIDEXAMPLEAKIDEXAMPLE"
        );
        assert_eq!(
            verify(&parts(&h), b"{} ", &OneKey, NOW),
            Err(AuthError::SignatureMismatch)
        );
        assert_eq!(
            verify(&parts(&h), b"{}", &OneKey, NOW + 301),
            Err(AuthError::Stale)
        );
        assert_eq!(
            verify(&parts(&h), b"{}", &OneKey, NOW - 301),
            Err(AuthError::Stale)
        );
        assert!(verify(&parts(&h), b"{}", &OneKey, NOW + 299).is_ok());
        let mut p = parts(&h);
        p.path = "/q/kms/xks/v1/health";
        assert_eq!(
            verify(&p, b"{}", &OneKey, NOW),
            Err(AuthError::SignatureMismatch)
        );
    }

    #[test]
    fn verify_rejections() {
        let mut h = signed_request(NOW, b"");
        h.remove("authorization");
        assert_eq!(
            verify(&parts(&h), b"", &OneKey, NOW),
            Err(AuthError::MissingAuthorization)
        );

        let h = signed_request(NOW, b"");
        let mut h2 = h.clone();
        let a = h
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .replace("AKIDEXAMPLEAKIDEXAMPLE", "OTHERAKIDOTHERAKIDXX");
        h2.insert("authorization", a.parse().unwrap());
        assert_eq!(
            verify(&parts(&h2), b"", &OneKey, NOW),
            Err(AuthError::UnknownAccessKey)
        );

        let mut h3 = h.clone();
        h3.insert("x-amz-date", "20150830T123601Z".parse().unwrap());
        assert_eq!(
            verify(&parts(&h3), b"", &OneKey, NOW),
            Err(AuthError::SignatureMismatch)
        );

        let mut h4 = h.clone();
        h4.remove("x-amz-date");
        assert_eq!(
            verify(&parts(&h4), b"", &OneKey, NOW),
            Err(AuthError::MissingDate)
        );

        let mut h5 = h.clone();
        h5.insert("x-amz-content-sha256", "00".parse().unwrap());
        assert_eq!(
            verify(&parts(&h5), b"", &OneKey, NOW),
            Err(AuthError::PayloadHashMismatch)
        );
    }

    #[test]
    fn parse_authorization_cases() {
        let ok = "AWS4-HMAC-SHA256 Credential=MUBSXM6K3KMXHN6RRCXI7TWQH4NU76HYFKRSESPMTSTIBADXQQXQ/20211009/us-west-2/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature=1164eaa8e79eacaa9c0df54aa42f3b300380d14bedfc08e3b319648d4abfff66";
        let a = parse_authorization(ok).unwrap();
        assert_eq!(a.region, "us-west-2");
        assert_eq!(a.signed_headers, vec!["host", "x-amz-date"]);
        assert_eq!(
            parse_authorization(&ok.replace("kms-xks-proxy", "s3")),
            Err(AuthError::WrongService)
        );
        assert!(parse_authorization(&ok.replace("host;x-amz-date", "x-amz-date;host")).is_err());
        assert!(parse_authorization(&ok.replace("Signature=1164", "Signature=zz64")).is_err());
        assert!(parse_authorization("AWS4-HMAC-SHA256").is_err());
        assert!(parse_authorization("Basic abc").is_err());
        assert!(parse_authorization("").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_authorization_never_panics(s in "\\PC{0,300}") {
            let _ = parse_authorization(&s);
            let _ = canonical_query(&s);
        }
    }
}
