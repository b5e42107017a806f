//! Which servers run on a data directory, and which break-glass changes
//! each has applied: how `keyhold key disable` (and friends) know that the
//! change holds for the very next request before they return.
//!
//! On SQLite, a server writes `run/<pid>.pid` when it starts (its pid,
//! start time and listeners: what `keyhold status` shows). After each
//! refresh that saw a change (caches dropped, in-flight requests drained) it
//! writes the break-glass epoch it read into `run/<pid>.ack`. On storage
//! shared by several nodes (PostgreSQL) the same facts go into the
//! database's node list, with a heartbeat; that list is also the fleet
//! `GetHealthStatus` reports. A break-glass command bumps the epoch after
//! its change and waits until every live server has acknowledged it.

use keyhold_core::{Error, Result};
use keyhold_storage::{NodeInfo, NodeRegistry};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a node on shared storage says it is alive (and renews its
/// lease), at most: a short lease is renewed four times in its life.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A node silent for this long is no longer counted in the fleet size.
pub const NODE_TTL: Duration = Duration::from_secs(3);
/// How far two nodes' clocks may disagree: break glass waits this much
/// longer than a silent node's lease before it counts it out.
pub const CLOCK_SKEW: Duration = Duration::from_millis(500);

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

/// What a running server says of itself in `run/<pid>.pid`: what
/// `keyhold status` lists, and how a break-glass command recognises a live
/// server (the process's start time tells it from a later process that got
/// the same pid, whatever the binary is called).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat`).
    #[serde(default)]
    pub start_ticks: Option<u64>,
    /// Unix milliseconds.
    #[serde(default)]
    pub started_ms: i64,
    #[serde(default)]
    pub version: String,
    /// (what, address): `xks https://127.0.0.1:8443`, `admin …`, …
    #[serde(default)]
    pub listeners: Vec<(String, String)>,
}

impl ServerInfo {
    /// This process.
    pub fn this_process() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_ticks: start_ticks(pid),
            started_ms: now_ms(),
            version: env!("CARGO_PKG_VERSION").into(),
            listeners: Vec::new(),
        }
    }

    /// Reads the registration of process `pid`; what an older version
    /// wrote (only the pid), or a file cut short, says only that.
    fn parse(pid: u32, text: &str) -> Self {
        serde_json::from_str::<Self>(text)
            .ok()
            .filter(|i| i.pid == pid)
            .unwrap_or(Self {
                pid,
                start_ticks: None,
                started_ms: 0,
                version: String::new(),
                listeners: Vec::new(),
            })
    }

    /// Whether the process this describes still runs (not another process
    /// that reused its pid).
    pub fn alive(&self) -> bool {
        if self.pid == std::process::id() {
            return true;
        }
        match (self.start_ticks, start_ticks(self.pid)) {
            (Some(want), Some(now)) => want == now,
            (None, Some(_)) => true,
            (_, None) => false,
        }
    }
}

/// A process's start time (field 22 of `/proc/PID/stat`), if it runs.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last ')'. Field 3 (the state) is the first after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The servers running on `data_dir` (registrations of dead processes are
/// removed on the way), oldest first.
pub fn running_servers(data_dir: &Path) -> Vec<ServerInfo> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(run_dir(data_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
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
        let info = ServerInfo::parse(pid, &std::fs::read_to_string(&path).unwrap_or_default());
        if info.alive() {
            v.push(info);
        } else {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("ack"));
        }
    }
    v.sort_by_key(|i| (i.started_ms, i.pid));
    v
}

/// This server's registration: its file in the data directory's `run/`
/// (always), and on shared storage its entry in the database's node list.
/// Removed on drop.
pub struct Presence {
    run: RunFile,
    node: Option<NodePresence>,
}

impl Presence {
    /// Registers in the data directory, and with the node list of shared
    /// storage under a lease of `lease`.
    pub fn register(
        data_dir: &Path,
        storage: &Arc<dyn NodeRegistry>,
        lease: Duration,
    ) -> Result<Self> {
        let run = RunFile::register(data_dir)?;
        let node = if storage.shared() {
            Some(NodePresence::register(storage.clone(), lease)?)
        } else {
            None
        };
        Ok(Self { run, node })
    }

