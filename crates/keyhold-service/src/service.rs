//! [`KeyService`]: lifecycle, usage rules, credentials and the request-path caches.

use crate::cache::Cache;
use crate::health::{EkmReport, HealthReport, HealthStatus};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyhold_core::{
    now, validate_access_key_id, validate_secret_access_key, Clock, Error, Key, KeyId, KeyState,
    KeyStore, Lifecycle, ManagedObject, Result, Status, StorePrefix, StoredCredential, SystemClock,
    Timestamp, Usage, VersionFlag, WrappedKeyVersion, ACCESS_KEY_ID_ALPHABET,
};
use keyhold_crypto::{random_secret, Aes256Key, HmacKey, SecretBytes, AES256_KEY_LEN};
use keyhold_keystore::{
    Barrier, RootOfTrust, AUDIT_KEY_CONTEXT, AUDIT_KEY_META, HEALTH_KEY_CONTEXT, HEALTH_KEY_META,
};
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

/// The operation a front-end wants to perform with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Metadata,
    Encrypt,
    Decrypt,
}

/// A SigV4 credential resolved for the request path.
pub struct CredentialEntry {
    pub store: StorePrefix,
    /// The secret access key, for SigV4 verification.
    pub secret: SecretBytes,
    /// Signing keys derived for (date, region), cached: the derivation is four
    /// HMACs and the date changes once a day.
    pub signing_keys: Mutex<Vec<(String, Arc<HmacKey>)>>,
}

impl std::fmt::Debug for CredentialEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialEntry")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// What `credential add` returns, once: the secret is not retrievable later.
pub struct NewCredential {
    pub store: StorePrefix,
    pub access_key_id: String,
    pub secret_access_key: SecretBytes,
}

/// A credential as listed to operators: never the secret.
#[derive(Debug, Clone)]
pub struct CredentialInfo {
    pub access_key_id: String,
    pub store: StorePrefix,
    pub created_at: Timestamp,
}

/// Key material ready for AES-GCM: in memory (unwrapped from storage) or
/// resident in the HSM (used there through the root of trust).
pub(crate) enum KeyMaterial {
    Software(Aes256Key),
    Hsm {
        root: Arc<dyn RootOfTrust>,
        label: String,
    },
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMaterial::Software(_) => f.write_str("KeyMaterial::Software([REDACTED])"),
            KeyMaterial::Hsm { label, .. } => write!(f, "KeyMaterial::Hsm({label:?})"),
        }
    }
}

impl KeyMaterial {
    /// Whether using this key calls into an HSM (and so may block).
    pub(crate) fn is_hsm(&self) -> bool {
        matches!(self, KeyMaterial::Hsm { .. })
    }

    /// AES-GCM encryption of `in_out` in place with a fresh 96-bit IV.
    pub(crate) fn seal(&self, aad: &[u8], in_out: &mut [u8]) -> Result<([u8; 12], [u8; 16])> {
        match self {
            KeyMaterial::Software(k) => k
                .seal_in_place(aad, in_out)
                .map_err(|e| Error::Internal(e.to_string())),
            KeyMaterial::Hsm { root, label } => {
                let hsm = root
                    .hsm_keys()
                    .ok_or_else(|| Error::RootOfTrust("the root of trust has no HSM".into()))?;
                let (iv, ct, tag) = hsm.encrypt(label, aad, in_out)?;
                in_out.copy_from_slice(&ct);
                Ok((iv, tag))
            }
        }
    }

    /// AES-GCM decryption; a wrong tag (or IV, AAD…) is `InvalidCiphertext`.
    pub(crate) fn open(&self, iv: &[u8], aad: &[u8], ct: &[u8], tag: &[u8]) -> Result<SecretBytes> {
        match self {
            KeyMaterial::Software(k) => k
                .open(iv, aad, ct, tag)
                .map_err(|_| Error::InvalidCiphertext),
            KeyMaterial::Hsm { root, label } => root
                .hsm_keys()
                .ok_or_else(|| Error::RootOfTrust("the root of trust has no HSM".into()))?
                .decrypt(label, iv, aad, ct, tag),
        }
    }
}

/// A key resolved for use on the request path.
pub(crate) struct KeyHandle {
    pub key: Key,
    store_status: Status,
    /// The current version's material; `None` once the key is destroyed.
    current: Option<Arc<KeyMaterial>>,
    current_flag: VersionFlag,
    versions: Mutex<Vec<(u32, Arc<KeyMaterial>, VersionFlag)>>,
    /// The store's and the key's secondary-authorization policies.
    pub(crate) policies: Vec<Arc<crate::policy::Policy>>,
    /// The current version's random-IV counter, found once per handle.
    gcm: std::sync::OnceLock<Arc<crate::gcm_budget::Counter>>,
}

