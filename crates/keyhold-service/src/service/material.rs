//! What the request path holds of a key: its unwrapped versions, and the
//! credentials it checks signatures with.

use super::*;
use keyhold_crypto::asym::{Hash, SignScheme};

/// The operation a front-end wants to perform with a key. The first three
/// are the AES-256 ones (XKS); the others need a key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Metadata,
    Encrypt,
    Decrypt,
    Sign,
    Verify,
    /// RSA-OAEP decryption with the private key.
    PairDecrypt,
    /// RSA-OAEP encryption with the public key (a key wrap made here).
    PairEncrypt,
    /// A key's type, size and state, whatever its type.
    Describe,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Metadata | Operation::Describe => "METADATA",
            Operation::Encrypt | Operation::PairEncrypt => "ENCRYPT",
            Operation::Decrypt | Operation::PairDecrypt => "DECRYPT",
            Operation::Sign => "SIGN",
            Operation::Verify => "VERIFY",
        }
    }

    /// Whether it is an AES-256 operation (else it needs a key pair).
    fn symmetric(self) -> bool {
        matches!(
            self,
            Operation::Metadata | Operation::Encrypt | Operation::Decrypt
        )
    }

    /// Whether it makes new output (a ciphertext, a signature): only an
    /// active key whose current version is good does.
    fn produces(self) -> bool {
        matches!(
            self,
            Operation::Encrypt | Operation::Sign | Operation::PairEncrypt
        )
    }
}

/// The key type of a kind of key pair (`None`: one Keyhold does not make).
pub(crate) fn key_type_of(kind: keyhold_crypto::asym::PairKind) -> Option<KeyType> {
    KeyType::ALL
        .into_iter()
        .find(|t| pair_kind(*t) == Some(kind))
}

/// The key-pair generator for an asymmetric key type (`None` for AES).
pub(crate) fn pair_kind(t: KeyType) -> Option<keyhold_crypto::asym::PairKind> {
    use keyhold_crypto::asym::PairKind;
    Some(match t {
        KeyType::Aes256 => return None,
        KeyType::Rsa2048 => PairKind::Rsa(2048),
        KeyType::Rsa3072 => PairKind::Rsa(3072),
        KeyType::Rsa4096 => PairKind::Rsa(4096),
        KeyType::EcP256 => PairKind::EcP256,
        KeyType::EcP384 => PairKind::EcP384,
        KeyType::EcP521 => PairKind::EcP521,
        KeyType::Ed25519 => PairKind::Ed25519,
    })
}

/// A SigV4 credential resolved for the request path.
pub struct CredentialEntry {
    pub store: StorePrefix,
    /// The secret access key, for SigV4 verification.
    pub secret: SecretBytes,
    /// Signing keys derived for (date, region), cached: the derivation is four
    /// HMACs and the date changes once a day.
    pub signing_keys: Mutex<Vec<(String, Arc<HmacKey>)>>,
}

impl std::fmt::Debug for CredentialEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialEntry")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// What `credential add` returns, once: the secret is not retrievable later.
pub struct NewCredential {
    pub store: StorePrefix,
    pub access_key_id: String,
    pub secret_access_key: SecretBytes,
}

/// A credential as listed to operators: never the secret.
#[derive(Debug, Clone)]
pub struct CredentialInfo {
    pub access_key_id: String,
    pub store: StorePrefix,
    pub created_at: Timestamp,
}

/// Key material ready for use: an AES-256 key in memory (unwrapped from
/// storage) or resident in the HSM (used there through the root of trust),
/// or an asymmetric key's private key (unwrapped and parsed once).
pub(crate) enum KeyMaterial {
    Software(Aes256Key),
    Hsm {
        root: Arc<dyn RootOfTrust>,
        label: String,
    },
    Pair(keyhold_crypto::asym::PrivateKey),
    /// A key pair resident in the HSM under `label`; its public key
    /// (SubjectPublicKeyInfo) read once, for verification here.
    HsmPair {
        root: Arc<dyn RootOfTrust>,
        label: String,
        public: Vec<u8>,
    },
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMaterial::Software(_) => f.write_str("KeyMaterial::Software([REDACTED])"),
            KeyMaterial::Hsm { label, .. } => write!(f, "KeyMaterial::Hsm({label:?})"),
            KeyMaterial::Pair(_) => f.write_str("KeyMaterial::Pair([REDACTED])"),
            KeyMaterial::HsmPair { label, .. } => write!(f, "KeyMaterial::HsmPair({label:?})"),
        }
    }
}

fn not_aes() -> Error {
    Error::KeyUsage("an asymmetric key does not do AES-GCM".into())
}

fn not_a_pair() -> Error {
    Error::KeyUsage("an AES-256 key is not a key pair".into())
}

fn hsm_of(root: &Arc<dyn RootOfTrust>) -> Result<&dyn keyhold_root::HsmKeys> {
    root.hsm_keys()
        .ok_or_else(|| Error::RootOfTrust("the root of trust has no HSM".into()))
}

