//! Typed administration operations: what the admin API's `/v1/…` resources
//! do, as functions over the key service that take and return typed values
//! (views), never text. The HTTP layer ([`crate::admin_v1`]) translates
//! routes and JSON; a change that servers must apply (a disable, a
//! lockdown) returns once every running server acknowledged it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyhold_core::{Error, Key, KeyId, KeyStore, KeyType, Status, StorePrefix, Usage};
use keyhold_service::KeyService;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod audit;
mod backups;
mod kmip;
mod lifecycle;
mod policies;
mod tokens;
pub use audit::*;
pub use backups::*;
pub use kmip::*;
pub use lifecycle::*;
pub use policies::*;
pub use tokens::*;

/// How long a change waits for running servers to acknowledge it.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Most keys one listing returns, and how many when not told.
pub const MAX_LIST: usize = 100_000;
pub const DEFAULT_LIST: usize = 1000;

/// A failed operation: the HTTP status it answers with and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OpError {
    #[serde(skip)]
    pub status: u16,
    /// What went wrong, for people.
    pub error: String,
}

impl OpError {
    pub fn new(status: u16, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
        }
    }
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Invalid { .. } | Error::KeyUsage(_) => 400,
            Error::AccessDenied { .. } => 403,
            Error::StoreNotFound(_)
            | Error::KeyNotFound { .. }
            | Error::ObjectNotFound(_)
            | Error::CredentialNotFound(_) => 404,
            Error::StoreExists(_)
            | Error::KeyExists { .. }
            | Error::Conflict(_)
            | Error::InvalidState(_) => 409,
            Error::DependencyTimeout(_) | Error::Storage(_) => 503,
            Error::InvalidCiphertext
            | Error::RootOfTrust(_)
            | Error::UnwrapFailed
            | Error::Integrity(_)
            | Error::Internal(_) => 500,
        };
        if status == 500 || status == 503 {
            tracing::error!(error = %e, "admin API operation failed");
        }
        // Callers are authenticated custodians and auditors: they get the
        // whole reason (which row does not verify, which database is out
        // of reach), as the commands always said it.
        let error = e.to_string();
        Self { status, error }
    }
}

pub type OpResult<T> = Result<T, OpError>;

/// ENABLED or DISABLED: the break-glass switch of a store or a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusName {
    Enabled,
    Disabled,
}

impl From<StatusName> for Status {
    fn from(s: StatusName) -> Self {
        match s {
            StatusName::Enabled => Status::Enabled,
            StatusName::Disabled => Status::Disabled,
        }
    }
}

/// How a change that servers must apply was confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InForceView {
    /// Servers running on the data directory (or the shared database); each
    /// confirmed the change, or was waited out.
    pub servers: usize,
    /// From the commit to the last confirmation, in microseconds.
    pub elapsed_us: u64,
    /// Nodes that neither confirmed nor renewed their lease (cut off from
    /// the database): waited out until their lease ran out, so they serve
    /// nothing cached from before the change.
    pub waited_out: Vec<WaitedOut>,
}

/// A node waited out: its name and its last heartbeat (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WaitedOut {
    pub node: String,
    pub last_heartbeat: String,
}

/// A key store, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoreView {
    /// The store's path prefix, e.g. `/payments`.
    pub prefix: String,
    /// The XKS proxy URI path AWS KMS is configured with.
    pub uri_path: String,
    pub status: StatusName,
    pub description: String,
    /// RFC 3339.
    pub created_at: String,
    /// How many keys it holds.
    pub keys: u64,
    /// How many SigV4 credentials it has.
    pub credentials: usize,
    /// The cloud API that serves it: `xks` (AWS) or `azure-ekm`.
    #[serde(default = "xks_name")]
    pub api: String,
    /// With `azure-ekm`: where Managed HSM calls and which client
    /// certificate it must present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_ekm: Option<AzureEkmView>,
    /// With `ms-dke`: where Office calls, whose tokens count and who may
    /// decrypt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_dke: Option<DkeView>,
    /// With `google-cse`: the KACLS URL, its KEK, whose tokens count and
    /// the perimeter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_cse: Option<CseView>,
    /// After a change: how running servers confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_force: Option<InForceView>,
}

fn xks_name() -> String {
    "xks".into()
}

/// An Azure key store's binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AzureEkmView {
    /// The EKM connection's path prefix (`/contoso/prod`, or empty).
    pub path_prefix: String,
    /// The subject common name of Managed HSM's client certificate.
    pub client_cn: String,
    /// The CAs that may issue it (PEM).
    pub client_ca_pem: String,
}

/// A Double Key Encryption store's binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DkeView {
    pub path_prefix: String,
    pub issuers: Vec<String>,
    pub audience: String,
    pub jwks_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_ca_pem: Option<String>,
    pub authorized_emails: Vec<String>,
    pub authorized_groups: Vec<String>,
    pub cache_days: u32,
}

