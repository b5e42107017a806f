//! Writing chains: [`ChainWriter`] appends MAC-chained lines to size-rotated
//! files (one writer per chain, held by a file lock); [`crate::AuditLog`]
//! runs one on its own thread.

use crate::log::CHECKPOINT_RETRY;
use crate::{
    encode_event, genesis, now_ms, open_line, seal_fields_into, Checkpoint, CheckpointMac, Event,
    LineHead, Record,
};
use keyhold_crypto::HmacKey;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where checkpoints go besides the log itself (the key database, a file
/// on another volume…). An error is logged and shown in the status.
pub type CheckpointSink = Arc<dyn Fn(&Checkpoint) -> Result<(), String> + Send + Sync>;

/// Where a chain's earlier checkpoints are read back from when it is
/// opened (the key database): they hold its high-water mark.
pub type CheckpointHistory = Arc<dyn Fn(&str) -> Result<Vec<Checkpoint>, String> + Send + Sync>;

/// Checkpoint kinds. A `reserve` says that records up to its `seq` may be
/// written: it reaches the sinks before any record beyond the previous
/// one, so that after a crash (or records cut from the end of the log)
/// the chain goes on after it and never numbers two records alike. A
/// `stop` is a checkpoint written when the chain is closed cleanly.
pub const KIND_CHECKPOINT: &str = "checkpoint";
pub const KIND_RESERVE: &str = "reserve";
pub const KIND_STOP: &str = "stop";
/// The operation of the record a chain starts with after an unclean stop.
pub const UNCLEAN_START: &str = "audit.unclean_start";

/// Events encoded and waiting for their chain: their fields' JSON one
/// after another, and for each its time and where its fields are. Reused
/// from batch to batch, so that steady traffic allocates nothing.
#[derive(Default)]
pub(crate) struct Encoded {
    pub(crate) bytes: Vec<u8>,
    pub(crate) items: Vec<(i64, usize, usize)>,
}

impl Encoded {
    pub(crate) fn push(&mut self, ts_ms: i64, ev: &Event<'_>) {
        let (a, b) = encode_event(ev, &mut self.bytes);
        self.items.push((ts_ms, a, b));
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
    }
}

/// Settings of a chain writer.
#[derive(Clone)]
pub struct AuditLogConfig {
    /// Directory holding one sub-directory per chain.
    pub dir: PathBuf,
    /// A file is rotated once it would grow past this.
    pub max_file_bytes: u64,
    /// Oldest files beyond this many are removed (with a retention marker).
    pub max_files: usize,
    /// A checkpoint at least this often while records come in.
    pub checkpoint_interval: Duration,
    /// ... and at least every this many records.
    pub checkpoint_records: u64,
    /// Longest a request waits for its record to be written.
    pub timeout: Duration,
    /// Below this much free space on the audit volume, raise the alarm.
    pub min_free_bytes: u64,
    pub sinks: Vec<CheckpointSink>,
    /// Earlier checkpoints, for the high-water mark (none: the log alone
    /// says where the chain stands).
    pub history: Option<CheckpointHistory>,
    /// Sequence numbers reserved at a time.
    pub reserve_block: u64,
}

impl AuditLogConfig {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            max_file_bytes: 64 << 20,
            max_files: 256,
            checkpoint_interval: Duration::from_secs(10),
            checkpoint_records: 10_000,
            timeout: Duration::from_secs(1),
            min_free_bytes: 256 << 20,
            sinks: Vec::new(),
            history: None,
            reserve_block: 65_536,
        }
    }
}

/// File name of the file whose first record is `seq`.
fn file_name(seq: u64) -> String {
    format!("{seq:020}.jsonl")
}

/// The chain's files, oldest first.
pub(crate) fn chain_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    v.sort();
    v
}

/// The last complete line of a file, and the file length up to its end.
fn last_line(path: &Path) -> std::io::Result<(Option<String>, u64)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let back = len.min(64 * 1024);
    f.seek(SeekFrom::Start(len - back))?;
    let mut tail = Vec::with_capacity(back as usize);
    f.read_to_end(&mut tail)?;
    // Drop a partial last line (a crash mid-write: never acknowledged).
    let complete = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    let good_len = len - back + complete as u64;
    let body = &tail[..complete];
    let line = body
        .strip_suffix(b"\n")
        .and_then(|b| b.rsplit(|&c| c == b'\n').next())
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned());
    Ok((line, good_len))
}