impl std::fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHandle")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl KeyHandle {
    /// The newest version and its key: encrypt always uses it.
    pub(crate) fn current(&self) -> Result<(u32, &KeyMaterial)> {
        self.current_material()
            .map(|m| (self.key.current_version, &**m))
    }

    fn current_material(&self) -> Result<&Arc<KeyMaterial>> {
        self.current
            .as_ref()
            .ok_or_else(|| Error::InvalidState(format!("key {} is destroyed", self.key.id)))
    }

    /// Checks that the key (and its store) may perform `op` at time `now`.
    /// Break glass (a disabled store or key) and the lifecycle state answer
    /// InvalidState; an operation the key's state or usage does not allow
    /// answers KeyUsage.
    pub(crate) fn check(&self, op: Operation, now: Timestamp) -> Result<()> {
        if self.store_status != Status::Enabled {
            return Err(Error::InvalidState(format!(
                "key store {} is disabled",
                self.key.store
            )));
        }
        if op == Operation::Metadata {
            return Ok(());
        }
        let id = &self.key.id;
        if self.key.status != Status::Enabled {
            return Err(Error::InvalidState(format!("key {id} is disabled")));
        }
        let l = &self.key.lifecycle;
        if let Some(t) = l.destroy_at.filter(|_| l.pending_destruction()) {
            return Err(Error::InvalidState(format!(
                "key {id} is scheduled for destruction at {}",
                keyhold_core::time::format_rfc3339(t)
            )));
        }
        let state = l.state_at(now);
        match (state, op) {
            (KeyState::PreActive, _) => {
                return Err(Error::InvalidState(format!("key {id} is not active yet")))
            }
            (KeyState::Destroyed, _) => {
                return Err(Error::InvalidState(format!("key {id} is destroyed")))
            }
            (KeyState::Deactivated | KeyState::Compromised, Operation::Encrypt) => {
                return Err(Error::KeyUsage(format!(
                    "key {id} is {state}: it decrypts only"
                )))
            }
            (KeyState::Active, Operation::Encrypt) if self.current_flag != VersionFlag::Good => {
                return Err(Error::KeyUsage(format!(
                    "the current version of key {id} is marked compromised: rotate the key"
                )))
            }
            _ => {}
        }
        let allowed = match op {
            Operation::Encrypt => self.key.usage.encrypt,
            Operation::Decrypt => self.key.usage.decrypt,
            Operation::Metadata => true,
        };
        if !allowed {
            return Err(Error::KeyUsage(format!(
                "key {id} does not allow {} (usage: {})",
                match op {
                    Operation::Encrypt => "ENCRYPT",
                    _ => "DECRYPT",
                },
                self.key.usage
            )));
        }
        Ok(())
    }

    /// What XKS GetKeyMetadata reports at `now`: `keyStatus` and `keyUsage`.
    /// A key that cannot serve requests is DISABLED; a deactivated or
    /// compromised one only DECRYPTs.
    pub(crate) fn reported(&self, now: Timestamp, lockdown: bool) -> (Status, Usage) {
        let l = &self.key.lifecycle;
        let state = l.state_at(now);
        let usable = !lockdown
            && self.store_status == Status::Enabled
            && self.key.status == Status::Enabled
            && !l.pending_destruction()
            && matches!(
                state,
                KeyState::Active | KeyState::Deactivated | KeyState::Compromised
            );
        let mut usage = self.key.usage;
        if state != KeyState::Active {
            usage.encrypt = false;
        }
        (
            if usable {
                Status::Enabled
            } else {
                Status::Disabled
            },
            usage,
        )
    }
}

/// A new, enabled key at version 1.
fn new_key(
    prefix: &StorePrefix,
    id: &KeyId,
    usage: Usage,
    t: Timestamp,
    hsm_label: Option<String>,
) -> Key {
    Key {
        store: prefix.clone(),
        id: id.clone(),
        status: Status::Enabled,
        usage,
        current_version: 1,
        created_at: t,
        updated_at: t,
        hsm_label,
        lifecycle: Lifecycle::default(),
    }
}

