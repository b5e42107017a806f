//! The PKCS#11 root's settings, kept in the data directory as
//! `root.pkcs11.toml` so that the server and the admin CLI open the same root.
//! The PIN itself is never in this file: only where to read it from.

use keyhold_core::{Error, Result};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the user PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinSource {
    /// A file holding the PIN (trailing newline ignored); keep it 0600.
    File(PathBuf),
    /// An environment variable holding the PIN.
    Env(String),
}

/// Settings of a PKCS#11 root of trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Token label; with `token_serial`, both must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_serial: Option<String>,
    pub pin: PinSource,
    /// Label of the AES-256 key-encryption key in the token.
    #[serde(default = "default_kek_label")]
    pub kek_label: String,
    /// Hard maximum of open sessions (real HSMs allow few).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// How long a request may wait for a free session, in milliseconds.
    #[serde(default = "default_session_wait_ms")]
    pub session_wait_ms: u64,
    /// Keep sessions open between requests (the default). `false` opens,
    /// logs in and closes a session for every operation: the naive baseline,
    /// for benchmarks only.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub reuse_sessions: bool,
    /// Further tokens holding the same KEK (an HSM cluster's other members,
    /// or a second slot), used in order when the ones before them fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<FailoverToken>,
    /// KEKs replaced by `keyhold root rotate`, kept in the token (and
    /// reserved: never adopted or destroyed as a customer key) until
    /// `keyhold root destroy-retired` destroys them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_kek_labels: Vec<String>,
}

/// A failover token: another token with the same KEK (and the same labels
/// for HSM-resident keys). Unset fields are taken from the main settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinSource>,
}

fn default_true() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

fn default_kek_label() -> String {
    "keyhold-kek".into()
}
fn default_max_sessions() -> usize {
    8
}
fn default_session_wait_ms() -> u64 {
    200
}

impl Pkcs11Config {
    pub fn new(module: PathBuf, token_label: String, pin: PinSource) -> Self {
        Self {
            module,
            token_label: Some(token_label),
            token_serial: None,
            pin,
            kek_label: default_kek_label(),
            max_sessions: default_max_sessions(),
            session_wait_ms: default_session_wait_ms(),
            reuse_sessions: true,
            failover: Vec::new(),
            retired_kek_labels: Vec::new(),
        }
    }

    /// The settings of each token, main one first; none has failovers.
    pub fn tokens(&self) -> Vec<Pkcs11Config> {
        let mut main = self.clone();
        main.failover.clear();
        let mut out = vec![main.clone()];
        for f in &self.failover {
            out.push(Pkcs11Config {
                module: f.module.clone().unwrap_or_else(|| main.module.clone()),
                token_label: f.token_label.clone(),
                token_serial: f.token_serial.clone(),
                pin: f.pin.clone().unwrap_or_else(|| main.pin.clone()),
                ..main.clone()
            });
        }
        out
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::RootOfTrust(format!("cannot read {}: {e}", path.display())))?;
        let c: Self = toml::from_str(&text)
            .map_err(|e| Error::RootOfTrust(format!("invalid {}: {e}", path.display())))?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        if self.token_label.is_none() && self.token_serial.is_none() {
            return Err(Error::invalid(
                "PKCS#11 configuration",
                "name the token by token_label or token_serial",
            ));
        }
        if self
            .failover
            .iter()
            .any(|f| f.token_label.is_none() && f.token_serial.is_none())
        {
            return Err(Error::invalid(
                "PKCS#11 configuration",
                "name each failover token by token_label or token_serial",
            ));
        }
        if self.max_sessions == 0 {
            return Err(Error::invalid(
                "PKCS#11 configuration",
                "max_sessions must be at least 1",
            ));
        }
        if self.kek_label.is_empty() {
            return Err(Error::invalid(
                "PKCS#11 configuration",
                "kek_label must not be empty",
            ));
        }
        Ok(())
    }

    /// Reads the PIN from its source.
    pub fn read_pin(&self) -> Result<SecretString> {
        match &self.pin {
            PinSource::Env(var) => std::env::var(var)
                .map(SecretString::from)
                .map_err(|_| Error::RootOfTrust(format!("the HSM PIN variable {var} is not set"))),
            PinSource::File(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    Error::RootOfTrust(format!("cannot read the HSM PIN file {}: {e}", p.display()))
                })?;
                Ok(SecretString::from(
                    text.trim_end_matches(['\r', '\n']).to_owned(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let c = Pkcs11Config::new("/m.so".into(), "tok".into(), PinSource::Env("PIN".into()));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.toml");
        std::fs::write(&p, c.to_toml()).unwrap();
        assert_eq!(Pkcs11Config::load(&p).unwrap(), c);
        assert!(!c.to_toml().contains("1234"));
        std::fs::write(&p, "module = \"/m.so\"\npin = { env = \"X\" }\n").unwrap();
        assert!(Pkcs11Config::load(&p).is_err(), "a token must be named");
        std::fs::write(
            &p,
            "module = \"/m.so\"\ntoken_label = \"t\"\npin = { file = \"/p\" }\nmax_sessions = 2\n",
        )
        .unwrap();
        assert_eq!(Pkcs11Config::load(&p).unwrap().max_sessions, 2);
    }

    #[test]
    fn failover_tokens_inherit_the_main_settings() {
        let mut c = Pkcs11Config::new("/m.so".into(), "a".into(), PinSource::Env("PIN".into()));
        c.max_sessions = 3;
        c.failover.push(FailoverToken {
            module: Some("/other.so".into()),
            token_label: Some("b".into()),
            token_serial: None,
            pin: None,
        });
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.toml");
        std::fs::write(&p, c.to_toml()).unwrap();
        assert_eq!(Pkcs11Config::load(&p).unwrap(), c);
        let t = c.tokens();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].module, PathBuf::from("/other.so"));
        assert_eq!(t[1].token_label.as_deref(), Some("b"));
        assert_eq!(t[1].pin, c.pin);
        assert_eq!(t[1].max_sessions, 3);
        assert!(t.iter().all(|t| t.failover.is_empty()));
        std::fs::write(
            &p,
            "module = \"/m.so\"\ntoken_label = \"t\"\npin = { env = \"X\" }\n[[failover]]\nmodule = \"/n.so\"\n",
        )
        .unwrap();
        assert!(
            Pkcs11Config::load(&p).is_err(),
            "a failover token must be named"
        );
    }
}
