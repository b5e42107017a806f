//! Google Workspace client-side encryption: Keyhold as the customer's key
//! access control list service (KACLS).
//!
//! Google's clients (Drive, Docs, Meet, Calendar… in the user's browser)
//! send the data key of a document to `POST {KACLS_URL}/wrap` with two
//! tokens in the body — the user's, from the customer's identity provider,
//! and Google's authorization for that user, role and resource — and get
//! back a wrapped key only this KACLS opens (`/unwrap`, under the same
//! checks). `/digest` gives Google the resource key hash of a wrapped key;
//! `/privilegedwrap` and `/privilegedunwrap` serve administrators (bulk
//! import, Takeout) with the user's token only; `GET /status` says what is
//! served. The checks follow Google's list: both tokens (signature,
//! issuer, audience, time), the same user in both, no guests unless
//! allowed, delegation claims that agree, a role the method allows, the
//! token's KACLS URL equal to ours, and the perimeter (the user's
//! domain). A wrapped key is bound to its resource ([`blob`]).
//!
//! A key store serves CSE once bound with `keyhold store api /s google-cse`
//! ([`keyhold_service::CseBinding`]); its KEK is one of its AES-256 keys,
//! used through the key service like any key (state, usage, policies with
//! the user's address as principal, break glass, audit).

pub mod blob;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use keyhold_core::StorePrefix;
use keyhold_identity::{claim, IdError, Issuer, Verifier};
use keyhold_service::policy::PolicyRequest;
use keyhold_service::store_apis::{email_listed, GOOGLE_AUTHZ_ISSUERS};
use keyhold_service::{
    CseBinding, EncryptOptions, GcmInput, KeyService, KeyUse, NotRun, Placement, StoreApi, Touches,
    UseFacts,
};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

type HttpResponse = Response<Full<Bytes>>;

/// The browser origin of Google's client-side encryption pages.
pub const GOOGLE_CSE_ORIGIN: &str = "https://client-side-encryption.google.com";
/// The audience of Google's authorization tokens.
pub const AUTHZ_AUDIENCE: &str = "cse-authorization";
/// The operations served, as `status` lists them.
pub const OPERATIONS: [&str; 11] = [
    "wrap",
    "unwrap",
    "digest",
    "privilegedwrap",
    "privilegedunwrap",
    "rewrap",
    "wrapprivatekey",
    "privatekeydecrypt",
    "privatekeysign",
    "privilegedprivatekeydecrypt",
    "delegate",
];
/// Largest wrapped private key (Google's limit).
const MAX_WRAPPED_PRIVATE: usize = 8 * 1024;
/// The audience of the tokens one KACLS gives another in a migration.
pub const MIGRATION_AUDIENCE: &str = "kacls-migration";

/// Largest data key wrapped (Google's limit).
const MAX_KEY: usize = 128;
/// Longest reason, resource name and perimeter id accepted.
const MAX_REASON: usize = 1024;
const MAX_RESOURCE: usize = 512;

/// Settings of the CSE front-end.
#[derive(Debug, Clone)]
pub struct CseConfig {
    pub max_body_bytes: usize,
    pub body_deadline: Duration,
    pub hsm_timeout: Duration,
    pub unauthenticated_records_per_sec: u32,
}

impl Default for CseConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            body_deadline: Duration::from_secs(10),
            hsm_timeout: Duration::from_secs(2),
            unauthenticated_records_per_sec: 50,
        }
    }
}

/// A structured error: `{"code": <HTTP status>, "message", "details"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CseError {
    pub status: StatusCode,
    pub message: String,
    pub details: String,
}

impl CseError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            details: String::new(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    /// The audit record's word for it.
    fn word(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "InvalidArgument",
            401 => "Unauthenticated",
            403 => "PermissionDenied",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            501 => "NotImplemented",
            503 => "Unavailable",
            _ => "Internal",
        }
    }
}

impl From<keyhold_core::Error> for CseError {
    fn from(e: keyhold_core::Error) -> Self {
        use keyhold_core::Error as E;
        match e {
            E::KeyNotFound { key, .. } => CseError::new(
                StatusCode::NOT_FOUND,
                format!("the key encryption key {key} is not in this key store"),
            ),
            E::InvalidCiphertext => CseError::bad(
                "the wrapped key does not open: damaged, or wrapped by another KACLS, store or key",
            ),
            E::Invalid { why, .. } => CseError::bad(why),
            E::InvalidState(m) | E::KeyUsage(m) => CseError::forbidden(m),
            E::AccessDenied { why, .. } => CseError::forbidden(why),
            E::DependencyTimeout(_) | E::RootOfTrust(_) => CseError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the key manager's storage or HSM cannot be used now; retry",
            ),
            e => {
                tracing::error!(error = %e, "internal error serving a CSE request");
                CseError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error in the key manager",
                )
            }
        }
    }
}

fn json_response(status: StatusCode, v: &Value) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_response(e: &CseError) -> HttpResponse {
    json_response(
        e.status,
        &serde_json::json!({"code": e.status.as_u16(), "message": e.message, "details": e.details}),
    )
}

/// Standard base64, with or without padding (Google's examples do both).
fn b64(field: &str, v: Option<&Value>, max: usize) -> Result<Vec<u8>, CseError> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| CseError::bad(format!("{field} is required (base64)")))?;
    let b = STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .map_err(|_| CseError::bad(format!("{field} is not base64")))?;
    if b.is_empty() || b.len() > max {
        return Err(CseError::bad(format!(
            "{field} is {} bytes: 1 to {max} are accepted",
            b.len()
        )));
    }
    Ok(b)
}

fn text<'a>(
    body: &'a Map<String, Value>,
    field: &str,
    max: usize,
    required: bool,
) -> Result<&'a str, CseError> {
    match body.get(field).and_then(Value::as_str) {
        Some(s) if s.len() > max => {
            Err(CseError::bad(format!("{field} is longer than {max} bytes")))
        }
        Some(s) => Ok(s),
        None if required => Err(CseError::bad(format!("{field} is required"))),
        None => Ok(""),
    }
}

/// The user and what Google's token says of the request.
#[derive(Debug, Clone, Default)]
struct Caller {
    email: String,
    role: String,
    resource_name: String,
    perimeter_id: String,
    token_id: Option<String>,
    /// Gmail: the public key the authorization is for (base64 SHA-256
    /// of its SubjectPublicKeyInfo).
    spki_hash: Option<String>,
    /// `delegate`: who the authorization delegates to.
    delegated_to: Option<String>,
}

