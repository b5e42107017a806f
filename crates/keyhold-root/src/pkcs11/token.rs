//! [`Pkcs11Token`]: one token of a PKCS#11 module, holding the
//! key-encryption key and HSM-resident keys, with its session pool. The
//! token is found again after every re-initialisation of its module, and
//! a failure whose cause is the token itself (it stopped answering) leads
//! to one re-initialisation and one retry.

mod pairs;

use super::config::Pkcs11Config;
use super::module::{Loaded, Module};
use super::pool::SessionPool;
use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use keyhold_core::{Error, Result, Usage};
use keyhold_crypto::{ct_eq, fill_random, SecretBytes, GCM_IV_LEN};
use parking_lot::Mutex;
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroize;

/// Format byte of blobs wrapped by the PKCS#11 root (AES-GCM in the HSM).
pub(crate) const WRAP_FORMAT_PKCS11_GCM: u8 = 2;

/// What the token says about itself (C_GetTokenInfo).
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenSummary {
    pub label: String,
    pub serial: String,
    pub manufacturer: String,
    pub model: String,
}

impl TokenSummary {
    /// How health reports and operators see the token called `name`.
    pub(crate) fn describe(&self, name: &str) -> crate::RootInfo {
        crate::RootInfo {
            id: format!("pkcs11-{name}-{}", self.serial),
            model: format!(
                "{} {} (PKCS#11 token {name})",
                self.manufacturer, self.model
            ),
        }
    }
}

/// Where the token was found, in one generation of its module.
struct Found {
    generation: u64,
    slot: Slot,
}

/// One token: its slot, login, session pool and key handles.
pub(crate) struct Pkcs11Token {
    pub(crate) cfg: Pkcs11Config,
    module: Arc<Module>,
    pin: SecretString,
    pool: SessionPool,
    found: Mutex<Option<Found>>,
    /// Last known description (kept while the token is away).
    summary: Mutex<TokenSummary>,
    /// Handles of keys by label, valid for the generation in `found`
    /// (token objects keep their handle for every session of this process).
    keys: Mutex<HashMap<String, ObjectHandle>>,
    /// Private keys of HSM-resident pairs and their kinds, likewise.
    pairs: Mutex<HashMap<String, (ObjectHandle, keyhold_crypto::asym::PairKind)>>,
    /// One health probe at a time (the first one may create the health key).
    probing: Mutex<()>,
    /// Whether the module's CKM_AES_KEY_WRAP_PAD pads as RFC 5649 says
    /// (found once, on the first padded wrap that needs padding).
    pads_right: std::sync::OnceLock<bool>,
}

impl std::fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Token")
            .field("module", &self.cfg.module)
            .field("token", &self.name())
            .finish_non_exhaustive()
    }
}

/// Why a pooled PKCS#11 call failed.
pub(crate) enum SessionFailure {
    /// No session could be had (pool timeout, token missing, login failure).
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

/// The template of every AES-256 key Keyhold generates in a token: a token
/// object, private, sensitive, never extractable, allowed what `usage` says
/// (customer keys also AES key wrap in the direction of their usage;
/// Keyhold's own keys never wrap).
fn aes256_key_template(label: &str, usage: Usage, wraps: bool) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    t.extend(usage_attributes(usage, wraps));
    t
}

/// What a key may do, said to the token: encrypt and decrypt as `usage`
/// says, with `wraps` AES key wrap (CKA_WRAP with encrypt, CKA_UNWRAP
/// with decrypt: Azure's wrapkey and unwrapkey), and nothing else (modules
/// default some of these to true). Wrapping cannot take another key out
/// of the token: every key Keyhold keeps there is non-extractable, and
/// the only keys it wraps are session objects made for that one call.
fn usage_attributes(usage: Usage, wraps: bool) -> [Attribute; 7] {
    [
        Attribute::Encrypt(usage.encrypt),
        Attribute::Decrypt(usage.decrypt),
        Attribute::Wrap(wraps && usage.encrypt),
        Attribute::Unwrap(wraps && usage.decrypt),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
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

/// The most AES key wrap takes in one call: far more than any key (an RSA
/// 4096 private key is about 2.4 KB), little enough for a session object.
const MAX_KEY_WRAP_INPUT: usize = 16 * 1024;

/// Which way an AES key wrap goes.
#[derive(Clone, Copy)]
enum Direction {
    Wrap,
    Unwrap,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Wrap => "wrap",
            Direction::Unwrap => "unwrap",
        }
    }
}

