//! [`KeyService`]: lifecycle, usage rules, credentials and the request-path caches.

mod health_check;
mod inventory;
mod material;
mod request_path;
#[cfg(test)]
mod tests;

use crate::cache::Cache;
use crate::health::{EkmReport, HealthReport, HealthStatus};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyhold_barrier::{
    Barrier, AUDIT_KEY_CONTEXT, AUDIT_KEY_META, HEALTH_KEY_CONTEXT, HEALTH_KEY_META,
};
use keyhold_core::{
    now, validate_access_key_id, validate_secret_access_key, Clock, Error, Key, KeyId, KeyState,
    KeyStore, KeyType, Lifecycle, ManagedObject, Result, Status, StorePrefix, StoredCredential,
    SystemClock, Timestamp, Usage, VersionFlag, WrappedKeyVersion, ACCESS_KEY_ID_ALPHABET,
};
use keyhold_crypto::{random_secret, Aes256Key, HmacKey, SecretBytes, AES256_KEY_LEN};
use keyhold_root::RootOfTrust;
use keyhold_storage::ChangeScope;
use keyhold_storage::Storage;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a deep health result may be reused (the XKS spec allows up to a minute).
const HEALTH_CACHE_TTL: Duration = Duration::from_secs(2);
/// Length of generated access key ids.
const ACCESS_KEY_ID_LEN: usize = 24;

/// Bounds on the request-path caches. Key entries are small (metadata plus
/// an expanded AES key); 100k keys in the store do not mean 100k in memory.
const KEY_CACHE_CAPACITY: usize = 20_000;
const CRED_CACHE_CAPACITY: usize = 4_096;
const STORE_CACHE_CAPACITY: usize = 4_096;
/// Parsed private keys are larger (an RSA-4096 key with its CRT values).
const PRIVATE_KEY_CACHE_CAPACITY: usize = 4_096;

pub(crate) use inventory::hsm_version_label;
pub use material::*;

/// Milliseconds since the Unix epoch.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a write to key `id` of `prefix` touched.
pub(crate) fn key_scope(prefix: &StorePrefix, id: &KeyId) -> ChangeScope {
    ChangeScope::Key {
        store: prefix.as_str().to_owned(),
        id: id.as_str().to_owned(),
    }
}

/// The key service. Cheap to share (`Arc`); all methods take `&self`.
pub struct KeyService {
    storage: Arc<dyn Storage>,
    barrier: Barrier,
    keys: Cache<(String, String), Arc<KeyHandle>>,
    creds: Cache<String, Option<Arc<CredentialEntry>>>,
    stores: Cache<String, Option<KeyStore>>,
    last_token: Mutex<u64>,
    health: Mutex<Option<(Instant, HealthReport)>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// `keyhold lockdown`: every key refused, on every front-end.
    lockdown: std::sync::atomic::AtomicBool,
    /// Held (shared) by each request while it uses cached keys; a refresh
    /// takes it exclusively after dropping the caches, so that once a change
    /// is acknowledged no request still runs on what it replaced.
    inflight: parking_lot::RwLock<()>,
    pub(crate) policies: Cache<String, Option<Arc<crate::policy::Policy>>>,
    /// A node's lease on shared storage (see [`KeyService::set_lease`]).
    lease: std::sync::OnceLock<Arc<std::sync::atomic::AtomicI64>>,
    /// The root of trust, and the next one during a rotation.
    rotation: Arc<crate::rotation::RotatingRoot>,
    /// Rows refused because they did not verify (written outside Keyhold).
    pub(crate) integrity_failures: Arc<std::sync::atomic::AtomicU64>,
    /// The key of row seals (see [`crate::integrity`]).
    pub(crate) row_key: Arc<crate::integrity::RowKey>,
    /// How this database's rows came to be trusted.
    seal_state: crate::integrity::SealState,
    /// Whether any policy exists (none: the request path skips policies).
    pub(crate) any_policies: std::sync::atomic::AtomicBool,
    /// Unwrapped material of managed objects, by uid. Material never
    /// changes for a uid; callers check the object's row first (destroyed
    /// objects have none), so the cache needs no invalidation for
    /// correctness.
    pub(crate) materials: Cache<String, Arc<SecretBytes>>,
    /// Private keys of managed objects, parsed once, by uid: dropped
    /// wherever `materials` drops the material.
    pub(crate) private_keys: Cache<String, Arc<keyhold_crypto::asym::PrivateKey>>,
    /// Managed objects' rows, by uid: dropped on every refresh that sees
    /// the database change, and per uid on this process's own writes.
    pub(crate) objects: Cache<String, Arc<ManagedObject>>,
    /// What running front-ends report about themselves (listeners,
    /// connections), by name: only a server has any.
    live: parking_lot::RwLock<Vec<(&'static str, LiveStatus)>>,
    /// AES-GCM encryptions with random IVs, per key version and object.
    pub(crate) gcm: crate::gcm_budget::GcmBudget,
    /// Serial numbers of revoked KMIP client certificates.
    pub(crate) revoked_certs: parking_lot::RwLock<Arc<std::collections::HashSet<String>>>,
    /// Key stores bound to a front-end other than XKS.
    pub(crate) store_apis: parking_lot::RwLock<crate::store_apis::StoreApis>,
    /// Where every front-end records its key uses.
    audit: crate::AuditBroker,
}

impl KeyService {
    /// Charges one AES-GCM encryption with a random IV to version `version`
    /// of the key `h` (see [`crate::gcm_budget`]): refused at the bound;
    /// past half of it the key is rotated by the scheduled tasks.
    pub(crate) fn charge_encryption(&self, h: &KeyHandle, version: u32) -> Result<()> {
        let subject = || {
            format!(
                "key {}/{} version {version}",
                h.key.store,
                h.key.id.as_str()
            )
        };
        let charged = if version == h.key.current_version {
            let c = h.gcm.get_or_init(|| self.gcm.counter(&subject()));
            self.gcm.charge_counter(&**self.storage(), c)
        } else {
            self.gcm.charge(&**self.storage(), &subject())
        };
        // Past half the bound, or at it (a version that reached it only
        // serves again through a new one), the key is rotated.
        let due = match &charged {
            Ok(c) => c.rotate,
            Err(Error::InvalidState(_)) => true,
            Err(_) => false,
        };
        if due && version == h.key.current_version {
            self.gcm
                .rotate_soon(h.key.store.as_str(), h.key.id.as_str());
        }
        charged.map(drop)
    }

