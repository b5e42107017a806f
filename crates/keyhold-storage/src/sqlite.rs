//! The embedded SQLite backend.

use crate::prelude::*;
use crate::seal::{
    self, key_ok, object_ok, store_ok, version_ok, RowSealer, SealedKey, SealedObject, VersionRow,
};
use crate::{now_ms, Cell, NodeInfo, Snapshot, TableDump, VersionInfo, SNAPSHOT_TABLES};
use keyhold_core::{
    now, AuditCheckpoint, Error, Key, KeyId, KeyState, KeyStore, Lifecycle, ManagedObject,
    ObjectState, Result, Status, StorePrefix, StoredCredential, Timestamp, Usage, VersionFlag,
    WrappedItem, WrappedKeyVersion,
};
use parking_lot::Mutex;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many have run.
const MIGRATIONS: &[&str] = &[
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
];

/// Checkpoints kept per audit chain (retention markers are all kept).
const AUDIT_CHECKPOINTS_KEPT: i64 = 1_000;

/// The values of the lifecycle columns, in [`KEY_COLUMNS`] order (`state`
/// to `min_decrypt_version`): one place for inserts and updates.
fn lifecycle_values(l: &Lifecycle) -> [Value; 8] {
    let opt = |t: Option<i64>| t.map_or(Value::Null, Value::Integer);
    [
        Value::Text(l.state.as_str().to_owned()),
        opt(l.activate_at),
        opt(l.deactivate_at),
        opt(l.destroy_at),
        opt(l.compromised_at),
        opt(l.rotation_period),
        opt(l.next_rotation_at),
        Value::Integer(l.min_decrypt_version.into()),
    ]
}

/// The columns [`SqliteStorage::row_to_key`] reads, in order.
const KEY_COLUMNS: &str = "store, key_id, status, usage, current_version, created_at, updated_at, hsm_label, \
    state, activate_at, deactivate_at, destroy_at, compromised_at, rotation_period, next_rotation_at, min_decrypt_version";

/// [`KEY_COLUMNS`] and the row's seal (column 16).
const KEY_SEALED: &str = "store, key_id, status, usage, current_version, created_at, updated_at, hsm_label, \
    state, activate_at, deactivate_at, destroy_at, compromised_at, rotation_period, next_rotation_at, min_decrypt_version, seal";

/// SQLite storage: one file, WAL journal, `synchronous=FULL` so that every
/// acknowledged commit survives a crash or power loss.
/// Read-only connections for object reads.
const READERS: usize = 3;

pub struct SqliteStorage {
    conn: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    /// Object writes waiting to be committed together (group commit).
    pending: Mutex<Vec<Job>>,
    /// Rows this connection changed that the change token leaves out:
    /// audit checkpoints (several a second under load) and grouped object
    /// writes (whose process updates its own caches), so that neither
    /// drops the writing process's caches.
    quiet: std::sync::atomic::AtomicU64,
    /// Copies the WAL back into the database file beside the writer (file
    /// databases only).
    checkpointer: Option<Checkpointer>,
    /// Full checkpoints that truncate the WAL after erasures, shared by
    /// the erasures waiting at the same moment.
    purges: Purges,
    /// Seals rows written and checks rows read, once the key service
    /// installed it.
    sealer: seal::SealerSlot,
}

/// Truncating checkpoints after crypto-shredding. Each one copies the whole
/// WAL back and empties it, so it covers every erasure committed before it
/// began: concurrent destroys wait for one together instead of one each.
#[derive(Default)]
struct Purges {
    state: Mutex<PurgeState>,
    done: parking_lot::Condvar,
}

#[derive(Default)]
struct PurgeState {
    /// Purges begun, and finished, so far (the finished one's outcome).
    started: u64,
    finished: u64,
    running: bool,
    outcome: Option<std::result::Result<(), String>>,
}

/// How long a purge waits for readers and other checkpoints to let go of
/// the WAL before it reports failure.
const PURGE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// WAL pages after which the checkpoint thread is asked to copy the WAL
/// back into the database file.
const CHECKPOINT_PAGES: i32 = 200;
/// WAL pages after which the writer itself finishes the copy, so that the
/// WAL starts over: under constant writes the checkpoint thread never
/// catches up on its own, and a WAL that never restarts grows without
/// bound.
const RESTART_PAGES: i32 = 1000;

thread_local! {
    /// Pages in the WAL after this thread's last commit (-1: none since
    /// last looked). Set by [`note_wal_pages`], SQLite's WAL hook, which
    /// runs in the committing thread.
    static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(-1) };
}