/// What handling one request produced, for the answer and its record.
struct Handled {
    result: Result<HttpResponse, CseError>,
    facts: UseFacts,
    caller: Option<Caller>,
    reason: String,
    op: &'static str,
}

impl Handled {
    fn new(op: &'static str) -> Self {
        Self {
            result: Err(CseError::bad("")),
            facts: UseFacts::default(),
            caller: None,
            reason: String::new(),
            op,
        }
    }
}

/// The KACLS over a key service.
pub struct CseApi {
    service: Arc<KeyService>,
    config: CseConfig,
    verifier: Arc<Verifier>,
    budget: parking_lot::Mutex<keyhold_audit::RefusalBudget>,
}

fn find_store<'a>(
    path: &'a str,
    apis: &'a [(StorePrefix, StoreApi)],
) -> Option<(&'a StorePrefix, &'a CseBinding, &'a str)> {
    apis.iter()
        .filter_map(|(p, api)| match api {
            StoreApi::GoogleCse(b) => path
                .strip_prefix(b.path_prefix.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .filter(|r| !r.contains('/'))
                .map(|rest| (p, b, rest)),
            _ => None,
        })
        .max_by_key(|(_, b, _)| b.path_prefix.len())
}

/// Lets Google's pages call from the browser.
fn cors(r: &mut HttpResponse, origin: Option<&HeaderValue>) {
    if origin.is_some_and(|o| o == GOOGLE_CSE_ORIGIN) {
        let h = r.headers_mut();
        h.insert(
            "access-control-allow-origin",
            HeaderValue::from_static(GOOGLE_CSE_ORIGIN),
        );
        h.insert("vary", HeaderValue::from_static("Origin"));
    }
}

fn preflight(origin: Option<&HeaderValue>) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    if origin.is_some_and(|o| o == GOOGLE_CSE_ORIGIN) {
        let h = r.headers_mut();
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("Content-Type, Authorization"),
        );
        h.insert("access-control-max-age", HeaderValue::from_static("3600"));
    }
    cors(&mut r, origin);
    r
}

impl CseApi {
    pub fn new(service: Arc<KeyService>, config: CseConfig, verifier: Arc<Verifier>) -> Self {
        Self {
            service,
            budget: parking_lot::Mutex::new(keyhold_audit::RefusalBudget::new(
                config.unauthenticated_records_per_sec,
            )),
            config,
            verifier,
        }
    }

    pub fn service(&self) -> &Arc<KeyService> {
        &self.service
    }

