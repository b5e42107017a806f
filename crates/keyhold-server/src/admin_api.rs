//! The admin API: key stores, keys, policies, tokens, audit, KMIP
//! administration and backups over HTTPS, as typed JSON resources under
//! `/v1/…` ([`crate::admin_v1`]), authenticated by a bearer token that
//! carries one role (custodian, auditor, operator). This module is the
//! HTTP side: TLS, connection and size limits, the token, reading the
//! body; every authenticated call and every refusal is recorded through
//! the [`AdminExecutor`].

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
pub use hyper::Method;
use hyper::{Request, Response, StatusCode};
use keyhold_service::api_tokens::AdminIdentity;
use keyhold_service::KeyService;
use serde::Serialize;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body (policy files, backups to verify).
pub const MAX_REQUEST_BYTES: usize = 64 << 20;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this (a connection that holds
/// half a header is closed), as on the XKS listener.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The body of an authenticated request (up to 64 MiB: a backup to
/// verify) must arrive within this.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections at most on the admin listener, in all and from one address;
/// and how long one may stay quiet.
pub const LIMITS: crate::conn::ConnLimits = crate::conn::ConnLimits {
    max_connections: 256,
    max_per_address: 32,
    idle: Duration::from_secs(60),
};

/// Records the admin API's calls in the audit log (blocking: it is called
/// on a blocking thread).
pub trait AdminExecutor: Send + Sync + 'static {
    /// Records a request that presented no valid token.
    fn refused(&self, peer: SocketAddr, why: &str);
    /// Records an authenticated call (`what`: the command it amounts to)
    /// and its outcome, made through `frontend` (`admin`: the API;
    /// `console`: the web console): every authenticated call is audited.
    fn record_call(
        &self,
        who: &AdminIdentity,
        peer: SocketAddr,
        frontend: &'static str,
        what: &str,
        outcome: Result<(), String>,
    );
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    json_response(status, &serde_json::json!({ "error": msg }))
}

/// The token of an `Authorization: Bearer …` header (the scheme in any case).
pub(crate) fn bearer(headers: &hyper::HeaderMap) -> Option<String> {
    let v = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Authenticates a bearer token off the async workers.
pub(crate) async fn authenticate(
    service: &Arc<KeyService>,
    token: Option<String>,
) -> Result<Option<AdminIdentity>, String> {
    let Some(token) = token else { return Ok(None) };
    let s = service.clone();
    tokio::task::spawn_blocking(move || s.authenticate_admin(&token))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The caller of an authenticated request, or the answer to one that is
/// not (401, recorded within the refusal budget; 503 without storage).
async fn caller(
    headers: &hyper::HeaderMap,
    peer: SocketAddr,
    service: &Arc<KeyService>,
    exec: &Arc<dyn AdminExecutor>,
) -> Result<AdminIdentity, Response<Full<Bytes>>> {
    let token = bearer(headers);
    let presented = token.is_some();
    match authenticate(service, token).await {
        Ok(Some(w)) => Ok(w),
        Ok(None) => {
            let why = if presented {
                "invalid, expired or revoked admin token"
            } else {
                "no admin token (Authorization: Bearer …)"
            };
            let (e2, why2) = (exec.clone(), why.to_owned());
            let _ = tokio::task::spawn_blocking(move || e2.refused(peer, &why2)).await;
            let mut r = error(StatusCode::UNAUTHORIZED, why);
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer realm=\"keyhold-admin\""),
            );
            Err(r)
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin API: cannot check a token");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot check the token now: storage unavailable",
            ))
        }
    }
}

/// Reads a request body within [`MAX_REQUEST_BYTES`] and [`BODY_TIMEOUT`].
async fn read_body(body: hyper::body::Incoming) -> Result<Bytes, (StatusCode, String)> {
    match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(body, MAX_REQUEST_BYTES).collect(),
    )
    .await
    {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(_)) => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request is larger than {MAX_REQUEST_BYTES} bytes or was cut off"),
        )),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The answer to an authenticated request whose body could not be read:
