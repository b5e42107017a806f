//! Backups: a consistent snapshot of the database, encrypted and
//! authenticated under a fresh key that the root of trust wraps.
//!
//! ```text
//! KEYHOLD-BACKUP-1\n
//! u32 (big endian)  length of the header
//! header            JSON: created_ms, backend, row counts, wrapped_key
//! body              AES-256-GCM (iv || ciphertext || tag) of the snapshot
//!                   (JSON), with the magic line and the header as AAD
//! ```
//!
//! Key material inside the snapshot is still wrapped under the root of
//! trust, and the body key is too: a backup without the root of trust (the
//! software root file and its passphrase, or the HSM's KEK) opens nothing.
//! Any changed byte is detected: the header is authenticated with the body,
//! and the wrapped body key is itself authenticated.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyhold_core::{Error, Result};
use keyhold_crypto::{random_secret, Aes256Key, AES256_KEY_LEN};
use keyhold_root::RootOfTrust;
pub use keyhold_storage::Snapshot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const MAGIC: &[u8] = b"KEYHOLD-BACKUP-1\n";
/// The root of trust wraps the body key under this context only.
const BODY_KEY_CONTEXT: &[u8] = b"keyhold/backup-body-key/v1";
/// Headers are small; anything larger is not a backup.
const MAX_HEADER: usize = 64 * 1024;

/// What a backup says about itself (readable without the root of trust,
/// but authenticated with the body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub created_ms: i64,
    /// `sqlite` or `postgres`: where it was taken from.
    pub backend: String,
    /// Rows per table.
    pub rows: BTreeMap<String, usize>,
    /// The body key, wrapped by the root of trust.
    pub wrapped_key: String,
}

/// Takes a snapshot of `storage` (online: writers carry on) and seals it.
/// Returns the backup and its header.
pub fn create(
    storage: &dyn keyhold_storage::Maintenance,
    root: &dyn RootOfTrust,
    backend: &str,
) -> Result<(Vec<u8>, BackupHeader)> {
    let snap = storage.snapshot()?;
    seal(&snap, root, backend)
}

/// Seals a snapshot into the backup format; returns it and its header.
pub fn seal(
    snap: &Snapshot,
    root: &dyn RootOfTrust,
    backend: &str,
) -> Result<(Vec<u8>, BackupHeader)> {
    let key = random_secret(AES256_KEY_LEN).map_err(|e| Error::Internal(e.to_string()))?;
    let header = BackupHeader {
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        backend: backend.to_owned(),
        rows: snap.row_counts(),
        wrapped_key: B64.encode(root.wrap(BODY_KEY_CONTEXT, key.expose())?),
    };
    let header_bytes = serde_json::to_vec(&header).map_err(|e| Error::Internal(e.to_string()))?;
    let body = zeroize::Zeroizing::new(
        serde_json::to_vec(snap).map_err(|e| Error::Internal(e.to_string()))?,
    );
    let aes = Aes256Key::from_bytes(key.expose()).map_err(|e| Error::Internal(e.to_string()))?;
    let sealed = aes
        .seal_combined(&aad(&header_bytes), &body)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header_bytes.len() + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(&sealed);
    Ok((out, header))
}

fn aad(header: &[u8]) -> Vec<u8> {
    [MAGIC, header].concat()
}

fn damaged(why: &str) -> Error {
    Error::invalid(
        "backup",
        format!("{why}: the file is damaged, altered or not a Keyhold backup"),
    )
}

/// The header alone (not authenticated until [`open`] succeeds).
pub fn header(bytes: &[u8]) -> Result<(BackupHeader, &[u8], &[u8])> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| damaged("no backup header line"))?;
    if rest.len() < 4 {
        return Err(damaged("truncated"));
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_HEADER || len > rest.len() {
        return Err(damaged("bad header length"));
    }
    let (h, body) = rest.split_at(len);
    let parsed: BackupHeader =
        serde_json::from_slice(h).map_err(|_| damaged("unreadable header"))?;
    Ok((parsed, h, body))
}

/// Opens a backup with the root of trust: checks every byte and returns the
/// header and the snapshot.
pub fn open(bytes: &[u8], root: &dyn RootOfTrust) -> Result<(BackupHeader, Snapshot)> {
    let (h, raw_header, body) = header(bytes)?;
    let wrapped = B64
        .decode(&h.wrapped_key)
        .map_err(|_| damaged("unreadable body key"))?;
    let key =
        root.unwrap(BODY_KEY_CONTEXT, &wrapped).map_err(|e| {
            match e {
        Error::UnwrapFailed => Error::invalid(
            "backup",
            "its key does not open with this root of trust (another root, or the file was altered)",
        ),
        other => other,
    }
        })?;
    let aes = Aes256Key::from_bytes(key.expose()).map_err(|e| Error::Internal(e.to_string()))?;
    let plain = aes
        .open_combined(&aad(raw_header), body)
        .map_err(|_| damaged("the contents do not authenticate"))?;
    let snap: Snapshot =
        serde_json::from_slice(plain.expose()).map_err(|_| damaged("unreadable contents"))?;
    snap.validate()?;
    if snap.row_counts() != h.rows {
        return Err(damaged("row counts differ from the header"));
    }
    Ok((h, snap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_root::SoftwareRoot;
    use keyhold_storage::prelude::*;
    use keyhold_storage::SqliteStorage;

    #[test]
    fn round_trip_and_every_flipped_byte_is_caught() {
        let d = tempfile::tempdir().unwrap();
        let root = SoftwareRoot::create(&d.path().join("root.key"), None).unwrap();
        let other = SoftwareRoot::create(&d.path().join("other.key"), None).unwrap();
        let s = SqliteStorage::open_in_memory().unwrap();
        keyhold_storage::conformance::fill(&s);
        let (file, _) = create(&s, &root, "sqlite").unwrap();
        let (h, snap) = open(&file, &root).unwrap();
        assert_eq!(snap, s.snapshot().unwrap());
        assert_eq!(h.rows["keys"], 1);
        // Nothing of the contents shows in the file.
        assert!(!file.windows(8).any(|w| w == b"store /a"));
        assert!(open(&file, &other).is_err());
        // Flip one bit at a spread of positions, header and body alike.
        let step = (file.len() / 200).max(1);
        for i in (0..file.len()).step_by(step) {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            assert!(open(&bad, &root).is_err(), "flipped byte {i} not caught");
        }
        assert!(open(&file[..file.len() - 1], &root).is_err());
    }
}
