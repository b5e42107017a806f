//! Records for key stores, keys, key versions and credentials.

use crate::names::{KeyId, StorePrefix};
use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch.
pub type Timestamp = i64;

/// Current time in seconds since the Unix epoch.
pub fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether a key or key store may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Enabled,
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Enabled => "ENABLED",
            Status::Disabled => "DISABLED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ENABLED" => Some(Status::Enabled),
            "DISABLED" => Some(Status::Disabled),
            _ => None,
        }
    }
}

/// A key's lifecycle state (NIST SP 800-57, as in KMIP). Separate from
/// [`Status`], which is the break-glass switch: a disabled key keeps its
/// state and comes back as it was when enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyState {
    /// Created, not usable yet (until activated, or its activation date).
    PreActive,
    /// Encrypts and decrypts.
    Active,
    /// Decrypt only: no new ciphertext.
    Deactivated,
    /// Decrypt only, and reported on every use: the key may be known to others.
    Compromised,
    /// Its material has been erased: nothing can be done with it any more.
    Destroyed,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::PreActive => "PRE_ACTIVE",
            KeyState::Active => "ACTIVE",
            KeyState::Deactivated => "DEACTIVATED",
            KeyState::Compromised => "COMPROMISED",
            KeyState::Destroyed => "DESTROYED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PRE_ACTIVE" => KeyState::PreActive,
            "ACTIVE" => KeyState::Active,
            "DEACTIVATED" => KeyState::Deactivated,
            "COMPROMISED" => KeyState::Compromised,
            "DESTROYED" => KeyState::Destroyed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a key is in its life, with the dates that move it on their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// The state as last set; [`Lifecycle::state_at`] applies the dates.
    pub state: KeyState,
    /// A pre-active key becomes active at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate_at: Option<Timestamp>,
    /// An active key becomes deactivated at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivate_at: Option<Timestamp>,
    /// Destruction is scheduled for this time (cancellable until then); the
    /// key is unusable meanwhile, like AWS KMS's PendingDeletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_at: Option<Timestamp>,
    /// When the key was (reported to be) compromised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compromised_at: Option<Timestamp>,
    /// Automatic rotation period in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_period: Option<i64>,
    /// When the next automatic rotation is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<Timestamp>,
    /// Versions below this one are retired: they no longer decrypt.
    pub min_decrypt_version: u32,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            state: KeyState::Active,
            activate_at: None,
            deactivate_at: None,
            destroy_at: None,
            compromised_at: None,
            rotation_period: None,
            next_rotation_at: None,
            min_decrypt_version: 1,
        }
    }
}

impl Lifecycle {
    /// The state at time `now`, with the activation and deactivation dates
    /// applied.
    pub fn state_at(&self, now: Timestamp) -> KeyState {
        let mut s = self.state;
        if s == KeyState::PreActive && self.activate_at.is_some_and(|t| t <= now) {
            s = KeyState::Active;
        }
        if s == KeyState::Active && self.deactivate_at.is_some_and(|t| t <= now) {
            s = KeyState::Deactivated;
        }
        s
    }

    /// Whether destruction is scheduled (and not yet carried out).
    pub fn pending_destruction(&self) -> bool {
        self.destroy_at.is_some() && self.state != KeyState::Destroyed
    }
}

/// What is known about one key version besides its material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionFlag {
    #[default]
    Good,
    /// Marked compromised: decrypt refused.
    Compromised,
    /// Marked compromised, decrypt allowed by explicit override (reported).
    CompromisedAllowed,
}

impl VersionFlag {
    pub fn to_i64(self) -> i64 {
        match self {
            VersionFlag::Good => 0,
            VersionFlag::Compromised => 1,
            VersionFlag::CompromisedAllowed => 2,
        }
    }
    pub fn from_i64(v: i64) -> Self {
        match v {
            0 => VersionFlag::Good,
            2 => VersionFlag::CompromisedAllowed,
            _ => VersionFlag::Compromised,
        }
    }
}

