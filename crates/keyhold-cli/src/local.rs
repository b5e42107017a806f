//! Commands on the local data directory: `init`, `store …`, `key …`,
//! `hsm …`. They work on the data directory directly (SQLite allows the
//! running server and these commands to share it); the server picks
//! changes up within 100 ms.

use crate::cmdio::outln;
use crate::output;
use clap::Subcommand;
use keyhold_core::{Key, KeyId, StorePrefix};
use keyhold_root::{PinSource, Pkcs11Config};
use keyhold_server::data_dir::{create_private_dir, DataDir};
use keyhold_server::tls::LocalCa;
use keyhold_service::KeyService;
use secrecy::SecretString;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// Options of `keyhold init` that put the root of trust in an HSM.
#[derive(clap::Args, Debug)]
pub(crate) struct HsmArgs {
    /// PKCS#11 module: the root of trust becomes a KEK in this HSM.
    #[arg(long)]
    hsm_module: Option<std::path::PathBuf>,
    /// Token label.
    #[arg(long, requires = "hsm_module")]
    hsm_token_label: Option<String>,
    /// Token serial number.
    #[arg(long, requires = "hsm_module")]
    hsm_token_serial: Option<String>,
    /// File holding the user PIN (keep it 0600).
    #[arg(long, requires = "hsm_module", conflicts_with = "hsm_pin_env")]
    hsm_pin_file: Option<std::path::PathBuf>,
    /// Environment variable holding the user PIN.
    #[arg(long, requires = "hsm_module")]
    hsm_pin_env: Option<String>,
    /// Label of the key-encryption key (created when absent).
    #[arg(long, default_value = "keyhold-kek")]
    hsm_kek_label: String,
    /// Hard maximum of HSM sessions.
    #[arg(long, default_value_t = 8)]
    hsm_max_sessions: usize,
}

impl HsmArgs {
    pub(crate) fn config(&self) -> Result<Option<Pkcs11Config>, String> {
        let Some(module) = &self.hsm_module else {
            return Ok(None);
        };
        let pin = match (&self.hsm_pin_file, &self.hsm_pin_env) {
            (Some(f), None) => PinSource::File(
                std::path::absolute(f).map_err(|err| format!("--hsm-pin-file: {err}"))?,
            ),
            (None, Some(v)) => PinSource::Env(v.clone()),
            _ => return Err("give the HSM PIN with --hsm-pin-file or --hsm-pin-env".into()),
        };
        let mut c = Pkcs11Config::new(module.clone(), String::new(), pin);
        c.token_label = self.hsm_token_label.clone();
        c.token_serial = self.hsm_token_serial.clone();
        c.kek_label = self.hsm_kek_label.clone();
        c.max_sessions = self.hsm_max_sessions;
        c.validate().map_err(e)?;
        Ok(Some(c))
    }
}

#[derive(Subcommand)]
pub(crate) enum HsmCmd {
    /// Create the key-encryption key in the token if it is absent.
    Init,
    /// Show the token, the KEK and the session pool, after a wrap/unwrap round trip.
    Status,
    /// List the labels of the secret keys and key pairs in the token.
    ListKeys,
}

