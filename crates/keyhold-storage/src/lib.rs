//! Storage backends for Keyhold behind small traits, one per concern (keys,
//! stores, objects, meta, policies, audit shipping, nodes, maintenance, row
//! sealing); [`Storage`] is all of them together.
//!
//! Storage is untrusted: it sees key stores, key metadata and *wrapped* key
//! versions and credential secrets, never plaintext key material. A copy of
//! the database alone reveals nothing without the root of trust.
//!
//! The embedded default is [`SqliteStorage`] (WAL journal, fsync on every
//! commit). [`PostgresStorage`] lets several Keyhold nodes share one
//! PostgreSQL cluster, whose replication and failover do the rest. Writes
//! from elsewhere (another node, the admin CLI) are noticed through
//! [`Backend::change_token`].
//!
//! Both backends pass the same `conformance` suite (behind the feature of
//! that name: tests only, never in the binary), and both can dump and
//! load a consistent [`Snapshot`] (backups, and moves between backends).

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod postgres;
mod seal;
mod snapshot;
mod sqlite;

pub use postgres::{PgOptions, PostgresStorage, CHANGE_LOG_LEN};
pub use seal::{RowSealer, POLICY_INDEX_SCOPE};

/// Every storage trait, for code that calls them on a concrete backend
/// (`use keyhold_storage::prelude::*;`); through `dyn Storage` they need
/// no import.
pub mod prelude {
    pub use crate::{
        AuditStore, Backend, KeyRepo, Maintenance, MetaStore, NodeRegistry, ObjectRepo,
        PolicyStore, RowSealing, Storage, StoreRepo,
    };
}
pub use snapshot::{Cell, Snapshot, TableDump, SNAPSHOT_TABLES};
pub use sqlite::SqliteStorage;

use keyhold_core::{
    AuditCheckpoint, Key, KeyId, KeyStore, Lifecycle, ManagedObject, Result, Status, StorePrefix,
    StoredCredential, Timestamp, Usage, VersionFlag, WrappedItem, WrappedKeyVersion,
};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// (chain, line) rows ordered by chain and sequence, grouped per chain.
pub(crate) fn group_by_chain(
    rows: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (chain, line) in rows {
        match out.last_mut() {
            Some((c, lines)) if *c == chain => lines.push(line),
            _ => out.push((chain, vec![line])),
        }
    }
    out
}

/// SQL (the same in both backends) that sets the derived `shared` column
/// of objects granted to anyone, from their attributes: run by the
/// migration that adds the column and after every restore (a snapshot does
/// not carry it). A macro, so that migrations can `concat!` it.
macro_rules! mark_shared_sql {
    () => {
        r#"UPDATE objects SET shared = 1 WHERE attrs LIKE '%"keyhold:grant"%'"#
    };
}
pub(crate) use mark_shared_sql;

#[test]
fn mark_shared_sql_names_the_grant_attribute() {
    let quoted = format!("\"{}\"", keyhold_core::GRANT_ATTR);
    assert!(mark_shared_sql!().contains(&quoted));
}

/// SQL that finds a row of `table` that makes it "not empty" for a restore
/// (the sealed index of policy scopes a new database has does not count).
pub(crate) fn any_row_sql(table: &str) -> String {
    if table == "policies" {
        format!(
            "SELECT 1 FROM policies WHERE scope <> '{}' LIMIT 1",
            seal::POLICY_INDEX_SCOPE
        )
    } else {
        format!("SELECT 1 FROM {table} LIMIT 1")
    }
}

/// Why a restore refuses storage that already holds data.
pub(crate) fn not_empty(table: &str) -> keyhold_core::Error {
    keyhold_core::Error::InvalidState(format!(
        "the database is not empty (table {table} has rows): restore into a new one"
    ))
}

/// One key version as listed for operators (never its material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u32,
    pub created_at: Timestamp,
    pub flag: VersionFlag,
    /// False once the version was crypto-shredded.
    pub has_material: bool,
}

