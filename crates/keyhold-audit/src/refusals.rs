//! Refusals of clients that never authenticated cost their sender nothing,
//! and each audit record costs the server a synced write: a
//! [`RefusalBudget`] lets at most a few of them a second into the log, and
//! the next record that gets in says how many were left out. A flood can
//! then neither fill the disk nor push genuine records out through
//! retention, and the log still accounts for every refusal.

use std::time::{Duration, Instant};

/// At most `per_second` records a second.
#[derive(Debug)]
pub struct RefusalBudget {
    per_second: u32,
    window: Option<Instant>,
    recorded: u32,
    skipped: u64,
}

impl RefusalBudget {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: None,
            recorded: 0,
            skipped: 0,
        }
    }

    /// The rate this budget allows.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Whether to record one more refusal now; if so, how many were left
    /// out before it.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
        {
            self.window = Some(now);
            self.recorded = 0;
        }
        if self.recorded >= self.per_second {
            self.skipped += 1;
            return None;
        }
        self.recorded += 1;
        Some(std::mem::take(&mut self.skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_rate_and_the_next_record_counts_the_rest() {
        let mut b = RefusalBudget::new(10);
        let t = Instant::now();
        for _ in 0..10 {
            assert_eq!(b.admit(t), Some(0));
        }
        assert_eq!(b.admit(t), None);
        assert_eq!(b.admit(t), None);
        let later = t + Duration::from_secs(1);
        assert_eq!(
            b.admit(later),
            Some(2),
            "the next record counts the skipped"
        );
        assert_eq!(b.admit(later), Some(0));
    }
}
