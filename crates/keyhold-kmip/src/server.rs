//! The KMIP listener: TLS 1.2+ with mandatory client certificates, one
//! TTLV request message at a time per connection.
//!
//! Framing is the only thing read before a request is whole: the 8-byte
//! header of the Request Message says how long it is. A header that is not
//! a Request Message, or that claims more than the limit, gets an Invalid
//! Message answer and the connection is closed (the stream cannot be
//! re-synchronised); everything else gets a KMIP response.

use crate::message::{self, KmipError, Version};
use crate::ops::{Client, Kmip};
use crate::tags;
use crate::ttlv::{self, read_header, HEADER_LEN};
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a connection may sit idle between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the rest of a message may take once its header arrived.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a client certificate's serial number was revoked.
pub type IsRevoked = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A TLS configuration that requires a client certificate chaining to one
/// of `client_roots`, and not revoked.
pub fn tls_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    certs: Arc<dyn rustls::server::ResolvesServerCert>,
    client_roots: RootCertStore,
    revoked: IsRevoked,
) -> Result<Arc<ServerConfig>, String> {
    let inner =
        WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone())
            .build()
            .map_err(|e| format!("KMIP client CA: {e}"))?;
    let verifier = Arc::new(RevocationChecking { inner, revoked });
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    Ok(Arc::new(cfg))
}

/// The identity a client certificate stands for: its subject common name
/// when it has exactly one, else (none, empty, or several, which would be
/// ambiguous) the SHA-256 of the certificate. Never empty: an object
/// without an owner belongs to no client.
pub fn identity_of(cert: &CertificateDer<'_>) -> String {
    if let Ok((_, c)) = x509_parser::parse_x509_certificate(cert.as_ref()) {
        let mut cns = c.subject().iter_common_name();
        if let (Some(cn), None) = (cns.next(), cns.next()) {
            if let Some(cn) = cn.as_str().ok().filter(|cn| !cn.is_empty()) {
                return cn.to_owned();
            }
        }
    }
    format!(
        "sha256:{}",
        hex::encode(keyhold_crypto::sha256(&[cert.as_ref()]))
    )
}

/// WebPKI's checks (chain, validity), then the revocation list: a revoked
/// certificate fails the handshake itself (alert: certificate revoked).
struct RevocationChecking {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    revoked: IsRevoked,
}

impl std::fmt::Debug for RevocationChecking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationChecking")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl rustls::server::danger::ClientCertVerifier for RevocationChecking {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if serial_of(end_entity).is_some_and(|s| (self.revoked)(&s)) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A certificate's serial number: lowercase hex without leading zero
/// bytes (as `keyhold kmip client-cert list` shows it).
pub fn serial_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let raw = c.raw_serial();
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    Some(hex::encode(&raw[first..]))
}

/// What the listener has seen since it started (for `keyhold kmip status`
/// through the admin API). A connection finds its identity's counters once;
/// each message then only bumps atomics.
#[derive(Default)]
pub struct ListenerStats {
    open: AtomicU64,
    total: AtomicU64,
    refused: AtomicU64,
    messages: AtomicU64,
    clients: std::sync::Mutex<BTreeMap<String, Arc<ClientCounters>>>,
}

#[derive(Default)]
struct ClientCounters {
    open: AtomicU64,
    connections: AtomicU64,
    messages: AtomicU64,
    last_seen_ms: AtomicI64,
}

impl ClientCounters {
    fn seen(&self) {
        self.last_seen_ms.store(keyhold_core::now() * 1000, Relaxed);
    }
}

/// One client identity's share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Connections open now.
    pub open: u64,
    pub connections: u64,
    pub messages: u64,
    /// Unix milliseconds of its last message (or connection).
    pub last_seen_ms: i64,
}

/// A copy of [`ListenerStats`] at one moment.
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    pub connections_open: u64,
    pub connections_total: u64,
    pub handshakes_refused: u64,
    pub messages: u64,
    pub clients: Vec<(String, ClientStats)>,
}

impl ListenerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let client = |c: &ClientCounters| ClientStats {
            open: c.open.load(Relaxed),
            connections: c.connections.load(Relaxed),
            messages: c.messages.load(Relaxed),
            last_seen_ms: c.last_seen_ms.load(Relaxed),
        };
        StatsSnapshot {
            connections_open: self.open.load(Relaxed),
            connections_total: self.total.load(Relaxed),
            handshakes_refused: self.refused.load(Relaxed),
            messages: self.messages.load(Relaxed),
            clients: self
                .clients
                .lock()
                .map(|c| c.iter().map(|(k, v)| (k.clone(), client(v))).collect())
                .unwrap_or_default(),
        }
    }

    /// Counts a new connection of `identity`; the guard counts it closed.
    fn connected(&self, identity: &str) -> OpenGuard<'_> {
        let c = self
            .clients
            .lock()
            .map(|mut m| m.entry(identity.to_owned()).or_default().clone())
            .unwrap_or_default();
        self.open.fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        c.open.fetch_add(1, Relaxed);
        c.connections.fetch_add(1, Relaxed);
        c.seen();
        OpenGuard(self, c)
    }
}

