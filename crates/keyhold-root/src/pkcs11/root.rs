//! [`Pkcs11Root`]: the root of trust in one or more PKCS#11 tokens holding
//! the same key-encryption key. Requests go to the first token that works;
//! a token that fails is marked down, skipped, and tried again once a
//! second (by a request or by the health check) until it answers again.

use super::config::Pkcs11Config;
use super::token::{may_be_device, Pkcs11Token};
use crate::{EkmHealth, HsmKeys, RootInfo, RootOfTrust};
use keyhold_core::{Error, Result};
use keyhold_crypto::asym::{Hash, PairKind, SignScheme};
use keyhold_crypto::SecretBytes;
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// A token marked down is tried again after this long.
const RETRY_DOWN_AFTER: Duration = Duration::from_secs(1);

/// What `keyhold hsm status` shows about one token.
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
    /// Why the token is marked down, if it is.
    pub down: Option<String>,
}

struct Down {
    last_try: Instant,
    error: String,
}

struct Member {
    token: Pkcs11Token,
    down: Mutex<Option<Down>>,
}

impl Member {
    /// Whether a request may use this token now: it is up, or it has been
    /// down long enough to be tried again (this caller becomes the one try).
    fn due(&self) -> bool {
        let mut down = self.down.lock();
        match down.as_mut() {
            None => true,
            Some(d) if d.last_try.elapsed() >= RETRY_DOWN_AFTER => {
                d.last_try = Instant::now();
                true
            }
            Some(_) => false,
        }
    }

    fn mark_up(&self) {
        if self.down.lock().take().is_some() {
            tracing::warn!(token = %self.token.name(), "HSM token is back in service");
        }
    }

    fn mark_down(&self, e: &Error) {
        let mut down = self.down.lock();
        if down.is_none() {
            tracing::error!(token = %self.token.name(), error = %e, "HSM token is down; using the others");
        }
        *down = Some(Down {
            last_try: Instant::now(),
            error: e.to_string(),
        });
    }

    fn is_down(&self) -> bool {
        self.down.lock().is_some()
    }
}

/// Errors that are the request's answer, whichever token gave them.
fn is_final(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidCiphertext | Error::UnwrapFailed | Error::Invalid { .. }
    )
}

/// A root of trust whose KEK is a non-extractable AES-256 key in a PKCS#11
/// token, with optional failover tokens holding the same KEK.
pub struct Pkcs11Root {
    members: Vec<Member>,
    kek_label: String,
    /// The settings it was opened with (for [`RootOfTrust::with_kek`]).
    cfg: Pkcs11Config,
}

