//! The PostgreSQL backend: several Keyhold nodes on one database cluster.
//!
//! The [`Storage`] trait is synchronous; this backend runs `tokio-postgres`
//! on a small runtime of its own and waits for each call. Connections come
//! from a pool (broken ones are replaced, so a promoted replica behind a
//! multi-host URL with `target_session_attrs=read-write` is found again).
//!
//! Changes made by any node are announced with `NOTIFY` by triggers, which
//! PostgreSQL delivers only once the transaction committed; a listening
//! connection turns them into a new [`Backend::change_token`](crate::Backend::change_token). As a safety
//! net the token also moves every `cache_ttl`. While the database is
//! unreachable the token holds still (nodes keep serving what they have
//! cached) for at most `max_staleness`.

use crate::prelude::*;
use crate::seal::{self, RowSealer};
use crate::{
    now_ms, Cell, ChangeScope, NodeInfo, Snapshot, TableDump, VersionInfo, SNAPSHOT_TABLES,
};
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use keyhold_core::{
    now, AuditCheckpoint, Error, Key, KeyId, KeyState, KeyStore, Lifecycle, ManagedObject,
    ObjectState, Result, Status, StorePrefix, StoredCredential, Timestamp, Usage, VersionFlag,
    WrappedItem, WrappedKeyVersion,
};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Row};

/// The channel the change triggers notify on.
const CHANNEL: &str = "keyhold_changes";

/// Schema migrations, applied in order under an advisory lock (several
/// nodes may start at once); `keyhold_schema` records how many have run.
/// Column types are BIGINT, TEXT and BYTEA only, like SQLite's, so that
/// snapshots move between the backends unchanged.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE stores (
    prefix      TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);
CREATE TABLE credentials (
    access_key_id  TEXT PRIMARY KEY,
    store          TEXT NOT NULL REFERENCES stores(prefix),
    wrapped_secret BYTEA NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX credentials_store ON credentials(store);
CREATE TABLE keys (
    store               TEXT NOT NULL REFERENCES stores(prefix),
    key_id              TEXT NOT NULL,
    status              TEXT NOT NULL,
    usage               BIGINT NOT NULL,
    current_version     BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    hsm_label           TEXT,
    state               TEXT NOT NULL DEFAULT 'ACTIVE',
    activate_at         BIGINT,
    deactivate_at       BIGINT,
    destroy_at          BIGINT,
    compromised_at      BIGINT,
    rotation_period     BIGINT,
    next_rotation_at    BIGINT,
    min_decrypt_version BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (store, key_id)
);
CREATE INDEX keys_destroy_at ON keys(destroy_at) WHERE destroy_at IS NOT NULL;
CREATE INDEX keys_next_rotation_at ON keys(next_rotation_at) WHERE next_rotation_at IS NOT NULL;
CREATE TABLE key_versions (
    store      TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    version    BIGINT NOT NULL,
    wrapped    BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    flag       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (store, key_id, version),
    FOREIGN KEY (store, key_id) REFERENCES keys(store, key_id)
);
CREATE TABLE audit_checkpoints (
    chain TEXT NOT NULL,
    kind  TEXT NOT NULL,
    seq   BIGINT NOT NULL,
    head  TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    mac   TEXT NOT NULL,
    PRIMARY KEY (chain, kind, seq)
);
CREATE TABLE policies (
    scope      TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE objects (
    uid         TEXT PRIMARY KEY,
    object_type BIGINT NOT NULL,
    owner       TEXT NOT NULL,
    state       BIGINT NOT NULL,
    exportable  BIGINT NOT NULL,
    attrs       TEXT NOT NULL,
    material    BYTEA,
    rev         BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE nodes (
    node_id      TEXT PRIMARY KEY,
    started_ms   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    ack_epoch    BIGINT NOT NULL
);
CREATE FUNCTION keyhold_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keyhold_changes', '*');
    RETURN NULL;
END $$;
CREATE FUNCTION keyhold_notify_key() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    PERFORM pg_notify('keyhold_changes', 'k:' || r.store || chr(31) || r.key_id);
    RETURN NULL;
END $$;
CREATE FUNCTION keyhold_notify_object() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    PERFORM pg_notify('keyhold_changes', 'o:' || r.uid);
    RETURN NULL;
END $$;
CREATE TRIGGER meta_changed AFTER INSERT OR UPDATE OR DELETE ON meta
    FOR EACH STATEMENT EXECUTE FUNCTION keyhold_notify();
CREATE TRIGGER stores_changed AFTER INSERT OR UPDATE OR DELETE ON stores
    FOR EACH STATEMENT EXECUTE FUNCTION keyhold_notify();
CREATE TRIGGER credentials_changed AFTER INSERT OR UPDATE OR DELETE ON credentials
    FOR EACH STATEMENT EXECUTE FUNCTION keyhold_notify();
CREATE TRIGGER keys_changed AFTER INSERT OR UPDATE OR DELETE ON keys
    FOR EACH ROW EXECUTE FUNCTION keyhold_notify_key();
CREATE TRIGGER key_versions_changed AFTER INSERT OR UPDATE OR DELETE ON key_versions
    FOR EACH ROW EXECUTE FUNCTION keyhold_notify_key();
CREATE TRIGGER policies_changed AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH STATEMENT EXECUTE FUNCTION keyhold_notify();
CREATE TRIGGER objects_changed AFTER INSERT OR UPDATE OR DELETE ON objects
    FOR EACH ROW EXECUTE FUNCTION keyhold_notify_object();
"#,
    // 2: audit records copied from each node's chain files, so that
    // `keyhold audit` on any node sees every node's.
    r#"
CREATE TABLE audit_records (
    chain TEXT NOT NULL,
    seq   BIGINT NOT NULL,
    line  TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
"#,
    // 3: indexes for Locate: an identity's objects by state, and the
    // objects granted to anyone (`shared`, derived from the attributes).
    concat!(
        "ALTER TABLE objects ADD COLUMN shared BIGINT NOT NULL DEFAULT 0;\n",
        crate::mark_shared_sql!(),
        ";\nCREATE INDEX objects_owner ON objects(owner, state);\n",
        "CREATE INDEX objects_shared ON objects(shared) WHERE shared = 1;\n",
    ),
    // 4: AES-GCM encryptions reserved per key version or KMIP object (no
    // trigger: no cache depends on it).
    r#"
CREATE TABLE encryption_counts (
    name     TEXT PRIMARY KEY,
    reserved BIGINT NOT NULL
);
"#,
    // 5: stores, credentials, policies and metadata say which row changed
    // (they said "anything"), so that a node drops only what a change
    // touched and keeps serving the rest through a database outage.
    r#"
CREATE FUNCTION keyhold_notify_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record; p text;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    IF TG_TABLE_NAME = 'stores' THEN p := 's:' || r.prefix;
    ELSIF TG_TABLE_NAME = 'credentials' THEN p := 'c:' || r.access_key_id;
    ELSIF TG_TABLE_NAME = 'policies' THEN p := 'p:' || r.scope;
    ELSIF TG_TABLE_NAME = 'meta' THEN p := 'm:' || r.name;
    ELSE p := '*';
    END IF;
    PERFORM pg_notify('keyhold_changes', p);
    RETURN NULL;
END $$;
DROP TRIGGER meta_changed ON meta;
DROP TRIGGER stores_changed ON stores;
DROP TRIGGER credentials_changed ON credentials;
DROP TRIGGER policies_changed ON policies;
CREATE TRIGGER meta_changed AFTER INSERT OR UPDATE OR DELETE ON meta
    FOR EACH ROW EXECUTE FUNCTION keyhold_notify_row();
CREATE TRIGGER stores_changed AFTER INSERT OR UPDATE OR DELETE ON stores
    FOR EACH ROW EXECUTE FUNCTION keyhold_notify_row();
CREATE TRIGGER credentials_changed AFTER INSERT OR UPDATE OR DELETE ON credentials
    FOR EACH ROW EXECUTE FUNCTION keyhold_notify_row();
CREATE TRIGGER policies_changed AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH ROW EXECUTE FUNCTION keyhold_notify_row();
"#,
    // 6: each node's lease: how long after its heartbeat it may serve
    // cached keys (break glass waits for an acknowledgement or for that).
    "ALTER TABLE nodes ADD COLUMN lease_ms BIGINT NOT NULL DEFAULT 0;",
    // 7: sealed rows (see `crate::seal`): NULL in rows from before.
    r#"
ALTER TABLE stores ADD COLUMN seal BYTEA;
ALTER TABLE keys ADD COLUMN seal BYTEA;
ALTER TABLE key_versions ADD COLUMN seal BYTEA;
ALTER TABLE objects ADD COLUMN seal BYTEA;
ALTER TABLE policies ADD COLUMN seal BYTEA;
"#,
];

/// An arbitrary constant naming the lock that orders policy changes (each
/// rewrites the sealed index of policy scopes).
const POLICY_LOCK: i64 = 0x006b_6579_706f_6c69;

/// An arbitrary constant naming Keyhold's migration lock.
const MIGRATION_LOCK: i64 = 0x006b_6579_686f_6c64;

/// Checkpoints kept per audit chain (retention markers are all kept).
const AUDIT_CHECKPOINTS_KEPT: i64 = 1_000;

const OBJECT_COLUMNS: &str =
    "uid, object_type, owner, state, exportable, attrs, material IS NOT NULL, rev, seal";

/// The columns [`row_to_key`] reads, in order, then the row's seal (16).
const KEY_SEALED: &str = "store, key_id, status, usage, current_version, created_at, updated_at, hsm_label, \
    state, activate_at, deactivate_at, destroy_at, compromised_at, rotation_period, next_rotation_at, min_decrypt_version, seal";

/// The version columns sealed: (version, created_at, flag, has material, seal).
const VERSION_SEALED: &str = "version, created_at, flag, length(wrapped) > 0, seal";

use seal::{key_ok, object_ok, store_ok, version_ok, SealedKey, SealedObject, VersionRow};
type Sealer = Option<Arc<dyn RowSealer>>;

fn sealed_key(r: &Row) -> Result<SealedKey> {
    Ok((row_to_key(r)?, col(r, 16)?))
}

fn sealed_store(r: &Row) -> Result<(KeyStore, Option<Vec<u8>>)> {
    Ok((row_to_store(r)?, col(r, 4)?))
}

fn sealed_object(r: &Row) -> Result<SealedObject> {
    Ok((row_to_object(r)?, col(r, 5)?, col(r, 8)?))
}

fn version_row(r: &Row) -> Result<VersionRow> {
    Ok((
        to_u32(col(r, 0)?)?,
        col(r, 1)?,
        VersionFlag::from_i64(col(r, 2)?),
        col(r, 3)?,
        col(r, 4)?,
    ))
}

/// Writes a key's row whole, with its seal.
async fn write_key(c: &impl GenericClient, k: &Key, sealed: Option<Vec<u8>>) -> Result<()> {
    let l = &k.lifecycle;
    let (state, min) = lifecycle_params(l);
    c.execute(
        "UPDATE keys SET status = $3, usage = $4, current_version = $5, updated_at = $6, hsm_label = $7, \
         state = $8, activate_at = $9, deactivate_at = $10, destroy_at = $11, compromised_at = $12, \
         rotation_period = $13, next_rotation_at = $14, min_decrypt_version = $15, seal = $16 \
         WHERE store = $1 AND key_id = $2",
        &[
            &k.store.as_str(),
            &k.id.as_str(),
            &k.status.as_str(),
            &k.usage.to_bits(),
            &i64::from(k.current_version),
            &k.updated_at,
            &k.hsm_label,
            &state,
            &l.activate_at,
            &l.deactivate_at,
            &l.destroy_at,
            &l.compromised_at,
            &l.rotation_period,
            &l.next_rotation_at,
            &min,
            &sealed,
        ],
    )
    .await
    .map_err(pg_err)
    .map(drop)
}

/// Reads a key's row for a change (locked), refused unless it verifies.
async fn key_for_update(
    c: &impl GenericClient,
    sealer: Option<&dyn RowSealer>,
    prefix: &StorePrefix,
    id: &KeyId,
) -> Result<Key> {
    let row = c
        .query_opt(
            &format!("SELECT {KEY_SEALED} FROM keys WHERE store = $1 AND key_id = $2 FOR UPDATE"),
            &[&prefix.as_str(), &id.as_str()],
        )
        .await
        .map_err(pg_err)?
        .ok_or_else(|| key_not_found(prefix, id))?;
    let row = sealed_key(&row)?;
    if !key_ok(sealer, &row) {
        return Err(seal::refused(format!("key {prefix}/{id}")));
    }
    Ok(row.0)
}

/// Seals again the version rows of a key below `below` after their
/// material was erased (erased versions grant nothing: not checked).
async fn reseal_erased_versions(
    c: &impl GenericClient,
    sealer: Option<&dyn RowSealer>,
    prefix: &StorePrefix,
    id: &KeyId,
    below: i64,
) -> Result<()> {
    let Some(sealer) = sealer else {
        return Ok(());
    };
    let rows = c
        .query(
            &format!("SELECT {VERSION_SEALED} FROM key_versions WHERE store = $1 AND key_id = $2 AND version < $3"),
            &[&prefix.as_str(), &id.as_str(), &below],
        )
        .await
        .map_err(pg_err)?;
    for r in &rows {
        let (version, created_at, flag, has_material, _) = version_row(r)?;
        let sealed = sealer.seal(&seal::version_row(
            prefix,
            id,
            version,
            flag,
            created_at,
            has_material,
        ));
        c.execute(
            "UPDATE key_versions SET seal = $4 WHERE store = $1 AND key_id = $2 AND version = $3",
            &[&prefix.as_str(), &id.as_str(), &i64::from(version), &sealed],
        )
        .await
        .map_err(pg_err)?;
    }
    Ok(())
}

/// Every policy but the index row, checked against their seals and the
/// sealed index of scopes.
async fn policies_checked(
    c: &impl GenericClient,
    sealer: Option<&dyn RowSealer>,
) -> Result<Vec<(String, String)>> {
    let rows = c
        .query("SELECT scope, body, seal FROM policies ORDER BY scope", &[])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)))
        .collect::<Result<Vec<_>>>()?;
    seal::checked_policies(sealer, rows)
}

