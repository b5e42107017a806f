//! Which cloud API serves a key store.
//!
//! A key store serves AWS XKS (SigV4 credentials) unless a custodian binds
//! it to another front-end: today the Azure Managed HSM external key
//! manager (EKM) proxy API, with the URL path prefix Managed HSM calls
//! and the client certificate it must present (subject common name and
//! issuing CAs). The binding is a `meta` entry `store-api:<prefix>`
//! holding a sealed list (see [`crate::integrity`]) of one JSON item: a
//! binding changed in storage does not verify and the store then serves
//! nothing; every node reads the same bindings, and a change reaches each
//! server on its next refresh (the CA list too: no restart).

use crate::KeyService;
use keyhold_core::{Error, Result, StorePrefix};
use keyhold_storage::ChangeScope;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub(crate) const STORE_API_META_PREFIX: &str = "store-api:";

/// The front-end that serves a key store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "api", rename_all = "kebab-case")]
pub enum StoreApi {
    /// AWS KMS External Key Store proxy API (the default).
    Xks,
    /// Azure Managed HSM external key manager proxy API.
    AzureEkm(AzureEkmBinding),
    /// Microsoft Purview Double Key Encryption.
    MsDke(DkeBinding),
    /// Google Workspace client-side encryption key service (KACLS).
    GoogleCse(CseBinding),
}

impl StoreApi {
    /// The name used by the CLI and the admin API.
    pub fn name(&self) -> &'static str {
        match self {
            StoreApi::Xks => "xks",
            StoreApi::AzureEkm(_) => "azure-ekm",
            StoreApi::MsDke(_) => "ms-dke",
            StoreApi::GoogleCse(_) => "google-cse",
        }
    }

    /// The listener it is served on and its path prefix there (two stores
    /// may not share one).
    pub fn place(&self) -> Option<(&'static str, &str)> {
        match self {
            StoreApi::Xks => None,
            StoreApi::AzureEkm(b) => Some(("azure-ekm", &b.path_prefix)),
            StoreApi::MsDke(b) => Some(("hyok", &b.path_prefix)),
            StoreApi::GoogleCse(b) => Some(("hyok", &b.path_prefix)),
        }
    }
}

/// How Microsoft Office (Double Key Encryption) reaches a key store: the
/// keys are published at `https://HOST{path_prefix}/{key}` and decrypt at
/// `…/{key}/{version}/decrypt` for users whose Entra ID token is good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkeBinding {
    /// The URL path before the key name (`/dke`, or empty).
    pub path_prefix: String,
    /// Accepted token issuers: `https://sts.windows.net/<tenant id>/`.
    pub issuers: Vec<String>,
    /// The token audience: the DKE app's Application ID URI, which is the
    /// service's own `https://HOST`.
    pub audience: String,
    /// Entra ID's JWK set (`https://login.microsoftonline.com/common/discovery/v2.0/keys`).
    pub jwks_url: String,
    /// The CA (PEM) the JWK set's server must chain to (absent: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_ca_pem: Option<String>,
    /// Who may decrypt: addresses (any case), or `@domain` for a domain.
    #[serde(default)]
    pub authorized_emails: Vec<String>,
    /// … or members of these groups or app roles (the token's `groups` or
    /// `roles` claim).
    #[serde(default)]
    pub authorized_groups: Vec<String>,
    /// Days Office may cache a public key (`cache.exp`); 0: not cached.
    #[serde(default = "default_cache_days")]
    pub cache_days: u32,
}

fn default_cache_days() -> u32 {
    1
}

/// The issuers of Google's authorization tokens (Drive, Meet, Calendar,
/// Gmail, and KACLS migration); their keys are at
/// `https://www.googleapis.com/service_accounts/v1/jwk/<issuer>`.
pub const GOOGLE_AUTHZ_ISSUERS: [&str; 5] = [
    "gsuitecse-tokenissuer-drive@system.gserviceaccount.com",
    "gsuitecse-tokenissuer-meet@system.gserviceaccount.com",
    "gsuitecse-tokenissuer-calendar@system.gserviceaccount.com",
    "gsuitecse-tokenissuer-gmail@system.gserviceaccount.com",
    "apps-security-cse-kaclscommunication@system.gserviceaccount.com",
];

