//! The server configuration file (TOML).
//!
//! ```toml
//! data_dir = "/var/lib/keyhold"       # keyhold.db and root.key live here
//! listen = "127.0.0.1:8443"
//! insecure_http = false               # plain HTTP: local testing only
//! log_format = "json"                 # or "text"
//!
//! [tls]
//! cert = "tls/server.pem"             # relative paths: from the data dir
//! key = "tls/server.key"
//! client_ca = "tls/client-ca.pem"     # optional: turns on mutual TLS
//! client_subject = "cks.kms.eu-west-1.amazonaws.com"   # required with client_ca
//!
//! [xks]
//! max_body_bytes = 262144
//! fleet_size = 1
//! store_quota_rps = 1800              # optional, per key store
//! hsm_timeout_ms = 2000               # answer 503 when the HSM takes longer
//! max_connections = 4096              # open connections at most (over it: closed at once)
//! max_connections_per_address = 256   # from one source address
//! request_timeout_ms = 10000          # headers, and then the whole body, within this
//!                                     # (also how long HTTP/1.1 keep-alive waits for the next request)
//! idle_timeout_ms = 60000             # any connection quiet this long closes (HTTP/2)
//! http2_max_streams = 32              # concurrent requests on one HTTP/2 connection
//! body_pool_mb = 8                    # memory for bodies beyond 16 KiB each, shared
//!
//! [azure_ekm]                        # the Azure Managed HSM EKM proxy API; off when absent
//! listen = "0.0.0.0:443"              # TLS 1.3 only; Managed HSM calls port 443
//! cert = "tls/ekm.pem"                # default: the [tls] pair
//! key = "tls/ekm.key"
//! hsm_timeout_ms = 200                # answer 408 when the HSM or database takes longer
//! max_body_bytes = 16384
//!
//! [hyok]                             # Microsoft DKE (end users' apps, bearer tokens); off when absent
//! listen = "0.0.0.0:443"
//! cert = "tls/public.pem"             # default: the [tls] pair (a publicly trusted one is needed)
//! key = "tls/public.key"
//!
//! [metrics]
//! listen = "127.0.0.1:9464"           # Prometheus GET /metrics (plain HTTP); off when absent
//! require_token = false               # true: scrapes need an admin token (any role)
//!
//! [admin]
//! listen = "127.0.0.1:8444"           # the admin API and the web console (/ui/); off when absent
//! console_idle_timeout_s = 900        # a console session unused this long is over
//!
//! [audit]
//! dir = "audit"                       # MAC-chained records (relative: data dir)
//! checkpoint_file = "/mnt/other/keyhold-checkpoints.jsonl"  # optional 2nd anchor
//! checkpoint_syslog = "/dev/log"      # optional: checkpoints also to syslog (a Unix datagram socket)
//! max_file_mb = 64                    # rotate files at this size
//! max_files = 256                     # retention (older files removed, marked)
//! timeout_ms = 1000                   # a request fails if its record is not written in time
//! min_free_mb = 256                   # low-disk alarm below this
//! checkpoint_interval_ms = 10000      # signed checkpoints at least this often
//! offbox_checkpoint_interval_ms = 1000 # ... and this often with checkpoint_file/_syslog
//! enabled = true                      # false only to measure what auditing costs
//!
//! [storage]                           # absent: SQLite in the data dir
//! url = "postgres://keyhold@db1,db2/keyhold?target_session_attrs=read-write"
//! tls_ca = "db-ca.pem"                # TLS to the database, verified by this CA
//! pool_size = 16
//! op_timeout_ms = 5000                # longest wait for one database call
//! cache_ttl_ms = 60000                # caches dropped at least this often
//! lease_ms = 5000                     # a node serves cached keys this long after its last
//!                                     # heartbeat reached the database; break glass waits
//!                                     # for each node's acknowledgement or this
//! ```

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub insecure_http: bool,
    #[serde(default = "default_log_format")]
    pub log_format: String,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub xks: XksSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub kmip: KmipSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub azure_ekm: AzureSection,
    #[serde(default)]
    pub hyok: HyokSection,
}

