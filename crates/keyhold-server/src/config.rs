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
        let base = path.parent().unwrap_or(Path::new("."));
        if c.data_dir.is_relative() {
            c.data_dir = base.join(&c.data_dir);
        }
        let dd = c.data_dir.clone();
        for p in [&mut c.tls.cert, &mut c.tls.key, &mut c.tls.client_ca]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = dd.join(&*p);
            }
        }
        Ok(c)
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
