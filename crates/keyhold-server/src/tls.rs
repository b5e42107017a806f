//! TLS for the XKS listener: rustls with the aws-lc-rs provider, TLS 1.2 and
//! 1.3 limited to the XKS specification's cipher suites, and optional mutual
//! TLS that checks both the client CA and the client subject name.
//!
//! Also a small local CA used by `keyhold init` (and tests) to issue a server
//! certificate for local use.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::aws_lc_rs::cipher_suite;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider limited to the XKS suites:
/// TLS_AES_256_GCM_SHA384 and TLS_CHACHA20_POLY1305_SHA256 (TLS 1.3);
/// ECDHE-ECDSA/RSA-AES256-GCM-SHA384 (TLS 1.2).
pub fn xks_provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: keyhold_crypto::fips::tls_suites(vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ]),
        ..keyhold_crypto::fips::tls_provider()
    })
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(path, e))?;
    if certs.is_empty() {
        return Err(read_err(path, "no certificate found"));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| read_err(path, e))
}

/// A server certificate and key read from files, read again when the
/// files change (see [`CertSource::reload_if_changed`]) or on request
/// (SIGHUP), so that certificates from certbot or a PKI can be rotated
/// without a restart. Each new handshake gets the current pair; a pair that
/// does not load (half written, or a key that does not match the
/// certificate) leaves the previous one in place.
pub struct CertSource {
    cert: PathBuf,
    key: PathBuf,
    current: parking_lot::RwLock<Arc<rustls::sign::CertifiedKey>>,
    seen: parking_lot::Mutex<Option<FileStamps>>,
}

/// What the two files looked like when last loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamps(Vec<(Option<std::time::SystemTime>, u64)>);

impl FileStamps {
    fn of(paths: &[&Path]) -> Self {
        Self(
            paths
                .iter()
                .map(|p| match std::fs::metadata(p) {
                    Ok(m) => (m.modified().ok(), m.len()),
                    Err(_) => (None, 0),
                })
                .collect(),
        )
    }
}

impl std::fmt::Debug for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSource")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CertSource {
    /// Loads the pair (failing if it does not load).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let stamps = FileStamps::of(&[cert, key]);
        let ck = certified_key(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: parking_lot::RwLock::new(Arc::new(ck)),
            seen: parking_lot::Mutex::new(Some(stamps)),
        }))
    }

    /// Reads the pair again if either file changed (or always, with
    /// `force`). Returns whether a new pair is now served.
    pub fn reload_if_changed(&self, force: bool) -> Result<bool, TlsError> {
        let stamps = FileStamps::of(&[&self.cert, &self.key]);
        let mut seen = self.seen.lock();
        if !force && seen.as_ref() == Some(&stamps) {
            return Ok(false);
        }
        let ck = certified_key(&self.cert, &self.key)?;
        *seen = Some(stamps);
        *self.current.write() = Arc::new(ck);
        Ok(true)
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

impl rustls::server::ResolvesServerCert for CertSource {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(cert: &Path, key: &Path) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let signing = keyhold_crypto::fips::tls_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?;
    let ck = rustls::sign::CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        TlsError::Config(format!(
            "{} and its key do not belong together: {e}",
            cert.display()
        ))
    })?;
    Ok(ck)
}

/// Builds the server TLS configuration.
pub fn server_config(
    certs: Arc<CertSource>,
    client_ca: Option<&Path>,
    client_subject: Option<&str>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = xks_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (client_ca, client_subject) {
        (Some(ca), Some(subject)) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
            }
            let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(SubjectCheckingVerifier {
                inner,
                subject: subject.to_owned(),
            }))
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Config(
                "mutual TLS needs both a client CA and a client subject".into(),
            ))
        }
    };
    let mut cfg = builder.with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Verifies the client chain with WebPKI, then requires the end-entity
/// certificate's subject to hold exactly one common name, equal to the
/// configured one, so a handshake with any other subject fails (a subject
/// with several common names is refused even when one of them matches).
#[derive(Debug)]
struct SubjectCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    subject: String,
}

/// The subject common names of a DER certificate.
pub fn subject_common_names(der: &[u8]) -> Vec<String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect(),
        Err(_) => Vec::new(),
    }
}

impl ClientCertVerifier for SubjectCheckingVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cns = subject_common_names(end_entity);
        if matches!(cns.as_slice(), [cn] if cn == &self.subject) {
            return Ok(ok);
        }
        tracing::warn!(
            presented = ?cns,
            expected = %self.subject,
            "TLS client certificate subject refused"
        );
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A certificate and its private key, PEM-encoded.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A small local certificate authority (ECDSA P-256), for local use and tests.
pub struct LocalCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_type: KeyType,
}

/// The key of a certificate Keyhold makes: ECDSA P-256 (the default), or
/// RSA-3072 for clients that cannot do ECDSA (some KMIP clients).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    #[default]
    Ecdsa,
    Rsa,
}

impl KeyType {
    fn generate(self) -> Result<KeyPair, TlsError> {
        match self {
            KeyType::Ecdsa => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::Rsa => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
            }
        }
        .map_err(rc)
    }
}

/// A local CA kept on disk (certificate and key PEM files), for issuing
/// client certificates later (`keyhold kmip client-cert issue`).
pub struct StoredCa {
    issuer: rcgen::Issuer<'static, KeyPair>,
}

fn ca_params(common_name: &str) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn client_params(common_name: &str) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(p)
}

