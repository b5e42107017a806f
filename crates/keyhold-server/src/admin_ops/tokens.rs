//! Bearer tokens of the admin API and the status an operator checks.

use std::collections::BTreeMap;

use keyhold_service::api_tokens::{AdminToken, Role};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{time, AdminOps, OpError, OpResult};

/// A new token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// custodian, auditor or operator.
    pub role: String,
    /// Expire after this many seconds; absent: never.
    #[serde(default)]
    pub expires_in_s: Option<i64>,
}

/// A token, as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub name: String,
    pub id: String,
    pub role: String,
    pub created: String,
    pub expires: Option<String>,
    /// Whether its stored row verifies (a row changed outside Keyhold is refused).
    pub genuine: bool,
}

/// A token just made: the secret is in this answer only.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct NewTokenView {
    pub name: String,
    pub id: String,
    pub role: String,
    pub expires: Option<String>,
    pub token: String,
}

impl Drop for NewTokenView {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

impl std::fmt::Debug for NewTokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTokenView")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The caller of the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WhoamiView {
    pub name: String,
    /// custodian, auditor or operator.
    pub role: String,
    pub token_id: String,
}

/// One external key manager's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EkmView {
    pub id: String,
    pub model: String,
    /// ACTIVE, DEGRADED or UNAVAILABLE.
    pub status: String,
    pub detail: Option<String>,
}

/// Whether every stored row that grants or limits power verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IntegrityView {
    pub genuine: bool,
    /// The rows that do not (changed outside Keyhold; refused).
    pub refused: Vec<String>,
}

/// A server running on the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerView {
    pub pid: u32,
    pub version: String,
    pub started_at: String,
    pub uptime_s: i64,
    /// Listener name → address.
    pub listeners: BTreeMap<String, String>,
}

/// What an operator checks: health, lockdown, row integrity, keys by
/// state, running servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusView {
    pub version: String,
    /// ACTIVE, DEGRADED or UNAVAILABLE.
    pub health: String,
    pub ekms: Vec<EkmView>,
    pub lockdown: bool,
    pub integrity: IntegrityView,
    /// Keys by `STATE/STATUS`.
    pub keys: BTreeMap<String, u64>,
    /// Nodes live on shared storage (absent on SQLite).
    pub live_servers: Option<usize>,
    pub servers: Vec<ServerView>,
    /// The data directory the servers above run on.
    pub data_dir: String,
    /// FIPS mode of the binary that answers (the server for the admin
    /// API, the command for a local `keyhold status`); absent from servers
    /// older than FIPS mode.
    #[serde(default)]
    pub fips: FipsView,
}

/// Whether a binary is a FIPS build and its module in FIPS mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FipsView {
    /// Built with the `fips` feature (AWS-LC-FIPS).
    pub build: bool,
    /// The module reports FIPS mode now (its power-on self-tests passed).
    pub module_fips_mode: bool,
    /// The module, as `--version` says it.
    pub module: String,
}

impl FipsView {
    pub fn now() -> Self {
        let s = keyhold_crypto::fips::status();
        FipsView {
            build: s.build,
            module_fips_mode: s.module_fips_mode,
            module: s.line(),
        }
    }
}

fn token_view(t: &AdminToken, genuine: bool) -> TokenView {
    TokenView {
        name: t.name.clone(),
        id: t.id.clone(),
        role: t.role.as_str().into(),
        created: time(t.created_ms / 1000),
        expires: t.expires_ms.map(|m| time(m / 1000)),
        genuine,
    }
}

impl AdminOps {
    pub fn list_tokens(&self) -> OpResult<Vec<TokenView>> {
        let svc = &self.service;
        svc.admin_tokens()?
            .iter()
            .map(|t| Ok(token_view(t, svc.admin_token_is_genuine(t)?)))
            .collect()
    }