impl KeyMaterial {
    /// Whether using this key calls into an HSM (and so may block).
    pub(crate) fn is_hsm(&self) -> bool {
        matches!(self, KeyMaterial::Hsm { .. } | KeyMaterial::HsmPair { .. })
    }

    /// Signs `msg` with a key pair's private key (in the HSM for one that
    /// lives there).
    pub(crate) fn sign(&self, scheme: SignScheme, msg: &[u8]) -> Result<Vec<u8>> {
        match self {
            KeyMaterial::Pair(k) => k
                .sign(scheme, msg)
                .map_err(|e| Error::Internal(format!("signing failed: {e}"))),
            KeyMaterial::HsmPair { root, label, .. } => hsm_of(root)?.sign(label, scheme, msg),
            _ => Err(not_a_pair()),
        }
    }

    /// RSA-OAEP decryption with a key pair's private key; a ciphertext
    /// that does not decrypt is `InvalidCiphertext`.
    pub(crate) fn oaep_decrypt(
        &self,
        hash: Hash,
        ciphertext: &[u8],
        label: Option<&[u8]>,
    ) -> Result<SecretBytes> {
        match self {
            KeyMaterial::Pair(k) => k
                .oaep_decrypt(hash, ciphertext, label)
                .map_err(|_| Error::InvalidCiphertext),
            KeyMaterial::HsmPair { root, label: l, .. } => {
                hsm_of(root)?.decrypt_oaep(l, hash, ciphertext, label)
            }
            _ => Err(not_a_pair()),
        }
    }

    /// A key pair's public key, as SubjectPublicKeyInfo DER.
    pub(crate) fn public_spki(&self) -> Result<Vec<u8>> {
        match self {
            KeyMaterial::Pair(k) => k.public_spki().map_err(|e| Error::Internal(e.to_string())),
            KeyMaterial::HsmPair { public, .. } => Ok(public.clone()),
            _ => Err(not_a_pair()),
        }
    }

    /// AES key wrap (RFC 3394, or RFC 5649 when `padded`) under an AES key.
    pub(crate) fn key_wrap(&self, data: &[u8], padded: bool) -> Result<Vec<u8>> {
        match self {
            KeyMaterial::Software(k) => k
                .key_wrap(data, padded)
                .map_err(|e| Error::Internal(format!("key wrap failed: {e}"))),
            KeyMaterial::Hsm { root, label } => hsm_of(root)?.key_wrap(label, data, padded),
            _ => Err(not_aes()),
        }
    }

    /// The inverse of [`Self::key_wrap`]; a value that does not check is
    /// `InvalidCiphertext`.
    pub(crate) fn key_unwrap(&self, data: &[u8], padded: bool) -> Result<SecretBytes> {
        match self {
            KeyMaterial::Software(k) => k
                .key_unwrap(data, padded)
                .map_err(|_| Error::InvalidCiphertext),
            KeyMaterial::Hsm { root, label } => hsm_of(root)?.key_unwrap(label, data, padded),
            _ => Err(not_aes()),
        }
    }

    /// AES-GCM encryption of `in_out` in place with a fresh 96-bit IV.
    pub(crate) fn seal(&self, aad: &[u8], in_out: &mut [u8]) -> Result<([u8; 12], [u8; 16])> {
        match self {
            KeyMaterial::Pair(_) | KeyMaterial::HsmPair { .. } => Err(not_aes()),
            KeyMaterial::Software(k) => k
                .seal_in_place(aad, in_out)
                .map_err(|e| Error::Internal(e.to_string())),
            KeyMaterial::Hsm { root, label } => {
                let hsm = root
                    .hsm_keys()
                    .ok_or_else(|| Error::RootOfTrust("the root of trust has no HSM".into()))?;
                let (iv, ct, tag) = hsm.encrypt(label, aad, in_out)?;
                in_out.copy_from_slice(&ct);
                Ok((iv, tag))
            }
        }
    }

    /// AES-GCM decryption; a wrong tag (or IV, AAD…) is `InvalidCiphertext`.
    pub(crate) fn open(&self, iv: &[u8], aad: &[u8], ct: &[u8], tag: &[u8]) -> Result<SecretBytes> {
        match self {
            KeyMaterial::Pair(_) | KeyMaterial::HsmPair { .. } => Err(not_aes()),
            KeyMaterial::Software(k) => k
                .open(iv, aad, ct, tag)
                .map_err(|_| Error::InvalidCiphertext),
            KeyMaterial::Hsm { root, label } => root
                .hsm_keys()
                .ok_or_else(|| Error::RootOfTrust("the root of trust has no HSM".into()))?
                .decrypt(label, iv, aad, ct, tag),
        }
    }
}

