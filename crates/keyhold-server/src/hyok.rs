//! The HTTPS listener for the hold-your-own-key APIs that end users'
//! applications call with bearer tokens: Microsoft Double Key Encryption
//! and Google Workspace client-side encryption (KACLS). TLS 1.2/1.3 with the server certificate (no client
//! certificates: the tokens authenticate), HTTP/1.1; each request goes to
//! the front-end whose key store's path prefix it starts with.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use keyhold_cse::CseApi;
use keyhold_dke::DkeApi;
use std::sync::Arc;
use std::time::Duration;

/// The front-ends served here.
pub struct HyokApis {
    pub dke: Arc<DkeApi>,
    pub cse: Arc<CseApi>,
}

impl HyokApis {
    /// Whether the longest store prefix `path` starts with is a CSE store's.
    fn cse_prefixes(&self, path: &str) -> bool {
        use keyhold_service::StoreApi;
        let apis = self.cse.service().store_apis();
        apis.iter()
            .filter_map(|(_, a)| match a {
                StoreApi::GoogleCse(b) => Some((b.path_prefix.as_str(), true)),
                StoreApi::MsDke(b) => Some((b.path_prefix.as_str(), false)),
                _ => None,
            })
            .filter(|(p, _)| path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
            .max_by_key(|(p, _)| p.len())
            .is_some_and(|(_, cse)| cse)
    }
}

fn not_found() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(
        br#"{"code":"NotFound","message":"no key store serves a hold-your-own-key API at this path"}"#,
    )));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves the listener until the process ends.
pub async fn serve_hyok(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    apis: Arc<HyokApis>,
    conns: Arc<crate::conn::ConnLimiter>,
    request_timeout: Duration,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed (hold-your-own-key listener)");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = conns.admit(peer.ip()) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, apis) = (tls.clone(), apis.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake refused (hold-your-own-key listener)");
                    return;
                }
                Err(_) => return,
            };
            let svc = service_fn(move |req| {
                let apis = apis.clone();
                async move {
                    // The store's binding says which front-end a path is.
                    let is_cse = {
                        let path = req.uri().path();
                        apis.cse_prefixes(path)
                    };
                    let r = if is_cse {
                        apis.cse.handle(req).await
                    } else {
                        apis.dke.handle(req).await
                    };
                    let r = r.unwrap_or_else(not_found);
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(request_timeout)
                .max_buf_size(16 * 1024)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
