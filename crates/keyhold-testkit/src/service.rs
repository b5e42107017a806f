//! A key service to test front-ends against: a fresh software root of trust
//! in a temporary directory and in-memory SQLite storage.

use keyhold_service::KeyService;
use std::sync::Arc;

/// A fresh key service; the directory holds its root key file and lives as
/// long as the returned guard.
pub fn fresh() -> (tempfile::TempDir, Arc<KeyService>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = keyhold_root::SoftwareRoot::create(&dir.path().join("root.key"), None)
        .expect("software root");
    let storage = keyhold_storage::SqliteStorage::open_in_memory().expect("in-memory SQLite");
    let s = KeyService::open(Arc::new(storage), Arc::new(root)).expect("key service");
    (dir, Arc::new(s))
}
