//! Wiring the tamper-evident audit log: where chains and checkpoints go
//! for a data directory, the server's chain, and the admin CLI's chain.

use crate::config::AuditSection;
use keyhold_audit::{
    AuditLog, AuditLogConfig, ChainTail, ChainWriter, Checkpoint, CheckpointHistory, CheckpointSink,
};
use keyhold_core::{Error, Result};
use keyhold_service::KeyService;
use keyhold_storage::AuditStore;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Chain writer settings for `section`, with checkpoints going to the key
/// database and, when configured, to a file on another volume.
pub fn log_config(service: &KeyService, section: &AuditSection) -> AuditLogConfig {
    let mut cfg = AuditLogConfig::new(section.dir.clone());
    cfg.max_file_bytes = section.max_file_mb.max(1) << 20;
    cfg.max_files = section.max_files.max(2);
    cfg.timeout = Duration::from_millis(section.timeout_ms.max(1));
    cfg.min_free_bytes = section.min_free_mb << 20;
    cfg.checkpoint_interval = Duration::from_millis(section.checkpoint_interval_ms.max(10));
    let storage = service.audit_store();
    let db: CheckpointSink =
        Arc::new(move |c: &Checkpoint| storage.add_audit_checkpoint(c).map_err(|e| e.to_string()));
    cfg.sinks.push(db);
    let storage = service.audit_store();
    let history: CheckpointHistory = Arc::new(move |chain: &str| {
        let mut all = storage.audit_checkpoints().map_err(|e| {
            format!("cannot read the audit chain's high-water mark from the key database: {e}")
        })?;
        all.retain(|c| c.chain == chain);
        Ok(all)
    });
    cfg.history = Some(history);
    if section.checkpoint_file.is_some() || section.checkpoint_syslog.is_some() {
        let offbox = Duration::from_millis(section.offbox_checkpoint_interval_ms.max(10));
        cfg.checkpoint_interval = cfg.checkpoint_interval.min(offbox);
    }
    if let Some(path) = section.checkpoint_file.clone() {
        let file: CheckpointSink = Arc::new(move |c: &Checkpoint| {
            let line = serde_json::to_string(c).map_err(|e| e.to_string())?;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            writeln!(f, "{line}")
                .and_then(|()| f.sync_data())
                .map_err(|e| format!("{}: {e}", path.display()))
        });
        cfg.sinks.push(file);
    }
    if let Some(socket) = section.checkpoint_syslog.clone() {
        let sink: CheckpointSink = Arc::new(move |c: &Checkpoint| send_syslog(&socket, c));
        cfg.sinks.push(sink);
    }
    cfg
}

/// Syslog priority of checkpoint messages: facility authpriv (10), severity
/// notice (5).
const SYSLOG_PRI: u32 = 10 * 8 + 5;
const SYSLOG_TAG: &str = "KEYHOLD-CHECKPOINT ";

/// One checkpoint as a syslog message (RFC 3164 framing, which journald and
/// rsyslog both read from /dev/log): `KEYHOLD-CHECKPOINT` and the signed
/// checkpoint as JSON. `keyhold audit verify --checkpoint-file` reads a
/// syslog file with these lines as it is.
pub fn syslog_message(c: &Checkpoint, now_unix: i64, pid: u32) -> Result<String, String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // "2026-11-23T11:29:22Z" → "Nov 23 11:29:22".
    let t = keyhold_core::time::format_rfc3339(now_unix);
    let month = t
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .ok_or("cannot format the time")?;
    let day: u32 = t.get(8..10).and_then(|d| d.parse().ok()).unwrap_or(1);
    let clock = t.get(11..19).unwrap_or("00:00:00");
    let json = serde_json::to_string(c).map_err(|e| e.to_string())?;
    Ok(format!(
        "<{SYSLOG_PRI}>{month} {day:>2} {clock} keyhold[{pid}]: {SYSLOG_TAG}{json}"
    ))
}

fn send_syslog(socket: &Path, c: &Checkpoint) -> std::result::Result<(), String> {
    let msg = syslog_message(c, keyhold_core::now(), std::process::id())?;
    let s =
        std::os::unix::net::UnixDatagram::unbound().map_err(|e| format!("syslog socket: {e}"))?;
    s.set_write_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| format!("syslog socket: {e}"))?;
    s.send_to(msg.as_bytes(), socket)
        .map(drop)
        .map_err(|e| format!("syslog {}: {e}", socket.display()))
}

/// The name of chain `base` of this node: `base` alone on storage of its
/// own, `base@NODE` on storage shared by several nodes (whose checkpoints
/// all go to the one database).
pub fn chain_name(base: &str, node: Option<&str>) -> String {
    match node {
        Some(n) => format!("{base}@{n}"),
        None => base.to_owned(),
    }
}

/// Whether checkpoints of `chain` should have log files in this node's
/// audit directory: chains of other nodes (`base@OTHER`) live elsewhere.
pub fn is_local_chain(chain: &str, node: Option<&str>) -> bool {
    match chain.split_once('@') {
        None => true,
        Some((_, n)) => Some(n) == node,
    }
}