fn note_wal_pages(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// A thread with its own connection that runs PASSIVE checkpoints when
/// asked. SQLite's automatic checkpoint runs inside the commit that
/// crosses the threshold: copying 200 pages and syncing the database file
/// held every queued write for 2–4 ms. A PASSIVE checkpoint on another
/// connection runs beside the writer and blocks nobody.
struct Checkpointer {
    state: Arc<(Mutex<CheckpointerState>, parking_lot::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct CheckpointerState {
    asked: bool,
    stop: bool,
}

impl Checkpointer {
    fn start(conn: Connection) -> Self {
        let state: Arc<(Mutex<CheckpointerState>, parking_lot::Condvar)> = Arc::default();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("keyhold-sqlite-checkpoint".into())
            .spawn(move || loop {
                {
                    let mut g = st.0.lock();
                    while !g.asked && !g.stop {
                        st.1.wait(&mut g);
                    }
                    if g.stop {
                        return;
                    }
                    g.asked = false;
                }
                if let Err(e) = passive_checkpoint(&conn) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            })
            .expect("spawn checkpoint thread");
        Self {
            state,
            thread: Some(thread),
        }
    }

    fn ask(&self) {
        let mut g = self.state.0.lock();
        if !g.asked {
            g.asked = true;
            self.state.1.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.state.0.lock().stop = true;
        self.state.1.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies what it can of the WAL into the database file without waiting
/// for anyone (a checkpoint already running elsewhere: nothing done).
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// A write to run inside a shared transaction.
type WriteFn = Box<dyn FnOnce(&Connection) -> Result<()> + Send>;

/// A write run inside a shared transaction, and where its outcome goes.
struct Job {
    run: WriteFn,
    slot: Arc<Slot>,
}

/// A connection, held. Letting the writer connection go hands the turn to
/// the owner of the oldest grouped write queued meanwhile: whoever used the
/// connection (a grouped commit or any other write or read), a queued
/// write never waits for a connection nobody holds.
struct Held<'a> {
    conn: Option<parking_lot::MutexGuard<'a, Connection>>,
    /// The grouped writes' queue (writer connection only).
    pending: Option<&'a Mutex<Vec<Job>>>,
    /// Told when the writer's commits filled the WAL (writer only).
    checkpointer: Option<&'a Checkpointer>,
}

impl<'a> Held<'a> {
    fn plain(conn: parking_lot::MutexGuard<'a, Connection>) -> Self {
        Self {
            conn: Some(conn),
            pending: None,
            checkpointer: None,
        }
    }
}

impl std::ops::Deref for Held<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("held until dropped")
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let (Some(conn), Some(ck)) = (&self.conn, self.checkpointer) {
            let pages = WAL_PAGES.with(|p| p.replace(-1));
            if pages >= RESTART_PAGES {
                // The checkpoint thread has copied most of it: finish the
                // copy with no write in between, so that the next write
                // transaction starts the WAL over.
                if let Err(e) = passive_checkpoint(conn) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            } else if pages >= CHECKPOINT_PAGES {
                ck.ask();
            }
        }
        drop(self.conn.take());
        let Some(pending) = self.pending else { return };
        let next = pending.lock().first().map(|j| j.slot.clone());
        if let Some(next) = next {
            next.state.lock().turn = true;
            next.wake.notify_one();
        }
    }
}

/// Where a queued write learns its outcome, or that it is its turn to
/// commit the queue.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    wake: parking_lot::Condvar,
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<()>>,
    /// The writer before handed the connection on to this job's owner.
    turn: bool,
}

const OBJECT_COLUMNS: &str =
    "uid, object_type, owner, state, exportable, attrs, material IS NOT NULL, rev, seal";

fn sealed_object(r: &rusqlite::Row<'_>) -> rusqlite::Result<SealedObject> {
    Ok((row_to_object(r)?, r.get(5)?, r.get(8)?))
}

fn row_to_object(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManagedObject> {
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    let state: u32 = r.get(3)?;
    let attrs: String = r.get(5)?;
    Ok(ManagedObject {
        uid: r.get(0)?,
        object_type: r.get(1)?,
        owner: r.get(2)?,
        state: ObjectState::from_u32(state).ok_or_else(|| bad(3, format!("bad state {state}")))?,
        exportable: r.get(4)?,
        attrs: serde_json::from_str(&attrs).map_err(|e| bad(5, e.to_string()))?,
        has_material: r.get(6)?,
        rev: r.get(7)?,
    })
}

fn db_err(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            Error::DependencyTimeout(e.to_string())
        }
        _ => Error::Storage(e.to_string()),
    }
}

fn parse_prefix(s: String) -> rusqlite::Result<StorePrefix> {
    StorePrefix::parse(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parse_key_id(s: String) -> rusqlite::Result<KeyId> {
    KeyId::parse(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parse_status(s: String) -> rusqlite::Result<Status> {
    Status::parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("bad status {s:?}").into(),
        )
    })
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        let mut s = Self::from_connection(conn)?;
        // Object reads use their own connections: under WAL they read the
        // last commit without waiting for a writer's fsync.
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(db_err)?;
            r.busy_timeout(std::time::Duration::from_secs(10))
                .map_err(db_err)?;
            s.readers.push(Mutex::new(r));
        }
        // The writer no longer checkpoints inside its commits: a thread
        // beside it does (see `Checkpointer`).
        let ck = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        ck.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        {
            let w = s.conn.get_mut();
            w.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(db_err)?;
            w.wal_hook(Some(note_wal_pages));
        }
        s.checkpointer = Some(Checkpointer::start(ck));
        Ok(s)
    }

    /// A connection for reading objects: a free reader, else the writer's
    /// (in-memory databases have only that one).
    fn reader(&self) -> Held<'_> {
        for r in &self.readers {
            if let Some(g) = r.try_lock() {
                return Held::plain(g);
            }
        }
        match self.readers.first() {
            Some(r) => Held::plain(r.lock()),
            None => self.writer(),
        }
    }

    /// Copies the whole WAL back into the database file and truncates it
    /// to nothing, so that no page image written before (an erased key's
    /// material among them) stays in `keyhold.db-wal`. Readers in the
    /// middle of a read and the checkpoint thread make SQLite answer
    /// "busy": tried again, the writer let go between tries, until
    /// [`PURGE_PATIENCE`] has passed.
    fn truncate_wal(&self) -> std::result::Result<(), String> {
        let deadline = std::time::Instant::now() + PURGE_PATIENCE;
        loop {
            let (busy, frames) = {
                // No busy handler inside: it would sleep (1 ms, then
                // longer) with the writer held and every write queued
                // behind it. A busy answer lets go of the writer instead.
                let conn = self.writer();
                let set = |t| conn.busy_timeout(t).map_err(|e| e.to_string());
                set(std::time::Duration::ZERO)?;
                let r = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                });
                set(std::time::Duration::from_secs(10))?;
                r.map_err(|e| format!("truncating the WAL after an erasure: {e}"))?
            };
            // In-memory databases have no WAL (-1 frames).
            if busy == 0 && frames <= 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "the erasure is committed, but readers kept the WAL busy for {}s: \
                     an older copy of the erased material may stay in keyhold.db-wal \
                     until the next erasure, or until every process using the database \
                     has stopped cleanly",
                    PURGE_PATIENCE.as_secs()
                ));
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::from_connection(Connection::open_in_memory().map_err(db_err)?)
    }

    fn from_connection(conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        // The commit that crosses this many WAL pages copies them back into
        // the database file while every queued write waits: 200 pages
        // (800 KiB) instead of SQLite's 1,000 makes that stall a fifth as
        // long. `open` then moves the copy off the writer altogether (see
        // `Checkpointer`).
        conn.pragma_update(None, "wal_autocheckpoint", 200)
            .map_err(db_err)?;
        // Crypto-shredding: erased wrapped material is overwritten in the
        // file, not just unlinked from the b-tree.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err)?;
        let s = Self {
            conn: Mutex::new(conn),
            readers: Vec::new(),
            pending: Mutex::new(Vec::new()),
            quiet: std::sync::atomic::AtomicU64::new(0),
            checkpointer: None,
            purges: Purges::default(),
            sealer: seal::SealerSlot::default(),
        };
        s.migrate()?;
        Ok(s)
    }

    /// Runs `run` in a transaction shared with the writes queued at the
    /// same moment, so that concurrent writers pay for one fsync together:
    /// whoever has the connection commits everything queued, then hands
    /// the turn to the owner of the oldest write queued meanwhile. The
    /// others sleep until their outcome is filled in (one wake-up each; no
    /// thread takes the connection only to find its write already done).
    /// Each write runs inside its own savepoint: one failing write does not
    /// undo the others. Returns once the write is durable.
    fn write_grouped(
        &self,
        run: impl FnOnce(&Connection) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let slot = Arc::new(Slot::default());
        self.pending.lock().push(Job {
            run: Box::new(run),
            slot: slot.clone(),
        });
        loop {
            if let Some(conn) = self.conn.try_lock() {
                self.commit_queued(Held {
                    conn: Some(conn),
                    pending: Some(&self.pending),
                    checkpointer: self.checkpointer.as_ref(),
                });
            }
            let mut st = slot.state.lock();
            if st.result.is_none() && !st.turn {
                // The timeout only guards against a wake-up lost to a race
                // between the hand-off and this wait.
                slot.wake
                    .wait_for(&mut st, std::time::Duration::from_millis(10));
            }
            st.turn = false;
            if let Some(r) = st.result.take() {
                return r;
            }
        }
    }

    /// Holding the connection: commits every queued write in one
    /// transaction (letting the connection go hands the turn on).
    fn commit_queued(&self, mut conn: Held<'_>) {
        let jobs = std::mem::take(&mut *self.pending.lock());
        if !jobs.is_empty() {
            // Object writes update the writing process's caches themselves
            // (other processes see data_version move): left out of the
            // change token like bookkeeping, so that a KMIP client's writes
            // do not drop every cached key ten times a second.
            self.quietly(&mut conn, |c| Self::commit_jobs(c, jobs));
        }
    }

    /// Runs `f` on the writer connection with the rows it changes left out
    /// of the change token (see `quiet`).
    fn quietly<R>(&self, conn: &mut Connection, f: impl FnOnce(&mut Connection) -> R) -> R {
        let before = conn.total_changes();
        let r = f(conn);
        self.quiet.fetch_add(
            conn.total_changes().wrapping_sub(before),
            std::sync::atomic::Ordering::Relaxed,
        );
        r
    }

    /// The writer connection, held.
    fn writer(&self) -> Held<'_> {
        Held {
            conn: Some(self.conn.lock()),
            pending: Some(&self.pending),
            checkpointer: self.checkpointer.as_ref(),
        }
    }

    fn commit_jobs(conn: &mut Connection, jobs: Vec<Job>) {
        let mut outcomes: Vec<(Arc<Slot>, Result<()>)> = Vec::with_capacity(jobs.len());
        let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let msg = e.to_string();
                for j in jobs {
                    Self::fill(&j.slot, Err(Error::Storage(msg.clone())));
                }
                return;
            }
        };
        let mut tx = tx;
        for j in jobs {
            let r = match tx.savepoint() {
                Ok(mut sp) => {
                    let r = (j.run)(&sp);
                    if r.is_ok() {
                        match sp.commit() {
                            Ok(()) => r,
                            Err(e) => Err(db_err(e)),
                        }
                    } else {
                        let _ = sp.rollback();
                        r
                    }
                }
                Err(e) => Err(db_err(e)),
            };
            outcomes.push((j.slot, r));
        }
        let committed = tx.commit().map_err(db_err);
        for (slot, r) in outcomes {
            let r = match (&committed, r) {
                (Ok(()), r) => r,
                (Err(e), Ok(())) => Err(Error::Storage(e.to_string())),
                (Err(_), r) => r,
            };
            Self::fill(&slot, r);
        }
    }

    fn fill(slot: &Slot, r: Result<()>) {
        slot.state.lock().result = Some(r);
        slot.wake.notify_one();
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let current: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db_err)?;
        if current as usize > MIGRATIONS.len() {
            return Err(Error::Storage(format!(
                "database schema version {current} is newer than this Keyhold ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(m).map_err(db_err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn row_to_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<Key> {
        Ok(Key {
            store: parse_prefix(r.get(0)?)?,
            id: parse_key_id(r.get(1)?)?,
            status: parse_status(r.get(2)?)?,
            usage: Usage::from_bits(r.get(3)?),
            current_version: r.get(4)?,
            created_at: r.get(5)?,
            updated_at: r.get(6)?,
            hsm_label: r.get(7)?,
            lifecycle: Lifecycle {
                state: {
                    let v: String = r.get(8)?;
                    KeyState::parse(&v).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(
                            8,
                            rusqlite::types::Type::Text,
                            format!("bad key state {v:?}").into(),
                        )
                    })?
                },
                activate_at: r.get(9)?,
                deactivate_at: r.get(10)?,
                destroy_at: r.get(11)?,
                compromised_at: r.get(12)?,
                rotation_period: r.get(13)?,
                next_rotation_at: r.get(14)?,
                min_decrypt_version: r.get(15)?,
            },
        })
    }

    fn row_to_store(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyStore> {
        Ok(KeyStore {
            prefix: parse_prefix(r.get(0)?)?,
            status: parse_status(r.get(1)?)?,
            description: r.get(2)?,
            created_at: r.get(3)?,
        })
    }

    fn row_to_cred(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCredential> {
        Ok(StoredCredential {
            access_key_id: r.get(0)?,
            store: parse_prefix(r.get(1)?)?,
            wrapped_secret: r.get(2)?,
            created_at: r.get(3)?,
        })
    }

    fn require_store(conn: &Connection, prefix: &StorePrefix) -> Result<()> {
        let found: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM stores WHERE prefix = ?1",
                [prefix.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        found
            .map(|_| ())
            .ok_or_else(|| Error::StoreNotFound(prefix.display().to_owned()))
    }

    /// An UPDATE of one key changed `n` rows: none means no such key.
    fn one_key_row(n: usize, prefix: &StorePrefix, id: &KeyId) -> Result<()> {
        if n == 0 {
            return Err(Self::key_not_found(prefix, id));
        }
        Ok(())
    }

    fn key_not_found(prefix: &StorePrefix, id: &KeyId) -> Error {
        Error::KeyNotFound {
            store: prefix.display().to_owned(),
            key: id.to_string(),
        }
    }
}

/// Sealed rows (see [`crate::seal`]).
impl SqliteStorage {
    fn sealed_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<SealedKey> {
        Ok((Self::row_to_key(r)?, r.get(16)?))
    }

    fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            VersionFlag::from_i64(r.get(2)?),
            r.get(3)?,
            r.get(4)?,
        ))
    }

    /// Runs `f` in one immediate transaction on the writer.
    fn in_tx<R>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<R>) -> Result<R> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let r = f(&tx)?;
        tx.commit().map_err(db_err)?;
        Ok(r)
    }

    /// Changes one key's row: read (refused unless it verifies), changed
    /// by `f`, written back whole with its new seal.
    fn modify_key(
        &self,
        tx: &Connection,
        prefix: &StorePrefix,
        id: &KeyId,
        f: impl FnOnce(&mut Key) -> Result<()>,
    ) -> Result<Key> {
        let row = tx
            .prepare_cached(&format!(
                "SELECT {KEY_SEALED} FROM keys WHERE store = ?1 AND key_id = ?2"
            ))
            .and_then(|mut st| {
                st.query_row(params![prefix.as_str(), id.as_str()], Self::sealed_key)
                    .optional()
            })
            .map_err(db_err)?
            .ok_or_else(|| Self::key_not_found(prefix, id))?;
        let sealer = self.sealer.get();
        if !key_ok(sealer.as_deref(), &row) {
            return Err(seal::refused(format!("key {prefix}/{id}")));
        }
        let mut k = row.0;
        f(&mut k)?;
        let sealed = sealer.map(|s| s.seal(&seal::key_row(&k)));
        let mut v = vec![
            Value::Text(prefix.as_str().to_owned()),
            Value::Text(id.as_str().to_owned()),
            Value::Text(k.status.as_str().to_owned()),
            Value::Integer(k.usage.to_bits()),
            Value::Integer(k.current_version.into()),
            Value::Integer(k.updated_at),
            k.hsm_label.clone().map_or(Value::Null, Value::Text),
        ];
        v.extend(lifecycle_values(&k.lifecycle));
        v.push(sealed.map_or(Value::Null, Value::Blob));
        tx.prepare_cached(
            "UPDATE keys SET status = ?3, usage = ?4, current_version = ?5, updated_at = ?6, hsm_label = ?7, \
             state = ?8, activate_at = ?9, deactivate_at = ?10, destroy_at = ?11, compromised_at = ?12, \
             rotation_period = ?13, next_rotation_at = ?14, min_decrypt_version = ?15, seal = ?16 \
             WHERE store = ?1 AND key_id = ?2",
        )
        .and_then(|mut st| st.execute(rusqlite::params_from_iter(v)))
        .map_err(db_err)?;
        Ok(k)
    }

    /// Seals again the version rows of a key (those below `below`, or all)
    /// after their material was erased: erased versions grant nothing, so
    /// they are not checked first.
    fn reseal_erased_versions(
        &self,
        tx: &Connection,
        prefix: &StorePrefix,
        id: &KeyId,
        below: Option<u32>,
    ) -> Result<()> {
        let Some(sealer) = self.sealer.get() else {
            return Ok(());
        };
        let rows: Vec<VersionRow> = tx
            .prepare_cached(
                "SELECT version, created_at, flag, length(wrapped) > 0, seal FROM key_versions \
                 WHERE store = ?1 AND key_id = ?2 AND version < ?3",
            )
            .and_then(|mut st| {
                st.query_map(
                    params![prefix.as_str(), id.as_str(), below.unwrap_or(u32::MAX)],
                    Self::version_row,
                )?
                .collect()
            })
            .map_err(db_err)?;
        for (version, created_at, flag, has_material, _) in rows {
            let sealed = sealer.seal(&seal::version_row(
                prefix,
                id,
                version,
                flag,
                created_at,
                has_material,
            ));
            tx.prepare_cached(
                "UPDATE key_versions SET seal = ?4 WHERE store = ?1 AND key_id = ?2 AND version = ?3",
            )
            .and_then(|mut st| st.execute(params![prefix.as_str(), id.as_str(), version, sealed]))
            .map_err(db_err)?;
        }
        Ok(())
    }

    /// Every policy row but the index, checked, and whether the sealed
    /// index names exactly their scopes.
    fn policies_checked(&self, conn: &Connection) -> Result<Vec<(String, String)>> {
        let rows: Vec<(String, String, Option<Vec<u8>>)> = conn
            .prepare_cached("SELECT scope, body, seal FROM policies ORDER BY scope")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(db_err)?;
        seal::checked_policies(self.sealer.get().as_deref(), rows)
    }

    /// Writes the sealed index of policy scopes (inside the transaction
    /// that changed a policy).
    fn write_policy_index(&self, conn: &Connection) -> Result<()> {
        let Some(sealer) = self.sealer.get() else {
            return Ok(());
        };
        let scopes: Vec<String> = conn
            .prepare_cached("SELECT scope FROM policies WHERE scope <> ?1")
            .and_then(|mut st| {
                st.query_map([seal::POLICY_INDEX_SCOPE], |r| r.get(0))?
                    .collect()
            })
            .map_err(db_err)?;
        let (body, sealed) = seal::policy_index(&*sealer, &scopes);
        conn.execute(
            "INSERT INTO policies(scope, body, updated_at, seal) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(scope) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at, seal = excluded.seal",
            params![seal::POLICY_INDEX_SCOPE, body, now(), sealed],
        )
        .map_err(db_err)?;
        Ok(())
    }
}