/// A key resolved for use on the request path.
pub(crate) struct KeyHandle {
    pub key: Key,
    pub(super) store_status: Status,
    /// The current version's material; `None` once the key is destroyed.
    pub(super) current: Option<Arc<KeyMaterial>>,
    pub(super) current_flag: VersionFlag,
    pub(super) versions: Mutex<Vec<(u32, Arc<KeyMaterial>, VersionFlag)>>,
    /// The store's and the key's secondary-authorization policies.
    pub(crate) policies: Vec<Arc<crate::policy::Policy>>,
    /// The current version's random-IV counter, found once per handle.
    pub(super) gcm: std::sync::OnceLock<Arc<crate::gcm_budget::Counter>>,
}

impl std::fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHandle")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl KeyHandle {
    /// The newest version and its key: encrypt always uses it.
    pub(crate) fn current(&self) -> Result<(u32, &KeyMaterial)> {
        self.current_material()
            .map(|m| (self.key.current_version, &**m))
    }

    pub(super) fn current_material(&self) -> Result<&Arc<KeyMaterial>> {
        self.current
            .as_ref()
            .ok_or_else(|| Error::InvalidState(format!("key {} is destroyed", self.key.id)))
    }

    /// Checks that the key (and its store) may perform `op` at time `now`.
    /// An operation of the other kind of key (AES-GCM with a key pair, a
    /// signature with an AES key) answers KeyUsage first, whatever the
    /// key's state; then break glass (a disabled store or key) and the
    /// lifecycle state answer InvalidState; an operation the key's state or
    /// usage does not allow answers KeyUsage.
    pub(crate) fn check(&self, op: Operation, now: Timestamp) -> Result<()> {
        let t = self.key.key_type;
        if op != Operation::Describe && op.symmetric() == t.is_asymmetric() {
            let id = &self.key.id;
            return Err(Error::KeyUsage(if op.symmetric() {
                format!("key {id} is a {t} key pair: this API uses AES-256 keys only")
            } else {
                format!(
                    "key {id} is an AES-256 key: {} needs an RSA, EC or Ed25519 key",
                    op.name()
                )
            }));
        }
        if self.store_status != Status::Enabled {
            return Err(Error::InvalidState(format!(
                "key store {} is disabled",
                self.key.store
            )));
        }
        if matches!(op, Operation::Metadata | Operation::Describe) {
            return Ok(());
        }
        let id = &self.key.id;
        if self.key.status != Status::Enabled {
            return Err(Error::InvalidState(format!("key {id} is disabled")));
        }
        let l = &self.key.lifecycle;
        if let Some(t) = l.destroy_at.filter(|_| l.pending_destruction()) {
            return Err(Error::InvalidState(format!(
                "key {id} is scheduled for destruction at {}",
                keyhold_core::time::format_rfc3339(t)
            )));
        }
        let state = l.state_at(now);
        match (state, op) {
            (KeyState::PreActive, _) => {
                return Err(Error::InvalidState(format!("key {id} is not active yet")))
            }
            (KeyState::Destroyed, _) => {
                return Err(Error::InvalidState(format!("key {id} is destroyed")))
            }
            (KeyState::Deactivated | KeyState::Compromised, op) if op.produces() => {
                return Err(Error::KeyUsage(format!(
                    "key {id} is {state}: it {} only",
                    if op == Operation::Sign {
                        "verifies"
                    } else {
                        "decrypts"
                    }
                )))
            }
            (KeyState::Active, op) if op.produces() && self.current_flag != VersionFlag::Good => {
                return Err(Error::KeyUsage(format!(
                    "the current version of key {id} is marked compromised: rotate the key"
                )))
            }
            _ => {}
        }
        let u = self.key.usage;
        let allowed = match op {
            Operation::Encrypt | Operation::PairEncrypt => u.encrypt,
            Operation::Decrypt | Operation::PairDecrypt => u.decrypt,
            Operation::Sign => u.sign,
            Operation::Verify => u.verify,
            Operation::Metadata | Operation::Describe => true,
        };
        if !allowed {
            return Err(Error::KeyUsage(format!(
                "key {id} does not allow {} (usage: {u})",
                op.name()
            )));
        }
        Ok(())
    }

    /// What XKS GetKeyMetadata reports at `now`: `keyStatus` and `keyUsage`.
    /// A key that cannot serve requests is DISABLED; a deactivated or
    /// compromised one only DECRYPTs.
    pub(crate) fn reported(&self, now: Timestamp, lockdown: bool) -> (Status, Usage) {
        let l = &self.key.lifecycle;
        let state = l.state_at(now);
        let usable = !lockdown
            && self.store_status == Status::Enabled
            && self.key.status == Status::Enabled
            && !l.pending_destruction()
            && matches!(
                state,
                KeyState::Active | KeyState::Deactivated | KeyState::Compromised
            );
        let mut usage = self.key.usage;
        if state != KeyState::Active {
            usage.encrypt = false;
        }
        (
            if usable {
                Status::Enabled
            } else {
                Status::Disabled
            },
            usage,
        )
    }
}