/// Opens the server's chain (`xks`, or `xks-2`… when another server on the
/// same data directory holds it; `@NODE` appended on shared storage) and
/// starts its writer.
pub fn start_server_log(
    service: &KeyService,
    section: &AuditSection,
    node: Option<&str>,
) -> Result<Arc<AuditLog>> {
    let key = Arc::new(service.audit_key()?);
    let cfg = log_config(service, section);
    let mut last = String::new();
    for i in 1..=16 {
        let chain = if i == 1 {
            chain_name("xks", node)
        } else {
            chain_name(&format!("xks-{i}"), node)
        };
        match ChainWriter::open(&cfg, &chain, key.clone(), false) {
            Ok(w) => return Ok(Arc::new(AuditLog::start(w))),
            Err(e) if e.contains("in use") => last = e,
            Err(e) => return Err(Error::Internal(e)),
        }
    }
    Err(Error::Internal(last))
}

/// The admin CLI's chain (waits for another admin command to finish).
pub fn admin_writer(
    service: &KeyService,
    section: &AuditSection,
    node: Option<&str>,
) -> Result<ChainWriter> {
    let key = Arc::new(service.audit_key()?);
    ChainWriter::open(
        &log_config(service, section),
        &chain_name("admin", node),
        key,
        true,
    )
    .map_err(Error::Internal)
}

/// How often a node copies its new audit records to shared storage.
pub const SHIP_INTERVAL: Duration = Duration::from_secs(1);

/// The chains a node follows, and records read but not yet copied.
pub type ShipState = std::collections::HashMap<String, (ChainTail, Vec<(u64, String)>)>;

/// Copies what this node's chains (`*@NODE` under `dir`) appended since the
/// last call to shared storage; returns how many records went out.
pub fn ship_once(
    storage: &dyn AuditStore,
    dir: &Path,
    node: &str,
    state: &mut ShipState,
) -> Result<usize> {
    let suffix = format!("@{node}");
    let mut sent = 0;
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(&suffix) || !e.path().is_dir() {
            continue;
        }
        if !state.contains_key(&name) {
            let after = storage.audit_shipped(&name)?;
            state.insert(name.clone(), (ChainTail::new(e.path(), after), Vec::new()));
        }
        let (tail, pending) = state.get_mut(&name).expect("just inserted");
        loop {
            if pending.is_empty() {
                *pending = tail.next_batch(5_000);
            }
            if pending.is_empty() {
                break;
            }
            // Kept until stored: a failed copy is retried next time.
            storage.ship_audit(&name, pending)?;
            sent += pending.len();
            pending.clear();
        }
    }
    Ok(sent)
}

/// Copies this node's chains to shared storage every [`SHIP_INTERVAL`], so
/// that `keyhold audit` on any node sees every node's records. Stops when
/// the service is dropped.
pub fn spawn_shipper(service: &Arc<KeyService>, dir: std::path::PathBuf, node: String) {
    let weak = Arc::downgrade(service);
    let spawned = std::thread::Builder::new()
        .name("keyhold-audit-ship".into())
        .spawn(move || {
            let mut state = ShipState::new();
            loop {
                std::thread::sleep(SHIP_INTERVAL);
                let Some(s) = weak.upgrade() else { return };
                if let Err(e) = ship_once(&*s.audit_store(), &dir, &node, &mut state) {
                    tracing::warn!(error = %e, "cannot copy audit records to the shared database; retrying");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the audit copier");
    }
}

/// Checkpoints from a checkpoint file (lines that do not parse are skipped;
/// verification checks each one's MAC).
pub fn read_checkpoint_file(path: &Path) -> Result<Vec<Checkpoint>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Internal(format!("cannot read {}: {e}", path.display())))?;
    Ok(parse_checkpoints(&text))
}

/// Checkpoints from the text of a checkpoint file, or of a syslog file
/// (lines carrying `KEYHOLD-CHECKPOINT`); other lines are skipped.
pub fn parse_checkpoints(text: &str) -> Vec<Checkpoint> {
    text.lines()
        .map(|l| match l.split_once(SYSLOG_TAG) {
            Some((_, json)) => json,
            None => l,
        })
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_reach_a_syslog_socket_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("log.sock");
        let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        use keyhold_audit::CheckpointMac;
        let key = keyhold_crypto::HmacKey::new(&[7u8; 32]);
        let c = Checkpoint::new(
            &key,
            "xks",
            "checkpoint",
            42,
            &"ab".repeat(32),
            1_800_000_000_000,
        );
        send_syslog(&sock, &c).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
        assert!(msg.starts_with("<85>"), "{msg}");
        assert!(msg.contains(" keyhold["), "{msg}");
        // A syslog file (with the daemon's own prefix) gives the checkpoint back.
        let file = format!("Nov 23 11:29:22 host {}\nunrelated line\n", &msg[4..]);
        assert_eq!(parse_checkpoints(&file), vec![c.clone()]);
        // No listener: a clear error, no panic.
        drop(rx);
        let err = send_syslog(&sock, &c).unwrap_err();
        assert!(err.contains("syslog"), "{err}");
        assert_eq!(
            &syslog_message(&c, 1_795_000_000, 1).unwrap()[..20],
            "<85>Nov 18 11:06:40 "
        );
    }
}