/// CKM_AES_KEY_WRAP (RFC 3394) or, `padded`, CKM_AES_KEY_WRAP_PAD (RFC 5649).
fn wrap_mechanism(padded: bool) -> Mechanism<'static> {
    if padded {
        Mechanism::AesKeyWrapPad
    } else {
        Mechanism::AesKeyWrap
    }
}

/// Destroys a session object made for one call; one left behind (the
/// session died) goes with its session.
fn destroy_quietly(s: &Session, object: ObjectHandle) {
    if let Err(e) = s.destroy_object(object) {
        tracing::debug!(error = ?e, "could not destroy a session object; it ends with its session");
    }
}

/// The template of a value AES key wrap takes or gives: a generic secret
/// session object, readable (not sensitive, extractable), for one call.
fn value_template() -> [Attribute; 6] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ]
}

/// Wraps `data` with `key`: `data` becomes a session object (its copy in
/// the template zeroized), C_WrapKey wraps it, C_DestroyObject removes it.
fn wrap_value(
    s: &Session,
    mechanism: &Mechanism<'_>,
    key: ObjectHandle,
    data: &[u8],
) -> std::result::Result<Vec<u8>, CkError> {
    let mut template = value_template().to_vec();
    template.push(Attribute::Value(data.to_vec()));
    let object = s.create_object(&template);
    if let Some(Attribute::Value(v)) = template.last_mut() {
        v.zeroize();
    }
    let object = object?;
    let wrapped = s.wrap_key(mechanism, key, object);
    destroy_quietly(s, object);
    wrapped
}

/// Unwraps `wrapped` with `key` into a session object, reads its value and
/// destroys it.
fn unwrap_value(
    s: &Session,
    mechanism: &Mechanism<'_>,
    key: ObjectHandle,
    wrapped: &[u8],
) -> std::result::Result<Option<SecretBytes>, CkError> {
    let object = s.unwrap_key(mechanism, key, wrapped, &value_template())?;
    let value = s.get_attributes(object, &[AttributeType::Value]);
    destroy_quietly(s, object);
    Ok(value?.into_iter().find_map(|a| match a {
        Attribute::Value(v) => Some(SecretBytes::new(v)),
        _ => None,
    }))
}

/// Whether C_SetAttributeValue failed because the token does not let the
/// attribute change (rather than because it failed).
fn refused_change(e: &SessionFailure) -> bool {
    matches!(
        e,
        SessionFailure::Ck(CkError::Pkcs11(
            RvError::AttributeReadOnly
                | RvError::AttributeValueInvalid
                | RvError::AttributeTypeInvalid
                | RvError::ActionProhibited
                | RvError::TemplateInconsistent,
            _,
        ))
    )
}

/// Errors after which a session must not be reused.
/// Whether a failure with a valid template is worth one retry on a fresh
/// session: SoftHSMv2 has been seen to answer CKR_TEMPLATE_INCONSISTENT to
/// Keyhold's (constant, valid) key template while other threads of the
/// process created objects or closed their sessions (which ends the login
/// every session shares). A template that really is inconsistent fails the
/// retry the same way.
fn transient_template_error(e: &CkError) -> bool {
    matches!(e, CkError::Pkcs11(RvError::TemplateInconsistent, _))
}

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

/// What a key's attributes say about it.
#[derive(Default)]
struct KeyFacts {
    aes256: bool,
    encrypt: bool,
    decrypt: bool,
    sensitive: bool,
    extractable: bool,
}