/// A Keyhold node as seen in shared storage: what `GetHealthStatus` counts
/// as the fleet, and what break-glass commands wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Unique per running server (host, pid and start time).
    pub id: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// The break-glass epoch this node has put in force.
    pub ack_epoch: u64,
    /// How long after `heartbeat_ms` the node may serve cached keys
    /// without renewing (its lease); 0 from nodes older than leases.
    pub lease_ms: i64,
}

/// What a change made elsewhere touched, so that caches drop only that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeScope {
    /// Anything (stores, credentials, policies, meta, or unknown).
    All,
    /// One key (its row or its versions).
    Key { store: String, id: String },
    /// One managed object.
    Object(String),
    /// One key store's row (its status: every key of it).
    Store(String),
    /// One credential (by access key id).
    Credential(String),
    /// One policy, by its scope name (`store /p` or `key /p k`).
    Policy(String),
    /// One metadata value, by name.
    Meta(String),
}

/// The persistence operations the key service needs, by concern: each
/// sub-trait below is one concern with its own conformance checks, and
/// `Storage` is all of them (implemented for every type that has them all).
///
/// Every method is a single transaction. Implementations must be safe to call
/// from many threads.
pub trait Storage:
    Backend
    + RowSealing
    + MetaStore
    + PolicyStore
    + AuditStore
    + NodeRegistry
    + StoreRepo
    + KeyRepo
    + ObjectRepo
    + Maintenance
    + Send
    + Sync
    + 'static
{
}

impl<T> Storage for T where
    T: Backend
        + RowSealing
        + MetaStore
        + PolicyStore
        + AuditStore
        + NodeRegistry
        + StoreRepo
        + KeyRepo
        + ObjectRepo
        + Maintenance
        + Send
        + Sync
        + 'static
{
}

/// Liveness and change notification: what a cache needs to know whether to trust itself.
pub trait Backend: Send + Sync {
    /// A value that changes whenever any writer (this process or another) has
    /// committed a change since the last call. Used to invalidate caches.
    fn change_token(&self) -> Result<u64>;

    /// What changed after `token` (a value [`Self::change_token`] returned),
    /// if the backend knows; `None` means "assume everything".
    fn changes_since(&self, _token: u64) -> Option<Vec<ChangeScope>> {
        None
    }

    /// Cheap liveness check of the backend.
    fn ping(&self) -> Result<()>;

    /// Whether a call may wait on the network (a database server): callers
    /// on an async runtime then go through a blocking thread.
    fn blocks(&self) -> bool {
        false
    }
}

/// Sealed rows (see [`RowSealer`]).
pub trait RowSealing: Send + Sync {
    /// From now on seal every power-bearing row written, and refuse every
    /// such row read that does not verify (see [`RowSealer`]).
    fn set_row_sealer(&self, sealer: std::sync::Arc<dyn RowSealer>);

    /// Seals every row that has no seal yet (a database from before sealed
    /// rows), and the set of policy scopes, in one transaction; returns how
    /// many rows it sealed. Rows with a wrong seal stay refused.
    fn seal_unsealed_rows(&self) -> Result<u64>;

    /// Whether any row carries a seal (a database written since sealed rows).
    fn any_sealed_rows(&self) -> Result<bool>;
}

/// Named values (wrapped keys, switches, tokens) and counters.
pub trait MetaStore: Send + Sync {
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Sets `name` only if it has no value yet; returns the value now stored.
    fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>>;

    /// Sets (or with `None`, removes) `name`.
    fn set_meta(&self, name: &str, value: Option<&[u8]>) -> Result<()>;

    /// Every meta value whose name starts with `prefix`, by name.
    fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;

    /// Adds one to the counter `name` (a decimal meta value, 0 when absent)
    /// and returns the new value, atomically.
    fn bump_counter(&self, name: &str) -> Result<u64>;

    /// Adds `n` to the reservation counter `name` (0 when absent) and
    /// returns the new total, atomically and durably. Counters only grow;
    /// writing one moves no change token (no cache depends on it).
    fn reserve_count(&self, name: &str, n: u64) -> Result<u64>;
}