/// The listener of the APIs that end users' applications call with bearer
/// tokens (Microsoft DKE); off unless `listen` is set. Which key stores it
/// serves, where and for whom is each store's binding (`keyhold store api`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HyokSection {
    pub listen: Option<SocketAddr>,
    /// Server certificate and key (default: the `[tls]` ones).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Largest request body (default 16 KiB).
    pub max_body_bytes: Option<usize>,
}

/// The Azure EKM listener (off unless `listen` is set). Which key stores
/// it serves, at which path prefix and for which client certificate, is
/// each store's binding (`keyhold store api`), kept in storage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSection {
    /// e.g. "0.0.0.0:443".
    pub listen: Option<SocketAddr>,
    /// Server certificate and key (default: the `[tls]` ones).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Longest wait for the HSM or the database (default 200 ms: Managed
    /// HSM gives a request 250 ms in all).
    pub hsm_timeout_ms: Option<u64>,
    /// Largest request body (default 16 KiB).
    pub max_body_bytes: Option<usize>,
}

/// The admin API (off unless `listen` is set).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// e.g. "127.0.0.1:8444": HTTPS with the server's certificate
    /// (plain HTTP under insecure_http), bearer tokens.
    pub listen: Option<SocketAddr>,
    /// A web console session unused this long is over (default 900 s).
    pub console_idle_timeout_s: Option<u64>,
}

/// Where keys, stores and policies are kept: SQLite in the data dir unless
/// `url` names a PostgreSQL database (shared by several nodes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub url: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub pool_size: Option<usize>,
    pub op_timeout_ms: Option<u64>,
    pub cache_ttl_ms: Option<u64>,
    /// The older name of `lease_ms`.
    pub max_staleness_ms: Option<u64>,
    /// On shared storage: how long a node may serve cached keys after its
    /// last heartbeat reached the database (default 5 s). Break glass waits
    /// for each node's acknowledgement or for its lease to run out.
    pub lease_ms: Option<u64>,
}

/// The lease when none is configured.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(5);

impl StorageSection {
    /// Only the `[storage]` table of a config file (absent: the default).
    /// The admin commands read it from the data dir's `keyhold.toml`.
    pub fn load_from(config_file: &Path) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        struct OnlyStorage {
            #[serde(default)]
            storage: StorageSection,
        }
        let text = match std::fs::read_to_string(config_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: config_file.into(),
                    source,
                })
            }
        };
        let t: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: config_file.into(),
            message: e.to_string(),
        })?;
        let o: OnlyStorage = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: config_file.into(),
                message: e.to_string(),
            })?;
        let mut s = o.storage;
        if let (Some(p), Some(dir)) = (&mut s.tls_ca, config_file.parent()) {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        Ok(s)
    }

    /// The node lease (`lease_ms`, or `max_staleness_ms` as it was called).
    pub fn lease(&self) -> std::time::Duration {
        self.lease_ms
            .or(self.max_staleness_ms)
            .map_or(DEFAULT_LEASE, std::time::Duration::from_millis)
    }

    /// The PostgreSQL settings, defaults filled in.
    pub fn pg_options(&self) -> keyhold_storage::PgOptions {
        let d = keyhold_storage::PgOptions::default();
        let ms = std::time::Duration::from_millis;
        keyhold_storage::PgOptions {
            pool_size: self.pool_size.unwrap_or(d.pool_size),
            op_timeout: self.op_timeout_ms.map_or(d.op_timeout, ms),
            cache_ttl: self.cache_ttl_ms.map_or(d.cache_ttl, ms),
            max_staleness: self.lease(),
            tls_ca: self.tls_ca.clone(),
        }
    }
}

/// The KMIP listener (off unless `listen` is set). Mutual TLS always:
/// clients must present a certificate from `client_ca`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmipSection {
    /// e.g. "127.0.0.1:5696".
    pub listen: Option<SocketAddr>,
    /// Server certificate and key (default: the `[tls]` ones).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// CA of the client certificates (default: `kmip/ca.pem`, the CA that
    /// `keyhold kmip client-cert issue` uses).
    pub client_ca: Option<PathBuf>,
    /// Largest request message accepted, in bytes (default 1 MiB).
    pub max_message_bytes: Option<usize>,
    /// Destroyed objects' attributes are kept this many days (Get
    /// Attributes answers for them meanwhile), then purged; 0 keeps them.
    #[serde(default = "default_destroyed_retention_days")]
    pub destroyed_retention_days: u64,
}