fn key_facts(s: &Session, h: ObjectHandle) -> std::result::Result<KeyFacts, CkError> {
    let attrs = s.get_attributes(
        h,
        &[
            AttributeType::KeyType,
            AttributeType::ValueLen,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
            AttributeType::Sensitive,
            AttributeType::Extractable,
        ],
    )?;
    let (mut aes, mut len32, mut f) = (false, false, KeyFacts::default());
    for a in attrs {
        match a {
            Attribute::KeyType(t) => aes = t == KeyType::AES,
            Attribute::ValueLen(l) => len32 = u64::from(l) == 32,
            Attribute::Encrypt(v) => f.encrypt = v,
            Attribute::Decrypt(v) => f.decrypt = v,
            Attribute::Sensitive(v) => f.sensitive = v,
            Attribute::Extractable(v) => f.extractable = v,
            _ => {}
        }
    }
    f.aes256 = aes && len32;
    Ok(f)
}

/// Whether an error may come from the token rather than from the request:
/// only then is the token checked, and maybe the module re-initialised.
pub(crate) fn may_be_device(e: &Error) -> bool {
    matches!(e, Error::RootOfTrust(_))
}

impl Pkcs11Token {
    /// Loads the module and reads the PIN; the token itself is looked up on
    /// first use (and after every re-initialisation of the module).
    pub(crate) fn new(cfg: Pkcs11Config) -> Result<Self> {
        cfg.validate()?;
        let pin = cfg.read_pin()?;
        let module = Module::get(&cfg.module)?;
        Ok(Self {
            pool: SessionPool::new(
                cfg.max_sessions,
                Duration::from_millis(cfg.session_wait_ms),
                cfg.reuse_sessions,
            ),
            keys: Mutex::new(HashMap::new()),
            pairs: Mutex::new(HashMap::new()),
            found: Mutex::new(None),
            probing: Mutex::new(()),
            pads_right: std::sync::OnceLock::new(),
            summary: Mutex::new(TokenSummary {
                label: cfg.token_label.clone().unwrap_or_default(),
                serial: cfg.token_serial.clone().unwrap_or_default(),
                ..TokenSummary::default()
            }),
            cfg,
            module,
            pin,
        })
    }

    /// Checks that the token is there, the PIN works and the KEK exists;
    /// with `create_kek`, generates the KEK when absent (`keyhold hsm init`).
    pub(crate) fn connect(&self, create_kek: bool) -> Result<()> {
        let found = self
            .with_session("find the key-encryption key", |s| self.find_kek(s))
            .map_err(|e| ck("C_FindObjects", e))?;
        match found {
            Some(_) => self.key_handle(&self.cfg.kek_label).map(|_| ()),
            None if create_kek => {
                let template = aes256_key_template(&self.cfg.kek_label, Usage::BOTH, false);
                self.with_session("create the key-encryption key", |s| {
                    s.generate_key(&Mechanism::AesKeyGen, &template)
                })
                .map_err(|e| ck("C_GenerateKey", e))?;
                tracing::info!(label = %self.cfg.kek_label, token = %self.name(), "created the HSM key-encryption key");
                self.key_handle(&self.cfg.kek_label).map(|_| ())
            }
            None => Err(Error::RootOfTrust(format!(
                "no key-encryption key labelled {:?} in token {:?} (run `keyhold hsm init`)",
                self.cfg.kek_label,
                self.name()
            ))),
        }
    }

    /// The token's label (or serial) for messages.
    pub(crate) fn name(&self) -> String {
        let s = self.summary.lock();
        if s.label.is_empty() {
            s.serial.clone()
        } else {
            s.label.clone()
        }
    }

    pub(crate) fn summary(&self) -> TokenSummary {
        self.summary.lock().clone()
    }

    pub(crate) fn open_sessions(&self) -> usize {
        self.pool.open_sessions()
    }

    pub(crate) fn max_sessions(&self) -> usize {
        self.pool.max_sessions()
    }