/// How Google Workspace's clients reach a key store as its key access
/// control list service (KACLS): `{kacls_url}/wrap`, `/unwrap`, … with two
/// tokens in each body, the user's (from the customer's identity provider)
/// and Google's authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CseBinding {
    /// The URL path of the KACLS on the listener (`/cse`, or empty).
    pub path_prefix: String,
    /// The KACLS URL exactly as entered in the Google Admin console
    /// (`https://cse.example.com/cse`): authorization tokens must name it.
    pub kacls_url: String,
    /// The AES-256 key of this store that wraps the data keys (its newest
    /// version wraps; every version unwraps what it wrapped).
    pub kek: String,
    /// The identity provider's accepted `iss` values.
    pub idp_issuers: Vec<String>,
    /// … its accepted `aud` values (the client ids).
    pub idp_audiences: Vec<String>,
    /// … and its JWK set.
    pub idp_jwks_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_jwks_ca_pem: Option<String>,
    /// Where Google's authorization keys are fetched from instead of
    /// `https://www.googleapis.com/service_accounts/v1/jwk/<issuer>` (a
    /// mirror, or a test's identity provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz_jwks_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz_jwks_ca_pem: Option<String>,
    /// The perimeter: users' address domains allowed (empty: any).
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Guests (`email_type` google-visitor or customer-idp) are refused
    /// unless this is set.
    #[serde(default)]
    pub allow_guests: bool,
    /// Who may call privilegedwrap and privilegedunwrap (bulk import,
    /// Takeout): addresses, or `@domain`.
    #[serde(default)]
    pub privileged_users: Vec<String>,
    /// The KACLS this one migrates keys with (their KACLS URLs): the only
    /// `original_kacls_url` a rewrap calls, and the only issuers of KACLS
    /// tokens privilegedunwrap accepts (keys at `{url}/certs`).
    #[serde(default)]
    pub migration_peers: Vec<String>,
    /// The CA (PEM) the peers' HTTPS must chain to (absent: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_ca_pem: Option<String>,
    /// The RSA key of this store that signs this KACLS's own tokens (for
    /// rewrap), published at `{kacls_url}/certs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
}

/// Whether `email` is one of `list` (any case) or in one of its `@domain`s.
pub fn email_listed(list: &[String], email: &str) -> bool {
    let email = email.trim().to_ascii_lowercase();
    let domain = email.rsplit_once('@').map(|(_, d)| d);
    list.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        match a.strip_prefix('@') {
            Some(d) => domain == Some(d),
            None => a == email,
        }
    })
}

impl CseBinding {
    pub fn validate(&self) -> Result<()> {
        check_path_prefix(&self.path_prefix)?;
        check_https("KACLS URL", &self.kacls_url)?;
        keyhold_core::KeyId::parse(&self.kek).map_err(|e| Error::invalid("KEK", e.to_string()))?;
        if self.idp_issuers.is_empty() || self.idp_audiences.is_empty() {
            return Err(Error::invalid(
                "identity provider",
                "name the identity provider's issuer and audience (client id) of its tokens",
            ));
        }
        check_https("identity provider JWK set URL", &self.idp_jwks_url)?;
        if let Some(u) = &self.authz_jwks_url {
            check_https("authorization JWK set URL", u)?;
        }
        for p in [&self.idp_jwks_ca_pem, &self.authz_jwks_ca_pem]
            .into_iter()
            .flatten()
        {
            if !p.contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::invalid("JWK set CA", "PEM certificates"));
            }
        }
        Ok(())
    }
}

/// A URL path prefix a cloud calls: empty, or `/` then at most 63 of
/// `A-Z a-z 0-9 / -` without empty segments.
fn check_path_prefix(p: &str) -> Result<()> {
    if !p.is_empty()
        && (!p.starts_with('/')
            || p.len() > 64
            || p.ends_with('/')
            || p.contains("//")
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-'))
    {
        return Err(Error::invalid(
            "path prefix",
            format!(
                "{p:?}: at most 64 characters of A-Z a-z 0-9 / -, starting with / (like /contoso/prod), or empty"
            ),
        ));
    }
    Ok(())
}

fn check_https(what: &'static str, url: &str) -> Result<()> {
    let rest = url.strip_prefix("https://").unwrap_or_default();
    if rest.is_empty() || rest.starts_with('/') || url.chars().any(|c| c.is_whitespace()) {
        return Err(Error::invalid(
            what,
            format!("{url:?} is not an https:// URL"),
        ));
    }
    Ok(())
}

impl DkeBinding {
    pub fn validate(&self) -> Result<()> {
        check_path_prefix(&self.path_prefix)?;
        if self.issuers.is_empty() {
            return Err(Error::invalid(
                "issuer",
                "name the tenant's token issuer: https://sts.windows.net/<tenant id>/",
            ));
        }
        for i in &self.issuers {
            check_https("issuer", i)?;
        }
        check_https("audience", &self.audience)?;
        check_https("JWK set URL", &self.jwks_url)?;
        if self.authorized_emails.is_empty() && self.authorized_groups.is_empty() {
            return Err(Error::invalid(
                "authorization",
                "name who may decrypt: users (alice@contoso.com, or @contoso.com for a domain) or groups",
            ));
        }
        if let Some(p) = &self.jwks_ca_pem {
            if !p.contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::invalid("JWK set CA", "PEM certificates"));
            }
        }
        Ok(())
    }

    /// Whether a user with this address and these groups/roles may decrypt.
    pub fn allows(&self, email: &str, groups: &[String]) -> bool {
        email_listed(&self.authorized_emails, email)
            || groups
                .iter()
                .any(|g| self.authorized_groups.iter().any(|a| a == g))
    }
}