fn default_destroyed_retention_days() -> u64 {
    90
}

impl Default for KmipSection {
    fn default() -> Self {
        Self {
            listen: None,
            cert: None,
            key: None,
            client_ca: None,
            max_message_bytes: None,
            destroyed_retention_days: default_destroyed_retention_days(),
        }
    }
}

/// Where `keyhold kmip client-cert issue` keeps its CA, in the data dir.
pub const KMIP_CA_DIR: &str = "kmip";

/// The Prometheus endpoint (off unless `listen` is set).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// e.g. "127.0.0.1:9464": GET /metrics, plain HTTP.
    pub listen: Option<SocketAddr>,
    /// Scrapes must carry an admin token (`Authorization: Bearer`), of any role.
    #[serde(default)]
    pub require_token: bool,
}

/// The tamper-evident audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_audit_dir")]
    pub dir: PathBuf,
    pub checkpoint_file: Option<PathBuf>,
    /// A syslog socket (e.g. /dev/log) that also receives every checkpoint.
    #[serde(default)]
    pub checkpoint_syslog: Option<PathBuf>,
    #[serde(default = "default_max_file_mb")]
    pub max_file_mb: u64,
    #[serde(default = "default_max_files")]
    pub max_files: usize,
    #[serde(default = "default_audit_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
    /// A signed checkpoint at least this often while records come in.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// With a checkpoint file or syslog configured (off the box), a
    /// checkpoint at least this often while records come in: the longest
    /// that acknowledged records stay uncovered by one that left the box.
    #[serde(default = "default_offbox_checkpoint_interval_ms")]
    pub offbox_checkpoint_interval_ms: u64,
}

