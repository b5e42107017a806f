//! Which servers run on a data directory, and which break-glass changes
//! each has applied: how `keyhold key disable` (and friends) know that the
//! change holds for the very next request before they return.
//!
//! On SQLite, a server writes `run/<pid>.pid` when it starts. After each
//! refresh that saw a change (caches dropped, in-flight requests drained) it
//! writes the break-glass epoch it read into `run/<pid>.ack`. On storage
//! shared by several nodes (PostgreSQL) the same facts go into the
//! database's node list, with a heartbeat; that list is also the fleet
//! `GetHealthStatus` reports. A break-glass command bumps the epoch after
//! its change and waits until every live server has acknowledged it.

use keyhold_core::{Error, Result};
use keyhold_storage::{NodeInfo, Storage};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a node on shared storage says it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A node silent for this long is no longer counted.
pub const NODE_TTL: Duration = Duration::from_secs(3);

use keyhold_audit::now_ms;

/// This machine's name, as nodes are told apart by.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}

fn run_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("run")
}

/// This server's registration; removed on drop.
pub enum Presence {
    Files(FilePresence),
    Node(NodePresence),
}

impl Presence {
    /// Registers with the node list of shared storage, else with the data
    /// directory.
    pub fn register(data_dir: &Path, storage: &Arc<dyn Storage>) -> Result<Self> {
        if storage.shared() {
            NodePresence::register(storage.clone()).map(Presence::Node)
        } else {
            FilePresence::register(data_dir).map(Presence::Files)
        }
    }

    /// Records that every change up to `epoch` is in force here.
    pub fn ack(&self, epoch: u64) {
        match self {
            Presence::Files(f) => f.ack(epoch),
            Presence::Node(n) => n.ack(epoch),
        }
    }

    /// The number of live nodes, kept current, on shared storage.
    pub fn fleet(&self) -> Option<Arc<AtomicU32>> {
        match self {
            Presence::Files(_) => None,
            Presence::Node(n) => Some(n.fleet.clone()),
        }
    }
}

/// A node in the database's node list, with a heartbeat thread.
pub struct NodePresence {
    info: NodeInfo,
    storage: Arc<dyn Storage>,
    ack: Arc<AtomicU64>,
    fleet: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl NodePresence {
    fn register(storage: Arc<dyn Storage>) -> Result<Self> {
        let host = hostname();
        let started_ms = now_ms();
        let info = NodeInfo {
            id: format!("{host}-{}-{started_ms}", std::process::id()),
            started_ms,
            heartbeat_ms: started_ms,
            ack_epoch: 0,
        };
        storage.node_heartbeat(&info)?;
        let p = Self {
            info,
            storage,
            ack: Arc::new(AtomicU64::new(0)),
            fleet: Arc::new(AtomicU32::new(1)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (info, storage, ack, fleet, stop) = (
            p.info.clone(),
            p.storage.clone(),
            p.ack.clone(),
            p.fleet.clone(),
            p.stop.clone(),
        );
        std::thread::Builder::new()
            .name("keyhold-heartbeat".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let beat = NodeInfo {
                        heartbeat_ms: now_ms(),
                        ack_epoch: ack.load(Ordering::SeqCst),
                        ..info.clone()
                    };
                    match storage
                        .node_heartbeat(&beat)
                        .and_then(|()| storage.live_nodes(now_ms() - NODE_TTL.as_millis() as i64))
                    {
                        Ok(nodes) => fleet.store(nodes.len().max(1) as u32, Ordering::SeqCst),
                        Err(e) => tracing::warn!(error = %e, "cannot record this node's heartbeat"),
                    }
                    std::thread::sleep(HEARTBEAT);
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the heartbeat: {e}")))?;
        Ok(p)
    }

    fn ack(&self, epoch: u64) {
        self.ack.store(epoch, Ordering::SeqCst);
        let beat = NodeInfo {
            heartbeat_ms: now_ms(),
            ack_epoch: epoch,
            ..self.info.clone()
        };
        if let Err(e) = self.storage.node_heartbeat(&beat) {
            tracing::warn!(error = %e, "cannot record the break-glass acknowledgement");
        }
    }
}

impl Drop for NodePresence {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.storage.remove_node(&self.info.id);
    }
}

/// A server's files in the data directory's `run/`.
pub struct FilePresence {
    pid_file: PathBuf,
    ack_file: PathBuf,
}

impl FilePresence {
    pub fn register(data_dir: &Path) -> Result<Self> {
        let dir = run_dir(data_dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let pid = std::process::id();
        let p = Self {
            pid_file: dir.join(format!("{pid}.pid")),
            ack_file: dir.join(format!("{pid}.ack")),
        };
        std::fs::write(&p.pid_file, pid.to_string())
            .map_err(|e| Error::Internal(format!("cannot write {}: {e}", p.pid_file.display())))?;
        Ok(p)
    }

    /// Records that every change up to `epoch` is in force here.
    pub fn ack(&self, epoch: u64) {
        let tmp = self.ack_file.with_extension("ack.tmp");
        if std::fs::write(&tmp, epoch.to_string())
            .and_then(|()| std::fs::rename(&tmp, &self.ack_file))
            .is_err()
        {
            tracing::warn!(file = %self.ack_file.display(), "cannot record the break-glass acknowledgement");
        }
    }
}

impl Drop for FilePresence {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pid_file);
        let _ = std::fs::remove_file(&self.ack_file);
    }
}

/// What [`wait_for_acks`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckReport {
    /// Servers running on the data directory.
    pub servers: usize,
    /// Of them, how many applied the change in time.
    pub acknowledged: usize,
    pub elapsed: Duration,
}

/// Whether `pid` is a running Keyhold process (not a reused pid).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.starts_with("keyhold") || pid == std::process::id())
}