/// How Azure Managed HSM reaches a key store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureEkmBinding {
    /// The EKM connection's path prefix (`/contoso/prod`, or empty): at
    /// most 64 characters of `A-Z a-z 0-9 / -`, starting with `/`.
    pub path_prefix: String,
    /// The subject common name Managed HSM's client certificate carries
    /// (`contoso.managedhsmclient.azure.net`).
    pub client_cn: String,
    /// The CA certificates (PEM) that may issue it: several, so that
    /// Microsoft can rotate.
    pub client_ca_pem: String,
}

impl AzureEkmBinding {
    /// Checks the prefix and the common name (the CA certificates are
    /// parsed by the server, which knows X.509).
    pub fn validate(&self) -> Result<()> {
        check_path_prefix(&self.path_prefix)?;
        let cn = &self.client_cn;
        if cn.is_empty() || cn.len() > 253 || cn.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::invalid(
                "client common name",
                "the subject common name of Managed HSM's client certificate, like contoso.managedhsmclient.azure.net",
            ));
        }
        if !self.client_ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::invalid(
                "client CA",
                "PEM certificates of the CAs that issue Managed HSM's client certificate",
            ));
        }
        Ok(())
    }
}

/// Every key store bound to a front-end other than XKS, as last read.
pub type StoreApis = Arc<Vec<(StorePrefix, StoreApi)>>;

fn meta_name(prefix: &StorePrefix) -> String {
    format!("{STORE_API_META_PREFIX}{}", prefix.as_str())
}

fn sealed_as(prefix: &StorePrefix) -> String {
    format!("front-end of key store {}", prefix.as_str())
}

impl KeyService {
    /// Binds a key store to a front-end (`StoreApi::Xks` removes a
    /// binding). Two Azure stores may not share a path prefix.
    pub fn set_store_api(&self, prefix: &StorePrefix, api: &StoreApi) -> Result<()> {
        self.get_store(prefix)?;
        let name = meta_name(prefix);
        match api {
            StoreApi::Xks => self.storage().set_meta(&name, None)?,
            StoreApi::AzureEkm(_) | StoreApi::MsDke(_) | StoreApi::GoogleCse(_) => {
                match api {
                    StoreApi::AzureEkm(b) => b.validate()?,
                    StoreApi::MsDke(b) => b.validate()?,
                    StoreApi::GoogleCse(b) => {
                        b.validate()?;
                        let k = self.get_key(prefix, &keyhold_core::KeyId::parse(&b.kek)?)?;
                        if k.key_type != keyhold_core::KeyType::Aes256 {
                            return Err(Error::invalid(
                                "KEK",
                                format!(
                                    "key {} is a {} key: the KEK is an AES-256 key",
                                    b.kek,
                                    k.key_type.short()
                                ),
                            ));
                        }
                    }
                    StoreApi::Xks => {}
                }
                let place = api.place();
                if let Some((other, a)) = self
                    .read_store_apis()?
                    .iter()
                    .find(|(p, a)| p != prefix && a.place() == place)
                {
                    return Err(Error::Conflict(format!(
                        "key store {} already serves {} at path prefix {:?}",
                        other.display(),
                        a.name(),
                        place.map_or("", |p| p.1)
                    )));
                }
                let item =
                    serde_json::to_string(api).map_err(|e| Error::Internal(e.to_string()))?;
                let v = self.row_key.seal_list(&sealed_as(prefix), &[item]);
                self.storage().set_meta(&name, Some(&v))?;
            }
        }
        self.after_write(ChangeScope::Meta(name));
        Ok(())
    }

