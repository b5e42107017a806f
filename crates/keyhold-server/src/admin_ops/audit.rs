//! The audit log for auditors: verify every chain against its checkpoints,
//! query records, export them (MACs included) for a SIEM.

use keyhold_audit::Filter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AdminOps, OpError, OpResult};
use crate::config::AuditSection;

/// How far a node's shipped copy may lag behind its checkpoints.
const SHIPPING_GRACE_MS: i64 = 30_000;

/// Which records: every field given must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    /// The awsPrincipalArn of an XKS call, the client identity of a KMIP one.
    #[serde(default)]
    pub principal: Option<String>,
    /// Encrypt, Decrypt, a KMIP operation, or an admin command.
    #[serde(default)]
    pub operation: Option<String>,
    /// OK, an error name, or `error` for every failure.
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub kms_request_id: Option<String>,
    /// xks, kmip, azure-ekm, ms-dke, google-cse, admin or console.
    #[serde(default)]
    pub frontend: Option<String>,
    /// From this time (RFC 3339 UTC).
    #[serde(default)]
    pub since: Option<String>,
    /// Before this time (RFC 3339 UTC).
    #[serde(default)]
    pub until: Option<String>,
    /// Query: at most this many (the newest), default 100.
    #[serde(default)]
    pub limit: Option<usize>,
}

impl AuditFilter {
    fn filter(&self) -> OpResult<Filter> {
        let t = |s: &Option<String>| -> OpResult<Option<i64>> {
            s.as_deref()
                .map(|v| {
                    keyhold_core::time::parse_rfc3339(v)
                        .map(|t| t * 1000)
                        .ok_or_else(|| {
                            OpError::new(400, format!("{v:?} is not an RFC 3339 UTC time"))
                        })
                })
                .transpose()
        };
        Ok(Filter {
            store: self.store.clone(),
            key: self.key.clone(),
            principal: self.principal.clone(),
            operation: self.operation.clone(),
            result: self.result.clone(),
            kms_request_id: self.kms_request_id.clone(),
            frontend: self.frontend.clone(),
            since_ms: t(&self.since)?,
            until_ms: t(&self.until)?,
        })
    }
}

/// Checkpoints kept elsewhere, to compare too (a checkpoint file's text).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditVerify {
    #[serde(default)]
    pub checkpoints: Option<String>,
}

/// One chain as verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChainView {
    pub chain: String,
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// What verifying the audit log found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerifyView {
    /// No problem found.
    pub ok: bool,
    pub chains: Vec<ChainView>,
    pub checkpoints_checked: usize,
    /// Everything altered, removed or reordered, each saying where.
    pub problems: Vec<String>,
    /// What the log cannot prove either way (records after an unclean stop).
    pub warnings: Vec<String>,
}

/// Records exported: one JSON line each, MACs included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditExportView {
    pub lines: Vec<String>,
    /// Records that matched but do not verify (altered or forged): never
    /// exported as if they were genuine.
    pub left_out: u64,
}

impl AdminOps {
    /// The data directory's audit settings (from its keyhold.toml).
    fn audit_section(&self) -> OpResult<AuditSection> {
        crate::data_dir::DataDir::new(self.data_dir.clone())
            .audit_section()
            .map_err(|e| OpError::new(500, e))
    }

    /// The chains every node copied to shared storage (none on SQLite).
    fn shipped(&self) -> OpResult<Vec<(String, Vec<String>)>> {
        if self.service.shared_storage() {
            Ok(self.service.audit_store().shipped_audit()?)
        } else {
            Ok(Vec::new())
        }
    }

    /// Checks every chain's MACs and order against the checkpoints kept in
    /// the database, the configured checkpoint file and `req`'s.
    pub fn audit_verify(&self, req: &AuditVerify) -> OpResult<AuditVerifyView> {
        let sec = self.audit_section()?;
        let key = self.service.audit_key()?;
        let mut cps = self.service.audit_store().audit_checkpoints()?;
        if let Some(text) = &req.checkpoints {
            cps.extend(crate::audit::parse_checkpoints(text));
        }
        if let Some(f) = sec.checkpoint_file.as_ref().filter(|f| f.exists()) {
            cps.extend(crate::audit::read_checkpoint_file(f)?);
        }
        // Other nodes' chains are checked from the copies they shipped;
        // their newest checkpoints may be ahead of what they shipped.
        let node = crate::data_dir::DataDir::new(self.data_dir.clone())
            .node_name(self.service.shared_storage())?;
        let shipped = self.shipped()?;
        let recent = keyhold_audit::now_ms() - SHIPPING_GRACE_MS;
        cps.retain(|c| {
            crate::audit::is_local_chain(&c.chain, node.as_deref())
                || sec.dir.join(&c.chain).is_dir()
                || (shipped.iter().any(|(n, _)| *n == c.chain) && c.ts_ms < recent)
        });
        let r = keyhold_audit::verify_with(&sec.dir, &shipped, &key, &cps);
        Ok(AuditVerifyView {
            ok: r.ok(),
            chains: r
                .chains
                .iter()
                .map(|(chain, records, first_seq, last_seq)| ChainView {
                    chain: chain.clone(),
                    records: *records,
                    first_seq: *first_seq,
                    last_seq: *last_seq,
                })
                .collect(),
            checkpoints_checked: r.checkpoints_checked,
            problems: r.problems,
            warnings: r.warnings,
        })
    }

    /// The newest matching records, oldest first, each saying whether its
    /// MAC holds (`verified`).
    pub fn audit_query(&self, req: &AuditFilter) -> OpResult<Vec<serde_json::Value>> {
        let sec = self.audit_section()?;
        let key = self.service.audit_key()?;
        let limit = req.limit.unwrap_or(100);
        let found = keyhold_audit::query(&sec.dir, &self.shipped()?, &key, &req.filter()?, limit);
        Ok(found
            .into_iter()
            .map(|(r, ok)| {
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                v["verified"] = serde_json::json!(ok);
                v
            })
            .collect())
    }

    /// Every matching record that verifies, as its JSON line.
    pub fn audit_export(&self, req: &AuditFilter) -> OpResult<AuditExportView> {
        let sec = self.audit_section()?;
        let key = self.service.audit_key()?;
        let f = req.filter()?;
        let mut out = AuditExportView {
            lines: Vec::new(),
            left_out: 0,
        };
        keyhold_audit::read_all(&sec.dir, &self.shipped()?, &key, |r, line, authentic| {
            if f.matches(r) {
                if authentic {
                    out.lines.push(line.to_owned());
                } else {
                    out.left_out += 1;
                }
            }
        });
        Ok(out)
    }
}
