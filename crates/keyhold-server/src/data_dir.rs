//! The data directory of the embedded default: `keyhold.db` (SQLite),
//! `root.key` (the software root of trust) and `tls/` (certificates for
//! local use), plus `keyhold.toml`. With `[storage] url` in that file the
//! database is PostgreSQL instead, and several nodes, each with its own
//! data directory holding the same root of trust, share it.

use crate::config::StorageSection;
use keyhold_core::{Error, Result};
use keyhold_root::{Pkcs11Config, Pkcs11Root};
use keyhold_root::{RootFileKind, RootOfTrust, SoftwareRoot};
use keyhold_service::KeyService;
use keyhold_storage::{PostgresStorage, SqliteStorage, Storage};
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DB_FILE: &str = "keyhold.db";
pub const ROOT_FILE: &str = "root.key";
/// Present when the root of trust is a PKCS#11 token (it names the module,
/// token, KEK label and where the PIN comes from; never the PIN).
pub const PKCS11_ROOT_FILE: &str = "root.pkcs11.toml";
/// Present while a move to an HSM root is under way (or was interrupted).
pub const PKCS11_ROOT_PENDING: &str = "root.pkcs11.toml.pending";
pub const CONFIG_FILE: &str = "keyhold.toml";

/// A Keyhold data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub path: PathBuf,
    /// Where the database is (default: SQLite in this directory).
    pub storage: StorageSection,
}

impl DataDir {
    /// The audit settings (from keyhold.toml when there), with relative
    /// paths taken from the data directory.
    pub fn audit_section(&self) -> std::result::Result<crate::config::AuditSection, String> {
        let mut s = if self.config().exists() {
            crate::Config::load(&self.config())
                .map_err(|e| e.to_string())?
                .audit
        } else {
            crate::config::AuditSection::default()
        };
        if s.dir.is_relative() {
            s.dir = self.path.join(&s.dir);
        }
        if let Some(p) = &mut s.checkpoint_file {
            if p.is_relative() {
                *p = self.path.join(&*p);
            }
        }
        Ok(s)
    }