/// Rewrites the sealed index of policy scopes (in the changing transaction).
async fn write_policy_index(c: &impl GenericClient, sealer: Option<&dyn RowSealer>) -> Result<()> {
    let Some(sealer) = sealer else {
        return Ok(());
    };
    let scopes: Vec<String> = c
        .query(
            "SELECT scope FROM policies WHERE scope <> $1",
            &[&seal::POLICY_INDEX_SCOPE],
        )
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| col(r, 0))
        .collect::<Result<_>>()?;
    let (body, sealed) = seal::policy_index(sealer, &scopes);
    c.execute(
        "INSERT INTO policies(scope, body, updated_at, seal) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (scope) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at, seal = excluded.seal",
        &[&seal::POLICY_INDEX_SCOPE, &body, &now(), &sealed],
    )
    .await
    .map_err(pg_err)
    .map(drop)
}

/// Settings of the PostgreSQL backend besides its URL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool.
    pub pool_size: usize,
    /// Longest wait for one storage call (connecting included).
    pub op_timeout: Duration,
    /// Caches are dropped at least this often, notifications or not.
    pub cache_ttl: Duration,
    /// While the database is unreachable, cached keys keep serving for at
    /// most this long (zero: not at all).
    pub max_staleness: Duration,
    /// PEM file of the CA that signed the database server's certificate:
    /// turns on TLS (verified) to the database.
    pub tls_ca: Option<PathBuf>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            op_timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(60),
            max_staleness: Duration::from_secs(300),
            tls_ca: None,
        }
    }
}

/// Changes remembered for [`Backend::changes_since`](crate::Backend::changes_since); a node further behind
/// than this drops everything.
pub const CHANGE_LOG_LEN: usize = 4096;

/// What the listening connection has seen.
#[derive(Default)]
struct Changes {
    /// Moves on every notification, reconnection and TTL tick.
    token: AtomicU64,
    /// The latest changes, with the token each one moved to.
    log: parking_lot::Mutex<std::collections::VecDeque<(u64, ChangeScope)>>,
    /// Whether the listening connection is up.
    up: AtomicBool,
    /// When it went down (ms), while it is down.
    down_since_ms: AtomicI64,
}

impl Changes {
    /// Everything may have changed (reconnection, TTL tick, staleness).
    fn bump(&self) {
        self.record(ChangeScope::All);
    }

    fn record(&self, scope: ChangeScope) {
        let mut log = self.log.lock();
        let t = self.token.fetch_add(1, Ordering::SeqCst) + 1;
        log.push_back((t, scope));
        if log.len() > CHANGE_LOG_LEN {
            log.pop_front();
        }
    }

    /// The scope a notification payload names (what the triggers send).
    fn parse(payload: &str) -> ChangeScope {
        if let Some(k) = payload.strip_prefix("k:") {
            if let Some((store, id)) = k.split_once('\u{1f}') {
                return ChangeScope::Key {
                    store: store.to_owned(),
                    id: id.to_owned(),
                };
            }
        }
        let one = |prefix: &str| payload.strip_prefix(prefix).map(str::to_owned);
        if let Some(uid) = one("o:") {
            return ChangeScope::Object(uid);
        }
        if let Some(p) = one("s:") {
            return ChangeScope::Store(p);
        }
        if let Some(a) = one("c:") {
            return ChangeScope::Credential(a);
        }
        if let Some(p) = one("p:") {
            return ChangeScope::Policy(p);
        }
        if let Some(m) = one("m:") {
            return ChangeScope::Meta(m);
        }
        ChangeScope::All
    }

