//! Key use: the one call a front-end makes to describe, encrypt or decrypt
//! with a key of a key store, and where that call runs.
//!
//! The service decides the order of the checks — the key, then secondary
//! authorization (a denial says nothing of the key's state), then lockdown,
//! lifecycle state and usage, then the random-IV budget — and hands back,
//! beside the result, the facts the audit record needs ([`UseFacts`]): the
//! version used, the policy rule that decided, whether a compromised
//! version was used. A front-end only translates its wire format.
//!
//! Front-end specific steps that must run at a given point of that order
//! are closures: the additional authenticated data once the version is
//! known (the XKS ciphertext metadata names it), the ciphertext's shape
//! once the caller is authorized.

use std::sync::Arc;
use std::time::Duration;

use keyhold_core::{Error, KeyState, KeyType, Result, Status, StorePrefix, Usage, VersionFlag};
use keyhold_crypto::asym::{Hash, SignScheme};
use keyhold_crypto::{ct_eq, SecretBytes};

use crate::policy::PolicyRequest;
use crate::{KeyHandle, KeyService, Operation};

/// Who uses which key, and the request's context for secondary authorization.
#[derive(Debug, Clone, Copy)]
pub struct KeyUse<'a> {
    pub store: &'a StorePrefix,
    pub key: &'a str,
    pub context: PolicyRequest<'a>,
}

/// What the audit record of a key use says besides its outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UseFacts {
    /// The key version used (or asked for, on decryption), once known.
    pub key_version: Option<u32>,
    /// The policy rule that decided, if one did; `(no rule allows)` when a
    /// policy refused without a rule of its own.
    pub rule: Option<String>,
    /// A version (or key) marked compromised was used, by override.
    pub compromised: bool,
}

impl UseFacts {
    /// The audit record's detail line, if the use calls for one.
    pub fn detail(&self) -> Option<&'static str> {
        self.compromised
            .then_some("decrypted with a key or key version marked compromised")
    }
}

/// A key use's result and the facts for its audit record, which exist
/// whether it succeeded or not.
#[must_use]
#[derive(Debug)]
pub struct Used<T, E = Error> {
    pub result: std::result::Result<T, E>,
    pub facts: UseFacts,
}

/// An AES-GCM encryption's result.
#[derive(Debug)]
pub struct Sealed {
    pub version: u32,
    pub iv: [u8; 12],
    pub tag: [u8; 16],
    pub ciphertext: Vec<u8>,
}

/// A signature made with the current version of a key pair.
#[derive(Debug)]
pub struct Signed {
    pub version: u32,
    pub signature: Vec<u8>,
}

/// A key wrap algorithm (Azure's `alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapAlg {
    /// AES key wrap, RFC 3394 (A256KW).
    AesKw,
    /// AES key wrap with padding, RFC 5649 (A256KWP).
    AesKwp,
    /// RSA-OAEP with this hash and MGF1 with the same hash, no label.
    RsaOaep(Hash),
}

impl WrapAlg {
    fn is_rsa(self) -> bool {
        matches!(self, WrapAlg::RsaOaep(_))
    }

    /// Whether the algorithm is one of the key's type.
    fn check_fits(self, key: &keyhold_core::Key) -> Result<()> {
        let t = key.key_type;
        let fits = if self.is_rsa() {
            t.is_rsa()
        } else {
            t == KeyType::Aes256
        };
        if fits {
            Ok(())
        } else {
            Err(Error::invalid(
                "alg",
                format!(
                    "{} is not an algorithm of key {} (a {} key)",
                    self.name(),
                    key.id,
                    t.short()
                ),
            ))
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            WrapAlg::AesKw => "A256KW",
            WrapAlg::AesKwp => "A256KWP",
            WrapAlg::RsaOaep(Hash::Sha1) => "RSA-OAEP",
            WrapAlg::RsaOaep(Hash::Sha256) => "RSA-OAEP-256",
            WrapAlg::RsaOaep(Hash::Sha384) => "RSA-OAEP-384",
            WrapAlg::RsaOaep(Hash::Sha512) => "RSA-OAEP-512",
        }
    }
}

/// A key wrapped by [`KeyService::wrap_key`].
#[derive(Debug)]
pub struct Wrapped {
    pub version: u32,
    pub wrapped: Vec<u8>,
}

/// A key unwrapped by [`KeyService::unwrap_key`], and the version that did.
#[derive(Debug)]
pub struct Unwrapped {
    pub version: u32,
    pub key: SecretBytes,
}

/// What [`KeyService::describe_key`] says of a key.
#[derive(Debug, Clone)]
pub struct KeyDescription {
    pub key_type: KeyType,
    /// Enabled when the key can serve requests now.
    pub status: Status,
    /// What it may do now (a deactivated key no longer encrypts).
    pub usage: Usage,
    pub version: u32,
    /// The current version's public key (SubjectPublicKeyInfo DER) for a
    /// key pair that can serve requests.
    pub public_spki: Option<Vec<u8>>,
}

