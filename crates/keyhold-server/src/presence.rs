//! Which servers run on a data directory, and which break-glass changes
//! each has applied: how `keyhold key disable` (and friends) know that the
//! change holds for the very next request before they return.
//!
//! A server writes `run/<pid>.pid` when it starts. After each refresh that
//! saw a change (caches dropped, in-flight requests drained) it writes the
//! break-glass epoch it read into `run/<pid>.ack`. A break-glass command
//! bumps the epoch after its change and waits until every live server has
//! acknowledged it.

use keyhold_core::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn run_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("run")
}

/// This server's registration; removed on drop.
pub struct Presence {
    pid_file: PathBuf,
    ack_file: PathBuf,
}

impl Presence {
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

impl Drop for Presence {
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

/// Waits until every live server on `data_dir` has acknowledged `epoch`,
/// for at most `timeout`. Registrations of dead processes are removed.
pub fn wait_for_acks(data_dir: &Path, epoch: u64, timeout: Duration) -> AckReport {
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
        let r = wait_for_acks(d.path(), 1, Duration::from_millis(10));
        assert_eq!((r.servers, r.acknowledged), (0, 0));
        let p = Presence::register(d.path()).unwrap();
        let r = wait_for_acks(d.path(), 3, Duration::from_millis(20));
        assert_eq!((r.servers, r.acknowledged), (1, 0));
        p.ack(3);
        let r = wait_for_acks(d.path(), 3, Duration::from_secs(1));
        assert_eq!((r.servers, r.acknowledged), (1, 1));
        // A registration left by a dead process is removed.
        std::fs::write(d.path().join("run/999999999.pid"), "x").unwrap();
        let r = wait_for_acks(d.path(), 3, Duration::from_secs(1));
        assert_eq!(r.servers, 1);
        assert!(!d.path().join("run/999999999.pid").exists());
        drop(p);
        assert_eq!(wait_for_acks(d.path(), 3, Duration::ZERO).servers, 0);
    }
}