/// recorded too (as `what`), and the connection closed when part of the
/// body may still be on the wire.
async fn unreadable(
    exec: &Arc<dyn AdminExecutor>,
    who: &AdminIdentity,
    peer: SocketAddr,
    what: &'static str,
    status: StatusCode,
    why: String,
) -> Response<Full<Bytes>> {
    let (e2, w2, why2) = (exec.clone(), who.clone(), why.clone());
    let _ =
        tokio::task::spawn_blocking(move || e2.record_call(&w2, peer, "admin", what, Err(why2)))
            .await;
    let mut r = error(status, &why);
    if status == StatusCode::REQUEST_TIMEOUT {
        r.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    r
}

/// One request on the admin listener: the typed API under `/v1/` (see
/// [`crate::admin_v1`]) or the web console under `/ui/` (see
/// [`crate::console`]); nothing else is served.
async fn handle(
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    service: Arc<KeyService>,
    exec: Arc<dyn AdminExecutor>,
    ops: Arc<crate::admin_ops::AdminOps>,
    console: Arc<crate::console::Console>,
) -> Response<Full<Bytes>> {
    use crate::admin_v1::{self as api, NoRoute, Route};
    let path = req.uri().path();
    if path == crate::console::PREFIX || path == "/" {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SEE_OTHER;
        r.headers_mut().insert(
            hyper::header::LOCATION,
            hyper::header::HeaderValue::from_static("/ui/"),
        );
        return r;
    }
    if path.starts_with("/ui/") {
        return crate::console::handle(req, peer, service, exec, ops, console).await;
    }
    if !path.starts_with(api::PREFIX) {
        return error(
            StatusCode::NOT_FOUND,
            "no such admin API path (the API is under /v1/, the console under /ui/)",
        );
    }
    let route = match api::route(req.method(), req.uri().path()) {
        Ok(r) => r,
        Err(NoRoute::NotFound) => return error(StatusCode::NOT_FOUND, "no such admin API path"),
        Err(NoRoute::MethodNotAllowed) => {
            return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
    };
    if route == Route::OpenApi {
        let mut r = Response::new(Full::new(Bytes::from(api::openapi_json())));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let who = match caller(req.headers(), peer, &service, &exec).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if route == Route::Whoami {
        let (e2, w2) = (exec.clone(), who.clone());
        let _ = tokio::task::spawn_blocking(move || {
            e2.record_call(&w2, peer, "admin", "admin whoami", Ok(()))
        })
        .await;
        let v = crate::admin_ops::WhoamiView {
            name: who.name.clone(),
            role: who.role.as_str().into(),
            token_id: who.token_id.clone(),
        };
        return json_response(StatusCode::OK, &serde_json::to_value(v).unwrap_or_default());
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err((status, why)) => {
            return unreadable(&exec, &who, peer, "api (unreadable)", status, why).await
        }
    };
    let job = move || {
        let what = route.audit_words(&body);
        let need = route.access();
        if !need.allows(who.role) {
            let msg = need.denied(&what, &who);
            exec.record_call(&who, peer, "admin", &what, Err(msg.clone()));
            return Err(crate::admin_ops::OpError::new(403, msg));
        }
        let r = api::run(&ops, &route, &query, &body);
        exec.record_call(
            &who,
            peer,
            "admin",
            &what,
            r.as_ref().map(drop).map_err(|e| e.error.clone()),
        );
        r
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok((status, v))) if status == StatusCode::NO_CONTENT => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = status;
            drop(v);
            r
        }
        Ok(Ok((status, v))) => json_response(status, &v),
        Ok(Err(e)) => json_response(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &serde_json::json!({ "error": e.error }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "admin API operation panicked");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// Serves the admin API on `listener` (TLS unless `tls` is None) until the
/// task is dropped.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: Arc<KeyService>,
    exec: Arc<dyn AdminExecutor>,
    data_dir: std::path::PathBuf,
    console_idle: Duration,
) {
    let ops = Arc::new(crate::admin_ops::AdminOps::new(service.clone(), &data_dir));
    let console = Arc::new(crate::console::Console {
        sessions: crate::console::session::Sessions::new(console_idle),
        last_verification: Default::default(),
    });
    let conns = crate::conn::ConnLimiter::new(LIMITS);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(slot) = conns.admit(peer.ip()) else {
            drop(tcp);
            continue;
        };
        let (service, exec, tls, ops, console) = (
            service.clone(),
            exec.clone(),
            tls.clone(),
            ops.clone(),
            console.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            let activity = crate::conn::Activity::new();
            let busy = activity.clone();
            let svc = hyper::service::service_fn(move |req| {
                let (service, exec, ops, console) =
                    (service.clone(), exec.clone(), ops.clone(), console.clone());
                let working = busy.working();
                async move {
                    let r = handle(req, peer, service, exec, ops, console).await;
                    drop(working);
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let tcp = crate::conn::Watched::new(tcp, activity.clone());
            let served = async {
                match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => {
                                let _ = http
                                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                    .await;
                            }
                            _ => tracing::info!(%peer, "admin API: TLS handshake failed"),
                        }
                    }
                    None => {
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .await;
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                _ = activity.idle_for(LIMITS.idle) => {}
            }
        });
    }
}

/// Decodes bytes of a request or response.
pub fn unb64(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| "not base64".into())
}

/// Encodes bytes for a request or response.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The client side: where the server is and how to trust it.
pub struct Client {
    scheme_https: bool,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Client {
    /// `url`: `https://HOST:PORT` (or `http://` for a server run with
    /// insecure_http); `ca`: PEM of the CA that signed the server's
    /// certificate (else the system's roots are not consulted: one must be given).
    pub fn new(url: &str, ca: Option<&Path>) -> Result<Self, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("server URL {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("server URL {url:?}: use https://HOST:PORT")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("server URL {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let ca = ca.ok_or("an https server needs --server-ca (the CA certificate that signed its certificate, e.g. DATA/tls/ca.pem)")?;
            let mut roots = rustls::RootCertStore::empty();
            for c in crate::tls::load_certs(ca).map_err(|e| e.to_string())? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::xks_provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            keyhold_crypto::fips::check_tls("the admin API client", cfg.fips())?;
            Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
        } else {
            None
        };
        Ok(Self {
            scheme_https: https,
            host,
            port,
            tls,
        })
    }

    /// Sends one request; returns the HTTP status and the JSON body.
    pub fn call<B: Serialize>(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(self.exchange(token, method, path, body))
    }

    async fn exchange<B: Serialize>(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("cannot reach the admin API at {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &addr)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = match (&self.tls, self.scheme_https) {
            (Some(tls), true) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("server name {}: {e}", self.host))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS to the admin API at {addr}: {e}"))?;
                send(hyper_util::rt::TokioIo::new(stream), req).await?
            }
            _ => send(hyper_util::rt::TokioIo::new(tcp), req).await?,
        };
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if bytes.is_empty() && status == StatusCode::NO_CONTENT {
            return Ok((status, serde_json::Value::Null));
        }
        let v = serde_json::from_slice(&bytes)
            .map_err(|_| format!("the admin API answered {status} with a body that is not JSON"))?;
        Ok((status, v))
    }
}

async fn send<T>(
    io: T,
    req: Request<Full<Bytes>>,
) -> Result<Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("the admin API did not answer: {e}"))
}