    /// A data directory with its database in it (SQLite). A relative path
    /// is resolved once, here, against the current directory: everything
    /// derived from it (the audit directory, checkpoint files, what a
    /// server records) must name the same place whatever directory a later
    /// step runs in.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            path: std::path::absolute(&path).unwrap_or(path),
            storage: StorageSection::default(),
        }
    }

    /// A data directory with the `[storage]` settings of its `keyhold.toml`
    /// (SQLite when there are none).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self> {
        let mut d = Self::new(path);
        d.storage = StorageSection::load_from(&d.config())
            .map_err(|e| Error::invalid("config", e.to_string()))?;
        Ok(d)
    }

    /// The same directory with these storage settings.
    pub fn with_storage(mut self, storage: StorageSection) -> Self {
        self.storage = storage;
        self
    }

    /// Opens the database: PostgreSQL when `[storage] url` is set, else
    /// `keyhold.db` here.
    pub fn open_storage(&self) -> Result<Arc<dyn Storage>> {
        Ok(match &self.storage.url {
            Some(url) => Arc::new(PostgresStorage::connect(url, self.storage.pg_options())?),
            None => Arc::new(SqliteStorage::open(&self.db())?),
        })
    }

    pub fn db(&self) -> PathBuf {
        self.path.join(DB_FILE)
    }
    pub fn root(&self) -> PathBuf {
        self.path.join(ROOT_FILE)
    }
    pub fn pkcs11_root(&self) -> PathBuf {
        self.path.join(PKCS11_ROOT_FILE)
    }
    /// Whether the root of trust is an HSM.
    pub fn uses_hsm(&self) -> bool {
        self.pkcs11_root().exists()
    }
    pub fn config(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.path.join("tls")
    }

    pub fn exists(&self) -> bool {
        self.root().exists() || self.pkcs11_root().exists()
    }

    /// Whether the root of trust needs a passphrase to open.
    pub fn root_is_sealed(&self) -> Result<bool> {
        if !self.root().exists() {
            return Ok(false);
        }
        Ok(SoftwareRoot::file_kind(&self.root())? == RootFileKind::Sealed)
    }

    /// Creates the directory with an HSM root of trust: writes
    /// `root.pkcs11.toml`, creates the KEK in the token if absent, and
    /// creates the database.
    pub fn create_with_hsm(&self, cfg: &Pkcs11Config) -> Result<KeyService> {
        if self.exists() {
            return Err(Error::invalid(
                "data directory",
                format!("{} is already initialised", self.path.display()),
            ));
        }
        let root = Pkcs11Root::open(cfg.clone(), true)?;
        let shared = self.connect_shared()?;
        create_private_dir(&self.path)?;
        std::fs::write(self.pkcs11_root(), cfg.to_toml()).map_err(|e| {
            Error::Internal(format!(
                "cannot write {}: {e}",
                self.pkcs11_root().display()
            ))
        })?;
        KeyService::open(self.storage_after(shared)?, Arc::new(root))
    }

    /// A database server is connected to before any file is written, so
    /// that a wrong URL or CA leaves no half-made data directory behind.
    fn connect_shared(&self) -> Result<Option<Arc<dyn Storage>>> {
        match self.storage.url {
            Some(_) => self.open_storage().map(Some),
            None => Ok(None),
        }
    }

    /// The storage [`Self::connect_shared`] opened, else SQLite (whose file
    /// lives in the directory, so it comes after it).
    fn storage_after(&self, shared: Option<Arc<dyn Storage>>) -> Result<Arc<dyn Storage>> {
        match shared {
            Some(s) => Ok(s),
            None => self.open_storage(),
        }
    }

    /// Opens the HSM root of trust of this directory (`create_kek`: make the
    /// KEK when absent, as `keyhold hsm init` does).
    pub fn open_hsm_root(&self, create_kek: bool) -> Result<Pkcs11Root> {
        if !self.uses_hsm() {
            return Err(Error::invalid(
                "data directory",
                format!("{} does not use an HSM root of trust", self.path.display()),
            ));
        }
        Pkcs11Root::open(Pkcs11Config::load(&self.pkcs11_root())?, create_kek)
    }

    /// Creates the directory (0700), the root of trust and the database.
    pub fn create(&self, passphrase: Option<&SecretString>) -> Result<KeyService> {
        if self.root().exists() {
            return Err(Error::invalid(
                "data directory",
                format!("{} is already initialised", self.path.display()),
            ));
        }
        let shared = self.connect_shared()?;
        create_private_dir(&self.path)?;
        let root = SoftwareRoot::create(&self.root(), passphrase)?;
        KeyService::open(self.storage_after(shared)?, Arc::new(root))
    }

    /// Creates the directory with a copy of an existing software root of
    /// trust (another node's `root.key`, or one kept in escrow): how a
    /// second node joins a shared database, or a restore starts.
    pub fn adopt_root(&self, from: &Path, passphrase: Option<&SecretString>) -> Result<KeyService> {
        if self.exists() {
            return Err(Error::invalid(
                "data directory",
                format!("{} is already initialised", self.path.display()),
            ));
        }
        // Check the file before copying it (right permissions, right
        // passphrase).
        SoftwareRoot::load(from, passphrase)?;
        let shared = self.connect_shared()?;
        create_private_dir(&self.path)?;
        let bytes = std::fs::read(from)
            .map_err(|e| Error::Internal(format!("cannot read {}: {e}", from.display())))?;
        write_private(&self.root(), &bytes)?;
        let root = SoftwareRoot::load(&self.root(), passphrase)?;
        KeyService::open(self.storage_after(shared)?, Arc::new(root))
    }

    /// This node's name in shared storage (None on SQLite, which no other
    /// node shares): kept in `node.name`, made on first use from the host
    /// name and a random suffix, so that it stays the same across restarts.
    pub fn node_name(&self, shared: bool) -> Result<Option<String>> {
        if !shared {
            return Ok(None);
        }
        let f = self.path.join("node.name");
        if let Ok(n) = std::fs::read_to_string(&f) {
            return Ok(Some(n.trim().to_owned()));
        }
        let host: String = crate::presence::hostname()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let uuid = keyhold_crypto::random_uuid().map_err(|e| Error::Internal(e.to_string()))?;
        let name = format!("{host}-{}", &uuid[..8]);
        write_private(&f, name.as_bytes())?;
        Ok(Some(name))
    }

    pub fn pkcs11_pending(&self) -> PathBuf {
        self.path.join(PKCS11_ROOT_PENDING)
    }

    /// Moves the root of trust from the software root to an HSM: re-wraps
    /// every stored value under the HSM's KEK, then switches the directory
    /// over. Stop the server first. Interrupted at any point (even kill -9),
    /// it can be run again (with or without `cfg`) and finishes the job;
    /// no key is lost on the way. The old `root.key` is kept, renamed,
    /// for the operator to destroy once satisfied.
    pub fn migrate_to_hsm(
        &self,
        cfg: Option<&Pkcs11Config>,
        passphrase: Option<&SecretString>,
        progress: impl FnMut(usize, usize),
    ) -> Result<(keyhold_service::RewrapReport, PathBuf)> {
        if self.uses_hsm() && !self.root().exists() {
            return Err(Error::invalid(
                "data directory",
                "the root of trust is already an HSM",
            ));
        }
        let cfg = match (
            cfg,
            self.pkcs11_pending().exists(),
            self.pkcs11_root().exists(),
        ) {
            (_, _, true) => Pkcs11Config::load(&self.pkcs11_root())?,
            (_, true, _) => {
                let pending = Pkcs11Config::load(&self.pkcs11_pending())?;
                if let Some(c) = cfg {
                    if c != &pending {
                        return Err(Error::invalid(
                            "HSM settings",
                            format!(
                                "a migration with other settings is under way ({}); re-run it without HSM options",
                                self.pkcs11_pending().display()
                            ),
                        ));
                    }
                }
                pending
            }
            (Some(c), false, false) => {
                write_synced(&self.pkcs11_pending(), c.to_toml().as_bytes())?;
                c.clone()
            }
            (None, false, false) => {
                return Err(Error::invalid(
                    "HSM settings",
                    "name the HSM (module, token, PIN)",
                ))
            }
        };
        let software = SoftwareRoot::load(&self.root(), passphrase)?;
        let hsm = Pkcs11Root::open(cfg, true)?;
        let storage = self.open_storage()?;
        let report = keyhold_service::rewrap_all(&*storage, &software, &hsm, progress)?;
        // Every value is now under the HSM: switch the directory over.
        if self.pkcs11_pending().exists() {
            std::fs::rename(self.pkcs11_pending(), self.pkcs11_root())
                .map_err(|e| Error::Internal(format!("cannot switch to the HSM root: {e}")))?;
        }
        let retired = self
            .path
            .join(format!("root.key.retired-{}", keyhold_core::now()));
        std::fs::rename(self.root(), &retired)
            .map_err(|e| Error::Internal(format!("cannot retire root.key: {e}")))?;
        sync_dir(&self.path);
        Ok((report, retired))
    }

    /// Opens the key service of an existing data directory.
    pub fn open(&self, passphrase: Option<&SecretString>) -> Result<KeyService> {
        if self.pkcs11_pending().exists() {
            return Err(Error::InvalidState(format!(
                "a move of the root of trust to an HSM was interrupted ({}); run `keyhold root migrate-to-hsm` again to finish it",
                self.pkcs11_pending().display()
            )));
        }
        if !self.exists() {
            return Err(Error::invalid(
                "data directory",
                format!(
                    "{} is not initialised (run `keyhold init`)",
                    self.path.display()
                ),
            ));
        }
        let root: Arc<dyn RootOfTrust> = if self.uses_hsm() {
            Arc::new(self.open_hsm_root(false)?)
        } else {
            Arc::new(SoftwareRoot::load(&self.root(), passphrase)?)
        };
        self.service(self.open_storage()?, root)
    }

    /// The file that records that this directory's database has sealed
    /// rows (see `keyhold_service::integrity`): from then on an unsealed
    /// row is one written outside Keyhold, never one from before sealing.
    pub fn rows_sealed_file(&self) -> PathBuf {
        self.path.join("rows.sealed")
    }

    /// Opens the key service of this directory's database, and records
    /// that its rows are sealed.
    fn service(&self, storage: Arc<dyn Storage>, root: Arc<dyn RootOfTrust>) -> Result<KeyService> {
        let anchor = self.rows_sealed_file();
        let svc = KeyService::open_with(
            storage,
            root,
            Arc::new(keyhold_core::SystemClock),
            anchor.exists(),
        )?;
        if !anchor.exists()
            && *svc.seal_state() != keyhold_service::integrity::SealState::MarkerTampered
        {
            write_private(&anchor, b"this database's rows are sealed (keyhold)\n")?;
            sync_dir(&self.path);
        }
        Ok(svc)
    }
}