/// Signs a leaf certificate (digital signature only) with a fresh key.
fn sign_new(
    p: CertificateParams,
    issuer: &rcgen::Issuer<'_, KeyPair>,
) -> Result<IssuedCert, TlsError> {
    sign_new_with(p, issuer, KeyType::Ecdsa)
}

/// [`sign_new`] with a key of this type.
fn sign_new_with(
    mut p: CertificateParams,
    issuer: &rcgen::Issuer<'_, KeyPair>,
    key_type: KeyType,
) -> Result<IssuedCert, TlsError> {
    p.key_usages = match key_type {
        KeyType::Ecdsa => vec![KeyUsagePurpose::DigitalSignature],
        // RSA key exchange in TLS 1.2 also needs key encipherment.
        KeyType::Rsa => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ],
    };
    let key = key_type.generate()?;
    let cert = p.signed_by(&key, issuer).map_err(rc)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl StoredCa {
    /// Makes a new CA: (the CA, its certificate PEM, its key PEM).
    pub fn create(common_name: &str) -> Result<(Self, String, String), TlsError> {
        let key = KeyPair::generate().map_err(rc)?;
        let key_pem = key.serialize_pem();
        let cert = ca_params(common_name)?.self_signed(&key).map_err(rc)?;
        let ca = Self::load(common_name, &key_pem)?;
        Ok((ca, cert.pem(), key_pem))
    }

    /// Loads a CA made by [`StoredCa::create`] with the same common name.
    pub fn load(common_name: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(rc)?;
        Ok(Self {
            issuer: rcgen::Issuer::new(ca_params(common_name)?, key),
        })
    }

    /// Issues a client certificate with subject CN=`common_name`, valid
    /// from five minutes ago (clocks differ) for `days` days, with a random
    /// serial number: returns it and the serial (lowercase hex, as
    /// `keyhold_kmip::server::serial_of` reads it back).
    pub fn issue_client_for(
        &self,
        common_name: &str,
        days: u32,
        key_type: KeyType,
    ) -> Result<(IssuedCert, String), TlsError> {
        let mut p = client_params(common_name)?;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::days(i64::from(days));
        let mut serial = [0u8; 16];
        keyhold_crypto::fill_random(&mut serial).map_err(|e| TlsError::Config(e.to_string()))?;
        serial[0] &= 0x7f; // positive
        serial[0] |= 0x40; // and 16 bytes long, as DER keeps it
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let issued = sign_new_with(p, &self.issuer, key_type)?;
        Ok((issued, hex::encode(serial)))
    }
}

fn rc(e: rcgen::Error) -> TlsError {
    TlsError::Config(e.to_string())
}

impl LocalCa {
    pub fn new(common_name: &str) -> Result<Self, TlsError> {
        Self::new_with(common_name, KeyType::Ecdsa)
    }

    /// A CA whose own key, and the server certificates it issues, are of
    /// this type.
    pub fn new_with(common_name: &str, key_type: KeyType) -> Result<Self, TlsError> {
        let key = key_type.generate()?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(ca_params(common_name)?, key).map_err(rc)?,
            key_type,
        })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a server certificate for DNS names / IP addresses.
    pub fn issue_server(&self, names: &[&str]) -> Result<IssuedCert, TlsError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names.clone()).map_err(rc)?;
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        sign_new_with(p, &self.issuer, self.key_type)
    }

    /// Issues a client certificate with subject CN=`common_name`.
    pub fn issue_client(&self, common_name: &str) -> Result<IssuedCert, TlsError> {
        sign_new(client_params(common_name)?, &self.issuer)
    }

    /// Issues a client certificate whose subject holds two common names,
    /// `first` then `second`. Such certificates exist (a CA may issue
    /// them); the subject checks must not be fooled by them.
    pub fn issue_client_two_names(
        &self,
        first: &str,
        second: &str,
    ) -> Result<IssuedCert, TlsError> {
        let mut p = client_params(first)?;
        // The CN attribute type (2.5.4.3) a second time, under another key
        // of rcgen's name map.
        p.distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 3]), second);
        sign_new(p, &self.issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ca_issues_usable_certs() {
        let ca = LocalCa::new("test CA").unwrap();
        let s = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        let c = ca.issue_client("cks.kms.eu-west-1.amazonaws.com").unwrap();
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, v: &str| {
            let p = d.path().join(n);
            std::fs::write(&p, v).unwrap();
            p
        };
        let (sc, sk, ca_p) = (
            w("s.pem", &s.cert_pem),
            w("s.key", &s.key_pem),
            w("ca.pem", &ca.cert_pem()),
        );
        let certs = CertSource::load(&sc, &sk).unwrap();
        server_config(certs.clone(), None, None).unwrap();
        server_config(certs.clone(), Some(&ca_p), Some("x")).unwrap();
        assert!(server_config(certs.clone(), Some(&ca_p), None).is_err());
        // A new pair is read when the files change; a half-made one (the
        // new certificate beside the old key) leaves the old pair served.
        assert!(!certs.reload_if_changed(false).unwrap());
        let s2 = ca.issue_server(&["localhost"]).unwrap();
        std::fs::write(&sc, &s2.cert_pem).unwrap();
        assert!(certs.reload_if_changed(false).is_err());
        std::fs::write(&sk, &s2.key_pem).unwrap();
        assert!(certs.reload_if_changed(false).unwrap());
        assert!(certs.reload_if_changed(true).unwrap());
        let der = CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            subject_common_names(&der),
            vec!["cks.kms.eu-west-1.amazonaws.com"]
        );
    }
}
