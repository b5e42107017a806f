//! Request rates for the console's charts: every record the audit broker
//! sees (every key use on every front-end, every admin call) is counted
//! per minute, per front-end and key store, over the last hour, with its
//! errors and latency. In memory, per server; a restart starts afresh.

use parking_lot::Mutex;
use std::collections::HashMap;

/// Minutes kept.
pub const MINUTES: usize = 60;

/// One front-end's (or key store's) figures in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    /// Sum of the latencies reported, in microseconds.
    pub latency_us: u64,
    /// Requests that reported a latency.
    pub timed: u64,
}

impl Figures {
    fn add(&mut self, ok: bool, latency_us: Option<u64>) {
        self.requests += 1;
        self.errors += u64::from(!ok);
        if let Some(l) = latency_us {
            self.latency_us += l;
            self.timed += 1;
        }
    }

    /// The mean latency in milliseconds, if any request reported one.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.timed > 0).then(|| self.latency_us as f64 / self.timed as f64 / 1000.0)
    }
}

#[derive(Default)]
struct Minute {
    /// Minutes since the Unix epoch.
    at: i64,
    /// Front-end → key store ("" when none) → figures.
    by: HashMap<String, HashMap<String, Figures>>,
}

/// The last hour, minute by minute.
#[derive(Default)]
pub struct Rates {
    minutes: Mutex<Vec<Minute>>,
}

/// A front-end's last hour: per minute (oldest first) and per key store.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub frontend: String,
    /// `MINUTES` entries, the last the current minute.
    pub per_minute: Vec<Figures>,
    /// Each key store's hour ("" for requests without one), busiest first.
    pub per_store: Vec<StoreSeries>,
}

/// One key store's last hour on one front-end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSeries {
    pub store: String,
    pub total: Figures,
    /// `MINUTES` entries, the last the current minute.
    pub per_minute: Vec<Figures>,
}

impl Figures {
    fn merge(&mut self, f: &Figures) {
        self.requests += f.requests;
        self.errors += f.errors;
        self.latency_us += f.latency_us;
        self.timed += f.timed;
    }
}

impl Rates {
    /// Counts one request at `now_s` (seconds since the epoch).
    pub fn count(
        &self,
        now_s: i64,
        frontend: &str,
        store: Option<&str>,
        ok: bool,
        latency_us: Option<u64>,
    ) {
        let minute = now_s.div_euclid(60);
        let mut all = self.minutes.lock();
        if all.is_empty() {
            all.resize_with(MINUTES, Minute::default);
        }
        let slot = &mut all[minute.rem_euclid(MINUTES as i64) as usize];
        if slot.at != minute {
            slot.at = minute;
            slot.by.clear();
        }
        let by_store = match slot.by.get_mut(frontend) {
            Some(m) => m,
            None => slot.by.entry(frontend.to_owned()).or_default(),
        };
        let store = store.unwrap_or("");
        match by_store.get_mut(store) {
            Some(f) => f.add(ok, latency_us),
            None => by_store
                .entry(store.to_owned())
                .or_default()
                .add(ok, latency_us),
        }
    }

    /// Each front-end's last hour as of `now_s`.
    pub fn last_hour(&self, now_s: i64) -> Vec<Series> {
        let now = now_s.div_euclid(60);
        let all = self.minutes.lock();
        let mut out: HashMap<String, Series> = HashMap::new();
        for m in all
            .iter()
            .filter(|m| m.at > now - MINUTES as i64 && m.at <= now)
        {
            let i = (MINUTES as i64 - 1 - (now - m.at)) as usize;
            for (fe, stores) in &m.by {
                let s = out.entry(fe.clone()).or_insert_with(|| Series {
                    frontend: fe.clone(),
                    per_minute: vec![Figures::default(); MINUTES],
                    per_store: Vec::new(),
                });
                for (store, f) in stores {
                    s.per_minute[i].merge(f);
                    let at = match s.per_store.iter().position(|t| &t.store == store) {
                        Some(at) => at,
                        None => {
                            s.per_store.push(StoreSeries {
                                store: store.clone(),
                                total: Figures::default(),
                                per_minute: vec![Figures::default(); MINUTES],
                            });
                            s.per_store.len() - 1
                        }
                    };
                    let t = &mut s.per_store[at];
                    t.total.merge(f);
                    t.per_minute[i].merge(f);
                }
            }
        }
        let mut v: Vec<Series> = out.into_values().collect();
        v.sort_by(|a, b| a.frontend.cmp(&b.frontend));
        for s in &mut v {
            s.per_store
                .sort_by_key(|t| std::cmp::Reverse(t.total.requests));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_roll_over_and_old_ones_drop_out() {
        let r = Rates::default();
        let t0 = 1_000_000 * 60;
        r.count(t0, "xks", Some("/a"), true, Some(1_000));
        r.count(t0 + 5, "xks", Some("/a"), false, Some(3_000));
        r.count(t0 + 61, "xks", Some("/b"), true, None);
        r.count(t0 + 61, "kmip", None, true, Some(500));
        let h = r.last_hour(t0 + 61);
        assert_eq!(h.len(), 2);
        let xks = h.iter().find(|s| s.frontend == "xks").unwrap();
        assert_eq!(xks.per_minute.len(), MINUTES);
        assert_eq!(xks.per_minute[MINUTES - 2].requests, 2);
        assert_eq!(xks.per_minute[MINUTES - 2].errors, 1);
        assert_eq!(xks.per_minute[MINUTES - 2].mean_ms(), Some(2.0));
        assert_eq!(xks.per_minute[MINUTES - 1].requests, 1);
        assert_eq!(xks.per_store[0].store, "/a");
        assert_eq!(
            xks.per_store[0].total,
            Figures {
                requests: 2,
                errors: 1,
                latency_us: 4_000,
                timed: 2
            }
        );
        assert_eq!(xks.per_store[0].per_minute[MINUTES - 2].requests, 2);
        assert_eq!(xks.per_store[1].per_minute[MINUTES - 1].requests, 1);
        // An hour later the first minute is gone, and its slot is reused.
        r.count(t0 + 3600, "xks", Some("/a"), true, None);
        let h = r.last_hour(t0 + 3600);
        let xks = h.iter().find(|s| s.frontend == "xks").unwrap();
        assert_eq!(xks.per_minute.iter().map(|f| f.requests).sum::<u64>(), 2);
    }
}
