//! Keyhold's roots of trust: the one thing that can wrap and unwrap.
//!
//! * [`RootOfTrust`] is the seal every root implements (and [`HsmKeys`],
//!   keys that live in an HSM and are used there).
//! * [`SoftwareRoot`], the embedded default: a 256-bit master key in its own
//!   file (mode 0600, outside the database), optionally sealed under a
//!   passphrase with Argon2id.
//! * [`Pkcs11Root`], a root in an HSM through PKCS#11 (see [`pkcs11`]). This
//!   is the only crate that touches PKCS#11.
//!
//! Nothing here logs, and nothing returns key material except as
//! zeroizing types.

pub mod pkcs11;
mod software;

pub use pkcs11::{FailoverToken, HsmStatus, PinSource, Pkcs11Config, Pkcs11Root};
pub use software::{PassphraseKdf, RootFileKind, SoftwareRoot};

use keyhold_core::Result;
use keyhold_crypto::asym::{Hash, PairKind, SignScheme};
use keyhold_crypto::SecretBytes;

/// Describes a root of trust for health reports and operators.
#[derive(Debug, Clone)]
pub struct RootInfo {
    /// Stable identifier, e.g. `software-root-3f2a…`.
    pub id: String,
    /// Human-readable model, e.g. `Keyhold software root (AES-256-GCM)`.
    pub model: String,
}

/// The health of one external key manager (an HSM token).
#[derive(Debug, Clone)]
pub struct EkmHealth {
    pub id: String,
    pub model: String,
    /// Why it failed its check, if it did (never secret).
    pub error: Option<String>,
}

/// The seal: wraps and unwraps secrets under a key-encryption key that never
/// leaves it. `context` is authenticated and must match on unwrap.
pub trait RootOfTrust: Send + Sync + 'static {
    fn wrap(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;
    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<SecretBytes>;
    fn info(&self) -> RootInfo;
    /// Whether wrap/unwrap may block for a while (device I/O): callers on an
    /// async runtime then move those calls to blocking threads.
    fn blocks(&self) -> bool {
        false
    }
    /// Unwraps with every part of the root (each token of an HSM cluster),
    /// failing if any part holds another key. Used on the root check value
    /// at start.
    fn unwrap_with_each(&self, context: &[u8], wrapped: &[u8]) -> Result<SecretBytes> {
        self.unwrap(context, wrapped)
    }
    /// Health of each external key manager behind this root (one entry per
    /// HSM token), checked now. A software root has none of its own: the
    /// key service's deep check covers it.
    fn ekm_health(&self) -> Vec<EkmHealth> {
        Vec::new()
    }
    /// Keys resident in this root's HSM, if it has one.
    fn hsm_keys(&self) -> Option<&dyn HsmKeys> {
        None
    }
    /// The same root with another key-encryption key (an HSM KEK, by
    /// label): what a rotation of an HSM root moves to.
    fn with_kek(&self, _label: &str) -> Result<std::sync::Arc<dyn RootOfTrust>> {
        Err(keyhold_core::Error::RootOfTrust(
            "this root of trust has no key-encryption keys by label".into(),
        ))
    }
}

/// AES-256 keys that live in an HSM and are used there (AES-GCM inside the
/// module). Labels are PKCS#11 `CKA_LABEL`s.
pub trait HsmKeys: Send + Sync {
    /// Generates a new non-extractable AES-256 key with this label, whose
    /// attributes allow exactly `usage` (CKA_ENCRYPT, CKA_DECRYPT, and AES
    /// key wrap in the same directions: CKA_WRAP, CKA_UNWRAP) and nothing
    /// else (no sign, verify or derive): the token enforces the key's usage
    /// too, not only Keyhold.
    fn generate_key(&self, label: &str, usage: keyhold_core::Usage) -> Result<()>;
    /// Makes the key's attributes allow exactly `usage`. `Ok(false)`: the
    /// token does not allow the change (usage is then Keyhold's alone).
    fn set_usage(&self, label: &str, usage: keyhold_core::Usage) -> Result<bool>;
    /// Destroys the key with this label (C_DestroyObject): crypto-shredding
    /// of an HSM-resident key.
    fn destroy_key(&self, label: &str) -> Result<()>;
    /// Checks that a usable AES-256 key with this label exists.
    fn check_key(&self, label: &str) -> Result<()>;
    /// Whether the label is one of Keyhold's own keys in the HSM (the root
    /// of trust's key-encryption key, its health key): never adopted as a
    /// customer key, never destroyed as one.
    fn is_reserved(&self, label: &str) -> bool;
    /// AES-GCM encryption in the HSM with a 96-bit IV from the module's RNG.
    /// Returns `(iv, ciphertext, tag)`.
    fn encrypt(
        &self,
        label: &str,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<([u8; 12], Vec<u8>, [u8; 16])>;
    /// AES-GCM decryption in the HSM; a wrong tag is `Error::InvalidCiphertext`.
    fn decrypt(
        &self,
        label: &str,
        iv: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> Result<SecretBytes>;
    /// AES key wrap (RFC 3394, or RFC 5649 when `padded`) of `data` with
    /// the AES-256 key labelled `label`, inside the HSM.
    fn key_wrap(&self, _label: &str, _data: &[u8], _padded: bool) -> Result<Vec<u8>> {
        Err(no_key_wrap())
    }
    /// The inverse of [`HsmKeys::key_wrap`]; a value that does not check
    /// is `Error::InvalidCiphertext`.
    fn key_unwrap(&self, _label: &str, _wrapped: &[u8], _padded: bool) -> Result<SecretBytes> {
        Err(no_key_wrap())
    }
    /// Generates a key pair with this label (both halves), its private key
    /// sensitive, never extractable and allowed exactly `usage` (CKA_SIGN or
    /// CKA_DECRYPT).
    fn generate_pair(
        &self,
        _label: &str,
        _kind: PairKind,
        _usage: keyhold_core::Usage,
    ) -> Result<()> {
        Err(no_pairs())
    }
    /// The kind of the usable key pair with this label (its private key
    /// sensitive and never extractable): how a pair is adopted.
    fn pair_kind(&self, _label: &str) -> Result<PairKind> {
        Err(no_pairs())
    }
    /// The pair's public key, as SubjectPublicKeyInfo DER.
    fn public_key(&self, _label: &str) -> Result<Vec<u8>> {
        Err(no_pairs())
    }
    /// Signs in the HSM (ECDSA signatures as X9.62 DER).
    fn sign(&self, _label: &str, _scheme: SignScheme, _msg: &[u8]) -> Result<Vec<u8>> {
        Err(no_pairs())
    }
    /// RSA-OAEP decryption in the HSM; a ciphertext that does not decrypt
    /// is `Error::InvalidCiphertext`.
    fn decrypt_oaep(
        &self,
        _label: &str,
        _hash: Hash,
        _ciphertext: &[u8],
        _oaep_label: Option<&[u8]>,
    ) -> Result<SecretBytes> {
        Err(no_pairs())
    }
}

/// What an HSM without AES key wrap answers to it.
fn no_key_wrap() -> keyhold_core::Error {
    keyhold_core::Error::KeyUsage("this HSM does not do AES key wrap".into())
}

/// What an HSM without key pairs answers to their operations.
fn no_pairs() -> keyhold_core::Error {
    keyhold_core::Error::RootOfTrust("this HSM does not hold key pairs".into())
}
