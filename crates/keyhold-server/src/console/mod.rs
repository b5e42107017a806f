//! The web console, `/ui/…` on the admin listener: server-rendered pages
//! with one small script, every asset in the binary (no CDN, no build
//! step). It is a client of the typed admin API in-process: every page
//! reads, and every form changes, through [`crate::admin_v1::run`] with the
//! route the API would take, the route's role check and its audit words —
//! recorded with `frontend: console` as the signed-in token's identity. It
//! adds no second way to change anything.
//!
//! Sign-in exchanges an admin token for a session ([`session`]); every
//! change carries the session's CSRF token and must come from the console's
//! own origin; a token revoked or expired ends its sessions on their next
//! request. Every answer carries a strict Content-Security-Policy (no
//! inline script, no eval, no framing), HSTS, `nosniff` and
//! `Referrer-Policy: same-origin` (`no-referrer` would make browsers send
//! `Origin: null` with every form, which the same-origin check refuses).

mod pages;
pub mod session;

use crate::admin_api::AdminExecutor;
use crate::admin_ops::{
    AdminOps, KeyView, LockdownView, OpError, StatusView, StoreView, VersionView,
};
use crate::admin_v1::{self as api, Route};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use keyhold_service::api_tokens::AdminIdentity;
use keyhold_service::KeyService;
use maud::Markup;
use pages::Frame;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use session::Sessions;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where the console is served.
pub const PREFIX: &str = "/ui";
/// A form's body at most (the console sends small forms only).
const MAX_FORM_BYTES: usize = 64 << 10;
/// Keys on one page of a store.
const KEYS_PER_PAGE: usize = 100;
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's state in one server: its sessions.
#[derive(Default)]
pub struct Console {
    pub sessions: Sessions,
    /// The last audit verification run from this console: when (s), by
    /// whom, and whether the log was intact.
    pub last_verification: parking_lot::Mutex<Option<(i64, String, bool)>>,
}

type Resp = Response<Full<Bytes>>;

fn with_headers(mut r: Resp, content_type: &'static str, cache: &'static str) -> Resp {
    let h = r.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("strict-transport-security", "max-age=31536000"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cache-control", cache),
        ("content-type", content_type),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    r
}

fn html(status: StatusCode, m: Markup) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(m.into_string())));
    *r.status_mut() = status;
    with_headers(r, "text/html; charset=utf-8", "no-store")
}

fn redirect(to: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    with_headers(r, "text/plain", "no-store")
}

/// A file the browser saves (never cached): `filename` must be plain
/// (letters, digits, `-_.`).
fn download(body: Vec<u8>, content_type: &'static str, filename: &str) -> Resp {
    let mut r = with_headers(
        Response::new(Full::new(Bytes::from(body))),
        content_type,
        "no-store",
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        r.headers_mut()
            .insert(hyper::header::CONTENT_DISPOSITION, v);
    }
    r
}

fn asset(body: &'static str, content_type: &'static str) -> Resp {
    with_headers(
        Response::new(Full::new(Bytes::from_static(body.as_bytes()))),
        content_type,
        "max-age=300",
    )
}

/// Decodes a path segment (a store prefix's slashes come encoded).
fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// A page's reads and a form's change, as the signed-in identity.
struct Ctx {
    ops: Arc<AdminOps>,
    exec: Arc<dyn AdminExecutor>,
    peer: SocketAddr,
    who: AdminIdentity,
    csrf: String,
    console: Arc<Console>,
}

impl Ctx {
    /// A read through the API's route, with its role check (not recorded:
    /// page views are not audit events; changes are).
    fn read<T: DeserializeOwned>(&self, route: Route, query: &str) -> Result<T, OpError> {
        self.read_with(route, query, b"")
    }

    /// [`Ctx::read`] of a route that takes a body (a filter, a sample).
    fn read_with<T: DeserializeOwned>(
        &self,
        route: Route,
        query: &str,
        body: &[u8],
    ) -> Result<T, OpError> {
        let need = route.access();
        if !need.allows(self.who.role) {
            return Err(OpError::new(
                403,
                need.denied(&route.audit_words(body), &self.who),
            ));
        }
        let (_, v) = api::run(&self.ops, &route, query, body)?;
        serde_json::from_value(v).map_err(|e| OpError::new(500, e.to_string()))
    }

    /// A change through the API's route: its role check and its audit
    /// record, as the console.
    fn change(&self, route: Route, body: Value) -> Result<Value, OpError> {
        let body = body.to_string().into_bytes();
        let what = route.audit_words(&body);
        let need = route.access();
        if !need.allows(self.who.role) {
            let msg = need.denied(&what, &self.who);
            self.exec
                .record_call(&self.who, self.peer, "console", &what, Err(msg.clone()));
            return Err(OpError::new(403, msg));
        }
        let r = api::run(&self.ops, &route, "", &body);
        self.exec.record_call(
            &self.who,
            self.peer,
            "console",
            &what,
            r.as_ref().map(drop).map_err(|e| e.error.clone()),
        );
        r.map(|(_, v)| v)
    }

    /// Who last did `operation` (on `store`, `key`), and when, per the
    /// audit log.
    fn last_done(&self, operation: &str, store: Option<&str>, key: Option<&str>) -> String {
        let filter = crate::admin_ops::AuditFilter {
            operation: Some(operation.into()),
            store: store.map(str::to_owned),
            key: key.map(str::to_owned),
            result: Some("OK".into()),
            limit: Some(1),
            ..Default::default()
        };
        match self
            .ops
            .audit_query(&filter)
            .ok()
            .and_then(|v| v.into_iter().next())
        {
            Some(r) => format!(
                " Set by {} at {}.",
                r["actor"].as_str().unwrap_or("?"),
                crate::admin_ops::time(r["ts_ms"].as_i64().unwrap_or(0) / 1000)
            ),
            None => String::new(),
        }
    }