impl SqliteStorage {
    fn insert_checkpoint(conn: &mut Connection, c: &AuditCheckpoint) -> Result<()> {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        tx.execute(
            "INSERT OR REPLACE INTO audit_checkpoints(chain, kind, seq, head, ts_ms, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![c.chain, c.kind, c.seq as i64, c.head, c.ts_ms, c.mac],
        )
        .map_err(db_err)?;
        // Checkpoints, reservations and stops: the newest of each kind
        // (retention markers are all kept).
        tx.execute(
            "DELETE FROM audit_checkpoints WHERE chain = ?1 AND kind = ?3 AND kind <> 'retention' AND seq < \
             (SELECT seq FROM audit_checkpoints WHERE chain = ?1 AND kind = ?3 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            params![c.chain, AUDIT_CHECKPOINTS_KEPT - 1, c.kind],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }
}

impl Backend for SqliteStorage {
    fn change_token(&self) -> Result<u64> {
        // data_version changes when another connection commits; the total
        // change counter covers this connection's own writes (but for
        // bookkeeping, see `quiet`).
        let conn = self.writer();
        let dv: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db_err)?;
        let own = conn
            .total_changes()
            .wrapping_sub(self.quiet.load(std::sync::atomic::Ordering::Relaxed));
        Ok(((dv as u64) << 32) ^ own)
    }

    fn ping(&self) -> Result<()> {
        let conn = self.writer();
        conn.query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))
            .map(|_| ())
            .map_err(db_err)
    }
}

impl RowSealing for SqliteStorage {
    fn set_row_sealer(&self, sealer: Arc<dyn RowSealer>) {
        self.sealer.set(sealer);
    }

