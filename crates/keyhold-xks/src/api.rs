//! The request pipeline: route → body limits → SigV4 → operation → answer,
//! with one audit log line per request.

use crate::error::{ErrorName, XksError};
use crate::route::{self, Op};
use crate::sigv4::{self, AuthError, RequestParts, SigningKeys};
use crate::wire::{self, RequestMetadata};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use keyhold_core::StorePrefix;
use keyhold_crypto::HmacKey;
use keyhold_service::{KeyService, NotRun, Placement, Touches, UseFacts};
use std::sync::Arc;
use std::time::Instant;

/// Settings of the XKS front-end.
#[derive(Debug, Clone)]
pub struct XksConfig {
    /// How request bodies are read: the largest accepted (the spec's
    /// minimums, 4300 bytes of plaintext, 8192 of AAD and 2048-character
    /// ARNs, need about 20 KiB), the deadline, and the memory they may hold.
    pub body: crate::body::BodyLimits,
    /// Largest plaintext/ciphertext accepted; beyond it UnsupportedOperation.
    pub max_data_bytes: usize,
    /// Largest AAD accepted (at most 65535: its length is a u16 in the AAD).
    pub max_aad_bytes: usize,
    pub vendor: String,
    pub model: String,
    /// Number of proxy nodes reported in GetHealthStatus.
    pub fleet_size: u32,
    /// The live node count of storage shared by several nodes, kept
    /// current by the node heartbeat; reported instead of `fleet_size`.
    pub live_fleet: Option<std::sync::Arc<std::sync::atomic::AtomicU32>>,
    /// Optional request quota per key store (requests/s, burst of one
    /// second); over it, ThrottlingException. AWS's default is 1800.
    pub store_quota_rps: Option<u32>,
    /// Refusals of requests that never authenticated are recorded in the
    /// audit log at most this many times a second; the next record says
    /// how many were left out.
    pub unauthenticated_records_per_sec: u32,
    /// Longest a request waits for the HSM (a cache miss that unwraps, or
    /// AES-GCM in the HSM); past it, DependencyTimeoutException. The
    /// PKCS#11 call itself cannot be cancelled: it finishes on its blocking
    /// thread and returns its session to the pool.
    pub hsm_timeout: std::time::Duration,
}

impl Default for XksConfig {
    fn default() -> Self {
        Self {
            body: crate::body::BodyLimits::default(),
            max_data_bytes: 64 * 1024,
            max_aad_bytes: 65535,
            vendor: "Keyhold".into(),
            model: format!("Keyhold XKS Proxy {}", env!("CARGO_PKG_VERSION")),
            fleet_size: 1,
            live_fleet: None,
            store_quota_rps: None,
            unauthenticated_records_per_sec: 10,
            hsm_timeout: std::time::Duration::from_secs(2),
        }
    }
}

/// The XKS API over a key service.
pub struct XksApi {
    pub(crate) service: Arc<KeyService>,
    pub(crate) config: XksConfig,
    /// Request counts and latencies for /metrics.
    pub metrics: crate::metrics::RequestMetrics,
    quotas: parking_lot::Mutex<std::collections::HashMap<String, TokenBucket>>,
    refusals: parking_lot::Mutex<keyhold_audit::RefusalBudget>,
}

/// A token bucket: `rate` tokens a second, at most `rate` banked.
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn take(&mut self, rate: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// The key store and key of one operation.
pub(crate) struct KeyRef<'a> {
    pub store: &'a StorePrefix,
    pub key_id: &'a str,
}

/// What an operation produced: its answer, the request metadata it saw
/// (so the audit record names it even on failure) and the key service's
/// facts for the audit record.
pub(crate) struct OpAnswer {
    pub meta: Option<RequestMetadata>,
    pub result: Result<HttpResponse, XksError>,
    pub facts: UseFacts,
}

impl OpAnswer {
    pub(crate) fn refused(meta: Option<RequestMetadata>, e: XksError) -> Self {
        Self {
            meta,
            result: Err(e),
            facts: UseFacts::default(),
        }
    }
}

/// What answering one request produced, for the response, the metrics and
/// the audit record.
struct Handled {
    op: OpAnswer,
    /// The access key id that signed the request, once verified.
    access_key_id: Option<String>,
    /// The request named a configured key store (only those become metric
    /// labels: junk paths must not create series).
    store_known: bool,
}