    fn since(&self, token: u64) -> Option<Vec<ChangeScope>> {
        let log = self.log.lock();
        let now = self.token.load(Ordering::SeqCst);
        if now == token {
            return Some(Vec::new());
        }
        // Every change after `token` must still be in the log.
        match log.front() {
            Some((first, _)) if *first <= token + 1 => Some(
                log.iter()
                    .filter(|(t, _)| *t > token)
                    .map(|(_, s)| s.clone())
                    .collect(),
            ),
            _ => None,
        }
    }
}

type Tls = tokio_postgres_rustls::MakeRustlsConnect;

/// Runs `$body` (an async block body returning `Result`) with a pooled
/// connection named `$c`, on the database runtime, and waits for it.
macro_rules! with_conn {
    ($s:expr, $c:ident => $body:block) => {{
        let pool = $s.pool.clone();
        let target = $s.target.clone();
        $s.block(async move {
            #[allow(unused_mut)]
            let mut $c = pool.get().await.map_err(|e| {
                Error::DependencyTimeout(format!("cannot reach the database {target}: {e}"))
            })?;
            $body
        })
    }};
}

/// PostgreSQL storage shared by several nodes.
pub struct PostgresStorage {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    changes: Arc<Changes>,
    opts: PgOptions,
    /// Redacted URL, for messages.
    target: String,
    /// Seals rows written and checks rows read (see [`crate::seal`]).
    sealer: seal::SealerSlot,
}

/// Maps a database error: a lost or refused connection is the dependency
/// being unavailable (XKS answers 503 and clients retry); a statement
/// cancelled by its timeout likewise; anything else is a storage error.
fn pg_err(e: tokio_postgres::Error) -> Error {
    match e.code() {
        Some(c) if *c == tokio_postgres::error::SqlState::QUERY_CANCELED => {
            Error::DependencyTimeout(format!("database: {e}"))
        }
        Some(c)
            if c.code().starts_with("08")
                || c.code().starts_with("57P")
                || *c == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION =>
        {
            Error::DependencyTimeout(format!("database unavailable: {e}"))
        }
        Some(_) => Error::Storage(e.to_string()),
        None if e.is_closed()
            || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) =>
        {
            Error::DependencyTimeout(format!("database unreachable: {e}"))
        }
        None => Error::Storage(e.to_string()),
    }
}

fn bad_row(what: impl std::fmt::Display) -> Error {
    Error::Storage(format!("unexpected database content: {what}"))
}

/// Reads column `i`, without panicking on a type mismatch.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(bad_row)
}

fn to_u32(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| bad_row(format!("{v} out of range")))
}

fn row_to_key(r: &Row) -> Result<Key> {
    let state: String = col(r, 8)?;
    Ok(Key {
        store: StorePrefix::parse(col(r, 0)?).map_err(bad_row)?,
        id: KeyId::parse(col(r, 1)?).map_err(bad_row)?,
        status: Status::parse(col(r, 2)?).ok_or_else(|| bad_row("key status"))?,
        usage: Usage::from_bits(col(r, 3)?),
        current_version: to_u32(col(r, 4)?)?,
        created_at: col(r, 5)?,
        updated_at: col(r, 6)?,
        hsm_label: col(r, 7)?,
        lifecycle: Lifecycle {
            state: KeyState::parse(&state).ok_or_else(|| bad_row(format!("key state {state}")))?,
            activate_at: col(r, 9)?,
            deactivate_at: col(r, 10)?,
            destroy_at: col(r, 11)?,
            compromised_at: col(r, 12)?,
            rotation_period: col(r, 13)?,
            next_rotation_at: col(r, 14)?,
            min_decrypt_version: to_u32(col(r, 15)?)?,
        },
    })
}

fn row_to_store(r: &Row) -> Result<KeyStore> {
    Ok(KeyStore {
        prefix: StorePrefix::parse(col(r, 0)?).map_err(bad_row)?,
        status: Status::parse(col(r, 1)?).ok_or_else(|| bad_row("store status"))?,
        description: col(r, 2)?,
        created_at: col(r, 3)?,
    })
}

fn row_to_cred(r: &Row) -> Result<StoredCredential> {
    Ok(StoredCredential {
        access_key_id: col(r, 0)?,
        store: StorePrefix::parse(col(r, 1)?).map_err(bad_row)?,
        wrapped_secret: col(r, 2)?,
        created_at: col(r, 3)?,
    })
}

fn row_to_object(r: &Row) -> Result<ManagedObject> {
    let state = to_u32(col(r, 3)?)?;
    let attrs: String = col(r, 5)?;
    Ok(ManagedObject {
        uid: col(r, 0)?,
        object_type: to_u32(col(r, 1)?)?,
        owner: col(r, 2)?,
        state: ObjectState::from_u32(state).ok_or_else(|| bad_row(format!("state {state}")))?,
        exportable: col::<i64>(r, 4)? != 0,
        attrs: serde_json::from_str(&attrs).map_err(bad_row)?,
        has_material: col(r, 6)?,
        rev: col::<i64>(r, 7)? as u64,
    })
}

fn lifecycle_params(l: &Lifecycle) -> (String, i64) {
    (l.state.as_str().to_owned(), l.min_decrypt_version.into())
}

fn key_not_found(prefix: &StorePrefix, id: &KeyId) -> Error {
    Error::KeyNotFound {
        store: prefix.display().to_owned(),
        key: id.to_string(),
    }
}

fn one_key_row(n: u64, prefix: &StorePrefix, id: &KeyId) -> Result<()> {
    if n == 0 {
        return Err(key_not_found(prefix, id));
    }
    Ok(())
}

async fn require_store(c: &impl GenericClient, prefix: &StorePrefix) -> Result<()> {
    c.query_opt(
        "SELECT 1 FROM stores WHERE prefix = $1",
        &[&prefix.as_str()],
    )
    .await
    .map_err(pg_err)?
    .map(|_| ())
    .ok_or_else(|| Error::StoreNotFound(prefix.display().to_owned()))
}

fn tls_connector(ca: Option<&PathBuf>) -> Result<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| {
            Error::invalid(
                "storage.tls_ca",
                format!("cannot read {}: {e}", ca.display()),
            )
        })?;
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            let c = c.map_err(|e| Error::invalid("storage.tls_ca", e.to_string()))?;
            roots
                .add(c)
                .map_err(|e| Error::invalid("storage.tls_ca", e.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Internal(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl PostgresStorage {
    /// Connects to `url` (a libpq-style URL or key=value string, several
    /// hosts allowed), migrates the schema and starts listening for
    /// changes. Fails if the database cannot be reached within the
    /// operation timeout.
    pub fn connect(url: &str, opts: PgOptions) -> Result<Self> {
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::invalid("storage.url", format!("{}: {e}", redact(url))))?;
        cfg.keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .connect_timeout(opts.op_timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("keyhold");
        }
        if opts.tls_ca.is_some() && cfg.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let tls = tls_connector(opts.tls_ca.as_ref())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keyhold-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the database runtime: {e}")))?;
        let mgr = Manager::from_config(
            cfg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(opts.op_timeout))
            .create_timeout(Some(opts.op_timeout))
            .build()
            .map_err(|e| Error::Internal(format!("database pool: {e}")))?;
        let changes = Arc::new(Changes::default());
        let s = Self {
            rt: Some(rt),
            pool,
            changes: changes.clone(),
            opts: opts.clone(),
            target: redact(url),
            sealer: seal::SealerSlot::default(),
        };
        s.migrate()?;
        let handle = s.runtime().handle().clone();
        handle.spawn(listen_loop(cfg, tls, changes.clone()));
        handle.spawn(tick_loop(changes, opts));
        Ok(s)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime lives until drop")
    }

    /// Runs `f` on the database runtime and waits for it (at most the
    /// operation timeout). Safe to call from any thread, async ones too.
    fn block<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let limit = self.opts.op_timeout;
        self.runtime().spawn(async move {
            let r = match tokio::time::timeout(limit, f).await {
                Ok(r) => r,
                Err(_) => Err(Error::DependencyTimeout(format!(
                    "the database did not answer within {} ms",
                    limit.as_millis()
                ))),
            };
            let _ = tx.send(r);
        });
        rx.recv_timeout(limit + Duration::from_secs(1))
            .unwrap_or_else(|_| {
                Err(Error::DependencyTimeout(
                    "the database did not answer".into(),
                ))
            })
    }

    fn migrate(&self) -> Result<()> {
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg_err)?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS keyhold_schema (version BIGINT NOT NULL)")
                .await
                .map_err(pg_err)?;
            let current: i64 = match tx
                .query_opt("SELECT version FROM keyhold_schema", &[])
                .await
                .map_err(pg_err)?
            {
                Some(r) => col(&r, 0)?,
                None => {
                    tx.execute("INSERT INTO keyhold_schema(version) VALUES (0)", &[])
                        .await
                        .map_err(pg_err)?;
                    0
                }
            };
            if current as usize > MIGRATIONS.len() {
                return Err(Error::Storage(format!(
                    "database schema version {current} is newer than this Keyhold ({})",
                    MIGRATIONS.len()
                )));
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.batch_execute(m).await.map_err(pg_err)?;
                tx.execute("UPDATE keyhold_schema SET version = $1", &[&((i + 1) as i64)])
                    .await
                    .map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)
        })
    }

    /// Runs one statement and returns the rows it changed.
    fn exec(&self, sql: &'static str, params: Vec<Box<dyn ToSql + Send + Sync>>) -> Result<u64> {
        with_conn!(self, c => {
            let st = c.prepare_cached(sql).await.map_err(pg_err)?;
            let p: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            c.execute(&st, &p).await.map_err(pg_err)
        })
    }

    /// Runs one query and maps its rows.
    fn rows<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Box<dyn ToSql + Send + Sync>>,
        map: fn(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        with_conn!(self, c => {
            let st = c.prepare_cached(&sql).await.map_err(pg_err)?;
            let p: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            c.query(&st, &p)
                .await
                .map_err(pg_err)?
                .iter()
                .map(map)
                .collect()
        })
    }

    /// The first row of [`Self::rows`], if any.
    fn row<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Box<dyn ToSql + Send + Sync>>,
        map: fn(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.rows(sql, params, map)?.into_iter().next())
    }
}