    /// The token's slot in the module's current generation, looked up again
    /// after a re-initialisation (which also voids every cached handle).
    fn locate(&self, m: &Loaded) -> Result<Slot> {
        let mut found = self.found.lock();
        if let Some(f) = found.as_ref().filter(|f| f.generation == m.generation) {
            return Ok(f.slot);
        }
        self.keys.lock().clear();
        self.pairs.lock().clear();
        let slots = m
            .ctx
            .get_slots_with_token()
            .map_err(|e| ck("C_GetSlotList", e))?;
        let mut seen = Vec::new();
        for slot in slots {
            let Ok(info) = m.ctx.get_token_info(slot) else {
                continue;
            };
            let label = info.label().trim().to_owned();
            let serial = info.serial_number().trim().to_owned();
            let ok = self.cfg.token_label.as_deref().is_none_or(|l| l == label)
                && self.cfg.token_serial.as_deref().is_none_or(|s| s == serial);
            if ok && info.token_initialized() {
                *self.summary.lock() = TokenSummary {
                    label,
                    serial,
                    manufacturer: info.manufacturer_id().trim().to_owned(),
                    model: info.model().trim().to_owned(),
                };
                *found = Some(Found {
                    generation: m.generation,
                    slot,
                });
                return Ok(slot);
            }
            seen.push(label);
        }
        Err(Error::RootOfTrust(format!(
            "no initialised token labelled {:?}{} in {} (tokens seen: {:?})",
            self.cfg.token_label.as_deref().unwrap_or("*"),
            self.cfg
                .token_serial
                .as_deref()
                .map(|s| format!(" with serial {s:?}"))
                .unwrap_or_default(),
            self.cfg.module.display(),
            seen
        )))
    }

    /// Whether the token still answers (C_GetTokenInfo on its slot).
    pub(crate) fn answers(&self) -> bool {
        let m = self.module.enter();
        match self.locate(&m) {
            Ok(slot) => m.ctx.get_token_info(slot).is_ok(),
            Err(_) => false,
        }
    }

    /// Runs `op`; if it fails and the token has stopped answering, the
    /// module is re-initialised (at most once a second) and `op` runs once
    /// more. Returns the error and whether the token is down.
    pub(crate) fn recovering<R>(
        &self,
        op: impl Fn() -> Result<R>,
    ) -> std::result::Result<R, (Error, bool)> {
        let generation = self.module.generation();
        match op() {
            Ok(r) => Ok(r),
            Err(e) if may_be_device(&e) && !self.answers() => {
                if !self.module.reinitialize(generation) {
                    return Err((e, true));
                }
                match op() {
                    Ok(r) => {
                        tracing::info!(token = %self.name(), "HSM token recovered");
                        Ok(r)
                    }
                    Err(e) => {
                        let down = may_be_device(&e) && !self.answers();
                        Err((e, down))
                    }
                }
            }
            Err(e) => Err((e, false)),
        }
    }