    /// Charges one AES-GCM (or ChaCha20-Poly1305) encryption with a
    /// server-made random IV to the managed object `uid`: refused at the
    /// bound (the client re-keys).
    pub fn charge_object_encryption(&self, uid: &str) -> Result<()> {
        self.gcm
            .charge_counter(&**self.storage(), &self.gcm.object_counter(uid))
            .map(drop)
    }

    /// (the highest number of random-IV encryptions one key has made, as
    /// this process saw; how many keys are past 2^30) for the metrics.
    pub fn gcm_figures(&self) -> (u64, u64) {
        self.gcm.figures()
    }
}

/// Who enforces a key's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageEnforcement {
    /// A software key: Keyhold.
    Keyhold,
    /// An HSM-resident key: Keyhold and the token's attributes.
    KeyholdAndToken,
    /// An HSM-resident key whose token would not change its attributes.
    KeyholdOnlyTokenRefused,
}

/// A front-end's report of itself, as JSON.
pub type LiveStatus = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// How long after a stored row was refused health says so (DEGRADED).
pub(crate) const INTEGRITY_REPORT_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// The meta entry that records a lockdown (sealed: on or off; absent or
/// changed outside Keyhold = locked down).
pub(crate) const LOCKDOWN_META: &str = "lockdown";

impl KeyService {
    /// Opens the service over `storage` with `root`, checking that the root is
    /// the one the database was created with.
    pub fn open(storage: Arc<dyn Storage>, root: Arc<dyn RootOfTrust>) -> Result<Self> {
        Self::open_with_clock(storage, root, Arc::new(SystemClock))
    }

    /// [`KeyService::open`] with the clock that drives timed transitions.
    pub fn open_with_clock(
        storage: Arc<dyn Storage>,
        root: Arc<dyn RootOfTrust>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        Self::open_with(storage, root, clock, false)
    }