/// Sealed rows (see [`crate::seal`]).
impl PostgresStorage {
    /// Changes one key's row: read and locked (refused unless it
    /// verifies), changed by `f`, written back whole with its new seal.
    fn modify_key(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        f: impl FnOnce(&mut Key) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let (p, k) = (prefix.clone(), id.clone());
        let sealer: Sealer = self.sealer.get();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let mut key = key_for_update(&tx, sealer.as_deref(), &p, &k).await?;
            f(&mut key)?;
            let sealed = sealer.as_ref().map(|s| s.seal(&seal::key_row(&key)));
            write_key(&tx, &key, sealed).await?;
            tx.commit().await.map_err(pg_err)
        })
    }
}

impl Drop for PostgresStorage {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's context panics; let its
        // threads end on their own.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Keeps a connection that LISTENs for changes, reconnecting forever.
async fn listen_loop(cfg: tokio_postgres::Config, tls: Tls, changes: Arc<Changes>) {
    loop {
        if let Ok((client, mut conn)) = cfg.connect(tls.clone()).await {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let ch = changes.clone();
            tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                        Some(Ok(AsyncMessage::Notification(n))) => {
                            ch.record(Changes::parse(n.payload()))
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    }
                }
                let _ = done_tx.send(());
            });
            if client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .is_ok()
            {
                // Changes may have been missed while not listening.
                changes.up.store(true, Ordering::SeqCst);
                changes.bump();
                let _ = done_rx.await;
            }
            drop(client);
        }
        if changes.up.swap(false, Ordering::SeqCst)
            || changes.down_since_ms.load(Ordering::SeqCst) == 0
        {
            changes.down_since_ms.store(now_ms(), Ordering::SeqCst);
            tracing::warn!("lost the connection that listens for database changes; reconnecting");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Moves the change token every `cache_ttl` while connected (the safety
/// net), and every second once the database has been unreachable for
/// longer than `max_staleness` (cached keys stop serving).
async fn tick_loop(changes: Arc<Changes>, opts: PgOptions) {
    let mut last_tick = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if changes.up.load(Ordering::SeqCst) {
            changes.down_since_ms.store(0, Ordering::SeqCst);
            if last_tick.elapsed() >= opts.cache_ttl {
                last_tick = std::time::Instant::now();
                changes.bump();
            }
        } else {
            let since = changes.down_since_ms.load(Ordering::SeqCst);
            if since != 0 && now_ms() - since >= opts.max_staleness.as_millis() as i64 {
                changes.bump();
            }
        }
    }
}

type Params = Vec<Box<dyn ToSql + Send + Sync>>;

macro_rules! params {
    ($($p:expr),* $(,)?) => {{
        let v: Params = vec![$(Box::new($p)),*];
        v
    }};
}

impl Backend for PostgresStorage {
    fn change_token(&self) -> Result<u64> {
        Ok(self.changes.token.load(Ordering::SeqCst))
    }

    fn changes_since(&self, token: u64) -> Option<Vec<ChangeScope>> {
        self.changes.since(token)
    }

    fn ping(&self) -> Result<()> {
        self.exec("SELECT 1", params![]).map(drop)
    }

    fn blocks(&self) -> bool {
        true
    }
}

impl RowSealing for PostgresStorage {
    fn set_row_sealer(&self, sealer: Arc<dyn RowSealer>) {
        self.sealer.set(sealer);
    }

    fn any_sealed_rows(&self) -> Result<bool> {
        self.row(
            "SELECT EXISTS(SELECT 1 FROM stores WHERE seal IS NOT NULL) \
             OR EXISTS(SELECT 1 FROM keys WHERE seal IS NOT NULL) \
             OR EXISTS(SELECT 1 FROM key_versions WHERE seal IS NOT NULL) \
             OR EXISTS(SELECT 1 FROM objects WHERE seal IS NOT NULL) \
             OR EXISTS(SELECT 1 FROM policies WHERE seal IS NOT NULL)"
                .into(),
            params![],
            |r| col(r, 0),
        )
        .map(|v| v.unwrap_or(false))
    }

    fn seal_unsealed_rows(&self) -> Result<u64> {
        let sealer = self
            .sealer
            .get()
            .ok_or_else(|| Error::Internal("no row sealer installed".into()))?;
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&POLICY_LOCK])
                .await
                .map_err(pg_err)?;
            let mut n = 0u64;
            for r in &tx
                .query("SELECT prefix, status, description, created_at, seal FROM stores WHERE seal IS NULL FOR UPDATE", &[])
                .await
                .map_err(pg_err)?
            {
                let st = row_to_store(r)?;
                tx.execute(
                    "UPDATE stores SET seal = $2 WHERE prefix = $1",
                    &[&st.prefix.as_str(), &sealer.seal(&seal::store_row(&st))],
                )
                .await
                .map_err(pg_err)?;
                n += 1;
            }
            for r in &tx
                .query(&format!("SELECT {KEY_SEALED} FROM keys WHERE seal IS NULL FOR UPDATE"), &[])
                .await
                .map_err(pg_err)?
            {
                let k = row_to_key(r)?;
                tx.execute(
                    "UPDATE keys SET seal = $3 WHERE store = $1 AND key_id = $2",
                    &[&k.store.as_str(), &k.id.as_str(), &sealer.seal(&seal::key_row(&k))],
                )
                .await
                .map_err(pg_err)?;
                n += 1;
            }
            for r in &tx
                .query(
                    "SELECT store, key_id, version, created_at, flag, length(wrapped) > 0 \
                     FROM key_versions WHERE seal IS NULL FOR UPDATE",
                    &[],
                )
                .await
                .map_err(pg_err)?
            {
                let p = StorePrefix::parse(col(r, 0)?).map_err(bad_row)?;
                let id = KeyId::parse(col(r, 1)?).map_err(bad_row)?;
                let version = to_u32(col(r, 2)?)?;
                let sealed = sealer.seal(&seal::version_row(
                    &p,
                    &id,
                    version,
                    VersionFlag::from_i64(col(r, 4)?),
                    col(r, 3)?,
                    col(r, 5)?,
                ));
                tx.execute(
                    "UPDATE key_versions SET seal = $4 WHERE store = $1 AND key_id = $2 AND version = $3",
                    &[&p.as_str(), &id.as_str(), &i64::from(version), &sealed],
                )
                .await
                .map_err(pg_err)?;
                n += 1;
            }
            for r in &tx
                .query(&format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE seal IS NULL FOR UPDATE"), &[])
                .await
                .map_err(pg_err)?
            {
                let (o, attrs, _) = sealed_object(r)?;
                tx.execute(
                    "UPDATE objects SET seal = $2 WHERE uid = $1",
                    &[&o.uid, &sealer.seal(&seal::object_row(&o, &attrs))],
                )
                .await
                .map_err(pg_err)?;
                n += 1;
            }
            for r in &tx
                .query(
                    "SELECT scope, body FROM policies WHERE seal IS NULL AND scope <> $1 FOR UPDATE",
                    &[&seal::POLICY_INDEX_SCOPE],
                )
                .await
                .map_err(pg_err)?
            {
                let (scope, body): (String, String) = (col(r, 0)?, col(r, 1)?);
                tx.execute(
                    "UPDATE policies SET seal = $2 WHERE scope = $1",
                    &[&scope, &sealer.seal(&seal::policy_row(&scope, &body))],
                )
                .await
                .map_err(pg_err)?;
                n += 1;
            }
            let indexed = tx
                .query_opt(
                    "SELECT 1 FROM policies WHERE scope = $1 AND seal IS NOT NULL",
                    &[&seal::POLICY_INDEX_SCOPE],
                )
                .await
                .map_err(pg_err)?;
            if indexed.is_none() {
                write_policy_index(&tx, Some(&*sealer)).await?;
            }
            tx.commit().await.map_err(pg_err)?;
            Ok(n)
        })
    }
}

