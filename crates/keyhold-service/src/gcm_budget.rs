//! The random-IV bound of AES-GCM (NIST SP 800-38D, section 8.3): with
//! 96-bit random IVs, one key may make at most 2^32 encryptions. Every
//! encryption whose IV Keyhold (or its HSM) draws at random is charged here,
//! per XKS key version and per KMIP object, so that the bound cannot be
//! crossed:
//!
//! - **Durably and cheaply**: a process reserves blocks of [`BLOCK`]
//!   encryptions in storage (`reserve_count`: counters only grow, and are
//!   in backups) and counts inside its block in memory. A block a process
//!   did not finish (a crash, a restart) counts as used: the count can only
//!   be too high, never too low.
//! - **Well ahead**: past [`WARN_AT`] (2^30) a warning is logged and shown
//!   in the metrics; past [`ROTATE_AT`] (2^31) an XKS key is rotated by the
//!   server's scheduled tasks (its new version starts from zero; older
//!   ciphertexts keep decrypting); at [`LIMIT`] (2^32) encryption with that
//!   version or object is refused. KMIP clients re-key their objects.

use keyhold_core::{Error, Result};
use keyhold_storage::Storage;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Encryptions with random IVs one key may make (SP 800-38D 8.3).
pub const LIMIT: u64 = 1 << 32;
/// Past this, rotate (XKS keys): half the bound.
pub const ROTATE_AT: u64 = 1 << 31;
/// Past this, warn.
pub const WARN_AT: u64 = 1 << 30;
/// Encryptions reserved in storage at a time by one process.
pub const BLOCK: u64 = 1 << 16;

/// One subject's counter in this process: encryptions numbered up to
/// `end` are reserved for it, and `next` is the last one handed out. The
/// request path only adds to `next`; reserving a new block takes `reserve`.
pub struct Counter {
    subject: String,
    next: AtomicU64,
    end: AtomicU64,
    reserve: Mutex<()>,
    warned: AtomicBool,
}

impl Counter {
    fn new(subject: String) -> Self {
        Self {
            subject,
            next: AtomicU64::new(0),
            end: AtomicU64::new(0),
            reserve: Mutex::new(()),
            warned: AtomicBool::new(false),
        }
    }
}

/// The counters of one process.
pub(crate) struct GcmBudget {
    counters: RwLock<HashMap<String, Arc<Counter>>>,
    /// Managed objects' counters by uid (found without allocating).
    objects: RwLock<HashMap<String, Arc<Counter>>>,
    /// XKS keys past [`ROTATE_AT`] that scheduled tasks should rotate.
    rotate: Mutex<HashSet<(String, String)>>,
    /// The highest count reserved for one subject (within a block of what
    /// was made).
    highest: AtomicU64,
    /// Subjects past [`WARN_AT`] (seen by this process).
    past_warning: AtomicU64,
}

/// What a charge says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// An upper bound of the encryptions the subject has made, this one
    /// included.
    pub number: u64,
    /// Past [`ROTATE_AT`]: time to rotate (or re-key).
    pub rotate: bool,
}

impl GcmBudget {
    pub(crate) fn new() -> Self {
        Self {
            counters: RwLock::new(HashMap::new()),
            objects: RwLock::new(HashMap::new()),
            rotate: Mutex::new(HashSet::new()),
            highest: AtomicU64::new(0),
            past_warning: AtomicU64::new(0),
        }
    }

    /// The counter of `subject` (made on first use); callers may keep it.
    pub(crate) fn counter(&self, subject: &str) -> Arc<Counter> {
        if let Some(c) = self.counters.read().get(subject) {
            return c.clone();
        }
        self.counters
            .write()
            .entry(subject.to_owned())
            .or_insert_with(|| Arc::new(Counter::new(subject.to_owned())))
            .clone()
    }

    /// The counter of managed object `uid` (subject `object <uid>`).
    pub(crate) fn object_counter(&self, uid: &str) -> Arc<Counter> {
        if let Some(c) = self.objects.read().get(uid) {
            return c.clone();
        }
        let c = self.counter(&format!("object {uid}"));
        self.objects.write().insert(uid.to_owned(), c.clone());
        c
    }

