//! Who may use the admin API: named bearer tokens, each with one role.
//!
//! A token is `khadm_<id>_<secret>`. Storage keeps, per id, the name, the
//! role, the expiry and the SHA-256 of the 256-bit secret (never the
//! secret): a copy of the database does not give a usable token, and the
//! check compares digests in constant time. Whoever holds the root of trust
//! on the host (the local CLI) makes the first tokens; custodians can make
//! more through the API.

use crate::KeyService;
use base64::Engine as _;
use keyhold_core::{Error, Result};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub(crate) const TOKEN_META_PREFIX: &str = "admin-token:";
const TOKEN_PREFIX: &str = "khadm_";
/// Hex digits of a token id.
const ID_LEN: usize = 16;

/// What an admin identity may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Status and metrics only.
    Operator,
    /// Reads the audit log and metadata (stores, keys, policies); changes nothing.
    Auditor,
    /// Lifecycle, policies, credentials, break glass, tokens.
    Custodian,
}

impl Role {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            "custodian" => Ok(Role::Custodian),
            other => Err(Error::invalid(
                "role",
                format!("{other:?}: use custodian, auditor or operator"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Custodian => "custodian",
        }
    }
}

/// A token as stored (without its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
    /// None: does not expire.
    pub expires_ms: Option<i64>,
    /// Hex SHA-256 of the secret part.
    digest: String,
}

/// The authenticated caller of an admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminIdentity {
    pub name: String,
    pub role: Role,
    pub token_id: String,
}

impl AdminIdentity {
    /// How audit records name this caller.
    pub fn actor(&self) -> String {
        format!(
            "token {} ({}, {})",
            self.name,
            self.role.as_str(),
            self.token_id
        )
    }
}

fn now_ms() -> i64 {
    keyhold_core::now() * 1000
}

fn valid_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(Error::invalid(
            "token name",
            "1 to 64 characters: letters, digits, - _ . @",
        ));
    }
    Ok(())
}

impl KeyService {
    /// Makes a token; the returned secret is shown once and kept nowhere.
    pub fn create_admin_token(
        &self,
        name: &str,
        role: Role,
        expires_ms: Option<i64>,
    ) -> Result<(AdminToken, SecretString)> {
        valid_name(name)?;
        if self.admin_tokens()?.iter().any(|t| t.name == name) {
            return Err(Error::invalid(
                "token name",
                format!("an admin token named {name} exists"),
            ));
        }
        let mut id = [0u8; ID_LEN / 2];
        keyhold_crypto::fill_random(&mut id).map_err(|e| Error::Internal(e.to_string()))?;
        let id = hex::encode(id);
        let secret =
            keyhold_crypto::random_secret(32).map_err(|e| Error::Internal(e.to_string()))?;
        let token = AdminToken {
            id: id.clone(),
            name: name.to_owned(),
            role,
            created_ms: now_ms(),
            expires_ms,
            digest: hex::encode(keyhold_crypto::sha256(&[secret.expose()])),
        };
        let body = serde_json::to_vec(&token).map_err(|e| Error::Internal(e.to_string()))?;
        let stored = self
            .storage()
            .put_meta_if_absent(&format!("{TOKEN_META_PREFIX}{id}"), &body)?;
        if stored != body {
            return Err(Error::Internal("token id collision; try again".into()));
        }
        let text = format!(
            "{TOKEN_PREFIX}{id}_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.expose())
        );
        Ok((token, SecretString::from(text)))
    }

    /// Every token, by name.
    pub fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        let mut v: Vec<AdminToken> = self
            .storage()
            .list_meta(TOKEN_META_PREFIX)?
            .into_iter()
            .filter_map(|(_, body)| serde_json::from_slice(&body).ok())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Revokes the token named `name` (or with that id); it stops working
    /// for the next request on every node.
    pub fn revoke_admin_token(&self, name: &str) -> Result<AdminToken> {
        let t = self
            .admin_tokens()?
            .into_iter()
            .find(|t| t.name == name || t.id == name)
            .ok_or_else(|| Error::invalid("token", format!("no admin token named {name}")))?;
        self.storage()
            .set_meta(&format!("{TOKEN_META_PREFIX}{}", t.id), None)?;
        Ok(t)
    }