    /// [`KeyService::open_with_clock`]; `rows_sealed_before`: the data
    /// directory records that this database's rows were sealed already, so
    /// that unsealed rows are never taken for rows from before sealing
    /// (see [`crate::integrity`]).
    pub fn open_with(
        storage: Arc<dyn Storage>,
        root: Arc<dyn RootOfTrust>,
        clock: Arc<dyn Clock>,
        rows_sealed_before: bool,
    ) -> Result<Self> {
        let rotation = Arc::new(crate::rotation::RotatingRoot::new(root));
        rotation.load_next(&*storage)?;
        let barrier = Barrier::new(rotation.clone());
        barrier.verify_root(
            |n| storage.get_meta(n),
            |n, v| storage.put_meta_if_absent(n, v),
        )?;
        for (name, context) in [
            (HEALTH_KEY_META, HEALTH_KEY_CONTEXT),
            (AUDIT_KEY_META, AUDIT_KEY_CONTEXT),
        ] {
            if storage.get_meta(name)?.is_none() {
                let m =
                    random_secret(AES256_KEY_LEN).map_err(|e| Error::Internal(e.to_string()))?;
                let w = barrier.root().wrap(context, m.expose())?;
                storage.put_meta_if_absent(name, &w)?;
            }
        }
        let integrity_failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let row_key = {
            let w = storage
                .get_meta(AUDIT_KEY_META)?
                .ok_or_else(|| Error::Internal("the audit key is missing".into()))?;
            let k = barrier.root().unwrap(AUDIT_KEY_CONTEXT, &w)?;
            Arc::new(crate::integrity::RowKey::derive(
                &HmacKey::new(k.expose()),
                integrity_failures.clone(),
            ))
        };
        let seal_state = crate::integrity::install(
            &storage,
            &row_key,
            rows_sealed_before,
            LOCKDOWN_META,
            clock.now(),
        )?;
        let token = storage.change_token()?;
        let locked = Self::read_lockdown(&row_key, &*storage)?;
        // A policy set that does not verify: the request path asks storage,
        // which refuses.
        let any_policies = match storage.list_policies() {
            Ok(p) => !p.is_empty(),
            Err(Error::Integrity(_)) => true,
            Err(e) => return Err(e),
        };
        let svc = Self {
            storage,
            barrier,
            keys: Cache::new(KEY_CACHE_CAPACITY),
            creds: Cache::new(CRED_CACHE_CAPACITY),
            stores: Cache::new(STORE_CACHE_CAPACITY),
            policies: Cache::new(STORE_CACHE_CAPACITY),
            lease: std::sync::OnceLock::new(),
            rotation,
            integrity_failures,
            row_key,
            seal_state,
            materials: Cache::new(KEY_CACHE_CAPACITY),
            private_keys: Cache::new(PRIVATE_KEY_CACHE_CAPACITY),
            objects: Cache::new(KEY_CACHE_CAPACITY),
            any_policies: std::sync::atomic::AtomicBool::new(any_policies),
            last_token: Mutex::new(token),
            health: Mutex::new(None),
            lockdown: std::sync::atomic::AtomicBool::new(locked),
            clock,
            inflight: parking_lot::RwLock::new(()),
            live: parking_lot::RwLock::new(Vec::new()),
            gcm: crate::gcm_budget::GcmBudget::new(),
            revoked_certs: Default::default(),
            store_apis: Default::default(),
            audit: Default::default(),
        };
        if matches!(svc.seal_state, crate::integrity::SealState::SealedNow(_)) {
            // Sealed now (a new database, or one from before sealed rows):
            // the revocations recorded so far, as they stand.
            svc.write_revoked_list()?;
            svc.seal_legacy_xks_grants()?;
        }
        svc.load_revoked_certs();
        svc.load_store_apis();
        Ok(svc)
    }

    /// Whether the root of trust is an HSM (PKCS#11).
    pub fn root_has_hsm(&self) -> bool {
        self.barrier.root().hsm_keys().is_some()
    }

    /// Lets a running front-end report on itself (see [`Self::live_status`]).
    pub fn register_live(&self, name: &'static str, report: LiveStatus) {
        let mut l = self.live.write();
        l.retain(|(n, _)| *n != name);
        l.push((name, report));
    }