/// A Google Workspace CSE store's binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CseView {
    pub path_prefix: String,
    pub kacls_url: String,
    pub kek: String,
    pub idp_issuers: Vec<String>,
    pub idp_audiences: Vec<String>,
    pub idp_jwks_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_jwks_ca_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz_jwks_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz_jwks_ca_pem: Option<String>,
    pub allowed_domains: Vec<String>,
    pub allow_guests: bool,
    pub privileged_users: Vec<String>,
    pub migration_peers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_ca_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
}

/// Which cloud API serves a key store: `xks` (the default; AWS KMS with
/// SigV4 credentials), `azure-ekm` (Azure Managed HSM over mutual TLS:
/// path_prefix, client_cn, client_ca_pem) or `ms-dke` (Microsoft Double
/// Key Encryption: path_prefix, issuers, audience, jwks_url, jwks_ca_pem,
/// authorized_emails, authorized_groups, cache_days) or `google-cse`
/// (Google Workspace CSE: path_prefix, kacls_url, kek, issuers and
/// audiences/audience and jwks_url/jwks_ca_pem of the users' identity
/// provider, authz_jwks_url/authz_jwks_ca_pem, allowed_domains,
/// allow_guests, privileged_users).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStoreApi {
    /// `xks` or `azure-ekm`.
    pub api: String,
    /// azure-ekm: the path prefix configured on the EKM connection
    /// (`/contoso/prod`; empty or absent: none).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// azure-ekm: the subject common name of the client certificate
    /// (`az keyvault ekm-connection certificate show`: subjectCommonName).
    #[serde(default)]
    pub client_cn: Option<String>,
    /// azure-ekm: PEM certificates of the CAs that issue it (caCertificates).
    #[serde(default)]
    pub client_ca_pem: Option<String>,
    /// ms-dke: accepted token issuers (`https://sts.windows.net/<tenant>/`).
    #[serde(default)]
    pub issuers: Option<Vec<String>>,
    /// ms-dke: the token audience (the service's `https://HOST`).
    #[serde(default)]
    pub audience: Option<String>,
    /// ms-dke: Entra ID's JWK set (default
    /// `https://login.microsoftonline.com/common/discovery/keys`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// ms-dke: the CA (PEM) the JWK set's server must chain to.
    #[serde(default)]
    pub jwks_ca_pem: Option<String>,
    /// ms-dke: users who may decrypt (`alice@contoso.com`, `@contoso.com`).
    #[serde(default)]
    pub authorized_emails: Option<Vec<String>>,
    /// ms-dke: groups or app roles whose members may decrypt.
    #[serde(default)]
    pub authorized_groups: Option<Vec<String>>,
    /// ms-dke: days Office may cache a public key (default 1; 0: never).
    #[serde(default)]
    pub cache_days: Option<u32>,
    /// google-cse: the KACLS URL as entered in the Google Admin console.
    #[serde(default)]
    pub kacls_url: Option<String>,
    /// google-cse: the store's AES-256 key that wraps the data keys.
    #[serde(default)]
    pub kek: Option<String>,
    /// google-cse: the users' identity provider's client ids (token
    /// audiences); `audience` is taken as one too.
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    /// google-cse: where Google's authorization keys are (default Google's).
    #[serde(default)]
    pub authz_jwks_url: Option<String>,
    #[serde(default)]
    pub authz_jwks_ca_pem: Option<String>,
    /// google-cse: users' domains allowed (the perimeter; empty: any).
    #[serde(default)]
    pub allowed_domains: Option<Vec<String>>,
    /// google-cse: let guests (google-visitor, customer-idp) in.
    #[serde(default)]
    pub allow_guests: Option<bool>,
    /// google-cse: who may call privilegedwrap / privilegedunwrap.
    #[serde(default)]
    pub privileged_users: Option<Vec<String>>,
    /// google-cse: the KACLS URLs this one migrates keys with (rewrap).
    #[serde(default)]
    pub migration_peers: Option<Vec<String>>,
    /// google-cse: the CA (PEM) of the peers' HTTPS.
    #[serde(default)]
    pub peer_ca_pem: Option<String>,
    /// google-cse: the store's RSA key (SIGN) that signs this KACLS's tokens.
    #[serde(default)]
    pub signing_key: Option<String>,
}

/// Entra ID's signing keys (v1 tokens, issuer sts.windows.net).
pub const ENTRA_JWKS_URL: &str = "https://login.microsoftonline.com/common/discovery/keys";