/// The new root's file while a rotation is under way.
pub const ROOT_NEXT_FILE: &str = "root.key.next";
/// Roots retired by a rotation (or a move to an HSM), until destroyed.
pub const RETIRED_PREFIX: &str = "root.key.retired-";

/// What `keyhold root rotate` did.
#[derive(Debug, Clone)]
pub struct RotationReport {
    pub rewrap: keyhold_service::RewrapReport,
    pub old_id: String,
    pub new_id: String,
    /// The old root (a file, or a KEK in the HSM), kept until `keyhold
    /// root destroy-retired`.
    pub retired: Option<String>,
    /// Running servers that confirmed they wrap under the new root.
    pub servers: usize,
}

impl DataDir {
    /// Rotates the software root of trust online: a new root, made known
    /// to running servers through the database (they wrap under it from
    /// the moment they confirm), every value re-wrapped under it, then the
    /// new root becomes `root.key` and the old one `root.key.retired-TIME`.
    /// Safe to interrupt and run again. `progress(done, total)`.
    pub fn rotate_root(
        &self,
        passphrase: Option<&SecretString>,
        kek_label: Option<&str>,
        progress: impl FnMut(usize, usize),
    ) -> Result<RotationReport> {
        use keyhold_service::rotation::{begin_rotation, ROOT_NEXT_META};
        if self.uses_hsm() {
            return self.rotate_hsm_root(kek_label, progress);
        }
        if kek_label.is_some() {
            return Err(Error::invalid(
                "--kek-label",
                "only an HSM root of trust has KEK labels",
            ));
        }
        let next_path = self.path.join(ROOT_NEXT_FILE);
        let current = Arc::new(SoftwareRoot::load(&self.root(), passphrase)?);
        let storage = self.open_storage()?;
        if !next_path.exists() {
            if let Some(done) = Self::finish_switched(&*storage, current.clone())? {
                return Ok(done);
            }
        }
        // The service checks the root against the database first.
        let svc = self.service(storage.clone(), current.clone())?;
        let master = begin_rotation(&*storage, &*current)?;
        let next = SoftwareRoot::from_master(&master)?;
        if next_path.exists() {
            let f = SoftwareRoot::load(&next_path, passphrase)?;
            if f.info().id != next.info().id {
                return Err(Error::InvalidState(format!(
                    "{} does not belong to the rotation under way: move it away and run again",
                    next_path.display()
                )));
            }
        } else {
            SoftwareRoot::write_file(&next_path, &master, passphrase)?;
            sync_dir(&self.path);
        }
        let servers = self.next_root_confirmed(&svc)?;
        let rewrap = keyhold_service::rewrap_all(&*storage, &*current, &next, progress)?;
        // Switch: the old root stays as a retired file until destroyed.
        let retired = self
            .path
            .join(format!("{RETIRED_PREFIX}{}", keyhold_audit::now_ms()));
        std::fs::hard_link(self.root(), &retired)
            .map_err(|e| Error::Internal(format!("cannot keep the old root: {e}")))?;
        std::fs::rename(&next_path, self.root())
            .map_err(|e| Error::Internal(format!("cannot switch to the new root: {e}")))?;
        sync_dir(&self.path);
        storage.set_meta(ROOT_NEXT_META, None)?;
        storage.purge_erased_copies()?;
        Ok(RotationReport {
            rewrap,
            old_id: current.info().id,
            new_id: next.info().id,
            retired: Some(retired.display().to_string()),
            servers,
        })
    }