/// Secondary-authorization policies, per key store or key.
pub trait PolicyStore: Send + Sync {
    /// The policy text of a scope (`store PREFIX` or `key PREFIX ID`).
    fn get_policy(&self, scope: &str) -> Result<Option<String>>;

    /// Sets or (with `None`) removes a scope's policy; returns whether a row changed.
    fn set_policy(&self, scope: &str, body: Option<&str>) -> Result<bool>;

    fn list_policies(&self) -> Result<Vec<(String, String)>>;
}

/// Audit checkpoints and the audit records shipped from every node.
pub trait AuditStore: Send + Sync {
    /// The last record of audit chain `chain` copied here (0: none).
    fn audit_shipped(&self, chain: &str) -> Result<u64>;

    /// Copies sealed audit lines (sequence number, line) of one chain
    /// here; lines already copied are left as they are.
    fn ship_audit(&self, chain: &str, lines: &[(u64, String)]) -> Result<()>;

    /// Every copied chain, each chain's lines in order.
    fn shipped_audit(&self) -> Result<Vec<(String, Vec<String>)>>;

    /// Keeps an audit checkpoint (older ones beyond a bound are pruned;
    /// retention markers are kept).
    fn add_audit_checkpoint(&self, c: &AuditCheckpoint) -> Result<()>;

    fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>>;
}

/// The nodes sharing the storage, their heartbeats and leases.
pub trait NodeRegistry: Send + Sync {
    /// Whether other nodes may share this storage (a database server rather
    /// than a file of this machine).
    fn shared(&self) -> bool {
        false
    }

    /// Records that node `n` is alive (upsert).
    fn node_heartbeat(&self, n: &NodeInfo) -> Result<()>;

    /// Nodes whose last heartbeat is at or after `since_ms`.
    fn live_nodes(&self, since_ms: i64) -> Result<Vec<NodeInfo>>;

    /// Forgets a node (it stopped).
    fn remove_node(&self, id: &str) -> Result<()>;
}

/// Key stores (XKS tenants) and their SigV4 credentials.
pub trait StoreRepo: Send + Sync {
    fn create_store(&self, store: &KeyStore) -> Result<()>;

    fn get_store(&self, prefix: &StorePrefix) -> Result<Option<KeyStore>>;

    fn list_stores(&self) -> Result<Vec<KeyStore>>;

    fn set_store_status(&self, prefix: &StorePrefix, status: Status) -> Result<()>;

    fn add_credential(&self, cred: &StoredCredential) -> Result<()>;

    fn remove_credential(&self, prefix: &StorePrefix, access_key_id: &str) -> Result<()>;

    fn list_credentials(&self, prefix: &StorePrefix) -> Result<Vec<StoredCredential>>;

    fn get_credential(&self, access_key_id: &str) -> Result<Option<StoredCredential>>;
}

/// Keys, their versions and lifecycle, crypto-shredding.
pub trait KeyRepo: Send + Sync {
    /// Creates a key with its first version, atomically.
    fn create_key(&self, key: &Key, first: &WrappedKeyVersion) -> Result<()> {
        self.create_keys(&[(key.clone(), first.clone())])
    }

    /// Creates several keys in one transaction: all or none.
    fn create_keys(&self, keys: &[(Key, WrappedKeyVersion)]) -> Result<()>;

    fn get_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Option<Key>>;