/// A key, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub store: String,
    pub key_id: String,
    /// `AES_256`, `RSA_2048`, `RSA_3072`, `RSA_4096`, `ECC_NIST_P256`,
    /// `ECC_NIST_P384`, `ECC_NIST_P521` or `ED25519`.
    pub key_spec: String,
    pub status: StatusName,
    /// `ENCRYPT`, `DECRYPT`, `SIGN`, `VERIFY`.
    pub usage: Vec<String>,
    pub current_version: u32,
    /// `SOFTWARE` (wrapped under the root of trust) or `HSM`.
    pub protection: String,
    pub hsm_label: Option<String>,
    /// Lifecycle state now: PRE_ACTIVE, ACTIVE, DEACTIVATED, COMPROMISED, DESTROYED.
    pub state: String,
    pub activate_at: Option<String>,
    pub deactivate_at: Option<String>,
    pub destroy_at: Option<String>,
    pub compromised_at: Option<String>,
    pub rotation_period_s: Option<i64>,
    pub next_rotation_at: Option<String>,
    pub min_decrypt_version: u32,
    pub created_at: String,
    pub updated_at: String,
    /// After a change: how running servers confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_force: Option<InForceView>,
    /// After a usage change of an HSM-resident key: what the token did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_note: Option<String>,
}

/// A SigV4 credential of a store, as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CredentialView {
    pub access_key_id: String,
    pub store: String,
    pub created_at: String,
}

/// A credential just made: its secret is shown this once.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct NewCredentialView {
    pub store: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Drop for NewCredentialView {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret_access_key);
    }
}

impl std::fmt::Debug for NewCredentialView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredentialView")
            .field("store", &self.store)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A new key store.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStore {
    /// The store's path prefix, e.g. `/payments`.
    pub prefix: String,
    #[serde(default)]
    pub description: String,
    /// The cloud API that serves it (absent: XKS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<SetStoreApi>,
}

/// A new key: AES-256 (what XKS serves) or a key pair, made and wrapped
/// in Keyhold (`software`), or an AES-256 key generated and used inside
/// the HSM (`hsm`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Its external key id (absent: a random UUID).
    #[serde(default)]
    pub key_id: Option<String>,
    /// `aes-256` (default), `rsa-2048`, `rsa-3072`, `rsa-4096`, `ec-p256`,
    /// `ec-p384`, `ec-p521` or `ed25519` (or the key spec: `RSA_3072`…).
    #[serde(default)]
    pub key_type: Option<String>,
    /// `ENCRYPT`, `DECRYPT`, `SIGN`, `VERIFY`. When absent: both of
    /// ENCRYPT and DECRYPT for AES, SIGN and VERIFY for EC and Ed25519; an
    /// RSA key needs it (ENCRYPT,DECRYPT for RSA-OAEP, or SIGN,VERIFY).
    #[serde(default)]
    pub usage: Option<Vec<String>>,
    /// `software` (default) or `hsm`.
    #[serde(default)]
    pub protection: Option<String>,
    /// The PKCS#11 label of an HSM key (default keyhold:<prefix>:<key id>).
    #[serde(default)]
    pub hsm_label: Option<String>,
    /// Made PRE_ACTIVE: unusable until activated (or `activate_at`).
    #[serde(default)]
    pub pre_active: bool,
    /// With `pre_active`: when it activates by itself (RFC 3339 UTC).
    #[serde(default)]
    pub activate_at: Option<String>,
    /// When it deactivates by itself (RFC 3339 UTC).
    #[serde(default)]
    pub deactivate_at: Option<String>,
    /// Rotate automatically every this many seconds (at least a day).
    #[serde(default)]
    pub rotation_period_s: Option<i64>,
}

/// Many software keys at once: ids `KEY_ID-000001`… (random when no
/// `key_id`), the same usage and lifecycle, 1,000 to a transaction.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeys {
    pub count: u32,
    #[serde(default)]
    pub key_id: Option<String>,
    /// As for one key (`aes-256` when absent).
    #[serde(default)]
    pub key_type: Option<String>,
    #[serde(default)]
    pub usage: Option<Vec<String>>,
    #[serde(default)]
    pub pre_active: bool,
    #[serde(default)]
    pub activate_at: Option<String>,
    #[serde(default)]
    pub deactivate_at: Option<String>,
    #[serde(default)]
    pub rotation_period_s: Option<i64>,
}

/// Keys made at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeysMade {
    pub created: u32,
    /// The first 1,000 of them.
    pub keys: Vec<KeyView>,
}

/// A key that already exists in the HSM, adopted (e.g. from another XKS
/// proxy): an AES-256 key or a key pair (its type read from the token).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportHsmKey {
    /// Its PKCS#11 label in the HSM.
    pub label: String,
    /// Its external key id (absent: the label).
    #[serde(default)]
    pub key_id: Option<String>,
    /// As for a new key of its type (absent: ENCRYPT,DECRYPT for AES,
    /// SIGN,VERIFY for EC and Ed25519; an RSA pair needs it).
    #[serde(default)]
    pub usage: Option<Vec<String>>,
}