    /// Break glass in force, for the banner every page shows: lockdown,
    /// disabled key stores and disabled keys (the first few), each with
    /// who set it and when (facts every role may see).
    fn break_glass(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let on = api::run(&self.ops, &Route::GetLockdown, "", b"")
            .ok()
            .and_then(|(_, v)| serde_json::from_value::<LockdownView>(v).ok())
            .is_some_and(|l| l.lockdown);
        if on {
            out.push((
                "Lockdown is on: every key is refused on every front-end.".to_owned(),
                self.last_done("lockdown", None, None),
            ));
        }
        // Every page asks: the stores' status only, not their key counts.
        if let Ok(stores) = self.ops.disabled_stores() {
            for prefix in stores {
                out.push((
                    format!("Key store {prefix} is disabled: its keys are refused."),
                    self.last_done("store disable", Some(&prefix), None),
                ));
            }
        }
        const SHOWN: usize = 5;
        if let Ok(keys) = self.ops.disabled_keys(SHOWN + 1) {
            for (store, key) in keys.iter().take(SHOWN) {
                out.push((
                    format!("Key {key} of {store} is disabled."),
                    self.last_done("key disable", Some(store), Some(key)),
                ));
            }
            if keys.len() > SHOWN {
                out.push((
                    "More keys are disabled.".to_owned(),
                    " The store pages list them.".to_owned(),
                ));
            }
        }
        out
    }

    fn frame<'a>(&'a self, title: &'a str) -> Frame<'a> {
        Frame {
            title,
            who: Some(&self.who),
            csrf: &self.csrf,
            break_glass: self.break_glass(),
        }
    }

    fn failed(&self, e: &OpError, back: &str) -> Resp {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let f = self.frame("That did not work");
        html(status, pages::error(&f, e.status, &e.error, back))
    }
}

/// Whether a change comes from the console's own pages: a browser says
/// where a request comes from (Sec-Fetch-Site, Origin); a cross-site one
/// is refused whatever its cookies.
fn same_origin(headers: &hyper::HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some(s) if s != "same-origin" && s != "none") {
        return false;
    }
    match (
        headers
            .get(hyper::header::ORIGIN)
            .and_then(|v| v.to_str().ok()),
        headers
            .get(hyper::header::HOST)
            .and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, h)| h.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// One console request.
pub(crate) async fn handle(
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    service: Arc<KeyService>,
    exec: Arc<dyn AdminExecutor>,
    ops: Arc<AdminOps>,
    console: Arc<Console>,
) -> Resp {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/ui/assets/console.css") => return asset(pages::CSS, "text/css"),
        (Method::GET, "/ui/assets/console.js") => return asset(pages::JS, "text/javascript"),
        (Method::GET, "/ui/login") => return html(StatusCode::OK, pages::login(None)),
        (Method::POST, "/ui/login") => {
            return sign_in(req, peer, service, exec, console).await;
        }
        _ => {}
    }
    // Everything else needs a session whose token is still in force.
    let cookie = session::cookie_value(req.headers());
    let Some(s) = cookie.as_deref().and_then(|c| console.sessions.get(c)) else {
        return match method {
            Method::GET => redirect("/ui/login"),
            _ => html(
                StatusCode::UNAUTHORIZED,
                pages::login(Some("Your session is over: sign in again.")),
            ),
        };
    };
    let token_id = s.who.token_id.clone();
    let svc = service.clone();
    let in_force = tokio::task::spawn_blocking(move || svc.admin_token_in_force(&token_id))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    if !in_force {
        console.sessions.end_token(&s.who.token_id);
        return html(
            StatusCode::UNAUTHORIZED,
            pages::login(Some(
                "Your admin token was revoked or has expired: sign in with a valid one.",
            )),
        );
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers = req.headers().clone();
    let body = if method == Method::POST {
        match read_form(req.into_body()).await {
            Ok(b) => b,
            Err(r) => return r,
        }
    } else {
        Bytes::new()
    };
    let ctx = Ctx {
        ops,
        exec: exec.clone(),
        peer,
        who: s.who.clone(),
        csrf: s.csrf.clone(),
        console: console.clone(),
    };
    if method == Method::POST {
        let fields = form(&body);
        let csrf_ok = fields.get("csrf").is_some_and(|c| s.csrf_matches(c));
        if !csrf_ok || !same_origin(&headers) {
            let why = if csrf_ok {
                "refused: a change from another site"
            } else {
                "refused: a change without this session's CSRF token"
            };
            let (e2, w2) = (exec.clone(), s.who.clone());
            let what = format!("console {} {path}", method.as_str().to_lowercase());
            let _ = tokio::task::spawn_blocking(move || {
                e2.record_call(&w2, peer, "console", &what, Err(why.into()))
            })
            .await;
            return html(
                StatusCode::FORBIDDEN,
                pages::login(Some(
                    "That change was refused: reload the page and try again.",
                )),
            );
        }
        if path == "/ui/logout" {
            if let Some(c) = &cookie {
                console.sessions.end(c);
            }
            let (e2, w2) = (exec.clone(), s.who.clone());
            let _ = tokio::task::spawn_blocking(move || {
                e2.record_call(&w2, peer, "console", "console sign-out", Ok(()))
            })
            .await;
            let mut r = redirect("/ui/login");
            if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
                r.headers_mut().insert(hyper::header::SET_COOKIE, v);
            }
            return r;
        }
        return tokio::task::spawn_blocking(move || post(&ctx, &path, &fields))
            .await
            .unwrap_or_else(|_| {
                html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    pages::login(Some("internal error")),
                )
            });
    }
    if method != Method::GET {
        return html(
            StatusCode::METHOD_NOT_ALLOWED,
            pages::login(Some("method not allowed")),
        );
    }
    tokio::task::spawn_blocking(move || get(&ctx, &path, &query))
        .await
        .unwrap_or_else(|_| {
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::login(Some("internal error")),
            )
        })
}