    /// On shared storage: until when (Unix ms) this node may serve what it
    /// has cached, kept current by the heartbeat.
    pub fn lease_until(&self) -> Option<Arc<AtomicI64>> {
        self.node.as_ref().map(|n| n.lease_until.clone())
    }

    /// Records that every change up to `epoch` is in force here.
    pub fn ack(&self, epoch: u64) {
        match &self.node {
            Some(n) => n.ack(epoch),
            None => self.run.ack(epoch),
        }
    }

    /// Says which listeners this server has bound (for `keyhold status`).
    pub fn set_listeners(&self, listeners: Vec<(String, String)>) {
        self.run.set_listeners(listeners);
    }

    /// The number of live nodes, kept current, on shared storage.
    pub fn fleet(&self) -> Option<Arc<AtomicU32>> {
        self.node.as_ref().map(|n| n.fleet.clone())
    }

    /// Removes the registration now (a clean stop).
    pub fn deregister(&self) {
        self.run.remove();
        if let Some(n) = &self.node {
            n.stop();
        }
    }
}

/// A node in the database's node list, with a heartbeat thread.
pub struct NodePresence {
    info: NodeInfo,
    storage: Arc<dyn NodeRegistry>,
    ack: Arc<AtomicU64>,
    fleet: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    /// Unix ms until which this node may serve cached keys: the time a
    /// heartbeat that reached the database was taken, plus the lease.
    lease_until: Arc<AtomicI64>,
}

/// Writes one heartbeat; on success the lease runs from the moment it was
/// taken (the moment the other nodes see in the database).
fn beat(
    storage: &dyn NodeRegistry,
    info: &NodeInfo,
    ack_epoch: u64,
    lease_until: &AtomicI64,
) -> Result<()> {
    let t = now_ms();
    let b = NodeInfo {
        heartbeat_ms: t,
        ack_epoch,
        ..info.clone()
    };
    storage.node_heartbeat(&b)?;
    lease_until.fetch_max(t + info.lease_ms, Ordering::SeqCst);
    Ok(())
}

impl NodePresence {
    fn register(storage: Arc<dyn NodeRegistry>, lease: Duration) -> Result<Self> {
        let host = hostname();
        let started_ms = now_ms();
        let info = NodeInfo {
            id: format!("{host}-{}-{started_ms}", std::process::id()),
            started_ms,
            heartbeat_ms: started_ms,
            ack_epoch: 0,
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2),
        };
        let lease_until = Arc::new(AtomicI64::new(0));
        beat(&*storage, &info, 0, &lease_until)?;
        let p = Self {
            info,
            storage,
            ack: Arc::new(AtomicU64::new(0)),
            fleet: Arc::new(AtomicU32::new(1)),
            stop: Arc::new(AtomicBool::new(false)),
            lease_until,
        };
        let (info, storage, ack, fleet, stop, until) = (
            p.info.clone(),
            p.storage.clone(),
            p.ack.clone(),
            p.fleet.clone(),
            p.stop.clone(),
            p.lease_until.clone(),
        );
        let every = HEARTBEAT.min(lease / 4).max(Duration::from_millis(10));
        std::thread::Builder::new()
            .name("keyhold-heartbeat".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match beat(&*storage, &info, ack.load(Ordering::SeqCst), &until)
                        .and_then(|()| storage.live_nodes(now_ms() - NODE_TTL.as_millis() as i64))
                    {
                        Ok(nodes) => fleet.store(nodes.len().max(1) as u32, Ordering::SeqCst),
                        Err(e) => tracing::warn!(error = %e, "cannot record this node's heartbeat"),
                    }
                    std::thread::sleep(every);
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the heartbeat: {e}")))?;
        Ok(p)
    }

    fn ack(&self, epoch: u64) {
        self.ack.store(epoch, Ordering::SeqCst);
        if let Err(e) = beat(&*self.storage, &self.info, epoch, &self.lease_until) {
            tracing::warn!(error = %e, "cannot record the break-glass acknowledgement");
        }
    }
}

