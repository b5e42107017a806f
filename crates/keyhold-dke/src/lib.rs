//! Microsoft Purview Double Key Encryption (DKE): the key service Office
//! calls for the customer's half of a double-encrypted document.
//!
//! - `GET {prefix}/{key}`: the key's current RSA public key (`n` standard
//!   base64, `e` a number, `alg` `RS256`, `kid` = this URL + `/{version}`)
//!   and how long Office may cache it. No authentication (a public key).
//! - `POST {prefix}/{key}/{version}/decrypt` with an Entra ID bearer token:
//!   RSA-OAEP-256 decryption with that version, for a user the key store
//!   allows (by address, domain, group or app role), after the store's and
//!   key's policies (principal = the user's address).
//!
//! A key store serves DKE once bound with `keyhold store api /s ms-dke …`
//! ([`keyhold_service::DkeBinding`]); its keys are RSA key pairs with usage
//! ENCRYPT,DECRYPT. Statuses follow Microsoft's reference service: 401
//! with its `WWW-Authenticate` challenge without a good token, 403 for a
//! user not allowed, 400 for a bad request, and 404 for a key that does
//! not exist (the reference answers 400; a missing key is a 404 here).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use keyhold_core::{KeyType, Status, StorePrefix};
use keyhold_crypto::asym::Hash;
use keyhold_identity::{claim, claim_list, IdError, Issuer, Verifier};
use keyhold_service::policy::PolicyRequest;
use keyhold_service::{
    DkeBinding, KeyService, KeyUse, NotRun, Placement, StoreApi, Touches, UseFacts,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

type HttpResponse = Response<Full<Bytes>>;

/// Where Office is sent for a token when it has none (the reference
/// service's default `JwtAuthorization`).
pub const DEFAULT_AUTHORITY: &str = "https://login.windows.net/common/oauth2/authorize";

/// Settings of the DKE front-end.
#[derive(Debug, Clone)]
pub struct DkeConfig {
    pub max_body_bytes: usize,
    pub body_deadline: Duration,
    pub hsm_timeout: Duration,
    /// Records a second for calls that never authenticated (public-key
    /// reads and refusals).
    pub unauthenticated_records_per_sec: u32,
}

impl Default for DkeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            body_deadline: Duration::from_secs(10),
            hsm_timeout: Duration::from_secs(2),
            unauthenticated_records_per_sec: 50,
        }
    }
}

/// The DKE key service over a key service.
pub struct DkeApi {
    service: Arc<KeyService>,
    config: DkeConfig,
    verifier: Arc<Verifier>,
    budget: parking_lot::Mutex<keyhold_audit::RefusalBudget>,
}

/// An answer that is not 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkeError {
    pub status: StatusCode,
    /// A word for the audit record and the body.
    pub code: &'static str,
    pub message: String,
}

impl DkeError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
}

impl From<keyhold_core::Error> for DkeError {
    fn from(e: keyhold_core::Error) -> Self {
        use keyhold_core::Error as E;
        let (status, code) = match &e {
            E::KeyNotFound { .. } | E::StoreNotFound(_) => (StatusCode::NOT_FOUND, "KeyNotFound"),
            E::Invalid { .. } | E::InvalidCiphertext => (StatusCode::BAD_REQUEST, "BadRequest"),
            E::InvalidState(_) => (StatusCode::FORBIDDEN, "KeyDisabled"),
            E::KeyUsage(_) => (StatusCode::FORBIDDEN, "OperationNotAllowed"),
            E::AccessDenied { .. } => (StatusCode::FORBIDDEN, "Forbidden"),
            E::DependencyTimeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "Timeout"),
            E::RootOfTrust(_) => (StatusCode::SERVICE_UNAVAILABLE, "HsmUnavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        let message = match (&e, status) {
            (_, StatusCode::INTERNAL_SERVER_ERROR) => {
                tracing::error!(error = %e, "internal error serving a DKE request");
                "internal error in the key manager".to_owned()
            }
            (E::InvalidCiphertext, _) => {
                "the value does not decrypt with this key version".to_owned()
            }
            (E::AccessDenied { why, .. }, _) => why.clone(),
            _ => e.to_string(),
        };
        DkeError::new(status, code, message)
    }
}