/// A form's body, within [`MAX_FORM_BYTES`] and the body timeout; else
/// the answer to give.
async fn read_form(body: hyper::body::Incoming) -> Result<Bytes, Resp> {
    match tokio::time::timeout(
        crate::admin_api::BODY_TIMEOUT,
        Limited::new(body, MAX_FORM_BYTES).collect(),
    )
    .await
    {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        _ => Err(html(
            StatusCode::PAYLOAD_TOO_LARGE,
            pages::login(Some("The form was too large.")),
        )),
    }
}

/// Sign-in: the token is checked, exchanged for a session, and forgotten.
async fn sign_in(
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    service: Arc<KeyService>,
    exec: Arc<dyn AdminExecutor>,
    console: Arc<Console>,
) -> Resp {
    if !same_origin(req.headers()) {
        return html(
            StatusCode::FORBIDDEN,
            pages::login(Some("Sign in from the console's own page.")),
        );
    }
    let body = match read_form(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let token = zeroize::Zeroizing::new(form(&body).remove("token").unwrap_or_default());
    let who = match crate::admin_api::authenticate(&service, Some(token.trim().to_owned())).await {
        Ok(Some(w)) => w,
        Ok(None) => {
            let e2 = exec.clone();
            let _ = tokio::task::spawn_blocking(move || {
                e2.refused(
                    peer,
                    "console sign-in with an invalid, expired or revoked admin token",
                )
            })
            .await;
            return html(
                StatusCode::UNAUTHORIZED,
                pages::login(Some(
                    "That token is not valid (wrong, expired or revoked). Ask a custodian for one: keyhold admin token create NAME --role ROLE.",
                )),
            );
        }
        Err(_) => {
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::login(Some(
                    "The token cannot be checked now (storage unavailable): try again shortly.",
                )),
            )
        }
    };
    let id = console.sessions.start(who.clone());
    let _ = tokio::task::spawn_blocking(move || {
        exec.record_call(&who, peer, "console", "console sign-in", Ok(()))
    })
    .await;
    let mut r = redirect("/ui/");
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id)) {
        r.headers_mut().insert(hyper::header::SET_COOKIE, v);
    }
    r
}

/// The segments of a console path after `/ui/`, decoded.
fn segments(path: &str) -> Option<Vec<String>> {
    path.strip_prefix("/ui/")
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect()
}

fn query_map(query: &str) -> HashMap<String, String> {
    form(query.as_bytes())
}

fn get(ctx: &Ctx, path: &str, query: &str) -> Resp {
    let Some(segs) = segments(path) else {
        return ctx.failed(&OpError::new(404, "no such page"), "/ui/");
    };
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let q = query_map(query);
    let r = match segs.as_slice() {
        [] => ctx.read::<StatusView>(Route::Status, "").map(|s| {
            let extra = pages::OverviewExtra {
                rates: ctx.ops.request_rates(),
                fleet: ctx.ops.fleet().unwrap_or_default(),
                audit: ctx.ops.audit_status(),
                last_verification: ctx.console.last_verification.lock().clone(),
                storage: ctx.ops.storage_kind(),
                now_ms: keyhold_core::now() * 1000,
            };
            pages::overview(&ctx.frame("Overview"), &s, &extra)
        }),
        ["stores"] => ctx
            .read::<Vec<StoreView>>(Route::ListStores, "")
            .map(|s| pages::stores(&ctx.frame("Key stores"), &s)),
        ["stores", s] => store_page(ctx, s, &q),
        ["stores", s, "credentials"] => ctx
            .read::<Vec<crate::admin_ops::CredentialView>>(Route::ListCredentials((*s).into()), "")
            .map(|c| {
                let title = format!("Credentials of {}", pages::display_store(s));
                pages::credentials(&ctx.frame(&title), s, &c)
            }),
        ["stores", s, "keys", k] => (|| {
            let key: KeyView = ctx.read(Route::GetKey((*s).into(), (*k).into()), "")?;
            let versions: Vec<VersionView> =
                ctx.read(Route::ListVersions((*s).into(), (*k).into()), "")?;
            let title = format!("Key {}", key.key_id);
            let history = key_history(ctx, &key);
            Ok(pages::key(
                &ctx.frame(&title),
                &key,
                &versions,
                history.as_deref(),
            ))
        })(),
        ["stores", s, "api"] => {
            ctx.read::<StoreView>(Route::GetStore((*s).into()), "")
                .map(|store| {
                    let title = format!("Cloud API of {}", store.prefix);
                    pages::store_api(&ctx.frame(&title), &store)
                })
        }
        ["stores", s, "policy"] => policy_page(ctx, s, None, None, None),
        ["stores", s, "keys", k, "policy"] => policy_page(ctx, s, Some(k), None, None),
        ["stores", s, "policy", "test"] => policy_test(ctx, s, None, &q),
        ["stores", s, "keys", k, "policy", "test"] => policy_test(ctx, s, Some(k), &q),
        ["policies"] => ctx
            .read::<Vec<crate::admin_ops::PolicySummary>>(Route::ListPolicies, "")
            .map(|p| pages::policies(&ctx.frame("Policies"), &p)),
        ["tokens"] => ctx
            .read::<Vec<crate::admin_ops::TokenView>>(Route::ListTokens, "")
            .map(|t| pages::tokens(&ctx.frame("Admin tokens"), &t, None)),
        ["backups"] => Ok(pages::backups(&ctx.frame("Backups"))),
        ["kmip"] => (|| {
            let s: crate::admin_ops::KmipStatusView = ctx.read(Route::KmipStatus, "")?;
            let certs: Vec<crate::admin_ops::ClientCertView> =
                ctx.read(Route::ListClientCerts, "")?;
            Ok(pages::kmip(&ctx.frame("KMIP"), &s, &certs))
        })(),
        ["audit"] => audit_page(ctx, &q),
        ["audit", "verify"] => (|| {
            let v: crate::admin_ops::AuditVerifyView =
                ctx.read_with(Route::AuditVerify, "", b"{}")?;
            *ctx.console.last_verification.lock() =
                Some((keyhold_core::now(), ctx.who.actor(), v.ok));
            Ok(pages::audit_verify(
                &ctx.frame("Audit log verification"),
                &v,
            ))
        })(),
        ["audit", "export"] => return audit_export(ctx, &q),
        _ => Err(OpError::new(404, "no such page")),
    };
    match r {
        Ok(m) => html(StatusCode::OK, m),
        Err(e) => ctx.failed(&e, "/ui/"),
    }
}

