//! Validated names: key store path prefixes, external key ids and SigV4
//! access key ids, each following the XKS specification's alphabet and
//! length rules.

use crate::error::{Error, Result};

/// The fixed API root that follows a key store's path prefix.
pub const XKS_API_ROOT: &str = "/kms/xks/v1";
/// Maximum length of `XksProxyUriPath` (prefix + `/kms/xks/v1`).
pub const MAX_URI_PATH_LEN: usize = 128;
/// Maximum length of an external key id.
pub const MAX_KEY_ID_LEN: usize = 128;

/// A key store's path prefix: empty (no prefix) or `/seg[/seg…]` of
/// `[A-Za-z0-9_-]`, so that `prefix + "/kms/xks/v1"` is a valid
/// `XksProxyUriPath` of at most 128 characters.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct StorePrefix(String);

impl StorePrefix {
    /// Parses a prefix as an operator types it: `/tenant-a`, `tenant-a` and
    /// `/eu/tenant-a` are accepted; `/` or the empty string mean "no prefix".
    pub fn parse(s: &str) -> Result<Self> {
        let trimmed = s.trim_end_matches('/');
        let body = trimmed.strip_prefix('/').unwrap_or(trimmed);
        if body.is_empty() {
            return Ok(Self(String::new()));
        }
        let full = format!("/{body}");
        if full.len() + XKS_API_ROOT.len() > MAX_URI_PATH_LEN {
            return Err(Error::invalid(
                "path prefix",
                format!("prefix plus {XKS_API_ROOT} must be at most {MAX_URI_PATH_LEN} characters"),
            ));
        }
        for seg in body.split('/') {
            if seg.is_empty() {
                return Err(Error::invalid("path prefix", "empty path segment"));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(Error::invalid(
                    "path prefix",
                    "only A-Z, a-z, 0-9, '-', '_' and '/' are allowed",
                ));
            }
            if matches!(seg, "kms") {
                return Err(Error::invalid("path prefix", "a segment may not be 'kms'"));
            }
        }
        Ok(Self(full))
    }

    /// The prefix as it appears in URIs: `""` or `/tenant-a`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How the prefix is shown to operators: `/` for no prefix.
    pub fn display(&self) -> &str {
        if self.0.is_empty() {
            "/"
        } else {
            &self.0
        }
    }

    /// The `XksProxyUriPath` that AWS KMS is configured with.
    pub fn uri_path(&self) -> String {
        format!("{}{}", self.0, XKS_API_ROOT)
    }
}

impl TryFrom<String> for StorePrefix {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<StorePrefix> for String {
    fn from(p: StorePrefix) -> String {
        p.0
    }
}

impl std::fmt::Display for StorePrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.display())
    }
}

/// An external key id: 1–128 characters of `[A-Za-z0-9._-]`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > MAX_KEY_ID_LEN {
            return Err(Error::invalid(
                "key id",
                format!("must be 1 to {MAX_KEY_ID_LEN} characters"),
            ));
        }
        if !is_key_id_str(s) {
            return Err(Error::invalid(
                "key id",
                "only A-Z, a-z, 0-9, '.', '-' and '_' are allowed",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// True when `s` uses only the external key id alphabet (length unchecked).
pub fn is_key_id_str(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl TryFrom<String> for KeyId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<KeyId> for String {
    fn from(k: KeyId) -> String {
        k.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Alphabet of access key ids (RFC 4648 base32 without padding).
pub const ACCESS_KEY_ID_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Checks an access key id: 20–30 characters of `[A-Z2-7]`.
pub fn validate_access_key_id(s: &str) -> Result<()> {
    if !(20..=30).contains(&s.len()) {
        return Err(Error::invalid(
            "access key id",
            "must be 20 to 30 characters",
        ));
    }
    if !s.bytes().all(|b| ACCESS_KEY_ID_ALPHABET.contains(&b)) {
        return Err(Error::invalid(
            "access key id",
            "only A-Z and 2-7 are allowed",
        ));
    }
    Ok(())
}

/// Checks a secret access key: 43–64 characters of `[A-Za-z0-9+/=]`.
pub fn validate_secret_access_key(s: &str) -> Result<()> {
    if !(43..=64).contains(&s.len()) {
        return Err(Error::invalid(
            "secret access key",
            "must be 43 to 64 characters",
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    {
        return Err(Error::invalid(
            "secret access key",
            "only A-Z, a-z, 0-9, '+', '/' and '=' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefixes() {
        assert_eq!(StorePrefix::parse("").unwrap().as_str(), "");
        assert_eq!(StorePrefix::parse("/").unwrap().as_str(), "");
        assert_eq!(
            StorePrefix::parse("tenant-a").unwrap().as_str(),
            "/tenant-a"
        );
        assert_eq!(StorePrefix::parse("/eu/t_1/").unwrap().as_str(), "/eu/t_1");
        assert_eq!(
            StorePrefix::parse("/eu/t_1").unwrap().uri_path(),
            "/eu/t_1/kms/xks/v1"
        );
        assert!(StorePrefix::parse("/a//b").is_err());
        assert!(StorePrefix::parse("/a.b").is_err());
        assert!(StorePrefix::parse("/kms").is_err());
        let long = "a".repeat(128 - XKS_API_ROOT.len() - 1);
        assert!(StorePrefix::parse(&long).is_ok());
        assert!(StorePrefix::parse(&format!("{long}a")).is_err());
    }

    #[test]
    fn key_ids() {
        assert!(KeyId::parse("b42c7fbf-de61-441c-ae24-123456789012").is_ok());
        assert!(KeyId::parse("a.b_c-D9").is_ok());
        assert!(KeyId::parse("").is_err());
        assert!(KeyId::parse("a/b").is_err());
        assert!(KeyId::parse("a b").is_err());
        assert!(KeyId::parse(&"k".repeat(128)).is_ok());
        assert!(KeyId::parse(&"k".repeat(129)).is_err());
    }

    #[test]
    fn credential_rules() {
        assert!(validate_access_key_id("HGIE2BUAFNDMBCMSQVWLGCEXAMPLE").is_ok());
        assert!(validate_access_key_id("AKIAI2SFODNN7EXAMPLE").is_ok());
        assert!(validate_access_key_id("AKIAI2SFODNN1EXAMPLE").is_err()); // '1' not allowed
        assert!(validate_access_key_id("SHORT").is_err());
        assert!(validate_access_key_id(&"A".repeat(31)).is_err());
        assert!(validate_secret_access_key("VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT123456").is_ok());
        assert!(validate_secret_access_key("FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE").is_ok());
        assert!(validate_secret_access_key(&"a".repeat(42)).is_err());
        assert!(validate_secret_access_key(&"a".repeat(65)).is_err());
        assert!(validate_secret_access_key(&format!("{}!", "a".repeat(43))).is_err());
    }

    proptest! {
        #[test]
        fn key_id_parse_matches_alphabet(s in "\\PC{0,140}") {
            let ok = KeyId::parse(&s).is_ok();
            let expect = !s.is_empty() && s.len() <= 128 && is_key_id_str(&s);
            prop_assert_eq!(ok, expect);
        }

        #[test]
        fn prefix_parse_never_panics(s in "\\PC{0,200}") {
            if let Ok(p) = StorePrefix::parse(&s) {
                prop_assert!(p.uri_path().len() <= MAX_URI_PATH_LEN);
                prop_assert_eq!(StorePrefix::parse(p.as_str()).unwrap(), p);
            }
        }
    }
}