/// Appends to one chain. Holds the chain's lock for its life.
pub struct ChainWriter {
    pub(crate) chain: String,
    pub(crate) dir: PathBuf,
    pub(crate) key: Arc<HmacKey>,
    pub(crate) cfg: AuditLogConfig,
    pub(crate) file: File,
    pub(crate) file_len: u64,
    pub(crate) seq: u64,
    pub(crate) head: String,
    pub(crate) since_checkpoint: u64,
    pub(crate) last_checkpoint: Instant,
    /// A checkpoint that failed (a sink unreachable) is tried again from
    /// this moment, records or not.
    pub(crate) retry_at: Option<Instant>,
    /// Reused for each batch's lines.
    pub(crate) buf: Vec<u8>,
    /// The batch buffer the [`AuditLog`] swaps with its queue.
    pub(crate) spare: Encoded,
    /// Files rotated out whose data is not yet known to be on disk: the
    /// next checkpoint syncs them before the current file (an fsync of a
    /// full file inside a request's write would stall every request).
    pub(crate) retired: Vec<File>,
    /// Records up to this one may be written: a `reserve` checkpoint
    /// saying so has reached the sinks.
    pub(crate) reserved: u64,
    /// The last reservation that could not reach the sinks, and when.
    pub(crate) reserve_failed: Option<(Instant, String)>,
    /// Closed cleanly: nothing more is reserved (a reservation after the
    /// `stop` would make the next run look like one after a crash).
    pub(crate) closed: bool,
    pub(crate) _lock: File,
}

/// How soon a reservation that failed on a request's path is tried there
/// again (the checkpoint thread tries every second meanwhile).
const RESERVE_RETRY: Duration = Duration::from_secs(1);

/// What a chain's earlier checkpoints say about where it stands.
struct HighWater {
    /// The highest sequence number any checkpoint names.
    seq: u64,
    /// Whether the last run closed the chain cleanly at `at_seq`/`head`.
    clean: bool,
}

/// Reads the high-water mark of `chain`, whose log ends at `seq`/`head`,
/// from its authentic checkpoints.
fn high_water(cps: &[Checkpoint], key: &HmacKey, chain: &str, seq: u64, head: &str) -> HighWater {
    let mine: Vec<&Checkpoint> = cps
        .iter()
        .filter(|c| c.chain == chain && c.is_authentic(key))
        .collect();
    let top = mine.iter().map(|c| c.seq).max().unwrap_or(0);
    let last_reserve = mine
        .iter()
        .filter(|c| c.kind == KIND_RESERVE)
        .map(|c| c.ts_ms)
        .max();
    // Clean: the last run's stop names the log's end, and no run reserved
    // numbers after it. (Logs from before reservations have none.)
    let clean = match last_reserve {
        None => top <= seq,
        Some(r) => mine
            .iter()
            .any(|c| c.kind == KIND_STOP && c.seq == seq && c.head == head && c.ts_ms >= r),
    };
    HighWater { seq: top, clean }
}