    /// Charges one encryption to `subject`, or refuses it at the bound.
    pub(crate) fn charge(&self, storage: &dyn Storage, subject: &str) -> Result<Charge> {
        self.charge_counter(storage, &self.counter(subject))
    }

    /// Charges one encryption to `c`: an atomic add, and a storage write
    /// once a block.
    pub(crate) fn charge_counter(&self, storage: &dyn Storage, c: &Counter) -> Result<Charge> {
        let number = loop {
            let end = c.end.load(Ordering::Acquire);
            let n = c.next.fetch_add(1, Ordering::AcqRel) + 1;
            // At the bound nothing more is reserved: refused below.
            if n <= end || end >= LIMIT {
                break n;
            }
            let _one = c.reserve.lock();
            if c.end.load(Ordering::Acquire) != end {
                continue; // another thread reserved meanwhile
            }
            let total = storage.reserve_count(&c.subject, BLOCK)?;
            c.next.store(total.saturating_sub(BLOCK), Ordering::Release);
            c.end.store(total, Ordering::Release);
            self.highest.fetch_max(total, Ordering::Relaxed);
        };
        if number > LIMIT {
            return Err(Error::InvalidState(format!(
                "{} has made 2^32 AES-GCM encryptions with random IVs, the most NIST SP 800-38D allows one key: rotate it (its older ciphertexts still decrypt)",
                c.subject
            )));
        }
        if number >= WARN_AT && !c.warned.swap(true, Ordering::Relaxed) {
            self.past_warning.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                subject = %c.subject,
                encryptions = number,
                "an AES-GCM key has made over 2^30 encryptions with random IVs: rotated at 2^31, refused at 2^32"
            );
        }
        Ok(Charge {
            number,
            rotate: number >= ROTATE_AT,
        })
    }

    /// Asks the scheduled tasks to rotate an XKS key.
    pub(crate) fn rotate_soon(&self, store: &str, key: &str) {
        self.rotate
            .lock()
            .insert((store.to_owned(), key.to_owned()));
    }

    /// The XKS keys to rotate now (taken: asked again if still due).
    pub(crate) fn take_rotations(&self) -> Vec<(String, String)> {
        self.rotate.lock().drain().collect()
    }

    /// (the highest count reserved for one subject, subjects past the
    /// warning) as this process saw them.
    pub(crate) fn figures(&self) -> (u64, u64) {
        (
            self.highest.load(Ordering::Relaxed),
            self.past_warning.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_storage::prelude::*;
    use keyhold_storage::SqliteStorage;

    #[test]
    fn blocks_are_reserved_and_the_bound_is_never_crossed() {
        let s = SqliteStorage::open_in_memory().unwrap();
        let b = GcmBudget::new();
        assert_eq!(b.charge(&s, "k").unwrap().number, 1);
        assert_eq!(b.charge(&s, "k").unwrap().number, 2);
        // Another process (its own budget) gets the next block.
        let other = GcmBudget::new();
        assert_eq!(other.charge(&s, "k").unwrap().number, BLOCK + 1);
        // A restarted process starts after everything reserved.
        let again = GcmBudget::new();
        assert_eq!(again.charge(&s, "k").unwrap().number, 2 * BLOCK + 1);
        // Near the bound: rotate from half of it, refuse at it.
        s.reserve_count("near", ROTATE_AT - BLOCK - 1).unwrap();
        let n = b.charge(&s, "near").unwrap();
        assert_eq!(n.number, ROTATE_AT - BLOCK);
        assert!(!n.rotate);
        s.reserve_count("far", LIMIT - BLOCK).unwrap();
        let c = b.charge(&s, "far").unwrap();
        assert_eq!(c.number, LIMIT - BLOCK + 1);
        assert!(c.rotate);
        let far = b.counter("far");
        for _ in 1..BLOCK {
            b.charge_counter(&s, &far).unwrap();
        }
        let e = b.charge(&s, "far").unwrap_err();
        assert!(e.to_string().contains("2^32"), "{e}");
        assert!(b.charge(&s, "far").is_err(), "and stays refused");
        assert_eq!(b.figures().1, 2);
        assert_eq!(b.figures().0, LIMIT, "nothing reserved past the bound");
    }
}