impl Handled {
    fn refused(e: XksError) -> Self {
        Self {
            op: OpAnswer::refused(None, e),
            access_key_id: None,
            store_known: false,
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

pub(crate) fn ok_json<T: serde::Serialize>(v: &T) -> Result<HttpResponse, XksError> {
    let body = serde_json::to_vec(v)
        .map_err(|_| XksError::new(ErrorName::InternalException, "cannot encode response"))?;
    Ok(json_response(StatusCode::OK, body))
}

fn error_response(e: &XksError) -> HttpResponse {
    json_response(e.status(), e.body())
}

struct StoreKeys<'a> {
    service: &'a KeyService,
    store: &'a StorePrefix,
}

impl SigningKeys for StoreKeys<'_> {
    fn signing_key(
        &self,
        akid: &str,
        date: &str,
        region: &str,
        service: &str,
    ) -> Option<Arc<HmacKey>> {
        let entry = self.service.credential(akid).ok()??;
        if &entry.store != self.store {
            return None;
        }
        let scope = format!("{date}/{region}/{service}");
        let mut cache = entry.signing_keys.lock();
        if let Some((_, k)) = cache.iter().find(|(s, _)| *s == scope) {
            return Some(k.clone());
        }
        let k = Arc::new(sigv4::derive_signing_key(
            entry.secret.expose(),
            date,
            region,
            service,
        ));
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push((scope, k.clone()));
        Some(k)
    }
}

fn unix_now() -> i64 {
    keyhold_core::now()
}

impl XksApi {
    pub fn new(service: Arc<KeyService>, config: XksConfig) -> Self {
        Self {
            service,
            metrics: crate::metrics::RequestMetrics::default(),
            quotas: parking_lot::Mutex::new(std::collections::HashMap::new()),
            refusals: parking_lot::Mutex::new(keyhold_audit::RefusalBudget::new(
                config.unauthenticated_records_per_sec,
            )),
            config,
        }
    }

    /// The state of the audit log the key service records into.
    pub fn audit_status(&self) -> Option<keyhold_audit::AuditStatus> {
        self.service.audit().status()
    }

    /// Charges one request to a key store's quota, if one is configured.
    fn within_quota(&self, prefix: &str) -> bool {
        let Some(rate) = self.config.store_quota_rps else {
            return true;
        };
        let rate = f64::from(rate.max(1));
        let now = Instant::now();
        let mut q = self.quotas.lock();
        if let Some(b) = q.get_mut(prefix) {
            return b.take(rate, now);
        }
        let mut b = TokenBucket {
            tokens: rate,
            last: now,
        };
        let ok = b.take(rate, now);
        q.insert(prefix.to_owned(), b);
        ok
    }

    pub fn service(&self) -> &Arc<KeyService> {
        &self.service
    }

    /// Serves one HTTP request (any path: non-API paths get their answer too).
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> HttpResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        // Read the (bounded) body before answering anything: an HTTP/2 peer
        // whose upload is cut short by an early answer sees a reset stream
        // instead of our error.
        let (body, unread) = match self.read_body(&parts, body).await {
            Ok((b, share)) => (Ok((b, share)), false),
            Err((e, unread)) => (Err(e), unread),
        };
        let mut r = self.answer(&parts, body, started).await;
        // What is left of a body that was not read must not be taken for
        // the next request: HTTP/1.1 closes (HTTP/2 resets the stream).
        if unread && parts.version < hyper::Version::HTTP_2 {
            r.headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }

    /// The answer to a request whose body was read (or refused).
    async fn answer(
        self: &Arc<Self>,
        parts: &hyper::http::request::Parts,
        body: Result<(Bytes, crate::body::PoolShare), XksError>,
        started: Instant,
    ) -> HttpResponse {
        // The body's pool share is given back once the request is answered.
        let (body, _share) = match body {
            Ok((b, s)) => (Ok(b), Some(s)),
            Err(e) => (Err(e), None),
        };
        let path = parts.uri.path();
        if path == "/ping" {
            return if matches!(parts.method, Method::GET | Method::HEAD) {
                let mut r = Response::new(Full::new(Bytes::from_static(b"OK\n")));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                r
            } else {
                method_not_allowed("GET")
            };
        }
        let Some(route) = route::parse(path) else {
            let e = XksError::new(
                ErrorName::InvalidUriPathException,
                format!("no XKS API at this path ({} characters)", path.len()),
            );
            return self.record(None, Handled::refused(e), started).await;
        };
        if parts.method != Method::POST {
            return method_not_allowed("POST");
        }
        let handled = match body {
            Err(e) => Handled::refused(e),
            Ok(body) => match self.placement(parts, &route, &body) {
                Placement::Inline => self.handle_api(parts, &body, &route),
                Placement::Blocking => self.handle_api_blocking(parts, body).await,
            },
        };
        self.record(Some(&route), handled, started).await
    }