    pub fn create_token(&self, req: &CreateToken) -> OpResult<NewTokenView> {
        let role = Role::parse(&req.role)?;
        let expires_ms = match req.expires_in_s {
            None => None,
            Some(s) if s > 0 => Some((keyhold_core::now() + s) * 1000),
            Some(_) => return Err(OpError::new(400, "expires_in_s must be positive")),
        };
        let (t, secret) = self
            .service
            .create_admin_token(&req.name, role, expires_ms)?;
        Ok(NewTokenView {
            name: t.name.clone(),
            id: t.id.clone(),
            role: t.role.as_str().into(),
            expires: t.expires_ms.map(|m| time(m / 1000)),
            token: secret.expose_secret().to_owned(),
        })
    }

    /// Revokes a token by name or id: refused from the next request on.
    pub fn revoke_token(&self, name: &str) -> OpResult<TokenView> {
        let t = self.service.revoke_admin_token(name)?;
        Ok(token_view(&t, true))
    }

    /// The nodes on shared storage that sent a heartbeat in the last day,
    /// with it (none on SQLite: one data directory, its servers in
    /// `status`).
    pub fn fleet(&self) -> OpResult<Vec<keyhold_storage::NodeInfo>> {
        if !self.service.shared_storage() {
            return Ok(Vec::new());
        }
        let since = (keyhold_core::now() - 86_400) * 1000;
        Ok(self.service.nodes().live_nodes(since)?)
    }

    /// Disabled keys (break glass on a key) as (store, key id), at most
    /// `limit`.
    pub fn disabled_keys(&self, limit: usize) -> OpResult<Vec<(String, String)>> {
        Ok(self
            .service
            .disabled_keys(limit)?
            .into_iter()
            .map(|k| (k.store.display().to_owned(), k.id.as_str().to_owned()))
            .collect())
    }

    /// The prefixes of the disabled key stores (break glass on a store),
    /// without counting their keys.
    pub fn disabled_stores(&self) -> OpResult<Vec<String>> {
        Ok(self
            .service
            .list_stores()?
            .into_iter()
            .filter(|s| s.status == keyhold_core::Status::Disabled)
            .map(|s| s.prefix.display().to_owned())
            .collect())
    }

    /// Where keys are kept, in words.
    pub fn storage_kind(&self) -> &'static str {
        if self.service.shared_storage() {
            "PostgreSQL (shared by the fleet)"
        } else {
            "SQLite (in the data directory)"
        }
    }

    /// This server's audit chain: records, failures, free disk.
    pub fn audit_status(&self) -> Option<keyhold_audit::AuditStatus> {
        self.service.audit().status()
    }

    /// Requests per minute over the last hour, per front-end and key store
    /// (what this server served).
    pub fn request_rates(&self) -> Vec<keyhold_service::rates::Series> {
        self.service.audit().last_hour()
    }

    pub fn status(&self) -> OpResult<StatusView> {
        let svc = &self.service;
        let health = svc.health();
        let mut keys = BTreeMap::<String, u64>::new();
        for (_, state, status, n) in svc.key_state_counts()? {
            *keys.entry(format!("{state}/{status}")).or_default() += n;
        }
        let live_servers = if svc.shared_storage() {
            let since = keyhold_core::now() * 1000 - crate::presence::NODE_TTL.as_millis() as i64;
            Some(svc.nodes().live_nodes(since)?.len())
        } else {
            None
        };
        let refused = svc.scan_integrity()?;
        let now_ms = keyhold_core::now() * 1000;
        let servers = crate::presence::running_servers(&self.data_dir)
            .into_iter()
            .map(|s| ServerView {
                pid: s.pid,
                version: s.version,
                started_at: time(s.started_ms / 1000),
                uptime_s: (now_ms - s.started_ms).max(0) / 1000,
                listeners: s.listeners.into_iter().collect(),
            })
            .collect();
        Ok(StatusView {
            version: env!("CARGO_PKG_VERSION").into(),
            health: health.status().as_str().into(),
            ekms: health
                .ekms
                .iter()
                .map(|r| EkmView {
                    id: r.id.clone(),
                    model: r.model.clone(),
                    status: r.status.as_str().into(),
                    detail: r.detail.clone(),
                })
                .collect(),
            lockdown: svc.is_locked_down(),
            integrity: IntegrityView {
                genuine: refused.is_empty(),
                refused,
            },
            keys,
            live_servers,
            servers,
            data_dir: self.data_dir.display().to_string(),
            fips: FipsView::now(),
        })
    }
}