/// What handling one request produced, for the answer and its record.
struct Handled {
    result: Result<HttpResponse, DkeError>,
    facts: UseFacts,
    /// The user, once the token was accepted.
    user: Option<String>,
    /// Token facts for the record: tenant, object id, client app.
    context: Option<String>,
    token_id: Option<String>,
    op: &'static str,
    key: Option<String>,
}

impl Handled {
    fn refused(op: &'static str, e: DkeError) -> Self {
        Self {
            result: Err(e),
            facts: UseFacts::default(),
            user: None,
            context: None,
            token_id: None,
            op,
            key: None,
        }
    }
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The route after a store's prefix: `{key}` or `{key}/{version}/decrypt`.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    PublicKey(&'a str),
    Decrypt(&'a str, &'a str),
}

fn target(rest: &str) -> Option<Target<'_>> {
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [key] if !key.is_empty() => Some(Target::PublicKey(key)),
        [key, version, op] if !key.is_empty() && op.eq_ignore_ascii_case("decrypt") => {
            Some(Target::Decrypt(key, version))
        }
        _ => None,
    }
}

/// The store whose prefix `path` starts with (the longest), and the rest.
fn find_store<'a>(
    path: &'a str,
    apis: &'a [(StorePrefix, StoreApi)],
) -> Option<(&'a StorePrefix, &'a DkeBinding, &'a str)> {
    apis.iter()
        .filter_map(|(p, api)| match api {
            StoreApi::MsDke(b) => path
                .strip_prefix(b.path_prefix.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .map(|rest| (p, b, rest)),
            _ => None,
        })
        .max_by_key(|(_, b, _)| b.path_prefix.len())
}

/// `yyyy-MM-ddTHH:mm:ss`, UTC without a zone, as DKE's `cache.exp` is.
fn cache_exp(days: u32) -> String {
    let t = keyhold_core::now() + i64::from(days) * 86_400;
    keyhold_core::time::format_rfc3339(t)
        .trim_end_matches('Z')
        .to_owned()
}

fn unsigned(v: &[u8]) -> &[u8] {
    let i = v
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(v.len().saturating_sub(1));
    &v[i..]
}

impl DkeApi {
    pub fn new(service: Arc<KeyService>, config: DkeConfig, verifier: Arc<Verifier>) -> Self {
        Self {
            service,
            budget: parking_lot::Mutex::new(keyhold_audit::RefusalBudget::new(
                config.unauthenticated_records_per_sec,
            )),
            config,
            verifier,
        }
    }

    /// The verifier's counters (tokens checked, answered from its cache).
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Serves one request whose path starts with a DKE store's prefix;
    /// `None` when no DKE store is there (another front-end's, or nothing).
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Option<HttpResponse>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let apis = self.service.store_apis();
        let (store, binding, rest) = find_store(req.uri().path(), &apis)?;
        let (store, binding) = (store.clone(), binding.clone());
        let Some(t) = target(rest) else {
            let e = DkeError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "use GET {prefix}/{key} or POST {prefix}/{key}/{version}/decrypt",
            );
            return Some(self.record(&store, Handled::refused("-", e), started).await);
        };
        let handled = match (req.method(), t) {
            (&Method::GET | &Method::HEAD, Target::PublicKey(key)) => {
                let url = self.key_url(&req, &binding, key);
                let mut h = self.public_key(&store, &binding, key, url);
                h.key = Some(key.to_owned());
                h
            }
            (&Method::POST, Target::Decrypt(key, version)) => {
                let (key, version) = (key.to_owned(), version.to_owned());
                self.decrypt(&store, &binding, &key, &version, req).await
            }
            (_, t) => {
                let allow = if matches!(t, Target::PublicKey(_)) {
                    "GET"
                } else {
                    "POST"
                };
                Handled::refused(
                    "-",
                    DkeError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "MethodNotAllowed",
                        format!("use {allow}"),
                    ),
                )
            }
        };
        Some(self.record(&store, handled, started).await)
    }

    /// `https://HOST{prefix}/{key}` as the client called it (the `kid`
    /// must route back here).
    fn key_url<B>(&self, req: &Request<B>, b: &DkeBinding, key: &str) -> Option<String> {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || c == '/' || c == '@')
        {
            return None;
        }
        Some(format!("https://{host}{}/{key}", b.path_prefix))
    }

    fn public_key(
        &self,
        store: &StorePrefix,
        b: &DkeBinding,
        key: &str,
        url: Option<String>,
    ) -> Handled {
        let op = "publickey";
        let result = (|| {
            let url = url.ok_or_else(|| DkeError::bad("the request has no usable Host header"))?;
            let d = self.service.published_key(store, key)?;
            if !d.key_type.is_rsa() {
                return Err(DkeError::new(
                    StatusCode::FORBIDDEN,
                    "OperationNotAllowed",
                    format!(
                        "key {key} is a {} key: DKE needs an RSA key",
                        d.key_type.short()
                    ),
                ));
            }
            if d.status != Status::Enabled {
                return Err(DkeError::new(
                    StatusCode::FORBIDDEN,
                    "KeyDisabled",
                    format!("key {key} is disabled"),
                ));
            }
            if !d.usage.encrypt || !d.usage.decrypt {
                return Err(DkeError::new(
                    StatusCode::FORBIDDEN,
                    "OperationNotAllowed",
                    format!("key {key} takes no new content (deactivated, or its usage is not ENCRYPT,DECRYPT)"),
                ));
            }
            let spki = d.public_spki.ok_or_else(|| {
                DkeError::new(StatusCode::FORBIDDEN, "KeyDisabled", "no usable version")
            })?;
            let (n, e) = keyhold_crypto::asym::rsa_public_parts(&spki).map_err(|_| {
                DkeError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "cannot read the public key",
                )
            })?;
            let e = unsigned(&e)
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            let mut body = serde_json::json!({
                "key": {
                    "kty": "RSA",
                    "n": B64.encode(unsigned(&n)),
                    "e": e,
                    "alg": "RS256",
                    "kid": format!("{url}/{}", d.version),
                },
            });
            if b.cache_days > 0 {
                body["cache"] = serde_json::json!({ "exp": cache_exp(b.cache_days) });
            }
            Ok(json_response(StatusCode::OK, &body))
        })();
        let mut h = Handled::refused(op, DkeError::bad(""));
        h.result = result;
        h
    }

    /// The 401 answer with the challenge that tells Office where to get a
    /// token (and for which resource).
    fn challenge(b: &DkeBinding, message: &str) -> HttpResponse {
        let mut r = json_response(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"code": "Unauthorized", "message": message}),
        );
        let aud = &b.audience;
        let h = r.headers_mut();
        let v = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""));
        h.insert(
            WWW_AUTHENTICATE,
            v(format!(
                "Bearer resource=\"{aud}\", authorization=\"{DEFAULT_AUTHORITY}\", realm=\"{aud}\""
            )),
        );
        h.insert("resource", v(aud.clone()));
        h.insert("authorization", v(DEFAULT_AUTHORITY.to_owned()));
        r
    }

    async fn decrypt<B>(
        self: &Arc<Self>,
        store: &StorePrefix,
        b: &DkeBinding,
        key: &str,
        version: &str,
        req: Request<B>,
    ) -> Handled
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let op = "decrypt";
        let mut h = Handled::refused(op, DkeError::bad(""));
        h.key = Some(key.to_owned());
        let unauthorized = |m: &str| Handled {
            result: Ok(Self::challenge(b, m)),
            ..Handled::refused(op, DkeError::bad(""))
        };
        // The token first: a caller without one learns only where to get it.
        let token = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            let mut u = unauthorized("a bearer token from Microsoft Entra ID is required");
            u.key = h.key;
            return u;
        };
        let issuer = Issuer {
            issuers: b.issuers.clone(),
            audiences: vec![b.audience.clone()],
            jwks_url: b.jwks_url.clone(),
            jwks_ca_pem: b.jwks_ca_pem.clone(),
        };
        let claims = match self.verifier.verify(token, &issuer).await {
            Ok(c) => c,
            Err(IdError::Token(e)) => {
                let mut u = unauthorized(&e.to_string());
                u.key = h.key;
                return u;
            }
            Err(e @ IdError::KeysUnavailable(_)) => {
                h.result = Err(DkeError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "IdentityProviderUnavailable",
                    e.to_string(),
                ));
                return h;
            }
        };
        let user = claim(&claims, "email")
            .or_else(|| claim(&claims, "upn"))
            .map(|s| s.trim().to_ascii_lowercase());
        h.token_id = claim(&claims, "uti")
            .or_else(|| claim(&claims, "jti"))
            .map(str::to_owned);
        h.context = Some(format!(
            "tid={} oid={} app={}",
            claim(&claims, "tid").unwrap_or("-"),
            claim(&claims, "oid").unwrap_or("-"),
            claim(&claims, "appid")
                .or_else(|| claim(&claims, "azp"))
                .unwrap_or("-"),
        ));
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            h.result = Err(DkeError::bad("the token has no email or upn claim"));
            return h;
        };
        h.user = Some(user.clone());
        let mut groups = claim_list(&claims, "groups");
        groups.extend(claim_list(&claims, "roles"));
        if !b.allows(&user, &groups) {
            h.result = Err(DkeError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{user} may not decrypt with key store {}'s keys",
                    store.display()
                ),
            ));
            return h;
        }
        // Then the body.
        let body = match read_body(req.into_body(), &self.config).await {
            Ok(b) => b,
            Err(e) => {
                h.result = Err(e);
                return h;
            }
        };
        let input = (|| {
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| DkeError::bad("the body is not JSON"))?;
            match v.get("alg").and_then(|a| a.as_str()) {
                Some("RSA-OAEP-256") => {}
                Some(other) => {
                    return Err(DkeError::bad(format!(
                        "alg {:?} is not supported: use RSA-OAEP-256",
                        other.chars().take(40).collect::<String>()
                    )))
                }
                None => return Err(DkeError::bad("alg is required (RSA-OAEP-256)")),
            }
            let value = v
                .get("value")
                .and_then(|a| a.as_str())
                .ok_or_else(|| DkeError::bad("value is required"))?;
            let ct = B64
                .decode(value)
                .map_err(|_| DkeError::bad("value is not base64"))?;
            let version: u32 = version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                DkeError::new(
                    StatusCode::NOT_FOUND,
                    "KeyNotFound",
                    format!("key {key} has no version {version:?}"),
                )
            })?;
            Ok((ct, version))
        })();
        let (ct, version) = match input {
            Ok(x) => x,
            Err(e) => {
                h.result = Err(e);
                return h;
            }
        };
        let (result, facts) = self
            .decrypt_with(store, key, &user, groups, version, ct)
            .await;
        h.result = result;
        h.facts = facts;
        h
    }

    async fn decrypt_with(
        self: &Arc<Self>,
        store: &StorePrefix,
        key: &str,
        user: &str,
        groups: Vec<String>,
        version: u32,
        ct: Vec<u8>,
    ) -> (Result<HttpResponse, DkeError>, UseFacts) {
        let run = {
            let api = Arc::clone(self);
            let (store, key, user) = (store.clone(), key.to_owned(), user.to_owned());
            move || {
                let _inflight = api.service.request_guard();
                // A version the key never had is a key that is not there.
                match api.service.published_key(&store, &key) {
                    Ok(d) if version <= d.version => {}
                    Ok(_) => {
                        return (
                            Err(DkeError::new(
                                StatusCode::NOT_FOUND,
                                "KeyNotFound",
                                format!("key {key} has no version {version}"),
                            )),
                            UseFacts::default(),
                        )
                    }
                    Err(e) => return (Err(e.into()), UseFacts::default()),
                }
                let u = KeyUse {
                    store: &store,
                    key: &key,
                    context: PolicyRequest {
                        principal: Some(&user),
                        kms_operation: Some("decrypt"),
                        groups: &groups,
                        ..PolicyRequest::default()
                    },
                };
                let used = api
                    .service
                    .decrypt_oaep(&u, version, &ct, Hash::Sha256, None);
                let r = used.result.map_err(|e| match e {
                    keyhold_core::Error::InvalidCiphertext if ct.len() * 8 < 2048 => {
                        DkeError::bad("value is shorter than the key's modulus")
                    }
                    e => DkeError::from(e),
                });
                let r = r.map(|pt| {
                    json_response(
                        StatusCode::OK,
                        &serde_json::json!({ "value": B64.encode(pt.expose()) }),
                    )
                });
                (r, used.facts)
            }
        };
        let placement = self.service.placement(&Touches {
            key: Some((store, key)),
            crypt: true,
            version: Some(version),
            ..Touches::default()
        });
        match placement {
            Placement::Inline => run(),
            Placement::Blocking => match self
                .service
                .run_blocking(self.config.hsm_timeout, run)
                .await
            {
                Ok(r) => r,
                Err(NotRun::TimedOut(_)) => (
                    Err(DkeError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Timeout",
                        "the HSM or database did not answer in time; retry",
                    )),
                    UseFacts::default(),
                ),
                Err(NotRun::Failed) => (
                    Err(DkeError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        "internal error in the key manager",
                    )),
                    UseFacts::default(),
                ),
            },
        }
    }

    /// Writes the audit record and answers (500 if it cannot be written).
    async fn record(&self, store: &StorePrefix, h: Handled, started: Instant) -> HttpResponse {
        let (result, status) = match &h.result {
            Ok(r) if r.status() == StatusCode::OK => ("OK".to_owned(), 200),
            Ok(r) => ("Unauthorized".to_owned(), r.status().as_u16()),
            Err(e) => (e.code.to_owned(), e.status.as_u16()),
        };
        let answer = |r: Result<HttpResponse, DkeError>| match r {
            Ok(r) => r,
            Err(e) if e.status == StatusCode::FORBIDDEN && e.code == "Forbidden" => {
                // The reference answers an unauthorized user with an empty 403.
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::FORBIDDEN;
                r
            }
            Err(e) => json_response(
                e.status,
                &serde_json::json!({"code": e.code, "message": e.message}),
            ),
        };
        let log = self.service.audit();
        if !log.is_attached() {
            return answer(h.result);
        }
        let mut left_out = None;
        if h.user.is_none() {
            match self.budget.lock().admit(Instant::now()) {
                None => return answer(h.result),
                Some(0) => {}
                Some(n) => {
                    left_out = Some(format!(
                    "{n} more unauthenticated calls before this one were not recorded (over {}/s)",
                    self.config.unauthenticated_records_per_sec
                ))
                }
            }
        }
        let message = h.result.as_ref().err().map(|e| e.message.as_str());
        let detail = [left_out.as_deref(), h.facts.detail(), message]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let ev = keyhold_audit::Event {
            frontend: "ms-dke",
            operation: h.op,
            result: &result,
            status: Some(status),
            store: Some(store.as_str()),
            key: h.key.as_deref(),
            key_version: h.facts.key_version,
            latency_us: Some(started.elapsed().as_micros() as u64),
            actor: h.user.as_deref(),
            principal: h.user.as_deref(),
            request_id: h.token_id.as_deref(),
            context: h.context.as_deref(),
            rule: h.facts.rule.as_deref(),
            detail: Some(detail.as_str()).filter(|d| !d.is_empty()),
            ..Default::default()
        };
        match log.record(&ev).await {
            Ok(()) => answer(h.result),
            Err(why) => {
                tracing::error!(error = %why, "audit record not written: refusing the request");
                json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"code": "InternalError", "message": "the audit log cannot be written: key use refused"}),
                )
            }
        }
    }
}

