//! The request pipeline: route (path prefix → key store) → the client
//! certificate → `api-version` → body → one key use → answer, with one
//! audit record per request.

use crate::error::{Code, EkmError};
use crate::route::{self, Op, API_VERSION};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use keyhold_core::{KeyType, Status, StorePrefix};
use keyhold_crypto::asym::Hash;
use keyhold_service::policy::PolicyRequest;
use keyhold_service::{
    AzureEkmBinding, KeyService, KeyUse, NotRun, Placement, Touches, UseFacts, WrapAlg,
};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// Settings of the Azure EKM front-end.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// Largest request body (a wrapped RSA-4096 value is 683 characters).
    pub max_body_bytes: usize,
    /// The whole body must arrive within this.
    pub body_deadline: Duration,
    /// Longest a request waits for the HSM or the database (Managed HSM
    /// gives up after 250 ms); past it, 408 RequestTimeout.
    pub hsm_timeout: Duration,
    /// Refusals of clients that never authenticated recorded a second.
    pub unauthenticated_records_per_sec: u32,
    pub proxy_vendor: String,
    pub proxy_name: String,
}

impl Default for AzureConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            body_deadline: Duration::from_secs(10),
            hsm_timeout: Duration::from_millis(200),
            unauthenticated_records_per_sec: 10,
            proxy_vendor: "Keyhold".into(),
            proxy_name: format!("Keyhold EKM Proxy {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Largest key accepted for wrapping (AES key wrap takes any size; the
/// keys Azure wraps are 32 bytes or an RSA private key of a few KiB).
pub const MAX_WRAP_INPUT: usize = 8 * 1024;

/// Checks a client certificate chain against a key store's binding; the
/// server implements it (it knows X.509 and the TLS provider).
pub trait ClientCheck: Send + Sync {
    /// The leaf's subject common name when one of the binding's CAs issued
    /// the chain (now valid) and that name is the binding's; else why not
    /// (for the server's log, not the caller).
    fn check(&self, binding: &AzureEkmBinding, chain: &[Vec<u8>]) -> Result<String, String>;
}

/// One connection's client certificate chain (DER, leaf first) as the TLS
/// handshake received it, and the last key store it was checked for.
#[derive(Debug, Default)]
pub struct Peer {
    chain: Vec<Vec<u8>>,
    /// (bindings as read, store, common name): still good while the
    /// service's bindings are the same ones (held, so that their address
    /// cannot be reused by newer ones).
    checked: parking_lot::Mutex<Option<(keyhold_service::StoreApis, StorePrefix, String)>>,
}

impl Peer {
    pub fn new(chain: Vec<Vec<u8>>) -> Self {
        Self {
            chain,
            checked: Default::default(),
        }
    }
}

/// The Azure EKM proxy API over a key service.
pub struct AzureApi {
    service: Arc<KeyService>,
    config: AzureConfig,
    check: Arc<dyn ClientCheck>,
    refusals: parking_lot::Mutex<keyhold_audit::RefusalBudget>,
}

/// `request_context`, in every body: logged, never trusted.
#[derive(Debug, Default, Deserialize)]
struct RequestContext {
    #[serde(default)]
    request_id: Option<String>,
    correlation_id: String,
    pool_name: String,
}

#[derive(Deserialize)]
struct Envelope {
    request_context: RequestContext,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

/// What answering one request produced, for the answer and its record.
struct Handled {
    result: Result<HttpResponse, EkmError>,
    facts: UseFacts,
    /// The client certificate's common name, once it was accepted.
    caller: Option<String>,
    context: Option<RequestContext>,
    /// `alg` and the input's size, for the record.
    detail: Option<String>,
}

impl Handled {
    fn refused(e: EkmError) -> Self {
        Self {
            result: Err(e),
            facts: UseFacts::default(),
            caller: None,
            context: None,
            detail: None,
        }
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn ok_json(v: &serde_json::Value) -> Result<HttpResponse, EkmError> {
    let body = serde_json::to_vec(v)
        .map_err(|_| EkmError::new(Code::InternalServerError, "cannot encode the answer"))?;
    Ok(json_response(StatusCode::OK, body))
}

fn error_response(e: &EkmError) -> HttpResponse {
    let mut r = json_response(e.code.status(), e.body());
    if e.code == Code::MethodNotAllowed {
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
    }
    r
}

/// Decodes a base64url value without padding (RFC 4648 §5, as JOSE);
/// padding, `+`/`/` or stray bits are refused.
fn b64url(field: &str, v: Option<&str>) -> Result<Vec<u8>, EkmError> {
    let v = v.ok_or_else(|| EkmError::bad(format!("{field} is required")))?;
    B64URL.decode(v).map_err(|_| {
        EkmError::bad(format!(
            "{field} is not base64url without padding (RFC 4648 section 5)"
        ))
    })
}

/// The unsigned big-endian form, without leading zero bytes.
fn unsigned(v: &[u8]) -> &[u8] {
    let i = v
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(v.len().saturating_sub(1));
    &v[i..]
}

fn parse_alg(alg: Option<&str>) -> Result<WrapAlg, EkmError> {
    match alg {
        Some("A256KW") => Ok(WrapAlg::AesKw),
        Some("A256KWP") => Ok(WrapAlg::AesKwp),
        Some("RSA-OAEP-256") => Ok(WrapAlg::RsaOaep(Hash::Sha256)),
        Some("RSA-OAEP") => Ok(WrapAlg::RsaOaep(Hash::Sha1)),
        Some(other) => Err(EkmError::new(
            Code::UnsupportedAlgorithm,
            format!(
                "alg {:?} is not supported: use A256KW or A256KWP with an AES key, RSA-OAEP-256 or RSA-OAEP with an RSA key",
                route::clip(other)
            ),
        )),
        None => Err(EkmError::bad("alg is required")),
    }
}

/// The body as this operation takes it; serde's words are not echoed
/// (they may quote what was sent).
fn parse_body(body: &[u8]) -> Result<Envelope, EkmError> {
    serde_json::from_slice(body).map_err(|e| {
        let s = e.to_string();
        EkmError::bad(if let Some(rest) = s.strip_prefix("missing field ") {
            format!(
                "missing field {}",
                rest.split(' ').next().unwrap_or_default()
            )
        } else {
            format!(
                "the body is not the JSON object this operation takes (line {}, column {})",
                e.line(),
                e.column()
            )
        })
    })
}

impl AzureApi {
    pub fn new(service: Arc<KeyService>, config: AzureConfig, check: Arc<dyn ClientCheck>) -> Self {
        Self {
            service,
            refusals: parking_lot::Mutex::new(keyhold_audit::RefusalBudget::new(
                config.unauthenticated_records_per_sec,
            )),
            config,
            check,
        }
    }

    /// Serves one HTTP request on a connection whose client certificate
    /// chain is `peer` (`None`: the client sent none).
    pub async fn handle<B>(
        self: &Arc<Self>,
        req: Request<B>,
        peer: Option<Arc<Peer>>,
    ) -> HttpResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let apis = self.service.store_apis();
        let Some(route) = route::parse(parts.uri.path(), &apis) else {
            let e = EkmError::new(
                Code::NotFound,
                "no key store serves the Azure EKM API at this path",
            );
            return self.record(None, Handled::refused(e), started).await;
        };
        if parts.method != Method::POST {
            let e = EkmError::new(Code::MethodNotAllowed, "every EKM operation is a POST");
            return self
                .record(Some(&route), Handled::refused(e), started)
                .await;
        }
        // The caller first: nothing else is said to a stranger.
        let caller = match self.authenticate(&route, &apis, peer.as_deref()) {
            Ok(cn) => cn,
            Err(e) => {
                return self
                    .record(Some(&route), Handled::refused(e), started)
                    .await
            }
        };
        let mut handled = match (&route.target, route::check_api_version(parts.uri.query())) {
            (Err(e), _) => Handled::refused(e.clone()),
            (Ok(_), Err(e)) => Handled::refused(e),
            (Ok((op, key)), Ok(())) => match self.read_body(body).await {
                Err(e) => {
                    let h = Handled::refused(e);
                    let mut r = self
                        .record_with(Some(&route), h, Some(&caller), started)
                        .await;
                    // The rest of the body must not be taken for a request.
                    r.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                    return r;
                }
                Ok(body) => self.run(route.store, *op, key, body).await,
            },
        };
        handled.caller = Some(caller);
        self.record(Some(&route), handled, started).await
    }

    /// The client certificate's common name, when this key store allows it.
    fn authenticate(
        &self,
        route: &route::Route<'_>,
        apis: &keyhold_service::StoreApis,
        peer: Option<&Peer>,
    ) -> Result<String, EkmError> {
        let unauthorized = || {
            EkmError::new(
                Code::Unauthorized,
                "a client certificate that this key store allows is required",
            )
        };
        let peer = peer
            .filter(|p| !p.chain.is_empty())
            .ok_or_else(unauthorized)?;
        if let Some((at, store, cn)) = &*peer.checked.lock() {
            if Arc::ptr_eq(at, apis) && store == route.store {
                return Ok(cn.clone());
            }
        }
        match self.check.check(route.binding, &peer.chain) {
            Ok(cn) => {
                *peer.checked.lock() = Some((apis.clone(), route.store.clone(), cn.clone()));
                Ok(cn)
            }
            Err(why) => {
                tracing::info!(store = %route.store, why, "Azure EKM client certificate refused");
                Err(unauthorized())
            }
        }
    }

    async fn read_body<B>(&self, body: B) -> Result<Bytes, EkmError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let max = self.config.max_body_bytes;
        let read = Limited::new(body, max).collect();
        match tokio::time::timeout(self.config.body_deadline, read).await {
            Ok(Ok(c)) => Ok(c.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(EkmError::bad(
                format!("the request body is larger than {max} bytes"),
            )),
            Ok(Err(_)) => Err(EkmError::bad("could not read the request body")),
            Err(_) => Err(EkmError::new(
                Code::RequestTimeout,
                "the request body did not arrive in time",
            )),
        }
    }

    /// Parses the body and runs the operation (on a blocking thread when
    /// the key service says it may wait).
    async fn run(self: &Arc<Self>, store: &StorePrefix, op: Op, key: &str, body: Bytes) -> Handled {
        let env = match parse_body(&body) {
            Ok(e) => e,
            Err(e) => return Handled::refused(e),
        };
        if op == Op::Info {
            let mut h = self.info();
            h.context = Some(env.request_context);
            return h;
        }
        let placement = self.service.placement(&Touches {
            key: Some((store, key)),
            crypt: op != Op::Metadata,
            ..Touches::default()
        });
        match placement {
            Placement::Inline => self.key_op(store, op, key, env),
            Placement::Blocking => {
                let api = Arc::clone(self);
                let (store, key) = (store.clone(), key.to_owned());
                match self
                    .service
                    .run_blocking(self.config.hsm_timeout, move || {
                        api.key_op(&store, op, &key, env)
                    })
                    .await
                {
                    Ok(h) => h,
                    Err(NotRun::TimedOut(t)) => Handled::refused(EkmError::new(
                        Code::RequestTimeout,
                        format!(
                            "the HSM or the database did not answer within {} ms; retry",
                            t.as_millis()
                        ),
                    )),
                    Err(NotRun::Failed) => Handled::refused(EkmError::new(
                        Code::InternalServerError,
                        "internal error in the key manager",
                    )),
                }
            }
        }
    }

    fn info(&self) -> Handled {
        let result = ok_json(&serde_json::json!({
            "api_version": API_VERSION,
            "proxy_vendor": self.config.proxy_vendor,
            "proxy_name": self.config.proxy_name,
            "ekm_vendor": self.config.proxy_vendor,
            "ekm_product": if self.service.root_has_hsm() {
                "Keyhold key service, PKCS#11 HSM root of trust"
            } else {
                "Keyhold key service, software root of trust"
            },
        }));
        Handled {
            result,
            facts: UseFacts::default(),
            caller: None,
            context: None,
            detail: None,
        }
    }

    /// metadata, wrapkey or unwrapkey with one key.
    fn key_op(&self, store: &StorePrefix, op: Op, key: &str, env: Envelope) -> Handled {
        let _inflight = self.service.request_guard();
        let u = KeyUse {
            store,
            key,
            context: PolicyRequest {
                kms_operation: Some(op.name()),
                ..PolicyRequest::default()
            },
        };
        let mut detail = None;
        let (result, facts) = match op {
            Op::Metadata => {
                let used = self.service.describe_key(&u);
                (
                    used.result
                        .map_err(EkmError::from)
                        .and_then(|d| metadata(key, d)),
                    used.facts,
                )
            }
            Op::WrapKey | Op::UnwrapKey => {
                let input = parse_alg(env.alg.as_deref())
                    .and_then(|alg| Ok((alg, b64url("value", env.value.as_deref())?)));
                match input {
                    Err(e) => (Err(e), UseFacts::default()),
                    Ok((alg, value)) => {
                        detail = Some(format!("alg {}, {} bytes in", alg.name(), value.len()));
                        self.wrap_or_unwrap(&u, op, alg, &value)
                    }
                }
            }
            Op::Info => unreachable!("info is answered before"),
        };
        Handled {
            result,
            facts,
            caller: None,
            context: Some(env.request_context),
            detail,
        }
    }

    fn wrap_or_unwrap(
        &self,
        u: &KeyUse<'_>,
        op: Op,
        alg: WrapAlg,
        value: &[u8],
    ) -> (Result<HttpResponse, EkmError>, UseFacts) {
        if let Err(e) = check_size(op, alg, value) {
            return (Err(e), UseFacts::default());
        }
        let answer = |v: &[u8]| ok_json(&serde_json::json!({ "value": B64URL.encode(v) }));
        if op == Op::WrapKey {
            let used = self.service.wrap_key(u, alg, value);
            let r = used.result.map_err(EkmError::from);
            (r.and_then(|w| answer(&w.wrapped)), used.facts)
        } else {
            let used = self.service.unwrap_key(u, alg, value);
            let r = used.result.map_err(EkmError::from);
            (r.and_then(|k| answer(k.key.expose())), used.facts)
        }
    }

    /// Writes the request's audit record and returns the answer (500 when
    /// the record cannot be written: no key use goes unrecorded).
    async fn record(
        &self,
        route: Option<&route::Route<'_>>,
        h: Handled,
        started: Instant,
    ) -> HttpResponse {
        let caller = h.caller.clone();
        self.record_with(route, h, caller.as_deref(), started).await
    }

    async fn record_with(
        &self,
        route: Option<&route::Route<'_>>,
        h: Handled,
        caller: Option<&str>,
        started: Instant,
    ) -> HttpResponse {
        let (op, key) = match route.map(|r| &r.target) {
            Some(Ok((op, key))) => (op.name(), Some(*key).filter(|k| !k.is_empty())),
            _ => ("-", None),
        };
        let (result, status) = match &h.result {
            Ok(_) => ("OK", 200),
            Err(e) => (e.code.as_str(), e.code.status().as_u16()),
        };
        tracing::debug!(
            target: "keyhold::audit",
            operation = op,
            store = route.map(|r| r.store.as_str()).unwrap_or("-"),
            key = key.unwrap_or(""),
            caller = caller.unwrap_or(""),
            status,
            result,
            latency_us = started.elapsed().as_micros() as u64,
            "azure ekm request"
        );
        let log = self.service.audit();
        let answer = |r: Result<HttpResponse, EkmError>| match r {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        if !log.is_attached() {
            return answer(h.result);
        }
        let mut left_out = None;
        if caller.is_none() && h.result.is_err() {
            match self.refusals.lock().admit(Instant::now()) {
                None => return answer(h.result),
                Some(0) => {}
                Some(n) => left_out = Some(format!(
                    "{n} more refusals of unauthenticated requests before this one were not recorded (over {}/s)",
                    self.config.unauthenticated_records_per_sec
                )),
            }
        }
        let context = h.context.as_ref().map(|c| {
            let mut s = format!(
                "pool_name={} correlation_id={}",
                c.pool_name, c.correlation_id
            );
            if let Some(r) = &c.request_id {
                s.push_str(" request_id=");
                s.push_str(r);
            }
            s
        });
        let message = h.result.as_ref().err().map(|e| e.message.as_str());
        let detail = [
            left_out.as_deref(),
            h.facts.detail(),
            h.detail.as_deref(),
            message,
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
        let ev = keyhold_audit::Event {
            frontend: "azure-ekm",
            operation: op,
            result,
            status: Some(status),
            store: route.map(|r| r.store.as_str()),
            key,
            key_version: h.facts.key_version,
            latency_us: Some(started.elapsed().as_micros() as u64),
            actor: caller,
            request_id: h
                .context
                .as_ref()
                .map(|c| c.request_id.as_deref().unwrap_or(&c.correlation_id)),
            context: context.as_deref(),
            rule: h.facts.rule.as_deref(),
            detail: Some(detail.as_str()).filter(|d| !d.is_empty()),
            ..Default::default()
        };
        match log.record(&ev).await {
            Ok(()) => answer(h.result),
            Err(why) => {
                tracing::error!(error = %why, "audit record not written: refusing the request");
                error_response(&EkmError::new(
                    Code::InternalServerError,
                    "the audit log cannot be written: key use refused",
                ))
            }
        }
    }
}

/// The sizes each algorithm takes.
fn check_size(op: Op, alg: WrapAlg, v: &[u8]) -> Result<(), EkmError> {
    let n = v.len();
    let why = match (op, alg) {
        (_, _) if n > MAX_WRAP_INPUT + 16 => Some(format!("at most {MAX_WRAP_INPUT} bytes")),
        (Op::WrapKey, WrapAlg::AesKw) if n < 16 || !n.is_multiple_of(8) => {
            Some("A256KW wraps 16 bytes or more, a multiple of 8".to_owned())
        }
        (Op::WrapKey, WrapAlg::AesKwp) if n == 0 => Some("A256KWP wraps 1 byte or more".to_owned()),
        (Op::UnwrapKey, WrapAlg::AesKw) if n < 24 || !n.is_multiple_of(8) => {
            Some("an A256KW value is 24 bytes or more, a multiple of 8".to_owned())
        }
        (Op::UnwrapKey, WrapAlg::AesKwp) if n < 16 || !n.is_multiple_of(8) => {
            Some("an A256KWP value is 16 bytes or more, a multiple of 8".to_owned())
        }
        (Op::UnwrapKey, WrapAlg::RsaOaep(_)) if ![256, 384, 512].contains(&n) => Some(
            "an RSA-OAEP value is as long as the key's modulus (256, 384 or 512 bytes)".to_owned(),
        ),
        _ => None,
    };
    match why {
        Some(w) => Err(EkmError::bad(format!("value is {n} bytes: {w}"))),
        None => Ok(()),
    }
}

/// The metadata answer: AES-256 as `oct`, RSA with its modulus and
/// exponent; other key types cannot wrap.
fn metadata(key: &str, d: keyhold_service::KeyDescription) -> Result<HttpResponse, EkmError> {
    if d.status != Status::Enabled {
        return Err(EkmError::new(
            Code::KeyDisabled,
            format!("key {key} is disabled or cannot be used now"),
        ));
    }
    let ops = serde_json::json!(["wrapKey", "unwrapKey"]);
    match d.key_type {
        KeyType::Aes256 => ok_json(&serde_json::json!({
            "key_type": "oct", "key_size": 256, "key_ops": ops,
        })),
        t if t.is_rsa() => {
            let spki = d.public_spki.ok_or_else(|| {
                EkmError::new(
                    Code::KeyDisabled,
                    format!("key {key} has no usable version"),
                )
            })?;
            let (n, e) = keyhold_crypto::asym::rsa_public_parts(&spki).map_err(|_| {
                EkmError::new(Code::InternalServerError, "cannot read the public key")
            })?;
            ok_json(&serde_json::json!({
                "key_type": "RSA",
                "key_size": unsigned(&n).len() * 8,
                "key_ops": ops,
                "n": B64URL.encode(unsigned(&n)),
                "e": B64URL.encode(unsigned(&e)),
            }))
        }
        t => Err(EkmError::new(
            Code::OperationNotAllowed,
            format!(
                "key {key} is a {} key: Azure wraps with AES-256 or RSA keys",
                t.short()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_is_strict() {
        assert_eq!(b64url("v", Some("AQAB")).unwrap(), vec![1, 0, 1]);
        assert!(b64url("v", Some("AQA=")).is_err());
        assert!(b64url("v", Some("a+/b")).is_err());
        assert!(b64url("v", Some("AQ")).is_ok());
        assert!(b64url("v", Some("AR")).is_err(), "stray bits");
        assert!(b64url("v", None).is_err());
    }

    #[test]
    fn sizes_follow_the_algorithms() {
        let kw = WrapAlg::AesKw;
        assert!(check_size(Op::WrapKey, kw, &[0; 32]).is_ok());
        assert!(check_size(Op::WrapKey, kw, &[0; 12]).is_err());
        assert!(check_size(Op::WrapKey, kw, &[0; 20]).is_err());
        assert!(check_size(Op::UnwrapKey, kw, &[0; 40]).is_ok());
        assert!(check_size(Op::UnwrapKey, kw, &[0; 16]).is_err());
        assert!(check_size(Op::WrapKey, WrapAlg::AesKwp, &[0; 1]).is_ok());
        assert!(check_size(Op::WrapKey, WrapAlg::AesKwp, &[]).is_err());
        let oaep = WrapAlg::RsaOaep(Hash::Sha256);
        assert!(check_size(Op::UnwrapKey, oaep, &[0; 256]).is_ok());
        assert!(check_size(Op::UnwrapKey, oaep, &[0; 255]).is_err());
        assert!(check_size(Op::WrapKey, kw, &[0; MAX_WRAP_INPUT + 24]).is_err());
    }

    #[test]
    fn bodies_need_a_request_context_and_are_not_echoed() {
        let e = parse_body(br#"{"alg":"A256KW"}"#).err().unwrap();
        assert_eq!(e.message, "missing field `request_context`");
        let e = parse_body(
            br#"{"request_context":{"correlation_id":"c","pool_name":"p"},"value":[1,2,3]}"#,
        )
        .err()
        .unwrap();
        assert!(e.message.starts_with("the body is not"), "{}", e.message);
        assert!(!e.message.contains("sequence") && !e.message.contains("[1"));
        let ok = parse_body(br#"{"request_context":{"correlation_id":"c","pool_name":"p","extra":1},"alg":"A256KW","value":"AA","more":true}"#).unwrap();
        assert_eq!(ok.request_context.pool_name, "p");
    }
}