/// A connection open for its life, and its identity's counters.
struct OpenGuard<'a>(&'a ListenerStats, Arc<ClientCounters>);

impl OpenGuard<'_> {
    fn message(&self) {
        self.0.messages.fetch_add(1, Relaxed);
        self.1.messages.fetch_add(1, Relaxed);
        self.1.seen();
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
        self.1.open.fetch_sub(1, Relaxed);
    }
}

/// Serves KMIP on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    kmip: Arc<Kmip>,
    stats: Arc<ListenerStats>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "KMIP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let (kmip, stats) = (kmip.clone(), stats.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, peer, acceptor, kmip, &stats).await {
                tracing::debug!(%peer, error = %e, "KMIP connection ended");
            }
        });
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    kmip: Arc<Kmip>,
    stats: &ListenerStats,
) -> Result<(), String> {
    let mut tls = handshake(stream, peer, &acceptor, stats).await?;
    let (identity, serial) = {
        let (_, conn) = tls.get_ref();
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| "no client certificate".to_owned())?;
        (identity_of(cert), serial_of(cert))
    };
    // A revoked certificate fails the handshake (see RevocationChecking);
    // a connection already open when it was revoked closes at its next
    // message.
    let revoked = || serial.as_deref().is_some_and(|s| kmip.is_revoked(s));
    let open = stats.connected(&identity);
    let client = Arc::new(Client {
        identity,
        peer: Some(peer.to_string()),
    });
    let max = kmip.limits().max_len;
    loop {
        let mut h = [0u8; HEADER_LEN];
        match tokio::time::timeout(IDLE_TIMEOUT, tls.read_exact(&mut h)).await {
            Err(_) => return Ok(()),
            Ok(Err(_)) => return Ok(()), // closed (or closed mid-header)
            Ok(Ok(_)) => {}
        }
        let (tag, ty, len) = read_header(&h);
        let len = len as usize;
        if let Some(why) = header_refusal(tag, ty, len, max) {
            let resp = message::error_response(
                Version::new(1, 0),
                keyhold_core::now(),
                &KmipError::invalid_message(why.clone()),
            );
            let _ = tls.write_all(&resp.encode()).await;
            let _ = tls.shutdown().await;
            return Err(why);
        }
        if revoked() {
            tracing::info!(%peer, "KMIP client certificate revoked: connection closed");
            let _ = tls.shutdown().await;
            return Err("revoked client certificate".into());
        }
        open.message();
        let mut buf = vec![0u8; HEADER_LEN + len];
        buf[..HEADER_LEN].copy_from_slice(&h);
        match tokio::time::timeout(BODY_TIMEOUT, tls.read_exact(&mut buf[HEADER_LEN..])).await {
            Ok(Ok(_)) => {}
            _ => return Err("the connection ended inside a message".into()),
        }
        let resp = answer(&kmip, &client, buf).await?;
        tls.write_all(&resp).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
    }
}

/// The TLS handshake, bounded in time; refusals are counted.
async fn handshake(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    stats: &ListenerStats,
) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            stats.refused.fetch_add(1, Relaxed);
            tracing::info!(%peer, error = %e, "KMIP TLS handshake refused");
            Err(e.to_string())
        }
        Err(_) => {
            stats.refused.fetch_add(1, Relaxed);
            Err("TLS handshake timed out".to_owned())
        }
    }
}

/// Why a message header is refused before its body is read, if it is.
fn header_refusal(tag: u32, ty: u8, len: usize, max: usize) -> Option<String> {
    if tag != tags::REQUEST_MESSAGE || ty != ttlv::ty::STRUCTURE {
        Some("the message does not start with a Request Message structure".to_owned())
    } else if len > max.saturating_sub(HEADER_LEN) {
        Some(format!(
            "the message claims {len} bytes, over the limit of {max}"
        ))
    } else if !len.is_multiple_of(8) {
        Some(format!("the message length {len} is not a multiple of 8"))
    } else {
        None
    }
}

/// Answers one request message. Reads and crypto answer on this worker;
/// writes (which wait for the disk) and HSM work go to a blocking thread.
/// The request is decoded once; a message that does not decode is
/// answered (and audited) by `handle_bytes`.
async fn answer(kmip: &Arc<Kmip>, client: &Arc<Client>, buf: Vec<u8>) -> Result<Vec<u8>, String> {
    match crate::ttlv::Ttlv::decode(&buf, kmip.limits()) {
        Ok(req) if kmip.is_quick(&req) => Ok(kmip.handle(client, &req).encode()),
        decoded => {
            let k = kmip.clone();
            let c = client.clone();
            tokio::task::spawn_blocking(move || match decoded {
                Ok(req) => k.handle(&c, &req).encode(),
                Err(_) => k.handle_bytes(&c, &buf),
            })
            .await
            .map_err(|e| format!("request task failed: {e}"))
        }
    }
}