impl MetaStore for PostgresStorage {
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.row(
            "SELECT value FROM meta WHERE name = $1".into(),
            params![name.to_owned()],
            |r| col(r, 0),
        )
    }

    fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let (name, value) = (name.to_owned(), value.to_vec());
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute(
                "INSERT INTO meta(name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &value],
            )
            .await
            .map_err(pg_err)?;
            let r = tx
                .query_one("SELECT value FROM meta WHERE name = $1", &[&name])
                .await
                .map_err(pg_err)?;
            let v: Vec<u8> = col(&r, 0)?;
            tx.commit().await.map_err(pg_err)?;
            Ok(v)
        })
    }

    fn set_meta(&self, name: &str, value: Option<&[u8]>) -> Result<()> {
        match value {
            Some(v) => self.exec(
                "INSERT INTO meta(name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name.to_owned(), v.to_vec()],
            ),
            None => self.exec("DELETE FROM meta WHERE name = $1", params![name.to_owned()]),
        }
        .map(drop)
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.rows(
            "SELECT name, value FROM meta WHERE left(name, length($1)) = $1 ORDER BY name".into(),
            params![prefix.to_owned()],
            |r| Ok((col(r, 0)?, col(r, 1)?)),
        )
    }

    fn reserve_count(&self, name: &str, n: u64) -> Result<u64> {
        let r = self.row(
            "INSERT INTO encryption_counts(name, reserved) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET reserved = encryption_counts.reserved + excluded.reserved \
             RETURNING reserved"
                .into(),
            params![name.to_owned(), n as i64],
            |r| col::<i64>(r, 0),
        )?;
        r.map(|t| t as u64)
            .ok_or_else(|| Error::Storage("the reservation returned no row".into()))
    }

    fn bump_counter(&self, name: &str) -> Result<u64> {
        let name = name.to_owned();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            // Serialise concurrent bumps on the row (or its absence).
            tx.execute(
                "INSERT INTO meta(name, value) VALUES ($1, '\\x30'::bytea) ON CONFLICT (name) DO NOTHING",
                &[&name],
            )
            .await
            .map_err(pg_err)?;
            let r = tx
                .query_one("SELECT value FROM meta WHERE name = $1 FOR UPDATE", &[&name])
                .await
                .map_err(pg_err)?;
            let old: Vec<u8> = col(&r, 0)?;
            let n = String::from_utf8(old)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            tx.execute(
                "UPDATE meta SET value = $2 WHERE name = $1",
                &[&name, &n.to_string().into_bytes()],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
            Ok(n)
        })
    }
}

impl PolicyStore for PostgresStorage {
    fn get_policy(&self, scope: &str) -> Result<Option<String>> {
        if scope == seal::POLICY_INDEX_SCOPE {
            return Ok(None);
        }
        if self.sealer.get().is_some() {
            // Policies are few: the whole sealed set is checked, so that a
            // policy deleted outside Keyhold is noticed too.
            return Ok(self
                .list_policies()?
                .into_iter()
                .find(|(s, _)| s == scope)
                .map(|(_, b)| b));
        }
        self.row(
            "SELECT body FROM policies WHERE scope = $1".into(),
            params![scope.to_owned()],
            |r| col(r, 0),
        )
    }

    fn set_policy(&self, scope: &str, body: Option<&str>) -> Result<bool> {
        if scope == seal::POLICY_INDEX_SCOPE {
            return Err(Error::invalid("policy scope", scope));
        }
        let sealer = self.sealer.get();
        let (scope, body) = (scope.to_owned(), body.map(str::to_owned));
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&POLICY_LOCK])
                .await
                .map_err(pg_err)?;
            let n = match &body {
                Some(b) => {
                    let sealed = sealer.as_ref().map(|s| s.seal(&seal::policy_row(&scope, b)));
                    tx.execute(
                        "INSERT INTO policies(scope, body, updated_at, seal) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (scope) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at, seal = excluded.seal",
                        &[&scope, b, &now(), &sealed],
                    )
                    .await
                }
                None => tx.execute("DELETE FROM policies WHERE scope = $1", &[&scope]).await,
            }
            .map_err(pg_err)?;
            write_policy_index(&tx, sealer.as_deref()).await?;
            tx.commit().await.map_err(pg_err)?;
            Ok(n > 0)
        })
    }

    fn list_policies(&self) -> Result<Vec<(String, String)>> {
        let sealer = self.sealer.get();
        with_conn!(self, c => {
            policies_checked(&c, sealer.as_deref()).await
        })
    }
}

impl AuditStore for PostgresStorage {
    fn add_audit_checkpoint(&self, cp: &AuditCheckpoint) -> Result<()> {
        let cp = cp.clone();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute(
                "INSERT INTO audit_checkpoints(chain, kind, seq, head, ts_ms, mac) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (chain, kind, seq) DO UPDATE SET head = excluded.head, ts_ms = excluded.ts_ms, mac = excluded.mac",
                &[&cp.chain, &cp.kind, &(cp.seq as i64), &cp.head, &cp.ts_ms, &cp.mac],
            )
            .await
            .map_err(pg_err)?;
            tx.execute(
                "DELETE FROM audit_checkpoints WHERE chain = $1 AND kind = $3 AND kind <> 'retention' AND seq < \
                 (SELECT seq FROM audit_checkpoints WHERE chain = $1 AND kind = $3 ORDER BY seq DESC LIMIT 1 OFFSET $2)",
                &[&cp.chain, &(AUDIT_CHECKPOINTS_KEPT - 1), &cp.kind],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        self.rows(
            "SELECT chain, kind, seq, head, ts_ms, mac FROM audit_checkpoints ORDER BY chain, seq"
                .into(),
            params![],
            |r| {
                Ok(AuditCheckpoint {
                    chain: col(r, 0)?,
                    kind: col(r, 1)?,
                    seq: col::<i64>(r, 2)? as u64,
                    head: col(r, 3)?,
                    ts_ms: col(r, 4)?,
                    mac: col(r, 5)?,
                })
            },
        )
    }

    fn audit_shipped(&self, chain: &str) -> Result<u64> {
        self.row(
            "SELECT coalesce(max(seq), 0) FROM audit_records WHERE chain = $1".into(),
            params![chain.to_owned()],
            |r| Ok(col::<i64>(r, 0)? as u64),
        )
        .map(Option::unwrap_or_default)
    }

    fn ship_audit(&self, chain: &str, lines: &[(u64, String)]) -> Result<()> {
        let seqs: Vec<i64> = lines.iter().map(|(s, _)| *s as i64).collect();
        let texts: Vec<String> = lines.iter().map(|(_, l)| l.clone()).collect();
        self.exec(
            "INSERT INTO audit_records(chain, seq, line) \
             SELECT $1, s, l FROM unnest($2::bigint[], $3::text[]) AS t(s, l) ON CONFLICT DO NOTHING",
            params![chain.to_owned(), seqs, texts],
        )
        .map(drop)
    }

    fn shipped_audit(&self) -> Result<Vec<(String, Vec<String>)>> {
        let rows = self.rows(
            "SELECT chain, line FROM audit_records ORDER BY chain, seq".into(),
            params![],
            |r| Ok((col::<String>(r, 0)?, col::<String>(r, 1)?)),
        )?;
        Ok(crate::group_by_chain(rows))
    }
}

impl NodeRegistry for PostgresStorage {
    fn shared(&self) -> bool {
        true
    }

    fn node_heartbeat(&self, n: &NodeInfo) -> Result<()> {
        self.exec(
            "INSERT INTO nodes(node_id, started_ms, heartbeat_ms, ack_epoch, lease_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node_id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms, ack_epoch = excluded.ack_epoch, \
             lease_ms = excluded.lease_ms",
            params![n.id.clone(), n.started_ms, n.heartbeat_ms, n.ack_epoch as i64, n.lease_ms],
        )
        .map(drop)
    }

    fn live_nodes(&self, since_ms: i64) -> Result<Vec<NodeInfo>> {
        self.rows(
            "SELECT node_id, started_ms, heartbeat_ms, ack_epoch, lease_ms FROM nodes WHERE heartbeat_ms >= $1 ORDER BY node_id".into(),
            params![since_ms],
            |r| {
                Ok(NodeInfo {
                    id: col(r, 0)?,
                    started_ms: col(r, 1)?,
                    heartbeat_ms: col(r, 2)?,
                    ack_epoch: col::<i64>(r, 3)? as u64,
                    lease_ms: col(r, 4)?,
                })
            },
        )
    }

    fn remove_node(&self, id: &str) -> Result<()> {
        self.exec(
            "DELETE FROM nodes WHERE node_id = $1",
            params![id.to_owned()],
        )
        .map(drop)
    }
}

impl StoreRepo for PostgresStorage {
    fn create_store(&self, store: &KeyStore) -> Result<()> {
        let n = self.exec(
            "INSERT INTO stores(prefix, status, description, created_at, seal) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            params![
                store.prefix.as_str().to_owned(),
                store.status.as_str().to_owned(),
                store.description.clone(),
                store.created_at,
                self.sealer.seal(|| seal::store_row(store))
            ],
        )?;
        if n == 0 {
            return Err(Error::StoreExists(store.prefix.display().to_owned()));
        }
        Ok(())
    }

