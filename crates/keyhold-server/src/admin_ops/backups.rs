//! Backups: a consistent, encrypted snapshot taken online, and checking a
//! backup with this key manager's root of trust. Restoring makes a new
//! data directory, so it is not an operation on a running one.

use std::collections::BTreeMap;

use base64::Engine as _;
use keyhold_service::backup::BackupHeader;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AdminOps, OpError, OpResult};

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupView {
    /// Unix milliseconds.
    pub created_ms: i64,
    /// `sqlite` or `postgres`: where it was taken from.
    pub backend: String,
    /// Rows per table.
    pub rows: BTreeMap<String, usize>,
}

/// A backup just made: its bytes (base64) and what it holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupMade {
    pub backup: BackupView,
    /// The backup file, base64: keys wrapped under the root of trust,
    /// everything sealed; useless without the root.
    pub data: String,
}

/// A backup to check (base64).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupData {
    pub data: String,
}

fn view(h: &BackupHeader) -> BackupView {
    BackupView {
        created_ms: h.created_ms,
        backend: h.backend.clone(),
        rows: h.rows.clone(),
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl AdminOps {
    /// Takes a snapshot (traffic goes on) and seals it.
    pub fn create_backup(&self) -> OpResult<BackupMade> {
        let (bytes, h) = self.service.create_backup()?;
        Ok(BackupMade {
            backup: view(&h),
            data: B64.encode(bytes),
        })
    }

    /// Opens a backup with this key manager's root of trust.
    pub fn verify_backup(&self, req: &BackupData) -> OpResult<BackupView> {
        let bytes = B64
            .decode(&req.data)
            .map_err(|_| OpError::new(400, "data is not base64"))?;
        let (h, _) = self.service.open_backup(&bytes)?;
        Ok(view(&h))
    }
}
