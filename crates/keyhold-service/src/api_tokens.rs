//! Who may use the admin API: named bearer tokens, each with one role.
//!
//! A token is `khadm_<id>_<secret>`. Storage keeps, per id, the name, the
//! role, the expiry and a keyed MAC of the 256-bit secret (never the
//! secret), and the whole row is sealed by a second MAC; both keys derive
//! from the audit key, which only the root of trust unwraps. A copy of the
//! database gives no usable token, and write access to it cannot make one
//! (a row inserted or edited outside Keyhold is refused and reported).
//! Checks compare in constant time. Whoever holds the root of trust on the
//! host (the local CLI) makes the first tokens; custodians can make more
//! through the API.

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

/// What an admin operation needs of its caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Status: every role.
    Status,
    /// Read metadata (stores, keys, policies, tokens): auditor, custodian.
    Read,
    /// Read the audit log: auditor.
    Audit,
    /// Change anything: custodian.
    Change,
}

impl Access {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Status => true,
            Access::Read => matches!(role, Role::Auditor | Role::Custodian),
            Access::Audit => role == Role::Auditor,
            Access::Change => role == Role::Custodian,
        }
    }

    /// The refusal of `what` (the operation, as the CLI spells it) to `who`.
    pub fn denied(self, what: &str, who: &AdminIdentity) -> String {
        format!(
            "access denied: `{what}` needs {}; token {:?} has the {} role",
            self.describe(),
            who.name,
            who.role.as_str()
        )
    }

    /// Who may, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Access::Status => "any role",
            Access::Read => "the auditor or custodian role",
            Access::Audit => "the auditor role",
            Access::Change => "the custodian role",
        }
    }
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
    /// Hex keyed MAC of the id and the secret part.
    digest: String,
    /// Hex MAC over every field above: the row as Keyhold wrote it.
    #[serde(default)]
    seal: String,
}

impl AdminToken {
    /// The MAC sealing the row's fields.
    fn row_mac(&self, key: &keyhold_crypto::HmacKey) -> [u8; 32] {
        let created = self.created_ms.to_string();
        let expires = self
            .expires_ms
            .map_or_else(|| "-".to_owned(), |e| e.to_string());
        key.sign_parts(&[
            b"keyhold admin token row v2\0",
            self.id.as_bytes(),
            b"\0",
            self.name.as_bytes(),
            b"\0",
            self.role.as_str().as_bytes(),
            b"\0",
            created.as_bytes(),
            b"\0",
            expires.as_bytes(),
            b"\0",
            self.digest.as_bytes(),
        ])
    }

    /// Whether the row is as Keyhold wrote it (tokens from before sealed
    /// rows are not: re-issue them).
    fn is_genuine(&self, key: &keyhold_crypto::HmacKey) -> bool {
        hex::decode(&self.seal).is_ok_and(|m| keyhold_crypto::ct_eq(&m, &self.row_mac(key)))
    }
}

/// The keyed MAC of a token's secret, bound to its id.
fn secret_mac(key: &keyhold_crypto::HmacKey, id: &str, secret: &[u8]) -> [u8; 32] {
    key.sign_parts(&[
        b"keyhold admin token secret v2\0",
        id.as_bytes(),
        b"\0",
        secret,
    ])
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
        let key = self.token_key()?;
        let mut token = AdminToken {
            id: id.clone(),
            name: name.to_owned(),
            role,
            created_ms: now_ms(),
            expires_ms,
            digest: hex::encode(secret_mac(&key, &id, secret.expose())),
            seal: String::new(),
        };
        token.seal = hex::encode(token.row_mac(&key));
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

    /// The key of token MACs: derived from the audit key (unwrapped by
    /// the root of trust), never stored.
    fn token_key(&self) -> Result<keyhold_crypto::HmacKey> {
        let k = self.audit_key()?.sign(b"keyhold admin token key v2");
        Ok(keyhold_crypto::HmacKey::new(&k))
    }

    /// Whether a stored token is as Keyhold wrote it; a row written or
    /// changed by anything else (or from before sealed rows) is not.
    pub fn admin_token_is_genuine(&self, t: &AdminToken) -> Result<bool> {
        Ok(t.is_genuine(&self.token_key()?))
    }

    /// Every token, by name.
    /// Whether the token with this id still exists (not revoked) and has
    /// not expired: what a session made with it needs on every request.
    pub fn admin_token_in_force(&self, token_id: &str) -> Result<bool> {
        let now_ms = self.now() * 1000;
        Ok(self
            .admin_tokens()?
            .iter()
            .any(|t| t.id == token_id && t.expires_ms.is_none_or(|e| e > now_ms)))
    }

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
        let key = self.token_key()?;
        if !t.is_genuine(&key) || t.id != id {
            // Written or changed outside Keyhold (or from before sealed
            // rows): never obeyed, and said loudly.
            self.row_key
                .report(&format!("admin token {} ({id})", t.name));
            return Ok(None);
        }
        let expected = hex::decode(&t.digest).unwrap_or_default();
        let got = secret_mac(&key, id, &secret);
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
        let root = keyhold_root::SoftwareRoot::create(&dir.path().join("root.key"), None).unwrap();
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
        // (The secret's base64 may itself hold '_': split after the id.)
        let secret_part = secret
            .expose_secret()
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|r| r.split_once('_'))
            .unwrap()
            .1
            .to_owned();
        assert!(secret_part.len() >= 43);
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

    /// Write access to the database alone cannot make a token: a row
    /// inserted with a chosen secret's SHA-256 (the old format), or a real
    /// row whose role was raised, is refused and counted.
    #[test]
    fn token_rows_written_outside_keyhold_are_refused() {
        let (_d, s) = service();
        let (t, secret) = s.create_admin_token("ann", Role::Auditor, None).unwrap();
        let forged_secret = [7u8; 32];
        let forged_id = "00112233445566ff";
        let forged = serde_json::json!({
            "id": forged_id, "name": "mallory", "role": "custodian", "created_ms": 1,
            "expires_ms": null, "digest": hex::encode(keyhold_crypto::sha256(&[&forged_secret])),
        });
        s.storage()
            .set_meta(
                &format!("{TOKEN_META_PREFIX}{forged_id}"),
                Some(forged.to_string().as_bytes()),
            )
            .unwrap();
        let text = format!(
            "{TOKEN_PREFIX}{forged_id}_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_secret)
        );
        assert_eq!(s.authenticate_admin(&text).unwrap(), None);
        // The auditor's row, promoted to custodian.
        let key = format!("{TOKEN_META_PREFIX}{}", t.id);
        let body = String::from_utf8(s.storage().get_meta(&key).unwrap().unwrap()).unwrap();
        let promoted = body.replace("\"auditor\"", "\"custodian\"");
        assert_ne!(body, promoted);
        s.storage()
            .set_meta(&key, Some(promoted.as_bytes()))
            .unwrap();
        assert_eq!(s.authenticate_admin(secret.expose_secret()).unwrap(), None);
        assert_eq!(s.integrity_failures(), 2);
        // Put back as it was, it works again.
        s.storage().set_meta(&key, Some(body.as_bytes())).unwrap();
        assert!(s
            .authenticate_admin(secret.expose_secret())
            .unwrap()
            .is_some());
        let genuine: Vec<_> = s
            .admin_tokens()
            .unwrap()
            .iter()
            .map(|t| (t.name.clone(), s.admin_token_is_genuine(t).unwrap()))
            .collect();
        assert_eq!(genuine, [("ann".into(), true), ("mallory".into(), false)]);
    }
}