    fn any_sealed_rows(&self) -> Result<bool> {
        self.writer()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM stores WHERE seal IS NOT NULL) \
                 OR EXISTS(SELECT 1 FROM keys WHERE seal IS NOT NULL) \
                 OR EXISTS(SELECT 1 FROM key_versions WHERE seal IS NOT NULL) \
                 OR EXISTS(SELECT 1 FROM objects WHERE seal IS NOT NULL) \
                 OR EXISTS(SELECT 1 FROM policies WHERE seal IS NOT NULL)",
                [],
                |r| r.get(0),
            )
            .map_err(db_err)
    }

    fn seal_unsealed_rows(&self) -> Result<u64> {
        let sealer = self
            .sealer
            .get()
            .ok_or_else(|| Error::Internal("no row sealer installed".into()))?;
        self.in_tx(|tx| {
            let mut n = 0u64;
            let stores: Vec<KeyStore> = tx
                .prepare("SELECT prefix, status, description, created_at FROM stores WHERE seal IS NULL")
                .and_then(|mut st| st.query_map([], Self::row_to_store)?.collect())
                .map_err(db_err)?;
            for st in stores {
                tx.execute(
                    "UPDATE stores SET seal = ?2 WHERE prefix = ?1",
                    params![st.prefix.as_str(), sealer.seal(&seal::store_row(&st))],
                )
                .map_err(db_err)?;
                n += 1;
            }
            let keys: Vec<Key> = tx
                .prepare(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE seal IS NULL"))
                .and_then(|mut st| st.query_map([], Self::row_to_key)?.collect())
                .map_err(db_err)?;
            for k in keys {
                tx.execute(
                    "UPDATE keys SET seal = ?3 WHERE store = ?1 AND key_id = ?2",
                    params![k.store.as_str(), k.id.as_str(), sealer.seal(&seal::key_row(&k))],
                )
                .map_err(db_err)?;
                n += 1;
            }
            let versions: Vec<(StorePrefix, KeyId, VersionRow)> = tx
                .prepare(
                    "SELECT store, key_id, version, created_at, flag, length(wrapped) > 0, seal \
                     FROM key_versions WHERE seal IS NULL",
                )
                .and_then(|mut st| {
                    st.query_map([], |r| {
                        Ok((
                            parse_prefix(r.get(0)?)?,
                            parse_key_id(r.get(1)?)?,
                            (
                                r.get(2)?,
                                r.get(3)?,
                                VersionFlag::from_i64(r.get(4)?),
                                r.get(5)?,
                                None,
                            ),
                        ))
                    })?
                    .collect()
                })
                .map_err(db_err)?;
            for (p, id, (version, created_at, flag, has_material, _)) in versions {
                let sealed = sealer.seal(&seal::version_row(
                    &p,
                    &id,
                    version,
                    flag,
                    created_at,
                    has_material,
                ));
                tx.execute(
                    "UPDATE key_versions SET seal = ?4 WHERE store = ?1 AND key_id = ?2 AND version = ?3",
                    params![p.as_str(), id.as_str(), version, sealed],
                )
                .map_err(db_err)?;
                n += 1;
            }
            let objects: Vec<SealedObject> = tx
                .prepare(&format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE seal IS NULL"))
                .and_then(|mut st| st.query_map([], sealed_object)?.collect())
                .map_err(db_err)?;
            for (o, attrs, _) in objects {
                tx.execute(
                    "UPDATE objects SET seal = ?2 WHERE uid = ?1",
                    params![o.uid, sealer.seal(&seal::object_row(&o, &attrs))],
                )
                .map_err(db_err)?;
                n += 1;
            }
            let policies: Vec<(String, String)> = tx
                .prepare("SELECT scope, body FROM policies WHERE seal IS NULL AND scope <> ?1")
                .and_then(|mut st| {
                    st.query_map([seal::POLICY_INDEX_SCOPE], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                })
                .map_err(db_err)?;
            for (scope, body) in policies {
                tx.execute(
                    "UPDATE policies SET seal = ?2 WHERE scope = ?1",
                    params![scope, sealer.seal(&seal::policy_row(&scope, &body))],
                )
                .map_err(db_err)?;
                n += 1;
            }
            let indexed: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM policies WHERE scope = ?1 AND seal IS NOT NULL",
                    [seal::POLICY_INDEX_SCOPE],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if indexed.is_none() {
                self.write_policy_index(tx)?;
            }
            Ok(n)
        })
    }
}

impl MetaStore for SqliteStorage {
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.writer()
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)
    }

    fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        tx.execute(
            "INSERT OR IGNORE INTO meta(name, value) VALUES (?1, ?2)",
            params![name, value],
        )
        .map_err(db_err)?;
        let v: Vec<u8> = tx
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(v)
    }

    fn set_meta(&self, name: &str, value: Option<&[u8]>) -> Result<()> {
        let conn = self.writer();
        match value {
            Some(v) => conn.execute(
                "INSERT INTO meta(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, v],
            ),
            None => conn.execute("DELETE FROM meta WHERE name = ?1", [name]),
        }
        .map(drop)
        .map_err(db_err)
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let conn = self.writer();
        let mut st = conn
            .prepare(
                "SELECT name, value FROM meta WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
    }

    fn reserve_count(&self, name: &str, n: u64) -> Result<u64> {
        // Bookkeeping: left out of the change token (no cache depends on it).
        let mut conn = self.writer();
        self.quietly(&mut conn, |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let total: i64 = tx
                .query_row(
                    "INSERT INTO encryption_counts(name, reserved) VALUES (?1, ?2) \
                     ON CONFLICT(name) DO UPDATE SET reserved = reserved + excluded.reserved \
                     RETURNING reserved",
                    params![name, n as i64],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(total as u64)
        })
    }

    fn bump_counter(&self, name: &str) -> Result<u64> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let old: Option<Vec<u8>> = tx
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)?;
        let n = old
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        tx.execute(
            "INSERT INTO meta(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![name, n.to_string().into_bytes()],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(n)
    }
}

impl PolicyStore for SqliteStorage {
    fn get_policy(&self, scope: &str) -> Result<Option<String>> {
        if scope == seal::POLICY_INDEX_SCOPE {
            return Ok(None);
        }
        let conn = self.writer();
        if self.sealer.get().is_some() {
            // Policies are few: the whole sealed set is checked, so that a
            // policy deleted outside Keyhold is noticed too.
            return Ok(self
                .policies_checked(&conn)?
                .into_iter()
                .find(|(s, _)| s == scope)
                .map(|(_, b)| b));
        }
        let mut st = conn
            .prepare_cached("SELECT body FROM policies WHERE scope = ?1")
            .map_err(db_err)?;
        st.query_row([scope], |r| r.get(0))
            .optional()
            .map_err(db_err)
    }

    fn set_policy(&self, scope: &str, body: Option<&str>) -> Result<bool> {
        if scope == seal::POLICY_INDEX_SCOPE {
            return Err(Error::invalid("policy scope", scope));
        }
        self.in_tx(|tx| {
            let n = match body {
                Some(b) => {
                    let sealed = self.sealer.seal(|| seal::policy_row(scope, b));
                    tx.execute(
                        "INSERT INTO policies(scope, body, updated_at, seal) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT(scope) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at, seal = excluded.seal",
                        params![scope, b, now(), sealed],
                    )
                }
                None => tx.execute("DELETE FROM policies WHERE scope = ?1", [scope]),
            }
            .map_err(db_err)?;
            self.write_policy_index(tx)?;
            Ok(n > 0)
        })
    }

    fn list_policies(&self) -> Result<Vec<(String, String)>> {
        let conn = self.writer();
        self.policies_checked(&conn)
    }
}

impl AuditStore for SqliteStorage {
    fn add_audit_checkpoint(&self, c: &AuditCheckpoint) -> Result<()> {
        let mut conn = self.writer();
        self.quietly(&mut conn, |conn| Self::insert_checkpoint(conn, c))
    }

    fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        let conn = self.writer();
        let mut st = conn
            .prepare("SELECT chain, kind, seq, head, ts_ms, mac FROM audit_checkpoints ORDER BY chain, seq")
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok(AuditCheckpoint {
                    chain: r.get(0)?,
                    kind: r.get(1)?,
                    seq: r.get::<_, i64>(2)? as u64,
                    head: r.get(3)?,
                    ts_ms: r.get(4)?,
                    mac: r.get(5)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
    }

    fn audit_shipped(&self, chain: &str) -> Result<u64> {
        self.writer()
            .query_row(
                "SELECT coalesce(max(seq), 0) FROM audit_records WHERE chain = ?1",
                [chain],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db_err)
    }

    fn ship_audit(&self, chain: &str, lines: &[(u64, String)]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(db_err)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO audit_records(chain, seq, line) VALUES (?1, ?2, ?3)",
                )
                .map_err(db_err)?;
            for (seq, line) in lines {
                st.execute(params![chain, *seq as i64, line])
                    .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    fn shipped_audit(&self) -> Result<Vec<(String, Vec<String>)>> {
        let conn = self.reader();
        let mut st = conn
            .prepare("SELECT chain, line FROM audit_records ORDER BY chain, seq")
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db_err)?;
        let rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?;
        Ok(crate::group_by_chain(rows))
    }
}

impl NodeRegistry for SqliteStorage {
    fn node_heartbeat(&self, n: &NodeInfo) -> Result<()> {
        self.writer()
            .execute(
                "INSERT INTO nodes(node_id, started_ms, heartbeat_ms, ack_epoch, lease_ms) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(node_id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms, ack_epoch = excluded.ack_epoch, \
                 lease_ms = excluded.lease_ms",
                params![n.id, n.started_ms, n.heartbeat_ms, n.ack_epoch as i64, n.lease_ms],
            )
            .map(drop)
            .map_err(db_err)
    }

