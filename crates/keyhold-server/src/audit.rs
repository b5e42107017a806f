//! Wiring the tamper-evident audit log: where chains and checkpoints go
//! for a data directory, the server's chain, and the admin CLI's chain.

use crate::config::AuditSection;
use keyhold_audit::{AuditLog, AuditLogConfig, ChainTail, ChainWriter, Checkpoint, CheckpointSink};
use keyhold_core::{Error, Result};
use keyhold_service::KeyService;
use keyhold_storage::Storage;
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
    let storage = service.storage().clone();
    let db: CheckpointSink =
        Arc::new(move |c: &Checkpoint| storage.add_audit_checkpoint(c).map_err(|e| e.to_string()));
    cfg.sinks.push(db);
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
    cfg
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
    storage: &dyn Storage,
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
                if let Err(e) = ship_once(&**s.storage(), &dir, &node, &mut state) {
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
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