    /// Serves one request under a CSE store's prefix; `None` when no CSE
    /// store is there.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Option<HttpResponse>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let apis = self.service.store_apis();
        let (store, binding, method) = find_store(req.uri().path(), &apis)?;
        let (store, binding, method) =
            (store.clone(), binding.clone(), method.to_ascii_lowercase());
        let origin = req.headers().get(hyper::header::ORIGIN).cloned();
        if req.method() == Method::OPTIONS {
            return Some(preflight(origin.as_ref()));
        }
        let op = OPERATIONS
            .iter()
            .chain(["status", "certs"].iter())
            .find(|o| **o == method)
            .copied()
            .unwrap_or("-");
        let mut h = Handled::new(op);
        match (req.method(), op) {
            (&Method::GET, "status") => h.result = Ok(self.status()),
            (&Method::GET, "certs") => h.result = self.certs(&store, &binding),
            (_, "status" | "certs") | (&Method::GET, _) if op != "-" => {
                h.result = Err(CseError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "status and certs are GETs; the other methods are POSTs",
                ))
            }
            (&Method::POST, "-") => {
                h.result = Err(CseError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "{} is not served by this KACLS (see GET status)",
                        method.chars().take(40).collect::<String>()
                    ),
                ))
            }
            (&Method::POST, _) => match read_body(req.into_body(), &self.config).await {
                Err(e) => h.result = Err(e),
                Ok(body) => self.call(&store, &binding, op, &body, &mut h).await,
            },
            _ => h.result = Err(CseError::new(StatusCode::NOT_FOUND, "no such KACLS method")),
        }
        let mut r = self.record(&store, h, started).await;
        cors(&mut r, origin.as_ref());
        Some(r)
    }

    fn status(&self) -> HttpResponse {
        json_response(
            StatusCode::OK,
            &serde_json::json!({
                "server_type": "KACLS",
                "vendor_id": "Keyhold",
                "version": env!("CARGO_PKG_VERSION"),
                "name": "Keyhold KACLS",
                "operations_supported": OPERATIONS,
            }),
        )
    }

    async fn call(
        self: &Arc<Self>,
        store: &StorePrefix,
        b: &CseBinding,
        op: &'static str,
        body: &[u8],
        h: &mut Handled,
    ) {
        let body: Map<String, Value> = match serde_json::from_slice(body) {
            Ok(Value::Object(m)) => m,
            _ => {
                h.result = Err(CseError::bad("the body is not a JSON object"));
                return;
            }
        };
        match text(&body, "reason", MAX_REASON, false) {
            Ok(r) => h.reason = sanitize(r),
            Err(e) => {
                h.result = Err(e);
                return;
            }
        }
        let caller = match op {
            "privilegedwrap"
            | "privilegedunwrap"
            | "wrapprivatekey"
            | "privilegedprivatekeydecrypt" => self.privileged_caller(b, &body).await,
            _ => {
                let roles: &[&str] = match op {
                    "wrap" => &["writer", "upgrader"],
                    "unwrap" => &["reader", "writer"],
                    "rewrap" => &["migrator"],
                    "privatekeydecrypt" => &["decrypter"],
                    "privatekeysign" => &["signer"],
                    "delegate" => &["reader", "writer", "decrypter", "signer"],
                    _ => &["verifier"],
                };
                // digest and rewrap come from Google alone.
                let with_authn = !matches!(op, "digest" | "rewrap");
                self.caller(store, b, &body, with_authn, roles).await
            }
        };
        let caller = match caller {
            Ok(c) => c,
            Err(e) => {
                h.result = Err(e);
                return;
            }
        };
        h.caller = Some(caller.clone());
        let (result, facts) = match op {
            "rewrap" => self.rewrap(store, b, &body, &caller, &h.reason).await,
            "delegate" => match caller.delegated_to.clone() {
                Some(d) => self.delegate(store, b, &caller, d).await,
                None => (
                    Err(CseError::bad(
                        "the authorization token names no delegated_to",
                    )),
                    UseFacts::default(),
                ),
            },
            "wrapprivatekey" => match private_key_input(&body) {
                Ok(pkcs8) => self.run(store, b, Job::WrapPrivate(pkcs8), &caller).await,
                Err(e) => (Err(e), UseFacts::default()),
            },
            "privatekeydecrypt" | "privatekeysign" | "privilegedprivatekeydecrypt" => {
                match private_op_input(op, &body, &caller) {
                    Ok(job) => self.run(store, b, job, &caller).await,
                    Err(e) => (Err(e), UseFacts::default()),
                }
            }
            "wrap" | "privilegedwrap" => match b64("key", body.get("key"), MAX_KEY) {
                Ok(dek) => self.run(store, b, Job::Wrap(dek), &caller).await,
                Err(e) => (Err(e), UseFacts::default()),
            },
            _ => match b64("wrapped_key", body.get("wrapped_key"), 2048) {
                Ok(w) => {
                    self.run(store, b, Job::Unwrap(w, op == "digest"), &caller)
                        .await
                }
                Err(e) => (Err(e), UseFacts::default()),
            },
        };
        h.result = result;
        h.facts = facts;
    }

    /// The caller of wrap, unwrap and digest: Google's authorization token
    /// (and the user's authentication token but for digest), checked.
    async fn caller(
        &self,
        store: &StorePrefix,
        b: &CseBinding,
        body: &Map<String, Value>,
        with_authn: bool,
        roles: &[&str],
    ) -> Result<Caller, CseError> {
        let authz_token = body
            .get("authorization")
            .and_then(Value::as_str)
            .ok_or_else(|| CseError::unauthenticated("the authorization token is required"))?;
        let authz = self.google_token(b, authz_token).await?;
        let authn = if with_authn {
            let t = body
                .get("authentication")
                .and_then(Value::as_str)
                .ok_or_else(|| CseError::unauthenticated("the authentication token is required"))?;
            let ours = keyhold_crypto::jwt::peek(t)
                .ok()
                .and_then(|u| u.iss)
                .is_some_and(|i| i == b.kacls_url);
            if ours {
                Some(self.own_token(store, b, t)?)
            } else {
                Some(self.idp_token(b, t).await?)
            }
        } else {
            None
        };
        // Addresses compare in any case; the lowercase form is the one
        // recorded and matched by policies.
        let email = claim(&authz, "email")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if email.is_empty() {
            return Err(CseError::forbidden(
                "the authorization token names no user (email)",
            ));
        }
        if let Some(authn) = &authn {
            // The same user in both tokens.
            let user = claim(authn, "google_email")
                .or_else(|| claim(authn, "email"))
                .unwrap_or_default();
            if !user.trim().eq_ignore_ascii_case(&email) {
                return Err(CseError::forbidden(
                    "the authentication and authorization tokens are not for the same user",
                ));
            }
            // Delegation: both tokens must agree.
            if let Some(d) = claim(authn, "delegated_to") {
                let same_resource = claim(authn, "resource_name") == claim(&authz, "resource_name")
                    && claim(authn, "resource_name").is_some();
                let same_delegate =
                    claim(&authz, "delegated_to").is_some_and(|a| a.eq_ignore_ascii_case(d));
                if !same_resource || !same_delegate {
                    return Err(CseError::forbidden(
                        "the delegated token's delegated_to and resource_name do not match the authorization",
                    ));
                }
            }
        }
        match claim(&authz, "email_type") {
            None | Some("google") => {}
            Some("google-visitor" | "customer-idp") if b.allow_guests => {}
            Some(t) => {
                return Err(CseError::forbidden(format!(
                    "guest users ({t}) may not use this KACLS"
                )))
            }
        }
        let role = claim(&authz, "role").unwrap_or_default().to_owned();
        if !roles.contains(&role.as_str()) {
            return Err(CseError::forbidden(format!(
                "role {role:?} may not call this method (allowed: {})",
                roles.join(", ")
            )));
        }
        if claim(&authz, "kacls_url") != Some(b.kacls_url.as_str()) {
            return Err(CseError::forbidden(
                "the authorization token is for another KACLS (kacls_url)",
            ));
        }
        check_perimeter(b, &email)?;
        let resource_name = claim(&authz, "resource_name")
            .unwrap_or_default()
            .to_owned();
        if resource_name.is_empty() || resource_name.len() > MAX_RESOURCE {
            return Err(CseError::bad(
                "the authorization token's resource_name is missing or too long",
            ));
        }
        Ok(Caller {
            email,
            role,
            resource_name,
            perimeter_id: claim(&authz, "perimeter_id").unwrap_or_default().to_owned(),
            token_id: claim(&authz, "jti").map(str::to_owned),
            spki_hash: claim(&authz, "spki_hash").map(str::to_owned),
            delegated_to: claim(&authz, "delegated_to").map(str::to_owned),
        })
    }

    /// The caller of the privileged methods: the user's token only, for a
    /// user the store lists as privileged.
    async fn privileged_caller(
        &self,
        b: &CseBinding,
        body: &Map<String, Value>,
    ) -> Result<Caller, CseError> {
        let t = body
            .get("authentication")
            .and_then(Value::as_str)
            .ok_or_else(|| CseError::unauthenticated("the authentication token is required"))?;
        // Another KACLS migrating keys: its own token, its own keys.
        let iss = keyhold_crypto::jwt::peek(t).ok().and_then(|u| u.iss);
        if let Some(peer) = iss.filter(|i| b.migration_peers.contains(i)) {
            return self.peer_caller(b, body, t, peer).await;
        }
        let authn = self.idp_token(b, t).await?;
        let email = claim(&authn, "google_email")
            .or_else(|| claim(&authn, "email"))
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if email.is_empty() || !email_listed(&b.privileged_users, &email) {
            return Err(CseError::forbidden(format!(
                "{email} may not call the privileged methods of this KACLS"
            )));
        }
        check_perimeter(b, &email)?;
        // The private-key methods name no resource.
        let needs_resource = body.get("private_key").is_none()
            && body.get("encrypted_data_encryption_key").is_none();
        let resource_name = text(body, "resource_name", MAX_RESOURCE, needs_resource)?.to_owned();
        let perimeter_id = text(body, "perimeter_id", blob::MAX_PERIMETER, false)?.to_owned();
        Ok(Caller {
            email,
            role: "privileged".into(),
            resource_name,
            perimeter_id,
            token_id: claim(&authn, "jti").map(str::to_owned),
            spki_hash: None,
            delegated_to: None,
        })
    }

    /// A peer KACLS calling privilegedunwrap in a migration: its token is
    /// checked with the keys it publishes at `{its URL}/certs`, and must
    /// name this KACLS and the resource asked for.
    async fn peer_caller(
        &self,
        b: &CseBinding,
        body: &Map<String, Value>,
        token: &str,
        peer: String,
    ) -> Result<Caller, CseError> {
        let issuer = Issuer {
            issuers: vec![peer.clone()],
            audiences: vec![MIGRATION_AUDIENCE.to_owned()],
            jwks_url: format!("{peer}/certs"),
            jwks_ca_pem: b.peer_ca_pem.clone(),
        };
        let claims = self.verify(token, &issuer, "KACLS migration").await?;
        if claim(&claims, "kacls_url") != Some(b.kacls_url.as_str()) {
            return Err(CseError::forbidden(
                "the KACLS token is for another KACLS (kacls_url)",
            ));
        }
        let resource_name = text(body, "resource_name", MAX_RESOURCE, true)?.to_owned();
        if claim(&claims, "resource_name") != Some(resource_name.as_str()) {
            return Err(CseError::forbidden(
                "the KACLS token is for another resource",
            ));
        }
        Ok(Caller {
            email: format!("kacls:{peer}"),
            role: "migration".into(),
            resource_name,
            perimeter_id: String::new(),
            token_id: claim(&claims, "jti").map(str::to_owned),
            spki_hash: None,
            delegated_to: None,
        })
    }

    /// `GET certs`: the public keys of this KACLS's token-signing key, one
    /// per version (key id `{key}-v{version}`).
    fn certs(&self, store: &StorePrefix, b: &CseBinding) -> Result<HttpResponse, CseError> {
        Ok(json_response(StatusCode::OK, &self.own_jwks(store, b)?))
    }

    /// The JWK set of this KACLS's token-signing key (every version).
    fn own_jwks(&self, store: &StorePrefix, b: &CseBinding) -> Result<Value, CseError> {
        let Some(sk) = &b.signing_key else {
            return Err(CseError::new(
                StatusCode::NOT_FOUND,
                "this KACLS signs no tokens (no signing key)",
            ));
        };
        let id = keyhold_core::KeyId::parse(sk).map_err(CseError::from)?;
        let current = self.service.published_key(store, sk)?.version;
        let keys: Vec<Value> = (1..=current)
            .filter_map(|v| {
                let (_, spki) = self.service.public_key(store, &id, Some(v)).ok()?;
                keyhold_crypto::jwt::rsa_public_jwk(&spki, &format!("{sk}-v{v}")).ok()
            })
            .collect();
        Ok(serde_json::json!({ "keys": keys }))
    }

    /// A delegated authentication token this KACLS issued (`delegate`),
    /// checked with its own keys (no fetch).
    fn own_token(
        &self,
        store: &StorePrefix,
        b: &CseBinding,
        token: &str,
    ) -> Result<Arc<Map<String, Value>>, CseError> {
        let jwks = self.own_jwks(store, b)?;
        let keys = keyhold_crypto::jwt::Jwks::parse(jwks.to_string().as_bytes())
            .map_err(|_| CseError::unauthenticated("this KACLS has no token keys"))?;
        let me = vec![b.kacls_url.clone()];
        let expect = keyhold_crypto::jwt::Expect {
            issuers: &me,
            audiences: &me,
            leeway_s: 60,
        };
        keyhold_crypto::jwt::verify(token, &keys, &expect)
            .map(Arc::new)
            .map_err(|e| CseError::unauthenticated(format!("delegated token: {e}")))
    }

    /// `delegate`: a short-lived authentication token for `delegated_to`,
    /// for one resource, signed by this KACLS (15 minutes).
    async fn delegate(
        self: &Arc<Self>,
        store: &StorePrefix,
        b: &CseBinding,
        c: &Caller,
        delegated_to: String,
    ) -> (Result<HttpResponse, CseError>, UseFacts) {
        let sk = match &b.signing_key {
            Some(k) => k.clone(),
            None => {
                return (
                    Err(CseError::forbidden(
                        "this KACLS has no signing key to issue delegated tokens",
                    )),
                    UseFacts::default(),
                )
            }
        };
        let api = Arc::clone(self);
        let (store, kacls, c) = (store.clone(), b.kacls_url.clone(), c.clone());
        let job = move || -> (Result<HttpResponse, CseError>, UseFacts) {
            let version = match api.service.published_key(&store, &sk) {
                Ok(d) => d.version,
                Err(e) => return (Err(e.into()), UseFacts::default()),
            };
            let now = keyhold_core::now();
            let claims = serde_json::json!({
                "iss": kacls, "aud": kacls, "email": c.email, "delegated_to": delegated_to,
                "resource_name": c.resource_name, "iat": now, "exp": now + 900,
            });
            let input =
                keyhold_crypto::jwt::rs256_signing_input(&claims, &format!("{sk}-v{version}"));
            let u = KeyUse {
                store: &store,
                key: &sk,
                context: PolicyRequest {
                    principal: Some(&c.email),
                    resource: Some(c.resource_name.as_str()).filter(|r| !r.is_empty()),
                    ..PolicyRequest::default()
                },
            };
            let used = api.service.sign(
                &u,
                input.as_bytes(),
                keyhold_crypto::asym::SignScheme::RsaPkcs1(keyhold_crypto::asym::Hash::Sha256),
            );
            let r = used.result.map_err(CseError::from).map(|s| {
                json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "delegated_authentication": keyhold_crypto::jwt::finish_rs256(&input, &s.signature) }),
                )
            });
            (r, used.facts)
        };
        match self
            .service
            .run_blocking(self.config.hsm_timeout, job)
            .await
        {
            Ok(r) => r,
            Err(_) => (
                Err(CseError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the signing key did not answer in time",
                )),
                UseFacts::default(),
            ),
        }
    }

    /// `rewrap` (migration into this KACLS): a token of our own for the
    /// original KACLS, its privilegedunwrap, then a wrap under our KEK.
    async fn rewrap(
        self: &Arc<Self>,
        store: &StorePrefix,
        b: &CseBinding,
        body: &Map<String, Value>,
        c: &Caller,
        reason: &str,
    ) -> (Result<HttpResponse, CseError>, UseFacts) {
        let none = UseFacts::default;
        let original = match text(body, "original_kacls_url", 2048, true) {
            Ok(o) => o.to_owned(),
            Err(e) => return (Err(e), none()),
        };
        if !b.migration_peers.contains(&original) {
            return (
                Err(CseError::forbidden(
                    "original_kacls_url is not a migration peer of this KACLS",
                )),
                none(),
            );
        }
        let wrapped = match body.get("wrapped_key").and_then(Value::as_str) {
            Some(w) if w.len() <= 4096 => w.to_owned(),
            _ => {
                return (
                    Err(CseError::bad(
                        "wrapped_key is required (base64, at most 4 KiB)",
                    )),
                    none(),
                )
            }
        };
        let token = match self.migration_token(store, b, &original, c).await {
            Ok(t) => t,
            Err(e) => return (Err(e), none()),
        };
        let req = serde_json::json!({
            "authentication": token, "resource_name": c.resource_name,
            "wrapped_key": wrapped, "reason": format!("rewrap by {}: {reason}", b.kacls_url),
        });
        let answer = keyhold_identity::https_request(
            Method::POST,
            &format!("{original}/privilegedunwrap"),
            &b.peer_ca_pem,
            Some(serde_json::to_vec(&req).unwrap_or_default()),
            Duration::from_secs(10),
        )
        .await;
        let dek = match answer {
            Ok((200, body)) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                match b64("key", v.get("key"), MAX_KEY) {
                    Ok(k) => k,
                    Err(_) => {
                        return (
                            Err(CseError::new(
                                StatusCode::BAD_GATEWAY,
                                "the original KACLS answered no key",
                            )),
                            none(),
                        )
                    }
                }
            }
            Ok((status, body)) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                let why: String = v
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect();
                return (
                    Err(CseError::new(
                        if status < 500 {
                            StatusCode::FORBIDDEN
                        } else {
                            StatusCode::BAD_GATEWAY
                        },
                        format!("the original KACLS refused the unwrap ({status}): {why}"),
                    )),
                    none(),
                );
            }
            Err(e) => {
                return (
                    Err(CseError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("the original KACLS cannot be reached: {e}"),
                    )),
                    none(),
                )
            }
        };
        self.run(store, b, Job::WrapWithHash(dek), c).await
    }

    /// A token of this KACLS for `original`'s privilegedunwrap, signed by
    /// the store's signing key through the key service.
    async fn migration_token(
        self: &Arc<Self>,
        store: &StorePrefix,
        b: &CseBinding,
        original: &str,
        c: &Caller,
    ) -> Result<String, CseError> {
        let sk = b
            .signing_key
            .clone()
            .ok_or_else(|| CseError::forbidden("this KACLS has no signing key for migrations"))?;
        let api = Arc::clone(self);
        let (store, kacls, original, c) = (
            store.clone(),
            b.kacls_url.clone(),
            original.to_owned(),
            c.clone(),
        );
        let job = move || -> Result<String, CseError> {
            let version = api.service.published_key(&store, &sk)?.version;
            let now = keyhold_core::now();
            let claims = serde_json::json!({
                "iss": kacls, "aud": MIGRATION_AUDIENCE, "kacls_url": original,
                "resource_name": c.resource_name, "iat": now, "exp": now + 300,
            });
            let input =
                keyhold_crypto::jwt::rs256_signing_input(&claims, &format!("{sk}-v{version}"));
            let u = KeyUse {
                store: &store,
                key: &sk,
                context: PolicyRequest {
                    principal: Some(&c.email),
                    resource: Some(c.resource_name.as_str()).filter(|r| !r.is_empty()),
                    ..PolicyRequest::default()
                },
            };
            let signed = api
                .service
                .sign(
                    &u,
                    input.as_bytes(),
                    keyhold_crypto::asym::SignScheme::RsaPkcs1(keyhold_crypto::asym::Hash::Sha256),
                )
                .result?;
            Ok(keyhold_crypto::jwt::finish_rs256(&input, &signed.signature))
        };
        match self
            .service
            .run_blocking(self.config.hsm_timeout, job)
            .await
        {
            Ok(r) => r,
            Err(_) => Err(CseError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the signing key did not answer in time",
            )),
        }
    }

    async fn idp_token(
        &self,
        b: &CseBinding,
        token: &str,
    ) -> Result<Arc<Map<String, Value>>, CseError> {
        let issuer = Issuer {
            issuers: b.idp_issuers.clone(),
            audiences: b.idp_audiences.clone(),
            jwks_url: b.idp_jwks_url.clone(),
            jwks_ca_pem: b.idp_jwks_ca_pem.clone(),
        };
        self.verify(token, &issuer, "authentication").await
    }

    async fn google_token(
        &self,
        b: &CseBinding,
        token: &str,
    ) -> Result<Arc<Map<String, Value>>, CseError> {
        let iss = keyhold_crypto::jwt::peek(token)
            .ok()
            .and_then(|u| u.iss)
            .filter(|i| GOOGLE_AUTHZ_ISSUERS.contains(&i.as_str()))
            .ok_or_else(|| {
                CseError::unauthenticated(
                    "the authorization token is not from a Google token issuer",
                )
            })?;
        let issuer = Issuer {
            jwks_url: b.authz_jwks_url.clone().unwrap_or_else(|| {
                format!("https://www.googleapis.com/service_accounts/v1/jwk/{iss}")
            }),
            issuers: vec![iss],
            audiences: vec![AUTHZ_AUDIENCE.to_owned()],
            jwks_ca_pem: b.authz_jwks_ca_pem.clone(),
        };
        self.verify(token, &issuer, "authorization").await
    }

    async fn verify(
        &self,
        token: &str,
        issuer: &Issuer,
        which: &str,
    ) -> Result<Arc<Map<String, Value>>, CseError> {
        self.verifier
            .verify(token, issuer)
            .await
            .map_err(|e| match e {
                IdError::Token(t) => CseError::unauthenticated(format!("{which} token: {t}")),
                IdError::KeysUnavailable(m) => CseError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{which} token: the issuer's keys cannot be fetched: {m}"),
                ),
            })
    }

    /// Wraps or unwraps with the store's KEK (on a blocking thread when
    /// the key service says it may wait).
    async fn run(
        self: &Arc<Self>,
        store: &StorePrefix,
        b: &CseBinding,
        job: Job,
        caller: &Caller,
    ) -> (Result<HttpResponse, CseError>, UseFacts) {
        let api = Arc::clone(self);
        let (store, kek, caller) = (store.clone(), b.kek.clone(), caller.clone());
        let placement = self.service.placement(&Touches {
            key: Some((&store, &kek)),
            crypt: true,
            ..Touches::default()
        });
        let work = move || api.key_job(&store, &kek, job, &caller);
        match placement {
            Placement::Inline => work(),
            Placement::Blocking => match self
                .service
                .run_blocking(self.config.hsm_timeout, work)
                .await
            {
                Ok(r) => r,
                Err(NotRun::TimedOut(_)) => (
                    Err(CseError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the HSM or database did not answer in time; retry",
                    )),
                    UseFacts::default(),
                ),
                Err(NotRun::Failed) => (
                    Err(CseError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error in the key manager",
                    )),
                    UseFacts::default(),
                ),
            },
        }
    }

    fn key_job(
        &self,
        store: &StorePrefix,
        kek: &str,
        job: Job,
        c: &Caller,
    ) -> (Result<HttpResponse, CseError>, UseFacts) {
        let _inflight = self.service.request_guard();
        let job_kind = match &job {
            Job::WrapWithHash(_) => JobKind::WithHash,
            _ => JobKind::Plain,
        };
        let u = KeyUse {
            store,
            key: kek,
            context: PolicyRequest {
                principal: Some(&c.email),
                resource: Some(c.resource_name.as_str()).filter(|r| !r.is_empty()),
                ..PolicyRequest::default()
            },
        };
        match job {
            Job::WrapPrivate(pkcs8) => {
                let spki = match keyhold_crypto::asym::PrivateKey::parse(pkcs8.expose())
                    .and_then(|k| k.public_spki())
                {
                    Ok(s) => s,
                    Err(_) => {
                        return (
                            Err(CseError::bad("private_key is not usable")),
                            UseFacts::default(),
                        )
                    }
                };
                let hash: [u8; 32] =
                    keyhold_crypto::asym::digest(keyhold_crypto::asym::Hash::Sha256, &spki)
                        .try_into()
                        .unwrap_or([0; 32]);
                let used =
                    self.service
                        .encrypt(&u, pkcs8.expose(), EncryptOptions::default(), |v| {
                            Ok::<_, keyhold_core::Error>(blob::pk_aad(
                                store.as_str(),
                                kek,
                                &blob::pk_header(v, &hash),
                            ))
                        });
                let r = used.result.map_err(CseError::from).map(|s| {
                    let w = blob::assemble(
                        &blob::pk_header(s.version, &hash),
                        &s.iv,
                        &s.ciphertext,
                        &s.tag,
                    );
                    json_response(
                        StatusCode::OK,
                        &serde_json::json!({ "wrapped_private_key": STANDARD.encode(w) }),
                    )
                });
                (r, used.facts)
            }
            Job::Private(job) => {
                let Some(parsed) = blob::parse_private(&job.wrapped) else {
                    return (
                        Err(CseError::bad(
                            "the wrapped private key is not one this KACLS made",
                        )),
                        UseFacts::default(),
                    );
                };
                let ours = STANDARD.encode(parsed.spki_sha256);
                match &job.spki_hash {
                    Some(h) if *h == ours => {}
                    Some(_) => {
                        return (
                            Err(CseError::forbidden(
                                "the wrapped private key is not the one spki_hash names",
                            )),
                            UseFacts::default(),
                        )
                    }
                    None => {
                        return (
                            Err(CseError::forbidden(
                                "the authorization names no public key (spki_hash)",
                            )),
                            UseFacts::default(),
                        )
                    }
                }
                let used = self.service.decrypt(&u, || {
                    Ok::<_, keyhold_core::Error>(GcmInput {
                        version: parsed.version,
                        iv: parsed.iv,
                        aad: blob::pk_aad(store.as_str(), kek, parsed.header),
                        ciphertext: parsed.ciphertext,
                        tag: parsed.tag,
                    })
                });
                let r = used.result.map_err(CseError::from).and_then(|pkcs8| {
                    let k = keyhold_crypto::asym::PrivateKey::parse(pkcs8.expose())
                        .map_err(|_| CseError::new(StatusCode::INTERNAL_SERVER_ERROR, "the private key does not parse"))?;
                    match job.op {
                        PrivateOp::Decrypt { alg, ciphertext, label } => {
                            let dek = match alg {
                                PkDecrypt::Pkcs1 => k.pkcs1_decrypt(&ciphertext),
                                PkDecrypt::Oaep(h) => k.oaep_decrypt(h, &ciphertext, label.as_deref()),
                            }
                            .map_err(|_| CseError::bad("encrypted_data_encryption_key does not decrypt with this key and algorithm"))?;
                            Ok(json_response(StatusCode::OK, &serde_json::json!({ "data_encryption_key": STANDARD.encode(dek.expose()) })))
                        }
                        PrivateOp::Sign { scheme, digest } => {
                            let sig = k
                                .sign_digest(scheme, &digest)
                                .map_err(|_| CseError::bad("digest is not a hash of the algorithm's length"))?;
                            Ok(json_response(StatusCode::OK, &serde_json::json!({ "signature": STANDARD.encode(sig) })))
                        }
                    }
                });
                (r, used.facts)
            }
            Job::Wrap(dek) | Job::WrapWithHash(dek) => {
                let with_hash = matches!(job_kind, JobKind::WithHash);
                if c.perimeter_id.len() > blob::MAX_PERIMETER {
                    return (
                        Err(CseError::bad("perimeter_id is longer than 128 bytes")),
                        UseFacts::default(),
                    );
                }
                let used = self
                    .service
                    .encrypt(&u, &dek, EncryptOptions::default(), |v| {
                        let h = blob::header(v, &c.perimeter_id, &c.resource_name);
                        Ok::<_, keyhold_core::Error>(blob::aad(
                            store.as_str(),
                            kek,
                            &h,
                            &c.resource_name,
                        ))
                    });
                let r = used.result.map_err(CseError::from).map(|s| {
                    let h = blob::header(s.version, &c.perimeter_id, &c.resource_name);
                    let w = blob::assemble(&h, &s.iv, &s.ciphertext, &s.tag);
                    let mut v = serde_json::json!({ "wrapped_key": STANDARD.encode(w) });
                    if with_hash {
                        v["resource_key_hash"] =
                            blob::resource_key_hash(&dek, &c.resource_name, &c.perimeter_id).into();
                    }
                    json_response(StatusCode::OK, &v)
                });
                (r, used.facts)
            }
            Job::Unwrap(w, digest) => {
                let Some(parsed) = blob::parse(&w) else {
                    return (
                        Err(CseError::bad("the wrapped key is not one this KACLS made")),
                        UseFacts::default(),
                    );
                };
                if parsed.resource_tag != blob::resource_tag(&c.resource_name) {
                    return (
                        Err(CseError::forbidden(
                            "the wrapped key belongs to another resource (resource_name)",
                        )),
                        UseFacts::default(),
                    );
                }
                let used = self.service.decrypt(&u, || {
                    Ok::<_, keyhold_core::Error>(GcmInput {
                        version: parsed.version,
                        iv: parsed.iv,
                        aad: blob::aad(store.as_str(), kek, parsed.header, &c.resource_name),
                        ciphertext: parsed.ciphertext,
                        tag: parsed.tag,
                    })
                });
                let r = used.result.map_err(CseError::from).map(|dek| {
                    if digest {
                        let hash = blob::resource_key_hash(
                            dek.expose(),
                            &c.resource_name,
                            parsed.perimeter,
                        );
                        json_response(
                            StatusCode::OK,
                            &serde_json::json!({ "resource_key_hash": hash }),
                        )
                    } else {
                        json_response(
                            StatusCode::OK,
                            &serde_json::json!({ "key": STANDARD.encode(dek.expose()) }),
                        )
                    }
                });
                (r, used.facts)
            }
        }
    }

    /// Writes the audit record and answers (500 when it cannot be written).
    async fn record(&self, store: &StorePrefix, h: Handled, started: Instant) -> HttpResponse {
        let (result, status) = match &h.result {
            Ok(_) => ("OK", 200),
            Err(e) => (e.word(), e.status.as_u16()),
        };
        let answer = |r: Result<HttpResponse, CseError>| match r {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        let log = self.service.audit();
        if !log.is_attached() {
            return answer(h.result);
        }
        let mut left_out = None;
        if h.caller.is_none() {
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
        let context = h.caller.as_ref().map(|c| {
            format!(
                "resource={} role={} perimeter={} reason={}",
                c.resource_name, c.role, c.perimeter_id, h.reason
            )
        });
        let message = h.result.as_ref().err().map(|e| e.message.as_str());
        let detail = [left_out.as_deref(), h.facts.detail(), message]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let email = h.caller.as_ref().map(|c| c.email.as_str());
        let ev = keyhold_audit::Event {
            frontend: "google-cse",
            operation: h.op,
            result,
            status: Some(status),
            store: Some(store.as_str()),
            key: h.caller.as_ref().map(|_| "kek"),
            key_version: h.facts.key_version,
            latency_us: Some(started.elapsed().as_micros() as u64),
            actor: email,
            principal: email,
            request_id: h.caller.as_ref().and_then(|c| c.token_id.as_deref()),
            context: context.as_deref(),
            rule: h.facts.rule.as_deref(),
            detail: Some(detail.as_str()).filter(|d| !d.is_empty()),
            ..Default::default()
        };
        match log.record(&ev).await {
            Ok(()) => answer(h.result),
            Err(why) => {
                tracing::error!(error = %why, "audit record not written: refusing the request");
                error_response(&CseError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the audit log cannot be written: key use refused",
                ))
            }
        }
    }
}