    /// What front-end `name` of this process reports now; `None` when it
    /// does not run here (e.g. in an admin command run on the data directory).
    pub fn live_status(&self, name: &str) -> Option<serde_json::Value> {
        self.live
            .read()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f())
    }

    /// The audit broker every front-end records its key uses through.
    pub fn audit(&self) -> &crate::AuditBroker {
        &self.audit
    }

    /// Whether a cache miss may block on the root of trust (an HSM) or on
    /// the database (a server): the async front-ends then warm the caches
    /// on a blocking thread first.
    pub fn miss_blocks(&self) -> bool {
        self.barrier.root().blocks() || self.storage.blocks()
    }

    /// Whether `credential(access_key_id)` would be answered from memory.
    pub(crate) fn is_credential_cached(&self, access_key_id: &str) -> bool {
        self.cache_valid() && self.creds.get(access_key_id).is_some()
    }

    /// Whether the (cached) key's material lives in an HSM, so that using it blocks.
    pub(crate) fn is_key_hsm_resident(&self, store: &StorePrefix, id: &str) -> bool {
        self.keys
            .get(&(store.as_str().to_owned(), id.to_owned()))
            .is_some_and(|h| h.current.as_ref().is_some_and(|m| m.is_hsm()))
    }

    /// Whether `key_handle(store, id)` would be answered from memory.
    pub(crate) fn is_key_cached(&self, store: &StorePrefix, id: &str) -> bool {
        self.cache_valid()
            && self
                .keys
                .get(&(store.as_str().to_owned(), id.to_owned()))
                .is_some()
    }

    /// Whether decrypting with `version` of this key needs no unwrap: the
    /// key is cached with that version (current or older) already unwrapped.
    pub(crate) fn is_version_cached(&self, store: &StorePrefix, id: &str, version: u32) -> bool {
        self.keys
            .get(&(store.as_str().to_owned(), id.to_owned()))
            .is_some_and(|h| {
                h.key.current_version == version
                    || h.versions.lock().iter().any(|(v, ..)| *v == version)
            })
    }

    /// Whether `health()` would be answered from its cache.
    pub(crate) fn is_health_cached(&self) -> bool {
        self.health
            .lock()
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < HEALTH_CACHE_TTL)
    }

    pub(crate) fn barrier(&self) -> &Barrier {
        &self.barrier
    }

    /// A sealed backup of everything storage holds, taken while traffic
    /// goes on (see [`crate::backup`]).
    pub fn create_backup(&self) -> Result<(Vec<u8>, crate::backup::BackupHeader)> {
        let backend = if self.shared_storage() {
            "postgres"
        } else {
            "sqlite"
        };
        crate::backup::create(&*self.storage, &**self.barrier.root(), backend)
    }

    /// Opens a backup with this key manager's root of trust.
    pub fn open_backup(
        &self,
        bytes: &[u8],
    ) -> Result<(crate::backup::BackupHeader, keyhold_storage::Snapshot)> {
        crate::backup::open(bytes, &**self.barrier.root())
    }

    /// Checks that the root of trust unwraps every wrapped item in storage;
    /// returns how many it checked.
    pub fn verify_wrapped(&self) -> Result<usize> {
        crate::rewrap::verify_all(&*self.storage, &**self.barrier.root())
    }

    /// Whether the root of trust's HSM holds a usable key with this label.
    pub fn hsm_key_exists(&self, label: &str) -> bool {
        self.barrier
            .root()
            .hsm_keys()
            .is_some_and(|k| k.check_key(label).is_ok())
    }

    /// Everything storage does: for the service itself. Front-ends and the
    /// server get the narrow parts below.
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The nodes sharing the storage: heartbeats, leases, break-glass
    /// acknowledgements, and whether other nodes may share it at all.
    pub fn nodes(&self) -> Arc<dyn keyhold_storage::NodeRegistry> {
        self.storage.clone()
    }

    /// Where audit checkpoints and the records shipped from every node are
    /// kept.
    pub fn audit_store(&self) -> Arc<dyn keyhold_storage::AuditStore> {
        self.storage.clone()
    }

    /// Whether other nodes share this service's storage.
    pub fn shared_storage(&self) -> bool {
        self.storage.shared()
    }

    /// A key's versions (never their material).
    pub fn key_versions(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
    ) -> Result<Vec<keyhold_storage::VersionInfo>> {
        self.storage.list_key_versions(prefix, id)
    }

    /// Key counts by (store, lifecycle state, status), for metrics.
    pub fn key_state_counts(&self) -> Result<Vec<(String, String, String, u64)>> {
        self.storage.key_state_counts()
    }

    /// Drops every cached entry if storage changed since the last call.
    /// Call periodically (the server does, every 100 ms) and after writes.
    pub fn refresh(&self) -> Result<bool> {
        let token = self.storage.change_token()?;
        let mut last = self.last_token.lock();
        if *last == token {
            return Ok(false);
        }
        let since = std::mem::replace(&mut *last, token);
        drop(last);
        // Drop only what changed when storage says what that was: keys
        // made or changed on another node leave the rest of the cache (and
        // its ability to serve through a database outage) alone.
        match self.storage.changes_since(since) {
            Some(scopes) => {
                for s in &scopes {
                    if !self.forget(s) {
                        break;
                    }
                }
            }
            None => {
                self.forget(&ChangeScope::All);
            }
        }
        // A root rotation begun elsewhere: wrap under the next root from
        // now on (before this refresh is acknowledged).
        if let Err(e) = self.rotation.load_next(&*self.storage) {
            tracing::warn!(error = %e, "cannot read the root rotation state");
        }
        if let Ok(locked) = Self::read_lockdown(&self.row_key, &*self.storage) {
            self.lockdown
                .store(locked, std::sync::atomic::Ordering::SeqCst);
        }
        // Wait for requests still running on the dropped entries.
        drop(self.inflight.write());
        Ok(true)
    }

    /// Held by a front-end while it serves one request with cached keys
    /// (see [`KeyService::refresh`]). Never take it twice in one thread.
    pub fn request_guard(&self) -> parking_lot::RwLockReadGuard<'_, ()> {
        self.inflight.read()
    }

    /// From now on cached entries serve only until the Unix ms time in
    /// `until` (a node's lease on shared storage, renewed by its heartbeat);
    /// past it every lookup goes to storage, which a node cut off from the
    /// database cannot reach.
    pub fn set_lease(&self, until: Arc<std::sync::atomic::AtomicI64>) {
        let _ = self.lease.set(until);
    }

    /// Whether lockdown is in force as stored: a switch that does not
    /// verify (changed or deleted outside Keyhold) locks down.
    fn read_lockdown(key: &crate::integrity::RowKey, storage: &dyn Storage) -> Result<bool> {
        let stored = storage.get_meta(LOCKDOWN_META)?;
        let (locked, genuine) = key.read_lockdown(stored.as_deref());
        if !genuine {
            key.report("the lockdown switch");
        }
        Ok(locked)
    }

    /// How this database's rows came to be trusted when the service opened
    /// it (sealed now, sealed before, or a tampered marker).
    pub fn seal_state(&self) -> &crate::integrity::SealState {
        &self.seal_state
    }

    /// Rows refused so far because they did not verify: written or changed
    /// outside Keyhold (health and metrics report it).
    pub fn integrity_failures(&self) -> u64 {
        self.integrity_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether cached entries may serve (no lease, or one not run out).
    #[inline]
    pub(crate) fn cache_valid(&self) -> bool {
        match self.lease.get() {
            None => true,
            Some(u) => unix_ms() < u.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    pub(crate) fn set_locked_down(&self, on: bool) {
        self.lockdown.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// The root of trust rotation under way, if any (its next root).
    pub fn rotation(&self) -> &Arc<crate::rotation::RotatingRoot> {
        &self.rotation
    }

    /// The audit log's MAC key (unwrapped by the root of trust).
    pub fn audit_key(&self) -> Result<HmacKey> {
        let w = self
            .storage
            .get_meta(AUDIT_KEY_META)?
            .ok_or_else(|| Error::Internal("the audit key is missing".into()))?;
        let k = self.barrier.root().unwrap(AUDIT_KEY_CONTEXT, &w)?;
        Ok(HmacKey::new(k.expose()))
    }

    /// Keys in the request-path cache now.
    pub fn cached_keys(&self) -> usize {
        self.keys.len()
    }

    /// Whether `keyhold lockdown` is in force.
    pub fn is_locked_down(&self) -> bool {
        self.lockdown.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The time as the service sees it (its clock).
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Checks that `op` may run with this key now: lockdown, break glass,
    /// lifecycle state and usage.
    pub(crate) fn authorize(&self, h: &KeyHandle, op: Operation) -> Result<()> {
        if op != Operation::Metadata {
            self.refuse_in_lockdown()?;
        }
        h.check(op, self.clock.now())
    }

    /// XKS `keyStatus` and `keyUsage` of a resolved key now.
    pub(crate) fn reported(&self, h: &KeyHandle) -> (Status, Usage) {
        h.reported(self.clock.now(), self.is_locked_down())
    }

    /// Notes whether any policy exists (the request path skips policies
    /// when none does). A set that does not verify, or cannot be read,
    /// counts as some: keys then ask storage, which refuses.
    fn note_any_policies(&self) {
        let any = match self.storage.list_policies() {
            Ok(p) => !p.is_empty(),
            Err(Error::Integrity(_)) => true,
            // Storage out of reach: what was known stands.
            Err(_) => return,
        };
        self.any_policies
            .store(any, std::sync::atomic::Ordering::SeqCst);
    }
}