fn usage_of(names: &Option<Vec<String>>) -> OpResult<Option<Usage>> {
    Ok(names
        .as_ref()
        .map(|n| Usage::parse(&n.join(",")))
        .transpose()?)
}

/// A new key's type and usage (the type's default usage when none is
/// given; an RSA key must say which).
pub fn type_and_usage(
    key_type: &Option<String>,
    names: &Option<Vec<String>>,
) -> OpResult<(KeyType, Usage)> {
    let t = key_type
        .as_deref()
        .map(KeyType::parse)
        .transpose()?
        .unwrap_or_default();
    let usage = match usage_of(names)? {
        Some(u) => u,
        None => t.default_usage().ok_or_else(|| {
            OpError::new(
                400,
                format!("a {t} key needs a usage: ENCRYPT,DECRYPT (RSA-OAEP) or SIGN,VERIFY"),
            )
        })?,
    };
    t.check_usage(usage)?;
    Ok((t, usage))
}

/// A key pair's public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublicKeyView {
    pub store: String,
    pub key_id: String,
    pub key_spec: String,
    pub version: u32,
    /// X.509 SubjectPublicKeyInfo, PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
}

fn rfc3339(what: &str, s: &Option<String>) -> OpResult<Option<i64>> {
    s.as_deref()
        .map(|t| {
            keyhold_core::time::parse_rfc3339(t).ok_or_else(|| {
                OpError::new(
                    400,
                    format!("{what}: {t:?} is not an RFC 3339 UTC time like 2027-01-31T00:00:00Z"),
                )
            })
        })
        .transpose()
}

impl CreateKey {
    /// The lifecycle the key starts with.
    fn lifecycle(&self) -> OpResult<keyhold_core::Lifecycle> {
        if self.activate_at.is_some() && !self.pre_active {
            return Err(OpError::new(400, "activate_at needs pre_active"));
        }
        Ok(keyhold_core::Lifecycle {
            state: if self.pre_active {
                keyhold_core::KeyState::PreActive
            } else {
                keyhold_core::KeyState::Active
            },
            activate_at: rfc3339("activate_at", &self.activate_at)?,
            deactivate_at: rfc3339("deactivate_at", &self.deactivate_at)?,
            rotation_period: self.rotation_period_s,
            ..keyhold_core::Lifecycle::default()
        })
    }
}

/// A change of the break-glass switch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStatus {
    pub status: StatusName,
}

/// Whether Keyhold is locked down (every key refused on every front-end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockdownView {
    pub lockdown: bool,
    /// After a change: how running servers confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_force: Option<InForceView>,
}

pub(crate) fn time(t: i64) -> String {
    keyhold_core::time::format_rfc3339(t)
}

fn status_name(s: Status) -> StatusName {
    match s {
        Status::Enabled => StatusName::Enabled,
        Status::Disabled => StatusName::Disabled,
    }
}

impl KeyView {
    pub fn of(k: &Key) -> Self {
        let l = &k.lifecycle;
        Self {
            store: k.store.display().to_owned(),
            key_id: k.id.as_str().to_owned(),
            key_spec: k.key_type.spec().into(),
            status: status_name(k.status),
            usage: k.usage.names().into_iter().map(str::to_owned).collect(),
            current_version: k.current_version,
            protection: if k.hsm_label.is_some() {
                "HSM"
            } else {
                "SOFTWARE"
            }
            .into(),
            hsm_label: k.hsm_label.clone(),
            state: l.state_at(keyhold_core::now()).as_str().to_owned(),
            activate_at: l.activate_at.map(time),
            deactivate_at: l.deactivate_at.map(time),
            destroy_at: l.destroy_at.map(time),
            compromised_at: l.compromised_at.map(time),
            rotation_period_s: l.rotation_period,
            next_rotation_at: l.next_rotation_at.map(time),
            min_decrypt_version: l.min_decrypt_version,
            created_at: time(k.created_at),
            updated_at: time(k.updated_at),
            in_force: None,
            usage_note: None,
        }
    }
}

/// A store prefix from a path segment: `payments`, `/payments` and the
/// percent-encoded `%2Fpayments` all name `/payments`.
pub fn store_prefix(segment: &str) -> OpResult<StorePrefix> {
    let s = segment.trim_start_matches('/');
    StorePrefix::parse(&format!("/{s}")).map_err(OpError::from)
}

pub(crate) fn key_id(s: &str) -> OpResult<KeyId> {
    KeyId::parse(s).map_err(OpError::from)
}

/// The administration of one key service on one data directory.
pub struct AdminOps {
    service: Arc<KeyService>,
    data_dir: std::path::PathBuf,
}

impl AdminOps {
    pub fn new(service: Arc<KeyService>, data_dir: &Path) -> Self {
        Self {
            service,
            data_dir: data_dir.to_owned(),
        }
    }