    fn live_nodes(&self, since_ms: i64) -> Result<Vec<NodeInfo>> {
        let conn = self.writer();
        let mut st = conn
            .prepare_cached(
                "SELECT node_id, started_ms, heartbeat_ms, ack_epoch, lease_ms FROM nodes WHERE heartbeat_ms >= ?1 ORDER BY node_id",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map([since_ms], |r| {
                Ok(NodeInfo {
                    id: r.get(0)?,
                    started_ms: r.get(1)?,
                    heartbeat_ms: r.get(2)?,
                    ack_epoch: r.get::<_, i64>(3)? as u64,
                    lease_ms: r.get(4)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
    }

    fn remove_node(&self, id: &str) -> Result<()> {
        self.writer()
            .execute("DELETE FROM nodes WHERE node_id = ?1", [id])
            .map(drop)
            .map_err(db_err)
    }
}

impl StoreRepo for SqliteStorage {
    fn create_store(&self, store: &KeyStore) -> Result<()> {
        let sealed = self.sealer.seal(|| seal::store_row(store));
        let conn = self.writer();
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO stores(prefix, status, description, created_at, seal) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    store.prefix.as_str(),
                    store.status.as_str(),
                    store.description,
                    store.created_at,
                    sealed
                ],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Err(Error::StoreExists(store.prefix.display().to_owned()));
        }
        Ok(())
    }

    fn get_store(&self, prefix: &StorePrefix) -> Result<Option<KeyStore>> {
        let row = self
            .writer()
            .query_row(
                "SELECT prefix, status, description, created_at, seal FROM stores WHERE prefix = ?1",
                [prefix.as_str()],
                |r| Ok((Self::row_to_store(r)?, r.get::<_, Option<Vec<u8>>>(4)?)),
            )
            .optional()
            .map_err(db_err)?;
        match row {
            None => Ok(None),
            Some(r) if store_ok(self.sealer.get().as_deref(), &r) => Ok(Some(r.0)),
            Some(_) => Err(seal::refused(format!("key store {prefix}"))),
        }
    }

    fn list_stores(&self) -> Result<Vec<KeyStore>> {
        let conn = self.writer();
        let mut st = conn
            .prepare_cached(
                "SELECT prefix, status, description, created_at, seal FROM stores ORDER BY prefix",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((Self::row_to_store(r)?, r.get::<_, Option<Vec<u8>>>(4)?))
            })
            .map_err(db_err)?;
        let rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?;
        let sealer = self.sealer.get();
        Ok(rows
            .into_iter()
            .filter(|r| store_ok(sealer.as_deref(), r))
            .map(|r| r.0)
            .collect())
    }

    fn set_store_status(&self, prefix: &StorePrefix, status: Status) -> Result<()> {
        self.in_tx(|tx| {
            let row = tx
                .query_row(
                    "SELECT prefix, status, description, created_at, seal FROM stores WHERE prefix = ?1",
                    [prefix.as_str()],
                    |r| Ok((Self::row_to_store(r)?, r.get::<_, Option<Vec<u8>>>(4)?)),
                )
                .optional()
                .map_err(db_err)?
                .ok_or_else(|| Error::StoreNotFound(prefix.display().to_owned()))?;
            let sealer = self.sealer.get();
            if !store_ok(sealer.as_deref(), &row) {
                return Err(seal::refused(format!("key store {prefix}")));
            }
            let mut st = row.0;
            st.status = status;
            let sealed = sealer.map(|s| s.seal(&seal::store_row(&st)));
            tx.execute(
                "UPDATE stores SET status = ?2, seal = ?3 WHERE prefix = ?1",
                params![prefix.as_str(), status.as_str(), sealed],
            )
            .map_err(db_err)?;
            Ok(())
        })
    }

    fn add_credential(&self, cred: &StoredCredential) -> Result<()> {
        let conn = self.writer();
        Self::require_store(&conn, &cred.store)?;
        conn.execute(
            "INSERT INTO credentials(access_key_id, store, wrapped_secret, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                cred.access_key_id,
                cred.store.as_str(),
                cred.wrapped_secret,
                cred.created_at
            ],
        )
        .map_err(db_err)?;
        Ok(())
    }

    fn remove_credential(&self, prefix: &StorePrefix, access_key_id: &str) -> Result<()> {
        let n = self
            .conn
            .lock()
            .execute(
                "DELETE FROM credentials WHERE store = ?1 AND access_key_id = ?2",
                params![prefix.as_str(), access_key_id],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Err(Error::CredentialNotFound(access_key_id.to_owned()));
        }
        Ok(())
    }

    fn list_credentials(&self, prefix: &StorePrefix) -> Result<Vec<StoredCredential>> {
        let conn = self.writer();
        Self::require_store(&conn, prefix)?;
        let mut st = conn
            .prepare_cached(
                "SELECT access_key_id, store, wrapped_secret, created_at FROM credentials WHERE store = ?1 ORDER BY created_at, access_key_id",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map([prefix.as_str()], Self::row_to_cred)
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
    }

    fn get_credential(&self, access_key_id: &str) -> Result<Option<StoredCredential>> {
        self.writer()
            .query_row(
                "SELECT access_key_id, store, wrapped_secret, created_at FROM credentials WHERE access_key_id = ?1",
                [access_key_id],
                Self::row_to_cred,
            )
            .optional()
            .map_err(db_err)
    }
}

impl KeyRepo for SqliteStorage {
    fn create_keys(&self, keys: &[(Key, WrappedKeyVersion)]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let mut checked: Option<&StorePrefix> = None;
        for (key, first) in keys {
            if checked != Some(&key.store) {
                Self::require_store(&tx, &key.store)?;
                checked = Some(&key.store);
            }
            let key_seal = self.sealer.seal(|| {
                let mut k = key.clone();
                k.current_version = first.version;
                seal::key_row(&k)
            });
            let version_seal = self.sealer.version_seal(&key.store, &key.id, first);
            let n = tx
                .prepare_cached(
                    &format!("INSERT OR IGNORE INTO keys({KEY_SEALED}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"),
                )
                .and_then(|mut st| {
                    let mut v = vec![
                        Value::Text(key.store.as_str().to_owned()),
                        Value::Text(key.id.as_str().to_owned()),
                        Value::Text(key.status.as_str().to_owned()),
                        Value::Integer(key.usage.to_bits()),
                        Value::Integer(first.version.into()),
                        Value::Integer(key.created_at),
                        Value::Integer(key.updated_at),
                        key.hsm_label.clone().map_or(Value::Null, Value::Text),
                    ];
                    v.extend(lifecycle_values(&key.lifecycle));
                    v.push(key_seal.map_or(Value::Null, Value::Blob));
                    st.execute(rusqlite::params_from_iter(v))
                })
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::KeyExists {
                    store: key.store.display().to_owned(),
                    key: key.id.to_string(),
                });
            }
            tx.prepare_cached(
                "INSERT INTO key_versions(store, key_id, version, wrapped, created_at, flag, seal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    key.store.as_str(),
                    key.id.as_str(),
                    first.version,
                    first.wrapped,
                    first.created_at,
                    first.flag.to_i64(),
                    version_seal
                ])
            })
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn get_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Option<Key>> {
        let conn = self.writer();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {KEY_SEALED} FROM keys WHERE store = ?1 AND key_id = ?2"
            ))
            .map_err(db_err)?;
        let row = st
            .query_row(params![prefix.as_str(), id.as_str()], Self::sealed_key)
            .optional()
            .map_err(db_err)?;
        match row {
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
        let conn = self.writer();
        Self::require_store(&conn, prefix)?;
        let mut st = conn
            .prepare_cached(
                &format!("SELECT {KEY_SEALED} FROM keys WHERE store = ?1 AND key_id > ?2 ORDER BY key_id LIMIT ?3"),
            )
            .map_err(db_err)?;
        let rows = st
            .query_map(
                params![
                    prefix.as_str(),
                    after.map(|a| a.as_str()).unwrap_or(""),
                    limit as i64
                ],
                Self::sealed_key,
            )
            .map_err(db_err)?;
        let rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?;
        Ok(self.sealer.keys(rows))
    }

    fn count_keys(&self, prefix: &StorePrefix) -> Result<u64> {
        self.writer()
            .query_row(
                "SELECT count(*) FROM keys WHERE store = ?1",
                [prefix.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db_err)
    }

    fn key_state_counts(&self) -> Result<Vec<(String, String, String, u64)>> {
        let conn = self.writer();
        let mut st = conn
            .prepare("SELECT store, state, status, count(*) FROM keys GROUP BY store, state, status ORDER BY store, state, status")
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get::<_, i64>(3)? as u64,
                ))
            })
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
    }

    fn set_key_status(&self, prefix: &StorePrefix, id: &KeyId, status: Status) -> Result<()> {
        self.in_tx(|tx| {
            self.modify_key(tx, prefix, id, |k| {
                k.status = status;
                k.updated_at = now();
                Ok(())
            })
            .map(drop)
        })
    }

    fn set_key_usage(&self, prefix: &StorePrefix, id: &KeyId, usage: Usage) -> Result<()> {
        self.in_tx(|tx| {
            self.modify_key(tx, prefix, id, |k| {
                k.usage = usage;
                k.updated_at = now();
                Ok(())
            })
            .map(drop)
        })
    }

    fn add_key_version(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: &WrappedKeyVersion,
    ) -> Result<()> {
        let version_seal = self.sealer.version_seal(prefix, id, version);
        self.in_tx(|tx| {
            self.modify_key(tx, prefix, id, |k| {
                if k.current_version + 1 != version.version {
                    return Err(Error::InvalidState(format!(
                        "key {id} was rotated concurrently; retry"
                    )));
                }
                k.current_version = version.version;
                k.updated_at = now();
                Ok(())
            })?;
            tx.execute(
                "INSERT INTO key_versions(store, key_id, version, wrapped, created_at, flag, seal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    prefix.as_str(),
                    id.as_str(),
                    version.version,
                    version.wrapped,
                    version.created_at,
                    version.flag.to_i64(),
                    version_seal
                ],
            )
            .map_err(db_err)?;
            Ok(())
        })
    }

    fn get_key_version(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: u32,
    ) -> Result<Option<WrappedKeyVersion>> {
        let conn = self.writer();
        let mut st = conn
            .prepare_cached(
                "SELECT version, wrapped, created_at, flag, seal FROM key_versions WHERE store = ?1 AND key_id = ?2 AND version = ?3",
            )
            .map_err(db_err)?;
        let row = st
            .query_row(params![prefix.as_str(), id.as_str(), version], |r| {
                Ok((
                    WrappedKeyVersion {
                        version: r.get(0)?,
                        wrapped: r.get(1)?,
                        created_at: r.get(2)?,
                        flag: VersionFlag::from_i64(r.get(3)?),
                    },
                    r.get::<_, Option<Vec<u8>>>(4)?,
                ))
            })
            .optional()
            .map_err(db_err)?;
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
        self.in_tx(|tx| {
            self.modify_key(tx, prefix, id, |k| {
                k.lifecycle = l.clone();
                k.updated_at = now();
                Ok(())
            })
            .map(drop)
        })
    }

    fn destroy_key_material(&self, prefix: &StorePrefix, id: &KeyId, at: Timestamp) -> Result<()> {
        self.in_tx(|tx| {
            // Destroying is never refused for a row that does not verify:
            // it only takes power away.
            let n = tx
                .execute(
                    "UPDATE keys SET state = 'DESTROYED', destroy_at = ?3, next_rotation_at = NULL, updated_at = ?3 \
                     WHERE store = ?1 AND key_id = ?2",
                    params![prefix.as_str(), id.as_str(), at],
                )
                .map_err(db_err)?;
            Self::one_key_row(n, prefix, id)?;
            if let Some(sealer) = self.sealer.get() {
                let k = tx
                    .query_row(
                        &format!("SELECT {KEY_SEALED} FROM keys WHERE store = ?1 AND key_id = ?2"),
                        params![prefix.as_str(), id.as_str()],
                        Self::sealed_key,
                    )
                    .map_err(db_err)?
                    .0;
                tx.execute(
                    "UPDATE keys SET seal = ?3 WHERE store = ?1 AND key_id = ?2",
                    params![prefix.as_str(), id.as_str(), sealer.seal(&seal::key_row(&k))],
                )
                .map_err(db_err)?;
            }
            // The rows stay (version numbers remain known) with their material
            // gone; secure_delete zeroes the freed bytes in the file.
            tx.execute(
                "UPDATE key_versions SET wrapped = x'' WHERE store = ?1 AND key_id = ?2",
                params![prefix.as_str(), id.as_str()],
            )
            .map_err(db_err)?;
            self.reseal_erased_versions(tx, prefix, id, None)
        })
    }

    fn purge_erased_copies(&self) -> Result<()> {
        // A purge already running may have begun before the caller's
        // erasure committed: only one begun after now covers it.
        let mut g = self.purges.state.lock();
        let need = g.started + 1;
        loop {
            if g.finished >= need {
                return match g.outcome.clone() {
                    Some(Err(why)) => Err(Error::DependencyTimeout(why)),
                    _ => Ok(()),
                };
            }
            if g.running {
                self.purges.done.wait(&mut g);
                continue;
            }
            g.running = true;
            g.started += 1;
            let mine = g.started;
            drop(g);
            let outcome = self.truncate_wal();
            g = self.purges.state.lock();
            g.running = false;
            g.finished = mine;
            g.outcome = Some(outcome);
            self.purges.done.notify_all();
        }
    }

    fn shred_versions_below(&self, prefix: &StorePrefix, id: &KeyId, below: u32) -> Result<u64> {
        self.in_tx(|tx| {
            let n = tx
                .execute(
                    "UPDATE key_versions SET wrapped = x'' WHERE store = ?1 AND key_id = ?2 AND version < ?3 AND length(wrapped) > 0",
                    params![prefix.as_str(), id.as_str(), below],
                )
                .map_err(db_err)?;
            if n > 0 {
                self.reseal_erased_versions(tx, prefix, id, Some(below))?;
            }
            Ok(n as u64)
        })
    }

    fn set_version_flag(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: u32,
        flag: VersionFlag,
    ) -> Result<()> {
        self.in_tx(|tx| {
            let row = tx
                .query_row(
                    "SELECT version, created_at, flag, length(wrapped) > 0, seal FROM key_versions \
                     WHERE store = ?1 AND key_id = ?2 AND version = ?3",
                    params![prefix.as_str(), id.as_str(), version],
                    Self::version_row,
                )
                .optional()
                .map_err(db_err)?
                .ok_or_else(|| {
                    Error::invalid("version", format!("key {id} has no version {version}"))
                })?;
            let sealer = self.sealer.get();
            if !version_ok(sealer.as_deref(), prefix, id, &row) {
                return Err(seal::refused(format!("version {version} of key {prefix}/{id}")));
            }
            let sealed = sealer
                .map(|s| s.seal(&seal::version_row(prefix, id, version, flag, row.1, row.3)));
            tx.execute(
                "UPDATE key_versions SET flag = ?4, seal = ?5 WHERE store = ?1 AND key_id = ?2 AND version = ?3",
                params![prefix.as_str(), id.as_str(), version, flag.to_i64(), sealed],
            )
            .map_err(db_err)?;
            Ok(())
        })
    }

    fn list_key_versions(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Vec<VersionInfo>> {
        let conn = self.writer();
        let mut st = conn
            .prepare_cached(
                "SELECT version, created_at, flag, length(wrapped) > 0, seal FROM key_versions WHERE store = ?1 AND key_id = ?2 ORDER BY version",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map(params![prefix.as_str(), id.as_str()], Self::version_row)
            .map_err(db_err)?;
        let rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?;
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
        let conn = self.writer();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {KEY_SEALED} FROM keys WHERE destroy_at <= ?1 AND state <> 'DESTROYED' \
                 UNION SELECT {KEY_SEALED} FROM keys WHERE next_rotation_at <= ?1 LIMIT ?2"
            ))
            .map_err(db_err)?;
        let rows = st
            .query_map(params![now, limit as i64], Self::sealed_key)
            .map_err(db_err)?;
        let rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?;
        Ok(self.sealer.keys(rows))
    }
}