/// Takes the chain's file lock: one writer per chain, across processes.
fn lock_chain(dir: &Path, chain: &str, wait: bool) -> Result<File, String> {
    let lock_path = dir.join(".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_err("cannot open", &lock_path, e))?;
    let mode = if wait {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    };
    rustix::fs::flock(&lock, mode)
        .map_err(|e| format!("audit chain {chain} is in use by another process ({e})"))?;
    Ok(lock)
}

/// Where a chain stands in `dir`: its last record's number and MAC, the
/// file to append to, and that file's length up to its last whole line.
fn chain_end(
    dir: &Path,
    chain: &str,
    key: &HmacKey,
) -> Result<(u64, String, PathBuf, u64), String> {
    let files = chain_files(dir);
    let Some(p) = files.last() else {
        return Ok((0, genesis(), dir.join(file_name(1)), 0));
    };
    let (line, good_len) = last_line(p).map_err(|e| io_err("cannot read", p, e))?;
    if let Some(l) = line {
        let (rec, mac) = open_line(key, &l).map_err(|e| {
            format!(
                "audit chain {chain} is damaged at the end of {} ({e}): run `keyhold audit verify`",
                p.display()
            )
        })?;
        return Ok((rec.seq, mac, p.clone(), good_len));
    }
    // An empty file (rotated, then a crash): its name says where the chain
    // stands; the previous file has the head.
    match files.len().checked_sub(2).map(|i| &files[i]) {
        Some(pp) => {
            let (l, _) = last_line(pp).map_err(|e| io_err("cannot read", pp, e))?;
            let l = l.ok_or_else(|| format!("audit chain {chain}: {} is empty", pp.display()))?;
            let (rec, mac) = open_line(key, &l)?;
            Ok((rec.seq, mac, p.clone(), 0))
        }
        None => Ok((0, genesis(), p.clone(), 0)),
    }
}

fn io_err(what: &str, p: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", p.display())
}

impl ChainWriter {
    /// Opens chain `chain` for appending, waiting for its lock when `wait`
    /// (the admin CLI) or failing at once (a server picks another chain).
    /// Refuses a chain whose last record does not verify.
    pub fn open(
        cfg: &AuditLogConfig,
        chain: &str,
        key: Arc<HmacKey>,
        wait: bool,
    ) -> Result<Self, String> {
        let dir = cfg.dir.join(chain);
        std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        let lock = lock_chain(&dir, chain, wait)?;
        let (seq, head, path, len) = chain_end(&dir, chain, &key)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err("cannot open", &path, e))?;
        // Cut a partial last line left by a crash.
        if file.metadata().map(|m| m.len()).unwrap_or(0) != len {
            file.set_len(len)
                .map_err(|e| io_err("cannot repair", &path, e))?;
            tracing::warn!(file = %path.display(), "removed a partial audit line left by a crash");
        }
        let hw = match &cfg.history {
            Some(h) => Some(high_water(&h(chain)?, &key, chain, seq, &head)),
            None => None,
        };
        let mut w = Self {
            chain: chain.to_owned(),
            dir,
            key,
            cfg: cfg.clone(),
            file,
            file_len: len,
            seq,
            head,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            retry_at: None,
            buf: Vec::new(),
            spare: Encoded::default(),
            retired: Vec::new(),
            reserved: seq,
            reserve_failed: None,
            closed: false,
            _lock: lock,
        };
        if let Some(hw) = hw.filter(|hw| !hw.clean) {
            w.start_after_unclean_stop(hw.seq)?;
        }
        // The next records' numbers, reserved before any is written.
        w.ensure_reserved(w.seq + 1);
        Ok(w)
    }

    /// The last run stopped without closing the chain (a crash, a kill, a
    /// power cut, or records cut from the end of its log): numbers up to
    /// `high` may have been given to records that are not in the log now.
    /// The chain goes on after them, with a record that says so (which
    /// `keyhold audit verify` reports).
    pub(crate) fn start_after_unclean_stop(&mut self, high: u64) -> Result<(), String> {
        let end = self.seq;
        let skipped = high.saturating_sub(end);
        tracing::warn!(chain = %self.chain, log_ends_at = end, high_water = high, "the audit chain was not closed cleanly: starting after its high-water mark");
        let detail = if skipped == 0 {
            format!("the previous run stopped without closing the chain after record {end}")
        } else {
            format!(
                "the previous run stopped without closing the chain; the log ends at record {end}, \
                 but numbers up to {high} had been reserved: {skipped} number(s) skipped, and any record \
                 written after the last checkpoint and not in the log now was lost or removed"
            )
        };
        self.seq = self.seq.max(high);
        let rec = Record {
            frontend: "audit".into(),
            operation: UNCLEAN_START.into(),
            result: "OK".into(),
            detail: Some(detail),
            ts_ms: now_ms(),
            ..Record::default()
        };
        let r = self.append(std::slice::from_ref(&rec));
        if r.is_err() {
            self.seq = end;
        }
        r
    }

    /// Makes sure a reservation covers records up to `upto` before they are
    /// written. A reservation that cannot reach the sinks does not stop the
    /// write (key use goes on through a database outage): it is reported,
    /// and tried again.
    pub(crate) fn ensure_reserved(&mut self, upto: u64) {
        if upto <= self.reserved {
            return;
        }
        let Some(c) = self.reservation(upto + self.cfg.reserve_block) else {
            return;
        };
        let r = emit_to(&self.cfg.sinks, &c);
        if self.reservation_sent(&c, r).is_err() {
            self.retry_at
                .get_or_insert(Instant::now() + CHECKPOINT_RETRY);
        }
    }

    /// A signed reservation of the numbers up to `target`, unless this
    /// chain reserves nothing (no history, closed) or a reservation failed
    /// less than [`RESERVE_RETRY`] ago.
    pub(crate) fn reservation(&self, target: u64) -> Option<Checkpoint> {
        let failed_recently = self
            .reserve_failed
            .as_ref()
            .is_some_and(|(t, _)| t.elapsed() < RESERVE_RETRY);
        if self.cfg.history.is_none() || self.closed || failed_recently {
            return None;
        }
        Some(Checkpoint::new(
            &self.key,
            &self.chain,
            KIND_RESERVE,
            target,
            &self.head,
            now_ms(),
        ))
    }

    /// Takes note of what the sinks answered to reservation `c`.
    pub(crate) fn reservation_sent(
        &mut self,
        c: &Checkpoint,
        r: Result<(), String>,
    ) -> Result<(), String> {
        match r {
            Ok(()) => {
                self.reserved = self.reserved.max(c.seq);
                self.reserve_failed = None;
                Ok(())
            }
            Err(e) => {
                self.reserve_failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Closes the chain cleanly: syncs the log and writes a `stop`
    /// checkpoint of its head, so that the next run knows nothing after it
    /// was written.
    pub fn close(mut self) -> Result<Checkpoint, String> {
        self.close_in_place()
    }

    pub(crate) fn close_in_place(&mut self) -> Result<Checkpoint, String> {
        self.closed = true;
        self.sync_and_emit(KIND_STOP)
    }

    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Records written so far (the last sequence number).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends `recs` in one write (their `seq`, `chain` and `prev` are
    /// the chain's). On failure nothing is kept (the file is cut back) and
    /// the chain stays where it was.
    pub fn append(&mut self, recs: &[Record]) -> Result<(), String> {
        let mut enc = Encoded::default();
        for r in recs {
            enc.push(r.ts_ms, &r.event());
        }
        self.append_encoded(&enc)
    }

    /// Appends the encoded events in one write, each as the chain's next
    /// record.
    pub(crate) fn append_encoded(&mut self, enc: &Encoded) -> Result<(), String> {
        self.ensure_reserved(self.seq + enc.len() as u64);
        let (seq0, head0) = (self.seq, self.head.clone());
        self.buf.clear();
        for &(ts_ms, a, b) in &enc.items {
            self.seq += 1;
            let head = LineHead {
                seq: self.seq,
                ts_ms,
                chain: &self.chain,
                prev: &self.head,
            };
            let mac = seal_fields_into(&self.key, &head, &enc.bytes[a..b], &mut self.buf);
            let mut h = [0u8; 64];
            hex::encode_to_slice(mac, &mut h).expect("64 hex digits");
            self.head.clear();
            self.head
                .push_str(std::str::from_utf8(&h).expect("hex is ASCII"));
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.write_rotating(seq0 + 1, &buf);
        self.buf = buf;
        if let Err(e) = &r {
            self.seq = seq0;
            self.head = head0;
            let _ = self.file.set_len(self.file_len);
            tracing::error!(chain = %self.chain, error = %e, "cannot write the audit log");
        } else {
            self.since_checkpoint += enc.len() as u64;
        }
        r
    }

    pub(crate) fn write_rotating(&mut self, first_seq: u64, bytes: &[u8]) -> Result<(), String> {
        if self.file_len > 0 && self.file_len + bytes.len() as u64 > self.cfg.max_file_bytes {
            let path = self.dir.join(file_name(first_seq));
            let old = std::mem::replace(
                &mut self.file,
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io_err("cannot create", &path, e))?,
            );
            self.retired.push(old);
            self.file_len = 0;
            self.apply_retention();
        }
        self.file
            .write_all(bytes)
            .map_err(|e| format!("cannot append to the audit log: {e}"))?;
        self.file_len += bytes.len() as u64;
        Ok(())
    }

    /// Removes the oldest files beyond `max_files`, each with a retention
    /// marker naming the last record removed.
    pub(crate) fn apply_retention(&mut self) {
        let files = chain_files(&self.dir);
        let excess = files.len().saturating_sub(self.cfg.max_files.max(2));
        for f in &files[..excess] {
            let Ok((Some(l), _)) = last_line(f) else {
                continue;
            };
            let Ok((rec, mac)) = open_line(&self.key, &l) else {
                tracing::error!(file = %f.display(), "not removing an audit file that does not verify");
                return;
            };
            let marker =
                Checkpoint::new(&self.key, &self.chain, "retention", rec.seq, &mac, now_ms());
            if !self.emit(&marker) {
                return;
            }
            let _ = std::fs::remove_file(f);
        }
    }

    pub(crate) fn emit(&self, c: &Checkpoint) -> bool {
        emit_to(&self.cfg.sinks, c).is_ok()
    }

    /// Signs a checkpoint of the current head; counts as a checkpoint taken.
    pub(crate) fn sign_head(&mut self, kind: &str) -> Checkpoint {
        self.since_checkpoint = 0;
        self.retry_at = None;
        self.last_checkpoint = Instant::now();
        Checkpoint::new(&self.key, &self.chain, kind, self.seq, &self.head, now_ms())
    }

    /// Whether a checkpoint is due.
    pub fn checkpoint_due(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() >= t)
            || self.since_checkpoint > 0
                && (self.since_checkpoint >= self.cfg.checkpoint_records
                    || self.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval)
    }

    /// What a checkpoint of the current head needs: the file to sync, the
    /// signed checkpoint, the sinks. Counts as a checkpoint taken.
    #[allow(clippy::type_complexity)]
    pub(crate) fn snapshot(
        &mut self,
    ) -> Result<(Vec<File>, Checkpoint, Vec<CheckpointSink>), String> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| format!("cannot sync the audit log: {e}"))?;
        let mut files = std::mem::take(&mut self.retired);
        files.push(file);
        Ok((
            files,
            self.sign_head(KIND_CHECKPOINT),
            self.cfg.sinks.clone(),
        ))
    }

    /// Syncs the file (and files rotated out since the last checkpoint) and
    /// writes a checkpoint of the chain's head to every sink. Returns it.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, String> {
        self.sync_and_emit(KIND_CHECKPOINT)
    }

    /// Syncs what was written (files rotated out first), then signs the
    /// head as a checkpoint of `kind` and gives it to every sink.
    pub(crate) fn sync_and_emit(&mut self, kind: &str) -> Result<Checkpoint, String> {
        sync_all_of(&std::mem::take(&mut self.retired))?;
        self.file
            .sync_data()
            .map_err(|e| format!("cannot sync the audit log: {e}"))?;
        let c = self.sign_head(kind);
        emit_to(&self.cfg.sinks, &c).map(|()| c)
    }

    /// Free bytes on the audit volume.
    pub fn free_bytes(&self) -> Option<u64> {
        rustix::fs::statvfs(&self.dir)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
    }
}

/// Makes the data of `files` durable, oldest first.
pub(crate) fn sync_all_of(files: &[File]) -> Result<(), String> {
    for f in files {
        f.sync_data()
            .map_err(|e| format!("cannot sync the audit log: {e}"))?;
    }
    Ok(())
}

/// Gives `c` to every sink (each is tried even when one fails); returns
/// the first failure.
pub(crate) fn emit_to(sinks: &[CheckpointSink], c: &Checkpoint) -> Result<(), String> {
    let mut first = Ok(());
    for sink in sinks {
        if let Err(e) = sink(c) {
            tracing::error!(chain = %c.chain, error = %e, "cannot write an audit checkpoint");
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}