/// Whether a signature scheme is one of a key type's: RSA PKCS#1 v1.5 or
/// PSS with an RSA key, ECDSA with the curve's own hash (P-256 with
/// SHA-256, P-384 with SHA-384, P-521 with SHA-512), Ed25519 with Ed25519.
pub fn scheme_fits(t: KeyType, scheme: SignScheme) -> bool {
    match scheme {
        SignScheme::RsaPkcs1(h) | SignScheme::RsaPss(h) | SignScheme::RsaPssMaxSalt(h) => {
            t.is_rsa() && h != Hash::Sha1
        }
        SignScheme::Ecdsa(h) => matches!(
            (t, h),
            (KeyType::EcP256, Hash::Sha256)
                | (KeyType::EcP384, Hash::Sha384)
                | (KeyType::EcP521, Hash::Sha512)
        ),
        SignScheme::Ed25519 => t == KeyType::Ed25519,
    }
}

fn check_scheme(h: &KeyHandle, scheme: SignScheme) -> Result<()> {
    if scheme_fits(h.key.key_type, scheme) {
        Ok(())
    } else {
        Err(Error::invalid(
            "signing algorithm",
            format!("{scheme:?} is not a signature of a {} key", h.key.key_type),
        ))
    }
}

/// How an encryption is made.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncryptOptions {
    /// The result is to be proven by decrypting it (an integrity value is
    /// returned over it): a key whose usage lacks decrypt is refused.
    pub require_decrypt_usage: bool,
}

/// An AES-GCM ciphertext to open, as the front-end parsed it.
#[derive(Debug)]
pub struct GcmInput<'a> {
    pub version: u32,
    pub iv: &'a [u8],
    /// The complete additional authenticated data.
    pub aad: Vec<u8>,
    pub ciphertext: &'a [u8],
    pub tag: &'a [u8],
}

/// What a request will touch, so that the service can say where it runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Touches<'a> {
    /// The access key id that signed it.
    pub credential: Option<&'a str>,
    /// The key it uses.
    pub key: Option<(&'a StorePrefix, &'a str)>,
    /// It encrypts or decrypts with that key.
    pub crypt: bool,
    /// It decrypts under this version.
    pub version: Option<u32>,
    /// It reads the service's health.
    pub health: bool,
}

/// Where a request runs: on the async worker that received it, or on a
/// blocking thread (it may wait for an HSM or the database).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Inline,
    Blocking,
}

/// Why a job on a blocking thread gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRun {
    /// It outlived its time limit (it finishes on its own, unheard).
    TimedOut(Duration),
    /// It panicked.
    Failed,
}

/// Sets the rule into `facts` from a policy decision and passes the
/// decision on.
fn note_rule(facts: &mut UseFacts, decided: Result<Option<String>>) -> Result<()> {
    match decided {
        Ok(rule) => {
            facts.rule = rule;
            Ok(())
        }
        Err(Error::AccessDenied { rule, why }) => {
            let rule = rule.unwrap_or_else(|| "(no rule allows)".into());
            facts.rule = Some(rule.clone());
            Err(Error::AccessDenied {
                rule: Some(rule),
                why,
            })
        }
        Err(e) => Err(e),
    }
}

impl KeyService {
    /// The key of `u`, once secondary authorization and the key's own
    /// state allow `op` (in that order: a denial says nothing of the key).
    fn usable(
        &self,
        u: &KeyUse<'_>,
        op: Operation,
        facts: &mut UseFacts,
    ) -> Result<Arc<KeyHandle>> {
        let h = self.key_handle(u.store, u.key)?;
        note_rule(facts, self.check_policy(&h, &u.context))?;
        self.authorize(&h, op)?;
        Ok(h)
    }

    /// [`Self::usable`] for a key wrap (`wrap`) or unwrap with `alg`: an
    /// algorithm of the other key type is refused after the policy and
    /// before the key's state (`Invalid`, not KeyUsage).
    fn wrap_usable(
        &self,
        u: &KeyUse<'_>,
        alg: WrapAlg,
        wrap: bool,
        facts: &mut UseFacts,
    ) -> Result<Arc<KeyHandle>> {
        let h = self.key_handle(u.store, u.key)?;
        note_rule(facts, self.check_policy(&h, &u.context))?;
        alg.check_fits(&h.key)?;
        let op = match (alg.is_rsa(), wrap) {
            (true, true) => Operation::PairEncrypt,
            (true, false) => Operation::PairDecrypt,
            (false, true) => Operation::Encrypt,
            (false, false) => Operation::Decrypt,
        };
        self.authorize(&h, op)?;
        Ok(h)
    }

    /// A key's status and usage as reported to its cloud (XKS metadata).
    pub fn describe(&self, u: &KeyUse<'_>) -> Used<(Status, Usage)> {
        let mut facts = UseFacts::default();
        let result = self
            .usable(u, Operation::Metadata, &mut facts)
            .map(|h| self.reported(&h));
        Used { result, facts }
    }