    fn get_store(&self, prefix: &StorePrefix) -> Result<Option<KeyStore>> {
        match self.row(
            "SELECT prefix, status, description, created_at, seal FROM stores WHERE prefix = $1"
                .into(),
            params![prefix.as_str().to_owned()],
            sealed_store,
        )? {
            None => Ok(None),
            Some(r) if store_ok(self.sealer.get().as_deref(), &r) => Ok(Some(r.0)),
            Some(_) => Err(seal::refused(format!("key store {prefix}"))),
        }
    }

    fn list_stores(&self) -> Result<Vec<KeyStore>> {
        let rows = self.rows(
            "SELECT prefix, status, description, created_at, seal FROM stores ORDER BY prefix"
                .into(),
            params![],
            sealed_store,
        )?;
        let sealer = self.sealer.get();
        Ok(rows
            .into_iter()
            .filter(|r| store_ok(sealer.as_deref(), r))
            .map(|r| r.0)
            .collect())
    }

    fn set_store_status(&self, prefix: &StorePrefix, status: Status) -> Result<()> {
        let sealer = self.sealer.get();
        let p = prefix.clone();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let row = tx
                .query_opt(
                    "SELECT prefix, status, description, created_at, seal FROM stores WHERE prefix = $1 FOR UPDATE",
                    &[&p.as_str()],
                )
                .await
                .map_err(pg_err)?
                .ok_or_else(|| Error::StoreNotFound(p.display().to_owned()))?;
            let row = sealed_store(&row)?;
            if !store_ok(sealer.as_deref(), &row) {
                return Err(seal::refused(format!("key store {p}")));
            }
            let mut st = row.0;
            st.status = status;
            let sealed = sealer.as_ref().map(|s| s.seal(&seal::store_row(&st)));
            tx.execute(
                "UPDATE stores SET status = $2, seal = $3 WHERE prefix = $1",
                &[&p.as_str(), &status.as_str(), &sealed],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn add_credential(&self, cred: &StoredCredential) -> Result<()> {
        let cred = cred.clone();
        with_conn!(self, c => {
            require_store(&c, &cred.store).await?;
            c.execute(
                "INSERT INTO credentials(access_key_id, store, wrapped_secret, created_at) VALUES ($1, $2, $3, $4)",
                &[&cred.access_key_id, &cred.store.as_str(), &cred.wrapped_secret, &cred.created_at],
            )
            .await
            .map_err(pg_err)
            .map(drop)
        })
    }

    fn remove_credential(&self, prefix: &StorePrefix, access_key_id: &str) -> Result<()> {
        let n = self.exec(
            "DELETE FROM credentials WHERE store = $1 AND access_key_id = $2",
            params![prefix.as_str().to_owned(), access_key_id.to_owned()],
        )?;
        if n == 0 {
            return Err(Error::CredentialNotFound(access_key_id.to_owned()));
        }
        Ok(())
    }

    fn list_credentials(&self, prefix: &StorePrefix) -> Result<Vec<StoredCredential>> {
        let p = prefix.clone();
        with_conn!(self, c => {
            require_store(&c, &p).await?;
            c.query(
                "SELECT access_key_id, store, wrapped_secret, created_at FROM credentials WHERE store = $1 ORDER BY created_at, access_key_id",
                &[&p.as_str()],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(row_to_cred)
            .collect()
        })
    }

    fn get_credential(&self, access_key_id: &str) -> Result<Option<StoredCredential>> {
        self.row(
            "SELECT access_key_id, store, wrapped_secret, created_at FROM credentials WHERE access_key_id = $1".into(),
            params![access_key_id.to_owned()],
            row_to_cred,
        )
    }
}

impl KeyRepo for PostgresStorage {
    fn create_keys(&self, keys: &[(Key, WrappedKeyVersion)]) -> Result<()> {
        let keys = keys.to_vec();
        // (the key row's seal, its first version's seal)
        type Seals = (Option<Vec<u8>>, Option<Vec<u8>>);
        let seals: Vec<Seals> = keys
            .iter()
            .map(|(key, first)| {
                let k = self.sealer.seal(|| {
                    let mut k = key.clone();
                    k.current_version = first.version;
                    seal::key_row(&k)
                });
                (k, self.sealer.version_seal(&key.store, &key.id, first))
            })
            .collect();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let ins_key = tx
                .prepare(&format!(
                    "INSERT INTO keys({KEY_SEALED}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) ON CONFLICT DO NOTHING"
                ))
                .await
                .map_err(pg_err)?;
            let ins_version = tx
                .prepare(
                    "INSERT INTO key_versions(store, key_id, version, wrapped, created_at, flag, seal) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await
                .map_err(pg_err)?;
            let mut checked: Option<StorePrefix> = None;
            for ((key, first), (key_seal, version_seal)) in keys.iter().zip(&seals) {
                if checked.as_ref() != Some(&key.store) {
                    require_store(&tx, &key.store).await?;
                    checked = Some(key.store.clone());
                }
                let l = &key.lifecycle;
                let (state, min) = lifecycle_params(l);
                let n = tx
                    .execute(
                        &ins_key,
                        &[
                            &key.store.as_str(),
                            &key.id.as_str(),
                            &key.status.as_str(),
                            &key.usage.to_bits(),
                            &i64::from(first.version),
                            &key.created_at,
                            &key.updated_at,
                            &key.hsm_label,
                            &state,
                            &l.activate_at,
                            &l.deactivate_at,
                            &l.destroy_at,
                            &l.compromised_at,
                            &l.rotation_period,
                            &l.next_rotation_at,
                            &min,
                            key_seal,
                        ],
                    )
                    .await
                    .map_err(pg_err)?;
                if n == 0 {
                    return Err(Error::KeyExists {
                        store: key.store.display().to_owned(),
                        key: key.id.to_string(),
                    });
                }
                tx.execute(
                    &ins_version,
                    &[
                        &key.store.as_str(),
                        &key.id.as_str(),
                        &i64::from(first.version),
                        &first.wrapped,
                        &first.created_at,
                        &first.flag.to_i64(),
                        version_seal,
                    ],
                )
                .await
                .map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)
        })
    }

    fn get_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Option<Key>> {
        match self.row(
            format!("SELECT {KEY_SEALED} FROM keys WHERE store = $1 AND key_id = $2"),
            params![prefix.as_str().to_owned(), id.as_str().to_owned()],
            sealed_key,
        )? {
            None => Ok(None),
            Some(r) if key_ok(self.sealer.get().as_deref(), &r) => Ok(Some(r.0)),
            Some(_) => Err(seal::refused(format!("key {prefix}/{id}"))),
        }
    }

    fn list_keys(
        &self,
        prefix: &StorePrefix,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        let p = prefix.clone();
        let after = after.map(|a| a.as_str().to_owned()).unwrap_or_default();
        let rows: Vec<SealedKey> = with_conn!(self, c => {
            require_store(&c, &p).await?;
            let st = c
                .prepare_cached(&format!(
                    "SELECT {KEY_SEALED} FROM keys WHERE store = $1 AND key_id > $2 ORDER BY key_id LIMIT $3"
                ))
                .await
                .map_err(pg_err)?;
            c.query(&st, &[&p.as_str(), &after, &(limit as i64)])
                .await
                .map_err(pg_err)?
                .iter()
                .map(sealed_key)
                .collect()
        })?;
        Ok(self.sealer.keys(rows))
    }

    fn count_keys(&self, prefix: &StorePrefix) -> Result<u64> {
        self.row(
            "SELECT count(*) FROM keys WHERE store = $1".into(),
            params![prefix.as_str().to_owned()],
            |r| Ok(col::<i64>(r, 0)? as u64),
        )
        .map(Option::unwrap_or_default)
    }

    fn key_state_counts(&self) -> Result<Vec<(String, String, String, u64)>> {
        self.rows(
            "SELECT store, state, status, count(*) FROM keys GROUP BY store, state, status ORDER BY store, state, status".into(),
            params![],
            |r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?, col::<i64>(r, 3)? as u64)),
        )
    }

    fn set_key_status(&self, prefix: &StorePrefix, id: &KeyId, status: Status) -> Result<()> {
        self.modify_key(prefix, id, move |k| {
            k.status = status;
            k.updated_at = now();
            Ok(())
        })
    }

    fn set_key_usage(&self, prefix: &StorePrefix, id: &KeyId, usage: Usage) -> Result<()> {
        self.modify_key(prefix, id, move |k| {
            k.usage = usage;
            k.updated_at = now();
            Ok(())
        })
    }

