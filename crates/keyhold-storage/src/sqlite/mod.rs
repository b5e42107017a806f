//! The embedded SQLite backend.

mod connection;
mod keys;
mod maintenance;
mod meta;
mod objects;
mod rows;
mod schema;
mod sealing;
mod stores;
#[cfg(test)]
mod tests;

use crate::prelude::*;
use crate::seal::{
    self, key_ok, object_ok, store_ok, version_ok, RowSealer, SealedKey, SealedObject, VersionRow,
};
use crate::{now_ms, Cell, NodeInfo, Snapshot, TableDump, VersionInfo, SNAPSHOT_TABLES};
use keyhold_core::{
    now, AuditCheckpoint, Error, Key, KeyId, KeyState, KeyStore, KeyType, Lifecycle, ManagedObject,
    ObjectState, Result, Status, StorePrefix, StoredCredential, Timestamp, Usage, VersionFlag,
    WrappedItem, WrappedKeyVersion,
};
use parking_lot::Mutex;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

use connection::*;
use rows::*;
use schema::*;

/// Read-only connections for object reads.
const READERS: usize = 3;

/// SQLite storage: one file, WAL journal, `synchronous=FULL` so that every
/// acknowledged commit survives a crash or power loss.
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
}