    /// Writes the request's record to the audit log and returns the answer,
    /// or InternalException when the record could not be written: no key
    /// use goes unrecorded.
    async fn record(
        &self,
        route: Option<&route::Route<'_>>,
        handled: Handled,
        started: Instant,
    ) -> HttpResponse {
        let Handled {
            op:
                OpAnswer {
                    meta,
                    result,
                    facts,
                },
            access_key_id,
            store_known,
        } = handled;
        let access_key_id = access_key_id.as_deref();
        trace_request(meta.as_ref(), route, access_key_id, &result, started);
        self.metrics.observe(
            route.map(|r| r.op.name()).unwrap_or("-"),
            route
                .filter(|_| store_known)
                .map(|r| r.prefix)
                .unwrap_or("-"),
            match &result {
                Ok(_) => "OK",
                Err(e) => e.name.as_str(),
            },
            started.elapsed().as_secs_f64(),
        );
        let log = self.service.audit();
        if !log.is_attached() {
            return match result {
                Ok(r) => r,
                Err(e) => error_response(&e),
            };
        }
        // Refusals of clients that never authenticated: a bounded number
        // a second goes into the log, and the next one counts the rest.
        let mut left_out = None;
        if access_key_id.is_none() {
            if let Err(e) = &result {
                match self.admit_refusal() {
                    None => return error_response(e),
                    Some(note) => left_out = note,
                }
            }
        }
        let m = meta.unwrap_or_default();
        let ev = audit_event(AuditFacts {
            route,
            meta: &m,
            facts: &facts,
            result: &result,
            started,
            access_key_id,
            left_out: left_out.as_deref(),
        });
        match log.record(&ev).await {
            Ok(()) => match result {
                Ok(r) => r,
                Err(e) => error_response(&e),
            },
            // Health uses no key: it answers, and says UNAVAILABLE (what
            // AWS KMS must learn when the disk is full).
            Err(why) if result.is_ok() && route.is_some_and(|r| r.op == route::Op::Health) => {
                tracing::error!(error = %why, "audit record not written: health answers UNAVAILABLE");
                self.health_answer(true)
                    .unwrap_or_else(|e| error_response(&e))
            }
            Err(why) => {
                tracing::error!(error = %why, "audit record not written: refusing the request");
                error_response(&XksError::new(
                    ErrorName::InternalException,
                    "the audit log cannot be written: key use refused",
                ))
            }
        }
    }

    /// Whether a refusal of a client that never authenticated goes into the
    /// log: a bounded number a second do (`None`: this one is left out),
    /// and the next one recorded notes how many were left out before it.
    fn admit_refusal(&self) -> Option<Option<String>> {
        match self.refusals.lock().admit(Instant::now())? {
            0 => Some(None),
            n => Some(Some(format!(
                "{n} more refusals of unauthenticated requests before this one were not recorded (over {}/s)",
                self.config.unauthenticated_records_per_sec
            ))),
        }
    }

    /// Where the key service says this request runs: inline unless a cache
    /// miss may block (an HSM, a database) or AES-GCM runs in an HSM.
    fn placement(
        &self,
        parts: &hyper::http::request::Parts,
        route: &route::Route<'_>,
        body: &[u8],
    ) -> Placement {
        // Without a root of trust or storage that blocks, nothing does:
        // the request is not looked into any further.
        if !self.service.miss_blocks() {
            return Placement::Inline;
        }
        let akid = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| sigv4::parse_authorization(v).ok())
            .map(|a| a.access_key_id);
        let store = keyhold_core::StorePrefix::parse(route.prefix)
            .ok()
            .filter(|p| p.as_str() == route.prefix);
        let version = (route.op == Op::Decrypt)
            .then(|| wire::parse_json::<wire::DecryptRequest>(body).ok())
            .flatten()
            .and_then(|r| r.ciphertext_metadata)
            .and_then(|m| wire::b64_optional("ciphertextMetadata", Some(&m)).ok())
            .and_then(|m| wire::ctm::parse(&m));
        self.service.placement(&Touches {
            credential: akid,
            key: store
                .as_ref()
                .filter(|_| route.op != Op::Health)
                .map(|p| (p, route.key_id)),
            crypt: matches!(route.op, Op::Encrypt | Op::Decrypt),
            version,
            health: route.op == Op::Health,
        })
    }