enum Job {
    /// A private key (PKCS#8) to wrap (Gmail).
    WrapPrivate(keyhold_crypto::SecretBytes),
    /// A wrapped private key to use.
    Private(PrivateJob),
    Wrap(Vec<u8>),
    /// A wrap whose answer also gives the resource key hash (rewrap).
    WrapWithHash(Vec<u8>),
    /// The wrapped key; whether only its resource key hash is wanted.
    Unwrap(Vec<u8>, bool),
}

/// What to do with a wrapped private key.
struct PrivateJob {
    wrapped: Vec<u8>,
    /// The base64 SHA-256 of the SubjectPublicKeyInfo the caller's token
    /// (or body) is for: the key must be that one.
    spki_hash: Option<String>,
    op: PrivateOp,
}

enum PrivateOp {
    Decrypt {
        alg: PkDecrypt,
        ciphertext: Vec<u8>,
        label: Option<Vec<u8>>,
    },
    Sign {
        scheme: keyhold_crypto::asym::SignScheme,
        digest: Vec<u8>,
    },
}

#[derive(Clone, Copy)]
enum PkDecrypt {
    Pkcs1,
    Oaep(keyhold_crypto::asym::Hash),
}

/// `private_key` of wrapprivatekey: PEM (PKCS#8 or PKCS#1) or base64 DER;
/// an RSA key (Gmail's S/MIME keys), answered as PKCS#8.
fn private_key_input(body: &Map<String, Value>) -> Result<keyhold_crypto::SecretBytes, CseError> {
    let text = body
        .get("private_key")
        .and_then(Value::as_str)
        .ok_or_else(|| CseError::bad("private_key is required (PEM, or base64 DER)"))?;
    if text.len() > 16 * 1024 {
        return Err(CseError::bad("private_key is larger than 16 KiB"));
    }
    let b64_part: String = if text.contains("-----BEGIN") {
        text.lines().filter(|l| !l.starts_with("-----")).collect()
    } else {
        text.split_whitespace().collect()
    };
    let der = zeroize::Zeroizing::new(
        STANDARD
            .decode(b64_part.as_bytes())
            .map_err(|_| CseError::bad("private_key is not PEM or base64 DER"))?,
    );
    let k = keyhold_crypto::asym::PrivateKey::parse(&der)
        .map_err(|_| CseError::bad("private_key is not a private key Keyhold reads"))?;
    if !matches!(k.kind(), keyhold_crypto::asym::PairKind::Rsa(_)) {
        return Err(CseError::bad("private_key must be an RSA key (S/MIME)"));
    }
    keyhold_crypto::asym::rsa_private_to_pkcs8(&der)
        .map_err(|_| CseError::bad("private_key cannot be read as PKCS#8"))
}