/// The operations a key allows: any subset of ENCRYPT, DECRYPT, SIGN and
/// VERIFY (which of them a key may have depends on its [`KeyType`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub encrypt: bool,
    pub decrypt: bool,
    pub sign: bool,
    pub verify: bool,
}

impl Usage {
    pub const BOTH: Usage = Usage {
        encrypt: true,
        decrypt: true,
        sign: false,
        verify: false,
    };

    /// SIGN and VERIFY.
    pub const SIGN_VERIFY: Usage = Usage {
        encrypt: false,
        decrypt: false,
        sign: true,
        verify: true,
    };

    /// Parses a comma-separated list such as `ENCRYPT,DECRYPT`; `NONE` or the
    /// empty string gives the empty set.
    pub fn parse(s: &str) -> crate::Result<Self> {
        let mut u = Usage::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_uppercase().as_str() {
                "ENCRYPT" => u.encrypt = true,
                "DECRYPT" => u.decrypt = true,
                "SIGN" => u.sign = true,
                "VERIFY" => u.verify = true,
                "NONE" => {}
                other => {
                    return Err(crate::Error::invalid(
                        "usage",
                        format!(
                            "unknown usage {other:?}; use ENCRYPT, DECRYPT, SIGN, VERIFY or NONE"
                        ),
                    ))
                }
            }
        }
        Ok(u)
    }

    /// The usage names (for AES keys, the XKS `keyUsage` list).
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::with_capacity(2);
        for (on, name) in [
            (self.encrypt, "ENCRYPT"),
            (self.decrypt, "DECRYPT"),
            (self.sign, "SIGN"),
            (self.verify, "VERIFY"),
        ] {
            if on {
                v.push(name);
            }
        }
        v
    }

    pub fn to_bits(self) -> i64 {
        (self.encrypt as i64)
            | ((self.decrypt as i64) << 1)
            | ((self.sign as i64) << 2)
            | ((self.verify as i64) << 3)
    }

    pub fn from_bits(b: i64) -> Self {
        Usage {
            encrypt: b & 1 != 0,
            decrypt: b & 2 != 0,
            sign: b & 4 != 0,
            verify: b & 8 != 0,
        }
    }

    /// Whether it allows encryption or decryption.
    pub fn crypts(self) -> bool {
        self.encrypt || self.decrypt
    }

    /// Whether it allows signing or verification.
    pub fn signs(self) -> bool {
        self.sign || self.verify
    }
}

/// What a key is: AES-256 (the only type the XKS API serves), or an
/// asymmetric key pair. Fixed when the key is made; every version of a key
/// (each rotation makes a new pair) is of its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyType {
    #[default]
    Aes256,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
    EcP384,
    EcP521,
    Ed25519,
}

impl KeyType {
    pub const ALL: [KeyType; 8] = [
        KeyType::Aes256,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
        KeyType::EcP256,
        KeyType::EcP384,
        KeyType::EcP521,
        KeyType::Ed25519,
    ];