    /// Runs [`Self::handle_api`] on a blocking thread, waiting at most
    /// `hsm_timeout`.
    async fn handle_api_blocking(
        self: &Arc<Self>,
        parts: &hyper::http::request::Parts,
        body: Bytes,
    ) -> Handled {
        let (mut owned, ()) = Request::new(()).into_parts();
        owned.method = parts.method.clone();
        owned.uri = parts.uri.clone();
        owned.version = parts.version;
        owned.headers = parts.headers.clone();
        let api = Arc::clone(self);
        let job = move || match route::parse(owned.uri.path()) {
            Some(route) => api.handle_api(&owned, &body, &route),
            None => Handled::refused(XksError::new(ErrorName::InternalException, "route")),
        };
        match self
            .service
            .run_blocking(self.config.hsm_timeout, job)
            .await
        {
            Ok(done) => done,
            Err(NotRun::TimedOut(t)) => Handled::refused(hsm_timeout(t)),
            Err(NotRun::Failed) => Handled::refused(XksError::new(
                ErrorName::InternalException,
                "internal error in the key manager",
            )),
        }
    }

    /// Reads the request body within [`crate::body::BodyLimits`]; an error
    /// says whether part of the body is still unread on the connection.
    async fn read_body<B>(
        &self,
        parts: &hyper::http::request::Parts,
        body: B,
    ) -> Result<(Bytes, crate::body::PoolShare), (XksError, bool)>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use crate::body::BodyError;
        let limits = &self.config.body;
        let announced = match parts.headers.get(CONTENT_LENGTH) {
            None => None,
            Some(v) => match v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
                Some(n) => Some(n),
                None => {
                    let e = XksError::new(ErrorName::ValidationException, "bad Content-Length");
                    return Err((e, true));
                }
            },
        };
        crate::body::read(body, announced, limits)
            .await
            .map_err(|why| {
                let e = match why {
                    BodyError::TooLarge { .. } => {
                        let mut e = XksError::new(
                            ErrorName::ValidationException,
                            format!("request body is larger than {} bytes", limits.max_bytes),
                        );
                        e.status = Some(StatusCode::PAYLOAD_TOO_LARGE);
                        e
                    }
                    BodyError::Busy { .. } => XksError::new(
                        ErrorName::ThrottlingException,
                        "the proxy is receiving many large requests at once; retry",
                    ),
                    BodyError::Timeout => {
                        let mut e = XksError::new(
                            ErrorName::ValidationException,
                            format!(
                                "the request body did not arrive within {} s",
                                limits.deadline.as_secs_f64()
                            ),
                        );
                        e.status = Some(StatusCode::REQUEST_TIMEOUT);
                        e
                    }
                    BodyError::Broken => XksError::new(
                        ErrorName::ValidationException,
                        "could not read the request body",
                    ),
                };
                (e, why.unread())
            })
    }

    /// Authenticates and runs one API call.
    fn handle_api(
        &self,
        parts: &hyper::http::request::Parts,
        body: &[u8],
        route: &route::Route<'_>,
    ) -> Handled {
        // A change (a disable, a lockdown) is acknowledged only once no
        // request still runs on what the caches held before it.
        let _inflight = self.service.request_guard();
        let store = match self.service.store_by_prefix(route.prefix) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Handled::refused(XksError::new(
                    ErrorName::InvalidUriPathException,
                    "no key store is configured at this path prefix",
                ))
            }
            Err(e) => return Handled::refused(e.into()),
        };
        // A store bound to another cloud's API is not served here.
        if let Some((_, api)) = self
            .service
            .store_apis()
            .iter()
            .find(|(p, _)| *p == store.prefix)
        {
            return Handled::refused(XksError::new(
                ErrorName::InvalidUriPathException,
                format!("this key store serves the {} API, not XKS", api.name()),
            ));
        }
        let refused = |e: XksError, access_key_id: Option<String>| Handled {
            op: OpAnswer::refused(None, e),
            access_key_id,
            store_known: true,
        };

        // Authenticate before looking at the body.
        let rp = RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            authority: parts.uri.authority().map(|a| a.as_str()),
        };
        let keys = StoreKeys {
            service: &self.service,
            store: &store.prefix,
        };
        let access_key_id = match sigv4::verify(&rp, body, &keys, unix_now()) {
            Ok(id) => Some(id.to_owned()),
            Err(e) => return refused(auth_error(e), None),
        };

        if !self.within_quota(route.prefix) {
            let e = XksError::new(
                ErrorName::ThrottlingException,
                "request rate above this key store's quota",
            );
            return refused(e, access_key_id);
        }

        let ctx = KeyRef {
            store: &store.prefix,
            key_id: route.key_id,
        };
        let op = match route.op {
            Op::Health => self.health(&store, body),
            Op::Metadata => self.metadata(&ctx, body),
            Op::Encrypt => self.encrypt(&ctx, body),
            Op::Decrypt => self.decrypt(&ctx, body),
        };
        Handled {
            op,
            access_key_id,
            store_known: true,
        }
    }
}

