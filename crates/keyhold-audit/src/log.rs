//! [`AuditLog`]: one [`ChainWriter`] on its own thread with group commit,
//! so that each request waits for its record to be written, for a bounded
//! time; checkpoints and sequence reservations run beside it.

use crate::chain::{emit_to, sync_all_of, ChainWriter, Encoded};
use crate::{now_ms, Event};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What health and metrics show about the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditStatus {
    pub chain: String,
    pub records: u64,
    /// The last write or checkpoint failure, until a write succeeds again.
    pub failing: Option<String>,
    pub free_bytes: Option<u64>,
    pub low_disk: bool,
}

/// A chain written by the requests themselves: each request appends its
/// record (one `write` to the file) before it is answered, under the chain's
/// lock, which it waits for at most the configured timeout. A background
/// thread writes checkpoints (fsync, then the sinks) and watches the disk.
///
/// Writing inline costs one small write per request but no hand-off between
/// threads: with a writer thread, every request parked its worker until
/// the writer woke it, which cost more than the write itself.
pub struct AuditLog {
    writer: Arc<Mutex<ChainWriter>>,
    status: Arc<Mutex<AuditStatus>>,
    /// Records written (kept apart from `status` so that the request path
    /// takes no second lock).
    records: std::sync::atomic::AtomicU64,
    failing: std::sync::atomic::AtomicBool,
    timeout: Duration,
    queue: Mutex<Queue>,
    /// Tickets up to this one were written (or failed, see `failures`).
    done: std::sync::atomic::AtomicU64,
    /// Ticket ranges whose write failed, with why (the latest few).
    failures: Mutex<Vec<(u64, u64, String)>>,
    /// Woken after every write.
    written: tokio::sync::Notify,
}

/// Events waiting to be written, and how many were ever queued.
#[derive(Default)]
struct Queue {
    events: Encoded,
    enqueued: u64,
}

impl AuditLog {
    /// Starts the checkpoint thread for `writer`.
    pub fn start(writer: ChainWriter) -> Self {
        let status = Arc::new(Mutex::new(AuditStatus {
            chain: writer.chain.clone(),
            records: writer.seq,
            free_bytes: writer.free_bytes(),
            low_disk: writer
                .free_bytes()
                .is_some_and(|f| f < writer.cfg.min_free_bytes),
            ..AuditStatus::default()
        }));
        let timeout = writer.cfg.timeout;
        let writer = Arc::new(Mutex::new(writer));
        let (w, st) = (Arc::downgrade(&writer), status.clone());
        std::thread::Builder::new()
            .name("keyhold-audit".into())
            .spawn(move || checkpoint_loop(&w, &st))
            .expect("spawn audit thread");
        let records = std::sync::atomic::AtomicU64::new(status.lock().records);
        Self {
            writer,
            status,
            records,
            failing: std::sync::atomic::AtomicBool::new(false),
            timeout,
            queue: Mutex::new(Queue::default()),
            done: std::sync::atomic::AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
            written: tokio::sync::Notify::new(),
        }
    }

    /// Writes `rec` before returning; fails when the chain's lock is not had
    /// within the timeout or the write fails.
    ///
    /// Requests queue their record, then one of them (whoever gets the
    /// chain's lock) writes every queued record in one write: under load the
    /// records of concurrent requests share a system call ("flat
    /// combining"); alone, a request writes its own.
    pub fn record_blocking(&self, ev: &Event<'_>) -> Result<(), String> {
        let ticket = self.enqueue(ev);
        self.wait_blocking(ticket)
    }

    /// Queues `ev` without waiting for it to be written: the first half of
    /// [`AuditLog::record_blocking`], for a caller that answers several
    /// operations at once (a KMIP message's batch items) and then waits
    /// once, so that their records share one write. Nothing the records
    /// speak of may be answered before [`AuditLog::wait_blocking`] said
    /// its ticket was written.
    pub fn submit(&self, ev: &Event<'_>) -> u64 {
        self.enqueue(ev)
    }