/// The job of privatekeydecrypt, privatekeysign and
/// privilegedprivatekeydecrypt.
fn private_op_input(op: &str, body: &Map<String, Value>, c: &Caller) -> Result<Job, CseError> {
    use keyhold_crypto::asym::{Hash, SignScheme};
    let wrapped = b64(
        "wrapped_private_key",
        body.get("wrapped_private_key"),
        MAX_WRAPPED_PRIVATE,
    )?;
    let alg = text(body, "algorithm", 100, true)?;
    let spki_hash = if op == "privilegedprivatekeydecrypt" {
        if text(body, "spki_hash_algorithm", 20, true)? != "SHA-256" {
            return Err(CseError::bad("spki_hash_algorithm must be SHA-256"));
        }
        Some(text(body, "spki_hash", 100, true)?.to_owned())
    } else {
        c.spki_hash.clone()
    };
    let op = if op == "privatekeysign" {
        let scheme = match alg {
            "SHA256withRSA" => SignScheme::RsaPkcs1(Hash::Sha256),
            "SHA384withRSA" => SignScheme::RsaPkcs1(Hash::Sha384),
            "SHA512withRSA" => SignScheme::RsaPkcs1(Hash::Sha512),
            "SHA256withRSA/PSS" | "SHA256withRSAandMGF1" => SignScheme::RsaPss(Hash::Sha256),
            "SHA384withRSA/PSS" | "SHA384withRSAandMGF1" => SignScheme::RsaPss(Hash::Sha384),
            "SHA512withRSA/PSS" | "SHA512withRSAandMGF1" => SignScheme::RsaPss(Hash::Sha512),
            other => {
                return Err(CseError::bad(format!(
                    "algorithm {:?} is not supported: SHA256withRSA, SHA384withRSA, SHA512withRSA, or their /PSS forms",
                    other.chars().take(40).collect::<String>()
                )))
            }
        };
        if let (SignScheme::RsaPss(h), Some(salt)) = (scheme, body.get("rsa_pss_salt_length")) {
            if salt.as_u64() != Some(keyhold_crypto::asym::hash_len(h) as u64) {
                return Err(CseError::bad(
                    "rsa_pss_salt_length must be the hash's length",
                ));
            }
        }
        PrivateOp::Sign {
            scheme,
            digest: b64("digest", body.get("digest"), 128)?,
        }
    } else {
        let alg = match alg {
            "RSA/ECB/PKCS1Padding" => PkDecrypt::Pkcs1,
            "RSA/ECB/OAEPwithSHA-1andMGF1Padding" => PkDecrypt::Oaep(Hash::Sha1),
            "RSA/ECB/OAEPwithSHA-256andMGF1Padding" => PkDecrypt::Oaep(Hash::Sha256),
            "RSA/ECB/OAEPwithSHA-512andMGF1Padding" => PkDecrypt::Oaep(Hash::Sha512),
            other => {
                return Err(CseError::bad(format!(
                    "algorithm {:?} is not supported: RSA/ECB/PKCS1Padding or RSA/ECB/OAEPwithSHA-1|256|512andMGF1Padding",
                    other.chars().take(40).collect::<String>()
                )))
            }
        };
        let label = match body.get("rsa_oaep_label").and_then(Value::as_str) {
            Some(l) if !l.is_empty() => {
                Some(b64("rsa_oaep_label", body.get("rsa_oaep_label"), 1024)?)
            }
            _ => None,
        };
        PrivateOp::Decrypt {
            alg,
            ciphertext: b64(
                "encrypted_data_encryption_key",
                body.get("encrypted_data_encryption_key"),
                1024,
            )?,
            label,
        }
    };
    Ok(Job::Private(PrivateJob {
        wrapped,
        spki_hash,
        op,
    }))
}