    /// Checks a bearer token: `None` for every kind of refusal alike (a
    /// caller learns nothing about which part was wrong); `Err` only when
    /// storage cannot answer.
    pub fn authenticate_admin(&self, presented: &str) -> Result<Option<AdminIdentity>> {
        let Some((id, secret)) = presented
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
        else {
            return Ok(None);
        };
        if id.len() != ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Ok(secret) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(secret) else {
            return Ok(None);
        };
        let secret = zeroize::Zeroizing::new(secret);
        let Some(body) = self
            .storage()
            .get_meta(&format!("{TOKEN_META_PREFIX}{id}"))?
        else {
            return Ok(None);
        };
        let Ok(t) = serde_json::from_slice::<AdminToken>(&body) else {
            return Ok(None);
        };
        let expected = hex::decode(&t.digest).unwrap_or_default();
        let got = keyhold_crypto::sha256(&[&secret]);
        if !keyhold_crypto::ct_eq(&got, &expected) || t.expires_ms.is_some_and(|e| e <= now_ms()) {
            return Ok(None);
        }
        Ok(Some(AdminIdentity {
            name: t.name,
            role: t.role,
            token_id: t.id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn service() -> (tempfile::TempDir, KeyService) {
        let dir = tempfile::tempdir().unwrap();
        let root =
            keyhold_keystore::SoftwareRoot::create(&dir.path().join("root.key"), None).unwrap();
        let st = keyhold_storage::SqliteStorage::open(&dir.path().join("k.db")).unwrap();
        let s = KeyService::open(std::sync::Arc::new(st), std::sync::Arc::new(root)).unwrap();
        (dir, s)
    }

    #[test]
    fn tokens_authenticate_until_revoked_or_expired() {
        let (_d, s) = service();
        let (t, secret) = s
            .create_admin_token("alice", Role::Custodian, None)
            .unwrap();
        let who = s
            .authenticate_admin(secret.expose_secret())
            .unwrap()
            .unwrap();
        assert_eq!(who.name, "alice");
        assert_eq!(who.role, Role::Custodian);
        assert_eq!(who.token_id, t.id);
        // The secret is not stored, only its digest.
        let stored = s.storage().list_meta(TOKEN_META_PREFIX).unwrap();
        let secret_part = secret
            .expose_secret()
            .rsplit('_')
            .next()
            .unwrap()
            .to_owned();
        assert!(!String::from_utf8_lossy(&stored[0].1).contains(&secret_part));

        assert!(s.create_admin_token("alice", Role::Auditor, None).is_err());
        let (_, old) = s
            .create_admin_token("bob", Role::Auditor, Some(now_ms() - 1))
            .unwrap();
        assert_eq!(s.authenticate_admin(old.expose_secret()).unwrap(), None);

        // A changed secret, a changed id, garbage: all refused alike.
        let good = secret.expose_secret().to_owned();
        let mut bad = good.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        for wrong in [
            bad.as_str(),
            "khadm_0000000000000000_AAAA",
            "khadm_",
            "",
            "Bearer x",
            "khadm_zzzzzzzzzzzzzzzz_AAAA",
        ] {
            assert_eq!(s.authenticate_admin(wrong).unwrap(), None, "{wrong}");
        }
        let names: Vec<_> = s
            .admin_tokens()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        s.revoke_admin_token("alice").unwrap();
        assert_eq!(s.authenticate_admin(&good).unwrap(), None);
        assert!(s.revoke_admin_token("alice").is_err());
        assert!(s
            .create_admin_token("bad name", Role::Operator, None)
            .is_err());
        assert!(Role::parse("root").is_err());
    }
}