    /// Waits until the record with `ticket` (and every one queued before
    /// it) is written; its outcome.
    pub fn wait_blocking(&self, ticket: u64) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if self.is_done(ticket) {
                return self.outcome(ticket);
            }
            let Some(w) = self.writer.try_lock_until(deadline) else {
                return Err(self.busy());
            };
            self.combine(w, ticket);
        }
    }

    /// [`AuditLog::record_blocking`] for async callers: a request whose
    /// record another request is writing waits without holding its worker
    /// thread (it is woken when that write is done), so the writer and the
    /// other requests keep the runtime's threads busy.
    pub async fn record(&self, ev: &Event<'_>) -> Result<(), String> {
        let ticket = self.enqueue(ev);
        let deadline = tokio::time::Instant::now() + self.timeout;
        // Let the other requests this thread is serving queue theirs first:
        // one write then carries them all.
        tokio::task::yield_now().await;
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            // Registered before looking, so a write that ends in between
            // still wakes this request.
            written.as_mut().enable();
            if self.is_done(ticket) {
                return self.outcome(ticket);
            }
            if let Some(w) = self.writer.try_lock() {
                self.combine(w, ticket);
                continue;
            }
            // The lock may also be released without a write (the checkpoint
            // thread holds it briefly): look again every millisecond.
            let now = tokio::time::Instant::now();
            if now >= deadline {
                if self.is_done(ticket) {
                    return self.outcome(ticket);
                }
                return Err(self.busy());
            }
            let wake = deadline.min(now + Duration::from_millis(1));
            let _ = tokio::time::timeout_at(wake, written).await;
        }
    }

    /// Encodes `ev` into the queue (time-stamped now); returns its ticket.
    fn enqueue(&self, ev: &Event<'_>) -> u64 {
        let ts_ms = now_ms();
        let mut q = self.queue.lock();
        q.events.push(ts_ms, ev);
        q.enqueued += 1;
        q.enqueued
    }

    fn is_done(&self, ticket: u64) -> bool {
        self.done.load(std::sync::atomic::Ordering::Acquire) >= ticket
    }

    /// The lock was not had in time: the request fails (and health says so).
    fn busy(&self) -> String {
        let e = format!("the audit log was busy for {} ms", self.timeout.as_millis());
        self.failing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.status.lock().failing = Some(e.clone());
        e
    }

    /// Holding the chain's lock: writes every queued record (unless the
    /// record with `ticket` was written meanwhile), then wakes the waiters.
    fn combine(&self, mut w: parking_lot::MutexGuard<'_, ChainWriter>, ticket: u64) {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        if self.is_done(ticket) {
            return;
        }
        // Swap the queue with the writer's spare buffer: both keep their
        // capacity.
        let mut batch = std::mem::take(&mut w.spare);
        let last = {
            let mut q = self.queue.lock();
            std::mem::swap(&mut q.events, &mut batch);
            q.enqueued
        };
        let first = last + 1 - batch.len() as u64;
        let r = w.append_encoded(&batch);
        batch.clear();
        w.spare = batch;
        self.records.store(w.seq, Relaxed);
        if let Err(e) = &r {
            let mut f = self.failures.lock();
            if f.len() >= 64 {
                f.remove(0);
            }
            f.push((first, last, e.clone()));
            self.failing.store(true, Relaxed);
            self.status.lock().failing = Some(e.clone());
        } else if self.failing.load(Relaxed) {
            self.failing.store(false, Relaxed);
            self.status.lock().failing = None;
        }
        self.done.store(last, Release);
        drop(w);
        self.written.notify_waiters();
    }

    /// Whether the record with this ticket was written.
    fn outcome(&self, ticket: u64) -> Result<(), String> {
        if !self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        match self
            .failures
            .lock()
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&ticket))
        {
            Some((_, _, e)) => Err(e.clone()),
            None => Ok(()),
        }
    }

    pub fn status(&self) -> AuditStatus {
        let mut st = self.status.lock().clone();
        st.records = self.records.load(std::sync::atomic::Ordering::Relaxed);
        st
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Some(mut w) = self.writer.try_lock_for(Duration::from_secs(1)) {
            if let Err(e) = w.close_in_place() {
                tracing::error!(chain = %w.chain, error = %e, "cannot close the audit chain cleanly");
            }
        }
    }
}

/// How soon a failed checkpoint is tried again.
pub(crate) const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);
/// How the status names a failure of the checkpoint (not of a write).
const CHECKPOINT_FAILED: &str = "checkpoint failed: ";

fn is_checkpoint_failure(why: &str) -> bool {
    why.starts_with(CHECKPOINT_FAILED)
}

/// Reserves the next block of sequence numbers once half of the current
/// one is used, so that requests seldom wait for a reservation.
fn reserve_ahead(writer: &Mutex<ChainWriter>, status: &Mutex<AuditStatus>) {
    let (c, sinks) = {
        let g = writer.lock();
        let block = g.cfg.reserve_block;
        if g.reserved.saturating_sub(g.seq) >= block / 2 {
            return;
        }
        let Some(c) = g.reservation(g.seq + block) else {
            return;
        };
        (c, g.cfg.sinks.clone())
    };
    let r = emit_to(&sinks, &c);
    if let Err(e) = writer.lock().reservation_sent(&c, r) {
        status.lock().failing = Some(format!(
            "{CHECKPOINT_FAILED}cannot reserve audit sequence numbers: {e}"
        ));
    }
}

fn checkpoint_loop(w: &std::sync::Weak<Mutex<ChainWriter>>, status: &Mutex<AuditStatus>) {
    let mut last_disk_check = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let Some(writer) = w.upgrade() else { return };
        // Take what the checkpoint needs under the lock; sync and publish
        // outside it, so requests do not wait for the fsync.
        let snap = {
            let mut g = writer.lock();
            if g.checkpoint_due() {
                Some(g.snapshot())
            } else {
                None
            }
        };
        reserve_ahead(&writer, status);
        if let Some(snap) = snap {
            match snap.and_then(|(files, c, sinks)| {
                sync_all_of(&files)?;
                emit_to(&sinks, &c)
            }) {
                // A checkpoint that got through ends a failure that a
                // checkpoint caused (a write failure ends with a write).
                Ok(()) => {
                    let mut st = status.lock();
                    if st.failing.as_deref().is_some_and(is_checkpoint_failure) {
                        st.failing = None;
                    }
                }
                Err(e) => {
                    // Tried again in a second, whether records come or not:
                    // health comes back by itself once the sink does.
                    writer.lock().retry_at = Some(Instant::now() + CHECKPOINT_RETRY);
                    status.lock().failing = Some(format!("{CHECKPOINT_FAILED}{e}"));
                }
            }
        }
        if last_disk_check.elapsed() >= Duration::from_secs(5) {
            last_disk_check = Instant::now();
            let (free, min) = {
                let g = writer.lock();
                (g.free_bytes(), g.cfg.min_free_bytes)
            };
            let low = free.is_some_and(|f| f < min);
            let mut st = status.lock();
            if low && !st.low_disk {
                tracing::error!(free_bytes = free, "LOW DISK on the audit volume: key use stops when the audit log cannot be written");
            }
            st.free_bytes = free;
            st.low_disk = low;
        }
    }
}