    /// Encrypts `plaintext` with the current version of the key, under the
    /// additional authenticated data `aad` makes for that version. The
    /// result is decrypted again and compared before it is returned, except
    /// with an HSM-resident key that may not decrypt (its token's word).
    pub fn encrypt<E: From<Error>>(
        &self,
        u: &KeyUse<'_>,
        plaintext: &[u8],
        opts: EncryptOptions,
        aad: impl FnOnce(u32) -> std::result::Result<Vec<u8>, E>,
    ) -> Used<Sealed, E> {
        let mut facts = UseFacts::default();
        let result = self.encrypt_inner(u, plaintext, opts, aad, &mut facts);
        Used { result, facts }
    }

    fn encrypt_inner<E: From<Error>>(
        &self,
        u: &KeyUse<'_>,
        plaintext: &[u8],
        opts: EncryptOptions,
        aad: impl FnOnce(u32) -> std::result::Result<Vec<u8>, E>,
        facts: &mut UseFacts,
    ) -> std::result::Result<Sealed, E> {
        let h = self.usable(u, Operation::Encrypt, facts)?;
        if opts.require_decrypt_usage && !h.key.usage.decrypt {
            return Err(Error::KeyUsage(
                "ciphertextDataIntegrityValueAlgorithm needs a key whose usage includes DECRYPT: the result is verified by decrypting it".into(),
            )
            .into());
        }
        let (version, key) = h.current()?;
        facts.key_version = Some(version);
        // The random-IV bound of AES-GCM: counted, never crossed.
        self.charge_encryption(&h, version)?;
        let aad = aad(version)?;
        let mut ciphertext = plaintext.to_vec();
        let (iv, tag) = key.seal(&aad, &mut ciphertext)?;
        // An HSM-resident key without decrypt usage cannot decrypt in its
        // token either: its result is the HSM's word.
        if h.key.usage.decrypt || !key.is_hsm() {
            let failed = || Error::Internal("encryption result failed verification".into());
            let check = key
                .open(&iv, &aad, &ciphertext, &tag)
                .map_err(|e| match e {
                    Error::InvalidCiphertext => failed(),
                    other => other,
                })?;
            if !ct_eq(check.expose(), plaintext) {
                return Err(failed().into());
            }
        }
        Ok(Sealed {
            version,
            iv,
            tag,
            ciphertext,
        })
    }