enum JobKind {
    Plain,
    WithHash,
}

/// The perimeter: the user's address domain must be allowed.
fn check_perimeter(b: &CseBinding, email: &str) -> Result<(), CseError> {
    if b.allowed_domains.is_empty() {
        return Ok(());
    }
    let domain = email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
    if domain.is_some_and(|d| b.allowed_domains.iter().any(|a| a.eq_ignore_ascii_case(&d))) {
        Ok(())
    } else {
        Err(CseError::forbidden(format!(
            "{email} is outside this KACLS's perimeter"
        )))
    }
}

/// A reason as it goes into the record: printable, at most 200 characters.
fn sanitize(reason: &str) -> String {
    reason
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

async fn read_body<B>(body: B, c: &CseConfig) -> Result<Bytes, CseError>
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
        Ok(Err(_)) => Err(CseError::bad(format!(
            "the body is larger than {} bytes or could not be read",
            c.max_body_bytes
        ))),
        Err(_) => Err(CseError::new(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_with_or_without_padding_within_limits() {
        assert_eq!(
            b64("k", Some(&Value::from("AQAB")), 8).unwrap(),
            vec![1, 0, 1]
        );
        assert_eq!(b64("k", Some(&Value::from("AQA")), 8).unwrap(), vec![1, 0]);
        assert_eq!(b64("k", Some(&Value::from("AQA=")), 8).unwrap(), vec![1, 0]);
        assert!(b64("k", Some(&Value::from("%%")), 8).is_err());
        assert!(b64("k", Some(&Value::from("")), 8).is_err());
        assert!(b64("k", Some(&Value::from(STANDARD.encode([0u8; 129]))), 128).is_err());
        assert!(b64("k", None, 8).is_err());
    }

    #[test]
    fn reasons_are_printable_and_short() {
        assert_eq!(
            sanitize("{client:'drive' op:'update'}"),
            "{client:'drive' op:'update'}"
        );
        assert_eq!(sanitize("a\nb\u{7}c"), "abc");
        assert_eq!(sanitize(&"x".repeat(500)).len(), 200);
    }
}