/// The admin records about a key (the API's and the console's), newest
/// first: its state history. A fact its custodians may see.
fn key_history(ctx: &Ctx, k: &KeyView) -> Option<Vec<Value>> {
    let mut all = Vec::new();
    for frontend in ["admin", "console"] {
        let filter = crate::admin_ops::AuditFilter {
            store: Some(k.store.clone()),
            key: Some(k.key_id.clone()),
            frontend: Some(frontend.into()),
            limit: Some(50),
            ..Default::default()
        };
        all.extend(ctx.ops.audit_query(&filter).ok()?);
    }
    all.sort_by_key(|r| std::cmp::Reverse(r["ts_ms"].as_i64().unwrap_or(0)));
    all.truncate(50);
    Some(all)
}

/// The API's JSON body of the audit filters in a query.
fn audit_filter(q: &HashMap<String, String>) -> (Vec<(&'static str, String)>, Value) {
    const FIELDS: [&str; 9] = [
        "store",
        "key",
        "principal",
        "operation",
        "result",
        "kms_request_id",
        "frontend",
        "since",
        "until",
    ];
    let filter: Vec<(&str, String)> = FIELDS
        .iter()
        .filter_map(|f| q.get(*f).filter(|v| !v.is_empty()).map(|v| (*f, v.clone())))
        .collect();
    let mut body = serde_json::Map::new();
    for (k, v) in &filter {
        body.insert((*k).into(), json!(v));
    }
    (filter, Value::Object(body))
}

/// The filtered records as a download (JSON lines, verified records only).
fn audit_export(ctx: &Ctx, q: &HashMap<String, String>) -> Resp {
    let (_, body) = audit_filter(q);
    let v: Value = match ctx.read_with(Route::AuditExport, "", body.to_string().as_bytes()) {
        Ok(v) => v,
        Err(e) => return ctx.failed(&e, "/ui/audit"),
    };
    let lines: Vec<String> = v["lines"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut text = lines.join("\n");
    text.push('\n');
    download(
        text.into_bytes(),
        "application/x-ndjson",
        "keyhold-audit-export.jsonl",
    )
}

/// The API path segments of a policy scope: (store, key).
fn policy_action(s: &str, k: Option<&&str>) -> String {
    match k {
        Some(k) => format!("{}/policy", pages::key_url(s, k)),
        None => format!("{}/policy", pages::store_url(s)),
    }
}

fn policy_page(
    ctx: &Ctx,
    s: &str,
    k: Option<&&str>,
    problem: Option<&str>,
    draft: Option<&str>,
) -> Result<Markup, OpError> {
    let route = Route::GetPolicy(s.into(), k.map(|k| (*k).to_owned()));
    let text = match draft {
        Some(d) => d.to_owned(),
        None => match ctx.read::<crate::admin_ops::PolicyView>(route, "") {
            Ok(p) => p.text,
            Err(e) if e.status == 404 => String::new(),
            Err(e) => return Err(e),
        },
    };
    let title = match k {
        Some(k) => format!("Policy of key {k} in {}", pages::display_store(s)),
        None => format!("Policy of {}", pages::display_store(s)),
    };
    Ok(pages::policy(
        &ctx.frame(&title),
        &policy_action(s, k),
        &text,
        problem,
        None,
    ))
}

fn policy_test(
    ctx: &Ctx,
    s: &str,
    k: Option<&&str>,
    q: &HashMap<String, String>,
) -> Result<Markup, OpError> {
    let mut body = serde_json::Map::new();
    for f in [
        "principal",
        "kms_operation",
        "via_service",
        "source_vpc",
        "source_vpce",
    ] {
        if let Some(v) = q.get(f).filter(|v| !v.is_empty()) {
            body.insert(f.into(), json!(v));
        }
    }
    let d: crate::admin_ops::PolicyDecision = ctx.read_with(
        Route::TestPolicy(s.into(), k.map(|k| (*k).to_owned())),
        "",
        Value::Object(body).to_string().as_bytes(),
    )?;
    let text = ctx
        .read::<crate::admin_ops::PolicyView>(
            Route::GetPolicy(s.into(), k.map(|k| (*k).to_owned())),
            "",
        )
        .map(|p| p.text)
        .unwrap_or_default();
    let title = "Policy test".to_owned();
    Ok(pages::policy(
        &ctx.frame(&title),
        &policy_action(s, k),
        &text,
        None,
        Some(&d),
    ))
}

/// The admin API's body for a store's cloud API, from the console's form:
/// only the fields of the API chosen, lists one item per line.
fn store_api_body(f: &HashMap<String, String>) -> serde_json::Value {
    let field = |n: &str| {
        f.get(n)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let lines = |n: &str| {
        f.get(n)
            .map(|v| {
                v.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|l| !l.is_empty())
    };
    let api = field("api").unwrap_or_else(|| "xks".into());
    let mut v = json!({ "api": api });
    let mut put = |k: &str, x: Option<serde_json::Value>| {
        if let Some(x) = x {
            v[k] = x;
        }
    };
    let text = |n: &str| field(n).map(serde_json::Value::from);
    let list = |n: &str| lines(n).map(serde_json::Value::from);
    if api != "xks" {
        put("path_prefix", text("path_prefix"));
    }
    // The users' tokens (DKE: Entra ID; CSE: the identity provider).
    if matches!(api.as_str(), "ms-dke" | "google-cse") {
        put("issuers", list("issuers"));
        put("audience", text("audience"));
        put("jwks_url", text("jwks_url"));
        put("jwks_ca_pem", text("jwks_ca_pem"));
    }
    match api.as_str() {
        "azure-ekm" => {
            put("client_cn", text("client_cn"));
            put("client_ca_pem", text("client_ca_pem"));
        }
        "ms-dke" => {
            put("authorized_emails", list("authorized_emails"));
            put("authorized_groups", list("authorized_groups"));
            put(
                "cache_days",
                field("cache_days")
                    .and_then(|d| d.parse::<u32>().ok())
                    .map(Into::into),
            );
        }
        "google-cse" => {
            put("kacls_url", text("kacls_url"));
            put("kek", text("kek"));
            put("authz_jwks_url", text("authz_jwks_url"));
            put("authz_jwks_ca_pem", text("authz_jwks_ca_pem"));
            put("allowed_domains", list("allowed_domains"));
            put("allow_guests", field("allow_guests").map(|_| true.into()));
            put("privileged_users", list("privileged_users"));
            put("migration_peers", list("migration_peers"));
            put("peer_ca_pem", text("peer_ca_pem"));
            put("signing_key", text("signing_key"));
        }
        _ => {}
    }
    v
}

fn store_page(ctx: &Ctx, s: &str, q: &HashMap<String, String>) -> Result<Markup, OpError> {
    let store: StoreView = ctx.read(Route::GetStore(s.into()), "")?;
    let search = q.get("q").cloned().unwrap_or_default();
    if !search.is_empty() && keyhold_core::KeyId::parse(&search).is_err() {
        return Err(OpError::new(
            400,
            "search by the start of a key id: letters, digits, '.', '_' and '-'",
        ));
    }
    // Key ids start with the search: page from just before it. (Key ids
    // need no escaping in a query.)
    let after = q.get("after").cloned().or_else(|| before(&search));
    let mut query = format!("limit={}", KEYS_PER_PAGE + 1);
    if let Some(a) = &after {
        query.push_str(&format!("&after={a}"));
    }
    let mut keys: Vec<KeyView> = ctx.read(Route::ListKeys(s.into()), &query)?;
    keys.retain(|k| k.key_id.starts_with(&search));
    let next = (keys.len() > KEYS_PER_PAGE).then(|| {
        keys.truncate(KEYS_PER_PAGE);
        keys.last().map(|k| k.key_id.clone()).unwrap_or_default()
    });
    let title = format!("Key store {}", store.prefix);
    Ok(pages::store(
        &ctx.frame(&title),
        &store,
        &keys,
        &search,
        next.as_deref(),
    ))
}

/// The greatest key id that sorts before every id starting with `prefix`
/// (ids are 1 to 128 of `-.0-9A-Z_a-z`, in byte order), for listing
/// "after" it; `None` when nothing sorts before (list from the start).
fn before(prefix: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
    let (head, last) = prefix.split_at(prefix.len().checked_sub(1)?);
    let at = ALPHABET.iter().position(|c| last.as_bytes()[0] == *c)?;
    if at == 0 {
        // Nothing between `head` and `prefix`: every id after `head` is
        // `prefix` or more (or `head` is empty: list from the start).
        return (!head.is_empty()).then(|| head.to_owned());
    }
    let mut b = head.as_bytes().to_vec();
    b.push(ALPHABET[at - 1]);
    b.resize(keyhold_core::MAX_KEY_ID_LEN, b'z');
    Some(String::from_utf8_lossy(&b).into_owned())
}

fn audit_page(ctx: &Ctx, q: &HashMap<String, String>) -> Result<Markup, OpError> {
    let (mut filter, mut body) = audit_filter(q);
    let limit = match q.get("limit").map(|l| l.trim()).filter(|l| !l.is_empty()) {
        None => 200,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=10_000).contains(l))
            .ok_or_else(|| OpError::new(400, "limit: a number of records from 1 to 10000"))?,
    };
    filter.push(("limit", limit.to_string()));
    body["limit"] = json!(limit);
    let records: Vec<Value> = ctx.read_with(Route::AuditQuery, "", body.to_string().as_bytes())?;
    Ok(pages::audit(&ctx.frame("Audit"), &filter, &records))
}

fn post(ctx: &Ctx, path: &str, f: &HashMap<String, String>) -> Resp {
    let Some(segs) = segments(path) else {
        return ctx.failed(&OpError::new(404, "no such page"), "/ui/");
    };
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let field = |n: &str| {
        f.get(n)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    // A new credential's secret is shown (or downloaded) once, never kept.
    if let ["stores", s, "credentials" | "kms-config"] = segs.as_slice() {
        return new_credential(ctx, s, segs[2] == "kms-config");
    }
    match segs.as_slice() {
        ["tokens"] => return new_token(ctx, f),
        ["kmip", "client-certs"] => return new_client_cert(ctx, f),
        ["backups"] => return new_backup(ctx),
        ["stores", s, "policy"] => return save_policy(ctx, s, None, f),
        ["stores", s, "keys", k, "policy"] => return save_policy(ctx, s, Some(k), f),
        _ => {}
    }
    let (done, back) = match segs.as_slice() {
        ["lockdown"] => {
            let on = field("lockdown").as_deref() == Some("on");
            if on && field("confirm").as_deref() != Some("LOCKDOWN") {
                return ctx.failed(
                    &OpError::new(400, "Type LOCKDOWN in the confirmation field to lock down."),
                    "/ui/",
                );
            }
            (
                ctx.change(Route::SetLockdown, json!({ "lockdown": on })),
                "/ui/".to_owned(),
            )
        }
        ["stores"] => {
            let prefix = field("prefix").unwrap_or_default();
            let back = pages::store_url(&prefix);
            (
                ctx.change(
                    Route::CreateStore,
                    json!({ "prefix": prefix, "description": field("description").unwrap_or_default() }),
                ),
                back,
            )
        }
        ["stores", s, "credentials", akid, "remove"] => (
            ctx.change(
                Route::RemoveCredential((*s).into(), (*akid).into()),
                json!({}),
            ),
            pages::store_url(s),
        ),
        ["stores", s, rest @ ..]
            if matches!(rest, ["status"] | ["keys", _, "status"])
                // A role that may not change anything is refused as such.
                && ctx.who.role == keyhold_service::api_tokens::Role::Custodian
                && field("status").as_deref() == Some("DISABLED")
                && field("confirm").as_deref() != Some("yes") =>
        {
            let back = match rest {
                ["keys", k, _] => pages::key_url(s, k),
                _ => pages::store_url(s),
            };
            return ctx.failed(
                &OpError::new(400, "Tick the confirmation box to disable (break glass)."),
                &back,
            );
        }
        ["stores", s, "status"] => (
            ctx.change(
                Route::SetStoreStatus((*s).into()),
                json!({ "status": field("status") }),
            ),
            pages::store_url(s),
        ),
        ["stores", s, "api"] => {
            let back = format!("{}/api", pages::store_url(s));
            let r = ctx.change(Route::SetStoreApi((*s).into()), store_api_body(f));
            let back = if r.is_ok() { pages::store_url(s) } else { back };
            (r, back)
        }
        ["stores", s, "keys"] => {
            let usage = field("usage").map(|u| {
                u.split(',')
                    .map(|p| p.trim().to_uppercase())
                    .collect::<Vec<_>>()
            });
            let rotation = field("rotation_days")
                .map(|d| d.parse::<i64>().map(|d| d * 86_400))
                .transpose();
            let Ok(rotation) = rotation else {
                return ctx.failed(
                    &OpError::new(400, "the rotation period is a whole number of days"),
                    &pages::store_url(s),
                );
            };
            let r = ctx.change(
                Route::CreateKey((*s).into()),
                json!({
                    "key_id": field("key_id"),
                    "key_type": field("key_type"),
                    "usage": usage,
                    "protection": field("protection"),
                    "pre_active": field("activate_at").is_some(),
                    "activate_at": field("activate_at"),
                    "deactivate_at": field("deactivate_at"),
                    "rotation_period_s": rotation,
                }),
            );
            let back = match &r {
                Ok(v) => pages::key_url(s, v["key_id"].as_str().unwrap_or("")),
                Err(_) => pages::store_url(s),
            };
            (r, back)
        }
        ["stores", s, "keys", k, "status"] => (
            ctx.change(
                Route::SetKeyStatus((*s).into(), (*k).into()),
                json!({ "status": field("status") }),
            ),
            pages::key_url(s, k),
        ),
        ["stores", s, "keys", k, "rotate"] => (
            ctx.change(Route::RotateKey((*s).into(), (*k).into()), json!({})),
            pages::key_url(s, k),
        ),
        ["stores", s, "keys", k, what @ ("compromise" | "destroy")]
            if field("confirm").as_deref() != Some(*k) =>
        {
            let doing = if *what == "destroy" {
                "schedule its destruction"
            } else {
                "mark it compromised"
            };
            return ctx.failed(
                &OpError::new(
                    400,
                    format!("Type the key id ({k}) in the confirmation field to {doing}."),
                ),
                &pages::key_url(s, k),
            );
        }
        ["stores", s, "keys", k, action @ ("activate" | "deactivate" | "compromise" | "cancel-destroy")] =>
        {
            let a = crate::admin_ops::KeyAction::parse(action)
                .unwrap_or(crate::admin_ops::KeyAction::Activate);
            (
                ctx.change(Route::KeyAction((*s).into(), (*k).into(), a), json!({})),
                pages::key_url(s, k),
            )
        }
        ["stores", s, "keys", k, "destroy"] => {
            let days: Option<u32> = field("days").and_then(|d| d.parse().ok());
            (
                ctx.change(
                    Route::DestroyKey((*s).into(), (*k).into()),
                    json!({ "days": days }),
                ),
                pages::key_url(s, k),
            )
        }
        ["stores", s, "keys", k, "retire"] => {
            let version: u32 = field("version").and_then(|v| v.parse().ok()).unwrap_or(0);
            (
                ctx.change(
                    Route::SetMinDecryptVersion((*s).into(), (*k).into()),
                    json!({ "version": version }),
                ),
                pages::key_url(s, k),
            )
        }
        ["stores", s, "keys", k, "usage"] => (
            ctx.change(
                Route::SetUsage((*s).into(), (*k).into()),
                json!({ "usage": field("usage").unwrap_or_default().split(',').map(|u| u.trim().to_uppercase()).filter(|u| !u.is_empty()).collect::<Vec<_>>() }),
            ),
            pages::key_url(s, k),
        ),
        ["stores", s, "hsm-keys"] => {
            let usage = field("usage").map(|u| {
                u.split(',')
                    .map(|p| p.trim().to_uppercase())
                    .collect::<Vec<_>>()
            });
            let r = ctx.change(
                Route::ImportHsmKey((*s).into()),
                json!({ "label": field("label"), "key_id": field("key_id"), "usage": usage }),
            );
            let back = match &r {
                Ok(v) => pages::key_url(s, v["key_id"].as_str().unwrap_or("")),
                Err(_) => pages::store_url(s),
            };
            (r, back)
        }
        ["stores", s, "keys", k, "trim"] => (
            ctx.change(Route::TrimVersions((*s).into(), (*k).into()), json!({})),
            pages::key_url(s, k),
        ),
        ["kmip", "revoke"] => (
            ctx.change(
                Route::RevokeClientCerts(field("who").unwrap_or_default()),
                json!({}),
            ),
            "/ui/kmip".to_owned(),
        ),
        ["kmip", "grant"] => (
            ctx.change(
                Route::SetGrant(
                    field("uid").unwrap_or_default(),
                    field("identity").unwrap_or_default(),
                    field("grant").as_deref() != Some("ungrant"),
                ),
                json!({}),
            ),
            "/ui/kmip".to_owned(),
        ),
        ["tokens", name, "revoke"] => (
            ctx.change(Route::RevokeToken((*name).into()), json!({})),
            "/ui/tokens".to_owned(),
        ),
        _ => (Err(OpError::new(404, "no such form")), "/ui/".to_owned()),
    };
    match done {
        Ok(_) => redirect(&back),
        Err(e) => ctx.failed(&e, &back),
    }
}

/// A new admin token: its secret shown on the tokens page, this once.
fn new_token(ctx: &Ctx, f: &HashMap<String, String>) -> Resp {
    let days: Option<i64> = f.get("expires_days").and_then(|d| d.trim().parse().ok());
    let made = ctx
        .change(
            Route::CreateToken,
            json!({
                "name": f.get("name").map(|n| n.trim()).unwrap_or(""),
                "role": f.get("role").map(|r| r.trim()).unwrap_or(""),
                "expires_in_s": days.map(|d| d * 86_400),
            }),
        )
        .and_then(|v| {
            serde_json::from_value::<crate::admin_ops::NewTokenView>(v)
                .map_err(|e| OpError::new(500, e.to_string()))
        });
    let made = match made {
        Ok(t) => t,
        Err(e) => return ctx.failed(&e, "/ui/tokens"),
    };
    match ctx.read::<Vec<crate::admin_ops::TokenView>>(Route::ListTokens, "") {
        Ok(list) => html(
            StatusCode::OK,
            pages::tokens(&ctx.frame("Admin tokens"), &list, Some(&made)),
        ),
        Err(e) => ctx.failed(&e, "/ui/tokens"),
    }
}

/// A KMIP client certificate, issued and downloaded once (certificate
/// then private key, one PEM file).
fn new_client_cert(ctx: &Ctx, f: &HashMap<String, String>) -> Resp {
    let days: Option<u32> = f.get("days").and_then(|d| d.trim().parse().ok());
    let name = f
        .get("name")
        .map(|n| n.trim().to_owned())
        .unwrap_or_default();
    let made = ctx
        .change(
            Route::IssueClientCert,
            json!({ "name": name, "days": days }),
        )
        .and_then(|v| {
            serde_json::from_value::<crate::admin_ops::IssuedCertView>(v)
                .map_err(|e| OpError::new(500, e.to_string()))
        });
    let c = match made {
        Ok(c) => c,
        Err(e) => return ctx.failed(&e, "/ui/kmip"),
    };
    let pem = zeroize::Zeroizing::new(format!("{}{}", c.certificate_pem, c.key_pem));
    download(
        pem.as_bytes().to_vec(),
        "application/x-pem-file",
        &format!("{}.pem", pages::seg(&c.identity)),
    )
}

/// A backup made now, downloaded at once.
fn new_backup(ctx: &Ctx) -> Resp {
    use base64::Engine as _;
    let made = ctx.change(Route::CreateBackup, json!({})).and_then(|v| {
        serde_json::from_value::<crate::admin_ops::BackupMade>(v)
            .map_err(|e| OpError::new(500, e.to_string()))
    });
    let bytes = match made.and_then(|b| {
        base64::engine::general_purpose::STANDARD
            .decode(&b.data)
            .map_err(|e| OpError::new(500, e.to_string()))
    }) {
        Ok(b) => b,
        Err(e) => return ctx.failed(&e, "/ui/backups"),
    };
    let when = keyhold_core::time::format_rfc3339(keyhold_core::now()).replace(':', "");
    download(
        bytes,
        "application/octet-stream",
        &format!("keyhold-{when}.backup"),
    )
}

/// Saves a policy; a text that does not validate comes back in the form
/// with the validation's message.
fn save_policy(ctx: &Ctx, s: &str, k: Option<&&str>, f: &HashMap<String, String>) -> Resp {
    let text = f.get("text").cloned().unwrap_or_default();
    let route = Route::SetPolicy(s.into(), k.map(|k| (*k).to_owned()));
    match ctx.change(route, json!({ "text": text })) {
        Ok(_) => redirect(&policy_action(s, k)),
        Err(e) if e.status == 400 => match policy_page(ctx, s, k, Some(&e.error), Some(&text)) {
            Ok(m) => html(StatusCode::BAD_REQUEST, m),
            Err(e) => ctx.failed(&e, "/ui/policies"),
        },
        Err(e) => ctx.failed(&e, &policy_action(s, k)),
    }
}

/// A new SigV4 credential: its secret on a page of its own, or in the
/// JSON file the AWS KMS console imports (`keyhold store kms-config`).
fn new_credential(ctx: &Ctx, store: &str, as_file: bool) -> Resp {
    let back = pages::store_url(store);
    let made = ctx
        .change(Route::AddCredential(store.into()), json!({}))
        .and_then(|v| {
            serde_json::from_value::<crate::admin_ops::NewCredentialView>(v)
                .map_err(|e| OpError::new(500, e.to_string()))
        });
    let c = match made {
        Ok(c) => c,
        Err(e) => return ctx.failed(&e, &back),
    };
    if !as_file {
        let title = format!("New credential for {}", c.store);
        return html(
            StatusCode::OK,
            pages::credential(&ctx.frame(&title), &c, &back),
        );
    }
    let uri_path = format!("{}/kms/xks/v1", c.store.trim_end_matches('/'));
    let text = zeroize::Zeroizing::new(
        serde_json::to_string_pretty(&json!({
            "XksProxyUriPath": uri_path,
            "XksProxyAuthenticationCredential": {
                "AccessKeyId": c.access_key_id,
                "RawSecretAccessKey": c.secret_access_key,
            }
        }))
        .unwrap_or_default(),
    );
    download(
        format!("{}\n", text.as_str()).into_bytes(),
        "application/json",
        &format!(
            "keyhold-{}-kms-config.json",
            pages::seg(&c.store).replace('%', "_")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_from_other_sites_are_told_apart() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = hyper::HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin(&h(&[("sec-fetch-site", "same-origin")])));
        assert!(same_origin(&h(&[])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&h(&[
            ("origin", "https://127.0.0.1:8444"),
            ("host", "127.0.0.1:8444")
        ])));
        assert!(!same_origin(&h(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8444")
        ])));
    }

    #[test]
    fn the_fleet_shows_each_node_and_its_heartbeat() {
        use keyhold_service::api_tokens::Role;
        let who = AdminIdentity {
            name: "alice".into(),
            role: Role::Auditor,
            token_id: "t".into(),
        };
        let f = Frame {
            title: "Overview",
            who: Some(&who),
            csrf: "c",
            break_glass: Vec::new(),
        };
        let now_ms = 1_800_000_000_000;
        let node = |id: &str, age_ms: i64| keyhold_storage::NodeInfo {
            id: id.into(),
            started_ms: now_ms - 3_600_000,
            heartbeat_ms: now_ms - age_ms,
            ack_epoch: 3,
            lease_ms: 5_000,
        };
        let status: StatusView = serde_json::from_value(json!({
            "version": "0", "health": "ACTIVE", "ekms": [], "lockdown": false,
            "integrity": {"genuine": true, "refused": []}, "keys": {},
            "live_servers": 1, "servers": [], "data_dir": "d"
        }))
        .unwrap();
        let x = pages::OverviewExtra {
            rates: Vec::new(),
            fleet: vec![node("node-a", 1_000), node("node-b", 120_000)],
            audit: None,
            last_verification: None,
            storage: "PostgreSQL (shared by the fleet)",
            now_ms,
        };
        let html = pages::overview(&f, &status, &x).into_string();
        assert!(html.contains("node-a") && html.contains(">up<"), "{html}");
        assert!(html.contains("node-b") && html.contains("no heartbeat for 120 s"));
        assert!(html.contains("PostgreSQL"));
        // An auditor is offered no break glass.
        assert!(!html.contains("Lock down"));
    }

    #[test]
    fn search_pages_from_just_before_the_prefix() {
        let b = before("k2").unwrap();
        assert!(b.as_str() < "k2" && b.as_str() > "k1zz");
        assert!(keyhold_core::KeyId::parse(&b).is_ok());
        assert_eq!(before("k-"), Some("k".to_owned()));
        assert_eq!(before("-"), None);
        assert_eq!(before(""), None);
        let b = before("key-0999").unwrap();
        assert!(b.as_str() < "key-0999" && b.as_str() > "key-0998-999");
        assert_eq!(
            segments("/ui/stores/a%2Fb/keys/k1").unwrap(),
            ["stores", "a/b", "keys", "k1"]
        );
    }
}