    /// Waits until every running server applied the last change.
    pub(crate) fn in_force(&self) -> OpResult<InForceView> {
        let epoch = self.service.bump_epoch()?;
        let r = crate::presence::wait_for_acks(
            &self.data_dir,
            &*self.service.nodes(),
            epoch,
            ACK_TIMEOUT,
        );
        if r.acknowledged < r.servers {
            return Err(OpError::new(
                504,
                format!(
                    "the change is committed, but {} of {} running server(s) did not confirm it within {} s",
                    r.servers - r.acknowledged,
                    r.servers,
                    ACK_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(InForceView {
            servers: r.servers,
            elapsed_us: r.elapsed.as_micros() as u64,
            waited_out: r
                .waited_out
                .into_iter()
                .map(|(node, last)| WaitedOut {
                    node,
                    last_heartbeat: time(last / 1000),
                })
                .collect(),
        })
    }

    fn store_view(&self, s: KeyStore) -> OpResult<StoreView> {
        let api = self.service.store_api(&s.prefix)?;
        let azure_ekm = match &api {
            keyhold_service::StoreApi::AzureEkm(b) => Some(AzureEkmView {
                path_prefix: b.path_prefix.clone(),
                client_cn: b.client_cn.clone(),
                client_ca_pem: b.client_ca_pem.clone(),
            }),
            _ => None,
        };
        let ms_dke = match &api {
            keyhold_service::StoreApi::MsDke(b) => Some(DkeView {
                path_prefix: b.path_prefix.clone(),
                issuers: b.issuers.clone(),
                audience: b.audience.clone(),
                jwks_url: b.jwks_url.clone(),
                jwks_ca_pem: b.jwks_ca_pem.clone(),
                authorized_emails: b.authorized_emails.clone(),
                authorized_groups: b.authorized_groups.clone(),
                cache_days: b.cache_days,
            }),
            _ => None,
        };
        let google_cse = match &api {
            keyhold_service::StoreApi::GoogleCse(b) => Some(CseView {
                path_prefix: b.path_prefix.clone(),
                kacls_url: b.kacls_url.clone(),
                kek: b.kek.clone(),
                idp_issuers: b.idp_issuers.clone(),
                idp_audiences: b.idp_audiences.clone(),
                idp_jwks_url: b.idp_jwks_url.clone(),
                idp_jwks_ca_pem: b.idp_jwks_ca_pem.clone(),
                authz_jwks_url: b.authz_jwks_url.clone(),
                authz_jwks_ca_pem: b.authz_jwks_ca_pem.clone(),
                allowed_domains: b.allowed_domains.clone(),
                allow_guests: b.allow_guests,
                privileged_users: b.privileged_users.clone(),
                migration_peers: b.migration_peers.clone(),
                peer_ca_pem: b.peer_ca_pem.clone(),
                signing_key: b.signing_key.clone(),
            }),
            _ => None,
        };
        Ok(StoreView {
            api: api.name().to_owned(),
            azure_ekm,
            ms_dke,
            google_cse,
            keys: self.service.count_keys(&s.prefix)?,
            credentials: self.service.list_credentials(&s.prefix)?.len(),
            prefix: s.prefix.display().to_owned(),
            uri_path: s.prefix.uri_path(),
            status: status_name(s.status),
            description: s.description,
            created_at: time(s.created_at),
            in_force: None,
        })
    }

    pub fn list_stores(&self) -> OpResult<Vec<StoreView>> {
        self.service
            .list_stores()?
            .into_iter()
            .map(|s| self.store_view(s))
            .collect()
    }

    pub fn get_store(&self, store: &str) -> OpResult<StoreView> {
        let s = self.service.get_store(&store_prefix(store)?)?;
        self.store_view(s)
    }

    pub fn create_store(&self, req: &CreateStore) -> OpResult<StoreView> {
        let p = StorePrefix::parse(&req.prefix)?;
        // The binding is checked before the store is made.
        let api = req.api.as_ref().map(store_api).transpose()?;
        let s = self.service.create_store(&p, &req.description)?;
        if let Some(api) = api {
            self.service.set_store_api(&p, &api)?;
        }
        self.store_view(s)
    }

    /// Binds a key store to a cloud API (in force on every running server
    /// when it answers).
    pub fn set_store_api(&self, store: &str, req: &SetStoreApi) -> OpResult<StoreView> {
        let p = store_prefix(store)?;
        let api = store_api(req)?;
        self.service.set_store_api(&p, &api)?;
        let in_force = Some(self.in_force()?);
        Ok(StoreView {
            in_force,
            ..self.store_view(self.service.get_store(&p)?)?
        })
    }

    pub fn set_store_status(&self, store: &str, req: &SetStatus) -> OpResult<StoreView> {
        let p = store_prefix(store)?;
        self.service.set_store_status(&p, req.status.into())?;
        let in_force = Some(self.in_force()?);
        Ok(StoreView {
            in_force,
            ..self.store_view(self.service.get_store(&p)?)?
        })
    }

    pub fn list_credentials(&self, store: &str) -> OpResult<Vec<CredentialView>> {
        let p = store_prefix(store)?;
        self.service.get_store(&p)?;
        Ok(self
            .service
            .list_credentials(&p)?
            .into_iter()
            .map(|c| CredentialView {
                access_key_id: c.access_key_id,
                store: c.store.display().to_owned(),
                created_at: time(c.created_at),
            })
            .collect())
    }

    pub fn add_credential(&self, store: &str) -> OpResult<NewCredentialView> {
        let c = self.service.add_credential(&store_prefix(store)?)?;
        let secret = std::str::from_utf8(c.secret_access_key.expose())
            .map_err(|_| OpError::new(500, "the new secret is not text"))?;
        Ok(NewCredentialView {
            store: c.store.display().to_owned(),
            access_key_id: c.access_key_id,
            secret_access_key: secret.to_owned(),
        })
    }

    pub fn remove_credential(&self, store: &str, access_key_id: &str) -> OpResult<()> {
        self.service
            .remove_credential(&store_prefix(store)?, access_key_id)?;
        self.in_force().map(drop)
    }

    /// Keys of a store in id order: at most `limit` (default
    /// [`DEFAULT_LIST`], at most [`MAX_LIST`]),
    /// after the key id `after`.
    pub fn list_keys(
        &self,
        store: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> OpResult<Vec<KeyView>> {
        let p = store_prefix(store)?;
        self.service.get_store(&p)?;
        let after = after.map(key_id).transpose()?;
        let limit = limit.unwrap_or(DEFAULT_LIST).clamp(1, MAX_LIST);
        Ok(self
            .service
            .list_keys(&p, after.as_ref(), limit)?
            .iter()
            .map(KeyView::of)
            .collect())
    }

    pub fn get_key(&self, store: &str, key: &str) -> OpResult<KeyView> {
        let k = self.service.get_key(&store_prefix(store)?, &key_id(key)?)?;
        Ok(KeyView::of(&k))
    }

    pub fn create_key(&self, store: &str, req: &CreateKey) -> OpResult<KeyView> {
        let p = store_prefix(store)?;
        let (key_type, usage) = type_and_usage(&req.key_type, &req.usage)?;
        let lifecycle = req.lifecycle()?;
        let id = match &req.key_id {
            Some(id) => key_id(id)?,
            None => key_id(
                &keyhold_crypto::random_uuid()
                    .map_err(|_| OpError::new(500, "random number generator failed"))?,
            )?,
        };
        let k = match req.protection.as_deref().unwrap_or("software") {
            "hsm" => {
                if lifecycle != keyhold_core::Lifecycle::default() {
                    return Err(OpError::new(400, "lifecycle options at creation are for software keys; use `key deactivate`, `key set-dates` afterwards"));
                }
                self.service.create_hsm_key_of(
                    &p,
                    &id,
                    key_type,
                    usage,
                    req.hsm_label.as_deref(),
                )?
            }
            "software" if req.hsm_label.is_some() => {
                return Err(OpError::new(
                    400,
                    "hsm_label is for HSM keys (protection hsm)",
                ))
            }
            "software" => {
                let made = self
                    .service
                    .create_keys_of(&p, &[id], key_type, usage, &lifecycle)?;
                made.into_iter()
                    .next()
                    .ok_or_else(|| OpError::new(500, "the key was not made"))?
            }
            other => {
                return Err(OpError::new(
                    400,
                    format!("protection {other:?}: use software or hsm"),
                ))
            }
        };
        Ok(KeyView::of(&k))
    }

    pub fn create_keys(&self, store: &str, req: &CreateKeys) -> OpResult<KeysMade> {
        let p = store_prefix(store)?;
        let (key_type, usage) = type_and_usage(&req.key_type, &req.usage)?;
        let lifecycle = CreateKey {
            pre_active: req.pre_active,
            activate_at: req.activate_at.clone(),
            deactivate_at: req.deactivate_at.clone(),
            rotation_period_s: req.rotation_period_s,
            ..CreateKey::default()
        }
        .lifecycle()?;
        let random = || {
            keyhold_crypto::random_uuid()
                .map_err(|_| OpError::new(500, "random number generator failed"))
        };
        let mut made = Vec::new();
        // Batches of 1000 keys per transaction: 100k keys take seconds, not minutes.
        let mut batch = Vec::with_capacity(1000);
        for i in 0..req.count {
            batch.push(match (&req.key_id, req.count) {
                (Some(id), 1) => key_id(id)?,
                (Some(id), _) => key_id(&format!("{id}-{:06}", i + 1))?,
                (None, _) => key_id(&random()?)?,
            });
            if batch.len() == 1000 || i + 1 == req.count {
                let keys = self
                    .service
                    .create_keys_of(&p, &batch, key_type, usage, &lifecycle)?;
                let room = 1000usize.saturating_sub(made.len());
                made.extend(keys.iter().take(room).map(KeyView::of));
                batch.clear();
            }
        }
        Ok(KeysMade {
            created: req.count,
            keys: made,
        })
    }

    /// The public key of a key pair's version (its current one by default).
    pub fn public_key(
        &self,
        store: &str,
        key: &str,
        version: Option<u32>,
    ) -> OpResult<PublicKeyView> {
        let (p, id) = (store_prefix(store)?, key_id(key)?);
        let k = self.service.get_key(&p, &id)?;
        let (version, spki) = self.service.public_key(&p, &id, version)?;
        Ok(PublicKeyView {
            store: p.display().to_owned(),
            key_id: id.as_str().to_owned(),
            key_spec: k.key_type.spec().into(),
            version,
            public_key_pem: keyhold_crypto::asym::public_key_pem(&spki)
                .map_err(|e| OpError::new(500, e.to_string()))?,
        })
    }

    pub fn import_hsm_key(&self, store: &str, req: &ImportHsmKey) -> OpResult<KeyView> {
        let p = store_prefix(store)?;
        let id = key_id(req.key_id.as_deref().unwrap_or(&req.label))?;
        let k = self
            .service
            .import_hsm_key(&p, &id, usage_of(&req.usage)?, &req.label)?;
        Ok(KeyView::of(&k))
    }

    pub fn set_key_status(&self, store: &str, key: &str, req: &SetStatus) -> OpResult<KeyView> {
        let (p, id) = (store_prefix(store)?, key_id(key)?);
        self.service.set_key_status(&p, &id, req.status.into())?;
        let k = self.service.get_key(&p, &id)?;
        self.changed(k)
    }

    pub fn rotate_key(&self, store: &str, key: &str) -> OpResult<KeyView> {
        // In force when it answers: every running server encrypts under
        // the new version from then on.
        let k = self
            .service
            .rotate_key(&store_prefix(store)?, &key_id(key)?)?;
        self.changed(k)
    }

    pub fn lockdown(&self) -> OpResult<LockdownView> {
        Ok(LockdownView {
            lockdown: self.service.is_locked_down(),
            in_force: None,
        })
    }

    /// Locks every key down (`true`) or lifts the lockdown, in force on
    /// every running server when it returns.
    pub fn set_lockdown(&self, req: &LockdownView) -> OpResult<LockdownView> {
        self.service.set_lockdown(req.lockdown)?;
        Ok(LockdownView {
            lockdown: req.lockdown,
            in_force: Some(self.in_force()?),
        })
    }
}

/// A binding as the key service takes it, checked (the CA certificates
/// parsed here, where X.509 is known).
fn store_api(req: &SetStoreApi) -> OpResult<keyhold_service::StoreApi> {
    use keyhold_service::{AzureEkmBinding, CseBinding, DkeBinding, StoreApi};
    let cse_fields = req.kacls_url.is_some()
        || req.kek.is_some()
        || req.audiences.is_some()
        || req.authz_jwks_url.is_some()
        || req.authz_jwks_ca_pem.is_some()
        || req.allowed_domains.is_some()
        || req.allow_guests.is_some()
        || req.privileged_users.is_some()
        || req.migration_peers.is_some()
        || req.peer_ca_pem.is_some()
        || req.signing_key.is_some();
    let dke_fields = req.issuers.is_some()
        || req.audience.is_some()
        || req.jwks_url.is_some()
        || req.jwks_ca_pem.is_some()
        || req.authorized_emails.is_some()
        || req.authorized_groups.is_some()
        || req.cache_days.is_some();
    let azure_fields = req.client_cn.is_some() || req.client_ca_pem.is_some();
    let check_ca = |p: &Option<String>| -> OpResult<()> {
        if let Some(p) = p {
            crate::azure::parse_client_cas(p)
                .map_err(|e| OpError::new(400, e.replace("client CA", "JWK set CA")))?;
        }
        Ok(())
    };
    match req.api.as_str() {
        "google-cse" => {
            if azure_fields
                || req.authorized_emails.is_some()
                || req.authorized_groups.is_some()
                || req.cache_days.is_some()
            {
                return Err(OpError::new(400, "google-cse takes no client certificate and no DKE settings (authorized users: use --allow-domain and policies)"));
            }
            let mut audiences = req.audiences.clone().unwrap_or_default();
            audiences.extend(req.audience.clone());
            let b = CseBinding {
                path_prefix: req.path_prefix.clone().unwrap_or_default(),
                kacls_url: req.kacls_url.clone().ok_or_else(|| {
                    OpError::new(400, "google-cse needs the KACLS URL as entered in the Google Admin console (kacls_url)")
                })?,
                kek: req.kek.clone().ok_or_else(|| {
                    OpError::new(400, "google-cse needs the store's AES-256 key that wraps the data keys (kek)")
                })?,
                idp_issuers: req.issuers.clone().unwrap_or_default(),
                idp_audiences: audiences,
                idp_jwks_url: req.jwks_url.clone().ok_or_else(|| {
                    OpError::new(400, "google-cse needs the identity provider's JWK set URL (jwks_url)")
                })?,
                idp_jwks_ca_pem: req.jwks_ca_pem.clone(),
                authz_jwks_url: req.authz_jwks_url.clone(),
                authz_jwks_ca_pem: req.authz_jwks_ca_pem.clone(),
                allowed_domains: req.allowed_domains.clone().unwrap_or_default(),
                allow_guests: req.allow_guests.unwrap_or(false),
                privileged_users: req.privileged_users.clone().unwrap_or_default(),
                migration_peers: req.migration_peers.clone().unwrap_or_default(),
                peer_ca_pem: req.peer_ca_pem.clone(),
                signing_key: req.signing_key.clone(),
            };
            check_ca(&b.peer_ca_pem)?;
            check_ca(&b.idp_jwks_ca_pem)?;
            check_ca(&b.authz_jwks_ca_pem)?;
            b.validate()?;
            Ok(StoreApi::GoogleCse(b))
        }
        "ms-dke" => {
            if cse_fields {
                return Err(OpError::new(400, "ms-dke takes no KACLS settings"));
            }
            if azure_fields {
                return Err(OpError::new(
                    400,
                    "ms-dke takes no client certificate: Office sends Entra ID tokens",
                ));
            }
            let b = DkeBinding {
                path_prefix: req.path_prefix.clone().unwrap_or_default(),
                issuers: req.issuers.clone().unwrap_or_default(),
                audience: req.audience.clone().ok_or_else(|| {
                    OpError::new(400, "ms-dke needs the token audience: the service's https://HOST (the app's Application ID URI)")
                })?,
                jwks_url: req.jwks_url.clone().unwrap_or_else(|| ENTRA_JWKS_URL.to_owned()),
                jwks_ca_pem: req.jwks_ca_pem.clone(),
                authorized_emails: req.authorized_emails.clone().unwrap_or_default(),
                authorized_groups: req.authorized_groups.clone().unwrap_or_default(),
                cache_days: req.cache_days.unwrap_or(1),
            };
            check_ca(&b.jwks_ca_pem)?;
            b.validate()?;
            Ok(StoreApi::MsDke(b))
        }
        "xks" => {
            if req.path_prefix.is_some() || azure_fields || dke_fields || cse_fields {
                return Err(OpError::new(
                    400,
                    "xks takes no path prefix or client certificate: its callers sign with SigV4 credentials",
                ));
            }
            Ok(StoreApi::Xks)
        }
        "azure-ekm" => {
            if dke_fields || cse_fields {
                return Err(OpError::new(400, "azure-ekm takes no token settings: Managed HSM authenticates with its client certificate"));
            }
            let b = AzureEkmBinding {
                path_prefix: req.path_prefix.clone().unwrap_or_default(),
                client_cn: req.client_cn.clone().ok_or_else(|| {
                    OpError::new(
                        400,
                        "azure-ekm needs the client certificate's subject common name (client_cn)",
                    )
                })?,
                client_ca_pem: req.client_ca_pem.clone().ok_or_else(|| {
                    OpError::new(
                        400,
                        "azure-ekm needs the client certificate's CAs (client_ca_pem)",
                    )
                })?,
            };
            crate::azure::parse_client_cas(&b.client_ca_pem).map_err(|e| OpError::new(400, e))?;
            b.validate()?;
            Ok(StoreApi::AzureEkm(b))
        }
        other => Err(OpError::new(
            400,
            format!("unknown API {other:?}: use xks, azure-ekm, ms-dke or google-cse"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_segments_name_prefixes() {
        for s in ["payments", "/payments", "//payments"] {
            assert_eq!(store_prefix(s).unwrap().display(), "/payments");
        }
        assert_eq!(store_prefix("bad prefix!").unwrap_err().status, 400);
    }

    #[test]
    fn service_errors_have_their_statuses() {
        let table = [
            (Error::invalid("x", "y"), 400),
            (Error::StoreNotFound("/s".into()), 404),
            (
                Error::KeyExists {
                    store: "/s".into(),
                    key: "k".into(),
                },
                409,
            ),
            (Error::InvalidState("locked".into()), 409),
            (Error::Storage("db down".into()), 503),
            (Error::Internal("bug".into()), 500),
        ];
        for (e, status) in table {
            let said = e.to_string();
            let o = OpError::from(e);
            assert_eq!(o.status, status, "{o:?}");
            assert_eq!(o.error, said);
        }
    }
}