    fn add_key_version(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: &WrappedKeyVersion,
    ) -> Result<()> {
        let (p, k, v) = (prefix.clone(), id.clone(), version.clone());
        let sealer = self.sealer.get();
        let version_seal = self.sealer.version_seal(prefix, id, version);
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let mut key = key_for_update(&tx, sealer.as_deref(), &p, &k).await?;
            if key.current_version + 1 != v.version {
                return Err(Error::InvalidState(format!(
                    "key {k} was rotated concurrently; retry"
                )));
            }
            key.current_version = v.version;
            key.updated_at = now();
            let sealed = sealer.as_ref().map(|s| s.seal(&seal::key_row(&key)));
            write_key(&tx, &key, sealed).await?;
            tx.execute(
                "INSERT INTO key_versions(store, key_id, version, wrapped, created_at, flag, seal) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &p.as_str(),
                    &k.as_str(),
                    &i64::from(v.version),
                    &v.wrapped,
                    &v.created_at,
                    &v.flag.to_i64(),
                    &version_seal,
                ],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn get_key_version(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: u32,
    ) -> Result<Option<WrappedKeyVersion>> {
        let row = self.row(
            "SELECT version, wrapped, created_at, flag, seal FROM key_versions WHERE store = $1 AND key_id = $2 AND version = $3".into(),
            params![
                prefix.as_str().to_owned(),
                id.as_str().to_owned(),
                i64::from(version)
            ],
            |r| {
                Ok((
                    WrappedKeyVersion {
                        version: to_u32(col(r, 0)?)?,
                        wrapped: col(r, 1)?,
                        created_at: col(r, 2)?,
                        flag: VersionFlag::from_i64(col(r, 3)?),
                    },
                    col::<Option<Vec<u8>>>(r, 4)?,
                ))
            },
        )?;
        match row {
            None => Ok(None),
            Some((v, sealed)) => {
                let r = (
                    v.version,
                    v.created_at,
                    v.flag,
                    !v.wrapped.is_empty(),
                    sealed,
                );
                if version_ok(self.sealer.get().as_deref(), prefix, id, &r) {
                    Ok(Some(v))
                } else {
                    Err(seal::refused(format!(
                        "version {version} of key {prefix}/{id}"
                    )))
                }
            }
        }
    }

    fn set_key_lifecycle(&self, prefix: &StorePrefix, id: &KeyId, l: &Lifecycle) -> Result<()> {
        let l = l.clone();
        self.modify_key(prefix, id, move |k| {
            k.lifecycle = l;
            k.updated_at = now();
            Ok(())
        })
    }

    fn destroy_key_material(&self, prefix: &StorePrefix, id: &KeyId, at: Timestamp) -> Result<()> {
        let (p, k) = (prefix.clone(), id.clone());
        let sealer = self.sealer.get();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            // Destroying is never refused for a row that does not verify:
            // it only takes power away.
            let n = tx
                .execute(
                    "UPDATE keys SET state = 'DESTROYED', destroy_at = $3, next_rotation_at = NULL, updated_at = $3 \
                     WHERE store = $1 AND key_id = $2",
                    &[&p.as_str(), &k.as_str(), &at],
                )
                .await
                .map_err(pg_err)?;
            one_key_row(n, &p, &k)?;
            if let Some(s) = &sealer {
                let row = tx
                    .query_one(
                        &format!("SELECT {KEY_SEALED} FROM keys WHERE store = $1 AND key_id = $2"),
                        &[&p.as_str(), &k.as_str()],
                    )
                    .await
                    .map_err(pg_err)?;
                let key = sealed_key(&row)?.0;
                tx.execute(
                    "UPDATE keys SET seal = $3 WHERE store = $1 AND key_id = $2",
                    &[&p.as_str(), &k.as_str(), &s.seal(&seal::key_row(&key))],
                )
                .await
                .map_err(pg_err)?;
            }
            tx.execute(
                "UPDATE key_versions SET wrapped = '\\x'::bytea WHERE store = $1 AND key_id = $2",
                &[&p.as_str(), &k.as_str()],
            )
            .await
            .map_err(pg_err)?;
            reseal_erased_versions(&tx, sealer.as_deref(), &p, &k, i64::MAX).await?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn shred_versions_below(&self, prefix: &StorePrefix, id: &KeyId, below: u32) -> Result<u64> {
        let (p, k) = (prefix.clone(), id.clone());
        let sealer = self.sealer.get();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let n = tx
                .execute(
                    "UPDATE key_versions SET wrapped = '\\x'::bytea WHERE store = $1 AND key_id = $2 AND version < $3 AND length(wrapped) > 0",
                    &[&p.as_str(), &k.as_str(), &i64::from(below)],
                )
                .await
                .map_err(pg_err)?;
            if n > 0 {
                reseal_erased_versions(&tx, sealer.as_deref(), &p, &k, i64::from(below)).await?;
            }
            tx.commit().await.map_err(pg_err)?;
            Ok(n)
        })
    }

