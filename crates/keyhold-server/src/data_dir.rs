//! The data directory of the embedded default: `keyhold.db` (SQLite),
//! `root.key` (the software root of trust) and `tls/` (certificates for
//! local use), plus `keyhold.toml`.

use keyhold_core::{Error, Result};
use keyhold_keystore::{RootFileKind, RootOfTrust, SoftwareRoot};
use keyhold_service::KeyService;
use keyhold_storage::SqliteStorage;
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DB_FILE: &str = "keyhold.db";
pub const ROOT_FILE: &str = "root.key";
pub const CONFIG_FILE: &str = "keyhold.toml";

/// A Keyhold data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub path: PathBuf,
}

impl DataDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn db(&self) -> PathBuf {
        self.path.join(DB_FILE)
    }
    pub fn root(&self) -> PathBuf {
        self.path.join(ROOT_FILE)
    }
    pub fn config(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.path.join("tls")
    }

    pub fn exists(&self) -> bool {
        self.root().exists()
    }

    /// Whether the root of trust needs a passphrase to open.
    pub fn root_is_sealed(&self) -> Result<bool> {
        Ok(SoftwareRoot::file_kind(&self.root())? == RootFileKind::Sealed)
    }

    /// Creates the directory (0700), the root of trust and the database.
    pub fn create(&self, passphrase: Option<&SecretString>) -> Result<KeyService> {
        if self.root().exists() {
            return Err(Error::invalid(
                "data directory",
                format!("{} is already initialised", self.path.display()),
            ));
        }
        create_private_dir(&self.path)?;
        let root = SoftwareRoot::create(&self.root(), passphrase)?;
        let storage = SqliteStorage::open(&self.db())?;
        KeyService::open(Arc::new(storage), Arc::new(root))
    }

    /// Opens the key service of an existing data directory.
    pub fn open(&self, passphrase: Option<&SecretString>) -> Result<KeyService> {
        if !self.exists() {
            return Err(Error::invalid(
                "data directory",
                format!(
                    "{} is not initialised (run `keyhold init`)",
                    self.path.display()
                ),
            ));
        }
        let root: Arc<dyn RootOfTrust> = Arc::new(SoftwareRoot::load(&self.root(), passphrase)?);
        let storage = SqliteStorage::open(&self.db())?;
        KeyService::open(Arc::new(storage), root)
    }
}

/// Creates a directory readable only by its owner.
pub fn create_private_dir(p: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(p)
        .map_err(|e| Error::Internal(format!("cannot create {}: {e}", p.display())))
}
