//! The KMIP front-end's administration: client certificates (issued from
//! the data directory's KMIP client CA, listed, revoked), grants of
//! objects to other identities, purging destroyed objects, and status.

use std::collections::BTreeMap;
use std::io::Write as _;

use keyhold_core::{AttrValue, ObjectAttr};
use keyhold_service::client_certs::ClientCertRecord;
use keyhold_service::objects::GRANT_ATTR;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{time, AdminOps, InForceView, OpError, OpResult};
use crate::config::KMIP_CA_DIR;
use crate::tls::{KeyType, StoredCa};

/// The common name of the CA that issues KMIP client certificates.
const CA_NAME: &str = "Keyhold KMIP client CA";

/// A client certificate, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClientCertView {
    /// The subject common name: the client's identity (empty: issued elsewhere).
    pub identity: String,
    pub serial: String,
    pub issued_at: String,
    pub not_after: Option<String>,
    pub revoked_at: Option<String>,
    /// valid, expired or revoked.
    pub status: String,
}

/// A client certificate to issue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueClientCert {
    /// The client's identity (subject CN), 1 to 64 printable characters without '/'.
    pub name: String,
    /// Days it is valid (1 to 3650, default 365).
    #[serde(default)]
    pub days: Option<u32>,
    /// `ecdsa` (P-256, default) or `rsa` (3072, for clients without ECDSA).
    #[serde(default)]
    pub key_type: Option<String>,
}

/// A certificate just issued, with its private key (in this answer only).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct IssuedCertView {
    pub identity: String,
    pub serial: String,
    pub not_after: String,
    pub certificate_pem: String,
    pub key_pem: String,
    /// Where the server keeps its KMIP client CA and its TLS CA (paths on the server).
    pub client_ca: String,
    pub server_ca: String,
    /// The server's TLS CA certificate, for the client to trust.
    pub server_ca_pem: Option<String>,
}

impl Drop for IssuedCertView {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key_pem);
    }
}

impl std::fmt::Debug for IssuedCertView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertView")
            .field("identity", &self.identity)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// Certificates revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedCertsView {
    pub revoked: Vec<ClientCertView>,
    pub in_force: InForceView,
}

/// A grant given or taken back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    pub uid: String,
    pub identity: String,
    pub granted: bool,
    /// Whether anything changed (false: it was so already).
    pub changed: bool,
    /// An XKS key (`xks:/STORE/KEY-ID`): its attributes only, never its material.
    pub xks_key: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_force: Option<InForceView>,
}

/// Destroyed objects older than this are purged.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeDestroyed {
    pub older_than_s: i64,
}

/// What a purge removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PurgedView {
    pub purged: Vec<String>,
}

/// KMIP objects by owner, type and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ObjectCount {
    pub owner: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub state: String,
    pub count: u64,
}

/// The KMIP front-end at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KmipStatusView {
    pub objects: usize,
    /// The client CA's certificate (a path on the server), once one was made.
    pub client_ca: Option<String>,
    pub by_owner: Vec<ObjectCount>,
    /// The running listener's counters (only inside a server).
    #[schema(value_type = Option<Object>)]
    pub listener: Option<serde_json::Value>,
}

fn cert_view(r: &ClientCertRecord, now: i64) -> ClientCertView {
    ClientCertView {
        identity: r.name.clone(),
        serial: r.serial.clone(),
        issued_at: time(r.issued_at),
        not_after: (r.not_after != 0).then(|| time(r.not_after)),
        revoked_at: r.revoked_at.map(time),
        status: r.status(now).into(),
    }
}