    fn set_version_flag(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: u32,
        flag: VersionFlag,
    ) -> Result<()> {
        let (p, k) = (prefix.clone(), id.clone());
        let sealer = self.sealer.get();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let row = tx
                .query_opt(
                    &format!("SELECT {VERSION_SEALED} FROM key_versions WHERE store = $1 AND key_id = $2 AND version = $3 FOR UPDATE"),
                    &[&p.as_str(), &k.as_str(), &i64::from(version)],
                )
                .await
                .map_err(pg_err)?
                .ok_or_else(|| Error::invalid("version", format!("key {k} has no version {version}")))?;
            let row = version_row(&row)?;
            if !version_ok(sealer.as_deref(), &p, &k, &row) {
                return Err(seal::refused(format!("version {version} of key {p}/{k}")));
            }
            let sealed = sealer
                .as_ref()
                .map(|s| s.seal(&seal::version_row(&p, &k, version, flag, row.1, row.3)));
            tx.execute(
                "UPDATE key_versions SET flag = $4, seal = $5 WHERE store = $1 AND key_id = $2 AND version = $3",
                &[&p.as_str(), &k.as_str(), &i64::from(version), &flag.to_i64(), &sealed],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn list_key_versions(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Vec<VersionInfo>> {
        let rows = self.rows(
            format!("SELECT {VERSION_SEALED} FROM key_versions WHERE store = $1 AND key_id = $2 ORDER BY version"),
            params![prefix.as_str().to_owned(), id.as_str().to_owned()],
            version_row,
        )?;
        let sealer = self.sealer.get();
        Ok(rows
            .into_iter()
            .filter(|r| version_ok(sealer.as_deref(), prefix, id, r))
            .map(|(version, created_at, flag, has_material, _)| VersionInfo {
                version,
                created_at,
                flag,
                has_material,
            })
            .collect())
    }

    fn due_keys(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>> {
        let rows = self.rows(
            format!(
                "SELECT {KEY_SEALED} FROM keys WHERE destroy_at <= $1 AND state <> 'DESTROYED' \
                 UNION SELECT {KEY_SEALED} FROM keys WHERE next_rotation_at <= $1 LIMIT $2"
            ),
            params![now, limit as i64],
            sealed_key,
        )?;
        Ok(self.sealer.keys(rows))
    }
}

impl ObjectRepo for PostgresStorage {
    fn create_object(&self, o: &ManagedObject, material: &[u8]) -> Result<()> {
        let attrs = serde_json::to_string(&o.attrs).map_err(|e| Error::Internal(e.to_string()))?;
        let sealed = self.sealer.seal(|| {
            let mut row = o.clone();
            row.rev = 1;
            row.has_material = true;
            seal::object_row(&row, &attrs)
        });
        let n = self.exec(
            "INSERT INTO objects(uid, object_type, owner, state, exportable, attrs, material, rev, created_ms, shared, seal) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10) ON CONFLICT DO NOTHING",
            params![
                o.uid.clone(),
                i64::from(o.object_type),
                o.owner.clone(),
                o.state as i64,
                i64::from(o.exportable),
                attrs,
                material.to_vec(),
                now_ms(),
                i64::from(o.is_shared()),
                sealed
            ],
        )?;
        if n == 0 {
            return Err(Error::Conflict(format!("object {}", o.uid)));
        }
        Ok(())
    }

    fn get_object(&self, uid: &str) -> Result<Option<ManagedObject>> {
        match self.row(
            format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE uid = $1"),
            params![uid.to_owned()],
            sealed_object,
        )? {
            None => Ok(None),
            Some(r) if object_ok(self.sealer.get().as_deref(), &r) => Ok(Some(r.0)),
            Some(_) => Err(seal::refused(format!("object {uid}"))),
        }
    }

    fn object_material(&self, uid: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .row(
                "SELECT material FROM objects WHERE uid = $1".into(),
                params![uid.to_owned()],
                |r| col::<Option<Vec<u8>>>(r, 0),
            )?
            .flatten())
    }

    fn update_object(&self, o: &ManagedObject) -> Result<()> {
        let attrs = serde_json::to_string(&o.attrs).map_err(|e| Error::Internal(e.to_string()))?;
        // The seal of the row as written: a row changed outside Keyhold
        // since the caller read it (verified) ends up not verifying.
        let sealed = self.sealer.seal(|| {
            let mut row = o.clone();
            row.rev = o.rev + 1;
            seal::object_row(&row, &attrs)
        });
        let n = self.exec(
            // Erasing the material is one-way: an update never brings it
            // back, and one that says it is there when it is not loses.
            "UPDATE objects SET state = $3, exportable = $4, attrs = $5, rev = rev + 1, \
             material = CASE WHEN $6 THEN material ELSE NULL END, shared = $7, seal = $8 \
             WHERE uid = $1 AND rev = $2 AND ($6 = false OR material IS NOT NULL)",
            params![
                o.uid.clone(),
                o.rev as i64,
                o.state as i64,
                i64::from(o.exportable),
                attrs,
                o.has_material,
                i64::from(o.is_shared()),
                sealed
            ],
        )?;
        if n == 1 {
            return Ok(());
        }
        let exists = self
            .row(
                "SELECT 1 FROM objects WHERE uid = $1".into(),
                params![o.uid.clone()],
                |_| Ok(()),
            )?
            .is_some();
        Err(if exists {
            Error::Conflict(format!("object {}", o.uid))
        } else {
            Error::ObjectNotFound(o.uid.clone())
        })
    }

    fn list_objects(&self) -> Result<Vec<ManagedObject>> {
        let rows = self.rows(
            format!("SELECT {OBJECT_COLUMNS} FROM objects ORDER BY created_ms, uid"),
            params![],
            sealed_object,
        )?;
        Ok(self.sealer.objects(rows))
    }

    fn list_objects_for(&self, identity: &str, with_destroyed: bool) -> Result<Vec<ManagedObject>> {
        let sql = if with_destroyed {
            format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE owner = $1 OR shared = 1 \
                 ORDER BY created_ms, uid"
            )
        } else {
            format!(
                "SELECT {OBJECT_COLUMNS} FROM objects \
                 WHERE (owner = $1 AND state < {d}) OR (shared = 1 AND state < {d}) \
                 ORDER BY created_ms, uid",
                d = ObjectState::Destroyed as i64
            )
        };
        let rows = self.rows(sql, params![identity.to_owned()], sealed_object)?;
        Ok(self.sealer.objects(rows))
    }

    fn delete_object(&self, uid: &str) -> Result<()> {
        self.exec(
            "DELETE FROM objects WHERE uid = $1",
            params![uid.to_owned()],
        )
        .map(drop)
    }
}

impl Maintenance for PostgresStorage {
    fn wrapped_items(&self) -> Result<Vec<(WrappedItem, Vec<u8>)>> {
        let mut out = self.rows(
            "SELECT name, value FROM meta ORDER BY name".into(),
            params![],
            |r| Ok((WrappedItem::Meta { name: col(r, 0)? }, col(r, 1)?)),
        )?;
        out.extend(self.rows(
            "SELECT access_key_id, store, wrapped_secret FROM credentials ORDER BY access_key_id"
                .into(),
            params![],
            |r| {
                Ok((
                    WrappedItem::Credential {
                        access_key_id: col(r, 0)?,
                        store: StorePrefix::parse(col(r, 1)?).map_err(bad_row)?,
                    },
                    col(r, 2)?,
                ))
            },
        )?);
        out.extend(self.rows(
            "SELECT store, key_id, version, wrapped FROM key_versions WHERE length(wrapped) > 0 ORDER BY store, key_id, version".into(),
            params![],
            |r| {
                Ok((
                    WrappedItem::KeyVersion {
                        store: StorePrefix::parse(col(r, 0)?).map_err(bad_row)?,
                        id: KeyId::parse(col(r, 1)?).map_err(bad_row)?,
                        version: to_u32(col(r, 2)?)?,
                    },
                    col(r, 3)?,
                ))
            },
        )?);
        out.extend(self.rows(
            "SELECT uid, material FROM objects WHERE material IS NOT NULL ORDER BY uid".into(),
            params![],
            |r| Ok((WrappedItem::Object { uid: col(r, 0)? }, col(r, 1)?)),
        )?);
        Ok(out)
    }

    fn replace_wrapped(&self, item: &WrappedItem, expected: &[u8], new: &[u8]) -> Result<bool> {
        let (e, n) = (expected.to_vec(), new.to_vec());
        let changed = match item {
            WrappedItem::Meta { name } => self.exec(
                "UPDATE meta SET value = $3 WHERE name = $1 AND value = $2",
                params![name.clone(), e, n],
            ),
            WrappedItem::Credential {
                store,
                access_key_id,
            } => self.exec(
                "UPDATE credentials SET wrapped_secret = $4 WHERE access_key_id = $1 AND store = $2 AND wrapped_secret = $3",
                params![access_key_id.clone(), store.as_str().to_owned(), e, n],
            ),
            WrappedItem::KeyVersion { store, id, version } => self.exec(
                "UPDATE key_versions SET wrapped = $5 WHERE store = $1 AND key_id = $2 AND version = $3 AND wrapped = $4",
                params![
                    store.as_str().to_owned(),
                    id.as_str().to_owned(),
                    i64::from(*version),
                    e,
                    n
                ],
            ),
            WrappedItem::Object { uid } => self.exec(
                "UPDATE objects SET material = $3 WHERE uid = $1 AND material = $2",
                params![uid.clone(), e, n],
            ),
        }?;
        Ok(changed == 1)
    }

    fn snapshot(&self) -> Result<Snapshot> {
        with_conn!(self, c => {
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg_err)?;
            let mut tables = Vec::new();
            for spec in SNAPSHOT_TABLES {
                let rows = tx.query(spec.select().as_str(), &[]).await.map_err(pg_err)?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let mut cells = Vec::with_capacity(spec.columns.len());
                    for (i, c) in r.columns().iter().enumerate() {
                        let t = c.type_();
                        cells.push(if *t == Type::INT8 {
                            col::<Option<i64>>(r, i)?.map_or(Cell::Null, Cell::Int)
                        } else if *t == Type::BYTEA {
                            col::<Option<Vec<u8>>>(r, i)?.map_or(Cell::Null, Cell::Bytes)
                        } else {
                            col::<Option<String>>(r, i)?.map_or(Cell::Null, Cell::Text)
                        });
                    }
                    out.push(cells);
                }
                tables.push(TableDump {
                    name: spec.name.to_owned(),
                    rows: out,
                });
            }
            tx.commit().await.map_err(pg_err)?;
            Ok(Snapshot { tables })
        })
    }

    fn restore(&self, snap: &Snapshot) -> Result<()> {
        snap.validate()?;
        let snap = snap.clone();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            for spec in SNAPSHOT_TABLES.iter().filter(|s| s.name != "meta") {
                let any = tx
                    .query_opt(crate::any_row_sql(spec.name).as_str(), &[])
                    .await
                    .map_err(pg_err)?;
                if any.is_some() {
                    return Err(crate::not_empty(spec.name));
                }
            }
            // The meta rows (and sealed index) a fresh database may have
            // are replaced.
            tx.execute("DELETE FROM meta", &[]).await.map_err(pg_err)?;
            tx.execute("DELETE FROM policies", &[]).await.map_err(pg_err)?;
            for (spec, t) in snap.ordered() {
                let st = tx.prepare(&spec.insert('$')).await.map_err(pg_err)?;
                for row in &t.rows {
                    let vals: Vec<Box<dyn ToSql + Send + Sync>> = spec
                        .cells(row)
                        .zip(st.params())
                        .map(|(cell, ty)| -> Box<dyn ToSql + Send + Sync> {
                            match cell {
                                Cell::Null if *ty == Type::INT8 => Box::new(None::<i64>),
                                Cell::Null if *ty == Type::BYTEA => Box::new(None::<Vec<u8>>),
                                Cell::Null => Box::new(None::<String>),
                                Cell::Int(v) => Box::new(*v),
                                Cell::Text(s) => Box::new(s.clone()),
                                Cell::Bytes(b) => Box::new(b.clone()),
                            }
                        })
                        .collect();
                    let p: Vec<&(dyn ToSql + Sync)> = vals
                        .iter()
                        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                        .collect();
                    tx.execute(&st, &p).await.map_err(pg_err)?;
                }
            }
            tx.execute(crate::mark_shared_sql!(), &[]).await.map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_log_names_what_changed_or_says_it_cannot() {
        let c = Changes::default();
        assert_eq!(c.since(0), Some(vec![]));
        c.record(Changes::parse("k:/a\u{1f}k1"));
        c.record(Changes::parse("o:uid-1"));
        assert_eq!(
            c.since(0),
            Some(vec![
                ChangeScope::Key {
                    store: "/a".into(),
                    id: "k1".into()
                },
                ChangeScope::Object("uid-1".into())
            ])
        );
        assert_eq!(c.since(1), Some(vec![ChangeScope::Object("uid-1".into())]));
        c.record(Changes::parse("*"));
        c.record(Changes::parse("k:no separator"));
        assert_eq!(c.since(2), Some(vec![ChangeScope::All, ChangeScope::All]));
        for _ in 0..CHANGE_LOG_LEN {
            c.bump();
        }
        // Too far behind: the log no longer covers it.
        assert_eq!(c.since(1), None);
        assert!(c.since(c.token.load(Ordering::SeqCst) - 1).is_some());
    }
}
