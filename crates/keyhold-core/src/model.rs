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

/// The operations a key allows: any subset of ENCRYPT and DECRYPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub encrypt: bool,
    pub decrypt: bool,
}

impl Usage {
    pub const BOTH: Usage = Usage {
        encrypt: true,
        decrypt: true,
    };

    /// Parses a comma-separated list such as `ENCRYPT,DECRYPT`; `NONE` or the
    /// empty string gives the empty set.
    pub fn parse(s: &str) -> crate::Result<Self> {
        let mut u = Usage::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_uppercase().as_str() {
                "ENCRYPT" => u.encrypt = true,
                "DECRYPT" => u.decrypt = true,
                "NONE" => {}
                other => {
                    return Err(crate::Error::invalid(
                        "usage",
                        format!("unknown usage {other:?}; use ENCRYPT, DECRYPT or NONE"),
                    ))
                }
            }
        }
        Ok(u)
    }

    /// The XKS `keyUsage` list.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::with_capacity(2);
        if self.encrypt {
            v.push("ENCRYPT");
        }
        if self.decrypt {
            v.push("DECRYPT");
        }
        v
    }

    pub fn to_bits(self) -> i64 {
        (self.encrypt as i64) | ((self.decrypt as i64) << 1)
    }

    pub fn from_bits(b: i64) -> Self {
        Usage {
            encrypt: b & 1 != 0,
            decrypt: b & 2 != 0,
        }
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
}

/// One version of a key's material, wrapped under the root of trust.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKeyVersion {
    pub version: u32,
    pub wrapped: Vec<u8>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for WrappedKeyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKeyVersion")
            .field("version", &self.version)
            .field("wrapped_len", &self.wrapped.len())
            .field("created_at", &self.created_at)
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
}

mod usage_serde {
    use super::Usage;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(u: &Usage, s: S) -> Result<S::Ok, S::Error> {
        u.names().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Usage, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        Usage::parse(&v.join(",")).map_err(serde::de::Error::custom)
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
        assert!(Usage::parse("SIGN").is_err());
        for b in 0..4 {
            assert_eq!(Usage::from_bits(b).to_bits(), b);
        }
        assert_eq!(Usage::default().to_string(), "NONE");
    }
}