impl ObjectRepo for SqliteStorage {
    fn create_object(&self, o: &ManagedObject, material: &[u8]) -> Result<()> {
        let attrs = serde_json::to_string(&o.attrs).map_err(|e| Error::Internal(e.to_string()))?;
        let (uid, owner, material) = (o.uid.clone(), o.owner.clone(), material.to_vec());
        let (object_type, state, exportable) = (o.object_type, o.state as u32, o.exportable);
        let shared = o.is_shared();
        let sealed = self.sealer.seal(|| {
            let mut row = o.clone();
            row.rev = 1;
            row.has_material = true;
            seal::object_row(&row, &attrs)
        });
        self.write_grouped(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO objects(uid, object_type, owner, state, exportable, attrs, material, rev, created_ms, shared, seal) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10)",
                )
                .and_then(|mut st| {
                    st.execute(params![uid, object_type, owner, state, exportable, attrs, material, now_ms(), shared, sealed])
                })
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::Conflict(format!("object {uid}")));
            }
            Ok(())
        })
    }

    fn get_object(&self, uid: &str) -> Result<Option<ManagedObject>> {
        let row = {
            let conn = self.reader();
            conn.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE uid = ?1"
            ))
            .and_then(|mut st| st.query_row([uid], sealed_object).optional())
            .map_err(db_err)?
        };
        match row {
            None => Ok(None),
            Some(r) if object_ok(self.sealer.get().as_deref(), &r) => Ok(Some(r.0)),
            Some(_) => Err(seal::refused(format!("object {uid}"))),
        }
    }

    fn object_material(&self, uid: &str) -> Result<Option<Vec<u8>>> {
        let conn = self.reader();
        conn.prepare_cached("SELECT material FROM objects WHERE uid = ?1")
            .and_then(|mut st| {
                st.query_row([uid], |r| r.get::<_, Option<Vec<u8>>>(0))
                    .optional()
            })
            .map(Option::flatten)
            .map_err(db_err)
    }

    fn update_object(&self, o: &ManagedObject) -> Result<()> {
        let attrs = serde_json::to_string(&o.attrs).map_err(|e| Error::Internal(e.to_string()))?;
        let (uid, rev, state) = (o.uid.clone(), o.rev, o.state as u32);
        let (exportable, has_material) = (o.exportable, o.has_material);
        let shared = o.is_shared();
        // The seal of the row as written: a row changed outside Keyhold
        // since the caller read it (verified) ends up not verifying.
        let sealed = self.sealer.seal(|| {
            let mut row = o.clone();
            row.rev = o.rev + 1;
            seal::object_row(&row, &attrs)
        });
        self.write_grouped(move |conn| {
            // Erasing the material is one-way: an update never brings it
            // back, and one that says it is there when it is not loses.
            let n = conn
                .prepare_cached(
                    "UPDATE objects SET state = ?3, exportable = ?4, attrs = ?5, rev = rev + 1, \
                     material = CASE WHEN ?6 THEN material ELSE NULL END, shared = ?7, seal = ?8 \
                     WHERE uid = ?1 AND rev = ?2 AND (NOT ?6 OR material IS NOT NULL)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        uid,
                        rev,
                        state,
                        exportable,
                        attrs,
                        has_material,
                        shared,
                        sealed
                    ])
                })
                .map_err(db_err)?;
            if n == 1 {
                return Ok(());
            }
            let exists: bool = conn
                .query_row("SELECT 1 FROM objects WHERE uid = ?1", [&uid], |_| Ok(true))
                .optional()
                .map_err(db_err)?
                .unwrap_or(false);
            Err(if exists {
                Error::Conflict(format!("object {uid}"))
            } else {
                Error::ObjectNotFound(uid.clone())
            })
        })
    }

    fn delete_object(&self, uid: &str) -> Result<()> {
        let uid = uid.to_owned();
        self.write_grouped(move |conn| {
            conn.prepare_cached("DELETE FROM objects WHERE uid = ?1")
                .and_then(|mut st| st.execute([&uid]))
                .map_err(db_err)?;
            Ok(())
        })
    }

    fn list_objects(&self) -> Result<Vec<ManagedObject>> {
        let conn = self.reader();
        let mut st = conn
            .prepare(&format!(
                "SELECT {OBJECT_COLUMNS} FROM objects ORDER BY created_ms, uid"
            ))
            .map_err(db_err)?;
        let rows = st.query_map([], sealed_object).map_err(db_err)?;
        let rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?;
        drop(st);
        drop(conn);
        Ok(self.sealer.objects(rows))
    }

    fn list_objects_for(&self, identity: &str, with_destroyed: bool) -> Result<Vec<ManagedObject>> {
        let conn = self.reader();
        // Each side of the OR has its index (SQLite's OR-by-union plan).
        let sql = if with_destroyed {
            format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE owner = ?1 OR shared = 1 \
                 ORDER BY created_ms, uid"
            )
        } else {
            format!(
                "SELECT {OBJECT_COLUMNS} FROM objects \
                 WHERE (owner = ?1 AND state < {d}) OR (shared = 1 AND state < {d}) \
                 ORDER BY created_ms, uid",
                d = ObjectState::Destroyed as u32
            )
        };
        let mut st = conn.prepare_cached(&sql).map_err(db_err)?;
        let rows = st.query_map([identity], sealed_object).map_err(db_err)?;
        let rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?;
        drop(st);
        drop(conn);
        Ok(self.sealer.objects(rows))
    }
}

