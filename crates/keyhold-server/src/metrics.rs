//! The Prometheus endpoint, on its own (plain HTTP, loopback by default)
//! listener: XKS request counts and latency histograms by operation, key
//! store and outcome; keys by state; external key manager (HSM) health;
//! caches; audit log; lockdown.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use keyhold_service::{HealthStatus, KeyService};
use keyhold_xks::metrics::escape;
use keyhold_xks::XksApi;
use std::fmt::Write;
use std::sync::Arc;

/// The whole exposition. Blocking (storage, HSM health): call it off the
/// async workers.
pub fn render(api: &XksApi, service: &KeyService, conns: &crate::conn::ConnLimiter) -> String {
    let mut out = String::with_capacity(8 * 1024);
    api.metrics.render(&mut out);

    out.push_str("# HELP keyhold_xks_connections_open Connections open on the XKS listener.\n# TYPE keyhold_xks_connections_open gauge\n");
    let _ = writeln!(out, "keyhold_xks_connections_open {}", conns.open());
    out.push_str("# HELP keyhold_xks_connections_refused_total Connections closed at once because a cap (in all, or per source address) was reached.\n# TYPE keyhold_xks_connections_refused_total counter\n");
    let _ = writeln!(
        out,
        "keyhold_xks_connections_refused_total {}",
        conns.refused()
    );

    out.push_str("# HELP keyhold_keys Keys by key store, lifecycle state and status.\n# TYPE keyhold_keys gauge\n");
    match service.key_state_counts() {
        Ok(rows) => {
            for (store, state, status, n) in rows {
                let _ = writeln!(
                    out,
                    "keyhold_keys{{store=\"{}\",state=\"{state}\",status=\"{status}\"}} {n}",
                    escape(&store)
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count keys"),
    }

    out.push_str("# HELP keyhold_ekm_health External key manager health: 1 ACTIVE, 0.5 DEGRADED, 0 UNAVAILABLE.\n# TYPE keyhold_ekm_health gauge\n");
    for e in service.health().ekms {
        let v = match e.status {
            HealthStatus::Active => 1.0,
            HealthStatus::Degraded => 0.5,
            HealthStatus::Unavailable => 0.0,
        };
        let _ = writeln!(
            out,
            "keyhold_ekm_health{{id=\"{}\",model=\"{}\"}} {v}",
            escape(&e.id),
            escape(&e.model)
        );
    }

    let (highest, past_warning) = service.gcm_figures();
    out.push_str("# HELP keyhold_gcm_random_iv_encryptions_highest The most AES-GCM encryptions with random IVs one key version or object has made (as this server saw): rotated at 2^31, refused at 2^32.\n# TYPE keyhold_gcm_random_iv_encryptions_highest gauge\n");
    let _ = writeln!(out, "keyhold_gcm_random_iv_encryptions_highest {highest}");
    out.push_str("# HELP keyhold_gcm_keys_past_warning Key versions and objects past 2^30 AES-GCM encryptions with random IVs.\n# TYPE keyhold_gcm_keys_past_warning gauge\n");
    let _ = writeln!(out, "keyhold_gcm_keys_past_warning {past_warning}");

    out.push_str("# HELP keyhold_cached_keys Keys held unwrapped in the request-path cache.\n# TYPE keyhold_cached_keys gauge\n");
    let _ = writeln!(out, "keyhold_cached_keys {}", service.cached_keys());
    out.push_str("# HELP keyhold_integrity_failures_total Stored rows refused because they did not verify (written or changed outside Keyhold).\n# TYPE keyhold_integrity_failures_total counter\n");
    let _ = writeln!(
        out,
        "keyhold_integrity_failures_total {}",
        service.integrity_failures()
    );
    out.push_str("# HELP keyhold_lockdown 1 while `keyhold lockdown` is in force.\n# TYPE keyhold_lockdown gauge\n");
    let _ = writeln!(
        out,
        "keyhold_lockdown {}",
        u8::from(service.is_locked_down())
    );

    if let Some(a) = api.audit_status() {
        out.push_str("# HELP keyhold_audit_records Records in this server's audit chain.\n# TYPE keyhold_audit_records counter\n");
        let _ = writeln!(
            out,
            "keyhold_audit_records{{chain=\"{}\"}} {}",
            escape(&a.chain),
            a.records
        );
        out.push_str("# HELP keyhold_audit_failing 1 while audit records cannot be written (key use is refused).\n# TYPE keyhold_audit_failing gauge\n");
        let _ = writeln!(
            out,
            "keyhold_audit_failing {}",
            u8::from(a.failing.is_some())
        );
        out.push_str("# HELP keyhold_audit_low_disk 1 while the audit volume is low on space.\n# TYPE keyhold_audit_low_disk gauge\n");
        let _ = writeln!(out, "keyhold_audit_low_disk {}", u8::from(a.low_disk));
        if let Some(f) = a.free_bytes {
            out.push_str("# HELP keyhold_audit_free_bytes Free space on the audit volume.\n# TYPE keyhold_audit_free_bytes gauge\n");
            let _ = writeln!(out, "keyhold_audit_free_bytes {f}");
        }
    }
    // Every front-end (XKS, KMIP, Azure EKM, DKE, the admin API, the
    // console), from the records written to the audit log; per front-end
    // only (paths that unauthenticated callers make up must not become
    // series).
    let hour = service.audit().last_hour();
    out.push_str("# HELP keyhold_frontend_requests_last_hour Requests per front-end over the last hour (as recorded in the audit log).\n# TYPE keyhold_frontend_requests_last_hour gauge\n");
    for s in &hour {
        let n: u64 = s.per_minute.iter().map(|f| f.requests).sum();
        let _ = writeln!(
            out,
            "keyhold_frontend_requests_last_hour{{frontend=\"{}\"}} {n}",
            escape(&s.frontend)
        );
    }
    out.push_str("# HELP keyhold_frontend_errors_last_hour Refused or failed requests per front-end over the last hour.\n# TYPE keyhold_frontend_errors_last_hour gauge\n");
    for s in &hour {
        let n: u64 = s.per_minute.iter().map(|f| f.errors).sum();
        let _ = writeln!(
            out,
            "keyhold_frontend_errors_last_hour{{frontend=\"{}\"}} {n}",
            escape(&s.frontend)
        );
    }
    out
}

/// Serves GET /metrics on `addr` until the process ends.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    api: Arc<XksApi>,
    service: Arc<KeyService>,
    require_token: bool,
    conns: Arc<crate::conn::ConnLimiter>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (api, service, conns) = (api.clone(), service.clone(), conns.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (api, service, conns) = (api.clone(), service.clone(), conns.clone());
                async move {
                    let resp = if req.uri().path() != "/metrics" {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r
                    } else if require_token && !scraper_allowed(&req, &service).await {
                        let mut r = Response::new(Full::new(Bytes::from_static(
                            b"an admin token is required (Authorization: Bearer)\n",
                        )));
                        *r.status_mut() = StatusCode::UNAUTHORIZED;
                        r
                    } else {
                        let text =
                            tokio::task::spawn_blocking(move || render(&api, &service, &conns))
                                .await
                                .unwrap_or_default();
                        let mut r = Response::new(Full::new(Bytes::from(text)));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static(
                                "text/plain; version=0.0.4; charset=utf-8",
                            ),
                        );
                        r
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Whether a scrape carries a valid admin token (any role may read metrics).
async fn scraper_allowed(req: &Request<hyper::body::Incoming>, service: &Arc<KeyService>) -> bool {
    use crate::admin_api::{authenticate, bearer};
    matches!(
        authenticate(service, bearer(req.headers())).await,
        Ok(Some(_))
    )
}