    /// The front-end serving a key store (XKS unless bound to another).
    /// A binding that does not verify is an integrity error: the store
    /// serves nothing.
    pub fn store_api(&self, prefix: &StorePrefix) -> Result<StoreApi> {
        let Some(v) = self.storage().get_meta(&meta_name(prefix))? else {
            return Ok(StoreApi::Xks);
        };
        self.open_binding(prefix, &v)
    }

    fn open_binding(&self, prefix: &StorePrefix, v: &[u8]) -> Result<StoreApi> {
        let bad = || {
            self.row_key.report(&format!(
                "the front-end binding of key store {}",
                prefix.as_str()
            ));
            Error::Integrity(format!(
                "the front-end binding of key store {} does not verify",
                prefix.display()
            ))
        };
        let items = self
            .row_key
            .open_list(&sealed_as(prefix), v)
            .ok_or_else(bad)?;
        match items.as_slice() {
            [one] => serde_json::from_str(one).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    /// Reads every binding from storage (the ones that do not verify are
    /// reported and left out: their stores serve nothing).
    fn read_store_apis(&self) -> Result<Vec<(StorePrefix, StoreApi)>> {
        let mut out = Vec::new();
        for (name, v) in self.storage().list_meta(STORE_API_META_PREFIX)? {
            let Some(p) = name
                .strip_prefix(STORE_API_META_PREFIX)
                .and_then(|p| StorePrefix::parse(p).ok())
            else {
                continue;
            };
            if let Ok(api) = self.open_binding(&p, &v) {
                out.push((p, api));
            }
        }
        Ok(out)
    }

    /// Every store bound to a front-end other than XKS, as this server
    /// last read them (at start and after each change): the request path
    /// reads this, never storage.
    pub fn store_apis(&self) -> StoreApis {
        self.store_apis.read().clone()
    }

    /// Reads the bindings again (at start, and after changes).
    pub(crate) fn load_store_apis(&self) {
        match self.read_store_apis() {
            Ok(v) => *self.store_apis.write() = Arc::new(v),
            Err(e) => tracing::warn!(error = %e, "cannot read the key stores' front-end bindings"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(prefix: &str) -> AzureEkmBinding {
        AzureEkmBinding {
            path_prefix: prefix.into(),
            client_cn: "c.managedhsmclient.azure.net".into(),
            client_ca_pem: "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n".into(),
        }
    }

    #[test]
    fn path_prefixes_are_checked() {
        for ok in [
            "",
            "/a",
            "/contoso/prod",
            "/a-b/C9",
            &format!("/{}", "a".repeat(63)),
        ] {
            assert!(binding(ok).validate().is_ok(), "{ok}");
        }
        for bad in [
            "a",
            "/",
            "/a/",
            "//a",
            "/a_b",
            "/a.b",
            "/a b",
            &format!("/{}", "a".repeat(64)),
        ] {
            assert!(binding(bad).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn bindings_are_sealed_listed_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let root = keyhold_root::SoftwareRoot::create(&dir.path().join("root.key"), None).unwrap();
        let st = Arc::new(keyhold_storage::SqliteStorage::open(&dir.path().join("k.db")).unwrap());
        let s = KeyService::open(st.clone(), Arc::new(root)).unwrap();
        let a = StorePrefix::parse("/a").unwrap();
        let b = StorePrefix::parse("/b").unwrap();
        s.create_store(&a, "").unwrap();
        s.create_store(&b, "").unwrap();
        assert_eq!(s.store_api(&a).unwrap(), StoreApi::Xks);
        let api = StoreApi::AzureEkm(binding("/t1"));
        s.set_store_api(&a, &api).unwrap();
        assert_eq!(s.store_api(&a).unwrap(), api);
        assert_eq!(s.store_apis().as_slice(), &[(a.clone(), api.clone())]);
        // Another store at the same prefix: refused.
        assert!(matches!(s.set_store_api(&b, &api), Err(Error::Conflict(_))));
        // A binding moved to another store does not verify there.
        use keyhold_storage::MetaStore;
        let v = st.get_meta("store-api:/a").unwrap().unwrap();
        st.set_meta("store-api:/b", Some(&v)).unwrap();
        assert!(matches!(s.store_api(&b), Err(Error::Integrity(_))));
        s.refresh().unwrap();
        s.load_store_apis();
        assert_eq!(s.store_apis().len(), 1);
        // Back to XKS.
        s.set_store_api(&a, &StoreApi::Xks).unwrap();
        assert_eq!(s.store_api(&a).unwrap(), StoreApi::Xks);
        assert!(s.store_apis().is_empty());
    }
}