    /// A rotation interrupted after the switch: the root here is already
    /// the new one (it cannot unwrap the rotation row, made under the old
    /// one); finishes by removing the row once everything unwraps.
    fn finish_switched(
        storage: &dyn Storage,
        current: Arc<dyn RootOfTrust>,
    ) -> Result<Option<RotationReport>> {
        use keyhold_service::rotation::{ROOT_NEXT_CONTEXT, ROOT_NEXT_META};
        let Some(w) = storage.get_meta(ROOT_NEXT_META)? else {
            return Ok(None);
        };
        match current.unwrap(ROOT_NEXT_CONTEXT, &w) {
            Err(Error::UnwrapFailed) => {}
            Ok(_) => return Ok(None),
            Err(e) => return Err(e),
        }
        keyhold_service::verify_all(storage, &*current)?;
        storage.set_meta(ROOT_NEXT_META, None)?;
        storage.purge_erased_copies()?;
        Ok(Some(RotationReport {
            rewrap: Default::default(),
            old_id: String::new(),
            new_id: current.info().id,
            retired: None,
            servers: 0,
        }))
    }

    /// Every running server wraps under the next root before anything is
    /// re-wrapped, so that nothing new lands under the old one afterwards:
    /// returns how many confirmed.
    fn next_root_confirmed(&self, svc: &KeyService) -> Result<usize> {
        let epoch = svc.bump_epoch()?;
        let acks = crate::presence::wait_for_acks(
            &self.path,
            &*svc.nodes(),
            epoch,
            std::time::Duration::from_secs(10),
        );
        if acks.acknowledged < acks.servers {
            return Err(Error::InvalidState(format!(
                "{} of {} running server(s) did not confirm the next root of trust; nothing was re-wrapped yet: run again",
                acks.servers - acks.acknowledged,
                acks.servers
            )));
        }
        Ok(acks.servers)
    }