impl std::fmt::Debug for Pkcs11Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Root")
            .field("tokens", &self.members.len())
            .field("kek_label", &self.kek_label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Root {
    /// Opens the tokens named in `cfg`. The main token must work (and with
    /// `create_kek`, its KEK is generated when absent: `keyhold hsm init`);
    /// failover tokens that do not answer yet are marked down and retried.
    /// Every module must load.
    pub fn open(cfg: Pkcs11Config, create_kek: bool) -> Result<Self> {
        cfg.validate()?;
        let configs = cfg.tokens();
        if create_kek && configs.len() > 1 {
            // A KEK generated in one token cannot be copied to the others
            // (it is never extractable): clustering is the HSM vendor's job.
            for c in &configs {
                let t = Pkcs11Token::new(c.clone())?;
                t.connect(false).map_err(|e| {
                    Error::RootOfTrust(format!(
                        "{e}; with failover tokens, provision the same KEK in every token with the HSM's own cloning tools first"
                    ))
                })?;
            }
        }
        let mut members = Vec::with_capacity(configs.len());
        for (i, c) in configs.into_iter().enumerate() {
            let token = Pkcs11Token::new(c)?;
            let down = match token.connect(create_kek && i == 0) {
                Ok(()) => None,
                Err(e) if i == 0 => return Err(e),
                Err(e) => {
                    tracing::error!(token = %token.name(), error = %e, "failover HSM token is not usable yet");
                    Some(Down {
                        last_try: Instant::now(),
                        error: e.to_string(),
                    })
                }
            };
            members.push(Member {
                token,
                down: Mutex::new(down),
            });
        }
        Ok(Self {
            members,
            kek_label: cfg.kek_label.clone(),
            cfg,
        })
    }

    /// The KEK's label.
    pub fn kek_label(&self) -> &str {
        &self.kek_label
    }

    /// Destroys a retired KEK (see [`Pkcs11Config::retired_kek_labels`]) in
    /// every token: (token, outcome) for each.
    pub fn destroy_retired_kek(&self, label: &str) -> Vec<(String, Result<()>)> {
        self.members
            .iter()
            .map(|m| (m.token.name(), m.token.destroy_retired_kek(label)))
            .collect()
    }

    /// Runs `op` on the first token that can serve it.
    fn run<R>(&self, op: impl Fn(&Pkcs11Token) -> Result<R>) -> Result<R> {
        let mut first_error = None;
        for m in &self.members {
            if !m.due() {
                continue;
            }
            match m.token.recovering(|| op(&m.token)) {
                Ok(r) => {
                    m.mark_up();
                    return Ok(r);
                }
                Err((e, _)) if is_final(&e) => {
                    m.mark_up();
                    return Err(e);
                }
                Err((e, down)) => {
                    if down {
                        m.mark_down(&e);
                    } else if !may_be_device(&e) {
                        m.mark_up();
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| {
            let why = self
                .members
                .first()
                .and_then(|m| m.down.lock().as_ref().map(|d| d.error.clone()))
                .unwrap_or_default();
            Error::RootOfTrust(format!("no HSM token is available ({why})"))
        }))
    }

    pub fn status(&self) -> Vec<HsmStatus> {
        self.members
            .iter()
            .map(|m| {
                let s = m.token.summary();
                HsmStatus {
                    module: m.token.cfg.module.display().to_string(),
                    token_label: s.label,
                    token_serial: s.serial,
                    manufacturer: s.manufacturer,
                    model: s.model,
                    kek_label: self.kek_label.clone(),
                    open_sessions: m.token.open_sessions(),
                    max_sessions: m.token.max_sessions(),
                    down: m.down.lock().as_ref().map(|d| d.error.clone()),
                }
            })
            .collect()
    }

    /// Labels of the secret keys in the first token that answers.
    pub fn list_secret_keys(&self) -> Result<Vec<String>> {
        self.run(|t| t.list_secret_keys())
    }

    /// Labels of the key pairs (their private keys) in the first token
    /// that answers.
    pub fn list_key_pairs(&self) -> Result<Vec<String>> {
        self.run(|t| t.list_key_pairs())
    }

    /// Checks every token now (a round trip on its health key), marking
    /// each up or down; tokens that fail get one re-initialisation.
    pub fn probe_all(&self) -> Vec<(String, Result<()>)> {
        self.members
            .iter()
            .map(|m| {
                let r = m.token.recovering(|| m.token.probe());
                match &r {
                    Ok(()) => m.mark_up(),
                    Err((e, _)) => m.mark_down(e),
                }
                (m.token.name(), r.map_err(|(e, _)| e))
            })
            .collect()
    }
}

impl HsmKeys for Pkcs11Root {
    /// Generates the key in the first token that works. With failover
    /// tokens, the HSM's own replication must copy it to the others.
    fn generate_key(&self, label: &str, usage: keyhold_core::Usage) -> Result<()> {
        self.run(|t| t.generate_key(label, usage))
    }

    /// In every token (a failover token that is down makes this fail:
    /// re-run once it is back); `false` if any refused the change.
    fn set_usage(&self, label: &str, usage: keyhold_core::Usage) -> Result<bool> {
        let mut all = true;
        for m in &self.members {
            all &= m
                .token
                .recovering(|| m.token.set_usage(label, usage))
                .map_err(|(e, _)| {
                    Error::RootOfTrust(format!(
                        "could not set the usage of {label:?} in HSM token {:?}: {e}",
                        m.token.name()
                    ))
                })?;
        }
        Ok(all)
    }

    /// Destroys the key in every token: a failover token that is down
    /// makes this fail (re-run once it is back).
    fn destroy_key(&self, label: &str) -> Result<()> {
        for m in &self.members {
            m.token
                .recovering(|| m.token.destroy_key(label))
                .map_err(|(e, _)| {
                    Error::RootOfTrust(format!(
                        "could not destroy {label:?} in HSM token {:?}: {e}",
                        m.token.name()
                    ))
                })?;
        }
        Ok(())
    }

    fn check_key(&self, label: &str) -> Result<()> {
        self.run(|t| t.check_key(label))
    }

    fn is_reserved(&self, label: &str) -> bool {
        self.members.iter().any(|m| m.token.is_reserved(label))
    }

    fn encrypt(
        &self,
        label: &str,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<([u8; 12], Vec<u8>, [u8; 16])> {
        self.run(|t| t.encrypt(label, aad, plaintext))
    }

    fn decrypt(
        &self,
        label: &str,
        iv: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> Result<SecretBytes> {
        self.run(|t| t.decrypt(label, iv, aad, ciphertext, tag))
    }

    fn key_wrap(&self, label: &str, data: &[u8], padded: bool) -> Result<Vec<u8>> {
        self.run(|t| t.key_wrap(label, data, padded))
    }

    fn key_unwrap(&self, label: &str, wrapped: &[u8], padded: bool) -> Result<SecretBytes> {
        self.run(|t| t.key_unwrap(label, wrapped, padded))
    }

    /// In the first token that works, like AES keys.
    fn generate_pair(&self, label: &str, kind: PairKind, usage: keyhold_core::Usage) -> Result<()> {
        self.run(|t| t.generate_pair(label, kind, usage))
    }

    fn pair_kind(&self, label: &str) -> Result<PairKind> {
        self.run(|t| t.pair_kind(label))
    }

    fn public_key(&self, label: &str) -> Result<Vec<u8>> {
        self.run(|t| t.public_key(label))
    }

    fn sign(&self, label: &str, scheme: SignScheme, msg: &[u8]) -> Result<Vec<u8>> {
        self.run(|t| t.sign(label, scheme, msg))
    }

    fn decrypt_oaep(
        &self,
        label: &str,
        hash: Hash,
        ciphertext: &[u8],
        oaep_label: Option<&[u8]>,
    ) -> Result<SecretBytes> {
        self.run(|t| t.decrypt_oaep(label, hash, ciphertext, oaep_label))
    }
}

impl RootOfTrust for Pkcs11Root {
    fn hsm_keys(&self) -> Option<&dyn HsmKeys> {
        Some(self)
    }

    fn blocks(&self) -> bool {
        true
    }

    fn wrap(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.run(|t| t.wrap(context, plaintext))
    }

    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<SecretBytes> {
        self.run(|t| t.unwrap(context, wrapped))
    }

    /// Every token that answers must unwrap the check value: a failover
    /// token with another KEK is refused at start.
    fn unwrap_with_each(&self, context: &[u8], wrapped: &[u8]) -> Result<SecretBytes> {
        let mut plain = None;
        for (i, m) in self.members.iter().enumerate() {
            if m.is_down() {
                continue;
            }
            match m.token.unwrap(context, wrapped) {
                Ok(p) => {
                    plain.get_or_insert(p);
                }
                Err(Error::UnwrapFailed) if i == 0 => return Err(Error::UnwrapFailed),
                Err(Error::UnwrapFailed) => {
                    return Err(Error::RootOfTrust(format!(
                    "failover HSM token {:?} holds a different key-encryption key labelled {:?}",
                    m.token.name(),
                    self.kek_label
                )))
                }
                Err(e) => m.mark_down(&e),
            }
        }
        match plain {
            Some(p) => Ok(p),
            None => self.unwrap(context, wrapped),
        }
    }

    fn info(&self) -> RootInfo {
        let s = self.members[0].token.summary();
        s.describe(&s.label)
    }

    /// The same tokens with the KEK labelled `label` (which must exist in
    /// the main token).
    fn with_kek(&self, label: &str) -> Result<std::sync::Arc<dyn RootOfTrust>> {
        let mut cfg = self.cfg.clone();
        cfg.kek_label = label.to_owned();
        Ok(std::sync::Arc::new(Pkcs11Root::open(cfg, false)?))
    }

    /// One entry per token: ACTIVE when its health round trip works,
    /// UNAVAILABLE when it does not.
    fn ekm_health(&self) -> Vec<EkmHealth> {
        self.probe_all()
            .into_iter()
            .zip(&self.members)
            .map(|((name, r), m)| {
                let RootInfo { id, model } = m.token.summary().describe(&name);
                EkmHealth {
                    id,
                    model,
                    error: r.err().map(|e| e.to_string()),
                }
            })
            .collect()
    }
}
