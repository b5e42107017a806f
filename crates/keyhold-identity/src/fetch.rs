//! Fetching a JWK set: one HTTPS GET (HTTP/1.1, TLS 1.2/1.3 verified
//! against a pinned CA or the system's CAs), within a deadline and a size
//! limit. Plain HTTP is refused: whoever could change the keys in transit
//! could mint tokens.

use crate::Issuer;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use keyhold_crypto::jwt::Jwks;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

/// The system's CA bundle (Debian's `ca-certificates`).
pub(crate) const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Largest JWK set accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is not an https:// URL")]
    NotHttps(String),
    #[error("the CA certificates are not usable: {0}")]
    Ca(String),
    #[error("{0}")]
    Network(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Keys(String),
}

fn roots(ca_pem: &Option<String>) -> Result<rustls::RootCertStore, FetchError> {
    let pem = match ca_pem {
        Some(p) => p.clone().into_bytes(),
        None => {
            std::fs::read(SYSTEM_CAS).map_err(|e| FetchError::Ca(format!("{SYSTEM_CAS}: {e}")))?
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| FetchError::Ca(e.to_string()))?;
        // A system bundle may hold certificates webpki cannot use: skip them.
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(FetchError::Ca("no certificate".into()));
    }
    Ok(roots)
}

/// GETs `issuer.jwks_url` and parses the JWK set.
pub(crate) async fn get_jwks(issuer: &Issuer, timeout: Duration) -> Result<Jwks, FetchError> {
    match tokio::time::timeout(timeout, get(issuer)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout(timeout)),
    }
}

async fn get(issuer: &Issuer) -> Result<Jwks, FetchError> {
    let (status, body) = request(
        hyper::Method::GET,
        &issuer.jwks_url,
        &issuer.jwks_ca_pem,
        None,
    )
    .await?;
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    Jwks::parse(&body).map_err(|e| FetchError::Keys(e.to_string()))
}

/// One HTTPS request (HTTP/1.1; the server verified against `ca_pem` or
/// the system's CAs), a JSON body if given; answers the status and body
/// (at most 1 MiB). Plain HTTP is refused.
pub async fn https_request(
    method: hyper::Method,
    url: &str,
    ca_pem: &Option<String>,
    json_body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(u16, Bytes), FetchError> {
    match tokio::time::timeout(timeout, request(method, url, ca_pem, json_body)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout(timeout)),
    }
}

async fn request(
    method: hyper::Method,
    url: &str,
    ca_pem: &Option<String>,
    json_body: Option<Vec<u8>>,
) -> Result<(u16, Bytes), FetchError> {
    let url = &url.to_owned();
    let uri: hyper::Uri = url.parse().map_err(|_| FetchError::NotHttps(url.clone()))?;
    if uri.scheme_str() != Some("https") {
        return Err(FetchError::NotHttps(url.clone()));
    }
    let host = uri
        .host()
        .ok_or_else(|| FetchError::NotHttps(url.clone()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let cfg =
        rustls::ClientConfig::builder_with_provider(Arc::new(keyhold_crypto::fips::tls_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Network(e.to_string()))?
            .with_root_certificates(roots(ca_pem)?)
            .with_no_client_auth();
    keyhold_crypto::fips::check_tls("the HTTPS client (JWKS, KACLS peers)", cfg.fips())
        .map_err(FetchError::Network)?;
    let name =
        ServerName::try_from(host.clone()).map_err(|e| FetchError::Network(e.to_string()))?;
    let net = |e: std::io::Error| FetchError::Network(format!("{host}:{port}: {e}"));
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(net)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(net)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| FetchError::Network(e.to_string()))?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host.as_str(), |a| a.as_str());
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, "keyhold");
    if json_body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(json_body.unwrap_or_default())))
        .map_err(|e| FetchError::Network(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| FetchError::Network(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| FetchError::Network(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}