    /// [`Self::rotate_root`] for an HSM root: a new KEK in the same tokens
    /// (made now when there is one token; with failover tokens, provisioned
    /// in each with the HSM's own tools first and named by `kek_label`),
    /// everything re-wrapped under it online, then `root.pkcs11.toml` names
    /// it and lists the old KEK as retired (still in the HSM, reserved,
    /// until `keyhold root destroy-retired`).
    fn rotate_hsm_root(
        &self,
        kek_label: Option<&str>,
        progress: impl FnMut(usize, usize),
    ) -> Result<RotationReport> {
        use keyhold_service::rotation::{begin_kek_rotation, ROOT_NEXT_META};
        let cfg = Pkcs11Config::load(&self.pkcs11_root())?;
        let current = Arc::new(Pkcs11Root::open(cfg.clone(), false)?);
        let storage = self.open_storage()?;
        if let Some(done) = Self::finish_switched(&*storage, current.clone())? {
            return Ok(done);
        }
        let svc = self.service(storage.clone(), current.clone())?;
        let several = !cfg.failover.is_empty();
        let proposed = match kek_label {
            Some(l) => l.to_owned(),
            None if several => {
                return Err(Error::invalid(
                    "--kek-label",
                    "with failover tokens, provision the new KEK in every token with the HSM's own tools, then name it with --kek-label",
                ))
            }
            None => next_kek_label(&cfg.kek_label, keyhold_core::now()),
        };
        if proposed == cfg.kek_label || cfg.retired_kek_labels.contains(&proposed) {
            return Err(Error::invalid(
                "--kek-label",
                format!("{proposed:?} is the current or a retired KEK"),
            ));
        }
        // A new label must not name a key that exists already (a customer's
        // HSM-resident key, say) unless the custodian provisioned it.
        let exists = |l: &str| svc.hsm_key_exists(l);
        if storage.get_meta(ROOT_NEXT_META)?.is_none() && !several && exists(&proposed) {
            return Err(Error::invalid(
                "--kek-label",
                format!("a key labelled {proposed:?} exists in the HSM already"),
            ));
        }
        let (label, _) = begin_kek_rotation(&*storage, &*current, &proposed)?;
        let mut next_cfg = cfg.clone();
        next_cfg.kek_label = label.clone();
        next_cfg.retired_kek_labels.clear();
        let next = Arc::new(Pkcs11Root::open(next_cfg, !several)?);
        let servers = self.next_root_confirmed(&svc)?;
        let rewrap = keyhold_service::rewrap_all(&*storage, &*current, &*next, progress)?;
        // Switch: the configuration names the new KEK; the old one is
        // retired (reserved) until destroyed.
        let mut new_cfg = cfg.clone();
        new_cfg.kek_label = label.clone();
        new_cfg.retired_kek_labels.push(cfg.kek_label.clone());
        let tmp = self.pkcs11_root().with_extension("toml.next");
        write_synced(&tmp, new_cfg.to_toml().as_bytes())?;
        std::fs::rename(&tmp, self.pkcs11_root())
            .map_err(|e| Error::Internal(format!("cannot switch to the new KEK: {e}")))?;
        sync_dir(&self.path);
        storage.set_meta(ROOT_NEXT_META, None)?;
        storage.purge_erased_copies()?;
        Ok(RotationReport {
            rewrap,
            old_id: format!("KEK {}", cfg.kek_label),
            new_id: format!("KEK {label}"),
            retired: Some(format!("KEK {} (in the HSM, reserved)", cfg.kek_label)),
            servers,
        })
    }