    /// The key spec (the names AWS KMS uses; stored in the database).
    pub fn spec(self) -> &'static str {
        match self {
            KeyType::Aes256 => "AES_256",
            KeyType::Rsa2048 => "RSA_2048",
            KeyType::Rsa3072 => "RSA_3072",
            KeyType::Rsa4096 => "RSA_4096",
            KeyType::EcP256 => "ECC_NIST_P256",
            KeyType::EcP384 => "ECC_NIST_P384",
            KeyType::EcP521 => "ECC_NIST_P521",
            KeyType::Ed25519 => "ED25519",
        }
    }

    /// The short name the CLI takes (`--type rsa-3072`).
    pub fn short(self) -> &'static str {
        match self {
            KeyType::Aes256 => "aes-256",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::EcP521 => "ec-p521",
            KeyType::Ed25519 => "ed25519",
        }
    }

    /// Parses a short name or a key spec, in any case.
    pub fn parse(s: &str) -> crate::Result<Self> {
        let t = s.trim();
        Self::ALL
            .into_iter()
            .find(|k| t.eq_ignore_ascii_case(k.short()) || t.eq_ignore_ascii_case(k.spec()))
            .ok_or_else(|| {
                crate::Error::invalid(
                    "key type",
                    format!(
                        "unknown key type {t:?}; use one of {}",
                        Self::ALL.map(|k| k.short()).join(", ")
                    ),
                )
            })
    }

    pub fn is_asymmetric(self) -> bool {
        self != KeyType::Aes256
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }

    /// The usage a new key of this type gets when none is asked for; `None`
    /// when the type has two uses and the caller must choose (RSA).
    pub fn default_usage(self) -> Option<Usage> {
        match self {
            KeyType::Aes256 => Some(Usage::BOTH),
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => None,
            _ => Some(Usage::SIGN_VERIFY),
        }
    }

    /// Checks that a key of this type may have `usage`: AES keys encrypt
    /// and decrypt; EC and Ed25519 keys sign and verify; an RSA key does
    /// one or the other, never both (one key, one purpose: SP 800-57).
    pub fn check_usage(self, usage: Usage) -> crate::Result<()> {
        let why = match self {
            KeyType::Aes256 if usage.signs() => {
                "an AES-256 key encrypts and decrypts: SIGN and VERIFY need an asymmetric key"
            }
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096
                if usage.crypts() && usage.signs() =>
            {
                "an RSA key either encrypts and decrypts or signs and verifies, not both: make one key per purpose"
            }
            KeyType::EcP256 | KeyType::EcP384 | KeyType::EcP521 | KeyType::Ed25519
                if usage.crypts() =>
            {
                "EC and Ed25519 keys sign and verify: ENCRYPT and DECRYPT need an AES or RSA key"
            }
            _ => return Ok(()),
        };
        Err(crate::Error::invalid(
            "usage",
            format!("{why} (key type {}, usage {usage})", self.short()),
        ))
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short())
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.names();
        if n.is_empty() {
            f.write_str("NONE")
        } else {
            f.write_str(&n.join(","))
        }
    }
}

/// One tenant: an XKS path prefix with its own credentials and keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStore {
    pub prefix: StorePrefix,
    pub status: Status,
    pub description: String,
    pub created_at: Timestamp,
}

/// A key's metadata. Its material lives in [`WrappedKeyVersion`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub store: StorePrefix,
    pub id: KeyId,
    pub status: Status,
    #[serde(with = "usage_serde")]
    pub usage: Usage,
    /// The newest version; encrypt always uses it.
    pub current_version: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Where the key material lives: `None` = wrapped under the root of trust
    /// and used in software; `Some(label)` = resident in the HSM under that
    /// PKCS#11 label, never leaving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm_label: Option<String>,
    #[serde(flatten)]
    pub lifecycle: Lifecycle,
    /// AES-256 or an asymmetric type; fixed at creation.
    #[serde(default, with = "key_type_serde")]
    pub key_type: KeyType,
}

/// One version of a key's material, wrapped under the root of trust.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKeyVersion {
    pub version: u32,
    pub wrapped: Vec<u8>,
    pub created_at: Timestamp,
    pub flag: VersionFlag,
}

impl std::fmt::Debug for WrappedKeyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKeyVersion")
            .field("version", &self.version)
            .field("wrapped_len", &self.wrapped.len())
            .field("created_at", &self.created_at)
            .field("flag", &self.flag)
            .finish()
    }
}

/// A SigV4 credential of a key store. The secret is stored wrapped.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    pub access_key_id: String,
    pub store: StorePrefix,
    pub wrapped_secret: Vec<u8>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("access_key_id", &self.access_key_id)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A signed statement about an audit chain (see keyhold-audit): it had