fn write_new(p: &std::path::Path, data: &[u8], mode: u32) -> OpResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| OpError::new(500, format!("cannot write {}: {e}", p.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(p)
        .map_err(fail)?;
    f.write_all(data).map_err(fail)?;
    f.sync_all().map_err(fail)
}

impl AdminOps {
    /// The data directory's KMIP client CA, made on first use.
    fn client_ca(&self) -> OpResult<StoredCa> {
        let dir = self.data_dir.join(KMIP_CA_DIR);
        crate::data_dir::create_private_dir(&dir)?;
        let key_path = dir.join("ca.key");
        let tls = |e: crate::tls::TlsError| OpError::new(500, e.to_string());
        if key_path.exists() {
            let pem = zeroize::Zeroizing::new(std::fs::read_to_string(&key_path).map_err(|e| {
                OpError::new(500, format!("cannot read {}: {e}", key_path.display()))
            })?);
            return StoredCa::load(CA_NAME, &pem).map_err(tls);
        }
        let (ca, cert_pem, key_pem) = StoredCa::create(CA_NAME).map_err(tls)?;
        let key_pem = zeroize::Zeroizing::new(key_pem);
        write_new(&key_path, key_pem.as_bytes(), 0o600)?;
        write_new(&dir.join("ca.pem"), cert_pem.as_bytes(), 0o644)?;
        Ok(ca)
    }

    pub fn issue_client_cert(&self, req: &IssueClientCert) -> OpResult<IssuedCertView> {
        let name = &req.name;
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(OpError::new(
                400,
                "the client name must be 1 to 64 printable characters without '/'",
            ));
        }
        let days = req.days.unwrap_or(365);
        if !(1..=3650).contains(&days) {
            return Err(OpError::new(400, "days must be 1 to 3650"));
        }
        let key_type = match req.key_type.as_deref().unwrap_or("ecdsa") {
            "ecdsa" => KeyType::Ecdsa,
            "rsa" => KeyType::Rsa,
            other => {
                return Err(OpError::new(
                    400,
                    format!("key type {other:?}: use ecdsa or rsa"),
                ))
            }
        };
        let (mut issued, serial) = self
            .client_ca()?
            .issue_client_for(name, days, key_type)
            .map_err(|e| OpError::new(500, e.to_string()))?;
        let now = keyhold_core::now();
        let not_after = now + i64::from(days) * 86_400;
        self.service.record_client_cert(&ClientCertRecord {
            name: name.clone(),
            serial: serial.clone(),
            not_after,
            issued_at: now,
            revoked_at: None,
        })?;
        let server_ca = self.data_dir.join("tls").join("ca.pem");
        Ok(IssuedCertView {
            identity: name.clone(),
            serial,
            not_after: time(not_after),
            certificate_pem: issued.cert_pem,
            key_pem: std::mem::take(&mut issued.key_pem),
            client_ca: self
                .data_dir
                .join(KMIP_CA_DIR)
                .join("ca.pem")
                .display()
                .to_string(),
            server_ca_pem: std::fs::read_to_string(&server_ca).ok(),
            server_ca: server_ca.display().to_string(),
        })
    }

    pub fn list_client_certs(&self) -> OpResult<Vec<ClientCertView>> {
        let now = keyhold_core::now();
        Ok(self
            .service
            .client_certs()?
            .iter()
            .map(|r| cert_view(r, now))
            .collect())
    }

    /// Revokes by identity (every certificate issued for it) or serial: in
    /// force on every server (refused handshakes, closed connections) when
    /// it returns.
    pub fn revoke_client_certs(&self, name_or_serial: &str) -> OpResult<RevokedCertsView> {
        let revoked = self.service.revoke_client_certs(name_or_serial)?;
        let in_force = self.in_force()?;
        let now = keyhold_core::now();
        Ok(RevokedCertsView {
            revoked: revoked.iter().map(|r| cert_view(r, now)).collect(),
            in_force,
        })
    }

    /// Lets `identity` ("*": every identity) use an object, or takes it back.
    pub fn set_grant(&self, uid: &str, identity: &str, grant: bool) -> OpResult<GrantView> {
        let xks_key = keyhold_kmip::xks_keys::is_xks_uid(uid);
        let changed = if xks_key {
            keyhold_kmip::xks_keys::set_grant(&self.service, uid, identity, grant)?
        } else {
            self.set_object_grant(uid, identity, grant)?
        };
        Ok(GrantView {
            uid: uid.into(),
            identity: identity.into(),
            granted: grant,
            changed,
            xks_key,
            // Running servers cache objects: wait until they see it.
            in_force: if changed {
                Some(self.in_force()?)
            } else {
                None
            },
        })
    }

    fn set_object_grant(&self, uid: &str, identity: &str, grant: bool) -> OpResult<bool> {
        let value = AttrValue::Text(identity.into());
        for _ in 0..5 {
            let mut o = self.service.object(uid)?;
            let has = o
                .attrs
                .iter()
                .any(|a| a.name == GRANT_ATTR && a.value == value);
            if has == grant {
                return Ok(false);
            }
            if grant {
                o.attrs.push(ObjectAttr {
                    name: GRANT_ATTR.into(),
                    value: value.clone(),
                });
            } else {
                o.attrs
                    .retain(|a| !(a.name == GRANT_ATTR && a.value == value));
            }
            match self.service.update_object(&o) {
                Ok(()) => return Ok(true),
                Err(keyhold_core::Error::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(OpError::new(409, "the object kept changing; try again"))
    }

    pub fn purge_destroyed(&self, req: &PurgeDestroyed) -> OpResult<PurgedView> {
        Ok(PurgedView {
            purged: self.service.purge_destroyed_objects(req.older_than_s)?,
        })
    }

    pub fn kmip_status(&self) -> OpResult<KmipStatusView> {
        let objects = self.service.list_objects()?;
        let mut counts: BTreeMap<(String, &'static str, &'static str), u64> = BTreeMap::new();
        for o in &objects {
            let kind = match o.object_type {
                2 => "SymmetricKey",
                7 => "SecretData",
                _ => "Other",
            };
            *counts
                .entry((o.owner.clone(), kind, o.state.name()))
                .or_default() += 1;
        }
        let ca = self.data_dir.join(KMIP_CA_DIR).join("ca.pem");
        Ok(KmipStatusView {
            objects: objects.len(),
            client_ca: ca.exists().then(|| ca.display().to_string()),
            by_owner: counts
                .into_iter()
                .map(|((owner, kind, state), count)| ObjectCount {
                    owner,
                    kind: kind.into(),
                    state: state.into(),
                    count,
                })
                .collect(),
            // The listener's own counters exist only inside a running server.
            listener: self.service.live_status("kmip"),
        })
    }
}