    /// Destroys the roots retired by rotations (and moves to an HSM) kept
    /// in this data directory, once every value unwraps under the current
    /// root: files overwritten, synced, removed; retired HSM KEKs destroyed
    /// in every token. Returns what was destroyed.
    pub fn destroy_retired_roots(&self, passphrase: Option<&SecretString>) -> Result<Vec<String>> {
        let svc = self.open(passphrase)?;
        if svc.rotation_under_way()? {
            return Err(Error::InvalidState(
                "a root rotation is under way: finish it with `keyhold root rotate` first".into(),
            ));
        }
        svc.verify_wrapped()?;
        let mut gone = Vec::new();
        if self.uses_hsm() {
            gone.extend(self.destroy_retired_keks()?);
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&self.path)
            .map_err(|e| Error::Internal(e.to_string()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(RETIRED_PREFIX))
            })
            .collect();
        entries.sort();
        for p in entries {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            let wipe = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|mut f| {
                    use std::io::Write;
                    f.write_all(&vec![0u8; len as usize])?;
                    f.sync_all()
                });
            if let Err(e) = wipe {
                return Err(Error::Internal(format!(
                    "cannot overwrite {}: {e}",
                    p.display()
                )));
            }
            std::fs::remove_file(&p)
                .map_err(|e| Error::Internal(format!("cannot remove {}: {e}", p.display())))?;
            gone.push(p.display().to_string());
        }
        sync_dir(&self.path);
        Ok(gone)
    }
}

/// The label of the KEK a rotation makes: the current one's base and the
/// time (`keyhold-kek` → `keyhold-kek-r1764936000`).
fn next_kek_label(current: &str, now: i64) -> String {
    let base = match current.rsplit_once("-r") {
        Some((b, n)) if !b.is_empty() && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
            b
        }
        _ => current,
    };
    format!("{base}-r{now}")
}

impl DataDir {
    /// Destroys the KEKs `root.pkcs11.toml` lists as retired, in every
    /// token, and forgets those destroyed everywhere.
    fn destroy_retired_keks(&self) -> Result<Vec<String>> {
        let mut cfg = Pkcs11Config::load(&self.pkcs11_root())?;
        if cfg.retired_kek_labels.is_empty() {
            return Ok(Vec::new());
        }
        let root = Pkcs11Root::open(cfg.clone(), false)?;
        let mut gone = Vec::new();
        let mut failed = Vec::new();
        for label in cfg.retired_kek_labels.clone() {
            let outcomes = root.destroy_retired_kek(&label);
            let bad: Vec<String> = outcomes
                .iter()
                .filter_map(|(t, r)| r.as_ref().err().map(|e| format!("token {t}: {e}")))
                .collect();
            if bad.is_empty() {
                cfg.retired_kek_labels.retain(|l| *l != label);
                for (t, _) in outcomes {
                    gone.push(format!("KEK {label} in token {t}"));
                }
            } else {
                failed.push(format!("KEK {label} ({})", bad.join("; ")));
            }
        }
        let tmp = self.pkcs11_root().with_extension("toml.next");
        write_synced(&tmp, cfg.to_toml().as_bytes())?;
        std::fs::rename(&tmp, self.pkcs11_root())
            .map_err(|e| Error::Internal(format!("cannot rewrite root.pkcs11.toml: {e}")))?;
        sync_dir(&self.path);
        if !failed.is_empty() {
            return Err(Error::RootOfTrust(format!(
                "could not destroy {} (it stays listed as retired; run again once every token answers)",
                failed.join(", ")
            )));
        }
        Ok(gone)
    }
}

/// Writes a file and makes it durable (file and directory entry).
fn write_synced(p: &Path, data: &[u8]) -> Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    write_durably(p, data, &o)
}

/// Writes a new file readable only by its owner, durably.
fn write_private(p: &Path, data: &[u8]) -> Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    write_durably(p, data, &o)
}