fn hsm_timeout(t: std::time::Duration) -> XksError {
    XksError::new(
        ErrorName::DependencyTimeoutException,
        format!("the HSM did not answer within {} ms; retry", t.as_millis()),
    )
}

fn auth_error(e: AuthError) -> XksError {
    XksError::new(ErrorName::AuthenticationFailedException, e.to_string())
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut r = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(r#"{{"errorName":"MethodNotAllowed","errorMessage":"use {allow}"}}"#).into_bytes(),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// A debug line per request (the audit log proper is keyhold-audit): who,
/// what, when, the KMS request id, the outcome and the latency. Never any
/// plaintext, AAD or key material.
fn trace_request(
    meta: Option<&RequestMetadata>,
    route: Option<&route::Route<'_>>,
    access_key_id: Option<&str>,
    result: &Result<HttpResponse, XksError>,
    started: Instant,
) {
    let field = |f: fn(&RequestMetadata) -> &Option<String>| {
        meta.and_then(|m| f(m).as_deref()).unwrap_or("")
    };
    let (status, error_name, error_message) = match result {
        Ok(_) => (200u16, "", ""),
        Err(e) => (e.status().as_u16(), e.name.as_str(), e.message.as_str()),
    };
    // The tamper-evident audit log holds the record; this line is for
    // debugging (KEYHOLD_LOG=keyhold::audit=debug).
    tracing::debug!(
        target: "keyhold::audit",
        operation = route.map(|r| r.op.name()).unwrap_or("-"),
        store = route.map(|r| r.prefix).unwrap_or("-"),
        key = route.map(|r| r.key_id).unwrap_or(""),
        access_key_id = access_key_id.unwrap_or(""),
        kms_request_id = field(|m| &m.kms_request_id),
        kms_operation = field(|m| &m.kms_operation),
        principal = field(|m| &m.aws_principal_arn),
        kms_key_arn = field(|m| &m.kms_key_arn),
        source_vpc = field(|m| &m.aws_source_vpc),
        source_vpce = field(|m| &m.aws_source_vpce),
        via_service = field(|m| &m.kms_via_service),
        status,
        error = error_name,
        error_message,
        latency_us = started.elapsed().as_micros() as u64,
        "xks request"
    );
}

/// What an XKS request's audit record is made of.
struct AuditFacts<'a> {
    route: Option<&'a route::Route<'a>>,
    meta: &'a RequestMetadata,
    facts: &'a UseFacts,
    result: &'a Result<HttpResponse, XksError>,
    started: Instant,
    access_key_id: Option<&'a str>,
    left_out: Option<&'a str>,
}

/// The audit record of an XKS request.
fn audit_event<'a>(a: AuditFacts<'a>) -> keyhold_audit::Event<'a> {
    let (result, status) = match a.result {
        Ok(_) => ("OK", 200),
        Err(e) => (e.name.as_str(), e.status().as_u16()),
    };
    let m = a.meta;
    keyhold_audit::Event {
        frontend: "xks",
        operation: a.route.map(|r| r.op.name()).unwrap_or("-"),
        result,
        status: Some(status),
        store: a.route.map(|r| r.prefix),
        key: a.route.map(|r| r.key_id).filter(|k| !k.is_empty()),
        key_version: a.facts.key_version,
        latency_us: Some(a.started.elapsed().as_micros() as u64),
        actor: a.access_key_id,
        principal: m.aws_principal_arn.as_deref(),
        kms_operation: m.kms_operation.as_deref(),
        kms_request_id: m.kms_request_id.as_deref(),
        kms_key_arn: m.kms_key_arn.as_deref(),
        kms_via_service: m.kms_via_service.as_deref(),
        aws_source_vpc: m.aws_source_vpc.as_deref(),
        aws_source_vpce: m.aws_source_vpce.as_deref(),
        request_id: None,
        context: None,
        detail: a.left_out.or(a.facts.detail()),
        rule: a.facts.rule.as_deref(),
    }
}
