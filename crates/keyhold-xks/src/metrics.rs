//! Request metrics of the XKS front-end: counts and latency histograms by
//! operation, key store and outcome, rendered in the Prometheus text format.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt::Write;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

#[derive(Default, Clone)]
struct Series {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

/// Counters by store, then (operation, outcome): the request path looks
/// its series up without allocating.
type ByStore = HashMap<String, Vec<((&'static str, String), Series)>>;

#[derive(Default)]
pub struct RequestMetrics {
    series: Mutex<ByStore>,
}

impl RequestMetrics {
    pub fn observe(&self, op: &'static str, store: &str, outcome: &str, seconds: f64) {
        let mut m = self.series.lock();
        if !m.contains_key(store) {
            if m.len() >= 10_000 {
                return; // bounded
            }
            m.insert(store.to_owned(), Vec::new());
        }
        let v = m.get_mut(store).expect("inserted");
        let i = match v
            .iter()
            .position(|((o, out), _)| *o == op && out == outcome)
        {
            Some(i) => i,
            None => {
                v.push(((op, outcome.to_owned()), Series::default()));
                v.len() - 1
            }
        };
        let s = &mut v[i].1;
        s.count += 1;
        s.sum_seconds += seconds;
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            s.buckets[i] += 1;
        }
    }

    /// Appends `keyhold_xks_requests_total` and
    /// `keyhold_xks_request_duration_seconds` to `out`.
    pub fn render(&self, out: &mut String) {
        let m = self.series.lock().clone();
        let mut rows: Vec<((&str, String, String), Series)> = m
            .into_iter()
            .flat_map(|(store, v)| {
                v.into_iter()
                    .map(move |((op, out), s)| ((op, store.clone(), out), s))
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        out.push_str(
            "# HELP keyhold_xks_requests_total XKS requests by operation, key store and outcome.\n",
        );
        out.push_str("# TYPE keyhold_xks_requests_total counter\n");
        for ((op, store, outcome), s) in &rows {
            let _ = writeln!(
                out,
                "keyhold_xks_requests_total{{operation=\"{op}\",store=\"{}\",outcome=\"{outcome}\"}} {}",
                escape(store),
                s.count
            );
        }
        out.push_str("# HELP keyhold_xks_request_duration_seconds XKS request latency.\n");
        out.push_str("# TYPE keyhold_xks_request_duration_seconds histogram\n");
        for ((op, store, outcome), s) in &rows {
            let labels = format!(
                "operation=\"{op}\",store=\"{}\",outcome=\"{outcome}\"",
                escape(store)
            );
            let mut cum = 0;
            for (b, n) in BUCKETS.iter().zip(s.buckets) {
                cum += n;
                let _ = writeln!(
                    out,
                    "keyhold_xks_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {cum}"
                );
            }
            let _ = writeln!(
                out,
                "keyhold_xks_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "keyhold_xks_request_duration_seconds_sum{{{labels}}} {}",
                s.sum_seconds
            );
            let _ = writeln!(
                out,
                "keyhold_xks_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
    }
}

/// Escapes a Prometheus label value.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = RequestMetrics::default();
        m.observe("Encrypt", "/a", "OK", 0.0003);
        m.observe("Encrypt", "/a", "OK", 0.002);
        m.observe("Decrypt", "/a\"b", "InvalidCiphertextException", 9.0);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "keyhold_xks_requests_total{operation=\"Encrypt\",store=\"/a\",outcome=\"OK\"} 2"
        ));
        assert!(out.contains("le=\"0.0005\"} 1"));
        assert!(out.contains("le=\"0.0025\"} 2"));
        assert!(out.contains("store=\"/a\\\"b\""));
        assert!(out.contains("outcome=\"InvalidCiphertextException\",le=\"+Inf\"} 1"));
    }
}
