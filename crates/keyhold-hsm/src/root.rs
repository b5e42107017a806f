//! [`Pkcs11Root`]: the key-encryption key lives in the HSM; wrapping and
//! unwrapping are AES-GCM operations performed by the HSM.

use crate::config::Pkcs11Config;
use crate::pool::{Lease, SessionPool};
use cryptoki::context::Function;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use keyhold_core::{Error, Result};
use keyhold_crypto::{fill_random, SecretBytes, GCM_IV_LEN};
use keyhold_keystore::{HsmKeys, RootInfo, RootOfTrust};
use parking_lot::Mutex;
use secrecy::SecretString;
use std::collections::HashMap;
use std::time::Duration;

/// Format byte of blobs wrapped by the PKCS#11 root (AES-GCM in the HSM).
const WRAP_FORMAT_PKCS11_GCM: u8 = 2;

/// What `keyhold hsm status` shows.
#[derive(Debug, Clone)]
pub struct HsmStatus {
    pub module: String,
    pub token_label: String,
    pub token_serial: String,
    pub manufacturer: String,
    pub model: String,
    pub kek_label: String,
    pub open_sessions: usize,
    pub max_sessions: usize,
}

struct TokenSummary {
    label: String,
    serial: String,
    manufacturer: String,
    model: String,
}

/// A root of trust whose KEK is a non-extractable AES-256 key in a PKCS#11 token.
pub struct Pkcs11Root {
    cfg: Pkcs11Config,
    ctx: Pkcs11,
    slot: Slot,
    pin: SecretString,
    pool: SessionPool,
    /// Handles of HSM-resident keys by label (token objects keep their
    /// handle for every session of this application).
    keys: Mutex<HashMap<String, ObjectHandle>>,
    token: TokenSummary,
}

impl std::fmt::Debug for Pkcs11Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Root")
            .field("module", &self.cfg.module)
            .field("token", &self.token.label)
            .finish_non_exhaustive()
    }
}

/// Why a pooled PKCS#11 call failed.
enum SessionFailure {
    /// No session could be had (pool timeout, session open or login failure).
    Pool(Error),
    Ck(CkError),
}

fn ck(what: &str, e: impl Into<SessionFailure>) -> Error {
    let e = match e.into() {
        SessionFailure::Pool(err) => return err,
        SessionFailure::Ck(e) => e,
    };
    match e {
        CkError::Pkcs11(RvError::PinIncorrect, _) => {
            Error::RootOfTrust("the HSM rejected the PIN (CKR_PIN_INCORRECT)".into())
        }
        CkError::Pkcs11(RvError::PinLocked, _) => {
            Error::RootOfTrust("the HSM user PIN is locked (CKR_PIN_LOCKED)".into())
        }
        CkError::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, _) => {
            Error::RootOfTrust(format!("{what}: wrong HSM key or damaged data"))
        }
        CkError::Pkcs11(rv, f) => Error::RootOfTrust(format!("{what}: {f:?} returned {rv:?}")),
        other => Error::RootOfTrust(format!("{what}: {other}")),
    }
}

impl From<CkError> for SessionFailure {
    fn from(e: CkError) -> Self {
        SessionFailure::Ck(e)
    }
}