    /// Decrypts what `input` parses, once the caller may decrypt with the
    /// key (`input` runs after authorization: a caller who may not use the
    /// key learns nothing of what it sent). A retired or compromised
    /// version is refused unless its use was explicitly allowed; the facts
    /// then say so.
    pub fn decrypt<'b, E: From<Error>>(
        &self,
        u: &KeyUse<'_>,
        input: impl FnOnce() -> std::result::Result<GcmInput<'b>, E>,
    ) -> Used<SecretBytes, E> {
        let mut facts = UseFacts::default();
        let result = self.decrypt_inner(u, input, &mut facts);
        Used { result, facts }
    }

    fn decrypt_inner<'b, E: From<Error>>(
        &self,
        u: &KeyUse<'_>,
        input: impl FnOnce() -> std::result::Result<GcmInput<'b>, E>,
        facts: &mut UseFacts,
    ) -> std::result::Result<SecretBytes, E> {
        let h = self.usable(u, Operation::Decrypt, facts)?;
        let c = input()?;
        facts.key_version = Some(c.version);
        let (key, flag) = self.key_version(&h, c.version)?;
        if flag != VersionFlag::Good || h.key.lifecycle.state == KeyState::Compromised {
            facts.compromised = true;
            tracing::warn!(target: "keyhold::audit", store = %u.store, key = %u.key, version = c.version,
                "decrypt with a key or key version marked compromised (allowed by override or state)");
        }
        Ok(key.open(c.iv, &c.aad, c.ciphertext, c.tag)?)
    }

    /// Signs `message` with the current version of a key pair whose usage
    /// includes SIGN (the scheme must be one of the key's type).
    pub fn sign(&self, u: &KeyUse<'_>, message: &[u8], scheme: SignScheme) -> Used<Signed> {
        let mut facts = UseFacts::default();
        let result = (|| {
            let h = self.usable(u, Operation::Sign, &mut facts)?;
            check_scheme(&h, scheme)?;
            let (version, key) = h.current()?;
            facts.key_version = Some(version);
            let signature = key.sign(scheme, message)?;
            Ok(Signed { version, signature })
        })();
        Used { result, facts }
    }

    /// Whether `signature` is a signature of `message` under `version` of a
    /// key pair (its current version when `None`) whose usage includes
    /// VERIFY. A signature that does not verify is `Ok(false)`.
    pub fn verify(
        &self,
        u: &KeyUse<'_>,
        version: Option<u32>,
        message: &[u8],
        signature: &[u8],
        scheme: SignScheme,
    ) -> Used<bool> {
        let mut facts = UseFacts::default();
        let result = (|| {
            let h = self.usable(u, Operation::Verify, &mut facts)?;
            check_scheme(&h, scheme)?;
            let version = version.unwrap_or(h.key.current_version);
            facts.key_version = Some(version);
            let (key, _) = self.key_version(&h, version)?;
            let spki = key.public_spki()?;
            keyhold_crypto::asym::verify(&spki, scheme, message, signature)
                .map_err(|e| Error::Internal(format!("verification failed: {e}")))
        })();
        Used { result, facts }
    }

    /// RSA-OAEP decryption (MGF1 with the same hash) with `version` of an
    /// RSA key whose usage includes DECRYPT. A ciphertext that does not
    /// decrypt is `InvalidCiphertext`.
    pub fn decrypt_oaep(
        &self,
        u: &KeyUse<'_>,
        version: u32,
        ciphertext: &[u8],
        hash: Hash,
        label: Option<&[u8]>,
    ) -> Used<SecretBytes> {
        let mut facts = UseFacts::default();
        let result = (|| {
            let h = self.usable(u, Operation::PairDecrypt, &mut facts)?;
            if !h.key.key_type.is_rsa() {
                return Err(Error::KeyUsage(format!(
                    "key {} is a {} key: RSA-OAEP needs an RSA key",
                    h.key.id, h.key.key_type
                )));
            }
            facts.key_version = Some(version);
            let (key, flag) = self.key_version(&h, version)?;
            if flag != VersionFlag::Good || h.key.lifecycle.state == KeyState::Compromised {
                facts.compromised = true;
            }
            key.oaep_decrypt(hash, ciphertext, label)
        })();
        Used { result, facts }
    }

    /// A key's type, size, state and (for a key pair) public key, for the
    /// front-ends that describe keys of any type (Azure's metadata).
    pub fn describe_key(&self, u: &KeyUse<'_>) -> Used<KeyDescription> {
        let mut facts = UseFacts::default();
        let result = self
            .usable(u, Operation::Describe, &mut facts)
            .and_then(|h| self.description(&h));
        Used { result, facts }
    }

    /// What [`KeyService::describe_key`] and [`KeyService::published_key`]
    /// answer of a resolved key.
    fn description(&self, h: &KeyHandle) -> Result<KeyDescription> {
        let (status, usage) = self.reported(h);
        let public_spki = if h.key.key_type.is_asymmetric() && status == Status::Enabled {
            Some(h.current()?.1.public_spki()?)
        } else {
            None
        };
        Ok(KeyDescription {
            key_type: h.key.key_type,
            status,
            usage,
            version: h.key.current_version,
            public_spki,
        })
    }

    /// A key pair's current public key and whether the key can serve now,
    /// for a front-end that publishes public keys to anyone (DKE): no
    /// policy applies (publishing is not a use), the key's own state does.
    pub fn published_key(&self, store: &StorePrefix, key: &str) -> Result<KeyDescription> {
        let h = self.key_handle(store, key)?;
        self.authorize(&h, Operation::Describe)?;
        self.description(&h)
    }

    /// Wraps `data` (a key) with the current version of the key: AES key
    /// wrap with an AES-256 key, RSA-OAEP with an RSA key's public half.
    /// The key must be active and allow ENCRYPT. An algorithm that does
    /// not fit the key's type is `Invalid` (checked after authorization).
    pub fn wrap_key(&self, u: &KeyUse<'_>, alg: WrapAlg, data: &[u8]) -> Used<Wrapped> {
        let mut facts = UseFacts::default();
        let result = (|| {
            let h = self.wrap_usable(u, alg, true, &mut facts)?;
            let (version, key) = h.current()?;
            facts.key_version = Some(version);
            let wrapped = match alg {
                WrapAlg::AesKw => key.key_wrap(data, false)?,
                WrapAlg::AesKwp => key.key_wrap(data, true)?,
                WrapAlg::RsaOaep(hash) => {
                    let spki = key.public_spki()?;
                    keyhold_crypto::asym::oaep_encrypt(&spki, hash, data, None).map_err(|_| {
                        Error::invalid(
                            "value",
                            format!(
                                "{} bytes is more than RSA-OAEP with this key wraps",
                                data.len()
                            ),
                        )
                    })?
                }
            };
            Ok(Wrapped { version, wrapped })
        })();
        Used { result, facts }
    }

    /// Unwraps what [`Self::wrap_key`] made. The value does not say which
    /// version wrapped it: the current version is tried first, then older
    /// ones that may still decrypt (AES key wrap and OAEP both check their
    /// result, so a wrong version fails rather than answering garbage). A
    /// value no version opens is `InvalidCiphertext`.
    pub fn unwrap_key(&self, u: &KeyUse<'_>, alg: WrapAlg, wrapped: &[u8]) -> Used<Unwrapped> {
        let mut facts = UseFacts::default();
        let result = (|| {
            let h = self.wrap_usable(u, alg, false, &mut facts)?;
            let newest = h.key.current_version;
            let oldest = h.key.lifecycle.min_decrypt_version.max(1);
            let mut last = Error::InvalidCiphertext;
            for version in (oldest..=newest).rev() {
                let (key, flag) = match self.key_version(&h, version) {
                    Ok(k) => k,
                    Err(e) => {
                        last = e;
                        continue;
                    }
                };
                let opened = match alg {
                    WrapAlg::AesKw => key.key_unwrap(wrapped, false),
                    WrapAlg::AesKwp => key.key_unwrap(wrapped, true),
                    WrapAlg::RsaOaep(hash) => key.oaep_decrypt(hash, wrapped, None),
                };
                match opened {
                    Ok(key) => {
                        facts.key_version = Some(version);
                        if flag != VersionFlag::Good
                            || h.key.lifecycle.state == KeyState::Compromised
                        {
                            facts.compromised = true;
                        }
                        return Ok(Unwrapped { version, key });
                    }
                    Err(Error::InvalidCiphertext) => last = Error::InvalidCiphertext,
                    Err(e) => return Err(e),
                }
            }
            Err(match last {
                // A version that exists but may not decrypt (retired,
                // compromised) says so only if nothing else was tried.
                Error::InvalidState(_) if newest > oldest => Error::InvalidCiphertext,
                e => e,
            })
        })();
        Used { result, facts }
    }

    /// Where a request that touches `t` should run: on a blocking thread
    /// when answering it may wait — a cache miss with a root of trust or
    /// storage that blocks, or AES-GCM inside an HSM.
    pub fn placement(&self, t: &Touches<'_>) -> Placement {
        if !self.miss_blocks() {
            return Placement::Inline;
        }
        let cred_miss = t.credential.is_some_and(|a| !self.is_credential_cached(a));
        let key_waits = t.key.is_some_and(|(store, id)| {
            !self.is_key_cached(store, id)
                || (t.crypt && self.is_key_hsm_resident(store, id))
                || t.version
                    .is_some_and(|v| !self.is_version_cached(store, id, v))
        });
        let health_miss = t.health && !self.is_health_cached();
        if cred_miss || key_waits || health_miss {
            Placement::Blocking
        } else {
            Placement::Inline
        }
    }

    /// Runs `job` on a blocking thread, waiting at most `limit` for it.
    pub async fn run_blocking<T: Send + 'static>(
        &self,
        limit: Duration,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> std::result::Result<T, NotRun> {
        match tokio::time::timeout(limit, tokio::task::spawn_blocking(job)).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a blocking key-service job failed");
                Err(NotRun::Failed)
            }
            Err(_) => Err(NotRun::TimedOut(limit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyScope;
    use keyhold_core::{KeyId, Usage};
    use keyhold_root::SoftwareRoot;
    use keyhold_storage::SqliteStorage;

    fn service() -> (tempfile::TempDir, KeyService, StorePrefix) {
        let dir = tempfile::tempdir().unwrap();
        let root = SoftwareRoot::create(&dir.path().join("root.key"), None).unwrap();
        let st = SqliteStorage::open(&dir.path().join("k.db")).unwrap();
        let s = KeyService::open(Arc::new(st), Arc::new(root)).unwrap();
        let p = StorePrefix::parse("/t").unwrap();
        s.create_store(&p, "").unwrap();
        (dir, s, p)
    }

    fn key_use<'a>(p: &'a StorePrefix, key: &'a str, principal: &'a str) -> KeyUse<'a> {
        KeyUse {
            store: p,
            key,
            context: PolicyRequest {
                principal: Some(principal),
                ..PolicyRequest::default()
            },
        }
    }

    fn aad(v: u32) -> Result<Vec<u8>> {
        Ok(format!("aad-v{v}").into_bytes())
    }

    #[test]
    fn key_wrap_round_trips_across_rotations_and_refuses_what_does_not_fit() {
        let (_d, s, p) = service();
        let k = KeyId::parse("k").unwrap();
        s.create_key(&p, &k, Usage::BOTH).unwrap();
        let rsa = KeyId::parse("r").unwrap();
        s.create_keys_of(
            &p,
            std::slice::from_ref(&rsa),
            KeyType::Rsa2048,
            Usage::BOTH,
            &Default::default(),
        )
        .unwrap();
        let u = key_use(&p, "k", "alice");
        let dek = [7u8; 32];
        let w1 = s.wrap_key(&u, WrapAlg::AesKw, &dek).result.unwrap();
        assert_eq!((w1.version, w1.wrapped.len()), (1, 40));
        s.rotate_key(&p, &k).unwrap();
        let w2 = s.wrap_key(&u, WrapAlg::AesKwp, &dek[..5]).result.unwrap();
        assert_eq!(w2.version, 2);
        // The older version still unwraps, found by trying.
        let back = s.unwrap_key(&u, WrapAlg::AesKw, &w1.wrapped);
        assert_eq!(back.facts.key_version, Some(1));
        assert_eq!(back.result.unwrap().key.expose(), &dek);
        let back = s
            .unwrap_key(&u, WrapAlg::AesKwp, &w2.wrapped)
            .result
            .unwrap();
        assert_eq!((back.version, back.key.expose()), (2, &dek[..5]));
        // Tampered: no version opens it.
        let mut bad = w1.wrapped.clone();
        bad[3] ^= 1;
        assert!(matches!(
            s.unwrap_key(&u, WrapAlg::AesKw, &bad).result,
            Err(Error::InvalidCiphertext)
        ));
        // Retired versions no longer unwrap.
        s.set_min_decrypt_version(&p, &k, 2).unwrap();
        assert!(s
            .unwrap_key(&u, WrapAlg::AesKw, &w1.wrapped)
            .result
            .is_err());
        // The algorithm of the other kind of key.
        assert!(matches!(
            s.wrap_key(&u, WrapAlg::RsaOaep(Hash::Sha256), &dek).result,
            Err(Error::Invalid { what: "alg", .. })
        ));
        let ru = key_use(&p, "r", "alice");
        assert!(matches!(
            s.wrap_key(&ru, WrapAlg::AesKw, &dek).result,
            Err(Error::Invalid { what: "alg", .. })
        ));
        // RSA-OAEP-256 with the public half, unwrapped with the private.
        let w = s
            .wrap_key(&ru, WrapAlg::RsaOaep(Hash::Sha256), &dek)
            .result
            .unwrap();
        assert_eq!(w.wrapped.len(), 256);
        let back = s
            .unwrap_key(&ru, WrapAlg::RsaOaep(Hash::Sha256), &w.wrapped)
            .result
            .unwrap();
        assert_eq!(back.key.expose(), &dek);
        assert!(s
            .wrap_key(&ru, WrapAlg::RsaOaep(Hash::Sha256), &[0; 191])
            .result
            .is_err());
        // Described with its public key.
        let d = s.describe_key(&ru).result.unwrap();
        assert_eq!((d.key_type, d.status), (KeyType::Rsa2048, Status::Enabled));
        assert!(d.public_spki.is_some());
        // A disabled key wraps nothing.
        s.set_key_status(&p, &k, Status::Disabled).unwrap();
        assert!(matches!(
            s.wrap_key(&u, WrapAlg::AesKw, &dek).result,
            Err(Error::InvalidState(_))
        ));
        assert_eq!(s.describe_key(&u).result.unwrap().status, Status::Disabled);
    }

    #[test]
    fn encrypt_then_decrypt_reports_the_version_used() {
        let (_d, s, p) = service();
        s.create_key(&p, &KeyId::parse("k").unwrap(), Usage::BOTH)
            .unwrap();
        let u = key_use(&p, "k", "alice");
        let sealed = s.encrypt(&u, b"secret", EncryptOptions::default(), aad);
        assert_eq!(sealed.facts.key_version, Some(1));
        assert_eq!(sealed.facts.rule, None);
        let sealed = sealed.result.unwrap();
        assert_ne!(sealed.ciphertext, b"secret");

        let opened = s.decrypt(&u, || {
            Ok::<_, Error>(GcmInput {
                version: sealed.version,
                iv: &sealed.iv,
                aad: aad(sealed.version)?,
                ciphertext: &sealed.ciphertext,
                tag: &sealed.tag,
            })
        });
        assert_eq!(opened.facts.key_version, Some(1));
        assert!(!opened.facts.compromised);
        assert_eq!(opened.result.unwrap().expose(), b"secret");

        // The wrong AAD: an invalid ciphertext, the version still reported.
        let wrong = s.decrypt(&u, || {
            Ok::<_, Error>(GcmInput {
                version: 1,
                iv: &sealed.iv,
                aad: b"other".to_vec(),
                ciphertext: &sealed.ciphertext,
                tag: &sealed.tag,
            })
        });
        assert!(matches!(wrong.result, Err(Error::InvalidCiphertext)));
        assert_eq!(wrong.facts.key_version, Some(1));
    }

    #[test]
    fn a_denial_comes_before_the_key_state_and_the_input() {
        let (_d, s, p) = service();
        let id = KeyId::parse("k").unwrap();
        s.create_key(&p, &id, Usage::BOTH).unwrap();
        s.set_key_status(&p, &id, Status::Disabled).unwrap();
        let policy = "[[rule]]\nname = \"only-bob\"\neffect = \"allow\"\nprincipal = [\"bob\"]\n";
        s.set_policy(&PolicyScope::Store(p.clone()), policy)
            .unwrap();

        // Alice is refused, whatever the key's state, and her input is
        // never looked at.
        let denied = s.decrypt(&key_use(&p, "k", "alice"), || -> Result<GcmInput<'_>> {
            panic!("input parsed before authorization")
        });
        assert!(matches!(denied.result, Err(Error::AccessDenied { .. })));
        assert_eq!(denied.facts.rule.as_deref(), Some("(no rule allows)"));
        assert_eq!(denied.facts.key_version, None);

        // Bob is allowed by his rule, then refused by the key's state.
        let bob = key_use(&p, "k", "bob");
        let off = s.encrypt(&bob, b"x", EncryptOptions::default(), aad);
        assert!(matches!(off.result, Err(Error::InvalidState(_))));
        assert_eq!(off.facts.rule.as_deref(), Some("only-bob"));
        let described = s.describe(&bob);
        assert_eq!(described.result.unwrap().0, Status::Disabled);
        assert_eq!(described.facts.rule.as_deref(), Some("only-bob"));
    }

    #[test]
    fn a_proven_result_needs_decrypt_usage() {
        let (_d, s, p) = service();
        let usage = Usage::parse("ENCRYPT").unwrap();
        s.create_key(&p, &KeyId::parse("enc").unwrap(), usage)
            .unwrap();
        let u = key_use(&p, "enc", "alice");
        let proven = EncryptOptions {
            require_decrypt_usage: true,
        };
        let r = s.encrypt(&u, b"x", proven, aad);
        assert!(matches!(r.result, Err(Error::KeyUsage(_))));
        // Nothing was charged or sealed: no version was used.
        assert_eq!(r.facts.key_version, None);
        let r = s.encrypt(&u, b"x", EncryptOptions::default(), aad);
        assert_eq!(r.result.unwrap().version, 1);
    }

    #[test]
    fn the_aad_closure_can_refuse() {
        let (_d, s, p) = service();
        s.create_key(&p, &KeyId::parse("k").unwrap(), Usage::BOTH)
            .unwrap();
        let r = s.encrypt(
            &key_use(&p, "k", "alice"),
            b"x",
            EncryptOptions::default(),
            |_| Err(Error::invalid("aad", "too long")),
        );
        assert!(matches!(r.result, Err(Error::Invalid { what: "aad", .. })));
    }

    fn scheme_of(t: KeyType) -> SignScheme {
        match t {
            KeyType::EcP256 => SignScheme::Ecdsa(Hash::Sha256),
            KeyType::EcP384 => SignScheme::Ecdsa(Hash::Sha384),
            KeyType::EcP521 => SignScheme::Ecdsa(Hash::Sha512),
            KeyType::Ed25519 => SignScheme::Ed25519,
            _ => SignScheme::RsaPss(Hash::Sha256),
        }
    }

    #[test]
    fn every_key_pair_type_signs_and_its_public_key_verifies() {
        let (_d, s, p) = service();
        let l = keyhold_core::Lifecycle::default();
        for t in KeyType::ALL.into_iter().filter(|t| t.is_asymmetric()) {
            let id = KeyId::parse(t.short()).unwrap();
            s.create_keys_of(&p, std::slice::from_ref(&id), t, Usage::SIGN_VERIFY, &l)
                .unwrap();
            assert_eq!(s.get_key(&p, &id).unwrap().key_type, t);
            let u = key_use(&p, t.short(), "alice");
            let signed = s.sign(&u, b"message", scheme_of(t)).result.unwrap();
            assert_eq!(signed.version, 1);
            let ok = s.verify(&u, None, b"message", &signed.signature, scheme_of(t));
            assert!(ok.result.unwrap(), "{t}");
            let bad = s.verify(&u, Some(1), b"massage", &signed.signature, scheme_of(t));
            assert!(!bad.result.unwrap(), "{t}");
            // The public key, as anyone outside would check it.
            let (v, spki) = s.public_key(&p, &id, None).unwrap();
            assert_eq!(v, 1);
            assert!(keyhold_crypto::asym::verify(
                &spki,
                scheme_of(t),
                b"message",
                &signed.signature
            )
            .unwrap());
            // Never through the AES-256 operations (XKS).
            let refused = s.encrypt(&u, b"x", EncryptOptions::default(), aad);
            assert!(
                matches!(refused.result, Err(Error::KeyUsage(m)) if m.contains("AES-256 keys only"))
            );
            assert!(matches!(s.describe(&u).result, Err(Error::KeyUsage(_))));
            // A scheme of another type.
            let other = if t == KeyType::Ed25519 {
                SignScheme::Ecdsa(Hash::Sha256)
            } else {
                SignScheme::Ed25519
            };
            assert!(matches!(
                s.sign(&u, b"m", other).result,
                Err(Error::Invalid { .. })
            ));
        }
        // An AES key neither signs nor has a public key.
        s.create_key(&p, &KeyId::parse("aes").unwrap(), Usage::BOTH)
            .unwrap();
        let aes = key_use(&p, "aes", "alice");
        assert!(matches!(
            s.sign(&aes, b"m", SignScheme::Ed25519).result,
            Err(Error::KeyUsage(_))
        ));
        assert!(matches!(
            s.public_key(&p, &KeyId::parse("aes").unwrap(), None),
            Err(Error::KeyUsage(_))
        ));
    }

    #[test]
    fn usage_must_suit_the_key_type() {
        let (_d, s, p) = service();
        let l = keyhold_core::Lifecycle::default();
        let ec = KeyId::parse("ec").unwrap();
        assert!(s
            .create_keys_of(
                &p,
                std::slice::from_ref(&ec),
                KeyType::EcP256,
                Usage::BOTH,
                &l
            )
            .is_err());
        assert!(s
            .create_keys_of(
                &p,
                std::slice::from_ref(&ec),
                KeyType::Aes256,
                Usage::SIGN_VERIFY,
                &l
            )
            .is_err());
        s.create_keys_of(
            &p,
            std::slice::from_ref(&ec),
            KeyType::EcP256,
            Usage::SIGN_VERIFY,
            &l,
        )
        .unwrap();
        assert!(s.set_key_usage(&p, &ec, Usage::BOTH).is_err());
        let verify_only = Usage::parse("VERIFY").unwrap();
        s.set_key_usage(&p, &ec, verify_only).unwrap();
        let u = key_use(&p, "ec", "alice");
        assert!(matches!(
            s.sign(&u, b"m", SignScheme::Ecdsa(Hash::Sha256)).result,
            Err(Error::KeyUsage(_))
        ));
    }

    #[test]
    fn rsa_oaep_decrypts_and_rotation_makes_a_new_pair() {
        let (_d, s, p) = service();
        let id = KeyId::parse("rsa").unwrap();
        let l = keyhold_core::Lifecycle::default();
        s.create_keys_of(
            &p,
            std::slice::from_ref(&id),
            KeyType::Rsa2048,
            Usage::BOTH,
            &l,
        )
        .unwrap();
        let u = key_use(&p, "rsa", "alice");
        let (_, spki1) = s.public_key(&p, &id, None).unwrap();
        let ct = keyhold_crypto::asym::oaep_encrypt(&spki1, Hash::Sha256, b"dek", None).unwrap();
        let pt = s.decrypt_oaep(&u, 1, &ct, Hash::Sha256, None);
        assert_eq!(pt.facts.key_version, Some(1));
        assert_eq!(pt.result.unwrap().expose(), b"dek");
        // The wrong hash, or a changed ciphertext: an invalid ciphertext.
        assert!(matches!(
            s.decrypt_oaep(&u, 1, &ct, Hash::Sha1, None).result,
            Err(Error::InvalidCiphertext)
        ));
        // An encrypting RSA key does not sign.
        assert!(matches!(
            s.sign(&u, b"m", SignScheme::RsaPss(Hash::Sha256)).result,
            Err(Error::KeyUsage(_))
        ));
        // Rotation: a new pair; the old version still decrypts.
        s.rotate_key(&p, &id).unwrap();
        let (v, spki2) = s.public_key(&p, &id, None).unwrap();
        assert_eq!(v, 2);
        assert_ne!(spki1, spki2);
        assert_eq!(s.public_key(&p, &id, Some(1)).unwrap().1, spki1);
        assert!(s.public_key(&p, &id, Some(3)).is_err());
        let ct2 = keyhold_crypto::asym::oaep_encrypt(&spki2, Hash::Sha256, b"dek2", None).unwrap();
        assert!(matches!(
            s.decrypt_oaep(&u, 1, &ct2, Hash::Sha256, None).result,
            Err(Error::InvalidCiphertext)
        ));
        assert_eq!(
            s.decrypt_oaep(&u, 2, &ct2, Hash::Sha256, None)
                .result
                .unwrap()
                .expose(),
            b"dek2"
        );
        assert_eq!(
            s.decrypt_oaep(&u, 1, &ct, Hash::Sha256, None)
                .result
                .unwrap()
                .expose(),
            b"dek"
        );
        // Break glass stops it on the next request.
        s.set_key_status(&p, &id, Status::Disabled).unwrap();
        assert!(matches!(
            s.decrypt_oaep(&u, 2, &ct2, Hash::Sha256, None).result,
            Err(Error::InvalidState(_))
        ));
    }

    #[test]
    fn a_deactivated_key_pair_verifies_but_does_not_sign() {
        let (_d, s, p) = service();
        let id = KeyId::parse("ed").unwrap();
        let l = keyhold_core::Lifecycle::default();
        s.create_keys_of(
            &p,
            std::slice::from_ref(&id),
            KeyType::Ed25519,
            Usage::SIGN_VERIFY,
            &l,
        )
        .unwrap();
        let u = key_use(&p, "ed", "alice");
        let sig = s.sign(&u, b"m", SignScheme::Ed25519).result.unwrap();
        s.deactivate_key(&p, &id).unwrap();
        assert!(matches!(
            s.sign(&u, b"m", SignScheme::Ed25519).result,
            Err(Error::KeyUsage(m)) if m.contains("verifies only")
        ));
        let ok = s.verify(&u, Some(1), b"m", &sig.signature, SignScheme::Ed25519);
        assert!(ok.result.unwrap());
    }

    #[test]
    fn nothing_blocks_without_an_hsm_or_a_database() {
        let (_d, s, p) = service();
        let t = Touches {
            credential: Some("AKID"),
            key: Some((&p, "never-seen")),
            crypt: true,
            version: Some(7),
            health: true,
        };
        assert_eq!(s.placement(&t), Placement::Inline);
    }
}