impl NodePresence {
    fn stop(&self) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            let _ = self.storage.remove_node(&self.info.id);
        }
    }
}

impl Drop for NodePresence {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server's files in the data directory's `run/`: `<pid>.pid` (its
/// [`ServerInfo`]) and `<pid>.ack` (the break-glass epoch it applied).
struct RunFile {
    pid_file: PathBuf,
    ack_file: PathBuf,
    info: parking_lot::Mutex<ServerInfo>,
}

impl RunFile {
    fn register(data_dir: &Path) -> Result<Self> {
        let dir = run_dir(data_dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let info = ServerInfo::this_process();
        let p = Self {
            pid_file: dir.join(format!("{}.pid", info.pid)),
            ack_file: dir.join(format!("{}.ack", info.pid)),
            info: parking_lot::Mutex::new(info),
        };
        p.write()?;
        Ok(p)
    }

    /// Writes the registration whole (a reader never sees half of it).
    fn write(&self) -> Result<()> {
        let text = serde_json::to_string(&*self.info.lock())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let tmp = self.pid_file.with_extension("pid.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.pid_file))
            .map_err(|e| Error::Internal(format!("cannot write {}: {e}", self.pid_file.display())))
    }

    fn set_listeners(&self, listeners: Vec<(String, String)>) {
        self.info.lock().listeners = listeners;
        if let Err(e) = self.write() {
            tracing::warn!(error = %e, "cannot record this server's listeners");
        }
    }

    /// Records that every change up to `epoch` is in force here.
    fn ack(&self, epoch: u64) {
        let tmp = self.ack_file.with_extension("ack.tmp");
        if std::fs::write(&tmp, epoch.to_string())
            .and_then(|()| std::fs::rename(&tmp, &self.ack_file))
            .is_err()
        {
            tracing::warn!(file = %self.ack_file.display(), "cannot record the break-glass acknowledgement");
        }
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.pid_file);
        let _ = std::fs::remove_file(&self.ack_file);
    }
}

impl Drop for RunFile {
    fn drop(&mut self) {
        self.remove();
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
    /// Nodes that neither acknowledged nor renewed their lease (cut off
    /// from the database): waited out until their lease ran out, with the
    /// time of their last heartbeat (Unix ms).
    pub waited_out: Vec<(String, i64)>,
}

/// Waits until every live server (of the shared storage's node list, else
/// on `data_dir`) has acknowledged `epoch`, for at most `timeout`.
pub fn wait_for_acks(
    data_dir: &Path,
    storage: &dyn NodeRegistry,
    epoch: u64,
    timeout: Duration,
) -> AckReport {
    if storage.shared() {
        wait_for_node_acks(storage, epoch, timeout)
    } else {
        wait_for_file_acks(data_dir, epoch, timeout)
    }
}

/// When a node's lease, as the database last saw it, ends (clock skew
/// allowed for). Nodes from before leases: their heartbeat's TTL.
fn lease_end(n: &NodeInfo) -> i64 {
    let lease = if n.lease_ms > 0 {
        n.lease_ms
    } else {
        NODE_TTL.as_millis() as i64
    };
    n.heartbeat_ms
        .saturating_add(lease)
        .saturating_add(CLOCK_SKEW.as_millis() as i64)
}

/// Waits until every node that may still serve has acknowledged `epoch`,
/// or has let its lease run out (a node cut off from the database stops
/// serving then, by itself). A node that keeps renewing its lease without
/// acknowledging is waited for `timeout` at most (reported unconfirmed).
fn wait_for_node_acks(storage: &dyn NodeRegistry, epoch: u64, timeout: Duration) -> AckReport {
    let started = Instant::now();
    let mut waited_out: Vec<(String, i64)> = Vec::new();
    let mut progress = Instant::now();
    loop {
        let now = now_ms();
        // Any node heard from in the last day may hold a (long) lease.
        let nodes = match storage.live_nodes(now - 86_400_000) {
            Ok(n) => n,
            Err(e) => {
                // Not knowing the nodes is not knowing the change holds.
                if started.elapsed() >= timeout {
                    tracing::error!(error = %e, "cannot read the node list");
                    return AckReport {
                        servers: 1,
                        acknowledged: 0,
                        elapsed: started.elapsed(),
                        waited_out,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let mut serving = 0;
        let mut acknowledged = 0;
        let mut renewing_unacked = 0;
        let mut latest_end = 0;
        for n in &nodes {
            if n.ack_epoch >= epoch {
                serving += 1;
                acknowledged += 1;
            } else if lease_end(n) > now {
                serving += 1;
                latest_end = latest_end.max(lease_end(n));
                if n.heartbeat_ms > now - NODE_TTL.as_millis() as i64 {
                    renewing_unacked += 1;
                }
                if !waited_out.iter().any(|(id, _)| *id == n.id) {
                    waited_out.push((n.id.clone(), n.heartbeat_ms));
                }
            }
        }
        // Nodes that acknowledged after all were not waited out.
        waited_out.retain(|(id, _)| !nodes.iter().any(|n| n.id == *id && n.ack_epoch >= epoch));
        let elapsed = started.elapsed();
        let report = |servers, acknowledged, waited_out: &Vec<(String, i64)>| AckReport {
            servers,
            acknowledged,
            elapsed,
            waited_out: waited_out.clone(),
        };
        if acknowledged == serving {
            // Every node left is acknowledged; the others' leases ran out.
            let gone = waited_out.len();
            return report(acknowledged + gone, acknowledged + gone, &waited_out);
        }
        // Live but not applying it: give up after `timeout` (the caller
        // says the change is not confirmed everywhere).
        if renewing_unacked > 0 && elapsed >= timeout {
            return report(serving, acknowledged, &waited_out);
        }
        if progress.elapsed() >= Duration::from_secs(5) {
            progress = Instant::now();
            tracing::warn!(
                nodes = serving - acknowledged,
                lease_ends_in_ms = latest_end - now,
                "waiting for nodes that did not acknowledge the change to apply it or let their lease run out"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Registrations of dead processes are removed on the way.
fn wait_for_file_acks(data_dir: &Path, epoch: u64, timeout: Duration) -> AckReport {
    let started = Instant::now();
    loop {
        let servers = running_servers(data_dir);
        let acknowledged = servers
            .iter()
            .filter(|s| {
                std::fs::read_to_string(run_dir(data_dir).join(format!("{}.ack", s.pid)))
                    .ok()
                    .and_then(|a| a.trim().parse::<u64>().ok())
                    .is_some_and(|a| a >= epoch)
            })
            .count();
        let elapsed = started.elapsed();
        if acknowledged == servers.len() || elapsed >= timeout {
            return AckReport {
                servers: servers.len(),
                acknowledged,
                elapsed,
                waited_out: Vec::new(),
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
        let s: Arc<dyn NodeRegistry> =
            Arc::new(keyhold_storage::SqliteStorage::open_in_memory().unwrap());
        let wait = |epoch, t| wait_for_acks(d.path(), &*s, epoch, t);
        let r = wait(1, Duration::from_millis(10));
        assert_eq!((r.servers, r.acknowledged), (0, 0));
        let p = Presence::register(d.path(), &s, Duration::from_secs(5)).unwrap();
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
        // A live process of another name, and one that reused a dead
        // server's pid, are told apart by their start time.
        let mut other = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let mut info = ServerInfo::this_process();
        info.pid = other.id();
        info.start_ticks = start_ticks(other.id());
        let f = d.path().join(format!("run/{}.pid", other.id()));
        std::fs::write(&f, serde_json::to_string(&info).unwrap()).unwrap();
        assert_eq!(
            running_servers(d.path()).len(),
            2,
            "a renamed binary counts"
        );
        info.start_ticks = info.start_ticks.map(|t| t + 1);
        std::fs::write(&f, serde_json::to_string(&info).unwrap()).unwrap();
        assert_eq!(running_servers(d.path()).len(), 1, "a reused pid does not");
        let _ = other.kill();
        let _ = other.wait();
        drop(p);
        assert_eq!(wait(3, Duration::ZERO).servers, 0);
    }
}