    /// Lists keys of a store in id order, at most `limit`, after `after`.
    fn list_keys(
        &self,
        prefix: &StorePrefix,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<Key>>;

    fn count_keys(&self, prefix: &StorePrefix) -> Result<u64>;

    /// Key counts by (store, lifecycle state, status), for metrics.
    fn key_state_counts(&self) -> Result<Vec<(String, String, String, u64)>>;

    /// Disabled keys (break glass in force), by store and id, at most
    /// `limit` (an index keeps this fast however many keys there are).
    fn disabled_keys(&self, limit: usize) -> Result<Vec<Key>>;

    fn set_key_status(&self, prefix: &StorePrefix, id: &KeyId, status: Status) -> Result<()>;

    fn set_key_usage(&self, prefix: &StorePrefix, id: &KeyId, usage: Usage) -> Result<()>;

    /// Adds `version` (which must be `current_version + 1`) and makes it current.
    fn add_key_version(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: &WrappedKeyVersion,
    ) -> Result<()>;

    fn get_key_version(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: u32,
    ) -> Result<Option<WrappedKeyVersion>>;

    /// Replaces the lifecycle fields of a key.
    fn set_key_lifecycle(&self, prefix: &StorePrefix, id: &KeyId, l: &Lifecycle) -> Result<()>;

    /// Crypto-shredding: erases the wrapped material of every version and
    /// marks the key DESTROYED at `at`, in one transaction.
    fn destroy_key_material(&self, prefix: &StorePrefix, id: &KeyId, at: Timestamp) -> Result<()>;

    /// Erases the material of versions below `below` (retired ones);
    /// returns how many were erased.
    fn shred_versions_below(&self, prefix: &StorePrefix, id: &KeyId, below: u32) -> Result<u64>;

    /// Crypto-shredding, second half: once material was erased (a key or
    /// its old versions destroyed, a KMIP object destroyed), leaves no
    /// older copy of it in this backend's own files on this machine (for
    /// SQLite: the write-ahead log is copied back and truncated, and
    /// `secure_delete` has already zeroed the freed bytes). Returns once
    /// every erasure committed before the call is covered. Copies the
    /// backend cannot reach (PostgreSQL's WAL archives, replicas, base
    /// backups, Keyhold backups) are made useless by rotating the root of
    /// trust instead.
    fn purge_erased_copies(&self) -> Result<()> {
        Ok(())
    }

    fn set_version_flag(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: u32,
        flag: VersionFlag,
    ) -> Result<()>;

    fn list_key_versions(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Vec<VersionInfo>>;

    /// Keys with work due at `now`: destruction or rotation.
    fn due_keys(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>>;
}

/// KMIP managed objects.
pub trait ObjectRepo: Send + Sync {
    /// Stores a new managed object with its wrapped material
    /// ([`Error::Conflict`](keyhold_core::Error::Conflict) if the uid exists).
    fn create_object(&self, o: &ManagedObject, material: &[u8]) -> Result<()>;

    fn get_object(&self, uid: &str) -> Result<Option<ManagedObject>>;

    /// The object's wrapped material (`None` once destroyed).
    fn object_material(&self, uid: &str) -> Result<Option<Vec<u8>>>;

    /// Writes state, attributes and exportability if the stored revision is
    /// still `o.rev` ([`Error::Conflict`](keyhold_core::Error::Conflict) otherwise); `has_material: false`
    /// erases the material for good.
    fn update_object(&self, o: &ManagedObject) -> Result<()>;

    fn list_objects(&self) -> Result<Vec<ManagedObject>>;

    /// The objects `identity` owns and every shared one (granted to
    /// anyone: the caller checks to whom), oldest first; destroyed ones only
    /// with `with_destroyed`. Indexed: the cost follows the identity's
    /// objects, not the whole table.
    fn list_objects_for(&self, identity: &str, with_destroyed: bool) -> Result<Vec<ManagedObject>>;

    /// Removes an object outright (undoing its creation in a batch).
    fn delete_object(&self, uid: &str) -> Result<()>;
}

/// Whole-database operations: backups and restores, changes of root of trust.
pub trait Maintenance: Send + Sync {
    /// Everything but the node list, read in one consistent transaction
    /// while writers carry on.
    fn snapshot(&self) -> Result<Snapshot>;

    /// Loads a snapshot into empty storage, in one transaction (refused if
    /// any key store, key, credential, object or policy exists).
    fn restore(&self, s: &Snapshot) -> Result<()>;

    /// Every wrapped value (key versions, credential secrets, meta values,
    /// object material), for a change of root of trust.
    fn wrapped_items(&self) -> Result<Vec<(WrappedItem, Vec<u8>)>>;

    /// Replaces one wrapped value if it still equals `expected`; returns
    /// whether it did (one durable transaction).
    fn replace_wrapped(&self, item: &WrappedItem, expected: &[u8], new: &[u8]) -> Result<bool>;
}