    /// Opens a read-write session, logged in as the user.
    fn open_session(&self, m: &Loaded, slot: Slot) -> Result<Session> {
        let s = m
            .ctx
            .open_rw_session(slot)
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

    fn find_kek(&self, s: &Session) -> std::result::Result<Option<ObjectHandle>, CkError> {
        let found = s.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(self.cfg.kek_label.as_bytes().to_vec()),
        ])?;
        Ok(found.first().copied())
    }

    /// Runs `f` with a pooled session, holding the module's guard. A failure
    /// that may have killed the session discards it and retries once with a
    /// fresh one.
    fn with_session<R>(
        &self,
        what: &str,
        f: impl Fn(&Session) -> std::result::Result<R, CkError>,
    ) -> std::result::Result<R, SessionFailure> {
        let m = self.module.enter();
        let slot = self.locate(&m).map_err(SessionFailure::Pool)?;
        let mut last = None;
        for attempt in 0..2 {
            let lease = self
                .pool
                .get(m.generation, || self.open_session(&m, slot))
                .map_err(SessionFailure::Pool)?;
            match f(lease.session()) {
                Ok(r) => return Ok(r),
                Err(e) if session_is_dead(&e) || transient_template_error(&e) => {
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

    /// The handle of the AES-256 key with this label (cached). The KEK must
    /// also be sensitive and never extractable.
    fn key_handle(&self, label: &str) -> Result<ObjectHandle> {
        if let Some(h) = self.keys.lock().get(label) {
            return Ok(*h);
        }
        // Find and inspect in one session: a handle is only sure to be valid
        // while the token stays logged in.
        let (found, facts) = self
            .with_session("find key", |s| {
                let found = s.find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?;
                let facts = match found.as_slice() {
                    [h] => key_facts(s, *h)?,
                    _ => KeyFacts::default(),
                };
                Ok((found, facts))
            })
            .map_err(|e| ck("find HSM key", e))?;
        let h = match found.as_slice() {
            [h] => *h,
            [] => {
                return Err(Error::RootOfTrust(format!(
                    "no key labelled {label:?} in HSM token {:?}",
                    self.name()
                )))
            }
            _ => {
                return Err(Error::RootOfTrust(format!(
                    "{} keys are labelled {label:?} in HSM token {:?}; labels must be unique",
                    found.len(),
                    self.name()
                )))
            }
        };
        if !facts.aes256 {
            return Err(Error::RootOfTrust(format!(
                "the HSM key labelled {label:?} must be an AES-256 key"
            )));
        }
        // Customer keys may do what their usage allows (the token refuses
        // the rest); Keyhold's own must encrypt and decrypt.
        if self.is_reserved(label) && !(facts.encrypt && facts.decrypt) {
            return Err(Error::RootOfTrust(format!(
                "the HSM key labelled {label:?} must be allowed to encrypt and decrypt"
            )));
        }
        let kek_may_leave = facts.extractable || !facts.sensitive;
        if label == self.cfg.kek_label && kek_may_leave {
            return Err(Error::RootOfTrust(format!(
                "the key-encryption key {label:?} must be sensitive and not extractable"
            )));
        }
        self.keys.lock().insert(label.to_owned(), h);
        Ok(h)
    }

    /// Labels of the secret keys in the token.
    pub(crate) fn list_secret_keys(&self) -> Result<Vec<String>> {
        self.labels_of(ObjectClass::SECRET_KEY)
    }

    /// Labels of the key pairs (their private keys) in the token.
    pub(crate) fn list_key_pairs(&self) -> Result<Vec<String>> {
        self.labels_of(ObjectClass::PRIVATE_KEY)
    }

    /// Labels of the token's objects of a class, sorted.
    fn labels_of(&self, class: ObjectClass) -> Result<Vec<String>> {
        let mut out = self
            .with_session("list keys", |s| {
                let mut out = Vec::new();
                for h in s.find_objects(&[Attribute::Class(class)])? {
                    for a in s.get_attributes(h, &[AttributeType::Label])? {
                        if let Attribute::Label(l) = a {
                            out.push(String::from_utf8_lossy(&l).into_owned());
                        }
                    }
                }
                Ok(out)
            })
            .map_err(|e| ck("list HSM keys", e))?;
        out.sort();
        Ok(out)
    }

    /// Generates a non-extractable AES-256 key with this label, allowed to
    /// do exactly `usage`.
    pub(crate) fn generate_key(&self, label: &str, usage: Usage) -> Result<()> {
        if self.key_handle(label).is_ok() {
            return Err(Error::invalid(
                "HSM key label",
                format!("{label:?} is already in use"),
            ));
        }
        let template = aes256_key_template(label, usage, !self.is_reserved(label));
        let h = self
            .with_session("generate key", |s| {
                s.generate_key(&Mechanism::AesKeyGen, &template)
            })
            .map_err(|e| ck("C_GenerateKey", e))?;
        self.keys.lock().insert(label.to_owned(), h);
        Ok(())
    }

    /// Whether the label is the KEK's or the health key's.
    pub(crate) fn is_reserved(&self, label: &str) -> bool {
        std::iter::once(&self.cfg.kek_label)
            .chain(&self.cfg.retired_kek_labels)
            .any(|k| label == k || label == format!("{k}-health"))
    }

    /// Destroys a KEK retired by a rotation, and its health key, in this
    /// token (absent ones count as destroyed). Only labels the
    /// configuration lists as retired.
    pub(crate) fn destroy_retired_kek(&self, label: &str) -> Result<()> {
        if !self.cfg.retired_kek_labels.iter().any(|k| k == label) {
            return Err(Error::invalid(
                "HSM key label",
                format!("{label:?} is not a retired key-encryption key"),
            ));
        }
        for l in [label.to_owned(), format!("{label}-health")] {
            let found = self
                .with_session("find key", |s| {
                    s.find_objects(&[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::Label(l.as_bytes().to_vec()),
                    ])
                })
                .map_err(|e| ck("find HSM key", e))?;
            for h in found {
                self.with_session("destroy key", |s| s.destroy_object(h))
                    .map_err(|e| ck("C_DestroyObject", e))?;
            }
            self.keys.lock().remove(&l);
        }
        tracing::warn!(label, token = %self.name(), "destroyed the retired key-encryption key");
        Ok(())
    }

    /// Destroys the key with this label (never the KEK): a secret key, or
    /// both halves of a key pair. A key already absent counts as destroyed.
    pub(crate) fn destroy_key(&self, label: &str) -> Result<()> {
        if self.is_reserved(label) {
            return Err(Error::invalid(
                "HSM key label",
                "Keyhold's own keys are not destroyed this way",
            ));
        }
        let found = self
            .with_session("find key", |s| {
                let mut found = Vec::new();
                for class in [
                    ObjectClass::SECRET_KEY,
                    ObjectClass::PRIVATE_KEY,
                    ObjectClass::PUBLIC_KEY,
                ] {
                    found.extend(s.find_objects(&[
                        Attribute::Class(class),
                        Attribute::Label(label.as_bytes().to_vec()),
                    ])?);
                }
                Ok(found)
            })
            .map_err(|e| ck("find HSM key", e))?;
        for h in found {
            self.with_session("destroy key", |s| s.destroy_object(h))
                .map_err(|e| ck("C_DestroyObject", e))?;
        }
        self.keys.lock().remove(label);
        self.pairs.lock().clear();
        tracing::warn!(label, token = %self.name(), "destroyed the HSM key");
        Ok(())
    }

    /// Makes the key allowed to do exactly `usage` (C_SetAttributeValue).
    /// `Ok(false)`: the token refuses to change these attributes.
    pub(crate) fn set_usage(&self, label: &str, usage: Usage) -> Result<bool> {
        if self.key_handle(label).is_err() && self.pair(label).is_ok() {
            return self.set_pair_usage(label, usage);
        }
        match self.with_key(label, |s, h| {
            s.update_attributes(h, &usage_attributes(usage, !self.is_reserved(label)))
        }) {
            Ok(()) => Ok(true),
            Err(e) if refused_change(&e) => Ok(false),
            Err(e) => Err(ck("C_SetAttributeValue", e)),
        }
    }

    pub(crate) fn check_key(&self, label: &str) -> Result<()> {
        self.key_handle(label).map(|_| ())
    }

    /// AES-GCM in the HSM with an IV from the module's RNG.
    pub(crate) fn encrypt(
        &self,
        label: &str,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<([u8; 12], Vec<u8>, [u8; 16])> {
        let (iv, mut out) = self
            .with_key(label, |s, h| {
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

    pub(crate) fn decrypt(
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

    /// AES key wrap (RFC 3394, or RFC 5649 when `padded`) of `data` under
    /// the customer key labelled `label`, inside the HSM: `data` becomes a
    /// session object for this one call (C_CreateObject), which C_WrapKey
    /// wraps and C_DestroyObject removes.
    ///
    /// Sizes are checked here, not left to the module: RFC 3394 takes 16
    /// bytes or more in whole 8-byte blocks (PKCS#11 lets a module pad
    /// other sizes with zeros, which no RFC 3394 unwrap gives back), RFC
    /// 5649 any size from 1 byte. A module that pads RFC 5649 input with
    /// zeros before wrapping (SoftHSMv2 before 2.7) is found by a round
    /// trip with a session key of its own, and refuses sizes that need
    /// padding rather than wrap them wrongly.
    pub(crate) fn key_wrap(&self, label: &str, data: &[u8], padded: bool) -> Result<Vec<u8>> {
        let too_big = data.len() > MAX_KEY_WRAP_INPUT;
        if too_big
            || (!padded && (data.len() < 16 || !data.len().is_multiple_of(8)))
            || data.is_empty()
        {
            return Err(Error::invalid(
                "value",
                format!(
                    "{} bytes is not a size AES key wrap{} takes",
                    data.len(),
                    if padded { " with padding" } else { "" }
                ),
            ));
        }
        if padded && !data.len().is_multiple_of(8) && !self.pads_right()? {
            return Err(Error::KeyUsage(format!(
                "the PKCS#11 module of HSM token {:?} pads AES key wrap with padding (RFC 5649) wrongly, so it wraps only whole 8-byte blocks: {} bytes is not",
                self.name(),
                data.len()
            )));
        }
        let mechanism = wrap_mechanism(padded);
        let wrapped = self.with_wrapping_key(label, Direction::Wrap, |s, h| {
            wrap_value(s, &mechanism, h, data)
        });
        wrapped.map_err(|e| match e {
            SessionFailure::Ck(CkError::Pkcs11(
                RvError::KeySizeRange | RvError::DataLenRange | RvError::TemplateInconsistent,
                _,
            )) => Error::invalid(
                "value",
                format!("{} bytes is not a size AES key wrap takes", data.len()),
            ),
            e => ck("AES key wrap in the HSM", e),
        })
    }

    /// Whether the module's CKM_AES_KEY_WRAP_PAD wraps 1 byte as 1 byte
    /// (a round trip with a session AES key made for the test, never a
    /// customer key): found once per token.
    fn pads_right(&self) -> Result<bool> {
        if let Some(r) = self.pads_right.get() {
            return Ok(*r);
        }
        let key_template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
        ];
        let len = self
            .with_session("test AES key wrap with padding", |s| {
                let key = s.generate_key(&Mechanism::AesKeyGen, &key_template)?;
                let pad = Mechanism::AesKeyWrapPad;
                let result = wrap_value(s, &pad, key, &[0x5a])
                    .and_then(|w| unwrap_value(s, &pad, key, &w))
                    .map(|v| v.map(|v| v.len()));
                destroy_quietly(s, key);
                result
            })
            .map_err(|e| ck("test AES key wrap with padding in the HSM", e))?;
        let right = len == Some(1);
        if !right {
            tracing::warn!(token = %self.name(), "the PKCS#11 module pads AES key wrap with padding (RFC 5649) with zeros; only whole 8-byte blocks are wrapped with it");
        }
        Ok(*self.pads_right.get_or_init(|| right))
    }

    /// The inverse of [`Self::key_wrap`] (C_UnwrapKey into a session object
    /// whose value is read and which is then destroyed). A value that does
    /// not check is `InvalidCiphertext`.
    pub(crate) fn key_unwrap(
        &self,
        label: &str,
        wrapped: &[u8],
        padded: bool,
    ) -> Result<SecretBytes> {
        let mechanism = wrap_mechanism(padded);
        let opened = self
            .with_wrapping_key(label, Direction::Unwrap, |s, h| {
                // Only C_UnwrapKey's own answers say the value does not check.
                match unwrap_value(s, &mechanism, h, wrapped) {
                    Err(CkError::Pkcs11(
                        RvError::WrappedKeyInvalid
                        | RvError::WrappedKeyLenRange
                        | RvError::EncryptedDataInvalid
                        | RvError::EncryptedDataLenRange,
                        Function::UnwrapKey,
                    )) => Ok(None),
                    // SoftHSMv2 answers a value that does not check with
                    // CKR_GENERAL_ERROR: a failed check if the session lives.
                    Err(CkError::Pkcs11(
                        RvError::GeneralError | RvError::FunctionFailed,
                        Function::UnwrapKey,
                    )) if s.get_session_info().is_ok() => Ok(None),
                    r => r,
                }
            })
            .map_err(|e| ck("AES key unwrap in the HSM", e))?;
        opened.ok_or(Error::InvalidCiphertext)
    }

    /// Runs `f` with the customer key labelled `label` for AES key wrap in
    /// `direction`. A key made before Keyhold let its keys wrap (CKA_WRAP
    /// and CKA_UNWRAP false) whose usage allows the direction (CKA_ENCRYPT
    /// for wrap, CKA_DECRYPT for unwrap) is given the attribute once; a
    /// token that will not change it leaves the key unable to wrap.
    fn with_wrapping_key<R>(
        &self,
        label: &str,
        direction: Direction,
        f: impl Fn(&Session, ObjectHandle) -> std::result::Result<R, CkError>,
    ) -> std::result::Result<R, SessionFailure> {
        if self.is_reserved(label) {
            return Err(SessionFailure::Pool(Error::KeyUsage(format!(
                "{label:?} is one of Keyhold's own keys in the HSM"
            ))));
        }
        match self.with_key(label, &f) {
            Err(SessionFailure::Ck(CkError::Pkcs11(RvError::KeyFunctionNotPermitted, _))) => {}
            r => return r,
        }
        let (attribute, allowed_by, what) = match direction {
            Direction::Wrap => (Attribute::Wrap(true), AttributeType::Encrypt, "encrypt"),
            Direction::Unwrap => (Attribute::Unwrap(true), AttributeType::Decrypt, "decrypt"),
        };
        let allowed = self.with_key(label, |s, h| {
            Ok(s.get_attributes(h, &[allowed_by])?
                .into_iter()
                .any(|a| matches!(a, Attribute::Encrypt(true) | Attribute::Decrypt(true))))
        })?;
        let refused = || {
            SessionFailure::Pool(Error::KeyUsage(format!(
                "the HSM key {label:?} may not {what} in the token, so it does not AES key {}",
                direction.name()
            )))
        };
        if !allowed {
            return Err(refused());
        }
        match self.with_key(label, |s, h| {
            s.update_attributes(h, std::slice::from_ref(&attribute))
        }) {
            Ok(()) => {
                tracing::info!(label, token = %self.name(), "allowed an HSM key made before AES key wrap to {}", direction.name())
            }
            Err(e) if refused_change(&e) => return Err(refused()),
            Err(e) => return Err(e),
        }
        self.with_key(label, f)
    }

    /// Wraps under the KEK: format byte, IV, AES-GCM output (context as AAD).
    pub(crate) fn wrap(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut iv = [0u8; GCM_IV_LEN];
        fill_random(&mut iv).map_err(|e| Error::Internal(e.to_string()))?;
        let sealed = self
            .with_key(&self.cfg.kek_label, |s, kek| {
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, context, 128.into())?;
                s.encrypt(&Mechanism::AesGcm(params), kek, plaintext)
            })
            .map_err(|e| ck("wrap in the HSM", e))?;
        let mut out = Vec::with_capacity(1 + GCM_IV_LEN + sealed.len());
        out.push(WRAP_FORMAT_PKCS11_GCM);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub(crate) fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<SecretBytes> {
        let rest = match wrapped.split_first() {
            Some((&WRAP_FORMAT_PKCS11_GCM, rest)) if rest.len() >= GCM_IV_LEN + 16 => rest,
            _ => return Err(Error::RootOfTrust("not wrapped by a PKCS#11 root".into())),
        };
        let (iv, sealed) = rest.split_at(GCM_IV_LEN);
        let plain = self
            .with_key(&self.cfg.kek_label, |s, kek| {
                gcm_decrypt(s, kek, iv, context, sealed)
            })
            .map_err(|e| ck("unwrap in the HSM", e))?;
        plain.map(SecretBytes::new).ok_or(Error::UnwrapFailed)
    }

    /// The deep health check of this token: an AES-GCM round trip inside
    /// it, on its own health key (generated on first use; never a customer
    /// key and never the KEK).
    pub(crate) fn probe(&self) -> Result<()> {
        let label = format!("{}-health", self.cfg.kek_label);
        let _one = self.probing.lock();
        if let Err(e) = self.check_key(&label) {
            if !self.answers() {
                return Err(e);
            }
            self.generate_key(&label, Usage::BOTH)?;
        }
        let mut probe = [0u8; 32];
        fill_random(&mut probe).map_err(|e| Error::Internal(e.to_string()))?;
        let (iv, ct, tag) = self.encrypt(&label, b"keyhold health", &probe)?;
        let back = self.decrypt(&label, &iv, b"keyhold health", &ct, &tag)?;
        if !ct_eq(back.expose(), &probe) {
            return Err(Error::RootOfTrust(
                "the HSM health round trip gave back other bytes".into(),
            ));
        }
        Ok(())
    }
}
