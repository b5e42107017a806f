//! The schema: migrations, advisory locks and the column lists rows are read by.

/// The channel the change triggers notify on.
pub(super) const CHANNEL: &str = "keyhold_changes";

/// Schema migrations, applied in order under an advisory lock (several
/// nodes may start at once); `keyhold_schema` records how many have run.
/// Column types are BIGINT, TEXT and BYTEA only, like SQLite's, so that
/// snapshots move between the backends unchanged.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 8: key types (AES_256, RSA_3072, ECC_NIST_P256…); keys from before
    // are AES-256.
    "ALTER TABLE keys ADD COLUMN key_type TEXT NOT NULL DEFAULT 'AES_256';",
    // 9: disabled keys found at once (the console's break-glass banner).
    "CREATE INDEX keys_disabled ON keys(store, key_id) WHERE status = 'DISABLED';",
];

/// An arbitrary constant naming the lock that orders policy changes (each
/// rewrites the sealed index of policy scopes).
pub(super) const POLICY_LOCK: i64 = 0x006b_6579_706f_6c69;

/// An arbitrary constant naming Keyhold's migration lock.
pub(super) const MIGRATION_LOCK: i64 = 0x006b_6579_686f_6c64;

/// Checkpoints kept per audit chain (retention markers are all kept).
pub(super) const AUDIT_CHECKPOINTS_KEPT: i64 = 1_000;

pub(super) const OBJECT_COLUMNS: &str =
    "uid, object_type, owner, state, exportable, attrs, material IS NOT NULL, rev, seal";

/// The columns [`row_to_key`] reads, in order, then the row's seal (17).
pub(super) const KEY_SEALED: &str = "store, key_id, status, usage, current_version, created_at, updated_at, hsm_label, \
    state, activate_at, deactivate_at, destroy_at, compromised_at, rotation_period, next_rotation_at, min_decrypt_version, \
    key_type, seal";

/// The version columns sealed: (version, created_at, flag, has material, seal).
pub(super) const VERSION_SEALED: &str = "version, created_at, flag, length(wrapped) > 0, seal";
