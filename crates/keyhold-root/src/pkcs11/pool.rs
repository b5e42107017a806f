//! A pool of PKCS#11 sessions with a hard maximum.
//!
//! Sessions are opened on demand up to `max`; a caller that finds none free
//! waits at most `wait`, then gets a DependencyTimeout (the caller answers
//! 503 instead of hanging). A session that failed in a way that may have
//! killed it is discarded, never returned. Sessions idle for a while are
//! checked with C_GetSessionInfo before reuse. Sessions belong to one
//! generation of the module (see `module.rs`): after a re-initialisation
//! the old ones are void and are forgotten, never closed (their handle
//! numbers may already name someone else's new session).

use cryptoki::session::Session;
use keyhold_core::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Sessions idle longer than this are checked before reuse.
const RECHECK_AFTER: Duration = Duration::from_secs(30);

struct State {
    idle: Vec<(Session, Instant)>,
    open: usize,
    generation: u64,
}

pub(crate) struct SessionPool {
    state: Mutex<State>,
    freed: Condvar,
    max: usize,
    wait: Duration,
    reuse: bool,
}

/// A session on loan from the pool; returned on drop unless discarded.
pub(crate) struct Lease<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
}

impl Lease<'_> {
    pub(crate) fn session(&self) -> &Session {
        self.session
            .as_ref()
            .expect("lease holds a session until dropped")
    }

    /// Closes the session instead of returning it (it may be dead).
    pub(crate) fn discard(mut self) {
        drop(self.session.take());
        self.pool.release_slot();
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if !self.pool.reuse {
                drop(s);
                self.pool.release_slot();
                return;
            }
            let mut st = self.pool.state.lock();
            st.idle.push((s, Instant::now()));
            drop(st);
            self.pool.freed.notify_one();
        }
    }
}

impl SessionPool {
    pub(crate) fn new(max: usize, wait: Duration, reuse: bool) -> Self {
        Self {
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                generation: 0,
            }),
            freed: Condvar::new(),
            max: max.max(1),
            wait,
            reuse,
        }
    }

    /// Number of sessions open now (idle or on loan).
    pub(crate) fn open_sessions(&self) -> usize {
        self.state.lock().open
    }

    pub(crate) fn max_sessions(&self) -> usize {
        self.max
    }

    fn release_slot(&self) {
        let mut st = self.state.lock();
        st.open = st.open.saturating_sub(1);
        drop(st);
        self.freed.notify_one();
    }

    /// Borrows a session of the module's `generation`, opening one with
    /// `open` when under the maximum. The caller holds the module's guard,
    /// so the generation cannot change while the lease is out.
    pub(crate) fn get(
        &self,
        generation: u64,
        open: impl Fn() -> Result<Session>,
    ) -> Result<Lease<'_>> {
        let deadline = Instant::now() + self.wait;
        let mut st = self.state.lock();
        if st.generation != generation {
            let stale = std::mem::take(&mut st.idle);
            st.open = st.open.saturating_sub(stale.len());
            st.generation = generation;
            for (s, _) in stale {
                std::mem::forget(s);
            }
        }
        loop {
            while let Some((s, since)) = st.idle.pop() {
                if since.elapsed() < RECHECK_AFTER || s.get_session_info().is_ok() {
                    return Ok(Lease {
                        pool: self,
                        session: Some(s),
                    });
                }
                st.open -= 1;
                tracing::warn!("discarding a dead PKCS#11 session");
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                return match open() {
                    Ok(s) => Ok(Lease {
                        pool: self,
                        session: Some(s),
                    }),
                    Err(e) => {
                        self.release_slot();
                        Err(e)
                    }
                };
            }
            if self.freed.wait_until(&mut st, deadline).timed_out() {
                return Err(Error::DependencyTimeout(format!(
                    "all {} HSM sessions busy for {} ms",
                    self.max,
                    self.wait.as_millis()
                )));
            }
        }
    }
}