pub(crate) fn hsm(dd: &DataDir, cmd: &HsmCmd, as_json: bool) -> Result<(), String> {
    let root = dd.open_hsm_root(matches!(cmd, HsmCmd::Init)).map_err(e)?;
    match cmd {
        HsmCmd::Init | HsmCmd::Status => {
            use keyhold_root::RootOfTrust;
            let probe = root.wrap(b"keyhold/hsm-status", b"probe").map_err(e)?;
            let ok = root
                .unwrap(b"keyhold/hsm-status", &probe)
                .map(|p| p.expose() == b"probe")
                .unwrap_or(false);
            let health = root.probe_all();
            let tokens: Vec<_> = root
                .status()
                .into_iter()
                .zip(health)
                .map(|(st, (_, h))| {
                    json!({
                        "module": st.module,
                        "token_label": st.token_label,
                        "token_serial": st.token_serial,
                        "manufacturer": st.manufacturer,
                        "model": st.model,
                        "sessions_open": st.open_sessions,
                        "sessions_max": st.max_sessions,
                        "health": match h {
                            Ok(()) => "ACTIVE".to_owned(),
                            Err(err) => format!("UNAVAILABLE: {err}"),
                        },
                    })
                })
                .collect();
            let first = tokens.first().cloned().unwrap_or_default();
            let v = json!({
                "token_label": first["token_label"],
                "kek_label": root.status().first().map(|s| s.kek_label.clone()),
                "wrap_round_trip": if ok { "ok" } else { "FAILED" },
                "tokens": tokens,
            });
            if as_json {
                output::json(&v);
            } else {
                outln!("kek_label        {}", v["kek_label"].as_str().unwrap_or(""));
                outln!(
                    "wrap_round_trip  {}",
                    v["wrap_round_trip"].as_str().unwrap_or("")
                );
                let cell = |t: &serde_json::Value, k: &str| {
                    t[k].as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| t[k].to_string())
                };
                output::table(
                    &["TOKEN", "SERIAL", "MODEL", "SESSIONS", "HEALTH"],
                    &tokens
                        .iter()
                        .map(|t| {
                            vec![
                                cell(t, "token_label"),
                                cell(t, "token_serial"),
                                format!("{} {}", cell(t, "manufacturer"), cell(t, "model")),
                                format!("{}/{}", t["sessions_open"], t["sessions_max"]),
                                cell(t, "health"),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
            }
            if !ok {
                return Err("the HSM wrap/unwrap round trip failed".into());
            }
        }
        HsmCmd::ListKeys => {
            let secret = root.list_secret_keys().map_err(e)?;
            let pairs = root.list_key_pairs().map_err(e)?;
            if as_json {
                let mut all: Vec<&String> = secret.iter().chain(&pairs).collect();
                all.sort();
                output::json(&json!(all));
            } else {
                let mut rows: Vec<Vec<String>> = secret
                    .into_iter()
                    .map(|k| vec![k, "secret key".into()])
                    .chain(pairs.into_iter().map(|k| vec![k, "key pair".into()]))
                    .collect();
                rows.sort();
                output::table(&["LABEL", "KIND"], &rows);
            }
        }
    }
    Ok(())
}

pub(crate) struct CommandEnv {
    pub service: std::sync::Arc<KeyService>,
    pub json: bool,
    /// Who runs the command, when not the local user (the admin API's caller).
    pub actor: Option<String>,
    /// The data directory (where running servers acknowledge changes).
    pub data_dir: std::path::PathBuf,
    /// The front-end its audit records name: `admin` (the CLI and the API)
    /// or `console`.
    pub frontend: &'static str,
}

#[derive(Subcommand)]
pub(crate) enum StoreCmd {
    /// Create a key store at a path prefix (e.g. /tenant-a; "/" for none).
    Create {
        prefix: String,
        #[arg(long, default_value = "")]
        description: String,
        /// The cloud API that serves it: xks (AWS, the default), azure-ekm
        /// or ms-dke.
        #[arg(long, value_parser = ["xks", "azure-ekm", "ms-dke", "google-cse"])]
        api: Option<String>,
        #[command(flatten)]
        azure: Box<AzureArgs>,
    },
    /// Choose the cloud API that serves a key store: xks (AWS KMS, SigV4
    /// credentials), azure-ekm (Azure Managed HSM, mutual TLS) or ms-dke
    /// (Microsoft Double Key Encryption, Entra ID tokens) or google-cse
    /// (Google Workspace client-side encryption, KACLS). In force on
    /// every running server when it answers; run it again with a new
    /// --client-ca when Microsoft rotates its CAs.
    Api {
        prefix: String,
        #[arg(value_parser = ["xks", "azure-ekm", "ms-dke", "google-cse"])]
        api: String,
        #[command(flatten)]
        azure: Box<AzureArgs>,
    },
    /// List key stores.
    List,
    /// Show one key store.
    Show { prefix: String },
    /// Refuse every request on this store (InvalidStateException).
    Disable { prefix: String },
    /// Serve requests on this store again.
    Enable { prefix: String },
    /// SigV4 credentials of a store.
    #[command(subcommand)]
    Credential(CredentialCmd),
    /// Create a new credential and print the JSON file the AWS KMS console imports.
    KmsConfig {
        prefix: String,
        /// Write the file here (mode 0600) instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

/// Where Azure Managed HSM calls a key store and who it is.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct AzureArgs {
    /// azure-ekm: the EKM connection's path prefix (e.g. /contoso/prod).
    #[arg(long)]
    pub(crate) path_prefix: Option<String>,
    /// azure-ekm: the client certificate's subject common name
    /// (`az keyvault ekm-connection certificate show`: subjectCommonName).
    #[arg(long)]
    pub(crate) client_cn: Option<String>,
    /// azure-ekm: a PEM file with the CAs that issue the client
    /// certificate (caCertificates).
    #[arg(long)]
    pub(crate) client_ca: Option<std::path::PathBuf>,
    /// ms-dke: the Entra ID tenant whose users' tokens count (its issuer
    /// https://sts.windows.net/TENANT/); repeat for partner tenants.
    #[arg(long)]
    pub(crate) tenant: Vec<String>,
    /// ms-dke: an accepted token issuer URL (instead of or beside --tenant).
    #[arg(long)]
    pub(crate) issuer: Vec<String>,
    /// ms-dke: the token audience: this service's https://HOST (the DKE app
    /// registration's Application ID URI).
    #[arg(long)]
    pub(crate) audience: Option<String>,
    /// ms-dke: the token issuer's JWK set (default: Entra ID's).
    #[arg(long)]
    pub(crate) jwks_url: Option<String>,
    /// ms-dke: a PEM file with the CA the JWK set's server must chain to
    /// (default: the system's CAs).
    #[arg(long)]
    pub(crate) jwks_ca: Option<std::path::PathBuf>,
    /// ms-dke: a user who may decrypt (alice@contoso.com), or a whole
    /// domain (@contoso.com); repeat as needed.
    #[arg(long)]
    pub(crate) allow: Vec<String>,
    /// ms-dke: a group or app role (the token's groups or roles claim)
    /// whose members may decrypt; repeat as needed.
    #[arg(long)]
    pub(crate) allow_group: Vec<String>,
    /// ms-dke: days Office may cache a public key (default 1; 0: never).
    #[arg(long)]
    pub(crate) cache_days: Option<u32>,
    /// google-cse: the KACLS URL exactly as entered in the Google Admin
    /// console (https://cse.example.com/cse).
    #[arg(long)]
    pub(crate) kacls_url: Option<String>,
    /// google-cse: the store's AES-256 key that wraps the data keys.
    #[arg(long)]
    pub(crate) kek: Option<String>,
    /// google-cse: where Google's authorization keys are fetched (default
    /// https://www.googleapis.com/service_accounts/v1/jwk/<issuer>).
    #[arg(long)]
    pub(crate) authz_jwks_url: Option<String>,
    /// google-cse: a PEM file with the CA of --authz-jwks-url's server.
    #[arg(long)]
    pub(crate) authz_jwks_ca: Option<std::path::PathBuf>,
    /// google-cse: a users' domain inside the perimeter (repeat; none: any).
    #[arg(long)]
    pub(crate) allow_domain: Vec<String>,
    /// google-cse: let guests (google-visitor, customer-idp) in.
    #[arg(long)]
    pub(crate) allow_guests: bool,
    /// google-cse: a user (or @domain) who may call privilegedwrap and
    /// privilegedunwrap (bulk import, Takeout); repeat as needed.
    #[arg(long)]
    pub(crate) privileged: Vec<String>,
    /// google-cse: a KACLS this one migrates keys with (its KACLS URL);
    /// repeat as needed. Needs --signing-key.
    #[arg(long)]
    pub(crate) migration_peer: Vec<String>,
    /// google-cse: a PEM file with the CA of the peers' HTTPS.
    #[arg(long)]
    pub(crate) peer_ca: Option<std::path::PathBuf>,
    /// google-cse: the store's RSA key (usage SIGN,VERIFY) that signs this
    /// KACLS's tokens (published at KACLS_URL/certs).
    #[arg(long)]
    pub(crate) signing_key: Option<String>,
}

impl AzureArgs {
    /// The admin API's body for `api`.
    pub(crate) fn body(&self, api: &str) -> Result<serde_json::Value, String> {
        let pem = match &self.client_ca {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("--client-ca {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let mut v = serde_json::json!({ "api": api });
        if let Some(p) = &self.path_prefix {
            v["path_prefix"] = p.clone().into();
        }
        if let Some(c) = &self.client_cn {
            v["client_cn"] = c.clone().into();
        }
        if let Some(p) = pem {
            v["client_ca_pem"] = p.into();
        }
        let issuers: Vec<String> = self
            .tenant
            .iter()
            .map(|t| format!("https://sts.windows.net/{}/", t.trim_matches('/')))
            .chain(self.issuer.iter().cloned())
            .collect();
        if !issuers.is_empty() {
            v["issuers"] = issuers.into();
        }
        if let Some(a) = &self.audience {
            v["audience"] = a.clone().into();
        }
        if let Some(u) = &self.jwks_url {
            v["jwks_url"] = u.clone().into();
        }
        if let Some(p) = &self.jwks_ca {
            v["jwks_ca_pem"] = std::fs::read_to_string(p)
                .map_err(|e| format!("--jwks-ca {}: {e}", p.display()))?
                .into();
        }
        if !self.allow.is_empty() {
            v["authorized_emails"] = self.allow.clone().into();
        }
        if !self.allow_group.is_empty() {
            v["authorized_groups"] = self.allow_group.clone().into();
        }
        if let Some(d) = self.cache_days {
            v["cache_days"] = d.into();
        }
        if let Some(u) = &self.kacls_url {
            v["kacls_url"] = u.clone().into();
        }
        if let Some(k) = &self.kek {
            v["kek"] = k.clone().into();
        }
        if let Some(u) = &self.authz_jwks_url {
            v["authz_jwks_url"] = u.clone().into();
        }
        if let Some(p) = &self.authz_jwks_ca {
            v["authz_jwks_ca_pem"] = std::fs::read_to_string(p)
                .map_err(|e| format!("--authz-jwks-ca {}: {e}", p.display()))?
                .into();
        }
        if !self.allow_domain.is_empty() {
            v["allowed_domains"] = self.allow_domain.clone().into();
        }
        if self.allow_guests {
            v["allow_guests"] = true.into();
        }
        if !self.privileged.is_empty() {
            v["privileged_users"] = self.privileged.clone().into();
        }
        if !self.migration_peer.is_empty() {
            v["migration_peers"] = self.migration_peer.clone().into();
        }
        if let Some(p) = &self.peer_ca {
            v["peer_ca_pem"] = std::fs::read_to_string(p)
                .map_err(|e| format!("--peer-ca {}: {e}", p.display()))?
                .into();
        }
        if let Some(k) = &self.signing_key {
            v["signing_key"] = k.clone().into();
        }
        Ok(v)
    }
}

#[derive(Subcommand)]
pub(crate) enum CredentialCmd {
    /// Generate a credential; the secret is printed once and cannot be shown again.
    Add { prefix: String },
    /// Remove a credential (takes effect without restart).
    Remove {
        prefix: String,
        access_key_id: String,
    },
    /// List credential ids (never secrets).
    List { prefix: String },
}

#[derive(Subcommand)]
pub(crate) enum KeyCmd {
    /// Create a key in a store: AES-256 (what XKS serves), or a key pair.
    Create {
        prefix: String,
        /// External key id (default: a random UUID).
        key_id: Option<String>,
        /// aes-256 (default), rsa-2048, rsa-3072, rsa-4096, ec-p256,
        /// ec-p384, ec-p521 or ed25519. XKS serves AES-256 keys only.
        #[arg(long = "type", default_value = "aes-256")]
        key_type: String,
        /// ENCRYPT, DECRYPT, SIGN, VERIFY (comma-separated) or NONE. Default:
        /// ENCRYPT,DECRYPT for AES-256, SIGN,VERIFY for EC and Ed25519; an
        /// RSA key needs it (ENCRYPT,DECRYPT for RSA-OAEP, or SIGN,VERIFY).
        #[arg(long)]
        usage: Option<String>,
        /// Create this many keys (ids: KEY_ID-000001…, or random).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Where the key lives: `software` (wrapped under the root of trust,
        /// used in memory) or `hsm` (generated in the HSM, used there, never leaves it).
        #[arg(long, default_value = "software", value_parser = ["software", "hsm"])]
        protection: String,
        /// PKCS#11 label for an HSM key (default keyhold:<prefix>:<key id>).
        #[arg(long, requires = "protection")]
        hsm_label: Option<String>,
        #[command(flatten)]
        lifecycle: crate::lifecycle_cmd::CreateLifecycle,
    },
    /// Adopt a key that already exists in the HSM (e.g. from another XKS
    /// proxy): an AES-256 key, or a key pair (RSA, EC, Ed25519).
    ImportHsm {
        prefix: String,
        /// The key's PKCS#11 label in the HSM (a pair: both halves').
        #[arg(long)]
        label: String,
        /// External key id (default: the label).
        #[arg(long)]
        key_id: Option<String>,
        /// Default: ENCRYPT,DECRYPT for AES, SIGN,VERIFY for EC and
        /// Ed25519; an RSA pair needs it.
        #[arg(long)]
        usage: Option<String>,
    },
    /// List keys of a store.
    List {
        prefix: String,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Start after this key id (paging).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one key.
    Show { prefix: String, key_id: String },
    /// Print a key pair's public key (PEM, SubjectPublicKeyInfo).
    PublicKey {
        prefix: String,
        key_id: String,
        /// The key version (default: the current one).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Allow the key to be used again.
    Enable { prefix: String, key_id: String },
    /// Refuse encrypt and decrypt with this key (InvalidStateException).
    Disable { prefix: String, key_id: String },
    /// Add a new version of key material; encrypt uses it, decrypt still reads older versions.
    Rotate { prefix: String, key_id: String },
    /// Change which operations the key allows.
    SetUsage {
        prefix: String,
        key_id: String,
        #[arg(long)]
        usage: String,
    },
    #[command(flatten)]
    Lifecycle(crate::lifecycle_cmd::LifecycleCmd),
}

/// An error as the CLI prints it.
pub(crate) fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

pub(crate) fn prefix(s: &str) -> Result<StorePrefix, String> {
    StorePrefix::parse(s).map_err(e)
}

pub(crate) fn key_id(s: &str) -> Result<KeyId, String> {
    KeyId::parse(s).map_err(e)
}

/// Where a new node's keys live, and the root of trust it shares.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct JoinArgs {
    /// Keep keys in this PostgreSQL database (shared by every node that
    /// names it) instead of SQLite in the data directory. Several hosts may
    /// be listed (postgres://u@h1,h2/db?target_session_attrs=read-write).
    #[arg(long)]
    pub storage_url: Option<String>,
    /// CA certificate (PEM) of the database server: TLS to the database.
    #[arg(long, requires = "storage_url")]
    pub storage_tls_ca: Option<PathBuf>,
    /// Use a copy of this software root of trust (another node's root.key,
    /// or the escrowed one) instead of making a new one.
    #[arg(long)]
    pub root_key: Option<PathBuf>,
}

impl JoinArgs {
    pub(crate) fn storage(&self) -> keyhold_server::config::StorageSection {
        keyhold_server::config::StorageSection {
            url: self.storage_url.clone(),
            tls_ca: self
                .storage_tls_ca
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
            ..Default::default()
        }
    }
}

/// The `[storage]` table of a new config file (empty for SQLite).
fn storage_toml(s: &keyhold_server::config::StorageSection) -> String {
    let Some(url) = &s.url else {
        return String::new();
    };
    let quote = |v: &str| toml::Value::String(v.to_owned()).to_string();
    let mut t = format!("\n[storage]\nurl = {}\n", quote(url));
    if let Some(ca) = &s.tls_ca {
        t.push_str(&format!("tls_ca = {}\n", quote(&ca.to_string_lossy())));
    }
    t
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn init(
    dd: &DataDir,
    pass: Option<&SecretString>,
    hsm: Option<&Pkcs11Config>,
    root_key: Option<&std::path::Path>,
    listen: &str,
    tls: &TlsChoice<'_>,
    as_json: bool,
) -> Result<(), String> {
    let made = NewDir::begin(&dd.path);
    create_node(dd, pass, hsm, root_key, listen, tls)?;
    made.keep();
    let ca = dd.tls_dir().join("ca.pem");
    if as_json {
        output::json(&json!({
            "data_dir": dd.path,
            "config": dd.config(),
            "ca_certificate": ca,
            "sealed": pass.is_some(),
            "hsm": hsm.is_some(),
        }));
    } else {
        outln!("Initialised {}", dd.path.display());
        match hsm {
            Some(cfg) => outln!(
                "  root of trust: key {:?} in HSM token {} (settings in {}; the PIN is never written there)",
                cfg.kek_label,
                cfg.token_label
                    .as_deref()
                    .map(|l| format!("{l:?}"))
                    .unwrap_or_else(|| "(by serial)".into()),
                dd.pkcs11_root().display()
            ),
            None => outln!(
                "  root of trust: {} ({})",
                dd.root().display(),
                if pass.is_some() {
                    "sealed with a passphrase"
                } else {
                    "plain: protect this file"
                }
            ),
        }
        match &dd.storage.url {
            Some(_) => outln!("  database:      PostgreSQL (see [storage] in the config)"),
            None => outln!("  database:      {}", dd.db().display()),
        }
        outln!("  config:        {}", dd.config().display());
        outln!("  TLS CA:        {} (for curl --cacert)", ca.display());
    }
    Ok(())
}

/// The local TLS certificates a new data directory gets: extra names for
/// the server certificate, and the key type of its CA and certificate.
#[derive(Debug, Default)]
pub(crate) struct TlsChoice<'a> {
    pub names: &'a [String],
    pub key_type: keyhold_server::tls::KeyType,
}

/// What a command that makes a data directory leaves behind when it fails
/// part-way (a full disk, a database that refuses, a failed restore):
/// nothing. Whatever it created is removed on drop unless [`NewDir::keep`]
/// was called; a directory that existed before keeps what was in it.
pub(crate) struct NewDir {
    path: std::path::PathBuf,
    existed: Option<std::collections::HashSet<std::ffi::OsString>>,
    keep: bool,
}

impl NewDir {
    pub(crate) fn begin(path: &std::path::Path) -> Self {
        let existed = std::fs::read_dir(path)
            .ok()
            .map(|d| d.flatten().map(|e| e.file_name()).collect());
        Self {
            path: path.to_owned(),
            existed,
            keep: false,
        }
    }

    /// The directory is complete: keep it.
    pub(crate) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for NewDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        match &self.existed {
            None => {
                let _ = std::fs::remove_dir_all(&self.path);
            }
            Some(before) => {
                for e in std::fs::read_dir(&self.path)
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if !before.contains(&e.file_name()) {
                        let p = e.path();
                        let _ = if p.is_dir() {
                            std::fs::remove_dir_all(&p)
                        } else {
                            std::fs::remove_file(&p)
                        };
                    }
                }
            }
        }
    }
}

/// Creates a data directory: root of trust (new, adopted or in an HSM),
/// database, local TLS certificates and the config file.
pub(crate) fn create_node(
    dd: &DataDir,
    pass: Option<&SecretString>,
    hsm: Option<&Pkcs11Config>,
    root_key: Option<&std::path::Path>,
    listen: &str,
    tls: &TlsChoice<'_>,
) -> Result<(), String> {
    let _: std::net::SocketAddr = listen
        .parse()
        .map_err(|err| format!("--listen {listen}: {err}"))?;
    match (hsm, root_key) {
        (Some(cfg), _) => dd.create_with_hsm(cfg).map_err(e)?,
        (None, Some(from)) => dd.adopt_root(from, pass).map_err(e)?,
        (None, None) => dd.create(pass).map_err(e)?,
    };
    let dir = dd.tls_dir();
    create_private_dir(&dir).map_err(e)?;
    let ca = LocalCa::new_with("Keyhold local CA", tls.key_type).map_err(e)?;
    let mut names = vec!["localhost", "127.0.0.1"];
    names.extend(tls.names.iter().map(String::as_str));
    let server = ca.issue_server(&names).map_err(e)?;
    write_file(&dir.join("ca.pem"), ca.cert_pem().as_bytes(), 0o644)?;
    write_file(&dir.join("server.pem"), server.cert_pem.as_bytes(), 0o644)?;
    write_file(&dir.join("server.key"), server.key_pem.as_bytes(), 0o600)?;
    let config = format!(
        "# Keyhold server configuration (see keyhold-server/src/config.rs).\n\
         data_dir = \".\"\n\
         listen = \"{listen}\"\n\
         log_format = \"json\"\n\
         \n\
         [tls]\n\
         cert = \"tls/server.pem\"\n\
         key = \"tls/server.key\"\n\
         # Mutual TLS: both lines, e.g. for AWS KMS in eu-west-1:\n\
         # client_ca = \"tls/client-ca.pem\"\n\
         # client_subject = \"cks.kms.eu-west-1.amazonaws.com\"\n{}",
        storage_toml(&dd.storage)
    );
    write_file(&dd.config(), config.as_bytes(), 0o600)
}

pub(crate) fn write_file(p: &std::path::Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(p)
        .map_err(|err| format!("cannot create {}: {err}", p.display()))?;
    f.write_all(data).map_err(e)?;
    f.sync_all().map_err(e)
}

pub(crate) fn print_keys(ctx: &CommandEnv, keys: &[Key]) {
    let views: Vec<keyhold_server::admin_ops::KeyView> = keys
        .iter()
        .map(keyhold_server::admin_ops::KeyView::of)
        .collect();
    crate::typed::print_keys(ctx.json, &views);
}

pub(crate) fn key(ctx: &CommandEnv, cmd: &KeyCmd) -> Result<(), String> {
    let svc = &ctx.service;
    match cmd {
        // One key is a typed operation; several at once are made here.
        KeyCmd::Create { protection, .. } if protection == "hsm" => {
            return Err("--count is for software keys; create HSM keys one at a time".into())
        }
        KeyCmd::ImportHsm { .. } => return Err(crate::typed::NOT_TYPED.into()),
        KeyCmd::Create {
            prefix: p,
            key_id: id,
            key_type,
            usage,
            count,
            lifecycle,
            ..
        } => {
            let p = prefix(p)?;
            let usage = usage.as_ref().map(|u| vec![u.clone()]);
            let (key_type, usage) =
                keyhold_server::admin_ops::type_and_usage(&Some(key_type.clone()), &usage)
                    .map_err(|x| x.error)?;
            let lifecycle = lifecycle.lifecycle()?;
            let mut made = Vec::new();
            // Batches of 1000 keys per transaction: 100k keys take seconds, not minutes.
            let mut batch = Vec::with_capacity(1000);
            for i in 0..*count {
                batch.push(match (id, *count) {
                    (Some(id), 1) => key_id(id)?,
                    (Some(id), _) => key_id(&format!("{id}-{:06}", i + 1))?,
                    (None, _) => key_id(&keyhold_crypto::random_uuid().map_err(e)?)?,
                });
                if batch.len() == 1000 || i + 1 == *count {
                    let keys = svc
                        .create_keys_of(&p, &batch, key_type, usage, &lifecycle)
                        .map_err(e)?;
                    made.extend(keys.into_iter().take(1000usize.saturating_sub(made.len())));
                    batch.clear();
                }
            }
            if *count > 1000 && !ctx.json {
                outln!("Created {count} keys; the first 1000:");
            }
            print_keys(ctx, &made);
        }
        KeyCmd::List {
            prefix: p,
            limit,
            after,
        } => {
            let after = after.as_deref().map(key_id).transpose()?;
            let keys = svc
                .list_keys(&prefix(p)?, after.as_ref(), *limit)
                .map_err(e)?;
            print_keys(ctx, &keys);
        }
        KeyCmd::Show { .. }
        | KeyCmd::PublicKey { .. }
        | KeyCmd::Enable { .. }
        | KeyCmd::Disable { .. }
        | KeyCmd::Rotate { .. } => return Err(crate::typed::NOT_TYPED.into()),
        KeyCmd::SetUsage { .. } | KeyCmd::Lifecycle(_) => {
            return Err(crate::typed::NOT_TYPED.into())
        }
    }
    Ok(())
}