/// Refuses a lifecycle a new key cannot start in.
fn check_new_lifecycle(l: &Lifecycle) -> Result<()> {
    if !matches!(l.state, KeyState::Active | KeyState::PreActive) {
        return Err(Error::invalid("state", "a new key is ACTIVE or PRE_ACTIVE"));
    }
    if l.activate_at.is_some() && l.state != KeyState::PreActive {
        return Err(Error::invalid(
            "activation date",
            "only a PRE_ACTIVE key takes an activation date",
        ));
    }
    if let (Some(a), Some(d)) = (l.activate_at, l.deactivate_at) {
        if d <= a {
            return Err(Error::invalid(
                "deactivation date",
                "must be after the activation date",
            ));
        }
    }
    if l.rotation_period.is_some_and(|p| p < 86_400) {
        return Err(Error::invalid(
            "rotation period",
            "must be at least one day",
        ));
    }
    Ok(())
}

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
            audit: Default::default(),
        };
        if matches!(svc.seal_state, crate::integrity::SealState::SealedNow(_)) {
            // Sealed now (a new database, or one from before sealed rows):
            // the revocations recorded so far, as they stand.
            svc.write_revoked_list()?;
            svc.seal_legacy_xks_grants()?;
        }
        svc.load_revoked_certs();
        Ok(svc)
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

    pub fn barrier(&self) -> &Barrier {
        &self.barrier
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

    /// Whole-database operations: consistent snapshots (backups) and the
    /// wrapped values a change of root of trust re-wraps.
    pub fn maintenance(&self) -> &dyn keyhold_storage::Maintenance {
        &*self.storage
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

    /// Drops every cached entry.
    pub fn invalidate(&self) {
        self.keys.clear();
        self.objects.clear();
        self.creds.clear();
        self.stores.clear();
        self.policies.clear();
        self.note_any_policies();
    }

    /// Drops what a change of `scope` may have made stale; false when that
    /// was everything.
    fn forget(&self, scope: &ChangeScope) -> bool {
        match scope {
            ChangeScope::All => {
                self.invalidate();
                self.load_revoked_certs();
                return false;
            }
            ChangeScope::Key { store, id } => {
                self.keys.clear_key(&(store.clone(), id.clone()));
            }
            ChangeScope::Object(uid) => {
                self.objects.clear_key(uid);
                self.materials.clear_key(uid);
            }
            // A store's status is in each of its keys' handles, and its
            // credentials lead to it.
            ChangeScope::Store(prefix) => {
                self.stores.clear_key(prefix);
                self.keys.clear_where(|(s, _), _| s == prefix);
                self.creds
                    .clear_where(|_, c| c.as_ref().is_some_and(|c| c.store.as_str() == prefix));
            }
            ChangeScope::Credential(akid) => self.creds.clear_key(akid),
            // Policies are in the handles of the keys they govern.
            // The sealed index of policy scopes changes with every policy,
            // whose own change is announced too.
            ChangeScope::Policy(name) if name == keyhold_storage::POLICY_INDEX_SCOPE => {
                self.note_any_policies();
            }
            ChangeScope::Policy(name) => {
                self.policies.clear_key(name);
                match name.split_once(' ') {
                    Some(("store", p)) => self.keys.clear_where(|(s, _), _| s == p),
                    Some(("key", rest)) => match rest.split_once(' ') {
                        Some((p, k)) => self.keys.clear_key(&(p.to_owned(), k.to_owned())),
                        None => self.keys.clear(),
                    },
                    _ => self.keys.clear(),
                }
                self.note_any_policies();
            }
            // Read where used, not cached: the break-glass epoch, lockdown
            // (read by every refresh), admin tokens.
            ChangeScope::Meta(name)
                if name == crate::lifecycle::EPOCH_META
                    || name == LOCKDOWN_META
                    || name.starts_with(crate::admin::TOKEN_META_PREFIX) => {}
            ChangeScope::Meta(name)
                if name.starts_with(crate::client_certs::CERT_META_PREFIX)
                    || name == crate::client_certs::REVOKED_LIST_META =>
            {
                self.load_revoked_certs();
            }
            ChangeScope::Meta(_) => return self.forget(&ChangeScope::All),
        }
        true
    }

    /// After a write by this process: drops what it touched, here, at once
    /// (the periodic refresh handles everyone else's writes; on storage that
    /// says what changed, only what they touched too).
    pub(crate) fn after_write(&self, scope: ChangeScope) {
        self.forget(&scope);
    }

    // ----- request path -------------------------------------------------

    /// Looks up a key store by its URI prefix (cached).
    pub fn store_by_prefix(&self, prefix: &str) -> Result<Option<KeyStore>> {
        if let Some(s) = self.stores.get(prefix).filter(|_| self.cache_valid()) {
            return Ok(s);
        }
        let g = self.stores.generation();
        let found = match StorePrefix::parse(prefix) {
            Ok(p) if p.as_str() == prefix => self.storage.get_store(&p)?,
            _ => None,
        };
        self.stores.insert(g, prefix.to_owned(), found.clone());
        Ok(found)
    }

    /// Resolves an access key id to its store and secret (cached).
    pub fn credential(&self, access_key_id: &str) -> Result<Option<Arc<CredentialEntry>>> {
        if let Some(c) = self.creds.get(access_key_id).filter(|_| self.cache_valid()) {
            return Ok(c);
        }
        if validate_access_key_id(access_key_id).is_err() {
            return Ok(None);
        }
        let g = self.creds.generation();
        let entry = match self.storage.get_credential(access_key_id)? {
            None => None,
            Some(c) => {
                let secret =
                    self.barrier
                        .unwrap_secret(&c.store, &c.access_key_id, &c.wrapped_secret)?;
                Some(Arc::new(CredentialEntry {
                    store: c.store,
                    secret,
                    signing_keys: Mutex::new(Vec::new()),
                }))
            }
        };
        self.creds
            .insert(g, access_key_id.to_owned(), entry.clone());
        Ok(entry)
    }

    /// Resolves a key of a store for use (cached). Unknown → `KeyNotFound`.
    pub(crate) fn key_handle(&self, store: &StorePrefix, id: &str) -> Result<Arc<KeyHandle>> {
        let ck = (store.as_str().to_owned(), id.to_owned());
        if let Some(h) = self.keys.get(&ck).filter(|_| self.cache_valid()) {
            return Ok(h);
        }
        let not_found = || Error::KeyNotFound {
            store: store.display().to_owned(),
            key: id.to_owned(),
        };
        let key_id = KeyId::parse(id).map_err(|_| not_found())?;
        let g = self.keys.generation();
        let store_rec = self
            .storage
            .get_store(store)?
            .ok_or_else(|| Error::StoreNotFound(store.display().to_owned()))?;
        let key = self
            .storage
            .get_key(store, &key_id)?
            .ok_or_else(not_found)?;
        let (current, current_flag) = if key.lifecycle.state == KeyState::Destroyed {
            (None, VersionFlag::Good)
        } else {
            let (m, f) = self.load_version(&key, key.current_version)?;
            (Some(Arc::new(m)), f)
        };
        let policies = self.policies_for(store, id)?;
        let h = Arc::new(KeyHandle {
            store_status: store_rec.status,
            current,
            current_flag,
            versions: Mutex::new(Vec::new()),
            policies,
            key,
            gcm: std::sync::OnceLock::new(),
        });
        self.keys.insert(g, ck, h.clone());
        Ok(h)
    }

    fn load_version(&self, key: &Key, version: u32) -> Result<(KeyMaterial, VersionFlag)> {
        let wv = self
            .storage
            .get_key_version(&key.store, &key.id, version)?
            .ok_or(Error::InvalidCiphertext)?;
        if let Some(label) = &key.hsm_label {
            // No material outside the HSM: each version is a key in it.
            let m = KeyMaterial::Hsm {
                root: self.barrier.root().clone(),
                label: hsm_version_label(label, version),
            };
            return Ok((m, wv.flag));
        }
        if wv.wrapped.is_empty() {
            return Err(Error::InvalidState(format!(
                "version {version} of key {} was destroyed",
                key.id
            )));
        }
        let m = self
            .barrier
            .unwrap_key(&key.store, &key.id, wv.version, &wv.wrapped)?;
        Ok((KeyMaterial::Software(m), wv.flag))
    }

    /// The key material of `version` of a resolved key, for decryption. An
    /// unknown version is an invalid ciphertext; a retired one (below the
    /// minimum decryption version) or one marked compromised is refused
    /// (InvalidState). A compromised version whose use was explicitly allowed
    /// comes back with its flag, for the caller to report.
    pub(crate) fn key_version(
        &self,
        h: &KeyHandle,
        version: u32,
    ) -> Result<(Arc<KeyMaterial>, VersionFlag)> {
        if version == 0 || version > h.key.current_version {
            return Err(Error::InvalidCiphertext);
        }
        let min = h.key.lifecycle.min_decrypt_version;
        if version < min {
            return Err(Error::InvalidState(format!(
                "version {version} of key {} is retired (minimum decryption version {min})",
                h.key.id
            )));
        }
        let (k, flag) = if version == h.key.current_version {
            (h.current_material()?.clone(), h.current_flag)
        } else {
            // One statement: the lock is released before loading.
            let cached = h
                .versions
                .lock()
                .iter()
                .find(|(v, ..)| *v == version)
                .map(|(_, k, f)| (k.clone(), *f));
            match cached {
                Some(c) => c,
                None => {
                    let (m, f) = self.load_version(&h.key, version)?;
                    let k = Arc::new(m);
                    let mut vs = h.versions.lock();
                    if vs.len() >= 64 {
                        vs.clear();
                    }
                    vs.push((version, k.clone(), f));
                    (k, f)
                }
            }
        };
        if flag == VersionFlag::Compromised {
            return Err(Error::InvalidState(format!(
                "version {version} of key {} is marked compromised",
                h.key.id
            )));
        }
        Ok((k, flag))
    }

    /// Deep health check (cached for a short time).
    pub fn health(&self) -> HealthReport {
        if let Some((at, r)) = self.health.lock().as_ref() {
            if at.elapsed() < HEALTH_CACHE_TTL {
                return r.clone();
            }
        }
        // The service's own check (storage, unwrap, AES-GCM round trip),
        // then each HSM token's own round trip on its health key.
        let deep = self.deep_check();
        if let Err(e) = &deep {
            tracing::warn!(error = %e, "deep health check failed");
        }
        let tokens = self.barrier.root().ekm_health();
        let ekms = if tokens.is_empty() {
            let info = self.barrier.root().info();
            vec![EkmReport {
                id: info.id,
                model: info.model,
                status: match &deep {
                    Ok(()) => HealthStatus::Active,
                    // The database is unreachable but cached keys still
                    // serve (for at most the backend's maximum staleness).
                    Err(Error::DependencyTimeout(_) | Error::Storage(_)) if self.keys.len() > 0 => {
                        HealthStatus::Degraded
                    }
                    Err(_) => HealthStatus::Unavailable,
                },
                detail: deep.as_ref().err().map(|e| e.to_string()),
            }]
        } else {
            tokens
                .into_iter()
                .map(|t| {
                    // A token that works while the service cannot serve
                    // (its storage is down, say) is DEGRADED.
                    let (status, detail) = match (t.error, &deep) {
                        (Some(e), _) => (HealthStatus::Unavailable, Some(e)),
                        (None, Err(e)) => (HealthStatus::Degraded, Some(e.to_string())),
                        (None, Ok(())) => (HealthStatus::Active, None),
                    };
                    EkmReport {
                        id: t.id,
                        model: t.model,
                        status,
                        detail,
                    }
                })
                .collect()
        };
        let mut r = HealthReport { ekms };
        self.note_integrity(&mut r);
        *self.health.lock() = Some((Instant::now(), r.clone()));
        r
    }

    /// Stored rows refused lately (changed outside Keyhold) make an ACTIVE
    /// report DEGRADED, saying so, for [`INTEGRITY_REPORT_WINDOW`] after
    /// the last one.
    fn note_integrity(&self, r: &mut HealthReport) {
        let Some(last) = self.row_key.last_failure_ms() else {
            return;
        };
        let now_ms = self.clock.now() * 1000;
        if now_ms - last > INTEGRITY_REPORT_WINDOW.as_millis() as i64 {
            return;
        }
        let detail = format!(
            "{} stored rows refused since start: changed outside Keyhold (latest: {})",
            self.integrity_failures(),
            self.row_key
                .recent_failures()
                .last()
                .map_or("", String::as_str)
        );
        for e in &mut r.ekms {
            if e.status == HealthStatus::Active {
                e.status = HealthStatus::Degraded;
                e.detail = Some(detail.clone());
            }
        }
    }

    /// Every row that grants or limits power, read and checked now
    /// (stores, keys, KMIP objects, policies, lockdown, admin tokens):
    /// those refused, by name.
    pub fn scan_integrity(&self) -> Result<Vec<String>> {
        self.row_key.forget_recent();
        let before = self.integrity_failures();
        let st = &self.storage;
        for store in st.list_stores()? {
            let mut after: Option<KeyId> = None;
            loop {
                let page = st.list_keys(&store.prefix, after.as_ref(), 1000)?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
            }
        }
        st.list_objects()?;
        match st.list_policies() {
            Ok(_) | Err(Error::Integrity(_)) => {}
            Err(e) => return Err(e),
        }
        Self::read_lockdown(&self.row_key, &**st)?;
        for t in self.admin_tokens()? {
            if !self.admin_token_is_genuine(&t)? {
                self.row_key.report(&format!("admin token {}", t.name));
            }
        }
        if self.integrity_failures() == before {
            return Ok(Vec::new());
        }
        Ok(self.row_key.recent_failures())
    }

    fn deep_check(&self) -> Result<()> {
        self.storage.ping()?;
        let w = self
            .storage
            .get_meta(HEALTH_KEY_META)?
            .ok_or_else(|| Error::Internal("health test key missing".into()))?;
        let m = self.barrier.root().unwrap(HEALTH_KEY_CONTEXT, &w)?;
        let k = Aes256Key::from_bytes(m.expose()).map_err(|e| Error::Internal(e.to_string()))?;
        let probe = random_secret(32).map_err(|e| Error::Internal(e.to_string()))?;
        let mut buf = probe.expose().to_vec();
        let (iv, tag) = k
            .seal_in_place(b"keyhold health", &mut buf)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let back = k
            .open(&iv, b"keyhold health", &buf, &tag)
            .map_err(|_| Error::Internal("health round trip failed".into()))?;
        if back.expose() != probe.expose() {
            return Err(Error::Internal("health round trip mismatch".into()));
        }
        Ok(())
    }

    // ----- administration ------------------------------------------------

    pub fn create_store(&self, prefix: &StorePrefix, description: &str) -> Result<KeyStore> {
        let s = KeyStore {
            prefix: prefix.clone(),
            status: Status::Enabled,
            description: description.to_owned(),
            created_at: now(),
        };
        self.storage.create_store(&s)?;
        self.after_write(ChangeScope::Store(prefix.as_str().to_owned()));
        Ok(s)
    }

    pub fn get_store(&self, prefix: &StorePrefix) -> Result<KeyStore> {
        self.storage
            .get_store(prefix)?
            .ok_or_else(|| Error::StoreNotFound(prefix.display().to_owned()))
    }

    pub fn list_stores(&self) -> Result<Vec<KeyStore>> {
        self.storage.list_stores()
    }

    pub fn set_store_status(&self, prefix: &StorePrefix, status: Status) -> Result<()> {
        self.storage.set_store_status(prefix, status)?;
        self.after_write(ChangeScope::Store(prefix.as_str().to_owned()));
        Ok(())
    }

    /// Generates a new credential for a store. The secret is returned once.
    pub fn add_credential(&self, prefix: &StorePrefix) -> Result<NewCredential> {
        let raw = random_secret(ACCESS_KEY_ID_LEN).map_err(|e| Error::Internal(e.to_string()))?;
        // 256 is a multiple of 32: reducing mod 32 gives no bias.
        let akid: String = raw
            .expose()
            .iter()
            .map(|b| ACCESS_KEY_ID_ALPHABET[(*b % 32) as usize] as char)
            .collect();
        let secret = random_secret(32).map_err(|e| Error::Internal(e.to_string()))?;
        let secret_text = SecretBytes::new(B64.encode(secret.expose()).into_bytes());
        self.import_credential(prefix, &akid, &secret_text)?;
        Ok(NewCredential {
            store: prefix.clone(),
            access_key_id: akid,
            secret_access_key: secret_text,
        })
    }

    /// Adds a credential chosen by the operator, after checking the spec's rules.
    pub fn import_credential(
        &self,
        prefix: &StorePrefix,
        access_key_id: &str,
        secret: &SecretBytes,
    ) -> Result<()> {
        validate_access_key_id(access_key_id)?;
        let s = std::str::from_utf8(secret.expose())
            .map_err(|_| Error::invalid("secret access key", "must be ASCII"))?;
        validate_secret_access_key(s)?;
        if self.storage.get_credential(access_key_id)?.is_some() {
            return Err(Error::invalid("access key id", "already in use"));
        }
        let wrapped = self
            .barrier
            .wrap_secret(prefix, access_key_id, secret.expose())?;
        self.storage.add_credential(&StoredCredential {
            access_key_id: access_key_id.to_owned(),
            store: prefix.clone(),
            wrapped_secret: wrapped,
            created_at: now(),
        })?;
        self.after_write(ChangeScope::Credential(access_key_id.to_owned()));
        Ok(())
    }

    pub fn remove_credential(&self, prefix: &StorePrefix, access_key_id: &str) -> Result<()> {
        self.storage.remove_credential(prefix, access_key_id)?;
        self.after_write(ChangeScope::Credential(access_key_id.to_owned()));
        Ok(())
    }

    pub fn list_credentials(&self, prefix: &StorePrefix) -> Result<Vec<CredentialInfo>> {
        Ok(self
            .storage
            .list_credentials(prefix)?
            .into_iter()
            .map(|c| CredentialInfo {
                access_key_id: c.access_key_id,
                store: c.store,
                created_at: c.created_at,
            })
            .collect())
    }

    /// Creates a key with fresh AES-256 material as version 1.
    pub fn create_key(&self, prefix: &StorePrefix, id: &KeyId, usage: Usage) -> Result<Key> {
        let mut keys = self.create_keys(prefix, std::slice::from_ref(id), usage)?;
        keys.pop()
            .ok_or_else(|| Error::Internal("no key created".into()))
    }

    /// Creates several keys in one transaction (all or none).
    pub fn create_keys(
        &self,
        prefix: &StorePrefix,
        ids: &[KeyId],
        usage: Usage,
    ) -> Result<Vec<Key>> {
        self.create_keys_with(prefix, ids, usage, &Lifecycle::default())
    }

    /// [`KeyService::create_keys`] in a given lifecycle (e.g. PRE_ACTIVE
    /// with an activation date, or with a rotation period), set atomically
    /// with the creation: a key never exists in a state it was not meant to.
    pub fn create_keys_with(
        &self,
        prefix: &StorePrefix,
        ids: &[KeyId],
        usage: Usage,
        lifecycle: &Lifecycle,
    ) -> Result<Vec<Key>> {
        check_new_lifecycle(lifecycle)?;
        let t = self.clock.now();
        let batch = ids
            .iter()
            .map(|id| {
                let mut key = new_key(prefix, id, usage, t, None);
                key.lifecycle = lifecycle.clone();
                key.lifecycle.next_rotation_at = lifecycle.rotation_period.map(|p| t + p);
                let first = self.new_version(&key, 1)?;
                Ok((key, first))
            })
            .collect::<Result<Vec<_>>>()?;
        self.storage.create_keys(&batch)?;
        for id in ids {
            self.after_write(key_scope(prefix, id));
        }
        Ok(batch.into_iter().map(|(k, _)| k).collect())
    }

    fn new_version(&self, key: &Key, version: u32) -> Result<WrappedKeyVersion> {
        let material = random_secret(AES256_KEY_LEN).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(WrappedKeyVersion {
            version,
            wrapped: self
                .barrier
                .wrap_key(&key.store, &key.id, version, &material)?,
            created_at: self.clock.now(),
            flag: VersionFlag::Good,
        })
    }

    pub fn get_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Key> {
        self.storage
            .get_key(prefix, id)?
            .ok_or_else(|| Error::KeyNotFound {
                store: prefix.display().to_owned(),
                key: id.to_string(),
            })
    }

    pub fn list_keys(
        &self,
        prefix: &StorePrefix,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        self.storage.list_keys(prefix, after, limit)
    }

    pub fn count_keys(&self, prefix: &StorePrefix) -> Result<u64> {
        self.storage.count_keys(prefix)
    }

    pub fn set_key_status(&self, prefix: &StorePrefix, id: &KeyId, status: Status) -> Result<()> {
        self.storage.set_key_status(prefix, id, status)?;
        self.after_write(key_scope(prefix, id));
        Ok(())
    }

    /// Sets a key's usage. An HSM-resident key's versions get it in the
    /// token too (CKA_ENCRYPT, CKA_DECRYPT) where the token allows the
    /// change: the answer says whether it did.
    pub fn set_key_usage(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        usage: Usage,
    ) -> Result<UsageEnforcement> {
        let key = self.get_key(prefix, id)?;
        self.storage.set_key_usage(prefix, id, usage)?;
        self.after_write(key_scope(prefix, id));
        let Some(base) = &key.hsm_label else {
            return Ok(UsageEnforcement::Keyhold);
        };
        let hsm = self.hsm()?;
        let mut all = true;
        for v in key.lifecycle.min_decrypt_version.max(1)..=key.current_version {
            all &= hsm.set_usage(&hsm_version_label(base, v), usage)?;
        }
        Ok(if all {
            UsageEnforcement::KeyholdAndToken
        } else {
            UsageEnforcement::KeyholdOnlyTokenRefused
        })
    }

    /// Creates a key whose material is generated in, and never leaves, the
    /// HSM of the root of trust (`label` defaults to `keyhold:<prefix>:<id>`).
    pub fn create_hsm_key(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        usage: Usage,
        label: Option<&str>,
    ) -> Result<Key> {
        let hsm = self.hsm()?;
        let label = label
            .map(str::to_owned)
            .unwrap_or_else(|| format!("keyhold:{}:{}", prefix.as_str(), id));
        hsm.generate_key(&label, usage)?;
        self.record_hsm_key(prefix, id, usage, label)
    }

    /// Adopts an AES-256 key that already exists in the HSM under `label`
    /// (how keys move over from other XKS proxies).
    pub fn import_hsm_key(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        usage: Usage,
        label: &str,
    ) -> Result<Key> {
        let hsm = self.hsm()?;
        if hsm.is_reserved(label) {
            return Err(Error::invalid(
                "HSM key label",
                format!("{label:?} is Keyhold's own key (the root of trust's key-encryption key or its health key): it is never adopted as a customer key"),
            ));
        }
        hsm.check_key(label)?;
        // The adopted key's attributes become its usage, where the token
        // lets them change.
        if !hsm.set_usage(label, usage)? {
            tracing::warn!(label, "the HSM token would not set the adopted key's usage attributes: Keyhold alone enforces its usage");
        }
        self.record_hsm_key(prefix, id, usage, label.to_owned())
    }

    pub(crate) fn hsm(&self) -> Result<&dyn keyhold_keystore::HsmKeys> {
        self.barrier.root().hsm_keys().ok_or_else(|| {
            Error::invalid(
                "protection",
                "HSM-resident keys need an HSM root of trust (keyhold init --hsm-module …)",
            )
        })
    }

    fn record_hsm_key(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        usage: Usage,
        label: String,
    ) -> Result<Key> {
        let t = now();
        let key = new_key(prefix, id, usage, t, Some(label));
        // The version row records that version 1 exists; its material is in the HSM.
        let v = WrappedKeyVersion {
            version: 1,
            wrapped: Vec::new(),
            created_at: t,
            flag: VersionFlag::Good,
        };
        self.storage.create_keys(&[(key.clone(), v)])?;
        self.after_write(key_scope(prefix, id));
        Ok(key)
    }

    /// Adds a new version of fresh material and makes it current. Older
    /// versions stay available for decrypt. An HSM-resident key gets a new
    /// key in the HSM (see [`hsm_version_label`]).
    pub fn rotate_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Key> {
        let key = self.get_key(prefix, id)?;
        if key.lifecycle.pending_destruction()
            || !matches!(key.lifecycle.state, KeyState::Active | KeyState::PreActive)
        {
            return Err(Error::InvalidState(format!(
                "key {id} is {}{}: only live keys rotate",
                key.lifecycle.state,
                if key.lifecycle.pending_destruction() {
                    " and scheduled for destruction"
                } else {
                    ""
                }
            )));
        }
        let next = key
            .current_version
            .checked_add(1)
            .ok_or_else(|| Error::InvalidState("key has too many versions".into()))?;
        let v = match &key.hsm_label {
            Some(base) => {
                let label = hsm_version_label(base, next);
                self.hsm()?.generate_key(&label, key.usage)?;
                let v = WrappedKeyVersion {
                    version: next,
                    wrapped: Vec::new(),
                    created_at: now(),
                    flag: VersionFlag::Good,
                };
                if let Err(e) = self.storage.add_key_version(prefix, id, &v) {
                    // Not recorded: leave no orphan in the HSM.
                    let _ = self.hsm()?.destroy_key(&label);
                    return Err(e);
                }
                v
            }
            None => {
                let v = self.new_version(&key, next)?;
                self.storage.add_key_version(prefix, id, &v)?;
                v
            }
        };
        if let Some(p) = key.lifecycle.rotation_period {
            let mut l = key.lifecycle.clone();
            l.next_rotation_at = Some(v.created_at + p);
            self.storage.set_key_lifecycle(prefix, id, &l)?;
        }
        self.after_write(key_scope(prefix, id));
        self.get_key(prefix, id)
    }
}

/// The HSM label of `version` of an HSM-resident key whose first version
/// is `base`: `base` itself, then `base#v2`, `base#v3`… Rotation makes a new
/// non-extractable key in the HSM under the next label; storage keeps only
/// the version rows (no material).
pub(crate) fn hsm_version_label(base: &str, version: u32) -> String {
    if version <= 1 {
        base.to_owned()
    } else {
        format!("{base}#v{version}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_keystore::SoftwareRoot;
    use keyhold_storage::SqliteStorage;

    fn service() -> (tempfile::TempDir, KeyService) {
        let dir = tempfile::tempdir().unwrap();
        let root = SoftwareRoot::create(&dir.path().join("root.key"), None).unwrap();
        let st = SqliteStorage::open(&dir.path().join("k.db")).unwrap();
        let s = KeyService::open(Arc::new(st), Arc::new(root)).unwrap();
        (dir, s)
    }

    /// A write drops only what it touched from this process's caches: what
    /// else is cached keeps serving (through a database outage too).
    #[test]
    fn writes_drop_only_what_they_touched() {
        let (_d, s) = service();
        let (a, b) = (
            StorePrefix::parse("/a").unwrap(),
            StorePrefix::parse("/b").unwrap(),
        );
        for p in [&a, &b] {
            s.create_store(p, "").unwrap();
            for k in ["k1", "k2"] {
                s.create_key(p, &KeyId::parse(k).unwrap(), Usage::BOTH)
                    .unwrap();
            }
        }
        let akid = s.add_credential(&b).unwrap().access_key_id;
        let warm = |s: &KeyService| {
            for p in [&a, &b] {
                s.store_by_prefix(p.as_str()).unwrap();
                for k in ["k1", "k2"] {
                    s.key_handle(p, k).unwrap();
                }
            }
            s.credential(&akid).unwrap();
        };
        let cached = |s: &KeyService, p: &StorePrefix, k: &str| {
            s.keys.get(&(p.as_str().to_owned(), k.to_owned())).is_some()
        };
        warm(&s);
        s.set_key_status(&a, &KeyId::parse("k1").unwrap(), Status::Disabled)
            .unwrap();
        assert!(!cached(&s, &a, "k1"));
        assert!(cached(&s, &a, "k2") && cached(&s, &b, "k1"));
        assert!(s.creds.get(&akid).is_some());

        warm(&s);
        s.set_store_status(&a, Status::Disabled).unwrap();
        assert!(!cached(&s, &a, "k1") && !cached(&s, &a, "k2"));
        assert!(cached(&s, &b, "k1") && cached(&s, &b, "k2"));
        assert!(s.creds.get(&akid).is_some() && s.stores.get(b.as_str()).is_some());

        warm(&s);
        s.set_policy(
            &crate::policy::PolicyScope::Key(b.clone(), "k2".into()),
            "[[rule]]\nname = \"r\"\neffect = \"deny\"\nvia_service = [\"s3\"]\n",
        )
        .unwrap();
        assert!(!cached(&s, &b, "k2"));
        assert!(cached(&s, &b, "k1") && cached(&s, &a, "k1"));

        s.remove_credential(&b, &akid).unwrap();
        assert!(s.creds.get(&akid).is_none());
        assert!(s.credential(&akid).unwrap().is_none());
    }

    #[test]
    fn lifecycle_and_usage() {
        let (_d, s) = service();
        let p = StorePrefix::parse("/t").unwrap();
        s.create_store(&p, "").unwrap();
        let id = KeyId::parse("k1").unwrap();
        s.create_key(&p, &id, Usage::BOTH).unwrap();
        let h = s.key_handle(&p, "k1").unwrap();
        s.authorize(&h, Operation::Encrypt).unwrap();
        let (v, k) = h.current().unwrap();
        assert_eq!(v, 1);
        let mut buf = b"data".to_vec();
        let (iv, tag) = k.seal(b"", &mut buf).unwrap();

        s.rotate_key(&p, &id).unwrap();
        let h2 = s.key_handle(&p, "k1").unwrap();
        assert_eq!(h2.current().unwrap().0, 2);
        let (old, _) = s.key_version(&h2, 1).unwrap();
        assert_eq!(old.open(&iv, b"", &buf, &tag).unwrap().expose(), b"data");
        assert!(matches!(
            s.key_version(&h2, 3),
            Err(Error::InvalidCiphertext)
        ));
        assert!(matches!(
            s.key_version(&h2, 0),
            Err(Error::InvalidCiphertext)
        ));

        s.set_key_status(&p, &id, Status::Disabled).unwrap();
        let h3 = s.key_handle(&p, "k1").unwrap();
        assert!(matches!(
            s.authorize(&h3, Operation::Encrypt),
            Err(Error::InvalidState(_))
        ));
        s.authorize(&h3, Operation::Metadata).unwrap();

        s.set_key_status(&p, &id, Status::Enabled).unwrap();
        s.set_key_usage(&p, &id, Usage::parse("DECRYPT").unwrap())
            .unwrap();
        let h4 = s.key_handle(&p, "k1").unwrap();
        assert!(matches!(
            s.authorize(&h4, Operation::Encrypt),
            Err(Error::KeyUsage(_))
        ));
        s.authorize(&h4, Operation::Decrypt).unwrap();

        s.set_store_status(&p, Status::Disabled).unwrap();
        let h5 = s.key_handle(&p, "k1").unwrap();
        assert!(matches!(
            s.authorize(&h5, Operation::Decrypt),
            Err(Error::InvalidState(_))
        ));
        assert!(matches!(
            s.key_handle(&p, "nope"),
            Err(Error::KeyNotFound { .. })
        ));
        assert!(matches!(
            s.key_handle(&p, "bad/id"),
            Err(Error::KeyNotFound { .. })
        ));
    }

    #[test]
    fn credentials() {
        let (_d, s) = service();
        let p = StorePrefix::parse("/t").unwrap();
        s.create_store(&p, "").unwrap();
        let c1 = s.add_credential(&p).unwrap();
        let c2 = s.add_credential(&p).unwrap();
        validate_access_key_id(&c1.access_key_id).unwrap();
        validate_secret_access_key(std::str::from_utf8(c1.secret_access_key.expose()).unwrap())
            .unwrap();
        assert_eq!(s.list_credentials(&p).unwrap().len(), 2);
        let e = s.credential(&c2.access_key_id).unwrap().unwrap();
        assert_eq!(e.secret.expose(), c2.secret_access_key.expose());
        s.remove_credential(&p, &c1.access_key_id).unwrap();
        assert!(s.credential(&c1.access_key_id).unwrap().is_none());
        assert!(s.credential("not-an-akid").unwrap().is_none());
        assert!(s
            .import_credential(&p, "SHORT", &SecretBytes::new(vec![b'a'; 44]))
            .is_err());
    }

    #[test]
    fn changes_by_another_process_invalidate() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root.key");
        let db = dir.path().join("k.db");
        SoftwareRoot::create(&root_path, None).unwrap();
        let open = || {
            KeyService::open(
                Arc::new(SqliteStorage::open(&db).unwrap()),
                Arc::new(SoftwareRoot::load(&root_path, None).unwrap()),
            )
            .unwrap()
        };
        let server = open();
        let admin = open();
        let p = StorePrefix::parse("/t").unwrap();
        admin.create_store(&p, "").unwrap();
        let id = KeyId::parse("k").unwrap();
        admin.create_key(&p, &id, Usage::BOTH).unwrap();
        server.refresh().unwrap();
        server
            .key_handle(&p, "k")
            .unwrap()
            .check(Operation::Encrypt, now())
            .unwrap();
        admin.set_key_status(&p, &id, Status::Disabled).unwrap();
        assert!(server.refresh().unwrap());
        assert!(server
            .key_handle(&p, "k")
            .unwrap()
            .check(Operation::Encrypt, now())
            .is_err());
    }

    #[test]
    fn wrong_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("k.db");
        let r1 = SoftwareRoot::create(&dir.path().join("a"), None).unwrap();
        KeyService::open(Arc::new(SqliteStorage::open(&db).unwrap()), Arc::new(r1)).unwrap();
        let r2 = SoftwareRoot::create(&dir.path().join("b"), None).unwrap();
        assert!(
            KeyService::open(Arc::new(SqliteStorage::open(&db).unwrap()), Arc::new(r2)).is_err()
        );
    }

    #[test]
    fn health_is_active() {
        let (_d, s) = service();
        assert_eq!(s.health().status(), HealthStatus::Active);
    }
}