async fn read_body<B>(body: B, c: &DkeConfig) -> Result<Bytes, DkeError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tokio::time::timeout(
        c.body_deadline,
        Limited::new(body, c.max_body_bytes).collect(),
    )
    .await
    {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(_)) => Err(DkeError::bad(format!(
            "the body is larger than {} bytes or could not be read",
            c.max_body_bytes
        ))),
        Err(_) => Err(DkeError::new(
            StatusCode::REQUEST_TIMEOUT,
            "Timeout",
            "the body did not arrive in time",
        )),
    }
}

/// Key types DKE can publish.
pub fn serves(t: KeyType) -> bool {
    t.is_rsa()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(target("k"), Some(Target::PublicKey("k")));
        assert_eq!(target("k/3/decrypt"), Some(Target::Decrypt("k", "3")));
        assert_eq!(target("k/3/Decrypt"), Some(Target::Decrypt("k", "3")));
        assert_eq!(target(""), None);
        assert_eq!(target("k/3"), None);
        assert_eq!(target("k/3/sign"), None);
        assert_eq!(target("/3/decrypt"), None);
    }

    #[test]
    fn cache_expiry_has_no_zone() {
        let e = cache_exp(1);
        assert_eq!(e.len(), 19, "{e}");
        assert!(!e.ends_with('Z'));
    }

    proptest::proptest! {
        #[test]
        fn any_path_routes_or_not(path in "\\PC{0,100}") {
            let _ = target(&path);
        }
    }
}
