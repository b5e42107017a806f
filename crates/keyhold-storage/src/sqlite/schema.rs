//! The schema: migrations and the column lists rows are read by.

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many have run.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE stores (
    prefix      TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);
CREATE TABLE credentials (
    access_key_id  TEXT PRIMARY KEY,
    store          TEXT NOT NULL REFERENCES stores(prefix),
    wrapped_secret BLOB NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE INDEX credentials_store ON credentials(store);
CREATE TABLE keys (
    store           TEXT NOT NULL REFERENCES stores(prefix),
    key_id          TEXT NOT NULL,
    status          TEXT NOT NULL,
    usage           INTEGER NOT NULL,
    current_version INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (store, key_id)
) WITHOUT ROWID;
CREATE TABLE key_versions (
    store      TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (store, key_id, version),
    FOREIGN KEY (store, key_id) REFERENCES keys(store, key_id)
) WITHOUT ROWID;
"#,
    // v2: keys resident in an HSM (their version rows hold no material).
    r#"
ALTER TABLE keys ADD COLUMN hsm_label TEXT;
"#,
    // v3: lifecycle states and dates, rotation schedule, retired and
    // compromised versions.
    r#"
ALTER TABLE keys ADD COLUMN state TEXT NOT NULL DEFAULT 'ACTIVE';
ALTER TABLE keys ADD COLUMN activate_at INTEGER;
ALTER TABLE keys ADD COLUMN deactivate_at INTEGER;
ALTER TABLE keys ADD COLUMN destroy_at INTEGER;
ALTER TABLE keys ADD COLUMN compromised_at INTEGER;
ALTER TABLE keys ADD COLUMN rotation_period INTEGER;
ALTER TABLE keys ADD COLUMN next_rotation_at INTEGER;
ALTER TABLE keys ADD COLUMN min_decrypt_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE key_versions ADD COLUMN flag INTEGER NOT NULL DEFAULT 0;
CREATE INDEX keys_destroy_at ON keys(destroy_at) WHERE destroy_at IS NOT NULL;
CREATE INDEX keys_next_rotation_at ON keys(next_rotation_at) WHERE next_rotation_at IS NOT NULL;
"#,
    // v4: audit checkpoints, kept away from the audit log files.
    r#"
CREATE TABLE audit_checkpoints (
    chain TEXT NOT NULL,
    kind  TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    head  TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    mac   TEXT NOT NULL,
    PRIMARY KEY (chain, kind, seq)
) WITHOUT ROWID;
"#,
    // v5: secondary-authorization policies, per key store or key.
    r#"
CREATE TABLE policies (
    scope      TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // v6: managed objects (KMIP). Attributes are a JSON list; the material
    // is wrapped under the root of trust and erased on destroy.
    r#"
CREATE TABLE objects (
    uid         TEXT PRIMARY KEY,
    object_type INTEGER NOT NULL,
    owner       TEXT NOT NULL,
    state       INTEGER NOT NULL,
    exportable  INTEGER NOT NULL,
    attrs       TEXT NOT NULL,
    material    BLOB,
    rev         INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // v7: running nodes (heartbeats), for storage shared by several.
    r#"
CREATE TABLE nodes (
    node_id      TEXT PRIMARY KEY,
    started_ms   INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    ack_epoch    INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // v8: audit records copied from the chain files, for storage shared by
    // several nodes (each node's `keyhold audit` sees every node's).
    r#"
CREATE TABLE audit_records (
    chain TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    line  TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
) WITHOUT ROWID;
"#,
    // v9: indexes for Locate: an identity's objects by state, and the
    // objects granted to anyone (`shared`, derived from the attributes).
    concat!(
        "ALTER TABLE objects ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;\n",
        crate::mark_shared_sql!(),
        ";\nCREATE INDEX objects_owner ON objects(owner, state);\n",
        "CREATE INDEX objects_shared ON objects(shared) WHERE shared = 1;\n",
    ),
    // v10: how many AES-GCM encryptions with random IVs each key version
    // (or KMIP object) may have made, reserved in blocks (never counted
    // down, never reused).
    r#"
CREATE TABLE encryption_counts (
    name     TEXT PRIMARY KEY,
    reserved INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // v11: objects in an ordinary (rowid) table. A WITHOUT ROWID table keeps
    // rows inline only up to about 1 KB on 4 KiB pages; an object's
    // attributes are about that, so every row took an overflow page of its
    // own: ~4.7 KB per object instead of ~1.2 KB.
    r#"
CREATE TABLE objects_v11 (
    uid         TEXT PRIMARY KEY,
    object_type INTEGER NOT NULL,
    owner       TEXT NOT NULL,
    state       INTEGER NOT NULL,
    exportable  INTEGER NOT NULL,
    attrs       TEXT NOT NULL,
    material    BLOB,
    rev         INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    shared      INTEGER NOT NULL DEFAULT 0
);
INSERT INTO objects_v11(uid, object_type, owner, state, exportable, attrs, material, rev, created_ms, shared)
    SELECT uid, object_type, owner, state, exportable, attrs, material, rev, created_ms, shared FROM objects;
DROP TABLE objects;
ALTER TABLE objects_v11 RENAME TO objects;
CREATE INDEX objects_owner ON objects(owner, state);
CREATE INDEX objects_shared ON objects(shared) WHERE shared = 1;
"#,
    // v12: each node's lease (see the PostgreSQL backend).
    "ALTER TABLE nodes ADD COLUMN lease_ms INTEGER NOT NULL DEFAULT 0;",
    // v13: sealed rows (see `crate::seal`): a MAC per row that grants or
    // limits power, NULL in rows from before (sealed once by the key
    // service, see `RowSealing::seal_unsealed_rows`).
    r#"
ALTER TABLE stores ADD COLUMN seal BLOB;
ALTER TABLE keys ADD COLUMN seal BLOB;
ALTER TABLE key_versions ADD COLUMN seal BLOB;
ALTER TABLE objects ADD COLUMN seal BLOB;
ALTER TABLE policies ADD COLUMN seal BLOB;
"#,
    // v14: key types (AES_256, RSA_3072, ECC_NIST_P256…); keys from before
    // are AES-256.
    "ALTER TABLE keys ADD COLUMN key_type TEXT NOT NULL DEFAULT 'AES_256';",
    // v15: disabled keys found at once (the console's break-glass banner).
    "CREATE INDEX keys_disabled ON keys(store, key_id) WHERE status = 'DISABLED';",
];

/// Checkpoints kept per audit chain (retention markers are all kept).
pub(super) const AUDIT_CHECKPOINTS_KEPT: i64 = 1_000;

/// The columns [`SqliteStorage::row_to_key`] reads, in order.
pub(super) const KEY_COLUMNS: &str = "store, key_id, status, usage, current_version, created_at, updated_at, hsm_label, \
    state, activate_at, deactivate_at, destroy_at, compromised_at, rotation_period, next_rotation_at, min_decrypt_version, \
    key_type";

/// [`KEY_COLUMNS`] and the row's seal (column 17).
pub(super) const KEY_SEALED: &str = "store, key_id, status, usage, current_version, created_at, updated_at, hsm_label, \
    state, activate_at, deactivate_at, destroy_at, compromised_at, rotation_period, next_rotation_at, min_decrypt_version, \
    key_type, seal";
