//! The writer, its readers and grouped commits; WAL checkpoints and purges.

use super::*;

/// Truncating checkpoints after crypto-shredding. Each one copies the whole
/// WAL back and empties it, so it covers every erasure committed before it
/// began: concurrent destroys wait for one together instead of one each.
#[derive(Default)]
pub(super) struct Purges {
    pub(super) state: Mutex<PurgeState>,
    pub(super) done: parking_lot::Condvar,
}

#[derive(Default)]
pub(super) struct PurgeState {
    /// Purges begun, and finished, so far (the finished one's outcome).
    pub(super) started: u64,
    pub(super) finished: u64,
    pub(super) running: bool,
    pub(super) outcome: Option<std::result::Result<(), String>>,
}

/// How long a purge waits for readers and other checkpoints to let go of
/// the WAL before it reports failure.
pub(super) const PURGE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// WAL pages after which the checkpoint thread is asked to copy the WAL
/// back into the database file.
pub(super) const CHECKPOINT_PAGES: i32 = 200;
/// WAL pages after which the writer itself finishes the copy, so that the
/// WAL starts over: under constant writes the checkpoint thread never
/// catches up on its own, and a WAL that never restarts grows without
/// bound.
pub(super) const RESTART_PAGES: i32 = 1000;

thread_local! {
    /// Pages in the WAL after this thread's last commit (-1: none since
    /// last looked). Set by [`note_wal_pages`], SQLite's WAL hook, which
    /// runs in the committing thread.
    static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(-1) };
}

pub(super) fn note_wal_pages(
    _: &rusqlite::hooks::Wal,
    pages: std::ffi::c_int,
) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// A thread with its own connection that runs PASSIVE checkpoints when
/// asked. SQLite's automatic checkpoint runs inside the commit that
/// crosses the threshold: copying 200 pages and syncing the database file
/// held every queued write for 2–4 ms. A PASSIVE checkpoint on another
/// connection runs beside the writer and blocks nobody.
pub(super) struct Checkpointer {
    pub(super) state: Arc<(Mutex<CheckpointerState>, parking_lot::Condvar)>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
pub(super) struct CheckpointerState {
    pub(super) asked: bool,
    pub(super) stop: bool,
}

impl Checkpointer {
    pub(super) fn start(conn: Connection) -> Self {
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
pub(super) fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// A write to run inside a shared transaction.
pub(super) type WriteFn = Box<dyn FnOnce(&Connection) -> Result<()> + Send>;

/// A write run inside a shared transaction, and where its outcome goes.
pub(super) struct Job {
    pub(super) run: WriteFn,
    pub(super) slot: Arc<Slot>,
}

/// A connection, held. Letting the writer connection go hands the turn to
/// the owner of the oldest grouped write queued meanwhile: whoever used the
/// connection (a grouped commit or any other write or read), a queued
/// write never waits for a connection nobody holds.
pub(super) struct Held<'a> {
    pub(super) conn: Option<parking_lot::MutexGuard<'a, Connection>>,
    /// The grouped writes' queue (writer connection only).
    pub(super) pending: Option<&'a Mutex<Vec<Job>>>,
    /// Told when the writer's commits filled the WAL (writer only).
    pub(super) checkpointer: Option<&'a Checkpointer>,
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
pub(super) struct Slot {
    pub(super) state: Mutex<SlotState>,
    pub(super) wake: parking_lot::Condvar,
}

#[derive(Default)]
pub(super) struct SlotState {
    pub(super) result: Option<Result<()>>,
    /// The writer before handed the connection on to this job's owner.
    pub(super) turn: bool,
}

impl SqliteStorage {
    /// A connection for reading objects: a free reader, else the writer's
    /// (in-memory databases have only that one).
    pub(super) fn reader(&self) -> Held<'_> {
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
    pub(super) fn truncate_wal(&self) -> std::result::Result<(), String> {
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

    /// Runs `run` in a transaction shared with the writes queued at the
    /// same moment, so that concurrent writers pay for one fsync together:
    /// whoever has the connection commits everything queued, then hands
    /// the turn to the owner of the oldest write queued meanwhile. The
    /// others sleep until their outcome is filled in (one wake-up each; no
    /// thread takes the connection only to find its write already done).
    /// Each write runs inside its own savepoint: one failing write does not
    /// undo the others. Returns once the write is durable.
    pub(super) fn write_grouped(
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
    pub(super) fn commit_queued(&self, mut conn: Held<'_>) {
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
    pub(super) fn quietly<R>(
        &self,
        conn: &mut Connection,
        f: impl FnOnce(&mut Connection) -> R,
    ) -> R {
        let before = conn.total_changes();
        let r = f(conn);
        self.quiet.fetch_add(
            conn.total_changes().wrapping_sub(before),
            std::sync::atomic::Ordering::Relaxed,
        );
        r
    }

    /// The writer connection, held.
    pub(super) fn writer(&self) -> Held<'_> {
        Held {
            conn: Some(self.conn.lock()),
            pending: Some(&self.pending),
            checkpointer: self.checkpointer.as_ref(),
        }
    }

    pub(super) fn commit_jobs(conn: &mut Connection, jobs: Vec<Job>) {
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

    pub(super) fn fill(slot: &Slot, r: Result<()>) {
        slot.state.lock().result = Some(r);
        slot.wake.notify_one();
    }
}