impl Maintenance for SqliteStorage {
    fn wrapped_items(&self) -> Result<Vec<(WrappedItem, Vec<u8>)>> {
        let conn = self.writer();
        let mut out = Vec::new();
        let mut st = conn
            .prepare("SELECT name, value FROM meta ORDER BY name")
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    WrappedItem::Meta { name: r.get(0)? },
                    r.get::<_, Vec<u8>>(1)?,
                ))
            })
            .map_err(db_err)?;
        for r in rows {
            out.push(r.map_err(db_err)?);
        }
        let mut st = conn
            .prepare("SELECT access_key_id, store, wrapped_secret FROM credentials ORDER BY access_key_id")
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    WrappedItem::Credential {
                        access_key_id: r.get(0)?,
                        store: parse_prefix(r.get(1)?)?,
                    },
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(db_err)?;
        for r in rows {
            out.push(r.map_err(db_err)?);
        }
        let mut st = conn
            .prepare("SELECT store, key_id, version, wrapped FROM key_versions WHERE length(wrapped) > 0 ORDER BY store, key_id, version")
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    WrappedItem::KeyVersion {
                        store: parse_prefix(r.get(0)?)?,
                        id: parse_key_id(r.get(1)?)?,
                        version: r.get(2)?,
                    },
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(db_err)?;
        for r in rows {
            out.push(r.map_err(db_err)?);
        }
        let mut st = conn
            .prepare("SELECT uid, material FROM objects WHERE material IS NOT NULL ORDER BY uid")
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    WrappedItem::Object { uid: r.get(0)? },
                    r.get::<_, Vec<u8>>(1)?,
                ))
            })
            .map_err(db_err)?;
        for r in rows {
            out.push(r.map_err(db_err)?);
        }
        Ok(out)
    }

    fn snapshot(&self) -> Result<Snapshot> {
        // A read transaction on a connection of its own: under WAL it sees
        // one commit while writers go on.
        let conn = self.reader();
        conn.execute_batch("BEGIN").map_err(db_err)?;
        let r = (|| {
            let mut tables = Vec::new();
            for spec in SNAPSHOT_TABLES {
                let mut st = conn.prepare(&spec.select()).map_err(db_err)?;
                let n = spec.columns.len();
                let rows = st
                    .query_map([], |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get::<_, Value>(i)? {
                                    Value::Null => Cell::Null,
                                    Value::Integer(v) => Cell::Int(v),
                                    Value::Real(v) => Cell::Int(v as i64),
                                    Value::Text(t) => Cell::Text(t),
                                    Value::Blob(b) => Cell::Bytes(b),
                                })
                            })
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_err)?;
                tables.push(TableDump {
                    name: spec.name.to_owned(),
                    rows: rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?,
                });
            }
            Ok(Snapshot { tables })
        })();
        let _ = conn.execute_batch("COMMIT");
        r
    }

    fn restore(&self, snap: &Snapshot) -> Result<()> {
        snap.validate()?;
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        for spec in SNAPSHOT_TABLES.iter().filter(|s| s.name != "meta") {
            let any: Option<i64> = tx
                .query_row(&crate::any_row_sql(spec.name), [], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            if any.is_some() {
                return Err(crate::not_empty(spec.name));
            }
        }
        // The meta rows (and sealed index) a fresh database may have are
        // replaced.
        tx.execute("DELETE FROM meta", []).map_err(db_err)?;
        tx.execute("DELETE FROM policies", []).map_err(db_err)?;
        for (spec, t) in snap.ordered() {
            let mut st = tx.prepare(&spec.insert('?')).map_err(db_err)?;
            for row in &t.rows {
                st.execute(rusqlite::params_from_iter(spec.cells(row).map(
                    |c| match c {
                        Cell::Null => Value::Null,
                        Cell::Int(v) => Value::Integer(*v),
                        Cell::Text(t) => Value::Text(t.clone()),
                        Cell::Bytes(b) => Value::Blob(b.clone()),
                    },
                )))
                .map_err(db_err)?;
            }
        }
        tx.execute(crate::mark_shared_sql!(), []).map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    fn replace_wrapped(&self, item: &WrappedItem, expected: &[u8], new: &[u8]) -> Result<bool> {
        let conn = self.writer();
        let n = match item {
            WrappedItem::Meta { name } => conn.execute(
                "UPDATE meta SET value = ?3 WHERE name = ?1 AND value = ?2",
                params![name, expected, new],
            ),
            WrappedItem::Credential {
                store,
                access_key_id,
            } => conn.execute(
                "UPDATE credentials SET wrapped_secret = ?4 WHERE access_key_id = ?1 AND store = ?2 AND wrapped_secret = ?3",
                params![access_key_id, store.as_str(), expected, new],
            ),
            WrappedItem::KeyVersion { store, id, version } => conn.execute(
                "UPDATE key_versions SET wrapped = ?5 WHERE store = ?1 AND key_id = ?2 AND version = ?3 AND wrapped = ?4",
                params![store.as_str(), id.as_str(), version, expected, new],
            ),
            WrappedItem::Object { uid } => conn.execute(
                "UPDATE objects SET material = ?3 WHERE uid = ?1 AND material = ?2",
                params![uid, expected, new],
            ),
        }
        .map_err(db_err)?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance as c;

    #[test]
    fn store_and_key_lifecycle() {
        c::store_and_key_lifecycle(&SqliteStorage::open_in_memory().unwrap());
    }

    /// Purges asked for at the same moment share truncating checkpoints,
    /// and each leaves the WAL empty of everything committed before it,
    /// while readers and writers carry on beside them.
    #[test]
    fn concurrent_purges_empty_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let s = Arc::new(SqliteStorage::open(&path).unwrap());
        let wal = path.with_extension("db-wal");
        std::thread::scope(|scope| {
            for t in 0..8 {
                let s = s.clone();
                scope.spawn(move || {
                    for i in 0..20 {
                        s.set_meta(&format!("m{t}-{i}"), Some(&[7u8; 3000]))
                            .unwrap();
                        s.list_meta("m").unwrap();
                        s.purge_erased_copies().unwrap();
                    }
                });
            }
        });
        s.set_meta("last", Some(b"x")).unwrap();
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        s.purge_erased_copies().unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        let g = s.purges.state.lock();
        assert!(g.finished <= 161 && g.finished >= 1, "{}", g.finished);
        assert_eq!(s.list_meta("m").unwrap().len(), 160);
    }

    #[test]
    fn audit_checkpoints_do_not_move_the_change_token() {
        let s = SqliteStorage::open_in_memory().unwrap();
        let t0 = s.change_token().unwrap();
        for seq in 1..5 {
            s.add_audit_checkpoint(&keyhold_core::AuditCheckpoint {
                chain: "xks".into(),
                kind: "checkpoint".into(),
                seq,
                head: "00".repeat(32),
                ts_ms: 1,
                mac: "11".repeat(32),
            })
            .unwrap();
        }
        assert_eq!(s.change_token().unwrap(), t0, "the server's caches stay");
        s.set_meta("x", Some(b"1")).unwrap();
        assert_ne!(s.change_token().unwrap(), t0, "a real change still shows");
    }

    #[test]
    fn wrapped_items_and_compare_and_swap() {
        c::wrapped_items_and_compare_and_swap(&SqliteStorage::open_in_memory().unwrap());
    }

    #[test]
    fn objects_round_trip_conflict_and_erase() {
        c::objects_round_trip_conflict_and_erase(&SqliteStorage::open_in_memory().unwrap());
    }

    #[test]
    fn objects_for_an_identity() {
        c::objects_for_an_identity(&SqliteStorage::open_in_memory().unwrap());
    }

    /// Locate reads through the indexes, not the whole table.
    #[test]
    fn objects_for_an_identity_use_the_indexes() {
        let s = SqliteStorage::open_in_memory().unwrap();
        let conn = s.writer();
        for sql in [
            "SELECT uid FROM objects WHERE (owner = ?1 AND state < 5) OR (shared = 1 AND state < 5) ORDER BY created_ms, uid",
            "SELECT uid FROM objects WHERE owner = ?1 OR shared = 1 ORDER BY created_ms, uid",
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(["x"], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(plan.contains("objects_owner"), "{plan}");
            assert!(plan.contains("objects_shared"), "{plan}");
            assert!(!plan.contains("SCAN objects"), "{plan}");
        }
    }

    /// A KMIP object with a typical ~1 KB of attributes costs about that on
    /// disk: rows stay inline in their pages (they took an overflow page
    /// each, ~4.7 KB, before objects left WITHOUT ROWID).
    #[test]
    fn objects_cost_about_their_size_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&d.path().join("k.db")).unwrap();
        let pages = |s: &SqliteStorage| -> i64 {
            s.writer()
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap()
        };
        let before = pages(&s);
        let n = 500;
        for i in 0..n {
            let mut o = crate::conformance::object(&format!("{i:036}"));
            for a in 0..10 {
                o.attrs.push(keyhold_core::ObjectAttr {
                    name: format!("Attribute number {a}"),
                    value: keyhold_core::AttrValue::Text("x".repeat(40)),
                });
            }
            assert!(serde_json::to_string(&o.attrs).unwrap().len() > 950);
            s.create_object(&o, &[9u8; 72]).unwrap();
        }
        let per_object = (pages(&s) - before) * 4096 / n;
        assert!(per_object < 2_000, "{per_object} bytes per object");
    }

    #[test]
    fn grouped_writes_from_many_threads_all_land() {
        let d = tempfile::tempdir().unwrap();
        c::writes_from_many_threads_all_land(Arc::new(
            SqliteStorage::open(&d.path().join("db")).unwrap(),
        ));
    }

    /// The writer does not checkpoint inside its commits; the checkpoint
    /// thread and the writer's finishing checkpoint must still let the WAL
    /// start over under constant writes and reads (without them it grows by
    /// every page written: here to about 17 MB, against about 4 MB).
    #[test]
    fn the_wal_stays_bounded_under_constant_writes_and_reads() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("db");
        let s = Arc::new(SqliteStorage::open(&path).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = s.get_object("w0-0").unwrap();
                }
            })
        };
        let writers: Vec<_> = (0..32)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let pad = "x".repeat(3000);
                    for i in 0..100 {
                        let mut o = c::object(&format!("w{t}-{i}"));
                        o.attrs[0].value = keyhold_core::AttrValue::Text(pad.clone());
                        s.create_object(&o, &[7; 32]).unwrap();
                        s.delete_object(&o.uid).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap();
        let wal = std::fs::metadata(d.path().join("db-wal")).unwrap().len();
        assert!(wal < 10 << 20, "the WAL grew to {wal} bytes");
        assert!(s.list_objects().unwrap().is_empty());
    }

    #[test]
    fn credentials_and_meta() {
        c::credentials_and_meta(&SqliteStorage::open_in_memory().unwrap());
    }

    #[test]
    fn other_connection_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        c::other_handle_changes_are_seen(
            &SqliteStorage::open(&path).unwrap(),
            &SqliteStorage::open(&path).unwrap(),
        );
    }

    #[test]
    fn lifecycle_versions_shredding_and_due_keys() {
        c::lifecycle_versions_shredding_and_due_keys(&SqliteStorage::open_in_memory().unwrap());
    }

    #[test]
    fn nodes_heartbeat_and_expire() {
        c::nodes_heartbeat_and_expire(&SqliteStorage::open_in_memory().unwrap());
    }

    #[test]
    fn reservations_only_grow() {
        c::reservations_only_grow(Arc::new(SqliteStorage::open_in_memory().unwrap()));
    }

    #[test]
    fn audit_records_are_shipped_once() {
        c::audit_records_are_shipped_once(&SqliteStorage::open_in_memory().unwrap());
    }

    #[test]
    fn sealed_rows_refuse_changes_made_outside() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("k.db");
        let s = SqliteStorage::open(&path).unwrap();
        let outside = Connection::open(&path).unwrap();
        c::sealed_rows_refuse_changes_made_outside(&s, &|sql| {
            outside.execute_batch(sql).unwrap();
        });
    }

    #[test]
    fn restore_into_a_sealed_database_and_from_old_backups() {
        c::restore_into_a_sealed_database_and_from_old_backups(
            &SqliteStorage::open_in_memory().unwrap(),
            &SqliteStorage::open_in_memory().unwrap(),
            &SqliteStorage::open_in_memory().unwrap(),
        );
    }

    #[test]
    fn snapshot_and_restore() {
        let d = tempfile::tempdir().unwrap();
        c::snapshot_and_restore(
            &SqliteStorage::open(&d.path().join("a")).unwrap(),
            &SqliteStorage::open(&d.path().join("b")).unwrap(),
        );
    }
}