/// Opens `p` with `o`, writes `data`, and syncs the file and its directory.
fn write_durably(p: &Path, data: &[u8], o: &std::fs::OpenOptions) -> Result<()> {
    use std::io::Write;
    let err = |e: std::io::Error| Error::Internal(format!("cannot write {}: {e}", p.display()));
    let mut f = o.open(p).map_err(err)?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(err)?;
    if let Some(d) = p.parent() {
        sync_dir(d);
    }
    Ok(())
}

fn sync_dir(d: &Path) {
    if let Ok(f) = std::fs::File::open(d) {
        let _ = f.sync_all();
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

#[cfg(test)]
#[test]
fn kek_labels_of_rotations() {
    assert_eq!(next_kek_label("keyhold-kek", 5), "keyhold-kek-r5");
    assert_eq!(next_kek_label("keyhold-kek-r5", 9), "keyhold-kek-r9");
    assert_eq!(next_kek_label("my-run-rx", 9), "my-run-rx-r9");
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::{KeyId, StorePrefix, Usage};
    use keyhold_service::rotation::{begin_rotation, ROOT_NEXT_CONTEXT, ROOT_NEXT_META};

    fn store_with_keys(dd: &DataDir) {
        let svc = dd.create(None).unwrap();
        let p = StorePrefix::parse("/t").unwrap();
        svc.create_store(&p, "").unwrap();
        svc.add_credential(&p).unwrap();
        for i in 0..4 {
            svc.create_key(&p, &KeyId::parse(&format!("k{i}")).unwrap(), Usage::BOTH)
                .unwrap();
        }
    }

    /// A rotation interrupted at any step finishes when run again: after
    /// the next root was recorded (before its file), after some values
    /// were re-wrapped, after the switch (the rotation row left behind).
    #[test]
    fn an_interrupted_rotation_finishes_when_run_again() {
        let d = tempfile::tempdir().unwrap();
        let dd = DataDir::new(d.path().join("data"));
        store_with_keys(&dd);
        let old = SoftwareRoot::load(&dd.root(), None).unwrap();
        let old_id = old.info().id;
        // Killed right after the next root was recorded.
        let storage = dd.open_storage().unwrap();
        let master = begin_rotation(&*storage, &old).unwrap();
        let next_id = SoftwareRoot::from_master(&master).unwrap().info().id;
        // Killed part-way through the re-wrap: one value moved by hand.
        let (item, blob) = storage
            .wrapped_items()
            .unwrap()
            .into_iter()
            .find(|(i, _)| matches!(i, keyhold_core::WrappedItem::KeyVersion { .. }))
            .unwrap();
        let ctx = keyhold_barrier::wrap_context(&item).unwrap();
        let next = SoftwareRoot::from_master(&master).unwrap();
        let moved = next
            .wrap(&ctx, old.unwrap(&ctx, &blob).unwrap().expose())
            .unwrap();
        assert!(storage.replace_wrapped(&item, &blob, &moved).unwrap());
        drop(storage);
        let r = dd.rotate_root(None, None, |_, _| {}).unwrap();
        assert_eq!(
            (r.old_id.as_str(), r.new_id.as_str()),
            (old_id.as_str(), next_id.as_str())
        );
        assert!(
            r.rewrap.already >= 1 && r.rewrap.rewrapped >= 1,
            "{:?}",
            r.rewrap
        );
        assert!(!d.path().join("data").join(ROOT_NEXT_FILE).exists());
        // Killed after the switch, before the rotation row was removed.
        let storage = dd.open_storage().unwrap();
        let w = old.wrap(ROOT_NEXT_CONTEXT, master.expose()).unwrap();
        storage.set_meta(ROOT_NEXT_META, Some(&w)).unwrap();
        drop(storage);
        let r = dd.rotate_root(None, None, |_, _| {}).unwrap();
        assert_eq!(r.new_id, next_id);
        assert!(r.retired.is_none());
        assert!(dd
            .open_storage()
            .unwrap()
            .get_meta(ROOT_NEXT_META)
            .unwrap()
            .is_none());
        // Everything opens under the new root; the old one is retired.
        let svc = dd.open(None).unwrap();
        svc.verify_wrapped().unwrap();
        assert_eq!(dd.destroy_retired_roots(None).unwrap().len(), 1);
    }
}