/// `seq` records, the last with MAC `head`, at `ts_ms`. `kind` is
/// `checkpoint`, or `retention` when records up to `seq` were removed on
/// purpose. Kept in the key database, away from the log files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    pub chain: String,
    pub kind: String,
    pub seq: u64,
    pub head: String,
    pub ts_ms: i64,
    pub mac: String,
}

/// Something stored wrapped under the root of trust: what a re-wrap (a
/// change of root of trust) must visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrappedItem {
    KeyVersion {
        store: StorePrefix,
        id: KeyId,
        version: u32,
    },
    Credential {
        store: StorePrefix,
        access_key_id: String,
    },
    /// A wrapped value in the meta table (root check value, health test key).
    Meta { name: String },
    /// The material of a managed object (KMIP).
    Object { uid: String },
}

mod usage_serde {
    use super::Usage;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(u: &Usage, s: S) -> Result<S::Ok, S::Error> {
        u.names().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Usage, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        Usage::parse(&v.join(",")).map_err(serde::de::Error::custom)
    }
}

mod key_type_serde {
    use super::KeyType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &KeyType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.spec())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KeyType, D::Error> {
        KeyType::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_parse_and_bits() {
        assert_eq!(Usage::parse("ENCRYPT,DECRYPT").unwrap(), Usage::BOTH);
        assert_eq!(Usage::parse("encrypt").unwrap().names(), vec!["ENCRYPT"]);
        assert_eq!(Usage::parse("NONE").unwrap(), Usage::default());
        assert!(Usage::parse("SIGN,VERIFY").unwrap().signs());
        assert!(Usage::parse("WRAP").is_err());
        for b in 0..16 {
            assert_eq!(Usage::from_bits(b).to_bits(), b);
        }
        assert_eq!(Usage::default().to_string(), "NONE");
    }

    #[test]
    fn key_types_parse_and_limit_their_usage() {
        for t in KeyType::ALL {
            assert_eq!(KeyType::parse(t.short()).unwrap(), t);
            assert_eq!(KeyType::parse(t.spec()).unwrap(), t);
            if let Some(u) = t.default_usage() {
                t.check_usage(u).unwrap();
            }
        }
        assert_eq!(KeyType::parse("RSA-3072").unwrap(), KeyType::Rsa3072);
        assert!(KeyType::parse("rsa-1024").is_err());
        assert!(KeyType::Aes256.check_usage(Usage::SIGN_VERIFY).is_err());
        assert!(KeyType::EcP256.check_usage(Usage::BOTH).is_err());
        KeyType::Rsa2048.check_usage(Usage::BOTH).unwrap();
        KeyType::Rsa2048.check_usage(Usage::SIGN_VERIFY).unwrap();
        let both = Usage::parse("ENCRYPT,SIGN").unwrap();
        assert!(KeyType::Rsa2048.check_usage(both).is_err());
        assert_eq!(KeyType::Rsa2048.default_usage(), None);
    }

    #[test]
    fn dates_move_the_state_on_their_own() {
        let mut l = Lifecycle {
            state: KeyState::PreActive,
            activate_at: Some(100),
            deactivate_at: Some(200),
            ..Lifecycle::default()
        };
        assert_eq!(l.state_at(99), KeyState::PreActive);
        assert_eq!(l.state_at(100), KeyState::Active);
        assert_eq!(l.state_at(200), KeyState::Deactivated);
        l.state = KeyState::Compromised;
        assert_eq!(l.state_at(150), KeyState::Compromised);
        l.state = KeyState::PreActive;
        l.activate_at = None;
        assert_eq!(l.state_at(1_000), KeyState::PreActive);
        for s in [
            "PRE_ACTIVE",
            "ACTIVE",
            "DEACTIVATED",
            "COMPROMISED",
            "DESTROYED",
        ] {
            assert_eq!(KeyState::parse(s).unwrap().as_str(), s);
        }
        for f in [
            VersionFlag::Good,
            VersionFlag::Compromised,
            VersionFlag::CompromisedAllowed,
        ] {
            assert_eq!(VersionFlag::from_i64(f.to_i64()), f);
        }
    }
}
