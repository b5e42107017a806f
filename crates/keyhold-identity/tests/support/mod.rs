//! A JWK-set server on loopback HTTPS (its own throw-away CA), for the
//! tests and the benchmark.

#![allow(dead_code)]

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub(crate) struct JwksServer {
    pub(crate) port: u16,
    pub(crate) ca_pem: String,
    pub(crate) body: Arc<parking_lot::Mutex<String>>,
    pub(crate) hits: Arc<AtomicU64>,
    pub(crate) down: Arc<AtomicBool>,
}

pub(crate) async fn serve_jwks(initial: String) -> JwksServer {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let body = Arc::new(parking_lot::Mutex::new(initial));
    let hits = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let (b, h, d) = (body.clone(), hits.clone(), down.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let (acceptor, b, h, d) = (acceptor.clone(), b.clone(), h.clone(), d.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |_req| {
                    let (b, h, d) = (b.clone(), h.clone(), d.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        let mut r = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(b.lock().clone()),
                        ));
                        if d.load(Ordering::SeqCst) {
                            *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    JwksServer {
        port,
        ca_pem: ca.pem(),
        body,
        hits,
        down,
    }
}