/// Waits until every live server (of the shared storage's node list, else
/// on `data_dir`) has acknowledged `epoch`, for at most `timeout`.
pub fn wait_for_acks(
    data_dir: &Path,
    storage: &dyn Storage,
    epoch: u64,
    timeout: Duration,
) -> AckReport {
    if storage.shared() {
        wait_for_node_acks(storage, epoch, timeout)
    } else {
        wait_for_file_acks(data_dir, epoch, timeout)
    }
}

fn wait_for_node_acks(storage: &dyn Storage, epoch: u64, timeout: Duration) -> AckReport {
    let started = Instant::now();
    loop {
        let nodes = storage
            .live_nodes(now_ms() - NODE_TTL.as_millis() as i64)
            .unwrap_or_default();
        let acknowledged = nodes.iter().filter(|n| n.ack_epoch >= epoch).count();
        let elapsed = started.elapsed();
        if acknowledged == nodes.len() || elapsed >= timeout {
            return AckReport {
                servers: nodes.len(),
                acknowledged,
                elapsed,
            };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Registrations of dead processes are removed on the way.
fn wait_for_file_acks(data_dir: &Path, epoch: u64, timeout: Duration) -> AckReport {
    let started = Instant::now();
    loop {
        let mut servers = 0;
        let mut acknowledged = 0;
        let entries = std::fs::read_dir(run_dir(data_dir)).into_iter().flatten();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("pid") {
                continue;
            }
            let Some(pid) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if !alive(pid) {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(path.with_extension("ack"));
                continue;
            }
            servers += 1;
            let acked = std::fs::read_to_string(path.with_extension("ack"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|a| a >= epoch);
            if acked {
                acknowledged += 1;
            }
        }
        let elapsed = started.elapsed();
        if acknowledged == servers || elapsed >= timeout {
            return AckReport {
                servers,
                acknowledged,
                elapsed,
            };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_awaited_and_dead_servers_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let s: Arc<dyn Storage> =
            Arc::new(keyhold_storage::SqliteStorage::open_in_memory().unwrap());
        let wait = |epoch, t| wait_for_acks(d.path(), &*s, epoch, t);
        let r = wait(1, Duration::from_millis(10));
        assert_eq!((r.servers, r.acknowledged), (0, 0));
        let p = Presence::register(d.path(), &s).unwrap();
        assert!(p.fleet().is_none());
        let r = wait(3, Duration::from_millis(20));
        assert_eq!((r.servers, r.acknowledged), (1, 0));
        p.ack(3);
        let r = wait(3, Duration::from_secs(1));
        assert_eq!((r.servers, r.acknowledged), (1, 1));
        // A registration left by a dead process is removed.
        std::fs::write(d.path().join("run/999999999.pid"), "x").unwrap();
        let r = wait(3, Duration::from_secs(1));
        assert_eq!(r.servers, 1);
        assert!(!d.path().join("run/999999999.pid").exists());
        drop(p);
        assert_eq!(wait(3, Duration::ZERO).servers, 0);
    }
}