/// The one context per PKCS#11 module in this process. A module is loaded
/// and C_Initialize'd once and never unloaded: unloading a module that holds
/// live state (or initialising it twice) crashes some modules, and every
/// root of trust in the process must share the module's login state anyway.
fn module_context(module: &std::path::Path) -> Result<Pkcs11> {
    static CONTEXTS: std::sync::OnceLock<Mutex<HashMap<std::path::PathBuf, Pkcs11>>> =
        std::sync::OnceLock::new();
    let mut map = CONTEXTS.get_or_init(|| Mutex::new(HashMap::new())).lock();
    if let Some(c) = map.get(module) {
        return Ok(c.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        Error::RootOfTrust(format!(
            "cannot load the PKCS#11 module {}: {e}",
            module.display()
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(ck("C_Initialize", e)),
    }
    map.insert(module.to_owned(), ctx.clone());
    Ok(ctx)
}

/// The template of every AES-256 key Keyhold generates in a token: a token
/// object, private, sensitive, never extractable, for encrypt and decrypt.
fn aes256_key_template(label: &str) -> [Attribute; 10] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// AES-GCM decryption that tells a failed authentication (`Ok(None)`) from
/// a failing device. Modules differ: the standard answer is
/// CKR_ENCRYPTED_DATA_INVALID, SoftHSMv2 answers CKR_GENERAL_ERROR; the
/// latter counts as an authentication failure only if the session is alive.
fn gcm_decrypt(
    s: &Session,
    key: ObjectHandle,
    iv: &[u8],
    aad: &[u8],
    input: &[u8],
) -> std::result::Result<Option<Vec<u8>>, CkError> {
    let mut nonce = iv.to_vec();
    let params = GcmParams::new(&mut nonce, aad, 128.into())?;
    match s.decrypt(&Mechanism::AesGcm(params), key, input) {
        Ok(p) => Ok(Some(p)),
        Err(CkError::Pkcs11(
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
            Function::Decrypt,
        )) => Ok(None),
        Err(CkError::Pkcs11(
            RvError::GeneralError | RvError::FunctionFailed,
            Function::Decrypt,
        )) if s.get_session_info().is_ok() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Errors after which a session must not be reused.
fn session_is_dead(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::GeneralError,
            _
        )
    )
}

impl Pkcs11Root {
    /// Opens the token named in `cfg`, logs in, and finds the KEK; with
    /// `create_kek`, generates it when absent (`keyhold hsm init`).
    pub fn open(cfg: Pkcs11Config, create_kek: bool) -> Result<Self> {
        cfg.validate()?;
        let pin = cfg.read_pin()?;
        let ctx = module_context(&cfg.module)?;
        let (slot, token) = Self::find_token(&ctx, &cfg)?;
        let root = Self {
            pool: SessionPool::new(
                cfg.max_sessions,
                Duration::from_millis(cfg.session_wait_ms),
                cfg.reuse_sessions,
            ),
            keys: Mutex::new(HashMap::new()),
            cfg,
            ctx,
            slot,
            pin,
            token,
        };
        let kek = {
            let lease = root.lease()?;
            match root.find_kek(lease.session())? {
                Some(k) => k,
                None if create_kek => root.create_kek(lease.session())?,
                None => {
                    return Err(Error::RootOfTrust(format!(
                    "no key-encryption key labelled {:?} in token {:?} (run `keyhold hsm init`)",
                    root.cfg.kek_label, root.token.label
                )))
                }
            }
        };
        root.keys.lock().insert(root.cfg.kek_label.clone(), kek);
        Ok(root)
    }

    fn find_token(ctx: &Pkcs11, cfg: &Pkcs11Config) -> Result<(Slot, TokenSummary)> {
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| ck("C_GetSlotList", e))?;
        let mut seen = Vec::new();
        for slot in slots {
            let Ok(info) = ctx.get_token_info(slot) else {
                continue;
            };
            let label = info.label().trim().to_owned();
            let serial = info.serial_number().trim().to_owned();
            let ok = cfg.token_label.as_deref().is_none_or(|l| l == label)
                && cfg.token_serial.as_deref().is_none_or(|s| s == serial);
            if ok && info.token_initialized() {
                return Ok((
                    slot,
                    TokenSummary {
                        label,
                        serial,
                        manufacturer: info.manufacturer_id().trim().to_owned(),
                        model: info.model().trim().to_owned(),
                    },
                ));
            }
            seen.push(label);
        }
        Err(Error::RootOfTrust(format!(
            "no initialised token labelled {:?}{} in {} (tokens seen: {:?})",
            cfg.token_label.as_deref().unwrap_or("*"),
            cfg.token_serial
                .as_deref()
                .map(|s| format!(" with serial {s:?}"))
                .unwrap_or_default(),
            cfg.module.display(),
            seen
        )))
    }

    /// Opens a read-write session, logged in as the user.
    fn open_session(&self) -> Result<Session> {
        let s = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(|e| ck("C_OpenSession", e))?;
        let state = s
            .get_session_info()
            .map_err(|e| ck("C_GetSessionInfo", e))?
            .session_state();
        if !matches!(state, SessionState::RwUser | SessionState::RoUser) {
            match s.login(UserType::User, Some(&self.pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => return Err(ck("C_Login", e)),
            }
        }
        Ok(s)
    }

    fn lease(&self) -> Result<Lease<'_>> {
        self.pool.get(|| self.open_session())
    }

    fn find_kek(&self, s: &Session) -> Result<Option<ObjectHandle>> {
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(self.cfg.kek_label.as_bytes().to_vec()),
            ])
            .map_err(|e| ck("C_FindObjects", e))?;
        match found.as_slice() {
            [] => Ok(None),
            [k] => {
                self.check_kek(s, *k)?;
                Ok(Some(*k))
            }
            _ => Err(Error::RootOfTrust(format!(
                "{} keys are labelled {:?}; the KEK label must be unique",
                found.len(),
                self.cfg.kek_label
            ))),
        }
    }

    /// Refuses a KEK that is not an AES key, or whose value could leave the HSM.
    fn check_kek(&self, s: &Session, k: ObjectHandle) -> Result<()> {
        let attrs = s
            .get_attributes(
                k,
                &[
                    AttributeType::KeyType,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::ValueLen,
                ],
            )
            .map_err(|e| ck("C_GetAttributeValue", e))?;
        let mut ok = (false, false, false, false);
        for a in attrs {
            match a {
                Attribute::KeyType(t) => ok.0 = t == KeyType::AES,
                Attribute::Sensitive(v) => ok.1 = v,
                Attribute::Extractable(v) => ok.2 = !v,
                Attribute::ValueLen(l) => ok.3 = u64::from(l) == 32,
                _ => {}
            }
        }
        if ok != (true, true, true, true) {
            return Err(Error::RootOfTrust(format!(
                "the key labelled {:?} must be an AES-256 key that is sensitive and not extractable",
                self.cfg.kek_label
            )));
        }
        Ok(())
    }

    fn create_kek(&self, s: &Session) -> Result<ObjectHandle> {
        let template = aes256_key_template(&self.cfg.kek_label);
        let k = s
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| ck("C_GenerateKey", e))?;
        tracing::info!(label = %self.cfg.kek_label, token = %self.token.label, "created the HSM key-encryption key");
        Ok(k)
    }

    /// Runs `f` with a pooled session and the KEK (looked up again if its
    /// handle went stale).
    fn with_kek<R>(
        &self,
        what: &str,
        f: impl Fn(&Session, ObjectHandle) -> std::result::Result<R, CkError>,
    ) -> Result<R> {
        self.with_key(&self.cfg.kek_label, f)
            .map_err(|e| ck(what, e))
    }

    /// Runs `f` with a pooled session. A failure that may have killed the
    /// session discards it and retries once with a fresh one. Pool errors
    /// (no free session in time) come back as `Err(Ok(error))`.
    fn with_session<R>(
        &self,
        what: &str,
        f: impl Fn(&Session) -> std::result::Result<R, CkError>,
    ) -> std::result::Result<R, SessionFailure> {
        let mut last = None;
        for attempt in 0..2 {
            let lease = self.lease().map_err(SessionFailure::Pool)?;
            match f(lease.session()) {
                Ok(r) => return Ok(r),
                Err(e) if session_is_dead(&e) => {
                    tracing::warn!(attempt, op = what, error = ?e, "HSM session failed; retrying with a new one");
                    lease.discard();
                    last = Some(e);
                }
                Err(e) => return Err(SessionFailure::Ck(e)),
            }
        }
        Err(SessionFailure::Ck(last.expect("two attempts failed")))
    }

    /// Runs `f` with the handle of the key labelled `label`. A handle that
    /// went stale (the token was logged out, say) is looked up again once.
    fn with_key<R>(
        &self,
        label: &str,
        f: impl Fn(&Session, ObjectHandle) -> std::result::Result<R, CkError>,
    ) -> std::result::Result<R, SessionFailure> {
        if !self.cfg.reuse_sessions {
            // The naive baseline: every operation opens a session, logs in,
            // finds the key and uses it.
            self.key_handle(label).map_err(SessionFailure::Pool)?;
            return self.with_session(label, |s| {
                let found = s.find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?;
                match found.first() {
                    Some(h) => f(s, *h),
                    None => Err(CkError::Pkcs11(
                        RvError::KeyHandleInvalid,
                        Function::FindObjects,
                    )),
                }
            });
        }
        let h = self.key_handle(label).map_err(SessionFailure::Pool)?;
        match self.with_session(label, |s| f(s, h)) {
            Err(SessionFailure::Ck(CkError::Pkcs11(
                RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid,
                _,
            ))) => {
                self.keys.lock().remove(label);
                let h = self.key_handle(label).map_err(SessionFailure::Pool)?;
                self.with_session(label, |s| f(s, h))
            }
            r => r,
        }
    }

    /// The handle of the AES-256 key with this label (cached).
    fn key_handle(&self, label: &str) -> Result<ObjectHandle> {
        if let Some(h) = self.keys.lock().get(label) {
            return Ok(*h);
        }
        // Find and inspect in one session: a handle is only sure to be valid
        // while the token stays logged in.
        let (found, attrs) = self
            .with_session("find key", |s| {
                let found = s.find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?;
                let attrs = match found.as_slice() {
                    [h] => s.get_attributes(
                        *h,
                        &[
                            AttributeType::KeyType,
                            AttributeType::ValueLen,
                            AttributeType::Encrypt,
                            AttributeType::Decrypt,
                        ],
                    )?,
                    _ => Vec::new(),
                };
                Ok((found, attrs))
            })
            .map_err(|e| ck("find HSM key", e))?;
        let h = match found.as_slice() {
            [h] => *h,
            [] => {
                return Err(Error::RootOfTrust(format!(
                    "no key labelled {label:?} in the HSM"
                )))
            }
            _ => {
                return Err(Error::RootOfTrust(format!(
                    "{} keys are labelled {label:?} in the HSM; labels must be unique",
                    found.len()
                )))
            }
        };
        let mut ok = (false, false, false, false);
        for a in attrs {
            match a {
                Attribute::KeyType(t) => ok.0 = t == KeyType::AES,
                Attribute::ValueLen(l) => ok.1 = u64::from(l) == 32,
                Attribute::Encrypt(v) => ok.2 = v,
                Attribute::Decrypt(v) => ok.3 = v,
                _ => {}
            }
        }
        if ok != (true, true, true, true) {
            return Err(Error::RootOfTrust(format!(
                "the HSM key labelled {label:?} must be an AES-256 key allowed to encrypt and decrypt"
            )));
        }
        self.keys.lock().insert(label.to_owned(), h);
        Ok(h)
    }

    pub fn status(&self) -> HsmStatus {
        HsmStatus {
            module: self.cfg.module.display().to_string(),
            token_label: self.token.label.clone(),
            token_serial: self.token.serial.clone(),
            manufacturer: self.token.manufacturer.clone(),
            model: self.token.model.clone(),
            kek_label: self.cfg.kek_label.clone(),
            open_sessions: self.pool.open_sessions(),
            max_sessions: self.pool.max_sessions(),
        }
    }

    /// Labels of the secret keys in the token.
    pub fn list_secret_keys(&self) -> Result<Vec<String>> {
        let lease = self.lease()?;
        let s = lease.session();
        let handles = s
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
            .map_err(|e| ck("C_FindObjects", e))?;
        let mut out = Vec::new();
        for h in handles {
            let attrs = s
                .get_attributes(h, &[AttributeType::Label])
                .map_err(|e| ck("C_GetAttributeValue", e))?;
            for a in attrs {
                if let Attribute::Label(l) = a {
                    out.push(String::from_utf8_lossy(&l).into_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

impl HsmKeys for Pkcs11Root {
    fn generate_key(&self, label: &str) -> Result<()> {
        if self.key_handle(label).is_ok() {
            return Err(Error::invalid(
                "HSM key label",
                format!("{label:?} is already in use"),
            ));
        }
        let template = aes256_key_template(label);
        let h = self
            .with_session("generate key", |s| {
                s.generate_key(&Mechanism::AesKeyGen, &template)
            })
            .map_err(|e| ck("C_GenerateKey", e))?;
        self.keys.lock().insert(label.to_owned(), h);
        Ok(())
    }

    fn check_key(&self, label: &str) -> Result<()> {
        self.key_handle(label).map(|_| ())
    }

    fn encrypt(
        &self,
        label: &str,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<([u8; 12], Vec<u8>, [u8; 16])> {
        let (iv, mut out) = self
            .with_key(label, |s, h| {
                // The IV comes from the module's RNG.
                let mut iv = [0u8; GCM_IV_LEN];
                s.generate_random_slice(&mut iv)?;
                let mut nonce = iv;
                let params = GcmParams::new(&mut nonce, aad, 128.into())?;
                Ok((iv, s.encrypt(&Mechanism::AesGcm(params), h, plaintext)?))
            })
            .map_err(|e| ck("encrypt in the HSM", e))?;
        if out.len() != plaintext.len() + 16 {
            return Err(Error::Internal(
                "unexpected AES-GCM output length from the HSM".into(),
            ));
        }
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&out[plaintext.len()..]);
        out.truncate(plaintext.len());
        Ok((iv, out, tag))
    }

    fn decrypt(
        &self,
        label: &str,
        iv: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> Result<SecretBytes> {
        let mut input = Vec::with_capacity(ciphertext.len() + tag.len());
        input.extend_from_slice(ciphertext);
        input.extend_from_slice(tag);
        match self
            .with_key(label, |s, h| gcm_decrypt(s, h, iv, aad, &input))
            .map_err(|e| ck("decrypt in the HSM", e))?
        {
            Some(p) => Ok(SecretBytes::new(p)),
            None => Err(Error::InvalidCiphertext),
        }
    }
}

impl RootOfTrust for Pkcs11Root {
    fn hsm_keys(&self) -> Option<&dyn HsmKeys> {
        Some(self)
    }

    fn wrap(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut iv = [0u8; GCM_IV_LEN];
        fill_random(&mut iv).map_err(|e| Error::Internal(e.to_string()))?;
        let sealed = self.with_kek("wrap in the HSM", |s, kek| {
            let mut iv = iv;
            let params = GcmParams::new(&mut iv, context, 128.into())?;
            s.encrypt(&Mechanism::AesGcm(params), kek, plaintext)
        })?;
        let mut out = Vec::with_capacity(1 + GCM_IV_LEN + sealed.len());
        out.push(WRAP_FORMAT_PKCS11_GCM);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<SecretBytes> {
        let rest = match wrapped.split_first() {
            Some((&WRAP_FORMAT_PKCS11_GCM, rest)) if rest.len() >= GCM_IV_LEN + 16 => rest,
            _ => return Err(Error::RootOfTrust("not wrapped by a PKCS#11 root".into())),
        };
        let (iv, sealed) = rest.split_at(GCM_IV_LEN);
        let plain = self.with_kek("unwrap in the HSM", |s, kek| {
            gcm_decrypt(s, kek, iv, context, sealed)
        })?;
        plain.map(SecretBytes::new).ok_or(Error::UnwrapFailed)
    }

    fn info(&self) -> RootInfo {
        RootInfo {
            id: format!("pkcs11-{}-{}", self.token.label, self.token.serial),
            model: format!(
                "{} {} (PKCS#11 token {})",
                self.token.manufacturer, self.token.model, self.token.label
            ),
        }
    }
}
