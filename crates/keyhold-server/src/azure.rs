//! The Azure EKM listener: TLS 1.3 only (TLS_AES_256_GCM_SHA384 and
//! TLS_AES_128_GCM_SHA256, as Managed HSM requires), HTTP/1.1, and client
//! certificates checked twice — at the handshake against every CA any
//! Azure key store names (so a stranger's certificate fails there), and
//! per request against the CAs and common name of the key store the path
//! prefix names (so one tenant's certificate never opens another's). Both
//! follow the bindings in storage: a CA added or removed by a custodian
//! counts from the next handshake, without a restart.

use crate::tls::{subject_common_names, CertSource, TlsError};
use keyhold_azure::{AzureApi, ClientCheck, Peer};
use keyhold_service::{AzureEkmBinding, KeyService, StoreApi, StoreApis};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::aws_lc_rs::cipher_suite;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::sync::{Arc, Weak};

/// TLS 1.3 with the two suites Managed HSM offers: made once (each
/// handshake's signature check reads its verification algorithms).
pub fn azure_provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    cipher_suite::TLS13_AES_256_GCM_SHA384,
                    cipher_suite::TLS13_AES_128_GCM_SHA256,
                ],
                ..keyhold_crypto::fips::tls_provider()
            })
        })
        .clone()
}

/// The CA certificates of a binding's PEM (an error says what is wrong).
pub fn parse_client_cas(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the client CA is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("the client CA holds no certificate".into());
    }
    let mut roots = RootCertStore::empty();
    for c in &certs {
        roots
            .add(c.clone())
            .map_err(|e| format!("a client CA certificate is not usable: {e}"))?;
    }
    Ok(certs)
}

fn verifier(cas: &[CertificateDer<'static>]) -> Option<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for c in cas {
        let _ = roots.add(c.clone());
    }
    if roots.is_empty() {
        return None;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), azure_provider())
        .allow_unauthenticated()
        .build()
        .ok()
}

/// Verifiers made from the service's bindings, rebuilt when they change.
struct Verifiers {
    /// The bindings these were made from.
    from: StoreApis,
    /// Every Azure store's CAs together (the handshake's check).
    any: Option<Arc<dyn ClientCertVerifier>>,
    /// Per store: its own CAs.
    per_store: Vec<(String, Option<Arc<dyn ClientCertVerifier>>)>,
}

/// Follows the key service's bindings for both checks.
pub struct AzureTrust {
    service: Weak<KeyService>,
    current: parking_lot::RwLock<Arc<Verifiers>>,
}

impl std::fmt::Debug for AzureTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AzureTrust")
    }
}

impl AzureTrust {
    pub fn new(service: &Arc<KeyService>) -> Arc<Self> {
        let t = Arc::new(Self {
            service: Arc::downgrade(service),
            current: parking_lot::RwLock::new(Arc::new(Verifiers {
                from: Arc::default(),
                any: None,
                per_store: Vec::new(),
            })),
        });
        t.now();
        t
    }

    /// The verifiers for the bindings as the service holds them now.
    fn now(&self) -> Arc<Verifiers> {
        let Some(service) = self.service.upgrade() else {
            return self.current.read().clone();
        };
        let apis = service.store_apis();
        {
            let cur = self.current.read();
            if Arc::ptr_eq(&cur.from, &apis) {
                return cur.clone();
            }
        }
        let mut all = Vec::new();
        let mut per_store = Vec::new();
        for (p, api) in apis.iter() {
            if let StoreApi::AzureEkm(b) = api {
                let cas = parse_client_cas(&b.client_ca_pem).unwrap_or_else(|e| {
                    tracing::warn!(store = %p, error = e, "Azure key store's client CA unusable: it refuses every client");
                    Vec::new()
                });
                per_store.push((b.client_ca_pem.clone(), verifier(&cas)));
                all.extend(cas);
            }
        }
        let v = Arc::new(Verifiers {
            from: apis,
            any: verifier(&all),
            per_store,
        });
        *self.current.write() = v.clone();
        v
    }
}

/// The handshake's verifier: a client certificate is optional (without
/// one, each request answers 401 Unauthorized as a ProxyError), but one
/// that is sent must chain to a CA some Azure key store names.
#[derive(Debug)]
pub struct HandshakeVerifier(pub Arc<AzureTrust>);

fn refused() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
}

impl ClientCertVerifier for HandshakeVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The CAs change while the verifier lives: no hints (allowed).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match &self.0.now().any {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(refused()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.3 only on this listener.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &azure_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        azure_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ClientCheck for AzureTrust {
    fn check(&self, binding: &AzureEkmBinding, chain: &[Vec<u8>]) -> Result<String, String> {
        let v = self.now();
        let Some((leaf, rest)) = chain.split_first() else {
            return Err("no client certificate".into());
        };
        let verifier = v
            .per_store
            .iter()
            .find(|(pem, _)| *pem == binding.client_ca_pem)
            .and_then(|(_, v)| v.clone())
            .ok_or("the key store's client CA is unusable")?;
        let leaf = CertificateDer::from(leaf.as_slice());
        let rest: Vec<_> = rest
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        verifier
            .verify_client_cert(&leaf, &rest, UnixTime::now())
            .map_err(|e| format!("not issued by this key store's client CA: {e}"))?;
        let cns = subject_common_names(&leaf);
        match cns.as_slice() {
            [cn] if cn.eq_ignore_ascii_case(&binding.client_cn) => Ok(cn.clone()),
            _ => Err(format!(
                "subject common name {cns:?} is not {:?}",
                binding.client_cn
            )),
        }
    }
}

/// The listener's TLS configuration.
pub fn server_config(
    certs: Arc<CertSource>,
    trust: Arc<AzureTrust>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(azure_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(HandshakeVerifier(trust)))
        .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves the Azure EKM API on `listener` until the process ends.
pub async fn serve_azure(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    api: Arc<AzureApi>,
    conns: Arc<crate::conn::ConnLimiter>,
    request_timeout: std::time::Duration,
) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioIo, TokioTimer};
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed (Azure EKM)");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = conns.admit(peer.ip()) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, api) = (tls.clone(), api.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let stream =
                match tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "Azure EKM TLS handshake refused");
                        return;
                    }
                    Err(_) => return,
                };
            let chain: Vec<Vec<u8>> = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|cs| cs.iter().map(|c| c.as_ref().to_vec()).collect())
                .unwrap_or_default();
            let client = Arc::new(Peer::new(chain));
            let svc = service_fn(move |req| {
                let (api, client) = (api.clone(), client.clone());
                async move { Ok::<_, std::convert::Infallible>(api.handle(req, Some(client)).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(request_timeout)
                .max_buf_size(16 * 1024)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = conn.await;
        });
    }
}