fn default_checkpoint_interval_ms() -> u64 {
    10_000
}
fn default_offbox_checkpoint_interval_ms() -> u64 {
    1_000
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: default_audit_dir(),
            checkpoint_file: None,
            checkpoint_syslog: None,
            max_file_mb: default_max_file_mb(),
            max_files: default_max_files(),
            timeout_ms: default_audit_timeout_ms(),
            min_free_mb: default_min_free_mb(),
            checkpoint_interval_ms: default_checkpoint_interval_ms(),
            offbox_checkpoint_interval_ms: default_offbox_checkpoint_interval_ms(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_audit_dir() -> PathBuf {
    "audit".into()
}
fn default_max_file_mb() -> u64 {
    64
}
fn default_max_files() -> usize {
    256
}
fn default_audit_timeout_ms() -> u64 {
    1000
}
fn default_min_free_mb() -> u64 {
    256
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub client_subject: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksSection {
    pub max_body_bytes: Option<usize>,
    pub fleet_size: Option<u32>,
    pub vendor: Option<String>,
    /// Requests per second allowed per key store (ThrottlingException above).
    pub store_quota_rps: Option<u32>,
    /// Longest wait for the HSM in one request, in milliseconds; past it
    /// the request gets DependencyTimeoutException.
    pub hsm_timeout_ms: Option<u64>,
    /// Open connections at most, and from one source address.
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    /// A request's headers, then its whole body, must arrive within this.
    pub request_timeout_ms: Option<u64>,
    /// A connection that moves no byte for this long is closed.
    pub idle_timeout_ms: Option<u64>,
    /// Concurrent requests (streams) on one HTTP/2 connection.
    pub http2_max_streams: Option<u32>,
    /// Memory shared by request bodies beyond their first 16 KiB, in MiB.
    pub body_pool_mb: Option<usize>,
}

impl XksSection {
    /// The listener's connection bounds, defaults filled in.
    pub fn conn_limits(&self) -> crate::conn::ConnLimits {
        crate::conn::ConnLimits {
            max_connections: self.max_connections.unwrap_or(4096).max(1),
            max_per_address: self.max_connections_per_address.unwrap_or(256).max(1),
            idle: std::time::Duration::from_millis(self.idle_timeout_ms.unwrap_or(60_000).max(1)),
        }
    }

    /// How long a request's headers, then its body, may take to arrive.
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.request_timeout_ms.unwrap_or(10_000).max(1))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_log_format() -> String {
    "json".into()
}

impl Config {
    /// Loads a config file; relative paths inside it are taken from the
    /// file's directory (data_dir) or from the data dir (TLS files).
    /// Call [`Config::validate`] after applying command-line overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut c: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        // Resolved to absolute paths once, so that nothing derived from them
        // depends on the directory a later step runs in.
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        c.data_dir =
            std::path::absolute(base.join(&c.data_dir)).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
        let dd = c.data_dir.clone();
        c.resolve_paths(&dd);
        Ok(c)
    }

    /// Makes the TLS and audit paths absolute, relative to the data dir.
    pub fn resolve_paths(&mut self, dd: &Path) {
        for p in [
            &mut self.tls.cert,
            &mut self.tls.key,
            &mut self.tls.client_ca,
            &mut self.audit.checkpoint_file,
            &mut self.kmip.cert,
            &mut self.kmip.key,
            &mut self.kmip.client_ca,
            &mut self.azure_ekm.cert,
            &mut self.azure_ekm.key,
            &mut self.hyok.cert,
            &mut self.hyok.key,
            &mut self.storage.tls_ca,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = dd.join(&*p);
            }
        }
        if self.audit.dir.is_relative() {
            self.audit.dir = dd.join(&self.audit.dir);
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.insecure_http && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key are required (plain HTTP needs insecure_http = true)".into(),
            ));
        }
        if self.tls.client_ca.is_some() != self.tls.client_subject.is_some() {
            return Err(ConfigError::Invalid(
                "mutual TLS needs both tls.client_ca and tls.client_subject".into(),
            ));
        }
        if self.kmip.listen.is_some()
            && (self.kmip.cert.as_ref().or(self.tls.cert.as_ref()).is_none()
                || self.kmip.key.as_ref().or(self.tls.key.as_ref()).is_none())
        {
            return Err(ConfigError::Invalid(
                "the KMIP listener needs kmip.cert and kmip.key (or tls.cert and tls.key)".into(),
            ));
        }
        if self.azure_ekm.listen.is_some()
            && (self
                .azure_ekm
                .cert
                .as_ref()
                .or(self.tls.cert.as_ref())
                .is_none()
                || self
                    .azure_ekm
                    .key
                    .as_ref()
                    .or(self.tls.key.as_ref())
                    .is_none())
        {
            return Err(ConfigError::Invalid(
                "the Azure EKM listener needs azure_ekm.cert and azure_ekm.key (or tls.cert and tls.key): Azure calls over TLS 1.3 only".into(),
            ));
        }
        if self.hyok.listen.is_some()
            && (self.hyok.cert.as_ref().or(self.tls.cert.as_ref()).is_none()
                || self.hyok.key.as_ref().or(self.tls.key.as_ref()).is_none())
        {
            return Err(ConfigError::Invalid(
                "the hold-your-own-key listener needs hyok.cert and hyok.key (or tls.cert and tls.key)".into(),
            ));
        }
        if !matches!(self.log_format.as_str(), "json" | "text") {
            return Err(ConfigError::Invalid(
                "log_format must be json or text".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_resolves_paths() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.toml");
        std::fs::write(
            &p,
            "data_dir = \"data\"\nlisten = \"127.0.0.1:9000\"\n[tls]\ncert = \"tls/s.pem\"\nkey = \"/abs/s.key\"\n",
        )
        .unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.data_dir, d.path().join("data"));
        assert!(c.audit.dir.is_absolute());
        assert_eq!(c.tls.cert.unwrap(), d.path().join("data/tls/s.pem"));
        assert_eq!(c.tls.key.unwrap(), PathBuf::from("/abs/s.key"));
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn rejects_half_mtls_and_missing_tls() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.toml");
        std::fs::write(&p, "data_dir = \"d\"\n").unwrap();
        assert!(Config::load(&p).unwrap().validate().is_err());
        std::fs::write(&p, "data_dir = \"d\"\ninsecure_http = true\n").unwrap();
        assert!(Config::load(&p).unwrap().validate().is_ok());
        std::fs::write(
            &p,
            "data_dir = \"d\"\n[tls]\ncert=\"a\"\nkey=\"b\"\nclient_ca=\"c\"\n",
        )
        .unwrap();
        assert!(Config::load(&p).unwrap().validate().is_err());
        std::fs::write(&p, "data_dir = \"d\"\nbogus = 1\n").unwrap();
        assert!(Config::load(&p).is_err());
    }
}
