//! KMIP client certificates issued by the data directory's CA (and any
//! other certificate a custodian revoked): their records, and the revoked
//! serial numbers every KMIP listener refuses from its next handshake on,
//! and on connections already open from their next message on.
//!
//! Records live in storage as `meta` entries `kmip-cert:<serial>` (JSON),
//! so that every node sees a revocation; each server keeps the revoked
//! serials in memory, reloaded whenever storage reports a change that may
//! touch them.

use crate::KeyService;
use keyhold_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;

pub(crate) const CERT_META_PREFIX: &str = "kmip-cert:";

/// The sealed list of every revoked serial (see [`crate::integrity`]): a
/// revocation record deleted from storage does not bring a certificate
/// back, and a list that does not verify refuses every client certificate.
pub(crate) const REVOKED_LIST_META: &str = "kmip-revoked";
const REVOKED_LIST: &str = "revoked client certificates";
/// In the revoked set: every certificate is refused.
const REFUSE_ALL: &str = "*";

/// One client certificate, as issued (or as revoked, for one that was not
/// issued here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCertRecord {
    /// The subject common name: the client's identity.
    pub name: String,
    /// Lowercase hex, without leading zero bytes.
    pub serial: String,
    /// Unix seconds (0: not known, for certificates not issued here).
    pub not_after: i64,
    pub issued_at: i64,
    pub revoked_at: Option<i64>,
}

impl ClientCertRecord {
    /// `valid`, `expired` or `revoked` at `now`.
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.not_after != 0 && self.not_after <= now {
            "expired"
        } else {
            "valid"
        }
    }
}

/// Normalises a serial number as [`ClientCertRecord::serial`] holds it.
pub fn normalize_serial(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = hex.trim_start_matches('0');
    let trimmed = if trimmed.len() % 2 == 1 {
        format!("0{trimmed}")
    } else {
        trimmed.to_owned()
    };
    (!trimmed.is_empty()).then_some(trimmed)
}

impl KeyService {
    /// Records a certificate just issued.
    pub fn record_client_cert(&self, r: &ClientCertRecord) -> Result<()> {
        let v = serde_json::to_vec(r).map_err(|e| Error::Internal(e.to_string()))?;
        self.storage()
            .set_meta(&format!("{CERT_META_PREFIX}{}", r.serial), Some(&v))
    }

    /// Every recorded certificate, oldest first.
    pub fn client_certs(&self) -> Result<Vec<ClientCertRecord>> {
        let mut v: Vec<ClientCertRecord> = self
            .storage()
            .list_meta(CERT_META_PREFIX)?
            .into_iter()
            .filter_map(|(_, b)| serde_json::from_slice(&b).ok())
            .collect();
        v.sort_by(|a, b| (a.issued_at, &a.name, &a.serial).cmp(&(b.issued_at, &b.name, &b.serial)));
        Ok(v)
    }

    /// Revokes every certificate named `who` (an identity, or a serial
    /// number: one not issued here is recorded as revoked all the same).
    /// Returns what was revoked now (already revoked ones are left as
    /// they were).
    pub fn revoke_client_certs(&self, who: &str) -> Result<Vec<ClientCertRecord>> {
        let now = self.now();
        let serial = normalize_serial(who);
        let mut matched: Vec<ClientCertRecord> = self
            .client_certs()?
            .into_iter()
            .filter(|r| r.name == who || Some(&r.serial) == serial.as_ref())
            .collect();
        if matched.is_empty() {
            match serial {
                Some(s) => matched.push(ClientCertRecord {
                    name: String::new(),
                    serial: s,
                    not_after: 0,
                    issued_at: now,
                    revoked_at: None,
                }),
                None => {
                    return Err(Error::invalid(
                        "client certificate",
                        format!("no certificate was issued for {who:?} (name it by identity or serial number)"),
                    ))
                }
            }
        }
        let mut revoked = Vec::new();
        for mut r in matched.into_iter().filter(|r| r.revoked_at.is_none()) {
            r.revoked_at = Some(now);
            self.record_client_cert(&r)?;
            revoked.push(r);
        }
        self.write_revoked_list()?;
        self.load_revoked_certs();
        Ok(revoked)
    }

    /// Rewrites the sealed list of revoked serials: those the list held
    /// (when it verifies) and every record marked revoked.
    pub(crate) fn write_revoked_list(&self) -> Result<()> {
        let mut serials: Vec<String> = self
            .storage()
            .get_meta(REVOKED_LIST_META)?
            .and_then(|v| self.row_key.open_list(REVOKED_LIST, &v))
            .unwrap_or_default();
        serials.extend(
            self.client_certs()?
                .into_iter()
                .filter(|r| r.revoked_at.is_some())
                .map(|r| r.serial),
        );
        let v = self.row_key.seal_list(REVOKED_LIST, &serials);
        self.storage().set_meta(REVOKED_LIST_META, Some(&v))
    }

    /// Whether the certificate with this serial (as [`normalize_serial`]
    /// gives it) has been revoked, as this process last read. While the
    /// stored list of revocations does not verify, every one is refused.
    pub fn is_cert_revoked(&self, serial: &str) -> bool {
        let set = self.revoked_certs.read();
        !set.is_empty() && (set.contains(serial) || set.contains(REFUSE_ALL))
    }

    /// Reads the revoked serials again (at start, and after changes).
    pub(crate) fn load_revoked_certs(&self) {
        let list = match self.storage().get_meta(REVOKED_LIST_META) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the revoked client certificates");
                return;
            }
        };
        let listed = match list
            .as_deref()
            .map(|v| self.row_key.open_list(REVOKED_LIST, v))
        {
            Some(Some(l)) => l,
            // Deleted or changed outside Keyhold: no certificate is trusted
            // until a custodian revokes again (which rewrites the list).
            _ => {
                self.row_key
                    .report("the list of revoked client certificates");
                vec![REFUSE_ALL.to_owned()]
            }
        };
        match self.client_certs() {
            Ok(all) => {
                let set: HashSet<String> = all
                    .into_iter()
                    .filter(|r| r.revoked_at.is_some())
                    .map(|r| r.serial)
                    .chain(listed)
                    .collect();
                *self.revoked_certs.write() = Arc::new(set);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the revoked client certificates"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalised() {
        assert_eq!(normalize_serial("00:4A:bc"), Some("4abc".into()));
        assert_eq!(normalize_serial("abc"), Some("0abc".into()));
        assert_eq!(normalize_serial("alice"), None);
        assert_eq!(normalize_serial("0000"), None);
    }
}
